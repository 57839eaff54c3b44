#!/usr/bin/env python3
"""Write the benchmark disk content: deterministic, a mix of what real disks hold.

    gendata.py OUTPUT SIZE_MIB [SEED]

The file is cut into runs of 1 to 32 clusters of 64 KiB ("files"), each run
one kind, chosen with these weights:

    45 %  text:   words from a small vocabulary, lines of varying length
                  (compresses about 2:1 with zlib, like logs and sources)
    40 %  binary: random bytes (incompressible, like media or packed data)
    15 %  zeros   (qemu-img convert leaves these clusters unallocated)

so compressed qcow2 images come out at about 60 % of the data, and a
random read hits every kind. The same SEED always gives the same bytes.
"""
import random
import sys

CLUSTER = 64 * 1024


def vocabulary(rng):
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [12, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
    words = set()
    while len(words) < 2000:
        n = rng.choice((2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 11))
        words.add("".join(rng.choices(letters, weights, k=n)))
    return sorted(words) + ["the", "of", "and", "0", "1", "=", "{", "}", "();", "error:", "ok"]


def text_run(rng, words, size):
    out = []
    total = 0
    while total < size:
        line = " ".join(rng.choices(words, k=rng.randint(3, 14)))
        line = "    " * rng.randint(0, 3) + line + "\n"
        out.append(line)
        total += len(line)
    return "".join(out).encode()[:size]


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    path, mib = sys.argv[1], int(sys.argv[2])
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) == 4 else 7)
    words = vocabulary(rng)
    clusters = mib * 1024 * 1024 // CLUSTER
    with open(path, "wb") as f:
        done = 0
        while done < clusters:
            n = min(rng.randint(1, 32), clusters - done)
            kind = rng.choices(("text", "binary", "zeros"), (45, 40, 15))[0]
            size = n * CLUSTER
            if kind == "text":
                f.write(text_run(rng, words, size))
            elif kind == "binary":
                f.write(rng.randbytes(size))
            else:
                f.write(bytes(size))
            done += n


if __name__ == "__main__":
    main()

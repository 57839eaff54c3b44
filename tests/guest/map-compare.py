#!/usr/bin/env python3
"""Compares `losetup-fmt map --json` with `qemu-img map --output=json`.

Usage: map-compare.py OURS.json QEMU.json SIZE [START LENGTH]

Both lists are merged the way qemu-img merges them, clipped to
[START, START + LENGTH) (default: the device's SIZE bytes: the device
exposes whole sectors of the virtual size; no further than qemu-img's map
reaches) and compared field by field:
start, length, depth, present, zero, data, compressed, and the host offset
of uncompressed data (qemu-img also gives an offset for some unallocated
extended-L2 subclusters, which the driver does not). QEMU before 8.2 has no
"compressed" field; there, data without an offset is compressed. Prints
the first difference and exits 1, or exits 0.
"""
import json
import sys


def normalize(entries, lo, hi):
    out = []
    for e in entries:
        data = bool(e.get("data"))
        if "compressed" in e:
            comp = bool(e["compressed"])
        else:
            comp = data and "offset" not in e
        off = e.get("offset") if data and not comp else None
        start, end = e["start"], e["start"] + e["length"]
        if end <= lo or start >= hi:
            continue
        if off is not None:
            off += max(lo, start) - start
        start, end = max(start, lo), min(end, hi)
        r = {"start": start, "length": end - start, "depth": e["depth"],
             "present": bool(e.get("present")), "zero": bool(e["zero"]),
             "data": data, "compressed": comp, "offset": off}
        if out:
            p = out[-1]
            same = all(p[k] == r[k] for k in
                       ("depth", "present", "zero", "data", "compressed"))
            host = (p["offset"] is None and r["offset"] is None) or (
                p["offset"] is not None and r["offset"] is not None
                and p["offset"] + p["length"] == r["offset"])
            if same and host and p["start"] + p["length"] == r["start"]:
                p["length"] += r["length"]
                continue
        out.append(r)
    return out


def main(argv):
    ours = json.load(open(argv[1]))
    theirs = json.load(open(argv[2]))
    size = int(argv[3])
    lo = int(argv[4]) if len(argv) > 4 else 0
    hi = lo + int(argv[5]) if len(argv) > 5 else size
    # A snapshot read by the driver keeps the image's current size, while
    # the copy qemu-img maps was resized to the snapshot's: compare what
    # both have.
    qemu_end = max((e["start"] + e["length"] for e in theirs), default=0)
    hi = min(hi, size, qemu_end)
    a, b = normalize(ours, lo, hi), normalize(theirs, lo, hi)
    covered = sum(r["length"] for r in a)
    if covered != hi - lo:
        print(f"ours cover {covered} bytes of {hi - lo}")
        return 1
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            print(f"run {i}: ours {x}")
            print(f"run {i}: qemu {y}")
            return 1
    if len(a) != len(b):
        print(f"{len(a)} runs, qemu-img has {len(b)}")
        return 1
    print(f"{len(a)} runs equal")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

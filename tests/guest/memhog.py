#!/usr/bin/python3
# Memory pressure for tests/guest/40-reclaim.sh.
#
#   memhog.py MIB SECS DONE  touch every page of MIB of anonymous memory,
#                            then for SECS seconds a random sixteenth of
#                            them ten times a second: what does not fit in
#                            the memory cgroup is swapped out, and back in
#                            at a bounded rate (an unbounded one starves
#                            the rest under TCG); then create the file DONE
#
# SECS count from when the memory is in place (under TCG on a busy host
# that alone can take minutes). Prints "hogging N MiB" then, and at the end
# the passes made.
import mmap
import random
import sys
import time

PAGE = mmap.PAGESIZE


def main():
    mib, secs, done = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    pages = (mib << 20) // PAGE
    buf = mmap.mmap(-1, pages * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf[::PAGE] = b"\x01" * pages
    deadline = time.monotonic() + secs
    print(f"hogging {mib} MiB", flush=True)
    rng = random.Random(1)
    chunk = max(pages // 16, 1)
    passes = 0
    while time.monotonic() < deadline:
        first = rng.randrange(0, pages - chunk + 1)
        value = bytes([passes % 251 + 2])
        buf[first * PAGE:(first + chunk) * PAGE:PAGE] = value * chunk
        passes += 1
        time.sleep(0.1)
    print(f"hog: {passes} passes over a sixteenth of {mib} MiB", flush=True)
    open(done, "w").close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Raw ioctls on loop-file-fmt devices, for tests that need arguments the
losetup tool never sends (bad fds, unknown flags) and for fast loops.

The request numbers are computed from the _IOC encoding and the struct
sizes below; tests/guest/20-raw.sh cross-checks them against the C header
with the host compiler.

Usage (each prints nothing and exits 0 on success, or prints the errno name
and exits 1):
  lffctl.py configure DEV FORMAT [--fd N | --file PATH [--ro]]... [--flags N]
            [--block-size N] [--offset N] [--sizelimit N] [--options S]
            [--nr-fds N] [--reserved N]
  lffctl.py clear DEV
  lffctl.py status DEV            (prints key=value lines)
  lffctl.py ctl add|remove|get-free [N]
  lffctl.py cycle DEV FILE COUNT  (attach/detach COUNT times)
  lffctl.py map DEV [--start N] [--length N] [--nr N] [--flags N]
            [--reserved N] [--pointer N]
                                  (LFF_GET_MAP: prints n=COUNT, then
                                  START LENGTH HOST FLAGS DEPTH lines)
  lffctl.py numbers               (prints the request numbers)
"""
import ctypes
import errno
import fcntl
import os
import struct
import sys

CONFIG = struct.Struct("=16i4I2Q32s128s8Q")
STATUS = struct.Struct("=4I5Q32s64s8Q")
MAP = struct.Struct("=3Q2I4Q")
EXTENT = struct.Struct("=3Q2I")
MAGIC = 0xBB  # LFF_IOC_MAGIC


def _ioc(direction, nr, size):
    return (direction << 30) | (size << 16) | (MAGIC << 8) | nr


LFF_CONFIGURE = _ioc(1, 0xA0, CONFIG.size)
LFF_CLR_FD = _ioc(0, 0xA1, 0)
LFF_GET_STATUS = _ioc(2, 0xA2, STATUS.size)
LFF_GET_MAP = _ioc(3, 0xA3, MAP.size)
LFF_CTL_ADD = _ioc(0, 0xA8, 0)
LFF_CTL_REMOVE = _ioc(0, 0xA9, 0)
LFF_CTL_GET_FREE = _ioc(0, 0xAA, 0)
CONTROL = "/dev/loop-file-fmt-control"


def configure(dev, fmt, fds, flags=0, block_size=0, offset=0, sizelimit=0,
              options=b"", nr_fds=None, reserved=0):
    fdl = list(fds) + [0] * (16 - len(fds))
    arg = CONFIG.pack(*fdl, len(fds) if nr_fds is None else nr_fds, flags,
                      block_size, 0, offset, sizelimit, fmt, options,
                      reserved, 0, 0, 0, 0, 0, 0, 0)
    with open(dev, "rb") as d:
        fcntl.ioctl(d, LFF_CONFIGURE, arg)


def clear(dev):
    with open(dev, "rb") as d:
        fcntl.ioctl(d, LFF_CLR_FD, 0)


def status(dev):
    with open(dev, "rb") as d:
        buf = fcntl.ioctl(d, LFF_GET_STATUS, bytes(STATUS.size))
    f = STATUS.unpack(buf)
    keys = ["index", "flags", "block_size", "nr_layers", "offset",
            "sizelimit", "size", "device", "inode"]
    out = dict(zip(keys, f[:9]))
    out["format"] = f[9].rstrip(b"\0").decode()
    out["file_name"] = f[10].rstrip(b"\0").decode()
    return out


def get_map(dev, start=0, length=0, nr=16, flags=0, reserved=0,
            pointer=None):
    """LFF_GET_MAP; returns the extents as tuples."""
    room = ctypes.create_string_buffer(max(nr, 1) * EXTENT.size)
    ptr = ctypes.addressof(room) if pointer is None else pointer
    arg = bytearray(MAP.pack(start, length, ptr, nr, flags, reserved, 0, 0, 0))
    with open(dev, "rb") as d:
        fcntl.ioctl(d, LFF_GET_MAP, arg, True)
    n = MAP.unpack(arg)[3]
    return [EXTENT.unpack_from(room.raw, i * EXTENT.size) for i in range(n)]


def ctl(cmd, n=-1):
    req = {"add": LFF_CTL_ADD, "remove": LFF_CTL_REMOVE,
           "get-free": LFF_CTL_GET_FREE}[cmd]
    fd = os.open(CONTROL, os.O_RDWR)
    try:
        return fcntl.ioctl(fd, req, n)
    finally:
        os.close(fd)


def main(argv):
    cmd = argv[1]
    if cmd == "numbers":
        for k in ("LFF_CONFIGURE", "LFF_CLR_FD", "LFF_GET_STATUS",
                  "LFF_GET_MAP", "LFF_CTL_ADD", "LFF_CTL_REMOVE", "LFF_CTL_GET_FREE"):
            print(f"{k}={globals()[k]}")
        return 0
    if cmd == "ctl":
        print(ctl(argv[2], int(argv[3]) if len(argv) > 3 else -1))
        return 0
    if cmd == "clear":
        clear(argv[2])
        return 0
    if cmd == "status":
        for k, v in status(argv[2]).items():
            print(f"{k}={v}")
        return 0
    if cmd == "map":
        kw, i = {}, 3
        while i < len(argv):
            a = argv[i]
            if a not in ("--start", "--length", "--nr", "--flags",
                         "--reserved", "--pointer"):
                raise SystemExit(f"unknown argument {a}")
            kw[a[2:]] = int(argv[i + 1], 0)
            i += 2
        ext = get_map(argv[2], **kw)
        print(f"n={len(ext)}")
        for e in ext:
            print(" ".join(str(v) for v in e))
        return 0
    if cmd == "cycle":
        dev, path, count = argv[2], argv[3], int(argv[4])
        fd = os.open(path, os.O_RDWR)
        for _ in range(count):
            configure(dev, b"raw", [fd])
            clear(dev)
        os.close(fd)
        return 0
    if cmd == "configure":
        dev, fmt = argv[2], argv[3].encode()
        fds, kw, i, keep = [], {}, 4, []
        while i < len(argv):
            a = argv[i]
            if a == "--fd":
                fds.append(int(argv[i + 1]))
            elif a == "--file":
                ro = i + 2 < len(argv) and argv[i + 2] == "--ro"
                f = open(argv[i + 1], "rb" if ro else "r+b")
                keep.append(f)
                fds.append(f.fileno())
                i += 1 if ro else 0
            elif a in ("--flags", "--block-size", "--offset", "--sizelimit",
                       "--nr-fds", "--reserved"):
                kw[a[2:].replace("-", "_")] = int(argv[i + 1], 0)
            elif a == "--options":
                kw["options"] = argv[i + 1].encode()
            else:
                raise SystemExit(f"unknown argument {a}")
            i += 2
        configure(dev, fmt, fds, **kw)
        return 0
    raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))
        sys.exit(1)

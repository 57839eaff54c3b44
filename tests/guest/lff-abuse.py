#!/usr/bin/env python3
"""Hostile ioctls on loop-file-fmt devices, in a loop, for the stress test.

    lff-abuse.py SECONDS INDEX RAW-IMAGE QCOW2-IMAGE   (as root)
    lff-abuse.py SECONDS --unprivileged DEV...        (as an unprivileged user)

As root it owns device lffINDEX (created if missing; nothing else uses it)
and repeats, until SECONDS have passed, a list of LFF_CONFIGURE /
LFF_CLR_FD / LFF_GET_STATUS / control ioctls with bad arguments (bad
pointers, fds, flags, sizes, names, options, images, unknown commands),
each of which must fail with its one expected errno, then one valid
attach/detach around the calls that need an attached device. Unprivileged,
every privileged ioctl on DEV... and on the control node must fail with
EPERM (or the open with EACCES); LFF_GET_STATUS is allowed.

The modules may be unloaded and reloaded meanwhile (the stress test does
that): a device node that is missing or a device that went away
(ENOENT/ENODEV/ENXIO when opening) skips the round. Prints one line,
"rounds=N calls=N skipped=N failures=N", plus one line per failure, and
exits 1 if anything failed.
"""
import ctypes
import errno
import fcntl
import os
import socket
import struct
import sys
import time

CONFIG = struct.Struct("=16i4I2Q32s128s8Q")
STATUS = struct.Struct("=4I5Q32s64s8Q")
CONTROL = "/dev/loop-file-fmt-control"


MAGIC = 0xBB  # LFF_IOC_MAGIC (not loop's 0x4C)


def ioc(direction, nr, size):
    return (direction << 30) | (size << 16) | (MAGIC << 8) | nr


CONFIGURE = ioc(1, 0xA0, CONFIG.size)
CLR_FD = ioc(0, 0xA1, 0)
SET_CAPACITY = ioc(0, 0xA4, 0)
GET_STATUS = ioc(2, 0xA2, STATUS.size)
CTL_ADD = ioc(0, 0xA8, 0)
CTL_REMOVE = ioc(0, 0xA9, 0)
CTL_GET_FREE = ioc(0, 0xAA, 0)
# Unmapped user memory, and the kernel's own text.
BAD_PTRS = (0xDEADBEEF000, 0xFFFFFFFF81000000)
LIBC = ctypes.CDLL(None, use_errno=True)


def ptr_ioctl(fd, req, ptr):
    """ioctl(2) with a raw pointer argument (fcntl.ioctl takes a C int)."""
    if LIBC.ioctl(ctypes.c_int(fd), ctypes.c_ulong(req), ctypes.c_void_p(ptr)) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
# The device vanished (modules reloaded by the stress test): skip.
GONE = {errno.ENOENT, errno.ENODEV, errno.ENXIO}


class Skip(Exception):
    """The device or control node went away: skip this round."""


def config(fds, nr=None, flags=0, bs=0, pad=0, offset=0, sizelimit=0,
           fmt=b"raw", options=b"", reserved=0):
    fdl = list(fds) + [0] * (16 - len(fds))
    return CONFIG.pack(*fdl, len(fds) if nr is None else nr, flags, bs, pad,
                       offset, sizelimit, fmt, options, reserved,
                       0, 0, 0, 0, 0, 0, 0)


def opennode(path, flags=os.O_RDONLY):
    try:
        return os.open(path, flags)
    except OSError as e:
        if e.errno in GONE:
            raise Skip() from e
        raise


class Run:
    def __init__(self):
        self.calls = 0
        self.failures = []

    def expect(self, name, want, fn):
        """Calls fn(), which must raise OSError with errno in `want`."""
        self.calls += 1
        try:
            fn()
        except OSError as e:
            if e.errno in want:
                return
            got = errno.errorcode.get(e.errno, str(e.errno))
            self.failures.append(f"{name}: {got}, expected {'/'.join(errno.errorcode[w] for w in want)}")
            return
        self.failures.append(f"{name}: succeeded")
        raise Skip()  # something unexpected got attached: let the caller clean up


def root_round(run, index, raw, qcow2, dirfd):
    dev = f"/dev/lff{index}"
    try:
        c = opennode(CONTROL, os.O_RDWR)
    except Skip:
        raise
    try:
        try:
            fcntl.ioctl(c, CTL_ADD, index)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
        E = run.expect
        E("ctl add 65536", {errno.EINVAL}, lambda: fcntl.ioctl(c, CTL_ADD, 65536))
        E("ctl add existing", {errno.EEXIST}, lambda: fcntl.ioctl(c, CTL_ADD, index))
        E("ctl remove -1", {errno.EINVAL}, lambda: fcntl.ioctl(c, CTL_REMOVE, -1))
        E("ctl remove missing", {errno.ENODEV}, lambda: fcntl.ioctl(c, CTL_REMOVE, 65535))
        E("ctl unknown cmd", {errno.ENOTTY}, lambda: fcntl.ioctl(c, ioc(0, 0xAF, 0), 0))
    finally:
        os.close(c)

    d = opennode(dev)
    pipe_r, pipe_w = os.pipe()
    sock = socket.socket(socket.AF_UNIX)
    devnull = os.open("/dev/null", os.O_RDONLY)
    try:
        E = run.expect

        def cfg(*a, **kw):
            return lambda: fcntl.ioctl(d, CONFIGURE, config(*a, **kw))

        E("configure NULL", {errno.EFAULT}, lambda: fcntl.ioctl(d, CONFIGURE, 0))
        for p in BAD_PTRS:
            E(f"configure from {p:#x}", {errno.EFAULT}, lambda: ptr_ioctl(d, CONFIGURE, p))
        E("configure fd -1", {errno.EBADF}, cfg([-1]))
        E("configure fd 99999", {errno.EBADF}, cfg([99999]))
        E("configure second fd bad", {errno.EBADF}, cfg([raw, -5], fmt=b"qcow2"))
        E("nr_fds 0", {errno.EINVAL}, cfg([raw], nr=0))
        E("nr_fds 17", {errno.EINVAL}, cfg([raw], nr=17))
        E("nr_fds 2^32-1", {errno.EINVAL}, cfg([raw], nr=0xFFFFFFFF))
        E("flag bit 31", {errno.EINVAL}, cfg([raw], flags=1 << 31))
        E("pad set", {errno.EINVAL}, cfg([raw], pad=1))
        E("reserved set", {errno.EINVAL}, cfg([raw], reserved=1 << 63))
        for bs in (256, 1000, 8192, 0xFFFFFFFF):
            E(f"block size {bs}", {errno.EINVAL}, cfg([raw], bs=bs))
        E("offset 100", {errno.EINVAL}, cfg([raw], offset=100))
        E("offset 2^63", {errno.EINVAL}, cfg([raw], offset=1 << 63))
        E("sizelimit 1", {errno.EINVAL}, cfg([raw], sizelimit=1))
        E("empty format", {errno.EINVAL}, cfg([raw], fmt=b""))
        E("format ../raw", {errno.EINVAL}, cfg([raw], fmt=b"../raw"))
        E("format without NUL", {errno.EINVAL}, cfg([raw], fmt=b"a" * 32))
        E("unknown format", {errno.ENOENT}, cfg([raw], fmt=b"nosuchfmt"))
        E("options without NUL", {errno.EINVAL}, cfg([qcow2], fmt=b"qcow2", options=b"x" * 128, flags=1))
        E("directory layer", {errno.EINVAL}, cfg([dirfd]))
        E("character device layer", {errno.EINVAL}, cfg([devnull]))
        E("pipe layer", {errno.EINVAL}, cfg([pipe_r]))
        E("socket layer", {errno.EINVAL}, cfg([sock.fileno()]))
        E("direct I/O on a buffered fd", {errno.EINVAL}, cfg([raw], flags=2))
        E("qcow2 driver on a raw image", {errno.EINVAL}, cfg([raw], fmt=b"qcow2", flags=1))
        E("qcow2 unknown option", {errno.EINVAL}, cfg([qcow2], fmt=b"qcow2", flags=1, options=b"bogus=1"))
        E("qcow2 unknown snapshot", {errno.ENOENT}, cfg([qcow2], fmt=b"qcow2", flags=1, options=b"snapshot=nosuch"))
        E("qcow2 extra layer", {errno.EINVAL}, cfg([qcow2, raw], fmt=b"qcow2", flags=1))
        E("clear unattached", {errno.ENXIO}, lambda: fcntl.ioctl(d, CLR_FD, 0))
        E("status unattached", {errno.ENXIO}, lambda: fcntl.ioctl(d, GET_STATUS, bytes(STATUS.size)))
        E("set capacity unattached", {errno.ENXIO}, lambda: fcntl.ioctl(d, SET_CAPACITY, 0))
        E("unknown ioctl", {errno.ENOTTY}, lambda: fcntl.ioctl(d, ioc(0, 0xAF, 0), 0))
        E("configure, wrong size", {errno.ENOTTY}, lambda: fcntl.ioctl(d, ioc(1, 0xA0, 8), bytes(8)))
        # Attached: calls that need a configured device.
        run.calls += 1
        fcntl.ioctl(d, CONFIGURE, config([qcow2], fmt=b"qcow2", flags=1))
        try:
            E("status to NULL", {errno.EFAULT}, lambda: fcntl.ioctl(d, GET_STATUS, 0))
            for p in BAD_PTRS:
                E(f"status to {p:#x}", {errno.EFAULT}, lambda: ptr_ioctl(d, GET_STATUS, p))
            E("configure attached", {errno.EBUSY}, cfg([raw]))
            E("set capacity of qcow2", {errno.EOPNOTSUPP}, lambda: fcntl.ioctl(d, SET_CAPACITY, 0))
            c = opennode(CONTROL, os.O_RDWR)
            try:
                E("ctl remove attached", {errno.EBUSY}, lambda: fcntl.ioctl(c, CTL_REMOVE, index))
            finally:
                os.close(c)
            st = STATUS.unpack(fcntl.ioctl(d, GET_STATUS, bytes(STATUS.size)))
            if st[9].rstrip(b"\0") != b"qcow2" or st[3] != 1:
                run.failures.append(f"status of the attached device: {st}")
        finally:
            clear_retrying(d)
    finally:
        os.close(d)
        os.close(pipe_r)
        os.close(pipe_w)
        os.close(devnull)
        sock.close()


def clear_retrying(d):
    """LFF_CLR_FD, retried while another process (the unprivileged
    abuser) has the device open."""
    for _ in range(50):
        try:
            fcntl.ioctl(d, CLR_FD, 0)
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            time.sleep(0.1)
    fcntl.ioctl(d, CLR_FD, 0)


def unprivileged_round(run, devs):
    E = run.expect
    try:
        c = os.open(CONTROL, os.O_RDWR)
    except OSError as e:
        if e.errno in GONE:
            raise Skip() from e
        if e.errno != errno.EACCES:
            run.failures.append(f"open control node: {errno.errorcode.get(e.errno)}")
        c = None
    if c is not None:
        try:
            E("unprivileged ctl add", {errno.EPERM}, lambda: fcntl.ioctl(c, CTL_ADD, 1000))
            E("unprivileged ctl remove", {errno.EPERM}, lambda: fcntl.ioctl(c, CTL_REMOVE, 0))
            E("unprivileged ctl get-free", {errno.EPERM}, lambda: fcntl.ioctl(c, CTL_GET_FREE, 0))
        finally:
            os.close(c)
    for dev in devs:
        try:
            d = os.open(dev, os.O_RDONLY)
        except OSError as e:
            if e.errno not in GONE and e.errno != errno.EACCES:
                run.failures.append(f"open {dev}: {errno.errorcode.get(e.errno)}")
            continue
        try:
            E(f"unprivileged configure {dev}", {errno.EPERM},
              lambda: fcntl.ioctl(d, CONFIGURE, config([0])))
            E(f"unprivileged configure NULL {dev}", {errno.EPERM}, lambda: fcntl.ioctl(d, CONFIGURE, 0))
            E(f"unprivileged clear {dev}", {errno.EPERM}, lambda: fcntl.ioctl(d, CLR_FD, 0))
            E(f"unprivileged set capacity {dev}", {errno.EPERM}, lambda: fcntl.ioctl(d, SET_CAPACITY, 0))
            for p in BAD_PTRS:
                E(f"unprivileged status to {p:#x} {dev}", {errno.EFAULT, errno.ENXIO},
                  lambda: ptr_ioctl(d, GET_STATUS, p))
            run.calls += 1
            try:
                fcntl.ioctl(d, GET_STATUS, bytes(STATUS.size))
            except OSError as e:
                if e.errno != errno.ENXIO:
                    run.failures.append(f"unprivileged status {dev}: {errno.errorcode.get(e.errno)}")
        finally:
            os.close(d)


def main(argv):
    seconds = float(argv[1])
    run = Run()
    rounds = skipped = 0
    end = time.monotonic() + seconds
    if argv[2] == "--unprivileged":
        if os.geteuid() == 0:
            sys.exit("run me as an unprivileged user")
        devs = argv[3:]
        while time.monotonic() < end:
            rounds += 1
            try:
                unprivileged_round(run, devs)
            except Skip:
                skipped += 1
            time.sleep(0.01)
    else:
        index = int(argv[2])
        raw = os.open(argv[3], os.O_RDWR)
        qcow2 = os.open(argv[4], os.O_RDONLY)
        dirfd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
        while time.monotonic() < end:
            rounds += 1
            try:
                root_round(run, index, raw, qcow2, dirfd)
            except Skip:
                skipped += 1
                # Detach whatever an unexpectedly successful call attached.
                try:
                    d = os.open(f"/dev/lff{index}", os.O_RDONLY)
                    try:
                        fcntl.ioctl(d, CLR_FD, 0)
                    finally:
                        os.close(d)
                except OSError:
                    pass
                time.sleep(0.05)
            except OSError as e:
                if e.errno in GONE:
                    skipped += 1
                    time.sleep(0.05)
                else:
                    run.failures.append(f"round {rounds}: {e}")
    print(f"rounds={rounds} calls={run.calls} skipped={skipped} failures={len(run.failures)}")
    for f in run.failures[:20]:
        print(f"  {f}")
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

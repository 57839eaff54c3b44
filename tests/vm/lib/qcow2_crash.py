#!/usr/bin/python3
"""The qcow2 crash test's two halves (see tests/vm/qcow2-crash.sh).

guest: inside the test guest. Puts dm-log-writes over the image's disk
    (lff-disk0) with the log on lff-disk1, attaches the image read-write
    with losetup-fmt, then writes rounds of 4 KiB-256 KiB blocks with
    O_DIRECT at pseudo-random offsets; after each round an fsync of the
    device, a log mark "rN", a wait until that mark is on the log disk,
    and only then "FLUSHED N" on the console. A timer started in round
    2-4 resets the guest (sysrq b) at a random moment: mid-burst, in the
    flush, or in the mark.
    With lff-disk2 (a dirty lazy_refcounts image), first checks that a
    read-write attach of it is refused and a read-only one works.

host: after the guest died. Replays the log onto the image as it was
    before the boot and checks crash states: after every flush entry,
    and for every stretch between two flushes, states holding any
    subset of its sectors (each written sector old, or one of the
    versions written in the stretch: a disk with a volatile cache may
    have destaged any of them). In each state `qemu-img check` must
    find no corruption (exit 0 or 3), and in a sample of states every
    round up to the last mark before it must read back (later rounds:
    old or new content per sector, never anything else). The state
    left for the next boot is the log's end with a random subset of
    its unfinished stretch.

Every 512-byte sector a round writes holds its own name: a magic, the
round and the sector number, then bytes derived from the round; so a
sector read back is either exactly what some round wrote there, or it
is wrong.
"""
import argparse
import hashlib
import mmap
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import threading
import time

SECTOR = 512
MAGIC = b"LFFCRASH"
HDR = struct.Struct("<8sQQ")  # magic, round, sector
MAX_ROUNDS = 9  # rounds a boot may write (the cut comes in round 2..~7)

# dm-log-writes' log format (drivers/md/dm-log-writes.c).
LOG_MAGIC = 0x6A736677736872
LOG_SUPER = struct.Struct("<QQQI")  # magic, version, nr_entries, sectorsize
LOG_ENTRY = struct.Struct("<QQQQ")  # sector, nr_sectors, flags, data_len
FLUSH, FUA, DISCARD, MARK, METADATA = 1, 2, 4, 8, 16
ALL_FLAGS = FLUSH | FUA | DISCARD | MARK | METADATA

_fill = {}


def filler(r):
    """The 488 bytes after the name in every sector of round r."""
    if r not in _fill:
        _fill[r] = hashlib.shake_128(b"lff-crash:%d" % r).digest(SECTOR - HDR.size)
    return _fill[r]


def sector_bytes(r, s):
    return HDR.pack(MAGIC, r, s) + filler(r)


def round_writes(seed, r, vsize):
    """The (offset, length) writes of round r: 4 KiB to 256 KiB, mostly
    small; offsets 4 KiB aligned, some only 512 B aligned (partial
    subclusters); about half of them in the first 4 MiB, so that rounds
    rewrite each other's clusters."""
    rng = random.Random("%s:%d" % (seed, r))
    out = []
    for _ in range(rng.randint(4, 9)):
        n = rng.choice((1, 1, 1, 2, 4, 8, 16, 64)) * 4096
        align = 512 if rng.random() < 0.3 else 4096
        span = min(vsize, 4 << 20) if rng.random() < 0.5 else vsize
        off = rng.randrange(0, (span - n) // align + 1) * align
        out.append((off, n))
    return out


def cut_plan(seed, first_round):
    """When the boot that starts at first_round is cut: the timer starts
    with the round at index `at` and fires after `frac` times the mean
    round time so far."""
    rng = random.Random("%s:cut:%d" % (seed, first_round))
    return rng.randint(2, 5), rng.uniform(0.0, 1.5)


def sh(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


# ---------------------------------------------------------------- guest


def disk_by_serial(serial):
    for name in sorted(os.listdir("/sys/block")):
        try:
            with open("/sys/block/%s/serial" % name) as f:
                if f.read().strip() == serial:
                    return "/dev/" + name
        except OSError:
            pass
    return None


# What vm-run would find in the kernel log (guest-init's list): the guest
# dies before vm-run can look, so the writer looks after every round.
KERNEL_BAD = re.compile(r"Oops|BUG:|WARNING:|Kernel panic|kernel BUG|general protection|"
                        r"Call Trace|UBSAN|KASAN|possible circular locking|"
                        r"INFO: task .* blocked|rcu_.*stall|refcount_t:")


def sysrq_reset():
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("b")


class LogFollower:
    """Reads dm-log-writes entry headers from the log disk (O_DIRECT, so
    what the disk holds) to see when a mark has reached it."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        self.buf = mmap.mmap(-1, 4096)
        self.pos = 1

    def wait_mark(self, name, timeout=60):
        end = time.monotonic() + timeout
        while True:
            os.preadv(self.fd, [memoryview(self.buf)[:SECTOR]], self.pos * SECTOR)
            sector, nr, flags, dlen = LOG_ENTRY.unpack_from(self.buf)
            if flags == 0 and nr == 0 and sector == 0:
                if time.monotonic() > end:
                    raise RuntimeError("log mark %s not on the log disk after %ds" % (name, timeout))
                time.sleep(0.02)
                continue
            self.pos += 1 + (0 if flags & (DISCARD | MARK) else nr)
            if flags & MARK and bytes(self.buf[32:32 + dlen]) == name.encode():
                return


def guest_dirty_checks(dirty):
    """A dirty image (lazy_refcounts, after a crash): read-write attach
    refused with EROFS and a log line naming the reason, read-only
    attach works."""
    p = sh("losetup-fmt", "--file-fmt", "qcow2", "-f", "--show", dirty)
    log = sh("dmesg").stdout.splitlines()[-10:]
    if p.returncode != 0 and "Read-only file system" in p.stderr:
        print("ok - dirty image: read-write attach refused (EROFS)")
    else:
        print("not ok - dirty image: read-write attach: exit %d: %s %s"
              % (p.returncode, p.stdout.strip(), p.stderr.strip()))
        if p.returncode == 0:
            sh("losetup-fmt", "-d", p.stdout.strip())
    if any("qcow2: image is marked dirty" in line for line in log):
        print("ok - dirty image: the kernel log names the reason")
    else:
        print("not ok - dirty image: no 'image is marked dirty' line: %s" % log)
    p = sh("losetup-fmt", "--file-fmt", "qcow2", "-r", "-f", "--show", dirty)
    if p.returncode == 0:
        print("ok - dirty image: read-only attach works")
        sh("losetup-fmt", "-d", p.stdout.strip())
    else:
        print("not ok - dirty image: read-only attach: %s" % p.stderr.strip())


def cmd_guest(a):
    def die(msg):
        print("guest: " + msg, flush=True)
        sys.exit(1)

    p = sh("modprobe", "loop_file_fmt_qcow2")
    if p.returncode:
        die("modprobe loop_file_fmt_qcow2: " + p.stderr)
    data, logdev = disk_by_serial("lff-disk0"), disk_by_serial("lff-disk1")
    if not data or not logdev:
        die("no lff-disk0/lff-disk1 disks (vm-run --disk)")
    dirty = disk_by_serial("lff-disk2")
    if dirty:
        guest_dirty_checks(dirty)
    with open("/sys/block/%s/queue/logical_block_size" % os.path.basename(logdev)) as f:
        if int(f.read()) != SECTOR:
            die("the log disk's sectors are not 512 bytes")
    sectors = sh("blockdev", "--getsz", data).stdout.strip()
    env = dict(os.environ, DM_DISABLE_UDEV="1")
    p = subprocess.run(["dmsetup", "create", "--noudevsync", "lffcrash", "--table",
                        "0 %s log-writes %s %s" % (sectors, data, logdev)],
                       capture_output=True, text=True, env=env)
    if p.returncode:
        die("dmsetup create: " + p.stderr)
    p = sh("losetup-fmt", "--file-fmt", "qcow2", "-f", "--show", "/dev/mapper/lffcrash")
    if p.returncode:
        die("attach: " + p.stderr)
    dev = p.stdout.strip()
    if sh("blockdev", "--getro", dev).stdout.strip() != "0":
        die("%s is read-only" % dev)
    print("ATTACHED %s" % dev, flush=True)

    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 256 * 1024)
    follower = LogFollower(logdev)
    at, frac = cut_plan(a.seed, a.first_round)
    times = []
    for i in range(MAX_ROUNDS):
        r = a.first_round + i
        if i == at:
            delay = frac * sum(times) / len(times)
            print("CUT-TIMER round %d +%.2fs" % (r, delay), flush=True)
            threading.Timer(delay, sysrq_reset).start()
        t0 = time.monotonic()
        for off, n in round_writes(a.seed, r, a.vsize):
            s0 = off // SECTOR
            buf[:n] = b"".join(HDR.pack(MAGIC, r, s) + filler(r) for s in range(s0, s0 + n // SECTOR))
            if os.pwrite(fd, memoryview(buf)[:n], off) != n:
                die("short write at %d" % off)
        os.fsync(fd)
        p = subprocess.run(["dmsetup", "message", "lffcrash", "0", "mark", "r%d" % r],
                           capture_output=True, text=True, env=env)
        if p.returncode:
            die("dmsetup message: " + p.stderr)
        follower.wait_mark("r%d" % r)
        print("FLUSHED %d" % r, flush=True)
        bad = [x for x in sh("dmesg").stdout.splitlines() if KERNEL_BAD.search(x)]
        if bad:
            die("the kernel log reports problems:\n" + "\n".join(bad[:20]))
        times.append(time.monotonic() - t0)
    print("CUT-TIMER did not fire: resetting now", flush=True)
    sysrq_reset()
    time.sleep(30)
    die("still alive after sysrq b")


# ----------------------------------------------------------------- host


class Fail(Exception):
    pass


def parse_log(path, data_bytes):
    """The entries of a dm-log-writes log as far as they are whole:
    (flags, sector, data or None, mark name or None)."""
    with open(path, "rb") as f:
        # Mapped, not read: the log disk is sparse and mostly empty.
        raw = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def at(sector, n):
        return raw[sector * SECTOR:(sector + n) * SECTOR]

    magic, _, nr_super, ssize = LOG_SUPER.unpack_from(raw, 0)
    if magic != LOG_MAGIC:
        nr_super = 0  # no super yet: it is written with marks and FUA
    elif ssize != SECTOR:
        raise Fail("log sector size %d" % ssize)
    entries, pos = [], 1
    while (pos + 1) * SECTOR <= len(raw):
        sector, nr, flags, dlen = LOG_ENTRY.unpack_from(raw, pos * SECTOR)
        if sector == 0 and nr == 0 and flags == 0:
            break
        if flags & ~ALL_FLAGS or (sector + nr) * SECTOR > data_bytes:
            if len(entries) < nr_super:
                raise Fail("log entry %d is garbage (%d %d %#x)" % (len(entries), sector, nr, flags))
            break
        if flags & MARK:
            entries.append((flags, sector, None, at(pos, 1)[32:32 + dlen].decode()))
            pos += 1
        elif flags & DISCARD:
            entries.append((flags, sector, bytes(nr * SECTOR), None))
            pos += 1
        else:
            entries.append((flags, sector, at(pos + 1, nr) if nr else None, None))
            pos += 1 + nr
    if len(entries) < nr_super:
        raise Fail("the log holds %d entries, its super block says %d" % (len(entries), nr_super))
    # The reset may have come between the last entry's header and its
    # data (the super block was written after every entry it counts).
    if len(entries) > nr_super and entries[-1][2] is not None and not entries[-1][0] & MARK:
        entries.pop()
    return entries


def stretches(entries):
    """Splits the log at its flush (and FUA) entries: a list of
    (writes, marks, closed), writes as {sector: [versions]} in log
    order, marks the round numbers of the marks in the stretch; the
    last one is not closed (its flush is not in the log)."""
    out = []
    cur, marks = {}, []

    def add(sector, data):
        for k in range(len(data) // SECTOR):
            cur.setdefault(sector + k, []).append(data[k * SECTOR:(k + 1) * SECTOR])

    for flags, sector, data, name in entries:
        if flags & MARK:
            marks.append(int(name[1:]))
            continue
        if flags & FLUSH:
            out.append((cur, marks, True))
            cur, marks = {}, []
            if data is not None:  # a flush with data: the data comes after it
                add(sector, data)
            continue
        if data is not None:
            add(sector, data)
        if flags & FUA:  # durable once complete; treated as a boundary
            out.append((cur, marks, True))
            cur, marks = {}, []
    out.append((cur, marks, False))
    return out


class Image:
    """The image file being replayed, sector by sector."""

    def __init__(self, path):
        self.path = path
        self.f = open(path, "r+b")

    def read(self, s):
        self.f.seek(s * SECTOR)
        return self.f.read(SECTOR)

    def write(self, s, data):
        self.f.seek(s * SECTOR)
        self.f.write(data)

    def apply_all(self, writes):
        for s, versions in writes.items():
            self.write(s, versions[-1])
        self.f.flush()

    def apply_subset(self, writes, rng):
        """Each written sector: old (with 1 - p), else one of its
        versions, the last most likely. Returns what to undo."""
        p = rng.choice((0.1, 0.5, 0.9))
        undo = {}
        for s, versions in writes.items():
            if rng.random() >= p:
                continue
            v = versions[-1] if rng.random() < 0.7 else rng.choice(versions)
            undo[s] = self.read(s)
            self.write(s, v)
        self.f.flush()
        return undo

    def undo(self, undo):
        for s, data in undo.items():
            self.write(s, data)
        self.f.flush()

    def incompat(self):
        """The incompatible feature bits (version 2 has none)."""
        self.f.seek(4)
        if struct.unpack(">I", self.f.read(4))[0] < 3:
            return 0
        self.f.seek(72)
        return struct.unpack(">Q", self.f.read(8))[0]


def qemu_check(path, what):
    p = sh("qemu-img", "check", "-f", "qcow2", path)
    if p.returncode not in (0, 3):
        out = (p.stdout + p.stderr).strip().splitlines()
        if len(out) > 24:
            out = out[:24] + ["... (%d more lines)" % (len(out) - 24)]
        raise Fail("%s: qemu-img check exit %d:\n%s" % (what, p.returncode, "\n".join(out)))
    return p.returncode


class Model:
    """What the virtual disk may read after the boot's rounds: the bytes
    before the boot (base_raw), the rounds first..first+MAX_ROUNDS-1."""

    def __init__(self, base_raw, seed, first, vsize):
        with open(base_raw, "rb") as f:
            self.base = f.read()
        if len(self.base) != vsize:
            raise Fail("base model is %d bytes, not %d" % (len(self.base), vsize))
        self.vsize = vsize
        self.rounds = {}  # sector -> [rounds writing it, ascending]
        for r in range(first, first + MAX_ROUNDS):
            for off, n in round_writes(seed, r, vsize):
                for s in range(off // SECTOR, (off + n) // SECTOR):
                    lst = self.rounds.setdefault(s, [])
                    if not lst or lst[-1] != r:
                        lst.append(r)

    def verify(self, raw, durable, what):
        """raw (the virtual disk's bytes): every sector holds the last
        round <= durable that wrote it (or the base), or a later round's
        bytes for it."""
        if len(raw) != self.vsize:
            raise Fail("%s: the image reads %d bytes, not %d" % (what, len(raw), self.vsize))
        bad = []
        chunk = 64 * 1024
        for c in range(0, self.vsize, chunk):
            same = raw[c:c + chunk] == self.base[c:c + chunk]
            for s in range(c // SECTOR, (c + chunk) // SECTOR):
                rs = self.rounds.get(s)
                if same and not rs:
                    continue
                got = raw[s * SECTOR:(s + 1) * SECTOR]
                done = [r for r in (rs or ()) if r <= durable]
                want = sector_bytes(done[-1], s) if done else self.base[s * SECTOR:(s + 1) * SECTOR]
                if got == want:
                    continue
                m, r, s2 = HDR.unpack_from(got)
                if m == MAGIC and s2 == s and r > durable and r in (rs or ()) and got == sector_bytes(r, s):
                    continue
                if m == MAGIC:
                    found = "round %d's sector %d" % (r, s2)
                elif got == bytes(SECTOR):
                    found = "zeros"
                elif got == self.base[s * SECTOR:(s + 1) * SECTOR]:
                    found = "the bytes from before the boot"
                else:
                    found = "unknown bytes"
                bad.append("sector %d (offset %d): wanted %s, found %s"
                           % (s, s * SECTOR, "round %d" % done[-1] if done else "the old bytes", found))
        if bad:
            raise Fail("%s: %d sectors wrong (rounds <= %d flushed):\n  %s"
                       % (what, len(bad), durable, "\n  ".join(bad[:8])))


def to_raw(image, out):
    p = sh("qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, out)
    if p.returncode:
        raise Fail("qemu-img convert: " + p.stderr)
    with open(out, "rb") as f:
        return f.read()


def cmd_host(a):
    """Checks one cut; prints TAP lines; exit 1 on a failure."""
    rng = random.Random("%s:host:%d" % (a.seed, a.first_round))
    console = open(a.console, errors="replace").read().splitlines()
    flushed = [int(x.split()[1]) for x in console if x.startswith("FLUSHED ")]
    last_flushed = flushed[-1] if flushed else a.first_round - 1
    model = Model(a.base_raw, a.seed, a.first_round, a.vsize)
    work = a.out
    shutil.copyfile(a.base, work)
    img = Image(work)
    entries = parse_log(a.log, os.path.getsize(a.base))
    parts = stretches(entries)
    closed = [p for p in parts if p[2]]
    n_checks = n_verified = n_subset_sectors = 0
    durable = a.first_round - 1
    dirty_seen = False
    raw_tmp = work + ".raw"
    # Data checks: the last state of the log always, and a sample.
    verify_at = set(rng.sample(range(len(parts)), min(len(parts), a.verify)))
    for i, (writes, marks, is_closed) in enumerate(parts):
        # Marks in this stretch: their rounds were durable before it.
        durable = max([durable] + marks)
        tries = a.subsets if writes else 0
        for t in range(tries):
            undo = img.apply_subset(writes, rng)
            n_subset_sectors += len(undo)
            what = "stretch %d/%d, a subset of %d sectors" % (i + 1, len(parts), len(undo))
            qemu_check(work, what)
            n_checks += 1
            dirty_seen |= bool(img.incompat() & 1)
            if t == 0 and i in verify_at:
                model.verify(to_raw(work, raw_tmp), durable, what)
                n_verified += 1
            img.undo(undo)
        if not is_closed:
            break
        img.apply_all(writes)
        qemu_check(work, "after flush %d/%d" % (i + 1, len(closed)))
        n_checks += 1
        dirty_seen |= bool(img.incompat() & 1)
        if img.incompat() & 2:
            raise Fail("after flush %d: the image is marked corrupt" % (i + 1))
    # The state for the next boot: every closed stretch, and a subset of
    # the unfinished one.
    img.apply_subset(parts[-1][0], rng)
    what = "the state after the cut"
    qemu_check(work, what)
    n_checks += 1
    if durable < last_flushed:
        raise Fail("the console says round %d was flushed, the log's last mark is r%d"
                   % (last_flushed, durable))
    raw = to_raw(work, raw_tmp)
    model.verify(raw, durable, what)
    n_verified += 1
    dirty = bool(img.incompat() & 1)
    img.f.close()
    print("# cut: %d log entries, %d flushes, %d states checked (%d sectors in the "
          "subsets), %d read back; rounds %d..%d flushed"
          % (len(entries), len(closed), n_checks, n_subset_sectors, n_verified,
             a.first_round, durable))
    if durable < a.first_round + 1:
        raise Fail("fewer than 2 rounds flushed before the cut (last mark r%d)" % durable)
    if a.lazy:
        if not dirty:
            raise Fail("lazy_refcounts: the image is not marked dirty after the crash")
        print("ok - the dirty bit is set after the crash (lazy_refcounts)")
        shutil.copyfile(work, a.dirty_copy)
        p = sh("qemu-img", "check", "-r", "all", "-f", "qcow2", work)
        if p.returncode != 0:
            raise Fail("qemu-img check -r all: exit %d\n%s%s" % (p.returncode, p.stdout, p.stderr))
        img = Image(work)
        if img.incompat() & 1:
            raise Fail("qemu-img check -r all left the dirty bit")
        img.f.close()
        raw = to_raw(work, raw_tmp)
        model.verify(raw, durable, "after qemu-img check -r all")
        print("ok - qemu-img check -r all repairs it (exit 0, dirty bit clear, data intact)")
    elif dirty_seen or dirty:
        raise Fail("the dirty bit was set without lazy_refcounts")
    with open(a.out_raw, "wb") as f:
        f.write(raw)
    os.unlink(raw_tmp)
    # The next boot's first round.
    print("NEXT %d" % (a.first_round + MAX_ROUNDS))


def cmd_base(a):
    """A raw disk for the overlay variant's base: round 0 in every other
    MiB, zeros between."""
    with open(a.out, "wb") as f:
        f.truncate(a.vsize)
        for off in range(0, a.vsize, 2 << 20):
            s0 = off // SECTOR
            f.seek(off)
            f.write(b"".join(sector_bytes(0, s) for s in range(s0, s0 + (1 << 20) // SECTOR)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("guest")
    h = sub.add_parser("host")
    b = sub.add_parser("base")
    b.add_argument("--vsize", type=int, required=True)
    b.add_argument("--out", required=True)
    for p in (g, h):
        p.add_argument("--seed", required=True)
        p.add_argument("--first-round", type=int, required=True)
        p.add_argument("--vsize", type=int, required=True)
    h.add_argument("--base", required=True, help="the image file before the boot")
    h.add_argument("--base-raw", required=True, help="its virtual disk's bytes")
    h.add_argument("--log", required=True, help="the dm-log-writes log disk")
    h.add_argument("--console", required=True)
    h.add_argument("--out", required=True, help="the image state for the next boot")
    h.add_argument("--out-raw", required=True)
    h.add_argument("--subsets", type=int, default=3, help="subset states per stretch")
    h.add_argument("--verify", type=int, default=6, help="stretches whose states are read back")
    h.add_argument("--lazy", action="store_true")
    h.add_argument("--dirty-copy")
    a = ap.parse_args()
    if a.cmd == "guest":
        cmd_guest(a)
        return
    if a.cmd == "base":
        cmd_base(a)
        return
    try:
        cmd_host(a)
    except Fail as e:
        print("not ok - %s" % str(e).replace("\n", "\n#   "))
        sys.exit(1)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Patches qcow2 images for the guest tests (malformed images, chains).

    qcow2-patch.py IMAGE COMMAND [ARGS...]

Commands (numbers accept 0x prefixes; GUEST is a guest byte offset in a
standard-L2 image):
  set32 OFFSET VALUE          big-endian u32 at file OFFSET
  set64 OFFSET VALUE          big-endian u64 at file OFFSET
  l1-entry GUEST VALUE        the L1 entry covering GUEST
  l2-entry GUEST VALUE        the L2 entry of GUEST's cluster
  l2-entry-get GUEST          prints that L2 entry (hex)
  l2-bitmap GUEST VALUE       the subcluster bitmap of GUEST's extended L2 entry
  l2-offset GUEST             prints the offset of GUEST's L2 table (hex)
  get32 OFFSET / get64 OFFSET prints a big-endian field (hex)
  set8 OFFSET VALUE           one byte at file OFFSET
  ext-offset INDEX            prints the file offset of header extension INDEX
  compressed-get GUEST        prints GUEST's compressed data: host offset and
                              additional sectors (hex)
  compressed-set GUEST OFFSET SECTORS  makes GUEST's L2 entry a compressed
                              descriptor for OFFSET and SECTORS additional
                              sectors
  past-eof                    prints a cluster-aligned offset 1 GiB past EOF
  trash-compressed GUEST      overwrites GUEST's compressed data with 0xff
  hide-backing-format         renames the backing format extension to an
                              unknown type (readers must probe the magic)
"""
import os
import struct
import sys

EXT_BACKING_FORMAT = 0xE2792ACA
OFFSET_MASK = 0x00FFFFFFFFFFFE00


def num(s):
    """A number; negative ones (from shell arithmetic) wrap to 64 bits."""
    return int(s, 0) & (2**64 - 1)


def main():
    path, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(path, "r+b") as f:
        h = f.read(112)
        version, = struct.unpack(">I", h[4:8])
        cluster_bits, = struct.unpack(">I", h[20:24])
        l1_off, = struct.unpack(">Q", h[40:48])
        header_len = struct.unpack(">I", h[100:104])[0] if version == 3 else 72
        incompat = struct.unpack(">Q", h[72:80])[0] if version == 3 else 0
        # Extended L2 entries (incompatible bit 4) are 16 bytes.
        entry_len = 16 if incompat & 0x10 else 8
        l2_bits = cluster_bits - (4 if entry_len == 16 else 3)

        def get64(off):
            f.seek(off)
            return struct.unpack(">Q", f.read(8))[0]

        def put(off, fmt, v):
            f.seek(off)
            f.write(struct.pack(fmt, v))

        def l1_entry_off(guest):
            return l1_off + 8 * (guest >> (cluster_bits + l2_bits))

        def l2_entry_off(guest):
            l2 = get64(l1_entry_off(guest)) & OFFSET_MASK
            if l2 == 0:
                sys.exit("no L2 table for that offset")
            return l2 + entry_len * ((guest >> cluster_bits) & ((1 << l2_bits) - 1))

        def l2_offset(guest):
            return get64(l1_entry_off(guest)) & OFFSET_MASK

        # Compressed descriptor layout: x = 62 - (cluster_bits - 8) offset
        # bits, then the additional sector count.
        x = 62 - (cluster_bits - 8)

        if cmd == "set32":
            put(num(args[0]), ">I", num(args[1]))
        elif cmd == "set64":
            put(num(args[0]), ">Q", num(args[1]))
        elif cmd == "l1-entry":
            put(l1_entry_off(num(args[0])), ">Q", num(args[1]))
        elif cmd == "l2-entry":
            put(l2_entry_off(num(args[0])), ">Q", num(args[1]))
        elif cmd == "l2-entry-get":
            print(hex(get64(l2_entry_off(num(args[0])))))
        elif cmd == "l2-bitmap":
            put(l2_entry_off(num(args[0])) + 8, ">Q", num(args[1]))
        elif cmd == "l2-offset":
            print(hex(l2_offset(num(args[0]))))
        elif cmd in ("get32", "get64"):
            f.seek(num(args[0]))
            n = 4 if cmd == "get32" else 8
            print(hex(int.from_bytes(f.read(n), "big")))
        elif cmd == "set8":
            put(num(args[0]), ">B", num(args[1]))
        elif cmd == "ext-offset":
            off, want = header_len, num(args[0])
            for i in range(want + 1):
                f.seek(off)
                kind, length = struct.unpack(">II", f.read(8))
                if kind == 0:
                    sys.exit("no such header extension")
                if i == want:
                    print(off)
                off += 8 + (length + 7) // 8 * 8
        elif cmd == "compressed-get":
            e = get64(l2_entry_off(num(args[0])))
            if not e & (1 << 62):
                sys.exit("cluster is not compressed")
            desc = e & ((1 << 62) - 1)
            print(hex(desc & ((1 << x) - 1)), hex(desc >> x))
        elif cmd == "compressed-set":
            off, sectors = num(args[1]), num(args[2])
            put(l2_entry_off(num(args[0])), ">Q", (1 << 62) | (sectors << x) | off)
        elif cmd == "past-eof":
            size = os.fstat(f.fileno()).st_size
            c = 1 << cluster_bits
            print(hex(((size + c - 1) // c) * c + (1 << 30)))
        elif cmd == "trash-compressed":
            e = get64(l2_entry_off(num(args[0])))
            if not e & (1 << 62):
                sys.exit("cluster is not compressed")
            desc = e & ((1 << 62) - 1)
            off = desc & ((1 << x) - 1)
            sectors = (desc >> x) + 1
            f.seek(off)
            f.write(b"\xff" * (sectors * 512 - off % 512))
        elif cmd == "hide-backing-format":
            off = header_len
            while True:
                f.seek(off)
                kind, length = struct.unpack(">II", f.read(8))
                if kind == 0:
                    sys.exit("no backing format extension")
                if kind == EXT_BACKING_FORMAT:
                    put(off, ">I", 0x0DDBA115)
                    break
                off += 8 + (length + 7) // 8 * 8
        else:
            sys.exit(__doc__)


main()

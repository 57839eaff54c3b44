#!/bin/bash
# The VDI driver (loop_file_fmt_vdi), read-only:
# - a corpus made here with qemu-img/qemu-io (empty, sparse writes across a
#   block boundary, converted dynamic and static images, a created static
#   image, an odd size, a zero-block (0xfffffffe) entry): every device
#   equals `qemu-img convert -O raw`, read buffered and with 4 KiB direct
#   requests;
# - losetup-fmt: `auto` recognises the signature, a plain attach of a VDI
#   file warns, sysfs shows the format and the image type, read-write and
#   direct I/O are refused;
# - malformed images through the raw LFF_CONFIGURE ioctl (lffctl.py), so
#   nothing in userspace screens them: refused at attach with their errno
#   and a log line naming the device, leaving it free; a block pointing
#   past the end of the file fails only the reads that touch it (EIO).
. "$(dirname "$0")/lib.sh"
FMT=vdi
. "$(dirname "$0")/imgfmt.sh"
cd "$WORK" || exit 1

# hdr FILE OFFSET [VALUE]: reads (or writes) the little-endian u32 at OFFSET.
hdr() {
	/usr/bin/python3 - "$@" <<'PY'
import struct, sys
path, off = sys.argv[1], int(sys.argv[2], 0)
with open(path, "r+b") as f:
    f.seek(off)
    if len(sys.argv) > 3:
        f.write(struct.pack("<I", int(sys.argv[3], 0) & 0xffffffff))
    else:
        print(struct.unpack("<I", f.read(4))[0])
PY
}
hdr64() { # FILE OFFSET VALUE: writes a little-endian u64
	/usr/bin/python3 -c 'import struct,sys
with open(sys.argv[1], "r+b") as f: f.seek(int(sys.argv[2], 0)); f.write(struct.pack("<Q", int(sys.argv[3], 0)))' "$@"
}

check "modprobe loop_file_fmt_vdi" modprobe loop_file_fmt_vdi
grep -qw vdi /sys/class/misc/loop-file-fmt-control/formats &&
	ok "the control node lists vdi" || fail "the control node does not list vdi"

# --- the corpus -----------------------------------------------------------
qemu-img create -q -f vdi empty.vdi 64M
qemu-img create -q -f vdi sparse.vdi 64M
io sparse.vdi "write -P 0xaa 0 4k" "write -P 0xbb 1020k 8k" "write -P 0xcc 40M 1M" \
	"write -P 0xdd 63M 512" "write -P 0x11 7M 3k"
{ head -c $((3 * M)) /dev/urandom; head -c $((2 * M)) /dev/zero; head -c $((M + 4096)) /dev/urandom; } >mixed.raw
qemu-img convert -q -f raw -O vdi mixed.raw converted.vdi
qemu-img convert -q -f raw -O vdi -o static=on mixed.raw static-converted.vdi
qemu-img create -q -f vdi -o static=on static.vdi 8M
io static.vdi "write -P 0x5a 2M 64k" "write -P 0xa5 8184k 8k"
qemu-img create -q -f vdi odd.vdi $((3 * M + 512))
io odd.vdi "write -P 0x77 $((3 * M - 4096)) 4096" "write -P 0x78 $((3 * M)) 512"
cp sparse.vdi zero-entry.vdi
bmap=$(hdr zero-entry.vdi 340)
hdr zero-entry.vdi $((bmap + 40 * 4)) 0xfffffffe
compare_corpus empty sparse converted static-converted static odd zero-entry
check "zero-entry: block 40 really reads as zeros" \
	cmp -n $M <(dd if=zero-entry.vdi.raw bs=1M skip=40 count=1 status=none) /dev/zero

# --- losetup-fmt --------------------------------------------------------
dev=$(losetup-fmt --file-fmt auto -r -f --show sparse.vdi)
check_eq "auto: sparse.vdi attaches as vdi" vdi "$(sysfs "$dev" format)"
check_eq "sysfs vdi_type: dynamic" dynamic "$(sysfs "$dev" vdi_type)"
detach "$dev"
dev=$(losetup-fmt --file-fmt auto -r -f --show static.vdi)
check_eq "sysfs vdi_type: static" static "$(sysfs "$dev" vdi_type)"
detach "$dev"
losetup_refusals sparse.vdi

# --- malformed images -----------------------------------------------------
use_free_device
# The field offsets are those of formats/vdi/src/format/header.rs.
f=$(bad signature); hdr "$f" 64 0xbeda107e
refused "bad signature" EINVAL "" "$f"
f=$(bad version); hdr "$f" 68 0x00010002
refused "version 1.2" ENOTSUP "" "$f"
f=$(bad differencing); hdr "$f" 76 4
refused "a differencing image" ENOTSUP "" "$f"
f=$(bad blocksize); hdr "$f" 376 $((2 * M))
refused "2 MiB blocks" ENOTSUP "" "$f"
f=$(bad extra); hdr "$f" 380 512
refused "extra data before blocks" ENOTSUP "" "$f"
f=$(bad sector); hdr "$f" 360 4096
refused "4096-byte sectors" EINVAL "" "$f"
f=$(bad blocks); hdr "$f" 384 $(((1 << 23) + 1))
refused "2^23+1 blocks" EFBIG "" "$f"
f=$(bad disksize); hdr64 "$f" 368 $((65 * M))
refused "disk size beyond its blocks" EINVAL "" "$f"
f=$(bad bmap); hdr "$f" 340 $(($(stat -c %s sparse.vdi) + 512))
refused "block map past the end" EINVAL "" "$f"
f=$(bad bmap-unaligned); hdr "$f" 340 $((bmap + 1))
refused "unaligned block map" EINVAL "" "$f"
f=$(bad parent); /usr/bin/python3 -c 'import sys
with open(sys.argv[1], "r+b") as f: f.seek(440); f.write(b"\x01")' "$f"
refused "a parent UUID" ENOTSUP "" "$f"
f=$(bad truncated); truncate -s 300 "$f"
refused "truncated inside the header" EINVAL "" "$f"
head -c 65536 /dev/urandom >bad-garbage.vdi
refused "random bytes" EINVAL "" bad-garbage.vdi
# The log lines say what is wrong, not only that something is.
mark
kattach bad-version.vdi >/dev/null 2>&1
check "the version refusal names the version" \
	sh -c "dmesg | sed -n '/$MARK\$/,\$p' | grep -qi 'version'"

# A block entry past the end of the file: attach succeeds, reads of that
# block fail with EIO, the other blocks read right.
f=$(bad entry); hdr "$f" $((bmap + 7 * 4)) 100000
qemu-img convert -f vdi -O raw sparse.vdi sparse.vdi.raw
if dev=$(attach "$f" 2>&1); then
	check_fails "a read of the block past the end fails with EIO" "Input/output error" \
		dd if="$dev" bs=4k skip=$((7 * 256)) count=1 iflag=direct of=/dev/null status=none
	check "the blocks before it read right" \
		cmp -n $((7 * M)) <(dd if="$dev" bs=1M count=7 iflag=direct status=none) sparse.vdi.raw
	check "the blocks after it read right" \
		cmp <(dd if="$dev" bs=1M skip=8 iflag=direct status=none) \
			<(dd if=sparse.vdi.raw bs=1M skip=8 status=none)
	check "the read error is logged with the device" \
		sh -c "dmesg | grep -q '${dev#/dev/}: vdi: read of .* failed'"
	detach "$dev"
else
	fail "block past the end: attach: $dev"
fi
check "rmmod loop_file_fmt_vdi" rmmod loop_file_fmt_vdi
finish

#!/bin/bash
# The VMDK driver (loop_file_fmt_vmdk), read-only. Single-file images:
# - a corpus made here with qemu-img/qemu-io: monolithicSparse (empty,
#   sparse writes across grain and grain-table boundaries, converted full
#   data, zeroed-grain entries, compat6, an odd size whose last grain is
#   short, a 5 GiB image read at its far end) and streamOptimized
#   (converted sparse and full data, random and compressible, an odd size):
#   every device equals `qemu-img convert -O raw`, read buffered and with
#   4 KiB direct requests (qemu-img 7.2 has no grain size option: every
#   image has 64 KiB grains);
# - losetup-fmt: `auto` recognises the KDMV magic, a plain attach warns,
#   sysfs shows the format and the subformat, read-write and direct I/O are
#   refused;
# - malformed images through the raw LFF_CONFIGURE ioctl (lffctl.py), so
#   nothing in userspace screens them: refused at attach with their errno
#   and a log line naming the device, leaving it free; parents are refused
#   with EOPNOTSUPP; a grain past the end of the file or a corrupt deflate
#   stream fails only the reads that touch that grain (EIO);
# - losetup-fmt map of every corpus image equals qemu-img map.
# Descriptor files with several extents, opened by losetup-fmt and passed
# as fds:
# - monolithicFlat (converted, and sparse), twoGbMaxExtentSparse and
#   twoGbMaxExtentFlat (3 GiB: two extents, written on both sides of the
#   2 GiB boundary) and a hand-made descriptor with a ZERO extent equal
#   `qemu-img convert -O raw` (whole, or the written ranges of the split
#   images), buffered and direct, with requests that cross the extent
#   boundary; map equals qemu-img map where qemu-img sees no file holes;
# - the malformed corpus: what losetup-fmt screens (missing, non-regular,
#   looping extents, absolute and `..` names) is refused with a message
#   naming the descriptor and the extent; what only the kernel sees
#   through the raw ioctl (fewer fds than extents, a flat extent shorter
#   than declared, a sparse extent of another size, garbage lines, a name
#   twice, too many extents, a parent) is refused with its errno and a
#   log line; nothing is left attached.
. "$(dirname "$0")/lib.sh"
FMT=vmdk
. "$(dirname "$0")/imgfmt.sh"
cd "$WORK" || exit 1

# same_range DEV RAW MIB-OFFSET MIB-COUNT: direct reads of that range.
same_range() {
	cmp <(dd if="$1" bs=1M skip="$3" count="$4" iflag=direct status=none) \
		<(dd if="$2" bs=1M skip="$3" count="$4" status=none)
}
# The field offsets below are those of formats/vmdk/src/format/header.rs.
put() { # FILE OFFSET VALUE BYTES: writes a little-endian integer
	/usr/bin/python3 -c 'import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2], 0)); f.write((int(sys.argv[3], 0) & ((1 << (8 * int(sys.argv[4]))) - 1)).to_bytes(int(sys.argv[4]), "little"))' "$@"
}
# gte FILE GRAIN: byte offset of grain GRAIN's table entry (the grain
# directory in the header, or in the footer of a streamOptimized image).
gte() {
	/usr/bin/python3 - "$@" <<'PY'
import struct, sys
path, grain = sys.argv[1], int(sys.argv[2])
with open(path, "rb") as f:
    data = f.read()
h = data[:512]
gd = struct.unpack_from("<Q", h, 56)[0]
if gd == 0xffffffffffffffff:
    h = data[len(data) - 1024:len(data) - 512]
    gd = struct.unpack_from("<Q", h, 56)[0]
gtes = struct.unpack_from("<I", h, 44)[0]
gt = struct.unpack_from("<I", data, gd * 512 + 4 * (grain // gtes))[0]
print(gt * 512 + 4 * (grain % gtes))
PY
}
get32() { /usr/bin/python3 -c 'import struct,sys
with open(sys.argv[1], "rb") as f: f.seek(int(sys.argv[2])); print(struct.unpack("<I", f.read(4))[0])' "$@"; }

check "modprobe loop_file_fmt_vmdk" modprobe loop_file_fmt_vmdk
grep -qw vmdk /sys/class/misc/loop-file-fmt-control/formats &&
	ok "the control node lists vmdk" || fail "the control node does not list vmdk"

# --- the corpus -----------------------------------------------------------
ms() { qemu-img create -q -f vmdk -o subformat=monolithicSparse "$@"; }
ms empty.vmdk 64M
ms sparse.vmdk 64M
# 32 MiB is one grain table's span (512 entries of 64 KiB).
io sparse.vmdk "write -P 0xaa 0 4k" "write -P 0xbb 60k 8k" "write -P 0xcc 32764k 8k" \
	"write -P 0xdd 40M 1M" "write -P 0xee 63M 512" "write -P 0x11 7M 3k"
{ head -c $((3 * M)) /dev/urandom; head -c $((2 * M)) /dev/zero; head -c $((M + 4096)) /dev/urandom
	yes "compressible lab image data" | head -c $((2 * M)); } >mixed.raw
qemu-img convert -q -f raw -O vmdk -o subformat=monolithicSparse mixed.raw converted.vmdk
qemu-img convert -q -f raw -O vmdk -o subformat=monolithicSparse,compat6=on mixed.raw compat6.vmdk
ms -o zeroed_grain=on zeroed.vmdk 16M
io zeroed.vmdk "write -P 0x42 0 1M" "write -z 256k 128k" "write -P 0x43 8M 64k" "write -z 8M 64k"
ms odd.vmdk $((3 * M + 512))
io odd.vmdk "write -P 0x77 $((3 * M - 4096)) 4096" "write -P 0x78 $((3 * M)) 512"
qemu-img convert -q -f raw -O vmdk -o subformat=streamOptimized mixed.raw stream.vmdk
qemu-img convert -q -f vmdk -O vmdk -o subformat=streamOptimized sparse.vmdk stream-sparse.vmdk
qemu-img convert -q -f vmdk -O vmdk -o subformat=streamOptimized odd.vmdk stream-odd.vmdk
qemu-img create -q -f vmdk -o subformat=streamOptimized stream-empty.vmdk 32M
compare_corpus empty sparse converted compat6 zeroed odd stream stream-sparse stream-odd stream-empty
check "zeroed: the zeroed grains really read as zeros" \
	cmp -n $((128 * 1024)) <(dd if=zeroed.vmdk.raw bs=64k skip=4 count=2 status=none) /dev/zero
z=$(get32 zeroed.vmdk "$(gte zeroed.vmdk 4)")
check_eq "zeroed: grain 4 is a zeroed-grain entry (GTE 1)" 1 "$z"

# losetup-fmt map: the grain tables' view against qemu-img map (data with
# its file offset, compressed grains, zeroed grains, unallocated runs).
for img in empty sparse converted compat6 zeroed odd stream stream-sparse stream-odd stream-empty; do
	if ! dev=$(attach "$img.vmdk" 2>&1); then
		fail "$img: attach for map: $dev"
		continue
	fi
	if losetup-fmt map --json "$dev" >"$img.map" 2>"$img.map.err" &&
		qemu-img map -f vmdk --output=json "$img.vmdk" >"$img.qmap"; then
		check "$img: map equals qemu-img map" /usr/bin/python3 "$HERE/map-compare.py" \
			"$img.map" "$img.qmap" "$(blockdev --getsize64 "$dev")"
	else
		fail "$img: map: $(cat "$img.map.err")"
	fi
	detach "$dev"
done
check "zeroed: map shows a present zero run (the zeroed grains)" \
	grep -q '"present": *true, *"zero": *true' zeroed.map

# A 5 GiB image: its grain directory spans many tables; read where data is.
ms big.vmdk 5G
io big.vmdk "write -P 0x21 0 64k" "write -P 0x22 $((2048 * M - 4096)) 8k" \
	"write -P 0x23 $((5120 * M - 65536)) 64k"
qemu-img convert -f vmdk -O raw big.vmdk big.raw
if dev=$(attach big.vmdk 2>&1); then
	check_eq "big: 5 GiB" $((5120 * M)) "$(blockdev --getsize64 "$dev")"
	check "big: the first MiB" same_range "$dev" big.raw 0 1
	check "big: across 2 GiB" same_range "$dev" big.raw 2047 2
	check "big: the last MiB" same_range "$dev" big.raw 5119 1
	detach "$dev"
else
	fail "big: attach: $dev"
fi
rm -f big.raw

# --- losetup-fmt --------------------------------------------------------
dev=$(losetup-fmt --file-fmt auto -r -f --show sparse.vmdk)
check_eq "auto: sparse.vmdk attaches as vmdk" vmdk "$(sysfs "$dev" format)"
check_eq "sysfs vmdk_subformat: monolithicSparse" monolithicSparse "$(sysfs "$dev" vmdk_subformat)"
detach "$dev"
dev=$(losetup-fmt --file-fmt auto -r -f --show stream.vmdk)
check_eq "sysfs vmdk_subformat: streamOptimized" streamOptimized "$(sysfs "$dev" vmdk_subformat)"
detach "$dev"
losetup_refusals sparse.vmdk

# --- malformed and unsupported images ---------------------------------------
use_free_device
f=$(bad cowd); put "$f" 0 0x44574f43 4
refused "the COWD magic" EINVAL "not a VMDK sparse extent (bad magic)" "$f"
f=$(bad version); put "$f" 4 4 4
refused "version 4" ENOTSUP "unsupported VMDK sparse extent version: 4" "$f"
f=$(bad newline); put "$f" 73 0x0a0a0a0a 4
refused "a damaged newline check" EINVAL "" "$f"
f=$(bad compression); put "$f" 77 2 2
refused "compression algorithm 2" ENOTSUP "" "$f"
f=$(bad grain); put "$f" 20 3 8
refused "a grain of 3 sectors" EINVAL "invalid grain size: 3 sectors" "$f"
f=$(bad grain-huge); put "$f" 20 4096 8
refused "a grain of 2 MiB" EINVAL "invalid grain size: 4096 sectors" "$f"
f=$(bad gtes-zero); put "$f" 44 0 4
refused "no entries per grain table" EINVAL "" "$f"
f=$(bad gtes-many); put "$f" 44 513 4
refused "513 entries per grain table" EINVAL "" "$f"
f=$(bad capacity); put "$f" 12 $((1 << 41)) 8
refused "a 1 PiB capacity" EFBIG "" "$f"
f=$(bad gd-past-end); put "$f" 56 $(($(stat -c %s sparse.vmdk) / 512 + 8)) 8
refused "a grain directory past the end" EINVAL "" "$f"
f=$(bad gd-zero); put "$f" 56 0 8
refused "grain directory at sector 0" EINVAL "" "$f"
f=$(bad truncated); truncate -s 300 "$f"
refused "truncated inside the header" EINVAL "" "$f"
f=$(bad footer); put "$f" 56 0xffffffffffffffff 8
refused "GD_AT_END without a footer" EINVAL "" "$f"
head -c 65536 /dev/urandom >bad-garbage.vmdk
refused "64 KiB of random bytes" EINVAL "" bad-garbage.vmdk
head -c $((2 * M)) /dev/urandom >bad-garbage-big.vmdk
refused "2 MiB of random bytes" EINVAL "" bad-garbage-big.vmdk
qemu-img create -q -f vmdk -b sparse.vmdk -F vmdk child.vmdk
refused "a parent link" ENOTSUP "delta links (parent images) are not supported" child.vmdk

# A grain table entry past the end of the file: attach succeeds, reads of
# that grain fail with EIO, the other grains read right.
qemu-img convert -f vmdk -O raw converted.vmdk converted.vmdk.raw
f=$(cp converted.vmdk bad-grain-entry.vmdk; echo bad-grain-entry.vmdk)
put "$f" "$(gte "$f" 7)" $(($(stat -c %s "$f") / 512 + 100)) 4
# grain_fails IMAGE GRAIN RAW: reads of grain GRAIN fail with EIO, the
# grains around it read right, and the error is logged.
grain_fails() {
	local img=$1 g=$2 raw=$3 dev
	if ! dev=$(attach "$img" 2>&1); then
		fail "$img: attach: $dev"
		return
	fi
	check_fails "$img: a read of grain $g fails with EIO" "Input/output error" \
		dd if="$dev" bs=4k skip=$((g * 16)) count=1 iflag=direct of=/dev/null status=none
	check_fails "$img: again (no state kept)" "Input/output error" \
		dd if="$dev" bs=64k skip="$g" count=1 of=/dev/null status=none
	check "$img: the grains before it read right" \
		cmp <(dd if="$dev" bs=64k count="$g" iflag=direct status=none) \
			<(dd if="$raw" bs=64k count="$g" status=none)
	check "$img: the grains after it read right" \
		cmp <(dd if="$dev" bs=64k skip=$((g + 1)) iflag=direct status=none) \
			<(dd if="$raw" bs=64k skip=$((g + 1)) status=none)
	check "$img: the read error is logged with the device" \
		sh -c "dmesg | grep -q '${dev#/dev/}: vmdk: read of .* failed'"
	detach "$dev"
}
grain_fails "$f" 7 converted.vmdk.raw
qemu-img convert -f vmdk -O raw stream.vmdk stream.vmdk.raw
f=$(cp stream.vmdk bad-stream-entry.vmdk; echo bad-stream-entry.vmdk)
put "$f" "$(gte "$f" 9)" $(($(stat -c %s "$f") / 512 + 100)) 4
grain_fails "$f" 9 stream.vmdk.raw
# Garbage in a compressed grain's deflate stream (after its 12-byte marker
# and the 2-byte zlib header).
f=$(cp stream.vmdk bad-deflate.vmdk; echo bad-deflate.vmdk)
at=$(($(get32 "$f" "$(gte "$f" 5)") * 512 + 12 + 2))
/usr/bin/python3 -c 'import sys
with open(sys.argv[1], "r+b") as f: f.seek(int(sys.argv[2])); f.write(b"\xff" * 64)' "$f" "$at"
grain_fails "$f" 5 stream.vmdk.raw
# A grain marker whose size is larger than two grains.
f=$(cp stream.vmdk bad-marker.vmdk; echo bad-marker.vmdk)
put "$f" $(($(get32 "$f" "$(gte "$f" 2)") * 512 + 8)) $((3 * 65536)) 4
grain_fails "$f" 2 stream.vmdk.raw
# --- descriptor files ------------------------------------------------------
# -S 0: every byte of the flat file written (no holes, so qemu-img map sees
# what the driver's map shows).
qemu-img convert -q -S 0 -f raw -O vmdk -o subformat=monolithicFlat mixed.raw flat.vmdk
qemu-img create -q -f vmdk -o subformat=monolithicFlat flat-sparse.vmdk 8M
io flat-sparse.vmdk "write -P 0x31 1M 64k" "write -P 0x32 $((8 * M - 512)) 512"
compare_corpus flat flat-sparse
dev=$(attach flat.vmdk)
check_eq "sysfs vmdk_subformat: monolithicFlat" monolithicFlat "$(sysfs "$dev" vmdk_subformat)"
check_eq "flat: two files attached (descriptor and extent)" 2 \
	"$("${CTL[@]}" status "$dev" | sed -n 's/^nr_layers=//p')"
check_eq "flat: losetup-fmt -l shows the format" vmdk "$(losetup-fmt -l -n -O FORMAT "$dev")"
losetup-fmt map --json "$dev" >flat.map
qemu-img map -f vmdk --output=json flat.vmdk >flat.qmap
check "flat: map equals qemu-img map" /usr/bin/python3 "$HERE/map-compare.py" \
	flat.map flat.qmap "$(blockdev --getsize64 "$dev")"
detach "$dev"
dev=$(losetup-fmt --file-fmt auto -r -f --show flat.vmdk)
check_eq "auto: a descriptor file attaches as vmdk" vmdk "$(sysfs "$dev" format)"
detach "$dev"

# same_buffered DEV RAW MIB-OFFSET MIB-COUNT: buffered reads of that range.
same_buffered() {
	cmp <(dd if="$1" bs=1M skip="$3" count="$4" status=none) \
		<(dd if="$2" bs=1M skip="$3" count="$4" status=none)
}
# across DEV RAW BS: one request of 2 * BS bytes across the 2 GiB boundary.
across() {
	local n=$((2048 * M / $3 - 1))
	cmp <(dd if="$1" bs="$3" skip="$n" count=2 iflag=direct status=none) \
		<(dd if="$2" bs="$3" skip="$n" count=2 status=none)
}
G2=$((2048 * M))
for sub in twoGbMaxExtentSparse twoGbMaxExtentFlat; do
	img=$sub.vmdk
	qemu-img create -q -f vmdk -o subformat=$sub "$img" 3G
	io "$img" "write -P 0x41 0 64k" "write -P 0x42 $((G2 - 6144)) 8k" \
		"write -P 0x43 $((G2 + 4096)) 64k" "write -P 0x44 $((3072 * M - 512)) 512"
	qemu-img convert -f vmdk -O raw "$img" "$img.raw"
	if ! dev=$(attach "$img" 2>&1); then
		fail "$sub: attach: $dev"
		continue
	fi
	check_eq "$sub: 3 GiB" $((3072 * M)) "$(blockdev --getsize64 "$dev")"
	check_eq "$sub: sysfs vmdk_subformat" "$sub" "$(sysfs "$dev" vmdk_subformat)"
	check_eq "$sub: three files attached" 3 "$("${CTL[@]}" status "$dev" | sed -n 's/^nr_layers=//p')"
	for range in "0 1" "2046 4" "3071 1"; do
		# shellcheck disable=SC2086 # two numbers
		check "$sub: MiB $range equal (buffered)" same_buffered "$dev" "$img.raw" $range
		# shellcheck disable=SC2086
		check "$sub: MiB $range equal (direct)" same_range "$dev" "$img.raw" $range
	done
	for bs in 512 4096 65536; do
		check "$sub: one $((2 * bs))-byte request across the extent boundary" \
			across "$dev" "$img.raw" "$bs"
	done
	if [ $sub = twoGbMaxExtentSparse ]; then
		losetup-fmt map --json "$dev" >split.map
		qemu-img map -f vmdk --output=json "$img" >split.qmap
		check "$sub: map equals qemu-img map" /usr/bin/python3 "$HERE/map-compare.py" \
			split.map split.qmap "$(blockdev --getsize64 "$dev")"
	fi
	detach "$dev"
	rm -f "$img.raw"
done

# A hand-made descriptor: a flat extent at an offset, a ZERO extent, a
# sparse extent (QEMU skips ZERO extents, so the expected bytes are put
# together here).
head -c $((2 * M)) /dev/urandom >hand-a.raw
ms hand-b.vmdk 1M
io hand-b.vmdk "write -P 0x61 4k 100k"
printf '%s\n' '# Disk DescriptorFile' version=1 CID=12345678 parentCID=ffffffff \
	'createType="monolithicFlat"' 'RW 2048 FLAT "hand-a.raw" 8' 'RDONLY 1000 ZERO' \
	'RW 2048 SPARSE "hand-b.vmdk"' >hand.vmdk
qemu-img convert -f vmdk -O raw hand-b.vmdk hand-b.raw
{ dd if=hand-a.raw bs=512 skip=8 count=2048 status=none; head -c $((1000 * 512)) /dev/zero
	cat hand-b.raw; } >hand.vmdk.raw
if dev=$(attach hand.vmdk 2>&1); then
	check "hand-made: equals the pieces (buffered)" cmp "$dev" hand.vmdk.raw
	check "hand-made: equals the pieces (4 KiB direct)" same_direct "$dev" hand.vmdk
	detach "$dev"
else
	fail "hand-made: attach: $dev"
fi

# What losetup-fmt refuses before the ioctl: a message naming the
# descriptor, the line and the extent; nothing attached.
mkdir -p sub
cp hand-a.raw sub/a.raw
mkfifo fifo.raw
desc() { # FILE EXTENT-LINE...: a monolithicFlat descriptor
	local f=$1; shift
	printf '%s\n' '# Disk DescriptorFile' version=1 CID=1 parentCID=ffffffff \
		'createType="monolithicFlat"' "$@" >"$f"
}
user_refused() { # NAME MESSAGE DESCRIPTOR [OPTION]
	local out
	out=$(losetup-fmt --file-fmt vmdk -r -f --show ${4:+"$4"} "$3" 2>&1)
	check_eq "losetup-fmt refuses $1 (exit status 1)" 1 $?
	[[ "$out" == *"$3: line 6: "*"$2"* ]] && ok "and says so: $1" || fail "$1: '$out'"
	check_eq "nothing attached: $1" "" "$(losetup-fmt -a)"
}
desc bad-missing.vmdk 'RW 8 FLAT "missing.raw" 0'
user_refused "a missing extent" "cannot open extent file '"'missing.raw'"': No such file or directory" bad-missing.vmdk
desc bad-fifo.vmdk 'RW 8 FLAT "fifo.raw" 0'
user_refused "a FIFO extent" "is not a regular file" bad-fifo.vmdk
desc bad-dir.vmdk 'RW 8 FLAT "sub" 0'
user_refused "a directory extent" "is not a regular file" bad-dir.vmdk
desc sub/bad-up.vmdk 'RW 8 FLAT "../hand-a.raw" 0'
user_refused "a '..' name" "is outside the descriptor's directory" sub/bad-up.vmdk
P=$(pwd -P)
desc bad-abs.vmdk "RW 8 FLAT \"$P/hand-a.raw\" 0"
user_refused "an absolute name" "use --trust-image-paths to follow it" bad-abs.vmdk
ln -s bad-self.vmdk self-link.vmdk
desc bad-self.vmdk 'RW 1 FLAT "self-link.vmdk" 0'
user_refused "the descriptor as its own extent" "is the same file as" bad-self.vmdk
desc bad-short.vmdk 'RW 4100 FLAT "hand-a.raw" 8'
user_refused "a flat extent shorter than declared" "the descriptor declares" bad-short.vmdk
desc bad-notsparse.vmdk 'RW 2048 SPARSE "hand-a.raw"'
user_refused "a SPARSE extent without KDMV" "no KDMV magic" bad-notsparse.vmdk
if dev=$(losetup-fmt --file-fmt vmdk --trust-image-paths -r -f --show bad-abs.vmdk 2>&1); then
	check "--trust-image-paths follows an absolute name" \
		cmp -n 4096 "$dev" <(dd if=hand-a.raw bs=4k count=1 status=none)
	detach "$dev"
else
	fail "--trust-image-paths: $dev"
fi

# What only the kernel sees (the raw ioctl, nothing screened).
kattach_all() { # DESCRIPTOR EXTENT...: all passed read-only
	local a=()
	for f in "$@"; do a+=(--file "$f" --ro); done
	"${CTL[@]}" configure "$D" "$FMT" --flags 1 "${a[@]}"
}
krefused() { # NAME ERRNO LOG FILE...
	local name=$1 want=$2 log=$3; shift 3
	mark
	check_fails "refused with $want: $name" "$want" kattach_all "$@"
	check "logged: $name" logged "$(basename "$D"): $FMT: $log"
	check_eq "free after: $name" "" "$(cat "/sys/block/$(basename "$D")/loop_file_fmt/format" 2>/dev/null)"
}
desc bad-two.vmdk 'RW 8 FLAT "hand-a.raw" 0' 'RW 8 FLAT "sub/a.raw" 0'
krefused "fewer fds than extent files" EINVAL \
	"the monolithicFlat descriptor names 2 extent files but 1 were given" bad-two.vmdk hand-a.raw
desc bad-kshort.vmdk 'RW 4100 FLAT "hand-a.raw" 8'
krefused "a flat extent shorter than declared" EINVAL \
	"extent 0 (descriptor line 6, file $P/hand-a.raw): truncated image or buffer: flat extent needs" \
	bad-kshort.vmdk hand-a.raw
desc bad-ksize.vmdk 'RW 2000 SPARSE "hand-b.vmdk"'
krefused "a sparse extent of another size" EINVAL \
	"extent 0 (descriptor line 6, file $P/hand-b.vmdk): extent size differs from its header" \
	bad-ksize.vmdk hand-b.vmdk
desc bad-garbage.vmdk 'RW 8 FLAT "hand-a.raw" 0' 'this is no extent line'
krefused "a garbage line" EINVAL "invalid descriptor line: line 7" bad-garbage.vmdk hand-a.raw
desc bad-twice.vmdk 'RW 8 FLAT "hand-a.raw" 0' 'RW 8 FLAT "hand-a.raw" 8'
krefused "a name twice" EINVAL "extent file named twice: line 7" bad-twice.vmdk hand-a.raw hand-a.raw
mapfile -t many < <(for i in $(seq 16); do echo "RW 1 FLAT \"f$i\" 0"; done)
desc bad-many.vmdk "${many[@]}"
krefused "16 extent files" EFBIG "too many extents" bad-many.vmdk
desc bad-parent.vmdk 'parentFileNameHint="hand.vmdk"' 'RW 8 FLAT "hand-a.raw" 0'
krefused "a parent" ENOTSUP "delta links (parent images) are not supported" bad-parent.vmdk hand-a.raw
check_eq "nothing attached after the descriptor corpus" "" "$(losetup-fmt -a)"

check "rmmod loop_file_fmt_vmdk" rmmod loop_file_fmt_vmdk
finish

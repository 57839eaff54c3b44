#!/bin/bash
# Malformed qcow2 images against the qcow2 driver, through the raw
# LFF_CONFIGURE ioctl (tests/guest/lffctl.py) so that nothing in userspace
# screens them first. Every header field out of range, truncated files,
# table and data pointers past the end of the file or misaligned, metadata
# that overlaps other metadata or itself, garbage and truncated zlib/zstd
# streams, corrupt snapshot tables, backing chains that are too deep, loop,
# or do not match the files passed. Each image is either refused at attach
# with its errno and one kernel log line naming the device, the layer and
# the reason, or attaches and fails exactly the reads that touch the bad
# metadata with EIO while every other byte reads right.
# (30-qcow2.sh has the well-formed corpus and a first set of bad images.)
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
PATCH=(/usr/bin/python3 "$HERE/qcow2-patch.py")
CTL=(/usr/bin/python3 "$HERE/lffctl.py")
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
cd "$WORK" || exit 1

check "modprobe loop_file_fmt_qcow2" modprobe loop_file_fmt_qcow2
D=/dev/lff$("${CTL[@]}" ctl get-free)
[ -b "$D" ] || { fail "no free device"; finish; }

q() { qemu-img "$@" >/dev/null; }
io() {
	local img=$1; shift
	local a=()
	for c in "$@"; do a+=(-c "$c"); done
	qemu-io "${a[@]}" "$img" >/dev/null
}
p() { "${PATCH[@]}" "$@"; }

# Kernel log lines since the last mark (so a check sees only its own case).
NMARK=0
mark() { NMARK=$((NMARK + 1)); MARK="lff-malformed-mark-$NMARK"; echo "$MARK" >/dev/kmsg; }
logged() { dmesg | sed -n "/$MARK\$/,\$p" | grep -qF -- "$1"; }
kattach() { "${CTL[@]}" configure "$D" qcow2 --flags 1 "$@"; }
kdetach() { "${CTL[@]}" clear "$D"; }

# refused NAME ERRNO LOG FILE [MORE-CONFIGURE-ARGS...]: attaching FILE (and
# the layers in the extra args) fails with ERRNO (as lffctl.py names it:
# Python calls EOPNOTSUPP, errno 95, ENOTSUP), logged as "lffN: qcow2:
# ... LOG ...", and leaves the device free.
refused() {
	local name=$1 want=$2 log=$3 f=$4; shift 4
	mark
	check_fails "refused with $want: $name" "$want" kattach --file "$f" --ro "$@"
	if [ -n "$log" ]; then
		check "logged: $name" logged "$(basename "$D"): qcow2: $log"
	fi
	"${CTL[@]}" clear "$D" >/dev/null 2>&1
}
# bad NAME BASE PATCH-ARGS... ; bad NAME BASE -- CMD... : a copy of BASE,
# patched, as bad-NAME.qcow2.
bad() {
	local name=$1 base=$2; shift 2
	cp "$base" "bad-$name.qcow2"
	p "bad-$name.qcow2" "$@"
}

# range FILE OFFSET LEN (multiples of 512): LEN bytes of FILE at OFFSET.
range() {
	local bs=512
	[ $(($2 % 4096 + $3 % 4096)) != 0 ] || bs=4096
	dd if="$1" bs=$bs skip=$(($2 / bs)) count=$(($3 / bs)) iflag=fullblock${4:+,$4} status=none
}
read_eio() {
	local out
	if out=$(range "$D" "$1" "$2" direct 2>&1 >/dev/null); then echo "read succeeded"; return 1; fi
	[[ "$out" == *"Input/output error"* ]] || { echo "$out"; return 1; }
}
read_ok() { cmp <(range "$D" "$2" "$3" direct) <(range "$1" "$2" "$3"); }
# eio_only NAME IMAGE ORACLE BAD-OFFSET BAD-LEN GOOD-OFFSET GOOD-LEN LOG:
# attaches, reads in the bad range fail with EIO (twice: nothing bad is
# cached) and log LOG, reads in the good range match the oracle.
eio_only() {
	local name=$1 img=$2 oracle=$3 bo=$4 bl=$5 go=$6 gl=$7 log=$8
	mark
	if ! out=$(kattach --file "$img" --ro 2>&1); then fail "$name: attach: $out"; return; fi
	check "$name: read fails with EIO" read_eio "$bo" "$bl"
	check "$name: and again" read_eio "$bo" "$bl"
	check "$name: logged" logged "qcow2: read of "
	check "$name: logged reason" logged "$log"
	check "$name: other data reads right" read_ok "$oracle" "$go" "$gl"
	check "$name: detach" kdetach
}
# reads_as NAME IMAGE ORACLE: attaches, and the whole device equals ORACLE.
reads_as() {
	local name=$1 img=$2 oracle=$3
	if ! out=$(kattach --file "$img" --ro 2>&1); then fail "$name: attach: $out"; return; fi
	check "$name: device equals the expected bytes" cmp <(range "$D" 0 "$(stat -c %s "$oracle")" direct) "$oracle"
	check "$name: detach" kdetach
}

# --- base images ------------------------------------------------------------
q create -f qcow2 -o cluster_size=64k p64.qcow2 6M
io p64.qcow2 'write -P 0xa1 0 64k' 'write -P 0x52 100000 200001' 'write -P 0x13 3M 1M' 'write -P 0xee 6287360 4k'
q convert -O raw p64.qcow2 p64.raw
q create -f qcow2 -o cluster_size=512 p512.qcow2 6M
io p512.qcow2 'write -P 0xa1 0 64k' 'write -P 0x13 3M 1M' 'write -P 0xee 6287360 4k'
q convert -O raw p512.qcow2 p512.raw
q create -f qcow2 -o cluster_size=4k p4k.qcow2 6M
q create -f qcow2 -o compat=0.10 v2.qcow2 6M
io v2.qcow2 'write -P 9 0 1M' 'write -P 10 3M 64k'
q convert -O raw v2.qcow2 v2.raw
q create -f qcow2 -o extended_l2=on,cluster_size=64k ext.qcow2 6M
io ext.qcow2 'write -P 1 0 2k' 'write -P 2 3M 64k'
q convert -O raw ext.qcow2 ext.raw
head -c 1M /dev/urandom | base64 -w 0 | head -c 4M >text.raw
truncate -s 6M text.raw
for ct in zlib zstd; do
	q convert -c -O qcow2 -o cluster_size=64k,compression_type=$ct text.raw $ct.qcow2
done
q create -f qcow2 snap.qcow2 6M
io snap.qcow2 'write -P 21 0 1M'
q snapshot -c first snap.qcow2
check "base images built" test -s zstd.qcow2 -a -s snap.qcow2 -a -s p512.raw

L1=$(p p64.qcow2 get64 40)
HL=$(($(p p64.qcow2 get32 100)))
E0=$(p p64.qcow2 ext-offset 0)

# --- header fields ----------------------------------------------------------
bad magic p64.qcow2 set32 0 0x514649fa
refused "bad magic" EINVAL "layer 0: not a qcow2 image (bad magic): 0x514649fa" bad-magic.qcow2
for v in 0 1 4 0xffffffff; do
	bad version-$v p64.qcow2 set32 4 $v
	refused "version $v" ENOTSUP "layer 0: unsupported qcow2 version: $((v))" bad-version-$v.qcow2
done
for b in 0 8 22 63 64 0xffffffff; do
	bad cluster-bits-$b p64.qcow2 set32 20 $b
	refused "cluster_bits $b" EINVAL "layer 0: invalid cluster size: cluster_bits $((b))" bad-cluster-bits-$b.qcow2
done
bad size-2e61 p64.qcow2 set64 24 0x2000000000000001
refused "virtual size 2^61+1" EFBIG "layer 0: virtual size too large" bad-size-2e61.qcow2
bad size-max p64.qcow2 set64 24 0xffffffffffffffff
refused "virtual size 2^64-1" EFBIG "layer 0: virtual size too large" bad-size-max.qcow2
bad size-l1 p64.qcow2 set64 24 $((1 << 40))
refused "virtual size beyond what the L1 table maps" EINVAL "layer 0: L1 table too small for the virtual size: 1 entries, 2048 needed" bad-size-l1.qcow2
bad l1-size-0 p64.qcow2 set32 36 0
refused "l1_size 0" EINVAL "layer 0: L1 table too small for the virtual size: 0 entries" bad-l1-size-0.qcow2
bad l1-size-max p64.qcow2 set32 36 0xffffffff
refused "l1_size 2^32-1" EFBIG "layer 0: table too large: L1 table with 4294967295 entries" bad-l1-size-max.qcow2
bad l1-offset-wrap p64.qcow2 set64 40 0xffffffffffff0000
refused "L1 offset + size wraps" EFBIG "layer 0: table too large: L1 table" bad-l1-offset-wrap.qcow2
bad l1-offset-far p64.qcow2 set64 40 0x7fffffffffff0000
refused "L1 table at 2^63-64k (past EOF)" EINVAL "layer 0: truncated image or buffer: L1 table needs" bad-l1-offset-far.qcow2
bad l1-offset-odd p64.qcow2 set64 40 $((L1 + 8))
refused "L1 offset not cluster aligned" EINVAL "layer 0: table not cluster aligned: L1 table at" bad-l1-offset-odd.qcow2
for o in 7 0xffffffff; do
	bad refcount-order-$o p64.qcow2 set32 96 $o
	refused "refcount_order $o" EINVAL "layer 0: invalid refcount order: $((o))" bad-refcount-order-$o.qcow2
done
bad refcount-table-odd p64.qcow2 set64 48 0x10200
refused "refcount table not cluster aligned" EINVAL "layer 0: table not cluster aligned: refcount table at 0x10200" bad-refcount-table-odd.qcow2
bad refcount-clusters p64.qcow2 set32 56 0xffffffff
refused "refcount_table_clusters 2^32-1" EFBIG "layer 0: table too large: refcount table" bad-refcount-clusters.qcow2
for l in 0 100 108 113 65544 0xffffffff; do
	bad header-length-$l p64.qcow2 set32 100 $l
	refused "header_length $l" EINVAL "layer 0: invalid header length: $((l))" bad-header-length-$l.qcow2
done
for l in 0xffffffff $((65536 - E0 - 8 + 1)); do
	bad ext-len-$l p64.qcow2 set32 $((E0 + 4)) $l
	refused "header extension length $l" EINVAL "layer 0: header extension out of bounds: type 0x6803f857 at $(printf %#x "$E0"), length $((l))" bad-ext-len-$l.qcow2
done
bad backing-offset p64.qcow2 set64 8 0x10001
p bad-backing-offset.qcow2 set32 16 4
refused "backing file name beyond the first cluster" EINVAL "layer 0: invalid backing file name location: offset 0x10001, length 4" bad-backing-offset.qcow2
bad backing-len p64.qcow2 set64 8 0x1000
p bad-backing-len.qcow2 set32 16 1024
refused "backing file name of 1024 bytes" EINVAL "layer 0: invalid backing file name location: offset 0x1000, length 1024" bad-backing-len.qcow2
bad nb-snapshots p64.qcow2 set32 60 0xffffffff
refused "nb_snapshots 2^32-1" EINVAL "layer 0: too many snapshots: 4294967295" bad-nb-snapshots.qcow2
bad snapshots-odd p64.qcow2 set32 60 1
p bad-snapshots-odd.qcow2 set64 64 0x10008
refused "snapshot table not cluster aligned" EINVAL "layer 0: table not cluster aligned: snapshot table at 0x10008" bad-snapshots-odd.qcow2
bad compression-bit p64.qcow2 set64 72 8
refused "compression bit without a compression type" EINVAL "layer 0: compression type field disagrees with feature bit: bit 3 set, compression_type 0" bad-compression-bit.qcow2
bad compression-type p64.qcow2 set64 72 8
p bad-compression-type.qcow2 set8 104 2
refused "compression type 2" ENOTSUP "layer 0: unsupported compression type: 2" bad-compression-type.qcow2
bad compression-nobit p64.qcow2 set8 104 1
refused "compression type without its bit" EINVAL "layer 0: compression type field disagrees with feature bit: bit 3 clear, compression_type 1" bad-compression-nobit.qcow2
bad ext-l2-4k p4k.qcow2 set64 72 0x10
refused "extended L2 with 4 KiB clusters" EINVAL "layer 0: extended L2 entries need clusters >= 16 KiB: cluster_bits 12" bad-ext-l2-4k.qcow2
bad data-file p64.qcow2 set64 72 4
refused "external data file bit" ENOTSUP "layer 0: external data files are not supported" bad-data-file.qcow2
bad luks p64.qcow2 set32 "$E0" 0x0537be77
refused "LUKS header extension" ENOTSUP "layer 0: full disk encryption extension not supported" bad-luks.qcow2
bad unknown-ext p64.qcow2 set32 "$E0" 0x12345678
if kattach --file bad-unknown-ext.qcow2 --ro; then
	check "an unknown header extension is skipped" read_ok p64.raw 0 6291456
	kdetach
else
	fail "an unknown header extension is skipped"
fi

# --- truncated files --------------------------------------------------------
: >empty.qcow2
refused "empty file" EINVAL "layer 0: truncated image or buffer: header needs 72 bytes, 0 available" empty.qcow2
for n in 71 100 108; do
	head -c $n p64.qcow2 >trunc-$n.qcow2
done
refused "71-byte file" EINVAL "layer 0: truncated image or buffer: header needs 72 bytes, 71 available" trunc-71.qcow2
refused "v3 header cut at 100 bytes" EINVAL "layer 0: truncated image or buffer: header needs 104 bytes, 100 available" trunc-100.qcow2
refused "v3 header cut inside header_length" EINVAL "layer 0: truncated image or buffer: header needs 112 bytes, 108 available" trunc-108.qcow2
head -c 300 p64.qcow2 >trunc-ext.qcow2
refused "file cut inside a header extension" EINVAL "layer 0: header extension out of bounds" trunc-ext.qcow2
head -c $((L1 + 4)) p64.qcow2 >trunc-l1.qcow2
refused "file cut inside the L1 table" EINVAL "layer 0: truncated image or buffer: L1 table needs $((L1 + 8)) bytes, $((L1 + 4)) available" trunc-l1.qcow2

# --- pointers found bad while reading -----------------------------------------
# 512-byte clusters: one L1 entry maps 32 KiB, so damage stays local.
EOF512=$(p p512.qcow2 past-eof)
L2_0=$(p p512.qcow2 l2-offset 0)
bad l1-past p512.qcow2 l1-entry 0 $((0x8000000000000000 | L2_0 + 0x1000000))
eio_only "L1 entry past EOF" bad-l1-past.qcow2 p512.raw 0 32768 3145728 65536 "metadata points past end of file: L2 table"
bad l1-unaligned p512.qcow2 l1-entry 0 $((0x8000000000000000 | L2_0 + 0x100))
eio_only "L1 entry not cluster aligned" bad-l1-unaligned.qcow2 p512.raw 0 32768 3145728 65536 "corrupt L1 entry: [0]"
bad l1-reserved p512.qcow2 l1-entry 0 $((0x8000000000000000 | L2_0 | 0x2))
eio_only "L1 entry with reserved bits" bad-l1-reserved.qcow2 p512.raw 0 32768 3145728 65536 "corrupt L1 entry: [0]"
bad l1-eof p512.qcow2 l1-entry 0 "$EOF512"
eio_only "L1 entry 1 GiB past EOF" bad-l1-eof.qcow2 p512.raw 0 512 3145728 65536 "metadata points past end of file: L2 table"
bad l2-unaligned p64.qcow2 l2-entry 0 $(($(p p64.qcow2 l2-entry-get 0) + 0x200))
eio_only "L2 entry not cluster aligned" bad-l2-unaligned.qcow2 p64.raw 0 4096 65536 65536 "corrupt L2 entry"
bad v2-zero v2.qcow2 l2-entry 0 1
eio_only "zero flag in a v2 image" bad-v2-zero.qcow2 v2.raw 0 4096 3145728 65536 "corrupt L2 entry: 0x0000000000000001"
bad ext-bitmap ext.qcow2 l2-bitmap 0 0x100000001
eio_only "extended L2: allocated and zero bits overlap" bad-ext-bitmap.qcow2 ext.raw 0 2048 3145728 65536 "invalid subcluster bitmap"
bad ext-unalloc ext.qcow2 l2-entry 3145728 0
eio_only "extended L2: allocated subclusters without a cluster" bad-ext-unalloc.qcow2 ext.raw 3145728 4096 0 2048 "invalid subcluster bitmap"
# The L1 table offset 0 (the header): its first entry is the magic.
bad l1-at-header p64.qcow2 set64 40 0
mark
if kattach --file bad-l1-at-header.qcow2 --ro; then
	check "L1 table at offset 0: reads fail with EIO" read_eio 0 4096
	check "L1 table at offset 0: logged" logged "corrupt L1 entry: [0] = 0x514649fb00000003"
	kdetach
else
	fail "L1 table at offset 0 attaches"
fi

# Overlapping metadata reads what it points at, like QEMU does (it only
# refuses overlaps when writing): an L2 entry pointing at its own L2 table,
# the L1 entry pointing at the L1 table (which then serves as L2 table),
# two L2 entries sharing one data cluster.
L2=$(p p64.qcow2 l2-offset 0)
bad l2-self p64.qcow2 l2-entry 0 $((0x8000000000000000 | L2))
{ range bad-l2-self.qcow2 "$L2" 65536; range p64.raw 65536 $((6291456 - 65536)); } >l2-self.raw
reads_as "L2 entry pointing at its own table" bad-l2-self.qcow2 l2-self.raw
bad l1-self p64.qcow2 l1-entry 0 $((0x8000000000000000 | L1))
{ range bad-l1-self.qcow2 "$L1" 65536; head -c $((6291456 - 65536)) /dev/zero; } >l1-self.raw
reads_as "L1 entry pointing at the L1 table" bad-l1-self.qcow2 l1-self.raw
bad shared p64.qcow2 l2-entry 3145728 "$(p p64.qcow2 l2-entry-get 0)"
{ range p64.raw 0 3145728; range p64.raw 0 65536; range p64.raw $((3145728 + 65536)) $((3145728 - 65536)); } >shared.raw
reads_as "two L2 entries sharing a cluster" bad-shared.qcow2 shared.raw
bad l2-zero-copied p64.qcow2 l2-entry 0 0x8000000000000000
{ head -c 65536 /dev/zero; range p64.raw 65536 $((6291456 - 65536)); } >zero-copied.raw
reads_as "L2 entry with offset 0 and the copied flag reads zeros" bad-l2-zero-copied.qcow2 zero-copied.raw

# Compressed clusters: garbage, truncated streams, data in metadata, data
# running past the end of the file.
for ct in zlib zstd; do
	read -r coff csec <<<"$(p $ct.qcow2 compressed-get 0)"
	bad $ct-short $ct.qcow2 compressed-set 0 "$coff" 0
	eio_only "$ct: stream cut to one sector" bad-$ct-short.qcow2 text.raw 0 4096 3145728 65536 "qcow2: read of "
	bad $ct-header $ct.qcow2 compressed-set 0 0 "$csec"
	eio_only "$ct: compressed data at offset 0 (the header)" bad-$ct-header.qcow2 text.raw 0 4096 3145728 65536 "decompression failed"
	bad $ct-l2 $ct.qcow2 compressed-set 0 "$(p $ct.qcow2 l2-offset 0)" 3
	eio_only "$ct: compressed data in the L2 table" bad-$ct-l2.qcow2 text.raw 0 4096 3145728 65536 "qcow2: read of "
	size=$(stat -c %s $ct.qcow2)
	bad $ct-tail $ct.qcow2 compressed-set 0 $((size - 100)) 200
	eio_only "$ct: compressed data running past EOF" bad-$ct-tail.qcow2 text.raw 0 4096 3145728 65536 "qcow2: read of "
done

# The file cut inside an L2 table (the last one): reads that need it fail,
# the others work.
last=6287360
L2L=$(p p512.qcow2 l2-offset $last)
cp p512.qcow2 trunc-l2.qcow2
truncate -s $((L2L + 256)) trunc-l2.qcow2
eio_only "file cut inside an L2 table" trunc-l2.qcow2 p512.raw $last 4096 0 65536 "metadata points past end of file: L2 table"

# Snapshots: the snapshot's L1 table past EOF, an absurd extra data size.
SN=$(($(p snap.qcow2 get64 64)))
bad snap-l1 snap.qcow2 set64 "$SN" 0x7fff0000
refused "snapshot L1 table past EOF" EINVAL "layer 0: truncated image or buffer: snapshot L1 table needs" bad-snap-l1.qcow2 --options snapshot=first
bad snap-l1-odd snap.qcow2 set64 "$SN" 0x10200
refused "snapshot L1 table not cluster aligned" EINVAL "snapshot 'first': table not cluster aligned: snapshot L1 table at 0x10200" bad-snap-l1-odd.qcow2 --options snapshot=first
bad snap-l1-size snap.qcow2 set32 $((SN + 8)) 0xffffffff
refused "snapshot L1 table too large" EFBIG "snapshot 'first': table too large: snapshot L1 table with 4294967295 entries" bad-snap-l1-size.qcow2 --options snapshot=first
bad snap-extra snap.qcow2 set32 $((SN + 36)) 0xffffffff
refused "snapshot entry with a huge extra data size" EINVAL "snapshot 'first': corrupt snapshot table: entry 0" bad-snap-extra.qcow2 --options snapshot=first

# --- backing chains -----------------------------------------------------------
q create -f qcow2 -o cluster_size=64k base.qcow2 6M
io base.qcow2 'write -P 0x61 0 6M'
q create -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 6M
io top.qcow2 'write -P 0x62 1M 64k'
refused "backing file named but no file given" EINVAL "layer 0 names a backing file, but no file was given for it" top.qcow2
refused "a second file for an image without backing file" EINVAL "" p64.qcow2 --file p64.qcow2 --ro
refused "backing declared qcow2, raw file given" EINVAL "layer 1: not a qcow2 image (bad magic)" top.qcow2 --file p64.raw --ro
bad base-bits base.qcow2 set32 20 30
refused "malformed backing layer" EINVAL "layer 1: invalid cluster size: cluster_bits 30" top.qcow2 --file bad-base-bits.qcow2 --ro
q create -f vmdk base.vmdk 6M
q create -f qcow2 -b base.vmdk -F vmdk top-vmdk.qcow2 6M
refused "backing format vmdk" ENOTSUP "layer 0: unsupported backing file format 'vmdk'" top-vmdk.qcow2 --file base.vmdk --ro
exec 8<"$WORK"
refused "a directory as backing layer" EINVAL "" top.qcow2 --fd 8
exec 8<&-

# 16 layers (the most) work; a 17th is refused by losetup and by the
# kernel (16 files for an image whose 16th layer names a backing file).
q create -f qcow2 -o cluster_size=4k l0.qcow2 4M
io l0.qcow2 'write -P 0x40 0 4M'
for i in $(seq 1 16); do
	q create -f qcow2 -o cluster_size=4k -b l$((i - 1)).qcow2 -F qcow2 l$i.qcow2 4M
	io l$i.qcow2 "write -P $((0x40 + i)) $((i * 64))k 4k"
done
q convert -O raw l15.qcow2 l15.raw
if dev=$(losetup-fmt --file-fmt qcow2 -r -f --show l15.qcow2 2>&1); then
	check_eq "16-layer chain: nr_layers" 16 "$(cat /sys/block/${dev#/dev/}/loop_file_fmt/nr_layers)"
	check "16-layer chain reads right" cmp "$dev" l15.raw
	losetup-fmt -d "$dev"
else
	fail "16-layer chain attaches: $dev"
fi
check_fails "17-layer chain refused by losetup" "longer than 16 layers" losetup-fmt --file-fmt qcow2 -r -f --show l16.qcow2
args=()
for i in $(seq 15 -1 1); do args+=(--file l$i.qcow2 --ro); done
refused "17-layer chain given as 16 files" EINVAL "layer 15 names a backing file, but no file was given for it" l16.qcow2 "${args[@]}"
check_fails "17 files: nr_fds > 16" EINVAL kattach --file l0.qcow2 --ro --nr-fds 17
# A chain that loops: an image that is its own backing file.
q create -f qcow2 -u -b loop.qcow2 -F qcow2 loop-tmp.qcow2 6M
mv loop-tmp.qcow2 loop.qcow2
check_fails "a looping chain is refused by losetup" "backing chain loop" losetup-fmt --file-fmt qcow2 -r -f --show loop.qcow2
args=()
for i in $(seq 1 15); do args+=(--file loop.qcow2 --ro); done
refused "a looping chain given as 16 files" EINVAL "layer 15 names a backing file, but no file was given for it" loop.qcow2 "${args[@]}"

check_eq "nothing left attached" "" "$(losetup-fmt -a)"
check "rmmod loop_file_fmt_qcow2" rmmod loop_file_fmt_qcow2
echo "# $SUITE: $((NMARK)) marked cases, ${SECONDS} s"
finish

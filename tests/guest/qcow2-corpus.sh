#!/bin/bash
# Builds the qcow2 test corpus with qemu-img/qemu-io in directory $1 (used
# by 30-qcow2.sh; also usable by hand on a host). For every case it writes
# the image, its oracle (`qemu-img convert -O raw`, of a snapshot where the
# case reads one) and a line in $1/cases:
#
#   NAME IMAGE ORACLE [LOSETUP-ARGS...]
#
# Images are a few MiB each, so the whole corpus builds in seconds under TCG.
set -eu
dir=$1
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir"
cd "$dir"
: >cases

. "$here/qemu-tools.sh"
# case NAME IMAGE [ORACLE-OPTIONS -- ] [LOSETUP-ARGS...]: records a case
# whose oracle is `qemu-img convert ORACLE-OPTIONS -O raw IMAGE`.
case_() {
	local name=$1 img=$2; shift 2
	local conv=()
	if [ "${1:-}" = "--conv" ]; then conv=(-l "$2"); shift 2; fi
	qemu-img convert "${conv[@]}" -O raw "$img" "$name.oracle"
	echo "$name $img $name.oracle $*" >>cases
}

# Mixed data, MiB by MiB: text (compresses to ~75%), zeros, random
# (stored uncompressed by convert -c), a number sequence (compresses well).
mkdata() {
	local f=$1 mib=$2 i
	: >"$f"
	for ((i = 0; i < mib; i++)); do
		case $((i % 4)) in
		0) head -c 800K /dev/urandom | base64 -w 0 | head -c 1M >>"$f" ;;
		1) head -c 1M /dev/zero >>"$f" ;;
		2) head -c 1M /dev/urandom >>"$f" ;;
		3) seq 1 300000 | head -c 1M >>"$f" ;;
		esac
	done
}

# --- uncompressed, every cluster size -------------------------------------
for cs in 512 4k 64k 2M; do
	img=plain-$cs.qcow2
	q create -f qcow2 -o cluster_size=$cs $img 6M
	io $img 'write -P 0xa1 0 64k' 'write -P 0x52 100000 200001' 'write -P 0x13 3M 1M' \
		'write -P 0x7e 4194303 3' 'write -P 0xee 6287360 4k'
	case_ plain-$cs $img
done

# --- compressed: zlib and zstd, small and large clusters ------------------
mkdata data.raw 6
for ct in zlib zstd; do
	for cs in 4k 64k; do
		img=$ct-$cs.qcow2
		q convert -c -O qcow2 -o cluster_size=$cs,compression_type=$ct data.raw $img
		case_ $ct-$cs $img
	done
done
mkdata data2.raw 4
q convert -c -O qcow2 -o cluster_size=2M,compression_type=zstd data2.raw zstd-2M.qcow2
case_ zstd-2M zstd-2M.qcow2
q convert -c -O qcow2 -o cluster_size=512 data2.raw zlib-512.qcow2
case_ zlib-512 zlib-512.qcow2
# Compressed clusters partly overwritten afterwards (mixed L2 entries).
cp zstd-64k.qcow2 mixed.qcow2
io mixed.qcow2 'write -P 0x44 30k 50k' 'write -z 1M 128k' 'discard 2M 64k'
case_ mixed mixed.qcow2

# --- extended L2: subclusters, partial writes, zeros, discards ------------
q create -f qcow2 -o extended_l2=on,cluster_size=64k extl2.qcow2 4M
io extl2.qcow2 'write -P 1 0 2k' 'write -P 2 6k 1k' 'write -z 64k 16k' \
	'write -P 3 128k 64k' 'discard 160k 8k' 'write -P 4 300k 3k' 'write -z 301k 1k' \
	'write -P 5 1M 512k' 'write -z -u 1114112 64k'
case_ extl2 extl2.qcow2
# ... over a backing file: unallocated subclusters read the backing layer.
q create -f qcow2 -o cluster_size=64k extl2-base.qcow2 4M
io extl2-base.qcow2 'write -P 0x66 0 4M'
q create -f qcow2 -o extended_l2=on,cluster_size=32k -b extl2-base.qcow2 -F qcow2 extl2-top.qcow2
io extl2-top.qcow2 'write -P 7 1k 1k' 'write -z 5k 2k' 'write -P 8 40k 3k' 'discard 1M 32k'
case_ extl2-chain extl2-top.qcow2

# --- zero flags and discards (standard L2), v2, odd sizes -----------------
q create -f qcow2 zero.qcow2 4M
io zero.qcow2 'write -P 5 0 2M' 'write -z 256k 128k' 'write -z -u 512k 64k' 'discard 1M 64k'
case_ zero-flags zero.qcow2
q create -f qcow2 -o compat=0.10 v2.qcow2 4M
io v2.qcow2 'write -P 9 0 1M' 'write -P 10 2097664 7k' 'write -z 512k 64k'
case_ v2 v2.qcow2
q convert -c -O qcow2 -o compat=0.10 data2.raw v2-zlib.qcow2
case_ v2-zlib v2-zlib.qcow2
q create -f qcow2 odd.qcow2 1000001
io odd.qcow2 'write -P 11 0 4k' 'write -P 12 999424 1024'
case_ odd-size odd.qcow2
q create -f qcow2 -o cluster_size=4k odd2.qcow2 $((5 * 1048576 + 1536))
io odd2.qcow2 'write -P 13 5M 1536' 'write -P 14 1M 4097'
case_ odd-size-4k odd2.qcow2

# --- internal snapshots ---------------------------------------------------
q create -f qcow2 snap.qcow2 4M
io snap.qcow2 'write -P 21 0 4M'
q snapshot -c first snap.qcow2
io snap.qcow2 'write -P 22 1M 1M' 'write -z 3M 64k'
q snapshot -c second snap.qcow2
q resize snap.qcow2 6M
io snap.qcow2 'write -P 23 0 64k' 'write -P 24 5M 64k'
case_ snap-active snap.qcow2
case_ snap-first snap.qcow2 --conv snapshot.name=first --snapshot first
case_ snap-second-by-id snap.qcow2 --conv snapshot.id=2 --snapshot 2
case_ snap-second-opt snap.qcow2 --conv snapshot.name=second --fmt-option snapshot.name=second

# --- backing chains -------------------------------------------------------
# A 3-layer chain: a raw base shorter than the layers above it.
head -c 3M /dev/urandom >base.raw
q create -f qcow2 -b base.raw -F raw mid.qcow2 6M
io mid.qcow2 'write -P 31 1M 512k' 'write -P 32 4M 256k'
q create -f qcow2 -o cluster_size=4k -b mid.qcow2 -F qcow2 top.qcow2 8M
io top.qcow2 'write -P 33 0 8k' 'write -z 2M 64k' 'write -P 34 4325376 64k' 'write -P 35 7M 4k'
case_ chain3 top.qcow2
# The same chain with compressed middle layer and no backing format
# extension in the top image (the format of mid is probed by its magic).
q convert -c -O qcow2 -B base.raw -F raw mid.qcow2 midc.qcow2
q create -f qcow2 -b midc.qcow2 -F qcow2 topc.qcow2 8M
io topc.qcow2 'write -P 36 1052672 4k'
/usr/bin/python3 "$here/qcow2-patch.py" topc.qcow2 hide-backing-format
case_ chain3-probed topc.qcow2

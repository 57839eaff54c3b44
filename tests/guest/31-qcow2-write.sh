#!/bin/bash
# The qcow2 driver read-write (issue 15). Every case writes through
# /dev/lffN and through a raw model of the same bytes (the image's
# `qemu-img convert` before, plus the same writes), detaches, and then
# checks: `qemu-img check` exits 0 (no corruption, no leak), `qemu-img
# compare` finds the image equal to the model, and the device re-attached
# read-only reads the model's bytes. Cases:
# - v3 and v2, cluster sizes 512 B, 64 KiB and 2 MiB, extended L2,
#   refcount_bits 1, 16 and 64, lazy_refcounts (dirty bit while attached,
#   clear after a clean detach);
# - over existing data (in place), zlib and zstd compressed clusters, a
#   backing chain (qcow2 over compressed qcow2 over raw: the lower layers
#   unchanged), an internal snapshot (still reads its old bytes);
# - write-zeroes and discard;
# - ext4: mkfs, a tree copied in, fsck, re-attach, compare;
# - fio with crc32c verify from several jobs;
# - ENOSPC from a full file system: a clean errno, the image consistent;
# - a planted overlap (an L2 entry naming the L1 table): EIO, the corrupt
#   bit set, the metadata left intact, the device read-only from then on.
# Read-write attach refusals: dirty, corrupt, a snapshot read-write.
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
PATCH=("/usr/bin/python3" "$HERE/qcow2-patch.py")
cd "$WORK" || exit 1

check "modprobe loop_file_fmt_qcow2" modprobe loop_file_fmt_qcow2

. "$HERE/qemu-tools.sh"
attach_rw() { losetup-fmt --file-fmt qcow2 -f --show "$@"; }
attach_ro() { losetup-fmt --file-fmt qcow2 -r -f --show "$@"; }
detach() { losetup-fmt -d "$1"; }
incompat() { "${PATCH[@]}" "$1" get64 72; }

# 8 MiB of random bytes: the source of every write.
head -c 8M /dev/urandom >pat

# put TARGET OFF LEN SRC [FLAGS]: LEN bytes of pat at SRC to TARGET at OFF
# (bytes, multiples of 512).
put() {
	dd if=pat of="$1" bs=64k iflag=skip_bytes,count_bytes oflag=seek_bytes${5:+,$5} \
		skip="$4" seek="$2" count="$3" conv=notrunc,fsync status=none
}
# zero TARGET OFF LEN: zeros in the model.
zero() {
	dd if=/dev/zero of="$1" bs=64k iflag=count_bytes oflag=seek_bytes \
		seek="$2" count="$3" conv=notrunc status=none
}

# apply DEV MODEL CS SIZE DISCARD: one write pattern on both: in-place and
# allocating writes across cluster boundaries, buffered and direct,
# sub-cluster and multi-cluster; write-zeroes; cluster-aligned discard
# (DISCARD=0: none, a v2 image over a backing file ignores them).
apply() {
	local dev=$1 m=$2 cs=$3 size=$4 disc=$5 r
	local -a w=(
		"0 4096 0"
		"$((cs - 512)) 1024 4096"
		"$((3 * cs + 1536)) $((2 * cs + 512)) 65536"
		"$((size / 2)) 131072 200704"
		"$((size - 8192)) 8192 1048576"
		"$((size / 3 / 512 * 512)) 512 2097152"
	)
	for r in "${w[@]}"; do
		# shellcheck disable=SC2086
		set -- $r
		put "$dev" "$1" "$2" "$3" || return 1
		put "$m" "$1" "$2" "$3" || return 1
	done
	# Direct writes, again over the first ones (in place).
	put "$dev" 8192 16384 3145728 direct || return 1
	put "$m" 8192 16384 3145728 || return 1
	put "$dev" "$((size / 2 + 4096))" 4096 4194304 direct || return 1
	put "$m" "$((size / 2 + 4096))" 4096 4194304 || return 1
	# Write-zeroes, unaligned to clusters.
	blkdiscard -z -o $((cs + 512)) -l $((cs + 1024)) "$dev" || return 1
	zero "$m" $((cs + 512)) $((cs + 1024))
	if [ "$disc" = 1 ] && [ $((4 * cs)) -le $((size / 2)) ]; then
		blkdiscard -o $((size / 2 - 4 * cs)) -l $((4 * cs)) "$dev" || return 1
		zero "$m" $((size / 2 - 4 * cs)) $((4 * cs))
	fi
	sync
}

# verify NAME IMG MODEL: after detach, the image is clean, equals the
# model, and reads the model's bytes read-only through the driver.
verify() {
	local name=$1 img=$2 m=$3 dev
	check "$name: qemu-img check clean" qemu-img check "$img"
	check "$name: qemu-img compare with the model" qemu-img compare -f raw -F qcow2 "$m" "$img"
	if dev=$(attach_ro "$img" 2>&1); then
		check "$name: re-attached read-only, equals the model" \
			cmp -n "$(stat -c %s "$m")" "$dev" "$m"
		detach "$dev"
	else
		fail "$name: re-attach read-only: $dev"
	fi
}

# wcase NAME IMG CS [DISCARD]: the pattern on IMG (cluster size CS).
wcase() {
	local name=$1 img=$2 cs=$3 disc=${4:-1} dev size m=$WORK/$1.model
	check "$name: model" qemu-img convert -O raw "$img" "$m"
	size=$(stat -c %s "$m")
	if ! dev=$(attach_rw "$img" 2>&1); then
		fail "$name: read-write attach: $dev"
		return
	fi
	check "$name: attached read-write" test "$(blockdev --getro "$dev")" = 0
	check "$name: writes, write-zeroes, discard" apply "$dev" "$m" "$cs" "$size" "$disc"
	check "$name: the device reads the model" cmp -n "$size" "$dev" "$m"
	check "$name: detach" detach "$dev"
	verify "$name" "$img" "$m"
}

# --- fresh images: versions, cluster sizes, refcount widths -----------------
for cs in 512 65536 2097152; do
	q create -f qcow2 -o cluster_size=$cs v3-$cs.qcow2 16M
	wcase "v3 cluster $cs" v3-$cs.qcow2 $cs
done
q create -f qcow2 -o compat=0.10 v2.qcow2 16M
wcase "v2 cluster 65536" v2.qcow2 65536
q create -f qcow2 -o extended_l2=on ext.qcow2 16M
wcase "extended L2" ext.qcow2 65536
q create -f qcow2 -o extended_l2=on,cluster_size=2M ext2m.qcow2 16M
wcase "extended L2, 2 MiB clusters" ext2m.qcow2 2097152
for rb in 1 16 64; do
	q create -f qcow2 -o refcount_bits=$rb,cluster_size=4k rb$rb.qcow2 16M
	wcase "refcount_bits $rb" rb$rb.qcow2 4096
done

# --- existing data: in place, compressed ------------------------------------
q create -f qcow2 full.qcow2 16M
io full.qcow2 'write -P 0x11 0 16M'
wcase "in place over data" full.qcow2 65536
# Text: compresses (random bytes would be stored uncompressed).
{ base64 -w 0 pat; base64 -w 0 pat; } | head -c 16M >data.raw
for c in zlib zstd; do
	q convert -c -O qcow2 -o compression_type=$c data.raw comp-$c.qcow2
	wcase "over $c compressed clusters" comp-$c.qcow2 65536
done

# --- lazy refcounts ---------------------------------------------------------
q create -f qcow2 -o lazy_refcounts=on lazy.qcow2 16M
if dev=$(attach_rw lazy.qcow2 2>&1); then
	check_eq "lazy_refcounts: dirty bit set while attached" 1 $(($(incompat lazy.qcow2) & 1))
	put "$dev" 0 65536 0
	detach "$dev"
	check_eq "lazy_refcounts: dirty bit clear after detach" 0 $(($(incompat lazy.qcow2) & 1))
	check "lazy_refcounts: qemu-img check clean" qemu-img check lazy.qcow2
else
	fail "lazy_refcounts: attach: $dev"
fi

# --- a backing chain: qcow2 over compressed qcow2 over raw -------------------
head -c 6M pat >base.raw
q create -f qcow2 -b base.raw -F raw mid0.qcow2 12M
io mid0.qcow2 'write -P 0x31 1M 512k' 'write -P 0x32 7M 256k'
q convert -c -O qcow2 -B base.raw -F raw mid0.qcow2 mid.qcow2
q create -f qcow2 -o cluster_size=4k -b mid.qcow2 -F qcow2 top.qcow2 16M
io top.qcow2 'write -P 0x33 0 8k' 'write -z 2M 64k'
sums=$(sha256sum base.raw mid.qcow2)
wcase "backing chain (top 4k clusters)" top.qcow2 4096
check_eq "backing chain: lower layers unchanged" "$sums" "$(sha256sum base.raw mid.qcow2)"
q create -f qcow2 -o compat=0.10 -b mid.qcow2 -F qcow2 top2.qcow2 16M
wcase "backing chain, v2 top (no discard)" top2.qcow2 65536 0
check_eq "backing chain v2: lower layers unchanged" "$sums" "$(sha256sum base.raw mid.qcow2)"
# An overlay on a compressed base, as labs use it.
q create -f qcow2 -b comp-zstd.qcow2 -F qcow2 overlay.qcow2
sum=$(sha256sum comp-zstd.qcow2)
wcase "overlay over a compressed base" overlay.qcow2 65536
check_eq "overlay: the base unchanged" "$sum" "$(sha256sum comp-zstd.qcow2)"

# --- an internal snapshot ---------------------------------------------------
q create -f qcow2 snap.qcow2 16M
io snap.qcow2 'write -P 0x21 0 16M'
q snapshot -c before snap.qcow2
q convert -O raw snap.qcow2 snap-before.raw
wcase "with an internal snapshot" snap.qcow2 65536
# losetup-fmt --snapshot implies -r; the driver refuses a snapshot asked
# read-write through the option itself.
if dev=$(attach_rw --snapshot before snap.qcow2 2>&1); then
	check "snapshot: still reads its old bytes" cmp -n 16777216 "$dev" snap-before.raw
	check_eq "snapshot: --snapshot attaches read-only" 1 "$(blockdev --getro "$dev")"
	detach "$dev"
else
	fail "snapshot: attach --snapshot: $dev"
fi
check_fails "snapshot: read-write attach of a snapshot refused" "Read-only file system" \
	attach_rw --fmt-option snapshot.name=before snap.qcow2

# --- attach refusals ----------------------------------------------------------
q create -f qcow2 dirty.qcow2 16M
"${PATCH[@]}" dirty.qcow2 set64 72 1
check_fails "dirty image: read-write attach refused" "Read-only file system" attach_rw dirty.qcow2
check "dirty image: the refusal names the device" \
	sh -c 'dmesg | tail -5 | grep -q "lff[0-9]*: qcow2: image is marked dirty"'
if dev=$(attach_ro dirty.qcow2 2>&1); then ok "dirty image: read-only attach works"; detach "$dev"; else fail "dirty image: read-only attach: $dev"; fi
q create -f qcow2 corrupt.qcow2 16M
"${PATCH[@]}" corrupt.qcow2 set64 72 2
check_fails "corrupt image: read-write attach refused" "Read-only file system" attach_rw corrupt.qcow2

# --- ext4 ---------------------------------------------------------------------
mkdir -p tree/a/b mnt
for i in $(seq 1 200); do head -c $((i * 397)) data.raw >tree/a/f$i; done
head -c 3M pat >tree/a/b/big
seq 1 100000 >tree/seq
q create -f qcow2 fs.qcow2 64M
if dev=$(attach_rw fs.qcow2 2>&1); then
	check "ext4: mkfs" mkfs.ext4 -q -F "$dev"
	check "ext4: mount" mount -t ext4 "$dev" mnt
	check "ext4: copy a tree" cp -a tree mnt/
	check "ext4: umount" umount mnt
	check "ext4: fsck clean" e2fsck -f -n "$dev"
	detach "$dev"
	check "ext4: qemu-img check clean" qemu-img check fs.qcow2
	if dev=$(attach_rw fs.qcow2 2>&1); then
		check "ext4: mount again" mount -t ext4 -o ro "$dev" mnt
		check "ext4: the tree reads back" diff -r tree mnt/tree
		umount mnt
		detach "$dev"
	else
		fail "ext4: re-attach: $dev"
	fi
else
	fail "ext4: attach: $dev"
fi

# --- fio, several jobs ------------------------------------------------------
q create -f qcow2 fio.qcow2 64M
if dev=$(attach_rw fio.qcow2 2>&1); then
	check "fio: 4 jobs x QD8 random writes, crc32c verified (direct)" \
		fio --thread --name=v --filename="$dev" --direct=1 --ioengine=io_uring --iodepth=8 \
		--numjobs=4 --rw=randwrite --bs=4k --size=8M --offset_increment=16M \
		--verify=crc32c --verify_fatal=1 --group_reporting --output=fio.out
	check "fio: mixed buffered read/write with fsync, verified" \
		fio --thread --name=m --filename="$dev" --direct=0 --ioengine=psync --numjobs=2 \
		--rw=randrw --bs=16k --size=4M --offset=4M --offset_increment=32M --verify=md5 \
		--verify_fatal=1 --fsync=16 --output=fio2.out
	dd if="$dev" of=fio.model bs=1M status=none
	detach "$dev"
	verify "fio" fio.qcow2 fio.model
else
	fail "fio: attach: $dev"
fi

# --- ENOSPC -------------------------------------------------------------------
mkdir -p small
if mount -t tmpfs -o size=4M tmpfs small; then
	q create -f qcow2 small/img.qcow2 64M
	if dev=$(attach_rw small/img.qcow2 2>&1); then
		check_fails "ENOSPC: a write past the file system's space fails cleanly" \
			"No space left on device" \
			dd if=pat of="$dev" bs=1M count=8 oflag=direct status=none
		check "ENOSPC: the device still reads" dd if="$dev" of=/dev/null bs=1M count=1 status=none
		check "ENOSPC: the failure is logged" \
			sh -c 'dmesg | tail -20 | grep -q "lff[0-9]*: qcow2: write of"'
		detach "$dev"
		# Leaks are allowed (exit 3); corruption (2) is not.
		qemu-img check small/img.qcow2 >enospc.check 2>&1
		r=$?
		check "ENOSPC: qemu-img check finds no corruption (exit $r)" test $r = 0 -o $r = 3
		grep -q "ERROR" enospc.check && fail "ENOSPC: qemu-img check reports errors" && sed 's/^/#   /' enospc.check
	else
		fail "ENOSPC: attach: $dev"
	fi
	umount small
else
	fail "ENOSPC: mount a small tmpfs"
fi

# --- a planted overlap -------------------------------------------------------
q create -f qcow2 ov.qcow2 16M
io ov.qcow2 'write -P 0x41 0 1M'
l1=$(($("${PATCH[@]}" ov.qcow2 get64 40)))
"${PATCH[@]}" ov.qcow2 l2-entry 65536 $((l1 | (1 << 63)))
meta_before=$(dd if=ov.qcow2 bs=64k count=8 status=none | sha256sum)
if dev=$(attach_rw ov.qcow2 2>&1); then
	check_eq "overlap: the device starts read-write" 0 "$(blockdev --getro "$dev")"
	# Through one descriptor opened before the overlap: the write into the
	# cluster that names the L1 table, then a harmless one.
	out=$(python3 - "$dev" <<-'EOF'
		import mmap, os, sys
		fd = os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT)
		buf = mmap.mmap(-1, 4096)
		buf.write(b"Z" * 4096)
		for name, off in (("first", 65536), ("later", 0)):
		    try:
		        os.pwrite(fd, buf, off)
		        print(name, "written")
		    except OSError as e:
		        print(name, os.strerror(e.errno))
	EOF
	)
	check_eq "overlap: a write to a cluster that names the L1 table fails with EIO" \
		"first Input/output error" "$(echo "$out" | grep '^first')"
	check "overlap: logged with the device" \
		sh -c 'dmesg | tail -5 | grep -q "lff[0-9]*: qcow2: write at 65536: .*marked corrupt"'
	check "overlap: the core logs the device going read-only" \
		sh -c "dmesg | tail -5 | grep -q '${dev#/dev/}: format .qcow2. takes no more writes .*EUCLEAN.*read-only now'"
	check_eq "overlap: the corrupt bit is set" 2 $(($(incompat ov.qcow2) & 2))
	check_eq "overlap: the device is read-only now (blockdev --getro)" 1 "$(blockdev --getro "$dev")"
	check_eq "overlap: losetup-fmt -l shows it read-only" 1 \
		"$(losetup-fmt -l -n -O RO "$dev" | tr -d ' ')"
	# The block layer refuses writes to a read-only disk (EPERM), through
	# the old descriptor and through a new one.
	check_eq "overlap: later writes through the open descriptor are refused" \
		"later Operation not permitted" "$(echo "$out" | grep '^later')"
	check_fails "overlap: later writes through a new descriptor are refused" \
		"Operation not permitted" put "$dev" 0 4096 0 direct
	check "overlap: reads still work" cmp -n 4096 <(dd if="$dev" bs=4k count=1 status=none) \
		<(head -c 4096 /dev/zero | tr '\0' A)
	detach "$dev"
	check_eq "overlap: the L1 table offset intact" "$l1" "$(($("${PATCH[@]}" ov.qcow2 get64 40)))"
	# The first 512 KiB hold the header, L1, refcount table and blocks, the
	# L2 table: only the incompatible features field changed.
	"${PATCH[@]}" ov.qcow2 set64 72 0
	check_eq "overlap: metadata otherwise unchanged" "$meta_before" \
		"$(dd if=ov.qcow2 bs=64k count=8 status=none | sha256sum)"
else
	fail "overlap: attach: $dev"
fi

finish

#!/bin/bash
# Images on block devices and on disk file systems, as the boot from a
# virtual disk has them: the device size comes from the block device, and
# I/O issued from inside submit_bio() (mount's superblock read, O_DIRECT)
# must not wait for the backing device's bios queued behind it (a hang
# before the fix; every step here is bounded by a timeout).
. "$(dirname "$0")/lib.sh"
modprobe loop_file_fmt_raw || { fail "modprobe loop_file_fmt_raw"; finish; }
LOSETUP=/usr/sbin/losetup # util-linux, for kernel loop devices
cd "$WORK"

# within SEC CMD...: CMD's status, or 124 if it is still running after SEC
# seconds. A task stuck in D state cannot be killed: it is left behind, its
# output goes to a file (not to the caller's pipe), and the suite stops
# (see hung).
within() {
	local sec=$1; shift
	"$@" >"$WORK/within.out" 2>&1 </dev/null &
	local pid=$! n=0
	while kill -0 $pid 2>/dev/null; do
		if [ $n -ge $((sec * 10)) ]; then
			cat "$WORK/within.out"
			echo "still running after ${sec}s: $*"
			touch "$WORK/hung"
			return 124
		fi
		sleep 0.1
		n=$((n + 1))
	done
	wait $pid
	local rc=$?
	cat "$WORK/within.out"
	return $rc
}
# After a hang, nothing more can be cleaned up: stop the suite.
hung() {
	[ -e "$WORK/hung" ] || return 1
	fail "stopping: I/O to the device hangs"
	trap - EXIT
	exit 1
}

# An ext4 file system with a known file, on a kernel loop device.
mkdir -p tree mnt
dd if=/dev/urandom of=tree/data bs=1M count=3 status=none
truncate -s 32M fs.ext4
mkfs.ext4 -q -F -d tree fs.ext4
bdev=$($LOSETUP -f --show fs.ext4)

dev=$(losetup-fmt --file-fmt raw -r -f --show "$bdev")
check_eq "raw on a block device: device size is the block device's" 33554432 "$(blockdev --getsize64 "$dev")"
check "raw on a block device: O_DIRECT read (issued inside submit_bio)" \
	within 20 dd if="$dev" of=/dev/null bs=4k count=16 iflag=direct status=none
hung
check "raw on a block device: mount (superblock read inside submit_bio)" \
	within 20 mount -o ro "$dev" mnt
hung
check "raw on a block device: file content" cmp tree/data mnt/data
umount mnt 2>/dev/null
losetup-fmt -d "$dev"

if modprobe loop_file_fmt_qcow2 2>/dev/null; then
	# A compressed qcow2 written on a block device, and the same file on an
	# ext4 on a block device (the boot's two ways of shipping the image).
	qemu-img convert -c -O qcow2 -o compression_type=zstd fs.ext4 img.qcow2
	qbdev=$($LOSETUP -f --show img.qcow2)
	dev=$(losetup-fmt --file-fmt qcow2 -r -f --show "$qbdev")
	check "qcow2 on a block device: mount" within 20 mount -o ro "$dev" mnt
	hung
	check "qcow2 on a block device: file content" cmp tree/data mnt/data
	umount mnt 2>/dev/null
	losetup-fmt -d "$dev"
	$LOSETUP -d "$qbdev"

	mkdir -p holder hmnt
	cp img.qcow2 holder/
	truncate -s 64M holder.ext4
	mkfs.ext4 -q -F -d holder holder.ext4
	hbdev=$($LOSETUP -f --show holder.ext4)
	mount -o ro "$hbdev" hmnt
	# Drop the page cache so the reads reach the block device.
	echo 3 >/proc/sys/vm/drop_caches
	dev=$(losetup-fmt --file-fmt qcow2 -r -f --show hmnt/img.qcow2)
	check "qcow2 file on an ext4 on a block device: mount" within 20 mount -o ro "$dev" mnt
	hung
	check "qcow2 file on an ext4 on a block device: file content" cmp tree/data mnt/data
	check "qcow2 file on an ext4 on a block device: O_DIRECT read" \
		within 20 dd if="$dev" of=/dev/null bs=64k count=64 iflag=direct status=none
	hung
	umount mnt 2>/dev/null
	losetup-fmt -d "$dev"
	umount hmnt
	$LOSETUP -d "$hbdev"
fi
$LOSETUP -d "$bdev"
rmmod loop_file_fmt_qcow2 loop_file_fmt_raw 2>/dev/null
finish

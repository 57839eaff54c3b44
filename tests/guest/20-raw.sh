#!/bin/bash
# The core module and the raw format driver, through losetup-fmt and raw
# ioctls: data paths, discard, read-only, offset/sizelimit, every error path,
# listing output, and attach/detach cycles that must leak nothing.
. "$(dirname "$0")/lib.sh"
CTL="python3 $LFF_TESTS/lffctl.py"
modprobe loop_file_fmt_raw || { fail "modprobe loop_file_fmt_raw"; finish; }
cd "$WORK"

# --- the ABI numbers the tests use are the header's ---
cat >nums.c <<'C'
#include <stdio.h>
#include <linux/loop_file_fmt.h>
int main(void) {
	printf("LFF_CONFIGURE=%lu\nLFF_CLR_FD=%lu\nLFF_GET_STATUS=%lu\nLFF_GET_MAP=%lu\n",
	       (unsigned long)LFF_CONFIGURE, (unsigned long)LFF_CLR_FD, (unsigned long)LFF_GET_STATUS,
	       (unsigned long)LFF_GET_MAP);
	printf("LFF_CTL_ADD=%lu\nLFF_CTL_REMOVE=%lu\nLFF_CTL_GET_FREE=%lu\n",
	       (unsigned long)LFF_CTL_ADD, (unsigned long)LFF_CTL_REMOVE, (unsigned long)LFF_CTL_GET_FREE);
	return 0;
}
C
if gcc -I"$LFF_TESTS/../../include/uapi" -o nums nums.c 2>gcc.err; then
	check_eq "ioctl numbers of the test helper match the UAPI header" "$(./nums)" "$($CTL numbers)"
else
	fail "compile the UAPI header"; sed 's/^/#   /' gcc.err
fi

# --- data path: O_DIRECT and buffered writes reach the file ---
dd if=/dev/urandom of=img bs=1M count=16 status=none
cp img ref
dev=$(losetup-fmt --file-fmt raw -f --show img)
check_eq "losetup -f --show prints the device" /dev/lff0 "$dev"
check "device reads the file byte for byte" cmp "$dev" img
check_eq "device size" 16777216 "$(blockdev --getsize64 "$dev")"
dd if=/dev/urandom of=pat bs=64k count=8 status=none
check "O_DIRECT write" dd if=pat of="$dev" bs=64k seek=5 oflag=direct status=none
check "buffered write + fsync" dd if=pat of="$dev" bs=4k seek=1000 conv=fsync,notrunc status=none
dd if=pat of=ref bs=64k seek=5 conv=notrunc status=none
dd if=pat of=ref bs=4k seek=1000 conv=notrunc status=none
check "unaligned-size buffered write then flush" sh -c "printf 'hello world' | dd of=$dev bs=1 seek=12345 conv=notrunc status=none && blockdev --flushbufs $dev"
printf 'hello world' | dd of=ref bs=1 seek=12345 conv=notrunc status=none
check "O_DIRECT read of what was written" sh -c "dd if=$dev bs=64k skip=5 count=8 iflag=direct status=none | cmp - pat"
check "detach" losetup-fmt -d "$dev"
check "after detach the file holds every write" cmp img ref

# --- discard punches holes, write-zeroes zeroes ---
dev=$(losetup-fmt --file-fmt raw -f --show img)
before=$(stat -c %b img)
check "blkdiscard 4 MiB" blkdiscard -o 1048576 -l 4194304 "$dev"
after=$(stat -c %b img)
if [ "$after" -lt "$before" ]; then ok "discard freed blocks ($before -> $after)"; else fail "discard freed no blocks ($before -> $after)"; fi
check "discarded range reads zeros" bash -c "cmp -n 4194304 <(dd if=$dev bs=1M skip=1 count=4 status=none) /dev/zero"
check "blkdiscard --zeroout" blkdiscard -z -o 8388608 -l 1048576 "$dev"
check "zeroed range reads zeros" bash -c "cmp -n 1048576 <(dd if=$dev bs=1M skip=8 count=1 status=none) /dev/zero"
check "size unchanged after discard" test "$(stat -c %s img)" = 16777216
losetup-fmt -d "$dev"

# --- a backing file on 9p: netfs moves its own copy of the iterator ---
# (before the fix the core wrote each request again at growing offsets,
# and read the same bytes into the rest of the request)
img9p=${LFF_RUN:?}/raw-9p.img
dd if=/dev/urandom of="$img9p" bs=64k count=16 status=none
cp "$img9p" ref9p
dev=$(losetup-fmt --file-fmt raw -f --show "$img9p")
check "9p backing file: the device reads it byte for byte" cmp "$dev" ref9p
check "9p backing file: O_DIRECT write" dd if=pat of="$dev" bs=64k seek=4 count=4 oflag=direct status=none
check "9p backing file: buffered write + fsync" dd if=pat of="$dev" bs=4k seek=200 count=8 conv=fsync,notrunc status=none
dd if=pat of=ref9p bs=64k seek=4 count=4 conv=notrunc status=none
dd if=pat of=ref9p bs=4k seek=200 count=8 conv=notrunc status=none
check "9p backing file: O_DIRECT read back" bash -c "dd if=$dev bs=64k skip=4 count=4 iflag=direct status=none | cmp - <(head -c 262144 pat)"
losetup-fmt -d "$dev"
check "9p backing file: the file holds the writes and nothing else" cmp "$img9p" ref9p
check_eq "9p backing file: its size is unchanged" 1048576 "$(stat -c %s "$img9p")"
rm -f "$img9p"

# --- read-only ---
dev=$(losetup-fmt --file-fmt raw -r -f --show img)
check_eq "read-only device: sysfs ro" 1 "$(cat /sys/block/${dev#/dev/}/ro)"
check_fails "read-only device refuses writes" "Operation not permitted" dd if=pat of="$dev" bs=4k count=1 status=none
check "read-only device still reads" cmp "$dev" img
losetup-fmt -d "$dev"
chmod 444 img2 2>/dev/null; cp img img2; chmod 444 img2
check "a file opened read-only makes a read-only device" sh -c "$CTL configure /dev/lff0 raw --file img2 --ro && test \$(cat /sys/block/lff0/ro) = 1 && $CTL clear /dev/lff0"

# --- offset and sizelimit ---
dev=$(losetup-fmt --file-fmt raw -o 1M --sizelimit 2M -f --show img)
check_eq "offset+sizelimit: size" 2097152 "$(blockdev --getsize64 "$dev")"
check "offset+sizelimit: content" bash -c "cmp <(dd if=img bs=1M skip=1 count=2 status=none) $dev"
check_eq "sysfs offset" 1048576 "$(cat /sys/block/${dev#/dev/}/loop_file_fmt/offset)"
check_eq "sysfs sizelimit" 2097152 "$(cat /sys/block/${dev#/dev/}/loop_file_fmt/sizelimit)"
check_fails "write past the sizelimit fails" "No space left" dd if=pat of="$dev" bs=1M seek=2 count=1 oflag=direct status=none
losetup-fmt -d "$dev"
dev=$(losetup-fmt --file-fmt raw -b 4096 -f --show img)
check_eq "sector size 4096" 4096 "$(blockdev --getss "$dev")"
losetup-fmt -d "$dev"

# --- listing ---
dev=$(losetup-fmt --file-fmt raw -r -f --show img)
n=${dev#/dev/}
out=$(losetup-fmt -l -n -O NAME,RO,BACK-FILE,FORMAT "$dev")
check_eq "losetup -l -n -O" "$dev 1 $WORK/img raw" "$(echo "$out" | tr -s ' ')"
check "losetup -J is JSON with our device" python3 -c "
import json, subprocess, sys
d = json.loads(subprocess.check_output(['losetup-fmt', '-J', '-l']))['loopdevices']
e = [x for x in d if x['name'] == '$dev'][0]
assert e['back-file'] == '$WORK/img', e
assert e['format'] == 'raw', e
assert e['ro'] in (True, 1, '1'), e
"
check "losetup -j FILE finds it" sh -c "losetup-fmt -j $WORK/img | grep -q '^$dev:'"
check_eq "status ioctl: format" raw "$($CTL status "$dev" | sed -n 's/^format=//p')"
check_eq "status ioctl: inode" "$(stat -c %i img)" "$($CTL status "$dev" | sed -n 's/^inode=//p')"
check_eq "status ioctl: device as stat(2) reports it" "$(stat -c %d img)" "$($CTL status "$dev" | sed -n 's/^device=//p')"
check_eq "sysfs backing_file" "$WORK/img" "$(cat /sys/block/$n/loop_file_fmt/backing_file)"
check_eq "sysfs format" raw "$(cat /sys/block/$n/loop_file_fmt/format)"
losetup-fmt -d "$dev"
check "no loop_file_fmt sysfs dir after detach" test ! -e /sys/block/$n/loop_file_fmt

# --- error paths: each errno, and nothing half-configured after ---
d=/dev/lff0
exec 7<>img
check_fails "bad fd -> EBADF" EBADF $CTL configure $d raw --fd 99
check_fails "directory as backing file -> EINVAL" EINVAL sh -c "exec 8<$WORK; $CTL configure $d raw --fd 8"
check_fails "unknown format -> ENOENT" ENOENT $CTL configure $d no_such_fmt --fd 7
check_eq "the control node lists the registered formats" raw "$(cat /sys/class/misc/loop-file-fmt-control/formats)"
check "unknown format is logged with the device name" sh -c "dmesg | grep -q \"lff0: no driver for format 'no_such_fmt'\""
check_fails "losetup names the missing driver" "no kernel driver for format 'no_such_fmt'" losetup-fmt --file-fmt no_such_fmt -f img
check_fails "format name with a slash -> EINVAL" EINVAL $CTL configure $d ../raw --fd 7
check_fails "nr_fds 0 -> EINVAL" EINVAL $CTL configure $d raw --fd 7 --nr-fds 0
check_fails "unknown flag -> EINVAL" EINVAL $CTL configure $d raw --fd 7 --flags 0x100
check_fails "reserved field set -> EINVAL" EINVAL $CTL configure $d raw --fd 7 --reserved 1
check_fails "block size 1000 -> EINVAL" EINVAL $CTL configure $d raw --fd 7 --block-size 1000
check_fails "offset not a multiple of 512 -> EINVAL" EINVAL $CTL configure $d raw --fd 7 --offset 100
check_fails "offset beyond the image -> EINVAL" EINVAL $CTL configure $d raw --fd 7 --offset 33554432
check_fails "two files for a raw image -> EINVAL" EINVAL $CTL configure $d raw --fd 7 --fd 7
check_fails "direct I/O on a non-O_DIRECT fd -> EINVAL" EINVAL $CTL configure $d raw --fd 7 --flags 2
check_fails "clear an unattached device -> ENXIO" ENXIO $CTL clear $d
check_fails "status of an unattached device -> ENXIO" ENXIO $CTL status $d
check "device unattached after all failures" test ! -e /sys/block/lff0/loop_file_fmt
check_eq "size 0 after all failures" 0 "$(blockdev --getsize64 $d)"
check "configure works after the failures" $CTL configure $d raw --fd 7
check_fails "configure an attached device -> EBUSY" EBUSY $CTL configure $d raw --fd 7
$CTL ctl add 1 >/dev/null
check_fails "stacking on our own device -> EINVAL" EINVAL sh -c "exec 9<$d; $CTL configure /dev/lff1 raw --fd 9"
check_fails "remove an attached device -> EBUSY" EBUSY $CTL ctl remove 0
mkfs.ext4 -q -F $d
mkdir -p mnt && mount $d mnt
check_fails "detach while mounted -> EBUSY" EBUSY $CTL clear $d
check_fails "losetup -d while mounted says busy" "busy" losetup-fmt -d $d
check_fails "rmmod of the driver in use -> in use" "in use" rmmod loop_file_fmt_raw
umount mnt
check "detach after umount" $CTL clear $d
exec 7<&-

# --- unprivileged callers ---
# The repository may live where nobody cannot read (/root): run copies.
chmod 755 "$WORK"
cp "$LFF_TESTS/lffctl.py" "$(readlink -f "$(command -v losetup-fmt)")" "$WORK/"
chmod 755 "$WORK/lffctl.py" "$WORK/losetup-fmt"
UCTL="python3 $WORK/lffctl.py"
chmod 666 /dev/lff0 /dev/loop-file-fmt-control
check_fails "non-root configure -> EPERM" EPERM setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all $UCTL configure /dev/lff0 raw --file img --ro
check_fails "non-root control add -> EPERM" EPERM setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all $UCTL ctl add
check_fails "losetup as non-root: not permitted" "Operation not permitted" setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all "$WORK/losetup-fmt" -r /dev/lff0 img
chmod 600 /dev/loop-file-fmt-control; chmod 660 /dev/lff0

# --- control node ---
check_eq "ctl add 5" 5 "$($CTL ctl add 5)"
check "ctl add 5 made /dev/lff5" test -b /dev/lff5
check_fails "ctl add 5 again -> EEXIST" EEXIST $CTL ctl add 5
check "ctl remove 5" $CTL ctl remove 5
check_fails "ctl remove 5 again -> ENODEV" ENODEV $CTL ctl remove 5
check_eq "get-free gives an unattached device" 0 "$($CTL ctl get-free)"

# --- 1000 attach/detach cycles leak nothing ---
modref() { awk '$1 == "loop_file_fmt_raw" {print $3}' /proc/modules; }
slab() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
$CTL cycle /dev/lff0 img 50
sync; echo 3 >/proc/sys/vm/drop_caches
have_kmemleak && kmemleak_reset
s0=$(slab)
check "1000 attach/detach cycles" $CTL cycle /dev/lff0 img 1000
sync; echo 3 >/proc/sys/vm/drop_caches
s1=$(slab)
check_eq "driver module refcount back to 0" 0 "$(modref)"
if have_kmemleak; then
	# KASAN's quarantine holds freed objects, so slab grows: ask kmemleak.
	kmemleak_check "kmemleak: 1000 cycles leaked nothing (slab +$((s1 - s0)) KiB)"
elif [ $((s1 - s0)) -lt 256 ]; then
	ok "slab grew $((s1 - s0)) KiB over 1000 cycles"
else
	fail "slab grew $((s1 - s0)) KiB over 1000 cycles"
fi
# A leaked file reference would keep the deleted file's blocks allocated.
want=$(du -ck img img2 ref | tail -1 | cut -f1)
df0=$(df -k --output=used /tmp | tail -1)
rm -f img img2 ref
df1=$(df -k --output=used /tmp | tail -1)
if [ $((df0 - df1)) -ge $((want - 64)) ]; then ok "deleting the images frees their space (no file reference left)"; else fail "space not freed after delete ($df0 -> $df1 KiB)"; fi
check "rmmod raw and core at the end" rmmod loop_file_fmt_raw loop_file_fmt
finish

#!/bin/bash
# Partitions (-P): a GPT image with two partitions, one holding an ext4;
# the partitions appear, read right and go away on detach; opens of the
# partitions racing with detach (the lock order of open_mutex and the
# device's configuration lock: before the fix this hung both sides in D
# state); autoclear with partitions; re-attach. Under the debug kernel
# (make test-debug) lockdep checks every path taken here.
. "$(dirname "$0")/lib.sh"
modprobe loop_file_fmt_raw || { fail "modprobe loop_file_fmt_raw"; finish; }
cd "$WORK"
ROUNDS=${LFF_PART_ROUNDS:-20}

# wait_gone PID SECONDS: waits for PID to end; 1 if it is still running
# then (a hang: a task in D state cannot be killed, so do not wait on it).
wait_gone() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	return 1
}

# dump_blocked: the kernel's list of blocked tasks, into the TAP output.
dump_blocked() {
	echo w >/proc/sysrq-trigger
	dmesg | tail -60 | sed 's/^/#   /'
}

# --- a GPT image: p1 ext4 with files, p2 random bytes ---
truncate -s 64M img
sfdisk -q img <<'EOF' || { fail "sfdisk"; finish; }
label: gpt
start=2048, size=40960, name=fs
start=43008, size=40960, name=data
EOF
mkdir -p tree mnt
dd if=/dev/urandom of=tree/a bs=1k count=700 status=none
dd if=/dev/urandom of=p2.ref bs=1M count=20 status=none
mkfs.ext4 -q -F -d tree -E offset=$((2048 * 512)) img 20M ||
	{ fail "mkfs.ext4 in p1"; finish; }
dd if=p2.ref of=img bs=512 seek=43008 conv=notrunc status=none

dev=$(losetup-fmt --file-fmt raw -P -r -f --show img)
d=${dev#/dev/}
check_eq "sysfs partscan" 1 "$(cat /sys/block/$d/loop_file_fmt/partscan)"
check "two partitions appear" test -b ${dev}p1 -a -b ${dev}p2 -a ! -e ${dev}p3
check_eq "p1 size" $((40960 * 512)) "$(blockdev --getsize64 ${dev}p1 2>&1)"
check_eq "p1 is the ext4" ext4 "$(blkid -o value -s TYPE ${dev}p1 2>&1)"
check "p2 reads its bytes" cmp ${dev}p2 p2.ref
check "mount p1 read-only, files match" sh -c "mount -o ro ${dev}p1 mnt && cmp mnt/a tree/a"
check_fails "detach while p1 is mounted: busy" "busy" losetup-fmt -d "$dev"
check "the partitions stay while busy" test -b ${dev}p1 -a -b ${dev}p2
umount mnt
check "detach" losetup-fmt -d "$dev"
check "detach drops the partitions" test ! -e ${dev}p1 -a ! -e ${dev}p2
check_eq "partscan off after detach" "" "$(ls /sys/block/$d | grep "^${d}p")"

# --- opens of the partitions racing with detach ---
# Readers of p1 (dd) and probes of p2 (blkid) loop while the device is
# detached and re-attached; every detach either succeeds or says busy, and
# must finish within seconds. The ABBA order (detach holding the config
# lock then taking open_mutex, an open holding open_mutex then taking the
# config lock) hung here within the first round.
hung=0 detached=0 busy=0 other=0
for ((r = 0; r < ROUNDS && hung == 0; r++)); do
	dev=$(losetup-fmt --file-fmt raw -P -r -f --show img) || { fail "attach round $r"; break; }
	udevadm settle 2>/dev/null || true
	( while :; do dd if=${dev}p1 of=/dev/null bs=64k count=16 status=none 2>/dev/null; done ) &
	rd=$!
	( while :; do blkid -p ${dev}p2 >/dev/null 2>&1; done ) &
	pb=$!
	sleep 0.$((RANDOM % 5 + 1))
	# Detach attempts until one succeeds; readers keep racing.
	for ((t = 0; t < 50; t++)); do
		losetup-fmt -d "$dev" >out 2>&1 &
		dp=$!
		if ! wait_gone $dp 30; then
			hung=1
			break
		fi
		if wait $dp; then
			detached=$((detached + 1)); break
		elif grep -q busy out; then
			busy=$((busy + 1))
		else
			other=$((other + 1)); sed 's/^/#   /' out
		fi
		[ $t -lt 40 ] || { kill $rd $pb 2>/dev/null; }
	done
	kill $rd $pb 2>/dev/null
	wait_gone $rd 30 && wait_gone $pb 30 || hung=1
	wait $rd $pb 2>/dev/null
	# After a successful detach the last close tears down: wait for it.
	for ((t = 0; t < 100; t++)); do
		[ -e /sys/block/$d/loop_file_fmt ] || break
		sleep 0.1
	done
	if [ -e /sys/block/$d/loop_file_fmt ]; then
		losetup-fmt -d "$dev" 2>/dev/null
	fi
done
if [ $hung = 1 ]; then
	fail "detach racing with partition opens hung (round $r)"
	dump_blocked
	finish
fi
echo "# $ROUNDS rounds: $detached detached, $busy busy answers, $other other errors"
check_eq "every round detached, with only busy answers before" "$ROUNDS 0" "$detached $other"
check "nothing left attached" test ! -e /sys/block/$d/loop_file_fmt
check "no partition left" test ! -e ${dev}p1

# --- autoclear with partitions: the last close of a partition detaches ---
cat >autoclear.py <<'EOF'
import os, sys, time
sys.path.insert(0, os.environ["LFF_TESTS"])
import lffctl
dev, img = sys.argv[1], sys.argv[2]
AUTOCLEAR, PARTSCAN, RO = 1 << 2, 1 << 3, 1 << 0
holder = os.open(dev, os.O_RDONLY)          # keeps the device open
f = os.open(img, os.O_RDONLY)
lffctl.configure(dev, b"raw", [f], flags=AUTOCLEAR | PARTSCAN | RO)
os.close(f)
for _ in range(100):
    if os.path.exists(dev + "p1"):
        break
    time.sleep(0.05)
p1 = os.open(dev + "p1", os.O_RDONLY)       # the partition holds the disk
os.close(holder)
attached = os.path.exists("/sys/block/%s/loop_file_fmt" % os.path.basename(dev))
print("attached-after-holder-close=%d" % attached)
os.read(p1, 4096)
os.close(p1)                                # last close: autoclear
print("attached-after-last-close=%d" % os.path.exists(
    "/sys/block/%s/loop_file_fmt" % os.path.basename(dev)))
print("p1-after-last-close=%d" % os.path.exists(dev + "p1"))
EOF
dev=/dev/$(python3 "$LFF_TESTS/lffctl.py" ctl get-free | sed 's/^/lff/')
out=$(python3 autoclear.py "$dev" img 2>&1)
check_eq "autoclear: an open partition keeps the device attached" \
	attached-after-holder-close=1 "$(echo "$out" | grep holder)"
check_eq "autoclear: the last close detaches" \
	attached-after-last-close=0 "$(echo "$out" | grep last-close | grep attached)"
check_eq "autoclear: and drops the partitions" \
	p1-after-last-close=0 "$(echo "$out" | grep p1-after)"

# --- re-attach the same device, with and without -P ---
dev=$(losetup-fmt --file-fmt raw -P -r -f --show img)
check "re-attach -P: partitions again" test -b ${dev}p1 -a -b ${dev}p2
check "re-attach -P: p2 reads its bytes" cmp ${dev}p2 p2.ref
losetup-fmt -d "$dev"
dev=$(losetup-fmt --file-fmt raw -r -f --show img)
check "attach without -P: no partitions" test ! -e ${dev}p1
check_eq "attach without -P: partscan 0" 0 "$(cat /sys/block/${dev#/dev/}/loop_file_fmt/partscan)"
check "without -P the whole image reads" cmp "$dev" img
losetup-fmt -d "$dev"
finish

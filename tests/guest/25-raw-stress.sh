#!/bin/bash
# Concurrency: many requests in flight with data verification, and
# configuration racing with driver unload/reload (autoload on attach).
. "$(dirname "$0")/lib.sh"
CTL="python3 $LFF_TESTS/lffctl.py"
modprobe loop_file_fmt_raw || { fail "modprobe loop_file_fmt_raw"; finish; }
cd "$WORK"

truncate -s 64M img
dev=$(losetup-fmt --file-fmt raw -f --show img)
check "fio: 4 jobs x QD16 random writes, verified (direct)" \
	fio --thread --name=v --filename="$dev" --direct=1 --ioengine=io_uring --iodepth=16 --numjobs=4 \
	--rw=randwrite --bs=4k --size=16M --offset_increment=16M --verify=crc32c \
	--verify_fatal=1 --group_reporting --output=fio.out
check "fio: mixed buffered read/write, verified" \
	fio --thread --name=m --filename="$dev" --direct=0 --ioengine=psync --numjobs=2 --rw=randrw \
	--bs=16k --size=8M --offset_increment=32M --verify=md5 --verify_fatal=1 --fsync=32 --output=fio2.out
losetup-fmt -d "$dev"

# Attach/detach loops (the driver is autoloaded by attach) racing with
# rmmod/modprobe of the driver: every step may fail with EBUSY/ENOENT, but
# nothing may oops or leak.
racer() {
	local end=$((SECONDS + 8))
	while [ $SECONDS -lt $end ]; do
		rmmod loop_file_fmt_raw 2>/dev/null
		modprobe loop_file_fmt_raw 2>/dev/null
	done
}
attacher() {
	local end=$((SECONDS + 8)) n=0
	$CTL ctl add "$1" >/dev/null 2>&1
	while [ $SECONDS -lt $end ]; do
		$CTL configure "/dev/lff$1" raw --file img >/dev/null 2>&1 && n=$((n + 1))
		$CTL clear "/dev/lff$1" >/dev/null 2>&1
	done
	echo "$n" >"attached.$1"
}
racer & r=$!
attacher 1 & a1=$!
attacher 2 & a2=$!
wait $r $a1 $a2
total=$(( $(cat attached.1) + $(cat attached.2) ))
if [ "$total" -gt 0 ]; then ok "attach raced with driver unload: $total attaches"; else fail "no attach succeeded while racing"; fi
check "devices detached at the end" sh -c '! ls /sys/block/*/loop_file_fmt >/dev/null 2>&1'
modprobe loop_file_fmt_raw
check "driver can be removed after the race" rmmod loop_file_fmt_raw
# Other suites may have left other format drivers loaded.
for m in $(awk '$1 ~ /^loop_file_fmt_/ {print $1}' /proc/modules); do rmmod "$m"; done
check "core can be removed after the race" rmmod loop_file_fmt
finish

#!/bin/bash
# Stress, for LFF_STRESS_SECONDS (default 20; `make test-debug` runs it for
# minutes under KASAN/lockdep/kmemleak), all at once:
# - raw workers: attach a raw image read-write, fio random writes with
#   crc32c verification, detach;
# - qcow2 workers: attach plain, zlib and zstd compressed (4 KiB and 64 KiB
#   clusters) images and a 3-layer chain read-only, compare them with
#   `qemu-img convert` output (whole device, or random 4 KiB direct
#   reads), change the cache sizes and the clean interval through sysfs,
#   detach;
# - sysfs readers on every device while they attach and detach;
# - a module cycler: rmmod/modprobe of the format drivers, now and then of
#   the whole stack;
# - hostile ioctls (tests/guest/lff-abuse.py), as root and as nobody.
# Attaches may fail while a driver is being unloaded; an attached device
# must always read right. At the end nothing is attached, the modules
# unload, and kmemleak (when the kernel has it) reports nothing from our
# modules.
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
SECS=${LFF_STRESS_SECONDS:-20}
cd "$WORK" || exit 1
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd

check "modprobe the drivers" modprobe -a loop_file_fmt_raw loop_file_fmt_qcow2
# Report only what this test leaks.
have_kmemleak && kmemleak_reset

# --- images and oracles -------------------------------------------------------
q() { qemu-img "$@" >/dev/null; }
head -c 1M /dev/urandom | base64 -w 0 | head -c 3M >data.raw
seq 1 400000 | head -c 2M >>data.raw
truncate -s 8M data.raw
q convert -O qcow2 -o cluster_size=64k data.raw plain.qcow2
q convert -c -O qcow2 -o cluster_size=64k data.raw zlib.qcow2
q convert -c -O qcow2 -o cluster_size=4k,compression_type=zstd data.raw zstd4k.qcow2
q convert -c -O qcow2 -o cluster_size=64k,compression_type=zstd data.raw zstd.qcow2
q create -f qcow2 -b zstd.qcow2 -F qcow2 -o cluster_size=4k mid.qcow2 8M
qemu-io -c 'write -P 0x5a 1M 300k' -c 'write -z 5M 64k' mid.qcow2 >/dev/null
q create -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 8M
qemu-io -c 'write -P 0xa5 1200k 8k' -c 'write -P 0x33 7M 1M' top.qcow2 >/dev/null
for i in plain zlib zstd4k zstd top; do q convert -O raw $i.qcow2 $i.oracle; done
for i in 1 2; do truncate -s 32M raw$i.img; done
check "images built" test -s top.oracle

# --- workers ------------------------------------------------------------------
end=$((SECONDS + SECS))
# Detach, retrying while someone else (the unprivileged abuser) has the
# device open: LFF_CLR_FD refuses with EBUSY then.
detach() {
	local t
	for t in $(seq 50); do
		losetup-fmt -d "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	losetup-fmt -d "$1"
}
# The nodes are root's; open them to everyone so that the unprivileged
# abuser reaches the ioctls' own permission checks.
open_nodes() { chmod 0666 /dev/loop-file-fmt-control /dev/lff* 2>/dev/null; }
# Each worker appends "ok" or "FAIL: why" lines to its own log.
raw_worker() { # N: device lff$((10 + N)), image rawN.img
	local dev=/dev/lff$((10 + $1)) log=raw$1.log n=0
	while [ $SECONDS -lt $end ]; do
		if ! losetup-fmt --file-fmt raw "$dev" raw$1.img 2>>raw$1.err; then
			echo refused >>$log; sleep 0.2; continue
		fi
		if fio --name=v$n --filename="$dev" --direct=1 --ioengine=libaio --iodepth=8 \
			--rw=randwrite --bs=4k --size=4M --offset=$(((n % 7) * 4))M --verify=crc32c \
			--verify_fatal=1 --randseed=$n --output=fio$1.out >/dev/null 2>&1; then
			echo ok >>$log
		else
			echo "FAIL: fio on $dev (iteration $n): $(grep -m3 -i 'err\|verify' fio$1.out)" >>$log
		fi
		detach "$dev" 2>>raw$1.err || echo "FAIL: detach $dev" >>$log
		n=$((n + 1))
	done
}
qcow2_worker() { # N IMAGE...: device lff$((20 + N)) cycles through the images
	local w=$1 dev=/dev/lff$((20 + $1)) log=q$1.log n=0; shift
	local imgs=("$@") img off
	while [ $SECONDS -lt $end ]; do
		img=${imgs[n % ${#imgs[@]}]}
		n=$((n + 1))
		if ! losetup-fmt --file-fmt qcow2 -r "$dev" $img.qcow2 2>>q$w.err; then
			echo refused >>$log; sleep 0.2; continue
		fi
		s=/sys/block/${dev#/dev/}/loop_file_fmt
		echo $(((n % 3) * 64)) >$s/l2_cache_size 2>/dev/null
		echo $(((n % 2) * 128)) >$s/cluster_cache_size 2>/dev/null
		echo $((n % 2)) >$s/cache_clean_interval 2>/dev/null
		if [ $((n % 2)) = 0 ]; then
			if cmp "$dev" $img.oracle >>q$w.err 2>&1; then echo ok >>$log; else echo "FAIL: $img on $dev differs" >>$log; fi
		else
			local bad=0
			for _ in 1 2 3 4 5 6 7 8; do
				off=$((RANDOM % 2048))
				cmp <(dd if="$dev" bs=4k skip=$off count=1 iflag=direct status=none) \
					<(dd if=$img.oracle bs=4k skip=$off count=1 status=none) >>q$w.err 2>&1 || bad=1
			done
			if [ $bad = 0 ]; then echo ok >>$log; else echo "FAIL: $img on $dev: random reads differ" >>$log; fi
		fi
		detach "$dev" 2>>q$w.err || echo "FAIL: detach $dev" >>$log
		# Leave the driver idle now and then, for the cycler.
		sleep 0.$((RANDOM % 3))
	done
}
sysfs_reader() {
	local n=0
	while [ $SECONDS -lt $end ]; do
		cat /sys/block/lff*/loop_file_fmt/* /sys/class/misc/loop-file-fmt-control/formats >/dev/null 2>&1
		losetup-fmt -l >/dev/null 2>&1
		open_nodes
		n=$((n + 1))
	done
	echo "$n" >sysfs.count
}
cycler() {
	local n=0 full=0 unloads=0
	while [ $SECONDS -lt $end ]; do
		rmmod loop_file_fmt_qcow2 2>/dev/null && unloads=$((unloads + 1))
		rmmod loop_file_fmt_raw 2>/dev/null && unloads=$((unloads + 1))
		# Now and then the whole stack (only possible when everything is
		# idle; it then takes the devices with it).
		if [ $((n % 10)) = 9 ] && rmmod loop_file_fmt 2>/dev/null; then full=$((full + 1)); fi
		sleep 0.$((RANDOM % 5))
		modprobe -a loop_file_fmt_raw loop_file_fmt_qcow2 2>/dev/null
		sleep 0.$((RANDOM % 5))
		n=$((n + 1))
	done
	echo "$n $unloads $full" >cycler.count
}

pids=()
raw_worker 1 & pids+=($!)
raw_worker 2 & pids+=($!)
qcow2_worker 1 plain zlib & pids+=($!)
qcow2_worker 2 zstd4k top & pids+=($!)
qcow2_worker 3 zstd top zlib & pids+=($!)
sysfs_reader & pids+=($!)
cycler & pids+=($!)
python3 "$HERE/lff-abuse.py" "$SECS" 100 raw1.img plain.qcow2 >abuse-root.out 2>&1 & pids+=($!)
# The repository may live where nobody cannot read (/root): run a copy.
cp "$HERE/lff-abuse.py" "$WORK/lff-abuse-user.py" && chmod 755 "$WORK" "$WORK/lff-abuse-user.py"
setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
	python3 "$WORK/lff-abuse-user.py" "$SECS" --unprivileged /dev/lff11 /dev/lff21 /dev/lff22 /dev/lff100 \
	>abuse-user.out 2>&1 & pids+=($!)
wait "${pids[@]}"

# --- results ------------------------------------------------------------------
for f in raw1 raw2 q1 q2 q3; do
	oks=$(grep -c '^ok' $f.log 2>/dev/null)
	refused=$(grep -c '^refused' $f.log 2>/dev/null)
	echo "# $f: ${oks:-0} verified attach cycles, ${refused:-0} attaches refused (driver unloading)"
	if grep -q '^FAIL' $f.log 2>/dev/null; then
		fail "$f: a verification failed"; grep '^FAIL' $f.log | head -5 | sed 's/^/#   /'
	elif [ "${oks:-0}" -gt 0 ]; then
		ok "$f: every attached device read right (${oks} cycles)"
	else
		fail "$f: no attach cycle completed"; tail -5 $f.err 2>/dev/null | sed 's/^/#   /'
	fi
done
read -r cycles unloads full <cycler.count
echo "# module cycler: $cycles rounds, $unloads driver unloads, $full of the whole stack; sysfs reader: $(cat sysfs.count) rounds"
check "modules unloaded and reloaded while in use" test "$cycles" -gt 0
for who in root user; do
	echo "# abuse ($who): $(head -1 abuse-$who.out)"
	if grep -q '^rounds=[0-9]* calls=[1-9][0-9]* .*failures=0$' abuse-$who.out; then
		ok "hostile ioctls ($who): every call failed with its own errno"
	else
		fail "hostile ioctls ($who)"; head -30 abuse-$who.out | sed 's/^/#   /'
	fi
done

modprobe -a loop_file_fmt_raw loop_file_fmt_qcow2
check_eq "nothing left attached" "" "$(losetup-fmt -a)"
check "the whole stack unloads" rmmod loop_file_fmt_qcow2 loop_file_fmt_raw loop_file_fmt

have_kmemleak && kmemleak_check "kmemleak: nothing leaked by our modules"
echo "# $SUITE: ${SECS} s of stress, ${SECONDS} s in all"
finish

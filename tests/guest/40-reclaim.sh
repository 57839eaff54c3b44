#!/bin/bash
# Memory reclaim through /dev/lffN must not deadlock the I/O path (issue 12
# item 2). A workload with little memory (a memory cgroup of
# LFF_RECLAIM_FREE_MIB, default 256) runs for LFF_RECLAIM_SECONDS (default
# 60; 300 in `make test-debug`):
# - an ext4 file system in a zstd-compressed qcow2 image, attached
#   read-only, is read by two readers that checksum its files;
# - an ext4 file system on a raw image, and one in a qcow2 image (every
#   write allocates: L2 tables, refcounts, clusters), attached read-write,
#   are written, synced and read back by a writer each; the qcow2 image
#   passes `qemu-img check` afterwards;
# - swap is on a third /dev/lffN (raw, direct I/O), and a memory hog
#   (memhog.py) has more anonymous memory than the cgroup may use and keeps
#   touching parts of it, so reclaim swaps out through the device, and in
#   again.
# Asserts: swap was used (pswpout grew), reclaim happened (pgsteal grew),
# every checksum matched, no OOM kill, and everything detaches; a hang
# prints the blocked tasks and fails, and vm-run fails the run on a
# hung-task or lockdep report in the kernel log.
#
# The images live on ext4 on vm-run's scratch disk (--scratch, serial
# lff-scratch): not on tmpfs (swap backed by tmpfs is circular) nor 9p.
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
SECS=${LFF_RECLAIM_SECONDS:-60}
FREE=${LFF_RECLAIM_FREE_MIB:-256}
HOG=${LFF_RECLAIM_HOG_MIB:-384}
S=$WORK/scratch
pids=()

vmstat() { awk -v k="$1" '$1 == k {s += $2} END {print s + 0}' /proc/vmstat; }
pgsteal() { awk '$1 ~ /^pgsteal_/ {s += $2} END {print s + 0}' /proc/vmstat; }
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	swapoff -a 2>/dev/null
	umount "$S/ro" "$S/rw" "$S/qw" 2>/dev/null
	for d in "${devs[@]}"; do losetup-fmt -d "$d" 2>/dev/null; done
	umount "$S" 2>/dev/null
	[ -z "${CG:-}" ] || rmdir "$CG" 2>/dev/null
	[ -z "${ht0:-}" ] || echo "$ht0" >$HT
	rm -rf "$WORK"
}
devs=()
trap cleanup EXIT

disk=
for f in /sys/block/*/serial; do
	[ "$(cat "$f" 2>/dev/null)" = lff-scratch ] && disk=/dev/$(basename "$(dirname "$f")")
done
if [ -z "$disk" ]; then
	fail "a scratch disk (vm-run --scratch MiB): none found"
	finish
fi
ok "scratch disk $disk"
check "modprobe the drivers" modprobe -a loop_file_fmt_raw loop_file_fmt_qcow2
mkdir -p "$S"
check "ext4 on the scratch disk" mkfs.ext4 -q -F "$disk"
check "mount it" mount -o noatime "$disk" "$S"

# --- the images -------------------------------------------------------------
# 48 files of 1 MiB, half random, half compressible, in ext4 in a zstd qcow2.
mkdir -p "$S/src" "$S/ro" "$S/rw" "$S/qw"
for i in $(seq 0 47); do
	if [ $((i % 2)) = 0 ]; then
		head -c 1M /dev/urandom >"$S/src/f$i"
	else
		head -c 384K /dev/urandom | od -An -tx1 -v | head -c 1M >"$S/src/f$i"
	fi
done
(cd "$S/src" && sha256sum f*) >"$S/sums"
check "ext4 image of the files" mkfs.ext4 -q -d "$S/src" "$S/ro.raw" 80M
check "zstd-compressed qcow2 of it" qemu-img convert -c -O qcow2 \
	-o compression_type=zstd,cluster_size=65536 "$S/ro.raw" "$S/ro.qcow2"
rm -f "$S/ro.raw"
# Written out, not fallocated: no unwritten extents to convert (a journal
# transaction) when the device writes them.
check "raw image for ext4 (256 MiB)" dd if=/dev/zero of="$S/rw.raw" bs=1M count=256 conv=fsync status=none
check "qcow2 image for ext4 (256 MiB, empty)" qemu-img create -q -f qcow2 "$S/qw.qcow2" 256M
check "raw image for swap (512 MiB)" dd if=/dev/zero of="$S/swap.raw" bs=1M count=512 conv=fsync status=none

if ! ro=$(losetup-fmt --file-fmt qcow2 -r -f --show "$S/ro.qcow2" 2>&1); then
	fail "attach the qcow2 image: $ro"; finish
fi
devs+=("$ro")
if ! rw=$(losetup-fmt --file-fmt raw -f --show "$S/rw.raw" 2>&1); then
	fail "attach the ext4 raw image: $rw"; finish
fi
devs+=("$rw")
if ! qw=$(losetup-fmt --file-fmt qcow2 -f --show "$S/qw.qcow2" 2>&1); then
	fail "attach the ext4 qcow2 image read-write: $qw"; finish
fi
devs+=("$qw")
# Swap with direct I/O, as on loop devices: a buffered write to the backing
# file needs a page cache page for every page swapped out, and when memory
# is gone that page can only come from the swap-out itself. (Seen here:
# every lff worker of the swap device blocked on the backing inode's lock
# behind a writer that held a journal handle and waited for memory, and
# jbd2 waiting for that handle.) Direct I/O allocates only bios, from
# mempools.
if ! sw=$(losetup-fmt --file-fmt raw --direct-io=on -f --show "$S/swap.raw" 2>&1); then
	fail "attach the swap image: $sw"; finish
fi
devs+=("$sw")
check "mount the qcow2 ext4 read-only" mount -o ro,noload "$ro" "$S/ro"
check "mkfs.ext4 on $rw" mkfs.ext4 -q "$rw"
check "mount it" mount -o noatime "$rw" "$S/rw"
check "mkfs.ext4 on $qw" mkfs.ext4 -q "$qw"
check "mount it" mount -o noatime "$qw" "$S/qw"
check "mkswap on $sw" mkswap -q "$sw"
check "swapon $sw" swapon "$sw"
check_eq "the only swap is $sw" "$sw" "$(awk 'NR > 1 {print $1}' /proc/swaps)"
# A task blocked for this long is reported (and fails the run).
HT=/proc/sys/kernel/hung_task_timeout_secs
ht0=$(cat $HT 2>/dev/null)
[ -z "$ht0" ] || echo 90 >$HT

# --- little memory left -----------------------------------------------------
# The workload runs in a memory cgroup of FREE MiB (memory.max): its page
# cache is reclaimed, its anonymous memory swapped out through $sw, and
# the qcow2 driver's buffers are charged to it (requests run with the
# submitter's memcg). Global pressure (mlocking the rest of the guest)
# stalled everything here instead: the guest's root is 9p, and every exec
# then rereads its binaries through 9p under the same pressure.
CG=/sys/fs/cgroup
grep -q "^cgroup2 $CG " /proc/mounts || mount -t cgroup2 none $CG
echo +memory >$CG/cgroup.subtree_control 2>/dev/null
CG=$CG/lff-reclaim
mkdir -p $CG
check "a memory cgroup of $FREE MiB" bash -c "echo ${FREE}M >$CG/memory.max"
echo "# $FREE MiB for the workload (memory cgroup), hog $HOG MiB, for $SECS s"
sync
echo 3 >/proc/sys/vm/drop_caches
pswpout0=$(vmstat pswpout) pswpin0=$(vmstat pswpin) steal0=$(pgsteal)
oom0=$(vmstat oom_kill)
start=$(date +%s)
# The workers run until the hog is done: SECS after its memory is in place.
DONE=$WORK/hog.done

# Readers: checksum the files of the compressed image one after the other,
# from the device (the page cache is dropped every 8 files), until the time
# is up; a round is 48 files.
reader() {
	local n=0 bad=0 sum f
	while [ ! -e "$DONE" ]; do
		[ $((n % 8)) != 0 ] || echo 1 >/proc/sys/vm/drop_caches
		line=$(sed -n "$(((n + $1 * 24) % 48 + 1))p" "$S/sums")
		sum=${line%% *} f=${line##* }
		if [ "$(sha256sum <"$S/ro/$f")" != "$sum  -" ]; then
			bad=$((bad + 1))
			echo "$f differs" >>"$WORK/reader$1.err"
		fi
		n=$((n + 1))
	done
	echo "$n $bad" >"$WORK/reader$1"
}
# Writer NAME: 2 MiB files written to $S/NAME, synced, dropped from the
# cache and read back.
writer() {
	local n=0 bad=0 f sum
	while [ ! -e "$DONE" ]; do
		f="$S/$1/w$((n % 16))"
		head -c 2M /dev/urandom >"$WORK/$1.tmp"
		sum=$(sha256sum <"$WORK/$1.tmp")
		cp "$WORK/$1.tmp" "$f" && sync "$f" || bad=$((bad + 1))
		echo 1 >/proc/sys/vm/drop_caches
		[ "$(sha256sum <"$f")" = "$sum" ] || bad=$((bad + 1))
		n=$((n + 1))
	done
	rm -f "$WORK/$1.tmp"
	echo "$n $bad" >"$WORK/writer.$1"
}
incg() { echo "$BASHPID" >$CG/cgroup.procs && "$@"; }
incg reader 1 & pids+=($!)
incg reader 2 & pids+=($!)
incg writer rw & pids+=($!)
incg writer qw & pids+=($!)
incg /usr/bin/python3 -u "$HERE/memhog.py" "$HOG" "$SECS" "$DONE" >"$WORK/hog.out" 2>&1 &
pids+=($!)
# Wait for the workers. Progress every 30 s, and the most swap in use; if
# they are not done GRACE seconds after the hog's SECS (or its memory is
# not in place after 2 GRACE), the blocked tasks and the end of the kernel
# log are printed and the suite fails (vm-run's hung-task check reports
# the rest).
GRACE=${LFF_RECLAIM_GRACE:-300}
swapped() { awk '$1 == "SwapTotal:" {t = $2} $1 == "SwapFree:" {f = $2} END {print int((t - f) / 1024)}' /proc/meminfo; }
peak=0
progress() {
	local u
	u=$(swapped)
	[ "$u" -le "$peak" ] || peak=$u
	echo "# $(($(date +%s) - start)) s: swap used $u MiB, pswpout $(($(vmstat pswpout) - pswpout0))" \
		"pswpin $(($(vmstat pswpin) - pswpin0)) pgsteal $(($(pgsteal) - steal0))" \
		"$(awk '$1 ~ /^(MemFree|SwapFree|Dirty|Writeback):$/ {printf "%s %d MiB ", $1, $2 / 1024}' /proc/meminfo)"
}
t=0 stuck=0
while :; do
	alive=0
	for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
	[ $alive = 1 ] || break
	[ $((t % 30)) != 0 ] || progress
	u=$(swapped)
	[ "$u" -le "$peak" ] || peak=$u
	now=$(date +%s)
	[ -n "${hstart:-}" ] || ! grep -q hogging "$WORK/hog.out" || hstart=$now
	if [ "$now" -gt $((${hstart:-$start + 2 * GRACE} + SECS + GRACE)) ]; then
		stuck=1
		break
	fi
	sleep 5
	t=$((t + 5))
done
progress
if [ $stuck = 1 ]; then
	fail "the workers finish within ${GRACE} s of the deadline"
	echo w >/proc/sysrq-trigger
	sleep 2
	dmesg | tail -250 | sed 's/^/#   /'
	trap - EXIT # tearing down would block on the stuck tasks
	finish
fi
for p in "${pids[@]}"; do wait "$p"; done
cat "$WORK/hog.out" | sed 's/^/# /'

pswpout=$(($(vmstat pswpout) - pswpout0)) pswpin=$(($(vmstat pswpin) - pswpin0))
steal=$(($(pgsteal) - steal0)) oom=$(($(vmstat oom_kill) - oom0))
echo "# pswpout $pswpout pswpin $pswpin pgsteal $steal (pages), oom kills $oom"
echo "# qcow2 reserve uses: $(cat "/sys/block/${ro#/dev/}/loop_file_fmt/reserve_uses" 2>/dev/null)"
grep -E 'SwapTotal|SwapFree' /proc/meminfo | sed 's/^/# /'
read -r r1 b1 <"$WORK/reader1" 2>/dev/null
read -r r2 b2 <"$WORK/reader2" 2>/dev/null
read -r wn wb <"$WORK/writer.rw" 2>/dev/null
read -r qn qb <"$WORK/writer.qw" 2>/dev/null
echo "# readers: ${r1:-?}+${r2:-?} files of 1 MiB checked; writers: ${wn:-?} (raw) and ${qn:-?} (qcow2) files of 2 MiB"
check "swap was used: at most $peak MiB" test "$peak" -gt 0
check "swap was used (pswpout grew by $pswpout)" test "$pswpout" -gt 0
check "reclaim happened (pgsteal grew by $steal)" test "$steal" -gt 0
check_eq "no OOM kill" 0 "$oom"
check "the hog finished" grep -q passes "$WORK/hog.out"
check "readers read files" test "${r1:-0}" -gt 0 -a "${r2:-0}" -gt 0
check_eq "every reader checksum matched" "0 0" "${b1:-?} ${b2:-?}"
[ "${b1:-0}${b2:-0}" = 00 ] || cat "$WORK"/reader*.err 2>/dev/null | sed 's/^/#   /' | head
check "the writers wrote" test "${wn:-0}" -gt 0 -a "${qn:-0}" -gt 0
check_eq "every written file read back right (raw, qcow2)" "0 0" "${wb:-?} ${qb:-?}"

# --- teardown ---------------------------------------------------------------
pids=()
check "swapoff (reads the swapped pages back)" swapoff "$sw"
check "the files of the qcow2 ext4 still match" bash -c "cd '$S/ro' && sha256sum --quiet -c '$S/sums'"
check "umount the qcow2 ext4" umount "$S/ro"
check "umount the raw ext4" umount "$S/rw"
check "umount the qcow2 ext4 written" umount "$S/qw"
check "fsck of the written ext4" fsck.ext4 -n -f "$rw"
check "fsck of the ext4 written in qcow2" fsck.ext4 -n -f "$qw"
for d in "${devs[@]}"; do check "detach $d" losetup-fmt -d "$d"; done
devs=()
check "qemu-img check of the written qcow2 image" qemu-img check -q "$S/qw.qcow2"
finish

#!/bin/bash
# The qcow2 crash test (issue 15): the power is cut in the middle of write
# bursts, again and again; after every cut `qemu-img check` must find no
# corruption (exit 0, or 3: leaked clusters only) and every write completed
# before a completed flush must read back.
#
# The power-cut model. Killing QEMU alone loses nothing that matters: what
# the guest handed to the virtual disk is in the host's page cache and
# survives, so every write the driver issued "reaches the disk", in order.
# A real disk with a volatile write cache may instead lose any write not
# covered by a completed flush, and destage the others in any order. To
# model that, the guest puts dm-log-writes (CONFIG_DM_LOG_WRITES) between
# the driver and the image's disk: it records every write when it
# completes, grouped by the flushes that made it durable, with the writer's
# marks, on a second disk. The guest then resets itself (sysrq b) at a
# random moment of a write burst; QEMU (-no-reboot) exits, completing the
# requests it had taken, so the log on the host file ends cleanly (its last
# entry, if its data is missing, is dropped). The host replays the log onto
# the image as it was before the boot and checks the states a crash could
# have left: after every flush, and between two flushes any subset of the
# sectors written since the first (each sector old, or one of the versions
# written there: 512-byte sectors are the atomic unit). Writes never
# covered by a flush are not in the log at all: they are lost. dm-flakey
# (drop_writes) would lose only a suffix in issue order, which cannot
# catch a missing flush between two writes; replaying dm-log-writes can.
#
# The image is the raw content of the disk (no file system under it:
# nothing to fsck and extract), padded so that the image can grow inside
# the fixed-size disk; the driver allocates by refcount, not at the file's
# end. The writer (lib/qcow2_crash.py guest): rounds of 4-9 O_DIRECT writes
# of 4 KiB-256 KiB at pseudo-random offsets, some only 512-byte aligned,
# half of them in the first 4 MiB so that rounds rewrite each other's
# clusters; every sector names its round and its number. After a round:
# fsync, a log mark, a wait until the mark is on the log disk, then
# "FLUSHED n". The next boot continues on the state left by the cut (the
# log's end with a random subset of its unfinished stretch), so each image
# accumulates history and leaks.
#
# Variants, one image each: 64 KiB and 4 KiB clusters, refcount_bits 1,
# extended L2, an overlay over a zstd-compressed base (the base unchanged),
# v2 (compat=0.10), lazy_refcounts (the dirty bit is set after the crash:
# `qemu-img check -r all` repairs it as QEMU would, and the next boot
# checks that a read-write attach of the dirty copy is refused).
#
# LFF_CRASH_SEED=N repeats a run's write pattern and cut points (the
# moments of the cuts still vary). Each cut prints a TAP line; the last
# line is a summary; exit 1 if anything failed.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../../scripts/qemu-boot/lib.sh"
PY=(/usr/bin/python3 "$HERE/lib/qcow2_crash.py")
VMRUN=$LFF_ROOT/scripts/qemu-boot/vm-run
VSIZE=$((32 << 20))
DISK=$((80 << 20))
SEED=${LFF_CRASH_SEED:-$((RANDOM * 32768 + RANDOM))}
mkdir -p "$LFF_CACHE/runs"
W=$(mktemp -d "$LFF_CACHE/runs/crash.XXXXXX")
trap 'rm -rf "$W"' EXIT
fails=0 cuts=0 t0=$SECONDS
echo "# qcow2-crash: seed $SEED (LFF_CRASH_SEED=$SEED repeats it)"

ok() { echo "ok - $*"; }
bad() { echo "not ok - $*"; fails=$((fails + 1)); }
indent() { sed 's/^/#   /' | tail -"${1:-40}"; }

# variant NAME CUTS [--lazy] [qemu-img create -o options]: one image, CUTS
# boots each ending in a cut. LFF_CRASH_VARIANTS="NAME..." runs only those.
variant() {
	local name=$1 n=$2 d=$W/$1 lazy=() opts=() round=1 c rc out seed=$SEED-$1
	shift 2
	[ -z "${LFF_CRASH_VARIANTS:-}" ] || [[ " $LFF_CRASH_VARIANTS " == *" $name "* ]] || return 0
	[ "${1:-}" != --lazy ] || { lazy=(--lazy --dirty-copy "$d/dirty.qcow2"); shift; }
	[ $# = 0 ] || opts=(-o "$1")
	mkdir -p "$d"
	if ! qemu-img create -q -f qcow2 ${opts[@]+"${opts[@]}"} "$d/state.qcow2" $VSIZE ||
		! qemu-img convert -f qcow2 -O raw "$d/state.qcow2" "$d/state.raw"; then
		bad "$name: qemu-img create"
		return
	fi
	truncate -s $DISK "$d/state.qcow2"
	for c in $(seq 1 "$n"); do
		cp "$d/state.qcow2" "$d/disk.img"
		rm -f "$d/log.img"
		truncate -s 256M "$d/log.img"
		local disks=(--disk "$d/disk.img" --disk "$d/log.img")
		[ ! -f "$d/dirty.qcow2" ] || disks+=(--disk "$d/dirty.qcow2")
		local tb=$SECONDS
		"$VMRUN" --no-build --cpus 1 --memory 1024 --timeout 300 "${disks[@]}" -- \
			"${PY[@]}" guest --seed "$seed" --first-round $round --vsize $VSIZE \
			>"$d/console" 2>&1
		rc=$?
		cuts=$((cuts + 1))
		local what="$name cut $c (rounds from $round)"
		# The guest's own checks (the dirty image's refusal).
		grep -E '^(not )?ok - ' "$d/console" | sed "s/^\(not \)\{0,1\}ok - /&$name: /" |
			while IFS= read -r l; do echo "$l"; done
		fails=$((fails + $(grep -c '^not ok - ' "$d/console")))
		if [ $rc != 125 ] || ! grep -q '^CUT-TIMER' "$d/console" ||
			! grep -q 'the guest stopped before the command finished' "$d/console"; then
			bad "$what: the guest was not cut mid-write (vm-run exit $rc)"
			indent <"$d/console"
			return
		fi
		local tc=$SECONDS
		if ! out=$("${PY[@]}" host --seed "$seed" --first-round $round --vsize $VSIZE \
			--base "$d/state.qcow2" --base-raw "$d/state.raw" --log "$d/log.img" \
			--console "$d/console" --out "$d/next.qcow2" --out-raw "$d/next.raw" \
			${lazy[@]+"${lazy[@]}"} 2>&1); then
			echo "$out" | grep -v '^NEXT '
			bad "$what: $(grep -c '^FLUSHED' "$d/console") rounds flushed; the crash states are not all clean"
			echo "# console:"
			grep -v '^NEXT ' "$d/console" | indent 30
			return
		fi
		echo "$out" | grep -v '^NEXT ' | sed "s/^\(ok - \)/\1$name: /"
		ok "$what: $(grep -c '^FLUSHED' "$d/console") rounds flushed, $(grep -o 'CUT-TIMER.*' "$d/console"); no corruption, flushed data intact (boot $((tc - tb)) s, check $((SECONDS - tc)) s)"
		round=$(echo "$out" | sed -n 's/^NEXT //p')
		mv "$d/next.qcow2" "$d/state.qcow2"
		mv "$d/next.raw" "$d/state.raw"
	done
	rm -f "$d/disk.img" "$d/log.img"
}

variant v3-64k 2
variant v3-4k 2 cluster_size=4096
variant refcount1-4k 2 cluster_size=4096,refcount_bits=1
variant extended-l2 2 extended_l2=on
variant v2 2 compat=0.10
variant lazy-refcounts 2 --lazy lazy_refcounts=on

# The overlay over a zstd-compressed base: copy-on-write from compressed
# clusters; the base stays as it was.
"${PY[@]}" base --vsize $VSIZE --out "$W/base.raw" &&
	qemu-img convert -q -c -f raw -O qcow2 -o compression_type=zstd "$W/base.raw" "$W/base.qcow2" ||
	bad "overlay: making the base"
sum=$(md5sum <"$W/base.qcow2")
variant overlay-zstd 2 "backing_file=$W/base.qcow2,backing_fmt=qcow2"
if [ -d "$W/overlay-zstd" ]; then
	if [ "$(md5sum <"$W/base.qcow2")" = "$sum" ]; then
		ok "overlay-zstd: the base image is unchanged"
	else
		bad "overlay-zstd: the base image changed"
	fi
fi

echo "# qcow2-crash: $cuts cuts, $fails failed, in $((SECONDS - t0)) s (seed $SEED)"
[ $fails = 0 ]

#!/bin/bash
# `losetup-fmt map` and LFF_GET_MAP, the format drivers' view of a device:
# - every qcow2 corpus case (qcow2-corpus.sh) against `qemu-img map
#   --output=json` of the same image (of a copy with the snapshot applied
#   for snapshot cases): allocation, zero and compressed status, depth,
#   host offsets of data;
# - an image of more runs than one ioctl returns (1024), --start/--length
#   windows, the human output;
# - raw: one data run at the file offset, with -o/--sizelimit;
# - bad arguments: EOPNOTSUPP from a driver without map (vdi), ENXIO on an
#   unattached device, ENOTTY elsewhere, EINVAL/EFAULT for bad ioctl fields.
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
CTL="python3 $HERE/lffctl.py"
CMP="python3 $HERE/map-compare.py"
C=$WORK/corpus

check "modprobe the format drivers" modprobe -a loop_file_fmt_raw loop_file_fmt_qcow2 loop_file_fmt_vdi
check "build the corpus with qemu-img/qemu-io" bash "$HERE/qcow2-corpus.sh" "$C"
cd "$C" || exit 1

# snapshot_of ARGS...: the snapshot a corpus case's losetup arguments select.
snapshot_of() {
	while [ $# -gt 0 ]; do
		case $1 in
		--snapshot) echo "$2"; return ;;
		--fmt-option) echo "${2#snapshot*=}"; return ;;
		esac
		shift
	done
}

# --- the corpus against qemu-img map ---------------------------------------
n=0
while read -r -u 3 name img _oracle args; do
	# shellcheck disable=SC2086
	if ! dev=$(losetup-fmt --file-fmt qcow2 -r -f --show $args "$img" 2>&1); then
		fail "$name: attach: $dev"
		continue
	fi
	# shellcheck disable=SC2086
	snap=$(snapshot_of $args)
	ref=$img
	if [ -n "$snap" ]; then
		# qemu-img map reads the active state: apply the snapshot to a copy
		# (its L1 table becomes the snapshot's; clusters stay where they are).
		ref=$WORK/$name.qcow2
		cp "$img" "$ref" && qemu-img snapshot -a "$snap" "$ref"
	fi
	if losetup-fmt map --json "$dev" >"$WORK/$name.ours" 2>"$WORK/$name.err" &&
		qemu-img map --output=json "$ref" >"$WORK/$name.qemu"; then
		check "$name: map equals qemu-img map" \
			$CMP "$WORK/$name.ours" "$WORK/$name.qemu" "$(blockdev --getsize64 "$dev")"
	else
		fail "$name: map: $(cat "$WORK/$name.err")"
	fi
	n=$((n + 1))
	check "$name: detach" losetup-fmt -d "$dev"
done 3<cases
check_eq "corpus: 24 cases mapped" 24 "$n"

# --- many runs, windows, human output --------------------------------------
# 4 KiB clusters, every other one written: 3000 data runs apart, more than
# one LFF_GET_MAP call returns.
python3 -c '
import sys
with open(sys.argv[1], "wb") as f:
    for i in range(6000):
        f.write((bytes([i % 251 + 1]) * 4096) if i % 2 == 0 else bytes(4096))
' runs.raw
qemu-img convert -f raw -O qcow2 -o cluster_size=4k runs.raw runs.qcow2
qemu-img map --output=json runs.qcow2 >"$WORK/runs.qemu"
dev=$(losetup-fmt --file-fmt qcow2 -r -f --show runs.qcow2)
size=$(blockdev --getsize64 "$dev")
losetup-fmt map --json "$dev" >"$WORK/runs.ours"
check "6000 clusters: map equals qemu-img map (many ioctl calls)" \
	$CMP "$WORK/runs.ours" "$WORK/runs.qemu" "$size"
check_eq "6000 clusters: 6000 runs" 6000 "$(grep -c '"start"' "$WORK/runs.ours")"
check "the raw ioctl returns 1024 runs at most per call" \
	sh -c "$CTL map $dev --nr 1024 | head -1 | grep -qx n=1024"
check "a call with room for 1 run returns the first run" \
	sh -c "$CTL map $dev --nr 1 | tr '\n' ' ' | grep -qx 'n=1 0 4096 [0-9]* 25 0 '"
losetup-fmt map --json --start 1M --length 100k "$dev" >"$WORK/win.ours"
check "--start 1M --length 100k: the window of qemu-img's map" \
	$CMP "$WORK/win.ours" "$WORK/runs.qemu" "$size" 1048576 102400
check_eq "--start/--length: the first run starts at the window" 1048576 \
	"$(sed -n 's/^\[\{0,1\}{ "start": \([0-9]*\),.*/\1/p' "$WORK/win.ours" | head -1)"
check "--start at an unaligned offset" \
	sh -c "losetup-fmt map --json --start 5000 --length 3000 $dev | grep -q '\"start\": 5000, \"length\": 3000'"
check "--start at the end: an empty map" \
	sh -c "[ \"\$(losetup-fmt map --json --start $size $dev)\" = '[]' ]"
losetup-fmt map "$dev" >"$WORK/runs.human"
qemu-img map runs.qcow2 >"$WORK/runs.qhuman"
check "human output: qemu-img map's lines, the device's file" \
	diff <(sed 's/ *$//' "$WORK/runs.human") \
	<(sed 's/ *$//; s|runs.qcow2$|'"$C"'/runs.qcow2|' "$WORK/runs.qhuman")
check "detach runs.qcow2" losetup-fmt -d "$dev"

# The human output of a chain names each layer's file.
dev=$(losetup-fmt --file-fmt qcow2 -r -f --show top.qcow2)
losetup-fmt map "$dev" >"$WORK/chain.human"
check "human output of a chain names the three layers" \
	sh -c "grep -q '/top.qcow2\$' $WORK/chain.human && grep -q '/mid.qcow2\$' $WORK/chain.human && grep -q '/base.raw\$' $WORK/chain.human"
check "compressed runs say so in the human output" \
	sh -c "d=\$(losetup-fmt --file-fmt qcow2 -r -f --show zstd-64k.qcow2) && losetup-fmt map \$d | grep -q ' compressed ' ; r=\$?; losetup-fmt -d \$d; exit \$r"
check "detach the chain" losetup-fmt -d "$dev"

# --- raw -------------------------------------------------------------------
head -c 3M /dev/urandom >full.raw
dev=$(losetup-fmt -r -f --show full.raw)
losetup-fmt map --json "$dev" >"$WORK/raw.ours"
qemu-img map -f raw --output=json full.raw >"$WORK/raw.qemu"
check "raw: map equals qemu-img map" $CMP "$WORK/raw.ours" "$WORK/raw.qemu" 3145728
losetup-fmt -d "$dev"
dev=$(losetup-fmt -r -o 1M --sizelimit 1M -f --show full.raw)
check_eq "raw with -o 1M --sizelimit 1M: one run at file offset 1 MiB" \
	'[{ "start": 0, "length": 1048576, "depth": 0, "present": true, "zero": false, "data": true, "compressed": false, "offset": 1048576}]' \
	"$(losetup-fmt map --json "$dev")"
losetup-fmt -d "$dev"

# --- bad arguments ---------------------------------------------------------
qemu-img create -q -f vdi v.vdi 4M
dev=$(losetup-fmt --file-fmt vdi -r -f --show v.vdi)
check_fails "vdi: map refused with EOPNOTSUPP" \
	"format 'vdi' does not report its mapping: Operation not supported" losetup-fmt map "$dev"
check "the refusal is logged with the device name" \
	sh -c "dmesg | grep -q '${dev#/dev/}: map: format .vdi. does not report its mapping'"
losetup-fmt -d "$dev"
# The vdi driver is this suite's own load: leave the module set as the
# later suites expect it (95-stress unloads raw, qcow2 and the core).
check "rmmod loop_file_fmt_vdi" rmmod loop_file_fmt_vdi

dev=$(losetup-fmt --file-fmt qcow2 -r -f --show plain-64k.qcow2)
size=$(blockdev --getsize64 "$dev")
check_fails "--start beyond the device" "is beyond the device size" \
	losetup-fmt map --start $((size + 512)) "$dev"
check_fails "ioctl: start beyond the device: EINVAL" EINVAL $CTL map "$dev" --start $((size + 1))
check "ioctl: start at the end: no runs" sh -c "$CTL map $dev --start $size | grep -qx n=0"
check_fails "ioctl: room for 0 runs: EINVAL" EINVAL $CTL map "$dev" --nr 0
check_fails "ioctl: room for 1025 runs: EINVAL" EINVAL $CTL map "$dev" --nr 1025
check_fails "ioctl: unknown flags: EINVAL" EINVAL $CTL map "$dev" --flags 1
check_fails "ioctl: reserved field set: EINVAL" EINVAL $CTL map "$dev" --reserved 1
check_fails "ioctl: bad extents pointer: EFAULT" EFAULT $CTL map "$dev" --pointer 8
check_fails "ioctl: kernel extents pointer: EFAULT" EFAULT $CTL map "$dev" --pointer 0xffffffff81000000
check "the device still maps after the bad calls" sh -c "losetup-fmt map --json $dev >/dev/null"
check_fails "map: a second device operand is a usage error" "map takes one device" \
	losetup-fmt map "$dev" "$dev"
check_fails "map: no device" "no device specified" losetup-fmt map --json
check_fails "map: bad --length" "invalid length argument" losetup-fmt map --length x "$dev"
losetup-fmt -d "$dev"

free=$(losetup-fmt -f)
check_fails "map of an unattached device: ENXIO" "not attached: No such device or address" \
	losetup-fmt map "$free"
check_fails "ioctl on an unattached device: ENXIO" ENXIO $CTL map "$free"
check_fails "map of something else: ENOTTY" "not a loop-file-fmt device" losetup-fmt map /dev/null
check_fails "map of a missing node" "No such file or directory" losetup-fmt map /dev/lff-none

finish

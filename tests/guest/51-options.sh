#!/bin/bash
# losetup-fmt's util-linux options beyond attach, list and detach:
# - -c/--set-capacity (LFF_SET_CAPACITY): a raw file that grows and shrinks
#   under an attached device, with -o and --sizelimit, the new bytes read
#   back; qcow2 refused with EOPNOTSUPP (its size is in the header) and the
#   reason in the log; unattached (ENXIO), missing and unprivileged (EPERM)
#   callers; exit status 1 on every failure, as util-linux's;
# - -L/--nooverlap: a device on the same file, format and range is reused
#   (printed by --show, no second device), an overlapping one is refused
#   with util-linux's message, ranges that do not meet are attached, a
#   read-only device is reused only by a read-only request;
# - the bash completion: options from --help, format names, devices.
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
CTL="python3 $HERE/lffctl.py"
COMPLETION=$HERE/../../tools/losetup-fmt/completion/losetup-fmt
MIB=1048576

check "modprobe the format drivers" modprobe -a loop_file_fmt_raw loop_file_fmt_qcow2
cd "$WORK" || exit 1

size_of() { blockdev --getsize64 "$1"; }
# read_at DEV OFFSET-MIB COUNT-MIB: the device's bytes, with O_DIRECT so
# that no page cache of the old size answers.
read_at() { dd if="$1" bs=1M skip="$2" count="$3" iflag=direct status=none; }
# attached_to FILE: how many devices losetup-fmt -j lists for FILE.
attached_to() { losetup-fmt -j "$1" | wc -l; }
# status_of CMD...: the exit status of CMD, its output discarded.
status_of() { "$@" >/dev/null 2>&1; echo $?; }

# --- -c: a raw file that grows and shrinks -----------------------------------
dd if=/dev/urandom of=img bs=1M count=4 status=none
dd if=/dev/urandom of=tail bs=1M count=2 status=none
dev=$(losetup-fmt -f --show img)
name=${dev#/dev/}
check_eq "raw: size at attach" $((4 * MIB)) "$(size_of "$dev")"
cat tail >>img
check_eq "raw: the device keeps its size while the file grows" $((4 * MIB)) "$(size_of "$dev")"
dmesg -C
check "raw: losetup-fmt -c" losetup-fmt -c "$dev"
check_eq "raw: size after -c" $((6 * MIB)) "$(size_of "$dev")"
check_eq "raw: sysfs size in sectors" $((6 * MIB / 512)) "$(cat /sys/block/"$name"/size)"
check "raw: the grown tail reads back" cmp <(read_at "$dev" 4 2) tail
check "raw: the old bytes are unchanged" cmp <(read_at "$dev" 0 4) <(head -c $((4 * MIB)) img)
check "raw: logged: $name: capacity $((6 * MIB)) bytes (was $((4 * MIB)))" \
	grep -q "$name: capacity $((6 * MIB)) bytes (was $((4 * MIB)))" <(dmesg)
check "raw: --set-capacity again, nothing changed" losetup-fmt --set-capacity "$dev"
check_eq "raw: size unchanged" $((6 * MIB)) "$(size_of "$dev")"
truncate -s $((3 * MIB + 100)) img
check "raw: -c after the file shrank" losetup-fmt -c "$dev"
check_eq "raw: shrunk to whole sectors" $((3 * MIB)) "$(size_of "$dev")"
check_eq "raw: a read of the whole device ends at the new end" $((3 * MIB)) \
	"$(dd if="$dev" bs=1M iflag=direct status=none | wc -c)"
check "raw: what is left reads back" cmp <(read_at "$dev" 0 3) <(head -c $((3 * MIB)) img)
check "raw: detach" losetup-fmt -d "$dev"

# -o and --sizelimit apply as at attach; an offset past the new end leaves
# an empty device, as loop does.
truncate -s $((4 * MIB)) img
dev=$(losetup-fmt -f --show -o 1M img)
dev2=$(losetup-fmt -f --show -o 1M --sizelimit 2M img)
cat tail tail >>img
check "offset: -c with -o 1M" losetup-fmt -c "$dev"
check "offset: -c with -o 1M --sizelimit 2M" losetup-fmt -c "$dev2"
check_eq "offset: -o 1M follows the file" $((7 * MIB)) "$(size_of "$dev")"
check_eq "offset: --sizelimit 2M still caps" $((2 * MIB)) "$(size_of "$dev2")"
check "offset: the tail through -o 1M" cmp <(read_at "$dev" 3 2) tail
truncate -s $((MIB / 2)) img
check "offset: -c with the offset past the end" losetup-fmt -c "$dev"
check_eq "offset: empty device" 0 "$(size_of "$dev")"
check "offset: detach" losetup-fmt -d "$dev" "$dev2"

# --- -c: formats whose size is in the image, and bad callers -----------------
qemu-img create -q -f qcow2 q.qcow2 16M
dev=$(losetup-fmt --file-fmt qcow2 -r -f --show q.qcow2)
name=${dev#/dev/}
qemu-img resize -q q.qcow2 32M
dmesg -C
check_fails "qcow2: -c refused with the reason" \
	"set capacity failed: the format keeps its size in the image" losetup-fmt -c "$dev"
check_eq "qcow2: exit status 1" 1 "$(status_of losetup-fmt -c "$dev")"
# (Python names errno 95 ENOTSUP, which is EOPNOTSUPP on Linux.)
check_fails "qcow2: the ioctl gives EOPNOTSUPP" ENOTSUP $CTL set-capacity "$dev"
check "qcow2: logged: the format keeps its size in the image header" \
	grep -q "$name: set capacity: format 'qcow2' keeps its size in the image header" <(dmesg)
check_eq "qcow2: size unchanged" $((16 * MIB)) "$(size_of "$dev")"
check "qcow2: detach" losetup-fmt -d "$dev"

check_fails "-c on an unattached device" "$dev: set capacity failed: No such device or address" losetup-fmt -c "$dev"
check_eq "-c unattached: exit status 1" 1 "$(status_of losetup-fmt -c "$dev")"
check_fails "-c on a missing device" "/dev/lff99: set capacity failed: No such file or directory" losetup-fmt -c /dev/lff99
# The repository may live where nobody cannot read (/root): run copies.
chmod 755 "$WORK"
cp "$HERE/lffctl.py" "$(readlink -f "$(command -v losetup-fmt)")" "$WORK/"
chmod 755 "$WORK/lffctl.py" "$WORK/losetup-fmt"
dev=$(losetup-fmt -f --show -r img)
chmod 666 "$dev"
NOBODY="setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all"
check_fails "-c as non-root: not permitted" "set capacity failed: Operation not permitted" $NOBODY "$WORK/losetup-fmt" -c "$dev"
check_fails "LFF_SET_CAPACITY as non-root, node open for writing: EPERM" EPERM $NOBODY python3 "$WORK/lffctl.py" set-capacity "$dev" --write
chmod 660 "$dev"
check "unprivileged: detach" losetup-fmt -d "$dev"

# --- -L: reuse, overlap, ranges that do not meet ---------------------------
dd if=/dev/urandom of=img bs=1M count=4 status=none
dev=$(losetup-fmt -f --show img)
check_eq "-L: the same file and range reuses the device" "$dev" "$(losetup-fmt -f -L --show img)"
check_eq "-L: no second device" 1 "$(attached_to img)"
check_fails "-L: an overlapping range is refused" "img: overlapping loop device exists" \
	losetup-fmt -f -L --show -o 1M img
check_eq "-L overlap: exit status 1" 1 "$(status_of losetup-fmt -f -L -o 1M img)"
check_fails "-L: the same bytes through another format are refused" "img: overlapping loop device exists" \
	losetup-fmt -f -L --file-fmt vdi img
check_eq "-L: still one device" 1 "$(attached_to img)"
other=$(losetup-fmt -f --show -o 1M img)
check_eq "without -L the overlap is attached" 2 "$(attached_to img)"
check "-L: detach" losetup-fmt -d "$dev" "$other"

a=$(losetup-fmt -f --show --sizelimit 1M img)
b=$(losetup-fmt -f -L --show -o 1M --sizelimit 1M img)
check "-L: the next MiB is a new device" test -n "$b" -a "$a" != "$b"
check "-L: ... reading that MiB" cmp <(read_at "$b" 0 1) <(tail -c +$((MIB + 1)) img | head -c $MIB)
check_fails "-L: a range across both is refused" "img: overlapping loop device exists" \
	losetup-fmt -f -L -o 512K --sizelimit 1M img
check_eq "-L: two devices" 2 "$(attached_to img)"
check "-L: detach both" losetup-fmt -d "$a" "$b"

ro=$(losetup-fmt -f --show -r img)
check_eq "-L -r: a read-only device is reused by a read-only request" "$ro" "$(losetup-fmt -f -L -r --show img)"
check_fails "-L: not by a writer" "img: overlapping read-only loop device exists" losetup-fmt -f -L --show img
check_eq "-L: one read-only device" 1 "$(attached_to img)"
check "-L: detach the read-only device" losetup-fmt -d "$ro"

# --- bash completion -------------------------------------------------------
if [ -r /usr/share/bash-completion/bash_completion ]; then
	comp() { bash "$HERE/complete.sh" "$COMPLETION" "$1" | tr '\n' ' '; }
	check_eq "completion: --set" "--set-capacity " "$(comp "losetup-fmt --set")"
	check_eq "completion: --no" "--noheadings --nooverlap " "$(comp "losetup-fmt --no")"
	opts=$(comp "losetup-fmt -")
	missing=""
	for o in $(losetup-fmt --help | grep -oE -- '(^| )--?[A-Za-z][a-z-]*' | tr -d ' ' | sort -u); do
		[[ " $opts " == *" $o "* ]] || missing="$missing $o"
	done
	check_eq "completion: every option --help lists" "" "$missing"
	want=$( (tr -s ' \n' '\n' </sys/class/misc/loop-file-fmt-control/formats; printf '%s\n' raw qcow2 vdi vmdk auto) |
		sed '/^$/d' | sort -u | tr '\n' ' ')
	check_eq "completion: --file-fmt offers the kernel's formats" "$want" "$(comp "losetup-fmt --file-fmt ")"
	check_eq "completion: --file-fmt q" "qcow2 " "$(comp "losetup-fmt --file-fmt q")"
	dev=$(losetup-fmt -f --show -r img)
	check "completion: -c offers the devices" grep -qw -- "$dev" <<<"$(comp "losetup-fmt -c /dev/lf")"
	check "completion: detach" losetup-fmt -d "$dev"
else
	fail "completion: /usr/share/bash-completion/bash_completion missing (make deps installs bash-completion)"
fi

finish

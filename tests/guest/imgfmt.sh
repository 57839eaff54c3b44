# Helpers the suites of the read-only single-file format drivers (36-vdi,
# 37-vmdk) share, sourced after lib.sh with FMT set to the format's name
# (vdi, vmdk): it is the --file-fmt, qemu-img's -f, the driver's module
# suffix and the word after "lffN: " in its log lines.
: "${FMT:?imgfmt.sh: set FMT first}"
HERE=$(cd "$(dirname "$0")" && pwd)
CTL=(/usr/bin/python3 "$HERE/lffctl.py")
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
M=1048576

attach() { losetup-fmt --file-fmt "$FMT" -r -f --show "$@"; }
detach() { losetup-fmt -d "$1"; }
sysfs() { cat "/sys/block/${1#/dev/}/loop_file_fmt/$2"; }
# io IMAGE COMMAND...: qemu-io commands on IMAGE, in one run.
io() {
	local img=$1; shift
	local a=()
	for c in "$@"; do a+=(-c "$c"); done
	qemu-io -f "$FMT" "${a[@]}" "$img" >/dev/null
}
# same DEV IMAGE: the device has the size and bytes of qemu-img's view
# (left in IMAGE.raw for same_direct).
same() {
	qemu-img convert -f "$FMT" -O raw "$2" "$2.raw" || return 1
	local want got
	want=$(stat -c %s "$2.raw")
	got=$(blockdev --getsize64 "$1")
	[ "$got" = "$want" ] || { echo "size $got, expected $want"; return 1; }
	cmp -n "$want" "$1" "$2.raw"
}
same_direct() {
	cmp -n "$(stat -c %s "$2.raw")" <(dd if="$1" bs=4k iflag=direct status=none) "$2.raw"
}
# compare_corpus IMAGE-STEM...: each STEM.$FMT attaches and equals
# `qemu-img convert -O raw`, read buffered and with 4 KiB direct requests.
compare_corpus() {
	local img dev
	for img in "$@"; do
		if ! dev=$(attach "$img.$FMT" 2>&1); then
			fail "$img: attach: $dev"
			continue
		fi
		check "$img: equals qemu-img convert (buffered)" same "$dev" "$img.$FMT"
		check "$img: equals qemu-img convert (4 KiB direct)" same_direct "$dev" "$img.$FMT"
		check "$img: detach" detach "$dev"
	done
}

# losetup_refusals IMAGE: a plain attach stays raw and warns of the magic;
# read-write is refused with EROFS (logged with the device), direct I/O
# with EINVAL; nothing is left attached.
losetup_refusals() {
	local img=$1 out dev
	out=$(losetup-fmt -r -f --show "$img" 2>&1 >/dev/null)
	dev=$(losetup-fmt -j "$img" | cut -d: -f1)
	check_eq "a plain attach stays raw" raw "$(sysfs "$dev" format)"
	[[ "$out" == *"has the $FMT magic but is attached as raw"* ]] &&
		ok "and warns that the file has the $FMT magic" || fail "no $FMT magic warning: '$out'"
	detach "$dev"
	dmesg -C
	check_fails "read-write attach refused with EROFS" "Read-only file system" \
		losetup-fmt --file-fmt "$FMT" -f --show "$img"
	check "the refusal is logged with the device name" \
		sh -c "dmesg | grep -q 'lff[0-9]*: $FMT: writing is not supported; attach read-only'"
	check_fails "direct I/O refused with EINVAL" "Invalid argument" \
		losetup-fmt --file-fmt "$FMT" -r --direct-io=on -f --show "$img"
	check_eq "nothing left attached" "" "$(losetup-fmt -j "$img")"
}

# Malformed images through the raw LFF_CONFIGURE ioctl (lffctl.py), on the
# free device D that use_free_device picks.
use_free_device() {
	D=/dev/lff$("${CTL[@]}" ctl get-free)
	[ -b "$D" ] || { fail "no free device"; finish; }
}
NMARK=0
# mark: a line in the kernel log; logged TEXT looks for TEXT after it.
mark() { NMARK=$((NMARK + 1)); MARK="lff-$FMT-mark-$NMARK"; echo "$MARK" >/dev/kmsg; }
logged() { dmesg | sed -n "/$MARK\$/,\$p" | grep -qF -- "$1"; }
kattach() { "${CTL[@]}" configure "$D" "$FMT" --flags 1 --file "$1" --ro; }
# refused NAME ERRNO LOG FILE: the raw ioctl fails with ERRNO (lffctl.py
# names errno 95 ENOTSUP), "lffN: $FMT: LOG" is logged, the device is free.
refused() {
	local name=$1 want=$2 log=$3 f=$4
	mark
	check_fails "refused with $want: $name" "$want" kattach "$f"
	check "logged: $name" logged "$(basename "$D"): $FMT: $log"
	check_eq "free after: $name" "" "$(cat "/sys/block/$(basename "$D")/loop_file_fmt/format" 2>/dev/null)"
}
# bad NAME: prints the name of a fresh copy of sparse.$FMT to damage.
bad() { cp "sparse.$FMT" "bad-$1.$FMT"; echo "bad-$1.$FMT"; }

# qemu-img/qemu-io helpers for the qcow2 suites (sourced).
# q ARGS...: qemu-img, quiet.
q() { qemu-img "$@" >/dev/null; }
# io IMAGE COMMAND...: qemu-io commands on IMAGE; fails on any error text.
io() {
	local img=$1 out; shift
	local a=()
	for c in "$@"; do a+=(-c "$c"); done
	out=$(qemu-io "${a[@]}" "$img" 2>&1) || { echo "$out" >&2; return 1; }
	if grep -qiE 'error|fail|invalid' <<<"$out"; then echo "qemu-io $img: $out" >&2; return 1; fi
}

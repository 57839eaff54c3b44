# Helpers for the guest suites (sourced). Each check prints one TAP line;
# a suite exits non-zero if any of its checks failed.
set -u
SUITE=$(basename "$0" .sh)
FAILS=0
WORK=$(mktemp -d /tmp/lff-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

ok() { echo "ok - $SUITE: $*"; }
fail() { echo "not ok - $SUITE: $*"; FAILS=$((FAILS + 1)); }

# check DESCRIPTION COMMAND...: passes when COMMAND succeeds.
check() {
	local d=$1; shift
	local out
	if out=$("$@" 2>&1); then ok "$d"; else fail "$d"; echo "$out" | sed 's/^/#   /' | head -20; fi
}

# check_fails DESCRIPTION EXPECTED-TEXT COMMAND...: passes when COMMAND fails
# and its output contains EXPECTED-TEXT (an errno message, say).
check_fails() {
	local d=$1 want=$2; shift 2
	local out
	if out=$("$@" 2>&1); then
		fail "$d (succeeded)"; echo "$out" | sed 's/^/#   /' | head -10
	elif [[ "$out" != *"$want"* ]]; then
		fail "$d (wanted '$want')"; echo "$out" | sed 's/^/#   /' | head -10
	else
		ok "$d"
	fi
}

# check_eq DESCRIPTION EXPECTED ACTUAL
check_eq() {
	if [ "$2" = "$3" ]; then ok "$1"; else fail "$1: expected '$2', got '$3'"; fi
}

# kmemleak, on the debug kernel (scripts/test-debug). kmemleak_reset
# forgets what boot and earlier tests left; kmemleak_check DESCRIPTION
# passes when nothing allocated since was leaked by our modules.
KML=/sys/kernel/debug/kmemleak
have_kmemleak() { [ -w $KML ]; }
kmemleak_reset() {
	echo scan >$KML
	echo clear >$KML
}
kmemleak_check() {
	local out=$WORK/kmemleak.txt ours n
	# kmemleak reports objects unreferenced for 5 s and two scans.
	sleep 6
	echo scan >$KML
	echo scan >$KML
	cat $KML >"$out"
	n=$(grep -c '^unreferenced object' "$out")
	echo "# kmemleak: $n suspected leaks in all"
	# Ours: a frame in one of our modules, or an unsymbolized address (a
	# module that is gone, so ours: the test kernel has no other modules).
	ours=$(awk '/^unreferenced object/ {o = $0} /\[(loop_file_fmt|lff_kunit)|\] 0xffffffff/ {print o}' "$out" | sort -u)
	if [ -z "$ours" ]; then
		ok "$1"
	else
		fail "$1"; sed -n 1,60p "$out" | sed 's/^/#   /'
	fi
	echo clear >$KML
}

finish() { exit $((FAILS > 0)); }

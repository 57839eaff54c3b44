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

finish() { exit $((FAILS > 0)); }

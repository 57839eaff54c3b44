# Helpers for the boot tests (sourced): run scripts/qemu-boot/boot and check
# what the console showed. Each check prints a line; `boot_finish` exits
# non-zero if any failed.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
BOOT=$ROOT/scripts/qemu-boot/boot
BOOT_FAILS=0
BOOT_LOG=$(mktemp)
trap 'rm -f "$BOOT_LOG"' EXIT

# boot_run NAME [boot options]: boots, keeps the console in $BOOT_LOG and
# the exit status in $BOOT_RC, the wall time in $BOOT_SECS.
boot_run() {
	BOOT_NAME=$1; shift
	local t0=$SECONDS
	"$BOOT" --quiet --timeout 150 --log "$BOOT_LOG" "$@"
	BOOT_RC=$?
	BOOT_SECS=$((SECONDS - t0))
	echo "# $BOOT_NAME: exit $BOOT_RC in ${BOOT_SECS}s"
}

boot_ok() { echo "ok - $BOOT_NAME: $*"; }
boot_bad() {
	echo "not ok - $BOOT_NAME: $*"
	BOOT_FAILS=$((BOOT_FAILS + 1))
	BOOT_SHOW=1
}

# boot_expect DESCRIPTION ERE: a console line matches.
boot_expect() {
	if grep -Eq -- "$2" "$BOOT_LOG"; then boot_ok "$1"; else boot_bad "$1 (no line matching '$2')"; fi
}

# boot_root_expect FIELD=VALUE...: fields of the LFF-ROOT line that the
# switched-to system printed.
boot_root_expect() {
	local line f
	line=$(grep -m1 '^LFF-ROOT:' "$BOOT_LOG")
	for f in "$@"; do
		if [[ " ${line#LFF-ROOT: } " =~ \ ${f}\  ]]; then
			boot_ok "/ has $f"
		else
			boot_bad "/ should have $f: '${line:-no LFF-ROOT line}'"
		fi
	done
}

# After the checks of one boot: show the console when something failed.
boot_done() {
	if [ "${BOOT_SHOW:-0}" = 1 ]; then
		sed 's/^/#   /' "$BOOT_LOG" | tail -60
	fi
	BOOT_SHOW=0
}

boot_finish() { exit $((BOOT_FAILS > 0)); }

# The format the boot script picks by default (qcow2 once its driver is built).
boot_default_format() {
	if [ -n "$(find "$ROOT/drivers" -name loop_file_fmt_qcow2.ko -print -quit)" ]; then
		echo qcow2
	else
		echo raw
	fi
}

#!/bin/bash
# The KUnit suites of tests/kunit/: loads each test module listed in
# tests/kunit/Kbuild (KUnit runs its suites while the module loads), reads
# every new suite's KTAP results from debugfs and prints one TAP line per
# case, then a totals line. A failed or crashed case, a suite whose plan and
# results disagree, or a module that does not load fails the suite.
. "$(dirname "$0")/lib.sh"

KUNIT=/sys/kernel/debug/kunit
KBUILD=$LFF_TESTS/../kunit/Kbuild
suites=0 cases=0 passed=0 failed=0 skipped=0

# parse SUITE RESULTS-FILE: one TAP line per case; the case's diagnostics
# (the "# case: EXPECTATION FAILED ..." lines before it) under a failure.
parse() {
	local suite=$1 file=$2 plan=0 n=0 line diag=() status name
	while IFS= read -r line; do
		case "$line" in
		"    1.."*) plan=${line#    1..} ;;
		"    ok "* | "    not ok "*)
			n=$((n + 1)); cases=$((cases + 1))
			status=${line%% [0-9]*}; status=${status#    }
			name=${line#*ok [0-9]* }; name=${name%% *}
			if [ "$status" = ok ]; then
				if [[ "$line" == *"# SKIP"* ]]; then
					skipped=$((skipped + 1)); ok "$suite.$name # SKIP"
				else
					passed=$((passed + 1)); ok "$suite.$name"
				fi
			else
				failed=$((failed + 1)); fail "$suite.$name"
				[ ${#diag[@]} = 0 ] || printf '#   %s\n' "${diag[@]}"
			fi
			diag=() ;;
		"    KTAP version"* | "    # Subtest:"*) ;;
		"    "*) diag+=("${line#    }") ;;
		esac
	done <"$file"
	if [ "$n" = 0 ] || [ "$n" != "$plan" ]; then
		failed=$((failed + 1)); fail "$suite: plan 1..$plan but $n results (crashed?)"
	fi
}

modules=$(sed -n 's/^obj-m += \(lff_kunit_[a-z0-9_]*\)\.o$/\1/p' "$KBUILD")
[ -n "$modules" ] || { fail "no test module in $KBUILD"; finish; }
for m in $modules; do
	ls "$KUNIT" >"$WORK/before" 2>/dev/null
	if ! out=$(modprobe "$m" 2>&1); then
		failed=$((failed + 1)); fail "modprobe $m"; echo "$out" | sed 's/^/#   /'
		continue
	fi
	ls "$KUNIT" >"$WORK/after"
	new=$(comm -13 "$WORK/before" "$WORK/after")
	[ -n "$new" ] || { failed=$((failed + 1)); fail "$m: no suite ran"; }
	for s in $new; do
		suites=$((suites + 1))
		parse "$s" "$KUNIT/$s/results"
	done
	modprobe -r "$m" || { failed=$((failed + 1)); fail "modprobe -r $m"; }
done
echo "# kunit: $suites suites, $cases cases: $passed passed, $failed failed, $skipped skipped"
finish

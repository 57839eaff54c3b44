#!/bin/bash
# The drivers built into the kernel (scripts/qemu-boot/build-builtin: the
# series of scripts/intree/make-series applied to the test kernel, all
# format drivers and the KUnit suites =y): `make boot BUILTIN=1` boots the
# zstd-compressed qcow2 root through an initramfs that holds no module and
# loads none, and the KUnit suites, run at boot, report on the console
# (loglevel=7), parsed here as KTAP: one TAP line per case.
. "$(dirname "$0")/lib/boot.sh"

boot_run "built-in qcow2" --builtin --format auto --source disk --append loglevel=7
[ $BOOT_RC = 0 ] && boot_ok "boot exits 0" || boot_bad "boot exits $BOOT_RC"
boot_expect "the initramfs found the drivers built in, no module loaded" \
	'^lff: \[[0-9.]+\] drivers present \(formats: [a-z0-9 ]*qcow2[a-z0-9 ]*\); 0 modules loaded$'
boot_expect "and attached the image as qcow2" \
	"^lff: \[[0-9.]+\] attached /dev/vda as /dev/lff[0-9]+ \(format qcow2, read-only\)"
boot_expect "the switched-to system printed its marker" '^=== switched to the image root: LFF-BOOT-MARKER'
boot_root_expect "fstype=ext4" "format=qcow2" "device-ro=1" "backing=/dev/vda"

# KTAP on the console: "    # Subtest: SUITE", "    1..N", "    ok|not ok K
# CASE [# SKIP why]" with the diagnostics before a case, then "ok|not ok K
# SUITE" at the top level. Only the project's suites (lff_*).
suites=0 cases=0 passed=0 failed=0 skipped=0 suite= plan=0 n=0 diag=()
while IFS= read -r line; do
	case "$line" in
	"    # Subtest: lff_"*) suite=${line#    # Subtest: } plan=0 n=0 diag=() ;;
	"    1.."*) [ -z "$suite" ] || plan=${line#    1..} ;;
	"    ok "* | "    not ok "*)
		[ -n "$suite" ] || continue
		n=$((n + 1)) cases=$((cases + 1))
		name=${line#*ok [0-9]* }; name=${name%% *}
		if [[ "$line" == "    ok "*"# SKIP"* ]]; then
			skipped=$((skipped + 1)); boot_ok "kunit $suite.$name # SKIP ${line#*# SKIP }"
		elif [[ "$line" == "    ok "* ]]; then
			passed=$((passed + 1)); boot_ok "kunit $suite.$name"
		else
			failed=$((failed + 1)); boot_bad "kunit $suite.$name"
			[ ${#diag[@]} = 0 ] || printf '#   %s\n' "${diag[@]}"
		fi
		diag=() ;;
	"ok "*" lff_"* | "not ok "*" lff_"*)
		[ -n "$suite" ] || continue
		suites=$((suites + 1))
		if [ "$n" = 0 ] || [ "$n" != "$plan" ]; then
			failed=$((failed + 1)); boot_bad "kunit $suite: plan 1..$plan but $n results (crashed?)"
		fi
		suite= ;;
	"    "*) [ -z "$suite" ] || diag+=("${line#    }") ;;
	esac
done < <(sed 's/^\[ *[0-9.]*\] //' "$BOOT_LOG")
# As many suites as the test modules hold (kunit_suite! invocations).
want=$(cat "$ROOT"/tests/kunit/*.rs | grep -c '^kunit_suite!(')
[ "$suites" = "$want" ] && boot_ok "kunit: all $want suites ran at boot" ||
	boot_bad "kunit: $suites suites ran at boot, the test modules hold $want"
echo "# kunit built in: $suites suites, $cases cases: $passed passed, $failed failed, $skipped skipped"
boot_done

BOOT_NAME="built-in initramfs"
kdir=$("$ROOT/scripts/qemu-boot/build-builtin" --path)
ramfs=$(KDIR=$kdir "$ROOT/scripts/qemu-boot/build-initramfs" --no-build 2>/dev/null)
if [ ! -f "$ramfs" ]; then
	boot_bad "no initramfs for $kdir ('$ramfs')"
elif ! list=$(zcat "$ramfs" | cpio -t --quiet) || ! grep -qx init <<<"$list"; then
	boot_bad "$(basename "$ramfs") cannot be listed, or has no /init"
else
	kos=$(grep -c '\.ko$' <<<"$list")
	[ "$kos" = 0 ] && boot_ok "$(basename "$ramfs") holds no .ko" || boot_bad "$(basename "$ramfs") holds $kos .ko files"
fi
n=$(grep -cE '/loop_file_fmt/loop_file_fmt(_raw|_qcow2|_vdi|_vmdk)?\.ko$' "$kdir/modules.builtin")
[ "$n" = 5 ] && boot_ok "modules.builtin lists the core and the four format drivers" ||
	boot_bad "modules.builtin lists $n of the core and the four format drivers"
boot_finish

#!/bin/bash
# scripts/intree/make-series: the series applies with git am to the files it
# touches from the real 6.12 source (and a 7.3-numbered copy), and refuses
# a second application, an unsupported version and a non-kernel tree.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/scripts/qemu-boot/lib.sh"
MS=$ROOT/scripts/intree/make-series
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
fail=0
check() { # description command...
	local d=$1; shift
	if "$@"; then echo "ok - $d"; else echo "not ok - $d"; fail=1; fi
}
files="Makefile MAINTAINERS drivers/block/Kconfig drivers/block/Makefile"

# The files from the built 6.12 tree if cached, else from the tarball.
src=$(ls -d "$HOME"/.cache/loop-file-fmt/kernel-6.12.*-*/ 2>/dev/null | head -1)
mkdir -p "$t/base"
if [ -n "$src" ] && [ -f "$src/MAINTAINERS" ]; then
	(cd "$src" && cp --parents $files "$t/base/")
else
	tb=/usr/src/linux-source-6.12.tar.xz
	[ -f "$tb" ] || { echo "intree-series: neither a cached 6.12 tree nor $tb (make deps)"; exit 1; }
	top=$(tar -tJf "$tb" | head -1); top=${top%%/*}
	tar -xJf "$tb" -C "$t/base" --strip-components=1 $(for f in $files; do echo "$top/$f"; done) || exit 1
fi

mkrepo() { # DIR: a git repo of DIR's files
	git -C "$1" init -q && git -C "$1" add -A &&
		git -C "$1" -c user.name=t -c user.email=t@t.invalid commit -qm base
}
cp -r "$t/base" "$t/k612" && mkrepo "$t/k612" || exit 1

check "series is written (7 patches)" \
	bash -c '"$0" "$1" "$2" >/dev/null && [ "$(ls "$2"/*.patch | wc -l)" = 7 ]' "$MS" "$t/k612" "$t/series"
check "git am applies it" git -C "$t/k612" am -q "$t/series"/*.patch
check "7 commits, each signed off" bash -c \
	'[ "$(git -C "$0" log --format=%b HEAD~7..HEAD | grep -c "^Signed-off-by: $(git config user.name) ")" = 7 ]' "$t/k612"
kc=$t/k612/drivers/block/loop_file_fmt/Kconfig
check "Kconfig: the five drivers and the KUnit tests tristate, RUST && BLK_DEV, zlib/zstd selects" bash -c '
	for s in BLK_DEV_LOOP_FILE_FMT BLK_DEV_LOOP_FILE_FMT_RAW BLK_DEV_LOOP_FILE_FMT_QCOW2 BLK_DEV_LOOP_FILE_FMT_VDI BLK_DEV_LOOP_FILE_FMT_VMDK; do
		grep -q "^config $s\$" "$0" || exit 1; done
	[ "$(grep -c "^	tristate" "$0")" = 6 ] && grep -q "depends on RUST && BLK_DEV" "$0" &&
	grep -q "select ZLIB_INFLATE" "$0" && grep -q "select ZSTD_DECOMPRESS" "$0"' "$kc"
check "drivers/block: source line and obj line" bash -c '
	grep -qx "source \"drivers/block/loop_file_fmt/Kconfig\"" "$0/drivers/block/Kconfig" &&
	grep -q "^obj-\$(CONFIG_BLK_DEV_LOOP_FILE_FMT)[[:space:]]*+= loop_file_fmt/" "$0/drivers/block/Makefile" &&
	! grep -q "obj-m" "$0/drivers/block/loop_file_fmt/Makefile" &&
	[ -f "$0/include/uapi/linux/loop_file_fmt.h" ] && [ -f "$0/include/linux/loop_file_fmt.h" ] &&
	grep -q "^F:	drivers/block/loop_file_fmt/" "$0/MAINTAINERS" &&
	grep -q "#\[path = \"format/mod.rs\"\]" "$0/drivers/block/loop_file_fmt/qcow2/lff_qcow2.rs" &&
	[ -f "$0/drivers/block/loop_file_fmt/qcow2/format/mod.rs" ]' "$t/k612"
check "KUnit: Kconfig symbol, Makefile, #[path]s inside the driver directory" bash -c '
	d=$0/drivers/block/loop_file_fmt
	grep -q "^config BLK_DEV_LOOP_FILE_FMT_KUNIT_TEST\$" "$d/Kconfig" &&
	grep -q "depends on KUNIT && BLK_DEV_LOOP_FILE_FMT_QCOW2" "$d/Kconfig" &&
	grep -q "^obj-\$(CONFIG_BLK_DEV_LOOP_FILE_FMT_KUNIT_TEST) += kunit/" "$d/Makefile" &&
	grep -q "^obj-\$(CONFIG_BLK_DEV_LOOP_FILE_FMT_KUNIT_TEST) += lff_kunit_cache.o" "$d/kunit/Makefile" &&
	! grep -q "obj-m\|\.\./\.\./include" "$d/kunit/Makefile" &&
	[ -f "$d/kunit/vectors/cluster4k.zst" ] && [ -f "$d/kunit/wrappers/kunit.rs" ] &&
	! grep -h "#\[path" "$d"/kunit/*.rs | grep -q "formats/\|drivers/" &&
	# Top-level #[path]s are relative to kunit/, nested ones to a
	# directory below it: "../../x" and "../x" both mean the driver dir.
	for p in $(sed -n "s/.*#\[path = \"\([^\"]*\)\"\].*/\1/p" "$d"/kunit/*.rs | sort -u); do
		case $p in ../../*) f=$d/${p#../../} ;; ../*) f=$d/${p#../} ;; *) f=$d/kunit/$p ;; esac
		[ -f "$f" ] || { echo "# #[path] $p: no $f"; exit 1; }
	done' "$t/k612"
check "no build products in the series" bash -c \
	'! grep -h "^+++ b/" "$0"/*.patch | grep -E "\.(o|a|cmd|ko|mod|mod\.c)\$|/generated/"' "$t/series"

out=$("$MS" --apply "$t/k612" 2>&1); rc=$?
check "second --apply is refused, saying so" bash -c '[ "$0" != 0 ] && [[ "$1" == *"already has loop_file_fmt"* ]]' "$rc" "$out"
check "second git am fails and leaves HEAD" bash -c \
	'h=$(git -C "$0" rev-parse HEAD); ! git -C "$0" am -q "$1"/*.patch >/dev/null 2>&1;
	 git -C "$0" am --abort >/dev/null 2>&1; [ "$(git -C "$0" rev-parse HEAD)" = "$h" ]' "$t/k612" "$t/series"

cp -r "$t/base" "$t/k73" && sed -i 's/^VERSION = .*/VERSION = 7/; s/^PATCHLEVEL = .*/PATCHLEVEL = 3/' "$t/k73/Makefile" && mkrepo "$t/k73"
check "a 7.3 tree takes it (--apply)" "$MS" --apply "$t/k73"

cp -r "$t/base" "$t/k61" && sed -i 's/^PATCHLEVEL = .*/PATCHLEVEL = 1/' "$t/k61/Makefile" && mkrepo "$t/k61"
out=$("$MS" --apply "$t/k61" 2>&1); rc=$?
check "Linux 6.1 is refused, naming 6.12 and 7.3" bash -c \
	'[ "$0" != 0 ] && [[ "$1" == *"is Linux 6.1;"*"6.12 7.3"* ]] && [ "$(git -C "$2" rev-list --count HEAD)" = 1 ]' "$rc" "$out" "$t/k61"

mkdir "$t/other" && echo x >"$t/other/README" && mkrepo "$t/other"
out=$("$MS" --apply "$t/other" 2>&1); rc=$?
check "a non-kernel tree is refused" bash -c '[ "$0" != 0 ] && [[ "$1" == *"not a Linux source tree"* ]]' "$rc" "$out"

cp -r "$t/base" "$t/nogit"
out=$("$MS" --apply "$t/nogit" 2>&1); rc=$?
check "a tree that is not a git repo is refused" bash -c '[ "$0" != 0 ] && [[ "$1" == *"not a git repository"* ]]' "$rc" "$out"
exit $fail

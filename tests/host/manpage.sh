#!/bin/bash
# tools/losetup-fmt/man/losetup-fmt.8: `mandoc -T lint` finds nothing (at
# warning level), and every option `losetup-fmt --help` and
# `losetup-fmt map --help` list is in the rendered page.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PAGE=$ROOT/tools/losetup-fmt/man/losetup-fmt.8
command -v mandoc >/dev/null || { echo "manpage: mandoc missing (make deps installs it)"; exit 1; }
fail=0
if out=$(mandoc -T lint -W warning "$PAGE" 2>&1); then
	echo "ok - mandoc -T lint"
else
	echo "not ok - mandoc -T lint"; echo "$out"; fail=1
fi
text=$(mandoc -T ascii "$PAGE" | sed 's/.\x08//g')
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
cargo build --quiet -p losetup-fmt --manifest-path "$ROOT/Cargo.toml" --target-dir "$bin" || exit 1
help=$("$bin/debug/losetup-fmt" --help; "$bin/debug/losetup-fmt" map --help)
opts=$(grep -oE '^ +(-[A-Za-z], )?--[a-z][a-z-]*' <<<"$help" | grep -oE -- '--[a-z-]+|-[A-Za-z]' | sort -u)
[ -n "$opts" ] || { echo "not ok - no options found in --help"; exit 1; }
for o in $opts; do
	if grep -qE -- "(^|[^a-z-])$o([^a-z-]|\$)" <<<"$text"; then :; else
		echo "not ok - option $o is not in the man page"; fail=1
	fi
done
echo "checked $(wc -w <<<"$opts") options"
exit $fail

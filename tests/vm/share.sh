#!/bin/bash
# --share DIR is visible read-write at the same path in the guest.
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo hello >"$dir/from-host"
out=$("$(dirname "$0")/../../scripts/qemu-boot/vm-run" --no-build --share "$dir" -- \
	sh -c "ls $dir && echo written >$dir/from-guest") || exit 1
[[ "$out" == *from-host* ]] || { echo "guest did not list the share: $out"; exit 1; }
[ "$(cat "$dir/from-guest" 2>/dev/null)" = written ] || { echo "guest write not visible on the host"; exit 1; }

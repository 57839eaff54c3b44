#!/bin/bash
# vm-run propagates the guest command's exit status.
"$(dirname "$0")/../../scripts/qemu-boot/vm-run" --no-build -- sh -c 'exit 3'
rc=$?
[ $rc = 3 ] || { echo "expected exit 3, got $rc"; exit 1; }

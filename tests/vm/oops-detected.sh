#!/bin/bash
# A WARNING in the guest kernel log makes vm-run fail even when the command
# succeeds (the test writes the text into the log).
out=$("$(dirname "$0")/../../scripts/qemu-boot/vm-run" --no-build -- \
	sh -c 'echo "WARNING: CPU: 0 PID: 1 at injected by the test" >/dev/kmsg' 2>&1)
rc=$?
[ $rc != 0 ] || { echo "vm-run exited 0 despite a WARNING in the log"; exit 1; }
[[ "$out" == *"injected by the test"* ]] || { echo "the log part was not printed: $out"; exit 1; }

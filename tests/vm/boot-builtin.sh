#!/bin/bash
# The drivers built into the kernel (scripts/qemu-boot/build-builtin: the
# series of scripts/intree/make-series applied to the test kernel, all
# three =y): `make boot BUILTIN=1` boots the zstd-compressed qcow2 root
# through an initramfs that holds no module and loads none.
. "$(dirname "$0")/lib/boot.sh"

boot_run "built-in qcow2" --builtin --format auto --source disk
[ $BOOT_RC = 0 ] && boot_ok "boot exits 0" || boot_bad "boot exits $BOOT_RC"
boot_expect "the initramfs found the drivers built in, no module loaded" \
	'^lff: \[[0-9.]+\] drivers present \(formats: [a-z0-9 ]*qcow2[a-z0-9 ]*\); 0 modules loaded$'
boot_expect "and attached the image as qcow2" \
	"^lff: \[[0-9.]+\] attached /dev/vda as /dev/lff[0-9]+ \(format qcow2, read-only\)"
boot_expect "the switched-to system printed its marker" '^=== switched to the image root: LFF-BOOT-MARKER'
boot_root_expect "fstype=ext4" "format=qcow2" "device-ro=1" "backing=/dev/vda"
boot_done

BOOT_NAME="built-in initramfs"
kdir=$("$ROOT/scripts/qemu-boot/build-builtin" --path)
ramfs=$(KDIR=$kdir "$ROOT/scripts/qemu-boot/build-initramfs" --no-build 2>/dev/null)
kos=$(zcat "$ramfs" | cpio -t --quiet 2>/dev/null | grep -c '\.ko$')
[ "$kos" = 0 ] && boot_ok "$(basename "$ramfs") holds no .ko" || boot_bad "$(basename "$ramfs") holds $kos .ko files"
n=$(grep -cE '/loop_file_fmt/loop_file_fmt(_raw|_qcow2)?\.ko$' "$kdir/modules.builtin")
[ "$n" = 3 ] && boot_ok "modules.builtin lists the three drivers" ||
	boot_bad "modules.builtin lists $n of the three drivers"
boot_finish

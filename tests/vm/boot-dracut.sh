#!/bin/bash
# The dracut hooks (initramfs/dracut/) for real: gen-initramfs builds an
# initramfs for the test kernel with dracut and the hooks, as an installed
# system would, and it boots the Debian root image from the image bytes on a virtio disk.
. "$(dirname "$0")/lib/boot.sh"
fmt=$(boot_default_format)
image=root.qcow2
[ "$fmt" = qcow2 ] || image=root.ext4
if ! initrd=$("$ROOT/scripts/qemu-boot/gen-initramfs" dracut); then
	echo "not ok - gen-initramfs dracut failed"
	exit 1
fi
echo "ok - gen-initramfs dracut: $(basename "$initrd")"

boot_run "dracut $fmt disk" --initrd "$initrd" --format "$fmt" --source disk
[ $BOOT_RC = 0 ] && boot_ok "boot exits 0" || boot_bad "boot exits $BOOT_RC"
boot_expect "dracut's mount hook mounted it on /sysroot" '^lff: \[[0-9.]+\] mounting /dev/lff[0-9]+ .*on /sysroot'
boot_expect "the hook attached the image" "^lff: \[[0-9.]+\] attached .* as /dev/lff[0-9]+ \(format $fmt, read-only\)"
boot_expect "the switched-to system printed its marker" '^=== switched to the image root: LFF-BOOT-MARKER'
boot_expect "lsblk shows lffN mounted on /" '^lff[0-9]+ +[0-9]+:[0-9]+ .* /$'
boot_root_expect "fstype=ext4" "format=$fmt" "device-ro=1" "backing=/dev/vda"
boot_expect "/ is on /dev/lffN" '^LFF-ROOT: dev=/dev/lff[0-9]+ '
boot_done
boot_finish

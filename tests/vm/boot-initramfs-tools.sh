#!/bin/bash
# The initramfs-tools hooks (initramfs/initramfs-tools/) for real: gen-initramfs builds an
# initramfs for the test kernel with mkinitramfs and the hooks, as an installed
# system would, and it boots the Debian root image from an ext4 disk found
# by LABEL= (lff.src=LABEL=lff-images); a missing image fails at its step
# and powers off.
. "$(dirname "$0")/lib/boot.sh"
fmt=$(boot_default_format)
image=root.qcow2
[ "$fmt" = qcow2 ] || image=root.ext4
if ! initrd=$("$ROOT/scripts/qemu-boot/gen-initramfs" initramfs-tools); then
	echo "not ok - gen-initramfs initramfs-tools failed"
	exit 1
fi
echo "ok - gen-initramfs initramfs-tools: $(basename "$initrd")"

boot_run "initramfs-tools $fmt label" --initrd "$initrd" --format "$fmt" --source label
[ $BOOT_RC = 0 ] && boot_ok "boot exits 0" || boot_bad "boot exits $BOOT_RC"
boot_expect "initramfs-tools ran our local-top script" 'Begin: Running /scripts/local-top'
boot_expect "the hook attached the image" "^lff: \[[0-9.]+\] attached .* as /dev/lff[0-9]+ \(format $fmt, read-only\)"
boot_expect "the switched-to system printed its marker" '^=== switched to the image root: LFF-BOOT-MARKER'
boot_expect "lsblk shows lffN mounted on /" '^lff[0-9]+ +[0-9]+:[0-9]+ .* /$'
boot_root_expect "fstype=ext4" "format=$fmt" "device-ro=1" "backing=/run/lff/src/$image"
boot_expect "/ is on /dev/lffN" '^LFF-ROOT: dev=/dev/lff[0-9]+ '
boot_done

boot_run "initramfs-tools missing image" --no-build --initrd "$initrd" --format "$fmt" --source label \
	--append "lff.image=/no-such.qcow2"
[ $BOOT_RC = 1 ] && boot_ok "boot exits 1" || boot_bad "boot exits $BOOT_RC, wanted 1"
boot_expect "the failure names its step" "^lff: \*\*\* boot from the image FAILED at step 'image' \*\*\*"
boot_expect "lff.rescue=poweroff powers off" '^lff: lff.rescue=poweroff: powering off'
[ $BOOT_SECS -lt 60 ] && boot_ok "fails fast (${BOOT_SECS}s)" || boot_bad "took ${BOOT_SECS}s to fail"
boot_done
boot_finish

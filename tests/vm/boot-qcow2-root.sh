#!/bin/bash
# `make boot` non-interactively: the loop-file-fmt initramfs boots the
# zstd-compressed qcow2 Debian root (raw while the qcow2 driver is not
# built) from a virtio disk, switches root into it, and the system there
# prints its marker with / on /dev/lffN. Then the shared-directory source
# (9p, standing in for NFS/CIFS) with a tmpfs overlay (a writable root), and
# a missing image, which must fail at its step and power off, not hang.
. "$(dirname "$0")/lib/boot.sh"
fmt=$(boot_default_format)
image=root.qcow2
[ "$fmt" = qcow2 ] || image=root.ext4

boot_run "disk $fmt" --format "$fmt" --source disk
[ $BOOT_RC = 0 ] && boot_ok "boot exits 0" || boot_bad "boot exits $BOOT_RC"
boot_expect "the initramfs attached the image" "^lff: \[[0-9.]+\] attached /dev/vda as /dev/lff[0-9]+ \(format $fmt, read-only\)"
boot_expect "the switched-to system printed its marker" '^=== switched to the image root: LFF-BOOT-MARKER rootfs-[0-9a-f]+: Debian'
boot_expect "its /etc/os-release is Debian's" '^PRETTY_NAME="Debian GNU/Linux'
boot_expect "lsblk shows lffN mounted on /" '^lff[0-9]+ +[0-9]+:[0-9]+ .* /$'
boot_root_expect "fstype=ext4" "format=$fmt" "device-ro=1" "overlay=0" "root-writable=no" "backing=/dev/vda"
boot_expect "/ is on /dev/lffN" '^LFF-ROOT: dev=/dev/lff[0-9]+ '
boot_done

boot_run "9p overlay $fmt" --no-build --format "$fmt" --source 9p --overlay
[ $BOOT_RC = 0 ] && boot_ok "boot exits 0" || boot_bad "boot exits $BOOT_RC"
boot_expect "the source was mounted over 9p" '^lff: \[[0-9.]+\] mounting source lffimages \(9p\) on /run/lff/src'
boot_expect "the switched-to system printed its marker" '^=== switched to the image root: LFF-BOOT-MARKER'
boot_root_expect "format=$fmt" "overlay=1" "root-writable=yes" "backing=/run/lff/src/$image"
boot_expect "the image device is below the overlay" '^LFF-ROOT: dev=/dev/lff[0-9]+ '
boot_done

boot_run "missing image" --no-build --format "$fmt" --source 9p --append "lff.image=/no-such.qcow2"
[ $BOOT_RC = 1 ] && boot_ok "boot exits 1" || boot_bad "boot exits $BOOT_RC, wanted 1"
boot_expect "the failure names its step" "^lff: \*\*\* boot from the image FAILED at step 'image' \*\*\*"
boot_expect "and the reason" '^lff: /no-such.qcow2 not found in lffimages'
boot_expect "lff.rescue=poweroff powers off" '^lff-init: lff.rescue=poweroff: powering off'
[ $BOOT_SECS -lt 60 ] && boot_ok "fails fast (${BOOT_SECS}s)" || boot_bad "took ${BOOT_SECS}s to fail"
boot_done
boot_finish

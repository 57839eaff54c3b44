#!/bin/bash
# dracut module loop-file-fmt: boot from a disk image (qcow2, raw...)
# attached with losetup-fmt, the image named by lff.* kernel parameters
# (see lff-attach.sh or the README). Not included by default: add it with
# `dracut --add loop-file-fmt` or add_dracutmodules+=" loop-file-fmt " in
# /etc/dracut.conf.d/. Installed by initramfs/install into
# /usr/lib/dracut/modules.d/90loop-file-fmt/.
#
# Environment: LFF_LOSETUP_FMT, the losetup-fmt binary (default: on PATH,
# else /usr/local/sbin/losetup-fmt).

# called by dracut
check() {
    require_binaries "${LFF_LOSETUP_FMT:-losetup-fmt}" || return 1
    return 255
}

# called by dracut
depends() {
    echo base
    return 0
}

# called by dracut
installkernel() {
    # The core and every format driver this kernel has; overlay and the
    # network/shared file systems a source may need, where they are modules.
    local _mods
    _mods=$(find "${srcmods:?}" -name 'loop_file_fmt*.ko*' -printf '%f\n' | sed 's/\.ko.*//')
    if [[ $_mods ]]; then
        # shellcheck disable=SC2086
        hostonly='' instmods $_mods
    elif ! grep -q '/loop_file_fmt\.ko$' "$srcmods/modules.builtin" 2>/dev/null; then
        derror "loop-file-fmt: no loop_file_fmt modules in $srcmods, and not built in"
        return 1
    fi
    hostonly='' instmods overlay 9p 9pnet_virtio nfs nfsv4 cifs
    return 0
}

# called by dracut
install() {
    local _losetup
    _losetup=${LFF_LOSETUP_FMT:-$(command -v losetup-fmt || echo /usr/local/sbin/losetup-fmt)}
    inst_binary "$_losetup" /usr/sbin/losetup-fmt || return 1
    inst_multiple cat sed sleep mkdir mount
    inst_multiple -o blkid findfs mount.nfs mount.nfs4 mount.cifs nbd-client
    # lff.rescue=poweroff|reboot (dracut's base image has neither)
    inst_multiple -o sync poweroff reboot
    inst_simple "$moddir/lff-attach.sh" /lib/lff/lff-attach.sh
    inst_script "$moddir/lff-attach-job.sh" /sbin/lff-attach-job
    inst_hook cmdline 90 "$moddir/lff-parse.sh"
    inst_hook mount 90 "$moddir/lff-mount.sh"
}

#!/bin/sh
# dracut mount hook (sourced): mount the attached image on $NEWROOT, with a
# tmpfs overlay for lff.overlay=1; on a failure, report it and follow
# lff.rescue= (poweroff, reboot, or dracut's emergency shell).
if [ "$root" = lff ]; then
    . /lib/lff/lff-attach.sh
    lff_parse_cmdline
    if [ -e "$LFF_RUN/failed" ]; then
        { read -r LFF_STEP; read -r LFF_ERR; } <"$LFF_RUN/failed"
    elif [ -e "$LFF_RUN/dev" ]; then
        read -r LFF_DEV <"$LFF_RUN/dev"
        ismounted "$NEWROOT" || lff_mount_root "$NEWROOT" || printf '%s\n%s\n' "$LFF_STEP" "$LFF_ERR" >"$LFF_RUN/failed"
    else
        lff_fail "attach" "the attach job did not run (see the initqueue messages)"
        printf '%s\n%s\n' "$LFF_STEP" "$LFF_ERR" >"$LFF_RUN/failed"
    fi
    if [ -e "$LFF_RUN/failed" ]; then
        lff_report_failure
        case $LFF_RESCUE in
        # -f twice: at once, without a service manager (systemd's
        # poweroff would otherwise ask PID 1, which is dracut's shell).
        poweroff) echo "lff: lff.rescue=poweroff: powering off"; sync; poweroff -f -f ;;
        reboot) echo "lff: lff.rescue=reboot: rebooting"; sync; reboot -f -f ;;
        esac
        die "loop-file-fmt: boot from the image failed at step '$LFF_STEP'"
    fi
fi

#!/bin/sh
# dracut initqueue job (the online queue for a network source, see
# lff-parse.sh): mount the source, attach the image; leaves
# /run/lff/dev (the device) or /run/lff/failed (step and reason).
. /lib/lff/lff-attach.sh
lff_parse_cmdline
! lff_net_source || lff_net_report
if lff_mount_source && lff_attach; then
    exit 0
fi
printf '%s\n%s\n' "$LFF_STEP" "$LFF_ERR" >"$LFF_RUN/failed"
exit 0

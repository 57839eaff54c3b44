#!/bin/sh
# dracut initqueue job: mount the source, attach the image; leaves
# /run/lff/dev (the device) or /run/lff/failed (step and reason).
. /lib/lff/lff-attach.sh
lff_parse_cmdline
case $LFF_SRCFSTYPE in
nfs|nfs4|cifs|smb3)
    # Network sources need the network up: ip=... rd.neednet=1 and the
    # dracut network module.
    ;;
esac
if lff_mount_source && lff_attach; then
    exit 0
fi
printf '%s\n%s\n' "$LFF_STEP" "$LFF_ERR" >"$LFF_RUN/failed"
exit 0

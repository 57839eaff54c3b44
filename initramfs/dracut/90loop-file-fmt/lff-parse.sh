#!/bin/sh
# dracut cmdline hook (sourced): with lff.image= (or lff.src=nbd:...), the root is the image
# (root=lff, or no root= at all). The attach runs from the initqueue
# (lff-attach-job), the mount from the mount hook (lff-mount.sh).
. /lib/lff/lff-attach.sh
lff_parse_cmdline
if lff_wanted; then
    [ -n "$root" ] || root=lff
    if [ "$root" = lff ]; then
        rootok=1
        # Not --settled: the attach waits for its devices itself
        # (lff.timeout=), and must not depend on udev settling.
        /sbin/initqueue --onetime --unique --name lff-attach /sbin/lff-attach-job
        echo '[ -e /run/lff/dev ] || [ -e /run/lff/failed ]' >"$hookdir/initqueue/finished/lff.sh"
    fi
fi

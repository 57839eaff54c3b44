#!/bin/sh
# dracut cmdline hook (sourced): with lff.image= (or lff.src=nbd:...), the
# root is the image (root=lff, or no root= at all). The attach runs from
# the initqueue (lff-attach-job), the mount from the mount hook
# (lff-mount.sh).
#
# A network source (NFS, CIFS, NBD) needs dracut's network module
# (`dracut --add network`, package dracut-network) and ip= on the command
# line: rd.neednet=1 is implied, and the attach waits in the online queue
# until an interface has its address. If none comes up, the timeout hook
# records the failed step, so the mount hook reports it and follows
# lff.rescue= instead of dracut's generic "could not boot".
. /lib/lff/lff-attach.sh
lff_parse_cmdline
if lff_wanted; then
    [ -n "$root" ] || root=lff
    if [ "$root" = lff ]; then
        rootok=1
        # Not --settled: the attach waits for its devices itself
        # (lff.timeout=), and must not depend on udev settling.
        if lff_net_source; then
            if [ ! -e /lib/net-lib.sh ]; then
                lff_fail "network" "lff.src=$LFF_SRC is a network source, but this initramfs has no network module (dracut --add network)"
                printf '%s\n%s\n' "$LFF_STEP" "$LFF_ERR" >"$LFF_RUN/failed"
            else
                echo "rd.neednet=1" >/etc/cmdline.d/lff-neednet.conf
                /sbin/initqueue --onetime --online --unique --name lff-attach /sbin/lff-attach-job
                # dracut runs timeout hooks after 2/3 of rd.retry= (default
                # 180 s). Once the failure is recorded, the network's own
                # finished hooks (wait for an interface) must not hold the
                # boot until dracut's "Could not boot".
                cat >"$hookdir/initqueue/timeout/lff.sh" <<-'TIMEOUT'
		if [ ! -e /run/lff/dev ] && [ ! -e /run/lff/failed ]; then
		    printf 'network\n%s\n' "no network interface came up for ip=$(getarg ip=) within rd.retry (no DHCP answer?)" >/run/lff/failed
		    rm -f "$hookdir"/initqueue/finished/wait-*.sh "$hookdir"/initqueue/finished/dhclient-*.sh
		fi
		TIMEOUT
            fi
        else
            /sbin/initqueue --onetime --unique --name lff-attach /sbin/lff-attach-job
        fi
        echo '[ -e /run/lff/dev ] || [ -e /run/lff/failed ]' >"$hookdir/initqueue/finished/lff.sh"
    fi
fi

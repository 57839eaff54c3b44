#!/bin/bash
# `make netboot` non-interactively: PXE (iPXE, QEMU's DHCP and TFTP, HTTP)
# into the loop-file-fmt initramfs, which brings the network up by DHCP and
# boots the zstd-compressed qcow2 root into Debian's systemd
# (multi-user.target) from real servers on 127.0.0.1:
# nfs-ganesha (NFSv4.1), smbd (SMB 3.1.1) and qemu-nbd (the image's raw
# bytes). Then a qcow2 overlay whose backing file lies beside it on the
# NFS share, NFS and NBD through the initramfs-tools hook, and the failures, each
# at its named step within its timeout: server down, export missing, image missing, wrong SMB password, wrong NBD
# export name, no DHCP answer.
. "$(dirname "$0")/lib/boot.sh"
BOOT=$ROOT/scripts/netboot/netboot
SUMMARY=$(mktemp)
STORE=$(mktemp -d)
# The servers' state directories go under a directory of this run, so
# that the leftover check sees only this run's servers, not those of
# another netboot running on the machine at the same time.
NB_TMP=$(mktemp -d)
export TMPDIR=$NB_TMP
trap 'rm -rf "$BOOT_LOG" "$SUMMARY" "$STORE" "$NB_TMP"' EXIT

# nb_run NAME [netboot options]: like boot_run, and the summary line.
# QEMU's limit is generous (300 s; on an idle machine a boot takes 15-40 s):
# under TCG on a loaded host the guest stalls for seconds at a time
# (the kernel logs "clocksource: Long readout interval"), most after
# dracut's switch_root, and a dracut boot that was still making progress
# once ran out of a 150 s limit in CI. A hang still fails; the failure
# cases check their own, much shorter, time limits.
nb_run() {
	BOOT_NAME=$1; shift
	local t0=$SECONDS
	"$BOOT" --quiet --timeout "${NB_TIMEOUT:-300}" --log "$BOOT_LOG" "$@" >"$SUMMARY" 2>&1
	BOOT_RC=$?
	BOOT_SECS=$((SECONDS - t0))
	echo "# $BOOT_NAME: exit $BOOT_RC in ${BOOT_SECS}s: $(tail -1 "$SUMMARY")"
}
nb_summary_expect() { # description ERE
	if tail -1 "$SUMMARY" | grep -Eq -- "$2"; then boot_ok "$1"; else boot_bad "$1 (summary: $(tail -1 "$SUMMARY"))"; fi
}
# No server of this test may outlive its run.
nb_none_left() {
	local left
	left=$(pgrep -a -f "$NB_TMP/lff-netboot\\." || true)
	[ -z "$left" ] && boot_ok "no server left running" || boot_bad "left running: $left"
}
pxe_checks() {
	# iPXE prints on the VGA console, which is off: the HTTP bytes on the
	# link (and no -kernel on QEMU's command line) show the PXE path.
	boot_expect "the initramfs brought the network up by DHCP" '^lff: \[[0-9.]+\] network: 10\.0\.2\.15/24 on eth0, via 10\.0\.2\.2'
	nb_summary_expect "the kernel and initramfs came over HTTP" 'PXE: [1-9][0-9]{3,} KiB kernel\+initramfs over HTTP'
}

for src in nfs cifs nbd; do
	nb_run "$src qcow2 systemd" --source "$src" --init systemd
	[ $BOOT_RC = 0 ] && boot_ok "netboot exits 0" || boot_bad "netboot exits $BOOT_RC"
	pxe_checks
	boot_expect "the switched-to Debian printed its marker" '^=== switched to the image root: LFF-BOOT-MARKER rootfs-[0-9a-f]+: Debian'
	boot_expect "from Debian's systemd at multi-user.target, no unit failed" '^LFF-INIT: systemd reached active multi-user.target; 0 failed units'
	boot_expect "the client counted the bytes it fetched" "^LFF-NET: .*$src-bytes-read=[1-9][0-9]{6,}"
	nb_summary_expect "the summary has the client's count" "client: $src-bytes-read=[1-9]"
	boot_root_expect "fstype=ext4" "format=qcow2" "device-ro=1" "root-writable=no"
	case $src in
	nbd)
		boot_expect "nbd-client connected the export" '^lff: \[[0-9.]+\] connected /dev/nbd0: [0-9]+ MiB from 10\.0\.2\.2:[0-9]+ export root$'
		boot_expect "and exited: no daemon in the data path" '^lff: \[[0-9.]+\] nbd-client has exited: the kernel holds the connection'
		boot_root_expect "backing=/dev/nbd0" ;;
	*)
		boot_expect "the store was mounted" "^lff: \[[0-9.]+\] mounting source .* \($( [ $src = nfs ] && echo nfs4 || echo cifs)\) on /run/lff/src"
		boot_root_expect "backing=/run/lff/src/root.qcow2" ;;
	esac
	nb_summary_expect "the summary names the source and the bytes fetched" "^netboot: OK: $src, qcow2 image root\.qcow2 on /dev/lff[0-9]+ .*: [1-9][0-9]* KiB of the image over $src in [1-9] connection"
	nb_summary_expect "and the time to the marker" 'marker [0-9.]+ s after power-on'
	nb_none_left
	boot_done
done

# A per-lab overlay over one base image, both on the share.
imgdir=$("$ROOT/scripts/qemu-boot/build-rootfs" --path)
ln "$imgdir/root.qcow2" "$STORE/base.qcow2" 2>/dev/null || cp "$imgdir/root.qcow2" "$STORE/base.qcow2"
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$STORE/lab.qcow2"
nb_run "nfs overlay on a backing file" --no-build --init demo --source nfs --store "$STORE" --image lab.qcow2
[ $BOOT_RC = 0 ] && boot_ok "netboot exits 0" || boot_bad "netboot exits $BOOT_RC"
boot_expect "the marker of the base image" '^=== switched to the image root: LFF-BOOT-MARKER'
boot_root_expect "format=qcow2" "backing=/run/lff/src/lab.qcow2"
boot_done

# Copy-first (lff.copy=ram), the alternative some labs use: the whole
# image into RAM over NBD, the copy attached, the NBD device let go.
size=$(stat -c %s "$imgdir/root.qcow2")
nb_run "nbd copy-first" --no-build --init demo --source nbd --append "lff.copy=ram"
[ $BOOT_RC = 0 ] && boot_ok "netboot exits 0" || boot_bad "netboot exits $BOOT_RC"
boot_expect "the whole image was copied" "^lff: \[[0-9.]+\] copied $size bytes into RAM in [0-9.]+ s\$"
boot_expect "the NBD device was let go" '^lff: \[[0-9.]+\] disconnected /dev/nbd0: the image lives in RAM$'
boot_root_expect "format=qcow2" "backing=/run/lff/ram/image"
wire=$(tail -1 "$SUMMARY" | sed -n 's/.*: \([0-9]*\) KiB of the image over nbd .*/\1/p')
[ "${wire:-0}" -ge $((size / 1024)) ] && [ "${wire:-0}" -le $((size / 1024 + 1024)) ] &&
	boot_ok "every byte of the image came over NBD (${wire} KiB)" ||
	boot_bad "the link carried ${wire:-no} KiB of the image, not its $((size / 1024)) KiB"
nb_none_left
boot_done

# NFS through the initramfs-tools hook: its own network bring-up (klibc
# ipconfig for ip=dhcp, configure_networking), our local-top script.
if itr=$("$ROOT/scripts/qemu-boot/gen-initramfs" initramfs-tools --no-build); then
	nb_run "initramfs-tools nfs systemd" --no-build --initrd "$itr" --source nfs --init systemd
	[ $BOOT_RC = 0 ] && boot_ok "netboot exits 0" || boot_bad "netboot exits $BOOT_RC"
	boot_expect "initramfs-tools ran our local-top script" 'Begin: Running /scripts/local-top'
	boot_expect "its ipconfig got the lease" '^IP-Config: [a-z0-9]+ complete \(dhcp from 10\.0\.2\.2\)'
	boot_expect "the hook mounted the NFS store" '^lff: \[[0-9.]+\] mounting source 10\.0\.2\.2:/img \(nfs4\) on /run/lff/src'
	boot_expect "systemd reached multi-user.target" '^LFF-INIT: systemd reached active multi-user.target; 0 failed units'
	boot_root_expect "format=qcow2" "backing=/run/lff/src/root.qcow2"
	nb_summary_expect "the summary" '^netboot: OK: nfs, qcow2 image root\.qcow2 on /dev/lff[0-9]+ .*init systemd'
	nb_none_left
	boot_done
	# NBD through the same hook: nbd-client came along, the kernel owns
	# the connection after switch_root.
	nb_run "initramfs-tools nbd" --no-build --initrd "$itr" --source nbd --init demo
	[ $BOOT_RC = 0 ] && boot_ok "netboot exits 0" || boot_bad "netboot exits $BOOT_RC"
	boot_expect "its ipconfig got the lease" '^IP-Config: [a-z0-9]+ complete \(dhcp from 10\.0\.2\.2\)'
	boot_expect "the hook connected the NBD export" '^lff: \[[0-9.]+\] connected /dev/nbd0: [0-9]+ MiB from 10\.0\.2\.2:[0-9]+ export root$'
	boot_expect "and nbd-client exited" '^lff: \[[0-9.]+\] nbd-client has exited: the kernel holds the connection'
	boot_root_expect "format=qcow2" "backing=/dev/nbd0"
	nb_summary_expect "the summary" '^netboot: OK: nbd, qcow2 image root\.qcow2 on /dev/lff[0-9]+ '
	nb_none_left
	boot_done
else
	BOOT_NAME="initramfs-tools nfs"; boot_bad "gen-initramfs initramfs-tools failed"
fi

# NFS through the dracut module: dracut's network module brings the
# network up (dhclient for ip=dhcp), our attach job waits in its online
# queue; a NIC nothing answers on ends at step 'network' through our
# timeout hook, not dracut's generic "Could not boot". The hook runs in
# dracut's main loop, which each dhclient attempt blocks for its 60 s
# (Debian's dhclient has no --timeout, so rd.net.timeout.dhcp does
# nothing): eth0 twice and sit0 make it about 170 s on an idle machine.
if drc=$("$ROOT/scripts/qemu-boot/gen-initramfs" dracut --no-build); then
	nb_run "dracut nfs" --no-build --initrd "$drc" --source nfs --init demo
	[ $BOOT_RC = 0 ] && boot_ok "netboot exits 0" || boot_bad "netboot exits $BOOT_RC"
	boot_expect "dracut's network module got the lease before the job ran" '^lff: \[[0-9.]+\] network: 10\.0\.2\.15/24 on eth0, via 10\.0\.2\.2$'
	boot_expect "the job mounted the NFS store" '^lff: \[[0-9.]+\] mounting source 10\.0\.2\.2:/img \(nfs4\) on /run/lff/src'
	boot_expect "the switched-to root printed its marker" '^=== switched to the image root: LFF-BOOT-MARKER'
	boot_root_expect "format=qcow2" "backing=/run/lff/src/root.qcow2"
	nb_summary_expect "the summary" '^netboot: OK: nfs, qcow2 image root\.qcow2 on /dev/lff[0-9]+ '
	nb_none_left
	boot_done
	NB_TIMEOUT=330 nb_run "dracut no DHCP answer" --no-build --initrd "$drc" --source nfs --no-dhcp --append "rd.retry=30"
	[ $BOOT_RC = 1 ] && boot_ok "netboot exits 1" || boot_bad "netboot exits $BOOT_RC, wanted 1"
	boot_expect "fails at step 'network'" "^lff: \*\*\* boot from the image FAILED at step 'network' \*\*\*"
	boot_expect "with the reason" 'no network interface came up for ip=dhcp'
	boot_expect "and powers off" '^lff: lff\.rescue=poweroff: powering off'
	[ $BOOT_SECS -le 300 ] && boot_ok "within 300s (${BOOT_SECS}s)" || boot_bad "took ${BOOT_SECS}s, more than 300s"
	nb_none_left
	boot_done
else
	BOOT_NAME="dracut nfs"; boot_bad "gen-initramfs dracut failed"
fi

# Failures: the named step, well within the timeout, the servers gone.
fail_case() { # name step reason-ERE max-seconds netboot-options...
	local name=$1 stepname=$2 reason=$3 max=$4
	shift 4
	nb_run "$name" --no-build --append "lff.timeout=10" "$@"
	[ $BOOT_RC = 1 ] && boot_ok "netboot exits 1" || boot_bad "netboot exits $BOOT_RC, wanted 1"
	boot_expect "fails at step '$stepname'" "^lff: \*\*\* boot from the image FAILED at step '$stepname' \*\*\*"
	boot_expect "with the reason" "$reason"
	boot_expect "and powers off" '^lff-init: lff.rescue=poweroff: powering off'
	nb_summary_expect "the summary says so" "^netboot: FAILED: .*FAILED at step '$stepname'"
	[ $BOOT_SECS -le "$max" ] && boot_ok "within ${max}s (${BOOT_SECS}s)" || boot_bad "took ${BOOT_SECS}s, more than ${max}s"
	nb_none_left
	boot_done
}
fail_case "nfs server down" source '^lff: cannot mount 10\.0\.2\.2:/img \(type nfs4\)' 90 --source nfs --server-down
fail_case "nfs export missing" source '^lff: cannot mount 10\.0\.2\.2:/no-such-export \(type nfs4\).*No such file' 40 --source nfs --export /no-such-export
fail_case "image missing" image '^lff: /no-such\.qcow2 not found in 10\.0\.2\.2:/img' 60 --source nfs --image no-such.qcow2
fail_case "smb wrong password" source '^lff: cannot mount //10\.0\.2\.2/img \(type cifs\).*Permission denied' 40 --source cifs --smb-pass wrong-password
fail_case "nbd export name wrong" source '^lff: nbd-client -N no-such-export 10\.0\.2\.2 [0-9]+ /dev/nbd0: ' 60 --source nbd --export no-such-export
fail_case "nbd server down" source '^lff: nbd-client -N root 10\.0\.2\.2 [0-9]+ /dev/nbd0: ' 90 --source nbd --server-down
fail_case "copy-first, unknown mode" parameters '^lff: lff\.copy=disk: the one copy mode is lff\.copy=ram$' 60 --source nfs --init demo --append "lff.copy=disk"
fail_case "no DHCP answer" network '^lff: no DHCP answer on eth0 within 10s' 60 --source nfs --no-dhcp
boot_finish

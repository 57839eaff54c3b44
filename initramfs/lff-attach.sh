# loop-file-fmt boot library: find the disk image named on the kernel command
# line, attach it with losetup-fmt and mount it as the new root.
#
# Sourced (POSIX sh; busybox ash, dash and bash all run it) by
#   - the project's own initramfs /init    (initramfs/init)
#   - the initramfs-tools local-top script (initramfs/initramfs-tools/)
#   - the dracut module                    (initramfs/dracut/90loop-file-fmt/)
#
# Kernel command line (see README, "Network boot with loop-file-fmt"):
#   lff.image=IMAGE       the image: a block device holding the image bytes
#                         (/dev/vda, LABEL=..., UUID=...), or a file path,
#                         inside lff.src when that is given
#   lff.src=SOURCE        file system to mount first, read-only, to find
#                         IMAGE in: a device (/dev/vdb, LABEL=x, UUID=y), a
#                         9p tag, an NFS server:/export, a CIFS //host/share,
#                         or an NBD export nbd:HOST[:PORT][/EXPORT] whose
#                         bytes are the image (connected with nbd-client
#                         over netlink: the kernel holds the socket, no
#                         process stays behind, so it survives switch_root)
#   lff.srcfstype=TYPE    its type (default: probed for devices; required
#                         for network sources: 9p, nfs, cifs, ...)
#   lff.srcflags=OPTS     its mount options (9p default:
#                         trans=virtio,version=9p2000.L,msize=512000; for
#                         nfs/nfs4 and cifs with an IPv4 server, addr=/ip=
#                         are added, which the kernel needs without a
#                         mount helper)
#   lff.format=FMT        qcow2, raw, or auto (qcow2 magic probed; default;
#                         refused together with lff.ro=0)
#   lff.ro=0|1            attach and mount read-only (default 1)
#   lff.fstype=TYPE       file system inside the image (default: probed)
#   lff.flags=OPTS        extra mount options for it
#   lff.overlay=1         a tmpfs overlay on top: a writable root whose
#                         changes live in RAM
#   lff.copy=ram          copy-first: read the whole image into a tmpfs
#                         first, attach the copy and let the source go
#                         (unmounted, NBD disconnected); the one file is
#                         copied, so a qcow2 chain must be flattened
#   lff.timeout=SEC       how long to wait for the source/image (default 30)
#   lff.rescue=shell|poweroff|reboot   what a failure does (default shell)
#
# After lff_parse_cmdline, lff_mount_source, lff_attach and lff_mount_root
# (each returns non-zero with LFF_STEP and LFF_ERR set on failure):
#   LFF_DEV   the attached device (/dev/lffN), LFF_FMT its format.
# Source mounts live under /run/lff, so moving /run into the new root keeps
# them reachable (initramfs-tools and dracut do that move).

LFF_RUN=/run/lff
LFF_LOSETUP=${LFF_LOSETUP:-losetup-fmt}

lff_log() {
	read -r _up _ </proc/uptime 2>/dev/null || _up='?'
	echo "lff: [$_up] $*"
}

# The control node's list of registered formats (space separated).
LFF_FORMATS=/sys/class/misc/loop-file-fmt-control/formats
# lff_have_format FMT: the core is there and FMT is registered (auto: both
# raw and qcow2, what auto would load).
lff_have_format() {
	[ -r "$LFF_FORMATS" ] || return 1
	case $1 in auto) set -- raw qcow2 ;; esac
	for _f; do
		case " $(cat "$LFF_FORMATS") " in *" $_f "*) ;; *) return 1 ;; esac
	done
}

# lff_wanted: the command line asks for a boot from an image (lff.image=,
# or an NBD source, whose export is the image).
lff_wanted() {
	[ -n "$LFF_IMAGE" ] && return 0
	case $LFF_SRC in nbd:*) return 0 ;; esac
	return 1
}

# lff_net_source: the source is reached over the network (NFS, CIFS/SMB,
# NBD), so the initramfs must bring the network up before the attach.
lff_net_source() {
	case $LFF_SRCFSTYPE in nfs|nfs4|cifs|smb3) return 0 ;; esac
	case $LFF_SRC in nbd:*) return 0 ;; esac
	return 1
}

# Records a failed step; always returns 1.
lff_fail() { # step message
	LFF_STEP=$1
	LFF_ERR=$2
	return 1
}

lff_parse_cmdline() {
	LFF_IMAGE='' LFF_SRC='' LFF_SRCFSTYPE='' LFF_SRCFLAGS='' LFF_FORMAT=auto LFF_RO=1
	LFF_FSTYPE='' LFF_FLAGS='' LFF_OVERLAY=0 LFF_COPY='' LFF_TIMEOUT=30 LFF_RESCUE=shell
	LFF_DEV='' LFF_FMT='' LFF_STEP='' LFF_ERR='' LFF_NBD_DEV='' LFF_IP=''
	mkdir -p "$LFF_RUN"
	# shellcheck disable=SC2013,SC2034
	for x in $(cat /proc/cmdline); do
		case $x in
		lff.image=*) LFF_IMAGE=${x#lff.image=} ;;
		lff.src=*) LFF_SRC=${x#lff.src=} ;;
		lff.srcfstype=*) LFF_SRCFSTYPE=${x#lff.srcfstype=} ;;
		lff.srcflags=*) LFF_SRCFLAGS=${x#lff.srcflags=} ;;
		lff.format=*) LFF_FORMAT=${x#lff.format=} ;;
		lff.ro=*) LFF_RO=${x#lff.ro=} ;;
		lff.fstype=*) LFF_FSTYPE=${x#lff.fstype=} ;;
		lff.flags=*) LFF_FLAGS=${x#lff.flags=} ;;
		lff.overlay=*) LFF_OVERLAY=${x#lff.overlay=} ;;
		lff.copy=*) LFF_COPY=${x#lff.copy=} ;;
		lff.timeout=*) LFF_TIMEOUT=${x#lff.timeout=} ;;
		lff.rescue=*) LFF_RESCUE=${x#lff.rescue=} ;;
		ip=*) LFF_IP=${x#ip=} ;;
		esac
	done
	case $LFF_RO in 0|no|off) LFF_RO=0 ;; *) LFF_RO=1 ;; esac
	case $LFF_OVERLAY in 1|yes|on|tmpfs) LFF_OVERLAY=1 ;; *) LFF_OVERLAY=0 ;; esac
	case $LFF_TIMEOUT in ''|*[!0-9]*) LFF_TIMEOUT=30 ;; esac
}

# Prints the block device SPEC names (a path, LABEL=, UUID=, PARTUUID=,
# PARTLABEL=) if it exists now.
lff_resolve_dev() { # spec
	case $1 in
	/*) [ -b "$1" ] && echo "$1" ;;
	*=*) findfs "$1" 2>/dev/null || blkid -l -o device -t "$1" 2>/dev/null ;;
	*) return 1 ;;
	esac
}

# Waits up to LFF_TIMEOUT seconds for a block device; prints its path.
lff_wait_dev() { # spec what
	_n=0
	while ! _d=$(lff_resolve_dev "$1") || [ -z "$_d" ]; do
		if [ $_n -ge $((LFF_TIMEOUT * 4)) ]; then
			return 1
		fi
		[ $_n != 4 ] || lff_log "waiting up to ${LFF_TIMEOUT}s for $2 $1" >&2
		sleep 0.25 2>/dev/null || sleep 1
		_n=$((_n + 1))
	done
	echo "$_d"
}

lff_is_dev_spec() {
	case $1 in /dev/*|LABEL=*|UUID=*|PARTUUID=*|PARTLABEL=*) return 0 ;; esac
	return 1
}

# Mounts lff.src (if given) read-only at $LFF_RUN/src.
lff_mount_source() {
	[ -n "$LFF_SRC" ] || return 0
	case $LFF_SRC in nbd:*) lff_nbd_connect; return ;; esac
	_src=$LFF_SRC _type=$LFF_SRCFSTYPE _opts=$LFF_SRCFLAGS
	if lff_is_dev_spec "$_src"; then
		_src=$(lff_wait_dev "$LFF_SRC" "source device") ||
			lff_fail "source" "source device $LFF_SRC did not appear within ${LFF_TIMEOUT}s" || return 1
		[ -n "$_type" ] || _type=$(lff_probe_fstype "$_src")
	elif [ -z "$_type" ]; then
		lff_fail "source" "lff.src=$LFF_SRC is not a device: give its type with lff.srcfstype= (9p, nfs, cifs...)"
		return 1
	fi
	if [ "$_type" = 9p ] && [ -z "$_opts" ]; then
		_opts=trans=virtio,version=9p2000.L,msize=512000
	fi
	# Without mount.nfs or mount.cifs the kernel wants the server's address
	# as an option.
	case $_type in
	nfs|nfs4) _host=${_src%%:*} _ao=addr= ;;
	cifs|smb3) _host=${_src#//}; _host=${_host%%/*} _ao=ip= ;;
	*) _host='' _ao='' ;;
	esac
	if lff_is_ipv4 "$_host"; then
		case ,$_opts, in *,$_ao*) ;; *) _opts=${_opts:+$_opts,}$_ao$_host ;; esac
	fi
	if [ "$LFF_RO" = 1 ]; then _opts=ro${_opts:+,$_opts}; else _opts=rw${_opts:+,$_opts}; fi
	mkdir -p "$LFF_RUN/src"
	lff_log "mounting source $_src${_type:+ ($_type)} on $LFF_RUN/src"
	# Network sources may need a moment (a 9p transport, a DHCP lease):
	# retry until the timeout.
	_n=0
	while ! mount ${_type:+-t "$_type"} -o "$_opts" "$_src" "$LFF_RUN/src" 2>"$LFF_RUN/mount.err"; do
		_n=$((_n + 1))
		# A server that answered no (wrong credentials, no such export)
		# will not change its mind: fail at once.
		_final=0
		case $_type in nfs|nfs4|cifs|smb3)
			! grep -q -e 'Permission denied' -e 'No such file' "$LFF_RUN/mount.err" || _final=1 ;;
		esac
		if [ $_final = 1 ] || [ $_n -ge "$LFF_TIMEOUT" ]; then
			lff_fail "source" "cannot mount $_src${_type:+ (type $_type)} with -o $_opts: $(cat "$LFF_RUN/mount.err")"
			return 1
		fi
		sleep 1
	done
}

# Finds the image, loads the drivers and attaches it: sets LFF_DEV, LFF_FMT.
lff_attach() {
	[ -n "$LFF_IMAGE" ] || [ -n "$LFF_NBD_DEV" ] || { lff_fail "parameters" "no lff.image= on the kernel command line"; return 1; }
	case $LFF_FORMAT in
	auto)
		if [ "$LFF_RO" = 0 ]; then
			lff_fail "parameters" "lff.format=auto with lff.ro=0: give the format (a writable raw image could be rewritten into a qcow2 header naming other files)"
			return 1
		fi ;;
	*[!a-z0-9_-]*|'') lff_fail "parameters" "lff.format=$LFF_FORMAT is not a format name"; return 1 ;;
	esac
	if [ -n "$LFF_NBD_DEV" ]; then
		_img=$LFF_NBD_DEV
	elif [ -n "$LFF_SRC" ]; then
		_img=$LFF_RUN/src/${LFF_IMAGE#/}
		[ -e "$_img" ] || { lff_fail "image" "$LFF_IMAGE not found in $LFF_SRC (looked for $_img)"; return 1; }
	elif lff_is_dev_spec "$LFF_IMAGE"; then
		_img=$(lff_wait_dev "$LFF_IMAGE" "image device") ||
			lff_fail "image" "image device $LFF_IMAGE did not appear within ${LFF_TIMEOUT}s" || return 1
	else
		_img=$LFF_IMAGE
		[ -e "$_img" ] || { lff_fail "image" "image file $_img not found"; return 1; }
	fi
	case $LFF_COPY in
	'') ;;
	ram) lff_copy_to_ram "$_img" || return 1; _img=$LFF_COPY_TO ;;
	*) lff_fail "parameters" "lff.copy=$LFF_COPY: the one copy mode is lff.copy=ram"; return 1 ;;
	esac

	# Drivers built into the kernel (or loaded already) are used as they
	# are: modprobe runs only for what is missing. Otherwise the core
	# comes along by dependency; with auto, load what exists.
	if lff_have_format "$LFF_FORMAT"; then
		lff_log "drivers present (formats: $(cat "$LFF_FORMATS")); $(wc -l </proc/modules) modules loaded"
	elif [ "$LFF_FORMAT" = auto ]; then
		modprobe -q loop_file_fmt_qcow2 2>/dev/null
		modprobe -q loop_file_fmt_raw 2>/dev/null
		modprobe loop_file_fmt 2>"$LFF_RUN/modprobe.err" ||
			lff_fail "modprobe" "modprobe loop_file_fmt: $(cat "$LFF_RUN/modprobe.err")" || return 1
	else
		modprobe "loop_file_fmt_$LFF_FORMAT" 2>"$LFF_RUN/modprobe.err" ||
			lff_fail "modprobe" "modprobe loop_file_fmt_$LFF_FORMAT: $(cat "$LFF_RUN/modprobe.err")" || return 1
	fi

	_ro=
	[ "$LFF_RO" = 0 ] || _ro=-r
	lff_log "$LFF_LOSETUP --file-fmt $LFF_FORMAT $_ro -f --show $_img"
	# shellcheck disable=SC2086
	LFF_DEV=$("$LFF_LOSETUP" --file-fmt "$LFF_FORMAT" $_ro -f --show "$_img" 2>"$LFF_RUN/losetup.err") ||
		lff_fail "attach" "$(cat "$LFF_RUN/losetup.err")" || return 1
	LFF_FMT=$(cat "/sys/block/${LFF_DEV#/dev/}/loop_file_fmt/format" 2>/dev/null || echo "$LFF_FORMAT")
	lff_log "attached $_img as $LFF_DEV (format $LFF_FMT${_ro:+, read-only})"
	echo "$LFF_DEV" >"$LFF_RUN/dev"
	[ "$LFF_COPY" != ram ] || lff_release_source
}

# lff.copy=ram: copies the image (a file in the source, or the NBD
# device's bytes) into a tmpfs of its size at $LFF_RUN/ram: sets
# LFF_COPY_TO, the copy.
lff_copy_to_ram() { # image
	_bytes=$(stat -L -c %s "$1" 2>/dev/null) || _bytes=0
	case $1 in /dev/*) _bytes=$(( $(cat "/sys/block/${1#/dev/}/size") * 512 )) ;; esac
	_mib=$(( (_bytes + 1048575) / 1048576 ))
	_free=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
	if [ -n "$_free" ] && [ "$_mib" -ge "$_free" ]; then
		lff_fail "copy" "lff.copy=ram: the image is $_mib MiB, only $_free MiB of memory available"
		return 1
	fi
	mkdir -p "$LFF_RUN/ram"
	_size=
	[ "$_bytes" = 0 ] || _size=,size=$((_mib + 1))m
	mount -t tmpfs -o "mode=0700$_size" lff-ram "$LFF_RUN/ram" 2>"$LFF_RUN/mount.err" ||
		{ lff_fail "copy" "cannot mount a tmpfs of $_mib MiB: $(cat "$LFF_RUN/mount.err")"; return 1; }
	LFF_COPY_TO=$LFF_RUN/ram/${LFF_IMAGE##*/}
	[ -n "$LFF_IMAGE" ] || LFF_COPY_TO=$LFF_RUN/ram/image
	lff_log "lff.copy=ram: copying $1 ($_mib MiB) into RAM"
	_t0=$(cut -d' ' -f1 /proc/uptime)
	cat "$1" >"$LFF_COPY_TO" 2>"$LFF_RUN/copy.err" ||
		{ lff_fail "copy" "copying $1 into RAM: $(cat "$LFF_RUN/copy.err")"; umount "$LFF_RUN/ram"; return 1; }
	_t1=$(cut -d' ' -f1 /proc/uptime)
	lff_log "copied $(stat -c %s "$LFF_COPY_TO") bytes into RAM in $(awk -v a="$_t0" -v b="$_t1" 'BEGIN { printf "%.1f", b - a }') s"
}

# After a copy-first attach: the source is no longer needed.
lff_release_source() {
	if [ -n "$LFF_NBD_DEV" ]; then
		nbd-client -d "$LFF_NBD_DEV" >/dev/null 2>&1 &&
			lff_log "disconnected $LFF_NBD_DEV: the image lives in RAM" ||
			lff_log "warning: nbd-client -d $LFF_NBD_DEV failed; the connection stays"
	elif [ -n "$LFF_SRC" ]; then
		umount "$LFF_RUN/src" 2>/dev/null &&
			lff_log "unmounted the source: the image lives in RAM" ||
			lff_log "the source stays mounted (a backing file on it is open)"
	fi
}

# Mounts LFF_DEV (with a tmpfs overlay if asked) at TARGET.
lff_mount_root() { # target
	_opts=ro
	[ "$LFF_RO" = 1 ] || _opts=rw
	_opts=$_opts${LFF_FLAGS:+,$LFF_FLAGS}
	_at=$1
	if [ "$LFF_OVERLAY" = 1 ]; then
		_at=$LFF_RUN/lower
		mkdir -p "$_at"
	fi
	_type=${LFF_FSTYPE:-$(lff_probe_fstype "$LFF_DEV")}
	lff_log "mounting $LFF_DEV${_type:+ ($_type)} on $_at (-o $_opts)"
	mount ${_type:+-t "$_type"} -o "$_opts" "$LFF_DEV" "$_at" 2>"$LFF_RUN/mount.err" ||
		lff_fail "mount" "mount $LFF_DEV${_type:+ -t $_type} -o $_opts: $(cat "$LFF_RUN/mount.err")" || return 1
	[ "$LFF_OVERLAY" = 0 ] || lff_overlay "$_at" "$1"
}

# Mounts an overlay of LOWER (read-only) and a tmpfs at TARGET.
lff_overlay() { # lower target
	mkdir -p "$LFF_RUN/rw"
	mount -t tmpfs -o mode=0755 lff-rw "$LFF_RUN/rw" &&
		mkdir -p "$LFF_RUN/rw/upper" "$LFF_RUN/rw/work" ||
		lff_fail "overlay" "cannot mount a tmpfs on $LFF_RUN/rw" || return 1
	lff_log "overlay on $2: $1 read-only below, tmpfs above"
	mount -t overlay -o "lowerdir=$1,upperdir=$LFF_RUN/rw/upper,workdir=$LFF_RUN/rw/work" \
		lff-root "$2" 2>"$LFF_RUN/mount.err" ||
		lff_fail "overlay" "overlay mount on $2: $(cat "$LFF_RUN/mount.err")" || return 1
}

lff_is_ipv4() { # string
	case $1 in ''|*[!0-9.]*|*..*|.*|*.) return 1 ;; esac
	# Four parts (shell only: dracut's image has no wc).
	_oifs=$IFS
	IFS=.
	# shellcheck disable=SC2086
	set -- $1
	IFS=$_oifs
	[ $# = 4 ]
}

# Connects lff.src=nbd:HOST[:PORT][/EXPORT] to a free /dev/nbdN, read-only,
# retrying a refused connection until the timeout; sets LFF_NBD_DEV.
# nbd-client configures the kernel over netlink and exits: the kernel owns
# the socket, so nothing in the data path dies at switch_root.
lff_nbd_connect() {
	_spec=${LFF_SRC#nbd:}
	_export=
	case $_spec in */*) _export=${_spec#*/} _spec=${_spec%%/*} ;; esac
	_host=${_spec%%:*} _port=10809
	[ "$_host" = "$_spec" ] || _port=${_spec#*:}
	case $_port in ''|*[!0-9]*) lff_fail "source" "lff.src=$LFF_SRC: the port '$_port' is not a number"; return 1 ;; esac
	[ -n "$_host" ] || { lff_fail "source" "lff.src=$LFF_SRC names no server"; return 1; }
	command -v nbd-client >/dev/null ||
		{ lff_fail "source" "lff.src=$LFF_SRC: no nbd-client in this initramfs"; return 1; }
	_dev=
	for _b in /sys/block/nbd*; do
		[ -e "$_b/size" ] || continue
		if [ "$(cat "$_b/size")" = 0 ]; then _dev=/dev/${_b##*/}; break; fi
	done
	[ -n "$_dev" ] || { lff_fail "source" "no free /dev/nbdN (the kernel needs BLK_DEV_NBD, and nbd.nbds_max > 0)"; return 1; }
	lff_log "nbd-client ${_export:+-N $_export }$_host $_port $_dev (read-only)"
	_n=0
	while ! nbd-client ${_export:+-N "$_export"} "$_host" "$_port" "$_dev" -readonly >"$LFF_RUN/nbd.err" 2>&1; do
		_n=$((_n + 1))
		# A server that answers and refuses (an unknown export) will not
		# change its mind; a refused connection may be a server starting.
		if grep -qi -e 'export' -e 'server error' -e 'negotiat' "$LFF_RUN/nbd.err" || [ $_n -ge "$LFF_TIMEOUT" ]; then
			lff_fail "source" "nbd-client ${_export:+-N $_export }$_host $_port $_dev: $(tr '\n' ' ' <"$LFF_RUN/nbd.err")"
			return 1
		fi
		sleep 1
	done
	LFF_NBD_DEV=$_dev
	# With netlink nbd-client configures the device and exits.
	if pidof nbd-client >/dev/null 2>&1; then
		lff_log "warning: nbd-client still runs (pid $(pidof nbd-client)): it will die at switch_root"
	else
		lff_log "nbd-client has exited: the kernel holds the connection"
	fi
	lff_log "connected $_dev: $(( $(cat "/sys/block/${_dev#/dev/}/size") / 2048 )) MiB from $_host:$_port${_export:+ export $_export}"
}

# Brings the network up for ip=dhcp (also ip=on, ip=any, ip=:::::IF:dhcp)
# with busybox udhcpc: our own initramfs only (initramfs-tools and dracut
# do their own). Nothing to do without ip=, or with ip=off/none.
lff_net_up() {
	case $LFF_IP in
	''|off|none) return 0 ;;
	dhcp|on|any|both|*:dhcp) ;;
	*) lff_fail "network" "ip=$LFF_IP: only ip=dhcp is read by this initramfs"; return 1 ;;
	esac
	_if=eth0
	case $LFF_IP in *:*:*:*:*:*:*) _f=${LFF_IP#*:*:*:*:*:}; _f=${_f%%:*}; [ -z "$_f" ] || _if=$_f ;; esac
	ip link set lo up 2>/dev/null
	_n=0
	while [ ! -e "/sys/class/net/$_if" ]; do
		_n=$((_n + 1))
		[ $_n -lt $((LFF_TIMEOUT * 4)) ] ||
			{ lff_fail "network" "no network interface $_if (present: $(ls /sys/class/net | tr '\n' ' '))"; return 1; }
		sleep 0.25
	done
	ip link set "$_if" up
	lff_log "DHCP on $_if (up to ${LFF_TIMEOUT}s)"
	# -t tries -T seconds apart, -n: give up then, -q: quit once bound.
	if ! udhcpc -i "$_if" -f -q -n -t $(( (LFF_TIMEOUT + 1) / 2 )) -T 2 \
		-s /lib/lff/udhcpc.script >"$LFF_RUN/dhcp.log" 2>&1; then
		lff_fail "network" "no DHCP answer on $_if within ${LFF_TIMEOUT}s: $(tail -2 "$LFF_RUN/dhcp.log" | tr '\n' ' ')"
		return 1
	fi
	lff_net_report
}

# Logs the IPv4 addresses and the default gateway the network came up with
# (whoever brought it up: udhcpc above, or dracut's network module).
lff_net_report() {
	lff_log "network: $(ip -4 -o addr show | awk '$2 != "lo" { printf "%s%s on %s", n++ ? ", " : "", $4, $2 }'), via $(ip route | awk '/^default/ { print $3; exit }')"
}

# Prints the file system type on a device, or nothing (then mount probes;
# klibc's mount, in initramfs-tools images, cannot).
lff_probe_fstype() { # device
	_t=$(blkid -o value -s TYPE "$1" 2>/dev/null) && [ -n "$_t" ] && { echo "$_t"; return; }
	_t=$(fstype "$1" 2>/dev/null | sed -n 's/^FSTYPE=//p') && [ "$_t" != unknown ] && echo "$_t"
}

# Prints the failure in a form nobody can miss.
lff_report_failure() {
	echo
	echo "lff: *** boot from the image FAILED at step '$LFF_STEP' ***"
	echo "lff: $LFF_ERR"
	echo "lff: parameters: lff.image=$LFF_IMAGE${LFF_SRC:+ lff.src=$LFF_SRC}${LFF_SRCFSTYPE:+ lff.srcfstype=$LFF_SRCFSTYPE} lff.format=$LFF_FORMAT lff.ro=$LFF_RO"
	echo
}

# Image-store servers for network boot, on the host, 127.0.0.1 only (a
# QEMU guest on user networking reaches them as 10.0.2.2). Sourced by
# scripts/netboot/* and the netboot tests, after scripts/qemu-boot/lib.sh.
#
#   nb_init                 a private state directory ($NB_DIR) and the traps
#                           that stop every server at exit, on failure and on
#                           Ctrl-C
#   nb_start_nfs DIR        nfs-ganesha (VFS FSAL), NFSv4.x over TCP, graceless,
#                           DIR exported read-only as /img; sets NB_NFS_PORT
#   nb_start_smb DIR        samba smbd, SMB3 only, share "img" = DIR read-only
#                           for user $NB_SMB_USER / $NB_SMB_PASS; NB_SMB_PORT
#   nb_start_nbd FILE NAME  qemu-nbd -f raw: FILE's bytes as export NAME,
#                           read-only (the server never parses qcow2);
#                           NB_NBD_PORT
#   nb_start_http DIR       python3's http.server for DIR; NB_HTTP_PORT
#   nb_stop_all             stop them all and check that none is left
#
# Ports are taken free from the kernel (bind to port 0) at start, so runs
# on one machine do not collide; each server is started on its port and
# checked to listen there before the function returns. No rpcbind: the
# NFSv4 client needs none (the guest mounts with port=), and ganesha only
# logs that it cannot register.

NB_SMB_USER=${NB_SMB_USER:-lab}
NB_SMB_PASS=${NB_SMB_PASS:-lab-secret}
NB_PIDS=()
NB_NAMES=()

nb_log() { lff_log "netboot: $*"; }
# nb_fail STEP MESSAGE: print and exit (the EXIT trap stops the servers).
nb_fail() { echo "netboot: FAILED at step '$1': $2" >&2; exit 1; }

nb_init() {
	NB_DIR=$(mktemp -d "${TMPDIR:-/tmp}/lff-netboot.XXXXXX")
	# NB_KEEP=1 keeps the state directory (configs, server logs, console,
	# pcap) for a look afterwards.
	trap 'nb_rc=$?; nb_stop_all || nb_rc=1
		[ "${NB_KEEP:-0}" = 1 ] && echo "netboot: kept $NB_DIR" >&2 || rm -rf "$NB_DIR"
		exit $nb_rc' EXIT
	trap 'echo "netboot: interrupted" >&2; exit 130' INT TERM HUP
}

# A TCP port that is free on 127.0.0.1 now.
nb_free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# nb_wait_listen NAME PID PORT LOG: until PID listens on 127.0.0.1:PORT
# (15 s at most), else the server's log and a failure.
nb_wait_listen() {
	local name=$1 pid=$2 port=$3 log=$4 n=0
	while ! ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -15 "$log" | sed 's/^/    /' >&2
			nb_fail "$name" "the server exited before it listened on 127.0.0.1:$port (log above: $log)"
		fi
		n=$((n + 1))
		if [ $n -ge 75 ]; then
			tail -15 "$log" | sed 's/^/    /' >&2
			nb_fail "$name" "not listening on 127.0.0.1:$port after 15 s"
		fi
		sleep 0.2
	done
	# Only on the loopback address. In bench/lab's private network
	# namespace, whose one interface is its own loopback, nfs-ganesha
	# binds the wildcard address whatever Bind_addr says: there the
	# wildcard reaches no address but the loopback's, which is checked.
	local only='^(\[::ffff:)?127\.0\.0\.1\]?:'
	if [ "${LFF_LAB_NETNS:-}" = 1 ] && [ "$(ip -o link show | awk -F': ' '{print $2}' | paste -sd' ')" = lo ]; then
		only='^((\[::ffff:)?127\.0\.0\.1\]?|\*|0\.0\.0\.0|\[::\]):'
	fi
	if ss -Hltn "sport = :$port" | awk '{print $4}' | grep -qv -E "$only"; then
		nb_fail "$name" "listens beyond 127.0.0.1: $(ss -Hltn "sport = :$port" | awk '{print $4}' | paste -sd' ')"
	fi
}

# nb_spawn NAME LOG CMD...: starts a server in the background, recorded for
# nb_stop_all; sets NB_PID.
nb_spawn() {
	local name=$1 log=$2
	shift 2
	command -v "$1" >/dev/null || nb_fail "$name" "$1 is not installed (make deps)"
	# Its own session and process group: smbd signals its group when it
	# stops, and nb_stop_all ends the group (the server and any children).
	setsid "$@" </dev/null >"$log" 2>&1 &
	NB_PID=$!
	NB_PIDS+=("$NB_PID")
	NB_NAMES+=("$name")
}

nb_start_nfs() { # dir
	local dir d=$NB_DIR/nfs
	dir=$(realpath "$1")
	mkdir -p "$d/recovery"
	NB_NFS_PORT=$(nb_free_port)
	cat >"$d/ganesha.conf" <<-EOF
	NFS_CORE_PARAM {
		Protocols = 4;
		NFS_Port = $NB_NFS_PORT;
		Bind_addr = 127.0.0.1;
		Enable_NLM = false;
		Enable_RQUOTA = false;
	}
	NFSV4 {
		# No 90 s grace period after start: nothing to recover.
		Graceless = true;
		RecoveryRoot = $d/recovery;
		# knfsd's lease, as a lab's server has. A 15 s one is shorter
		# than the stalls a loaded host gives a TCG guest (up to 16 s
		# seen): a client that cannot renew in time loses its open
		# state, and reads of the image fail with EIO.
		Lease_Lifetime = 90;
	}
	NFS_KRB5 { Active_krb5 = false; }
	EXPORT {
		Export_Id = 1;
		Path = $dir;
		Pseudo = /img;
		Access_Type = RO;
		Squash = No_Root_Squash;
		Protocols = 4;
		Transports = TCP;
		SecType = sys;
		FSAL { Name = VFS; }
	}
	LOG { Default_Log_Level = EVENT; }
	EOF
	nb_spawn nfs "$d/ganesha.log" ganesha.nfsd -F -L "$d/ganesha.log" -f "$d/ganesha.conf" -p "$d/ganesha.pid"
	nb_wait_listen nfs "$NB_PID" "$NB_NFS_PORT" "$d/ganesha.log"
	nb_log "nfs-ganesha (NFSv4, VFS) on 127.0.0.1:$NB_NFS_PORT: $dir as /img, read-only"
}

nb_start_smb() { # dir
	local dir d=$NB_DIR/smb
	dir=$(realpath "$1")
	mkdir -p "$d"/{state,cache,lock,pid,private,ncalrpc,log}
	NB_SMB_PORT=$(nb_free_port)
	# samba authenticates against a Unix account: the share's user maps to
	# the one running the server, so no account is added to the machine.
	echo "$(id -un) = $NB_SMB_USER" >"$d/usermap"
	cat >"$d/smb.conf" <<-EOF
	[global]
		smb ports = $NB_SMB_PORT
		interfaces = 127.0.0.1
		bind interfaces only = yes
		disable netbios = yes
		server role = standalone server
		server min protocol = SMB3
		map to guest = never
		username map = $d/usermap
		state directory = $d/state
		cache directory = $d/cache
		lock directory = $d/lock
		pid directory = $d/pid
		private dir = $d/private
		ncalrpc dir = $d/ncalrpc
		log file = $d/log/smbd.log
		passdb backend = tdbsam:$d/private/passdb.tdb
		load printers = no
		printcap name = /dev/null
		disable spoolss = yes
	[img]
		path = $dir
		read only = yes
		valid users = $(id -un)
	EOF
	printf '%s\n%s\n' "$NB_SMB_PASS" "$NB_SMB_PASS" |
		smbpasswd -c "$d/smb.conf" -s -a "$(id -un)" >"$d/smbpasswd.log" 2>&1 ||
		nb_fail smb "smbpasswd: $(cat "$d/smbpasswd.log")"
	nb_spawn smb "$d/smbd.log" smbd --foreground --no-process-group --debug-stdout -s "$d/smb.conf"
	nb_wait_listen smb "$NB_PID" "$NB_SMB_PORT" "$d/smbd.log"
	nb_log "smbd (SMB3) on 127.0.0.1:$NB_SMB_PORT: $dir as //HOST/img, read-only, user $NB_SMB_USER"
}

nb_start_nbd() { # file export-name
	local file d=$NB_DIR/nbd
	file=$(realpath "$1")
	mkdir -p "$d"
	NB_NBD_PORT=$(nb_free_port)
	# -f raw: the bytes of the file, whatever they hold; -t: serve one
	# client after another; -e 4: a few at once (a lab).
	nb_spawn nbd "$d/qemu-nbd.log" qemu-nbd -f raw -r -t -e 4 -b 127.0.0.1 -p "$NB_NBD_PORT" -x "$2" "$file"
	nb_wait_listen nbd "$NB_PID" "$NB_NBD_PORT" "$d/qemu-nbd.log"
	nb_log "qemu-nbd (raw bytes) on 127.0.0.1:$NB_NBD_PORT: $file as export $2, read-only"
}

nb_start_http() { # dir
	local dir d=$NB_DIR/http
	dir=$(realpath "$1")
	mkdir -p "$d"
	NB_HTTP_PORT=$(nb_free_port)
	nb_spawn http "$d/http.log" python3 -m http.server --bind 127.0.0.1 --directory "$dir" "$NB_HTTP_PORT"
	nb_wait_listen http "$NB_PID" "$NB_HTTP_PORT" "$d/http.log"
	nb_log "HTTP on 127.0.0.1:$NB_HTTP_PORT: $dir"
}

# Stops every server this shell started (TERM, then KILL after 5 s) and
# checks that none is left; smbd's children go with their parent.
nb_stop_all() {
	# Runs from the EXIT trap too: a failing wait must not end it early.
	local - i pid n left=() stray=()
	set +e
	for i in "${!NB_PIDS[@]}"; do
		pid=${NB_PIDS[$i]}
		kill -0 "$pid" 2>/dev/null || continue
		kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
	done
	for i in "${!NB_PIDS[@]}"; do
		pid=${NB_PIDS[$i]} n=0
		while kill -0 "$pid" 2>/dev/null && [ $n -lt 25 ]; do sleep 0.2; n=$((n + 1)); done
		if kill -0 "$pid" 2>/dev/null; then
			kill -KILL "$pid" 2>/dev/null
			sleep 0.2
		fi
		wait "$pid" 2>/dev/null
		# A child the server left (smbd forks one per client) is still in
		# its process group.
		kill -KILL -- "-$pid" 2>/dev/null
		! kill -0 "$pid" 2>/dev/null || left+=("${NB_NAMES[$i]} (pid $pid)")
	done
	if [ -n "${NB_DIR:-}" ] && [ -d "$NB_DIR" ]; then
		# Anything else still running with the state directory on its
		# command line (a child that left its group); zombies and
		# processes exiting right now (empty command line) do not count.
		for n in 1 2 3 4 5 6 7 8 9 10; do
			stray=()
			while read -r pid; do
				[ -n "$pid" ] && [ -s "/proc/$pid/cmdline" ] || continue
				[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || continue
				stray+=("$pid")
			done < <(pgrep -f -- "$NB_DIR")
			[ ${#stray[@]} -gt 0 ] || break
			[ $n -lt 10 ] || break
			sleep 0.2
		done
		for pid in "${stray[@]}"; do
			left+=("pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)")
			kill -KILL "$pid" 2>/dev/null
		done
	fi
	NB_PIDS=() NB_NAMES=()
	if [ ${#left[@]} -gt 0 ]; then
		echo "netboot: servers still running after stop (killed): ${left[*]}" >&2
		return 1
	fi
	return 0
}

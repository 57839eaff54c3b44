#!/bin/bash
# The image-store servers of scripts/netboot (no guest): nfs-ganesha,
# smbd, qemu-nbd and the HTTP server start on free ports of 127.0.0.1 only
# and serve (the NBD export and HTTP are compared byte for byte, NFS
# answers an RPC NULL call, smbd an SMB2 negotiate); every server is gone
# after a normal end, after a failing command and after Ctrl-C (SIGINT).
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SERVERS=$ROOT/scripts/netboot/servers
fails=0
ok() { echo "ok - $*"; }
bad() { echo "not ok - $*"; fails=$((fails + 1)); }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/store"
head -c 3000000 /dev/urandom >"$T/store/disk.img"

# The probe run inside the servers' lifetime: records their pids, checks
# the addresses and the bytes.
cat >"$T/probe" <<'PROBE'
#!/bin/bash
set -u
for p in $NB_NFS_PORT $NB_SMB_PORT $NB_NBD_PORT $NB_HTTP_PORT; do
	ss -Hltnp "sport = :$p" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' >>"$T/pids"
	addrs=$(ss -Hltn "sport = :$p" | awk '{print $4}' | paste -sd' ')
	if [ -n "$addrs" ] && ! grep -qv -E '^(\[::ffff:)?127\.0\.0\.1\]?:' <<<"$(tr ' ' '\n' <<<"$addrs")"; then
		echo "ok - port $p listens on 127.0.0.1 only ($addrs)"
	else
		echo "not ok - port $p: listening on '$addrs'"
	fi
done
if qemu-img compare -q -f raw -F raw "$T/store/disk.img" "nbd://127.0.0.1:$NB_NBD_PORT/disk"; then
	echo "ok - the NBD export holds the file's bytes"
else
	echo "not ok - qemu-img compare of the NBD export failed"
fi
python3 - "$T/store/disk.img" <<'PY'
import os, socket, struct, sys, urllib.request
want = open(sys.argv[1], "rb").read()
got = urllib.request.urlopen(f"http://127.0.0.1:{os.environ['NB_HTTP_PORT']}/disk.img", timeout=10).read()
print("ok - HTTP serves the file's bytes" if got == want else "not ok - HTTP bytes differ")
# NFS: ONC RPC NULL call, program 100003 version 4, record-marked.
s = socket.create_connection(("127.0.0.1", int(os.environ["NB_NFS_PORT"])), timeout=10)
call = struct.pack(">IIIIIIIIII", 0x1234, 0, 2, 100003, 4, 0, 0, 0, 0, 0)
s.sendall(struct.pack(">I", 0x80000000 | len(call)) + call)
rep = s.recv(64)
xid, mtype, stat = struct.unpack(">III", rep[4:16]) if len(rep) >= 16 else (0, 0, 1)
acc = struct.unpack(">I", rep[24:28])[0] if len(rep) >= 28 else 1
print("ok - nfs-ganesha answers an NFSv4 NULL call" if (xid, mtype, stat, acc) == (0x1234, 1, 0, 0)
      else f"not ok - NFS NULL reply {rep!r}")
# SMB: an SMB2 NEGOTIATE offering 3.1.1 only gets an SMB2 answer.
s = socket.create_connection(("127.0.0.1", int(os.environ["NB_SMB_PORT"])), timeout=10)
hdr = b"\xfeSMB" + struct.pack("<HHIHHIIQIIQ16s", 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b"\0" * 16)
neg = struct.pack("<HHHHI16sIHH", 36, 1, 1, 0, 0x7f, b"lff-netboot-test", 0, 0, 0) + struct.pack("<H", 0x0302)
msg = hdr + neg
s.sendall(struct.pack(">I", len(msg)) + msg)
rep = s.recv(256)
print("ok - smbd answers an SMB2 negotiate" if rep[4:8] == b"\xfeSMB" else f"not ok - SMB reply {rep[:16]!r}")
PY
exit "${PROBE_EXIT:-0}"
PROBE
chmod +x "$T/probe"
export T

gone() { # what
	local left=()
	for p in $(sort -u "$T/pids"); do kill -0 "$p" 2>/dev/null && left+=("$p"); done
	[ ${#left[@]} = 0 ] && ok "$1: every server is gone ($(sort -u "$T/pids" | wc -l) pids)" ||
		bad "$1: still running: ${left[*]}"
	[ -s "$T/pids" ] || bad "$1: no server pid was recorded"
	: >"$T/pids"
}
: >"$T/pids"
"$SERVERS" --nfs "$T/store" --smb "$T/store" --nbd "$T/store/disk.img:disk" --http "$T/store" -- "$T/probe" >"$T/out" 2>&1
rc=$?
grep -E '^(not )?ok' "$T/out"
fails=$((fails + $(grep -c '^not ok' "$T/out")))
[ "$(grep -c '^ok' "$T/out")" = 8 ] && ok "all 8 probes ran" || bad "$(grep -c '^ok' "$T/out") of 8 probes passed"
[ $rc = 0 ] && ok "servers exits 0" || { bad "servers exits $rc"; sed 's/^/#   /' "$T/out"; }
tail -1 "$T/out" | grep -q '^servers: OK: nfs:[0-9]* smb:[0-9]* nbd:[0-9]* http:[0-9]* served on 127.0.0.1 and stopped$' &&
	ok "the summary line" || bad "summary: $(tail -1 "$T/out")"
gone "normal end"

PROBE_EXIT=3 "$SERVERS" --nfs "$T/store" --nbd "$T/store/disk.img:disk" --smb "$T/store" --http "$T/store" -- "$T/probe" >"$T/out" 2>&1
rc=$?
[ $rc = 3 ] && ok "a failing command's status is the script's (3)" || bad "failing command: exit $rc, wanted 3"
tail -1 "$T/out" | grep -q '^servers: FAILED: command exit 3' && ok "and the summary says so" || bad "summary: $(tail -1 "$T/out")"
gone "failing command"

# Ctrl-C: the script waits for it; SIGINT to its process group, as a
# terminal sends it (a background job of a script starts with SIGINT
# ignored: env gives it back its default).
setsid env --default-signal=INT "$SERVERS" --nfs "$T/store" --smb "$T/store" --nbd "$T/store/disk.img:disk" >"$T/out" 2>&1 &
spid=$!
for _ in $(seq 100); do grep -q 'serving until Ctrl-C' "$T/out" && break; sleep 0.2; done
for port in $(sed -n 's/.* on 127\.0\.0\.1:\([0-9]*\):.*/\1/p' "$T/out"); do
	ss -Hltnp "sport = :$port" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' >>"$T/pids"
done
[ "$(sort -u "$T/pids" | wc -l)" = 3 ] && ok "Ctrl-C: three servers were running" || bad "Ctrl-C: servers before the signal: $(sort -u "$T/pids" | paste -sd' ')"
kill -INT -- "-$spid"
timeout 30 tail --pid="$spid" -f /dev/null
wait "$spid"
rc=$?
[ $rc = 130 ] && ok "Ctrl-C: exit 130" || bad "Ctrl-C: exit $rc, wanted 130"
grep -q 'netboot: interrupted' "$T/out" && ok "Ctrl-C: says interrupted" || bad "Ctrl-C: $(tail -2 "$T/out")"
gone "Ctrl-C"
exit $((fails > 0))

#!/bin/bash
# The qcow2 driver (loop_file_fmt_qcow2), read-only:
# - a corpus built here with qemu-img/qemu-io (qcow2-corpus.sh: cluster
#   sizes 512 B..2 MiB, zlib and zstd, extended L2, zero flags, discards,
#   v2, odd sizes, snapshots, 3-layer chains with a short raw base): every
#   device equals `qemu-img convert -O raw`, read with large buffered
#   requests and with 4 KiB direct requests;
# - caches: decompress-once, sysfs sizes and clean interval, the shrinker
#   (drop_caches), module parameters, concurrent readers;
# - malformed images: refused at attach with the right errno, or failing
#   only the requests that touch bad metadata with EIO;
# - an ext4 file system inside a compressed image, mounted and verified.
# Writes: 31-qcow2-write.sh.
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
PATCH=("/usr/bin/python3" "$HERE/qcow2-patch.py")
C=$WORK/corpus
# Process substitution needs /dev/fd, which the guest's devtmpfs lacks.
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd

attach() { losetup-fmt --file-fmt qcow2 -r -f --show "$@"; }
detach() { losetup-fmt -d "$1"; }
sysfs() { echo "/sys/block/${1#/dev/}/loop_file_fmt/$2"; }
# Bytes the device exposes for an oracle (virtual size, whole sectors).
dev_len() { echo $(($(stat -c %s "$1") / 512 * 512)); }
# same DEV ORACLE: the device has the oracle's size and bytes.
same() {
	local want got
	want=$(dev_len "$2")
	got=$(blockdev --getsize64 "$1")
	[ "$got" = "$want" ] || { echo "size $got, expected $want"; return 1; }
	cmp -n "$want" "$1" "$2"
}
# same_direct DEV ORACLE: the same, read with 4 KiB O_DIRECT requests.
same_direct() {
	cmp -n "$(dev_len "$2")" <(dd if="$1" bs=4k iflag=direct status=none) "$2"
}
# range FILE OFFSET LEN: LEN bytes of FILE at OFFSET (multiples of 4 KiB).
range() { dd if="$1" bs=4k skip=$(($2 / 4096)) count=$(($3 / 4096)) iflag=${4:-fullblock} status=none; }
# read_fails DEV OFFSET LEN: a direct read there fails with EIO.
read_fails() {
	local out
	if out=$(range "$1" "$2" "$3" direct 2>&1 >/dev/null); then
		echo "read succeeded"; return 1
	fi
	[[ "$out" == *"Input/output error"* ]] || { echo "$out"; return 1; }
}
# read_ok DEV ORACLE OFFSET LEN: a direct read there matches the oracle.
read_ok() { cmp <(range "$1" "$3" "$4" direct) <(range "$2" "$3" "$4"); }
stat_field() { awk "{print \$$2}" "$1"; }

check "modprobe loop_file_fmt_qcow2" modprobe loop_file_fmt_qcow2
check "build the corpus with qemu-img/qemu-io" bash "$HERE/qcow2-corpus.sh" "$C"
cd "$C" || exit 1

# --- the corpus -----------------------------------------------------------
while read -r -u 3 name img oracle args; do
	# shellcheck disable=SC2086
	if ! dev=$(attach $args "$img" 2>&1); then
		fail "$name: attach: $dev"
		continue
	fi
	check "$name: equals qemu-img convert (buffered)" same "$dev" "$oracle"
	check "$name: equals qemu-img convert (4 KiB direct)" same_direct "$dev" "$oracle"
	check "$name: detach" detach "$dev"
done 3<cases
check_eq "corpus: 24 cases" 24 "$(wc -l <cases)"

# --- caches ---------------------------------------------------------------
# zlib-64k: the first 64 KiB (text) are one compressed cluster; of 16
# sequential 4 KiB reads, the first inflates the whole cluster (as QEMU,
# never a prefix: a read's result must not depend on earlier reads), which
# serves the other 15.
dev=$(attach zlib-64k.qcow2)
s=$(sysfs "$dev" cluster_cache_stats)
h0=$(stat_field "$s" 1) m0=$(stat_field "$s" 2)
range "$dev" 0 65536 direct >/dev/null
check_eq "16 reads of one compressed cluster: 1 miss" 1 $(($(stat_field "$s" 2) - m0))
check_eq "16 reads of one compressed cluster: 15 hits" 15 $(($(stat_field "$s" 1) - h0))
check "cached cluster bytes are right" read_ok "$dev" zlib-64k.oracle 0 65536
# The one inflate, timed: clusters, bytes, nanoseconds.
d=$(sysfs "$dev" decompress_stats)
check_eq "decompress_stats: 1 cluster of 65536 bytes" "1 65536" "$(stat_field "$d" 1) $(stat_field "$d" 2)"
check "decompress_stats: its time is counted" test "$(stat_field "$d" 3)" -gt 0
detach "$dev"
# A read of the cluster's last 4 KiB inflates all of it: a read of its
# start then hits.
dev=$(attach zlib-64k.qcow2)
s=$(sysfs "$dev" cluster_cache_stats)
h0=$(stat_field "$s" 1) m0=$(stat_field "$s" 2)
range "$dev" 61440 4096 direct >/dev/null
range "$dev" 0 4096 direct >/dev/null
check_eq "last then first 4 KiB of a cluster: 1 miss, 1 hit" "1 1" \
	"$(($(stat_field "$s" 2) - m0)) $(($(stat_field "$s" 1) - h0))"
check "and its bytes are right" read_ok "$dev" zlib-64k.oracle 0 65536
detach "$dev"

# Decompressing ahead, with two CPUs or more online: a read spanning
# compressed clusters decompresses them at once, each once, and a
# sequential reader entering a cluster gets the next decompress_ahead
# clusters decompressed with its own. zstd-64k's first MiB is 16
# compressed clusters (text); decompress_stats' 4th field counts the
# clusters decompressed ahead of the reads.
ncpu=$(nproc)
if [ "$ncpu" -ge 2 ]; then
	dev=$(attach zstd-64k.qcow2)
	a=$(sysfs "$dev" decompress_ahead) d=$(sysfs "$dev" decompress_stats)
	check_eq "decompress_ahead: one cluster per other CPU by default" \
		$((ncpu > 8 ? 7 : ncpu - 1)) "$(cat "$a")"
	check_fails "decompress_ahead: more than 16 is refused" "Invalid argument" \
		bash -c "echo 17 >$a"
	# One request of 96 KiB across clusters 0 and 1: both at once.
	check "a read across two clusters is right" cmp \
		<(dd if="$dev" bs=96k skip=32k count=1 iflag=direct,skip_bytes status=none) \
		<(dd if=zstd-64k.oracle bs=96k skip=32k count=1 iflag=skip_bytes status=none)
	check_eq "a read across two clusters: both decompressed ahead, once" "2 2" \
		"$(stat_field "$d" 1) $(stat_field "$d" 4)"
	# 4 KiB sequential reads through clusters 4..7 (from a random read):
	# entering 5 decompresses 5 and 6, entering 7 decompresses 7 and 8.
	echo 1 >"$a"
	check "sequential reads are right" read_ok "$dev" zstd-64k.oracle 262144 262144
	check_eq "sequential reads: 5 more clusters decompressed, 4 of them ahead" "7 6" \
		"$(stat_field "$d" 1) $(stat_field "$d" 4)"
	detach "$dev"
	# Without it, the same reads decompress only their own clusters.
	dev=$(attach zstd-64k.qcow2)
	a=$(sysfs "$dev" decompress_ahead) d=$(sysfs "$dev" decompress_stats)
	echo 0 >"$a"
	check "decompress_ahead 0: sequential reads are right" \
		read_ok "$dev" zstd-64k.oracle 262144 262144
	check_eq "decompress_ahead 0: 4 clusters decompressed, none ahead" "4 0" \
		"$(stat_field "$d" 1) $(stat_field "$d" 4)"
	# A buffered read of the whole device (readahead: large requests, many
	# at once) is right and decompresses every cluster once at most.
	echo 7 >"$a"
	check "decompress_ahead 7: buffered reads equal qemu-img convert" same "$dev" zstd-64k.oracle
	detach "$dev"
else
	# vm-run's guests have two: fewer means the test did not run.
	fail "decompress_ahead: needs two CPUs online (nproc: $ncpu)"
fi

# Concurrent readers on a zstd image and on two devices of one image.
dev=$(attach zstd-4k.qcow2)
dev2=$(attach zstd-4k.qcow2)
for i in 0 1 2 3; do
	range "$dev" $((i * 1536 * 1024)) $((1536 * 1024)) direct >"$WORK/part$i" &
done
cmp "$dev2" zstd-4k.oracle >"$WORK/cmp2" 2>&1 &
wait
for i in 0 1 2 3; do
	check "concurrent reader $i" cmp "$WORK/part$i" <(range zstd-4k.oracle $((i * 1536 * 1024)) $((1536 * 1024)))
done
check "concurrent whole-device reader on a second device" test ! -s "$WORK/cmp2"
detach "$dev2"
detach "$dev"

# L2 cache size and clean interval through sysfs (plain-512: ~40 L2 tables
# of 512 bytes).
dev=$(attach plain-512.qcow2)
check_eq "l2_cache_size defaults to the module parameter" 4096 "$(cat "$(sysfs "$dev" l2_cache_size)")"
same_direct "$dev" plain-512.oracle
check "with the default cache, tables of many shards stay cached" \
	test "$(stat_field "$(sysfs "$dev" l2_cache_stats)" 3)" -gt 16
check "set l2_cache_size to 0" bash -c "echo 0 >$(sysfs "$dev" l2_cache_size)"
check "a tiny cache keeps one table per shard" \
	test "$(stat_field "$(sysfs "$dev" l2_cache_stats)" 3)" -le 16
check "reads are right with a tiny L2 cache" same_direct "$dev" plain-512.oracle
check "and the cache stays tiny" test "$(stat_field "$(sysfs "$dev" l2_cache_stats)" 3)" -le 16
check_fails "l2_cache_size rejects garbage" "Invalid argument" bash -c "echo x >$(sysfs "$dev" l2_cache_size)"
check_fails "stats are read-only" "Permission denied" bash -c "echo 1 >$(sysfs "$dev" l2_cache_stats)"
echo 4096 >"$(sysfs "$dev" l2_cache_size)"
same_direct "$dev" plain-512.oracle
check "tables are cached" test "$(stat_field "$(sysfs "$dev" l2_cache_stats)" 3)" -gt 16
check "set cache_clean_interval to 1 s" bash -c "echo 1 >$(sysfs "$dev" cache_clean_interval)"
sleep 2.5
# Nothing touches the device while it sleeps: the periodic job frees them.
check_eq "unused tables are freed after the clean interval" 0 "$(stat_field "$(sysfs "$dev" l2_cache_stats)" 3)"
check "reads are right after cleaning" same_direct "$dev" plain-512.oracle
detach "$dev"

# Memory pressure: the caches' shrinker. zstd-64k holds 48 compressed
# clusters (MiB 0, 3 and 4) and one L2 table. With a 64 MiB cluster cache
# a whole read caches all 48; `drop_caches` 2 runs every shrinker (to
# the floor: the most recently used entry of each of the cache's 16
# shards), and the next reads are right and fill the cache again.
dev=$(attach zstd-64k.qcow2)
s=$(sysfs "$dev" cluster_cache_stats) l=$(sysfs "$dev" l2_cache_stats)
echo 65536 >"$(sysfs "$dev" cluster_cache_size)"
check "shrinker: a whole read is right" same_direct "$dev" zstd-64k.oracle
check_eq "shrinker: every compressed cluster cached" "48 $((48 * 65536))" \
	"$(stat_field "$s" 3) $(stat_field "$s" 4)"
m0=$(stat_field "$s" 2)
echo 2 >/proc/sys/vm/drop_caches
n=$(stat_field "$s" 3)
check "shrinker: drop_caches shrank the cluster cache to the floor ($n entries)" \
	test "$n" -ge 1 -a "$n" -le 16
check_eq "shrinker: bytes follow the entries" $((n * 65536)) "$(stat_field "$s" 4)"
check_eq "shrinker: the floor keeps the one L2 table" 1 "$(stat_field "$l" 3)"
check "shrinker: reads after shrinking are right" same_direct "$dev" zstd-64k.oracle
check_eq "shrinker: the evicted clusters were loaded again" $((48 - n)) \
	$(($(stat_field "$s" 2) - m0))
check_eq "shrinker: the cache refilled" 48 "$(stat_field "$s" 3)"
detach "$dev"

# Module parameters set the defaults of new devices.
P=/sys/module/loop_file_fmt_qcow2/parameters
check_eq "module parameter l2_cache_size" 4096 "$(cat $P/l2_cache_size)"
check_eq "module parameter cache_clean_interval" 600 "$(cat $P/cache_clean_interval)"
echo 128 >$P/l2_cache_size
echo 256 >$P/cluster_cache_size
dev=$(attach zstd-2M.qcow2)
check_eq "a new device takes l2_cache_size from the parameter" 128 "$(cat "$(sysfs "$dev" l2_cache_size)")"
check_eq "and cluster_cache_size" 256 "$(cat "$(sysfs "$dev" cluster_cache_size)")"
check "2 MiB clusters with a cache smaller than one cluster" same_direct "$dev" zstd-2M.oracle
detach "$dev"
echo 4096 >$P/l2_cache_size
echo 4096 >$P/cluster_cache_size

# --- malformed images refused at attach -----------------------------------
# refuse NAME ERRNO-TEXT KERNEL-LOG-TEXT PATCH-ARGS...
refuse() {
	local name=$1 want=$2 log=$3; shift 3
	cp plain-64k.qcow2 "bad-$name.qcow2"
	"${PATCH[@]}" "bad-$name.qcow2" "$@"
	check_fails "attach refused: $name" "$want" attach "bad-$name.qcow2"
	check "kernel log names the device and the reason: $name" \
		sh -c "dmesg | grep -q 'lff[0-9]*: qcow2: layer 0: $log'"
}
refuse unknown-incompat-bit "Operation not supported" "unknown incompatible feature: bit 10" set64 72 0x400
refuse encrypted "Operation not supported" "encrypted images are not supported" set32 32 1
refuse huge-l1 "File too large" "table too large" set32 36 0x1000000
refuse l1-past-eof "Invalid argument" "truncated" set64 40 0x40000000
refuse misaligned-l1 "Invalid argument" "table not cluster aligned" set64 40 0x30200
refuse refcount-order "Invalid argument" "invalid refcount order" set32 96 7
check_fails "unknown snapshot refused with ENOENT" "No such file or directory" \
	attach --snapshot nosuch snap.qcow2
check "kernel log names the missing snapshot" sh -c "dmesg | grep -q \"qcow2: snapshot 'nosuch': snapshot not found\""
check_fails "unknown option refused" "Invalid argument" attach --fmt-option frobnicate=1 plain-64k.qcow2

# Dirty and corrupt images attach read-only with a warning.
for flag in dirty:1 corrupt:2; do
	cp plain-64k.qcow2 "$flag.qcow2"
	"${PATCH[@]}" "$flag.qcow2" set64 72 "${flag#*:}"
	if dev=$(attach "$flag.qcow2"); then
		check "${flag%:*} image reads like the original" same "$dev" plain-64k.oracle
		check "${flag%:*} image: warning logged" sh -c "dmesg | grep -q 'qcow2: layer 0 is marked ${flag%:*}'"
		detach "$dev"
	else
		fail "${flag%:*} image attaches read-only"
	fi
done

# --- malformed metadata found while reading -------------------------------
# bad_read NAME BASE-IMAGE BAD-OFFSET GOOD-OFFSET PATCH-ARGS...: reads at
# BAD-OFFSET fail with EIO (twice: nothing is cached), reads at GOOD-OFFSET
# still match the oracle, and the device detaches.
bad_read() {
	local name=$1 base=$2 bad=$3 good=$4 dev; shift 4
	cp "$base.qcow2" "bad-$name.qcow2"
	"${PATCH[@]}" "bad-$name.qcow2" "$@" || { fail "$name: patch"; return; }
	dev=$(attach "bad-$name.qcow2") || { fail "$name: attach"; return; }
	check "$name: read fails with EIO" read_fails "$dev" "$bad" 4096
	check "$name: and again" read_fails "$dev" "$bad" 65536
	check "$name: other data still reads right" read_ok "$dev" "$base.oracle" "$good" 65536
	check "$name: detach" detach "$dev"
}
eof=$("${PATCH[@]}" plain-64k.qcow2 past-eof)
bad_read l2-past-eof plain-64k 0 3145728 l2-entry 0 $((0x8000000000000000 | eof))
bad_read l2-reserved-bits plain-64k 0 3145728 l2-entry 0 $(($("${PATCH[@]}" plain-64k.qcow2 l2-entry-get 0) | 0x100))
bad_read compressed-past-eof zlib-64k 0 3145728 l2-entry 0 $((0x4000000000000000 | eof))
bad_read zlib-garbage zlib-64k 0 3145728 trash-compressed 0
bad_read zstd-garbage zstd-64k 0 3145728 trash-compressed 0
# A truncated image: the last written cluster is cut off.
cp plain-64k.qcow2 bad-truncated.qcow2
last=$((6 * 1048576 - 4096))
host=$(($("${PATCH[@]}" plain-64k.qcow2 l2-entry-get $last) & 0x00fffffffffffe00))
truncate -s "$host" bad-truncated.qcow2
if dev=$(attach bad-truncated.qcow2); then
	check "truncated: read past the end of the file fails with EIO" read_fails "$dev" "$last" 4096
	check "truncated: other data still reads right" read_ok "$dev" plain-64k.oracle 3145728 1048576
	check "truncated: detach" detach "$dev"
else
	fail "truncated: attach"
fi
check "read errors are logged with the device name" sh -c 'dmesg | grep -q "lff[0-9]*: qcow2: read of .* failed"'

# --- ext4 inside a compressed qcow2 ---------------------------------------
mkdir -p "$WORK/tree/sub" "$WORK/mnt"
head -c 300K /dev/urandom >"$WORK/tree/random.bin"
seq 1 200000 >"$WORK/tree/sub/numbers.txt"
head -c 2M /dev/urandom | base64 >"$WORK/tree/sub/text.b64"
: >"$WORK/tree/empty"
(cd "$WORK/tree" && find . -type f -exec sha256sum {} +) >"$WORK/sums"
check "mkfs.ext4 -d" mkfs.ext4 -q -F -b 4096 -d "$WORK/tree" fs.raw 16M
check "convert it to compressed qcow2" qemu-img convert -c -O qcow2 -o compression_type=zstd fs.raw fs.qcow2
if dev=$(attach fs.qcow2); then
	check "mount ext4 read-only from the qcow2 device" mount -t ext4 -o ro "$dev" "$WORK/mnt"
	check "every file's checksum matches" sh -c "cd '$WORK/mnt' && sha256sum --quiet -c '$WORK/sums'"
	check "umount" umount "$WORK/mnt"
	check "detach ext4 device" detach "$dev"
else
	fail "attach fs.qcow2"
fi

check_eq "no device left attached" "" "$(losetup-fmt -a)"
check "rmmod loop_file_fmt_qcow2" rmmod loop_file_fmt_qcow2
finish

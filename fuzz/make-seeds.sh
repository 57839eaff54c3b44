#!/usr/bin/env bash
# Builds the seed corpus of the fuzz targets from small images made by
# qemu-img and qemu-io. qcow2: cluster sizes 512 B..64 KiB (and a 2 MiB header),
# zlib and zstd compressed clusters, extended L2 with subcluster writes,
# zeroes and discards, version 2 images, internal snapshots, odd and large
# virtual sizes, backing chains (qcow2 and raw bases, with and without a
# backing format), a self-referencing image. VMDK: monolithicSparse (with
# and without zeroed grains, a short last grain), streamOptimized (and a
# footer variant), monolithicFlat, twoGbMaxExtentSparse/Flat, a mixed
# descriptor with a ZERO extent; their descriptors and compressed grains.
# VDI: dynamic and static images, sparse and odd sized, a zero block.
#
# Usage: fuzz/make-seeds.sh [OUTDIR]      (default: fuzz/corpus)
# Writes OUTDIR/<target>/seed-* for each target (see fuzz/README.md for
# the input layout of each target). Needs qemu-img, qemu-io and python3.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/corpus}
for tool in qemu-img qemu-io python3; do
	command -v "$tool" >/dev/null || { echo "make-seeds: $tool not found" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

img() { qemu-img "$@" >/dev/null; }
io() { local f=$1; shift; local a=(); for c in "$@"; do a+=(-c "$c"); done; qemu-io -f qcow2 "${a[@]}" "$f" >/dev/null; }

# Deterministic source data: zero runs, random bytes, text-like bytes,
# repeated patterns (so compressed clusters have various sizes).
python3 - <<'EOF'
import random
r = random.Random(1)
def mixed(n):
    out = bytearray()
    while len(out) < n:
        k = r.randrange(4)
        if k == 0: out += bytes(4096)
        elif k == 1: out += bytes(r.getrandbits(8) for _ in range(4096))
        elif k == 2: out += bytes(r.choice(b"abcdefgh \n") for _ in range(4096))
        else: out += bytes([r.getrandbits(8)]) * 4096
    return bytes(out[:n])
open("src-64k.raw", "wb").write(mixed(64 << 10))
open("src-200k.raw", "wb").write(mixed(200 << 10))
open("base.raw", "wb").write(mixed(40 << 10))
EOF

# Plain images with scattered writes, zeroes and discards.
for cs in 512 1k 4k 64k; do
	img create -f qcow2 -o cluster_size=$cs plain-$cs.qcow2 1M
	io plain-$cs.qcow2 "write -P 0x11 0 3k" "write -P 0x22 300k 5000" \
		"write -z 8k 4k" "write -P 0x33 900k 64k" "discard 0 1k" "write -P 0x44 1000k 24k"
done
img create -f qcow2 -o cluster_size=512 odd.qcow2 1000001
io odd.qcow2 "write -P 0x55 999000 1001"
img create -f qcow2 -o cluster_size=64k large.qcow2 1T
io large.qcow2 "write -P 0x66 0 4k" "write -P 0x77 1099511562240 64k"
img create -f qcow2 -o cluster_size=2M header-2m.qcow2 8M

# Version 2.
img create -f qcow2 -o compat=0.10,cluster_size=4k v2.qcow2 512k
io v2.qcow2 "write -P 0x88 4k 10k" "write -z 64k 8k" "write -P 0x99 500k 12k"

# Compressed clusters, zlib and zstd.
for cs in 512 4k 64k; do
	img convert -c -f raw -O qcow2 -o cluster_size=$cs src-64k.raw comp-zlib-$cs.qcow2
	img convert -c -f raw -O qcow2 -o cluster_size=$cs,compression_type=zstd src-64k.raw comp-zstd-$cs.qcow2
done
img convert -c -f raw -O qcow2 -o cluster_size=4k,compression_type=zstd src-200k.raw comp-zstd-big.qcow2
io comp-zlib-4k.qcow2 "write -P 0xaa 6k 3k" "write -z 20k 4k"

# Extended L2 with subcluster writes, zeroes and discards.
for cs in 16k 64k; do
	img create -f qcow2 -o cluster_size=$cs,extended_l2=on ext-$cs.qcow2 1M
	io ext-$cs.qcow2 "write -P 0x12 0 1k" "write -P 0x34 5k 7k" "write -z 40k 3k" \
		"write -P 0x56 200k 100k" "discard 256k 16k" "write -z 600k 64k"
done
img convert -c -f raw -O qcow2 -o cluster_size=16k,extended_l2=on src-64k.raw ext-comp.qcow2

# Internal snapshots (ids 1 and 2, names snap1 and snap2).
img create -f qcow2 -o cluster_size=4k snap.qcow2 256k
io snap.qcow2 "write -P 0x01 0 16k"
img snapshot -c snap1 snap.qcow2
io snap.qcow2 "write -P 0x02 8k 16k" "write -z 100k 4k"
img snapshot -c snap2 snap.qcow2
io snap.qcow2 "write -P 0x03 0 4k"
img create -f qcow2 -o compat=0.10,cluster_size=512 snap-v2.qcow2 64k
io snap-v2.qcow2 "write -P 0x04 0 2k"
img snapshot -c snap1 snap-v2.qcow2
img snapshot -c snap2 snap-v2.qcow2

# Backing chains: raw base, qcow2 base, with and without backing format.
img create -f qcow2 -o cluster_size=512 -b base.raw -F raw mid.qcow2 64k
io mid.qcow2 "write -P 0xb1 1k 2k" "write -z 10k 1k"
img create -f qcow2 -o cluster_size=1k -b mid.qcow2 -F qcow2 top.qcow2 96k
io top.qcow2 "write -P 0xb2 2k 1k" "write -P 0xb3 60k 4k"
img create -f qcow2 -o cluster_size=4k qbase.qcow2 128k
io qbase.qcow2 "write -P 0xc1 0 64k"
img create -f qcow2 -o cluster_size=4k -b qbase.qcow2 -F qcow2 qtop.qcow2 128k
io qtop.qcow2 "write -P 0xc2 4k 4k"
# Without a backing format (QEMU 7 no longer creates those: the extension
# is renamed to an unknown type, so the base is probed by its magic).
img create -f qcow2 -o cluster_size=512 -b base.raw -F raw nofmt.qcow2 64k
io nofmt.qcow2 "write -P 0xd1 0 512"
python3 - <<'PY'
d = bytearray(open("nofmt.qcow2", "rb").read())
i = d.index(bytes.fromhex("e2792aca"), 104)
d[i:i + 4] = bytes.fromhex("0badf00d")
open("nofmt.qcow2", "wb").write(d)
PY
# An image naming itself as its backing file (a loop).
# (from_memory ignores the name: every layer of the seed is this image.)
img create -f qcow2 -o cluster_size=512 -b loop.qcow2 -F qcow2 -u self.qcow2 64k

python3 - "$out" <<'EOF'
import os, struct, sys

out = sys.argv[1]
def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "seed-" + name), "wb").write(data)

MAX = 1 << 20  # the fuzzers' -max_len

def layers(mode, *files):
    """Input of the `image` target: mode byte, then length-prefixed layers."""
    data = bytes([mode])
    blobs = [open(f, "rb").read() for f in files]
    for b in blobs[:-1]:
        data += struct.pack("<I", len(b)) + b
    return data + blobs[-1]

class Image:
    def __init__(self, path):
        self.data = open(path, "rb").read()
        d = self.data
        (magic, self.version, _, _, self.cb, self.size, _, self.l1_size,
         self.l1_off) = struct.unpack(">IIQIIQIIQ", d[:48])
        assert magic == 0x514649fb
        incompat = struct.unpack(">Q", d[72:80])[0] if self.version >= 3 else 0
        hlen = struct.unpack(">I", d[100:104])[0] if self.version >= 3 else 72
        self.zstd = hlen > 104 and d[104] == 1
        self.ext = bool(incompat & 16)
        self.cs = 1 << self.cb

    def l1(self):
        for i in range(self.l1_size):
            e = struct.unpack(">Q", self.data[self.l1_off + 8 * i:self.l1_off + 8 * i + 8])[0]
            off = e & 0x00fffffffffffe00
            if off:
                yield i, off

    def l2_entries(self, l2):
        esz = 16 if self.ext else 8
        for j in range(self.cs // esz):
            yield j, struct.unpack(">Q", self.data[l2 + esz * j:l2 + esz * j + 8])[0]

    def compressed(self):
        """(raw entry, host offset, additional sectors) of compressed clusters."""
        x = 70 - self.cb
        for _, l2 in self.l1():
            for _, e in self.l2_entries(l2):
                if e & (1 << 62):
                    desc = e & ((1 << 62) - 1)
                    yield e, desc & ((1 << x) - 1), desc >> x

images = sorted(f for f in os.listdir(".") if f.endswith(".qcow2"))
for f in images:
    name = f[:-len(".qcow2")]
    data = open(f, "rb").read()
    put("header", name, data[:64 << 10])
    if len(data) <= MAX:
        put("snapshots", name, data)
        put("image", name, layers(0, f))
    if name.startswith("header-"):
        continue
    img = Image(f)
    geo = (img.cb - 9) | (0x10 if img.ext else 0) | (0x20 if img.version == 2 else 0)
    span = 1 << (img.cb + img.cb - (4 if img.ext else 3))
    for n, (i, l2) in enumerate(list(img.l1())[:2]):
        table = data[l2:l2 + img.cs]
        for k, (off, ln) in enumerate([(0, 1 << 20), (img.cs + 100, 3 * img.cs), (span - 1000, 5000)]):
            put("l2_table", f"{name}-{n}-{k}",
                bytes([geo]) + struct.pack("<QQ", i * span + off, ln) + table)
    comp = list(img.compressed())
    for k, (raw, off, add) in enumerate(comp[:6]):
        x = 70 - img.cb
        length = (add + 1) * 512 - off % 512
        chunk = data[off:off + length]
        kind = 0x80 if img.zstd else 0
        put("decompress", f"{name}-{k}", bytes([(img.cb - 9) | kind]) + chunk)
        # Re-based descriptor over a file holding just the sectors needed.
        base = off - off % 512
        file = data[base:base + (add + 1) * 512]
        rebased = (1 << 62) | (off % 512) | (add << x)
        put("compressed", f"{name}-{k}", bytes([(img.cb - 9) | kind]) + struct.pack("<Q", rebased) + file)

# Snapshot selectors (bits 3-4 of the mode byte) over snapshot images.
for f in ["snap.qcow2", "snap-v2.qcow2"]:
    for sel in (1, 2, 3):
        put("image", f"{f[:-6]}-sel{sel}", layers(sel << 3, f))
# Chains (bits 0-1: layers - 1).
put("image", "chain-raw", layers(2, "top.qcow2", "mid.qcow2", "base.raw"))
put("image", "chain-qcow2", layers(1, "qtop.qcow2", "qbase.qcow2"))
put("image", "chain-nofmt", layers(1, "nofmt.qcow2", "base.raw"))
put("image", "chain-short", layers(1, "top.qcow2", "mid.qcow2"))
# Bit 2: layers repeated to 17 (too deep a chain).
put("image", "chain-loop", layers(4, "self.qcow2"))
EOF
# VMDK images (target inputs: see fuzz/README.md).
vio() { local f=$1; shift; local a=(); for c in "$@"; do a+=(-c "$c"); done; qemu-io -f vmdk "${a[@]}" "$f" >/dev/null; }
mkdir vmdk
for sf in monolithicSparse streamOptimized monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat; do
	img convert -f raw -O vmdk -o subformat=$sf src-200k.raw vmdk/$sf.vmdk
done
img convert -f raw -O vmdk -o zeroed_grain=on src-200k.raw vmdk/zeroed.vmdk
vio vmdk/zeroed.vmdk "write -z 64k 64k" "write -P 0x42 1000 3000"
vio vmdk/monolithicSparse.vmdk "write -P 0x43 130k 5000"
img create -f vmdk vmdk/odd.vmdk 100000k
vio vmdk/odd.vmdk "write -P 0x44 99900k 100k"
img convert -f raw -O vmdk -o subformat=streamOptimized src-64k.raw vmdk/so-small.vmdk

python3 - "$out" <<'EOF2'
import os, struct, sys
out = sys.argv[1]
def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "seed-" + name), "wb").write(data)
def files(*blobs):
    """Input of the `vmdk` target: count byte, then length-prefixed files."""
    data = bytes([len(blobs) - 1])
    for b in blobs[:-1]:
        data += struct.pack("<I", len(b)) + b
    return data + blobs[-1]
r = lambda p: open(os.path.join("vmdk", p), "rb").read()
le32 = lambda d, at: struct.unpack_from("<I", d, at)[0]

def sparse_seeds(name, d):
    put("vmdk", name, files(d))
    desc_off, desc_size = struct.unpack_from("<QQ", d, 28)
    text = d[desc_off * 512:(desc_off + desc_size) * 512].split(b"\0")[0]
    if text:
        put("vmdk_descriptor", name, text)
    # Compressed grains: the first GT's allocated entries.
    if struct.unpack_from("<H", d, 77)[0] == 1:
        gd = struct.unpack_from("<Q", d, 56)[0] * 512
        gt = le32(d, gd) * 512
        grain_bits = (struct.unpack_from("<Q", d, 20)[0] * 512).bit_length() - 10
        for k, i in enumerate([i for i in range(512) if le32(d, gt + 4 * i) > 1][:4]):
            at = le32(d, gt + 4 * i) * 512
            put("vmdk_grain", f"{name}-{k}", bytes([0x80 | grain_bits, 0]) + d[at:at + 2 * 65536])
            size = le32(d, at + 8)
            put("vmdk_grain", f"{name}-{k}-nomarker", bytes([grain_bits, 0]) + d[at + 12:at + 12 + size])

for f in ["monolithicSparse", "streamOptimized", "zeroed", "odd", "so-small"]:
    sparse_seeds(f, r(f + ".vmdk"))
# streamOptimized with its header in a footer (GD_AT_END).
d = bytearray(r("so-small.vmdk"))
head = bytes(d[:512])
d[56:64] = b"\xff" * 8
d += struct.pack("<QII", 1, 0, 3) + bytes(496) + head + bytes(512)
put("vmdk", "footer", files(bytes(d)))
# Descriptor files and their extents (short flat files keep seeds small).
for f, ext in [("monolithicFlat", ["monolithicFlat-flat.vmdk"]),
               ("twoGbMaxExtentSparse", ["twoGbMaxExtentSparse-s001.vmdk"]),
               ("twoGbMaxExtentFlat", ["twoGbMaxExtentFlat-f001.vmdk"])]:
    text = r(f + ".vmdk")
    put("vmdk_descriptor", f, text)
    put("vmdk", f, files(text, *[r(e) for e in ext]))
mixed = (b"# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n"
         b"createType=\"monolithicFlat\"\nRW 64 FLAT \"a\" 8\nRDONLY 10 ZERO\n"
         b"RW 400 SPARSE \"b\"\n")
put("vmdk_descriptor", "mixed", mixed)
put("vmdk", "mixed", files(mixed, r("monolithicFlat-flat.vmdk")[:64 << 10], r("monolithicSparse.vmdk")))
EOF2
# VDI images: whole files are the `vdi` target's inputs.
mkdir -p "$out/vdi"
img convert -f raw -O vdi -o static=off src-200k.raw "$out/vdi/seed-dynamic"
img convert -f raw -O vdi -o static=on src-64k.raw "$out/vdi/seed-static"
img create -f vdi vdi-sparse.vdi 8M
qemu-io -f vdi -c "write -P 0x51 3M 5000" -c "write -P 0x52 7M 1M" vdi-sparse.vdi >/dev/null
cp vdi-sparse.vdi "$out/vdi/seed-sparse"
img create -f vdi "$out/vdi/seed-odd" 1000001
python3 - "$out/vdi/seed-zero" vdi-sparse.vdi <<'EOF2'
import struct, sys
d = bytearray(open(sys.argv[2], "rb").read())
bmap = struct.unpack_from("<I", d, 340)[0]
struct.pack_into("<I", d, bmap + 4 * 3, 0xfffffffe)
open(sys.argv[1], "wb").write(d)
EOF2
# Within the fuzzers' -max_len: a data block is 1 MiB, so the files are
# cut there (the cut blocks' far ends read as past the end of the file).
for f in "$out"/vdi/seed-*; do truncate -s '<1M' "$f"; done
# The write target: fresh images (byte 0 geometry, byte 1 refcount
# order, byte 2 size in 64 KiB) or, after 0x80 and a u32 length, a qcow2
# file; then 8-byte operations (kind, u32 offset, u24 length).
mkdir -p "$out/write"
img create -f qcow2 -o cluster_size=4096 write-seed.qcow2 1M
qemu-io -f qcow2 -c "write -P 0x61 0 8k" -c "write -c -P 0x62 64k 4k" -c "write -z 128k 4k" write-seed.qcow2 >/dev/null
img snapshot -c s1 write-seed.qcow2
python3 - "$out/write" write-seed.qcow2 <<'EOF2'
import random, struct, sys
out, image = sys.argv[1], open(sys.argv[2], "rb").read()
rnd = random.Random(15)
def ops(n):
    b = b""
    for _ in range(n):
        b += bytes([rnd.randrange(8)]) + struct.pack("<I", rnd.randrange(1 << 24)) + struct.pack("<I", rnd.randrange(1 << 17))[:3]
    return b
for i, head in enumerate([b"\x03\x04\x0f", b"\x00\x06\x01", b"\x15\x04\x07", b"\x27\x04\x03", b"\x07\x00\x1f"]):
    open(f"{out}/seed-fresh{i}", "wb").write(head + ops(24))
open(f"{out}/seed-image", "wb").write(b"\x80" + struct.pack("<I", len(image)) + image + ops(16))
EOF2
for t in "$out"/*/; do
	echo "make-seeds: $(basename "$t"): $(ls "$t" | grep -c '^seed-') seeds, $(du -sh "$t" | cut -f1)"
done

#!/bin/bash
# The benchmark harness (bench/), as a short smoke run: one read cell and
# one write cell for a second each, at 1 and at 2 vCPUs, on every backend
# (ublk when rublk is built: vm-run puts bench/mkrublk's build on PATH),
# then the report. Checks that it produces sane numbers and well-formed
# results; never a speed threshold.
. "$(dirname "$0")/lib.sh"
BENCH=$(cd "$LFF_TESTS/../../bench" && pwd)
cd "$WORK"
mkdir img out

# A small image set of the kind bench/mkimages makes: raw, plain qcow2,
# zstd (the decompression bound, copy-on-write of compressed clusters;
# rublk refuses it) and an empty qcow2 for the allocating writes.
# 32 MiB: the zstd image's compressed clusters (45 % of it) are more than
# the 4 MiB decompressed-cluster cache holds, so every run decompresses.
python3 "$BENCH/gendata.py" img/raw.img 32
qemu-img convert -f raw -O qcow2 -o cluster_size=65536 img/raw.img img/qcow2.img
qemu-img convert -f raw -O qcow2 -c -o cluster_size=65536,compression_type=zstd img/raw.img img/qcow2-zstd.img
qemu-img create -q -f qcow2 -o cluster_size=65536 img/qcow2-alloc.img 32M
qcow2=no
modprobe loop_file_fmt_qcow2 2>/dev/null && qcow2=yes
backends=lff,qemu-nbd,loop ublk=no rublk=()
if command -v rublk >/dev/null; then
	backends+=,ublk ublk=yes rublk=(--rublk "$(command -v rublk)")
else
	echo "SKIP - $SUITE: the ublk backend: rublk is not built (bench/mkrublk; scripts/run-tests builds it before the guest suites)"
fi

check "guest-bench: a read and a write cell, 1 s, at 1 and 2 vCPUs, $backends" \
	"$BENCH/guest-bench" --imgdir img --out out --images raw,qcow2,qcow2-zstd,qcow2-alloc \
	--cells psync-4k-rand,psync-4k-randwrite --backends "$backends" --online 1,2 \
	--runtime 1 --ramp 0 --repeat 1 --no-sparse "${rublk[@]}"
check_fails "guest-bench refuses an unknown cell" "no cell nope" \
	"$BENCH/guest-bench" --imgdir img --out out-bad --cells nope
check_fails "guest-bench refuses ublk without rublk" "needs --rublk" \
	"$BENCH/guest-bench" --imgdir img --out out-bad --backends ublk
check_eq "all vCPUs online again afterwards" "$(cat /sys/devices/system/cpu/present)" \
	"$(cat /sys/devices/system/cpu/online)"
check "no ublk device left behind" sh -c '! ls /dev/ublkb* 2>/dev/null | grep -q .'
check "report.py writes results.csv, table.md, gain.svg" python3 "$BENCH/report.py" out

# Every row is well formed and every measured number sane: positive,
# MiB/s = IOPS x 4 KiB, ratios = IOPS quotients, the decompression bound
# present for lff on zstd and no more than the read's latency (at QD1 the
# decompression happens inside the read). A qcow2 row is measured when the
# driver is there, else it carries the skip note and no number.
check "results.csv: rows, numbers, ratios and bounds are consistent" python3 - out/results.csv "$qcow2" "$ublk" <<'PY'
import csv, sys
path, qcow2, ublk = sys.argv[1], sys.argv[2] == "yes", sys.argv[3] == "yes"
with open(path, newline="") as f:
    r = csv.reader(f)
    header = next(r)
    rows = [dict(zip(header, row)) for row in r]
    assert all(len(row) == len(header) for row in rows), "ragged rows"
want = ["image", "format", "cell", "backend", "cpus", "iops", "mib_s", "lat_us", "ratio_to_loop",
        "ratio_to_qemu_nbd", "ratio_to_ublk", "bound_us", "lat_to_bound", "runs", "note"]
assert header == want, f"header {header}"
by = {(x["image"], x["cell"], x["backend"], x["cpus"]): x for x in rows}
R, W = "psync-4k-rand", "psync-4k-randwrite"
peers = ["qemu-nbd", "loop"] + (["ublk"] if ublk else [])
expect = set()
for n in ("1", "2"):
    expect |= {("raw", c, b, n) for c in (R, W) for b in ["lff"] + peers}
    if qcow2:
        qpeers = ["lff", "qemu-nbd"] + (["ublk"] if ublk else [])
        expect |= {(i, R, b, n) for i in ("qcow2", "qcow2-zstd") for b in qpeers}
        expect |= {(i, W, b, n) for i in ("qcow2-alloc", "qcow2-zstd") for b in qpeers}
if not qcow2:
    expect |= {(i, c, "lff", "1") for i, c in (("qcow2", R), ("qcow2-zstd", R), ("qcow2-zstd", W), ("qcow2-alloc", W))}
assert set(by) == expect, f"rows: missing {sorted(expect - set(by))}, extra {sorted(set(by) - expect)}"
for key, x in by.items():
    image, cell, b, n = key
    if image != "raw" and not qcow2:
        assert x["note"] == "qcow2 driver not available" and x["iops"] == "", x
        continue
    if image == "qcow2-zstd" and b == "ublk":
        # rublk's qcow2-rs does not know zstd (an incompatible feature bit).
        assert x["iops"] == "" and x["note"].startswith("refused: "), x
        continue
    assert x["iops"] and x["mib_s"] and x["lat_us"], f"no figures: {x}"
    iops, mib, lat = float(x["iops"]), float(x["mib_s"]), float(x["lat_us"])
    assert iops > 10 and mib > 0 and lat > 0, x
    assert abs(mib - iops * 4096 / 1048576) <= 0.02 * mib + 0.01, f"MiB/s vs IOPS: {x}"
    assert x["runs"] == "1" and x["note"] == "", x
    def near(field, peer):
        q = float(by[peer]["iops"])
        assert abs(float(x[field]) - iops / q) < 0.01 + 0.001 * iops / q, (field, x)
    near("ratio_to_qemu_nbd", (image, cell, "qemu-nbd", n))
    if b != "loop":
        near("ratio_to_loop", ("raw", cell, "loop", n))
    if ublk and b != "ublk" and image != "qcow2-zstd":
        near("ratio_to_ublk", (image, cell, "ublk", n))
    if image == "qcow2-zstd" and b == "lff" and cell == R:
        bound = float(x["bound_us"])
        assert 0 < bound <= lat * 1.05, f"bound {bound} us vs latency {lat} us: {x}"
        assert abs(float(x["lat_to_bound"]) - lat / bound) < 0.01 + 0.001 * lat / bound, x
    else:
        assert x["bound_us"] == "" and x["lat_to_bound"] == "", x
print("ok")
PY
check "table.md: loop-first reads, the bound, the writes, TCG or KVM named" sh -c '
	grep -q "^## Reads: lff against kernel loop" out/table.md &&
	grep -q "lff/loop 1 vCPU .* lff/loop 2 vCPUs .* lff/qemu-nbd 1 vCPU" out/table.md &&
	grep -q "^## Writes" out/table.md && grep -Eq "under \*\*(TCG|KVM)\*\*" out/table.md'
if [ $qcow2 = yes ]; then
	check "table.md: the decompression bound of qcow2 zstd" grep -q "^| qcow2 zstd .* psync-4k-rand " out/table.md
	[ $ublk = no ] || check "table.md: ublk's refusal of zstd with its reason" \
		grep -q "^- qcow2 zstd, ublk: refused: " out/table.md
else
	check "table.md: qcow2 skipped with the reason" grep -q "qcow2 driver not available" out/table.md
fi
check "gain.svg: well-formed SVG with bars in two panels" python3 -c '
import sys, xml.etree.ElementTree as ET
ns = "{http://www.w3.org/2000/svg}"
root = ET.parse("out/gain.svg").getroot()
assert root.tag == ns + "svg", root.tag
bars = [e for e in root.iter(ns + "rect") if e.find(ns + "title") is not None]
assert len(bars) >= 4, len(bars)
assert all(float(b.get("height")) > 0 for b in bars)
titles = " ".join(b.find(ns + "title").text for b in bars)
assert " 1 vCPU:" in titles and " 2 vCPUs:" in titles, titles
'
[ $FAILS = 0 ] || sed 's/^/#   /' out/table.md
# guest-bench detached its devices; unload the format drivers it loaded.
rmmod loop_file_fmt_qcow2 loop_file_fmt_vmdk loop_file_fmt_vdi loop_file_fmt_raw 2>/dev/null
finish

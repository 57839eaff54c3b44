#!/bin/bash
# The benchmark harness (bench/), as a short smoke run: one cell for a
# second on every backend, then the report. Checks that it produces sane
# numbers and well-formed results; never a speed threshold.
. "$(dirname "$0")/lib.sh"
BENCH=$(cd "$LFF_TESTS/../../bench" && pwd)
cd "$WORK"
mkdir img out

# A small image set of the kind bench/mkimages makes: raw and plain qcow2.
python3 "$BENCH/gendata.py" img/raw.img 8
qemu-img convert -f raw -O qcow2 -o cluster_size=65536 img/raw.img img/qcow2.img
qcow2=no
modprobe loop_file_fmt_qcow2 2>/dev/null && qcow2=yes

check "guest-bench: one cell, 1 s, lff + qemu-nbd + loop" \
	"$BENCH/guest-bench" --imgdir img --out out --images raw,qcow2 --cells psync-4k-rand \
	--backends lff,qemu-nbd,loop --runtime 1 --ramp 0 --repeat 1 --no-sparse --no-scaling
check_fails "guest-bench refuses an unknown cell" "no cell nope" \
	"$BENCH/guest-bench" --imgdir img --out out-bad --cells nope
check_eq "all vCPUs online again afterwards" "$(cat /sys/devices/system/cpu/present)" \
	"$(cat /sys/devices/system/cpu/online)"
check "report.py writes results.csv, table.md, gain.svg" python3 "$BENCH/report.py" out

# Every row is well formed and every measured number sane: positive,
# MiB/s = IOPS x 4 KiB, ratios = IOPS quotients. A qcow2 row is measured
# when the driver is there, else it carries the skip note and no number.
check "results.csv: rows, numbers and ratios are consistent" python3 - out/results.csv "$qcow2" <<'PY'
import csv, sys
path, qcow2 = sys.argv[1], sys.argv[2] == "yes"
with open(path, newline="") as f:
    r = csv.reader(f)
    header = next(r)
    rows = [dict(zip(header, row)) for row in r]
    assert all(len(row) == len(header) for row in rows), "ragged rows"
want = ["image", "format", "cell", "backend", "iops", "mib_s", "lat_us",
        "ratio_to_qemu_nbd", "ratio_to_loop", "runs", "note"]
assert header == want, f"header {header}"
by = {(x["image"], x["backend"]): x for x in rows}
expect = {("raw", "lff"), ("raw", "qemu-nbd"), ("raw", "loop")}
expect |= {("qcow2", "lff"), ("qcow2", "qemu-nbd")} if qcow2 else {("qcow2", "lff")}
assert set(by) == expect, f"rows {sorted(by)}"
for key, x in by.items():
    assert x["cell"] == "psync-4k-rand", x
    if key[0] == "qcow2" and not qcow2:
        assert x["note"] == "qcow2 driver not available" and x["iops"] == "", x
        continue
    iops, mib, lat = float(x["iops"]), float(x["mib_s"]), float(x["lat_us"])
    assert iops > 10 and mib > 0 and lat > 0, x
    assert abs(mib - iops * 4096 / 1048576) <= 0.02 * mib + 0.01, f"MiB/s vs IOPS: {x}"
    assert x["runs"] == "1" and x["note"] == "", x
    nbd = float(by[(key[0], "qemu-nbd")]["iops"])
    assert abs(float(x["ratio_to_qemu_nbd"]) - iops / nbd) < 0.01 + 0.001 * iops / nbd, x
    if key[1] != "loop":
        loop = float(by[("raw", "loop")]["iops"])
        assert abs(float(x["ratio_to_loop"]) - iops / loop) < 0.01 + 0.001 * iops / loop, x
print("ok")
PY
check "table.md: the gain table has the cell and names TCG or KVM" \
	sh -c 'grep -q "^| psync-4k-rand " out/table.md && grep -Eq "under \*\*(TCG|KVM)\*\*" out/table.md'
if [ $qcow2 = no ]; then
	check "table.md: qcow2 skipped with the reason" grep -q "qcow2 driver not available" out/table.md
fi
check "gain.svg: well-formed SVG with bars" python3 -c '
import sys, xml.etree.ElementTree as ET
root = ET.parse("out/gain.svg").getroot()
assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
bars = [e for e in root.iter("{http://www.w3.org/2000/svg}rect") if e.find("{http://www.w3.org/2000/svg}title") is not None]
assert len(bars) >= 2, len(bars)
assert all(float(b.get("height")) > 0 for b in bars)
'
# guest-bench detached its devices; unload the format drivers it loaded.
rmmod loop_file_fmt_qcow2 loop_file_fmt_raw 2>/dev/null
finish

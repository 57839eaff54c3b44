#!/usr/bin/env python3
"""Turn a benchmark run (bench/guest-bench output) into results.

    report.py DIR

Reads DIR/raw.csv, DIR/env.txt and, when present, DIR/sparse.csv and
DIR/sparse-sysfs.txt. Writes:

    DIR/results.csv  one row per image, cell, backend and vCPU count: the
                     median of the repeats, the ratios to kernel loop (the
                     raw copy, same cell), to qemu-nbd and to ublk (same
                     image and cell), and for lff on a compressed image the
                     decompression bound per read and lff's latency over it
    DIR/table.md     lff against loop, qemu-nbd and ublk at every vCPU
                     count; compressed reads against the decompression
                     bound; the write cells; scaling; details; the
                     sparse-image figures; the settings
    DIR/gain.svg     bar chart of lff IOPS over kernel loop's, one panel per
                     vCPU count

and prints table.md. Standard library only.
"""
import csv
import html
import math
import sys
from pathlib import Path

BACKENDS = ["lff", "loop", "qemu-nbd", "ublk"]
PEERS = ["loop", "qemu-nbd", "ublk"]  # the ratios, in the order the tables lead with
IMAGE_ORDER = ["raw", "qcow2", "qcow2-zlib", "qcow2-zstd", "qcow2-xl2", "vmdk-stream", "vdi",
               "qcow2-alloc", "qcow2-prealloc"]
IMAGE_LABEL = {
    "raw": "raw",
    "qcow2": "qcow2 (64 KiB clusters)",
    "qcow2-zlib": "qcow2 zlib",
    "qcow2-zstd": "qcow2 zstd",
    "qcow2-xl2": "qcow2 extended L2",
    "vmdk-stream": "VMDK streamOptimized",
    "vdi": "VDI dynamic",
    "qcow2-alloc": "qcow2, empty (allocating)",
    "qcow2-prealloc": "qcow2, preallocated (in place)",
}
# What each image is for the write cells.
WRITE_LABEL = {
    "raw": "raw (in place)",
    "qcow2-alloc": "qcow2 allocating (fresh, empty)",
    "qcow2-prealloc": "qcow2 in place (preallocation=metadata)",
    "qcow2-zstd": "qcow2 zstd base (copy-on-write of compressed clusters)",
}
CELL_ORDER = [
    "psync-512-seq", "psync-512-rand", "psync-4k-seq", "psync-4k-rand",
    "libaio-qd32-4k-rand", "uring-qd32-4k-rand", "psync-1m-seq",
    "psync-4k-randwrite", "psync-4k-seqwrite", "uring-qd32-4k-randwrite", "uring-qd32-4k-seqwrite",
]
# The issues' targets, for the notes under the tables.
BOUND_TARGET = 1.3  # compressed 4 KiB random reads: lff latency / bound
WRITE_TARGETS = {"qcow2-prealloc": ("loop", 0.9), "qcow2-alloc": ("qemu-nbd", 3.0)}


def is_write(cell):
    return "write" in cell


def order(seq, known):
    return sorted(seq, key=lambda x: (known.index(x) if x in known else len(known), x))


def fnum(s):
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if v == v else None


def read_env(d):
    env = {}
    p = d / "env.txt"
    if p.exists():
        for line in p.read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                env[k.strip()] = v.strip()
    return env


def aggregate(path, default_cpus):
    """{(image, cell, backend, cpus): {iops, mib_s, lat_us, bound_us, dec_per_read, runs, note, format}}"""
    runs = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            key = (r["image"], r["cell"], r["backend"], int(r.get("cpus") or default_cpus))
            e = runs.setdefault(key, {"format": r["format"], "vals": [], "notes": []})
            iops, mib, lat = fnum(r["iops"]), fnum(r["mib_s"]), fnum(r["lat_us"])
            if iops is not None and mib is not None and iops > 0:
                e["vals"].append((iops, mib, lat, fnum(r.get("bound_us")), fnum(r.get("dec_per_read"))))
            if r["note"]:
                e["notes"].append(r["note"])
    out = {}
    for key, e in runs.items():
        a = {"format": e["format"], "runs": len(e["vals"]), "note": "; ".join(dict.fromkeys(e["notes"]))}
        if e["vals"]:
            # The median run by IOPS (the lower middle one for an even count):
            # a real run, its MiB/s, latency and bound with it.
            vals = sorted(e["vals"], key=lambda v: v[0])
            a.update(zip(("iops", "mib_s", "lat_us", "bound_us", "dec_per_read"), vals[(len(vals) - 1) // 2]))
            # No decompression time (an image without compressed clusters,
            # or every read served from the cache): no bound to compare with.
            if not a["bound_us"]:
                a["bound_us"] = a["dec_per_read"] = None
        out[key] = a
    return out


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def secs(t):
    """A fio time as text: a bare number is seconds."""
    return f"{t} s" if t.replace(".", "", 1).isdigit() else t


def fmt_iops(v):
    return "" if v is None else f"{v:.0f}"


def fmt_x(v):
    return "" if v is None else f"{v:.2f}"


def vcpus(n):
    return f"{n} vCPU" + ("s" if n != 1 else "")


def md_table(header, rows, align):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells):
        return "| " + " | ".join(
            str(c).rjust(w) if a == "r" else str(c).ljust(w) for c, w, a in zip(cells, widths, align)) + " |"

    sep = "| " + " | ".join(("-" * (w - 1) + ":") if a == "r" else "-" * w for w, a in zip(widths, align)) + " |"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


class Run:
    """The aggregated figures of one run directory, and the ratios."""

    def __init__(self, d):
        self.env = read_env(d)
        first = self.env.get("online_cpus", "1").split(",")[0]
        self.agg = aggregate(d / "raw.csv", int(first) if first.isdigit() else 1)
        self.images = order({k[0] for k in self.agg}, IMAGE_ORDER)
        self.cells = order({k[1] for k in self.agg}, CELL_ORDER)
        self.cpus = sorted({k[3] for k in self.agg})
        # An image whose every row is a note without figures: skipped.
        self.skipped = {}
        for image in self.images:
            es = [a for k, a in self.agg.items() if k[0] == image]
            if all(a.get("iops") is None for a in es):
                self.skipped[image] = "; ".join(sorted({a["note"] for a in es if a["note"]})) or "no figures"

    def a(self, image, cell, backend, cpus):
        return self.agg.get((image, cell, backend, cpus), {})

    def get(self, image, cell, backend, cpus, field="iops"):
        return self.a(image, cell, backend, cpus).get(field)

    def peer(self, image, cell, peer, cpus):
        """The peer's IOPS lff on IMAGE is compared with: loop on the raw copy."""
        return self.get("raw" if peer == "loop" else image, cell, peer, cpus)

    def cell_ratio(self, image, cell, peer, cpus):
        """lff / PEER as table text: a ratio, the peer's refusal, or a dash."""
        if image in self.skipped:
            return "skipped"
        x = ratio(self.get(image, cell, "lff", cpus), self.peer(image, cell, peer, cpus))
        if x is not None:
            return f"{x:.2f}×"
        note = self.a("raw" if peer == "loop" else image, cell, peer, cpus).get("note", "")
        if note.startswith("refused"):
            return "refused"
        if note.startswith("not supported"):
            return "n/a"
        if note.startswith("failed"):
            return "failed"
        return "—"

    def has_cells(self, image, cells):
        return any((image, c, b, n) in self.agg for c in cells for b in BACKENDS for n in self.cpus)


def build(d):
    run = Run(d)
    env, cpus = run.env, run.cpus
    rcells = [c for c in run.cells if not is_write(c)]
    wcells = [c for c in run.cells if is_write(c)]

    # results.csv
    rows = []
    for image in run.images:
        for cell in run.cells:
            for b in BACKENDS:
                for n in cpus:
                    a = run.a(image, cell, b, n)
                    if not a:
                        continue
                    iops = a.get("iops")
                    bound = a.get("bound_us") if b == "lff" else None
                    rows.append({
                        "image": image, "format": a["format"], "cell": cell, "backend": b, "cpus": n,
                        "iops": fmt_iops(iops),
                        "mib_s": "" if a.get("mib_s") is None else f"{a['mib_s']:.2f}",
                        "lat_us": "" if a.get("lat_us") is None else f"{a['lat_us']:.1f}",
                        "ratio_to_loop": fmt_x(ratio(iops, run.peer(image, cell, "loop", n))) if b != "loop" else "",
                        "ratio_to_qemu_nbd": fmt_x(ratio(iops, run.get(image, cell, "qemu-nbd", n))),
                        "ratio_to_ublk": fmt_x(ratio(iops, run.get(image, cell, "ublk", n))) if b != "ublk" else "",
                        "bound_us": "" if bound is None else f"{bound:.1f}",
                        "lat_to_bound": fmt_x(ratio(a.get("lat_us"), bound)),
                        "runs": a["runs"], "note": a["note"],
                    })
    fields = ["image", "format", "cell", "backend", "cpus", "iops", "mib_s", "lat_us",
              "ratio_to_loop", "ratio_to_qemu_nbd", "ratio_to_ublk", "bound_us", "lat_to_bound", "runs", "note"]
    with open(d / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)

    md = []
    accel = env.get("accel", "unknown")
    md.append("# Benchmark results")
    md.append("")
    md.append(
        f"Taken {env.get('date', '?')} under **{accel.upper()}** "
        f"({'emulated CPU, no KVM: absolute figures are slow, only ratios measured in one guest mean anything' if accel == 'tcg' else 'hardware virtualisation'}), "
        f"{env.get('vcpus', '?')} vCPUs (every cell at {' and at '.join(str(n) for n in cpus)} online), "
        f"{env.get('memory_mib', '?')} MiB, kernel {env.get('kernel', '?')}, "
        f"{env.get('fio', 'fio')}, {env.get('qemu_nbd', 'qemu-nbd')}, {env.get('rublk', 'rublk not used')}; "
        f"{secs(env.get('runtime', '?'))} per run after {secs(env.get('ramp', '?'))} ramp, "
        f"median of {env.get('repeat', '1')} run(s); images in guest tmpfs"
        + (f"; commit {env['commit']}" if env.get("commit") else "") + ".")
    md.append("")
    md.append(f"- lff (ours): `{env.get('lff_attach', '')}`")
    md.append(f"- loop: `{env.get('loop_attach', '')}` (the `qemu-img convert -O raw` copy; "
              "measured under image raw, every image's lff figures are compared with it)")
    md.append(f"- qemu-nbd: `{env.get('qemu_nbd_attach', '')}`")
    md.append(f"- ublk: `{env.get('ublk_attach', 'not run')}`")
    md.append("")
    md.append("Under TCG on a shared host single runs vary by tens of per cent, and more between "
              "images measured minutes apart; the backends of a cell are measured back to back. "
              "Kernel loop is the limit for an uncompressed image: ratios between two in-kernel "
              "paths carry over to hardware far better than ratios against a userspace server, "
              "which TCG makes look slow. How to read this: bench/README.md, \"Reading the results\".")
    md.append("")
    pair = lambda p: [f"lff/{p} {vcpus(n)}" for n in cpus]
    if rcells:
        md.append("## Reads: lff against kernel loop on the raw copy, qemu-nbd and ublk (IOPS ratios; > 1: lff is faster)")
        md.append("")
        header = ["image", "cell"] + [h for p in PEERS for h in pair(p)]
        trows = []
        for image in run.images:
            if not run.has_cells(image, rcells):
                continue
            if image in run.skipped:
                trows.append([IMAGE_LABEL.get(image, image), "(all)"] + ["skipped"] * (len(header) - 2))
                continue
            for cell in rcells:
                # (raw with loop alone: the reference, not a row of its own)
                if not any(run.a(image, cell, "lff", n) for n in cpus):
                    continue
                trows.append([IMAGE_LABEL.get(image, image), cell]
                             + [run.cell_ratio(image, cell, p, n) for p in PEERS for n in cpus])
        md.append(md_table(header, trows, ["l", "l"] + ["r"] * (len(header) - 2)))
        md.append("")
        md.extend(notes(run, rcells))
        md.append("![lff over kernel loop](gain.svg)")
        md.append("")
    md.extend(bound_section(run, rcells))
    md.extend(write_section(run, wcells))
    md.extend(scaling_section(run))
    md.extend(details_section(run))
    md.extend(sparse_section(d))
    md.append("Cells (bench/fio/*.fio): psync = one request at a time (QD1), O_DIRECT, "
              "whole device; seq/rand = sequential/random; qd32 = 32 requests in flight (libaio or io_uring); "
              "*write cells write, each run on a fresh copy of the image.")
    md.append("")
    (d / "table.md").write_text("\n".join(md))
    (d / "gain.svg").write_text(svg(run, env))
    return "\n".join(md)


def notes(run, cells):
    """The reasons behind "skipped", "refused", "n/a" and "failed", one line each."""
    out = []
    for image, note in run.skipped.items():
        if run.has_cells(image, cells):
            out.append(f"- {IMAGE_LABEL.get(image, image)}: skipped, {note}.")
    for image in run.images:
        if image in run.skipped:
            continue
        for b in ("ublk", "qemu-nbd"):
            ns = {run.a(image, c, b, n).get("note", "") for c in cells for n in run.cpus}
            ns = {x for x in ns if x.startswith(("refused", "not supported", "failed"))}
            for x in sorted(ns):
                out.append(f"- {IMAGE_LABEL.get(image, image)}, {b}: {x}.")
    return out + ([""] if out else [])


def bound_section(run, cells):
    """Compressed reads: lff's mean latency against the decompression bound."""
    rows = []
    for image in run.images:
        for cell in cells:
            figs = [run.a(image, cell, "lff", n) for n in run.cpus]
            if not any(a.get("bound_us") is not None for a in figs):
                continue
            r = [IMAGE_LABEL.get(image, image), cell]
            for a in figs:
                lat, bound = a.get("lat_us"), a.get("bound_us")
                x = ratio(lat, bound)
                if x is not None and cell == "psync-4k-rand":
                    x_text = f"{x:.2f} ({'met' if x <= BOUND_TARGET else 'missed'})"
                else:
                    x_text = "" if x is None else f"{x:.2f}"
                r += ["" if lat is None else f"{lat:.0f}", "" if bound is None else f"{bound:.0f}", x_text,
                      "" if a.get("dec_per_read") is None else f"{a['dec_per_read']:.2f}"]
            rows.append(r)
    if not rows:
        return []
    header = ["image", "cell"]
    for n in run.cpus:
        header += [f"lff µs/read {vcpus(n)}", f"bound µs/read {vcpus(n)}", f"lff/bound {vcpus(n)}",
                   f"decompressions/read {vcpus(n)}"]
    return [
        "## Compressed reads against the decompression bound",
        "",
        "The bound is the time the kernel's zlib/zstd took, per read, to decompress the data "
        "the run read: the driver's `decompress_stats` (nanoseconds spent decompressing) before "
        "and after the run, divided by the reads of the run (the device's read bytes over the "
        "cell's block size); a read served from the decompressed-cluster cache costs none. "
        "lff µs/read is fio's mean completion latency. A ratio near 1 means a read costs little "
        "beyond its decompression; at QD32 the latency includes queueing, so only the QD1 rows "
        f"compare directly (target for psync-4k-rand: ≤ {BOUND_TARGET:g}).",
        "",
        md_table(header, rows, ["l", "l"] + ["r"] * (len(header) - 2)),
        "",
    ]


def write_section(run, cells):
    if not cells:
        return []
    rows = []
    for image in run.images:
        if not run.has_cells(image, cells):
            continue
        for cell in cells:
            if not any(run.a(image, cell, "lff", n) for n in run.cpus):
                continue
            r = [WRITE_LABEL.get(image, image), cell]
            for n in run.cpus:
                r.append(fmt_iops(run.get(image, cell, "lff", n)))
                r += [run.cell_ratio(image, cell, p, n) for p in PEERS]
            r.append(target_text(run, image, cell))
            rows.append(r)
    header = ["image", "cell"]
    for n in run.cpus:
        header += [f"lff IOPS {vcpus(n)}"] + [f"lff/{p} {vcpus(n)}" for p in PEERS]
    header.append("target (" + "; ".join(vcpus(n) for n in run.cpus) + ")")
    out = ["## Writes: lff against kernel loop on a raw copy, qemu-nbd and ublk (IOPS ratios)", "",
           "Every run writes a fresh copy of the image, attached read-write for that run alone "
           "(loop: a fresh raw copy); qcow2 copies pass `qemu-img check` afterwards (a failure "
           "empties the run and notes it). Targets: in place (preallocated) "
           f"≥ {WRITE_TARGETS['qcow2-prealloc'][1]:g}× loop on raw; allocating "
           f"≥ {WRITE_TARGETS['qcow2-alloc'][1]:g}× qemu-nbd.", "",
           md_table(header, rows, ["l", "l"] + ["r"] * (len(header) - 3) + ["l"]), ""]
    out.extend(notes(run, cells))
    return out


def target_text(run, image, cell):
    """The write target of IMAGE, met or missed at each vCPU count."""
    if image not in WRITE_TARGETS:
        return ""
    peer, want = WRITE_TARGETS[image]
    got = [ratio(run.get(image, cell, "lff", n), run.peer(image, cell, peer, n)) for n in run.cpus]
    return f"≥ {want:g}× {peer}: " + "; ".join(
        "—" if x is None else ("met" if x >= want else "missed") for x in got)


def scaling_section(run):
    if len(run.cpus) < 2:
        return []
    lo, hi = run.cpus[0], run.cpus[-1]
    rows = []
    for image in run.images:
        for cell in run.cells:
            a, b = run.get(image, cell, "lff", lo), run.get(image, cell, "lff", hi)
            if a is None and b is None:
                continue
            x = ratio(b, a)
            rows.append([image, cell, fmt_iops(a), fmt_iops(b), f"{x:.2f}×" if x is not None else "—"])
    if not rows:
        return []
    return [f"## Scaling of lff with vCPUs ({lo} vs {hi} online)", "",
            md_table(["image", "cell", f"IOPS {vcpus(lo)}", f"IOPS {vcpus(hi)}", f"{hi} / {lo}"], rows,
                     ["l", "l", "r", "r", "r"]), ""]


def details_section(run):
    header = ["image", "cell", "vCPUs", "lff IOPS", "lff MiB/s", "lff lat µs"] + \
        [f"{p} IOPS" for p in PEERS] + ["note"]
    rows = []
    for image in run.images:
        if image in run.skipped:
            rows.append([image, "(all)", "", "", "", "", "", "", "", run.skipped[image]])
            continue
        for cell in run.cells:
            for n in run.cpus:
                if not any(run.a(image, cell, b, n) for b in BACKENDS):
                    continue
                a = run.a(image, cell, "lff", n)
                lat = a.get("lat_us")
                note = "; ".join(dict.fromkeys(
                    f"{b}: {run.a(image, cell, b, n)['note']}" for b in BACKENDS
                    if run.a(image, cell, b, n).get("note")))
                rows.append([image, cell, n, fmt_iops(a.get("iops")),
                             "" if a.get("mib_s") is None else f"{a['mib_s']:.1f}",
                             "" if lat is None else f"{lat:.0f}"]
                            + [fmt_iops(run.peer(image, cell, p, n)) for p in PEERS] + [note])
    return ["## Details", "", md_table(header, rows, ["l", "l", "r", "r", "r", "r", "r", "r", "r", "l"]), ""]


def sparse_section(d):
    p = d / "sparse.csv"
    if not p.exists():
        return []
    out = ["## Large sparse image: qcow2, 1 TiB virtual, 64 KiB clusters", ""]
    with open(p, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and all(not r["attach_ms"] for r in rows):
        out += [f"Skipped: {rows[0]['note']}.", ""]
        return out
    out.append("256 data clusters, one every 4 GiB, so 256 L2 tables. Attach: wall time of the "
               "attach command (losetup-fmt; qemu-nbd -c or rublk add until the device has its "
               "size), the median of three. Reads: one checked O_DIRECT 4 KiB read in each data "
               "cluster. Memory (KiB): growth of Slab (kmalloc, large ones included) and "
               "VmallocUsed after the attach and after the reads, the drop in MemAvailable after "
               "the reads (the server process included), and the server's (qemu-nbd's, rublk's) RSS.")
    out.append("")
    header = ["backend", "attach ms", "256 reads ms", "Slab Δ attach", "vmalloc Δ attach",
              "Slab Δ reads", "vmalloc Δ reads", "MemAvailable Δ reads", "server RSS", "note"]
    out.append(md_table(header, [[r["backend"], r["attach_ms"], r["reads_ms"], r["slab_attach_kib"],
                                  r["vmalloc_attach_kib"], r["slab_reads_kib"], r["vmalloc_reads_kib"],
                                  r["memavail_reads_kib"], r["server_rss_kib"], r["note"]] for r in rows],
                        ["l"] + ["r"] * 8 + ["l"]))
    out.append("")
    s = d / "sparse-sysfs.txt"
    if s.exists() and s.read_text().strip():
        out += ["```", s.read_text().strip(), "```", ""]
    return out


PALETTE = {"raw": "#4c72b0", "qcow2": "#55a868", "qcow2-zlib": "#c44e52",
           "qcow2-zstd": "#8172b2", "qcow2-xl2": "#ccb974", "vmdk-stream": "#64b5cd",
           "vdi": "#da8bc3", "qcow2-alloc": "#8c613c", "qcow2-prealloc": "#dd8452",
           "qemu-nbd": "#b0b0b0", "ublk": "#707070"}


def svg(run, env):
    """One panel per vCPU count: per cell, lff IOPS / loop IOPS for every
    image, and qemu-nbd and ublk on the raw copy / loop in grey; 1 = loop."""
    cells = run.cells
    series = [(i, f"lff, {IMAGE_LABEL.get(i, i)}",
               lambda c, n, i=i: ratio(run.get(i, c, "lff", n), run.peer(i, c, "loop", n)))
              for i in run.images if i not in run.skipped]
    for p in ("qemu-nbd", "ublk"):
        if any(run.get("raw", c, p, n) for c in cells for n in run.cpus):
            series.append((p, f"{p}, raw", lambda c, n, p=p: ratio(run.get("raw", c, p, n),
                                                                  run.get("raw", c, "loop", n))))
    vals = [v for v in (f(c, n) for _, _, f in series for c in cells for n in run.cpus) if v is not None]
    ticks = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]
    vmin = max([t for t in ticks if t <= min(vals + [1.0]) / 1.15] or [0.01])
    vmax = min([t for t in ticks if t >= max(vals + [2.0]) * 1.15] or [100])
    W, left, right, top, ph, gap = 1100, 60, 20, 60, 260, 70
    pw = W - left - right
    n_s = max(len(series), 1)
    gw = pw / max(len(cells), 1)
    bw = min(14.0, (gw * 0.85) / n_s)
    lv = math.log10
    e = html.escape
    o = ['SVG-OPEN', 'BACKGROUND',
         f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="16">'
         'loop-file-fmt (lff): IOPS relative to kernel loop on the raw copy</text>',
         f'<text x="{W / 2}" y="40" text-anchor="middle" fill="#555">'
         f'{e(env.get("accel", "?").upper())}, fio {e(secs(env.get("runtime", "?")))} per run, '
         f'{e(env.get("date", ""))}; log scale; 1 = kernel loop; grey: qemu-nbd and ublk on the raw copy</text>']
    for pi, ncpu in enumerate(run.cpus):
        y0p = top + pi * (ph + gap)
        y = lambda v, y0p=y0p: y0p + ph - (lv(min(max(v, vmin), vmax)) - lv(vmin)) / (lv(vmax) - lv(vmin)) * ph
        o.append(f'<text x="{left}" y="{y0p - 6}" font-weight="bold">{vcpus(ncpu)} online</text>')
        for t in ticks:
            if vmin <= t <= vmax:
                o.append(f'<line x1="{left}" x2="{W - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#e5e5e5"/>')
                o.append(f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end" fill="#555">{t:g}×</text>')
        for ci, cell in enumerate(cells):
            x0 = left + ci * gw + (gw - bw * n_s) / 2
            for si, (key, label, f) in enumerate(series):
                v = f(cell, ncpu)
                if v is None:
                    continue
                x = x0 + si * bw
                ya, yb = sorted((y(1), y(v)))
                o.append(f'<rect x="{x:.1f}" y="{ya:.1f}" width="{bw - 1:.1f}" height="{max(yb - ya, 0.5):.1f}" '
                         f'fill="{PALETTE.get(key, "#333")}"><title>{e(label)} {e(cell)} {vcpus(ncpu)}: '
                         f'{v:.2f}×</title></rect>')
            o.append(f'<text x="{left + ci * gw + gw / 2:.1f}" y="{y0p + ph + 16}" text-anchor="middle" '
                     f'font-size="10">{e(cell)}</text>')
        o.append(f'<line x1="{left}" x2="{W - right}" y1="{y(1):.1f}" y2="{y(1):.1f}" stroke="black" stroke-width="1.5"/>')
        o.append(f'<line x1="{left}" x2="{left}" y1="{y0p}" y2="{y0p + ph}" stroke="black"/>')
    lx, ly = left, top + len(run.cpus) * (ph + gap) - gap + 44
    for key, label, _ in series:
        if lx + 30 + 7 * len(label) > W - right:
            lx, ly = left, ly + 18
        o.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{PALETTE.get(key, "#333")}"/>')
        o.append(f'<text x="{lx + 16}" y="{ly}">{e(label)}</text>')
        lx += 30 + 7 * len(label)
    for image, note in run.skipped.items():
        ly += 18
        o.append(f'<text x="{left}" y="{ly}" fill="#999">{e(IMAGE_LABEL.get(image, image))}: skipped, {e(note)}</text>')
    H = ly + 16
    o[0] = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
            'font-family="sans-serif" font-size="12">')
    o[1] = f'<rect width="{W}" height="{H}" fill="white"/>'
    o.append("</svg>")
    return "\n".join(o) + "\n"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    d = Path(sys.argv[1])
    print(build(d))


if __name__ == "__main__":
    main()

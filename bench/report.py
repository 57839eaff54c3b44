#!/usr/bin/env python3
"""Turn a benchmark run (bench/guest-bench output) into results.

    report.py DIR [--title TEXT]

Reads DIR/raw.csv, DIR/env.txt and, when present, DIR/sparse.csv and
DIR/sparse-sysfs.txt. Writes:

    DIR/results.csv  one row per image, cell and backend: the median of the
                     repeats, and the ratios to qemu-nbd (same image and
                     cell) and to kernel loop (the raw copy, same cell)
    DIR/table.md     the summary (gain over qemu-nbd per image and cell),
                     the details, the sparse-image figures, the settings
    DIR/gain.svg     bar chart of the gain factors over qemu-nbd

and prints table.md. Standard library only.
"""
import csv
import html
import math
import sys
from pathlib import Path

BACKENDS = ["lff", "qemu-nbd", "loop"]
IMAGE_ORDER = ["raw", "qcow2", "qcow2-zlib", "qcow2-zstd", "qcow2-xl2"]
IMAGE_LABEL = {
    "raw": "raw",
    "qcow2": "qcow2 (64 KiB clusters)",
    "qcow2-zlib": "qcow2 zlib",
    "qcow2-zstd": "qcow2 zstd",
    "qcow2-xl2": "qcow2 extended L2",
}
CELL_ORDER = [
    "psync-512-seq", "psync-512-rand", "psync-4k-seq", "psync-4k-rand",
    "libaio-qd32-4k-rand", "uring-qd32-4k-rand", "psync-1m-seq",
]
# The targets for lff / qemu-nbd, drawn as dashed lines.
TARGETS = {"qcow2": 4.0, "qcow2-xl2": 4.0, "qcow2-zlib": 3.0, "qcow2-zstd": 3.0}


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


def aggregate(path, fields=("image", "cell", "backend")):
    """{(image, cell, backend): {iops, mib_s, lat_us, runs, note, format}}"""
    runs = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            key = tuple(r[k] for k in fields)
            e = runs.setdefault(key, {"format": r["format"], "vals": [], "notes": []})
            iops, mib, lat = fnum(r["iops"]), fnum(r["mib_s"]), fnum(r["lat_us"])
            if iops is not None and mib is not None and iops > 0:
                e["vals"].append((iops, mib, lat))
            if r["note"]:
                e["notes"].append(r["note"])
    out = {}
    for key, e in runs.items():
        a = {"format": e["format"], "runs": len(e["vals"]), "note": "; ".join(dict.fromkeys(e["notes"]))}
        if e["vals"]:
            # The median run by IOPS (the lower middle one for an even count):
            # a real run, its MiB/s and latency with it.
            vals = sorted(e["vals"])
            iops, mib, lat = vals[(len(vals) - 1) // 2]
            a.update(iops=iops, mib_s=mib, lat_us=lat)
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


def md_table(header, rows, align):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells):
        return "| " + " | ".join(
            str(c).rjust(w) if a == "r" else str(c).ljust(w) for c, w, a in zip(cells, widths, align)) + " |"

    sep = "| " + " | ".join(("-" * (w - 1) + ":") if a == "r" else "-" * w for w, a in zip(widths, align)) + " |"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def build(d):
    env = read_env(d)
    agg = aggregate(d / "raw.csv")
    images = order({k[0] for k in agg}, IMAGE_ORDER)
    cells = order({k[1] for k in agg}, CELL_ORDER)

    def get(image, cell, backend, field="iops"):
        return agg.get((image, cell, backend), {}).get(field)

    # results.csv
    rows = []
    for image in images:
        for cell in cells:
            for b in BACKENDS:
                a = agg.get((image, cell, b))
                if a is None:
                    continue
                nbd = get(image, cell, "qemu-nbd")
                loop = get("raw", cell, "loop")
                rows.append({
                    "image": image, "format": a["format"], "cell": cell, "backend": b,
                    "iops": fmt_iops(a.get("iops")),
                    "mib_s": "" if a.get("mib_s") is None else f"{a['mib_s']:.2f}",
                    "lat_us": "" if a.get("lat_us") is None else f"{a['lat_us']:.1f}",
                    "ratio_to_qemu_nbd": fmt_x(ratio(a.get("iops"), nbd)),
                    "ratio_to_loop": fmt_x(ratio(a.get("iops"), loop)) if b != "loop" else "",
                    "runs": a["runs"], "note": a["note"],
                })
    fields = ["image", "format", "cell", "backend", "iops", "mib_s", "lat_us",
              "ratio_to_qemu_nbd", "ratio_to_loop", "runs", "note"]
    with open(d / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)

    skipped = {}
    for image in images:
        notes = {agg[(image, c, b)]["note"] for c in cells for b in BACKENDS
                 if (image, c, b) in agg and agg[(image, c, b)].get("iops") is None and agg[(image, c, b)]["note"]}
        if notes and all(get(image, c, b) is None for c in cells for b in BACKENDS):
            skipped[image] = "; ".join(sorted(notes))

    md = []
    accel = env.get("accel", "unknown")
    md.append("# Benchmark results")
    md.append("")
    md.append(
        f"Taken {env.get('date', '?')} under **{accel.upper()}** "
        f"({'emulated CPU, no KVM: absolute figures are slow, only ratios measured in one guest mean anything' if accel == 'tcg' else 'hardware virtualisation'}), "
        f"{env.get('vcpus', '?')} vCPUs ({env.get('online_cpus', env.get('vcpus', '?'))} online for the cells), {env.get('memory_mib', '?')} MiB, kernel {env.get('kernel', '?')}, "
        f"{env.get('fio', 'fio')}, {env.get('qemu_nbd', 'qemu-nbd')}; "
        f"{secs(env.get('runtime', '?'))} per run after {secs(env.get('ramp', '?'))} ramp, "
        f"median of {env.get('repeat', '1')} run(s); images in guest tmpfs"
        + (f"; commit {env['commit']}" if env.get("commit") else "") + ".")
    md.append("")
    md.append(f"- lff (ours): `{env.get('lff_attach', '')}`")
    md.append(f"- qemu-nbd: `{env.get('qemu_nbd_attach', '')}`")
    md.append(f"- loop: `{env.get('loop_attach', '')}` (the `qemu-img convert -O raw` copy; "
              "measured once, under image raw)")
    md.append("")
    md.append("Under TCG on a shared host single runs vary by tens of per cent, and more between "
              "images measured minutes apart; each backend pair of a cell is measured back to back. "
              "How to read this: bench/README.md, \"Reading the results\".")
    md.append("")
    md.append("## Gain of lff over qemu-nbd (IOPS ratio; > 1 is faster)")
    md.append("")
    header = ["cell"] + [IMAGE_LABEL.get(i, i) for i in images] + (["loop / qemu-nbd"] if any(
        get("raw", c, "loop") for c in cells) else [])
    trows = []
    for cell in cells:
        r = [cell]
        for image in images:
            if image in skipped:
                r.append("skipped")
            else:
                x = ratio(get(image, cell, "lff"), get(image, cell, "qemu-nbd"))
                r.append(f"{x:.2f}×" if x is not None else "—")
        if len(header) > len(images) + 1:
            x = ratio(get("raw", cell, "loop"), get("raw", cell, "qemu-nbd"))
            r.append(f"{x:.2f}×" if x is not None else "—")
        trows.append(r)
    md.append(md_table(header, trows, ["l"] + ["r"] * (len(header) - 1)))
    md.append("")
    for image, note in skipped.items():
        md.append(f"- {IMAGE_LABEL.get(image, image)}: skipped, {note}.")
    if skipped:
        md.append("")
    md.append("![gain over qemu-nbd](gain.svg)")
    md.append("")
    md.append("## Details")
    md.append("")
    header = ["image", "cell", "lff IOPS", "lff MiB/s", "lff lat µs", "qemu-nbd IOPS", "loop IOPS",
              "lff/qemu-nbd", "lff/loop", "note"]
    drows = []
    for image in images:
        if image in skipped:
            drows.append([image, "(all)", "", "", "", "", "", "", "", skipped[image]])
            continue
        for cell in cells:
            a = agg.get((image, cell, "lff"), {})
            lat = a.get("lat_us")
            notes = "; ".join(n for n in (agg.get((image, cell, b), {}).get("note") for b in BACKENDS) if n)
            drows.append([
                image, cell, fmt_iops(a.get("iops")),
                "" if a.get("mib_s") is None else f"{a['mib_s']:.1f}",
                "" if lat is None else f"{lat:.0f}",
                fmt_iops(get(image, cell, "qemu-nbd")), fmt_iops(get("raw", cell, "loop")),
                fmt_x(ratio(a.get("iops"), get(image, cell, "qemu-nbd"))),
                fmt_x(ratio(a.get("iops"), get("raw", cell, "loop"))),
                notes,
            ])
    md.append(md_table(header, drows, ["l", "l", "r", "r", "r", "r", "r", "r", "r", "l"]))
    md.append("")
    md.extend(scaling_section(d, env))
    md.extend(sparse_section(d))
    md.append("Cells (bench/fio/*.fio): psync = one request at a time (QD1), O_DIRECT, "
              "whole device; seq/rand = sequential/random reads; qd32 = 32 requests in flight.")
    md.append("")
    (d / "table.md").write_text("\n".join(md))
    (d / "gain.svg").write_text(svg(images, cells, get, skipped, env))
    return "\n".join(md)


def scaling_section(d, env):
    p = d / "scaling.csv"
    if not p.exists():
        return []
    agg = aggregate(p, ("image", "cell", "cpus"))
    if not agg:
        return []
    images = order({k[0] for k in agg}, IMAGE_ORDER)
    cells = order({k[1] for k in agg}, CELL_ORDER)
    cpus = sorted({int(k[2]) for k in agg})
    lo, hi = cpus[0], cpus[-1]
    out = [f"## Scaling of lff with vCPUs (QD32 cells, {lo} vs {hi} vCPUs online)", ""]
    rows = []
    for image in images:
        for cell in cells:
            a = agg.get((image, cell, str(lo)), {}).get("iops")
            b = agg.get((image, cell, str(hi)), {}).get("iops")
            if a is None and b is None:
                continue
            x = ratio(b, a)
            rows.append([image, cell, fmt_iops(a), fmt_iops(b), f"{x:.2f}×" if x is not None else "—"])
    out.append(md_table(["image", "cell", f"IOPS {lo} vCPU", f"IOPS {hi} vCPUs", f"{hi} / {lo}"], rows,
                        ["l", "l", "r", "r", "r"]))
    out.append("")
    return out


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
               "attach command (losetup-fmt, or qemu-nbd -c until the device has its size), the "
               "median of three. Reads: one checked O_DIRECT 4 KiB read in each data cluster. "
               "Memory (KiB): growth of Slab (kmalloc, large ones included) and VmallocUsed after "
               "the attach and after the reads, the drop in MemAvailable after the reads (the "
               "qemu-nbd process included), and the qemu-nbd process's RSS.")
    out.append("")
    header = ["backend", "attach ms", "256 reads ms", "Slab Δ attach", "vmalloc Δ attach",
              "Slab Δ reads", "vmalloc Δ reads", "MemAvailable Δ reads", "qemu-nbd RSS", "note"]
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
           "qcow2-zstd": "#8172b2", "qcow2-xl2": "#ccb974", "loop": "#9a9a9a"}


def svg(images, cells, get, skipped, env):
    series = [(i, IMAGE_LABEL.get(i, i), lambda c, i=i: ratio(get(i, c, "lff"), get(i, c, "qemu-nbd")))
              for i in images if i not in skipped]
    if any(get("raw", c, "loop") for c in cells):
        series.append(("loop", "kernel loop, raw copy",
                       lambda c: ratio(get("raw", c, "loop"), get("raw", c, "qemu-nbd"))))
    vals = [v for v in (f(c) for _, _, f in series for c in cells) if v is not None]
    targets = sorted({(i, TARGETS[i]) for i in images if i in TARGETS and i not in skipped}, key=lambda x: x[1])
    # Log scale: gains from below 1 to tens side by side; bars grow from 1×.
    ticks = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    vmin = max([t for t in ticks if t <= min(vals + [1.0]) / 1.15] or [0.1])
    vmax = min([t for t in ticks if t >= max(vals + [5.0] + [t for _, t in targets]) * 1.15] or [1000])
    W, left, right, top = 960, 60, 20, 70
    ph = 300
    pw = W - left - right
    n = max(len(series), 1)
    gw = pw / max(len(cells), 1)
    bw = min(22.0, (gw * 0.8) / n)
    lv = math.log10
    y = lambda v: top + ph - (lv(min(max(v, vmin), vmax)) - lv(vmin)) / (lv(vmax) - lv(vmin)) * ph
    e = html.escape
    o = ['SVG-OPEN', 'BACKGROUND',
         f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="16">'
         'loop-file-fmt (lff): read IOPS relative to qemu-nbd on the same image</text>',
         f'<text x="{W / 2}" y="40" text-anchor="middle" fill="#555">'
         f'{e(env.get("accel", "?").upper())}, {e(env.get("online_cpus", env.get("vcpus", "?")))} vCPU(s) online, '
         f'fio {e(secs(env.get("runtime", "?")))} per run, {e(env.get("date", ""))}; log scale; '
         f'1 = qemu-nbd{"; dashed: targets" if targets else ""}</text>']
    for t in ticks:
        if vmin <= t <= vmax:
            o.append(f'<line x1="{left}" x2="{W - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#e5e5e5"/>')
            o.append(f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end" fill="#555">{t:g}×</text>')
    for i, tv in targets:
        o.append(f'<line x1="{left}" x2="{W - right}" y1="{y(tv):.1f}" y2="{y(tv):.1f}" '
                 f'stroke="{PALETTE.get(i, "#333")}" stroke-dasharray="6,4"/>')
    for ci, cell in enumerate(cells):
        x0 = left + ci * gw + (gw - bw * n) / 2
        for si, (key, _, f) in enumerate(series):
            v = f(cell)
            x = x0 + si * bw
            if v is None:
                o.append(f'<text x="{x + bw / 2:.1f}" y="{y(1) - 4:.1f}" text-anchor="middle" fill="#999">–</text>')
                continue
            y0, y1 = sorted((y(1), y(v)))
            o.append(f'<rect x="{x:.1f}" y="{y0:.1f}" width="{bw - 2:.1f}" height="{max(y1 - y0, 0.5):.1f}" '
                     f'fill="{PALETTE.get(key, "#333")}"><title>{e(key)} {e(cell)}: {v:.2f}×</title></rect>')
            ty = y(v) - 3 if v >= 1 else y(v) + 10
            o.append(f'<text x="{x + (bw - 2) / 2:.1f}" y="{ty:.1f}" text-anchor="middle" '
                     f'font-size="9" fill="#333">{v:.1f}</text>')
        o.append(f'<text x="{left + ci * gw + gw / 2:.1f}" y="{top + ph + 18}" text-anchor="middle">{e(cell)}</text>')
    o.append(f'<line x1="{left}" x2="{W - right}" y1="{y(1):.1f}" y2="{y(1):.1f}" stroke="black" stroke-width="1.5"/>')
    o.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" stroke="black"/>')
    # legend
    lx, ly = left, top + ph + 44
    for key, label, _ in series:
        o.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{PALETTE.get(key, "#333")}"/>')
        o.append(f'<text x="{lx + 16}" y="{ly}">{e(label)}</text>')
        lx += 30 + 7 * len(label)
        if lx > W - 200:
            lx, ly = left, ly + 18
    for tv in sorted({tv for _, tv in targets}, reverse=True):
        i = [k for k, v in targets if v == tv][-1]
        label = f"target {tv:g}× ({'compressed' if tv == 3.0 else 'plain'} qcow2)"
        if lx + 30 + 7 * len(label) > W - right:
            lx, ly = left, ly + 18
        o.append(f'<line x1="{lx}" x2="{lx + 14}" y1="{ly - 4}" y2="{ly - 4}" stroke="{PALETTE.get(i, "#333")}" '
                 'stroke-dasharray="4,2" stroke-width="2"/>')
        o.append(f'<text x="{lx + 18}" y="{ly}">{e(label)}</text>')
        lx += 30 + 7 * len(label)
    for image, note in skipped.items():
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

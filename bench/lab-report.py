#!/usr/bin/env python3
"""The lab benchmark's report: bench/lab's rounds into CSV, tables, plot.

    lab-report.py DIR

Reads DIR/rounds.tsv (one line per client boot: rate, source, kind,
clients, client, uplink bytes of the round, bytes the copy-first initramfs
copied, load, netboot's summary line) and DIR/env; writes DIR/lab.csv,
DIR/lab.md and DIR/lab.svg.
"""
import csv
import html
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import md_table, order, read_env  # noqa: E402

KIND_LABEL = {
    "zstd": "qcow2, zstd",
    "zlib": "qcow2, zlib",
    "plain": "qcow2, uncompressed",
    "raw": "raw ext4",
    "copy-raw": "copy-first raw ext4",
    "copy-zstd": "copy-first qcow2, zstd",
}
KIND_COLOR = {"zstd": "#1f77b4", "zlib": "#17becf", "plain": "#9467bd", "raw": "#ff7f0e",
              "copy-raw": "#d62728", "copy-zstd": "#8c564b"}
MIB = 1048576


def rate_bps(rate):
    m = re.fullmatch(r"(\d+)([mg])bit", rate)
    return int(m.group(1)) * (10**6 if m.group(2) == "m" else 10**9) if m else None


def parse(d):
    rows = []
    for line in (d / "rounds.tsv").read_text().splitlines():
        f = line.split("\t")
        if len(f) < 9:
            continue
        rate, source, kind, n, i, uplink, copied, load, summary = f[:9]
        ok = summary.startswith("netboot: OK:")
        num = lambda rx: (m.group(1) if (m := re.search(rx, summary)) else "")
        client = num(r"(?:nfs|nbd|cifs)-bytes-read=(\d+)") or copied
        rows.append({
            "rate": rate, "source": source, "kind": kind, "clients": int(n), "client": int(i), "ok": int(ok),
            "image_bytes_client": client,
            "image_kib_wire": num(r"(\d+) KiB of the image over"),
            "pxe_kib": num(r"PXE: (\d+) KiB kernel"),
            "marker_s": num(r"marker ([\d.]+) s after power-on") if ok else "",
            "uplink_bytes_round": uplink, "load": load,
            "failure": "" if ok else summary.replace("netboot: FAILED: ", ""),
        })
    return rows


def build(d):
    env = read_env(d)
    rows = parse(d)
    if not rows:
        sys.exit(f"lab-report: no rounds in {d / 'rounds.tsv'}")
    with open(d / "lab.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    rates = order({r["rate"] for r in rows}, env.get("rates", "").split())
    sources = order({r["source"] for r in rows}, ["nfs", "nbd", "cifs"])
    kinds = order({r["kind"] for r in rows}, list(KIND_LABEL))
    ns = sorted({r["clients"] for r in rows})
    sel = lambda **k: [r for r in rows if all(r[a] == v for a, v in k.items())]

    def med(vals):
        vals = [float(v) for v in vals if v != ""]
        return statistics.median(vals) if vals else None

    out = ["# Network boot lab: clients on one uplink", "",
           f"{env.get('date', '')}; host: {env.get('host_cpus', '?')} cores ({env.get('host', '?')}), "
           f"{env.get('accel', 'tcg').upper()}, every client a guest of {env.get('guest_vcpus', '?')} vCPUs and "
           f"1 GiB; init: {env.get('init', '?')}. The uplink: a tbf qdisc on the loopback of a private network "
           "namespace (MTU 1500) that every byte between the servers (127.0.0.1) and the guests crosses, "
           "kernel and initramfs over HTTP included. Produced by `bench/lab` (see bench/README.md).", ""]
    sizes = {k: env.get(f"size_{f}") for k, f in
             [("zstd", "root.qcow2"), ("zlib", "root-zlib.qcow2"), ("plain", "root-plain.qcow2"),
              ("raw", "root.ext4"), ("copy-raw", "root.ext4"), ("copy-zstd", "root.qcow2")]}

    # 1. Bytes per boot: one client on the first rate.
    out += ["## Bytes fetched per client per boot", "",
            "The image's bytes one client fetched to boot (median over every boot of the kind: the count "
            "does not depend on N or the rate), by the client's own count (NFS mountstats, NBD or CIFS "
            "statistics; for copy-first, the bytes the initramfs copied) and on its link (the TCP payload "
            "its server sent, from QEMU's filter-dump), against the raw ext4 image's figure.", ""]
    hdr = ["source", "image", "file MiB", "client MiB", "on the wire MiB", "vs raw"]
    body = []
    for s in sources:
        rawc = med(r["image_bytes_client"] for r in sel(source=s, kind="raw", ok=1))
        for k in kinds:
            rs = sel(source=s, kind=k, ok=1)
            c = med(r["image_bytes_client"] for r in rs)
            wv = med(r["image_kib_wire"] for r in rs)
            size = sizes.get(k)
            body.append([s, KIND_LABEL.get(k, k), f"{int(size) / MIB:.1f}" if size else "",
                         f"{c / MIB:.1f}" if c is not None else "–",
                         f"{wv / 1024:.1f}" if wv is not None else "–",
                         f"{c / rawc:.2f}×" if c is not None and rawc else ""])
    out += [md_table(hdr, body, "llrrrr"), ""]

    # 2. Time to the marker as N grows.
    out += ["## Time from power-on to the marker", "",
            "Median (and slowest) seconds from a client's power-on to the marker its booted system prints, "
            "with N clients powered on at once; ✗n: n clients failed (see lab.csv).", ""]
    hdr = ["source", "image"] + [f"{rate} N={n}" for rate in rates for n in ns]
    body = []
    for s in sources:
        for k in kinds:
            cells = []
            for rate in rates:
                for n in ns:
                    rs = sel(source=s, kind=k, rate=rate, clients=n)
                    t = [float(r["marker_s"]) for r in rs if r["ok"]]
                    bad = sum(1 for r in rs if not r["ok"])
                    c = f"{statistics.median(t):.1f} ({max(t):.1f})" if t else ("–" if not rs else "")
                    cells.append(c + (f" ✗{bad}" if bad else ""))
            body.append([s, KIND_LABEL.get(k, k)] + cells)
    out += [md_table(hdr, body, "ll" + "r" * (len(hdr) - 2)), ""]

    # 3. The uplink: what it carried, against the clients' own sums.
    out += ["## The uplink (server side)", "",
            "Per round: the bytes the qdisc passed (both directions, headers and the kernel and initramfs "
            "included), against the sum of what the clients' links received (image and PXE payload), and "
            "the uplink's mean use from the first power-on to the last marker. Where the use stays far "
            "below the rate while the time grows with N, the guests' CPUs (TCG on the host's cores), not "
            "the uplink, set the pace.", ""]
    hdr = ["rate", "source", "image", "N", "uplink MiB", "clients' sum MiB", "ratio", "mean use"]
    body = []
    notes = []
    for rate in rates:
        for s in sources:
            for k in kinds:
                for n in ns:
                    rs = sel(source=s, kind=k, rate=rate, clients=n)
                    if not rs:
                        continue
                    up = int(rs[0]["uplink_bytes_round"] or 0)
                    csum = sum(int(r["image_kib_wire"] or 0) + int(r["pxe_kib"] or 0) for r in rs) * 1024
                    t = [float(r["marker_s"]) for r in rs if r["ok"]]
                    use = up * 8 / max(t) / rate_bps(rate) if t and rate_bps(rate) else None
                    body.append([rate, s, KIND_LABEL.get(k, k), n, f"{up / MIB:.1f}", f"{csum / MIB:.1f}",
                                 f"{up / csum:.2f}" if csum else "", f"{use * 100:.0f}%" if use is not None else ""])
    out += [md_table(hdr, body, "lllrrrrr"), ""]
    # Where it saturates: the time of N clients against one, per rate.
    out += ["## Where it saturates", ""]
    for rate in rates:
        for n in ns[1:]:
            growth = []
            for s in sources:
                for k in kinds:
                    one = med(r["marker_s"] for r in sel(source=s, kind=k, rate=rate, clients=ns[0], ok=1))
                    many = med(r["marker_s"] for r in sel(source=s, kind=k, rate=rate, clients=n, ok=1))
                    if one and many:
                        growth.append(many / one)
            if growth:
                notes.append(f"- {rate}, {n} clients at once: median boot time {statistics.median(growth):.2f}× "
                             f"that of {ns[0]} (range {min(growth):.2f}–{max(growth):.2f}× over sources and images).")
    vcpus = int(env.get("guest_vcpus", "2") or 2) * max(ns)
    notes.append(f"- With {max(ns)} clients the guests have {vcpus} vCPUs on {env.get('host_cpus', '?')} host cores: "
                 "past one client the host's CPU is shared, so growth that the uplink's use does not explain "
                 "is CPU saturation of the emulator, not of the network or the server.")
    out += notes + ["", "![lab](lab.svg)", ""]
    (d / "lab.md").write_text("\n".join(out))
    (d / "lab.svg").write_text(svg(rows, env, rates, sources, kinds, ns, med, sel))


def svg(rows, env, rates, sources, kinds, ns, med, sel):
    e = html.escape
    W = 960
    o = []
    # Panel 1: MiB per boot (client's count), grouped by source.
    top, ph, left = 60, 220, 60
    vals = {(s, k): med(r["image_bytes_client"] for r in sel(source=s, kind=k, ok=1)) for s in sources for k in kinds}
    vmax = max([v for v in vals.values() if v] + [1]) / MIB * 1.1
    gw = (W - left - 20) / max(len(sources), 1)
    bw = min(40.0, gw * 0.8 / max(len(kinds), 1))
    y = lambda v: top + ph - v / vmax * ph
    o.append(f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="16">Network boot lab: '
             'MiB of the image fetched per boot, and seconds to the booted system as clients grow</text>')
    o.append(f'<text x="{W / 2}" y="40" text-anchor="middle" fill="#555">{e(env.get("accel", "tcg").upper())}, '
             f'{e(env.get("host_cpus", "?"))} host cores, {e(env.get("guest_vcpus", "?"))} vCPUs per client, '
             f'init {e(env.get("init", "?"))}, {e(env.get("date", ""))}</text>')
    for frac in (0, 0.25, 0.5, 0.75, 1):
        v = vmax * frac
        o.append(f'<line x1="{left}" x2="{W - 20}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e5e5"/>')
        o.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" fill="#555">{v:.0f}</text>')
    for si, s in enumerate(sources):
        x0 = left + si * gw + (gw - bw * len(kinds)) / 2
        for ki, k in enumerate(kinds):
            v = vals[(s, k)]
            if not v:
                continue
            x = x0 + ki * bw
            o.append(f'<rect x="{x:.1f}" y="{y(v / MIB):.1f}" width="{bw - 3:.1f}" height="{top + ph - y(v / MIB):.1f}" '
                     f'fill="{KIND_COLOR.get(k, "#333")}"><title>{e(s)} {e(KIND_LABEL.get(k, k))}: '
                     f'{v / MIB:.1f} MiB</title></rect>')
            o.append(f'<text x="{x + (bw - 3) / 2:.1f}" y="{y(v / MIB) - 3:.1f}" text-anchor="middle" '
                     f'font-size="9">{v / MIB:.0f}</text>')
        o.append(f'<text x="{left + si * gw + gw / 2:.1f}" y="{top + ph + 16}" text-anchor="middle">{e(s)}</text>')
    o.append(f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" text-anchor="middle">'
             'MiB per boot</text>')
    # Panel 2: seconds to the marker against N, one line per kind, per rate
    # (solid: the first rate, dashed: the others), for the first source.
    top2 = top + ph + 60
    s0 = sources[0]
    pts = {}
    for ri, rate in enumerate(rates):
        for k in kinds:
            p = [(n, med(r["marker_s"] for r in sel(source=s0, kind=k, rate=rate, clients=n, ok=1))) for n in ns]
            pts[(rate, k)] = [(n, t) for n, t in p if t]
    tmax = max([t for p in pts.values() for _, t in p] + [1]) * 1.1
    xs = lambda n: left + (ns.index(n) + 0.5) * (W - left - 20) / len(ns)
    y2 = lambda t: top2 + ph - t / tmax * ph
    for frac in (0, 0.25, 0.5, 0.75, 1):
        t = tmax * frac
        o.append(f'<line x1="{left}" x2="{W - 20}" y1="{y2(t):.1f}" y2="{y2(t):.1f}" stroke="#e5e5e5"/>')
        o.append(f'<text x="{left - 6}" y="{y2(t) + 4:.1f}" text-anchor="end" fill="#555">{t:.0f}</text>')
    for n in ns:
        o.append(f'<text x="{xs(n):.1f}" y="{top2 + ph + 16}" text-anchor="middle">{n} client{"s" if n > 1 else ""}</text>')
    for (rate, k), p in pts.items():
        if not p:
            continue
        dash = "" if rate == rates[0] else ' stroke-dasharray="6,4"'
        path = " ".join(f"{xs(n):.1f},{y2(t):.1f}" for n, t in p)
        o.append(f'<polyline points="{path}" fill="none" stroke="{KIND_COLOR.get(k, "#333")}" stroke-width="2"{dash}>'
                 f'<title>{e(s0)} {e(KIND_LABEL.get(k, k))} {e(rate)}</title></polyline>')
        for n, t in p:
            o.append(f'<circle cx="{xs(n):.1f}" cy="{y2(t):.1f}" r="3" fill="{KIND_COLOR.get(k, "#333")}"/>')
    o.append(f'<text x="14" y="{top2 + ph / 2}" transform="rotate(-90 14 {top2 + ph / 2})" text-anchor="middle">'
             f's to the marker ({e(s0)})</text>')
    ly = top2 + ph + 40
    lx = left
    for k in kinds:
        label = KIND_LABEL.get(k, k)
        o.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{KIND_COLOR.get(k, "#333")}"/>')
        o.append(f'<text x="{lx + 16}" y="{ly}">{e(label)}</text>')
        lx += 30 + 7 * len(label)
    ly += 18
    o.append(f'<text x="{left}" y="{ly}" fill="#555">lower panel: solid {e(rates[0])}'
             + (f', dashed {e(", ".join(rates[1:]))}' if len(rates) > 1 else "") + '</text>')
    H = ly + 14
    head = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
            'font-family="sans-serif" font-size="12">', f'<rect width="{W}" height="{H}" fill="white"/>']
    return "\n".join(head + o + ["</svg>"]) + "\n"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build(Path(sys.argv[1]))


if __name__ == "__main__":
    main()

//! The write engine against a raw model, with qemu-img as the judge.
//!
//! Each case builds an image with qemu-img/qemu-io (v2 or v3, 512 B to
//! 2 MiB clusters, extended L2, refcount widths 1 to 64 bits, zlib and
//! zstd compressed clusters, qcow2 and raw backing files, a three-layer
//! chain, an internal
//! snapshot, lazy refcounts), takes `qemu-img convert -O raw` as the
//! model, applies a seeded random sequence of writes, write-zeroes,
//! discards and flushes to both, closes the image and then requires:
//! `qemu-img check` exits 0 (no corruption, no leak), `qemu-img compare`
//! finds the image equal to the model, the host reader reads the model,
//! and a snapshot still reads its old bytes.
//!
//! The crash test runs the same kind of sequence over a [`SimFile`]
//! that loses power after a random write; the disk then holds what was
//! synced plus a random subset of the later writes. `qemu-img check` must
//! find no corruption (leaks are allowed: exit 0 or 3), and every byte
//! not written since the last completed flush must read as it did then.
//!
//! `QCOW2_WRITE_SOAK=N` runs N times as many seeds (a longer soak).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{oracle, qemu_img, qemu_io, s, tempdir, write_raw, Rng};
use format_test_support::require_qemu;
use qcow2_format::host::{errno, Image};
use qcow2_format::host_write::{ImageFile, SimFile, WritableImage};
use qcow2_format::{Error, Structure, WriteStats};

fn soak() -> u64 {
    std::env::var("QCOW2_WRITE_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// `qemu-img check` exit status and output.
fn check(img: &Path) -> (i32, String) {
    let out = Command::new("qemu-img")
        .args(["check", s(img)])
        .output()
        .expect("run qemu-img check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn assert_clean(img: &Path, what: &str) {
    let (code, text) = check(img);
    assert_eq!(code, 0, "{what}: qemu-img check exit {code}:\n{text}");
}

fn assert_compare(model: &[u8], img: &Path, dir: &Path, what: &str) {
    let raw = write_raw(dir, "model.raw", model);
    let out = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2", s(&raw), s(img)])
        .output()
        .expect("run qemu-img compare");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: qemu-img compare: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backing {
    None,
    Qcow2,
    Raw,
    /// top -> mid.qcow2 (some clusters) -> base.raw (shorter)
    Chain,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    v2: bool,
    cluster: u64,
    extended: bool,
    refcount_bits: u32,
    compression: Option<&'static str>,
    prefill: bool,
    backing: Backing,
    snapshot: bool,
    lazy: bool,
    /// Write the whole disk first (the refcount table must grow).
    dense: bool,
    size: u64,
    ops: usize,
}

const BASE: Case = Case {
    v2: false,
    cluster: 65536,
    extended: false,
    refcount_bits: 16,
    compression: None,
    prefill: true,
    backing: Backing::None,
    snapshot: false,
    lazy: false,
    dense: false,
    size: 4 << 20,
    ops: 120,
};

fn options(c: &Case) -> String {
    let mut o = format!(
        "compat={},cluster_size={},refcount_bits={}",
        if c.v2 { "0.10" } else { "1.1" },
        c.cluster,
        c.refcount_bits
    );
    if c.extended {
        o.push_str(",extended_l2=on");
    }
    if let Some(t) = c.compression {
        o.push_str(&format!(",compression_type={t}"));
    }
    if c.lazy {
        o.push_str(",lazy_refcounts=on");
    }
    o
}

/// Builds the image of `case` in `dir`; returns its path and the guest
/// offsets of the clusters the prefill wrote (where the random operations
/// go more often, so that they meet compressed, zero and shared clusters).
fn build(dir: &Path, case: &Case, seed: u64) -> (PathBuf, Vec<u64>) {
    let mut hot = Vec::new();
    let img = dir.join("img.qcow2");
    let size = case.size.to_string();
    let mut opts = options(case);
    match case.backing {
        Backing::None => {}
        Backing::Qcow2 => {
            // A shorter base with data: the top reads zeros past it.
            let base_len = (case.size * 3 / 4) as usize;
            let raw = write_raw(dir, "base.raw", &common::mixed_data(base_len, seed ^ 0xb));
            let base = dir.join("base.qcow2");
            qemu_img(&[
                "convert",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-o",
                "cluster_size=65536",
                s(&raw),
                s(&base),
            ]);
            fs::remove_file(&raw).unwrap();
            opts.push_str(",backing_file=base.qcow2,backing_fmt=qcow2");
        }
        Backing::Raw => {
            let base_len = (case.size / 2 + 1234) as usize;
            write_raw(dir, "base.raw", &common::mixed_data(base_len, seed ^ 0xc));
            opts.push_str(",backing_file=base.raw,backing_fmt=raw");
        }
        Backing::Chain => {
            let base_len = (case.size / 3) as usize;
            write_raw(dir, "base.raw", &common::mixed_data(base_len, seed ^ 0xd));
            let mid = dir.join("mid.qcow2");
            qemu_img(&[
                "create",
                "-f",
                "qcow2",
                "-o",
                "cluster_size=32768,backing_file=base.raw,backing_fmt=raw",
                s(&mid),
                &size,
            ]);
            let q = case.size / 4;
            let cmds = [
                format!("write -P 0x77 {} 100000", q),
                format!("write -z {} 65536", 2 * q),
            ];
            let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
            qemu_io(&mid, &refs);
            opts.push_str(",backing_file=mid.qcow2,backing_fmt=qcow2");
        }
    }
    qemu_img(&["create", "-f", "qcow2", "-o", &opts, s(&img), &size]);
    if case.prefill {
        let cs = case.cluster;
        let mut rng = Rng::new(seed ^ 0x5eed);
        let mut cmds = Vec::new();
        let clusters = case.size / cs;
        // Distinct clusters (a compressed write needs an unallocated one).
        let mut free: Vec<u64> = (0..clusters).collect();
        let mut pick = |rng: &mut Rng| free.swap_remove(rng.below(free.len() as u64) as usize);
        for i in 0..12.min(clusters / 2) {
            let c = pick(&mut rng);
            hot.push(c * cs);
            match i % 4 {
                0 => cmds.push(format!("write -P {} {} {}", 0x11 + i, c * cs, cs)),
                1 => {
                    // Inside its cluster (the next one may be compressed).
                    let len = (512 * (1 + rng.below(8))).min(cs);
                    let at = c * cs + 512 * rng.below((cs - len) / 512 + 1);
                    cmds.push(format!("write -P {} {} {}", 0x21 + i, at, len))
                }
                2 if case.compression.is_some() || !case.v2 => {
                    if case.compression.is_some() {
                        cmds.push(format!("write -c -P {} {} {}", 0x31 + i, c * cs, cs))
                    } else {
                        cmds.push(format!("write -z {} {}", c * cs, cs))
                    }
                }
                _ => cmds.push(format!("write -P {} {} {}", 0x41 + i, c * cs, cs)),
            }
        }
        if case.compression.is_some() {
            // Compressed clusters side by side, some crossing host
            // cluster boundaries.
            for k in 0..6.min(clusters / 4) {
                let c = pick(&mut rng);
                hot.push(c * cs);
                cmds.push(format!("write -c -P {} {} {}", 0x60 + k, c * cs, cs));
            }
        }
        let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
        qemu_io(&img, &refs);
    }
    (img, hot)
}

/// One random operation, applied to the image and the model.
#[derive(Debug, Clone, Copy)]
enum Op {
    Write { off: u64, len: u64, seed: u64 },
    Zeroes { off: u64, len: u64, unmap: bool },
    Discard { off: u64, len: u64 },
    Flush,
}

fn random_op(rng: &mut Rng, size: u64, cluster: u64, hot: &[u64]) -> Op {
    let align = match rng.below(3) {
        0 => cluster,
        1 => 512,
        _ => 1,
    };
    let off = if !hot.is_empty() && rng.below(3) == 0 {
        hot[rng.below(hot.len() as u64) as usize] + rng.below(cluster)
    } else {
        rng.below(size)
    };
    let off = (off.min(size - 1) / align) * align;
    let max_len = (3 * cluster).min(1 << 20);
    let len = match rng.below(3) {
        0 => rng.below(4096) + 1,
        1 => rng.below(cluster) + 1,
        _ => rng.below(max_len) + 1,
    };
    let len = if align == cluster && rng.below(2) == 0 {
        cluster * (1 + rng.below(3))
    } else {
        len
    };
    let len = len.min(size - off).max(1);
    let off = off.min(size - len);
    match rng.below(10) {
        0..=5 => Op::Write {
            off,
            len,
            seed: rng.next_u64(),
        },
        6 | 7 => Op::Zeroes {
            off,
            len,
            unmap: rng.below(2) == 0,
        },
        8 => Op::Discard { off, len },
        _ => Op::Flush,
    }
}

fn op_data(len: u64, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let fill = rng.next_u64() as u8;
    (0..len)
        .map(|i| {
            if i % 7 == 0 {
                rng.next_u64() as u8
            } else {
                fill ^ (i as u8)
            }
        })
        .collect()
}

/// The byte range an op changes in the model (None: nothing).
fn apply_model(model: &mut [u8], op: &Op, case: &Case) -> Option<(u64, u64)> {
    match *op {
        Op::Write { off, len, seed } => {
            model[off as usize..(off + len) as usize].copy_from_slice(&op_data(len, seed));
            Some((off, len))
        }
        Op::Zeroes { off, len, .. } => {
            model[off as usize..(off + len) as usize].fill(0);
            Some((off, len))
        }
        Op::Discard { off, len } => {
            if case.v2 && case.backing != Backing::None {
                return None;
            }
            let cs = case.cluster;
            let size = model.len() as u64;
            let end = off + len;
            let start = off.div_ceil(cs) * cs;
            let mut stop = (end / cs) * cs;
            if end == size {
                stop = size;
            }
            if stop <= start {
                return None;
            }
            model[start as usize..stop as usize].fill(0);
            Some((start, stop - start))
        }
        Op::Flush => None,
    }
}

fn apply_image<F: ImageFile>(img: &mut WritableImage<F>, op: &Op) -> qcow2_format::Result<()> {
    match *op {
        Op::Write { off, len, seed } => img.write_at(&op_data(len, seed), off),
        Op::Zeroes { off, len, unmap } => img.write_zeroes(off, len, unmap),
        Op::Discard { off, len } => img.discard(off, len),
        Op::Flush => img.flush(),
    }
}

fn run_case(name: &str, case: Case) {
    require_qemu();
    for round in 0..soak() {
        let seed = round * 1000 + name.bytes().map(u64::from).sum::<u64>();
        let dir = tempdir();
        let (img, hot) = build(dir.path(), &case, seed);
        let snapshot = if case.snapshot {
            qemu_img(&["snapshot", "-c", "snap1", s(&img)]);
            Some(oracle(dir.path(), &img, &[]))
        } else {
            None
        };
        let mut model = oracle(dir.path(), &img, &[]);
        let what = format!("{name} (seed {seed})");
        let mut w = WritableImage::open(&img).unwrap_or_else(|e| panic!("{what}: open: {e}"));
        let mut rng = Rng::new(seed);
        if case.dense {
            for off in (0..case.size).step_by(256 << 10) {
                let len = (256 << 10).min(case.size - off);
                let op = Op::Write {
                    off,
                    len,
                    seed: off,
                };
                apply_image(&mut w, &op).unwrap_or_else(|e| panic!("{what}: fill {off}: {e}"));
                apply_model(&mut model, &op, &case);
            }
        }
        for i in 0..case.ops {
            let mut op = random_op(&mut rng, case.size, case.cluster, &hot);
            // Halfway, release a quarter of the disk twice over, so every
            // sequence frees clusters and reuses them afterwards.
            let q = case.size / 4;
            if i == case.ops / 2 {
                op = Op::Discard { off: 0, len: q };
            } else if i == case.ops / 2 + 1 {
                op = Op::Zeroes {
                    off: 2 * q,
                    len: q,
                    unmap: true,
                };
            }
            apply_image(&mut w, &op).unwrap_or_else(|e| panic!("{what}: op {i} {op:?}: {e}"));
            apply_model(&mut model, &op, &case);
            // Reads see the writes before any flush.
            if let Op::Write { off, len, .. } | Op::Zeroes { off, len, .. } = op {
                let (off, len) = (
                    off.saturating_sub(700),
                    (len + 1400).min(case.size - off.saturating_sub(700)),
                );
                let mut buf = vec![0u8; len as usize];
                w.read_at(&mut buf, off)
                    .unwrap_or_else(|e| panic!("{what}: read after op {i}: {e}"));
                assert!(
                    buf == model[off as usize..(off + len) as usize],
                    "{what}: read after op {i} {op:?}"
                );
            }
        }
        let mut all = vec![0u8; case.size as usize];
        w.read_at(&mut all, 0)
            .unwrap_or_else(|e| panic!("{what}: read all: {e}"));
        assert!(all == model, "{what}: reads before close");
        w.close().unwrap_or_else(|e| panic!("{what}: close: {e}"));
        expect_coverage(&what, &case, &w.engine().stats());
        if case.dense {
            assert!(
                w.cache_evictions() > 0,
                "{what}: the table cache never evicted"
            );
        }
        drop(w);
        assert_clean(&img, &what);
        assert_compare(&model, &img, dir.path(), &what);
        let mut r = Image::open(&img).unwrap();
        assert!(r.read_all().unwrap() == model, "{what}: host reader");
        if let Some(old) = snapshot {
            let now = oracle(dir.path(), &img, &["-l", "snapshot.name=snap1"]);
            assert!(now == old, "{what}: the snapshot changed");
        }
        if case.lazy {
            let hdr = fs::read(&img).unwrap();
            assert_eq!(hdr[79] & 1, 0, "{what}: dirty bit left set");
        }
    }
}

/// The sequence met what the case is about (else it proves little).
fn expect_coverage(what: &str, case: &Case, st: &WriteStats) {
    let mut missing = Vec::new();
    let mut want = |ok: bool, name: &str| {
        if !ok {
            missing.push(name.to_string());
        }
    };
    want(
        st.allocated > 0 && st.in_place > 0,
        "allocation and in-place writes",
    );
    if !(case.snapshot || case.v2 && case.backing != Backing::None) {
        want(st.freed > 0, "freed clusters");
    }
    want(st.metadata_flushes > 1, "several metadata flushes");
    if !case.v2 {
        want(st.zeroed_entries > 0, "zero flags");
    }
    if case.compression.is_some() {
        want(st.compressed_rewrites > 0, "compressed clusters rewritten");
    }
    if case.snapshot {
        want(
            st.shared_copies > 0 && st.l2_copies > 0,
            "shared clusters and L2 tables",
        );
    }
    if case.backing != Backing::None {
        want(st.backing_reads > 0, "copies from the backing file");
    }
    if case.extended {
        want(
            st.subcluster_no_copy > 0,
            "subcluster writes without a copy",
        );
    }
    if case.cluster == 512 && case.refcount_bits == 64 {
        want(st.refcount_table_growths > 0, "refcount table growth");
        want(st.new_refcount_blocks > 0, "new refcount blocks");
    }
    assert!(
        missing.is_empty(),
        "{what}: never exercised: {missing:?} in {st:?}"
    );
}

macro_rules! cases {
    ($($name:ident: $case:expr;)*) => {
        $(#[test] fn $name() { run_case(stringify!($name), $case); })*
    };
}

cases! {
    v3_64k: BASE;
    v3_64k_qcow2_backing: Case { backing: Backing::Qcow2, ..BASE };
    v3_16k_three_layer_chain: Case { cluster: 16384, backing: Backing::Chain, ..BASE };
    extended_32k_three_layer_chain: Case { extended: true, cluster: 32768, backing: Backing::Chain, ..BASE };
    v3_512_refcount64: Case { cluster: 512, refcount_bits: 64, size: 3 << 20, ops: 150, dense: true, ..BASE };
    v3_512_refcount1: Case { cluster: 512, refcount_bits: 1, size: 2 << 20, ..BASE };
    v3_1k_refcount2_raw_backing: Case { cluster: 1024, refcount_bits: 2, backing: Backing::Raw, ..BASE };
    v3_4k_refcount8_qcow2_backing: Case { cluster: 4096, refcount_bits: 8, backing: Backing::Qcow2, ..BASE };
    v3_4k_refcount32: Case { cluster: 4096, refcount_bits: 32, ..BASE };
    v3_2m_raw_backing: Case { cluster: 2 << 20, size: 24 << 20, ops: 80, backing: Backing::Raw, ..BASE };
    v2_64k: Case { v2: true, ..BASE };
    v2_4k_qcow2_backing: Case { v2: true, cluster: 4096, backing: Backing::Qcow2, ..BASE };
    v2_64k_snapshot: Case { v2: true, snapshot: true, ..BASE };
    extended_64k_qcow2_backing: Case { extended: true, backing: Backing::Qcow2, ..BASE };
    extended_32k: Case { extended: true, cluster: 32768, ..BASE };
    extended_16k_raw_backing_zstd: Case { extended: true, cluster: 16384, backing: Backing::Raw, compression: Some("zstd"), ..BASE };
    extended_2m: Case { extended: true, cluster: 2 << 20, size: 24 << 20, ops: 80, ..BASE };
    extended_64k_snapshot: Case { extended: true, snapshot: true, backing: Backing::Qcow2, ..BASE };
    zlib_64k: Case { compression: Some("zlib"), ..BASE };
    zlib_4k_qcow2_backing: Case { compression: Some("zlib"), cluster: 4096, backing: Backing::Qcow2, ..BASE };
    zstd_64k: Case { compression: Some("zstd"), ..BASE };
    zstd_512: Case { compression: Some("zstd"), cluster: 512, size: 2 << 20, ..BASE };
    snapshot_64k: Case { snapshot: true, ..BASE };
    snapshot_4k_zlib: Case { snapshot: true, cluster: 4096, compression: Some("zlib"), ..BASE };
    lazy_refcounts: Case { lazy: true, ..BASE };
}

// ---- crash ordering ----

/// The image file `disk` survived a crash or an error: `qemu-img check`
/// finds no corruption (leaks are fine: exit 0 or 3), and it reads as
/// `expected` outside the `unknown` ranges.
fn assert_survived(dir: &Path, disk: &[u8], expected: &[u8], unknown: &[(u64, u64)], what: &str) {
    let p = dir.join("survivor.qcow2");
    fs::write(&p, disk).unwrap();
    let (code, text) = check(&p);
    if !(code == 0 || code == 3) {
        // Kept for a post-mortem.
        let keep = std::env::temp_dir().join("qcow2-write-survivor-failed.qcow2");
        fs::write(&keep, disk).unwrap();
        panic!("{what}: qemu-img check exit {code} (corruption), image kept as {keep:?}:\n{text}");
    }
    let got = oracle(dir, &p, &[]);
    let mut mask = vec![false; got.len()];
    for &(off, len) in unknown {
        mask[off as usize..(off + len) as usize].fill(true);
    }
    if let Some(i) = (0..got.len()).find(|&i| !mask[i] && got[i] != expected[i]) {
        panic!(
            "{what}: byte {i:#x} reads {:#x}, not {:#x}",
            got[i], expected[i]
        );
    }
}

/// Runs `case` over a [`SimFile`] that loses power after a random write,
/// `crashes` times.
fn crash_case(name: &str, case: Case, crashes: u64) {
    require_qemu();
    let dir = tempdir();
    let (img, hot) = build(dir.path(), &case, 77);
    if case.snapshot {
        qemu_img(&["snapshot", "-c", "snap1", s(&img)]);
    }
    let start_model = oracle(dir.path(), &img, &[]);
    let start_bytes = fs::read(&img).unwrap();
    let mut seen_crash_in_flush = false;
    let open = |what: &str| {
        WritableImage::with_file(SimFile::new(start_bytes.clone()), Some(&img), 0)
            .unwrap_or_else(|e| panic!("{what}: open: {e}"))
    };
    let sequence = |seed: u64| -> Vec<Op> {
        let mut rng = Rng::new(seed);
        let mut ops = Vec::new();
        if case.dense {
            for off in (0..case.size).step_by(256 << 10) {
                let len = (256 << 10).min(case.size - off);
                ops.push(Op::Write {
                    off,
                    len,
                    seed: off,
                });
            }
        }
        for _ in 0..case.ops {
            ops.push(random_op(&mut rng, case.size, case.cluster, &hot));
        }
        ops.push(Op::Flush);
        ops
    };
    for k in 0..crashes * soak() {
        let seed = 5000 + k;
        let what = format!("{name} crash {k}");
        let ops = sequence(seed);
        // A dry run counts the writes, so that the cut falls anywhere.
        let mut dry = open(&what);
        for op in &ops {
            apply_image(&mut dry, op).unwrap_or_else(|e| panic!("{what}: dry run {op:?}: {e}"));
        }
        let total = dry.file().writes();
        if case.dense {
            let st = dry.engine().stats();
            assert!(
                st.refcount_table_growths > 0,
                "{what}: no table growth: {st:?}"
            );
        }
        drop(dry);
        let mut rng = Rng::new(seed ^ 0xc0ffee);
        let mut w = open(&what);
        w.file_mut().crash_after(1 + rng.below(total));
        let mut model = start_model.clone();
        let mut flushed = model.clone();
        // Ranges written since the last completed flush.
        let mut since: Vec<(u64, u64)> = Vec::new();
        for op in &ops {
            let changed = apply_model(&mut model, op, &case);
            if let Some(r) = changed {
                since.push(r);
            }
            match apply_image(&mut w, op) {
                Ok(()) => {
                    if matches!(op, Op::Flush) {
                        flushed = model.clone();
                        since.clear();
                    }
                }
                Err(e) => {
                    assert!(w.file().crashed(), "{what}: {op:?} failed: {e}");
                    if matches!(op, Op::Flush) {
                        seen_crash_in_flush = true;
                    }
                    break;
                }
            }
        }
        assert!(w.file().crashed(), "{what}: the power cut never came");
        let mut pick = Rng::new(seed ^ 0xdead);
        let disk = w.file().crashed_image(|| pick.below(2) == 0);
        drop(w);
        assert_survived(dir.path(), &disk, &flushed, &since, &what);
    }
    assert!(
        seen_crash_in_flush || crashes < 10,
        "{name}: no crash point fell inside a flush"
    );
}

const CRASH: Case = Case {
    ops: 200,
    prefill: true,
    ..BASE
};

#[test]
fn crash_v3_4k_backing() {
    crash_case(
        "crash_v3_4k_backing",
        Case {
            cluster: 4096,
            backing: Backing::Qcow2,
            ..CRASH
        },
        25,
    );
}

#[test]
fn crash_512_refcount64_growth() {
    crash_case(
        "crash_512_refcount64_growth",
        Case {
            cluster: 512,
            refcount_bits: 64,
            size: 2 << 20,
            ..CRASH
        },
        100,
    );
}

#[test]
fn crash_snapshot_compressed() {
    crash_case(
        "crash_snapshot_compressed",
        Case {
            snapshot: true,
            compression: Some("zlib"),
            cluster: 4096,
            ..CRASH
        },
        20,
    );
}

#[test]
fn crash_extended() {
    crash_case(
        "crash_extended",
        Case {
            extended: true,
            cluster: 16384,
            backing: Backing::Qcow2,
            ..CRASH
        },
        20,
    );
}

/// A write that fails with EIO (once, anywhere: data, copies, metadata,
/// during a flush) fails its request only; later requests and the close
/// succeed (a failed flush is retried), `qemu-img check` finds no
/// corruption (leaks allowed), and every other byte reads as the model
/// says.
fn io_error_case(name: &str, case: Case, rounds: u64) {
    require_qemu();
    let dir = tempdir();
    let (img, hot) = build(dir.path(), &case, 91);
    if case.snapshot {
        qemu_img(&["snapshot", "-c", "snap1", s(&img)]);
    }
    let start_model = oracle(dir.path(), &img, &[]);
    let start_bytes = fs::read(&img).unwrap();
    let open = |what: &str| {
        WritableImage::with_file(SimFile::new(start_bytes.clone()), Some(&img), 0)
            .unwrap_or_else(|e| panic!("{what}: open: {e}"))
    };
    let mut failed_flushes = 0;
    for k in 0..rounds * soak() {
        let what = format!("{name} EIO {k}");
        let mut rng = Rng::new(7000 + k);
        let mut ops: Vec<Op> = (0..case.ops)
            .map(|_| random_op(&mut rng, case.size, case.cluster, &hot))
            .collect();
        ops.push(Op::Flush);
        let mut dry = open(&what);
        let mut last_flush = (0, 0);
        for op in &ops {
            let before = dry.file().writes();
            apply_image(&mut dry, op).unwrap_or_else(|e| panic!("{what}: dry run {op:?}: {e}"));
            if matches!(op, Op::Flush) {
                last_flush = (before, dry.file().writes());
            }
        }
        dry.close().unwrap();
        let total = dry.file().writes();
        drop(dry);
        let mut w = open(&what);
        // Half the time in the last flush, whose metadata nothing
        // rewrites later: a lost update would show.
        let (a, b) = last_flush;
        let at = if b > a && rng.below(2) == 0 {
            a + 1 + rng.below(b - a)
        } else {
            1 + rng.below(total)
        };
        w.file_mut().fail_write(at);
        let mut model = start_model.clone();
        let mut unknown: Vec<(u64, u64)> = Vec::new();
        let mut errors = 0;
        for op in &ops {
            let changed = apply_model(&mut model, op, &case);
            if let Err(e) = apply_image(&mut w, op) {
                assert_eq!(errno(&e), libc::EIO, "{what}: {op:?}: {e}");
                errors += 1;
                if matches!(op, Op::Flush) {
                    failed_flushes += 1;
                }
                unknown.extend(changed);
            }
        }
        assert!(
            errors <= 1,
            "{what}: one failed write failed {errors} requests"
        );
        w.close()
            .unwrap_or_else(|e| panic!("{what}: close after the error: {e}"));
        let disk = w.file().current().to_vec();
        drop(w);
        assert_survived(dir.path(), &disk, &model, &unknown, &what);
    }
    assert!(
        failed_flushes > 0 || rounds < 10,
        "{name}: no failure fell in a flush"
    );
}

#[test]
fn eio_v3_4k_backing() {
    io_error_case(
        "eio_v3_4k_backing",
        Case {
            cluster: 4096,
            backing: Backing::Qcow2,
            ops: 150,
            ..BASE
        },
        15,
    );
}

#[test]
fn eio_snapshot_zstd() {
    io_error_case(
        "eio_snapshot_zstd",
        Case {
            cluster: 4096,
            compression: Some("zstd"),
            ..BASE
        },
        12,
    );
}

// ---- open rules, overlaps ----

fn header_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn patch_u64(path: &Path, at: u64, v: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&v.to_be_bytes(), at).unwrap();
}

#[test]
fn refuses_dirty_and_corrupt_images() {
    require_qemu();
    let dir = tempdir();
    let img = dir.path().join("a.qcow2");
    qemu_img(&["create", "-f", "qcow2", s(&img), "1M"]);
    patch_u64(&img, 72, 1);
    let e = WritableImage::open(&img).err().expect("dirty image opened");
    assert_eq!(e, Error::DirtyImage);
    patch_u64(&img, 72, 2);
    let e = WritableImage::open(&img)
        .err()
        .expect("corrupt image opened");
    assert_eq!(e, Error::CorruptImage);
    assert_eq!(errno(&e), libc::EOPNOTSUPP);
}

#[test]
fn clears_autoclear_bits_and_lazy_dirty_bit() {
    require_qemu();
    let dir = tempdir();
    let img = dir.path().join("a.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "lazy_refcounts=on",
        s(&img),
        "1M",
    ]);
    patch_u64(&img, 88, 0x8000_0000_0000_0002);
    let before = fs::read(&img).unwrap();
    let mut w = WritableImage::open(&img).unwrap();
    let open = fs::read(&img).unwrap();
    assert_eq!(header_u64(&open, 88), 0, "autoclear bits not cleared");
    assert_eq!(
        header_u64(&open, 72) & 1,
        1,
        "lazy refcounts: dirty bit not set"
    );
    // Nothing else of the first cluster changed (extensions preserved).
    let cs = 65536.min(before.len());
    for (i, (a, b)) in before[..cs].iter().zip(&open[..cs]).enumerate() {
        if !(72..80).contains(&i) && !(88..96).contains(&i) {
            assert_eq!(a, b, "header byte {i} changed");
        }
    }
    w.write_at(&[7u8; 5000], 1000).unwrap();
    w.close().unwrap();
    drop(w);
    let closed = fs::read(&img).unwrap();
    assert_eq!(header_u64(&closed, 72) & 1, 0, "dirty bit left set");
    assert_clean(&img, "lazy refcounts");
}

/// Plants an L2 entry of guest cluster 0 pointing at `target(header
/// bytes)` and checks that a write there fails with EIO, marks the image
/// corrupt and leaves the metadata alone.
fn planted_overlap(want: Structure, target: impl Fn(&[u8], u64) -> u64) {
    planted_overlap_in(want, false, target)
}

/// [`planted_overlap`], optionally with an internal snapshot (the L2
/// table is then shared and copied first; the planted entry comes along).
fn planted_overlap_in(want: Structure, snapshot: bool, target: impl Fn(&[u8], u64) -> u64) {
    let name = want.name();
    require_qemu();
    let dir = tempdir();
    let img = dir.path().join("a.qcow2");
    qemu_img(&["create", "-f", "qcow2", s(&img), "4M"]);
    qemu_io(&img, &["write -P 0xaa 0 64k", "write -P 0xbb 1M 64k"]);
    if snapshot {
        qemu_img(&["snapshot", "-c", "s1", s(&img)]);
    }
    let bytes = fs::read(&img).unwrap();
    let l1 = header_u64(&bytes, 40);
    let l2 = header_u64(&bytes, l1 as usize) & 0x00ff_ffff_ffff_fe00;
    let to = target(&bytes, l2);
    patch_u64(&img, l2, to | 1 << 63);
    let before = fs::read(&img).unwrap();
    let mut w = WritableImage::open(&img).unwrap();
    let e = w.write_at(&[0x55; 4096], 0).expect_err(name);
    assert!(
        matches!(e, Error::MetadataOverlap { what, .. } if what == want),
        "{name}: {e}"
    );
    assert_eq!(errno(&e), libc::EIO, "{name}");
    let e = w.write_at(&[0x55; 4096], 1 << 20).expect_err(name);
    assert_eq!(e, Error::WriterStopped, "{name}");
    drop(w);
    let after = fs::read(&img).unwrap();
    assert_eq!(header_u64(&after, 72) & 2, 2, "{name}: corrupt bit not set");
    assert_eq!(before.len(), after.len(), "{name}");
    for (i, (a, b)) in before.iter().zip(&after).enumerate() {
        if !(72..80).contains(&i) {
            assert_eq!(a, b, "{name}: byte {i:#x} changed");
        }
    }
    let e = WritableImage::open(&img).err().expect(name);
    assert_eq!(e, Error::CorruptImage);
}

#[test]
fn overlap_l1_table() {
    planted_overlap(Structure::L1Table, |h, _| header_u64(h, 40));
}

#[test]
fn overlap_refcount_table() {
    planted_overlap(Structure::RefcountTable, |h, _| header_u64(h, 48));
}

#[test]
fn overlap_refcount_block() {
    planted_overlap(Structure::RefcountBlock, |h, _| {
        let rt = header_u64(h, 48) as usize;
        header_u64(h, rt)
    });
}

#[test]
fn overlap_snapshot_table() {
    planted_overlap_in(Structure::SnapshotTable, true, |h, _| header_u64(h, 64));
}

#[test]
fn overlap_snapshot_l1_table() {
    planted_overlap_in(Structure::SnapshotL1Table, true, |h, _| {
        let table = header_u64(h, 64) as usize;
        header_u64(h, table)
    });
}

#[test]
fn overlap_own_l2_table() {
    planted_overlap(Structure::L2Table, |_, l2| l2);
}

/// A guest flush costs about two syncs, however many clusters it covers.
#[test]
fn flush_costs_two_syncs() {
    require_qemu();
    let dir = tempdir();
    let img = dir.path().join("a.qcow2");
    qemu_img(&["create", "-f", "qcow2", s(&img), "64M"]);
    let bytes = fs::read(&img).unwrap();
    let mut w = WritableImage::with_file(SimFile::new(bytes), Some(&img), 0).unwrap();
    // Allocating writes over 20 clusters of one L2 table.
    for i in 0..20u64 {
        w.write_at(&[i as u8; 4096], i * 65536 + 100).unwrap();
    }
    let before = w.file().syncs();
    w.flush().unwrap();
    assert_eq!(w.file().syncs() - before, 2, "syncs per flush");
    // In-place writes: one sync.
    for i in 0..20u64 {
        w.write_at(&[1; 512], i * 65536).unwrap();
    }
    let before = w.file().syncs();
    w.flush().unwrap();
    assert_eq!(w.file().syncs() - before, 1, "syncs per in-place flush");
    let before = w.file().syncs();
    w.flush().unwrap();
    assert_eq!(w.file().syncs() - before, 0, "an idle flush syncs nothing");
}

// ---- the fuzz harness ----

/// The `write` fuzz harness over seeded inputs of every geometry it
/// builds (what a short fuzz run does, in `make test`).
#[test]
fn fuzz_write_harness_smoke() {
    let mut rng = Rng::new(99);
    for i in 0..(100 * soak()) {
        let mut input = vec![(i % 0x40) as u8, rng.below(7) as u8, rng.below(32) as u8];
        for _ in 0..(8 * (1 + rng.below(40))) {
            input.push(rng.next_u64() as u8);
        }
        qcow2_format::fuzzing_write::write(&input);
    }
}

/// The harness's refcount checker agrees with `qemu-img check` on an
/// image the engine wrote, and both catch a planted leak and a planted
/// missing reference count.
#[test]
fn refcount_checker_agrees_with_qemu() {
    use qcow2_format::fuzzing_write::{check_refcounts, fresh_image};
    require_qemu();
    let dir = tempdir();
    let img = dir.path().join("fresh.qcow2");
    fs::write(&img, fresh_image(3, 12, false, 3, 4 << 20)).unwrap();
    assert_clean(&img, "fresh image");
    let mut w = WritableImage::open(&img).unwrap();
    for i in 0..40u64 {
        w.write_at(&[i as u8; 3000], i * 70_000).unwrap();
    }
    w.write_zeroes(0, 1 << 20, true).unwrap();
    w.close().unwrap();
    drop(w);
    assert_clean(&img, "engine-written image");
    let bytes = fs::read(&img).unwrap();
    check_refcounts(&bytes).unwrap();
    // A leak: one more count on the L1 table's cluster.
    let mut leaky = bytes.clone();
    let rt = header_u64(&leaky, 48) as usize;
    let block = header_u64(&leaky, rt) as usize;
    let l1_cluster = (header_u64(&leaky, 40) >> 12) as usize;
    leaky[block + l1_cluster] += 1;
    assert!(check_refcounts(&leaky).is_err());
    let p = dir.path().join("leaky.qcow2");
    fs::write(&p, &leaky).unwrap();
    assert_ne!(check(&p).0, 0);
    // A missing count: the L1 table's cluster at 0.
    let mut broken = bytes;
    broken[block + l1_cluster] = 0;
    assert!(check_refcounts(&broken).is_err());
    fs::write(&p, &broken).unwrap();
    assert_eq!(check(&p).0, 2);
}

//! Malformed, hostile and unsupported images: open must fail with the
//! right error, reads through bad pointers must fail the request only, and
//! nothing may panic.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use qcow2_format::host::Image;
use qcow2_format::{CompressedDescriptor, Error, ErrorKind, Header, Structure};

/// A small qcow2 image with data, 4 KiB clusters.
fn base_image(dir: &Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let p = path(dir, name);
    let mut args = vec!["create", "-q", "-f", "qcow2", "-o", "cluster_size=4k"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[s(&p), "1M"]);
    qemu_img(&args);
    qemu_io(&p, &["write -P 0x5c 0 300k", "write -P 0x5d 700k 8k"]);
    p
}

fn patched(dir: &Path, src: &Path, name: &str, f: impl FnOnce(&mut Vec<u8>)) -> std::path::PathBuf {
    let mut data = fs::read(src).unwrap();
    f(&mut data);
    let p = path(dir, name);
    fs::write(&p, data).unwrap();
    p
}

fn open_err(p: &Path) -> Error {
    match Image::open(p) {
        Ok(_) => panic!("{p:?} opened"),
        Err(e) => e,
    }
}

fn be32(data: &mut [u8], off: usize, v: u32) {
    data[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn be64(data: &mut [u8], off: usize, v: u64) {
    data[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

fn get64(data: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(data[off..off + 8].try_into().unwrap())
}

#[test]
fn bad_header_fields() {
    let dir = tempdir();
    let d = dir.path();
    let good = base_image(d, "good.qcow2", &[]);
    Image::open(&good).unwrap();

    type Patch = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Patch, Error)> = vec![
        (
            "magic",
            Box::new(|v| v[3] = 0xfc),
            Error::BadMagic(0x5146_49fc),
        ),
        (
            "v1",
            Box::new(|v| be32(v, 4, 1)),
            Error::UnsupportedVersion(1),
        ),
        (
            "v4",
            Box::new(|v| be32(v, 4, 4)),
            Error::UnsupportedVersion(4),
        ),
        (
            "cb8",
            Box::new(|v| be32(v, 20, 8)),
            Error::BadClusterBits(8),
        ),
        (
            "cb22",
            Box::new(|v| be32(v, 20, 22)),
            Error::BadClusterBits(22),
        ),
        (
            "huge",
            Box::new(|v| be64(v, 24, 1 << 62)),
            Error::VirtualSizeTooLarge(1 << 62),
        ),
        (
            "l1small",
            Box::new(|v| be64(v, 24, 1 << 40)),
            Error::L1TableTooSmall {
                entries: 1,
                needed: 1 << 19,
            },
        ),
        (
            "l1huge",
            Box::new(|v| be32(v, 36, 0x4000_0000)),
            Error::TableTooLarge {
                what: Structure::L1Table,
                entries: 0x4000_0000,
            },
        ),
        (
            "l1misaligned",
            Box::new(|v| {
                let o = get64(v, 40);
                be64(v, 40, o + 512)
            }),
            Error::MisalignedTable {
                what: Structure::L1Table,
                offset: 0x30000 + 512,
            },
        ),
        ("crypt", Box::new(|v| be32(v, 32, 1)), Error::Encrypted(1)),
        (
            "hlen",
            Box::new(|v| be32(v, 100, 96)),
            Error::BadHeaderLength(96),
        ),
        (
            "refcount_order",
            Box::new(|v| be32(v, 96, 7)),
            Error::BadRefcountOrder(7),
        ),
        (
            "snapshots",
            Box::new(|v| be32(v, 60, 100_000)),
            Error::TooManySnapshots(100_000),
        ),
    ];
    for (name, f, want) in cases {
        let p = patched(d, &good, name, |v| f(v));
        let got = open_err(&p);
        if let (Error::MisalignedTable { what, .. }, Error::MisalignedTable { what: w2, .. }) =
            (&got, &want)
        {
            assert_eq!(what, w2, "{name}");
        } else {
            assert_eq!(got, want, "{name}");
        }
        // Every error has a log line and an errno.
        assert!(!format!("{got}").is_empty());
        assert!(qcow2_format::host::errno(&got) > 0);
    }
}

#[test]
fn unknown_incompatible_bit_is_named_from_feature_table() {
    let dir = tempdir();
    let d = dir.path();
    // qemu-img writes a feature name table (with 64 KiB clusters); rename the entry of
    // incompatible bit 4 to bit 9 and set bit 9.
    let good = path(d, "good.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&good), "1M"]);
    let p = patched(d, &good, "unknown.qcow2", |v| {
        let ext = v[..4096]
            .windows(4)
            .position(|w| w == [0x68, 0x03, 0xf8, 0x57])
            .expect("feature table");
        let len = u32::from_be_bytes(v[ext + 4..ext + 8].try_into().unwrap()) as usize;
        let table = ext + 8;
        let entry = (0..len / 48)
            .map(|i| table + i * 48)
            .find(|&e| v[e] == 0 && v[e + 1] == 4)
            .expect("extended l2 entry");
        v[entry + 1] = 9;
        v[entry + 2..entry + 48].fill(0);
        v[entry + 2..entry + 14].copy_from_slice(b"warp drive 9");
        v[78] |= 2; // bit 9
    });
    let e = open_err(&p);
    match e {
        Error::UnknownIncompatibleFeature { bit, name } => {
            assert_eq!(bit, 9);
            assert_eq!(name.as_bytes(), b"warp drive 9");
        }
        other => panic!("{other:?}"),
    }
    assert!(format!("{e}").contains("bit 9 (warp drive 9)"));
    assert_eq!(e.kind(), ErrorKind::Unsupported);
}

#[test]
fn unsupported_features() {
    let dir = tempdir();
    let d = dir.path();
    // LUKS encryption. Creating it benchmarks PBKDF, which can fail on a
    // loaded machine: retry, then fall back to a patched header.
    let enc = path(d, "enc.qcow2");
    let args = [
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        "secret,id=sec0,data=123456",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        s(&enc),
        "1M",
    ];
    if !(0..3).any(|_| try_run("qemu-img", &args)) {
        let plain = base_image(d, "plain.qcow2", &[]);
        patched(d, &plain, "enc.qcow2", |v| be32(v, 32, 2));
    }
    let e = open_err(&enc);
    assert!(matches!(e, Error::Encrypted(2)), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    // External data file.
    let ext = path(d, "ext.qcow2");
    let data = path(d, "ext.data");
    let opt = format!("data_file={}", s(&data));
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", &opt, s(&ext), "1M"]);
    assert_eq!(open_err(&ext), Error::ExternalDataFile);
    // Dirty and corrupt bits parse; the flags are exposed.
    let good = base_image(d, "good.qcow2", &[]);
    let dirty = patched(d, &good, "dirty.qcow2", |v| v[79] |= 3);
    let img = Image::open(&dirty).unwrap();
    let h = img.header(0).unwrap();
    assert!(h.is_dirty() && h.is_corrupt());
}

#[test]
fn extension_past_cluster() {
    let dir = tempdir();
    let d = dir.path();
    let good = base_image(d, "good.qcow2", &[]);
    let p = patched(d, &good, "ext.qcow2", |v| {
        // An extension right after the 112-byte header, longer than the
        // 4 KiB cluster.
        be32(v, 112, 0x1234_5678);
        be32(v, 112 + 4, 5000);
    });
    assert!(matches!(open_err(&p), Error::ExtensionOutOfBounds { .. }));
    // v3 header_length below 104.
    let p = patched(d, &good, "hlen.qcow2", |v| be32(v, 100, 72));
    assert_eq!(open_err(&p), Error::BadHeaderLength(72));
}

#[test]
fn l2_pointer_past_eof_fails_at_read_time() {
    let dir = tempdir();
    let d = dir.path();
    let good = base_image(d, "good.qcow2", &[]);
    let data = fs::read(&good).unwrap();
    let l1 = get64(&data, 40) as usize;
    let file_len = data.len() as u64;
    let p = patched(d, &good, "l2eof.qcow2", |v| {
        be64(v, l1, (1 << 63) | ((file_len + 0x10_0000) & !0xfff))
    });
    let mut img = Image::open(&p).expect("open succeeds");
    let mut buf = vec![0u8; 4096];
    let e = img.read_at(&mut buf, 0).unwrap_err();
    assert!(
        matches!(
            e,
            Error::PastEndOfFile {
                what: Structure::L2Table,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Corrupt);
}

#[test]
fn data_pointer_past_eof_and_corrupt_l2() {
    let dir = tempdir();
    let d = dir.path();
    let good = base_image(d, "good.qcow2", &[]);
    let data = fs::read(&good).unwrap();
    let l2 = (get64(&data, get64(&data, 40) as usize) & 0x00ff_ffff_ffff_fe00) as usize;
    let file_len = data.len() as u64;
    let p = patched(d, &good, "data.qcow2", |v| {
        be64(v, l2 + 8, (1 << 63) | ((file_len + 0x1000) & !0xfff));
        be64(v, l2 + 16, (1 << 63) | 0x2000 | 0x10); // reserved bit
    });
    let mut img = Image::open(&p).unwrap();
    let mut buf = vec![0u8; 4096];
    img.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 0x5c));
    assert!(matches!(
        img.read_at(&mut buf, 4096),
        Err(Error::PastEndOfFile {
            what: Structure::DataCluster,
            ..
        })
    ));
    assert!(matches!(
        img.read_at(&mut buf, 8192),
        Err(Error::CorruptL2Entry { .. })
    ));
    img.read_at(&mut buf, 12288).unwrap();
}

/// Finds the first compressed L2 entry of a 4k-cluster image.
fn first_compressed(data: &[u8]) -> CompressedDescriptor {
    let l2 = (get64(data, get64(data, 40) as usize) & 0x00ff_ffff_ffff_fe00) as usize;
    (0..512)
        .map(|i| get64(data, l2 + i * 8))
        .find(|e| e & (1 << 62) != 0)
        .map(|e| CompressedDescriptor::decode(12, e).unwrap())
        .expect("a compressed cluster")
}

#[test]
fn garbage_compressed_data() {
    let dir = tempdir();
    let d = dir.path();
    let raw = write_raw(d, "src.raw", &mixed_data(256 << 10, 50));
    for ty in ["zlib", "zstd"] {
        let img = path(d, &format!("c-{ty}.qcow2"));
        let opts = format!("cluster_size=4k,compression_type={ty}");
        qemu_img(&[
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            &opts,
            s(&raw),
            s(&img),
        ]);
        let data = fs::read(&img).unwrap();
        let desc = first_compressed(&data);
        let mut rng = Rng::new(99);
        for (i, mode) in ["random", "zeros", "truncate"].iter().enumerate() {
            let p = patched(d, &img, &format!("bad-{ty}-{i}.qcow2"), |v| {
                let start = desc.host_offset() as usize;
                let end = start + desc.max_len() as usize;
                match *mode {
                    "random" => v[start..end]
                        .iter_mut()
                        .for_each(|b| *b = rng.next_u64() as u8),
                    "zeros" => v[start..end].fill(0),
                    _ => v.truncate(start + 3),
                }
            });
            let Ok(mut image) = Image::open(&p) else {
                assert_eq!(*mode, "truncate");
                continue;
            };
            // Reading the whole disk must fail cleanly or (for random data
            // that happens to decode) succeed; never panic.
            let r = image.read_all();
            if *mode != "random" {
                let e = r.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Corrupt, "{ty} {mode}: {e:?}");
            }
        }
    }
}

#[test]
fn truncated_files() {
    let dir = tempdir();
    let d = dir.path();
    let good = base_image(d, "good.qcow2", &[]);
    let len = fs::metadata(&good).unwrap().len() as usize;
    for cut in [0usize, 50, 100, 4096, 0x30000 + 4, len / 2, len - 100] {
        let p = patched(d, &good, &format!("cut-{cut}.qcow2"), |v| v.truncate(cut));
        match Image::open(&p) {
            Err(e) => assert!(qcow2_format::host::errno(&e) > 0),
            Ok(mut img) => {
                // Metadata or data beyond the end: errors, not panics.
                let _ = img.read_all();
            }
        }
    }
    assert!(matches!(
        open_err(&patched(d, &good, "cut-hdr.qcow2", |v| v.truncate(50))),
        Error::Truncated { .. }
    ));
}

#[test]
fn chain_too_deep() {
    let dir = tempdir();
    let d = dir.path();
    let mut prev = path(d, "l0.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&prev), "1M"]);
    for i in 1..=16 {
        let p = path(d, &format!("l{i}.qcow2"));
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            s(&prev),
            "-F",
            "qcow2",
            s(&p),
            "1M",
        ]);
        prev = p;
    }
    // 17 layers.
    assert_eq!(open_err(&prev), Error::ChainTooDeep);
    // 16 layers are fine.
    assert_eq!(
        Image::open(&path(d, "l15.qcow2")).unwrap().chain().len(),
        16
    );
}

/// Random byte mutations of the metadata of small images: open and read
/// everything, accept any error, never panic or hang.
#[test]
fn mutation_smoke() {
    let dir = tempdir();
    let d = dir.path();
    let raw = write_raw(d, "src.raw", &mixed_data(64 << 10, 60));
    let plain = path(d, "plain.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=512",
        s(&raw),
        s(&plain),
    ]);
    let comp = path(d, "comp.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=16k,extended_l2=on",
        s(&raw),
        s(&comp),
    ]);
    qemu_img(&["snapshot", "-c", "s1", s(&comp)]);
    let mut rng = Rng::new(1234);
    for src in [&plain, &comp] {
        let original = fs::read(src).unwrap();
        // Where the metadata is: header cluster, L1 and L2 tables.
        let hdr = Header::parse(&original).unwrap();
        let hot = [
            0usize,
            hdr.l1_table_offset as usize,
            hdr.snapshots_offset as usize,
        ];
        for iter in 0..150 {
            let mut v = original.clone();
            for _ in 0..1 + rng.below(4) {
                let region = hot[rng.below(hot.len() as u64) as usize];
                let pos = if rng.below(3) == 0 {
                    rng.below(v.len() as u64) as usize
                } else {
                    (region + rng.below(256) as usize).min(v.len() - 1)
                };
                v[pos] ^= 1 << rng.below(8);
            }
            let p = path(d, "mut.qcow2");
            fs::write(&p, &v).unwrap();
            if let Ok(mut img) = Image::open(&p) {
                if img.size() <= 1 << 24 {
                    let _ = img.read_all();
                } else {
                    let mut buf = vec![0u8; 8192];
                    let _ = img.read_at(&mut buf, (iter as u64 * 4096) % (img.size() - 8192));
                }
            }
        }
    }
}

/// Version 2 images have no zero flag: bit 0 of a standard L2 entry is
/// corrupt metadata there (QEMU says the same), failing only that cluster.
#[test]
fn version2_zero_bit_is_corrupt() {
    let dir = tempdir();
    let d = dir.path();
    let img = path(d, "v2.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10,cluster_size=4k",
        s(&img),
        "1M",
    ]);
    qemu_io(&img, &["write -P 0x3c 0 64k"]);
    let p = patched(d, &img, "v2zero.qcow2", |v| {
        let l2 = (get64(v, get64(v, 40) as usize) & 0x00ff_ffff_ffff_fe00) as usize;
        v[l2 + 8 * 3 + 7] |= 1;
    });
    let mut image = Image::open(&p).unwrap();
    let mut buf = vec![0u8; 12288];
    image.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 0x3c));
    let e = image.read_at(&mut buf[..10], 12290).unwrap_err();
    assert!(matches!(e, Error::CorruptL2Entry { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    image.read_at(&mut buf, 16384).unwrap();
}

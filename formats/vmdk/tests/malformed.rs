//! Hostile and unsupported images: open must fail with the right error, a
//! bad pointer must fail only the requests that use it, and nothing may
//! panic.

mod common;

use std::fs;

use common::*;
use vmdk_format::host::Image;
use vmdk_format::{Error, ErrorKind, ExtentKind, SparseExtent, Structure};

/// A small image made by qemu-img from mixed data, as bytes.
fn image(opts: &str, size: usize, seed: u64) -> Vec<u8> {
    let dir = tempdir();
    fs::read(converted(dir.path(), "vmdk", opts, size, seed)).unwrap()
}

fn sparse() -> Vec<u8> {
    image("subformat=monolithicSparse", 2 << 20, 1)
}

fn stream() -> Vec<u8> {
    image("subformat=streamOptimized", 2 << 20, 2)
}

/// Whether an error is the expected one.
type Check = fn(&Error) -> bool;

fn open(data: &[u8]) -> Result<Image, Error> {
    Image::from_memory(vec![data.to_vec()])
}

fn open_err(data: &[u8]) -> Error {
    match open(data) {
        Ok(_) => panic!("a hostile image was accepted"),
        Err(e) => e,
    }
}

fn put32(d: &mut [u8], at: usize, v: u32) {
    d[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(d: &mut [u8], at: usize, v: u64) {
    d[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn le32(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(d[at..at + 4].try_into().unwrap())
}

fn extent_of(img: &Image) -> SparseExtent {
    match img.disk().extent(0).unwrap().kind() {
        ExtentKind::Sparse(s) => *s,
        _ => panic!("not sparse"),
    }
}

/// Byte offset of the first grain table and of its first allocated entry.
fn first_gt(data: &[u8]) -> (usize, usize) {
    let s = extent_of(&open(data).unwrap());
    let gt = le32(data, s.gd_offset() as usize) as usize * 512;
    let entry = (0..s.gtes_per_gt() as usize)
        .map(|i| gt + 4 * i)
        .find(|&at| le32(data, at) > 1)
        .expect("an allocated grain");
    (gt, entry)
}

#[test]
fn header_fields_out_of_range() {
    let base = sparse();
    let cases: &[(usize, u64, usize, Check)] = &[
        (0, 0x1234_5678, 4, |e| {
            matches!(e, Error::BadMagic(0x1234_5678))
        }),
        (4, 4, 4, |e| matches!(e, Error::UnsupportedVersion(4))),
        (4, 0, 4, |e| matches!(e, Error::UnsupportedVersion(0))),
        (20, 0, 8, |e| matches!(e, Error::BadGrainSize(0))),
        (20, 3, 8, |e| matches!(e, Error::BadGrainSize(3))),
        (20, 4096, 8, |e| matches!(e, Error::BadGrainSize(4096))),
        (20, u64::MAX, 8, |e| matches!(e, Error::BadGrainSize(_))),
        (44, 0, 4, |e| matches!(e, Error::BadGrainTableSize(0))),
        (44, 513, 4, |e| matches!(e, Error::BadGrainTableSize(513))),
        (12, 1 << 41, 8, |e| matches!(e, Error::CapacityTooLarge(_))),
        (12, u64::MAX, 8, |e| matches!(e, Error::CapacityTooLarge(_))),
        // A capacity whose grain directory does not fit in the file.
        (12, 1 << 36, 8, |e| {
            matches!(
                e,
                Error::Truncated {
                    what: Structure::GrainDirectory,
                    ..
                }
            )
        }),
        (56, 0, 8, |e| matches!(e, Error::BadGrainDirectoryOffset(0))),
        (56, 1 << 50, 8, |e| {
            matches!(
                e,
                Error::Truncated {
                    what: Structure::GrainDirectory,
                    ..
                }
            )
        }),
        (56, 1 << 60, 8, |e| {
            matches!(e, Error::BadGrainDirectoryOffset(_))
        }),
        (48, 1 << 40, 8, |e| {
            matches!(
                e,
                Error::Truncated {
                    what: Structure::RedundantGrainDirectory,
                    ..
                }
            )
        }),
        (64, 1 << 40, 8, |e| {
            matches!(
                e,
                Error::Truncated {
                    what: Structure::Header,
                    ..
                }
            )
        }),
        (77, 2, 2, |e| matches!(e, Error::UnsupportedCompression(2))),
        (73, 0x0a0d_0a0a, 4, |e| matches!(e, Error::BadNewlineCheck)),
        // The embedded descriptor out of the file, or too large.
        (28, 1 << 40, 8, |e| {
            matches!(e, Error::BadDescriptorLocation { .. })
        }),
        (36, 1 << 20, 8, |e| {
            matches!(e, Error::DescriptorTooLarge(_))
        }),
    ];
    for (i, &(at, value, width, ok)) in cases.iter().enumerate() {
        let mut d = base.clone();
        match width {
            2 => d[at..at + 2].copy_from_slice(&(value as u16).to_le_bytes()),
            4 => put32(&mut d, at, value as u32),
            _ => put64(&mut d, at, value),
        }
        let e = open_err(&d);
        assert!(ok(&e), "case {i} (offset {at}): unexpected {e:?}");
        assert!(
            matches!(
                e.kind(),
                ErrorKind::Invalid | ErrorKind::Unsupported | ErrorKind::TooLarge
            ),
            "case {i}: {e:?} is not an open-time class"
        );
    }
}

#[test]
fn cowd_refused() {
    let mut d = vec![0u8; 4096];
    d[..4].copy_from_slice(b"COWD");
    assert_eq!(open_err(&d), Error::BadMagic(0x4457_4f43));
}

#[test]
fn truncated_files() {
    let base = sparse();
    assert!(matches!(
        open_err(&base[..100]),
        Error::Truncated {
            what: Structure::Header,
            ..
        }
    ));
    assert!(matches!(
        open_err(&[]),
        Error::MissingVersion | Error::MissingCreateType
    ));
    // Cut anywhere: open fails or reads fail, cleanly.
    for cut in [512, 4096, 10 << 10, base.len() / 2, base.len() - 1] {
        if let Ok(mut img) = open(&base[..cut]) {
            let e = img.read_all().expect_err("a truncated image read whole");
            assert_eq!(e.kind(), ErrorKind::Corrupt, "cut {cut}: {e:?}");
        }
    }
}

#[test]
fn grain_pointers_past_eof() {
    let base = sparse();
    let s = extent_of(&open(&base).unwrap());
    let (gt, entry) = first_gt(&base);
    let grain = s.grain_len() as u64;
    let index = ((entry - gt) / 4) as u64;
    let expected = open(&base).unwrap().read_all().unwrap();
    for bad in [
        u32::MAX,
        (base.len() / 512) as u32,
        (base.len() / 512) as u32 - 1,
    ] {
        let mut d = base.clone();
        put32(&mut d, entry, bad);
        let mut img = open(&d).expect("a bad grain pointer is found by reads");
        let mut buf = vec![0u8; 4096];
        let e = img.read_at(&mut buf, index * grain).unwrap_err();
        assert!(
            matches!(
                e,
                Error::PastEndOfFile {
                    what: Structure::Grain,
                    ..
                }
            ),
            "{e:?}"
        );
        // Other grains still read.
        for g in (0..expected.len() as u64 / grain).filter(|&g| g != index) {
            img.read_at(&mut buf, g * grain).unwrap();
            assert!(buf == expected[(g * grain) as usize..(g * grain) as usize + 4096]);
        }
    }
    // A grain directory entry past the end of the file.
    let mut d = base.clone();
    put32(&mut d, s.gd_offset() as usize, u32::MAX);
    let mut img = open(&d).unwrap();
    let e = img.read_at(&mut [0u8; 512], 0).unwrap_err();
    assert!(
        matches!(
            e,
            Error::PastEndOfFile {
                what: Structure::GrainTable,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Corrupt);
}

#[test]
fn compressed_grains() {
    let base = stream();
    let s = extent_of(&open(&base).unwrap());
    let (gt, entry) = first_gt(&base);
    let index = ((entry - gt) / 4) as u64;
    let grain = s.grain_len() as u64;
    let marker = le32(&base, entry) as usize * 512;
    let size = le32(&base, marker + 8);
    let read = |d: &[u8]| {
        let mut img = open(d).unwrap();
        let mut buf = vec![0u8; 1000];
        img.read_at(&mut buf, index * grain + 100).map(|_| buf)
    };
    assert!(read(&base).is_ok());
    // Garbage deflate data.
    let mut d = base.clone();
    d[marker + 12..marker + 12 + size as usize]
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i * 7 + 3) as u8);
    assert_eq!(read(&d).unwrap_err(), Error::DecompressionFailed);
    // Corrupt stream body, valid zlib header.
    let mut d = base.clone();
    d[marker + 14..marker + 12 + size as usize].fill(0xff);
    assert!(matches!(
        read(&d).unwrap_err(),
        Error::DecompressionFailed | Error::DecompressedSizeMismatch { .. }
    ));
    // A stream cut short produces too little.
    let mut d = base.clone();
    put32(&mut d, marker + 8, 8.min(size));
    assert!(matches!(
        read(&d).unwrap_err(),
        Error::DecompressionFailed | Error::DecompressedSizeMismatch { .. }
    ));
    // Marker sizes: zero, beyond two grains, past the end of the file.
    for (bad, what) in [
        (0u32, "zero"),
        (2 * grain as u32, "huge"),
        (u32::MAX, "max"),
    ] {
        let mut d = base.clone();
        put32(&mut d, marker + 8, bad);
        let e = read(&d).unwrap_err();
        assert!(matches!(e, Error::BadGrainMarker { .. }), "{what}: {e:?}");
    }
    let mut d = base.clone();
    let near_end = (d.len() / 512 - 1) as u32;
    put32(&mut d, entry, near_end);
    put32(&mut d, near_end as usize * 512 + 8, grain as u32);
    let e = read(&d).unwrap_err();
    assert!(
        matches!(
            e,
            Error::PastEndOfFile {
                what: Structure::CompressedGrain,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Corrupt);
}

#[test]
fn bad_footer() {
    let mut d = stream();
    put64(&mut d, 56, u64::MAX);
    // No footer at the end: the last sectors are the end-of-stream marker
    // QEMU writes, not a footer.
    assert!(
        matches!(open_err(&d), Error::BadFooter | Error::BadMagic(_)),
        "{:?}",
        open_err(&d)
    );
    // A footer whose header says GD_AT_END again.
    let mut header = d[..512].to_vec();
    let mut footer = vec![0u8; 512];
    footer[12..16].copy_from_slice(&3u32.to_le_bytes());
    d.extend_from_slice(&footer);
    d.extend_from_slice(&header);
    d.extend_from_slice(&[0u8; 512]);
    assert!(matches!(
        open_err(&d),
        Error::BadGrainDirectoryOffset(u64::MAX)
    ));
    // A footer that is too short a file.
    header.truncate(512);
    assert!(matches!(
        open_err(&header),
        Error::Truncated {
            what: Structure::Footer,
            ..
        }
    ));
}

fn desc(extents: &str) -> Vec<u8> {
    format!("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n{extents}\nddb.adapterType = \"ide\"\n")
        .into_bytes()
}

#[test]
fn descriptor_files() {
    let flat = vec![0x5au8; 8192];
    let ok = |text: &[u8], files: &[&[u8]]| {
        let mut all = vec![text.to_vec()];
        all.extend(files.iter().map(|f| f.to_vec()));
        Image::from_memory(all)
    };
    let mut img = ok(&desc("RW 16 FLAT \"f\" 0"), &[&flat]).unwrap();
    assert_eq!(img.read_all().unwrap(), flat);
    let cases: &[(&[u8], Check)] = &[
        (b"version=1\nRW 16 FLAT \"f\" 0\n", |e| {
            matches!(e, Error::MissingCreateType)
        }),
        (
            b"createType=\"monolithicFlat\"\nRW 16 FLAT \"f\" 0\n",
            |e| matches!(e, Error::MissingVersion),
        ),
        (b"version=9\ncreateType=\"monolithicFlat\"\n", |e| {
            matches!(e, Error::UnsupportedDescriptorVersion(9))
        }),
        (b"version=1\ncreateType=\"vmfs\"\nRW 16 VMFS \"f\"\n", |e| {
            matches!(e, Error::UnsupportedCreateType(_))
        }),
        (
            b"version=1\ncreateType=\"monolithicSparse\"\nRW 16 SPARSE \"f\"\n",
            |e| matches!(e, Error::CreateTypeMismatch),
        ),
        (b"version=1\ncreateType=\"monolithicFlat\"\n", |e| {
            matches!(e, Error::NoExtents)
        }),
        (
            b"version=1\ncreateType=\"monolithicFlat\"\nthis is not a line\n",
            |e| matches!(e, Error::InvalidDescriptorLine(3)),
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let e = ok(text, &[&flat]).err().expect("accepted");
        assert!(want(&e), "case {i}: {e:?}");
    }
    let lines: &[(&str, Check)] = &[
        ("RW 16 VMFS \"f\"", |e| {
            matches!(e, Error::UnsupportedExtentType(_))
        }),
        ("RW 16 SESPARSE \"f\"", |e| {
            matches!(e, Error::UnsupportedExtentType(_))
        }),
        ("NOACCESS 16 FLAT \"f\" 0", |e| {
            matches!(e, Error::NoAccessExtent(_))
        }),
        ("RW 0 FLAT \"f\" 0", |e| {
            matches!(e, Error::InvalidDescriptorLine(_))
        }),
        ("RW -1 FLAT \"f\" 0", |e| {
            matches!(e, Error::InvalidDescriptorLine(_))
        }),
        ("RW 16 FLAT \"f\" 0 extra", |e| {
            matches!(e, Error::InvalidDescriptorLine(_))
        }),
        ("RW 16 FLAT \"f", |e| {
            matches!(e, Error::InvalidDescriptorLine(_))
        }),
        ("RW 16 FLAT \"\" 0", |e| {
            matches!(e, Error::InvalidDescriptorLine(_))
        }),
        ("RW 16 FLAT f 0", |e| {
            matches!(e, Error::InvalidDescriptorLine(_))
        }),
        ("RW 16 SPARSE \"f\" 3", |e| {
            matches!(e, Error::InvalidDescriptorLine(_))
        }),
        ("RW 16 ZERO \"f\"", |e| {
            matches!(e, Error::InvalidDescriptorLine(_))
        }),
        ("RW 99999999999999999999999 FLAT \"f\" 0", |e| {
            matches!(e, Error::InvalidDescriptorLine(_))
        }),
        ("RW 2000000000000 FLAT \"f\" 0", |e| {
            matches!(e, Error::DiskTooLarge)
        }),
        // Extents shorter than declared, or at an offset past their end.
        ("RW 17 FLAT \"f\" 0", |e| {
            matches!(
                e,
                Error::Truncated {
                    what: Structure::FlatExtent,
                    ..
                }
            )
        }),
        ("RW 16 FLAT \"f\" 1", |e| {
            matches!(
                e,
                Error::Truncated {
                    what: Structure::FlatExtent,
                    ..
                }
            )
        }),
        // The second file is missing.
        ("RW 16 FLAT \"f\" 0\nRW 16 FLAT \"g\" 0", |e| {
            matches!(e, Error::Io(_))
        }),
        (
            "RW 16 FLAT \"f\" 0\nparentFileNameHint=\"base.vmdk\"",
            |e| matches!(e, Error::ParentUnsupported),
        ),
    ];
    for (i, (line, want)) in lines.iter().enumerate() {
        let e = ok(&desc(line), &[&flat]).err().expect("accepted");
        assert!(want(&e), "line case {i} ({line}): {e:?}");
    }
    let many = "RW 1 ZERO\n".repeat(17);
    assert_eq!(ok(&desc(&many), &[]).err(), Some(Error::TooManyExtents));
    // Sixteen extents, but sixteen files and the descriptor are more than
    // the kernel's 16 layers; fifteen are fine.
    let names =
        |n: usize| -> String { (0..n).map(|i| format!("RW 16 FLAT \"f{i}\" 0\n")).collect() };
    let files: Vec<&[u8]> = vec![&flat; 16];
    assert_eq!(
        ok(&desc(&names(16)), &files).err(),
        Some(Error::TooManyExtents)
    );
    let mut fifteen = ok(&desc(&(names(15) + "RW 5 ZERO")), &files[..15]).unwrap();
    assert_eq!(fifteen.disk().len(), 16);
    assert_eq!(fifteen.read_all().unwrap().len(), 15 * 8192 + 5 * 512);
    // The same file twice.
    let twice = desc("RW 16 FLAT \"f\" 0\nRW 8 ZERO\nRW 16 FLAT \"f\" 0");
    assert_eq!(
        ok(&twice, &[&flat, &flat]).err(),
        Some(Error::DuplicateExtentName(8))
    );
    // Too long for a descriptor, and not a sparse extent.
    let huge = vec![b'#'; (64 << 10) + 1];
    assert_eq!(ok(&huge, &[]).err(), Some(Error::BadMagic(0x2323_2323)));
    // A sparse extent whose header disagrees with the descriptor's size.
    let s = sparse();
    let text = b"version=1\ncreateType=\"twoGbMaxExtentSparse\"\nRW 100 SPARSE \"s\"\n";
    let e = ok(text, &[&s]).err().expect("accepted");
    assert!(
        matches!(e, Error::ExtentSizeMismatch { declared: 100, .. }),
        "{e:?}"
    );
}

#[test]
fn parent_links_refused() {
    let dir = tempdir();
    let base = dir.path().join("base.vmdk");
    let top = dir.path().join("top.vmdk");
    qemu_img(&["create", "-f", "vmdk", s(&base), "1M"]);
    qemu_img(&[
        "create",
        "-f",
        "vmdk",
        "-b",
        s(&base),
        "-F",
        "vmdk",
        s(&top),
    ]);
    assert_eq!(Image::open(&top).err(), Some(Error::ParentUnsupported));
}

/// Random mutations of the metadata regions of real images: open and
/// read everything; errors are fine, panics are not.
#[test]
fn fuzz_harnesses_on_real_images() {
    use vmdk_format::fuzzing::{descriptor, grain, image};
    for base in [sparse(), stream()] {
        let mut input = vec![0u8];
        input.extend_from_slice(&base);
        image(&input);
        let img = open(&base).unwrap();
        let (_, text) = img.descriptor().unwrap();
        descriptor(text);
        let s = extent_of(&img);
        if s.compressed() {
            let (_, entry) = first_gt(&base);
            let at = le32(&base, entry) as usize * 512;
            let mut g = vec![0x87u8, 0];
            g.extend_from_slice(&base[at..]);
            grain(&g);
        }
    }
    // A descriptor file with its extents, as the image harness splits them.
    let flat = vec![0x33u8; 4096];
    let text = desc("RW 4 FLAT \"f\" 2\nRW 3 ZERO\nRW 4 FLAT \"g\" 0");
    let mut input = vec![2u8];
    for f in [&text, &flat] {
        input.extend_from_slice(&(f.len() as u32).to_le_bytes());
        input.extend_from_slice(f);
    }
    input.extend_from_slice(&flat);
    image(&input);
    assert_eq!(
        Image::from_memory(vec![text, flat.clone(), flat])
            .unwrap()
            .size(),
        11 * 512
    );
}

#[test]
fn random_mutations() {
    for (name, base) in [("sparse", sparse()), ("stream", stream())] {
        let s = extent_of(&open(&base).unwrap());
        let (gt, _) = first_gt(&base);
        let hot = [0usize, 512, s.gd_offset() as usize, gt];
        let mut rng = Rng::new(77);
        for round in 0..100 {
            let mut v = base.clone();
            for _ in 0..1 + rng.below(4) {
                let region = hot[rng.below(hot.len() as u64) as usize];
                let pos = (region + rng.below(1024) as usize).min(v.len() - 1);
                v[pos] ^= 1 << rng.below(8);
            }
            // The fuzz harness on the same input (naive reader cross-check).
            let mut input = vec![0u8];
            input.extend_from_slice(&v);
            vmdk_format::fuzzing::image(&input);
            if let Ok(mut img) = open(&v) {
                if img.size() <= 64 << 20 {
                    let _ = img.read_all();
                }
                let mut buf = vec![0u8; 70000];
                let size = img.size();
                if size > buf.len() as u64 {
                    let at = rng.below(size - buf.len() as u64);
                    let _ = img.read_at(&mut buf, at);
                }
            }
            let _ = (name, round);
        }
    }
}

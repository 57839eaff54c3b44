//! Hostile and unsupported VDI images: open must fail with the right
//! error, a bad block pointer must fail only the requests that use it,
//! and nothing may panic.

mod common;

use std::fs;

use common::*;
use vdi_format::host::Image;
use vdi_format::map::BLOCK_ZERO;
use vdi_format::{Error, ErrorKind, Structure};

fn image(opts: &str) -> Vec<u8> {
    let dir = tempdir();
    fs::read(converted(dir.path(), "vdi", opts, 4 << 20, 9)).unwrap()
}

fn open(d: &[u8]) -> Result<Image, Error> {
    Image::from_memory(d.to_vec())
}

/// Whether an error is the expected one.
type Check = fn(&Error) -> bool;

fn put32(d: &mut [u8], at: usize, v: u32) {
    d[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn header_fields_out_of_range() {
    let base = image("static=off");
    assert!(open(&base).is_ok());
    let cases: &[(usize, u32, Check)] = &[
        (64, 0xbeda_1000, |e| {
            matches!(e, Error::BadSignature(0xbeda_1000))
        }),
        (68, 0x0001_0000, |e| {
            matches!(e, Error::UnsupportedVersion(0x0001_0000))
        }),
        (72, 100, |e| matches!(e, Error::BadHeaderSize(100))),
        (72, 10_000, |e| matches!(e, Error::BadHeaderSize(10_000))),
        (76, 3, |e| matches!(e, Error::UnsupportedImageType(3))),
        (76, 4, |e| matches!(e, Error::UnsupportedImageType(4))),
        (76, 0, |e| matches!(e, Error::UnsupportedImageType(0))),
        (340, 0x201, |e| {
            matches!(e, Error::BadHeaderSize(_) | Error::BadOffset { .. })
        }),
        (340, 0x400, |e| {
            matches!(
                e,
                Error::BadOffset {
                    what: Structure::BlockMap,
                    ..
                }
            )
        }),
        (344, 0x401, |e| {
            matches!(
                e,
                Error::BadOffset {
                    what: Structure::Block,
                    ..
                }
            )
        }),
        (344, 0x200, |e| {
            matches!(
                e,
                Error::BadOffset {
                    what: Structure::BlockMap,
                    ..
                }
            )
        }),
        (360, 4096, |e| matches!(e, Error::BadSectorSize(4096))),
        (376, 4096, |e| {
            matches!(e, Error::UnsupportedBlockSize(4096))
        }),
        (376, 0, |e| matches!(e, Error::UnsupportedBlockSize(0))),
        (380, 512, |e| matches!(e, Error::UnsupportedBlockExtra(512))),
        (384, u32::MAX, |e| {
            matches!(e, Error::TooManyBlocks(u32::MAX))
        }),
        (384, 1, |e| matches!(e, Error::DiskSizeBeyondBlocks { .. })),
        // A block map reaching into the data.
        (384, 1 << 20, |e| matches!(e, Error::BadOffset { .. })),
        (372, 1, |e| matches!(e, Error::DiskSizeBeyondBlocks { .. })),
        (424, 1, |e| matches!(e, Error::ParentUnsupported)),
        (452, 1, |e| matches!(e, Error::ParentUnsupported)),
    ];
    for (i, &(at, value, want)) in cases.iter().enumerate() {
        let mut d = base.clone();
        put32(&mut d, at, value);
        let e = open(&d)
            .err()
            .unwrap_or_else(|| panic!("case {i} accepted"));
        assert!(want(&e), "case {i} (offset {at}): {e:?}");
        assert!(
            matches!(
                e.kind(),
                ErrorKind::Invalid | ErrorKind::Unsupported | ErrorKind::TooLarge
            ),
            "case {i}: {e:?}"
        );
    }
    // A block map past the end of the file (data offset moved out too).
    let mut d = base.clone();
    put32(&mut d, 344, 1 << 30);
    put32(&mut d, 340, (1 << 30) - 4096);
    assert!(matches!(
        open(&d).err().unwrap(),
        Error::Truncated {
            what: Structure::BlockMap,
            ..
        }
    ));
}

#[test]
fn truncated_files() {
    let base = image("static=off");
    assert!(matches!(
        open(&base[..511]).err().unwrap(),
        Error::Truncated {
            what: Structure::Header,
            ..
        }
    ));
    assert!(open(&[]).is_err());
    let expected = open(&base).unwrap().read_all().unwrap();
    for cut in [600, 1024, 1 << 20, base.len() / 2, base.len() - 1] {
        match open(&base[..cut]) {
            Err(e) => assert_eq!(e.kind(), ErrorKind::Invalid, "cut {cut}: {e:?}"),
            Ok(mut img) => {
                let r = img.read_all();
                assert!(
                    matches!(r, Err(Error::PastEndOfFile { .. })) || r.as_ref() == Ok(&expected),
                    "cut {cut}: {:?}",
                    r.err()
                );
            }
        }
    }
}

#[test]
fn block_pointers_past_eof() {
    for opts in ["static=off", "static=on"] {
        let base = image(opts);
        let img = open(&base).unwrap();
        let bmap = img.header().bmap_offset() as usize;
        let map = img.block_map().to_vec();
        let expected = open(&base).unwrap().read_all().unwrap();
        let victim = map
            .iter()
            .position(|&e| e < BLOCK_ZERO)
            .expect("an allocated block");
        for bad in [BLOCK_ZERO - 1, 1 << 20, map.len() as u32 + 100] {
            let mut d = base.clone();
            put32(&mut d, bmap + 4 * victim, bad);
            let mut img = open(&d).expect("bad entries are found by reads");
            let mut buf = vec![0u8; 4096];
            let e = img.read_at(&mut buf, (victim as u64) << 20).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::PastEndOfFile {
                        what: Structure::Block,
                        ..
                    }
                ),
                "{opts}: {e:?}"
            );
            assert_eq!(e.kind(), ErrorKind::Corrupt);
            for b in (0..map.len()).filter(|&b| b != victim) {
                img.read_at(&mut buf, (b as u64) << 20).unwrap();
                assert!(buf == expected[b << 20..(b << 20) + 4096], "block {b}");
            }
        }
    }
}

/// Random mutations of the header and block map: open and read
/// everything; errors are fine, panics are not.
#[test]
fn random_mutations() {
    let base = image("static=off");
    let mut rng = Rng::new(5);
    for _ in 0..300 {
        let mut v = base.clone();
        for _ in 0..1 + rng.below(4) {
            let pos = rng.below(600) as usize;
            v[pos] ^= 1 << rng.below(8);
        }
        vdi_format::fuzzing::image(&v);
        if let Ok(mut img) = open(&v) {
            if img.size() <= 64 << 20 {
                let _ = img.read_all();
            }
        }
    }
}

//! Unit tests of the pure format logic: entry and descriptor decoding,
//! subcluster runs, header validation on crafted buffers, and the read
//! engine over a hand-made in-memory image.

use std::vec;
use std::vec::Vec;

use crate::format::compressed::{max_compressed_len, COMPRESSED_SECTOR_SIZE};
use crate::format::error::ErrorKind;
use crate::format::table::{decode_l1_entry, decode_l2_entry, map_entry, map_in_table};
use crate::format::*;

const CB: u32 = 16; // 64 KiB clusters

fn g(cluster_bits: u32, extended: bool) -> Geometry {
    Geometry::new(cluster_bits, extended).unwrap()
}

// ---- compressed descriptors -------------------------------------------------

#[test]
fn descriptor_layout_per_cluster_bits() {
    for cb in 9..=21u32 {
        let x = 62 - (cb - 8);
        let sector_bits = cb - 8;
        let max_sectors = (1u64 << sector_bits) - 1;
        let host = 0x1234_5677u64 & ((1u64 << x.min(56)) - 1);
        let raw = host | (max_sectors << x) | (1 << 62) | (1 << 63);
        let d = CompressedDescriptor::decode(cb, raw).unwrap();
        assert_eq!(d.host_offset(), host, "cb {cb}");
        assert_eq!(d.additional_sectors(), max_sectors, "cb {cb}");
        assert_eq!(
            d.max_len(),
            (max_sectors + 1) * 512 - (host % 512),
            "cb {cb}"
        );
        // At most two clusters of input.
        assert!(d.max_len() <= max_compressed_len(cb) as u64);
        assert_eq!(
            CompressedDescriptor::encode(cb, host, max_sectors),
            Some(raw & ((1 << 62) - 1))
        );
        assert_eq!(
            CompressedDescriptor::encode(cb, host, max_sectors + 1),
            None
        );
    }
    // Field boundaries: for 64 KiB clusters x = 54.
    let raw = (1u64 << 62) | (3u64 << 54) | 0x12345;
    let d = CompressedDescriptor::decode(16, raw).unwrap();
    assert_eq!(d.host_offset(), 0x12345);
    assert_eq!(d.additional_sectors(), 3);
    assert_eq!(d.max_len(), 4 * COMPRESSED_SECTOR_SIZE - 0x145);
}

#[test]
fn descriptor_rejects_high_offset_bits() {
    // cluster_bits 9: x = 61, offset bits 56..61 must be zero.
    let raw = (1u64 << 62) | (1u64 << 57);
    assert_eq!(
        CompressedDescriptor::decode(9, raw),
        Err(Error::CorruptCompressedDescriptor(raw))
    );
    // The same bit is a sector count bit for 64 KiB clusters.
    assert_eq!(
        CompressedDescriptor::decode(16, raw)
            .unwrap()
            .additional_sectors(),
        8
    );
    assert!(CompressedDescriptor::decode(8, 0).is_err());
    assert!(CompressedDescriptor::decode(22, 0).is_err());
}

#[test]
fn descriptor_read_range_clamps_to_file() {
    let raw = CompressedDescriptor::encode(16, 10_000, 2).unwrap();
    let d = CompressedDescriptor::decode(16, raw).unwrap();
    // 3 sectors from 10000 (10000 % 512 = 272): 1264 bytes.
    assert_eq!(d.read_range(1 << 20).unwrap(), (10_000, 1264));
    assert_eq!(d.read_range(10_500).unwrap(), (10_000, 500));
    let e = d.read_range(10_000).unwrap_err();
    assert!(matches!(e, Error::PastEndOfFile { .. }));
    assert_eq!(e.kind(), ErrorKind::Corrupt);
}

// ---- L1 / L2 entries ----------------------------------------------------------

#[test]
fn l1_entries() {
    let geo = g(CB, false);
    assert_eq!(decode_l1_entry(&geo, 0, 0), Ok(None));
    assert_eq!(decode_l1_entry(&geo, 0, 1 << 63), Ok(None));
    assert_eq!(
        decode_l1_entry(&geo, 3, (1 << 63) | 0x30000),
        Ok(Some(0x30000))
    );
    for bad in [
        0x30001u64,
        0x30000 | (1 << 56),
        0x30000 | (1 << 62),
        0x30200,
    ] {
        assert_eq!(
            decode_l1_entry(&geo, 7, bad),
            Err(Error::CorruptL1Entry { index: 7, raw: bad })
        );
    }
}

#[test]
fn l2_standard_entries() {
    let geo = g(CB, false);
    assert_eq!(decode_l2_entry(&geo, 0, 0), Ok(L2Entry::Unallocated));
    assert_eq!(decode_l2_entry(&geo, 1, 0), Ok(L2Entry::Zero));
    assert_eq!(decode_l2_entry(&geo, 0x50000 | 1, 0), Ok(L2Entry::Zero));
    assert_eq!(
        decode_l2_entry(&geo, (1 << 63) | 0x50000, 0),
        Ok(L2Entry::Data {
            host_offset: 0x50000
        })
    );
    // Reserved bits 1-8 and 56-61, misaligned offsets.
    for bad in [
        0x50002u64,
        0x50000 | (1 << 8),
        0x50000 | (1 << 56),
        0x50000 | (1 << 61),
        0x50200,
    ] {
        assert_eq!(
            decode_l2_entry(&geo, bad, 0),
            Err(Error::CorruptL2Entry { raw: bad })
        );
    }
    assert!(matches!(
        decode_l2_entry(&geo, (1 << 62) | 0x1234, 0),
        Ok(L2Entry::Compressed(_))
    ));
    // Version 2: no zero flag.
    let v2 = Geometry::for_version(2, CB, false).unwrap();
    assert_eq!(
        decode_l2_entry(&v2, 0x50001, 0),
        Err(Error::CorruptL2Entry { raw: 0x50001 })
    );
    assert_eq!(
        decode_l2_entry(&v2, 0x50000, 0),
        Ok(L2Entry::Data {
            host_offset: 0x50000
        })
    );
}

#[test]
fn l2_extended_entries() {
    let geo = g(CB, true);
    // Bit 0 is ignored with extended L2.
    assert_eq!(
        decode_l2_entry(&geo, 1, 0),
        Ok(L2Entry::Subclusters {
            host_offset: None,
            alloc: 0,
            zero: 0
        })
    );
    // Both bits for one subcluster.
    let bm = (1u64 << 35) | (1 << 3);
    assert_eq!(
        decode_l2_entry(&geo, 0x10000, bm),
        Err(Error::InvalidSubclusterBitmap {
            raw: 0x10000,
            bitmap: bm
        })
    );
    // Allocation without a host cluster.
    assert!(decode_l2_entry(&geo, 0, 1).is_err());
    // Zero-only without a host cluster is fine.
    assert_eq!(
        decode_l2_entry(&geo, 0, 0xffff_ffff << 32),
        Ok(L2Entry::Subclusters {
            host_offset: None,
            alloc: 0,
            zero: 0xffff_ffff
        })
    );
    // Compressed: the bitmap is reserved and ignored.
    assert!(matches!(
        decode_l2_entry(&geo, (1 << 62) | 0x1234, 0xdead),
        Ok(L2Entry::Compressed(_))
    ));
}

#[test]
fn subcluster_runs() {
    // 64 KiB clusters: 2 KiB subclusters.
    let geo = g(CB, true);
    let host = 0x7_0000u64;
    // sc 4..8 allocated, 12..15 zero, 20 allocated, rest unallocated.
    let alloc: u64 = 0b1111_0000 | (1 << 20);
    let zero: u64 = 0b111 << 12;
    let bm = alloc | (zero << 32);
    let base = 5 * 65536u64; // guest cluster 5
    let m = |off: u64, max: u64| map_entry(&geo, host, bm, base + off, max).unwrap();
    assert_eq!(
        m(0, u64::MAX),
        Mapping {
            kind: MappingKind::Unallocated,
            len: 8192
        }
    );
    assert_eq!(
        m(8192 + 100, u64::MAX),
        Mapping {
            kind: MappingKind::Data {
                host_offset: host + 8192 + 100
            },
            len: 8192 - 100
        }
    );
    assert_eq!(
        m(16384, u64::MAX),
        Mapping {
            kind: MappingKind::Unallocated,
            len: 8192
        }
    );
    assert_eq!(
        m(24576 + 1, u64::MAX),
        Mapping {
            kind: MappingKind::Zero,
            len: 6144 - 1
        }
    );
    assert_eq!(
        m(20 * 2048 + 5, 10),
        Mapping {
            kind: MappingKind::Data {
                host_offset: host + 20 * 2048 + 5
            },
            len: 10
        }
    );
    assert_eq!(
        m(21 * 2048, u64::MAX),
        Mapping {
            kind: MappingKind::Unallocated,
            len: 11 * 2048
        }
    );
    // Fully allocated cluster: one run to the end.
    assert_eq!(
        map_entry(&geo, host, 0xffff_ffff, base + 3, u64::MAX)
            .unwrap()
            .len,
        65533
    );
}

fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

#[test]
fn table_runs_merge() {
    let geo = g(9, false); // 512-byte clusters, 64 entries
    let mut t = vec![0u8; 512];
    // 0..3: contiguous data from 0x10000; 3: data elsewhere; 4,5: zero;
    // 6: compressed; 7..: unallocated; 40: corrupt.
    for i in 0..3 {
        put_u64(&mut t, i * 8, (1 << 63) | (0x10000 + 512 * i as u64));
    }
    put_u64(&mut t, 24, 0x40000);
    put_u64(&mut t, 32, 1);
    put_u64(&mut t, 40, 0x20000 | 1);
    put_u64(&mut t, 48, (1 << 62) | 0x999);
    put_u64(&mut t, 40 * 8, 0x3);
    let m = |off: u64, max: u64| map_in_table(&geo, &t, off, max).unwrap();
    assert_eq!(
        m(10, u64::MAX),
        Mapping {
            kind: MappingKind::Data {
                host_offset: 0x10000 + 10
            },
            len: 3 * 512 - 10
        }
    );
    assert_eq!(m(10, 700).len, 700);
    assert_eq!(m(3 * 512, u64::MAX).len, 512);
    assert_eq!(
        m(4 * 512 + 1, u64::MAX),
        Mapping {
            kind: MappingKind::Zero,
            len: 1023
        }
    );
    assert!(matches!(
        m(6 * 512 + 7, u64::MAX).kind,
        MappingKind::Compressed { .. }
    ));
    assert_eq!(m(6 * 512 + 7, u64::MAX).len, 505);
    // Unallocated run stops before the corrupt entry 40...
    assert_eq!(
        m(7 * 512, u64::MAX),
        Mapping {
            kind: MappingKind::Unallocated,
            len: 33 * 512
        }
    );
    // ...which fails when it is mapped itself.
    assert!(map_in_table(&geo, &t, 40 * 512, 1).is_err());
    // The run ends at the end of the table (64 entries).
    assert_eq!(m(41 * 512, u64::MAX).len, 23 * 512);
    // Guest offsets in later L2 tables index the same way.
    assert_eq!(m(64 * 512 + 10, 1).kind, m(10, 1).kind);
    // Wrong table size.
    assert!(map_in_table(&geo, &t[..256], 0, 1).is_err());
}

// ---- header --------------------------------------------------------------------

/// A valid v3 header of `len` bytes (first cluster), 64 KiB clusters, 1 GiB.
fn v3_header(len: usize) -> Vec<u8> {
    let mut h = vec![0u8; len];
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&CB.to_be_bytes());
    put_u64(&mut h, 24, 1 << 30);
    h[36..40].copy_from_slice(&2u32.to_be_bytes()); // l1_size
    put_u64(&mut h, 40, 0x30000);
    put_u64(&mut h, 48, 0x10000);
    h[56..60].copy_from_slice(&1u32.to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes());
    h[100..104].copy_from_slice(&112u32.to_be_bytes());
    h
}

fn set_u32(h: &mut [u8], off: usize, v: u32) {
    h[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn add_ext(h: &mut [u8], off: usize, kind: u32, data: &[u8]) -> usize {
    set_u32(h, off, kind);
    set_u32(h, off + 4, data.len() as u32);
    h[off + 8..off + 8 + data.len()].copy_from_slice(data);
    off + 8 + data.len().div_ceil(8) * 8
}

#[test]
fn header_valid_v3_and_v2() {
    let h = v3_header(4096);
    let hdr = Header::parse(&h).unwrap();
    assert_eq!(hdr.version, 3);
    assert_eq!(hdr.cluster_size(), 65536);
    assert_eq!(hdr.size, 1 << 30);
    assert_eq!(hdr.compression_type, CompressionType::Deflate);
    assert!(!hdr.is_dirty() && !hdr.is_corrupt() && !hdr.extended_l2());

    let mut v2 = v3_header(4096);
    set_u32(&mut v2, 4, 2);
    // Bytes 72.. are not header fields in v2: garbage there is ignored
    // (but the end-of-extensions marker must come first).
    v2.truncate(72);
    let hdr = Header::parse(&v2).unwrap();
    assert_eq!(
        (hdr.version, hdr.refcount_order, hdr.header_length),
        (2, 4, 72)
    );
}

#[test]
fn header_field_limits() {
    let check = |f: &dyn Fn(&mut Vec<u8>), want: Error| {
        let mut h = v3_header(4096);
        f(&mut h);
        assert_eq!(Header::parse(&h), Err(want));
    };
    check(&|h| h[0] = b'X', Error::BadMagic(0x5846_49fb));
    check(&|h| set_u32(h, 4, 1), Error::UnsupportedVersion(1));
    check(&|h| set_u32(h, 4, 4), Error::UnsupportedVersion(4));
    check(&|h| set_u32(h, 20, 8), Error::BadClusterBits(8));
    check(&|h| set_u32(h, 20, 22), Error::BadClusterBits(22));
    check(&|h| set_u32(h, 100, 96), Error::BadHeaderLength(96));
    check(&|h| set_u32(h, 100, 108), Error::BadHeaderLength(108));
    check(&|h| set_u32(h, 32, 1), Error::Encrypted(1));
    check(&|h| set_u32(h, 96, 7), Error::BadRefcountOrder(7));
    check(
        &|h| put_u64(h, 24, u64::MAX),
        Error::VirtualSizeTooLarge(u64::MAX),
    );
    check(
        &|h| put_u64(h, 24, 1 << 40),
        Error::L1TableTooSmall {
            entries: 2,
            needed: 2048,
        },
    );
    check(
        &|h| set_u32(h, 36, u32::MAX),
        Error::TableTooLarge {
            what: Structure::L1Table,
            entries: u32::MAX as u64,
        },
    );
    check(
        &|h| put_u64(h, 40, 0x30200),
        Error::MisalignedTable {
            what: Structure::L1Table,
            offset: 0x30200,
        },
    );
    check(
        &|h| put_u64(h, 40, !0xffff),
        Error::TableTooLarge {
            what: Structure::L1Table,
            entries: 2,
        },
    );
    check(
        &|h| put_u64(h, 48, 0x10008),
        Error::MisalignedTable {
            what: Structure::RefcountTable,
            offset: 0x10008,
        },
    );
    check(&|h| set_u32(h, 60, 70000), Error::TooManySnapshots(70000));
    check(&|h| h[79] = 1 << 2, Error::ExternalDataFile);
    check(
        &|h| h[79] = 1 << 3,
        Error::CompressionTypeMismatch {
            bit_set: true,
            compression_type: 0,
        },
    );
    check(&|h| h[104] = 2, Error::UnsupportedCompressionType(2));
    check(
        &|h| h[104] = 1,
        Error::CompressionTypeMismatch {
            bit_set: false,
            compression_type: 1,
        },
    );
    check(
        &|h| {
            set_u32(h, 20, 13);
            h[79] = 1 << 4
        },
        Error::ExtendedL2ClusterTooSmall(13),
    );
    // Too short buffers.
    assert!(matches!(
        Header::parse(&v3_header(4096)[..100]),
        Err(Error::Truncated { .. })
    ));
    assert!(matches!(
        Header::parse(&v3_header(4096)[..60]),
        Err(Error::Truncated { .. })
    ));
}

#[test]
fn header_compression_type_zstd_and_flags() {
    let mut h = v3_header(4096);
    h[79] = (1 << 3) | 1 | 2;
    h[104] = 1;
    let hdr = Header::parse(&h).unwrap();
    assert_eq!(hdr.compression_type, CompressionType::Zstd);
    assert!(hdr.is_dirty() && hdr.is_corrupt());
    // compression_type is only read if header_length > 104.
    set_u32(&mut h, 100, 104);
    assert_eq!(
        Header::parse(&h),
        Err(Error::CompressionTypeMismatch {
            bit_set: true,
            compression_type: 0
        })
    );
}

#[test]
fn header_unknown_incompatible_bit_is_named() {
    let mut h = v3_header(4096);
    h[79] = 1 << 5;
    let e = Header::parse(&h).unwrap_err();
    assert_eq!(
        e,
        Error::UnknownIncompatibleFeature {
            bit: 5,
            name: crate::format::error::FeatureName::EMPTY
        }
    );
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    // With a feature name table naming it.
    let mut table = vec![0u8; 96];
    table[0] = 0;
    table[1] = 4;
    table[2..13].copy_from_slice(b"extended l2");
    table[48] = 0;
    table[49] = 5;
    table[50..60].copy_from_slice(b"time warp!");
    add_ext(&mut h, 112, 0x6803_f857, &table);
    let e = Header::parse(&h).unwrap_err();
    let text = std::format!("{e}");
    assert!(text.contains("bit 5 (time warp!)"), "{text}");
    match e {
        Error::UnknownIncompatibleFeature { bit, name } => {
            assert_eq!(bit, 5);
            assert_eq!(name.as_bytes(), b"time warp!");
        }
        other => panic!("{other:?}"),
    }
    // Highest bit, no name.
    h[72] = 0x80;
    h[79] = 0;
    assert!(std::format!("{}", Header::parse(&h).unwrap_err()).contains("bit 63"));
}

#[test]
fn header_extensions() {
    let mut h = v3_header(65536);
    let mut off = add_ext(&mut h, 112, 0xe279_2aca, b"raw");
    off = add_ext(&mut h, off, 0x1234_5678, b"unknown, skipped");
    off = add_ext(&mut h, off, 0x2385_2875, &[0; 24]);
    let _ = add_ext(&mut h, off, 0, &[]);
    // Backing file name after the extensions.
    put_u64(&mut h, 8, 1024);
    set_u32(&mut h, 16, 8);
    h[1024..1032].copy_from_slice(b"base.img");
    let hdr = Header::parse(&h).unwrap();
    assert_eq!(hdr.backing_format_name(&h), Some(&b"raw"[..]));
    assert_eq!(hdr.backing_file_name(&h), Some(&b"base.img"[..]));
    assert!(hdr.has_bitmaps);

    // Encryption header pointer extension.
    let mut e = v3_header(4096);
    add_ext(&mut e, 112, 0x0537_be77, &[0; 16]);
    assert_eq!(Header::parse(&e), Err(Error::EncryptionExtension));

    // Extension longer than the first cluster / the buffer.
    let mut e = v3_header(65536);
    add_ext(&mut e, 112, 0x1234_5678, &[]);
    set_u32(&mut e, 116, 70000);
    assert!(matches!(
        Header::parse(&e),
        Err(Error::ExtensionOutOfBounds {
            kind: 0x1234_5678,
            ..
        })
    ));
    assert_eq!(Header::parse(&e).unwrap_err().kind(), ErrorKind::Invalid);
    let mut e = v3_header(4096);
    add_ext(&mut e, 112, 0x1234_5678, &[]);
    set_u32(&mut e, 116, 5000);
    assert!(Header::parse(&e).is_err());
    // Extensions may not run into the backing file name.
    let mut e = v3_header(4096);
    add_ext(&mut e, 112, 0x1234_5678, &[1; 100]);
    put_u64(&mut e, 8, 160);
    set_u32(&mut e, 16, 4);
    assert!(matches!(
        Header::parse(&e),
        Err(Error::ExtensionOutOfBounds { .. })
    ));

    // Backing file name bounds.
    let mut b = v3_header(4096);
    put_u64(&mut b, 8, 512);
    set_u32(&mut b, 16, 1024);
    assert!(matches!(
        Header::parse(&b),
        Err(Error::BadBackingFile { .. })
    ));
    put_u64(&mut b, 8, 70000);
    set_u32(&mut b, 16, 10);
    assert!(matches!(
        Header::parse(&b),
        Err(Error::BadBackingFile { .. })
    ));
    put_u64(&mut b, 8, 4000);
    set_u32(&mut b, 16, 200);
    assert!(matches!(
        Header::parse(&b),
        Err(Error::Truncated {
            what: Structure::BackingFileName,
            ..
        })
    ));
}

#[test]
fn error_classes_and_messages() {
    assert_eq!(Error::BadMagic(0).kind(), ErrorKind::Invalid);
    assert_eq!(Error::Encrypted(2).kind(), ErrorKind::Unsupported);
    assert_eq!(Error::ExternalDataFile.kind(), ErrorKind::Unsupported);
    assert_eq!(Error::VirtualSizeTooLarge(0).kind(), ErrorKind::TooLarge);
    assert_eq!(Error::CorruptL2Entry { raw: 0 }.kind(), ErrorKind::Corrupt);
    assert_eq!(Error::Io(61).kind(), ErrorKind::Io(61));
    assert_eq!(Error::Io(-3).kind(), ErrorKind::Corrupt);
    assert_eq!(Error::ChainTooDeep.kind(), ErrorKind::ChainTooDeep);
    assert!(!Error::DecompressionFailed.describe().is_empty());
    let s = std::format!("{}", Error::BadClusterBits(22));
    assert_eq!(s, "invalid cluster size: cluster_bits 22");
}

// ---- read engine over an in-memory image ------------------------------------

/// In-memory layers; implements every engine trait.
struct Mem {
    files: Vec<Vec<u8>>,
    l1: Vec<Vec<u64>>,
    cluster: usize,
}

impl Storage for Mem {
    fn read_at(&self, layer: usize, buf: &mut [u8], offset: u64) -> Result<()> {
        let f = &self.files[layer];
        let start = offset as usize;
        let src = f.get(start..start + buf.len()).ok_or(Error::Io(5))?; // the caller's EIO
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl Tables for Mem {
    fn l1_entry(&mut self, layer: usize, index: u32) -> Result<u64> {
        Ok(self.l1[layer][index as usize])
    }
    fn with_l2_table<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        layer: usize,
        offset: u64,
        f: F,
    ) -> Result<R> {
        let start = offset as usize;
        Ok(f(&self.files[layer][start..start + self.cluster]))
    }
}

/// "Compression" that stores the cluster verbatim, to test the plumbing.
struct Identity;
impl Decompressor for Identity {
    fn decompress(&mut self, _: CompressionType, input: &[u8], output: &mut [u8]) -> Result<usize> {
        let n = input.len().min(output.len());
        output[..n].copy_from_slice(&input[..n]);
        Ok(n)
    }
}

struct MemClusters<'a>(&'a Mem);
impl CompressedClusters for MemClusters<'_> {
    fn with_cluster<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        request: &CompressedRead,
        f: F,
    ) -> Result<R> {
        let mut input = vec![0u8; max_compressed_len(request.cluster_size.trailing_zeros())];
        let mut out = vec![0u8; request.cluster_size];
        request.load(self.0, &mut Identity, &mut input, &mut out)?;
        Ok(f(&out))
    }
}

struct VecSink<'a> {
    mem: &'a Mem,
    out: Vec<u8>,
}
impl Sink for VecSink<'_> {
    fn fill_zero(&mut self, len: usize) -> Result<()> {
        self.out.resize(self.out.len() + len, 0);
        Ok(())
    }
    fn copy_from(&mut self, data: &[u8]) -> Result<()> {
        self.out.extend_from_slice(data);
        Ok(())
    }
    fn read_from_storage(&mut self, layer: usize, offset: u64, len: usize) -> Result<()> {
        let mut buf = vec![0u8; len];
        self.mem.read_at(layer, &mut buf, offset)?;
        self.out.extend_from_slice(&buf);
        Ok(())
    }
}

fn read(chain: &Chain, mem: &Mem, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut tables = Mem {
        files: mem.files.clone(),
        l1: mem.l1.clone(),
        cluster: mem.cluster,
    };
    let mut sink = VecSink {
        mem,
        out: Vec::new(),
    };
    chain.read(&mut tables, &mut MemClusters(mem), offset, len, &mut sink)?;
    assert_eq!(sink.out.len(), len);
    Ok(sink.out)
}

/// A 512-byte-cluster image of `size` bytes over a raw backing layer:
/// cluster 0 data (0x11), cluster 1 zero, cluster 2 unallocated, cluster 3
/// "compressed" (identity, 0x33, spilling over a host cluster boundary),
/// cluster 4 data pointing at `data4`.
fn mem_image(size: u64, data4: u64) -> (Mem, Header, Vec<u8>) {
    let cb = 9u32;
    let mut file = vec![0u8; 512 * 8];
    let mut h = v3_header(512);
    set_u32(&mut h, 20, cb);
    put_u64(&mut h, 24, size);
    set_u32(&mut h, 36, 1);
    put_u64(&mut h, 40, 512); // L1 at cluster 1
    put_u64(&mut h, 48, 0);
    set_u32(&mut h, 56, 0);
    file[..512].copy_from_slice(&h);
    put_u64(&mut file, 512, 1024 | (1 << 63)); // L1[0] -> L2 at cluster 2
    put_u64(&mut file, 1024, 1536 | (1 << 63));
    put_u64(&mut file, 1032, 1);
    put_u64(&mut file, 1040, 0);
    // Compressed data at 2048 + 300, 512 bytes: 2 sectors.
    let desc = CompressedDescriptor::encode(cb, 2048 + 300, 1).unwrap();
    put_u64(&mut file, 1048, desc | (1 << 62));
    put_u64(&mut file, 1056, data4);
    file[1536..2048].fill(0x11);
    file[2048 + 300..2048 + 812].fill(0x33);
    let header = Header::parse(&file[..512]).unwrap();
    let l1 = vec![vec![u64::from_be_bytes(file[512..520].try_into().unwrap())]];
    (
        Mem {
            files: vec![file],
            l1,
            cluster: 512,
        },
        header,
        h,
    )
}

#[test]
fn engine_reads_all_kinds_and_backing() {
    // Odd virtual size: 2600 bytes (not a multiple of 512).
    let (mut mem, header, _) = mem_image(2600, 1536);
    let top = Qcow2Layer::new(&header, mem.files[0].len() as u64).unwrap();
    let mut chain = Chain::new(Layer::Qcow2(top));
    let out = read(&chain, &mem, 0, 2600).unwrap();
    assert!(out[..512].iter().all(|&b| b == 0x11));
    assert!(out[512..1536].iter().all(|&b| b == 0));
    assert!(out[1536..2048].iter().all(|&b| b == 0x33));
    assert!(out[2048..2560].iter().all(|&b| b == 0x11));
    assert!(out[2560..].iter().all(|&b| b == 0));

    // Raw backing layer shorter than the top: unallocated cluster 2 reads
    // the base up to its end, then zeros.
    let base: Vec<u8> = (0..1300u32).map(|i| (i % 251) as u8).collect();
    mem.files.push(base.clone());
    mem.l1.push(Vec::new());
    chain.push_backing(Layer::Raw { len: 1300 }).unwrap();
    let out = read(&chain, &mem, 1000, 600).unwrap();
    assert!(out[..24].iter().all(|&b| b == 0));
    assert_eq!(&out[24..300], &base[1024..1300]);
    assert!(out[300..536].iter().all(|&b| b == 0));
    assert!(out[536..].iter().all(|&b| b == 0x33));

    // Unaligned small reads agree with the whole-disk read.
    let all = read(&chain, &mem, 0, 2600).unwrap();
    for off in (0..2600u64).step_by(37) {
        let len = (2600 - off as usize).min(777);
        assert_eq!(
            read(&chain, &mem, off, len).unwrap(),
            all[off as usize..][..len]
        );
    }

    // Out of range.
    assert!(matches!(
        read(&chain, &mem, 2000, 601),
        Err(Error::OutOfRange { .. })
    ));
    assert!(read(&chain, &mem, u64::MAX, 2).is_err());

    // Chain depth limit.
    for _ in 2..MAX_CHAIN_DEPTH {
        chain.push_backing(Layer::Raw { len: 0 }).unwrap();
    }
    assert_eq!(
        chain.push_backing(Layer::Raw { len: 0 }),
        Err(Error::ChainTooDeep)
    );
}

/// The compressed clusters `Chain::compressed_clusters` visits in a range.
fn compressed_in(chain: &Chain, mem: &Mem, offset: u64, len: usize) -> Result<Vec<CompressedRead>> {
    let mut tables = Mem {
        files: mem.files.clone(),
        l1: mem.l1.clone(),
        cluster: mem.cluster,
    };
    let mut seen = Vec::new();
    chain.compressed_clusters(&mut tables, offset, len, |r| {
        seen.push(*r);
        Ok(())
    })?;
    Ok(seen)
}

#[test]
fn engine_finds_the_compressed_clusters_of_a_range() {
    let (mut mem, header, _) = mem_image(2600, 1536);
    let top = Qcow2Layer::new(&header, mem.files[0].len() as u64).unwrap();
    let mut chain = Chain::new(Layer::Qcow2(top));
    // Cluster 3 only, with the descriptor a read decompresses.
    let want = CompressedRead {
        layer: 0,
        host_offset: 2048 + 300,
        len: 1024 - 300,
        compression: CompressionType::Deflate,
        cluster_size: 512,
    };
    assert_eq!(compressed_in(&chain, &mem, 0, 2600).unwrap(), [want]);
    assert_eq!(compressed_in(&chain, &mem, 1600, 10).unwrap(), [want]);
    assert!(compressed_in(&chain, &mem, 0, 1536).unwrap().is_empty());
    assert!(compressed_in(&chain, &mem, 2048, 552).unwrap().is_empty());
    // Through a backing layer: the unallocated cluster 2 descends into a
    // copy of the image, whose cluster 2 is unallocated too (then zeros).
    let (base, base_header, _) = mem_image(2600, 1536);
    mem.files.push(base.files[0].clone());
    mem.l1.push(base.l1[0].clone());
    let base_top = Qcow2Layer::new(&base_header, base.files[0].len() as u64).unwrap();
    chain.push_backing(Layer::Qcow2(base_top)).unwrap();
    assert_eq!(compressed_in(&chain, &mem, 1024, 1024).unwrap(), [want]);
    // The same errors as a read, and the visitor's own.
    assert!(matches!(
        compressed_in(&chain, &mem, 2000, 601),
        Err(Error::OutOfRange { .. })
    ));
    let mut tables = Mem {
        files: mem.files.clone(),
        l1: mem.l1.clone(),
        cluster: mem.cluster,
    };
    assert_eq!(
        chain.compressed_clusters(&mut tables, 0, 2600, |_| Err(Error::Io(12))),
        Err(Error::Io(12))
    );
}

#[test]
fn engine_rejects_pointers_past_eof() {
    // Data cluster beyond the end of the file.
    let (mem, header, _) = mem_image(2600, 512 * 100);
    let top = Qcow2Layer::new(&header, mem.files[0].len() as u64).unwrap();
    let chain = Chain::new(Layer::Qcow2(top));
    let e = read(&chain, &mem, 2048, 10).unwrap_err();
    assert!(matches!(
        e,
        Error::PastEndOfFile {
            what: Structure::DataCluster,
            ..
        }
    ));
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    // The rest of the disk still reads.
    assert!(read(&chain, &mem, 0, 2048).is_ok());

    // L2 table beyond the end of the file: error at read, not at open.
    let (mut mem, header, _) = mem_image(2600, 1536);
    mem.l1[0][0] = 512 * 64;
    let top = Qcow2Layer::new(&header, mem.files[0].len() as u64).unwrap();
    let chain = Chain::new(Layer::Qcow2(top));
    assert!(matches!(
        read(&chain, &mem, 0, 1),
        Err(Error::PastEndOfFile {
            what: Structure::L2Table,
            ..
        })
    ));
    // Corrupt L1 entry.
    mem.l1[0][0] = 1024 | 3;
    assert!(matches!(
        read(&chain, &mem, 0, 1),
        Err(Error::CorruptL1Entry { index: 0, .. })
    ));

    // The L1 table itself must be inside the file: checked at open.
    assert!(matches!(
        Qcow2Layer::new(&header, 515),
        Err(Error::Truncated {
            what: Structure::L1Table,
            ..
        })
    ));
}

#[test]
fn engine_short_decompression_is_an_error() {
    // A compressed cluster whose data is cut by the end of the file
    // decompresses (identity) to fewer bytes than a cluster.
    let (mut mem, header, _) = mem_image(2600, 1536);
    mem.files[0].truncate(2048 + 400);
    let top = Qcow2Layer::new(&header, mem.files[0].len() as u64).unwrap();
    let chain = Chain::new(Layer::Qcow2(top));
    assert_eq!(
        read(&chain, &mem, 1600, 10),
        Err(Error::DecompressedSizeMismatch {
            expected: 512,
            got: 100
        })
    );
}

#[test]
fn backing_names_as_qemu_reads_them() {
    // A backing format padded with NULs ends at the first one; an empty
    // one (or all NULs) means "probe".
    for (stored, want) in [
        (&b"qcow2\0\0\0"[..], Some(&b"qcow2"[..])),
        (b"raw", Some(b"raw")),
        (b"\0\0\0\0", None),
        (b"", None),
    ] {
        let mut h = v3_header(65536);
        add_ext(&mut h, 112, 0xe279_2aca, stored);
        let hdr = Header::parse(&h).unwrap();
        assert_eq!(hdr.backing_format_name(&h), want, "{stored:?}");
        let layout = HeaderLayout::parse(&h).unwrap();
        assert_eq!(layout.backing_format_name(&h), want, "{stored:?}");
    }
    // An empty backing file name is no backing file.
    let mut h = v3_header(65536);
    put_u64(&mut h, 8, 1024);
    set_u32(&mut h, 16, 0);
    let hdr = Header::parse(&h).unwrap();
    assert_eq!((hdr.backing_file, hdr.backing_file_name(&h)), (None, None));
}

#[test]
fn header_layout_is_the_first_part_of_parse() {
    let mut h = v3_header(65536);
    add_ext(&mut h, 112, 0xe279_2aca, b"qcow2");
    put_u64(&mut h, 8, 1024);
    set_u32(&mut h, 16, 4);
    h[1024..1028].copy_from_slice(b"base");
    let full = Header::parse(&h).unwrap();
    let layout = HeaderLayout::parse(&h).unwrap();
    assert_eq!(
        (layout.version, layout.cluster_bits, layout.header_length),
        (full.version, full.cluster_bits, full.header_length)
    );
    assert_eq!(layout.backing_file, full.backing_file);
    assert_eq!(layout.backing_file_name(&h), Some(&b"base"[..]));
    assert_eq!(layout.backing_format_name(&h), Some(&b"qcow2"[..]));
    assert!(!layout.has_external_data_file());
    // What the layout does not judge, Header::parse refuses: features,
    // encryption, sizes, tables.
    let judged: [(usize, u64); 4] = [(72, 1 << 10), (32, 1 << 32), (24, u64::MAX), (40, 0x30200)];
    for (at, value) in judged {
        let mut bad = h.clone();
        if at == 32 {
            set_u32(&mut bad, 32, 1);
        } else {
            put_u64(&mut bad, at, value);
        }
        assert!(Header::parse(&bad).is_err(), "field at {at}");
        let layout = HeaderLayout::parse(&bad).unwrap();
        assert_eq!(layout.backing_file_name(&bad), Some(&b"base"[..]));
    }
    let mut data_file = h.clone();
    data_file[79] = 1 << 2;
    assert!(HeaderLayout::parse(&data_file)
        .unwrap()
        .has_external_data_file());
    assert_eq!(Header::parse(&data_file), Err(Error::ExternalDataFile));
    // What the layout does check fails both alike.
    for (at, value) in [(4usize, 4u32), (20, 8), (100, 100)] {
        let mut bad = h.clone();
        set_u32(&mut bad, at, value);
        let e = HeaderLayout::parse(&bad).unwrap_err();
        assert_eq!(Header::parse(&bad), Err(e), "field at {at}");
    }
}

#[test]
fn layer_format_detection() {
    assert_eq!(
        LayerFormat::detect(Some(b"file"), b"QFI\xfb"),
        Ok(LayerFormat::Raw)
    );
    assert_eq!(
        LayerFormat::detect(Some(b"raw"), b"QFI\xfb"),
        Ok(LayerFormat::Raw)
    );
    assert_eq!(
        LayerFormat::detect(Some(b"qcow2"), b""),
        Ok(LayerFormat::Qcow2)
    );
    assert_eq!(
        LayerFormat::detect(Some(b"vmdk"), b""),
        Err(Error::UnsupportedBackingFormat)
    );
    assert_eq!(
        LayerFormat::detect(None, b"QFI\xfb...."),
        Ok(LayerFormat::Qcow2)
    );
    assert_eq!(LayerFormat::detect(None, b"QF"), Ok(LayerFormat::Raw));
}

#[test]
fn snapshot_entry_parse() {
    let mut e = vec![0u8; 80];
    put_u64(&mut e, 0, 0x50000);
    set_u32(&mut e, 8, 4);
    e[12..14].copy_from_slice(&1u16.to_be_bytes());
    e[14..16].copy_from_slice(&3u16.to_be_bytes());
    set_u32(&mut e, 32, 77);
    set_u32(&mut e, 36, 16);
    put_u64(&mut e, 40, 1 << 33);
    put_u64(&mut e, 48, 5 << 20);
    let s = Snapshot::parse(&e[..56], 1000, 2).unwrap();
    assert_eq!(s.l1_table_offset, 0x50000);
    assert_eq!(s.l1_size, 4);
    assert_eq!(s.vm_state_size, 1 << 33);
    assert_eq!(s.disk_size, Some(5 << 20));
    assert_eq!(s.id.offset, 1000 + 56);
    assert_eq!(s.name.offset, 1000 + 57);
    assert_eq!(s.entry_len, 64);
    // v2-style entry without extra data.
    set_u32(&mut e, 36, 0);
    let s = Snapshot::parse(&e[..40], 0, 0).unwrap();
    assert_eq!((s.vm_state_size, s.disk_size), (77, None));
    // Too much extra data.
    set_u32(&mut e, 36, 5000);
    assert!(Snapshot::parse(&e, 0, 0).is_err());
    // Truncated fixed part.
    assert!(Snapshot::parse(&e[..30], 0, 0).is_err());
}

// ---- refcounts and writes ---------------------------------------------------

#[test]
fn refcount_entries_of_every_width() {
    use crate::format::refcount::RefcountGeometry;
    for order in 0..=6u32 {
        let rg = RefcountGeometry::new(order, 9).unwrap();
        let bits = 1u32 << order;
        assert_eq!(rg.block_entries(), 512 * 8 / u64::from(bits));
        let max = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        assert_eq!(rg.max(), max);
        let mut block = vec![0u8; 512];
        let n = rg.block_entries() as usize;
        for i in 0..n {
            rg.set(&mut block, i, (i as u64 * 7 + 3) & max).unwrap();
        }
        for i in 0..n {
            assert_eq!(
                rg.get(&block, i).unwrap(),
                (i as u64 * 7 + 3) & max,
                "order {order} [{i}]"
            );
        }
        // The spec's layout: sub-byte counts from the least significant
        // bit, wider ones big-endian.
        let mut one = vec![0u8; 512];
        rg.set(&mut one, 1, 1).unwrap();
        match bits {
            1 => assert_eq!(one[0], 0b10),
            2 => assert_eq!(one[0], 0b100),
            4 => assert_eq!(one[0], 0x10),
            8 => assert_eq!(one[1], 1),
            b => assert_eq!(one[(b / 8 * 2 - 1) as usize], 1),
        }
        if bits < 64 {
            assert_eq!(rg.set(&mut block, 0, max + 1), Err(Error::RefcountOverflow));
        }
        assert!(rg.get(&block, n).is_err(), "order {order}: past the block");
        assert!(
            rg.set(&mut block, n, 0).is_err(),
            "order {order}: past the block"
        );
    }
    assert_eq!(
        RefcountGeometry::new(7, 16),
        Err(Error::BadRefcountOrder(7))
    );
    let rg = RefcountGeometry::new(4, 16).unwrap();
    assert_eq!(rg.locate(32768 * 3 + 5), (3, 5));
}

#[test]
fn grow_top_file_len_only_grows() {
    let raw = Layer::Raw { len: 10 };
    let mut chain = Chain::new(raw);
    chain.grow_top_file_len(100);
    assert_eq!(chain.top().file_len(), 10, "a raw top is left alone");
}

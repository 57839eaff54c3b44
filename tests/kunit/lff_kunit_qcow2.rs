// SPDX-License-Identifier: GPL-2.0

//! lff_kunit_qcow2: KUnit suites of the qcow2 format logic as the kernel
//! compiles it (`formats/qcow2/src/format`, included below exactly as the
//! qcow2 driver includes it): header validation on headers built in
//! buffers, L1/L2 entry decoding, compressed descriptors for every
//! `cluster_bits`, subcluster bitmaps, the read engine over an in-memory
//! image, and how the engine splits a request into per-cluster calls.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
#[path = "wrappers/kunit.rs"]
#[macro_use]
pub mod kunit;

#[path = "../../formats/qcow2/src/format/mod.rs"]
pub mod qcow2fmt;

mod qcow2_image;

/// The driver's mapping of the crate's error classes to kernel codes.
#[path = "../../drivers/block/loop_file_fmt/qcow2/errno.rs"]
mod errno;

use kernel::prelude::*;
use kunit::Test;
use qcow2_image::*;
use qcow2fmt::compressed::{max_compressed_len, COMPRESSED_SECTOR_SIZE};
use qcow2fmt::error::{ErrorKind, FeatureName};
use qcow2fmt::table::{decode_l1_entry, decode_l2_entry, map_entry, map_in_table};
use qcow2fmt::{
    Chain, CompressedDescriptor, CompressionType, Error, Geometry, Header, L2Entry, Layer, Mapping,
    MappingKind, Qcow2Layer, Structure, MAX_CHAIN_DEPTH,
};

module! {
    type: KunitQcow2,
    name: "lff_kunit_qcow2",
    description: "KUnit suites of the qcow2 format logic",
    license: "GPL",
}

struct KunitQcow2;

impl kernel::Module for KunitQcow2 {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Self)
    }
}

/// 64 KiB clusters.
const CB: u32 = 16;

// ---- header -----------------------------------------------------------------

/// Parses a valid v3 header after `f` changed it.
fn parse_modified(
    t: &Test,
    f: impl FnOnce(&mut [u8]),
) -> Option<core::result::Result<Header, Error>> {
    let mut h = v3_header(t, 4096)?;
    f(&mut h);
    Some(Header::parse(&h))
}

fn header_v3_valid(t: &Test) {
    let Some(h) = v3_header(t, 4096) else { return };
    let Some(hdr) = t.ok(Header::parse(&h)) else {
        return;
    };
    check_eq!(t, hdr.version, 3);
    check_eq!(t, hdr.cluster_size(), 65536);
    check_eq!(t, hdr.size, 1u64 << 30);
    check_eq!(t, hdr.l1_size, 2);
    check_eq!(t, hdr.l1_table_offset, 0x30000);
    check_eq!(t, hdr.header_length, 112);
    check_eq!(t, hdr.compression_type, CompressionType::Deflate);
    check!(
        t,
        !hdr.is_dirty() && !hdr.is_corrupt() && !hdr.extended_l2()
    );
    check_eq!(t, hdr.backing_file, None);
}

fn header_v2_valid(t: &Test) {
    let Some(mut h) = v3_header(t, 72) else {
        return;
    };
    set_u32(&mut h, 4, 2);
    let Some(hdr) = t.ok(Header::parse(&h)) else {
        return;
    };
    check_eq!(
        t,
        (hdr.version, hdr.refcount_order, hdr.header_length),
        (2, 4, 72)
    );
    check!(t, !hdr.geometry().extended_l2());
}

fn header_bad_magic_and_version(t: &Test) {
    check_eq!(
        t,
        parse_modified(t, |h| h[0] = b'X'),
        Some(Err(Error::BadMagic(0x5846_49fb)))
    );
    check_eq!(
        t,
        parse_modified(t, |h| set_u32(h, 4, 1)),
        Some(Err(Error::UnsupportedVersion(1)))
    );
    check_eq!(
        t,
        parse_modified(t, |h| set_u32(h, 4, 4)),
        Some(Err(Error::UnsupportedVersion(4)))
    );
    check_eq!(t, Error::BadMagic(0).kind(), ErrorKind::Invalid);
}

fn header_cluster_bits_limits(t: &Test) {
    check_eq!(
        t,
        parse_modified(t, |h| set_u32(h, 20, 8)),
        Some(Err(Error::BadClusterBits(8)))
    );
    check_eq!(
        t,
        parse_modified(t, |h| set_u32(h, 20, 22)),
        Some(Err(Error::BadClusterBits(22)))
    );
    // 2 MiB clusters are the largest allowed (tables aligned to them).
    let r = parse_modified(t, |h| {
        set_u32(h, 20, 21);
        put_u64(h, 40, 0x20_0000);
        put_u64(h, 48, 0x40_0000);
    });
    check_matches!(
        t,
        r,
        Some(Ok(Header {
            cluster_bits: 21,
            ..
        }))
    );
    // Extended L2 needs at least 16 KiB clusters.
    let r = parse_modified(t, |h| {
        set_u32(h, 20, 13);
        h[79] = 1 << 4;
    });
    check_eq!(t, r, Some(Err(Error::ExtendedL2ClusterTooSmall(13))));
}

fn header_length_checks(t: &Test) {
    check_eq!(
        t,
        parse_modified(t, |h| set_u32(h, 100, 96)),
        Some(Err(Error::BadHeaderLength(96)))
    );
    check_eq!(
        t,
        parse_modified(t, |h| set_u32(h, 100, 108)),
        Some(Err(Error::BadHeaderLength(108)))
    );
    let Some(h) = v3_header(t, 4096) else { return };
    check_matches!(
        t,
        Header::parse(h.get(..100).unwrap_or(&[])),
        Err(Error::Truncated { .. })
    );
    check_matches!(
        t,
        Header::parse(h.get(..60).unwrap_or(&[])),
        Err(Error::Truncated { .. })
    );
}

fn header_encryption_refused(t: &Test) {
    let r = parse_modified(t, |h| set_u32(h, 32, 1));
    check_eq!(t, r, Some(Err(Error::Encrypted(1))));
    check_eq!(t, Error::Encrypted(2).kind(), ErrorKind::Unsupported);
    let Some(mut h) = v3_header(t, 4096) else {
        return;
    };
    add_ext(&mut h, 112, 0x0537_be77, &[0; 16]);
    check_eq!(t, Header::parse(&h), Err(Error::EncryptionExtension));
    check_eq!(
        t,
        parse_modified(t, |h| h[79] = 1 << 2),
        Some(Err(Error::ExternalDataFile))
    );
}

fn header_size_and_table_limits(t: &Test) {
    check_eq!(
        t,
        parse_modified(t, |h| set_u32(h, 96, 7)),
        Some(Err(Error::BadRefcountOrder(7)))
    );
    let r = parse_modified(t, |h| put_u64(h, 24, u64::MAX));
    check_eq!(t, r, Some(Err(Error::VirtualSizeTooLarge(u64::MAX))));
    check_eq!(t, Error::VirtualSizeTooLarge(0).kind(), ErrorKind::TooLarge);
    let r = parse_modified(t, |h| put_u64(h, 24, 1 << 40));
    check_eq!(
        t,
        r,
        Some(Err(Error::L1TableTooSmall {
            entries: 2,
            needed: 2048
        }))
    );
    let r = parse_modified(t, |h| set_u32(h, 36, u32::MAX));
    let want = Error::TableTooLarge {
        what: Structure::L1Table,
        entries: u64::from(u32::MAX),
    };
    check_eq!(t, r, Some(Err(want)));
    let r = parse_modified(t, |h| put_u64(h, 40, 0x30200));
    let want = Error::MisalignedTable {
        what: Structure::L1Table,
        offset: 0x30200,
    };
    check_eq!(t, r, Some(Err(want)));
    let r = parse_modified(t, |h| put_u64(h, 48, 0x10008));
    let want = Error::MisalignedTable {
        what: Structure::RefcountTable,
        offset: 0x10008,
    };
    check_eq!(t, r, Some(Err(want)));
    check_eq!(
        t,
        parse_modified(t, |h| set_u32(h, 60, 70000)),
        Some(Err(Error::TooManySnapshots(70000)))
    );
}

fn header_compression_type(t: &Test) {
    let r = parse_modified(t, |h| {
        h[79] = (1 << 3) | 1 | 2;
        h[104] = 1;
    });
    let Some(Ok(hdr)) = r else {
        t.fail(format_args!("zstd header refused: {r:?}"));
        return;
    };
    check_eq!(t, hdr.compression_type, CompressionType::Zstd);
    check!(t, hdr.is_dirty() && hdr.is_corrupt());
    let want = Error::CompressionTypeMismatch {
        bit_set: true,
        compression_type: 0,
    };
    check_eq!(t, parse_modified(t, |h| h[79] = 1 << 3), Some(Err(want)));
    let want = Error::CompressionTypeMismatch {
        bit_set: false,
        compression_type: 1,
    };
    check_eq!(t, parse_modified(t, |h| h[104] = 1), Some(Err(want)));
    check_eq!(
        t,
        parse_modified(t, |h| h[104] = 2),
        Some(Err(Error::UnsupportedCompressionType(2)))
    );
    check_eq!(t, CompressionType::from_raw(1), Ok(CompressionType::Zstd));
    check_eq!(t, CompressionType::Zstd.name(), "zstd");
}

fn header_unknown_incompatible_bit_named(t: &Test) {
    let Some(mut h) = v3_header(t, 4096) else {
        return;
    };
    h[79] = 1 << 5;
    let e = Header::parse(&h);
    check_eq!(
        t,
        e,
        Err(Error::UnknownIncompatibleFeature {
            bit: 5,
            name: FeatureName::EMPTY
        })
    );
    let mut table = [0u8; 96];
    table[1] = 4;
    table[2..13].copy_from_slice(b"extended l2");
    table[49] = 5;
    table[50..60].copy_from_slice(b"time warp!");
    add_ext(&mut h, 112, 0x6803_f857, &table);
    match Header::parse(&h) {
        Err(e @ Error::UnknownIncompatibleFeature { bit: 5, name }) => {
            check_eq!(t, name.as_bytes(), &b"time warp!"[..]);
            check_eq!(t, e.kind(), ErrorKind::Unsupported);
        }
        other => t.fail(format_args!("want bit 5 'time warp!', got {other:?}")),
    }
}

fn header_extensions_and_backing_file(t: &Test) {
    let Some(mut h) = v3_header(t, 65536) else {
        return;
    };
    let mut off = add_ext(&mut h, 112, 0xe279_2aca, b"raw");
    off = add_ext(&mut h, off, 0x1234_5678, b"unknown, skipped");
    off = add_ext(&mut h, off, 0x2385_2875, &[0; 24]);
    add_ext(&mut h, off, 0, &[]);
    put_u64(&mut h, 8, 1024);
    set_u32(&mut h, 16, 8);
    h[1024..1032].copy_from_slice(b"base.img");
    let Some(hdr) = t.ok(Header::parse(&h)) else {
        return;
    };
    check_eq!(t, hdr.backing_format_name(&h), Some(&b"raw"[..]));
    check_eq!(t, hdr.backing_file_name(&h), Some(&b"base.img"[..]));
    check!(t, hdr.has_bitmaps);
    // An extension running past the first cluster.
    let Some(mut e) = v3_header(t, 65536) else {
        return;
    };
    add_ext(&mut e, 112, 0x1234_5678, &[]);
    set_u32(&mut e, 116, 70000);
    let r = Header::parse(&e);
    check_matches!(
        t,
        r,
        Err(Error::ExtensionOutOfBounds {
            kind: 0x1234_5678,
            ..
        })
    );
    check_eq!(
        t,
        r.map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::Invalid)
    );
}

fn header_backing_file_bounds(t: &Test) {
    let r = parse_modified(t, |h| {
        put_u64(h, 8, 512);
        set_u32(h, 16, 1024);
    });
    check_matches!(
        t,
        r,
        Some(Err(Error::BadBackingFile {
            offset: 512,
            len: 1024
        }))
    );
    let r = parse_modified(t, |h| {
        put_u64(h, 8, 70000);
        set_u32(h, 16, 10);
    });
    check_matches!(t, r, Some(Err(Error::BadBackingFile { .. })));
    let r = parse_modified(t, |h| {
        put_u64(h, 8, 4000);
        set_u32(h, 16, 200);
    });
    check_matches!(
        t,
        r,
        Some(Err(Error::Truncated {
            what: Structure::BackingFileName,
            ..
        }))
    );
}

/// The classes become this architecture's errno values, from the bindings.
fn errors_map_to_kernel_codes(t: &Test) {
    use kernel::bindings;
    let code = |e: Error| errno::kernel_error(&e).to_errno();
    let want = |n: u32| -(n as i32);
    check_eq!(t, code(Error::BadMagic(0)), want(bindings::EINVAL));
    check_eq!(t, code(Error::Encrypted(2)), want(bindings::EOPNOTSUPP));
    check_eq!(
        t,
        code(Error::VirtualSizeTooLarge(0)),
        want(bindings::EFBIG)
    );
    check_eq!(t, code(Error::ChainTooDeep), want(bindings::ELOOP));
    check_eq!(t, code(Error::SnapshotNotFound), want(bindings::ENOENT));
    check_eq!(
        t,
        code(Error::CorruptL2Entry { raw: 0 }),
        want(bindings::EIO)
    );
    let nomem = bindings::ENOMEM as i32;
    check_eq!(t, code(Error::Io(nomem)), want(bindings::ENOMEM));
    check_eq!(t, code(Error::Io(0)), want(bindings::EIO));
}

kunit_suite!(
    lff_qcow2_header,
    [
        errors_map_to_kernel_codes,
        header_v3_valid,
        header_v2_valid,
        header_bad_magic_and_version,
        header_cluster_bits_limits,
        header_length_checks,
        header_encryption_refused,
        header_size_and_table_limits,
        header_compression_type,
        header_unknown_incompatible_bit_named,
        header_extensions_and_backing_file,
        header_backing_file_bounds,
    ]
);

// ---- L1 / L2 entries ----------------------------------------------------------

fn geo(t: &Test, cluster_bits: u32, extended: bool) -> Option<Geometry> {
    t.ok(Geometry::new(cluster_bits, extended))
}

fn geometry_per_cluster_bits(t: &Test) {
    for cb in 9..=21u32 {
        let Some(g) = geo(t, cb, false) else { return };
        check_eq!(t, g.cluster_size(), 1u64 << cb);
        check_eq!(t, g.l2_entries(), 1usize << (cb - 3));
        check_eq!(t, g.l1_span_bits(), cb + cb - 3);
    }
    let Some(g) = geo(t, CB, true) else { return };
    check_eq!(
        t,
        (g.l2_entry_size(), g.l2_entries(), g.subcluster_bits()),
        (16, 4096, 11)
    );
    check_eq!(t, g.l1_index(5 << 28), 5);
    check_eq!(t, g.l2_index((5 << 28) + (7 << 16) + 3), 7);
    check_eq!(
        t,
        Geometry::new(13, true),
        Err(Error::ExtendedL2ClusterTooSmall(13))
    );
}

fn l1_entry_decoding(t: &Test) {
    let Some(g) = geo(t, CB, false) else { return };
    check_eq!(t, decode_l1_entry(&g, 0, 0), Ok(None));
    check_eq!(t, decode_l1_entry(&g, 0, 1 << 63), Ok(None));
    check_eq!(
        t,
        decode_l1_entry(&g, 3, (1 << 63) | 0x30000),
        Ok(Some(0x30000))
    );
    for bad in [
        0x30001u64,
        0x30000 | (1 << 56),
        0x30000 | (1 << 62),
        0x30200,
    ] {
        check_eq!(
            t,
            decode_l1_entry(&g, 7, bad),
            Err(Error::CorruptL1Entry { index: 7, raw: bad })
        );
    }
}

fn l2_standard_entries(t: &Test) {
    let Some(g) = geo(t, CB, false) else { return };
    check_eq!(t, decode_l2_entry(&g, 0, 0), Ok(L2Entry::Unallocated));
    check_eq!(t, decode_l2_entry(&g, 1, 0), Ok(L2Entry::Zero));
    check_eq!(t, decode_l2_entry(&g, 0x50000 | 1, 0), Ok(L2Entry::Zero));
    check_eq!(
        t,
        decode_l2_entry(&g, (1 << 63) | 0x50000, 0),
        Ok(L2Entry::Data {
            host_offset: 0x50000
        })
    );
    check_matches!(
        t,
        decode_l2_entry(&g, (1 << 62) | 0x1234, 0),
        Ok(L2Entry::Compressed(_))
    );
}

fn l2_reserved_bits_are_corrupt(t: &Test) {
    let Some(g) = geo(t, CB, false) else { return };
    for bad in [
        0x50002u64,
        0x50000 | (1 << 8),
        0x50000 | (1 << 56),
        0x50000 | (1 << 61),
        0x50200,
    ] {
        check_eq!(
            t,
            decode_l2_entry(&g, bad, 0),
            Err(Error::CorruptL2Entry { raw: bad })
        );
    }
    check_eq!(
        t,
        Error::CorruptL2Entry { raw: 0 }.kind(),
        ErrorKind::Corrupt
    );
}

fn l2_v2_has_no_zero_flag(t: &Test) {
    let Some(v2) = t.ok(Geometry::for_version(2, CB, false)) else {
        return;
    };
    check_eq!(
        t,
        decode_l2_entry(&v2, 0x50001, 0),
        Err(Error::CorruptL2Entry { raw: 0x50001 })
    );
    check_eq!(
        t,
        decode_l2_entry(&v2, 0x50000, 0),
        Ok(L2Entry::Data {
            host_offset: 0x50000
        })
    );
}

fn map_in_table_merges_runs(t: &Test) {
    let Some(g) = geo(t, 9, false) else { return };
    let Some(mut tb) = zeroed(t, 512) else { return };
    for i in 0..3u64 {
        put_u64(&mut tb, i as usize * 8, (1 << 63) | (0x10000 + 512 * i));
    }
    put_u64(&mut tb, 24, 0x40000);
    put_u64(&mut tb, 32, 1);
    put_u64(&mut tb, 40, 0x20000 | 1);
    put_u64(&mut tb, 48, (1 << 62) | 0x999);
    put_u64(&mut tb, 40 * 8, 0x3);
    let m = |off: u64, max: u64| map_in_table(&g, &tb, off, max);
    let data = |h: u64, len: u64| {
        Ok(Mapping {
            kind: MappingKind::Data { host_offset: h },
            len,
        })
    };
    check_eq!(t, m(10, u64::MAX), data(0x10000 + 10, 3 * 512 - 10));
    check_eq!(t, m(10, 700), data(0x10000 + 10, 700));
    check_eq!(t, m(3 * 512, u64::MAX), data(0x40000, 512));
    check_eq!(
        t,
        m(4 * 512 + 1, u64::MAX),
        Ok(Mapping {
            kind: MappingKind::Zero,
            len: 1023
        })
    );
    check_matches!(
        t,
        m(6 * 512 + 7, u64::MAX),
        Ok(Mapping {
            kind: MappingKind::Compressed { .. },
            len: 505
        })
    );
    // The unallocated run stops before the corrupt entry 40, which fails
    // when it is mapped itself.
    check_eq!(
        t,
        m(7 * 512, u64::MAX),
        Ok(Mapping {
            kind: MappingKind::Unallocated,
            len: 33 * 512
        })
    );
    check_matches!(t, m(40 * 512, 1), Err(Error::CorruptL2Entry { raw: 3 }));
    check_eq!(t, m(41 * 512, u64::MAX).map(|m| m.len), Ok(23 * 512));
    check_matches!(
        t,
        map_in_table(&g, tb.get(..256).unwrap_or(&[]), 0, 1),
        Err(Error::BufferSize { .. })
    );
}

kunit_suite!(
    lff_qcow2_entries,
    [
        geometry_per_cluster_bits,
        l1_entry_decoding,
        l2_standard_entries,
        l2_reserved_bits_are_corrupt,
        l2_v2_has_no_zero_flag,
        map_in_table_merges_runs,
    ]
);

// ---- compressed descriptors ---------------------------------------------------

fn descriptor_layout_every_cluster_bits(t: &Test) {
    for cb in 9..=21u32 {
        let x = 62 - (cb - 8);
        let max_sectors = (1u64 << (cb - 8)) - 1;
        let host = 0x1234_5677u64 & ((1u64 << x.min(56)) - 1);
        let raw = host | (max_sectors << x) | (1 << 62) | (1 << 63);
        let Some(d) = t.ok(CompressedDescriptor::decode(cb, raw)) else {
            return;
        };
        check_eq!(
            t,
            (cb, d.host_offset(), d.additional_sectors()),
            (cb, host, max_sectors)
        );
        check_eq!(
            t,
            (cb, d.max_len()),
            (cb, (max_sectors + 1) * 512 - host % 512)
        );
        check!(
            t,
            d.max_len() <= max_compressed_len(cb) as u64,
            "cb {cb}: max_len beyond two clusters"
        );
        check_eq!(
            t,
            CompressedDescriptor::encode(cb, host, max_sectors),
            Some(raw & ((1 << 62) - 1))
        );
        check_eq!(
            t,
            CompressedDescriptor::encode(cb, host, max_sectors + 1),
            None
        );
    }
}

fn descriptor_fields_64k_and_4k(t: &Test) {
    // 64 KiB clusters: x = 54.
    let d = CompressedDescriptor::decode(16, (1u64 << 62) | (3u64 << 54) | 0x12345);
    let Some(d) = t.ok(d) else { return };
    check_eq!(t, (d.host_offset(), d.additional_sectors()), (0x12345, 3));
    check_eq!(t, d.max_len(), 4 * COMPRESSED_SECTOR_SIZE - 0x145);
    // 4 KiB clusters: x = 58, 4 sector bits.
    let d = CompressedDescriptor::decode(12, (1u64 << 62) | (15u64 << 58) | 0x200);
    check_eq!(
        t,
        d.map(|d| (d.host_offset(), d.additional_sectors(), d.max_len())),
        Ok((0x200, 15, 8192))
    );
}

fn descriptor_rejects_high_offset_bits(t: &Test) {
    let raw = (1u64 << 62) | (1u64 << 57);
    check_eq!(
        t,
        CompressedDescriptor::decode(9, raw),
        Err(Error::CorruptCompressedDescriptor(raw))
    );
    // The same bit counts sectors with 64 KiB clusters.
    check_eq!(
        t,
        CompressedDescriptor::decode(16, raw).map(|d| d.additional_sectors()),
        Ok(8)
    );
    check_eq!(
        t,
        CompressedDescriptor::decode(8, 0),
        Err(Error::BadClusterBits(8))
    );
    check_eq!(
        t,
        CompressedDescriptor::decode(22, 0),
        Err(Error::BadClusterBits(22))
    );
}

fn descriptor_read_range_clamps_to_file(t: &Test) {
    let raw = CompressedDescriptor::encode(16, 10_000, 2).unwrap_or(0);
    let Some(d) = t.ok(CompressedDescriptor::decode(16, raw)) else {
        return;
    };
    // Three sectors from 10000 (10000 % 512 = 272): 1264 bytes.
    check_eq!(t, d.read_range(1 << 20), Ok((10_000, 1264)));
    check_eq!(t, d.read_range(10_500), Ok((10_000, 500)));
    let e = d.read_range(10_000);
    check_matches!(
        t,
        e,
        Err(Error::PastEndOfFile {
            what: Structure::CompressedCluster,
            ..
        })
    );
    check_eq!(t, e.map_err(|e| e.kind()), Err(ErrorKind::Corrupt));
}

fn max_compressed_len_is_two_clusters(t: &Test) {
    check_eq!(t, max_compressed_len(9), 1024);
    check_eq!(t, max_compressed_len(16), 128 << 10);
    check_eq!(t, max_compressed_len(21), 4 << 20);
    // Out of range values are clamped.
    check_eq!(t, max_compressed_len(30), 4 << 20);
}

kunit_suite!(
    lff_qcow2_compressed,
    [
        descriptor_layout_every_cluster_bits,
        descriptor_fields_64k_and_4k,
        descriptor_rejects_high_offset_bits,
        descriptor_read_range_clamps_to_file,
        max_compressed_len_is_two_clusters,
    ]
);

// ---- subcluster bitmaps ---------------------------------------------------------

fn subcluster_runs(t: &Test) {
    // 64 KiB clusters: 2 KiB subclusters. Subclusters 4..8 allocated,
    // 12..15 zero, 20 allocated, the rest unallocated.
    let Some(g) = geo(t, CB, true) else { return };
    let host = 0x7_0000u64;
    let alloc: u64 = 0b1111_0000 | (1 << 20);
    let zero: u64 = 0b111 << 12;
    let bm = alloc | (zero << 32);
    let base = 5 * 65536u64;
    let m = |off: u64, max: u64| map_entry(&g, host, bm, base + off, max);
    let run = |kind, len| Ok(Mapping { kind, len });
    check_eq!(t, m(0, u64::MAX), run(MappingKind::Unallocated, 8192));
    check_eq!(
        t,
        m(8192 + 100, u64::MAX),
        run(
            MappingKind::Data {
                host_offset: host + 8192 + 100
            },
            8192 - 100
        )
    );
    check_eq!(t, m(16384, u64::MAX), run(MappingKind::Unallocated, 8192));
    check_eq!(t, m(24576 + 1, u64::MAX), run(MappingKind::Zero, 6144 - 1));
    check_eq!(
        t,
        m(20 * 2048 + 5, 10),
        run(
            MappingKind::Data {
                host_offset: host + 20 * 2048 + 5
            },
            10
        )
    );
    check_eq!(
        t,
        m(21 * 2048, u64::MAX),
        run(MappingKind::Unallocated, 11 * 2048)
    );
}

fn subcluster_full_and_zero_only(t: &Test) {
    let Some(g) = geo(t, CB, true) else { return };
    let base = 5 * 65536u64;
    let full = map_entry(&g, 0x7_0000, 0xffff_ffff, base + 3, u64::MAX);
    check_eq!(
        t,
        full,
        Ok(Mapping {
            kind: MappingKind::Data {
                host_offset: 0x7_0003
            },
            len: 65533
        })
    );
    // Zero-only without a host cluster is valid; bit 0 is ignored.
    let d = decode_l2_entry(&g, 0, 0xffff_ffff << 32);
    check_eq!(
        t,
        d,
        Ok(L2Entry::Subclusters {
            host_offset: None,
            alloc: 0,
            zero: 0xffff_ffff
        })
    );
    check_eq!(
        t,
        decode_l2_entry(&g, 1, 0),
        Ok(L2Entry::Subclusters {
            host_offset: None,
            alloc: 0,
            zero: 0
        })
    );
    // 2 MiB clusters: 64 KiB subclusters.
    let Some(g21) = geo(t, 21, true) else { return };
    let m = map_entry(&g21, 0x20_0000, 0b10, (1 << 21) + 65536 + 7, u64::MAX);
    check_eq!(
        t,
        m,
        Ok(Mapping {
            kind: MappingKind::Data {
                host_offset: 0x20_0000 + 65536 + 7
            },
            len: 65536 - 7
        })
    );
}

fn subcluster_invalid_bitmaps(t: &Test) {
    let Some(g) = geo(t, CB, true) else { return };
    let bm = (1u64 << 35) | (1 << 3);
    check_eq!(
        t,
        decode_l2_entry(&g, 0x10000, bm),
        Err(Error::InvalidSubclusterBitmap {
            raw: 0x10000,
            bitmap: bm
        })
    );
    check_eq!(
        t,
        decode_l2_entry(&g, 0, 1),
        Err(Error::InvalidSubclusterBitmap { raw: 0, bitmap: 1 })
    );
    // Compressed entries have no bitmap: it is ignored.
    check_matches!(
        t,
        decode_l2_entry(&g, (1 << 62) | 0x1234, 0xdead),
        Ok(L2Entry::Compressed(_))
    );
}

kunit_suite!(
    lff_qcow2_subclusters,
    [
        subcluster_runs,
        subcluster_full_and_zero_only,
        subcluster_invalid_bitmaps
    ]
);

// ---- read engine ------------------------------------------------------------------

fn engine_reads_every_kind(t: &Test) {
    let Some(img) = MemImage::new(t, 2600, 1536) else {
        return;
    };
    let Some(chain) = img.top_chain(t) else {
        return;
    };
    let Some(out) = img.read(t, &chain, 0, 2600) else {
        return;
    };
    check!(t, all(&out, 0..512, 0x11), "cluster 0 is data 0x11");
    check!(
        t,
        all(&out, 512..1536, 0),
        "clusters 1 (zero) and 2 (unallocated) read zeros"
    );
    check!(
        t,
        all(&out, 1536..2048, 0x33),
        "cluster 3 is the compressed 0x33"
    );
    check!(t, all(&out, 2048..2560, 0x11), "cluster 4 is data 0x11");
    check!(t, all(&out, 2560..2600, 0), "the tail reads zeros");
}

fn engine_raw_backing_layer(t: &Test) {
    let Some(mut img) = MemImage::new(t, 2600, 1536) else {
        return;
    };
    let Some(base) = pattern(t, 1300) else { return };
    img.base = Some(base);
    let Some(mut chain) = img.top_chain(t) else {
        return;
    };
    if t.ok(chain.push_backing(Layer::Raw { len: 1300 })).is_none() {
        return;
    }
    let Some(out) = img.read(t, &chain, 1000, 600) else {
        return;
    };
    // Cluster 2 (1024..1536) is unallocated: the base up to its end
    // (1300), then zeros.
    check!(
        t,
        all(&out, 0..24, 0),
        "zero cluster before the backing range"
    );
    check_eq!(
        t,
        out.get(24..300),
        img.base.as_ref().and_then(|b| b.get(1024..1300))
    );
    check!(t, all(&out, 300..536, 0), "past the end of the base");
    check!(t, all(&out, 536..600, 0x33), "compressed cluster after it");
}

fn engine_unaligned_reads_agree(t: &Test) {
    let Some(mut img) = MemImage::new(t, 2600, 1536) else {
        return;
    };
    img.base = pattern(t, 1300);
    let Some(mut chain) = img.top_chain(t) else {
        return;
    };
    if t.ok(chain.push_backing(Layer::Raw { len: 1300 })).is_none() {
        return;
    }
    let Some(whole) = img.read(t, &chain, 0, 2600) else {
        return;
    };
    let mut off = 0usize;
    while off < 2600 {
        let len = (2600 - off).min(777);
        let Some(part) = img.read(t, &chain, off as u64, len) else {
            return;
        };
        if !check_eq!(t, Some(&part[..]), whole.get(off..off + len)) {
            return;
        }
        off += 37;
    }
}

fn engine_out_of_range(t: &Test) {
    let Some(img) = MemImage::new(t, 2600, 1536) else {
        return;
    };
    let Some(chain) = img.top_chain(t) else {
        return;
    };
    check_matches!(
        t,
        img.try_read(&chain, 2000, 601),
        Err(Error::OutOfRange {
            offset: 2000,
            len: 601,
            size: 2600
        })
    );
    check_matches!(
        t,
        img.try_read(&chain, u64::MAX, 2),
        Err(Error::OutOfRange { .. })
    );
    check!(t, img.try_read(&chain, 2599, 1).is_ok());
}

fn engine_pointers_past_eof(t: &Test) {
    // Data cluster 4 beyond the end of the file fails its own reads only.
    let Some(img) = MemImage::new(t, 2600, 512 * 100) else {
        return;
    };
    let Some(chain) = img.top_chain(t) else {
        return;
    };
    let e = img.try_read(&chain, 2048, 10);
    check_matches!(
        t,
        e,
        Err(Error::PastEndOfFile {
            what: Structure::DataCluster,
            ..
        })
    );
    check_eq!(t, e.map_err(|e| e.kind()), Err(ErrorKind::Corrupt));
    check!(
        t,
        img.try_read(&chain, 0, 2048).is_ok(),
        "the rest of the disk reads"
    );
    // L2 table beyond the end of the file; corrupt L1 entry.
    let Some(mut img) = MemImage::new(t, 2600, 1536) else {
        return;
    };
    let Some(chain) = img.top_chain(t) else {
        return;
    };
    img.l1 = 512 * 64;
    check_matches!(
        t,
        img.try_read(&chain, 0, 1),
        Err(Error::PastEndOfFile {
            what: Structure::L2Table,
            ..
        })
    );
    img.l1 = 1024 | 3;
    check_matches!(
        t,
        img.try_read(&chain, 0, 1),
        Err(Error::CorruptL1Entry { index: 0, .. })
    );
}

fn engine_l1_table_must_be_in_file(t: &Test) {
    let Some(img) = MemImage::new(t, 2600, 1536) else {
        return;
    };
    check_matches!(
        t,
        Qcow2Layer::new(&img.header, 515),
        Err(Error::Truncated {
            what: Structure::L1Table,
            ..
        })
    );
    check_matches!(t, Qcow2Layer::new(&img.header, 520), Ok(_));
}

fn engine_short_decompression_fails(t: &Test) {
    // The compressed data is cut by the end of the file: the identity
    // "decompressor" yields fewer bytes than a cluster.
    let Some(mut img) = MemImage::new(t, 2600, 1536) else {
        return;
    };
    img.file_len = 2048 + 400;
    let Some(chain) = img.top_chain(t) else {
        return;
    };
    check_eq!(
        t,
        img.try_read(&chain, 1600, 10).map(|_| ()),
        Err(Error::DecompressedSizeMismatch {
            expected: 512,
            got: 100
        })
    );
}

fn engine_chain_depth_limit(t: &Test) {
    let Some(img) = MemImage::new(t, 2600, 1536) else {
        return;
    };
    let Some(mut chain) = img.top_chain(t) else {
        return;
    };
    for _ in 1..MAX_CHAIN_DEPTH {
        if t.ok(chain.push_backing(Layer::Raw { len: 0 })).is_none() {
            return;
        }
    }
    check_eq!(t, chain.len(), MAX_CHAIN_DEPTH);
    check_eq!(
        t,
        chain.push_backing(Layer::Raw { len: 0 }),
        Err(Error::ChainTooDeep)
    );
    check_eq!(t, Error::ChainTooDeep.kind(), ErrorKind::ChainTooDeep);
}

kunit_suite!(
    lff_qcow2_engine,
    [
        engine_reads_every_kind,
        engine_raw_backing_layer,
        engine_unaligned_reads_agree,
        engine_out_of_range,
        engine_pointers_past_eof,
        engine_l1_table_must_be_in_file,
        engine_short_decompression_fails,
        engine_chain_depth_limit,
    ]
);

// ---- request splitting ---------------------------------------------------------------

/// Reads and returns the calls the sink saw.
fn calls_of(t: &Test, img: &MemImage, chain: &Chain, off: u64, len: usize) -> Option<Calls> {
    let mut sink = RecordingSink::new(t, img)?;
    t.ok(img.read_into(chain, off, len, &mut sink))?;
    check_eq!(t, sink.out.len(), len);
    Some(sink.calls)
}

fn split_at_every_kind_change(t: &Test) {
    let Some(img) = MemImage::new(t, 2600, 1536) else {
        return;
    };
    let Some(chain) = img.top_chain(t) else {
        return;
    };
    // Clusters: data, zero, unallocated (no backing: zeros), compressed,
    // data, zero tail.
    let Some(c) = calls_of(t, &img, &chain, 0, 2600) else {
        return;
    };
    let want = [
        Call::Storage {
            layer: 0,
            offset: 1536,
            len: 512,
        },
        Call::Zero(512),
        Call::Zero(512),
        Call::Copy(512),
        Call::Storage {
            layer: 0,
            offset: 1536,
            len: 512,
        },
        Call::Zero(40),
    ];
    check_eq!(t, c.as_slice(), &want[..]);
}

fn split_unaligned_edges(t: &Test) {
    let Some(img) = MemImage::new(t, 2600, 1536) else {
        return;
    };
    let Some(chain) = img.top_chain(t) else {
        return;
    };
    // From the middle of cluster 0 to the middle of cluster 3.
    let Some(c) = calls_of(t, &img, &chain, 500, 1200) else {
        return;
    };
    let want = [
        Call::Storage {
            layer: 0,
            offset: 1536 + 500,
            len: 12,
        },
        Call::Zero(512),
        Call::Zero(512),
        Call::Copy(164),
    ];
    check_eq!(t, c.as_slice(), &want[..]);
    // Inside one cluster: one call.
    let Some(c) = calls_of(t, &img, &chain, 2048 + 5, 100) else {
        return;
    };
    check_eq!(
        t,
        c.as_slice(),
        &[Call::Storage {
            layer: 0,
            offset: 1536 + 5,
            len: 100
        }][..]
    );
}

fn split_contiguous_clusters_merge(t: &Test) {
    // Cluster 4 right after cluster 0 on the host would not merge (they
    // are not adjacent in the guest); make clusters 0..2 contiguous data.
    let Some(mut img) = MemImage::new(t, 2600, 1536) else {
        return;
    };
    img.set_l2(1, (1 << 63) | 2048);
    img.set_l2(2, (1 << 63) | 2560);
    let Some(chain) = img.top_chain(t) else {
        return;
    };
    let Some(c) = calls_of(t, &img, &chain, 100, 1400) else {
        return;
    };
    check_eq!(
        t,
        c.as_slice(),
        &[Call::Storage {
            layer: 0,
            offset: 1636,
            len: 1400
        }][..]
    );
    // A gap on the host splits the run.
    img.set_l2(2, (1 << 63) | 1536);
    let Some(c) = calls_of(t, &img, &chain, 100, 1400) else {
        return;
    };
    let want = [
        Call::Storage {
            layer: 0,
            offset: 1636,
            len: 924,
        },
        Call::Storage {
            layer: 0,
            offset: 1536,
            len: 476,
        },
    ];
    check_eq!(t, c.as_slice(), &want[..]);
}

fn split_compressed_per_cluster(t: &Test) {
    // Clusters 3 and 4 both compressed (the same data): two copies, one
    // per cluster, never merged.
    let Some(mut img) = MemImage::new(t, 2600, 1536) else {
        return;
    };
    let d = CompressedDescriptor::encode(9, 2048 + 300, 1).unwrap_or(0);
    img.set_l2(4, d | (1 << 62));
    let Some(chain) = img.top_chain(t) else {
        return;
    };
    let Some(c) = calls_of(t, &img, &chain, 1536 + 12, 1000) else {
        return;
    };
    check_eq!(t, c.as_slice(), &[Call::Copy(500), Call::Copy(500)][..]);
}

fn split_backing_descent(t: &Test) {
    let Some(mut img) = MemImage::new(t, 2600, 1536) else {
        return;
    };
    img.base = pattern(t, 1300);
    let Some(mut chain) = img.top_chain(t) else {
        return;
    };
    if t.ok(chain.push_backing(Layer::Raw { len: 1300 })).is_none() {
        return;
    }
    // Cluster 2 descends to the base (layer 1), which ends at 1300.
    let Some(c) = calls_of(t, &img, &chain, 1000, 600) else {
        return;
    };
    let want = [
        Call::Zero(24),
        Call::Storage {
            layer: 1,
            offset: 1024,
            len: 276,
        },
        Call::Zero(236),
        Call::Copy(64),
    ];
    check_eq!(t, c.as_slice(), &want[..]);
}

kunit_suite!(
    lff_qcow2_split,
    [
        split_at_every_kind_change,
        split_unaligned_edges,
        split_contiguous_clusters_merge,
        split_compressed_per_cluster,
        split_backing_descent,
    ]
);

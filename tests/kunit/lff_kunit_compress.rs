// SPDX-License-Identifier: GPL-2.0

//! lff_kunit_compress: KUnit suite of decompression as the qcow2 driver
//! needs it: the kernel's zlib (raw deflate, qcow2 compression type 0) and
//! zstd (type 1) against known vectors made by userspace tools, with
//! trailing bytes, truncated and corrupt input, through the format
//! crate's `Decompressor` contract, plus a round trip through the kernel's
//! own `zlib_deflate`.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
#[path = "wrappers/kunit.rs"]
#[macro_use]
pub mod kunit;

#[path = "../../formats/qcow2/src/format/mod.rs"]
pub mod qcow2fmt;

#[allow(unsafe_code)]
#[path = "wrappers/decompress.rs"]
pub mod decompress;

use kernel::alloc::KVVec;
use kernel::prelude::*;
use kunit::Test;
use qcow2fmt::compressed::max_compressed_len;
use qcow2fmt::{decompress_cluster, CompressionType, Decompressor, Error};

module! {
    type: KunitCompress,
    name: "lff_kunit_compress",
    author: "loop-file-fmt developers",
    description: "KUnit suite of zlib/zstd decompression for qcow2",
    license: "GPL",
}

struct KunitCompress;

impl kernel::Module for KunitCompress {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Self)
    }
}

/// The decompressor under test. Switch to the qcow2 driver's own wrapper
/// once it exists: only this line and `under()` change.
type Under = decompress::KernelDecompressor;

fn under(t: &Test) -> Option<Under> {
    t.ok(Under::new())
}

/// The 4 KiB cluster of `vectors/` (see its README).
const DEFLATE: &[u8] = include_bytes!("vectors/cluster4k.deflate");
const ZSTD: &[u8] = include_bytes!("vectors/cluster4k.zst");
const CLUSTER: usize = 4096;

fn expected_byte(i: usize) -> u8 {
    ((i % 251) ^ (i / 512)) as u8
}

fn buffer(t: &Test, len: usize) -> Option<KVVec<u8>> {
    t.ok(KVVec::from_elem(0u8, len, GFP_KERNEL))
}

/// `data` followed by `extra` bytes of 0xaa.
fn with_trailer(t: &Test, data: &[u8], extra: usize) -> Option<KVVec<u8>> {
    let mut v = buffer(t, data.len() + extra)?;
    v.get_mut(..data.len())?.copy_from_slice(data);
    v.get_mut(data.len()..)?.fill(0xaa);
    Some(v)
}

/// Decompresses one cluster of `kind` and checks it against the vector.
fn check_cluster(t: &Test, kind: CompressionType, input: &[u8]) {
    let (Some(mut d), Some(mut out)) = (under(t), buffer(t, CLUSTER)) else { return };
    check_eq!(t, decompress_cluster(&mut d, kind, input, &mut out), Ok(()));
    let bad = out.iter().enumerate().position(|(i, &b)| b != expected_byte(i));
    check_eq!(t, bad, None);
}

fn deflate_known_vector(t: &Test) {
    check_eq!(t, DEFLATE.len(), 1540);
    check_cluster(t, CompressionType::Deflate, DEFLATE);
}

fn zstd_known_vector(t: &Test) {
    check_eq!(t, ZSTD.get(..4), Some(&[0x28u8, 0xb5, 0x2f, 0xfd][..]));
    check_cluster(t, CompressionType::Zstd, ZSTD);
}

fn trailing_bytes_are_ignored(t: &Test) {
    // Compressed data is followed by sector padding or the next cluster.
    for (kind, v) in [(CompressionType::Deflate, DEFLATE), (CompressionType::Zstd, ZSTD)] {
        let Some(input) = with_trailer(t, v, 300) else { return };
        check_cluster(t, kind, &input);
    }
}

fn stream_in_a_max_len_buffer(t: &Test) {
    // The driver reads up to max_compressed_len bytes: zero padded here.
    for (kind, v) in [(CompressionType::Deflate, DEFLATE), (CompressionType::Zstd, ZSTD)] {
        let Some(mut input) = buffer(t, max_compressed_len(12)) else { return };
        let Some(dst) = input.get_mut(..v.len()) else { return };
        dst.copy_from_slice(v);
        check_cluster(t, kind, &input);
    }
}

fn truncated_input_fails(t: &Test) {
    let Some(mut d) = under(t) else { return };
    let Some(mut out) = buffer(t, CLUSTER) else { return };
    // The last bytes of the deflate stream hold only the end-of-block code:
    // without them the cluster is complete, which the contract accepts
    // (the output is full). Cut into the data instead. A zstd frame ends
    // with its checksum: any cut fails.
    let cases = [
        (CompressionType::Deflate, DEFLATE, [0, 1, 16, DEFLATE.len() / 2, DEFLATE.len() - 40]),
        (CompressionType::Zstd, ZSTD, [0, 1, 16, ZSTD.len() / 2, ZSTD.len() - 1]),
    ];
    for (kind, v, cuts) in cases {
        for cut in cuts {
            let r = decompress_cluster(&mut d, kind, v.get(..cut).unwrap_or(&[]), &mut out);
            let failed = matches!(r, Err(Error::DecompressionFailed | Error::DecompressedSizeMismatch { .. }));
            check!(t, failed, "{kind:?} cut at {cut}: {r:?}");
        }
    }
}

fn corrupt_deflate_fails(t: &Test) {
    let (Some(mut d), Some(mut out)) = (under(t), buffer(t, CLUSTER)) else { return };
    let Some(mut bad) = with_trailer(t, DEFLATE, 0) else { return };
    // Block type 3 is reserved: an invalid stream.
    if let Some(b) = bad.get_mut(0) {
        *b |= 0b110;
    }
    check_eq!(t, d.decompress(CompressionType::Deflate, &bad, &mut out), Err(Error::DecompressionFailed));
    // Not deflate at all.
    let Some(junk) = with_trailer(t, &[], 64) else { return };
    check_matches!(t, decompress_cluster(&mut d, CompressionType::Deflate, &junk, &mut out), Err(_));
}

fn corrupt_zstd_fails(t: &Test) {
    let (Some(mut d), Some(mut out)) = (under(t), buffer(t, CLUSTER)) else { return };
    // A flipped payload byte: the content checksum catches it.
    let Some(mut bad) = with_trailer(t, ZSTD, 0) else { return };
    let mid = bad.len() / 2;
    if let Some(b) = bad.get_mut(mid) {
        *b ^= 0x40;
    }
    check_eq!(t, d.decompress(CompressionType::Zstd, &bad, &mut out), Err(Error::DecompressionFailed));
    // A wrong magic number.
    let Some(mut bad) = with_trailer(t, ZSTD, 0) else { return };
    if let Some(b) = bad.get_mut(0) {
        *b = 0x29;
    }
    check_eq!(t, d.decompress(CompressionType::Zstd, &bad, &mut out), Err(Error::DecompressionFailed));
    // zlib data given as zstd.
    check_eq!(t, d.decompress(CompressionType::Zstd, DEFLATE, &mut out), Err(Error::DecompressionFailed));
}

fn short_content_is_a_size_mismatch(t: &Test) {
    // A 4 KiB stream where an 8 KiB cluster is expected.
    let (Some(mut d), Some(mut out)) = (under(t), buffer(t, 2 * CLUSTER)) else { return };
    for (kind, v) in [(CompressionType::Deflate, DEFLATE), (CompressionType::Zstd, ZSTD)] {
        let r = decompress_cluster(&mut d, kind, v, &mut out);
        let failed = matches!(
            r,
            Err(Error::DecompressedSizeMismatch { expected: 8192, got: 4096 } | Error::DecompressionFailed)
        );
        check!(t, failed, "{kind:?}: {r:?}");
    }
}

fn deflate_round_trip_64k(t: &Test) {
    // A 64 KiB cluster compressed by the kernel's zlib_deflate.
    let len = 64 << 10;
    let Some(mut src) = buffer(t, len) else { return };
    for (i, b) in src.iter_mut().enumerate() {
        *b = if (i / 4096) % 3 == 0 { 0 } else { expected_byte(i * 7) };
    }
    let Some(mut packed) = buffer(t, max_compressed_len(16)) else { return };
    let Some(n) = t.ok(decompress::deflate_raw(&src, &mut packed)) else { return };
    check!(t, n > 0 && n < len, "compressed to {n} bytes");
    let (Some(mut d), Some(mut out)) = (under(t), buffer(t, len)) else { return };
    let Some(input) = packed.get(..n) else { return };
    check_eq!(t, decompress_cluster(&mut d, CompressionType::Deflate, input, &mut out), Ok(()));
    check!(t, out[..] == src[..], "round trip differs");
}

kunit_suite!(
    lff_decompress,
    [
        deflate_known_vector,
        zstd_known_vector,
        trailing_bytes_are_ignored,
        stream_in_a_max_len_buffer,
        truncated_input_fails,
        corrupt_deflate_fails,
        corrupt_zstd_fails,
        short_content_is_a_size_mismatch,
        deflate_round_trip_64k,
    ]
);

// SPDX-License-Identifier: GPL-2.0

//! lff_kunit_compress: KUnit suite of decompression as the qcow2 driver
//! does it, with the driver's own code: its bindings to the kernel's zlib
//! (raw deflate, qcow2 compression type 0) and zstd (type 1),
//! `wrappers/decompress.rs`, and its `Decompressor` with QEMU's semantics
//! and its worker pool, `qcow2/decomp.rs`, both compiled into this module
//! as the driver compiles them. Known vectors made by userspace tools
//! (one and several zstd frames), trailing bytes, truncated and corrupt
//! input, content shorter or longer than the cluster, plus a round trip
//! through the kernel's own `zlib_deflate`.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
#[path = "wrappers/kunit.rs"]
#[macro_use]
pub mod kunit;

#[allow(unsafe_code)]
#[path = "wrappers/workqueue.rs"]
pub mod workqueue;

#[path = "../../formats/qcow2/src/format/mod.rs"]
pub mod qcow2fmt;

#[allow(unsafe_code)]
#[path = "wrappers/deflate.rs"]
pub mod deflate;

/// The driver's bindings (the inflate call goes through the core's C
/// helper `lff_inflate`).
#[allow(unsafe_code)]
#[path = "../../drivers/block/loop_file_fmt/wrappers/decompress.rs"]
pub mod decompress;

/// The generated declarations `decompress` calls.
#[allow(unsafe_code)]
#[path = "../../drivers/block/loop_file_fmt/wrappers/qcow2_sys.rs"]
mod qcow2_sys;

/// The driver's compat layer (`now_ns`, which the pool times
/// decompressions with).
pub mod wrappers {
    #[allow(unsafe_code)]
    #[path = "../../../drivers/block/loop_file_fmt/wrappers/compat.rs"]
    pub mod compat;
}

#[path = "../../drivers/block/loop_file_fmt/qcow2/decomp.rs"]
pub mod decomp;

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use decomp::Pool;
use decompress::{DecompressError, Inflate, InflateStatus, Wrapping, ZstdDctx};
use kernel::alloc::KVVec;
use kernel::prelude::*;
use kernel::sync::Arc;
use kunit::Test;
use qcow2fmt::compressed::max_compressed_len;
use qcow2fmt::{decompress_cluster, CompressionType, Decompressor, Error};
use workqueue::{Barrier, Threads};

module! {
    type: KunitCompress,
    name: "lff_kunit_compress",
    description: "KUnit suite of zlib/zstd decompression for qcow2",
    license: "GPL",
}

struct KunitCompress;

impl kernel::Module for KunitCompress {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Self)
    }
}

/// The decompressor under test: the qcow2 driver's (its workspaces are
/// allocated on first use).
type Under = decomp::Decoders;

fn under(_t: &Test) -> Option<Under> {
    Some(Under::default())
}

/// The 4 KiB cluster of `vectors/` (see its README).
const DEFLATE: &[u8] = include_bytes!("vectors/cluster4k.deflate");
const ZSTD: &[u8] = include_bytes!("vectors/cluster4k.zst");
/// The same cluster as two zstd frames of 2 KiB with a skippable frame of
/// 16 bytes between them.
const ZSTD_FRAMES: &[u8] = include_bytes!("vectors/cluster4k-2frames.zst");
const FRAME: usize = 1035;
const SKIP: usize = 16;
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
    let (Some(mut d), Some(mut out)) = (under(t), buffer(t, CLUSTER)) else {
        return;
    };
    check_eq!(t, decompress_cluster(&mut d, kind, input, &mut out), Ok(()));
    let bad = out
        .iter()
        .enumerate()
        .position(|(i, &b)| b != expected_byte(i));
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
    for (kind, v) in [
        (CompressionType::Deflate, DEFLATE),
        (CompressionType::Zstd, ZSTD),
    ] {
        let Some(input) = with_trailer(t, v, 300) else {
            return;
        };
        check_cluster(t, kind, &input);
    }
}

fn stream_in_a_max_len_buffer(t: &Test) {
    // The driver reads up to max_compressed_len bytes: zero padded here.
    for (kind, v) in [
        (CompressionType::Deflate, DEFLATE),
        (CompressionType::Zstd, ZSTD),
    ] {
        let Some(mut input) = buffer(t, max_compressed_len(12)) else {
            return;
        };
        let Some(dst) = input.get_mut(..v.len()) else {
            return;
        };
        dst.copy_from_slice(v);
        check_cluster(t, kind, &input);
    }
}

fn truncated_input_fails(t: &Test) {
    let Some(mut d) = under(t) else { return };
    let Some(mut out) = buffer(t, CLUSTER) else {
        return;
    };
    // The last bytes of the deflate stream hold only the end-of-block code:
    // without them the cluster is complete, which the contract accepts
    // (the output is full). Cut into the data instead. A zstd frame ends
    // with its checksum: any cut fails.
    let cases = [
        (
            CompressionType::Deflate,
            DEFLATE,
            [0, 1, 16, DEFLATE.len() / 2, DEFLATE.len() - 40],
        ),
        (
            CompressionType::Zstd,
            ZSTD,
            [0, 1, 16, ZSTD.len() / 2, ZSTD.len() - 1],
        ),
    ];
    for (kind, v, cuts) in cases {
        for cut in cuts {
            let r = decompress_cluster(&mut d, kind, v.get(..cut).unwrap_or(&[]), &mut out);
            let failed = matches!(
                r,
                Err(Error::DecompressionFailed | Error::DecompressedSizeMismatch { .. })
            );
            check!(t, failed, "{kind:?} cut at {cut}: {r:?}");
        }
    }
}

fn corrupt_deflate_fails(t: &Test) {
    let (Some(mut d), Some(mut out)) = (under(t), buffer(t, CLUSTER)) else {
        return;
    };
    let Some(mut bad) = with_trailer(t, DEFLATE, 0) else {
        return;
    };
    // Block type 3 is reserved: an invalid stream.
    if let Some(b) = bad.get_mut(0) {
        *b |= 0b110;
    }
    check_eq!(
        t,
        d.decompress(CompressionType::Deflate, &bad, &mut out),
        Err(Error::DecompressionFailed)
    );
    // Not deflate at all.
    let Some(junk) = with_trailer(t, &[], 64) else {
        return;
    };
    check_matches!(
        t,
        decompress_cluster(&mut d, CompressionType::Deflate, &junk, &mut out),
        Err(_)
    );
}

fn corrupt_zstd_fails(t: &Test) {
    let (Some(mut d), Some(mut out)) = (under(t), buffer(t, CLUSTER)) else {
        return;
    };
    // A flipped payload byte: the content checksum catches it.
    let Some(mut bad) = with_trailer(t, ZSTD, 0) else {
        return;
    };
    let mid = bad.len() / 2;
    if let Some(b) = bad.get_mut(mid) {
        *b ^= 0x40;
    }
    check_eq!(
        t,
        d.decompress(CompressionType::Zstd, &bad, &mut out),
        Err(Error::DecompressionFailed)
    );
    // A wrong magic number.
    let Some(mut bad) = with_trailer(t, ZSTD, 0) else {
        return;
    };
    if let Some(b) = bad.get_mut(0) {
        *b = 0x29;
    }
    check_eq!(
        t,
        d.decompress(CompressionType::Zstd, &bad, &mut out),
        Err(Error::DecompressionFailed)
    );
    // zlib data given as zstd.
    check_eq!(
        t,
        d.decompress(CompressionType::Zstd, DEFLATE, &mut out),
        Err(Error::DecompressionFailed)
    );
}

fn short_content_is_a_size_mismatch(t: &Test) {
    // A 4 KiB stream where an 8 KiB cluster is expected.
    let (Some(mut d), Some(mut out)) = (under(t), buffer(t, 2 * CLUSTER)) else {
        return;
    };
    for (kind, v) in [
        (CompressionType::Deflate, DEFLATE),
        (CompressionType::Zstd, ZSTD),
    ] {
        let r = decompress_cluster(&mut d, kind, v, &mut out);
        let failed = matches!(
            r,
            Err(Error::DecompressedSizeMismatch {
                expected: 8192,
                got: 4096
            } | Error::DecompressionFailed)
        );
        check!(t, failed, "{kind:?}: {r:?}");
    }
}

fn deflate_round_trip_64k(t: &Test) {
    // A 64 KiB cluster compressed by the kernel's zlib_deflate.
    let len = 64 << 10;
    let Some(mut src) = buffer(t, len) else {
        return;
    };
    for (i, b) in src.iter_mut().enumerate() {
        *b = if (i / 4096) % 3 == 0 {
            0
        } else {
            expected_byte(i * 7)
        };
    }
    let Some(mut packed) = buffer(t, max_compressed_len(16)) else {
        return;
    };
    let Some(n) = t.ok(deflate::deflate_raw(&src, &mut packed)) else {
        return;
    };
    check!(t, n > 0 && n < len, "compressed to {n} bytes");
    let (Some(mut d), Some(mut out)) = (under(t), buffer(t, len)) else {
        return;
    };
    let Some(input) = packed.get(..n) else { return };
    check_eq!(
        t,
        decompress_cluster(&mut d, CompressionType::Deflate, input, &mut out),
        Ok(())
    );
    check!(t, out[..] == src[..], "round trip differs");
}

fn inflate_binding_statuses(t: &Test) {
    let Some(mut z) = t.ok(Inflate::new(GFP_KERNEL, Wrapping::Raw)) else {
        return;
    };
    let Some(mut out) = buffer(t, 2 * CLUSTER) else {
        return;
    };
    // The stream ends: exactly at the end of the output, or before it.
    check_eq!(
        t,
        z.inflate(DEFLATE, &mut out[..CLUSTER]),
        Ok(InflateStatus::StreamEnd(CLUSTER))
    );
    check_eq!(
        t,
        z.inflate(DEFLATE, &mut out),
        Ok(InflateStatus::StreamEnd(CLUSTER))
    );
    check!(
        t,
        out.iter()
            .take(CLUSTER)
            .enumerate()
            .all(|(i, &b)| b == expected_byte(i))
    );
    // The output fills first.
    check_eq!(
        t,
        z.inflate(DEFLATE, &mut out[..1000]),
        Ok(InflateStatus::OutputFull)
    );
    // Input used up before either.
    check_eq!(
        t,
        z.inflate(&DEFLATE[..DEFLATE.len() / 2], &mut out),
        Err(DecompressError::Truncated)
    );
    check_eq!(t, z.inflate(&[], &mut out), Err(DecompressError::Truncated));
    // An invalid block type; zstd data.
    check_eq!(
        t,
        z.inflate(&[0xff; 64], &mut out),
        Err(DecompressError::Corrupt)
    );
    check_eq!(t, z.inflate(ZSTD, &mut out), Err(DecompressError::Corrupt));
    // Nothing beyond the output is written.
    out.fill(0x5a);
    check_eq!(
        t,
        z.inflate(DEFLATE, &mut out[..100]),
        Ok(InflateStatus::OutputFull)
    );
    check!(
        t,
        out[100..].iter().all(|&b| b == 0x5a),
        "wrote past the output"
    );
}

fn zstd_binding_frames(t: &Test) {
    let Some(mut z) = t.ok(ZstdDctx::new(GFP_KERNEL)) else {
        return;
    };
    let Some(mut out) = buffer(t, 2 * CLUSTER) else {
        return;
    };
    check_eq!(t, ZstdDctx::frame_len(ZSTD), Ok(ZSTD.len()));
    check_eq!(t, ZstdDctx::frame_len(ZSTD_FRAMES), Ok(FRAME));
    check_eq!(t, ZstdDctx::frame_len(&ZSTD_FRAMES[FRAME..]), Ok(SKIP));
    check_eq!(
        t,
        ZstdDctx::frame_len(&ZSTD_FRAMES[FRAME + SKIP..]),
        Ok(FRAME)
    );
    check_eq!(
        t,
        ZstdDctx::frame_len(&ZSTD[..ZSTD.len() - 1]),
        Err(DecompressError::Truncated)
    );
    check_eq!(t, ZstdDctx::frame_len(&[]), Err(DecompressError::Truncated));
    check_eq!(
        t,
        ZstdDctx::frame_len(DEFLATE),
        Err(DecompressError::Truncated)
    );
    check_eq!(t, z.decompress_frame(ZSTD, &mut out), Ok(CLUSTER));
    check!(
        t,
        out.iter()
            .take(CLUSTER)
            .enumerate()
            .all(|(i, &b)| b == expected_byte(i))
    );
    // A skippable frame produces nothing; the second half of the cluster.
    check_eq!(
        t,
        z.decompress_frame(&ZSTD_FRAMES[FRAME..FRAME + SKIP], &mut out),
        Ok(0)
    );
    out.fill(0x5a);
    check_eq!(
        t,
        z.decompress_frame(&ZSTD_FRAMES[FRAME + SKIP..], &mut out),
        Ok(CLUSTER / 2)
    );
    check!(
        t,
        out.iter()
            .take(CLUSTER / 2)
            .enumerate()
            .all(|(i, &b)| b == expected_byte(CLUSTER / 2 + i))
    );
    // A frame larger than the output fails without writing past it.
    check_eq!(
        t,
        z.decompress_frame(ZSTD, &mut out[..CLUSTER - 1]),
        Err(DecompressError::Corrupt)
    );
    check!(
        t,
        out[CLUSTER - 1..].iter().all(|&b| b == 0x5a),
        "wrote past the output"
    );
}

fn zstd_several_frames(t: &Test) {
    // QEMU reads frames until the cluster is full; a skippable frame
    // between them is read past.
    check_cluster(t, CompressionType::Zstd, ZSTD_FRAMES);
    let Some(input) = with_trailer(t, ZSTD_FRAMES, 300) else {
        return;
    };
    check_cluster(t, CompressionType::Zstd, &input);
    let (Some(mut d), Some(mut out)) = (under(t), buffer(t, CLUSTER)) else {
        return;
    };
    // The first frame alone: the cluster is not full.
    for cut in [FRAME, FRAME + SKIP, FRAME + SKIP + 1, ZSTD_FRAMES.len() - 1] {
        let r = decompress_cluster(&mut d, CompressionType::Zstd, &ZSTD_FRAMES[..cut], &mut out);
        check!(
            t,
            r == Err(Error::DecompressionFailed),
            "cut at {cut}: {r:?}"
        );
    }
    // A 2 KiB cluster is full after the first frame: the rest is not read.
    let mut half = [0u8; CLUSTER / 2];
    let Some(mut bad) = with_trailer(t, ZSTD_FRAMES, 0) else {
        return;
    };
    bad[FRAME + SKIP + 4] ^= 0xff;
    check_eq!(
        t,
        decompress_cluster(&mut d, CompressionType::Zstd, &bad, &mut half),
        Ok(())
    );
    check!(
        t,
        half.iter().enumerate().all(|(i, &b)| b == expected_byte(i))
    );
    // But a 4 KiB one needs the corrupted second frame.
    check_eq!(
        t,
        decompress_cluster(&mut d, CompressionType::Zstd, &bad, &mut out),
        Err(Error::DecompressionFailed)
    );
}

fn content_longer_than_the_cluster(t: &Test) {
    // A 4 KiB stream where a 2 KiB cluster is expected. Deflate stops when
    // the cluster is full (QEMU accepts it: it cannot tell the stream's end
    // from padding); a zstd frame larger than the cluster is an error.
    let Some(mut d) = under(t) else { return };
    let mut half = [0u8; CLUSTER / 2];
    check_eq!(
        t,
        decompress_cluster(&mut d, CompressionType::Deflate, DEFLATE, &mut half),
        Ok(())
    );
    check!(
        t,
        half.iter().enumerate().all(|(i, &b)| b == expected_byte(i))
    );
    check_eq!(
        t,
        decompress_cluster(&mut d, CompressionType::Zstd, ZSTD, &mut half),
        Err(Error::DecompressionFailed)
    );
}

/// What the pool case's threads share.
struct PoolShared {
    pool: Pool,
    barrier: Barrier,
    met: AtomicUsize,
    good: AtomicUsize,
    bad: AtomicUsize,
}

const THREADS: usize = 4;
const ROUNDS: usize = 16;

fn pool_decompresses_in_parallel(t: &Test) {
    // Fewer workers than threads: some wait for a worker.
    let Some(pool) = t.ok(Pool::new(
        2,
        max_compressed_len(12),
        &[CompressionType::Deflate, CompressionType::Zstd],
    )) else {
        return;
    };
    check_eq!(t, pool.workers(), 2);
    let Some(barrier) = t.ok(Barrier::new()) else {
        return;
    };
    let zero = || AtomicUsize::new(0);
    let s = PoolShared {
        pool,
        barrier,
        met: zero(),
        good: zero(),
        bad: zero(),
    };
    let Some(shared) = t.ok(Arc::new(s, GFP_KERNEL)) else {
        return;
    };
    let Some(threads) = t.ok(Threads::new(THREADS as u16)) else {
        return;
    };
    for w in 0..THREADS {
        let s = shared.clone();
        let spawned = threads.spawn(GFP_KERNEL, move || {
            if s.barrier.wait(THREADS) {
                s.met.fetch_add(1, Relaxed);
            }
            let Ok(mut out) = KVVec::from_elem(0u8, CLUSTER, GFP_KERNEL) else {
                s.bad.fetch_add(ROUNDS, Relaxed);
                return;
            };
            for r in 0..ROUNDS {
                let (kind, v) = match (w + r) % 3 {
                    0 => (CompressionType::Deflate, DEFLATE),
                    1 => (CompressionType::Zstd, ZSTD),
                    _ => (CompressionType::Zstd, ZSTD_FRAMES),
                };
                out.fill(0);
                // As the driver does: the compressed bytes are read into
                // the worker's input buffer, then decompressed.
                let ok = s.pool.with_worker(kind, |input, dec| {
                    let Some(dst) = input.get_mut(..v.len()) else {
                        return false;
                    };
                    dst.copy_from_slice(v);
                    decompress_cluster(dec, kind, dst, &mut out).is_ok()
                }) == Ok(true)
                    && out.iter().enumerate().all(|(i, &b)| b == expected_byte(i));
                let n = if ok { &s.good } else { &s.bad };
                n.fetch_add(1, Relaxed);
            }
        });
        if t.ok(spawned).is_none() {
            break;
        }
    }
    threads.join();
    check_eq!(t, shared.met.load(Relaxed), THREADS);
    check_eq!(
        t,
        (shared.good.load(Relaxed), shared.bad.load(Relaxed)),
        (THREADS * ROUNDS, 0)
    );
    // Each cluster was counted once, with its bytes, and timed.
    let (clusters, bytes, nsecs) = shared.pool.stats().get();
    let n = (THREADS * ROUNDS) as u64;
    check_eq!(t, (clusters, bytes), (n, n * CLUSTER as u64));
    check!(t, nsecs > 0, "decompressing {n} clusters took {nsecs} ns");
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
        inflate_binding_statuses,
        zstd_binding_frames,
        zstd_several_frames,
        content_longer_than_the_cluster,
        pool_decompresses_in_parallel,
    ]
);

//! Replays the inputs that made the fuzzers (`fuzz/`, see its README) find
//! a crash, a hang or an out-of-memory, through the same harnesses
//! (`qcow2_format::fuzzing`). Inputs live in `tests/fuzz-regressions/`,
//! named `<target>-<what>`; each must run without a panic and quickly.
//!
//! [`replay_corpus`] (ignored unless asked for with `--ignored`) replays a
//! whole corpus, `FUZZ_REPLAY=DIR` (`DIR/<target>/*`, e.g. `fuzz/corpus`).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use qcow2_format::fuzzing::{target, TARGETS};

/// A debug build runs an input at most ~100 times slower than the fuzzer's
/// optimized build; anything near this bound is a hang regression.
const MAX_TIME: Duration = Duration::from_secs(20);

fn run(name: &str, path: &Path) {
    let data = fs::read(path).unwrap();
    let harness = target(name).unwrap_or_else(|| panic!("{}: no target {name}", path.display()));
    let start = Instant::now();
    harness(&data);
    let took = start.elapsed();
    assert!(took < MAX_TIME, "{}: took {took:?}", path.display());
}

#[test]
fn fuzz_regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        if file.starts_with('.') || file.ends_with(".md") {
            continue;
        }
        // Longest target name that prefixes the file name.
        let name = TARGETS
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| file.starts_with(&format!("{n}-")))
            .max_by_key(|n| n.len())
            .unwrap_or_else(|| panic!("{file}: name must start with a target name"));
        run(name, &path);
        count += 1;
    }
    eprintln!("{count} fuzz regression inputs replayed");
}

/// Not part of `make test` (a corpus is not committed): run it with
/// `FUZZ_REPLAY=fuzz/corpus cargo test -p qcow2-format --features std
/// --test fuzz_regressions -- --ignored`.
#[test]
#[ignore = "replays a fuzz corpus: FUZZ_REPLAY=DIR ... -- --ignored"]
fn replay_corpus() {
    let dir = std::env::var_os("FUZZ_REPLAY").expect("FUZZ_REPLAY=DIR names the corpus to replay");
    let mut total = 0;
    for (name, _) in TARGETS {
        let Ok(entries) = fs::read_dir(Path::new(&dir).join(name)) else {
            eprintln!("{name}: no inputs");
            continue;
        };
        let mut n = 0;
        for entry in entries {
            run(name, &entry.unwrap().path());
            n += 1;
        }
        eprintln!("{name}: {n} inputs replayed");
        total += n;
    }
    assert!(total > 0, "no inputs under {}", Path::new(&dir).display());
}

/// A tiny v3 image with 512-byte clusters and two guest clusters, both
/// compressed at the same host offset: cluster 0 with one additional
/// sector (the whole stream), cluster 1 with none (a truncated stream).
fn same_offset_compressed_image(payload: &[u8; 512]) -> Vec<u8> {
    use flate2::{write::DeflateEncoder, Compression};
    use std::io::Write;
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::none());
    enc.write_all(payload).unwrap();
    let stream = enc.finish().unwrap();
    assert!(stream.len() > 512 && stream.len() <= 1024);
    let mut img = vec![0u8; 1536];
    let put32 = |img: &mut Vec<u8>, at: usize, v: u32| {
        img[at..at + 4].copy_from_slice(&v.to_be_bytes());
    };
    put32(&mut img, 0, 0x5146_49fb); // magic
    put32(&mut img, 4, 3); // version
    put32(&mut img, 20, 9); // cluster_bits
    img[24..32].copy_from_slice(&1024u64.to_be_bytes()); // size
    put32(&mut img, 36, 1); // l1_size
    img[40..48].copy_from_slice(&512u64.to_be_bytes()); // l1_table_offset
    put32(&mut img, 96, 4); // refcount_order
    put32(&mut img, 100, 104); // header_length
    img[512..520].copy_from_slice(&1024u64.to_be_bytes()); // L1[0]
    let desc = |additional: u64| (1u64 << 62) | 1536 | (additional << 61);
    img[1024..1032].copy_from_slice(&desc(1).to_be_bytes()); // L2[0]
    img[1032..1040].copy_from_slice(&desc(0).to_be_bytes()); // L2[1]
    img.extend_from_slice(&stream);
    img
}

/// Found while writing the `image` harness's whole-versus-pieces check
/// (which can observe it): the host reader cached decompressed clusters by
/// host offset only, so a cluster whose descriptor is too short to
/// decompress read fine once another descriptor at the same offset had
/// filled the cache. A result must depend on the image only.
#[test]
fn compressed_cache_is_keyed_by_length_too() {
    let mut payload = [0u8; 512];
    for (i, b) in payload.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    let mut img =
        qcow2_format::host::Image::from_memory(vec![same_offset_compressed_image(&payload)], None)
            .unwrap();
    let mut buf = [0u8; 512];
    assert!(img.read_at(&mut buf, 512).is_err());
    img.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, payload);
    assert!(img.read_at(&mut buf, 512).is_err(), "served from the cache");
    img.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, payload);
}

/// Found by the `image` target (`image-crash-5217907984ca`): a deflate
/// stream that ends before it filled its cluster served reads of the bytes
/// it did produce when the first read of the cluster needed only those (the
/// provider inflated just the prefix a read needed), and failed them once a
/// read of the cluster's end had been tried first. QEMU fails every read of
/// such a cluster; so must we, in any order.
#[test]
fn short_compressed_stream_fails_every_read_in_any_order() {
    use flate2::{write::DeflateEncoder, Compression};
    use std::io::Write;
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::default());
    enc.write_all(&[0x5a; 300]).unwrap(); // 300 of the cluster's 512 bytes
    let stream = enc.finish().unwrap();
    let mut img = same_offset_compressed_image(&[0; 512]);
    img.truncate(1536);
    img.extend_from_slice(&stream);
    img[1032..1040].fill(0); // only guest cluster 0 is compressed
    let ranges = [(0u64, 16usize), (100, 200), (400, 112), (0, 512)];
    for first in 0..ranges.len() {
        let mut image = qcow2_format::host::Image::from_memory(vec![img.clone()], None).unwrap();
        for i in 0..ranges.len() {
            let (offset, len) = ranges[(first + i) % ranges.len()];
            let mut buf = vec![0u8; len];
            let r = image.read_at(&mut buf, offset);
            assert!(r.is_err(), "{offset}+{len} read, starting at {first}");
        }
        // The other cluster is unallocated and still reads.
        let mut buf = [1u8; 512];
        image.read_at(&mut buf, 512).unwrap();
        assert_eq!(buf, [0; 512]);
    }
}

/// The `compressed` harness on real deflate and zstd clusters, with the
/// stream followed by padding of many lengths; and `decompress_cluster`
/// itself, which fills any output length it is given (prefixes too).
#[test]
fn compressed_harness_on_real_clusters() {
    use qcow2_format::fuzzing::compressed;
    use qcow2_format::CompressedDescriptor;
    use std::io::Write;
    let cluster_bits = 16u32;
    let cluster: Vec<u8> = (0..1u32 << cluster_bits)
        .map(|i| (i / 7 % 251) as u8 ^ (i >> 11) as u8)
        .collect();
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&cluster).unwrap();
    let deflate = enc.finish().unwrap();
    let zstd = zstd::bulk::compress(&cluster, 3).unwrap();
    for (stream, zstd_bit) in [(&deflate, 0u8), (&zstd, 0x80)] {
        let sectors = (stream.len() as u64).div_ceil(512) - 1;
        let desc = CompressedDescriptor::encode(cluster_bits, 0, sectors).unwrap();
        for pad in 0..64usize {
            let mut input = vec![(cluster_bits - 9) as u8 | zstd_bit];
            input.extend_from_slice(&(desc | 1 << 62).to_le_bytes());
            input.extend_from_slice(stream);
            input.resize(input.len() + pad * 37, 0);
            compressed(&input);
        }
    }
    // The prefixes themselves are the cluster's first bytes.
    use qcow2_format::host::HostDecompressor;
    use qcow2_format::{decompress_cluster, CompressionType};
    for n in [1, 511, 4096, 30000, 65535, 65536] {
        let mut out = vec![0u8; n];
        decompress_cluster(
            &mut HostDecompressor::default(),
            CompressionType::Deflate,
            &deflate,
            &mut out,
        )
        .unwrap();
        assert!(out == cluster[..n], "deflate prefix of {n}");
    }
    let mut out = vec![0u8; 1 << cluster_bits];
    decompress_cluster(
        &mut HostDecompressor::default(),
        CompressionType::Zstd,
        &zstd,
        &mut out,
    )
    .unwrap();
    assert!(out == cluster);
}

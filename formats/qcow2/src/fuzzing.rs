//! Fuzz harnesses (feature `std`), shared by the `cargo fuzz` targets in
//! `fuzz/` and the regression tests in `tests/fuzz_regressions.rs`, so a
//! saved crash input replays exactly what the fuzzer ran.
//!
//! Each harness takes arbitrary bytes, drives one part of the format logic
//! and checks invariants with `assert!`: any panic is a finding (either in
//! the format logic or a broken invariant). Errors returned by the format
//! logic are expected and fine. Every harness bounds its own work so one
//! input costs at most a few milliseconds: inputs longer than
//! [`MAX_INPUT`] are ignored, reads of the virtual disk are limited to
//! [`READ_BUDGET`] bytes per input, and output buffers are one cluster.
//!
//! | harness | what it drives |
//! | --- | --- |
//! | [`header`] | `Header::parse` and layer setup over the first bytes of an image |
//! | [`image`] | `Image::from_memory` with 1..=4 layers (or a cycle of 17), optional snapshot, bounded reads of the virtual disk |
//! | [`l2_table`] | `map_in_table` over a fuzzed L2 table, cross-checked with `map_entry` |
//! | [`compressed`] | compressed descriptor decoding, `read_range`, and `CompressedRead::load` over fuzzed file bytes |
//! | [`decompress`] | the host deflate/zstd decompressors on fuzzed streams, one cluster of output |
//! | [`snapshots`] | the snapshot table walk, `span_equals`, `find_snapshot`, `Qcow2Layer::from_snapshot` |
//! | [`crate::fuzzing_write::write`] | the write engine over fresh or fuzzed images, checked against a model and the refcounts |

use std::format;
use std::io::Read;
use std::vec;
use std::vec::Vec;

use crate::format::compressed::max_compressed_len;
use crate::format::header::{HEADER_READ_LEN, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS};
use crate::format::snapshot::span_equals;
use crate::format::table::map_entry;
use crate::format::{
    decompress_cluster, find_snapshot, CompressedDescriptor, CompressedRead, CompressionType,
    Decompressor, Error, Geometry, Header, HeaderLayout, LayerFormat, MappingKind, Qcow2Layer,
    SnapshotCursor, SnapshotSelector, Storage,
};
use crate::host::{HostDecompressor, Image};

/// Inputs longer than this are ignored by every harness (the fuzzer is run
/// with a smaller `-max_len`).
pub const MAX_INPUT: usize = 4 << 20;
/// Most bytes of the virtual disk one [`image`] input reads, over all its
/// requests.
pub const READ_BUDGET: u64 = 256 << 10;
/// Longest single read request of [`image`].
const MAX_REQUEST: u64 = 32 << 10;
/// Number of random read requests of [`image`].
const RANDOM_READS: usize = 24;
/// How many of them are checked against the naive reader.
const REFERENCE_READS: usize = 6;

/// A harness: takes one fuzz input, panics on a finding.
pub use format_host::fuzz::Harness;

/// All harnesses by name (the `cargo fuzz` target names).
pub const TARGETS: &[(&str, Harness)] = &[
    ("header", header),
    ("image", image),
    ("l2_table", l2_table),
    ("compressed", compressed),
    ("decompress", decompress),
    ("snapshots", snapshots),
    ("write", crate::fuzzing_write::write),
];

/// The harness called `name`, if any.
pub fn target(name: &str) -> Option<Harness> {
    format_host::fuzz::find(TARGETS, name)
}

use format_host::fuzz::Rng;

fn u64_le(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(src) = data.get(at..) {
        let n = src.len().min(8);
        b[..n].copy_from_slice(&src[..n]);
    }
    u64::from_le_bytes(b)
}

/// Exercises `kind`, `describe` and `Display` of an error.
fn touch_error(e: &Error) {
    assert!(crate::host::errno(e) > 0, "errno of {e:?}");
    assert!(!e.describe().is_empty());
    let text = format!("{e}");
    assert!(text.starts_with(e.describe()), "{text}");
}

/// Header parsing and validation: `data` is the start of an image file.
pub fn header(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let buf = &data[..data.len().min(HEADER_READ_LEN)];
    // The layout is the first part of the parse: it fails exactly as the
    // parse does, or agrees with what the parse accepts.
    let layout = HeaderLayout::parse(buf);
    let h = match Header::parse(buf) {
        Ok(h) => h,
        Err(e) => {
            if let Err(l) = layout {
                assert_eq!(l, e, "layout and header refuse differently");
            }
            return touch_error(&e);
        }
    };
    let layout = layout.expect("the layout of an accepted header");
    assert_eq!(
        (layout.version, layout.cluster_bits, layout.header_length),
        (h.version, h.cluster_bits, h.header_length)
    );
    assert_eq!(
        (layout.backing_file, layout.backing_format),
        (h.backing_file, h.backing_format)
    );
    assert_eq!(layout.backing_format_name(buf), h.backing_format_name(buf));
    if let Some(name) = h.backing_format_name(buf) {
        assert!(!name.is_empty() && !name.contains(&0));
    }
    assert!(h.version == 2 || h.version == 3);
    assert!((MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&h.cluster_bits));
    let g = h.geometry();
    assert_eq!(g.cluster_bits(), h.cluster_bits);
    assert_eq!(h.cluster_size(), 1u64 << h.cluster_bits);
    assert!(u64::from(h.header_length) <= h.cluster_size());
    assert!(h.header_length as usize <= buf.len());
    assert!(g.l1_entries_for(h.size) <= u64::from(h.l1_size));
    assert_eq!(h.l1_table_offset % h.cluster_size(), 0);
    assert_eq!(h.refcount_table_offset % h.cluster_size(), 0);
    assert_eq!(h.snapshots_offset % h.cluster_size(), 0);
    assert!(h.refcount_order <= 6);
    if h.version == 2 {
        assert_eq!(h.incompatible_features, 0);
        assert_eq!(h.compression_type, CompressionType::Deflate);
    }
    // Spans handed out must lie in the parsed buffer and the first cluster.
    for span in [h.backing_file, h.backing_format, h.feature_table]
        .into_iter()
        .flatten()
    {
        let bytes = span.get(buf).expect("span inside the parsed buffer");
        assert_eq!(bytes.len() as u64, u64::from(span.len()));
        assert!(u64::from(span.offset()) + u64::from(span.len()) <= h.cluster_size());
    }
    assert_eq!(h.backing_file_name(buf).is_some(), h.backing_file.is_some());
    let _ = h.is_dirty();
    let _ = h.is_corrupt();
    let _ = h.extended_l2();
    if let Err(e) = LayerFormat::detect(h.backing_format_name(buf), buf) {
        touch_error(&e);
    }
    match Qcow2Layer::new(&h, data.len() as u64) {
        Ok(q) => {
            assert!(q.l1_table_offset() + q.l1_table_bytes() as u64 <= data.len() as u64);
            assert_eq!(q.size(), h.size);
        }
        Err(e) => touch_error(&e),
    }
}

/// Splits the [`image`] input into layers. Byte 0: bits 0-1 the number of
/// layers minus one, bit 2 "cycle the layers to 17" (exercises the depth
/// limit with self-referencing images), bits 3-4 the snapshot selector.
/// Each layer but the last is a little-endian `u32` length and the bytes;
/// the last layer is the rest.
fn split_layers(data: &[u8]) -> Option<(u8, Vec<Vec<u8>>)> {
    let (&mode, mut rest) = data.split_first()?;
    let count = usize::from(mode & 3) + 1;
    let mut layers = Vec::with_capacity(count);
    for _ in 1..count {
        let len_bytes = rest.get(..4)?;
        let len = u32::from_le_bytes(len_bytes.try_into().ok()?) as usize;
        rest = &rest[4..];
        let len = len.min(rest.len());
        layers.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    layers.push(rest.to_vec());
    if mode & 4 != 0 {
        let mut i = 0;
        while layers.len() < 17 {
            layers.push(layers[i].clone());
            i += 1;
        }
    }
    Some((mode, layers))
}

/// Reads `[offset, offset + len)` in one request and again in odd-sized
/// pieces: both must agree (same bytes, or both fail).
fn check_split_read(img: &mut Image, offset: u64, len: usize, piece: usize) {
    let mut whole = vec![0u8; len];
    let whole_ok = img.read_at(&mut whole, offset);
    let mut parts = vec![0u8; len];
    let mut parts_ok = Ok(());
    for (i, chunk) in parts.chunks_mut(piece).enumerate() {
        let r = img.read_at(chunk, offset + (i * piece) as u64);
        if r.is_err() && parts_ok.is_ok() {
            parts_ok = r;
        }
    }
    assert_eq!(
        whole_ok.is_ok(),
        parts_ok.is_ok(),
        "whole {whole_ok:?} vs pieces {parts_ok:?} at {offset:#x}+{len}"
    );
    if whole_ok.is_ok() {
        assert!(whole == parts, "pieces differ at {offset:#x}+{len}");
    }
}

/// L1/L2 walks over an in-memory image (see `split_layers` for the input
/// layout): opens it and reads a bounded sample of the virtual disk.
pub fn image(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Some((mode, layers)) = split_layers(data) else {
        return;
    };
    let selector = match (mode >> 3) & 3 {
        0 => None,
        1 => Some(SnapshotSelector::Id(b"1")),
        2 => Some(SnapshotSelector::Name(b"snap2")),
        _ => Some(SnapshotSelector::IdOrName(b"2")),
    };
    let files = layers.clone();
    let mut img = match Image::from_memory(layers, selector) {
        Ok(img) => img,
        Err(e) => return touch_error(&e),
    };
    let size = img.size();
    assert!(img.chain().len() <= crate::format::MAX_CHAIN_DEPTH);
    if let Ok(list) = img.snapshots() {
        assert!(list.len() as u64 <= u64::from(img.header(0).map_or(0, |h| h.nb_snapshots)));
    }
    let mut rng = Rng::from_bytes(data);
    let mut budget = READ_BUDGET;
    let mut buf = vec![0u8; MAX_REQUEST as usize];
    let mut reference = vec![0u8; MAX_REQUEST as usize];
    let mut read = |img: &mut Image, offset: u64, len: u64, budget: &mut u64, check: bool| {
        let len = len.min(*budget).min(size.saturating_sub(offset));
        if len == 0 {
            return;
        }
        *budget -= len;
        let out = &mut buf[..len as usize];
        let r = img.read_at(out, offset);
        if let Err(e) = r {
            touch_error(&e);
            assert!(
                !matches!(e, Error::Internal | Error::BufferSize { .. }),
                "{e:?} at {offset:#x}+{len}"
            );
        }
        if check {
            let naive = Reference { img, files: &files };
            let expected = &mut reference[..len as usize];
            let n = naive.fill(0, offset, expected);
            assert_eq!(
                r.is_ok(),
                n.is_ok(),
                "engine {r:?}, reference {:?} at {offset:#x}+{len}",
                n.as_ref().err().map(|e| e.0)
            );
            assert!(
                r.is_err() || out == expected,
                "engine and reference differ at {offset:#x}+{len}"
            );
        }
    };
    // The start of the disk, in requests of varying size.
    let mut pos = 0u64;
    while pos < size && budget > READ_BUDGET / 2 {
        let len = 512 + rng.below_lazy(MAX_REQUEST - 512);
        read(&mut img, pos, len, &mut budget, false);
        pos += len;
    }
    // The last bytes, and random ranges over the whole disk and near its
    // start (unaligned, crossing clusters and L2 table spans).
    read(&mut img, size.saturating_sub(4096), 4096, &mut budget, true);
    for i in 0..RANDOM_READS {
        let span = if i % 2 == 0 { size } else { size.min(8 << 20) };
        let offset = rng.below_lazy(span);
        let len = 1 + rng.below_lazy(if i % 3 == 0 { MAX_REQUEST } else { 4096 });
        read(&mut img, offset, len, &mut budget, i < REFERENCE_READS);
    }
    // Beyond the end is refused.
    let mut one = [0u8; 1];
    assert!(matches!(
        img.read_at(&mut one, size),
        Err(Error::OutOfRange { .. })
    ));
    // One range read whole and in pieces must agree.
    if size > 0 {
        let offset = rng.below_lazy(size.min(4 << 20));
        let len = (1 + rng.below_lazy(16 << 10)).min(size - offset) as usize;
        // At most 32 pieces.
        let piece = (1 + rng.below_lazy(5000) as usize).max(len.div_ceil(32));
        check_split_read(&mut img, offset, len, piece);
    }
}

/// A naive reader written from the spec, independent of the engine: one
/// (sub)cluster at a time, every table entry re-read from the file, no
/// caches, no merged runs. [`image`] checks that the engine fails exactly
/// when it does and otherwise returns the same bytes.
struct Reference<'a> {
    img: &'a Image,
    files: &'a [Vec<u8>],
}

/// What one guest (sub)cluster of a layer holds.
enum Held {
    Unallocated,
    Zero,
    Host(u64),
    Compressed(u64),
}

/// Why the naive reader failed (only compared as "failed").
struct Refused(&'static str);

fn be64_at(file: &[u8], offset: u64) -> Result<u64, Refused> {
    let start = usize::try_from(offset).map_err(|_| Refused("offset"))?;
    let bytes = file
        .get(start..start.checked_add(8).ok_or(Refused("offset"))?)
        .ok_or(Refused("entry past end of file"))?;
    Ok(u64::from_be_bytes(
        bytes.try_into().map_err(|_| Refused("entry"))?,
    ))
}

fn file_range(file: &[u8], offset: u64, len: u64) -> Result<&[u8], Refused> {
    let start = usize::try_from(offset).map_err(|_| Refused("offset"))?;
    let len = usize::try_from(len).map_err(|_| Refused("length"))?;
    file.get(start..start.checked_add(len).ok_or(Refused("offset"))?)
        .ok_or(Refused("past end of file"))
}

impl Reference<'_> {
    /// Fills `out` with the guest bytes of layer `depth` (and below) at `pos`.
    fn fill(&self, depth: usize, pos: u64, out: &mut [u8]) -> Result<(), Refused> {
        let Some(layer) = self.img.chain().layer(depth) else {
            out.fill(0);
            return Ok(());
        };
        let file = self.files.get(depth).ok_or(Refused("no file"))?;
        let size = layer.virtual_size();
        let mut done = 0usize;
        while done < out.len() {
            let at = pos + done as u64;
            let rest = (out.len() - done) as u64;
            if at >= size {
                out[done..].fill(0);
                break;
            }
            let crate::format::Layer::Qcow2(q) = layer else {
                let n = rest.min(size - at);
                out[done..done + n as usize].copy_from_slice(file_range(file, at, n)?);
                done += n as usize;
                continue;
            };
            let version = self.img.header(depth).ok_or(Refused("no header"))?.version;
            let g = q.geometry();
            let cb = g.cluster_bits();
            let cluster = 1u64 << cb;
            let ext = g.extended_l2();
            let sc_bits = if ext { cb - 5 } else { cb };
            let sc_size = 1u64 << sc_bits;
            let n = rest.min(sc_size - at % sc_size).min(size - at);
            let piece = &mut out[done..done + n as usize];
            let entry_bits = if ext { 4 } else { 3 };
            let l1_index = at >> (cb + cb - entry_bits);
            let held = if l1_index >= u64::from(q.l1_size()) {
                Held::Unallocated
            } else {
                let l1e = be64_at(file, q.l1_table_offset() + 8 * l1_index)?;
                if l1e & 0x7f00_0000_0000_01ff != 0 {
                    return Err(Refused("L1 reserved bits"));
                }
                let l2 = l1e & 0x00ff_ffff_ffff_fe00;
                if l2 == 0 {
                    Held::Unallocated
                } else if l2 % cluster != 0 {
                    return Err(Refused("L2 table misaligned"));
                } else if l2 + cluster > file.len() as u64 {
                    return Err(Refused("L2 table past end of file"));
                } else {
                    let index = (at >> cb) & ((1 << (cb - entry_bits)) - 1);
                    let at_entry = l2 + (index << entry_bits);
                    let raw = be64_at(file, at_entry)?;
                    let bitmap = if ext { be64_at(file, at_entry + 8)? } else { 0 };
                    let offset = raw & 0x00ff_ffff_ffff_fe00;
                    let in_cluster = at % cluster;
                    if raw & (1 << 62) != 0 {
                        Held::Compressed(raw)
                    } else if raw & 0x3f00_0000_0000_01fe != 0 || offset % cluster != 0 {
                        return Err(Refused("L2 reserved bits or misaligned"));
                    } else if ext {
                        let alloc = bitmap & 0xffff_ffff;
                        let zero = bitmap >> 32;
                        if alloc & zero != 0 || (offset == 0 && alloc != 0) {
                            return Err(Refused("subcluster bitmap"));
                        }
                        let sc = in_cluster >> sc_bits;
                        if zero >> sc & 1 != 0 {
                            Held::Zero
                        } else if alloc >> sc & 1 != 0 {
                            Held::Host(offset + in_cluster)
                        } else {
                            Held::Unallocated
                        }
                    } else if raw & 1 != 0 {
                        if version == 2 {
                            return Err(Refused("zero flag in version 2"));
                        }
                        Held::Zero
                    } else if offset == 0 {
                        Held::Unallocated
                    } else {
                        Held::Host(offset + in_cluster)
                    }
                }
            };
            match held {
                Held::Unallocated => self.fill(depth + 1, at, piece)?,
                Held::Zero => piece.fill(0),
                Held::Host(h) => piece.copy_from_slice(file_range(file, h, n)?),
                Held::Compressed(raw) => {
                    let x = 70 - cb;
                    let desc = raw & ((1 << 62) - 1);
                    let host = desc & ((1 << x) - 1);
                    let sectors = (desc >> x) + 1;
                    if host >> 56 != 0 {
                        return Err(Refused("compressed offset bits"));
                    }
                    if host >= file.len() as u64 {
                        return Err(Refused("compressed data past end of file"));
                    }
                    let len = (sectors * 512 - host % 512).min(file.len() as u64 - host);
                    let input = file_range(file, host, len)?;
                    let mut cluster_data = vec![0u8; cluster as usize];
                    let got = HostDecompressor::default()
                        .decompress(q.compression(), input, &mut cluster_data)
                        .map_err(|_| Refused("decompression"))?;
                    if got != cluster_data.len() {
                        return Err(Refused("short cluster"));
                    }
                    let start = (at % cluster) as usize;
                    piece.copy_from_slice(&cluster_data[start..start + n as usize]);
                }
            }
            done += n as usize;
        }
        Ok(())
    }
}

/// `map_in_table` over a fuzzed L2 table, cross-checked against stepping
/// through the same range with `map_entry`. Input: byte 0 geometry
/// (cluster bits, extended L2, version), bytes 1-8 the guest offset,
/// 9-16 the maximum length, the rest the table (zero padded to a cluster).
pub fn l2_table(data: &[u8]) {
    if data.len() > MAX_INPUT || data.is_empty() {
        return;
    }
    let g = data[0];
    let cluster_bits =
        MIN_CLUSTER_BITS + u32::from(g & 15) % (MAX_CLUSTER_BITS - MIN_CLUSTER_BITS + 1);
    let extended = g & 0x10 != 0;
    let version = if g & 0x20 != 0 { 2 } else { 3 };
    let Ok(geo) = Geometry::for_version(version, cluster_bits, extended) else {
        return;
    };
    let offset = u64_le(data, 1);
    let max_len = u64_le(data, 9) % (4 << 20);
    let mut table = vec![0u8; geo.cluster_len()];
    if let Some(src) = data.get(17..) {
        let n = src.len().min(table.len());
        table[..n].copy_from_slice(&src[..n]);
    }
    let m = match crate::format::table::map_in_table(&geo, &table, offset, max_len) {
        Ok(m) => m,
        Err(e) => return touch_error(&e),
    };
    assert!(m.len <= max_len, "{m:?} longer than {max_len}");
    if max_len > 0 {
        assert!(m.len > 0, "empty mapping");
    }
    let in_cluster = geo.offset_in_cluster(offset);
    if let MappingKind::Compressed { .. } = m.kind {
        assert!(in_cluster + m.len <= geo.cluster_size());
    }
    // The run never leaves this L2 table's span.
    let span = 1u64 << geo.l1_span_bits();
    assert!(offset % span + m.len <= span, "{m:?} leaves the L2 span");
    // Walk the same run entry by entry.
    let mut done = 0u64;
    while done < m.len {
        let Some(at) = offset.checked_add(done) else {
            panic!("run past u64 at {offset:#x}+{done}");
        };
        let index = geo.l2_index(at);
        let (raw, bitmap) = crate::format::table::l2_table_entry(&geo, &table, index)
            .expect("entry inside the table");
        let e = map_entry(&geo, raw, bitmap, at, m.len - done)
            .expect("entries inside a run map without error");
        assert!(e.len > 0);
        let same = match (m.kind, e.kind) {
            (MappingKind::Unallocated, MappingKind::Unallocated) => true,
            (MappingKind::Zero, MappingKind::Zero) => true,
            (MappingKind::Data { host_offset: a }, MappingKind::Data { host_offset: b }) => {
                a.checked_add(done) == Some(b)
            }
            (
                MappingKind::Compressed { descriptor: a },
                MappingKind::Compressed { descriptor: b },
            ) => a == b,
            _ => false,
        };
        assert!(same, "run {m:?} has {e:?} at +{done}");
        done += e.len;
    }
    assert_eq!(done, m.len);
}

/// `Storage` over one in-memory file.
struct Mem<'a>(&'a [u8]);

impl Storage for Mem<'_> {
    fn read_at(&self, layer: usize, buf: &mut [u8], offset: u64) -> crate::format::Result<()> {
        assert_eq!(layer, 0, "only one layer here");
        let start = usize::try_from(offset).map_err(|_| Error::Io(5))?;
        let end = start.checked_add(buf.len()).ok_or(Error::Io(5))?;
        buf.copy_from_slice(self.0.get(start..end).ok_or(Error::Io(5))?);
        Ok(())
    }
}

/// Compressed descriptor decoding and loading. Input: byte 0 cluster bits
/// and compression type, bytes 1-8 the raw L2 entry, the rest the file the
/// descriptor points into.
pub fn compressed(data: &[u8]) {
    if data.len() > MAX_INPUT || data.is_empty() {
        return;
    }
    let cluster_bits =
        MIN_CLUSTER_BITS + u32::from(data[0] & 15) % (MAX_CLUSTER_BITS - MIN_CLUSTER_BITS + 1);
    let kind = if data[0] & 0x80 != 0 {
        CompressionType::Zstd
    } else {
        CompressionType::Deflate
    };
    let raw = u64_le(data, 1);
    let file = data.get(9..).unwrap_or(&[]);
    let file_len = file.len() as u64;
    // Any cluster_bits outside 9..=21 is refused.
    assert!(CompressedDescriptor::decode(u32::from(data[0]) + 22, raw).is_err());
    let d = match CompressedDescriptor::decode(cluster_bits, raw) {
        Ok(d) => d,
        Err(e) => return touch_error(&e),
    };
    assert!(d.host_offset() < 1 << 56);
    assert!(d.max_len() >= 1);
    assert!(d.max_len() <= max_compressed_len(cluster_bits) as u64);
    let desc_bits = raw & ((1 << 62) - 1);
    assert_eq!(
        CompressedDescriptor::encode(cluster_bits, d.host_offset(), d.additional_sectors()),
        Some(desc_bits)
    );
    let (offset, len) = match d.read_range(file_len) {
        Ok(r) => r,
        Err(e) => return touch_error(&e),
    };
    assert_eq!(offset, d.host_offset());
    assert!(len >= 1 && len <= d.max_len() && offset + len <= file_len);
    let cluster = 1usize << cluster_bits;
    let request = CompressedRead {
        layer: 0,
        host_offset: offset,
        len: len as usize,
        compression: kind,
        cluster_size: cluster,
    };
    // Only whole clusters are decoded, whatever a read needs.
    assert_eq!(request.prefix_len(), cluster);
    assert_eq!(request.decode_len(cluster / 2), cluster);
    let mut input = vec![0u8; max_compressed_len(cluster_bits)];
    let mut output = vec![0u8; cluster];
    let whole = request.load(
        &Mem(file),
        &mut HostDecompressor::default(),
        &mut input,
        &mut output,
    );
    if let Err(e) = &whole {
        touch_error(e);
    }
    // A successful load agrees with the reference decoder (which may stop
    // short of a deflate cluster when damage follows it).
    if whole.is_ok() {
        let stream = &file[offset as usize..][..len as usize];
        let reference = reference_decode(kind, stream, cluster);
        assert!(
            reference[..] == output[..reference.len()],
            "{kind:?} cluster differs from reference"
        );
    }
    // Wrong buffer sizes are refused, not overrun: any shorter output (a
    // length taken from the input), and a short input buffer.
    let short = file.len().wrapping_mul(2_654_435_761) % cluster;
    assert!(matches!(
        request.load(
            &Mem(file),
            &mut HostDecompressor::default(),
            &mut input,
            &mut output[..short]
        ),
        Err(Error::BufferSize { .. })
    ));
    let short_in = request.len - 1;
    assert!(request
        .load(
            &Mem(file),
            &mut HostDecompressor::default(),
            &mut input[..short_in],
            &mut output
        )
        .is_err());
}

/// Reads what a reference decoder produces from `input`, at most `limit`
/// bytes, stopping at the first error.
fn reference_decode(kind: CompressionType, input: &[u8], limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut reader: std::boxed::Box<dyn Read + '_> = match kind {
        CompressionType::Deflate => std::boxed::Box::new(flate2::read::DeflateDecoder::new(input)),
        CompressionType::Zstd => match zstd::stream::read::Decoder::with_buffer(input) {
            Ok(d) => std::boxed::Box::new(d.single_frame()),
            Err(_) => return out,
        },
    };
    while out.len() < limit {
        let want = buf.len().min(limit - out.len());
        match reader.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// Decompression of a fuzzed stream into one cluster. Input: byte 0 the
/// compression type (bit 7) and cluster bits, the rest the stream. Whatever
/// the host decompressor produces must be a prefix of what a reference
/// decoder (flate2/zstd `Read` adapters) produces.
pub fn decompress(data: &[u8]) {
    if data.len() > MAX_INPUT || data.is_empty() {
        return;
    }
    let cluster_bits =
        MIN_CLUSTER_BITS + u32::from(data[0] & 15) % (MAX_CLUSTER_BITS - MIN_CLUSTER_BITS + 1);
    let kind = if data[0] & 0x80 != 0 {
        CompressionType::Zstd
    } else {
        CompressionType::Deflate
    };
    let input = &data[1..];
    let cluster = 1usize << cluster_bits;
    let mut output = vec![0u8; cluster];
    let mut d = Recording::default();
    let result = decompress_cluster(&mut d, kind, input, &mut output);
    assert_eq!(result.is_ok(), d.got == Some(Ok(cluster)), "{result:?}");
    if let Err(e) = result {
        touch_error(&e);
    }
    match d.got.expect("decompressor called") {
        Ok(n) => {
            assert!(n <= cluster, "{n} bytes into {cluster}");
            let reference = reference_decode(kind, input, cluster);
            if n == cluster || kind == CompressionType::Deflate {
                // Deflate: the reference may stop early at a truncated end;
                // what both produced must agree.
                let common = n.min(reference.len());
                assert!(
                    output[..common] == reference[..common],
                    "{kind:?} output differs from reference"
                );
            }
            if kind == CompressionType::Zstd {
                // A complete zstd frame: the reference agrees exactly.
                assert_eq!(n, reference.len().min(cluster), "zstd length");
                assert!(output[..n] == reference[..n]);
            }
        }
        Err(e) => touch_error(&e),
    }
}

/// The host decompressor, recording what it returned.
#[derive(Default)]
struct Recording {
    got: Option<crate::format::Result<usize>>,
}

impl Decompressor for Recording {
    fn decompress(
        &mut self,
        kind: CompressionType,
        input: &[u8],
        output: &mut [u8],
    ) -> crate::format::Result<usize> {
        let r = HostDecompressor::default().decompress(kind, input, output);
        self.got = Some(r);
        r
    }
}

/// Most snapshot entries looked up again by id and name per input (each
/// lookup walks the table from its start).
const SNAPSHOT_LOOKUPS: u32 = 32;

/// The snapshot table walk over a whole image file in memory: the walk
/// ends within `nb_snapshots` steps, entries are contiguous, and every entry
/// found is found again by its id and name.
pub fn snapshots(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let buf = &data[..data.len().min(HEADER_READ_LEN)];
    let h = match Header::parse(buf) {
        Ok(h) => h,
        Err(e) => return touch_error(&e),
    };
    let file_len = data.len() as u64;
    let storage = Mem(data);
    // The whole walk first: is the table clean?
    let mut cursor = SnapshotCursor::new(&h, file_len);
    let mut steps = 0u32;
    let mut next_offset = h.snapshots_offset;
    let clean = loop {
        match cursor.next_snapshot(&storage, 0) {
            Ok(Some(snap)) => {
                assert_eq!(snap.index, steps);
                assert_eq!(snap.entry_offset, next_offset, "entries are contiguous");
                assert!(snap.entry_len >= 40 && snap.entry_len % 8 == 0);
                next_offset = snap.entry_offset + snap.entry_len;
                steps += 1;
                assert!(steps <= h.nb_snapshots);
            }
            Ok(None) => break true,
            Err(e) => {
                touch_error(&e);
                break false;
            }
        }
    };
    assert!(!clean || steps == h.nb_snapshots);
    // Then look the first entries up again.
    let mut cursor = SnapshotCursor::new(&h, file_len);
    while let Ok(Some(snap)) = cursor.next_snapshot(&storage, 0) {
        if snap.index >= SNAPSHOT_LOOKUPS {
            break;
        }
        let mut id = vec![0u8; usize::from(snap.id.len)];
        let mut name = vec![0u8; usize::from(snap.name.len)];
        storage
            .read_at(0, &mut id, snap.id.offset)
            .expect("id inside the file");
        storage
            .read_at(0, &mut name, snap.name.offset)
            .expect("name inside the file");
        assert!(span_equals(&storage, 0, snap.id, &id).expect("id readable"));
        assert!(span_equals(&storage, 0, snap.name, &name).expect("name readable"));
        let by_id = find_snapshot(&storage, 0, &h, file_len, SnapshotSelector::Id(&id))
            .expect("a walked snapshot is found by id");
        assert!(by_id.index <= snap.index);
        let by_name = find_snapshot(&storage, 0, &h, file_len, SnapshotSelector::Name(&name))
            .expect("a walked snapshot is found by name");
        assert!(by_name.index <= snap.index);
        // By id first over the whole table (so only for a few entries):
        // found if the table is clean.
        if snap.index < 4 {
            let either =
                find_snapshot(&storage, 0, &h, file_len, SnapshotSelector::IdOrName(&name));
            assert!(!clean || either.is_ok(), "IdOrName({name:?}): {either:?}");
        }
        match Qcow2Layer::from_snapshot(&h, &snap, file_len) {
            Ok(q) => {
                assert!(q.l1_table_offset() + q.l1_table_bytes() as u64 <= file_len);
                // Read with the image's size, whatever the entry records
                // (`Qcow2Layer::from_snapshot`).
                assert_eq!(q.size(), h.size);
            }
            Err(e) => touch_error(&e),
        }
    }
}

//! Fuzz harnesses (feature `std`), shared by the `cargo fuzz` targets in
//! `fuzz/`, so a saved crash input replays exactly what the fuzzer ran.
//!
//! Each harness takes arbitrary bytes, drives one part of the format
//! logic and checks invariants with `assert!`: any panic is a finding.
//! Errors returned by the format logic are expected. Every harness bounds
//! its work: inputs longer than [`MAX_INPUT`] are ignored and reads of the
//! virtual disk are limited to [`READ_BUDGET`] bytes per input.
//!
//! | harness | what it drives |
//! | --- | --- |
//! | [`image`] | `Image::from_memory` over 1..=4 files (sparse or descriptor and extents), bounded reads, cross-checked with a naive reader |
//! | [`descriptor`] | `Descriptor::parse` and its checks over arbitrary text |
//! | [`grain`] | `GrainRead::load` (markers or not) over fuzzed file bytes, against flate2's `ZlibDecoder` |

use std::cell::RefCell;
use std::collections::HashMap;
use std::format;
use std::io::Read;
use std::vec;
use std::vec::Vec;

use crate::format::header::SECTOR;
use crate::format::{
    Descriptor, Disk, Error, ExtentKind, ExtentType, GrainRead, SparseExtent, Storage, MAX_EXTENTS,
};
use crate::host::{HostDecompressor, Image};

/// Inputs longer than this are ignored by every harness.
pub const MAX_INPUT: usize = 4 << 20;
/// Most bytes of the virtual disk one [`image`] input reads.
pub const READ_BUDGET: u64 = 256 << 10;
/// Longest single read request of [`image`].
const MAX_REQUEST: u64 = 32 << 10;
/// Number of random read requests of [`image`].
const RANDOM_READS: usize = 24;

/// A harness: takes one fuzz input, panics on a finding.
pub use format_host::fuzz::Harness;

/// All harnesses by name (the `cargo fuzz` target names).
pub const TARGETS: &[(&str, Harness)] = &[
    ("vmdk", image),
    ("vmdk_descriptor", descriptor),
    ("vmdk_grain", grain),
];

/// The harness called `name`, if any.
pub fn target(name: &str) -> Option<Harness> {
    format_host::fuzz::find(TARGETS, name)
}

use format_host::fuzz::Rng;

/// Exercises `kind`, `describe` and `Display` of an error.
fn touch_error(e: &Error) {
    assert!(crate::host::errno(e) > 0, "errno of {e:?}");
    let text = format!("{e}");
    assert!(text.starts_with(e.describe()), "{text}");
}

/// Splits the [`image`] input into files: byte 0 bits 0-1 are the number
/// of files minus one; each file but the last is a little-endian `u32`
/// length and its bytes, the last file is the rest.
fn split_files(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let (&mode, mut rest) = data.split_first()?;
    let count = usize::from(mode & 3) + 1;
    let mut files = Vec::with_capacity(count);
    for _ in 1..count {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        rest = &rest[4..];
        let len = len.min(rest.len());
        files.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    files.push(rest.to_vec());
    Some(files)
}

/// A stream's output, `None` if it does not decode.
type Inflated = Option<Vec<u8>>;

/// A reader written from the spec, one grain piece at a time, with no
/// caches and no merged runs, over the same files and parsed extents.
struct Reference<'a> {
    disk: &'a Disk,
    /// The file of each extent (`None` for ZERO extents).
    files: Vec<Option<&'a [u8]>>,
    /// Streams already inflated, by their bytes' position (decoding is
    /// deterministic; this only saves time).
    inflated: RefCell<HashMap<(usize, usize, u64), Inflated>>,
}

impl Reference<'_> {
    fn bytes(file: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        file.get(start..start.checked_add(usize::try_from(len).ok()?)?)
    }

    fn le32(file: &[u8], offset: u64) -> Option<u32> {
        let b = Self::bytes(file, offset, 4)?;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }

    /// The bytes of sparse extent `s` at `rel` for `len` bytes inside one
    /// grain; `None` for any error.
    fn sparse(&self, s: &SparseExtent, file: &[u8], rel: u64, len: u64) -> Option<Vec<u8>> {
        let g = s.grain_len() as u64;
        let grain = rel / g;
        let gtes = u64::from(s.gtes_per_gt());
        let gde = Self::le32(file, s.gd_offset() + 4 * (grain / gtes))?;
        if gde == 0 {
            return Some(vec![0; len as usize]);
        }
        let gt = u64::from(gde) * SECTOR;
        // The whole table must be in the file, as the engine checks.
        Self::bytes(file, gt, gtes * 4)?;
        let gte = Self::le32(file, gt + 4 * (grain % gtes))?;
        if gte == 0 || (gte == 1 && s.zero_grain()) {
            return Some(vec![0; len as usize]);
        }
        let at = u64::from(gte) * SECTOR;
        let in_grain = rel % g;
        if !s.compressed() {
            return Self::bytes(file, at + in_grain, len).map(<[u8]>::to_vec);
        }
        let stream = if s.markers() {
            let size = u64::from(Self::le32(file, at + 8)?);
            if size == 0 || size > 2 * g - 12 {
                return None;
            }
            Self::bytes(file, at + 12, size)?
        } else {
            let avail = (file.len() as u64).checked_sub(at).filter(|&n| n > 0)?;
            Self::bytes(file, at, g.min(avail))?
        };
        let key = (stream.as_ptr() as usize, stream.len(), g);
        let mut out = self
            .inflated
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| inflate_reference(stream, g))
            .clone()?;
        let needed = g.min(s.size() - (rel - in_grain));
        if (out.len() as u64) < needed {
            return None;
        }
        out.resize(g as usize, 0);
        Self::bytes(&out, in_grain, len).map(<[u8]>::to_vec)
    }

    fn read(&self, offset: u64, len: u64) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < offset + len {
            let (i, e, start) = self.disk.find(pos)?;
            let rel = pos - start;
            let file = self.files.get(i).copied().flatten();
            let n = match e.kind() {
                ExtentKind::Sparse(s) => {
                    let g = s.grain_len() as u64;
                    let n = (offset + len - pos).min(g - rel % g);
                    out.extend(self.sparse(s, file?, rel, n)?);
                    n
                }
                ExtentKind::Flat { offset: at, .. } => {
                    let n = (offset + len - pos).min(e.size() - rel).min(4096);
                    out.extend_from_slice(Self::bytes(file?, at + rel, n)?);
                    n
                }
                ExtentKind::Zero => {
                    let n = (offset + len - pos).min(e.size() - rel);
                    out.resize(out.len() + n as usize, 0);
                    n
                }
            };
            pos += n;
        }
        Some(out)
    }
}

/// What `flate2`'s `Read` decoder makes of a zlib stream: its whole
/// output if the stream ends cleanly (checksum included) within `limit`
/// bytes, else `None` (the engine's contract).
fn inflate_reference(stream: &[u8], limit: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(stream)
        .take(limit + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() as u64 <= limit).then_some(out)
}

/// Opens the files as an image (a sparse file, or a descriptor and its
/// extents) and reads a bounded sample of the virtual disk: the start in
/// varying requests, the end, random ranges, each compared with a naive
/// reader (same bytes, or both fail); one range whole and in pieces.
pub fn image(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Some(files) = split_files(data) else {
        return;
    };
    let mut img = match Image::from_memory(files.clone()) {
        Ok(img) => img,
        Err(e) => return touch_error(&e),
    };
    let disk = *img.disk();
    assert!(disk.len() <= MAX_EXTENTS && !disk.is_empty());
    // Which file serves each extent: the image itself for a sparse file,
    // else the following files in order, ZERO extents taking none.
    let mut next = 1;
    let sparse_file = img
        .descriptor()
        .is_none_or(|(d, _)| !d.create_type.is_descriptor_file());
    let extent_files: Vec<Option<&[u8]>> = (0..disk.len())
        .map(|i| match disk.extent(i).map(|e| *e.kind()) {
            Some(ExtentKind::Zero) => None,
            _ if sparse_file => files.first().map(Vec::as_slice),
            _ => {
                next += 1;
                files.get(next - 1).map(Vec::as_slice)
            }
        })
        .collect();
    let reference = Reference {
        disk: &disk,
        files: extent_files,
        inflated: RefCell::new(HashMap::new()),
    };
    let size = img.size();
    let mut rng = Rng::from_bytes(data);
    let mut budget = READ_BUDGET;
    let read = |img: &mut Image, offset: u64, len: u64, budget: &mut u64| {
        let len = len.min(*budget).min(size.saturating_sub(offset));
        if len == 0 {
            return;
        }
        *budget -= len;
        let mut out = vec![0u8; len as usize];
        let r = img.read_at(&mut out, offset);
        if let Err(e) = r {
            touch_error(&e);
            assert!(
                !matches!(e, Error::Internal | Error::BufferSize { .. }),
                "{e:?} at {offset:#x}+{len}"
            );
        }
        let naive = reference.read(offset, len);
        assert_eq!(
            r.is_ok(),
            naive.is_some(),
            "engine {r:?} and reference disagree at {offset:#x}+{len}"
        );
        if let Some(n) = naive {
            assert!(n == out, "engine and reference differ at {offset:#x}+{len}");
        }
    };
    let mut pos = 0u64;
    while pos < size && budget > READ_BUDGET / 2 {
        let len = 512 + rng.below(MAX_REQUEST - 512);
        read(&mut img, pos, len, &mut budget);
        pos += len;
    }
    read(&mut img, size.saturating_sub(4096), 4096, &mut budget);
    for i in 0..RANDOM_READS {
        let span = if i % 2 == 0 { size } else { size.min(8 << 20) };
        let offset = rng.below(span);
        let len = 1 + rng.below(if i % 3 == 0 { MAX_REQUEST } else { 4096 });
        read(&mut img, offset, len, &mut budget);
    }
    let mut one = [0u8; 1];
    assert!(matches!(
        img.read_at(&mut one, size),
        Err(Error::OutOfRange { .. })
    ));
    // One range whole and in odd pieces: both agree.
    if size > 0 {
        let offset = rng.below(size);
        let len = (1 + rng.below(16 << 10)).min(size - offset) as usize;
        let piece = 1 + rng.below(5000) as usize;
        let mut whole = vec![0u8; len];
        let whole_ok = img.read_at(&mut whole, offset).is_ok();
        let mut parts = vec![0u8; len];
        let mut parts_ok = true;
        for (i, chunk) in parts.chunks_mut(piece).enumerate() {
            parts_ok &= img.read_at(chunk, offset + (i * piece) as u64).is_ok();
        }
        assert_eq!(whole_ok, parts_ok, "whole and pieces at {offset:#x}+{len}");
        assert!(
            !whole_ok || whole == parts,
            "pieces differ at {offset:#x}+{len}"
        );
    }
}

/// Descriptor parsing over arbitrary text: extents within bounds, spans
/// inside the text, sizes adding up; the checks never panic.
pub fn descriptor(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let d = match Descriptor::parse(data) {
        Ok(d) => d,
        Err(e) => return touch_error(&e),
    };
    assert!((1..=3).contains(&d.version));
    assert!(d.extent_count() <= MAX_EXTENTS);
    let mut sectors = 0u64;
    for e in d.extents() {
        assert!(e.sectors > 0);
        sectors += e.sectors;
        match e.name {
            Some(span) => {
                let name = span.get(data).expect("name inside the text");
                assert!(!name.is_empty() && !name.contains(&b'"') && !name.contains(&0));
                assert!(e.kind != ExtentType::Zero);
            }
            None => assert_eq!(e.kind, ExtentType::Zero),
        }
    }
    assert_eq!(sectors, d.sectors());
    if let Some(p) = d.parent {
        assert!(p.get(data).is_some());
    }
    for r in [d.check_file(data), d.check_embedded()] {
        if let Err(e) = r {
            touch_error(&e);
        }
    }
}

/// One file in memory, as extent 0.
struct Bytes<'a>(&'a [u8]);

impl Storage for Bytes<'_> {
    fn read_at(&self, _extent: usize, buf: &mut [u8], offset: u64) -> crate::Result<()> {
        let src = Reference::bytes(self.0, offset, buf.len() as u64).ok_or(Error::Io(5))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A compressed grain: byte 0 bits 0-3 the grain size (512 << n, n up to
/// 11), bit 7 markers; byte 1 how short the last grain is (in 256-byte
/// steps); the rest is the file, the grain at offset 0.
pub fn grain(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let (Some(&mode), Some(&short)) = (data.first(), data.get(1)) else {
        return;
    };
    let file = &data[2..];
    let grain_len = 512usize << (mode & 15).min(11);
    let needed = grain_len.saturating_sub(usize::from(short) * 256).max(1);
    let request = GrainRead {
        extent: 0,
        grain_offset: 0,
        markers: mode & 0x80 != 0,
        grain_len,
        needed,
        file_len: file.len() as u64,
    };
    let storage = Bytes(file);
    let mut input = vec![0u8; crate::format::grain::max_compressed_len(grain_len)];
    let mut output = vec![0xa5u8; grain_len];
    let r = request.load(&storage, &mut HostDecompressor, &mut input, &mut output);
    let range = request.stream_range(&storage);
    match r {
        Ok(()) => {
            let (at, len) = range.expect("a loaded grain has a stream range");
            assert!(at as usize + len <= file.len());
            let stream = &file[at as usize..at as usize + len];
            let reference =
                inflate_reference(stream, grain_len as u64).expect("the reference decodes it");
            assert!(reference.len() >= needed, "loaded a short grain");
            assert!(output[..reference.len()] == reference[..]);
            assert!(output[reference.len()..].iter().all(|&b| b == 0));
        }
        Err(e) => touch_error(&e),
    }
    // Wrong buffer sizes are refused, never a panic.
    let mut small = vec![0u8; grain_len - 1];
    assert!(request
        .load(&storage, &mut HostDecompressor, &mut input, &mut small)
        .is_err());
}

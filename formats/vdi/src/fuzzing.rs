//! Fuzz harness (feature `std`), called by the `vdi` target in `fuzz/`,
//! so a saved crash input replays exactly what the fuzzer ran.
//!
//! [`image`] takes a whole image file, opens it with
//! `Image::from_memory` and reads a bounded sample of the virtual disk,
//! each read cross-checked with a naive reader written from the format
//! description (one block at a time, straight from the bytes). Errors
//! returned by the format logic are expected; a panic is a finding.

use std::format;
use std::vec;
use std::vec::Vec;

use crate::format::header::{Header, HEADER_LEN};
use crate::format::map::{BLOCK_UNALLOCATED, BLOCK_ZERO};
use crate::format::Error;
use crate::host::Image;

/// Inputs longer than this are ignored.
pub const MAX_INPUT: usize = 4 << 20;
/// Most bytes of the virtual disk one input reads.
pub const READ_BUDGET: u64 = 256 << 10;
/// Longest single read request.
const MAX_REQUEST: u64 = 64 << 10;

/// A harness: takes one fuzz input, panics on a finding.
pub use format_host::fuzz::Harness;

/// All harnesses by name (the `cargo fuzz` target names).
pub const TARGETS: &[(&str, Harness)] = &[("vdi", image)];

/// The harness called `name`, if any.
pub fn target(name: &str) -> Option<Harness> {
    format_host::fuzz::find(TARGETS, name)
}

/// The naive reader: `len` bytes at `offset`, block by block.
fn reference(data: &[u8], h: &Header, offset: u64, len: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let b = u64::from(h.block_size);
    let mut pos = offset;
    while pos < offset + len {
        let block = pos / b;
        let n = (offset + len - pos).min(b - pos % b);
        let at = usize::try_from(h.bmap_offset() + 4 * block).ok()?;
        let entry = u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?);
        if entry == BLOCK_UNALLOCATED || entry == BLOCK_ZERO {
            out.resize(out.len() + n as usize, 0);
        } else {
            let host = u64::from(h.offset_data) + u64::from(entry) * b + pos % b;
            let start = usize::try_from(host).ok()?;
            out.extend_from_slice(data.get(start..start.checked_add(n as usize)?)?);
        }
        pos += n;
    }
    Some(out)
}

/// Opens the input as a VDI image and reads the start of the disk, its
/// end and random ranges, each compared with the naive reader (the same
/// bytes, or both fail); one range whole and in pieces agrees.
pub fn image(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let mut img = match Image::from_memory(data.to_vec()) {
        Ok(img) => img,
        Err(e) => {
            assert!(crate::host::errno(&e) > 0);
            assert!(format!("{e}").starts_with(e.describe()));
            return;
        }
    };
    let h = *img.header();
    assert_eq!(Header::parse(&data[..HEADER_LEN], data.len() as u64), Ok(h));
    assert_eq!(img.block_map().len(), h.blocks_in_image as usize);
    let size = img.size();
    assert!(size <= u64::from(h.blocks_in_image) << 20 && size % 512 == 0);
    let mut seed = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |a, &b| {
        (a ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let mut below = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        if n == 0 {
            0
        } else {
            seed % n
        }
    };
    let mut budget = READ_BUDGET;
    let mut ranges = vec![(0, MAX_REQUEST), (size.saturating_sub(4096), 4096)];
    for i in 0..16 {
        let len = 1 + below(if i % 2 == 0 { MAX_REQUEST } else { 4096 });
        ranges.push((below(size), len));
    }
    for (offset, len) in ranges {
        let len = len.min(budget).min(size.saturating_sub(offset));
        if len == 0 {
            continue;
        }
        budget -= len;
        let mut out = vec![0u8; len as usize];
        let r = img.read_at(&mut out, offset);
        if let Err(e) = r {
            assert!(!matches!(e, Error::Internal), "{e:?} at {offset:#x}+{len}");
        }
        let naive = reference(data, &h, offset, len);
        assert_eq!(r.is_ok(), naive.is_some(), "{r:?} at {offset:#x}+{len}");
        if let Some(n) = naive {
            assert!(n == out, "engine and reference differ at {offset:#x}+{len}");
        }
    }
    let mut one = [0u8; 1];
    assert!(matches!(
        img.read_at(&mut one, size),
        Err(Error::OutOfRange { .. })
    ));
    if size > 0 {
        let offset = below(size);
        let len = (1 + below(3 << 20)).min(size - offset).min(budget.max(1)) as usize;
        let piece = 1 + below(300_000) as usize;
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

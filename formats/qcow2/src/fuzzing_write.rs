//! The `write` fuzz harness (feature `std`): the write engine driven by
//! fuzzed operations, judged by a model and a refcount checker.
//!
//! Input: byte 0 bit 7 chooses the image. Clear: a fresh image built here
//! ([`fresh_image`]) from byte 0 bits 0-3 (cluster bits - 9, at most 16),
//! bit 4 (extended L2), bit 5 (version 2), byte 1 bits 0-2 (refcount
//! order, 4 on version 2) and byte 2 (size: `(n + 1) * 64 KiB`); the
//! operations then start at byte 3. Set: bytes 1-4 are a little-endian
//! length, followed by that many bytes of an arbitrary image file, then
//! the operations. Each operation is 8 bytes: byte 0 the kind (bits 0-1:
//! write, write-zeroes, discard, flush; bit 2 unmap), bytes 1-4 the
//! offset, bytes 5-7 the length (both reduced into the disk); at most
//! [`MAX_OPS`] operations covering [`WRITE_BUDGET`] bytes together.
//!
//! Checks, over a [`SimFile`]: nothing panics and the engine never
//! reports [`Error::Internal`] or a buffer-size error. On a fresh image
//! every operation must succeed; after a close the host reader must
//! read exactly the model (writes applied to a copy of the disk), and
//! [`check_refcounts`] must find every refcount equal to the references
//! (no corruption, no leak) and COPIED set exactly on refcount 1.

use std::collections::HashMap;
use std::format;
use std::string::String;
use std::vec;
use std::vec::Vec;

use crate::format::header::Header;
use crate::format::refcount::{RefcountGeometry, REFCOUNT_TABLE_OFFSET_MASK};
use crate::format::table::{decode_l1_entry, decode_l2_entry, l2_table_entry, FLAG_COPIED};
use crate::format::{Error, L2Entry};
use crate::host::Image;
use crate::host_write::{SimFile, WritableImage};

/// Most operations one input runs.
pub const MAX_OPS: usize = 64;
/// Most bytes all operations of one input cover together (operations
/// past it are skipped): with 512-byte clusters every cluster costs an
/// overlap check over the L1 and refcount tables.
pub const WRITE_BUDGET: u64 = 2 << 20;

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// A new, empty qcow2 image: header, refcount table, one refcount block,
/// the L1 table (as `qemu-img create` lays them out).
pub fn fresh_image(
    version: u32,
    cluster_bits: u32,
    extended: bool,
    refcount_order: u32,
    size: u64,
) -> Vec<u8> {
    let cs = 1usize << cluster_bits;
    let l2_bits = cluster_bits - if extended { 4 } else { 3 };
    let l1_size = size.div_ceil(1u64 << (cluster_bits + l2_bits)).max(1);
    let l1_clusters = (l1_size as usize * 8).div_ceil(cs);
    let clusters = 3 + l1_clusters;
    let mut img = vec![0u8; clusters * cs];
    put(&mut img, 0, &0x5146_49fbu32.to_be_bytes());
    put(&mut img, 4, &version.to_be_bytes());
    put(&mut img, 20, &cluster_bits.to_be_bytes());
    put(&mut img, 24, &size.to_be_bytes());
    put(&mut img, 36, &(l1_size as u32).to_be_bytes());
    put(&mut img, 40, &(3 * cs as u64).to_be_bytes());
    put(&mut img, 48, &(cs as u64).to_be_bytes());
    put(&mut img, 56, &1u32.to_be_bytes());
    if version >= 3 {
        let incompat: u64 = if extended { 1 << 4 } else { 0 };
        put(&mut img, 72, &incompat.to_be_bytes());
        put(&mut img, 96, &refcount_order.to_be_bytes());
        put(&mut img, 100, &104u32.to_be_bytes());
    }
    put(&mut img, cs, &(2 * cs as u64).to_be_bytes());
    let rg = RefcountGeometry::new(refcount_order, cluster_bits).expect("refcount order");
    for c in 0..clusters {
        rg.set(&mut img[2 * cs..3 * cs], c, 1).expect("refcount");
    }
    img
}

fn be64(d: &[u8], at: u64) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    Some(u64::from_be_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

/// What `qemu-img check` checks, for images without snapshots: every
/// cluster's refcount equals its references (header, refcount table and
/// blocks, L1, L2 tables, data and compressed clusters), and COPIED is
/// set exactly on L1/L2 entries whose cluster has refcount 1.
pub fn check_refcounts(d: &[u8]) -> Result<(), String> {
    let h = Header::parse(d).map_err(|e| format!("header: {e}"))?;
    let g = h.geometry();
    let cs = g.cluster_size();
    let cb = g.cluster_bits();
    let rg = RefcountGeometry::new(h.refcount_order, h.cluster_bits).map_err(|e| format!("{e}"))?;
    let mut refs: HashMap<u64, u64> = HashMap::new();
    let mut add = |off: u64, len: u64| {
        let mut c = off >> cb;
        while c << cb < off + len {
            *refs.entry(c).or_default() += 1;
            c += 1;
        }
    };
    add(0, cs);
    add(
        h.refcount_table_offset,
        u64::from(h.refcount_table_clusters) * cs,
    );
    add(h.l1_table_offset, u64::from(h.l1_size) * 8);
    let rt_entries = u64::from(h.refcount_table_clusters) * cs / 8;
    let mut blocks = Vec::new();
    for i in 0..rt_entries {
        let e = be64(d, h.refcount_table_offset + 8 * i).unwrap_or(0) & REFCOUNT_TABLE_OFFSET_MASK;
        if e != 0 {
            add(e, cs);
            blocks.push((i, e));
        }
    }
    let refcount = |c: u64| -> Result<u64, String> {
        let (i, entry) = rg.locate(c);
        let Some(&(_, b)) = blocks.iter().find(|(j, _)| *j == i) else {
            return Ok(0);
        };
        let block = d
            .get(b as usize..(b + cs) as usize)
            .ok_or(format!("refcount block {b:#x} past the end"))?;
        rg.get(block, entry).map_err(|e| format!("{e}"))
    };
    let mut copied: Vec<(u64, bool, &str)> = Vec::new();
    for i in 0..u64::from(h.l1_size) {
        let raw = be64(d, h.l1_table_offset + 8 * i).ok_or("L1 past the end")?;
        let Some(l2) = decode_l1_entry(&g, i, raw).map_err(|e| format!("{e}"))? else {
            continue;
        };
        add(l2, cs);
        copied.push((l2, raw & FLAG_COPIED != 0, "L1"));
        let table = d
            .get(l2 as usize..(l2 + cs) as usize)
            .ok_or(format!("L2 table {l2:#x} past the end"))?;
        for j in 0..g.l2_entries() {
            let (raw, bitmap) = l2_table_entry(&g, table, j).map_err(|e| format!("{e}"))?;
            match decode_l2_entry(&g, raw, bitmap).map_err(|e| format!("{e}"))? {
                L2Entry::Compressed(c) => {
                    add(c.host_offset(), c.max_len());
                    if raw & FLAG_COPIED != 0 {
                        return Err(format!("COPIED on compressed entry {raw:#x}"));
                    }
                }
                L2Entry::Data { host_offset }
                | L2Entry::Subclusters {
                    host_offset: Some(host_offset),
                    ..
                } => {
                    add(host_offset, cs);
                    copied.push((host_offset, raw & FLAG_COPIED != 0, "L2"));
                }
                L2Entry::Zero if raw & 0x00ff_ffff_ffff_fe00 != 0 => {
                    let host_offset = raw & 0x00ff_ffff_ffff_fe00;
                    add(host_offset, cs);
                    copied.push((host_offset, raw & FLAG_COPIED != 0, "L2"));
                }
                _ => {}
            }
        }
    }
    let last = (d.len() as u64).div_ceil(cs);
    let mut all: Vec<u64> = refs.keys().copied().collect();
    all.extend(0..last);
    all.sort_unstable();
    all.dedup();
    for c in all {
        let want = refs.get(&c).copied().unwrap_or(0);
        let got = refcount(c)?;
        if got != want {
            return Err(format!("cluster {c}: refcount {got}, {want} references"));
        }
    }
    for (off, flag, what) in copied {
        let rc = refcount(off >> cb)?;
        if flag != (rc == 1) {
            return Err(format!(
                "{what} COPIED {flag} for {off:#x} with refcount {rc}"
            ));
        }
    }
    Ok(())
}

/// The `write` harness; see the module documentation.
pub fn write(data: &[u8]) {
    if data.len() > super::fuzzing::MAX_INPUT || data.is_empty() {
        return;
    }
    let mode = data[0];
    let (image, ops, fresh) = if mode & 0x80 == 0 {
        let cb = 9 + u32::from(mode & 0xf).min(7);
        let extended = mode & 0x10 != 0 && cb >= 14;
        let v2 = mode & 0x20 != 0;
        let order = if v2 {
            4
        } else {
            u32::from(data.get(1).copied().unwrap_or(4) & 7).min(6)
        };
        let size = (u64::from(data.get(2).copied().unwrap_or(0)) + 1) << 16;
        let version = if v2 { 2 } else { 3 };
        let extended = extended && !v2;
        (
            fresh_image(version, cb, extended, order, size),
            data.get(3..).unwrap_or(&[]),
            true,
        )
    } else {
        let len = u32::from_le_bytes([
            data.get(1).copied().unwrap_or(0),
            data.get(2).copied().unwrap_or(0),
            data.get(3).copied().unwrap_or(0),
            data.get(4).copied().unwrap_or(0),
        ]) as usize;
        let rest = data.get(5..).unwrap_or(&[]);
        let len = len.min(rest.len());
        (rest[..len].to_vec(), &rest[len..], false)
    };
    let mut model = match Image::from_memory(vec![image.clone()], None) {
        Ok(mut r) => r.read_all().ok(),
        Err(_) => None,
    };
    let mut w = match WritableImage::with_file(SimFile::new(image), None, 0) {
        Ok(w) => w,
        Err(e) => {
            assert!(!fresh, "fresh image refused: {e}");
            return;
        }
    };
    let disk = model.as_ref().map(|m| m.len() as u64).unwrap_or(0);
    let mut failed = false;
    let mut budget = WRITE_BUDGET;
    for chunk in ops.chunks_exact(8).take(MAX_OPS) {
        if disk == 0 {
            break;
        }
        let kind = chunk[0];
        let off = u64::from(u32::from_le_bytes([chunk[1], chunk[2], chunk[3], chunk[4]])) % disk;
        let len = (u64::from(chunk[5]) | u64::from(chunk[6]) << 8 | u64::from(chunk[7]) << 16)
            .clamp(1, disk - off);
        if kind & 3 != 3 {
            if len > budget {
                continue;
            }
            budget -= len;
        }
        let r = match kind & 3 {
            0 => {
                let bytes: Vec<u8> = (0..len).map(|i| (i as u8) ^ kind ^ 0x5a).collect();
                let r = w.write_at(&bytes, off);
                if let (Ok(()), Some(m)) = (&r, model.as_mut()) {
                    m[off as usize..(off + len) as usize].copy_from_slice(&bytes);
                }
                r
            }
            1 => {
                let r = w.write_zeroes(off, len, kind & 4 != 0);
                if let (Ok(()), Some(m)) = (&r, model.as_mut()) {
                    m[off as usize..(off + len) as usize].fill(0);
                }
                r
            }
            2 => {
                let r = w.discard(off, len);
                if let (Ok(()), Some(m)) = (&r, model.as_mut()) {
                    // A fresh image has no backing file: discarded whole
                    // clusters read as zeros.
                    let cs = w.engine().geometry().cluster_size();
                    let start = off.div_ceil(cs) * cs;
                    let end = if off + len == disk {
                        disk
                    } else {
                        (off + len) / cs * cs
                    };
                    if start < end {
                        m[start as usize..end as usize].fill(0);
                    }
                }
                r
            }
            _ => w.flush(),
        };
        if let Err(e) = r {
            assert!(
                !matches!(e, Error::Internal | Error::BufferSize { .. }),
                "engine error {e:?}"
            );
            assert!(!fresh, "fresh image: {e}");
            failed = true;
            break;
        }
    }
    if failed {
        return;
    }
    if let Err(e) = w.close() {
        assert!(!matches!(e, Error::Internal), "close: {e:?}");
        assert!(!fresh, "fresh image close: {e}");
        return;
    }
    if !fresh {
        return;
    }
    let bytes = w.file().current().to_vec();
    check_refcounts(&bytes).unwrap_or_else(|e| panic!("refcounts: {e}"));
    let mut r = Image::from_memory(vec![bytes], None).expect("reopen");
    let got = r.read_all().expect("read back");
    assert!(Some(got) == model, "read back differs from the model");
}

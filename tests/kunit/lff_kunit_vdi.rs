// SPDX-License-Identifier: GPL-2.0

//! lff_kunit_vdi: KUnit suite of the VDI format logic as the kernel
//! compiles it (`formats/vdi/src/format`, included below exactly as the
//! VDI driver includes it) and of the driver's errno mapping
//! (`common/errno.rs`): header validation on headers built in a buffer,
//! the block map's kinds of entries, runs merged over contiguous data
//! blocks, and the read engine over an in-memory image.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
#[path = "wrappers/kunit.rs"]
#[macro_use]
pub mod kunit;

#[path = "../../formats/vdi/src/format/mod.rs"]
pub mod vdifmt;

/// The format tree under the name `common/errno.rs` uses.
pub(crate) use vdifmt as fmtlogic;

/// The driver's mapping of the crate's error classes to kernel codes.
#[path = "../../drivers/block/loop_file_fmt/common/errno.rs"]
mod errno;

use kernel::alloc::KVVec;
use kernel::prelude::*;
use kunit::Test;
use vdifmt::map::{BLOCK_UNALLOCATED, BLOCK_ZERO};
use vdifmt::{BlockMap, Error, Header, ImageType, Mapping, MappingKind, Sink, Vdi};

module! {
    type: KunitVdi,
    name: "lff_kunit_vdi",
    description: "KUnit suite of the VDI format logic",
    license: "GPL",
}

struct KunitVdi;

impl kernel::Module for KunitVdi {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Self)
    }
}

const MIB: u64 = 1 << 20;
/// The block map right after the header; the data on the next sector.
const BMAP: u32 = 512;
const DATA: u32 = 1024;
/// Four 1 MiB blocks in the disk, two data blocks in the file.
const BLOCKS: u32 = 4;
const FILE_LEN: u64 = DATA as u64 + 2 * MIB;

fn put32(h: &mut [u8], at: usize, v: u32) {
    if let Some(d) = h.get_mut(at..at + 4) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

fn put64(h: &mut [u8], at: usize, v: u64) {
    if let Some(d) = h.get_mut(at..at + 8) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

/// A valid v1.1 header of type `kind` (1 dynamic, 2 static).
fn header(kind: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    put32(&mut h, 64, 0xbeda_107f);
    put32(&mut h, 68, 0x0001_0001);
    put32(&mut h, 72, 384);
    put32(&mut h, 76, kind);
    put32(&mut h, 340, BMAP);
    put32(&mut h, 344, DATA);
    put32(&mut h, 360, 512);
    put64(&mut h, 368, u64::from(BLOCKS) * MIB);
    put32(&mut h, 376, 1 << 20);
    put32(&mut h, 384, BLOCKS);
    put32(&mut h, 388, 2);
    h
}

/// The errno the driver reports when `f` spoils a valid header.
fn refusal(f: impl FnOnce(&mut [u8; 512])) -> Option<i32> {
    let mut h = header(1);
    f(&mut h);
    Header::parse(&h, FILE_LEN)
        .err()
        .map(|e| errno::kernel_error(&e).to_errno())
}

fn header_dynamic_and_static(t: &Test) {
    for (kind, want) in [(1, ImageType::Dynamic), (2, ImageType::Static)] {
        let Some(hdr) = t.ok(Header::parse(&header(kind), FILE_LEN)) else {
            return;
        };
        check_eq!(t, hdr.image_type, want);
        check_eq!(t, hdr.size(), 4 * MIB);
        check_eq!(t, hdr.bmap_offset(), u64::from(BMAP));
        check_eq!(t, hdr.bmap_len(), 16);
    }
}

fn header_refusals_and_their_errnos(t: &Test) {
    let einval = EINVAL.to_errno();
    let eopnotsupp = -(kernel::bindings::EOPNOTSUPP as i32);
    let efbig = EFBIG.to_errno();
    check_eq!(t, refusal(|h| put32(h, 64, 0xbeda_107e)), Some(einval));
    check_eq!(t, refusal(|h| put32(h, 68, 0x0001_0002)), Some(eopnotsupp));
    check_eq!(t, refusal(|h| put32(h, 76, 4)), Some(eopnotsupp));
    check_eq!(t, refusal(|h| put32(h, 376, 2 << 20)), Some(eopnotsupp));
    check_eq!(t, refusal(|h| put32(h, 380, 512)), Some(eopnotsupp));
    check_eq!(t, refusal(|h| put32(h, 360, 4096)), Some(einval));
    check_eq!(t, refusal(|h| put32(h, 384, (1 << 23) + 1)), Some(efbig));
    check_eq!(t, refusal(|h| put64(h, 368, 5 * MIB)), Some(einval));
    check_eq!(t, refusal(|h| put32(h, 340, BMAP + 1)), Some(einval));
    check_eq!(t, refusal(|h| put32(h, 344, BMAP)), Some(einval));
    check_eq!(t, refusal(|h| put32(h, 440, 1)), Some(eopnotsupp));
    // A file that ends inside the header or the block map.
    check_matches!(t, Header::parse(&header(1)[..300], 300), Err(_));
    check_matches!(t, Header::parse(&header(1), u64::from(BMAP) + 8), Err(_));
}

/// The block map of the in-memory image.
struct Map([u32; BLOCKS as usize]);

impl BlockMap for Map {
    fn entry(&mut self, index: u32) -> vdifmt::Result<u32> {
        self.0.get(index as usize).copied().ok_or(Error::Internal)
    }
}

/// A sink that copies from an in-memory file into a buffer.
struct MemSink<'a> {
    file: &'a [u8],
    out: KVVec<u8>,
}

impl Sink for MemSink<'_> {
    fn fill_zero(&mut self, len: usize) -> vdifmt::Result<()> {
        self.out
            .extend_from_slice(&[0u8; 4096][..len.min(4096)], GFP_KERNEL)
            .map_err(|_| Error::Internal)?;
        if len > 4096 {
            return self.fill_zero(len - 4096);
        }
        Ok(())
    }

    fn read_from_storage(&mut self, offset: u64, len: usize) -> vdifmt::Result<()> {
        let at = offset as usize;
        let src = self.file.get(at..at + len).ok_or(Error::Internal)?;
        self.out
            .extend_from_slice(src, GFP_KERNEL)
            .map_err(|_| Error::Internal)
    }
}

/// The byte at `pos` of data block `n` of the in-memory file.
fn pattern(n: u64, pos: u64) -> u8 {
    (n * 131 + pos * 7 + pos / 4099) as u8
}

fn image(t: &Test) -> Option<(Vdi, KVVec<u8>)> {
    let hdr = t.ok(Header::parse(&header(1), FILE_LEN))?;
    let mut file = t.ok(KVVec::from_elem(0u8, FILE_LEN as usize, GFP_KERNEL))?;
    for (i, b) in file.iter_mut().enumerate().skip(DATA as usize) {
        let p = i as u64 - u64::from(DATA);
        *b = pattern(p / MIB, p % MIB);
    }
    Some((Vdi::new(&hdr, FILE_LEN), file))
}

/// What the disk should hold at `pos` with `map` (data block numbers or
/// the two special entries).
fn expected(map: &Map, pos: u64) -> u8 {
    match map.0[(pos / MIB) as usize] {
        BLOCK_UNALLOCATED | BLOCK_ZERO => 0,
        n => pattern(u64::from(n), pos % MIB),
    }
}

fn read(t: &Test, vdi: &Vdi, file: &[u8], map: &mut Map, pos: u64, len: usize) -> bool {
    let mut sink = MemSink {
        file,
        out: KVVec::new(),
    };
    let Some(()) = t.ok(vdi.read(map, pos, len, &mut sink)) else {
        return false;
    };
    if !check_eq!(t, sink.out.len(), len) {
        return false;
    }
    let bad = (0..len as u64).find(|&i| sink.out[i as usize] != expected(map, pos + i));
    check_eq!(t, bad, None)
}

fn entries_read_as_their_kind(t: &Test) {
    let Some((vdi, file)) = image(t) else { return };
    let mut map = Map([1, BLOCK_UNALLOCATED, BLOCK_ZERO, 0]);
    // Whole blocks, pieces inside one, and ranges across block edges.
    for (pos, len) in [
        (0, MIB as usize),
        (MIB, 4096),
        (2 * MIB + 512, 1000),
        (3 * MIB, MIB as usize),
        (MIB - 512, 1024),
        (MIB / 2, 3 * MIB as usize),
        (0, 4 * MIB as usize),
    ] {
        if !read(t, &vdi, &file, &mut map, pos, len) {
            return;
        }
    }
}

fn runs_merge_contiguous_blocks(t: &Test) {
    let Some((vdi, _file)) = image(t) else { return };
    let mut map = Map([0, 1, BLOCK_UNALLOCATED, BLOCK_UNALLOCATED]);
    let data = |off: u64| MappingKind::Data {
        host_offset: u64::from(DATA) + off,
    };
    check_eq!(
        t,
        vdi.map(&mut map, 4096, 4 * MIB - 4096).ok(),
        Some(Mapping {
            kind: data(4096),
            len: 2 * MIB - 4096
        })
    );
    check_eq!(
        t,
        vdi.map(&mut map, 2 * MIB, 2 * MIB).ok(),
        Some(Mapping {
            kind: MappingKind::Unallocated,
            len: 2 * MIB
        })
    );
    // Data blocks out of order in the file are separate runs.
    let mut swapped = Map([1, 0, BLOCK_ZERO, BLOCK_UNALLOCATED]);
    check_eq!(
        t,
        vdi.map(&mut swapped, 0, 4 * MIB).ok(),
        Some(Mapping {
            kind: data(MIB),
            len: MIB
        })
    );
    check_eq!(
        t,
        vdi.map(&mut swapped, 2 * MIB, 2 * MIB).ok(),
        Some(Mapping {
            kind: MappingKind::Zero,
            len: MIB
        })
    );
}

fn bad_entries_and_ranges_fail(t: &Test) {
    let Some((vdi, file)) = image(t) else { return };
    let eio = EIO.to_errno();
    // Block 1 points at data block 2, past the end of the 2-block file.
    let mut map = Map([0, 2, BLOCK_UNALLOCATED, 1]);
    let mut sink = MemSink {
        file: &file,
        out: KVVec::new(),
    };
    let e = vdi.read(&mut map, MIB + 4096, 4096, &mut sink).err();
    check_eq!(t, e.map(|e| errno::kernel_error(&e).to_errno()), Some(eio));
    // The other blocks still read.
    read(t, &vdi, &file, &mut map, 0, MIB as usize);
    read(t, &vdi, &file, &mut map, 2 * MIB, 2 * MIB as usize);
    // Past the virtual size.
    let mut sink = MemSink {
        file: &file,
        out: KVVec::new(),
    };
    check_matches!(
        t,
        vdi.read(&mut map, 4 * MIB - 512, 1024, &mut sink),
        Err(Error::OutOfRange { .. })
    );
    check_eq!(t, sink.out.len(), 0);
}

fn io_errors_keep_their_errno(t: &Test) {
    // A file error met by the engine (through the sink) reaches the block
    // layer as itself.
    for e in [EIO, ENOMEM, EINTR] {
        let back = errno::kernel_error(&errno::fmt_error(e));
        check_eq!(t, back.to_errno(), e.to_errno());
    }
}

kunit_suite!(
    lff_vdi,
    [
        header_dynamic_and_static,
        header_refusals_and_their_errnos,
        entries_read_as_their_kind,
        runs_merge_contiguous_blocks,
        bad_entries_and_ranges_fail,
        io_errors_keep_their_errno
    ]
);

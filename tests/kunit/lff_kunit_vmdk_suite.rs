// SPDX-License-Identifier: GPL-2.0

//! lff_kunit_vmdk: KUnit suite of the VMDK format logic as the kernel
//! compiles it (`formats/vmdk/src/format`, included below exactly as the
//! VMDK driver includes it), the driver's errno mapping (`common/errno.rs`)
//! and its zlib binding (`wrappers/decompress.rs` with zlib-wrapped
//! streams): header validation on headers built in a buffer, the grain
//! table's kinds of entries and merged runs, the read engine over an
//! in-memory monolithicSparse image and over a disk of three extents
//! (flat, `ZERO`, sparse) read across their boundaries, the descriptor
//! checks the driver makes at attach, and a grain marker plus zlib stream
//! through the kernel's zlib, checksum included.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
#[path = "wrappers/kunit.rs"]
#[macro_use]
pub mod kunit;

#[path = "../../formats/vmdk/src/format/mod.rs"]
pub mod vmdkfmt;

/// The format tree under the name `common/errno.rs` uses.
pub(crate) use vmdkfmt as fmtlogic;

/// The driver's mapping of the crate's error classes to kernel codes.
#[path = "../../drivers/block/loop_file_fmt/common/errno.rs"]
mod errno;

/// The driver's zlib binding (the core's `lff_inflate`).
#[allow(unsafe_code)]
#[path = "../../drivers/block/loop_file_fmt/wrappers/decompress.rs"]
pub mod decompress;

/// The generated declarations `decompress` calls.
#[allow(unsafe_code)]
#[path = "../../drivers/block/loop_file_fmt/wrappers/qcow2_sys.rs"]
mod qcow2_sys;

use decompress::{DecompressError, Inflate, InflateStatus, Wrapping};
use kernel::alloc::KVVec;
use kernel::prelude::*;
use kunit::Test;
use vmdkfmt::header::{FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NEWLINE_DETECT, FLAG_ZERO_GRAIN};
use vmdkfmt::{
    CompressedGrains, Descriptor, Disk, Error, Extent, GrainRead, MappingKind, Sink, SparseExtent,
    SparseHeader, Storage, Tables,
};

module! {
    type: KunitVmdk,
    name: "lff_kunit_vmdk",
    description: "KUnit suite of the VMDK format logic",
    license: "GPL",
}

struct KunitVmdk;

impl kernel::Module for KunitVmdk {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Self)
    }
}

const SECTOR: usize = 512;
/// 4 KiB grains (8 sectors), 4 entries per grain table: 16 KiB a table.
const GRAIN: usize = 4096;
/// 64 sectors: two grain tables' spans.
const CAPACITY: u64 = 64;
/// The grain directory at sector 1, the tables at sectors 2 and 3, the
/// grains from sector 8.
const GD: usize = 1;
const FILE_SECTORS: usize = 40;

fn put(h: &mut [u8], at: usize, v: &[u8]) {
    if let Some(d) = h.get_mut(at..at + v.len()) {
        d.copy_from_slice(v);
    }
}

/// A valid header with `flags`.
fn header(flags: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    put(&mut h, 0, b"KDMV");
    put(&mut h, 4, &1u32.to_le_bytes());
    put(&mut h, 8, &(flags | FLAG_NEWLINE_DETECT).to_le_bytes());
    put(&mut h, 12, &CAPACITY.to_le_bytes());
    put(&mut h, 20, &8u64.to_le_bytes());
    put(&mut h, 44, &4u32.to_le_bytes());
    put(&mut h, 56, &(GD as u64).to_le_bytes());
    put(&mut h, 64, &8u64.to_le_bytes());
    put(&mut h, 73, b"\n \r\n");
    h
}

const FILE_LEN: u64 = (FILE_SECTORS * SECTOR) as u64;

/// The errno the driver reports when `f` spoils a valid header.
fn refusal(f: impl FnOnce(&mut [u8; 512])) -> Option<i32> {
    let mut h = header(0);
    f(&mut h);
    SparseHeader::parse(&h)
        .and_then(|hdr| SparseExtent::new(&hdr, FILE_LEN))
        .err()
        .map(|e| errno::kernel_error(&e).to_errno())
}

fn header_fields_and_refusals(t: &Test) {
    let Some(hdr) = t.ok(SparseHeader::parse(&header(FLAG_ZERO_GRAIN))) else {
        return;
    };
    let Some(s) = t.ok(SparseExtent::new(&hdr, FILE_LEN)) else {
        return;
    };
    check_eq!(t, s.size(), CAPACITY * 512);
    check_eq!(t, s.grain_len(), GRAIN);
    check_eq!(t, s.gd_entries(), 2);
    check_eq!(t, s.gd_offset(), (GD * SECTOR) as u64);
    check!(t, s.zero_grain());
    check!(t, !s.compressed());
    let einval = EINVAL.to_errno();
    let eopnotsupp = -(kernel::bindings::EOPNOTSUPP as i32);
    let efbig = EFBIG.to_errno();
    // (offset, bytes written there, errno of the refusal)
    let cases: [(usize, &[u8], i32); 12] = [
        (0, b"COWD", einval),
        (4, &4u32.to_le_bytes(), eopnotsupp),
        (74, b"\n", einval),
        (77, &2u16.to_le_bytes(), eopnotsupp),
        (20, &3u64.to_le_bytes(), einval),
        (20, &4096u64.to_le_bytes(), einval),
        (44, &0u32.to_le_bytes(), einval),
        (44, &513u32.to_le_bytes(), einval),
        (12, &(1u64 << 41).to_le_bytes(), efbig),
        (56, &0u64.to_le_bytes(), einval),
        (56, &100u64.to_le_bytes(), einval),
        (64, &100u64.to_le_bytes(), einval),
    ];
    for (at, bytes, errno) in cases {
        // The offset is in both sides, so a failure names the case.
        check_eq!(t, (at, refusal(|h| put(h, at, bytes))), (at, Some(errno)));
    }
    check_matches!(t, SparseHeader::parse(&header(0)[..300]), Err(_));
}

/// The byte at `pos` of the grain at `sector` of the in-memory file.
fn pattern(sector: u64, pos: u64) -> u8 {
    (sector * 131 + pos * 7 + pos / 509) as u8
}

/// The grain tables: table 0 is data, data, unallocated, zeroed; table 1
/// two contiguous data grains, then two unallocated.
const GT0: [u32; 4] = [8, 16, 0, 1];
const GT1: [u32; 4] = [24, 32, 0, 0];

/// An in-memory monolithicSparse image with the tables above.
fn image(t: &Test) -> Option<KVVec<u8>> {
    let mut file = t.ok(KVVec::from_elem(0u8, FILE_SECTORS * SECTOR, GFP_KERNEL))?;
    put(&mut file, 0, &header(FLAG_ZERO_GRAIN));
    put(&mut file, GD * SECTOR, &2u32.to_le_bytes());
    put(&mut file, GD * SECTOR + 4, &3u32.to_le_bytes());
    for (i, e) in GT0.iter().enumerate() {
        put(&mut file, 2 * SECTOR + 4 * i, &e.to_le_bytes());
    }
    for (i, e) in GT1.iter().enumerate() {
        put(&mut file, 3 * SECTOR + 4 * i, &e.to_le_bytes());
    }
    for (i, b) in file.iter_mut().enumerate().skip(8 * SECTOR) {
        let sector = (i / GRAIN * GRAIN / SECTOR) as u64;
        *b = pattern(sector, (i % GRAIN) as u64);
    }
    Some(file)
}

/// What the disk holds at `pos`.
fn expected(pos: u64) -> u8 {
    let grain = (pos / GRAIN as u64) as usize;
    let entry = if grain < 4 {
        GT0[grain]
    } else {
        GT1[grain - 4]
    };
    match entry {
        0 | 1 => 0,
        s => pattern(u64::from(s), pos % GRAIN as u64),
    }
}

/// The engine's traits over the in-memory file.
struct Mem<'a> {
    file: &'a [u8],
}

impl Storage for Mem<'_> {
    fn read_at(&self, _e: usize, buf: &mut [u8], offset: u64) -> vmdkfmt::Result<()> {
        let at = offset as usize;
        let src = self.file.get(at..at + buf.len()).ok_or(Error::Io(5))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl Tables for Mem<'_> {
    fn gd_entry(&mut self, _e: usize, index: u32) -> vmdkfmt::Result<u32> {
        let at = GD * SECTOR + 4 * index as usize;
        let b = self.file.get(at..at + 4).ok_or(Error::Internal)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn with_grain_table<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        _e: usize,
        offset: u64,
        f: F,
    ) -> vmdkfmt::Result<R> {
        let at = offset as usize;
        Ok(f(self.file.get(at..at + 16).ok_or(Error::Internal)?))
    }
}

impl CompressedGrains for Mem<'_> {
    fn with_grain<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        _r: &GrainRead,
        _f: F,
    ) -> vmdkfmt::Result<R> {
        Err(Error::Internal)
    }
}

fn disk(t: &Test, file: &[u8]) -> Option<Disk> {
    let hdr = t.ok(SparseHeader::parse(file.get(..512)?))?;
    let s = t.ok(SparseExtent::new(&hdr, file.len() as u64))?;
    let mut d = Disk::new();
    t.ok(d.push(t.ok(Extent::sparse(s, None))?))?;
    Some(d)
}

/// Reads `[pos, pos + len)` and compares it with [`expected`].
fn read(t: &Test, d: &Disk, file: &[u8], pos: u64, len: usize) -> bool {
    let mut mem = Mem { file };
    let mut out = KVVec::new();
    let mut sink = Files {
        files: &[file],
        out: &mut out,
    };
    let mut grains = Mem { file };
    let Some(()) = t.ok(d.read(&mut mem, &mut grains, pos, len, &mut sink)) else {
        return false;
    };
    if !check_eq!(t, out.len(), len) {
        return false;
    }
    let bad = (0..len as u64).find(|&i| out[i as usize] != expected(pos + i));
    check_eq!(t, bad, None)
}

fn engine_reads_every_kind(t: &Test) {
    let Some(file) = image(t) else { return };
    let Some(d) = disk(t, &file) else { return };
    check_eq!(t, d.size(), CAPACITY * 512);
    // The whole disk, each grain, and unaligned pieces across grains and
    // across the two tables.
    read(t, &d, &file, 0, (CAPACITY * 512) as usize);
    for g in 0..8u64 {
        read(t, &d, &file, g * GRAIN as u64, GRAIN);
    }
    read(t, &d, &file, 4095, 2);
    read(t, &d, &file, 3 * 4096 - 100, 4096 + 200);
    read(t, &d, &file, 5, 32768 - 10);
    // Past the end.
    let mut m = Mem { file: &file };
    let mut g = Mem { file: &file };
    let mut out = KVVec::new();
    let mut sink = Files {
        files: &[&file],
        out: &mut out,
    };
    check_matches!(
        t,
        d.read(&mut m, &mut g, CAPACITY * 512 - 1, 2, &mut sink),
        Err(Error::OutOfRange { .. })
    );
}

/// Several in-memory files, extent `i` reading `files[i]` (a sparse
/// extent's grain directory at sector [`GD`], tables of 16 bytes); as a
/// sink, appends to `out`.
struct Files<'a, 'b> {
    files: &'a [&'b [u8]],
    out: &'a mut KVVec<u8>,
}

impl Files<'_, '_> {
    fn get(&self, e: usize, at: u64, len: usize) -> vmdkfmt::Result<&[u8]> {
        let f = self.files.get(e).ok_or(Error::Internal)?;
        f.get(at as usize..at as usize + len).ok_or(Error::Io(5))
    }
}

impl Tables for Files<'_, '_> {
    fn gd_entry(&mut self, e: usize, index: u32) -> vmdkfmt::Result<u32> {
        let b = self.get(e, (GD * SECTOR) as u64 + 4 * u64::from(index), 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn with_grain_table<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        e: usize,
        offset: u64,
        f: F,
    ) -> vmdkfmt::Result<R> {
        Ok(f(self.get(e, offset, 16)?))
    }
}

impl CompressedGrains for Files<'_, '_> {
    fn with_grain<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        _r: &GrainRead,
        _f: F,
    ) -> vmdkfmt::Result<R> {
        Err(Error::Internal)
    }
}

impl Sink for Files<'_, '_> {
    fn fill_zero(&mut self, len: usize) -> vmdkfmt::Result<()> {
        for _ in 0..len {
            self.out.push(0, GFP_KERNEL).map_err(|_| Error::Internal)?;
        }
        Ok(())
    }

    fn copy_from(&mut self, data: &[u8]) -> vmdkfmt::Result<()> {
        self.out
            .extend_from_slice(data, GFP_KERNEL)
            .map_err(|_| Error::Internal)
    }

    fn read_from_storage(&mut self, e: usize, offset: u64, len: usize) -> vmdkfmt::Result<()> {
        let f = *self.files.get(e).ok_or(Error::Internal)?;
        let src = f
            .get(offset as usize..offset as usize + len)
            .ok_or(Error::Internal)?;
        self.copy_from(src)
    }
}

/// The flat extent's file: 4 sectors, the extent being sectors 1 to 3.
fn flat_byte(i: usize) -> u8 {
    (i * 29 + i / 512 + 3) as u8
}

/// What the three-extent disk holds at `pos`: 3 flat sectors, 5 `ZERO`
/// sectors, then the sparse image of [`expected`].
fn expected3(pos: u64) -> u8 {
    match pos {
        0..1536 => flat_byte(512 + pos as usize),
        1536..4096 => 0,
        _ => expected(pos - 4096),
    }
}

fn engine_splits_reads_across_extents(t: &Test) {
    let Some(sparse) = image(t) else { return };
    let Some(mut flat) = t.ok(KVVec::from_elem(0u8, 4 * SECTOR, GFP_KERNEL)) else {
        return;
    };
    for (i, b) in flat.iter_mut().enumerate() {
        *b = flat_byte(i);
    }
    let Some(hdr) = t.ok(SparseHeader::parse(&sparse[..512])) else {
        return;
    };
    let Some(s) = t.ok(SparseExtent::new(&hdr, sparse.len() as u64)) else {
        return;
    };
    let mut d = Disk::new();
    let extents = [
        Extent::flat(3, 1, flat.len() as u64),
        Extent::zero(5),
        Extent::sparse(s, Some(CAPACITY)),
    ];
    for e in extents {
        let Some(e) = t.ok(e) else { return };
        if t.ok(d.push(e)).is_none() {
            return;
        }
    }
    check_eq!(t, d.size(), (8 + CAPACITY) * 512);
    check_eq!(t, d.extent_start(2), Some(4096));
    let files: [&[u8]; 3] = [&flat, &[], &sparse];
    let size = d.size();
    // The whole disk, and pieces across each boundary.
    for (pos, len) in [
        (0, size),
        (1535, 2),
        (1000, 4000),
        (4095, 2),
        (0, 4097),
        (2000, 100),
    ] {
        let mut out = KVVec::new();
        let mut tables = Files {
            files: &files,
            out: &mut KVVec::new(),
        };
        let mut grains = Files {
            files: &files,
            out: &mut KVVec::new(),
        };
        let mut sink = Files {
            files: &files,
            out: &mut out,
        };
        if t.ok(d.read(&mut tables, &mut grains, pos, len as usize, &mut sink))
            .is_none()
        {
            continue;
        }
        check_eq!(t, out.len() as u64, len);
        let bad = (0..len).find(|&i| out[i as usize] != expected3(pos + i));
        check_eq!(t, bad, None);
    }
    // A flat extent must lie inside its file, a sparse one must have the
    // size the descriptor declares: both refused at attach with EINVAL.
    let einval = Some(EINVAL.to_errno());
    let errno = |r: vmdkfmt::Result<Extent>| r.err().map(|e| errno::kernel_error(&e).to_errno());
    check_eq!(t, errno(Extent::flat(4, 1, flat.len() as u64)), einval);
    check_eq!(t, errno(Extent::sparse(s, Some(CAPACITY + 1))), einval);
}

fn descriptor_checks_at_attach(t: &Test) {
    let text = b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
        createType=\"twoGbMaxExtentSparse\"\n\nRW 4194304 SPARSE \"a-s001.vmdk\"\n\
        RW 100 ZERO\nRW 2048 FLAT \"b.raw\" 8\n";
    let Some(d) = t.ok(Descriptor::parse(text)) else {
        return;
    };
    check_eq!(t, (d.extent_count(), d.file_count()), (3, 2));
    check_eq!(t, d.sectors(), 4194304 + 100 + 2048);
    check!(t, d.check_file(text).is_ok());
    let errno = |text: &[u8]| {
        Descriptor::parse(text)
            .and_then(|d| d.check_file(text))
            .err()
            .map(|e| errno::kernel_error(&e).to_errno())
    };
    let head = "version=1\ncreateType=\"monolithicFlat\"\n";
    let mut dup = KVVec::new();
    let mut many = KVVec::new();
    for v in [&mut dup, &mut many] {
        if t.ok(v.extend_from_slice(head.as_bytes(), GFP_KERNEL))
            .is_none()
        {
            return;
        }
    }
    if t.ok(dup.extend_from_slice(b"RW 1 FLAT \"x\"\nRW 1 FLAT \"x\"\n", GFP_KERNEL))
        .is_none()
    {
        return;
    }
    // Sixteen extent files: with the descriptor, more than 16 layers.
    for i in 0..16u8 {
        let line = [
            b'R',
            b'W',
            b' ',
            b'1',
            b' ',
            b'F',
            b'L',
            b'A',
            b'T',
            b' ',
            b'"',
            b'a' + i,
            b'"',
            b'\n',
        ];
        if t.ok(many.extend_from_slice(&line, GFP_KERNEL)).is_none() {
            return;
        }
    }
    check_eq!(t, errno(&dup[..]), Some(EINVAL.to_errno()));
    check_eq!(t, errno(&many[..]), Some(EFBIG.to_errno()));
    let parent =
        b"version=1\ncreateType=\"monolithicFlat\"\nparentFileNameHint=\"p.vmdk\"\nRW 1 ZERO\n";
    check_eq!(
        t,
        errno(&parent[..]),
        Some(-(kernel::bindings::EOPNOTSUPP as i32))
    );
}

fn grain_table_kinds_and_runs(t: &Test) {
    let Some(hdr) = t.ok(SparseHeader::parse(&header(FLAG_ZERO_GRAIN))) else {
        return;
    };
    let Some(s) = t.ok(SparseExtent::new(&hdr, FILE_LEN)) else {
        return;
    };
    let mut table = [0u8; 16];
    for (i, e) in [8u32, 16, 0, 1].iter().enumerate() {
        put(&mut table, 4 * i, &e.to_le_bytes());
    }
    // Grains 0 and 1 are contiguous (sectors 8 and 16): one run.
    let m = t.ok(s.map_in_table(&table, 100, 16384));
    check_eq!(t, m.map(|m| m.len), Some(2 * 4096 - 100));
    check_eq!(
        t,
        m.map(|m| m.kind),
        Some(MappingKind::Data {
            host_offset: 8 * 512 + 100
        })
    );
    let m = t.ok(s.map_in_table(&table, 2 * 4096, 16384));
    check_eq!(t, m.map(|m| m.kind), Some(MappingKind::Unallocated));
    check_eq!(t, m.map(|m| m.len), Some(4096));
    let m = t.ok(s.map_in_table(&table, 3 * 4096 + 1, 16384));
    check_eq!(t, m.map(|m| m.kind), Some(MappingKind::Zero));
    // Without flag bit 2, entry 1 is sector 1 like any other.
    let Some(plain) = t
        .ok(SparseHeader::parse(&header(0)))
        .and_then(|h| t.ok(SparseExtent::new(&h, FILE_LEN)))
    else {
        return;
    };
    let m = t.ok(plain.map_in_table(&table, 3 * 4096, 4096));
    check_eq!(
        t,
        m.map(|m| m.kind),
        Some(MappingKind::Data { host_offset: 512 })
    );
    // A table of the wrong size is refused.
    check_matches!(t, s.map_in_table(&table[..12], 0, 1), Err(_));
}

/// `b"vmdk grain " * 46 + b"vmdk g"` (512 bytes), zlib-compressed.
const ZLIB_GRAIN: [u8; 24] = [
    0x78, 0xda, 0x2b, 0xcb, 0x4d, 0xc9, 0x56, 0x48, 0x2f, 0x4a, 0xcc, 0xcc, 0x53, 0x28, 0x1b, 0x65,
    0x8e, 0x3c, 0x26, 0x00, 0x63, 0xeb, 0xba, 0xc4,
];

fn grain_text(i: usize) -> u8 {
    b"vmdk grain "[i % 11]
}

/// The kernel's zlib as the format crate's `Decompressor`, as the driver
/// adapts it.
struct Zlib(Inflate);

impl vmdkfmt::Decompressor for Zlib {
    fn inflate(&mut self, input: &[u8], output: &mut [u8]) -> vmdkfmt::Result<usize> {
        match self.0.inflate(input, output) {
            Ok(InflateStatus::StreamEnd(n)) => Ok(n),
            _ => Err(Error::DecompressionFailed),
        }
    }
}

fn zlib_streams_through_the_kernel(t: &Test) {
    let Some(mut z) = t.ok(Inflate::new(GFP_KERNEL, Wrapping::Zlib)) else {
        return;
    };
    let mut out = [0u8; 512];
    check_eq!(
        t,
        z.inflate(&ZLIB_GRAIN, &mut out),
        Ok(InflateStatus::StreamEnd(512))
    );
    check_eq!(t, (0..512).find(|&i| out[i] != grain_text(i)), None);
    // Trailing bytes after the stream are ignored.
    let mut padded = [0u8; 64];
    padded[..24].copy_from_slice(&ZLIB_GRAIN);
    check_eq!(
        t,
        z.inflate(&padded, &mut out),
        Ok(InflateStatus::StreamEnd(512))
    );
    // A bad Adler-32, a truncated stream, more than the output.
    let mut bad = ZLIB_GRAIN;
    bad[23] ^= 1;
    check_eq!(t, z.inflate(&bad, &mut out), Err(DecompressError::Corrupt));
    check_eq!(
        t,
        z.inflate(&ZLIB_GRAIN[..12], &mut out),
        Err(DecompressError::Truncated)
    );
    check_eq!(
        t,
        z.inflate(&ZLIB_GRAIN, &mut out[..100]),
        Ok(InflateStatus::OutputFull)
    );
    // The same bytes are not raw deflate: qcow2's wrapping refuses them.
    let Some(mut raw) = t.ok(Inflate::new(GFP_KERNEL, Wrapping::Raw)) else {
        return;
    };
    check_matches!(t, raw.inflate(&ZLIB_GRAIN, &mut out), Err(_));
}

/// A one-file storage for `GrainRead::load`.
struct Bytes<'a>(&'a [u8]);

impl Storage for Bytes<'_> {
    fn read_at(&self, _e: usize, buf: &mut [u8], offset: u64) -> vmdkfmt::Result<()> {
        let at = offset as usize;
        let src = self.0.get(at..at + buf.len()).ok_or(Error::Io(5))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

fn marked_grains_load_whole(t: &Test) {
    let Some(inflate) = t.ok(Inflate::new(GFP_KERNEL, Wrapping::Zlib)) else {
        return;
    };
    let mut z = Zlib(inflate);
    // A 512-byte grain at byte 1024: marker (lba, size), then the stream.
    let mut file = [0u8; 2048];
    put(&mut file, 1024, &0u64.to_le_bytes());
    put(&mut file, 1032, &(ZLIB_GRAIN.len() as u32).to_le_bytes());
    put(&mut file, 1036, &ZLIB_GRAIN);
    let req = |grain_offset: u64, needed: usize| GrainRead {
        extent: 0,
        grain_offset,
        markers: true,
        grain_len: 512,
        needed,
        file_len: file.len() as u64,
    };
    let mut input = [0u8; 1024];
    let mut out = [0u8; 512];
    let s = Bytes(&file);
    check_eq!(
        t,
        req(1024, 512).load(&s, &mut z, &mut input, &mut out),
        Ok(())
    );
    check_eq!(t, (0..512).find(|&i| out[i] != grain_text(i)), None);
    // Past the end of the file, a zero or oversized marker size, garbage:
    // all are read errors of that grain (EIO), never a panic.
    let eio = EIO.to_errno();
    let errno = |r: vmdkfmt::Result<()>| r.err().map(|e| errno::kernel_error(&e).to_errno());
    check_eq!(
        t,
        errno(req(4096, 512).load(&s, &mut z, &mut input, &mut out)),
        Some(eio)
    );
    let mut f2 = file;
    put(&mut f2, 1032, &0u32.to_le_bytes());
    check_eq!(
        t,
        errno(req(1024, 512).load(&Bytes(&f2), &mut z, &mut input, &mut out)),
        Some(eio)
    );
    put(&mut f2, 1032, &1020u32.to_le_bytes());
    check_eq!(
        t,
        errno(req(1024, 512).load(&Bytes(&f2), &mut z, &mut input, &mut out)),
        Some(eio)
    );
    let mut f3 = file;
    put(&mut f3, 1040, &[0xff; 8]);
    check_eq!(
        t,
        errno(req(1024, 512).load(&Bytes(&f3), &mut z, &mut input, &mut out)),
        Some(eio)
    );
    // A compressed, marked header is what streamOptimized images carry.
    let h = header(FLAG_COMPRESSED | FLAG_MARKERS);
    let mut h2 = h;
    put(&mut h2, 77, &1u16.to_le_bytes());
    let hdr = t.ok(SparseHeader::parse(&h2));
    check_eq!(
        t,
        hdr.map(|h| (h.compressed(), h.markers())),
        Some((true, true))
    );
}

fn io_errors_keep_their_errno(t: &Test) {
    // The driver's I/O errors cross the format crate and come back as
    // themselves.
    for e in [EIO, ENOMEM, EINTR] {
        let back = errno::kernel_error(&errno::fmt_error(e));
        check_eq!(t, back.to_errno(), e.to_errno());
    }
}

kunit_suite!(
    lff_vmdk,
    [
        header_fields_and_refusals,
        grain_table_kinds_and_runs,
        engine_reads_every_kind,
        engine_splits_reads_across_extents,
        descriptor_checks_at_attach,
        zlib_streams_through_the_kernel,
        marked_grains_load_whole,
        io_errors_keep_their_errno
    ]
);

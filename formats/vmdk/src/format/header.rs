//! The hosted sparse extent header (VMDK spec "Hosted Sparse Extent
//! Header") and the streamOptimized footer.
//!
//! A hosted sparse extent starts with one 512-byte sector, little endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0 - 3 | magic `KDMV` |
//! | 4 - 7 | version (1, 2 or 3) |
//! | 8 - 11 | flags: bit 0 newline detection valid, bit 1 redundant grain directory, bit 2 zeroed-grain entries (GTE 1), bit 16 compressed grains, bit 17 markers |
//! | 12 - 19 | capacity in sectors |
//! | 20 - 27 | grain size in sectors |
//! | 28 - 35 | embedded descriptor offset in sectors (0: none) |
//! | 36 - 43 | embedded descriptor size in sectors |
//! | 44 - 47 | grain table entries per grain table |
//! | 48 - 55 | redundant grain directory offset in sectors |
//! | 56 - 63 | grain directory offset in sectors (`GD_AT_END`: see the footer) |
//! | 64 - 71 | overhead: sectors before the first grain |
//! | 72 | unclean shutdown |
//! | 73 - 76 | `\n`, ` `, `\r`, `\n` (newline detection) |
//! | 77 - 78 | compression algorithm (0 none, 1 deflate) |
//!
//! A streamOptimized extent written as a stream does not know where its
//! grain directory will be when it writes the header: it stores
//! `GD_AT_END` and repeats the header, with the real offset, in a footer
//! at the end of the file: a footer marker sector, the header copy, an
//! end-of-stream marker sector. The footer then takes precedence over the
//! header, as in QEMU ([`read_sparse_header`] follows it).
//!
//! [`SparseHeader::parse`] only decodes and checks the fields that do not
//! depend on the file; [`super::sparse::SparseExtent::new`] validates the
//! geometry and every offset against the file length.

use super::descriptor::MAX_DESCRIPTOR_LEN;
use super::engine::Storage;
use super::error::{Error, Result, Structure};
use super::le;

/// Sector size: every offset and size in the header counts these.
pub const SECTOR: u64 = 512;
/// Length of the header (one sector).
pub const HEADER_LEN: usize = 512;
/// The magic `KDMV` read as a little-endian `u32`.
pub const MAGIC: u32 = 0x564d_444b;
/// Grain directory offset meaning "see the footer".
pub const GD_AT_END: u64 = u64::MAX;
/// Length of a streamOptimized footer: marker, header copy, end of stream.
pub const FOOTER_LEN: u64 = 3 * SECTOR;

/// Flag bit 0: the newline detection bytes are valid.
pub const FLAG_NEWLINE_DETECT: u32 = 1 << 0;
/// Flag bit 1: a redundant grain directory exists.
pub const FLAG_REDUNDANT_GD: u32 = 1 << 1;
/// Flag bit 2: a grain table entry of 1 means a zeroed grain.
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
/// Flag bit 16: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Flag bit 17: the extent has markers (streamOptimized).
pub const FLAG_MARKERS: u32 = 1 << 17;

/// `compressAlgorithm` value for deflate.
pub const COMPRESSION_DEFLATE: u16 = 1;

/// Largest grain: 2048 sectors (1 MiB), the size of a decompressed grain
/// buffer. QEMU creates 64 KiB grains; the spec asks for powers of two.
pub const MAX_GRAIN_SECTORS: u64 = 2048;
/// Most grain table entries per grain table (the spec's 512).
pub const MAX_GTES_PER_GT: u32 = 512;
/// Largest capacity, of an extent or a whole disk: 2^40 sectors (512 TiB).
pub const MAX_SECTORS: u64 = 1 << 40;
/// Most grain directory entries: 8 Mi (a 32 MiB directory, which covers
/// 256 TiB with QEMU's 64 KiB grains and 512-entry tables).
pub const MAX_GD_ENTRIES: u64 = 1 << 23;

/// Marker type of a footer marker.
const MARKER_FOOTER: u32 = 3;
/// Marker type of an end-of-stream marker.
const MARKER_END_OF_STREAM: u32 = 0;

/// The decoded fields of a hosted sparse extent header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SparseHeader {
    /// Version, 1..=3.
    pub version: u32,
    /// Flags (`FLAG_*`); unknown bits are ignored.
    pub flags: u32,
    /// Capacity in sectors.
    pub capacity: u64,
    /// Grain size in sectors.
    pub grain_size: u64,
    /// Embedded descriptor offset in sectors (0: none).
    pub descriptor_offset: u64,
    /// Embedded descriptor size in sectors.
    pub descriptor_size: u64,
    /// Grain table entries per grain table.
    pub gtes_per_gt: u32,
    /// Redundant grain directory offset in sectors.
    pub rgd_offset: u64,
    /// Grain directory offset in sectors.
    pub gd_offset: u64,
    /// Sectors before the first grain.
    pub overhead: u64,
    /// The unclean shutdown byte (informational: reads ignore it).
    pub unclean_shutdown: bool,
    /// Compression algorithm (0 or [`COMPRESSION_DEFLATE`]).
    pub compress_algorithm: u16,
}

impl SparseHeader {
    /// Decodes a header sector: magic, version 1..=3, the newline
    /// detection bytes if flag bit 0 says they are valid, and a known
    /// compression algorithm.
    pub fn parse(sector: &[u8]) -> Result<SparseHeader> {
        let short = Error::Truncated {
            what: Structure::Header,
            needed: HEADER_LEN as u64,
            available: sector.len() as u64,
        };
        if sector.len() < HEADER_LEN {
            return Err(short);
        }
        let u32_at = |off| le::u32_at(sector, off).ok_or(short);
        let u64_at = |off| le::u64_at(sector, off).ok_or(short);
        let magic = u32_at(0)?;
        if magic != MAGIC {
            return Err(Error::BadMagic(magic));
        }
        let version = u32_at(4)?;
        if !(1..=3).contains(&version) {
            return Err(Error::UnsupportedVersion(version));
        }
        let flags = u32_at(8)?;
        if flags & FLAG_NEWLINE_DETECT != 0 && sector.get(73..77) != Some(b"\n \r\n") {
            return Err(Error::BadNewlineCheck);
        }
        let compress_algorithm = le::u16_at(sector, 77).ok_or(short)?;
        if compress_algorithm > COMPRESSION_DEFLATE {
            return Err(Error::UnsupportedCompression(compress_algorithm));
        }
        Ok(SparseHeader {
            version,
            flags,
            capacity: u64_at(12)?,
            grain_size: u64_at(20)?,
            descriptor_offset: u64_at(28)?,
            descriptor_size: u64_at(36)?,
            gtes_per_gt: u32_at(44)?,
            rgd_offset: u64_at(48)?,
            gd_offset: u64_at(56)?,
            overhead: u64_at(64)?,
            unclean_shutdown: sector.get(72).is_some_and(|&b| b != 0),
            compress_algorithm,
        })
    }

    /// Whether the real header is in the footer (`gdOffset` is `GD_AT_END`).
    pub fn needs_footer(&self) -> bool {
        self.gd_offset == GD_AT_END
    }

    /// Whether grains are deflate compressed. As in QEMU, the
    /// compression algorithm field decides, not flag bit 16.
    pub fn compressed(&self) -> bool {
        self.compress_algorithm == COMPRESSION_DEFLATE
    }

    /// Whether compressed grains start with a grain marker.
    pub fn markers(&self) -> bool {
        self.flags & FLAG_MARKERS != 0
    }

    /// Whether a grain table entry of 1 means a zeroed grain.
    pub fn zero_grain(&self) -> bool {
        self.flags & FLAG_ZERO_GRAIN != 0
    }

    /// The redundant grain directory offset in sectors, if flag bit 1 is
    /// set and the offset is not 0.
    pub fn redundant_gd(&self) -> Option<u64> {
        (self.flags & FLAG_REDUNDANT_GD != 0 && self.rgd_offset != 0).then_some(self.rgd_offset)
    }

    /// The embedded descriptor as `(byte offset, byte length)`, `None` if
    /// there is none (offset or size 0). It must lie after the header,
    /// inside a file of `file_len` bytes, and be at most
    /// [`MAX_DESCRIPTOR_LEN`] bytes.
    pub fn descriptor_range(&self, file_len: u64) -> Result<Option<(u64, usize)>> {
        if self.descriptor_offset == 0 || self.descriptor_size == 0 {
            return Ok(None);
        }
        let bad = Error::BadDescriptorLocation {
            offset: self.descriptor_offset,
            size: self.descriptor_size,
        };
        let len = self
            .descriptor_size
            .checked_mul(SECTOR)
            .ok_or(Error::DescriptorTooLarge(u64::MAX))?;
        if len > MAX_DESCRIPTOR_LEN as u64 {
            return Err(Error::DescriptorTooLarge(len));
        }
        let offset = self.descriptor_offset.checked_mul(SECTOR).ok_or(bad)?;
        match offset.checked_add(len) {
            Some(end) if end <= file_len => Ok(Some((offset, len as usize))),
            _ => Err(bad),
        }
    }
}

/// Where the footer of a file of `file_len` bytes starts; the file must
/// hold a header sector and the footer.
pub fn footer_offset(file_len: u64) -> Result<u64> {
    if file_len < SECTOR + FOOTER_LEN {
        return Err(Error::Truncated {
            what: Structure::Footer,
            needed: SECTOR + FOOTER_LEN,
            available: file_len,
        });
    }
    Ok(file_len - FOOTER_LEN)
}

/// Checks the first 16 bytes of a marker sector: value `val` (or any if
/// `None`), size 0 and type `kind`.
fn check_marker(m: &[u8], val: Option<u64>, kind: u32) -> Result<()> {
    let v = le::u64_at(m, 0).ok_or(Error::BadFooter)?;
    let size = le::u32_at(m, 8).ok_or(Error::BadFooter)?;
    let t = le::u32_at(m, 12).ok_or(Error::BadFooter)?;
    if val.is_some_and(|want| want != v) || size != 0 || t != kind {
        return Err(Error::BadFooter);
    }
    Ok(())
}

/// Reads the header of the sparse extent in file `file` (of `file_len`
/// bytes) through `storage`, following the footer when the header says
/// `GD_AT_END`. The footer's header must not say `GD_AT_END` again.
pub fn read_sparse_header<S: Storage + ?Sized>(
    storage: &S,
    file: usize,
    file_len: u64,
) -> Result<SparseHeader> {
    if file_len < SECTOR {
        return Err(Error::Truncated {
            what: Structure::Header,
            needed: SECTOR,
            available: file_len,
        });
    }
    let mut sector = [0u8; HEADER_LEN];
    storage.read_at(file, &mut sector, 0)?;
    let header = SparseHeader::parse(&sector)?;
    if !header.needs_footer() {
        return Ok(header);
    }
    let at = footer_offset(file_len)?;
    let mut marker = [0u8; 16];
    storage.read_at(file, &mut marker, at)?;
    check_marker(&marker, None, MARKER_FOOTER)?;
    storage.read_at(file, &mut marker, at + 2 * SECTOR)?;
    check_marker(&marker, Some(0), MARKER_END_OF_STREAM)?;
    storage.read_at(file, &mut sector, at + SECTOR)?;
    let footer = SparseHeader::parse(&sector).map_err(|e| match e {
        Error::BadMagic(_) => Error::BadFooter,
        other => other,
    })?;
    if footer.needs_footer() {
        return Err(Error::BadGrainDirectoryOffset(footer.gd_offset));
    }
    Ok(footer)
}

/// Whether `first` (the first bytes of a file) starts with the sparse
/// extent magic; otherwise the file is read as a descriptor.
pub fn has_magic(first: &[u8]) -> bool {
    le::u32_at(first, 0) == Some(MAGIC)
}

/// The magic `COWD` of VMware 3 (and ESX `vmfsSparse`) sparse extents,
/// read as a little-endian `u32`.
pub const COWD_MAGIC: u32 = 0x4457_4f43;

/// What a file holds, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A hosted sparse extent (`KDMV`): monolithicSparse or
    /// streamOptimized when opened as the image.
    Sparse,
    /// Anything else: read as a descriptor (and refused by
    /// [`super::descriptor::Descriptor::parse`] if it is not one).
    Descriptor,
}

/// Classifies a file from its first bytes; the old `COWD` sparse format
/// is refused with [`Error::BadMagic`].
pub fn classify(first: &[u8]) -> Result<FileKind> {
    match le::u32_at(first, 0) {
        Some(MAGIC) => Ok(FileKind::Sparse),
        Some(COWD_MAGIC) => Err(Error::BadMagic(COWD_MAGIC)),
        _ => Ok(FileKind::Descriptor),
    }
}

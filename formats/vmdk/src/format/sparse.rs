//! Grain directory and grain tables of a hosted sparse extent (VMDK spec
//! "Grain Directories and Grain Tables"), and the answer to "what is at
//! this offset of the extent, and for how many bytes?".
//!
//! A grain directory entry (GDE, 32 bits) is the sector of a grain table,
//! 0 if the table was never allocated. A grain table entry (GTE, 32 bits)
//! is the sector of a grain, 0 if unallocated, and 1 a zeroed grain when
//! the header's flag bit 2 is set (without it, 1 is a sector like any
//! other, as in QEMU). Unallocated grains read as zeros: this code has no
//! parent (delta link) support. In a compressed extent a GTE is the
//! sector of the grain's marker (or of its deflate stream without
//! markers), see [`super::grain`].

use super::engine::Tables;
use super::error::{Error, Result, Structure};
use super::header::{
    SparseHeader, GD_AT_END, MAX_GD_ENTRIES, MAX_GRAIN_SECTORS, MAX_GTES_PER_GT, MAX_SECTORS,
    SECTOR,
};
use super::le;

/// A grain table entry meaning "zeroed grain" with flag bit 2.
pub const GTE_ZEROED: u32 = 1;

/// What a run of an extent (or of the disk) holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingKind {
    /// Never written: reads as zeros.
    Unallocated,
    /// A zeroed grain (GTE 1) or a `ZERO` extent: reads as zeros.
    Zero,
    /// Bytes at `host_offset` of the extent's file.
    Data {
        /// Byte offset in the extent's file.
        host_offset: u64,
    },
    /// A compressed grain whose marker (or stream) starts at `grain_offset`
    /// of the extent's file; the run lies inside that one grain.
    Compressed {
        /// Byte offset of the grain marker (or deflate stream).
        grain_offset: u64,
    },
}

/// A run of an extent: `len` bytes of the same kind (data runs contiguous
/// on the host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// What the run holds.
    pub kind: MappingKind,
    /// Length of the run in bytes (at least 1).
    pub len: u64,
}

/// Which grain directory serves reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Directory {
    /// The grain directory (`gdOffset`), what QEMU reads.
    Primary,
    /// The redundant grain directory (`rgdOffset`).
    Redundant,
}

/// A validated hosted sparse extent: what the read engine needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SparseExtent {
    capacity: u64,
    grain_bytes: u64,
    gtes_per_gt: u32,
    gd_entries: u32,
    gd_offset: u64,
    rgd_offset: Option<u64>,
    directory: Directory,
    compressed: bool,
    markers: bool,
    zero_grain: bool,
    file_len: u64,
}

fn in_file(what: Structure, offset_sectors: u64, len: u64, file_len: u64) -> Result<u64> {
    if offset_sectors == 0 || offset_sectors == GD_AT_END {
        return Err(Error::BadGrainDirectoryOffset(offset_sectors));
    }
    let offset = offset_sectors
        .checked_mul(SECTOR)
        .ok_or(Error::BadGrainDirectoryOffset(offset_sectors))?;
    match offset.checked_add(len) {
        Some(end) if end <= file_len => Ok(offset),
        _ => Err(Error::Truncated {
            what,
            needed: offset.saturating_add(len),
            available: file_len,
        }),
    }
}

impl SparseExtent {
    /// Validates `header` (after [`super::header::read_sparse_header`])
    /// for a file of `file_len` bytes: grain size a power of two of at
    /// most [`MAX_GRAIN_SECTORS`] sectors, 1..=512 entries per grain
    /// table, capacity at most [`MAX_SECTORS`], a grain directory of at
    /// most [`MAX_GD_ENTRIES`] entries inside the file (and the redundant
    /// one, if any), overhead inside the file.
    pub fn new(header: &SparseHeader, file_len: u64) -> Result<SparseExtent> {
        let g = header.grain_size;
        if g == 0 || g > MAX_GRAIN_SECTORS || !g.is_power_of_two() {
            return Err(Error::BadGrainSize(g));
        }
        let gtes = header.gtes_per_gt;
        if gtes == 0 || gtes > MAX_GTES_PER_GT {
            return Err(Error::BadGrainTableSize(gtes));
        }
        if header.capacity > MAX_SECTORS {
            return Err(Error::CapacityTooLarge(header.capacity));
        }
        // Both factors are bounded: no overflow.
        let span = u64::from(gtes) * g;
        let entries = header.capacity.div_ceil(span);
        if entries > MAX_GD_ENTRIES {
            return Err(Error::GrainDirectoryTooLarge(entries));
        }
        let gd_bytes = entries * 4;
        let gd_offset = in_file(
            Structure::GrainDirectory,
            header.gd_offset,
            gd_bytes,
            file_len,
        )?;
        let rgd_offset = match header.redundant_gd() {
            Some(rgd) => Some(in_file(
                Structure::RedundantGrainDirectory,
                rgd,
                gd_bytes,
                file_len,
            )?),
            None => None,
        };
        match header.overhead.checked_mul(SECTOR) {
            Some(o) if o <= file_len => {}
            _ => {
                return Err(Error::Truncated {
                    what: Structure::Header,
                    needed: header.overhead.saturating_mul(SECTOR),
                    available: file_len,
                })
            }
        }
        Ok(SparseExtent {
            capacity: header.capacity,
            grain_bytes: g * SECTOR,
            gtes_per_gt: gtes,
            // entries <= 2^23.
            gd_entries: entries as u32,
            gd_offset,
            rgd_offset,
            directory: Directory::Primary,
            compressed: header.compressed(),
            markers: header.markers(),
            zero_grain: header.zero_grain(),
            file_len,
        })
    }

    /// Serves reads from `directory`; [`Directory::Redundant`] fails with
    /// [`Error::BadGrainDirectoryOffset`] if the extent has none.
    pub fn use_directory(&mut self, directory: Directory) -> Result<()> {
        if directory == Directory::Redundant && self.rgd_offset.is_none() {
            return Err(Error::BadGrainDirectoryOffset(0));
        }
        self.directory = directory;
        Ok(())
    }

    /// The directory serving reads.
    pub fn directory(&self) -> Directory {
        self.directory
    }

    /// Capacity in sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Capacity in bytes.
    pub fn size(&self) -> u64 {
        self.capacity * SECTOR
    }

    /// Grain size in bytes (at most 1 MiB).
    pub fn grain_len(&self) -> usize {
        self.grain_bytes as usize
    }

    /// Entries per grain table.
    pub fn gtes_per_gt(&self) -> u32 {
        self.gtes_per_gt
    }

    /// Size of one grain table in bytes (at most 2 KiB).
    pub fn grain_table_len(&self) -> usize {
        self.gtes_per_gt as usize * 4
    }

    /// Number of grain directory entries.
    pub fn gd_entries(&self) -> u32 {
        self.gd_entries
    }

    /// Byte offset of the grain directory in use.
    pub fn gd_offset(&self) -> u64 {
        match (self.directory, self.rgd_offset) {
            (Directory::Redundant, Some(r)) => r,
            _ => self.gd_offset,
        }
    }

    /// Byte offset of the redundant grain directory, if any.
    pub fn redundant_gd_offset(&self) -> Option<u64> {
        self.rgd_offset
    }

    /// Size of a grain directory in bytes (at most 32 MiB).
    pub fn gd_len(&self) -> usize {
        self.gd_entries as usize * 4
    }

    /// Whether grains are compressed.
    pub fn compressed(&self) -> bool {
        self.compressed
    }

    /// Whether compressed grains have markers.
    pub fn markers(&self) -> bool {
        self.markers
    }

    /// Whether GTE 1 is a zeroed grain.
    pub fn zero_grain(&self) -> bool {
        self.zero_grain
    }

    /// Length of the extent's file.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Maps byte `offset` of this extent (extent number `extent` of the
    /// disk, used to address `tables`) for at most `max_len` bytes. The
    /// result never crosses a grain table's span, and a compressed run
    /// never crosses its grain. The grain table is checked to lie inside
    /// the file before `tables` is asked for it.
    pub fn map<T: Tables + ?Sized>(
        &self,
        tables: &mut T,
        extent: usize,
        offset: u64,
        max_len: u64,
    ) -> Result<Mapping> {
        if offset >= self.size() || max_len == 0 {
            return Err(Error::Internal);
        }
        let span = u64::from(self.gtes_per_gt) * self.grain_bytes;
        let (gd_index, within) = le::div_rem(offset, span).ok_or(Error::Internal)?;
        if gd_index >= u64::from(self.gd_entries) {
            return Err(Error::Internal);
        }
        let limit = max_len.min(span - within);
        // gd_index < gd_entries, a u32.
        let gde = tables.gd_entry(extent, gd_index as u32)?;
        if gde == 0 {
            return Ok(Mapping {
                kind: MappingKind::Unallocated,
                len: limit,
            });
        }
        let gt_len = self.grain_table_len();
        let gt_offset = u64::from(gde) * SECTOR;
        match gt_offset.checked_add(gt_len as u64) {
            Some(end) if end <= self.file_len => {}
            _ => {
                return Err(Error::PastEndOfFile {
                    what: Structure::GrainTable,
                    offset: gt_offset,
                    len: gt_len as u64,
                    file_len: self.file_len,
                })
            }
        }
        tables.with_grain_table(extent, gt_offset, |table: &[u8]| {
            self.map_in_table(table, within, limit)
        })?
    }

    /// Maps `within` bytes into a grain table's span for at most `limit`
    /// bytes (not beyond the span), merging following entries of the same
    /// kind (and contiguous data).
    pub fn map_in_table(&self, table: &[u8], within: u64, limit: u64) -> Result<Mapping> {
        if table.len() != self.grain_table_len() {
            return Err(Error::BufferSize {
                what: Structure::GrainTable,
                expected: self.grain_table_len() as u64,
                got: table.len() as u64,
            });
        }
        let g = self.grain_bytes;
        let (index, in_grain) = le::div_rem(within, g).ok_or(Error::Internal)?;
        let mut index = index as usize;
        let first = self.decode(table, index, in_grain)?;
        let mut len = (g - in_grain).min(limit);
        if matches!(first, MappingKind::Compressed { .. }) {
            return Ok(Mapping { kind: first, len });
        }
        while len < limit {
            index += 1;
            let Ok(next) = self.decode(table, index, 0) else {
                break;
            };
            let same = match (first, next) {
                (MappingKind::Data { host_offset: a }, MappingKind::Data { host_offset: b }) => {
                    a.checked_add(len) == Some(b)
                }
                (a, b) => a == b,
            };
            if !same {
                break;
            }
            len = (len + g).min(limit);
        }
        Ok(Mapping { kind: first, len })
    }

    fn decode(&self, table: &[u8], index: usize, in_grain: u64) -> Result<MappingKind> {
        let gte = index
            .checked_mul(4)
            .and_then(|at| le::u32_at(table, at))
            .ok_or(Error::Internal)?;
        Ok(match gte {
            0 => MappingKind::Unallocated,
            GTE_ZEROED if self.zero_grain => MappingKind::Zero,
            _ if self.compressed => MappingKind::Compressed {
                grain_offset: u64::from(gte) * SECTOR,
            },
            _ => MappingKind::Data {
                host_offset: u64::from(gte) * SECTOR + in_grain,
            },
        })
    }
}

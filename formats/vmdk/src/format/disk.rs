//! A virtual disk: its extents in order (VMDK spec "Extent
//! Descriptions").
//!
//! A monolithic image (monolithicSparse, streamOptimized) is one sparse
//! extent, the file itself. A descriptor file (monolithicFlat,
//! twoGbMaxExtentSparse, twoGbMaxExtentFlat) lists extents that follow
//! each other in the guest address space: sparse extents (each its own
//! hosted sparse file), flat extents (a range of a raw file) and `ZERO`
//! extents (no file, reads as zeros).
//!
//! The format logic never opens a path: the caller parses the descriptor
//! ([`super::descriptor::Descriptor`]), opens each named file (userspace
//! `losetup` in the kernel's case), and pushes the extents in order with
//! [`Disk::push`]. Extents are identified by their index in every trait
//! of [`super::engine`].

use super::error::{Error, Result, Structure};
use super::header::{MAX_SECTORS, SECTOR};
use super::sparse::SparseExtent;

/// Most extents in a disk (the kernel's `LFF_MAX_LAYERS` files).
pub const MAX_EXTENTS: usize = 16;

/// Most extent files a descriptor file may name: the kernel takes at most
/// `LFF_MAX_LAYERS` (16) files, the descriptor itself being the first.
pub const MAX_EXTENT_FILES: usize = MAX_EXTENTS - 1;

/// How an extent stores its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentKind {
    /// A hosted sparse extent (grain directory and tables).
    Sparse(SparseExtent),
    /// A raw range of a file.
    Flat {
        /// Byte offset of the extent's first sector in the file.
        offset: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// No file: reads as zeros.
    Zero,
}

/// One extent of a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    kind: ExtentKind,
    sectors: u64,
}

impl Extent {
    /// A sparse extent. `declared` is the size the descriptor lists for it
    /// (`None` for a monolithic image, whose header alone decides): it
    /// must equal the header's capacity.
    pub fn sparse(sparse: SparseExtent, declared: Option<u64>) -> Result<Extent> {
        if let Some(declared) = declared {
            if declared != sparse.capacity() {
                return Err(Error::ExtentSizeMismatch {
                    declared,
                    capacity: sparse.capacity(),
                });
            }
        }
        Ok(Extent {
            kind: ExtentKind::Sparse(sparse),
            sectors: sparse.capacity(),
        })
    }

    /// A flat extent of `sectors` sectors at sector `offset` of a file of
    /// `file_len` bytes, which must hold the whole extent.
    pub fn flat(sectors: u64, offset: u64, file_len: u64) -> Result<Extent> {
        if sectors > MAX_SECTORS || offset > MAX_SECTORS {
            return Err(Error::DiskTooLarge);
        }
        // Both below 2^40: no overflow.
        let end = (offset + sectors) * SECTOR;
        if end > file_len {
            return Err(Error::Truncated {
                what: Structure::FlatExtent,
                needed: end,
                available: file_len,
            });
        }
        Ok(Extent {
            kind: ExtentKind::Flat {
                offset: offset * SECTOR,
                file_len,
            },
            sectors,
        })
    }

    /// A `ZERO` extent of `sectors` sectors.
    pub fn zero(sectors: u64) -> Result<Extent> {
        if sectors > MAX_SECTORS {
            return Err(Error::DiskTooLarge);
        }
        Ok(Extent {
            kind: ExtentKind::Zero,
            sectors,
        })
    }

    /// How the extent stores its data.
    pub fn kind(&self) -> &ExtentKind {
        &self.kind
    }

    /// Mutable access to a sparse extent (to choose its directory).
    pub fn sparse_mut(&mut self) -> Option<&mut SparseExtent> {
        match &mut self.kind {
            ExtentKind::Sparse(s) => Some(s),
            _ => None,
        }
    }

    /// Size in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.sectors * SECTOR
    }
}

/// The extents of a virtual disk, in guest order.
#[derive(Clone, Copy, Debug)]
pub struct Disk {
    extents: [Option<Extent>; MAX_EXTENTS],
    starts: [u64; MAX_EXTENTS],
    len: usize,
    sectors: u64,
}

impl Default for Disk {
    fn default() -> Disk {
        Disk::new()
    }
}

impl Disk {
    /// A disk without extents (size 0).
    pub fn new() -> Disk {
        Disk {
            extents: [None; MAX_EXTENTS],
            starts: [0; MAX_EXTENTS],
            len: 0,
            sectors: 0,
        }
    }

    /// Appends `extent` after the previous ones. At most [`MAX_EXTENTS`]
    /// extents and [`MAX_SECTORS`] sectors in all.
    pub fn push(&mut self, extent: Extent) -> Result<()> {
        let sectors = self
            .sectors
            .checked_add(extent.sectors)
            .filter(|&s| s <= MAX_SECTORS)
            .ok_or(Error::DiskTooLarge)?;
        let slot = self
            .extents
            .get_mut(self.len)
            .ok_or(Error::TooManyExtents)?;
        *slot = Some(extent);
        *self.starts.get_mut(self.len).ok_or(Error::Internal)? = self.sectors * SECTOR;
        self.len += 1;
        self.sectors = sectors;
        Ok(())
    }

    /// Number of extents.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the disk has no extent.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Extent number `index`.
    pub fn extent(&self, index: usize) -> Option<&Extent> {
        self.extents.get(index).and_then(Option::as_ref)
    }

    /// Mutable extent number `index`.
    pub fn extent_mut(&mut self, index: usize) -> Option<&mut Extent> {
        self.extents.get_mut(index).and_then(Option::as_mut)
    }

    /// Byte offset in the disk where extent `index` starts.
    pub fn extent_start(&self, index: usize) -> Option<u64> {
        (index < self.len).then(|| self.starts.get(index).copied())?
    }

    /// Size in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Virtual disk size in bytes.
    pub fn size(&self) -> u64 {
        self.sectors * SECTOR
    }

    /// The extent holding byte `offset` of the disk: its index, the extent
    /// and its start offset. `None` at or beyond the end; empty extents
    /// are skipped.
    pub fn find(&self, offset: u64) -> Option<(usize, &Extent, u64)> {
        (0..self.len).find_map(|i| {
            let e = self.extent(i)?;
            let start = *self.starts.get(i)?;
            (offset >= start && offset - start < e.size()).then_some((i, e, start))
        })
    }
}

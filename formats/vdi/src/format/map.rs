//! The block map and the read engine.
//!
//! Block map entry `i` (32 bits) says where guest block `i` is: the index
//! `n` of a data block at `offset_data + n * block_size` of the file,
//! `0xffffffff` for a block never written and `0xfffffffe` for a block
//! that reads as zeros (discarded or zeroed). Both read as zeros: this
//! code has no parent support. Static images have every entry allocated.
//!
//! [`Vdi::map`] answers "what is at this offset, and for how many
//! bytes?", merging following blocks of the same kind (data blocks while
//! they are contiguous in the file); [`Vdi::read`] serves a request with
//! it. The caller owns the block map ([`BlockMap`], loaded at open) and
//! the output ([`Sink`]); every data range is checked to lie inside the
//! file first, and a bad entry fails only the requests that use it.

use super::error::{Error, Result, Structure};
use super::header::Header;

/// Block map entry of a block never written.
pub const BLOCK_UNALLOCATED: u32 = 0xffff_ffff;
/// Block map entry of a block that reads as zeros.
pub const BLOCK_ZERO: u32 = 0xffff_fffe;

/// The block map of an image; the caller owns the memory.
pub trait BlockMap {
    /// Entry `index` (host-endian) of the block map; the engine only asks
    /// for `index < blocks_in_image`.
    fn entry(&mut self, index: u32) -> Result<u32>;
}

/// Destination of a read request; each call appends to what was written
/// before.
pub trait Sink {
    /// Appends `len` zero bytes.
    fn fill_zero(&mut self, len: usize) -> Result<()>;
    /// Appends `len` bytes read from the image file at `offset` (the range
    /// has been checked to lie inside the file).
    fn read_from_storage(&mut self, offset: u64, len: usize) -> Result<()>;
}

/// What a run of the disk holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingKind {
    /// Never written (`0xffffffff`): reads as zeros.
    Unallocated,
    /// A zero block (`0xfffffffe`): reads as zeros.
    Zero,
    /// Bytes at `host_offset` of the file.
    Data {
        /// Byte offset in the file.
        host_offset: u64,
    },
}

/// A run of the disk: `len` bytes of the same kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// What the run holds.
    pub kind: MappingKind,
    /// Length in bytes (at least 1).
    pub len: u64,
}

/// An opened image: what the read engine needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vdi {
    size: u64,
    block_size: u64,
    blocks: u32,
    offset_data: u64,
    file_len: u64,
}

impl Vdi {
    /// The image described by `header` in a file of `file_len` bytes.
    pub fn new(header: &Header, file_len: u64) -> Vdi {
        Vdi {
            size: header.size(),
            block_size: u64::from(header.block_size),
            blocks: header.blocks_in_image,
            offset_data: u64::from(header.offset_data),
            file_len,
        }
    }

    /// Virtual size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Length of the file.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    fn decode(&self, entry: u32, in_block: u64) -> MappingKind {
        match entry {
            BLOCK_UNALLOCATED => MappingKind::Unallocated,
            BLOCK_ZERO => MappingKind::Zero,
            // entry < 2^32, block size 2^20: no overflow.
            n => MappingKind::Data {
                host_offset: self.offset_data + u64::from(n) * self.block_size + in_block,
            },
        }
    }

    /// Maps guest `offset` for at most `max_len` bytes (both inside the
    /// disk).
    pub fn map<M: BlockMap + ?Sized>(
        &self,
        map: &mut M,
        offset: u64,
        max_len: u64,
    ) -> Result<Mapping> {
        let end = offset.checked_add(max_len).ok_or(Error::Internal)?;
        if max_len == 0 || end > self.size {
            return Err(Error::Internal);
        }
        let b = self.block_size;
        let mut index = offset / b;
        let in_block = offset % b;
        let raw = map.entry(u32::try_from(index).map_err(|_| Error::Internal)?)?;
        let kind = self.decode(raw, in_block);
        let mut len = (b - in_block).min(max_len);
        while len < max_len {
            index += 1;
            let next_index = u32::try_from(index).map_err(|_| Error::Internal)?;
            if next_index >= self.blocks {
                break;
            }
            let next = self.decode(map.entry(next_index)?, 0);
            let same = match (kind, next) {
                (MappingKind::Data { host_offset: a }, MappingKind::Data { host_offset: b }) => {
                    a.checked_add(len) == Some(b)
                }
                (a, b) => a == b,
            };
            if !same {
                break;
            }
            len = (len + b).min(max_len);
        }
        Ok(Mapping { kind, len })
    }

    /// Reads `len` bytes of the virtual disk at `offset` into `sink`.
    ///
    /// Fails with [`Error::OutOfRange`] if the range reaches beyond the
    /// virtual size. On error the sink may hold a prefix of the data.
    pub fn read<M, K>(&self, map: &mut M, offset: u64, len: usize, sink: &mut K) -> Result<()>
    where
        M: BlockMap + ?Sized,
        K: Sink + ?Sized,
    {
        let out_of_range = Error::OutOfRange {
            offset,
            len: len as u64,
            size: self.size,
        };
        let end = offset.checked_add(len as u64).ok_or(out_of_range)?;
        if end > self.size {
            return Err(out_of_range);
        }
        let mut pos = offset;
        while pos < end {
            let m = self.map(map, pos, end - pos)?;
            if m.len == 0 || m.len > end - pos {
                return Err(Error::Internal);
            }
            let n = usize::try_from(m.len).map_err(|_| Error::Internal)?;
            match m.kind {
                MappingKind::Unallocated | MappingKind::Zero => sink.fill_zero(n)?,
                MappingKind::Data { host_offset } => {
                    match host_offset.checked_add(m.len) {
                        Some(e) if e <= self.file_len => {}
                        _ => {
                            return Err(Error::PastEndOfFile {
                                what: Structure::Block,
                                offset: host_offset,
                                len: m.len,
                                file_len: self.file_len,
                            })
                        }
                    }
                    sink.read_from_storage(host_offset, n)?;
                }
            }
            pos += m.len;
        }
        Ok(())
    }
}

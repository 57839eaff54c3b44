//! The allocation-free read engine shared by a kernel module, the host
//! reader and fuzzers.
//!
//! The engine owns no buffers and does no I/O of its own. It is generic
//! over small traits the caller implements, as the qcow2 engine is:
//!
//! - [`Storage`]: read bytes of an extent's file (used by the header and
//!   compressed-grain helpers);
//! - [`Tables`]: grain directory entries of each sparse extent (loaded
//!   once at open) and grain tables on demand; the caller owns the cache;
//! - [`CompressedGrains`]: decompressed grains on demand; the caller owns
//!   buffers and any cache, typically with [`GrainRead::load`];
//! - [`Sink`]: where the request's bytes go, in order.
//!
//! [`Disk::read`] splits a request into runs: by extent, then (for sparse
//! extents) with [`SparseExtent::map`]. Unallocated and zero runs are
//! filled with zeros, data runs are read from the extent's file after a
//! check that they lie inside it, compressed runs are copied out of the
//! decompressed grain. A bad pointer fails the request with an `EIO`-class
//! error and nothing else. Every step consumes at least one byte, so the
//! work is bounded by the request length.

use super::disk::{Disk, ExtentKind};
use super::error::{Error, Result, Structure};
use super::grain::GrainRead;
use super::le;
use super::sparse::{MappingKind, SparseExtent};

/// Byte access to the files of a disk's extents.
pub trait Storage {
    /// Fills `buf` with the bytes at `offset` of extent `extent`'s file. A
    /// short read is an error.
    fn read_at(&self, extent: usize, buf: &mut [u8], offset: u64) -> Result<()>;
}

/// The grain directories and grain tables of a disk's sparse extents; the
/// caller owns the memory and any caching.
pub trait Tables {
    /// Grain directory entry `index` (host-endian) of extent `extent`, from
    /// the directory in use ([`SparseExtent::gd_offset`],
    /// [`SparseExtent::gd_len`]). The engine only asks for
    /// `index < gd_entries`.
    fn gd_entry(&mut self, extent: usize, index: u32) -> Result<u32>;

    /// Calls `f` with the grain table (exactly
    /// [`SparseExtent::grain_table_len`] bytes, little-endian entries) at
    /// byte `offset` of extent `extent`'s file, loading it if needed. The
    /// engine has checked that the table lies inside the file.
    fn with_grain_table<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        extent: usize,
        offset: u64,
        f: F,
    ) -> Result<R>;
}

/// Provider of decompressed grains; the caller owns buffers and caching.
pub trait CompressedGrains {
    /// Calls `f` with the decompressed grain described by `request` (all
    /// `request.grain_len` bytes), e.g. with [`GrainRead::load`].
    fn with_grain<R, F: FnOnce(&[u8]) -> R>(&mut self, request: &GrainRead, f: F) -> Result<R>;
}

/// Destination of a read request; each call appends to what was written
/// before.
pub trait Sink {
    /// Appends `len` zero bytes.
    fn fill_zero(&mut self, len: usize) -> Result<()>;
    /// Appends `data`.
    fn copy_from(&mut self, data: &[u8]) -> Result<()>;
    /// Appends `len` bytes read from extent `extent`'s file at `offset`
    /// (the range has been checked to lie inside the file).
    fn read_from_storage(&mut self, extent: usize, offset: u64, len: usize) -> Result<()>;
}

fn to_usize(len: u64) -> Result<usize> {
    usize::try_from(len).map_err(|_| Error::Internal)
}

fn check_in_file(what: Structure, offset: u64, len: u64, file_len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(Error::PastEndOfFile {
            what,
            offset,
            len,
            file_len,
        }),
    }
}

impl Disk {
    /// Reads `len` bytes of the virtual disk at `offset` into `sink`.
    ///
    /// Fails with [`Error::OutOfRange`] if the range reaches beyond the
    /// virtual size. On error the sink may hold a prefix of the data.
    pub fn read<T, C, K>(
        &self,
        tables: &mut T,
        grains: &mut C,
        offset: u64,
        len: usize,
        sink: &mut K,
    ) -> Result<()>
    where
        T: Tables + ?Sized,
        C: CompressedGrains + ?Sized,
        K: Sink + ?Sized,
    {
        let size = self.size();
        let out_of_range = Error::OutOfRange {
            offset,
            len: len as u64,
            size,
        };
        let end = offset.checked_add(len as u64).ok_or(out_of_range)?;
        if end > size {
            return Err(out_of_range);
        }
        let mut pos = offset;
        while pos < end {
            let (index, extent, start) = self.find(pos).ok_or(Error::Internal)?;
            let rel = pos - start;
            let want = (end - pos).min(extent.size() - rel);
            let n = match extent.kind() {
                ExtentKind::Zero => {
                    sink.fill_zero(to_usize(want)?)?;
                    want
                }
                ExtentKind::Flat { offset, file_len } => {
                    let host = offset.checked_add(rel).ok_or(Error::Internal)?;
                    check_in_file(Structure::FlatExtent, host, want, *file_len)?;
                    sink.read_from_storage(index, host, to_usize(want)?)?;
                    want
                }
                ExtentKind::Sparse(s) => {
                    Self::step_sparse(s, index, tables, grains, rel, want, sink)?
                }
            };
            if n == 0 || n > want {
                return Err(Error::Internal);
            }
            pos += n;
        }
        Ok(())
    }

    /// Serves a prefix of `[rel, rel + want)` of sparse extent `s`.
    fn step_sparse<T, C, K>(
        s: &SparseExtent,
        index: usize,
        tables: &mut T,
        grains: &mut C,
        rel: u64,
        want: u64,
        sink: &mut K,
    ) -> Result<u64>
    where
        T: Tables + ?Sized,
        C: CompressedGrains + ?Sized,
        K: Sink + ?Sized,
    {
        let m = s.map(tables, index, rel, want)?;
        if m.len == 0 || m.len > want {
            return Err(Error::Internal);
        }
        let n = to_usize(m.len)?;
        match m.kind {
            MappingKind::Unallocated | MappingKind::Zero => sink.fill_zero(n)?,
            MappingKind::Data { host_offset } => {
                check_in_file(Structure::Grain, host_offset, m.len, s.file_len())?;
                sink.read_from_storage(index, host_offset, n)?;
            }
            MappingKind::Compressed { grain_offset } => {
                let grain_len = s.grain_len();
                let g = grain_len as u64;
                let (_, in_grain) = le::div_rem(rel, g).ok_or(Error::Internal)?;
                let grain_start = rel - in_grain;
                let start = to_usize(in_grain)?;
                let stop = start.checked_add(n).ok_or(Error::Internal)?;
                let needed = to_usize(g.min(s.size() - grain_start))?;
                if stop > needed {
                    return Err(Error::Internal);
                }
                let request = GrainRead {
                    extent: index,
                    grain_offset,
                    markers: s.markers(),
                    grain_len,
                    needed,
                    file_len: s.file_len(),
                };
                grains.with_grain(&request, |grain: &[u8]| {
                    if grain.len() != grain_len {
                        return Err(Error::BufferSize {
                            what: Structure::CompressedGrain,
                            expected: g,
                            got: grain.len() as u64,
                        });
                    }
                    sink.copy_from(grain.get(start..stop).ok_or(Error::Internal)?)
                })??;
            }
        }
        Ok(m.len)
    }
}

//! Compressed grains (VMDK spec "Stream-Optimized Compressed Sparse
//! Extents").
//!
//! In a compressed extent a grain table entry is the sector of the grain's
//! data. With markers (flag bit 17, streamOptimized) the data starts with
//! a 12-byte grain marker: the grain's first sector in the extent (`u64`,
//! not checked, as in QEMU) and the length of the compressed data (`u32`),
//! followed by that many bytes of a zlib stream (RFC 1950: deflate with
//! the zlib header, what zlib's `compress()` writes). Without markers the
//! stream starts at the sector and is read for at most one grain.
//!
//! A grain decompresses to one grain, except the last grain of an extent
//! whose capacity is not a multiple of the grain size, which needs only
//! the bytes up to the capacity; a stream must end within one grain, as
//! QEMU's `uncompress()` into a one-grain buffer demands. A read is served only from a whole
//! decompressed grain, as with qcow2's compressed clusters: a stream that
//! is corrupt anywhere or too short fails every read of the grain, so
//! whether a read succeeds never depends on what was read before. A
//! [`Decompressor`] is supplied by the caller: the kernel wraps
//! `zlib_inflate`, the host build uses flate2.

use super::engine::Storage;
use super::error::{Error, Result, Structure};

/// Length of a grain marker header: `lba` (`u64`) and `size` (`u32`).
pub const MARKER_LEN: usize = 12;

/// Largest compressed data read for a grain of `grain_len` bytes (two
/// grains, as in QEMU, marker included): the size of an input buffer that
/// fits any grain.
pub fn max_compressed_len(grain_len: usize) -> usize {
    grain_len.saturating_mul(2)
}

/// A zlib decompression engine supplied by the caller.
///
/// `inflate` decodes the whole zlib stream (RFC 1950, checksum included)
/// at the start of `input` into `output` and returns how many bytes it
/// wrote, as zlib's `uncompress()` does for QEMU. It must never write past
/// `output`, and must ignore input after the end of the stream. A corrupt
/// or truncated stream, a bad checksum, or a stream producing more than
/// `output.len()` bytes is [`Error::DecompressionFailed`] (the kernel's
/// `zlib_inflate` with `Z_FINISH` reports exactly these).
pub trait Decompressor {
    /// Decompresses one grain; see the trait docs.
    fn inflate(&mut self, input: &[u8], output: &mut [u8]) -> Result<usize>;
}

/// What the read engine asks a
/// [`CompressedGrains`](super::engine::CompressedGrains) provider to
/// produce: the decompressed grain whose data starts at `grain_offset` of
/// extent `extent`'s file.
///
/// `(extent, grain_offset, needed)` identifies the result and is the cache
/// key: a hostile image can point two grain table entries, one of them the
/// short last grain, at the same data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrainRead {
    /// Index of the extent in the disk.
    pub extent: usize,
    /// Byte offset of the marker (or the stream) in the extent's file.
    pub grain_offset: u64,
    /// Whether the data starts with a grain marker.
    pub markers: bool,
    /// Grain size in bytes: the output buffer's size.
    pub grain_len: usize,
    /// Bytes the stream must produce at least (the grain, or what is left
    /// of the extent for its last grain).
    pub needed: usize,
    /// Length of the extent's file.
    pub file_len: u64,
}

fn past_end(offset: u64, len: u64, file_len: u64) -> Error {
    Error::PastEndOfFile {
        what: Structure::CompressedGrain,
        offset,
        len,
        file_len,
    }
}

impl GrainRead {
    /// The byte range `(offset, len)` of the compressed stream: after the
    /// marker (read through `storage`) or, without markers, at most one
    /// grain clamped to the file. Fails if it leaves the file or the
    /// marker's size is 0 or does not fit in
    /// [`max_compressed_len`] with the marker.
    pub fn stream_range<S: Storage + ?Sized>(&self, storage: &S) -> Result<(u64, usize)> {
        let off = self.grain_offset;
        if off >= self.file_len {
            return Err(past_end(off, MARKER_LEN as u64, self.file_len));
        }
        if !self.markers {
            let len = (self.grain_len as u64).min(self.file_len - off);
            return Ok((off, len as usize));
        }
        let data = off
            .checked_add(MARKER_LEN as u64)
            .filter(|&end| end <= self.file_len)
            .ok_or_else(|| past_end(off, MARKER_LEN as u64, self.file_len))?;
        let mut marker = [0u8; MARKER_LEN];
        storage.read_at(self.extent, &mut marker, off)?;
        let size = u32::from_le_bytes([marker[8], marker[9], marker[10], marker[11]]);
        let max = max_compressed_len(self.grain_len) - MARKER_LEN;
        if size == 0 || size as usize > max {
            return Err(Error::BadGrainMarker { offset: off, size });
        }
        match data.checked_add(u64::from(size)) {
            Some(end) if end <= self.file_len => Ok((data, size as usize)),
            _ => Err(past_end(data, u64::from(size), self.file_len)),
        }
    }

    /// Convenience for providers: reads the compressed stream through
    /// `storage` into `input` (at least [`max_compressed_len`] of the
    /// grain) and decompresses it into `output` (exactly one grain),
    /// failing if the stream is corrupt or produces fewer than `needed`
    /// bytes. Bytes of `output` past what the stream produced are zeroed.
    pub fn load<S: Storage + ?Sized, D: Decompressor + ?Sized>(
        &self,
        storage: &S,
        decompressor: &mut D,
        input: &mut [u8],
        output: &mut [u8],
    ) -> Result<()> {
        if output.len() != self.grain_len || self.needed > self.grain_len {
            return Err(Error::BufferSize {
                what: Structure::CompressedGrain,
                expected: self.grain_len as u64,
                got: output.len() as u64,
            });
        }
        let (offset, len) = self.stream_range(storage)?;
        let input_len = input.len() as u64;
        let Some(input) = input.get_mut(..len) else {
            return Err(Error::BufferSize {
                what: Structure::CompressedGrain,
                expected: len as u64,
                got: input_len,
            });
        };
        storage.read_at(self.extent, input, offset)?;
        let got = decompressor.inflate(input, output)?;
        if got < self.needed || got > output.len() {
            return Err(Error::DecompressedSizeMismatch {
                expected: self.needed as u64,
                got: got as u64,
            });
        }
        if let Some(rest) = output.get_mut(got..) {
            rest.fill(0);
        }
        Ok(())
    }
}

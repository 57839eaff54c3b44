//! Compressed clusters (spec "Compressed Clusters Descriptor" and header
//! field `compression_type`, byte 104).
//!
//! A compressed L2 entry (bit 62 set) holds a descriptor whose layout depends
//! on `cluster_bits`: with `x = 62 - (cluster_bits - 8)`, bits `0..x` are the
//! host byte offset of the compressed data (not aligned to anything) and bits
//! `x..=61` the number of *additional* 512-byte sectors, beyond the sector
//! holding the offset. The data therefore spans
//! `(additional + 1) * 512 - (offset % 512)` bytes at most; it may end in the
//! middle of its last sector and may continue into the next host cluster.
//! The range is clamped to the file length (the last sector of the file may
//! be short).
//!
//! Decompression contract: compression type 0 is a raw deflate stream (RFC
//! 1951, no zlib header), type 1 a zstd frame. The output must be exactly one
//! cluster; input bytes after the end of the stream are ignored (they belong
//! to the sector padding or to the next compressed cluster).
//!
//! A read is served only from a whole decompressed cluster, as in QEMU
//! (`qcow2_decompress_cluster`): a stream that is corrupt anywhere, or
//! ends before it produced a whole cluster, fails every read of the
//! cluster, and whether a read of an image succeeds depends only on the
//! image and the range, never on what was read before. Inflating only the
//! prefix a read needs would be faster for small random reads of deflate
//! clusters, but whether the rest of the stream is short or corrupt is
//! only known after decoding it, so such a read would succeed or fail by
//! the order of the reads before it. A
//! [`Decompressor`] is supplied by the caller: the kernel wraps
//! `zlib_inflate`/`zstd`, the host build uses flate2/zstd.

use super::engine::Storage;
use super::error::{Error, Result, Structure};

/// The compression algorithm of all compressed clusters of an image (spec
/// header byte 104).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CompressionType {
    /// Type 0: raw deflate without zlib header ("zlib" in QEMU).
    #[default]
    Deflate,
    /// Type 1: a zstd frame.
    Zstd,
}

impl CompressionType {
    /// Decodes the `compression_type` header byte.
    pub fn from_raw(raw: u8) -> Result<CompressionType> {
        match raw {
            0 => Ok(CompressionType::Deflate),
            1 => Ok(CompressionType::Zstd),
            other => Err(Error::UnsupportedCompressionType(other)),
        }
    }

    /// The header byte for this type.
    pub fn raw(self) -> u8 {
        match self {
            CompressionType::Deflate => 0,
            CompressionType::Zstd => 1,
        }
    }

    /// The name QEMU uses (`zlib` or `zstd`).
    pub fn name(self) -> &'static str {
        match self {
            CompressionType::Deflate => "zlib",
            CompressionType::Zstd => "zstd",
        }
    }
}

/// Size of the sectors counted in a compressed cluster descriptor.
pub const COMPRESSED_SECTOR_SIZE: u64 = 512;

/// Host offsets must stay below 2^56 (spec "Cluster mapping").
const MAX_HOST_OFFSET_BITS: u32 = 56;

/// A decoded compressed cluster descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressedDescriptor {
    host_offset: u64,
    additional_sectors: u64,
}

impl CompressedDescriptor {
    /// Decodes the descriptor of a compressed L2 entry (`raw` is the whole
    /// 64-bit entry; bits 62 and 63 are ignored) for `cluster_bits`.
    ///
    /// Fails if `cluster_bits` is outside 9..=21 or the offset field uses
    /// bits at or above 56, which must be zero.
    pub fn decode(cluster_bits: u32, raw: u64) -> Result<CompressedDescriptor> {
        if !(super::header::MIN_CLUSTER_BITS..=super::header::MAX_CLUSTER_BITS)
            .contains(&cluster_bits)
        {
            return Err(Error::BadClusterBits(cluster_bits));
        }
        // x = 62 - (cluster_bits - 8), in 49..=61 here.
        let x = 70 - cluster_bits;
        let desc = raw & ((1u64 << 62) - 1);
        let host_offset = desc & ((1u64 << x) - 1);
        let additional_sectors = desc >> x;
        if host_offset >> MAX_HOST_OFFSET_BITS != 0 {
            return Err(Error::CorruptCompressedDescriptor(raw));
        }
        Ok(CompressedDescriptor {
            host_offset,
            additional_sectors,
        })
    }

    /// Encodes the descriptor bits (without bit 62) for `cluster_bits`, the
    /// inverse of [`CompressedDescriptor::decode`]; `None` if a field does
    /// not fit. Useful to build test images.
    pub fn encode(cluster_bits: u32, host_offset: u64, additional_sectors: u64) -> Option<u64> {
        if !(super::header::MIN_CLUSTER_BITS..=super::header::MAX_CLUSTER_BITS)
            .contains(&cluster_bits)
        {
            return None;
        }
        let x = 70 - cluster_bits;
        if host_offset >> x.min(MAX_HOST_OFFSET_BITS) != 0
            || additional_sectors >> (cluster_bits - 8) != 0
        {
            return None;
        }
        Some(host_offset | (additional_sectors << x))
    }

    /// Host byte offset of the compressed data.
    pub fn host_offset(&self) -> u64 {
        self.host_offset
    }

    /// Number of 512-byte sectors after the one containing the offset.
    pub fn additional_sectors(&self) -> u64 {
        self.additional_sectors
    }

    /// Upper bound of the compressed data length in bytes: from the offset
    /// to the end of the last sector.
    pub fn max_len(&self) -> u64 {
        // additional_sectors < 2^13, so no overflow.
        (self.additional_sectors + 1) * COMPRESSED_SECTOR_SIZE
            - (self.host_offset % COMPRESSED_SECTOR_SIZE)
    }

    /// The byte range `(offset, len)` to read, clamped to `file_len`. Fails
    /// if the data starts at or beyond the end of the file.
    pub fn read_range(&self, file_len: u64) -> Result<(u64, u64)> {
        if self.host_offset >= file_len {
            return Err(Error::PastEndOfFile {
                what: Structure::CompressedCluster,
                offset: self.host_offset,
                len: self.max_len(),
                file_len,
            });
        }
        let len = self.max_len().min(file_len - self.host_offset);
        Ok((self.host_offset, len))
    }
}

/// Largest possible compressed data length for `cluster_bits` (two
/// clusters): the size of an input buffer that fits any descriptor.
pub fn max_compressed_len(cluster_bits: u32) -> usize {
    // (2^(cluster_bits - 8)) sectors of 512 bytes = 2 * cluster size.
    2usize
        << cluster_bits.clamp(
            super::header::MIN_CLUSTER_BITS,
            super::header::MAX_CLUSTER_BITS,
        )
}

/// A decompression engine supplied by the caller.
///
/// `decompress` inflates `input` into `output` and returns how many bytes it
/// wrote. It must never write past `output`, must stop when `output` is
/// full, and must ignore input left over after the end of the stream or
/// frame. Corrupt data is [`Error::DecompressionFailed`].
pub trait Decompressor {
    /// Decompresses one cluster's worth of data; see the trait docs.
    fn decompress(
        &mut self,
        kind: CompressionType,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<usize>;
}

/// Runs `decompressor` and checks that it produced exactly `output.len()`
/// bytes (one cluster).
pub fn decompress_cluster<D: Decompressor + ?Sized>(
    decompressor: &mut D,
    kind: CompressionType,
    input: &[u8],
    output: &mut [u8],
) -> Result<()> {
    let got = decompressor.decompress(kind, input, output)?;
    if got != output.len() {
        return Err(Error::DecompressedSizeMismatch {
            expected: output.len() as u64,
            got: got as u64,
        });
    }
    Ok(())
}

/// What the read engine asks a
/// [`CompressedClusters`](super::engine::CompressedClusters) provider to
/// produce: the decompressed cluster whose compressed bytes are
/// `len` bytes at `host_offset` in layer `layer`.
///
/// `(layer, host_offset, len)` identifies the cluster and is a good cache
/// key. The offset alone is not: a hostile image can have two descriptors
/// at the same offset with different lengths, one of which fails to
/// decompress, and a result must not depend on which was read first.
/// The range has been validated against the layer's file length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressedRead {
    /// Index of the layer in the chain (0 = top).
    pub layer: usize,
    /// Host offset of the compressed data.
    pub host_offset: u64,
    /// Length of the compressed data (clamped to the file end).
    pub len: usize,
    /// The image's compression type.
    pub compression: CompressionType,
    /// Cluster size: the exact decompressed length.
    pub cluster_size: usize,
}

impl CompressedRead {
    /// How many bytes of the cluster a provider decompresses for this
    /// read: always the whole cluster (see the module documentation), for
    /// deflate and zstd alike.
    pub fn prefix_len(&self) -> usize {
        self.cluster_size
    }

    /// How much a caching provider decodes for this read, whatever it
    /// holds for the cluster (`cached_len`, 0 if nothing): the whole
    /// cluster, so the first read of a cluster decides for all of them.
    pub fn decode_len(&self, cached_len: usize) -> usize {
        let _ = cached_len;
        self.cluster_size
    }

    /// Convenience for providers: reads the compressed bytes through
    /// `storage` into `input` (at least `self.len` bytes, see
    /// [`max_compressed_len`]) and decompresses the whole cluster into
    /// `output` (exactly `cluster_size` bytes), failing if the stream is
    /// corrupt or produces less.
    pub fn load<S: Storage + ?Sized, D: Decompressor + ?Sized>(
        &self,
        storage: &S,
        decompressor: &mut D,
        input: &mut [u8],
        output: &mut [u8],
    ) -> Result<()> {
        if output.len() != self.cluster_size {
            return Err(Error::BufferSize {
                what: Structure::CompressedCluster,
                expected: self.cluster_size as u64,
                got: output.len() as u64,
            });
        }
        let input_len = input.len() as u64;
        let Some(input) = input.get_mut(..self.len) else {
            return Err(Error::BufferSize {
                what: Structure::CompressedCluster,
                expected: self.len as u64,
                got: input_len,
            });
        };
        storage.read_at(self.layer, input, self.host_offset)?;
        decompress_cluster(decompressor, self.compression, input, output)
    }
}

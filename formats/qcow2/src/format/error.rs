//! Errors of the qcow2 format logic.
//!
//! One variant per reason, so a refused image gives a precise message. Every
//! variant has a class ([`Error::kind`]) and a short static description
//! ([`Error::describe`]) for a one-line kernel log; the [`core::fmt::Display`]
//! impl adds the numbers involved.
//!
//! The crate knows no errno numbers: they differ between architectures
//! (`EOPNOTSUPP` is 95 on x86 and arm, 122 on mips, 45 on sparc, 223 on
//! parisc; `ELOOP` is 40, 90, 62, 86...). The caller maps a [`ErrorKind`]
//! to its own codes at the boundary: the kernel driver to `kernel::error`
//! codes from the bindings, the host side to libc's
//! (`crate::host::errno`). The classes, with the errno each stands for:
//! - [`ErrorKind::Invalid`] (`EINVAL`): the image is malformed (refused at
//!   open),
//! - [`ErrorKind::Unsupported`] (`EOPNOTSUPP`): the image uses a feature this
//!   code does not implement (encryption, external data file, unknown
//!   incompatible feature bits),
//! - [`ErrorKind::TooLarge`] (`EFBIG`): a size or table is absurdly large,
//! - [`ErrorKind::ChainTooDeep`] (`ELOOP`): the backing chain is too long,
//! - [`ErrorKind::NotFound`] (`ENOENT`): no such snapshot,
//! - [`ErrorKind::Corrupt`] (`EIO`): metadata found corrupt while serving a
//!   request; only that request fails,
//! - [`ErrorKind::Io`]: whatever the caller's I/O layer reported, in the
//!   caller's own numbering, for [`Error::Io`].

use core::fmt;

/// The class of an [`Error`], which the caller turns into its errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The image is malformed (`EINVAL`).
    Invalid,
    /// The image needs a feature this code lacks (`EOPNOTSUPP`).
    Unsupported,
    /// A size or table is too large (`EFBIG`).
    TooLarge,
    /// The backing chain is too deep (`ELOOP`).
    ChainTooDeep,
    /// No such snapshot (`ENOENT`).
    NotFound,
    /// Corrupt metadata or data met while serving a request (`EIO`).
    Corrupt,
    /// The caller's I/O layer failed with this positive errno, in the
    /// caller's numbering (never 0 or negative: those become
    /// [`ErrorKind::Corrupt`]).
    Io(i32),
}

/// The on-disk structure an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    /// The image header (spec "Header").
    Header,
    /// A header extension (spec "Header extensions").
    HeaderExtension,
    /// The backing file name stored in the first cluster.
    BackingFileName,
    /// The active L1 table.
    L1Table,
    /// An L2 table.
    L2Table,
    /// The refcount table.
    RefcountTable,
    /// A refcount block.
    RefcountBlock,
    /// The snapshot table.
    SnapshotTable,
    /// The L1 table of an internal snapshot.
    SnapshotL1Table,
    /// A standard (uncompressed) data cluster.
    DataCluster,
    /// A compressed cluster.
    CompressedCluster,
    /// The guest (virtual disk) address space.
    Guest,
}

impl Structure {
    /// Short lowercase name for log lines.
    pub fn name(self) -> &'static str {
        match self {
            Structure::Header => "header",
            Structure::HeaderExtension => "header extension",
            Structure::BackingFileName => "backing file name",
            Structure::L1Table => "L1 table",
            Structure::L2Table => "L2 table",
            Structure::RefcountTable => "refcount table",
            Structure::RefcountBlock => "refcount block",
            Structure::SnapshotTable => "snapshot table",
            Structure::SnapshotL1Table => "snapshot L1 table",
            Structure::DataCluster => "data cluster",
            Structure::CompressedCluster => "compressed cluster",
            Structure::Guest => "guest range",
        }
    }
}

/// Maximum length of a feature name in the feature name table (spec
/// "Feature name table": bytes 2 - 47).
pub const FEATURE_NAME_LEN: usize = 46;

/// A feature name copied out of the image's feature name table, so that an
/// error can name an unknown incompatible feature without borrowing the
/// header buffer or allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FeatureName {
    bytes: [u8; FEATURE_NAME_LEN],
    len: u8,
}

impl FeatureName {
    /// The empty name (the image has no feature name table entry for the bit).
    pub const EMPTY: FeatureName = FeatureName {
        bytes: [0; FEATURE_NAME_LEN],
        len: 0,
    };

    /// Builds a name from the raw, zero padded table bytes; stops at the
    /// first NUL and at [`FEATURE_NAME_LEN`] bytes.
    pub fn from_padded(raw: &[u8]) -> FeatureName {
        let mut name = FeatureName::EMPTY;
        for (dst, &src) in name.bytes.iter_mut().zip(raw.iter()) {
            if src == 0 {
                break;
            }
            *dst = src;
            name.len += 1;
        }
        name
    }

    /// The name bytes (not necessarily UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Whether the image gave no name.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Display for FeatureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.as_bytes() {
            let c = if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            };
            fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

impl fmt::Debug for FeatureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Everything that can go wrong in the qcow2 format logic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The buffer or file ends before a structure that must be there.
    Truncated {
        /// What was being read.
        what: Structure,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The magic is not `QFI\xfb` (spec "Header", bytes 0 - 3).
    BadMagic(u32),
    /// Version other than 2 or 3 (spec "Header", bytes 4 - 7).
    UnsupportedVersion(u32),
    /// `cluster_bits` outside 9..=21 (spec "Header", bytes 20 - 23).
    BadClusterBits(u32),
    /// v3 `header_length` below 104, not a multiple of 8, or larger than a
    /// cluster (spec "Header", bytes 100 - 103).
    BadHeaderLength(u32),
    /// An incompatible feature bit this code does not know (spec "Header",
    /// bytes 72 - 79); the name comes from the feature name table if any.
    UnknownIncompatibleFeature {
        /// Bit number 0..=63.
        bit: u8,
        /// Name from the feature name table, possibly empty.
        name: FeatureName,
    },
    /// `crypt_method` is not 0: encrypted images are not supported.
    Encrypted(u32),
    /// A full disk encryption header extension is present.
    EncryptionExtension,
    /// The image keeps its data in an external data file (incompatible bit 2).
    ExternalDataFile,
    /// `compression_type` (byte 104) is not 0 (deflate) or 1 (zstd).
    UnsupportedCompressionType(u8),
    /// The compression type incompatible bit (bit 3) disagrees with the
    /// `compression_type` field.
    CompressionTypeMismatch {
        /// Whether incompatible bit 3 is set.
        bit_set: bool,
        /// The `compression_type` byte.
        compression_type: u8,
    },
    /// Extended L2 entries need clusters of at least 16 KiB.
    ExtendedL2ClusterTooSmall(u32),
    /// `refcount_order` above 6.
    BadRefcountOrder(u32),
    /// The virtual disk size is beyond what the cluster math supports.
    VirtualSizeTooLarge(u64),
    /// A table (L1, refcount, snapshot) is larger than the implementation
    /// limit, or its end overflows.
    TableTooLarge {
        /// Which table.
        what: Structure,
        /// Number of entries (or clusters for the refcount table).
        entries: u64,
    },
    /// The active L1 table has fewer entries than the virtual size needs.
    L1TableTooSmall {
        /// Entries in the header.
        entries: u32,
        /// Entries needed for the virtual size.
        needed: u64,
    },
    /// A table that must be cluster aligned is not.
    MisalignedTable {
        /// Which table.
        what: Structure,
        /// Its offset in the image file.
        offset: u64,
    },
    /// More than [`super::snapshot::MAX_SNAPSHOTS`] snapshots.
    TooManySnapshots(u32),
    /// `backing_file_offset` / `backing_file_size` are out of bounds.
    BadBackingFile {
        /// `backing_file_offset`.
        offset: u64,
        /// `backing_file_size`.
        len: u32,
    },
    /// A header extension does not fit in the header area.
    ExtensionOutOfBounds {
        /// Extension type.
        kind: u32,
        /// Offset of the extension in the file.
        offset: u64,
        /// Declared data length.
        len: u32,
    },
    /// The backing file format is neither `qcow2` nor `raw`.
    UnsupportedBackingFormat,
    /// The backing chain is longer than [`super::layer::MAX_CHAIN_DEPTH`].
    ChainTooDeep,
    /// An L1 entry has reserved bits set or a misaligned L2 offset.
    CorruptL1Entry {
        /// L1 index.
        index: u64,
        /// The raw entry.
        raw: u64,
    },
    /// An L2 entry has reserved bits set or a misaligned cluster offset.
    CorruptL2Entry {
        /// The raw entry.
        raw: u64,
    },
    /// An extended L2 entry has an invalid subcluster bitmap (a subcluster
    /// both allocated and zero, or allocated subclusters without a host
    /// cluster).
    InvalidSubclusterBitmap {
        /// The raw entry.
        raw: u64,
        /// The raw bitmap.
        bitmap: u64,
    },
    /// A compressed cluster descriptor uses bits that must be zero.
    CorruptCompressedDescriptor(u64),
    /// A host pointer leads past the end of the image file.
    PastEndOfFile {
        /// What the pointer points to.
        what: Structure,
        /// Host offset.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// The decompressor rejected the compressed data.
    DecompressionFailed,
    /// Decompression produced a different amount of data than one cluster.
    DecompressedSizeMismatch {
        /// Bytes expected (the cluster size).
        expected: u64,
        /// Bytes produced.
        got: u64,
    },
    /// A caller-provided buffer or table has the wrong size.
    BufferSize {
        /// What the buffer holds.
        what: Structure,
        /// Bytes expected.
        expected: u64,
        /// Bytes given.
        got: u64,
    },
    /// The snapshot table is malformed.
    CorruptSnapshotTable {
        /// Index of the offending entry.
        index: u32,
    },
    /// No snapshot matches the requested id or name.
    SnapshotNotFound,
    /// A request reaches beyond the virtual disk.
    OutOfRange {
        /// Guest offset of the request.
        offset: u64,
        /// Length of the request.
        len: u64,
        /// Virtual disk size.
        size: u64,
    },
    /// An internal invariant did not hold (a bug, never a panic).
    Internal,
    /// Read-write use refused: the dirty bit is set (refcounts may be
    /// wrong; `qemu-img check -r all` repairs it, this code does not).
    DirtyImage,
    /// Read-write use refused: the image is marked corrupt.
    CorruptImage,
    /// A write would have overwritten image metadata; the image has been
    /// marked corrupt and the writer stopped (QEMU's "corruption
    /// prevention").
    MetadataOverlap {
        /// The metadata structure the write hit.
        what: Structure,
        /// Host offset of the refused write.
        offset: u64,
    },
    /// The writer stopped after an earlier metadata error or overlap; the
    /// image must be reopened (and checked) before it is written again.
    WriterStopped,
    /// A referenced cluster has refcount 0, or a count would drop below 0.
    CorruptRefcount {
        /// Host offset of the cluster.
        offset: u64,
    },
    /// A refcount would exceed the largest value `refcount_order` allows.
    RefcountOverflow,
    /// No host cluster can be allocated (host offsets must stay below
    /// 2^56, the refcount table below its size limit).
    NoSpace,
    /// The caller's I/O layer failed with this positive errno (in the
    /// caller's numbering: the kernel's, or the host's libc).
    Io(i32),
}

/// Result type of the format logic.
pub type Result<T> = core::result::Result<T, Error>;

impl Error {
    /// The class of this error; see [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Truncated { what, .. } => match what {
                Structure::Header
                | Structure::HeaderExtension
                | Structure::BackingFileName
                | Structure::L1Table
                | Structure::SnapshotTable
                | Structure::SnapshotL1Table
                | Structure::RefcountTable => ErrorKind::Invalid,
                _ => ErrorKind::Corrupt,
            },
            Error::BadMagic(_)
            | Error::BadClusterBits(_)
            | Error::BadHeaderLength(_)
            | Error::CompressionTypeMismatch { .. }
            | Error::ExtendedL2ClusterTooSmall(_)
            | Error::BadRefcountOrder(_)
            | Error::L1TableTooSmall { .. }
            | Error::MisalignedTable { .. }
            | Error::TooManySnapshots(_)
            | Error::BadBackingFile { .. }
            | Error::ExtensionOutOfBounds { .. }
            | Error::BufferSize { .. }
            | Error::CorruptSnapshotTable { .. }
            | Error::OutOfRange { .. } => ErrorKind::Invalid,
            Error::UnsupportedVersion(_)
            | Error::UnknownIncompatibleFeature { .. }
            | Error::Encrypted(_)
            | Error::EncryptionExtension
            | Error::ExternalDataFile
            | Error::UnsupportedCompressionType(_)
            | Error::UnsupportedBackingFormat => ErrorKind::Unsupported,
            Error::VirtualSizeTooLarge(_) => ErrorKind::TooLarge,
            Error::TableTooLarge { .. } => ErrorKind::TooLarge,
            Error::ChainTooDeep => ErrorKind::ChainTooDeep,
            Error::CorruptL1Entry { .. }
            | Error::CorruptL2Entry { .. }
            | Error::InvalidSubclusterBitmap { .. }
            | Error::CorruptCompressedDescriptor(_)
            | Error::PastEndOfFile { .. }
            | Error::DecompressionFailed
            | Error::DecompressedSizeMismatch { .. }
            | Error::Internal
            | Error::MetadataOverlap { .. }
            | Error::WriterStopped
            | Error::CorruptRefcount { .. }
            | Error::RefcountOverflow => ErrorKind::Corrupt,
            Error::DirtyImage | Error::CorruptImage => ErrorKind::Unsupported,
            Error::NoSpace => ErrorKind::TooLarge,
            Error::SnapshotNotFound => ErrorKind::NotFound,
            Error::Io(errno) => {
                if *errno > 0 {
                    ErrorKind::Io(*errno)
                } else {
                    ErrorKind::Corrupt
                }
            }
        }
    }

    /// A short static description, usable in a kernel log line.
    pub fn describe(&self) -> &'static str {
        match self {
            Error::Truncated { .. } => "truncated image or buffer",
            Error::BadMagic(_) => "not a qcow2 image (bad magic)",
            Error::UnsupportedVersion(_) => "unsupported qcow2 version",
            Error::BadClusterBits(_) => "invalid cluster size",
            Error::BadHeaderLength(_) => "invalid header length",
            Error::UnknownIncompatibleFeature { .. } => "unknown incompatible feature",
            Error::Encrypted(_) => "encrypted images are not supported",
            Error::EncryptionExtension => "full disk encryption extension not supported",
            Error::ExternalDataFile => "external data files are not supported",
            Error::UnsupportedCompressionType(_) => "unsupported compression type",
            Error::CompressionTypeMismatch { .. } => {
                "compression type field disagrees with feature bit"
            }
            Error::ExtendedL2ClusterTooSmall(_) => "extended L2 entries need clusters >= 16 KiB",
            Error::BadRefcountOrder(_) => "invalid refcount order",
            Error::VirtualSizeTooLarge(_) => "virtual size too large",
            Error::TableTooLarge { .. } => "table too large",
            Error::L1TableTooSmall { .. } => "L1 table too small for the virtual size",
            Error::MisalignedTable { .. } => "table not cluster aligned",
            Error::TooManySnapshots(_) => "too many snapshots",
            Error::BadBackingFile { .. } => "invalid backing file name location",
            Error::ExtensionOutOfBounds { .. } => "header extension out of bounds",
            Error::UnsupportedBackingFormat => "unsupported backing file format",
            Error::ChainTooDeep => "backing chain too deep",
            Error::CorruptL1Entry { .. } => "corrupt L1 entry",
            Error::CorruptL2Entry { .. } => "corrupt L2 entry",
            Error::InvalidSubclusterBitmap { .. } => "invalid subcluster bitmap",
            Error::CorruptCompressedDescriptor(_) => "corrupt compressed cluster descriptor",
            Error::PastEndOfFile { .. } => "metadata points past end of file",
            Error::DecompressionFailed => "decompression failed",
            Error::DecompressedSizeMismatch { .. } => "decompressed size is not one cluster",
            Error::BufferSize { .. } => "buffer has the wrong size",
            Error::CorruptSnapshotTable { .. } => "corrupt snapshot table",
            Error::SnapshotNotFound => "snapshot not found",
            Error::OutOfRange { .. } => "request beyond the end of the virtual disk",
            Error::Internal => "internal error",
            Error::DirtyImage => "dirty image refused for writing (run qemu-img check -r all)",
            Error::CorruptImage => "image marked corrupt, refused for writing",
            Error::MetadataOverlap { .. } => "write would overwrite metadata; image marked corrupt",
            Error::WriterStopped => "writes stopped after an earlier error",
            Error::CorruptRefcount { .. } => "corrupt refcount",
            Error::RefcountOverflow => "refcount overflow",
            Error::NoSpace => "no host cluster left to allocate",
            Error::Io(_) => "I/O error",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.describe();
        match *self {
            Error::Truncated {
                what,
                needed,
                available,
            } => write!(
                f,
                "{d}: {} needs {needed} bytes, {available} available",
                what.name()
            ),
            Error::BadMagic(m) => write!(f, "{d}: {m:#010x}"),
            Error::UnsupportedVersion(v) => write!(f, "{d}: {v}"),
            Error::BadClusterBits(b) => write!(f, "{d}: cluster_bits {b}"),
            Error::BadHeaderLength(l) => write!(f, "{d}: {l}"),
            Error::UnknownIncompatibleFeature { bit, name } => {
                if name.is_empty() {
                    write!(f, "{d}: bit {bit}")
                } else {
                    write!(f, "{d}: bit {bit} ({name})")
                }
            }
            Error::Encrypted(m) => write!(f, "{d}: crypt_method {m}"),
            Error::UnsupportedCompressionType(t) => write!(f, "{d}: {t}"),
            Error::CompressionTypeMismatch {
                bit_set,
                compression_type,
            } => write!(
                f,
                "{d}: bit 3 {}, compression_type {compression_type}",
                if bit_set { "set" } else { "clear" }
            ),
            Error::ExtendedL2ClusterTooSmall(b) => write!(f, "{d}: cluster_bits {b}"),
            Error::BadRefcountOrder(o) => write!(f, "{d}: {o}"),
            Error::VirtualSizeTooLarge(s) => write!(f, "{d}: {s} bytes"),
            Error::TableTooLarge { what, entries } => {
                write!(f, "{d}: {} with {entries} entries", what.name())
            }
            Error::L1TableTooSmall { entries, needed } => {
                write!(f, "{d}: {entries} entries, {needed} needed")
            }
            Error::MisalignedTable { what, offset } => {
                write!(f, "{d}: {} at {offset:#x}", what.name())
            }
            Error::TooManySnapshots(n) => write!(f, "{d}: {n}"),
            Error::BadBackingFile { offset, len } => {
                write!(f, "{d}: offset {offset:#x}, length {len}")
            }
            Error::ExtensionOutOfBounds { kind, offset, len } => {
                write!(f, "{d}: type {kind:#010x} at {offset:#x}, length {len}")
            }
            Error::CorruptL1Entry { index, raw } => write!(f, "{d}: [{index}] = {raw:#018x}"),
            Error::CorruptL2Entry { raw } => write!(f, "{d}: {raw:#018x}"),
            Error::InvalidSubclusterBitmap { raw, bitmap } => {
                write!(f, "{d}: entry {raw:#018x}, bitmap {bitmap:#018x}")
            }
            Error::CorruptCompressedDescriptor(raw) => write!(f, "{d}: {raw:#018x}"),
            Error::PastEndOfFile {
                what,
                offset,
                len,
                file_len,
            } => write!(
                f,
                "{d}: {} at {offset:#x}+{len} beyond file length {file_len}",
                what.name()
            ),
            Error::DecompressedSizeMismatch { expected, got } => {
                write!(f, "{d}: {got} bytes instead of {expected}")
            }
            Error::BufferSize {
                what,
                expected,
                got,
            } => write!(f, "{d}: {} {got} bytes, expected {expected}", what.name()),
            Error::CorruptSnapshotTable { index } => write!(f, "{d}: entry {index}"),
            Error::OutOfRange { offset, len, size } => {
                write!(f, "{d}: {offset:#x}+{len} beyond size {size}")
            }
            Error::Io(errno) => write!(f, "{d}: errno {errno}"),
            Error::MetadataOverlap { what, offset } => {
                write!(f, "{d}: {} at {offset:#x}", what.name())
            }
            Error::CorruptRefcount { offset } => write!(f, "{d}: cluster at {offset:#x}"),
            Error::EncryptionExtension
            | Error::ExternalDataFile
            | Error::UnsupportedBackingFormat
            | Error::ChainTooDeep
            | Error::DecompressionFailed
            | Error::SnapshotNotFound
            | Error::Internal
            | Error::DirtyImage
            | Error::CorruptImage
            | Error::WriterStopped
            | Error::RefcountOverflow
            | Error::NoSpace => f.write_str(d),
        }
    }
}

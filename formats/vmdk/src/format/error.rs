//! Errors of the VMDK format logic.
//!
//! One variant per reason, so a refused image gives a precise message.
//! Every variant has a class ([`Error::kind`]) and a short static
//! description ([`Error::describe`]) for a one-line kernel log; the
//! [`core::fmt::Display`] impl adds the numbers involved.
//!
//! As in the qcow2 tree, the crate knows no errno numbers (they differ
//! between architectures); the caller maps an [`ErrorKind`] to its own:
//! - [`ErrorKind::Invalid`] (`EINVAL`): the image or descriptor is
//!   malformed (refused at open),
//! - [`ErrorKind::Unsupported`] (`EOPNOTSUPP`): a feature this code does
//!   not implement (parent links, VMFS extents, unknown compression),
//! - [`ErrorKind::TooLarge`] (`EFBIG`): a size or table is absurdly large,
//! - [`ErrorKind::Corrupt`] (`EIO`): metadata or data found corrupt while
//!   serving a request; only that request fails,
//! - [`ErrorKind::Io`]: the caller's I/O layer failed, in its numbering.

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
    /// Corrupt metadata or data met while serving a request (`EIO`).
    Corrupt,
    /// The caller's I/O layer failed with this positive errno.
    Io(i32),
}

/// The on-disk structure an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    /// The sparse extent header (first sector of a hosted sparse extent).
    Header,
    /// The footer of a streamOptimized extent (last three sectors).
    Footer,
    /// The descriptor text (embedded or a descriptor file).
    Descriptor,
    /// The grain directory.
    GrainDirectory,
    /// The redundant grain directory.
    RedundantGrainDirectory,
    /// A grain table.
    GrainTable,
    /// An uncompressed grain.
    Grain,
    /// A compressed grain (marker and deflate data).
    CompressedGrain,
    /// A flat extent's data.
    FlatExtent,
    /// The guest (virtual disk) address space.
    Guest,
}

impl Structure {
    /// Short lowercase name for log lines.
    pub fn name(self) -> &'static str {
        match self {
            Structure::Header => "sparse header",
            Structure::Footer => "footer",
            Structure::Descriptor => "descriptor",
            Structure::GrainDirectory => "grain directory",
            Structure::RedundantGrainDirectory => "redundant grain directory",
            Structure::GrainTable => "grain table",
            Structure::Grain => "grain",
            Structure::CompressedGrain => "compressed grain",
            Structure::FlatExtent => "flat extent",
            Structure::Guest => "guest range",
        }
    }
}

/// Longest word kept by [`Word`].
pub const WORD_LEN: usize = 24;

/// A short word copied out of a descriptor (a create type or extent type),
/// so that an error can name it without borrowing or allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Word {
    bytes: [u8; WORD_LEN],
    len: u8,
}

impl Word {
    /// The first [`WORD_LEN`] bytes of `raw`.
    pub fn new(raw: &[u8]) -> Word {
        let mut w = Word {
            bytes: [0; WORD_LEN],
            len: 0,
        };
        for (dst, &src) in w.bytes.iter_mut().zip(raw.iter()) {
            *dst = src;
            w.len += 1;
        }
        w
    }

    /// The bytes kept.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl fmt::Display for Word {
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

impl fmt::Debug for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Everything that can go wrong in the VMDK format logic.
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
    /// The sparse header magic is not `KDMV`.
    BadMagic(u32),
    /// Sparse header version other than 1, 2 or 3.
    UnsupportedVersion(u32),
    /// `grainSize` (sectors) is not a power of two in 1..=2048.
    BadGrainSize(u64),
    /// `numGTEsPerGT` is 0 or above 512.
    BadGrainTableSize(u32),
    /// `capacity` (sectors) is beyond [`super::header::MAX_SECTORS`].
    CapacityTooLarge(u64),
    /// The grain directory would have more entries than
    /// [`super::header::MAX_GD_ENTRIES`].
    GrainDirectoryTooLarge(u64),
    /// A grain directory offset is 0, inside the header, or
    /// `GD_AT_END` where a real offset is needed.
    BadGrainDirectoryOffset(u64),
    /// `compressAlgorithm` is neither 0 (none) nor 1 (deflate).
    UnsupportedCompression(u16),
    /// The newline detection bytes are damaged (the file went through a
    /// text-mode transfer).
    BadNewlineCheck,
    /// The streamOptimized footer (footer marker, header copy,
    /// end-of-stream marker) is malformed.
    BadFooter,
    /// The embedded descriptor or a descriptor file is larger than
    /// [`super::descriptor::MAX_DESCRIPTOR_LEN`].
    DescriptorTooLarge(u64),
    /// The embedded descriptor lies (partly) outside the file or overlaps
    /// the header.
    BadDescriptorLocation {
        /// Offset in sectors.
        offset: u64,
        /// Size in sectors.
        size: u64,
    },
    /// A descriptor line is malformed (1-based line number).
    InvalidDescriptorLine(u32),
    /// The descriptor has no `version=` line, or a second one.
    MissingVersion,
    /// The descriptor `version` is not 1, 2 or 3.
    UnsupportedDescriptorVersion(u64),
    /// The descriptor has no `createType`, or a second one.
    MissingCreateType,
    /// A create type this code does not read (e.g. `vmfs`, `seSparse`).
    UnsupportedCreateType(Word),
    /// An extent type this code does not read (e.g. `VMFS`, `SESPARSE`).
    UnsupportedExtentType(Word),
    /// A `NOACCESS` extent.
    NoAccessExtent(u32),
    /// The descriptor names a parent (`parentFileNameHint`): delta links
    /// are not supported.
    ParentUnsupported,
    /// More extents than [`super::disk::MAX_EXTENTS`], or more extent
    /// files than [`super::disk::MAX_EXTENT_FILES`].
    TooManyExtents,
    /// A descriptor names the same extent file twice (1-based line number
    /// of the second extent line).
    DuplicateExtentName(u32),
    /// The descriptor lists no extent.
    NoExtents,
    /// The create type does not match the extents (e.g. `monolithicFlat`
    /// with a sparse extent, a sparse file whose descriptor lists flat
    /// extents).
    CreateTypeMismatch,
    /// The descriptor's size of a sparse extent differs from the capacity
    /// in the extent's header.
    ExtentSizeMismatch {
        /// Sectors in the descriptor.
        declared: u64,
        /// Sectors in the header.
        capacity: u64,
    },
    /// The disk would be larger than [`super::header::MAX_SECTORS`].
    DiskTooLarge,
    /// A grain marker's size is 0 or larger than two grains.
    BadGrainMarker {
        /// Host offset of the marker.
        offset: u64,
        /// The size field.
        size: u32,
    },
    /// A pointer leads past the end of a file.
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
    /// Decompression produced less than the grain needs.
    DecompressedSizeMismatch {
        /// Bytes needed.
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
    /// The caller's I/O layer failed with this positive errno.
    Io(i32),
}

/// Result type of the format logic.
pub type Result<T> = core::result::Result<T, Error>;

impl Error {
    /// The class of this error; see [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Truncated { what, .. } => match what {
                Structure::Grain
                | Structure::GrainTable
                | Structure::CompressedGrain
                | Structure::Guest => ErrorKind::Corrupt,
                _ => ErrorKind::Invalid,
            },
            Error::BadMagic(_)
            | Error::BadGrainSize(_)
            | Error::BadGrainTableSize(_)
            | Error::BadGrainDirectoryOffset(_)
            | Error::BadNewlineCheck
            | Error::BadFooter
            | Error::BadDescriptorLocation { .. }
            | Error::InvalidDescriptorLine(_)
            | Error::MissingVersion
            | Error::MissingCreateType
            | Error::NoExtents
            | Error::DuplicateExtentName(_)
            | Error::CreateTypeMismatch
            | Error::ExtentSizeMismatch { .. }
            | Error::BufferSize { .. }
            | Error::OutOfRange { .. } => ErrorKind::Invalid,
            Error::UnsupportedVersion(_)
            | Error::UnsupportedCompression(_)
            | Error::UnsupportedDescriptorVersion(_)
            | Error::UnsupportedCreateType(_)
            | Error::UnsupportedExtentType(_)
            | Error::NoAccessExtent(_)
            | Error::ParentUnsupported => ErrorKind::Unsupported,
            Error::CapacityTooLarge(_)
            | Error::GrainDirectoryTooLarge(_)
            | Error::DescriptorTooLarge(_)
            | Error::TooManyExtents
            | Error::DiskTooLarge => ErrorKind::TooLarge,
            Error::BadGrainMarker { .. }
            | Error::PastEndOfFile { .. }
            | Error::DecompressionFailed
            | Error::DecompressedSizeMismatch { .. }
            | Error::Internal => ErrorKind::Corrupt,
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
            Error::BadMagic(_) => "not a VMDK sparse extent (bad magic)",
            Error::UnsupportedVersion(_) => "unsupported VMDK sparse extent version",
            Error::BadGrainSize(_) => "invalid grain size",
            Error::BadGrainTableSize(_) => "invalid number of grain table entries",
            Error::CapacityTooLarge(_) => "capacity too large",
            Error::GrainDirectoryTooLarge(_) => "grain directory too large",
            Error::BadGrainDirectoryOffset(_) => "invalid grain directory offset",
            Error::UnsupportedCompression(_) => "unsupported compression algorithm",
            Error::BadNewlineCheck => "newline check bytes damaged (text-mode copy?)",
            Error::BadFooter => "invalid streamOptimized footer",
            Error::DescriptorTooLarge(_) => "descriptor too large",
            Error::BadDescriptorLocation { .. } => "embedded descriptor out of bounds",
            Error::InvalidDescriptorLine(_) => "invalid descriptor line",
            Error::MissingVersion => "descriptor needs exactly one version line",
            Error::UnsupportedDescriptorVersion(_) => "unsupported descriptor version",
            Error::MissingCreateType => "descriptor needs exactly one createType",
            Error::UnsupportedCreateType(_) => "unsupported create type",
            Error::UnsupportedExtentType(_) => "unsupported extent type",
            Error::NoAccessExtent(_) => "NOACCESS extents are not supported",
            Error::ParentUnsupported => "delta links (parent images) are not supported",
            Error::TooManyExtents => "too many extents",
            Error::NoExtents => "descriptor lists no extent",
            Error::DuplicateExtentName(_) => "extent file named twice",
            Error::CreateTypeMismatch => "create type does not match the extents",
            Error::ExtentSizeMismatch { .. } => "extent size differs from its header",
            Error::DiskTooLarge => "disk too large",
            Error::BadGrainMarker { .. } => "invalid grain marker",
            Error::PastEndOfFile { .. } => "metadata points past end of file",
            Error::DecompressionFailed => "decompression failed",
            Error::DecompressedSizeMismatch { .. } => "decompressed grain too short",
            Error::BufferSize { .. } => "buffer has the wrong size",
            Error::OutOfRange { .. } => "request beyond the end of the virtual disk",
            Error::Internal => "internal error",
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
            Error::BadGrainSize(g) => write!(f, "{d}: {g} sectors"),
            Error::BadGrainTableSize(n) => write!(f, "{d}: {n}"),
            Error::CapacityTooLarge(c) => write!(f, "{d}: {c} sectors"),
            Error::GrainDirectoryTooLarge(n) => write!(f, "{d}: {n} entries"),
            Error::BadGrainDirectoryOffset(o) => write!(f, "{d}: sector {o:#x}"),
            Error::UnsupportedCompression(c) => write!(f, "{d}: {c}"),
            Error::DescriptorTooLarge(n) => write!(f, "{d}: {n} bytes"),
            Error::BadDescriptorLocation { offset, size } => {
                write!(f, "{d}: sector {offset:#x}, {size} sectors")
            }
            Error::InvalidDescriptorLine(n) => write!(f, "{d}: line {n}"),
            Error::UnsupportedDescriptorVersion(v) => write!(f, "{d}: {v}"),
            Error::UnsupportedCreateType(w) | Error::UnsupportedExtentType(w) => {
                write!(f, "{d}: {w}")
            }
            Error::NoAccessExtent(n) | Error::DuplicateExtentName(n) => {
                write!(f, "{d}: line {n}")
            }
            Error::ExtentSizeMismatch { declared, capacity } => {
                write!(f, "{d}: {declared} sectors declared, {capacity} in header")
            }
            Error::BadGrainMarker { offset, size } => {
                write!(f, "{d}: at {offset:#x}, size {size}")
            }
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
                write!(f, "{d}: {got} bytes, {expected} needed")
            }
            Error::BufferSize {
                what,
                expected,
                got,
            } => write!(f, "{d}: {} {got} bytes, expected {expected}", what.name()),
            Error::OutOfRange { offset, len, size } => {
                write!(f, "{d}: {offset:#x}+{len} beyond size {size}")
            }
            Error::Io(errno) => write!(f, "{d}: errno {errno}"),
            Error::BadNewlineCheck
            | Error::BadFooter
            | Error::MissingVersion
            | Error::MissingCreateType
            | Error::ParentUnsupported
            | Error::TooManyExtents
            | Error::NoExtents
            | Error::CreateTypeMismatch
            | Error::DiskTooLarge
            | Error::DecompressionFailed
            | Error::Internal => f.write_str(d),
        }
    }
}

//! Errors of the VDI format logic.
//!
//! One variant per reason; [`Error::kind`] gives the class the caller
//! turns into its errno (the crate knows no errno numbers), as in the
//! qcow2 and VMDK trees:
//! - [`ErrorKind::Invalid`] (`EINVAL`): the image is malformed (refused at
//!   open),
//! - [`ErrorKind::Unsupported`] (`EOPNOTSUPP`): a feature this code does
//!   not implement (differencing and undo images, other block sizes),
//! - [`ErrorKind::TooLarge`] (`EFBIG`): a size or the block map is too
//!   large,
//! - [`ErrorKind::Corrupt`] (`EIO`): a block pointer found bad while
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
    /// Corrupt metadata met while serving a request (`EIO`).
    Corrupt,
    /// The caller's I/O layer failed with this positive errno.
    Io(i32),
}

/// The on-disk structure an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    /// The pre-header and header (first 512 bytes).
    Header,
    /// The block map.
    BlockMap,
    /// A data block.
    Block,
    /// The guest (virtual disk) address space.
    Guest,
}

impl Structure {
    /// Short lowercase name for log lines.
    pub fn name(self) -> &'static str {
        match self {
            Structure::Header => "header",
            Structure::BlockMap => "block map",
            Structure::Block => "data block",
            Structure::Guest => "guest range",
        }
    }
}

/// Everything that can go wrong in the VDI format logic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The file ends before a structure that must be there.
    Truncated {
        /// What was being read.
        what: Structure,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The signature (bytes 64 - 67) is not `0xbeda107f`.
    BadSignature(u32),
    /// A header version other than 1.1.
    UnsupportedVersion(u32),
    /// The header size field is below 384 or reaches into the block map.
    BadHeaderSize(u32),
    /// An image type other than dynamic (1) or static (2): undo (3) and
    /// differencing (4) images need a parent.
    UnsupportedImageType(u32),
    /// The block map or data offset is not sector aligned, or the block
    /// map overlaps the header or the data.
    BadOffset {
        /// Which offset.
        what: Structure,
        /// Its value.
        offset: u32,
    },
    /// The legacy sector size is not 512.
    BadSectorSize(u32),
    /// A block size other than 1 MiB.
    UnsupportedBlockSize(u32),
    /// Extra data before each block (`cbBlockExtra`) is not supported.
    UnsupportedBlockExtra(u32),
    /// The disk is larger than the block map covers.
    DiskSizeBeyondBlocks {
        /// Disk size in bytes.
        disk_size: u64,
        /// Bytes the block map covers.
        room: u64,
    },
    /// More blocks than [`super::header::MAX_BLOCKS`].
    TooManyBlocks(u32),
    /// The image links to a parent (non-null link or parent UUID).
    ParentUnsupported,
    /// A block pointer leads past the end of the file.
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
                Structure::Header | Structure::BlockMap => ErrorKind::Invalid,
                Structure::Block | Structure::Guest => ErrorKind::Corrupt,
            },
            Error::BadSignature(_)
            | Error::BadHeaderSize(_)
            | Error::BadOffset { .. }
            | Error::BadSectorSize(_)
            | Error::DiskSizeBeyondBlocks { .. }
            | Error::OutOfRange { .. } => ErrorKind::Invalid,
            Error::UnsupportedVersion(_)
            | Error::UnsupportedImageType(_)
            | Error::UnsupportedBlockSize(_)
            | Error::UnsupportedBlockExtra(_)
            | Error::ParentUnsupported => ErrorKind::Unsupported,
            Error::TooManyBlocks(_) => ErrorKind::TooLarge,
            Error::PastEndOfFile { .. } | Error::Internal => ErrorKind::Corrupt,
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
            Error::Truncated { .. } => "truncated image",
            Error::BadSignature(_) => "not a VDI image (bad signature)",
            Error::UnsupportedVersion(_) => "unsupported VDI version",
            Error::BadHeaderSize(_) => "invalid header size",
            Error::UnsupportedImageType(_) => "unsupported image type",
            Error::BadOffset { .. } => "invalid block map or data offset",
            Error::BadSectorSize(_) => "invalid sector size",
            Error::UnsupportedBlockSize(_) => "unsupported block size",
            Error::UnsupportedBlockExtra(_) => "block extra data not supported",
            Error::DiskSizeBeyondBlocks { .. } => "disk size beyond the block map",
            Error::TooManyBlocks(_) => "too many blocks",
            Error::ParentUnsupported => "differencing images (parents) are not supported",
            Error::PastEndOfFile { .. } => "block points past end of file",
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
            Error::BadSignature(v)
            | Error::UnsupportedVersion(v)
            | Error::UnsupportedImageType(v) => write!(f, "{d}: {v:#x}"),
            Error::BadHeaderSize(v)
            | Error::BadSectorSize(v)
            | Error::UnsupportedBlockSize(v)
            | Error::UnsupportedBlockExtra(v)
            | Error::TooManyBlocks(v) => write!(f, "{d}: {v}"),
            Error::BadOffset { what, offset } => write!(f, "{d}: {} at {offset:#x}", what.name()),
            Error::DiskSizeBeyondBlocks { disk_size, room } => {
                write!(f, "{d}: {disk_size} bytes, blocks cover {room}")
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
            Error::OutOfRange { offset, len, size } => {
                write!(f, "{d}: {offset:#x}+{len} beyond size {size}")
            }
            Error::Io(errno) => write!(f, "{d}: errno {errno}"),
            Error::ParentUnsupported | Error::Internal => f.write_str(d),
        }
    }
}

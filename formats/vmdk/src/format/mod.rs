//! VMDK format logic: allocation-free, `core`-only, panic-free parsing
//! and guest-to-host translation for VMDK images, following VMware's
//! "Virtual Disk Format 1.1" and QEMU's `block/vmdk.c` behaviour.
//!
//! This module tree is compiled twice: as part of the host crate
//! `vmdk-format` (tested with `cargo test`, fuzzable) and inside a kernel
//! module, which includes this file with a `#[path]` attribute. It
//! therefore uses only `core`, refers to its own submodules with
//! `self::`/`super::` paths, and has no crate attributes.
//!
//! Parts:
//! - [`header`]: the hosted sparse extent header and the streamOptimized
//!   footer;
//! - [`sparse`]: grain directory and tables, the [`Mapping`] answer to
//!   "what is at this offset, for how many bytes?";
//! - [`grain`]: compressed grains (markers, zlib) and the
//!   [`Decompressor`] contract;
//! - [`descriptor`]: the descriptor text and its extent lines;
//! - [`disk`]: extents in guest order;
//! - [`engine`]: the traits a caller implements and [`Disk::read`];
//! - [`error`]: the error type and its classes.
//!
//! Opening an image, in outline:
//! 1. read the first bytes of the file: with the `KDMV` magic
//!    ([`header::classify`]) it is a monolithic sparse image
//!    (monolithicSparse or streamOptimized): [`read_sparse_header`],
//!    [`SparseExtent::new`], and, if [`SparseHeader::descriptor_range`]
//!    gives one, [`Descriptor::parse`] the embedded descriptor and
//!    [`Descriptor::check_embedded`] it; the disk is that one extent;
//! 2. otherwise it is a descriptor file: [`Descriptor::parse`] and
//!    [`Descriptor::check_file`]; for each extent line the caller opens
//!    the named file and builds [`Extent::sparse`] (with the header read
//!    as above), [`Extent::flat`] or [`Extent::zero`];
//! 3. [`Disk::push`] the extents in order; load each sparse extent's
//!    grain directory ([`SparseExtent::gd_offset`], [`SparseExtent::gd_len`]);
//! 4. serve requests with [`Disk::read`].

pub mod descriptor;
pub mod disk;
pub mod engine;
pub mod error;
pub mod grain;
pub mod header;
pub mod sparse;

mod le;

pub use self::descriptor::{Access, CreateType, Descriptor, ExtentLine, ExtentType, Span};
pub use self::disk::{Disk, Extent, ExtentKind, MAX_EXTENTS, MAX_EXTENT_FILES};
pub use self::engine::{CompressedGrains, Sink, Storage, Tables};
pub use self::error::{Error, ErrorKind, Result, Structure};
pub use self::grain::{Decompressor, GrainRead};
pub use self::header::{read_sparse_header, SparseHeader};
pub use self::sparse::{Directory, Mapping, MappingKind, SparseExtent};

//! qcow2 format logic: allocation-free, `core`-only, panic-free parsing and
//! guest-to-host translation for qcow2 images, following QEMU's
//! `docs/interop/qcow2.rst`.
//!
//! This module tree is compiled twice: as part of the host crate
//! `qcow2-format` (tested with `cargo test`, fuzzable) and inside the
//! `loop_file_fmt_qcow2` kernel module, which includes this file with a
//! `#[path]` attribute. It therefore uses only `core`, refers to its own
//! submodules with `self::`/`super::` paths, and has no crate attributes.
//!
//! Parts:
//! - [`header`]: header, header extensions, feature bits, limits;
//! - [`table`]: cluster geometry, L1/L2 entry decoding, the
//!   [`Mapping`] answer to "what is at this guest offset, for how many
//!   bytes?";
//! - [`compressed`]: compressed cluster descriptors and the
//!   [`Decompressor`] contract;
//! - [`snapshot`]: the internal snapshot table and snapshot lookup;
//! - [`layer`]: qcow2 and raw layers, backing chains;
//! - [`engine`]: the traits a caller implements and the read engine
//!   ([`Chain::read`]);
//! - [`error`]: the error type and its classes (the caller maps them to errnos);
//! - [`refcount`]: refcount entries of every width;
//! - [`status`]: block status, what `qemu-img map` shows ([`Chain::status`]);
//! - [`write`]: the write engine ([`WriteEngine`]) and the
//!   [`WriteBackend`] trait its caller implements.
//!
//! Opening an image, in outline:
//! 1. read the first [`header::HEADER_READ_LEN`] bytes and
//!    [`Header::parse`] them;
//! 2. optionally [`find_snapshot`] and use [`Qcow2Layer::from_snapshot`],
//!    else [`Qcow2Layer::new`];
//! 3. load the L1 table ([`Qcow2Layer::l1_table_offset`],
//!    [`Qcow2Layer::l1_table_bytes`]);
//! 4. for each backing file (opened by the caller), decide its format with
//!    [`LayerFormat::detect`] and [`Chain::push_backing`] it;
//! 5. serve requests with [`Chain::read`].

pub mod compressed;
pub mod engine;
pub mod error;
pub mod header;
pub mod layer;
pub mod refcount;
pub mod snapshot;
pub mod status;
pub mod table;
pub mod write;

mod be;

pub use self::compressed::{
    decompress_cluster, CompressedDescriptor, CompressedRead, CompressionType, Decompressor,
};
pub use self::engine::{CompressedClusters, Sink, SliceSink, Storage, Tables};
pub use self::error::{Error, ErrorKind, Result, Structure};
pub use self::header::{Header, HeaderLayout};
pub use self::layer::{Chain, Layer, LayerFormat, Qcow2Layer, MAX_CHAIN_DEPTH};
pub use self::snapshot::{find_snapshot, Snapshot, SnapshotCursor, SnapshotSelector};
pub use self::status::{Status, StatusKind};
pub use self::table::{Geometry, L2Entry, Mapping, MappingKind};
pub use self::write::{Access, Source, TableKind, WriteBackend, WriteEngine, WriteStats};

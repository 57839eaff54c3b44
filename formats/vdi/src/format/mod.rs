//! VDI format logic: allocation-free, `core`-only, panic-free parsing and
//! guest-to-host translation for VirtualBox disk images (header v1.1,
//! static and dynamic), following VirtualBox's `VDICore.h` layout and
//! QEMU's `block/vdi.c` behaviour.
//!
//! This module tree is compiled twice: as part of the host crate
//! `vdi-format` (tested with `cargo test`, fuzzable) and inside a kernel
//! module, which includes this file with a `#[path]` attribute. It
//! therefore uses only `core`, refers to its own submodules with
//! `self::`/`super::` paths, and has no crate attributes.
//!
//! Parts:
//! - [`header`]: the pre-header and the v1.1 header, every field checked;
//! - [`map`]: block map entries, the [`Mapping`] answer to "what is at
//!   this offset, for how many bytes?", the traits a caller implements
//!   and [`Vdi::read`];
//! - [`error`]: the error type and its classes.
//!
//! Opening an image: read the first [`header::HEADER_LEN`] bytes,
//! [`Header::parse`] them with the file length, load the block map
//! ([`Header::bmap_offset`], [`Header::bmap_len`]), build a [`Vdi`] and serve requests
//! with [`Vdi::read`].

pub mod error;
pub mod header;
pub mod map;

pub use self::error::{Error, ErrorKind, Result, Structure};
pub use self::header::{Header, ImageType};
pub use self::map::{BlockMap, Mapping, MappingKind, Sink, Vdi};

// SPDX-License-Identifier: GPL-2.0

//! loop_file_fmt_vmdk: single-file VMDK images (monolithicSparse and
//! streamOptimized), read-only.
//!
//! The format logic (the hosted sparse extent header and the
//! streamOptimized footer, the grain directory and tables, grain markers,
//! the embedded descriptor, the read engine `Disk::read`) is the
//! host-tested `formats/vmdk/src/format` tree, compiled into this module as
//! [`vmdkfmt`]. This crate supplies what the engine asks for, over kernel
//! types:
//!
//! - attach ([`VmdkImage::attach`]): the header (or the footer it points
//!   to) is read and validated against the file's length, the embedded
//!   descriptor checked (parents are refused), the grain directory (at most
//!   32 MiB, bounded by the format crate and by the file) loaded whole;
//! - `Tables`: that directory, and a small cache of grain tables
//!   ([`GT_SLOTS`] of at most 2 KiB, replaced in turn) under a mutex;
//! - `CompressedGrains`: one decompressed grain, the buffers and the zlib
//!   workspace under a mutex, all allocated at attach, so a request
//!   allocates nothing; a grain is used only whole and only once its
//!   stream has inflated without error (Adler-32 included);
//! - `Sink`: the request's pages: uncompressed grains are read from the
//!   file straight into them, unallocated and zeroed grains are zeroed in
//!   place, decompressed bytes copied.
//!
//! Descriptor files (monolithicFlat, twoGbMaxExtentSparse/Flat, hand-made
//! descriptors) name other files and are refused with `EOPNOTSUPP` and the
//! subformat in the log line. Writes and direct I/O are refused (`EROFS`,
//! `EINVAL`), as in the VDI driver.

// Only the wrappers may use `unsafe`.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
#[path = "../wrappers/mod.rs"]
pub mod wrappers;

#[allow(unsafe_code)]
#[path = "../wrappers/decompress.rs"]
pub mod decompress;

/// The declarations `decompress` calls (the core's `lff_inflate`; the zstd
/// ones are unused here).
#[path = "../wrappers/qcow2_sys.rs"]
mod qcow2_sys;

#[path = "../../../../formats/vmdk/src/format/mod.rs"]
pub mod vmdkfmt;

/// The format tree under the name the shared `common/` files use.
pub(crate) use vmdkfmt as fmtlogic;

#[path = "../common/attach.rs"]
mod attach;
#[path = "../common/errno.rs"]
mod errno;
#[path = "../common/iovsink.rs"]
mod iovsink;
#[path = "../common/readlog.rs"]
mod readlog;

use crate::wrappers::compat::fmt;
use core::pin::Pin;
use decompress::{Inflate, InflateStatus, Wrapping};
use errno::{fmt_error, kernel_error};
use kernel::prelude::*;
use kernel::str::{CStr, CString};
use kernel::sync::{new_mutex, Mutex};
use readlog::ReadLog;
use vmdkfmt::descriptor::MAX_DESCRIPTOR_LEN;
use vmdkfmt::grain::max_compressed_len;
use vmdkfmt::header::{classify, FileKind, HEADER_LEN};
use vmdkfmt::{
    read_sparse_header, CompressedGrains, CreateType, Decompressor, Descriptor, Disk,
    Error as FmtError, Extent, GrainRead, MappingKind, Sink, SparseExtent, Storage, Tables,
};
use wrappers::file::File;
use wrappers::format::{
    AttachRequest, Attached, ExtentKind, Extents, FormatDriver, Registration, SysfsBuf,
};
use wrappers::iov::IovIter;
use wrappers::uapi;

// The format logic's errors are shown in log lines.
crate::kernel_display!(FmtError);

module! {
    type: VmdkModule,
    name: "loop_file_fmt_vmdk",
    description: "VMDK (monolithicSparse, streamOptimized) file format driver for loop_file_fmt (read-only)",
    license: "GPL",
    alias: ["loop-file-fmt-vmdk"],
}

/// Grain tables kept per device (each at most 2 KiB: 128 KiB at most).
pub const GT_SLOTS: usize = 64;

/// The extent's file as the engine's `Storage` (the disk has one extent).
struct FileStorage<'a>(&'a File);

impl Storage for FileStorage<'_> {
    fn read_at(&self, _extent: usize, buf: &mut [u8], offset: u64) -> vmdkfmt::Result<()> {
        self.0.read_exact_at(buf, offset).map_err(fmt_error)
    }
}

/// The grain table cache: [`GT_SLOTS`] tables, each slot tagged with the
/// file offset it holds.
struct GtCache {
    /// The tables, slot `i` at `i * gt_len`.
    data: KVVec<u8>,
    /// What each slot holds (`None`: nothing valid).
    keys: [Option<u64>; GT_SLOTS],
    /// The slot the next miss replaces.
    next: usize,
}

/// The engine's `Tables`.
struct TablesRef<'a> {
    file: &'a File,
    /// The grain directory in use, as on disk (little-endian `u32`).
    gd: &'a [u8],
    gt_len: usize,
    cache: &'a Mutex<GtCache>,
}

impl Tables for TablesRef<'_> {
    fn gd_entry(&mut self, _extent: usize, index: u32) -> vmdkfmt::Result<u32> {
        let at = (index as usize)
            .checked_mul(4)
            .ok_or(FmtError::Internal)?;
        let b = self.gd.get(at..at + 4).ok_or(FmtError::Internal)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn with_grain_table<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        _extent: usize,
        offset: u64,
        f: F,
    ) -> vmdkfmt::Result<R> {
        let n = self.gt_len;
        let mut guard = self.cache.lock();
        let c = &mut *guard;
        let slot = match c.keys.iter().position(|k| *k == Some(offset)) {
            Some(i) => i,
            None => {
                let i = c.next % GT_SLOTS;
                c.next = (i + 1) % GT_SLOTS;
                c.keys[i] = None;
                let buf = c
                    .data
                    .get_mut(i * n..(i + 1) * n)
                    .ok_or(FmtError::Internal)?;
                self.file.read_exact_at(buf, offset).map_err(fmt_error)?;
                c.keys[i] = Some(offset);
                i
            }
        };
        let table = c.data.get(slot * n..(slot + 1) * n).ok_or(FmtError::Internal)?;
        Ok(f(table))
    }
}

/// The kernel's zlib as the engine's `Decompressor` (zlib-wrapped streams).
impl Decompressor for Inflate {
    fn inflate(&mut self, input: &[u8], output: &mut [u8]) -> vmdkfmt::Result<usize> {
        match Inflate::inflate(self, input, output) {
            Ok(InflateStatus::StreamEnd(n)) => Ok(n),
            // A stream longer than a grain, or corrupt, or cut short.
            Ok(InflateStatus::OutputFull) | Err(_) => Err(FmtError::DecompressionFailed),
        }
    }
}

/// The decompressed grain of a compressed extent and what makes it.
struct GrainCache {
    /// The compressed bytes (two grains, marker included).
    input: KVVec<u8>,
    /// One decompressed grain, valid for `key`.
    output: KVVec<u8>,
    /// `(grain_offset, needed)` of the grain in `output`, if any.
    key: Option<(u64, usize)>,
    zlib: Inflate,
}

/// The engine's `CompressedGrains`.
struct GrainsRef<'a> {
    file: &'a File,
    cache: Option<&'a Mutex<GrainCache>>,
}

impl CompressedGrains for GrainsRef<'_> {
    fn with_grain<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        request: &GrainRead,
        f: F,
    ) -> vmdkfmt::Result<R> {
        // Only a compressed extent maps to compressed grains.
        let cache = self.cache.ok_or(FmtError::Internal)?;
        let mut guard = cache.lock();
        let c = &mut *guard;
        let key = (request.grain_offset, request.needed);
        if c.key != Some(key) {
            c.key = None;
            request.load(
                &FileStorage(self.file),
                &mut c.zlib,
                &mut c.input,
                &mut c.output,
            )?;
            c.key = Some(key);
        }
        Ok(f(&c.output))
    }
}

/// The engine's `Sink`: the request's pages.
struct IovSink<'a, 'b> {
    to: &'a mut IovIter<'b>,
    file: &'a File,
}

impl Sink for IovSink<'_, '_> {
    fn fill_zero(&mut self, len: usize) -> vmdkfmt::Result<()> {
        iovsink::fill_zero(self.to, len).map_err(fmt_error)
    }

    fn copy_from(&mut self, data: &[u8]) -> vmdkfmt::Result<()> {
        if self.to.copy_to(data) != data.len() {
            return Err(fmt_error(EIO));
        }
        Ok(())
    }

    fn read_from_storage(
        &mut self,
        _extent: usize,
        offset: u64,
        len: usize,
    ) -> vmdkfmt::Result<()> {
        iovsink::read_file(self.to, self.file, offset, len).map_err(fmt_error)
    }
}

/// One attached VMDK image.
struct VmdkImage {
    /// Device name, for log lines.
    name: CString,
    file: File,
    disk: Disk,
    /// The disk's one extent, for `map`.
    sparse: SparseExtent,
    subformat: CreateType,
    /// The grain directory as on disk (little-endian `u32` entries).
    gd: KVVec<u8>,
    gt_len: usize,
    tables: Pin<KBox<Mutex<GtCache>>>,
    /// `None` for an uncompressed extent.
    grains: Option<Pin<KBox<Mutex<GrainCache>>>>,
    log: ReadLog,
}

impl VmdkImage {
    /// The engine's `Tables` over this image's directory and cache.
    fn tables(&self) -> TablesRef<'_> {
        TablesRef {
            file: &self.file,
            gd: &self.gd,
            gt_len: self.gt_len,
            cache: &self.tables,
        }
    }

    /// Logs `e` as the reason the image is refused and turns it into its
    /// errno.
    fn refuse(name: &CStr, e: FmtError) -> kernel::error::Error {
        pr_err!("{}: vmdk: {}\n", name, e);
        kernel_error(&e)
    }

    /// Refuses a file without the sparse magic: a descriptor file (its
    /// subformat named), or neither a sparse extent nor a descriptor.
    fn refuse_descriptor(
        name: &CStr,
        file: &File,
        file_len: u64,
        magic: u32,
    ) -> kernel::error::Error {
        if file_len > MAX_DESCRIPTOR_LEN as u64 {
            return Self::refuse(name, FmtError::BadMagic(magic));
        }
        let mut text = match KVVec::from_elem(0u8, file_len as usize, GFP_KERNEL) {
            Ok(t) => t,
            Err(e) => return e.into(),
        };
        if let Err(e) = file.read_exact_at(&mut text, 0) {
            pr_err!("{}: vmdk: cannot read the descriptor\n", name);
            return e;
        }
        match Descriptor::parse(&text) {
            Ok(d) => {
                pr_err!(
                    "{}: vmdk: {} descriptor files (their extents are other files) are not supported; convert the image to monolithicSparse or streamOptimized\n",
                    name,
                    d.create_type.name()
                );
                wrappers::eopnotsupp()
            }
            Err(e) => Self::refuse(name, e),
        }
    }

    /// The subformat the embedded descriptor (checked here) names, or the
    /// header's flags say without one.
    fn subformat(
        name: &CStr,
        file: &File,
        file_len: u64,
        header: &vmdkfmt::SparseHeader,
    ) -> Result<CreateType> {
        let range = header
            .descriptor_range(file_len)
            .map_err(|e| Self::refuse(name, e))?;
        if let Some((offset, len)) = range {
            let mut text = KVVec::from_elem(0u8, len, GFP_KERNEL)?;
            file.read_exact_at(&mut text, offset).inspect_err(|_| {
                pr_err!("{}: vmdk: cannot read the embedded descriptor\n", name);
            })?;
            // An all-zero area is no descriptor (QEMU ignores it too).
            if text.first().is_some_and(|&b| b != 0) {
                let d = Descriptor::parse(&text).map_err(|e| Self::refuse(name, e))?;
                d.check_embedded().map_err(|e| Self::refuse(name, e))?;
                return Ok(d.create_type);
            }
        }
        Ok(if header.markers() {
            CreateType::StreamOptimized
        } else {
            CreateType::MonolithicSparse
        })
    }

    fn attach(req: &AttachRequest<'_>) -> Result<Attached<Self>> {
        let name = req.disk_name();
        attach::check_read_only(req, "vmdk")?;
        let file = req.file(0)?;
        let file_len = file.size();
        let mut first = [0u8; HEADER_LEN];
        let n = (file_len.min(HEADER_LEN as u64)) as usize;
        file.read_exact_at(&mut first[..n], 0).inspect_err(|_| {
            pr_err!("{}: vmdk: cannot read the header\n", name);
        })?;
        match classify(&first[..n]).map_err(|e| Self::refuse(name, e))? {
            FileKind::Sparse => {}
            FileKind::Descriptor => {
                let m = [first[0], first[1], first[2], first[3]];
                let magic = u32::from_le_bytes(m);
                return Err(Self::refuse_descriptor(name, &file, file_len, magic));
            }
        }
        let header =
            read_sparse_header(&FileStorage(&file), 0, file_len).map_err(|e| Self::refuse(name, e))?;
        let sparse = SparseExtent::new(&header, file_len).map_err(|e| Self::refuse(name, e))?;
        let subformat = Self::subformat(name, &file, file_len, &header)?;
        let mut disk = Disk::new();
        disk.push(Extent::sparse(sparse, None).map_err(|e| Self::refuse(name, e))?)
            .map_err(|e| Self::refuse(name, e))?;
        let mut gd = KVVec::from_elem(0u8, sparse.gd_len(), GFP_KERNEL)?;
        file.read_exact_at(&mut gd, sparse.gd_offset())
            .inspect_err(|_| {
                pr_err!("{}: vmdk: cannot read the grain directory\n", name);
            })?;
        let gt_len = sparse.grain_table_len();
        let tables = GtCache {
            data: KVVec::from_elem(0u8, gt_len * GT_SLOTS, GFP_KERNEL)?,
            keys: [None; GT_SLOTS],
            next: 0,
        };
        let grains = if sparse.compressed() {
            let g = sparse.grain_len();
            let cache = GrainCache {
                input: KVVec::from_elem(0u8, max_compressed_len(g), GFP_KERNEL)?,
                output: KVVec::from_elem(0u8, g, GFP_KERNEL)?,
                key: None,
                zlib: Inflate::new(GFP_KERNEL, Wrapping::Zlib)?,
            };
            Some(KBox::pin_init(new_mutex!(cache), GFP_KERNEL)?)
        } else {
            None
        };
        let state = VmdkImage {
            name: CString::try_from_fmt(fmt!("{}", name))?,
            file,
            disk,
            sparse,
            subformat,
            gd,
            gt_len,
            tables: KBox::pin_init(new_mutex!(tables), GFP_KERNEL)?,
            grains,
            log: ReadLog::new(),
        };
        Ok(Attached {
            size: disk.size(),
            state: KBox::new(state, GFP_KERNEL)?,
            force_read_only: true,
            nr_files_used: 1,
        })
    }
}

/// Index of the sysfs attribute `vmdk_subformat`
/// (`loop_file_fmt/vmdk_subformat`).
const ATTR_SUBFORMAT: usize = 0;

#[vtable]
impl FormatDriver for VmdkImage {
    const NAME: &'static CStr = kernel::c_str!("vmdk");

    const ATTRS: &'static [&'static CStr] = &[kernel::c_str!("vmdk_subformat")];

    fn attach(req: &AttachRequest<'_>) -> Result<Attached<Self>> {
        VmdkImage::attach(req)
    }

    fn read(&self, to: &mut IovIter<'_>, pos: u64) -> Result<usize> {
        let len = to.count();
        let mut tables = self.tables();
        let mut grains = GrainsRef {
            file: &self.file,
            cache: self.grains.as_deref(),
        };
        let mut sink = IovSink {
            to,
            file: &self.file,
        };
        match self
            .disk
            .read(&mut tables, &mut grains, pos, len, &mut sink)
        {
            Ok(()) => Ok(len),
            Err(e) => {
                self.log.report(&self.name, "vmdk", pos, len, &e);
                Err(EIO)
            }
        }
    }

    /// The grain tables' view of `[pos, pos + len)`, as `qemu-img map`
    /// reports a VMDK image: allocated grains are present data (with their
    /// file offset unless compressed), zeroed grains present zeros,
    /// unallocated grains zeros.
    fn map(&self, pos: u64, len: u64, out: &mut Extents<'_>) -> Result {
        let end = pos.checked_add(len).ok_or(EINVAL)?;
        let mut tables = self.tables();
        let mut at = pos;
        while at < end {
            let m = self
                .sparse
                .map(&mut tables, 0, at, end - at)
                .map_err(|e| {
                    pr_err!("{}: vmdk: map at {} failed: {}\n", &*self.name, at, e);
                    EIO
                })?;
            let present = uapi::LFF_EXTENT_PRESENT;
            let (flags, host_offset) = match m.kind {
                MappingKind::Data { host_offset } => {
                    (uapi::LFF_EXTENT_DATA | present, Some(host_offset))
                }
                MappingKind::Compressed { .. } => (
                    uapi::LFF_EXTENT_DATA | uapi::LFF_EXTENT_COMPRESSED | present,
                    None,
                ),
                MappingKind::Zero => (uapi::LFF_EXTENT_ZERO | present, None),
                MappingKind::Unallocated => (uapi::LFF_EXTENT_ZERO, None),
            };
            let kind = ExtentKind {
                flags,
                depth: 0,
                host_offset,
            };
            if !out.push(at, m.len, kind) {
                break;
            }
            at += m.len;
        }
        Ok(())
    }

    fn show_attr(&self, index: usize, buf: &mut SysfsBuf<'_>) -> Result {
        use core::fmt::Write;
        match index {
            ATTR_SUBFORMAT => writeln!(buf, "{}", self.subformat.name()),
            _ => return Err(EINVAL),
        }
        .map_err(|_| EINVAL)
    }
}

struct VmdkModule {
    _reg: Registration<VmdkImage>,
}

impl kernel::Module for VmdkModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        Ok(Self {
            _reg: Registration::new(module)?,
        })
    }
}

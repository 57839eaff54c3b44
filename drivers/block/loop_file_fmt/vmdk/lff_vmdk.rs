// SPDX-License-Identifier: GPL-2.0

//! loop_file_fmt_vmdk: VMDK images, read-only: the single-file
//! subformats (monolithicSparse, streamOptimized) and descriptor files
//! with several extents (monolithicFlat, twoGbMaxExtentSparse,
//! twoGbMaxExtentFlat, hand-made descriptors of `FLAT`, `SPARSE` and
//! `ZERO` extents).
//!
//! The format logic (the hosted sparse extent header and the
//! streamOptimized footer, the grain directory and tables, grain markers,
//! the descriptor, the read engine `Disk::read` that splits requests at
//! extent boundaries) is the host-tested `formats/vmdk/src/format` tree,
//! compiled into this module as [`vmdkfmt`]. This crate supplies what the
//! engine asks for, over kernel types:
//!
//! - attach ([`VmdkImage::attach`]): a sparse file (the `KDMV` magic) is
//!   one extent: its header (or the footer it points to) is read and
//!   validated against the file's length and its embedded descriptor
//!   checked (parents are refused). Any other file is read as a
//!   descriptor file: parsed and checked (no parent, at most 15 extent
//!   files, no name twice), its extent files are the request's next files
//!   in the descriptor's order (userspace `losetup-fmt` opened them: the
//!   kernel opens no path named inside an image), each checked at attach
//!   (a flat extent must lie inside its file, a sparse extent's header
//!   must give the declared size); a refusal names the device, the extent,
//!   its descriptor line and its file. Every sparse extent's grain
//!   directory (at most 32 MiB, bounded by the format crate and by the
//!   file) is loaded whole;
//! - `Tables`: those directories, and one small cache of grain tables
//!   ([`GT_SLOTS`] of at most 2 KiB, replaced in turn, keyed by extent
//!   and offset) under a mutex;
//! - `CompressedGrains`: one decompressed grain, the buffers and the zlib
//!   workspace under a mutex, all allocated at attach, so a request
//!   allocates nothing; a grain is used only whole and only once its
//!   stream has inflated without error (Adler-32 included);
//! - `Sink`: the request's pages: flat extents and uncompressed grains are
//!   read from their file straight into them, unallocated and zeroed
//!   grains and `ZERO` extents are zeroed in place, decompressed bytes
//!   copied.
//!
//! Writes and direct I/O are refused (`EROFS`, `EINVAL`), as in the VDI
//! driver.

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
    Error as FmtError, Extent, ExtentKind as ExtentKindOf, ExtentLine, ExtentType, GrainRead,
    MappingKind, Sink, SparseExtent, SparseHeader, Storage, Tables,
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
    description: "VMDK (monolithicSparse, streamOptimized, flat and split descriptor files) file format driver for loop_file_fmt (read-only)",
    license: "GPL",
    alias: ["loop-file-fmt-vmdk"],
}

/// Grain tables kept per device (each at most 2 KiB: 128 KiB at most).
pub const GT_SLOTS: usize = 64;

/// The extents' files as the engine's `Storage`: entry `i` is extent
/// `i`'s file (`None` for a `ZERO` extent).
struct FileStorage<'a>(&'a [Option<File>]);

impl FileStorage<'_> {
    fn file(&self, extent: usize) -> vmdkfmt::Result<&File> {
        self.0
            .get(extent)
            .and_then(Option::as_ref)
            .ok_or(FmtError::Internal)
    }
}

impl Storage for FileStorage<'_> {
    fn read_at(&self, extent: usize, buf: &mut [u8], offset: u64) -> vmdkfmt::Result<()> {
        self.file(extent)?
            .read_exact_at(buf, offset)
            .map_err(fmt_error)
    }
}

/// One file read before the disk exists (a header), as extent 0.
struct OneFile<'a>(&'a File);

impl Storage for OneFile<'_> {
    fn read_at(&self, _extent: usize, buf: &mut [u8], offset: u64) -> vmdkfmt::Result<()> {
        self.0.read_exact_at(buf, offset).map_err(fmt_error)
    }
}

/// The grain table cache of all sparse extents: [`GT_SLOTS`] slots of the
/// largest table, each tagged with the extent and file offset it holds.
struct GtCache {
    /// The tables, slot `i` at `i * slot_len`.
    data: KVVec<u8>,
    /// What each slot holds, `(extent, offset)` (`None`: nothing valid).
    keys: [Option<(usize, u64)>; GT_SLOTS],
    /// The slot the next miss replaces.
    next: usize,
}

/// The engine's `Tables`.
struct TablesRef<'a> {
    files: FileStorage<'a>,
    disk: &'a Disk,
    /// The grain directory in use of each extent, as on disk
    /// (little-endian `u32`; empty for extents that are not sparse).
    gds: &'a [KVVec<u8>],
    slot_len: usize,
    cache: &'a Mutex<GtCache>,
}

impl Tables for TablesRef<'_> {
    fn gd_entry(&mut self, extent: usize, index: u32) -> vmdkfmt::Result<u32> {
        let at = (index as usize).checked_mul(4).ok_or(FmtError::Internal)?;
        let gd = self.gds.get(extent).ok_or(FmtError::Internal)?;
        let b = gd.get(at..at + 4).ok_or(FmtError::Internal)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn with_grain_table<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        extent: usize,
        offset: u64,
        f: F,
    ) -> vmdkfmt::Result<R> {
        let n = match self.disk.extent(extent).map(Extent::kind) {
            Some(ExtentKindOf::Sparse(s)) => s.grain_table_len(),
            _ => return Err(FmtError::Internal),
        };
        let at = |slot: usize| slot * self.slot_len..slot * self.slot_len + n;
        let key = Some((extent, offset));
        let mut guard = self.cache.lock();
        let c = &mut *guard;
        let slot = match c.keys.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                let i = c.next % GT_SLOTS;
                c.next = (i + 1) % GT_SLOTS;
                c.keys[i] = None;
                let buf = c.data.get_mut(at(i)).ok_or(FmtError::Internal)?;
                self.files.read_at(extent, buf, offset)?;
                c.keys[i] = key;
                i
            }
        };
        let table = c.data.get(at(slot)).ok_or(FmtError::Internal)?;
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

/// The decompressed grain of the compressed extents and what makes it.
struct GrainCache {
    /// The compressed bytes (two of the largest grains, marker included).
    input: KVVec<u8>,
    /// One decompressed grain (room for the largest), valid for `key`.
    output: KVVec<u8>,
    /// `(extent, grain_offset, needed)` of the grain in `output`, if any.
    key: Option<(usize, u64, usize)>,
    zlib: Inflate,
}

/// The engine's `CompressedGrains`.
struct GrainsRef<'a> {
    files: FileStorage<'a>,
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
        let n = request.grain_len;
        let input = c
            .input
            .get_mut(..max_compressed_len(n))
            .ok_or(FmtError::Internal)?;
        let output = c.output.get_mut(..n).ok_or(FmtError::Internal)?;
        let key = (request.extent, request.grain_offset, request.needed);
        if c.key != Some(key) {
            c.key = None;
            request.load(&self.files, &mut c.zlib, input, output)?;
            c.key = Some(key);
        }
        Ok(f(output))
    }
}

/// The engine's `Sink`: the request's pages.
struct IovSink<'a, 'b> {
    to: &'a mut IovIter<'b>,
    files: FileStorage<'a>,
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

    fn read_from_storage(&mut self, extent: usize, offset: u64, len: usize) -> vmdkfmt::Result<()> {
        iovsink::read_file(self.to, self.files.file(extent)?, offset, len).map_err(fmt_error)
    }
}

/// The disk and the files of its extents, as attach builds them.
struct Layout {
    disk: Disk,
    /// Extent `i`'s file (`None` for `ZERO` extents).
    files: KVec<Option<File>>,
    subformat: CreateType,
    /// Files of the request used (the image and the extent files).
    nr_files_used: usize,
}

/// One attached VMDK image.
struct VmdkImage {
    /// Device name, for log lines.
    name: CString,
    files: KVec<Option<File>>,
    disk: Disk,
    subformat: CreateType,
    /// Each extent's grain directory as on disk (little-endian `u32`
    /// entries; empty for extents that are not sparse).
    gds: KVec<KVVec<u8>>,
    /// Size of a grain table cache slot: the largest extent's table.
    slot_len: usize,
    tables: Pin<KBox<Mutex<GtCache>>>,
    /// `None` without compressed extents.
    grains: Option<Pin<KBox<Mutex<GrainCache>>>>,
    log: ReadLog,
}

impl VmdkImage {
    fn files(&self) -> FileStorage<'_> {
        FileStorage(&self.files)
    }

    /// The engine's `Tables` over this image's directories and cache.
    fn tables(&self) -> TablesRef<'_> {
        TablesRef {
            files: self.files(),
            disk: &self.disk,
            gds: &self.gds,
            slot_len: self.slot_len,
            cache: &self.tables,
        }
    }

    /// Logs `e` as the reason the image is refused and turns it into its
    /// errno.
    fn refuse(name: &CStr, e: FmtError) -> kernel::error::Error {
        pr_err!("{}: vmdk: {}\n", name, e);
        kernel_error(&e)
    }

    /// Logs `e` as the reason extent `index` of a descriptor (its `line`,
    /// its `file` if it has one) is refused, and turns it into its errno.
    fn refuse_extent(
        name: &CStr,
        index: usize,
        line: &ExtentLine,
        file: Option<&File>,
        e: FmtError,
    ) -> kernel::error::Error {
        let mut buf = KVec::from_elem(0u8, 256, GFP_KERNEL).unwrap_or_else(|_| KVec::new());
        let path = file.and_then(|f| f.path(&mut buf).ok()).unwrap_or(b"-");
        pr_err!(
            "{}: vmdk: extent {} (descriptor line {}, file {}): {}\n",
            name,
            index,
            line.line,
            kernel::str::BStr::from_bytes(path),
            e
        );
        kernel_error(&e)
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

    /// The sparse extent in `file` (header or footer checked against the
    /// file's length).
    fn open_sparse(file: &File) -> core::result::Result<(SparseHeader, SparseExtent), FmtError> {
        let header = read_sparse_header(&OneFile(file), 0, file.size())?;
        Ok((header, SparseExtent::new(&header, file.size())?))
    }

    /// A monolithic image: `file` is its one sparse extent.
    fn monolithic(name: &CStr, file: File) -> Result<Layout> {
        let (header, sparse) = Self::open_sparse(&file).map_err(|e| Self::refuse(name, e))?;
        let subformat = Self::subformat(name, &file, file.size(), &header)?;
        let mut disk = Disk::new();
        disk.push(Extent::sparse(sparse, None).map_err(|e| Self::refuse(name, e))?)
            .map_err(|e| Self::refuse(name, e))?;
        let mut files = KVec::new();
        files.push(Some(file), GFP_KERNEL)?;
        Ok(Layout {
            disk,
            files,
            subformat,
            nr_files_used: 1,
        })
    }

    /// A descriptor file (`file`, the request's file 0): its extents are
    /// the request's next files, one per extent line with a file name, in
    /// order; userspace opened them, the kernel opens no path.
    fn descriptor_file(req: &AttachRequest<'_>, file: &File, magic: u32) -> Result<Layout> {
        let name = req.disk_name();
        let file_len = file.size();
        if file_len > MAX_DESCRIPTOR_LEN as u64 {
            return Err(Self::refuse(name, FmtError::BadMagic(magic)));
        }
        let mut text = KVVec::from_elem(0u8, file_len as usize, GFP_KERNEL)?;
        file.read_exact_at(&mut text, 0).inspect_err(|_| {
            pr_err!("{}: vmdk: cannot read the descriptor\n", name);
        })?;
        let d = Descriptor::parse(&text).map_err(|e| Self::refuse(name, e))?;
        d.check_file(&text).map_err(|e| Self::refuse(name, e))?;
        let needed = 1 + d.file_count();
        if req.nr_files() != needed {
            pr_err!(
                "{}: vmdk: the {} descriptor names {} extent files but {} were given\n",
                name,
                d.create_type.name(),
                needed - 1,
                req.nr_files() - 1
            );
            return Err(EINVAL);
        }
        let mut disk = Disk::new();
        let mut files = KVec::with_capacity(d.extent_count(), GFP_KERNEL)?;
        let mut next = 1;
        for (i, line) in d.extents().enumerate() {
            let f = match line.kind {
                ExtentType::Zero => None,
                _ => {
                    next += 1;
                    Some(req.file(next - 1)?)
                }
            };
            let refuse = |e| Self::refuse_extent(name, i, line, f.as_ref(), e);
            let extent = match (line.kind, &f) {
                (ExtentType::Zero, _) => Extent::zero(line.sectors),
                (ExtentType::Flat { offset }, Some(f)) => {
                    Extent::flat(line.sectors, offset, f.size())
                }
                (ExtentType::Sparse, Some(f)) => {
                    Self::open_sparse(f).and_then(|(_, s)| Extent::sparse(s, Some(line.sectors)))
                }
                _ => Err(FmtError::Internal),
            };
            disk.push(extent.map_err(refuse)?).map_err(refuse)?;
            files.push(f, GFP_KERNEL)?;
        }
        Ok(Layout {
            disk,
            files,
            subformat: d.create_type,
            nr_files_used: needed,
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
        let layout = match classify(&first[..n]).map_err(|e| Self::refuse(name, e))? {
            FileKind::Sparse => Self::monolithic(name, file)?,
            FileKind::Descriptor => {
                let magic = u32::from_le_bytes([first[0], first[1], first[2], first[3]]);
                Self::descriptor_file(req, &file, magic)?
            }
        };
        let Layout {
            disk,
            files,
            subformat,
            nr_files_used,
        } = layout;
        let mut gds = KVec::with_capacity(disk.len(), GFP_KERNEL)?;
        let (mut slot_len, mut grain_len) = (0, None);
        for i in 0..disk.len() {
            let mut gd = KVVec::new();
            if let Some(ExtentKindOf::Sparse(s)) = disk.extent(i).map(Extent::kind) {
                gd = KVVec::from_elem(0u8, s.gd_len(), GFP_KERNEL)?;
                FileStorage(&files)
                    .read_at(i, &mut gd, s.gd_offset())
                    .map_err(|_| {
                        pr_err!(
                            "{}: vmdk: extent {}: cannot read the grain directory\n",
                            name,
                            i
                        );
                        EIO
                    })?;
                slot_len = slot_len.max(s.grain_table_len());
                if s.compressed() {
                    grain_len = grain_len.max(Some(s.grain_len()));
                }
            }
            gds.push(gd, GFP_KERNEL)?;
        }
        let tables = GtCache {
            data: KVVec::from_elem(0u8, slot_len * GT_SLOTS, GFP_KERNEL)?,
            keys: [None; GT_SLOTS],
            next: 0,
        };
        let grains = match grain_len {
            Some(g) => {
                let cache = GrainCache {
                    input: KVVec::from_elem(0u8, max_compressed_len(g), GFP_KERNEL)?,
                    output: KVVec::from_elem(0u8, g, GFP_KERNEL)?,
                    key: None,
                    zlib: Inflate::new(GFP_KERNEL, Wrapping::Zlib)?,
                };
                Some(KBox::pin_init(new_mutex!(cache), GFP_KERNEL)?)
            }
            None => None,
        };
        let state = VmdkImage {
            name: CString::try_from_fmt(fmt!("{}", name))?,
            files,
            disk,
            subformat,
            gds,
            slot_len,
            tables: KBox::pin_init(new_mutex!(tables), GFP_KERNEL)?,
            grains,
            log: ReadLog::new(),
        };
        Ok(Attached {
            size: disk.size(),
            state: KBox::new(state, GFP_KERNEL)?,
            force_read_only: true,
            nr_files_used,
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
            files: self.files(),
            cache: self.grains.as_deref(),
        };
        let mut sink = IovSink {
            to,
            files: self.files(),
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

    /// The extents' view of `[pos, pos + len)`, as `qemu-img map` reports
    /// a VMDK image: in sparse extents, allocated grains are present data
    /// (with their offset in the extent's file unless compressed), zeroed
    /// grains present zeros, unallocated grains zeros; flat extents are
    /// present data at their file offset (holes in the file are not
    /// looked for); `ZERO` extents present zeros.
    fn map(&self, pos: u64, len: u64, out: &mut Extents<'_>) -> Result {
        let end = pos.checked_add(len).ok_or(EINVAL)?;
        let mut tables = self.tables();
        let mut at = pos;
        let present = uapi::LFF_EXTENT_PRESENT;
        while at < end {
            let Some((index, extent, start)) = self.disk.find(at) else {
                break;
            };
            let rel = at - start;
            let want = (end - at).min(extent.size() - rel);
            let (flags, host_offset, n) = match extent.kind() {
                ExtentKindOf::Zero => (uapi::LFF_EXTENT_ZERO | present, None, want),
                ExtentKindOf::Flat { offset, .. } => {
                    (uapi::LFF_EXTENT_DATA | present, Some(offset + rel), want)
                }
                ExtentKindOf::Sparse(s) => {
                    let m = s.map(&mut tables, index, rel, want).map_err(|e| {
                        pr_err!("{}: vmdk: map at {} failed: {}\n", &*self.name, at, e);
                        EIO
                    })?;
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
                    (flags, host_offset, m.len)
                }
            };
            if n == 0 || n > want {
                return Err(EIO);
            }
            let kind = ExtentKind {
                flags,
                depth: 0,
                host_offset,
            };
            if !out.push(at, n, kind) {
                break;
            }
            at += n;
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

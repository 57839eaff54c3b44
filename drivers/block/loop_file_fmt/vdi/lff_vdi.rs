// SPDX-License-Identifier: GPL-2.0

//! loop_file_fmt_vdi: VirtualBox VDI images (header v1.1, static and
//! dynamic), read-only.
//!
//! The format logic (header validation, the block map, the read engine
//! `Vdi::read`) is the host-tested `formats/vdi/src/format` tree, compiled
//! into this module as [`vdifmt`]. This crate supplies what the engine asks
//! for, over kernel types:
//!
//! - attach ([`VdiImage::attach`]): the header is read and validated
//!   against the file's length, the block map (at most 32 MiB, bounded by
//!   the format crate and by the file) loaded whole;
//! - `BlockMap`: that copy, little endian as on disk;
//! - `Sink`: the request's pages: data blocks are read from the file
//!   straight into them, unallocated and zero blocks are zeroed in place.
//!
//! No cache is needed: the block map is the only metadata. Writes and
//! direct I/O are refused (`EROFS`, `EINVAL`), as in the qcow2 driver.

// Only the wrappers may use `unsafe`.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
#[path = "../wrappers/mod.rs"]
pub mod wrappers;

#[path = "../../../../formats/vdi/src/format/mod.rs"]
pub mod vdifmt;

/// The format tree under the name the shared `common/` files use.
pub(crate) use vdifmt as fmtlogic;

#[path = "../common/attach.rs"]
mod attach;
#[path = "../common/errno.rs"]
mod errno;
#[path = "../common/iovsink.rs"]
mod iovsink;
#[path = "../common/readlog.rs"]
mod readlog;

use crate::wrappers::compat::fmt;
use errno::{fmt_error, kernel_error};
use kernel::prelude::*;
use kernel::str::{CStr, CString};
use readlog::ReadLog;
use vdifmt::header::HEADER_LEN;
use vdifmt::{BlockMap, Error as FmtError, Header, ImageType, Sink, Vdi};
use wrappers::file::File;
use wrappers::format::{AttachRequest, Attached, FormatDriver, Registration, SysfsBuf};
use wrappers::iov::IovIter;

// The format logic's errors are shown in log lines.
crate::kernel_display!(FmtError);

module! {
    type: VdiModule,
    name: "loop_file_fmt_vdi",
    description: "VDI (VirtualBox) file format driver for loop_file_fmt (read-only)",
    license: "GPL",
    alias: ["loop-file-fmt-vdi"],
}

/// One attached VDI image.
struct VdiImage {
    /// Device name, for log lines.
    name: CString,
    file: File,
    vdi: Vdi,
    image_type: ImageType,
    /// The block map as on disk (little-endian `u32` entries).
    map: KVVec<u8>,
    log: ReadLog,
}

/// The engine's `BlockMap`: the copy loaded at attach.
struct Map<'a>(&'a [u8]);

impl BlockMap for Map<'_> {
    fn entry(&mut self, index: u32) -> vdifmt::Result<u32> {
        let at = (index as usize).checked_mul(4).ok_or(FmtError::Internal)?;
        let b = self.0.get(at..at + 4).ok_or(FmtError::Internal)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The engine's `Sink`: the request's pages.
struct IovSink<'a, 'b> {
    to: &'a mut IovIter<'b>,
    file: &'a File,
}

impl Sink for IovSink<'_, '_> {
    fn fill_zero(&mut self, len: usize) -> vdifmt::Result<()> {
        iovsink::fill_zero(self.to, len).map_err(fmt_error)
    }

    fn read_from_storage(&mut self, offset: u64, len: usize) -> vdifmt::Result<()> {
        iovsink::read_file(self.to, self.file, offset, len).map_err(fmt_error)
    }
}

impl VdiImage {
    /// Logs `e` as the reason the image is refused and turns it into its
    /// errno.
    fn refuse(name: &CStr, e: FmtError) -> kernel::error::Error {
        pr_err!("{}: vdi: {}\n", name, e);
        kernel_error(&e)
    }

    fn attach(req: &AttachRequest<'_>) -> Result<Attached<Self>> {
        let name = req.disk_name();
        attach::check_read_only(req, "vdi")?;
        let file = req.file(0)?;
        let file_len = file.size();
        let mut first = [0u8; HEADER_LEN];
        let n = (file_len.min(HEADER_LEN as u64)) as usize;
        file.read_exact_at(&mut first[..n], 0).inspect_err(|_| {
            pr_err!("{}: vdi: cannot read the header\n", name);
        })?;
        let header = Header::parse(&first[..n], file_len).map_err(|e| Self::refuse(name, e))?;
        let mut map = KVVec::from_elem(0u8, header.bmap_len(), GFP_KERNEL)?;
        file.read_exact_at(&mut map, header.bmap_offset())
            .inspect_err(|_| {
                pr_err!("{}: vdi: cannot read the block map\n", name);
            })?;
        let vdi = Vdi::new(&header, file_len);
        let state = VdiImage {
            name: CString::try_from_fmt(fmt!("{}", name))?,
            file,
            vdi,
            image_type: header.image_type,
            map,
            log: ReadLog::new(),
        };
        Ok(Attached {
            size: vdi.size(),
            state: KBox::new(state, GFP_KERNEL)?,
            force_read_only: true,
            nr_files_used: 1,
        })
    }
}

/// Index of the sysfs attribute `vdi_type` (`loop_file_fmt/vdi_type`).
const ATTR_TYPE: usize = 0;

#[vtable]
impl FormatDriver for VdiImage {
    const NAME: &'static CStr = kernel::c_str!("vdi");

    const ATTRS: &'static [&'static CStr] = &[kernel::c_str!("vdi_type")];

    fn attach(req: &AttachRequest<'_>) -> Result<Attached<Self>> {
        VdiImage::attach(req)
    }

    fn read(&self, to: &mut IovIter<'_>, pos: u64) -> Result<usize> {
        let len = to.count();
        let mut sink = IovSink {
            to,
            file: &self.file,
        };
        match self.vdi.read(&mut Map(&self.map), pos, len, &mut sink) {
            Ok(()) => Ok(len),
            Err(e) => {
                self.log.report(&self.name, "vdi", pos, len, &e);
                Err(EIO)
            }
        }
    }

    fn show_attr(&self, index: usize, buf: &mut SysfsBuf<'_>) -> Result {
        use core::fmt::Write;
        match index {
            ATTR_TYPE => writeln!(
                buf,
                "{}",
                match self.image_type {
                    ImageType::Dynamic => "dynamic",
                    ImageType::Static => "static",
                }
            ),
            _ => return Err(EINVAL),
        }
        .map_err(|_| EINVAL)
    }
}

struct VdiModule {
    _reg: Registration<VdiImage>,
}

impl kernel::Module for VdiModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        Ok(Self {
            _reg: Registration::new(module)?,
        })
    }
}

// SPDX-License-Identifier: GPL-2.0

//! loop_file_fmt_raw: the raw format, the backing file byte for byte.
//!
//! Reads and writes go straight between the request's pages and the file
//! (with `O_DIRECT` when the image was opened so); flush is `fsync`,
//! discard punches a hole and write-zeroes zeroes a range, like loop.c.
//! `LFF_GET_MAP` reports the whole range as data at the same file offset:
//! finding holes would need `SEEK_DATA`, which moves the file position of
//! the open file userspace passed (shared with it).

// Only the wrappers (and, in the core, the entry points C calls) may
// use `unsafe`.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
#[path = "../wrappers/mod.rs"]
pub mod wrappers;

use kernel::prelude::*;
use kernel::str::CStr;
use wrappers::file::{falloc, File};
use wrappers::format::{AttachRequest, Attached, ExtentKind, Extents, FormatDriver, Registration};
use wrappers::iov::IovIter;
use wrappers::uapi;

module! {
    type: RawModule,
    name: "loop_file_fmt_raw",
    description: "Raw file format driver for loop_file_fmt",
    license: "GPL",
    alias: ["loop-file-fmt-raw"],
}

/// A raw image: the file is the disk.
struct Raw {
    file: File,
}

#[vtable]
impl FormatDriver for Raw {
    const NAME: &'static CStr = kernel::c_str!("raw");

    fn attach(req: &AttachRequest<'_>) -> Result<Attached<Self>> {
        let file = req.file(0)?;
        let size = file.size();
        Ok(Attached {
            state: KBox::new(Raw { file }, GFP_KERNEL)?,
            size,
            force_read_only: false,
            nr_files_used: 1,
        })
    }

    fn read(&self, to: &mut IovIter<'_>, pos: u64) -> Result<usize> {
        let want = to.count();
        let n = self.file.read_iter_at(to, pos)?;
        // Past the end of a file that shrank: zeros, as loop does.
        Ok(n + to.zero(want - n))
    }

    fn write(&self, from: &mut IovIter<'_>, pos: u64) -> Result<usize> {
        self.file.write_iter_at(from, pos)
    }

    fn flush(&self) -> Result {
        self.file.sync(false)
    }

    fn discard(&self, pos: u64, len: u64) -> Result {
        self.file
            .fallocate(falloc::PUNCH_HOLE | falloc::KEEP_SIZE, pos, len)
    }

    fn write_zeroes(&self, pos: u64, len: u64, may_unmap: bool) -> Result {
        let mode = if may_unmap {
            falloc::PUNCH_HOLE
        } else {
            falloc::ZERO_RANGE
        };
        self.file.fallocate(mode | falloc::KEEP_SIZE, pos, len)
    }

    fn map(&self, pos: u64, len: u64, out: &mut Extents<'_>) -> Result {
        let kind = ExtentKind {
            flags: uapi::LFF_EXTENT_DATA | uapi::LFF_EXTENT_PRESENT,
            depth: 0,
            host_offset: Some(pos),
        };
        out.push(pos, len, kind);
        Ok(())
    }
}

struct RawModule {
    _reg: Registration<Raw>,
}

impl kernel::Module for RawModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        Ok(Self {
            _reg: Registration::new(module)?,
        })
    }
}

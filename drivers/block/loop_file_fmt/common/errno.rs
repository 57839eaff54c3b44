// SPDX-License-Identifier: GPL-2.0

//! A format crate's error classes as kernel error codes, at the boundary,
//! for the format trees whose classes are `Invalid`, `Unsupported`,
//! `TooLarge`, `Corrupt` and `Io` (VDI, VMDK). The numbers come from the
//! kernel's own headers through the bindings, so they are right on every
//! architecture (`EOPNOTSUPP` is 95 on x86, 122 on mips, 45 on sparc).
//!
//! The including crate names its format tree `crate::fmtlogic` (its root
//! has `use vdifmt as fmtlogic;` or the like); used by `loop_file_fmt_vdi`,
//! `loop_file_fmt_vmdk` and their KUnit suites.

use crate::fmtlogic::{Error as FmtError, ErrorKind};
use kernel::bindings;
use kernel::error::{code, Error};

/// The kernel error for `e`.
pub(crate) fn kernel_error(e: &FmtError) -> Error {
    match e.kind() {
        ErrorKind::Invalid => code::EINVAL,
        ErrorKind::Unsupported => Error::from_errno(-(bindings::EOPNOTSUPP as i32)),
        ErrorKind::TooLarge => code::EFBIG,
        ErrorKind::Corrupt => code::EIO,
        // A kernel errno the driver's own I/O passed in (`FmtError::Io`).
        ErrorKind::Io(n) => Error::from_errno(-n),
    }
}

/// A kernel error as a format-crate error (its `Io` variant).
pub(crate) fn fmt_error(e: Error) -> FmtError {
    FmtError::Io(-e.to_errno())
}

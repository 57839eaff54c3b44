// SPDX-License-Identifier: GPL-2.0

//! The format crate's errors as kernel error codes, at the boundary: the
//! crate only knows classes ([`ErrorKind`]), the numbers come from the
//! kernel's own headers through the bindings, so they are right on every
//! architecture (`EOPNOTSUPP` is 95 on x86, 122 on mips, 45 on sparc).
//!
//! Used by `loop_file_fmt_qcow2` and by the KUnit suite `lff_kunit_qcow2`.

use crate::qcow2fmt::{Error as FmtError, ErrorKind};
use kernel::bindings;
use kernel::error::{code, Error};

/// A kernel error from a positive errno of the bindings.
fn from_binding(errno: u32) -> Error {
    Error::from_errno(-(errno as i32))
}

/// The kernel error for `e`.
pub(crate) fn kernel_error(e: &FmtError) -> Error {
    match e.kind() {
        ErrorKind::Invalid => code::EINVAL,
        ErrorKind::Unsupported => from_binding(bindings::EOPNOTSUPP),
        ErrorKind::TooLarge => code::EFBIG,
        ErrorKind::ChainTooDeep => from_binding(bindings::ELOOP),
        ErrorKind::NotFound => code::ENOENT,
        ErrorKind::Corrupt => code::EIO,
        // A kernel errno the driver's own I/O passed in (`FmtError::Io`).
        ErrorKind::Io(n) => Error::from_errno(-n),
    }
}

// SPDX-License-Identifier: GPL-2.0

//! What a read engine's `Sink` does with a request's pages, for the
//! format drivers' crates (`vdi/`, later `vmdk/`): zeros written in
//! place, file data read straight into the pages (`vfs_iter_read` on a
//! prefix view of the request's iterator).
//!
//! Every function appends exactly `len` bytes or fails with `EIO` (the
//! iterator has less room than the engine asked for, or the file shrank
//! under us); the engine then fails the request.

use crate::wrappers::file::File;
use crate::wrappers::iov::IovIter;
use kernel::prelude::*;

/// Appends `len` zero bytes to `to`.
pub(crate) fn fill_zero(to: &mut IovIter<'_>, len: usize) -> Result {
    if to.zero(len) != len {
        return Err(EIO);
    }
    Ok(())
}

/// Appends `len` bytes of `file` at `offset` to `to`.
pub(crate) fn read_file(to: &mut IovIter<'_>, file: &File, offset: u64, len: usize) -> Result {
    if to.count() < len {
        return Err(EIO);
    }
    let n = to.with_prefix(len, |p| file.read_iter_at(p, offset))?;
    if n != len {
        return Err(EIO);
    }
    Ok(())
}

// SPDX-License-Identifier: GPL-2.0

//! A borrowed `struct iov_iter`: the data of one block request, walked by a
//! format driver while it serves the request.
//!
//! C header: [`include/linux/uio.h`](srctree/include/linux/uio.h)

use super::sys;
use core::marker::PhantomData;
use kernel::bindings;

/// A mutable borrow of an initialised `struct iov_iter` for lifetime `'a`.
///
/// # Invariants
///
/// `raw` points to a valid, initialised `struct iov_iter`, whose memory
/// (pages of a request) stays valid for `'a`, and which nobody else uses
/// for `'a`.
pub struct IovIter<'a> {
    raw: *mut bindings::iov_iter,
    _p: PhantomData<&'a mut bindings::iov_iter>,
}

impl<'a> IovIter<'a> {
    /// Wraps a raw iterator.
    ///
    /// # Safety
    ///
    /// `raw` must point to a valid, initialised `struct iov_iter` whose
    /// memory stays valid, and which nobody else uses, for `'a`.
    pub unsafe fn from_raw(raw: *mut bindings::iov_iter) -> Self {
        // INVARIANT: the caller's contract is the invariant.
        Self {
            raw,
            _p: PhantomData,
        }
    }

    /// The raw pointer, for the VFS and the C ABI.
    pub fn as_raw(&mut self) -> *mut bindings::iov_iter {
        self.raw
    }

    /// Bytes left in the iterator.
    pub fn count(&self) -> usize {
        // SAFETY: `raw` is valid by the type invariant.
        unsafe { sys::lff_iov_iter_count(self.raw) }
    }

    /// Copies `data` to the iterator and advances it; returns the number of
    /// bytes copied (less than `data.len()` only when the iterator is full).
    pub fn copy_to(&mut self, data: &[u8]) -> usize {
        // SAFETY: `raw` is valid; `data` is readable for its length.
        unsafe { sys::lff_copy_to_iter(data.as_ptr().cast(), data.len(), self.raw) }
    }

    /// Copies from the iterator into `buf` and advances it; returns the
    /// number of bytes copied.
    pub fn copy_from(&mut self, buf: &mut [u8]) -> usize {
        // SAFETY: `raw` is valid; `buf` is writable for its length.
        unsafe { sys::lff_copy_from_iter(buf.as_mut_ptr().cast(), buf.len(), self.raw) }
    }

    /// Fills the next `len` bytes with zeros and advances; returns the
    /// number of bytes zeroed.
    pub fn zero(&mut self, len: usize) -> usize {
        // SAFETY: `raw` is valid by the type invariant.
        unsafe { bindings::iov_iter_zero(len, self.raw) }
    }

    /// Skips `len` bytes (at most `count()`).
    pub fn advance(&mut self, len: usize) {
        let len = len.min(self.count());
        // SAFETY: `raw` is valid and `len` is within the iterator.
        unsafe { bindings::iov_iter_advance(self.raw, len) }
    }

    /// Runs `f` on a view of the next `len` bytes only (fewer if the
    /// iterator holds fewer); the iterator then continues after what `f`
    /// consumed.
    pub fn with_prefix<R>(&mut self, len: usize, f: impl FnOnce(&mut IovIter<'_>) -> R) -> R {
        let total = self.count();
        let len = len.min(total);
        // SAFETY: `raw` is valid; truncating to `len <= count` is allowed.
        unsafe { sys::lff_iov_iter_truncate(self.raw, len) };
        let r = f(self);
        let consumed = len - self.count();
        // SAFETY: `raw` is valid; it held `total - consumed` bytes before the
        // truncation hid them, so re-expanding to that is allowed.
        unsafe { sys::lff_iov_iter_reexpand(self.raw, total - consumed) };
        r
    }
}

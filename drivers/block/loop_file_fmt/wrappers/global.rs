// SPDX-License-Identifier: GPL-2.0

//! A module-wide value reachable from C callbacks that carry no context
//! (the exported `lff_register_format`, the control node's ioctl).

use core::pin::Pin;
use core::sync::atomic::{AtomicPtr, Ordering};
use kernel::prelude::*;

/// A value set in module init and taken back in module exit.
pub struct ModuleGlobal<T> {
    ptr: AtomicPtr<T>,
}

// SAFETY: only shared references to `T` are handed out, so `T: Sync` is
// enough; the value is moved in and out whole.
unsafe impl<T: Send + Sync> Sync for ModuleGlobal<T> {}

impl<T: Send + Sync> Default for ModuleGlobal<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + Sync> ModuleGlobal<T> {
    /// An empty global.
    pub const fn new() -> Self {
        Self {
            ptr: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// Publishes `value`.
    pub fn set(&self, value: Pin<KBox<T>>) -> Result {
        // SAFETY: the box is pinned; it is only turned back into a pinned
        // box by `take`.
        let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(value) });
        if self
            .ptr
            .compare_exchange(
                core::ptr::null_mut(),
                raw,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // SAFETY: `raw` was not published; we still own it.
            drop(unsafe { KBox::from_raw(raw) });
            return Err(EBUSY);
        }
        Ok(())
    }

    /// The value, if set.
    pub fn get(&self) -> Option<&T> {
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: a published value stays valid until `take`, whose caller
        // guarantees that no reference obtained here is still in use.
        unsafe { p.as_ref() }
    }

    /// Takes the value back.
    ///
    /// # Safety
    ///
    /// No reference returned by `get` may be in use, and `get` must not be
    /// called concurrently (module exit, after every entry point that could
    /// call it is gone).
    pub unsafe fn take(&self) -> Option<Pin<KBox<T>>> {
        let p = self.ptr.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` came from `KBox::into_raw` of a pinned box in `set`.
        Some(unsafe { Pin::new_unchecked(KBox::from_raw(p)) })
    }
}

// SPDX-License-Identifier: GPL-2.0

//! Test hooks of the driver registry, for the KUnit suite
//! `tests/kunit/lff_kunit_registry_suite.rs`; built with `CONFIG_KUNIT` only
//! and exported by `lff_helpers.c`. Format drivers never call them.
//!
//! The public ABI (`lff_register_format`/`lff_unregister_format`) covers
//! registering; these add the lookup a device does at attach, without
//! loading a module or needing a device: find a format by name and pin its
//! module, then release it.

use crate::registry::CORE;
use crate::wrappers::format::PinnedDriver;
use kernel::ffi::{c_char, c_int, c_void};
use kernel::prelude::*;
use kernel::str::CStr;

/// Looks up the registered format `name` (no module loading) and pins it
/// like an attach does. Returns 0 with an opaque handle in `*handle` and
/// the registered driver's `name` pointer in `*drv_name`, or `-ENOENT`.
///
/// # Safety
///
/// `name` must be a NUL-terminated string; `handle` and `drv_name` must be
/// valid for writes. The handle must be released with
/// [`lff_test_format_put`].
#[no_mangle]
pub(crate) unsafe extern "C" fn lff_test_format_get(
    name: *const c_char,
    handle: *mut *mut c_void,
    drv_name: *mut *const c_char,
) -> c_int {
    // SAFETY: `name` is NUL-terminated (caller's guarantee).
    let name = unsafe { CStr::from_char_ptr(name) };
    let found = CORE.get().ok_or(ENODEV).and_then(|core| {
        let pinned = core.find_driver(name).ok_or(ENOENT)??;
        let name_ptr = pinned.name().as_char_ptr();
        Ok((KBox::into_raw(KBox::new(pinned, GFP_KERNEL)?), name_ptr))
    });
    match found {
        Ok((h, n)) => {
            // SAFETY: both are valid for writes (caller's guarantee).
            unsafe {
                *handle = h.cast();
                *drv_name = n;
            }
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// Releases a handle of [`lff_test_format_get`], unpinning the driver.
///
/// # Safety
///
/// `handle` must come from [`lff_test_format_get`] and not be used after.
#[no_mangle]
pub(crate) unsafe extern "C" fn lff_test_format_put(handle: *mut c_void) {
    // SAFETY: `handle` is a `KBox<PinnedDriver>` from `lff_test_format_get`,
    // released once (caller's guarantee).
    drop(unsafe { KBox::from_raw(handle.cast::<PinnedDriver>()) });
}

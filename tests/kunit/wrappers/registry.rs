// SPDX-License-Identifier: GPL-2.0

//! What the registry suite needs beyond the safe format driver API
//! (`wrappers::format::Registration`): the core's lookup test hooks
//! (`core/test_hooks.rs`), malformed registrations through the public C
//! ABI, and a module's reference count.

use crate::wrappers::format::{FormatDriver, RawDriver, RawOps, ABI_VERSION};
use core::ptr;
use kernel::bindings;
use kernel::error::{to_result, Result};
use kernel::ffi::{c_char, c_int, c_void};
use kernel::prelude::*;
use kernel::str::CStr;

// `RawDriver` points to `struct module`; it is only passed by pointer.
#[allow(improper_ctypes)]
extern "C" {
    fn lff_test_format_get(
        name: *const c_char,
        handle: *mut *mut c_void,
        drv_name: *mut *const c_char,
    ) -> c_int;
    fn lff_test_format_put(handle: *mut c_void);
    fn lff_register_format(drv: *const RawDriver) -> c_int;
    fn lff_unregister_format(drv: *const RawDriver);
}

/// A registered format found by name and pinned, as an attach pins it;
/// unpinned when dropped.
///
/// # Invariants
///
/// `handle` came from a successful `lff_test_format_get` and is released
/// once, in `drop`; `name` is the registered driver's NUL-terminated name,
/// valid while the driver is pinned.
pub struct Lookup {
    handle: *mut c_void,
    name: *const c_char,
}

impl Lookup {
    /// Finds the registered format `name` (without loading modules) and
    /// pins its module. `ENOENT` if none is registered by that name.
    pub fn get(name: &CStr) -> Result<Self> {
        let mut handle = ptr::null_mut();
        let mut drv_name = ptr::null();
        // SAFETY: `name` is NUL-terminated; both out pointers are valid.
        to_result(unsafe { lff_test_format_get(name.as_char_ptr(), &mut handle, &mut drv_name) })?;
        Ok(Self {
            handle,
            name: drv_name,
        })
    }

    /// The registered driver's name.
    pub fn name(&self) -> &CStr {
        // SAFETY: valid while pinned (type invariant), i.e. while `self` lives.
        unsafe { CStr::from_char_ptr(self.name) }
    }

    /// Whether the driver found is `T`'s registration (its very name
    /// string, not just an equal one).
    pub fn is<T: FormatDriver>(&self) -> bool {
        ptr::eq(self.name, T::NAME.as_char_ptr())
    }
}

impl core::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Lookup")
            .field("name", &self.name())
            .finish()
    }
}

impl Drop for Lookup {
    fn drop(&mut self) {
        // SAFETY: `handle` came from `lff_test_format_get` and is released
        // only here (type invariant).
        unsafe { lff_test_format_put(self.handle) };
    }
}

/// Ways to get `lff_register_format` wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// A NULL driver.
    Null,
    /// A NULL name.
    NoName,
    /// A NULL ops table.
    NoOps,
    /// Ops without `read_iter`.
    NoReadIter,
    /// Built against another `LFF_FORMAT_ABI_VERSION`.
    OtherAbiVersion,
    /// Built with another `struct lff_format_driver` size.
    OtherStructSize,
}

/// An attach that refuses.
///
/// # Safety
///
/// None needed: it touches no argument.
unsafe extern "C" fn dummy_attach(
    _: *mut crate::wrappers::format::RawAttachInfo,
    _: *mut *mut c_void,
) -> c_int {
    -(bindings::ENODEV as c_int)
}

/// A read that fails.
///
/// # Safety
///
/// None needed: it touches no argument.
unsafe extern "C" fn dummy_read_iter(_: *mut c_void, _: *mut bindings::iov_iter, _: i64) -> isize {
    -(bindings::EIO as isize)
}

/// A detach with nothing to do.
///
/// # Safety
///
/// None needed: it touches no argument.
unsafe extern "C" fn dummy_detach(_: *mut c_void) {}

/// Calls `lff_register_format` with a malformed driver named `name`;
/// returns its result. Should the core accept it, it is unregistered again
/// before its memory goes.
pub fn register_malformed(kind: Malformed, name: &'static CStr) -> Result {
    let ops = KBox::new(
        RawOps {
            attach: Some(dummy_attach),
            detach: Some(dummy_detach),
            read_iter: if matches!(kind, Malformed::NoReadIter) {
                None
            } else {
                Some(dummy_read_iter)
            },
            write_iter: None,
            flush: None,
            discard: None,
            write_zeroes: None,
            attrs: ptr::null(),
            nr_attrs: 0,
            map: None,
        },
        GFP_KERNEL,
    )?;
    let drv = KBox::new(
        RawDriver {
            abi_version: if matches!(kind, Malformed::OtherAbiVersion) {
                ABI_VERSION + 1
            } else {
                ABI_VERSION
            },
            struct_size: if matches!(kind, Malformed::OtherStructSize) {
                core::mem::size_of::<RawDriver>() as u32 - 8
            } else {
                core::mem::size_of::<RawDriver>() as u32
            },
            name: if matches!(kind, Malformed::NoName) {
                ptr::null()
            } else {
                name.as_char_ptr()
            },
            owner: ptr::null_mut(),
            ops: if matches!(kind, Malformed::NoOps) {
                ptr::null()
            } else {
                &*ops
            },
        },
        GFP_KERNEL,
    )?;
    let p: *const RawDriver = if matches!(kind, Malformed::Null) {
        ptr::null()
    } else {
        &*drv
    };
    // SAFETY: `p` is NULL or points to `drv`, whose name and ops stay valid
    // until it is unregistered below.
    let r = to_result(unsafe { lff_register_format(p) });
    if r.is_ok() && !p.is_null() {
        // SAFETY: `p` was just registered.
        unsafe { lff_unregister_format(p) };
    }
    r
}

/// The reference count of `module` (`module_refcount`), or `None` for
/// code built into the kernel, which has no `struct module` to count.
pub fn module_refcount(module: &'static ThisModule) -> Option<i32> {
    let m = module.as_ptr();
    // SAFETY: a non-NULL `m` is a live module (the caller's own, which
    // cannot be unloaded while its code runs).
    (!m.is_null()).then(|| unsafe { bindings::module_refcount(m) })
}

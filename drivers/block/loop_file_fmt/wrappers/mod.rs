// SPDX-License-Identifier: GPL-2.0

//! The project's thin, audited layer over `kernel::bindings`.
//!
//! Every `unsafe` block of the loop_file_fmt modules lives under this
//! directory, except the entry points that C code calls into the core
//! (`lff_register_format`/`lff_unregister_format` and the global's
//! teardown in `core/lff_core.rs`, the control node's callbacks in
//! `core/control.rs`, the KUnit hooks in `core/test_hooks.rs`): each turns
//! its C arguments into safe types at once. The crates enforce it: their
//! roots `#![deny(unsafe_code)]` and allow it only on these modules and
//! items, so the device logic (`core/device.rs`, `core/registry.rs`) and
//! the format drivers are safe Rust. Each module crate includes this tree
//! with `#[path = "../wrappers/mod.rs"] pub mod wrappers;`.

pub mod blk;
pub mod compat;
pub mod file;
pub mod format;
pub mod global;
pub mod iov;
pub(crate) mod sys;
pub mod uapi;

use kernel::bindings;
use kernel::error::{to_result, Result};
use kernel::str::CStr;

/// Whether the current task has `CAP_SYS_ADMIN`.
pub fn capable_sys_admin() -> bool {
    // SAFETY: `capable` may be called from any process context.
    unsafe { bindings::capable(bindings::CAP_SYS_ADMIN as i32) }
}

/// `EOPNOTSUPP`, which the 6.12 `kernel::error::code` lacks.
pub fn eopnotsupp() -> kernel::error::Error {
    kernel::error::Error::from_errno(-(bindings::EOPNOTSUPP as i32))
}

/// `EUCLEAN` ("structure needs cleaning"), which the `kernel` crate does
/// not name: a format driver's answer to a write once it has found the
/// image's metadata inconsistent and takes no more writes (see
/// `struct lff_format_ops`).
pub fn euclean() -> kernel::error::Error {
    kernel::error::Error::from_errno(-(bindings::EUCLEAN as i32))
}

/// Number of possible CPU ids.
pub fn nr_cpu_ids() -> u32 {
    // SAFETY: `nr_cpu_ids` is set during early boot and only read after.
    unsafe { bindings::nr_cpu_ids }
}

/// Loads the module `name` (or its alias) and waits for it, like
/// `request_module("%s", name)`.
pub fn request_module(name: &CStr) -> Result {
    // SAFETY: the format string takes one string argument, `name`, which
    // is NUL-terminated.
    let r = unsafe {
        bindings::__request_module(
            true,
            compat::char_ptr(kernel::c_str!("%s")),
            compat::char_ptr(name),
        )
    };
    // `request_module` returns modprobe's exit status when positive.
    if r > 0 {
        return Err(kernel::error::code::ENOENT);
    }
    to_result(r)
}

/// Whether a message that userspace can trigger at will may be printed
/// now (`printk_ratelimit()`).
pub fn ratelimit() -> bool {
    // SAFETY: callable from any context.
    unsafe { sys::lff_ratelimit() }
}

/// `pr_err!` behind [`ratelimit`], for reasons of a refused ioctl.
#[macro_export]
macro_rules! pr_err_ratelimited {
    ($($arg:tt)*) => {
        if $crate::wrappers::ratelimit() {
            kernel::pr_err!($($arg)*);
        }
    };
}

/// The bytes of a C `char` array (a fixed-size string field of a UAPI
/// struct).
pub fn c_chars_as_bytes(chars: &[core::ffi::c_char]) -> &[u8] {
    // SAFETY: `c_char` and `u8` have the same size and alignment, and every
    // bit pattern is valid for both.
    unsafe { core::slice::from_raw_parts(chars.as_ptr().cast::<u8>(), chars.len()) }
}

/// A zeroed `KVVec` of `n` elements, or `None` when the memory cannot be
/// had after a bounded effort: `kvzalloc` with `__GFP_RETRY_MAYFAIL` (no
/// OOM killer, a bounded number of reclaim retries), so a request never
/// waits indefinitely for memory that only its own progress could free.
/// In a request's `memalloc_noio` scope, reclaim does no I/O.
pub fn kvvec_zeroed_mayfail<T: compat::Zeroable>(n: usize) -> Option<kernel::alloc::KVVec<T>> {
    use kernel::alloc::KVVec;
    let size = core::mem::size_of::<T>();
    // kvmalloc memory is aligned to at least 8 bytes.
    if n == 0 || size == 0 || core::mem::align_of::<T>() > 8 {
        return None;
    }
    let bytes = n.checked_mul(size).filter(|&b| b <= isize::MAX as usize)?;
    // SAFETY: any size may be asked for; the result is NULL or `bytes`
    // zeroed bytes from kvmalloc.
    let ptr = unsafe { sys::lff_kvzalloc_mayfail(bytes) }.cast::<T>();
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` is a kvmalloc allocation (which `KVVec`'s allocator,
    // `KVmalloc`, frees with `kvfree` and resizes with `kvrealloc`) of
    // `n * size_of::<T>()` bytes, no more than `isize::MAX`, aligned for
    // `T` (checked above); its `n` elements are initialised, since all-zero
    // bytes are a valid `T` (`Zeroable`).
    Some(unsafe { KVVec::from_raw_parts(ptr, n, n) })
}

// SPDX-License-Identifier: GPL-2.0

//! What the kernel crate spells differently in Linux 6.12 and 7.x, in one
//! place: the drivers call these and compile unchanged on both. The 7.x
//! variants are `#[cfg(lff_linux7)]`, set by the Kbuild files from the
//! kernel's `VERSION`. (The blk-mq and sysfs struct layouts that differ
//! are handled where they are filled in, in `blk.rs`; the C helpers check
//! `LINUX_VERSION_CODE`.)

use kernel::str::CStr;

/// `fmt!`: the `format_args!` of the kernel crate, which shows C strings
/// (`kernel::fmt!` in 6.12; the prelude's `fmt!` in 7.x, where `pr_*!`
/// and `fmt!` take `kernel::fmt::Display` rather than core's).
#[cfg(not(lff_linux7))]
pub use kernel::fmt;
#[cfg(lff_linux7)]
pub use kernel::prelude::fmt;

/// The trait of types for which all-zero bytes are a valid value
/// (`kernel::init::Zeroable` in 6.12; pin-init's, in the prelude, in 7.x).
#[cfg(not(lff_linux7))]
pub use kernel::init::Zeroable;
#[cfg(lff_linux7)]
pub use kernel::prelude::Zeroable;

/// Lets `fmt!` and `pr_*!` show types that implement
/// `core::fmt::Display`: on 7.x those macros take `kernel::fmt::Display`,
/// a separate trait, which this implements by forwarding to core's; on 6.12
/// it expands to nothing.
#[macro_export]
macro_rules! kernel_display {
    ($($t:ty),+ $(,)?) => {
        $(
            #[cfg(lff_linux7)]
            impl kernel::fmt::Display for $t {
                fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                    core::fmt::Display::fmt(self, f)
                }
            }
        )+
    };
}

/// The bytes of a C string (6.12's `kernel::str::CStr::as_bytes`, 7.x's
/// `core::ffi::CStr::to_bytes`).
pub trait CStrBytes {
    /// The bytes, without the terminating NUL.
    fn to_byte_slice(&self) -> &[u8];
    /// The bytes and the terminating NUL.
    fn to_byte_slice_with_nul(&self) -> &[u8];
}

impl CStrBytes for CStr {
    #[cfg(not(lff_linux7))]
    fn to_byte_slice(&self) -> &[u8] {
        self.as_bytes()
    }
    #[cfg(lff_linux7)]
    fn to_byte_slice(&self) -> &[u8] {
        self.to_bytes()
    }
    #[cfg(not(lff_linux7))]
    fn to_byte_slice_with_nul(&self) -> &[u8] {
        self.as_bytes_with_nul()
    }
    #[cfg(lff_linux7)]
    fn to_byte_slice_with_nul(&self) -> &[u8] {
        self.to_bytes_with_nul()
    }
}

/// The C pointer of a C string, in const contexts too (7.x's
/// `CStrExt::as_char_ptr` is a trait method, not `const`).
pub const fn char_ptr(s: &CStr) -> *const kernel::ffi::c_char {
    #[cfg(not(lff_linux7))]
    {
        s.as_char_ptr()
    }
    #[cfg(lff_linux7)]
    {
        kernel::str::as_char_ptr_in_const_context(s)
    }
}

/// Milliseconds of `CLOCK_MONOTONIC` (since boot). 6.12's `Ktime` became
/// 7.x's `Instant<Monotonic>`, whose value is not public: this reads
/// `ktime_get()`, the same on both.
pub fn now_ms() -> i64 {
    // SAFETY: `ktime_get` may be called from any context once timekeeping
    // is up, long before any module loads.
    let ns = unsafe { kernel::bindings::ktime_get() };
    ns / 1_000_000
}

/// Nanoseconds of `CLOCK_MONOTONIC` (since boot), for timing short
/// spans; see [`now_ms`].
pub fn now_ns() -> u64 {
    // SAFETY: as in `now_ms`.
    let ns = unsafe { kernel::bindings::ktime_get() };
    ns.max(0) as u64
}

/// The `UserSlice` of `len` bytes at the user address `addr` (7.x wraps
/// the address in a `UserPtr`).
pub fn user_slice(addr: usize, len: usize) -> kernel::uaccess::UserSlice {
    #[cfg(not(lff_linux7))]
    {
        kernel::uaccess::UserSlice::new(addr, len)
    }
    #[cfg(lff_linux7)]
    {
        kernel::uaccess::UserSlice::new(kernel::uaccess::UserPtr::from_addr(addr), len)
    }
}

/// `&'static ThisModule` of the crate's `module!` (6.12: its
/// `THIS_MODULE` static; 7.x: the `ModuleMetadata` constant).
#[cfg(not(lff_linux7))]
#[macro_export]
macro_rules! this_module {
    () => {
        &$crate::THIS_MODULE
    };
}
/// `&'static ThisModule` of the crate's `module!` (6.12: its
/// `THIS_MODULE` static; 7.x: the `ModuleMetadata` constant).
#[cfg(lff_linux7)]
#[macro_export]
macro_rules! this_module {
    () => {
        &<$crate::LocalModule as kernel::ModuleMetadata>::THIS_MODULE
    };
}

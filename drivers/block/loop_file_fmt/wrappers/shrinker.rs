// SPDX-License-Identifier: GPL-2.0

//! A shrinker: memory reclaim asks [`Shrink::count`] how much a cache could
//! give back and calls [`Shrink::scan`] to have some of it freed, so that
//! under memory pressure the cache shrinks rather than the system
//! swapping. Each [`Shrinker`] owns one `struct shrinker`
//! (`shrinker_alloc`, `shrinker_register`), whose `private_data` points at
//! the shared data; dropping it calls `shrinker_free`, which waits until
//! no callback runs or will run again, and only then is the data released.
//!
//! `shrinker_alloc` is variadic (a name format for debugfs): the qcow2
//! module's C helper calls it with `"%s"`. The shrinker is neither NUMA
//! nor memcg aware: reclaim calls it for node 0 of the root cgroup, that
//! is for global pressure and `drop_caches`. The API is the same in 6.12
//! and 7.3 (`mm/shrinker.c`: lockless lookups, a refcount and a completion
//! that `shrinker_free` waits on, then an RCU-delayed free).
//!
//! Used by `loop_file_fmt_qcow2` only (its caches).
//!
//! C header: [`include/linux/shrinker.h`](srctree/include/linux/shrinker.h)

use core::ptr::NonNull;
use kernel::bindings;
// `unsigned long` is `usize` in the kernel's `ffi` crate.
use kernel::ffi::c_ulong;
use kernel::prelude::*;
use kernel::str::CStr;
use kernel::sync::Arc;

use crate::qcow2_sys::lff_qcow2_shrinker_alloc;
use crate::wrappers::compat;

/// `SHRINK_STOP` (bindgen spells the C macro as a negative `i32`).
const SHRINK_STOP: c_ulong = !0;
/// `SHRINK_EMPTY`.
const SHRINK_EMPTY: c_ulong = !0 - 1;

/// What a [`Shrinker`] asks of its data.
///
/// Both methods may run at any time, concurrently with each other and with
/// anything else, in the task whose allocation entered reclaim (which may
/// be one of the caller's own, in a NOIO or NOFS scope), in kswapd, or in
/// a writer of `/proc/sys/vm/drop_caches`. So they must not allocate
/// memory that can wait for reclaim, and must not wait for a lock that is
/// held across such an allocation. This is not about memory safety (the
/// wrapper is sound whatever they do), but a shrinker that breaks it can
/// deadlock reclaim.
pub trait Shrink: Send + Sync + 'static {
    /// How many objects [`Shrink::scan`] could free now (0: none). The
    /// unit is the implementation's own (pages, entries), the same in both
    /// methods; reclaim asks to scan a share of this count.
    fn count(&self) -> usize;

    /// Frees up to `nr` objects; returns how many it freed, or `None` when
    /// it can free nothing now (`SHRINK_STOP`: reclaim stops asking in
    /// this pass).
    fn scan(&self, nr: usize) -> Option<usize>;
}

/// A registered shrinker over `T`.
///
/// # Invariants
///
/// `ptr` is a shrinker from `shrinker_alloc`, registered, whose callbacks
/// are [`count_objects::<T>`] and [`scan_objects::<T>`] and whose
/// `private_data` points at the `T` of `_data`; `drop` frees it before
/// `_data` is released.
pub struct Shrinker<T: Shrink> {
    ptr: NonNull<bindings::shrinker>,
    /// What `private_data` points into, kept alive for the callbacks.
    _data: Arc<T>,
}

// SAFETY: the shrinker may be freed from any thread (`shrinker_free` only
// needs process context, as any drop of a device's state has); the
// callbacks reach `T` from other threads, hence `T: Send + Sync`.
unsafe impl<T: Shrink> Send for Shrinker<T> {}
// SAFETY: `&Shrinker` gives access to nothing but `&T`, which is `Sync`.
unsafe impl<T: Shrink> Sync for Shrinker<T> {}

impl<T: Shrink> Shrinker<T> {
    /// Allocates and registers a shrinker named `name` (shown in debugfs
    /// with `CONFIG_SHRINKER_DEBUG`; copied) over `data`. From here on
    /// reclaim may call `data`'s [`Shrink`] methods, until the shrinker is
    /// dropped.
    pub fn new(name: &CStr, data: Arc<T>) -> Result<Self> {
        // SAFETY: `name` is NUL-terminated and only read (formatted with
        // "%s" and copied) during the call.
        let raw = unsafe { lff_qcow2_shrinker_alloc(compat::char_ptr(name)) };
        let ptr = NonNull::new(raw).ok_or(ENOMEM)?;
        let s = ptr.as_ptr();
        // SAFETY: `s` is a shrinker just allocated and not registered, so
        // no one else reads it yet; `private_data` points at the `T` that
        // `data` keeps alive, and `drop` keeps `data` until the shrinker is
        // freed. `shrinker_register` then publishes the fields (under
        // `shrinker_mutex`, before any lookup can find it).
        unsafe {
            (*s).count_objects = Some(count_objects::<T>);
            (*s).scan_objects = Some(scan_objects::<T>);
            (*s).private_data = core::ptr::from_ref::<T>(&data).cast_mut().cast();
            bindings::shrinker_register(s);
        }
        // INVARIANT: allocated, registered, callbacks and `private_data`
        // set just above.
        Ok(Self { ptr, _data: data })
    }
}

impl<T: Shrink> Drop for Shrinker<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` is a registered shrinker (type invariant), freed
        // only here. `shrinker_free` drops the registration's reference
        // and waits for every lookup to end, so when it returns no
        // callback runs or will run again; only then is `_data` released
        // (fields drop after this body). The struct itself is freed after
        // an RCU grace period, by the kernel.
        unsafe { bindings::shrinker_free(self.ptr.as_ptr()) };
    }
}

/// The `T` of a shrinker.
///
/// # Safety
///
/// `shrinker` must be the shrinker of a live [`Shrinker<T>`].
unsafe fn data_of<'a, T: Shrink>(shrinker: *mut bindings::shrinker) -> &'a T {
    // SAFETY: by the caller's contract and the type invariant,
    // `private_data` points at the `T` of the `Shrinker`'s `Arc`, which
    // stays alive until `shrinker_free` has waited for this callback.
    unsafe { &*(*shrinker).private_data.cast::<T>() }
}

/// `count_objects`: [`Shrink::count`], 0 as `SHRINK_EMPTY`.
///
/// # Safety
///
/// Called by reclaim only, for a shrinker registered by [`Shrinker::new`].
unsafe extern "C" fn count_objects<T: Shrink>(
    shrinker: *mut bindings::shrinker,
    _sc: *mut bindings::shrink_control,
) -> c_ulong {
    // SAFETY: reclaim calls this only while the shrinker is registered and
    // holds a reference, which `drop` waits for.
    let n: c_ulong = unsafe { data_of::<T>(shrinker) }.count();
    match n {
        0 => SHRINK_EMPTY,
        // Never mistaken for SHRINK_EMPTY or SHRINK_STOP.
        n => n.min(SHRINK_EMPTY - 1),
    }
}

/// `scan_objects`: [`Shrink::scan`] of `sc->nr_to_scan`, `None` as
/// `SHRINK_STOP`.
///
/// # Safety
///
/// As [`count_objects`]; `sc` is the reclaim's valid `shrink_control`.
unsafe extern "C" fn scan_objects<T: Shrink>(
    shrinker: *mut bindings::shrinker,
    sc: *mut bindings::shrink_control,
) -> c_ulong {
    // SAFETY: `sc` is valid for the call (reclaim's contract); only read.
    let nr: usize = unsafe { (*sc).nr_to_scan };
    // SAFETY: as in `count_objects`.
    match unsafe { data_of::<T>(shrinker) }.scan(nr) {
        Some(freed) => freed.min(SHRINK_EMPTY - 1),
        None => SHRINK_STOP,
    }
}

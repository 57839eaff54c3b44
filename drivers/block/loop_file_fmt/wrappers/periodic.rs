// SPDX-License-Identifier: GPL-2.0

//! A periodic job on the system workqueue: a `struct delayed_work` that
//! runs [`Tick::tick`] and re-arms itself with the delay `tick` returns.
//! The 6.12 Rust workqueue API has no delayed work; `INIT_DELAYED_WORK` and
//! `mod_delayed_work` are macros or inline functions, reached through the
//! qcow2 module's C helper. Dropping the job cancels it and waits for a
//! running tick (`cancel_delayed_work_sync`, which also stops a work that
//! re-queues itself).
//!
//! Used by `loop_file_fmt_qcow2` only (its cache cleaner).
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)

use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::types::Opaque;

use crate::qcow2_sys::{lff_qcow2_init_delayed_work, lff_qcow2_mod_delayed_work};

/// What a [`Periodic`] job does.
pub trait Tick: Send + Sync + 'static {
    /// Runs once; returns the delay in milliseconds until the next run, or
    /// `None` to stop until [`Periodic::schedule`] is called again.
    fn tick(&self) -> Option<u32>;
}

/// `work` is the first field of `struct delayed_work`, and `dw` the first
/// field here: a `work_struct` pointer of our work is a pointer to `Inner`.
#[repr(C)]
struct Inner<T> {
    dw: Opaque<bindings::delayed_work>,
    data: Arc<T>,
}

/// A periodic job running `T::tick` on shared data.
///
/// # Invariants
///
/// `inner.dw` was initialised with `INIT_DELAYED_WORK` for `run::<T>`, and
/// the box's contents never move until `drop` has cancelled the work.
pub struct Periodic<T: Tick> {
    inner: KBox<Inner<T>>,
}

// SAFETY: the delayed work may be queued, cancelled and dropped from any
// thread (the workqueue API synchronises); `T` is `Send + Sync`.
unsafe impl<T: Tick> Send for Periodic<T> {}
// SAFETY: `&self` methods only call `mod_delayed_work`, which is safe to
// call concurrently.
unsafe impl<T: Tick> Sync for Periodic<T> {}

impl<T: Tick> Periodic<T> {
    /// A job on `data`, not yet scheduled.
    pub fn new(data: Arc<T>) -> Result<Self> {
        let inner = KBox::new(
            Inner {
                dw: Opaque::uninit(),
                data,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: `dw` is valid for writes and not in use; it stays at this
        // address (heap, never moved) until `drop` cancels it.
        unsafe { lff_qcow2_init_delayed_work(inner.dw.get(), Some(Self::run)) };
        Ok(Self { inner })
    }

    /// Runs the job `ms` milliseconds from now (moving a pending run).
    pub fn schedule(&self, ms: u32) {
        // SAFETY: `dw` is an initialised delayed work (type invariant).
        unsafe { lff_qcow2_mod_delayed_work(self.inner.dw.get(), ms) };
    }

    /// # Safety
    ///
    /// `work` must be the work of an `Inner<T>` of a live `Periodic<T>`.
    unsafe extern "C" fn run(work: *mut bindings::work_struct) {
        // SAFETY: by the layout of `Inner` (see there) and the caller's
        // contract; `drop` waits for this function before freeing.
        let inner = unsafe { &*work.cast::<Inner<T>>() };
        if let Some(ms) = inner.data.tick() {
            // SAFETY: `dw` is initialised; re-queueing from the work itself
            // is allowed.
            unsafe { lff_qcow2_mod_delayed_work(inner.dw.get(), ms) };
        }
    }
}

impl<T: Tick> Drop for Periodic<T> {
    fn drop(&mut self) {
        // SAFETY: `dw` is initialised; after this returns the work is
        // neither pending nor running, even though it re-queues itself.
        unsafe { bindings::cancel_delayed_work_sync(self.inner.dw.get()) };
    }
}

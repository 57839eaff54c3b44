// SPDX-License-Identifier: GPL-2.0

//! Threads of execution for concurrency cases: [`Threads`] owns an
//! unbound workqueue of its own (`alloc_workqueue(WQ_UNBOUND)`), runs
//! closures on it (each on a kworker of its own when they block), and
//! joins them all when dropped (`destroy_workqueue` drains the queue, so
//! every closure, and the module code that runs it, has returned before
//! the case goes on).
//!
//! [`Barrier`] makes the closures wait for each other, so that they are
//! known to run at the same time. Only the case thread may report to KUnit: closures record what they
//! saw (atomics, counters) and the case checks it after the join.
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)

use core::pin::Pin;
use core::ptr::NonNull;
use kernel::alloc::{AllocError, Flags};
use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::{new_condvar, new_mutex, CondVar, Mutex};
use kernel::time::msecs_to_jiffies;
use kernel::workqueue::Queue;

/// An unbound workqueue owned by one test case.
///
/// # Invariants
///
/// `wq` was returned by `alloc_workqueue` and is destroyed only by `drop`.
pub struct Threads {
    wq: NonNull<bindings::workqueue_struct>,
}

/// `alloc_workqueue()`, a macro over `alloc_workqueue_noprof()` in 7.x.
#[cfg(not(lff_linux7))]
const ALLOC_WORKQUEUE: unsafe extern "C" fn(
    *const kernel::ffi::c_char,
    kernel::ffi::c_uint,
    kernel::ffi::c_int,
    ...
) -> *mut bindings::workqueue_struct = bindings::alloc_workqueue;
#[cfg(lff_linux7)]
const ALLOC_WORKQUEUE: unsafe extern "C" fn(
    *const kernel::ffi::c_char,
    kernel::ffi::c_uint,
    kernel::ffi::c_int,
    ...
) -> *mut bindings::workqueue_struct = bindings::alloc_workqueue_noprof;

impl Threads {
    /// A queue running up to `max_active` closures at once.
    pub fn new(max_active: u16) -> Result<Self> {
        // SAFETY: the format is a NUL-terminated string without
        // conversions, so no variadic argument is read.
        let wq = unsafe {
            ALLOC_WORKQUEUE(
                crate::kunit::char_ptr(c"lff_kunit"),
                bindings::wq_flags_WQ_UNBOUND,
                i32::from(max_active),
            )
        };
        Ok(Self {
            wq: NonNull::new(wq).ok_or(ENOMEM)?,
        })
    }

    fn queue(&self) -> &Queue {
        // SAFETY: `wq` is live until `self` is dropped (type invariant),
        // and the returned reference does not outlive `self`.
        unsafe { Queue::from_raw(self.wq.as_ptr()) }
    }

    /// Runs `f` on the queue.
    pub fn spawn(&self, flags: Flags, f: impl FnOnce() + Send + 'static) -> Result<(), AllocError> {
        self.queue().try_spawn(flags, f)
    }

    /// Waits for every closure to return (the same as dropping `self`).
    pub fn join(self) {}
}

impl Drop for Threads {
    fn drop(&mut self) {
        // SAFETY: `wq` is live (type invariant) and no longer used after
        // this call; `destroy_workqueue` first waits for every queued
        // work item to finish.
        unsafe { bindings::destroy_workqueue(self.wq.as_ptr()) };
    }
}

// SAFETY: a workqueue may be used and destroyed from any thread.
unsafe impl Send for Threads {}
// SAFETY: queueing work (the only `&self` operation) is thread-safe.
unsafe impl Sync for Threads {}

/// Lets threads wait until a number of them have arrived.
pub struct Barrier {
    count: Pin<KBox<Mutex<usize>>>,
    cv: Pin<KBox<CondVar>>,
}

impl Barrier {
    /// A barrier nobody has reached yet.
    pub fn new() -> Result<Self> {
        Ok(Self {
            count: KBox::pin_init(new_mutex!(0), GFP_KERNEL)?,
            cv: KBox::pin_init(new_condvar!(), GFP_KERNEL)?,
        })
    }

    /// Waits until `n` threads in all have called this, at most 10 s;
    /// false on timeout.
    pub fn wait(&self, n: usize) -> bool {
        // SAFETY: `ktime_get` may be called from any context (the 6.12
        // `Ktime` and the 7.x `Instant` differ; the C clock does not).
        let now = || unsafe { kernel::bindings::ktime_get() } / 1_000_000;
        let mut g = self.count.lock();
        *g += 1;
        self.cv.notify_all();
        let deadline = now() + 10_000;
        while *g < n {
            if now() > deadline {
                return false;
            }
            // Woken, timed out or (in a kworker, never) signalled: check.
            let _ = self
                .cv
                .wait_interruptible_timeout(&mut g, msecs_to_jiffies(100));
        }
        true
    }
}

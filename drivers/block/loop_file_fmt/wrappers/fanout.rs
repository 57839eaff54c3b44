// SPDX-License-Identifier: GPL-2.0

//! Fan-out: a few calls of one closure at once, on other CPUs, and a wait
//! for all of them; for decompressing the clusters of one read in
//! parallel (a request is served by one work item, so without this a
//! 1 MiB read of compressed clusters uses one CPU).
//!
//! [`fan_out`] runs call 0 in the caller and queues the others as on-stack
//! work items on the unbound system workqueue (the 6.12 Rust workqueue API
//! queues only `Arc`s, and `INIT_WORK_ONSTACK` is a macro: the qcow2
//! module's C helpers reach it). When its own call is done, the caller
//! takes back every call no worker has started (`cancel_work` succeeds on
//! a pending item) and runs it itself, then waits for the running ones
//! (`flush_work`). So it never waits for a worker that does not exist
//! yet: under memory pressure, when no kworker can be created, the caller
//! runs every call, one after the other, and still makes progress.
//!
//! The calls run in a NOIO scope, like the request that fans out (see
//! `cache.rs` on why a request's allocations must not recurse into I/O);
//! they are not charged to the request's cgroups.
//!
//! Used by `loop_file_fmt_qcow2` only.
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)

use kernel::bindings;
use kernel::types::Opaque;

use crate::qcow2_sys::{
    lff_qcow2_destroy_work_onstack, lff_qcow2_init_work_onstack, lff_qcow2_noio_restore,
    lff_qcow2_noio_save, lff_qcow2_online_cpus, lff_qcow2_queue_work_unbound,
};

/// Most calls of one [`fan_out`] (their work items live on the caller's
/// stack: about 100 bytes each with lockdep).
pub const MAX_CALLS: usize = 8;

/// CPUs online now: how many calls can run at once.
pub fn online_cpus() -> usize {
    // SAFETY: reads an atomic counter; callable from any context.
    unsafe { lff_qcow2_online_cpus() as usize }
}

/// One call: `work` first, so that a `work_struct` pointer of ours is a
/// pointer to the `Call`.
#[repr(C)]
struct Call<'a, F> {
    work: Opaque<bindings::work_struct>,
    f: &'a F,
    index: usize,
}

/// Runs `f(0)`, …, `f(n - 1)`, at most [`MAX_CALLS`] of them (`n` is
/// clamped), at the same time where CPUs are free; returns when every call
/// has returned. Each call runs once, in the caller or on a worker. `f`
/// must not sleep for long (it delays the caller) and must not fan out
/// again.
pub fn fan_out<F: Fn(usize) + Sync>(n: usize, f: &F) {
    let n = n.min(MAX_CALLS);
    if n == 0 {
        return;
    }
    let calls: [Call<'_, F>; MAX_CALLS] = core::array::from_fn(|index| Call {
        work: Opaque::uninit(),
        f,
        index,
    });
    // From here on `calls` is only borrowed, so it does not move while the
    // workqueue holds pointers into it.
    let calls = &calls[1..n];
    for c in calls {
        // SAFETY: `c.work` is valid for writes, not in use, and stays at
        // this address until it is destroyed below, after it has finished.
        unsafe {
            lff_qcow2_init_work_onstack(c.work.get(), Some(run::<F>));
            lff_qcow2_queue_work_unbound(c.work.get());
        }
    }
    f(0);
    for c in calls {
        // SAFETY: `c.work` was initialised and queued above. A pending item
        // that `cancel_work` removes never runs, so its call is ours;
        // afterwards `flush_work` waits for a worker running it. Then the
        // item is idle and may be destroyed; `calls` outlives all of this.
        unsafe {
            if bindings::cancel_work(c.work.get()) {
                f(c.index);
            }
            bindings::flush_work(c.work.get());
            lff_qcow2_destroy_work_onstack(c.work.get());
        }
    }
}

/// The work function of a queued call.
///
/// # Safety
///
/// `work` must be the `work` of a `Call<'_, F>` queued by [`fan_out`],
/// which waits for this function before the `Call` goes away.
unsafe extern "C" fn run<F: Fn(usize) + Sync>(work: *mut bindings::work_struct) {
    // SAFETY: `work` is the first field of a `#[repr(C)]` `Call<F>`, alive
    // until `fan_out` has flushed it (the caller's contract); `F: Sync`, so
    // the shared `f` may be called from this thread.
    let call = unsafe { &*work.cast::<Call<'_, F>>() };
    // SAFETY: restored below, in the same task.
    let flags = unsafe { lff_qcow2_noio_save() };
    (call.f)(call.index);
    // SAFETY: pairs with the save above.
    unsafe { lff_qcow2_noio_restore(flags) };
}

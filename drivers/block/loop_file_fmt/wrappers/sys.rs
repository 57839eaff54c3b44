// SPDX-License-Identifier: GPL-2.0

//! Declarations of the C helpers in `core/lff_helpers.c`.
//!
//! Each is a one-line wrapper of a static inline function or a macro of the
//! kernel API that the 6.12 Rust bindings cannot reach. The core module
//! exports them for the format driver modules.

use kernel::bindings;
use kernel::ffi::{c_char, c_int, c_uint, c_void};

/// `struct lff_serve_ctx` of `core/lff_helpers.h`: what serving a request
/// changed in `current`, restored by `lff_rq_serve_exit`.
#[repr(C)]
pub(crate) struct ServeCtx {
    pflags: c_uint,
    old_memcg: *mut c_void,
}

impl ServeCtx {
    pub(crate) const fn new() -> Self {
        Self {
            pflags: 0,
            old_memcg: core::ptr::null_mut(),
        }
    }
}

// Kernel structs that are empty in some configurations (`lock_class_key`
// without lockdep) trip `improper_ctypes`; they are only passed by pointer.
#[allow(improper_ctypes)]
extern "C" {
    pub(crate) fn lff_rq_pos(rq: *mut bindings::request) -> u64;
    pub(crate) fn lff_rq_bytes(rq: *mut bindings::request) -> c_uint;
    pub(crate) fn lff_rq_op(rq: *mut bindings::request) -> c_uint;
    pub(crate) fn lff_rq_fua(rq: *mut bindings::request) -> bool;
    pub(crate) fn lff_rq_nounmap(rq: *mut bindings::request) -> bool;
    pub(crate) fn lff_rq_driver_data(rq: *mut bindings::request) -> *mut c_void;
    pub(crate) fn lff_rq_iter_init(
        rq: *mut bindings::request,
        iter: *mut bindings::iov_iter,
        direction: c_uint,
        alloc: *mut *mut bindings::bio_vec,
    ) -> c_int;

    pub(crate) fn lff_rq_queue(rq: *mut bindings::request) -> *mut bindings::request_queue;
    pub(crate) fn lff_cmd_size() -> c_uint;
    pub(crate) fn lff_rq_init_work(
        rq: *mut bindings::request,
        func: Option<unsafe extern "C" fn(*mut bindings::work_struct)>,
    );
    pub(crate) fn lff_work_to_rq(work: *mut bindings::work_struct) -> *mut bindings::request;
    pub(crate) fn lff_rq_queue_work(
        wq: *mut bindings::workqueue_struct,
        rq: *mut bindings::request,
    );
    pub(crate) fn lff_rq_serve_enter(rq: *mut bindings::request, ctx: *mut ServeCtx);
    pub(crate) fn lff_rq_serve_exit(rq: *mut bindings::request, ctx: *mut ServeCtx);
    pub(crate) fn lff_alloc_workqueue(name: *const c_char) -> *mut bindings::workqueue_struct;
    pub(crate) fn lff_iov_iter_count(iter: *const bindings::iov_iter) -> usize;
    pub(crate) fn lff_iov_iter_truncate(iter: *mut bindings::iov_iter, count: usize);
    pub(crate) fn lff_iov_iter_reexpand(iter: *mut bindings::iov_iter, count: usize);
    pub(crate) fn lff_copy_to_iter(
        addr: *const c_void,
        bytes: usize,
        iter: *mut bindings::iov_iter,
    ) -> usize;
    pub(crate) fn lff_copy_from_iter(
        addr: *mut c_void,
        bytes: usize,
        iter: *mut bindings::iov_iter,
    ) -> usize;

    pub(crate) fn lff_get_file(file: *mut bindings::file) -> *mut bindings::file;
    pub(crate) fn lff_file_size(file: *mut bindings::file) -> i64;
    pub(crate) fn lff_file_writable(file: *mut bindings::file) -> bool;
    pub(crate) fn lff_file_direct_io(file: *mut bindings::file) -> bool;
    pub(crate) fn lff_file_can_direct_io(file: *mut bindings::file) -> bool;
    pub(crate) fn lff_file_kind(file: *mut bindings::file) -> c_int;
    pub(crate) fn lff_file_ids(
        file: *mut bindings::file,
        dev: *mut u64,
        ino: *mut u64,
        rdev: *mut u32,
    );
    pub(crate) fn lff_file_dio_align(file: *mut bindings::file) -> c_uint;

    pub(crate) fn lff_blk_mq_alloc_disk(
        set: *mut bindings::blk_mq_tag_set,
        lim: *mut bindings::queue_limits,
        queuedata: *mut c_void,
    ) -> *mut bindings::gendisk;
    pub(crate) fn lff_dev_to_disk(dev: *mut bindings::device) -> *mut bindings::gendisk;
    pub(crate) fn lff_disk_kobj(disk: *mut bindings::gendisk) -> *mut bindings::kobject;
    pub(crate) fn lff_sysfs_attr_init(attr: *mut bindings::attribute);
    pub(crate) fn lff_disk_openers(disk: *mut bindings::gendisk) -> c_uint;
    pub(crate) fn lff_disk_set_partscan(disk: *mut bindings::gendisk, on: bool);
    pub(crate) fn lff_disk_rescan(disk: *mut bindings::gendisk) -> c_int;
    pub(crate) fn lff_disk_rescan_locked(disk: *mut bindings::gendisk) -> c_int;
    #[cfg(CONFIG_COMPAT)]
    pub(crate) fn lff_compat_ptr(arg: kernel::ffi::c_ulong) -> kernel::ffi::c_ulong;
    pub(crate) fn lff_major(dev: u32) -> c_uint;
    pub(crate) fn lff_ratelimit() -> bool;
    pub(crate) fn lff_queue_limits_start_update(
        q: *mut bindings::request_queue,
    ) -> bindings::queue_limits;
    pub(crate) fn lff_feat_write_cache() -> c_uint;
}

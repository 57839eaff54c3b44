// SPDX-License-Identifier: GPL-2.0

//! loop_file_fmt: loop-style block devices (`/dev/lffN`) whose backing
//! file is read through a file-format driver (raw, qcow2, ...).
//!
//! This core module owns the devices, the control node
//! `/dev/loop-file-fmt-control`, the sysfs attributes and the request path;
//! the formats are separate modules that register with
//! [`lff_register_format`] and are loaded on demand by the name
//! `loop-file-fmt-<format>`. The interfaces are
//! `include/uapi/linux/loop_file_fmt.h` (userspace) and
//! `include/linux/loop_file_fmt.h` (format drivers).
//!
//! Map of the request path: `wrappers::blk` (blk-mq shim, blocking tag set)
//! → [`device::Device::queue_rq`] → the driver's `read_iter`/`write_iter`.

// Only the wrappers (and, in the core, the entry points C calls) may
// use `unsafe`.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
#[path = "../wrappers/mod.rs"]
pub mod wrappers;

#[allow(unsafe_code)] // C entry points
mod control;
mod device;
mod registry;
#[cfg(CONFIG_KUNIT)]
#[allow(unsafe_code)] // C entry points
mod test_hooks;

use kernel::prelude::*;
use wrappers::format::RawDriver;

module! {
    type: LoopFileFmt,
    name: "loop_file_fmt",
    description: "Loop devices with file-format drivers (raw, qcow2, ...)",
    license: "GPL",
}

/// The module: everything lives in [`registry::Core`], reachable from the
/// C entry points through [`registry::CORE`].
struct LoopFileFmt {
    control: Option<control::ControlNode>,
}

// `CORE.take()` at init failure and exit.
#[allow(unsafe_code)]
impl kernel::Module for LoopFileFmt {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let core = registry::Core::new(module)?;
        registry::CORE.set(core)?;
        let control = match control::ControlNode::register() {
            Ok(c) => c,
            Err(e) => {
                // SAFETY: the control node does not exist and no driver can
                // have registered yet (they depend on this module).
                drop(unsafe { registry::CORE.take() });
                return Err(e);
            }
        };
        pr_info!("loaded; control node /dev/loop-file-fmt-control\n");
        Ok(Self {
            control: Some(control),
        })
    }
}

#[allow(unsafe_code)]
impl Drop for LoopFileFmt {
    fn drop(&mut self) {
        // No new control ioctl after this.
        self.control = None;
        if let Some(core) = registry::CORE.get() {
            core.remove_all_devices();
        }
        // SAFETY: the control node is gone; the format drivers (which use
        // this module's symbols) are unloaded; every device is removed and
        // an open block device would have pinned this module. So nothing can
        // call `CORE.get()` any more.
        drop(unsafe { registry::CORE.take() });
        pr_info!("unloaded\n");
    }
}

/// Registers a format driver (see `include/linux/loop_file_fmt.h`).
///
/// # Safety
///
/// `drv` must be NULL or point to a driver description that stays valid
/// until it is passed to [`lff_unregister_format`].
#[allow(unsafe_code)] // a C entry point
#[no_mangle]
pub unsafe extern "C" fn lff_register_format(drv: *const RawDriver) -> kernel::ffi::c_int {
    // SAFETY: the caller's guarantee is `DriverRef::new`'s.
    let r = unsafe { wrappers::format::DriverRef::new(drv) }
        .and_then(|d| registry::CORE.get().ok_or(ENODEV)?.register(d));
    match r {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// Unregisters a format driver registered with [`lff_register_format`].
///
/// # Safety
///
/// `drv` must have been registered.
#[allow(unsafe_code)] // a C entry point
#[no_mangle]
pub unsafe extern "C" fn lff_unregister_format(drv: *const RawDriver) {
    if let Some(core) = registry::CORE.get() {
        core.unregister(drv);
    }
}

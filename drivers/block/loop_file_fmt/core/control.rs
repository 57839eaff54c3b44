// SPDX-License-Identifier: GPL-2.0

//! The control node `/dev/loop-file-fmt-control`: add, remove and find
//! free devices, in the spirit of `/dev/loop-control`.
//!
//! The `struct miscdevice` is not in the 6.12 Rust bindings, so the node is
//! defined in `lff_helpers.c`, which calls [`lff_ctl_ioctl`].

use crate::registry::CORE;
use crate::wrappers::sys::{lff_ctl_deregister, lff_ctl_register};
use crate::wrappers::{capable_sys_admin, uapi};
use kernel::error::to_result;
use kernel::ffi::{c_long, c_uint, c_ulong};
use kernel::prelude::*;

/// The registered control node; deregistered when dropped.
pub(crate) struct ControlNode(());

impl ControlNode {
    /// Registers the misc device.
    pub(crate) fn register() -> Result<Self> {
        // SAFETY: called once from module init; the helper registers a
        // static miscdevice.
        to_result(unsafe { lff_ctl_register() })?;
        Ok(Self(()))
    }
}

impl Drop for ControlNode {
    fn drop(&mut self) {
        // SAFETY: registered in `register`; `misc_deregister` waits for no
        // one but stops new opens; an open file pins this module.
        unsafe { lff_ctl_deregister() };
    }
}

fn ctl_ioctl(cmd: c_uint, arg: c_ulong) -> Result<i32> {
    if !capable_sys_admin() {
        return Err(EPERM);
    }
    let core = CORE.get().ok_or(ENODEV)?;
    // The argument is an int passed by value, not a pointer: only its low
    // 32 bits are meaningful, from a native caller (the upper half of a
    // variadic int is unspecified) and from a 32-bit one through
    // compat_ioctl (zero-extended). No compat_ptr(); see `lff_ctl_fops`.
    let index = arg as i32;
    match cmd {
        uapi::LFF_NR_CTL_ADD => core.add_device(if index < 0 { None } else { Some(index as u32) }),
        uapi::LFF_NR_CTL_REMOVE => {
            let index = u32::try_from(index).map_err(|_| EINVAL)?;
            core.remove_device(index).map(|()| 0)
        }
        uapi::LFF_NR_CTL_GET_FREE => core.get_free(),
        _ => Err(ENOTTY),
    }
    .map(|i| i as i32)
}

/// Shows the registered formats, space separated, in a sysfs page.
///
/// # Safety
///
/// Only called by `formats_show` in `lff_helpers.c`, with the page-sized
/// buffer sysfs passes, writable for the call.
#[no_mangle]
pub(crate) unsafe extern "C" fn lff_formats_show(buf: *mut kernel::ffi::c_char) -> isize {
    // SAFETY: by the caller's contract, `buf` is a writable page, ours for
    // the call.
    let page =
        unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), kernel::page::PAGE_SIZE) };
    let mut out = crate::wrappers::format::SysfsBuf::new(page);
    match CORE
        .get()
        .ok_or(ENODEV)
        .and_then(|core| core.write_formats(&mut out))
    {
        Ok(()) => out.len() as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// `unlocked_ioctl` of the control node.
#[no_mangle]
pub(crate) extern "C" fn lff_ctl_ioctl(
    _file: *mut kernel::bindings::file,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    match ctl_ioctl(cmd, arg) {
        Ok(v) => v as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

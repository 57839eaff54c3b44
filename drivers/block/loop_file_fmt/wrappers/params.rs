// SPDX-License-Identifier: GPL-2.0

//! Module parameters of `loop_file_fmt_qcow2`, declared with `module_param`
//! in its C helper (`qcow2/lff_qcow2_helpers.c`; the 6.12 Rust `module!`
//! macro has no parameters). Each accessor reads the current value, which
//! root may change at any time through `/sys/module/*/parameters/`.

use crate::qcow2_sys::{
    lff_qcow2_param_cache_clean_interval, lff_qcow2_param_cluster_cache_size,
    lff_qcow2_param_l2_cache_size,
};

/// `l2_cache_size`: default L2 table cache of a new device, in KiB.
pub fn l2_cache_size_kib() -> u32 {
    // SAFETY: reads an `unsigned int` with READ_ONCE; no preconditions.
    unsafe { lff_qcow2_param_l2_cache_size() }
}

/// `cluster_cache_size`: default decompressed cluster cache, in KiB.
pub fn cluster_cache_size_kib() -> u32 {
    // SAFETY: as above.
    unsafe { lff_qcow2_param_cluster_cache_size() }
}

/// `cache_clean_interval`: default clean interval in seconds (0: never).
pub fn cache_clean_interval_secs() -> u32 {
    // SAFETY: as above.
    unsafe { lff_qcow2_param_cache_clean_interval() }
}

// SPDX-License-Identifier: GPL-2.0

//! A raw deflate compressor over the kernel's own `zlib_deflate`, for the
//! round trips of the decompression suite (the decompressor under test is
//! the qcow2 driver's, `wrappers/decompress.rs` and `qcow2/decomp.rs`).
//!
//! `linux/zlib.h` is not in the 6.12 Rust bindings: the few functions used
//! are declared here, and `struct z_stream_s` is mirrored (its layout is
//! fixed: pointers and `unsigned long`s).

use crate::qcow2fmt::{Error, Result};
use kernel::alloc::KVVec;
use kernel::ffi::{c_char, c_int, c_ulong, c_void};
use kernel::prelude::*;

/// `struct z_stream_s` of `include/linux/zlib.h`.
#[repr(C)]
struct ZStream {
    next_in: *const u8,
    avail_in: c_ulong,
    total_in: c_ulong,
    next_out: *mut u8,
    avail_out: c_ulong,
    total_out: c_ulong,
    msg: *mut c_char,
    state: *mut c_void,
    workspace: *mut c_void,
    data_type: c_int,
    adler: c_ulong,
    reserved: c_ulong,
}

const _: () = assert!(core::mem::size_of::<ZStream>() == 96);

const Z_OK: c_int = 0;
const Z_STREAM_END: c_int = 1;
/// The kernel's zlib numbers flush modes differently from upstream zlib.
const Z_FINISH: c_int = 5;
const Z_DEFLATED: c_int = 8;
const MAX_WBITS: c_int = 15;
const DEF_MEM_LEVEL: c_int = 8;

extern "C" {
    fn zlib_deflate_workspacesize(window_bits: c_int, mem_level: c_int) -> c_int;
    fn zlib_deflateInit2(
        strm: *mut ZStream,
        level: c_int,
        method: c_int,
        window_bits: c_int,
        mem_level: c_int,
        strategy: c_int,
    ) -> c_int;
    fn zlib_deflate(strm: *mut ZStream, flush: c_int) -> c_int;
    fn zlib_deflateEnd(strm: *mut ZStream) -> c_int;
}
/// A stream over `input` and `output` with `workspace` (not yet
/// initialised by zlib).
fn zstream(input: &[u8], output: &mut [u8], workspace: &mut [u8]) -> ZStream {
    ZStream {
        next_in: input.as_ptr(),
        avail_in: input.len() as c_ulong,
        total_in: 0,
        next_out: output.as_mut_ptr(),
        avail_out: output.len() as c_ulong,
        total_out: 0,
        msg: core::ptr::null_mut(),
        state: core::ptr::null_mut(),
        workspace: workspace.as_mut_ptr().cast(),
        data_type: 0,
        adler: 0,
        reserved: 0,
    }
}

fn zeroed(len: usize) -> Result<KVVec<u8>> {
    KVVec::from_elem(0u8, len, GFP_KERNEL).map_err(|_| Error::Io(12))
}

/// Compresses `input` into `output` as one raw deflate stream with
/// `zlib_deflate` (level 6); returns the compressed length.
pub fn deflate_raw(input: &[u8], output: &mut [u8]) -> Result<usize> {
    // SAFETY: no preconditions.
    let ws_len = unsafe { zlib_deflate_workspacesize(MAX_WBITS, DEF_MEM_LEVEL) };
    let mut ws = zeroed(usize::try_from(ws_len).map_err(|_| Error::Internal)?)?;
    let mut s = zstream(input, output, &mut ws);
    // SAFETY: `s` points to `input`, `output` and a workspace sized for
    // these parameters, all live for the calls below.
    let (init, ret, end) = unsafe {
        let init = zlib_deflateInit2(&mut s, 6, Z_DEFLATED, -MAX_WBITS, DEF_MEM_LEVEL, 0);
        if init != Z_OK {
            (init, init, Z_OK)
        } else {
            let ret = zlib_deflate(&mut s, Z_FINISH);
            (init, ret, zlib_deflateEnd(&mut s))
        }
    };
    if init != Z_OK || ret != Z_STREAM_END || end != Z_OK {
        return Err(Error::Internal);
    }
    Ok(output.len() - s.avail_out)
}

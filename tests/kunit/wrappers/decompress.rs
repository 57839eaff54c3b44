// SPDX-License-Identifier: GPL-2.0

//! A [`Decompressor`] over the kernel's own zlib and zstd, and a raw
//! deflate compressor for round trips, for the decompression suite.
//!
//! The qcow2 driver brings its own wrapper over the same library calls;
//! once it lands, the suite switches to it by changing one line
//! (`lff_kunit_compress.rs`, `type Under`) and this file keeps only the
//! compressor.
//!
//! `linux/zlib.h` and `linux/zstd.h` are not in the 6.12 Rust bindings:
//! the few functions used are declared here, and `struct z_stream_s` is
//! mirrored (its layout is fixed: pointers and `unsigned long`s).

use crate::qcow2fmt::{CompressionType, Decompressor, Error, Result};
use kernel::alloc::KVVec;
use kernel::ffi::{c_char, c_int, c_uint, c_ulong, c_void};
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
const Z_BUF_ERROR: c_int = -5;
/// The kernel's zlib numbers flush modes differently from upstream zlib.
const Z_FINISH: c_int = 5;
const Z_DEFLATED: c_int = 8;
const MAX_WBITS: c_int = 15;
const DEF_MEM_LEVEL: c_int = 8;

extern "C" {
    fn zlib_inflate_workspacesize() -> c_int;
    fn zlib_inflateInit2(strm: *mut ZStream, window_bits: c_int) -> c_int;
    fn zlib_inflate(strm: *mut ZStream, flush: c_int) -> c_int;
    fn zlib_inflateEnd(strm: *mut ZStream) -> c_int;
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
    fn zstd_is_error(code: usize) -> c_uint;
    fn zstd_dctx_workspace_bound() -> usize;
    fn zstd_init_dctx(workspace: *mut c_void, size: usize) -> *mut c_void;
    fn zstd_find_frame_compressed_size(src: *const c_void, size: usize) -> usize;
    fn zstd_decompress_dctx(
        dctx: *mut c_void,
        dst: *mut c_void,
        capacity: usize,
        src: *const c_void,
        size: usize,
    ) -> usize;
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

/// Decompresses with `zlib_inflate` (raw deflate) and zstd, following the
/// qcow2 contract: stop when the output is full, ignore input after the
/// end of the stream, corrupt or truncated data is
/// [`Error::DecompressionFailed`].
pub struct KernelDecompressor {
    zlib_ws: KVVec<u8>,
    zstd_ws: KVVec<u8>,
}

impl KernelDecompressor {
    /// Allocates the workspaces.
    pub fn new() -> Result<Self> {
        // SAFETY: no preconditions.
        let zlib = unsafe { zlib_inflate_workspacesize() };
        // SAFETY: no preconditions.
        let zstd = unsafe { zstd_dctx_workspace_bound() };
        Ok(Self {
            zlib_ws: zeroed(usize::try_from(zlib).map_err(|_| Error::Internal)?)?,
            zstd_ws: zeroed(zstd)?,
        })
    }

    fn inflate(&mut self, input: &[u8], output: &mut [u8]) -> Result<usize> {
        let mut s = zstream(input, output, &mut self.zlib_ws);
        // SAFETY: `s` points to `input`, `output` and a workspace of
        // `zlib_inflate_workspacesize()` bytes, all live for the calls
        // below; negative window bits select raw deflate.
        let (init, ret, end) = unsafe {
            let init = zlib_inflateInit2(&mut s, -MAX_WBITS);
            if init != Z_OK {
                (init, init, Z_OK)
            } else {
                let ret = zlib_inflate(&mut s, Z_FINISH);
                (init, ret, zlib_inflateEnd(&mut s))
            }
        };
        let full = s.avail_out == 0;
        let done = ret == Z_STREAM_END || (full && (ret == Z_OK || ret == Z_BUF_ERROR));
        if init != Z_OK || !done || end != Z_OK {
            return Err(Error::DecompressionFailed);
        }
        Ok(output.len() - s.avail_out)
    }

    fn unzstd(&mut self, input: &[u8], output: &mut [u8]) -> Result<usize> {
        // SAFETY: the workspace is `zstd_dctx_workspace_bound()` bytes and
        // outlives `dctx`, used only in this function.
        let dctx = unsafe { zstd_init_dctx(self.zstd_ws.as_mut_ptr().cast(), self.zstd_ws.len()) };
        if dctx.is_null() {
            return Err(Error::Internal);
        }
        // SAFETY: `input` is readable for its length; `zstd_is_error` takes
        // any value.
        let frame = unsafe { zstd_find_frame_compressed_size(input.as_ptr().cast(), input.len()) };
        // SAFETY: as above.
        if unsafe { zstd_is_error(frame) } != 0 || frame > input.len() {
            return Err(Error::DecompressionFailed);
        }
        // SAFETY: `dctx` is initialised; `output` is writable and `input`
        // readable for the lengths passed (`frame <= input.len()`).
        let n = unsafe {
            zstd_decompress_dctx(
                dctx,
                output.as_mut_ptr().cast(),
                output.len(),
                input.as_ptr().cast(),
                frame,
            )
        };
        // SAFETY: `zstd_is_error` takes any value.
        if unsafe { zstd_is_error(n) } != 0 || n > output.len() {
            return Err(Error::DecompressionFailed);
        }
        Ok(n)
    }
}

impl Decompressor for KernelDecompressor {
    fn decompress(&mut self, kind: CompressionType, input: &[u8], output: &mut [u8]) -> Result<usize> {
        match kind {
            CompressionType::Deflate => self.inflate(input, output),
            CompressionType::Zstd => self.unzstd(input, output),
        }
    }
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

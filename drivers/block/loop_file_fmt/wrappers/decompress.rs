// SPDX-License-Identifier: GPL-2.0

//! Decompression with the kernel's zlib and zstd, in the spirit of the
//! `flate2` and `zstd` crates: an object owns its workspace and
//! decompresses one buffer into another, never writing past the output.
//!
//! - [`Inflate`]: a deflate stream (window up to 32 KiB), raw (RFC 1951,
//!   qcow2) or zlib-wrapped (RFC 1950, VMDK; its Adler-32 is checked),
//!   through `zlib_inflate` (via the core's C helper `lff_inflate`, since
//!   `struct z_stream` is not in the Rust bindings);
//! - [`ZstdDctx`]: zstd frames through `zstd_decompress_dctx`, which
//!   decompresses straight into the output (no window buffer), plus
//!   `zstd_find_frame_compressed_size` to find where a frame ends.
//!
//! Used by `loop_file_fmt_qcow2` and `loop_file_fmt_vmdk`; their crate roots
//! include this file (and `qcow2_sys.rs`, the generated declarations of the
//! C functions).
//!
//! C headers: [`include/linux/zlib.h`](srctree/include/linux/zlib.h),
//! [`include/linux/zstd.h`](srctree/include/linux/zstd.h)

use core::ptr::NonNull;
use kernel::alloc::Flags;
use kernel::ffi::c_int;
use kernel::prelude::*;

use crate::qcow2_sys::{
    lff_inflate, lff_inflate_workspace_size, zstd_dctx, zstd_dctx_workspace_bound,
    zstd_decompress_dctx, zstd_find_frame_compressed_size, zstd_init_dctx, zstd_is_error,
};

/// zlib status codes (`include/linux/zlib.h`).
const Z_OK: c_int = 0;
const Z_STREAM_END: c_int = 1;
const Z_BUF_ERROR: c_int = -5;

/// What went wrong while decompressing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecompressError {
    /// The data is not a valid stream or frame (or would overflow the
    /// output).
    Corrupt,
    /// The input ended before the stream or frame did.
    Truncated,
}

/// How a deflate call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflateStatus {
    /// The stream ended after `produced` bytes of output.
    StreamEnd(usize),
    /// The output is full; the stream may go on.
    OutputFull,
}

/// A workspace of 8-byte words (both libraries want 8-byte alignment).
fn workspace(bytes: usize, flags: Flags) -> Result<KVVec<u64>> {
    Ok(KVVec::from_elem(0u64, bytes.div_ceil(8), flags)?)
}

/// How a deflate stream is wrapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrapping {
    /// Raw deflate, no header or checksum (qcow2).
    Raw,
    /// The zlib header and Adler-32 trailer around it (VMDK grains).
    Zlib,
}

impl Wrapping {
    /// zlib's `windowBits` for the 32 KiB window.
    fn window_bits(self) -> c_int {
        match self {
            Wrapping::Raw => -15,
            Wrapping::Zlib => 15,
        }
    }
}

/// A deflate decompressor with its own workspace.
pub struct Inflate {
    ws: KVVec<u64>,
    wrapping: Wrapping,
}

impl Inflate {
    /// Allocates the workspace (about 43 KiB) with `flags`, for streams
    /// wrapped as `wrapping` says.
    pub fn new(flags: Flags, wrapping: Wrapping) -> Result<Self> {
        // SAFETY: a pure function of the zlib configuration.
        let size = unsafe { lff_inflate_workspace_size() };
        Ok(Self {
            ws: workspace(size, flags)?,
            wrapping,
        })
    }

    /// Inflates the deflate stream at the start of `input` into `output`.
    /// Input after the end of the stream is ignored.
    pub fn inflate(
        &mut self,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<InflateStatus, DecompressError> {
        let mut produced = 0usize;
        // SAFETY: `ws` is a live workspace of at least the size zlib asked
        // for, used by nobody else (`&mut self`); `input` is readable and
        // `output` writable for their lengths; `produced` is a live local.
        // The helper writes at most `output.len()` bytes.
        let ret = unsafe {
            lff_inflate(
                self.ws.as_mut_ptr().cast(),
                self.wrapping.window_bits(),
                input.as_ptr().cast(),
                input.len(),
                output.as_mut_ptr().cast(),
                output.len(),
                &mut produced,
            )
        };
        let full = produced == output.len();
        match ret {
            Z_STREAM_END if produced <= output.len() => Ok(InflateStatus::StreamEnd(produced)),
            // With Z_FINISH, Z_OK or Z_BUF_ERROR mean "stopped early": the
            // output is full, or the input ran out.
            Z_OK | Z_BUF_ERROR if full => Ok(InflateStatus::OutputFull),
            Z_OK | Z_BUF_ERROR => Err(DecompressError::Truncated),
            _ => Err(DecompressError::Corrupt),
        }
    }
}

/// A zstd decompression context with its own workspace.
///
/// # Invariants
///
/// `dctx` was returned by `zstd_init_dctx` for the workspace `_ws`, which
/// lives (and never moves: it is heap memory that is never resized) as long
/// as `self`.
pub struct ZstdDctx {
    _ws: KVVec<u64>,
    dctx: NonNull<zstd_dctx>,
}

// SAFETY: the context is plain memory owned by `self`, used only through
// `&mut self`; it may move between threads.
unsafe impl Send for ZstdDctx {}
// SAFETY: no method takes `&self`.
unsafe impl Sync for ZstdDctx {}

impl ZstdDctx {
    /// Allocates the workspace (about 160 KiB) with `flags` and
    /// initialises a context.
    pub fn new(flags: Flags) -> Result<Self> {
        // SAFETY: a pure function of the zstd build.
        let size = unsafe { zstd_dctx_workspace_bound() };
        let mut ws = workspace(size, flags)?;
        // SAFETY: `ws` is writable for at least `size` bytes, 8-byte
        // aligned, and outlives the context (both live in `Self`).
        let dctx = unsafe { zstd_init_dctx(ws.as_mut_ptr().cast(), size) };
        let dctx = NonNull::new(dctx).ok_or(ENOMEM)?;
        Ok(Self { _ws: ws, dctx })
    }

    /// The length of the zstd frame (or skippable frame) at the start of
    /// `input`.
    pub fn frame_len(input: &[u8]) -> Result<usize, DecompressError> {
        // SAFETY: `input` is readable for its length.
        let n = unsafe { zstd_find_frame_compressed_size(input.as_ptr().cast(), input.len()) };
        // SAFETY: a pure function of its argument.
        if unsafe { zstd_is_error(n) } != 0 || n == 0 || n > input.len() {
            // zstd reports a frame cut short as srcSize_wrong; either way
            // the data is unusable.
            return Err(DecompressError::Truncated);
        }
        Ok(n)
    }

    /// Decompresses `frame`, which must be exactly one frame (see
    /// [`ZstdDctx::frame_len`]), into `output`; returns the number of
    /// bytes written (0 for a skippable frame). A frame that would not fit
    /// in `output` is an error.
    pub fn decompress_frame(
        &mut self,
        frame: &[u8],
        output: &mut [u8],
    ) -> Result<usize, DecompressError> {
        // SAFETY: `dctx` is a live context (type invariant) used only by
        // us (`&mut self`); `output` is writable and `frame` readable for
        // their lengths; zstd never writes beyond `output.len()`.
        let n = unsafe {
            zstd_decompress_dctx(
                self.dctx.as_ptr(),
                output.as_mut_ptr().cast(),
                output.len(),
                frame.as_ptr().cast(),
                frame.len(),
            )
        };
        // SAFETY: a pure function of its argument.
        if unsafe { zstd_is_error(n) } != 0 || n > output.len() {
            return Err(DecompressError::Corrupt);
        }
        Ok(n)
    }
}

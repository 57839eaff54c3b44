// SPDX-License-Identifier: GPL-2.0

//! Decompression workers: a small pool of workspaces (an input buffer for
//! the compressed bytes, a zlib and a zstd context, each allocated on first
//! use), so several CPUs decompress different clusters at once.
//!
//! [`Pool::with_worker`] claims a free worker (a lock-free scan of `busy`
//! flags from a rotating start); when every worker is busy it waits for
//! one. The format crate's `Decompressor` is implemented here with QEMU's
//! semantics (`block/qcow2-threads.c`):
//!
//! - deflate: one raw deflate stream, accepted when it ends or when the
//!   cluster is full (the input is only known to the sector, so trailing
//!   bytes are padding or the next cluster's data);
//! - zstd: frames decompressed one after the other until the cluster is
//!   full (QEMU writes one frame with its content size, but reads several);
//!   a frame that would overflow the cluster, or input that ends before the
//!   cluster is full, is an error.

use crate::decompress::{DecompressError, Inflate, InflateStatus, ZstdDctx};
use crate::qcow2fmt::{CompressionType, Decompressor, Error, Result};
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use kernel::prelude::*;
use kernel::sync::{new_mutex, Mutex};

/// Most workers per device.
const MAX_WORKERS: usize = 8;

/// The decompression contexts of one worker.
#[derive(Default)]
pub(crate) struct Decoders {
    zlib: Option<Inflate>,
    zstd: Option<ZstdDctx>,
}

fn nomem() -> Error {
    Error::Io(-(ENOMEM.to_errno()))
}

fn failed(_: DecompressError) -> Error {
    Error::DecompressionFailed
}

impl Decoders {
    fn unzstd(dctx: &mut ZstdDctx, input: &[u8], output: &mut [u8]) -> Result<usize> {
        let (mut pos, mut produced) = (0usize, 0usize);
        // Each frame consumes at least one input byte.
        while produced < output.len() {
            let rest = input.get(pos..).ok_or(Error::Internal)?;
            if rest.is_empty() {
                return Err(Error::DecompressionFailed);
            }
            let len = ZstdDctx::frame_len(rest).map_err(failed)?;
            let frame = rest.get(..len).ok_or(Error::Internal)?;
            let out = output.get_mut(produced..).ok_or(Error::Internal)?;
            produced += dctx.decompress_frame(frame, out).map_err(failed)?;
            pos += len;
        }
        Ok(produced)
    }
}

impl Decompressor for Decoders {
    fn decompress(
        &mut self,
        kind: CompressionType,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<usize> {
        match kind {
            CompressionType::Deflate => {
                if self.zlib.is_none() {
                    self.zlib = Some(Inflate::new().map_err(|_| nomem())?);
                }
                let z = self.zlib.as_mut().ok_or(Error::Internal)?;
                match z.inflate(input, output).map_err(failed)? {
                    InflateStatus::StreamEnd(n) => Ok(n),
                    InflateStatus::OutputFull => Ok(output.len()),
                }
            }
            CompressionType::Zstd => {
                if self.zstd.is_none() {
                    self.zstd = Some(ZstdDctx::new().map_err(|_| nomem())?);
                }
                let z = self.zstd.as_mut().ok_or(Error::Internal)?;
                Self::unzstd(z, input, output)
            }
        }
    }
}

/// One worker's state.
pub(crate) struct Worker {
    input: KVVec<u8>,
    input_len: usize,
    decoders: Decoders,
}

impl Worker {
    /// The input buffer (allocated on first use) and the decoders.
    pub(crate) fn parts(&mut self) -> Result<(&mut [u8], &mut Decoders)> {
        if self.input.len() < self.input_len {
            self.input = KVVec::from_elem(0u8, self.input_len, GFP_KERNEL).map_err(|_| nomem())?;
        }
        Ok((&mut self.input, &mut self.decoders))
    }
}

/// See the module documentation.
pub(crate) struct Pool {
    workers: KVec<Pin<KBox<Mutex<Worker>>>>,
    busy: KVec<AtomicBool>,
    next: AtomicUsize,
}

impl Pool {
    /// A pool of `workers` workers (the caller passes the number of CPUs;
    /// at least 1, at most [`MAX_WORKERS`]) whose input buffers hold
    /// `input_len` bytes.
    pub(crate) fn new(workers: usize, input_len: usize) -> kernel::error::Result<Self> {
        let n = workers.clamp(1, MAX_WORKERS);
        let mut workers = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut busy = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            let w = Worker {
                input: KVVec::new(),
                input_len,
                decoders: Decoders::default(),
            };
            workers.push(KBox::pin_init(new_mutex!(w), GFP_KERNEL)?, GFP_KERNEL)?;
            busy.push(AtomicBool::new(false), GFP_KERNEL)?;
        }
        Ok(Self {
            workers,
            busy,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `f` with a worker to itself.
    pub(crate) fn with_worker<R>(&self, f: impl FnOnce(&mut Worker) -> R) -> R {
        let n = self.workers.len();
        let start = self
            .next
            .fetch_add(1, Ordering::Relaxed)
            .checked_rem(n)
            .unwrap_or(0);
        for i in Iterator::chain(start..n, 0..start) {
            if self.busy[i]
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                // The flag only steers us to an idle worker; the mutex
                // provides the exclusion.
                let r = f(&mut self.workers[i].lock());
                self.busy[i].store(false, Ordering::Release);
                return r;
            }
        }
        // All busy: wait for ours.
        f(&mut self.workers[start].lock())
    }
}

// SPDX-License-Identifier: GPL-2.0

//! Decompression workers: a small pool of workspaces (an input buffer for
//! the compressed bytes, a zlib and a zstd context), so several CPUs
//! decompress different clusters at once.
//!
//! [`Pool::with_worker`] claims a free worker (a lock-free scan of `busy`
//! flags from a rotating start); when every worker is busy it waits for
//! worker 0. Worker 0 is the reserve: its buffer and the contexts of every
//! compression type the image uses are allocated at attach. The others
//! allocate theirs on first use, on the request path, with `GFP_NOWAIT`
//! (never waiting for memory: see `cache.rs` on why a request must not);
//! a worker that cannot get them leaves the request to worker 0, so
//! decompression always progresses, one cluster at a time at worst. The
//! format crate's `Decompressor` is implemented here with QEMU's
//! semantics (`block/qcow2-threads.c`):
//!
//! - deflate: one raw deflate stream, accepted when it ends or when the
//!   cluster is full (the input is only known to the sector, so trailing
//!   bytes are padding or the next cluster's data);
//! - zstd: frames decompressed one after the other until the cluster is
//!   full (QEMU writes one frame with its content size, but reads several);
//!   a frame that would overflow the cluster, or input that ends before the
//!   cluster is full, is an error.

use crate::decompress::{DecompressError, Inflate, InflateStatus, Wrapping, ZstdDctx};
use crate::qcow2fmt::{CompressionType, Decompressor, Error, Result};
use crate::wrappers::compat::now_ns;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use kernel::alloc::Flags;
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
    /// Allocates the context for `kind` if missing, with `flags`.
    fn prepare(&mut self, kind: CompressionType, flags: Flags) -> Result<()> {
        match kind {
            CompressionType::Deflate if self.zlib.is_none() => {
                self.zlib = Some(Inflate::new(flags, Wrapping::Raw).map_err(|_| nomem())?);
            }
            CompressionType::Zstd if self.zstd.is_none() => {
                self.zstd = Some(ZstdDctx::new(flags).map_err(|_| nomem())?);
            }
            _ => {}
        }
        Ok(())
    }

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
                // The pool prepares its workers before calling us, so this
                // allocates only for other users (the KUnit suite).
                self.prepare(kind, GFP_KERNEL)?;
                let z = self.zlib.as_mut().ok_or(Error::Internal)?;
                match z.inflate(input, output).map_err(failed)? {
                    InflateStatus::StreamEnd(n) => Ok(n),
                    InflateStatus::OutputFull => Ok(output.len()),
                }
            }
            CompressionType::Zstd => {
                self.prepare(kind, GFP_KERNEL)?;
                let z = self.zstd.as_mut().ok_or(Error::Internal)?;
                Self::unzstd(z, input, output)
            }
        }
    }
}

/// One worker's state.
struct Worker {
    input: KVVec<u8>,
    decoders: Decoders,
}

impl Worker {
    /// Allocates what decompressing `kind` needs, if missing, with `flags`.
    fn prepare(&mut self, kind: CompressionType, input_len: usize, flags: Flags) -> Result<()> {
        if self.input.len() < input_len {
            self.input = KVVec::from_elem(0u8, input_len, flags).map_err(|_| nomem())?;
        }
        self.decoders.prepare(kind, flags)
    }
}

/// Totals of the decompressions a pool ran (successful ones only), for
/// the `decompress_stats` sysfs attribute: how long the kernel's zlib and
/// zstd took for the data the requests needed, the bound a compressed
/// read cannot beat (`bench/` reports reads against it).
#[derive(Default)]
pub(crate) struct DecompStats {
    clusters: AtomicU64,
    bytes: AtomicU64,
    nsecs: AtomicU64,
}

impl DecompStats {
    /// Clusters decompressed, bytes they gave, nanoseconds spent.
    pub(crate) fn get(&self) -> (u64, u64, u64) {
        (
            self.clusters.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.nsecs.load(Ordering::Relaxed),
        )
    }
}

/// A worker's decoders as the pool hands them out: each decompression is
/// timed (two `ktime_get` calls around tens of microseconds of work) and
/// added to the pool's [`DecompStats`].
pub(crate) struct Timed<'a> {
    decoders: &'a mut Decoders,
    stats: &'a DecompStats,
}

impl Decompressor for Timed<'_> {
    fn decompress(
        &mut self,
        kind: CompressionType,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<usize> {
        let start = now_ns();
        let n = self.decoders.decompress(kind, input, output)?;
        let s = self.stats;
        s.nsecs
            .fetch_add(now_ns().saturating_sub(start), Ordering::Relaxed);
        s.bytes.fetch_add(n as u64, Ordering::Relaxed);
        s.clusters.fetch_add(1, Ordering::Relaxed);
        Ok(n)
    }
}

/// See the module documentation.
pub(crate) struct Pool {
    workers: KVec<Pin<KBox<Mutex<Worker>>>>,
    busy: KVec<AtomicBool>,
    next: AtomicUsize,
    input_len: usize,
    stats: DecompStats,
}

impl Pool {
    /// A pool of `workers` workers (the caller passes the number of CPUs;
    /// at least 1, at most [`MAX_WORKERS`]) whose input buffers hold
    /// `input_len` bytes; worker 0 is prepared now for each of `kinds`.
    pub(crate) fn new(
        workers: usize,
        input_len: usize,
        kinds: &[CompressionType],
    ) -> kernel::error::Result<Self> {
        let n = workers.clamp(1, MAX_WORKERS);
        let mut workers = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut busy = KVec::with_capacity(n, GFP_KERNEL)?;
        for i in 0..n {
            let mut w = Worker {
                input: KVVec::new(),
                decoders: Decoders::default(),
            };
            if i == 0 {
                for &kind in kinds {
                    w.prepare(kind, input_len, GFP_KERNEL).map_err(|_| ENOMEM)?;
                }
            }
            workers.push(KBox::pin_init(new_mutex!(w), GFP_KERNEL)?, GFP_KERNEL)?;
            busy.push(AtomicBool::new(false), GFP_KERNEL)?;
        }
        Ok(Self {
            workers,
            busy,
            next: AtomicUsize::new(0),
            input_len,
            stats: DecompStats::default(),
        })
    }

    /// Number of workers: how many clusters it decompresses at once.
    pub(crate) fn workers(&self) -> usize {
        self.workers.len()
    }

    /// What the pool's decompressions took so far.
    pub(crate) fn stats(&self) -> &DecompStats {
        &self.stats
    }

    /// Runs `f` with a worker to itself, prepared for `kind`: its input
    /// buffer (at least `input_len` bytes) and its decoders (timed).
    pub(crate) fn with_worker<R>(
        &self,
        kind: CompressionType,
        f: impl FnOnce(&mut [u8], &mut Timed<'_>) -> R,
    ) -> Result<R> {
        let n = self.workers.len();
        let start = self
            .next
            .fetch_add(1, Ordering::Relaxed)
            .checked_rem(n)
            .unwrap_or(0);
        let mut claimed = None;
        for i in Iterator::chain(start..n, 0..start) {
            if self.busy[i]
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                // The flag only steers us to an idle worker; the mutex
                // provides the exclusion.
                let mut w = self.workers[i].lock();
                let flags = if i == 0 {
                    GFP_KERNEL
                } else {
                    GFP_NOWAIT | __GFP_NOWARN
                };
                if w.prepare(kind, self.input_len, flags).is_ok() {
                    claimed = Some((i, w));
                } else {
                    // No memory for this worker: the reserve's turn.
                    drop(w);
                    self.busy[i].store(false, Ordering::Release);
                }
                break;
            }
        }
        let (index, mut w) = match claimed {
            Some((i, w)) => (Some(i), w),
            None => {
                // All busy, or no memory: wait for worker 0, prepared at
                // attach for every kind the image uses (so `prepare`
                // allocates nothing).
                let mut w = self.workers[0].lock();
                w.prepare(kind, self.input_len, GFP_KERNEL)?;
                (None, w)
            }
        };
        let worker = &mut *w;
        let mut timed = Timed {
            decoders: &mut worker.decoders,
            stats: &self.stats,
        };
        let r = f(&mut worker.input, &mut timed);
        drop(w);
        if let Some(i) = index {
            self.busy[i].store(false, Ordering::Release);
        }
        Ok(r)
    }
}

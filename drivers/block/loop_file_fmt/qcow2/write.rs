// SPDX-License-Identifier: GPL-2.0

//! Read-write qcow2: the kernel side of the format crate's
//! [`WriteEngine`].
//!
//! One [`Writer`] per read-write device, behind the device's writer mutex:
//! every request of such a device (reads too) runs under it, so the engine
//! (which takes `&mut self`) sees one request at a time, and a read never
//! sees a table half-changed. Read-only devices have no writer and keep
//! their lock-free read path.
//!
//! What the engine asks for ([`WriteBackend`], implemented by [`Backend`]):
//!
//! - the top image's file (layer 0), written with the wrappers' file I/O;
//!   zeroing with `fallocate(ZERO_RANGE)` (written zeros where the file
//!   system has no such mode); `sync` is `fdatasync`; clusters whose last
//!   reference is durably gone are punched out (`released`);
//! - the L1 table and the refcount table, in memory (big endian, as on
//!   disk), loaded at attach;
//! - L2 tables and refcount blocks: clean ones come from the device's L2
//!   [`Cache`] (refcount blocks under their own key space,
//!   [`REFCOUNT_KEY_LAYER`]); a table the engine modifies is copied into
//!   the writer's overlay of owned buffers ([`Overlay`]) and stays there,
//!   never evicted, until the engine writes it back
//!   ([`WriteBackend::write_table`]), when it replaces the cached copy.
//!   Reads of the top layer look in the overlay first, so they see every
//!   write, flushed or not. A table the engine only reads (the L2 entry
//!   and the refcounts of every cluster a write touches) is read in
//!   place, the overlay's or the cache's shared, immutable copy (copying
//!   it, three whole tables per 4 KiB write in place, took about 40 % of
//!   such a write's time under TCG);
//! - the layers below the top (copy-on-write over a backing chain), read
//!   with the read engine over a chain of the backing layers;
//! - decompression of the top image's compressed clusters, with the
//!   device's decompression pool.
//!
//! # Memory
//!
//! The request path may sit under reclaim (see `cache.rs`): the engine's
//! cluster scratch buffer, a zero buffer and the overlay's slots are
//! allocated at attach. Only an overlay table is allocated on the request
//! path, with `__GFP_RETRY_MAYFAIL`
//! ([`crate::wrappers::kvvec_zeroed_mayfail`]); without it the request
//! fails with `ENOMEM` (the engine leaves the image consistent: at most a
//! leaked cluster), it never waits indefinitely. Lock order: writer →
//! cache reserve → decompression worker.

use crate::cache;
use crate::qcow2fmt::table::l1_table_entry;
use crate::qcow2fmt::{
    Access, Chain, CompressedRead, Error as FmtError, Result, SliceSink, Source, Storage as _,
    TableKind, Tables, WriteBackend, WriteEngine,
};
use crate::wrappers::file::{falloc, File};
use crate::wrappers::iov::IovIter;
use crate::{ferr, Files, Qcow2, ReqClusters, ReqTables};
use kernel::prelude::*;

/// The cache key "layer" of the top image's refcount blocks: apart from
/// every real layer (below 16), so that a refcount block and an L2 table
/// never share an entry.
pub(crate) const REFCOUNT_KEY_LAYER: usize = 32;

/// Most tables the overlay holds: the engine keeps at most
/// `MAX_DIRTY_TABLES` modified tables of each kind, plus a few new
/// refcount blocks; room to spare.
const OVERLAY_SLOTS: usize = 2 * crate::qcow2fmt::write::MAX_DIRTY_TABLES + 32;

/// Bytes of the zero buffer used when `fallocate` cannot zero.
const ZERO_BUF_LEN: usize = 4096;

/// The cache key of table `kind` at `offset` of the top image.
fn table_key(kind: TableKind, offset: u64) -> u64 {
    match kind {
        TableKind::L2 => cache::key(0, offset),
        TableKind::Refcount => cache::key(REFCOUNT_KEY_LAYER, offset),
    }
}

/// A table the engine modified and has not written back.
struct Dirty {
    key: u64,
    buf: KVVec<u8>,
}

/// The writer's modified tables (see the module documentation): a fixed
/// number of slots, allocated at attach, so that keeping a table never
/// grows the vector on the request path.
pub(crate) struct Overlay {
    slots: KVec<Option<Dirty>>,
}

impl Overlay {
    fn new() -> kernel::error::Result<Self> {
        let mut slots = KVec::with_capacity(OVERLAY_SLOTS, GFP_KERNEL)?;
        for _ in 0..OVERLAY_SLOTS {
            slots.push(None, GFP_KERNEL)?;
        }
        Ok(Self { slots })
    }

    fn find(&self, key: u64) -> Option<usize> {
        self.slots
            .iter()
            .position(|d| d.as_ref().is_some_and(|d| d.key == key))
    }

    fn get(&mut self, i: usize) -> Result<&mut [u8]> {
        match self.slots.get_mut(i) {
            Some(Some(d)) => Ok(&mut d.buf),
            _ => Err(FmtError::Internal),
        }
    }

    fn slot(&self, i: usize) -> Result<&[u8]> {
        match self.slots.get(i) {
            Some(Some(d)) => Ok(&d.buf),
            _ => Err(FmtError::Internal),
        }
    }

    /// Keeps `d` in a free slot; returns the slot (`Internal` when all
    /// are taken: the engine keeps fewer dirty tables than there are).
    fn put(&mut self, d: Dirty) -> Result<usize> {
        let i = self
            .slots
            .iter()
            .position(|s| s.is_none())
            .ok_or(FmtError::Internal)?;
        self.slots[i] = Some(d);
        Ok(i)
    }

    /// Empties slot `i`.
    fn take(&mut self, i: usize) -> Option<Dirty> {
        self.slots.get_mut(i).and_then(Option::take)
    }

    /// The modified L2 table at `offset` of the top image, if any.
    pub(crate) fn l2(&self, offset: u64) -> Option<&[u8]> {
        let i = self.find(table_key(TableKind::L2, offset))?;
        self.slots[i].as_ref().map(|d| &d.buf[..])
    }
}

/// The writer's in-memory tables and preallocated buffers.
pub(crate) struct WriterTables {
    /// The active L1 table, big endian.
    pub(crate) l1: KVVec<u8>,
    /// The refcount table, big endian.
    rt: KVVec<u8>,
    pub(crate) overlay: Overlay,
    zeros: KVVec<u8>,
    cluster_len: usize,
}

/// The per-device write state, behind the device's writer mutex.
pub(crate) struct Writer {
    /// Boxed, as is the chain: both are large, and the kernel stack
    /// small.
    pub(crate) engine: KBox<WriteEngine>,
    /// The chain reads use: the top layer's file length follows the
    /// engine's.
    pub(crate) chain: KBox<Chain>,
    /// The engine's cluster scratch buffer.
    scratch: KVVec<u8>,
    pub(crate) tables: WriterTables,
}

/// Sets big-endian entry `index` of `table`.
fn set_entry(table: &mut [u8], index: u64, raw: u64) -> Result<()> {
    let at = usize::try_from(index)
        .ok()
        .and_then(|i| i.checked_mul(8))
        .ok_or(FmtError::Internal)?;
    let slot = table.get_mut(at..at + 8).ok_or(FmtError::Internal)?;
    slot.copy_from_slice(&raw.to_be_bytes());
    Ok(())
}

/// A cluster-sized buffer on the request path (see "Memory").
fn table_alloc(len: usize) -> Result<KVVec<u8>> {
    crate::wrappers::kvvec_zeroed_mayfail(len).ok_or(ferr(ENOMEM))
}

impl WriterTables {
    /// Tables for an image of `cluster_len`-byte clusters with the L1
    /// table `l1` and refcount table `rt` (as read from the file).
    pub(crate) fn new(
        l1: KVVec<u8>,
        rt: KVVec<u8>,
        cluster_len: usize,
    ) -> kernel::error::Result<Self> {
        Ok(Self {
            l1,
            rt,
            overlay: Overlay::new()?,
            zeros: KVVec::from_elem(0u8, ZERO_BUF_LEN, GFP_KERNEL)?,
            cluster_len,
        })
    }
}

impl Writer {
    /// Opens the engine over `tables` (the top image's `header`, its file
    /// `file_len` bytes long): clears the autoclear bits and, with lazy
    /// refcounts, sets the dirty bit (see [`WriteEngine::open`]).
    #[inline(never)]
    pub(crate) fn open(
        dev: &Qcow2,
        header: &crate::qcow2fmt::Header,
        file_len: u64,
        mut tables: WriterTables,
    ) -> Result<Self> {
        let has_backing = dev.chain.len() > 1;
        let mut chain = KBox::new(dev.chain, GFP_KERNEL).map_err(|_| ferr(ENOMEM))?;
        let engine = WriteEngine::open(
            header,
            &mut Backend {
                dev,
                t: &mut tables,
            },
            file_len,
            has_backing,
        )?;
        chain.grow_top_file_len(engine.file_len());
        let engine = KBox::new(engine, GFP_KERNEL).map_err(|_| ferr(ENOMEM))?;
        let scratch =
            KVVec::from_elem(0u8, tables.cluster_len, GFP_KERNEL).map_err(|_| ferr(ENOMEM))?;
        Ok(Self {
            engine,
            chain,
            scratch,
            tables,
        })
    }

    /// Runs `op` on the engine with this device's backend and the scratch
    /// buffer; afterwards the read chain takes the engine's file length.
    pub(crate) fn run<R>(
        &mut self,
        dev: &Qcow2,
        op: impl FnOnce(&mut WriteEngine, &mut Backend<'_>, &mut [u8]) -> Result<R>,
    ) -> Result<R> {
        let mut b = Backend {
            dev,
            t: &mut self.tables,
        };
        let r = op(&mut self.engine, &mut b, &mut self.scratch);
        self.chain.grow_top_file_len(self.engine.file_len());
        r
    }
}

/// The engine's [`WriteBackend`] for one request.
pub(crate) struct Backend<'a> {
    dev: &'a Qcow2,
    t: &'a mut WriterTables,
}

impl Backend<'_> {
    fn file(&self) -> Result<&File> {
        self.dev.files.first().ok_or(FmtError::Internal)
    }

    /// Fills `buf` with table `key` at `offset` through the device cache.
    fn load(dev: &Qcow2, key: u64, offset: u64, buf: &mut [u8]) -> Result<()> {
        Self::read_cached(dev, key, offset, buf.len(), |t| {
            if t.len() == buf.len() {
                buf.copy_from_slice(t);
                Ok(())
            } else {
                Err(FmtError::Internal)
            }
        })?
    }

    /// Calls `f` on the cached copy of table `key` at `offset` (`len`
    /// bytes), read into the device cache first if it is not there.
    fn read_cached<R>(
        dev: &Qcow2,
        key: u64,
        offset: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        dev.caches.l2.with(
            key,
            0,
            len,
            &dev.reserve,
            |t| Files(&dev.files).read_at(0, t, offset),
            f,
        )
    }
}

impl WriteBackend for Backend<'_> {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file()?.read_exact_at(buf, offset).map_err(ferr)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        self.file()?.write_all_at(buf, offset).map_err(ferr)
    }

    fn write_zeroes_at(&mut self, offset: u64, len: u64) -> Result<()> {
        let file = self.dev.files.first().ok_or(FmtError::Internal)?;
        match file.fallocate(falloc::ZERO_RANGE, offset, len) {
            Ok(()) => return Ok(()),
            Err(e) if e == crate::wrappers::eopnotsupp() || e == EINVAL => {}
            Err(e) => return Err(ferr(e)),
        }
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(self.t.zeros.len() as u64) as usize;
            file.write_all_at(&self.t.zeros[..n], offset + done)
                .map_err(ferr)?;
            done += n as u64;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.file()?.sync(true).map_err(ferr)
    }

    fn read_backing(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.dev.read_backing(offset, buf)
    }

    fn read_compressed(&mut self, request: &CompressedRead, out: &mut [u8]) -> Result<()> {
        let dev = self.dev;
        dev.pool.with_worker(request.compression, |input, dec| {
            request.load(&Files(&dev.files), dec, input, out)
        })?
    }

    fn l1_entry(&self, index: u32) -> Result<u64> {
        l1_table_entry(&self.t.l1, index)
    }

    fn set_l1_entry(&mut self, index: u32, raw: u64) -> Result<()> {
        set_entry(&mut self.t.l1, u64::from(index), raw)
    }

    fn refcount_table_len(&self) -> u64 {
        (self.t.rt.len() / 8) as u64
    }

    fn refcount_table_entry(&self, index: u64) -> Result<u64> {
        let i = u32::try_from(index).map_err(|_| FmtError::Internal)?;
        l1_table_entry(&self.t.rt, i)
    }

    fn set_refcount_table_entry(&mut self, index: u64, raw: u64) -> Result<()> {
        set_entry(&mut self.t.rt, index, raw)
    }

    fn resize_refcount_table(&mut self, entries: u64) -> Result<()> {
        let bytes = usize::try_from(entries)
            .ok()
            .and_then(|n| n.checked_mul(8))
            .ok_or(FmtError::NoSpace)?;
        if bytes < self.t.rt.len() {
            return Err(FmtError::Internal);
        }
        let mut rt = table_alloc(bytes)?;
        rt[..self.t.rt.len()].copy_from_slice(&self.t.rt);
        self.t.rt = rt;
        Ok(())
    }

    fn read_table<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        kind: TableKind,
        offset: u64,
        f: F,
    ) -> Result<R> {
        let key = table_key(kind, offset);
        let t = &*self.t;
        if let Some(i) = t.overlay.find(key) {
            return Ok(f(t.overlay.slot(i)?));
        }
        Self::read_cached(self.dev, key, offset, t.cluster_len, f)
    }

    fn with_table<R, F: FnOnce(&mut [u8]) -> R>(
        &mut self,
        kind: TableKind,
        offset: u64,
        access: Access,
        f: F,
    ) -> Result<R> {
        let key = table_key(kind, offset);
        let t = &mut *self.t;
        if let Some(i) = t.overlay.find(key) {
            return Ok(f(t.overlay.get(i)?));
        }
        let mut buf = table_alloc(t.cluster_len)?;
        if access == Access::Modify {
            Self::load(self.dev, key, offset, &mut buf)?;
        }
        let i = t.overlay.put(Dirty { key, buf })?;
        Ok(f(t.overlay.get(i)?))
    }

    fn write_table(&mut self, kind: TableKind, offset: u64) -> Result<()> {
        let key = table_key(kind, offset);
        // A table the engine could not load was never modified.
        let Some(i) = self.t.overlay.find(key) else {
            return Ok(());
        };
        let file = self.dev.files.first().ok_or(FmtError::Internal)?;
        file.write_all_at(self.t.overlay.get(i)?, offset)
            .map_err(ferr)?;
        let Some(d) = self.t.overlay.take(i) else {
            return Err(FmtError::Internal);
        };
        // The cached copy is stale: ours replaces it (or, without memory
        // for an entry, the next lookup reads the file).
        let l2 = &self.dev.caches.l2;
        l2.remove(key);
        let _ = l2.insert(key, 0, d.buf);
        Ok(())
    }

    fn released(&mut self, offset: u64, len: u64) -> Result<()> {
        // The references are durably gone and the cluster is not reused
        // before this returns: give the space back. Cached copies of what
        // it held are never looked up again (nothing names it); a table
        // allocated there later starts in the overlay.
        let file = self.dev.files.first().ok_or(FmtError::Internal)?;
        let _ = file.fallocate(falloc::PUNCH_HOLE | falloc::KEEP_SIZE, offset, len);
        Ok(())
    }
}

/// The bytes of a write request: its pages.
pub(crate) struct IovSource<'a, 'b> {
    pub(crate) from: &'a mut IovIter<'b>,
    pub(crate) file: &'a File,
}

impl Source for IovSource<'_, '_> {
    fn copy_next(&mut self, dst: &mut [u8]) -> Result<()> {
        if self.from.copy_from(dst) != dst.len() {
            return Err(FmtError::Internal);
        }
        Ok(())
    }

    fn write_next<B: WriteBackend + ?Sized>(
        &mut self,
        _backend: &mut B,
        offset: u64,
        len: usize,
    ) -> Result<()> {
        let file = self.file;
        let n = self
            .from
            .with_prefix(len, |p| file.write_iter_at(p, offset))
            .map_err(ferr)?;
        if n != len {
            return Err(ferr(EIO));
        }
        Ok(())
    }
}

impl Qcow2 {
    /// Reads guest bytes at `offset` as the layers below the top see them
    /// (zeros without a backing file, or past its end).
    pub(crate) fn read_backing(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let Some(chain) = self.backing.as_ref() else {
            buf.fill(0);
            return Ok(());
        };
        let avail = chain
            .virtual_size()
            .saturating_sub(offset)
            .min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(avail);
        tail.fill(0);
        if head.is_empty() {
            return Ok(());
        }
        let files = self.files.get(1..).ok_or(FmtError::Internal)?;
        chain.read(
            &mut ReqTables { dev: self, base: 1 },
            &mut ReqClusters { dev: self, base: 1 },
            offset,
            avail,
            &mut SliceSink::new(head, |layer, into: &mut [u8], offset| {
                let file = files.get(layer).ok_or(FmtError::Internal)?;
                file.read_exact_at(into, offset).map_err(ferr)
            }),
        )
    }
}

/// The read engine's `Tables` of a read-write device (under the writer
/// lock): the top layer's L1 table and modified L2 tables from the writer,
/// the rest as for a read-only device.
pub(crate) struct TopTables<'a> {
    pub(crate) dev: &'a Qcow2,
    pub(crate) t: &'a WriterTables,
}

impl Tables for TopTables<'_> {
    fn l1_entry(&mut self, layer: usize, index: u32) -> Result<u64> {
        if layer == 0 {
            return l1_table_entry(&self.t.l1, index);
        }
        ReqTables {
            dev: self.dev,
            base: 0,
        }
        .l1_entry(layer, index)
    }

    fn with_l2_table<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        layer: usize,
        offset: u64,
        f: F,
    ) -> Result<R> {
        if layer == 0 {
            if let Some(t) = self.t.overlay.l2(offset) {
                return Ok(f(t));
            }
        }
        ReqTables {
            dev: self.dev,
            base: 0,
        }
        .with_l2_table(layer, offset, f)
    }
}

// SPDX-License-Identifier: GPL-2.0

//! loop_file_fmt_qcow2: the qcow2 format, read-only.
//!
//! The format logic (header validation, L1/L2 translation, compressed
//! descriptors, snapshots, backing chains and the read engine
//! `Chain::read`) is the host-tested `formats/qcow2/src/format` tree,
//! compiled into this module as [`qcow2fmt`]. This crate supplies what the
//! engine asks for, over kernel types:
//!
//! - attach ([`Qcow2::attach`]): every layer's header is read and
//!   validated, the chain checked against the files userspace passed, the
//!   L1 tables loaded (bounded by the format crate: 32 MiB each), an
//!   internal snapshot selected with the option `snapshot=NAME`;
//! - `Storage`: positioned reads of the layers' files;
//! - `Tables`: the L1 copies and an L2 table [`cache::Cache`];
//! - `CompressedClusters`: a decompressed-cluster [`cache::Cache`] filled
//!   by a small pool of decompression workers ([`decomp::Pool`]) with zlib
//!   and zstd workspaces;
//! - memory: a request never waits indefinitely for memory (it may be
//!   what reclaim waits for): buffers are allocated so that they fail
//!   instead (`kvvec_zeroed_mayfail`), and then the request is served from
//!   the device's [`cache::Reserve`], one buffer of the largest cluster
//!   preallocated at attach, with decompression worker 0, also
//!   preallocated (see `cache.rs` and `decomp.rs`);
//! - a periodic job ([`periodic::Periodic`]) freeing cache entries unused
//!   for `cache_clean_interval` seconds, and a shrinker
//!   ([`shrinker::Shrinker`]) that gives cache memory back under memory
//!   pressure (see [`Caches`]);
//! - `Sink`: the request's pages (`IovIter`): uncompressed data is read
//!   from the file straight into them, zeros are written in place.
//!
//! Read-write devices (`write.rs`) drive the format crate's write engine
//! under a per-device writer mutex, which their reads take too.

// Only the wrappers (and, in the core, the entry points C calls) may
// use `unsafe`.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
#[path = "../wrappers/mod.rs"]
pub mod wrappers;

#[allow(unsafe_code)]
#[path = "../wrappers/decompress.rs"]
pub mod decompress;

#[allow(unsafe_code)]
#[path = "../wrappers/params.rs"]
pub mod params;

#[allow(unsafe_code)]
#[path = "../wrappers/periodic.rs"]
pub mod periodic;

#[allow(unsafe_code)]
#[path = "../wrappers/fanout.rs"]
pub mod fanout;

#[allow(unsafe_code)]
#[path = "../wrappers/shrinker.rs"]
pub mod shrinker;

#[path = "../wrappers/qcow2_sys.rs"]
mod qcow2_sys;

#[path = "../../../../formats/qcow2/src/format/mod.rs"]
pub mod qcow2fmt;

mod cache;
mod decomp;
mod errno;
mod write;

use crate::wrappers::compat::{fmt, CStrBytes};
use crate::wrappers::euclean;
use cache::{Cache, Reserve};
use core::fmt::Write;
use core::pin::Pin;
use core::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use decomp::Pool;
use kernel::prelude::*;
use kernel::str::{BStr, CStr, CString};
use kernel::sync::{new_mutex, Arc, Mutex};
use periodic::{Periodic, Tick};
use qcow2fmt::compressed::max_compressed_len;
use qcow2fmt::header::HEADER_READ_LEN;
use qcow2fmt::{
    find_snapshot, Chain, CompressedClusters, CompressedRead, Error as FmtError, Header, Layer,
    LayerFormat, Qcow2Layer, Sink, SnapshotSelector, StatusKind, Storage, Tables, WriteEngine,
};
use shrinker::{Shrink, Shrinker};
use wrappers::file::File;
use wrappers::format::{
    AttachRequest, Attached, ExtentKind, Extents, FormatDriver, Registration, SysfsBuf,
};
use wrappers::iov::IovIter;
use wrappers::uapi;
use write::{IovSource, Writer, WriterTables};

// The format logic's errors are shown in log lines.
crate::kernel_display!(FmtError);

module! {
    type: Qcow2Module,
    name: "loop_file_fmt_qcow2",
    description: "qcow2 file format driver for loop_file_fmt",
    license: "GPL",
    alias: ["loop-file-fmt-qcow2"],
}

/// A format-crate error as a kernel error (see [`errno`]).
fn kerr(e: &FmtError) -> kernel::error::Error {
    errno::kernel_error(e)
}

/// A kernel error as a format-crate error.
fn ferr(e: kernel::error::Error) -> FmtError {
    FmtError::Io(-e.to_errno())
}

/// I/O errors logged per [`LOG_WINDOW_MS`], per device.
const LOG_BURST: u32 = 10;
/// See [`LOG_BURST`].
const LOG_WINDOW_MS: i64 = 5000;

/// The layers' files, as the engine's `Storage`.
struct Files<'a>(&'a [File]);

impl Storage for Files<'_> {
    fn read_at(&self, layer: usize, buf: &mut [u8], offset: u64) -> qcow2fmt::Result<()> {
        let f = self.0.get(layer).ok_or(FmtError::Internal)?;
        f.read_exact_at(buf, offset).map_err(ferr)
    }
}

/// One attached qcow2 image (with its backing chain).
struct Qcow2 {
    /// Device name, for log lines.
    name: CString,
    files: KVec<File>,
    chain: Chain,
    /// The L1 table in use of each qcow2 layer, as on disk (big endian);
    /// empty for raw layers.
    l1: KVec<KVVec<u8>>,
    caches: Arc<Caches>,
    /// What a request uses when no memory can be had for a buffer.
    reserve: Reserve,
    /// Frees cache entries unused for a clean interval.
    cleaner: Periodic<Caches>,
    /// Frees cache entries under memory pressure. Its drop, at detach,
    /// waits for a running scan, and only then releases its reference to
    /// the caches.
    _shrinker: Shrinker<Caches>,
    pool: Pool,
    /// The layers below the top one, numbered from 0 (layer 1 of the
    /// device is 0 here): what copy-on-write reads. `None` without them.
    backing: Option<Chain>,
    /// The write state of a read-write device (`None`: read-only).
    writer: Option<Pin<KBox<Mutex<Writer>>>>,
    /// I/O error log rate limit: window start and count.
    log_window: AtomicI64,
    log_count: AtomicU32,
    /// Where the last read ended: a read starting there is sequential.
    next_read: AtomicU64,
    /// Compressed clusters decompressed ahead of a sequential reader
    /// (sysfs `decompress_ahead`); see [`Qcow2::decompress_ahead`].
    ahead: AtomicU32,
    /// Clusters [`Qcow2::decompress_ahead`] loaded (sysfs
    /// `decompress_stats`, 4th field).
    loaded_ahead: AtomicU64,
}

/// The caches of one device and their clean interval.
///
/// They are also the device's shrinker: under memory pressure, reclaim
/// counts the pages held beyond the floor (the most recently used entry of
/// each shard, see [`Cache::shrinkable`]) and has them evicted from the
/// least recently used end, decompressed clusters first (recreated from
/// one read), then L2 tables (each maps a whole range of clusters).
/// `echo 2 >/proc/sys/vm/drop_caches` runs it to the floor.
struct Caches {
    l2: Cache,
    clusters: Cache,
    /// Clean interval in seconds (0: never).
    clean_interval: AtomicU32,
    /// The largest buffer either cache holds (one cluster).
    item_len: usize,
}

impl Caches {
    fn interval_ms(&self) -> u32 {
        self.clean_interval
            .load(Ordering::Relaxed)
            .saturating_mul(1000)
    }
}

impl Tick for Caches {
    /// Frees the entries unused for an interval (so an entry goes at most
    /// two intervals after its last use, as in QEMU).
    fn tick(&self) -> Option<u32> {
        let ms = self.interval_ms();
        if ms == 0 {
            return None;
        }
        let cutoff = cache::now_ms() - i64::from(ms);
        self.l2.clean(cutoff);
        self.clusters.clean(cutoff);
        Some(ms)
    }
}

/// The shrinker's unit.
const PAGE: usize = kernel::page::PAGE_SIZE;

impl Shrink for Caches {
    /// Pages of both caches beyond their floor.
    fn count(&self) -> usize {
        (self.clusters.shrinkable() + self.l2.shrinkable()).div_ceil(PAGE)
    }

    /// Evicts entries worth at least `nr` pages, if there are so many;
    /// only takes shard locks, which no request holds while it allocates
    /// (see `cache.rs`), and allocates nothing.
    fn scan(&self, nr: usize) -> Option<usize> {
        let want = nr.saturating_mul(PAGE);
        let mut freed = 0;
        for c in [&self.clusters, &self.l2] {
            while freed < want {
                let s = c.shrink((want - freed).div_ceil(self.item_len));
                if s.entries == 0 {
                    break;
                }
                freed += s.bytes;
            }
        }
        (freed > 0).then(|| freed.div_ceil(PAGE))
    }
}

/// What `options` asks for.
struct Options<'a> {
    snapshot: Option<SnapshotSelector<'a>>,
}

impl<'a> Options<'a> {
    /// Parses comma-separated `snapshot=ID-OR-NAME`, `snapshot.id=ID`,
    /// `snapshot.name=NAME`.
    fn parse(name: &CStr, options: &'a [u8]) -> Result<Self> {
        let mut o = Options { snapshot: None };
        for opt in options.split(|&c| c == b',').filter(|o| !o.is_empty()) {
            let (key, value) = match opt.iter().position(|&c| c == b'=') {
                Some(i) => (&opt[..i], &opt[i + 1..]),
                None => (opt, &[][..]),
            };
            let sel = match key {
                b"snapshot" => SnapshotSelector::IdOrName(value),
                b"snapshot.id" => SnapshotSelector::Id(value),
                b"snapshot.name" => SnapshotSelector::Name(value),
                _ => {
                    pr_err!(
                        "{}: qcow2: unknown option '{}'\n",
                        name,
                        BStr::from_bytes(opt)
                    );
                    return Err(EINVAL);
                }
            };
            if value.is_empty() || o.snapshot.is_some() {
                pr_err!(
                    "{}: qcow2: invalid option '{}'\n",
                    name,
                    BStr::from_bytes(opt)
                );
                return Err(EINVAL);
            }
            o.snapshot = Some(sel);
        }
        Ok(o)
    }
}

/// The id or name a snapshot selector looks for.
fn wanted(sel: SnapshotSelector<'_>) -> &[u8] {
    match sel {
        SnapshotSelector::Id(s) | SnapshotSelector::Name(s) | SnapshotSelector::IdOrName(s) => s,
    }
}

/// Reads the first bytes of a layer (the header, its extensions and the
/// backing file name).
fn read_prefix(file: &File, file_len: u64) -> Result<KVVec<u8>> {
    let len = file_len.min(HEADER_READ_LEN as u64) as usize;
    let mut buf = KVVec::from_elem(0u8, len, GFP_KERNEL)?;
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

impl Qcow2 {
    /// Logs `e` for layer `layer` and turns it into its errno.
    fn refuse(name: &CStr, layer: usize, e: FmtError) -> kernel::error::Error {
        pr_err!("{}: qcow2: layer {}: {}\n", name, layer, e);
        kerr(&e)
    }

    /// Opens qcow2 layer `i`: header, warnings, the L1 table in use.
    /// Returns the layer, its header, its L1 table and the format of its
    /// backing file (`None`: the chain ends here). `writable`: the layer
    /// is to be written (dirty and corrupt images are refused).
    fn open_qcow2_layer(
        req: &AttachRequest<'_>,
        files: &[File],
        i: usize,
        snapshot: Option<SnapshotSelector<'_>>,
        writable: bool,
    ) -> Result<(Qcow2Layer, Header, KVVec<u8>, Option<LayerFormat>)> {
        let name = req.disk_name();
        let file = &files[i];
        let file_len = file.size();
        let prefix = read_prefix(file, file_len)?;
        let header = Header::parse(&prefix).map_err(|e| Self::refuse(name, i, e))?;
        if writable && (header.is_corrupt() || header.is_dirty()) {
            let why = if header.is_corrupt() {
                "marked corrupt"
            } else {
                "marked dirty (not closed cleanly)"
            };
            pr_err!(
                "{}: qcow2: image is {}; repair it with 'qemu-img check -r all' or attach read-only\n",
                name,
                why
            );
            return Err(EROFS);
        }
        if header.is_corrupt() {
            pr_warn!(
                "{}: qcow2: layer {} is marked corrupt; reading it anyway (read-only)\n",
                name,
                i
            );
        } else if header.is_dirty() {
            pr_warn!("{}: qcow2: layer {} is marked dirty (not closed cleanly); reading it anyway (read-only)\n", name, i);
        }
        let layer = match snapshot {
            Some(sel) => {
                let snap =
                    find_snapshot(&Files(files), i, &header, file_len, sel).map_err(|e| {
                        pr_err!(
                            "{}: qcow2: snapshot '{}': {}\n",
                            name,
                            BStr::from_bytes(wanted(sel)),
                            e
                        );
                        kerr(&e)
                    })?;
                Qcow2Layer::from_snapshot(&header, &snap, file_len)
            }
            None => Qcow2Layer::new(&header, file_len),
        }
        .map_err(|e| Self::refuse(name, i, e))?;
        let mut l1 = KVVec::from_elem(0u8, layer.l1_table_bytes(), GFP_KERNEL)?;
        file.read_exact_at(&mut l1, layer.l1_table_offset())
            .inspect_err(|_| {
                pr_err!("{}: qcow2: layer {}: cannot read the L1 table\n", name, i);
            })?;

        let Some(_) = header.backing_file_name(&prefix) else {
            return Ok((layer, header, l1, None));
        };
        let Some(next) = files.get(i + 1) else {
            pr_err!(
                "{}: qcow2: layer {} names a backing file, but no file was given for it\n",
                name,
                i
            );
            return Err(EINVAL);
        };
        let mut magic = [0u8; 4];
        let n = if next.size() >= 4 { 4 } else { 0 };
        next.read_exact_at(&mut magic[..n], 0)?;
        let format = LayerFormat::detect(header.backing_format_name(&prefix), &magic[..n])
            .map_err(|e| {
                let fmt = header.backing_format_name(&prefix).unwrap_or(b"");
                pr_err!(
                    "{}: qcow2: layer {}: {} '{}'\n",
                    name,
                    i,
                    e,
                    BStr::from_bytes(fmt)
                );
                kerr(&e)
            })?;
        Ok((layer, header, l1, Some(format)))
    }

    fn attach(req: &AttachRequest<'_>) -> Result<Attached<Self>> {
        let name = req.disk_name();
        let writable = !req.read_only();
        if req.direct_io() {
            pr_err!("{}: qcow2: direct I/O is not supported\n", name);
            return Err(EINVAL);
        }
        let opts = Options::parse(name, req.options().to_byte_slice())?;
        if writable && opts.snapshot.is_some() {
            pr_err!(
                "{}: qcow2: snapshots are read-only; attach read-only\n",
                name
            );
            return Err(EROFS);
        }

        let nr = req.nr_files();
        let mut files = KVec::with_capacity(nr, GFP_KERNEL)?;
        for i in 0..nr {
            files.push(req.file(i)?, GFP_KERNEL)?;
        }
        let mut l1 = KVec::with_capacity(nr, GFP_KERNEL)?;
        let mut chain: Option<Chain> = None;
        let mut format = Some(LayerFormat::Qcow2);
        let mut i = 0;
        let mut max_cluster = 512usize;
        // The compression types of the chain (for the reserve worker).
        let mut kinds = KVec::new();
        let mut top_header = None;
        while let Some(f) = format.take() {
            let layer = match f {
                LayerFormat::Raw => {
                    l1.push(KVVec::new(), GFP_KERNEL)?;
                    Layer::Raw {
                        len: files[i].size(),
                    }
                }
                LayerFormat::Qcow2 => {
                    let snap = if i == 0 { opts.snapshot } else { None };
                    let (q, header, table, next) =
                        Self::open_qcow2_layer(req, &files, i, snap, writable && i == 0)?;
                    if i == 0 {
                        top_header = Some(header);
                    }
                    l1.push(table, GFP_KERNEL)?;
                    max_cluster = max_cluster.max(q.geometry().cluster_len());
                    if !kinds.contains(&q.compression()) {
                        kinds.push(q.compression(), GFP_KERNEL)?;
                    }
                    format = next;
                    Layer::Qcow2(q)
                }
            };
            match chain.as_mut() {
                None => chain = Some(Chain::new(layer)),
                Some(c) => c
                    .push_backing(layer)
                    .map_err(|e| Self::refuse(name, i, e))?,
            }
            i += 1;
        }
        let chain = chain.ok_or(EINVAL)?;
        let used = chain.len();
        // Keep only the files the chain uses; the core refuses a mismatch
        // with the number of files given.
        let mut kept = KVec::with_capacity(used, GFP_KERNEL)?;
        for f in files.into_iter().take(used) {
            kept.push(f, GFP_KERNEL)?;
        }
        let files = kept;
        let mut backing: Option<Chain> = None;
        for layer in (1..used).filter_map(|j| chain.layer(j)) {
            match backing.as_mut() {
                None => backing = Some(Chain::new(*layer)),
                Some(c) => c.push_backing(*layer).map_err(|e| kerr(&e))?,
            }
        }
        // A writer takes over the top layer's L1 table and reads the
        // refcount table.
        let tables = match (writable, top_header.as_ref()) {
            (false, _) => None,
            (true, None) => return Err(EINVAL),
            (true, Some(h)) => {
                let cl = h.geometry().cluster_len();
                let rt_len = (h.refcount_table_clusters as usize)
                    .checked_mul(cl)
                    .ok_or(EFBIG)?;
                let mut rt = KVVec::from_elem(0u8, rt_len, GFP_KERNEL)?;
                files[0]
                    .read_exact_at(&mut rt, h.refcount_table_offset)
                    .inspect_err(|_| {
                        pr_err!("{}: qcow2: cannot read the refcount table\n", name);
                    })?;
                let top_l1 = core::mem::replace(&mut l1[0], KVVec::new());
                Some(WriterTables::new(top_l1, rt, cl)?)
            }
        };

        let kib = |k: u32| (k as usize).saturating_mul(1024);
        let l2 = Cache::new(kib(params::l2_cache_size_kib()), max_cluster)?;
        let clusters = Cache::new(kib(params::cluster_cache_size_kib()), max_cluster)?;
        let pool = Pool::new(
            wrappers::nr_cpu_ids() as usize,
            max_compressed_len(max_cluster.trailing_zeros()),
            &kinds,
        )?;
        // L2 tables and decompressed clusters are one cluster each.
        let reserve = Reserve::new(max_cluster, wrappers::kvvec_zeroed_mayfail)?;
        let size = chain.virtual_size();
        let caches = Arc::new(
            Caches {
                l2,
                clusters,
                clean_interval: AtomicU32::new(params::cache_clean_interval_secs()),
                item_len: max_cluster,
            },
            GFP_KERNEL,
        )?;
        let cleaner = Periodic::new(caches.clone())?;
        let shrinker_name = CString::try_from_fmt(fmt!("lff-qcow2-{}", name))?;
        let shrinker = Shrinker::new(&shrinker_name, caches.clone())?;
        if caches.interval_ms() != 0 {
            cleaner.schedule(caches.interval_ms());
        }
        let mut state = Qcow2 {
            name: CString::try_from_fmt(fmt!("{}", name))?,
            files,
            chain,
            l1,
            caches,
            reserve,
            cleaner,
            _shrinker: shrinker,
            pool,
            backing,
            writer: None,
            log_window: AtomicI64::new(0),
            log_count: AtomicU32::new(0),
            next_read: AtomicU64::new(u64::MAX),
            ahead: AtomicU32::new(default_ahead()),
            loaded_ahead: AtomicU64::new(0),
        };
        if let (Some(t), Some(h)) = (tables, top_header.as_ref()) {
            // Last: from here on the header may have changed (autoclear
            // bits cleared, the lazy refcounts dirty bit set), and
            // dropping the state closes the image cleanly.
            state.writer = Some(Self::open_writer(&state, h, t)?);
        }
        if let Some(sel) = opts.snapshot {
            pr_info!(
                "{}: qcow2: reading snapshot '{}'\n",
                name,
                BStr::from_bytes(wanted(sel))
            );
        }
        let force_read_only = state.writer.is_none();
        Ok(Attached {
            state: KBox::new(state, GFP_KERNEL)?,
            size,
            force_read_only,
            nr_files_used: used,
        })
    }

    /// Logs a failed request (`op`: "read", "write", ...), at most
    /// [`LOG_BURST`] lines per [`LOG_WINDOW_MS`].
    fn log_error(&self, op: &str, pos: u64, len: u64, e: &FmtError) {
        let now = cache::now_ms();
        let start = self.log_window.load(Ordering::Relaxed);
        if now - start >= LOG_WINDOW_MS {
            self.log_window.store(now, Ordering::Relaxed);
            self.log_count.store(0, Ordering::Relaxed);
        }
        let n = self.log_count.fetch_add(1, Ordering::Relaxed);
        if n < LOG_BURST {
            pr_err!(
                "{}: qcow2: {} of {} bytes at {} failed: {}\n",
                &*self.name,
                op,
                len,
                pos,
                e
            );
        } else if n == LOG_BURST {
            pr_err!(
                "{}: qcow2: more I/O errors, not logged for a few seconds\n",
                &*self.name
            );
        }
    }

    /// Opens the writer of a read-write device. Not inlined: the engine
    /// is a large value, and `attach`'s frame is big already (the kernel
    /// stack is 16 KiB).
    #[inline(never)]
    fn open_writer(state: &Qcow2, h: &Header, t: WriterTables) -> Result<Pin<KBox<Mutex<Writer>>>> {
        let file_len = state.files.first().ok_or(EIO)?.size();
        let w = Writer::open(state, h, file_len, t).map_err(|e| {
            pr_err!(
                "{}: qcow2: cannot open the image for writing: {}\n",
                &*state.name,
                e
            );
            kerr(&e)
        })?;
        KBox::pin_init(new_mutex!(w), GFP_KERNEL)
    }

    /// Runs `op` on the writer (`EROFS` without one); a failure is logged
    /// and becomes its errno.
    fn with_writer<R>(
        &self,
        what: &str,
        pos: u64,
        len: u64,
        op: impl FnOnce(&mut WriteEngine, &mut write::Backend<'_>, &mut [u8]) -> qcow2fmt::Result<R>,
    ) -> Result<R> {
        let w = self.writer.as_ref().ok_or(EROFS)?;
        let mut g = w.lock();
        g.run(self, op).map_err(|e| {
            if let FmtError::MetadataOverlap { .. } = e {
                // Always logged: the image is marked corrupt and takes no
                // more writes; `EUCLEAN` has the core make the disk
                // read-only.
                pr_err!(
                    "{}: qcow2: {} at {}: {}; image marked corrupt, writes refused from now on\n",
                    &*self.name,
                    what,
                    pos,
                    e
                );
                return euclean();
            }
            self.log_error(what, pos, len, &e);
            match e {
                FmtError::Io(n) if n > 0 => kernel::error::Error::from_errno(-n),
                FmtError::NoSpace => ENOSPC,
                _ => match kerr(&e) {
                    k if k == EINVAL => EIO,
                    k => k,
                },
            }
        })
    }

    /// `LFF_GET_MAP`: the chain's block status ([`Chain::status`]) from
    /// `pos` until `len` bytes are covered or `out` is full.
    fn map_extents(&self, pos: u64, len: u64, out: &mut Extents<'_>) -> Result {
        let end = pos.checked_add(len).ok_or(EINVAL)?;
        // A read-write device maps under its writer lock, through the
        // writer's tables (as its reads do).
        let guard = self.writer.as_ref().map(|w| w.lock());
        let mut at = pos;
        while at < end {
            let st = match guard.as_ref() {
                None => self
                    .chain
                    .status(&mut ReqTables { dev: self, base: 0 }, at, end - at),
                Some(g) => g.chain.status(
                    &mut write::TopTables {
                        dev: self,
                        t: &g.tables,
                    },
                    at,
                    end - at,
                ),
            };
            let st = st.map_err(|e| {
                pr_err!("{}: qcow2: map at {} failed: {}\n", &*self.name, at, e);
                EIO
            })?;
            let (flags, host_offset) = match st.kind {
                StatusKind::Data { host_offset } => (uapi::LFF_EXTENT_DATA, Some(host_offset)),
                StatusKind::Compressed => {
                    (uapi::LFF_EXTENT_DATA | uapi::LFF_EXTENT_COMPRESSED, None)
                }
                StatusKind::Zero => (uapi::LFF_EXTENT_ZERO, None),
                StatusKind::Unallocated => (uapi::LFF_EXTENT_ZERO, None),
            };
            let present = if st.kind == StatusKind::Unallocated {
                0
            } else {
                uapi::LFF_EXTENT_PRESENT
            };
            let kind = ExtentKind {
                flags: flags | present,
                depth: st.depth as u32,
                host_offset,
            };
            if !out.push(at, st.len, kind) {
                break;
            }
            at += st.len;
        }
        Ok(())
    }

    /// Decompresses the compressed clusters a read of `len` bytes at `pos`
    /// needs and that are not cached yet, and for a sequential read those
    /// of the next `decompress_ahead` clusters, several at once (one per
    /// online CPU, at most one per decompression worker), into the cluster
    /// cache, where the read then finds them.
    ///
    /// Only where it can help: on a read-only device (a read-write one
    /// reads under its writer lock), with two CPUs or more online, for a
    /// read spanning clusters or a sequential read entering a new one, and
    /// when the read itself needs a cluster and there are at least two to
    /// decompress. Best effort: a cluster that fails to load here, or finds
    /// no memory, is left to the read, which loads it (or reports its
    /// error) as it would have anyway.
    fn decompress_ahead(&self, pos: u64, len: usize) {
        if self.writer.is_some() {
            return;
        }
        let end = pos.saturating_add(len as u64);
        let sequential = self.next_read.swap(end, Ordering::Relaxed) == pos;
        let calls = fanout::online_cpus().min(self.pool.workers());
        let Ok(cl) = self.cluster_len(0) else {
            return;
        };
        let cl = cl as u64;
        let spans = pos / cl != end.saturating_sub(1) / cl;
        let enters = sequential && pos % cl == 0;
        if calls < 2 || len == 0 || !(spans || enters) {
            return;
        }
        let mut todo = Todo::default();
        let clusters = &self.caches.clusters;
        let mut tables = ReqTables { dev: self, base: 0 };
        let walk = self.chain.compressed_clusters(&mut tables, pos, len, |r| {
            todo.add_uncached(r, clusters);
            Ok(())
        });
        if walk.is_err() || todo.n == 0 {
            // A bad mapping (the read reports it) or nothing to decompress.
            return;
        }
        if sequential {
            let ahead = u64::from(self.ahead.load(Ordering::Relaxed)) * cl;
            let ahead = ahead.min(self.chain.virtual_size().saturating_sub(end));
            let _ = self
                .chain
                .compressed_clusters(&mut tables, end, ahead as usize, |r| {
                    todo.add_uncached(r, clusters);
                    Ok(())
                });
        }
        let todo = todo.as_slice();
        if todo.len() < 2 {
            // Nothing the read needs, or only one cluster: it loads that
            // itself, as fast.
            return;
        }
        let calls = calls.min(todo.len());
        fanout::fan_out(calls, &|first| {
            for r in todo.iter().skip(first).step_by(calls).flatten() {
                self.load_cluster(r);
            }
        });
    }

    /// Decompresses the cluster `r` into the cache (best effort, see
    /// [`Cache::load_ahead`]).
    fn load_cluster(&self, r: &CompressedRead) {
        let loaded = self.caches.clusters.load_ahead(
            cache::key(r.layer, r.host_offset),
            r.len as u64,
            r.cluster_size,
            &self.reserve,
            |out| self.decompress(&self.files, r, out),
        );
        if loaded {
            self.loaded_ahead.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Decompresses the cluster `r` of the chain whose layers' files are
    /// `files` into `out`, with a worker of the pool.
    fn decompress(
        &self,
        files: &[File],
        r: &CompressedRead,
        out: &mut [u8],
    ) -> qcow2fmt::Result<()> {
        self.pool.with_worker(r.compression, |input, dec| {
            r.load(&Files(files), dec, input, out)
        })?
    }

    fn cluster_len(&self, layer: usize) -> qcow2fmt::Result<usize> {
        match self.chain.layer(layer) {
            Some(Layer::Qcow2(q)) => Ok(q.geometry().cluster_len()),
            _ => Err(FmtError::Internal),
        }
    }
}

/// The engine's `Tables` for one request, of the chain that starts at
/// the device's layer `base` (1: the backing layers, for copy-on-write).
struct ReqTables<'a> {
    dev: &'a Qcow2,
    base: usize,
}

impl Tables for ReqTables<'_> {
    fn l1_entry(&mut self, layer: usize, index: u32) -> qcow2fmt::Result<u64> {
        let table = self
            .dev
            .l1
            .get(layer + self.base)
            .ok_or(FmtError::Internal)?;
        qcow2fmt::table::l1_table_entry(table, index)
    }

    fn with_l2_table<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        layer: usize,
        offset: u64,
        f: F,
    ) -> qcow2fmt::Result<R> {
        let dev = self.dev;
        let layer = layer + self.base;
        let len = dev.cluster_len(layer)?;
        dev.caches.l2.with(
            cache::key(layer, offset),
            0,
            len,
            &dev.reserve,
            |t| Files(&dev.files).read_at(layer, t, offset),
            f,
        )
    }
}

/// The engine's `CompressedClusters` for one request (`base` as in
/// [`ReqTables`]).
struct ReqClusters<'a> {
    dev: &'a Qcow2,
    base: usize,
}

impl CompressedClusters for ReqClusters<'_> {
    fn with_cluster<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        req: &CompressedRead,
        f: F,
    ) -> qcow2fmt::Result<R> {
        let dev = self.dev;
        let files = dev.files.get(self.base..).ok_or(FmtError::Internal)?;
        // The compressed length tells apart descriptors sharing an offset.
        dev.caches.clusters.with(
            cache::key(req.layer + self.base, req.host_offset),
            req.len as u64,
            req.cluster_size,
            &dev.reserve,
            |out| dev.decompress(files, req, out),
            f,
        )
    }
}

/// The engine's `Sink`: the request's pages.
struct IovSink<'a, 'b> {
    to: &'a mut IovIter<'b>,
    files: &'a [File],
}

impl Sink for IovSink<'_, '_> {
    fn fill_zero(&mut self, len: usize) -> qcow2fmt::Result<()> {
        if self.to.zero(len) != len {
            return Err(FmtError::Internal);
        }
        Ok(())
    }

    fn copy_from(&mut self, data: &[u8]) -> qcow2fmt::Result<()> {
        if self.to.copy_to(data) != data.len() {
            return Err(FmtError::Internal);
        }
        Ok(())
    }

    fn read_from_storage(&mut self, layer: usize, offset: u64, len: usize) -> qcow2fmt::Result<()> {
        let file = self.files.get(layer).ok_or(FmtError::Internal)?;
        let n = self
            .to
            .with_prefix(len, |p| file.read_iter_at(p, offset))
            .map_err(ferr)?;
        if n != len {
            // The file shrank under us.
            return Err(FmtError::Io(-(EIO.to_errno())));
        }
        Ok(())
    }
}

/// Names of the per-device sysfs attributes (`loop_file_fmt/<name>`).
const ATTR_L2_CACHE_SIZE: usize = 0;
const ATTR_CLUSTER_CACHE_SIZE: usize = 1;
const ATTR_CACHE_CLEAN_INTERVAL: usize = 2;
const ATTR_L2_CACHE_STATS: usize = 3;
const ATTR_CLUSTER_CACHE_STATS: usize = 4;
const ATTR_RESERVE_USES: usize = 5;
const ATTR_DECOMPRESS_STATS: usize = 6;
const ATTR_DECOMPRESS_AHEAD: usize = 7;

/// Most clusters one read decompresses ahead ([`Qcow2::decompress_ahead`]).
const MAX_AHEAD: usize = 16;

/// The clusters [`Qcow2::decompress_ahead`] is to load, without repeats.
#[derive(Default)]
struct Todo {
    list: [Option<CompressedRead>; MAX_AHEAD],
    n: usize,
}

impl Todo {
    /// Adds `r` unless it is cached in `clusters`, listed already, or the
    /// list is full.
    fn add_uncached(&mut self, r: &CompressedRead, clusters: &Cache) {
        if self.n == MAX_AHEAD
            || self.as_slice().contains(&Some(*r))
            || clusters.contains(cache::key(r.layer, r.host_offset), r.len as u64)
        {
            return;
        }
        self.list[self.n] = Some(*r);
        self.n += 1;
    }

    /// The clusters listed (every entry is `Some`).
    fn as_slice(&self) -> &[Option<CompressedRead>] {
        &self.list[..self.n]
    }
}

/// `decompress_ahead` at attach: enough to keep every other online CPU
/// busy while a sequential reader's own cluster is decompressed.
fn default_ahead() -> u32 {
    (fanout::online_cpus().min(fanout::MAX_CALLS) as u32).saturating_sub(1)
}

fn parse_u32(input: &[u8]) -> Result<u32> {
    let s = core::str::from_utf8(input).map_err(|_| EINVAL)?;
    s.trim().parse::<u32>().map_err(|_| EINVAL)
}

#[vtable]
impl FormatDriver for Qcow2 {
    const NAME: &'static CStr = kernel::c_str!("qcow2");

    const ATTRS: &'static [&'static CStr] = &[
        kernel::c_str!("l2_cache_size"),
        kernel::c_str!("cluster_cache_size"),
        kernel::c_str!("cache_clean_interval"),
        kernel::c_str!("l2_cache_stats"),
        kernel::c_str!("cluster_cache_stats"),
        kernel::c_str!("reserve_uses"),
        kernel::c_str!("decompress_stats"),
        kernel::c_str!("decompress_ahead"),
    ];

    fn attach(req: &AttachRequest<'_>) -> Result<Attached<Self>> {
        Qcow2::attach(req)
    }

    fn read(&self, to: &mut IovIter<'_>, pos: u64) -> Result<usize> {
        let len = to.count();
        self.decompress_ahead(pos, len);
        let mut sink = IovSink {
            to,
            files: &self.files,
        };
        let mut clusters = ReqClusters { dev: self, base: 0 };
        let r = match self.writer.as_ref() {
            None => self.chain.read(
                &mut ReqTables { dev: self, base: 0 },
                &mut clusters,
                pos,
                len,
                &mut sink,
            ),
            Some(w) => {
                let g = w.lock();
                let mut tables = write::TopTables {
                    dev: self,
                    t: &g.tables,
                };
                g.chain
                    .read(&mut tables, &mut clusters, pos, len, &mut sink)
            }
        };
        match r {
            Ok(()) => Ok(len),
            Err(e) => {
                self.log_error("read", pos, len as u64, &e);
                Err(EIO)
            }
        }
    }

    fn write(&self, from: &mut IovIter<'_>, pos: u64) -> Result<usize> {
        let len = from.count();
        let file = self.files.first().ok_or(EIO)?;
        self.with_writer("write", pos, len as u64, |e, b, s| {
            e.write(b, s, pos, len as u64, &mut IovSource { from, file })
        })?;
        Ok(len)
    }

    fn flush(&self) -> Result {
        self.with_writer("flush", 0, 0, |e, b, _| e.flush(b))
    }

    fn discard(&self, pos: u64, len: u64) -> Result {
        self.with_writer("discard", pos, len, |e, b, s| e.discard(b, s, pos, len))
    }

    fn write_zeroes(&self, pos: u64, len: u64, may_unmap: bool) -> Result {
        self.with_writer("write-zeroes", pos, len, |e, b, s| {
            e.write_zeroes(b, s, pos, len, may_unmap)
        })
    }

    fn map(&self, pos: u64, len: u64, out: &mut Extents<'_>) -> Result {
        self.map_extents(pos, len, out)
    }

    fn show_attr(&self, index: usize, buf: &mut SysfsBuf<'_>) -> Result {
        let c = &self.caches;
        let stats = |c: &Cache, buf: &mut SysfsBuf<'_>| {
            let s = c.stats();
            writeln!(buf, "{} {} {} {}", s.hits, s.misses, s.entries, s.bytes)
        };
        match index {
            ATTR_L2_CACHE_SIZE => writeln!(buf, "{}", c.l2.budget() / 1024),
            ATTR_CLUSTER_CACHE_SIZE => writeln!(buf, "{}", c.clusters.budget() / 1024),
            ATTR_CACHE_CLEAN_INTERVAL => {
                writeln!(buf, "{}", c.clean_interval.load(Ordering::Relaxed))
            }
            ATTR_L2_CACHE_STATS => stats(&c.l2, buf),
            ATTR_CLUSTER_CACHE_STATS => stats(&c.clusters, buf),
            ATTR_RESERVE_USES => writeln!(buf, "{}", self.reserve.uses()),
            ATTR_DECOMPRESS_STATS => {
                let (clusters, bytes, nsecs) = self.pool.stats().get();
                let ahead = self.loaded_ahead.load(Ordering::Relaxed);
                writeln!(buf, "{clusters} {bytes} {nsecs} {ahead}")
            }
            ATTR_DECOMPRESS_AHEAD => writeln!(buf, "{}", self.ahead.load(Ordering::Relaxed)),
            _ => return Err(EINVAL),
        }
        .map_err(|_| EINVAL)
    }

    fn store_attr(&self, index: usize, input: &[u8]) -> Result {
        let c = &self.caches;
        match index {
            ATTR_L2_CACHE_SIZE => {
                c.l2.set_budget((parse_u32(input)? as usize).saturating_mul(1024))
            }
            ATTR_CLUSTER_CACHE_SIZE => c
                .clusters
                .set_budget((parse_u32(input)? as usize).saturating_mul(1024)),
            ATTR_CACHE_CLEAN_INTERVAL => {
                c.clean_interval.store(parse_u32(input)?, Ordering::Relaxed);
                // The next clean is one new interval from now (0: the
                // pending run, if any, stops the job).
                self.cleaner.schedule(c.interval_ms());
            }
            ATTR_DECOMPRESS_AHEAD => {
                let n = parse_u32(input)?;
                if n as usize > MAX_AHEAD {
                    return Err(EINVAL);
                }
                self.ahead.store(n, Ordering::Relaxed);
            }
            _ => return Err(EACCES),
        }
        Ok(())
    }
}

impl Drop for Qcow2 {
    /// A clean close of a read-write image: everything written back, the
    /// lazy refcounts dirty bit cleared.
    fn drop(&mut self) {
        let Some(w) = self.writer.as_ref() else {
            return;
        };
        let mut g = w.lock();
        if let Err(e) = g.run(self, |e, b, _| e.close(b)) {
            pr_err!(
                "{}: qcow2: the image was not closed cleanly: {}; check it with 'qemu-img check'\n",
                &*self.name,
                e
            );
        }
    }
}

struct Qcow2Module {
    _reg: Registration<Qcow2>,
}

impl kernel::Module for Qcow2Module {
    fn init(module: &'static ThisModule) -> Result<Self> {
        Ok(Self {
            _reg: Registration::new(module)?,
        })
    }
}

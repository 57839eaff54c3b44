//! The qcow2 write engine: refcounts, cluster allocation, copy-on-write,
//! zeroing and discard, with crash-safe ordering of metadata updates.
//!
//! Like the read engine it owns no buffers and does no I/O of its own. The
//! caller implements [`WriteBackend`] (the image file, the in-memory L1
//! and refcount tables, a cache of L2 tables and refcount blocks, the
//! data below the top layer and decompression) and passes one
//! cluster-sized scratch buffer per request; the engine itself is a
//! fixed-size struct, so it allocates nothing and fits the kernel.
//!
//! # What a write does
//! Per cluster of a request, by the state of its L2 entry (spec "Cluster
//! mapping", "Extended L2 Entries"):
//! - data with refcount 1: written in place (the COPIED flag set if it
//!   was missing);
//! - data with refcount > 1 (shared with an internal snapshot): a new
//!   cluster, the untouched head and tail copied from the old one, the
//!   old refcount decremented;
//! - compressed: the cluster is decompressed, merged with the new bytes
//!   and written to a new cluster; every host cluster the compressed
//!   bytes span loses one reference;
//! - unallocated: a new cluster, head and tail read from the backing
//!   chain (zeros without one or past its end);
//! - zero flag: a new cluster with zeroed head and tail, or the
//!   preallocated host cluster if its refcount is 1;
//! - extended L2: only the touched subclusters are written; a partly
//!   written subcluster is completed from its old state (allocated: the
//!   old bytes, zero: zeros, unallocated: the backing chain); fully
//!   written or already allocated subclusters need no copy; the bitmap
//!   marks the touched subclusters allocated.
//!
//! L2 tables shared with a snapshot (refcount > 1) are copied first; the
//! L1 entry then points at the copy with COPIED. Every new cluster gets
//! COPIED; COPIED is set exactly when the refcount is 1.
//!
//! [`WriteEngine::write_zeroes`] and [`WriteEngine::discard`] follow QEMU:
//! on version 3 whole clusters get the zero flag (extended L2: all
//! subclusters zero), so they read as zeros and never as backing data;
//! with `unmap` (always for discard, and for compressed or shared
//! clusters) the host cluster is released, otherwise a cluster with
//! refcount 1 stays allocated. With extended L2 the subclusters a
//! partial range covers whole get their zero bit by an L2 change alone.
//! Other partial clusters, and every zeroing on version 2, are written
//! as zeros. Discard ignores partial clusters and is refused (a no-op)
//! on version 2 images with a backing file, where an unallocated cluster
//! would show backing data. The L2 entry always changes before the old
//! cluster is released.
//!
//! Every operation takes `&mut self`: the caller runs one request at a
//! time against an image (a driver holds its lock across the request,
//! and its reads go through the same L1 and cache, with the layer's file
//! length raised to [`WriteEngine::file_len`]).
//!
//! # Crash ordering
//! A request changes L2 entries, L1 entries and refcount increments in
//! memory only (the cache keeps what the engine modified until the
//! engine writes it back, see [`WriteBackend::with_table`]); decrements
//! are queued. [`WriteEngine::flush`] then:
//! 1. writes new refcount blocks, syncs, and writes the refcount table
//!    entries that point at them (only when blocks were added);
//! 2. writes the dirty refcount blocks and the L2 tables allocated since
//!    the last flush, and syncs: every new reference's count, every new
//!    table, and the data written so far, are durable;
//! 3. writes the other dirty L2 tables, then the dirty L1 entries, and
//!    syncs (an L1 entry thus never names a table that is not on disk:
//!    its cluster may have held anything before, e.g. freed data);
//! 4. only now applies the queued decrements (the references they drop
//!    are durably gone) and returns freed clusters to the allocator.
//!
//! A crash at any point thus leaves at most leaked clusters: no cluster
//! is referenced while its count is 0, COPIED never disagrees with a
//! durable count, and a freed cluster is reused only after its old
//! reference is gone. A guest flush costs two syncs (three when
//! refcount blocks were added, one when only data was written in place,
//! none when nothing was written). The engine's dirty lists have fixed
//! sizes; when one runs low the engine flushes by itself, as it does when
//! [`WriteBackend::wants_writeback`] asks for it.
//!
//! Growing the refcount table places the new table and the refcount
//! blocks that count it past everything in use, makes all pending state
//! durable first, writes the blocks and the table, syncs, switches the
//! header's `refcount_table_offset`/`refcount_table_clusters` with one
//! 12-byte write, syncs, and frees the old table.
//!
//! # Corruption prevention
//! Before every data or metadata write the target range is checked
//! against the header cluster, the active L1 table, the refcount table
//! and blocks, the active L2 tables, the snapshot table and the
//! snapshots' L1 tables (QEMU's default checks; inactive L2 tables are
//! not checked). On a hit the image is marked corrupt (version 3), the
//! engine stops writing, and the request fails with
//! [`Error::MetadataOverlap`] (an `EIO`-class error).
//!
//! # Header rules
//! [`WriteEngine::open`] refuses dirty and corrupt images (the header
//! parser already refuses unknown incompatible features, encryption and
//! external data files), clears the autoclear bits (this code keeps no
//! bitmaps), and with `lazy_refcounts` sets the dirty bit for as long as
//! the image is open (the ordering above is kept anyway);
//! [`WriteEngine::close`] flushes and clears it. Only fixed header fields
//! are written, with small writes; extensions are never touched. The
//! virtual size does not change (no resize), so the L1 table, which the
//! header parser checked to cover it, never needs to grow.

use core::cell::RefCell;

use super::compressed::{CompressedDescriptor, CompressedRead};
use super::engine::Storage;
use super::error::{Error, Result, Structure};
use super::header::{Header, INCOMPAT_CORRUPT, INCOMPAT_DIRTY};
use super::refcount::{RefcountGeometry, REFCOUNT_TABLE_OFFSET_MASK};
use super::snapshot::SnapshotCursor;
use super::table::{decode_l1_entry, decode_l2_entry, Geometry, L2Entry, FLAG_COPIED, FLAG_ZERO};
use super::table::{OFFSET_MASK, SUBCLUSTERS};

/// The kinds of cluster-sized metadata tables the backend caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// An L2 table of the top image.
    L2,
    /// A refcount block of the top image.
    Refcount,
}

/// How the engine uses a table it asks for to change
/// ([`WriteBackend::with_table`]; tables it only reads come from
/// [`WriteBackend::read_table`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Modifies it; load it if needed, and keep it cached (never evict
    /// it) until [`WriteBackend::write_table`] is called for it.
    Modify,
    /// A new table: do not read the file; hand out a cluster-sized buffer
    /// (any content, the engine initialises it) and keep it like
    /// [`Access::Modify`].
    Fresh,
}

/// What the engine needs from its caller: the top image's file, its
/// tables, and the data below it.
///
/// The L1 and refcount tables are kept in memory by the caller (loaded at
/// open, as the read side's [`super::engine::Tables`] does); the engine
/// changes them through the setters and writes them to the file itself.
/// The engine asks for every table it modifies with [`Access::Modify`] or
/// [`Access::Fresh`] and writes it back with [`Self::write_table`]; at most
/// [`MAX_DIRTY_TABLES`] tables of each kind are kept that way at once, so
/// a cache holding `2 * MAX_DIRTY_TABLES + 4` tables never has to evict a
/// modified one.
pub trait WriteBackend {
    /// Fills `buf` from the image file at `offset` (the engine only reads
    /// inside the file).
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// Writes `buf` to the image file at `offset`, growing the file if
    /// needed.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()>;
    /// Writes `len` zero bytes at `offset` (e.g. fallocate `ZERO_RANGE`).
    fn write_zeroes_at(&mut self, offset: u64, len: u64) -> Result<()>;
    /// Makes everything written so far durable (fsync).
    fn sync(&mut self) -> Result<()>;
    /// Reads guest bytes at `offset` as the layers below the top image
    /// see them (zeros where there is no backing file or it is shorter).
    /// Only called when the engine was opened with a backing chain, and
    /// only within the virtual size.
    fn read_backing(&mut self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Decompresses the top image's compressed cluster `request` into
    /// `out` (exactly one cluster), e.g. with [`CompressedRead::load`].
    fn read_compressed(&mut self, request: &CompressedRead, out: &mut [u8]) -> Result<()>;

    /// Raw L1 entry `index` (`index < l1_size`).
    fn l1_entry(&self, index: u32) -> Result<u64>;
    /// Sets raw L1 entry `index` in memory.
    fn set_l1_entry(&mut self, index: u32, raw: u64) -> Result<()>;
    /// Number of refcount table entries held in memory.
    fn refcount_table_len(&self) -> u64;
    /// Raw refcount table entry `index` (`index < refcount_table_len()`).
    fn refcount_table_entry(&self, index: u64) -> Result<u64>;
    /// Sets raw refcount table entry `index` in memory.
    fn set_refcount_table_entry(&mut self, index: u64, raw: u64) -> Result<()>;
    /// Grows the in-memory refcount table to `entries` entries, the new
    /// ones 0.
    fn resize_refcount_table(&mut self, entries: u64) -> Result<()>;

    /// Calls `f` with the table of kind `kind` at file offset `offset`
    /// (one cluster of raw big-endian bytes) to read it, loaded from the
    /// file if it is not cached. Called on every cluster a request
    /// touches (the L2 entry, the refcounts that decide copy-on-write), so
    /// a backend should hand out its cached copy rather than copy it.
    fn read_table<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        kind: TableKind,
        offset: u64,
        f: F,
    ) -> Result<R>;
    /// Calls `f` with the table of kind `kind` at file offset `offset`
    /// (one cluster of raw big-endian bytes) to change it, per `access`.
    fn with_table<R, F: FnOnce(&mut [u8]) -> R>(
        &mut self,
        kind: TableKind,
        offset: u64,
        access: Access,
        f: F,
    ) -> Result<R>;
    /// Writes the cached table at `offset` to the file; from now on the
    /// cache may evict it.
    fn write_table(&mut self, kind: TableKind, offset: u64) -> Result<()>;
    /// Whether the cache would like the engine to write back (e.g. it is
    /// running out of clean entries); checked before each cluster.
    fn wants_writeback(&self) -> bool {
        false
    }
    /// Hook for clusters that became free (after their references are
    /// durably gone): a backend may punch a hole there. The default does
    /// nothing.
    fn released(&mut self, offset: u64, len: u64) -> Result<()> {
        let _ = (offset, len);
        Ok(())
    }
}

/// The bytes of a write request, consumed in order.
pub trait Source {
    /// Copies the next `dst.len()` bytes of the request into `dst`.
    fn copy_next(&mut self, dst: &mut [u8]) -> Result<()>;
    /// Writes the next `len` bytes of the request to the image file at
    /// `offset` through `backend` (the engine has checked the range).
    fn write_next<B: WriteBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        offset: u64,
        len: usize,
    ) -> Result<()>;
}

/// A [`Source`] of zeros (write-zeroes that cannot set a zero flag).
pub struct ZeroSource;

impl Source for ZeroSource {
    fn copy_next(&mut self, dst: &mut [u8]) -> Result<()> {
        dst.fill(0);
        Ok(())
    }

    fn write_next<B: WriteBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        offset: u64,
        len: usize,
    ) -> Result<()> {
        backend.write_zeroes_at(offset, len as u64)
    }
}

/// A [`Source`] over a byte slice.
pub struct SliceSource<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> SliceSource<'a> {
    /// The request bytes `data`.
    pub fn new(data: &'a [u8]) -> SliceSource<'a> {
        SliceSource { data, pos: 0 }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(len).ok_or(Error::Internal)?;
        let part = self.data.get(self.pos..end).ok_or(Error::Internal)?;
        self.pos = end;
        Ok(part)
    }
}

impl Source for SliceSource<'_> {
    fn copy_next(&mut self, dst: &mut [u8]) -> Result<()> {
        dst.copy_from_slice(self.take(dst.len())?);
        Ok(())
    }

    fn write_next<B: WriteBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        offset: u64,
        len: usize,
    ) -> Result<()> {
        backend.write_at(self.take(len)?, offset)
    }
}

/// Most L2 tables (and, separately, refcount blocks) the engine keeps
/// modified in the cache before it flushes by itself.
pub const MAX_DIRTY_TABLES: usize = 32;
/// Most snapshots an image may have to be opened for writing (their L1
/// tables are kept for the overlap check).
pub const MAX_WRITABLE_SNAPSHOTS: usize = 64;
const MAX_NEW_BLOCKS: usize = 16;
const MAX_DIRTY_L1: usize = 32;
const MAX_PENDING_FREES: usize = 64;
/// Host offsets must stay below 2^56 (spec "Cluster mapping").
const MAX_HOST_OFFSET: u64 = 1 << 56;
/// The refcount table size limit (as the header parser's).
const MAX_REFCOUNT_TABLE_BYTES: u64 = super::header::MAX_REFCOUNT_TABLE_BYTES;

const HDR_REFCOUNT_TABLE_OFFSET: u64 = 48;
const HDR_INCOMPATIBLE: u64 = 72;
const HDR_AUTOCLEAR: u64 = 88;
/// Compatible feature bit 0: lazy refcounts.
const COMPAT_LAZY_REFCOUNTS: u64 = 1;
/// The extended L2 bitmap with every subcluster reading as zeros.
const ALL_ZERO_BITMAP: u64 = 0xffff_ffff << 32;

/// A fixed-capacity list of numbers.
#[derive(Clone, Copy, Debug)]
struct List<const N: usize> {
    items: [u64; N],
    len: usize,
}

impl<const N: usize> List<N> {
    const fn new() -> Self {
        List {
            items: [0; N],
            len: 0,
        }
    }

    fn as_slice(&self) -> &[u64] {
        self.items.get(..self.len).unwrap_or(&[])
    }

    fn contains(&self, v: u64) -> bool {
        self.as_slice().contains(&v)
    }

    fn push(&mut self, v: u64) -> Result<()> {
        let slot = self.items.get_mut(self.len).ok_or(Error::Internal)?;
        *slot = v;
        self.len += 1;
        Ok(())
    }

    fn insert(&mut self, v: u64) -> Result<()> {
        if self.contains(v) {
            return Ok(());
        }
        self.push(v)
    }

    fn room(&self) -> usize {
        N - self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    fn get(&self, i: usize) -> Option<u64> {
        self.as_slice().get(i).copied()
    }
}

/// How to complete the untouched part of a cluster being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fill {
    /// Zeros.
    Zero,
    /// The backing chain's bytes (zeros without one).
    Backing,
    /// The bytes of the old host cluster at this offset.
    Host(u64),
}

/// What the engine has done since it was opened (for tests, and for a
/// driver's statistics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Cluster writes that went in place (refcount 1).
    pub in_place: u64,
    /// Data clusters allocated.
    pub allocated: u64,
    /// Shared data clusters (refcount > 1) copied on write.
    pub shared_copies: u64,
    /// Compressed clusters rewritten uncompressed.
    pub compressed_rewrites: u64,
    /// Head or tail copies read from the backing chain.
    pub backing_reads: u64,
    /// Extended-L2 writes that needed no copy at all.
    pub subcluster_no_copy: u64,
    /// New L2 tables (empty).
    pub new_l2_tables: u64,
    /// L2 tables shared with a snapshot, copied.
    pub l2_copies: u64,
    /// Refcount blocks added.
    pub new_refcount_blocks: u64,
    /// Refcount table growths.
    pub refcount_table_growths: u64,
    /// Clusters zeroed or discarded through their L2 entry.
    pub zeroed_entries: u64,
    /// Extended-L2 partial zeroings done by setting subcluster zero bits.
    pub subcluster_zeroes: u64,
    /// Host clusters whose refcount dropped to 0.
    pub freed: u64,
    /// Flushes that wrote metadata.
    pub metadata_flushes: u64,
}

/// The write engine of one read-write qcow2 image (the top layer of its
/// chain). See the module documentation.
#[derive(Clone, Debug)]
pub struct WriteEngine {
    geometry: Geometry,
    refcounts: RefcountGeometry,
    version: u32,
    size: u64,
    compression: super::compressed::CompressionType,
    l1_table_offset: u64,
    l1_size: u32,
    refcount_table_offset: u64,
    refcount_table_clusters: u32,
    snapshots_offset: u64,
    snapshots_len: u64,
    snapshot_l1: [(u64, u32); MAX_WRITABLE_SNAPSHOTS],
    nb_snapshots: usize,
    incompatible: u64,
    has_backing: bool,
    lazy_dirty: bool,
    stopped: bool,
    file_len: u64,
    /// One past the highest cluster index in use or allocated.
    end_cluster: u64,
    /// One past the last non-zero refcount table entry (the overlap check
    /// walks only these).
    rt_used: u64,
    free_hint: u64,
    unsynced: bool,
    dirty_l2: List<MAX_DIRTY_TABLES>,
    /// L2 tables allocated or copied since the last flush (also in
    /// `dirty_l2`): written before the sync that precedes the L1 update.
    new_l2: List<MAX_DIRTY_TABLES>,
    dirty_blocks: List<MAX_DIRTY_TABLES>,
    new_blocks: List<MAX_NEW_BLOCKS>,
    dirty_rt: List<MAX_NEW_BLOCKS>,
    dirty_l1: List<MAX_DIRTY_L1>,
    pending_frees: List<MAX_PENDING_FREES>,
    stats: WriteStats,
}

/// `dst.copy_from_slice(src)`, an error instead of a panic on a length
/// mismatch (a cache handing out a table of the wrong size).
fn copy_exact(dst: &mut [u8], src: &[u8]) -> Result<()> {
    if dst.len() != src.len() {
        return Err(Error::BufferSize {
            what: Structure::L2Table,
            expected: dst.len() as u64,
            got: src.len() as u64,
        });
    }
    dst.copy_from_slice(src);
    Ok(())
}

fn to_usize(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::Internal)
}

fn overlaps(a: u64, a_len: u64, b: u64, b_len: u64) -> bool {
    a < b.saturating_add(b_len) && b < a.saturating_add(a_len)
}

impl WriteEngine {
    /// Prepares the image described by `header` (its file is `file_len`
    /// bytes) for writing, with the header rules of the module
    /// documentation. `has_backing` says whether the chain has layers
    /// below it. The backend's L1 table must hold the header's `l1_size`
    /// entries and its refcount table `refcount_table_clusters` clusters
    /// of entries.
    pub fn open<B: WriteBackend + ?Sized>(
        header: &Header,
        backend: &mut B,
        file_len: u64,
        has_backing: bool,
    ) -> Result<WriteEngine> {
        if header.is_corrupt() {
            return Err(Error::CorruptImage);
        }
        if header.is_dirty() {
            return Err(Error::DirtyImage);
        }
        let geometry = header.geometry();
        let refcounts = RefcountGeometry::new(header.refcount_order, header.cluster_bits)?;
        let cs = geometry.cluster_size();
        let rt_entries = u64::from(header.refcount_table_clusters) * (cs / 8);
        if backend.refcount_table_len() != rt_entries {
            return Err(Error::BufferSize {
                what: Structure::RefcountTable,
                expected: rt_entries * 8,
                got: backend.refcount_table_len().saturating_mul(8),
            });
        }
        let mut snapshot_l1 = [(0u64, 0u32); MAX_WRITABLE_SNAPSHOTS];
        let mut nb_snapshots = 0usize;
        let mut snapshots_len = 0u64;
        let mut cursor = SnapshotCursor::new(header, file_len);
        {
            let storage = BackendStorage(RefCell::new(&mut *backend));
            while let Some(snap) = cursor.next_snapshot(&storage, 0)? {
                let slot = snapshot_l1
                    .get_mut(nb_snapshots)
                    .ok_or(Error::TooManySnapshots(header.nb_snapshots))?;
                *slot = (snap.l1_table_offset, snap.l1_size);
                nb_snapshots += 1;
                snapshots_len = snap
                    .entry_offset
                    .saturating_sub(header.snapshots_offset)
                    .saturating_add(snap.entry_len);
            }
        }
        let file_clusters = file_len.div_ceil(cs);
        let mut engine = WriteEngine {
            geometry,
            refcounts,
            version: header.version,
            size: header.size,
            compression: header.compression_type,
            l1_table_offset: header.l1_table_offset,
            l1_size: header.l1_size,
            refcount_table_offset: header.refcount_table_offset,
            refcount_table_clusters: header.refcount_table_clusters,
            snapshots_offset: header.snapshots_offset,
            snapshots_len,
            snapshot_l1,
            nb_snapshots,
            incompatible: header.incompatible_features,
            has_backing,
            lazy_dirty: false,
            stopped: false,
            file_len,
            end_cluster: file_clusters.max(1),
            rt_used: 0,
            free_hint: 1,
            unsynced: false,
            dirty_l2: List::new(),
            new_l2: List::new(),
            dirty_blocks: List::new(),
            new_blocks: List::new(),
            dirty_rt: List::new(),
            dirty_l1: List::new(),
            pending_frees: List::new(),
            stats: WriteStats::default(),
        };
        for r in (0..rt_entries).rev() {
            if backend.refcount_table_entry(r)? != 0 {
                engine.rt_used = r + 1;
                break;
            }
        }
        if header.version >= 3 {
            let mut changed = false;
            if header.autoclear_features != 0 {
                backend.write_at(&0u64.to_be_bytes(), HDR_AUTOCLEAR)?;
                changed = true;
            }
            if header.compatible_features & COMPAT_LAZY_REFCOUNTS != 0 {
                engine.incompatible |= INCOMPAT_DIRTY;
                backend.write_at(&engine.incompatible.to_be_bytes(), HDR_INCOMPATIBLE)?;
                engine.lazy_dirty = true;
                changed = true;
            }
            if changed {
                backend.sync()?;
            }
        }
        Ok(engine)
    }

    /// The image's cluster geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The image file's length once everything allocated so far is
    /// written (new tables may still be only in the cache): what the
    /// read side's layer must take ([`super::layer::Qcow2Layer::grow_file_len`])
    /// so that it reads new tables and clusters.
    pub fn file_len(&self) -> u64 {
        let allocated = self
            .end_cluster
            .checked_shl(self.geometry.cluster_bits())
            .unwrap_or(u64::MAX);
        self.file_len.max(allocated)
    }

    /// The current refcount table offset and size in clusters (they
    /// change when the table grows).
    pub fn refcount_table(&self) -> (u64, u32) {
        (self.refcount_table_offset, self.refcount_table_clusters)
    }

    /// What the engine has done so far.
    pub fn stats(&self) -> WriteStats {
        self.stats
    }

    /// Whether the engine stopped after an overlap or a failed metadata
    /// update; it then refuses every write.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    fn usable(&self) -> Result<()> {
        if self.stopped {
            Err(Error::WriterStopped)
        } else {
            Ok(())
        }
    }

    fn check_range(&self, offset: u64, len: u64, scratch: &[u8]) -> Result<()> {
        let out = Error::OutOfRange {
            offset,
            len,
            size: self.size,
        };
        match offset.checked_add(len) {
            Some(end) if end <= self.size => {}
            _ => return Err(out),
        }
        if scratch.len() != self.geometry.cluster_len() {
            return Err(Error::BufferSize {
                what: Structure::DataCluster,
                expected: self.geometry.cluster_size(),
                got: scratch.len() as u64,
            });
        }
        Ok(())
    }

    /// Writes `len` bytes from `src` at guest `offset`. `scratch` is one
    /// cluster of caller memory.
    pub fn write<B: WriteBackend + ?Sized, S: Source + ?Sized>(
        &mut self,
        backend: &mut B,
        scratch: &mut [u8],
        offset: u64,
        len: u64,
        src: &mut S,
    ) -> Result<()> {
        self.usable()?;
        self.check_range(offset, len, scratch)?;
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let n = (end - pos)
                .min(self.geometry.cluster_size() - self.geometry.offset_in_cluster(pos));
            self.write_cluster(backend, scratch, pos, n, src)?;
            pos += n;
        }
        Ok(())
    }

    /// Makes `len` bytes at guest `offset` read as zeros; see the module
    /// documentation for `unmap`.
    pub fn write_zeroes<B: WriteBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        scratch: &mut [u8],
        offset: u64,
        len: u64,
        unmap: bool,
    ) -> Result<()> {
        self.usable()?;
        self.check_range(offset, len, scratch)?;
        if self.version < 3 {
            return self.write(backend, scratch, offset, len, &mut ZeroSource);
        }
        let end = offset + len;
        let mut pos = offset;
        let cs = self.geometry.cluster_size();
        while pos < end {
            let n = (end - pos).min(cs - self.geometry.offset_in_cluster(pos));
            // The last cluster may end past the virtual size.
            let last = pos + n == self.size && self.geometry.offset_in_cluster(pos) == 0;
            if n == cs || last {
                self.zero_cluster(backend, scratch, pos, unmap, FLAG_ZERO)?;
            } else if self.geometry.extended_l2() {
                self.zero_subclusters(backend, scratch, pos, n)?;
            } else {
                self.write_cluster(backend, scratch, pos, n, &mut ZeroSource)?;
            }
            pos += n;
        }
        Ok(())
    }

    /// Discards the whole clusters inside `len` bytes at guest `offset`:
    /// they read as zeros afterwards and their host clusters are
    /// released. Partial clusters are left alone, and on version 2 images
    /// with a backing file nothing is done (see the module docs).
    pub fn discard<B: WriteBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        scratch: &mut [u8],
        offset: u64,
        len: u64,
    ) -> Result<()> {
        self.usable()?;
        self.check_range(offset, len, scratch)?;
        if self.version < 3 && self.has_backing {
            return Ok(());
        }
        let zero = if self.version >= 3 { FLAG_ZERO } else { 0 };
        let cs = self.geometry.cluster_size();
        let end = offset + len;
        let mut pos = offset.div_ceil(cs) * cs;
        while pos < end {
            let whole = pos + cs <= end || end == self.size;
            if !whole {
                break;
            }
            self.zero_cluster(backend, scratch, pos, true, zero)?;
            pos += cs;
        }
        Ok(())
    }

    /// Writes back everything (see "Crash ordering" in the module docs).
    pub fn flush<B: WriteBackend + ?Sized>(&mut self, backend: &mut B) -> Result<()> {
        self.usable()?;
        self.flush_inner(backend)
    }

    /// Flushes and, with lazy refcounts, clears the dirty bit: a clean
    /// close.
    pub fn close<B: WriteBackend + ?Sized>(&mut self, backend: &mut B) -> Result<()> {
        self.flush(backend)?;
        // The decrements applied last are in memory only: write them too,
        // so a clean close leaks nothing.
        self.flush_inner(backend)?;
        if self.lazy_dirty {
            self.incompatible &= !INCOMPAT_DIRTY;
            backend.write_at(&self.incompatible.to_be_bytes(), HDR_INCOMPATIBLE)?;
            backend.sync()?;
            self.lazy_dirty = false;
        }
        Ok(())
    }

    fn flush_inner<B: WriteBackend + ?Sized>(&mut self, b: &mut B) -> Result<()> {
        let cs = self.geometry.cluster_size();
        let wrote_metadata = !self.new_blocks.is_empty()
            || !self.dirty_rt.is_empty()
            || !self.dirty_blocks.is_empty()
            || !self.dirty_l2.is_empty()
            || !self.dirty_l1.is_empty();
        // 1. New refcount blocks, then the table entries naming them.
        if !self.new_blocks.is_empty() || !self.dirty_rt.is_empty() {
            for i in 0..self.new_blocks.len {
                let off = self.new_blocks.get(i).ok_or(Error::Internal)?;
                self.check_overlap(b, off, cs, Some((Structure::RefcountBlock, off)))?;
                b.write_table(TableKind::Refcount, off)?;
                self.wrote(off, cs);
            }
            b.sync()?;
            for i in 0..self.dirty_rt.len {
                let index = self.dirty_rt.get(i).ok_or(Error::Internal)?;
                let raw = b.refcount_table_entry(index)?;
                let at = self.refcount_table_offset + index * 8;
                let rt = (Structure::RefcountTable, self.refcount_table_offset);
                self.check_overlap(b, at, 8, Some(rt))?;
                b.write_at(&raw.to_be_bytes(), at)?;
                self.unsynced = true;
            }
            self.new_blocks.clear();
            self.dirty_rt.clear();
        }
        // 2. Refcount blocks: every new reference's count becomes durable
        // with the data written so far.
        for i in 0..self.dirty_blocks.len {
            let off = self.dirty_blocks.get(i).ok_or(Error::Internal)?;
            self.check_overlap(b, off, cs, Some((Structure::RefcountBlock, off)))?;
            b.write_table(TableKind::Refcount, off)?;
            self.wrote(off, cs);
        }
        self.dirty_blocks.clear();
        // New L2 tables too: their cluster may have held anything (a
        // freed data cluster), so they must be durable before an L1 entry
        // names them.
        for i in 0..self.new_l2.len {
            let off = self.new_l2.get(i).ok_or(Error::Internal)?;
            self.check_overlap(b, off, cs, Some((Structure::L2Table, off)))?;
            b.write_table(TableKind::L2, off)?;
            self.wrote(off, cs);
        }
        if self.unsynced {
            b.sync()?;
            self.unsynced = false;
        }
        // 3. L2 tables (but the new ones, just written), then L1 entries.
        for i in 0..self.dirty_l2.len {
            let off = self.dirty_l2.get(i).ok_or(Error::Internal)?;
            if self.new_l2.contains(off) {
                continue;
            }
            self.check_overlap(b, off, cs, Some((Structure::L2Table, off)))?;
            b.write_table(TableKind::L2, off)?;
            self.wrote(off, cs);
        }
        self.dirty_l2.clear();
        self.new_l2.clear();
        for i in 0..self.dirty_l1.len {
            let index = self.dirty_l1.get(i).ok_or(Error::Internal)?;
            let index = u32::try_from(index).map_err(|_| Error::Internal)?;
            let raw = b.l1_entry(index)?;
            let at = self.l1_table_offset + u64::from(index) * 8;
            self.check_overlap(b, at, 8, Some((Structure::L1Table, self.l1_table_offset)))?;
            b.write_at(&raw.to_be_bytes(), at)?;
            self.unsynced = true;
        }
        self.dirty_l1.clear();
        if self.unsynced {
            b.sync()?;
            self.unsynced = false;
        }
        // 4. The dropped references are durably gone: decrement.
        // Taken off the list first: a failed decrement then leaks rather
        // than being applied twice. decrement() never queues, so the
        // items stay as they are while we walk them.
        let pending = self.pending_frees.len;
        self.pending_frees.clear();
        if wrote_metadata {
            self.stats.metadata_flushes += 1;
        }
        for i in 0..pending {
            let off = *self.pending_frees.items.get(i).ok_or(Error::Internal)?;
            self.decrement(b, off)?;
        }
        Ok(())
    }

    // ---- refcounts and allocation ----

    fn block_of(&self, b: &impl RefcountTableView, host: u64) -> Result<Option<(u64, usize)>> {
        let (index, entry) = self.refcounts.locate(host >> self.geometry.cluster_bits());
        if index >= b.len() {
            return Ok(None);
        }
        let block = b.entry(index)? & REFCOUNT_TABLE_OFFSET_MASK;
        if block == 0 {
            return Ok(None);
        }
        if self.geometry.offset_in_cluster(block) != 0 {
            return Err(Error::CorruptRefcount { offset: host });
        }
        Ok(Some((block, entry)))
    }

    /// The refcount of the host cluster at `host`.
    fn refcount<B: WriteBackend + ?Sized>(&self, b: &mut B, host: u64) -> Result<u64> {
        let Some((block, entry)) = self.block_of(&View(b), host)? else {
            return Ok(0);
        };
        let rg = self.refcounts;
        b.read_table(TableKind::Refcount, block, |t| rg.get(t, entry))?
    }

    fn set_refcount<B: WriteBackend + ?Sized>(
        &mut self,
        b: &mut B,
        host: u64,
        v: u64,
    ) -> Result<()> {
        let (block, entry) = self.block_of(&View(b), host)?.ok_or(Error::Internal)?;
        let rg = self.refcounts;
        if !self.dirty_blocks.contains(block) {
            self.dirty_blocks.push(block)?;
        }
        b.with_table(TableKind::Refcount, block, Access::Modify, |t| {
            rg.set(t, entry, v)
        })?
    }

    fn decrement<B: WriteBackend + ?Sized>(&mut self, b: &mut B, host: u64) -> Result<()> {
        let rc = self.refcount(b, host)?;
        if rc == 0 {
            self.stopped = true;
            return Err(Error::CorruptRefcount { offset: host });
        }
        self.set_refcount(b, host, rc - 1)?;
        if rc == 1 {
            self.stats.freed += 1;
            let cluster = host >> self.geometry.cluster_bits();
            self.free_hint = self.free_hint.min(cluster).max(1);
            b.released(host, self.geometry.cluster_size())?;
        }
        Ok(())
    }

    /// Queues one reference drop for each host cluster `[offset, offset +
    /// len)` touches, applied at the next flush.
    fn defer_free(&mut self, offset: u64, len: u64) -> Result<()> {
        let cs = self.geometry.cluster_size();
        let mut c = offset & !(cs - 1);
        let end = offset.checked_add(len).ok_or(Error::Internal)?;
        while c < end {
            self.pending_frees.push(c)?;
            c += cs;
        }
        Ok(())
    }

    /// The first free cluster index at or after the hint.
    fn find_free<B: WriteBackend + ?Sized>(&self, b: &mut B) -> Result<u64> {
        let bits = self.refcounts.block_entries_bits();
        let per_block = self.refcounts.block_entries();
        let rg = self.refcounts;
        let mut c = self.free_hint.max(1);
        loop {
            if c >= MAX_HOST_OFFSET >> self.geometry.cluster_bits() {
                return Err(Error::NoSpace);
            }
            let Some((block, entry)) =
                self.block_of(&View(b), c << self.geometry.cluster_bits())?
            else {
                return Ok(c);
            };
            let found = b.read_table(TableKind::Refcount, block, |t| {
                for i in entry..to_usize(per_block)? {
                    if rg.get(t, i)? == 0 {
                        return Ok(Some(i));
                    }
                }
                Ok(None)
            })??;
            let base = (c >> bits) << bits;
            match found {
                Some(i) => return Ok(base + i as u64),
                None => c = base + per_block,
            }
        }
    }

    /// Allocates one host cluster (refcount 0 -> 1) and returns its
    /// offset. May add a refcount block, or grow the refcount table
    /// (which flushes); uses `scratch` only then.
    fn alloc<B: WriteBackend + ?Sized>(&mut self, b: &mut B, scratch: &mut [u8]) -> Result<u64> {
        let cb = self.geometry.cluster_bits();
        for _ in 0..8 {
            let c = self.find_free(b)?;
            let host = c << cb;
            let (index, entry) = self.refcounts.locate(c);
            if index >= b.refcount_table_len() {
                self.grow_refcount_table(b, scratch, index)?;
                continue;
            }
            if self.block_of(&View(b), host)?.is_none() {
                // A new refcount block at `host`, counting itself.
                let rg = self.refcounts;
                b.with_table(TableKind::Refcount, host, Access::Fresh, |t| {
                    t.fill(0);
                    rg.set(t, entry, 1)
                })??;
                b.set_refcount_table_entry(index, host)?;
                self.rt_used = self.rt_used.max(index + 1);
                self.new_blocks.insert(host)?;
                self.dirty_rt.insert(index)?;
                self.stats.new_refcount_blocks += 1;
                self.end_cluster = self.end_cluster.max(c + 1);
                continue;
            }
            self.set_refcount(b, host, 1)?;
            self.end_cluster = self.end_cluster.max(c + 1);
            self.free_hint = c + 1;
            return Ok(host);
        }
        Err(Error::Internal)
    }

    /// Grows the refcount table so that it has an entry `index`.
    fn grow_refcount_table<B: WriteBackend + ?Sized>(
        &mut self,
        b: &mut B,
        scratch: &mut [u8],
        index: u64,
    ) -> Result<()> {
        self.flush_inner(b)?;
        self.stats.refcount_table_growths += 1;
        let r = self.grow_refcount_table_inner(b, scratch, index);
        if r.is_err() {
            // The in-memory table may not match the file any more.
            self.stopped = true;
        }
        r
    }

    fn grow_refcount_table_inner<B: WriteBackend + ?Sized>(
        &mut self,
        b: &mut B,
        scratch: &mut [u8],
        index: u64,
    ) -> Result<()> {
        let cb = self.geometry.cluster_bits();
        let cs = self.geometry.cluster_size();
        let per_rt_cluster = cs / 8;
        let eb = self.refcounts.block_entries_bits();
        let old_entries = b.refcount_table_len();
        let old_clusters = u64::from(self.refcount_table_clusters);
        let start = self.end_cluster.max(self.file_len.div_ceil(cs)).max(1);
        let missing = |b: &B, r: u64| -> Result<bool> {
            Ok(r >= old_entries || b.refcount_table_entry(r)? & REFCOUNT_TABLE_OFFSET_MASK == 0)
        };
        let (mut n_rt, mut n_rb) = (0u64, 0u64);
        let mut stable = false;
        for _ in 0..16 {
            let end = start + n_rt + n_rb;
            let entries = (index + 1)
                .max(((end.max(start + 1) - 1) >> eb) + 1)
                .max(old_entries + 1);
            let want_rt = entries
                .div_ceil(per_rt_cluster)
                .max(old_clusters * 2)
                .max(1);
            let end = start + want_rt + n_rb;
            let mut want_rb = 0;
            for r in (start >> eb)..=((end - 1) >> eb) {
                if missing(b, r)? {
                    want_rb += 1;
                }
            }
            if want_rt == n_rt && want_rb == n_rb {
                stable = true;
                break;
            }
            n_rt = want_rt;
            n_rb = want_rb;
        }
        if !stable || n_rt * cs > MAX_REFCOUNT_TABLE_BYTES {
            return Err(Error::NoSpace);
        }
        let end = start + n_rt + n_rb;
        if end << cb > MAX_HOST_OFFSET {
            return Err(Error::NoSpace);
        }
        b.resize_refcount_table(n_rt * per_rt_cluster)?;
        // The new blocks, right after the new table, counting every
        // cluster of the new table and of themselves.
        let rg = self.refcounts;
        let mut next_block = start + n_rt;
        let mut r = start >> eb;
        while r <= (end - 1) >> eb {
            if missing(b, r)? {
                let block = next_block << cb;
                next_block += 1;
                let first = r << eb;
                b.with_table(TableKind::Refcount, block, Access::Fresh, |t| {
                    t.fill(0);
                    for c in start.max(first)..end.min(first + (1 << eb)) {
                        rg.set(t, to_usize(c - first)?, 1)?;
                    }
                    Ok(())
                })??;
                b.set_refcount_table_entry(r, block)?;
                self.rt_used = self.rt_used.max(r + 1);
                self.check_overlap(b, block, cs, Some((Structure::RefcountBlock, block)))?;
                b.write_table(TableKind::Refcount, block)?;
            } else {
                // An existing block covers part of the new range.
                let block = b.refcount_table_entry(r)? & REFCOUNT_TABLE_OFFSET_MASK;
                for c in start.max(r << eb)..end.min((r + 1) << eb) {
                    let entry = to_usize(c - (r << eb))?;
                    b.with_table(TableKind::Refcount, block, Access::Modify, |t| {
                        rg.set(t, entry, 1)
                    })??;
                }
                self.check_overlap(b, block, cs, Some((Structure::RefcountBlock, block)))?;
                b.write_table(TableKind::Refcount, block)?;
            }
            r += 1;
        }
        if next_block != end {
            return Err(Error::Internal);
        }
        // The new table.
        for k in 0..n_rt {
            for (i, chunk) in scratch.chunks_exact_mut(8).enumerate() {
                let e = k * per_rt_cluster + i as u64;
                chunk.copy_from_slice(&b.refcount_table_entry(e)?.to_be_bytes());
            }
            self.check_overlap(b, (start + k) << cb, cs, None)?;
            b.write_at(scratch, (start + k) << cb)?;
        }
        b.sync()?;
        let mut hdr = [0u8; 12];
        hdr.get_mut(..8)
            .ok_or(Error::Internal)?
            .copy_from_slice(&(start << cb).to_be_bytes());
        hdr.get_mut(8..).ok_or(Error::Internal)?.copy_from_slice(
            &u32::try_from(n_rt)
                .map_err(|_| Error::NoSpace)?
                .to_be_bytes(),
        );
        b.write_at(&hdr, HDR_REFCOUNT_TABLE_OFFSET)?;
        b.sync()?;
        let old_offset = self.refcount_table_offset;
        self.refcount_table_offset = start << cb;
        self.refcount_table_clusters = u32::try_from(n_rt).map_err(|_| Error::NoSpace)?;
        self.end_cluster = end;
        self.wrote(start << cb, (end - start) << cb);
        for k in 0..old_clusters {
            self.decrement(b, old_offset + (k << cb))?;
        }
        Ok(())
    }

    fn wrote(&mut self, offset: u64, len: u64) {
        self.unsynced = true;
        self.file_len = self.file_len.max(offset.saturating_add(len));
    }

    // ---- overlap check ----

    /// Fails (and marks the image corrupt) if `[offset, offset + len)`
    /// overlaps metadata other than `allow` (a structure and its offset).
    fn check_overlap<B: WriteBackend + ?Sized>(
        &mut self,
        b: &mut B,
        offset: u64,
        len: u64,
        allow: Option<(Structure, u64)>,
    ) -> Result<()> {
        match self.find_overlap(b, offset, len, allow)? {
            None => Ok(()),
            Some(what) => {
                self.stopped = true;
                if self.version >= 3 {
                    let flags = self.incompatible | INCOMPAT_CORRUPT;
                    if b.write_at(&flags.to_be_bytes(), HDR_INCOMPATIBLE).is_ok() {
                        self.incompatible = flags;
                        let _ = b.sync();
                    }
                }
                Err(Error::MetadataOverlap { what, offset })
            }
        }
    }

    fn find_overlap<B: WriteBackend + ?Sized>(
        &self,
        b: &mut B,
        offset: u64,
        len: u64,
        allow: Option<(Structure, u64)>,
    ) -> Result<Option<Structure>> {
        let cs = self.geometry.cluster_size();
        let round = |n: u64| n.div_ceil(cs).saturating_mul(cs);
        let hit = |what: Structure, start: u64, n: u64| {
            allow != Some((what, start)) && overlaps(offset, len, start, n)
        };
        if hit(Structure::Header, 0, cs) {
            return Ok(Some(Structure::Header));
        }
        let l1_len = round(u64::from(self.l1_size) * 8);
        if hit(Structure::L1Table, self.l1_table_offset, l1_len) {
            return Ok(Some(Structure::L1Table));
        }
        let rt_len = u64::from(self.refcount_table_clusters) * cs;
        if hit(Structure::RefcountTable, self.refcount_table_offset, rt_len) {
            return Ok(Some(Structure::RefcountTable));
        }
        if self.snapshots_len > 0
            && hit(
                Structure::SnapshotTable,
                self.snapshots_offset,
                round(self.snapshots_len),
            )
        {
            return Ok(Some(Structure::SnapshotTable));
        }
        for &(l1, n) in self.snapshot_l1.get(..self.nb_snapshots).unwrap_or(&[]) {
            if hit(Structure::SnapshotL1Table, l1, round(u64::from(n) * 8)) {
                return Ok(Some(Structure::SnapshotL1Table));
            }
        }
        for r in 0..self.rt_used.min(b.refcount_table_len()) {
            let block = b.refcount_table_entry(r)? & REFCOUNT_TABLE_OFFSET_MASK;
            if block != 0 && hit(Structure::RefcountBlock, block, cs) {
                return Ok(Some(Structure::RefcountBlock));
            }
        }
        for i in 0..self.l1_size {
            let l2 = b.l1_entry(i)? & OFFSET_MASK;
            if l2 != 0 && hit(Structure::L2Table, l2, cs) {
                return Ok(Some(Structure::L2Table));
            }
        }
        Ok(None)
    }

    // ---- L1/L2 ----

    /// Flushes if a dirty list runs low, so one cluster's work always fits.
    fn prepare<B: WriteBackend + ?Sized>(&mut self, b: &mut B) -> Result<()> {
        if self.dirty_l2.room() < 3
            || self.new_l2.room() < 3
            || self.dirty_blocks.room() < 8
            || self.new_blocks.room() < 4
            || self.dirty_rt.room() < 4
            || self.dirty_l1.room() < 2
            || self.pending_frees.room() < 8
            || b.wants_writeback()
        {
            self.flush_inner(b)?;
        }
        Ok(())
    }

    fn set_l1<B: WriteBackend + ?Sized>(&mut self, b: &mut B, index: u32, raw: u64) -> Result<()> {
        b.set_l1_entry(index, raw)?;
        self.dirty_l1.insert(u64::from(index))
    }

    fn l2_get<B: WriteBackend + ?Sized>(
        &self,
        b: &mut B,
        table: u64,
        index: usize,
    ) -> Result<(u64, u64)> {
        let g = self.geometry;
        b.read_table(TableKind::L2, table, |t| {
            super::table::l2_table_entry(&g, t, index)
        })?
    }

    fn l2_set<B: WriteBackend + ?Sized>(
        &mut self,
        b: &mut B,
        table: u64,
        index: usize,
        raw: u64,
        bitmap: u64,
    ) -> Result<()> {
        let es = self.geometry.l2_entry_size();
        let extended = self.geometry.extended_l2();
        self.dirty_l2.insert(table)?;
        b.with_table(TableKind::L2, table, Access::Modify, |t| {
            let at = index.checked_mul(es).ok_or(Error::Internal)?;
            t.get_mut(at..at + 8)
                .ok_or(Error::Internal)?
                .copy_from_slice(&raw.to_be_bytes());
            if extended {
                t.get_mut(at + 8..at + 16)
                    .ok_or(Error::Internal)?
                    .copy_from_slice(&bitmap.to_be_bytes());
            }
            Ok(())
        })?
    }

    /// The L2 table covering guest `pos`, if allocated.
    fn l2_for_read<B: WriteBackend + ?Sized>(&self, b: &mut B, pos: u64) -> Result<Option<u64>> {
        let l1_index = self.geometry.l1_index(pos);
        let index = u32::try_from(l1_index).map_err(|_| Error::Internal)?;
        let raw = b.l1_entry(index)?;
        let table = decode_l1_entry(&self.geometry, l1_index, raw)?;
        if let Some(t) = table {
            self.check_table_in_file(t)?;
        }
        Ok(table)
    }

    fn check_table_in_file(&self, table: u64) -> Result<()> {
        let cs = self.geometry.cluster_size();
        match table.checked_add(cs) {
            Some(end) if end <= self.file_len || self.dirty_l2.contains(table) => Ok(()),
            _ => Err(Error::PastEndOfFile {
                what: Structure::L2Table,
                offset: table,
                len: cs,
                file_len: self.file_len,
            }),
        }
    }

    /// The L2 table covering guest `pos`, allocated or copied (from a
    /// table shared with a snapshot) so that it can be modified.
    fn l2_for_write<B: WriteBackend + ?Sized>(
        &mut self,
        b: &mut B,
        scratch: &mut [u8],
        pos: u64,
    ) -> Result<u64> {
        let l1_index = self.geometry.l1_index(pos);
        let index = u32::try_from(l1_index).map_err(|_| Error::Internal)?;
        let raw = b.l1_entry(index)?;
        match self.l2_for_read(b, pos)? {
            None => {
                let new = self.alloc(b, scratch)?;
                self.stats.new_l2_tables += 1;
                self.dirty_l2.insert(new)?;
                self.new_l2.insert(new)?;
                b.with_table(TableKind::L2, new, Access::Fresh, |t| t.fill(0))?;
                self.set_l1(b, index, new | FLAG_COPIED)?;
                Ok(new)
            }
            Some(table) => {
                let rc = self.refcount(b, table)?;
                if rc == 0 {
                    return Err(Error::CorruptRefcount { offset: table });
                }
                if rc == 1 {
                    if raw & FLAG_COPIED == 0 {
                        self.set_l1(b, index, table | FLAG_COPIED)?;
                    }
                    return Ok(table);
                }
                let new = self.alloc(b, scratch)?;
                self.stats.l2_copies += 1;
                b.read_table(TableKind::L2, table, |t| copy_exact(scratch, t))??;
                self.dirty_l2.insert(new)?;
                self.new_l2.insert(new)?;
                b.with_table(TableKind::L2, new, Access::Fresh, |t| {
                    copy_exact(t, scratch)
                })??;
                self.set_l1(b, index, new | FLAG_COPIED)?;
                self.defer_free(table, self.geometry.cluster_size())?;
                Ok(new)
            }
        }
    }

    // ---- data ----

    /// Fills `buf` (guest bytes at `guest`, a part of the cluster) per
    /// `fill`; `in_cluster` is `buf`'s offset in the cluster.
    fn fill<B: WriteBackend + ?Sized>(
        &mut self,
        b: &mut B,
        buf: &mut [u8],
        guest: u64,
        in_cluster: u64,
        fill: Fill,
    ) -> Result<()> {
        match fill {
            Fill::Zero => {
                buf.fill(0);
                Ok(())
            }
            Fill::Backing => {
                if !self.has_backing {
                    buf.fill(0);
                    return Ok(());
                }
                self.stats.backing_reads += 1;
                let avail = to_usize(self.size.saturating_sub(guest).min(buf.len() as u64))?;
                let (head, tail) = buf.split_at_mut(avail);
                tail.fill(0);
                if !head.is_empty() {
                    b.read_backing(guest, head)?;
                }
                Ok(())
            }
            Fill::Host(host) => {
                let at = host.checked_add(in_cluster).ok_or(Error::Internal)?;
                let avail = to_usize(self.file_len.saturating_sub(at).min(buf.len() as u64))?;
                let (head, tail) = buf.split_at_mut(avail);
                tail.fill(0);
                if !head.is_empty() {
                    b.read_at(head, at)?;
                }
                Ok(())
            }
        }
    }

    /// Builds the cluster at guest `base` in `scratch`: bytes
    /// `[start, end)` completed per `fill` around the request's bytes at
    /// `[ic, ic + n)`.
    #[allow(clippy::too_many_arguments)]
    fn stage<B: WriteBackend + ?Sized, S: Source + ?Sized>(
        &mut self,
        b: &mut B,
        scratch: &mut [u8],
        base: u64,
        (start, end): (usize, usize),
        (ic, n): (usize, usize),
        src: &mut S,
        fill: Fill,
    ) -> Result<()> {
        let head = scratch.get_mut(start..ic).ok_or(Error::Internal)?;
        self.fill(b, head, base + start as u64, start as u64, fill)?;
        src.copy_next(scratch.get_mut(ic..ic + n).ok_or(Error::Internal)?)?;
        let tail = scratch.get_mut(ic + n..end).ok_or(Error::Internal)?;
        self.fill(b, tail, base + (ic + n) as u64, (ic + n) as u64, fill)
    }

    fn write_data<B: WriteBackend + ?Sized>(
        &mut self,
        b: &mut B,
        buf: &[u8],
        at: u64,
    ) -> Result<()> {
        self.check_overlap(b, at, buf.len() as u64, None)?;
        b.write_at(buf, at)?;
        self.wrote(at, buf.len() as u64);
        Ok(())
    }

    fn write_direct<B: WriteBackend + ?Sized, S: Source + ?Sized>(
        &mut self,
        b: &mut B,
        src: &mut S,
        at: u64,
        n: usize,
    ) -> Result<()> {
        self.check_overlap(b, at, n as u64, None)?;
        src.write_next(b, at, n)?;
        self.wrote(at, n as u64);
        Ok(())
    }

    fn compressed_request(&self, d: &CompressedDescriptor) -> Result<CompressedRead> {
        let (host_offset, len) = d.read_range(self.file_len)?;
        Ok(CompressedRead {
            layer: 0,
            host_offset,
            len: to_usize(len)?,
            compression: self.compression,
            cluster_size: self.geometry.cluster_len(),
        })
    }

    /// Writes `n` bytes at guest `pos`, all inside one cluster.
    fn write_cluster<B: WriteBackend + ?Sized, S: Source + ?Sized>(
        &mut self,
        b: &mut B,
        scratch: &mut [u8],
        pos: u64,
        n: u64,
        src: &mut S,
    ) -> Result<()> {
        self.prepare(b)?;
        let g = self.geometry;
        let cs = g.cluster_len();
        let table = self.l2_for_write(b, scratch, pos)?;
        let index = g.l2_index(pos);
        let (raw, bitmap) = self.l2_get(b, table, index)?;
        let entry = decode_l2_entry(&g, raw, bitmap)?;
        let ic = to_usize(g.offset_in_cluster(pos))?;
        let n = to_usize(n)?;
        let base = pos - ic as u64;
        let whole = n == cs;
        match entry {
            L2Entry::Compressed(d) => {
                let request = self.compressed_request(&d)?;
                let new = self.alloc(b, scratch)?;
                self.stats.compressed_rewrites += 1;
                self.stats.allocated += 1;
                if whole {
                    self.write_direct(b, src, new, n)?;
                } else {
                    b.read_compressed(&request, scratch)?;
                    src.copy_next(scratch.get_mut(ic..ic + n).ok_or(Error::Internal)?)?;
                    self.write_data(b, scratch, new)?;
                }
                let bitmap = if g.extended_l2() { 0xffff_ffff } else { 0 };
                self.l2_set(b, table, index, new | FLAG_COPIED, bitmap)?;
                self.defer_free(d.host_offset(), d.max_len())
            }
            L2Entry::Data { host_offset } => {
                let rc = self.refcount(b, host_offset)?;
                if rc == 0 {
                    return Err(Error::CorruptRefcount {
                        offset: host_offset,
                    });
                }
                if rc == 1 {
                    self.stats.in_place += 1;
                    self.write_direct(b, src, host_offset + ic as u64, n)?;
                    if raw & FLAG_COPIED == 0 {
                        self.l2_set(b, table, index, raw | FLAG_COPIED, 0)?;
                    }
                    return Ok(());
                }
                let new = self.alloc(b, scratch)?;
                self.stats.shared_copies += 1;
                self.stats.allocated += 1;
                self.fill_and_write(b, scratch, base, ic, n, src, Fill::Host(host_offset), new)?;
                self.l2_set(b, table, index, new | FLAG_COPIED, 0)?;
                self.defer_free(host_offset, g.cluster_size())
            }
            L2Entry::Unallocated => {
                let new = self.alloc(b, scratch)?;
                self.stats.allocated += 1;
                self.fill_and_write(b, scratch, base, ic, n, src, Fill::Backing, new)?;
                self.l2_set(b, table, index, new | FLAG_COPIED, 0)
            }
            L2Entry::Zero => {
                let host = raw & OFFSET_MASK;
                if host != 0 {
                    let rc = self.refcount(b, host)?;
                    if rc == 0 {
                        return Err(Error::CorruptRefcount { offset: host });
                    }
                    if rc == 1 {
                        self.stats.in_place += 1;
                        self.fill_and_write(b, scratch, base, ic, n, src, Fill::Zero, host)?;
                        return self.l2_set(b, table, index, host | FLAG_COPIED, 0);
                    }
                }
                let new = self.alloc(b, scratch)?;
                self.stats.allocated += 1;
                self.fill_and_write(b, scratch, base, ic, n, src, Fill::Zero, new)?;
                self.l2_set(b, table, index, new | FLAG_COPIED, 0)?;
                if host != 0 {
                    self.defer_free(host, g.cluster_size())?;
                }
                Ok(())
            }
            L2Entry::Subclusters {
                host_offset,
                alloc,
                zero,
            } => self.write_subclusters(
                b,
                scratch,
                (table, index, raw),
                (host_offset, alloc, zero),
                (base, ic, n),
                src,
            ),
        }
    }

    /// Writes a whole cluster at `target`: the request's `n` bytes at
    /// `ic`, the rest per `fill`.
    #[allow(clippy::too_many_arguments)]
    fn fill_and_write<B: WriteBackend + ?Sized, S: Source + ?Sized>(
        &mut self,
        b: &mut B,
        scratch: &mut [u8],
        base: u64,
        ic: usize,
        n: usize,
        src: &mut S,
        fill: Fill,
        target: u64,
    ) -> Result<()> {
        let cs = self.geometry.cluster_len();
        if n == cs {
            return self.write_direct(b, src, target, n);
        }
        self.stage(b, scratch, base, (0, cs), (ic, n), src, fill)?;
        self.write_data(b, scratch, target)
    }

    /// The extended-L2 write of `n` bytes at `ic` of the cluster at guest
    /// `base`.
    fn write_subclusters<B: WriteBackend + ?Sized, S: Source + ?Sized>(
        &mut self,
        b: &mut B,
        scratch: &mut [u8],
        (table, index, raw): (u64, usize, u64),
        (host, alloc, zero): (Option<u64>, u32, u32),
        (base, ic, n): (u64, usize, usize),
        src: &mut S,
    ) -> Result<()> {
        let g = self.geometry;
        let scb = g.subcluster_bits();
        let sc = 1usize << scb;
        let first = ic >> scb;
        let last = (ic + n - 1) >> scb;
        let touched: u32 = if last - first + 1 >= SUBCLUSTERS as usize {
            u32::MAX
        } else {
            ((1u32 << (last - first + 1)) - 1) << first
        };
        let start = first << scb;
        let end = (last + 1) << scb;
        // How subcluster `i` is completed.
        let fill_of = |i: usize, h: Option<u64>| -> Fill {
            let bit = 1u32 << i;
            match h {
                Some(h) if alloc & bit != 0 => Fill::Host(h),
                _ if zero & bit != 0 => Fill::Zero,
                _ => Fill::Backing,
            }
        };
        let (target, shared_old) = match host {
            Some(h) => {
                let rc = self.refcount(b, h)?;
                if rc == 0 {
                    return Err(Error::CorruptRefcount { offset: h });
                }
                if rc == 1 {
                    self.stats.in_place += 1;
                    (h, None)
                } else {
                    self.stats.shared_copies += 1;
                    self.stats.allocated += 1;
                    (self.alloc(b, scratch)?, Some(h))
                }
            }
            None => {
                self.stats.allocated += 1;
                (self.alloc(b, scratch)?, None)
            }
        };
        let head_partial = ic > start;
        let tail_partial = ic + n < end;
        if let Some(old) = shared_old {
            // Copy every allocated subcluster the request does not cover.
            for i in 0..SUBCLUSTERS as usize {
                let part = scratch
                    .get_mut(i * sc..(i + 1) * sc)
                    .ok_or(Error::Internal)?;
                let f = if touched & (1 << i) != 0 || alloc & (1 << i) != 0 {
                    fill_of(i, Some(old))
                } else {
                    Fill::Zero
                };
                self.fill(b, part, base + (i * sc) as u64, (i * sc) as u64, f)?;
            }
            src.copy_next(scratch.get_mut(ic..ic + n).ok_or(Error::Internal)?)?;
            self.write_data(b, scratch, target)?;
        } else {
            let h = if target == host.unwrap_or(u64::MAX) {
                host
            } else {
                None
            };
            let head_fill = fill_of(first, h);
            let tail_fill = fill_of(last, h);
            let direct = (!head_partial || matches!(head_fill, Fill::Host(_)))
                && (!tail_partial || matches!(tail_fill, Fill::Host(_)));
            if direct {
                self.stats.subcluster_no_copy += 1;
                self.write_direct(b, src, target + ic as u64, n)?;
            } else {
                let head = scratch.get_mut(start..ic).ok_or(Error::Internal)?;
                self.fill(b, head, base + start as u64, start as u64, head_fill)?;
                src.copy_next(scratch.get_mut(ic..ic + n).ok_or(Error::Internal)?)?;
                let tail = scratch.get_mut(ic + n..end).ok_or(Error::Internal)?;
                self.fill(b, tail, base + (ic + n) as u64, (ic + n) as u64, tail_fill)?;
                let part = scratch.get(start..end).ok_or(Error::Internal)?;
                // `part` borrows scratch; write it through a copy of the
                // range bounds.
                let at = target + start as u64;
                self.check_overlap(b, at, part.len() as u64, None)?;
                b.write_at(part, at)?;
                self.wrote(at, part.len() as u64);
            }
        }
        let new_raw = target | FLAG_COPIED;
        let new_alloc = alloc | touched;
        let new_zero = zero & !touched;
        let new_bitmap = (u64::from(new_zero) << 32) | u64::from(new_alloc);
        let old_bitmap = (u64::from(zero) << 32) | u64::from(alloc);
        if new_raw != raw || new_bitmap != old_bitmap {
            self.l2_set(b, table, index, new_raw, new_bitmap)?;
        }
        if let Some(old) = shared_old {
            self.defer_free(old, g.cluster_size())?;
        }
        Ok(())
    }

    /// Zeroes `n` bytes at guest `pos` inside one cluster of an extended-L2
    /// image: the subclusters they cover whole get their zero bit (and
    /// lose their allocation bit) by an L2 change alone; the partial
    /// subclusters at either end are written as zeros, as is everything
    /// in a compressed cluster (QEMU's `zero_l2_subclusters`).
    fn zero_subclusters<B: WriteBackend + ?Sized>(
        &mut self,
        b: &mut B,
        scratch: &mut [u8],
        pos: u64,
        n: u64,
    ) -> Result<()> {
        let g = self.geometry;
        let sc = 1u64 << g.subcluster_bits();
        let ic = g.offset_in_cluster(pos);
        let base = pos - ic;
        let first = ic.div_ceil(sc);
        let last = if pos + n == self.size {
            (ic + n).div_ceil(sc)
        } else {
            (ic + n) / sc
        };
        if first >= last {
            return self.write_cluster(b, scratch, pos, n, &mut ZeroSource);
        }
        self.prepare(b)?;
        let table = self.l2_for_write(b, scratch, pos)?;
        let index = g.l2_index(pos);
        let (raw, bitmap) = self.l2_get(b, table, index)?;
        match decode_l2_entry(&g, raw, bitmap)? {
            L2Entry::Subclusters { alloc, zero, .. } => {
                // last - first < 32 here (a whole cluster takes the other path).
                let mask = (((1u64 << (last - first)) - 1) << first) as u32;
                let new = (u64::from(zero | mask) << 32) | u64::from(alloc & !mask);
                if new != bitmap {
                    self.stats.subcluster_zeroes += 1;
                    self.l2_set(b, table, index, raw, new)?;
                }
            }
            _ => return self.write_cluster(b, scratch, pos, n, &mut ZeroSource),
        }
        let head_end = (first * sc).min(ic + n);
        if head_end > ic {
            self.write_cluster(b, scratch, pos, head_end - ic, &mut ZeroSource)?;
        }
        let tail_start = (last * sc).max(ic);
        if tail_start < ic + n {
            self.write_cluster(
                b,
                scratch,
                base + tail_start,
                ic + n - tail_start,
                &mut ZeroSource,
            )?;
        }
        Ok(())
    }

    /// Zeroes (or discards) the whole cluster at guest `pos`; `zero` is
    /// the entry of an unmapped cluster (`FLAG_ZERO`, or 0 for a version
    /// 2 discard).
    fn zero_cluster<B: WriteBackend + ?Sized>(
        &mut self,
        b: &mut B,
        scratch: &mut [u8],
        pos: u64,
        unmap: bool,
        zero: u64,
    ) -> Result<()> {
        self.prepare(b)?;
        let g = self.geometry;
        let cs = g.cluster_size();
        if self.l2_for_read(b, pos)?.is_none() && !self.has_backing {
            // Unallocated without a backing file: already zeros.
            return Ok(());
        }
        let table = self.l2_for_write(b, scratch, pos)?;
        let index = g.l2_index(pos);
        let (raw, bitmap) = self.l2_get(b, table, index)?;
        let entry = decode_l2_entry(&g, raw, bitmap)?;
        let (unmapped, unmapped_bitmap) = if g.extended_l2() {
            (0, ALL_ZERO_BITMAP)
        } else {
            (zero, 0)
        };
        // (new entry, new bitmap, cluster to release)
        let (new_raw, new_bitmap, release): (u64, u64, Option<(u64, u64)>) = match entry {
            L2Entry::Compressed(d) => (
                unmapped,
                unmapped_bitmap,
                Some((d.host_offset(), d.max_len())),
            ),
            L2Entry::Unallocated => {
                if !self.has_backing {
                    return Ok(());
                }
                (unmapped, unmapped_bitmap, None)
            }
            L2Entry::Zero => {
                let host = raw & OFFSET_MASK;
                if host == 0 || !unmap {
                    return Ok(());
                }
                (unmapped, unmapped_bitmap, Some((host, cs)))
            }
            L2Entry::Data { host_offset } => {
                let rc = self.refcount(b, host_offset)?;
                if rc == 0 {
                    return Err(Error::CorruptRefcount {
                        offset: host_offset,
                    });
                }
                if !unmap && rc == 1 && zero != 0 {
                    (host_offset | FLAG_COPIED | FLAG_ZERO, 0, None)
                } else {
                    (unmapped, unmapped_bitmap, Some((host_offset, cs)))
                }
            }
            L2Entry::Subclusters {
                host_offset,
                alloc,
                zero: z,
            } => match host_offset {
                None => {
                    if z == u32::MAX || (!self.has_backing && alloc == 0) {
                        return Ok(());
                    }
                    (0, ALL_ZERO_BITMAP, None)
                }
                Some(h) => {
                    let rc = self.refcount(b, h)?;
                    if rc == 0 {
                        return Err(Error::CorruptRefcount { offset: h });
                    }
                    if !unmap && rc == 1 {
                        (h | FLAG_COPIED, ALL_ZERO_BITMAP, None)
                    } else {
                        (0, ALL_ZERO_BITMAP, Some((h, cs)))
                    }
                }
            },
        };
        if new_raw != raw || new_bitmap != bitmap {
            self.stats.zeroed_entries += 1;
            self.l2_set(b, table, index, new_raw, new_bitmap)?;
        }
        if let Some((off, len)) = release {
            self.defer_free(off, len)?;
        }
        Ok(())
    }
}

/// The backend's file as a [`Storage`] (for the snapshot table walk).
struct BackendStorage<'a, B: ?Sized>(RefCell<&'a mut B>);

impl<B: WriteBackend + ?Sized> Storage for BackendStorage<'_, B> {
    fn read_at(&self, _layer: usize, buf: &mut [u8], offset: u64) -> Result<()> {
        self.0
            .try_borrow_mut()
            .map_err(|_| Error::Internal)?
            .read_at(buf, offset)
    }
}

/// Read access to the in-memory refcount table (so that lookups can
/// borrow the backend immutably).
trait RefcountTableView {
    fn len(&self) -> u64;
    fn entry(&self, index: u64) -> Result<u64>;
}

struct View<'a, B: ?Sized>(&'a B);

impl<B: WriteBackend + ?Sized> RefcountTableView for View<'_, B> {
    fn len(&self) -> u64 {
        self.0.refcount_table_len()
    }

    fn entry(&self, index: u64) -> Result<u64> {
        self.0.refcount_table_entry(index)
    }
}

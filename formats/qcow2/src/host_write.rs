//! Host-only read-write access (feature `std`): [`WritableImage`] drives
//! the [`WriteEngine`] over a file, with an in-memory L1 and refcount
//! table, a bounded L2/refcount-block cache, the backing chain read with
//! [`Image`], and [`SimFile`], an in-memory file that can lose the writes
//! since its last sync (a simulated power cut) for crash tests.

use std::boxed::Box;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::vec;
use std::vec::Vec;

use crate::format::compressed::max_compressed_len;
use crate::format::header::HEADER_READ_LEN;
use crate::format::write::SliceSource;
use crate::format::{
    Access, CompressedRead, Error, Header, LayerFormat, MappingKind, Qcow2Layer, Result, Storage,
    TableKind, Tables, WriteBackend, WriteEngine,
};
use crate::host::{HostDecompressor, Image};

use libc::EIO;

/// The bytes of a writable image file.
pub trait ImageFile {
    /// Fills `buf` from `offset`; a short read is an error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// Writes `buf` at `offset`, growing the file.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()>;
    /// Makes the writes so far durable.
    fn sync(&mut self) -> Result<()>;
    /// Current length.
    fn len(&self) -> Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

fn io_error(e: &std::io::Error) -> Error {
    Error::Io(e.raw_os_error().filter(|&n| n > 0).unwrap_or(EIO))
}

impl ImageFile for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_exact_at(buf, offset).map_err(|e| io_error(&e))
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        self.write_all_at(buf, offset).map_err(|e| io_error(&e))
    }

    fn sync(&mut self) -> Result<()> {
        self.sync_data().map_err(|e| io_error(&e))
    }

    fn len(&self) -> Result<u64> {
        Ok(self.metadata().map_err(|e| io_error(&e))?.len())
    }
}

/// An in-memory file that keeps what was synced apart from what was only
/// written, and can "lose power" after a given number of writes: from
/// then on every call fails with `EIO`, and [`SimFile::crashed_image`]
/// gives what a disk could hold afterwards.
#[derive(Clone, Debug, Default)]
pub struct SimFile {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<(u64, Vec<u8>)>,
    writes: u64,
    syncs: u64,
    crash_after: Option<u64>,
    crashed: bool,
    fail_write: Option<u64>,
}

impl SimFile {
    /// A file holding `data`, all of it durable.
    pub fn new(data: Vec<u8>) -> SimFile {
        SimFile {
            durable: data.clone(),
            current: data,
            ..SimFile::default()
        }
    }

    /// Loses power right after write number `n` (counted from now, 1 =
    /// the next write).
    pub fn crash_after(&mut self, n: u64) {
        self.crash_after = Some(self.writes + n);
    }

    /// Makes write number `n` (counted from now) fail with `EIO`, once,
    /// without writing anything; the file keeps working after it.
    pub fn fail_write(&mut self, n: u64) {
        self.fail_write = Some(self.writes + n);
    }

    /// Whether the power was lost.
    pub fn crashed(&self) -> bool {
        self.crashed
    }

    /// Number of writes so far.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Number of syncs so far.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// The file as written so far (what the page cache holds).
    pub fn current(&self) -> &[u8] {
        &self.current
    }

    /// What the disk may hold after the power cut: the durable bytes,
    /// plus each write since the last sync with probability 1/2 (in
    /// order), as chosen by `pick`.
    pub fn crashed_image(&self, mut pick: impl FnMut() -> bool) -> Vec<u8> {
        let mut out = self.durable.clone();
        for (off, data) in &self.pending {
            if pick() {
                apply(&mut out, *off, data);
            }
        }
        out
    }

    fn check(&self) -> Result<()> {
        if self.crashed {
            Err(Error::Io(EIO))
        } else {
            Ok(())
        }
    }
}

fn apply(v: &mut Vec<u8>, off: u64, data: &[u8]) {
    let off = off as usize;
    if v.len() < off + data.len() {
        v.resize(off + data.len(), 0);
    }
    v[off..off + data.len()].copy_from_slice(data);
}

impl ImageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check()?;
        let off = usize::try_from(offset).map_err(|_| Error::Io(EIO))?;
        let src = self
            .current
            .get(off..off + buf.len())
            .ok_or(Error::Io(EIO))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        self.check()?;
        if self.fail_write == Some(self.writes + 1) {
            self.fail_write = None;
            self.writes += 1;
            return Err(Error::Io(EIO));
        }
        apply(&mut self.current, offset, buf);
        self.pending.push((offset, buf.to_vec()));
        self.writes += 1;
        if self.crash_after == Some(self.writes) {
            self.crashed = true;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.check()?;
        self.durable = self.current.clone();
        self.pending.clear();
        self.syncs += 1;
        Ok(())
    }

    fn len(&self) -> Result<u64> {
        Ok(self.current.len() as u64)
    }
}

/// The layers below the top image.
enum Backing {
    None,
    Qcow2(Box<Image>),
    Raw(File),
}

struct CacheEntry {
    data: Vec<u8>,
    pinned: bool,
}

/// The [`WriteBackend`] of [`WritableImage`].
pub struct HostBackend<F: ImageFile> {
    file: F,
    cluster_len: usize,
    l1: Vec<u64>,
    rt: Vec<u64>,
    cache: HashMap<(TableKind, u64), CacheEntry>,
    capacity: usize,
    evictions: u64,
    backing: Backing,
    decompressor: HostDecompressor,
}

struct FileAsStorage<'a, F: ImageFile>(&'a F);

impl<F: ImageFile> Storage for FileAsStorage<'_, F> {
    fn read_at(&self, _layer: usize, buf: &mut [u8], offset: u64) -> Result<()> {
        self.0.read_at(buf, offset)
    }
}

/// Reads `buf` at `offset` of `file`, zeros past its end.
fn read_zero_filled<F: ImageFile>(file: &F, buf: &mut [u8], offset: u64) -> Result<()> {
    let len = file.len()?;
    let avail = len.saturating_sub(offset).min(buf.len() as u64) as usize;
    let (head, tail) = buf.split_at_mut(avail);
    tail.fill(0);
    if !head.is_empty() {
        file.read_at(head, offset)?;
    }
    Ok(())
}

fn load_table<F: ImageFile>(file: &F, offset: u64, entries: usize) -> Result<Vec<u64>> {
    let mut raw = vec![0u8; entries * 8];
    read_zero_filled(file, &mut raw, offset)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
        .collect())
}

impl<F: ImageFile> HostBackend<F> {
    fn evict(&mut self) {
        if self.cache.len() < self.capacity {
            return;
        }
        let victim = self.cache.iter().find(|(_, e)| !e.pinned).map(|(k, _)| *k);
        if let Some(k) = victim {
            self.cache.remove(&k);
            self.evictions += 1;
        }
    }

    /// The cache entry of table `kind` at `offset`, read from the file
    /// unless it is cached or `fresh` (a new table: any content).
    fn entry(&mut self, kind: TableKind, offset: u64, fresh: bool) -> Result<&mut CacheEntry> {
        let key = (kind, offset);
        if !self.cache.contains_key(&key) {
            self.evict();
            let mut data = vec![0u8; self.cluster_len];
            if !fresh {
                self.file.read_at(&mut data, offset)?;
            }
            self.cache.insert(
                key,
                CacheEntry {
                    data,
                    pinned: false,
                },
            );
        }
        self.cache.get_mut(&key).ok_or(Error::Internal)
    }
}

impl<F: ImageFile> WriteBackend for HostBackend<F> {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        self.file.write_at(buf, offset)
    }

    fn write_zeroes_at(&mut self, offset: u64, len: u64) -> Result<()> {
        let zeros = vec![0u8; len as usize];
        self.file.write_at(&zeros, offset)
    }

    fn sync(&mut self) -> Result<()> {
        self.file.sync()
    }

    fn read_backing(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match &mut self.backing {
            Backing::None => {
                buf.fill(0);
                Ok(())
            }
            Backing::Qcow2(image) => {
                let avail = image.size().saturating_sub(offset).min(buf.len() as u64) as usize;
                let (head, tail) = buf.split_at_mut(avail);
                tail.fill(0);
                if head.is_empty() {
                    return Ok(());
                }
                image.read_at(head, offset)
            }
            Backing::Raw(file) => read_zero_filled(file, buf, offset),
        }
    }

    fn read_compressed(&mut self, request: &CompressedRead, out: &mut [u8]) -> Result<()> {
        let cluster_bits = request.cluster_size.trailing_zeros();
        let mut input = vec![0u8; max_compressed_len(cluster_bits)];
        request.load(
            &FileAsStorage(&self.file),
            &mut self.decompressor,
            &mut input,
            out,
        )
    }

    fn l1_entry(&self, index: u32) -> Result<u64> {
        self.l1.get(index as usize).copied().ok_or(Error::Internal)
    }

    fn set_l1_entry(&mut self, index: u32, raw: u64) -> Result<()> {
        *self.l1.get_mut(index as usize).ok_or(Error::Internal)? = raw;
        Ok(())
    }

    fn refcount_table_len(&self) -> u64 {
        self.rt.len() as u64
    }

    fn refcount_table_entry(&self, index: u64) -> Result<u64> {
        self.rt.get(index as usize).copied().ok_or(Error::Internal)
    }

    fn set_refcount_table_entry(&mut self, index: u64, raw: u64) -> Result<()> {
        *self.rt.get_mut(index as usize).ok_or(Error::Internal)? = raw;
        Ok(())
    }

    fn resize_refcount_table(&mut self, entries: u64) -> Result<()> {
        let n = usize::try_from(entries).map_err(|_| Error::NoSpace)?;
        if n < self.rt.len() {
            return Err(Error::Internal);
        }
        self.rt.resize(n, 0);
        Ok(())
    }

    fn read_table<R, Fun: FnOnce(&[u8]) -> R>(
        &mut self,
        kind: TableKind,
        offset: u64,
        f: Fun,
    ) -> Result<R> {
        Ok(f(&self.entry(kind, offset, false)?.data))
    }

    fn with_table<R, Fun: FnOnce(&mut [u8]) -> R>(
        &mut self,
        kind: TableKind,
        offset: u64,
        access: Access,
        f: Fun,
    ) -> Result<R> {
        let e = self.entry(kind, offset, access == Access::Fresh)?;
        e.pinned = true;
        Ok(f(&mut e.data))
    }

    fn write_table(&mut self, kind: TableKind, offset: u64) -> Result<()> {
        let e = self.cache.get_mut(&(kind, offset)).ok_or(Error::Internal)?;
        self.file.write_at(&e.data, offset)?;
        e.pinned = false;
        Ok(())
    }
}

/// The read side's view of the top layer's tables: the same L1 and cache
/// the engine changes, so reads see every write, flushed or not.
impl<F: ImageFile> Tables for HostBackend<F> {
    fn l1_entry(&mut self, _layer: usize, index: u32) -> Result<u64> {
        WriteBackend::l1_entry(self, index)
    }

    fn with_l2_table<R, Fun: FnOnce(&[u8]) -> R>(
        &mut self,
        _layer: usize,
        offset: u64,
        f: Fun,
    ) -> Result<R> {
        self.read_table(TableKind::L2, offset, f)
    }
}

/// A qcow2 image opened for writing (the top layer; backing files are only
/// read), over an [`ImageFile`].
pub struct WritableImage<F: ImageFile> {
    header: Header,
    file_len_at_open: u64,
    engine: WriteEngine,
    backend: HostBackend<F>,
    scratch: Vec<u8>,
}

impl WritableImage<File> {
    /// Opens the image at `path` read-write; its backing chain (names
    /// relative to the image's directory) is opened read-only. The table
    /// cache is the smallest the engine allows (68 tables), so that
    /// eviction happens as it would in a driver.
    pub fn open(path: &Path) -> Result<WritableImage<File>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io_error(&e))?;
        Self::with_file(file, Some(path), 0)
    }
}

impl<F: ImageFile> WritableImage<F> {
    /// Opens `file` read-write. `path` locates backing files (relative to
    /// its directory); without it an image with a backing file is
    /// refused. The table cache holds at most `cache_tables` tables (at
    /// least [`crate::format::write::MAX_DIRTY_TABLES`] * 2 + 4).
    pub fn with_file(
        file: F,
        path: Option<&Path>,
        cache_tables: usize,
    ) -> Result<WritableImage<F>> {
        let file_len = file.len()?;
        let mut buf = vec![0u8; file_len.min(HEADER_READ_LEN as u64) as usize];
        file.read_at(&mut buf, 0)?;
        let header = Header::parse(&buf)?;
        let backing = match header.backing_file_name(&buf) {
            None => Backing::None,
            Some(name) => {
                let dir = path
                    .and_then(Path::parent)
                    .ok_or(Error::UnsupportedBackingFormat)?;
                let name = Path::new(std::ffi::OsStr::from_bytes(name));
                let p: PathBuf = if name.is_absolute() {
                    name.to_path_buf()
                } else {
                    dir.join(name)
                };
                let raw = File::open(&p).map_err(|e| io_error(&e))?;
                let mut magic = [0u8; 4];
                let n = if raw.len()? >= 4 { 4 } else { 0 };
                ImageFile::read_at(&raw, &mut magic[..n], 0)?;
                match LayerFormat::detect(header.backing_format_name(&buf), &magic[..n])? {
                    LayerFormat::Qcow2 => Backing::Qcow2(Box::new(Image::open(&p)?)),
                    LayerFormat::Raw => Backing::Raw(raw),
                }
            }
        };
        let cs = header.geometry().cluster_len();
        let l1 = load_table(&file, header.l1_table_offset, header.l1_size as usize)?;
        let rt_entries = header.refcount_table_clusters as usize * (cs / 8);
        let rt = load_table(&file, header.refcount_table_offset, rt_entries)?;
        let has_backing = !matches!(backing, Backing::None);
        let mut backend = HostBackend {
            file,
            cluster_len: cs,
            l1,
            rt,
            cache: HashMap::new(),
            capacity: cache_tables.max(2 * crate::format::write::MAX_DIRTY_TABLES + 4),
            evictions: 0,
            backing,
            decompressor: HostDecompressor::default(),
        };
        let engine = WriteEngine::open(&header, &mut backend, file_len, has_backing)?;
        let image = WritableImage {
            header,
            file_len_at_open: file_len,
            engine,
            backend,
            scratch: vec![0u8; cs],
        };
        Ok(image)
    }

    /// Writes `data` at guest `offset`.
    pub fn write_at(&mut self, data: &[u8], offset: u64) -> Result<()> {
        self.engine.write(
            &mut self.backend,
            &mut self.scratch,
            offset,
            data.len() as u64,
            &mut SliceSource::new(data),
        )
    }

    /// Reads guest bytes at `offset` through the engine's tables (the read
    /// side's `Qcow2Layer::map` over the same L1 and cache), so unflushed
    /// writes are seen, as a driver's reads must see them.
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut layer = Qcow2Layer::new(&self.header, self.file_len_at_open)?;
        layer.grow_file_len(self.engine.file_len());
        let cs = layer.geometry().cluster_len();
        let mut cluster = Vec::new();
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = offset + pos as u64;
            let want = (buf.len() - pos) as u64;
            let m = layer.map(&mut self.backend, 0, at, want)?;
            let n = m.len as usize;
            let out = &mut buf[pos..pos + n];
            match m.kind {
                MappingKind::Unallocated => self.backend.read_backing(at, out)?,
                MappingKind::Zero => out.fill(0),
                MappingKind::Data { host_offset } => self.backend.file.read_at(out, host_offset)?,
                MappingKind::Compressed { descriptor } => {
                    let (host_offset, len) = descriptor.read_range(self.engine.file_len())?;
                    let request = CompressedRead {
                        layer: 0,
                        host_offset,
                        len: len as usize,
                        compression: layer.compression(),
                        cluster_size: cs,
                    };
                    cluster.resize(cs, 0);
                    self.backend.read_compressed(&request, &mut cluster)?;
                    let start = layer.geometry().offset_in_cluster(at) as usize;
                    out.copy_from_slice(&cluster[start..start + n]);
                }
            }
            pos += n;
        }
        Ok(())
    }

    /// Makes `len` bytes at `offset` read as zeros.
    pub fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> Result<()> {
        self.engine
            .write_zeroes(&mut self.backend, &mut self.scratch, offset, len, unmap)
    }

    /// Discards the whole clusters in `len` bytes at `offset`.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        self.engine
            .discard(&mut self.backend, &mut self.scratch, offset, len)
    }

    /// Writes back all metadata in crash-safe order.
    pub fn flush(&mut self) -> Result<()> {
        self.engine.flush(&mut self.backend)
    }

    /// Flushes and clears the lazy-refcounts dirty bit.
    pub fn close(&mut self) -> Result<()> {
        self.engine.close(&mut self.backend)
    }

    /// The engine.
    pub fn engine(&self) -> &WriteEngine {
        &self.engine
    }

    /// How many tables the cache has evicted so far.
    pub fn cache_evictions(&self) -> u64 {
        self.backend.evictions
    }

    /// The file.
    pub fn file(&self) -> &F {
        &self.backend.file
    }

    /// The file, mutably (e.g. to arm a [`SimFile`] crash).
    pub fn file_mut(&mut self) -> &mut F {
        &mut self.backend.file
    }
}

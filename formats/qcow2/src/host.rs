//! Host-only helpers (feature `std`): decompressors over the `flate2` and
//! `zstd` crates, and [`Image`], a file-backed reader that drives the format
//! logic exactly as the kernel module does (same [`Chain::read`] engine),
//! with simple in-memory caches.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::vec;
use std::vec::Vec;

use crate::format::compressed::max_compressed_len;
use crate::format::header::HEADER_READ_LEN;
use crate::format::{
    find_snapshot, Chain, CompressedClusters, CompressedRead, CompressionType, Decompressor, Error,
    ErrorKind, Header, Layer, LayerFormat, Qcow2Layer, Result, SliceSink, SnapshotCursor,
    SnapshotSelector, Storage, Structure, Tables, MAX_CHAIN_DEPTH,
};

use libc::{EFBIG, EINVAL, EIO, ELOOP, ENOENT, EOPNOTSUPP};

fn io_error(e: &std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        return Error::Io(ENOENT);
    }
    Error::Io(e.raw_os_error().filter(|&n| n > 0).unwrap_or(EIO))
}

/// The host's errno for `e` (the numbers of this target's libc).
pub fn errno(e: &Error) -> i32 {
    match e.kind() {
        ErrorKind::Invalid => EINVAL,
        ErrorKind::Unsupported => EOPNOTSUPP,
        ErrorKind::TooLarge => EFBIG,
        ErrorKind::ChainTooDeep => ELOOP,
        ErrorKind::NotFound => ENOENT,
        ErrorKind::Corrupt => EIO,
        ErrorKind::Io(n) => n,
    }
}

/// Decompressor for both compression types, over `flate2` (raw deflate,
/// the `zlib-rs` backend) and `zstd` (streaming, frame must end within one
/// cluster of output). Each context is made on first use and reset for
/// every cluster after that, as the kernel module's workers keep theirs.
#[derive(Default)]
pub struct HostDecompressor {
    inflate: Option<flate2::Decompress>,
    zstd: Option<zstd::stream::raw::Decoder<'static>>,
}

impl HostDecompressor {
    fn inflate(&mut self, input: &[u8], output: &mut [u8]) -> Result<usize> {
        use flate2::{Decompress, FlushDecompress, Status};
        let d = match self.inflate.as_mut() {
            Some(d) => {
                d.reset(false);
                d
            }
            None => self.inflate.insert(Decompress::new(false)),
        };
        loop {
            let in_pos = d.total_in() as usize;
            let out_pos = d.total_out() as usize;
            let (Some(src), Some(dst)) = (input.get(in_pos..), output.get_mut(out_pos..)) else {
                return Err(Error::DecompressionFailed);
            };
            if dst.is_empty() {
                // One full cluster: the remaining input is padding.
                return Ok(out_pos);
            }
            let status = d
                .decompress(src, dst, FlushDecompress::Finish)
                .map_err(|_| Error::DecompressionFailed)?;
            if status == Status::StreamEnd {
                return Ok(d.total_out() as usize);
            }
            if d.total_in() as usize == in_pos && d.total_out() as usize == out_pos {
                // No progress: truncated input.
                return Ok(out_pos);
            }
        }
    }

    fn unzstd(&mut self, input: &[u8], output: &mut [u8]) -> Result<usize> {
        use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
        let dec = match self.zstd.as_mut() {
            // A context left mid-frame by a failed cluster starts over.
            Some(d) => {
                d.reinit().map_err(|_| Error::DecompressionFailed)?;
                d
            }
            None => self
                .zstd
                .insert(Decoder::new().map_err(|_| Error::DecompressionFailed)?),
        };
        let mut src = InBuffer::around(input);
        let mut dst = OutBuffer::around(output);
        loop {
            let (in_pos, out_pos) = (src.pos(), dst.pos());
            let hint = dec
                .run(&mut src, &mut dst)
                .map_err(|_| Error::DecompressionFailed)?;
            if hint == 0 {
                // Frame complete.
                return Ok(dst.pos());
            }
            if src.pos() == in_pos && dst.pos() == out_pos {
                // Stuck: truncated frame or more output than one cluster.
                return Err(Error::DecompressionFailed);
            }
        }
    }
}

impl Decompressor for HostDecompressor {
    fn decompress(
        &mut self,
        kind: CompressionType,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<usize> {
        match kind {
            CompressionType::Deflate => self.inflate(input, output),
            CompressionType::Zstd => self.unzstd(input, output),
        }
    }
}

/// The bytes behind one layer: an open file or an in-memory copy.
pub enum LayerData {
    /// A file, read with `pread`.
    File(File),
    /// Bytes in memory (tests, fuzzing).
    Memory(Vec<u8>),
}

impl LayerData {
    /// Length in bytes.
    pub fn len(&self) -> Result<u64> {
        match self {
            LayerData::File(f) => Ok(f.metadata().map_err(|e| io_error(&e))?.len()),
            LayerData::Memory(v) => Ok(v.len() as u64),
        }
    }

    /// Whether the layer is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Fills `buf` from `offset`; a short read is an error.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        match self {
            LayerData::File(f) => f.read_exact_at(buf, offset).map_err(|e| io_error(&e)),
            LayerData::Memory(v) => {
                let src = usize::try_from(offset)
                    .ok()
                    .and_then(|o| v.get(o..o.checked_add(buf.len())?))
                    .ok_or(Error::Io(EIO))?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }
}

/// One [`LayerData`] per layer of a chain.
pub struct FileStorage {
    layers: Vec<LayerData>,
}

impl FileStorage {
    /// Storage over `layers`, layer `i` being `layers[i]`.
    pub fn new(layers: Vec<LayerData>) -> FileStorage {
        FileStorage { layers }
    }
}

impl Storage for FileStorage {
    fn read_at(&self, layer: usize, buf: &mut [u8], offset: u64) -> Result<()> {
        self.layers
            .get(layer)
            .ok_or(Error::Internal)?
            .read_exact_at(buf, offset)
    }
}

/// L1 tables and an unbounded L2 cache.
struct HostTables<'a> {
    storage: &'a FileStorage,
    l1: &'a [Vec<u64>],
    l2: &'a mut HashMap<(usize, u64), Vec<u8>>,
    cluster_sizes: &'a [usize],
}

impl Tables for HostTables<'_> {
    fn l1_entry(&mut self, layer: usize, index: u32) -> Result<u64> {
        self.l1
            .get(layer)
            .and_then(|t| t.get(index as usize))
            .copied()
            .ok_or(Error::Internal)
    }

    fn with_l2_table<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        layer: usize,
        offset: u64,
        f: F,
    ) -> Result<R> {
        if let Some(t) = self.l2.get(&(layer, offset)) {
            return Ok(f(t));
        }
        let size = *self.cluster_sizes.get(layer).ok_or(Error::Internal)?;
        let mut table = vec![0u8; size];
        self.storage.read_at(layer, &mut table, offset)?;
        let r = f(&table);
        self.l2.insert((layer, offset), table);
        Ok(r)
    }
}

/// One decompressed cluster, keyed by `(layer, host_offset, len)`.
type CachedCluster = Option<((usize, u64, usize), Vec<u8>)>;

/// Single-entry decompressed cluster cache. Only whole clusters are
/// cached (a failed decompression caches nothing), so every read of a
/// cluster succeeds or fails alike.
struct HostCompressed<'a> {
    storage: &'a FileStorage,
    decompressor: &'a mut HostDecompressor,
    cache: &'a mut CachedCluster,
}

impl CompressedClusters for HostCompressed<'_> {
    fn with_cluster<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        request: &CompressedRead,
        f: F,
    ) -> Result<R> {
        let key = (request.layer, request.host_offset, request.len);
        if let Some((k, data)) = self.cache.as_ref() {
            if *k == key {
                return Ok(f(data));
            }
        }
        let cluster_bits = request.cluster_size.trailing_zeros();
        let mut input = vec![0u8; max_compressed_len(cluster_bits)];
        let mut output = vec![0u8; request.cluster_size];
        request.load(self.storage, self.decompressor, &mut input, &mut output)?;
        let r = f(&output);
        *self.cache = Some((key, output));
        Ok(r)
    }
}

/// A qcow2 image (with its backing chain) opened from the host file system.
pub struct Image {
    storage: FileStorage,
    chain: Chain,
    headers: Vec<Option<(Header, Vec<u8>)>>,
    l1: Vec<Vec<u64>>,
    cluster_sizes: Vec<usize>,
    l2: HashMap<(usize, u64), Vec<u8>>,
    compressed: CachedCluster,
    decompressor: HostDecompressor,
}

fn read_prefix(data: &LayerData, file_len: u64) -> Result<Vec<u8>> {
    let len = file_len.min(HEADER_READ_LEN as u64) as usize;
    let mut buf = vec![0u8; len];
    data.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

fn load_l1(data: &LayerData, q: &Qcow2Layer) -> Result<Vec<u64>> {
    let mut raw = vec![0u8; q.l1_table_bytes()];
    data.read_exact_at(&mut raw, q.l1_table_offset())?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
        .collect())
}

impl Image {
    /// Opens the image at `path` and its backing chain (backing file names
    /// relative to the directory of the image naming them, as QEMU does).
    pub fn open(path: &Path) -> Result<Image> {
        Self::open_path(path, None)
    }

    /// Like [`Image::open`], but reads the internal snapshot selected by
    /// `snapshot` of the top image instead of its active state.
    pub fn open_snapshot(path: &Path, snapshot: SnapshotSelector<'_>) -> Result<Image> {
        Self::open_path(path, Some(snapshot))
    }

    fn open_path(path: &Path, snapshot: Option<SnapshotSelector<'_>>) -> Result<Image> {
        let open = |p: &Path| -> Result<LayerData> {
            Ok(LayerData::File(File::open(p).map_err(|e| io_error(&e))?))
        };
        let mut current: PathBuf = path.to_path_buf();
        Self::build(open(path)?, snapshot, |name| {
            let name = Path::new(std::ffi::OsStr::from_bytes(name));
            let next = if name.is_absolute() {
                name.to_path_buf()
            } else {
                current
                    .parent()
                    .unwrap_or_else(|| Path::new("."))
                    .join(name)
            };
            let data = open(&next)?;
            current = next;
            Ok(data)
        })
    }

    /// Opens an in-memory image: `layers[0]` is the top qcow2 image, the
    /// following entries are its backing files in chain order (used when
    /// the image above names a backing file, whatever the name). For tests
    /// and fuzzing.
    pub fn from_memory(
        layers: Vec<Vec<u8>>,
        snapshot: Option<SnapshotSelector<'_>>,
    ) -> Result<Image> {
        let mut iter = layers.into_iter().map(LayerData::Memory);
        let top = iter.next().ok_or(Error::Io(ENOENT))?;
        Self::build(top, snapshot, |_| iter.next().ok_or(Error::Io(ENOENT)))
    }

    /// Builds the chain from `top`, asking `backing` for the data of each
    /// backing file by name.
    fn build(
        top: LayerData,
        snapshot: Option<SnapshotSelector<'_>>,
        mut backing: impl FnMut(&[u8]) -> Result<LayerData>,
    ) -> Result<Image> {
        let mut datas: Vec<LayerData> = Vec::new();
        let mut layers = Vec::new();
        let mut headers = Vec::new();
        let mut next = Some((top, LayerFormat::Qcow2));
        while let Some((data, format)) = next.take() {
            if layers.len() >= MAX_CHAIN_DEPTH {
                return Err(Error::ChainTooDeep);
            }
            let file_len = data.len()?;
            if format == LayerFormat::Raw {
                layers.push(Layer::Raw { len: file_len });
                headers.push(None);
                datas.push(data);
                break;
            }
            let buf = read_prefix(&data, file_len)?;
            let header = Header::parse(&buf)?;
            let q = match snapshot {
                Some(sel) if layers.is_empty() => {
                    let probe = FileStorage::new(vec![data]);
                    let snap = find_snapshot(&probe, 0, &header, file_len, sel)?;
                    let q = Qcow2Layer::from_snapshot(&header, &snap, file_len)?;
                    let mut back = probe.layers;
                    datas.push(back.pop().ok_or(Error::Internal)?);
                    q
                }
                _ => {
                    let q = Qcow2Layer::new(&header, file_len)?;
                    datas.push(data);
                    q
                }
            };
            layers.push(Layer::Qcow2(q));
            if let Some(name) = header.backing_file_name(&buf) {
                let data = backing(name)?;
                let mut magic = [0u8; 4];
                let n = if data.len()? >= 4 { 4 } else { 0 };
                data.read_exact_at(&mut magic[..n], 0)?;
                let format = LayerFormat::detect(header.backing_format_name(&buf), &magic[..n])?;
                next = Some((data, format));
            }
            headers.push(Some((header, buf)));
        }
        let mut iter = layers.iter();
        let mut chain = Chain::new(*iter.next().ok_or(Error::Internal)?);
        for layer in iter {
            chain.push_backing(*layer)?;
        }
        let mut l1 = Vec::new();
        let mut cluster_sizes = Vec::new();
        for (layer, data) in layers.iter().zip(datas.iter()) {
            match layer {
                Layer::Qcow2(q) => {
                    l1.push(load_l1(data, q)?);
                    cluster_sizes.push(q.geometry().cluster_len());
                }
                Layer::Raw { .. } => {
                    l1.push(Vec::new());
                    cluster_sizes.push(0);
                }
            }
        }
        Ok(Image {
            storage: FileStorage::new(datas),
            chain,
            headers,
            l1,
            cluster_sizes,
            l2: HashMap::new(),
            compressed: None,
            decompressor: HostDecompressor::default(),
        })
    }

    /// Virtual disk size in bytes.
    pub fn size(&self) -> u64 {
        self.chain.virtual_size()
    }

    /// The layer chain.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Header of qcow2 layer `layer` (0 = top), `None` for raw layers.
    pub fn header(&self, layer: usize) -> Option<&Header> {
        self.headers
            .get(layer)
            .and_then(|h| h.as_ref())
            .map(|(h, _)| h)
    }

    /// Names (`id`, `name`) of the top image's internal snapshots.
    pub fn snapshots(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let header = self.header(0).ok_or(Error::Internal)?;
        let mut cursor = SnapshotCursor::new(header, self.chain.top().file_len());
        let mut out = Vec::new();
        while let Some(s) = cursor.next_snapshot(&self.storage, 0)? {
            let mut id = vec![0u8; usize::from(s.id.len)];
            self.storage.read_at(0, &mut id, s.id.offset)?;
            let mut name = vec![0u8; usize::from(s.name.len)];
            self.storage.read_at(0, &mut name, s.name.offset)?;
            out.push((id, name));
        }
        Ok(out)
    }

    /// Reads `buf.len()` bytes of the virtual disk at `offset`.
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        let len = buf.len();
        let mut tables = HostTables {
            storage: &self.storage,
            l1: &self.l1,
            l2: &mut self.l2,
            cluster_sizes: &self.cluster_sizes,
        };
        let mut compressed = HostCompressed {
            storage: &self.storage,
            decompressor: &mut self.decompressor,
            cache: &mut self.compressed,
        };
        let storage = &self.storage;
        let mut sink = SliceSink::new(buf, |layer, into: &mut [u8], offset| {
            storage.read_at(layer, into, offset)
        });
        self.chain
            .read(&mut tables, &mut compressed, offset, len, &mut sink)?;
        if sink.filled() != len {
            return Err(Error::BufferSize {
                what: Structure::Guest,
                expected: len as u64,
                got: sink.filled() as u64,
            });
        }
        Ok(())
    }

    /// The block status at `offset` for at most `max_len` bytes
    /// ([`Chain::status`]), as the kernel module's `LFF_GET_MAP` sees it.
    pub fn status(&mut self, offset: u64, max_len: u64) -> Result<crate::format::Status> {
        let mut tables = HostTables {
            storage: &self.storage,
            l1: &self.l1,
            l2: &mut self.l2,
            cluster_sizes: &self.cluster_sizes,
        };
        self.chain.status(&mut tables, offset, max_len)
    }

    /// Reads the whole virtual disk.
    pub fn read_all(&mut self) -> Result<Vec<u8>> {
        let size =
            usize::try_from(self.size()).map_err(|_| Error::VirtualSizeTooLarge(self.size()))?;
        let mut out = vec![0u8; size];
        let mut pos = 0usize;
        // Reads in 1 MiB requests, as a block device would.
        while pos < size {
            let n = (size - pos).min(1 << 20);
            let chunk = out.get_mut(pos..pos + n).ok_or(Error::Internal)?;
            self.read_at(chunk, pos as u64)?;
            pos += n;
        }
        Ok(out)
    }
}

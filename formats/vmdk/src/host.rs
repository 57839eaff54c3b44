//! Host-only helpers (feature `std`): a zlib decompressor over `flate2`,
//! and [`Image`], a file-backed reader that drives the format logic
//! exactly as a kernel module would (same [`Disk::read`] engine), with
//! simple in-memory caches.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::vec;
use std::vec::Vec;

use crate::format::descriptor::MAX_DESCRIPTOR_LEN;
use crate::format::grain::max_compressed_len;
use crate::format::header::{classify, FileKind, HEADER_LEN};
use crate::format::{
    read_sparse_header, CompressedGrains, Decompressor, Descriptor, Directory, Disk, Error,
    ErrorKind, Extent, ExtentKind, ExtentType, GrainRead, Result, Sink, SparseExtent, SparseHeader,
    Storage, Structure, Tables,
};

use libc::{EFBIG, EINVAL, EIO, ENOENT, EOPNOTSUPP};

fn io_error(e: &std::io::Error) -> Error {
    Error::Io(format_host::io_errno(e))
}

/// The host's errno for `e` (the numbers of this target's libc).
pub fn errno(e: &Error) -> i32 {
    match e.kind() {
        ErrorKind::Invalid => EINVAL,
        ErrorKind::Unsupported => EOPNOTSUPP,
        ErrorKind::TooLarge => EFBIG,
        ErrorKind::Corrupt => EIO,
        ErrorKind::Io(n) => n,
    }
}

/// zlib decompressor over `flate2`, to the [`Decompressor`] contract: the
/// whole stream, checksum included, must fit in the output.
#[derive(Default)]
pub struct HostDecompressor;

impl Decompressor for HostDecompressor {
    fn inflate(&mut self, input: &[u8], output: &mut [u8]) -> Result<usize> {
        use flate2::{Decompress, FlushDecompress, Status};
        let mut d = Decompress::new(true);
        loop {
            let in_pos = d.total_in() as usize;
            let out_pos = d.total_out() as usize;
            let (Some(src), Some(dst)) = (input.get(in_pos..), output.get_mut(out_pos..)) else {
                return Err(Error::DecompressionFailed);
            };
            let status = d
                .decompress(src, dst, FlushDecompress::None)
                .map_err(|_| Error::DecompressionFailed)?;
            if status == Status::StreamEnd {
                return Ok(d.total_out() as usize);
            }
            if d.total_in() as usize == in_pos && d.total_out() as usize == out_pos {
                // No progress: the stream is truncated, or longer than
                // the output.
                return Err(Error::DecompressionFailed);
            }
        }
    }
}

/// The bytes behind one extent: an open file or an in-memory copy
/// (errors are errnos; [`Error::Io`] carries them).
pub use format_host::FileData;

/// One optional [`FileData`] per extent (`None` for `ZERO` extents).
pub struct FileStorage {
    files: Vec<Option<FileData>>,
}

impl FileStorage {
    /// Storage over `files`, extent `i` being `files[i]`.
    pub fn new(files: Vec<Option<FileData>>) -> FileStorage {
        FileStorage { files }
    }
}

impl Storage for FileStorage {
    fn read_at(&self, extent: usize, buf: &mut [u8], offset: u64) -> Result<()> {
        self.files
            .get(extent)
            .and_then(Option::as_ref)
            .ok_or(Error::Internal)?
            .read_exact_at(buf, offset)
            .map_err(Error::Io)
    }
}

/// A storage of one file, for reading a header before the disk exists.
struct One<'a>(&'a FileData);

impl Storage for One<'_> {
    fn read_at(&self, _extent: usize, buf: &mut [u8], offset: u64) -> Result<()> {
        self.0.read_exact_at(buf, offset).map_err(Error::Io)
    }
}

/// Grain directories and an unbounded grain table cache.
struct HostTables<'a> {
    storage: &'a FileStorage,
    gd: &'a [Vec<u32>],
    gt_lens: &'a [usize],
    gt: &'a mut HashMap<(usize, u64), Vec<u8>>,
}

impl Tables for HostTables<'_> {
    fn gd_entry(&mut self, extent: usize, index: u32) -> Result<u32> {
        self.gd
            .get(extent)
            .and_then(|t| t.get(index as usize))
            .copied()
            .ok_or(Error::Internal)
    }

    fn with_grain_table<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        extent: usize,
        offset: u64,
        f: F,
    ) -> Result<R> {
        if let Some(t) = self.gt.get(&(extent, offset)) {
            return Ok(f(t));
        }
        let len = *self.gt_lens.get(extent).ok_or(Error::Internal)?;
        let mut table = vec![0u8; len];
        self.storage.read_at(extent, &mut table, offset)?;
        let r = f(&table);
        self.gt.insert((extent, offset), table);
        Ok(r)
    }
}

/// One decompressed grain, keyed by `(extent, grain_offset, needed)`.
type CachedGrain = Option<((usize, u64, usize), Vec<u8>)>;

/// Single-entry decompressed grain cache (only whole grains are cached).
struct HostGrains<'a> {
    storage: &'a FileStorage,
    decompressor: &'a mut HostDecompressor,
    cache: &'a mut CachedGrain,
}

impl CompressedGrains for HostGrains<'_> {
    fn with_grain<R, F: FnOnce(&[u8]) -> R>(&mut self, request: &GrainRead, f: F) -> Result<R> {
        let key = (request.extent, request.grain_offset, request.needed);
        if let Some((k, data)) = self.cache.as_ref() {
            if *k == key {
                return Ok(f(data));
            }
        }
        let mut input = vec![0u8; max_compressed_len(request.grain_len)];
        let mut output = vec![0u8; request.grain_len];
        request.load(self.storage, self.decompressor, &mut input, &mut output)?;
        let r = f(&output);
        *self.cache = Some((key, output));
        Ok(r)
    }
}

/// Sink writing into a byte slice.
struct SliceSink<'a> {
    storage: &'a FileStorage,
    out: format_host::OutBuf<'a>,
}

impl SliceSink<'_> {
    fn next(&mut self, len: usize) -> Result<&mut [u8]> {
        self.out.next(len).ok_or(Error::Internal)
    }
}

impl Sink for SliceSink<'_> {
    fn fill_zero(&mut self, len: usize) -> Result<()> {
        self.next(len)?.fill(0);
        Ok(())
    }

    fn copy_from(&mut self, data: &[u8]) -> Result<()> {
        self.next(data.len())?.copy_from_slice(data);
        Ok(())
    }

    fn read_from_storage(&mut self, extent: usize, offset: u64, len: usize) -> Result<()> {
        let storage = self.storage;
        storage.read_at(extent, self.next(len)?, offset)
    }
}

/// Opens the sparse extent in `data` (header, footer, geometry).
fn open_sparse(data: &FileData) -> Result<(SparseHeader, SparseExtent)> {
    let file_len = data.len().map_err(Error::Io)?;
    let header = read_sparse_header(&One(data), 0, file_len)?;
    Ok((header, SparseExtent::new(&header, file_len)?))
}

/// Loads the grain directory in use of `s`.
fn load_gd(data: &FileData, s: &SparseExtent) -> Result<Vec<u32>> {
    let mut raw = vec![0u8; s.gd_len()];
    data.read_exact_at(&mut raw, s.gd_offset())
        .map_err(Error::Io)?;
    Ok(raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// A VMDK image opened from the host file system (or memory).
pub struct Image {
    storage: FileStorage,
    disk: Disk,
    descriptor: Option<(Descriptor, Vec<u8>)>,
    gd: Vec<Vec<u32>>,
    gt_lens: Vec<usize>,
    gt: HashMap<(usize, u64), Vec<u8>>,
    grain: CachedGrain,
    decompressor: HostDecompressor,
}

impl Image {
    /// Opens the image at `path`: a monolithic sparse file, or a
    /// descriptor file whose extents are named relative to its directory
    /// (absolute names as they are: this is a test reader, it trusts its
    /// images' names).
    pub fn open(path: &Path) -> Result<Image> {
        let open = |p: &Path| -> Result<FileData> {
            Ok(FileData::File(File::open(p).map_err(|e| io_error(&e))?))
        };
        let dir: PathBuf = path.parent().unwrap_or_else(|| Path::new(".")).into();
        Self::build(open(path)?, |name| {
            let name = Path::new(std::ffi::OsStr::from_bytes(name));
            open(&dir.join(name))
        })
    }

    /// Opens an in-memory image: `files[0]` is the image (sparse file or
    /// descriptor), the following entries the extent files of a
    /// descriptor in order (`ZERO` extents take none), whatever the names.
    /// For tests and fuzzing.
    pub fn from_memory(files: Vec<Vec<u8>>) -> Result<Image> {
        let mut iter = files.into_iter().map(FileData::Memory);
        let top = iter.next().ok_or(Error::Io(ENOENT))?;
        Self::build(top, |_| iter.next().ok_or(Error::Io(ENOENT)))
    }

    fn build(top: FileData, mut open: impl FnMut(&[u8]) -> Result<FileData>) -> Result<Image> {
        let len = top.len().map_err(Error::Io)?;
        let mut first = vec![0u8; len.min(HEADER_LEN as u64) as usize];
        top.read_exact_at(&mut first, 0).map_err(Error::Io)?;
        let mut disk = Disk::new();
        let mut files = Vec::new();
        let descriptor;
        if classify(&first)? == FileKind::Sparse {
            let (header, sparse) = open_sparse(&top)?;
            descriptor = match header.descriptor_range(len)? {
                Some((offset, n)) => {
                    let mut text = vec![0u8; n];
                    top.read_exact_at(&mut text, offset).map_err(Error::Io)?;
                    if text.first().is_some_and(|&b| b != 0) {
                        let d = Descriptor::parse(&text)?;
                        d.check_embedded()?;
                        Some((d, text))
                    } else {
                        None
                    }
                }
                None => None,
            };
            disk.push(Extent::sparse(sparse, None)?)?;
            files.push(Some(top));
        } else {
            if len > MAX_DESCRIPTOR_LEN as u64 {
                // Neither a sparse extent nor a descriptor.
                let mut magic = [0u8; 4];
                magic.iter_mut().zip(&first).for_each(|(m, f)| *m = *f);
                return Err(Error::BadMagic(u32::from_le_bytes(magic)));
            }
            let mut text = vec![0u8; len as usize];
            top.read_exact_at(&mut text, 0).map_err(Error::Io)?;
            let d = Descriptor::parse(&text)?;
            d.check_file(&text)?;
            for line in d.extents() {
                let name = line.name.and_then(|s| s.get(&text));
                let (extent, data) = match (line.kind, name) {
                    (ExtentType::Zero, _) => (Extent::zero(line.sectors)?, None),
                    (ExtentType::Sparse, Some(name)) => {
                        let data = open(name)?;
                        let (_, sparse) = open_sparse(&data)?;
                        (Extent::sparse(sparse, Some(line.sectors))?, Some(data))
                    }
                    (ExtentType::Flat { offset }, Some(name)) => {
                        let data = open(name)?;
                        (
                            Extent::flat(line.sectors, offset, data.len().map_err(Error::Io)?)?,
                            Some(data),
                        )
                    }
                    _ => return Err(Error::Internal),
                };
                disk.push(extent)?;
                files.push(data);
            }
            descriptor = Some((d, text));
        }
        let mut gd = Vec::new();
        let mut gt_lens = Vec::new();
        for (i, file) in files.iter().enumerate() {
            let extent = disk.extent(i).ok_or(Error::Internal)?;
            match (extent.kind(), file) {
                (ExtentKind::Sparse(s), Some(data)) => {
                    gd.push(load_gd(data, s)?);
                    gt_lens.push(s.grain_table_len());
                }
                _ => {
                    gd.push(Vec::new());
                    gt_lens.push(0);
                }
            }
        }
        Ok(Image {
            storage: FileStorage::new(files),
            disk,
            descriptor,
            gd,
            gt_lens,
            gt: HashMap::new(),
            grain: None,
            decompressor: HostDecompressor,
        })
    }

    /// Virtual disk size in bytes.
    pub fn size(&self) -> u64 {
        self.disk.size()
    }

    /// Serves reads of every sparse extent from `directory` (reloading
    /// the grain directories and dropping the caches).
    pub fn use_directory(&mut self, directory: Directory) -> Result<()> {
        for i in 0..self.disk.len() {
            let extent = self.disk.extent_mut(i).ok_or(Error::Internal)?;
            let Some(s) = extent.sparse_mut() else {
                continue;
            };
            s.use_directory(directory)?;
            let s = *s;
            let data = self
                .storage
                .files
                .get(i)
                .and_then(Option::as_ref)
                .ok_or(Error::Internal)?;
            *self.gd.get_mut(i).ok_or(Error::Internal)? = load_gd(data, &s)?;
        }
        self.gt.clear();
        self.grain = None;
        Ok(())
    }

    /// The extents.
    pub fn disk(&self) -> &Disk {
        &self.disk
    }

    /// The descriptor (embedded or the descriptor file) and its text.
    pub fn descriptor(&self) -> Option<(&Descriptor, &[u8])> {
        self.descriptor.as_ref().map(|(d, t)| (d, t.as_slice()))
    }

    /// Reads `buf.len()` bytes of the virtual disk at `offset`.
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        let len = buf.len();
        let mut tables = HostTables {
            storage: &self.storage,
            gd: &self.gd,
            gt_lens: &self.gt_lens,
            gt: &mut self.gt,
        };
        let mut grains = HostGrains {
            storage: &self.storage,
            decompressor: &mut self.decompressor,
            cache: &mut self.grain,
        };
        let mut sink = SliceSink {
            storage: &self.storage,
            out: format_host::OutBuf::new(buf),
        };
        self.disk
            .read(&mut tables, &mut grains, offset, len, &mut sink)?;
        if sink.out.pos() != len {
            return Err(Error::BufferSize {
                what: Structure::Guest,
                expected: len as u64,
                got: sink.out.pos() as u64,
            });
        }
        Ok(())
    }

    /// Reads the whole virtual disk, in 1 MiB requests.
    pub fn read_all(&mut self) -> Result<Vec<u8>> {
        let size = usize::try_from(self.size()).map_err(|_| Error::DiskTooLarge)?;
        let mut out = vec![0u8; size];
        let mut pos = 0usize;
        while pos < size {
            let n = (size - pos).min(1 << 20);
            let chunk = out.get_mut(pos..pos + n).ok_or(Error::Internal)?;
            self.read_at(chunk, pos as u64)?;
            pos += n;
        }
        Ok(out)
    }
}

//! Host-only helpers (feature `std`): [`Image`], a file-backed (or
//! in-memory) reader that drives the format logic exactly as a kernel
//! module would (same [`Vdi::read`] engine).

use std::fs::File;
use std::path::Path;
use std::vec;
use std::vec::Vec;

use crate::format::header::HEADER_LEN;
use crate::format::{BlockMap, Error, ErrorKind, Header, Result, Sink, Vdi};

use libc::{EFBIG, EINVAL, EIO, EOPNOTSUPP};

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

/// The image file: open, or in memory.
use format_host::FileData as Data;

/// The block map, loaded whole at open.
struct Map<'a>(&'a [u32]);

impl BlockMap for Map<'_> {
    fn entry(&mut self, index: u32) -> Result<u32> {
        self.0.get(index as usize).copied().ok_or(Error::Internal)
    }
}

/// Sink writing into a byte slice.
struct SliceSink<'a> {
    data: &'a Data,
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

    fn read_from_storage(&mut self, offset: u64, len: usize) -> Result<()> {
        let data = self.data;
        data.read_exact_at(self.next(len)?, offset)
            .map_err(Error::Io)
    }
}

/// A VDI image opened from the host file system (or memory).
pub struct Image {
    data: Data,
    header: Header,
    vdi: Vdi,
    map: Vec<u32>,
}

impl Image {
    /// Opens the image at `path`.
    pub fn open(path: &Path) -> Result<Image> {
        let file = File::open(path).map_err(|e| Error::Io(format_host::io_errno(&e)))?;
        let len = file.metadata().map_err(|_| Error::Io(EIO))?.len();
        Self::build(Data::File(file), len)
    }

    /// Opens an image held in memory (tests, fuzzing).
    pub fn from_memory(bytes: Vec<u8>) -> Result<Image> {
        let len = bytes.len() as u64;
        Self::build(Data::Memory(bytes), len)
    }

    fn build(data: Data, file_len: u64) -> Result<Image> {
        let mut first = vec![0u8; file_len.min(HEADER_LEN as u64) as usize];
        data.read_exact_at(&mut first, 0).map_err(Error::Io)?;
        let header = Header::parse(&first, file_len)?;
        let mut raw = vec![0u8; header.bmap_len()];
        data.read_exact_at(&mut raw, header.bmap_offset())
            .map_err(Error::Io)?;
        let map = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Image {
            data,
            header,
            vdi: Vdi::new(&header, file_len),
            map,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The raw block map entries.
    pub fn block_map(&self) -> &[u32] {
        &self.map
    }

    /// Virtual disk size in bytes.
    pub fn size(&self) -> u64 {
        self.vdi.size()
    }

    /// Reads `buf.len()` bytes of the virtual disk at `offset`.
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        let len = buf.len();
        let mut sink = SliceSink {
            data: &self.data,
            out: format_host::OutBuf::new(buf),
        };
        self.vdi.read(&mut Map(&self.map), offset, len, &mut sink)?;
        if sink.out.pos() != len {
            return Err(Error::Internal);
        }
        Ok(())
    }

    /// Reads the whole virtual disk, in 1 MiB requests.
    pub fn read_all(&mut self) -> Result<Vec<u8>> {
        let size = usize::try_from(self.size()).map_err(|_| Error::Internal)?;
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

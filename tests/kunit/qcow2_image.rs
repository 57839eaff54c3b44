// SPDX-License-Identifier: GPL-2.0

//! Test fixtures of the qcow2 suites: headers built in buffers and a small
//! in-memory image that implements every trait of the read engine.

use crate::kunit::Test;
use crate::qcow2fmt::compressed::max_compressed_len;
use crate::qcow2fmt::{
    Chain, CompressedClusters, CompressedDescriptor, CompressedRead, CompressionType, Decompressor,
    Error, Header, Layer, Qcow2Layer, Result, Sink, Storage, Tables,
};
use kernel::prelude::*;

const ENOMEM: i32 = 12;

/// A zeroed buffer of `len` bytes.
pub(crate) fn zeroed(t: &Test, len: usize) -> Option<KVec<u8>> {
    t.ok(KVec::from_elem(0u8, len, GFP_KERNEL))
}

/// `len` bytes of a pattern that differs from its neighbours.
pub(crate) fn pattern(t: &Test, len: usize) -> Option<KVec<u8>> {
    let mut v = zeroed(t, len)?;
    for (i, b) in v.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    Some(v)
}

/// Whether every byte of `buf[range]` is `value` (false if out of range).
pub(crate) fn all(buf: &[u8], range: core::ops::Range<usize>, value: u8) -> bool {
    buf.get(range)
        .is_some_and(|b| b.iter().all(|&x| x == value))
}

/// Stores big-endian `v` at `off` (ignored if out of range).
pub(crate) fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    if let Some(d) = buf.get_mut(off..off + 8) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

/// Stores big-endian `v` at `off` (ignored if out of range).
pub(crate) fn set_u32(buf: &mut [u8], off: usize, v: u32) {
    if let Some(d) = buf.get_mut(off..off + 4) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

/// Writes a header extension at `off`; returns the next extension offset.
pub(crate) fn add_ext(h: &mut [u8], off: usize, kind: u32, data: &[u8]) -> usize {
    set_u32(h, off, kind);
    set_u32(h, off + 4, data.len() as u32);
    if let Some(d) = h.get_mut(off + 8..off + 8 + data.len()) {
        d.copy_from_slice(data);
    }
    off + 8 + data.len().div_ceil(8) * 8
}

/// A valid v3 header in a buffer of `len` bytes: 64 KiB clusters, 1 GiB,
/// two L1 entries at 0x30000, refcount table at 0x10000, 112-byte header.
pub(crate) fn v3_header(t: &Test, len: usize) -> Option<KVec<u8>> {
    let mut h = zeroed(t, len)?;
    if let Some(m) = h.get_mut(0..4) {
        m.copy_from_slice(b"QFI\xfb");
    }
    set_u32(&mut h, 4, 3);
    set_u32(&mut h, 20, 16);
    put_u64(&mut h, 24, 1 << 30);
    set_u32(&mut h, 36, 2);
    put_u64(&mut h, 40, 0x30000);
    put_u64(&mut h, 48, 0x10000);
    set_u32(&mut h, 56, 1);
    set_u32(&mut h, 96, 4);
    set_u32(&mut h, 100, 112);
    Some(h)
}

/// A 512-byte-cluster image in a 4 KiB file: header at 0, L1 at 512, L2 at
/// 1024, guest cluster 0 data at 1536 (0x11), cluster 1 zero, cluster 2
/// unallocated, cluster 3 "compressed" (stored verbatim, 0x33, 512 bytes
/// at 2348, crossing a host cluster boundary), cluster 4 data at `data4`.
/// Layer 1, if set, is a raw `base`.
pub(crate) struct MemImage {
    /// The image file (its first `file_len` bytes are visible).
    pub(crate) top: KVec<u8>,
    /// Length of the image file.
    pub(crate) file_len: u64,
    /// The single L1 entry.
    pub(crate) l1: u64,
    /// A raw backing layer.
    pub(crate) base: Option<KVec<u8>>,
    /// The parsed header.
    pub(crate) header: Header,
}

impl MemImage {
    pub(crate) fn new(t: &Test, size: u64, data4: u64) -> Option<Self> {
        let mut file = zeroed(t, 4096)?;
        let mut h = v3_header(t, 512)?;
        set_u32(&mut h, 20, 9);
        put_u64(&mut h, 24, size);
        set_u32(&mut h, 36, 1);
        put_u64(&mut h, 40, 512);
        put_u64(&mut h, 48, 0);
        set_u32(&mut h, 56, 0);
        file.get_mut(..h.len())?.copy_from_slice(&h);
        let l1 = 1024 | (1 << 63);
        put_u64(&mut file, 512, l1);
        put_u64(&mut file, 1024, 1536 | (1 << 63));
        put_u64(&mut file, 1032, 1);
        put_u64(&mut file, 1040, 0);
        let desc = CompressedDescriptor::encode(9, 2048 + 300, 1)?;
        put_u64(&mut file, 1048, desc | (1 << 62));
        put_u64(&mut file, 1056, data4);
        file.get_mut(1536..2048)?.fill(0x11);
        file.get_mut(2348..2860)?.fill(0x33);
        let header = t.ok(Header::parse(file.get(..512)?))?;
        Some(Self {
            top: file,
            file_len: 4096,
            l1,
            base: None,
            header,
        })
    }

    /// Sets L2 entry `index` (guest cluster `index`).
    pub(crate) fn set_l2(&mut self, index: usize, raw: u64) {
        put_u64(&mut self.top, 1024 + index * 8, raw);
    }

    /// A chain of the image alone.
    pub(crate) fn top_chain(&self, t: &Test) -> Option<Chain> {
        let top = t.ok(Qcow2Layer::new(&self.header, self.file_len))?;
        Some(Chain::new(Layer::Qcow2(top)))
    }

    fn file(&self, layer: usize) -> Option<&[u8]> {
        match layer {
            0 => self.top.get(..usize::try_from(self.file_len).ok()?),
            1 => self.base.as_deref(),
            _ => None,
        }
    }

    /// Reads through the engine into `sink`.
    pub(crate) fn read_into<K: Sink>(
        &self,
        chain: &Chain,
        off: u64,
        len: usize,
        sink: &mut K,
    ) -> Result<()> {
        chain.read(&mut MemTables(self), &mut MemClusters(self), off, len, sink)
    }

    /// Reads `len` bytes at `off` of the virtual disk.
    pub(crate) fn try_read(&self, chain: &Chain, off: u64, len: usize) -> Result<KVec<u8>> {
        let mut sink = VecSink {
            img: self,
            out: KVec::new(),
        };
        self.read_into(chain, off, len, &mut sink)?;
        Ok(sink.out)
    }

    /// [`MemImage::try_read`], reporting errors and checking the length.
    pub(crate) fn read(&self, t: &Test, chain: &Chain, off: u64, len: usize) -> Option<KVec<u8>> {
        let out = t.ok(self.try_read(chain, off, len))?;
        check_eq!(t, out.len(), len).then_some(out)
    }
}

impl Storage for MemImage {
    fn read_at(&self, layer: usize, buf: &mut [u8], offset: u64) -> Result<()> {
        let start = usize::try_from(offset).map_err(|_| Error::Io(5))?;
        let src = self
            .file(layer)
            .and_then(|f| f.get(start..start.checked_add(buf.len())?));
        buf.copy_from_slice(src.ok_or(Error::Io(5))?);
        Ok(())
    }
}

struct MemTables<'a>(&'a MemImage);

impl Tables for MemTables<'_> {
    fn l1_entry(&mut self, layer: usize, index: u32) -> Result<u64> {
        match (layer, index) {
            (0, 0) => Ok(self.0.l1),
            _ => Err(Error::Internal),
        }
    }

    fn with_l2_table<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        layer: usize,
        offset: u64,
        f: F,
    ) -> Result<R> {
        let start = usize::try_from(offset).map_err(|_| Error::Internal)?;
        let table = self.0.file(layer).and_then(|f| f.get(start..start + 512));
        Ok(f(table.ok_or(Error::Internal)?))
    }
}

/// "Compression" that stores clusters verbatim, to test the plumbing.
struct Identity;

impl Decompressor for Identity {
    fn decompress(&mut self, _: CompressionType, input: &[u8], output: &mut [u8]) -> Result<usize> {
        let n = input.len().min(output.len());
        output
            .get_mut(..n)
            .ok_or(Error::Internal)?
            .copy_from_slice(input.get(..n).ok_or(Error::Internal)?);
        Ok(n)
    }
}

struct MemClusters<'a>(&'a MemImage);

impl CompressedClusters for MemClusters<'_> {
    fn with_cluster<R, F: FnOnce(&[u8]) -> R>(&mut self, req: &CompressedRead, f: F) -> Result<R> {
        let bits = req.cluster_size.trailing_zeros();
        let mut input = KVec::from_elem(0u8, max_compressed_len(bits), GFP_KERNEL)
            .map_err(|_| Error::Io(ENOMEM))?;
        let mut out =
            KVec::from_elem(0u8, req.cluster_size, GFP_KERNEL).map_err(|_| Error::Io(ENOMEM))?;
        req.load(self.0, &mut Identity, &mut input, &mut out)?;
        Ok(f(&out))
    }
}

struct VecSink<'a> {
    img: &'a MemImage,
    out: KVec<u8>,
}

fn append(out: &mut KVec<u8>, data: &[u8]) -> Result<()> {
    out.extend_from_slice(data, GFP_KERNEL)
        .map_err(|_| Error::Io(ENOMEM))
}

fn append_storage(
    img: &MemImage,
    out: &mut KVec<u8>,
    layer: usize,
    offset: u64,
    len: usize,
) -> Result<()> {
    let mut buf = KVec::from_elem(0u8, len, GFP_KERNEL).map_err(|_| Error::Io(ENOMEM))?;
    img.read_at(layer, &mut buf, offset)?;
    append(out, &buf)
}

fn append_zeros(out: &mut KVec<u8>, len: usize) -> Result<()> {
    out.extend_with(len, 0, GFP_KERNEL)
        .map_err(|_| Error::Io(ENOMEM))
}

impl Sink for VecSink<'_> {
    fn fill_zero(&mut self, len: usize) -> Result<()> {
        append_zeros(&mut self.out, len)
    }

    fn copy_from(&mut self, data: &[u8]) -> Result<()> {
        append(&mut self.out, data)
    }

    fn read_from_storage(&mut self, layer: usize, offset: u64, len: usize) -> Result<()> {
        append_storage(self.img, &mut self.out, layer, offset, len)
    }
}

/// One call the engine made to a sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    /// `fill_zero(len)`.
    Zero(usize),
    /// `copy_from` of `len` bytes.
    Copy(usize),
    /// `read_from_storage`.
    Storage {
        layer: usize,
        offset: u64,
        len: usize,
    },
}

/// The calls of one request (at most 16).
pub(crate) struct Calls {
    calls: [Call; 16],
    len: usize,
}

impl Calls {
    pub(crate) fn as_slice(&self) -> &[Call] {
        self.calls.get(..self.len).unwrap_or(&self.calls)
    }

    fn push(&mut self, c: Call) -> Result<()> {
        *self.calls.get_mut(self.len).ok_or(Error::Internal)? = c;
        self.len += 1;
        Ok(())
    }
}

/// A sink that records its calls and collects the bytes.
pub(crate) struct RecordingSink<'a> {
    img: &'a MemImage,
    pub(crate) out: KVec<u8>,
    pub(crate) calls: Calls,
}

impl<'a> RecordingSink<'a> {
    pub(crate) fn new(_t: &Test, img: &'a MemImage) -> Option<Self> {
        Some(Self {
            img,
            out: KVec::new(),
            calls: Calls {
                calls: [Call::Zero(0); 16],
                len: 0,
            },
        })
    }
}

impl Sink for RecordingSink<'_> {
    fn fill_zero(&mut self, len: usize) -> Result<()> {
        self.calls.push(Call::Zero(len))?;
        append_zeros(&mut self.out, len)
    }

    fn copy_from(&mut self, data: &[u8]) -> Result<()> {
        self.calls.push(Call::Copy(data.len()))?;
        append(&mut self.out, data)
    }

    fn read_from_storage(&mut self, layer: usize, offset: u64, len: usize) -> Result<()> {
        self.calls.push(Call::Storage { layer, offset, len })?;
        append_storage(self.img, &mut self.out, layer, offset, len)
    }
}

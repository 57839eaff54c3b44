//! The allocation-free read engine shared by the kernel module, the host
//! reader and fuzzers.
//!
//! The engine owns no buffers and does no I/O of its own. It is generic over
//! four small traits the caller implements:
//!
//! - [`Storage`]: read bytes of a layer's file (used by the helpers that load
//!   tables, snapshots and compressed data);
//! - [`Tables`]: the L1 entries of each qcow2 layer (loaded once at open) and
//!   L2 tables on demand; the caller owns the L2 cache and its memory, the
//!   engine borrows one table at a time through a closure;
//! - [`CompressedClusters`]: decompressed clusters on demand; the caller
//!   owns the buffers and any cache, and typically implements it with
//!   [`CompressedRead::load`] and a [`super::compressed::Decompressor`];
//! - [`Sink`]: where the request's bytes go, in order: zeros, copies of
//!   decompressed data, or reads straight from a layer's file (so a kernel
//!   driver can read uncompressed data directly into request pages).
//!
//! [`Chain::read`] splits a request into runs with [`Qcow2Layer::map`]:
//! unallocated runs descend to the backing layer (zeros if there is none),
//! runs beyond a layer's virtual size read as zeros, zero runs are filled,
//! data runs are read from the file, compressed runs are copied out of the
//! decompressed cluster. Every host range is checked against the layer's
//! file length first; a bad pointer fails the request with an `EIO`-class
//! error and nothing else. The walk is iterative: descending into backing
//! layers uses a fixed stack of [`MAX_CHAIN_DEPTH`] entries, and every step
//! either consumes at least one byte or moves one layer down, so the work
//! is bounded by the request length and the chain depth.

use super::compressed::CompressedRead;
use super::error::{Error, Result, Structure};
use super::layer::{Chain, Layer, Qcow2Layer, MAX_CHAIN_DEPTH};
use super::table::MappingKind;

/// Byte access to the files of a chain's layers.
pub trait Storage {
    /// Fills `buf` with the bytes at `offset` of layer `layer`'s file. A
    /// short read is an error.
    fn read_at(&self, layer: usize, buf: &mut [u8], offset: u64) -> Result<()>;
}

/// The mapping tables of the qcow2 layers of a chain; the caller owns the
/// memory and any caching.
pub trait Tables {
    /// Raw (host-endian decoded) L1 entry `index` of layer `layer`'s L1
    /// table in use ([`Qcow2Layer::l1_table_offset`],
    /// [`Qcow2Layer::l1_size`]). The engine only asks for
    /// `index < l1_size` and validates the entry itself.
    fn l1_entry(&mut self, layer: usize, index: u32) -> Result<u64>;

    /// Calls `f` with the L2 table (exactly one cluster of raw big-endian
    /// entries) at file offset `offset` of layer `layer`, loading it if
    /// needed. The engine has checked that `offset` is cluster aligned and
    /// the table lies inside the file.
    fn with_l2_table<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        layer: usize,
        offset: u64,
        f: F,
    ) -> Result<R>;
}

/// Provider of decompressed clusters; the caller owns buffers and caching.
pub trait CompressedClusters {
    /// Calls `f` with the decompressed cluster described by `request`
    /// (all `request.cluster_size` bytes), decompressing it if needed,
    /// e.g. with [`CompressedRead::load`].
    fn with_cluster<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        request: &CompressedRead,
        f: F,
    ) -> Result<R>;
}

/// Destination of a read request; each call appends to what was written
/// before.
pub trait Sink {
    /// Appends `len` zero bytes.
    fn fill_zero(&mut self, len: usize) -> Result<()>;
    /// Appends `data`.
    fn copy_from(&mut self, data: &[u8]) -> Result<()>;
    /// Appends `len` bytes read from layer `layer`'s file at `offset` (the
    /// range has been checked to lie inside the file).
    fn read_from_storage(&mut self, layer: usize, offset: u64, len: usize) -> Result<()>;
}

/// A [`Sink`] that fills a byte slice from its start; stored bytes are
/// read by `read(layer, into, offset)`.
pub struct SliceSink<'a, R> {
    buf: &'a mut [u8],
    pos: usize,
    read: R,
}

impl<'a, R: FnMut(usize, &mut [u8], u64) -> Result<()>> SliceSink<'a, R> {
    /// An empty sink over `buf`.
    pub fn new(buf: &'a mut [u8], read: R) -> Self {
        Self { buf, pos: 0, read }
    }

    /// The bytes written so far.
    pub fn filled(&self) -> usize {
        self.pos
    }

    fn next(&mut self, len: usize) -> Result<&mut [u8]> {
        next_part(self.buf, &mut self.pos, len)
    }
}

/// The `len` bytes of `buf` at `*pos`, moving `*pos` past them.
fn next_part<'b>(buf: &'b mut [u8], pos: &mut usize, len: usize) -> Result<&'b mut [u8]> {
    let end = pos.checked_add(len).ok_or(Error::Internal)?;
    let part = buf.get_mut(*pos..end).ok_or(Error::Internal)?;
    *pos = end;
    Ok(part)
}

impl<R: FnMut(usize, &mut [u8], u64) -> Result<()>> Sink for SliceSink<'_, R> {
    fn fill_zero(&mut self, len: usize) -> Result<()> {
        self.next(len)?.fill(0);
        Ok(())
    }

    fn copy_from(&mut self, data: &[u8]) -> Result<()> {
        self.next(data.len())?.copy_from_slice(data);
        Ok(())
    }

    fn read_from_storage(&mut self, layer: usize, offset: u64, len: usize) -> Result<()> {
        let part = next_part(self.buf, &mut self.pos, len)?;
        (self.read)(layer, part, offset)
    }
}

fn to_usize(len: u64) -> Result<usize> {
    usize::try_from(len).map_err(|_| Error::Internal)
}

fn check_in_file(what: Structure, offset: u64, len: u64, file_len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(Error::PastEndOfFile {
            what,
            offset,
            len,
            file_len,
        }),
    }
}

/// Result of one step of the walk.
enum Step {
    /// `n` bytes were written to the sink.
    Done(u64),
    /// The next `n` bytes come from the backing layer.
    Descend(u64),
}

/// What a walk over a range of the virtual disk does with each run:
/// [`Chain::read`] fills a sink, [`Chain::compressed_clusters`] only
/// notes the compressed clusters.
trait Visit {
    /// `len` bytes of zeros.
    fn zero(&mut self, len: usize) -> Result<()>;
    /// `len` bytes of layer `layer`'s file at `offset` (inside the file).
    fn stored(&mut self, layer: usize, offset: u64, len: usize) -> Result<()>;
    /// Bytes `start..end` of the compressed cluster `request`.
    fn compressed(&mut self, request: &CompressedRead, start: usize, end: usize) -> Result<()>;
}

/// [`Chain::read`]'s walk: decompressed clusters from `compressed`, every
/// byte to `sink`.
struct Reader<'a, C: ?Sized, K: ?Sized> {
    compressed: &'a mut C,
    sink: &'a mut K,
}

impl<C: CompressedClusters + ?Sized, K: Sink + ?Sized> Visit for Reader<'_, C, K> {
    fn zero(&mut self, len: usize) -> Result<()> {
        self.sink.fill_zero(len)
    }

    fn stored(&mut self, layer: usize, offset: u64, len: usize) -> Result<()> {
        self.sink.read_from_storage(layer, offset, len)
    }

    fn compressed(&mut self, request: &CompressedRead, start: usize, end: usize) -> Result<()> {
        let sink = &mut *self.sink;
        let cluster_size = request.cluster_size;
        self.compressed.with_cluster(request, |cluster: &[u8]| {
            if cluster.len() != cluster_size {
                return Err(Error::BufferSize {
                    what: Structure::CompressedCluster,
                    expected: cluster_size as u64,
                    got: cluster.len() as u64,
                });
            }
            let part = cluster.get(start..end).ok_or(Error::Internal)?;
            sink.copy_from(part)
        })?
    }
}

/// [`Chain::compressed_clusters`]' walk.
struct Finder<V>(V);

impl<V: FnMut(&CompressedRead) -> Result<()>> Visit for Finder<V> {
    fn zero(&mut self, _len: usize) -> Result<()> {
        Ok(())
    }

    fn stored(&mut self, _layer: usize, _offset: u64, _len: usize) -> Result<()> {
        Ok(())
    }

    fn compressed(&mut self, request: &CompressedRead, _start: usize, _end: usize) -> Result<()> {
        (self.0)(request)
    }
}

impl Chain {
    /// Reads `len` bytes of the virtual disk at `offset` into `sink`.
    ///
    /// Fails with [`Error::OutOfRange`] if the range reaches beyond the
    /// virtual size. On error the sink may hold a prefix of the data.
    pub fn read<T, C, K>(
        &self,
        tables: &mut T,
        compressed: &mut C,
        offset: u64,
        len: usize,
        sink: &mut K,
    ) -> Result<()>
    where
        T: Tables + ?Sized,
        C: CompressedClusters + ?Sized,
        K: Sink + ?Sized,
    {
        self.walk(tables, offset, len, &mut Reader { compressed, sink })
    }

    /// Calls `visit` with each compressed cluster a [`Chain::read`] of the
    /// same range would decompress, in the order the read would, without
    /// reading data or decompressing anything: for a reader that
    /// decompresses clusters ahead of the read (several at once, or before
    /// a sequential reader reaches them). A cluster the range enters more
    /// than once (through several layers) is visited each time. Fails as
    /// `read` would on a bad mapping, or with `visit`'s error.
    pub fn compressed_clusters<T, V>(
        &self,
        tables: &mut T,
        offset: u64,
        len: usize,
        visit: V,
    ) -> Result<()>
    where
        T: Tables + ?Sized,
        V: FnMut(&CompressedRead) -> Result<()>,
    {
        self.walk(tables, offset, len, &mut Finder(visit))
    }

    /// The walk behind [`Chain::read`].
    fn walk<T, W>(&self, tables: &mut T, offset: u64, len: usize, visit: &mut W) -> Result<()>
    where
        T: Tables + ?Sized,
        W: Visit + ?Sized,
    {
        let size = self.virtual_size();
        let out_of_range = Error::OutOfRange {
            offset,
            len: len as u64,
            size,
        };
        let end = offset.checked_add(len as u64).ok_or(out_of_range)?;
        if end > size {
            return Err(out_of_range);
        }
        // ends[d]: end of the range being served by layer d.
        let mut ends = [end; MAX_CHAIN_DEPTH];
        let mut depth = 0usize;
        let mut pos = offset;
        loop {
            let stop = *ends.get(depth).ok_or(Error::Internal)?;
            if pos >= stop {
                if depth == 0 {
                    return Ok(());
                }
                depth -= 1;
                continue;
            }
            let layer = self.layer(depth).ok_or(Error::Internal)?;
            let step = Self::step(layer, depth, tables, pos, stop - pos, visit)?;
            match step {
                Step::Done(0) | Step::Descend(0) => return Err(Error::Internal),
                Step::Done(n) => pos += n,
                Step::Descend(n) => {
                    if depth + 1 < self.len() {
                        depth += 1;
                        *ends.get_mut(depth).ok_or(Error::Internal)? = pos + n;
                    } else {
                        visit.zero(to_usize(n)?)?;
                        pos += n;
                    }
                }
            }
        }
    }

    /// Serves a prefix of `[pos, pos + want)` from `layer` (number `index`).
    fn step<T, W>(
        layer: &Layer,
        index: usize,
        tables: &mut T,
        pos: u64,
        want: u64,
        visit: &mut W,
    ) -> Result<Step>
    where
        T: Tables + ?Sized,
        W: Visit + ?Sized,
    {
        let layer_size = layer.virtual_size();
        if pos >= layer_size {
            // Beyond a (shorter) backing layer: zeros.
            visit.zero(to_usize(want)?)?;
            return Ok(Step::Done(want));
        }
        let avail = want.min(layer_size - pos);
        match layer {
            Layer::Raw { len } => {
                check_in_file(Structure::DataCluster, pos, avail, *len)?;
                visit.stored(index, pos, to_usize(avail)?)?;
                Ok(Step::Done(avail))
            }
            Layer::Qcow2(q) => Self::step_qcow2(q, index, tables, pos, avail, visit),
        }
    }

    fn step_qcow2<T, W>(
        q: &Qcow2Layer,
        index: usize,
        tables: &mut T,
        pos: u64,
        avail: u64,
        visit: &mut W,
    ) -> Result<Step>
    where
        T: Tables + ?Sized,
        W: Visit + ?Sized,
    {
        let m = q.map(tables, index, pos, avail)?;
        if m.len == 0 || m.len > avail {
            return Err(Error::Internal);
        }
        match m.kind {
            MappingKind::Unallocated => Ok(Step::Descend(m.len)),
            MappingKind::Zero => {
                visit.zero(to_usize(m.len)?)?;
                Ok(Step::Done(m.len))
            }
            MappingKind::Data { host_offset } => {
                check_in_file(Structure::DataCluster, host_offset, m.len, q.file_len())?;
                visit.stored(index, host_offset, to_usize(m.len)?)?;
                Ok(Step::Done(m.len))
            }
            MappingKind::Compressed { descriptor } => {
                let (host_offset, clen) = descriptor.read_range(q.file_len())?;
                let cluster_size = q.geometry().cluster_len();
                let start = to_usize(q.geometry().offset_in_cluster(pos))?;
                let n = to_usize(m.len)?;
                let end = start.checked_add(n).ok_or(Error::Internal)?;
                if end > cluster_size {
                    return Err(Error::Internal);
                }
                let request = CompressedRead {
                    layer: index,
                    host_offset,
                    len: to_usize(clen)?,
                    compression: q.compression(),
                    cluster_size,
                };
                visit.compressed(&request, start, end)?;
                Ok(Step::Done(m.len))
            }
        }
    }
}

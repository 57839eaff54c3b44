//! Layers and backing chains (spec "Header" `backing_file_offset`, and the
//! rule under "Compressed Clusters Descriptor": unallocated clusters read
//! from the backing file, and as zeros where there is no backing file or it
//! is shorter than the image).
//!
//! A [`Chain`] is the top image (layer 0) followed by its backing layers,
//! at most [`MAX_CHAIN_DEPTH`] in all. Each [`Layer`] is either a qcow2 image
//! ([`Qcow2Layer`]: geometry, virtual size, the L1 table to use, the file
//! length) or a raw file, read byte for byte, whose size is its file length.
//! Reads beyond a layer's virtual size see zeros.
//!
//! The format logic never opens a path: the caller (userspace `losetup`, or
//! the host reader) resolves backing file names, opens the files and hands
//! in one layer per file; [`LayerFormat::detect`] decides how to interpret
//! a backing file from the image's backing format name or its magic.
//! Layers are identified by their index in the chain in every trait of
//! [`super::engine`].

use super::compressed::CompressionType;
use super::engine::Tables;
use super::error::{Error, Result, Structure};
use super::header::{Header, MAGIC, MAX_VIRTUAL_SIZE};
use super::snapshot::Snapshot;
use super::table::{decode_l1_entry, map_in_table, Geometry, Mapping, MappingKind};

/// Most layers in a chain, the top image included.
pub const MAX_CHAIN_DEPTH: usize = 16;

/// How a backing file is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerFormat {
    /// A qcow2 image.
    Qcow2,
    /// A raw file, byte for byte.
    Raw,
}

impl LayerFormat {
    /// Decides the format of a backing file: from the backing format name
    /// extension of the image above if it has one (`qcow2`, or `raw` or
    /// `file`, QEMU's name of the plain file driver; other names are
    /// refused), else from the backing file's first bytes (qcow2 magic or
    /// raw).
    pub fn detect(backing_format: Option<&[u8]>, first_bytes: &[u8]) -> Result<LayerFormat> {
        match backing_format {
            Some(b"qcow2") => Ok(LayerFormat::Qcow2),
            Some(b"raw" | b"file") => Ok(LayerFormat::Raw),
            Some(_) => Err(Error::UnsupportedBackingFormat),
            None => {
                let magic = first_bytes.get(..4).map(|m| m == MAGIC.to_be_bytes());
                Ok(if magic == Some(true) {
                    LayerFormat::Qcow2
                } else {
                    LayerFormat::Raw
                })
            }
        }
    }
}

/// A qcow2 layer: what the read engine needs to know about one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Qcow2Layer {
    geometry: Geometry,
    size: u64,
    l1_table_offset: u64,
    l1_size: u32,
    compression: CompressionType,
    file_len: u64,
}

fn check_l1_in_file(what: Structure, offset: u64, entries: u32, file_len: u64) -> Result<()> {
    let bytes = u64::from(entries) * 8;
    match offset.checked_add(bytes) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(Error::Truncated {
            what,
            needed: offset.saturating_add(bytes),
            available: file_len,
        }),
    }
}

impl Qcow2Layer {
    /// The active state of the image described by `header`, in a file of
    /// `file_len` bytes. The active L1 table must lie inside the file.
    pub fn new(header: &Header, file_len: u64) -> Result<Qcow2Layer> {
        check_l1_in_file(
            Structure::L1Table,
            header.l1_table_offset,
            header.l1_size,
            file_len,
        )?;
        Ok(Qcow2Layer {
            geometry: header.geometry(),
            size: header.size,
            l1_table_offset: header.l1_table_offset,
            l1_size: header.l1_size,
            compression: header.compression_type,
            file_len,
        })
    }

    /// The internal snapshot `snapshot` of the image described by `header`
    /// (read-only): its L1 table, with the image's current virtual size.
    ///
    /// This is what QEMU reads with `qemu-img convert -l` and `qemu-nbd -l`
    /// (`qcow2_snapshot_load_tmp` swaps in the L1 table only): if the image
    /// grew after the snapshot, the snapshot reads as zeros beyond its own
    /// L1 table. The size recorded in the entry
    /// ([`Snapshot::disk_size`]) is what `qemu-img snapshot -a` would
    /// restore, not what a read-only reader sees.
    pub fn from_snapshot(
        header: &Header,
        snapshot: &Snapshot,
        file_len: u64,
    ) -> Result<Qcow2Layer> {
        let size = header.size;
        if size > MAX_VIRTUAL_SIZE {
            return Err(Error::VirtualSizeTooLarge(size));
        }
        check_l1_in_file(
            Structure::SnapshotL1Table,
            snapshot.l1_table_offset,
            snapshot.l1_size,
            file_len,
        )?;
        Ok(Qcow2Layer {
            geometry: header.geometry(),
            size,
            l1_table_offset: snapshot.l1_table_offset,
            l1_size: snapshot.l1_size,
            compression: header.compression_type,
            file_len,
        })
    }

    /// Cluster geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Virtual size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// File offset of the L1 table in use (active or snapshot).
    pub fn l1_table_offset(&self) -> u64 {
        self.l1_table_offset
    }

    /// Number of entries of the L1 table in use.
    pub fn l1_size(&self) -> u32 {
        self.l1_size
    }

    /// Size of the L1 table in use in bytes (at most 32 MiB).
    pub fn l1_table_bytes(&self) -> usize {
        self.l1_size as usize * 8
    }

    /// Compression type of compressed clusters.
    pub fn compression(&self) -> CompressionType {
        self.compression
    }

    /// Length of the image file.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Records that the image file grew to `file_len` bytes (after writes
    /// through [`super::write::WriteEngine`], whose `file_len` it takes);
    /// a smaller value is ignored, so reads never lose access to clusters.
    pub fn grow_file_len(&mut self, file_len: u64) {
        self.file_len = self.file_len.max(file_len);
    }

    /// Maps guest `offset` of this layer (layer number `layer` in the
    /// chain, used to address `tables`) for at most `max_len` bytes.
    ///
    /// The result never crosses an L1 entry's span, and L1 indexes beyond
    /// the table read as unallocated. The L2 table offset is checked to lie
    /// inside the file before `tables` is asked for it.
    pub fn map<T: Tables + ?Sized>(
        &self,
        tables: &mut T,
        layer: usize,
        offset: u64,
        max_len: u64,
    ) -> Result<Mapping> {
        let g = &self.geometry;
        let span_bits = g.l1_span_bits();
        let l1_index = g.l1_index(offset);
        let span_rest = (1u64 << span_bits) - (offset & ((1u64 << span_bits) - 1));
        let limit = max_len.min(span_rest);
        let unallocated = Mapping {
            kind: MappingKind::Unallocated,
            len: limit,
        };
        if l1_index >= u64::from(self.l1_size) {
            return Ok(unallocated);
        }
        // l1_index < l1_size, a u32.
        let raw = tables.l1_entry(layer, l1_index as u32)?;
        let Some(l2_offset) = decode_l1_entry(g, l1_index, raw)? else {
            return Ok(unallocated);
        };
        let cluster = g.cluster_size();
        match l2_offset.checked_add(cluster) {
            Some(end) if end <= self.file_len => {}
            _ => {
                return Err(Error::PastEndOfFile {
                    what: Structure::L2Table,
                    offset: l2_offset,
                    len: cluster,
                    file_len: self.file_len,
                })
            }
        }
        tables.with_l2_table(layer, l2_offset, |table: &[u8]| {
            map_in_table(g, table, offset, limit)
        })?
    }
}

/// One layer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// A qcow2 image.
    Qcow2(Qcow2Layer),
    /// A raw file of `len` bytes, read byte for byte.
    Raw {
        /// File length, which is also the virtual size.
        len: u64,
    },
}

impl Layer {
    /// Virtual size: the qcow2 size, or a raw file's length.
    pub fn virtual_size(&self) -> u64 {
        match self {
            Layer::Qcow2(q) => q.size(),
            Layer::Raw { len } => *len,
        }
    }

    /// Length of the file behind the layer.
    pub fn file_len(&self) -> u64 {
        match self {
            Layer::Qcow2(q) => q.file_len(),
            Layer::Raw { len } => *len,
        }
    }
}

/// The top image and its backing layers, top first.
#[derive(Clone, Copy, Debug)]
pub struct Chain {
    layers: [Option<Layer>; MAX_CHAIN_DEPTH],
    len: usize,
}

impl Chain {
    /// A chain with only `top`.
    pub fn new(top: Layer) -> Chain {
        let layers = core::array::from_fn(|i| if i == 0 { Some(top) } else { None });
        Chain { layers, len: 1 }
    }

    /// Appends the backing layer of the current bottom layer.
    pub fn push_backing(&mut self, layer: Layer) -> Result<()> {
        let slot = self.layers.get_mut(self.len).ok_or(Error::ChainTooDeep)?;
        *slot = Some(layer);
        self.len += 1;
        Ok(())
    }

    /// Number of layers (at least 1).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a chain has a top layer.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Layer number `index` (0 = top).
    pub fn layer(&self, index: usize) -> Option<&Layer> {
        self.layers.get(index).and_then(Option::as_ref)
    }

    /// The top layer.
    pub fn top(&self) -> &Layer {
        // layers[0] is always Some; fall back to the first slot regardless.
        self.layers
            .iter()
            .flatten()
            .next()
            .unwrap_or(&Layer::Raw { len: 0 })
    }

    /// [`Qcow2Layer::grow_file_len`] of the top layer (a raw top layer is
    /// never written by this code and is left alone).
    pub fn grow_top_file_len(&mut self, file_len: u64) {
        if let Some(Some(Layer::Qcow2(q))) = self.layers.get_mut(0) {
            q.grow_file_len(file_len);
        }
    }

    /// The virtual disk size: the top layer's.
    pub fn virtual_size(&self) -> u64 {
        self.top().virtual_size()
    }
}

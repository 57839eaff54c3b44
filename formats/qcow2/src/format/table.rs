//! Guest-to-host translation: L1 and L2 entries (spec "Cluster mapping" and
//! "Extended L2 Entries").
//!
//! The heart is one question, asked as in QEMU's `qcow2-cluster.c`: *what is
//! at this guest offset, and for how many bytes?* The answer is a
//! [`Mapping`]: unallocated (go to the backing layer), zero, data at a host
//! offset, or a compressed cluster, plus a byte count.
//!
//! - [`decode_l1_entry`]: bits 9-55 are the L2 table offset (cluster
//!   aligned); bits 0-8 and 56-62 are reserved and must be zero; bit 63
//!   ("copied") is ignored for reads.
//! - [`decode_l2_entry`]: bit 62 selects a compressed descriptor (see
//!   [`super::compressed`]); otherwise a standard descriptor with bits 9-55
//!   the host cluster offset (cluster aligned, 0 = unallocated) and bit 0
//!   the "reads as zero" flag. Bits 1-8 and 56-61 are reserved and must be
//!   zero. With extended L2 entries (128 bits) bit 0 is unused and the
//!   second 64-bit word is the subcluster bitmap: bit `i` (0..32) =
//!   subcluster `i` allocated, bit `32 + i` = subcluster `i` reads as zero;
//!   both set, or allocation bits without a host cluster, is invalid.
//!   Bit 0 is always 0 in version 2 images; a set bit 0 there is corrupt
//!   metadata, as in QEMU.
//! - [`map_entry`] answers the question for one entry, at subcluster
//!   granularity; [`map_in_table`] extends the answer over following
//!   entries of the same L2 table while the kind stays the same (and data
//!   stays contiguous on the host), so large reads need few calls.

use super::be;
use super::compressed::CompressedDescriptor;
use super::error::{Error, Result, Structure};
use super::header::{MAX_CLUSTER_BITS, MIN_CLUSTER_BITS};

/// Bits 9-55: the offset field of L1 and standard L2 entries.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bit 63 of L1/L2 entries: refcount is exactly one (ignored for reads).
pub const FLAG_COPIED: u64 = 1 << 63;
/// Bit 62 of L2 entries: compressed cluster.
pub const FLAG_COMPRESSED: u64 = 1 << 62;
/// Bit 0 of standard L2 entries: cluster reads as zeros.
pub const FLAG_ZERO: u64 = 1;
/// Reserved bits of an L1 entry (0-8 and 56-62).
pub const L1_RESERVED_MASK: u64 = !(OFFSET_MASK | FLAG_COPIED);
/// Reserved bits of a standard L2 entry (1-8 and 56-61).
pub const L2_RESERVED_MASK: u64 = !(OFFSET_MASK | FLAG_COPIED | FLAG_COMPRESSED | FLAG_ZERO);
/// Number of subclusters per cluster with extended L2 entries.
pub const SUBCLUSTERS: u32 = 32;
/// Smallest cluster_bits allowed with extended L2 entries (16 KiB).
pub const MIN_EXTENDED_L2_CLUSTER_BITS: u32 = 14;

/// The cluster layout of one image: cluster size and L2 entry format.
///
/// Constructed only through [`Geometry::new`], which validates the values,
/// so the shifts below never overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    cluster_bits: u32,
    extended_l2: bool,
    zero_flag: bool,
}

impl Geometry {
    /// Validates `cluster_bits` (9..=21, at least 14 with extended L2), for
    /// a version 3 image.
    pub fn new(cluster_bits: u32, extended_l2: bool) -> Result<Geometry> {
        Self::for_version(3, cluster_bits, extended_l2)
    }

    /// Like [`Geometry::new`] for image version `version`: version 2 images
    /// have no zero flag (bit 0 of a standard L2 entry is then corrupt).
    pub fn for_version(version: u32, cluster_bits: u32, extended_l2: bool) -> Result<Geometry> {
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Error::BadClusterBits(cluster_bits));
        }
        if extended_l2 && cluster_bits < MIN_EXTENDED_L2_CLUSTER_BITS {
            return Err(Error::ExtendedL2ClusterTooSmall(cluster_bits));
        }
        Ok(Geometry {
            cluster_bits,
            extended_l2,
            zero_flag: version >= 3,
        })
    }

    /// log2 of the cluster size.
    pub fn cluster_bits(&self) -> u32 {
        self.cluster_bits
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits
    }

    /// Cluster size in bytes, as `usize` (at most 2 MiB).
    pub fn cluster_len(&self) -> usize {
        1usize << self.cluster_bits
    }

    /// Whether L2 entries are 128-bit extended entries with subclusters.
    pub fn extended_l2(&self) -> bool {
        self.extended_l2
    }

    /// Size of one L2 entry in bytes (8, or 16 with extended L2).
    pub fn l2_entry_size(&self) -> usize {
        if self.extended_l2 {
            16
        } else {
            8
        }
    }

    /// log2 of the number of entries per L2 table.
    pub fn l2_bits(&self) -> u32 {
        if self.extended_l2 {
            self.cluster_bits - 4
        } else {
            self.cluster_bits - 3
        }
    }

    /// Number of entries per L2 table.
    pub fn l2_entries(&self) -> usize {
        1usize << self.l2_bits()
    }

    /// log2 of the guest bytes covered by one L1 entry.
    pub fn l1_span_bits(&self) -> u32 {
        self.cluster_bits + self.l2_bits()
    }

    /// log2 of the subcluster size (the cluster size without extended L2).
    pub fn subcluster_bits(&self) -> u32 {
        if self.extended_l2 {
            self.cluster_bits - 5
        } else {
            self.cluster_bits
        }
    }

    /// Number of L1 entries needed to cover `size` guest bytes.
    pub fn l1_entries_for(&self, size: u64) -> u64 {
        size.div_ceil(1u64 << self.l1_span_bits())
    }

    /// Offset of `offset` within its cluster.
    pub fn offset_in_cluster(&self, offset: u64) -> u64 {
        offset & (self.cluster_size() - 1)
    }

    /// Index of the L1 entry covering guest `offset`.
    pub fn l1_index(&self, offset: u64) -> u64 {
        offset >> self.l1_span_bits()
    }

    /// Index within its L2 table of the entry covering guest `offset`.
    pub fn l2_index(&self, offset: u64) -> usize {
        // Masked to l2_bits (< 19), so the cast is lossless.
        ((offset >> self.cluster_bits) as usize) & (self.l2_entries() - 1)
    }
}

/// Decodes L1 entry number `index`: `Ok(None)` if the L2 table is not
/// allocated, `Ok(Some(l2_table_offset))` otherwise.
///
/// Reserved bits or a misaligned offset are [`Error::CorruptL1Entry`].
pub fn decode_l1_entry(geometry: &Geometry, index: u64, raw: u64) -> Result<Option<u64>> {
    let offset = raw & OFFSET_MASK;
    if raw & L1_RESERVED_MASK != 0 || geometry.offset_in_cluster(offset) != 0 {
        return Err(Error::CorruptL1Entry { index, raw });
    }
    Ok(if offset == 0 { None } else { Some(offset) })
}

/// A decoded L2 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2Entry {
    /// Standard entry with offset 0 and no zero flag: read the backing layer.
    Unallocated,
    /// Standard entry with the zero flag: reads as zeros (any preallocated
    /// host offset is not used for reading).
    Zero,
    /// Standard entry with a host cluster.
    Data {
        /// Host offset of the cluster (cluster aligned, non-zero).
        host_offset: u64,
    },
    /// Compressed cluster.
    Compressed(CompressedDescriptor),
    /// Extended L2 standard entry: per-subcluster status.
    Subclusters {
        /// Host cluster offset, `None` if the entry has offset 0.
        host_offset: Option<u64>,
        /// Allocation bitmap (bit `i` = subcluster `i`).
        alloc: u32,
        /// Reads-as-zero bitmap (bit `i` = subcluster `i`).
        zero: u32,
    },
}

/// Decodes an L2 entry. `bitmap` is the second 64-bit word of an extended
/// entry and is ignored without extended L2.
pub fn decode_l2_entry(geometry: &Geometry, raw: u64, bitmap: u64) -> Result<L2Entry> {
    if raw & FLAG_COMPRESSED != 0 {
        // Compressed clusters have no subclusters; the bitmap is reserved.
        return CompressedDescriptor::decode(geometry.cluster_bits, raw).map(L2Entry::Compressed);
    }
    let offset = raw & OFFSET_MASK;
    if raw & L2_RESERVED_MASK != 0 || geometry.offset_in_cluster(offset) != 0 {
        return Err(Error::CorruptL2Entry { raw });
    }
    if geometry.extended_l2 {
        // Bit 0 is not used with extended L2 entries.
        let alloc = (bitmap & 0xffff_ffff) as u32;
        let zero = (bitmap >> 32) as u32;
        if alloc & zero != 0 || (offset == 0 && alloc != 0) {
            return Err(Error::InvalidSubclusterBitmap { raw, bitmap });
        }
        return Ok(L2Entry::Subclusters {
            host_offset: if offset == 0 { None } else { Some(offset) },
            alloc,
            zero,
        });
    }
    if raw & FLAG_ZERO != 0 {
        if !geometry.zero_flag {
            return Err(Error::CorruptL2Entry { raw });
        }
        Ok(L2Entry::Zero)
    } else if offset == 0 {
        Ok(L2Entry::Unallocated)
    } else {
        Ok(L2Entry::Data {
            host_offset: offset,
        })
    }
}

/// What a run of guest bytes maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingKind {
    /// Not allocated in this layer: read the backing layer, or zeros.
    Unallocated,
    /// Reads as zeros.
    Zero,
    /// Stored uncompressed at `host_offset` (for the first byte of the run;
    /// the run is contiguous on the host).
    Data {
        /// Host offset of the first byte.
        host_offset: u64,
    },
    /// Inside a compressed cluster; the run stays within that cluster.
    Compressed {
        /// Where the compressed data is.
        descriptor: CompressedDescriptor,
    },
}

/// The answer to "what is at this guest offset, and for how many bytes?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// What the bytes are.
    pub kind: MappingKind,
    /// How many bytes, starting at the asked offset, share this kind.
    pub len: u64,
}

/// Status of subcluster `i` of an extended entry.
fn subcluster_kind(
    host_offset: Option<u64>,
    alloc: u32,
    zero: u32,
    i: u32,
    sc_bits: u32,
) -> SubKind {
    let bit = 1u32.checked_shl(i).unwrap_or(0);
    if zero & bit != 0 {
        SubKind::Zero
    } else if alloc & bit != 0 {
        match host_offset {
            Some(h) => SubKind::Data(h + (u64::from(i) << sc_bits)),
            // Rejected by decode_l2_entry; be safe anyway.
            None => SubKind::Unallocated,
        }
    } else {
        SubKind::Unallocated
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SubKind {
    Unallocated,
    Zero,
    Data(u64),
}

/// Maps guest `offset` through one raw L2 entry (`bitmap` = second word of
/// an extended entry, ignored otherwise): the kind at `offset` and the
/// length of the run of the same kind up to the end of the cluster (at
/// subcluster granularity with extended L2), at most `max_len`.
pub fn map_entry(
    geometry: &Geometry,
    raw: u64,
    bitmap: u64,
    offset: u64,
    max_len: u64,
) -> Result<Mapping> {
    let in_cluster = geometry.offset_in_cluster(offset);
    let cluster_rest = geometry.cluster_size() - in_cluster;
    let (kind, len) = match decode_l2_entry(geometry, raw, bitmap)? {
        L2Entry::Unallocated => (MappingKind::Unallocated, cluster_rest),
        L2Entry::Zero => (MappingKind::Zero, cluster_rest),
        L2Entry::Data { host_offset } => (
            MappingKind::Data {
                host_offset: host_offset + in_cluster,
            },
            cluster_rest,
        ),
        L2Entry::Compressed(descriptor) => (MappingKind::Compressed { descriptor }, cluster_rest),
        L2Entry::Subclusters {
            host_offset,
            alloc,
            zero,
        } => {
            let sc_bits = geometry.subcluster_bits();
            // in_cluster < cluster size, so the index is < 32.
            let first = (in_cluster >> sc_bits) as u32;
            let kind = subcluster_kind(host_offset, alloc, zero, first, sc_bits);
            let mut end = first + 1;
            while end < SUBCLUSTERS {
                let next = subcluster_kind(host_offset, alloc, zero, end, sc_bits);
                let same = match (kind, next) {
                    (SubKind::Unallocated, SubKind::Unallocated) => true,
                    (SubKind::Zero, SubKind::Zero) => true,
                    // Subclusters of one cluster are contiguous on the host.
                    (SubKind::Data(_), SubKind::Data(_)) => true,
                    _ => false,
                };
                if !same {
                    break;
                }
                end += 1;
            }
            let len = (u64::from(end) << sc_bits) - in_cluster;
            let kind = match kind {
                SubKind::Unallocated => MappingKind::Unallocated,
                SubKind::Zero => MappingKind::Zero,
                SubKind::Data(sc_host) => MappingKind::Data {
                    host_offset: sc_host + (in_cluster & ((1u64 << sc_bits) - 1)),
                },
            };
            (kind, len)
        }
    };
    Ok(Mapping {
        kind,
        len: len.min(max_len),
    })
}

/// Reads raw entry `index` of an L1 table kept as its on-disk big-endian
/// bytes (a helper for [`super::engine::Tables::l1_entry`]).
pub fn l1_table_entry(table: &[u8], index: u32) -> Result<u64> {
    let pos = usize::try_from(index).ok().and_then(|i| i.checked_mul(8));
    pos.and_then(|p| be::u64_at(table, p))
        .ok_or(Error::BufferSize {
            what: Structure::L1Table,
            expected: (u64::from(index) + 1) * 8,
            got: table.len() as u64,
        })
}

/// Reads the raw entry (and bitmap, for extended L2) at `index` of `table`.
pub fn l2_table_entry(geometry: &Geometry, table: &[u8], index: usize) -> Result<(u64, u64)> {
    let pos = index.checked_mul(geometry.l2_entry_size());
    let raw = pos.and_then(|p| be::u64_at(table, p));
    let bitmap = if geometry.extended_l2 {
        pos.and_then(|p| be::u64_at(table, p.checked_add(8)?))
    } else {
        Some(0)
    };
    match (raw, bitmap) {
        (Some(raw), Some(bitmap)) => Ok((raw, bitmap)),
        _ => Err(Error::BufferSize {
            what: Structure::L2Table,
            expected: geometry.cluster_size(),
            got: table.len() as u64,
        }),
    }
}

/// Maps guest `offset` using the L2 `table` (one cluster of raw big-endian
/// entries) that covers it, and extends the run over the following entries
/// of the same table while the kind stays the same (data: contiguous on the
/// host). The result covers at most `max_len` bytes and, if `max_len > 0`,
/// at least one byte. Compressed runs never extend past their cluster.
///
/// An error in a later entry just ends the run; it is reported when that
/// entry's own bytes are mapped.
pub fn map_in_table(
    geometry: &Geometry,
    table: &[u8],
    offset: u64,
    max_len: u64,
) -> Result<Mapping> {
    if table.len() != geometry.cluster_len() {
        return Err(Error::BufferSize {
            what: Structure::L2Table,
            expected: geometry.cluster_size(),
            got: table.len() as u64,
        });
    }
    let mut index = geometry.l2_index(offset);
    let (raw, bitmap) = l2_table_entry(geometry, table, index)?;
    let first = map_entry(geometry, raw, bitmap, offset, max_len)?;
    if matches!(first.kind, MappingKind::Compressed { .. }) {
        return Ok(first);
    }
    let cluster_size = geometry.cluster_size();
    let mut total = first.len;
    // Offset of the next cluster; stops the loop on (impossible) overflow.
    let mut next = offset - geometry.offset_in_cluster(offset);
    // The first run must reach the cluster end to continue.
    let mut open = geometry.offset_in_cluster(offset) + first.len == cluster_size;
    while open && total < max_len {
        index += 1;
        let Some(n) = next.checked_add(cluster_size) else {
            break;
        };
        next = n;
        if index >= geometry.l2_entries() {
            break;
        }
        let Ok((raw, bitmap)) = l2_table_entry(geometry, table, index) else {
            break;
        };
        let Ok(m) = map_entry(geometry, raw, bitmap, next, max_len - total) else {
            break;
        };
        let continues = match (first.kind, m.kind) {
            (MappingKind::Unallocated, MappingKind::Unallocated) => true,
            (MappingKind::Zero, MappingKind::Zero) => true,
            (MappingKind::Data { host_offset: a }, MappingKind::Data { host_offset: b }) => {
                a.checked_add(total) == Some(b)
            }
            _ => false,
        };
        if !continues {
            break;
        }
        total += m.len;
        open = m.len == cluster_size;
    }
    Ok(Mapping {
        kind: first.kind,
        len: total,
    })
}

//! The image header and its extensions (spec "Header", "Additional fields",
//! "Header padding", "Header extensions", "Feature name table").
//!
//! [`Header::parse`] validates every field against explicit limits before
//! anything uses it, in the spirit of QEMU's `qcow2_do_open`:
//! magic, version 2 or 3, `cluster_bits` 9..=21, v3 `header_length`
//! (at least 104, a multiple of 8, within the first cluster; unknown tail
//! bytes are skipped), incompatible feature bits (unknown ones are refused,
//! named from the feature name table), encryption and external data files
//! (refused), the compression type (byte 104), `refcount_order`, the virtual
//! size, the L1, refcount and snapshot table geometry and the backing file
//! name location.
//!
//! Header extensions follow the header up to the backing file name (or the
//! end of the first cluster); each is `type: u32, len: u32, data`, padded to
//! 8 bytes, and must lie inside the first cluster and inside the buffer the
//! caller passed. Type 0 ends the list; unknown types are skipped.
//!
//! Strings (backing file name, backing format, external data file name) are
//! not copied: the header records their [`Span`] within the caller's
//! buffer, so parsing is allocation free. An empty backing file name is no
//! backing file, and the backing format name ends at its first NUL, as
//! QEMU reads them.
//!
//! [`HeaderLayout::parse`] is the first part of [`Header::parse`] on its
//! own: the fields that locate the backing file name and the extensions,
//! for a caller that follows a backing chain and leaves judging the rest
//! of each image to the driver (userspace `losetup`).
//!
//! The dirty and corrupt incompatible bits do not fail parsing; they are
//! exposed ([`Header::is_dirty`], [`Header::is_corrupt`]) so a driver can
//! refuse read-write use and warn for read-only use.

use super::be;
use super::compressed::CompressionType;
use super::error::{Error, FeatureName, Result, Structure, FEATURE_NAME_LEN};
use super::snapshot::{MAX_SNAPSHOTS, MAX_SNAPSHOT_TABLE_BYTES, SNAPSHOT_HEADER_LEN};
use super::table::Geometry;

/// The magic `QFI\xfb`.
pub const MAGIC: u32 = 0x5146_49fb;
/// Smallest `cluster_bits` (512-byte clusters).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest `cluster_bits` (2 MiB clusters, QEMU's implementation limit).
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Length of a version 2 header.
pub const V2_HEADER_LEN: u32 = 72;
/// Minimum `header_length` of a version 3 header.
pub const V3_MIN_HEADER_LEN: u32 = 104;
/// Offset of the `compression_type` byte (present if `header_length > 104`).
pub const COMPRESSION_TYPE_OFFSET: usize = 104;
/// Largest active L1 table accepted, in bytes (QEMU's limit).
pub const MAX_L1_TABLE_BYTES: u64 = 32 << 20;
/// Largest refcount table accepted, in bytes (QEMU's limit).
pub const MAX_REFCOUNT_TABLE_BYTES: u64 = 8 << 20;
/// Largest backing file name, in bytes.
pub const MAX_BACKING_FILE_NAME_LEN: u32 = 1023;
/// Largest virtual disk size accepted (2 EiB, the most a 32 MiB L1 table
/// with 2 MiB clusters can map).
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 61;
/// Largest `refcount_order`.
pub const MAX_REFCOUNT_ORDER: u32 = 6;
/// Recommended number of leading file bytes to pass to [`Header::parse`]
/// (or the whole file if shorter). The whole first cluster is parsed when
/// the buffer holds it; extensions beyond the buffer are refused.
pub const HEADER_READ_LEN: usize = 64 << 10;

/// Incompatible feature bit 0: dirty (refcounts may be inconsistent).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: corrupt (must not be written).
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: non-default compression type.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: extended L2 entries.
pub const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
/// All incompatible feature bits this code knows.
pub const INCOMPAT_KNOWN: u64 = INCOMPAT_DIRTY
    | INCOMPAT_CORRUPT
    | INCOMPAT_DATA_FILE
    | INCOMPAT_COMPRESSION
    | INCOMPAT_EXTENDED_L2;

/// Header extension type: end of the extension area.
pub const EXT_END: u32 = 0;
/// Header extension type: backing file format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension type: feature name table.
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
/// Header extension type: bitmaps.
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Header extension type: full disk encryption header pointer.
pub const EXT_CRYPTO: u32 = 0x0537_be77;
/// Header extension type: external data file name.
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Size of one feature name table entry.
const FEATURE_TABLE_ENTRY_LEN: usize = 48;

/// A byte range within the header buffer given to [`Header::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    offset: u32,
    len: u32,
}

impl Span {
    /// Offset in the image file (and in the header buffer).
    pub fn offset(&self) -> u32 {
        self.offset
    }

    /// Length in bytes.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the span is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes of the span in `buf` (the buffer that was parsed), or
    /// `None` if `buf` is too short.
    pub fn get<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        let start = usize::try_from(self.offset).ok()?;
        let end = start.checked_add(usize::try_from(self.len).ok()?)?;
        buf.get(start..end)
    }
}

/// The layout of a header: the fields that locate things in the first
/// cluster (version, cluster size, header length, the backing file name,
/// the header extensions), checked exactly as [`Header::parse`] checks
/// them first, and nothing else.
///
/// It is enough to follow a backing chain: userspace `losetup` reads the
/// backing file name and format with it, and leaves judging the rest of
/// the image (features, tables, sizes) to the driver, which parses the
/// whole header with [`Header::parse`] and refuses with its own errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderLayout {
    // The fields of [`Header`] of the same names, before the rest of the
    // header is checked.
    pub(crate) version: u32,
    pub(crate) cluster_bits: u32,
    pub(crate) header_length: u32,
    pub(crate) incompatible_features: u64,
    pub(crate) compatible_features: u64,
    pub(crate) autoclear_features: u64,
    pub(crate) refcount_order: u32,
    pub(crate) backing_file: Option<Span>,
    pub(crate) backing_format: Option<Span>,
    pub(crate) feature_table: Option<Span>,
    pub(crate) has_bitmaps: bool,
    pub(crate) has_crypto: bool,
}

/// A validated qcow2 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Version, 2 or 3.
    pub version: u32,
    /// log2 of the cluster size, 9..=21.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// Number of entries of the active L1 table.
    pub l1_size: u32,
    /// Offset of the active L1 table (cluster aligned).
    pub l1_table_offset: u64,
    /// Offset of the refcount table (cluster aligned).
    pub refcount_table_offset: u64,
    /// Clusters occupied by the refcount table.
    pub refcount_table_clusters: u32,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
    /// Offset of the snapshot table (cluster aligned).
    pub snapshots_offset: u64,
    /// Incompatible feature bits (only known bits remain after parsing).
    pub incompatible_features: u64,
    /// Compatible feature bits (ignored).
    pub compatible_features: u64,
    /// Autoclear feature bits (ignored for reading).
    pub autoclear_features: u64,
    /// log2 of the refcount width in bits (4 for version 2).
    pub refcount_order: u32,
    /// Header length in bytes (72 for version 2).
    pub header_length: u32,
    /// Compression type of compressed clusters.
    pub compression_type: CompressionType,
    /// Backing file name, if the image has a backing file (a non-empty
    /// name).
    pub backing_file: Option<Span>,
    /// Backing file format name extension, if present.
    pub backing_format: Option<Span>,
    /// Feature name table extension, if present.
    pub feature_table: Option<Span>,
    /// Whether a bitmaps extension is present (it is not interpreted).
    pub has_bitmaps: bool,
    geometry: Geometry,
}

fn field_u32(buf: &[u8], off: usize) -> Result<u32> {
    be::u32_at(buf, off).ok_or(Error::Truncated {
        what: Structure::Header,
        needed: off as u64 + 4,
        available: buf.len() as u64,
    })
}

fn field_u64(buf: &[u8], off: usize) -> Result<u64> {
    be::u64_at(buf, off).ok_or(Error::Truncated {
        what: Structure::Header,
        needed: off as u64 + 8,
        available: buf.len() as u64,
    })
}

/// Checks a table's offset alignment and that its end does not overflow.
fn check_table(
    what: Structure,
    offset: u64,
    entries: u64,
    entry_len: u64,
    max_bytes: u64,
    cluster_size: u64,
) -> Result<()> {
    let too_large = Error::TableTooLarge { what, entries };
    if entries > max_bytes / entry_len {
        return Err(too_large);
    }
    let bytes = entries * entry_len;
    match offset.checked_add(bytes) {
        Some(end) if end <= i64::MAX as u64 => {}
        _ => return Err(too_large),
    }
    if offset & (cluster_size - 1) != 0 {
        return Err(Error::MisalignedTable { what, offset });
    }
    Ok(())
}

/// Looks up the name of incompatible feature `bit` in a feature name table.
fn feature_name(table: &[u8], bit: u8) -> FeatureName {
    for entry in table.chunks_exact(FEATURE_TABLE_ENTRY_LEN) {
        if entry.first() == Some(&0) && entry.get(1) == Some(&bit) {
            return FeatureName::from_padded(entry.get(2..2 + FEATURE_NAME_LEN).unwrap_or(&[]));
        }
    }
    FeatureName::EMPTY
}

impl HeaderLayout {
    /// Parses the layout of the header at the start of `buf` (see
    /// [`Header::parse`] for what `buf` holds), with the checks
    /// [`Header::parse`] makes first, in the same order.
    pub fn parse(buf: &[u8]) -> Result<HeaderLayout> {
        if buf.len() < V2_HEADER_LEN as usize {
            return Err(Error::Truncated {
                what: Structure::Header,
                needed: u64::from(V2_HEADER_LEN),
                available: buf.len() as u64,
            });
        }
        let magic = field_u32(buf, 0)?;
        if magic != MAGIC {
            return Err(Error::BadMagic(magic));
        }
        let version = field_u32(buf, 4)?;
        if version != 2 && version != 3 {
            return Err(Error::UnsupportedVersion(version));
        }
        let backing_file_offset = field_u64(buf, 8)?;
        let backing_file_size = field_u32(buf, 16)?;
        let cluster_bits = field_u32(buf, 20)?;
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Error::BadClusterBits(cluster_bits));
        }
        let cluster_size = 1u64 << cluster_bits;

        let (incompat, compat, autoclear, refcount_order, header_length) = if version == 2 {
            (0, 0, 0, 4, V2_HEADER_LEN)
        } else {
            if buf.len() < V3_MIN_HEADER_LEN as usize {
                return Err(Error::Truncated {
                    what: Structure::Header,
                    needed: u64::from(V3_MIN_HEADER_LEN),
                    available: buf.len() as u64,
                });
            }
            let header_length = field_u32(buf, 100)?;
            if header_length < V3_MIN_HEADER_LEN
                || header_length & 7 != 0
                || u64::from(header_length) > cluster_size
            {
                return Err(Error::BadHeaderLength(header_length));
            }
            if header_length as usize > buf.len() {
                return Err(Error::Truncated {
                    what: Structure::Header,
                    needed: u64::from(header_length),
                    available: buf.len() as u64,
                });
            }
            (
                field_u64(buf, 72)?,
                field_u64(buf, 80)?,
                field_u64(buf, 88)?,
                field_u32(buf, 96)?,
                header_length,
            )
        };

        // Backing file name: inside the first cluster, at most 1023 bytes.
        let backing_file = if backing_file_offset != 0 {
            let bad = Error::BadBackingFile {
                offset: backing_file_offset,
                len: backing_file_size,
            };
            if backing_file_offset > cluster_size {
                return Err(bad);
            }
            let room = cluster_size - backing_file_offset;
            if backing_file_size > MAX_BACKING_FILE_NAME_LEN || u64::from(backing_file_size) > room
            {
                return Err(bad);
            }
            let end = backing_file_offset + u64::from(backing_file_size);
            if end > buf.len() as u64 {
                return Err(Error::Truncated {
                    what: Structure::BackingFileName,
                    needed: end,
                    available: buf.len() as u64,
                });
            }
            // Both fit in u32: offset <= cluster size <= 2 MiB. An empty
            // name is no backing file (QEMU reads it as an empty string).
            (backing_file_size > 0).then_some(Span {
                offset: backing_file_offset as u32,
                len: backing_file_size,
            })
        } else {
            None
        };

        // Header extensions: from the end of the header to the backing file
        // name or the end of the first cluster, within the buffer.
        let mut ext_end = cluster_size;
        if backing_file_offset != 0 {
            ext_end = ext_end.min(backing_file_offset);
        }
        let ext_end = ext_end.min(buf.len() as u64) as usize;
        let mut offset = header_length as usize;
        let mut backing_format = None;
        let mut feature_table = None;
        let mut has_bitmaps = false;
        let mut has_crypto = false;
        let area = buf.get(..ext_end).unwrap_or(&[]);
        // Each step advances by at least 8 bytes within at most 2 MiB.
        while let (Some(kind), Some(len)) = (
            be::u32_at(area, offset),
            be::u32_at(area, offset.saturating_add(4)),
        ) {
            if kind == EXT_END {
                break;
            }
            let data = offset + 8;
            let data_end = data as u64 + u64::from(len);
            if data_end > ext_end as u64 {
                return Err(Error::ExtensionOutOfBounds {
                    kind,
                    offset: offset as u64,
                    len,
                });
            }
            let span = Span {
                offset: data as u32,
                len,
            };
            match kind {
                EXT_BACKING_FORMAT => backing_format = Some(span),
                EXT_FEATURE_TABLE => feature_table = Some(span),
                EXT_BITMAPS => has_bitmaps = true,
                EXT_CRYPTO => has_crypto = true,
                // The external data file name is only meaningful with
                // incompatible bit 2, which is refused below.
                _ => {}
            }
            match be::align8(data_end as usize) {
                Some(next) => offset = next,
                None => break,
            }
        }

        Ok(HeaderLayout {
            version,
            cluster_bits,
            header_length,
            incompatible_features: incompat,
            compatible_features: compat,
            autoclear_features: autoclear,
            refcount_order,
            backing_file,
            backing_format,
            feature_table,
            has_bitmaps,
            has_crypto,
        })
    }

    /// Whether incompatible feature bit 2 (external data file) is set.
    pub fn has_external_data_file(&self) -> bool {
        self.incompatible_features & INCOMPAT_DATA_FILE != 0
    }

    /// The backing file name bytes from `buf` (the parsed buffer).
    pub fn backing_file_name<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        span_in(self.backing_file, buf)
    }

    /// The backing file format name from `buf` (the parsed buffer), as
    /// [`Header::backing_format_name`] gives it.
    pub fn backing_format_name<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        format_name_in(self.backing_format, buf)
    }
}

impl Header {
    /// Parses and validates the header at the start of `buf`, which holds
    /// the first bytes of the image file: ideally the whole first cluster,
    /// at least [`HEADER_READ_LEN`] bytes or the whole file if shorter.
    /// Starts with [`HeaderLayout::parse`].
    pub fn parse(buf: &[u8]) -> Result<Header> {
        let layout = HeaderLayout::parse(buf)?;
        let (version, cluster_bits, incompat) = (
            layout.version,
            layout.cluster_bits,
            layout.incompatible_features,
        );
        let cluster_size = 1u64 << cluster_bits;
        // Inside the 72 bytes HeaderLayout::parse checked for.
        let size = field_u64(buf, 24)?;
        let crypt_method = field_u32(buf, 32)?;
        let l1_size = field_u32(buf, 36)?;
        let l1_table_offset = field_u64(buf, 40)?;
        let refcount_table_offset = field_u64(buf, 48)?;
        let refcount_table_clusters = field_u32(buf, 56)?;
        let nb_snapshots = field_u32(buf, 60)?;
        let snapshots_offset = field_u64(buf, 64)?;

        let unknown = incompat & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let bit = unknown.trailing_zeros() as u8;
            let name = layout
                .feature_table
                .and_then(|s| s.get(buf))
                .map(|t| feature_name(t, bit))
                .unwrap_or(FeatureName::EMPTY);
            return Err(Error::UnknownIncompatibleFeature { bit, name });
        }
        if layout.has_external_data_file() {
            return Err(Error::ExternalDataFile);
        }
        if crypt_method != 0 {
            return Err(Error::Encrypted(crypt_method));
        }
        if layout.has_crypto {
            return Err(Error::EncryptionExtension);
        }

        let raw_compression = if layout.header_length as usize > COMPRESSION_TYPE_OFFSET {
            buf.get(COMPRESSION_TYPE_OFFSET).copied().unwrap_or(0)
        } else {
            0
        };
        let compression_type = CompressionType::from_raw(raw_compression)?;
        let bit_set = incompat & INCOMPAT_COMPRESSION != 0;
        if bit_set != (raw_compression != 0) {
            return Err(Error::CompressionTypeMismatch {
                bit_set,
                compression_type: raw_compression,
            });
        }

        let geometry =
            Geometry::for_version(version, cluster_bits, incompat & INCOMPAT_EXTENDED_L2 != 0)?;

        if layout.refcount_order > MAX_REFCOUNT_ORDER {
            return Err(Error::BadRefcountOrder(layout.refcount_order));
        }
        if size > MAX_VIRTUAL_SIZE {
            return Err(Error::VirtualSizeTooLarge(size));
        }
        check_table(
            Structure::L1Table,
            l1_table_offset,
            u64::from(l1_size),
            8,
            MAX_L1_TABLE_BYTES,
            cluster_size,
        )?;
        let needed = geometry.l1_entries_for(size);
        if u64::from(l1_size) < needed {
            return Err(Error::L1TableTooSmall {
                entries: l1_size,
                needed,
            });
        }
        check_table(
            Structure::RefcountTable,
            refcount_table_offset,
            u64::from(refcount_table_clusters),
            cluster_size,
            MAX_REFCOUNT_TABLE_BYTES,
            cluster_size,
        )?;
        if nb_snapshots > MAX_SNAPSHOTS {
            return Err(Error::TooManySnapshots(nb_snapshots));
        }
        check_table(
            Structure::SnapshotTable,
            snapshots_offset,
            u64::from(nb_snapshots),
            SNAPSHOT_HEADER_LEN as u64,
            MAX_SNAPSHOT_TABLE_BYTES,
            cluster_size,
        )?;

        Ok(Header {
            version,
            cluster_bits,
            size,
            l1_size,
            l1_table_offset,
            refcount_table_offset,
            refcount_table_clusters,
            nb_snapshots,
            snapshots_offset,
            incompatible_features: incompat,
            compatible_features: layout.compatible_features,
            autoclear_features: layout.autoclear_features,
            refcount_order: layout.refcount_order,
            header_length: layout.header_length,
            compression_type,
            backing_file: layout.backing_file,
            backing_format: layout.backing_format,
            feature_table: layout.feature_table,
            has_bitmaps: layout.has_bitmaps,
            geometry,
        })
    }

    /// The validated cluster geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.geometry.cluster_size()
    }

    /// Whether the dirty bit is set (refcounts may be stale; reading is
    /// fine, writing needs a repair first).
    pub fn is_dirty(&self) -> bool {
        self.incompatible_features & INCOMPAT_DIRTY != 0
    }

    /// Whether the corrupt bit is set (must not be written; reading may hit
    /// corrupt metadata).
    pub fn is_corrupt(&self) -> bool {
        self.incompatible_features & INCOMPAT_CORRUPT != 0
    }

    /// Whether L2 entries are extended (subclusters).
    pub fn extended_l2(&self) -> bool {
        self.geometry.extended_l2()
    }

    /// The backing file name bytes from `buf` (the parsed buffer).
    pub fn backing_file_name<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        span_in(self.backing_file, buf)
    }

    /// The backing file format name from `buf` (the parsed buffer), up to
    /// its first NUL byte (writers may pad it), `None` if that is empty:
    /// QEMU reads it as a C string and probes when it is empty.
    pub fn backing_format_name<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        format_name_in(self.backing_format, buf)
    }
}

fn span_in(span: Option<Span>, buf: &[u8]) -> Option<&[u8]> {
    span.and_then(|s| s.get(buf))
}

fn format_name_in(span: Option<Span>, buf: &[u8]) -> Option<&[u8]> {
    let name = span_in(span, buf)?;
    let name = match name.iter().position(|&b| b == 0) {
        Some(nul) => name.get(..nul)?,
        None => name,
    };
    (!name.is_empty()).then_some(name)
}

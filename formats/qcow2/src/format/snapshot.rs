//! Internal snapshots (spec "Snapshots", "Snapshot table entry").
//!
//! The snapshot table is a contiguous run of variable-length entries at
//! `snapshots_offset`: a 40-byte fixed part (L1 table offset and size, id and
//! name lengths, dates, VM state size, extra data size), extra data (bytes
//! 40-47 a 64-bit VM state size, bytes 48-55 the snapshot's virtual disk
//! size), the id and the name (neither NUL terminated), padding to 8 bytes.
//!
//! [`SnapshotCursor`] walks the table one entry at a time through a
//! [`Storage`], using only a small stack buffer: ids and names are not
//! copied but located ([`FileSpan`]) and compared in chunks
//! ([`span_equals`]), so selecting a snapshot by id or name
//! ([`find_snapshot`]) needs no allocation. Counts and sizes are bounded
//! like QEMU does: at most [`MAX_SNAPSHOTS`] entries, a table of at most
//! [`MAX_SNAPSHOT_TABLE_BYTES`], at most [`MAX_SNAPSHOT_EXTRA_DATA`] bytes
//! of extra data per entry, snapshot L1 tables cluster aligned and no larger
//! than the active L1 limit.
//!
//! A selected snapshot is read (read-only) by building the layer with
//! [`super::layer::Qcow2Layer::from_snapshot`], which swaps in its L1 table
//! (the virtual size stays the image's, as in QEMU's read-only snapshot
//! access).

use super::be;
use super::engine::Storage;
use super::error::{Error, Result, Structure};
use super::header::{Header, MAX_L1_TABLE_BYTES};
use super::table::Geometry;

/// Length of the fixed part of a snapshot table entry.
pub const SNAPSHOT_HEADER_LEN: usize = 40;
/// Most snapshots accepted (QEMU's limit).
pub const MAX_SNAPSHOTS: u32 = 65536;
/// Largest snapshot table accepted, in bytes (QEMU's limit).
pub const MAX_SNAPSHOT_TABLE_BYTES: u64 = 1024 * MAX_SNAPSHOTS as u64;
/// Most extra data bytes per entry (QEMU's limit).
pub const MAX_SNAPSHOT_EXTRA_DATA: u32 = 1024;
/// Extra data bytes this code interprets (VM state size, disk size, icount).
const KNOWN_EXTRA: usize = 24;

/// A byte range in the image file (a snapshot id or name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSpan {
    /// File offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u16,
}

/// One snapshot table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Position of the entry in the table.
    pub index: u32,
    /// File offset of the entry.
    pub entry_offset: u64,
    /// Length of the entry including padding.
    pub entry_len: u64,
    /// Offset of the snapshot's L1 table (cluster aligned).
    pub l1_table_offset: u64,
    /// Number of entries of the snapshot's L1 table.
    pub l1_size: u32,
    /// Where the unique id string is.
    pub id: FileSpan,
    /// Where the name string is.
    pub name: FileSpan,
    /// Creation time, seconds since the epoch.
    pub date_sec: u32,
    /// Creation time, nanoseconds part.
    pub date_nsec: u32,
    /// Guest run time when taken, in nanoseconds.
    pub vm_clock_nsec: u64,
    /// Size of the saved VM state (64-bit extra field if present).
    pub vm_state_size: u64,
    /// Virtual disk size recorded for the snapshot, if the extra data has
    /// it (always in version 3 images): what `qemu-img snapshot -a` would
    /// resize the image to. Informational only and not validated (QEMU
    /// does not check it either): a snapshot is read with the image's
    /// current size ([`super::layer::Qcow2Layer::from_snapshot`]), so any
    /// value, however absurd, changes nothing a reader sees.
    pub disk_size: Option<u64>,
}

impl Snapshot {
    /// Parses an entry from `buf`, which holds the entry's first bytes: the
    /// 40-byte fixed part and up to 24 bytes of extra data (fewer is fine
    /// if the entry has less extra data). `entry_offset` is the entry's file
    /// offset, `index` its position.
    pub fn parse(buf: &[u8], entry_offset: u64, index: u32) -> Result<Snapshot> {
        let corrupt = Error::CorruptSnapshotTable { index };
        let l1_table_offset = be::u64_at(buf, 0).ok_or(corrupt)?;
        let l1_size = be::u32_at(buf, 8).ok_or(corrupt)?;
        let id_len = be::u16_at(buf, 12).ok_or(corrupt)?;
        let name_len = be::u16_at(buf, 14).ok_or(corrupt)?;
        let date_sec = be::u32_at(buf, 16).ok_or(corrupt)?;
        let date_nsec = be::u32_at(buf, 20).ok_or(corrupt)?;
        let vm_clock_nsec = be::u64_at(buf, 24).ok_or(corrupt)?;
        let vm_state_size32 = be::u32_at(buf, 32).ok_or(corrupt)?;
        let extra = be::u32_at(buf, 36).ok_or(corrupt)?;
        if extra > MAX_SNAPSHOT_EXTRA_DATA {
            return Err(corrupt);
        }
        let extra_field = |at: usize| -> Result<Option<u64>> {
            if (extra as usize) < at + 8 {
                return Ok(None);
            }
            be::u64_at(buf, SNAPSHOT_HEADER_LEN + at)
                .map(Some)
                .ok_or(corrupt)
        };
        let vm_state_size = extra_field(0)?.unwrap_or(u64::from(vm_state_size32));
        let disk_size = extra_field(8)?;
        let id_offset = SNAPSHOT_HEADER_LEN as u64 + u64::from(extra);
        let name_offset = id_offset + u64::from(id_len);
        let end = name_offset + u64::from(name_len);
        let entry_len = (end + 7) & !7;
        let at = |off: u64| entry_offset.checked_add(off).ok_or(corrupt);
        Ok(Snapshot {
            index,
            entry_offset,
            entry_len,
            l1_table_offset,
            l1_size,
            id: FileSpan {
                offset: at(id_offset)?,
                len: id_len,
            },
            name: FileSpan {
                offset: at(name_offset)?,
                len: name_len,
            },
            date_sec,
            date_nsec,
            vm_clock_nsec,
            vm_state_size,
            disk_size,
        })
    }

    /// Checks the snapshot's L1 table geometry.
    fn validate(&self, geometry: &Geometry) -> Result<()> {
        let corrupt = Error::CorruptSnapshotTable { index: self.index };
        if u64::from(self.l1_size) > MAX_L1_TABLE_BYTES / 8 {
            return Err(Error::TableTooLarge {
                what: Structure::SnapshotL1Table,
                entries: u64::from(self.l1_size),
            });
        }
        if geometry.offset_in_cluster(self.l1_table_offset) != 0 {
            return Err(Error::MisalignedTable {
                what: Structure::SnapshotL1Table,
                offset: self.l1_table_offset,
            });
        }
        match self
            .l1_table_offset
            .checked_add(u64::from(self.l1_size) * 8)
        {
            Some(end) if end <= i64::MAX as u64 => Ok(()),
            _ => Err(corrupt),
        }
    }
}

/// Walks the snapshot table of an image, entry by entry.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotCursor {
    geometry: Geometry,
    table_start: u64,
    next: u64,
    index: u32,
    count: u32,
    file_len: u64,
}

impl SnapshotCursor {
    /// A cursor over the snapshot table of `header`, in a file of
    /// `file_len` bytes.
    pub fn new(header: &Header, file_len: u64) -> SnapshotCursor {
        SnapshotCursor {
            geometry: header.geometry(),
            table_start: header.snapshots_offset,
            next: header.snapshots_offset,
            index: 0,
            count: header.nb_snapshots,
            file_len,
        }
    }

    /// Reads the next entry through `storage` (layer `layer`), or `None`
    /// after the last one.
    pub fn next_snapshot<S: Storage + ?Sized>(
        &mut self,
        storage: &S,
        layer: usize,
    ) -> Result<Option<Snapshot>> {
        if self.index >= self.count {
            return Ok(None);
        }
        let index = self.index;
        let corrupt = Error::CorruptSnapshotTable { index };
        let avail = self.file_len.saturating_sub(self.next);
        if avail < SNAPSHOT_HEADER_LEN as u64 {
            return Err(Error::Truncated {
                what: Structure::SnapshotTable,
                needed: self.next.saturating_add(SNAPSHOT_HEADER_LEN as u64),
                available: self.file_len,
            });
        }
        let mut buf = [0u8; SNAPSHOT_HEADER_LEN + KNOWN_EXTRA];
        let want = avail.min(buf.len() as u64) as usize;
        let part = buf.get_mut(..want).ok_or(Error::Internal)?;
        storage.read_at(layer, part, self.next)?;
        let snap = Snapshot::parse(part, self.next, index)?;
        let end = self.next.checked_add(snap.entry_len).ok_or(corrupt)?;
        let name_end = snap.name.offset.saturating_add(u64::from(snap.name.len));
        if name_end > self.file_len {
            return Err(Error::Truncated {
                what: Structure::SnapshotTable,
                needed: name_end,
                available: self.file_len,
            });
        }
        if end - self.table_start > MAX_SNAPSHOT_TABLE_BYTES {
            return Err(corrupt);
        }
        snap.validate(&self.geometry)?;
        self.next = end;
        self.index += 1;
        Ok(Some(snap))
    }
}

/// Whether the bytes at `span` in layer `layer` equal `wanted`, compared in
/// small chunks.
pub fn span_equals<S: Storage + ?Sized>(
    storage: &S,
    layer: usize,
    span: FileSpan,
    wanted: &[u8],
) -> Result<bool> {
    if usize::from(span.len) != wanted.len() {
        return Ok(false);
    }
    let mut chunk = [0u8; 64];
    let mut pos = span.offset;
    for want in wanted.chunks(chunk.len()) {
        let got = chunk.get_mut(..want.len()).ok_or(Error::Internal)?;
        storage.read_at(layer, got, pos)?;
        if got != want {
            return Ok(false);
        }
        pos = pos.checked_add(want.len() as u64).ok_or(Error::Internal)?;
    }
    Ok(true)
}

/// How to select a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotSelector<'a> {
    /// By unique id string (QEMU `snapshot.id=`).
    Id(&'a [u8]),
    /// By name (QEMU `snapshot.name=`).
    Name(&'a [u8]),
    /// By id if one matches, else by name (QEMU `-s`/`-l` with a bare
    /// string).
    IdOrName(&'a [u8]),
}

/// Finds the snapshot selected by `selector` in the snapshot table of
/// `header` (layer `layer`, file of `file_len` bytes).
pub fn find_snapshot<S: Storage + ?Sized>(
    storage: &S,
    layer: usize,
    header: &Header,
    file_len: u64,
    selector: SnapshotSelector<'_>,
) -> Result<Snapshot> {
    let search = |by_id: bool, wanted: &[u8]| -> Result<Option<Snapshot>> {
        let mut cursor = SnapshotCursor::new(header, file_len);
        while let Some(snap) = cursor.next_snapshot(storage, layer)? {
            let span = if by_id { snap.id } else { snap.name };
            if span_equals(storage, layer, span, wanted)? {
                return Ok(Some(snap));
            }
        }
        Ok(None)
    };
    let found = match selector {
        SnapshotSelector::Id(id) => search(true, id)?,
        SnapshotSelector::Name(name) => search(false, name)?,
        SnapshotSelector::IdOrName(s) => match search(true, s)? {
            Some(snap) => Some(snap),
            None => search(false, s)?,
        },
    };
    found.ok_or(Error::SnapshotNotFound)
}

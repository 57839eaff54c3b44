//! Block status: what the read engine serves at a guest offset, and from
//! which layer, in the terms `qemu-img map` reports (allocated data, zeros,
//! compressed data, nothing allocated). The kernel module answers
//! `LFF_GET_MAP` with it; host tests compare it with `qemu-img map`.

use super::engine::Tables;
use super::error::{Error, Result};
use super::layer::{Chain, Layer};
use super::table::MappingKind;

/// What a run of the virtual disk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusKind {
    /// Stored uncompressed at `host_offset` of the layer's file (for the
    /// first byte; the run is contiguous on the host).
    Data {
        /// Host offset of the first byte.
        host_offset: u64,
    },
    /// Inside compressed clusters.
    Compressed,
    /// Reads as zeros because the layer says so (zero flag).
    Zero,
    /// Allocated in no layer down to `depth`, whose backing layer is
    /// missing or shorter: reads as zeros.
    Unallocated,
}

/// The answer to "what does the chain serve at this offset, from which
/// layer, for how many bytes?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// What the bytes are.
    pub kind: StatusKind,
    /// The layer answering (0: the top); for [`StatusKind::Unallocated`],
    /// the last layer asked, as `qemu-img map`'s depth.
    pub depth: usize,
    /// Bytes from the asked offset that share this status (> 0).
    pub len: u64,
}

impl Chain {
    /// The status of the virtual disk at `offset`, for at most `max_len`
    /// bytes (> 0), found as [`Chain::read`] walks the chain: the first
    /// layer from the top that allocates the bytes answers. The work is one
    /// L2 table per layer visited; the run never crosses an L1 entry's span
    /// of any layer visited, so callers merge adjacent runs.
    pub fn status<T: Tables + ?Sized>(
        &self,
        tables: &mut T,
        offset: u64,
        max_len: u64,
    ) -> Result<Status> {
        let size = self.virtual_size();
        if offset >= size || max_len == 0 {
            return Err(Error::OutOfRange {
                offset,
                len: max_len,
                size,
            });
        }
        let mut len = max_len.min(size - offset);
        let mut depth = 0usize;
        loop {
            // Invariant: offset < this layer's virtual size.
            let layer = self.layer(depth).ok_or(Error::Internal)?;
            let kind = match layer {
                Layer::Raw { len: file_len } => {
                    len = len.min(file_len.saturating_sub(offset));
                    StatusKind::Data {
                        host_offset: offset,
                    }
                }
                Layer::Qcow2(q) => {
                    let m = q.map(tables, depth, offset, len)?;
                    if m.len == 0 || m.len > len {
                        return Err(Error::Internal);
                    }
                    len = m.len;
                    match m.kind {
                        MappingKind::Data { host_offset } => StatusKind::Data { host_offset },
                        MappingKind::Compressed { .. } => StatusKind::Compressed,
                        MappingKind::Zero => StatusKind::Zero,
                        MappingKind::Unallocated => match self.layer(depth + 1) {
                            Some(b) if offset < b.virtual_size() => {
                                len = len.min(b.virtual_size() - offset);
                                depth += 1;
                                continue;
                            }
                            _ => StatusKind::Unallocated,
                        },
                    }
                }
            };
            if len == 0 {
                return Err(Error::Internal);
            }
            return Ok(Status { kind, depth, len });
        }
    }
}

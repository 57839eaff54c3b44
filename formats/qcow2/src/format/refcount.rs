//! Refcount entries (spec "Cluster refcounting").
//!
//! Each host cluster has a reference count of `1 << refcount_order` bits
//! (order 0..=6; always 16 bits in version 2 images), stored in one-cluster
//! refcount blocks that a contiguous refcount table points at. Counts of
//! 8 bits and more are big-endian; narrower counts are packed into bytes
//! starting at the least significant bit. A count of 0 is a free cluster,
//! 1 a cluster used once (the COPIED case), 2 and more a shared one.
//!
//! [`RefcountGeometry`] does the arithmetic (which table entry and which
//! block entry count a cluster) and reads and writes entries in a block
//! held as its raw bytes; no I/O, no allocation.

use super::error::{Error, Result};
use super::header::MAX_REFCOUNT_ORDER;

/// Bits 9-63 of a refcount table entry: the refcount block offset (the low
/// 9 bits are reserved).
pub const REFCOUNT_TABLE_OFFSET_MASK: u64 = !0x1ff;

/// The refcount layout of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefcountGeometry {
    order: u32,
    cluster_bits: u32,
}

impl RefcountGeometry {
    /// Validates `refcount_order` (0..=6) for `cluster_bits` (9..=21,
    /// checked by the header parser).
    pub fn new(order: u32, cluster_bits: u32) -> Result<RefcountGeometry> {
        if order > MAX_REFCOUNT_ORDER {
            return Err(Error::BadRefcountOrder(order));
        }
        if !(super::header::MIN_CLUSTER_BITS..=super::header::MAX_CLUSTER_BITS)
            .contains(&cluster_bits)
        {
            return Err(Error::BadClusterBits(cluster_bits));
        }
        Ok(RefcountGeometry {
            order,
            cluster_bits,
        })
    }

    /// Width of one count in bits.
    pub fn bits(&self) -> u32 {
        1 << self.order
    }

    /// The largest count an entry holds.
    pub fn max(&self) -> u64 {
        if self.order == 6 {
            u64::MAX
        } else {
            (1u64 << self.bits()) - 1
        }
    }

    /// log2 of the number of counts per refcount block.
    pub fn block_entries_bits(&self) -> u32 {
        // cluster_bits + 3 - order >= 9 + 3 - 6 = 6.
        self.cluster_bits + 3 - self.order
    }

    /// Number of counts per refcount block.
    pub fn block_entries(&self) -> u64 {
        1u64 << self.block_entries_bits()
    }

    /// Refcount table index and block entry of host cluster number
    /// `cluster` (the host offset shifted right by `cluster_bits`).
    pub fn locate(&self, cluster: u64) -> (u64, usize) {
        let bits = self.block_entries_bits();
        // Masked to block_entries_bits (< 22), so the cast is lossless.
        (cluster >> bits, (cluster & ((1u64 << bits) - 1)) as usize)
    }

    /// Count `index` of the refcount block `block` (one cluster).
    pub fn get(&self, block: &[u8], index: usize) -> Result<u64> {
        let bits = self.bits() as usize;
        if bits >= 8 {
            let bytes = bits / 8;
            let start = index.checked_mul(bytes).ok_or(Error::Internal)?;
            let end = start.checked_add(bytes).ok_or(Error::Internal)?;
            let field = block.get(start..end).ok_or(Error::Internal)?;
            Ok(field.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)))
        } else {
            let bit = index.checked_mul(bits).ok_or(Error::Internal)?;
            let byte = *block.get(bit / 8).ok_or(Error::Internal)?;
            Ok(u64::from(byte >> (bit % 8)) & self.max())
        }
    }

    /// Sets count `index` of `block` to `value` (at most [`Self::max`]).
    pub fn set(&self, block: &mut [u8], index: usize, value: u64) -> Result<()> {
        if value > self.max() {
            return Err(Error::RefcountOverflow);
        }
        let bits = self.bits() as usize;
        if bits >= 8 {
            let bytes = bits / 8;
            let start = index.checked_mul(bytes).ok_or(Error::Internal)?;
            let end = start.checked_add(bytes).ok_or(Error::Internal)?;
            let field = block.get_mut(start..end).ok_or(Error::Internal)?;
            let be = value.to_be_bytes();
            field.copy_from_slice(be.get(8 - bytes..).ok_or(Error::Internal)?);
        } else {
            let bit = index.checked_mul(bits).ok_or(Error::Internal)?;
            let byte = block.get_mut(bit / 8).ok_or(Error::Internal)?;
            let shift = bit % 8;
            // max() < 256 here.
            let mask = (self.max() as u8) << shift;
            *byte = (*byte & !mask) | (((value as u8) << shift) & mask);
        }
        Ok(())
    }
}

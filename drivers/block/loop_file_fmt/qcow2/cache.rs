// SPDX-License-Identifier: GPL-2.0

//! A bounded, sharded LRU cache of immutable buffers (L2 tables,
//! decompressed clusters), shared by all requests of one device.
//!
//! Keys are `layer << 56 | host offset` ([`key`]); values are
//! `Arc<KVVec<u8>>`. A key hashes to one of up to [`MAX_SHARDS`] shards,
//! each a mutex around a red-black tree; the mutex is held only to look up,
//! insert or evict, never while a buffer is read from a file, decompressed
//! or copied: a request clones the `Arc` and uses the buffer unlocked, so
//! concurrent requests on different shards never meet and requests on one
//! shard only meet for a lookup.
//!
//! The byte budget is split evenly between the shards; a shard evicts its
//! least recently used entries (in the exact order of its accesses, which
//! it counts) before an insert would exceed its share, but always keeps the
//! entry being inserted (so a budget smaller than one buffer per shard
//! still caches one buffer per shard). [`Cache::clean`] frees entries
//! unused since a given time.
//!
//! Two requests missing the same key at once both load it; the first
//! insert wins and the second request uses the cached copy.
//!
//! A buffer may hold only a prefix of its item (the part of a deflate
//! cluster a read needed, see `CompressedRead::prefix_len`):
//! [`Cache::get_or_load_prefix`] takes a cached buffer shorter than the
//! lookup needs as a miss, and a longer loaded buffer replaces it. Its
//! `tag` tells apart items that share a key.

use crate::qcow2fmt::error::{Error, Result};
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use kernel::prelude::*;
use kernel::rbtree::{RBTree, RBTreeNodeReservation};
use kernel::sync::{new_mutex, Arc, Mutex};

/// Most shards of one cache.
pub(crate) const MAX_SHARDS: usize = 16;

/// A cached buffer.
pub(crate) type Buf = Arc<KVVec<u8>>;

/// The cache key of the buffer at `offset` (below 2^56, as every host
/// offset qcow2 can express) of layer `layer` (below 16).
pub(crate) fn key(layer: usize, offset: u64) -> u64 {
    ((layer as u64) << 56) | (offset & ((1 << 56) - 1))
}

/// Milliseconds since boot, the time base of `last_used`.
pub(crate) fn now_ms() -> i64 {
    crate::wrappers::compat::now_ms()
}

struct Entry {
    data: Buf,
    /// See [`Cache::get_or_load_prefix`].
    tag: u64,
    /// When the entry was last used: the shard's access count (the LRU
    /// order), and milliseconds (for [`Cache::clean`]).
    last_seq: u64,
    last_used: i64,
}

struct Shard {
    map: RBTree<u64, Entry>,
    bytes: usize,
    /// Accesses so far: the clock of `Entry::last_seq`.
    seq: u64,
}

impl Shard {
    /// The next access number.
    fn tick(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Evicts the least recently used entry; false if empty.
    fn evict_one(&mut self) -> bool {
        self.evict_other(u64::MAX)
    }

    /// Evicts the least recently used entry but `keep` (a key, or
    /// `u64::MAX`: none); false if there is none.
    fn evict_other(&mut self, keep: u64) -> bool {
        let oldest = self
            .map
            .iter()
            .filter(|(k, _)| **k != keep)
            .min_by_key(|(_, e)| e.last_seq)
            .map(|(k, _)| *k);
        match oldest.and_then(|k| self.map.remove(&k)) {
            Some(e) => {
                self.bytes -= e.data.len();
                true
            }
            None => false,
        }
    }
}

/// Counters of a cache, for sysfs.
pub(crate) struct Stats {
    /// Lookups that found the buffer.
    pub(crate) hits: u64,
    /// Lookups that had to load it.
    pub(crate) misses: u64,
    /// Buffers cached now.
    pub(crate) entries: usize,
    /// Bytes cached now.
    pub(crate) bytes: usize,
}

/// See the module documentation.
pub(crate) struct Cache {
    shards: KVec<Pin<KBox<Mutex<Shard>>>>,
    /// log2 of the number of shards.
    shard_bits: u32,
    budget: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Cache {
    /// A cache of `budget` bytes for buffers of up to `item_len` bytes:
    /// as many shards (a power of two, at most [`MAX_SHARDS`]) as whole
    /// buffers fit in the budget, at least one.
    pub(crate) fn new(budget: usize, item_len: usize) -> kernel::error::Result<Self> {
        let fit = budget / item_len.max(1);
        let mut n = 1;
        while n * 2 <= fit.min(MAX_SHARDS) {
            n *= 2;
        }
        let mut shards = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            shards.push(
                KBox::pin_init(
                    new_mutex!(Shard {
                        map: RBTree::new(),
                        bytes: 0,
                        seq: 0,
                    }),
                    GFP_KERNEL,
                )?,
                GFP_KERNEL,
            )?;
        }
        Ok(Self {
            shards,
            shard_bits: n.trailing_zeros(),
            budget: AtomicUsize::new(budget),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    fn shard(&self, key: u64) -> &Mutex<Shard> {
        // Fibonacci hashing of the cluster-ish part of the key.
        let h = (key >> 9)
            .wrapping_add(key >> 56)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let i = (h >> 32) as usize & ((1 << self.shard_bits) - 1);
        &self.shards[i]
    }

    fn shard_budget(&self) -> usize {
        self.budget.load(Ordering::Relaxed) >> self.shard_bits
    }

    /// The buffer for `key`, loading it with `load` on a miss (without any
    /// lock held) and caching it.
    pub(crate) fn get_or_load(
        &self,
        key: u64,
        load: impl FnOnce() -> Result<KVVec<u8>>,
    ) -> Result<Buf> {
        self.get_or_load_prefix(key, 0, 0, |_| load())
    }

    /// The buffer for `key` if it was cached with `tag` and holds at least
    /// `need` bytes; otherwise `load` (called without any lock held, with
    /// the length of the shorter buffer cached with `tag`, 0 if none)
    /// loads one, which is cached in place of the cached one. `load` must
    /// return at least `need` bytes.
    ///
    /// `tag` tells apart items that share a key: a compressed cluster's
    /// length (a hostile image can point two descriptors of different
    /// lengths at one offset, and what a read returns must not depend on
    /// which was read first).
    pub(crate) fn get_or_load_prefix(
        &self,
        key: u64,
        tag: u64,
        need: usize,
        load: impl FnOnce(usize) -> Result<KVVec<u8>>,
    ) -> Result<Buf> {
        let shard = self.shard(key);
        let now = now_ms();
        let mut cached_len = 0;
        {
            let mut s = shard.lock();
            let seq = s.tick();
            if let Some(e) = s.map.get_mut(&key) {
                e.last_seq = seq;
                e.last_used = now;
                if e.tag == tag {
                    if e.data.len() >= need {
                        self.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(e.data.clone());
                    }
                    cached_len = e.data.len();
                }
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let nomem = Error::Io(-(ENOMEM.to_errno()));
        let data = load(cached_len)?;
        if data.len() < need {
            return Err(Error::Internal);
        }
        let data = Arc::new(data, GFP_KERNEL).map_err(|_| nomem)?;
        let Ok(node) = RBTreeNodeReservation::new(GFP_KERNEL) else {
            // No memory to cache it: serve this request uncached.
            return Ok(data);
        };
        let len = data.len();
        let cap = self.shard_budget();
        let mut guard = shard.lock();
        let seq = guard.tick();
        let s = &mut *guard;
        if let Some(e) = s.map.get_mut(&key) {
            e.last_seq = seq;
            e.last_used = now;
            if e.tag == tag && e.data.len() >= len {
                // Another request loaded as much meanwhile.
                return Ok(e.data.clone());
            }
            // Ours is longer, or of another tag: it replaces the cached one.
            s.bytes = s.bytes - e.data.len() + len;
            e.data = data.clone();
            e.tag = tag;
            while s.bytes > cap && s.evict_other(key) {}
            return Ok(data);
        }
        while s.bytes + len > cap && s.evict_one() {}
        s.map.insert(node.into_node(
            key,
            Entry {
                data: data.clone(),
                tag,
                last_seq: seq,
                last_used: now,
            },
        ));
        s.bytes += len;
        Ok(data)
    }

    /// Sets the byte budget; shards over their share shrink now.
    pub(crate) fn set_budget(&self, budget: usize) {
        self.budget.store(budget, Ordering::Relaxed);
        let cap = self.shard_budget();
        for shard in self.shards.iter() {
            let mut s = shard.lock();
            // Keep one entry, as `get_or_load` does.
            while s.bytes > cap && s.map.iter().nth(1).is_some() && s.evict_one() {}
        }
    }

    /// The byte budget.
    pub(crate) fn budget(&self) -> usize {
        self.budget.load(Ordering::Relaxed)
    }

    /// Frees the entries last used before `cutoff` (milliseconds, see
    /// [`now_ms`]); returns how many.
    pub(crate) fn clean(&self, cutoff: i64) -> usize {
        let mut freed = 0;
        for shard in self.shards.iter() {
            let mut guard = shard.lock();
            let s = &mut *guard;
            let mut cursor = crate::wrappers::compat::cursor_front_mut(&mut s.map);
            // Each step removes an entry or moves forward: at most two
            // passes over the tree.
            while let Some(c) = cursor {
                if c.current().1.last_used < cutoff {
                    let (next, node) = c.remove_current();
                    let (_, e) = node.to_key_value();
                    s.bytes -= e.data.len();
                    freed += 1;
                    cursor = next;
                } else {
                    cursor = c.move_next();
                }
            }
        }
        freed
    }

    /// Current counters.
    pub(crate) fn stats(&self) -> Stats {
        let mut st = Stats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: 0,
            bytes: 0,
        };
        for shard in self.shards.iter() {
            let s = shard.lock();
            st.entries += s.map.iter().count();
            st.bytes += s.bytes;
        }
        st
    }
}

// SPDX-License-Identifier: GPL-2.0

//! A bounded, sharded LRU cache of immutable buffers (L2 tables,
//! decompressed clusters), shared by all requests of one device, and the
//! per-device [`Reserve`] that lets a request progress when no memory can
//! be had for a new buffer.
//!
//! Keys are `layer << 56 | host offset` ([`key`]); values are
//! `Arc<KVVec<u8>>`, each with a `tag` that tells apart items sharing a key
//! (a compressed cluster's compressed length: a hostile image can point two
//! descriptors of different lengths at one offset, and what a read returns
//! must not depend on which was read first). A lookup of a key cached with
//! another tag is a miss, and the buffer then loaded replaces the cached
//! one.
//!
//! # Structure
//!
//! A key hashes to one of up to [`MAX_SHARDS`] shards, each a mutex around
//! a red-black tree from key to slot index, a slab of slots, and a doubly
//! linked LRU list threaded through the slots by index (most recently used
//! at the front). A hit moves its slot to the front and an insert evicts
//! from the back: both O(1) once the key is found (O(log n) in the tree),
//! with no scan. The slot and tree node an eviction frees are reused by the
//! insert that caused it, so a full cache inserts without allocating.
//!
//! The mutex is held only to look up, insert or evict, never while a buffer
//! is read from a file, decompressed or copied: a request clones the `Arc`
//! and uses the buffer unlocked, so concurrent requests on different shards
//! never meet and requests on one shard only meet for a lookup.
//!
//! The byte budget is split evenly between the shards; a shard evicts its
//! least recently used entries before an insert would exceed its share,
//! but always keeps the entry being inserted (so a budget smaller than one
//! buffer per shard still caches one buffer per shard). [`Cache::clean`]
//! frees entries unused since a given time, from the back of the list
//! (`last_used` never decreases towards the front).
//!
//! Under memory pressure the device's shrinker (`lff_qcow2.rs`) asks
//! [`Cache::shrinkable`] how many bytes could go and evicts with
//! [`Cache::shrink`], from the backs of the shards, down to the same floor
//! as a small budget: the most recently used entry of each shard. It runs
//! in reclaim, possibly in the direct reclaim of one of this device's own
//! requests; by the rules below such a request holds no shard lock while
//! it allocates, so the shrinker only ever waits for a lookup, insert or
//! eviction in progress, and it allocates nothing (the tree nodes of the
//! entries it evicts are freed, their slots kept on the free list).
//!
//! Two requests missing the same key at once both load it; the first
//! insert wins and the second request uses the cached copy.
//!
//! # Memory: why a request cannot deadlock here
//!
//! Requests are served in a `memalloc_noio` scope, so no allocation below
//! recurses into this device's I/O; but a NOIO allocation that cannot be
//! satisfied retries for as long as the page allocator sees hope (the OOM
//! killer is never invoked for it), and if the memory it waits for can
//! only be freed by writing to this device (swap or a dirty file system on
//! it), the request would wait for itself. So on the request path:
//!
//! - nothing allocates with a shard lock held except a slot, with
//!   `GFP_NOWAIT` (and a full shard reuses the slot it evicts);
//! - the `Arc` and the tree node of a new entry are allocated with
//!   `GFP_NOWAIT` before locking; if either fails, the request is served
//!   from its buffer uncached;
//! - the buffer itself comes from the caller's `alloc`, which must fail
//!   rather than wait indefinitely (the driver uses `__GFP_RETRY_MAYFAIL`:
//!   bounded reclaim retries, no OOM loop). When it fails, [`Cache::with`]
//!   serves the request from the device's [`Reserve`]: one buffer of the
//!   largest size the image needs, preallocated at attach, used by one
//!   request at a time and never cached.
//!
//! A request on the reserve path allocates nothing, and holds the
//! reserve's mutex only while it fills the spare buffer (a read of the
//! backing file, and decompression with the pool's preallocated worker,
//! see `decomp.rs`) and copies from it; so every waiter gets it after a
//! bounded time, and one request at a time always makes progress whatever
//! memory is left. Lock order: reserve → decompression worker; no shard
//! lock is held while either is taken.

use crate::qcow2fmt::error::{Error, Result};
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use kernel::prelude::*;
use kernel::rbtree::{RBTree, RBTreeNodeReservation};
use kernel::sync::{new_mutex, Arc, Mutex, UniqueArc};

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

/// The end of a slot list.
const NIL: u32 = u32::MAX;

/// One slot of a shard's slab: an entry (`data` is `Some`), linked into
/// the LRU list, or a free slot, linked into the free list by `next`.
struct Slot {
    key: u64,
    tag: u64,
    data: Option<Buf>,
    /// When the entry was last used, in milliseconds (for
    /// [`Cache::clean`]); never decreases from the back to the front.
    last_used: i64,
    /// Towards the front (more recently used), and towards the back.
    prev: u32,
    next: u32,
}

struct Shard {
    /// Key to slot index, for every entry.
    map: RBTree<u64, u32>,
    slots: KVec<Slot>,
    /// Most and least recently used entries.
    front: u32,
    back: u32,
    /// First free slot.
    free: u32,
    entries: usize,
    bytes: usize,
    /// The latest `last_used` given, so that it never decreases.
    clock: i64,
}

/// A tree node for a new entry.
type Node = RBTreeNodeReservation<u64, u32>;

impl Shard {
    fn slot(&mut self, i: u32) -> &mut Slot {
        &mut self.slots[i as usize]
    }

    /// Takes slot `i` out of the LRU list.
    fn unlink(&mut self, i: u32) {
        let (prev, next) = (self.slot(i).prev, self.slot(i).next);
        match prev {
            NIL => self.front = next,
            p => self.slot(p).next = next,
        }
        match next {
            NIL => self.back = prev,
            n => self.slot(n).prev = prev,
        }
    }

    /// Links slot `i` at the front, used at `now`.
    fn push_front(&mut self, i: u32, now: i64) {
        self.clock = self.clock.max(now);
        let (front, clock) = (self.front, self.clock);
        let s = self.slot(i);
        s.prev = NIL;
        s.next = front;
        s.last_used = clock;
        match front {
            NIL => self.back = i,
            f => self.slot(f).prev = i,
        }
        self.front = i;
    }

    /// Makes entry `i` the most recently used.
    fn touch(&mut self, i: u32, now: i64) {
        self.unlink(i);
        self.push_front(i, now);
    }

    /// Evicts the least recently used entry, putting its slot on the free
    /// list; returns its tree node for reuse, or `None` if the shard is
    /// empty.
    fn evict_back(&mut self) -> Option<Option<Node>> {
        let i = self.back;
        if i == NIL {
            return None;
        }
        self.unlink(i);
        let key = self.slot(i).key;
        let node = self.map.remove_node(&key).map(|n| n.into_reservation());
        let data = self.slot(i).data.take();
        self.bytes -= data.map_or(0, |d| d.len());
        self.entries -= 1;
        self.release_slot(i);
        Some(node)
    }

    /// A free slot: from the free list, or a new one (without waiting for
    /// memory); `None` if there is none and no memory.
    fn free_slot(&mut self) -> Option<u32> {
        if self.free != NIL {
            let i = self.free;
            self.free = self.slot(i).next;
            return Some(i);
        }
        let i = u32::try_from(self.slots.len()).ok().filter(|&i| i != NIL)?;
        let s = Slot {
            key: 0,
            tag: 0,
            data: None,
            last_used: 0,
            prev: NIL,
            next: NIL,
        };
        self.slots.push(s, GFP_NOWAIT | __GFP_NOWARN).ok()?;
        Some(i)
    }

    /// Puts a free slot back on the free list.
    fn release_slot(&mut self, i: u32) {
        let free = self.free;
        self.slot(i).next = free;
        self.free = i;
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
    /// The shard [`Cache::shrink`] starts from next, so that the shards
    /// take turns.
    shrink_next: AtomicUsize,
}

/// What [`Cache::shrink`] evicted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Shrunk {
    /// Entries evicted.
    pub(crate) entries: usize,
    /// Their bytes.
    pub(crate) bytes: usize,
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
                        slots: KVec::new(),
                        front: NIL,
                        back: NIL,
                        free: NIL,
                        entries: 0,
                        bytes: 0,
                        clock: 0,
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
            shrink_next: AtomicUsize::new(0),
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

    /// The buffer cached for `key` with `tag` (a hit, which makes it the
    /// most recently used), or `None` (a miss).
    pub(crate) fn get(&self, key: u64, tag: u64) -> Option<Buf> {
        let now = now_ms();
        let mut s = self.shard(key).lock();
        if let Some(i) = s.map.get(&key).copied() {
            if s.slot(i).tag == tag {
                s.touch(i, now);
                if let Some(d) = s.slot(i).data.clone() {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Some(d);
                }
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Caches `data` for `key` with `tag`, the most recently used entry,
    /// evicting from the back to stay within the budget, and returns the
    /// cached buffer: `data`, or the buffer another request cached for the
    /// same key and tag meanwhile. Without memory for its `Arc`, `data`
    /// comes back as the error; without memory for the rest of an entry
    /// (see the module documentation), the buffer returned is not cached.
    pub(crate) fn insert(
        &self,
        key: u64,
        tag: u64,
        data: KVVec<u8>,
    ) -> core::result::Result<Buf, KVVec<u8>> {
        let arc = match UniqueArc::<KVVec<u8>>::new_uninit(GFP_NOWAIT | __GFP_NOWARN) {
            Ok(a) => a,
            Err(_) => return Err(data),
        };
        let data: Buf = arc.write(data).into();
        let mut node = RBTreeNodeReservation::new(GFP_NOWAIT | __GFP_NOWARN).ok();
        let len = data.len();
        let now = now_ms();
        let cap = self.shard_budget();
        let mut guard = self.shard(key).lock();
        let s = &mut *guard;
        if let Some(i) = s.map.get(&key).copied() {
            s.touch(i, now);
            if s.slot(i).tag == tag {
                if let Some(d) = s.slot(i).data.clone() {
                    // Another request cached it meanwhile.
                    return Ok(d);
                }
            }
            // Of another tag: ours replaces it, and the others make room.
            let old = s.slot(i).data.replace(data.clone());
            s.bytes = s.bytes - old.map_or(0, |d| d.len()) + len;
            s.slot(i).tag = tag;
            while s.bytes > cap && s.back != i && s.evict_back().is_some() {}
            return Ok(data);
        }
        // Make room; the last node evicted serves the new entry if none
        // could be allocated.
        while s.bytes + len > cap {
            match s.evict_back() {
                Some(n) => node = node.or(n),
                None => break,
            }
        }
        let mut slot = s.free_slot();
        if slot.is_none() || node.is_none() {
            // No memory for a slot or a node: evict one more entry.
            if let Some(n) = s.evict_back() {
                node = node.or(n);
            }
            slot = slot.or_else(|| s.free_slot());
        }
        let (Some(i), Some(node)) = (slot, node) else {
            if let Some(i) = slot {
                s.release_slot(i);
            }
            // Nothing cached: the request uses its buffer alone.
            return Ok(data);
        };
        s.map.insert(node.into_node(key, i));
        let sl = s.slot(i);
        sl.key = key;
        sl.tag = tag;
        sl.data = Some(data.clone());
        s.push_front(i, now);
        s.entries += 1;
        s.bytes += len;
        Ok(data)
    }

    /// Calls `f` with the buffer of `len` bytes for `key` and `tag`: the
    /// cached one, or one that the reserve's allocator allocates (zeroed)
    /// and `fill` fills, then cached. When the allocator fails, `fill`
    /// fills the reserve's buffer instead, and `f` reads it there, uncached
    /// (see the module documentation). The allocator, `fill` and `f` run
    /// without any lock of the cache held.
    pub(crate) fn with<R>(
        &self,
        key: u64,
        tag: u64,
        len: usize,
        reserve: &Reserve,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        if let Some(b) = self.get(key, tag) {
            return Ok(f(&b));
        }
        let Some(mut buf) = (reserve.alloc)(len).filter(|b| b.len() == len) else {
            return reserve.with(len, |spare| {
                fill(spare)?;
                Ok(f(spare))
            });
        };
        fill(&mut buf)?;
        match self.insert(key, tag, buf) {
            Ok(b) => Ok(f(&b)),
            Err(buf) => Ok(f(&buf)),
        }
    }

    /// Whether a buffer is cached for `key` with `tag`; neither a hit nor
    /// a miss, and the entry's place in the LRU order is kept.
    pub(crate) fn contains(&self, key: u64, tag: u64) -> bool {
        let mut s = self.shard(key).lock();
        match s.map.get(&key).copied() {
            Some(i) => {
                let slot = s.slot(i);
                slot.tag == tag && slot.data.is_some()
            }
            None => false,
        }
    }

    /// Caches a buffer of `len` bytes for `key` and `tag` that `fill`
    /// fills, unless one is cached already; counted as a miss. For loading
    /// ahead of the requests that will read it, so it is best effort: it
    /// never uses the reserve, and does nothing when the reserve's
    /// allocator fails or `fill` does (a request then loads the buffer
    /// itself, and sees the error). Returns whether it loaded the buffer.
    pub(crate) fn load_ahead(
        &self,
        key: u64,
        tag: u64,
        len: usize,
        reserve: &Reserve,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> bool {
        if self.contains(key, tag) {
            return false;
        }
        let Some(mut buf) = (reserve.alloc)(len).filter(|b| b.len() == len) else {
            return false;
        };
        if fill(&mut buf).is_err() {
            return false;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let _ = self.insert(key, tag, buf);
        true
    }

    /// Drops the entry cached for `key` (whatever its tag), if any, so
    /// that the next lookup misses: for a buffer whose bytes on disk the
    /// writer changed. Requests holding the old buffer keep their `Arc`.
    pub(crate) fn remove(&self, key: u64) {
        let mut guard = self.shard(key).lock();
        let s = &mut *guard;
        let Some(i) = s.map.get(&key).copied() else {
            return;
        };
        s.unlink(i);
        let _ = s.map.remove(&key);
        let data = s.slot(i).data.take();
        s.bytes -= data.map_or(0, |d| d.len());
        s.entries -= 1;
        s.release_slot(i);
    }

    /// Sets the byte budget; shards over their share shrink now.
    pub(crate) fn set_budget(&self, budget: usize) {
        self.budget.store(budget, Ordering::Relaxed);
        let cap = self.shard_budget();
        for shard in self.shards.iter() {
            let mut s = shard.lock();
            // Keep one entry, as `insert` does.
            while s.bytes > cap && s.entries > 1 && s.evict_back().is_some() {}
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
            let mut s = shard.lock();
            // The back is the least recently used: stop at the first entry
            // used since the cutoff.
            while s.back != NIL && s.slots[s.back as usize].last_used < cutoff {
                s.evict_back();
                freed += 1;
            }
        }
        freed
    }

    /// The bytes [`Cache::shrink`] could free now: those of every entry
    /// but the most recently used one of each shard.
    pub(crate) fn shrinkable(&self) -> usize {
        let mut bytes = 0;
        for shard in self.shards.iter() {
            let s = shard.lock();
            let kept = match s.front {
                NIL => 0,
                f => s.slots[f as usize].data.as_ref().map_or(0, |d| d.len()),
            };
            bytes += s.bytes - kept;
        }
        bytes
    }

    /// Evicts up to `n` entries, each the least recently used of its
    /// shard, spread evenly over the shards (they take turns to go first),
    /// but never the most recently used entry of a shard. For the
    /// shrinker: allocates nothing, and holds one shard lock at a time.
    /// A request holding an evicted buffer keeps it (an `Arc`); its memory
    /// is freed when the last holder drops it.
    pub(crate) fn shrink(&self, n: usize) -> Shrunk {
        let mut done = Shrunk::default();
        let nr = self.shards.len();
        let start = self.shrink_next.fetch_add(1, Ordering::Relaxed);
        // A pass takes an even share of what is left from each shard;
        // another pass takes from the fuller shards what the emptier ones
        // could not give.
        loop {
            let before = done.entries;
            for j in 0..nr {
                let left = n - done.entries;
                if left == 0 {
                    return done;
                }
                let share = left.div_ceil(nr - j);
                let mut s = self.shards[start.wrapping_add(j) % nr].lock();
                for _ in 0..share {
                    if s.entries <= 1 {
                        break;
                    }
                    let bytes = s.bytes;
                    s.evict_back();
                    done.entries += 1;
                    done.bytes += bytes - s.bytes;
                }
            }
            if done.entries == before {
                return done;
            }
        }
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
            st.entries += s.entries;
            st.bytes += s.bytes;
        }
        st
    }
}

/// Allocates a zeroed buffer of the given length, or fails rather than
/// wait indefinitely for memory.
pub(crate) type Alloc = fn(usize) -> Option<KVVec<u8>>;

/// A device's reserve: one buffer, preallocated at attach, that a request
/// borrows when `alloc` cannot give it a buffer of its own (see the module
/// documentation).
pub(crate) struct Reserve {
    spare: Pin<KBox<Mutex<KVVec<u8>>>>,
    alloc: Alloc,
    uses: AtomicU64,
}

impl Reserve {
    /// A reserve for buffers of up to `len` bytes, used when `alloc` fails.
    pub(crate) fn new(len: usize, alloc: Alloc) -> kernel::error::Result<Self> {
        let buf = KVVec::from_elem(0u8, len, GFP_KERNEL)?;
        Ok(Self {
            spare: KBox::pin_init(new_mutex!(buf), GFP_KERNEL)?,
            alloc,
            uses: AtomicU64::new(0),
        })
    }

    /// Calls `f` with the first `len` bytes of the spare buffer (zeroed),
    /// waiting for other users first; fails if `len` is more than the
    /// reserve holds.
    pub(crate) fn with<R>(&self, len: usize, f: impl FnOnce(&mut [u8]) -> Result<R>) -> Result<R> {
        let mut spare = self.spare.lock();
        let buf = spare.get_mut(..len).ok_or(Error::Internal)?;
        self.uses.fetch_add(1, Ordering::Relaxed);
        buf.fill(0);
        f(buf)
    }

    /// How many times a request used the reserve.
    pub(crate) fn uses(&self) -> u64 {
        self.uses.load(Ordering::Relaxed)
    }
}

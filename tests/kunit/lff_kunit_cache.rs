// SPDX-License-Identifier: GPL-2.0

//! lff_kunit_cache: KUnit suite of the qcow2 driver's cache of L2 tables
//! and decompressed clusters, `drivers/block/loop_file_fmt/qcow2/cache.rs`
//! compiled into this module as the driver compiles it: hits and misses,
//! LRU eviction order (against a naive model, over random sequences of
//! entries of several sizes), the byte bound after every insert, entries of
//! different sizes, tags, budget changes, cleaning of idle entries,
//! shrinking (as the shrinker does under memory pressure), the reserve
//! that serves a request when no buffer can be allocated, and lookups from
//! several kworkers at once (no lost or duplicated entries, the bound kept,
//! the reserve shared, a shrinker running alongside).
//!
//! Buffers are filled from their key ([`contents`]), so every buffer a
//! lookup returns is checked to be the one cached for its key. Eviction
//! follows the exact order of accesses (no waiting between them); cleaning
//! follows `last_used`, a time in milliseconds: cases that depend on it let
//! the clock move on ([`tick`]).

#![deny(unsafe_code)]

#[allow(unsafe_code)]
#[path = "wrappers/kunit.rs"]
#[macro_use]
pub mod kunit;

#[allow(unsafe_code)]
#[path = "wrappers/workqueue.rs"]
pub mod workqueue;

#[path = "../../formats/qcow2/src/format/mod.rs"]
pub mod qcow2fmt;

/// The driver's wrappers that `cache.rs` calls.
pub mod wrappers {
    #[allow(unsafe_code)]
    #[path = "../../../drivers/block/loop_file_fmt/wrappers/compat.rs"]
    pub mod compat;
}

#[path = "../../drivers/block/loop_file_fmt/qcow2/cache.rs"]
pub mod cache;

use cache::{key, now_ms, Buf, Cache, Reserve, MAX_SHARDS};
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use kernel::alloc::KVVec;
use kernel::prelude::*;
use kernel::sync::Arc;
use kunit::Test;
use qcow2fmt::error::{Error, Result as FmtResult};
use workqueue::{Barrier, Threads};

module! {
    type: KunitCache,
    name: "lff_kunit_cache",
    description: "KUnit suite of the qcow2 driver's L2/cluster cache",
    license: "GPL",
}

struct KunitCache;

impl kernel::Module for KunitCache {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Self)
    }
}

/// A 4 KiB buffer (an L2 table of a 4 KiB-cluster image).
const LEN: usize = 4096;

/// Byte `i` of the buffer cached for key `k`: the key, then a pattern.
fn byte_of(k: u64, i: usize) -> u8 {
    match k.to_le_bytes().get(i) {
        Some(&b) => b,
        None => (k as u8).wrapping_mul(7).wrapping_add(i as u8),
    }
}

/// The buffer a load of `k` produces.
fn contents(k: u64, len: usize) -> FmtResult<KVVec<u8>> {
    let mut v = KVVec::from_elem(0u8, len, GFP_KERNEL).map_err(|_| Error::Io(12))?;
    for (i, b) in v.iter_mut().enumerate() {
        *b = byte_of(k, i);
    }
    Ok(v)
}

/// Whether `buf` is the buffer of `len` bytes loaded for `k`.
fn valid(buf: &Buf, k: u64, len: usize) -> bool {
    buf.len() == len && buf.iter().enumerate().all(|(i, &b)| b == byte_of(k, i))
}

/// Looks `k` up, loading `len` bytes on a miss; `loads` counts the loads.
fn get(c: &Cache, k: u64, len: usize, loads: &AtomicUsize) -> FmtResult<Buf> {
    if let Some(b) = c.get(k, 0) {
        return Ok(b);
    }
    loads.fetch_add(1, Relaxed);
    c.insert(k, 0, contents(k, len)?).map_err(|_| Error::Io(12))
}

/// Whether `k` is cached. A miss caches nothing; a hit makes `k` the most
/// recently used entry.
fn cached(c: &Cache, k: u64) -> bool {
    c.get(k, 0).is_some()
}

/// An allocator that works, and one that has no memory.
fn alloc_ok(len: usize) -> Option<KVVec<u8>> {
    KVVec::from_elem(0u8, len, GFP_KERNEL).ok()
}
fn alloc_none(_: usize) -> Option<KVVec<u8>> {
    None
}

/// An allocator that fails every other call.
fn alloc_every_other(len: usize) -> Option<KVVec<u8>> {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    if CALLS.fetch_add(1, Relaxed) % 2 == 0 {
        return None;
    }
    alloc_ok(len)
}

/// Fills `buf` as the buffer of `k` would be.
fn fill_for(k: u64, buf: &mut [u8]) -> FmtResult<()> {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = byte_of(k, i);
    }
    Ok(())
}

/// Waits for the next millisecond, so the next access is strictly more
/// recent than the previous ones.
fn tick() {
    let t = now_ms();
    while now_ms() <= t {
        core::hint::spin_loop();
    }
}

/// A cache of a single shard with a budget of `budget` bytes.
fn one_shard(t: &Test, budget: usize) -> Option<Cache> {
    t.ok(Cache::new(budget, budget))
}

/// `(hits, misses, entries, bytes)`.
fn stats(c: &Cache) -> (u64, u64, usize, usize) {
    let s = c.stats();
    (s.hits, s.misses, s.entries, s.bytes)
}

/// The key of table `i` of layer 0.
fn k(i: u64) -> u64 {
    key(0, 0x30000 + (i << 16))
}

fn keys_and_hits(t: &Test) {
    check_eq!(t, key(0, 0x30000), 0x30000);
    check_eq!(t, key(3, 0x30000), (3 << 56) | 0x30000);
    check_eq!(t, key(1, u64::MAX), (1 << 56) | ((1 << 56) - 1));
    let Some(c) = t.ok(Cache::new(16 * LEN, LEN)) else {
        return;
    };
    let loads = AtomicUsize::new(0);
    // A miss loads and caches.
    let Some(a) = t.ok(get(&c, k(0), LEN, &loads)) else {
        return;
    };
    check!(t, valid(&a, k(0), LEN));
    check_eq!(t, loads.load(Relaxed), 1);
    check_eq!(t, stats(&c), (0, 1, 1, LEN));
    // A hit returns the same buffer without loading.
    let Some(b) = t.ok(get(&c, k(0), LEN, &loads)) else {
        return;
    };
    check!(t, Arc::ptr_eq(&a, &b), "a hit returned another buffer");
    check_eq!(t, loads.load(Relaxed), 1);
    check_eq!(t, stats(&c), (1, 1, 1, LEN));
    // The same offset in another layer is another entry.
    let other = key(1, 0x30000);
    let Some(d) = t.ok(get(&c, other, LEN, &loads)) else {
        return;
    };
    check!(t, valid(&d, other, LEN) && !Arc::ptr_eq(&a, &d));
    check_eq!(t, loads.load(Relaxed), 2);
    check_eq!(t, stats(&c), (1, 2, 2, 2 * LEN));
}

/// `remove` (the writer replacing a table it wrote back) drops the entry
/// and its bytes; a holder keeps its buffer; the next lookup loads.
fn remove_drops_the_entry(t: &Test) {
    // One shard: room for both keys whatever shards they would hash to.
    let Some(c) = one_shard(t, 16 * LEN) else {
        return;
    };
    let loads = AtomicUsize::new(0);
    let Some(a) = t.ok(get(&c, k(0), LEN, &loads)) else {
        return;
    };
    if t.ok(get(&c, k(1), LEN, &loads)).is_none() {
        return;
    }
    check_eq!(t, stats(&c), (0, 2, 2, 2 * LEN));
    c.remove(k(0));
    check_eq!(t, stats(&c).2, 1);
    check_eq!(t, stats(&c).3, LEN);
    check!(t, valid(&a, k(0), LEN), "a holder lost its buffer");
    check!(t, !cached(&c, k(0)));
    check!(t, cached(&c, k(1)), "remove dropped another key");
    // Removing a key that is not cached changes nothing.
    c.remove(k(5));
    check_eq!(t, stats(&c).2, 1);
    let Some(b) = t.ok(get(&c, k(0), LEN, &loads)) else {
        return;
    };
    check!(t, valid(&b, k(0), LEN) && !Arc::ptr_eq(&a, &b));
    check_eq!(t, loads.load(Relaxed), 3);
}

fn failed_load_is_not_cached(t: &Test) {
    let Some(c) = t.ok(Cache::new(16 * LEN, LEN)) else {
        return;
    };
    let Some(r) = t.ok(Reserve::new(LEN, alloc_ok)) else {
        return;
    };
    check_eq!(
        t,
        c.with(k(0), 0, LEN, &r, |_| Err(Error::Io(5)), |_| ())
            .err(),
        Some(Error::Io(5))
    );
    check_eq!(
        t,
        c.with(
            k(1),
            0,
            LEN,
            &r,
            |_| Err(Error::DecompressionFailed),
            |_| ()
        )
        .err(),
        Some(Error::DecompressionFailed)
    );
    check_eq!(t, stats(&c), (0, 2, 0, 0));
    // The next lookup loads again.
    let loads = AtomicUsize::new(0);
    let Some(a) = t.ok(get(&c, k(0), LEN, &loads)) else {
        return;
    };
    check!(t, valid(&a, k(0), LEN));
    check_eq!(t, loads.load(Relaxed), 1);
    check_eq!(t, stats(&c), (0, 3, 1, LEN));
}

fn with_fills_once_then_hits(t: &Test) {
    let Some(c) = t.ok(Cache::new(16 * LEN, LEN)) else {
        return;
    };
    let Some(r) = t.ok(Reserve::new(LEN, alloc_ok)) else {
        return;
    };
    let fills = AtomicUsize::new(0);
    for round in 0..3 {
        let ok = c.with(
            k(0),
            0,
            LEN,
            &r,
            |b| {
                fills.fetch_add(1, Relaxed);
                fill_for(k(0), b)
            },
            |b| b.len() == LEN && b.iter().enumerate().all(|(i, &x)| x == byte_of(k(0), i)),
        );
        check!(t, ok == Ok(true), "round {round}");
    }
    check_eq!(t, fills.load(Relaxed), 1);
    check_eq!(t, stats(&c), (2, 1, 1, LEN));
    check_eq!(t, r.uses(), 0);
}

fn load_ahead_caches_once_without_the_reserve(t: &Test) {
    let Some(c) = t.ok(Cache::new(16 * LEN, LEN)) else {
        return;
    };
    let Some(r) = t.ok(Reserve::new(LEN, alloc_ok)) else {
        return;
    };
    // `contains` counts nothing and keeps the LRU order.
    check!(t, !c.contains(k(0), 0));
    check_eq!(t, stats(&c), (0, 0, 0, 0));
    let fills = AtomicUsize::new(0);
    let fill = |b: &mut [u8]| {
        fills.fetch_add(1, Relaxed);
        fill_for(k(0), b)
    };
    // Loaded once (a miss), then left alone.
    check!(t, c.load_ahead(k(0), 0, LEN, &r, fill));
    check!(t, !c.load_ahead(k(0), 0, LEN, &r, fill));
    check_eq!(t, fills.load(Relaxed), 1);
    check!(t, c.contains(k(0), 0));
    check!(t, !c.contains(k(0), 1), "another tag is not contained");
    check_eq!(t, stats(&c), (0, 1, 1, LEN));
    // The request then hits the bytes loaded ahead.
    let ok = c.with(
        k(0),
        0,
        LEN,
        &r,
        |_| Err(Error::Internal),
        |b| b.len() == LEN && b.iter().enumerate().all(|(i, &x)| x == byte_of(k(0), i)),
    );
    check!(t, ok == Ok(true));
    check_eq!(t, stats(&c), (1, 1, 1, LEN));
    // A failed fill caches nothing; without memory it does nothing, and
    // never takes the reserve.
    check!(t, !c.load_ahead(k(1), 0, LEN, &r, |_| Err(Error::Io(5))));
    check!(t, !c.contains(k(1), 0));
    let Some(none) = t.ok(Reserve::new(LEN, alloc_none)) else {
        return;
    };
    check!(t, !c.load_ahead(k(2), 0, LEN, &none, |b| fill_for(k(2), b)));
    check!(t, !c.contains(k(2), 0));
    check_eq!(t, (none.uses(), r.uses()), (0, 0));
    check_eq!(t, stats(&c), (1, 1, 1, LEN));
}

fn reserve_serves_without_memory(t: &Test) {
    let Some(c) = t.ok(Cache::new(16 * LEN, LEN)) else {
        return;
    };
    let (Some(none), Some(ok)) = (
        t.ok(Reserve::new(2 * LEN, alloc_none)),
        t.ok(Reserve::new(2 * LEN, alloc_ok)),
    ) else {
        return;
    };
    let fills = AtomicUsize::new(0);
    let read = |kk: u64, len: usize, r: &Reserve| {
        c.with(
            kk,
            0,
            len,
            r,
            |b| {
                fills.fetch_add(1, Relaxed);
                fill_for(kk, b)
            },
            |b| b.len() == len && b.iter().enumerate().all(|(i, &x)| x == byte_of(kk, i)),
        )
    };
    // No memory: served from the reserve, right, and not cached.
    check_eq!(t, read(k(0), LEN, &none), Ok(true));
    check_eq!(t, read(k(0), LEN, &none), Ok(true));
    check_eq!(t, (fills.load(Relaxed), none.uses()), (2, 2));
    check_eq!(t, stats(&c), (0, 2, 0, 0));
    // A buffer of less than the reserve holds, after a longer one (the
    // reserve is zeroed for each use, as an allocation would be).
    check_eq!(t, read(k(1), 2 * LEN, &none), Ok(true));
    check_eq!(
        t,
        c.with(
            k(2),
            0,
            100,
            &none,
            |_| Ok(()),
            |b| b.iter().all(|&x| x == 0)
        ),
        Ok(true)
    );
    // More than the reserve holds fails cleanly.
    check_eq!(t, read(k(3), 2 * LEN + 1, &none), Err(Error::Internal));
    // Memory again: cached as usual.
    check_eq!(t, read(k(0), LEN, &ok), Ok(true));
    check_eq!(t, read(k(0), LEN, &ok), Ok(true));
    check_eq!(t, (none.uses(), ok.uses()), (4, 0));
    check_eq!(t, c.stats().entries, 1);
    // An allocator returning a buffer of the wrong size is not trusted.
    let Some(short) = t.ok(Reserve::new(LEN, |len| {
        KVVec::from_elem(0u8, len - 1, GFP_KERNEL).ok()
    })) else {
        return;
    };
    check_eq!(
        t,
        c.with(k(4), 0, LEN, &short, |b| fill_for(k(4), b), |b| b.len()),
        Ok(LEN)
    );
    check_eq!(t, short.uses(), 1);
}

fn tags_tell_items_apart(t: &Test) {
    let Some(c) = one_shard(t, 4 * LEN) else {
        return;
    };
    let loads = AtomicUsize::new(0);
    let tagged = |tag: u64, len: usize| -> FmtResult<Buf> {
        if let Some(b) = c.get(k(0), tag) {
            return Ok(b);
        }
        loads.fetch_add(1, Relaxed);
        let mut v = contents(k(0), len)?;
        if let Some(b) = v.first_mut() {
            *b = tag as u8;
        }
        c.insert(k(0), tag, v).map_err(|_| Error::Io(12))
    };
    // Tag 1 is cached; tag 2 at the same key is a miss, and replaces it.
    check_matches!(t, tagged(1, LEN), Ok(b) if b.first() == Some(&1) && b.len() == LEN);
    check_matches!(t, tagged(2, 100), Ok(b) if b.first() == Some(&2) && b.len() == 100);
    check_eq!(t, stats(&c), (0, 2, 1, 100));
    // Tag 2 now hits; tag 1 misses again.
    check_matches!(t, tagged(2, 0), Ok(b) if b.first() == Some(&2));
    check_matches!(t, tagged(1, LEN), Ok(b) if b.first() == Some(&1));
    check_eq!(t, stats(&c), (1, 3, 1, LEN));
    check_eq!(t, loads.load(Relaxed), 3);
    // A replacement that grows past the budget evicts the others, not
    // itself.
    for i in 1..4 {
        let _ = t.ok(get(&c, k(i), LEN, &loads));
    }
    check_eq!(t, stats(&c).3, 4 * LEN);
    check_matches!(t, tagged(3, 2 * LEN), Ok(b) if b.first() == Some(&3));
    let s = c.stats();
    check!(
        t,
        s.bytes <= 4 * LEN,
        "over budget after a replacement: {}",
        s.bytes
    );
    check!(t, c.get(k(0), 3).is_some());
    check!(t, !cached(&c, k(1)), "the least recently used entry stayed");
}

fn lru_eviction_order(t: &Test) {
    let Some(c) = one_shard(t, 4 * LEN) else {
        return;
    };
    let loads = AtomicUsize::new(0);
    // Insert 0..4, then use 0 and 2: the least recently used are 1, 3.
    for i in [0, 1, 2, 3, 0, 2, 4, 5] {
        let Some(b) = t.ok(get(&c, k(i), LEN, &loads)) else {
            return;
        };
        check!(t, valid(&b, k(i), LEN), "table {i}");
        check!(t, c.stats().bytes <= 4 * LEN, "over budget after table {i}");
    }
    // 4 evicted 1, 5 evicted 3.
    check_eq!(t, loads.load(Relaxed), 6);
    check_eq!(t, stats(&c), (2, 6, 4, 4 * LEN));
    let present = [0, 1, 2, 3, 4, 5].map(|i| cached(&c, k(i)));
    check_eq!(t, present, [true, false, true, false, true, true]);
}

/// Keys of [`lru_matches_a_model`], and the size of key `i`'s buffer.
const MODEL_KEYS: usize = 24;
fn model_len(i: usize) -> usize {
    [LEN / 2, LEN, 2 * LEN, 700][i % 4]
}

fn lru_matches_a_model(t: &Test) {
    // One shard of 8 tables, and a naive LRU: per key, its last use (a
    // counter) if cached; eviction takes the smallest, by scanning.
    let cap = 8 * LEN;
    let Some(c) = one_shard(t, cap) else {
        return;
    };
    let mut model: [Option<u64>; MODEL_KEYS] = [None; MODEL_KEYS];
    let (mut bytes, mut clock, mut x) = (0usize, 0u64, 12345u64);
    let loads = AtomicUsize::new(0);
    let mut mismatches = 0;
    for step in 0..2000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Skewed towards low keys, so there are hits and evictions.
        let r = (x >> 33) as usize;
        let i = if r % 3 == 0 { r % MODEL_KEYS } else { r % 10 };
        let len = model_len(i);
        clock += 1;
        let hit = model[i].is_some();
        if !hit {
            while bytes + len > cap {
                let oldest = (0..MODEL_KEYS)
                    .filter(|&j| model[j].is_some())
                    .min_by_key(|&j| model[j]);
                let Some(j) = oldest else { break };
                model[j] = None;
                bytes -= model_len(j);
            }
            bytes += len;
        }
        model[i] = Some(clock);
        let before = loads.load(Relaxed);
        let Some(b) = t.ok(get(&c, k(i as u64), len, &loads)) else {
            return;
        };
        let cache_hit = loads.load(Relaxed) == before;
        let n = model.iter().filter(|m| m.is_some()).count();
        let s = c.stats();
        if cache_hit != hit || !valid(&b, k(i as u64), len) || (s.entries, s.bytes) != (n, bytes) {
            mismatches += 1;
            if mismatches <= 3 {
                check!(
                    t,
                    false,
                    "step {step}: key {i} hit {cache_hit} (model {hit}), {} entries, {} bytes (model {n}, {bytes})",
                    s.entries,
                    s.bytes
                );
            }
        }
    }
    check_eq!(t, mismatches, 0);
    // The cache holds exactly the model's keys.
    let present = (0..MODEL_KEYS).filter(|&i| model[i].is_some() != cached(&c, k(i as u64)));
    check_eq!(t, present.count(), 0);
}

fn byte_bound_at_every_step(t: &Test) {
    let loads = AtomicUsize::new(0);
    // One shard of four tables: exactly min(n, 4) tables.
    let Some(c) = one_shard(t, 4 * LEN) else {
        return;
    };
    for i in 0..40u64 {
        if t.ok(get(&c, k(i), LEN, &loads)).is_none() {
            return;
        }
        let n = (i as usize + 1).min(4);
        check_eq!(t, stats(&c), (0, i + 1, n, n * LEN));
    }
    // Sixteen shards of one table each, keys of four layers.
    let Some(c) = t.ok(Cache::new(MAX_SHARDS * LEN, LEN)) else {
        return;
    };
    for i in 0..300u64 {
        let kk = key((i % 4) as usize, (i / 4) << 16);
        if t.ok(get(&c, kk, LEN, &loads)).is_none() {
            return;
        }
        let s = c.stats();
        check!(
            t,
            s.bytes <= MAX_SHARDS * LEN && s.bytes == s.entries * LEN,
            "step {i}: {} bytes",
            s.bytes
        );
    }
    // Every shard is in use.
    check_eq!(t, c.stats().entries, MAX_SHARDS);
}

fn entries_of_any_size(t: &Test) {
    let Some(c) = one_shard(t, 10000) else { return };
    let loads = AtomicUsize::new(0);
    let step = |i: u64, len: usize| {
        let b = get(&c, k(i), len, &loads).ok();
        check!(
            t,
            b.as_ref().is_some_and(|b| valid(b, k(i), len)),
            "table {i} of {len} bytes"
        );
        (b, c.stats().entries, c.stats().bytes)
    };
    check_eq!(t, step(0, 4096).1, 1);
    check_eq!(t, step(1, 2048).2, 6144);
    check_eq!(t, step(2, 1000).2, 7144);
    check_eq!(t, step(3, 512).2, 7656);
    // 10656 bytes would exceed the budget: the oldest (4096) goes.
    let (_, n, bytes) = step(4, 3000);
    check_eq!(t, (n, bytes), (4, 6560));
    // A buffer larger than the budget evicts all and stays alone.
    let (big, n, bytes) = step(5, 20000);
    check_eq!(t, (n, bytes), (1, 20000));
    // The next one evicts it; a user of the evicted buffer still has it.
    let (_, n, bytes) = step(6, 100);
    check_eq!(t, (n, bytes), (1, 100));
    check!(
        t,
        big.is_some_and(|b| valid(&b, k(5), 20000)),
        "evicted buffer changed"
    );
    check!(t, !cached(&c, k(5)));
}

fn budget_change_shrinks(t: &Test) {
    let Some(c) = one_shard(t, 8 * LEN) else {
        return;
    };
    check_eq!(t, c.budget(), 8 * LEN);
    let loads = AtomicUsize::new(0);
    let mut first = None;
    for i in 0..8 {
        let b = t.ok(get(&c, k(i), LEN, &loads));
        first = first.or(b);
    }
    check_eq!(t, stats(&c), (0, 8, 8, 8 * LEN));
    // Down to three tables: the three most recently used stay.
    c.set_budget(3 * LEN);
    check_eq!(t, c.budget(), 3 * LEN);
    check_eq!(t, stats(&c), (0, 8, 3, 3 * LEN));
    let present = [0, 1, 2, 3, 4].map(|i| cached(&c, k(i)));
    check_eq!(t, present, [false; 5]);
    for i in 5..8 {
        check!(t, cached(&c, k(i)), "table {i} evicted");
    }
    check!(
        t,
        first.is_some_and(|b| valid(&b, k(0), LEN)),
        "evicted buffer changed"
    );
    // A budget below one table keeps the most recently used one.
    c.set_budget(0);
    check_eq!(t, (c.stats().entries, c.stats().bytes), (1, LEN));
    check!(t, cached(&c, k(7)));
    // Growing evicts nothing and lets the cache fill again.
    c.set_budget(8 * LEN);
    check_eq!(t, c.stats().entries, 1);
    for i in 10..20 {
        let _ = t.ok(get(&c, k(i), LEN, &loads));
    }
    check_eq!(t, (c.stats().entries, c.stats().bytes), (8, 8 * LEN));
}

fn clean_frees_idle_entries(t: &Test) {
    let Some(c) = one_shard(t, 8 * LEN) else {
        return;
    };
    let loads = AtomicUsize::new(0);
    for i in 0..4 {
        let _ = t.ok(get(&c, k(i), LEN, &loads));
    }
    tick();
    let cutoff = now_ms();
    // Used since the cutoff: 1, 3 and the new 4.
    for i in [1, 3, 4] {
        let _ = t.ok(get(&c, k(i), LEN, &loads));
    }
    check_eq!(t, c.clean(cutoff), 2);
    check_eq!(t, stats(&c), (2, 5, 3, 3 * LEN));
    check_eq!(t, c.clean(cutoff), 0);
    let present = [0, 1, 2, 3, 4].map(|i| cached(&c, k(i)));
    check_eq!(t, present, [false, true, false, true, true]);
    // Everything is idle a millisecond from now.
    tick();
    check_eq!(t, c.clean(now_ms() + 1), 3);
    check_eq!(t, (c.stats().entries, c.stats().bytes), (0, 0));
    check_eq!(t, c.clean(now_ms() + 1), 0);
    // Across shards.
    let Some(c) = t.ok(Cache::new(MAX_SHARDS * 4 * LEN, LEN)) else {
        return;
    };
    for i in 0..32 {
        let _ = t.ok(get(&c, k(i), LEN, &loads));
    }
    let n = c.stats().entries;
    check!(t, n > 0 && n <= 32, "{n} entries");
    check_eq!(t, c.clean(now_ms() + 1), n);
    check_eq!(t, (c.stats().entries, c.stats().bytes), (0, 0));
}

/// The shrinker's eviction takes the least recently used entries, keeps
/// the most recently used one, and counts entries and bytes right.
fn shrink_keeps_lru_order(t: &Test) {
    let Some(c) = one_shard(t, 16 * LEN) else {
        return;
    };
    let loads = AtomicUsize::new(0);
    // Eight entries of mixed sizes; 0 and 2 used again: the order from the
    // back is 1, 3, 4, 5, 6, 7, 0, 2.
    let len = |i: u64| if i % 2 == 0 { LEN } else { LEN / 2 };
    let mut first = None;
    for i in [0, 1, 2, 3, 4, 5, 6, 7, 0, 2] {
        let b = t.ok(get(&c, k(i), len(i), &loads));
        first = first.or(b);
    }
    let total = 4 * LEN + 4 * (LEN / 2);
    check_eq!(t, stats(&c), (2, 8, 8, total));
    // All but the most recently used entry (2) may go.
    check_eq!(t, c.shrinkable(), total - LEN);
    let s = c.shrink(3);
    check_eq!(t, (s.entries, s.bytes), (3, LEN / 2 + LEN / 2 + LEN));
    check_eq!(t, stats(&c), (2, 8, 5, total - s.bytes));
    check_eq!(t, c.shrinkable(), total - s.bytes - LEN);
    let present = [0, 1, 2, 3, 4, 5, 6, 7].map(|i| c.contains(k(i), 0));
    check_eq!(
        t,
        present,
        [true, false, true, false, false, true, true, true]
    );
    // Everything else but 2, then nothing more.
    let s = c.shrink(usize::MAX);
    check_eq!(t, (s.entries, s.bytes), (4, LEN / 2 + LEN / 2 + LEN + LEN));
    check_eq!(t, stats(&c), (2, 8, 1, LEN));
    check!(t, c.contains(k(2), 0), "the most recently used entry went");
    check_eq!(t, c.shrinkable(), 0);
    check_eq!(t, c.shrink(1), cache::Shrunk::default());
    check_eq!(t, c.shrink(0), cache::Shrunk::default());
    // A holder of an evicted buffer keeps it; the next lookup loads.
    check!(
        t,
        first.is_some_and(|b| valid(&b, k(0), LEN)),
        "evicted buffer changed"
    );
    let Some(b) = t.ok(get(&c, k(0), LEN, &loads)) else {
        return;
    };
    check!(t, valid(&b, k(0), LEN));
    check_eq!(t, loads.load(Relaxed), 9);
    // The cache fills again up to its budget.
    for i in 10..30 {
        let _ = t.ok(get(&c, k(i), LEN, &loads));
    }
    check_eq!(t, (c.stats().entries, c.stats().bytes), (16, 16 * LEN));
    // An empty cache has nothing to give.
    let Some(e) = one_shard(t, 16 * LEN) else {
        return;
    };
    check_eq!(
        t,
        (e.shrinkable(), e.shrink(5)),
        (0, cache::Shrunk::default())
    );
}

/// Across shards: exactly as many entries as asked for while the shards
/// can give them, then down to one entry per shard in use.
fn shrink_spreads_over_shards(t: &Test) {
    let Some(c) = t.ok(Cache::new(MAX_SHARDS * 8 * LEN, LEN)) else {
        return;
    };
    let loads = AtomicUsize::new(0);
    for i in 0..96 {
        let _ = t.ok(get(&c, key((i % 3) as usize, i << 16), LEN, &loads));
    }
    let (hits, misses, n, bytes) = stats(&c);
    check_eq!(t, bytes, n * LEN);
    let spare = c.shrinkable() / LEN;
    // Shards in use, each keeping one entry.
    let used = n - spare;
    check!(
        t,
        used > 1 && used <= MAX_SHARDS && spare > 40,
        "{n} entries, {spare} shrinkable"
    );
    let s = c.shrink(5);
    check_eq!(t, (s.entries, s.bytes), (5, 5 * LEN));
    check_eq!(t, c.shrinkable(), (spare - 5) * LEN);
    let s = c.shrink(spare);
    check_eq!(t, (s.entries, s.bytes), (spare - 5, (spare - 5) * LEN));
    // Lookups and misses are not counted by shrinking.
    check_eq!(t, stats(&c), (hits, misses, used, used * LEN));
    check_eq!(t, c.shrinkable(), 0);
    check_eq!(t, c.shrink(usize::MAX), cache::Shrunk::default());
    // Every key still reads right: a hit or a fresh load.
    let mut bad = 0;
    for i in 0..96 {
        let kk = key((i % 3) as usize, i << 16);
        if !get(&c, kk, LEN, &loads).is_ok_and(|b| valid(&b, kk, LEN)) {
            bad += 1;
        }
    }
    check_eq!(t, bad, 0);
}

/// What the threads of a concurrent case share and record.
struct Shared {
    cache: Cache,
    reserve: Reserve,
    barrier: Barrier,
    /// Where the loads of [`collide`] wait for each other.
    gate: Barrier,
    /// Threads that met the others at the barrier.
    met: AtomicUsize,
    loads: AtomicUsize,
    lookups: AtomicUsize,
    /// Lookups that failed or returned another key's buffer.
    bad: AtomicUsize,
    /// Observations of more bytes cached than the budget.
    over: AtomicUsize,
}

impl Shared {
    fn new(cache: Cache) -> Result<Arc<Self>> {
        let s = Self {
            cache,
            reserve: Reserve::new(SMALL, alloc_every_other)?,
            barrier: Barrier::new()?,
            gate: Barrier::new()?,
            met: AtomicUsize::new(0),
            loads: AtomicUsize::new(0),
            lookups: AtomicUsize::new(0),
            bad: AtomicUsize::new(0),
            over: AtomicUsize::new(0),
        };
        Ok(Arc::new(s, GFP_KERNEL)?)
    }

    fn lookup(&self, k: u64, len: usize) {
        self.lookups.fetch_add(1, Relaxed);
        match get(&self.cache, k, len, &self.loads) {
            Ok(b) if valid(&b, k, len) => {}
            _ => {
                self.bad.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The key that every thread of [`concurrent_lookups_share_entries`]
/// misses at the same time.
const COLLIDE: u64 = (1 << 56) | 0x7ff_0000;

/// Called by `n` threads at once: each misses [`COLLIDE`] and loads it,
/// and no load returns before all of them have started (no lock is held
/// while loading), so all but one find it cached after their load. Each
/// must get the cached buffer, the same as a later hit returns.
fn collide(s: &Shared, n: usize) {
    let first = match s.cache.get(COLLIDE, 0) {
        Some(b) => Ok(b),
        None => {
            s.loads.fetch_add(1, Relaxed);
            if !s.gate.wait(n) {
                s.bad.fetch_add(1, Relaxed);
            }
            contents(COLLIDE, SMALL)
                .and_then(|d| s.cache.insert(COLLIDE, 0, d).map_err(|_| Error::Io(12)))
        }
    };
    let again = get(&s.cache, COLLIDE, SMALL, &s.loads);
    match (first, again) {
        (Ok(a), Ok(b)) if Arc::ptr_eq(&a, &b) && valid(&a, COLLIDE, SMALL) => {}
        _ => {
            s.bad.fetch_add(1, Relaxed);
        }
    }
}

/// Runs `work(shared, thread)` on `n` kworkers that first wait for each
/// other, then joins them.
fn run_threads(t: &Test, shared: &Arc<Shared>, n: usize, work: fn(&Shared, usize)) {
    let Some(threads) = t.ok(Threads::new(n as u16)) else {
        return;
    };
    for w in 0..n {
        let s = shared.clone();
        let spawned = threads.spawn(GFP_KERNEL, move || {
            if s.barrier.wait(n) {
                s.met.fetch_add(1, Relaxed);
            }
            work(&s, w);
        });
        if t.ok(spawned).is_none() {
            break;
        }
    }
    threads.join();
    check_eq!(t, shared.met.load(Relaxed), n);
}

const THREADS: usize = 4;
const KEYS: u64 = 64;
const ROUNDS: u64 = 8;
/// The buffer size of the concurrent cases.
const SMALL: usize = 512;

fn concurrent_lookups_share_entries(t: &Test) {
    // Room for every key in any shard: nothing is evicted.
    let Some(cache) = t.ok(Cache::new(MAX_SHARDS * KEYS as usize * SMALL, SMALL)) else {
        return;
    };
    let Some(shared) = t.ok(Shared::new(cache)) else {
        return;
    };
    run_threads(t, &shared, THREADS, |s, w| {
        collide(s, THREADS);
        // Round 0: all threads in the same order, so they miss the same
        // keys at the same time; then in different orders.
        for r in 0..ROUNDS {
            for i in 0..KEYS {
                let j = (i + r * w as u64 * 7) % KEYS;
                s.lookup(key((j % 2) as usize, j << 16), SMALL);
            }
        }
    });
    // Two lookups of COLLIDE per thread, which all miss the first.
    let total = THREADS as u64 * (ROUNDS * KEYS + 2);
    let (hits, misses, entries, bytes) = stats(&shared.cache);
    check_eq!(t, shared.bad.load(Relaxed), 0);
    check_eq!(
        t,
        shared.lookups.load(Relaxed) as u64 + 2 * THREADS as u64,
        total
    );
    check_eq!(t, hits + misses, total);
    // Each miss loads once; a key may be missed by several threads at once,
    // but is cached once.
    check_eq!(t, shared.loads.load(Relaxed) as u64, misses);
    let most = (KEYS + 1) * THREADS as u64;
    check!(
        t,
        misses >= KEYS + THREADS as u64 && misses <= most,
        "{misses} misses"
    );
    let n = KEYS as usize + 1;
    check_eq!(t, (entries, bytes), (n, n * SMALL));
    // And every key now hits, twice on the same buffer.
    let loads = AtomicUsize::new(0);
    for j in 0..KEYS {
        let kk = key((j % 2) as usize, j << 16);
        let a = get(&shared.cache, kk, SMALL, &loads);
        let b = get(&shared.cache, kk, SMALL, &loads);
        let same = matches!((&a, &b), (Ok(a), Ok(b)) if Arc::ptr_eq(a, b) && valid(a, kk, SMALL));
        check!(t, same, "key {j}");
    }
    check_eq!(t, loads.load(Relaxed), 0);
}

fn concurrent_lookups_keep_the_bound(t: &Test) {
    // Eight shards of one buffer: constant eviction.
    let budget = 8 * SMALL;
    let Some(cache) = t.ok(Cache::new(budget, SMALL)) else {
        return;
    };
    let Some(shared) = t.ok(Shared::new(cache)) else {
        return;
    };
    run_threads(t, &shared, THREADS, |s, w| {
        let mut x = w as u64 + 1;
        for _ in 0..ROUNDS * KEYS {
            // A different pseudo-random sequence per thread.
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let j = (x >> 33) % (KEYS / 2);
            s.lookup(key(0, j << 16), SMALL);
            let st = s.cache.stats();
            if st.bytes > 8 * SMALL || st.bytes != st.entries * SMALL {
                s.over.fetch_add(1, Relaxed);
            }
            // Cleaning and budget changes race with the lookups.
            if w == 0 && x % 16 == 0 {
                s.cache.clean(now_ms());
                s.cache.set_budget(2 * SMALL);
                s.cache.set_budget(8 * SMALL);
            }
        }
    });
    let (hits, misses, entries, bytes) = stats(&shared.cache);
    check_eq!(t, shared.bad.load(Relaxed), 0);
    check_eq!(t, shared.over.load(Relaxed), 0);
    check_eq!(t, hits + misses, THREADS as u64 * ROUNDS * KEYS);
    check_eq!(t, shared.loads.load(Relaxed) as u64, misses);
    check!(t, hits > 0 && misses > 0, "{hits} hits, {misses} misses");
    check!(
        t,
        bytes <= budget && bytes == entries * SMALL,
        "{entries} entries, {bytes} bytes"
    );
}

fn concurrent_lookups_while_shrinking(t: &Test) {
    // Room for every key, so only the shrinker evicts.
    const BUDGET: usize = MAX_SHARDS * KEYS as usize * SMALL;
    let Some(cache) = t.ok(Cache::new(BUDGET, SMALL)) else {
        return;
    };
    let Some(shared) = t.ok(Shared::new(cache)) else {
        return;
    };
    run_threads(t, &shared, THREADS, |s, w| {
        let mut x = w as u64 + 7;
        for i in 0..ROUNDS * KEYS {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.lookup(key(w % 2, ((x >> 33) % KEYS) << 16), SMALL);
            // Thread 0 shrinks as reclaim would, between its lookups.
            if w == 0 && i % 4 == 0 {
                let done = s.cache.shrink(((x >> 40) % 8) as usize);
                if done.bytes != done.entries * SMALL {
                    s.over.fetch_add(1, Relaxed);
                }
            }
            let st = s.cache.stats();
            if st.bytes != st.entries * SMALL || st.bytes > BUDGET {
                s.over.fetch_add(1, Relaxed);
            }
        }
    });
    let (hits, misses, entries, bytes) = stats(&shared.cache);
    check_eq!(t, shared.bad.load(Relaxed), 0);
    check_eq!(t, shared.over.load(Relaxed), 0);
    check_eq!(t, hits + misses, THREADS as u64 * ROUNDS * KEYS);
    check_eq!(t, shared.loads.load(Relaxed) as u64, misses);
    check!(t, hits > 0, "{hits} hits");
    // The shrinker made entries miss again: more misses than keys.
    check!(t, misses > 2 * KEYS, "{misses} misses");
    check_eq!(t, bytes, entries * SMALL);
    // Shrinking everything leaves one entry per shard in use.
    let spare = shared.cache.shrinkable() / SMALL;
    check_eq!(t, shared.cache.shrink(usize::MAX).entries, spare);
    check_eq!(t, shared.cache.shrinkable(), 0);
    check!(t, shared.cache.stats().entries <= MAX_SHARDS);
}

fn concurrent_lookups_share_the_reserve(t: &Test) {
    let Some(cache) = t.ok(Cache::new(MAX_SHARDS * SMALL, SMALL)) else {
        return;
    };
    let Some(shared) = t.ok(Shared::new(cache)) else {
        return;
    };
    run_threads(t, &shared, THREADS, |s, w| {
        for i in 0..ROUNDS * KEYS {
            // Every other miss has no memory for its buffer.
            let kk = key(0, ((i + w as u64) % KEYS) << 16);
            s.lookups.fetch_add(1, Relaxed);
            let good = s.cache.with(
                kk,
                0,
                SMALL,
                &s.reserve,
                |b| fill_for(kk, b),
                |b| b.len() == SMALL && b.iter().enumerate().all(|(i, &x)| x == byte_of(kk, i)),
            );
            if good != Ok(true) {
                s.bad.fetch_add(1, Relaxed);
            }
        }
    });
    check_eq!(t, shared.bad.load(Relaxed), 0);
    let total = THREADS as u64 * ROUNDS * KEYS;
    check_eq!(t, shared.lookups.load(Relaxed) as u64, total);
    let s = shared.cache.stats();
    // The reserve served the misses without memory, and only those.
    check!(
        t,
        shared.reserve.uses() > 0 && shared.reserve.uses() <= s.misses,
        "{} reserve uses, {} misses",
        shared.reserve.uses(),
        s.misses
    );
    check!(
        t,
        s.bytes <= MAX_SHARDS * SMALL && s.bytes == s.entries * SMALL
    );
}

kunit_suite!(
    lff_qcow2_cache,
    [
        keys_and_hits,
        remove_drops_the_entry,
        failed_load_is_not_cached,
        with_fills_once_then_hits,
        load_ahead_caches_once_without_the_reserve,
        reserve_serves_without_memory,
        tags_tell_items_apart,
        lru_eviction_order,
        lru_matches_a_model,
        byte_bound_at_every_step,
        entries_of_any_size,
        budget_change_shrinks,
        clean_frees_idle_entries,
        shrink_keeps_lru_order,
        shrink_spreads_over_shards,
        concurrent_lookups_share_entries,
        concurrent_lookups_keep_the_bound,
        concurrent_lookups_while_shrinking,
        concurrent_lookups_share_the_reserve,
    ]
);

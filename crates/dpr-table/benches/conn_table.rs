//! Connection table benchmarks: lookup of an existing flow and insert of a
//! new one with 1 million entries present, single-threaded and with 2
//! threads, for the per-worker shard design and for a shared `DashMap`.
//!
//! Run: `cargo bench -p dpr-table --bench conn_table`
//! (criterion settings are fixed below: 1 s warm-up, 3 s measurement).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "baseline/conn_v1.rs"]
mod conn_v1;

use conn_v1::OldConnTable;
use core::hash::{BuildHasher, Hasher};
use core::net::{IpAddr, Ipv4Addr};
use core::time::Duration;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dashmap::DashMap;
use dpr_packet::tcp::TcpFlags;
use dpr_packet::{FlowHasher, FlowKey, IpProtocol};
use dpr_table::{
    BATCH, ConnState, ConnTable, ConnTableConfig, Direction, InsertOutcome, PacketInfo,
    PacketOutcome, PeerId, Route, ShardedConnTable, TableKey, Timestamp, V4Key, WideKey,
    worker_for,
};
use std::hint::black_box;
use std::time::Instant;

const N: u32 = 1_000_000;

fn flow(n: u32) -> FlowKey {
    FlowKey::new(
        IpProtocol::Tcp,
        IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 | (n >> 14))),
        (n & 0x3fff) as u16 + 1024,
        Ipv4Addr::new(198, 18, 1, 1).into(),
        443,
    )
}

fn config(capacity: u32) -> ConnTableConfig {
    ConnTableConfig {
        capacity,
        ..ConnTableConfig::default()
    }
}

/// A scattered index in `0..n` for step `i` (Fibonacci hash, then
/// multiply-shift into range): uniform over the table, so every access is
/// cache-cold, the worst case. Keys are built from it on the fly, as a
/// packet's key would come from the (cache-hot) packet.
#[inline]
fn scattered(i: u64, n: u32) -> u32 {
    (((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) * u64::from(n)) >> 32) as u32
}

fn full_table(hasher: FlowHasher) -> ConnTable<V4Key> {
    let mut t = ConnTable::<V4Key>::new(config(N), hasher).unwrap();
    for n in 0..N {
        t.insert(&flow(n), Route::Peer(PeerId(n as u16)), Timestamp(1))
            .unwrap();
    }
    t
}

fn batch(i: u64, n: u32, keys: &mut Vec<PacketInfo>) {
    keys.clear();
    for j in 0..BATCH as u64 {
        keys.push(PacketInfo {
            flow: flow(scattered(i * BATCH as u64 + j, n)),
            dir: Direction::Original,
            flags: TcpFlags::ACK,
            len: 100,
        });
    }
}

/// The `count`-th scattered flow owned by worker `w` of 2 (flows of the
/// other worker are skipped: about one extra hash per operation).
#[inline]
fn next_owned(hasher: &FlowHasher, w: usize, k: &mut u64) -> FlowKey {
    loop {
        *k += 1;
        let f = flow(scattered(*k, N));
        if worker_for(hasher, &f, 2) == w {
            return f;
        }
    }
}

/// One thread, 1,000,000 entries: lookup, per-packet update (single, hot
/// subset, batched) and insert of a new flow evicting the LRU entry.
/// Run: `cargo bench -p dpr-table --bench conn_table -- conn_table_1M/`
fn single_thread(c: &mut Criterion) {
    let hasher = FlowHasher::new(0x5eed);
    let mut t = full_table(hasher);
    println!(
        "ConnTable<V4Key>: capacity {}, entry {} bytes, {:.2} allocated bytes/entry",
        t.capacity(),
        ConnTable::<V4Key>::entry_size(),
        t.allocated_bytes() as f64 / t.capacity() as f64
    );
    let mut g = c.benchmark_group("conn_table_1M");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("lookup_existing", |b| {
        b.iter(|| {
            i += 1;
            black_box(t.lookup_route(&flow(scattered(i, N)), Timestamp(2)))
        })
    });
    g.bench_function("on_packet_existing", |b| {
        b.iter(|| {
            i += 1;
            let k = flow(scattered(i, N));
            black_box(t.on_packet(&k, Direction::Original, TcpFlags::ACK, 100, Timestamp(3)))
        })
    });
    g.bench_function("on_packet_existing_hot_16k_of_1M", |b| {
        b.iter(|| {
            i += 1;
            let k = flow(scattered(i, 16_384) * 61);
            black_box(t.on_packet(&k, Direction::Original, TcpFlags::ACK, 100, Timestamp(3)))
        })
    });
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut pkts = Vec::with_capacity(BATCH);
    let mut out = Vec::with_capacity(BATCH);
    g.bench_function(format!("on_packet_batch{BATCH}_existing"), |b| {
        b.iter(|| {
            i += 1;
            batch(i, N, &mut pkts);
            out.clear();
            t.on_packet_batch(&pkts, Timestamp(3), &mut out);
            black_box(&out);
        })
    });
    g.throughput(Throughput::Elements(1));
    let mut next = N;
    g.bench_function("insert_new_evicting_lru", |b| {
        b.iter(|| {
            next = next.wrapping_add(1);
            black_box(t.insert(&flow(next), Route::Local, Timestamp(4)).unwrap())
        })
    });
    g.finish();
    assert_eq!(t.len(), N as usize);
}

/// Context for the 1M figures: the same lookup on a table that fits in
/// cache (the CPU cost of a lookup), and one random 8-byte read from a
/// 64 MiB array (the memory floor of this machine: one cache and TLB miss).
/// Run: `cargo bench -p dpr-table --bench conn_table -- context`
fn context(c: &mut Criterion) {
    const SMALL: u32 = 16_384;
    let mut t = ConnTable::<V4Key>::new(config(SMALL), FlowHasher::new(1)).unwrap();
    for n in 0..SMALL {
        t.insert(&flow(n), Route::Local, Timestamp(1)).unwrap();
    }
    let mut g = c.benchmark_group("context");
    let mut i = 0u64;
    g.bench_function("lookup_existing_cache_resident_16k", |b| {
        b.iter(|| {
            i += 1;
            black_box(t.lookup_route(&flow(scattered(i, SMALL)), Timestamp(2)))
        })
    });
    g.bench_function("on_packet_existing_cache_resident_16k", |b| {
        b.iter(|| {
            i += 1;
            let k = flow(scattered(i, SMALL));
            black_box(t.on_packet(&k, Direction::Original, TcpFlags::ACK, 100, Timestamp(3)))
        })
    });
    const TINY: u32 = 1024;
    let mut tiny = ConnTable::<V4Key>::new(config(TINY), FlowHasher::new(1)).unwrap();
    for n in 0..TINY {
        tiny.insert(&flow(n), Route::Local, Timestamp(1)).unwrap();
    }
    g.bench_function("lookup_existing_l1_resident_1k", |b| {
        b.iter(|| {
            i += 1;
            black_box(tiny.lookup_route(&flow(scattered(i, TINY)), Timestamp(2)))
        })
    });
    let hasher = FlowHasher::new(1);
    g.bench_function("bench_overhead_make_key_and_hash", |b| {
        b.iter(|| {
            i += 1;
            black_box(hasher.hash(&flow(scattered(i, TINY))))
        })
    });
    let big: Vec<u64> = (0..8u64 << 20).collect();
    let len = big.len() as u32;
    g.bench_function("random_read_64MiB", |b| {
        b.iter(|| {
            i += 1;
            black_box(big[scattered(i, len) as usize])
        })
    });
    g.finish();
}

/// Two workers, each owning one shard of a 1M-entry table; flows steered by
/// hash. ns/op is wall time divided by the total operations of both.
/// Run: `cargo bench -p dpr-table --bench conn_table -- conn_table_1M_2threads`
fn two_thread_shards(c: &mut Criterion) {
    let hasher = FlowHasher::new(0x5eed);
    let mut st = ShardedConnTable::<V4Key>::new(config(N + N / 50), 2, hasher).unwrap();
    for n in 0..N {
        let k = flow(n);
        st.shard_mut_for(&k)
            .insert(&k, Route::Local, Timestamp(1))
            .unwrap();
    }
    assert_eq!(st.len(), N as usize);
    let mut shards = st.into_shards();
    let mut g = c.benchmark_group("conn_table_1M_2threads");
    g.throughput(Throughput::Elements(1));
    let mut cursor = [0u64, 0u64];
    g.bench_function("shards_on_packet_existing", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for (w, (shard, k)) in shards.iter_mut().zip(cursor.iter_mut()).enumerate() {
                    s.spawn(move || {
                        for _ in 0..iters / 2 {
                            let f = next_owned(&hasher, w, k);
                            black_box(shard.on_packet(
                                &f,
                                Direction::Original,
                                TcpFlags::ACK,
                                100,
                                Timestamp(3),
                            ));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(format!("shards_on_packet_batch{BATCH}_existing"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for (w, (shard, k)) in shards.iter_mut().zip(cursor.iter_mut()).enumerate() {
                    s.spawn(move || {
                        let mut pkts = Vec::with_capacity(BATCH);
                        let mut out = Vec::with_capacity(BATCH);
                        for _ in 0..iters / 2 {
                            pkts.clear();
                            for _ in 0..BATCH {
                                pkts.push(PacketInfo {
                                    flow: next_owned(&hasher, w, k),
                                    dir: Direction::Original,
                                    flags: TcpFlags::ACK,
                                    len: 100,
                                });
                            }
                            out.clear();
                            shard.on_packet_batch(&pkts, Timestamp(3), &mut out);
                            black_box(&out);
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.throughput(Throughput::Elements(1));
    let mut next = [N, N + (1 << 30)];
    g.bench_function("shards_insert_new_evicting_lru", |b| {
        b.iter_custom(|iters| {
            let (s0, s1) = shards.split_at_mut(1);
            let (n0, n1) = next.split_at_mut(1);
            let work = [(&mut s0[0], &mut n0[0]), (&mut s1[0], &mut n1[0])];
            let start = Instant::now();
            std::thread::scope(|s| {
                for (shard, next) in work {
                    s.spawn(move || {
                        // Each worker inserts only flows steered to it.
                        let w = if *next >= 1 << 30 { 1 } else { 0 };
                        let mut done = 0;
                        while done < iters / 2 {
                            *next = next.wrapping_add(1);
                            let k = flow(*next);
                            if worker_for(&hasher, &k, 2) == w {
                                black_box(shard.insert(&k, Route::Local, Timestamp(4)).unwrap());
                                done += 1;
                            }
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

/// A fast `Hasher` for the `DashMap` comparison (FxHash-style), so the
/// comparison is between map designs, not between SipHash and wyhash.
#[derive(Clone, Copy, Default)]
struct FxBuild;
struct Fx(u64);
impl Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}
impl BuildHasher for FxBuild {
    type Hasher = Fx;
    fn build_hasher(&self) -> Fx {
        Fx(0)
    }
}

/// What the `DashMap` stores per flow (no LRU links: DashMap has no
/// eviction, so this comparison flatters it).
#[derive(Clone, Copy)]
#[allow(dead_code)]
struct DashEntry {
    route: Route,
    state: ConnState,
    last_seen: u64,
    packets: u32,
    bytes: u64,
}

/// The same operations on a shared `DashMap` with 1,000,000 entries.
/// Run: `cargo bench -p dpr-table --bench conn_table -- dashmap_1M`
fn dashmap_compare(c: &mut Criterion) {
    let map: DashMap<FlowKey, DashEntry, FxBuild> =
        DashMap::with_capacity_and_hasher(N as usize, FxBuild);
    for n in 0..N {
        map.insert(
            flow(n),
            DashEntry {
                route: Route::Local,
                state: ConnState::SynSeen,
                last_seen: 1,
                packets: 0,
                bytes: 0,
            },
        );
    }
    let mut g = c.benchmark_group("dashmap_1M");
    g.throughput(Throughput::Elements(1));
    let update = |map: &DashMap<FlowKey, DashEntry, FxBuild>, k: &FlowKey| {
        if let Some(mut e) = map.get_mut(k) {
            e.packets += 1;
            e.bytes += 100;
            e.last_seen = 3;
            e.state = ConnState::Established;
        }
    };
    let mut i = 0u64;
    g.bench_function("on_packet_existing_1thread", |b| {
        b.iter(|| {
            i += 1;
            update(&map, &flow(scattered(i, N)));
        })
    });
    g.bench_function("on_packet_existing_2threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..2u64 {
                    let map = &map;
                    s.spawn(move || {
                        for i in 0..iters / 2 {
                            update(map, &flow(scattered(i * 2 + t, N)));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    let mut next = N;
    g.bench_function("insert_new_remove_old_1thread", |b| {
        b.iter_batched(
            || {
                next += 1;
                next
            },
            |n| {
                map.insert(
                    flow(n),
                    DashEntry {
                        route: Route::Local,
                        state: ConnState::SynSeen,
                        last_seen: 4,
                        packets: 0,
                        bytes: 0,
                    },
                );
                map.remove(&flow(n - N));
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The operations the layout comparison times, on either layout.
trait Layout {
    fn insert(&mut self, f: &FlowKey, now: Timestamp) -> InsertOutcome;
    fn on_packet(&mut self, f: &FlowKey, now: Timestamp) -> PacketOutcome;
    fn on_packet_batch(&mut self, p: &[PacketInfo], now: Timestamp, out: &mut Vec<PacketOutcome>);
}

macro_rules! layout {
    ($t:ident) => {
        impl<K: TableKey> Layout for $t<K> {
            #[inline]
            fn insert(&mut self, f: &FlowKey, now: Timestamp) -> InsertOutcome {
                self.insert_syn(f, Route::Peer(PeerId(1)), 7, now).unwrap()
            }
            #[inline]
            fn on_packet(&mut self, f: &FlowKey, now: Timestamp) -> PacketOutcome {
                $t::on_packet(self, f, Direction::Original, TcpFlags::ACK, 100, now)
            }
            #[inline]
            fn on_packet_batch(
                &mut self,
                p: &[PacketInfo],
                now: Timestamp,
                out: &mut Vec<PacketOutcome>,
            ) {
                $t::on_packet_batch(self, p, now, out)
            }
        }
    };
}
layout!(ConnTable);
layout!(OldConnTable);

/// Old layout (`baseline/conn_v1.rs`: 80-byte `WideKey` entries, stored
/// hash) against the current one, side by side in one run, for the
/// engine's key form (`WideKey`, IPv4 flows) and `V4Key`: 1,000,000 flows,
/// random existing flows one at a time and 32 at a time, insert of a new
/// flow evicting the LRU one, and a table that fits in cache.
/// Run: `cargo bench -p dpr-table --bench conn_table -- layout`
fn layout_compare(c: &mut Criterion) {
    fn fill<T: Layout>(t: &mut T, n: u32) {
        for i in 0..n {
            t.insert(&flow(i), Timestamp(1));
        }
    }
    /// Each operation on the old table, then on the new one, so the two
    /// figures are taken next to each other.
    fn run<A: Layout, B: Layout>(c: &mut Criterion, name: &str, old: &mut A, new: &mut B, n: u32) {
        let mut g = c.benchmark_group(format!("layout_{name}"));
        let mut i = 0u64;
        g.throughput(Throughput::Elements(1));
        g.bench_function("on_packet_existing/old", |b| {
            b.iter(|| {
                i += 1;
                black_box(old.on_packet(&flow(scattered(i, n)), Timestamp(3)))
            })
        });
        g.bench_function("on_packet_existing/new", |b| {
            b.iter(|| {
                i += 1;
                black_box(new.on_packet(&flow(scattered(i, n)), Timestamp(3)))
            })
        });
        g.throughput(Throughput::Elements(BATCH as u64));
        let mut pkts = Vec::with_capacity(BATCH);
        let mut out = Vec::with_capacity(BATCH);
        g.bench_function(format!("on_packet_batch{BATCH}_existing/old"), |b| {
            b.iter(|| {
                i += 1;
                batch(i, n, &mut pkts);
                out.clear();
                old.on_packet_batch(&pkts, Timestamp(3), &mut out);
                black_box(&out);
            })
        });
        g.bench_function(format!("on_packet_batch{BATCH}_existing/new"), |b| {
            b.iter(|| {
                i += 1;
                batch(i, n, &mut pkts);
                out.clear();
                new.on_packet_batch(&pkts, Timestamp(3), &mut out);
                black_box(&out);
            })
        });
        g.throughput(Throughput::Elements(1));
        let mut next = n;
        g.bench_function("insert_new_evicting_lru/old", |b| {
            b.iter(|| {
                next = next.wrapping_add(1);
                black_box(old.insert(&flow(next), Timestamp(4)))
            })
        });
        let mut next = n;
        g.bench_function("insert_new_evicting_lru/new", |b| {
            b.iter(|| {
                next = next.wrapping_add(1);
                black_box(new.insert(&flow(next), Timestamp(4)))
            })
        });
        g.finish();
    }
    let h = FlowHasher::new(0x5eed);
    for n in [N, 16_384] {
        let size = if n == N { "1M" } else { "16k" };
        let mut old = OldConnTable::<WideKey>::new(config(n), h).unwrap();
        let mut new = ConnTable::<WideKey>::new(config(n), h).unwrap();
        fill(&mut old, n);
        fill(&mut new, n);
        run(c, &format!("{size}_wide"), &mut old, &mut new, n);
        drop((old, new));
        let mut old = OldConnTable::<V4Key>::new(config(n), h).unwrap();
        let mut new = ConnTable::<V4Key>::new(config(n), h).unwrap();
        fill(&mut old, n);
        fill(&mut new, n);
        run(c, &format!("{size}_v4"), &mut old, &mut new, n);
    }
}

fn config_criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config_criterion();
    targets = layout_compare, context, single_thread, two_thread_shards, dashmap_compare
}
criterion_main!(benches);

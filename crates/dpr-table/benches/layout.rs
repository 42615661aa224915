//! Old table layout (before issue 17, frozen in `baseline/conn_v1.rs`)
//! against the current one, in one process, interleaved: each round times
//! a chunk of operations on the old table, then the same on the new one,
//! so that load from other jobs on the machine hits both alike. Prints the
//! median ns per operation of each and the median of the per-round ratios.
//!
//! Run: `cargo bench -p dpr-table --bench layout` (`-- --rounds 31`;
//! `-- --aa` also times the new table against a second new table, which
//! shows how far the machine's noise alone moves a ratio).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "baseline/conn_v1.rs"]
mod conn_v1;

use conn_v1::OldConnTable;
use core::net::{IpAddr, Ipv4Addr};
use dpr_packet::tcp::TcpFlags;
use dpr_packet::{FlowHasher, FlowKey, IpProtocol};
use dpr_table::{
    BATCH, ConnTable, ConnTableConfig, Direction, PacketInfo, PacketOutcome, PeerId, Route,
    TableKey, Timestamp, V4Key, WideKey,
};
use std::hint::black_box;
use std::time::Instant;

fn flow(n: u32) -> FlowKey {
    FlowKey::new(
        IpProtocol::Tcp,
        IpAddr::V4(Ipv4Addr::from_bits(0xc612_0000 | (n >> 15))),
        (n & 0x7fff) as u16 + 1024,
        Ipv4Addr::new(198, 19, 255, 1).into(),
        80,
    )
}

/// A scattered index in `0..n` (Fibonacci hash, multiply-shift): every
/// access of a large table misses cache and TLB.
fn scattered(i: u64, n: u32) -> u32 {
    (((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) * u64::from(n)) >> 32) as u32
}

trait Layout {
    fn insert(&mut self, f: &FlowKey, now: Timestamp);
    fn on_packet(&mut self, f: &FlowKey, now: Timestamp) -> PacketOutcome;
    fn on_packet_batch(&mut self, p: &[PacketInfo], now: Timestamp, out: &mut Vec<PacketOutcome>);
}

macro_rules! layout {
    ($t:ident) => {
        impl<K: TableKey> Layout for $t<K> {
            #[inline]
            fn insert(&mut self, f: &FlowKey, now: Timestamp) {
                black_box(self.insert_syn(f, Route::Peer(PeerId(1)), 7, now).unwrap());
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

#[derive(Clone, Copy)]
enum Op {
    Packet,
    Batch,
    Insert,
}

/// Runs `ops` operations of kind `op` from step `*i`; ns per operation.
fn chunk<T: Layout>(t: &mut T, op: Op, n: u32, i: &mut u64, next: &mut u32, ops: u64) -> f64 {
    let mut pkts = Vec::with_capacity(BATCH);
    let mut out = Vec::with_capacity(BATCH);
    let start = Instant::now();
    match op {
        Op::Packet => {
            for _ in 0..ops {
                *i += 1;
                black_box(t.on_packet(&flow(scattered(*i, n)), Timestamp(3)));
            }
        }
        Op::Batch => {
            for _ in 0..ops / BATCH as u64 {
                pkts.clear();
                for _ in 0..BATCH {
                    *i += 1;
                    pkts.push(PacketInfo {
                        flow: flow(scattered(*i, n)),
                        dir: Direction::Original,
                        flags: TcpFlags::ACK,
                        len: 100,
                    });
                }
                out.clear();
                t.on_packet_batch(&pkts, Timestamp(3), &mut out);
                black_box(&out);
            }
        }
        Op::Insert => {
            for _ in 0..ops {
                *next = next.wrapping_add(1);
                t.insert(&flow(*next), Timestamp(4));
            }
        }
    }
    start.elapsed().as_nanos() as f64 / ops as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn compare<A: Layout, B: Layout>(name: &str, old: &mut A, new: &mut B, n: u32, rounds: usize) {
    for (op, label, ops) in [
        (Op::Packet, "on_packet, one at a time", 50_000u64),
        (Op::Batch, "on_packet_batch, 32 at a time", 50_016),
        (Op::Insert, "insert evicting the LRU entry", 20_000),
    ] {
        let (mut to, mut tn, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        // Both tables see the same flows in the same order.
        let (mut i, mut next) = (0u64, n);
        for _ in 0..rounds {
            let (mut i2, mut next2) = (i, next);
            let a = chunk(old, op, n, &mut i, &mut next, ops);
            let b = chunk(new, op, n, &mut i2, &mut next2, ops);
            to.push(a);
            tn.push(b);
            ratio.push(b / a);
        }
        println!(
            "{name:<22} {label:<32} old {:>7.1} ns  new {:>7.1} ns  new/old {:.2}",
            median(&mut to),
            median(&mut tn),
            median(&mut ratio)
        );
    }
}

fn config(capacity: u32) -> ConnTableConfig {
    ConnTableConfig {
        capacity,
        ..ConnTableConfig::default()
    }
}

fn run_aa<K: TableKey>(name: &str, n: u32, rounds: usize) {
    let h = FlowHasher::new(0x5eed);
    let mut a = ConnTable::<K>::new(config(n), h).unwrap();
    let mut b = ConnTable::<K>::new(config(n), h).unwrap();
    for i in 0..n {
        Layout::insert(&mut a, &flow(i), Timestamp(1));
        Layout::insert(&mut b, &flow(i), Timestamp(1));
    }
    compare(name, &mut a, &mut b, n, rounds);
}

fn run<K: TableKey>(name: &str, n: u32, rounds: usize) {
    let h = FlowHasher::new(0x5eed);
    let mut new = ConnTable::<K>::new(config(n), h).unwrap();
    let mut old = OldConnTable::<K>::new(config(n), h).unwrap();
    for i in 0..n {
        Layout::insert(&mut new, &flow(i), Timestamp(1));
    }
    for i in 0..n {
        Layout::insert(&mut old, &flow(i), Timestamp(1));
    }
    compare(name, &mut old, &mut new, n, rounds);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|p| args.get(p + 1))
        .and_then(|r| r.parse().ok())
        .unwrap_or(15);
    println!("median of {rounds} interleaved rounds (ns per packet or insert):");
    run::<WideKey>("1M flows, WideKey", 1_000_000, rounds);
    run::<V4Key>("1M flows, V4Key", 1_000_000, rounds);
    run::<WideKey>("16k flows, WideKey", 16_384, rounds);
    run::<V4Key>("16k flows, V4Key", 16_384, rounds);
    if args.iter().any(|a| a == "--aa") {
        println!("A/A: the new table against a second new table (noise):");
        run_aa::<WideKey>("1M flows, WideKey A/A", 1_000_000, rounds);
        run_aa::<V4Key>("1M flows, V4Key A/A", 1_000_000, rounds);
    }
}

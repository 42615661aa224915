//! The engine on 1 and 2 threads, an engine per thread (`EngineSet` /
//! `Shard`), over 1 M flows, in one run: the ratio of 2 threads' packet
//! rate to 1 thread's. No I/O: each thread runs its shard over the packets
//! of the flows it owns (`worker_for`), finding each packet's owner first
//! (`Shard::owner_of`), as the workers do.
//!
//! ```text
//! cargo bench -p dpr-io --bench scaling [-- --flows 1000000 --rounds 3]
//! ```
//! Each flow sends a SYN, two ACKs and a FIN (4 M packets); the threshold
//! policy serves half of them here and redirects half to a peer (IP-in-IP).

use dpr_io::shard::{EngineSet, Shard, split_capacity};
use dpr_packet::{FlowHasher, FlowKey, IpProtocol};
use dpr_policy::{SplitMix64, StatelessHash, StatelessHashConfig};
use dpr_router::{ClusterEngine, Engine, EngineConfig, PacketBuf, Verdict};
use dpr_table::{
    Capacity, LoadFigures, LoadReport, LoadTableConfig, PeerId, Timestamp, worker_for,
};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

const HEADROOM: usize = 64;

fn engine(capacity: u32) -> Engine {
    let mut cfg = EngineConfig::new(
        Ipv4Addr::new(198, 19, 0, 1).into(),
        vec![Ipv4Addr::new(198, 18, 0, 1).into()],
        vec![80],
    );
    cfg.routes.capacity = capacity;
    cfg.served.capacity = 1024;
    let policy = StatelessHash::new(StatelessHashConfig {
        seed: 7,
        buckets: 4096,
    })
    .unwrap_or_else(|_| unreachable!());
    Engine::new(
        cfg,
        PeerId(0),
        Capacity::default(),
        LoadTableConfig::default(),
        Box::new(policy),
        Box::new(SplitMix64::new(3)),
    )
    .unwrap_or_else(|_| unreachable!())
}

fn client(i: u32) -> (Ipv4Addr, u16) {
    let a = 0xC612_0000 | ((i >> 8) & 0xffff); // 198.18.x.y
    (Ipv4Addr::from(a), 1024 + (i & 0xff) as u16)
}

fn packet(buf: &mut [u8], src: Ipv4Addr, port: u16, flags: u8) {
    let p = &mut buf[HEADROOM..HEADROOM + 40];
    p.copy_from_slice(&[
        0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 0, 0, 0, 0, 198, 18, 0, 1, 0, 0, 0, 80, 0, 0,
        0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    p[12..16].copy_from_slice(&src.octets());
    p[20..22].copy_from_slice(&port.to_be_bytes());
}

/// Runs `shard` over the flows it owns; returns packets processed.
fn run(shard: &mut Shard, flows: &[u32]) -> u64 {
    let mut buf = vec![0u8; HEADROOM + 1500];
    let mut n = 0u64;
    let now = Timestamp::from_millis(1);
    for flags in [0x02u8, 0x10, 0x18, 0x11] {
        for &i in flows {
            let (src, port) = client(i);
            packet(&mut buf, src, port, flags);
            // As the worker does: which shard owns the packet's flow (a
            // parse and a hash with 2 shards; nothing with one).
            if shard.owner_of(&buf[HEADROOM..HEADROOM + 40]) != shard.index() {
                continue;
            }
            let Some(mut pkt) = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + 40) else {
                continue;
            };
            let v = shard.process(now, &mut pkt);
            black_box(matches!(v, Verdict::Drop(_)));
            n += 1;
        }
    }
    n
}

fn key(hasher: &FlowHasher, i: u32, n: usize) -> usize {
    let (src, port) = client(i);
    let f = FlowKey::new(
        IpProtocol::Tcp,
        IpAddr::V4(src),
        port,
        Ipv4Addr::new(198, 18, 0, 1).into(),
        80,
    );
    worker_for(hasher, &f, n)
}

/// One measurement on `threads` threads; packets per second.
fn measure(threads: usize, flows: u32) -> f64 {
    let total = split_capacity(flows.next_power_of_two().max(1024), 1);
    let shards: Vec<Engine> = (0..threads)
        .map(|_| engine(split_capacity(total, threads)))
        .collect();
    let (mut set, shards) = EngineSet::new(engine(1), shards);
    let now = Timestamp::ZERO;
    let _ = set.add_peer(PeerId(1), Ipv4Addr::new(198, 19, 0, 2).into(), vec![], now);
    let idle = LoadReport {
        seq: 1,
        figures: LoadFigures::default(),
        capacity: Capacity::default(),
        draining: false,
    };
    let _ = set.apply_report(PeerId(1), &idle, now);
    let hasher = *set.control().flow_hasher();
    let mut parts: Vec<Vec<u32>> = vec![Vec::new(); threads];
    for i in 0..flows {
        parts[key(&hasher, i, threads)].push(i);
    }
    let mut shards: Vec<Shard> = shards;
    for s in &mut shards {
        s.poll();
    }
    let start = Instant::now();
    let counts: Vec<u64> = std::thread::scope(|sc| {
        let hs: Vec<_> = shards
            .iter_mut()
            .zip(&parts)
            .map(|(s, f)| sc.spawn(move || run(s, f)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let forwarded: u64 = shards
        .iter_mut()
        .map(|s| s.engine().counters().forwarded)
        .sum();
    black_box(forwarded);
    counts.iter().sum::<u64>() as f64 / secs
}

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("scaling [--flows N] [--rounds R]: the engine on 1 and 2 threads, pps and ratio");
        return;
    }
    let flows = arg("--flows", 1_000_000);
    let rounds = arg("--rounds", 3).max(1);
    // Warm-up (page faults of the tables, CPU frequency).
    let _ = measure(2, flows / 4);
    let mut one = Vec::new();
    let mut two = Vec::new();
    let mut half = Vec::new();
    for _ in 0..rounds {
        one.push(measure(1, flows));
        two.push(measure(2, flows));
        half.push(measure(1, flows / 2));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b, h) = (median(&mut one), median(&mut two), median(&mut half));
    println!("engine scaling, 4 packets per flow, median of {rounds} rounds:");
    println!(
        "  1 thread,  {flows} flows: {:>6.2} Mpps ({:.0} ns/packet)",
        a / 1e6,
        1e9 / a
    );
    println!(
        "  2 threads, {flows} flows: {:>6.2} Mpps ({:.0} ns/packet per thread)",
        b / 1e6,
        2e9 / b
    );
    println!("  ratio 2/1 over the same flows: {:.2}x", b / a);
    // A 2-thread shard's table holds half the flows: part of that ratio
    // is cache. One thread over a shard's share isolates the parallel part.
    println!(
        "  1 thread,  {} flows (one shard's share): {:>6.2} Mpps",
        flows / 2,
        h / 1e6
    );
    println!("  ratio 2/1 at equal flows per thread: {:.2}x", b / h);
}

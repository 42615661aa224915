//! The whole per-packet path of one engine, with 1 million flows routed.
//!
//! `cargo bench -p dpr-router --bench engine`
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dpr_packet::siphash::SipKey;
use dpr_packet::tcp::TcpFlags;
use dpr_policy::{SplitMix64, Threshold, ThresholdConfig};
use dpr_router::harness::tcp::tcp_packet;
use dpr_router::{Engine, EngineConfig, PacketBuf, TunnelAuth, TunnelKeys, Verdict};
use dpr_table::{BATCH, Capacity, LoadFigures, LoadReport, LoadTableConfig, PeerId, Timestamp};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};

const FLOWS: u32 = 1_000_000;
const HEADROOM: usize = 64;

fn client(i: u32) -> SocketAddr {
    // 198.18.0.0/15 holds 2^17 addresses; 2^15 ports each: 2^32 distinct clients.
    let a = Ipv4Addr::from(0xc612_0000u32 | (i >> 15) & 0x1_ffff);
    SocketAddr::new(a.into(), (i & 0x7fff) as u16 + 1024)
}

fn engine() -> Engine {
    engine_with(TunnelAuth::None)
}

fn engine_with(auth: TunnelAuth) -> Engine {
    let svc = Ipv4Addr::new(198, 19, 255, 1);
    let mut cfg = EngineConfig::new(
        Ipv4Addr::new(198, 19, 0, 1).into(),
        vec![svc.into()],
        vec![80],
    );
    cfg.routes.capacity = FLOWS;
    cfg.tunnel_auth = auth;
    cfg.routes.sweep_per_call = std::env::var("SWEEP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cfg.routes.sweep_per_call);
    let policy = Threshold::new(ThresholdConfig { threshold: 1.0 }).unwrap();
    let mut e = Engine::new(
        cfg,
        PeerId(0),
        Capacity::default(),
        LoadTableConfig::default(),
        Box::new(policy),
        Box::new(SplitMix64::new(1)),
    )
    .unwrap();
    for p in 1..=3u16 {
        e.add_peer(
            PeerId(p),
            Ipv4Addr::new(198, 19, 0, p as u8 + 1).into(),
            vec![],
            Timestamp::ZERO,
        )
        .unwrap();
        let r = LoadReport {
            seq: 1,
            figures: LoadFigures::default(),
            capacity: Capacity::default(),
            draining: false,
        };
        e.apply_report(PeerId(p), &r, Timestamp::ZERO).unwrap();
    }
    // Far over its threshold: every new connection is redirected, even after
    // optimistic accounting has counted a million redirects against the peers.
    e.set_local_load(
        LoadFigures {
            open_connections: 100_000_000,
            ..LoadFigures::default()
        },
        Capacity::default(),
    )
    .unwrap();
    e
}

fn packet(pkt: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; HEADROOM + pkt.len()];
    b[HEADROOM..].copy_from_slice(pkt);
    b
}

/// Routes `FLOWS` connections (one SYN each).
fn fill(e: &mut Engine, svc: SocketAddr, now: Timestamp) {
    for i in 0..FLOWS {
        let mut b = packet(&tcp_packet(
            client(i),
            svc,
            1,
            0,
            TcpFlags::SYN,
            Some(1460),
            &[],
        ));
        let end = b.len();
        let v = e.process(now, &mut PacketBuf::new(&mut b, HEADROOM, end).unwrap());
        assert!(matches!(v, Verdict::Forward { .. }));
    }
    assert_eq!(e.routes().len(), FLOWS as usize);
}

/// Packets of established flows picked at random among the million.
fn random_established(svc: SocketAddr, n: usize, mut state: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state % u64::from(FLOWS)) as u32;
            packet(&tcp_packet(
                client(i),
                svc,
                2,
                1,
                TcpFlags::ACK,
                None,
                b"0123456789",
            ))
        })
        .collect()
}

/// Packets per random-flow round: far more flows than the caches hold
/// lines for (each touches an index slot, an entry and its LRU neighbours).
const RANDOM: usize = 1 << 16;

fn benches(c: &mut Criterion) {
    let svc = SocketAddr::new(Ipv4Addr::new(198, 19, 255, 1).into(), 80);
    let mut e = engine();
    let now = Timestamp::from_millis(1);
    fill(&mut e, svc, now);

    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    // An ACK with 10 bytes of data of an established, redirected flow.
    let mut est = packet(&tcp_packet(
        client(FLOWS / 2),
        svc,
        2,
        1,
        TcpFlags::ACK,
        None,
        b"0123456789",
    ));
    let end = est.len();
    g.bench_function("established_redirected/1M-flows", |b| {
        b.iter(|| {
            let mut pb = PacketBuf::new(black_box(&mut est), HEADROOM, end).unwrap();
            e.process(now, &mut pb)
        })
    });
    // The same, over 4096 established flows picked at random among the
    // million: each packet's table entry is cold (cache and TLB misses), as
    // on a busy router.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut pick = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % u64::from(FLOWS)) as u32
    };
    let mut cold: Vec<Vec<u8>> = (0..4096)
        .map(|_| {
            packet(&tcp_packet(
                client(pick()),
                svc,
                2,
                1,
                TcpFlags::ACK,
                None,
                b"0123456789",
            ))
        })
        .collect();
    let mut k = 0usize;
    g.bench_function("established_redirected/1M-flows-random", |b| {
        b.iter(|| {
            k = (k + 1) & 4095;
            let buf = &mut cold[k];
            let end = buf.len();
            let mut pb = PacketBuf::new(black_box(buf), HEADROOM, end).unwrap();
            e.process(now, &mut pb)
        })
    });
    // A SYN of a new connection: policy decision, insert (evicting the LRU
    // entry: the table is full), MSS clamp, encapsulation.
    let mut syn = packet(&tcp_packet(
        client(FLOWS + 1),
        svc,
        1,
        0,
        TcpFlags::SYN,
        Some(1460),
        &[],
    ));
    let end = syn.len();
    let mut n = FLOWS + 1;
    g.bench_function("new_syn_redirected/1M-flows", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            // A fresh source address and port each time (checksum not
            // verified by the router, so no need to fix it).
            let c = client(n);
            let ip = HEADROOM;
            if let std::net::IpAddr::V4(a) = c.ip() {
                syn[ip + 12..ip + 16].copy_from_slice(&a.octets());
            }
            syn[ip + 20..ip + 22].copy_from_slice(&c.port().to_be_bytes());
            let mut pb = PacketBuf::new(black_box(&mut syn), HEADROOM, end).unwrap();
            e.process(now, &mut pb)
        })
    });
    // Issue 17's cases. The same 65,536 packets of flows random among the
    // million, one `process` at a time and then `process_batch` 32 at a
    // time (the batch size of the AF_XDP and TUN loops).
    let mut many = random_established(svc, RANDOM, 0x9e37_79b9_7f4a_7c15);
    let mut k = 0usize;
    g.bench_function("established_redirected/1M-random-one-at-a-time", |b| {
        b.iter(|| {
            k = (k + 1) % RANDOM;
            let buf = &mut many[k];
            let end = buf.len();
            let mut pb = PacketBuf::new(black_box(buf), HEADROOM, end).unwrap();
            e.process(now, &mut pb)
        })
    });
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut out = Vec::with_capacity(BATCH);
    let mut at = 0usize;
    g.bench_function("established_redirected/1M-random-batched-32", |b| {
        b.iter(|| {
            let chunk = &mut many[at..at + BATCH];
            at = (at + BATCH) % RANDOM;
            let mut pbs: Vec<PacketBuf<'_>> = chunk
                .iter_mut()
                .map(|buf| {
                    let end = buf.len();
                    PacketBuf::new(buf, HEADROOM, end).unwrap()
                })
                .collect();
            out.clear();
            e.process_batch(now, black_box(&mut pbs), &mut out);
            out.len()
        })
    });
    // The same flow, 32 at a time: what batching costs or saves in cache.
    let mut same: Vec<Vec<u8>> = (0..BATCH).map(|_| est.clone()).collect();
    g.bench_function("established_redirected/in-cache-batched-32", |b| {
        b.iter(|| {
            let mut pbs: Vec<PacketBuf<'_>> = same
                .iter_mut()
                .map(|buf| {
                    let end = buf.len();
                    PacketBuf::new(buf, HEADROOM, end).unwrap()
                })
                .collect();
            out.clear();
            e.process_batch(now, black_box(&mut pbs), &mut out);
            out.len()
        })
    });
    g.throughput(Throughput::Elements(1));
    drop(e);
    // The keyed tunnel (dprd's default): the same established packet, in
    // cache, with the GRE header and its SipHash tag.
    let mut keyed = engine_with(TunnelAuth::Key(
        TunnelKeys::new(vec![(1, SipKey::from_bytes([7; 16]))]).unwrap(),
    ));
    fill(&mut keyed, svc, now);
    let end = est.len();
    g.bench_function("established_redirected_keyed/1M-flows", |b| {
        b.iter(|| {
            let mut pb = PacketBuf::new(black_box(&mut est), HEADROOM, end).unwrap();
            keyed.process(now, &mut pb)
        })
    });
    g.finish();
}

criterion_group! {
    name = engine_benches;
    config = Criterion::default().sample_size(50);
    targets = benches
}
criterion_main!(engine_benches);

//! The engine's per-packet cost in CPU time, for a machine shared with
//! other jobs: each case runs a fixed number of packets and reads this
//! thread's CPU clock (`dpr_io::sys::thread_cpu_ns`) before and after, so
//! time spent descheduled does not count (criterion's wall time
//! doubles when another job takes the core). The cases run in turn, round
//! after round; the figure is the median of the rounds.
//!
//! Here rather than in `dpr-router` because the thread's CPU clock is a
//! syscall, and syscalls live in `dpr-io`.
//!
//! `cargo bench -p dpr-io --bench engine_cpu [-- ROUNDS]`
#![allow(missing_docs, clippy::unwrap_used)]

use dpr_packet::siphash::SipKey;
use dpr_packet::tcp::TcpFlags;
use dpr_policy::{SplitMix64, Threshold, ThresholdConfig};
use dpr_router::harness::tcp::tcp_packet;
use dpr_router::{Engine, EngineConfig, PacketBuf, TunnelAuth, TunnelKeys, Verdict};
use dpr_table::{Capacity, LoadFigures, LoadReport, LoadTableConfig, PeerId, Timestamp};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};

const FLOWS: u32 = 1_000_000;
const HEADROOM: usize = 64;
/// Packets of flows random among the million per round.
const RANDOM: usize = 1 << 16;
const BATCH: usize = 32;

fn client(i: u32) -> SocketAddr {
    let a = Ipv4Addr::from(0xc612_0000u32 | (i >> 15) & 0x1_ffff);
    SocketAddr::new(a.into(), (i & 0x7fff) as u16 + 1024)
}

fn engine(auth: TunnelAuth) -> Engine {
    let svc = Ipv4Addr::new(198, 19, 255, 1);
    let mut cfg = EngineConfig::new(
        Ipv4Addr::new(198, 19, 0, 1).into(),
        vec![svc.into()],
        vec![80],
    );
    cfg.routes.capacity = FLOWS;
    cfg.tunnel_auth = auth;
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
    // As the data path's engines run (`EngineSet::new` advises their
    // still-empty tables); HUGE=0 leaves it out.
    if std::env::var("HUGE").as_deref() != Ok("0") {
        e.advise_memory(dpr_io::sys::advise_huge_pages);
    }
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
    e.set_local_load(
        LoadFigures {
            open_connections: 100_000_000,
            ..LoadFigures::default()
        },
        Capacity::default(),
    )
    .unwrap();
    let svc = SocketAddr::new(svc.into(), 80);
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
        let v = e.process(now(), &mut PacketBuf::new(&mut b, HEADROOM, end).unwrap());
        assert!(matches!(v, Verdict::Forward { .. }));
    }
    e
}

fn now() -> Timestamp {
    Timestamp::from_millis(1)
}

fn packet(pkt: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; HEADROOM + pkt.len()];
    b[HEADROOM..].copy_from_slice(pkt);
    b
}

fn established(i: u32) -> Vec<u8> {
    let svc = SocketAddr::new(Ipv4Addr::new(198, 19, 255, 1).into(), 80);
    packet(&tcp_packet(
        client(i),
        svc,
        2,
        1,
        TcpFlags::ACK,
        None,
        b"0123456789",
    ))
}

/// On-CPU nanoseconds per packet of `packets` packets run by `f`.
fn per_packet(packets: usize, f: impl FnOnce()) -> f64 {
    let t = dpr_io::sys::thread_cpu_ns();
    f();
    (dpr_io::sys::thread_cpu_ns() - t) as f64 / packets as f64
}

fn one_at_a_time(e: &mut Engine, bufs: &mut [Vec<u8>]) {
    for b in bufs.iter_mut() {
        let end = b.len();
        let mut pb = PacketBuf::new(black_box(b), HEADROOM, end).unwrap();
        black_box(e.process(now(), &mut pb));
    }
}

// BEGIN batched
fn batched(e: &mut Engine, bufs: &mut [Vec<u8>], out: &mut Vec<Verdict>) {
    for chunk in bufs.chunks_mut(BATCH) {
        let mut pbs: Vec<PacketBuf<'_>> = chunk
            .iter_mut()
            .map(|b| {
                let end = b.len();
                PacketBuf::new(b, HEADROOM, end).unwrap()
            })
            .collect();
        out.clear();
        e.process_batch(now(), black_box(&mut pbs), out);
        black_box(&out);
    }
}
// END batched

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(15);
    let mut plain = engine(TunnelAuth::None);
    // As the data path's engines run (`EngineSet::new` sets it); PREFETCH=0
    // leaves it out.
    if std::env::var("PREFETCH").as_deref() != Ok("0") {
        plain.set_prefetch(Some(dpr_io::sys::prefetch));
    }
    let mut keyed = engine(TunnelAuth::Key(
        TunnelKeys::new(vec![(1, SipKey::from_bytes([7; 16]))]).unwrap(),
    ));
    if std::env::var("PREFETCH").as_deref() != Ok("0") {
        keyed.set_prefetch(Some(dpr_io::sys::prefetch));
    }
    // One established flow's packet, repeated: its lines stay in cache.
    let mut same: Vec<Vec<u8>> = (0..4096).map(|_| established(FLOWS / 2)).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random: Vec<Vec<u8>> = (0..RANDOM)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            established((state % u64::from(FLOWS)) as u32)
        })
        .collect();
    #[allow(unused_mut)]
    let mut out: Vec<Verdict> = Vec::with_capacity(BATCH);
    let names = [
        "established redirected, same flow (in cache), one at a time",
        "established redirected, 65,536 random flows among 1M, one at a time",
        "established redirected, keyed tunnel, same flow, one at a time",
        "established redirected, same flow, batches of 32",
        "established redirected, 65,536 random flows among 1M, batches of 32",
    ];
    let mut res: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    // ONLY=0,4 runs those cases alone (for a profile of one).
    let only: Option<Vec<usize>> = std::env::var("ONLY")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect());
    let on = |i: usize| only.as_ref().is_none_or(|o| o.contains(&i));
    for _ in 0..rounds {
        let n = same.len();
        if on(0) {
            res[0].push(per_packet(n, || one_at_a_time(&mut plain, &mut same)));
        }
        if on(1) {
            res[1].push(per_packet(RANDOM, || {
                one_at_a_time(&mut plain, &mut random)
            }));
        }
        if on(2) {
            res[2].push(per_packet(n, || one_at_a_time(&mut keyed, &mut same)));
        }
        // BEGIN batched
        if on(3) {
            res[3].push(per_packet(n, || batched(&mut plain, &mut same, &mut out)));
        }
        if on(4) {
            res[4].push(per_packet(RANDOM, || {
                batched(&mut plain, &mut random, &mut out)
            }));
        }
        // END batched
    }
    println!(
        "anonymous memory on huge pages: {} MiB (HUGE={})",
        dpr_io::sys::anon_huge_bytes().unwrap_or(0) >> 20,
        std::env::var("HUGE").unwrap_or_else(|_| "1".into())
    );
    println!("on-CPU ns per packet, median of {rounds} rounds (min-max):");
    for (name, r) in names.iter().zip(res.iter_mut()) {
        if r.is_empty() {
            continue;
        }
        let m = median(r);
        println!("{m:8.1}  ({:.1}-{:.1})  {name}", r[0], r[r.len() - 1]);
    }
}

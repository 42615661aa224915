//! VIP mode's designs for connection consistency, their cost per packet
//! side by side in one process (`docs/decisions.md`, "Connection
//! consistency behind ECMP"):
//!
//! - `forward_established`: the baseline, a packet of a flow the ingress
//!   host knows, forwarded to the serving peer (every design pays this for
//!   a moved flow, the cookie design too);
//! - `miss_hold_claim_release`: ask-on-miss's one-off work per moved flow
//!   at the new ingress: the miss (held), the peer's claim installing the
//!   route, the held packet released (encapsulated); messages not counted;
//! - `cookie_egress_rewrite`: what a connection cookie in the TCP
//!   timestamp costs the serving host on every packet it sends: find the
//!   timestamp option, compute an authenticated cookie (SipHash, as the
//!   keyed tunnel's tag), write it, update the checksum (the ingress pays
//!   about the same again to check it, and the server to restore TSecr).
//!
//! `cargo bench -p dpr-router --bench vip`
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dpr_packet::checksum::update_u32;
use dpr_packet::gre::tunnel_tag;
use dpr_packet::tcp::TcpFlags;
use dpr_packet::{FlowKey, IpProtocol};
use dpr_policy::{LeastLoad, SplitMix64};
use dpr_router::cluster::KeyRing;
use dpr_router::harness::tcp::tcp_packet;
use dpr_router::{Engine, EngineConfig, PacketBuf, Verdict, VipConfig};
use dpr_table::{Capacity, LoadFigures, LoadReport, LoadTableConfig, PeerId, Timestamp};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

const HEADROOM: usize = 64;
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const FLOWS: u16 = 1000;

fn host() -> Engine {
    let mut cfg = EngineConfig::new(
        Ipv4Addr::new(198, 19, 0, 1).into(),
        vec![VIP.into()],
        vec![80],
    );
    let mut v = VipConfig::new(vec![VIP.into()]);
    v.max_held_flows = usize::from(FLOWS) * 2;
    v.max_held_packets = usize::from(FLOWS) * 2;
    cfg.vip = Some(v);
    cfg.routes.capacity = 1 << 16;
    let mut e = Engine::new(
        cfg,
        PeerId(0),
        Capacity::default(),
        LoadTableConfig::default(),
        Box::new(LeastLoad),
        Box::new(SplitMix64::new(1)),
    )
    .unwrap();
    let peer = PeerId(1);
    let t = Ipv4Addr::new(198, 19, 0, 2).into();
    e.add_peer(peer, t, vec![VIP.into()], Timestamp::ZERO)
        .unwrap();
    let r = LoadReport {
        seq: 1,
        figures: LoadFigures::default(),
        capacity: Capacity::default(),
        draining: false,
    };
    e.apply_report(peer, &r, Timestamp::ZERO).unwrap();
    e
}

fn ack(port: u16) -> (FlowKey, Vec<u8>) {
    let client = SocketAddr::new(Ipv4Addr::new(198, 18, 100, 1).into(), port);
    let svc = SocketAddr::new(VIP.into(), 80);
    let p = tcp_packet(client, svc, 2, 1, TcpFlags::ACK, None, b"0123456789");
    let mut b = vec![0u8; HEADROOM + p.len()];
    b[HEADROOM..].copy_from_slice(&p);
    let f = FlowKey::new(IpProtocol::Tcp, client.ip(), port, svc.ip(), 80);
    (f, b)
}

fn run(e: &mut Engine, buf: &mut [u8]) -> Verdict {
    let end = buf.len();
    let mut pb = PacketBuf::new(buf, HEADROOM, end).unwrap();
    e.process(Timestamp::from_millis(1), &mut pb)
}

/// A server's segment to the client with the timestamp option (NOP, NOP,
/// kind 8): the cookie design rewrites its TSval.
fn server_segment() -> Vec<u8> {
    let mut p = tcp_packet(
        SocketAddr::new(VIP.into(), 80),
        SocketAddr::new(Ipv4Addr::new(198, 18, 100, 1).into(), 40000),
        5,
        2,
        TcpFlags::ACK,
        None,
        &[0u8; 100],
    );
    // Grow the TCP header by the 12 option bytes (data offset 5 -> 8).
    let opts = [1u8, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    p.splice(40..40, opts);
    p[32] = 8 << 4;
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p
}

/// The cookie's egress rewrite: find the timestamp option, write an
/// authenticated cookie as TSval, update the TCP checksum.
fn cookie_rewrite(p: &mut [u8], key: &dpr_packet::siphash::SipKey, flow: &FlowKey) -> bool {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let doff = usize::from(p[ihl + 12] >> 4) * 4;
    let mut at = ihl + 20;
    while at + 1 < ihl + doff {
        match p[at] {
            0 => return false,
            1 => at += 1,
            8 if p[at + 1] == 10 => {
                let old = u32::from_be_bytes([p[at + 2], p[at + 3], p[at + 4], p[at + 5]]);
                let src = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1));
                // 8 bits of server id, 24 of tag.
                let cookie = (1u32 << 24) | (tunnel_tag(key, 1, src, src, flow) & 0x00ff_ffff);
                p[at + 2..at + 6].copy_from_slice(&cookie.to_be_bytes());
                let c = u16::from_be_bytes([p[ihl + 16], p[ihl + 17]]);
                let c = update_u32(c, old, cookie);
                p[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
                return true;
            }
            _ => at += usize::from(p[at + 1].max(2)),
        }
    }
    false
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("vip");
    // Baseline: an established flow routed to the peer.
    let mut e = host();
    let (f, mut known) = ack(40000);
    assert_eq!(run(&mut e, &mut known), Verdict::Held);
    for _ in e.take_flow_queries() {}
    assert!(e.claim_flow(&f, PeerId(1), Timestamp::from_millis(1)));
    assert_eq!(e.take_released().len(), 1);
    assert!(matches!(run(&mut e, &mut known), Verdict::Forward { .. }));
    g.throughput(Throughput::Elements(1));
    g.bench_function("forward_established", |b| {
        b.iter(|| run(&mut e, black_box(&mut known)))
    });
    // Ask-on-miss's work per moved flow, 1,000 flows per batch on a fresh
    // engine (its set-up not timed).
    let packets: Vec<(FlowKey, Vec<u8>)> = (0..FLOWS).map(|i| ack(20000 + i)).collect();
    g.throughput(Throughput::Elements(u64::from(FLOWS)));
    g.bench_function("miss_hold_claim_release", |b| {
        b.iter_batched(
            || (host(), packets.clone()),
            |(mut e, mut ps)| {
                let now = Timestamp::from_millis(1);
                for (_, p) in ps.iter_mut() {
                    assert_eq!(run(&mut e, p), Verdict::Held);
                }
                let asked = e.take_flow_queries();
                for f in &asked {
                    e.claim_flow(f, PeerId(1), now);
                }
                let out = e.take_released();
                assert_eq!(out.len(), usize::from(FLOWS));
                black_box(out)
            },
            BatchSize::PerIteration,
        )
    });
    // The cookie design's rewrite on every server packet.
    let ring = KeyRing::parse(&format!("1 {}\n", "5a".repeat(32))).unwrap();
    let keys = ring.tunnel_keys();
    let (_, key) = keys.signing();
    let key = *key;
    let mut seg = server_segment();
    let flow = FlowKey::new(
        IpProtocol::Tcp,
        Ipv4Addr::new(198, 18, 100, 1).into(),
        40000,
        VIP.into(),
        80,
    );
    assert!(cookie_rewrite(&mut seg, &key, &flow));
    g.throughput(Throughput::Elements(1));
    g.bench_function("cookie_egress_rewrite", |b| {
        b.iter(|| cookie_rewrite(black_box(&mut seg), &key, &flow))
    });
    g.finish();
}

criterion_group! {
    name = vip_benches;
    config = Criterion::default().sample_size(30);
    targets = benches
}
criterion_main!(vip_benches);

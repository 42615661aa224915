//! The keyed tunnel's cost per packet, side by side with plain IP-in-IP in
//! the same process: the redirecting host's forward (encapsulation and, keyed,
//! the tag) and the serving host's receive (decapsulation and, keyed, the
//! tag check), for an established flow and for a SYN.
//!
//! `cargo bench -p dpr-router --bench tunnel`
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dpr_packet::tcp::TcpFlags;
use dpr_policy::{NewConnection, Policy, RandomSource, RedirectDecision, SplitMix64};
use dpr_router::cluster::KeyRing;
use dpr_router::harness::tcp::tcp_packet;
use dpr_router::{Engine, EngineConfig, PacketBuf, TunnelAuth, Verdict};
use dpr_table::{Capacity, LoadFigures, LoadReport, LoadTable, LoadTableConfig, PeerId, Timestamp};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};

const HEADROOM: usize = 64;
const A_TUN: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const A_SVC: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const B_TUN: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
const B_SVC: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);

struct ToPeer1;
impl Policy for ToPeer1 {
    fn decide(
        &mut self,
        _: &NewConnection,
        _: &LoadTable,
        _: &mut dyn RandomSource,
    ) -> RedirectDecision {
        RedirectDecision::Redirect(PeerId(1))
    }
    fn name(&self) -> &'static str {
        "to-peer-1"
    }
}

fn host(me: u16, auth: TunnelAuth) -> Engine {
    let (tun, svc, peer_tun, peer_svc) = match me {
        0 => (A_TUN, A_SVC, B_TUN, B_SVC),
        _ => (B_TUN, B_SVC, A_TUN, A_SVC),
    };
    let mut cfg = EngineConfig::new(tun.into(), vec![svc.into()], vec![80]);
    cfg.tunnel_auth = auth;
    let mut e = Engine::new(
        cfg,
        PeerId(me),
        Capacity::default(),
        LoadTableConfig::default(),
        Box::new(ToPeer1),
        Box::new(SplitMix64::new(1)),
    )
    .unwrap();
    let peer = PeerId(1 - me);
    e.add_peer(
        peer,
        peer_tun.into(),
        vec![peer_svc.into()],
        Timestamp::ZERO,
    )
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

fn packet(pkt: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; HEADROOM + pkt.len()];
    b[HEADROOM..].copy_from_slice(pkt);
    b
}

fn run(e: &mut Engine, buf: &mut [u8], start: usize) -> (Verdict, usize) {
    let end = buf.len();
    let mut pb = PacketBuf::new(buf, start, end).unwrap();
    let v = e.process(Timestamp::from_millis(1), &mut pb);
    (v, pb.range().start)
}

fn benches(c: &mut Criterion) {
    let ring = KeyRing::parse(&format!("1 {}\n", "5a".repeat(32))).unwrap();
    let client = SocketAddr::new(Ipv4Addr::new(198, 18, 100, 1).into(), 40000);
    let svc = SocketAddr::new(A_SVC.into(), 80);
    let syn = tcp_packet(client, svc, 1, 0, TcpFlags::SYN, Some(1460), &[]);
    let ack = tcp_packet(client, svc, 2, 1, TcpFlags::ACK, None, b"0123456789");
    let mut g = c.benchmark_group("tunnel");
    g.throughput(Throughput::Elements(1));
    for (name, auth) in [
        ("none", TunnelAuth::None),
        ("key", TunnelAuth::Key(ring.tunnel_keys())),
    ] {
        let mut a = host(0, auth.clone());
        let mut b = host(1, auth);
        // The connection: A redirects its SYN, B accepts it.
        let mut s = packet(&syn);
        let (v, start) = run(&mut a, &mut s, HEADROOM);
        assert!(matches!(v, Verdict::Forward { .. }));
        let mut tunnelled_syn = s[start..].to_vec();
        tunnelled_syn.splice(0..0, [0u8; HEADROOM]);
        assert_eq!(
            run(&mut b, &mut tunnelled_syn, HEADROOM).0,
            Verdict::Deliver
        );
        // Its established packets, at A and (tunnelled) at B.
        let mut at_a = packet(&ack);
        let (v, start) = run(&mut a, &mut at_a, HEADROOM);
        assert!(matches!(v, Verdict::Forward { .. }));
        let mut at_b = at_a[start..].to_vec();
        at_b.splice(0..0, [0u8; HEADROOM]);
        assert_eq!(run(&mut b, &mut at_b, HEADROOM).0, Verdict::Deliver);
        g.bench_function(format!("forward_established/{name}"), |bch| {
            bch.iter(|| run(&mut a, black_box(&mut at_a), HEADROOM))
        });
        g.bench_function(format!("receive_established/{name}"), |bch| {
            bch.iter(|| run(&mut b, black_box(&mut at_b), HEADROOM))
        });
        // A retransmitted SYN at B: parse, decapsulation, tag check (keyed),
        // the served table's look-up; no insert.
        g.bench_function(format!("receive_syn/{name}"), |bch| {
            bch.iter(|| run(&mut b, black_box(&mut tunnelled_syn), HEADROOM))
        });
        let c = b.counters();
        assert_eq!(c.dropped, 0, "{name}: {c:?}");
    }
    g.finish();
}

criterion_group! {
    name = tunnel_benches;
    config = Criterion::default().sample_size(50);
    targets = benches
}
criterion_main!(tunnel_benches);

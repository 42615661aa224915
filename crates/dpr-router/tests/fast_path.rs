//! The engine's side of the AF_XDP send fast path: a redirected flow whose
//! packets the XDP program forwards without showing them to the engine
//! stays alive while the fast path reports it active
//! (`Engine::fast_path_seen`), and expires like any other when it does not.
#![allow(clippy::unwrap_used, clippy::panic)]

use dpr_packet::tcp::TcpFlags;
use dpr_packet::{FlowKey, IpProtocol};
use dpr_policy::{NewConnection, Policy, RandomSource, RedirectDecision, SplitMix64};
use dpr_router::harness::tcp::tcp_packet;
use dpr_router::{Engine, EngineConfig, PacketBuf, Verdict};
use dpr_table::{Capacity, LoadFigures, LoadReport, LoadTable, LoadTableConfig, PeerId, Timestamp};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

const A_SVC: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const A_TUN: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const B_TUN: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
const B_SVC: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);

struct ToB;
impl Policy for ToB {
    fn decide(
        &mut self,
        _: &NewConnection,
        _: &LoadTable,
        _: &mut dyn RandomSource,
    ) -> RedirectDecision {
        RedirectDecision::Redirect(PeerId(1))
    }
    fn name(&self) -> &'static str {
        "to-b"
    }
}

/// Engine A (half-open timeout 2 s, established 5 s) redirecting every
/// new connection to B.
fn engine() -> Engine {
    let mut cfg = EngineConfig::new(A_TUN.into(), vec![A_SVC.into()], vec![80]);
    cfg.routes.half_open_timeout = Duration::from_secs(2);
    cfg.routes.established_timeout = Duration::from_secs(5);
    let loads = LoadTableConfig {
        report_interval: Duration::from_secs(100),
        ..LoadTableConfig::default()
    };
    let mut e = Engine::new(
        cfg,
        PeerId(0),
        Capacity::default(),
        loads,
        Box::new(ToB),
        Box::new(SplitMix64::new(1)),
    )
    .unwrap();
    e.add_peer(PeerId(1), B_TUN.into(), vec![B_SVC.into()], Timestamp::ZERO)
        .unwrap();
    let r = LoadReport {
        seq: 1,
        figures: LoadFigures::default(),
        capacity: Capacity::default(),
        draining: false,
    };
    e.apply_report(PeerId(1), &r, Timestamp::ZERO).unwrap();
    e
}

fn client(port: u16) -> SocketAddr {
    SocketAddr::new(CLIENT.into(), port)
}

fn flow(port: u16) -> FlowKey {
    FlowKey::new(IpProtocol::Tcp, CLIENT.into(), port, A_SVC.into(), 80)
}

fn syn(e: &mut Engine, port: u16, now: Timestamp) -> Verdict {
    let svc = SocketAddr::new(A_SVC.into(), 80);
    let pkt = tcp_packet(client(port), svc, 100, 0, TcpFlags::SYN, Some(1460), &[]);
    let mut buf = vec![0u8; 64 + pkt.len()];
    buf[64..].copy_from_slice(&pkt);
    let end = buf.len();
    let mut pb = PacketBuf::new(&mut buf, 64, end).unwrap();
    e.process(now, &mut pb)
}

fn s(secs: u64) -> Timestamp {
    Timestamp::from_millis(secs * 1000)
}

#[test]
fn a_flow_active_only_in_the_fast_path_is_not_cut_as_idle() {
    let mut e = engine();
    let to_b = Verdict::Forward {
        peer: PeerId(1),
        to: IpAddr::from(B_TUN),
    };
    assert_eq!(syn(&mut e, 1000, s(0)), to_b);
    assert_eq!(syn(&mut e, 1001, s(0)), to_b);
    // Flow 1000 is active in the fast path every second for 20 s (four
    // times the established timeout); flow 1001 goes quiet.
    for t in 1..=20 {
        assert!(e.fast_path_seen(&flow(1000), true, s(t)), "at {t} s");
        e.tick(s(t), 1024);
    }
    assert!(
        !e.fast_path_seen(&flow(1001), false, s(20)),
        "the quiet one expired"
    );
    assert!(e.routes().get(&flow(1000)).is_some());
    // Once quiet, it expires too (5 s established timeout) and the fast
    // path is told to forget it.
    assert!(e.fast_path_seen(&flow(1000), false, s(24)));
    assert!(!e.fast_path_seen(&flow(1000), false, s(26)));
    // A flow never routed: nothing to refresh, nothing created.
    assert!(!e.fast_path_seen(&flow(7), true, s(26)));
    assert!(e.routes().get(&flow(7)).is_none());
}

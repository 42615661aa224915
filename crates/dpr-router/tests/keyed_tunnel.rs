//! The keyed tunnel between two engines: host A redirects to host B over
//! GRE with a tag; B accepts only what carries a valid tag (or belongs to a
//! flow it serves for A), and counts what it refuses.
#![allow(clippy::unwrap_used, clippy::panic)]

use dpr_packet::gre::{self, GreFields};
use dpr_packet::ipip::{self, ChecksumCheck, EncapParams};
use dpr_packet::tcp::TcpFlags;
use dpr_packet::{FlowKey, parse_ip};
use dpr_policy::{NewConnection, Policy, RandomSource, RedirectDecision, SplitMix64};
use dpr_router::cluster::KeyRing;
use dpr_router::harness::tcp::tcp_packet;
use dpr_router::{DropReason, Engine, EngineConfig, PacketBuf, TunnelAuth, TunnelKeys, Verdict};
use dpr_table::{Capacity, LoadFigures, LoadReport, LoadTable, LoadTableConfig, PeerId, Timestamp};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

const A_TUN: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const A_SVC: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const B_TUN: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
const B_SVC: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const K2: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

struct Fixed(Option<PeerId>);
impl Policy for Fixed {
    fn decide(
        &mut self,
        _: &NewConnection,
        _: &LoadTable,
        _: &mut dyn RandomSource,
    ) -> RedirectDecision {
        self.0
            .map_or(RedirectDecision::ServeLocally, RedirectDecision::Redirect)
    }
    fn name(&self) -> &'static str {
        "fixed"
    }
}

fn keys(file: &str) -> TunnelKeys {
    KeyRing::parse(file).unwrap().tunnel_keys()
}

fn one_key() -> TunnelKeys {
    keys(&format!("1 {K1}\n"))
}

/// Host `me` (0 = A, 1 = B) with the other as its peer; A redirects every
/// new connection to B.
fn host(me: u16, auth: TunnelAuth) -> Engine {
    let (tun, svc, peer_tun, peer_svc) = match me {
        0 => (A_TUN, A_SVC, B_TUN, B_SVC),
        _ => (B_TUN, B_SVC, A_TUN, A_SVC),
    };
    let mut cfg = EngineConfig::new(tun.into(), vec![svc.into()], vec![80]);
    cfg.tunnel_auth = auth;
    let target = (me == 0).then_some(PeerId(1));
    let mut e = Engine::new(
        cfg,
        PeerId(me),
        Capacity::default(),
        LoadTableConfig {
            report_interval: Duration::from_millis(100),
            ..LoadTableConfig::default()
        },
        Box::new(Fixed(target)),
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

fn run(e: &mut Engine, pkt: &[u8]) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; 64 + pkt.len()];
    buf[64..].copy_from_slice(pkt);
    let end = buf.len();
    let mut pb = PacketBuf::new(&mut buf, 64, end).unwrap();
    let v = e.process(Timestamp::from_millis(1), &mut pb);
    (v, pb.bytes().to_vec())
}

fn client(port: u16) -> SocketAddr {
    SocketAddr::new(CLIENT.into(), port)
}

/// A client's packet to A's service address.
fn to_a(port: u16, flags: TcpFlags) -> Vec<u8> {
    let mss = flags.contains(TcpFlags::SYN).then_some(1460);
    let svc = SocketAddr::new(A_SVC.into(), 80);
    tcp_packet(client(port), svc, 100, 0, flags, mss, &[])
}

/// `inner` in GRE from `src` to B's tunnel address, with `fields`.
fn gre_to_b(src: Ipv4Addr, inner: &[u8], fields: GreFields) -> Vec<u8> {
    let mut buf = vec![0u8; 32];
    buf.extend_from_slice(inner);
    let p = EncapParams::new(src.into(), B_TUN.into());
    let start = ipip::encapsulate_gre(&mut buf, 32, &p, fields).unwrap();
    buf[start..].to_vec()
}

fn plain_to_b(src: Ipv4Addr, inner: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 20];
    buf.extend_from_slice(inner);
    let p = EncapParams::new(src.into(), B_TUN.into());
    let start = ipip::encapsulate(&mut buf, 20, &p).unwrap();
    buf[start..].to_vec()
}

fn flow_of(inner: &[u8]) -> FlowKey {
    parse_ip(inner).unwrap().flow
}

/// The tag `keys`' signing key gives `inner` from A to B.
fn genuine(keys: &TunnelKeys, inner: &[u8]) -> GreFields {
    let (key_id, k) = keys.signing();
    GreFields {
        tag: gre::tunnel_tag(k, key_id, A_TUN.into(), B_TUN.into(), &flow_of(inner)),
        key_id,
    }
}

fn drops(e: &Engine, r: DropReason) -> u64 {
    e.counters().drops[r.index()]
}

#[test]
fn a_redirected_connection_crosses_the_keyed_tunnel_and_is_delivered() {
    let mut a = host(0, TunnelAuth::Key(one_key()));
    let mut b = host(1, TunnelAuth::Key(one_key()));
    let (v, out) = run(&mut a, &to_a(1000, TcpFlags::SYN));
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_eq!(out[9], 47, "GRE");
    let d = ipip::decapsulate(&out, ChecksumCheck::Verify).unwrap();
    assert_eq!(d.gre.map(|g| g.key_id), Some(1));
    let inner = parse_ip(&out[d.inner.clone()]).unwrap();
    // MSS clamped for the outer IPv4 header, GRE, IPv4 and TCP: 1500 - 72.
    let opts = &out[d.inner.start + 40..d.inner.end];
    assert_eq!(opts[..2], [2, 4]);
    assert_eq!(u16::from_be_bytes([opts[2], opts[3]]), 1428);
    let (v, _) = run(&mut b, &out);
    assert_eq!(v, Verdict::Deliver);
    // The rest of the connection, and the steering key of the GRE packet.
    assert_eq!(b.steer_key(&out), Some(inner.flow));
    let (v, out) = run(&mut a, &to_a(1000, TcpFlags::ACK));
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!(run(&mut b, &out).0, Verdict::Deliver);
    let c = b.counters();
    assert_eq!((c.new_from_peer, c.delivered, c.dropped), (1, 2, 0));
}

#[test]
fn a_forged_tag_is_refused_and_counted() {
    let mut b = host(1, TunnelAuth::Key(one_key()));
    let inner = to_a(2000, TcpFlags::SYN);
    let g = genuine(&one_key(), &inner);
    for forged in [
        GreFields {
            tag: g.tag ^ 1,
            ..g
        },
        GreFields {
            tag: g.tag.rotate_left(8),
            ..g
        },
        // A key id B does not hold.
        GreFields { key_id: 2, ..g },
    ] {
        let (v, _) = run(&mut b, &gre_to_b(A_TUN, &inner, forged));
        assert_eq!(v, Verdict::Drop(DropReason::TunnelBadTag));
    }
    // The genuine tag, but sent for another flow (the tag binds it).
    let other = to_a(2001, TcpFlags::SYN);
    let (v, _) = run(&mut b, &gre_to_b(A_TUN, &other, g));
    assert_eq!(v, Verdict::Drop(DropReason::TunnelBadTag));
    // Plain IP-in-IP from A's address: no tag, refused likewise.
    let (v, _) = run(&mut b, &plain_to_b(A_TUN, &inner));
    assert_eq!(v, Verdict::Drop(DropReason::TunnelBadTag));
    assert_eq!(drops(&b, DropReason::TunnelBadTag), 5);
    let c = b.counters();
    assert_eq!((c.new_from_peer, c.delivered), (0, 0));
    assert_eq!(b.served().len(), 0, "nothing recorded");
    // A stranger's address is refused before any tag is looked at.
    let (v, _) = run(&mut b, &gre_to_b(Ipv4Addr::new(198, 19, 0, 9), &inner, g));
    assert_eq!(v, Verdict::Drop(DropReason::UnknownTunnelSource));
    // And the genuine tag is accepted.
    let (v, _) = run(&mut b, &gre_to_b(A_TUN, &inner, g));
    assert_eq!(v, Verdict::Deliver);
}

#[test]
fn a_mid_stream_packet_without_an_accepted_syn_is_refused() {
    let mut b = host(1, TunnelAuth::Key(one_key()));
    let ack = to_a(3000, TcpFlags::ACK);
    let g = genuine(&one_key(), &ack);
    let forged = GreFields {
        tag: g.tag.wrapping_add(1),
        ..g
    };
    let (v, _) = run(&mut b, &gre_to_b(A_TUN, &ack, forged));
    assert_eq!(v, Verdict::Drop(DropReason::TunnelUnknownFlow));
    let rst = to_a(3000, TcpFlags::RST);
    let (v, _) = run(&mut b, &gre_to_b(A_TUN, &rst, forged));
    assert_eq!(v, Verdict::Drop(DropReason::TunnelUnknownFlow));
    assert_eq!(drops(&b, DropReason::TunnelUnknownFlow), 2);
    assert_eq!(b.served().len(), 0);
    // The same flow accepted by its SYN: a packet with a bad tag is now an
    // injection into a served flow, counted as a bad tag.
    let syn = to_a(3000, TcpFlags::SYN);
    let (v, _) = run(&mut b, &gre_to_b(A_TUN, &syn, genuine(&one_key(), &syn)));
    assert_eq!(v, Verdict::Deliver);
    let (v, _) = run(&mut b, &gre_to_b(A_TUN, &ack, forged));
    assert_eq!(v, Verdict::Drop(DropReason::TunnelBadTag));
    assert_eq!(run(&mut b, &gre_to_b(A_TUN, &ack, g)).0, Verdict::Deliver);
    // A mid-stream packet with a valid tag of a flow B lost (a restart, an
    // eviction) is learned again, as with plain IP-in-IP: the tag is the
    // proof the SYN gave.
    let lost = to_a(3001, TcpFlags::ACK);
    let (v, _) = run(&mut b, &gre_to_b(A_TUN, &lost, genuine(&one_key(), &lost)));
    assert_eq!(v, Verdict::Deliver);
    assert_eq!(b.served().len(), 2);
}

#[test]
fn tags_under_the_previous_key_are_accepted_through_a_roll() {
    // Step 1 of the roll: B accepts key 2 as well, A still signs with 1.
    let mut a = host(0, TunnelAuth::Key(one_key()));
    let mut b = host(1, TunnelAuth::Key(keys(&format!("1 {K1}\n2 {K2}\n"))));
    let (_, out) = run(&mut a, &to_a(4000, TcpFlags::SYN));
    assert_eq!(run(&mut b, &out).0, Verdict::Deliver);
    // Step 2: B signs with 2 (a reload), A has not reloaded yet; then A
    // moves too, mid-connection.
    b.set_tunnel_keys(keys(&format!("2 {K2}\n1 {K1}\n")));
    let (_, out) = run(&mut a, &to_a(4000, TcpFlags::ACK));
    assert_eq!(run(&mut b, &out).0, Verdict::Deliver, "previous key");
    a.set_tunnel_keys(keys(&format!("2 {K2}\n1 {K1}\n")));
    let (_, out) = run(&mut a, &to_a(4001, TcpFlags::SYN));
    assert_eq!(
        ipip::decapsulate(&out, ChecksumCheck::Skip)
            .unwrap()
            .gre
            .unwrap()
            .key_id,
        2
    );
    assert_eq!(run(&mut b, &out).0, Verdict::Deliver, "current key");
    // Step 3: key 1 retired on B; a tag under it is refused.
    b.set_tunnel_keys(keys(&format!("2 {K2}\n")));
    let old = to_a(4002, TcpFlags::SYN);
    let (v, _) = run(&mut b, &gre_to_b(A_TUN, &old, genuine(&one_key(), &old)));
    assert_eq!(v, Verdict::Drop(DropReason::TunnelBadTag));
    let (_, out) = run(&mut a, &to_a(4000, TcpFlags::ACK));
    assert_eq!(
        run(&mut b, &out).0,
        Verdict::Deliver,
        "the connection lives on"
    );
    assert_eq!(b.counters().dropped, 1);
}

#[test]
fn auth_none_sends_and_accepts_plain_ip_in_ip() {
    let mut a = host(0, TunnelAuth::None);
    let mut b = host(1, TunnelAuth::None);
    let (v, out) = run(&mut a, &to_a(5000, TcpFlags::SYN));
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!(out[9], 4, "IP-in-IP");
    let d = ipip::decapsulate(&out, ChecksumCheck::Verify).unwrap();
    let opts = &out[d.inner.start + 40..d.inner.end];
    assert_eq!(u16::from_be_bytes([opts[2], opts[3]]), 1440, "1500 - 60");
    assert_eq!(run(&mut b, &out).0, Verdict::Deliver);
    // Anyone spoofing A's address is accepted too: what the key prevents.
    let spoofed = plain_to_b(A_TUN, &to_a(5001, TcpFlags::SYN));
    assert_eq!(run(&mut b, &spoofed).0, Verdict::Deliver);
    assert_eq!(b.counters().new_from_peer, 2);
    // GRE is not the router's without the key: the kernel's.
    let inner = to_a(5002, TcpFlags::SYN);
    let g = gre_to_b(A_TUN, &inner, genuine(&one_key(), &inner));
    assert_eq!(run(&mut b, &g).0, Verdict::Pass);
}

#[test]
fn malformed_gre_is_counted_and_dropped() {
    let mut b = host(1, TunnelAuth::Key(one_key()));
    let inner = to_a(6000, TcpFlags::SYN);
    let good = gre_to_b(A_TUN, &inner, genuine(&one_key(), &inner));
    for (at, v) in [(20, 0xb0u8), (21, 1), (22, 0x65), (28, 1)] {
        let mut p = good.clone();
        p[at] = v;
        assert_eq!(run(&mut b, &p).0, Verdict::Drop(DropReason::BadTunnel));
    }
    // Cut inside the GRE header (the outer length says so too).
    let mut cut = good[..28].to_vec();
    cut[2..4].copy_from_slice(&28u16.to_be_bytes());
    cut[10..12].copy_from_slice(&[0, 0]);
    let c = dpr_packet::checksum::checksum(&cut[..20]).to_be_bytes();
    cut[10..12].copy_from_slice(&c);
    assert_eq!(run(&mut b, &cut).0, Verdict::Drop(DropReason::BadTunnel));
    let c = b.counters();
    assert_eq!(c.malformed_by_layer.get("gre"), Some(&5));
    // Every truncation and every single-byte change: no panic, and nothing
    // but the genuine packet is delivered.
    for n in 0..good.len() {
        let _ = run(&mut b, &good[..n]);
    }
    let mut delivered = 0;
    for at in 0..good.len() {
        for bit in 0..8 {
            let mut p = good.clone();
            p[at] ^= 1 << bit;
            if run(&mut b, &p).0 == Verdict::Deliver {
                delivered += 1;
            }
        }
    }
    // Flips in the outer TTL, identification, or the inner packet's fields
    // the tag does not cover (sequence numbers, flags, checksums that the
    // kernel checks) still deliver; none in the tag, key id or flow.
    assert!(delivered < good.len() * 8, "{delivered}");
    for at in 24..32 {
        for bit in 0..8 {
            let mut p = good.clone();
            p[at] ^= 1 << bit;
            assert_ne!(run(&mut b, &p).0, Verdict::Deliver, "byte {at} bit {bit}");
        }
    }
}

#[test]
fn accepted_and_ended_flows_are_noted_for_the_fast_path() {
    let mut b = host(1, TunnelAuth::Key(one_key()));
    let syn = to_a(7000, TcpFlags::SYN);
    let ack = to_a(7000, TcpFlags::ACK);
    let fin = to_a(7000, TcpFlags::FIN | TcpFlags::ACK);
    let send = |b: &mut Engine, inner: &[u8]| {
        run(b, &gre_to_b(A_TUN, inner, genuine(&one_key(), inner))).0
    };
    // Off by default (the TUN backend has no fast path).
    assert_eq!(send(&mut b, &syn), Verdict::Deliver);
    assert!(b.take_keyed_flow_events().is_empty());
    let mut b = host(1, TunnelAuth::Key(one_key()));
    let mut cfg = b.config().clone();
    cfg.keyed_flow_events = true;
    b = {
        let _ = b;
        let mut e = Engine::new(
            cfg,
            PeerId(1),
            Capacity::default(),
            LoadTableConfig::default(),
            Box::new(Fixed(None)),
            Box::new(SplitMix64::new(1)),
        )
        .unwrap();
        e.add_peer(PeerId(0), A_TUN.into(), vec![A_SVC.into()], Timestamp::ZERO)
            .unwrap();
        e
    };
    let tag = genuine(&one_key(), &syn).tag;
    assert_eq!(tag, genuine(&one_key(), &ack).tag, "one tag per flow");
    for p in [&syn, &ack, &ack] {
        assert_eq!(send(&mut b, p), Verdict::Deliver);
    }
    // A forged packet notes nothing.
    let forged = GreFields {
        tag: tag ^ 1,
        key_id: 1,
    };
    assert_ne!(
        run(&mut b, &gre_to_b(A_TUN, &ack, forged)).0,
        Verdict::Deliver
    );
    assert_eq!(send(&mut b, &fin), Verdict::Deliver);
    // The client's last ACK after its FIN: the flow stays out of the fast path.
    assert_eq!(send(&mut b, &ack), Verdict::Deliver);
    let flow = flow_of(&syn);
    let ev = |tag| dpr_router::KeyedFlowEvent {
        peer: A_TUN.into(),
        flow,
        tag,
    };
    assert_eq!(
        b.take_keyed_flow_events(),
        vec![ev(Some(tag)), ev(None)],
        "repeats left out"
    );
    assert!(b.take_keyed_flow_events().is_empty());
}

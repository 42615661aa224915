//! Invariant checks for the engine fuzz target (`fuzz/fuzz_targets/engine.rs`)
//! and the property test that runs them in `cargo test`.
//!
//! An engine with small tables is driven through a scripted prefix of valid
//! traffic (SYNs past the table capacity, data, IP-in-IP from a peer, an
//! ICMP error about a redirected flow), then through arbitrary frames taken
//! from the input: `[len_hi, len_lo, flags, bytes...]` repeated. After every
//! packet: the tables stay within capacity, the verdict's bytes are what it
//! says (a valid tunnel packet to the named peer, a parseable packet to
//! deliver, an RST), and the counters add up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::cluster::{Clock, KeyRing, Node, NodeConfig, PeerConfig, Reject, ReportMode};
use crate::harness::tcp::tcp_packet;
use crate::{Engine, EngineConfig, PacketBuf, Verdict};
use dpr_packet::control;
use dpr_packet::icmp::{self, IcmpErrorKind};
use dpr_packet::ipip::{self, ChecksumCheck, EncapParams};
use dpr_packet::tcp::TcpFlags;
use dpr_packet::{IpProtocol, parse_ip};
use dpr_policy::{SplitMix64, TwoChoices};
use dpr_table::{Capacity, LoadFigures, LoadReport, LoadTableConfig, PeerId, Timestamp};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

const CAP: u32 = 48;
const SVC: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const TUN: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const PEERS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 19, 0, 2), Ipv4Addr::new(198, 19, 0, 3)];

/// The keyed engine's tunnel keys (the control key's ring).
fn tunnel_keys() -> crate::TunnelKeys {
    KeyRing::new(&[(1, &CONTROL_KEY)])
        .expect("key")
        .tunnel_keys()
}

fn bare_engine_with(keyed: bool, vip: bool) -> Engine {
    let mut cfg = EngineConfig::new(TUN.into(), vec![SVC.into()], vec![80, 443]);
    if vip {
        // The service address is a VIP every peer holds too; small bounds
        // so that the frames reach them.
        let mut v = crate::VipConfig::new(vec![SVC.into()]);
        v.max_held_packets = 16;
        v.max_held_flows = 6;
        v.max_held_per_flow = 3;
        cfg.vip = Some(v);
    }
    if keyed {
        cfg.tunnel_auth = crate::TunnelAuth::Key(tunnel_keys());
        cfg.keyed_flow_events = true;
    }
    cfg.routes.capacity = CAP;
    cfg.served.capacity = CAP;
    let loads = LoadTableConfig {
        report_interval: Duration::from_millis(10),
        ..LoadTableConfig::default()
    };
    Engine::new(
        cfg,
        PeerId(0),
        Capacity::default(),
        loads,
        Box::new(TwoChoices),
        Box::new(SplitMix64::new(3)),
    )
    .expect("valid config")
}

fn bare_engine() -> Engine {
    bare_engine_with(false, false)
}

pub(crate) fn engine_with(keyed: bool, vip: bool) -> Engine {
    let mut e = bare_engine_with(keyed, vip);
    for (i, p) in PEERS.iter().enumerate() {
        let id = PeerId(i as u16 + 1);
        let mut services = vec![Ipv4Addr::new(198, 18, 1, i as u8 + 2).into()];
        if vip {
            services.push(SVC.into());
        }
        e.add_peer(id, (*p).into(), services, Timestamp::ZERO)
            .expect("peer");
        let r = LoadReport {
            seq: 1,
            figures: LoadFigures::default(),
            capacity: Capacity::default(),
            draining: false,
        };
        e.apply_report(id, &r, Timestamp::ZERO).expect("report");
    }
    e.set_local_load(
        LoadFigures {
            open_connections: 10,
            ..LoadFigures::default()
        },
        Capacity::default(),
    )
    .expect("load");
    e
}

/// The scripted prefix, built once per process.
pub(crate) fn prefix() -> &'static [Vec<u8>] {
    static PREFIX: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    PREFIX.get_or_init(build_prefix)
}

fn build_prefix() -> Vec<Vec<u8>> {
    let svc = SocketAddr::new(SVC.into(), 80);
    let mut v = Vec::new();
    for i in 0..(CAP as u16 + 16) {
        let c = SocketAddr::new(
            Ipv4Addr::new(198, 18, 100, (i % 200) as u8).into(),
            30000 + i,
        );
        v.push(tcp_packet(c, svc, 1, 0, TcpFlags::SYN, Some(1460), &[]));
        v.push(tcp_packet(c, svc, 2, 9, TcpFlags::ACK, None, b"GET 1\n"));
    }
    // IP-in-IP from a peer, carrying a SYN for that peer's service address.
    let client = SocketAddr::new(Ipv4Addr::new(198, 18, 100, 250).into(), 999);
    let inner = tcp_packet(
        client,
        SocketAddr::new(Ipv4Addr::new(198, 18, 1, 2).into(), 80),
        1,
        0,
        TcpFlags::SYN,
        None,
        &[],
    );
    let mut buf = vec![0u8; 20];
    buf.extend_from_slice(&inner);
    let s = ipip::encapsulate(&mut buf, 20, &EncapParams::new(PEERS[0].into(), TUN.into()))
        .expect("encap");
    v.push(buf[s..].to_vec());
    // The same in the keyed tunnel, with its genuine tag, then a data packet.
    for flags in [TcpFlags::SYN, TcpFlags::ACK] {
        let inner = tcp_packet(
            client,
            SocketAddr::new(Ipv4Addr::new(198, 18, 1, 2).into(), 80),
            1,
            0,
            flags,
            None,
            b"x",
        );
        let keys = tunnel_keys();
        let (key_id, k) = keys.signing();
        let flow = parse_ip(&inner).expect("inner").flow;
        let tag = dpr_packet::gre::tunnel_tag(k, key_id, PEERS[0].into(), TUN.into(), &flow);
        let mut buf = vec![0u8; 32];
        buf.extend_from_slice(&inner);
        let p = EncapParams::new(PEERS[0].into(), TUN.into());
        let g = dpr_packet::gre::GreFields { tag, key_id };
        let s = ipip::encapsulate_gre(&mut buf, 32, &p, g).expect("gre");
        v.push(buf[s..].to_vec());
    }
    // An ICMP error about the last redirected-or-local flow, from a router.
    let last = SocketAddr::new(
        Ipv4Addr::new(198, 18, 100, 63).into(),
        30000 + CAP as u16 + 15,
    );
    let quoted = tcp_packet(svc, last, 9, 2, TcpFlags::ACK, None, &[0; 8]);
    let mut msg = vec![0u8; 8 + 28];
    let router = IpAddr::V4(Ipv4Addr::new(198, 18, 200, 1));
    icmp::emit_error(
        &mut msg,
        IcmpErrorKind::FragmentationNeeded { mtu: 1200 },
        false,
        router,
        SVC.into(),
        &quoted[..28],
    )
    .expect("icmp");
    let mut ip = tcp_packet(
        SocketAddr::new(router, 1),
        svc,
        0,
        0,
        TcpFlags::ACK,
        None,
        &[],
    );
    ip.truncate(20);
    ip[9] = 1;
    ip[2..4].copy_from_slice(&((20 + msg.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&msg);
    dpr_packet::ipv4::Ipv4Packet::new_checked(&mut ip[..])
        .expect("ip")
        .fill_checksum();
    v.push(ip);
    v
}

fn check_one(e: &mut Engine, now: Timestamp, pkt: &[u8], headroom: usize, total: &mut u64) {
    let mut buf = vec![0u8; headroom + pkt.len()];
    buf[headroom..].copy_from_slice(pkt);
    let end = buf.len();
    let mut pb = PacketBuf::new(&mut buf, headroom, end).expect("range");
    let v = e.process(now, &mut pb);
    *total += 1;
    let out = pb.bytes();
    match v {
        Verdict::Forward { peer, to } => {
            let d = ipip::decapsulate(out, ChecksumCheck::Verify)
                .expect("forwarded packets decapsulate");
            assert_eq!(d.outer_dst, to);
            assert_eq!(d.outer_src, IpAddr::V4(TUN));
            match (&e.config().tunnel_auth, d.gre) {
                (crate::TunnelAuth::None, g) => assert_eq!(g, None),
                (crate::TunnelAuth::Key(keys), Some(g)) => {
                    // Its tag verifies at the peer.
                    let flow = parse_ip(&out[d.inner.clone()]).expect("inner").flow;
                    let k = keys.get(g.key_id).expect("signing key");
                    let tag = dpr_packet::gre::tunnel_tag(k, g.key_id, d.outer_src, to, &flow);
                    assert_eq!(g.tag, tag);
                }
                (crate::TunnelAuth::Key(_), None) => panic!("keyed tunnel sent plain IP-in-IP"),
            }
            assert_eq!(e.loads().peer(peer).map(|p| p.tunnel_addr), Some(to));
        }
        Verdict::Deliver => {
            parse_ip(out).expect("delivered packets parse");
        }
        Verdict::Drop(crate::DropReason::TunnelBadTag | crate::DropReason::TunnelUnknownFlow) => {
            assert!(
                matches!(e.config().tunnel_auth, crate::TunnelAuth::Key(_)),
                "tags are checked only with the keyed tunnel"
            );
        }
        Verdict::Reply => {
            let m = parse_ip(out).expect("replies parse");
            assert!(m.flow.protocol == IpProtocol::Tcp && m.tcp_flags.contains(TcpFlags::RST));
        }
        Verdict::Pass => assert_eq!(out, pkt, "passed packets are untouched"),
        Verdict::Held => assert!(e.config().vip.is_some(), "only VIP mode holds packets"),
        Verdict::Drop(_) => {}
    }
    assert!(e.routes().len() <= CAP as usize && e.served().len() <= CAP as usize);
}

/// Every packet got exactly one verdict, and drops add up by reason. In
/// VIP mode (no claims here) a held packet gets a second verdict when its
/// deadline passes (delivered); those still held are in the queue.
fn check_counters(e: &Engine, total: u64) {
    let c = e.counters();
    let v = c.vip;
    assert_eq!(
        c.passed + c.delivered + c.forwarded + c.replied + c.dropped + v.packets_held,
        total + v.packets_timed_out
    );
    assert_eq!(e.held().1 as u64, v.packets_held - v.packets_timed_out);
    if let Some(cfg) = &e.config().vip {
        assert!(e.held().0 <= cfg.max_held_flows && e.held().1 <= cfg.max_held_packets);
    }
    assert_eq!(c.dropped, c.drops.iter().sum::<u64>());
    for s in [e.routes().stats(), e.served().stats()] {
        assert_eq!(s.evicted, s.evicted_half_open + s.evicted_established);
    }
}

/// The fuzz entry point: the same frames through an engine with the plain
/// tunnel and one with the keyed tunnel.
pub fn engine_frames(data: &[u8]) {
    engine_frames_with(data, false, false);
    engine_frames_with(data, true, false);
    engine_frames_with(data, false, true);
}

fn engine_frames_with(data: &[u8], keyed: bool, vip: bool) {
    let mut e = engine_with(keyed, vip);
    let mut total = 0;
    let mut now = Timestamp::from_millis(1);
    for p in prefix() {
        check_one(&mut e, now, p, 64, &mut total);
    }
    check_counters(&e, total);
    if vip {
        // A data packet of a flow nobody here knows: held while the peers
        // are asked; the frames then take the same path.
        let stray = tcp_packet(
            SocketAddr::new(Ipv4Addr::new(198, 18, 100, 99).into(), 50000),
            SocketAddr::new(SVC.into(), 80),
            7,
            9,
            TcpFlags::ACK,
            None,
            b"?",
        );
        check_one(&mut e, now, &stray, 64, &mut total);
        assert_eq!(e.counters().vip.misses_asked, 1);
        assert_eq!(e.take_flow_queries().len(), 1);
        check_counters(&e, total);
    } else if keyed {
        // The keyed SYN and its data packet were accepted and noted; the
        // plain IP-in-IP one was refused.
        assert_eq!(e.counters().new_from_peer, 1);
        let noted = e.take_keyed_flow_events();
        assert_eq!(noted.len(), 1, "{noted:?}");
    } else {
        assert_eq!(e.counters().new_from_peer, 1);
    }
    if !vip {
        assert_eq!(e.routes().len(), CAP as usize, "the prefix fills the table");
        assert!(e.routes().stats().evicted > 0);
    }
    let mut rest = data;
    while let [hi, lo, flags, tail @ ..] = rest {
        let n = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let (pkt, more) = tail.split_at(n);
        // Flags: time step (low 4 bits, in ms) and headroom (0, 20 or 64).
        now = now.saturating_add(Duration::from_millis(u64::from(flags & 0x0f)));
        let headroom = [64, 20, 0, 40][usize::from(flags >> 4 & 3)];
        if flags & 0x80 != 0 {
            e.tick(now, 8);
            // Held packets past their deadline, delivered as they came.
            for r in e.take_released() {
                assert_eq!(r.verdict, Verdict::Deliver);
                parse_ip(r.bytes()).expect("released packets parse");
            }
        }
        check_one(&mut e, now, pkt, headroom, &mut total);
        rest = more;
    }
    check_counters(&e, total);
}

/// A node with two peers, as the control fuzz target drives it.
fn control_node(e: &mut Engine, now: Clock) -> Node {
    let peers = PEERS
        .iter()
        .enumerate()
        .map(|(i, p)| PeerConfig {
            id: PeerId(i as u16 + 1),
            tunnel_addr: (*p).into(),
            service_addrs: vec![Ipv4Addr::new(198, 18, 1, i as u8 + 2).into()],
        })
        .collect();
    let mut cfg = NodeConfig::new(PeerId(0), vec![SVC.into()]);
    cfg.mode = ReportMode::FanOut { k: 2, relay: 4 };
    let keys = KeyRing::new(&[(1, &CONTROL_KEY)]).expect("key");
    Node::new(cfg, keys, peers, now, e).expect("node")
}

const CONTROL_KEY: [u8; 32] = [0x42; 32];

/// The cluster protocol under arbitrary datagrams: `[flags, bytes...]`.
/// Flags bit 0: make the message authentic first (sender, key id and send
/// time set, then signed with the cluster key), so the fuzzer reaches the
/// code behind the tag check; bit 1: from peer 2 instead of peer 1; bit 2:
/// from an address that is not a peer. Checks: a refused datagram changes
/// neither the load table nor the routing table; a datagram accepted once
/// is refused the second time (replay); everything the node sends parses
/// and verifies. Returns whether the datagram was accepted.
pub fn control_datagram(data: &[u8]) -> bool {
    let Some((&flags, msg)) = data.split_first() else {
        return false;
    };
    let now = Clock {
        mono: Timestamp::from_millis(5),
        unix_ns: 1_800_000_000_000_000_000,
    };
    let mut e = bare_engine();
    let mut node = control_node(&mut e, now);
    let peer = usize::from(flags >> 1 & 1);
    let from: IpAddr = if flags & 4 != 0 {
        Ipv4Addr::new(198, 19, 0, 77).into()
    } else {
        PEERS[peer].into()
    };
    let mut msg = msg.to_vec();
    if flags & 1 != 0 && msg.len() >= control::HEADER_LEN + control::TAG_LEN {
        msg[4..6].copy_from_slice(&1u16.to_be_bytes());
        msg[8..10].copy_from_slice(&(peer as u16 + 1).to_be_bytes());
        msg[28..36].copy_from_slice(&now.unix_ns.to_be_bytes());
        let n = msg.len() - control::TAG_LEN;
        let keys = KeyRing::new(&[(1, &CONTROL_KEY)]).expect("key");
        let tag = keys.sign(&msg[..n]);
        msg[n..].copy_from_slice(&tag);
    }
    let loads_before = e.loads().peers().to_vec();
    let routes_before = e.routes().len();
    let first = node.handle_datagram(now, from, &msg, &mut e);
    if first.is_err() {
        assert_eq!(e.loads().peers(), &loads_before[..]);
        assert_eq!(e.routes().len(), routes_before);
    }
    let loads_after = e.loads().peers().to_vec();
    let again = node.handle_datagram(now, from, &msg, &mut e);
    assert!(again.is_err(), "accepted twice: {first:?}");
    if first.is_ok() {
        assert_eq!(again, Err(Reject::Replayed));
    }
    assert_eq!(e.loads().peers(), &loads_after[..]);
    // What the node sends is well formed and authentic.
    node.handle_timeout(now, &mut e);
    let keys = KeyRing::new(&[(1, &CONTROL_KEY)]).expect("key");
    while let Some(t) = node.poll_transmit() {
        let m = control::parse(&t.payload).expect("own message parses");
        assert_eq!(keys.sign(m.signed), *m.tag);
        assert!(t.payload.len() <= control::MAX_MESSAGE_LEN);
    }
    first.is_ok()
}

/// Recovery replies as a restarted host receives them: `[flags, len_hi,
/// len_lo, body...]*`, each body sent as the body of a recovery reply
/// (kind 3) from a peer, authentic (signed, fresh sequence number) and,
/// unless flags bit 1 is set, answering the node's own request id, so the
/// fuzzer reaches the code that restores routes. Flags bit 0: from peer 2;
/// bits 4–7: time step in 10 ms. Checks: a refused reply changes no route;
/// every route the node holds is one an accepted reply named, towards the
/// peer that named it; the table stays within its capacity; everything the
/// node sends parses and verifies; the counters add up; and the recovery
/// ends by its deadline whatever arrived. Returns the routes restored.
pub fn recovery_replies(data: &[u8]) -> usize {
    use crate::cluster::NodePhase;
    use dpr_packet::flow::FlowKey;
    use std::collections::HashSet;

    let mut now = Clock {
        mono: Timestamp::from_millis(5),
        unix_ns: 1_800_000_000_000_000_000,
    };
    let keys = KeyRing::new(&[(1, &CONTROL_KEY)]).expect("key");
    let mut e = bare_engine();
    let mut node = control_node(&mut e, now);
    assert_eq!(node.phase(), NodePhase::Recovering);
    node.handle_timeout(now, &mut e);
    let mut request_id = None;
    while let Some(t) = node.poll_transmit() {
        let m = control::parse(&t.payload).expect("own message parses");
        if let control::Body::RecoveryRequest { request_id: id, .. } = m.body {
            request_id = Some(id);
        }
    }
    let request_id = request_id.expect("a recovering node asks its peers");

    let mut named: HashSet<(FlowKey, PeerId)> = HashSet::new();
    let mut seq = [0u64; 2];
    let mut accepted = 0u64;
    let mut rest = data;
    while let [flags, hi, lo, tail @ ..] = rest {
        let n = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let (body, more) = tail.split_at(n);
        rest = more;
        let step = Duration::from_millis(10 * u64::from(flags >> 4));
        now.mono = now.mono.saturating_add(step);
        now.unix_ns = now.unix_ns.saturating_add(step.as_nanos() as u64);
        let peer = usize::from(flags & 1);
        seq[peer] += 1;
        // The header (docs/cluster-protocol.md): magic, version, kind,
        // key id, body length, sender, reserved, incarnation, sequence,
        // send time; then the body and the tag.
        let Ok(len) = u16::try_from(body.len()) else {
            continue;
        };
        let mut msg = Vec::with_capacity(control::HEADER_LEN + body.len() + control::TAG_LEN);
        msg.extend_from_slice(&control::MAGIC);
        msg.extend_from_slice(&[control::VERSION, 3]);
        msg.extend_from_slice(&1u16.to_be_bytes());
        msg.extend_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(&(peer as u16 + 1).to_be_bytes());
        msg.extend_from_slice(&[0, 0]);
        msg.extend_from_slice(&1_800_000_000_000_000_000u64.to_be_bytes());
        msg.extend_from_slice(&seq[peer].to_be_bytes());
        msg.extend_from_slice(&now.unix_ns.to_be_bytes());
        let at = msg.len();
        msg.extend_from_slice(body);
        if flags & 2 == 0 && body.len() >= 4 {
            msg[at..at + 4].copy_from_slice(&request_id.to_be_bytes());
        }
        let tag = keys.sign(&msg);
        msg.extend_from_slice(&tag);

        let routes_before: Vec<_> = e.routes().iter().map(|c| (c.key, c.route)).collect();
        let from: IpAddr = PEERS[peer].into();
        let sender = PeerId(peer as u16 + 1);
        match node.handle_datagram(now, from, &msg, &mut e) {
            Ok(_) => {
                accepted += 1;
                if let Ok(control::Message {
                    body: control::Body::RecoveryReply(r),
                    ..
                }) = control::parse(&msg)
                {
                    named.extend(r.flows().map(|f| (f, sender)));
                }
            }
            Err(_) => {
                let after: Vec<_> = e.routes().iter().map(|c| (c.key, c.route)).collect();
                assert_eq!(after, routes_before, "a refused reply changed routes");
            }
        }
        node.handle_timeout(now, &mut e);
        while let Some(t) = node.poll_transmit() {
            let m = control::parse(&t.payload).expect("own message parses");
            assert_eq!(keys.sign(m.signed), *m.tag);
        }
        assert!(e.routes().len() <= CAP as usize);
        for c in e.routes().iter() {
            let dpr_table::Route::Peer(p) = c.route else {
                panic!("a recovery restored a local route: {c:?}");
            };
            assert!(named.contains(&(c.key, p)), "route nobody named: {c:?}");
        }
    }
    let c = node.counters();
    assert!(c.recovery_chunks_received + c.recovery_chunks_duplicate <= accepted);
    assert!(e.counters().routes_restored <= c.recovery_flows_received);
    // Whatever arrived, the recovery ends by its deadline.
    for _ in 0..200 {
        if node.phase() != NodePhase::Recovering {
            break;
        }
        now.mono = now.mono.saturating_add(Duration::from_millis(50));
        now.unix_ns = now.unix_ns.saturating_add(50_000_000);
        node.handle_timeout(now, &mut e);
        while node.poll_transmit().is_some() {}
    }
    assert_ne!(node.phase(), NodePhase::Recovering, "recovery never ended");
    e.routes().len()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    #[test]
    fn control_corpus_replays_cleanly() {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/control");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut accepted = Vec::new();
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            if super::control_datagram(&data) {
                accepted.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        accepted.sort();
        // The signed seeds reach the protocol logic; raw ones cannot.
        for name in [
            "report_own_signed",
            "report_relay_signed",
            "reply_v4_signed",
            "request_signed",
        ] {
            assert!(
                accepted.iter().any(|a| a == name),
                "{name} not accepted: {accepted:?}"
            );
        }
        assert!(accepted.iter().all(|a| !a.ends_with("_raw")));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn arbitrary_control_datagrams(flags in any::<u8>(), bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut data = vec![flags];
            data.extend_from_slice(&bytes);
            let _ = super::control_datagram(&data);
        }
    }

    #[test]
    fn recovery_corpus_restores_and_ends() {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/recovery");
        let restored =
            |name: &str| super::recovery_replies(&std::fs::read(dir.join(name)).unwrap());
        // The seeds reach the restoring code: what each restores.
        assert_eq!(restored("one_chunk_peer1"), 3);
        assert_eq!(restored("two_chunks_peer2"), 4);
        assert_eq!(restored("both_peers_same_flow"), 1);
        assert_eq!(restored("duplicate_chunk"), 2);
        assert_eq!(restored("new_snapshot"), 5);
        assert_eq!(restored("mixed_families"), 1);
        assert_eq!(restored("foreign_service"), 0);
        assert_eq!(restored("stale_request"), 0);
        assert_eq!(restored("overflowing_table"), super::CAP as usize);
        for e in std::fs::read_dir(&dir).expect("corpus").flatten() {
            super::recovery_replies(&std::fs::read(e.path()).unwrap());
        }
        assert_eq!(super::recovery_replies(&[]), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn arbitrary_recovery_replies(replies in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200)), 0..12)) {
            let mut data = Vec::new();
            for (flags, bytes) in replies {
                data.push(flags);
                data.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                data.extend_from_slice(&bytes);
            }
            super::recovery_replies(&data);
        }
    }

    #[test]
    fn prefix_alone() {
        super::engine_frames(&[]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn arbitrary_frames(frames in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..120)), 0..20)) {
            let mut data = Vec::new();
            for (flags, bytes) in frames {
                data.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                data.push(flags);
                data.extend_from_slice(&bytes);
            }
            super::engine_frames(&data);
        }
    }
}

//! The cluster protocol's per-message costs: signing a report, and a
//! receiving node handling one (parse, sender check, HMAC verify, windows,
//! load-table update), against parsing alone as the baseline in the same run.
//!
//! `cargo bench -p dpr-router --bench cluster`
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use dpr_packet::control::{
    self, Header, HostState, LoadEntry, MAX_MESSAGE_LEN, MessageKind, TAG_LEN,
};
use dpr_policy::{LeastLoad, SplitMix64};
use dpr_router::cluster::{Clock, KeyRing, Node, NodeConfig, PeerConfig};
use dpr_router::{Engine, EngineConfig};
use dpr_table::{Capacity, LoadTableConfig, PeerId, Timestamp};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

const KEY: [u8; 32] = [0x42; 32];
const UNIX: u64 = 1_800_000_000_000_000_000;

fn peer_tunnel() -> IpAddr {
    Ipv4Addr::new(198, 19, 0, 2).into()
}

fn report(keys: &KeyRing, seq: u64) -> Vec<u8> {
    let e = LoadEntry {
        origin: 1,
        state: HostState::Active,
        incarnation: 7,
        seq,
        age_ms: 0,
        open_connections: 17,
        cpu_utilisation: 0.3,
        redirected_connections: 2,
        active_sockets: 20,
        capacity_cpu: 1.0,
        capacity_memory: 1.0,
    };
    let h = Header {
        kind: MessageKind::Report,
        key_id: 1,
        sender: 1,
        incarnation: 7,
        seq,
        sent_at_ns: UNIX,
    };
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let svc: IpAddr = Ipv4Addr::new(198, 18, 1, 2).into();
    let n = control::emit_report(&mut buf, &h, &[e], &[svc]).unwrap();
    let tag = keys.sign(&buf[..n]);
    buf.truncate(n + TAG_LEN);
    buf[n..].copy_from_slice(&tag);
    buf
}

fn bench(c: &mut Criterion) {
    let keys = KeyRing::new(&[(1, &KEY)]).unwrap();
    let msg = report(&keys, 1);
    let signed = msg.len() - TAG_LEN;
    let mut g = c.benchmark_group("control");
    g.bench_function("parse report (baseline)", |b| {
        b.iter(|| control::parse(black_box(&msg)).is_ok())
    });
    g.bench_function("sign report", |b| {
        b.iter(|| keys.sign(black_box(&msg[..signed])))
    });

    let cfg = EngineConfig::new(
        Ipv4Addr::new(198, 19, 0, 1).into(),
        vec![Ipv4Addr::new(198, 18, 1, 1).into()],
        vec![80],
    );
    let mut engine = Engine::new(
        cfg,
        PeerId(0),
        Capacity::default(),
        LoadTableConfig::default(),
        Box::new(LeastLoad),
        Box::new(SplitMix64::new(1)),
    )
    .unwrap();
    let peers = vec![PeerConfig {
        id: PeerId(1),
        tunnel_addr: peer_tunnel(),
        service_addrs: vec![Ipv4Addr::new(198, 18, 1, 2).into()],
    }];
    let now = Clock {
        mono: Timestamp::from_millis(1),
        unix_ns: UNIX,
    };
    let mut nc = NodeConfig::new(PeerId(0), vec![Ipv4Addr::new(198, 18, 1, 1).into()]);
    nc.recover_on_start = false;
    let mut node = Node::new(nc, keys.clone(), peers, now, &mut engine).unwrap();
    let mut seq = 0;
    g.bench_function("receive report (verify + apply)", |b| {
        b.iter_batched(
            || {
                seq += 1;
                report(&keys, seq)
            },
            |m| {
                node.handle_datagram(now, peer_tunnel(), &m, &mut engine)
                    .is_ok()
            },
            BatchSize::SmallInput,
        )
    });
    let forged = {
        let mut m = msg.clone();
        m[40] ^= 1;
        m
    };
    g.bench_function("refuse forged report", |b| {
        b.iter(|| node.handle_datagram(now, peer_tunnel(), black_box(&forged), &mut engine))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

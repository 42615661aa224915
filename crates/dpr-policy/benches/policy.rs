//! One SYN decision per strategy with 1,000 peers.
//!
//! Run: `cargo bench -p dpr-policy --bench policy`
//! (criterion settings are fixed below: 1 s warm-up, 3 s measurement).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use core::net::{IpAddr, Ipv4Addr};
use core::time::Duration;
use criterion::{Criterion, criterion_group, criterion_main};
use dpr_packet::{FlowKey, IpProtocol};
use dpr_policy::{
    LeastLoad, NewConnection, Policy, RandomSource, SplitMix64, StatelessHash, StatelessHashConfig,
    Threshold, ThresholdConfig, TwoChoices, decide_and_account,
};
use dpr_table::{Capacity, LoadFigures, LoadReport, LoadTable, LoadTableConfig, PeerId, Timestamp};
use std::hint::black_box;

const PEERS: u16 = 1000;

fn loads() -> LoadTable {
    let mut t = LoadTable::new(LoadTableConfig::default(), PeerId(0), Capacity::default()).unwrap();
    t.set_local(
        LoadFigures {
            open_connections: 500,
            ..LoadFigures::default()
        },
        Capacity::default(),
    )
    .unwrap();
    let mut rng = SplitMix64::new(9);
    for i in 1..=PEERS {
        let id = PeerId(i);
        t.add_peer(
            id,
            Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8).into(),
            vec![],
            Timestamp(0),
        )
        .unwrap();
        let report = LoadReport {
            seq: 1,
            figures: LoadFigures {
                open_connections: 100 + (rng.next_u64() % 900) as u32,
                ..LoadFigures::default()
            },
            capacity: Capacity {
                cpu: 1.0 + (rng.next_u64() % 4) as f32,
                memory: 1.0,
            },
            draining: false,
        };
        t.apply_report(id, &report, Timestamp(1)).unwrap();
    }
    t
}

fn flow(n: u32) -> FlowKey {
    FlowKey::new(
        IpProtocol::Tcp,
        IpAddr::V4(Ipv4Addr::from_bits(0xc633_0000 ^ n)),
        n as u16,
        Ipv4Addr::new(198, 18, 1, 80).into(),
        80,
    )
}

/// One decision per strategy (alone, then through `decide_and_account`),
/// and one full build of the stateless-hash bucket table.
/// Run: `cargo bench -p dpr-policy --bench policy`
fn decisions(c: &mut Criterion) {
    let t = loads();
    let mut strategies: Vec<Box<dyn Policy>> = vec![
        Box::new(Threshold::new(ThresholdConfig { threshold: 100.0 }).unwrap()),
        Box::new(LeastLoad),
        Box::new(StatelessHash::new(StatelessHashConfig::default()).unwrap()),
        Box::new(TwoChoices),
    ];
    let mut g = c.benchmark_group("decision_1000_peers");
    let mut rng = SplitMix64::new(1);
    for s in &mut strategies {
        // Fill derived state (the hash strategy's bucket table) outside the timing.
        s.decide(&NewConnection::from_client(flow(0)), &t, &mut rng);
        let mut n = 0u32;
        g.bench_function(s.name(), |b| {
            b.iter(|| {
                n = n.wrapping_add(1);
                black_box(s.decide(&NewConnection::from_client(flow(n)), &t, &mut rng))
            })
        });
    }
    // The full SYN path: decide, guard, optimistic accounting on the table.
    let mut t2 = t.clone();
    for s in &mut strategies {
        let mut n = 0u32;
        g.bench_function(format!("{}+account", s.name()), |b| {
            b.iter(|| {
                n = n.wrapping_add(1);
                black_box(decide_and_account(
                    s.as_mut(),
                    &NewConnection::from_client(flow(n)),
                    &mut t2,
                    &mut rng,
                ))
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("stateless_hash_table");
    g.sample_size(10);
    g.bench_function("full_build_1001_hosts_65536_buckets", |b| {
        b.iter(|| {
            let mut h = StatelessHash::new(StatelessHashConfig::default()).unwrap();
            black_box(h.sync(&t))
        })
    });
    g.finish();
}

fn config_criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config_criterion();
    targets = decisions
}
criterion_main!(benches);

//! The named scenarios at their quick sizes (what CI runs; the full sizes
//! are run by command, see docs/simulation.md), and the protocol figures.
#![allow(clippy::unwrap_used, clippy::panic)]

use dpr_sim::plot::write_plots;
use dpr_sim::{
    AddressMode, ClusterConfig, Failure, PolicyKind, ReportMode, RunReport, run, run_scenario,
    scenario,
};

fn quiet(_: usize, _: usize, _: &RunReport, _: &dpr_sim::Case) {}

fn find<'a>(rows: &'a [dpr_sim::scenario::Row], case: usize, policy: &str) -> &'a RunReport {
    &rows
        .iter()
        .find(|r| r.case == case && r.run.policy == policy)
        .unwrap()
        .run
}

#[test]
fn seed_quick_dpr_beats_rr_dns_under_skew() {
    let sc = scenario("seed", true).unwrap();
    let rep = run_scenario(&sc, 1, 2, &quiet).unwrap();
    let table = rep.table();
    for p in [
        "rr-dns",
        "hash",
        "threshold-4",
        "least-load",
        "two-choices",
        "ideal",
    ] {
        assert!(table.contains(p), "{p} missing from\n{table}");
    }
    // Case 1: 70 % of clients on host0, which RR-DNS alone overloads.
    let rr = find(&rep.rows, 1, "rr-dns");
    let ideal = find(&rep.rows, 1, "ideal");
    for p in ["hash", "threshold-4", "least-load", "two-choices"] {
        let r = find(&rep.rows, 1, p);
        assert!(
            r.mean_response() < rr.mean_response() / 2.0,
            "{p}: {} vs rr-dns {}",
            r.mean_response(),
            rr.mean_response()
        );
        assert!(r.redirect_fraction > 0.0);
        assert!(ideal.mean_response() <= r.mean_response(), "{p}");
    }
}

#[test]
fn every_quick_scenario_runs_and_plots() {
    let dir = std::env::temp_dir().join(format!("dpr-sim-test-{}", std::process::id()));
    for name in ["failure", "flash"] {
        let sc = scenario(name, true).unwrap();
        let rep = run_scenario(&sc, 7, 2, &quiet).unwrap();
        assert_eq!(
            rep.rows.len(),
            sc.cases.iter().map(|c| c.policies.len()).sum::<usize>()
        );
        assert!(rep.table().lines().count() > rep.rows.len());
        for f in write_plots(&rep, &dir).unwrap() {
            let svg = std::fs::read_to_string(&f).unwrap();
            assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{f:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn report_rates_match_the_protocol() {
    let n = 20;
    let mesh = ClusterConfig {
        duration: 6.0,
        warmup: 1.0,
        ..ClusterConfig::new(n)
    };
    let m = run(&mesh, PolicyKind::Threshold(4.0), 3).unwrap();
    let per_s = 1.0 / mesh.report_interval;
    assert!((m.msgs_per_host_s / ((n - 1) as f64 * per_s) - 1.0).abs() < 0.02);
    // Mesh knowledge is half an interval old plus the network delay.
    let want_age = mesh.report_interval / 2.0 + mesh.net_delay;
    assert!(
        (m.knowledge_age / want_age - 1.0).abs() < 0.1,
        "{}",
        m.knowledge_age
    );
    assert_eq!(m.not_alive_fraction, 0.0);
    let gossip = ClusterConfig {
        report_mode: ReportMode::GOSSIP,
        ..mesh
    };
    let g = run(&gossip, PolicyKind::Threshold(4.0), 3).unwrap();
    assert!((g.msgs_per_host_s / (3.0 * per_s) - 1.0).abs() < 0.02);
    assert!(g.knowledge_age > m.knowledge_age);
}

#[test]
fn failures_lose_connections_and_peers_stop_redirecting_to_the_dead() {
    let base = ClusterConfig {
        load: 0.6,
        duration: 12.0,
        warmup: 1.0,
        series_bucket: 1.0,
        failures: vec![Failure {
            host: 1,
            at: 4.0,
            back_at: Some(8.0),
        }],
        ..ClusterConfig::new(6)
    };
    let r = run(&base, PolicyKind::LeastLoad, 4).unwrap();
    assert!(r.errors > 0);
    // Before the failure only the connections open on host1 when it
    // fails are lost (a handful); none once it is back.
    let before: u64 = r
        .series
        .iter()
        .filter(|p| p.t < 4.0)
        .map(|p| p.errors)
        .sum();
    assert!(before < 10, "{before}");
    for p in r.series.iter().filter(|p| p.t >= 8.0) {
        assert_eq!(p.errors, 0, "at {}", p.t);
    }
    // Between detection (4 missed intervals) and return, only clients that
    // still use host1's address lose connections: about 1/6 of them.
    let mid = &r.series[6];
    let lost = mid.errors as f64 / mid.arrivals as f64;
    assert!((lost - 1.0 / 6.0).abs() < 0.05, "{lost}");
    // With a shared address, the others take host1's arrivals.
    let vip = ClusterConfig {
        address_mode: AddressMode::SharedVip,
        ..base
    };
    let v = run(&vip, PolicyKind::LeastLoad, 4).unwrap();
    assert!(v.errors * 5 < r.errors, "{} vs {}", v.errors, r.errors);
}

/// Issue 13: the ratios to the ideal dispatcher measured on the quick skew
/// cases (deterministic: the same seed gives the same figures), with a
/// little room for harmless changes of the model (redirect ends modelled:
/// every bound tightened to the figure it gave, except the two that rose
/// a little, join-idle-1 64 hosts uniform gossip and thr-p2c-2's p99 at 4
/// hosts uniform, kept). join-idle is `dprd`'s default; thr-p2c-2 is the
/// best rule without idle advertisements. The full-size figures are in
/// docs/simulation.md.
#[test]
fn skew_quick_policies_stay_within_their_measured_ratios_to_ideal() {
    let mut sc = scenario("skew", true).unwrap();
    let keep = ["thr-p2c-2", "join-idle-1", "ideal"];
    for c in &mut sc.cases {
        c.policies.retain(|p| keep.contains(&p.label().as_str()));
    }
    let rep = run_scenario(&sc, 1, 2, &quiet).unwrap();
    // (case label, policy, mean ratio at most, p99 ratio at most).
    let bounds = [
        ("4 hosts, uniform, mesh", "join-idle-1", 1.13, 0.99),
        ("4 hosts, 70% on host0, mesh", "join-idle-1", 1.11, 0.95),
        ("64 hosts, uniform, mesh", "join-idle-1", 1.30, 1.17),
        ("64 hosts, uniform, gossip", "join-idle-1", 1.30, 1.17),
        ("64 hosts, 70% on host0, mesh", "join-idle-1", 1.31, 1.17),
        ("64 hosts, 70% on host0, gossip", "join-idle-1", 1.36, 1.24),
        ("4 hosts, uniform, mesh", "thr-p2c-2", 1.27, 0.89),
        ("4 hosts, 70% on host0, mesh", "thr-p2c-2", 1.32, 1.58),
        ("64 hosts, uniform, mesh", "thr-p2c-2", 1.61, 1.73),
        ("64 hosts, 70% on host0, mesh", "thr-p2c-2", 1.87, 1.79),
    ];
    for (case, policy, mean, p99) in bounds {
        let row = rep
            .rows
            .iter()
            .find(|r| sc.cases[r.case].label == case && r.run.policy == policy)
            .unwrap();
        let (m, p) = rep.ratio_to_ideal(row).unwrap();
        assert!(m <= mean, "{case} {policy}: mean {m:.3}x ideal > {mean}");
        assert!(p <= p99, "{case} {policy}: p99 {p:.3}x ideal > {p99}");
    }
    // With advertisements, join-idle beats thr-p2c-2 in every case.
    for (i, c) in sc.cases.iter().enumerate() {
        let ji = find(&rep.rows, i, "join-idle-1").mean_response();
        let tp = find(&rep.rows, i, "thr-p2c-2").mean_response();
        assert!(ji < tp, "{}: join-idle {ji} vs thr-p2c-2 {tp}", c.label);
    }
}

//! Validation of the simulator against queueing theory, and determinism.
//!
//! * One host is an M/G/1 processor-sharing queue: its mean response time
//!   is `E[S] / (1 - rho)` whatever the demand distribution.
//! * Round-robin DNS with no skew and no redirects makes each of N hosts
//!   an independent M/G/1-PS queue with arrival rate lambda / N: the same
//!   mean response time, and each host receives 1/N of the connections.
//!
//! Sizes are chosen so that the whole file runs in a few seconds in a debug
//! build; the tolerances follow from the number of samples (the standard
//! error of the mean response at these sizes is about 1 % for exponential
//! demand and 2-3 % for the bounded Pareto one).
#![allow(clippy::unwrap_used, clippy::panic)]

use dpr_sim::{ClientModel, ClusterConfig, Demand, PolicyKind, ReportMode, run};

const MEAN: f64 = 0.010;

fn single_host(demand: Demand, load: f64, duration: f64) -> ClusterConfig {
    ClusterConfig {
        load,
        demand,
        duration,
        warmup: 5.0,
        ..ClusterConfig::new(1)
    }
}

fn rel_err(got: f64, want: f64) -> f64 {
    (got / want - 1.0).abs()
}

#[test]
fn one_host_matches_mm1_ps() {
    let cfg = single_host(Demand::Exponential { mean: MEAN }, 0.7, 1_500.0);
    let r = run(&cfg, PolicyKind::RrDns, 1).unwrap();
    let want = MEAN / (1.0 - 0.7);
    eprintln!("M/M/1-PS: mean {} want {want}", r.mean_response());
    assert!(r.completed > 90_000, "{}", r.completed);
    assert!(
        rel_err(r.mean_response(), want) < 0.03,
        "mean {} want {want}",
        r.mean_response()
    );
}

#[test]
fn one_host_matches_mg1_ps_with_heavy_tails() {
    // Processor sharing is insensitive: the bounded Pareto demand gives
    // the same mean response time as the exponential one.
    let demand = Demand::BoundedPareto {
        alpha: 1.5,
        lo: 1e3,
        hi: 1e6,
        mean: MEAN,
    };
    let cfg = single_host(demand, 0.5, 3_000.0);
    let r = run(&cfg, PolicyKind::RrDns, 2).unwrap();
    let want = MEAN / (1.0 - 0.5);
    eprintln!(
        "M/G/1-PS: mean {} want {want}, {} conns",
        r.mean_response(),
        r.completed
    );
    assert!(
        rel_err(r.mean_response(), want) < 0.05,
        "mean {} want {want}",
        r.mean_response()
    );
    // Every arrival is accounted for.
    assert_eq!(r.arrivals, r.completed + r.errors + r.unfinished);
    assert_eq!(r.errors, 0);
}

#[test]
fn rr_dns_without_skew_is_n_independent_queues() {
    let n = 4;
    let cfg = ClusterConfig {
        load: 0.6,
        demand: Demand::Exponential { mean: MEAN },
        clients: ClientModel::Uniform,
        duration: 400.0,
        ..ClusterConfig::new(n)
    };
    let r = run(&cfg, PolicyKind::RrDns, 3).unwrap();
    let want = MEAN / (1.0 - 0.6);
    eprintln!("RR-DNS x4: mean {} want {want}", r.mean_response());
    assert!(
        rel_err(r.mean_response(), want) < 0.03,
        "mean {} want {want}",
        r.mean_response()
    );
    assert_eq!(r.redirect_fraction, 0.0);
    assert_eq!(r.msgs_per_host_s, 0.0);
    // Analytic arrival count: lambda x window, within 4 standard errors.
    let expected = cfg.arrival_rate() * (cfg.duration - cfg.warmup);
    assert!((r.arrivals as f64 - expected).abs() < 4.0 * expected.sqrt());
}

#[test]
fn same_seed_same_report_different_seed_different() {
    let cfg = ClusterConfig {
        clients: ClientModel::Hot { fraction: 0.5 },
        report_mode: ReportMode::GOSSIP,
        duration: 8.0,
        warmup: 1.0,
        ..ClusterConfig::new(6)
    };
    for policy in [
        PolicyKind::Threshold(2.0),
        PolicyKind::StatelessHash,
        PolicyKind::TwoChoices,
    ] {
        let a = run(&cfg, policy, 9).unwrap();
        let b = run(&cfg, policy, 9).unwrap();
        let c = run(&cfg, policy, 10).unwrap();
        assert_eq!(a, b, "{policy:?}");
        assert_ne!(a.response, c.response, "{policy:?}");
    }
}

#[test]
fn policies_see_the_same_arrivals() {
    let cfg = ClusterConfig {
        clients: ClientModel::Hot { fraction: 0.5 },
        duration: 6.0,
        warmup: 1.0,
        ..ClusterConfig::new(4)
    };
    let a = run(&cfg, PolicyKind::RrDns, 5).unwrap();
    let b = run(&cfg, PolicyKind::LeastLoad, 5).unwrap();
    let c = run(&cfg, PolicyKind::Ideal, 5).unwrap();
    assert_eq!(a.arrivals, b.arrivals);
    assert_eq!(a.arrivals, c.arrivals);
}

//! Named scenarios: sets of cases (a cluster configuration and the
//! policies to compare on it), run on the same arrival trace per case.
//!
//! Every scenario has a full size (the figures in `docs/simulation.md`)
//! and a quick size (seconds, for CI and a first look).

use crate::candidates::{CandidateSpec, IdleAds, Pick, When};
use crate::config::{
    AddressMode, ClientModel, ClusterConfig, Failure, Flash, PolicyKind, ReportMode,
};
use crate::model::run;
use crate::stats::RunReport;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The threshold the scenarios use unless they sweep it: 4 open
/// connections per unit of capacity (a reference host at load 0.8 has 4
/// on average).
pub const DEFAULT_THRESHOLD: f64 = 4.0;

/// How a scenario's results are best drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlotKind {
    /// Response-time distribution per policy, one plot per case.
    Cdf,
    /// Metrics against the cases' `x` value, one line per policy and mode.
    Sweep {
        /// Axis label of `x`.
        x_label: &'static str,
    },
    /// Metrics over time, one plot per case.
    TimeSeries,
    /// The table says it all.
    None,
}

/// One configuration and the policies run on it.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    /// Short label.
    pub label: String,
    /// The swept parameter's value (sweep scenarios), else 0.
    pub x: f64,
    /// The cluster.
    pub config: ClusterConfig,
    /// The policies, each on the same arrivals.
    pub policies: Vec<PolicyKind>,
}

/// A named set of cases.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Name (`dpr-sim <name>`).
    pub name: &'static str,
    /// One line on what it shows.
    pub title: &'static str,
    /// How to plot it.
    pub plot: PlotKind,
    /// The cases.
    pub cases: Vec<Case>,
}

/// One run's result within a scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Index of its case.
    pub case: usize,
    /// The run.
    pub run: RunReport,
}

/// All results of a scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct ScenarioReport {
    /// The scenario.
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    /// One row per case and policy, in order.
    pub rows: Vec<Row>,
}

/// The scenario names.
pub fn scenario_names() -> &'static [&'static str] {
    &[
        "seed",
        "staleness",
        "failure",
        "scale",
        "skew",
        "candidates",
        "flash",
        "mixed",
    ]
}

/// Share of all connections that reach host 0 in the skewed cases.
pub const HOT_SHARE: f64 = 0.7;

/// The cases of issue 13's goal: 4, 64 and 1,000 hosts at load 0.8,
/// uniform clients or [`HOT_SHARE`] of them on host 0, full-mesh or gossip
/// reports, each with `policies` (the ideal among them runs once per size
/// and client model: it reads no reports).
fn goal_cases(quick: bool, policies: &[PolicyKind]) -> Vec<Case> {
    let sizes: &[usize] = if quick { &[4, 64] } else { &[4, 64, 1000] };
    let mut cases = Vec::new();
    for &n in sizes {
        let big = n >= 256;
        // As the scale scenario: quick runs simulate a tenth of the time.
        let (duration, warmup) = if big { (13.0, 3.0) } else { (35.0, 5.0) };
        let base = ClusterConfig {
            load: 0.8,
            duration: if quick { duration / 10.0 } else { duration },
            warmup: if quick { warmup / 5.0 } else { warmup },
            drain: if big { 5.0 } else { 30.0 },
            ..ClusterConfig::new(n)
        };
        // `fraction` on host 0 on top of a uniform share that includes it.
        let one = 1.0 / n as f64;
        let hot = ClientModel::Hot {
            fraction: ((HOT_SHARE - one) / (1.0 - one)).max(0.0),
        };
        for (clients, what) in [(ClientModel::Uniform, "uniform"), (hot, "70% on host0")] {
            for mode in [ReportMode::FullMesh, ReportMode::GOSSIP] {
                let ps: Vec<PolicyKind> = policies
                    .iter()
                    .copied()
                    .filter(|p| {
                        mode == ReportMode::FullMesh || p.uses_tables() && *p != PolicyKind::Ideal
                    })
                    .collect();
                cases.push(case(
                    format!("{n} hosts, {what}, {}", mode.label()),
                    n as f64,
                    ClusterConfig {
                        clients,
                        report_mode: mode,
                        ..base.clone()
                    },
                    ps,
                ));
            }
        }
    }
    cases
}

/// The candidates of issue 13 (see [`crate::candidates`]), with the
/// policy they must beat and the ideal.
pub fn candidate_policies() -> Vec<PolicyKind> {
    let c = |when, pick, lighter_by, idle| {
        PolicyKind::Candidate(CandidateSpec {
            when,
            pick,
            lighter_by,
            idle,
        })
    };
    let p2m = Pick::Sample { d: 2, memory: true };
    let p3m = Pick::Sample { d: 3, memory: true };
    let p2 = Pick::Sample {
        d: 2,
        memory: false,
    };
    let jiq = |watermark, fanout, to_redirector| {
        Some(IdleAds {
            watermark,
            fanout,
            to_redirector,
            use_above: watermark,
        })
    };
    let jiq_above = |use_above, fanout| {
        Some(IdleAds {
            watermark: 0,
            fanout,
            to_redirector: true,
            use_above,
        })
    };
    vec![
        PolicyKind::ThresholdTwoChoices(DEFAULT_THRESHOLD),
        PolicyKind::ThresholdTwoChoices(1.0),
        PolicyKind::ThresholdTwoChoices(2.0),
        c(When::Fixed(1.0), Pick::LeastRandomTie, 0.0, None),
        c(When::Fixed(2.0), Pick::LeastRandomTie, 0.0, None),
        c(When::Fixed(1.0), p2m, 0.0, None),
        c(When::Fixed(1.0), p3m, 0.0, None),
        c(When::Fixed(2.0), p3m, 0.0, None),
        c(When::AboveMean(0.0), p2, 0.0, None),
        c(When::AboveMean(0.0), p2m, 0.0, None),
        c(When::AboveMean(0.5), p3m, 0.0, None),
        c(When::AboveMean(1.0), p3m, 0.0, None),
        c(When::Fixed(1.0), p3m, 1.0, None),
        c(When::Fixed(1.0), p2m, 0.0, jiq(0, 1, false)),
        c(When::Fixed(1.0), p2m, 0.0, jiq(0, 2, false)),
        c(When::Fixed(1.0), p2m, 0.0, jiq(0, 3, false)),
        c(When::Fixed(1.0), p2m, 0.0, jiq(0, 1, true)),
        c(When::Fixed(1.0), p2m, 0.0, jiq(0, 2, true)),
        c(When::Fixed(1.0), p2m, 0.0, jiq(0, 3, true)),
        c(When::Fixed(1.0), p2, 0.0, jiq(0, 2, true)),
        c(When::Fixed(1.0), p3m, 0.0, jiq(1, 2, true)),
        c(When::Fixed(2.0), p2, 0.0, jiq(0, 2, true)),
        c(When::Fixed(2.0), p2, 0.0, jiq(0, 3, true)),
        c(When::AboveMean(0.0), p2, 0.0, jiq(0, 2, true)),
        c(When::AboveMean(0.0), p2, 0.0, jiq(0, 3, true)),
        c(When::Fixed(2.0), p2, 0.0, jiq_above(1, 2)),
        c(When::Fixed(2.0), p2, 0.0, jiq_above(1, 3)),
        c(When::Fixed(1.0), p2, 0.0, jiq(0, 3, true)),
        c(When::Fixed(1.0), p2, 0.0, jiq(0, 4, true)),
        c(When::Fixed(1.0), p2, 0.0, jiq(0, 6, true)),
        c(When::Fixed(1.0), p3m, 0.0, jiq(0, 4, true)),
        PolicyKind::JoinIdle(1.0),
        PolicyKind::Ideal,
    ]
}

fn all_policies() -> Vec<PolicyKind> {
    vec![
        PolicyKind::RrDns,
        PolicyKind::StatelessHash,
        PolicyKind::Threshold(DEFAULT_THRESHOLD),
        PolicyKind::LeastLoad,
        PolicyKind::TwoChoices,
        PolicyKind::ThresholdTwoChoices(DEFAULT_THRESHOLD),
        PolicyKind::Ideal,
    ]
}

fn case(label: impl Into<String>, x: f64, config: ClusterConfig, p: Vec<PolicyKind>) -> Case {
    Case {
        label: label.into(),
        x,
        config,
        policies: p,
    }
}

/// The scenario `name` at full size, or quick size (for CI).
pub fn scenario(name: &str, quick: bool) -> Option<Scenario> {
    // Quick runs simulate a tenth of the time.
    let dur = |full: f64| if quick { full / 10.0 } else { full };
    let warm = |full: f64| if quick { full / 5.0 } else { full };
    Some(match name {
        "seed" => {
            let mut policies = all_policies();
            policies.splice(2..3, [2.0, 4.0, 8.0].map(PolicyKind::Threshold));
            let p2c4 = policies.len() - 2;
            policies.insert(p2c4, PolicyKind::ThresholdTwoChoices(2.0));
            let base = ClusterConfig {
                duration: dur(205.0),
                warmup: warm(5.0),
                ..ClusterConfig::new(4)
            };
            Scenario {
                name: "seed",
                title: "The seed's comparison: 4 hosts, RR-DNS alone vs DPR's policies",
                plot: PlotKind::Cdf,
                cases: vec![
                    case(
                        "uniform, load 0.7",
                        0.0,
                        ClusterConfig {
                            load: 0.7,
                            ..base.clone()
                        },
                        policies.clone(),
                    ),
                    case(
                        "70% on host0, load 0.5",
                        0.0,
                        ClusterConfig {
                            load: 0.5,
                            clients: ClientModel::Hot { fraction: 0.6 },
                            ..base
                        },
                        policies,
                    ),
                ],
            }
        }
        "staleness" => {
            let ratios: &[f64] = if quick {
                &[0.1, 10.0, 100.0]
            } else {
                &[0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
            };
            let cases = ratios
                .iter()
                .map(|&r| {
                    let cfg = ClusterConfig {
                        load: 0.8,
                        report_interval: r * 0.010,
                        duration: dur(125.0),
                        warmup: warm(5.0),
                        ..ClusterConfig::new(16)
                    };
                    case(format!("interval {r} x E[S]"), r, cfg, all_policies())
                })
                .collect();
            Scenario {
                name: "staleness",
                title: "Report interval / mean service time from 0.1 to 100, 16 hosts, load 0.8",
                plot: PlotKind::Sweep {
                    x_label: "report interval / mean service time",
                },
                cases,
            }
        }
        "failure" => {
            let base = ClusterConfig {
                load: 0.6,
                duration: dur(60.0),
                warmup: warm(5.0),
                failures: vec![
                    Failure {
                        host: 1,
                        at: dur(20.0),
                        back_at: Some(dur(40.0)),
                    },
                    Failure {
                        host: 2,
                        at: dur(20.0),
                        back_at: Some(dur(40.0)),
                    },
                ],
                series_bucket: if quick { 0.2 } else { 1.0 },
                ..ClusterConfig::new(8)
            };
            Scenario {
                name: "failure",
                title: "2 of 8 hosts fail at 20 s and return at 40 s, load 0.6",
                plot: PlotKind::TimeSeries,
                cases: vec![
                    case("rr-dns addresses", 0.0, base.clone(), all_policies()),
                    case(
                        "shared VIP (ECMP)",
                        1.0,
                        ClusterConfig {
                            address_mode: AddressMode::SharedVip,
                            ..base
                        },
                        all_policies(),
                    ),
                ],
            }
        }
        "scale" => {
            let sizes: &[usize] = if quick {
                &[4, 16, 64]
            } else {
                &[4, 16, 64, 256, 1000]
            };
            let mut cases = Vec::new();
            for &n in sizes {
                // Large clusters make many connections per second: a
                // shorter run measures as many, and full-mesh reports
                // (N^2 per interval) dominate the cost.
                let big = n >= 256;
                let base = ClusterConfig {
                    load: 0.8,
                    duration: dur(if big { 13.0 } else { 35.0 }),
                    warmup: warm(if big { 3.0 } else { 5.0 }),
                    drain: if big { 5.0 } else { 30.0 },
                    ..ClusterConfig::new(n)
                };
                // Issue 13's two: thr-p2c at the threshold that ships, and
                // join-idle with (simulated) idle advertisements.
                let issue13 = [
                    PolicyKind::ThresholdTwoChoices(2.0),
                    PolicyKind::JoinIdle(1.0),
                ];
                let mut mesh = all_policies();
                mesh.splice(mesh.len() - 1..mesh.len() - 1, issue13);
                cases.push(case(
                    format!("{n} hosts, mesh"),
                    n as f64,
                    base.clone(),
                    mesh,
                ));
                cases.push(case(
                    format!("{n} hosts, gossip"),
                    n as f64,
                    ClusterConfig {
                        report_mode: ReportMode::GOSSIP,
                        ..base
                    },
                    vec![
                        PolicyKind::StatelessHash,
                        PolicyKind::Threshold(DEFAULT_THRESHOLD),
                        PolicyKind::LeastLoad,
                        PolicyKind::TwoChoices,
                        PolicyKind::ThresholdTwoChoices(DEFAULT_THRESHOLD),
                        issue13[0],
                        issue13[1],
                    ],
                ));
            }
            Scenario {
                name: "scale",
                title: "4 to 1,000 hosts at load 0.8 per host, full-mesh and gossip reports",
                plot: PlotKind::Sweep { x_label: "hosts" },
                cases,
            }
        }
        "skew" => Scenario {
            name: "skew",
            title: "Issue 13: 4, 64, 1,000 hosts at load 0.8, uniform or 70% on host0, mesh and gossip",
            plot: PlotKind::None,
            cases: goal_cases(
                quick,
                &[
                    PolicyKind::RrDns,
                    PolicyKind::ThresholdTwoChoices(DEFAULT_THRESHOLD),
                    PolicyKind::ThresholdTwoChoices(2.0),
                    PolicyKind::JoinIdle(1.0),
                    PolicyKind::JoinIdle(2.0),
                    PolicyKind::Ideal,
                ],
            ),
        },
        "candidates" => Scenario {
            name: "candidates",
            title: "Issue 13's candidates on the skew scenario's cases",
            plot: PlotKind::None,
            cases: goal_cases(quick, &candidate_policies()),
        },
        "flash" => {
            let cfg = ClusterConfig {
                load: 0.5,
                duration: dur(60.0),
                warmup: warm(5.0),
                flash: Some(Flash {
                    start: dur(20.0),
                    duration: dur(20.0),
                    extra_load: 4.0,
                    target: 0,
                }),
                series_bucket: if quick { 0.2 } else { 1.0 },
                ..ClusterConfig::new(16)
            };
            Scenario {
                name: "flash",
                title: "16 hosts at load 0.5; from 20 s to 40 s a crowd worth 4 hosts hits host0",
                plot: PlotKind::TimeSeries,
                cases: vec![case("flash crowd", 0.0, cfg, all_policies())],
            }
        }
        "mixed" => {
            let cfg = ClusterConfig {
                load: 0.7,
                capacities: vec![0.5, 1.0, 1.0, 2.0],
                duration: dur(125.0),
                warmup: warm(5.0),
                clients: ClientModel::Resolvers {
                    count: 1000,
                    zipf_s: 0.8,
                    ttl: 30.0,
                },
                ..ClusterConfig::new(16)
            };
            Scenario {
                name: "mixed",
                title: "16 hosts of capacity 0.5/1/1/2, clients behind 1,000 caching resolvers",
                plot: PlotKind::Cdf,
                cases: vec![case("mixed capacities", 0.0, cfg, all_policies())],
            }
        }
        _ => return None,
    })
}

/// Runs every case and policy of `scenario` with `seed`, on up to `jobs`
/// threads (the output does not depend on `jobs`). `progress` is called
/// after each run with (done, total).
pub fn run_scenario(
    scenario: &Scenario,
    seed: u64,
    jobs: usize,
    progress: &(dyn Fn(usize, usize, &RunReport, &Case) + Sync),
) -> Result<ScenarioReport, String> {
    let work: Vec<(usize, PolicyKind)> = scenario
        .cases
        .iter()
        .enumerate()
        .flat_map(|(i, c)| c.policies.iter().map(move |&p| (i, p)))
        .collect();
    let results: Mutex<Vec<Option<Result<RunReport, String>>>> = Mutex::new(vec![None; work.len()]);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, work.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(c, p)) = work.get(i) else { break };
                    let case = &scenario.cases[c];
                    let r = run(&case.config, p, seed);
                    let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if let Ok(rep) = &r {
                        progress(d, work.len(), rep, case);
                    }
                    if let Ok(mut v) = results.lock() {
                        v[i] = Some(r);
                    }
                }
            });
        }
    });
    let results = results.into_inner().map_err(|e| e.to_string())?;
    let mut rows = Vec::with_capacity(work.len());
    for (&(case, _), r) in work.iter().zip(results) {
        let run = r.ok_or("a run did not finish")??;
        rows.push(Row { case, run });
    }
    Ok(ScenarioReport {
        scenario: scenario.clone(),
        seed,
        rows,
    })
}

impl ScenarioReport {
    /// The `ideal` run that `row`'s ratios refer to: the one in the same
    /// case, else the one in a case that differs only by its report mode
    /// (the ideal reads no reports, so it is the same run; the scale
    /// scenario runs it once per size).
    pub fn ideal_for(&self, row: &Row) -> Option<&RunReport> {
        let cases = &self.scenario.cases;
        let ideal = |c: usize| {
            self.rows
                .iter()
                .find(|r| r.case == c && r.run.policy == PolicyKind::Ideal.label())
                .map(|r| &r.run)
        };
        ideal(row.case).or_else(|| {
            let me = &cases[row.case].config;
            (0..cases.len())
                .filter(|&c| {
                    c != row.case
                        && ClusterConfig {
                            report_mode: me.report_mode,
                            ..cases[c].config.clone()
                        } == *me
                })
                .find_map(ideal)
        })
    }

    /// `row`'s mean and p99 response times as multiples of the ideal
    /// dispatcher's on the same arrivals (`None` without an ideal run, or
    /// when over 1 % of `row`'s measured connections never finished: its
    /// figures are those of the lucky ones).
    pub fn ratio_to_ideal(&self, row: &Row) -> Option<(f64, f64)> {
        if row.run.unfinished * 100 > row.run.arrivals {
            return None;
        }
        let ideal = self.ideal_for(row)?;
        let (m, p) = (ideal.mean_response(), ideal.p99_response());
        (m > 0.0 && p > 0.0).then(|| (row.run.mean_response() / m, row.run.p99_response() / p))
    }

    /// The comparison table, aligned, one line per run.
    pub fn table(&self) -> String {
        let head = [
            "case",
            "policy",
            "mode",
            "mean ms",
            "p99 ms",
            "mean/ideal",
            "p99/ideal",
            "max/mean",
            "redir %",
            "lost %",
            "msg/host/s",
            "B/host/s",
            "age ms",
            "!alive %",
        ];
        let mut lines: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
        for r in &self.rows {
            let x = &r.run;
            let mut mean = format!("{:.2}", x.mean_response() * 1e3);
            if x.unfinished > 0 {
                mean.push_str(&format!(" ({} unfinished)", x.unfinished));
            }
            let (mean_ratio, p99_ratio) = self
                .ratio_to_ideal(r)
                .map_or(("-".into(), "-".into()), |(m, p)| {
                    (format!("{m:.2}x"), format!("{p:.2}x"))
                });
            lines.push(vec![
                self.scenario.cases[r.case].label.clone(),
                x.policy.clone(),
                x.mode.clone(),
                mean,
                format!("{:.1}", x.p99_response() * 1e3),
                mean_ratio,
                p99_ratio,
                format!("{:.2}", x.imbalance),
                format!("{:.1}", x.redirect_fraction * 100.0),
                format!("{:.3}", x.error_fraction() * 100.0),
                format!("{:.0}", x.msgs_per_host_s),
                format!("{:.0}", x.bytes_per_host_s),
                if x.mode == "-" {
                    "-".into()
                } else {
                    format!("{:.1}", x.knowledge_age * 1e3)
                },
                if x.mode == "-" {
                    "-".into()
                } else {
                    format!("{:.2}", x.not_alive_fraction * 100.0)
                },
            ]);
        }
        let cols = head.len();
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                lines
                    .iter()
                    .map(|l| l[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for (i, l) in lines.iter().enumerate() {
            let cells: Vec<String> = l
                .iter()
                .enumerate()
                .map(|(c, s)| {
                    if c < 3 {
                        format!("{s:<w$}", w = widths[c])
                    } else {
                        format!("{s:>w$}", w = widths[c])
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
            if i == 0 {
                let total: usize = widths.iter().sum::<usize>() + 2 * (cols - 1);
                out.push_str(&"-".repeat(total));
                out.push('\n');
            }
        }
        out
    }
}

//! The goals of issue 17, as one run measures them: each figure's median
//! and range, its ratio to the baseline measured in the same run, the goal
//! and whether it is met; printed as a table and written as JSON
//! (`dpr-lab bench --json FILE`).
//!
//! "Best backend" is the DPR backend with the best median (highest rate,
//! lowest latency); a goal "in every run" is judged on the worst run's
//! ratio, not the median's. Rows whose part did not run (`--only`) have no
//! figures and `met: null`.

use super::{Stat, stat};
use std::fmt::Write as _;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) enum Cmp {
    /// The value must be at least the goal.
    #[serde(rename = ">=")]
    AtLeast,
    /// The value must be at most the goal.
    #[serde(rename = "<=")]
    AtMost,
}

/// What a goal is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum On {
    /// The ratio of the medians.
    Ratio,
    /// The worst run's ratio (the goal holds "in every run").
    RatioEveryRun,
    /// The figure's median itself (no baseline).
    Median,
}

/// A goal: `value` compared with `cmp`, judged on `on`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub(crate) struct Goal {
    pub cmp: Cmp,
    pub value: f64,
    pub on: On,
}

impl Goal {
    const fn new(cmp: Cmp, value: f64, on: On) -> Self {
        Self { cmp, value, on }
    }

    /// Whether `v` meets the goal.
    pub(crate) fn holds(&self, v: f64) -> bool {
        v.is_finite()
            && match self.cmp {
                Cmp::AtLeast => v >= self.value,
                Cmp::AtMost => v <= self.value,
            }
    }

    fn text(&self) -> String {
        let op = match self.cmp {
            Cmp::AtLeast => "≥",
            Cmp::AtMost => "≤",
        };
        match self.on {
            On::Ratio => format!("{op} {}×", self.value),
            On::RatioEveryRun => format!("{op} {}× in every run", self.value),
            On::Median => format!("{op} {}", self.value),
        }
    }
}

/// One line of the goals table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct Row {
    pub figure: String,
    pub unit: &'static str,
    pub median: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// The ratio the goal is judged on (the worst run's for
    /// [`On::RatioEveryRun`]); none for goals on the figure itself.
    pub ratio: Option<f64>,
    pub goal: Goal,
    /// None when the figure was not measured in this run.
    pub met: Option<bool>,
}

impl Row {
    fn new(figure: impl Into<String>, unit: &'static str, goal: Goal) -> Self {
        Self {
            figure: figure.into(),
            unit,
            median: None,
            min: None,
            max: None,
            ratio: None,
            goal,
            met: None,
        }
    }

    fn with_stat(mut self, s: Stat) -> Self {
        self.median = Some(s.median);
        self.min = Some(s.min);
        self.max = Some(s.max);
        self
    }

    /// The figure `samples` against the median of `base`.
    fn ratio_to(self, samples: &[f64], base: &[f64]) -> Self {
        if samples.is_empty() || base.is_empty() {
            return self;
        }
        let (s, b) = (stat(samples), stat(base).median);
        let ratio = match self.goal.on {
            // Worst for the goal: the smallest ratio for "≥", the largest for "≤".
            On::RatioEveryRun => match self.goal.cmp {
                Cmp::AtLeast => s.min / b,
                Cmp::AtMost => s.max / b,
            },
            _ => s.median / b,
        };
        let mut r = self.with_stat(s);
        r.ratio = Some(ratio);
        r.met = Some(r.goal.holds(ratio));
        r
    }

    /// The figure's own median against the goal.
    fn absolute(self, samples: &[f64]) -> Self {
        if samples.is_empty() {
            return self;
        }
        let s = stat(samples);
        let mut r = self.with_stat(s);
        r.met = Some(r.goal.holds(s.median));
        r
    }
}

/// Samples of one path per DPR backend ("tun", "af-xdp-native", …).
pub(crate) type PerBackend = Vec<(String, Vec<f64>)>;

/// Everything the goals are computed from, one sample per run (empty when
/// not measured).
#[derive(Debug, Default)]
pub(crate) struct Figures {
    /// Small-packet forwarding, packets/s.
    pub fwd_kernel: Vec<f64>,
    pub fwd_dpr: PerBackend,
    /// HTTP with a connection per request, requests/s.
    pub http_kernel: Vec<f64>,
    pub http_haproxy: Vec<f64>,
    pub http_dpr: PerBackend,
    /// Keep-alive HTTP, requests/s and p99 (ms).
    pub ka_direct_rps: Vec<f64>,
    pub ka_haproxy_p99: Vec<f64>,
    pub ka_dpr_rps: PerBackend,
    pub ka_dpr_p99: PerBackend,
    /// The 20 MB transfer, MB/s: direct, and through a redirect per
    /// backend; the key is "backend direction" ("tun download").
    pub bulk_direct: Vec<(String, Vec<f64>)>,
    pub bulk_dpr: PerBackend,
    /// The engine, ns per packet.
    pub engine_cached_ns: Vec<f64>,
    pub engine_random_ns: Vec<f64>,
    /// RSS per tracked flow, bytes.
    pub rss_per_flow: Vec<f64>,
}

/// The backend whose median is best: the highest, or the lowest when
/// `lowest` (a latency).
pub(crate) fn best(per: &PerBackend, lowest: bool) -> Option<&(String, Vec<f64>)> {
    per.iter().filter(|(_, v)| !v.is_empty()).min_by(|a, b| {
        let (x, y) = (stat(&a.1).median, stat(&b.1).median);
        if lowest {
            x.total_cmp(&y)
        } else {
            y.total_cmp(&x)
        }
    })
}

fn samples_of<'a>(per: &'a PerBackend, backend: &str) -> &'a [f64] {
    per.iter()
        .find(|(b, _)| b == backend)
        .map_or(&[], |(_, v)| v.as_slice())
}

/// "DPR tun" and so on: a figure's name with the backend it was judged on.
fn named(figure: &str, b: Option<&(String, Vec<f64>)>) -> String {
    match b {
        Some((name, _)) => format!("{figure} [{name}]"),
        None => figure.to_string(),
    }
}

/// The bulk row: the worst (backend, direction) of the redirects against
/// direct in the same direction.
fn bulk_row(f: &Figures, goal: Goal) -> Row {
    const FIG: &str = "20 MB transfer through a redirect, TUN and AF_XDP / direct";
    let mut worst: Option<(f64, &str, &[f64], &[f64])> = None;
    for (key, v) in &f.bulk_dpr {
        let dir = key.rsplit(' ').next().unwrap_or("");
        let Some((_, base)) = f.bulk_direct.iter().find(|(d, _)| d == dir) else {
            continue;
        };
        if v.is_empty() || base.is_empty() {
            continue;
        }
        let r = stat(v).median / stat(base).median;
        if worst.is_none_or(|w| r < w.0) {
            worst = Some((r, key, v, base));
        }
    }
    match worst {
        Some((_, key, v, base)) => {
            Row::new(format!("{FIG} [worst: {key}]"), "MB/s", goal).ratio_to(v, base)
        }
        None => Row::new(FIG, "MB/s", goal),
    }
}

/// The eleven rows of issue 17's goals table, in its order.
pub(crate) fn rows(f: &Figures) -> Vec<Row> {
    use Cmp::{AtLeast, AtMost};
    use On::{Median, Ratio, RatioEveryRun};
    let kpps = |v: &[f64]| v.iter().map(|x| x / 1e3).collect::<Vec<f64>>();
    let fwd_best = best(&f.fwd_dpr, false);
    let http_best = best(&f.http_dpr, false);
    let ka_rps_best = best(&f.ka_dpr_rps, false);
    let ka_p99_best = best(&f.ka_dpr_p99, true);
    vec![
        Row::new(
            named(
                "small-packet forwarding through A, best backend / kernel forwarding",
                fwd_best,
            ),
            "kpps",
            Goal::new(AtLeast, 3.0, Ratio),
        )
        .ratio_to(&kpps(fwd_best.map_or(&[], |b| &b.1)), &kpps(&f.fwd_kernel)),
        Row::new(
            named(
                "redirected HTTP, best backend / kernel forwarding through A (same path)",
                http_best,
            ),
            "req/s",
            Goal::new(AtLeast, 1.0, Ratio),
        )
        .ratio_to(http_best.map_or(&[], |b| &b.1), &f.http_kernel),
        Row::new(
            named(
                "redirected HTTP, best backend / HAProxy TCP on A",
                http_best,
            ),
            "req/s",
            Goal::new(AtLeast, 1.25, Ratio),
        )
        .ratio_to(http_best.map_or(&[], |b| &b.1), &f.http_haproxy),
        Row::new(
            "TUN forwarding / kernel forwarding",
            "kpps",
            Goal::new(AtLeast, 0.7, RatioEveryRun),
        )
        .ratio_to(&kpps(samples_of(&f.fwd_dpr, "tun")), &kpps(&f.fwd_kernel)),
        Row::new(
            "TUN redirected HTTP / HAProxy",
            "req/s",
            Goal::new(AtLeast, 1.0, Ratio),
        )
        .ratio_to(samples_of(&f.http_dpr, "tun"), &f.http_haproxy),
        bulk_row(f, Goal::new(AtLeast, 0.8, Ratio)),
        Row::new(
            named(
                "redirected keep-alive p99 / HAProxy p99 (wrk -c50), best backend",
                ka_p99_best,
            ),
            "ms",
            Goal::new(AtMost, 1.0, Ratio),
        )
        .ratio_to(ka_p99_best.map_or(&[], |b| &b.1), &f.ka_haproxy_p99),
        Row::new(
            named(
                "redirected keep-alive req/s / direct, best backend",
                ka_rps_best,
            ),
            "req/s",
            Goal::new(AtLeast, 0.95, Ratio),
        )
        .ratio_to(ka_rps_best.map_or(&[], |b| &b.1), &f.ka_direct_rps),
        Row::new(
            "engine, established redirected packet, entry in cache",
            "ns",
            Goal::new(AtMost, 40.0, Median),
        )
        .absolute(&f.engine_cached_ns),
        Row::new(
            "engine over 1 M random flows, batched",
            "ns",
            Goal::new(AtMost, 80.0, Median),
        )
        .absolute(&f.engine_random_ns),
        Row::new(
            "RSS per tracked flow at 1 M flows",
            "B",
            Goal::new(AtMost, 64.0, Median),
        )
        .absolute(&f.rss_per_flow),
    ]
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".to_string(), |v| format!("{v:.digits$}"))
}

/// The goals table in Markdown, in the order.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| figure | unit | median (min–max) | ratio | goal | met |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let digits = if r.median.is_some_and(|m| m.abs() >= 100.0) {
            0
        } else {
            2
        };
        let fig = match r.median {
            Some(_) => format!(
                "{} ({}–{})",
                num(r.median, digits),
                num(r.min, digits),
                num(r.max, digits)
            ),
            None => "not measured".to_string(),
        };
        let ratio = r
            .ratio
            .map_or_else(|| "—".to_string(), |v| format!("{v:.2}×"));
        let met = match r.met {
            Some(true) => "**met**",
            Some(false) => "not met",
            None => "—",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {fig} | {ratio} | {} | {met} |",
            r.figure,
            r.unit,
            r.goal.text()
        );
    }
    s
}

/// The rows as JSON: `{"rows": [...]}`, one row per line.
pub(crate) fn to_json(rows: &[Row]) -> Result<String, String> {
    let mut s = String::from("{\"rows\": [\n");
    for (i, r) in rows.iter().enumerate() {
        let line = serde_json::to_string(r).map_err(|e| format!("json: {e}"))?;
        s.push_str("  ");
        s.push_str(&line);
        s.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
    }
    s.push_str("]}\n");
    Ok(s)
}

/// Writes [`to_json`] to `path`, naming the file in the error.
pub(crate) fn write_json(path: &std::path::Path, rows: &[Row]) -> Result<(), String> {
    let text = to_json(rows)?;
    std::fs::write(path, text).map_err(|e| format!("--json {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per(v: &[(&str, &[f64])]) -> PerBackend {
        v.iter().map(|(n, s)| (n.to_string(), s.to_vec())).collect()
    }

    #[test]
    fn goals_compare_both_ways_and_refuse_nan() {
        let ge = Goal::new(Cmp::AtLeast, 3.0, On::Ratio);
        assert!(ge.holds(3.0) && ge.holds(3.1) && !ge.holds(2.99));
        let le = Goal::new(Cmp::AtMost, 40.0, On::Median);
        assert!(le.holds(40.0) && le.holds(12.0) && !le.holds(40.01));
        assert!(!ge.holds(f64::NAN) && !le.holds(f64::NAN) && !ge.holds(f64::INFINITY));
    }

    #[test]
    fn best_backend_is_the_best_median() {
        let p = per(&[
            ("tun", &[10.0, 11.0, 12.0]),
            ("af-xdp-native", &[30.0, 5.0, 31.0]),
            ("af-xdp-generic", &[]),
        ]);
        assert_eq!(best(&p, false).unwrap().0, "af-xdp-native");
        assert_eq!(best(&p, true).unwrap().0, "tun");
        assert!(best(&per(&[("tun", &[])]), false).is_none());
    }

    #[test]
    fn every_run_goal_is_judged_on_the_worst_run() {
        let f = Figures {
            fwd_kernel: vec![100e3, 100e3, 100e3, 100e3, 100e3],
            // Median 0.8×, worst run 0.6×.
            fwd_dpr: per(&[("tun", &[60e3, 80e3, 80e3, 90e3, 95e3])]),
            ..Figures::default()
        };
        let r = &rows(&f)[3];
        assert_eq!(r.goal.on, On::RatioEveryRun);
        assert_eq!(r.median, Some(80.0));
        assert_eq!(r.min, Some(60.0));
        assert!((r.ratio.unwrap() - 0.6).abs() < 1e-12);
        assert_eq!(r.met, Some(false));
        // The same with the worst run at 0.7×: met.
        let f = Figures {
            fwd_kernel: vec![100e3; 5],
            fwd_dpr: per(&[("tun", &[70e3, 80e3, 80e3, 90e3, 95e3])]),
            ..Figures::default()
        };
        assert_eq!(rows(&f)[3].met, Some(true));
    }

    #[test]
    fn ratio_rows_use_the_best_backend_and_the_same_runs_baseline() {
        let f = Figures {
            fwd_kernel: vec![100e3, 110e3, 90e3],
            fwd_dpr: per(&[
                ("tun", &[60e3, 70e3, 80e3]),
                ("af-xdp-native", &[290e3, 300e3, 310e3]),
            ]),
            http_kernel: vec![1000.0; 3],
            http_haproxy: vec![800.0; 3],
            http_dpr: per(&[("tun", &[700.0; 3]), ("af-xdp-native", &[1000.0; 3])]),
            ka_direct_rps: vec![50_000.0; 3],
            ka_haproxy_p99: vec![2.0; 3],
            ka_dpr_rps: per(&[("tun", &[30_000.0; 3]), ("af-xdp-native", &[48_000.0; 3])]),
            ka_dpr_p99: per(&[("tun", &[3.0; 3]), ("af-xdp-native", &[1.8; 3])]),
            ..Figures::default()
        };
        let r = rows(&f);
        assert_eq!(r.len(), 11);
        assert!(r[0].figure.contains("[af-xdp-native]"));
        assert_eq!(r[0].ratio, Some(3.0));
        assert_eq!(r[0].met, Some(true));
        assert_eq!(r[0].unit, "kpps");
        assert_eq!(r[0].median, Some(300.0));
        assert_eq!((r[1].ratio, r[1].met), (Some(1.0), Some(true)));
        assert_eq!((r[2].ratio, r[2].met), (Some(1.25), Some(true)));
        assert_eq!((r[4].ratio, r[4].met), (Some(0.875), Some(false)));
        // p99: the lowest backend, "≤".
        assert!(r[6].figure.contains("[af-xdp-native]"));
        assert!((r[6].ratio.unwrap() - 0.9).abs() < 1e-12);
        assert_eq!(r[6].met, Some(true));
        assert!((r[7].ratio.unwrap() - 0.96).abs() < 1e-12);
        assert_eq!(r[7].met, Some(true));
        // Not measured: no figures, no verdict.
        for i in [5, 8, 9, 10] {
            assert_eq!(
                (r[i].median, r[i].ratio, r[i].met),
                (None, None, None),
                "{i}"
            );
        }
    }

    #[test]
    fn bulk_row_takes_the_worst_backend_and_direction() {
        let f = Figures {
            bulk_direct: vec![
                ("download".into(), vec![1000.0; 5]),
                ("upload".into(), vec![500.0; 5]),
            ],
            bulk_dpr: per(&[
                ("tun download", &[900.0; 5]),
                ("tun upload", &[350.0; 5]),
                ("af-xdp-native download", &[950.0; 5]),
                ("af-xdp-native upload", &[450.0; 5]),
            ]),
            ..Figures::default()
        };
        let r = &rows(&f)[5];
        assert!(r.figure.ends_with("[worst: tun upload]"), "{}", r.figure);
        assert!((r.ratio.unwrap() - 0.7).abs() < 1e-12);
        assert_eq!(r.met, Some(false));
        assert_eq!(r.unit, "MB/s");
    }

    #[test]
    fn absolute_rows_judge_the_median() {
        let f = Figures {
            engine_cached_ns: vec![39.0, 41.0, 80.0, 20.0, 40.0],
            engine_random_ns: vec![81.0, 100.0, 90.0],
            rss_per_flow: vec![56.4],
            ..Figures::default()
        };
        let r = rows(&f);
        assert_eq!(
            (r[8].median, r[8].met, r[8].ratio),
            (Some(40.0), Some(true), None)
        );
        assert_eq!((r[9].median, r[9].met), (Some(90.0), Some(false)));
        assert_eq!(
            (r[10].median, r[10].min, r[10].met),
            (Some(56.4), Some(56.4), Some(true))
        );
    }

    #[test]
    fn json_has_one_line_per_row_and_every_field() {
        let f = Figures {
            engine_cached_ns: vec![50.0, 60.0, 70.0],
            ..Figures::default()
        };
        let r = rows(&f);
        let text = to_json(&r).unwrap();
        assert_eq!(text.lines().count(), 11 + 2);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let rows = v["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 11);
        for row in rows {
            for k in [
                "figure", "unit", "median", "min", "max", "ratio", "goal", "met",
            ] {
                assert!(row.get(k).is_some(), "{k} missing in {row}");
            }
        }
        let e = &rows[8];
        assert_eq!(e["median"], 60.0);
        assert_eq!(e["min"], 50.0);
        assert_eq!(e["max"], 70.0);
        assert_eq!(e["unit"], "ns");
        assert_eq!(e["met"], false);
        assert!(e["ratio"].is_null());
        assert_eq!(e["goal"]["cmp"], "<=");
        assert_eq!(e["goal"]["value"], 40.0);
        assert_eq!(e["goal"]["on"], "median");
        assert!(rows[0]["met"].is_null() && rows[0]["median"].is_null());
        assert_eq!(rows[3]["goal"]["on"], "ratio_every_run");
    }

    #[test]
    fn json_file_errors_name_the_file() {
        let e = write_json(std::path::Path::new("/nonexistent-dir/x.json"), &[]).unwrap_err();
        assert!(e.contains("--json /nonexistent-dir/x.json"), "{e}");
    }

    #[test]
    fn table_lists_every_row_in_order() {
        let t = table(&rows(&Figures::default()));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 13);
        assert!(lines[2].starts_with("| small-packet forwarding"));
        assert!(lines[12].starts_with("| RSS per tracked flow"));
        assert!(lines[5].contains("≥ 0.7× in every run"));
        assert!(lines[12].contains("not measured"));
    }
}

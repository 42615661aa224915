//! SVG plots of a scenario's results (`plotters`, SVG backend only: pure
//! Rust, no system fonts).

use crate::scenario::{PlotKind, ScenarioReport};
use crate::stats::SeriesPoint;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// A metric of a run, for sweep plots.
type Metric = Box<dyn Fn(&crate::stats::RunReport) -> f64>;

/// One line of a chart.
type Series = (String, Vec<(f64, f64)>);

struct Chart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    log_x: bool,
    log_y: bool,
}

fn bounds(series: &[Series], log: bool, pick: impl Fn(&(f64, f64)) -> f64) -> (f64, f64) {
    let vals = series
        .iter()
        .flat_map(|s| s.1.iter().map(&pick))
        .filter(|v| v.is_finite() && (!log || *v > 0.0));
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (if log { 1e-3 } else { 0.0 }, 1.0);
    }
    if log {
        (lo / 1.2, hi * 1.2)
    } else {
        let pad = ((hi - lo) * 0.05).max(1e-9);
        ((lo - pad).min(0.0_f64.max(lo - pad)), hi + pad)
    }
}

fn draw<X, Y>(path: &Path, chart: &Chart<'_>, x: X, y: Y, series: &[Series]) -> Result<(), String>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut c = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let style = ShapeStyle::from(color).stroke_width(2);
        let pts: Vec<(f64, f64)> = pts
            .iter()
            .copied()
            .filter(|p| {
                p.0.is_finite()
                    && p.1.is_finite()
                    && (!chart.log_x || p.0 > 0.0)
                    && (!chart.log_y || p.1 > 0.0)
            })
            .collect();
        c.draw_series(LineSeries::new(pts.iter().copied(), style))
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        if pts.len() < 12 {
            c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(&e))?;
        }
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

fn line_chart(path: &Path, chart: &Chart<'_>, series: &[Series]) -> Result<(), String> {
    let (x0, x1) = bounds(series, chart.log_x, |p| p.0);
    let (y0, y1) = bounds(series, chart.log_y, |p| p.1);
    match (chart.log_x, chart.log_y) {
        (false, false) => draw(path, chart, x0..x1, y0..y1, series),
        (true, false) => draw(path, chart, (x0..x1).log_scale(), y0..y1, series),
        (false, true) => draw(path, chart, x0..x1, (y0..y1).log_scale(), series),
        (true, true) => draw(
            path,
            chart,
            (x0..x1).log_scale(),
            (y0..y1).log_scale(),
            series,
        ),
    }
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for ch in s.chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(ch.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Writes the scenario's plots into `dir`; returns the files written.
pub fn write_plots(report: &ScenarioReport, dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let sc = &report.scenario;
    let mut files = Vec::new();
    let mut out = |name: String, chart: Chart<'_>, series: Vec<Series>| -> Result<(), String> {
        let path = dir.join(format!("{}-{}.svg", sc.name, name));
        line_chart(&path, &chart, &series)?;
        files.push(path);
        Ok(())
    };
    match sc.plot {
        PlotKind::None => {}
        PlotKind::Cdf => {
            for (ci, case) in sc.cases.iter().enumerate() {
                let series: Vec<Series> = report
                    .rows
                    .iter()
                    .filter(|r| r.case == ci)
                    .map(|r| {
                        let pts = r
                            .run
                            .response
                            .cdf()
                            .into_iter()
                            .map(|(x, p)| (x * 1e3, (1.0 - p).max(1e-6)))
                            .collect();
                        (r.run.policy.clone(), pts)
                    })
                    .collect();
                let title = format!("{}: {}", sc.name, case.label);
                out(
                    format!("ccdf-{}", slug(&case.label)),
                    Chart {
                        title: &title,
                        x_label: "response time (ms)",
                        y_label: "fraction of connections slower",
                        log_x: true,
                        log_y: true,
                    },
                    series,
                )?;
            }
        }
        PlotKind::Sweep { x_label } => {
            // One line per (policy, mode).
            let mut keys: Vec<(String, String)> = Vec::new();
            for r in &report.rows {
                let k = (r.run.policy.clone(), r.run.mode.clone());
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            let metric = |f: &dyn Fn(&crate::stats::RunReport) -> f64| -> Vec<Series> {
                keys.iter()
                    .map(|(p, m)| {
                        let pts = report
                            .rows
                            .iter()
                            .filter(|r| &r.run.policy == p && &r.run.mode == m)
                            .map(|r| (sc.cases[r.case].x, f(&r.run)))
                            .collect();
                        let name = if m == "-" {
                            p.clone()
                        } else {
                            format!("{p} ({m})")
                        };
                        (name, pts)
                    })
                    .collect()
            };
            let charts: [(&str, &str, bool, Metric); 5] = [
                (
                    "mean",
                    "mean response time (ms)",
                    true,
                    Box::new(|r| r.mean_response() * 1e3),
                ),
                (
                    "p99",
                    "p99 response time (ms)",
                    true,
                    Box::new(|r| r.p99_response() * 1e3),
                ),
                (
                    "imbalance",
                    "max / mean load (time average)",
                    false,
                    Box::new(|r| r.imbalance),
                ),
                (
                    "redirected",
                    "connections redirected (%)",
                    false,
                    Box::new(|r| r.redirect_fraction * 100.0),
                ),
                (
                    "control",
                    "report messages per host per second",
                    true,
                    Box::new(|r| r.msgs_per_host_s),
                ),
            ];
            for (name, y_label, log_y, f) in charts {
                let mut series = metric(f.as_ref());
                if name == "control" {
                    series.retain(|s| s.1.iter().any(|p| p.1 > 0.0));
                }
                let title = format!("{}: {}", sc.name, y_label);
                out(
                    name.to_string(),
                    Chart {
                        title: &title,
                        x_label,
                        y_label,
                        log_x: true,
                        log_y,
                    },
                    series,
                )?;
            }
        }
        PlotKind::TimeSeries => {
            for (ci, case) in sc.cases.iter().enumerate() {
                let rows: Vec<_> = report.rows.iter().filter(|r| r.case == ci).collect();
                // One line per policy: (t, y) for the points `y` keeps.
                let series = |y: &dyn Fn(&SeriesPoint) -> Option<f64>| -> Vec<Series> {
                    rows.iter()
                        .map(|r| {
                            let pts = r
                                .run
                                .series
                                .iter()
                                .filter_map(|p| Some((p.t, y(p)?)))
                                .collect();
                            (r.run.policy.clone(), pts)
                        })
                        .collect()
                };
                let resp = series(&|p| (p.arrivals > p.errors).then_some(p.mean_response * 1e3));
                let lost = series(&|p| {
                    (p.arrivals > 0).then(|| p.errors as f64 / p.arrivals as f64 * 100.0)
                });
                let imb = series(&|p| Some(p.imbalance));
                let s = slug(&case.label);
                for (name, y_label, log_y, series) in [
                    (
                        "response",
                        "mean response time (ms), by arrival second",
                        true,
                        resp,
                    ),
                    (
                        "lost",
                        "connections lost (%), by arrival second",
                        false,
                        lost,
                    ),
                    ("imbalance", "max / mean load", false, imb),
                ] {
                    if series.iter().all(|l| l.1.iter().all(|p| p.1 == 0.0)) {
                        continue; // e.g. nothing lost: no plot
                    }
                    let title = format!("{}: {}", sc.name, case.label);
                    out(
                        format!("{s}-{name}"),
                        Chart {
                            title: &title,
                            x_label: "time (s)",
                            y_label,
                            log_x: false,
                            log_y,
                        },
                        series,
                    )?;
                }
            }
        }
    }
    Ok(files)
}

//! The committed Grafana dashboard (`packaging/grafana/dprd-dashboard.json`)
//! loads as JSON, every panel queries Prometheus, and every metric its
//! queries name is one the exporter writes (`dprd::metrics::METRIC_NAMES`):
//! a renamed metric fails here instead of leaving an empty panel.

use dprd::metrics::METRIC_NAMES;
use serde_json::Value;
use std::collections::BTreeSet;

fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/grafana/dprd-dashboard.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| unreachable!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| unreachable!("{path}: {e}"))
}

/// Every panel, rows' nested panels included.
fn panels(v: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in v["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(panels(p));
    }
    out
}

/// The metric names of a PromQL expression: identifiers that start with
/// `dpr_` outside of quoted strings (label values) and `[...]` (ranges).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut range) = (false, false);
    for c in expr.chars() {
        match c {
            '"' => quoted = !quoted,
            '[' if !quoted => range = true,
            ']' if !quoted => range = false,
            _ => {}
        }
        let ident = c.is_ascii_alphanumeric() || c == '_' || c == ':';
        if ident && !quoted && !range && c != '"' {
            word.push(c);
        } else {
            if word.starts_with("dpr_") {
                names.push(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    if word.starts_with("dpr_") {
        names.push(word);
    }
    names
}

#[test]
fn the_tokenizer_finds_metrics_not_labels() {
    assert_eq!(
        metric_names(
            r#"sum by (instance) (rate(dpr_connection_events_total{event="dpr_x"}[$__rate_interval])) / dpr_load"#
        ),
        ["dpr_connection_events_total", "dpr_load"]
    );
}

#[test]
fn every_metric_the_dashboard_uses_is_exported() {
    let d = dashboard();
    assert_eq!(d["uid"], "dpr-cluster");
    let exported: BTreeSet<&str> = METRIC_NAMES.iter().map(|(n, _)| *n).collect();
    let panels = panels(&d);
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let mut used = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        assert!(ids.insert(p["id"].as_u64()), "panel id repeated: {title}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: `{expr}` names no dpr metric");
            for n in names {
                assert!(
                    exported.contains(n.as_str()),
                    "{title}: `{expr}` uses {n}, which the exporter does not write \
                     (dprd::metrics::METRIC_NAMES: {exported:?})"
                );
                used.insert(n);
            }
        }
    }
    // The issue's panels: per-host load, redirects in and out, peer states,
    // drops by reason, table fill, report ages.
    for want in [
        "dpr_load",
        "dpr_connection_events_total",
        "dpr_redirected_connections_total",
        "dpr_served_connections_total",
        "dpr_peer_state",
        "dpr_drops_total",
        "dpr_table_entries",
        "dpr_table_capacity",
        "dpr_peer_report_age_seconds",
    ] {
        assert!(used.contains(want), "no panel uses {want}: {used:?}");
    }
    // Counters are queried through rate(), gauges never are.
    for p in &panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            for n in metric_names(expr) {
                let counter = n.ends_with("_total");
                assert_eq!(
                    counter,
                    expr.contains(&format!("rate({n}")),
                    "{}: `{expr}`: {n}",
                    p["title"]
                );
            }
        }
    }
}

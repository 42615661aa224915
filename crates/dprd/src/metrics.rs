//! Prometheus metrics, read from the latest [`Status`] snapshot at each
//! scrape (a `prometheus-client` collector), served over plain HTTP.

use crate::error::Error;
use crate::status::Status;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Every sample name the exporter writes (a counter family `dpr_x` is
/// written as `dpr_x_total`), with its type: what a dashboard or an alert
/// may query. A test renders a full snapshot and checks the exposition
/// against this list, both ways; the dashboard test checks every metric
/// the committed Grafana dashboard uses against it.
pub const METRIC_NAMES: &[(&str, &str)] = &[
    ("dpr_packets_total", "counter"),
    ("dpr_drops_total", "counter"),
    ("dpr_connection_events_total", "counter"),
    ("dpr_io_total", "counter"),
    ("dpr_redirected_connections_total", "counter"),
    ("dpr_served_connections_total", "counter"),
    ("dpr_peer_deaths_total", "counter"),
    ("dpr_peer_state", "gauge"),
    ("dpr_peer_report_age_seconds", "gauge"),
    ("dpr_peer_load", "gauge"),
    ("dpr_load", "gauge"),
    ("dpr_table_entries", "gauge"),
    ("dpr_served_table_entries", "gauge"),
    ("dpr_table_capacity", "gauge"),
    ("dpr_table_evictions_total", "counter"),
    ("dpr_table_evictions_half_open_total", "counter"),
    ("dpr_table_evictions_established_total", "counter"),
    ("dpr_fast_path_packets_total", "counter"),
    ("dpr_open_connections", "gauge"),
    ("dpr_draining", "gauge"),
];

/// The status counter (`io`) of the XDP program's send fast path,
/// exported on its own as `dpr_fast_path_packets_total`.
pub const FAST_PATH_PACKETS: &str = "xdp_prog_forwardv4";

/// The collector: the shared snapshot.
#[derive(Debug)]
pub struct StatusCollector(pub Arc<Mutex<Status>>);

fn counter_family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: &[(String, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (l, v) in values {
        let labels = [(label, l.as_str())];
        ConstCounter::new(*v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge_family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: &[(String, f64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, ConstGauge::new(0f64).metric_type())?;
    for (l, v) in values {
        let labels = [(label, l.as_str())];
        ConstGauge::new(*v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

impl Collector for StatusCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let pairs = |m: &std::collections::BTreeMap<String, u64>| -> Vec<(String, u64)> {
            m.iter().map(|(k, v)| (k.clone(), *v)).collect()
        };
        counter_family(
            &mut enc,
            "dpr_packets",
            "Packets per engine verdict",
            "verdict",
            &pairs(&s.verdicts),
        )?;
        counter_family(
            &mut enc,
            "dpr_drops",
            "Dropped packets per reason",
            "reason",
            &pairs(&s.drops),
        )?;
        counter_family(
            &mut enc,
            "dpr_connection_events",
            "New connections (local, redirected, from peers) and other events",
            "event",
            &pairs(&s.events),
        )?;
        counter_family(
            &mut enc,
            "dpr_io",
            "Backend and control-plane counters",
            "counter",
            &pairs(&s.io),
        )?;
        let redir: Vec<(String, u64)> = s
            .peers
            .iter()
            .map(|p| (p.peer.name.clone(), p.redirected_connections))
            .collect();
        counter_family(
            &mut enc,
            "dpr_redirected_connections",
            "Connections redirected per peer",
            "peer",
            &redir,
        )?;
        let served: Vec<(String, u64)> = s
            .peers
            .iter()
            .map(|p| (p.peer.name.clone(), p.served_connections))
            .collect();
        counter_family(
            &mut enc,
            "dpr_served_connections",
            "Connections each peer redirected here",
            "peer",
            &served,
        )?;
        let deaths: Vec<(String, u64)> = s
            .peers
            .iter()
            .map(|p| (p.peer.name.clone(), p.peer.deaths))
            .collect();
        counter_family(
            &mut enc,
            "dpr_peer_deaths",
            "Times each peer was held dead since this daemon started (a false death under loss shows here)",
            "peer",
            &deaths,
        )?;
        let states: Vec<(String, f64)> = s
            .peers
            .iter()
            .map(|p| {
                let v = match p.peer.state.as_str() {
                    "alive" => 0.0,
                    "suspect" => 1.0,
                    "dead" => 2.0,
                    "draining" => 3.0,
                    _ => 4.0,
                };
                (p.peer.name.clone(), v)
            })
            .collect();
        gauge_family(
            &mut enc,
            "dpr_peer_state",
            "Peer state: 0 alive, 1 suspect, 2 dead, 3 draining, 4 left",
            "peer",
            &states,
        )?;
        let ages: Vec<(String, f64)> = s
            .peers
            .iter()
            .map(|p| {
                (
                    p.peer.name.clone(),
                    p.peer.report_age_ms.map_or(-1.0, |a| a as f64 / 1000.0),
                )
            })
            .collect();
        gauge_family(
            &mut enc,
            "dpr_peer_report_age_seconds",
            "Age of the last load report per peer (-1: none yet)",
            "peer",
            &ages,
        )?;
        let loads: Vec<(String, f64)> = s
            .peers
            .iter()
            .map(|p| (p.peer.name.clone(), p.peer.load))
            .collect();
        gauge_family(
            &mut enc,
            "dpr_peer_load",
            "Normalised load per peer",
            "peer",
            &loads,
        )?;
        gauge(
            &mut enc,
            "dpr_load",
            "This host's normalised load (what its policy compares with the threshold)",
            if s.load.is_finite() { s.load } else { -1.0 },
        )?;
        gauge(
            &mut enc,
            "dpr_table_capacity",
            "Capacity of the routing table (and of the served-for-peers table)",
            s.table_capacity as f64,
        )?;
        gauge(
            &mut enc,
            "dpr_table_entries",
            "Entries of the routing table",
            s.routes as f64,
        )?;
        gauge(
            &mut enc,
            "dpr_served_table_entries",
            "Entries of the served-for-peers table",
            s.served as f64,
        )?;
        let ev = ConstCounter::new(s.evicted);
        let m = enc.encode_descriptor(
            "dpr_table_evictions",
            "Table entries evicted at capacity",
            None,
            ev.metric_type(),
        )?;
        ev.encode(m)?;
        for (name, help, v) in [
            (
                "dpr_table_evictions_half_open",
                "Of the evictions: half-open entries (handshake not seen to complete)",
                s.evicted_half_open,
            ),
            (
                "dpr_table_evictions_established",
                "Of the evictions: entries past their handshake (a genuine overload)",
                s.evicted_established,
            ),
            (
                "dpr_fast_path_packets",
                "AF_XDP: packets of established redirected connections the XDP program forwarded itself (never seen by the engine)",
                s.io.get(FAST_PATH_PACKETS).copied().unwrap_or(0),
            ),
        ] {
            let c = ConstCounter::new(v);
            let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(m)?;
        }
        gauge(
            &mut enc,
            "dpr_open_connections",
            "Open service connections on this host",
            f64::from(s.open_connections),
        )?;
        gauge(
            &mut enc,
            "dpr_draining",
            "1 while draining",
            if s.draining { 1.0 } else { 0.0 },
        )?;
        Ok(())
    }
}

/// The registry with the collector.
pub fn registry(status: Arc<Mutex<Status>>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(StatusCollector(status)));
    r
}

/// The text exposition.
pub fn render(reg: &Registry) -> Result<String, Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, reg).map_err(Error::Metrics)?;
    Ok(out)
}

/// The HTTP response to a scrape: the exposition, or a 500 that says why
/// (a partial exposition would read as counters reset).
fn response(reg: &Registry) -> String {
    let (status, ctype, body) = match render(reg) {
        Ok(body) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        ),
        Err(e) => {
            let msg = crate::error::report(&e);
            tracing::warn!(error = %msg, "metrics scrape");
            ("500 Internal Server Error", "text/plain", msg + "\n")
        }
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Serves `GET /metrics` (any path) until the task is dropped.
pub async fn serve(listener: TcpListener, reg: Arc<Registry>) {
    loop {
        let mut sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(e) => {
                // Out of file descriptors, say: wait instead of spinning.
                tracing::warn!(error = %e, "metrics: accept(2)");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let reg = reg.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut n = 0;
            // Read the request head (bounded); the body, if any, is ignored.
            while n < buf.len() {
                match sock.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let _ = sock.write_all(response(&reg).as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::PeerView;
    use crate::status::PeerRow;
    use std::collections::BTreeSet;

    /// The sample names and types of an exposition.
    fn samples(text: &str) -> BTreeSet<(String, String)> {
        let types: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(|n| {
                let t = types
                    .iter()
                    .find(|(f, _)| n == f || n.strip_suffix("_total") == Some(f.as_str()))
                    .map(|(_, t)| t.clone())
                    .unwrap_or_default();
                (n.to_string(), t)
            })
            .collect()
    }

    #[test]
    fn the_list_of_metric_names_is_the_exposition() {
        let mut s = Status {
            load: 1.5,
            table_capacity: 64,
            ..Status::default()
        };
        for m in [&mut s.verdicts, &mut s.events, &mut s.drops, &mut s.io] {
            m.insert("x".into(), 1);
        }
        s.peers.push(PeerRow {
            peer: PeerView {
                id: 1,
                name: "h1".into(),
                tunnel_addr: std::net::IpAddr::from([198, 18, 0, 2]),
                state: "alive".into(),
                load: 0.5,
                open_connections: 1,
                report_age_ms: Some(40),
                deaths: 1,
            },
            redirected_connections: 1,
            forwarded_packets: 1,
            forwarded_bytes: 1,
            received_packets: 1,
            served_connections: 1,
        });
        let t = render(&registry(Arc::new(Mutex::new(s)))).unwrap_or_default();
        let got = samples(&t);
        let want: BTreeSet<(String, String)> = METRIC_NAMES
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        assert_eq!(got, want, "{t}");
        assert!(
            t.contains("dpr_served_connections_total{peer=\"h1\"} 1"),
            "{t}"
        );
        assert!(t.contains("dpr_load 1.5"), "{t}");
        assert!(t.contains("dpr_table_capacity 64"), "{t}");
    }

    #[test]
    fn exposition_has_the_families() {
        let mut s = Status::default();
        s.drops.insert("malformed".into(), 4);
        s.verdicts.insert("forwarded".into(), 9);
        s.evicted = 7;
        s.evicted_half_open = 5;
        s.evicted_established = 2;
        s.io.insert(FAST_PATH_PACKETS.into(), 11);
        let reg = registry(Arc::new(Mutex::new(s)));
        let t = render(&reg).unwrap_or_else(|e| unreachable!("{e}"));
        assert!(t.contains("dpr_drops_total{reason=\"malformed\"} 4"), "{t}");
        assert!(
            t.contains("dpr_packets_total{verdict=\"forwarded\"} 9"),
            "{t}"
        );
        assert!(t.contains("dpr_table_entries 0"), "{t}");
        assert!(t.contains("dpr_load 0"), "{t}");
        assert!(t.contains("dpr_table_evictions_total 7"), "{t}");
        assert!(t.contains("dpr_table_evictions_half_open_total 5"), "{t}");
        assert!(t.contains("dpr_table_evictions_established_total 2"), "{t}");
        assert!(t.contains("dpr_fast_path_packets_total 11"), "{t}");
        let r = response(&reg);
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with(&t), "{r}");
        assert!(
            r.contains(&format!("Content-Length: {}\r\n", t.len())),
            "{r}"
        );
    }
}

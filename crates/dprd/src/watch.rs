//! `dprd status --watch`: the status table redrawn every interval with
//! per-second rates, in the manner of `watch ipvsadm -Ln --stats`. A rate
//! is a counter's difference between two snapshots of the same daemon over
//! the daemon's own uptime between them ([`Rates::between`]); a daemon that
//! restarted in between (uptime went back, a counter went down) shows no
//! rate for that interval rather than a negative or invented one.

use crate::error::Error;
use crate::status::{Status, request_status};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Entries of the `io` map that are gauges, not counters: no rate.
pub const IO_GAUGES: &[&str] = &["load_measure_us"];

/// Per-second rates of one peer's counters.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PeerRates {
    /// Connections redirected to it, per second.
    pub redirected_connections: Option<f64>,
    /// Packets forwarded to it, per second.
    pub forwarded_packets: Option<f64>,
    /// Bytes forwarded to it, per second.
    pub forwarded_bytes: Option<f64>,
    /// IP-in-IP packets received from it, per second.
    pub received_packets: Option<f64>,
    /// Connections it redirected here, per second.
    pub served_connections: Option<f64>,
}

/// Per-second rates between two snapshots of one daemon.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rates {
    /// Seconds between the snapshots (the daemon's uptime difference).
    pub interval_s: f64,
    /// Packets per verdict, per second.
    pub verdicts: BTreeMap<String, f64>,
    /// Connection events, per second.
    pub events: BTreeMap<String, f64>,
    /// Drops per reason, per second.
    pub drops: BTreeMap<String, f64>,
    /// Backend and control-plane counters, per second (gauges excluded).
    pub io: BTreeMap<String, f64>,
    /// Per peer id.
    pub peers: BTreeMap<u16, PeerRates>,
}

/// `(cur - prev) / dt`, or `None` where there is no honest rate: a counter
/// that went down (the daemon restarted) or no time between the reads.
pub fn rate(prev: u64, cur: u64, dt_s: f64) -> Option<f64> {
    if !(dt_s.is_finite() && dt_s > 0.0) || cur < prev {
        return None;
    }
    Some((cur - prev) as f64 / dt_s)
}

fn map_rates(
    prev: &BTreeMap<String, u64>,
    cur: &BTreeMap<String, u64>,
    dt: f64,
    skip: &[&str],
) -> BTreeMap<String, f64> {
    cur.iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .filter_map(|(k, &c)| {
            let p = *prev.get(k)?;
            Some((k.clone(), rate(p, c, dt)?))
        })
        .collect()
}

impl Rates {
    /// The rates from `prev` to `cur`, or `None` when they are not two
    /// reads of one running daemon (another host, or it restarted: its
    /// uptime went back) or no time passed.
    pub fn between(prev: &Status, cur: &Status) -> Option<Rates> {
        let dt = cur.uptime_s - prev.uptime_s;
        if prev.host != cur.host || prev.id != cur.id || !(dt.is_finite() && dt > 0.0) {
            return None;
        }
        let peers = cur
            .peers
            .iter()
            .filter_map(|c| {
                let p = prev.peers.iter().find(|p| p.peer.id == c.peer.id)?;
                Some((
                    c.peer.id,
                    PeerRates {
                        redirected_connections: rate(
                            p.redirected_connections,
                            c.redirected_connections,
                            dt,
                        ),
                        forwarded_packets: rate(p.forwarded_packets, c.forwarded_packets, dt),
                        forwarded_bytes: rate(p.forwarded_bytes, c.forwarded_bytes, dt),
                        received_packets: rate(p.received_packets, c.received_packets, dt),
                        served_connections: rate(p.served_connections, c.served_connections, dt),
                    },
                ))
            })
            .collect();
        Some(Rates {
            interval_s: dt,
            verdicts: map_rates(&prev.verdicts, &cur.verdicts, dt, &[]),
            events: map_rates(&prev.events, &cur.events, dt, &[]),
            drops: map_rates(&prev.drops, &cur.drops, dt, &[]),
            io: map_rates(&prev.io, &cur.io, dt, IO_GAUGES),
            peers,
        })
    }
}

/// A rate for a narrow column: `-` when unknown, `12.3k` from 10^4, `1.2M`
/// from 10^6.
pub fn human(r: Option<f64>) -> String {
    match r {
        None => "-".into(),
        Some(v) if v >= 999_950.0 => format!("{:.1}M", v / 1e6),
        Some(v) if v >= 9_999.5 => format!("{:.1}k", v / 1e3),
        Some(v) => format!("{v:.1}"),
    }
}

/// One frame of `dprd status --watch`: the state line, the local line, the
/// peers with their rates, and every non-zero counter with its rate.
pub fn render(cur: &Status, rates: Option<&Rates>, every_s: f64) -> String {
    let mut s = String::new();
    let state = match cur.phase.as_str() {
        "" if cur.draining => "DRAINING".to_string(),
        "" | "active" => "serving".to_string(),
        p => p.to_uppercase(),
    };
    let over = rates.map_or_else(
        || "rates from the next read".to_string(),
        |r| format!("rates over the last {:.2}s", r.interval_s),
    );
    let _ = writeln!(
        s,
        "dprd {} (id {})  policy {}  backend {}  {}  up {:.0}s   every {:.1}s, {over}",
        cur.host, cur.id, cur.policy, cur.backend, state, cur.uptime_s, every_s
    );
    let fill = if cur.table_capacity > 0 {
        100.0 * cur.routes as f64 / cur.table_capacity as f64
    } else {
        0.0
    };
    let _ = writeln!(
        s,
        "local: open connections {}  load {:.2}  routes {}/{} ({fill:.1}%)  served-for-peers {}  evicted {}  expired {}",
        cur.open_connections,
        cur.load,
        cur.routes,
        cur.table_capacity,
        cur.served,
        cur.evicted,
        cur.expired
    );
    let _ = writeln!(
        s,
        "{:<12} {:>4} {:<16} {:<9} {:>6} {:>5} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "Peer",
        "Id",
        "Tunnel",
        "State",
        "Load",
        "Conns",
        "Age(ms)",
        "Redir/s",
        "FwdPkt/s",
        "FwdB/s",
        "RecvPkt/s",
        "Served/s"
    );
    for p in &cur.peers {
        let r = rates.and_then(|r| r.peers.get(&p.peer.id)).copied();
        let r = r.unwrap_or_default();
        let age = p
            .peer
            .report_age_ms
            .map_or_else(|| "-".to_string(), |a| a.to_string());
        let load = if p.peer.load.is_finite() {
            format!("{:.2}", p.peer.load)
        } else {
            "-".into()
        };
        let _ = writeln!(
            s,
            "  -> {:<7} {:>4} {:<16} {:<9} {:>6} {:>5} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}",
            p.peer.name,
            p.peer.id,
            p.peer.tunnel_addr.to_string(),
            p.peer.state,
            load,
            p.peer.open_connections,
            age,
            human(r.redirected_connections),
            human(r.forwarded_packets),
            human(r.forwarded_bytes),
            human(r.received_packets),
            human(r.served_connections)
        );
    }
    let _ = writeln!(s, "{:<36} {:>14} {:>10}", "Counter", "Total", "/s");
    let empty = BTreeMap::new();
    type Section<'a> = (
        &'a str,
        &'a BTreeMap<String, u64>,
        &'a BTreeMap<String, f64>,
    );
    let sections: [Section<'_>; 5] = [
        (
            "verdict",
            &cur.verdicts,
            rates.map_or(&empty, |r| &r.verdicts),
        ),
        ("conn", &cur.events, rates.map_or(&empty, |r| &r.events)),
        ("drop", &cur.drops, rates.map_or(&empty, |r| &r.drops)),
        ("malformed", &cur.malformed, &empty),
        ("io", &cur.io, rates.map_or(&empty, |r| &r.io)),
    ];
    let mut zero = 0usize;
    for (section, totals, r) in sections {
        for (k, v) in totals {
            if *v == 0 {
                zero += 1;
                continue;
            }
            let rate = if section == "io" && IO_GAUGES.contains(&k.as_str()) {
                "(gauge)".to_string()
            } else {
                human(r.get(k).copied())
            };
            let _ = writeln!(s, "  {:<34} {v:>14} {rate:>10}", format!("{section} {k}"));
        }
    }
    let _ = writeln!(s, "({zero} counters at 0 not shown; Ctrl-C ends)");
    s
}

/// Clears the terminal and homes the cursor (ANSI), as `watch` does.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Reads the status of the dprd on `socket` every `every`, `count` times
/// (`None`: until Ctrl-C), and writes a frame per read to `out` (clearing
/// the screen first when `clear`). Ctrl-C ends it with success; a daemon
/// that stops answering ends it with the admin error.
pub fn watch(
    socket: &Path,
    every: Duration,
    count: Option<u64>,
    clear: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            syscall: "tokio runtime",
            path: "<none>".into(),
            source,
        })?;
    let io = |source| Error::Io {
        syscall: "write",
        path: "<stdout>".into(),
        source,
    };
    rt.block_on(async {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut prev: Option<Status> = None;
        let mut n = 0u64;
        loop {
            let cur = request_status(socket)?;
            let rates = prev.as_ref().and_then(|p| Rates::between(p, &cur));
            let frame = render(&cur, rates.as_ref(), every.as_secs_f64());
            let sep = if clear { CLEAR } else { "\n" };
            out.write_all(format!("{sep}{frame}").as_bytes())
                .and_then(|()| out.flush())
                .map_err(io)?;
            prev = Some(cur);
            n += 1;
            if count.is_some_and(|c| n >= c) {
                return Ok(());
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = &mut ctrl_c => {
                    let _ = out.write_all(b"\n");
                    return Ok(());
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::PeerView;
    use crate::status::PeerRow;

    fn snap(uptime_s: f64, new_local: u64, fwd: u64, peer_fwd: u64) -> Status {
        let mut s = Status {
            host: "h0".into(),
            uptime_s,
            table_capacity: 100,
            routes: 25,
            ..Status::default()
        };
        s.events.insert("new_local".into(), new_local);
        s.verdicts.insert("forwarded".into(), fwd);
        s.io.insert("load_measure_us".into(), 40);
        s.io.insert("tun_rx".into(), 10);
        s.peers.push(PeerRow {
            peer: PeerView {
                id: 1,
                name: "h1".into(),
                tunnel_addr: std::net::IpAddr::from([198, 18, 0, 2]),
                state: "alive".into(),
                load: 0.5,
                open_connections: 1,
                report_age_ms: Some(40),
                deaths: 0,
            },
            redirected_connections: peer_fwd / 10,
            forwarded_packets: peer_fwd,
            forwarded_bytes: peer_fwd * 100,
            received_packets: 0,
            served_connections: 0,
        });
        s
    }

    #[test]
    fn a_rate_is_the_difference_over_the_daemons_interval() {
        assert_eq!(rate(100, 350, 2.5), Some(100.0));
        assert_eq!(rate(7, 7, 1.0), Some(0.0));
        // A counter that went down: the daemon restarted; no rate.
        assert_eq!(rate(350, 100, 1.0), None);
        assert_eq!(rate(1, 2, 0.0), None);
        assert_eq!(rate(1, 2, -1.0), None);
        assert_eq!(rate(1, 2, f64::NAN), None);

        let a = snap(10.0, 100, 1000, 500);
        let b = snap(12.0, 160, 1900, 900);
        let r = Rates::between(&a, &b).unwrap_or_else(|| unreachable!());
        assert_eq!(r.interval_s, 2.0);
        assert_eq!(r.events.get("new_local"), Some(&30.0));
        assert_eq!(r.verdicts.get("forwarded"), Some(&450.0));
        // A gauge in the io map gets no rate; a counter beside it does.
        assert_eq!(r.io.get("load_measure_us"), None);
        assert_eq!(r.io.get("tun_rx"), Some(&0.0));
        let p = r.peers.get(&1).copied().unwrap_or_default();
        assert_eq!(p.forwarded_packets, Some(200.0));
        assert_eq!(p.forwarded_bytes, Some(20_000.0));
        assert_eq!(p.redirected_connections, Some(20.0));
    }

    #[test]
    fn a_restart_or_another_host_gives_no_rates() {
        let a = snap(10.0, 100, 1000, 500);
        // Restarted: uptime went back.
        assert_eq!(Rates::between(&a, &snap(1.0, 5, 10, 0)), None);
        // Same instant.
        assert_eq!(Rates::between(&a, &a.clone()), None);
        let mut other = snap(11.0, 200, 2000, 600);
        other.host = "h1".into();
        assert_eq!(Rates::between(&a, &other), None);
        // One counter went down (a peer's counters were reset when it was
        // removed and re-added): that one has no rate, the others do.
        let b = snap(11.0, 150, 1500, 100);
        let r = Rates::between(&a, &b).unwrap_or_else(|| unreachable!());
        assert_eq!(r.events.get("new_local"), Some(&50.0));
        assert_eq!(r.peers.get(&1).and_then(|p| p.forwarded_packets), None);
        // A counter that did not exist at the first read has no rate.
        let mut c = snap(12.0, 160, 1600, 700);
        c.drops.insert("malformed".into(), 3);
        let r = Rates::between(&a, &c).unwrap_or_else(|| unreachable!());
        assert_eq!(r.drops.get("malformed"), None);
    }

    #[test]
    fn a_frame_shows_the_rates_and_hides_zero_counters() {
        let a = snap(10.0, 100, 1000, 500);
        let b = snap(12.0, 160, 1900, 90_500);
        let r = Rates::between(&a, &b);
        let f = render(&b, r.as_ref(), 1.0);
        assert!(f.contains("rates over the last 2.00s"), "{f}");
        assert!(f.contains("routes 25/100 (25.0%)"), "{f}");
        // Peer h1: 45,000 packets/s, 4.5 MB/s.
        assert!(f.contains("45.0k"), "{f}");
        assert!(f.contains("4.5M"), "{f}");
        let line = |name: &str| {
            f.lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(line("conn new_local"), ["conn", "new_local", "160", "30.0"]);
        assert_eq!(line("io load_measure_us")[3], "(gauge)");
        // tun_rx did not move; it is not zero, so it is shown at 0.0/s.
        assert_eq!(line("io tun_rx"), ["io", "tun_rx", "10", "0.0"]);
        let first = render(&a, None, 1.0);
        assert!(first.contains("rates from the next read"), "{first}");
        assert_eq!(
            first
                .lines()
                .find(|l| l.contains("conn new_local"))
                .map(|l| l.split_whitespace().last()),
            Some(Some("-"))
        );
    }

    #[test]
    fn human_rates_fit_the_columns() {
        assert_eq!(human(None), "-");
        assert_eq!(human(Some(0.0)), "0.0");
        assert_eq!(human(Some(9_999.4)), "9999.4");
        assert_eq!(human(Some(12_345.0)), "12.3k");
        assert_eq!(human(Some(999_000.0)), "999.0k");
        assert_eq!(human(Some(3_400_000.0)), "3.4M");
        assert_eq!(human(Some(12_000_000.0)), "12.0M");
    }
}

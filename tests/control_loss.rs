//! The control plane under loss, end to end: a 3-host `dprd` cluster in
//! network namespaces whose hosts each drop a fraction of the control
//! datagrams they receive, at random (an nftables `numgen random` rule on
//! the input hook for the cluster port, so each datagram meets exactly one
//! such rule). Reports every 200 ms, dead after 1000 ms (`dprd`'s
//! defaults). For 20 s no host may hold a live peer dead; then host 0,
//! redirecting, is restarted under the same loss with a few hundred
//! connections half way through their requests on its peers: its
//! recovery must complete (every chunk, no deadline hit) and every
//! connection must survive. The figures go to stderr for the issue note.
//! (`dprd` runs its control thread in the real-time class.) A third test stops a
//! host's daemon for longer than `dead_after` and checks it does not hold
//! its reporting peers dead when it runs again.
//!
//! Addresses from 198.18.0.0/15 only, in namespaces the lab removes
//! (with their nftables tables). Root only; without it the tests say
//! SKIPPED and pass.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test code: failing loudly is the point

use dpr_lab::lab::{Lab, LabSpec};
use dpr_tests::clients::{finish_half_posts, load_host0, start_half_posts, status};
use dpr_tests::{ok, programs, root_or_skip};
use dprd::status::Status;
use std::time::{Duration, Instant};

/// dprd's default control port (`[cluster] port`).
const CLUSTER_PORT: u16 = 6870;
const SOAK: Duration = Duration::from_secs(20);
/// Connections the client opens to host 0 before its restart.
const CONNECTIONS: usize = 600;

fn io(s: &Status, k: &str) -> u64 {
    s.io.get(k).copied().unwrap_or(0)
}

fn event(s: &Status, k: &str) -> u64 {
    s.events.get(k).copied().unwrap_or(0)
}

/// Times host `s` has held one of its peers dead, by peer id.
fn deaths(s: &Status) -> Vec<(u16, u64)> {
    s.peers.iter().map(|p| (p.peer.id, p.peer.deaths)).collect()
}

/// Host `i` drops `percent`% of the control datagrams it receives.
fn lossy(lab: &Lab, i: usize, percent: u32) {
    let ns = lab.host_ns(i);
    let port = CLUSTER_PORT.to_string();
    let pct = percent.to_string();
    for args in [
        vec!["add", "table", "inet", "dprloss"],
        vec![
            "add", "chain", "inet", "dprloss", "in", "{", "type", "filter", "hook", "input",
            "priority", "0", ";", "}",
        ],
        vec![
            "add", "rule", "inet", "dprloss", "in", "udp", "dport", &port, "numgen", "random",
            "mod", "100", "<", &pct, "counter", "drop",
        ],
        vec![
            "add", "rule", "inet", "dprloss", "in", "udp", "dport", &port, "counter",
        ],
    ] {
        ok(lab.exec(&ns, "nft", &args));
    }
}

/// (dropped, passed) control datagrams at host `i`'s input.
fn loss_counts(lab: &Lab, i: usize) -> (u64, u64) {
    let out = ok(lab.exec(
        &lab.host_ns(i),
        "nft",
        &["list", "chain", "inet", "dprloss", "in"],
    ));
    let counts: Vec<u64> = out
        .split("counter packets ")
        .skip(1)
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(counts.len(), 2, "nft counters: {out}");
    (counts[0], counts[1])
}

/// A lab with every host's web server and dprd running, peers alive.
fn cluster(spec: LabSpec) -> Lab {
    let n = spec.hosts;
    let mut lab = ok(Lab::create(spec, &programs()));
    for i in 0..n {
        ok(lab.start_httpd(i));
    }
    for i in 0..n {
        ok(lab.start_dprd(i));
    }
    ok(lab.wait_alive(Duration::from_secs(10)));
    lab
}

/// Seconds since the Unix epoch of a log line's leading RFC 3339 UTC
/// timestamp (`2026-12-03T03:51:58.930980Z`).
fn log_time(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?;
    let (date, time) = t.trim_end_matches('Z').split_once('T')?;
    let d: Vec<i64> = date.split('-').filter_map(|x| x.parse().ok()).collect();
    let h: Vec<f64> = time.split(':').filter_map(|x| x.parse().ok()).collect();
    if d.len() != 3 || h.len() != 3 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h[0] * 3600.0 + h[1] * 60.0 + h[2])
}

fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.trim_matches('"').parse().ok())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What one host's dprd logged: the peers it held dead (when, which,
/// silent how long, s) and when its control loop was held up (end, s).
#[derive(Default)]
struct Liveness {
    deaths: Vec<(f64, usize, f64)>,
    held_up: Vec<(f64, f64)>,
}

impl Liveness {
    fn read(lab: &Lab, i: usize, into: &mut Self) {
        let text = std::fs::read_to_string(lab.log(i)).unwrap_or_default();
        for raw in text.lines() {
            // Drop the colour codes.
            let mut line = String::new();
            let mut esc = false;
            for c in raw.chars() {
                match (esc, c) {
                    (false, '\u{1b}') => esc = true,
                    (true, 'm') => esc = false,
                    (false, c) => line.push(c),
                    _ => {}
                }
            }
            let Some(t) = log_time(&line) else { continue };
            if line.contains("peer dead") {
                if let (Some(p), Some(s)) = (field(&line, "peer="), field(&line, "silent_ms=")) {
                    into.deaths.push((t, p as usize, s / 1000.0));
                }
            } else if line.contains("control loop held up") {
                if let Some(g) = field(&line, "gap_ms=") {
                    into.held_up.push((t - g / 1000.0, t));
                }
            }
        }
    }
}

/// Splits the deaths after `since` into those explained by a hold-up and
/// the others. A death of `x` held by `y` after `x` was silent for `s` is
/// explained when `x`'s or `y`'s control loop was held up (or `x` was
/// down: `down`) for all but `DEAD_BUDGET` of that silence: a host that
/// does not run sends no report (`x`) or no probe (`y`; what reached it
/// meanwhile it reads before it judges, the stall test's matter). With
/// the rest of the window left to reports and probes, the model's odds
/// apply to what remains (400 ms: 2 reports and 16 probes, all lost with
/// odds 0.3^2 x 0.51^16 = 2e-6 at 30% loss). On this shared 2-core
/// machine the loops of all three daemons were held up together for up
/// to 1.9 s at a load average of 10 to 16, even at nice -10: the whole machine
/// stalled, which no protocol tells from a death.
fn attribute(
    logs: &[Liveness],
    since: f64,
    down: &[(usize, f64, f64)],
) -> (Vec<String>, Vec<String>) {
    const DEAD_BUDGET: f64 = 0.4;
    let (mut explained, mut false_deaths) = (Vec::new(), Vec::new());
    for (y, log) in logs.iter().enumerate() {
        for &(t, x, s) in log.deaths.iter().filter(|d| d.0 >= since) {
            let (w0, w1) = (t - s, t);
            let mut spans: Vec<(f64, f64)> = logs[x]
                .held_up
                .iter()
                .chain(&logs[y].held_up)
                .copied()
                .chain(down.iter().filter(|d| d.0 == x).map(|d| (d.1, d.2)))
                .map(|(a, b)| (a.max(w0), b.min(w1)))
                .filter(|(a, b)| b > a)
                .collect();
            spans.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut covered = 0.0;
            let mut end = w0;
            for (a, b) in spans {
                if b > end {
                    covered += b - a.max(end);
                    end = b;
                }
            }
            let what = format!(
                "h{y} held h{x} dead after {:.0} ms of silence, {:.0} ms of it held up",
                s * 1000.0,
                covered * 1000.0
            );
            if covered >= s - DEAD_BUDGET {
                explained.push(what);
            } else {
                false_deaths.push(what);
            }
        }
    }
    (explained, false_deaths)
}

fn control_loss(percent: u32) {
    let Some(_g) = root_or_skip(&format!("control_loss_{percent}")) else {
        return;
    };
    let mut lab = cluster(LabSpec {
        hosts: 3,
        threshold: 1000.0,
        report_interval_ms: 200,
        dead_after_ms: 1000,
        ..LabSpec::default()
    });
    load_host0(&mut lab, 8, 180);
    for i in 0..3 {
        lossy(&lab, i, percent);
    }
    let loss_from = unix_now();

    // 1. Liveness: 20 s under loss. Every host counts each entry of a
    // peer into `dead` at its 5 ms tick (`deaths`) and logs it.
    let before: Vec<Status> = (0..3).map(|i| status(&lab, i)).collect();
    let start = Instant::now();
    std::thread::sleep(SOAK);
    let after: Vec<Status> = (0..3).map(|i| status(&lab, i)).collect();
    let mut logs: Vec<Liveness> = (0..3).map(|_| Liveness::default()).collect();
    for (i, l) in logs.iter_mut().enumerate() {
        Liveness::read(&lab, i, l);
    }
    let (explained, false_deaths) = attribute(&logs, loss_from, &[]);
    eprintln!(
        "{percent}% of control datagrams dropped at each host's input, {:?}:",
        start.elapsed()
    );
    for i in 0..3 {
        let (b, a) = (&before[i], &after[i]);
        let d = |k: &str| io(a, k) - io(b, k);
        let (dropped, passed) = loss_counts(&lab, i);
        eprintln!(
            "  h{i}: sent {} control messages, applied {} reports, sent {} probes, answered {}; \
             input: {dropped} dropped, {passed} passed ({:.1}% dropped); deaths held {:?}; \
             longest control loop hold-up {} ms",
            d("control_sent"),
            d("reports_applied"),
            d("probes_sent"),
            d("probes_answered"),
            100.0 * dropped as f64 / (dropped + passed).max(1) as f64,
            deaths(a),
            io(a, "control_tick_gap_max_ms")
        );
    }
    eprintln!("  deaths explained by hold-ups: {explained:?}");
    assert!(
        false_deaths.is_empty(),
        "live peers held dead under {percent}% loss: {false_deaths:?}"
    );
    let (dropped, _) = loss_counts(&lab, 1);
    assert!(dropped > 0, "the loss rule dropped nothing");

    // 2. Recovery under the same loss: host 0 redirects, restarts. The
    // stateless hash sends a fixed share (2 of 3 hosts' buckets) to the
    // peers whatever the machine's load: a threshold decides by loads that
    // lag under a busy machine (it once redirected only 113 of 600).
    let cfg = lab
        .config_text(0)
        .replace("kind = \"threshold\"", "kind = \"hash\"");
    assert!(cfg.contains("kind = \"hash\""), "{cfg}");
    std::fs::write(lab.config_path(0), &cfg).unwrap();
    let a = ok(lab.admin(0, "reload"));
    assert!(a.contains("\"ok\":true"), "{a}");
    let decided = |s: &Status| event(s, "new_redirected") + event(s, "new_local");
    let s0 = status(&lab, 0);
    let (base, base_decided) = (event(&s0, "new_redirected"), decided(&s0));
    let (go, out) = start_half_posts(&mut lab, CONNECTIONS);
    // The workers publish their counters every few milliseconds: wait
    // (bounded) until every connection's decision is counted.
    let counted = Instant::now();
    let mut s0 = status(&lab, 0);
    while decided(&s0) - base_decided < CONNECTIONS as u64
        && counted.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
        s0 = status(&lab, 0);
    }
    let redirected = event(&s0, "new_redirected") - base;
    let peers_before: Vec<Status> = (1..3).map(|i| status(&lab, i)).collect();
    eprintln!(
        "h0 before restart: {redirected} of {CONNECTIONS} redirected, {} routes",
        s0.routes
    );
    let down_from = unix_now();
    ok(lab.signal_dprd(0, "TERM"));
    // Its log is rewritten by the next start.
    let mut h0_before = Liveness::default();
    Liveness::read(&lab, 0, &mut h0_before);
    let restarted = Instant::now();
    ok(lab.start_dprd_with(0, &cfg));
    let down_to = unix_now();
    let mut phase = String::new();
    while restarted.elapsed() < Duration::from_secs(30) {
        phase = status(&lab, 0).phase;
        if phase == "active" {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let active_after = restarted.elapsed();
    let lines = finish_half_posts(&go, &out);
    let failed: Vec<&String> = lines.iter().filter(|l| !l.starts_with("ok h")).collect();
    let by_peers = lines
        .iter()
        .filter(|l| l.starts_with("ok h") && *l != "ok h0")
        .count() as u64;
    // The workers count restored routes as they take them from the
    // control thread: read once the connections have finished.
    let s0 = status(&lab, 0);
    let peers_after: Vec<Status> = (1..3).map(|i| status(&lab, i)).collect();
    let sent = |k: &str| -> u64 {
        (0..2)
            .map(|j| io(&peers_after[j], k) - io(&peers_before[j], k))
            .sum()
    };
    let mut logs: Vec<Liveness> = (0..3).map(|_| Liveness::default()).collect();
    logs[0] = h0_before;
    for (i, l) in logs.iter_mut().enumerate() {
        Liveness::read(&lab, i, l);
    }
    let (explained, false_deaths) = attribute(&logs, loss_from, &[(0, down_from, down_to)]);
    eprintln!(
        "h0 restarted at {percent}% loss: active {:?} after the restart (recovery {} ms by its \
         own clock), {} requests sent, peers received {} and sent {} chunks ({} flows); h0 got \
         {} distinct chunks, {} duplicates, {} flows, {} routes restored, incomplete {}; \
         {} of {} connections ok, {by_peers} served by peers ({redirected} redirected); \
         deaths held by h0 {:?}, h1 {:?}, h2 {:?}; explained: {explained:?}",
        active_after,
        io(&s0, "recovery_ms"),
        io(&s0, "recovery_requests_sent"),
        sent("recovery_requests_received"),
        sent("recovery_chunks_sent"),
        sent("recovery_flows_sent"),
        io(&s0, "recovery_chunks_received"),
        io(&s0, "recovery_chunks_duplicate"),
        io(&s0, "recovery_flows_received"),
        io(&s0, "routes_restored"),
        io(&s0, "recovery_incomplete"),
        lines.len() - failed.len(),
        lines.len(),
        deaths(&s0),
        deaths(&peers_after[0]),
        deaths(&peers_after[1]),
    );
    assert_eq!(phase, "active", "h0 still {phase} after 30 s");
    assert_eq!(
        io(&s0, "recovery_incomplete"),
        0,
        "recovery ended at its deadline"
    );
    assert!(
        false_deaths.is_empty(),
        "live peers held dead under {percent}% loss: {false_deaths:?}"
    );
    // The precondition: enough redirected connections that one peer's
    // answer takes two chunks or more (94 IPv4 flows a chunk): the hash
    // sends about 400 of 600 to the peers (binomial, sd 12).
    assert!(
        redirected > 2 * 94,
        "host 0 redirected only {redirected} of {CONNECTIONS}"
    );
    assert!(io(&s0, "recovery_chunks_received") >= 3, "{:?}", s0.io);
    assert_eq!(lines.len(), CONNECTIONS, "{lines:?}");
    // A connection breaks only if host 0 reset it because it held its
    // peer dead, which only a hold-up explains (asserted above).
    let resets = event(&s0, "dead_peer_resets");
    assert!(
        failed.len() as u64 <= resets && (failed.is_empty() || !explained.is_empty()),
        "connections broke ({} reset by h0 for a dead peer): {failed:?}",
        resets
    );
    assert_eq!(by_peers + failed.len() as u64, redirected);
    assert!(io(&s0, "routes_restored") >= redirected, "{:?}", s0.io);
    lab.kill_extras();
}

#[test]
fn ten_percent_control_loss_kills_no_peer_and_recovery_completes() {
    control_loss(10);
}

#[test]
fn thirty_percent_control_loss_kills_no_peer_and_recovery_completes() {
    control_loss(30);
}

/// Host 0's whole dprd is stopped (SIGSTOP) for longer than `dead_after`,
/// five times, while its peers keep reporting: when it runs again, their
/// reports are waiting in its socket. It must read them before it judges
/// liveness, or it holds both peers dead (and resets the connections it
/// routed to them) although they never stopped. The peers do hold host 0
/// dead meanwhile: it was silent.
#[test]
fn a_host_held_up_longer_than_dead_after_holds_no_reporting_peer_dead() {
    let Some(_g) = root_or_skip("control_stall") else {
        return;
    };
    let lab = cluster(LabSpec {
        hosts: 3,
        report_interval_ms: 200,
        dead_after_ms: 1000,
        ..LabSpec::default()
    });
    let pid = lab.dprd_pid(0).expect("h0 runs").to_string();
    let before = deaths(&status(&lab, 0));
    let signal = |sig: &str| {
        let st = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(st.success(), "kill {sig} {pid}");
    };
    let mut waiting = Vec::new();
    for _ in 0..5 {
        signal("-STOP");
        std::thread::sleep(Duration::from_millis(1300));
        // The precondition: the peers' reports (and probes) wait unread.
        let ss = ok(lab.exec(
            &lab.host_ns(0),
            "ss",
            &["-Huan", &format!("sport = :{CLUSTER_PORT}")],
        ));
        let queued: u64 = ss
            .split_whitespace()
            .nth(1)
            .and_then(|q| q.parse().ok())
            .unwrap_or(0);
        waiting.push(queued);
        signal("-CONT");
        std::thread::sleep(Duration::from_millis(700));
    }
    let after = status(&lab, 0);
    let held_dead_by_peers: Vec<Vec<(u16, u64)>> =
        (1..3).map(|i| deaths(&status(&lab, i))).collect();
    eprintln!(
        "h0 stopped 5 x 1.3 s, bytes waiting in its control socket each time {waiting:?}: h0 \
         held its peers dead {:?} (before {before:?}); the peers held h0 dead \
         {held_dead_by_peers:?}",
        deaths(&after)
    );
    assert!(
        waiting.iter().all(|q| *q > 0),
        "nothing waited: {waiting:?}"
    );
    assert_eq!(deaths(&after), before, "h0 held a reporting peer dead");
    assert!(
        held_dead_by_peers
            .iter()
            .all(|d| d.iter().any(|p| p.0 == 0 && p.1 >= 1)),
        "the peers should have held the stopped host dead: {held_dead_by_peers:?}"
    );
}

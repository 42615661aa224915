//! The AF_XDP send fast path end to end (issue 17): real `dprd` daemons in
//! network namespaces, native XDP on veths with the lab's NIC emulation
//! (`dpr_lab::nic`). Host 0 is over its threshold and redirects every new
//! connection to host 1; the client's packets of an established redirected
//! connection are then encapsulated and sent on by host 0's XDP program
//! (`XDP_TX`), never lifted to its daemon.
//!
//! The tests assert on counters: the program's (`xdp_prog_forwardv4`), the
//! workers' (`xdp_fast_path_flows_*`), the engine's (routes, expiries,
//! dead-peer resets). Root only (SKIPPED loudly otherwise); addresses from
//! 198.18.0.0/15 inside the lab's namespaces, which are always removed.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test code: failing loudly is the point

use dpr_lab::lab::{Lab, LabSpec, service_addr};
use dpr_tests::clients::{load_host0, status};
use dpr_tests::{ok, programs, root_or_skip};
use dprd::status::Status;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn io(s: &Status, k: &str) -> u64 {
    s.io.get(k).copied().unwrap_or(0)
}

fn event(s: &Status, k: &str) -> u64 {
    s.events.get(k).copied().unwrap_or(0)
}

fn forwarded_in_xdp(lab: &Lab) -> u64 {
    io(&status(lab, 0), "xdp_prog_forwardv4")
}

/// Two hosts on AF_XDP native with `auth`; host 0's configuration gets
/// `extra` appended; host 0 is over its threshold (two idle local
/// connections, threshold 1), so its new connections go to host 1.
fn redirecting_pair(auth: &str, extra: &str) -> Lab {
    let spec = LabSpec {
        hosts: 2,
        threshold: 1.0,
        backend: "af-xdp-native".into(),
        tunnel_auth: auth.into(),
        ..LabSpec::default()
    };
    let mut lab = ok(Lab::create(spec, &programs()));
    for i in 0..2 {
        ok(lab.start_httpd(i));
    }
    ok(lab.start_dprd(1));
    let c = format!("{}{extra}", lab.config_text(0));
    ok(lab.start_dprd_with(0, &c));
    ok(lab.wait_alive(Duration::from_secs(10)));
    for i in 0..2 {
        assert_eq!(
            status(&lab, i).backend,
            "af-xdp (native)",
            "{}",
            lab.log_tail(i)
        );
    }
    load_host0(&mut lab, 2, 120);
    // The redirect needs host 1 eligible at the upload's SYN: under load a
    // report can come late and leave it suspect for a moment (then host 0
    // serves the upload itself and the fast path is never used).
    wait_for(&lab, Duration::from_secs(10), "host 1 alive", |s| {
        s.peers
            .iter()
            .any(|p| p.peer.id == 1 && p.peer.state == "alive")
    });
    lab
}

/// A rate-limited upload of `size` bytes to host 0's service address: a
/// steady stream of full segments from the client.
fn upload(lab: &Lab, size: usize, rate: &str) -> Child {
    let file = lab.dir.join("upload.bin");
    ok(std::fs::write(&file, vec![b'x'; size]).map_err(|e| e.to_string()));
    let url = format!("http://{}/", service_addr(0));
    lab.in_ns(&lab.client_ns(), "curl")
        .args(["-sS", "--max-time", "90", "--limit-rate", rate])
        .args(["-H", "Content-Type: application/octet-stream"])
        .args(["--data-binary", &format!("@{}", file.display()), &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("curl: {e}"))
}

fn finish(c: Child) -> String {
    let out = c.wait_with_output().unwrap_or_else(|e| panic!("curl: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits (bounded) until `cond` holds on host 0's status.
fn wait_for(lab: &Lab, limit: Duration, what: &str, cond: impl Fn(&Status) -> bool) -> Status {
    let deadline = Instant::now() + limit;
    loop {
        let s = status(lab, 0);
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; host 0: io {:?} events {:?}\n{}",
            s.io,
            s.events,
            lab.log_tail(0)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A redirected upload that lasts longer than host 0's idle timeouts
/// (half-open 2 s, established 3 s) while the XDP program forwards all of
/// its client's packets but the SYN and FIN: its route stays in the
/// engine's table (the workers refresh it from the program's packet
/// counts), nothing expires, and the upload completes.
fn a_flow_active_only_in_the_fast_path_keeps_its_route(auth: &str) {
    let Some(_g) = root_or_skip("a_flow_active_only_in_the_fast_path_keeps_its_route") else {
        return;
    };
    let lab = redirecting_pair(
        auth,
        "\n[table]\nhalf_open_timeout_s = 2\nestablished_timeout_s = 3\n",
    );
    let before = status(&lab, 0);
    let size = 4_000_000;
    let curl = upload(&lab, size, "500k"); // about 8 s
    // Well past both timeouts, with the transfer going on: the route is
    // still there and packets were forwarded by the program.
    let started = Instant::now();
    let mid = wait_for(&lab, Duration::from_secs(30), "fast path in use", |s| {
        io(s, "xdp_prog_forwardv4") > 100
    });
    assert!(mid.routes >= 1, "{:?}", mid.io);
    std::thread::sleep(Duration::from_secs(5).saturating_sub(started.elapsed()));
    let late = status(&lab, 0);
    let out = finish(curl);
    let first = out.lines().next().unwrap_or("");
    assert!(first.starts_with("served-by h1"), "{first}");
    assert!(
        out.trim_end().ends_with(&format!("received {size}")),
        "upload: {out}"
    );
    let after = status(&lab, 0);
    assert!(
        late.routes >= 1,
        "the route was cut while in use: {:?}",
        late.io
    );
    assert_eq!(after.expired, before.expired, "an entry expired");
    assert_eq!(
        event(&after, "unknown_flow_delivered"),
        event(&before, "unknown_flow_delivered"),
        "packets of the flow reached the engine without a route"
    );
    assert_eq!(
        event(&after, "new_redirected") - event(&before, "new_redirected"),
        1
    );
    let fwd = io(&after, "xdp_prog_forwardv4");
    assert!(fwd > 100, "forwarded by the XDP program: {fwd}");
    assert!(io(&after, "xdp_fast_path_flows_added") >= 1);
    assert!(
        io(&after, "xdp_fast_path_flows_refreshed") >= 3,
        "{:?}",
        after.io
    );
    // The engine saw the handshake's SYN and the FIN, not the stream.
    let engine_fwd = after.verdicts.get("forwarded").copied().unwrap_or(0)
        - before.verdicts.get("forwarded").copied().unwrap_or(0);
    assert!(
        engine_fwd < fwd / 10,
        "engine forwarded {engine_fwd}, XDP {fwd}"
    );
}

/// An upload through the fast path; host 1's dprd is killed: once host 0
/// holds it dead, the program forwards none of its flow's packets any more
/// (the peer entry's generation was bumped in the same control tick), and
/// the packets reach the engine, which answers them with resets.
fn a_dead_peer_leaves_the_fast_path(auth: &str) {
    let Some(_g) = root_or_skip("a_dead_peer_leaves_the_fast_path") else {
        return;
    };
    let mut lab = redirecting_pair(auth, "");
    let curl = upload(&lab, 30_000_000, "400k"); // about 75 s, cut short
    wait_for(&lab, Duration::from_secs(30), "fast path in use", |s| {
        io(s, "xdp_prog_forwardv4") > 200
    });
    let before = status(&lab, 0);
    let _ = ok(lab.signal_dprd(1, "KILL"));
    let dead = wait_for(&lab, Duration::from_secs(15), "host 1 dead", |s| {
        s.peers
            .iter()
            .any(|p| p.peer.id == 1 && p.peer.state == "dead")
    });
    // One report interval (50 ms) and one status refresh (250 ms) later,
    // and again a second after: the program's count has stopped.
    std::thread::sleep(Duration::from_millis(50 + 300));
    let f1 = forwarded_in_xdp(&lab);
    std::thread::sleep(Duration::from_secs(1));
    let f2 = forwarded_in_xdp(&lab);
    assert_eq!(f2, f1, "the fast path still forwards to a dead peer");
    assert!(
        io(&dead, "xdp_fast_path_generation_bumps") > io(&before, "xdp_fast_path_generation_bumps")
    );
    // The flow's packets went to the engine: reset, as for any connection
    // routed to a dead peer.
    let after = wait_for(&lab, Duration::from_secs(10), "a dead-peer reset", |s| {
        event(s, "dead_peer_resets") > event(&before, "dead_peer_resets")
    });
    assert_eq!(io(&after, "xdp_prog_forwardv4"), f1);
    let out = finish(curl);
    assert!(
        !out.contains("received 30000000"),
        "the upload survived: {out}"
    );
}

/// With `[backend] xdp_fast_path = false` the program forwards nothing
/// itself and an upload still completes through the daemon.
fn without_the_fast_path_the_daemon_forwards(auth: &str) {
    let Some(_g) = root_or_skip("without_the_fast_path_the_daemon_forwards") else {
        return;
    };
    let spec_lab = redirecting_pair_off(auth);
    let out = finish(upload(&spec_lab, 1_000_000, "10M"));
    assert!(out.trim_end().ends_with("received 1000000"), "{out}");
    let s = status(&spec_lab, 0);
    assert_eq!(io(&s, "xdp_prog_forwardv4"), 0);
    assert_eq!(io(&s, "xdp_fast_path_flows_added"), 0);
    assert!(s.verdicts.get("forwarded").copied().unwrap_or(0) > 100);
}

fn redirecting_pair_off(auth: &str) -> Lab {
    // The [backend] section is the configuration's last before the peers:
    // the setting goes right after the mode.
    let spec = LabSpec {
        hosts: 2,
        threshold: 1.0,
        backend: "af-xdp-native".into(),
        tunnel_auth: auth.into(),
        ..LabSpec::default()
    };
    let mut lab = ok(Lab::create(spec, &programs()));
    for i in 0..2 {
        ok(lab.start_httpd(i));
    }
    ok(lab.start_dprd(1));
    let c = lab.config_text(0).replace(
        "xdp_mode = \"native\"\n",
        "xdp_mode = \"native\"\nxdp_fast_path = false\n",
    );
    ok(lab.start_dprd_with(0, &c));
    ok(lab.wait_alive(Duration::from_secs(10)));
    load_host0(&mut lab, 2, 60);
    lab
}

mod keyed {
    #[test]
    fn a_flow_active_only_in_the_fast_path_keeps_its_route() {
        super::a_flow_active_only_in_the_fast_path_keeps_its_route("key")
    }
    #[test]
    fn a_dead_peer_leaves_the_fast_path() {
        super::a_dead_peer_leaves_the_fast_path("key")
    }
    #[test]
    fn without_the_fast_path_the_daemon_forwards() {
        super::without_the_fast_path_the_daemon_forwards("key")
    }
}

mod plain_ip_in_ip {
    #[test]
    fn a_flow_active_only_in_the_fast_path_keeps_its_route() {
        super::a_flow_active_only_in_the_fast_path_keeps_its_route("none")
    }
    #[test]
    fn a_dead_peer_leaves_the_fast_path() {
        super::a_dead_peer_leaves_the_fast_path("none")
    }
}

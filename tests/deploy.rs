//! The systemd unit's stop and restart, as systemd runs them (issue 19):
//! `ExecStop=dprd drain --wait S`, then SIGTERM, then (restart) a new
//! `dprd run`. A drained host leaves the cluster, its stop undoes
//! everything, and the next start rejoins: its peers see it alive again
//! after it had left. A drain that cannot finish in time makes `--wait`
//! exit 1 naming what is left, and the stop still leaves nothing.
//!
//! Real `dprd` processes in network namespaces (`dpr_lab::lab::Lab`), with
//! addresses from 198.18.0.0/15 only; root, or SKIPPED loudly.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test code: failing loudly is the point

use dpr_lab::lab::{Lab, LabSpec, service_addr};
use dpr_tests::clients::status;
use dpr_tests::{ok, programs, root_or_skip};
use std::process::Output;
use std::time::{Duration, Instant};

fn peer_state(lab: &Lab, i: usize, of: u16) -> String {
    status(lab, i)
        .peers
        .iter()
        .find(|p| p.peer.id == of)
        .map(|p| p.peer.state.clone())
        .unwrap_or_default()
}

/// `dprd drain --wait S` against host `i`'s admin socket, as the unit's
/// `ExecStop=` runs it.
fn drain_wait(lab: &Lab, i: usize, wait_s: &str) -> Output {
    std::process::Command::new(&programs().dprd)
        .args(["drain", "--wait", wait_s, "--socket"])
        .arg(lab.socket(i))
        .output()
        .expect("running dprd drain")
}

/// Waits (bounded) until `cond` holds, or fails naming `what`.
fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_units_stop_drains_and_its_restart_rejoins() {
    let Some(_g) = root_or_skip("the_units_stop_drains_and_its_restart_rejoins") else {
        return;
    };
    let mut lab = ok(Lab::create(
        LabSpec {
            hosts: 3,
            ..LabSpec::default()
        },
        &programs(),
    ));
    for i in 0..3 {
        ok(lab.start_httpd(i));
    }
    for i in 0..3 {
        ok(lab.start_dprd(i));
    }
    ok(lab.wait_alive(Duration::from_secs(10)));

    for round in 0..2 {
        // ExecStop: drain, and wait for the host to leave.
        let o = drain_wait(&lab, 0, "20");
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert_eq!(o.status.code(), Some(0), "round {round}: {out}{err}");
        assert!(out.contains("left the cluster after"), "{out}");
        assert_eq!(status(&lab, 0).phase, "left");
        for j in 1..3 {
            eventually(
                &format!("round {round}: h{j} sees h0 left"),
                Duration::from_secs(5),
                || peer_state(&lab, j, 0) == "left",
            );
        }
        // Then SIGTERM: with nothing routed, everything is undone.
        let st = ok(lab.signal_dprd(0, "TERM"));
        assert!(st.contains("exit status: 0"), "round {round}: {st}");
        assert_eq!(ok(lab.leftovers(0)), Vec::<String>::new());
        // Restart: the new instance rejoins, and its peers take it back.
        ok(lab.start_dprd(0));
        eventually(
            &format!("round {round}: h0 back in the cluster"),
            Duration::from_secs(10),
            || {
                status(&lab, 0).phase == "active"
                    && status(&lab, 0)
                        .peers
                        .iter()
                        .all(|p| p.peer.state == "alive")
                    && (1..3).all(|j| peer_state(&lab, j, 0) == "alive")
            },
        );
    }

    // A drain that cannot finish: two idle connections held open to h0's
    // service from inside h0 (its load), a 1 s wait.
    let ns = lab.host_ns(0);
    let script = format!(
        "exec 3<>/dev/tcp/{a}/80; exec 4<>/dev/tcp/{a}/80; sleep 60",
        a = service_addr(0)
    );
    ok(lab.spawn_in(&ns, "bash", &["-c", &script]));
    eventually(
        "h0 counts its two connections",
        Duration::from_secs(10),
        || status(&lab, 0).open_connections >= 2,
    );
    let t = Instant::now();
    let o = drain_wait(&lab, 0, "1");
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("still draining after 1 s"), "{err}");
    assert!(err.contains("open connection(s)"), "{err}");
    // Bounded: one more status read after the limit at most.
    assert!(took < Duration::from_secs(7), "--wait 1 took {took:?}");
    // The stop after it: local connections are the kernel's, nothing is
    // routed to peers, so nothing is held and nothing left behind.
    let st = ok(lab.signal_dprd(0, "TERM"));
    assert!(st.contains("exit status: 0"), "{st}");
    assert_eq!(ok(lab.leftovers(0)), Vec::<String>::new());
}

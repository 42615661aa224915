//! The lab under signals: `dpr-lab lab` stopped by SIGTERM (as `timeout`
//! stops it) or SIGHUP (a closed terminal), sent to the lab process alone,
//! stops at once and leaves nothing behind: no `dprlab-<pid>-*` namespace,
//! no veth or bridge, none of the processes it started (web servers, load
//! generator, dprd daemons), no files. Root only; skipped loudly otherwise.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test code: failing loudly is the point

use dpr_lab::netns::{ip, namespaces_with_prefix};
use dpr_tests::{programs, root_or_skip};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// Link names the lab gives its bridge and veths (inside its namespaces).
const LAB_LINKS: [&str; 6] = ["br0", "v0", "v1", "v2", "vc", "vx"];

/// The lab's link names present in this (the root) namespace.
fn root_lab_links() -> BTreeSet<String> {
    ip(&["-o", "link", "show"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| LAB_LINKS.contains(&n.as_str()))
        .collect()
}

/// Field 22 of `/proc/PID/stat` (start time), to tell a process from a
/// later one with the same pid.
fn start_time(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)
        .map(String::from)
}

/// The processes whose parent is `parent`, with their start times.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let fields: Vec<&str> = s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            if let Some(t) = fields.get(19) {
                out.push((pid, t.to_string()));
            }
        }
    }
    out
}

/// A `dpr-lab lab` process. Dropping it (also when the test fails) kills
/// whatever the lab left and deletes its namespaces, so that a failing test
/// leaves nothing behind either.
struct RunningLab {
    child: Child,
    pid: u32,
    lines: Receiver<String>,
    seen: Vec<String>,
    started: Vec<(u32, String)>,
}

impl Drop for RunningLab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let prefix = format!("dprlab-{}-", self.pid);
        for (pid, t) in &self.started {
            if start_time(*pid).as_deref() == Some(t.as_str()) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        for ns in namespaces_with_prefix(&prefix).unwrap_or_default() {
            let _ = ip(&["netns", "del", &ns]);
        }
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("{prefix}0")));
    }
}

impl RunningLab {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(&programs().lab)
            .arg("lab")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("  lab {pid}: {l}");
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
        });
        Self {
            child,
            pid,
            lines,
            seen: Vec::new(),
            started: Vec::new(),
        }
    }

    /// Waits (at most `limit`) for a line of its stderr starting with `prefix`.
    fn wait_line(&mut self, prefix: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.trim_start().starts_with(prefix);
                    self.seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!("no line {prefix:?} within {limit:?}: {:?}", self.seen),
            }
        }
    }

    /// Sends `sig` to the lab process alone (not its children), waits (at
    /// most `limit`) for it to exit, and checks that everything it made is
    /// gone.
    fn stop_with(&mut self, sig: &str, limit: Duration, links_before: &BTreeSet<String>) {
        let prefix = format!("dprlab-{}-", self.pid);
        let made = namespaces_with_prefix(&prefix).unwrap();
        assert!(
            made.len() >= 4,
            "the lab should be running (bridge, client, 2 hosts): {made:?}"
        );
        self.started = children_of(self.pid);
        assert!(!self.started.is_empty(), "the lab runs no program yet");
        let dir = std::env::temp_dir().join(format!("{prefix}0"));
        assert!(dir.is_dir(), "{}", dir.display());

        let sent = Instant::now();
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if sent.elapsed() > limit {
                panic!("the lab still ran {limit:?} after SIG{sig}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // Its last words name the signal.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(l);
        }
        assert!(!status.success(), "an interrupted lab must not exit 0");
        assert!(
            self.seen
                .iter()
                .any(|l| l.contains(&format!("interrupted by SIG{sig}"))),
            "{:?}",
            self.seen
        );
        let left = namespaces_with_prefix(&prefix).unwrap();
        assert!(left.is_empty(), "namespaces left after SIG{sig}: {left:?}");
        let alive: Vec<&(u32, String)> = self
            .started
            .iter()
            .filter(|(pid, t)| start_time(*pid).as_deref() == Some(t.as_str()))
            .collect();
        assert!(alive.is_empty(), "processes left after SIG{sig}: {alive:?}");
        let links: BTreeSet<String> = root_lab_links().difference(links_before).cloned().collect();
        assert!(links.is_empty(), "links left after SIG{sig}: {links:?}");
        assert!(!dir.exists(), "{} left after SIG{sig}", dir.display());
        eprintln!(
            "SIG{sig}: the lab exited {:.1} s after the signal, with nothing left",
            sent.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn sigterm_during_a_load_phase_stops_the_lab_at_once_and_removes_everything() {
    let Some(_g) = root_or_skip("lab_sigterm") else {
        return;
    };
    let before = root_lab_links();
    // A 60-second phase: a lab that waited for the phase to end before
    // cleaning up would miss the 20-second limit.
    let mut lab = RunningLab::start(&["--hosts", "2", "--duration", "60", "--rate", "20"]);
    lab.wait_line("DPR off:", Duration::from_secs(30));
    lab.stop_with("TERM", Duration::from_secs(20), &before);
}

#[test]
fn sighup_with_the_daemons_running_removes_everything() {
    let Some(_g) = root_or_skip("lab_sighup") else {
        return;
    };
    let before = root_lab_links();
    let mut lab = RunningLab::start(&["--hosts", "2", "--duration", "4", "--rate", "20"]);
    // Phase 3: both dprd daemons are up and the load is running.
    lab.wait_line("DPR on:", Duration::from_secs(60));
    lab.stop_with("HUP", Duration::from_secs(30), &before);
}

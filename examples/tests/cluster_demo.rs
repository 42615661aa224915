//! `cluster-demo` run as a user runs it: on its seeded in-memory cluster,
//! DPR moves connections off the host RR-DNS overloads. (The routers that
//! need network namespaces are tested by the top-level `tests/` package,
//! which runs this package's binaries.)
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test code: failing loudly is the point

use std::process::Command;

/// (received, served, redirected out) of `host` in the table titled `title`.
fn row(out: &str, title: &str, host: &str) -> (u64, u64, u64) {
    let table = out
        .split(title)
        .nth(1)
        .unwrap_or_else(|| panic!("no table {title:?} in {out}"));
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with(host))
        .unwrap_or_else(|| panic!("no row {host} under {title:?} in {out}"));
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(3)
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{line}")))
        .collect();
    (f[0], f[1], f[2])
}

#[test]
fn dpr_moves_connections_off_the_overloaded_host() {
    let exe = env!("CARGO_BIN_EXE_cluster-demo");
    let o = Command::new(exe)
        .args(["--hosts", "2", "--connections", "200", "--seed", "1"])
        .output()
        .unwrap_or_else(|e| panic!("{exe}: {e}"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    let (received, served, out_off) = row(&out, "DPR off", "host0");
    assert_eq!((received, out_off), (served, 0), "{out}");
    let (received_on, served_on, redirected) = row(&out, "DPR on", "host0");
    assert_eq!(received_on, received, "the same load both times: {out}");
    assert!(redirected > 0 && served_on < served, "{out}");
}

#[test]
fn help_is_usage_not_a_run() {
    let exe = env!("CARGO_BIN_EXE_cluster-demo");
    let o = Command::new(exe).arg("--help").output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(all.contains("usage: cluster-demo"), "{all}");
    assert!(!all.contains("DPR on"), "{all}");
}

//! The example routers, run for real: two hosts in network namespaces
//! (`dpr_lab::lab`), each running the example (from this target directory)
//! instead of `dprd run`, and curl from the client. Root only; skipped
//! loudly otherwise.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use dpr_lab::lab::{Lab, LabSpec, service_addr};
use dpr_tests::{binary, ok, programs, root_or_skip};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Runs `router` (with `args` after the config path) on every host, then
/// `n` curls to host 0's service address; returns who served them.
fn serve_with(
    router: &str,
    policy: &str,
    extra: &[&str],
    idle: usize,
    n: usize,
) -> BTreeMap<String, usize> {
    let mut lab = ok(Lab::create(
        LabSpec {
            hosts: 2,
            policy: policy.into(),
            threshold: 0.5,
            ..LabSpec::default()
        },
        &programs(),
    ));
    for i in 0..2 {
        ok(lab.start_httpd(i));
    }
    for i in 0..2 {
        let cfg = lab.config_path(i);
        std::fs::write(&cfg, lab.config_text(i)).unwrap();
        let ns = lab.host_ns(i);
        let cfg = cfg.to_string_lossy().into_owned();
        let args: Vec<&str> = std::iter::once(cfg.as_str())
            .chain(extra.iter().copied())
            .collect();
        ok(lab.spawn_in(&ns, router, &args));
    }
    let ns = lab.client_ns();
    let url = format!("http://{}/?size=50", service_addr(0));
    let mut served = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Until both routers are up (their setup takes a moment).
    while lab
        .exec(&ns, "curl", &["-sS", "--max-time", "2", &url])
        .is_err()
    {
        assert!(Instant::now() < deadline, "{router} never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    if idle > 0 {
        // Idle connections to host 0's service, opened inside host 0 (they
        // do not pass the router, yet count in its load): host 0 is loaded,
        // host 1 is not, whatever the timing.
        let mut script = String::new();
        for k in 0..idle {
            script += &format!("exec {}<>/dev/tcp/{}/80; ", 3 + k, service_addr(0));
        }
        script += "sleep 60";
        let h0 = lab.host_ns(0);
        ok(lab.spawn_in(&h0, "bash", &["-c", &script]));
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..n {
        let r = lab.exec(&ns, "curl", &["-sS", "--max-time", "5", &url]);
        let out = ok(r);
        let who = out.split_whitespace().nth(1).unwrap_or("?").to_string();
        *served.entry(who).or_insert(0) += 1;
    }
    lab.kill_extras();
    served
}

fn exe(name: &str) -> String {
    binary(name).to_string_lossy().into_owned()
}

#[test]
fn hash_router_spreads_connections_by_client_port() {
    let Some(_g) = root_or_skip("hash_router") else {
        return;
    };
    let served = serve_with(&exe("hash-router"), "hash", &[], 0, 20);
    eprintln!("hash-router: {served:?}");
    assert_eq!(served.values().sum::<usize>(), 20);
    assert!(served.get("h0").copied().unwrap_or(0) > 0, "{served:?}");
    assert!(served.get("h1").copied().unwrap_or(0) > 0, "{served:?}");
}

#[test]
fn prefix_router_keeps_partners_local_and_redirects_the_rest() {
    let Some(_g) = root_or_skip("prefix_router") else {
        return;
    };
    // The lab's client (198.18.0.200) is a partner: always served locally.
    // Host 0 holds idle connections (over its threshold of 0.5), yet
    // every partner connection is served there.
    let served = serve_with(
        &exe("prefix-router"),
        "threshold",
        &["198.18.0.192/28"],
        4,
        10,
    );
    eprintln!("prefix-router, partner: {served:?}");
    assert_eq!(served.get("h0"), Some(&10), "{served:?}");
    // Not a partner: the same load sends new connections to host 1.
    let served = serve_with(&exe("prefix-router"), "threshold", &["10.0.0.0/8"], 4, 10);
    eprintln!("prefix-router, no partner: {served:?}");
    assert_eq!(served.values().sum::<usize>(), 10);
    assert!(served.get("h1").copied().unwrap_or(0) > 0, "{served:?}");
}

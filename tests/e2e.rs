//! End-to-end tests: real `dprd` processes in network namespaces.
//!
//! Each test builds its own cluster with `dpr_lab::lab::Lab` (names carry
//! the test process's id; everything is removed on drop, also when a test
//! fails) and uses addresses from 198.18.0.0/15 only, inside those
//! namespaces. The daemons are the `dprd` of this target directory. They
//! need root; without it every test says SKIPPED loudly on stderr and
//! passes. They run one at a time (a lock): they share two cores.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test code: failing loudly is the point

use dpr_lab::lab::{CLIENT_ADDR, Lab, LabSpec, service_addr, tunnel_addr};
use dpr_lab::truth::GroundTruth;
use dpr_tests::clients::{finish_half_posts, load_host0, start_half_posts, status};
use dpr_tests::{ok, programs, root_or_skip};
use dprd::status::Status;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

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
    for i in 0..n {
        expect_backend(&lab, i);
    }
    lab
}

/// Host `i` runs the backend its spec asks for (no silent fallback to TUN).
fn expect_backend(lab: &Lab, i: usize) {
    let want = match lab.spec.backend.as_str() {
        "af-xdp-native" => "af-xdp (native)",
        "af-xdp-generic" => "af-xdp (generic)",
        _ => "tun",
    };
    let got = status(lab, i).backend;
    assert_eq!(got, want, "h{i}: {}", lab.log_tail(i));
}

fn io(s: &Status, k: &str) -> u64 {
    s.io.get(k).copied().unwrap_or(0)
}

/// Packets the XDP programs of hosts 1 and 2 decapsulated themselves
/// (plain IP-in-IP, or the keyed tunnel's GRE of accepted flows).
fn decapsulated_by_peers(lab: &Lab) -> u64 {
    (1..3)
        .map(|i| {
            let s = status(lab, i);
            io(&s, "xdp_prog_decapv4") + io(&s, "xdp_prog_decapgrev4")
        })
        .sum()
}

fn event(s: &Status, k: &str) -> u64 {
    s.events.get(k).copied().unwrap_or(0)
}

fn drop_count(s: &Status, k: &str) -> u64 {
    s.drops.get(k).copied().unwrap_or(0)
}

fn curl(lab: &Lab, args: &[&str]) -> String {
    let ns = lab.client_ns();
    ok(lab.exec(&ns, "curl", &[&["-sS", "--max-time", "60"], args].concat()))
}

fn threshold_one(hosts: usize, backend: &str) -> LabSpec {
    LabSpec {
        hosts,
        threshold: 1.0,
        ..spec(backend)
    }
}

/// The default lab on `backend`.
fn spec(backend: &str) -> LabSpec {
    LabSpec {
        backend: backend.into(),
        ..LabSpec::default()
    }
}

fn curl_over_a_redirected_connection_is_answered_as_the_address_it_used(backend: &str) {
    let Some(_g) = root_or_skip("curl_over_redirect") else {
        return;
    };
    let mut lab = cluster(threshold_one(3, backend));
    load_host0(&mut lab, 2, 60);
    let before = status(&lab, 0);
    let out = curl(
        &lab,
        &[
            "-w",
            "\\nremote %{remote_ip}\\n",
            &format!("http://{}/?size=100", service_addr(0)),
        ],
    );
    let served_by = out.split_whitespace().nth(1).unwrap_or("").to_string();
    assert!(out.starts_with("served-by h"), "{out}");
    assert_ne!(
        served_by, "h0",
        "host 0 is over its threshold: a peer must serve\n{out}"
    );
    assert!(
        out.contains(&format!("remote {}", service_addr(0))),
        "the answer comes from the address the client used\n{out}"
    );
    let after = status(&lab, 0);
    assert!(event(&after, "new_redirected") > event(&before, "new_redirected"));
    let server: usize = served_by[1..].parse().unwrap_or(0);
    assert!(event(&status(&lab, server), "new_from_peer") >= 1);
    assert!(event(&status(&lab, server), "mss_clamped") + event(&after, "mss_clamped") >= 1);
}

fn ip_stat(lab: &Lab, ns: &str, field: &str) -> u64 {
    ok(lab.snmp(ns, "Ip", field))
}

fn twenty_megabytes_each_way_over_redirected_connections_without_fragments(backend: &str) {
    let Some(_g) = root_or_skip("large_transfers") else {
        return;
    };
    let mut lab = cluster(threshold_one(3, backend));
    load_host0(&mut lab, 2, 60);
    let file = lab.dir.join("upload.bin");
    ok(std::fs::write(&file, vec![b'x'; 20_000_000]).map_err(|e| e.to_string()));
    let mut namespaces: Vec<String> = (0..3).map(|i| lab.host_ns(i)).collect();
    namespaces.push(lab.client_ns());
    let frag_before: Vec<(u64, u64)> = namespaces
        .iter()
        .map(|ns| {
            (
                ip_stat(&lab, ns, "FragCreates"),
                ip_stat(&lab, ns, "ReasmReqds"),
            )
        })
        .collect();
    // What each host's TUN device dropped because its daemon's queue was
    // full (a segment lost there is retransmitted by the client; the
    // daemon counts nothing, as it never saw it).
    let tun_dropped = |lab: &Lab| -> Vec<u64> {
        (0..3)
            .map(|i| {
                let t = ok(lab.exec(
                    &lab.host_ns(i),
                    "cat",
                    &["/sys/class/net/dpr0/statistics/tx_dropped"],
                ));
                t.trim().parse().unwrap_or(u64::MAX)
            })
            .collect()
    };
    let tun_dropped_before = (backend == "tun").then(|| tun_dropped(&lab));
    let url = format!("http://{}/", service_addr(0));
    // A transfer served by h0 itself crossed no tunnel: it does not count.
    // That happens when h0 sees no peer eligible at that instant (a report
    // late on this loaded two-core machine makes a peer suspect for an
    // interval); try again, a few times at most.
    let redirected = |what: &str, run: &dyn Fn() -> String| -> String {
        for attempt in 0..4 {
            let out = run();
            if !out.starts_with("served-by h0") {
                return out;
            }
            let s = status(&lab, 0);
            eprintln!(
                "{what}, attempt {attempt}: served by h0 itself; h0 sees {:?}",
                s.peers
                    .iter()
                    .map(|p| (p.peer.id, p.peer.state.clone(), p.peer.open_connections))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("{what}: never redirected in 4 attempts");
    };
    for round in 0..2 {
        let down = redirected("download", &|| {
            curl(
                &lab,
                &[
                    "-o",
                    "-",
                    "-w",
                    "\\n%{size_download} %{http_code}",
                    &format!("{url}?size=20000000"),
                ],
            )
        });
        let first = down.lines().next().unwrap_or("");
        assert!(first.starts_with("served-by h"), "round {round}: {first}");
        assert!(
            down.ends_with("20000000 200"),
            "download incomplete: {}",
            &down[down.len().saturating_sub(40)..]
        );
        let up = redirected("upload", &|| {
            curl(
                &lab,
                &[
                    "--data-binary",
                    &format!("@{}", file.display()),
                    "-H",
                    "Content-Type: application/octet-stream",
                    &url,
                ],
            )
        });
        assert!(up.starts_with("served-by h"), "round {round}: {up}");
        assert!(
            up.trim_end().ends_with("received 20000000"),
            "upload incomplete: {up}"
        );
    }
    if let Some(before) = tun_dropped_before {
        assert_eq!(
            tun_dropped(&lab),
            before,
            "segments dropped at a TUN device's queue (its tx_dropped)"
        );
    }
    for (ns, (fc, rr)) in namespaces.iter().zip(frag_before) {
        assert_eq!(
            ip_stat(&lab, ns, "FragCreates"),
            fc,
            "{ns} fragmented packets"
        );
        assert_eq!(
            ip_stat(&lab, ns, "ReasmReqds"),
            rr,
            "{ns} received fragments"
        );
    }
    if backend.starts_with("af-xdp") {
        // The bulk of each upload reached its server decapsulated by the
        // server's XDP program (the keyed tunnel's flows its engine
        // accepted), not through its daemon.
        let decapsulated = decapsulated_by_peers(&lab);
        assert!(decapsulated > 10_000, "decapsulated in XDP: {decapsulated}");
        let grew: u64 = (1..3)
            .map(|i| io(&status(&lab, i), "xdp_keyed_flows_added"))
            .sum();
        assert!(grew > 0, "no keyed flow written to the XDP programs");
    }
    for i in 0..3 {
        let s = status(&lab, i);
        assert_eq!(drop_count(&s, "fragment"), 0);
        assert_eq!(
            event(&s, "too_big_replies"),
            0,
            "h{i}: the MSS clamp should make PMTU replies unnecessary"
        );
    }
}

fn threshold_policy_under_skewed_load_evens_out_served_counts(backend: &str) {
    let Some(_g) = root_or_skip("threshold_skew") else {
        return;
    };
    // Threshold 1: a host with a connection open looks for a less-loaded peer.
    let lab = cluster(threshold_one(4, backend));
    let r = ok(lab.load(150.0, 5.0, 0.8, "skewed"));
    let served: Vec<usize> = (0..4)
        .map(|i| {
            r.values()
                .map(|t| t.served_by.get(&format!("h{i}")).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let errors: usize = r.values().map(|t| t.errors).sum();
    let total: usize = served.iter().sum();
    let received0 = r.get(&service_addr(0).to_string()).map_or(0, |t| t.sent);
    eprintln!("received by h0 {received0} of {total}; served {served:?}; errors {errors}");
    assert_eq!(errors, 0);
    // Every connection was decided once, by the rule, with the load the
    // engine had: these hold however busy the machine is.
    for i in 0..4 {
        let joined = ok(lab.decisions_joined(i));
        let received = r.get(&service_addr(i).to_string()).map_or(0, |t| t.sent);
        assert_eq!(joined.len(), received, "h{i}: one decision per connection");
        assert!(
            joined.iter().all(|d| d.local || d.used >= 1.0),
            "h{i}: redirected under the threshold"
        );
    }
    assert!(
        event(&status(&lab, 0), "new_redirected") > 0,
        "the overloaded host redirects"
    );
    // The threshold policy keeps the overloaded host busy up to its
    // threshold and sends the rest away: its share falls to under half of
    // what it received, every peer serves at least twice what it received,
    // and no host serves more than about twice another. (Measured after the
    // load measurement stopped delaying reports: h0 kept 35–38 % of what it
    // received, peers served 3× theirs, max/min ≤ 1.55. Before, late
    // reports left h0 with ~2.5× a peer's share, and these bounds were
    // 0.7, 1.5 and 4.)
    let received = |i: usize| r.get(&service_addr(i).to_string()).map_or(0, |t| t.sent);
    assert!(
        (served[0] as f64) < 0.5 * received0 as f64,
        "h0 kept too much: {served:?}"
    );
    for i in 1..4 {
        assert!(
            served[i] as f64 > 2.0 * received(i) as f64,
            "h{i} took too little: {served:?}"
        );
    }
    let (max, min) = (
        served.iter().max().copied().unwrap_or(0),
        served.iter().min().copied().unwrap_or(0),
    );
    assert!(
        (max as f64) < 2.2 * min as f64,
        "served counts too uneven: {served:?}"
    );
}

fn a_killed_host_gets_no_new_connections_after_dead_after(backend: &str) {
    let Some(_g) = root_or_skip("killed_host") else {
        return;
    };
    let spec = threshold_one(3, backend);
    let dead_after = Duration::from_millis(spec.dead_after_ms);
    let interval = Duration::from_millis(spec.report_interval_ms);
    let mut lab = cluster(spec);
    // Load on h0 so that it redirects: h1 and h2 both take connections.
    load_host0(&mut lab, 2, 60);
    let warm = ok(lab.load_targets(&[0, 1], 40.0, 2.0, 0.9, "before the kill"));
    assert_eq!(warm.values().map(|t| t.errors).sum::<usize>(), 0);
    // Kill host 2: its daemon and web server die, its link goes down.
    let killed = Instant::now();
    let _ = lab.signal_dprd(2, "KILL");
    lab.kill_httpd(2);
    let ns2 = lab.host_ns(2);
    ok(lab.exec(&ns2, "ip", &["link", "set", "eth0", "down"]));
    let peer_state = |lab: &Lab, i: usize| {
        status(lab, i)
            .peers
            .iter()
            .find(|p| p.peer.id == 2)
            .map(|p| p.peer.state.clone())
            .unwrap_or_default()
    };
    while peer_state(&lab, 0) != "dead" || peer_state(&lab, 1) != "dead" {
        assert!(
            killed.elapsed() < dead_after + 2 * interval + Duration::from_millis(500),
            "peers still think h2 is {} / {} after {:?}",
            peer_state(&lab, 0),
            peer_state(&lab, 1),
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen_dead = killed.elapsed();
    let to_h2 = |lab: &Lab| {
        status(lab, 0)
            .peers
            .iter()
            .find(|p| p.peer.id == 2)
            .map_or(0, |p| p.redirected_connections)
    };
    let before = to_h2(&lab);
    let after_kill = ok(lab.load_targets(&[0, 1], 40.0, 3.0, 0.9, "after the kill"));
    let errors: usize = after_kill.values().map(|t| t.errors).sum();
    let sent: usize = after_kill.values().map(|t| t.sent).sum();
    eprintln!("h2 seen dead after {seen_dead:?}; {sent} new connections, {errors} errors");
    assert_eq!(errors, 0, "new connections keep succeeding");
    assert_eq!(
        to_h2(&lab),
        before,
        "no new connection went to the dead host"
    );
    assert!(event(&status(&lab, 0), "new_redirected") > 0);
}

/// Debian's python3, which has the python3-scapy package `scripts/test`
/// installs (a `python3` earlier in PATH, such as pyenv's, may not).
fn system_python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn scapy(lab: &Lab, ns: &str, program: &str) {
    let code = format!("from scapy.all import *\nconf.verb = 0\n{program}\n");
    ok(lab.exec(ns, system_python(), &["-c", &code]));
}

fn ip_in_ip_from_a_non_peer_is_not_delivered_and_is_counted(backend: &str) {
    let Some(_g) = root_or_skip("ipip_from_stranger") else {
        return;
    };
    let lab = cluster(LabSpec {
        hosts: 2,
        stranger: true,
        ..spec(backend)
    });
    let passive = |lab: &Lab| ok(lab.snmp(&lab.host_ns(0), "Tcp", "PassiveOpens"));
    let before = status(&lab, 0);
    let opens = passive(&lab);
    scapy(
        &lab,
        &lab.stranger_ns(),
        &format!(
            "send(IP(src='198.18.0.250', dst='{}')/IP(src='198.18.0.250', dst='{}')/TCP(sport=RandShort(), dport=80, flags='S'), count=20)",
            tunnel_addr(0),
            service_addr(0)
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = status(&lab, 0);
    if lab.spec.is_xdp() {
        // The XDP program takes IP-in-IP from configured peers only: the
        // stranger's packets go to the kernel, which has no tunnel for them.
        let d = io(&after, "xdp_prog_pass") - io(&before, "xdp_prog_pass");
        assert!(d >= 20, "the XDP program passed only {d} to the kernel");
        assert_eq!(
            io(&after, "xdp_prog_peerv4"),
            io(&before, "xdp_prog_peerv4"),
            "not taken as a peer's"
        );
    } else {
        let d = drop_count(&after, "unknown_tunnel_source")
            - drop_count(&before, "unknown_tunnel_source");
        assert!(d >= 20, "unknown_tunnel_source rose by {d}");
    }
    assert_eq!(passive(&lab), opens, "no SYN reached the local stack");
    let _ = CLIENT_ADDR;
}

/// A stranger sends host 0 tunnel packets whose outer source is host 1's
/// tunnel address (a spoofed peer), carrying SYNs for host 1's service
/// address from forged clients: plain IP-in-IP, and GRE with a guessed tag.
/// With the keyed tunnel they are refused and counted and no SYN reaches
/// host 0's stack; with `auth = "none"` the same plain packets open
/// connections there (SYN-ACKs reflected at the forged clients), which is
/// what the check prevents.
fn a_spoofed_peer_address_opens_connections_only_without_the_key(backend: &str) {
    let Some(_g) = root_or_skip("spoofed_peer") else {
        return;
    };
    const N: u64 = 20;
    let attack = |lab: &Lab| {
        let send = |outer: &str| {
            scapy(
                lab,
                &lab.stranger_ns(),
                &format!(
                    "send(IP(src='{}', dst='{}')/{outer}IP(src='198.18.0.77', dst='{}')/TCP(sport=RandShort(), dport=80, flags='S'), count={N})",
                    tunnel_addr(1),
                    tunnel_addr(0),
                    service_addr(1)
                ),
            )
        };
        send("");
        // K and S set, IPv4 inside, a guessed tag, key id 1.
        send(
            "GRE(key_present=1, seqnum_present=1, key=0x5eed1234, seqence_number=1, proto=0x0800)/",
        );
    };
    // Half-open sockets for host 1's service address in host 0's stack:
    // each is a SYN that reached it and a SYN-ACK sent to a forged client.
    let half_open = |lab: &Lab| {
        let filter = format!("src {}", service_addr(1));
        let out = ok(lab.exec(
            &lab.host_ns(0),
            "ss",
            &["-Htn", "state", "syn-recv", &filter],
        ));
        out.lines().filter(|l| !l.trim().is_empty()).count() as u64
    };
    for auth in ["key", "none"] {
        let lab = cluster(LabSpec {
            hosts: 2,
            stranger: true,
            tunnel_auth: auth.into(),
            ..spec(backend)
        });
        let before = status(&lab, 0);
        attack(&lab);
        std::thread::sleep(Duration::from_millis(500));
        let after = status(&lab, 0);
        let grew = |k: &str| drop_count(&after, k) - drop_count(&before, k);
        let from_peer = event(&after, "new_from_peer") - event(&before, "new_from_peer");
        let opened = half_open(&lab);
        eprintln!(
            "auth {auth}: tunnel_bad_tag +{}, new_from_peer +{from_peer}, half-open sockets {opened}",
            grew("tunnel_bad_tag")
        );
        if auth == "key" {
            assert_eq!(
                grew("tunnel_bad_tag"),
                2 * N,
                "plain and guessed-tag SYNs refused"
            );
            assert_eq!(from_peer, 0, "no connection accepted from the spoofed peer");
            assert_eq!(opened, 0, "no SYN reached the local stack");
        } else {
            assert_eq!(grew("tunnel_bad_tag"), 0);
            assert_eq!(
                from_peer, N,
                "plain IP-in-IP from the spoofed peer is accepted"
            );
            assert_eq!(opened, N, "the spoofed SYNs reached the stack");
        }
    }
}

fn malformed_burst_at_the_service_port_is_counted_and_service_goes_on(backend: &str) {
    let Some(_g) = root_or_skip("malformed_burst") else {
        return;
    };
    let lab = cluster(LabSpec {
        hosts: 2,
        ..spec(backend)
    });
    let before = status(&lab, 0);
    let dst = service_addr(0);
    scapy(
        &lab,
        &lab.client_ns(),
        &format!(
            "d = '{dst}'\n\
             pk = []\n\
             for i in range(50):\n\
             \x20   pk.append(IP(dst=d)/TCP(dport=80, dataofs=15, flags='S'))\n\
             \x20   pk.append(IP(dst=d, proto=6)/Raw(b'\\x9c\\x40\\x00\\x50\\x00'))\n\
             \x20   pk.append(IP(dst=d)/TCP(dport=80, flags='S', options=[(2, b'')]))\n\
             \x20   pk.append(IP(dst=d)/TCP(dport=80, flags='S')/Raw(b'\\x02\\x00\\x00\\x00'))\n\
             \x20   pk.append(IP(dst=d, ihl=15)/TCP(dport=80, flags='S'))\n\
             \x20   pk.append(IP(dst=d, len=1000)/TCP(dport=80, flags='S'))\n\
             \x20   pk.append(IP(dst=d)/TCP(dport=80, flags='A', dataofs=6)/Raw(b'\\x02\\x01'))\n\
             send(pk)"
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = status(&lab, 0);
    let d = drop_count(&after, "malformed") - drop_count(&before, "malformed");
    eprintln!("malformed drops +{d}; by layer {:?}", after.malformed);
    assert!(d >= 50, "malformed drops rose by only {d}");
    let out = curl(&lab, &[&format!("http://{dst}/?size=100")]);
    assert!(out.starts_with("served-by h"), "still serving: {out}");
    let r = ok(lab.load(60.0, 1.0, 0.5, "after the burst"));
    assert_eq!(r.values().map(|t| t.errors).sum::<usize>(), 0);
}

fn drain_under_load_fails_no_established_connection(backend: &str) {
    let Some(_g) = root_or_skip("drain") else {
        return;
    };
    let mut lab = cluster(LabSpec {
        hosts: 3,
        service_ms: 300,
        workers: 64,
        threshold: 1000.0,
        ..spec(backend)
    });
    let done = std::sync::Arc::new(Mutex::new(None));
    std::thread::scope(|s| {
        let lab_ref = &lab;
        let done2 = done.clone();
        s.spawn(move || {
            let r = lab_ref.load(60.0, 4.0, 0.8, "drain");
            *done2.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
        });
        // Drain once connections are open (the load's start can lag on a
        // busy machine: wait for the figure, bounded by the load's 4 s).
        std::thread::sleep(Duration::from_millis(1000));
        let until = Instant::now() + Duration::from_millis(2500);
        let mut open = status(lab_ref, 0).open_connections;
        while open < 5 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
            open = status(lab_ref, 0).open_connections;
        }
        let a = ok(lab_ref.admin(0, "drain"));
        assert!(a.contains("\"ok\":true"), "{a}");
        eprintln!("drained h0 with {open} connections open");
        assert!(
            open > 0,
            "connections were established when the drain began"
        );
    });
    let r = match done.lock().unwrap_or_else(PoisonError::into_inner).take() {
        Some(r) => ok(r),
        None => panic!("load did not finish"),
    };
    let errors: usize = r.values().map(|t| t.errors).sum();
    assert_eq!(errors, 0, "{r:?}");
    let s0 = status(&lab, 0);
    assert!(s0.draining);
    assert!(
        event(&s0, "new_redirected") > 0,
        "new connections went to peers after the drain"
    );
    let s1 = status(&lab, 1);
    let h0 = s1
        .peers
        .iter()
        .find(|p| p.peer.id == 0)
        .map(|p| p.peer.state.clone());
    assert_eq!(h0.as_deref(), Some("draining"));
    lab.kill_extras();
}

fn sigterm_and_a_failed_setup_leave_nothing_behind(backend: &str) {
    let Some(_g) = root_or_skip("cleanup") else {
        return;
    };
    let mut lab = ok(Lab::create(
        LabSpec {
            hosts: 3,
            ..spec(backend)
        },
        &programs(),
    ));
    for i in 0..3 {
        ok(lab.start_httpd(i));
    }
    // h1 drops root to nobody after setup, keeping CAP_NET_ADMIN for the teardown.
    ok(lab.start_dprd(0));
    let c1 = lab
        .config_text(1)
        .replace("uplink = \"eth0\"", "uplink = \"eth0\"\nuser = \"nobody\"");
    ok(lab.start_dprd_with(1, &c1));
    ok(lab.wait_alive(Duration::from_secs(10)));
    expect_backend(&lab, 0);
    expect_backend(&lab, 1);
    let out = curl(&lab, &[&format!("http://{}/?size=10", service_addr(1))]);
    assert!(out.starts_with("served-by"), "{out}");
    for i in 0..2 {
        assert!(
            !ok(lab.leftovers(i)).is_empty(),
            "h{i} is set up while running"
        );
        let st = ok(lab.signal_dprd(i, "TERM"));
        assert!(
            st.contains("exit status: 0"),
            "h{i} exited {st}: {}",
            lab.log_tail(i)
        );
        assert_eq!(
            ok(lab.leftovers(i)),
            Vec::<String>::new(),
            "h{i} after SIGTERM"
        );
    }
    // Setup failing half-way (a rule it wants already exists): undone too.
    // AF_XDP makes no diversion rules: clash with an MSS rule instead.
    let ns = lab.host_ns(2);
    let t2 = tunnel_addr(2).to_string();
    let s0 = service_addr(0).to_string();
    let (clash, pref): (Vec<&str>, &str) = if lab.spec.is_xdp() {
        (
            vec!["rule", "add", "pref", "15", "from", &s0, "lookup", "101"],
            "15",
        )
    } else {
        (
            vec![
                "rule", "add", "pref", "11", "iif", "eth0", "to", &t2, "ipproto", "4", "lookup",
                "100",
            ],
            "11",
        )
    };
    ok(lab.exec(&ns, "ip", &clash));
    let err = lab.start_dprd(2);
    assert!(err.is_err(), "setup should have failed");
    let log = lab.log_tail(2);
    assert!(
        log.contains(&format!("host setup failed at adding rule pref {pref}")),
        "{log}"
    );
    let left = ok(lab.leftovers(2));
    assert_eq!(left.len(), 1, "only the clashing rule is left: {left:?}");
}

/// A 3-host lab where host 0 holds 8 idle local connections and then, by
/// a configuration reload (threshold 0.5), redirects new ones; host 0's
/// configuration text with `extra` added to `[cluster]`.
fn overloaded_host0(extra: &str, backend: &str) -> (Lab, String) {
    overloaded_host0_with(extra, backend, "key")
}

/// [`overloaded_host0`] with `[tunnel] auth` set to `auth`.
fn overloaded_host0_with(extra: &str, backend: &str, auth: &str) -> (Lab, String) {
    let mut lab = cluster(LabSpec {
        hosts: 3,
        threshold: 1000.0,
        backend: backend.into(),
        tunnel_auth: auth.into(),
        ..LabSpec::default()
    });
    load_host0(&mut lab, 8, 60);
    let cfg = lab
        .config_text(0)
        .replace("threshold = 1000.0", "threshold = 0.5")
        .replacen("[cluster]\n", &format!("[cluster]\n{extra}"), 1);
    std::fs::write(lab.config_path(0), &cfg).unwrap();
    let a = ok(lab.admin(0, "reload"));
    assert!(a.contains("\"ok\":true"), "{a}");
    (lab, cfg)
}

/// Restarts host 0's dprd, `wait` after `n` connections it redirected
/// went half way through their requests; returns the client's lines.
fn restart_mid_request(
    lab: &mut Lab,
    n: usize,
    config: Option<&str>,
    wait: Duration,
) -> (Vec<String>, u64) {
    let base = event(&status(lab, 0), "new_redirected");
    let (go, out) = start_half_posts(lab, n);
    std::thread::sleep(wait);
    let before = status(lab, 0);
    eprintln!(
        "h0 before restart: {} redirected, {} routes",
        event(&before, "new_redirected"),
        before.routes
    );
    ok(lab.signal_dprd(0, "TERM"));
    match config {
        Some(c) => ok(lab.start_dprd_with(0, c)),
        None => ok(lab.start_dprd(0)),
    }
    // Recovery is one round trip to the peers; give it a few intervals.
    std::thread::sleep(Duration::from_millis(500));
    let lines = finish_half_posts(&go, &out);
    (lines, event(&before, "new_redirected") - base)
}

#[test]
fn a_restarted_router_recovers_the_connections_it_redirected() {
    let Some(_g) = root_or_skip("restart_recovery") else {
        return;
    };
    let (mut lab, cfg) = overloaded_host0("", "tun");
    let (lines, redirected) =
        restart_mid_request(&mut lab, 12, Some(&cfg), Duration::from_millis(200));
    check_recovered(&lab, &lines, redirected);
    lab.kill_extras();
}

/// On AF_XDP the peers' XDP program decapsulates the redirected
/// connections' packets after their SYN (the keyed tunnel's flows their
/// engines accepted), so the peers' engines do not see
/// them; their served-table entries must still be there when host 0
/// restarts, past the 10 s a half-open entry lives (kept by the socket
/// table's confirmations).
#[test]
fn a_restarted_router_recovers_connections_whose_packets_its_peers_decapsulate() {
    restart_recovery_with_xdp_decapsulation("key");
}

/// The same with the plain tunnel (`tunnel.auth = "none"`).
#[test]
fn a_restarted_router_recovers_connections_its_peers_decapsulate_from_plain_ip_in_ip() {
    restart_recovery_with_xdp_decapsulation("none");
}

fn restart_recovery_with_xdp_decapsulation(auth: &str) {
    let Some(_g) = root_or_skip("restart_recovery_xdp") else {
        return;
    };
    let (mut lab, cfg) = overloaded_host0_with("", "af-xdp-native", auth);
    let (lines, redirected) =
        restart_mid_request(&mut lab, 12, Some(&cfg), Duration::from_secs(12));
    check_recovered(&lab, &lines, redirected);
    assert!(
        decapsulated_by_peers(&lab) > 0,
        "the peers decapsulated nothing in XDP"
    );
    lab.kill_extras();
}

/// Polls `cond` every 50 ms for at most `limit`; false if it never held.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Host 1's router is down while host 0 redirects to it: host 0 resets
/// the clients of the connections routed to host 1, whose own sockets stay
/// open with nobody behind them. When host 1's router is back, host 0
/// names those connections to it (a cut notice) and host 1 aborts them:
/// its load falls back to what it really serves, and it takes new
/// connections again within a few report intervals instead of after the
/// sockets time out.
fn a_host_back_after_its_router_was_down_drops_the_connections_cut_meanwhile(backend: &str) {
    let Some(_g) = root_or_skip("cut_notice") else {
        return;
    };
    let (mut lab, _) = overloaded_host0("", backend);
    let (go, out) = start_half_posts(&mut lab, 8);
    let stale = |lab: &Lab| {
        let out = lab
            .exec(
                &lab.host_ns(1),
                "ss",
                &["-Htn", "state", "established", "( sport = :80 )"],
            )
            .unwrap_or_default();
        out.lines().count()
    };
    // Host 1's own stack says how many it holds (dprd's measured count
    // lags it by a measurement, more on a busy machine): wait until that
    // count stops moving, the last handshake ACKs forwarded.
    let mut seen = Vec::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            seen.push(stale(&lab));
            std::thread::sleep(Duration::from_millis(100));
            seen.len() >= 5
                && seen[seen.len() - 5..]
                    .iter()
                    .all(|n| *n == seen[seen.len() - 1])
        }) && seen.last().is_some_and(|n| *n > 0),
        "host 1 got none of the half-sent requests, or its count never settled: {seen:?}"
    );
    let on_h1 = u32::try_from(seen.last().copied().unwrap_or(0)).unwrap_or(u32::MAX);
    ok(lab.signal_dprd(1, "TERM"));
    let dead = |lab: &Lab| {
        status(lab, 0)
            .peers
            .iter()
            .any(|p| p.peer.id == 1 && p.peer.state == "dead")
    };
    assert!(
        eventually(Duration::from_secs(5), || dead(&lab)),
        "h1 never dead at h0"
    );
    let lines = finish_half_posts(&go, &out);
    let failed = lines.iter().filter(|l| l.starts_with("error")).count();
    eprintln!("{on_h1} requests on h1 when its router stopped; client: {lines:?}");
    assert_eq!(
        failed as u32, on_h1,
        "exactly the connections on h1 are cut"
    );
    assert_eq!(
        stale(&lab) as u32,
        on_h1,
        "h1's stack still holds the cut ones"
    );
    ok(lab.start_dprd(1));
    ok(lab.wait_alive(Duration::from_secs(10)));
    assert!(
        eventually(Duration::from_secs(5), || stale(&lab) == 0
            && status(&lab, 1).open_connections == 0),
        "h1 still holds {} cut connections (open {})",
        stale(&lab),
        status(&lab, 1).open_connections
    );
    let (s0, s1) = (status(&lab, 0), status(&lab, 1));
    eprintln!(
        "cut notices: h0 sent {} flows, h1 aborted {} sockets",
        io(&s0, "cut_flows_sent"),
        io(&s1, "cut_sockets_aborted")
    );
    assert_eq!(io(&s0, "cut_flows_sent"), u64::from(on_h1));
    assert_eq!(io(&s1, "cut_sockets_aborted"), u64::from(on_h1));
    // Useful again: new connections through host 0 reach host 1.
    let served: Vec<String> = (0..10)
        .map(|_| curl(&lab, &[&format!("http://{}/?size=100", service_addr(0))]))
        .collect();
    assert!(
        served.iter().any(|o| o.starts_with("served-by h1")),
        "host 1 got no new connection: {served:?}"
    );
    lab.kill_extras();
}

fn check_recovered(lab: &Lab, lines: &[String], redirected: u64) {
    let s0 = status(lab, 0);
    eprintln!("client: {lines:?}\nh0 after: io {:?}", s0.io);
    assert!(redirected >= 8, "host 0 redirected only {redirected} of 12");
    assert_eq!(lines.len(), 12, "{lines:?}");
    for l in lines {
        assert!(l.starts_with("ok h"), "a connection broke: {l}");
    }
    let by_peers = lines.iter().filter(|l| *l != "ok h0").count() as u64;
    assert_eq!(by_peers, redirected);
    assert!(
        s0.io.get("routes_restored").copied().unwrap_or(0) >= redirected,
        "{:?}",
        s0.io
    );
    assert_eq!(s0.phase, "active");
}

/// The cluster key rolls (add key 2, make it sign, drop key 1; every host
/// reloaded one by one at each step) while redirected connections are open
/// mid-request and new ones keep arriving: the keyed tunnel's tags follow
/// the key ring, so no tunnelled packet is refused and no connection breaks.
#[test]
fn a_key_roll_under_load_drops_no_redirected_connection() {
    let Some(_g) = root_or_skip("key_roll") else {
        return;
    };
    let (mut lab, _) = overloaded_host0("", "tun");
    let base = event(&status(&lab, 0), "new_redirected");
    let (go, out) = start_half_posts(&mut lab, 12);
    let key_file = lab.dir.join("cluster.key");
    let first = |text: &str| -> String {
        text.lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    let k1 = first(&std::fs::read_to_string(&key_file).unwrap());
    let k2 = first(&dprd::keygen::new_key_file().unwrap());
    let mut fresh = 0;
    for ring in [
        format!("1 {k1}\n2 {k2}\n"),
        format!("2 {k2}\n1 {k1}\n"),
        format!("2 {k2}\n"),
    ] {
        std::fs::write(&key_file, &ring).unwrap();
        for i in 0..3 {
            let a = ok(lab.admin(i, "reload"));
            assert!(a.contains("\"ok\":true"), "h{i}: {a}");
            // A new connection between two hosts' reloads.
            let got = curl(&lab, &[&format!("http://{}/?size=100", service_addr(0))]);
            assert!(got.starts_with("served-by h"), "{got}");
            fresh += 1;
        }
    }
    let lines = finish_half_posts(&go, &out);
    let redirected = event(&status(&lab, 0), "new_redirected") - base;
    eprintln!("client: {lines:?}; h0 redirected {redirected} (of 12 + {fresh})");
    assert_eq!(lines.len(), 12, "{lines:?}");
    for l in &lines {
        assert!(l.starts_with("ok h"), "a connection broke: {l}");
    }
    assert!(
        lines.iter().filter(|l| *l != "ok h0").count() >= 8,
        "too few redirected to test anything: {lines:?}"
    );
    for i in 0..3 {
        let s = status(&lab, i);
        for k in ["tunnel_bad_tag", "tunnel_unknown_flow", "bad_tunnel"] {
            assert_eq!(drop_count(&s, k), 0, "h{i} {k}");
        }
    }
    lab.kill_extras();
}

#[test]
fn without_recovery_the_same_restart_breaks_them() {
    let Some(_g) = root_or_skip("restart_without_recovery") else {
        return;
    };
    // Host 0 restarts with recovery off.
    let (mut lab, cfg) = overloaded_host0("recover_on_start = false\n", "tun");
    let (lines, redirected) =
        restart_mid_request(&mut lab, 12, Some(&cfg), Duration::from_millis(200));
    let broken = lines.iter().filter(|l| l.starts_with("error")).count() as u64;
    eprintln!("client: {lines:?}");
    assert!(redirected >= 8, "host 0 redirected only {redirected} of 12");
    assert_eq!(
        broken, redirected,
        "without recovery every redirected connection breaks, the local ones live: {lines:?}"
    );
    lab.kill_extras();
}

#[test]
fn sighup_reload_adds_a_peer_and_changes_policy_without_dropping_connections() {
    let Some(_g) = root_or_skip("sighup_reload") else {
        return;
    };
    let mut lab = ok(Lab::create(threshold_one(3, "tun"), &programs()));
    for i in 0..3 {
        ok(lab.start_httpd(i));
    }
    // Host 0 starts knowing only h1, with a metrics endpoint on its
    // namespace's loopback.
    let full =
        lab.config_text(0)
            .replacen("[admin]\n", "[admin]\nmetrics = \"127.0.0.1:9109\"\n", 1);
    let peer2 = format!(
        "\n[[cluster.peers]]\nid = 2\nname = \"h2\"\ntunnel_addr = \"{}\"\nservice_addrs = [\"{}\"]\n",
        tunnel_addr(2),
        service_addr(2)
    );
    let first = full.replace(&peer2, "");
    assert_ne!(first, full, "the edit applied");
    ok(lab.start_dprd_with(0, &first));
    for i in 1..3 {
        ok(lab.start_dprd(i));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(status(&lab, 0).peers.iter().all(|p| p.peer.id != 2));
    load_host0(&mut lab, 2, 60);
    // Established connections across the reload: half a POST now, the
    // rest after.
    let (go, out) = start_half_posts(&mut lab, 6);
    // SIGHUP with h2 added and the policy changed to least-load.
    let new = full.replace("kind = \"threshold\"", "kind = \"least-load\"");
    std::fs::write(lab.config_path(0), &new).unwrap();
    let pid = lab.dprd_pid(0).unwrap();
    let st = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = status(&lab, 0);
        let h2 = s.peers.iter().find(|p| p.peer.id == 2);
        if s.policy == "least-load" && h2.is_some_and(|p| p.peer.state == "alive") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload not applied: {} {:?}",
            s.policy,
            s.peers
                .iter()
                .map(|p| (p.peer.id, p.peer.state.clone()))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every connection opened before the reload finishes.
    let lines = finish_half_posts(&go, &out);
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(lines.iter().all(|l| l.starts_with("ok h")), "{lines:?}");
    // Metrics: Prometheus text with the engine's counters.
    let h0 = lab.host_ns(0);
    let m = ok(lab.exec(
        &h0,
        "curl",
        &["-sS", "--max-time", "5", "http://127.0.0.1:9109/metrics"],
    ));
    for want in [
        "dpr_packets_total{verdict=\"forwarded\"}",
        "dpr_peer_state",
        "dpr_table_entries",
        "dpr_drops_total{reason=\"malformed\"}",
    ] {
        assert!(m.contains(want), "{want} missing from metrics:\n{m}");
    }
    lab.kill_extras();
}

/// New connections decided at host 0 and SYNs it took for retransmissions.
fn decisions_and_retransmits(s: &Status) -> (u64, u64) {
    (
        event(s, "new_local") + event(s, "new_redirected"),
        event(s, "syn_retransmits"),
    )
}

/// `n` requests to `addr`, one connection each, all from local port 40123.
/// The client reads each answer to the server's FIN, then closes with an
/// RST (`SO_LINGER` 0), so no TIME_WAIT socket of its own holds the 4-tuple
/// (a client that closes last has none either, but which side closes first
/// is a race with a client that stops at `Content-Length`).
const SAME_PORT_CLIENT: &str = r#"
import socket, struct, sys, time
addr, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(10)
    for _ in range(200):
        try:
            s.bind(("", 40123))
            break
        except OSError:
            time.sleep(0.01)
    try:
        s.connect((addr, 80))
        s.sendall(b"GET /?size=100 HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        print("ok" if b" 200 OK" in data else "bad " + repr(data[:60]))
    except Exception as e:
        print("error " + repr(e))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
"#;

/// A client that reuses its source port for one connection after another
/// (as busy clients do within seconds): every connection is a new one,
/// decided afresh by the policy, not taken for a retransmission of the
/// first and sent where it went.
fn a_client_reusing_its_port_gets_a_decision_per_connection(backend: &str) {
    let Some(_g) = root_or_skip("port_reuse") else {
        return;
    };
    let mut lab = cluster(threshold_one(3, backend));
    load_host0(&mut lab, 2, 60);
    let before = status(&lab, 0);
    let n = 30;
    let ns = lab.client_ns();
    let out = ok(lab.exec(
        &ns,
        "python3",
        &[
            "-c",
            SAME_PORT_CLIENT,
            &service_addr(0).to_string(),
            &n.to_string(),
        ],
    ));
    let codes: Vec<&str> = out.lines().collect();
    assert_eq!(codes.len(), n, "{out}");
    assert!(codes.iter().all(|c| c.starts_with("ok")), "{out}");
    let after = status(&lab, 0);
    let (d0, r0) = decisions_and_retransmits(&before);
    let (d1, r1) = decisions_and_retransmits(&after);
    eprintln!(
        "decisions {}, retransmissions {}, new incarnations {}",
        d1 - d0,
        r1 - r0,
        event(&after, "syn_new_incarnations") - event(&before, "syn_new_incarnations")
    );
    assert_eq!(d1 - d0, n as u64, "one decision per connection");
    assert!(
        event(&after, "syn_new_incarnations") - event(&before, "syn_new_incarnations")
            >= n as u64 - 1,
        "every connection after the first reused an ended 4-tuple"
    );
}

/// `wrk` with `Connection: close` through a redirecting host: at least
/// 99 % of the connections are decided by the policy (the rest are SYNs
/// the client really retransmitted).
fn wrk_with_connection_close_is_decided_per_connection(backend: &str) {
    let Some(_g) = root_or_skip("wrk_close") else {
        return;
    };
    let mut lab = cluster(LabSpec {
        service_ms: 0,
        ..threshold_one(3, backend)
    });
    load_host0(&mut lab, 2, 60);
    let before = status(&lab, 0);
    let ns = lab.client_ns();
    // DPR_WRK_SECS=30 for the issue's 30 s run; 4 s in the suite.
    let secs = std::env::var("DPR_WRK_SECS")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(4)
        .clamp(1, 600);
    let out = ok(lab.exec(
        &ns,
        "wrk",
        &[
            "-t1",
            "-c10",
            &format!("-d{secs}s"),
            "--timeout",
            "5s",
            "-H",
            "Connection: close",
            &format!("http://{}/?size=100", service_addr(0)),
        ],
    ));
    let after = status(&lab, 0);
    let (d0, r0) = decisions_and_retransmits(&before);
    let (d1, r1) = decisions_and_retransmits(&after);
    let (d, r) = (d1 - d0, r1 - r0);
    eprintln!(
        "{out}\ndecisions {d}, retransmissions followed {r}, new incarnations {}",
        event(&after, "syn_new_incarnations") - event(&before, "syn_new_incarnations")
    );
    assert!(d > 100, "wrk made too few connections to judge: {d}\n{out}");
    assert!(
        d as f64 >= 0.99 * (d + r) as f64,
        "only {d} of {} new connections decided",
        d + r
    );
}

/// The default lab (threshold 4, capacity 1) under its default skewed load
/// for `secs`; per host: connections the client sent it, its dprd's
/// counters, and its decisions joined with its web server's trace.
fn skewed_ground_truth(secs: f64) -> Vec<(usize, Status, GroundTruth)> {
    let lab = cluster(spec("tun"));
    let threshold = lab.spec.threshold;
    let r = ok(lab.load(150.0, secs, 0.7, "ground truth"));
    (0..lab.spec.hosts)
        .map(|i| {
            let received = r.get(&service_addr(i).to_string()).map_or(0, |t| t.sent);
            let g = ok(lab.ground_truth(i, threshold));
            eprintln!("h{i}: received {received}, {g:?}");
            (received, status(&lab, i), g)
        })
        .collect()
}

/// Every connection a host received has one decision in its log, served
/// and redirected as its counters say. Counts only, no timing.
#[test]
fn decision_logs_match_the_counters() {
    let Some(_g) = root_or_skip("decision_logs") else {
        return;
    };
    for (i, (received, s, g)) in skewed_ground_truth(4.0).into_iter().enumerate() {
        assert_eq!(g.decisions, received, "h{i}: one decision per connection");
        assert_eq!(
            (g.decisions - g.redirected) as u64,
            event(&s, "new_local"),
            "h{i}: local decisions against new_local"
        );
        assert_eq!(
            g.redirected as u64,
            event(&s, "new_redirected"),
            "h{i}: redirects against new_redirected"
        );
    }
}

/// Hosts under their threshold serve locally (issue 13's bar: under 2% of
/// the connections a host receives while under its threshold, by its web
/// server's own count, are redirected). In the skewed lab h1..h3 receive a
/// few connections each and h0's overflow: they stay well under the
/// threshold of 4, and on a busy machine too the estimate would have to be
/// off by two or more connections to send one away. Every decision is
/// also checked against the policy's rule with the load it used: under
/// the threshold it is local (counts, no timing).
/// h0, which lives at its threshold, is reported, not asserted: its
/// misjudgements are at the boundary (the engine counts a connection until
/// the client's FIN, the server until its own close: 2.0 % in release
/// builds, 3–5 % in debug builds).
#[test]
fn hosts_under_their_threshold_serve_locally() {
    let Some(_g) = root_or_skip("under_threshold") else {
        return;
    };
    let lab = cluster(spec("tun"));
    let threshold = lab.spec.threshold;
    let r = ok(lab.load(150.0, 6.0, 0.7, "under threshold"));
    for i in 0..lab.spec.hosts {
        let joined = ok(lab.decisions_joined(i));
        let received = r.get(&service_addr(i).to_string()).map_or(0, |t| t.sent);
        assert_eq!(joined.len(), received, "h{i}: one decision per connection");
        for d in &joined {
            assert!(
                d.local || d.used >= threshold,
                "h{i}: redirected with load {} under the threshold {threshold}",
                d.used
            );
        }
        let g = GroundTruth::of(&joined, threshold);
        eprintln!(
            "h{i}: redirected {} of {} received under the threshold ({:.1}%), mean |used - true| {:.2}, mean used - true {:+.2}, app closes {}",
            g.redirected_under,
            g.under,
            100.0 * g.redirected_under_share(),
            g.mean_abs_error,
            g.mean_error,
            io(&status(&lab, i), "app_closes"),
        );
        // The engines learn of each end from the server's own close
        // (`[load] app_closes`), not a client round trip later.
        assert!(
            io(&status(&lab, i), "app_closes") > 0,
            "h{i}: no close counted by the kernel: {}",
            lab.log_tail(i)
        );
        if i > 0 {
            assert!(
                g.redirected_under_share() < 0.02,
                "h{i} redirected {} of {} connections received under its threshold",
                g.redirected_under,
                g.under
            );
        }
    }
}

/// Join-idle between real daemons: hosts that fall idle advertise it over
/// the cluster protocol, the overloaded host hears it and redirects; every
/// connection is answered.
#[test]
fn join_idle_hosts_advertise_and_take_the_overflow() {
    let Some(_g) = root_or_skip("join_idle") else {
        return;
    };
    let lab = cluster(LabSpec {
        policy: "join-idle".into(),
        threshold: 2.0,
        ..spec("tun")
    });
    let r = ok(lab.load(150.0, 3.0, 0.7, "join-idle"));
    let errors: usize = r.values().map(|t| t.errors).sum();
    assert_eq!(errors, 0);
    let sent: u64 = (1..4)
        .map(|i| io(&status(&lab, i), "idle_adverts_sent"))
        .sum();
    let s0 = status(&lab, 0);
    eprintln!(
        "peers sent {sent} idle advertisements; h0 received {} and redirected {}",
        io(&s0, "idle_adverts_received"),
        event(&s0, "new_redirected")
    );
    assert_eq!(s0.policy, "join-idle");
    assert!(sent > 0, "no peer advertised");
    assert!(io(&s0, "idle_adverts_received") > 0, "h0 heard none");
    assert!(event(&s0, "new_redirected") > 0, "h0 redirected nothing");
}

/// Every test runs on the TUN backend and on AF_XDP in native and generic mode.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod tun {
            $( #[test] fn $name() { super::$name("tun") } )*
        }
        mod af_xdp_native {
            $( #[test] fn $name() { super::$name("af-xdp-native") } )*
        }
        mod af_xdp_generic {
            $( #[test] fn $name() { super::$name("af-xdp-generic") } )*
        }
    };
}

on_every_backend!(
    curl_over_a_redirected_connection_is_answered_as_the_address_it_used,
    twenty_megabytes_each_way_over_redirected_connections_without_fragments,
    threshold_policy_under_skewed_load_evens_out_served_counts,
    a_killed_host_gets_no_new_connections_after_dead_after,
    ip_in_ip_from_a_non_peer_is_not_delivered_and_is_counted,
    a_spoofed_peer_address_opens_connections_only_without_the_key,
    malformed_burst_at_the_service_port_is_counted_and_service_goes_on,
    drain_under_load_fails_no_established_connection,
    sigterm_and_a_failed_setup_leave_nothing_behind,
    a_client_reusing_its_port_gets_a_decision_per_connection,
    wrk_with_connection_close_is_decided_per_connection,
    a_host_back_after_its_router_was_down_drops_the_connections_cut_meanwhile,
);

#[test]
fn an_address_layout_that_breaks_arp_is_reported_at_start() {
    let Some(_g) = root_or_skip("arp_layout") else {
        return;
    };
    let mut lab = ok(Lab::create(threshold_one(2, "tun"), &programs()));
    // Host 0 the wrong way round: the service address is the subnet's
    // primary address, the tunnel address a secondary one.
    let ns = lab.host_ns(0);
    let (svc, tun) = (service_addr(0), tunnel_addr(0));
    for args in [
        vec!["addr", "del", &format!("{svc}/32"), "dev", "eth0"],
        vec!["addr", "del", &format!("{tun}/24"), "dev", "eth0"],
        vec!["addr", "add", &format!("{svc}/24"), "dev", "eth0"],
        vec!["addr", "add", &format!("{tun}/24"), "dev", "eth0"],
    ] {
        let args: Vec<&str> = args.iter().map(|s| s.as_ref()).collect();
        ok(lab.exec(&ns, "ip", &args));
    }
    ok(lab.start_dprd(0));
    ok(lab.start_dprd(1));
    let log = std::fs::read_to_string(lab.log(0)).unwrap();
    assert!(
        log.contains(&format!("ARP requests for peer {}", tunnel_addr(1))),
        "no warning in h0's log:\n{log}"
    );
    // The right layout (host 1, as the lab builds it) is not reported.
    let log1 = std::fs::read_to_string(lab.log(1)).unwrap();
    assert!(!log1.contains("ARP requests for peer"), "{log1}");
}

/// Two queues per host, an engine each: the kernel spreads the TUN's
/// packets over both queues by its own hash, so about half of them reach a
/// worker whose engine does not own their flow and cross to the owner's
/// ring. Every connection is still decided once, by its owner, and no
/// packet of a redirected connection is delivered here by an engine that
/// does not know it.
#[test]
fn two_queues_hand_each_flow_to_the_engine_that_owns_it() {
    let Some(_g) = root_or_skip("two_queues") else {
        return;
    };
    let lab = cluster(LabSpec {
        queues: 2,
        ..threshold_one(3, "tun")
    });
    let r = ok(lab.load(100.0, 4.0, 0.8, "skewed"));
    let errors: usize = r.values().map(|t| t.errors).sum();
    assert_eq!(errors, 0, "{r:?}");
    let mut handed = 0;
    for i in 0..3 {
        let s = status(&lab, i);
        let received = r.get(&service_addr(i).to_string()).map_or(0, |t| t.sent);
        let joined = ok(lab.decisions_joined(i));
        assert_eq!(joined.len(), received, "h{i}: one decision per connection");
        assert_eq!(
            event(&s, "unknown_flow_delivered"),
            0,
            "h{i}: a packet reached an engine that does not own its flow"
        );
        assert_eq!(io(&s, "ring_full"), 0, "h{i}");
        assert_eq!(
            io(&s, "handed_over"),
            io(&s, "taken_over"),
            "h{i}: every packet handed over was taken over"
        );
        handed += io(&s, "handed_over");
    }
    assert!(event(&status(&lab, 0), "new_redirected") > 0);
    eprintln!("packets handed between the queues' workers: {handed}");
    assert!(
        handed > 0,
        "with two queues, some packets cross between workers"
    );
}

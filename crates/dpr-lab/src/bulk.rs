//! Bulk transfer through a redirect: a 20 MB download from the client's
//! namespace, along a [`BulkPath`], in MB/s ([`download_mb_s`]); and the
//! hidden `dpr-lab bulk` that compares the paths on a lab of its own.
//!
//! ```text
//!  direct:    client ── GET ──► B (B's service address) ── 20 MB ──► client
//!  redirect:  client ── GET ──► A (A's service address) ═ tunnel ═► B serves it
//!             client ◄──────────── 20 MB, from B as A's address ────┘
//!             (the client's ACKs take the same way as its GET: through A)
//! ```
//!
//! The transfer is `curl` in the client's namespace (bounded: 60 s), the
//! answer `dpr-lab httpd`'s. A redirect that was served by the host it was
//! sent to is an error, not a figure: the answer names who served it.

use crate::lab::{Lab, LabSpec, Programs, service_addr};
use crate::stop;
use std::time::{Duration, Instant};

/// Bytes of the download.
pub const BULK_BYTES: u64 = 20_000_000;

/// The longest a download may take (s) before it counts as failed.
const MAX_SECS: u32 = 60;

/// Which way a bulk download goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkPath {
    /// To host `server`'s own service address: no router in the way.
    Direct {
        /// The serving host.
        server: usize,
    },
    /// To host `via`'s service address, which must redirect it to a peer
    /// (its dprd running and loaded so that it does).
    Redirect {
        /// The host the client connects to.
        via: usize,
    },
}

/// Downloads [`BULK_BYTES`] along `path` from the client's namespace and
/// returns the rate in MB/s (10^6 bytes a second, as `curl` measured it:
/// from the request to the last byte). Errors when the transfer is short,
/// fails, takes longer than 60 s, or (for a redirect) was served by the
/// host it was sent to.
pub fn download_mb_s(lab: &Lab, path: BulkPath) -> Result<f64, String> {
    transfer_mb_s(lab, path, None)
}

/// The same the other way: the client sends [`BULK_BYTES`] in a POST along
/// `path` (the web server reads them all, then answers), in MB/s. Here the
/// bulk data itself crosses the redirecting host: with TUN offloads, as
/// 64 KiB super-packets.
pub fn upload_mb_s(lab: &Lab, path: BulkPath) -> Result<f64, String> {
    let file = lab.dir.join("bulk-upload.bin");
    let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    if len != BULK_BYTES {
        let data = vec![b'u'; usize::try_from(BULK_BYTES).unwrap_or(0)];
        std::fs::write(&file, data).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    transfer_mb_s(lab, path, Some(&file))
}

fn transfer_mb_s(
    lab: &Lab,
    path: BulkPath,
    upload: Option<&std::path::Path>,
) -> Result<f64, String> {
    let to = match path {
        BulkPath::Direct { server } => server,
        BulkPath::Redirect { via } => via,
    };
    let url = match upload {
        None => format!("http://{}/?size={BULK_BYTES}", service_addr(to)),
        Some(_) => format!("http://{}/", service_addr(to)),
    };
    let max = MAX_SECS.to_string();
    let (what, field) = match upload {
        None => ("size_download", "speed_download"),
        Some(_) => ("size_upload", "speed_upload"),
    };
    let w = format!("\nbulk %{{{what}}} %{{{field}}}\n");
    let data = upload.map(|f| format!("@{}", f.display()));
    let mut args = vec![
        "-sS",
        "--max-time",
        &max,
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-w",
        &w,
    ];
    if let Some(d) = &data {
        args.extend(["-H", "Expect:", "--data-binary", d]);
    }
    args.push(&url);
    let out = lab.exec(&lab.client_ns(), "curl", &args)?;
    let (size, speed) = parse_curl(&out).ok_or_else(|| format!("curl said: {out}"))?;
    if size != BULK_BYTES {
        return Err(format!("{url}: {size} bytes of {BULK_BYTES}"));
    }
    let served = served_by(&out).ok_or_else(|| format!("{url}: no X-Served-By"))?;
    if let BulkPath::Redirect { via } = path {
        if served == format!("h{via}") {
            return Err(format!("{url}: served by h{via} itself, not redirected"));
        }
    }
    Ok(speed / 1e6)
}

/// `(size_download, speed_download)` from the `-w` line.
fn parse_curl(out: &str) -> Option<(u64, f64)> {
    let l = out.lines().rev().find(|l| l.starts_with("bulk "))?;
    let mut f = l.split_whitespace().skip(1);
    let size = f.next()?.parse::<f64>().ok()?;
    let speed = f.next()?.parse::<f64>().ok()?;
    (size.is_finite() && size >= 0.0 && speed.is_finite()).then_some((size as u64, speed))
}

/// The `X-Served-By` header of the dumped response.
fn served_by(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("x-served-by")
                .then(|| v.trim().to_string())
        })
        .filter(|s| !s.is_empty())
}

/// The options of the hidden `dpr-lab bulk`.
#[derive(Debug, Clone, clap::Args)]
pub struct BulkArgs {
    /// Downloads per path, 1..=20.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub runs: u64,
    /// Backends of the redirect rows: tun, tun-no-offload, tun-qlen500 (the
    /// TUN queue at the kernel's default length), af-xdp-native,
    /// af-xdp-generic (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "tun,tun-no-offload,af-xdp-native"
    )]
    pub backends: Vec<String>,
    /// Also `tcpdump -vv` the redirect's first 400 packets on A's and B's
    /// uplinks and count checksums it calls incorrect.
    #[arg(long)]
    pub check_checksums: bool,
    /// Also print, per redirected transfer, the TCP and IP counters
    /// (`nstat`) that moved in the client's, A's and B's namespaces, and
    /// the drop counters of their links (where segments went).
    #[arg(long)]
    pub counters: bool,
}

/// Absolute `nstat` counters and link drop counters of namespace `ns`.
fn counters_of(lab: &Lab, ns: &str) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    if let Ok(t) = lab.exec(ns, "nstat", &["-asz"]) {
        for l in t.lines() {
            let mut f = l.split_whitespace();
            if let (Some(k), Some(v)) = (f.next(), f.next().and_then(|v| v.parse().ok())) {
                m.insert(k.to_string(), v);
            }
        }
    }
    if let Ok(t) = lab.exec(ns, "ip", &["-j", "-s", "link"]) {
        if let Ok(serde_json::Value::Array(links)) = serde_json::from_str(&t) {
            for l in links {
                let name = l["ifname"].as_str().unwrap_or("?").to_string();
                for dir in ["rx", "tx"] {
                    for k in ["dropped", "errors", "packets"] {
                        if let Some(v) = l["stats64"][dir][k].as_u64() {
                            m.insert(format!("{name}.{dir}_{k}"), v);
                        }
                    }
                }
            }
        }
    }
    m
}

/// What moved between two [`counters_of`] snapshots (skipping the
/// uninteresting), as `name +delta` words.
fn moved(
    a: &std::collections::BTreeMap<String, u64>,
    b: &std::collections::BTreeMap<String, u64>,
) -> String {
    let keep = |k: &str| {
        [
            "Retrans", "Reorder", "OFO", "SACK", "Lost", "Drop", "Timeout", "Prune", "Collapse",
            "Discard", "Fail", "dropped", "errors", "packets", "InSegs", "OutSegs", "DSACK",
            "Recovery", "Undo", "Spurious",
        ]
        .iter()
        .any(|w| k.contains(w))
    };
    b.iter()
        .filter(|(k, _)| keep(k))
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(a.get(k).copied().unwrap_or(0));
            (d > 0).then(|| format!("{k} +{d}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `[backend]` section of a row.
fn backend_section(backend: &str) -> Result<&'static str, String> {
    Ok(match backend {
        "tun" | "tun-qlen500" => "[backend]\nkind = \"tun\"\n",
        "tun-no-offload" => "[backend]\nkind = \"tun\"\ntun_offload = false\n",
        "af-xdp-native" => "[backend]\nkind = \"af-xdp\"\nxdp_mode = \"native\"\n",
        "af-xdp-generic" => "[backend]\nkind = \"af-xdp\"\nxdp_mode = \"generic\"\n",
        other => return Err(format!("--backends: unknown {other:?}")),
    })
}

/// Starts A (h0) and B (h1) on `backend`, A loaded so that it redirects
/// every new connection: a tiny capacity and one idle connection open.
fn start_redirecting(lab: &mut Lab, backend: &str) -> Result<(), String> {
    let section = backend_section(backend)?;
    let cfg = |lab: &Lab, i: usize| {
        let t = lab.config_text(i);
        let cut = t.find("[backend]").unwrap_or(t.len());
        let (head, tail) = t.split_at(cut);
        // The lab's own [backend] section ends at the next section.
        let rest = tail
            .get(1..)
            .and_then(|r| r.find("\n[").map(|k| &r[k + 1..]))
            .unwrap_or("");
        format!("{head}{rest}\n{section}")
    };
    for i in [1, 0] {
        let _ = lab.signal_dprd(i, "TERM");
    }
    let b = cfg(lab, 1);
    lab.start_dprd_with(1, &b)?;
    let a = cfg(lab, 0).replace("[load]\n", "[load]\ncapacity = 0.0001\n");
    lab.start_dprd_with(0, &a)?;
    lab.wait_alive(Duration::from_secs(10))?;
    if backend == "tun-qlen500" {
        // The TUN queue as it was before dprd lengthened it: the kernel's
        // default (the device resizes its queues at once).
        for i in [0, 1] {
            lab.exec(
                &lab.host_ns(i),
                "ip",
                &["link", "set", "dpr0", "txqueuelen", "500"],
            )?;
        }
    }
    let ns = lab.client_ns();
    let script = format!("exec 3<>/dev/tcp/{}/80; sleep 100", service_addr(0));
    lab.spawn_in(&ns, "bash", &["-c", &script])?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.status(0)?.open_connections < 1 {
        if Instant::now() > deadline {
            return Err("A never saw its idle connection".into());
        }
        stop::sleep(Duration::from_millis(20))?;
    }
    stop::sleep(Duration::from_millis(300))?;
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs `tcpdump -vv` on `ns`'s interface `dev` (packets matching
/// `filter`: what the daemon wrote) for up to 400 packets while one
/// redirected upload runs; returns (packets printed, checksums it calls
/// incorrect on packets of at most 1,500 bytes, on longer ones).
fn checksum_check(
    lab: &mut Lab,
    ns: &str,
    dev: &str,
    filter: &str,
) -> Result<(usize, usize, usize), String> {
    let file = lab.dir.join(format!("tcpdump-{ns}-{dev}.txt"));
    let f = file.to_string_lossy().into_owned();
    let script =
        format!("exec timeout 20 tcpdump -l -n -vv -i {dev} -c 400 '{filter}' > {f} 2>/dev/null");
    lab.spawn_in(ns, "sh", &["-c", &script])?;
    stop::sleep(Duration::from_millis(500))?;
    upload_mb_s(lab, BulkPath::Redirect { via: 0 })?;
    stop::sleep(Duration::from_millis(500))?;
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let pkts = text.lines().filter(|l| l.contains(" IP ")).count();
    let (bad, bad_super) = incorrect_checksums(&text);
    Ok((pkts, bad, bad_super))
}

/// Checksums `tcpdump -vv` calls incorrect: (on packets of at most 1,500
/// bytes, on longer ones). A longer one is a super-packet of the TUN's
/// offloads (merged segments for the local stack), whose TCP checksum is
/// partial by design, as any offloaded packet's is before the NIC; the
/// length is the last IP header's before the complaint.
fn incorrect_checksums(text: &str) -> (usize, usize) {
    let mut len = 0usize;
    let (mut small, mut big) = (0, 0);
    for l in text.lines() {
        if let Some(i) = l.rfind("length ") {
            let digits: String = l[i + 7..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse() {
                len = n;
            }
        }
        if l.contains("incorrect") {
            if len > 1500 {
                big += 1;
            } else {
                small += 1;
            }
        }
    }
    (small, big)
}

/// `dpr-lab bulk`: a lab of two hosts and a client; the download direct to
/// B, then through A redirecting to B on each backend; prints MB/s and the
/// ratios (the caller installs [`stop`]'s signal handling first).
pub fn main(args: &BulkArgs) -> Result<(), String> {
    for b in &args.backends {
        backend_section(b)?;
    }
    if !dpr_io::host::can_set_up() {
        return Err(crate::lab::not_root_message());
    }
    let programs = Programs::beside_current_exe()?;
    // AF_XDP receives raw frames: with it in the table, checksum offload
    // is off on every veth of the lab (and so TSO), for every row alike.
    let xdp = args.backends.iter().any(|b| b.starts_with("af-xdp"));
    let spec = LabSpec {
        hosts: 2,
        threshold: 1000.0,
        service_ms: 0,
        workers: 64,
        report_interval_ms: 100,
        dead_after_ms: 5000,
        backend: if xdp { "af-xdp-native" } else { "tun" }.into(),
        ..LabSpec::default()
    };
    let mut lab = Lab::create(spec, &programs)?;
    lab.start_httpd(0)?;
    lab.start_httpd(1)?;
    let runs = usize::try_from(args.runs).unwrap_or(1);
    let mut direct = Vec::new();
    for _ in 0..runs {
        direct.push(download_mb_s(&lab, BulkPath::Direct { server: 1 })?);
    }
    let base = median(&mut direct.clone());
    println!(
        "bulk: {BULK_BYTES} bytes, client ← B; median of {runs} (min–max); {} CPUs; veth tx offloads {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if xdp { "off" } else { "on" }
    );
    println!("| path | MB/s | ratio to direct |");
    println!("|---|---|---|");
    let row = |name: &str, v: &[f64]| {
        let mut s = v.to_vec();
        let m = median(&mut s);
        println!(
            "| {name} | {m:.0} ({:.0}–{:.0}) | {:.2} |",
            s.first().copied().unwrap_or(0.0),
            s.last().copied().unwrap_or(0.0),
            m / base.max(1e-9)
        );
    };
    let mut direct_up = Vec::new();
    for _ in 0..runs {
        direct_up.push(upload_mb_s(&lab, BulkPath::Direct { server: 1 })?);
    }
    let base_up = median(&mut direct_up.clone());
    let row_up = |name: &str, v: &[f64]| {
        let mut s = v.to_vec();
        let m = median(&mut s);
        println!(
            "| {name} | {m:.0} ({:.0}–{:.0}) | {:.2} |",
            s.first().copied().unwrap_or(0.0),
            s.last().copied().unwrap_or(0.0),
            m / base_up.max(1e-9)
        );
    };
    row("download, direct to B", &direct);
    row_up("upload, direct to B", &direct_up);
    for backend in &args.backends {
        eprintln!("bulk: redirect on {backend}");
        start_redirecting(&mut lab, backend)?;
        let mut v = Vec::new();
        let mut up = Vec::new();
        let names = [lab.client_ns(), lab.host_ns(0), lab.host_ns(1)];
        let snap = |lab: &Lab| -> Vec<_> { names.iter().map(|n| counters_of(lab, n)).collect() };
        let report = |what: &str, a: &[std::collections::BTreeMap<String, u64>], b: &[_]| {
            for ((n, x), y) in ["client", "A", "B"].iter().zip(a).zip(b) {
                eprintln!("bulk: {what} ({backend}), {n}: {}", moved(x, y));
            }
        };
        for _ in 0..runs {
            let s0 = args.counters.then(|| snap(&lab));
            v.push(download_mb_s(&lab, BulkPath::Redirect { via: 0 })?);
            let s1 = args.counters.then(|| snap(&lab));
            up.push(upload_mb_s(&lab, BulkPath::Redirect { via: 0 })?);
            if let (Some(s0), Some(s1)) = (s0, s1) {
                let s2 = snap(&lab);
                report("download", &s0, &s1);
                report("upload", &s1, &s2);
            }
        }
        if let Ok(s) = lab.status(0) {
            let io = |k: &str| s.io.get(k).copied().unwrap_or(0);
            eprintln!(
                "bulk: A's io: routed {} in {} calls, gso {} → {} segments, offload errors {}",
                io("tun_routed_tx"),
                io("tun_routed_calls"),
                io("tun_gso_packets"),
                io("tun_gso_segments"),
                io("tun_offload_errors")
            );
        }
        if args.counters {
            for i in [0, 1] {
                if let Ok(s) = lab.status(i) {
                    let all: Vec<String> =
                        s.io.iter()
                            .filter(|(_, v)| **v > 0)
                            .map(|(k, v)| format!("{k} {v}"))
                            .collect();
                    eprintln!("bulk: h{i}'s io ({backend}): {}", all.join(", "));
                }
            }
        }
        row(&format!("download, redirect A → B, {backend}"), &v);
        row_up(&format!("upload, redirect A → B, {backend}"), &up);
        if args.check_checksums {
            // What A's daemon sent B (the tunnel, outer and inner headers),
            // and what B's daemon wrote into its TUN (the inner packets).
            let tunnel = "ip proto 47 or ip proto 4";
            let (a, b) = (lab.host_ns(0), lab.host_ns(1));
            let (pa, ba, sa) = checksum_check(&mut lab, &a, "eth0", tunnel)?;
            let (pb, bb, sb) = checksum_check(
                &mut lab,
                &b,
                "dpr0",
                "tcp and not (ip proto 47 or ip proto 4)",
            )?;
            println!(
                "checksums ({backend}, tcpdump -vv): A's uplink, tunnel: {pa} packets, {ba} incorrect (+{sa} partial on super-packets); B's TUN, inner: {pb} packets, {bb} incorrect (+{sb} partial on super-packets)"
            );
        }
        lab.kill_extras();
        for i in [0, 1] {
            let _ = lab.signal_dprd(i, "TERM");
        }
    }
    if !xdp {
        // The direct rows above had veth segmentation offloads (TSO: B's
        // stack and the client's send 64 KiB super-frames end to end);
        // the redirect's segments are cut at A. The same direct path
        // with them off, as in the AF_XDP lab, for the fair comparison.
        let mut namespaces: Vec<String> = (0..2).map(|i| lab.host_ns(i)).collect();
        namespaces.push(lab.client_ns());
        for ns in &namespaces {
            lab.exec(ns, "ethtool", &["-K", "eth0", "tx", "off"])?;
        }
        let (mut d, mut u) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            d.push(download_mb_s(&lab, BulkPath::Direct { server: 1 })?);
            u.push(upload_mb_s(&lab, BulkPath::Direct { server: 1 })?);
        }
        row("download, direct to B, veth tx offloads off", &d);
        row_up("upload, direct to B, veth tx offloads off", &u);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_curl_printed() {
        let out = "HTTP/1.1 200 OK\r\nContent-Length: 20000000\r\nX-Served-By: h1\r\nConnection: close\r\n\r\n\nbulk 20000000 512345678.000\n";
        assert_eq!(parse_curl(out), Some((20_000_000, 512_345_678.0)));
        assert_eq!(served_by(out).as_deref(), Some("h1"));
        assert_eq!(parse_curl("curl: (7) Failed to connect"), None);
        assert_eq!(parse_curl("bulk x 1"), None);
        assert_eq!(served_by("HTTP/1.1 200 OK\r\n\r\n"), None);
    }

    #[test]
    fn incorrect_checksums_are_told_apart_by_length() {
        let t = "10:00:00.1 IP (tos 0x0, ttl 63, id 1, offset 0, flags [DF], proto TCP (6), length 1500)
    198.18.0.200.40000 > 198.18.0.1.80: Flags [.], cksum 0x1 (incorrect -> 0x2), seq 1:1461, length 1460
10:00:00.2 IP (tos 0x0, ttl 63, id 2, offset 0, flags [DF], proto TCP (6), length 4380)
    198.18.0.200.40000 > 198.18.0.1.80: Flags [.], cksum 0x1 (incorrect -> 0x2), seq 1461:5801, length 4340
10:00:00.3 IP (tos 0x0, ttl 63, id 3, offset 0, flags [DF], proto TCP (6), length 52)
    198.18.0.200.40000 > 198.18.0.1.80: Flags [.], cksum 0x3 (correct), ack 1, length 0";
        assert_eq!(incorrect_checksums(t), (1, 1));
        assert_eq!(incorrect_checksums(""), (0, 0));
    }

    #[test]
    fn moved_names_what_grew_and_skips_the_rest() {
        let m = |v: &[(&str, u64)]| -> std::collections::BTreeMap<String, u64> {
            v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
        };
        let a = m(&[
            ("TcpRetransSegs", 5),
            ("dpr0.tx_dropped", 7),
            ("IpForwarding", 1),
        ]);
        let b = m(&[
            ("TcpRetransSegs", 9),
            ("dpr0.tx_dropped", 7),
            ("IpForwarding", 2),
            ("TcpExtTCPOFOQueue", 3),
        ]);
        assert_eq!(moved(&a, &b), "TcpExtTCPOFOQueue +3, TcpRetransSegs +4");
        // A counter that went down (a device recreated) is no movement.
        assert_eq!(moved(&b, &a), "");
    }

    #[test]
    fn backends_are_named_or_refused() {
        assert!(backend_section("tun-no-offload").is_ok_and(|s| s.contains("tun_offload = false")));
        assert!(backend_section("dpdk").is_err());
        assert!(backend_section("tun-qlen500").is_ok_and(|s| s.contains("\"tun\"")));
    }
}

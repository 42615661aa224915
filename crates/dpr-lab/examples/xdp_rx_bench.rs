//! Receive rate of an AF_XDP socket behind dpr's XDP program, native vs
//! generic mode, against a plain `AF_PACKET` socket on the same path, in one
//! run (root).
//!
//! Two network namespaces joined by a veth pair (198.18.50.0/24). A
//! generator in `b` sends 60-byte TCP SYNs to the service
//! 198.18.50.200:9000 as fast as it can: by default in the kernel
//! (`dpr_xdp::tools::LiveFrameGenerator`: live-frame `BPF_PROG_TEST_RUN` of an `XDP_TX`
//! program, so the veth's NAPI runs on the generator's core, as it would on
//! a NIC's), or with `--gen xsk` from an AF_XDP socket (copy mode, batches
//! of 64; slower). In `a`, for each receiver in turn: the program attached
//! in native or generic mode with an AF_XDP socket on queue 0 (8192 receive
//! frames) counting and dropping frames, sleeping in `poll` when idle; or
//! no program and an `AF_PACKET` socket (8 MiB buffer) bound to the veth,
//! one frame per `recv` (the kernel then drops the frames at routing:
//! 198.18.50.200 is not local and forwarding is off). The receiver's
//! veth has GRO on, which gives it the NAPI instance `XDP_TX` into a veth
//! needs. Each run warms up 0.3 s, then counts for `--seconds` (default 2).
//! Bounded: the generator stops when the receiver is done, or after 10 s.
//! "generator pkt/s" counts frames handed to the veth, including those it
//! dropped because the receiver's ring was full.
//!
//! `cargo run --release -p dpr-lab --example xdp-rx-bench -- [--seconds N] [--threaded-napi] [--pin] [--gen live|xsk]`

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dpr_lab::netns::{self, VethPair, in_netns};
use dpr_xdp::tools::{self, LiveFrameGenerator, PacketSocket};
use dpr_xdp::xsk::{RxAction, XskConfig, XskSocket};
use dpr_xdp::{ProgramConfig, RouterProgram, XdpMode, ifindex};

const SERVICE: Ipv4Addr = Ipv4Addr::new(198, 18, 50, 200);
const PORT: u16 = 9000;
/// `--pin`: receiver on CPU 0, generator on CPU 1.
static PIN: AtomicBool = AtomicBool::new(false);
/// `--gen xsk`: generate with an AF_XDP socket instead of live frames.
static GEN_XSK: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Receiver {
    XdpNative,
    XdpGeneric,
    AfPacket,
}

struct RunResult {
    received: u64,
    secs: f64,
    sent_rate: f64,
    note: String,
}

fn syn_frame(pair: &VethPair) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&PORT.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x02;
    let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&pair.addr_b.octets());
    ip.extend_from_slice(&SERVICE.octets());
    let mut f = Vec::new();
    f.extend_from_slice(&pair.mac_a);
    f.extend_from_slice(&pair.mac_b);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp);
    f.resize(60, 0);
    f
}

/// Binds, retrying `EBUSY` for up to 2 s: a socket closed by the previous
/// run is released by the kernel asynchronously.
fn bind_retry(ifx: u32, cfg: &XskConfig) -> Result<XskSocket, dpr_xdp::Error> {
    let mut tries = 0;
    loop {
        match XskSocket::bind(ifx, 0, cfg) {
            Err(dpr_xdp::Error::Syscall { source, .. })
                if source.raw_os_error() == Some(libc_ebusy()) && tries < 100 =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

const fn libc_ebusy() -> i32 {
    16 // EBUSY on Linux
}

/// Transmits until `stop` (or 10 s); returns packets sent and seconds.
fn generate(pair: &VethPair, ready: mpsc::Receiver<()>, stop: &AtomicBool) -> (u64, f64) {
    if PIN.load(Ordering::Relaxed) {
        let _ = tools::pin_current_thread(1);
    }
    let Ok(()) = ready.recv_timeout(Duration::from_secs(10)) else {
        return (0, 0.0);
    };
    let Ok(ifx) = ifindex(&pair.dev_b) else {
        return (0, 0.0);
    };
    if !GEN_XSK.load(Ordering::Relaxed) {
        return generate_live(ifx, pair, stop);
    }
    let cfg = XskConfig {
        rx_frames: 64,
        fill_ring: 128,
        tx_frames: 4096,
        tx_ring: 4096,
        completion_ring: 4096,
        ..XskConfig::default()
    };
    let mut xsk = match bind_retry(ifx, &cfg) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("generator: {e}");
            return (0, 0.0);
        }
    };
    let frame = syn_frame(pair);
    let batch: Vec<&[u8]> = vec![&frame; 64];
    let start = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(10) {
        match xsk.tx_copy_many(batch.iter().copied()) {
            Ok(n) => sent += n as u64,
            Err(e) => {
                eprintln!("generator: {e}");
                break;
            }
        }
        xsk.complete();
    }
    (sent, start.elapsed().as_secs_f64())
}

/// The in-kernel generator: live-frame test runs of an `XDP_TX` program.
fn generate_live(ifx: u32, pair: &VethPair, stop: &AtomicBool) -> (u64, f64) {
    let generator = match LiveFrameGenerator::new() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("generator: {e}");
            return (0, 0.0);
        }
    };
    let frame = syn_frame(pair);
    const CHUNK: u32 = 16_384;
    let start = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(10) {
        if let Err(e) = generator.send(ifx, &frame, CHUNK) {
            eprintln!("generator: {e}");
            break;
        }
        sent += u64::from(CHUNK);
    }
    (sent, start.elapsed().as_secs_f64())
}

/// Receives for `secs` after a warm-up; returns (packets counted, seconds, note).
fn receive(
    pair: &VethPair,
    which: Receiver,
    secs: f64,
    threaded: bool,
    ready: mpsc::Sender<()>,
    stop: &AtomicBool,
) -> Result<(u64, f64, String), dpr_xdp::Error> {
    if PIN.load(Ordering::Relaxed) {
        let _ = tools::pin_current_thread(0);
    }
    let ifx = ifindex(&pair.dev_a)?;
    let count = AtomicU64::new(0);
    let window = |count: &AtomicU64, step: &mut dyn FnMut() -> Result<(), dpr_xdp::Error>| {
        let warm = Instant::now() + Duration::from_millis(300);
        while Instant::now() < warm {
            step()?;
        }
        let c0 = count.load(Ordering::Relaxed);
        let t0 = Instant::now();
        while t0.elapsed().as_secs_f64() < secs {
            step()?;
        }
        let got = count.load(Ordering::Relaxed) - c0;
        Ok::<_, dpr_xdp::Error>((got, t0.elapsed().as_secs_f64()))
    };
    match which {
        Receiver::XdpNative | Receiver::XdpGeneric => {
            let mode = if which == Receiver::XdpNative {
                XdpMode::Native
            } else {
                XdpMode::Generic
            };
            let mut prog = RouterProgram::load(&ProgramConfig::default())?;
            let _link = prog.attach(ifx, mode)?;
            // The veth has a NAPI instance only while a native program is
            // attached: switch it to its own kernel thread now.
            if threaded && which == Receiver::XdpNative {
                if let Err(e) = pair.set_threaded_napi(true) {
                    eprintln!("threaded NAPI: {e}");
                }
            }
            // As deep a receive buffer as the AF_PACKET socket's 8 MiB
            // (8192 frames): on a shared machine the receiver is sometimes
            // descheduled for milliseconds.
            let cfg = XskConfig {
                rx_frames: 8192,
                rx_ring: 8192,
                fill_ring: 16384,
                tx_frames: 64,
                ..XskConfig::default()
            };
            let mut xsk = bind_retry(ifx, &cfg)?;
            prog.set_socket(0, xsk.as_fd())?;
            prog.add_service(SocketAddr::new(SERVICE.into(), PORT))?;
            let _ = ready.send(());
            let r = window(&count, &mut || {
                let n = xsk.rx_batch(64, |_, _, _| RxAction::Drop)?;
                count.fetch_add(n as u64, Ordering::Relaxed);
                if n == 0 {
                    // Sleep in poll(2) rather than spin: the NAPI thread
                    // and the generator need the cores too.
                    xsk.wait_rx(Duration::from_millis(1))?;
                }
                Ok(())
            });
            stop.store(true, Ordering::Relaxed);
            let (got, t) = r?;
            let k = xsk.kernel_stats()?;
            let c = prog.counters()?;
            let note = format!(
                "kernel: rx_dropped {} rx_ring_full {} fill_empty {}; program no-socket {}",
                k.rx_dropped,
                k.rx_ring_full,
                k.rx_fill_ring_empty_descs,
                c.get(dpr_xdp::Counter::NoSocket)
            );
            Ok((got, t, note))
        }
        Receiver::AfPacket => {
            let sock = PacketSocket::bind(ifx).map_err(|source| dpr_xdp::Error::Syscall {
                op: "AF_PACKET",
                source,
            })?;
            let _ = sock.set_recv_buffer(8 << 20);
            let _ = ready.send(());
            let mut buf = [0u8; 2048];
            let r = window(&count, &mut || {
                if let Ok(Some(_)) = sock.recv(&mut buf, Duration::from_millis(100)) {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            });
            stop.store(true, Ordering::Relaxed);
            let (got, t) = r?;
            Ok((got, t, "one recv(2) per frame".into()))
        }
    }
}

fn run(pair: &VethPair, which: Receiver, secs: f64, threaded: bool) -> Option<RunResult> {
    let stop = AtomicBool::new(false);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (rx, tx) = std::thread::scope(|s| {
        let r = s.spawn(|| {
            in_netns(&pair.ns_a, || {
                receive(pair, which, secs, threaded, ready_tx, &stop)
            })
        });
        let g = s.spawn(|| in_netns(&pair.ns_b, || generate(pair, ready_rx, &stop)));
        let r = r.join();
        stop.store(true, Ordering::Relaxed);
        (r, g.join())
    });
    let (sent, gen_secs) = match tx {
        Ok(Ok(v)) => v,
        _ => (0, 0.0),
    };
    match rx {
        Ok(Ok(Ok((received, secs, note)))) => Some(RunResult {
            received,
            secs,
            sent_rate: if gen_secs > 0.0 {
                sent as f64 / gen_secs
            } else {
                0.0
            },
            note,
        }),
        Ok(Ok(Err(e))) => {
            eprintln!("{which:?}: {e}");
            None
        }
        _ => {
            eprintln!("{which:?}: receiver thread failed");
            None
        }
    }
}

fn main() {
    if !netns::is_root() {
        eprintln!("SKIPPED: needs root (xdp-rx-bench)");
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let mut secs = 2.0;
    let mut threaded = false;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--seconds" => {
                secs = args
                    .get(i + 1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(2.0f64)
                    .clamp(0.5, 10.0);
                i += 1;
            }
            "--threaded-napi" => threaded = true,
            "--pin" => PIN.store(true, Ordering::Relaxed),
            "--gen" => {
                GEN_XSK.store(
                    args.get(i + 1).is_some_and(|g| g == "xsk"),
                    Ordering::Relaxed,
                );
                i += 1;
            }
            other => eprintln!("ignored argument {other}"),
        }
        i += 1;
    }
    let pair = match VethPair::new(50) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("setting up namespaces: {e}");
            std::process::exit(1);
        }
    };
    let live = !GEN_XSK.load(Ordering::Relaxed);
    if live {
        // XDP_TX into a veth needs a NAPI instance on the peer: GRO gives
        // it one even without a native program.
        if let Err(e) = pair.ns_a.exec(&["ethtool", "-K", &pair.dev_a, "gro", "on"]) {
            eprintln!("gro on: {e}");
        }
        if threaded {
            if let Err(e) = pair.set_threaded_napi(true) {
                eprintln!("threaded NAPI: {e}");
            }
        }
    }
    println!(
        "generator: {}",
        if live {
            "live-frame XDP_TX test runs (in kernel)"
        } else {
            "AF_XDP socket, copy mode"
        }
    );
    println!(
        "veth {} <- {}, 60-byte TCP SYNs to {SERVICE}:{PORT}, {secs} s per receiver, threaded NAPI {threaded}, pinned {}, tx offload off {}",
        pair.dev_a,
        pair.dev_b,
        PIN.load(Ordering::Relaxed),
        pair.tx_offload_off
    );
    println!(
        "{:<12} {:>12} {:>14} {:>16}  note",
        "receiver", "packets", "packets/s", "generator pkt/s"
    );
    let mut rates = Vec::new();
    for which in [
        Receiver::XdpNative,
        Receiver::XdpGeneric,
        Receiver::AfPacket,
    ] {
        let name = match which {
            Receiver::XdpNative => "xdp-native",
            Receiver::XdpGeneric => "xdp-generic",
            Receiver::AfPacket => "af-packet",
        };
        if let Some(r) = run(&pair, which, secs, threaded) {
            let rate = r.received as f64 / r.secs;
            println!(
                "{name:<12} {:>12} {:>14.0} {:>16.0}  {}",
                r.received, rate, r.sent_rate, r.note
            );
            rates.push((name, rate));
        }
    }
    let base = rates
        .iter()
        .find(|(n, _)| *n == "af-packet")
        .map_or(0.0, |&(_, r)| r);
    if base > 0.0 {
        for (n, r) in &rates {
            if *n != "af-packet" {
                println!("{n} / af-packet: {:.2}x", r / base);
            }
        }
    }
}

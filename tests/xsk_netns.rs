//! The whole receive/transmit path on a veth pair in two network namespaces
//! (root): the program attached to the router's end (generic, then native),
//! an AF_XDP socket on its queue 0, service SYNs and peer IP-in-IP from the
//! other namespace reach the socket and nothing else does (ping, other
//! ports, strangers' IP-in-IP stay with the kernel), and a frame rewritten
//! in place (IP-in-IP encapsulated into the headroom) goes back out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dpr_lab::netns::{VethPair, in_netns};
use dpr_packet::ipip::{self, ChecksumCheck, EncapParams};
use dpr_tests::frames::*;
use dpr_tests::root_or_skip;
use dpr_xdp::ifindex;
use dpr_xdp::program::XDP_REDIRECT;
use dpr_xdp::tools::PacketSocket;
use dpr_xdp::xsk::{RxAction, XskConfig, XskSocket};
use dpr_xdp::{Counter, Counters, ProgramConfig, RouterProgram, XdpMode};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SERVICE_SYNS: u16 = 5;
const OTHER_SYNS: u16 = 3;

/// What the router side saw.
struct RouterReport {
    frames: Vec<Vec<u8>>,
    data_offsets: Vec<usize>,
    counters: Counters,
    test_run_with_socket: u32,
    mode: XdpMode,
}

fn peer_addr(pair: &VethPair) -> Ipv4Addr {
    let o = pair.addr_a.octets();
    Ipv4Addr::new(o[0], o[1], o[2], 7)
}

fn stranger_addr(pair: &VethPair) -> Ipv4Addr {
    let o = pair.addr_a.octets();
    Ipv4Addr::new(o[0], o[1], o[2], 9)
}

fn router_side(
    pair: &VethPair,
    mode: XdpMode,
    lend: bool,
    ready: mpsc::Sender<()>,
    done: mpsc::Receiver<()>,
) -> RouterReport {
    let ifx = ifindex(&pair.dev_a).unwrap();
    let mut prog = RouterProgram::load(&ProgramConfig::default()).unwrap();
    let link = prog.attach(ifx, mode).unwrap();
    let mut xsk = XskSocket::bind(ifx, 0, &XskConfig::default()).unwrap();
    prog.set_socket(0, xsk.as_fd()).unwrap();
    prog.add_service(SocketAddr::new(pair.addr_a.into(), 80))
        .unwrap();
    prog.add_peer(peer_addr(pair).into()).unwrap();
    // With a socket in the slot, a test run of a service SYN says REDIRECT.
    let syn = eth(
        pair.mac_a,
        pair.mac_b,
        0x0800,
        &ipv4(
            pair.addr_b,
            pair.addr_a,
            6,
            &tcp_syn_v4(pair.addr_b, pair.addr_a, 1, 80),
        ),
    );
    let test_run_with_socket = prog.test_run(&syn).unwrap();
    let before = prog.counters().unwrap();
    ready.send(()).unwrap();

    let mut frames = Vec::new();
    let mut data_offsets = Vec::new();
    let mut transmitted = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut done_at = None;
    while Instant::now() < deadline {
        if done_at.is_none() && done.try_recv().is_ok() {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|t| t.elapsed() > Duration::from_millis(200)) {
            break;
        }
        if !xsk.wait_rx(Duration::from_millis(20)).unwrap() {
            continue;
        }
        let mut on_frame = |frame: &mut [u8], off: usize, len: usize| {
            frames.push(frame[off..off + len].to_vec());
            data_offsets.push(off);
            let is_service = frame[off + 23] == 6;
            if transmitted || !is_service {
                return RxAction::Copied;
            }
            transmitted = true;
            // Encapsulate towards the other end, in place: the outer IPv4
            // header goes into the headroom before the IP packet, a new
            // Ethernet header before that.
            let ip_start = off + 14;
            let end = off + len;
            let p = EncapParams::new(pair.addr_a.into(), pair.addr_b.into());
            let outer = ipip::encapsulate(&mut frame[..end], ip_start, &p).unwrap();
            let start = outer - 14;
            frame[start..start + 6].copy_from_slice(&pair.mac_b);
            frame[start + 6..start + 12].copy_from_slice(&pair.mac_a);
            frame[start + 12..start + 14].copy_from_slice(&[0x08, 0x00]);
            RxAction::Transmit {
                offset: start,
                len: end - start,
            }
        };
        if lend {
            // All the frames of a read together (the worker's batch path).
            xsk.rx_lend(64, |frames| {
                for f in frames.iter_mut() {
                    f.action = on_frame(f.frame, f.offset, f.len);
                }
            })
            .unwrap();
        } else {
            xsk.rx_batch(64, on_frame).unwrap();
        }
    }
    assert!(
        xsk.drain_tx(Duration::from_secs(1)).unwrap(),
        "tx did not complete"
    );
    let after = prog.counters().unwrap();
    let mut counters = Counters::default();
    for c in Counter::ALL {
        counters.0[c as usize] = after.get(c) - before.get(c);
    }
    let mode = link.mode();
    drop(link);
    RouterReport {
        frames,
        data_offsets,
        counters,
        test_run_with_socket,
        mode,
    }
}

/// Sends the traffic and returns the IP-in-IP frame that came back.
fn sender_side(
    pair: &VethPair,
    ready: mpsc::Receiver<()>,
    done: mpsc::Sender<()>,
) -> (bool, Option<Vec<u8>>) {
    ready
        .recv_timeout(Duration::from_secs(10))
        .expect("router not ready");
    let sock = PacketSocket::bind(ifindex(&pair.dev_b).unwrap()).unwrap();
    // Ping: ARP and ICMP must still be answered by the router's kernel.
    let ping = pair
        .ns_b
        .exec(&[
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "2",
            &pair.addr_a.to_string(),
        ])
        .is_ok();
    let (a, b) = (pair.addr_a, pair.addr_b);
    let frame = |ip: Vec<u8>| eth(pair.mac_a, pair.mac_b, 0x0800, &ip);
    for i in 0..SERVICE_SYNS {
        sock.send(&frame(ipv4(b, a, 6, &tcp_syn_v4(b, a, 41000 + i, 80))))
            .unwrap();
    }
    for i in 0..OTHER_SYNS {
        sock.send(&frame(ipv4(b, a, 6, &tcp_syn_v4(b, a, 42000 + i, 22))))
            .unwrap();
    }
    let inner = ipv4(b, a, 6, &tcp_syn_v4(b, a, 43000, 80));
    sock.send(&frame(ipv4(peer_addr(pair), a, 4, &inner)))
        .unwrap();
    sock.send(&frame(ipv4(peer_addr(pair), a, 4, &inner)))
        .unwrap();
    sock.send(&frame(ipv4(stranger_addr(pair), a, 4, &inner)))
        .unwrap();
    sock.send(&frame(ipv4(b, a, 17, &udp(5000, 80, b"not tcp"))))
        .unwrap();
    // Wait for the router's IP-in-IP frame (skipping RSTs, ARP, ...).
    let mut buf = [0u8; 2048];
    let end = Instant::now() + Duration::from_secs(3);
    let mut back = None;
    while back.is_none() && Instant::now() < end {
        if let Some(n) = sock.recv(&mut buf, Duration::from_millis(100)).unwrap() {
            let f = &buf[..n];
            if n > 34 && f[12..14] == [0x08, 0x00] && f[23] == 4 {
                back = Some(f.to_vec());
            }
        }
    }
    let _ = done.send(());
    (ping, back)
}

fn run(mode: XdpMode, lend: bool, net: u8) {
    let pair = VethPair::new(net).unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let (report, (ping_ok, back)) = std::thread::scope(|s| {
        let r = s.spawn(|| {
            in_netns(&pair.ns_a, || {
                router_side(&pair, mode, lend, ready_tx, done_rx)
            })
        });
        let t = s.spawn(|| in_netns(&pair.ns_b, || sender_side(&pair, ready_rx, done_tx)));
        let t = t.join().unwrap().unwrap();
        (r.join().unwrap().unwrap(), t)
    });
    eprintln!(
        "{mode:?}: attached as {:?}, {} frames, data offset {:?}, counters {:?}, tx offload off: {}",
        report.mode,
        report.frames.len(),
        report.data_offsets.first(),
        report.counters.0,
        pair.tx_offload_off
    );
    assert_eq!(report.mode, mode);
    assert_eq!(report.test_run_with_socket, XDP_REDIRECT);
    assert!(ping_ok, "ping through the attached program failed");

    // Exactly the service SYNs and the peer's IP-in-IP reached the socket.
    let c = &report.counters;
    assert_eq!(c.get(Counter::ServiceV4), u64::from(SERVICE_SYNS), "{c:?}");
    assert_eq!(c.get(Counter::PeerV4), 2, "{c:?}");
    assert_eq!(c.get(Counter::NoSocket), 0, "{c:?}");
    assert!(
        c.get(Counter::Pass) >= u64::from(OTHER_SYNS) + 2 + 2,
        "{c:?}"
    );
    let mut ports: Vec<u16> = Vec::new();
    let mut ipip = 0;
    for f in &report.frames {
        assert_eq!(f[..6], pair.mac_a);
        match f[23] {
            6 => ports.push(u16::from_be_bytes([f[36], f[37]])),
            4 => {
                assert_eq!(f[26..30], peer_addr(&pair).octets());
                ipip += 1;
            }
            p => panic!("protocol {p} reached the socket"),
        }
    }
    assert_eq!(ports, vec![80; usize::from(SERVICE_SYNS)]);
    assert_eq!(ipip, 2);
    assert!(
        report.data_offsets.iter().all(|&o| o >= 40),
        "no headroom: {:?}",
        report.data_offsets
    );

    // The frame transmitted from the socket arrived on the other side:
    // IP-in-IP from a to b around the first service SYN.
    let back = back.expect("the rewritten frame did not arrive");
    assert_eq!(back[..6], pair.mac_b);
    let d = ipip::decapsulate(&back[14..], ChecksumCheck::Verify).unwrap();
    assert_eq!(d.outer_dst, std::net::IpAddr::from(pair.addr_b));
    let inner = &back[14..][d.inner];
    assert_eq!(inner[..20], report.frames[0][14..34]);
}

#[test]
fn generic_mode_rx_and_tx() {
    let Some(_g) = root_or_skip("generic_mode_rx_and_tx") else {
        return;
    };
    run(XdpMode::Generic, false, 42);
}

#[test]
fn native_mode_rx_and_tx() {
    let Some(_g) = root_or_skip("native_mode_rx_and_tx") else {
        return;
    };
    run(XdpMode::Native, false, 43);
}

/// The same through `rx_lend` (the frames of a read lent together).
#[test]
fn native_mode_rx_and_tx_lent() {
    let Some(_g) = root_or_skip("native_mode_rx_and_tx_lent") else {
        return;
    };
    run(XdpMode::Native, true, 46);
}

/// The bench's in-kernel generator (live-frame `XDP_TX` test runs from the
/// other namespace) delivers into the socket through the native program.
#[test]
fn live_frame_generator_reaches_the_socket() {
    let Some(_g) = root_or_skip("live_frame_generator_reaches_the_socket") else {
        return;
    };
    const SENT: u32 = 1000;
    let owned = VethPair::new(45).unwrap();
    let pair = &owned;
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let (received, counted) = std::thread::scope(|s| {
        let r = s.spawn(move || {
            in_netns(&pair.ns_a, move || {
                let ifx = ifindex(&pair.dev_a).unwrap();
                let mut prog = RouterProgram::load(&ProgramConfig::default()).unwrap();
                let _link = prog.attach(ifx, XdpMode::Native).unwrap();
                let mut xsk = XskSocket::bind(ifx, 0, &XskConfig::default()).unwrap();
                prog.set_socket(0, xsk.as_fd()).unwrap();
                prog.add_service(SocketAddr::new(pair.addr_a.into(), 80))
                    .unwrap();
                ready_tx.send(()).unwrap();
                let mut got = 0usize;
                let end = Instant::now() + Duration::from_secs(5);
                let mut done_at: Option<Instant> = None;
                while Instant::now() < end && got < SENT as usize {
                    if done_at.is_none() && done_rx.try_recv().is_ok() {
                        done_at = Some(Instant::now());
                    }
                    if done_at.is_some_and(|t| t.elapsed() > Duration::from_millis(300)) {
                        break;
                    }
                    if xsk.wait_rx(Duration::from_millis(10)).unwrap() {
                        got += xsk.rx_batch(64, |_, _, _| RxAction::Drop).unwrap();
                    }
                }
                (got, prog.counters().unwrap().get(Counter::ServiceV4))
            })
            .unwrap()
        });
        s.spawn(move || {
            in_netns(&pair.ns_b, move || {
                ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
                let ifx = ifindex(&pair.dev_b).unwrap();
                let (a, b) = (pair.addr_a, pair.addr_b);
                let syn = eth(
                    pair.mac_a,
                    pair.mac_b,
                    0x0800,
                    &ipv4(b, a, 6, &tcp_syn_v4(b, a, 1, 80)),
                );
                let generator = dpr_xdp::tools::LiveFrameGenerator::new().unwrap();
                generator.send(ifx, &syn, SENT).unwrap();
                let _ = done_tx.send(()); // the router may have finished first
            })
            .unwrap()
        })
        .join()
        .unwrap();
        r.join().unwrap()
    });
    eprintln!("live frames: sent {SENT}, program saw {counted}, socket received {received}");
    assert!(received > 0);
    assert_eq!(
        received as u64, counted,
        "every frame the program redirected arrived"
    );
    assert!(counted <= u64::from(SENT));
}

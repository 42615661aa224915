//! `dpr-lab flood`: a bounded SYN flood from random sources, for the
//! tests and the lab.
//!
//! It sends exactly `--count` TCP SYNs (at most `--max-secs` seconds, paced
//! to `--rate` per second when given) to `--dst:--port` from random source
//! addresses of `--sources` (a prefix that must lie within 198.18.0.0/15)
//! and random source ports, through a raw IPv4 socket
//! ([`dpr_xdp::tools::RawIpv4Socket`]) in the calling namespace, and
//! prints what it sent as JSON: `{"sent": N, "retries": R, "secs": S}`.
//!
//! The servers answer the flood's SYNs to addresses that do not exist; in
//! the lab [`Lab::route_flood_sources`] routes the source prefix from every
//! host to the client, whose kernel drops those answers (it does not
//! forward), so neither the hosts' neighbour tables nor their reverse-path
//! filters see an unknown address.

use crate::lab::{CLIENT_ADDR, Lab};
use crate::netns::ip;
use std::io;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

/// The default source prefix of the flood: the top half of 198.19.0.0/16,
/// which the lab uses for nothing else.
pub const FLOOD_SOURCES: &str = "198.19.128.0/17";

/// `dpr-lab flood` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct FloodArgs {
    /// Destination address (the service address under attack).
    #[arg(long)]
    pub dst: Ipv4Addr,
    /// Destination port.
    #[arg(long, default_value_t = 80)]
    pub port: u16,
    /// SYNs to send (exactly; 1 ..= 100,000,000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub count: u64,
    /// SYNs per second (0: as fast as the socket takes them).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Source prefix, within 198.18.0.0/15.
    #[arg(long, default_value = FLOOD_SOURCES)]
    pub sources: String,
    /// Seed of the random addresses, ports and sequence numbers.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Give up after this many seconds (what was sent is reported).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub max_secs: u64,
}

/// What a flood sent.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FloodReport {
    /// SYNs sent.
    pub sent: u64,
    /// Sends retried because the socket's queue was full.
    pub retries: u64,
    /// Seconds it took.
    pub secs: f64,
}

/// Parses `a.b.c.d/len` and checks it lies within 198.18.0.0/15; returns
/// the network and the host mask.
pub fn parse_sources(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("--sources `{s}`: want a.b.c.d/len within 198.18.0.0/15");
    let (a, l) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let len: u32 = l.parse().map_err(|_| bad())?;
    if !(15..=32).contains(&len) {
        return Err(bad());
    }
    let net_mask = u32::MAX << (32 - len);
    let net = addr.to_bits() & net_mask;
    if net & (u32::MAX << 17) != Ipv4Addr::new(198, 18, 0, 0).to_bits() {
        return Err(bad());
    }
    Ok((net, !net_mask))
}

/// splitmix64: a small, seeded, reproducible random source.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One 44-byte SYN (IPv4, TCP with an MSS option), checksums filled in.
pub fn syn_packet(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    seq: u32,
    id: u16,
) -> [u8; 44] {
    let mut p = [0u8; 44];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&44u16.to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = dpr_packet::checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 6 << 4;
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    t[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
    let pseudo = dpr_packet::checksum::pseudo_header_v4(src, dst, 6, 24);
    let c = dpr_packet::checksum::fold(dpr_packet::checksum::combine(
        pseudo,
        dpr_packet::checksum::sum(t),
    ));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    p
}

/// Runs the flood in the calling namespace and prints its report.
pub fn main(a: &FloodArgs) -> Result<(), String> {
    let r = flood(a)?;
    println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
    Ok(())
}

/// Sends the flood; see the module documentation.
pub fn flood(a: &FloodArgs) -> Result<FloodReport, String> {
    let (net, host_mask) = parse_sources(&a.sources)?;
    let sock = dpr_xdp::tools::RawIpv4Socket::open().map_err(|e| format!("raw socket: {e}"))?;
    let mut rng = Rng(a.seed);
    let start = Instant::now();
    let limit = Duration::from_secs(a.max_secs);
    let mut sent = 0u64;
    let mut retries = 0u64;
    while sent < a.count && start.elapsed() < limit {
        if a.rate > 0 && sent % 16 == 0 {
            let due = Duration::from_secs_f64(sent as f64 / a.rate as f64);
            if let Some(ahead) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
        let x = rng.next();
        let src = Ipv4Addr::from_bits(net | (x as u32 & host_mask));
        let sport = 1024 + ((x >> 32) as u16 % (u16::MAX - 1024));
        let seq = (x >> 48) as u32 ^ (rng.next() as u32);
        let p = syn_packet(src, sport, a.dst, a.port, seq, (x >> 16) as u16);
        match sock.send_to(&p, a.dst) {
            Ok(_) => sent += 1,
            Err(e)
                if e.raw_os_error() == Some(ENOBUFS) || e.kind() == io::ErrorKind::WouldBlock =>
            {
                retries += 1;
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => return Err(format!("sending to {}: {e}", a.dst)),
        }
    }
    Ok(FloodReport {
        sent,
        retries,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// `ENOBUFS` on Linux: the device queue is full; try again.
const ENOBUFS: i32 = 105;

impl Lab {
    /// Routes the flood's source prefix ([`FLOOD_SOURCES`]) from every
    /// host to the client, where the answers to the flood end (the client
    /// does not forward them): no host resolves a neighbour for them, and
    /// their reverse-path filters find a route back. Removed with the
    /// namespaces.
    pub fn route_flood_sources(&self) -> Result<(), String> {
        let via = CLIENT_ADDR.to_string();
        for i in 0..self.spec.hosts {
            ip(&[
                "-n",
                &self.host_ns(i),
                "route",
                "add",
                FLOOD_SOURCES,
                "via",
                &via,
            ])?;
        }
        Ok(())
    }

    /// The `dpr-lab flood` command, in the client's namespace, sending
    /// `count` SYNs at `rate` per second to `dst:80` from [`FLOOD_SOURCES`];
    /// spawn it with piped stdout and read its report with
    /// [`parse_flood_report`].
    pub fn flood_command(&self, dst: Ipv4Addr, count: u64, rate: u64) -> Command {
        let exe = self.programs.lab.to_string_lossy().into_owned();
        let mut c = self.in_ns(&self.client_ns(), &exe);
        c.args(["flood", "--dst", &dst.to_string(), "--port", "80"])
            .args(["--count", &count.to_string(), "--rate", &rate.to_string()])
            .args(["--sources", FLOOD_SOURCES]);
        c
    }
}

/// The report `dpr-lab flood` printed.
pub fn parse_flood_report(stdout: &str) -> Result<FloodReport, String> {
    serde_json::from_str(stdout.trim()).map_err(|e| format!("flood report `{stdout}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_must_lie_within_the_test_range() {
        assert_eq!(
            parse_sources("198.19.128.0/17"),
            Ok((Ipv4Addr::new(198, 19, 128, 0).to_bits(), 0x7fff))
        );
        assert!(parse_sources("198.18.0.0/15").is_ok());
        for bad in [
            "10.0.0.0/8",
            "198.16.0.0/12",
            "198.20.0.0/16",
            "198.18.0.0",
            "x/1",
        ] {
            assert!(parse_sources(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_syn_parses_as_one() {
        let p = syn_packet(
            Ipv4Addr::new(198, 19, 200, 1),
            4000,
            Ipv4Addr::new(198, 18, 0, 1),
            80,
            7,
            1,
        );
        let m = dpr_packet::parse_ip(&p).unwrap_or_else(|e| unreachable!("{e:?}"));
        assert!(m.tcp_flags.is_syn());
        assert_eq!(m.flow.dst_port, 80);
        assert_eq!(dpr_packet::checksum::checksum(&p[..20]), 0);
    }
}

//! `packet-tour`: what the wire layer does to real traffic.
//!
//! Reads a classic pcap of Ethernet frames, prints what `dpr-packet` sees in
//! each (flow key, fragment status, TCP flags, ICMP quotes), then does to
//! every TCP packet what a redirecting DPR host does: clamps the MSS of SYNs
//! for the tunnel and encapsulates the packet IPv4-in-IPv4 (or IPv6-in-IPv4)
//! towards a peer. The results go to an output pcap (raw-IP link type), so an
//! independent decoder can check them:
//!
//! ```text
//! cargo run -p dpr-examples --bin packet-tour -- IN.pcap OUT.pcap
//! tcpdump -nn -v -r OUT.pcap
//! ```

use dpr_packet::icmp;
use dpr_packet::ipip::{self, ChecksumCheck, EncapParams};
use dpr_packet::rewrite::{self, mss_for_mtu};
use dpr_packet::tcp::MssClamp;
use dpr_packet::{ErrorKind, Fragment, IpProtocol, IpVersion, Malformed, parse_frame};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::ExitCode;

const TUNNEL_SRC: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const TUNNEL_DST: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
const PATH_MTU: u16 = 1500;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(input), Some(output)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: packet-tour IN.pcap OUT.pcap");
        return ExitCode::from(2);
    };
    match run(input, output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("packet-tour: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(input: &str, output: &str) -> Result<(), String> {
    let bytes = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
    let frames = read_pcap(&bytes).map_err(|e| format!("{input}: {e}"))?;
    let params = EncapParams::new(TUNNEL_SRC.into(), TUNNEL_DST.into());
    let mut out = pcap_header();
    let mut drops: BTreeMap<String, usize> = BTreeMap::new();
    let (mut encapsulated, mut clamped) = (0usize, 0usize);
    println!(
        "{:>4}  {:<52} {:<8} {:<10} action",
        "#", "flow", "frag", "tcp"
    );
    for (i, frame) in frames.iter().enumerate() {
        let m = match parse_frame(frame) {
            Ok(m) => m,
            Err(e) if e.kind == ErrorKind::Malformed(Malformed::EtherType) => {
                let t = frame
                    .get(12..14)
                    .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                println!("{i:>4}  not IP (EtherType {t:#06x}): passed to the kernel");
                *drops
                    .entry(format!("not IP, EtherType {t:#06x}"))
                    .or_default() += 1;
                continue;
            }
            Err(e) => {
                println!("{i:>4}  not routed: {e}");
                *drops
                    .entry(format!("{:?}/{:?}", e.layer, e.kind))
                    .or_default() += 1;
                continue;
            }
        };
        let frag = match m.fragment {
            Fragment::Whole => "-",
            Fragment::First => "first",
            Fragment::Later => "later",
        };
        let flags = if m.flow.protocol == IpProtocol::Tcp {
            format!("{:?}", m.tcp_flags)
        } else {
            String::new()
        };
        let mut action = String::from("pass");
        let l4 = &frame[usize::from(m.l4_offset)..m.l3_range().end];
        match m.flow.protocol {
            IpProtocol::Icmp | IpProtocol::Icmpv6 => {
                let e = if m.flow.protocol == IpProtocol::Icmp {
                    icmp::parse_icmpv4_error(l4)
                } else {
                    icmp::parse_icmpv6_error(l4)
                };
                action = match e {
                    Ok(e) => format!("icmp {:?} about {}", e.kind, e.quote.flow),
                    Err(_) => "icmp (not an error)".into(),
                };
            }
            IpProtocol::Tcp => {
                // Headroom for the outer header, then the IP packet.
                let mut buf = vec![0u8; ipip::OUTER_V4_LEN];
                buf.extend_from_slice(&frame[m.l3_range()]);
                let inner_v6 = m.version == IpVersion::V6;
                let mss = mss_for_mtu(PATH_MTU, ipip::OUTER_V4_LEN as u16, inner_v6);
                if let Ok(MssClamp::Clamped { from, to }) =
                    rewrite::clamp_mss(&mut buf[ipip::OUTER_V4_LEN..], mss)
                {
                    clamped += 1;
                    action = format!("mss {from}->{to}, ");
                } else {
                    action.clear();
                }
                let start = ipip::encapsulate(&mut buf, ipip::OUTER_V4_LEN, &params)
                    .map_err(|e| format!("frame {i}: encapsulate: {e}"))?;
                // Prove the result decapsulates back to the (clamped) packet.
                let d = ipip::decapsulate(&buf[start..], ChecksumCheck::Verify)
                    .map_err(|e| format!("frame {i}: decapsulate: {e}"))?;
                if buf[start..][d.inner] != buf[ipip::OUTER_V4_LEN..] {
                    return Err(format!("frame {i}: round trip changed the packet"));
                }
                pcap_record(&mut out, &buf[start..]);
                encapsulated += 1;
                action.push_str(&format!("encapsulated to {TUNNEL_DST}"));
            }
            _ => {}
        }
        println!(
            "{i:>4}  {:<52} {frag:<8} {flags:<10} {action}",
            m.flow.to_string()
        );
    }
    std::fs::write(output, &out).map_err(|e| format!("{output}: {e}"))?;
    println!();
    println!(
        "{} frames: {encapsulated} TCP packets encapsulated ({clamped} SYN MSS clamped), {} not routed:",
        frames.len(),
        drops.values().sum::<usize>()
    );
    for (why, n) in &drops {
        println!("  {n:>4}  {why}");
    }
    println!("wrote {output} (link type raw IP): try `tcpdump -nn -v -r {output}`");
    Ok(())
}

fn read_pcap(b: &[u8]) -> Result<Vec<&[u8]>, String> {
    let magic = b.get(0..4).ok_or("too short for a pcap header")?;
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err("not a classic pcap file (pcapng is not supported)".into()),
    };
    let u32_at = |at: usize| -> Result<u32, String> {
        let s: [u8; 4] = b
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| format!("truncated at byte {at}"))?;
        Ok(if le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    };
    if u32_at(20)? != 1 {
        return Err("link type is not Ethernet".into());
    }
    let mut at = 24;
    let mut frames = Vec::new();
    while at < b.len() {
        let len = u32_at(at + 8)? as usize;
        let f = b
            .get(at + 16..at + 16 + len)
            .ok_or_else(|| format!("record at {at} truncated"))?;
        frames.push(f);
        at += 16 + len;
    }
    Ok(frames)
}

fn pcap_header() -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&101u32.to_le_bytes()); // LINKTYPE_RAW
    h
}

fn pcap_record(out: &mut Vec<u8>, pkt: &[u8]) {
    let n = pkt.len() as u32;
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(pkt);
}

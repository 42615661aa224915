//! The engine's rows, in this process: a small timing loop over
//! [`dpr_router::Engine`] set up as `crates/dpr-router/benches/engine.rs`
//! sets it up (a host far over its threshold, three idle peers, one million
//! redirected flows), timing
//! - an established redirected packet whose entry is in cache (the same
//!   flow again and again), and
//! - established redirected packets of flows picked at random among the
//!   million, 32 to a batch (each entry cold: cache and TLB misses).
//!
//! Each run times a bounded number of packets for at most `secs`; the
//! figure is ns per packet.

use dpr_packet::IpProtocol;
use dpr_packet::tcp::{TcpFlags, TcpOption, TcpOptionsBuf, TcpRepr};
use dpr_policy::{SplitMix64, Threshold, ThresholdConfig};
use dpr_router::{Engine, EngineConfig, PacketBuf, Verdict};
use dpr_table::{Capacity, LoadFigures, LoadReport, LoadTableConfig, PeerId, Timestamp};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const HEADROOM: usize = 64;
/// Packets per batch in the random-flows row.
pub(crate) const BATCH: usize = 32;
/// Distinct random flows the random row cycles through.
const POOL: usize = 4096;

/// The engine's figures, ns per packet, one sample per run.
#[derive(Debug, Default)]
pub(crate) struct EngineSamples {
    pub cached_ns: Vec<f64>,
    pub random_ns: Vec<f64>,
}

/// Client `i` of 2^32: 198.18.0.0/15 holds 2^17 addresses, 2^15 ports each.
fn client(i: u32) -> SocketAddr {
    let a = Ipv4Addr::from(0xc612_0000u32 | (i >> 15) & 0x1_ffff);
    SocketAddr::new(a.into(), (i & 0x7fff) as u16 + 1024)
}

fn service() -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(198, 19, 255, 1).into(), 80)
}

/// An IPv4 packet with one TCP segment, behind `HEADROOM` spare bytes.
fn packet(src: SocketAddr, seq: u32, ack: u32, flags: TcpFlags, payload: &[u8]) -> Vec<u8> {
    let options = if flags.contains(TcpFlags::SYN) {
        TcpOptionsBuf::from_options(&[TcpOption::Mss(1460)]).unwrap_or_default()
    } else {
        TcpOptionsBuf::default()
    };
    let dst = service();
    let tcp = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        seq,
        ack,
        flags,
        window: 65535,
        urgent: 0,
        options,
    };
    let tcp_len = tcp.buffer_len() + payload.len();
    let mut out = vec![0u8; HEADROOM + 20 + tcp_len];
    let Ok(ip_len) = dpr_packet::ip::emit_header(
        &mut out[HEADROOM..],
        src.ip(),
        dst.ip(),
        IpProtocol::Tcp,
        tcp_len,
        64,
        true,
    ) else {
        return Vec::new();
    };
    if tcp
        .emit(&mut out[HEADROOM + ip_len..], src.ip(), dst.ip(), payload)
        .is_err()
    {
        return Vec::new();
    }
    out
}

fn engine(flows: u32) -> Result<Engine, String> {
    let svc: IpAddr = service().ip();
    let mut cfg = EngineConfig::new(Ipv4Addr::new(198, 19, 0, 1).into(), vec![svc], vec![80]);
    cfg.routes.capacity = flows;
    let policy =
        Threshold::new(ThresholdConfig { threshold: 1.0 }).map_err(|e| format!("engine: {e}"))?;
    let mut e = Engine::new(
        cfg,
        PeerId(0),
        Capacity::default(),
        LoadTableConfig::default(),
        Box::new(policy),
        Box::new(SplitMix64::new(1)),
    )
    .map_err(|e| format!("engine: {e}"))?;
    // As `dprd`'s data-path engines are set up (`dpr_io::EngineSet::new`):
    // the sweep's prefetch hint, the tables on huge pages.
    e.set_prefetch(Some(dpr_io::sys::prefetch));
    e.advise_memory(dpr_io::sys::advise_huge_pages);
    for p in 1..=3u8 {
        e.add_peer(
            PeerId(u16::from(p)),
            Ipv4Addr::new(198, 19, 0, p + 1).into(),
            vec![],
            Timestamp::ZERO,
        )
        .map_err(|e| format!("engine: {e}"))?;
        let r = LoadReport {
            seq: 1,
            figures: LoadFigures::default(),
            capacity: Capacity::default(),
            draining: false,
        };
        e.apply_report(PeerId(u16::from(p)), &r, Timestamp::ZERO)
            .map_err(|e| format!("engine: {e}"))?;
    }
    // Far over its threshold: every new connection is redirected.
    e.set_local_load(
        LoadFigures {
            open_connections: 100_000_000,
            ..LoadFigures::default()
        },
        Capacity::default(),
    )
    .map_err(|e| format!("engine: {e}"))?;
    Ok(e)
}

fn process(e: &mut Engine, now: Timestamp, buf: &mut [u8]) -> Option<Verdict> {
    let end = buf.len();
    let mut pb = PacketBuf::new(black_box(buf), HEADROOM, end)?;
    Some(e.process(now, &mut pb))
}

/// One batch of established packets, one verdict each, through
/// [`Engine::process_batch`] (the path `dprd`'s workers take: the batch's
/// table lines are loaded together so that their cache misses overlap).
fn process_batch(e: &mut Engine, now: Timestamp, bufs: &mut [Vec<u8>]) -> usize {
    let mut pkts: Vec<PacketBuf<'_>> = bufs
        .iter_mut()
        .filter_map(|b| {
            let end = b.len();
            PacketBuf::new(black_box(b.as_mut_slice()), HEADROOM, end)
        })
        .collect();
    let mut out = Vec::with_capacity(pkts.len());
    e.process_batch(now, &mut pkts, &mut out);
    out.iter()
        .filter(|v| matches!(v, Verdict::Forward { .. }))
        .count()
}

/// Times `f` (which processes `per_call` packets) until `limit` packets or
/// `secs` have passed; ns per packet.
fn time_loop(secs: f64, limit: u64, per_call: u64, mut f: impl FnMut() -> usize) -> (f64, u64) {
    let deadline = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let (mut n, mut ok) = (0u64, 0u64);
    while n < limit {
        // Read the clock every 1,024 packets, not every packet.
        for _ in 0..(1024 / per_call).max(1) {
            ok += f() as u64;
            n += per_call;
        }
        if start.elapsed() >= deadline {
            break;
        }
    }
    (start.elapsed().as_nanos() as f64 / n.max(1) as f64, ok)
}

/// Sets up the engine with `flows` redirected flows and times `runs` runs
/// of each row, `secs` each at most (and at most 50 million packets).
pub(crate) fn measure(flows: u32, runs: usize, secs: f64) -> Result<EngineSamples, String> {
    let mut e = engine(flows)?;
    let now = Timestamp::from_millis(1);
    let mut syn = packet(client(0), 1, 0, TcpFlags::SYN, &[]);
    for i in 0..flows {
        // A fresh source address and port each time (the checksum is not
        // checked on the way in, so it is not fixed).
        let c = client(i);
        if let IpAddr::V4(a) = c.ip() {
            syn[HEADROOM + 12..HEADROOM + 16].copy_from_slice(&a.octets());
        }
        syn[HEADROOM + 20..HEADROOM + 22].copy_from_slice(&c.port().to_be_bytes());
        if !matches!(
            process(&mut e, now, &mut syn),
            Some(Verdict::Forward { .. })
        ) {
            return Err(format!("engine: flow {i}'s SYN was not redirected"));
        }
    }
    if e.routes().len() != flows as usize {
        return Err(format!(
            "engine: {} routes for {flows} flows",
            e.routes().len()
        ));
    }
    let data = b"0123456789";
    let mut est = packet(client(flows / 2), 2, 1, TcpFlags::ACK, data);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut pick = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % u64::from(flows)) as u32
    };
    let mut pool: Vec<Vec<u8>> = (0..POOL)
        .map(|_| packet(client(pick()), 2, 1, TcpFlags::ACK, data))
        .collect();
    let mut out = EngineSamples::default();
    let limit = 50_000_000;
    for _ in 0..runs {
        crate::stop::check()?;
        let (ns, ok) = time_loop(secs, limit, 1, || {
            usize::from(matches!(
                process(&mut e, now, &mut est),
                Some(Verdict::Forward { .. })
            ))
        });
        if ok == 0 {
            return Err("engine: the established packet was not forwarded".into());
        }
        out.cached_ns.push(ns);
        let mut k = 0usize;
        let (ns, ok) = time_loop(secs, limit, BATCH as u64, || {
            k = (k + BATCH) % POOL;
            process_batch(&mut e, now, &mut pool[k..k + BATCH])
        });
        if ok == 0 {
            return Err("engine: no random established packet was forwarded".into());
        }
        out.random_ns.push(ns);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_engine_forwards_what_it_times() {
        let s = measure(2048, 2, 0.01).unwrap();
        assert_eq!(s.cached_ns.len(), 2);
        assert_eq!(s.random_ns.len(), 2);
        assert!(
            s.cached_ns
                .iter()
                .chain(&s.random_ns)
                .all(|v| v.is_finite() && *v > 0.0)
        );
    }

    #[test]
    fn batches_forward_every_packet_of_established_flows() {
        let mut e = engine(64).unwrap();
        let now = Timestamp::from_millis(1);
        for i in 0..64 {
            let mut syn = packet(client(i), 1, 0, TcpFlags::SYN, &[]);
            assert!(matches!(
                process(&mut e, now, &mut syn),
                Some(Verdict::Forward { .. })
            ));
        }
        let mut bufs: Vec<Vec<u8>> = (0..BATCH as u32)
            .map(|i| packet(client(i), 2, 1, TcpFlags::ACK, b"x"))
            .collect();
        assert_eq!(process_batch(&mut e, now, &mut bufs), BATCH);
        // A packet of a flow the engine never saw is not forwarded.
        let mut unknown = vec![packet(client(1000), 2, 1, TcpFlags::ACK, b"x")];
        assert_eq!(process_batch(&mut e, now, &mut unknown), 0);
    }
}

//! [`Engine::process_batch`] against [`Engine::process`]: two engines
//! built alike take the same packets, one at a time and in batches of
//! arbitrary sizes, and must agree on everything: each verdict, each
//! packet's bytes and range, the counters, both tables (entries and
//! statistics), the decisions and the keyed-flow events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::fuzz_checks::{engine_with, prefix};
use crate::harness::tcp::tcp_packet;
use crate::{Engine, PacketBuf, Verdict};
use dpr_packet::tcp::TcpFlags;
use dpr_table::{ConnEntry, Timestamp};
use proptest::prelude::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

/// One packet of a test stream, from a few bytes of choice.
fn packet(sel: u8, client: u8, flags: u8, at: u8, byte: u8, raw: &[u8]) -> Vec<u8> {
    let pre = prefix();
    let svc = SocketAddr::new(Ipv4Addr::new(198, 18, 1, 1).into(), 80);
    // The prefix's clients (some routed, some evicted) and a few new ones.
    let c = SocketAddr::new(
        Ipv4Addr::new(198, 18, 100, client % 70).into(),
        30000 + u16::from(client % 70),
    );
    let f = [
        TcpFlags::SYN,
        TcpFlags::ACK,
        TcpFlags::ACK,
        TcpFlags::FIN | TcpFlags::ACK,
        TcpFlags::RST,
        TcpFlags::SYN | TcpFlags::ACK,
    ][usize::from(flags) % 6];
    match sel % 5 {
        0 | 1 => tcp_packet(c, svc, u32::from(flags), 1, f, None, b"data"),
        // A prefix packet as it is (tunnel, keyed tunnel, ICMP error, ...).
        2 => pre[usize::from(at) * 7 % pre.len()].clone(),
        // ... or with one byte changed.
        3 => {
            let mut p = pre[pre.len() - 1 - usize::from(at) % 4].clone();
            let i = usize::from(byte) % p.len();
            p[i] ^= flags | 1;
            p
        }
        _ => raw.to_vec(),
    }
}

fn buffers(pkts: &[(Vec<u8>, usize)]) -> Vec<(Vec<u8>, usize)> {
    pkts.iter()
        .map(|(p, h)| {
            let mut b = vec![0u8; h + p.len() + 64];
            b[*h..h + p.len()].copy_from_slice(p);
            (b, h + p.len())
        })
        .collect()
}

fn state(e: &mut Engine) -> impl PartialEq + std::fmt::Debug {
    let entries =
        |t: &dpr_table::ConnTable<dpr_table::WideKey>| -> Vec<ConnEntry> { t.iter().collect() };
    (
        e.counters(),
        entries(e.routes()),
        entries(e.served()),
        e.routes().stats(),
        e.served().stats(),
        e.take_decisions(),
        e.take_keyed_flow_events(),
    )
}

/// Runs the stream through three engines (one at a time; `process_batch`;
/// `process_batch_hashed` with the steering hashes, some left out) and
/// checks that they agree after every batch.
pub(crate) fn batch_matches_one_at_a_time(
    keyed: bool,
    vip: bool,
    pkts: &[(Vec<u8>, usize)],
    batches: &[(usize, u8)],
) {
    let mut one = engine_with(keyed, vip);
    let mut batched = engine_with(keyed, vip);
    let mut hashed = engine_with(keyed, vip);
    let mut now = Timestamp::from_millis(1);
    let mut at = 0;
    let mut cuts = batches.iter().cycle();
    while at < pkts.len() {
        let &(size, step) = cuts.next().unwrap_or(&(1, 0));
        let group = &pkts[at..pkts.len().min(at + size.max(1))];
        at += group.len();
        now = now.saturating_add(Duration::from_millis(u64::from(step & 0x7f)));
        if step & 0x80 != 0 {
            for e in [&mut one, &mut batched, &mut hashed] {
                e.tick(now, 8);
            }
        }
        // One at a time.
        let mut a = buffers(group);
        let mut va: Vec<(Verdict, Range<usize>)> = Vec::new();
        for ((buf, end), (_, h)) in a.iter_mut().zip(group) {
            let mut pb = PacketBuf::new(buf, *h, *end).unwrap();
            let v = one.process(now, &mut pb);
            va.push((v, pb.range()));
        }
        // Batched, the engine hashing.
        let mut b = buffers(group);
        let mut out = Vec::new();
        let ranges_b: Vec<Range<usize>> = {
            let mut pbs: Vec<PacketBuf<'_>> = b
                .iter_mut()
                .zip(group)
                .map(|((buf, end), (_, h))| PacketBuf::new(buf, *h, *end).unwrap())
                .collect();
            batched.process_batch(now, &mut pbs, &mut out);
            pbs.iter().map(|p| p.range()).collect()
        };
        let vb: Vec<(Verdict, Range<usize>)> = out.into_iter().zip(ranges_b).collect();
        // Batched with the caller's hashes (every other one left out, and
        // the last packet's not given at all).
        let mut c = buffers(group);
        let mut out = Vec::new();
        let ranges_c: Vec<Range<usize>> = {
            let mut pbs: Vec<PacketBuf<'_>> = c
                .iter_mut()
                .zip(group)
                .map(|((buf, end), (_, h))| PacketBuf::new(buf, *h, *end).unwrap())
                .collect();
            let mut hashes: Vec<Option<u64>> = pbs
                .iter()
                .enumerate()
                .map(|(i, p)| hashed.flow_hash(p.bytes()).filter(|_| i % 2 == 0))
                .collect();
            hashes.pop();
            hashed.process_batch_hashed(now, &mut pbs, &hashes, &mut out);
            pbs.iter().map(|p| p.range()).collect()
        };
        let vc: Vec<(Verdict, Range<usize>)> = out.into_iter().zip(ranges_c).collect();
        assert_eq!(va, vb, "verdicts and ranges, batched");
        assert_eq!(va, vc, "verdicts and ranges, batched with hashes");
        assert!(a == b && a == c, "packet bytes");
        let sa = state(&mut one);
        assert_eq!(sa, state(&mut batched));
        assert_eq!(sa, state(&mut hashed));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn batched_and_one_at_a_time_agree(
        keyed: bool,
        vip: bool,
        stream in proptest::collection::vec(
            (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), 0usize..4,
             proptest::collection::vec(any::<u8>(), 0..60)),
            1..120,
        ),
        batches in proptest::collection::vec((1usize..40, any::<u8>()), 1..8),
    ) {
        let pkts: Vec<(Vec<u8>, usize)> = stream
            .iter()
            .map(|(sel, client, flags, at, byte, h, raw)| {
                (packet(*sel, *client, *flags, *at, *byte, raw), [64, 20, 0, 40][*h])
            })
            .collect();
        batch_matches_one_at_a_time(keyed, vip, &pkts, &batches);
    }
}

/// The prefix (SYNs past capacity, data, both tunnels, an ICMP error) in
/// batches of 32, then again in batches of 7.
#[test]
fn the_prefix_in_batches() {
    let pkts: Vec<(Vec<u8>, usize)> = prefix().iter().map(|p| (p.clone(), 64)).collect();
    for (keyed, vip) in [(false, false), (true, false), (false, true), (true, true)] {
        batch_matches_one_at_a_time(keyed, vip, &pkts, &[(32, 1)]);
        batch_matches_one_at_a_time(keyed, vip, &pkts, &[(7, 0x83)]);
    }
}

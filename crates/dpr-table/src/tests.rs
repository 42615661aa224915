//! Unit and property tests of the connection and load tables.

use crate::*;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::time::Duration;
use dpr_packet::tcp::TcpFlags;
use dpr_packet::{FlowHasher, FlowKey, IpProtocol};
use proptest::prelude::*;
use std::collections::VecDeque;

fn flow(n: u32) -> FlowKey {
    FlowKey::new(
        IpProtocol::Tcp,
        IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 | (n >> 16))),
        n as u16,
        Ipv4Addr::new(198, 18, 1, 1).into(),
        443,
    )
}

fn cfg(capacity: u32) -> ConnTableConfig {
    ConnTableConfig {
        capacity,
        half_open_timeout: Duration::from_nanos(100),
        established_timeout: Duration::from_nanos(1000),
        closing_timeout: Duration::from_nanos(500),
        fin_grace: Duration::from_nanos(50),
        sweep_per_call: 0,
        half_open_reserve: 0,
    }
}

fn no_expiry(capacity: u32) -> ConnTableConfig {
    ConnTableConfig {
        capacity,
        sweep_per_call: 2,
        ..ConnTableConfig::default()
    }
}

const ACK: TcpFlags = TcpFlags::ACK;

#[test]
fn bad_config_names_the_field() {
    let e = |c: ConnTableConfig| match c.validate() {
        Err(TableError::InvalidConfig { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        e(ConnTableConfig {
            capacity: 0,
            ..cfg(1)
        }),
        "capacity"
    );
    assert_eq!(
        e(ConnTableConfig {
            capacity: u32::MAX,
            ..cfg(1)
        }),
        "capacity"
    );
    assert_eq!(
        e(ConnTableConfig {
            fin_grace: Duration::ZERO,
            ..cfg(1)
        }),
        "fin_grace"
    );
    assert_eq!(
        e(ConnTableConfig {
            half_open_timeout: Duration::ZERO,
            ..cfg(1)
        }),
        "half_open_timeout"
    );
    assert!(
        ConnTable::<V4Key>::new(
            ConnTableConfig {
                capacity: 0,
                ..cfg(1)
            },
            FlowHasher::new(0)
        )
        .is_err()
    );
}

#[test]
fn lifecycle_syn_established_fin_fin_grace() {
    let mut t = ConnTable::<V4Key>::new(cfg(8), FlowHasher::new(1)).unwrap();
    let f = flow(1);
    let r = Route::Peer(PeerId(7));
    assert_eq!(
        t.on_packet(&f, Direction::Original, TcpFlags::SYN, 60, Timestamp(0)),
        PacketOutcome::Unknown
    );
    assert_eq!(
        t.insert(&f, r, Timestamp(0)).unwrap(),
        InsertOutcome::Inserted { evicted: None }
    );
    assert_eq!(
        t.insert(&f, Route::Local, Timestamp(1)).unwrap(),
        InsertOutcome::Existing(r)
    );
    assert_eq!(t.get(&f).unwrap().state, ConnState::SynSeen);
    assert_eq!(
        t.on_packet(&f, Direction::Original, ACK, 40, Timestamp(10)),
        PacketOutcome::Forward(r)
    );
    assert_eq!(t.get(&f).unwrap().state, ConnState::Established);
    t.on_packet(
        &f,
        Direction::Original,
        ACK | TcpFlags::FIN,
        40,
        Timestamp(20),
    );
    assert_eq!(t.get(&f).unwrap().state, ConnState::Closing);
    t.on_packet(&f, Direction::Reply, ACK | TcpFlags::FIN, 40, Timestamp(30));
    let e = t.get(&f).unwrap();
    assert_eq!(
        (e.state, e.last_seen, e.packets, e.bytes),
        (ConnState::Closed, Timestamp(30), 3, 120)
    );
    // The last ACK does not extend the grace time.
    t.on_packet(&f, Direction::Original, ACK, 40, Timestamp(70));
    assert!(t.lookup(&f, Timestamp(79)).is_some());
    assert_eq!(t.lookup_route(&f, Timestamp(79)), Some(r));
    assert!(t.lookup(&f, Timestamp(80)).is_none());
    assert_eq!(t.stats().expired, 1);
    assert!(t.is_empty());
}

/// An entry whose packets bypass the table (decapsulated by the XDP
/// program) is kept alive and moved to `Established` by confirmations from
/// the socket table; closing and reset entries are not revived, unknown
/// flows not created.
#[test]
fn confirm_open_keeps_an_unseen_connection_alive() {
    let mut t = ConnTable::<V4Key>::new(cfg(8), FlowHasher::new(1)).unwrap();
    let (f, r) = (flow(1), Route::Peer(PeerId(7)));
    t.insert(&f, r, Timestamp(0)).unwrap();
    assert!(t.confirm_open(&f, Timestamp(90)));
    assert_eq!(t.get(&f).unwrap().state, ConnState::Established);
    // Idle past the half-open timeout (100) but not the established one.
    assert!(t.confirm_open(&f, Timestamp(900)));
    assert_eq!(t.get(&f).unwrap().last_seen, Timestamp(900));
    assert!(t.lookup(&f, Timestamp(1899)).is_some());
    assert!(!t.confirm_open(&flow(2), Timestamp(900)));
    assert_eq!(t.len(), 1, "nothing created");
    t.on_packet(
        &f,
        Direction::Original,
        ACK | TcpFlags::FIN,
        40,
        Timestamp(1000),
    );
    assert!(t.confirm_open(&f, Timestamp(1100)));
    let e = t.get(&f).unwrap();
    assert_eq!(
        (e.state, e.last_seen),
        (ConnState::Closing, Timestamp(1000))
    );
    let g = flow(3);
    t.insert(&g, r, Timestamp(0)).unwrap();
    t.on_packet(&g, Direction::Original, TcpFlags::RST, 40, Timestamp(10));
    assert!(t.confirm_open(&g, Timestamp(20)));
    assert_eq!(t.get(&g).unwrap().state, ConnState::Closed);
    // Expired entries are removed, not confirmed.
    assert!(!t.confirm_open(&f, Timestamp(5000)));
}

#[test]
fn rst_starts_the_grace_time_and_udp_starts_established() {
    let mut t = ConnTable::<V4Key>::new(cfg(8), FlowHasher::new(1)).unwrap();
    let grace = cfg(8).fin_grace.as_nanos() as u64;
    let f = flow(2);
    t.insert(&f, Route::Local, Timestamp(0)).unwrap();
    assert_eq!(
        t.on_packet(&f, Direction::Reply, TcpFlags::RST, 40, Timestamp(1)),
        PacketOutcome::Reset(Route::Local)
    );
    assert_eq!(t.stats().reset, 1);
    // Kept for the grace time (a blind RST must not cut the route) ...
    assert_eq!(t.get(&f).unwrap().state, ConnState::Closed);
    assert!(t.lookup(&f, Timestamp(1 + grace - 1)).is_some());
    // ... and gone after it.
    assert!(t.lookup(&f, Timestamp(1 + grace)).is_none());
    // A connection that goes on after an RST (the endpoint refused it) is revived.
    let g = flow(4);
    t.insert(&g, Route::Peer(PeerId(3)), Timestamp(0)).unwrap();
    t.on_packet(&g, Direction::Original, TcpFlags::ACK, 40, Timestamp(1));
    t.on_packet(&g, Direction::Original, TcpFlags::RST, 40, Timestamp(2));
    assert_eq!(
        t.on_packet(&g, Direction::Original, TcpFlags::ACK, 40, Timestamp(3)),
        PacketOutcome::Forward(Route::Peer(PeerId(3)))
    );
    assert_eq!(t.get(&g).unwrap().state, ConnState::Established);
    assert!(
        t.lookup(&g, Timestamp(3 + grace)).is_some(),
        "back on the established timeout"
    );
    let mut u = flow(3);
    u.protocol = IpProtocol::Udp;
    t.insert(&u, Route::Local, Timestamp(0)).unwrap();
    assert_eq!(t.get(&u).unwrap().state, ConnState::Established);
    assert_eq!(t.remove(&u).unwrap().key, u);
    assert_eq!(t.stats().removed, 1);
}

#[test]
fn v6_flow_in_v4_table_is_refused_and_wide_table_takes_it() {
    let f = FlowKey::new(
        IpProtocol::Tcp,
        Ipv6Addr::LOCALHOST.into(),
        1,
        Ipv6Addr::LOCALHOST.into(),
        2,
    );
    let mut t = ConnTable::<V4Key>::new(cfg(8), FlowHasher::new(1)).unwrap();
    assert_eq!(
        t.insert(&f, Route::Local, Timestamp(0)),
        Err(TableError::UnsupportedKey)
    );
    assert_eq!(
        t.on_packet(&f, Direction::Original, ACK, 1, Timestamp(0)),
        PacketOutcome::Unknown
    );
    let mut w = ConnTable::<WideKey>::new(cfg(8), FlowHasher::new(1)).unwrap();
    w.insert(&f, Route::Local, Timestamp(0)).unwrap();
    assert_eq!(w.get(&f).unwrap().key, f);
}

#[test]
fn sweep_is_bounded_and_eventually_complete() {
    let mut t = ConnTable::<V4Key>::new(cfg(1000), FlowHasher::new(3)).unwrap();
    for i in 0..1000 {
        t.insert(&flow(i), Route::Local, Timestamp(0)).unwrap();
    }
    let mut total = 0;
    for _ in 0..100 {
        let n = t.sweep(Timestamp(100), 10);
        assert!(n <= 10);
        total += n;
    }
    assert_eq!(total, 1000);
    assert!(t.is_empty());
    t.check_invariants();
}

#[test]
fn incremental_sweep_runs_on_mutating_calls() {
    let mut t = ConnTable::<V4Key>::new(
        ConnTableConfig {
            sweep_per_call: 4,
            ..cfg(100)
        },
        FlowHasher::new(3),
    )
    .unwrap();
    for i in 0..100 {
        t.insert(&flow(i), Route::Local, Timestamp(0)).unwrap();
    }
    for i in 1000..1025 {
        t.on_packet(&flow(i), Direction::Original, ACK, 1, Timestamp(1_000));
    }
    assert_eq!(t.len(), 0);
}

#[test]
fn bytes_per_entry_at_one_million() {
    let t = ConnTable::<V4Key>::new(no_expiry(1_000_000), FlowHasher::new(0)).unwrap();
    let per = t.allocated_bytes() as f64 / t.capacity() as f64;
    println!(
        "V4Key: entry {} bytes, {per:.2} bytes/entry including index at capacity 1,000,000",
        ConnTable::<V4Key>::entry_size()
    );
    assert_eq!(ConnTable::<V4Key>::entry_size(), 48);
    assert!(per <= 64.0, "{per}");
    let w = ConnTable::<WideKey>::new(no_expiry(1_000_000), FlowHasher::new(0)).unwrap();
    let wper = w.allocated_bytes() as f64 / 1e6;
    println!(
        "WideKey: entry {} bytes, {wper:.2} bytes/entry (IPv4 flows; an IPv6 flow takes {} more)",
        ConnTable::<WideKey>::entry_size(),
        ConnTable::<WideKey>::wide_key_size() + 4
    );
    // Until its first IPv6 flow a wide table is the size of an IPv4 one.
    assert!(wper <= 64.0, "{wper}");
    // Worst case of index rounding: capacity just above a power of two * 3/4.
    for cap in [1u32, 2, 3, 97, 786_433, 1 << 20] {
        let t = ConnTable::<V4Key>::new(no_expiry(cap), FlowHasher::new(0)).unwrap();
        if cap >= 64 {
            assert!(
                t.allocated_bytes() as f64 / f64::from(cap) <= 64.0,
                "cap {cap}"
            );
        }
    }
}

/// IPv4 flows keep their key in the 48-byte entry whatever the key form;
/// the wide-key slab is allocated once, on the first IPv6 flow, and its
/// positions are reused through eviction, expiry, the sweep and removal.
#[test]
fn wide_key_slab_is_allocated_once_and_reused() {
    let mut t = ConnTable::<WideKey>::new(cfg(8), FlowHasher::new(3)).unwrap();
    let v4_only = t.allocated_bytes();
    for k in 0..8 {
        t.insert(&mixed_flow(k * 2), Route::Local, Timestamp(1))
            .unwrap();
    }
    assert_eq!(t.allocated_bytes(), v4_only);
    t.insert(&mixed_flow(1), Route::Local, Timestamp(1))
        .unwrap();
    let with_slab = t.allocated_bytes();
    assert_eq!(
        with_slab - v4_only,
        8 * (ConnTable::<WideKey>::wide_key_size() + 4)
    );
    let mut now = 1;
    for round in 0..50u32 {
        now += 10;
        for k in 0..6 {
            let f = mixed_flow(round * 12 + 2 * k + 1);
            t.insert(&f, Route::Peer(PeerId(k as u16)), Timestamp(now))
                .unwrap();
            assert_eq!(t.get(&f).unwrap().key, f);
        }
        if round % 3 == 0 {
            t.remove(&mixed_flow(round * 12 + 1));
        }
        if round % 7 == 0 {
            // Past the half-open timeout: the sweep removes them all.
            now += 200;
            t.sweep(Timestamp(now), 8);
        }
        t.check_invariants();
    }
    assert_eq!(t.allocated_bytes(), with_slab);
    assert!(t.stats().evicted > 0 && t.stats().expired > 0);
    // A clone reserves the whole slab again on its next IPv6 flow.
    let mut c = t.clone();
    c.insert(&mixed_flow(100_001), Route::Local, Timestamp(now))
        .unwrap();
    c.check_invariants();
    assert!(c.allocated_bytes() >= with_slab);
}

/// Slots far from home (distance saturated in the index slot: 3 or more
/// in tests) are found, moved by deletions and removed like the others.
#[test]
fn saturated_index_distances_keep_the_index_consistent() {
    let mut t = ConnTable::<WideKey>::new(cfg(96), FlowHasher::new(11)).unwrap();
    let mut seen = 0;
    for round in 0..40u32 {
        for k in 0..96 {
            t.insert(&mixed_flow(round * 50 + k), Route::Local, Timestamp(1))
                .unwrap();
        }
        seen = seen.max(t.saturated_slots());
        for k in (0..96).step_by(3) {
            t.remove(&mixed_flow(round * 50 + k));
        }
        t.check_invariants();
    }
    assert!(seen > 0);
}

/// The byte count saturates below the two flags kept above it: an import
/// of a larger count and packets past it change neither segment nor key.
#[test]
fn byte_counts_saturate_below_the_entry_flags() {
    let mut t = ConnTable::<WideKey>::new(cfg(4), FlowHasher::new(5)).unwrap();
    let f = mixed_flow(1);
    t.insert(&f, Route::Local, Timestamp(1)).unwrap();
    let mut blob = Vec::new();
    t.export(Timestamp(1), &mut blob);
    let n = blob.len();
    blob[n - 8..].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut u = ConnTable::<WideKey>::new(cfg(4), FlowHasher::new(5)).unwrap();
    u.import(&blob, Timestamp(1)).unwrap();
    let max = (1u64 << 62) - 1;
    assert_eq!(u.get(&f).unwrap().bytes, max);
    assert_eq!(u.half_open_len(), 1);
    u.on_packet(&f, Direction::Original, TcpFlags::SYN, 1500, Timestamp(2));
    assert_eq!(u.get(&f).unwrap().bytes, max);
    assert_eq!(u.get(&f).unwrap().key, f);
    assert_eq!(u.half_open_len(), 1);
    u.check_invariants();
}

#[test]
fn export_import_keeps_order_ages_and_counts() {
    let mut t = ConnTable::<WideKey>::new(no_expiry(16), FlowHasher::new(9)).unwrap();
    let v6 = FlowKey::new(
        IpProtocol::Udp,
        Ipv6Addr::LOCALHOST.into(),
        5,
        Ipv4Addr::LOCALHOST.into(),
        6,
    );
    t.insert(&flow(1), Route::Peer(PeerId(3)), Timestamp(1_000))
        .unwrap();
    t.insert(&v6, Route::Local, Timestamp(2_000)).unwrap();
    t.on_packet(
        &flow(1),
        Direction::Original,
        ACK | TcpFlags::FIN,
        99,
        Timestamp(3_000),
    );
    let mut blob = Vec::new();
    t.export(Timestamp(5_000), &mut blob);
    let mut u = ConnTable::<WideKey>::new(no_expiry(16), FlowHasher::new(1)).unwrap();
    assert_eq!(u.import(&blob, Timestamp(100_000)).unwrap(), 2);
    let a: Vec<_> = t.iter().collect();
    let b: Vec<_> = u.iter().collect();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (x.key, x.route, x.state, x.packets, x.bytes),
            (y.key, y.route, y.state, y.packets, y.bytes)
        );
        assert_eq!(y.last_seen.0 - x.last_seen.0, 95_000);
    }
    u.check_invariants();
    // Every truncation is an error, never a panic.
    for n in 0..blob.len() {
        assert!(u.import(&blob[..n], Timestamp(0)).is_err());
    }
    let mut v4only = ConnTable::<V4Key>::new(no_expiry(16), FlowHasher::new(1)).unwrap();
    assert_eq!(
        v4only.import(&blob, Timestamp(0)),
        Err(TableError::UnsupportedKey)
    );
    assert!(v4only.is_empty());
}

#[test]
fn batch_equals_one_by_one() {
    let mut a = ConnTable::<V4Key>::new(cfg(64), FlowHasher::new(4)).unwrap();
    for i in 0..64 {
        a.insert(&flow(i), Route::Peer(PeerId(i as u16)), Timestamp(0))
            .unwrap();
    }
    let mut b = a.clone();
    let flags = [ACK, TcpFlags::RST, ACK | TcpFlags::FIN, TcpFlags::FIN];
    let pkts: Vec<PacketInfo> = (0..100u32)
        .map(|i| PacketInfo {
            flow: flow(i * 7 % 80),
            dir: if i % 3 == 0 {
                Direction::Reply
            } else {
                Direction::Original
            },
            flags: flags[(i % 4) as usize],
            len: i,
        })
        .collect();
    let mut out = Vec::new();
    a.on_packet_batch(&pkts, Timestamp(20), &mut out);
    let one: Vec<_> = pkts
        .iter()
        .map(|p| b.on_packet(&p.flow, p.dir, p.flags, p.len, Timestamp(20)))
        .collect();
    assert_eq!(out, one);
    assert_eq!(a.iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
    a.check_invariants();
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u32),
    Packet(u32),
    Remove(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u32..48).prop_map(Op::Insert),
        2 => (0u32..48).prop_map(Op::Packet),
        1 => (0u32..48).prop_map(Op::Remove),
    ]
}

/// The two-segment model: `prot` and `prob` deques, front = most recent.
struct Model {
    prot: VecDeque<u32>,
    prob: VecDeque<u32>,
    reserve: usize,
}

impl Model {
    fn victim(&self) -> Option<u32> {
        if self.prob.len() >= self.reserve || self.prot.is_empty() {
            self.prob.back().copied()
        } else {
            self.prot.back().copied()
        }
    }

    fn evict(&mut self) -> Option<u32> {
        if self.prob.len() >= self.reserve || self.prot.is_empty() {
            self.prob.pop_back()
        } else {
            self.prot.pop_back()
        }
    }

    fn take(&mut self, k: u32) -> Option<bool> {
        if let Some(p) = self.prob.iter().position(|&x| x == k) {
            self.prob.remove(p);
            return Some(true);
        }
        let p = self.prot.iter().position(|&x| x == k)?;
        self.prot.remove(p);
        Some(false)
    }
}

/// Flow `k` of a mixed table: IPv6 for odd `k` (key in the wide-key slab),
/// IPv4 for even `k` (key in the entry).
fn mixed_flow(k: u32) -> FlowKey {
    if k % 2 == 1 {
        FlowKey::new(
            IpProtocol::Tcp,
            IpAddr::V6(Ipv6Addr::from_bits(0x2001_0db8 << 96 | u128::from(k))),
            1000,
            Ipv6Addr::LOCALHOST.into(),
            443,
        )
    } else {
        flow(k)
    }
}

/// Against a model of two deques (probation for `SynSeen` entries,
/// protected for the rest; front = most recent): the table never holds
/// more than its capacity, evicts exactly the model's victim (from
/// probation once it holds the reserve), promotes on the client's ACK,
/// and iterates in exactly the model's order.
fn check_against_model<K: TableKey>(
    cap: u32,
    reserve_pick: u32,
    ops: Vec<Op>,
    flow: fn(u32) -> FlowKey,
) -> core::result::Result<(), TestCaseError> {
    let reserve = reserve_pick.min(cap);
    let c = ConnTableConfig {
        half_open_reserve: reserve,
        ..no_expiry(cap)
    };
    let mut t = ConnTable::<K>::new(c, FlowHasher::new(u64::from(cap))).unwrap();
    let mut m = Model {
        prot: VecDeque::new(),
        prob: VecDeque::new(),
        reserve: c.effective_half_open_reserve() as usize,
    };
    let now = Timestamp(1);
    for op in ops {
        match op {
            Op::Insert(k) => {
                let out = t.insert(&flow(k), Route::Local, now).unwrap();
                match m.take(k) {
                    Some(on_prob) => {
                        prop_assert!(matches!(out, InsertOutcome::Existing(_)));
                        if on_prob {
                            m.prob.push_front(k)
                        } else {
                            m.prot.push_front(k)
                        }
                    }
                    None => {
                        let expect = if m.prob.len() + m.prot.len() == cap as usize {
                            m.evict().map(flow)
                        } else {
                            None
                        };
                        prop_assert_eq!(out, InsertOutcome::Inserted { evicted: expect });
                        m.prob.push_front(k);
                    }
                }
            }
            Op::Packet(k) => {
                let out = t.on_packet(&flow(k), Direction::Original, ACK, 1, now);
                if m.take(k).is_some() {
                    prop_assert_eq!(out, PacketOutcome::Forward(Route::Local));
                    m.prot.push_front(k);
                } else {
                    prop_assert_eq!(out, PacketOutcome::Unknown);
                }
            }
            Op::Remove(k) => {
                let had = m.take(k);
                prop_assert_eq!(t.remove(&flow(k)).map(|e| e.key), had.map(|_| flow(k)));
            }
        }
        prop_assert!(t.len() <= cap as usize);
        prop_assert_eq!(t.half_open_len(), m.prob.len());
        let order: Vec<FlowKey> = t.iter().map(|e| e.key).collect();
        let want: Vec<FlowKey> = m
            .prot
            .iter()
            .chain(m.prob.iter())
            .map(|&k| flow(k))
            .collect();
        prop_assert_eq!(order, want);
        prop_assert_eq!(t.lru(), m.victim().map(flow));
        let st = t.stats();
        prop_assert_eq!(st.evicted, st.evicted_half_open + st.evicted_established);
        t.check_invariants();
    }
    // An export read back gives the same entries in the same order.
    let mut blob = Vec::new();
    t.export(now, &mut blob);
    let mut back = ConnTable::<K>::new(c, FlowHasher::new(7)).unwrap();
    back.import(&blob, now).unwrap();
    back.check_invariants();
    prop_assert_eq!(
        back.iter().collect::<Vec<_>>(),
        t.iter().collect::<Vec<_>>()
    );
    Ok(())
}

proptest! {
    /// The model check on IPv4 keys.
    #[test]
    fn capacity_and_lru_order_match_model(cap in 1u32..12, reserve_pick in 0u32..13, ops in prop::collection::vec(op(), 1..200)) {
        check_against_model::<V4Key>(cap, reserve_pick, ops, flow)?;
    }

    /// The same with IPv4 and IPv6 flows mixed in a wide table: the keys
    /// in the entries and those in the wide-key slab behave alike, and the
    /// slab holds exactly the IPv6 entries' keys (`check_invariants`).
    #[test]
    fn mixed_keys_match_model(cap in 1u32..12, reserve_pick in 0u32..13, ops in prop::collection::vec(op(), 1..200)) {
        check_against_model::<WideKey>(cap, reserve_pick, ops, mixed_flow)?;
    }

    /// An entry idle for exactly its state's timeout minus 1 ns is alive;
    /// at exactly the timeout it is gone. Holds for each state.
    #[test]
    fn expiry_exact_at_boundaries(
        t0 in 0u64..1_000_000_000,
        timeouts in prop::array::uniform4(1u64..1_000_000),
        state in 0usize..4,
        alive in any::<bool>(),
    ) {
        let c = ConnTableConfig {
            capacity: 4,
            half_open_timeout: Duration::from_nanos(timeouts[0]),
            established_timeout: Duration::from_nanos(timeouts[1]),
            closing_timeout: Duration::from_nanos(timeouts[2]),
            fin_grace: Duration::from_nanos(timeouts[3]),
            sweep_per_call: 1,
            half_open_reserve: 0,
        };
        let mut t = ConnTable::<V4Key>::new(c, FlowHasher::new(t0)).unwrap();
        let f = flow(5);
        t.insert(&f, Route::Local, Timestamp(t0)).unwrap();
        let steps: &[(Direction, TcpFlags)] = match state {
            0 => &[],
            1 => &[(Direction::Original, ACK)],
            2 => &[(Direction::Original, ACK), (Direction::Original, TcpFlags::FIN)],
            _ => &[(Direction::Original, ACK), (Direction::Original, TcpFlags::FIN), (Direction::Reply, TcpFlags::FIN)],
        };
        for &(d, fl) in steps {
            prop_assert_eq!(t.on_packet(&f, d, fl, 1, Timestamp(t0)), PacketOutcome::Forward(Route::Local));
        }
        let want = [ConnState::SynSeen, ConnState::Established, ConnState::Closing, ConnState::Closed][state];
        prop_assert_eq!(t.get(&f).unwrap().state, want);
        let at = t0 + timeouts[state] - u64::from(alive);
        prop_assert_eq!(t.lookup(&f, Timestamp(at)).is_some(), alive);
        // The sweep agrees with lazy expiry at the same instant.
        let mut u = ConnTable::<V4Key>::new(c, FlowHasher::new(t0)).unwrap();
        u.insert(&f, Route::Local, Timestamp(t0)).unwrap();
        for &(d, fl) in steps { u.on_packet(&f, d, fl, 1, Timestamp(t0)); }
        prop_assert_eq!(u.sweep(Timestamp(at), 4), usize::from(!alive));
    }

    /// Arbitrary bytes never panic the importer and never break the table.
    #[test]
    fn import_of_garbage_is_an_error_or_consistent(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut t = ConnTable::<WideKey>::new(no_expiry(4), FlowHasher::new(0)).unwrap();
        let mut blob = b"DPRC\x01".to_vec();
        blob.extend_from_slice(&bytes);
        let _ = t.import(&blob, Timestamp(0));
        let _ = t.import(&bytes, Timestamp(0));
        t.check_invariants();
    }
}

// ---------------------------------------------------------------- LoadTable

fn lt() -> LoadTable {
    let c = LoadTableConfig {
        report_interval: Duration::from_nanos(100),
        suspect_after_missed: 2,
        ..LoadTableConfig::default()
    };
    LoadTable::new(c, PeerId(0), Capacity::default()).unwrap()
}

fn report(seq: u64, conns: u32, cpu: f32) -> LoadReport {
    LoadReport {
        seq,
        figures: LoadFigures {
            open_connections: conns,
            ..LoadFigures::default()
        },
        capacity: Capacity { cpu, memory: 1.0 },
        draining: false,
    }
}

fn addr(i: u16) -> IpAddr {
    Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8).into()
}

#[test]
fn load_config_errors_name_the_field() {
    let field = |c: LoadTableConfig| match c.validate() {
        Err(TableError::InvalidConfig { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let d = LoadTableConfig::default();
    assert_eq!(
        field(LoadTableConfig {
            report_interval: Duration::ZERO,
            ..d
        }),
        "report_interval"
    );
    assert_eq!(
        field(LoadTableConfig {
            suspect_after_missed: 3,
            dead_after_missed: 2,
            ..d
        }),
        "dead_after_missed"
    );
    let w = MetricWeights {
        open_connections: f64::NAN,
        cpu_utilisation: 1.0,
        redirected_connections: 0.0,
        active_sockets: 0.0,
    };
    assert_eq!(
        field(LoadTableConfig {
            metric: LoadMetric::Weighted(w),
            ..d
        }),
        "metric.open_connections"
    );
    let w = MetricWeights {
        open_connections: 1.0,
        cpu_utilisation: -1.0,
        ..w
    };
    assert_eq!(
        field(LoadTableConfig {
            metric: LoadMetric::Weighted(w),
            ..d
        }),
        "metric.cpu_utilisation"
    );
    assert_eq!(
        field(LoadTableConfig {
            capacity_weights: CapacityWeights {
                cpu: 0.0,
                memory: 0.0
            },
            ..d
        }),
        "capacity_weights"
    );
    let mut t = lt();
    t.add_peer(PeerId(1), addr(1), vec![], Timestamp(0))
        .unwrap();
    assert_eq!(
        t.apply_report(PeerId(1), &report(1, 1, f32::NAN), Timestamp(0)),
        Err(TableError::InvalidReport {
            field: "capacity.cpu"
        })
    );
    assert_eq!(
        t.apply_report(
            PeerId(1),
            &LoadReport {
                capacity: Capacity {
                    cpu: 0.0,
                    memory: 0.0
                },
                ..report(1, 1, 1.0)
            },
            Timestamp(0)
        ),
        Err(TableError::InvalidReport { field: "capacity" })
    );
    assert_eq!(
        t.add_peer(PeerId(1), addr(1), vec![], Timestamp(0)),
        Err(TableError::DuplicatePeer(1))
    );
    assert_eq!(
        t.add_peer(PeerId(0), addr(1), vec![], Timestamp(0)),
        Err(TableError::DuplicatePeer(0))
    );
    assert_eq!(
        t.record_redirect(PeerId(9)),
        Err(TableError::UnknownPeer(9))
    );
}

#[test]
fn peer_states_follow_missed_intervals() {
    let mut t = lt();
    t.add_peer(PeerId(1), addr(1), vec![addr(100)], Timestamp(0))
        .unwrap();
    assert_eq!(t.peer(PeerId(1)).unwrap().state, PeerState::Suspect);
    assert_eq!(
        t.apply_report(PeerId(1), &report(5, 10, 1.0), Timestamp(1_000))
            .unwrap(),
        ReportOutcome::Applied
    );
    assert_eq!(
        t.apply_report(PeerId(1), &report(5, 10, 1.0), Timestamp(1_001))
            .unwrap(),
        ReportOutcome::Stale
    );
    assert!(t.is_eligible(PeerId(1)));
    // Interval 100 ns, suspect after 2 missed, dead after 4.
    assert_eq!(t.refresh(Timestamp(1_199)), 0);
    assert_eq!(t.refresh(Timestamp(1_200)), 1);
    assert_eq!(t.peer(PeerId(1)).unwrap().state, PeerState::Suspect);
    t.refresh(Timestamp(1_399));
    assert_eq!(t.peer(PeerId(1)).unwrap().state, PeerState::Suspect);
    t.refresh(Timestamp(1_400));
    assert_eq!(t.peer(PeerId(1)).unwrap().state, PeerState::Dead);
    assert_eq!(t.least_loaded_peer(), None);
    // A dead peer that restarted (sequence from 0) is accepted.
    assert_eq!(
        t.apply_report(PeerId(1), &report(0, 1, 1.0), Timestamp(2_000))
            .unwrap(),
        ReportOutcome::Applied
    );
    assert_eq!(t.least_loaded_peer(), Some((PeerId(1), 1.0)));
    t.mark_draining(PeerId(1)).unwrap();
    t.apply_report(PeerId(1), &report(1, 1, 1.0), Timestamp(2_050))
        .unwrap();
    assert_eq!(t.peer(PeerId(1)).unwrap().state, PeerState::Draining);
    assert_eq!(t.least_loaded_peer(), None);
    t.mark_left(PeerId(1)).unwrap();
    assert_eq!(
        t.apply_report(PeerId(1), &report(9, 1, 1.0), Timestamp(2_060))
            .unwrap(),
        ReportOutcome::PeerLeft
    );
    t.add_peer(PeerId(1), addr(1), vec![], Timestamp(3_000))
        .unwrap();
    assert_eq!(t.peer(PeerId(1)).unwrap().state, PeerState::Suspect);
}

#[test]
fn optimistic_accounting_until_next_report() {
    let mut t = lt();
    t.add_peer(PeerId(1), addr(1), vec![], Timestamp(0))
        .unwrap();
    t.apply_report(PeerId(1), &report(1, 10, 2.0), Timestamp(0))
        .unwrap();
    assert_eq!(t.host_load(HostRef::Peer(PeerId(1))), 5.0);
    for _ in 0..4 {
        t.record_redirect(PeerId(1)).unwrap();
    }
    assert_eq!(t.host_load(HostRef::Peer(PeerId(1))), 7.0);
    t.apply_report(PeerId(1), &report(2, 10, 2.0), Timestamp(50))
        .unwrap();
    assert_eq!(t.host_load(HostRef::Peer(PeerId(1))), 5.0);
    t.set_local(
        LoadFigures {
            open_connections: 3,
            ..LoadFigures::default()
        },
        Capacity::default(),
    )
    .unwrap();
    assert_eq!(t.local_load(), 3.0);
}

/// The estimator between two measurements: measured + opened − ended,
/// for this host and for each peer, never below zero, reset by the next
/// measurement (or report). However long no measurement comes (a
/// descheduled daemon), connections that come and go leave no trace.
#[test]
fn the_hosts_own_close_count_lowers_the_estimate_until_the_next_measurement() {
    let mut t = lt();
    let open = |n| LoadFigures {
        open_connections: n,
        ..LoadFigures::default()
    };
    t.set_local(open(4), Capacity::default()).unwrap();
    t.record_local();
    assert_eq!(t.local_load(), 5.0);
    // Three closes since the measurement (the counter's reading less its
    // reading at the dump), given again as it grows: not added up.
    t.set_local_closed(2);
    assert_eq!(t.local_load(), 3.0);
    t.set_local_closed(3);
    t.set_local_closed(3);
    assert_eq!(t.local_load(), 2.0);
    // Never below zero.
    t.set_local_closed(50);
    assert_eq!(t.local_load(), 0.0);
    // The next measurement lets it go.
    t.set_local(open(1), Capacity::default()).unwrap();
    assert_eq!(t.local_load(), 1.0);
}

#[test]
fn load_estimate_lets_ended_connections_go() {
    let mut t = lt();
    t.add_peer(PeerId(1), addr(1), vec![], Timestamp(0))
        .unwrap();
    t.apply_report(PeerId(1), &report(1, 4, 1.0), Timestamp(0))
        .unwrap();
    let open = |n| LoadFigures {
        open_connections: n,
        ..LoadFigures::default()
    };
    t.set_local(open(2), Capacity::default()).unwrap();
    for _ in 0..100_000 {
        t.record_local();
        t.record_redirect(PeerId(1)).unwrap();
        t.record_local_end();
        t.record_redirect_end(PeerId(1)).unwrap();
    }
    assert_eq!(t.local_load(), 2.0);
    assert_eq!(t.host_load(HostRef::Peer(PeerId(1))), 4.0);
    // Ends of connections that were open at the measurement lower it.
    t.record_local_end();
    t.record_redirect_end(PeerId(1)).unwrap();
    assert_eq!(t.local_load(), 1.0);
    assert_eq!(t.host_load(HostRef::Peer(PeerId(1))), 3.0);
    // Never below zero, and the least-loaded index follows.
    for _ in 0..10 {
        t.record_local_end();
        t.record_redirect_end(PeerId(1)).unwrap();
    }
    assert_eq!(t.local_load(), 0.0);
    assert_eq!(t.least_loaded_peer(), Some((PeerId(1), 0.0)));
    // The next measurement and report replace every correction.
    t.set_local(open(5), Capacity::default()).unwrap();
    t.apply_report(PeerId(1), &report(2, 6, 1.0), Timestamp(1))
        .unwrap();
    assert_eq!((t.local_pending(), t.local_ended()), (0, 0));
    assert_eq!(t.local_load(), 5.0);
    assert_eq!(t.host_load(HostRef::Peer(PeerId(1))), 6.0);
    assert_eq!(
        t.record_redirect_end(PeerId(9)),
        Err(TableError::UnknownPeer(9))
    );
}

/// A measurement that took time starts with the corrections it is given.
#[test]
fn a_corrected_measurement_starts_from_its_corrections() {
    let mut t = lt();
    let open = |n| LoadFigures {
        open_connections: n,
        ..LoadFigures::default()
    };
    t.record_local();
    t.set_local_corrected(open(3), Capacity::default(), 2, 1)
        .unwrap();
    assert_eq!((t.local_pending(), t.local_ended()), (2, 1));
    assert_eq!(t.local_load(), 4.0);
    t.set_local(open(3), Capacity::default()).unwrap();
    assert_eq!(t.local_load(), 3.0);
}

/// A table keyed by `WideKey` keeps a SYN's initial sequence number in its
/// entry (in padding: the entry is no larger); `V4Key` has no room and
/// keeps none.
#[test]
fn syn_sequence_numbers_are_kept_where_there_is_room() {
    let now = Timestamp(1);
    let mut w = ConnTable::<WideKey>::new(cfg(8), FlowHasher::new(0)).unwrap();
    w.insert_syn(&flow(1), Route::Local, 77, now).unwrap();
    w.insert(&flow(2), Route::Local, now).unwrap();
    assert_eq!(w.get(&flow(1)).unwrap().isn, Some(77));
    assert_eq!(w.get(&flow(2)).unwrap().isn, None);
    // A live entry is not replaced by another SYN: the caller decides.
    w.insert_syn(&flow(1), Route::Local, 99, now).unwrap();
    assert_eq!(w.get(&flow(1)).unwrap().isn, Some(77));
    let mut v = ConnTable::<V4Key>::new(cfg(8), FlowHasher::new(0)).unwrap();
    v.insert_syn(&flow(1), Route::Local, 77, now).unwrap();
    assert_eq!(v.get(&flow(1)).unwrap().isn, None);
    assert_eq!(ConnTable::<WideKey>::entry_size(), 48);
    // Export and import carry no ISN (the format has no field for it).
    let mut bytes = Vec::new();
    w.export(now, &mut bytes);
    let mut back = ConnTable::<WideKey>::new(cfg(8), FlowHasher::new(0)).unwrap();
    assert_eq!(back.import(&bytes, now).unwrap(), 2);
    assert_eq!(back.get(&flow(1)).unwrap().isn, None);
    assert_eq!(back.get(&flow(1)).unwrap().state, ConnState::SynSeen);
}

/// Ties for the least load are broken uniformly, not by order of addition;
/// a unique least-loaded peer is always chosen; ineligible peers never.
#[test]
fn least_loaded_ties_are_broken_uniformly() {
    let mut t = lt();
    for i in 1..=5u16 {
        t.add_peer(PeerId(i), addr(i), vec![], Timestamp(0))
            .unwrap();
        let load = if i == 4 { 9 } else { 2 };
        t.apply_report(PeerId(i), &report(1, load, 1.0), Timestamp(0))
            .unwrap();
    }
    t.mark_draining(PeerId(5)).unwrap();
    let mut counts = [0u32; 6];
    let mut x = 1u64;
    for _ in 0..40_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let (p, l) = t.least_loaded_peer_among_ties(x).unwrap();
        assert_eq!(l, 2.0);
        counts[usize::from(p.0)] += 1;
    }
    assert_eq!((counts[4], counts[5]), (0, 0), "{counts:?}");
    for c in &counts[1..=3] {
        assert!((12_000..14_700).contains(c), "{counts:?}");
    }
    // One least-loaded peer: always it.
    t.record_redirect(PeerId(1)).unwrap();
    t.record_redirect(PeerId(2)).unwrap();
    for r in [0, u64::MAX / 3, u64::MAX] {
        assert_eq!(t.least_loaded_peer_among_ties(r), Some((PeerId(3), 2.0)));
    }
    let empty = lt();
    assert_eq!(empty.least_loaded_peer_among_ties(7), None);
}

proptest! {
    /// Whatever the loads and states, the choice is one of the peers with
    /// the least load among the eligible ones, and every such peer is
    /// reachable by some random value.
    #[test]
    fn tie_break_picks_only_and_every_least_loaded_peer(
        loads in proptest::collection::vec((0u32..4, any::<bool>()), 1..20),
    ) {
        let mut t = lt();
        for (i, (l, alive)) in loads.iter().enumerate() {
            let id = PeerId(i as u16 + 1);
            t.add_peer(id, addr(id.0), vec![], Timestamp(0)).unwrap();
            if *alive {
                t.apply_report(id, &report(1, *l, 1.0), Timestamp(0)).unwrap();
            }
        }
        let best = loads.iter().filter(|x| x.1).map(|x| x.0).min();
        let tied: Vec<u16> = loads
            .iter()
            .enumerate()
            .filter(|(_, x)| x.1 && Some(x.0) == best)
            .map(|(i, _)| i as u16 + 1)
            .collect();
        let n = tied.len() as u64;
        let mut seen = std::collections::BTreeSet::new();
        for k in 0..n.max(1) {
            // The middle of the k-th of n equal shares of the u64 range.
            let r = ((u128::from(k) * 2 + 1) * (1u128 << 64) / (2 * u128::from(n.max(1)))) as u64;
            match t.least_loaded_peer_among_ties(r) {
                Some((p, l)) => {
                    prop_assert!(tied.contains(&p.0));
                    prop_assert_eq!(Some(l as u32), best);
                    seen.insert(p.0);
                }
                None => prop_assert!(best.is_none()),
            }
        }
        prop_assert_eq!(seen.len(), tied.len());
    }
}

#[test]
fn sampling_is_weighted_by_capacity() {
    let mut t = lt();
    for i in 1..=3u16 {
        t.add_peer(PeerId(i), addr(i), vec![], Timestamp(0))
            .unwrap();
        t.apply_report(PeerId(i), &report(1, 0, f32::from(i)), Timestamp(0))
            .unwrap();
    }
    t.mark_draining(PeerId(2)).unwrap();
    // Weights: local 1, peer1 1, peer2 0 (draining), peer3 3 → total 5.
    assert_eq!(t.total_weight(), 5000);
    let mut counts = [0u32; 4];
    let n = 100_000u64;
    for i in 0..n {
        let r = i.wrapping_mul(u64::MAX / n);
        match t.sample_host(r) {
            HostRef::Local => counts[0] += 1,
            HostRef::Peer(PeerId(p)) => counts[usize::from(p)] += 1,
        }
    }
    assert_eq!(counts[2], 0);
    for (i, want) in [(0, 0.2), (1, 0.2), (3, 0.6)] {
        let got = f64::from(counts[i]) / n as f64;
        assert!((got - want).abs() < 0.01, "host {i}: {got}");
    }
}

fn arb_state() -> impl Strategy<Value = u8> {
    0u8..5
}

proptest! {
    /// The indices agree with a brute-force scan and never name an
    /// ineligible peer, through any mix of reports and state changes.
    #[test]
    fn indices_match_brute_force(peers in prop::collection::vec((0u32..1000, 1u8..8, arb_state(), 0u8..4), 1..40), samples in prop::collection::vec(any::<u64>(), 20)) {
        let mut t = lt();
        for (i, &(load, cap, state, pending)) in peers.iter().enumerate() {
            let id = PeerId(i as u16 + 1);
            t.add_peer(id, addr(id.0), vec![], Timestamp(0)).unwrap();
            if state != 1 {
                t.apply_report(id, &report(1, load, f32::from(cap)), Timestamp(0)).unwrap();
            }
            for _ in 0..pending { t.record_redirect(id).unwrap(); }
            match state {
                2 => { t.mark_draining(id).unwrap(); }
                3 => { t.mark_left(id).unwrap(); }
                4 => { t.refresh(Timestamp(1_000_000)); t.apply_report(id, &report(2, load, f32::from(cap)), Timestamp(1_000_000)).unwrap(); }
                _ => {}
            }
        }
        let brute = t.peers().iter().filter(|p| p.state == PeerState::Alive)
            .map(|p| (p.load(), p.id))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        prop_assert_eq!(t.least_loaded_peer().map(|x| x.1), brute.map(|x| x.0));
        if let Some((id, _)) = t.least_loaded_peer() { prop_assert!(t.is_eligible(id)); }
        for r in samples {
            if let HostRef::Peer(id) = t.sample_host(r) { prop_assert!(t.is_eligible(id)); }
        }
        let total: u64 = (0..t.host_count()).map(|i| t.host_weight(i).unwrap().1).sum();
        prop_assert_eq!(total, t.total_weight());
    }
}

#[test]
fn insert_established_starts_established_and_keeps_live_entries() {
    let mut t: ConnTable<V4Key> = ConnTable::new(cfg(8), FlowHasher::new(1)).unwrap();
    let f = flow(1);
    assert!(matches!(
        t.insert_established(&f, Route::Peer(PeerId(2)), Timestamp(0)),
        Ok(InsertOutcome::Inserted { evicted: None })
    ));
    let e = t.get(&f).unwrap();
    assert_eq!(e.state, ConnState::Established);
    assert_eq!(e.route, Route::Peer(PeerId(2)));
    // Established timeout (1000 ns), not half-open (100 ns).
    assert!(t.lookup(&f, Timestamp(500)).is_some());
    // A live entry is not overwritten.
    assert_eq!(
        t.insert_established(&f, Route::Local, Timestamp(600))
            .unwrap(),
        InsertOutcome::Existing(Route::Peer(PeerId(2)))
    );
    // An expired one is replaced.
    assert!(matches!(
        t.insert_established(&f, Route::Local, Timestamp(5_000)),
        Ok(InsertOutcome::Inserted { .. })
    ));
    assert_eq!(t.get(&f).unwrap().route, Route::Local);
}

#[test]
fn draining_follows_reports_unless_held_here() {
    let mut t = lt();
    t.add_peer(PeerId(1), addr(1), vec![], Timestamp(0))
        .unwrap();
    let mut r = report(1, 1, 1.0);
    r.draining = true;
    t.apply_report(PeerId(1), &r, Timestamp(10)).unwrap();
    assert_eq!(t.peer(PeerId(1)).unwrap().state, PeerState::Draining);
    // The peer says it is active again (an upgrade done): it is.
    t.apply_report(PeerId(1), &report(2, 1, 1.0), Timestamp(20))
        .unwrap();
    assert_eq!(t.peer(PeerId(1)).unwrap().state, PeerState::Alive);
    // Drained by an operator here: its reports do not undo that.
    t.mark_draining(PeerId(1)).unwrap();
    t.apply_report(PeerId(1), &report(3, 1, 1.0), Timestamp(30))
        .unwrap();
    assert_eq!(t.peer(PeerId(1)).unwrap().state, PeerState::Draining);
}

/// An engine per queue: each table counts its own connections on top of
/// the shared measurement and adds what the others counted, as told; the
/// next measurement lets both go.
#[test]
fn local_estimate_adds_the_other_routers_counts() {
    let mut t = lt();
    let open = |n| LoadFigures {
        open_connections: n,
        ..LoadFigures::default()
    };
    t.set_local(open(5), Capacity::default()).unwrap();
    t.record_local();
    t.record_local();
    t.record_local_end();
    assert_eq!(t.local_net(), 1);
    t.set_local_others(3);
    assert_eq!(t.local_load(), 9.0);
    assert_eq!(
        t.local_net(),
        1,
        "the others' count is not this table's own"
    );
    t.set_local_others(-20);
    assert_eq!(t.local_load(), 0.0, "never below zero");
    t.set_local(open(4), Capacity::default()).unwrap();
    assert_eq!((t.local_load(), t.local_net()), (4.0, 0));
}

// ------------------------------------------------- half-open probation (2Q)

fn established(t: &mut ConnTable<V4Key>, n: u32, now: Timestamp) {
    t.insert(&flow(n), Route::Peer(PeerId(1)), now).unwrap();
    t.on_packet(&flow(n), Direction::Original, ACK, 40, now);
}

/// Flood flows: distinct from `flow(n)` for the n the tests use.
fn flood_flow(n: u32) -> FlowKey {
    FlowKey::new(
        IpProtocol::Tcp,
        IpAddr::V4(Ipv4Addr::from_bits(0xc612_0000 | (n >> 14))),
        (n & 0x3fff) as u16 + 1024,
        Ipv4Addr::new(198, 18, 1, 1).into(),
        80,
    )
}

#[test]
fn a_syn_flood_never_evicts_established_entries() {
    let cap = 256;
    let mut t = ConnTable::<V4Key>::new(no_expiry(cap), FlowHasher::new(3)).unwrap();
    assert_eq!(t.half_open_reserve(), 64);
    // Up to capacity minus the reserve, established entries are safe.
    for i in 0..cap - 64 {
        established(&mut t, i, Timestamp(1));
    }
    for n in 0..cap * 10 {
        let out = t
            .insert(&flood_flow(n), Route::Local, Timestamp(2))
            .unwrap();
        assert!(matches!(out, InsertOutcome::Inserted { .. }));
    }
    for i in 0..cap - 64 {
        assert_eq!(t.get(&flow(i)).unwrap().state, ConnState::Established);
    }
    let st = t.stats();
    assert_eq!(st.evicted_established, 0);
    assert_eq!(st.evicted_half_open, u64::from(cap * 10 - 64));
    assert_eq!(t.half_open_len(), 64);
    t.check_invariants();
}

#[test]
fn a_legit_syn_promoted_in_time_survives_the_flood() {
    let cap = 256;
    let mut t = ConnTable::<V4Key>::new(no_expiry(cap), FlowHasher::new(4)).unwrap();
    let mut n = 0;
    for i in 0..100 {
        t.insert(&flow(i), Route::Local, Timestamp(1)).unwrap();
        // 150 flood SYNs between the SYN and its ACK: fewer than the 156
        // entries probation holds once the flood has filled the table.
        for _ in 0..150 {
            t.insert(&flood_flow(n), Route::Local, Timestamp(1))
                .unwrap();
            n += 1;
        }
        assert_eq!(
            t.on_packet(&flow(i), Direction::Original, ACK, 40, Timestamp(1)),
            PacketOutcome::Forward(Route::Local),
            "connection {i}"
        );
    }
    // The SYN-ACK seen from the server promotes too (a peer's served table).
    t.insert(&flow(500), Route::Local, Timestamp(1)).unwrap();
    t.on_packet(
        &flow(500),
        Direction::Reply,
        ACK | TcpFlags::SYN,
        40,
        Timestamp(1),
    );
    for _ in 0..cap * 4 {
        t.insert(&flood_flow(n), Route::Local, Timestamp(1))
            .unwrap();
        n += 1;
    }
    for i in (0..100).chain([500]) {
        assert_eq!(t.get(&flow(i)).unwrap().state, ConnState::Established);
    }
    // One promoted too late is gone, counted as a half-open eviction.
    t.insert(&flow(600), Route::Local, Timestamp(1)).unwrap();
    for _ in 0..cap {
        t.insert(&flood_flow(n), Route::Local, Timestamp(1))
            .unwrap();
        n += 1;
    }
    assert_eq!(
        t.on_packet(&flow(600), Direction::Original, ACK, 40, Timestamp(1)),
        PacketOutcome::Unknown
    );
    assert_eq!(t.stats().evicted_established, 0);
    t.check_invariants();
}

#[test]
fn a_table_full_of_established_still_evicts_lru_and_keeps_the_reserve() {
    let cap = 64;
    let mut t = ConnTable::<V4Key>::new(no_expiry(cap), FlowHasher::new(5)).unwrap();
    for i in 0..cap {
        established(&mut t, i, Timestamp(1));
    }
    // Established entries inserted at capacity evict the least recently used.
    let out = t
        .insert_established(&flow(1000), Route::Local, Timestamp(2))
        .unwrap();
    assert_eq!(
        out,
        InsertOutcome::Inserted {
            evicted: Some(flow(0))
        }
    );
    // New SYNs take established entries, oldest first, up to the reserve
    // (16): each new connection has 16 SYNs' time to complete.
    for k in 0..16 {
        let out = t
            .insert(&flood_flow(k), Route::Local, Timestamp(3))
            .unwrap();
        assert_eq!(
            out,
            InsertOutcome::Inserted {
                evicted: Some(flow(k + 1))
            }
        );
    }
    let out = t
        .insert(&flood_flow(16), Route::Local, Timestamp(3))
        .unwrap();
    assert_eq!(
        out,
        InsertOutcome::Inserted {
            evicted: Some(flood_flow(0))
        }
    );
    let st = t.stats();
    assert_eq!((st.evicted_established, st.evicted_half_open), (17, 1));
    // UDP (no handshake) is protected at once.
    let udp = FlowKey::new(IpProtocol::Udp, flow(1).src, 53, flow(1).dst, 53);
    t.insert(&udp, Route::Local, Timestamp(4)).unwrap();
    assert_eq!(t.half_open_len(), 15);
    t.check_invariants();
}

#[test]
fn promotion_by_fin_confirm_and_revival_after_rst_and_export_keeps_segments() {
    let mut t = ConnTable::<V4Key>::new(no_expiry(16), FlowHasher::new(6)).unwrap();
    for i in 0..5 {
        t.insert(&flow(i), Route::Local, Timestamp(1)).unwrap();
    }
    assert_eq!(t.half_open_len(), 5);
    t.on_packet(
        &flow(0),
        Direction::Original,
        TcpFlags::FIN,
        40,
        Timestamp(2),
    );
    assert!(t.confirm_open(&flow(1), Timestamp(2)));
    // An RST keeps a half-open entry on probation; the connection going on
    // revives and promotes it.
    t.on_packet(&flow(2), Direction::Reply, TcpFlags::RST, 40, Timestamp(2));
    assert_eq!(t.half_open_len(), 3);
    t.check_invariants();
    t.on_packet(&flow(2), Direction::Original, ACK, 40, Timestamp(3));
    assert_eq!(t.half_open_len(), 2);
    assert_eq!(t.get(&flow(2)).unwrap().state, ConnState::Established);
    t.check_invariants();
    let mut blob = Vec::new();
    t.export(Timestamp(4), &mut blob);
    let mut u = ConnTable::<V4Key>::new(no_expiry(16), FlowHasher::new(7)).unwrap();
    assert_eq!(u.import(&blob, Timestamp(4)).unwrap(), 5);
    assert_eq!(u.half_open_len(), 2);
    assert_eq!(
        u.iter().map(|e| e.key).collect::<Vec<_>>(),
        t.iter().map(|e| e.key).collect::<Vec<_>>()
    );
    u.check_invariants();
}

#[test]
fn half_open_reserve_is_validated_and_split_over_shards() {
    let c = ConnTableConfig {
        half_open_reserve: 9,
        ..no_expiry(8)
    };
    assert_eq!(
        c.validate(),
        Err(TableError::InvalidConfig {
            field: "half_open_reserve",
            reason: "must be at most `capacity`"
        })
    );
    let s = ShardedConnTable::<V4Key>::new(
        ConnTableConfig {
            half_open_reserve: 100,
            ..no_expiry(1000)
        },
        3,
        FlowHasher::new(0),
    )
    .unwrap();
    assert!(s.shards().iter().all(|t| t.half_open_reserve() == 34));
}

/// One-list LRU, the table before the probation segment (a model).
struct OneLru {
    cap: usize,
    seq: u64,
    at: std::collections::HashMap<FlowKey, u64>,
    order: std::collections::BTreeMap<u64, FlowKey>,
}

impl OneLru {
    fn touch_or_insert(&mut self, f: FlowKey) {
        if let Some(old) = self.at.remove(&f) {
            self.order.remove(&old);
        } else if self.at.len() == self.cap {
            let (_, v) = self.order.pop_first().unwrap();
            self.at.remove(&v);
        }
        self.seq += 1;
        self.at.insert(f, self.seq);
        self.order.insert(self.seq, f);
    }
}

/// What a policy loses: `(established lost, legit handshakes lost)`.
/// `est` idle established connections, then `flood` SYNs from distinct
/// sources with, every `every` of them, a legit connection whose ACK comes
/// `gap` SYNs after its SYN. `reserve` None is the one-list LRU.
fn simulate(
    cap: u32,
    reserve: Option<u32>,
    est: u32,
    flood: u32,
    every: u32,
    gap: u32,
    junk: bool,
) -> (u32, u32) {
    let mut pending: VecDeque<(u32, u32)> = VecDeque::new();
    let mut legit_lost = 0;
    let mut legit = 10_000;
    match reserve {
        Some(r) => {
            let c = ConnTableConfig {
                half_open_reserve: r,
                ..no_expiry(cap)
            };
            let mut t = ConnTable::<V4Key>::new(c, FlowHasher::new(1)).unwrap();
            for i in 0..est {
                established(&mut t, i, Timestamp(1));
            }
            for n in 0..flood {
                if junk {
                    t.insert(&flood_flow(n), Route::Local, Timestamp(1))
                        .unwrap();
                }
                if every > 0 && n % every == 0 {
                    t.insert(&flow(legit), Route::Local, Timestamp(1)).unwrap();
                    pending.push_back((n + gap, legit));
                    legit += 1;
                }
                while pending.front().is_some_and(|p| p.0 <= n) {
                    let (_, l) = pending.pop_front().unwrap();
                    let out = t.on_packet(&flow(l), Direction::Original, ACK, 40, Timestamp(1));
                    legit_lost += u32::from(out == PacketOutcome::Unknown);
                }
            }
            let lost = (0..est).filter(|&i| t.get(&flow(i)).is_none()).count() as u32;
            (lost, legit_lost)
        }
        None => {
            let mut t = OneLru {
                cap: cap as usize,
                seq: 0,
                at: Default::default(),
                order: Default::default(),
            };
            for i in 0..est {
                t.touch_or_insert(flow(i));
            }
            for n in 0..flood {
                if junk {
                    t.touch_or_insert(flood_flow(n));
                }
                if every > 0 && n % every == 0 {
                    t.touch_or_insert(flow(legit));
                    pending.push_back((n + gap, legit));
                    legit += 1;
                }
                while pending.front().is_some_and(|p| p.0 <= n) {
                    let (_, l) = pending.pop_front().unwrap();
                    if t.at.contains_key(&flow(l)) {
                        t.touch_or_insert(flow(l));
                    } else {
                        legit_lost += 1;
                    }
                }
            }
            let lost = (0..est).filter(|&i| !t.at.contains_key(&flow(i))).count() as u32;
            (lost, legit_lost)
        }
    }
}

/// The measurement behind the choice of the half-open reserve
/// (docs/decisions.md): a flood at 10x capacity against the one-list LRU
/// and the two segments with several reserves; and a genuine overload (a
/// table full of idle established connections, new ones arriving with no
/// flood), where the reserve is the time new connections have.
#[test]
fn flood_simulation_one_lru_against_two_segments() {
    let cap = 4096;
    let policies: [(&str, Option<u32>); 5] = [
        ("1-LRU", None),
        ("2Q reserve 1", Some(1)),
        ("2Q reserve C/8", Some(cap / 8)),
        ("2Q reserve C/4", Some(cap / 4)),
        ("2Q reserve C/2", Some(cap / 2)),
    ];
    println!(
        "flood of 10x capacity ({} SYNs), capacity {cap}; one legit connection per 100 SYNs:",
        cap * 10
    );
    println!(
        "{:16} {:>22} {:>22} {:>22}",
        "policy", "est 50: lost/legit", "est 2000: lost/legit", "est 3900: lost/legit"
    );
    let mut results = Vec::new();
    for (name, r) in policies {
        let row: Vec<_> = [50, 2000, 3900]
            .iter()
            .map(|&est| simulate(cap, r, est, cap * 10, 100, 1000, true))
            .collect();
        println!(
            "{name:16} {:>22} {:>22} {:>22}",
            format!("{}/{} of 410", row[0].0, row[0].1),
            format!("{}/{} of 410", row[1].0, row[1].1),
            format!("{}/{} of 410", row[2].0, row[2].1)
        );
        results.push(row);
    }
    // 1-LRU: the flood empties the table of its established entries.
    assert_eq!(results[0][0].0, 50);
    // Two segments, reserve C/4: none lost while established <= 3C/4.
    assert_eq!(results[3][0], (0, 0));
    assert_eq!(results[3][1], (0, 0));
    println!(
        "genuine overload: {cap} idle established, then {} legit connections, ACK after `gap` other SYNs:",
        cap * 2
    );
    println!(
        "{:16} {:>12} {:>12} {:>12}",
        "policy", "gap 10", "gap 500", "gap 2000"
    );
    println!("(legit handshakes lost of {})", cap * 2);
    let mut over = Vec::new();
    for (name, r) in policies {
        // Every SYN is legit here: no junk, one connection per step.
        let row: Vec<_> = [10, 500, 2000]
            .iter()
            .map(|&gap| simulate(cap, r, cap, cap * 2, 1, gap, false).1)
            .collect();
        println!("{name:16} {:>12} {:>12} {:>12}", row[0], row[1], row[2]);
        over.push(row);
    }
    // A reserve of 1 (probation first, always) loses new connections that
    // 1-LRU and a C/4 reserve keep.
    assert!(over[1][0] > 0);
    assert_eq!(over[3][0], 0);
    assert_eq!(over[3][1], 0);
}

/// A host that took long to start counts its peers' silence from when it
/// started listening, not from when it added them: a peer it has not heard
/// yet is not dead at its first refresh.
#[test]
fn silence_counts_from_when_the_host_starts_listening() {
    let mut t = lt();
    t.add_peer(PeerId(1), addr(1), vec![addr(100)], Timestamp(0))
        .unwrap();
    t.add_peer(PeerId(2), addr(2), vec![addr(101)], Timestamp(0))
        .unwrap();
    t.apply_report(PeerId(2), &report(1, 1, 1.0), Timestamp(500))
        .unwrap();
    // The control loop starts at 1,000 (interval 100, dead after 4).
    t.restart_silence(Timestamp(1_000));
    assert_eq!(t.peer(PeerId(1)).unwrap().state, PeerState::Suspect);
    // Peer 2 was heard at 500: its silence is real.
    assert_eq!(t.peer(PeerId(2)).unwrap().state, PeerState::Dead);
    t.refresh(Timestamp(1_399));
    assert_eq!(t.peer(PeerId(1)).unwrap().state, PeerState::Suspect);
    t.refresh(Timestamp(1_400));
    assert_eq!(t.peer(PeerId(1)).unwrap().state, PeerState::Dead);
}

static PREFETCHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn count_prefetch(_: *const u8) {
    PREFETCHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// The sweep's prefetch hint is only a hint: a table with it expires the
/// same entries at the same calls as one without, and the hint is given.
#[test]
fn the_prefetch_hint_changes_nothing_but_is_used() {
    let mut c = cfg(300);
    c.sweep_per_call = 3;
    // Some 200 flows live at a time, more than the hint's distance ahead.
    c.half_open_timeout = Duration::from_micros(150);
    c.established_timeout = Duration::from_micros(200);
    let mut with: ConnTable<WideKey> = ConnTable::new(c, FlowHasher::new(9)).unwrap();
    let mut without: ConnTable<WideKey> = ConnTable::new(c, FlowHasher::new(9)).unwrap();
    with.set_prefetch(Some(count_prefetch));
    let before = PREFETCHED.load(std::sync::atomic::Ordering::Relaxed);
    let mut now = Timestamp::ZERO;
    for i in 0..2_000u32 {
        now = now.saturating_add(Duration::from_micros(1));
        let f = flow(i * 7 % 500);
        let a = with.on_packet(&f, Direction::Original, TcpFlags::ACK, 40, now);
        let b = without.on_packet(&f, Direction::Original, TcpFlags::ACK, 40, now);
        assert_eq!(a, b);
        if a == PacketOutcome::Unknown {
            assert_eq!(
                with.insert(&f, Route::Local, now).unwrap(),
                without.insert(&f, Route::Local, now).unwrap()
            );
        }
        assert_eq!(with.sweep(now, 5), without.sweep(now, 5));
        assert_eq!(with.len(), without.len());
    }
    assert_eq!(with.stats(), without.stats());
    assert!(with.stats().expired > 0, "the sweep had work to do");
    assert!(PREFETCHED.load(std::sync::atomic::Ordering::Relaxed) > before);
}

static ADVISED: std::sync::Mutex<Vec<(usize, usize)>> = std::sync::Mutex::new(Vec::new());

fn record_advice(p: *const u8, len: usize) {
    if let Ok(mut v) = ADVISED.lock() {
        v.push((p as usize, len));
    }
}

/// The memory hook is given the slab's and the index's whole allocations,
/// and only that: the table behaves as before.
#[test]
fn the_memory_hook_sees_the_slab_and_the_index() {
    let t: ConnTable<WideKey> = ConnTable::new(cfg(1_000), FlowHasher::new(9)).unwrap();
    t.advise_memory(record_advice);
    let seen: Vec<(usize, usize)> = ADVISED
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|&(_, len)| len > 0)
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    // Together exactly what the table says it allocated for them.
    assert_eq!(seen[0].1 + seen[1].1, t.allocated_bytes());
    assert!(seen[0].1 >= 1_000 * 48, "the slab's whole capacity");
    assert!(seen.iter().all(|&(p, _)| p != 0));
}

//! Property and unit tests of the strategies.

use crate::stateless_hash::{bucket_of, rendezvous_owner};
use crate::*;
use core::net::{IpAddr, Ipv4Addr};
use core::time::Duration;
use dpr_packet::{FlowHasher, FlowKey, IpProtocol};
use dpr_table::{
    Capacity, HostRef, LoadFigures, LoadReport, LoadTable, LoadTableConfig, PeerId, PeerState,
    Timestamp,
};
use proptest::prelude::*;

fn flow(n: u32) -> FlowKey {
    FlowKey::new(
        IpProtocol::Tcp,
        IpAddr::V4(Ipv4Addr::from_bits(
            0xc633_0000 ^ n.wrapping_mul(2_654_435_761),
        )),
        (n % 50_000) as u16 + 1024,
        Ipv4Addr::new(198, 18, 1, 80).into(),
        80,
    )
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

/// A peer spec: (open connections, capacity 1..=4, state 0..5, pending).
type PeerSpec = (u32, u8, u8, u8);

/// Builds a table: states 0 alive, 1 suspect (never reported), 2 draining,
/// 3 left, 4 dead.
fn table(local_conns: u32, peers: &[PeerSpec]) -> LoadTable {
    let c = LoadTableConfig {
        report_interval: Duration::from_nanos(100),
        ..LoadTableConfig::default()
    };
    let mut t = LoadTable::new(c, PeerId(0), Capacity::default()).unwrap();
    t.set_local(
        LoadFigures {
            open_connections: local_conns,
            ..LoadFigures::default()
        },
        Capacity::default(),
    )
    .unwrap();
    for (i, &(conns, cap, state, pending)) in peers.iter().enumerate() {
        let id = PeerId(i as u16 + 1);
        let at = if state == 4 {
            Timestamp(0)
        } else {
            Timestamp(10_000)
        };
        t.add_peer(
            id,
            Ipv4Addr::new(198, 19, (id.0 >> 8) as u8, id.0 as u8).into(),
            vec![],
            at,
        )
        .unwrap();
        if state != 1 {
            t.apply_report(id, &report(1, conns, f32::from(cap)), at)
                .unwrap();
        }
        for _ in 0..pending {
            t.record_redirect(id).unwrap();
        }
        match state {
            2 => t.mark_draining(id).unwrap(),
            3 => t.mark_left(id).unwrap(),
            _ => {}
        }
    }
    t.refresh(Timestamp(10_050));
    t
}

fn peer_spec() -> impl Strategy<Value = PeerSpec> {
    (
        0u32..500,
        1u8..5,
        prop_oneof![3 => Just(0u8), 1 => 1u8..5],
        0u8..3,
    )
}

fn strategies() -> Vec<Box<dyn Policy>> {
    vec![
        Box::new(Threshold::new(ThresholdConfig { threshold: 100.0 }).unwrap()),
        Box::new(LeastLoad),
        Box::new(
            StatelessHash::new(StatelessHashConfig {
                seed: 7,
                buckets: 256,
            })
            .unwrap(),
        ),
        Box::new(TwoChoices),
        Box::new(ThresholdTwoChoices::new(ThresholdConfig { threshold: 100.0 }).unwrap()),
        Box::new(join_idle_with_ads(100.0, &[1, 2, 3, 7, 39])),
    ]
}

#[test]
fn table_builder_states() {
    let t = table(
        0,
        &[
            (1, 1, 0, 0),
            (1, 1, 1, 0),
            (1, 1, 2, 0),
            (1, 1, 3, 0),
            (1, 1, 4, 0),
        ],
    );
    let states: Vec<_> = t.peers().iter().map(|p| p.state).collect();
    assert_eq!(
        states,
        [
            PeerState::Alive,
            PeerState::Suspect,
            PeerState::Draining,
            PeerState::Left,
            PeerState::Dead
        ]
    );
}

#[test]
fn config_errors_name_the_field() {
    for bad in [f64::NAN, -1.0, f64::INFINITY] {
        assert!(matches!(
            Threshold::new(ThresholdConfig { threshold: bad }),
            Err(PolicyError::InvalidConfig {
                field: "threshold",
                ..
            })
        ));
    }
    assert!(matches!(
        StatelessHash::new(StatelessHashConfig {
            seed: 0,
            buckets: 0
        }),
        Err(PolicyError::InvalidConfig {
            field: "buckets",
            ..
        })
    ));
    let e = Threshold::new(ThresholdConfig { threshold: -1.0 }).unwrap_err();
    assert!(e.to_string().contains("`threshold`"));
}

#[test]
fn threshold_scales_with_capacity_and_prefers_less_loaded_peer() {
    let mut t = table(150, &[(100, 1, 0, 0)]);
    let mut p = Threshold::new(ThresholdConfig { threshold: 100.0 }).unwrap();
    let mut rng = SplitMix64::new(1);
    let c = NewConnection::from_client(flow(1));
    assert_eq!(
        p.decide(&c, &t, &mut rng),
        RedirectDecision::Redirect(PeerId(1))
    );
    // Same 150 connections on a host of capacity 2: load 75, below threshold.
    t.set_local(
        LoadFigures {
            open_connections: 150,
            ..LoadFigures::default()
        },
        Capacity {
            cpu: 2.0,
            memory: 1.0,
        },
    )
    .unwrap();
    assert_eq!(p.effective_threshold(&t), 200.0);
    assert_eq!(p.decide(&c, &t, &mut rng), RedirectDecision::ServeLocally);
    // Above the threshold but every peer busier: stay.
    let t = table(150, &[(300, 1, 0, 0)]);
    assert_eq!(p.decide(&c, &t, &mut rng), RedirectDecision::ServeLocally);
    assert_eq!(p.name(), "threshold");
}

#[test]
fn optimistic_accounting_spreads_one_interval() {
    // Local 100; peers at 10 and 20. Least-load must not send everything
    // to peer 1: after 10 redirects it is level with peer 2.
    let mut t = table(100, &[(10, 1, 0, 0), (20, 1, 0, 0)]);
    let mut p = LeastLoad;
    let mut rng = SplitMix64::new(1);
    let mut to = [0u32; 3];
    for i in 0..60 {
        match decide_and_account(
            &mut p,
            &NewConnection::from_client(flow(i)),
            &mut t,
            &mut rng,
        ) {
            RedirectDecision::Redirect(PeerId(id)) => to[usize::from(id)] += 1,
            RedirectDecision::ServeLocally => to[0] += 1,
        }
    }
    assert_eq!(to, [0, 35, 25]);
    assert_eq!(t.peer(PeerId(1)).unwrap().pending_redirects, 35);
    // A report resets the peer's pending count.
    t.apply_report(PeerId(1), &report(2, 12, 1.0), Timestamp(10_060))
        .unwrap();
    assert_eq!(t.host_load(HostRef::Peer(PeerId(1))), 12.0);
}

#[test]
fn two_choices_avoids_the_herd_on_stale_loads() {
    // One stale report says peer 1 is idle and all others are busy. Without
    // accounting (stale figures), least-load sends every connection to peer
    // 1; two choices sends it only the share where it was sampled.
    let mut peers = vec![(0u32, 1u8, 0u8, 0u8)];
    peers.extend(std::iter::repeat_n((50, 1, 0, 0), 9));
    let t = table(50, &peers);
    let mut rng = SplitMix64::new(3);
    let n = 10_000;
    let mut herd = 0;
    let mut p2c = 0;
    for i in 0..n {
        let c = NewConnection::from_client(flow(i));
        if LeastLoad.decide(&c, &t, &mut rng) == RedirectDecision::Redirect(PeerId(1)) {
            herd += 1;
        }
        if TwoChoices.decide(&c, &t, &mut rng) == RedirectDecision::Redirect(PeerId(1)) {
            p2c += 1;
        }
    }
    assert_eq!(herd, n);
    // P(peer 1 among two of 11 equal-weight samples) = 1 - (10/11)^2 ≈ 0.174.
    let share = f64::from(p2c) / f64::from(n);
    assert!((0.15..0.20).contains(&share), "{share}");
}

#[test]
fn threshold_two_choices_avoids_the_herd_and_respects_the_threshold() {
    // The same stale table as above: the seed's threshold sends everything
    // to peer 1; with two choices it gets only its sampled share.
    let mut peers = vec![(0u32, 1u8, 0u8, 0u8)];
    peers.extend(std::iter::repeat_n((50, 1, 0, 0), 9));
    let t = table(50, &peers);
    let cfg = ThresholdConfig { threshold: 10.0 };
    let mut thr = Threshold::new(cfg).unwrap();
    let mut p = ThresholdTwoChoices::new(cfg).unwrap();
    let mut rng = SplitMix64::new(5);
    let (mut herd, mut spread) = (0, 0);
    let n = 10_000;
    for i in 0..n {
        let c = NewConnection::from_client(flow(i));
        if thr.decide(&c, &t, &mut rng) == RedirectDecision::Redirect(PeerId(1)) {
            herd += 1;
        }
        if p.decide(&c, &t, &mut rng) == RedirectDecision::Redirect(PeerId(1)) {
            spread += 1;
        }
    }
    assert_eq!(herd, n);
    let share = f64::from(spread) / f64::from(n);
    assert!((0.15..0.20).contains(&share), "{share}");
    // Below the threshold: always local.
    let idle = table(5, &peers);
    for i in 0..100 {
        let c = NewConnection::from_client(flow(i));
        assert_eq!(
            p.decide(&c, &idle, &mut rng),
            RedirectDecision::ServeLocally
        );
    }
    assert!(
        ThresholdTwoChoices::new(ThresholdConfig {
            threshold: f64::NAN
        })
        .is_err()
    );
}

/// A join-idle strategy holding advertisements from these peers (the last
/// the freshest).
fn join_idle_with_ads(threshold: f64, ads: &[u16]) -> JoinIdle {
    let mut p = JoinIdle::new(JoinIdleConfig {
        threshold,
        ..JoinIdleConfig::default()
    })
    .unwrap();
    for &a in ads {
        p.advertised_idle(PeerId(a));
    }
    p
}

#[test]
fn join_idle_select_rule() {
    let (a, s) = (Some(PeerId(3)), Some((PeerId(4), 1.0)));
    let serve = RedirectDecision::ServeLocally;
    // Under the threshold: serve, whatever was advertised.
    assert_eq!(join_idle::select(0.0, 1.0, a, s), serve);
    // At it: the advertised peer first, even if sampled looks lighter.
    assert_eq!(
        join_idle::select(1.0, 1.0, a, Some((PeerId(4), 0.0))),
        RedirectDecision::Redirect(PeerId(3))
    );
    // Without an advertisement: the thr-p2c rule (strictly lighter only).
    assert_eq!(join_idle::select(1.0, 1.0, None, s), serve);
    assert_eq!(
        join_idle::select(2.0, 1.0, None, s),
        RedirectDecision::Redirect(PeerId(4))
    );
    assert_eq!(join_idle::select(2.0, 1.0, None, None), serve);
}

#[test]
fn join_idle_uses_each_advertisement_once_freshest_first() {
    // Peers 1..=4 alive and reported busy; peer 5 suspect (never reported).
    let mut peers = vec![(9u32, 1u8, 0u8, 0u8); 4];
    peers.push((0, 1, 1, 0));
    let t = table(3, &peers);
    let mut p = join_idle_with_ads(1.0, &[2, 5, 3, 2]);
    // Re-advertising refreshes: the list is now 5, 3, 2 (2 the freshest).
    assert_eq!(
        p.advertised().collect::<Vec<_>>(),
        [PeerId(5), PeerId(3), PeerId(2)]
    );
    let mut rng = SplitMix64::new(1);
    let c = NewConnection::from_client(flow(1));
    assert_eq!(
        p.decide(&c, &t, &mut rng),
        RedirectDecision::Redirect(PeerId(2))
    );
    assert_eq!(
        p.decide(&c, &t, &mut rng),
        RedirectDecision::Redirect(PeerId(3))
    );
    // Peer 5 is not Alive: dropped, and with no advertisement left the
    // sampled peers (all busier than this host) do not qualify.
    assert_eq!(p.decide(&c, &t, &mut rng), RedirectDecision::ServeLocally);
    assert_eq!(p.advertised().len(), 0);
    // Bounded: the oldest advertisement goes first.
    let mut q = JoinIdle::new(JoinIdleConfig {
        threshold: 1.0,
        max_advertised: 2,
    })
    .unwrap();
    for a in 1..=3 {
        q.advertised_idle(PeerId(a));
    }
    assert_eq!(q.advertised().collect::<Vec<_>>(), [PeerId(2), PeerId(3)]);
    assert!(
        JoinIdle::new(JoinIdleConfig {
            threshold: 1.0,
            max_advertised: 0
        })
        .is_err()
    );
    assert!(
        JoinIdle::new(JoinIdleConfig {
            threshold: -1.0,
            ..JoinIdleConfig::default()
        })
        .is_err()
    );
}

/// Without advertisements join-idle is threshold-two-choices: the same
/// decisions from the same random stream.
#[test]
fn join_idle_without_advertisements_is_threshold_two_choices() {
    let mut peers: Vec<PeerSpec> = (0..30)
        .map(|i| (i * 7 % 40, 1 + (i % 3) as u8, 0, 0))
        .collect();
    peers.push((0, 1, 2, 0));
    let mut j = join_idle_with_ads(10.0, &[]);
    let mut p = ThresholdTwoChoices::new(ThresholdConfig { threshold: 10.0 }).unwrap();
    for local in [0, 9, 10, 25, 60] {
        let t = table(local, &peers);
        let (mut r1, mut r2) = (SplitMix64::new(local.into()), SplitMix64::new(local.into()));
        for i in 0..200 {
            let c = NewConnection::from_client(flow(i));
            assert_eq!(j.decide(&c, &t, &mut r1), p.decide(&c, &t, &mut r2));
        }
    }
}

/// Threshold-two-choices decides *whether* exactly as threshold does, so
/// its threshold is in normalised units too: a host of capacity 2 serves up
/// to 200 connections at threshold 100, not 400.
#[test]
fn threshold_two_choices_scales_with_capacity_as_threshold_does() {
    let peers = vec![(0u32, 1u8, 0u8, 0u8); 20];
    let cfg = ThresholdConfig { threshold: 100.0 };
    let mut p = ThresholdTwoChoices::new(cfg).unwrap();
    let mut rng = SplitMix64::new(3);
    let on_capacity_2 = |conns| {
        let mut t = table(0, &peers);
        t.set_local(
            LoadFigures {
                open_connections: conns,
                ..LoadFigures::default()
            },
            Capacity {
                cpu: 2.0,
                memory: 1.0,
            },
        )
        .unwrap();
        t
    };
    let below = on_capacity_2(150); // normalised 75
    let above = on_capacity_2(250); // normalised 125
    let mut redirected = 0;
    for i in 0..100 {
        let c = NewConnection::from_client(flow(i));
        assert_eq!(
            p.decide(&c, &below, &mut rng),
            RedirectDecision::ServeLocally
        );
        if p.decide(&c, &above, &mut rng) != RedirectDecision::ServeLocally {
            redirected += 1;
        }
    }
    assert!(
        redirected > 80,
        "above the threshold, redirected {redirected} of 100"
    );
}

#[test]
fn two_choices_select_rule() {
    use crate::two_choices::select;
    let a = (HostRef::Peer(PeerId(1)), 3.0);
    let b = (HostRef::Peer(PeerId(2)), 2.0);
    assert_eq!(select(a, b), RedirectDecision::Redirect(PeerId(2)));
    assert_eq!(select(b, a), RedirectDecision::Redirect(PeerId(2)));
    assert_eq!(
        select(b, (HostRef::Local, 2.0)),
        RedirectDecision::ServeLocally
    );
    assert_eq!(
        select((HostRef::Local, 1.0), b),
        RedirectDecision::ServeLocally
    );
}

#[test]
fn stateless_hash_spreads_by_weight() {
    let t = table(0, &[(0, 1, 0, 0), (0, 2, 0, 0), (0, 4, 0, 0), (0, 4, 2, 0)]);
    let mut h = StatelessHash::new(StatelessHashConfig {
        seed: 1,
        buckets: 1 << 14,
    })
    .unwrap();
    assert!(h.sync(&t));
    assert!(!h.sync(&t));
    assert!(h.matches_pure());
    // Weights 1 (local), 1, 2, 4; the draining peer owns nothing.
    let counts = h.bucket_counts();
    let total = f64::from(1u32 << 14);
    for (i, want) in [
        (0usize, 1.0 / 8.0),
        (1, 1.0 / 8.0),
        (2, 2.0 / 8.0),
        (3, 4.0 / 8.0),
        (4, 0.0),
    ] {
        let got = counts[i].1 as f64 / total;
        assert!((got - want).abs() < 0.015, "host {i}: {got} vs {want}");
    }
}

fn member_table(weights: &[u8]) -> LoadTable {
    let peers: Vec<PeerSpec> = weights
        .iter()
        .map(|&w| (0, w, if w == 0 { 2 } else { 0 }, 0))
        .collect();
    table(
        0,
        &peers
            .iter()
            .map(|&(c, w, s, p)| (c, w.max(1), s, p))
            .collect::<Vec<_>>(),
    )
}

proptest! {
    /// Below its threshold the threshold rule never redirects, whatever
    /// the peers look like; above it, it redirects only to a strictly less
    /// loaded peer.
    #[test]
    fn threshold_never_redirects_below_threshold(
        local in 0.0f64..1000.0, threshold in 0.0f64..1000.0,
        best in prop::option::of((any::<u16>(), 0.0f64..1000.0)),
    ) {
        let d = crate::threshold::select(local, threshold, best.map(|(p, l)| (PeerId(p), l)));
        if local < threshold {
            prop_assert_eq!(d, RedirectDecision::ServeLocally);
        }
        if let RedirectDecision::Redirect(p) = d {
            let (bp, bl) = best.unwrap();
            prop_assert_eq!(p, PeerId(bp));
            prop_assert!(bl < local && local >= threshold);
        }
    }

    /// Threshold-two-choices: never below the threshold, and only to a
    /// peer less loaded than this host.
    #[test]
    fn threshold_two_choices_respects_threshold(local in 0u32..300, peers in prop::collection::vec(peer_spec(), 0..30), seed: u64) {
        let t = table(local, &peers);
        let mut p = ThresholdTwoChoices::new(ThresholdConfig { threshold: 100.0 }).unwrap();
        let d = p.decide(&NewConnection::from_client(flow(local)), &t, &mut SplitMix64::new(seed));
        if t.local_load() < 100.0 {
            prop_assert_eq!(d, RedirectDecision::ServeLocally);
        }
        if let RedirectDecision::Redirect(id) = d {
            prop_assert!(t.host_load(HostRef::Peer(id)) < t.local_load());
            prop_assert!(t.is_eligible(id));
        }
    }

    /// Join-idle: never below the threshold, whatever it was told; above
    /// it only Alive peers, and an unadvertised one only if lighter.
    #[test]
    fn join_idle_respects_threshold(
        local in 0u32..300,
        peers in prop::collection::vec(peer_spec(), 0..30),
        ads in prop::collection::vec(1u16..40, 0..10),
        seed: u64,
    ) {
        let t = table(local, &peers);
        let mut p = join_idle_with_ads(100.0, &ads);
        let d = p.decide(&NewConnection::from_client(flow(local)), &t, &mut SplitMix64::new(seed));
        if t.local_load() < 100.0 {
            prop_assert_eq!(d, RedirectDecision::ServeLocally);
        }
        if let RedirectDecision::Redirect(id) = d {
            prop_assert!(t.is_eligible(id));
            prop_assert!(ads.contains(&id.0) || t.host_load(HostRef::Peer(id)) < t.local_load());
        }
    }

    /// The same through the full strategy on random tables.
    #[test]
    fn threshold_strategy_respects_threshold(local in 0u32..300, peers in prop::collection::vec(peer_spec(), 0..30)) {
        let t = table(local, &peers);
        let mut p = Threshold::new(ThresholdConfig { threshold: 100.0 }).unwrap();
        let d = p.decide(&NewConnection::from_client(flow(local)), &t, &mut SplitMix64::new(0));
        if t.local_load() < 100.0 {
            prop_assert_eq!(d, RedirectDecision::ServeLocally);
        }
        if let RedirectDecision::Redirect(id) = d {
            prop_assert!(t.host_load(HostRef::Peer(id)) < t.local_load());
        }
    }

    /// No strategy ever names a peer that is not Alive, and none redirects
    /// a connection that arrived from a peer.
    #[test]
    fn strategies_never_pick_ineligible_peers(
        local in 0u32..500,
        peers in prop::collection::vec(peer_spec(), 0..40),
        seed: u64,
        flows in prop::collection::vec(any::<u32>(), 1..20),
    ) {
        let t = table(local, &peers);
        let mut rng = SplitMix64::new(seed);
        for mut s in strategies() {
            for &f in &flows {
                let c = NewConnection::from_client(flow(f));
                if let RedirectDecision::Redirect(id) = s.decide(&c, &t, &mut rng) {
                    prop_assert!(t.is_eligible(id), "{} picked {:?}", s.name(), id);
                    prop_assert_ne!(id, t.local_id());
                }
                let from_peer = NewConnection { arrived_from_peer: true, ..c };
                prop_assert_eq!(s.decide(&from_peer, &t, &mut rng), RedirectDecision::ServeLocally);
                let mut t2 = t.clone();
                prop_assert_eq!(decide_and_account(s.as_mut(), &from_peer, &mut t2, &mut rng), RedirectDecision::ServeLocally);
            }
        }
    }

    /// Least-load picks a host whose load is the minimum over all Alive
    /// hosts, this one included.
    #[test]
    fn least_load_is_the_minimum(local in 0u32..500, peers in prop::collection::vec(peer_spec(), 0..40)) {
        let t = table(local, &peers);
        let d = LeastLoad.decide(&NewConnection::from_client(flow(1)), &t, &mut SplitMix64::new(0));
        let min = t.peers().iter().filter(|p| p.state == PeerState::Alive).map(|p| p.load()).fold(t.local_load(), f64::min);
        let chosen = match d {
            RedirectDecision::ServeLocally => t.local_load(),
            RedirectDecision::Redirect(id) => t.host_load(HostRef::Peer(id)),
        };
        prop_assert_eq!(chosen, min);
    }

    /// Membership change of one host among N moves only the flows it gains
    /// or loses, and their share is w / W within sampling tolerance.
    #[test]
    fn hash_stability_bound_on_membership_change(
        weights in prop::collection::vec(1u8..4, 2..12),
        changed in any::<prop::sample::Index>(),
        seed: u64,
    ) {
        let buckets = 4096u32;
        let cfg = StatelessHashConfig { seed, buckets };
        let before_t = member_table(&weights);
        let mut h = StatelessHash::new(cfg).unwrap();
        h.sync(&before_t);
        prop_assert!(h.matches_pure());
        let flows: Vec<FlowKey> = (0..4000).map(flow).collect();
        let before: Vec<_> = flows.iter().map(|f| h.owner_of(f)).collect();

        // Remove one peer (mark it left) incrementally.
        let k = changed.index(weights.len());
        let gone = PeerId(k as u16 + 1);
        let mut after_t = before_t.clone();
        after_t.mark_left(gone).unwrap();
        h.sync(&after_t);
        prop_assert!(h.matches_pure());
        let after: Vec<_> = flows.iter().map(|f| h.owner_of(f)).collect();
        let mut moved = 0usize;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                prop_assert_eq!(*b, Some(gone), "a flow not on the removed host moved");
                moved += 1;
            }
            prop_assert_ne!(*a, Some(gone));
        }
        let total_w: f64 = 1.0 + weights.iter().map(|&w| f64::from(w)).sum::<f64>();
        let p = f64::from(weights[k]) / total_w;
        let frac = moved as f64 / flows.len() as f64;
        let tol = 5.0 * (p * (1.0 - p) / f64::from(buckets)).sqrt() + 5.0 * (p * (1.0 - p) / flows.len() as f64).sqrt();
        prop_assert!((frac - p).abs() <= tol, "moved {frac}, expected {p} ± {tol}");

        // Add it back: exactly the flows it owned return to it, nothing else moves.
        after_t.add_peer(gone, Ipv4Addr::new(198, 19, 255, 254).into(), vec![], Timestamp(10_060)).unwrap();
        after_t.apply_report(gone, &report(1, 0, f32::from(weights[k])), Timestamp(10_060)).unwrap();
        h.sync(&after_t);
        prop_assert!(h.matches_pure());
        let again: Vec<_> = flows.iter().map(|f| h.owner_of(f)).collect();
        prop_assert_eq!(&again, &before);
    }

    /// The pure rendezvous function agrees with the strategy's bucket of a flow.
    #[test]
    fn pure_function_reaches_the_choice(seed: u64, f: u32, weights in prop::collection::vec(0u64..5, 1..10)) {
        let hosts: Vec<(PeerId, u64)> = weights.iter().enumerate().map(|(i, &w)| (PeerId(i as u16), w)).collect();
        let b = bucket_of(&FlowHasher::new(seed), &flow(f), 64);
        prop_assert!(b < 64);
        match rendezvous_owner(seed, b, &hosts) {
            Some(i) => prop_assert!(hosts[i].1 > 0),
            None => prop_assert!(weights.iter().all(|&w| w == 0)),
        }
    }
}

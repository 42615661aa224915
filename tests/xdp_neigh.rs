//! Neighbour lookup (`dpr_io::neigh`) against a real kernel table in a network namespace (root).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dpr_io::neigh::{self, Neighbour, Unresolved};
use dpr_lab::netns::{VethPair, in_netns};
use dpr_tests::root_or_skip;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// Polls `lookup` until `done` says so or 3 s pass.
fn poll(ifx: u32, addr: IpAddr, done: impl Fn(&Neighbour) -> bool) -> Neighbour {
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        let n = neigh::lookup(ifx, addr).unwrap();
        if done(&n) || Instant::now() > end {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn resolves_a_neighbour_after_solicit_and_reports_unresolved_ones() {
    let Some(_g) = root_or_skip("resolves_a_neighbour_after_solicit_and_reports_unresolved_ones")
    else {
        return;
    };
    let pair = VethPair::new(44).unwrap();
    in_netns(&pair.ns_a, || {
        let ifx = dpr_xdp::ifindex(&pair.dev_a).unwrap();
        let b = IpAddr::V4(pair.addr_b);
        // Nothing was sent yet: no entry.
        assert_eq!(
            neigh::lookup(ifx, b).unwrap(),
            Neighbour::Unresolved(Unresolved::Absent)
        );
        neigh::solicit(pair.addr_b).unwrap();
        let n = poll(ifx, b, |n| matches!(n, Neighbour::Resolved(_)));
        assert_eq!(n, Neighbour::Resolved(pair.mac_b));
        // The same address on another interface (lo) is not resolved.
        assert_eq!(
            neigh::lookup(1, b).unwrap(),
            Neighbour::Unresolved(Unresolved::Absent)
        );
        // Nobody holds .99: incomplete while the kernel asks, failed after.
        let ghost = Ipv4Addr::new(198, 18, 44, 99);
        neigh::solicit(ghost).unwrap();
        let n = neigh::lookup(ifx, ghost.into()).unwrap();
        assert!(
            matches!(
                n,
                Neighbour::Unresolved(Unresolved::Incomplete | Unresolved::Failed)
            ),
            "{n:?}"
        );
    })
    .unwrap();
}

//! Least-load: the least-loaded of all `Alive` hosts, this one included
//! (ties with this host go to this host: a redirect costs a tunnel hop;
//! ties among peers are broken at random).

use crate::random::RandomSource;
use crate::{NewConnection, Policy, RedirectDecision};
use dpr_table::{LoadTable, PeerId};

/// The least-load strategy (no configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeastLoad;

/// The pure rule over normalised loads.
#[inline]
pub fn select(local_load: f64, best_peer: Option<(PeerId, f64)>) -> RedirectDecision {
    match best_peer {
        Some((peer, load)) if load < local_load => RedirectDecision::Redirect(peer),
        _ => RedirectDecision::ServeLocally,
    }
}

impl Policy for LeastLoad {
    #[inline]
    fn decide(
        &mut self,
        conn: &NewConnection,
        loads: &LoadTable,
        rng: &mut dyn RandomSource,
    ) -> RedirectDecision {
        if conn.arrived_from_peer {
            return RedirectDecision::ServeLocally;
        }
        select(
            loads.local_load(),
            loads.least_loaded_peer_among_ties(rng.next_u64()),
        )
    }

    fn name(&self) -> &'static str {
        "least-load"
    }
}

//! Power of two choices: sample two `Alive` hosts (this one included),
//! each with probability proportional to its capacity weight, and take the
//! less loaded. Unlike least-load, hosts acting on the same stale report
//! do not all pick the same peer, so there is no herd.

use crate::random::RandomSource;
use crate::{NewConnection, Policy, RedirectDecision};
use dpr_table::{HostRef, LoadTable};

/// The power-of-two-choices strategy (no configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TwoChoices;

/// The pure rule: the less loaded of two sampled hosts and their
/// normalised loads; ties prefer this host, then the first sample.
#[inline]
pub fn select(a: (HostRef, f64), b: (HostRef, f64)) -> RedirectDecision {
    let pick = if b.1 < a.1 || (b.1 == a.1 && b.0 == HostRef::Local) {
        b
    } else {
        a
    };
    match pick.0 {
        HostRef::Local => RedirectDecision::ServeLocally,
        HostRef::Peer(p) => RedirectDecision::Redirect(p),
    }
}

impl Policy for TwoChoices {
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
        let a = loads.sample_host_with_load(rng.next_u64());
        let b = loads.sample_host_with_load(rng.next_u64());
        select(a, b)
    }

    fn name(&self) -> &'static str {
        "two-choices"
    }
}

//! Threshold with two choices: the seed's rule for *whether* to redirect
//! (serve here below the threshold), the power of two choices for *where*
//! (the less loaded of two sampled peers, if it is less loaded than this
//! host). The seed's threshold sends every overloaded host's connections to
//! the one least-loaded peer of the last reports; at hundreds of hosts that
//! peer is swamped before the next report (the herd). Sampling spreads
//! them. `docs/simulation.md` measures it: at 1,000 hosts it stays near the
//! ideal where threshold and least-load collapse, and it redirects far less
//! than plain two choices.

use crate::error::PolicyError;
use crate::random::RandomSource;
use crate::threshold::{self, Threshold, ThresholdConfig};
use crate::{NewConnection, Policy, RedirectDecision};
use dpr_table::{HostRef, LoadTable, PeerId};

/// The threshold-two-choices strategy (configured like [`Threshold`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThresholdTwoChoices {
    threshold: Threshold,
}

impl ThresholdTwoChoices {
    /// A strategy from a checked configuration.
    pub fn new(config: ThresholdConfig) -> Result<Self, PolicyError> {
        Ok(Self {
            threshold: Threshold::new(config)?,
        })
    }
}

/// The pure rule for where: of two sampled hosts, the less loaded peer
/// (samples of this host are not candidates).
#[inline]
pub fn best_of_two(a: (HostRef, f64), b: (HostRef, f64)) -> Option<(PeerId, f64)> {
    [a, b]
        .into_iter()
        .filter_map(|(h, l)| match h {
            HostRef::Peer(p) => Some((p, l)),
            HostRef::Local => None,
        })
        .min_by(|x, y| x.1.total_cmp(&y.1))
}

/// Draws two capacity-weighted samples from `loads` and applies
/// [`best_of_two`].
#[inline]
pub fn sample_best_of_two(loads: &LoadTable, rng: &mut dyn RandomSource) -> Option<(PeerId, f64)> {
    let a = loads.sample_host_with_load(rng.next_u64());
    let b = loads.sample_host_with_load(rng.next_u64());
    best_of_two(a, b)
}

impl Policy for ThresholdTwoChoices {
    #[inline]
    fn decide(
        &mut self,
        conn: &NewConnection,
        loads: &LoadTable,
        rng: &mut dyn RandomSource,
    ) -> RedirectDecision {
        let local = loads.local_load();
        let t = self.threshold.threshold();
        if conn.arrived_from_peer || local < t {
            return RedirectDecision::ServeLocally;
        }
        threshold::select(local, t, sample_best_of_two(loads, rng))
    }

    fn name(&self) -> &'static str {
        "threshold-two-choices"
    }
}

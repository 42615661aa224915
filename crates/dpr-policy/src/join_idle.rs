//! Join-idle with two choices: the threshold-two-choices rule, plus the
//! peers that said they were idle (join-idle-queue, Lu et al. 2011).
//!
//! Below the threshold this host serves, exactly as [`threshold`] does, so
//! a host under its threshold never redirects. At and above it, it sends
//! the connection to the peer that most recently advertised it was idle
//! (each advertisement is used once, and only while the peer is `Alive`);
//! without one, to the less loaded of two sampled peers if that peer is
//! less loaded than this host (the [`threshold_two_choices`] rule).
//!
//! Periodic reports are tens of service times old, so a peer that looked
//! empty in the last report is rarely empty now; a host that has just
//! become idle and says so is. `docs/simulation.md` (issue 13) measures
//! it: with advertisements and a threshold of 1 (serve only when idle) the
//! mean response time is 1.1 to 1.8 x the ideal dispatcher's where the
//! best rule over reports alone is 1.4 to 3.7 x.
//!
//! The advertisements come from outside: the cluster protocol's idle
//! advertisement (control kind 5) reaches [`Policy::peer_idle`], which is
//! [`JoinIdle::advertised_idle`]. Without any, this strategy decides exactly as
//! [`ThresholdTwoChoices`](crate::ThresholdTwoChoices) with the same
//! threshold.
//!
//! [`threshold`]: crate::threshold
//! [`threshold_two_choices`]: crate::threshold_two_choices

use crate::error::PolicyError;
use crate::random::RandomSource;
use crate::threshold::{self, Threshold};
use crate::threshold_two_choices::sample_best_of_two;
use crate::{NewConnection, Policy, RedirectDecision};
use dpr_table::{LoadTable, PeerId};
use std::collections::VecDeque;

/// Configuration of [`JoinIdle`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JoinIdleConfig {
    /// Normalised load at and above which this host redirects (finite and
    /// not negative). With advertisements 1.0 (serve only when idle)
    /// measured best; without them 2.0 at load 0.8 (`docs/simulation.md`).
    pub threshold: f64,
    /// Advertisements kept, at least 1; beyond, the oldest is dropped.
    pub max_advertised: usize,
}

impl Default for JoinIdleConfig {
    fn default() -> Self {
        Self {
            threshold: 1.0,
            max_advertised: 64,
        }
    }
}

/// The join-idle strategy.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinIdle {
    threshold: Threshold,
    max_advertised: usize,
    /// Peers that advertised they were idle, oldest first, each once.
    idle: VecDeque<PeerId>,
}

impl JoinIdle {
    /// A strategy from a checked configuration.
    pub fn new(config: JoinIdleConfig) -> Result<Self, PolicyError> {
        if config.max_advertised == 0 {
            return Err(PolicyError::InvalidConfig {
                field: "max_advertised",
                reason: "must be at least 1",
            });
        }
        Ok(Self {
            threshold: Threshold::new(threshold::ThresholdConfig {
                threshold: config.threshold,
            })?,
            max_advertised: config.max_advertised,
            idle: VecDeque::new(),
        })
    }

    /// The threshold, in normalised units.
    pub fn threshold(&self) -> f64 {
        self.threshold.threshold()
    }

    /// `peer` says it is idle: it becomes the first choice of the next
    /// redirect (a repeated advertisement only refreshes the peer's place).
    pub fn advertised_idle(&mut self, peer: PeerId) {
        self.idle.retain(|&p| p != peer);
        if self.idle.len() == self.max_advertised {
            self.idle.pop_front();
        }
        self.idle.push_back(peer);
    }

    /// Advertisements held (not yet used), oldest first.
    pub fn advertised(&self) -> impl ExactSizeIterator<Item = PeerId> + '_ {
        self.idle.iter().copied()
    }
}

/// The pure rule: `local_load` against `threshold` (normalised); above it,
/// `advertised` (the freshest eligible idle peer, if any) first, then the
/// less loaded sampled peer `sampled` if it is less loaded than this host.
#[inline]
pub fn select(
    local_load: f64,
    threshold: f64,
    advertised: Option<PeerId>,
    sampled: Option<(PeerId, f64)>,
) -> RedirectDecision {
    if local_load < threshold {
        return RedirectDecision::ServeLocally;
    }
    match advertised {
        Some(p) => RedirectDecision::Redirect(p),
        None => threshold::select(local_load, threshold, sampled),
    }
}

/// Takes the freshest advertised peer that `eligible` accepts, dropping
/// the ineligible ones met on the way (they advertise again when idle).
pub fn take_freshest(
    idle: &mut VecDeque<PeerId>,
    eligible: impl Fn(PeerId) -> bool,
) -> Option<PeerId> {
    while let Some(p) = idle.pop_back() {
        if eligible(p) {
            return Some(p);
        }
    }
    None
}

impl Policy for JoinIdle {
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
        let advertised = take_freshest(&mut self.idle, |p| loads.is_eligible(p));
        let sampled = if advertised.is_none() {
            sample_best_of_two(loads, rng)
        } else {
            None
        };
        select(local, t, advertised, sampled)
    }

    fn name(&self) -> &'static str {
        "join-idle"
    }

    fn peer_idle(&mut self, peer: PeerId) {
        self.advertised_idle(peer);
    }
}

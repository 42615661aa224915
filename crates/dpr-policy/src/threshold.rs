//! Threshold (the seed design): serve here while this host's load is below
//! the threshold; above it, redirect to the least-loaded `Alive` peer (one
//! chosen at random among equally loaded ones), but only if that peer is
//! less loaded than this host.
//!
//! The threshold is in normalised units (load per unit of capacity), so it
//! scales with the host's capacity as configured in the load table's
//! [`CapacityWeights`](dpr_table::CapacityWeights): with the default
//! open-connections metric and `threshold: 100.0`, a reference host serves
//! up to 100 connections before looking elsewhere and a host of CPU
//! capacity 2.0 up to 200.

use crate::error::PolicyError;
use crate::random::RandomSource;
use crate::{NewConnection, Policy, RedirectDecision};
use dpr_table::{LoadTable, PeerId};

/// Configuration of [`Threshold`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThresholdConfig {
    /// Normalised load at and above which redirecting is considered
    /// (finite, >= 0).
    pub threshold: f64,
}

/// The threshold strategy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    threshold: f64,
}

impl Threshold {
    /// A strategy from a checked configuration.
    pub fn new(config: ThresholdConfig) -> Result<Self, PolicyError> {
        if !(config.threshold.is_finite() && config.threshold >= 0.0) {
            return Err(PolicyError::InvalidConfig {
                field: "threshold",
                reason: "must be finite and non-negative",
            });
        }
        Ok(Self {
            threshold: config.threshold,
        })
    }

    /// The threshold, in normalised units (what [`LoadTable::local_load`]
    /// is compared with).
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The threshold in raw load units for this host (threshold x capacity).
    pub fn effective_threshold(&self, loads: &LoadTable) -> f64 {
        self.threshold * loads.local_capacity_scalar()
    }
}

/// The pure rule: `local_load` and `best_peer` are normalised loads;
/// `best_peer` is the least-loaded eligible peer, if any.
#[inline]
pub fn select(
    local_load: f64,
    threshold: f64,
    best_peer: Option<(PeerId, f64)>,
) -> RedirectDecision {
    if local_load < threshold {
        return RedirectDecision::ServeLocally;
    }
    match best_peer {
        Some((peer, load)) if load < local_load => RedirectDecision::Redirect(peer),
        _ => RedirectDecision::ServeLocally,
    }
}

impl Policy for Threshold {
    #[inline]
    fn decide(
        &mut self,
        conn: &NewConnection,
        loads: &LoadTable,
        rng: &mut dyn RandomSource,
    ) -> RedirectDecision {
        let local = loads.local_load();
        if conn.arrived_from_peer || local < self.threshold {
            return RedirectDecision::ServeLocally;
        }
        // Among equally loaded peers, any: by order of addition, an idle
        // cluster would send every redirect to the same one.
        select(
            local,
            self.threshold,
            loads.least_loaded_peer_among_ties(rng.next_u64()),
        )
    }

    fn name(&self) -> &'static str {
        "threshold"
    }
}

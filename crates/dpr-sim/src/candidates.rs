//! Candidate strategies measured against the ideal dispatcher (issue 13),
//! composed from the real load table so each can be compared on the same
//! arrivals. The one that won is a `dpr-policy` strategy; the others stay
//! here so `docs/simulation.md`'s candidate table can be re-run.
//!
//! A candidate answers two questions, as `thr-p2c` does: *whether* to
//! redirect ([`When`]) and *where* ([`Pick`]), and redirects only to a peer
//! lighter than this host by at least `lighter_by` connections per unit of
//! capacity. With [`IdleAds`] hosts also advertise that they are idle, in
//! the style of join-idle-queue (Lu et al. 2011), with the cluster
//! protocol's idle advertisement (the variants the protocol does not send,
//! other watermarks and fan-outs, exist only here).

use dpr_policy::join_idle::take_freshest;
use dpr_policy::{NewConnection, Policy, RandomSource, RedirectDecision};
use dpr_table::{HostRef, LoadTable, PeerId};
use std::collections::VecDeque;

/// Whether a host looks for a peer at all.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum When {
    /// At and above this normalised load (the seed's threshold).
    Fixed(f64),
    /// At and above the mean normalised load of the `Alive` peers (as
    /// known here, pending redirects included) plus this margin, computed
    /// by a scan of the table.
    AboveMean(f64),
}

/// Where a host that looks for a peer looks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pick {
    /// The least-loaded `Alive` peer, ties broken at random (a scan).
    LeastRandomTie,
    /// The least loaded of `d` capacity-weighted samples (this host's own
    /// samples are not candidates), plus with `memory` the peer this host
    /// last redirected to (Mitzenmacher, Prabhakar and Shah 2002).
    Sample {
        /// Samples per decision.
        d: u8,
        /// Also consider the last peer chosen.
        memory: bool,
    },
}

/// Idle advertisements (simulator only: a message the protocol lacks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleAds {
    /// A host whose open connections fall to this many or fewer tells
    /// `fanout` random peers it is idle.
    pub watermark: u32,
    /// Peers told per advertisement.
    pub fanout: u32,
    /// The first of them is the peer that last redirected a connection
    /// here (it has connections to place), the others random.
    pub to_redirector: bool,
    /// A host uses advertisements only with more open connections than
    /// this (else its own rule decides).
    pub use_above: u32,
}

/// One candidate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CandidateSpec {
    /// Whether.
    pub when: When,
    /// Where.
    pub pick: Pick,
    /// Redirect only to a peer at most `local - lighter_by` loaded (0:
    /// strictly less loaded than this host).
    pub lighter_by: f64,
    /// Idle advertisements, tried before `pick`.
    pub idle: Option<IdleAds>,
}

impl CandidateSpec {
    /// The label in tables: e.g. `jiq0-p2m-mean+0.5-l1`.
    pub fn label(&self) -> String {
        let mut s = String::new();
        if let Some(a) = self.idle {
            let r = if a.to_redirector { "r" } else { "" };
            s.push_str(&format!("jiq{}x{}{r}-", a.watermark, a.fanout));
            if a.use_above != a.watermark {
                s.push_str(&format!("u{}-", a.use_above));
            }
        }
        match self.pick {
            Pick::LeastRandomTie => s.push_str("llr"),
            Pick::Sample { d, memory } => {
                s.push_str(&format!("p{d}"));
                if memory {
                    s.push('m');
                }
            }
        }
        match self.when {
            When::Fixed(t) => s.push_str(&format!("-T{t}")),
            When::AboveMean(m) => s.push_str(&format!("-mean+{m}")),
        }
        if self.lighter_by > 0.0 {
            s.push_str(&format!("-l{}", self.lighter_by));
        }
        s
    }
}

/// A candidate as a [`Policy`] (one per host: it may remember a peer).
#[derive(Clone, Debug)]
pub struct Candidate {
    spec: CandidateSpec,
    last: Option<PeerId>,
}

impl Candidate {
    /// A candidate's strategy.
    pub fn new(spec: CandidateSpec) -> Self {
        Self { spec, last: None }
    }

    /// The normalised load at and above which this host looks elsewhere.
    pub fn threshold(&self, loads: &LoadTable) -> f64 {
        match self.spec.when {
            When::Fixed(t) => t,
            When::AboveMean(margin) => {
                let (sum, n) = loads
                    .peers()
                    .iter()
                    .filter(|p| loads.is_eligible(p.id))
                    .fold((0.0, 0u32), |(s, n), p| (s + p.load(), n + 1));
                if n == 0 {
                    f64::INFINITY
                } else {
                    sum / f64::from(n) + margin
                }
            }
        }
    }

    /// The rule for where, without idle advertisements.
    pub fn pick(&mut self, loads: &LoadTable, rng: &mut dyn RandomSource) -> Option<(PeerId, f64)> {
        match self.spec.pick {
            Pick::LeastRandomTie => {
                let (_, best) = loads.least_loaded_peer()?;
                let ties: Vec<PeerId> = loads
                    .peers()
                    .iter()
                    .filter(|p| loads.is_eligible(p.id) && p.load() == best)
                    .map(|p| p.id)
                    .collect();
                let i = ((u128::from(rng.next_u64()) * ties.len() as u128) >> 64) as usize;
                ties.get(i).map(|&p| (p, best))
            }
            Pick::Sample { d, memory } => {
                let mut best: Option<(PeerId, f64)> = None;
                let mut consider = |p: PeerId, l: f64| {
                    if l.is_finite() && best.is_none_or(|b| l < b.1) {
                        best = Some((p, l));
                    }
                };
                if memory {
                    if let Some(p) = self.last {
                        consider(p, loads.host_load(HostRef::Peer(p)));
                    }
                }
                for _ in 0..d {
                    if let (HostRef::Peer(p), l) = loads.sample_host_with_load(rng.next_u64()) {
                        consider(p, l);
                    }
                }
                if memory {
                    self.last = best.map(|b| b.0);
                }
                best
            }
        }
    }

    /// The decision, with this host's idle list (`None`: no idle ads).
    pub fn decide_with_idle(
        &mut self,
        conn: &NewConnection,
        loads: &LoadTable,
        rng: &mut dyn RandomSource,
        idle: Option<&mut VecDeque<PeerId>>,
    ) -> RedirectDecision {
        let local = loads.local_load();
        if conn.arrived_from_peer {
            return RedirectDecision::ServeLocally;
        }
        if let Some(list) = idle {
            // Above the watermark a host uses an advertisement if it has
            // one (freshest first, each once), whatever its threshold.
            let watermark = self.spec.idle.map_or(0.0, |a| f64::from(a.use_above));
            if local * loads.local_capacity_scalar() > watermark {
                if let Some(p) = take_freshest(list, |p| loads.is_eligible(p)) {
                    return RedirectDecision::Redirect(p);
                }
            }
        }
        if local < self.threshold(loads) {
            return RedirectDecision::ServeLocally;
        }
        match self.pick(loads, rng) {
            Some((p, l)) if l <= local - self.spec.lighter_by && l < local => {
                RedirectDecision::Redirect(p)
            }
            _ => RedirectDecision::ServeLocally,
        }
    }
}

impl Policy for Candidate {
    fn decide(
        &mut self,
        conn: &NewConnection,
        loads: &LoadTable,
        rng: &mut dyn RandomSource,
    ) -> RedirectDecision {
        self.decide_with_idle(conn, loads, rng, None)
    }

    fn name(&self) -> &'static str {
        "candidate"
    }
}

/// A candidate with this host's idle list, as a [`Policy`] for
/// `decide_and_account`.
pub struct WithIdle<'a> {
    /// The strategy.
    pub candidate: &'a mut Candidate,
    /// Peers that said they were idle, oldest first.
    pub idle: &'a mut VecDeque<PeerId>,
}

impl Policy for WithIdle<'_> {
    fn decide(
        &mut self,
        conn: &NewConnection,
        loads: &LoadTable,
        rng: &mut dyn RandomSource,
    ) -> RedirectDecision {
        self.candidate
            .decide_with_idle(conn, loads, rng, Some(self.idle))
    }

    fn name(&self) -> &'static str {
        "candidate-idle"
    }
}

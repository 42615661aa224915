//! Stateless hash: the client's source address and port choose the host,
//! the same way on every host that shares the seed and the membership view.
//!
//! Scheme: weighted rendezvous (highest random weight) hashing over a
//! table of `buckets` buckets. A flow's bucket is a keyed hash of its
//! source address and port; the bucket's owner is the eligible host with
//! the highest score `w / -ln(u)`, where `u` is a uniform hash of (bucket,
//! host id) and `w` the host's capacity weight, so each host owns a share
//! of buckets proportional to its weight. Because each bucket's owner is an
//! argmax, adding a host moves only the buckets it now wins (about
//! `w / W` of them) and removing one moves only the buckets it owned; no
//! other flow changes host. The table makes a decision O(1) instead of
//! O(hosts); it is updated incrementally (O(buckets) per changed host)
//! when the load table's membership epoch moves.

use crate::error::PolicyError;
use crate::random::RandomSource;
use crate::{NewConnection, Policy, RedirectDecision};
use core::net::{IpAddr, Ipv4Addr};
use dpr_packet::{FlowHasher, FlowKey};
use dpr_table::{LoadTable, PeerId};

/// Configuration of [`StatelessHash`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatelessHashConfig {
    /// Cluster-wide seed: every host must use the same one.
    pub seed: u64,
    /// Number of buckets (1 ..= 2^24); more buckets, finer balance. Use
    /// at least 64 per host.
    pub buckets: u32,
}

impl Default for StatelessHashConfig {
    fn default() -> Self {
        Self {
            seed: 0x6470_7231,
            buckets: 1 << 16,
        }
    }
}

/// The bucket of a flow: a keyed hash of its source address and source
/// port only (protocol kept), so all of one client port's traffic agrees.
#[inline]
pub fn bucket_of(hasher: &FlowHasher, flow: &FlowKey, buckets: u32) -> u32 {
    let src_only = FlowKey::new(
        flow.protocol,
        flow.src,
        flow.src_port,
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        0,
    );
    ((u128::from(hasher.hash(&src_only)) * u128::from(buckets)) >> 64) as u32
}

#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rendezvous score of `host` (weight `weight` > 0) for `bucket`.
#[inline]
pub fn score(seed: u64, bucket: u32, host: PeerId, weight: u64) -> f64 {
    let h =
        mix(seed
            ^ mix(u64::from(bucket) << 16 | u64::from(host.0)).wrapping_add(0x9e37_79b9_7f4a_7c15));
    // u uniform in (0, 1), never 0 or 1.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    weight as f64 / -u.ln()
}

/// The pure choice: index into `hosts` (id, weight; weight 0 = ineligible)
/// of the owner of `bucket`, or `None` if no host is eligible. Ties go to
/// the lower index.
pub fn rendezvous_owner(seed: u64, bucket: u32, hosts: &[(PeerId, u64)]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &(id, w)) in hosts.iter().enumerate() {
        if w == 0 {
            continue;
        }
        let s = score(seed, bucket, id, w);
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

const NONE: u32 = u32::MAX;

/// The stateless-hash strategy with its bucket table.
#[derive(Clone, Debug)]
pub struct StatelessHash {
    seed: u64,
    hasher: FlowHasher,
    /// Owner of each bucket: an index into `hosts`, or `NONE`.
    owner: Vec<u32>,
    best: Vec<f64>,
    hosts: Vec<(PeerId, u64)>,
    epoch: Option<u64>,
}

impl StatelessHash {
    /// A strategy with an empty table (filled on the first decision or by
    /// [`sync`](Self::sync)).
    pub fn new(config: StatelessHashConfig) -> Result<Self, PolicyError> {
        if config.buckets == 0 || config.buckets > 1 << 24 {
            return Err(PolicyError::InvalidConfig {
                field: "buckets",
                reason: "must be in 1 ..= 2^24",
            });
        }
        let n = config.buckets as usize;
        Ok(Self {
            seed: config.seed,
            hasher: FlowHasher::new(config.seed),
            owner: vec![NONE; n],
            best: vec![f64::NEG_INFINITY; n],
            hosts: Vec::new(),
            epoch: None,
        })
    }

    /// The host that owns `flow` under the current table, if any.
    pub fn owner_of(&self, flow: &FlowKey) -> Option<PeerId> {
        let b = bucket_of(&self.hasher, flow, self.owner.len() as u32);
        let o = self.owner[b as usize];
        (o != NONE).then(|| self.hosts[o as usize].0)
    }

    /// Brings the bucket table up to date with `loads`; cheap when the
    /// membership epoch has not moved. Returns true if anything changed.
    pub fn sync(&mut self, loads: &LoadTable) -> bool {
        if self.epoch == Some(loads.membership_epoch()) {
            return false;
        }
        self.epoch = Some(loads.membership_epoch());
        let n = loads.host_count();
        let fresh: Vec<(PeerId, u64)> = (0..n).filter_map(|i| loads.host_weight(i)).collect();
        let same_ids = self.hosts.iter().zip(&fresh).all(|(a, b)| a.0 == b.0);
        if !same_ids {
            self.hosts.clear();
            self.owner.fill(NONE);
            self.best.fill(f64::NEG_INFINITY);
        }
        for (i, &(id, w)) in fresh.iter().enumerate() {
            let old = match self.hosts.get(i) {
                Some(&(_, old)) => old,
                None => {
                    self.hosts.push((id, 0));
                    0
                }
            };
            if old != w {
                self.change_weight(i, old, w);
            }
        }
        true
    }

    fn change_weight(&mut self, i: usize, old: u64, new: u64) {
        self.hosts[i].1 = new;
        let id = self.hosts[i].0;
        for b in 0..self.owner.len() {
            let owned = self.owner[b] as usize == i;
            if new == 0 || (owned && new < old) {
                if owned {
                    self.recompute(b);
                }
                continue;
            }
            let s = score(self.seed, b as u32, id, new);
            if owned {
                self.best[b] = s;
            } else if s > self.best[b] || (s == self.best[b] && i < self.owner[b] as usize) {
                self.owner[b] = i as u32;
                self.best[b] = s;
            }
        }
    }

    fn recompute(&mut self, b: usize) {
        match rendezvous_owner(self.seed, b as u32, &self.hosts) {
            Some(o) => {
                self.owner[b] = o as u32;
                let (id, w) = self.hosts[o];
                self.best[b] = score(self.seed, b as u32, id, w);
            }
            None => {
                self.owner[b] = NONE;
                self.best[b] = f64::NEG_INFINITY;
            }
        }
    }

    /// Buckets per host id under the current table (status output, tests).
    pub fn bucket_counts(&self) -> Vec<(PeerId, usize)> {
        let mut counts = vec![0usize; self.hosts.len()];
        for &o in &self.owner {
            if o != NONE {
                counts[o as usize] += 1;
            }
        }
        self.hosts.iter().map(|h| h.0).zip(counts).collect()
    }

    /// Checks the incremental table against the pure function (tests).
    #[cfg(test)]
    pub(crate) fn matches_pure(&self) -> bool {
        (0..self.owner.len()).all(|b| {
            let want =
                rendezvous_owner(self.seed, b as u32, &self.hosts).map_or(NONE, |o| o as u32);
            self.owner[b] == want
        })
    }
}

impl Policy for StatelessHash {
    #[inline]
    fn decide(
        &mut self,
        conn: &NewConnection,
        loads: &LoadTable,
        _rng: &mut dyn RandomSource,
    ) -> RedirectDecision {
        if conn.arrived_from_peer {
            return RedirectDecision::ServeLocally;
        }
        self.sync(loads);
        match self.owner_of(&conn.flow) {
            Some(id) if id != loads.local_id() && loads.is_eligible(id) => {
                RedirectDecision::Redirect(id)
            }
            _ => RedirectDecision::ServeLocally,
        }
    }

    fn name(&self) -> &'static str {
        "stateless-hash"
    }
}

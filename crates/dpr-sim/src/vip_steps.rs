//! Issue 18's membership steps at the level of connections: a host joins,
//! drains, has its router restarted, dies; how many established
//! connections break under each way clients reach the cluster.
//!
//! The queueing model ([`crate::model`]) serves a connection where it was
//! placed until it departs: it cannot see a connection break because its
//! packets start to reach another host. This model can: every long-lived
//! connection has a client address (RR-DNS), a flow hash (ECMP), the host
//! whose tables route it (its ingress at the SYN) and the host that serves
//! it (the ingress, or a peer the policy redirected it to). A step changes
//! the next hops, and each connection's next packet then finds state or
//! not:
//!
//! - `rr-dns`: clients keep the address they resolved; nothing moves, but
//!   a dead host's address takes nobody's packets (its connections, served
//!   there or redirected elsewhere, break; new ones to it fail until DNS
//!   caches expire, which the model does not let happen: clients keep it).
//! - `vip, no ask`: one VIP behind ECMP, no shared state: a moved flow's
//!   packets reach a host that delivers them to its stack, which resets
//!   the connection unless it serves it.
//! - `vip, ask-on-miss`: the new ingress asks the peers; the serving host
//!   claims the flow unless it is dead.
//!
//! Restarts are modelled with restart recovery on, as `dprd` runs by
//! default: they break nothing in any mode here (the AF_XDP decapsulation
//! path, where a restarted server cannot name a VIP flow's origin, is the
//! case ask-on-miss fixes and the model leaves out).

use crate::rng::Rng;

/// How the upstream router spreads flows over the hosts announcing the VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ecmp {
    /// Hash modulo the number of next hops.
    Modulo,
    /// A resilient group of this many buckets.
    Resilient(usize),
}

/// How clients reach the cluster and what keeps a moved flow alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Round-robin DNS, one address per host.
    RrDns,
    /// A shared VIP behind ECMP, no state shared on a move.
    VipNoAsk,
    /// A shared VIP behind ECMP with ask-on-miss.
    VipAskOnMiss,
}

impl Access {
    /// The label in the table.
    pub fn label(self) -> &'static str {
        match self {
            Self::RrDns => "rr-dns",
            Self::VipNoAsk => "vip, no ask",
            Self::VipAskOnMiss => "vip, ask-on-miss",
        }
    }
}

/// The experiment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepsConfig {
    /// Hosts announcing at the start (a further one joins in step 1).
    pub hosts: usize,
    /// Long-lived connections open at the start.
    pub connections: usize,
    /// Share of connections the policy redirected from their ingress.
    pub redirected: f64,
    /// New connections per second during each step.
    pub arrival_rate: f64,
    /// Seconds from a death until the router withdraws the host (BGP hold
    /// time) and the peers stop redirecting to it.
    pub detection_s: f64,
    /// How long each step lasts, seconds (new connections are counted
    /// over it).
    pub step_s: f64,
    /// The front door.
    pub ecmp: Ecmp,
    /// Seed.
    pub seed: u64,
}

impl Default for StepsConfig {
    fn default() -> Self {
        Self {
            hosts: 4,
            connections: 10_000,
            redirected: 0.3,
            arrival_rate: 1000.0,
            detection_s: 1.0,
            step_s: 10.0,
            ecmp: Ecmp::Modulo,
            seed: 1,
        }
    }
}

/// One step's counts for one access mode.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRow {
    /// The step.
    pub step: &'static str,
    /// The access mode.
    pub access: Access,
    /// Long-lived connections open before the step.
    pub open: u64,
    /// Of those, broken by the step.
    pub broken: u64,
    /// New connections during the step, and those lost.
    pub new: u64,
    /// New connections lost.
    pub new_lost: u64,
}

#[derive(Clone, Copy, Debug)]
struct Conn {
    hash: u64,
    /// RR-DNS: the host whose address the client uses.
    addr: usize,
    /// The host whose routing table holds the flow.
    ingress: usize,
    server: usize,
}

/// The router's next hops for the VIP.
#[derive(Clone, Debug)]
struct Front {
    mode: Ecmp,
    hops: Vec<usize>,
    buckets: Vec<usize>,
}

impl Front {
    fn new(mode: Ecmp, hops: Vec<usize>) -> Self {
        let buckets = match mode {
            Ecmp::Modulo => Vec::new(),
            Ecmp::Resilient(n) => (0..n.max(1)).map(|b| hops[b % hops.len()]).collect(),
        };
        Self {
            mode,
            hops,
            buckets,
        }
    }

    fn pick(&self, hash: u64) -> usize {
        match self.mode {
            Ecmp::Modulo => self.hops[(hash % self.hops.len() as u64) as usize],
            Ecmp::Resilient(_) => self.buckets[(hash % self.buckets.len() as u64) as usize],
        }
    }

    fn count(&self, h: usize) -> usize {
        self.buckets.iter().filter(|&&x| x == h).count()
    }

    fn join(&mut self, h: usize) {
        self.hops.push(h);
        if let Ecmp::Resilient(_) = self.mode {
            let fair = self.buckets.len() / self.hops.len();
            while self.count(h) < fair {
                let Some(from) = self
                    .hops
                    .iter()
                    .copied()
                    .filter(|&x| x != h)
                    .max_by_key(|&x| (self.count(x), usize::MAX - x))
                else {
                    break;
                };
                let Some(b) = self.buckets.iter().rposition(|&x| x == from) else {
                    break;
                };
                self.buckets[b] = h;
            }
        }
    }

    fn leave(&mut self, h: usize) {
        self.hops.retain(|&x| x != h);
        if let Ecmp::Resilient(_) = self.mode {
            for b in 0..self.buckets.len() {
                if self.buckets[b] == h {
                    let to = self
                        .hops
                        .iter()
                        .copied()
                        .min_by_key(|&x| (self.count(x), x))
                        .unwrap_or(0);
                    self.buckets[b] = to;
                }
            }
        }
    }
}

/// Runs the four steps for one access mode; rows in step order.
pub fn run_steps(cfg: &StepsConfig, access: Access) -> Vec<StepRow> {
    let mut rng = Rng::new(cfg.seed, 18);
    let n = cfg.hosts.max(2);
    let joiner = n;
    let mut front = Front::new(cfg.ecmp, (0..n).collect());
    let mut up: Vec<bool> = vec![true; n + 1];
    up[joiner] = false;
    let mut conns: Vec<Conn> = (0..cfg.connections)
        .map(|_| {
            let hash = rng.u64();
            let addr = rng.below(n);
            let ingress = match access {
                Access::RrDns => addr,
                _ => front.pick(hash),
            };
            let server = if rng.f64() < cfg.redirected {
                (ingress + 1 + rng.below(n - 1)) % n
            } else {
                ingress
            };
            Conn {
                hash,
                addr,
                ingress,
                server,
            }
        })
        .collect();
    let new_per_step = (cfg.arrival_rate * cfg.step_s).round() as u64;
    let mut rows = Vec::new();
    // A move: each connection's next packet reaches `now_at`.
    let moved = |conns: &mut Vec<Conn>, at: &dyn Fn(&Conn) -> usize, up: &[bool]| -> u64 {
        let before = conns.len();
        conns.retain_mut(|c| {
            let to = at(c);
            if to == c.ingress {
                return up[c.server];
            }
            let ok = match access {
                Access::RrDns => false,
                Access::VipNoAsk => to == c.server && up[c.server],
                Access::VipAskOnMiss => up[c.server],
            };
            if ok {
                c.ingress = to;
            }
            ok
        });
        (before - conns.len()) as u64
    };

    // 1. A fifth host joins (announces the VIP; RR-DNS: a new address).
    let open = conns.len() as u64;
    up[joiner] = true;
    front.join(joiner);
    let broken = match access {
        Access::RrDns => 0,
        _ => moved(&mut conns, &|c: &Conn| front.pick(c.hash), &up),
    };
    rows.push(StepRow {
        step: "join",
        access,
        open,
        broken,
        new: new_per_step,
        new_lost: 0,
    });

    // 2. Host 3 drains: new connections go elsewhere, it withdraws the VIP
    // (RR-DNS: leaves DNS), its connections finish, it is removed.
    let drained = 3.min(n - 1);
    let open = conns.len() as u64;
    front.leave(drained);
    let broken = match access {
        Access::RrDns => 0,
        _ => moved(&mut conns, &|c: &Conn| front.pick(c.hash), &up),
    };
    // Its served connections (and RR-DNS: those using its address) end.
    conns.retain(|c| c.server != drained && (access != Access::RrDns || c.addr != drained));
    up[drained] = false;
    rows.push(StepRow {
        step: "drain",
        access,
        open,
        broken,
        new: new_per_step,
        new_lost: 0,
    });

    // 3. Host 1's router restarts (with restart recovery: nothing breaks
    // in any mode; ask-on-miss also needs none).
    rows.push(StepRow {
        step: "restart",
        access,
        open: conns.len() as u64,
        broken: 0,
        new: new_per_step,
        new_lost: 0,
    });

    // 4. Host 2 dies; the router withdraws it after `detection_s`.
    let dead = 2.min(n - 1);
    let open = conns.len() as u64;
    up[dead] = false;
    let hops_before = front.hops.len().max(1) as f64;
    front.leave(dead);
    let broken = match access {
        Access::RrDns => {
            let before = conns.len();
            conns.retain(|c| c.server != dead && c.addr != dead);
            (before - conns.len()) as u64
        }
        _ => moved(
            &mut conns,
            &|c: &Conn| {
                if c.ingress == dead {
                    front.pick(c.hash)
                } else {
                    c.ingress
                }
            },
            &up,
        ),
    };
    let new_lost = match access {
        // Clients keep the dead host's address for the whole step.
        Access::RrDns => (new_per_step as f64 / hops_before).round() as u64,
        // Until the withdrawal, the router still sends it its share.
        _ => (cfg.arrival_rate * cfg.detection_s.min(cfg.step_s) / hops_before).round() as u64,
    };
    rows.push(StepRow {
        step: "death",
        access,
        open,
        broken,
        new: new_per_step,
        new_lost,
    });
    rows
}

/// Every access mode's rows, and the table of them.
pub fn table(cfg: &StepsConfig) -> String {
    let mut out = format!(
        "# vip-steps: {} hosts (+1 joining), {} long-lived connections, {:.0} % redirected, \
         {:?} ECMP, {:.0} new connections/s, withdrawal {} s after a death\n",
        cfg.hosts,
        cfg.connections,
        cfg.redirected * 100.0,
        cfg.ecmp,
        cfg.arrival_rate,
        cfg.detection_s
    );
    out.push_str(&format!(
        "{:<8} {:<17} {:>7} {:>8} {:>8} {:>8} {:>9}\n",
        "step", "access", "open", "broken", "broken%", "new", "new lost%"
    ));
    for access in [Access::RrDns, Access::VipNoAsk, Access::VipAskOnMiss] {
        for r in run_steps(cfg, access) {
            out.push_str(&format!(
                "{:<8} {:<17} {:>7} {:>8} {:>8.2} {:>8} {:>9.2}\n",
                r.step,
                access.label(),
                r.open,
                r.broken,
                100.0 * r.broken as f64 / r.open.max(1) as f64,
                r.new,
                100.0 * r.new_lost as f64 / r.new.max(1) as f64,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(access: Access, ecmp: Ecmp) -> Vec<StepRow> {
        run_steps(
            &StepsConfig {
                ecmp,
                ..StepsConfig::default()
            },
            access,
        )
    }

    #[test]
    fn ask_on_miss_breaks_only_the_dead_hosts_connections() {
        for ecmp in [Ecmp::Modulo, Ecmp::Resilient(64)] {
            let r = rows(Access::VipAskOnMiss, ecmp);
            for s in &r[..3] {
                assert_eq!(s.broken, 0, "{ecmp:?} {}", s.step);
            }
            // Death: host 2's served connections (a third of the
            // survivors: host 3 left, host 4 joined with none), nothing else.
            let d = &r[3];
            assert!(
                d.broken > 0 && (d.broken as f64) < 0.35 * d.open as f64,
                "{d:?}"
            );
        }
    }

    #[test]
    fn without_ask_on_miss_a_join_breaks_moved_flows() {
        let modulo = rows(Access::VipNoAsk, Ecmp::Modulo);
        let resilient = rows(Access::VipNoAsk, Ecmp::Resilient(64));
        // Modulo moves most flows (4 -> 5 hops); a resilient group a fifth.
        assert!(
            modulo[0].broken as f64 > 0.5 * modulo[0].open as f64,
            "{modulo:?}"
        );
        assert!(resilient[0].broken < modulo[0].broken / 2, "{resilient:?}");
        assert!(resilient[0].broken > 0);
        // And a death breaks a larger share than with ask-on-miss (the
        // populations differ: the join already broke most of them).
        let ask = rows(Access::VipAskOnMiss, Ecmp::Modulo);
        let share = |r: &StepRow| r.broken as f64 / r.open.max(1) as f64;
        assert!(share(&modulo[3]) > share(&ask[3]), "{modulo:?} {ask:?}");
    }

    #[test]
    fn rr_dns_loses_new_connections_to_a_dead_address_for_the_whole_step() {
        let rr = rows(Access::RrDns, Ecmp::Modulo);
        let vip = rows(Access::VipAskOnMiss, Ecmp::Modulo);
        assert_eq!(rr[0].broken + rr[1].broken + rr[2].broken, 0);
        assert!(
            rr[3].new_lost > 5 * vip[3].new_lost,
            "{:?} {:?}",
            rr[3],
            vip[3]
        );
        // A death breaks the connections using its address too.
        assert!(rr[3].broken > vip[3].broken);
    }

    #[test]
    fn the_table_has_a_row_per_step_and_mode_and_the_cli_prints_it() {
        let t = table(&StepsConfig::default());
        assert_eq!(t.lines().count(), 2 + 3 * 4);
        let args = ["vip-steps".to_string(), "--seed".into(), "3".into()];
        assert_eq!(crate::cli::try_main(&args), Ok(()));
    }
}

//! `dpr-sim`: a deterministic discrete-event simulator of a DPR cluster.
//!
//! It answers the questions a lab cannot: how do the redirect policies
//! compare on the same arrivals, how stale may load reports be, and what
//! holds at 1,000 hosts. It works at connection level (a connection is an
//! arrival, a service demand and a departure; no packets), and every host
//! that runs a DPR policy decides with the project's real
//! [`LoadTable`](dpr_table::LoadTable) and strategy through
//! [`decide_and_account`](dpr_policy::decide_and_account), fed by simulated
//! load reports (full mesh or gossip) that arrive late.
//!
//! What this crate may not do: read a clock (time is the event queue's),
//! draw randomness that is not seeded by the run, or touch the network.
//! Same seed, same output, bit for bit.
//!
//! ```text
//!  scenario ─► ClusterConfig x [PolicyKind] ─► Sim::new(cfg, policy, seed)
//!                                                 │
//!   event queue (BinaryHeap by time, then order of scheduling)
//!     Arrival ─► client model picks a host ─► policy at that host
//!                  (LoadTable + Threshold / LeastLoad / TwoChoices / hash /
//!                   ThresholdTwoChoices / JoinIdle / candidates)
//!                  ├─ ServeLocally ─► join the host's processor-sharing queue
//!                  └─ Redirect(p) ─► Join at p after the tunnel latency
//!     Departure ─► response time ─► histogram, time series; a host left
//!                  idle advertises it (join-idle, simulated message) ─► Idle
//!     Tick ─► load report (full mesh: N-1 unicasts; gossip: k peers,
//!             relayed entries) ─► apply_report at the receivers, later
//!     Sample ─► load imbalance, knowledge age, health view
//!     Down / Up ─► connections lost, peers notice by missed reports
//!                                                 ▼
//!                                  RunReport ─► table (stdout), SVG plots
//! ```
#![forbid(unsafe_code)]

pub mod candidates;
pub mod cli;
pub mod config;
pub mod demand;
pub mod model;
pub mod plot;

pub mod rng;
pub mod scenario;

pub mod stats;
pub mod vip_steps;

pub use config::{AddressMode, ClientModel, ClusterConfig, Failure, Flash, PolicyKind, ReportMode};
pub use demand::Demand;
pub use model::{Sim, run};

pub use scenario::{Case, Scenario, ScenarioReport, run_scenario, scenario, scenario_names};
pub use stats::{Histogram, RunReport, SeriesPoint};

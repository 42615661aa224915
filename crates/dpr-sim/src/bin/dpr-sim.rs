//! `dpr-sim`: runs a named simulation scenario (see `dpr_sim::cli`).

fn main() {}

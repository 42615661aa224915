//! `dpr-sim`: runs a named simulation scenario (see `dpr_sim::cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    dpr_sim::cli::main(&args)
}

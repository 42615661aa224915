//! What dpr's end-to-end tests share: the root gate, the binaries under
//! test, and frame builders.
//!
//! The tests (`e2e.rs`: `dprd` clusters; `routers.rs`: the example routers;
//! `xsk_netns.rs`, `xdp_attach.rs`, `xdp_neigh.rs`: the XDP path; and
//! `lab_cleanup.rs`: the lab under signals) build network namespaces with
//! `dpr_lab` and use addresses from 198.18.0.0/15 only, inside those
//! namespaces, which they always remove. They need root: without it every
//! test says SKIPPED loudly on stderr and passes. A binary they need that
//! is missing fails them, naming its path; it never skips them.
#![allow(clippy::panic)] // a missing binary fails the test, loudly

pub mod clients;
pub mod frames;

use dpr_lab::lab::Programs;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `Some(guard)` when the test can run (root): the guard
/// runs the tests of one binary one at a time (they share two cores and
/// the kernel's tables). `None` after a loud SKIPPED line otherwise.
pub fn root_or_skip(test: &str) -> Option<MutexGuard<'static, ()>> {
    if !dpr_lab::netns::is_root() {
        eprintln!(
            "\n*** SKIPPED end-to-end test `{test}`: not root. These tests create network \
             namespaces, TUN devices, XDP programs and policy routes; run `sudo scripts/test` \
             (CI runs them as root). ***\n"
        );
        return None;
    }
    Some(ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner))
}

/// The target directory of this test binary (`target/<profile>`; the test
/// itself is in its `deps/`), where cargo puts the workspace's binaries.
pub fn target_dir() -> PathBuf {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => panic!("the test's own executable: {e}"),
    };
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// `dprd` and `dpr-lab`, from the target directory; fails the test, naming
/// the path, when one is missing.
pub fn programs() -> Programs {
    match Programs::in_dir(&target_dir()) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// The binary `name` of the target directory (an example router); fails
/// the test, naming the path, when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    if !p.is_file() {
        panic!(
            "{} not found (build it with `cargo build -p dpr-examples`, in the same profile \
             as the tests; `cargo test --workspace` does)",
            p.display()
        );
    }
    p
}

/// Unwraps a lab result, failing the test with its message.
pub fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

//! The `dprd` binary's command line, run as a user runs it: `--help` on a
//! command prints its usage and does nothing else, and `check-config`
//! accepts the example configuration. (The daemons in network namespaces
//! are the end-to-end tests of the top-level `tests/` package.)
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test code: failing loudly is the point

use std::process::{Command, Output};

fn dprd(args: &[&str]) -> Output {
    let exe = env!("CARGO_BIN_EXE_dprd");
    Command::new(exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{exe}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_prints_usage_and_does_nothing_else() {
    for cmd in ["run", "status", "drain", "reload", "check-config", "keygen"] {
        // A socket nobody listens on: a command that tried to do its job
        // instead of printing help would fail on it.
        let o = dprd(&[cmd, "--help", "--socket", "/nonexistent/dprd.sock"]);
        let out = text(&o.stdout);
        assert!(o.status.success(), "dprd {cmd} --help: {o:?}");
        assert!(
            out.to_ascii_lowercase().contains("usage:") && out.contains(cmd),
            "dprd {cmd} --help printed {out:?}"
        );
    }
}

#[test]
fn the_example_configuration_checks() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/config/lab-h0.toml"
    );
    let o = dprd(&["check-config", path]);
    assert!(o.status.success(), "{o:?}");
    assert!(text(&o.stdout).contains("host h0 (id 0)"), "{o:?}");
}

#[test]
fn a_bad_configuration_names_the_field() {
    let dir = std::env::temp_dir().join(format!("dprd-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    let good = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/config/lab-h0.toml"
    ))
    .unwrap();
    std::fs::write(
        &path,
        good.replace(
            "tunnel_addr = \"198.18.0.11\"",
            "tunnel_addr = \"not an address\"",
        ),
    )
    .unwrap();
    let o = dprd(&["check-config", &path.to_string_lossy()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!o.status.success(), "{o:?}");
    assert!(text(&o.stderr).contains("tunnel_addr"), "{o:?}");
}

//! The `dpr-lab` binary's command line: `--help` on every command prints
//! its usage and does nothing else (no namespace is created), and a bad
//! option is refused by name before anything is built.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test code: failing loudly is the point

use std::process::{Command, Output};

fn dpr_lab(args: &[&str]) -> (Output, u32) {
    let exe = env!("CARGO_BIN_EXE_dpr-lab");
    let child = Command::new(exe)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{exe}: {e}"));
    let pid = child.id();
    (child.wait_with_output().unwrap(), pid)
}

/// Namespaces a lab of process `pid` would have made (`dprlab-PID-*`).
fn namespaces_of(pid: u32) -> Vec<String> {
    dpr_lab::netns::namespaces_with_prefix(&format!("dprlab-{pid}-")).unwrap_or_default()
}

#[test]
fn help_prints_usage_and_does_nothing_else() {
    for cmd in ["lab", "bench", "bench-gen", "httpd", "loadgen"] {
        let (o, pid) = dpr_lab(&[cmd, "--help"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "dpr-lab {cmd} --help: {o:?}");
        assert!(
            out.contains(&format!("Usage: dpr-lab {cmd}")),
            "dpr-lab {cmd} --help printed {out:?}"
        );
        assert_eq!(namespaces_of(pid), Vec::<String>::new(), "{cmd}");
    }
    let (o, _) = dpr_lab(&["--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("lab") && out.contains("bench"), "{out}");
}

#[test]
fn bad_options_are_named_before_anything_is_built() {
    for (args, named) in [
        (&["lab", "--hosts", "9"][..], "--hosts 9"),
        (&["lab", "--policy", "fastest"][..], "--policy \"fastest\""),
        (&["lab", "--backend", "dpdk"][..], "--backend \"dpdk\""),
        (&["lab", "--skew", "1.5"][..], "--skew 1.5"),
        (&["lab", "--report-ms", "1"][..], "--report-ms 1"),
        (&["bench", "--secs", "60"][..], "--secs 60"),
        (&["bench", "--only", "fwd,disk"][..], "--only"),
        (
            &["loadgen", "--targets", "198.18.0.1", "--rate", "0"][..],
            "--rate 0",
        ),
    ] {
        let (o, pid) = dpr_lab(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(err.contains(named), "{args:?}: {err}");
        assert_eq!(namespaces_of(pid), Vec::<String>::new(), "{args:?}");
    }
}

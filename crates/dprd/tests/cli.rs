//! The `dprd` command line, run as a user runs it: the built binary.
//!
//! No root needed and nothing touched outside a scratch directory per test:
//! every `--help` prints usage and does nothing else (no daemon reached, no
//! file written, no key printed), usage errors exit with 2, failures exit
//! with 1 and say what failed, completions and man pages name every
//! command, and `dprd lab` / `dprd bench` hand their arguments unchanged to
//! the `dpr-lab` binary beside `dprd`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test code: failing loudly is the point

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

const COMMANDS: [&str; 11] = [
    "run",
    "cleanup",
    "check-config",
    "status",
    "drain",
    "reload",
    "keygen",
    "completions",
    "man",
    "lab",
    "bench",
];

fn dprd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dprd"))
}

/// A fresh, empty scratch directory of this test process.
fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "cli-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `exe ARGS` in `cwd`, with no admin socket reachable by default.
fn run_in(exe: &Path, cwd: &Path, args: &[&str]) -> Output {
    Command::new(exe)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn every_help_prints_usage_and_does_nothing_else() {
    let cwd = scratch("help");
    let absent = cwd.join("absent.sock");
    let absent = absent.to_str().unwrap();
    let out_dir = cwd.join("pages");
    let out_dir = out_dir.to_str().unwrap();
    let mut cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--help"], "Usage: dprd <COMMAND>"),
        (vec!["-h"], "Usage: dprd <COMMAND>"),
        (vec!["help"], "Usage: dprd <COMMAND>"),
        // Options that would act, with --help: only the usage.
        (
            vec!["run", "--config", "/nonexistent.toml", "--help"],
            "Usage: dprd run --config <FILE>",
        ),
        (
            vec!["status", "--socket", absent, "--help"],
            "Usage: dprd status [OPTIONS]",
        ),
        (
            vec!["drain", "--help", "--socket", absent],
            "Usage: dprd drain [OPTIONS]",
        ),
        (
            vec!["reload", "-h", "--socket", absent],
            "Usage: dprd reload [OPTIONS]",
        ),
        (
            vec!["man", "--out", out_dir, "--help"],
            "Usage: dprd man [OPTIONS]",
        ),
        (vec!["help", "run"], "Usage: dprd run --config <FILE>"),
        (
            vec!["status", "--watch", "-n", "0.5", "--help"],
            "Usage: dprd status [OPTIONS]",
        ),
        (
            vec!["drain", "--wait", "30", "--help"],
            "Usage: dprd drain [OPTIONS]",
        ),
        (vec!["help", "lab"], "Usage: dprd lab [ARGS]..."),
    ];
    for c in COMMANDS.iter().filter(|c| !matches!(**c, "lab" | "bench")) {
        cases.push((vec![c, "--help"], ""));
        cases.push((vec![c, "-h"], ""));
    }
    for (args, usage) in cases {
        let o = run_in(dprd(), &cwd, &args);
        let (out, err) = (text(&o.stdout), text(&o.stderr));
        let want = if usage.is_empty() {
            format!("Usage: dprd {}", args[0])
        } else {
            usage.to_string()
        };
        assert_eq!(o.status.code(), Some(0), "dprd {args:?}: {err}");
        assert!(out.contains(&want), "dprd {args:?} lacks {want:?}:\n{out}");
        assert!(err.is_empty(), "dprd {args:?} wrote to stderr: {err}");
        for acted in [
            "needs",
            "cannot reach",
            "dpr cluster key",
            "not found",
            ".TH",
        ] {
            assert!(
                !out.contains(acted),
                "dprd {args:?} did more than help ({acted:?}):\n{out}"
            );
        }
        assert!(
            entries(&cwd).is_empty(),
            "dprd {args:?} wrote {:?}",
            entries(&cwd)
        );
    }
    // The long help keeps what each command does, not only its options.
    let o = run_in(dprd(), &cwd, &["run", "--help"]);
    assert!(text(&o.stdout).contains("SIGTERM or Ctrl-C undoes the setup"));
    let o = run_in(dprd(), &cwd, &["--help"]);
    for c in COMMANDS {
        assert!(
            text(&o.stdout).contains(&format!("\n  {c} ")),
            "{c} not listed"
        );
    }
    let _ = std::fs::remove_dir_all(&cwd);
}

#[test]
fn bad_arguments_are_usage_errors_with_code_2() {
    let cwd = scratch("usage");
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["status", "--bogus"],
        vec!["status", "--socket"],
        vec!["run"],
        vec!["run", "--config"],
        vec!["check-config"],
        vec!["check-config", "a.toml", "b.toml"],
        vec!["keygen", "extra"],
        vec!["completions"],
        vec!["completions", "tcsh"],
        vec!["man", "--out"],
        // Moved out of dprd: the simulator is `dpr-sim`, the lab's
        // programs are `dpr-lab`'s.
        vec!["sim", "seed"],
        vec!["httpd"],
        vec!["loadgen"],
        vec!["bench-gen"],
    ] {
        let o = run_in(dprd(), &cwd, &args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "dprd {args:?}: {err}");
        assert!(
            err.contains("Usage: dprd") || err.contains("For more information, try '--help'."),
            "dprd {args:?}: {err}"
        );
        assert!(o.stdout.is_empty(), "dprd {args:?}: {}", text(&o.stdout));
    }
    let _ = std::fs::remove_dir_all(&cwd);
}

#[test]
fn check_config_names_the_bad_field_and_the_file() {
    let cwd = scratch("check");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config");
    let good = example.join("lab-h0.toml");
    let o = run_in(dprd(), &cwd, &["check-config", good.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains(": ok — host h0 (id 0)"),
        "{}",
        text(&o.stdout)
    );

    // A peer with this host's tunnel address.
    let text_of = std::fs::read_to_string(&good).unwrap();
    let own = text_of
        .lines()
        .find_map(|l| l.strip_prefix("tunnel_addr = "))
        .unwrap()
        .to_string();
    let bad = text_of
        .lines()
        .map(|l| match l.strip_prefix("tunnel_addr = ") {
            Some(_) => format!("tunnel_addr = {own}"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = cwd.join("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let o = run_in(dprd(), &cwd, &["check-config", "bad.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert_eq!(
        text(&o.stderr),
        "dprd: bad.toml: `cluster.peers[0].tunnel_addr`: already used by another host\n"
    );

    // A typo: TOML's own message, with the line and the key.
    std::fs::write(&path, text_of.replace("uplink", "uplnk")).unwrap();
    let o = run_in(dprd(), &cwd, &["check-config", "bad.toml"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.starts_with("dprd: bad.toml: TOML parse error at line"),
        "{err}"
    );
    assert!(err.contains("uplnk"), "{err}");

    // The file itself, and the reason beneath.
    let o = run_in(dprd(), &cwd, &["check-config", "absent.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        "dprd: absent.toml: cannot read the file: No such file or directory (os error 2)\n"
    );
    let _ = std::fs::remove_dir_all(&cwd);
}

#[test]
fn admin_commands_name_the_socket_they_could_not_reach() {
    let cwd = scratch("admin");
    for cmd in ["status", "drain", "reload"] {
        let o = run_in(dprd(), &cwd, &[cmd, "--socket", "absent.sock"]);
        assert_eq!(o.status.code(), Some(1), "{cmd}");
        assert_eq!(
            text(&o.stderr),
            "dprd: cannot reach dprd at absent.sock (is it running? --socket PATH to choose \
             another): No such file or directory (os error 2)\n",
            "{cmd}"
        );
    }
    let _ = std::fs::remove_dir_all(&cwd);
}

#[test]
fn keygen_prints_a_key_file() {
    let cwd = scratch("keygen");
    let a = run_in(dprd(), &cwd, &["keygen"]);
    let b = run_in(dprd(), &cwd, &["keygen"]);
    assert_eq!(a.status.code(), Some(0));
    let key = |o: &Output| {
        text(&o.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("1 ").map(str::to_string))
            .unwrap_or_default()
    };
    assert_eq!(key(&a).len(), 64, "{}", text(&a.stdout));
    assert!(key(&a).bytes().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(key(&a), key(&b));
    let _ = std::fs::remove_dir_all(&cwd);
}

#[test]
fn completions_name_every_command() {
    let cwd = scratch("completions");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = run_in(dprd(), &cwd, &["completions", shell]);
        let script = text(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", text(&o.stderr));
        assert!(!script.is_empty(), "{shell}");
        for c in COMMANDS {
            assert!(script.contains(c), "{shell}: no {c}");
        }
    }
    let bash = text(&run_in(dprd(), &cwd, &["completions", "bash"]).stdout);
    assert!(bash.contains("complete -F _dprd"), "{bash}");
    assert!(bash.contains("--socket") && bash.contains("--config"));
    assert!(entries(&cwd).is_empty());
    let _ = std::fs::remove_dir_all(&cwd);
}

#[test]
fn man_writes_a_page_per_command() {
    let cwd = scratch("man");
    let o = run_in(dprd(), &cwd, &["man"]);
    let page = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0));
    assert!(page.contains(".TH dprd 1"), "{page}");
    assert!(page.contains("dprd\\-check\\-config(1)") || page.contains("check\\-config"));
    assert!(entries(&cwd).is_empty(), "printing wrote files");

    let o = run_in(dprd(), &cwd, &["man", "--out", "share/man1"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let dir = cwd.join("share/man1");
    let mut want = vec!["dprd.1".to_string()];
    want.extend(COMMANDS.iter().map(|c| format!("dprd-{c}.1")));
    want.sort();
    assert_eq!(entries(&dir), want);
    for f in &want {
        let p = std::fs::read_to_string(dir.join(f)).unwrap();
        let name = f.trim_end_matches(".1");
        assert!(p.contains(&format!(".TH {name} 1")), "{f}: {p}");
        assert!(p.contains(".SH SYNOPSIS"), "{f}");
        assert!(
            text(&o.stdout).contains(&format!("share/man1/{f}\n")),
            "{f} not listed"
        );
    }
    let run = std::fs::read_to_string(dir.join("dprd-run.1")).unwrap();
    assert!(run.contains("\\-\\-config"), "{run}");

    // An unwritable place: the error names it.
    std::fs::write(cwd.join("file"), "").unwrap();
    let o = run_in(dprd(), &cwd, &["man", "--out", "file/sub"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).starts_with("dprd: mkdir file/sub: "),
        "{}",
        text(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&cwd);
}

/// A copy of `dprd` alone in a scratch directory (hard-linked where the
/// file system allows), so that the `dpr-lab` beside it is the test's.
fn lonely_dprd(name: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let exe = dir.join("dprd");
    if std::fs::hard_link(dprd(), &exe).is_err() {
        // Copied by another process: no file of ours open for writing
        // while tests execute programs (ETXTBSY).
        let ok = Command::new("cp").arg(dprd()).arg(&exe).status().unwrap();
        assert!(ok.success());
    }
    (dir, exe)
}

#[test]
fn lab_and_bench_run_dpr_lab_with_the_arguments_unchanged() {
    let (dir, exe) = lonely_dprd("lab");
    // No dpr-lab: the error names where it was looked for and how to build it.
    let o = run_in(&exe, &dir, &["lab", "--help"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        format!(
            "dprd: {}/dpr-lab not found: `dprd lab` runs it; build it with `cargo build -p \
             dpr-lab` (`--release` beside a release dprd)\n",
            dir.display()
        )
    );
    assert!(o.stdout.is_empty());

    // A stand-in that records its arguments and exits with 7, written by
    // a shell (see lonely_dprd).
    let script = "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$0.args\"\necho from-dpr-lab\nexit 7\n";
    let lab = dir.join("dpr-lab");
    let ok = Command::new("sh")
        .args([
            "-c",
            "printf '%s' \"$1\" > \"$2\" && chmod +x \"$2\"",
            "sh",
            script,
        ])
        .arg(&lab)
        .status()
        .unwrap();
    assert!(ok.success());
    for (args, passed) in [
        (vec!["lab", "--help"], "lab\n--help\n"),
        (vec!["lab"], "lab\n"),
        (
            vec!["lab", "--hosts", "2", "-h", "two words", "--", "--socket"],
            "lab\n--hosts\n2\n-h\ntwo words\n--\n--socket\n",
        ),
        (
            vec!["bench", "--only", "fwd", "--version"],
            "bench\n--only\nfwd\n--version\n",
        ),
        (vec!["bench", "--help"], "bench\n--help\n"),
    ] {
        let _ = std::fs::remove_file(dir.join("dpr-lab.args"));
        let o = run_in(&exe, &dir, &args);
        assert_eq!(
            o.status.code(),
            Some(7),
            "dprd {args:?}: {}",
            text(&o.stderr)
        );
        assert_eq!(text(&o.stdout), "from-dpr-lab\n", "dprd {args:?}");
        assert!(o.stderr.is_empty(), "dprd {args:?}: {}", text(&o.stderr));
        let got = std::fs::read_to_string(dir.join("dpr-lab.args")).unwrap();
        assert_eq!(got, passed, "dprd {args:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_example_configuration_checks() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/config/lab-h0.toml"
    );
    let o = run_in(dprd(), &scratch("example"), &["check-config", path]);
    assert!(o.status.success(), "{o:?}");
    assert!(text(&o.stdout).contains("host h0 (id 0)"), "{o:?}");
}

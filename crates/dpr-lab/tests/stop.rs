//! `dpr_lab::stop`: a stop request ends a running command at once and every
//! later step with the same error. One test: the stop flag is the process's.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test code: failing loudly is the point

use dpr_lab::stop;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_stop_request_kills_the_running_command_and_fails_the_next_steps() {
    // Before any request: commands run to completion, output captured.
    let o =
        stop::output(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"])).unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(
        (&o.stdout[..], &o.stderr[..]),
        (&b"out\n"[..], &b"err\n"[..])
    );
    // Its stderr passed through instead: not captured.
    let o = stop::output_passing_stderr(Command::new("sh").args(["-c", "echo out; echo err >&2"]))
        .unwrap();
    assert!(o.status.success());
    assert_eq!((&o.stdout[..], &o.stderr[..]), (&b"out\n"[..], &b""[..]));
    assert!(stop::check().is_ok());
    assert!(stop::sleep(Duration::from_millis(30)).is_ok());

    // A 60-second command, and a stop request after 200 ms.
    let requester = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(200));
        stop::request();
    });
    let started = Instant::now();
    let r = stop::output(Command::new("sleep").arg("60"));
    requester.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let e = r.unwrap_err();
    assert!(e.contains("interrupted"), "{e}");

    // From now on every step says so, without running anything.
    assert!(stop::requested());
    assert_eq!(stop::check().unwrap_err(), e);
    let started = Instant::now();
    assert!(stop::sleep(Duration::from_secs(30)).is_err());
    assert!(started.elapsed() < Duration::from_secs(1));
    let marker = std::env::temp_dir().join(format!("dpr-lab-stop-{}", std::process::id()));
    let r = stop::output(Command::new("touch").arg(&marker));
    assert!(
        r.is_err() && !marker.exists(),
        "a command ran after the stop"
    );
}

//! Stopping the lab's tools early and cleanly, on SIGINT, SIGTERM or SIGHUP.
//!
//! ```text
//!   signal ─► handler thread: STOP = true ─► the lab's waits see it (check, output)
//!                                             ├─ a running child (loadgen, wrk, curl) is killed
//!                                             └─ the error unwinds to main ─► Lab's Drop:
//!                                                dprd stopped with SIGTERM, children killed,
//!                                                namespaces deleted, files removed
//! ```
//! Once [`install`]ed, these signals never kill the process: a second one
//! during the clean-up is ignored, so the clean-up finishes. `timeout`
//! (SIGTERM), a closed terminal (SIGHUP) and Ctrl-C all take this path.
//! Without `install` (the tests), nothing here ever fires.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

static STOP: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicU8 = AtomicU8::new(0);

/// The signals `install` catches, by the number `SIGNAL` holds (0: none).
const NAMES: [&str; 4] = ["a stop request", "SIGINT", "SIGTERM", "SIGHUP"];

/// Catches SIGINT, SIGTERM and SIGHUP from now on: each sets the stop flag
/// (and says so on stderr, once) instead of killing the process.
pub fn install() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("signal handling: {e}"))?;
    let register = |kind: SignalKind, name: &str| {
        let _guard = rt.enter();
        signal(kind).map_err(|e| format!("signal handling ({name}): {e}"))
    };
    // Registered here, before returning: a signal that comes right after
    // `install` is already caught.
    let mut int = register(SignalKind::interrupt(), "SIGINT")?;
    let mut term = register(SignalKind::terminate(), "SIGTERM")?;
    let mut hup = register(SignalKind::hangup(), "SIGHUP")?;
    std::thread::Builder::new()
        .name("dpr-lab-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                loop {
                    let which: u8 = tokio::select! {
                        Some(()) = int.recv() => 1,
                        Some(()) = term.recv() => 2,
                        Some(()) = hup.recv() => 3,
                        else => return,
                    };
                    if !STOP.swap(true, Ordering::SeqCst) {
                        SIGNAL.store(which, Ordering::SeqCst);
                        eprintln!(
                            "dpr-lab: {}: stopping; removing everything the lab created",
                            NAMES[usize::from(which)]
                        );
                    }
                }
            });
        })
        .map_err(|e| format!("signal handling thread: {e}"))?;
    Ok(())
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Requests a stop, as a signal would (for tests and for callers that give
/// up on their own).
pub fn request() {
    STOP.store(true, Ordering::SeqCst);
}

/// The error the lab's steps return once a stop was requested.
pub fn interrupted() -> String {
    let name = NAMES
        .get(usize::from(SIGNAL.load(Ordering::SeqCst)))
        .unwrap_or(&NAMES[0]);
    format!("interrupted by {name}; everything the lab created is being removed")
}

/// `Err(interrupted())` once a stop was requested.
pub fn check() -> Result<(), String> {
    if requested() {
        Err(interrupted())
    } else {
        Ok(())
    }
}

/// Sleeps `d`, or less if a stop is requested meanwhile; then [`check`]s.
pub fn sleep(d: Duration) -> Result<(), String> {
    let step = Duration::from_millis(20);
    let mut left = d;
    while !left.is_zero() && !requested() {
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
    check()
}

/// Runs `cmd` to completion like [`Command::output`] (stdout and stderr
/// captured), but kills it and returns [`interrupted`] as soon as a stop is
/// requested: the lab's long steps (a load run, wrk, a transfer) end at
/// once, not when they would have.
pub fn output(cmd: &mut Command) -> Result<Output, String> {
    run(cmd, true)
}

/// [`output`], but the command's stderr goes to ours as it comes (progress
/// lines); the `stderr` of the result is empty.
pub fn output_passing_stderr(cmd: &mut Command) -> Result<Output, String> {
    run(cmd, false)
}

fn run(cmd: &mut Command, capture_stderr: bool) -> Result<Output, String> {
    check()?;
    let stderr = if capture_stderr {
        Stdio::piped()
    } else {
        Stdio::inherit()
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let status = wait_or_stop(&mut child).map_err(|e| format!("{cmd:?}: {e}"))?;
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(interrupted()),
    }
}

/// Waits for `child`; `None` when a stop was requested first (it is then
/// killed and reaped).
pub fn wait_or_stop(child: &mut Child) -> std::io::Result<Option<std::process::ExitStatus>> {
    // Short commands (`ip`) finish in the first polls; long ones are polled
    // every 20 ms.
    let mut pause = Duration::from_micros(500);
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if requested() {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn reader<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut v);
        }
        v
    })
}

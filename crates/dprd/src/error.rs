//! The errors of `dprd`, as types that name what failed: the configuration
//! field, the file or socket path, or the system call. The library error or
//! `io::Error` beneath is the [`source`](std::error::Error::source), not
//! repeated in the message, so that [`Report`] prints the whole chain once:
//!
//! ```text
//! dprd: h0.toml: `cluster.key_file`: cannot read /etc/dpr/cluster.key: No such file or directory (os error 2)
//!       ^ Error::Config  ^ ConfigError::KeyFileRead                  ^ io::Error
//! ```

use dpr_router::cluster::ClusterError;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything a `dprd` command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file at `path` cannot be read, parsed or
    /// validated; the source names the field.
    #[error("{}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ConfigError,
    },
    /// The cluster protocol refused the configuration's peers or keys.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// No dprd answers on the admin socket at `path`.
    #[error(
        "cannot reach dprd at {} (is it running? --socket PATH to choose another)",
        path.display()
    )]
    AdminConnect {
        /// The admin socket.
        path: PathBuf,
        /// The `connect(2)` error.
        #[source]
        source: io::Error,
    },
    /// A request over the admin socket at `path` failed after connecting.
    #[error("admin socket {}: {syscall}", path.display())]
    AdminIo {
        /// The admin socket.
        path: PathBuf,
        /// What failed: `write`, `read`, `setsockopt(SO_RCVTIMEO)`.
        syscall: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The dprd at `path` answered something that is not a valid answer
    /// to `request`.
    #[error("bad answer from dprd at {} to `{request}`", path.display())]
    AdminAnswer {
        /// The admin socket.
        path: PathBuf,
        /// The request sent.
        request: String,
        /// Why the answer does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The dprd at `path` refused `request`, saying why.
    #[error("dprd at {} refused `{request}`: {message}", path.display())]
    AdminRefused {
        /// The admin socket.
        path: PathBuf,
        /// The request sent.
        request: String,
        /// The daemon's reason.
        message: String,
    },
    /// A system call on `path` failed (reading the random source, writing
    /// a man page, executing `dpr-lab`).
    #[error("{syscall} {}", path.display())]
    Io {
        /// The system call or operation (`read`, `write`, `execve`, ...).
        syscall: &'static str,
        /// The file it was on.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `dprd drain --wait` ran out of time before the host left the cluster.
    #[error(
        "dprd at {} still {phase} after {waited_s:.0} s: {open_connections} open \
         connection(s), {routes} routed to peers (a stop now holds the routed ones for the \
         next start, `[backend] hold_on_exit`)",
        path.display()
    )]
    DrainTimeout {
        /// The admin socket.
        path: PathBuf,
        /// The phase at the last read.
        phase: String,
        /// Seconds waited.
        waited_s: f64,
        /// Open service connections at the last read.
        open_connections: u32,
        /// Routing table entries at the last read.
        routes: usize,
    },
    /// `dprd lab` and `dprd bench` run the sibling `dpr-lab` binary, and it
    /// is not there.
    #[error(
        "{} not found: `dprd {command}` runs it; build it with `cargo build -p dpr-lab` \
         (`--release` beside a release dprd)",
        path.display()
    )]
    LabMissing {
        /// Where it was looked for: beside the running `dprd`.
        path: PathBuf,
        /// `lab` or `bench`.
        command: &'static str,
    },
    /// Encoding the Prometheus exposition failed.
    #[error("encoding the metrics")]
    Metrics(#[source] fmt::Error),
    /// `dprd run` failed.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

/// What `dprd run` (and a reload) failed at: the step, the address, path
/// or field, with the system's error as the source.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration (see [`Error::Config`]).
    #[error(transparent)]
    Config(Box<Error>),
    /// Not privileged.
    #[error(
        "dprd run needs root (CAP_NET_ADMIN) to create its TUN device and set up routing; \
         `dprd check-config` and `cargo run -p dpr-examples --bin cluster-demo` need none"
    )]
    NotRoot,
    /// The TUN device `name` (`backend.tun_name`) cannot be created.
    #[error("TUN device {name} (`backend.tun_name`)")]
    Tun {
        /// Its name.
        name: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Host set-up failed at a step (the step is in the message; what was
    /// done before it has been undone).
    #[error(transparent)]
    HostSetup(#[from] dpr_io::host::SetupError),
    /// Another instance runs (`[admin] state_dir` holds its lock).
    #[error(transparent)]
    Lock(#[from] dpr_io::state::LockError),
    /// The journal a previous instance left cannot be read.
    #[error("the host set-up journal (`admin.state_dir`)")]
    State(#[source] dpr_io::state::StateError),
    /// The AF_XDP backend refused a peer update on reload.
    #[error(transparent)]
    Xdp(#[from] dpr_io::xdp::XdpError),
    /// `[policy]` builds no policy.
    #[error("`policy`")]
    Policy(#[source] dpr_policy::PolicyError),
    /// The engine refused the configuration.
    #[error("engine")]
    Engine(#[source] dpr_router::EngineError),
    /// The cluster protocol refused the configuration.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A socket cannot be bound (`what`: the admin socket, the control
    /// socket, the metrics address).
    #[error("{what} {addr}")]
    Bind {
        /// Which socket, and the field that sets it.
        what: &'static str,
        /// Its address or path.
        addr: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Multicast reports on an IPv6 tunnel address.
    #[error("`cluster.mode`: multicast reports need an IPv4 tunnel address")]
    MulticastNeedsV4,
    /// Dropping privileges to `host.user` failed.
    #[error("`host.user`: dropping privileges to {user}")]
    Privileges {
        /// The user.
        user: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A system call of the start-up failed (`what`: starting a worker,
    /// the runtime, a signal handler).
    #[error("{what}")]
    Start {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A reload changed what only a restart can.
    #[error("[host], [backend], [tunnel] and [vip] changes need a restart; nothing reloaded")]
    NeedsRestart,
    /// Steps of the teardown that could not be undone.
    #[error("teardown incomplete: {}", .0.join("; "))]
    Teardown(Vec<String>),
}

impl From<Error> for DaemonError {
    fn from(e: Error) -> Self {
        Self::Config(Box::new(e))
    }
}

impl DaemonError {
    /// A start-up system call that failed.
    pub fn start(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |source| Self::Start { what, source }
    }
}

/// What is wrong with a configuration (the file's path is in
/// [`Error::Config`]).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the file")]
    Read(#[source] io::Error),
    /// TOML syntax, an unknown field or a value of the wrong type: the
    /// message carries the line, the column and the key.
    #[error(transparent)]
    Syntax(#[from] toml::de::Error),
    /// A field's value is invalid.
    #[error("`{field}`: {reason}")]
    Field {
        /// Dotted path of the field (`cluster.peers[1].tunnel_addr`).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The key file (`cluster.key_file`) cannot be read.
    #[error("`cluster.key_file`: cannot read {}", path.display())]
    KeyFileRead {
        /// The key file, resolved against the configuration's directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The key file does not hold valid keys.
    #[error("`cluster.key_file`: {}", path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What the key ring parser refused.
        #[source]
        source: ClusterError,
    },
}

impl ConfigError {
    /// The dotted path of the bad field, where one is to blame (`None`: the
    /// file cannot be read; TOML errors name their key in the message).
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Field { field, .. } => Some(field),
            Self::KeyFileRead { .. } | Self::KeyFile { .. } => Some("cluster.key_file"),
            Self::Read(_) | Self::Syntax(_) => None,
        }
    }
}

/// The cluster protocol refused a configuration (bad peer set: a duplicate
/// id or tunnel address the engine refuses).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ControlError(#[from] pub ClusterError);

/// Displays an error and its source chain on one line, `: `-separated:
/// what `dprd` prints after `dprd: `.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

/// The error and its source chain as one line ([`Report`]).
pub fn report(e: &(dyn std::error::Error + 'static)) -> String {
    Report(e).to_string()
}

/// For the callers that still report errors as `String` (the daemon and
/// the lab, until they are converted): the whole chain, nothing lost.
impl From<Error> for String {
    fn from(e: Error) -> Self {
        report(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_the_path_the_field_and_the_cause_once() {
        let e = Error::Config {
            path: "h0.toml".into(),
            source: ConfigError::KeyFileRead {
                path: "/etc/dpr/cluster.key".into(),
                source: io::Error::from(io::ErrorKind::NotFound),
            },
        };
        let r = report(&e);
        assert!(
            r.starts_with("h0.toml: `cluster.key_file`: cannot read /etc/dpr/cluster.key: "),
            "{r}"
        );
        assert_eq!(r.matches("h0.toml").count(), 1, "{r}");
        assert_eq!(r.matches("cluster.key").count(), 2, "{r}");
        assert_eq!(String::from(e), r);
    }

    #[test]
    fn fields_are_named_where_one_is_to_blame() {
        let f = ConfigError::Field {
            field: "tunnel.mtu".into(),
            reason: "must be at least 576".into(),
        };
        assert_eq!(f.field(), Some("tunnel.mtu"));
        assert_eq!(f.to_string(), "`tunnel.mtu`: must be at least 576");
        let r = ConfigError::Read(io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(r.field(), None);
    }
}

//! `[bgp]`: coupling the host's health to a BGP speaker's announcement of
//! its service addresses (the front door of a shared VIP behind ECMP).
//!
//! `dprd` speaks no BGP. While it is healthy it keeps one host route per
//! address it serves as its own (`ADDR/32`, `ADDR/128`, `dev lo`) in the
//! kernel table `announce_table`; a BGP speaker on the host (BIRD's
//! `kernel` protocol with `learn`, reading that table) announces exactly
//! what the table holds. `dprd drain` removes the routes (the speaker
//! withdraws, the upstream router stops sending new flows here while the
//! established ones finish); a full stop removes them first of all; a held
//! restart keeps them, so a restart does not move flows. A crash leaves
//! them: the speaker's session and the router's hold timer (or BFD) are
//! what detect a dead host. See docs/deployment.md, "A shared VIP behind
//! ECMP". The routes themselves are `dpr_io::host`'s, journalled like the
//! rest of the host set-up.

use crate::config::ConfigError;
use serde::{Deserialize, Serialize};

/// `[bgp]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BgpSection {
    /// The kernel table of the announcement routes (absent: none are made).
    #[serde(default)]
    pub announce_table: Option<u32>,
}

impl BgpSection {
    /// Checks the table against the backend's own tables.
    pub fn validate(&self, divert_table: u32, mss_table: u32) -> Result<(), ConfigError> {
        if let Some(t) = self.announce_table {
            if t == 0 || (253..=255).contains(&t) || t == divert_table || t == mss_table {
                return Err(ConfigError::Field {
                    field: "bgp.announce_table".into(),
                    reason:
                        "must not be 0, 253, 254, 255, backend.divert_table or backend.mss_table"
                            .into(),
                });
            }
        }
        Ok(())
    }
}

/// `dprd drain`: the announcement routes go, so the BGP speaker withdraws
/// this host's addresses and the upstream router sends its new flows to the
/// other hosts. A failure is logged: draining goes on regardless.
pub fn withdraw_on_drain<S: dpr_io::host::HostSys>(guard: &mut dpr_io::host::HostGuard<S>) {
    match guard.withdraw() {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            routes = n,
            "drain: announcement routes removed (BGP withdraws)"
        ),
        Err(e) => tracing::warn!(error = %e, "drain: removing the announcement routes failed"),
    }
}

/// Whether a stop (SIGTERM, SIGINT) keeps the set-up, announcement routes
/// included, for the next instance: yes while the addresses are announced
/// and the host is not draining. A stop that is not preceded by a drain is
/// taken for a restart: withdrawing and announcing again would make the
/// upstream router rehash twice and move other hosts' flows for nothing.
/// To take a host out, drain it first (or set `hold_on_exit = false`).
pub fn hold_announcement<S: dpr_io::host::HostSys>(
    guard: &dpr_io::host::HostGuard<S>,
    draining: bool,
) -> bool {
    !draining && guard.is_announced()
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = r#"
[host]
name = "a"
id = 1
uplink = "eth0"
tunnel_addr = "198.18.0.11"
service_addrs = ["198.18.0.100", "fd00:dead::100"]
service_ports = [80]
"#;

    #[test]
    fn the_announce_table_is_read_and_checked() {
        let c = Config::parse(&format!("{BASE}\n[bgp]\nannounce_table = 102\n")).unwrap();
        assert_eq!(c.bgp.announce_table, Some(102));
        assert_eq!(Config::parse(BASE).unwrap().bgp.announce_table, None);
        for t in [0, 100, 101, 254] {
            let e = Config::parse(&format!("{BASE}\n[bgp]\nannounce_table = {t}\n")).unwrap_err();
            assert!(e.to_string().contains("bgp.announce_table"), "{t}: {e}");
        }
        let e = Config::parse(&format!("{BASE}\n[bgp]\ntable = 5\n")).unwrap_err();
        assert!(e.to_string().contains("table"), "{e}");
    }
}

//! The one error type of dpr-table.

use core::fmt;

/// What went wrong in a table operation or configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    /// A configuration field is out of range; names the field and why.
    InvalidConfig {
        /// The field, as spelled in the config struct.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The flow cannot be stored in this table's key form (an IPv6 flow in
    /// an IPv4-only table).
    UnsupportedKey,
    /// An export blob is malformed: the byte offset where parsing stopped.
    MalformedExport {
        /// Offset of the first byte that could not be read.
        offset: usize,
    },
    /// No peer with this id is known.
    UnknownPeer(u16),
    /// The peer id is already present (and not `Left`).
    DuplicatePeer(u16),
    /// A load report field is invalid (negative, NaN, or zero capacity).
    InvalidReport {
        /// The field of the report.
        field: &'static str,
    },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig { field, reason } => {
                write!(f, "invalid configuration: `{field}` {reason}")
            }
            Self::UnsupportedKey => f.write_str("flow key not representable in this table"),
            Self::MalformedExport { offset } => {
                write!(f, "malformed table export at byte {offset}")
            }
            Self::UnknownPeer(id) => write!(f, "unknown peer {id}"),
            Self::DuplicatePeer(id) => write!(f, "peer {id} already present"),
            Self::InvalidReport { field } => write!(f, "invalid load report: `{field}`"),
        }
    }
}

impl std::error::Error for TableError {}

/// Shorthand for results of this crate.
pub type Result<T> = core::result::Result<T, TableError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_field() {
        let e = TableError::InvalidConfig {
            field: "capacity",
            reason: "must be at least 1",
        };
        assert_eq!(
            e.to_string(),
            "invalid configuration: `capacity` must be at least 1"
        );
        assert!(
            TableError::MalformedExport { offset: 7 }
                .to_string()
                .contains('7')
        );
    }
}

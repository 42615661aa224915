//! The one error type of dpr-policy.

use core::fmt;

/// A strategy configuration is invalid; names the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyError {
    /// A configuration field is out of range.
    InvalidConfig {
        /// The field, as spelled in the config struct.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig { field, reason } => {
                write!(f, "invalid policy configuration: `{field}` {reason}")
            }
        }
    }
}

impl std::error::Error for PolicyError {}

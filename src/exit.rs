//! Errors whose exit code says something particular. Any other error is a failure (exit 1);
//! `main` maps these by type, never by message.

/// Why a command was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExitError {
    /// Bad usage or configuration: the command cannot run as asked (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Something the command names is not there: a spool, a dataset, a ledger id (exit 2).
    #[error("{0}")]
    NotFound(String),
    /// Another process holds what this needs, e.g. an export to the same target (exit 4).
    #[error("{0}")]
    Busy(String),
}

impl ExitError {
    pub fn code(&self) -> u8 {
        match self {
            ExitError::Usage(_) | ExitError::NotFound(_) => 2,
            ExitError::Busy(_) => 4,
        }
    }
}

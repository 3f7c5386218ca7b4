//! ferry: file-transfer batch ingestion.
//!
//! Every file that lands is loaded once, or set aside with a reason — never lost, never doubled,
//! never half-read. See ARCHITECTURE.md for the map of these modules. Only what the binary
//! needs is public: the command line, dispatch, logging and the exit error.

pub mod cli;
pub mod cmd;
pub(crate) mod config;
pub(crate) mod container;
pub(crate) mod discover;
pub(crate) mod events;
pub mod exit;
pub(crate) mod export;
pub(crate) mod faults;
pub(crate) mod format;
pub(crate) mod fsio;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod hash;
pub(crate) mod health;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod page;
pub(crate) mod pipeline;
pub(crate) mod record;
pub(crate) mod reject;
pub(crate) mod remote;
pub(crate) mod report;
pub(crate) mod retention;
pub(crate) mod shutdown;
pub(crate) mod spool;
pub(crate) mod store;
pub(crate) mod typed;

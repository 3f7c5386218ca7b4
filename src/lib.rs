//! ferry: file-transfer batch ingestion.
//!
//! Every file that lands is loaded once, or set aside with a reason — never lost, never doubled,
//! never half-read. See ARCHITECTURE.md for the map of these modules.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod discover;
pub mod events;
pub mod exit;
pub mod export;
pub mod faults;
pub mod format;
pub mod fsio;
pub mod hash;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod record;
pub mod reject;
pub mod report;
pub mod shutdown;
pub mod spool;
pub mod store;
pub mod typed;

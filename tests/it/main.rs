//! Integration tests: the real `ferry` binary against a fresh temp spool per test.
//!
//! Assertions compare data — ledger rows, stored records, files on disk and their hashes — never
//! log text. `harness` holds the helpers; each other module covers one area.

#[macro_use]
mod harness;
mod pg;
mod seaweed;
mod sshd;
mod vsftpd;

pub mod archives;
mod bucket;
mod crash;
mod dashboards;
mod edges;
mod edges_files;
mod edges_ops;
mod export;
mod formats;
mod ftp;
mod keys;
mod model;
mod names;
mod openpgp;
mod operations;
mod parquet;
mod places;
mod postgres;
mod receipts;
mod remote;
mod retention;
mod run;
mod targets;
mod typed;
mod watch;
mod workbooks;

//! What `ferry rekey` prints.

use super::{thousands, Report};
use serde::Serialize;
use std::fmt::Write;

/// A re-key: what it found and did (or, in a dry run, would do).
#[derive(Debug, Serialize)]
pub struct Rekeyed {
    pub dataset: String,
    pub table: String,
    /// The key applied: `(vin, make, year)`.
    pub key: String,
    pub dry_run: bool,
    pub records: u64,
    /// Records whose key hash changed.
    pub rehashed: u64,
    /// Records removed (`--keep`): one record of each key stays.
    pub removed: u64,
    /// Why the key cannot be applied (nothing was changed).
    pub conflict: Option<String>,
}

impl Report for Rekeyed {
    fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} {} in table {} under key {}",
            if self.dry_run {
                "would re-key"
            } else {
                "re-keyed"
            },
            super::count(self.records, "record", "records"),
            self.table,
            self.key
        );
        let _ = writeln!(
            out,
            "  key hashes changed  {:>10}",
            thousands(self.rehashed)
        );
        if self.removed > 0 {
            let _ = writeln!(
                out,
                "  records removed     {:>10}  (one record of each key kept)",
                thousands(self.removed)
            );
        }
        if let Some(c) = &self.conflict {
            let _ = writeln!(out, "  not applied: {c}");
        }
        out
    }
}

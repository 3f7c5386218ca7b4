//! `[unpack]` and the same keys on a `[[dataset]]`: how archives and OpenPGP files are opened.

use super::Unpack;
use serde::Deserialize;
use std::path::PathBuf;

/// The keys as written; a dataset's keys override `[unpack]`'s one by one.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUnpack {
    pub archive_members: Option<String>,
    /// Bytes (`17179869184`) or a size (`"16GiB"`).
    pub max_archive_bytes: Option<toml::Value>,
    pub max_archive_ratio: Option<u64>,
    pub max_archive_members: Option<usize>,
    pub pgp_secret_key: Option<PathBuf>,
    pub pgp_passphrase_env: Option<String>,
    pub pgp_verify_key: Option<PathBuf>,
    /// Refused with the reason (never read).
    pub pgp_passphrase: Option<toml::Value>,
}

impl RawUnpack {
    /// Whether any key is set (a dataset without any uses `[unpack]` as it is).
    pub fn any(&self) -> bool {
        self.archive_members.is_some()
            || self.max_archive_bytes.is_some()
            || self.max_archive_ratio.is_some()
            || self.max_archive_members.is_some()
            || self.pgp_secret_key.is_some()
            || self.pgp_passphrase_env.is_some()
            || self.pgp_verify_key.is_some()
            || self.pgp_passphrase.is_some()
    }

    /// `base` with these keys applied; the error names the key.
    pub fn apply(&self, base: &Unpack) -> Result<Unpack, String> {
        let mut u = base.clone();
        if let Some(m) = &self.archive_members {
            u.each = match m.as_str() {
                "unit" => false,
                "each" => true,
                _ => return Err(format!("archive_members = {m:?}: \"unit\" or \"each\"")),
            };
        }
        if let Some(v) = &self.max_archive_bytes {
            let n = match v {
                toml::Value::Integer(i) => u64::try_from(*i).ok(),
                toml::Value::String(s) => super::values::parse_bytes(s).ok(),
                _ => None,
            };
            u.max_bytes = n
                .filter(|n| (1 << 20..=1 << 40).contains(n))
                .ok_or_else(|| {
                    format!("max_archive_bytes = {v}: a size between 1MiB and 1024GiB (\"16GiB\")")
                })?;
        }
        if let Some(r) = self.max_archive_ratio {
            if !(2..=1_000_000).contains(&r) {
                return Err(format!("max_archive_ratio = {r}: between 2 and 1000000"));
            }
            u.max_ratio = r;
        }
        if let Some(m) = self.max_archive_members {
            if !(1..=1_000_000).contains(&m) {
                return Err(format!("max_archive_members = {m}: between 1 and 1000000"));
            }
            u.max_members = m;
        }
        if self.pgp_passphrase.is_some() {
            return Err(
                "pgp_passphrase: secrets are never read from ferry.toml; name an \
                        environment variable: pgp_passphrase_env = \"FERRY_PGP_PASSPHRASE\""
                    .into(),
            );
        }
        if let Some(v) = &self.pgp_passphrase_env {
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err("pgp_passphrase_env: the name of an environment variable".into());
            }
            u.pgp_passphrase_env = Some(v.clone());
        }
        if let Some(k) = &self.pgp_secret_key {
            u.pgp_secret_key = Some(k.clone());
        }
        if let Some(k) = &self.pgp_verify_key {
            u.pgp_verify_key = Some(k.clone());
        }
        Ok(u)
    }
}

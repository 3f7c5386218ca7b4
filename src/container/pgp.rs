//! OpenPGP files through rpgp (pure Rust, streaming): decrypted with the configured secret key,
//! decompressed, written out as one member, and — with `pgp_verify_key` — accepted only with a
//! valid signature by the partner's key (primary or subkey). The signature can only be checked
//! once the whole message was read, which is why the plaintext is written out first: nothing
//! of a file whose signature or integrity check fails is ever parsed.

use super::{Facts, Member, SpillError, Spiller};
use crate::config::Unpack;
use crate::reject::{Kind, Reject, Stage};
use pgp::composed::{
    DecryptionOptions, Deserializable, Message, SignedPublicKey, SignedSecretKey, TheRing,
};
use pgp::types::{KeyDetails, Password};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// Whether a file's first bytes are an OpenPGP message's first packet (a public-key or
/// symmetric session key, a one-pass signature, compressed data) in a form no text starts
/// with: old-format packet headers (bytes 0x80–0xBF never begin UTF-8 text), or a new-format
/// public-key session key (0xC1, never in UTF-8).
pub(super) fn looks_binary(head: &[u8]) -> bool {
    let Some(&b) = head.first() else {
        return false;
    };
    if b & 0xC0 == 0x80 {
        let tag = (b >> 2) & 0x0F;
        return matches!(tag, 1 | 3 | 4 | 8) && head.len() > 2;
    }
    b == 0xC1
}

fn reject(kind: Kind, why: String) -> Reject {
    Reject::new(kind, Stage::Decode, why)
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Reject {
    reject(Kind::PgpCorrupt, format!("{what}: {e}"))
}

/// The plaintext of an OpenPGP file, written out and hashed (its name is the caller's).
pub(super) fn decrypt(
    file: &File,
    u: &Unpack,
    spill: &mut Spiller,
    facts: &mut Facts,
    progress: &dyn Fn(u64) -> bool,
) -> Result<Member, Reject> {
    let input = BufReader::with_capacity(256 << 10, file);
    let (mut msg, _) =
        Message::from_reader(input).map_err(|e| corrupt("not a readable OpenPGP message", e))?;
    if msg.is_encrypted() {
        let Some(at) = &u.pgp_secret_key else {
            return Err(reject(
                Kind::PgpNoKey,
                "the file is encrypted, but no pgp_secret_key is configured for it".into(),
            ));
        };
        let key = secret_key(at)?;
        let pw = passphrase(u)?;
        unlocked(&key, &pw, u, at)?;
        // Streaming: the plaintext is only written out here, never parsed before the whole
        // message was read and its integrity check (at the end) passed — so rpgp need not hold
        // the ciphertext in memory to check it first (its default, up to 1 GiB).
        let ring = TheRing {
            secret_keys: vec![&key],
            key_passwords: vec![&pw],
            decrypt_options: DecryptionOptions::new()
                .set_seipdv1_read_mode(pgp::types::Seipdv1ReadMode::Streaming),
            ..Default::default()
        };
        msg = msg
            .decrypt_the_ring(ring, true)
            .map(|(m, _)| m)
            .map_err(|e| match e {
                pgp::errors::Error::MissingKey => reject(
                    Kind::PgpNoKey,
                    format!(
                        "the file is encrypted to another key than pgp_secret_key ({})",
                        fingerprint_of(&key.to_public_key())
                    ),
                ),
                e => corrupt("decrypting it failed", e),
            })?;
    }
    while msg.is_compressed() {
        msg = msg
            .decompress()
            .map_err(|e| corrupt("its compressed data cannot be read", e))?;
    }
    let plain = match spill.spill_telling("the decrypted content", &mut msg, progress) {
        Ok(m) => m,
        Err(SpillError::Bounds(r)) => return Err(r),
        Err(SpillError::Read(e)) => {
            return Err(corrupt(
                "the message is cut short, or fails its integrity check (MDC/AEAD)",
                e,
            ))
        }
        Err(SpillError::Write(e)) => return Err(super::io_reject("cannot write it out", e)),
    };
    if let Some(at) = &u.pgp_verify_key {
        let key = public_key(at)?;
        if !msg.is_signed() {
            let _ = std::fs::remove_file(&plain.spill);
            return Err(reject(
                Kind::PgpUnsigned,
                format!(
                    "the file is not signed; a signature by {} (pgp_verify_key) is required",
                    fingerprint_of(&key)
                ),
            ));
        }
        let valid =
            msg.verify(&key).is_ok() || key.public_subkeys.iter().any(|s| msg.verify(s).is_ok());
        if !valid {
            let _ = std::fs::remove_file(&plain.spill);
            return Err(reject(
                Kind::PgpBadSignature,
                format!(
                    "its signature does not verify with {} (pgp_verify_key): made by another \
                     key, or the content was changed",
                    fingerprint_of(&key)
                ),
            ));
        }
        facts.signer = Some(fingerprint_of(&key));
    }
    Ok(plain)
}

/// Whether the configured keys can be used: the secret key read and unlocked with its
/// passphrase, the verify key read (for `config check`, before any file depends on them).
pub(super) fn check_keys(u: &Unpack) -> Result<(), Reject> {
    if let Some(at) = &u.pgp_secret_key {
        let key = secret_key(at)?;
        let pw = passphrase(u)?;
        unlocked(&key, &pw, u, at)?;
    }
    if let Some(at) = &u.pgp_verify_key {
        public_key(at)?;
    }
    Ok(())
}

fn fingerprint_of(key: &SignedPublicKey) -> String {
    format!("{:X}", key.primary_key.fingerprint())
}

/// A key from a file (armored or binary): `what` names the setting, `is` what it must be.
fn read_key<K: Deserializable>(at: &Path, what: &str, is: &str) -> Result<K, Reject> {
    let f = File::open(at).map_err(|e| {
        reject(
            Kind::PgpNoKey,
            format!("cannot read {what} {}: {e}", at.display()),
        )
    })?;
    K::from_reader_single(BufReader::new(f))
        .map(|(k, _)| k)
        .map_err(|e| {
            reject(
                Kind::PgpNoKey,
                format!("{what} {} is not {is}: {e}", at.display()),
            )
        })
}

fn secret_key(at: &Path) -> Result<SignedSecretKey, Reject> {
    read_key(at, "pgp_secret_key", "a secret key")
}

fn public_key(at: &Path) -> Result<SignedPublicKey, Reject> {
    read_key(at, "pgp_verify_key", "a public key")
}

/// The secret key's passphrase, from the environment variable `pgp_passphrase_env` names.
fn passphrase(u: &Unpack) -> Result<Password, Reject> {
    match &u.pgp_passphrase_env {
        Some(var) => match std::env::var(var) {
            Ok(v) => Ok(Password::from(v)),
            Err(_) => Err(reject(
                Kind::PgpNoKey,
                format!("pgp_passphrase_env names {var}, which is not set"),
            )),
        },
        None => Ok(Password::empty()),
    }
}

/// Checks that the passphrase unlocks the key (rpgp would otherwise say "another key").
fn unlocked(key: &SignedSecretKey, pw: &Password, u: &Unpack, at: &Path) -> Result<(), Reject> {
    if matches!(key.primary_key.unlock(pw, |_, _| Ok(())), Ok(Ok(()))) {
        return Ok(());
    }
    let from = match &u.pgp_passphrase_env {
        Some(var) => format!("the passphrase in {var}"),
        None => "no passphrase (set pgp_passphrase_env)".to_string(),
    };
    Err(reject(
        Kind::PgpNoKey,
        format!(
            "pgp_secret_key {} cannot be unlocked with {from}",
            at.display()
        ),
    ))
}

//! `[notify]`: the receipt of every finished file POSTed to a URL, signed.
//!
//! Headers: `Content-Type: application/json`; `Idempotency-Key: <dataset>:<sha256>:<ledger
//! id>` — the same on every retry of one notice, another for each finished file (a duplicate
//! re-sent, or a retried file's new outcome after a rejection, is an event of its own, which a
//! receiver deduplicating on dataset and SHA-256 alone would drop); `X-Ferry-Content-Key:
//! <dataset>:<sha256>`, the content's identity, for receivers that want one notice per content;
//! `X-Ferry-Signature: sha256=<hex>`, the HMAC-SHA256 of the body with the key in `secret_env`. Any 2xx is
//! delivered; anything else, or no answer within the timeout, is retried with back-off.

use crate::config::Notify;
use crate::store::FileRow;
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

pub struct Webhook {
    agent: ureq::Agent,
    url: String,
    secret: Option<Vec<u8>>,
}

impl Webhook {
    pub fn new(n: &Notify) -> Result<Webhook> {
        let secret = match &n.secret_env {
            Some(var) => Some(
                std::env::var(var)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .with_context(|| {
                        format!("notify: the secret's environment variable {var} is not set")
                    })?
                    .into_bytes(),
            ),
            None => None,
        };
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A redirect is an answer to fix in the config, not a place to send the signed body.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_global(Some(n.timeout));
        if let Some(ca) = &n.ca_file {
            config = config.tls_config(crate::remote::tls_roots(ca)?);
        }
        Ok(Webhook {
            agent: ureq::Agent::new_with_config(config.build()),
            url: n.url.clone(),
            secret,
        })
    }

    /// POSTs `body` (the receipt of `row`); Ok when the receiver answered 2xx.
    pub fn post(&self, row: &FileRow, body: &[u8]) -> Result<()> {
        let content = format!(
            "{}:{}",
            row.dataset.as_deref().unwrap_or(""),
            row.sha256.as_deref().unwrap_or("")
        );
        let mut req = ureq::http::Request::builder()
            .method("POST")
            .uri(&self.url)
            .header("content-type", "application/json")
            .header("idempotency-key", format!("{content}:{}", row.id))
            .header("x-ferry-content-key", content);
        if let Some(secret) = &self.secret {
            req = req.header(
                "x-ferry-signature",
                format!("sha256={}", hex(&hmac_sha256(secret, body))),
            );
        }
        let req = req.body(body.to_vec()).context("building the request")?;
        let resp = self
            .agent
            .run(req)
            .map_err(|e| anyhow!("POST {}: {e}", self.url))?;
        let status = resp.status();
        if !status.is_success() {
            bail!("POST {}: the receiver answered {status}", self.url);
        }
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let (mut ipad, mut opad) = ([0x36u8; 64], [0x5cu8; 64]);
    for i in 0..64 {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test cases 2 and 6 (a key longer than the block).
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}

//! S3-compatible buckets (AWS S3, MinIO, SeaweedFS, Ceph …): requests signed with AWS
//! Signature V4 by `rusty-s3` (no I/O of its own) and sent by `ureq`, blocking, which fits
//! ferry's threads. TLS is verified against the public roots, or only a private CA's
//! certificates when `ca_file` names them. Listings are paginated (1,000 keys a page); an
//! object's version is its ETag.

use super::{Place, Refused, RemoteFile};
use crate::config::{S3Spec, SourceSpec};
use anyhow::{anyhow, bail, Context, Result};
use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2, ListObjectsV2Response};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::Duration;
use ureq::http::{Response, StatusCode};
use ureq::Body;

/// How long a signed request stays valid (it is sent at once).
const SIGNED_FOR: Duration = Duration::from_secs(600);
/// Files up to this size are written with one `PUT`, larger ones in parts of this size (S3
/// takes parts of 5 MiB to 5 GiB, at most 10,000 of them).
const PART: u64 = 16 << 20;

pub struct S3Place {
    agent: ureq::Agent,
    bucket: Bucket,
    credentials: Credentials,
    /// The keys' common prefix: empty, or ending in `/`.
    prefix: String,
    depth: usize,
    /// For messages: `s3://bucket/prefix`.
    shown: String,
}

impl S3Place {
    pub fn connect(spec: &SourceSpec) -> Result<S3Place> {
        let s3 = spec
            .s3
            .as_ref()
            .ok_or_else(|| anyhow!("not an S3 source"))?;
        let credentials = credentials(s3)?;
        let style = if s3.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let endpoint = s3
            .endpoint
            .parse()
            .map_err(|e| Refused(format!("endpoint {}: {e}", s3.endpoint)))?;
        let bucket = Bucket::new(endpoint, style, spec.host.clone(), s3.region.clone())
            .map_err(|e| Refused(format!("bucket {} at {}: {e}", spec.host, s3.endpoint)))?;
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A signed request is for one host: a redirect (another region, a proxy) is an
            // answer to report, never a place to send the request or its body again.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_connect(Some(spec.timeout))
            .timeout_recv_response(Some(spec.timeout))
            .timeout_per_read(Some(spec.timeout))
            .timeout_per_write(Some(spec.timeout))
            .max_idle_connections_per_host(2);
        if let Some(ca) = &spec.ca_file {
            config = config.tls_config(super::tls::ureq_roots(ca)?);
        }
        // `s3://bucket/in/` and `s3://bucket/in` are the same prefix (never `in//`).
        let prefix = spec.path.trim_matches('/').to_string();
        let prefix = if prefix.is_empty() {
            prefix
        } else {
            format!("{prefix}/")
        };
        Ok(S3Place {
            agent: ureq::Agent::new_with_config(config.build()),
            bucket,
            credentials,
            shown: spec.url.clone(),
            prefix,
            depth: spec.depth,
        })
    }

    fn key(&self, path: &str) -> String {
        match path.strip_prefix('/') {
            // An absolute `after = "move:/…"` names a key from the bucket's root.
            Some(abs) => abs.to_string(),
            None => format!("{}{path}", self.prefix),
        }
    }

    /// Sends a signed request; the response whatever its status.
    fn send(&self, method: &str, url: &str, headers: &[(&str, &str)]) -> Result<Response<Body>> {
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.run(method, req.body(()).context("building a request")?)
    }

    /// Sends a signed request with a body; the response whatever its status.
    fn send_body(&self, method: &str, url: &str, body: Vec<u8>) -> Result<Response<Body>> {
        let req = ureq::http::Request::builder().method(method).uri(url);
        self.run(method, req.body(body).context("building a request")?)
    }

    fn run(
        &self,
        method: &str,
        req: ureq::http::Request<impl ureq::AsSendBody>,
    ) -> Result<Response<Body>> {
        self.agent.run(req).map_err(|e| {
            let why = format!("{} {method}: {e}", self.shown);
            if super::tls::refused(&e) {
                Refused(why).into()
            } else {
                anyhow!(why)
            }
        })
    }

    /// The parts of a multipart upload (`len` bytes of `file`), `PART` bytes each (the last
    /// one less), then the completion.
    fn put_parts(
        &self,
        path: &str,
        key: &str,
        id: &str,
        file: &mut std::fs::File,
        len: u64,
    ) -> Result<()> {
        let parts = len.div_ceil(PART);
        if parts > 10_000 {
            bail!("{path} is too large for an upload of 10,000 parts of {PART} bytes");
        }
        let mut etags = Vec::with_capacity(parts as usize);
        for number in 1..=parts as u16 {
            let want = PART.min(len - (number as u64 - 1) * PART);
            let mut part = Vec::with_capacity(want as usize);
            (&mut *file).take(want).read_to_end(&mut part)?;
            if part.len() as u64 != want {
                bail!("{path} got shorter while it was uploaded");
            }
            let action = self
                .bucket
                .upload_part(Some(&self.credentials), key, number, id);
            let resp = self.send_body("PUT", action.sign(SIGNED_FOR).as_str(), part)?;
            let status = resp.status();
            let tag = header(&resp, "etag").map(str::to_string);
            if !status.is_success() {
                let text = read_text(resp).unwrap_or_default();
                bail!(
                    "writing part {number} of {path}: {}",
                    error_text(status, &text)
                );
            }
            etags.push(tag.with_context(|| format!("part {number} of {path}: no ETag"))?);
        }
        let action = self.bucket.complete_multipart_upload(
            Some(&self.credentials),
            key,
            id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNED_FOR);
        let resp = self.send_body("POST", url.as_str(), action.body().into_bytes())?;
        let status = resp.status();
        let text = read_text(resp)?;
        // Like a copy, a completion can fail after its 200: the error is then in the body.
        if !status.is_success() || text.contains("<Error>") {
            bail!(
                "completing the upload of {path}: {}",
                error_text(status, &text)
            );
        }
        Ok(())
    }

    fn list_page(&self, token: Option<&str>) -> Result<ListObjectsV2Response> {
        self.list_keys(token, 1000)
    }

    /// One page of at most `max` keys under the prefix (403, 404, 400: `Refused`).
    fn list_keys(&self, token: Option<&str>, max: u16) -> Result<ListObjectsV2Response> {
        let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
        if !self.prefix.is_empty() {
            action.with_prefix(self.prefix.as_str());
        }
        if let Some(t) = token {
            action.with_continuation_token(t);
        }
        action.with_max_keys(max as usize);
        let resp = self.send("GET", action.sign(SIGNED_FOR).as_str(), &[])?;
        let status = resp.status();
        let text = read_text(resp)?;
        if !status.is_success() {
            let why = error_text(status, &text);
            // Credentials, permission or a bucket that is not there: listing again cannot help.
            if matches!(status.as_u16(), 301 | 400 | 403 | 404) {
                return Err(Refused(format!("listing {}: {why}", self.shown)).into());
            }
            bail!("listing {}: {why}", self.shown);
        }
        ListObjectsV2::parse_response(&text).map_err(|e| {
            anyhow!(
                "listing {}: an answer that is not a listing: {e}",
                self.shown
            )
        })
    }
}

fn credentials(s3: &S3Spec) -> Result<Credentials> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(key), Some(secret)) = (var(&s3.access_key_env), var(&s3.secret_key_env)) else {
        return Err(Refused(format!(
            "no credentials: set {} and {} in ferry's environment",
            s3.access_key_env, s3.secret_key_env
        ))
        .into());
    };
    Ok(match var(&s3.session_token_env) {
        Some(token) => Credentials::new_with_token(key, secret, token),
        None => Credentials::new(key, secret),
    })
}

fn read_text(resp: Response<Body>) -> Result<String> {
    let mut body = resp.into_body();
    body.with_config()
        .limit(64 << 20)
        .read_to_string()
        .context("reading the answer")
}

/// The server's own reason (`<Code>` and `<Message>` of an S3 error) with the HTTP status.
fn error_text(status: StatusCode, body: &str) -> String {
    let tag = |t: &str| {
        let open = format!("<{t}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find("</")? + start;
        Some(body[start..end].to_string())
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!("{status}: {c}: {m}"),
        (Some(c), None) => format!("{status}: {c}"),
        _ => status.to_string(),
    }
}

/// An ETag without its quotes (the listing and HEAD quote it; some servers do not).
fn etag(s: &str) -> String {
    s.trim().trim_matches('"').to_string()
}

/// Seconds since the epoch of an ISO 8601 (listing) or HTTP (HEAD) date; fractions dropped so
/// both agree.
fn seconds(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .or_else(|_| chrono::DateTime::parse_from_rfc2822(s))
        .ok()
        .map(|t| t.timestamp())
}

fn header<'a>(resp: &'a Response<Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// `/`-separated key bytes percent-encoded for `x-amz-copy-source`.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Place for S3Place {
    fn list(
        &mut self,
        out: &mut Vec<RemoteFile>,
        problems: &mut Vec<(String, String)>,
    ) -> Result<()> {
        let mut token: Option<String> = None;
        let mut too_deep = BTreeSet::new();
        loop {
            let page = self.list_page(token.as_deref())?;
            for o in page.contents {
                let Some(rel) = o.key.strip_prefix(self.prefix.as_str()) else {
                    continue;
                };
                let Some(size) = o.size else {
                    problems.push((rel.to_string(), "listed without a size".into()));
                    continue;
                };
                if rel.ends_with('/') && size == 0 {
                    // A folder placeholder (consoles make them): not a file.
                    continue;
                }
                let parts: Vec<&str> = rel.split('/').collect();
                if parts.len() > self.depth + 1 {
                    too_deep.insert(parts[..=self.depth].join("/"));
                    continue;
                }
                let (Some(tag), Some(mtime)) = (
                    o.etag.as_deref().map(etag),
                    o.last_modified.as_deref().and_then(seconds),
                ) else {
                    problems.push((rel.to_string(), "listed without an ETag or a date".into()));
                    continue;
                };
                out.push(RemoteFile {
                    path: rel.to_string(),
                    size,
                    mtime,
                    version: tag,
                    granularity: 0,
                });
            }
            match page.next_continuation_token {
                // A server that hands back the token it was given would be listed forever.
                Some(t) if token.as_deref() == Some(t.as_str()) => {
                    bail!(
                        "listing {}: the server repeated its continuation token",
                        self.shown
                    )
                }
                Some(t) => token = Some(t),
                None => break,
            }
        }
        for d in too_deep {
            problems.push((d, format!("deeper than depth = {}", self.depth)));
        }
        Ok(())
    }

    fn stat(&mut self, path: &str) -> Result<Option<RemoteFile>> {
        let key = self.key(path);
        let action = self.bucket.head_object(Some(&self.credentials), &key);
        let resp = self.send("HEAD", action.sign(SIGNED_FOR).as_str(), &[])?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            bail!("looking at {path}: {status}");
        }
        let size = header(&resp, "content-length").and_then(|v| v.parse().ok());
        let tag = header(&resp, "etag").map(etag);
        let mtime = header(&resp, "last-modified").and_then(seconds);
        match (size, tag, mtime) {
            (Some(size), Some(version), Some(mtime)) => Ok(Some(RemoteFile {
                path: path.to_string(),
                size,
                mtime,
                version,
                granularity: 0,
            })),
            _ => bail!("looking at {path}: no size, ETag or date in the answer"),
        }
    }

    fn read(&mut self, path: &str, into: &mut dyn Write, limit: u64) -> Result<u64> {
        let key = self.key(path);
        let action = self.bucket.get_object(Some(&self.credentials), &key);
        let resp = self.send("GET", action.sign(SIGNED_FOR).as_str(), &[])?;
        let status = resp.status();
        if !status.is_success() {
            let text = read_text(resp).unwrap_or_default();
            bail!("reading {path}: {}", error_text(status, &text));
        }
        let mut body = resp.into_body().into_reader();
        super::copy_upto(&mut body, into, limit, 256 << 10, path)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        // S3 has no rename: a server-side copy, then the original deleted.
        let (source, target) = (self.key(from), self.key(to));
        let copy_from = format!("/{}/{}", self.bucket.name(), encode_key(&source));
        let mut action = self.bucket.put_object(Some(&self.credentials), &target);
        action
            .headers_mut()
            .insert("x-amz-copy-source", copy_from.clone());
        let resp = self.send(
            "PUT",
            action.sign(SIGNED_FOR).as_str(),
            &[("x-amz-copy-source", &copy_from)],
        )?;
        let status = resp.status();
        let text = read_text(resp)?;
        // A copy can fail after its 200 has been sent: the error is then in the body.
        if !status.is_success() || text.contains("<Error>") {
            bail!("copying {from} to {to}: {}", error_text(status, &text));
        }
        self.remove(from)
    }

    fn put(&mut self, path: &str, from: &std::path::Path) -> Result<()> {
        let key = self.key(path);
        let mut file =
            std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
        let len = file.metadata()?.len();
        if len <= PART {
            let mut body = Vec::with_capacity(len as usize);
            file.read_to_end(&mut body)?;
            let action = self.bucket.put_object(Some(&self.credentials), &key);
            let resp = self.send_body("PUT", action.sign(SIGNED_FOR).as_str(), body)?;
            let status = resp.status();
            if !status.is_success() {
                let text = read_text(resp).unwrap_or_default();
                bail!("writing {path}: {}", error_text(status, &text));
            }
            return Ok(());
        }
        // Larger: a multipart upload, which the object appears with only once completed.
        let action = self
            .bucket
            .create_multipart_upload(Some(&self.credentials), &key);
        let resp = self.send("POST", action.sign(SIGNED_FOR).as_str(), &[])?;
        let status = resp.status();
        let text = read_text(resp)?;
        if !status.is_success() {
            bail!(
                "starting the upload of {path}: {}",
                error_text(status, &text)
            );
        }
        let upload = CreateMultipartUpload::parse_response(&text).map_err(|e| {
            anyhow!("starting the upload of {path}: an answer ferry cannot read: {e}")
        })?;
        let id = upload.upload_id().to_string();
        let sent = self.put_parts(path, &key, &id, &mut file, len);
        if sent.is_err() {
            // The parts uploaded so far are dropped (else kept, and billed, until a lifecycle
            // rule removes them).
            let abort = self
                .bucket
                .abort_multipart_upload(Some(&self.credentials), &key, &id);
            let _ = self.send("DELETE", abort.sign(SIGNED_FOR).as_str(), &[]);
        }
        sent
    }

    fn replace(&mut self, from: &str, to: &str) -> Result<()> {
        // A copy over the target (S3 replaces objects whole), then the source deleted.
        self.rename(from, to)
    }

    fn puts_whole(&self) -> bool {
        true
    }

    fn check(&mut self) -> Result<()> {
        // One key listed: the credentials, the bucket and the permission to list, without
        // reading a prefix that grows with every batch.
        self.list_keys(None, 1).map(|_| ())
    }

    fn remove(&mut self, path: &str) -> Result<()> {
        let key = self.key(path);
        let action = self.bucket.delete_object(Some(&self.credentials), &key);
        let resp = self.send("DELETE", action.sign(SIGNED_FOR).as_str(), &[])?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        let text = read_text(resp).unwrap_or_default();
        bail!("deleting {path}: {}", error_text(status, &text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_and_head_dates_agree() {
        assert_eq!(
            seconds("2026-12-07T18:08:10.123Z"),
            seconds("Mon, 07 Dec 2026 18:08:10 GMT")
        );
        assert_eq!(etag("\"b1946ac9\""), "b1946ac9");
        assert_eq!(encode_key("a b/c+d%.csv"), "a%20b/c%2Bd%25.csv");
        let e = error_text(
            StatusCode::FORBIDDEN,
            "<Error><Code>AccessDenied</Code><Message>Access Denied.</Message></Error>",
        );
        assert_eq!(e, "403 Forbidden: AccessDenied: Access Denied.");
    }
}

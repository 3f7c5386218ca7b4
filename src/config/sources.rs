//! `[[source]]`: remote places ferry pulls files from (R-remote). Resolved here into
//! `SourceSpec`: the URL split and checked, where its files land under `incoming/`, readiness
//! and disposal settings, and where each secret comes from — the environment or a file, never
//! the TOML itself.

use super::values::{Dur, Pattern};
use crate::exit::ExitError;
use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The protocols a source may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Sftp,
    /// FTP, in the clear.
    Ftp,
    /// FTP with explicit TLS (`AUTH TLS` on the control connection, protected data connections).
    Ftps,
    /// An S3-compatible bucket: `host` is the bucket, `path` the key prefix.
    S3,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Sftp => "sftp",
            Scheme::Ftp => "ftp",
            Scheme::Ftps => "ftps",
            Scheme::S3 => "s3",
        }
    }
}

/// What happens to a remote file once its file committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// Left where it is (the default): its claim in the store keeps it from loading again.
    Keep,
    Delete,
    /// Moved into this folder on the remote (its subfolders kept below it).
    Move(String),
}

/// A remote source, resolved.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: String,
    pub scheme: Scheme,
    /// The URL without secrets, for messages and the ledger.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The remote folder (or prefix) files are listed under.
    pub path: String,
    /// The folder under `incoming/` whose dataset rules judge its files.
    pub into: String,
    pub matcher: Option<GlobMatcher>,
    pub pattern: Option<String>,
    pub after: After,
    pub poll: Duration,
    /// Parallel downloads.
    pub connections: usize,
    /// How long size and modification time must stay unchanged between listings.
    pub settle: Option<Duration>,
    /// How deep folders below `path` are walked.
    pub depth: usize,
    pub timeout: Duration,
    /// SFTP: a private key file, its passphrase's environment variable, a password's.
    pub identity_file: Option<PathBuf>,
    pub identity_passphrase_env: Option<String>,
    pub password_env: Option<String>,
    /// SFTP: an OpenSSH known_hosts file, or the host key's `SHA256:` fingerprint.
    pub known_hosts: Option<PathBuf>,
    pub host_key: Option<String>,
    /// FTPS and https S3 endpoints: certificates of a private CA trusted instead of the public
    /// roots.
    pub ca_file: Option<PathBuf>,
    pub s3: Option<S3Spec>,
    /// An export target (`[[target]]`, `--to URL`): files are written there, not pulled.
    pub target: bool,
    /// Where a receipt for each file pulled from here goes (`receipts`).
    pub receipts: Option<super::Receipts>,
    /// How archives and OpenPGP files pulled from here are opened (`[unpack]`'s keys: a
    /// partner's verify key, say), over the dataset's and `[unpack]`'s settings.
    pub(super) unpack: Option<super::unpack::RawUnpack>,
}

/// How an S3 source reaches its bucket.
#[derive(Debug, Clone)]
pub struct S3Spec {
    /// `http(s)://host[:port]`: the service (AWS's regional endpoint when not set).
    pub endpoint: String,
    pub region: String,
    /// `endpoint/bucket/key` rather than `bucket.endpoint/key`.
    pub path_style: bool,
    /// Environment variables the credentials are read from.
    pub access_key_env: String,
    pub secret_key_env: String,
    pub session_token_env: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    name: String,
    url: String,
    into: Option<String>,
    #[serde(rename = "match")]
    pattern: Option<Pattern>,
    after: Option<String>,
    poll: Option<Dur>,
    connections: Option<usize>,
    settle: Option<Dur>,
    depth: Option<usize>,
    timeout: Option<Dur>,
    identity_file: Option<PathBuf>,
    identity_passphrase_env: Option<String>,
    password_env: Option<String>,
    known_hosts: Option<PathBuf>,
    host_key: Option<String>,
    ca_file: Option<PathBuf>,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    access_key_env: Option<String>,
    secret_key_env: Option<String>,
    session_token_env: Option<String>,
    receipts: Option<String>,
    receipt_rejects: Option<String>,
    pgp_secret_key: Option<PathBuf>,
    pgp_passphrase_env: Option<String>,
    pgp_verify_key: Option<PathBuf>,
    archive_members: Option<String>,
    // Secrets written into the file are refused with the reason (never read).
    pgp_passphrase: Option<toml::Value>,
    password: Option<toml::Value>,
    identity_passphrase: Option<toml::Value>,
    passphrase: Option<toml::Value>,
    secret_key: Option<toml::Value>,
    access_key: Option<toml::Value>,
}

/// Resolves every `[[target]]` (a remote place `ferry export` writes batches to): the URL and
/// connection settings of a source, checked by the same rules; a source's pulling settings are
/// refused. Names are unique (case-insensitive).
pub(super) fn resolve_targets(raw: &[RawSource], show: &str) -> Result<Vec<SourceSpec>, ExitError> {
    let mut out: Vec<SourceSpec> = Vec::new();
    for r in raw {
        let bad = |why: String| ExitError::Usage(format!("{show}: target {:?}: {why}", r.name));
        let spec = r.as_target().map_err(bad)?;
        if out.iter().any(|o| o.name.eq_ignore_ascii_case(&spec.name)) {
            return Err(bad(format!(
                "a target named {:?} is already defined",
                spec.name
            )));
        }
        out.push(spec);
    }
    Ok(out)
}

/// A remote place named by its URL alone (`ferry export --to s3://…`): a source's defaults
/// (S3 credentials from the environment, anonymous FTP, the user's known_hosts); other
/// settings need a `[[target]]`. `None` when `url` is not a remote URL.
pub fn remote_url(url: &str) -> Option<Result<SourceSpec, String>> {
    let remote = ["sftp://", "ftp://", "ftps://", "s3://"]
        .iter()
        .any(|s| url.len() > s.len() && url[..s.len()].eq_ignore_ascii_case(s));
    if !remote {
        return None;
    }
    let mut table = toml::Table::new();
    table.insert("name".into(), "url".into());
    table.insert("url".into(), url.into());
    let raw = RawSource::deserialize(table).map_err(|e| e.to_string());
    Some(raw.and_then(|r| r.as_target()).map_err(|why| {
        format!(
            "{}: {why} (a [[target]] in ferry.toml holds the settings a URL cannot: a key, a \
             password, an endpoint, a CA)",
            redacted(url)
        )
    }))
}

/// The URL as ferry shows it (the form a resolved source's or target's `url` has), if it is a
/// remote URL ferry can read: to find the `[[target]]` a URL names before resolving it alone.
pub fn shown_url(url: &str) -> Option<String> {
    Url::parse(url).ok().map(|u| u.shown())
}

/// `url` as a place on `source`'s own server (the same scheme, host, port and user; for S3
/// the same endpoint, any bucket): the source's settings — login, host key, TLS, credentials
/// — with the URL's folder, as an upload target (a source's receipts written back to the
/// partner's server). `None` for any other URL.
pub fn same_server(source: &SourceSpec, url: &str) -> Option<SourceSpec> {
    let u = Url::parse(url).ok()?;
    let same = u.scheme == source.scheme
        && (u.scheme == Scheme::S3
            || (u.host.eq_ignore_ascii_case(&source.host)
                && u.port == source.port
                && u.user == source.user));
    if !same {
        return None;
    }
    let mut spec = source.clone();
    spec.name = format!("{}-receipts", source.name);
    spec.url = u.shown();
    spec.host = u.host;
    spec.path = u.path;
    spec.depth = 0;
    spec.target = true;
    spec.receipts = None;
    spec.unpack = None;
    Some(spec)
}

const MAX_CONNECTIONS: usize = 64;
const MAX_DEPTH: usize = 64;

/// Resolves every `[[source]]`; names are unique (case-insensitive). Two sources may land in
/// one folder: each download is claimed under a name of its own.
pub(super) fn resolve(raw: &[RawSource], show: &str) -> Result<Vec<SourceSpec>, ExitError> {
    let mut out: Vec<SourceSpec> = Vec::new();
    for r in raw {
        let bad = |why: String| ExitError::Usage(format!("{show}: source {:?}: {why}", r.name));
        let spec = r.resolve().map_err(bad)?;
        if let Some(other) = out.iter().find(|o| o.name.eq_ignore_ascii_case(&spec.name)) {
            return Err(bad(format!(
                "a source named {:?} is already defined",
                other.name
            )));
        }
        out.push(spec);
    }
    Ok(out)
}

impl RawSource {
    fn resolve(&self) -> Result<SourceSpec, String> {
        let name = self.name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err("a source's name is 1 to 64 letters, digits, '-' or '_'".into());
        }
        for (key, v) in [
            ("password", &self.password),
            ("identity_passphrase", &self.identity_passphrase),
            ("passphrase", &self.passphrase),
            ("secret_key", &self.secret_key),
            ("access_key", &self.access_key),
        ] {
            if v.is_some() {
                return Err(format!(
                    "{key}: secrets are never read from ferry.toml (it is copied, committed and \
                     shown); name an environment variable instead, e.g. {key}_env = \"ACME_{}\"",
                    key.to_uppercase()
                ));
            }
        }
        let url = Url::parse(&self.url)?;
        let into = self.into.clone().unwrap_or_else(|| name.to_string());
        let into = into.trim_matches('/').to_string();
        if into.is_empty()
            || into
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".." || c.starts_with('.'))
            || into.contains(['\\', '\0'])
        {
            return Err(format!(
                "into = {into:?}: a folder under incoming/ (no '..', no hidden or empty parts)"
            ));
        }
        let matcher = match &self.pattern {
            Some(p) => Some(
                Glob::new(&p.0)
                    .map_err(|e| format!("match: {e}"))?
                    .compile_matcher(),
            ),
            None => None,
        };
        let after = match self.after.as_deref().unwrap_or("keep") {
            "keep" => After::Keep,
            "delete" => After::Delete,
            m if m.starts_with("move:") => {
                let to = m["move:".len()..].trim_end_matches('/').to_string();
                if to.is_empty() || to.split('/').any(|c| c == "..") || to.contains('\0') {
                    return Err(format!("after = {m:?}: move:<remote folder>, without '..'"));
                }
                After::Move(to)
            }
            other => {
                return Err(format!(
                    "after = {other:?}: one of \"keep\", \"delete\", \"move:<remote folder>\""
                ))
            }
        };
        let poll = self.poll.map_or(Duration::from_secs(30), |d| d.0);
        if poll < Duration::from_millis(100) || poll > Duration::from_secs(86_400) {
            return Err(format!("poll = {poll:?}: between 100ms and 1d"));
        }
        let connections = self.connections.unwrap_or(4);
        if connections == 0 || connections > MAX_CONNECTIONS {
            return Err(format!(
                "connections = {connections}: between 1 and {MAX_CONNECTIONS}"
            ));
        }
        let depth = self.depth.unwrap_or(16);
        if depth > MAX_DEPTH {
            return Err(format!("depth = {depth}: at most {MAX_DEPTH}"));
        }
        let timeout = self.timeout.map_or(Duration::from_secs(30), |d| d.0);
        if timeout < Duration::from_secs(1) {
            return Err(format!("timeout = {timeout:?}: at least 1s"));
        }
        for (key, v) in [
            ("identity_passphrase_env", &self.identity_passphrase_env),
            ("password_env", &self.password_env),
            ("access_key_env", &self.access_key_env),
            ("secret_key_env", &self.secret_key_env),
            ("session_token_env", &self.session_token_env),
        ] {
            if v.as_deref().is_some_and(|v| {
                v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            }) {
                return Err(format!("{key}: the name of an environment variable"));
            }
        }
        self.only_for(url.scheme)?;
        if url.scheme == Scheme::Sftp && self.identity_file.is_none() && self.password_env.is_none()
        {
            return Err(
                "an SFTP source logs in with identity_file (a private key) or password_env".into(),
            );
        }
        if matches!(url.scheme, Scheme::Ftp | Scheme::Ftps)
            && url.user != "anonymous"
            && self.password_env.is_none()
        {
            return Err(format!(
                "{}://{}@… logs in with password_env (without a user in the URL, the login is \
                 anonymous)",
                url.scheme.name(),
                url.user
            ));
        }
        let s3 = match url.scheme {
            Scheme::S3 => Some(self.s3()?),
            _ => None,
        };
        if let Some(k) = &self.host_key {
            if !k.starts_with("SHA256:") || k.len() < 20 {
                return Err(format!(
                    "host_key = {k:?}: the key's fingerprint as `ssh-keygen -lf` prints it \
                     (SHA256:…)"
                ));
            }
        }
        let known_hosts = match (&self.known_hosts, &self.host_key) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(_)) => None,
            // As OpenSSH does: the user's own known_hosts, with strict checking.
            (None, None) if url.scheme == Scheme::Sftp => {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ssh/known_hosts"))
            }
            (None, None) => None,
        };
        let settle = self.settle.map(|d| d.0);
        Ok(SourceSpec {
            name: name.to_string(),
            scheme: url.scheme,
            url: url.shown(),
            host: url.host,
            port: url.port,
            user: url.user,
            path: url.path,
            into,
            matcher,
            pattern: self.pattern.as_ref().map(|p| p.0.clone()),
            after,
            poll,
            connections,
            settle,
            depth,
            timeout,
            identity_file: self.identity_file.clone(),
            identity_passphrase_env: self.identity_passphrase_env.clone(),
            password_env: self.password_env.clone(),
            known_hosts,
            host_key: self.host_key.clone(),
            ca_file: self.ca_file.clone(),
            s3,
            target: false,
            receipts: super::load::receipts(
                self.receipts.as_deref(),
                self.receipt_rejects.as_deref(),
            )?,
            unpack: self.unpack()?,
        })
    }

    /// The source's own container settings, checked now (applied over others when used).
    fn unpack(&self) -> Result<Option<super::unpack::RawUnpack>, String> {
        let raw = super::unpack::RawUnpack {
            archive_members: self.archive_members.clone(),
            pgp_secret_key: self.pgp_secret_key.clone(),
            pgp_passphrase_env: self.pgp_passphrase_env.clone(),
            pgp_verify_key: self.pgp_verify_key.clone(),
            pgp_passphrase: self.pgp_passphrase.clone(),
            ..Default::default()
        };
        if !raw.any() {
            return Ok(None);
        }
        raw.apply(&super::Unpack::default())?;
        Ok(Some(raw))
    }

    /// As an export target: no pulling settings; folders below the target are not walked.
    fn as_target(&self) -> Result<SourceSpec, String> {
        for (key, given) in [
            ("into", self.into.is_some()),
            ("match", self.pattern.is_some()),
            ("after", self.after.is_some()),
            ("poll", self.poll.is_some()),
            ("connections", self.connections.is_some()),
            ("settle", self.settle.is_some()),
            ("depth", self.depth.is_some()),
            ("receipts", self.receipts.is_some()),
            ("receipt_rejects", self.receipt_rejects.is_some()),
            ("pgp_secret_key", self.pgp_secret_key.is_some()),
            ("pgp_passphrase_env", self.pgp_passphrase_env.is_some()),
            ("pgp_verify_key", self.pgp_verify_key.is_some()),
            ("archive_members", self.archive_members.is_some()),
        ] {
            if given {
                return Err(format!(
                    "{key} is a setting of sources (pulling files), not of targets"
                ));
            }
        }
        let mut spec = self
            .resolve()
            .map_err(|why| why.replace("source", "target"))?;
        spec.depth = 0;
        spec.target = true;
        Ok(spec)
    }

    /// Settings of one protocol given to a source of another are refused, not ignored.
    fn only_for(&self, scheme: Scheme) -> Result<(), String> {
        use Scheme::*;
        let set: [(&str, bool, &[Scheme]); 12] = [
            ("identity_file", self.identity_file.is_some(), &[Sftp]),
            (
                "identity_passphrase_env",
                self.identity_passphrase_env.is_some(),
                &[Sftp],
            ),
            ("known_hosts", self.known_hosts.is_some(), &[Sftp]),
            ("host_key", self.host_key.is_some(), &[Sftp]),
            (
                "password_env",
                self.password_env.is_some(),
                &[Sftp, Ftp, Ftps],
            ),
            ("ca_file", self.ca_file.is_some(), &[Ftps, S3]),
            ("endpoint", self.endpoint.is_some(), &[S3]),
            ("region", self.region.is_some(), &[S3]),
            ("path_style", self.path_style.is_some(), &[S3]),
            ("access_key_env", self.access_key_env.is_some(), &[S3]),
            ("secret_key_env", self.secret_key_env.is_some(), &[S3]),
            ("session_token_env", self.session_token_env.is_some(), &[S3]),
        ];
        for (key, given, schemes) in set {
            if given && !schemes.contains(&scheme) {
                let names: Vec<String> =
                    schemes.iter().map(|s| format!("{}://", s.name())).collect();
                return Err(format!(
                    "{key} is a setting of {} sources, not of {}:// ones",
                    names.join(" and "),
                    scheme.name()
                ));
            }
        }
        Ok(())
    }

    fn s3(&self) -> Result<S3Spec, String> {
        let region = match &self.region {
            Some(r) => r.clone(),
            None => ["AWS_REGION", "AWS_DEFAULT_REGION"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|r| !r.is_empty()))
                .unwrap_or_else(|| "us-east-1".into()),
        };
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!("region = {region:?}: a region name like eu-west-1"));
        }
        let endpoint = match &self.endpoint {
            Some(e) => {
                let e = e.trim_end_matches('/');
                let rest = e
                    .strip_prefix("https://")
                    .or_else(|| e.strip_prefix("http://"))
                    .ok_or_else(|| format!("endpoint = {e:?}: http://host[:port] or https://…"))?;
                if rest.is_empty() || rest.contains(['@', '?', '#', ' ']) {
                    return Err(format!(
                        "endpoint = {:?}: http(s)://host[:port][/path], without credentials",
                        redacted(e)
                    ));
                }
                e.to_string()
            }
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        Ok(S3Spec {
            // Servers other than AWS (MinIO, SeaweedFS, Ceph) are mostly reached by path.
            path_style: self.path_style.unwrap_or(self.endpoint.is_some()),
            endpoint,
            region,
            access_key_env: self
                .access_key_env
                .clone()
                .unwrap_or_else(|| "AWS_ACCESS_KEY_ID".into()),
            secret_key_env: self
                .secret_key_env
                .clone()
                .unwrap_or_else(|| "AWS_SECRET_ACCESS_KEY".into()),
            session_token_env: self
                .session_token_env
                .clone()
                .unwrap_or_else(|| "AWS_SESSION_TOKEN".into()),
        })
    }
}

/// The URL with any password in it replaced by `***`, for messages.
fn redacted(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{}", &rest[end..])
        }
        _ => s.to_string(),
    }
}

/// A source URL: `sftp://user@host:port/path`.
#[derive(Debug, PartialEq)]
struct Url {
    scheme: Scheme,
    user: String,
    host: String,
    port: u16,
    path: String,
}

impl Url {
    fn parse(s: &str) -> Result<Url, String> {
        let shown = redacted(s);
        let bad = |why: &str| format!("url = {shown:?}: {why}");
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| bad("not a URL like sftp://user@host/folder"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "sftp" => Scheme::Sftp,
            "ftp" => Scheme::Ftp,
            "ftps" => Scheme::Ftps,
            "s3" => Scheme::S3,
            other => {
                return Err(bad(&format!(
                    "unknown scheme {other:?} (sftp://, ftp://, ftps:// or s3://)"
                )))
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if userinfo.is_some_and(|u| u.contains(':')) {
            return Err(bad(
                "a password in the URL is refused (it would be copied with the file); use \
                 password_env",
            ));
        }
        let user = match (scheme, userinfo.filter(|u| !u.is_empty())) {
            (Scheme::S3, Some(_)) => {
                return Err(bad(
                    "s3://bucket/prefix has no user (credentials come from the environment)",
                ))
            }
            (Scheme::S3, None) => String::new(),
            (Scheme::Sftp, None) => return Err(bad("name the user: sftp://user@host/folder")),
            // FTP without a user is an anonymous login, as every FTP client does.
            (_, None) => "anonymous".to_string(),
            (_, Some(u)) => u.to_string(),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs its closing ']'"))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if scheme == Scheme::S3
            && (port.is_some()
                || host.len() < 3
                || host.len() > 63
                || !host
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'))
        {
            return Err(bad(
                "s3://bucket/prefix: a bucket name (3 to 63 lowercase letters, digits, '-', \
                     '.'); the server is set with endpoint = \"http(s)://host:port\"",
            ));
        }
        let port = match port {
            None => match scheme {
                Scheme::Sftp => 22,
                Scheme::Ftp | Scheme::Ftps => 21,
                Scheme::S3 => 443,
            },
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad(&format!("{p:?} is not a port")))?,
        };
        let path = path.trim_end_matches('/');
        let path = if path.is_empty() { "/" } else { path };
        if path.split('/').any(|c| c == "..") || path.contains(['\0', '?', '#']) {
            return Err(bad("the folder may not hold '..', '?', '#' or NUL"));
        }
        if scheme == Scheme::S3 && path.contains("//") {
            return Err(bad("the prefix may not hold '//'"));
        }
        Ok(Url {
            scheme,
            user,
            host,
            port,
            path: path.to_string(),
        })
    }

    fn shown(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.scheme {
            Scheme::S3 => format!("s3://{host}{}", self.path),
            s => format!(
                "{}://{}@{host}:{}{}",
                s.name(),
                self.user,
                self.port,
                self.path
            ),
        }
    }
}

/// A resolved SFTP source for unit tests elsewhere.
#[cfg(test)]
pub fn sftp_source(name: &str) -> SourceSpec {
    let raw: RawSource = toml::from_str(&format!(
        "name = \"{name}\"\nurl = \"sftp://u@h/x\"\npassword_env = \"P\"\n\
         host_key = \"SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"\n"
    ))
    .unwrap();
    raw.resolve().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_and_secrets_refused() {
        let u = Url::parse("sftp://ferry@sftp.acme.example:2222/outbound/").unwrap();
        assert_eq!(
            (u.user.as_str(), u.host.as_str(), u.port, u.path.as_str()),
            ("ferry", "sftp.acme.example", 2222, "/outbound")
        );
        let u = Url::parse("ftp://host/in").unwrap();
        assert_eq!((u.user.as_str(), u.port), ("anonymous", 21));
        let u = Url::parse("s3://inbox/partners/acme/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.path.as_str()),
            ("inbox", "/partners/acme")
        );
        assert_eq!(u.shown(), "s3://inbox/partners/acme");
        let u = Url::parse("sftp://a@[::1]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 22));
        assert_eq!(u.shown(), "sftp://a@[::1]:22/x");
        let e = Url::parse("sftp://ferry:hunter2@host/x").unwrap_err();
        assert!(
            !e.contains("hunter2") && e.contains("ferry:***@host"),
            "{e}"
        );
        for bad in [
            "sftp://ferry:hunter2@host/x",
            "sftp://host/x",
            "sftp://a@host:0/x",
            "sftp://a@host/../etc",
            "http://a@host/x",
            "s3://u@bucket/x",
            "s3://Bucket/x",
            "s3://bucket:9000/x",
            "s3://bucket/a//b",
            "host/x",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }
}

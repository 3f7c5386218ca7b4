//! SFTP through libssh2 (`ssh2`): blocking, one session per connection, which fits ferry's
//! threads. The host key is checked before anything else is sent: against an OpenSSH
//! `known_hosts` file or a `SHA256:` fingerprint; unknown or changed is refused with the
//! fingerprint seen.

use super::{Entry, Place, Refused, RemoteFile};
use crate::config::SourceSpec;
use anyhow::{anyhow, Context, Result};
use base64::Engine;
use sha2::{Digest, Sha256};
use ssh2::{CheckResult, ErrorCode, FileStat, KnownHostFileKind, RenameFlags, Session, Sftp};
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// SFTP status codes (draft-ietf-secsh-filexfer-02).
const NO_SUCH_FILE: i32 = 2;

pub struct SftpPlace {
    sftp: Sftp,
    /// Kept alive as long as the SFTP channel.
    _session: Session,
    base: String,
    depth: usize,
}

/// `SHA256:<base64>`, as `ssh-keygen -lf` prints a key's fingerprint.
fn fingerprint(key: &[u8]) -> String {
    let digest = Sha256::digest(key);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

impl SftpPlace {
    pub fn connect(spec: &SourceSpec) -> Result<SftpPlace> {
        let addr = (spec.host.as_str(), spec.port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", spec.host))?
            .next()
            .ok_or_else(|| anyhow!("{} has no address", spec.host))?;
        let tcp = TcpStream::connect_timeout(&addr, spec.timeout)
            .with_context(|| format!("connecting to {}:{}", spec.host, spec.port))?;
        let mut session = Session::new()?;
        session.set_timeout(spec.timeout.as_millis().min(u32::MAX as u128) as u32);
        session.set_tcp_stream(tcp);
        session
            .handshake()
            .with_context(|| format!("SSH handshake with {}:{}", spec.host, spec.port))?;
        tracing::debug!(
            source = %spec.name,
            cipher = session.methods(ssh2::MethodType::CryptCs).unwrap_or("?"),
            "connected"
        );
        check_host_key(&session, spec)?;
        authenticate(&session, spec)?;
        let sftp = session.sftp().context("starting SFTP")?;
        Ok(SftpPlace {
            sftp,
            _session: session,
            base: spec.path.clone(),
            depth: spec.depth,
        })
    }

    fn full(&self, path: &str) -> PathBuf {
        Path::new(&self.base).join(path)
    }

    /// Makes the folders of `target` that are missing (failures show in the next step).
    fn make_parents(&mut self, target: &Path) {
        let mut dir = PathBuf::new();
        if let Some(parent) = target.parent() {
            for c in parent.components() {
                dir.push(c);
                if self.sftp.stat(&dir).is_err() {
                    let _ = self.sftp.mkdir(&dir, 0o755);
                }
            }
        }
    }
}

impl super::Folders for SftpPlace {
    fn entries(&mut self, rel: &str) -> Result<Vec<Entry>> {
        let dir = self.full(rel);
        let listed = self
            .sftp
            .readdir(&dir)
            .map_err(|e| anyhow!(e).context(format!("listing {}", dir.display())))?;
        let mut out = Vec::with_capacity(listed.len());
        for (path, stat) in listed {
            let Some(name) = path.file_name() else {
                continue;
            };
            let Some(name) = name.to_str() else {
                out.push(Entry::Problem(
                    name.to_string_lossy().into_owned(),
                    "the name is not UTF-8".into(),
                ));
                continue;
            };
            out.push(if stat.is_dir() {
                Entry::Folder(name.to_string())
            } else if stat.is_file() {
                Entry::File(file(name.to_string(), &stat))
            } else {
                // Links and special files are never followed or read.
                Entry::Problem(
                    name.to_string(),
                    "not a regular file (a link or special file)".into(),
                )
            });
        }
        Ok(out)
    }
}

fn file(path: String, stat: &FileStat) -> RemoteFile {
    let (size, mtime) = (stat.size.unwrap_or(0), stat.mtime.unwrap_or(0) as i64);
    RemoteFile {
        version: format!("{size}:{mtime}"),
        path,
        size,
        mtime,
        granularity: 1,
    }
}

fn check_host_key(session: &Session, spec: &SourceSpec) -> Result<()> {
    let (key, _) = session
        .host_key()
        .ok_or_else(|| anyhow!("the server sent no host key"))?;
    let seen = fingerprint(key);
    if let Some(want) = &spec.host_key {
        if *want == seen {
            return Ok(());
        }
        return Err(Refused(format!(
            "the host key of {}:{} is {seen}, not the configured host_key {want}; nothing was \
             downloaded",
            spec.host, spec.port
        ))
        .into());
    }
    let file = spec
        .known_hosts
        .as_ref()
        .ok_or_else(|| Refused("no known_hosts or host_key to check the server with".into()))?;
    let mut known = session.known_hosts()?;
    known
        .read_file(file, KnownHostFileKind::OpenSSH)
        .map_err(|e| Refused(format!("reading known_hosts {}: {e}", file.display())))?;
    match known.check_port(&spec.host, spec.port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(Refused(format!(
            "the host key of {}:{} CHANGED: the server now shows {seen}, which {} does not \
             hold for it; nothing was downloaded",
            spec.host,
            spec.port,
            file.display()
        ))
        .into()),
        CheckResult::NotFound | CheckResult::Failure => Err(Refused(format!(
            "the host key of {}:{} ({seen}) is not in {}; add it (ssh-keyscan, checked with \
             the partner) or set host_key = \"{seen}\"; nothing was downloaded",
            spec.host,
            spec.port,
            file.display()
        ))
        .into()),
    }
}

fn secret(var: &str) -> Result<String> {
    std::env::var(var)
        .map_err(|_| Refused(format!("the environment variable {var} is not set")).into())
}

fn authenticate(session: &Session, spec: &SourceSpec) -> Result<()> {
    let mut tried = Vec::new();
    if let Some(key) = &spec.identity_file {
        let passphrase = spec
            .identity_passphrase_env
            .as_deref()
            .map(secret)
            .transpose()?;
        match session.userauth_pubkey_file(&spec.user, None, key, passphrase.as_deref()) {
            Ok(()) if session.authenticated() => return Ok(()),
            Ok(()) => tried.push(format!("the key {}", key.display())),
            Err(e) => tried.push(format!("the key {} ({e})", key.display())),
        }
    }
    if let Some(var) = &spec.password_env {
        let password = secret(var)?;
        match session.userauth_password(&spec.user, &password) {
            Ok(()) if session.authenticated() => return Ok(()),
            Ok(()) => tried.push(format!("the password in {var}")),
            Err(e) => tried.push(format!("the password in {var} ({e})")),
        }
    }
    Err(Refused(format!(
        "{}@{}:{} refused the login with {}",
        spec.user,
        spec.host,
        spec.port,
        tried.join(" and ")
    ))
    .into())
}

impl Place for SftpPlace {
    fn list(
        &mut self,
        out: &mut Vec<RemoteFile>,
        problems: &mut Vec<(String, String)>,
    ) -> Result<()> {
        let depth = self.depth;
        super::walk(self, depth, "", 0, out, problems)
    }

    fn stat(&mut self, path: &str) -> Result<Option<RemoteFile>> {
        match self.sftp.lstat(&self.full(path)) {
            Ok(s) if s.is_file() => Ok(Some(file(path.to_string(), &s))),
            Ok(_) => Ok(None),
            Err(e) if e.code() == ErrorCode::SFTP(NO_SUCH_FILE) => Ok(None),
            Err(e) => Err(anyhow!(e).context(format!("looking at {path}"))),
        }
    }

    fn read(&mut self, path: &str, into: &mut dyn Write, limit: u64) -> Result<u64> {
        let mut f = self
            .sftp
            .open(self.full(path))
            .with_context(|| format!("opening {path}"))?;
        // libssh2 asks for the whole buffer at once, in several requests: a buffer sized to the
        // file (one more byte, to see its end) keeps a small file to one request.
        let size = (limit as usize).saturating_add(1).clamp(4096, 256 << 10);
        super::copy_upto(&mut f, into, limit, size, path)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let (source, target) = (self.full(from), self.full(to));
        // Never over an existing file (no OVERWRITE flag, which libssh2 asks for by default).
        let flags = Some(RenameFlags::ATOMIC | RenameFlags::NATIVE);
        if self.sftp.rename(&source, &target, flags).is_ok() {
            return Ok(());
        }
        // The target's folders, as far as they are missing, then once more.
        self.make_parents(&target);
        self.sftp
            .rename(&source, &target, flags)
            .with_context(|| format!("moving {from} to {}", target.display()))
    }

    fn put(&mut self, path: &str, from: &Path) -> Result<()> {
        let target = self.full(path);
        let mut local =
            std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
        let mut f = match self.sftp.create(&target) {
            Ok(f) => f,
            Err(_) => {
                self.make_parents(&target);
                self.sftp
                    .create(&target)
                    .with_context(|| format!("creating {path}"))?
            }
        };
        // Large writes: libssh2 sends them as pipelined requests.
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = std::io::Read::read(&mut local, &mut buf)?;
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n])
                .with_context(|| format!("writing {path}"))?;
        }
        // On disk before it is renamed into place, where the server can (OpenSSH's fsync
        // extension); a server without it is not an error.
        if let Err(e) = f.fsync() {
            tracing::debug!(path, error = %e, "the server did not fsync the file");
        }
        f.close().with_context(|| format!("closing {path}"))
    }

    fn make_folder(&mut self) -> Result<()> {
        let base = PathBuf::from(&self.base);
        if self.sftp.stat(&base).is_err() {
            self.make_parents(&base.join("x"));
        }
        Ok(())
    }

    fn replace(&mut self, from: &str, to: &str) -> Result<()> {
        let (source, target) = (self.full(from), self.full(to));
        let flags = Some(RenameFlags::ATOMIC | RenameFlags::NATIVE | RenameFlags::OVERWRITE);
        if self.sftp.rename(&source, &target, flags).is_ok() {
            return Ok(());
        }
        // SFTP version 3 servers (OpenSSH) never rename over a file: the old one goes first.
        if self.sftp.lstat(&target).is_ok() {
            self.sftp
                .unlink(&target)
                .with_context(|| format!("replacing {to}"))?;
        } else {
            self.make_parents(&target);
        }
        self.sftp
            .rename(&source, &target, flags)
            .with_context(|| format!("moving {from} to {to}"))
    }

    fn remove(&mut self, path: &str) -> Result<()> {
        self.sftp
            .unlink(&self.full(path))
            .with_context(|| format!("deleting {path}"))
    }
}

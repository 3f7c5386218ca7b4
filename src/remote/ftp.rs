//! FTP and FTPS (explicit TLS: `AUTH TLS`, then protected data connections) through
//! `suppaftp`, blocking, which fits ferry's threads. Files move in binary (`TYPE I`): a
//! server's ASCII mode would change line endings. Folders are listed with `MLSD` where the
//! server has it (exact times), else `LIST` (`ls -l` lines: times to the minute, or the day
//! for old files) — a file's version is its size and that time, the same in every listing.
//! Passive data connections go to the control connection's address, whatever address the
//! server names (as curl does), so a server cannot point ferry at another host.

use super::{Entry, Place, Refused, RemoteFile};
use crate::config::{Scheme, SourceSpec};
use anyhow::{anyhow, bail, Context, Result};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, UNIX_EPOCH};
use suppaftp::list::{File, ListParser};
use suppaftp::types::FileType;
use suppaftp::{FtpError, RustlsConnector, RustlsFtpStream, Status};

pub struct FtpPlace {
    ftp: RustlsFtpStream,
    base: String,
    depth: usize,
    /// The server lists folders with MLSD (and files with MLST).
    mlsd: bool,
}

fn tcp(addr: std::net::SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// A failure of the server's TLS certificate, or a refused login: retrying cannot help.
fn refusal(e: &FtpError) -> bool {
    match e {
        FtpError::ConnectionError(io) => super::tls::io_refused(io),
        FtpError::SecureError(_) => true,
        FtpError::UnexpectedResponse(r) => r.status == Status::NotLoggedIn,
        _ => false,
    }
}

fn wrap(e: FtpError, what: String) -> anyhow::Error {
    if refusal(&e) {
        Refused(format!("{what}: {e}")).into()
    } else {
        anyhow!(e).context(what)
    }
}

impl FtpPlace {
    pub fn connect(spec: &SourceSpec) -> Result<FtpPlace> {
        let at = format!("{}:{}", spec.host, spec.port);
        let addr = (spec.host.as_str(), spec.port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", spec.host))?
            .next()
            .ok_or_else(|| anyhow!("{} has no address", spec.host))?;
        let timeout = spec.timeout;
        let stream = tcp(addr, timeout).with_context(|| format!("connecting to {at}"))?;
        let mut ftp = RustlsFtpStream::connect_with_stream(stream)
            .map_err(|e| wrap(e, format!("greeting from {at}")))?
            .passive_stream_builder(move |a| tcp(a, timeout).map_err(FtpError::ConnectionError));
        ftp.set_passive_nat_workaround(true);
        if spec.scheme == Scheme::Ftps {
            let config = super::tls::rustls_config(spec.ca_file.as_deref(), spec.target)?;
            ftp = ftp
                .into_secure(RustlsConnector::from(config), &spec.host)
                .map_err(|e| wrap(e, format!("TLS with {at}")))?;
        }
        let password = match &spec.password_env {
            Some(var) => std::env::var(var).map_err(|_| {
                Refused(format!(
                    "the password's environment variable {var} is not set"
                ))
            })?,
            // Anonymous, as FTP clients log in without a password.
            None => "ferry@".to_string(),
        };
        ftp.login(spec.user.as_str(), password.as_str())
            .map_err(|e| wrap(e, format!("{}@{at} refused the login", spec.user)))?;
        ftp.transfer_type(FileType::Binary)
            .map_err(|e| wrap(e, "switching to binary transfers".into()))?;
        let mlsd = ftp
            .feat()
            .map(|f| f.keys().any(|k| k.eq_ignore_ascii_case("MLST")))
            .unwrap_or(false);
        tracing::debug!(source = %spec.name, mlsd, "connected");
        Ok(FtpPlace {
            ftp,
            base: spec.path.clone(),
            depth: spec.depth,
            mlsd,
        })
    }

    fn full(&self, path: &str) -> String {
        if path.starts_with('/') {
            return path.to_string();
        }
        format!("{}/{path}", self.base.trim_end_matches('/'))
    }

    /// Makes the folders of `target` that are missing (failures show in the next step).
    fn make_parents(&mut self, target: &str) {
        let mut dir = String::new();
        if let Some((parent, _)) = target.rsplit_once('/') {
            for part in parent.split('/').filter(|p| !p.is_empty()) {
                dir.push('/');
                dir.push_str(part);
                if self.ftp.cwd(&dir).is_err() {
                    let _ = self.ftp.mkdir(&dir);
                }
            }
        }
    }

    /// The entries of a folder (entered first: a name is never read as `ls` options or a
    /// pattern), and the lines that are not an entry ferry can read — never dropped without a
    /// note: a name with a line break in it, a listing format of its own.
    fn read_folder(&mut self, dir: &str) -> Result<(Vec<File>, Vec<String>), FtpError> {
        self.ftp.cwd(dir)?;
        let lines = if self.mlsd {
            self.ftp.mlsd(None)?
        } else {
            self.ftp.list(None)?
        };
        let (mut files, mut unread) = (Vec::new(), Vec::new());
        for line in &lines {
            let line = line.trim_end_matches(['\r', '\n']);
            // `ls -l`'s block count, which some servers send first.
            if line.is_empty() || (!self.mlsd && line.starts_with("total ")) {
                continue;
            }
            match self.parse(line) {
                Some(f) => files.push(f),
                None => unread.push(line.to_string()),
            }
        }
        Ok((files, unread))
    }

    /// MLSD gives times to the second; `ls -l` lines to the minute.
    fn granularity(&self) -> i64 {
        if self.mlsd {
            1
        } else {
            60
        }
    }

    fn parse(&self, line: &str) -> Option<File> {
        if self.mlsd {
            ListParser::parse_mlsd(line).ok()
        } else {
            ListParser::parse_posix(line)
                .or_else(|_| ListParser::parse_dos(line))
                .ok()
        }
    }
}

impl super::Folders for FtpPlace {
    fn entries(&mut self, rel: &str) -> Result<Vec<Entry>> {
        let dir = if rel.is_empty() {
            self.base.clone()
        } else {
            self.full(rel)
        };
        let (listed, unread) = self
            .read_folder(&dir)
            .map_err(|e| wrap(e, format!("listing {dir}")))?;
        let granularity = self.granularity();
        let mut out: Vec<Entry> = unread
            .into_iter()
            .map(|line| {
                Entry::Problem(
                    line,
                    "a listing line that is not a file ferry can read (a line break in a name?)"
                        .into(),
                )
            })
            .collect();
        for f in listed {
            let name = f.name().to_string();
            out.push(if f.is_directory() {
                Entry::Folder(name)
            } else if f.is_file() {
                Entry::File(file(name, &f, granularity))
            } else {
                // Links are never followed.
                Entry::Problem(name, "not a regular file (a link)".into())
            });
        }
        Ok(out)
    }
}

fn file(path: String, f: &File, granularity: i64) -> RemoteFile {
    let size = f.size() as u64;
    let mtime = f
        .modified()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    RemoteFile {
        version: format!("{size}:{mtime}"),
        path,
        size,
        mtime,
        granularity,
    }
}

/// A name `LIST <name>` would read as `ls` options or a pattern.
fn unsafe_for_list(name: &str) -> bool {
    name.starts_with('-')
        || name.contains(['*', '?', '[', ']', '{', '}', '~'])
        || name.trim() != name
}

impl Place for FtpPlace {
    fn list(
        &mut self,
        out: &mut Vec<RemoteFile>,
        problems: &mut Vec<(String, String)>,
    ) -> Result<()> {
        let depth = self.depth;
        super::walk(self, depth, "", 0, out, problems)
    }

    fn stat(&mut self, path: &str) -> Result<Option<RemoteFile>> {
        let full = self.full(path);
        let (dir, name) = match full.rsplit_once('/') {
            Some(("", n)) => ("/".to_string(), n.to_string()),
            Some((d, n)) => (d.to_string(), n.to_string()),
            None => (".".to_string(), full.clone()),
        };
        match self.ftp.cwd(&dir) {
            Ok(()) => {}
            // The folder is gone, so is the file; anything else is not an answer.
            Err(FtpError::UnexpectedResponse(r)) if r.status == Status::FileUnavailable => {
                return Ok(None)
            }
            Err(e) => return Err(wrap(e, format!("looking at {path}"))),
        }
        // The file's own entry, the same form the listing gave.
        let found = if self.mlsd {
            match self.ftp.mlst(Some(&name)) {
                Ok(line) => ListParser::parse_mlst(line.trim())
                    .ok()
                    .into_iter()
                    .collect(),
                Err(FtpError::UnexpectedResponse(r)) if r.status == Status::FileUnavailable => {
                    Vec::new()
                }
                Err(e) => return Err(wrap(e, format!("looking at {path}"))),
            }
        } else if unsafe_for_list(&name) {
            self.read_folder(&dir)
                .map_err(|e| wrap(e, format!("looking at {path}")))?
                .0
        } else {
            match self.ftp.list(Some(&name)) {
                Ok(lines) => lines.iter().filter_map(|l| self.parse(l)).collect(),
                Err(FtpError::UnexpectedResponse(r)) if r.status == Status::FileUnavailable => {
                    Vec::new()
                }
                Err(e) => return Err(wrap(e, format!("looking at {path}"))),
            }
        };
        Ok(found
            .into_iter()
            .find(|f| f.is_file() && f.name() == name)
            .map(|f| file(path.to_string(), &f, self.granularity())))
    }

    fn read(&mut self, path: &str, into: &mut dyn std::io::Write, limit: u64) -> Result<u64> {
        let full = self.full(path);
        let mut stream = self
            .ftp
            .retr_as_stream(&full)
            .map_err(|e| wrap(e, format!("opening {path}")))?;
        let n = super::copy_upto(&mut stream, into, limit, 256 << 10, path)?;
        if n > limit {
            // Longer than listed: cut short (the caller discards it).
            let _ = self.ftp.abort(stream);
            return Ok(n);
        }
        // The server's completion reply: a transfer it cut short is not a whole file.
        stream
            .finish()
            .map_err(|e| wrap(e, format!("finishing the transfer of {path}")))?;
        Ok(n)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let (source, target) = (self.full(from), self.full(to));
        if self.ftp.rename(&source, &target).is_ok() {
            return Ok(());
        }
        // The target's folders, as far as they are missing, then once more.
        self.make_parents(&target);
        self.ftp
            .rename(&source, &target)
            .map_err(|e| wrap(e, format!("moving {from} to {target}")))
    }

    fn put(&mut self, path: &str, from: &std::path::Path) -> Result<()> {
        let target = self.full(path);
        let open = || {
            std::fs::File::open(from)
                .map(|f| std::io::BufReader::with_capacity(256 << 10, f))
                .with_context(|| format!("opening {}", from.display()))
        };
        // `STOR` in binary; the server's completion reply is read (a cut transfer fails).
        if self.ftp.put_file(&target, &mut open()?).is_ok() {
            return Ok(());
        }
        self.make_parents(&target);
        self.ftp
            .put_file(&target, &mut open()?)
            .map_err(|e| wrap(e, format!("writing {path}")))?;
        Ok(())
    }

    fn make_folder(&mut self) -> Result<()> {
        let probe = self.full("x");
        self.make_parents(&probe);
        Ok(())
    }

    fn replace(&mut self, from: &str, to: &str) -> Result<()> {
        let (source, target) = (self.full(from), self.full(to));
        if self.ftp.rename(&source, &target).is_ok() {
            return Ok(());
        }
        // A server that does not rename over a file: the old one goes first.
        let _ = self.ftp.rm(&target);
        self.ftp
            .rename(&source, &target)
            .map_err(|e| wrap(e, format!("moving {from} to {to}")))
    }

    fn remove(&mut self, path: &str) -> Result<()> {
        match self.ftp.rm(self.full(path)) {
            Ok(()) => Ok(()),
            Err(FtpError::UnexpectedResponse(r)) if r.status == Status::FileUnavailable => {
                bail!(
                    "deleting {path}: {}",
                    String::from_utf8_lossy(&r.body).trim()
                )
            }
            Err(e) => Err(wrap(e, format!("deleting {path}"))),
        }
    }
}

//! A throwaway FTP server for the FTP source tests: Debian's `vsftpd` on a free port on
//! 127.0.0.1, serving a folder of its own (chrooted) to a local user made for the tests
//! (`ferry-ftp`, password below), plain or with explicit TLS (a certificate of a private CA,
//! TLS required for logins and data, and vsftpd's default `require_ssl_reuse=YES`: data
//! connections must resume the control connection's TLS session). Stopped when dropped. If it
//! cannot start, the test fails: it never skips.

use crate::harness::free_port;
use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

pub const USER: &str = "ferry-ftp";
pub const PASSWORD: &str = "ferry-test-pw";

pub struct Vsftpd {
    pub port: u16,
    pub dir: PathBuf,
    /// What the user sees as `/`.
    pub root: PathBuf,
    /// With TLS: the CA that signed the server's certificate.
    pub ca: Option<PathBuf>,
    child: Child,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("a tool the FTP tests need");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test user, made once per test run (its home `/`: vsftpd enters it before the chroot).
fn user() {
    static MADE: Once = Once::new();
    MADE.call_once(|| {
        let exists = Command::new("id")
            .arg(USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !exists {
            run(Command::new("useradd").args(["-M", "-d", "/", "-s", "/bin/sh", USER]));
        }
        let mut c = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd");
        use std::io::Write;
        writeln!(c.stdin.take().unwrap(), "{USER}:{PASSWORD}").unwrap();
        assert!(
            c.wait().unwrap().success(),
            "setting the FTP test user's password"
        );
    });
}

fn chown(path: &Path) {
    run(Command::new("chown").arg("-R").arg(USER).arg(path));
}

impl Vsftpd {
    pub fn start() -> Vsftpd {
        Vsftpd::launch(false)
    }

    /// Explicit TLS required for logins and data, with a private CA's certificate (`ca`).
    pub fn start_tls() -> Vsftpd {
        Vsftpd::launch(true)
    }

    fn launch(tls: bool) -> Vsftpd {
        user();
        let dir = tempfile::Builder::new()
            .prefix("ferry-vsftpd-")
            .tempdir()
            .unwrap()
            .keep();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.join("root");
        fs::create_dir_all(&root).unwrap();
        chown(&root);
        fs::create_dir_all(dir.join("empty")).unwrap();
        let mut conf = format!(
            "listen=YES\nlisten_ipv6=NO\nlisten_address=127.0.0.1\n\
             background=NO\nanonymous_enable=NO\nlocal_enable=YES\nwrite_enable=YES\n\
             local_umask=022\nlocal_root={root}\nchroot_local_user=YES\n\
             allow_writeable_chroot=YES\npasv_enable=YES\npasv_address=127.0.0.1\n\
             seccomp_sandbox=NO\nsecure_chroot_dir={empty}\npam_service_name=vsftpd\n\
             xferlog_enable=YES\nvsftpd_log_file={log}\nmax_clients=200\nmax_per_ip=200\n",
            root = root.display(),
            empty = dir.join("empty").display(),
            log = dir.join("vsftpd.log").display(),
        );
        let mut ca = None;
        if tls {
            crate::seaweed::certificates(&dir);
            conf.push_str(&format!(
                "ssl_enable=YES\nforce_local_logins_ssl=YES\nforce_local_data_ssl=YES\n\
                 rsa_cert_file={}\nrsa_private_key_file={}\n",
                dir.join("server.pem").display(),
                dir.join("server.key").display()
            ));
            ca = Some(dir.join("ca.pem"));
        }
        // A free port is only free until taken: a server that lost it to another test's server
        // exits at once, and is started again on another.
        for _ in 0..5 {
            let port = free_port();
            fs::write(
                dir.join("vsftpd.conf"),
                format!("{conf}listen_port={port}\n"),
            )
            .unwrap();
            let mut child = Command::new("/usr/sbin/vsftpd")
                .arg(dir.join("vsftpd.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(dir.join("stderr.log")).unwrap())
                .spawn()
                .expect("vsftpd is not installed (./test installs it)");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Vsftpd {
                        port,
                        dir,
                        root,
                        ca,
                        child,
                    };
                }
                assert!(
                    Instant::now() < deadline,
                    "vsftpd did not start on port {port}: {}",
                    fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!(
            "vsftpd did not start: {}",
            fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
        );
    }

    /// A `[[source]]` block for `/<folder>` on this server, logging in with the password in
    /// FERRY_TEST_FTP_PASSWORD (which the harness gives ferry).
    pub fn source(&self, name: &str, folder: &str, extra: &str) -> String {
        let (scheme, ca) = match &self.ca {
            Some(c) => ("ftps", format!("ca_file = \"{}\"\n", c.display())),
            None => ("ftp", String::new()),
        };
        format!(
            "[[source]]\nname = \"{name}\"\nurl = \"{scheme}://{USER}@127.0.0.1:{}/{folder}\"\n\
             password_env = \"FERRY_TEST_FTP_PASSWORD\"\nsettle = \"0s\"\n{ca}{extra}\n",
            self.port
        )
    }

    /// Writes a file on the server (owned by the FTP user, so it may move or delete it), its
    /// modification time an hour back: listed to the minute, it is taken at once.
    pub fn put(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        self.put_aged(rel, bytes, 3600)
    }

    /// Writes a file modified `age` seconds ago.
    pub fn put_aged(&self, rel: &str, bytes: &[u8], age: u64) -> PathBuf {
        self.put_at(
            rel,
            bytes,
            std::time::SystemTime::now() - Duration::from_secs(age),
        )
    }

    /// Writes a file with its modification time `t`.
    pub fn put_at(&self, rel: &str, bytes: &[u8], t: std::time::SystemTime) -> PathBuf {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
        chown(&self.root);
        p
    }
}

impl Drop for Vsftpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

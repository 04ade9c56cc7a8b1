//! `hsmls as …` against the SoftHSM test token, in separate processes:
//! init writes the keys' URIs into the AS config, token issue prints a
//! token, revoke refuses an unknown serial, serve answers over TLS with a
//! CRL that openssl verifies against the issuing CA; the keys are then
//! destroyed with `hsmls key destroy`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn hsmls(args: &[&str]) -> Output {
    if std::env::var_os("HSMLS_PKCS11_CONFIG").is_none() {
        panic!("HSMLS_PKCS11_CONFIG is not set: run `bash scripts/test.sh`.");
    }
    Command::new(env!("CARGO_BIN_EXE_hsmls"))
        .args(args)
        .output()
        .expect("cannot run hsmls")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "hsmls failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn init_token_revoke_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p11 = std::env::var("HSMLS_PKCS11_CONFIG").unwrap();
    let config = dir.path().join("as.toml");
    std::fs::write(
        &config,
        format!(
            "pkcs11_config = {p11:?}\nlisten = \"127.0.0.1:{port}\"\n\
             public_url = \"https://127.0.0.1:{port}\"\ntls_names = [\"127.0.0.1\"]\n\
             state_dir = \"state\"\ndatabase = \"sqlite\"\n"
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let out = ok(&hsmls(&["as", "--as-config", cfg, "init"]));
    assert!(out.contains("root key:    pkcs11:"), "{out}");
    let written = std::fs::read_to_string(&config).unwrap();
    let uris: Vec<String> = written
        .lines()
        .filter(|l| l.starts_with("root =") || l.starts_with("issuing =") || l.starts_with("log ="))
        .map(|l| l.split_once(" = ").unwrap().1.trim_matches('"').to_owned())
        .collect();
    assert_eq!(uris.len(), 3, "{written}");
    let state = dir.path().join("state");
    for f in [
        "root.pem",
        "issuing.pem",
        "tls.pem",
        "tls.key",
        "log.pub",
        "as.db",
    ] {
        assert!(state.join(f).exists(), "{f}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "tls.key is readable by others");
    // A second init refuses to replace the keys.
    let again = hsmls(&["as", "--as-config", cfg, "init"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already initialised"));

    let token = ok(&hsmls(&[
        "as",
        "--as-config",
        cfg,
        "token",
        "issue",
        "im:alice@hsmls.test",
    ]));
    assert_eq!(token.trim().len(), 43, "a 32-byte base64url token: {token}");
    // --json: one object.
    let issued = ok(&hsmls(&[
        "as",
        "--as-config",
        cfg,
        "--json",
        "token",
        "issue",
        "im:bob@hsmls.test",
    ]));
    let v: serde_json::Value = serde_json::from_str(issued.trim()).unwrap();
    assert_eq!(v["type"], "enrolment_token");
    assert_eq!(v["identity"], "im:bob@hsmls.test");
    assert_eq!(v["token"].as_str().unwrap().len(), 43);
    // A TLS certificate for the DS from the AS's CA, its key owner-only.
    let prefix = dir.path().join("ds-tls");
    let tls = ok(&hsmls(&[
        "as",
        "--as-config",
        cfg,
        "--json",
        "tls",
        "issue",
        "127.0.0.1",
        "localhost",
        "--out",
        prefix.to_str().unwrap(),
    ]));
    let v: serde_json::Value = serde_json::from_str(tls.trim()).unwrap();
    assert_eq!(v["type"], "tls_certificate");
    let chain = std::fs::read_to_string(dir.path().join("ds-tls.pem")).unwrap();
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf and issuing CA"
    );
    let key_mode = std::fs::metadata(dir.path().join("ds-tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o077, 0, "ds-tls.key is readable by others");
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(state.join("root.pem"))
        .arg("-untrusted")
        .arg(state.join("issuing.pem"))
        .arg(dir.path().join("ds-tls.pem"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains(": OK"),
        "{verify:?}"
    );
    let revoke = hsmls(&["as", "--as-config", cfg, "revoke", "0123"]);
    assert_eq!(revoke.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&revoke.stderr).contains("unknown certificate"));

    // Serve, fetch the CRL over TLS (trusting only the AS root), verify it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_hsmls"))
        .args(["as", "--as-config", cfg, "serve"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "{line}");
    let crl = dir.path().join("crl.der");
    let curl = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
        .arg(state.join("root.pem"))
        .arg("-o")
        .arg(&crl)
        .arg(format!("https://127.0.0.1:{port}/crl"))
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        curl.status.success(),
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    let verify = Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-in"])
        .arg(&crl)
        .arg("-CAfile")
        .arg(state.join("issuing.pem"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&verify.stderr).contains("verify OK")
            || String::from_utf8_lossy(&verify.stdout).contains("verify OK"),
        "{verify:?}"
    );
    std::thread::sleep(Duration::from_millis(10));
    for uri in &uris {
        ok(&hsmls(&["key", "destroy", uri]));
    }
}

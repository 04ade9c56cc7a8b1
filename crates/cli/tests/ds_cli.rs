//! `hsmls ds serve` in a separate process, from a configuration file like
//! hsm-config/ds.example.toml: it answers over TLS (curl trusting only
//! the test root gets a challenge), a plaintext HTTP request gets no HTTP
//! answer, it creates its DS key with mode 0600, and it refuses a
//! configuration without credentials or with an unknown field.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn tls(dir: &std::path::Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
    };
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.distinguished_name
        .push(DnType::CommonName, "hsmls ds_cli test root");
    let root_cert = root.self_signed(&root_key).unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &Issuer::new(root, root_key))
        .unwrap();
    std::fs::write(dir.join("root.pem"), root_cert.pem()).unwrap();
    std::fs::write(dir.join("tls.pem"), leaf.pem() + &root_cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
}

fn config(port: u16, credentials: &str, extra: &str) -> String {
    format!(
        "listen = \"127.0.0.1:{port}\"\ntls_cert = \"tls.pem\"\ntls_key = \"tls.key\"\n\
         key_file = \"ds.key\"\ndatabase = \"sqlite:ds.db\"\nds_identity = \"ds.test\"\n\
         {extra}[credentials]\n{credentials}\n"
    )
}

fn hsmls_ds(cfg: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hsmls"));
    c.args(["ds", "--ds-config"]).arg(cfg).arg("serve");
    c
}

#[test]
fn serve_answers_over_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    tls(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("ds.toml");
    std::fs::write(&cfg, config(port, "basic = true", "")).unwrap();
    let mut child = hsmls_ds(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), format!("listening on 127.0.0.1:{port}"));
    let url = format!("https://127.0.0.1:{port}/v1/auth/challenge");
    let curl = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "-X",
            "POST",
            "--cacert",
        ])
        .arg(dir.path().join("root.pem"))
        .arg(&url)
        .output()
        .unwrap();
    // Plain HTTP to the same port.
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-X", "POST"])
        .arg(format!("http://127.0.0.1:{port}/v1/auth/challenge"))
        .output()
        .unwrap();
    // Without the root: the certificate is not trusted.
    let untrusted = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-X", "POST"])
        .arg(&url)
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        curl.status.success(),
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&curl.stdout).unwrap();
    assert_eq!(body["ds_identity"], "ds.test", "{body}");
    assert!(!plain.status.success(), "plain HTTP answered: {plain:?}");
    assert!(!plain.stdout.starts_with(b"{"), "{plain:?}");
    assert_eq!(untrusted.status.code(), Some(60), "{untrusted:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("ds.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "ds.key is readable by others");
}

#[test]
fn serve_refuses_bad_configurations() {
    let dir = tempfile::tempdir().unwrap();
    tls(dir.path());
    for (text, want) in [
        (config(0, "", ""), "either as_root"),
        (config(0, "as_root = \"root.pem\"", ""), "as_url or as_crl"),
        (
            config(0, "basic = true", "plain_http = true\n"),
            "unknown field",
        ),
    ] {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, text).unwrap();
        let out = hsmls_ds(&cfg).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{want}: {err}");
        assert!(out.stdout.is_empty());
    }
}

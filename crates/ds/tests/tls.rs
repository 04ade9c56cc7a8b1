//! The DS speaks TLS only: its client refuses plain-HTTP URLs and roots
//! that are not certificates, a client trusting another root cannot
//! connect, a plaintext HTTP request to the DS's port gets no HTTP answer,
//! and `hsmls-ds serve` does not start without a certificate and key.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hsmls_custody::SoftwareCustody;
use hsmls_ds::ClientError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn plain_http_and_bad_roots_are_refused_by_the_client() {
    let roots = pki().root_pem.as_bytes();
    for url in [
        "http://127.0.0.1:8443",
        "ws://127.0.0.1:8443",
        "127.0.0.1:8443",
        "https://127.0.0.1:8443/v1",
        "https://",
    ] {
        let e = hsmls_ds::DsClient::new(url, roots).unwrap_err();
        assert!(matches!(e, ClientError::BadUrl(_)), "{url}: {e:?}");
    }
    for bad in [
        &b""[..],
        b"not a certificate",
        b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
    ] {
        let e = hsmls_ds::DsClient::new("https://127.0.0.1:8443", bad).unwrap_err();
        assert!(matches!(e, ClientError::BadRoots(_)), "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_clients_trusting_the_root_connect() {
    let t = sqlite_ds(config()).await;
    // A client trusting another root: the handshake fails.
    let other = {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).unwrap().pem()
    };
    let stranger = hsmls_ds::DsClient::new(&t.base, other.as_bytes()).unwrap();
    let signer = hsmls::Signer::generate(
        Arc::new(SoftwareCustody::new()),
        hsmls::Credential::Basic(b"stranger".to_vec()),
    )
    .unwrap();
    let e = stranger.authenticate(&signer).await.unwrap_err();
    assert!(matches!(e, ClientError::Transport(_)), "{e:?}");

    // Plaintext HTTP to the TLS port: no HTTP answer (a TLS alert or a
    // closed connection).
    let addr = t.base.strip_prefix("https://").unwrap();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /v1/auth/challenge HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(!buf.starts_with(b"HTTP/"), "a plaintext answer: {buf:?}");

    // The server still serves clients that trust its root, over HTTPS
    // and WebSocket over TLS.
    let (mut alice, mut bob, mut carol) = three(&t.base).await;
    form(
        &mut alice,
        &mut bob,
        &mut carol,
        hsmls_ds::api::GroupMode::Blind,
    )
    .await;
    let mut push = bob.ds.push(vec![]).await.unwrap();
    push.ack(Default::default()).await.unwrap();
    alice.send_app("over TLS").await;
    let frame = tokio::time::timeout(Duration::from_secs(10), push.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(frame, hsmls_ds::api::ServerFrame::Message(_)),
        "{frame:?}"
    );
}

#[tokio::test]
async fn the_server_does_not_start_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let tls = pki().write_to(dir.path());
    let base = |extra: &[String]| {
        let mut args: Vec<String> = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--basic-credentials",
            "--key-file",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(dir.path().join("ds.key").display().to_string());
        args.push("--sqlite".into());
        args.push(dir.path().join("ds.sqlite").display().to_string());
        args.extend_from_slice(extra);
        args
    };
    // No certificate and key; a certificate without its key; a key file
    // that is not a key.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "garbage").unwrap();
    for (extra, want) in [
        (vec![], "--tls-cert PEM is needed"),
        (tls[..2].to_vec(), "--tls-key PEM is needed"),
        (
            vec![
                tls[0].clone(),
                tls[1].clone(),
                "--tls-key".into(),
                garbage.display().to_string(),
            ],
            "TLS key",
        ),
    ] {
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(ds_binary())
                .args(base(&extra))
                .output(),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{want}: {err}");
        assert!(out.stdout.is_empty(), "it listened: {:?}", out.stdout);
    }
}

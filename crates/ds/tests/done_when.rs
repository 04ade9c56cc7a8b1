//! The issue's "done when": three clients with their signature keys in
//! SoftHSM enrol at the Authentication Service (its CA keys in the token,
//! over HTTPS on loopback), publish KeyPackages with their x509
//! credentials, form a group through the DS, exchange messages; one is
//! offline for several commits and catches up; commits race through two
//! DS processes on one PostgreSQL database; every member ends in the same
//! epoch with the same epoch_authenticator. The DS processes check the
//! credentials with the AS's validator (root and CRL fetched from the AS)
//! and serve TLS with a certificate the AS issued; the clients trust the
//! AS root for both.

mod common;

use std::sync::Arc;

use common::*;
use hsmls::{CommitOptions, CredentialValidator, Signer};
use hsmls_as::ca::CaProfile;
use hsmls_as::http::{DEFAULT_BODY_LIMIT, Server, tls_config};
use hsmls_as::{AuthService, Ca, ServiceConfig, SqliteStore};
use hsmls_credentials::client::AsClient;
use hsmls_credentials::csr::build_csr;
use hsmls_credentials::{FixedClock, X509CredentialValidator, x509_credential};
use hsmls_custody::pkcs11::{CONFIG_ENV, Pkcs11Config};
use hsmls_custody::{KeyCustody, KeyRef, KeySpec, Pkcs11Custody};
use hsmls_ds::api::GroupMode;

fn softhsm() -> Arc<Pkcs11Custody> {
    if std::env::var_os(CONFIG_ENV).is_none() {
        panic!("{CONFIG_ENV} is not set: run scripts/test.sh (it sets up the SoftHSM token)");
    }
    Arc::new(Pkcs11Custody::open(&Pkcs11Config::from_env().unwrap()).expect("the SoftHSM token"))
}

/// An AS on the token, serving HTTPS on loopback.
struct TestAs {
    service: Arc<AuthService<SqliteStore>>,
    server: Option<Server>,
    client: AsClient,
    url: String,
    keys: Vec<KeyRef>,
    _dir: tempfile::TempDir,
}

async fn start_as(token: &Arc<Pkcs11Custody>) -> TestAs {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("as.db")).await.unwrap();
    let t = now();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let ca = Ca::create(token.clone(), CaProfile::default(), t - 60).unwrap();
    let log = token.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
    let keys = vec![ca.root_key().clone(), ca.issuing_key().clone(), log.clone()];
    let tls_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let tls_cert = ca
        .issue_tls(
            &["localhost".into(), "127.0.0.1".into()],
            &tls_key,
            t - 60,
            86_400,
        )
        .unwrap();
    let tls = tls_config(
        vec![tls_cert, ca.issuing_der().to_vec()],
        tls_key.serialize_der(),
    )
    .unwrap();
    let client = AsClient::new(&url, ca.root_der()).unwrap();
    let clock = Arc::new(FixedClock::new(t));
    let service =
        Arc::new(AuthService::new(store, ca, log, ServiceConfig::new(&url), clock).unwrap());
    let server = Server::start(service.clone(), listener, tls, DEFAULT_BODY_LIMIT)
        .await
        .unwrap();
    TestAs {
        service,
        server: Some(server),
        client,
        url,
        keys,
        _dir: dir,
    }
}

/// A DER certificate or key as PEM.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The DS processes' TLS certificate, issued by the AS's CA for
/// `127.0.0.1`, written into `dir`; returns the `--tls-*` arguments.
fn ds_tls_from_the_as(as_: &TestAs, dir: &std::path::Path) -> Vec<String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ca = as_.service.ca();
    let leaf = ca
        .issue_tls(&["127.0.0.1".into()], &key, now() - 60, 86_400)
        .unwrap();
    let chain = pem("CERTIFICATE", &leaf) + &pem("CERTIFICATE", ca.issuing_der());
    std::fs::write(dir.join("ds-tls.pem"), chain).unwrap();
    std::fs::write(dir.join("ds-tls.key"), key.serialize_pem()).unwrap();
    vec![
        "--tls-cert".into(),
        dir.join("ds-tls.pem").display().to_string(),
        "--tls-key".into(),
        dir.join("ds-tls.key").display().to_string(),
    ]
}

/// Enrols `name`: a signature key generated in the token, a CSR signed
/// there, a one-time token from the operator, the chain from the AS.
async fn enrol(as_: &TestAs, token: &Arc<Pkcs11Custody>, name: &str) -> Signer {
    let identity = format!("im:{name}@hsmls.test");
    let key = token.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
    let csr = build_csr(token.clone() as Arc<dyn KeyCustody>, &key, &identity).unwrap();
    let one_time = as_.service.issue_token(&identity).await.unwrap();
    let chain = as_.client.enrol(&identity, &one_time, &csr).await.unwrap();
    Signer::new(
        token.clone() as Arc<dyn KeyCustody>,
        key,
        x509_credential(&chain.ders().unwrap()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_enrolled_softhsm_clients_through_two_ds_processes() {
    let token = softhsm();
    let as_ = start_as(&token).await;
    let root = as_.service.ca().root_der().to_vec();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("as-root.der"), &root).unwrap();
    let db = PgDb::create().await;
    let credentials = vec![
        "--as-root".to_string(),
        dir.path().join("as-root.der").display().to_string(),
        "--as-url".to_string(),
        as_.url.clone(),
    ];
    let tls = ds_tls_from_the_as(&as_, dir.path());
    let (ds1, ds2) = two_processes(&db, &dir, &tls, &credentials).await;
    let root_pem = pem("CERTIFICATE", &root);

    // Every member validates with the AS root and its CRL.
    let validator = || async {
        let v = X509CredentialValidator::new(std::slice::from_ref(&root)).unwrap();
        v.set_crl(&as_.client.crl().await.unwrap()).unwrap();
        Arc::new(v) as Arc<dyn CredentialValidator>
    };
    let (sa, sb, sc) = (
        enrol(&as_, &token, "alice").await,
        enrol(&as_, &token, "bob").await,
        enrol(&as_, &token, "carol").await,
    );
    // Alice and Carol use the first DS process, Bob the second.
    let roots = root_pem.as_bytes();
    let mut alice = Client::with_signer(sa, "alice", &ds1.base, validator().await, roots).await;
    let mut bob = Client::with_signer(sb, "bob", &ds2.base, validator().await, roots).await;
    let mut carol = Client::with_signer(sc, "carol", &ds1.base, validator().await, roots).await;
    bob.publish(2, true).await;
    carol.publish(2, true).await;
    // A basic credential is refused by these DS processes.
    let stranger = hsmls_ds::DsClient::new(&ds1.base, roots).unwrap();
    let basic = Signer::generate(
        Arc::new(hsmls_custody::SoftwareCustody::new()),
        hsmls::wire::Credential::Basic(b"mallory".to_vec()),
    )
    .unwrap();
    let p = problem(stranger.authenticate(&basic).await);
    assert_eq!((p.status, p.kind()), (401, "authentication-failed"));

    // The group, formed through the DS: KeyPackages claimed by identity.
    let kb = alice
        .ds
        .claim_key_package(b"im:bob@hsmls.test")
        .await
        .unwrap();
    let kc = alice
        .ds
        .claim_key_package(b"im:carol@hsmls.test")
        .await
        .unwrap();
    alice.create_group(GroupMode::Blind).await;
    let mut opts = CommitOptions::new();
    opts.add_key_packages = vec![
        alice.validate(&kb.key_package),
        alice.validate(&kc.key_package),
    ];
    let out = alice.group().commit(opts, now()).unwrap();
    alice.send_commit(&out, vec![]).await.unwrap();
    assert_eq!(alice.sync().await, vec!["own-commit"]);
    assert_eq!(bob.sync().await, vec!["welcome"]);
    assert_eq!(carol.sync().await, vec!["welcome"]);

    // Messages through both processes, one order for all.
    alice.send_app("a1").await;
    bob.send_app("b1").await;
    carol.send_app("c1").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        let ev = c.sync().await;
        assert_eq!(ev.len(), 3, "{}: {ev:?}", c.name);
    }
    assert_agree(&mut [&mut alice, &mut bob, &mut carol]);

    // Carol goes offline for three commits and three messages.
    for round in 0..3 {
        let (committer, other) = if round % 2 == 0 {
            (&mut alice, &mut bob)
        } else {
            (&mut bob, &mut alice)
        };
        let out = committer.group().self_update(now()).unwrap();
        committer.send_commit(&out, vec![]).await.unwrap();
        committer.sync().await;
        other.sync().await;
        other
            .send_app(&format!("while carol is away {round}"))
            .await;
        committer.sync().await;
        other.sync().await;
    }
    let ev = carol.sync().await;
    assert_eq!(ev, vec!["commit", "app", "commit", "app", "commit", "app"]);
    assert_agree(&mut [&mut alice, &mut bob, &mut carol]);

    // Commit races through the two processes: one winner per epoch.
    for _ in 0..3 {
        let epoch = alice.group().epoch();
        let oa = alice.group().self_update(now()).unwrap();
        let ob = bob.group().self_update(now()).unwrap();
        let (ra, rb) = tokio::join!(alice.send_commit(&oa, vec![]), bob.send_commit(&ob, vec![]));
        assert_eq!(
            usize::from(ra.is_ok()) + usize::from(rb.is_ok()),
            1,
            "{ra:?} {rb:?}"
        );
        let p = problem(if ra.is_ok() { rb } else { ra });
        assert_eq!(
            (p.kind(), p.current_epoch),
            ("stale-commit", Some(epoch + 1))
        );
        let mut firsts = [alice.sync().await.remove(0), bob.sync().await.remove(0)];
        firsts.sort();
        assert_eq!(
            firsts,
            ["commit-lost".to_string(), "own-commit".to_string()]
        );
        assert_eq!(carol.sync().await, vec!["commit"]);
        assert_agree(&mut [&mut alice, &mut bob, &mut carol]);
        assert_eq!(alice.group().epoch(), epoch + 1);
    }

    // The token's objects of this test go away.
    for c in [&alice, &bob, &carol] {
        for b in c.bundles.values() {
            let _ = b.destroy(&c.signer);
        }
        token.destroy(&c.signer.signature_key).unwrap();
    }
    drop((ds1, ds2));
    let mut as_ = as_;
    if let Some(server) = as_.server.take() {
        server.shutdown().await.unwrap();
    }
    for key in &as_.keys {
        token.destroy(key).unwrap();
    }
}

#![allow(dead_code)]
//! A real Authentication Service for the DS tests that need one (its CA
//! and log keys in the given custody, HTTPS on loopback, SQLite), and
//! enrolment of clients at it. Included with `#[path]` by the tests that
//! use it, so the others do not compile it.

use std::sync::Arc;

use hsmls::Signer;
use hsmls_as::ca::CaProfile;
use hsmls_as::http::{DEFAULT_BODY_LIMIT, Server, tls_config};
use hsmls_as::{AuthService, Ca, ServiceConfig, SqliteStore};
use hsmls_credentials::client::AsClient;
use hsmls_credentials::csr::build_csr;
use hsmls_credentials::{FixedClock, X509CredentialValidator, x509_credential};
use hsmls_custody::pkcs11::{CONFIG_ENV, Pkcs11Config};
use hsmls_custody::{KeyCustody, KeyRef, KeySpec, Pkcs11Custody};

use super::common::now;

/// The SoftHSM test token (fails, never skips, without it).
pub fn softhsm() -> Arc<Pkcs11Custody> {
    if std::env::var_os(CONFIG_ENV).is_none() {
        panic!("{CONFIG_ENV} is not set: run scripts/test.sh (it sets up the SoftHSM token)");
    }
    Arc::new(Pkcs11Custody::open(&Pkcs11Config::from_env().unwrap()).expect("the SoftHSM token"))
}

/// An AS serving HTTPS on loopback.
pub struct TestAs {
    pub service: Arc<AuthService<SqliteStore>>,
    server: Option<Server>,
    pub client: AsClient,
    pub url: String,
    custody: Arc<dyn KeyCustody>,
    keys: Vec<KeyRef>,
    _dir: tempfile::TempDir,
}

/// An enrolled client: its signer (key in the AS test's custody, X.509
/// credential) and its certificate's serial.
pub struct Enrolled {
    pub signer: Signer,
    pub serial: String,
}

impl TestAs {
    /// An AS whose CA and log keys are generated in `custody`.
    pub async fn start(custody: Arc<dyn KeyCustody>) -> TestAs {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("as.db")).await.unwrap();
        let t = now();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let ca = Ca::create(custody.clone(), CaProfile::default(), t - 60).unwrap();
        let log = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
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
            custody,
            keys,
            _dir: dir,
        }
    }

    /// The AS root certificate (DER).
    pub fn root_der(&self) -> Vec<u8> {
        self.service.ca().root_der().to_vec()
    }

    /// The AS root certificate as PEM.
    pub fn root_pem(&self) -> String {
        pem("CERTIFICATE", &self.root_der())
    }

    /// A validator trusting the AS root, with the AS's current CRL.
    pub async fn validator(&self) -> Arc<X509CredentialValidator> {
        let v = X509CredentialValidator::new(std::slice::from_ref(&self.root_der())).unwrap();
        v.set_crl(&self.client.crl().await.unwrap()).unwrap();
        Arc::new(v)
    }

    /// Enrols `name` (identity `im:NAME@hsmls.test`): a signature key
    /// generated in `custody`, a CSR signed there, a one-time token from
    /// the operator, the chain from the AS.
    pub async fn enrol(&self, custody: &Arc<dyn KeyCustody>, name: &str) -> Enrolled {
        let identity = format!("im:{name}@hsmls.test");
        let key = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
        let csr = build_csr(custody.clone(), &key, &identity).unwrap();
        let one_time = self.service.issue_token(&identity).await.unwrap();
        let chain = self.client.enrol(&identity, &one_time, &csr).await.unwrap();
        Enrolled {
            signer: Signer::new(
                custody.clone(),
                key,
                x509_credential(&chain.ders().unwrap()),
            ),
            serial: chain.id,
        }
    }

    /// A TLS certificate for a DS at `127.0.0.1` issued by the AS's CA,
    /// written into `dir`; returns the `--tls-cert`/`--tls-key` arguments.
    pub fn ds_tls(&self, dir: &std::path::Path) -> Vec<String> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ca = self.service.ca();
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

    /// Stops the server and destroys the AS's keys.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.unwrap();
        }
        for key in &self.keys {
            self.custody.destroy(key).unwrap();
        }
    }
}

/// A DER certificate or key as PEM.
pub fn pem(label: &str, der: &[u8]) -> String {
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

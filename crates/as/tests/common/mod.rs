//! Shared by the AS tests: the SoftHSM test token, a fresh SQLite file or
//! PostgreSQL schema per test, an AS serving real TLS on loopback, and
//! clients whose signature keys are generated in the token.
#![allow(dead_code)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hsmls::Signer;
use hsmls::wire::Credential;
use hsmls_as::ca::CaProfile;
use hsmls_as::http::{DEFAULT_BODY_LIMIT, Server, tls_config};
use hsmls_as::{AuthService, Ca, PgStore, ServiceConfig, SqliteStore, Store};
use hsmls_credentials::client::AsClient;
use hsmls_credentials::csr::build_csr;
use hsmls_credentials::{FixedClock, X509CredentialValidator, x509_credential};
use hsmls_custody::pkcs11::{CONFIG_ENV, Pkcs11Config};
use hsmls_custody::{KeyCustody, KeyRef, KeySpec, Pkcs11Custody};

/// The environment variable naming the PostgreSQL test server (set by
/// `scripts/setup-postgres.sh --env`).
pub const PG_ENV: &str = "HSMLS_TEST_PG_URL";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The SoftHSM test token's configuration. Fails (never skips) when the
/// environment does not name one.
pub fn pkcs11_config() -> Pkcs11Config {
    if std::env::var_os(CONFIG_ENV).is_none() {
        panic!(
            "{CONFIG_ENV} is not set: this test needs the SoftHSM test token. \
             Run `bash scripts/test.sh` (it runs scripts/setup-hsm.sh)."
        );
    }
    Pkcs11Config::from_env().unwrap_or_else(|e| panic!("bad {CONFIG_ENV}: {e}"))
}

pub fn custody() -> Arc<Pkcs11Custody> {
    Arc::new(
        Pkcs11Custody::open(&pkcs11_config())
            .unwrap_or_else(|e| panic!("cannot open the SoftHSM test token: {e}")),
    )
}

/// A fresh SQLite database in a temporary folder.
pub struct SqliteDb {
    pub store: SqliteStore,
    _dir: tempfile::TempDir,
}

pub async fn sqlite() -> SqliteDb {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("as.db")).await.unwrap();
    SqliteDb { store, _dir: dir }
}

/// A fresh PostgreSQL schema, dropped by [`PgDb::drop_schema`] (and, if
/// the test panics first, by `Drop`).
pub struct PgDb {
    pub store: PgStore,
    url: String,
    schema: String,
    dropped: bool,
}

/// Connects to the test server and creates a fresh schema. Fails (never
/// skips) when the server is not configured or unreachable.
pub async fn postgres() -> PgDb {
    let url = std::env::var(PG_ENV).unwrap_or_else(|_| {
        panic!(
            "{PG_ENV} is not set: the PostgreSQL tests need the test server. \
             Run `bash scripts/test.sh` (it runs scripts/setup-postgres.sh)."
        )
    });
    let mut raw = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
    let schema = format!("t_{}", hex::encode(raw));
    let admin = sqlx::PgPool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {PG_ENV} unreachable: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let options = sqlx::postgres::PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let store = PgStore::connect_with(options).await.unwrap();
    PgDb {
        store,
        url,
        schema,
        dropped: false,
    }
}

impl PgDb {
    /// Another connection pool on the same schema (a second AS process).
    pub async fn second_store(&self) -> PgStore {
        let options = sqlx::postgres::PgConnectOptions::from_str(&self.url)
            .unwrap()
            .options([("search_path", self.schema.as_str())]);
        PgStore::connect_with(options).await.unwrap()
    }

    pub async fn drop_schema(mut self) {
        self.store.close().await;
        drop_schema(&self.url, &self.schema).await;
        self.dropped = true;
    }
}

async fn drop_schema(url: &str, schema: &str) {
    let admin = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(drop_schema(&url, &schema));
        })
        .join();
    }
}

/// One test at a time per test binary: SoftHSM refused a token-object
/// key generation ("The template specified for creating an object has
/// conflicting attributes" from C_GenerateKeyPair) when the SQLite and
/// PostgreSQL variants of a test generated token keys at the same moment
/// through separate custody instances (seen in `transparency.rs`).
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Runs `$test(store)` on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_stores {
    ($test:ident) => {
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let _one = $crate::common::one_at_a_time().await;
                let db = $crate::common::sqlite().await;
                super::$test(db.store.clone()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let _one = $crate::common::one_at_a_time().await;
                let db = $crate::common::postgres().await;
                super::$test(db.store.clone()).await;
                db.drop_schema().await;
            }
        }
    };
}

/// An AS on the test token, serving HTTPS on a loopback port.
pub struct TestAs<S: Store> {
    pub service: Arc<AuthService<S>>,
    pub server: Option<Server>,
    pub client: AsClient,
    pub url: String,
    pub custody: Arc<Pkcs11Custody>,
    pub clock: Arc<FixedClock>,
    pub keys: Vec<KeyRef>,
}

impl<S: Store> TestAs<S> {
    /// Generates the CA and log keys in the token and starts serving.
    pub async fn start(store: S) -> Self {
        let custody = custody();
        let now = now();
        let clock = Arc::new(FixedClock::new(now));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let ca = Ca::create(custody.clone(), CaProfile::default(), now - 60).unwrap();
        let log = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
        let keys = vec![ca.root_key().clone(), ca.issuing_key().clone(), log.clone()];
        let tls_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let tls_cert = ca
            .issue_tls(
                &["localhost".into(), "127.0.0.1".into()],
                &tls_key,
                now - 60,
                86_400,
            )
            .unwrap();
        let tls = tls_config(
            vec![tls_cert, ca.issuing_der().to_vec()],
            tls_key.serialize_der(),
        )
        .unwrap();
        let client = AsClient::new(&url, ca.root_der()).unwrap();
        let service = Arc::new(
            AuthService::new(store, ca, log, ServiceConfig::new(&url), clock.clone()).unwrap(),
        );
        let server = Server::start(service.clone(), listener, tls, DEFAULT_BODY_LIMIT)
            .await
            .unwrap();
        TestAs {
            service,
            server: Some(server),
            client,
            url,
            custody,
            clock,
            keys,
        }
    }

    pub fn root_der(&self) -> Vec<u8> {
        self.service.ca().root_der().to_vec()
    }

    /// A validator trusting this AS's root, holding its current CRL.
    pub async fn validator(&self) -> X509CredentialValidator {
        let v = X509CredentialValidator::new(&[self.root_der()]).unwrap();
        v.set_crl(&self.client.crl().await.unwrap()).unwrap();
        v
    }

    /// Stops the server and destroys the AS's keys in the token.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.unwrap();
        }
        for key in &self.keys {
            self.custody.destroy(key).unwrap();
        }
    }
}

/// A client: its custody on the token, its signature key there, its
/// certificate chain (leaf first) and the MLS signer with the x509
/// credential.
pub struct Client {
    pub identity: String,
    pub custody: Arc<Pkcs11Custody>,
    pub key: KeyRef,
    pub chain: Vec<Vec<u8>>,
    pub serial: String,
    pub signer: Signer,
}

impl Client {
    pub fn destroy(&self) {
        self.custody.destroy(&self.key).unwrap();
    }
}

pub fn identity(name: &str) -> String {
    format!("im:{name}@hsmls.test")
}

/// Generates a signature key in the token and a CSR for `identity`.
pub fn key_and_csr(custody: &Arc<Pkcs11Custody>, identity: &str) -> (KeyRef, Vec<u8>) {
    let key = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
    let csr = build_csr(custody.clone() as Arc<dyn KeyCustody>, &key, identity).unwrap();
    (key, csr)
}

/// Enrols `name` over HTTPS: operator token, key in the token, CSR, chain.
pub async fn enrol<S: Store>(as_: &TestAs<S>, name: &str) -> Client {
    let identity = identity(name);
    let custody = custody();
    let (key, csr) = key_and_csr(&custody, &identity);
    let token = as_.service.issue_token(&identity).await.unwrap();
    let chain = as_.client.enrol(&identity, &token, &csr).await.unwrap();
    let ders = chain.ders().unwrap();
    let signer = Signer::new(
        custody.clone() as Arc<dyn KeyCustody>,
        key.clone(),
        x509_credential(&ders),
    );
    Client {
        identity,
        custody,
        key,
        chain: ders,
        serial: chain.id,
        signer,
    }
}

pub fn credential(chain: &[Vec<u8>]) -> Credential {
    x509_credential(chain)
}

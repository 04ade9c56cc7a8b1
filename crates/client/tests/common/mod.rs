//! Shared by the client tests: an Authentication Service (hsmls-as over
//! TLS on loopback, its root, issuing and log keys in the SoftHSM test
//! token, SQLite in a temporary folder), a Delivery Service (hsmls-ds over
//! TLS on loopback, its certificate from a root of its own, SQLite,
//! checking X.509 credentials against the AS root and CRL), and clients (`ClientRuntime`) with their keys in the same token,
//! each with its own key objects and state file. Everything created in the
//! token is destroyed by [`Env::stop`].
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hsmls::CredentialValidator;
use hsmls_as::ca::CaProfile;
use hsmls_as::http::{DEFAULT_BODY_LIMIT, Server, tls_config};
use hsmls_as::{AuthService, Ca, ServiceConfig, SqliteStore as AsStore};
use hsmls_client::{
    AsConfig, ClientConfig, ClientEvent, ClientRuntime, CustodyConfig, DsConfig, GroupId,
};
use hsmls_credentials::{SystemClock, X509CredentialValidator};
use hsmls_custody::pkcs11::CONFIG_ENV;
use hsmls_custody::{KeyCustody, KeyRef, KeySpec, Pkcs11Custody};
use hsmls_ds::auth::{DsKey, ValidatorAuthenticator};
use hsmls_ds::fanout::Hub;
use hsmls_ds::store::{SqliteConfig, SqliteStore as DsStore};
use hsmls_ds::{Ds, DsConfig as DsServerConfig};
use tokio::sync::mpsc::Receiver;

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The PKCS#11 configuration file of the test token. Fails (never skips)
/// without one.
pub fn pkcs11_config_path() -> PathBuf {
    match std::env::var_os(CONFIG_ENV) {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "{CONFIG_ENV} is not set: these tests need the SoftHSM test token. Run \
             `eval \"$(bash scripts/setup-hsm.sh --env)\"; export SOFTHSM2_CONF {CONFIG_ENV}` \
             (scripts/test.sh does)."
        ),
    }
}

pub fn identity(name: &str) -> String {
    format!("im:{name}@hsmls.test")
}

/// One test at a time per test binary: SoftHSM refused a token-object
/// key generation ("conflicting attributes" from C_GenerateKeyPair) when
/// two tests of one process generated token keys at the same moment
/// through separate custody instances.
fn serial() -> Arc<tokio::sync::Mutex<()>> {
    static LOCK: std::sync::OnceLock<Arc<tokio::sync::Mutex<()>>> = std::sync::OnceLock::new();
    LOCK.get_or_init(|| Arc::new(tokio::sync::Mutex::new(())))
        .clone()
}

/// An AS and a DS on loopback, and a folder for the clients.
pub struct Env {
    _serial: tokio::sync::OwnedMutexGuard<()>,
    pub dir: tempfile::TempDir,
    pub as_service: Arc<AuthService<AsStore>>,
    as_server: Option<Server>,
    pub as_url: String,
    as_custody: Arc<Pkcs11Custody>,
    as_keys: Vec<KeyRef>,
    pub root_path: PathBuf,
    pub log_key_path: PathBuf,
    pub ds_url: String,
    /// The root of the DS's TLS certificate (PEM), which the clients'
    /// configurations name.
    pub ds_root_path: PathBuf,
    /// The DS's credential check (its CRL is set by [`Env::revoke`]).
    pub ds_validator: Arc<X509CredentialValidator>,
    ds_stop: Option<tokio::sync::oneshot::Sender<()>>,
    ds_task: Option<tokio::task::JoinHandle<()>>,
    pub clients: Vec<ClientRuntime>,
}

impl Env {
    /// Starts the AS (leaf certificates for `leaf_lifetime` seconds) and
    /// the DS.
    pub async fn start_with(leaf_lifetime: u64) -> Env {
        let serial = serial().lock_owned().await;
        // RUST_LOG=hsmls_client=debug shows what the clients do.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let custody = Arc::new(
            Pkcs11Custody::open(
                &hsmls_custody::Pkcs11Config::from_file(&pkcs11_config_path()).unwrap(),
            )
            .unwrap(),
        );
        // The AS: CA and log keys in the token, TLS on loopback.
        let t = now();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let as_url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let ca = Ca::create(custody.clone(), CaProfile::default(), t - 60).unwrap();
        let log = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
        let as_keys = vec![ca.root_key().clone(), ca.issuing_key().clone(), log.clone()];
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
        let root_der = ca.root_der().to_vec();
        let root_path = dir.path().join("as-root.der");
        std::fs::write(&root_path, &root_der).unwrap();
        let log_key_path = dir.path().join("as-log.pub.der");
        std::fs::write(
            &log_key_path,
            rcgen::PublicKeyData::subject_public_key_info(&hsmls_credentials::csr::P256PublicKey(
                log.public_key().as_bytes().to_vec(),
            )),
        )
        .unwrap();
        let store = AsStore::open(&dir.path().join("as.db")).await.unwrap();
        let mut sc = ServiceConfig::new(&as_url);
        sc.leaf_lifetime = leaf_lifetime;
        let as_service =
            Arc::new(AuthService::new(store, ca, log, sc, Arc::new(SystemClock)).unwrap());
        let as_server = Server::start(as_service.clone(), listener, tls, DEFAULT_BODY_LIMIT)
            .await
            .unwrap();

        // The DS: X.509 credentials checked against the AS root and CRL.
        let ds_validator = Arc::new(X509CredentialValidator::new(&[root_der]).unwrap());
        ds_validator
            .set_crl(&as_service.crl().await.unwrap())
            .unwrap();
        let store = DsStore::open(dir.path().join("ds.sqlite"), SqliteConfig::default())
            .await
            .unwrap();
        let mut dc = DsServerConfig::new("ds.test");
        dc.rate_limit.per_second = 100_000.0;
        dc.rate_limit.burst = 100_000.0;
        let ds = Arc::new(Ds::new(
            store,
            Hub::new(),
            DsKey::from_bytes([7; 32]),
            Arc::new(ValidatorAuthenticator::new(
                ds_validator.clone() as Arc<dyn CredentialValidator>,
                hsmls_client::x509_identity,
            )),
            dc,
        ));
        // The DS's TLS certificate, from a root of its own (not the AS's).
        let (ds_root_pem, chain_pem, key_pem) = ds_tls();
        let ds_tls =
            hsmls_ds::server::tls_server_config(chain_pem.as_bytes(), key_pem.as_bytes()).unwrap();
        let ds_root_path = dir.path().join("ds-root.pem");
        std::fs::write(&ds_root_path, ds_root_pem).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ds_url = format!("https://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let ds_task = tokio::spawn(async move {
            hsmls_ds::server::serve(ds, listener, ds_tls, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Env {
            _serial: serial,
            dir,
            as_service,
            as_server: Some(as_server),
            as_url,
            as_custody: custody,
            as_keys,
            root_path,
            log_key_path,
            ds_url,
            ds_root_path,
            ds_validator,
            ds_stop: Some(tx),
            ds_task: Some(ds_task),
            clients: Vec::new(),
        }
    }

    pub async fn start() -> Env {
        Self::start_with(7 * 86_400).await
    }

    /// A client's configuration: its state file in the test folder, its
    /// keys in the test token; background work every 100 ms, every
    /// scheduled task off (tests turn on what they show).
    pub fn config(&self, name: &str) -> ClientConfig {
        let mut c = ClientConfig::new(
            identity(name),
            self.dir.path().join(format!("{name}.sqlite")),
            CustodyConfig::Pkcs11 {
                config: pkcs11_config_path(),
            },
            AsConfig::new(
                self.as_url.clone(),
                self.root_path.clone(),
                self.log_key_path.clone(),
            ),
            DsConfig::new(self.ds_url.clone(), self.ds_root_path.clone()),
        );
        c.schedule.tick_millis = 100;
        c.schedule.poll_millis = 200;
        c.schedule.self_update_interval_secs = 0;
        c.schedule.crl_refresh_interval_secs = 0;
        c.schedule.key_package_check_interval_secs = 0;
        c.key_packages.batch_size = 3;
        c.key_packages.low_water_mark = 1;
        c
    }

    /// Opens a client of `config` and enrols it with a fresh one-time
    /// token (the operator's step).
    pub async fn enrol(&mut self, config: ClientConfig) -> ClientRuntime {
        let c = ClientRuntime::open(config.clone()).await.unwrap();
        let token = self.as_service.issue_token(&config.identity).await.unwrap();
        c.enrol(&token).await.unwrap();
        self.clients.push(c.clone());
        c
    }

    pub async fn client(&mut self, name: &str) -> ClientRuntime {
        let config = self.config(name);
        self.enrol(config).await
    }

    /// Registers a client opened again (for cleanup).
    pub fn track(&mut self, c: &ClientRuntime) {
        self.clients.push(c.clone());
    }

    /// The operator revokes the certificate of `c`; the DS takes the new
    /// CRL.
    pub async fn revoke(&self, c: &ClientRuntime) {
        let (_, serial, _) = c.certificate().unwrap();
        self.as_service.revoke(&serial).await.unwrap();
        self.ds_validator
            .set_crl(&self.as_service.crl().await.unwrap())
            .unwrap();
    }

    /// Destroys every client's keys and the AS's keys, stops the servers.
    pub async fn stop(mut self) {
        for c in std::mem::take(&mut self.clients) {
            c.destroy_keys().await.unwrap();
        }
        if let Some(s) = self.as_server.take() {
            s.shutdown().await.unwrap();
        }
        if let Some(s) = self.ds_stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.ds_task.take() {
            let _ = t.await;
        }
        for k in &self.as_keys {
            self.as_custody.destroy(k).unwrap();
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(t) = self.ds_task.take() {
            t.abort();
        }
    }
}

/// A root certificate, and a server certificate chain for `localhost`
/// and `127.0.0.1` the root issued with its key (rcgen, P-256), as PEM.
pub fn ds_tls() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    };
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.distinguished_name
        .push(DnType::CommonName, "hsmls client tests' DS root");
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root_cert = root.self_signed(&root_key).unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut leaf =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&key, &Issuer::new(root, root_key)).unwrap();
    let chain = format!("{}{}", leaf_cert.pem(), root_cert.pem());
    (root_cert.pem(), chain, key.serialize_pem())
}

/// Waits (at most 30 s) for an event `pred` accepts; returns it and the
/// events before it. Panics with what arrived otherwise.
pub async fn wait_for(
    rx: &mut Receiver<ClientEvent>,
    what: &str,
    pred: impl Fn(&ClientEvent) -> bool,
) -> (ClientEvent, Vec<ClientEvent>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(e)) if pred(&e) => return (e, seen),
            Ok(Some(e)) => seen.push(e),
            Ok(None) => panic!("{what}: the event channel closed; seen {seen:#?}"),
            Err(_) => panic!("{what}: not within 30 s; seen {seen:#?}"),
        }
    }
}

/// Every event already waiting.
pub fn drain(rx: &mut Receiver<ClientEvent>) -> Vec<ClientEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

/// Polls until the group reaches `epoch` at `c` (at most 30 s).
pub async fn wait_epoch(c: &ClientRuntime, g: &GroupId, epoch: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(e) = c.epoch(g).await
            && e >= epoch
        {
            assert_eq!(e, epoch, "{} went past epoch {epoch}", c.identity());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not reach epoch {epoch}",
            c.identity()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every client is in `epoch` with the same epoch authenticator.
pub async fn assert_agree(clients: &[&ClientRuntime], g: &GroupId, epoch: u64) {
    let first = clients[0].epoch_authenticator(g).await.unwrap();
    for c in clients {
        assert_eq!(c.epoch(g).await.unwrap(), epoch, "{} epoch", c.identity());
        assert_eq!(
            c.epoch_authenticator(g).await.unwrap(),
            first,
            "{} epoch_authenticator",
            c.identity()
        );
    }
}

/// The identities of a group's members at `c`, sorted.
pub async fn member_ids(c: &ClientRuntime, g: &GroupId) -> Vec<String> {
    let mut ids: Vec<String> = c
        .members(g)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.identity)
        .collect();
    ids.sort();
    ids
}

/// The private keys stored in the test token (token objects: signature
/// keys, CA and log keys; HPKE keys are session objects).
pub fn token_private_keys() -> usize {
    use cryptoki::object::{Attribute, ObjectClass};
    let custody = Pkcs11Custody::open(
        &hsmls_custody::Pkcs11Config::from_file(&pkcs11_config_path()).unwrap(),
    )
    .unwrap();
    custody
        .with_session(|s| {
            s.find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Token(true),
            ])
        })
        .unwrap()
        .unwrap()
        .len()
}

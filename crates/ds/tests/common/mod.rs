//! Shared by the DS tests: a DS on a real SQLite file (or PostgreSQL) on
//! loopback, and MLS clients that talk to it through [`DsClient`].
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hsmls::wire::{Credential, RoutingInfo};
use hsmls::{
    BasicCredentialValidator, CommitOptions, CommitOutput, CredentialValidator, Group, GroupConfig,
    JoinOptions, KeyPackageBundle, KeyPackageConfig, ProcessedMessage, Signer,
};
use hsmls_custody::{KeyCustody, SoftwareCustody};
use hsmls_ds::api::{Ack, CommitBundle, CreateGroup, GroupMode, GroupPosition, Problem};
use hsmls_ds::auth::{ClientAuthenticator, DsKey, ValidatorAuthenticator};
use hsmls_ds::fanout::Hub;
use hsmls_ds::server::serve;
use hsmls_ds::store::{DsStore, SqliteConfig, SqliteStore};
use hsmls_ds::{ClientError, Ds, DsClient, DsConfig};

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn validator() -> Arc<dyn CredentialValidator> {
    Arc::new(BasicCredentialValidator::default())
}

/// A DS served on loopback.
pub struct TestDs<S: DsStore> {
    pub base: String,
    pub ds: Arc<Ds<S>>,
    pub dir: Option<tempfile::TempDir>,
    task: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<S: DsStore> Drop for TestDs<S> {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.abort();
    }
}

/// The tests' TLS: a root CA and a server certificate for `localhost`
/// and `127.0.0.1` it issued (rcgen, P-256), as PEM.
pub struct TestPki {
    /// The root certificate clients trust.
    pub root_pem: String,
    /// The server's chain (leaf, root).
    pub chain_pem: String,
    /// The server's private key (PKCS#8).
    pub key_pem: String,
}

/// The tests' PKI, made once per test binary.
pub fn pki() -> &'static TestPki {
    static PKI: std::sync::OnceLock<TestPki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
        };
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.distinguished_name
            .push(DnType::CommonName, "hsmls DS test root");
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root_cert = root.self_signed(&root_key).unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf.signed_by(&key, &Issuer::new(root, root_key)).unwrap();
        TestPki {
            root_pem: root_cert.pem(),
            chain_pem: format!("{}{}", leaf_cert.pem(), root_cert.pem()),
            key_pem: key.serialize_pem(),
        }
    })
}

impl TestPki {
    /// The server's TLS configuration.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        hsmls_ds::server::tls_server_config(self.chain_pem.as_bytes(), self.key_pem.as_bytes())
            .unwrap()
    }

    /// Writes the chain and key into `dir` for a DS process; returns
    /// the `--tls-cert`/`--tls-key` arguments.
    pub fn write_to(&self, dir: &std::path::Path) -> Vec<String> {
        let cert = dir.join("tls.pem");
        let key = dir.join("tls.key");
        std::fs::write(&cert, &self.chain_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ]
    }
}

/// A DS client of `base` trusting the tests' root.
pub fn ds_client(base: &str) -> DsClient {
    DsClient::new(base, pki().root_pem.as_bytes()).unwrap()
}

/// Serves `store` over TLS on a free loopback port, with basic
/// credentials.
pub async fn serve_store<S: DsStore>(store: S, hub: Hub, config: DsConfig) -> TestDs<S> {
    serve_store_with(
        store,
        hub,
        config,
        Arc::new(ValidatorAuthenticator::basic()),
    )
    .await
}

/// Serves `store` over TLS on a free loopback port, authenticating
/// clients with `authenticator`.
pub async fn serve_store_with<S: DsStore>(
    store: S,
    hub: Hub,
    config: DsConfig,
    authenticator: Arc<dyn ClientAuthenticator>,
) -> TestDs<S> {
    let ds = Arc::new(Ds::new(
        store,
        hub,
        DsKey::from_bytes([42; 32]),
        authenticator,
        config,
    ));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let tls = pki().server_config();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let ds = ds.clone();
        tokio::spawn(async move {
            serve(ds, listener, tls, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        })
    };
    TestDs {
        base,
        ds,
        dir: None,
        task,
        stop: Some(tx),
    }
}

/// A DS on a fresh SQLite file.
pub async fn sqlite_ds(config: DsConfig) -> TestDs<SqliteStore> {
    sqlite_ds_with(config, Arc::new(ValidatorAuthenticator::basic())).await
}

/// A DS on a fresh SQLite file, authenticating with `authenticator`.
pub async fn sqlite_ds_with(
    config: DsConfig,
    authenticator: Arc<dyn ClientAuthenticator>,
) -> TestDs<SqliteStore> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("ds.sqlite"), SqliteConfig::default())
        .await
        .unwrap();
    let mut t = serve_store_with(store, Hub::new(), config, authenticator).await;
    t.dir = Some(dir);
    t
}

/// A test config: small retention is not needed, rate limit high.
pub fn config() -> DsConfig {
    let mut c = DsConfig::new("ds.test");
    c.rate_limit.per_second = 100_000.0;
    c.rate_limit.burst = 100_000.0;
    c
}

/// The problem of a refused request (panics otherwise).
pub fn problem<T: std::fmt::Debug>(r: Result<T, ClientError>) -> Problem {
    match r {
        Err(ClientError::Refused(p)) => p,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// An MLS client of the DS.
pub struct Client {
    pub name: String,
    /// The identity the DS knows it by (KeyPackages are claimed by it):
    /// the name for basic credentials; set it for X.509 ones.
    pub identity: Vec<u8>,
    pub signer: Signer,
    pub ds: DsClient,
    pub bundles: HashMap<Vec<u8>, KeyPackageBundle>,
    pub group: Option<Group>,
    /// Application messages received: (sender leaf, epoch, data).
    pub received: Vec<(u32, u64, Vec<u8>)>,
    /// The last sequence number handled per group.
    pub positions: HashMap<Vec<u8>, u64>,
    /// The configuration of the groups it creates or joins.
    pub group_config: GroupConfig,
    /// The credential validator of its groups.
    pub validator: Arc<dyn CredentialValidator>,
}

impl Client {
    pub async fn new(custody: Arc<dyn KeyCustody>, name: &str, base: &str) -> Client {
        let signer = Signer::generate(custody, Credential::Basic(name.as_bytes().to_vec()))
            .unwrap_or_else(|e| panic!("signature key for {name}: {e}"));
        Self::with_signer(signer, name, base, validator(), pki().root_pem.as_bytes()).await
    }

    /// A client with its own signer (e.g. an X.509 credential from the
    /// AS), the validator of its groups, and the roots (PEM) it trusts for
    /// the DS's TLS certificate.
    pub async fn with_signer(
        signer: Signer,
        name: &str,
        base: &str,
        validator: Arc<dyn CredentialValidator>,
        tls_roots: &[u8],
    ) -> Client {
        let ds = DsClient::new(base, tls_roots).unwrap();
        ds.authenticate(&signer).await.unwrap();
        Client {
            name: name.into(),
            identity: name.as_bytes().to_vec(),
            signer,
            ds,
            bundles: HashMap::new(),
            group: None,
            received: Vec::new(),
            positions: HashMap::new(),
            group_config: GroupConfig::default(),
            validator,
        }
    }

    /// The engine's client of this member (its signer, validator and
    /// group configuration).
    pub fn mls(&self) -> hsmls::Client {
        hsmls::Client::new(self.signer.clone(), self.validator.clone())
            .with_group_config(self.group_config.clone())
    }

    /// A published KeyPackage (as claimed from the DS), validated as this
    /// member validates it before adding its owner.
    pub fn validate(&self, key_package: &[u8]) -> hsmls::KeyPackage {
        self.mls()
            .validate_key_package(key_package, now())
            .unwrap_or_else(|e| panic!("{}: KeyPackage refused: {e}", self.name))
    }

    /// Generates and publishes `n` KeyPackages (and a last-resort one if
    /// asked).
    pub async fn publish(&mut self, n: usize, last_resort: bool) {
        let mut out = Vec::new();
        for i in 0..n + usize::from(last_resort) {
            let mut config = KeyPackageConfig::new(now() - 60, 86_400);
            if i == n {
                config = config.last_resort();
            }
            let b = self.mls().generate_key_package(&config).unwrap();
            out.push(b.to_bytes().unwrap());
            self.bundles.insert(b.key_package.reference().0.clone(), b);
        }
        self.ds.publish_key_packages(out).await.unwrap();
    }

    pub fn group(&mut self) -> &mut Group {
        self.group.as_mut().expect("in a group")
    }

    /// Creates a group and registers it with the DS.
    pub async fn create_group(&mut self, mode: GroupMode) -> Vec<u8> {
        if mode == GroupMode::Assisted {
            self.group_config.handshake_framing = hsmls::HandshakeFraming::Public;
        }
        let g = self
            .mls()
            .create_group(hsmls::random_group_id(), vec![], now())
            .unwrap();
        let id = g.group_id().to_vec();
        let group_info = (mode == GroupMode::Assisted).then(|| g.group_info().unwrap());
        self.ds
            .create_group(&CreateGroup {
                group_id: id.clone(),
                mode,
                epoch: 0,
                group_info,
                ratchet_tree: None,
            })
            .await
            .unwrap();
        self.group = Some(g);
        id
    }

    /// Sends a commit output as a bundle; on success the commit comes back
    /// through the queue and is merged then.
    pub async fn send_commit(
        &mut self,
        out: &CommitOutput,
        removed: Vec<Vec<u8>>,
    ) -> Result<hsmls_ds::api::Accepted, ClientError> {
        self.ds
            .send_commit(&CommitBundle {
                commit: out.commit.clone(),
                welcome: out.welcome.clone(),
                group_info: out.group_info.clone(),
                removed,
            })
            .await
    }

    /// Fetches the queue, joins from Welcomes, processes the group's
    /// messages in order, acknowledges everything. Returns the events.
    pub async fn sync(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        loop {
            let batch = self.ds.fetch(500).await.unwrap();
            if batch.welcomes.is_empty() && batch.messages.is_empty() {
                return events;
            }
            let mut ack = Ack::default();
            for w in batch.welcomes {
                self.join(&w.welcome);
                events.push("welcome".into());
                ack.welcomes.push(w.id);
            }
            for m in batch.messages {
                events.push(self.handle(&m.group_id, m.seq, &m.message));
                ack.messages.push(GroupPosition {
                    group_id: m.group_id.clone(),
                    seq: m.seq,
                });
            }
            self.ds.ack(&ack).await.unwrap();
        }
    }

    pub fn join(&mut self, welcome: &[u8]) {
        let info = RoutingInfo::parse(welcome).expect("a Welcome");
        let bundle = info
            .new_members
            .iter()
            .find_map(|r| self.bundles.get(&r.0))
            .expect("a Welcome for one of my KeyPackages");
        let g = self
            .mls()
            .join_from_welcome(bundle, welcome, JoinOptions::default())
            .unwrap();
        self.group = Some(g);
    }

    /// Processes one group message; returns a short event name.
    pub fn handle(&mut self, group_id: &[u8], seq: u64, message: &[u8]) -> String {
        let last = self.positions.entry(group_id.to_vec()).or_insert(0);
        assert!(
            seq > *last,
            "{}: seq {seq} after {last}: order broken",
            self.name
        );
        *last = seq;
        let Some(g) = self.group.as_mut() else {
            return "no-group".into();
        };
        if !g.is_active() {
            return "inactive".into();
        }
        match g.process_incoming(message, now()) {
            Ok(ProcessedMessage::ApplicationMessage {
                sender,
                epoch,
                data,
                ..
            }) => {
                self.received.push((sender.0, epoch, data));
                "app".into()
            }
            Ok(ProcessedMessage::StagedCommit(s)) => {
                let lost = s.lost_commit.is_some();
                g.merge_staged_commit(s).unwrap();
                if lost {
                    "commit-lost".into()
                } else {
                    "commit".into()
                }
            }
            Ok(ProcessedMessage::OwnCommit(_)) => "own-commit".into(),
            Ok(ProcessedMessage::OwnMessage { .. }) => "own".into(),
            Ok(ProcessedMessage::Proposal { .. }) => "proposal".into(),
            Ok(other) => format!("{other:?}"),
            Err(e) => panic!("{}: message {seq} refused: {e}", self.name),
        }
    }

    pub async fn send_app(&mut self, text: &str) -> u64 {
        let bytes = self.group().encrypt_application(text.as_bytes()).unwrap();
        self.ds.send_message(&bytes).await.unwrap().seq
    }
}

pub async fn three(base: &str) -> (Client, Client, Client) {
    let c = || Arc::new(SoftwareCustody::new());
    let mut alice = Client::new(c(), "alice", base).await;
    let mut bob = Client::new(c(), "bob", base).await;
    let mut carol = Client::new(c(), "carol", base).await;
    for x in [&mut alice, &mut bob, &mut carol] {
        x.publish(2, true).await;
    }
    (alice, bob, carol)
}

/// Alice claims Bob's and Carol's KeyPackages, creates the group and adds
/// both; everyone syncs.
pub async fn form(
    alice: &mut Client,
    bob: &mut Client,
    carol: &mut Client,
    mode: GroupMode,
) -> Vec<u8> {
    let kb = alice.ds.claim_key_package(&bob.identity).await.unwrap();
    let kc = alice.ds.claim_key_package(&carol.identity).await.unwrap();
    assert!(!kb.last_resort && !kc.last_resort);
    if mode == GroupMode::Assisted {
        for c in [&mut *bob, &mut *carol] {
            c.group_config.handshake_framing = hsmls::HandshakeFraming::Public;
        }
    }
    let gid = alice.create_group(mode).await;
    let mut opts = CommitOptions::new();
    opts.add_key_packages = vec![
        alice.validate(&kb.key_package),
        alice.validate(&kc.key_package),
    ];
    opts.group_info = mode == GroupMode::Assisted;
    let out = alice.group().commit(opts, now()).unwrap();
    let acc = alice.send_commit(&out, vec![]).await.unwrap();
    assert_eq!((acc.seq, acc.epoch), (1, 1));
    assert_eq!(alice.sync().await, vec!["own-commit"]);
    assert_eq!(bob.sync().await, vec!["welcome"]);
    assert_eq!(carol.sync().await, vec!["welcome"]);
    assert_agree(&mut [alice, bob, carol]);
    gid
}

/// Every client's epoch and epoch_authenticator agree.
pub fn assert_agree(clients: &mut [&mut Client]) {
    let first = clients[0].group();
    let (e, a) = (first.epoch(), first.epoch_authenticator().to_vec());
    for c in clients.iter_mut() {
        let name = c.name.clone();
        let g = c.group();
        assert_eq!(g.epoch(), e, "{name} epoch");
        assert_eq!(
            g.epoch_authenticator(),
            a.as_slice(),
            "{name} epoch_authenticator"
        );
    }
}

/// The `hsmls-ds` binary built with the tests.
pub fn ds_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hsmls-ds"))
}

/// A PostgreSQL database of its own for one test, dropped at the end.
/// Needs `HSMLS_TEST_PG_URL` (scripts/setup-postgres.sh --env): fails,
/// never skips, without it.
pub struct PgDb {
    pub url: String,
    name: String,
    admin: String,
}

fn pg_base() -> String {
    std::env::var("HSMLS_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "HSMLS_TEST_PG_URL is not set: this test needs PostgreSQL. Run \
             `eval \"$(bash scripts/setup-postgres.sh --env)\"; export HSMLS_TEST_PG_URL` \
             (scripts/test.sh does)."
        )
    })
}

impl PgDb {
    pub async fn create() -> PgDb {
        use sqlx::Connection;
        let base = pg_base();
        // The server's admin role (a throwaway test password, set by
        // scripts/setup-postgres.sh) creates the database for the test role.
        let (_, rest) = base.split_once('@').expect("a postgres URL with a user");
        let host = rest.split('/').next().unwrap();
        let admin = format!("postgres://postgres:postgres@{host}/postgres");
        let mut rnd = [0u8; 6];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut rnd);
        let name = format!("hsmls_ds_{}", hex::encode(rnd));
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name} OWNER hsmls"
        )))
        .execute(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
        let url = base
            .rsplit_once('/')
            .map(|(b, _)| format!("{b}/{name}"))
            .unwrap();
        PgDb { url, name, admin }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut c)
                    .await;
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}

/// A `hsmls-ds serve` child process.
pub struct DsProcess {
    pub child: tokio::process::Child,
    pub base: String,
}

/// Starts `hsmls-ds serve` on PostgreSQL `url` with the DS key file
/// `key_file`, the TLS arguments `tls` (see [`TestPki::write_to`]) and
/// the credential arguments `credentials`.
pub async fn spawn_ds(
    url: &str,
    key_file: &std::path::Path,
    tls: &[String],
    credentials: &[String],
) -> DsProcess {
    let mut child = tokio::process::Command::new(ds_binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--postgres",
            url,
            "--key-file",
        ])
        .arg(key_file)
        .args(["--ds-identity", "ds.test", "--rate", "100000"])
        .args(tls)
        .args(credentials)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start hsmls-ds");
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .expect("hsmls-ds started in time")
        .unwrap()
        .expect("hsmls-ds printed its address");
    let addr = line
        .strip_prefix("listening on ")
        .expect("listening on ADDR");
    DsProcess {
        child,
        base: format!("https://{addr}"),
    }
}

/// Two DS processes on one database, with one DS key and one TLS
/// certificate (`tls`).
pub async fn two_processes(
    db: &PgDb,
    dir: &tempfile::TempDir,
    tls: &[String],
    credentials: &[String],
) -> (DsProcess, DsProcess) {
    let key = dir.path().join("ds.key");
    let a = spawn_ds(&db.url, &key, tls, credentials).await;
    let b = spawn_ds(&db.url, &key, tls, credentials).await;
    (a, b)
}

impl Drop for DsProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The arguments for basic credentials.
pub fn basic() -> Vec<String> {
    vec!["--basic-credentials".into()]
}

//! [`ClientRuntime`]: one client's engine, custody, credential, state file,
//! AS and DS connections, and background work.
//!
//! Every operation runs under one lock of the client's state, so group
//! changes are serialised; token calls run on tokio's blocking threads.
//! The order of every change is: the engine changes the group, the group
//! is saved (sealed under the token key) with its cursor, then the DS is
//! acknowledged and the application told. A crash at any point leaves a
//! state the client resumes from: a message handled but not acknowledged
//! comes again and is recognised as a duplicate.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex as StdMutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hsmls::wire::{ContentType, LeafIndex, Proposal, Sender};
use hsmls::{
    CommitOptions, CredentialError, CredentialValidator, Group, GroupConfig, GroupError,
    HandshakeFraming, JoinOptions, KeyPackageBundle, KeyPackageConfig, LostCommit, Member,
    ProcessedMessage, Signer,
};
use hsmls_credentials::api::{Renew, b64};
use hsmls_credentials::client::AsClient;
use hsmls_credentials::tlog::{self, LogKey, LogMonitor};
use hsmls_credentials::{
    LogEntry, ValidationError, X509CredentialValidator, cert_hash, leaf_info, x509_credential,
};
use hsmls_custody::{KeyCustody, KeyRef, StateSealer};
use hsmls_ds::DsClient;
use hsmls_ds::api::{Ack, CommitBundle, CreateGroup, GroupPosition, QueueBatch, ServerFrame};
use hsmls_storage::{GroupStateStorage, SqliteStorage};
use tokio::sync::{Mutex, mpsc, watch};

use crate::config::{ClientConfig, CustodyConfig, der_of, pem_of, read_bounded};
use crate::error::ClientError;
use crate::event::{
    ClientEvent, CredentialProblem, ForkReason, GroupId, GroupMode, MemberInfo, OwnCredentialEvent,
};
use crate::meta::{GroupMeta, Meta, PublishedKeyPackage, StoredCredential};
use crate::wire;

/// The most messages one fetch asks for.
const FETCH_LIMIT: u32 = 200;
/// The most fetches one catch-up makes.
const MAX_CATCH_UP_FETCHES: usize = 50;
/// The capacity of the event channel.
const EVENT_CAPACITY: usize = 1024;
/// The largest certificate or log key file read.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClientError::Task(e.to_string()))
}

/// The group configuration of a mode in cipher suite `suite`: assisted
/// groups frame handshakes as PublicMessage (the DS follows them), blind
/// groups as PrivateMessage.
#[allow(
    clippy::field_reassign_with_default,
    reason = "the engine's options are built from their defaults"
)]
pub(crate) fn group_config(mode: GroupMode, suite: u16) -> GroupConfig {
    let mut c = GroupConfig::default();
    c.cipher_suite = hsmls::wire::CipherSuite(suite);
    c.handshake_framing = match mode {
        GroupMode::Assisted => HandshakeFraming::Public,
        _ => HandshakeFraming::Private,
    };
    c
}

/// This client's credential in use.
#[derive(Debug, Clone)]
struct Own {
    signer: Signer,
    stored: StoredCredential,
}

struct Entry {
    /// `None` when the saved state could not be loaded (to be rejoined).
    group: Option<Group>,
    meta: GroupMeta,
    /// This client's commit that lost its epoch, to commit again.
    lost: Option<LostCommit>,
    /// Cannot be processed and cannot be recovered.
    broken: bool,
}

#[derive(Default)]
struct State {
    groups: BTreeMap<Vec<u8>, Entry>,
    outbox: Vec<ClientEvent>,
    pending_ack: BTreeMap<Vec<u8>, u64>,
    pending_welcome_acks: Vec<u64>,
    forks: Vec<(Vec<u8>, ForkReason)>,
    update_soon: BTreeSet<Vec<u8>>,
    /// Groups whose members' credentials are to be checked again (a
    /// member's handshake was refused for its credential).
    check_credentials: BTreeSet<Vec<u8>>,
    commit_proposals: BTreeSet<Vec<u8>>,
    last_crl_refresh: u64,
    last_key_package_check: u64,
    last_renew_check: u64,
    own_revoked_reported: bool,
    reported_problems: HashSet<(Vec<u8>, String)>,
    /// Messages and Welcomes handled so far (a fetch loop stops when a
    /// batch brings nothing new).
    handled: u64,
}

/// What one message did, found on a blocking thread.
enum Outcome {
    App {
        sender: String,
        epoch: u64,
        data: Vec<u8>,
    },
    Proposal,
    Commit {
        by: Option<String>,
        added: Vec<String>,
        removed: Vec<String>,
        updated: Vec<String>,
        self_removed: bool,
        epoch: u64,
        epoch_authenticator: Vec<u8>,
        lost: Option<Box<LostCommit>>,
    },
    Skipped(String),
    Fork(ForkReason),
    /// A proposal or path-less commit of a member whose current credential
    /// no longer validates (`GroupError::SenderCredential`).
    SenderRefused {
        member: String,
        problem: CredentialProblem,
        commit: bool,
    },
}

/// What a credential check's typed error means for the application.
fn problem_of_validation(e: &ValidationError) -> CredentialProblem {
    match e {
        ValidationError::Revoked => CredentialProblem::Revoked,
        ValidationError::Expired => CredentialProblem::Expired,
        other => CredentialProblem::Refused(other.to_string()),
    }
}

/// The problem an engine credential error names: the X.509 validator's
/// own reason, kept by the engine (`CredentialError::Rejected`).
fn problem_of(e: &CredentialError) -> CredentialProblem {
    match e {
        CredentialError::Rejected(v) => match v.downcast_ref::<ValidationError>() {
            Some(v) => problem_of_validation(v),
            None => CredentialProblem::Refused(v.to_string()),
        },
        other => CredentialProblem::Refused(other.to_string()),
    }
}

pub(crate) struct Inner {
    config: ClientConfig,
    custody: Arc<dyn KeyCustody>,
    sealer: Arc<dyn StateSealer>,
    storage: SqliteStorage,
    meta: Meta,
    validator: Arc<X509CredentialValidator>,
    monitor: Arc<LogMonitor>,
    as_client: AsClient,
    ds: DsClient,
    own: RwLock<Option<Own>>,
    state: Mutex<State>,
    events: StdMutex<Option<mpsc::Sender<ClientEvent>>>,
    tasks: StdMutex<Vec<tokio::task::JoinHandle<()>>>,
    stop: watch::Sender<bool>,
}

/// An MLS client at work: its keys in custody (a PKCS#11 token), its
/// AS-issued credential, its KeyPackages on the Delivery Service, its
/// groups saved in its state file, and the background work that keeps
/// all of them current (see the crate documentation).
///
/// Cloning gives another handle on the same client.
#[derive(Clone)]
pub struct ClientRuntime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ClientRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRuntime")
            .field("identity", &self.inner.config.identity)
            .finish_non_exhaustive()
    }
}

fn identities(members: &[Member]) -> Vec<String> {
    members
        .iter()
        .map(|m| wire::identity_of(&m.credential))
        .collect()
}

fn member_info(m: &Member) -> MemberInfo {
    MemberInfo {
        leaf: m.index.0,
        identity: wire::identity_of(&m.credential),
        signature_key: m.signature_key.0.clone(),
        encryption_key: m.encryption_key.0.clone(),
        serial: wire::serial_of(&m.credential),
    }
}

/// Members added, removed and updated (a new leaf key under the same
/// signature key at the same leaf, e.g. a self-update or a resync by
/// external commit) between two member lists.
fn diff(before: &[Member], after: &[Member]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let same = |a: &Member, b: &Member| a.index == b.index && a.signature_key == b.signature_key;
    let added = after
        .iter()
        .filter(|a| !before.iter().any(|b| same(a, b)))
        .map(|m| wire::identity_of(&m.credential))
        .collect();
    let removed = before
        .iter()
        .filter(|b| !after.iter().any(|a| same(a, b)))
        .map(|m| wire::identity_of(&m.credential))
        .collect();
    let updated = after
        .iter()
        .filter(|a| {
            before
                .iter()
                .any(|b| same(a, b) && a.encryption_key != b.encryption_key)
        })
        .map(|m| wire::identity_of(&m.credential))
        .collect();
    (added, removed, updated)
}

fn options_empty(o: &CommitOptions, g: &Group) -> bool {
    o.add_key_packages.is_empty()
        && o.remove_leaves.is_empty()
        && o.psks.is_empty()
        && o.group_context_extensions.is_none()
        && o.reinit.is_none()
        && !o.force_path
        && (!o.include_pending || g.pending_proposals().is_empty())
}

/// What processing one message did (runs on a blocking thread).
fn process_one(g: &mut Group, bytes: &[u8], now: u64) -> Outcome {
    let framing = wire::framing(bytes);
    let is_commit = matches!(framing, Some((_, _, ContentType::Commit)));
    let before = if is_commit { g.members() } else { Vec::new() };
    match g.process_incoming(bytes, now) {
        Ok(ProcessedMessage::ApplicationMessage {
            sender,
            epoch,
            data,
            ..
        }) => Outcome::App {
            sender: g
                .member(sender)
                .map(|m| wire::identity_of(&m.credential))
                .unwrap_or_default(),
            epoch,
            data,
        },
        Ok(ProcessedMessage::Proposal { .. }) => Outcome::Proposal,
        Ok(ProcessedMessage::StagedCommit(staged)) => {
            let by = match staged.sender {
                Sender::Member(i) => before
                    .iter()
                    .find(|m| m.index == i)
                    .map(|m| wire::identity_of(&m.credential)),
                _ => None,
            };
            let mut updated: Vec<String> = identities(&staged.updates);
            if staged.has_path
                && let (Some(by), Sender::Member(_)) = (&by, staged.sender)
                && !updated.contains(by)
            {
                updated.push(by.clone());
            }
            let self_removed = staged.self_removed;
            let lost = staged.lost_commit.clone().map(Box::new);
            if let Err(e) = g.merge_staged_commit(staged) {
                return Outcome::Fork(ForkReason::UnprocessableCommit(e.to_string()));
            }
            let after = if g.is_active() {
                g.members()
            } else {
                Vec::new()
            };
            // A removed member is told it was removed, not who else was.
            let (added, removed) = if self_removed {
                updated.clear();
                (Vec::new(), Vec::new())
            } else {
                let (added, removed, changed) = diff(&before, &after);
                for m in changed {
                    if !updated.contains(&m) {
                        updated.push(m);
                    }
                }
                (added, removed)
            };
            Outcome::Commit {
                by,
                added,
                removed,
                updated,
                self_removed,
                epoch: g.epoch(),
                epoch_authenticator: g.epoch_authenticator().to_vec(),
                lost,
            }
        }
        Ok(ProcessedMessage::OwnCommit(own)) => Outcome::Commit {
            by: Some(wire::identity_of(&g.signer().credential)),
            added: identities(&own.adds),
            removed: identities(&own.removes),
            updated: Vec::new(),
            self_removed: false,
            epoch: g.epoch(),
            epoch_authenticator: g.epoch_authenticator().to_vec(),
            lost: None,
        },
        Ok(ProcessedMessage::OwnMessage { .. }) => Outcome::Skipped("own message".into()),
        Ok(other) => Outcome::Skipped(format!("{other:?}")),
        // The sender's credential no longer validates (revoked, expired):
        // its proposal or path-less commit is refused, by the error's type.
        Err(GroupError::SenderCredential { sender, error }) => Outcome::SenderRefused {
            member: g
                .member(sender)
                .map(|m| wire::identity_of(&m.credential))
                .unwrap_or_default(),
            problem: problem_of(&error),
            commit: matches!(framing, Some((_, _, ContentType::Commit))),
        },
        Err(e) => {
            let current = g.epoch();
            match framing {
                None => Outcome::Skipped(format!("malformed: {e}")),
                Some(_) if !g.is_active() => Outcome::Skipped("removed".into()),
                // A message of a past epoch: a duplicate of one handled
                // (its key is used), or too late to decrypt.
                Some((_, epoch, _)) if epoch < current => {
                    Outcome::Skipped(format!("past epoch {epoch}: {e}"))
                }
                Some((_, epoch, _)) if epoch > current => {
                    Outcome::Fork(ForkReason::MissedCommits {
                        local_epoch: current,
                        message_epoch: epoch,
                    })
                }
                // The DS accepted this commit for the current epoch and it
                // does not process: the group forked here.
                Some((_, _, ContentType::Commit)) => {
                    Outcome::Fork(ForkReason::UnprocessableCommit(e.to_string()))
                }
                Some(_) => Outcome::Skipped(format!("refused: {e}")),
            }
        }
    }
}

impl ClientRuntime {
    /// Opens the client of `config`: its custody (the PKCS#11 token of the
    /// configuration, or software), its state-sealing key, its state file,
    /// its credential and groups as saved. Does not touch the network.
    pub async fn open(config: ClientConfig) -> Result<Self, ClientError> {
        let (custody, sealer): (Arc<dyn KeyCustody>, Arc<dyn StateSealer>) = match &config.custody {
            #[cfg(feature = "pkcs11")]
            CustodyConfig::Pkcs11 { config: path } => {
                let path = path.clone();
                blocking(move || -> Result<_, ClientError> {
                    let c = hsmls_custody::Pkcs11Config::from_file(&path)?;
                    // Each key to its token (the HPKE token of a split configuration,
                    // `hpke_token`); X25519 HPKE keys to software (sealed under the
                    // state key) only with hpke_keys = "token-else-software".
                    let (custody, sealer) = hsmls_custody::ConfiguredCustody::open_sealed(&c)?;
                    Ok((custody.custody(), Arc::new(sealer) as Arc<dyn StateSealer>))
                })
                .await??
            }
            #[cfg(not(feature = "pkcs11"))]
            CustodyConfig::Pkcs11 { .. } => {
                return Err(ClientError::Config(
                    "custody kind pkcs11 needs the pkcs11 feature of hsmls-client".into(),
                ));
            }
            CustodyConfig::Software => (
                Arc::new(hsmls_custody::SoftwareCustody::new()),
                Arc::new(hsmls_custody::SoftwareSealer::generate()),
            ),
        };
        Self::open_with(config, custody, sealer).await
    }

    /// Opens the client with a custody backend and sealer of the caller's
    /// (the configuration's `custody` is not used).
    pub async fn open_with(
        config: ClientConfig,
        custody: Arc<dyn KeyCustody>,
        sealer: Arc<dyn StateSealer>,
    ) -> Result<Self, ClientError> {
        config.check()?;
        check_suite_keys(config.cipher_suite, custody.as_ref())?;
        let a = &config.authentication_service;
        let root_der =
            der_of(&read_bounded(&a.root_certificate, MAX_KEY_FILE)?).ok_or_else(|| {
                ClientError::Config(format!("{}: not PEM or DER", a.root_certificate.display()))
            })?;
        let log_spki =
            der_of(&read_bounded(&a.log_public_key, MAX_KEY_FILE)?).ok_or_else(|| {
                ClientError::Config(format!("{}: not PEM or DER", a.log_public_key.display()))
            })?;
        let log_point = {
            use p256::pkcs8::DecodePublicKey;
            p256::PublicKey::from_public_key_der(&log_spki)
                .map_err(|_| {
                    ClientError::Config(format!(
                        "{}: not a P-256 public key",
                        a.log_public_key.display()
                    ))
                })?
                .to_sec1_bytes()
                .to_vec()
        };
        let log_key = LogKey::new(&a.log_origin, &log_point)?;
        let validator = Arc::new(X509CredentialValidator::new(std::slice::from_ref(
            &root_der,
        ))?);
        let monitor = Arc::new(LogMonitor::new(log_key));
        let as_client = AsClient::new(&a.url, &root_der)?;
        let d = &config.delivery_service;
        let ds_roots =
            pem_of(&read_bounded(&d.root_certificate, MAX_KEY_FILE)?).ok_or_else(|| {
                ClientError::Config(format!("{}: empty", d.root_certificate.display()))
            })?;
        let ds = DsClient::new(&d.url, &ds_roots).map_err(|e| {
            ClientError::Config(format!(
                "delivery_service ({}, {}): {e}",
                d.url,
                d.root_certificate.display()
            ))
        })?;
        let storage = SqliteStorage::open(&config.state_path).await?;
        let meta = Meta::open(&config.state_path).await?;

        // What was saved: the CRL, the checkpoint, the credential.
        if let Some(crl) = meta.value("crl").await?
            && let Err(e) = validator.set_crl(&crl)
        {
            tracing::warn!(error = %e, "the saved CRL is refused; fetching a new one");
        }
        if let Some(note) = meta.value("checkpoint").await? {
            let note = String::from_utf8_lossy(&note).into_owned();
            if let Err(e) = monitor.update(&note, &[]) {
                tracing::warn!(error = %e, "the saved log checkpoint is refused");
            }
        }
        let own = match meta.credential().await? {
            Some(stored) => {
                if stored.identity != config.identity {
                    return Err(ClientError::Config(format!(
                        "the state file belongs to {}, not {}",
                        stored.identity, config.identity
                    )));
                }
                let (c, uri) = (custody.clone(), stored.signature_key_uri.clone());
                let key = blocking(move || c.find(&uri)).await??;
                let signer = Signer::new(custody.clone(), key, x509_credential(&stored.chain));
                Some(Own { signer, stored })
            }
            None => None,
        };
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            config,
            custody,
            sealer,
            storage,
            meta,
            validator,
            monitor,
            as_client,
            ds,
            own: RwLock::new(own),
            state: Mutex::new(State::default()),
            events: StdMutex::new(None),
            tasks: StdMutex::new(Vec::new()),
            stop,
        });
        inner.load_groups().await?;
        Ok(ClientRuntime { inner })
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// This client's identity.
    pub fn identity(&self) -> &str {
        &self.inner.config.identity
    }

    /// The custody backend holding this client's keys.
    pub fn custody(&self) -> &Arc<dyn KeyCustody> {
        &self.inner.custody
    }

    /// The credential validator this client checks others with (the AS
    /// root, the CRL it last fetched).
    pub fn validator(&self) -> &Arc<X509CredentialValidator> {
        &self.inner.validator
    }

    /// The transparency-log monitor (the last checkpoint seen).
    pub fn log_monitor(&self) -> &Arc<LogMonitor> {
        &self.inner.monitor
    }

    /// Whether the client has a credential.
    pub fn is_enrolled(&self) -> bool {
        self.inner.own().is_some()
    }

    /// This client's certificate chain (DER, leaf first), serial (hex) and
    /// notAfter, once enrolled.
    pub fn certificate(&self) -> Option<(Vec<Vec<u8>>, String, u64)> {
        self.inner
            .own()
            .map(|o| (o.stored.chain, o.stored.serial, o.stored.not_after))
    }

    /// The custody URI of this client's signature key, once enrolled.
    pub fn signature_key_uri(&self) -> Option<String> {
        self.inner
            .own()
            .map(|o| o.signer.signature_key.uri().to_owned())
    }

    /// The events of this client (one receiver; a second call replaces
    /// the first). Events are sent after their effect is saved; when the
    /// channel is full the client waits for the application to read.
    pub fn events(&self) -> mpsc::Receiver<ClientEvent> {
        let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
        *self.inner.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// Enrols with the Authentication Service: generates the signature
    /// key in custody, sends a certificate request signed by it with the
    /// one-time `token` the AS operator issued, checks the certificate
    /// (chain to the AS root, CRL, identity, key, and its inclusion in the
    /// transparency log), saves it, and publishes KeyPackages.
    pub async fn enrol(&self, token: &str) -> Result<(), ClientError> {
        let inner = &self.inner;
        if let Some(o) = inner.own() {
            return Err(ClientError::AlreadyEnrolled(o.stored.identity));
        }
        let spec = suite_provider(inner.config.cipher_suite)?.signature_key_spec();
        let c = inner.custody.clone();
        let key = blocking(move || c.generate(spec)).await??;
        let result = inner.enrol_with_key(&key, token).await;
        if result.is_err() {
            let c = inner.custody.clone();
            let k = key.clone();
            let _ = blocking(move || c.destroy(&k)).await;
        }
        result?;
        let mut st = inner.state.lock().await;
        let r = inner.replenish(&mut st).await.map(drop);
        self.finish(st).await;
        r
    }

    /// Fetches the CRL and the log checkpoint now (the maintenance task
    /// does it on its schedule), then checks every group's members again:
    /// members whose credential was revoked are removed (by whichever
    /// member sees it first; a race between two is a commit race), other
    /// credential problems are reported.
    pub async fn refresh_crl(&self) -> Result<(), ClientError> {
        let mut st = self.inner.state.lock().await;
        let r = self.inner.refresh_crl(&mut st).await;
        self.finish(st).await;
        r
    }

    /// Renews the certificate now if it expires within the configured
    /// margin; returns whether it was renewed.
    pub async fn renew_if_due(&self) -> Result<bool, ClientError> {
        let mut st = self.inner.state.lock().await;
        let r = self.inner.renew_if_due(&mut st).await;
        self.finish(st).await;
        r
    }

    /// Checks the KeyPackage counts on the DS and publishes what is
    /// missing: a top-up below the low-water mark, and a new last-resort
    /// KeyPackage when the old one was used (whose keys are then
    /// destroyed). Returns how many were published.
    pub async fn replenish_key_packages(&self) -> Result<usize, ClientError> {
        let mut st = self.inner.state.lock().await;
        let r = self.inner.replenish(&mut st).await;
        self.finish(st).await;
        r
    }

    /// Fetches and handles everything waiting on the DS (Welcomes, group
    /// messages), acknowledging what is saved. The push task does this
    /// continuously once [`ClientRuntime::start`] ran.
    pub async fn sync(&self) -> Result<(), ClientError> {
        let mut st = self.inner.state.lock().await;
        let r = self.inner.fetch_all(&mut st, None).await;
        self.finish(st).await;
        r
    }

    /// Creates a group with this client as its only member and registers
    /// it with the DS in `mode`.
    pub async fn create_group(&self, mode: GroupMode) -> Result<GroupId, ClientError> {
        let mut st = self.inner.state.lock().await;
        let r = self.inner.create_group(&mut st, mode).await;
        self.finish(st).await;
        r
    }

    /// Adds the clients named by `identities`: claims one KeyPackage of
    /// each from the DS and commits the adds (one commit, with a Welcome).
    /// Returns the new epoch.
    pub async fn add_members(
        &self,
        group: &GroupId,
        identities: &[&str],
    ) -> Result<u64, ClientError> {
        let mut st = self.inner.state.lock().await;
        let r = self
            .inner
            .add_members(&mut st, group.as_bytes(), identities)
            .await;
        self.finish(st).await;
        r
    }

    /// Removes the members named by `identities` in one commit. Returns the
    /// new epoch.
    pub async fn remove_members(
        &self,
        group: &GroupId,
        identities: &[&str],
    ) -> Result<u64, ClientError> {
        let mut st = self.inner.state.lock().await;
        let r = self
            .inner
            .remove_members(&mut st, group.as_bytes(), identities)
            .await;
        self.finish(st).await;
        r
    }

    /// Commits a self-update (fresh leaf and path keys: post-compromise
    /// security). Returns the new epoch.
    pub async fn self_update(&self, group: &GroupId) -> Result<u64, ClientError> {
        let mut st = self.inner.state.lock().await;
        let mut o = CommitOptions::new();
        o.force_path = true;
        let r = self
            .inner
            .commit_loop(&mut st, group.as_bytes(), o)
            .await
            .and_then(|e| e.ok_or(ClientError::NothingToCommit));
        self.finish(st).await;
        r
    }

    /// Commits the proposals pending in the group (e.g. a member's leave).
    /// Returns the new epoch, or `None` if nothing was pending.
    pub async fn commit_pending(&self, group: &GroupId) -> Result<Option<u64>, ClientError> {
        let mut st = self.inner.state.lock().await;
        let r = self
            .inner
            .commit_loop(&mut st, group.as_bytes(), CommitOptions::new())
            .await;
        self.finish(st).await;
        r
    }

    /// Asks to leave the group: sends a proposal removing this client,
    /// which another member commits (RFC 9420 §12.1.3); the
    /// [`ClientEvent::Removed`] event follows when it is committed.
    pub async fn leave(&self, group: &GroupId) -> Result<(), ClientError> {
        let mut st = self.inner.state.lock().await;
        let r = self.inner.leave(&mut st, group.as_bytes()).await;
        self.finish(st).await;
        r
    }

    /// Encrypts `data` for the group and sends it. Returns its sequence
    /// number in the group's order.
    pub async fn send(&self, group: &GroupId, data: &[u8]) -> Result<u64, ClientError> {
        let mut st = self.inner.state.lock().await;
        let r = self.inner.send(&mut st, group.as_bytes(), data).await;
        self.finish(st).await;
        r
    }

    /// Rejoins the group by external commit (assisted groups), e.g. when
    /// the application knows its state is bad.
    pub async fn rejoin(&self, group: &GroupId) -> Result<(), ClientError> {
        let mut st = self.inner.state.lock().await;
        let r = self
            .inner
            .rejoin(
                &mut st,
                group.as_bytes(),
                ForkReason::StateLost("asked by the application".into()),
            )
            .await;
        self.finish(st).await;
        r
    }

    /// The groups this client is in.
    pub async fn groups(&self) -> Vec<GroupId> {
        let st = self.inner.state.lock().await;
        st.groups.keys().cloned().map(GroupId).collect()
    }

    /// The members of a group.
    pub async fn members(&self, group: &GroupId) -> Result<Vec<MemberInfo>, ClientError> {
        self.with_group(group, |g| g.members().iter().map(member_info).collect())
            .await
    }

    /// The group's epoch.
    pub async fn epoch(&self, group: &GroupId) -> Result<u64, ClientError> {
        self.with_group(group, |g| g.epoch()).await
    }

    /// The group's current `epoch_authenticator` (RFC 9420 §8.7).
    pub async fn epoch_authenticator(&self, group: &GroupId) -> Result<Vec<u8>, ClientError> {
        self.with_group(group, |g| g.epoch_authenticator().to_vec())
            .await
    }

    /// The group's safety number ([`crate::safety_number`] of its epoch
    /// authenticator), for reading aloud out of band.
    pub async fn safety_number(&self, group: &GroupId) -> Result<String, ClientError> {
        Ok(crate::safety_number(
            &self.epoch_authenticator(group).await?,
        ))
    }

    /// The group's mode on the DS.
    pub async fn mode(&self, group: &GroupId) -> Result<GroupMode, ClientError> {
        let st = self.inner.state.lock().await;
        st.groups
            .get(group.as_bytes())
            .map(|e| e.meta.mode)
            .ok_or_else(|| ClientError::UnknownGroup(group.to_string()))
    }

    /// The last sequence number handled in the group (its cursor).
    pub async fn cursor(&self, group: &GroupId) -> Result<u64, ClientError> {
        let st = self.inner.state.lock().await;
        st.groups
            .get(group.as_bytes())
            .map(|e| e.meta.last_seq)
            .ok_or_else(|| ClientError::UnknownGroup(group.to_string()))
    }

    /// The KeyPackageRef and the custody URIs (init key, leaf key) of the
    /// current last-resort KeyPackage.
    pub async fn last_resort_key_package(
        &self,
    ) -> Result<Option<(Vec<u8>, String, String)>, ClientError> {
        let inner = &self.inner;
        let Some(own) = inner.own() else {
            return Ok(None);
        };
        let _st = inner.state.lock().await;
        let Some(lr) = inner
            .meta
            .key_packages()
            .await?
            .into_iter()
            .find(|k| k.last_resort)
        else {
            return Ok(None);
        };
        let Some(bundle) = inner.load_bundle(&own.signer, &lr.reference, false).await? else {
            return Ok(None);
        };
        Ok(Some((
            lr.reference,
            bundle.init_key.uri().to_owned(),
            bundle.encryption_key.uri().to_owned(),
        )))
    }

    async fn with_group<T>(
        &self,
        group: &GroupId,
        f: impl FnOnce(&Group) -> T,
    ) -> Result<T, ClientError> {
        let st = self.inner.state.lock().await;
        let e = st
            .groups
            .get(group.as_bytes())
            .ok_or_else(|| ClientError::UnknownGroup(group.to_string()))?;
        let g = e
            .group
            .as_ref()
            .ok_or_else(|| ClientError::Unrecoverable(group.to_string(), "state lost"))?;
        Ok(f(g))
    }

    /// Runs what the operation left to do (commits to rebuild, groups to
    /// rejoin, acknowledgements), releases the state, sends the events.
    async fn finish(&self, mut st: tokio::sync::MutexGuard<'_, State>) {
        self.inner.run_followups(&mut st).await;
        let events = std::mem::take(&mut st.outbox);
        drop(st);
        self.inner.emit(events).await;
    }

    /// Starts the background work: the DS connection (live push resuming
    /// from the saved cursors, fetch when push is down) and the
    /// maintenance (CRL and checkpoint refresh and revoked-member removal,
    /// certificate renewal, KeyPackage top-up, scheduled self-updates).
    /// Stop it with [`ClientRuntime::shutdown`].
    pub fn start(&self) {
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if !tasks.is_empty() {
            return;
        }
        self.inner.stop.send_replace(false);
        let me = self.clone();
        tasks.push(tokio::spawn(async move { me.push_task().await }));
        let me = self.clone();
        tasks.push(tokio::spawn(async move { me.maintenance_task().await }));
    }

    /// Stops the background work and waits for it (an operation in
    /// progress finishes first). The client can be dropped after this; a
    /// new one opened from the same configuration resumes.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let tasks: Vec<_> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Destroys every key this client holds in custody (signature key,
    /// KeyPackage keys, group leaf keys) and forgets its groups and
    /// KeyPackages in the state file. For tests and for retiring a
    /// device; the client is unusable afterwards.
    pub async fn destroy_keys(&self) -> Result<(), ClientError> {
        self.shutdown().await;
        let inner = &self.inner;
        let mut st = inner.state.lock().await;
        let mut keys: Vec<KeyRef> = Vec::new();
        for (gid, e) in std::mem::take(&mut st.groups) {
            if let Some(g) = &e.group
                && g.is_active()
            {
                keys.push(g.own_leaf_key().clone());
            }
            inner.storage.delete_group(&gid).await?;
            inner.meta.delete_group(&gid).await?;
        }
        if let Some(own) = inner.own() {
            for k in inner.meta.key_packages().await? {
                if let Some(b) = inner.load_bundle(&own.signer, &k.reference, true).await? {
                    keys.push(b.init_key);
                    keys.push(b.encryption_key);
                }
                inner.meta.delete_key_package(&k.reference).await?;
            }
            keys.push(own.signer.signature_key.clone());
        }
        let c = inner.custody.clone();
        blocking(move || {
            for k in keys {
                if let Err(e) = c.destroy(&k) {
                    tracing::debug!(error = %e, "key already gone");
                }
            }
        })
        .await?;
        Ok(())
    }

    // ----- background tasks -----

    async fn push_task(self) {
        let inner = self.inner.clone();
        let mut stop = inner.stop.subscribe();
        let mut backoff = inner.config.schedule.poll();
        loop {
            if *stop.borrow() {
                return;
            }
            if inner.own().is_none() {
                tokio::select! {
                    _ = tokio::time::sleep(inner.config.schedule.poll()) => continue,
                    _ = stop.changed() => return,
                }
            }
            // Catch up by fetching (offline time, Welcomes), then follow.
            if let Err(e) = self.sync().await {
                tracing::warn!(error = %e, "fetch failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
            let positions = inner.positions().await;
            let stream = inner
                .ds_call(|ds| {
                    let p = positions.clone();
                    async move { ds.push(p).await }
                })
                .await;
            let mut stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!(error = %e, "push unavailable; fetching");
                    tokio::select! {
                        _ = tokio::time::sleep(inner.config.schedule.poll()) => continue,
                        _ = stop.changed() => return,
                    }
                }
            };
            backoff = inner.config.schedule.poll();
            loop {
                let frame = tokio::select! {
                    f = stream.next() => f,
                    _ = stop.changed() => {
                        stream.close().await;
                        return;
                    }
                };
                let first = match frame {
                    Some(Ok(f)) => f,
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "push connection failed");
                        break;
                    }
                    None => break,
                };
                // Take what else is already there, then handle the lot.
                let mut batch = QueueBatch::default();
                let mut add = |f: ServerFrame| match f {
                    ServerFrame::Message(m) => batch.messages.push(m),
                    ServerFrame::Welcome(w) => batch.welcomes.push(w),
                    _ => {}
                };
                add(first);
                for _ in 0..FETCH_LIMIT {
                    match tokio::time::timeout(Duration::from_millis(1), stream.next()).await {
                        Ok(Some(Ok(f))) => add(f),
                        _ => break,
                    }
                }
                let mut st = inner.state.lock().await;
                let r = inner.handle_batch(&mut st, batch).await;
                self.finish(st).await;
                if let Err(e) = r {
                    // Not acknowledged: reconnect, and fetch them again.
                    tracing::warn!(error = %e, "handling pushed messages failed");
                    stream.close().await;
                    break;
                }
            }
            // The connection ended: fetch (top of the loop), reconnect.
        }
    }

    async fn maintenance_task(self) {
        let mut stop = self.inner.stop.subscribe();
        let mut tick = tokio::time::interval(self.inner.config.schedule.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            if self.inner.own().is_none() {
                continue;
            }
            let mut st = self.inner.state.lock().await;
            self.inner.maintain(&mut st).await;
            self.finish(st).await;
        }
    }
}

impl Inner {
    fn own(&self) -> Option<Own> {
        self.own.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn signer(&self) -> Result<Signer, ClientError> {
        self.own().map(|o| o.signer).ok_or(ClientError::NotEnrolled)
    }

    /// The engine's client of `signer`, validating with this client's
    /// X.509 validator, with the group configuration of `mode`.
    fn client_of(&self, signer: Signer, mode: GroupMode) -> hsmls::Client {
        hsmls::Client::new(
            signer,
            self.validator.clone() as Arc<dyn CredentialValidator>,
        )
        .with_group_config(group_config(mode, self.config.cipher_suite))
    }

    /// The engine's client of this client's current credential.
    fn mls_client(&self, mode: GroupMode) -> Result<hsmls::Client, ClientError> {
        Ok(self.client_of(self.signer()?, mode))
    }

    async fn emit(&self, events: Vec<ClientEvent>) {
        if events.is_empty() {
            return;
        }
        let tx = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(tx) = tx else {
            return;
        };
        for e in events {
            tracing::debug!(event = ?e, "event");
            if tx.send(e).await.is_err() {
                return;
            }
        }
    }

    async fn positions(&self) -> Vec<GroupPosition> {
        let st = self.state.lock().await;
        st.groups
            .iter()
            .filter(|(_, e)| e.meta.last_seq > 0)
            .map(|(g, e)| GroupPosition {
                group_id: g.clone(),
                seq: e.meta.last_seq,
            })
            .collect()
    }

    // ----- the DS -----

    async fn authenticate(&self) -> Result<(), ClientError> {
        let signer = self.signer()?;
        self.ds.authenticate(&signer).await?;
        Ok(())
    }

    /// Calls the DS with a session, opening (or renewing) it when needed.
    async fn ds_call<'a, T, Fut>(
        &'a self,
        f: impl Fn(&'a DsClient) -> Fut,
    ) -> Result<T, ClientError>
    where
        Fut: std::future::Future<Output = Result<T, hsmls_ds::ClientError>>,
    {
        let fresh = self
            .ds
            .session()
            .is_some_and(|s| s.expires_at > now().saturating_add(60));
        if !fresh {
            self.authenticate().await?;
        }
        match f(&self.ds).await {
            Err(hsmls_ds::ClientError::Refused(p)) if p.kind() == "unauthenticated" => {
                self.authenticate().await?;
                Ok(f(&self.ds).await?)
            }
            r => Ok(r?),
        }
    }

    /// Sends a commit bundle, again on transport failures (the DS accepts
    /// a retry of the same commit as the same).
    async fn send_bundle(
        &self,
        bundle: &CommitBundle,
    ) -> Result<hsmls_ds::api::Accepted, ClientError> {
        let mut wait = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            match self.ds_call(|ds| ds.send_commit(bundle)).await {
                Err(ClientError::DsTransport(t))
                    if attempt < self.config.groups.max_transport_retries =>
                {
                    tracing::info!(error = %t, "commit not sent; again");
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                r => return r,
            }
        }
    }

    async fn flush_acks(&self, st: &mut State) {
        if st.pending_ack.is_empty() && st.pending_welcome_acks.is_empty() {
            return;
        }
        let ack = Ack {
            messages: st
                .pending_ack
                .iter()
                .map(|(g, s)| GroupPosition {
                    group_id: g.clone(),
                    seq: *s,
                })
                .collect(),
            welcomes: st.pending_welcome_acks.clone(),
        };
        match self.ds_call(|ds| ds.ack(&ack)).await {
            Ok(()) => {
                st.pending_ack.clear();
                st.pending_welcome_acks.clear();
            }
            Err(e) => tracing::info!(error = %e, "acknowledgement not sent; later"),
        }
    }

    // ----- state -----

    async fn load_groups(&self) -> Result<(), ClientError> {
        let mut st = self.state.lock().await;
        for (gid, meta) in self.meta.groups().await? {
            let loaded = match self.storage.read_group(&gid).await {
                Ok(Some(saved)) => match self.mls_client(GroupMode::Blind) {
                    Ok(client) => {
                        let sealer = self.sealer.clone();
                        blocking(move || client.load_saved_group(sealer.as_ref(), &saved))
                            .await?
                            .map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                },
                Ok(None) => Err("no saved state".to_string()),
                Err(e) => Err(e.to_string()),
            };
            let group = match loaded {
                Ok(g) => Some(g),
                Err(reason) => {
                    tracing::warn!(group = %hex::encode(&gid), reason, "group state lost");
                    st.forks.push((gid.clone(), ForkReason::StateLost(reason)));
                    None
                }
            };
            st.groups.insert(
                gid,
                Entry {
                    group,
                    meta,
                    lost: None,
                    broken: false,
                },
            );
        }
        // A renewal whose self-updates did not all happen before the
        // process ended.
        self.queue_credential_updates(&mut st);
        Ok(())
    }

    /// Runs `f` on the group on a blocking thread.
    async fn on_group<T: Send + 'static>(
        &self,
        st: &mut State,
        gid: &[u8],
        f: impl FnOnce(&mut Group) -> T + Send + 'static,
    ) -> Result<T, ClientError> {
        let entry = st
            .groups
            .get_mut(gid)
            .ok_or_else(|| ClientError::UnknownGroup(hex::encode(gid)))?;
        let mut g = entry
            .group
            .take()
            .ok_or_else(|| ClientError::Unrecoverable(hex::encode(gid), "state lost"))?;
        let (g, r) = blocking(move || {
            let r = f(&mut g);
            (g, r)
        })
        .await?;
        entry.group = Some(g);
        Ok(r)
    }

    /// Saves the group (sealed) and its bookkeeping. The save is
    /// incremental (the tree records changed since the last confirmed
    /// save) and confirmed only once the store committed it, so a failed
    /// write leaves the next save covering the same records again.
    async fn save(&self, st: &mut State, gid: &[u8]) -> Result<(), ClientError> {
        let sealer = self.sealer.clone();
        let (saved, ticket) = self
            .on_group(st, gid, move |g| g.save_changes(sealer.as_ref()))
            .await??;
        self.storage.write_group(&saved).await?;
        if let Some(g) = st.groups.get_mut(gid).and_then(|e| e.group.as_mut()) {
            g.confirm_saved(ticket);
        }
        if let Some(e) = st.groups.get(gid) {
            self.meta.set_group(gid, &e.meta).await?;
        }
        Ok(())
    }

    async fn forget_group(&self, st: &mut State, gid: &[u8]) -> Result<(), ClientError> {
        st.groups.remove(gid);
        self.storage.delete_group(gid).await?;
        self.meta.delete_group(gid).await?;
        Ok(())
    }

    fn entry<'s>(&self, st: &'s mut State, gid: &[u8]) -> Result<&'s mut Entry, ClientError> {
        st.groups
            .get_mut(gid)
            .ok_or_else(|| ClientError::UnknownGroup(hex::encode(gid)))
    }

    // ----- credential -----

    async fn enrol_with_key(&self, key: &KeyRef, token: &str) -> Result<(), ClientError> {
        let identity = self.config.identity.clone();
        let (c, k, id) = (self.custody.clone(), key.clone(), identity.clone());
        let csr = blocking(move || hsmls_credentials::csr::build_csr(c, &k, &id)).await??;
        let chain = self.as_client.enrol(&identity, token, &csr).await?;
        let ders = chain
            .ders()
            .ok_or(ClientError::AsAnswer("chain is not base64url"))?;
        let stored = self.check_own_chain(key, ders).await?;
        self.meta.set_credential(&stored).await?;
        let signer = Signer::new(
            self.custody.clone(),
            key.clone(),
            x509_credential(&stored.chain),
        );
        let event = OwnCredentialEvent::Enrolled {
            serial: stored.serial.clone(),
            not_after: stored.not_after,
        };
        *self.own.write().unwrap_or_else(|e| e.into_inner()) = Some(Own { signer, stored });
        self.state
            .lock()
            .await
            .outbox
            .push(ClientEvent::OwnCredential(event));
        Ok(())
    }

    /// Checks a chain the AS issued for `key`: the identity, the key, the
    /// chain to the root with the current CRL, and the leaf's inclusion in
    /// the transparency log under a checkpoint consistent with the last.
    async fn check_own_chain(
        &self,
        key: &KeyRef,
        chain: Vec<Vec<u8>>,
    ) -> Result<StoredCredential, ClientError> {
        let leaf = chain.first().ok_or(ClientError::AsAnswer("empty chain"))?;
        let info = leaf_info(leaf)?;
        if info.identity != self.config.identity {
            return Err(ClientError::AsAnswer(
                "the certificate names another identity",
            ));
        }
        if info.public_key != key.public_key().as_bytes() {
            return Err(ClientError::AsAnswer("the certificate is for another key"));
        }
        self.fetch_crl_and_checkpoint().await?;
        let pk = hsmls::SignaturePublicKey(key.public_key().as_bytes().to_vec());
        self.validator
            .check(&x509_credential(&chain), &pk, Some(&self.config.identity))?;
        // The certificate is in the log the checkpoint covers.
        let checkpoint = self
            .monitor
            .latest()
            .ok_or(ClientError::AsAnswer("no log checkpoint"))?;
        let hash = cert_hash(leaf);
        let proof = self
            .as_client
            .inclusion_proof(&hash, checkpoint.size)
            .await?;
        let entry = LogEntry::decode(&proof.entry)
            .map_err(|_| ClientError::Log(tlog::LogError::InclusionProof))?;
        if entry.cert_hash != hash || proof.tree_size != checkpoint.size {
            return Err(ClientError::Log(tlog::LogError::InclusionProof));
        }
        tlog::verify_inclusion(
            &tlog::leaf_hash(&proof.entry),
            proof.index,
            proof.tree_size,
            &proof.hashes()?,
            &checkpoint.root,
        )?;
        Ok(StoredCredential {
            identity: info.identity,
            signature_key_uri: key.uri().to_owned(),
            serial: hex::encode(&info.serial),
            not_after: info.not_after,
            chain,
        })
    }

    /// Fetches the CRL and the checkpoint (consistent with the last one)
    /// and saves both.
    async fn fetch_crl_and_checkpoint(&self) -> Result<(), ClientError> {
        let crl = self.as_client.crl().await?;
        match self.validator.set_crl(&crl) {
            Ok(()) => self.meta.set_value("crl", &crl).await?,
            // An older CRL than the one held (another AS replica): keep ours.
            Err(ValidationError::StaleCrl) => {}
            Err(e) => return Err(e.into()),
        }
        let note = self.as_client.checkpoint().await?;
        let new = self.monitor.key().verify_note(&note)?;
        let proof = match self.monitor.latest() {
            Some(old) if new.size > old.size => self
                .as_client
                .consistency_proof(old.size, new.size)
                .await?
                .hashes()?,
            _ => Vec::new(),
        };
        self.monitor.update(&note, &proof)?;
        self.meta.set_value("checkpoint", note.as_bytes()).await?;
        Ok(())
    }

    async fn refresh_crl(&self, st: &mut State) -> Result<(), ClientError> {
        st.last_crl_refresh = now();
        self.fetch_crl_and_checkpoint().await?;
        let Some(own) = self.own() else {
            return Ok(());
        };
        // This client's own certificate.
        if let Err(ValidationError::Revoked) = self.validator.check(
            &own.signer.credential,
            &own.signer.signature_public_key(),
            None,
        ) {
            if !st.own_revoked_reported {
                st.own_revoked_reported = true;
                st.outbox
                    .push(ClientEvent::OwnCredential(OwnCredentialEvent::Revoked {
                        serial: own.stored.serial.clone(),
                    }));
            }
            return Ok(());
        }
        // Every group's members again (the engine does not re-check members
        // whose messages carry no credential).
        let gids: Vec<Vec<u8>> = st.groups.keys().cloned().collect();
        for gid in gids {
            self.check_members(st, &gid).await;
        }
        Ok(())
    }

    /// Checks a group's members with the current CRL: reports each
    /// problem once, and removes the revoked members (policy
    /// `groups.remove_revoked_members`) in one commit.
    async fn check_members(&self, st: &mut State, gid: &[u8]) {
        let Some(own) = self.own() else {
            return;
        };
        let own_key = own.signer.signature_public_key();
        let Some(Some(g)) = st.groups.get(gid).map(|e| e.group.as_ref()) else {
            return;
        };
        if !g.is_active() || st.groups.get(gid).is_some_and(|e| e.broken) {
            return;
        }
        let members = g.members();
        let refused = self.validator.refused_members(&members);
        let mut revoked = Vec::new();
        for (leaf, err) in refused {
            let Some(m) = members.iter().find(|m| m.index == leaf) else {
                continue;
            };
            if m.signature_key == own_key {
                continue;
            }
            let identity = wire::identity_of(&m.credential);
            let problem = problem_of_validation(&err);
            if problem == CredentialProblem::Revoked && self.config.groups.remove_revoked_members {
                revoked.push(leaf);
            }
            if st
                .reported_problems
                .insert((gid.to_vec(), format!("{identity}/{problem:?}")))
            {
                st.outbox.push(ClientEvent::CredentialProblem {
                    group: GroupId(gid.to_vec()),
                    member: identity,
                    problem,
                });
            }
        }
        if !revoked.is_empty() {
            let mut o = CommitOptions::new();
            o.remove_leaves = revoked;
            if let Err(e) = self.commit_loop(st, gid, o).await {
                tracing::warn!(error = %e, "removing revoked members failed");
            }
        }
    }

    async fn renew_if_due(&self, st: &mut State) -> Result<bool, ClientError> {
        let Some(own) = self.own() else {
            return Err(ClientError::NotEnrolled);
        };
        let t = now();
        if t.saturating_add(self.config.schedule.renew_margin_secs) < own.stored.not_after {
            return Ok(false);
        }
        st.last_renew_check = t;
        match self.renew(&own).await {
            Ok(stored) => {
                let event = OwnCredentialEvent::Renewed {
                    serial: stored.serial.clone(),
                    not_after: stored.not_after,
                };
                let signer = Signer::new(
                    self.custody.clone(),
                    own.signer.signature_key.clone(),
                    x509_credential(&stored.chain),
                );
                *self.own.write().unwrap_or_else(|e| e.into_inner()) = Some(Own { signer, stored });
                st.outbox.push(ClientEvent::OwnCredential(event));
                // The renewed certificate reaches every group's leaf by a
                // self-update (run before the operation returns).
                self.queue_credential_updates(st);
                // The DS session names the old certificate.
                if let Err(e) = self.authenticate().await {
                    tracing::info!(error = %e, "new DS session after renewal failed");
                }
                Ok(true)
            }
            Err(e) => {
                st.outbox
                    .push(ClientEvent::OwnCredential(OwnCredentialEvent::NearExpiry {
                        not_after: own.stored.not_after,
                        reason: e.to_string(),
                    }));
                Err(e)
            }
        }
    }

    /// Renews for the same key (the key is the member's signature key in
    /// its groups): a new CSR, signed over with the current key.
    async fn renew(&self, own: &Own) -> Result<StoredCredential, ClientError> {
        let key = own.signer.signature_key.clone();
        let (c, k, id) = (
            self.custody.clone(),
            key.clone(),
            self.config.identity.clone(),
        );
        let (csr, signature) = blocking(move || -> Result<_, ClientError> {
            let csr = hsmls_credentials::csr::build_csr(c.clone(), &k, &id)?;
            let mut msg = hsmls_credentials::api::RENEW_LABEL.to_vec();
            msg.extend_from_slice(&csr);
            let sig = c.sign(&k, &msg)?;
            Ok((csr, sig))
        })
        .await??;
        let leaf = own
            .stored
            .chain
            .first()
            .ok_or(ClientError::AsAnswer("empty chain"))?;
        let chain = self
            .as_client
            .renew(&Renew {
                certificate: b64(leaf),
                csr: b64(&csr),
                signature: b64(&signature),
            })
            .await?;
        let ders = chain
            .ders()
            .ok_or(ClientError::AsAnswer("chain is not base64url"))?;
        let stored = self.check_own_chain(&key, ders).await?;
        self.meta.set_credential(&stored).await?;
        Ok(stored)
    }

    // ----- KeyPackages -----

    async fn load_bundle(
        &self,
        signer: &Signer,
        reference: &[u8],
        remove: bool,
    ) -> Result<Option<KeyPackageBundle>, ClientError> {
        let saved = if remove {
            self.storage.take_key_package(reference).await?
        } else {
            // Last-resort bundles stay in the store when taken.
            match self.storage.take_key_package(reference).await? {
                Some(s) if !s.last_resort => {
                    self.storage.store_key_package(&s).await?;
                    Some(s)
                }
                other => other,
            }
        };
        let Some(saved) = saved else {
            return Ok(None);
        };
        if remove && saved.last_resort {
            self.storage.delete_key_package(reference).await?;
        }
        let (sealer, client, r) = (
            self.sealer.clone(),
            self.client_of(signer.clone(), GroupMode::Blind),
            reference.to_vec(),
        );
        let bundle =
            blocking(move || client.load_key_package(sealer.as_ref(), &r, &saved.data)).await??;
        Ok(Some(bundle))
    }

    async fn replenish(&self, st: &mut State) -> Result<usize, ClientError> {
        let signer = self.signer()?;
        let t = now();
        st.last_key_package_check = t;
        // Expired bundles: their keys go.
        for saved in self.storage.delete_expired_key_packages(t).await? {
            self.meta.delete_key_package(&saved.reference).await?;
            let sealer = self.sealer.clone();
            let client = self.client_of(signer.clone(), GroupMode::Blind);
            let _ = blocking(move || {
                if let Ok(b) =
                    client.load_key_package(sealer.as_ref(), &saved.reference, &saved.data)
                {
                    let _ = b.destroy(client.signer());
                }
            })
            .await;
        }
        let counts = self.ds_call(|ds| ds.key_package_counts()).await?;
        let policy = &self.config.key_packages;
        let published = self.meta.key_packages().await?;
        let old_last_resort: Vec<PublishedKeyPackage> =
            published.into_iter().filter(|k| k.last_resort).collect();
        let need = if counts.available < u64::from(policy.low_water_mark) {
            (u64::from(policy.batch_size).saturating_sub(counts.available)) as usize
        } else {
            0
        };
        let rotate =
            counts.last_resort_claims > 0 || counts.last_resort == 0 || old_last_resort.is_empty();
        if need == 0 && !rotate {
            return Ok(0);
        }
        // Generate (keys in the token) and save before publishing, so that
        // a Welcome for any published KeyPackage can be joined.
        let (sealer, client, lifetime) = (
            self.sealer.clone(),
            self.client_of(signer.clone(), GroupMode::Blind),
            policy.lifetime_secs,
        );
        let bundles = blocking(move || -> Result<Vec<_>, ClientError> {
            let mut out = Vec::with_capacity(need + 1);
            for i in 0..need + usize::from(rotate) {
                let mut c = KeyPackageConfig::new(t.saturating_sub(60), lifetime);
                c.cipher_suite = client.group_config().cipher_suite;
                if i == need {
                    c = c.last_resort();
                }
                let b = client.generate_key_package(&c)?;
                let saved = client.save_key_package(&b, sealer.as_ref())?;
                let bytes = b.to_bytes().map_err(hsmls::GroupError::from)?;
                out.push((saved, bytes));
            }
            Ok(out)
        })
        .await??;
        let mut messages = Vec::with_capacity(bundles.len());
        for (saved, bytes) in &bundles {
            self.storage.store_key_package(saved).await?;
            self.meta
                .add_key_package(&PublishedKeyPackage {
                    reference: saved.reference.clone(),
                    last_resort: saved.last_resort,
                    not_after: saved.not_after,
                })
                .await?;
            messages.push(bytes.clone());
        }
        let mut counts = counts;
        for chunk in messages.chunks(100) {
            let c = chunk.to_vec();
            counts = self
                .ds_call(|ds| {
                    let c = c.clone();
                    async move { ds.publish_key_packages(c).await }
                })
                .await?;
        }
        // The used last-resort KeyPackage: its keys go (the groups joined
        // with it replaced its leaf key by a self-update first).
        let mut rotated = false;
        if rotate {
            for old in &old_last_resort {
                if let Some(b) = self.load_bundle(&signer, &old.reference, true).await? {
                    let s = signer.clone();
                    blocking(move || b.destroy(&s)).await??;
                    rotated = true;
                }
                self.meta.delete_key_package(&old.reference).await?;
            }
        }
        st.outbox.push(ClientEvent::KeyPackagesPublished {
            published: bundles.len(),
            last_resort_rotated: rotated,
            available: counts.available,
        });
        Ok(bundles.len())
    }

    // ----- receiving -----

    /// Fetches until nothing is left (or, with `until`, until that group
    /// reaches the epoch).
    async fn fetch_all(
        &self,
        st: &mut State,
        until: Option<(&[u8], u64)>,
    ) -> Result<(), ClientError> {
        for _ in 0..MAX_CATCH_UP_FETCHES {
            self.flush_acks(st).await;
            let batch = self.ds_call(|ds| ds.fetch(FETCH_LIMIT)).await?;
            if batch.messages.is_empty() && batch.welcomes.is_empty() {
                return Ok(());
            }
            let handled = st.handled;
            self.handle_batch(st, batch).await?;
            let fresh = st.handled > handled;
            if let Some((gid, epoch)) = until
                && st
                    .groups
                    .get(gid)
                    .and_then(|e| e.group.as_ref())
                    .is_some_and(|g| g.epoch() >= epoch)
            {
                self.flush_acks(st).await;
                return Ok(());
            }
            if !fresh {
                // Only messages already handled (the acknowledgement moves
                // the DS's cursor past them) or kept for a rejoin.
                self.flush_acks(st).await;
                return Ok(());
            }
        }
        Ok(())
    }

    /// Handles Welcomes, then each group's messages in order; every
    /// effect is saved before it is acknowledged.
    async fn handle_batch(&self, st: &mut State, batch: QueueBatch) -> Result<(), ClientError> {
        for w in batch.welcomes {
            if self.meta.welcome_handled(w.id).await? {
                st.pending_welcome_acks.push(w.id);
                continue;
            }
            match self.join_welcome(st, &w.welcome).await {
                Ok(()) => {}
                // Transient: leave it for the next fetch.
                Err(
                    e @ (ClientError::Custody(_)
                    | ClientError::Storage(_)
                    | ClientError::Database(_)
                    | ClientError::Task(_)
                    | ClientError::DsTransport(_)),
                ) => {
                    tracing::warn!(error = %e, "Welcome not handled; later");
                    continue;
                }
                Err(e) => tracing::warn!(error = %e, "Welcome refused"),
            }
            self.meta.set_welcome_handled(w.id, now()).await?;
            st.pending_welcome_acks.push(w.id);
            st.handled += 1;
        }
        let mut by_group: BTreeMap<Vec<u8>, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
        for m in batch.messages {
            by_group
                .entry(m.group_id)
                .or_default()
                .push((m.seq, m.message));
        }
        for (gid, mut msgs) in by_group {
            msgs.sort_by_key(|(s, _)| *s);
            if let Some(upto) = self.handle_group_messages(st, &gid, msgs).await? {
                let a = st.pending_ack.entry(gid).or_insert(0);
                *a = (*a).max(upto);
            }
        }
        Ok(())
    }

    /// Handles one group's messages; returns the sequence number up to
    /// which they may be acknowledged (`None`: keep them).
    async fn handle_group_messages(
        &self,
        st: &mut State,
        gid: &[u8],
        msgs: Vec<(u64, Vec<u8>)>,
    ) -> Result<Option<u64>, ClientError> {
        let max = msgs.last().map(|(s, _)| *s);
        let Some(entry) = st.groups.get_mut(gid) else {
            // A group this client left or never knew: nothing to do.
            return Ok(max);
        };
        if entry.broken {
            return Ok(max);
        }
        if entry.group.is_none() || st.forks.iter().any(|(g, _)| g == gid) {
            // Its state is lost or it forked: the rejoin moves the cursor.
            return Ok(None);
        }
        let last = entry.meta.last_seq;
        let msgs: Vec<(u64, Vec<u8>)> = msgs.into_iter().filter(|(s, _)| *s > last).collect();
        if msgs.is_empty() {
            return Ok(max);
        }
        let t = now();
        st.handled += msgs.len() as u64;
        let results = self
            .on_group(st, gid, move |g| {
                let mut out = Vec::with_capacity(msgs.len());
                for (seq, bytes) in msgs {
                    let o = process_one(g, &bytes, t);
                    let stop = matches!(o, Outcome::Fork(_));
                    out.push((seq, o));
                    if stop {
                        break;
                    }
                }
                out
            })
            .await?;
        let group = GroupId(gid.to_vec());
        let mut removed_by: Option<Option<String>> = None;
        let mut fork = None;
        let mut proposals = false;
        let mut invalid_commit = None;
        let State {
            groups,
            outbox,
            reported_problems,
            check_credentials,
            ..
        } = st;
        let entry = groups
            .get_mut(gid)
            .ok_or_else(|| ClientError::UnknownGroup(hex::encode(gid)))?;
        for (seq, o) in results {
            match o {
                Outcome::SenderRefused {
                    member,
                    problem,
                    commit,
                } => {
                    tracing::warn!(group = %group, seq, member, ?problem, commit,
                        "a handshake refused: its sender's credential no longer validates");
                    if reported_problems.insert((gid.to_vec(), format!("{member}/{problem:?}"))) {
                        outbox.push(ClientEvent::CredentialProblem {
                            group: group.clone(),
                            member: member.clone(),
                            problem: problem.clone(),
                        });
                    }
                    if problem == CredentialProblem::Revoked
                        && self.config.groups.remove_revoked_members
                    {
                        check_credentials.insert(gid.to_vec());
                    }
                    if commit {
                        // The DS ordered a commit this member must refuse
                        // (RFC 9750 "Invalid Commits"): the group cannot
                        // follow the DS past it.
                        invalid_commit = Some(ForkReason::InvalidCommit { member, problem });
                        break;
                    }
                }
                Outcome::Fork(reason) => {
                    tracing::warn!(group = %group, seq, ?reason, "fork");
                    fork = Some(reason);
                    break;
                }
                Outcome::App {
                    sender,
                    epoch,
                    data,
                } => outbox.push(ClientEvent::Message {
                    group: group.clone(),
                    sender,
                    epoch,
                    data,
                }),
                Outcome::Proposal => proposals = true,
                Outcome::Commit {
                    by,
                    added,
                    removed,
                    updated,
                    self_removed,
                    epoch,
                    epoch_authenticator,
                    lost,
                } => {
                    proposals = false;
                    for m in added {
                        outbox.push(ClientEvent::MemberAdded {
                            group: group.clone(),
                            member: m,
                            by: by.clone(),
                        });
                    }
                    for m in removed {
                        outbox.push(ClientEvent::MemberRemoved {
                            group: group.clone(),
                            member: m,
                            by: by.clone(),
                        });
                    }
                    for m in updated {
                        outbox.push(ClientEvent::MemberUpdated {
                            group: group.clone(),
                            member: m,
                        });
                    }
                    if self_removed {
                        removed_by = Some(by);
                    } else {
                        outbox.push(ClientEvent::EpochChanged {
                            group: group.clone(),
                            epoch,
                            epoch_authenticator,
                        });
                    }
                    if lost.is_some() {
                        entry.lost = lost.map(|l| *l);
                    }
                }
                Outcome::Skipped(why) => {
                    tracing::debug!(group = %group, seq, why, "message skipped");
                }
            }
            entry.meta.last_seq = seq;
        }
        if let Some(by) = removed_by {
            self.forget_group(st, gid).await?;
            st.outbox.push(ClientEvent::Removed { group, by });
            return Ok(max);
        }
        self.save(st, gid).await?;
        if let Some(reason) = invalid_commit {
            if let Some(e) = st.groups.get_mut(gid) {
                e.broken = true;
            }
            st.check_credentials.remove(gid);
            st.outbox.push(ClientEvent::GroupBroken { group, reason });
            return Ok(max);
        }
        if proposals {
            st.commit_proposals.insert(gid.to_vec());
        }
        match fork {
            Some(reason) => {
                st.forks.push((gid.to_vec(), reason));
                // The rest waits for the rejoin (which moves the cursor) or,
                // if it fails, comes again and tries again.
                Ok(st.groups.get(gid).map(|e| e.meta.last_seq))
            }
            None => Ok(max),
        }
    }

    async fn join_welcome(&self, st: &mut State, welcome: &[u8]) -> Result<(), ClientError> {
        self.own().ok_or(ClientError::NotEnrolled)?;
        if let Some(suite) = hsmls::wire::RoutingInfo::parse(welcome)
            .ok()
            .and_then(|i| i.cipher_suite)
        {
            let own = self.config.cipher_suite;
            if suite.0 != own && !self.config.join_cipher_suites.contains(&suite.0) {
                return Err(ClientError::WelcomeSuiteRefused {
                    suite: suite.0,
                    own,
                });
            }
        }
        let refs = wire::welcome_refs(welcome).ok_or(ClientError::UnknownKeyPackage)?;
        let mut found = None;
        for r in refs {
            if let Some(saved) = self.storage.take_key_package(&r).await? {
                found = Some((r, saved));
                break;
            }
        }
        let (reference, saved) = found.ok_or(ClientError::UnknownKeyPackage)?;
        let last_resort = saved.last_resort;
        let kept = saved.clone();
        let (sealer, client, w) = (
            self.sealer.clone(),
            self.mls_client(GroupMode::Blind)?,
            welcome.to_vec(),
        );
        let r = reference.clone();
        let joined = blocking(move || -> Result<Group, ClientError> {
            let bundle = client.load_key_package(sealer.as_ref(), &r, &saved.data)?;
            Ok(client.join_from_welcome(&bundle, &w, JoinOptions::default())?)
        })
        .await
        .and_then(|r| r);
        let group = match joined {
            Ok(g) => g,
            Err(e) => {
                if matches!(
                    e,
                    ClientError::Custody(_) | ClientError::Task(_) | ClientError::State(_)
                ) && !last_resort
                {
                    // The token failed, not the Welcome: keep the bundle
                    // for the next attempt.
                    self.storage.store_key_package(&kept).await?;
                }
                return Err(e);
            }
        };
        if !last_resort {
            self.meta.delete_key_package(&reference).await?;
        }
        let gid = group.group_id().to_vec();
        if st.groups.contains_key(&gid) {
            tracing::info!("a Welcome for a group already joined");
            return Ok(());
        }
        // The DS keeps a GroupInfo only for assisted groups.
        let mode = match self.ds_call(|ds| ds.group_info(&gid)).await {
            Ok(_) => GroupMode::Assisted,
            Err(ClientError::DsRefused(p)) if p.kind() == "mode-mismatch" => GroupMode::Blind,
            Err(e) => return Err(e),
        };
        let mut group = group;
        group.set_config(group_config(mode, self.config.cipher_suite));
        let (epoch, members) = (group.epoch(), identities(&group.members()));
        st.groups.insert(
            gid.clone(),
            Entry {
                group: Some(group),
                meta: GroupMeta {
                    mode,
                    last_seq: 0,
                    last_update: now(),
                },
                lost: None,
                broken: false,
            },
        );
        self.save(st, &gid).await?;
        st.outbox.push(ClientEvent::Joined {
            group: GroupId(gid.clone()),
            epoch,
            members,
        });
        if last_resort {
            // The leaf key is the last-resort KeyPackage's, shared with any
            // other group joined with it: replace it at once.
            st.update_soon.insert(gid);
        }
        Ok(())
    }

    // ----- groups -----

    async fn create_group(&self, st: &mut State, mode: GroupMode) -> Result<GroupId, ClientError> {
        let client = self.mls_client(mode)?;
        let t = now();
        let (group, group_info) = blocking(move || -> Result<_, ClientError> {
            let g = client.create_group(hsmls::random_group_id(), Vec::new(), t)?;
            let gi = match mode {
                GroupMode::Assisted => Some(g.group_info()?),
                _ => None,
            };
            Ok((g, gi))
        })
        .await??;
        let gid = group.group_id().to_vec();
        let req = CreateGroup {
            group_id: gid.clone(),
            mode,
            epoch: 0,
            group_info,
            ratchet_tree: None,
        };
        if let Err(e) = self.ds_call(|ds| ds.create_group(&req)).await {
            let (c, k) = (self.custody.clone(), group.own_leaf_key().clone());
            let _ = blocking(move || c.destroy(&k)).await;
            return Err(e);
        }
        st.groups.insert(
            gid.clone(),
            Entry {
                group: Some(group),
                meta: GroupMeta {
                    mode,
                    last_seq: 0,
                    last_update: t,
                },
                lost: None,
                broken: false,
            },
        );
        self.save(st, &gid).await?;
        Ok(GroupId(gid))
    }

    async fn add_members(
        &self,
        st: &mut State,
        gid: &[u8],
        identities: &[&str],
    ) -> Result<u64, ClientError> {
        self.entry(st, gid)?;
        let client = self.mls_client(GroupMode::Blind)?;
        let mut o = CommitOptions::new();
        for id in identities {
            let claimed = self
                .ds_call(|ds| ds.claim_key_package(id.as_bytes()))
                .await?;
            let key_package = client.validate_key_package(&claimed.key_package, now())?;
            o.add_key_packages.push(key_package);
        }
        self.commit_loop(st, gid, o)
            .await?
            .ok_or(ClientError::NothingToCommit)
    }

    async fn remove_members(
        &self,
        st: &mut State,
        gid: &[u8],
        ids: &[&str],
    ) -> Result<u64, ClientError> {
        let members = {
            let e = self.entry(st, gid)?;
            e.group
                .as_ref()
                .ok_or_else(|| ClientError::Unrecoverable(hex::encode(gid), "state lost"))?
                .members()
        };
        let mut o = CommitOptions::new();
        for id in ids {
            let leaves: Vec<LeafIndex> = members
                .iter()
                .filter(|m| wire::identity_of(&m.credential) == *id)
                .map(|m| m.index)
                .collect();
            if leaves.is_empty() {
                return Err(ClientError::NotAMember {
                    group: hex::encode(gid),
                    identity: (*id).to_owned(),
                });
            }
            o.remove_leaves.extend(leaves);
        }
        self.commit_loop(st, gid, o)
            .await?
            .ok_or(ClientError::NothingToCommit)
    }

    async fn leave(&self, st: &mut State, gid: &[u8]) -> Result<(), ClientError> {
        let bytes = self
            .on_group(st, gid, |g| g.leave().map(|p| p.into_message()))
            .await??;
        self.save(st, gid).await?;
        self.send_message(st, gid, bytes).await.map(drop)
    }

    async fn send(&self, st: &mut State, gid: &[u8], data: &[u8]) -> Result<u64, ClientError> {
        let mut attempt = 0;
        loop {
            let d = data.to_vec();
            let bytes = self
                .on_group(st, gid, move |g| g.encrypt_application(&d))
                .await??;
            // Saved before it leaves: a restart must not reuse its key.
            self.save(st, gid).await?;
            match self.send_message(st, gid, bytes).await {
                Err(ClientError::DsRefused(p)) if p.kind() == "wrong-epoch" && attempt == 0 => {
                    // Behind the group: catch up, encrypt again.
                    attempt += 1;
                    let target = p.current_epoch.unwrap_or(0);
                    self.fetch_all(st, Some((gid, target))).await?;
                }
                r => return r,
            }
        }
    }

    /// Sends an application message or proposal, again on transport
    /// failures; a duplicate (the DS has it) is its first acceptance.
    async fn send_message(
        &self,
        _st: &mut State,
        _gid: &[u8],
        bytes: Vec<u8>,
    ) -> Result<u64, ClientError> {
        let mut wait = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            match self.ds_call(|ds| ds.send_message(&bytes)).await {
                Ok(a) => return Ok(a.seq),
                Err(ClientError::DsRefused(p)) if p.kind() == "duplicate" => {
                    return Ok(p.seq.unwrap_or(0));
                }
                Err(ClientError::DsTransport(t))
                    if attempt < self.config.groups.max_transport_retries =>
                {
                    tracing::info!(error = %t, "message not sent; again");
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Commits `options` and sends the commit; when another commit won the
    /// epoch (the DS answers `stale-commit`), processes the winner and
    /// commits what is still wanted again on the new epoch, up to the
    /// policy's retries. Returns the new epoch, or `None` if nothing was
    /// left to commit.
    async fn commit_loop(
        &self,
        st: &mut State,
        gid: &[u8],
        mut options: CommitOptions,
    ) -> Result<Option<u64>, ClientError> {
        let mut attempt = 0u32;
        loop {
            let entry = self.entry(st, gid)?;
            let mode = entry.meta.mode;
            let g = entry
                .group
                .as_ref()
                .ok_or_else(|| ClientError::Unrecoverable(hex::encode(gid), "state lost"))?;
            if !g.is_active() {
                return Err(ClientError::Removed(hex::encode(gid)));
            }
            if options_empty(&options, g) {
                return Ok(None);
            }
            // A renewed credential not yet in this group goes in with the
            // commit's path (the path's LeafNode carries it).
            if let Some(own) = self.own()
                && Self::needs_new_signer(g, &own.signer)
            {
                options.new_signer = Some(own.signer);
            }
            options.group_info = mode == GroupMode::Assisted;
            let t = now();
            let o = options.clone();
            let out = self
                .on_group(st, gid, move |g| {
                    let before = g.own_leaf_key().clone();
                    g.commit(o, t).map(|out| (out, before))
                })
                .await?;
            let (out, leaf_before) = out?;
            // The pending commit is saved: if the DS accepts it and this
            // process dies, its echo merges it after the restart.
            self.save(st, gid).await?;
            let removed = match mode {
                GroupMode::Blind => out
                    .removes
                    .iter()
                    .map(|m| wire::identity_of(&m.credential).into_bytes())
                    .collect(),
                _ => Vec::new(),
            };
            let bundle = CommitBundle {
                commit: out.commit.clone(),
                welcome: out.welcome.clone(),
                group_info: out.group_info.clone(),
                removed,
            };
            match self.send_bundle(&bundle).await {
                Ok(_accepted) => {
                    let (before, after, epoch, auth, leaf_changed) = self
                        .on_group(st, gid, move |g| {
                            let before = g.members();
                            g.merge_pending_commit().map(|()| {
                                (
                                    before,
                                    g.members(),
                                    g.epoch(),
                                    g.epoch_authenticator().to_vec(),
                                    *g.own_leaf_key() != leaf_before,
                                )
                            })
                        })
                        .await??;
                    let entry = self.entry(st, gid)?;
                    if leaf_changed {
                        entry.meta.last_update = t;
                    }
                    self.save(st, gid).await?;
                    let group = GroupId(gid.to_vec());
                    let (added, removed, _) = diff(&before, &after);
                    let me = Some(self.config.identity.clone());
                    for m in added {
                        st.outbox.push(ClientEvent::MemberAdded {
                            group: group.clone(),
                            member: m,
                            by: me.clone(),
                        });
                    }
                    for m in removed {
                        st.outbox.push(ClientEvent::MemberRemoved {
                            group: group.clone(),
                            member: m,
                            by: me.clone(),
                        });
                    }
                    st.outbox.push(ClientEvent::EpochChanged {
                        group,
                        epoch,
                        epoch_authenticator: auth,
                    });
                    return Ok(Some(epoch));
                }
                Err(ClientError::DsRefused(p)) if p.kind() == "stale-commit" => {
                    attempt += 1;
                    let target = p.current_epoch.unwrap_or(0);
                    tracing::info!(attempt, target, "commit lost its epoch; catching up");
                    self.fetch_all(st, Some((gid, target))).await?;
                    if st.forks.iter().any(|(g, _)| g == gid) {
                        return Err(ClientError::Unrecoverable(
                            hex::encode(gid),
                            "the group forked while committing",
                        ));
                    }
                    let entry = self.entry(st, gid)?;
                    let lost = entry.lost.take();
                    let pending = entry.group.as_ref().is_some_and(|g| g.has_pending_commit());
                    if pending {
                        // The winner has not arrived: ours is void anyway.
                        self.on_group(st, gid, |g| g.discard_pending_commit())
                            .await??;
                        self.save(st, gid).await?;
                    }
                    if attempt > self.config.groups.max_commit_retries {
                        return Err(ClientError::CommitRetriesExhausted { attempts: attempt });
                    }
                    if let Some(lost) = lost {
                        let State { groups, outbox, .. } = &mut *st;
                        if let Some(g) = groups.get(gid).and_then(|e| e.group.as_ref()) {
                            options = lost.commit_options(g);
                            outbox.push(ClientEvent::CommitRebuilt {
                                group: GroupId(gid.to_vec()),
                                epoch: g.epoch(),
                            });
                        }
                    }
                }
                Err(e @ ClientError::DsTransport(_)) => {
                    // Unknown whether the DS has it: keep it pending; its
                    // echo merges it, or another commit makes it lost.
                    return Err(e);
                }
                Err(e) => {
                    self.on_group(st, gid, |g| g.discard_pending_commit())
                        .await??;
                    self.save(st, gid).await?;
                    return Err(e);
                }
            }
        }
    }

    /// Rejoins a forked group by external commit from the GroupInfo and
    /// ratchet tree the DS serves (assisted groups), replacing this
    /// client's old leaf (RFC 9420 §12.4.3.2 resync).
    async fn rejoin(
        &self,
        st: &mut State,
        gid: &[u8],
        reason: ForkReason,
    ) -> Result<(), ClientError> {
        let group = GroupId(gid.to_vec());
        let entry = self.entry(st, gid)?;
        if entry.meta.mode != GroupMode::Assisted || !self.config.groups.rejoin_on_fork {
            entry.broken = true;
            st.outbox.push(ClientEvent::GroupBroken { group, reason });
            return Err(ClientError::Unrecoverable(
                hex::encode(gid),
                "only assisted groups can be rejoined",
            ));
        }
        let client = self.mls_client(GroupMode::Assisted)?;
        let own_key = client.signer().signature_public_key().0;
        for _ in 0..=self.config.groups.max_commit_retries {
            // The DS serves a group's public state to its members only: a
            // client it no longer routes to was removed.
            let served = match self.ds_call(|ds| ds.group_info(gid)).await {
                Ok(gi) => Some((gi, self.ds_call(|ds| ds.ratchet_tree(gid)).await?)),
                Err(ClientError::DsRefused(p)) if p.kind() == "not-member" => None,
                Err(e) => return Err(e),
            };
            let own_leaf = match &served {
                Some((_, tree_bytes)) => {
                    let tree = wire::decode_tree(tree_bytes).ok_or_else(|| {
                        ClientError::DsAnswer("the ratchet tree does not decode".into())
                    })?;
                    wire::find_leaf(&tree, &own_key).map(|leaf| (tree, leaf))
                }
                None => None,
            };
            let (Some((gi, _)), Some((tree, old_leaf))) = (served, own_leaf) else {
                // Not in the group any more: it was removed while this
                // client could not follow. Removal is the group's decision.
                self.forget_group(st, gid).await?;
                st.outbox.push(ClientEvent::Removed { group, by: None });
                return Ok(());
            };
            let client = client.clone();
            let (new_group, commit, new_gi) = blocking(move || -> Result<_, ClientError> {
                let mut options = JoinOptions::default();
                options.ratchet_tree = Some(tree);
                let (g, commit) = client.rejoin_by_external_commit(&gi, options, old_leaf)?;
                let new_gi = g.group_info()?;
                Ok((g, commit, new_gi))
            })
            .await??;
            let bundle = CommitBundle {
                commit,
                group_info: Some(new_gi),
                ..Default::default()
            };
            match self.send_bundle(&bundle).await {
                Ok(acc) => {
                    let entry = self.entry(st, gid)?;
                    let old = entry.group.replace(new_group);
                    entry.meta.last_seq = acc.seq;
                    entry.meta.last_update = now();
                    entry.lost = None;
                    entry.broken = false;
                    if let Some(old) = old
                        && old.is_active()
                    {
                        let (c, k) = (self.custody.clone(), old.own_leaf_key().clone());
                        let _ = blocking(move || c.destroy(&k)).await;
                    }
                    // The stored state may be of a later epoch than the
                    // lost one; replace it whole.
                    self.storage.delete_group(gid).await?;
                    self.save(st, gid).await?;
                    let a = st.pending_ack.entry(gid.to_vec()).or_insert(0);
                    *a = (*a).max(acc.seq);
                    st.forks.retain(|(g, _)| g != gid);
                    st.outbox.push(ClientEvent::Rejoined {
                        group,
                        epoch: acc.epoch,
                        reason,
                    });
                    return Ok(());
                }
                Err(ClientError::DsRefused(p)) if p.kind() == "stale-commit" => {
                    let (c, k) = (self.custody.clone(), new_group.own_leaf_key().clone());
                    let _ = blocking(move || c.destroy(&k)).await;
                }
                Err(e) => {
                    let (c, k) = (self.custody.clone(), new_group.own_leaf_key().clone());
                    let _ = blocking(move || c.destroy(&k)).await;
                    return Err(e);
                }
            }
        }
        Err(ClientError::CommitRetriesExhausted {
            attempts: self.config.groups.max_commit_retries + 1,
        })
    }

    /// Whether the group's leaf still has another credential (or key) than
    /// this client's current one (a renewal not yet committed there).
    fn needs_new_signer(g: &Group, current: &Signer) -> bool {
        g.is_active()
            && (g.signer().credential != current.credential
                || g.signer().signature_key != current.signature_key)
    }

    /// Queues a self-update carrying the current credential in every group
    /// whose leaf still has an older one.
    fn queue_credential_updates(&self, st: &mut State) {
        let Some(own) = self.own() else {
            return;
        };
        for (gid, e) in &st.groups {
            if !e.broken
                && e.group
                    .as_ref()
                    .is_some_and(|g| Self::needs_new_signer(g, &own.signer))
            {
                st.update_soon.insert(gid.clone());
            }
        }
    }

    /// Whether this member commits the pending proposals: the member with
    /// the lowest leaf index among those the proposals do not remove (one
    /// committer, fewer races).
    fn designated_committer(g: &Group) -> bool {
        let removed: HashSet<u32> = g
            .pending_proposals()
            .iter()
            .filter_map(|p| match &p.proposal {
                Proposal::Remove(r) => Some(r.removed.0),
                _ => None,
            })
            .collect();
        g.members()
            .iter()
            .map(|m| m.index.0)
            .filter(|i| !removed.contains(i))
            .min()
            == Some(g.own_leaf_index().0)
    }

    async fn run_followups(&self, st: &mut State) {
        for _ in 0..8 {
            let mut did = false;
            for (gid, reason) in std::mem::take(&mut st.forks) {
                did = true;
                if !st.groups.contains_key(&gid) {
                    continue;
                }
                if let Err(e) = self.rejoin(st, &gid, reason).await {
                    tracing::warn!(group = %hex::encode(&gid), error = %e, "rejoin failed");
                }
            }
            let lost: Vec<(Vec<u8>, LostCommit)> = st
                .groups
                .iter_mut()
                .filter_map(|(g, e)| e.lost.take().map(|l| (g.clone(), l)))
                .collect();
            for (gid, lost) in lost {
                did = true;
                let Some(g) = st.groups.get(&gid).and_then(|e| e.group.as_ref()) else {
                    continue;
                };
                let options = lost.commit_options(g);
                if options_empty(&options, g) {
                    continue;
                }
                st.outbox.push(ClientEvent::CommitRebuilt {
                    group: GroupId(gid.clone()),
                    epoch: g.epoch(),
                });
                if let Err(e) = self.commit_loop(st, &gid, options).await {
                    tracing::warn!(error = %e, "a lost commit could not be committed again");
                }
            }
            for gid in std::mem::take(&mut st.update_soon) {
                did = true;
                let mut o = CommitOptions::new();
                o.force_path = true;
                if let Err(e) = self.commit_loop(st, &gid, o).await {
                    tracing::warn!(error = %e, "self-update (last-resort join, renewal) failed");
                }
            }
            for gid in std::mem::take(&mut st.check_credentials) {
                did = true;
                self.check_members(st, &gid).await;
            }
            for gid in std::mem::take(&mut st.commit_proposals) {
                did = true;
                let mine = st
                    .groups
                    .get(&gid)
                    .and_then(|e| e.group.as_ref())
                    .is_some_and(|g| g.is_active() && Self::designated_committer(g));
                if mine && let Err(e) = self.commit_loop(st, &gid, CommitOptions::new()).await {
                    tracing::warn!(error = %e, "committing pending proposals failed");
                }
            }
            if !did {
                break;
            }
        }
        self.flush_acks(st).await;
    }

    async fn maintain(&self, st: &mut State) {
        let s = &self.config.schedule;
        let t = now();
        if s.crl_refresh_interval_secs > 0
            && t.saturating_sub(st.last_crl_refresh) >= s.crl_refresh_interval_secs
            && let Err(e) = self.refresh_crl(st).await
        {
            tracing::warn!(error = %e, "CRL refresh failed");
        }
        if t.saturating_sub(st.last_renew_check) >= s.crl_refresh_interval_secs.max(60) {
            st.last_renew_check = t;
            if let Err(e) = self.renew_if_due(st).await {
                tracing::warn!(error = %e, "renewal failed");
            }
            // Groups a renewal's self-update did not reach yet (it failed,
            // or the process ended first) are tried again.
            self.queue_credential_updates(st);
        }
        if s.key_package_check_interval_secs > 0
            && t.saturating_sub(st.last_key_package_check) >= s.key_package_check_interval_secs
            && let Err(e) = self.replenish(st).await
        {
            tracing::warn!(error = %e, "KeyPackage top-up failed");
        }
        if s.self_update_interval_secs > 0 {
            let due: Vec<Vec<u8>> = st
                .groups
                .iter()
                .filter(|(_, e)| {
                    !e.broken
                        && e.group.as_ref().is_some_and(|g| g.is_active())
                        && t.saturating_sub(e.meta.last_update) >= s.self_update_interval_secs
                })
                .map(|(g, _)| g.clone())
                .collect();
            for gid in due {
                let mut o = CommitOptions::new();
                o.force_path = true;
                match self.commit_loop(st, &gid, o).await {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "scheduled self-update failed");
                        // Try again at the next interval, not every tick.
                        if let Some(e) = st.groups.get_mut(&gid) {
                            e.meta.last_update = t;
                        }
                    }
                }
            }
        }
    }
}

/// The crypto provider of suite `suite` (checked by the configuration).
fn suite_provider(
    suite: u16,
) -> Result<&'static dyn hsmls_crypto::CipherSuiteProvider, ClientError> {
    hsmls_crypto::CipherSuite(suite)
        .provider()
        .map_err(|e| ClientError::Config(format!("cipher suite 0x{suite:04x}: {e}")))
}

/// Refuses to open a client whose custody cannot hold the keys of its
/// suite (the signature key, the HPKE keys), naming the suite and the key
/// kind: the error comes at start, not at the first KeyPackage.
fn check_suite_keys(suite: u16, custody: &dyn KeyCustody) -> Result<(), ClientError> {
    let cs = suite_provider(suite)?;
    for (kind, spec) in [
        ("signature", cs.signature_key_spec()),
        ("HPKE", cs.hpke_key_spec()),
    ] {
        if !custody.capabilities().supports(spec) {
            return Err(ClientError::SuiteKeyRefused {
                suite,
                kind,
                spec: spec.to_string(),
                reason: custody
                    .unsupported_reason(spec)
                    .unwrap_or_else(|| custody.capabilities().summary.clone()),
            });
        }
    }
    Ok(())
}

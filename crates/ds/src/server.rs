//! The DS server: [`Ds`] (the service, callable without HTTP) and its axum
//! [`router`].
//!
//! Logs name no payload, no group id and no client identity: requests are
//! logged with their route, status and the first bytes of the queue id at
//! most.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::SinkExt;
use hsmls::wire::{CipherSuite, ContentType, Credential, Decode, Sender};
use tokio::sync::Notify;

use crate::api::{
    Accepted, Ack, ClaimRequest, ClaimedKeyPackage, ClientFrame, CommitBundle, CreateGroup,
    GroupMode, KeyPackageCounts, MESSAGE_MLS, PROBLEM_JSON, PublishKeyPackages, QueueBatch,
    QueuedMessage, QueuedWelcome, SendFrame, ServerFrame, Session, SessionRequest, b64,
};
use crate::assisted;
use crate::auth::{AuthFailure, Authenticator, ClientAuthenticator, DsKey};
use crate::directory::{MAX_BATCH, validate_key_package};
use crate::error::DsError;
use crate::fanout::{Hub, RecentAfter, push_frame};
use crate::ordering::{digest, framing, welcome_refs};
use crate::store::{
    CommitOutcome, DsStore, MessageOutcome, NewCommit, NewGroup, NewMessage, QueueId, SealedStore,
    StoreError,
};

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A per-client rate limit: a token bucket of `burst` requests refilled
/// at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Burst size.
    pub burst: f64,
}

/// The DS's configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DsConfig {
    /// The DS's name in challenges (e.g. its host name).
    pub ds_identity: String,
    /// The cipher suites of the KeyPackages it accepts: each KeyPackage is
    /// validated in its own suite, which must be one of these (groups'
    /// suites are their creators' business; an assisted group's commits
    /// are checked in the group's suite).
    pub cipher_suites: Vec<CipherSuite>,
    /// Application messages are accepted from this many epochs back.
    pub app_window: u64,
    /// Never-acknowledged messages and Welcomes are deleted after this
    /// many seconds.
    pub message_ttl: u64,
    /// A claimed KeyPackageRef routes its Welcome for this many seconds.
    pub route_ttl: u64,
    /// The largest request body (bytes).
    pub max_body: usize,
    /// The per-client rate limit.
    pub rate_limit: RateLimit,
    /// The most messages one fetch returns.
    pub fetch_limit: u32,
    /// The longest group id accepted.
    pub max_group_id: usize,
    /// How often the purge runs.
    pub purge_interval: Duration,
}

impl DsConfig {
    /// Defaults for the DS named `ds_identity`: KeyPackages of suites
    /// 0x0001, 0x0002, 0x0003, 0x0005 and 0x0007 (all hsmls implements), application
    /// messages from 2 epochs back, 14 days of retention, 1 MiB bodies,
    /// 200 requests per second (burst 400) per client.
    pub fn new(ds_identity: impl Into<String>) -> Self {
        DsConfig {
            ds_identity: ds_identity.into(),
            cipher_suites: [0x0001, 0x0002, 0x0003, 0x0005, 0x0007]
                .map(CipherSuite)
                .to_vec(),
            app_window: 2,
            message_ttl: 14 * 86_400,
            route_ttl: 14 * 86_400,
            max_body: 1 << 20,
            rate_limit: RateLimit {
                per_second: 200.0,
                burst: 400.0,
            },
            fetch_limit: 500,
            max_group_id: 255,
            purge_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Default)]
struct Limiter {
    buckets: Mutex<HashMap<QueueId, (f64, std::time::Instant)>>,
}

impl Limiter {
    fn allow(&self, q: &QueueId, limit: RateLimit) -> bool {
        let now = std::time::Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() > 100_000 {
            b.retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(60));
        }
        let (tokens, last) = b.entry(*q).or_insert((limit.burst, now));
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * limit.per_second).min(limit.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The Delivery Service: storage, push hub, authentication, rules.
#[derive(Debug)]
pub struct Ds<S: DsStore> {
    store: SealedStore<S>,
    hub: Hub,
    auth: Authenticator,
    config: DsConfig,
    limiter: Limiter,
    modes: Mutex<HashMap<Vec<u8>, GroupMode>>,
}

fn queue_str(q: &QueueId) -> String {
    hex::encode(&q[..4])
}

impl<S: DsStore> Ds<S> {
    /// A DS over `store`, with its key and the Authentication Service's
    /// credential rules. The store holds tags and sealed cells under keys
    /// derived from `key` ([`SealedStore`]); a database written under
    /// another key is refused at its first use
    /// ([`crate::store::StoreError::WrongDsKey`]).
    pub fn new(
        store: S,
        hub: Hub,
        key: DsKey,
        authenticator: Arc<dyn ClientAuthenticator>,
        config: DsConfig,
    ) -> Self {
        let store = SealedStore::new(store, &key);
        let auth = Authenticator::new(key, config.ds_identity.clone(), authenticator);
        Ds {
            store,
            hub,
            auth,
            config,
            limiter: Limiter::default(),
            modes: Mutex::new(HashMap::new()),
        }
    }

    /// The store (its values sealed under the DS key on their way in).
    pub fn store(&self) -> &SealedStore<S> {
        &self.store
    }

    /// The push hub.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The configuration.
    pub fn config(&self) -> &DsConfig {
        &self.config
    }

    /// The authentication state.
    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// A fresh challenge.
    pub fn challenge(&self) -> crate::api::Challenge {
        self.auth.challenge(now())
    }

    /// Verifies a signed challenge and opens a session.
    pub async fn open_session(&self, req: &SessionRequest) -> Result<Session, DsError> {
        let t = now();
        let client = self
            .auth
            .verify(req, t)
            .map_err(|f| DsError::AuthenticationFailed(f.as_str()))?;
        let tag = self.auth.key().identity_tag(&client.identity);
        let queue = self.store.client_queue(tag).await?;
        let expires_at = t + self.auth.session_ttl;
        tracing::info!(queue = %queue_str(&queue), "session opened");
        Ok(Session {
            token: self.auth.session_token(&queue, expires_at),
            queue_id: queue.to_vec(),
            expires_at,
        })
    }

    /// The queue of a bearer token, rate limited.
    pub fn session(&self, token: &str) -> Result<QueueId, DsError> {
        let q = self
            .auth
            .check_session(token, now())
            .map_err(|_: AuthFailure| DsError::Unauthenticated)?;
        if !self.limiter.allow(&q, self.config.rate_limit) {
            return Err(DsError::RateLimited);
        }
        Ok(q)
    }

    /// Publishes the client's own KeyPackages (all or none).
    pub async fn publish(
        &self,
        queue: QueueId,
        req: PublishKeyPackages,
    ) -> Result<KeyPackageCounts, DsError> {
        if req.key_packages.is_empty() || req.key_packages.len() > MAX_BATCH {
            return Err(DsError::MalformedRequest(
                "1 to 100 KeyPackages per request",
            ));
        }
        let t = now();
        let mut kps = Vec::with_capacity(req.key_packages.len());
        let authenticator = self.auth.client_authenticator().clone();
        for bytes in &req.key_packages {
            let (kp, identity) =
                validate_key_package(bytes, &self.config.cipher_suites, &authenticator, t)?;
            // The credential must name the publisher (the store knows
            // clients by the tag of their identity).
            let tag = self.auth.key().identity_tag(&identity);
            if self.store.find_client(tag).await? != Some(queue) {
                return Err(DsError::IdentityMismatch);
            }
            kps.push(kp);
        }
        self.store.publish_key_packages(queue, kps).await?;
        Ok(self.store.key_package_counts(queue, t).await?)
    }

    /// The client's counts.
    pub async fn counts(&self, queue: QueueId) -> Result<KeyPackageCounts, DsError> {
        Ok(self.store.key_package_counts(queue, now()).await?)
    }

    /// Claims a KeyPackage of the client named `identity`.
    pub async fn claim(&self, identity: &[u8]) -> Result<ClaimedKeyPackage, DsError> {
        let tag = self.auth.key().identity_tag(identity);
        let owner = self
            .store
            .find_client(tag)
            .await?
            .ok_or(DsError::NoKeyPackage)?;
        let t = now();
        let c = self
            .store
            .claim_key_package(owner, t, t.saturating_add(self.config.route_ttl))
            .await?
            .ok_or(DsError::NoKeyPackage)?;
        if c.last_resort {
            // The owner learns it from its counts; wake its connection.
            self.hub.queue_changed(&owner);
        }
        Ok(ClaimedKeyPackage {
            key_package: c.key_package,
            last_resort: c.last_resort,
        })
    }

    /// Creates a group with the client as its only member.
    pub async fn create_group(&self, queue: QueueId, req: CreateGroup) -> Result<(), DsError> {
        if req.group_id.is_empty()
            || req.group_id.len() > self.config.max_group_id.min(usize::from(u16::MAX))
        {
            return Err(DsError::MalformedRequest("group id length"));
        }
        let (public_state, group_info) = match req.mode {
            GroupMode::Blind => (None, None),
            GroupMode::Assisted => {
                let (state, gi) = assisted::create(self, queue, &req).await?;
                (Some(state), Some(gi))
            }
        };
        let created = self
            .store
            .create_group(NewGroup {
                group_id: req.group_id,
                mode: req.mode,
                epoch: req.epoch,
                creator: queue,
                public_state,
                group_info,
            })
            .await?;
        if !created {
            return Err(DsError::GroupExists);
        }
        self.hub.queue_changed(&queue);
        Ok(())
    }

    /// The queues of clients named by identity (declared removals).
    async fn queues_of(&self, identities: &[Vec<u8>]) -> Result<Vec<QueueId>, DsError> {
        let mut out = Vec::with_capacity(identities.len());
        for id in identities {
            let tag = self.auth.key().identity_tag(id);
            let q = self
                .store
                .find_client(tag)
                .await?
                .ok_or(DsError::MalformedRequest("a removed client is unknown"))?;
            out.push(q);
        }
        Ok(out)
    }

    /// The queue of the client a credential names.
    pub(crate) async fn queue_of_credential(
        &self,
        credential: &Credential,
        key: &hsmls::wire::SignaturePublicKey,
    ) -> Result<Option<QueueId>, DsError> {
        let identity = self
            .auth
            .client_authenticator()
            .identity(credential, key)
            .map_err(|e| DsError::InvalidHandshake(e.to_string()))?;
        Ok(self
            .store
            .find_client(self.auth.key().identity_tag(&identity))
            .await?)
    }

    /// Orders a commit bundle.
    pub async fn commit(&self, queue: QueueId, bundle: CommitBundle) -> Result<Accepted, DsError> {
        let f = framing(&bundle.commit)?;
        if f.content_type != ContentType::Commit {
            return Err(DsError::MalformedMessage("not a commit"));
        }
        let record = self
            .store
            .group(f.group_id.clone())
            .await?
            .ok_or(DsError::UnknownGroup)?;
        let d = digest(&bundle.commit);
        // Welcome recipients: the owners of the KeyPackageRefs it names.
        let welcome = match &bundle.welcome {
            Some(w) => {
                let refs = welcome_refs(w)?;
                if refs.is_empty() {
                    return Err(DsError::MalformedMessage("a Welcome without recipients"));
                }
                let owners = self.store.route_key_package_refs(refs.clone()).await?;
                let owners: Option<Vec<QueueId>> = owners.into_iter().collect();
                let owners = owners.ok_or(DsError::UnknownKeyPackageRef)?;
                Some((w.clone(), refs, owners))
            }
            None => None,
        };
        let mut new = NewCommit {
            group_id: f.group_id.clone(),
            epoch: f.epoch,
            digest: d,
            sender: queue,
            external: false,
            message: bundle.commit.clone(),
            welcome: None,
            added: Vec::new(),
            removed: Vec::new(),
            public_state: None,
            group_info: None,
            now: now(),
        };
        match record.mode {
            GroupMode::Blind => {
                if matches!(f.public_sender, Some(s) if !matches!(s, Sender::Member(_))) {
                    return Err(DsError::ModeMismatch("external commits need assisted mode"));
                }
                new.removed = self.queues_of(&bundle.removed).await?;
                if let Some((w, _, owners)) = welcome {
                    new.added = owners.clone();
                    new.welcome = Some((w, owners));
                }
            }
            GroupMode::Assisted => {
                if !f.is_public() {
                    return Err(DsError::ModeMismatch(
                        "assisted mode takes PublicMessage commits",
                    ));
                }
                if !bundle.removed.is_empty() {
                    return Err(DsError::MalformedRequest(
                        "assisted mode reads removals from the commit",
                    ));
                }
                if let Some(outcome) =
                    assisted::commit(self, queue, &record, &f, &bundle, welcome).await?
                {
                    new.external = outcome.external;
                    new.added = outcome.added;
                    new.removed = outcome.removed;
                    new.welcome = outcome.welcome;
                    new.public_state = Some(outcome.public_state);
                    new.group_info = Some(outcome.group_info);
                }
            }
        }
        // Queues whose memberships change hear of it (new members, and
        // removed ones, whose push must stop after the commit).
        let mut changed: Vec<QueueId> = new
            .welcome
            .as_ref()
            .map(|(_, r)| r.clone())
            .unwrap_or_default();
        changed.extend(new.added.iter().chain(&new.removed).copied());
        match self.store.append_commit(new).await? {
            CommitOutcome::Accepted { seq, epoch } => {
                self.hub.publish(&f.group_id, seq, &bundle.commit);
                for q in &changed {
                    self.hub.queue_changed(q);
                }
                tracing::info!(queue = %queue_str(&queue), seq, "commit accepted");
                Ok(Accepted { seq, epoch })
            }
            CommitOutcome::AlreadyAccepted { seq, epoch } => Ok(Accepted { seq, epoch }),
            CommitOutcome::Conflict { current_epoch } => {
                tracing::info!(queue = %queue_str(&queue), "commit lost its epoch");
                Err(DsError::StaleCommit {
                    message_epoch: f.epoch,
                    current_epoch,
                })
            }
            CommitOutcome::NotMember => Err(DsError::NotMember),
            CommitOutcome::UnknownGroup => Err(DsError::UnknownGroup),
        }
    }

    /// Orders an application message or a proposal.
    pub async fn message(&self, queue: QueueId, bytes: Vec<u8>) -> Result<Accepted, DsError> {
        let f = framing(&bytes)?;
        let window = self.message_window(f.content_type)?;
        let mode = self.mode_of(&f.group_id).await?;
        let d = digest(&bytes);
        let mut last_epoch = 0;
        for _attempt in 0..4 {
            let public_state = match (mode, f.content_type) {
                (GroupMode::Assisted, ContentType::Proposal) => {
                    let record = self
                        .store
                        .group(f.group_id.clone())
                        .await?
                        .ok_or(DsError::UnknownGroup)?;
                    last_epoch = record.epoch;
                    Some(assisted::proposal(self, &record, &f, &bytes)?)
                }
                _ => None,
            };
            let outcome = self
                .store
                .append_message(NewMessage {
                    group_id: f.group_id.clone(),
                    epoch: f.epoch,
                    window,
                    digest: d,
                    sender: queue,
                    message: bytes.clone(),
                    public_state,
                    now: now(),
                })
                .await?;
            match self.answer(&f.group_id, f.epoch, &bytes, outcome) {
                Some(answer) => return answer,
                None => continue,
            }
        }
        // The group kept moving under four attempts: the proposal is not
        // of its epoch any more.
        Err(DsError::WrongEpoch {
            message_epoch: f.epoch,
            current_epoch: last_epoch,
        })
    }

    /// How many epochs back a posted message of `content_type` is taken
    /// (commits go in a commit bundle).
    fn message_window(&self, content_type: ContentType) -> Result<u64, DsError> {
        match content_type {
            ContentType::Commit => Err(DsError::MalformedMessage("commits go in a commit bundle")),
            ContentType::Proposal => Ok(0),
            ContentType::Application => Ok(self.config.app_window),
        }
    }

    /// The answer to a posted message the store decided (an accepted one
    /// is published to the push connections); `None` if the group's state
    /// changed under an assisted proposal (decide it again).
    fn answer(
        &self,
        group_id: &[u8],
        message_epoch: u64,
        bytes: &[u8],
        outcome: MessageOutcome,
    ) -> Option<Result<Accepted, DsError>> {
        Some(match outcome {
            MessageOutcome::Accepted { seq, epoch } => {
                self.hub.publish(group_id, seq, bytes);
                Ok(Accepted { seq, epoch })
            }
            MessageOutcome::Duplicate { seq } => Err(DsError::Duplicate { seq }),
            MessageOutcome::WrongEpoch { current_epoch } => Err(DsError::WrongEpoch {
                message_epoch,
                current_epoch,
            }),
            MessageOutcome::StateChanged => return None,
            MessageOutcome::NotMember => Err(DsError::NotMember),
            MessageOutcome::UnknownGroup => Err(DsError::UnknownGroup),
        })
    }

    /// Orders several application messages or proposals of `queue`, in
    /// the order given (as [`Ds::message`] would one after the other, but
    /// the plain ones stored together: one writer transaction with
    /// SQLite). Each gets its own answer; a refused one does not stop the
    /// others.
    pub async fn messages(
        &self,
        queue: QueueId,
        messages: Vec<Vec<u8>>,
    ) -> Vec<Result<Accepted, DsError>> {
        let mut results: Vec<Option<Result<Accepted, DsError>>> =
            (0..messages.len()).map(|_| None).collect();
        // A run of plain messages (no assisted proposal) waiting to be
        // stored: their index, group id and epoch, and the message.
        let mut run: Vec<(usize, Vec<u8>, u64, NewMessage)> = Vec::new();
        for (i, bytes) in messages.into_iter().enumerate() {
            let f = match framing(&bytes) {
                Ok(f) => f,
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            };
            let window = match self.message_window(f.content_type) {
                Ok(w) => w,
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            };
            let mode = match self.mode_of(&f.group_id).await {
                Ok(m) => m,
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            };
            if mode == GroupMode::Assisted && f.content_type == ContentType::Proposal {
                // Checked against the public state: alone, in its turn.
                self.store_run(&mut run, &mut results).await;
                results[i] = Some(self.message(queue, bytes).await);
                continue;
            }
            let new = NewMessage {
                group_id: f.group_id.clone(),
                epoch: f.epoch,
                window,
                digest: digest(&bytes),
                sender: queue,
                message: bytes,
                public_state: None,
                now: now(),
            };
            run.push((i, f.group_id, f.epoch, new));
        }
        self.store_run(&mut run, &mut results).await;
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(DsError::MalformedMessage("not decided"))))
            .collect()
    }

    /// Stores a run of plain messages for [`Ds::messages`], in order.
    async fn store_run(
        &self,
        run: &mut Vec<(usize, Vec<u8>, u64, NewMessage)>,
        results: &mut [Option<Result<Accepted, DsError>>],
    ) {
        if run.is_empty() {
            return;
        }
        let run = std::mem::take(run);
        let news: Vec<NewMessage> = run.iter().map(|(_, _, _, m)| m.clone()).collect();
        match self.store.append_messages(news).await {
            Ok(outcomes) => {
                for ((i, group_id, epoch, m), outcome) in run.into_iter().zip(outcomes) {
                    results[i] = Some(match self.answer(&group_id, epoch, &m.message, outcome) {
                        Some(answer) => answer,
                        // Only a message with public state can meet a
                        // changed state; decide it alone.
                        None => self.message(m.sender, m.message).await,
                    });
                }
            }
            Err(e) => {
                let mut first = Some(e);
                for (i, ..) in run {
                    let e = first.take().unwrap_or(StoreError::BatchFailed);
                    results[i] = Some(Err(DsError::Storage(e)));
                }
            }
        }
    }

    /// A group's mode (it never changes), from a bounded in-memory cache
    /// or the store.
    async fn mode_of(&self, group_id: &[u8]) -> Result<GroupMode, DsError> {
        if let Some(m) = self
            .modes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(group_id)
        {
            return Ok(*m);
        }
        let record = self
            .store
            .group(group_id.to_vec())
            .await?
            .ok_or(DsError::UnknownGroup)?;
        let mut modes = self.modes.lock().unwrap_or_else(|e| e.into_inner());
        if modes.len() >= 100_000 {
            modes.clear();
        }
        modes.insert(group_id.to_vec(), record.mode);
        Ok(record.mode)
    }

    /// What is after the client's cursors: Welcomes, then each group's
    /// messages in order (at most `limit` in all).
    pub async fn fetch(&self, queue: QueueId, limit: u32) -> Result<QueueBatch, DsError> {
        let limit = limit.clamp(1, self.config.fetch_limit);
        let welcomes = self.store.read_welcomes(queue, limit).await?;
        let mut batch = QueueBatch {
            welcomes: welcomes
                .into_iter()
                .map(|(id, welcome)| QueuedWelcome { id, welcome })
                .collect(),
            messages: Vec::new(),
        };
        let mut left = limit;
        for m in self.store.memberships(queue).await? {
            if left == 0 {
                break;
            }
            let msgs = self
                .store
                .read_messages(m.group_id.clone(), m.cursor, m.until, left)
                .await?;
            left -= msgs.len() as u32;
            batch
                .messages
                .extend(msgs.into_iter().map(|s| QueuedMessage {
                    group_id: m.group_id.clone(),
                    seq: s.seq,
                    message: s.message,
                }));
        }
        Ok(batch)
    }

    /// Acknowledges.
    pub async fn ack(&self, queue: QueueId, ack: Ack) -> Result<(), DsError> {
        if ack.messages.len() > 10_000 || ack.welcomes.len() > 10_000 {
            return Err(DsError::MalformedRequest("too many positions"));
        }
        self.store
            .acknowledge(
                queue,
                ack.messages
                    .into_iter()
                    .map(|p| (p.group_id, p.seq))
                    .collect(),
                ack.welcomes,
            )
            .await?;
        Ok(())
    }

    /// Refuses a client that is not a current member of the group: the
    /// public state of an assisted group (GroupInfo, ratchet tree) is
    /// served to its members only, for a resync after a lost state.
    async fn member_only(&self, queue: QueueId, group_id: &[u8]) -> Result<(), DsError> {
        if self.store.is_member(group_id.to_vec(), queue).await? {
            Ok(())
        } else {
            Err(DsError::NotMember)
        }
    }

    /// Assisted mode: the current GroupInfo (`MLSMessage`), for a member.
    pub async fn group_info(&self, queue: QueueId, group_id: Vec<u8>) -> Result<Vec<u8>, DsError> {
        self.member_only(queue, &group_id).await?;
        let g = self
            .store
            .group(group_id)
            .await?
            .ok_or(DsError::UnknownGroup)?;
        g.group_info.ok_or(DsError::ModeMismatch(
            "the DS keeps no GroupInfo of a blind group",
        ))
    }

    /// Assisted mode: the current ratchet tree (`RatchetTree` encoding),
    /// for a member.
    pub async fn ratchet_tree(
        &self,
        queue: QueueId,
        group_id: Vec<u8>,
    ) -> Result<Vec<u8>, DsError> {
        self.member_only(queue, &group_id).await?;
        let g = self
            .store
            .group(group_id.clone())
            .await?
            .ok_or(DsError::UnknownGroup)?;
        assisted::ratchet_tree(self, &g)
    }

    /// Runs the purge once.
    pub async fn purge(&self) -> Result<crate::store::Purged, DsError> {
        let t = now();
        let p = self
            .store
            .purge(t, t.saturating_sub(self.config.message_ttl))
            .await?;
        tracing::info!(
            key_packages = p.key_packages,
            messages = p.messages,
            welcomes = p.welcomes,
            routes = p.routes,
            "purged"
        );
        Ok(p)
    }
}

// ----- HTTP -----

impl IntoResponse for DsError {
    fn into_response(self) -> Response {
        if let DsError::Storage(e) = &self {
            tracing::error!(error = %e, "storage failure");
        }
        let p = self.problem();
        let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&p).unwrap_or_default();
        (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            body,
        )
            .into_response()
    }
}

type Shared<S> = Arc<Ds<S>>;

fn bearer(headers: &HeaderMap) -> Result<&str, DsError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(DsError::Unauthenticated)
}

fn body_of(b: Result<Bytes, axum::extract::rejection::BytesRejection>) -> Result<Bytes, DsError> {
    b.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            DsError::PayloadTooLarge
        } else {
            DsError::MalformedRequest("unreadable body")
        }
    })
}

fn json_of<T: serde::de::DeserializeOwned>(
    b: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, DsError> {
    let b = body_of(b)?;
    serde_json::from_slice(&b).map_err(|_| DsError::MalformedRequest("invalid JSON body"))
}

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

fn group_path(g: &str) -> Result<Vec<u8>, DsError> {
    b64::decode(g).ok_or(DsError::MalformedRequest("group id is not base64url"))
}

fn own_queue(session: QueueId, path: &str) -> Result<(), DsError> {
    let q = b64::decode(path).ok_or(DsError::MalformedRequest("queue id is not base64url"))?;
    if q.as_slice() == session.as_slice() {
        Ok(())
    } else {
        Err(DsError::NotOwnQueue)
    }
}

async fn h_challenge<S: DsStore>(State(ds): State<Shared<S>>) -> Response {
    json(StatusCode::OK, &ds.challenge())
}

async fn h_session<S: DsStore>(
    State(ds): State<Shared<S>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, DsError> {
    let req: SessionRequest = json_of(body)?;
    Ok(json(StatusCode::OK, &ds.open_session(&req).await?))
}

async fn h_publish<S: DsStore>(
    State(ds): State<Shared<S>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, DsError> {
    let q = ds.session(bearer(&headers)?)?;
    let req: PublishKeyPackages = json_of(body)?;
    Ok(json(StatusCode::OK, &ds.publish(q, req).await?))
}

async fn h_counts<S: DsStore>(
    State(ds): State<Shared<S>>,
    headers: HeaderMap,
) -> Result<Response, DsError> {
    let q = ds.session(bearer(&headers)?)?;
    Ok(json(StatusCode::OK, &ds.counts(q).await?))
}

async fn h_claim<S: DsStore>(
    State(ds): State<Shared<S>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, DsError> {
    ds.session(bearer(&headers)?)?;
    let req: ClaimRequest = json_of(body)?;
    Ok(json(StatusCode::OK, &ds.claim(&req.identity).await?))
}

async fn h_create<S: DsStore>(
    State(ds): State<Shared<S>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, DsError> {
    let q = ds.session(bearer(&headers)?)?;
    let req: CreateGroup = json_of(body)?;
    ds.create_group(q, req).await?;
    Ok(StatusCode::CREATED.into_response())
}

async fn h_commit<S: DsStore>(
    State(ds): State<Shared<S>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, DsError> {
    let q = ds.session(bearer(&headers)?)?;
    let req: CommitBundle = json_of(body)?;
    Ok(json(StatusCode::OK, &ds.commit(q, req).await?))
}

async fn h_message<S: DsStore>(
    State(ds): State<Shared<S>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, DsError> {
    let q = ds.session(bearer(&headers)?)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct != MESSAGE_MLS {
        return Err(DsError::MalformedRequest(
            "Content-Type must be message/mls",
        ));
    }
    let b = body_of(body)?;
    Ok(json(StatusCode::OK, &ds.message(q, b.to_vec()).await?))
}

async fn h_group_info<S: DsStore>(
    State(ds): State<Shared<S>>,
    headers: HeaderMap,
    Path(group): Path<String>,
) -> Result<Response, DsError> {
    let q = ds.session(bearer(&headers)?)?;
    let gi = ds.group_info(q, group_path(&group)?).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(MESSAGE_MLS))],
        gi,
    )
        .into_response())
}

async fn h_ratchet_tree<S: DsStore>(
    State(ds): State<Shared<S>>,
    headers: HeaderMap,
    Path(group): Path<String>,
) -> Result<Response, DsError> {
    let q = ds.session(bearer(&headers)?)?;
    let t = ds.ratchet_tree(q, group_path(&group)?).await?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        t,
    )
        .into_response())
}

#[derive(Debug, serde::Deserialize)]
struct FetchQuery {
    limit: Option<u32>,
}

async fn h_fetch<S: DsStore>(
    State(ds): State<Shared<S>>,
    headers: HeaderMap,
    Path(queue): Path<String>,
    Query(query): Query<FetchQuery>,
) -> Result<Response, DsError> {
    let q = ds.session(bearer(&headers)?)?;
    own_queue(q, &queue)?;
    let limit = query.limit.unwrap_or(ds.config.fetch_limit);
    Ok(json(StatusCode::OK, &ds.fetch(q, limit).await?))
}

async fn h_ack<S: DsStore>(
    State(ds): State<Shared<S>>,
    headers: HeaderMap,
    Path(queue): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, DsError> {
    let q = ds.session(bearer(&headers)?)?;
    own_queue(q, &queue)?;
    let ack: Ack = json_of(body)?;
    ds.ack(q, ack).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn h_ws<S: DsStore>(
    State(ds): State<Shared<S>>,
    headers: HeaderMap,
    Path(queue): Path<String>,
    ws: WebSocketUpgrade,
) -> Result<Response, DsError> {
    let token = bearer(&headers)?.to_owned();
    let q = ds.session(&token)?;
    own_queue(q, &queue)?;
    Ok(ws
        .max_message_size(ds.config.max_body)
        .on_upgrade(move |socket| async move {
            if let Err(e) = push(ds, q, token, socket).await {
                tracing::debug!(error = %e, "push connection ended");
            }
        }))
}

/// Messages sent on one push connection and not yet answered, at most:
/// past this the connection stops reading until answers go out (the
/// client's sends wait in its socket).
pub const MAX_SENDS_IN_FLIGHT: usize = 256;

/// The most messages sent on a push connection that are stored together.
const SEND_BATCH: usize = 64;

/// The messages sent on one push connection ([`crate::api::SendFrame`]),
/// ordered in the order they came: those waiting are taken together and
/// stored by one [`Ds::messages`] call, and the next ones wait for it.
/// Each is answered as `POST /v1/messages` would answer it, with the
/// session checked (and rate limited) per message. A frame that does not
/// decode is answered with `None` (the connection then closes).
///
/// It runs in its own task, not in the connection's loop: with
/// PostgreSQL a message holds its group's row lock until it commits, and
/// the loop may be waiting on the store for an acknowledgement.
async fn order_sends<S: DsStore>(
    ds: Shared<S>,
    token: Arc<str>,
    mut frames: tokio::sync::mpsc::Receiver<Bytes>,
    answers: tokio::sync::mpsc::Sender<Option<ServerFrame>>,
) {
    let mut batch = Vec::with_capacity(SEND_BATCH);
    while let Some(first) = frames.recv().await {
        batch.push(first);
        while batch.len() < SEND_BATCH {
            match frames.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        // Each frame: its id and either a message to store or its refusal.
        let mut decided: Vec<(u64, Option<Result<Accepted, DsError>>)> = Vec::new();
        let mut to_store = Vec::new();
        let mut queue = None;
        let mut malformed = false;
        for frame in batch.drain(..) {
            let Ok(send) = SendFrame::decode(&frame) else {
                malformed = true;
                break;
            };
            match ds.session(&token) {
                Ok(q) => {
                    queue = Some(q);
                    to_store.push(send.message.to_vec());
                    decided.push((send.request_id, None));
                }
                Err(e) => decided.push((send.request_id, Some(Err(e)))),
            }
        }
        let mut stored = match queue {
            Some(q) => ds.messages(q, to_store).await.into_iter(),
            None => Vec::new().into_iter(),
        };
        for (id, result) in decided {
            let result = match result {
                Some(r) => r,
                None => stored
                    .next()
                    .unwrap_or(Err(DsError::MalformedMessage("not decided"))),
            };
            let frame = match result {
                Ok(accepted) => ServerFrame::Accepted { id, accepted },
                Err(e) => {
                    if let DsError::Storage(err) = &e {
                        tracing::error!(error = %err, "storage failure");
                    }
                    ServerFrame::Refused {
                        id,
                        problem: e.problem(),
                    }
                }
            };
            if answers.send(Some(frame)).await.is_err() {
                return;
            }
        }
        if malformed {
            let _ = answers.send(None).await;
            return;
        }
    }
}

/// One push connection: sends what is after its positions, then whatever
/// arrives, and takes acknowledgements, resume positions and messages to
/// order (binary frames, answered on the connection). New group messages
/// come from the hub's recent messages when it has them, else from the
/// store; a queue event (a Welcome, a membership change) or the periodic
/// timer re-reads the Welcomes and memberships.
async fn push<S: DsStore>(
    ds: Shared<S>,
    queue: QueueId,
    token: String,
    mut socket: WebSocket,
) -> Result<(), String> {
    let token: Arc<str> = token.into();
    let group_notify = Arc::new(Notify::new());
    let queue_notify = Arc::new(Notify::new());
    ds.hub.follow_queue(&queue, &queue_notify);
    let mut positions: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut sent_welcomes: std::collections::BTreeSet<u64> = Default::default();
    let mut followed: std::collections::HashSet<Vec<u8>> = Default::default();
    // Messages sent on the connection are ordered by their own task
    // (`order_sends`), their answers coming back here.
    let (sends, sends_rx) = tokio::sync::mpsc::channel(MAX_SENDS_IN_FLIGHT);
    let (answers, mut answers_rx) = tokio::sync::mpsc::channel(MAX_SENDS_IN_FLIGHT);
    tokio::spawn(order_sends(ds.clone(), token.clone(), sends_rx, answers));
    let mut in_flight = 0usize;
    let limit = ds.config.fetch_limit;
    // The client names its positions first (a `resume` frame); without one
    // within 2 s, delivery starts from the stored cursors.
    match tokio::time::timeout(Duration::from_secs(2), socket.recv()).await {
        Ok(Some(Ok(WsMessage::Text(t)))) => match serde_json::from_str::<ClientFrame>(t.as_str()) {
            Ok(ClientFrame::Resume { positions: p }) => {
                for gp in p {
                    positions.insert(gp.group_id, gp.seq);
                }
            }
            Ok(ClientFrame::Ack(ack)) => ds.ack(queue, ack).await.map_err(|e| e.to_string())?,
            Err(_) => return Err("malformed client frame".into()),
        },
        Ok(Some(Ok(WsMessage::Binary(b)))) => {
            in_flight += 1;
            // Room: at most MAX_SENDS_IN_FLIGHT are in flight.
            let _ = sends.send(b).await;
        }
        _ => {}
    }
    let mut memberships = Vec::new();
    let mut refresh = true;
    loop {
        if refresh {
            refresh = false;
            let welcomes = ds
                .store
                .read_welcomes(queue, limit)
                .await
                .map_err(|e| e.to_string())?;
            for (id, welcome) in welcomes {
                if sent_welcomes.insert(id) {
                    let frame = ServerFrame::Welcome(QueuedWelcome { id, welcome });
                    feed_frame(&mut socket, &frame).await?;
                }
            }
            memberships = ds
                .store
                .memberships(queue)
                .await
                .map_err(|e| e.to_string())?;
            for m in &memberships {
                if followed.insert(m.group_id.clone()) {
                    ds.hub.follow_group(&m.group_id, &group_notify);
                }
            }
        }
        let mut more = false;
        let mut gap = false;
        for m in &memberships {
            let pos = positions.entry(m.group_id.clone()).or_insert(m.cursor);
            if *pos < m.cursor {
                *pos = m.cursor;
            }
            let msgs: Vec<(u64, Bytes)> =
                match ds
                    .hub
                    .recent_after(&m.group_id, *pos, m.until, limit as usize)
                {
                    RecentAfter::UpToDate => continue,
                    RecentAfter::Pending => {
                        gap = true;
                        continue;
                    }
                    RecentAfter::Messages(v) => v,
                    RecentAfter::Unknown => ds
                        .store
                        .read_messages(m.group_id.clone(), *pos, m.until, limit)
                        .await
                        .map_err(|e| e.to_string())?
                        .into_iter()
                        .map(|s| (s.seq, push_frame(&m.group_id, s.seq, &s.message)))
                        .collect(),
                };
            if !msgs.is_empty() {
                more = true;
            }
            // Queued without a flush each: one write for the batch.
            for (seq, frame) in msgs {
                *pos = seq;
                socket
                    .feed(WsMessage::Binary(frame))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        socket.flush().await.map_err(|e| e.to_string())?;
        if more {
            continue;
        }
        let reading = in_flight < MAX_SENDS_IN_FLIGHT;
        tokio::select! {
            _ = group_notify.notified() => {}
            _ = queue_notify.notified() => refresh = true,
            _ = tokio::time::sleep(Duration::from_secs(30)) => refresh = true,
            _ = tokio::time::sleep(crate::fanout::GAP_WAIT), if gap => {}
            Some(answer) = answers_rx.recv(), if in_flight > 0 => {
                in_flight -= 1;
                match answer {
                    Some(frame) => feed_frame(&mut socket, &frame).await?,
                    None => return Err("malformed send frame".into()),
                }
                // Every answer that is ready goes out in the same write.
                while let Ok(answer) = answers_rx.try_recv() {
                    in_flight -= 1;
                    match answer {
                        Some(frame) => feed_frame(&mut socket, &frame).await?,
                        None => return Err("malformed send frame".into()),
                    }
                }
            }
            incoming = socket.recv(), if reading => {
                let Some(Ok(msg)) = incoming else { return Ok(()) };
                match msg {
                    WsMessage::Text(t) => {
                        let frame: ClientFrame = serde_json::from_str(t.as_str())
                            .map_err(|_| "malformed client frame".to_string())?;
                        match frame {
                            ClientFrame::Resume { positions: p } => {
                                for gp in p {
                                    positions.insert(gp.group_id, gp.seq);
                                }
                            }
                            ClientFrame::Ack(ack) => {
                                let ids = ack.welcomes.clone();
                                ds.ack(queue, ack).await.map_err(|e| e.to_string())?;
                                for id in ids {
                                    sent_welcomes.remove(&id);
                                }
                            }
                        }
                    }
                    WsMessage::Binary(b) => {
                        in_flight += 1;
                        let _ = sends.send(b).await;
                    }
                    WsMessage::Close(_) => return Ok(()),
                    _ => {}
                }
            }
        }
    }
}

/// Queues a control frame without flushing (the loop flushes).
async fn feed_frame(socket: &mut WebSocket, frame: &ServerFrame) -> Result<(), String> {
    let text = serde_json::to_string(frame).map_err(|e| e.to_string())?;
    socket
        .feed(WsMessage::Text(text.into()))
        .await
        .map_err(|e| e.to_string())
}

/// The DS's HTTP routes.
pub fn router<S: DsStore>(ds: Shared<S>) -> Router {
    let limit = ds.config.max_body;
    Router::new()
        .route("/v1/auth/challenge", post(h_challenge::<S>))
        .route("/v1/auth/session", post(h_session::<S>))
        .route("/v1/key-packages", post(h_publish::<S>).get(h_counts::<S>))
        .route("/v1/key-packages/claim", post(h_claim::<S>))
        .route("/v1/groups", post(h_create::<S>))
        .route("/v1/commit-bundles", post(h_commit::<S>))
        .route("/v1/messages", post(h_message::<S>))
        .route("/v1/groups/{group}/group-info", get(h_group_info::<S>))
        .route("/v1/groups/{group}/ratchet-tree", get(h_ratchet_tree::<S>))
        .route("/v1/queues/{queue}/messages", get(h_fetch::<S>))
        .route("/v1/queues/{queue}/ack", post(h_ack::<S>))
        .route("/v1/queues/{queue}/ws", get(h_ws::<S>))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(ds)
}

/// The rustls server configuration of the DS: its certificate chain
/// (PEM, leaf first) and private key (PEM: PKCS#8, SEC1 or PKCS#1),
/// HTTP/1.1 by ALPN (the WebSocket upgrade is HTTP/1.1).
pub fn tls_server_config(
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("TLS certificate chain: no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("TLS key: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(crate::client::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("TLS certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// [`tls_server_config`] from files (the key file is read into zeroizing
/// memory).
pub fn tls_server_config_from_files(
    chain: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain_pem = std::fs::read(chain).map_err(|e| format!("{}: {e}", chain.display()))?;
    let key_pem =
        zeroize::Zeroizing::new(std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?);
    tls_server_config(&chain_pem, &key_pem)
}

/// Serves `ds` over TLS (HTTPS and WebSocket over TLS) on `listener`
/// until `shutdown` resolves (open requests then get five seconds to
/// finish); runs the purge every [`DsConfig::purge_interval`].
pub async fn serve<S: DsStore>(
    ds: Shared<S>,
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let purger = {
        let ds = ds.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ds.config.purge_interval);
            loop {
                tick.tick().await;
                if let Err(e) = ds.purge().await {
                    tracing::warn!(error = %e, "purge failed");
                }
            }
        })
    };
    let handle = axum_server::Handle::new();
    let stopper = {
        let handle = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            handle.graceful_shutdown(Some(Duration::from_secs(5)));
        })
    };
    // TLS on top of TCP without Nagle's delay (small requests and push
    // frames).
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(
        axum_server::tls_rustls::RustlsConfig::from_config(tls),
    )
    .acceptor(axum_server::accept::NoDelayAcceptor::new());
    let server = axum_server::from_tcp(listener)?
        .acceptor(acceptor)
        .handle(handle);
    let app = router(ds).into_make_service_with_connect_info::<SocketAddr>();
    let r = server.serve(app).await;
    purger.abort();
    stopper.abort();
    r
}

/// Decodes a `Credential` (TLS encoding).
pub fn decode_credential(bytes: &[u8]) -> Option<Credential> {
    Credential::decode(bytes).ok()
}

/// Where the DS keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreChoice {
    /// An SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL URL.
    Postgres(String),
}

/// The options of `serve` on the command line.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// The address to listen on.
    pub listen: String,
    /// The store.
    pub store: StoreChoice,
    /// The DS key file.
    pub key_file: std::path::PathBuf,
    /// The TLS certificate chain (PEM, leaf first).
    pub tls_cert: std::path::PathBuf,
    /// The TLS private key (PEM).
    pub tls_key: std::path::PathBuf,
    /// The DS configuration.
    pub config: DsConfig,
    /// How clients are authenticated.
    pub credentials: CredentialChoice,
}

/// Which credentials the DS accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialChoice {
    /// The AS's X.509 credentials: its root certificate (PEM or DER)
    /// and, if given, its URL to fetch the CRL from (at start and every
    /// [`CRL_REFRESH`]); without a URL, a CRL file.
    X509 {
        /// The AS root certificate file (PEM or DER).
        root: std::path::PathBuf,
        /// The AS base URL (`https://…`).
        as_url: Option<String>,
        /// A CRL file (PEM or DER), if no URL.
        crl: Option<std::path::PathBuf>,
    },
    /// Basic credentials (tests and demos: they prove no identity).
    Basic,
}

/// How often the CRL is fetched again from the AS.
pub const CRL_REFRESH: Duration = Duration::from_secs(300);

/// Parses `serve` arguments (see the `hsmls-ds` binary).
pub fn parse_serve(args: &[String]) -> Result<ServeOptions, String> {
    let mut listen = "127.0.0.1:8443".to_string();
    let mut store = None;
    let mut key_file = None;
    let (mut tls_cert, mut tls_key) = (None, None);
    let mut config = DsConfig::new("hsmls-ds");
    let mut basic = false;
    let (mut root, mut as_url, mut crl) = (None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = value()?,
            "--sqlite" => store = Some(StoreChoice::Sqlite(value()?.into())),
            "--postgres" => store = Some(StoreChoice::Postgres(value()?)),
            "--key-file" => key_file = Some(std::path::PathBuf::from(value()?)),
            "--tls-cert" => tls_cert = Some(std::path::PathBuf::from(value()?)),
            "--tls-key" => tls_key = Some(std::path::PathBuf::from(value()?)),
            "--as-root" => root = Some(std::path::PathBuf::from(value()?)),
            "--as-url" => as_url = Some(value()?),
            "--as-crl" => crl = Some(std::path::PathBuf::from(value()?)),
            "--basic-credentials" => basic = true,
            "--ds-identity" => config.ds_identity = value()?,
            "--app-window" => {
                config.app_window = value()?.parse().map_err(|_| "--app-window: a number")?
            }
            "--rate" => {
                let r: f64 = value()?.parse().map_err(|_| "--rate: a number")?;
                config.rate_limit = RateLimit {
                    per_second: r,
                    burst: r * 2.0,
                };
            }
            "--max-body" => {
                config.max_body = value()?.parse().map_err(|_| "--max-body: a number")?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let credentials = match (root, basic) {
        (Some(root), false) => {
            if as_url.is_none() && crl.is_none() {
                return Err("--as-root needs --as-url URL or --as-crl FILE (the CRL)".into());
            }
            CredentialChoice::X509 { root, as_url, crl }
        }
        (None, true) => CredentialChoice::Basic,
        _ => {
            return Err(
                "either --as-root FILE (X.509 credentials of the AS) or --basic-credentials".into(),
            );
        }
    };
    Ok(ServeOptions {
        listen,
        store: store.ok_or("--sqlite FILE or --postgres URL is needed")?,
        key_file: key_file.ok_or("--key-file FILE is needed")?,
        tls_cert: tls_cert.ok_or("--tls-cert PEM is needed (the DS speaks TLS only)")?,
        tls_key: tls_key.ok_or("--tls-key PEM is needed (the DS speaks TLS only)")?,
        config,
        credentials,
    })
}

/// The options of `load` on the command line.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadOptions {
    /// The DS URLs (`https://…`), members spread over them.
    pub bases: Vec<String>,
    /// The roots the clients trust for the DS's TLS certificate (PEM).
    pub tls_roots: std::path::PathBuf,
    /// The group size.
    pub members: usize,
    /// The run.
    pub config: crate::loadgen::LoadConfig,
}

/// Parses `load` arguments: the DS URLs and the roots they are trusted
/// by, the group size, the run.
pub fn parse_load(args: &[String]) -> Result<LoadOptions, String> {
    let mut bases = Vec::new();
    let mut tls_roots = None;
    let mut members = 10usize;
    let mut c = crate::loadgen::LoadConfig::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        let num = |v: String| v.parse::<f64>().map_err(|_| format!("{a}: a number"));
        match a.as_str() {
            "--url" => bases = value()?.split(',').map(str::to_string).collect(),
            "--tls-roots" => tls_roots = Some(std::path::PathBuf::from(value()?)),
            "--members" => members = num(value()?)? as usize,
            "--rate" => c.rate = num(value()?)?,
            "--duration" => c.duration = Duration::from_secs_f64(num(value()?)?),
            "--max" => c.max_messages = num(value()?)? as u64,
            "--payload" => c.payload = num(value()?)? as usize,
            "--senders" => c.senders = num(value()?)? as usize,
            "--drain" => c.drain = Duration::from_secs_f64(num(value()?)?),
            "--in-flight" => c.in_flight = num(value()?)? as usize,
            "--send-over" => {
                c.transport = match value()?.as_str() {
                    "ws" => crate::loadgen::SendTransport::WebSocket,
                    "http" => crate::loadgen::SendTransport::Http,
                    _ => return Err("--send-over: ws or http".into()),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if bases.is_empty() {
        return Err("--url is needed".into());
    }
    if !(c.rate > 0.0 && c.rate <= 1_000_000.0) {
        return Err("--rate: between 0 and 1,000,000".into());
    }
    Ok(LoadOptions {
        bases,
        tls_roots: tls_roots.ok_or("--tls-roots PEM is needed (the roots of the DS's TLS)")?,
        members,
        config: c,
    })
}

/// Reads the DS key from `path`, creating it (mode 0600) if it is missing.
pub fn load_or_create_key(path: &std::path::Path) -> Result<DsKey, String> {
    match std::fs::read(path) {
        Ok(b) => {
            let k: [u8; 32] = b
                .as_slice()
                .try_into()
                .map_err(|_| format!("{}: not a 32-byte key", path.display()))?;
            Ok(DsKey::from_bytes(k))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = DsKey::generate();
            let mut open = std::fs::OpenOptions::new();
            open.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                open.mode(0o600);
            }
            use std::io::Write;
            match open.open(path) {
                Ok(mut f) => {
                    f.write_all(key.bytes()).map_err(|e| e.to_string())?;
                    Ok(key)
                }
                // Another process created it first: read its key.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_key(path),
                Err(e) => Err(format!("{}: {e}", path.display())),
            }
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Runs `serve` until SIGINT/SIGTERM, authenticating clients with
/// `authenticator` (see [`authenticator`]); prints `listening on ADDR` on
/// standard output once it listens.
pub async fn run_serve(
    opts: ServeOptions,
    authenticator: Arc<dyn ClientAuthenticator>,
) -> Result<(), String> {
    let key = load_or_create_key(&opts.key_file)?;
    let tls = tls_server_config_from_files(&opts.tls_cert, &opts.tls_key)?;
    let listener =
        std::net::TcpListener::bind(&opts.listen).map_err(|e| format!("{}: {e}", opts.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let hub = Hub::new();
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    match opts.store {
        StoreChoice::Sqlite(path) => {
            let store = crate::store::SqliteStore::open(&path, Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let ds = Arc::new(Ds::new(store, hub, key, authenticator, opts.config));
            ds.store().check_key().await.map_err(|e| e.to_string())?;
            println!("listening on {addr}");
            tokio::spawn(serve(ds, listener, tls, shutdown))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        }
        StoreChoice::Postgres(url) => {
            let store = crate::store::PostgresStore::connect(&url, 16)
                .await
                .map_err(|e| e.to_string())?;
            let ds = Arc::new(Ds::new(store, hub.clone(), key, authenticator, opts.config));
            ds.store().check_key().await.map_err(|e| e.to_string())?;
            let listen_task = ds.store().inner().listen(hub, ds.store().at_rest().clone());
            println!("listening on {addr}");
            let r = tokio::spawn(serve(ds, listener, tls, shutdown))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            listen_task.abort();
            r
        }
    }
}

/// The client authenticator of a credential choice; for X.509 with an AS
/// URL, the CRL is fetched now and then every [`CRL_REFRESH`] (a failed
/// refresh keeps the last CRL, and credentials are refused once it
/// expires).
pub async fn authenticator(
    choice: &CredentialChoice,
) -> Result<Arc<dyn ClientAuthenticator>, String> {
    match choice {
        CredentialChoice::Basic => Ok(Arc::new(crate::auth::ValidatorAuthenticator::basic())),
        CredentialChoice::X509 { root, as_url, crl } => {
            use rustls::pki_types::pem::PemObject;
            use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
            let root_der = std::fs::read(root).map_err(|e| format!("{}: {e}", root.display()))?;
            let root_der = if root_der.starts_with(b"-----BEGIN") {
                CertificateDer::from_pem_slice(&root_der)
                    .map_err(|e| format!("{}: {e}", root.display()))?
                    .to_vec()
            } else {
                root_der
            };
            let validator = Arc::new(
                hsmls_credentials::X509CredentialValidator::new(std::slice::from_ref(&root_der))
                    .map_err(|e| e.to_string())?,
            );
            if let Some(path) = crl {
                let der = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let der = if der.starts_with(b"-----BEGIN") {
                    CertificateRevocationListDer::from_pem_slice(&der)
                        .map_err(|e| format!("{}: {e}", path.display()))?
                        .to_vec()
                } else {
                    der
                };
                validator.set_crl(&der).map_err(|e| e.to_string())?;
            }
            if let Some(url) = as_url {
                let client = hsmls_credentials::client::AsClient::new(url, &root_der)
                    .map_err(|e| e.to_string())?;
                let der = client.crl().await.map_err(|e| e.to_string())?;
                validator.set_crl(&der).map_err(|e| e.to_string())?;
                let v = validator.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(CRL_REFRESH).await;
                        match client.crl().await {
                            Ok(der) => {
                                if let Err(e) = v.set_crl(&der) {
                                    tracing::warn!(error = %e, "the AS's CRL was refused");
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "fetching the AS's CRL failed"),
                        }
                    }
                });
            }
            Ok(Arc::new(crate::auth::X509Authenticator(validator)))
        }
    }
}

/// The command line: `serve …`.
pub async fn run_cli(args: Vec<String>) -> Result<(), String> {
    match args.split_first() {
        Some((cmd, rest)) if cmd == "serve" => {
            let opts = parse_serve(rest)?;
            let authenticator = authenticator(&opts.credentials).await?;
            run_serve(opts, authenticator).await
        }
        Some((cmd, rest)) if cmd == "load" => {
            let opts = parse_load(rest)?;
            let pem = std::fs::read(&opts.tls_roots)
                .map_err(|e| format!("{}: {e}", opts.tls_roots.display()))?;
            let tls = crate::client::tls_client_config(&pem).map_err(|e| e.to_string())?;
            let tag = format!("{:x}", now());
            let group =
                crate::loadgen::setup_group(&opts.bases, tls, opts.members, &tag).await?;
            let report = crate::loadgen::run(&group, &opts.config).await?;
            println!("{report}");
            Ok(())
        }
        _ => Err("usage: hsmls-ds serve --listen ADDR (--sqlite FILE | --postgres URL) --key-file FILE --tls-cert PEM --tls-key PEM (--as-root DER (--as-url URL | --as-crl DER) | --basic-credentials)\n       hsmls-ds load --url URL[,URL...] --tls-roots PEM [--members N] [--rate MSG/S] [--duration S] [--max N] [--payload BYTES] [--senders N] [--drain S] [--in-flight N] [--send-over ws|http]".into()),
    }
}

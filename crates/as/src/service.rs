//! The Authentication Service's operations, independent of HTTP:
//! enrolment tokens, orders, issuance, renewal, revocation, the CRL and the
//! transparency log. Token signatures run on tokio's blocking pool.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use der::{Decode, Encode};
use hsmls_credentials::api::{
    self, CertificateChain, ConsistencyProof, InclusionProof, Order, OrderStatus, Renew,
    RevokeCert, b64, unb64,
};
use hsmls_credentials::tlog::{self, Hash, LogKey, NodeId};
use hsmls_credentials::{Clock, EntryKind, LogEntry, cert_hash, keys, leaf_info};
use hsmls_custody::{KeyRef, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::ca::{Ca, CaError, LeafRequest, random_serial};
use crate::csr::{CsrError, verify_csr};
use crate::store::{IssueOutcome, NewCert, OrderRow, RevokeOutcome, Store, StoreError};

/// Why a request was refused. Each variant is one rule and maps to one
/// RFC 9457 problem type ([`AsError::problem_type`]) and HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AsError {
    /// The request is not what the resource takes.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The request body is over the limit.
    #[error("request body over the limit")]
    TooLarge,
    /// The CSR was refused.
    #[error("bad CSR: {0}")]
    BadCsr(#[from] CsrError),
    /// The enrolment token is unknown, or bound to another identity.
    #[error("unknown enrolment token for this identity")]
    Unauthorized,
    /// The enrolment token has been used.
    #[error("the enrolment token has already been used")]
    TokenUsed,
    /// The enrolment token has expired.
    #[error("the enrolment token has expired")]
    TokenExpired,
    /// No such order.
    #[error("unknown order")]
    UnknownOrder,
    /// The order has already been finalized.
    #[error("the order is not ready for finalization")]
    OrderNotReady,
    /// No such certificate issued by this AS.
    #[error("unknown certificate")]
    UnknownCertificate,
    /// The certificate has been revoked.
    #[error("the certificate has been revoked")]
    AlreadyRevoked,
    /// The certificate has expired (renewal comes too late).
    #[error("the certificate has expired")]
    CertificateExpired,
    /// The proof-of-possession signature does not verify.
    #[error("the proof-of-possession signature does not verify")]
    BadProofOfPossession,
    /// No such log entry or tree size.
    #[error("unknown log entry or tree size")]
    UnknownLogEntry,
    /// No such resource.
    #[error("not found")]
    NotFound,
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The CA (the token) failed.
    #[error("CA: {0}")]
    Ca(#[from] CaError),
}

impl AsError {
    /// The RFC 9457 problem type URI (see [`api::problem`]).
    pub fn problem_type(&self) -> &'static str {
        use api::problem as p;
        match self {
            AsError::Malformed(_) => p::MALFORMED,
            AsError::TooLarge => p::TOO_LARGE,
            AsError::BadCsr(_) => p::BAD_CSR,
            AsError::Unauthorized => p::UNAUTHORIZED,
            AsError::TokenUsed => p::TOKEN_USED,
            AsError::TokenExpired => p::TOKEN_EXPIRED,
            AsError::UnknownOrder => p::UNKNOWN_ORDER,
            AsError::OrderNotReady => p::ORDER_NOT_READY,
            AsError::UnknownCertificate => p::UNKNOWN_CERTIFICATE,
            AsError::AlreadyRevoked => p::ALREADY_REVOKED,
            AsError::CertificateExpired => p::CERTIFICATE_EXPIRED,
            AsError::BadProofOfPossession => p::BAD_SIGNATURE,
            AsError::UnknownLogEntry => p::UNKNOWN_LOG_ENTRY,
            AsError::NotFound => p::NOT_FOUND,
            AsError::Store(_) | AsError::Ca(_) => p::SERVER_INTERNAL,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            AsError::Malformed(_) | AsError::BadCsr(_) => 400,
            AsError::Unauthorized | AsError::BadProofOfPossession => 403,
            AsError::TokenUsed
            | AsError::TokenExpired
            | AsError::OrderNotReady
            | AsError::AlreadyRevoked
            | AsError::CertificateExpired => 403,
            AsError::UnknownOrder
            | AsError::UnknownCertificate
            | AsError::UnknownLogEntry
            | AsError::NotFound => 404,
            AsError::TooLarge => 413,
            AsError::Store(_) | AsError::Ca(_) => 500,
        }
    }

    /// A short summary of the problem type.
    pub fn title(&self) -> &'static str {
        match self {
            AsError::Malformed(_) => "malformed request",
            AsError::TooLarge => "request too large",
            AsError::BadCsr(_) => "bad CSR",
            AsError::Unauthorized => "unauthorized",
            AsError::TokenUsed => "enrolment token already used",
            AsError::TokenExpired => "enrolment token expired",
            AsError::UnknownOrder => "unknown order",
            AsError::OrderNotReady => "order not ready",
            AsError::UnknownCertificate => "unknown certificate",
            AsError::AlreadyRevoked => "certificate revoked",
            AsError::CertificateExpired => "certificate expired",
            AsError::BadProofOfPossession => "bad proof of possession",
            AsError::UnknownLogEntry => "unknown log entry",
            AsError::NotFound => "not found",
            AsError::Store(_) | AsError::Ca(_) => "internal error",
        }
    }
}

/// The service's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// The AS's base URL (`https://host:port`), used in the CRL
    /// distribution point of every certificate.
    pub public_url: String,
    /// Leaf certificate lifetime, seconds (default 7 days).
    pub leaf_lifetime: u64,
    /// CRL lifetime (nextUpdate − thisUpdate), seconds (default 1 day);
    /// the CRL is re-signed when half of it has passed.
    pub crl_lifetime: u64,
    /// Enrolment token lifetime, seconds (default 1 day).
    pub token_lifetime: u64,
    /// The log's origin line (and signed-note key name).
    pub log_origin: String,
}

impl ServiceConfig {
    /// Defaults for an AS at `public_url`.
    pub fn new(public_url: &str) -> Self {
        ServiceConfig {
            public_url: public_url.trim_end_matches('/').to_owned(),
            leaf_lifetime: 7 * 86_400,
            crl_lifetime: 86_400,
            token_lifetime: 86_400,
            log_origin: "hsmls.invalid/as-log".into(),
        }
    }

    /// The CRL distribution point URL.
    pub fn crl_url(&self) -> String {
        format!("{}/crl", self.public_url)
    }
}

/// The Authentication Service over a store `S`.
pub struct AuthService<S> {
    store: S,
    ca: Ca,
    log_key: KeyRef,
    log_verifier: LogKey,
    config: ServiceConfig,
    clock: Arc<dyn Clock>,
    checkpoint: Mutex<Option<(u64, String)>>,
    crl_lock: tokio::sync::Mutex<()>,
}

impl<S> fmt::Debug for AuthService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthService")
            .field("ca", &self.ca)
            .field("log_key", &self.log_key)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// SHA-256 of an enrolment token (what the store keeps).
pub fn token_hash(token: &str) -> Hash {
    sha256(token.as_bytes())
}

fn spki_der_of(cert_der: &[u8]) -> Result<Vec<u8>, AsError> {
    x509_cert::Certificate::from_der(cert_der)
        .ok()
        .and_then(|c| c.tbs_certificate.subject_public_key_info.to_der().ok())
        .ok_or_else(|| AsError::Malformed("the certificate does not parse".into()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CaError> + Send + 'static,
) -> Result<T, AsError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AsError::Ca(CaError::Build(format!("signing task: {e}"))))?
        .map_err(AsError::Ca)
}

impl<S: Store> AuthService<S> {
    /// The service over `store`, with the CA, the log signing key (in the
    /// same custody as the CA keys) and a clock.
    pub fn new(
        store: S,
        ca: Ca,
        log_key: KeyRef,
        config: ServiceConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AsError> {
        let log_verifier = LogKey::new(&config.log_origin, log_key.public_key().as_bytes())
            .map_err(|e| AsError::Malformed(format!("log key: {e}")))?;
        Ok(AuthService {
            store,
            ca,
            log_key,
            log_verifier,
            config,
            clock,
            checkpoint: Mutex::new(None),
            crl_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }
    /// The CA.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }
    /// The settings.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }
    /// The log's public key as a signed-note verifier (what clients trust).
    pub fn log_verifier(&self) -> &LogKey {
        &self.log_verifier
    }

    /// Issues a one-time enrolment token for `identity` (operator). The
    /// token is returned once and stored only as its SHA-256.
    pub async fn issue_token(&self, identity: &str) -> Result<String, AsError> {
        if identity.is_empty() || identity.len() > hsmls_credentials::MAX_IDENTITY_LEN {
            return Err(AsError::Malformed("bad identity".into()));
        }
        let mut raw = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
        let token = b64(&raw);
        let expires = self.clock.now() + self.config.token_lifetime;
        self.store
            .insert_token(&token_hash(&token), identity, expires)
            .await?;
        Ok(token)
    }

    fn order_view(&self, row: &OrderRow) -> Order {
        let status = match (&row.serial, row.expires > self.clock.now()) {
            (Some(_), _) => OrderStatus::Valid,
            (None, true) => OrderStatus::Ready,
            (None, false) => OrderStatus::Invalid,
        };
        Order {
            id: row.id.clone(),
            status,
            identity: row.identity.clone(),
            expires: row.expires,
            finalize: format!("order/{}/finalize", row.id),
            certificate: row.serial.as_ref().map(|s| format!("cert/{s}")),
        }
    }

    /// `new-order`: checks the token (known, for this identity, unused,
    /// unexpired) and opens an order. The token is claimed at finalize.
    pub async fn new_order(&self, identity: &str, token: &str) -> Result<Order, AsError> {
        let hash = token_hash(token);
        let row = self
            .store
            .token(&hash)
            .await?
            .ok_or(AsError::Unauthorized)?;
        if row.identity != identity {
            return Err(AsError::Unauthorized);
        }
        if row.used {
            return Err(AsError::TokenUsed);
        }
        if row.expires <= self.clock.now() {
            return Err(AsError::TokenExpired);
        }
        let mut id = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        let order = OrderRow {
            id: hex::encode(id),
            identity: identity.to_owned(),
            token_hash: hash,
            expires: row.expires,
            serial: None,
        };
        self.store.insert_order(&order).await?;
        Ok(self.order_view(&order))
    }

    /// `order/{id}`.
    pub async fn order(&self, id: &str) -> Result<Order, AsError> {
        let row = self.store.order(id).await?.ok_or(AsError::UnknownOrder)?;
        Ok(self.order_view(&row))
    }

    async fn sign_leaf(
        &self,
        identity: &str,
        scheme: SignatureScheme,
        public_key: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>, u64), AsError> {
        let now = self.clock.now();
        let serial = random_serial();
        let not_after = now + self.config.leaf_lifetime;
        let ca = self.ca.clone();
        let (identity, public_key, crl_url, s) = (
            identity.to_owned(),
            public_key.to_vec(),
            self.config.crl_url(),
            serial.clone(),
        );
        let der = blocking(move || {
            ca.issue_leaf(&LeafRequest {
                identity: &identity,
                scheme,
                public_key: &public_key,
                serial: &s,
                not_before: now,
                not_after,
                crl_url: &crl_url,
            })
        })
        .await?;
        Ok((der, serial, not_after))
    }

    /// `order/{id}/finalize`: verifies the CSR (proof of possession),
    /// signs the leaf in the token and, in one transaction, claims the
    /// token, stores the certificate and logs its issuance. Of concurrent
    /// finalizations with one token exactly one gets a certificate.
    pub async fn finalize(&self, order_id: &str, csr_der: &[u8]) -> Result<Order, AsError> {
        let order = self
            .store
            .order(order_id)
            .await?
            .ok_or(AsError::UnknownOrder)?;
        if order.serial.is_some() {
            return Err(AsError::OrderNotReady);
        }
        let csr = verify_csr(csr_der)?;
        if !(csr.uris.is_empty() || csr.uris == [order.identity.clone()]) {
            return Err(AsError::BadCsr(CsrError::IdentityMismatch));
        }
        let now = self.clock.now();
        if order.expires <= now {
            return Err(AsError::TokenExpired);
        }
        let (der, serial, not_after) = self
            .sign_leaf(&order.identity, csr.scheme, &csr.public_key)
            .await?;
        let serial_hex = hex::encode(&serial);
        let entry = LogEntry {
            kind: EntryKind::Issued,
            time: now,
            serial,
            identity: order.identity.clone(),
            spki_hash: sha256(&csr.spki_der),
            cert_hash: cert_hash(&der),
        }
        .encode();
        let cert = NewCert {
            serial: &serial_hex,
            identity: &order.identity,
            der: &der,
            cert_hash: cert_hash(&der),
            not_after,
            entry: &entry,
        };
        match self
            .store
            .issue_for_order(order_id, &order.token_hash, now, &cert)
            .await?
        {
            IssueOutcome::Issued(_) => {
                tracing::info!(identity = %order.identity, serial = %serial_hex, "issued");
                self.order(order_id).await
            }
            IssueOutcome::TokenExpired => Err(AsError::TokenExpired),
            _ => Err(AsError::TokenUsed),
        }
    }

    fn chain_view(&self, serial: &str, der: &[u8], log_index: u64) -> CertificateChain {
        CertificateChain {
            id: serial.to_owned(),
            chain: vec![b64(der), b64(self.ca.issuing_der())],
            log_index,
        }
    }

    /// `cert/{id}`: the chain, leaf first (without the root, which
    /// members hold as their trust anchor).
    pub async fn certificate(&self, serial: &str) -> Result<CertificateChain, AsError> {
        let row = self
            .store
            .certificate(serial)
            .await?
            .ok_or(AsError::UnknownCertificate)?;
        Ok(self.chain_view(&row.serial, &row.der, row.log_index))
    }

    /// Checks that `cert_der` is a live certificate of this AS and that
    /// `signature` over `label ‖ message` verifies with its key.
    async fn possession(
        &self,
        cert_der: &[u8],
        label: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<crate::store::CertRow, AsError> {
        let row = self
            .store
            .certificate_by_hash(&cert_hash(cert_der))
            .await?
            .ok_or(AsError::UnknownCertificate)?;
        if row.revoked_at.is_some() {
            return Err(AsError::AlreadyRevoked);
        }
        if row.not_after <= self.clock.now() {
            return Err(AsError::CertificateExpired);
        }
        let info = leaf_info(cert_der).map_err(|e| AsError::Malformed(e.to_string()))?;
        let mut signed = label.to_vec();
        signed.extend_from_slice(message);
        if !keys::verify(info.scheme, &info.public_key, &signed, signature) {
            return Err(AsError::BadProofOfPossession);
        }
        Ok(row)
    }

    /// `renew`: a new certificate for the same identity, for the CSR's key,
    /// given the current (live, unexpired) certificate and a signature by
    /// its key over [`api::RENEW_LABEL`] ‖ CSR.
    pub async fn renew(&self, req: &Renew) -> Result<CertificateChain, AsError> {
        let cert_der = unb64(&req.certificate)
            .ok_or_else(|| AsError::Malformed("certificate is not base64url".into()))?;
        let csr_der =
            unb64(&req.csr).ok_or_else(|| AsError::Malformed("csr is not base64url".into()))?;
        let signature = unb64(&req.signature)
            .ok_or_else(|| AsError::Malformed("signature is not base64url".into()))?;
        let current = self
            .possession(&cert_der, api::RENEW_LABEL, &csr_der, &signature)
            .await?;
        let csr = verify_csr(&csr_der)?;
        if !(csr.uris.is_empty() || csr.uris == [current.identity.clone()]) {
            return Err(AsError::BadCsr(CsrError::IdentityMismatch));
        }
        let now = self.clock.now();
        let (der, serial, not_after) = self
            .sign_leaf(&current.identity, csr.scheme, &csr.public_key)
            .await?;
        let serial_hex = hex::encode(&serial);
        let entry = LogEntry {
            kind: EntryKind::Issued,
            time: now,
            serial,
            identity: current.identity.clone(),
            spki_hash: sha256(&csr.spki_der),
            cert_hash: cert_hash(&der),
        }
        .encode();
        let index = self
            .store
            .issue(&NewCert {
                serial: &serial_hex,
                identity: &current.identity,
                der: &der,
                cert_hash: cert_hash(&der),
                not_after,
                entry: &entry,
            })
            .await?;
        Ok(self.chain_view(&serial_hex, &der, index))
    }

    /// `revoke-cert`: a holder revokes its own certificate with a
    /// signature by its key over [`api::REVOKE_LABEL`] ‖ certificate.
    pub async fn revoke_cert(&self, req: &RevokeCert) -> Result<(), AsError> {
        let cert_der = unb64(&req.certificate)
            .ok_or_else(|| AsError::Malformed("certificate is not base64url".into()))?;
        let signature = unb64(&req.signature)
            .ok_or_else(|| AsError::Malformed("signature is not base64url".into()))?;
        let row = self
            .possession(&cert_der, api::REVOKE_LABEL, &cert_der, &signature)
            .await?;
        self.revoke(&row.serial).await.map(|_| ())
    }

    /// Revokes the certificate with serial `serial` (hex) (operator): marks
    /// it, logs the revocation and re-signs the CRL. Returns the log index
    /// of the revocation entry.
    pub async fn revoke(&self, serial: &str) -> Result<u64, AsError> {
        let row = self
            .store
            .certificate(serial)
            .await?
            .ok_or(AsError::UnknownCertificate)?;
        let now = self.clock.now();
        let entry = LogEntry {
            kind: EntryKind::Revoked,
            time: now,
            serial: hex::decode(&row.serial).map_err(|_| StoreError::Corrupt("serial"))?,
            identity: row.identity.clone(),
            spki_hash: sha256(&spki_der_of(&row.der)?),
            cert_hash: cert_hash(&row.der),
        }
        .encode();
        match self.store.revoke(serial, now, &entry).await? {
            RevokeOutcome::Revoked(index) => {
                tracing::info!(identity = %row.identity, serial, "revoked");
                self.refresh_crl().await?;
                Ok(index)
            }
            RevokeOutcome::AlreadyRevoked => Err(AsError::AlreadyRevoked),
            _ => Err(AsError::UnknownCertificate),
        }
    }

    /// Signs a new CRL of every revoked certificate and stores it.
    pub async fn refresh_crl(&self) -> Result<Vec<u8>, AsError> {
        let _guard = self.crl_lock.lock().await;
        let revoked = self
            .store
            .revoked()
            .await?
            .into_iter()
            .map(|(s, at)| {
                hex::decode(&s)
                    .map(|s| (s, at))
                    .map_err(|_| StoreError::Corrupt("serial"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let number = self.store.next_crl_number().await?;
        let (ca, now, lifetime) = (self.ca.clone(), self.clock.now(), self.config.crl_lifetime);
        let der = blocking(move || ca.sign_crl(number, &revoked, now, lifetime)).await?;
        self.store.store_crl(number, &der).await?;
        Ok(der)
    }

    /// `crl`: the latest CRL, re-signed first when half its lifetime has
    /// passed (or when there is none).
    pub async fn crl(&self) -> Result<Vec<u8>, AsError> {
        if let Some(der) = self.store.latest_crl().await? {
            let this_update = x509_cert::crl::CertificateList::from_der(&der)
                .map_err(|_| StoreError::Corrupt("stored CRL"))?
                .tbs_cert_list
                .this_update
                .to_unix_duration()
                .as_secs();
            if this_update + self.config.crl_lifetime / 2 > self.clock.now() {
                return Ok(der);
            }
        }
        self.refresh_crl().await
    }

    async fn nodes(
        &self,
        op: impl Fn(&mut dyn FnMut(NodeId) -> Result<Hash, ()>),
    ) -> Result<HashMap<NodeId, Hash>, AsError> {
        let ids = tlog::nodes_read(&op);
        let hashes = self.store.log_nodes(&ids).await?;
        Ok(ids.into_iter().zip(hashes).collect())
    }

    fn lookup(map: &HashMap<NodeId, Hash>) -> impl FnMut(NodeId) -> Result<Hash, AsError> + '_ {
        |id| {
            map.get(&id)
                .copied()
                .ok_or(AsError::Store(StoreError::Corrupt("missing log node")))
        }
    }

    /// The log's root at `size`.
    pub async fn log_root(&self, size: u64) -> Result<Hash, AsError> {
        let map = self
            .nodes(|f| {
                let mut f = f;
                let _ = tlog::root(size, &mut f);
            })
            .await?;
        tlog::root(size, &mut Self::lookup(&map))
    }

    /// `log/checkpoint`: the latest checkpoint as a C2SP signed note, signed
    /// by the log key in the token.
    pub async fn checkpoint(&self) -> Result<String, AsError> {
        let size = self.store.log_size().await?;
        let cached = self
            .checkpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((s, note)) = cached
            && s == size
        {
            return Ok(note);
        }
        let root = self.log_root(size).await?;
        let text = tlog::Checkpoint {
            origin: self.config.log_origin.clone(),
            size,
            root,
        }
        .to_text();
        let (custody, key, t) = (
            self.ca.custody().clone(),
            self.log_key.clone(),
            text.clone(),
        );
        let sig = blocking(move || Ok(custody.sign(&key, t.as_bytes())?)).await?;
        let note = format!("{text}\n{}", self.log_verifier.signature_line(&sig));
        *self.checkpoint.lock().unwrap_or_else(|p| p.into_inner()) = Some((size, note.clone()));
        Ok(note)
    }

    /// `log/proof/inclusion`: the inclusion proof of the issuance of the
    /// certificate with SHA-256 `cert_hash` in the tree of `tree_size`.
    pub async fn inclusion_proof(
        &self,
        cert_hash: &Hash,
        tree_size: u64,
    ) -> Result<InclusionProof, AsError> {
        let size = self.store.log_size().await?;
        if tree_size == 0 || tree_size > size {
            return Err(AsError::UnknownLogEntry);
        }
        let index = self
            .store
            .log_index_of(cert_hash)
            .await?
            .filter(|i| *i < tree_size)
            .ok_or(AsError::UnknownLogEntry)?;
        let entry = self
            .store
            .log_entry(index)
            .await?
            .ok_or(AsError::UnknownLogEntry)?;
        let map = self
            .nodes(|f| {
                let mut f = f;
                let _ = tlog::inclusion_proof(index, tree_size, &mut f);
            })
            .await?;
        let proof = tlog::inclusion_proof(index, tree_size, &mut Self::lookup(&map))?;
        Ok(InclusionProof {
            index,
            tree_size,
            entry,
            proof: api::encode_hashes(&proof),
        })
    }

    /// `log/proof/consistency` between sizes `first` and `second`.
    pub async fn consistency_proof(
        &self,
        first: u64,
        second: u64,
    ) -> Result<ConsistencyProof, AsError> {
        let size = self.store.log_size().await?;
        if first > second || second > size {
            return Err(AsError::UnknownLogEntry);
        }
        let map = self
            .nodes(|f| {
                let mut f = f;
                let _ = tlog::consistency_proof(first, second, &mut f);
            })
            .await?;
        let proof = tlog::consistency_proof(first, second, &mut Self::lookup(&map))?;
        Ok(ConsistencyProof {
            first,
            second,
            proof: api::encode_hashes(&proof),
        })
    }
}

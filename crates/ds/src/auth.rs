//! Authentication: a client proves it holds the private key of its
//! AS-issued credential by signing a DS challenge with its MLS signature
//! key (in its token, through custody), and gets a short-lived bearer
//! session.
//!
//! - `POST /v1/auth/challenge` returns a [`Challenge`]: 32 random bytes,
//!   the DS's identity, the time, and a MAC under the DS key (so any DS
//!   process sharing the key checks it; none keeps state per challenge).
//! - The client signs `SignWithLabel(key, "hsmls DS authentication",
//!   challenge.to_be_signed())` (RFC 9420 §5.1.2 labelled signing: the
//!   signature cannot be taken for an MLS signature of anything else) and
//!   sends it with its `Credential` and signature public key.
//! - The DS checks the MAC, the DS identity, the freshness window, that
//!   the nonce was not used before (in this process), the credential with
//!   the Authentication Service's validator ([`ClientAuthenticator`]), and
//!   the signature. The session token is `queue id || expiry || MAC`.
//!
//! The client's identity is never stored: the store knows a client by
//! `HMAC(DS key, identity)` and by its random queue id.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use hsmls::CredentialError;
use hsmls::CredentialValidator;
use hsmls::wire::{CipherSuite, Credential, Decode, SignaturePublicKey};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::api::{AUTH_LABEL, Challenge, SessionRequest, b64};
use crate::store::QueueId;

/// Validates a client's credential with the Authentication Service's rules
/// and says which client identity it names.
pub trait ClientAuthenticator: Send + Sync + fmt::Debug {
    /// Validates `credential` for `signature_key` and returns the identity
    /// of the client it names (the basic credential's identity, the
    /// certificate's subject alternative name).
    fn identity(
        &self,
        credential: &Credential,
        signature_key: &SignaturePublicKey,
    ) -> Result<Vec<u8>, CredentialError>;

    /// [`identity`](Self::identity) for a key that signs in cipher suite
    /// `suite`: an authenticator that can tell the credential's key type
    /// refuses a key of another signature scheme. The default ignores
    /// `suite`.
    fn identity_in_suite(
        &self,
        suite: CipherSuite,
        credential: &Credential,
        signature_key: &SignaturePublicKey,
    ) -> Result<Vec<u8>, CredentialError> {
        let _ = suite;
        self.identity(credential, signature_key)
    }
}

/// A [`ClientAuthenticator`] from an engine [`CredentialValidator`] and a
/// function that reads the identity out of a credential.
#[derive(Clone)]
pub struct ValidatorAuthenticator {
    validator: Arc<dyn CredentialValidator>,
    identity_of: fn(&Credential) -> Option<Vec<u8>>,
}

impl fmt::Debug for ValidatorAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatorAuthenticator")
            .field("validator", &self.validator)
            .finish_non_exhaustive()
    }
}

/// The identity of a basic credential.
pub fn basic_identity(credential: &Credential) -> Option<Vec<u8>> {
    match credential {
        Credential::Basic(id) => Some(id.clone()),
        _ => None,
    }
}

impl ValidatorAuthenticator {
    /// `validator` decides; `identity_of` names the client.
    pub fn new(
        validator: Arc<dyn CredentialValidator>,
        identity_of: fn(&Credential) -> Option<Vec<u8>>,
    ) -> Self {
        ValidatorAuthenticator {
            validator,
            identity_of,
        }
    }

    /// Basic credentials, for tests and demos: they prove nothing about
    /// the identity (anyone may claim any name with a key of its own).
    pub fn basic() -> Self {
        Self::new(
            Arc::new(hsmls::BasicCredentialValidator::default()),
            basic_identity,
        )
    }

    /// The identity of a credential the validator has accepted.
    fn identity_of_valid(&self, credential: &Credential) -> Result<Vec<u8>, CredentialError> {
        match (self.identity_of)(credential) {
            Some(id) if !id.is_empty() => Ok(id),
            _ => Err(CredentialError::Empty),
        }
    }
}

impl ClientAuthenticator for ValidatorAuthenticator {
    fn identity(
        &self,
        credential: &Credential,
        signature_key: &SignaturePublicKey,
    ) -> Result<Vec<u8>, CredentialError> {
        self.validator.validate(credential, signature_key)?;
        self.identity_of_valid(credential)
    }

    fn identity_in_suite(
        &self,
        suite: CipherSuite,
        credential: &Credential,
        signature_key: &SignaturePublicKey,
    ) -> Result<Vec<u8>, CredentialError> {
        // Validated once, in the suite: `identity` would validate again.
        self.validator
            .validate_in_suite(suite, credential, signature_key)?;
        self.identity_of_valid(credential)
    }
}

/// The Authentication Service's X.509 credentials: the chain must lead to
/// the AS root, be unrevoked by the AS's CRL, carry id-kp-imUri and bind
/// the signature key; the identity is the leaf's SAN URI
/// ([`hsmls_credentials::X509CredentialValidator::check`]).
#[derive(Debug, Clone)]
pub struct X509Authenticator(pub Arc<hsmls_credentials::X509CredentialValidator>);

impl ClientAuthenticator for X509Authenticator {
    fn identity(
        &self,
        credential: &Credential,
        signature_key: &SignaturePublicKey,
    ) -> Result<Vec<u8>, CredentialError> {
        self.0
            .check(credential, signature_key, None)
            .map(|leaf| leaf.identity.into_bytes())
            .map_err(CredentialError::from)
    }

    fn identity_in_suite(
        &self,
        suite: CipherSuite,
        credential: &Credential,
        signature_key: &SignaturePublicKey,
    ) -> Result<Vec<u8>, CredentialError> {
        self.0
            .check_in_suite(suite, credential, signature_key, None)
            .map(|leaf| leaf.identity.into_bytes())
            .map_err(CredentialError::from)
    }
}

/// The engine's view of a [`ClientAuthenticator`] (to validate the
/// credentials of KeyPackages and of assisted groups' members).
#[derive(Debug, Clone)]
pub struct AuthenticatorValidator(pub Arc<dyn ClientAuthenticator>);

impl CredentialValidator for AuthenticatorValidator {
    fn validate(
        &self,
        credential: &Credential,
        signature_key: &SignaturePublicKey,
    ) -> Result<(), CredentialError> {
        self.0.identity(credential, signature_key).map(drop)
    }

    fn validate_in_suite(
        &self,
        suite: CipherSuite,
        credential: &Credential,
        signature_key: &SignaturePublicKey,
    ) -> Result<(), CredentialError> {
        self.0
            .identity_in_suite(suite, credential, signature_key)
            .map(drop)
    }
}

/// Why authentication failed (the reasons are not told to the client
/// beyond a short word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The challenge's MAC is wrong (forged or for another DS key).
    #[error("challenge not issued here")]
    ForeignChallenge,
    /// The challenge names another DS.
    #[error("challenge for another DS")]
    WrongDsIdentity,
    /// The challenge is too old (or from the future).
    #[error("challenge expired")]
    ChallengeExpired,
    /// The challenge was used before.
    #[error("challenge already used")]
    ChallengeReused,
    /// The credential does not decode.
    #[error("malformed credential")]
    MalformedCredential,
    /// The Authentication Service's validator refused the credential.
    #[error("credential refused")]
    CredentialRefused,
    /// The signature does not verify with the credential's key.
    #[error("bad signature")]
    BadSignature,
    /// The request names a cipher suite hsmls does not implement.
    #[error("unsupported cipher suite")]
    UnsupportedCipherSuite,
    /// The session token is malformed, forged or expired.
    #[error("invalid session")]
    InvalidSession,
}

impl AuthFailure {
    /// A static description (for problem titles).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::ForeignChallenge => "challenge not issued here",
            AuthFailure::WrongDsIdentity => "challenge for another DS",
            AuthFailure::ChallengeExpired => "challenge expired",
            AuthFailure::ChallengeReused => "challenge already used",
            AuthFailure::MalformedCredential => "malformed credential",
            AuthFailure::CredentialRefused => "credential refused",
            AuthFailure::BadSignature => "bad signature",
            AuthFailure::UnsupportedCipherSuite => "unsupported cipher suite",
            AuthFailure::InvalidSession => "invalid session",
        }
    }
}

/// The DS's secret key (32 bytes), from which the MAC keys of challenges,
/// sessions and identity tags are derived. Every DS process serving the
/// same database uses the same key.
#[derive(Clone)]
pub struct DsKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for DsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DsKey(..)")
    }
}

impl DsKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DsKey(Zeroizing::new(bytes))
    }

    /// The key's bytes (to write the key file).
    pub fn bytes(&self) -> &[u8] {
        &self.0[..]
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut k);
        Self::from_bytes(k)
    }

    /// The key of one purpose: `HMAC-SHA256(key, purpose)`.
    pub(crate) fn subkey(&self, purpose: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut sub = Hmac::<Sha256>::new_from_slice(&self.0[..]).expect("any key length");
        sub.update(purpose);
        Zeroizing::new(sub.finalize().into_bytes().into())
    }

    /// `HMAC-SHA256(HMAC-SHA256(key, purpose), parts…)`.
    pub(crate) fn mac(&self, purpose: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let subkey = self.subkey(purpose);
        let mut m = Hmac::<Sha256>::new_from_slice(&subkey[..]).expect("any key length");
        for p in parts {
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// The stored name of a client identity.
    pub fn identity_tag(&self, identity: &[u8]) -> [u8; 32] {
        self.mac(b"identity", &[identity])
    }
}

/// The authentication state of a DS process.
#[derive(Debug)]
pub struct Authenticator {
    key: DsKey,
    ds_identity: String,
    authenticator: Arc<dyn ClientAuthenticator>,
    /// How long a challenge may be answered (seconds).
    pub challenge_ttl: u64,
    /// How long a session lasts (seconds).
    pub session_ttl: u64,
    used: Mutex<HashMap<[u8; 32], u64>>,
}

/// A verified client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClient {
    /// The identity its credential names.
    pub identity: Vec<u8>,
}

impl Authenticator {
    /// The authentication of the DS named `ds_identity`.
    pub fn new(
        key: DsKey,
        ds_identity: String,
        authenticator: Arc<dyn ClientAuthenticator>,
    ) -> Self {
        Authenticator {
            key,
            ds_identity,
            authenticator,
            challenge_ttl: 120,
            session_ttl: 3600,
            used: Mutex::new(HashMap::new()),
        }
    }

    /// The DS key.
    pub fn key(&self) -> &DsKey {
        &self.key
    }

    /// The client authenticator.
    pub fn client_authenticator(&self) -> &Arc<dyn ClientAuthenticator> {
        &self.authenticator
    }

    fn challenge_mac(&self, nonce: &[u8], ds: &str, at: u64) -> [u8; 32] {
        self.key
            .mac(b"challenge", &[nonce, ds.as_bytes(), &at.to_be_bytes()])
    }

    /// A fresh challenge.
    pub fn challenge(&self, now: u64) -> Challenge {
        let mut nonce = vec![0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let mac = self.challenge_mac(&nonce, &self.ds_identity, now).to_vec();
        Challenge {
            nonce,
            ds_identity: self.ds_identity.clone(),
            issued_at: now,
            mac,
        }
    }

    /// Verifies a signed challenge: the client and the identity its
    /// credential names.
    pub fn verify(&self, req: &SessionRequest, now: u64) -> Result<VerifiedClient, AuthFailure> {
        let c = &req.challenge;
        let expected = self.challenge_mac(&c.nonce, &c.ds_identity, c.issued_at);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &c.mac[..])) {
            return Err(AuthFailure::ForeignChallenge);
        }
        if c.ds_identity != self.ds_identity {
            return Err(AuthFailure::WrongDsIdentity);
        }
        if c.issued_at > now.saturating_add(5)
            || now > c.issued_at.saturating_add(self.challenge_ttl)
        {
            return Err(AuthFailure::ChallengeExpired);
        }
        let cs = hsmls_crypto::CipherSuite(req.cipher_suite)
            .provider()
            .map_err(|_| AuthFailure::UnsupportedCipherSuite)?;
        let credential =
            Credential::decode(&req.credential).map_err(|_| AuthFailure::MalformedCredential)?;
        let key = SignaturePublicKey(req.signature_key.clone());
        let identity = self
            .authenticator
            .identity_in_suite(CipherSuite(req.cipher_suite), &credential, &key)
            .map_err(|_| AuthFailure::CredentialRefused)?;
        cs.verify_with_label(
            &req.signature_key,
            AUTH_LABEL,
            &c.to_be_signed(),
            &req.signature,
        )
        .map_err(|_| AuthFailure::BadSignature)?;
        let nonce: [u8; 32] = c
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| AuthFailure::ForeignChallenge)?;
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.retain(|_, until| *until >= now);
        if used
            .insert(nonce, c.issued_at.saturating_add(self.challenge_ttl))
            .is_some()
        {
            return Err(AuthFailure::ChallengeReused);
        }
        Ok(VerifiedClient { identity })
    }

    /// A session token for `queue`, valid until `expires_at`.
    pub fn session_token(&self, queue: &QueueId, expires_at: u64) -> String {
        let mut t = Vec::with_capacity(56);
        t.extend_from_slice(queue);
        t.extend_from_slice(&expires_at.to_be_bytes());
        let mac = self.key.mac(b"session", &[&t]);
        t.extend_from_slice(&mac);
        b64::encode(&t)
    }

    /// The queue of a valid session token.
    pub fn check_session(&self, token: &str, now: u64) -> Result<QueueId, AuthFailure> {
        let t = b64::decode(token).ok_or(AuthFailure::InvalidSession)?;
        if t.len() != 56 {
            return Err(AuthFailure::InvalidSession);
        }
        let mac = self.key.mac(b"session", &[&t[..24]]);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&mac[..], &t[24..])) {
            return Err(AuthFailure::InvalidSession);
        }
        let expires = u64::from_be_bytes(
            t[16..24]
                .try_into()
                .map_err(|_| AuthFailure::InvalidSession)?,
        );
        if now > expires {
            return Err(AuthFailure::InvalidSession);
        }
        t[..16].try_into().map_err(|_| AuthFailure::InvalidSession)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(
            DsKey::from_bytes([7; 32]),
            "ds.test".into(),
            Arc::new(ValidatorAuthenticator::basic()),
        )
    }

    #[test]
    fn session_tokens() {
        let a = auth();
        let q = [3u8; 16];
        let t = a.session_token(&q, 100);
        assert_eq!(a.check_session(&t, 99), Ok(q));
        assert_eq!(a.check_session(&t, 101), Err(AuthFailure::InvalidSession));
        let mut raw = b64::decode(&t).unwrap();
        raw[0] ^= 1;
        assert_eq!(
            a.check_session(&b64::encode(&raw), 50),
            Err(AuthFailure::InvalidSession)
        );
        let other = Authenticator::new(
            DsKey::from_bytes([8; 32]),
            "ds.test".into(),
            Arc::new(ValidatorAuthenticator::basic()),
        );
        assert_eq!(
            other.check_session(&t, 50),
            Err(AuthFailure::InvalidSession)
        );
    }

    #[test]
    fn forged_challenges() {
        let a = auth();
        let c = a.challenge(1000);
        let req = |challenge: Challenge| SessionRequest {
            challenge,
            credential: vec![],
            signature_key: vec![],
            signature: vec![],
            cipher_suite: 0x0002,
        };
        let mut forged = c.clone();
        forged.issued_at += 1;
        assert_eq!(
            a.verify(&req(forged), 1000),
            Err(AuthFailure::ForeignChallenge)
        );
        assert_eq!(
            a.verify(&req(c.clone()), 2000),
            Err(AuthFailure::ChallengeExpired)
        );
        // A suite hsmls does not implement (X448/Ed448) is refused first.
        let mut x448 = req(c.clone());
        x448.cipher_suite = 0x0004;
        assert_eq!(
            a.verify(&x448, 1000),
            Err(AuthFailure::UnsupportedCipherSuite)
        );
        assert_eq!(
            a.verify(&req(c), 1000),
            Err(AuthFailure::MalformedCredential)
        );
    }
}

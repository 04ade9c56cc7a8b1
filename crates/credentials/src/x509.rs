//! The X.509 credential check every member runs (RFC 9420 §5.3, §5.3.1;
//! RFC 9750 §5): [`X509CredentialValidator`].

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::Decode;
use der::oid::AssociatedOid;
use hsmls::wire::{CipherSuite, LeafIndex};
use hsmls::{
    Certificate, Credential, CredentialError, CredentialValidator, Member, SignaturePublicKey,
    ValidatorError,
};
use p256::ecdsa::signature::Verifier;
use rustls_pki_types::{
    AlgorithmIdentifier, CertificateDer, InvalidSignature, SignatureVerificationAlgorithm,
    TrustAnchor, UnixTime, alg_id,
};
use sha2::{Digest, Sha256};
use webpki::{
    EndEntityCert, ExpirationPolicy, KeyUsage, OwnedCertRevocationList, RevocationCheckDepth,
    RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage as X509KeyUsage, KeyUsages, SubjectAltName};

use crate::keys::{self, SignatureScheme};
use crate::tlog::{self, Hash, LogMonitor};
use crate::{EntryKind, InclusionProof, LogEntry};

/// id-kp-imUri (RFC 9734 §3): 1.3.6.1.5.5.7.3.40, the extended key usage of
/// an instant-messaging client certificate.
pub const ID_KP_IM_URI: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.40");
/// The DER value bytes of [`ID_KP_IM_URI`], as rustls-webpki takes them.
const ID_KP_IM_URI_DER: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x28];

/// The longest certificate chain accepted in a credential (leaf, issuing
/// CA, and room for one more intermediate and the root).
pub const MAX_CHAIN_LEN: usize = 4;
/// The largest certificate accepted (bytes of DER).
pub const MAX_CERT_LEN: usize = 8 * 1024;
/// The largest CRL accepted (bytes of DER).
pub const MAX_CRL_LEN: usize = 1024 * 1024;

/// Why an X.509 credential was refused. Each variant is one rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// Not an x509 credential (RFC 9420 §5.3).
    #[error("credential type {0} is not x509")]
    UnsupportedType(u16),
    /// The x509 credential carries no certificate.
    #[error("the certificate chain is empty")]
    EmptyChain,
    /// More than [`MAX_CHAIN_LEN`] certificates.
    #[error("certificate chain of {0} certificates is too long")]
    ChainTooLong(usize),
    /// A certificate larger than [`MAX_CERT_LEN`].
    #[error("certificate of {0} bytes is too large")]
    CertificateTooLarge(usize),
    /// A certificate that is not valid DER X.509.
    #[error("malformed certificate: {0}")]
    Malformed(&'static str),
    /// The chain does not lead to a trust anchor.
    #[error("the certificate chain does not lead to a trusted root")]
    UnknownIssuer,
    /// A signature in the chain does not verify.
    #[error("a certificate signature does not verify")]
    BadSignature,
    /// The leaf (or a CA) certificate has expired.
    #[error("the certificate has expired")]
    Expired,
    /// The leaf (or a CA) certificate is not valid yet.
    #[error("the certificate is not valid yet")]
    NotYetValid,
    /// The leaf certificate is on the CRL.
    #[error("the certificate has been revoked")]
    Revoked,
    /// The CRL held does not cover the certificate (unknown status is
    /// denied).
    #[error("the certificate's revocation status is unknown")]
    RevocationStatusUnknown,
    /// No CRL is held: revocation cannot be checked.
    #[error("no CRL is held")]
    NoCrl,
    /// The CRL held is past its nextUpdate.
    #[error("the CRL has expired")]
    CrlExpired,
    /// A CRL that does not parse, or its signature does not verify.
    #[error("bad CRL: {0}")]
    BadCrl(&'static str),
    /// A CRL older than the one held (thisUpdate earlier): a rollback.
    #[error("the CRL is older than the one held")]
    StaleCrl,
    /// The leaf has no extended key usage id-kp-imUri (RFC 9734).
    #[error("the leaf certificate lacks extended key usage id-kp-imUri")]
    NotImClient,
    /// The leaf's KeyUsage lacks digitalSignature (RFC 5280 §4.2.1.3).
    #[error("the leaf certificate lacks key usage digitalSignature")]
    NoDigitalSignature,
    /// The leaf names no identity: exactly one SAN URI is required.
    #[error("the leaf certificate does not carry exactly one SAN URI")]
    NoIdentity,
    /// The leaf certificate's key is not one an MLS credential may carry
    /// (Ed25519, or ECDSA on P-256, P-384 or P-521: [`crate::keys`]).
    #[error("the certificate's key is not an Ed25519, P-256, P-384 or P-521 key")]
    UnsupportedKey,
    /// The leaf certificate's key is of another signature scheme than the
    /// group's (or KeyPackage's) cipher suite (RFC 9420 §5.1.2: the
    /// signature key is one of the suite's scheme), or the suite is not
    /// one hsmls implements (`expected` is then `None`).
    #[error("the certificate's key is {found}, not a key of cipher suite 0x{suite:04x}")]
    SchemeMismatch {
        /// The cipher suite.
        suite: u16,
        /// The suite's signature scheme.
        expected: Option<SignatureScheme>,
        /// The scheme of the certificate's key.
        found: SignatureScheme,
    },
    /// The leaf certificate's key is not the LeafNode's signature key
    /// (RFC 9420 §5.3.1).
    #[error("the certificate's key is not the member's signature key")]
    KeyMismatch,
    /// The identity in the certificate is not the one claimed.
    #[error("identity {found:?} is not the one claimed, {expected:?}")]
    IdentityMismatch {
        /// The identity claimed.
        expected: String,
        /// The identity in the certificate.
        found: String,
    },
    /// The leaf certificate has not been shown to be in the AS's
    /// transparency log (no verified inclusion proof for it).
    #[error("the certificate is not known to be in the transparency log")]
    NotLogged,
    /// An inclusion proof that does not verify, or names another
    /// certificate.
    #[error("bad inclusion proof: {0}")]
    BadInclusion(tlog::LogError),
    /// Another path-validation failure reported by rustls-webpki.
    #[error("certificate path rejected: {0}")]
    Path(String),
}

impl From<ValidationError> for CredentialError {
    fn from(e: ValidationError) -> Self {
        match e {
            ValidationError::UnsupportedType(t) => CredentialError::UnsupportedType(t),
            ValidationError::EmptyChain => CredentialError::Empty,
            other => CredentialError::Rejected(ValidatorError::new(other)),
        }
    }
}

/// The time source of a validator: Unix seconds.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time, in seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A clock that tests set.
#[derive(Debug, Default)]
pub struct FixedClock(AtomicU64);

impl FixedClock {
    /// A clock showing `now`.
    pub fn new(now: u64) -> Self {
        FixedClock(AtomicU64::new(now))
    }
    /// Sets the time.
    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// ECDSA P-256 with SHA-256 on the `p256` crate, for rustls-webpki: a
/// pure-Rust verifier ([`X509CredentialValidator::with_algorithms`]).
///
/// It is not the default: measured on the development machine, p256 0.13
/// verifies a signature in about 250 µs (its generic scalar ladder), so a
/// chain of two certificates plus the CRL (three verifications) takes
/// about 0.8 ms, over the 0.5 ms budget; ring's assembly verifier, already
/// built for rustls, does the same work in about a quarter of the time
/// (BENCHMARKS.md).
#[derive(Debug, Clone, Copy)]
pub struct EcdsaP256Sha256;

impl SignatureVerificationAlgorithm for EcdsaP256Sha256 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        let key =
            p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).map_err(|_| InvalidSignature)?;
        let sig = p256::ecdsa::Signature::from_der(signature).map_err(|_| InvalidSignature)?;
        key.verify(message, &sig).map_err(|_| InvalidSignature)
    }
    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_P256
    }
    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_SHA256
    }
}

/// The verifiers used by default: ECDSA P-256/SHA-256 only, on ring.
pub static DEFAULT_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] =
    &[webpki::ring::ECDSA_P256_SHA256];

/// The pure-Rust verifiers: ECDSA P-256/SHA-256 on p256.
pub static P256_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[&EcdsaP256Sha256];

/// What a validated leaf certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// The identity: the certificate's one SAN URI.
    pub identity: String,
    /// The serial number (big-endian bytes as in the certificate).
    pub serial: Vec<u8>,
    /// The subject public key, in the MLS encoding of its scheme (SEC1
    /// uncompressed point, or the 32-byte Ed25519 key).
    pub public_key: Vec<u8>,
    /// The signature scheme of the subject public key.
    pub scheme: SignatureScheme,
    /// notAfter, Unix seconds.
    pub not_after: u64,
}

/// Parses the fields of a leaf certificate the checks need (no chain
/// validation).
pub fn leaf_info(der_bytes: &[u8]) -> Result<LeafInfo, ValidationError> {
    Ok(parse_leaf(der_bytes)?.info)
}

struct ParsedLeaf {
    info: LeafInfo,
    im_uri: bool,
    digital_signature: bool,
}

fn parse_leaf(der_bytes: &[u8]) -> Result<ParsedLeaf, ValidationError> {
    if der_bytes.len() > MAX_CERT_LEN {
        return Err(ValidationError::CertificateTooLarge(der_bytes.len()));
    }
    let cert = x509_cert::Certificate::from_der(der_bytes)
        .map_err(|_| ValidationError::Malformed("not a DER X.509 certificate"))?;
    let tbs = &cert.tbs_certificate;
    let spki = &tbs.subject_public_key_info;
    let scheme = keys::scheme_of_spki(spki).ok_or(ValidationError::UnsupportedKey)?;
    let public_key = spki
        .subject_public_key
        .as_bytes()
        .ok_or(ValidationError::Malformed("bad subject public key"))?
        .to_vec();
    let mut identity = None;
    let mut uris = 0;
    let mut im_uri = false;
    let mut digital_signature = false;
    for ext in tbs.extensions.iter().flatten() {
        let value = ext.extn_value.as_bytes();
        if ext.extn_id == SubjectAltName::OID {
            let san = SubjectAltName::from_der(value)
                .map_err(|_| ValidationError::Malformed("bad subjectAltName"))?;
            for name in san.0 {
                if let GeneralName::UniformResourceIdentifier(uri) = name {
                    uris += 1;
                    identity = Some(uri.as_str().to_owned());
                }
            }
        } else if ext.extn_id == ExtendedKeyUsage::OID {
            let eku = ExtendedKeyUsage::from_der(value)
                .map_err(|_| ValidationError::Malformed("bad extendedKeyUsage"))?;
            im_uri = eku.0.contains(&ID_KP_IM_URI);
        } else if ext.extn_id == X509KeyUsage::OID {
            let ku = X509KeyUsage::from_der(value)
                .map_err(|_| ValidationError::Malformed("bad keyUsage"))?;
            digital_signature = ku.0.contains(KeyUsages::DigitalSignature);
        }
    }
    let identity = match (uris, identity) {
        (1, Some(id)) => id,
        _ => return Err(ValidationError::NoIdentity),
    };
    let not_after = tbs.validity.not_after.to_unix_duration().as_secs();
    Ok(ParsedLeaf {
        info: LeafInfo {
            identity,
            serial: tbs.serial_number.as_bytes().to_vec(),
            public_key,
            scheme,
            not_after,
        },
        im_uri,
        digital_signature,
    })
}

/// SHA-256 of a DER certificate: how the transparency log names it.
pub fn cert_hash(der_bytes: &[u8]) -> Hash {
    Sha256::digest(der_bytes).into()
}

/// Builds the MLS x509 credential (RFC 9420 §5.3) from a chain of DER
/// certificates, leaf first.
pub fn x509_credential(chain: &[Vec<u8>]) -> Credential {
    Credential::X509(
        chain
            .iter()
            .map(|c| Certificate {
                cert_data: c.clone(),
            })
            .collect(),
    )
}

struct State {
    crl: Option<(webpki::CertRevocationList<'static>, u64)>,
    logged: HashSet<Hash>,
}

/// Whether credentials must be shown to be in the AS's transparency log.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Transparency {
    /// No log check.
    Off,
    /// Every leaf certificate must have been shown, through
    /// [`X509CredentialValidator::record_inclusion`], to be in the log that
    /// this monitor follows.
    Required(Arc<LogMonitor>),
}

/// The credential check every member runs (an
/// [`hsmls::CredentialValidator`]): an x509 credential is accepted when
///
/// * its chain leads to one of the trust anchors (the AS root) through
///   rustls-webpki, signatures ECDSA P-256/SHA-256, every certificate
///   valid at the clock's time;
/// * the leaf is not on the CRL held (a CRL is required, unknown status is
///   denied, an expired CRL refuses everything);
/// * the leaf has extended key usage id-kp-imUri (RFC 9734; checked on the
///   leaf only, since webpki would apply it to every CA of the path) and
///   KeyUsage digitalSignature;
/// * the leaf names exactly one identity (SAN URI), and its key is the
///   LeafNode's signature key;
/// * with [`Transparency::Required`], the leaf has been shown to be in the
///   AS's log.
///
/// The CRL and the log state change at run time (`set_crl`,
/// `record_inclusion`) while the engine holds the validator in an `Arc`.
pub struct X509CredentialValidator {
    anchors: Vec<TrustAnchor<'static>>,
    algorithms: &'static [&'static dyn SignatureVerificationAlgorithm],
    clock: Arc<dyn Clock>,
    transparency: Transparency,
    state: RwLock<State>,
}

impl fmt::Debug for X509CredentialValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509CredentialValidator")
            .field("anchors", &self.anchors.len())
            .field("clock", &self.clock)
            .field("transparency", &self.transparency)
            .finish_non_exhaustive()
    }
}

impl X509CredentialValidator {
    /// A validator trusting the root certificates `roots` (DER), on the
    /// system clock, without a CRL yet (every credential is refused with
    /// [`ValidationError::NoCrl`] until [`set_crl`](Self::set_crl)).
    pub fn new(roots: &[Vec<u8>]) -> Result<Self, ValidationError> {
        let anchors = roots
            .iter()
            .map(|r| {
                webpki::anchor_from_trusted_cert(&CertificateDer::from(r.as_slice()))
                    .map(|a| a.to_owned())
                    .map_err(|_| ValidationError::Malformed("bad trust anchor"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(X509CredentialValidator {
            anchors,
            algorithms: DEFAULT_ALGORITHMS,
            clock: Arc::new(SystemClock),
            transparency: Transparency::Off,
            state: RwLock::new(State {
                crl: None,
                logged: HashSet::new(),
            }),
        })
    }

    /// Uses these signature verifiers (e.g. [`P256_ALGORITHMS`]) instead of
    /// [`DEFAULT_ALGORITHMS`].
    pub fn with_algorithms(
        mut self,
        algorithms: &'static [&'static dyn SignatureVerificationAlgorithm],
    ) -> Self {
        self.algorithms = algorithms;
        self
    }

    /// Uses `clock` as the time source.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the transparency requirement.
    pub fn with_transparency(mut self, transparency: Transparency) -> Self {
        self.transparency = transparency;
        self
    }

    /// Replaces the CRL held by `crl_der` (from the distribution point the
    /// certificates name). A CRL whose thisUpdate is older than the one
    /// held is refused ([`ValidationError::StaleCrl`]); a malformed one
    /// leaves the current one in place. The CRL's signature is checked
    /// against the issuing CA when a certificate is validated.
    pub fn set_crl(&self, crl_der: &[u8]) -> Result<(), ValidationError> {
        if crl_der.len() > MAX_CRL_LEN {
            return Err(ValidationError::BadCrl("too large"));
        }
        let crl = OwnedCertRevocationList::from_der(crl_der)
            .map_err(|_| ValidationError::BadCrl("does not parse"))?;
        let this_update = x509_cert::crl::CertificateList::from_der(crl_der)
            .map_err(|_| ValidationError::BadCrl("does not parse"))?
            .tbs_cert_list
            .this_update
            .to_unix_duration()
            .as_secs();
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let Some((_, held)) = &state.crl
            && this_update < *held
        {
            return Err(ValidationError::StaleCrl);
        }
        state.crl = Some((webpki::CertRevocationList::from(crl), this_update));
        Ok(())
    }

    /// Records a verified inclusion of a certificate in the log: `proof`
    /// must be against the monitor's latest checkpoint, for an issuance
    /// entry naming `cert_der`.
    pub fn record_inclusion(
        &self,
        cert_der: &[u8],
        proof: &InclusionProof,
    ) -> Result<(), ValidationError> {
        let Transparency::Required(monitor) = &self.transparency else {
            return Ok(());
        };
        let checkpoint = monitor.latest().ok_or(ValidationError::BadInclusion(
            tlog::LogError::NoLogSignature,
        ))?;
        let entry = LogEntry::decode(&proof.entry)
            .map_err(|_| ValidationError::BadInclusion(tlog::LogError::InclusionProof))?;
        let hash = cert_hash(cert_der);
        if entry.kind != EntryKind::Issued || entry.cert_hash != hash {
            return Err(ValidationError::BadInclusion(
                tlog::LogError::InclusionProof,
            ));
        }
        if proof.tree_size != checkpoint.size {
            return Err(ValidationError::BadInclusion(
                tlog::LogError::InclusionProof,
            ));
        }
        tlog::verify_inclusion(
            &tlog::leaf_hash(&proof.entry),
            proof.index,
            proof.tree_size,
            &proof.hashes()?,
            &checkpoint.root,
        )
        .map_err(ValidationError::BadInclusion)?;
        self.state
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .logged
            .insert(hash);
        Ok(())
    }

    /// Whether the certificate has a recorded inclusion.
    pub fn is_logged(&self, cert_der: &[u8]) -> bool {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .logged
            .contains(&cert_hash(cert_der))
    }

    /// Validates `credential` for `signature_key` and returns what the
    /// leaf says; with `expected_identity`, the leaf's identity must be it.
    pub fn check(
        &self,
        credential: &Credential,
        signature_key: &SignaturePublicKey,
        expected_identity: Option<&str>,
    ) -> Result<LeafInfo, ValidationError> {
        let chain = match credential {
            Credential::X509(chain) => chain,
            other => return Err(ValidationError::UnsupportedType(other.credential_type().0)),
        };
        if chain.is_empty() {
            return Err(ValidationError::EmptyChain);
        }
        if chain.len() > MAX_CHAIN_LEN {
            return Err(ValidationError::ChainTooLong(chain.len()));
        }
        if let Some(c) = chain.iter().find(|c| c.cert_data.len() > MAX_CERT_LEN) {
            return Err(ValidationError::CertificateTooLarge(c.cert_data.len()));
        }
        let leaf_der = &chain[0].cert_data;
        let leaf = parse_leaf(leaf_der)?;
        if leaf.info.public_key != signature_key.0 {
            return Err(ValidationError::KeyMismatch);
        }
        let now = self.clock.now();
        self.verify_path(chain, now)?;
        if !leaf.im_uri {
            return Err(ValidationError::NotImClient);
        }
        if !leaf.digital_signature {
            return Err(ValidationError::NoDigitalSignature);
        }
        if let Some(expected) = expected_identity
            && leaf.info.identity != expected
        {
            return Err(ValidationError::IdentityMismatch {
                expected: expected.to_owned(),
                found: leaf.info.identity,
            });
        }
        if matches!(self.transparency, Transparency::Required(_)) && !self.is_logged(leaf_der) {
            return Err(ValidationError::NotLogged);
        }
        Ok(leaf.info)
    }

    /// [`check`](Self::check) for a group (or KeyPackage) of cipher suite
    /// `suite`: the leaf certificate's key must also be of the suite's
    /// signature scheme ([`ValidationError::SchemeMismatch`]: a P-384
    /// certificate in a 0x0001 group is refused).
    pub fn check_in_suite(
        &self,
        suite: CipherSuite,
        credential: &Credential,
        signature_key: &SignaturePublicKey,
        expected_identity: Option<&str>,
    ) -> Result<LeafInfo, ValidationError> {
        if let Credential::X509(chain) = credential
            && let Some(leaf) = chain.first()
        {
            let leaf = parse_leaf(&leaf.cert_data)?;
            let expected = keys::suite_scheme(suite);
            if expected != Some(leaf.info.scheme) {
                return Err(ValidationError::SchemeMismatch {
                    suite: suite.0,
                    expected,
                    found: leaf.info.scheme,
                });
            }
        }
        self.check(credential, signature_key, expected_identity)
    }

    /// Checks every member of a group again (e.g. after
    /// [`set_crl`](Self::set_crl)) and returns those whose credential is now refused,
    /// with the reason. The engine checks a credential when it meets one
    /// (a KeyPackage, a tree, an Update, a commit's path); a member who
    /// then only sends messages, proposals or commits without a path is
    /// not checked again, so an application removes the members this
    /// returns (RFC 9750 §5: revocation is the application's policy).
    pub fn refused_members(&self, members: &[Member]) -> Vec<(LeafIndex, ValidationError)> {
        members
            .iter()
            .filter_map(|m| {
                self.check(&m.credential, &m.signature_key, None)
                    .err()
                    .map(|e| (m.index, e))
            })
            .collect()
    }

    fn verify_path(&self, chain: &[Certificate], now: u64) -> Result<(), ValidationError> {
        let leaf_der = CertificateDer::from(chain[0].cert_data.as_slice());
        let ee = EndEntityCert::try_from(&leaf_der)
            .map_err(|_| ValidationError::Malformed("not a DER X.509 certificate"))?;
        let intermediates: Vec<CertificateDer<'_>> = chain[1..]
            .iter()
            .map(|c| CertificateDer::from(c.cert_data.as_slice()))
            .collect();
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let Some((crl, _)) = &state.crl else {
            return Err(ValidationError::NoCrl);
        };
        let crls = [crl];
        let revocation = RevocationOptionsBuilder::new(&crls)
            .map_err(|_| ValidationError::NoCrl)?
            .with_depth(RevocationCheckDepth::EndEntity)
            .with_status_policy(UnknownStatusPolicy::Deny)
            .with_expiration_policy(ExpirationPolicy::Enforce)
            .build();
        ee.verify_for_usage(
            self.algorithms,
            &self.anchors,
            &intermediates,
            UnixTime::since_unix_epoch(Duration::from_secs(now)),
            KeyUsage::required_if_present(ID_KP_IM_URI_DER),
            Some(revocation),
            None,
        )
        .map(|_| ())
        .map_err(map_webpki)
    }
}

fn map_webpki(e: webpki::Error) -> ValidationError {
    use webpki::Error as E;
    match e {
        E::CertRevoked => ValidationError::Revoked,
        E::CertExpired { .. } => ValidationError::Expired,
        E::CertNotValidYet { .. } => ValidationError::NotYetValid,
        E::UnknownIssuer => ValidationError::UnknownIssuer,
        E::UnknownRevocationStatus => ValidationError::RevocationStatusUnknown,
        E::CrlExpired { .. } => ValidationError::CrlExpired,
        E::InvalidSignatureForPublicKey => ValidationError::BadSignature,
        E::InvalidCrlSignatureForPublicKey => ValidationError::BadCrl("signature does not verify"),
        other => ValidationError::Path(format!("{other:?}")),
    }
}

impl CredentialValidator for X509CredentialValidator {
    fn validate(
        &self,
        credential: &Credential,
        signature_key: &SignaturePublicKey,
    ) -> Result<(), CredentialError> {
        self.check(credential, signature_key, None)
            .map(|_| ())
            .map_err(CredentialError::from)
    }

    fn validate_in_suite(
        &self,
        suite: CipherSuite,
        credential: &Credential,
        signature_key: &SignaturePublicKey,
    ) -> Result<(), CredentialError> {
        self.check_in_suite(suite, credential, signature_key, None)
            .map(|_| ())
            .map_err(CredentialError::from)
    }

    /// RFC 9420 §5.3.1: a member keeps its identity. The new credential must
    /// be x509 with the same SAN URI identity as the old one.
    fn valid_successor(&self, old: &Credential, new: &Credential) -> bool {
        let identity = |c: &Credential| match c {
            Credential::X509(chain) => chain
                .first()
                .and_then(|leaf| parse_leaf(&leaf.cert_data).ok())
                .map(|l| l.info.identity),
            _ => None,
        };
        match (identity(old), identity(new)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
}

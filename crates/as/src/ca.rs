//! The certificate authority: a root and an issuing CA whose P-256 keys are
//! token objects in a PKCS#11 token (any [`KeyCustody`]), certificates and
//! CRLs built with rcgen 0.14 and signed through custody
//! ([`CustodySigningKey`]: SHA-256 prehash, `CKM_ECDSA`, DER signature).
//!
//! Leaf certificates (RFC 9420 §5.3 x509 credentials, RFC 9734):
//! * subject empty, the identity as the one SAN URI (critical, as RFC 5280
//!   §4.2.1.6 asks when the subject is empty);
//! * extended key usage id-kp-imUri only; KeyUsage digitalSignature only,
//!   critical; BasicConstraints CA:FALSE;
//! * a random 128-bit serial; a short lifetime (default 7 days);
//! * the CRL distribution point of the AS;
//! * nothing taken from the request but its public key and identity: a CSR
//!   asking for CA:TRUE or any other extension still gets a leaf.

use std::fmt;
use std::sync::Arc;

use der::{Decode, Encode};
use hsmls_credentials::csr::{CustodySigningKey, SubjectPublicKey};
use hsmls_credentials::keys;
use hsmls_custody::{KeyCustody, KeyRef, KeySpec, SignatureScheme};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use time::OffsetDateTime;

/// id-kp-imUri (RFC 9734) as rcgen's arc list.
const IM_URI_ARCS: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 3, 40];

/// A CA failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The token refused (key generation, lookup or signature).
    #[error("custody: {0}")]
    Custody(#[from] hsmls_custody::CustodyError),
    /// rcgen could not build or sign the structure.
    #[error("certificate building: {0}")]
    Build(String),
    /// A stored key is not what the CA needs.
    #[error("bad CA key: {0}")]
    BadKey(&'static str),
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        CaError::Build(e.to_string())
    }
}

impl From<hsmls_credentials::csr::CsrError> for CaError {
    fn from(e: hsmls_credentials::csr::CsrError) -> Self {
        CaError::Build(e.to_string())
    }
}

/// The names and lifetimes of the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CaProfile {
    /// The organisation in the CA certificates' names.
    pub name: String,
    /// Root certificate lifetime (seconds).
    pub root_lifetime: u64,
    /// Issuing CA certificate lifetime (seconds).
    pub issuing_lifetime: u64,
}

impl Default for CaProfile {
    fn default() -> Self {
        CaProfile {
            name: "hsmls AS".into(),
            root_lifetime: 20 * 365 * 86_400,
            issuing_lifetime: 5 * 365 * 86_400,
        }
    }
}

impl CaProfile {
    /// The default profile with another organisation name.
    pub fn named(name: &str) -> Self {
        CaProfile {
            name: name.to_owned(),
            ..CaProfile::default()
        }
    }
}

fn time(unix: u64) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(unix as i64).map_err(|_| CaError::Build("time".into()))
}

fn dn(profile: &CaProfile, role: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, profile.name.as_str());
    dn.push(DnType::CommonName, format!("{} {role}", profile.name));
    dn
}

/// The issuing CA's name, key usages and key-id method: what leaves and
/// CRLs name as their issuer. Built the same way at init and at every
/// start, so the issuer names match the issuing certificate byte for byte.
fn issuing_params(profile: &CaProfile) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(profile, "issuing CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.key_identifier_method = KeyIdMethod::Sha256;
    p
}

fn root_params(profile: &CaProfile) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(profile, "root CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.key_identifier_method = KeyIdMethod::Sha256;
    p
}

/// A 128-bit random serial, positive with a fixed first octet so that its
/// DER encoding is always 17 octets (RFC 5280 §4.1.2.2 allows 20).
pub fn random_serial() -> Vec<u8> {
    let mut s = vec![0u8; 17];
    s[0] = 0x01;
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut s[1..]);
    s
}

/// The CA: its keys (in custody) and certificates.
#[derive(Clone)]
pub struct Ca {
    custody: Arc<dyn KeyCustody>,
    profile: CaProfile,
    root_key: KeyRef,
    issuing_key: KeyRef,
    root_der: Vec<u8>,
    issuing_der: Vec<u8>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("profile", &self.profile)
            .field("root_key", &self.root_key)
            .field("issuing_key", &self.issuing_key)
            .finish_non_exhaustive()
    }
}

/// A leaf certificate to issue.
#[derive(Debug, Clone)]
pub struct LeafRequest<'a> {
    /// The identity (SAN URI).
    pub identity: &'a str,
    /// The signature scheme of the subject's key (the certificate's SPKI:
    /// Ed25519, or ECDSA on P-256, P-384 or P-521).
    pub scheme: SignatureScheme,
    /// The subject's public key, in the MLS encoding of `scheme` (SEC1
    /// uncompressed point, or the 32-byte Ed25519 key).
    pub public_key: &'a [u8],
    /// The serial number.
    pub serial: &'a [u8],
    /// notBefore, Unix seconds.
    pub not_before: u64,
    /// notAfter, Unix seconds.
    pub not_after: u64,
    /// The CRL distribution point URL.
    pub crl_url: &'a str,
}

impl Ca {
    /// Generates the root and issuing keys in `custody` (token objects in a
    /// PKCS#11 token), the self-signed root certificate and the issuing
    /// certificate below it (pathLen 0), valid from `now`.
    pub fn create(
        custody: Arc<dyn KeyCustody>,
        profile: CaProfile,
        now: u64,
    ) -> Result<Self, CaError> {
        let spec = KeySpec::Signature(SignatureScheme::EcdsaSecp256r1Sha256);
        let root_key = custody.generate(spec)?;
        let issuing_key = custody.generate(spec)?;
        let root_signer = CustodySigningKey::new(custody.clone(), root_key.clone())?;
        let issuing_signer = CustodySigningKey::new(custody.clone(), issuing_key.clone())?;
        let mut root = root_params(&profile);
        root.not_before = time(now)?;
        root.not_after = time(now + profile.root_lifetime)?;
        root.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        let root_cert = root.self_signed(&root_signer)?;
        let mut issuing = issuing_params(&profile);
        issuing.not_before = time(now)?;
        issuing.not_after = time(now + profile.issuing_lifetime)?;
        issuing.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        issuing.use_authority_key_identifier_extension = true;
        let root_issuer = Issuer::new(root_params(&profile), root_signer);
        let issuing_cert = issuing.signed_by(&issuing_signer, &root_issuer)?;
        Ok(Ca {
            custody,
            profile,
            root_key,
            issuing_key,
            root_der: root_cert.der().to_vec(),
            issuing_der: issuing_cert.der().to_vec(),
        })
    }

    /// The CA from existing keys (found by their PKCS#11 URIs) and
    /// certificates.
    pub fn load(
        custody: Arc<dyn KeyCustody>,
        profile: CaProfile,
        root_key_uri: &str,
        issuing_key_uri: &str,
        root_der: Vec<u8>,
        issuing_der: Vec<u8>,
    ) -> Result<Self, CaError> {
        let root_key = custody.find(root_key_uri)?;
        let issuing_key = custody.find(issuing_key_uri)?;
        let issuing_info = x509_public_key(&issuing_der)?;
        if issuing_info != issuing_key.public_key().as_bytes() {
            return Err(CaError::BadKey(
                "the issuing key is not the issuing certificate's",
            ));
        }
        if x509_public_key(&root_der)? != root_key.public_key().as_bytes() {
            return Err(CaError::BadKey(
                "the root key is not the root certificate's",
            ));
        }
        Ok(Ca {
            custody,
            profile,
            root_key,
            issuing_key,
            root_der,
            issuing_der,
        })
    }

    /// The root key.
    pub fn root_key(&self) -> &KeyRef {
        &self.root_key
    }
    /// The issuing key.
    pub fn issuing_key(&self) -> &KeyRef {
        &self.issuing_key
    }
    /// The root certificate (DER).
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }
    /// The issuing certificate (DER).
    pub fn issuing_der(&self) -> &[u8] {
        &self.issuing_der
    }
    /// The custody backend holding the keys.
    pub fn custody(&self) -> &Arc<dyn KeyCustody> {
        &self.custody
    }

    fn issuer(&self) -> Result<Issuer<'static, CustodySigningKey>, CaError> {
        Ok(Issuer::new(
            issuing_params(&self.profile),
            CustodySigningKey::new(self.custody.clone(), self.issuing_key.clone())?,
        ))
    }

    /// Issues a leaf certificate (signed in the token). Blocking: async
    /// callers use `spawn_blocking`.
    pub fn issue_leaf(&self, req: &LeafRequest<'_>) -> Result<Vec<u8>, CaError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names =
            vec![SanType::URI(req.identity.try_into().map_err(|_| {
                CaError::Build("identity is not an IA5 URI".into())
            })?)];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(IM_URI_ARCS.to_vec())];
        p.serial_number = Some(SerialNumber::from_slice(req.serial));
        p.not_before = time(req.not_before)?;
        p.not_after = time(req.not_after)?;
        p.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![req.crl_url.to_owned()],
        }];
        p.use_authority_key_identifier_extension = true;
        p.key_identifier_method = KeyIdMethod::Sha256;
        // rcgen writes the profile; it has no P-521 algorithm without its
        // aws_lc_rs backend, so the subject's SubjectPublicKeyInfo is put
        // in by x509-cert, and the to-be-signed certificate is signed once,
        // in the token, after that.
        let subject = SubjectPublicKey::new(req.scheme, req.public_key)?;
        let draft = p.signed_by(
            &subject,
            &Issuer::new(
                issuing_params(&self.profile),
                Unsigned(CustodySigningKey::new(
                    self.custody.clone(),
                    self.issuing_key.clone(),
                )?),
            ),
        )?;
        let build = |e: der::Error| CaError::Build(e.to_string());
        let mut cert = x509_cert::Certificate::from_der(draft.der()).map_err(build)?;
        cert.tbs_certificate.subject_public_key_info =
            keys::spki(req.scheme, req.public_key).map_err(build)?;
        let tbs = cert.tbs_certificate.to_der().map_err(build)?;
        let signature = self.custody.sign(&self.issuing_key, &tbs)?;
        cert.signature = der::asn1::BitString::from_bytes(&signature).map_err(build)?;
        cert.to_der().map_err(build)
    }

    /// Issues a TLS server certificate for `names` (DNS names or IP
    /// addresses) and `public_key`.
    pub fn issue_tls(
        &self,
        names: &[String],
        public_key: &impl rcgen::PublicKeyData,
        now: u64,
        lifetime: u64,
    ) -> Result<Vec<u8>, CaError> {
        let mut p = CertificateParams::new(names.to_vec())?;
        p.distinguished_name = dn(&self.profile, "server");
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        p.not_before = time(now)?;
        p.not_after = time(now + lifetime)?;
        p.use_authority_key_identifier_extension = true;
        Ok(p.signed_by(public_key, &self.issuer()?)?.der().to_vec())
    }

    /// Signs a CRL (RFC 5280 §5) of the issuing CA listing `revoked`
    /// (serial, revocation time), valid from `now` for `lifetime` seconds.
    pub fn sign_crl(
        &self,
        number: u64,
        revoked: &[(Vec<u8>, u64)],
        now: u64,
        lifetime: u64,
    ) -> Result<Vec<u8>, CaError> {
        let params = CertificateRevocationListParams {
            this_update: time(now)?,
            next_update: time(now + lifetime)?,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, at)| {
                    Ok(RevokedCertParams {
                        serial_number: SerialNumber::from_slice(serial),
                        revocation_time: time(*at)?,
                        reason_code: None,
                        invalidity_date: None,
                    })
                })
                .collect::<Result<_, CaError>>()?,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer()?)?.der().to_vec())
    }
}

/// The issuing key's public half, with a signature rcgen writes as empty:
/// [`Ca::issue_leaf`] signs the finished to-be-signed certificate itself.
struct Unsigned(CustodySigningKey);

impl rcgen::PublicKeyData for Unsigned {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.0.algorithm()
    }
}

impl rcgen::SigningKey for Unsigned {
    fn sign(&self, _msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(Vec::new())
    }
}

/// The P-256 point of a DER certificate.
fn x509_public_key(der: &[u8]) -> Result<Vec<u8>, CaError> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(der)
        .map_err(|_| CaError::BadKey("the certificate does not parse"))?;
    cert.tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .as_bytes()
        .map(<[u8]>::to_vec)
        .ok_or(CaError::BadKey("bad public key"))
}

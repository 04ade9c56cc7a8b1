//! What a key is: its algorithm ([`KeySpec`]), its public half
//! ([`PublicKey`]), the reference to its private half ([`KeyRef`]), and the
//! values the trait returns ([`SharedSecret`], [`KeyAttributes`],
//! [`Capabilities`]).

use std::fmt;

use p256::elliptic_curve;
use sha2::{Digest, Sha256, Sha384, Sha512};
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::CustodyError;

/// A signature scheme, as the IANA "TLS SignatureScheme" registry names it
/// (RFC 9420 §17.1: an MLS cipher suite names the scheme of its signature
/// keys, RFC 9420 §5.1.2).
///
/// Only the schemes hsmls implements exist; more are added with their
/// cipher suites.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureScheme {
    /// `ecdsa_secp256r1_sha256` (0x0403): ECDSA over P-256 with SHA-256,
    /// ASN.1 DER signatures (RFC 9420 §5.1.2). Cipher suite 0x0002.
    EcdsaSecp256r1Sha256,
    /// `ecdsa_secp384r1_sha384` (0x0503): ECDSA over P-384 with SHA-384,
    /// DER signatures. Cipher suite 0x0007.
    EcdsaSecp384r1Sha384,
    /// `ecdsa_secp521r1_sha512` (0x0603): ECDSA over P-521 with SHA-512,
    /// DER signatures. Cipher suite 0x0005.
    EcdsaSecp521r1Sha512,
    /// `ed25519` (0x0807): PureEdDSA over edwards25519 (RFC 8032 §5.1),
    /// which signs the message itself, not a digest of it. Cipher suites
    /// 0x0001 and 0x0003.
    Ed25519,
}

impl SignatureScheme {
    /// The registry's code point (`uint16 SignatureScheme`).
    pub const fn value(self) -> u16 {
        match self {
            SignatureScheme::EcdsaSecp256r1Sha256 => 0x0403,
            SignatureScheme::EcdsaSecp384r1Sha384 => 0x0503,
            SignatureScheme::EcdsaSecp521r1Sha512 => 0x0603,
            SignatureScheme::Ed25519 => 0x0807,
        }
    }

    /// The registry's name.
    pub const fn name(self) -> &'static str {
        match self {
            SignatureScheme::EcdsaSecp256r1Sha256 => "ecdsa_secp256r1_sha256",
            SignatureScheme::EcdsaSecp384r1Sha384 => "ecdsa_secp384r1_sha384",
            SignatureScheme::EcdsaSecp521r1Sha512 => "ecdsa_secp521r1_sha512",
            SignatureScheme::Ed25519 => "ed25519",
        }
    }

    /// Length of the digest that [`KeyCustody::sign_prehash`] takes: the
    /// output length of the scheme's hash; `None` for a scheme that signs
    /// the whole message (Ed25519).
    ///
    /// [`KeyCustody::sign_prehash`]: crate::KeyCustody::sign_prehash
    pub const fn prehash_len(self) -> Option<usize> {
        match self {
            SignatureScheme::EcdsaSecp256r1Sha256 => Some(32),
            SignatureScheme::EcdsaSecp384r1Sha384 => Some(48),
            SignatureScheme::EcdsaSecp521r1Sha512 => Some(64),
            SignatureScheme::Ed25519 => None,
        }
    }

    /// The scheme's hash of `message`: what [`KeyCustody::sign_prehash`]
    /// signs when [`KeyCustody::sign`] is given `message` (SHA-256 for
    /// `ecdsa_secp256r1_sha256`, SHA-384 and SHA-512 for P-384 and P-521);
    /// `None` for Ed25519, which signs the message itself.
    ///
    /// [`KeyCustody::sign_prehash`]: crate::KeyCustody::sign_prehash
    /// [`KeyCustody::sign`]: crate::KeyCustody::sign
    pub fn prehash(self, message: &[u8]) -> Option<Vec<u8>> {
        match self {
            SignatureScheme::EcdsaSecp256r1Sha256 => Some(Sha256::digest(message).to_vec()),
            SignatureScheme::EcdsaSecp384r1Sha384 => Some(Sha384::digest(message).to_vec()),
            SignatureScheme::EcdsaSecp521r1Sha512 => Some(Sha512::digest(message).to_vec()),
            SignatureScheme::Ed25519 => None,
        }
    }

    /// Length of an encoded public key (`SignaturePublicKey`): the
    /// uncompressed SEC1 point for ECDSA (65, 97, 133 bytes), 32 bytes for
    /// Ed25519 (RFC 8032 §5.1.5).
    pub const fn public_key_len(self) -> usize {
        match self {
            SignatureScheme::EcdsaSecp256r1Sha256 => 65,
            SignatureScheme::EcdsaSecp384r1Sha384 => 97,
            SignatureScheme::EcdsaSecp521r1Sha512 => 133,
            SignatureScheme::Ed25519 => 32,
        }
    }

    /// Length of an encoded private key (for [`KeyCustody::import`]): the
    /// big-endian scalar for ECDSA (32, 48, 66 bytes), the 32-byte seed for
    /// Ed25519 (RFC 8032 §5.1.5).
    ///
    /// [`KeyCustody::import`]: crate::KeyCustody::import
    pub const fn private_key_len(self) -> usize {
        match self {
            SignatureScheme::EcdsaSecp256r1Sha256 => 32,
            SignatureScheme::EcdsaSecp384r1Sha384 => 48,
            SignatureScheme::EcdsaSecp521r1Sha512 => 66,
            SignatureScheme::Ed25519 => 32,
        }
    }
}

impl fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A key encapsulation mechanism, as the HPKE "KEM Identifiers" registry
/// names it (RFC 9180 §7.1). MLS leaf `encryption_key`s and KeyPackage
/// `init_key`s are keys of the cipher suite's KEM (RFC 9420 §5.1.1).
///
/// Only the KEMs hsmls implements exist; more are added with their cipher
/// suites.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KemAlgorithm {
    /// `DHKEM(P-256, HKDF-SHA256)` (0x0010). Cipher suite 0x0002.
    DhKemP256HkdfSha256,
    /// `DHKEM(P-384, HKDF-SHA384)` (0x0011). Cipher suite 0x0007.
    DhKemP384HkdfSha384,
    /// `DHKEM(P-521, HKDF-SHA512)` (0x0012). Cipher suite 0x0005.
    DhKemP521HkdfSha512,
    /// `DHKEM(X25519, HKDF-SHA256)` (0x0020). Cipher suites 0x0001 and
    /// 0x0003.
    DhKemX25519HkdfSha256,
}

impl KemAlgorithm {
    /// The registry's `kem_id`.
    pub const fn kem_id(self) -> u16 {
        match self {
            KemAlgorithm::DhKemP256HkdfSha256 => 0x0010,
            KemAlgorithm::DhKemP384HkdfSha384 => 0x0011,
            KemAlgorithm::DhKemP521HkdfSha512 => 0x0012,
            KemAlgorithm::DhKemX25519HkdfSha256 => 0x0020,
        }
    }

    /// The registry's name.
    pub const fn name(self) -> &'static str {
        match self {
            KemAlgorithm::DhKemP256HkdfSha256 => "DHKEM(P-256, HKDF-SHA256)",
            KemAlgorithm::DhKemP384HkdfSha384 => "DHKEM(P-384, HKDF-SHA384)",
            KemAlgorithm::DhKemP521HkdfSha512 => "DHKEM(P-521, HKDF-SHA512)",
            KemAlgorithm::DhKemX25519HkdfSha256 => "DHKEM(X25519, HKDF-SHA256)",
        }
    }

    /// `Ndh`: length of the Diffie-Hellman value that [`KeyCustody::dh`]
    /// returns (RFC 9180 §4.1, §7.1: the x-coordinate for the NIST curves,
    /// 32/48/66 bytes; the 32-byte X25519 output).
    ///
    /// [`KeyCustody::dh`]: crate::KeyCustody::dh
    pub const fn n_dh(self) -> usize {
        match self {
            KemAlgorithm::DhKemP256HkdfSha256 => 32,
            KemAlgorithm::DhKemP384HkdfSha384 => 48,
            KemAlgorithm::DhKemP521HkdfSha512 => 66,
            KemAlgorithm::DhKemX25519HkdfSha256 => 32,
        }
    }

    /// `Npk`: length of an encoded public key (RFC 9180 §7.1; uncompressed
    /// SEC1 for the NIST curves, 65/97/133 bytes; 32 for X25519). Also
    /// `Nenc`.
    pub const fn n_pk(self) -> usize {
        match self {
            KemAlgorithm::DhKemP256HkdfSha256 => 65,
            KemAlgorithm::DhKemP384HkdfSha384 => 97,
            KemAlgorithm::DhKemP521HkdfSha512 => 133,
            KemAlgorithm::DhKemX25519HkdfSha256 => 32,
        }
    }

    /// `Nsk`: length of an encoded private key (RFC 9180 §7.1; the
    /// big-endian scalar for the NIST curves, 32/48/66 bytes; 32 for
    /// X25519).
    pub const fn n_sk(self) -> usize {
        match self {
            KemAlgorithm::DhKemP256HkdfSha256 => 32,
            KemAlgorithm::DhKemP384HkdfSha384 => 48,
            KemAlgorithm::DhKemP521HkdfSha512 => 66,
            KemAlgorithm::DhKemX25519HkdfSha256 => 32,
        }
    }
}

impl fmt::Display for KemAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a key is for, coarsely: signing or HPKE. A key is generated for
/// exactly one purpose and the backends refuse to use it for the other
/// (RFC 9420 §5.1: signature keys and HPKE keys are distinct).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// An MLS signature key (RFC 9420 §5.1.2).
    Signature,
    /// An HPKE private key (RFC 9420 §5.1.3): leaf `encryption_key` or
    /// KeyPackage `init_key`.
    Hpke,
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyPurpose::Signature => "signature",
            KeyPurpose::Hpke => "HPKE",
        })
    }
}

/// The algorithm of a key: a signature scheme or a KEM. Given to
/// [`KeyCustody::generate`] and [`KeyCustody::import`], and recorded in
/// every [`PublicKey`] and [`KeyRef`].
///
/// [`KeyCustody::generate`]: crate::KeyCustody::generate
/// [`KeyCustody::import`]: crate::KeyCustody::import
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// A signature key of this scheme.
    Signature(SignatureScheme),
    /// An HPKE key of this KEM.
    Kem(KemAlgorithm),
}

impl KeySpec {
    /// The signature key of cipher suite 0x0002 (`ecdsa_secp256r1_sha256`).
    pub const ECDSA_SECP256R1_SHA256: KeySpec =
        KeySpec::Signature(SignatureScheme::EcdsaSecp256r1Sha256);
    /// The HPKE key of cipher suite 0x0002 (`DHKEM(P-256, HKDF-SHA256)`).
    pub const DHKEM_P256_HKDF_SHA256: KeySpec = KeySpec::Kem(KemAlgorithm::DhKemP256HkdfSha256);
    /// The signature key of cipher suite 0x0007 (`ecdsa_secp384r1_sha384`).
    pub const ECDSA_SECP384R1_SHA384: KeySpec =
        KeySpec::Signature(SignatureScheme::EcdsaSecp384r1Sha384);
    /// The HPKE key of cipher suite 0x0007 (`DHKEM(P-384, HKDF-SHA384)`).
    pub const DHKEM_P384_HKDF_SHA384: KeySpec = KeySpec::Kem(KemAlgorithm::DhKemP384HkdfSha384);
    /// The signature key of cipher suite 0x0005 (`ecdsa_secp521r1_sha512`).
    pub const ECDSA_SECP521R1_SHA512: KeySpec =
        KeySpec::Signature(SignatureScheme::EcdsaSecp521r1Sha512);
    /// The HPKE key of cipher suite 0x0005 (`DHKEM(P-521, HKDF-SHA512)`).
    pub const DHKEM_P521_HKDF_SHA512: KeySpec = KeySpec::Kem(KemAlgorithm::DhKemP521HkdfSha512);
    /// The signature key of cipher suites 0x0001 and 0x0003 (`ed25519`).
    pub const ED25519: KeySpec = KeySpec::Signature(SignatureScheme::Ed25519);
    /// The HPKE key of cipher suites 0x0001 and 0x0003
    /// (`DHKEM(X25519, HKDF-SHA256)`).
    pub const DHKEM_X25519_HKDF_SHA256: KeySpec = KeySpec::Kem(KemAlgorithm::DhKemX25519HkdfSha256);
    /// Every key spec hsmls knows, for tests and probes.
    pub const ALL: [KeySpec; 8] = [
        KeySpec::ECDSA_SECP256R1_SHA256,
        KeySpec::DHKEM_P256_HKDF_SHA256,
        KeySpec::ECDSA_SECP384R1_SHA384,
        KeySpec::DHKEM_P384_HKDF_SHA384,
        KeySpec::ECDSA_SECP521R1_SHA512,
        KeySpec::DHKEM_P521_HKDF_SHA512,
        KeySpec::ED25519,
        KeySpec::DHKEM_X25519_HKDF_SHA256,
    ];

    /// Whether this is a signature key or an HPKE key.
    pub const fn purpose(self) -> KeyPurpose {
        match self {
            KeySpec::Signature(_) => KeyPurpose::Signature,
            KeySpec::Kem(_) => KeyPurpose::Hpke,
        }
    }

    /// The MLS cipher suites (RFC 9420 §17.1) whose keys of this kind are
    /// keys of this spec.
    pub const fn cipher_suites(self) -> &'static [u16] {
        match self {
            KeySpec::Signature(SignatureScheme::EcdsaSecp256r1Sha256)
            | KeySpec::Kem(KemAlgorithm::DhKemP256HkdfSha256) => &[0x0002],
            KeySpec::Signature(SignatureScheme::EcdsaSecp384r1Sha384)
            | KeySpec::Kem(KemAlgorithm::DhKemP384HkdfSha384) => &[0x0007],
            KeySpec::Signature(SignatureScheme::EcdsaSecp521r1Sha512)
            | KeySpec::Kem(KemAlgorithm::DhKemP521HkdfSha512) => &[0x0005],
            KeySpec::Signature(SignatureScheme::Ed25519)
            | KeySpec::Kem(KemAlgorithm::DhKemX25519HkdfSha256) => &[0x0001, 0x0003],
        }
    }

    /// The keys of MLS cipher suite `suite` (RFC 9420 §17.1): its
    /// signature key and its HPKE key, or `None` for a suite hsmls does
    /// not implement.
    pub const fn of_cipher_suite(suite: u16) -> Option<(KeySpec, KeySpec)> {
        match suite {
            0x0001 | 0x0003 => Some((KeySpec::ED25519, KeySpec::DHKEM_X25519_HKDF_SHA256)),
            0x0002 => Some((
                KeySpec::ECDSA_SECP256R1_SHA256,
                KeySpec::DHKEM_P256_HKDF_SHA256,
            )),
            0x0005 => Some((
                KeySpec::ECDSA_SECP521R1_SHA512,
                KeySpec::DHKEM_P521_HKDF_SHA512,
            )),
            0x0007 => Some((
                KeySpec::ECDSA_SECP384R1_SHA384,
                KeySpec::DHKEM_P384_HKDF_SHA384,
            )),
            _ => None,
        }
    }

    /// Length of an encoded public key.
    pub const fn public_key_len(self) -> usize {
        match self {
            KeySpec::Signature(s) => s.public_key_len(),
            KeySpec::Kem(k) => k.n_pk(),
        }
    }

    /// Length of an encoded private key (for [`KeyCustody::import`]).
    ///
    /// [`KeyCustody::import`]: crate::KeyCustody::import
    pub const fn private_key_len(self) -> usize {
        match self {
            KeySpec::Signature(s) => s.private_key_len(),
            KeySpec::Kem(k) => k.n_sk(),
        }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::Signature(s) => write!(f, "{s} signature"),
            KeySpec::Kem(k) => write!(f, "{k} HPKE"),
        }
    }
}

/// Parses an uncompressed SEC1 point of curve `C` (`0x04 ‖ X ‖ Y`, on
/// the curve, not the identity).
pub(crate) fn parse_sec1<C>(bytes: &[u8]) -> Result<elliptic_curve::PublicKey<C>, CustodyError>
where
    C: elliptic_curve::CurveArithmetic,
    elliptic_curve::FieldBytesSize<C>: elliptic_curve::sec1::ModulusSize,
    elliptic_curve::AffinePoint<C>:
        elliptic_curve::sec1::FromEncodedPoint<C> + elliptic_curve::sec1::ToEncodedPoint<C>,
{
    let field = <elliptic_curve::FieldBytesSize<C> as elliptic_curve::generic_array::typenum::Unsigned>::USIZE;
    if bytes.len() != 1 + 2 * field || bytes[0] != 0x04 {
        return Err(CustodyError::InvalidPublicKey(crate::PointFault::Encoding));
    }
    elliptic_curve::PublicKey::<C>::from_sec1_bytes(bytes)
        .map_err(|_| CustodyError::InvalidPublicKey(crate::PointFault::NotOnCurve))
}

/// Parses an uncompressed SEC1 P-256 point.
pub(crate) fn parse_p256(bytes: &[u8]) -> Result<p256::PublicKey, CustodyError> {
    parse_sec1::<p256::NistP256>(bytes)
}

/// Parses a 32-byte X25519 public key (RFC 7748 §5: any 32 bytes; a
/// low-order point is refused when its Diffie-Hellman value is all zero).
pub(crate) fn parse_x25519(bytes: &[u8]) -> Result<x25519_dalek::PublicKey, CustodyError> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| CustodyError::InvalidPublicKey(crate::PointFault::Encoding))?;
    Ok(x25519_dalek::PublicKey::from(bytes))
}

/// Parses a 32-byte Ed25519 public key (RFC 8032 §5.1.3: a valid point
/// encoding).
pub(crate) fn parse_ed25519(bytes: &[u8]) -> Result<ed25519_dalek::VerifyingKey, CustodyError> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| CustodyError::InvalidPublicKey(crate::PointFault::Encoding))?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| CustodyError::InvalidPublicKey(crate::PointFault::NotOnCurve))
}

/// Checks that `bytes` is a valid public key of `spec` (for the NIST
/// algorithms: an uncompressed SEC1 point on the curve; Ed25519: a point
/// encoding; X25519: 32 bytes). Peer keys are always checked in software
/// before they reach a token (a token's own checks vary).
pub(crate) fn validate_public_key(spec: KeySpec, bytes: &[u8]) -> Result<(), CustodyError> {
    match spec {
        KeySpec::Signature(SignatureScheme::EcdsaSecp256r1Sha256)
        | KeySpec::Kem(KemAlgorithm::DhKemP256HkdfSha256) => parse_p256(bytes).map(drop),
        KeySpec::Signature(SignatureScheme::EcdsaSecp384r1Sha384)
        | KeySpec::Kem(KemAlgorithm::DhKemP384HkdfSha384) => {
            parse_sec1::<p384::NistP384>(bytes).map(drop)
        }
        KeySpec::Signature(SignatureScheme::EcdsaSecp521r1Sha512)
        | KeySpec::Kem(KemAlgorithm::DhKemP521HkdfSha512) => {
            parse_sec1::<p521::NistP521>(bytes).map(drop)
        }
        KeySpec::Signature(SignatureScheme::Ed25519) => parse_ed25519(bytes).map(drop),
        KeySpec::Kem(KemAlgorithm::DhKemX25519HkdfSha256) => parse_x25519(bytes).map(drop),
    }
}

/// A public key with its algorithm, in the encoding MLS uses
/// (`SignaturePublicKey` or `HPKEPublicKey`, RFC 9420 §5.1.1; for P-256 the
/// uncompressed SEC1 point `0x04 ‖ X ‖ Y`). Always valid for its algorithm.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    pub(crate) spec: KeySpec,
    pub(crate) bytes: Vec<u8>,
}

impl PublicKey {
    /// Validates `bytes` as a public key of `spec` (for P-256: 65 bytes,
    /// uncompressed, on the curve, not the identity).
    pub fn new(spec: KeySpec, bytes: &[u8]) -> Result<Self, CustodyError> {
        validate_public_key(spec, bytes)?;
        Ok(PublicKey {
            spec,
            bytes: bytes.to_vec(),
        })
    }

    /// The key's algorithm.
    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// The encoded key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({}, {})", self.spec, hex::encode(&self.bytes))
    }
}

/// A reference to a private key held by a custody backend.
///
/// It holds no secret: the public key (with its algorithm) and a persistent
/// locator string. For PKCS#11 keys the locator is a PKCS#11 URI (RFC 7512);
/// it may carry a wrapped (encrypted under a token-resident key) key blob,
/// which is not secret without the token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyRef {
    public_key: PublicKey,
    locator: String,
}

impl KeyRef {
    /// Builds a reference; for backends.
    pub fn new(public_key: PublicKey, locator: String) -> Self {
        KeyRef {
            public_key,
            locator,
        }
    }

    /// The key's algorithm.
    pub fn spec(&self) -> KeySpec {
        self.public_key.spec
    }

    /// What the key is for.
    pub fn purpose(&self) -> KeyPurpose {
        self.public_key.spec.purpose()
    }

    /// The public half of the key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The persistent locator: pass it to [`KeyCustody::find`] to get the key
    /// back, in this process or after a restart (for persistent backends).
    ///
    /// [`KeyCustody::find`]: crate::KeyCustody::find
    pub fn uri(&self) -> &str {
        &self.locator
    }

    /// Returns [`CustodyError::WrongPurpose`] unless the key is for `purpose`.
    pub fn expect_purpose(
        &self,
        purpose: KeyPurpose,
        operation: &'static str,
    ) -> Result<(), CustodyError> {
        if self.purpose() == purpose {
            Ok(())
        } else {
            Err(CustodyError::WrongPurpose {
                operation,
                expected: purpose,
                actual: self.purpose(),
            })
        }
    }

    /// The key's signature scheme, or [`CustodyError::WrongPurpose`] for an
    /// HPKE key.
    pub fn signature_scheme(
        &self,
        operation: &'static str,
    ) -> Result<SignatureScheme, CustodyError> {
        match self.spec() {
            KeySpec::Signature(s) => Ok(s),
            KeySpec::Kem(_) => Err(CustodyError::WrongPurpose {
                operation,
                expected: KeyPurpose::Signature,
                actual: KeyPurpose::Hpke,
            }),
        }
    }

    /// The key's KEM, or [`CustodyError::WrongPurpose`] for a signature key.
    pub fn kem(&self, operation: &'static str) -> Result<KemAlgorithm, CustodyError> {
        match self.spec() {
            KeySpec::Kem(k) => Ok(k),
            KeySpec::Signature(_) => Err(CustodyError::WrongPurpose {
                operation,
                expected: KeyPurpose::Hpke,
                actual: KeyPurpose::Signature,
            }),
        }
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRef")
            .field("spec", &self.public_key.spec)
            .field("public_key", &hex::encode(&self.public_key.bytes))
            .field("uri", &self.locator)
            .finish()
    }
}

/// The Diffie-Hellman value of [`KeyCustody::dh`] (the DHKEM `dh` of
/// RFC 9180 §4.1: for P-256 the 32-byte x-coordinate of the shared point),
/// `Ndh` bytes long. Zeroized on drop; its Debug output shows only the
/// length.
///
/// [`KeyCustody::dh`]: crate::KeyCustody::dh
pub struct SharedSecret(Zeroizing<Vec<u8>>);

/// The value is held in a `Zeroizing` buffer.
impl ZeroizeOnDrop for SharedSecret {}

impl SharedSecret {
    /// Wraps a Diffie-Hellman value; for backends (the value must be `Ndh`
    /// bytes of the key's KEM).
    pub fn new(value: Zeroizing<Vec<u8>>) -> Self {
        SharedSecret(value)
    }

    /// The value.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Its length (`Ndh`).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty (never, for a value a backend returned).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::ops::Deref for SharedSecret {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedSecret({} bytes)", self.0.len())
    }
}

/// How a backend protects a private key, as it reports it (for PKCS#11 the
/// attributes of the private key object, PKCS#11 v2.40 §4.9). For audits:
/// tests, an Authentication Service checking its CA key, an operator.
///
/// The software backend keeps keys in process memory and reports every
/// protection as absent (`extractable` and `value_readable` true, the rest
/// false).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyAttributes {
    /// `CKA_SENSITIVE`: the private value cannot be read in the clear.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`: the key can be wrapped (exported encrypted).
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`: the key has been sensitive since it was made.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`: the key has never been extractable.
    pub never_extractable: bool,
    /// Whether the private value (`CKA_VALUE`) can be read by the caller.
    pub value_readable: bool,
    /// `CKA_TOKEN`: a token object (kept by the token itself), as opposed to
    /// a session object or a key in process memory.
    pub token_object: bool,
}

/// What a backend can hold, found by probing it at start-up.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The kinds of key the backend can generate and use.
    pub key_specs: Vec<KeySpec>,
    /// A human-readable summary for logs and operators.
    pub summary: String,
}

impl Capabilities {
    /// Capabilities holding `key_specs`; for backends.
    pub fn new(key_specs: Vec<KeySpec>, summary: String) -> Self {
        Capabilities { key_specs, summary }
    }

    /// Whether the backend can generate and use keys of `spec`.
    pub fn supports(&self, spec: KeySpec) -> bool {
        self.key_specs.contains(&spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::sec1::ToEncodedPoint;

    fn point(compress: bool) -> Vec<u8> {
        p256::SecretKey::from_slice(&[9u8; 32])
            .unwrap()
            .public_key()
            .to_encoded_point(compress)
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn suite_0x0002_algorithms_have_their_registry_values_and_sizes() {
        let ecdsa = SignatureScheme::EcdsaSecp256r1Sha256;
        assert_eq!(
            (ecdsa.value(), ecdsa.name()),
            (0x0403, "ecdsa_secp256r1_sha256")
        );
        assert_eq!(ecdsa.prehash_len(), Some(32));
        assert_eq!(ecdsa.prehash(b"abc").map(|d| d.len()), Some(32));
        let kem = KemAlgorithm::DhKemP256HkdfSha256;
        assert_eq!(
            (kem.kem_id(), kem.name()),
            (0x0010, "DHKEM(P-256, HKDF-SHA256)")
        );
        assert_eq!((kem.n_dh(), kem.n_pk(), kem.n_sk()), (32, 65, 32));
        assert_eq!(
            KeySpec::ECDSA_SECP256R1_SHA256.purpose(),
            KeyPurpose::Signature
        );
        assert_eq!(KeySpec::DHKEM_P256_HKDF_SHA256.purpose(), KeyPurpose::Hpke);
        for spec in [
            KeySpec::ECDSA_SECP256R1_SHA256,
            KeySpec::DHKEM_P256_HKDF_SHA256,
        ] {
            assert_eq!((spec.public_key_len(), spec.private_key_len()), (65, 32));
        }
    }

    #[test]
    fn new_suites_algorithms_have_their_registry_values_and_sizes() {
        // (scheme, value, name, prehash, public, private)
        for (scheme, value, name, prehash, public, private) in [
            (
                SignatureScheme::EcdsaSecp384r1Sha384,
                0x0503,
                "ecdsa_secp384r1_sha384",
                Some(48),
                97,
                48,
            ),
            (
                SignatureScheme::EcdsaSecp521r1Sha512,
                0x0603,
                "ecdsa_secp521r1_sha512",
                Some(64),
                133,
                66,
            ),
            (SignatureScheme::Ed25519, 0x0807, "ed25519", None, 32, 32),
        ] {
            assert_eq!((scheme.value(), scheme.name()), (value, name));
            assert_eq!(scheme.prehash_len(), prehash);
            assert_eq!(scheme.prehash(b"abc").map(|d| d.len()), prehash);
            assert_eq!(
                (scheme.public_key_len(), scheme.private_key_len()),
                (public, private)
            );
        }
        // RFC 9180 §7.1: kem_id, Ndh, Npk, Nsk.
        for (kem, id, n_dh, n_pk, n_sk) in [
            (KemAlgorithm::DhKemP384HkdfSha384, 0x0011, 48, 97, 48),
            (KemAlgorithm::DhKemP521HkdfSha512, 0x0012, 66, 133, 66),
            (KemAlgorithm::DhKemX25519HkdfSha256, 0x0020, 32, 32, 32),
        ] {
            assert_eq!(kem.kem_id(), id);
            assert_eq!((kem.n_dh(), kem.n_pk(), kem.n_sk()), (n_dh, n_pk, n_sk));
        }
        assert_eq!(KeySpec::ALL.len(), 8);
        let unique: std::collections::HashSet<KeySpec> = KeySpec::ALL.into_iter().collect();
        assert_eq!(unique.len(), 8);
    }

    #[test]
    fn public_keys_are_validated_for_their_algorithm() {
        for spec in [
            KeySpec::ECDSA_SECP256R1_SHA256,
            KeySpec::DHKEM_P256_HKDF_SHA256,
        ] {
            let good = point(false);
            let key = PublicKey::new(spec, &good).unwrap();
            assert_eq!((key.spec(), key.as_bytes()), (spec, &good[..]));
            let mut off_curve = good.clone();
            off_curve[64] ^= 1;
            let mut identity = vec![0u8; 65];
            identity[0] = 4;
            for (bad, fault) in [
                (off_curve, crate::PointFault::NotOnCurve),
                (identity, crate::PointFault::NotOnCurve),
                (point(true), crate::PointFault::Encoding),
                (good[..64].to_vec(), crate::PointFault::Encoding),
                (vec![], crate::PointFault::Encoding),
            ] {
                let r = PublicKey::new(spec, &bad);
                assert!(
                    matches!(&r, Err(CustodyError::InvalidPublicKey(f)) if *f == fault),
                    "{spec}: {}: {:?}",
                    hex::encode(&bad),
                    r.err()
                );
            }
        }
    }

    #[test]
    fn a_key_ref_names_its_scheme_or_kem_and_refuses_the_other() {
        let sig = KeyRef::new(
            PublicKey::new(KeySpec::ECDSA_SECP256R1_SHA256, &point(false)).unwrap(),
            "x:1".into(),
        );
        let hpke = KeyRef::new(
            PublicKey::new(KeySpec::DHKEM_P256_HKDF_SHA256, &point(false)).unwrap(),
            "x:2".into(),
        );
        assert_eq!(
            sig.signature_scheme("sign").unwrap(),
            SignatureScheme::EcdsaSecp256r1Sha256
        );
        assert_eq!(hpke.kem("ECDH").unwrap(), KemAlgorithm::DhKemP256HkdfSha256);
        assert!(matches!(
            sig.kem("ECDH"),
            Err(CustodyError::WrongPurpose {
                operation: "ECDH",
                expected: KeyPurpose::Hpke,
                actual: KeyPurpose::Signature,
            })
        ));
        assert!(matches!(
            hpke.signature_scheme("sign"),
            Err(CustodyError::WrongPurpose {
                operation: "sign",
                expected: KeyPurpose::Signature,
                actual: KeyPurpose::Hpke,
            })
        ));
        // Same point, different algorithm: different keys.
        assert_ne!(sig.public_key(), hpke.public_key());
    }

    #[test]
    fn shared_secret_shows_only_its_length() {
        let secret = SharedSecret::new(Zeroizing::new(vec![0xab; 32]));
        assert_eq!(format!("{secret:?}"), "SharedSecret(32 bytes)");
        assert_eq!((secret.len(), secret.as_bytes()), (32, &[0xab; 32][..]));
    }

    #[test]
    fn capabilities_answer_per_key_spec() {
        let caps = Capabilities::new(vec![KeySpec::ECDSA_SECP256R1_SHA256], "sig only".into());
        assert!(caps.supports(KeySpec::ECDSA_SECP256R1_SHA256));
        assert!(!caps.supports(KeySpec::DHKEM_P256_HKDF_SHA256));
    }
}

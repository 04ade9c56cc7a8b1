//! The PKCS#11 backend: keys generated and used inside a token (an HSM, a
//! TPM through tpm2-pkcs11, or SoftHSM2 in tests), through `cryptoki`.
//!
//! # What lives where
//!
//! * **Signature keys** are token objects (`CKA_TOKEN` true): a private key
//!   with `CKA_SENSITIVE` true, `CKA_EXTRACTABLE` false, `CKA_SIGN` true and
//!   nothing else, and its public key, sharing a random 16-byte `CKA_ID`.
//!   They survive restarts and are found again by their PKCS#11 URI
//!   (RFC 7512). ECDSA keys (P-256, P-384, P-521) sign with `CKM_ECDSA`
//!   over the scheme's digest (SHA-256/384/512, computed in software); the
//!   raw `r‖s` is converted to DER and normalised to low S. Ed25519 keys
//!   (`CKK_EC_EDWARDS`, `CKA_EC_PARAMS` the DER of OID 1.3.101.112) sign the
//!   whole message with `CKM_EDDSA` (PureEdDSA).
//! * **HPKE keys** (leaf and init keys, RFC 9420 §5.1.3) are needed in bulk,
//!   one per KeyPackage, and a token object costs about 80 ms to create on
//!   SoftHSM (it is written to disk). So an HPKE key is a **session object**
//!   (`CKA_TOKEN` false, `CKA_SENSITIVE` true), generated in the token,
//!   wrapped once with `CKM_AES_KEY_WRAP_PAD` (RFC 5649) under a
//!   token-resident AES-256 key, and then made non-extractable with
//!   `C_SetAttributeValue(CKA_EXTRACTABLE = false)` (PKCS#11 allows only the
//!   change true → false). The wrapped blob travels in the key's URI
//!   (`?x-hsmls-wrapped=…&x-hsmls-wrapping-key=…&x-hsmls-public=…`); after a
//!   restart [`KeyCustody::find`] unwraps it (`C_UnwrapKey`, sensitive, not
//!   extractable, session object) — the way TPMs keep key blobs outside the
//!   chip. `ECDH` uses `CKM_ECDH1_DERIVE` with `CKD_NULL` into a 32-byte
//!   `CKK_GENERIC_SECRET`, which is read into a `Zeroizing` buffer and
//!   destroyed at once.
//!
//! # The trade-off of wrapped HPKE keys
//!
//! * Gained: key generation at session-object speed (thousands per second
//!   instead of about 12 per second on SoftHSM), and no growth of the token's
//!   storage with every KeyPackage. The plaintext private key never enters
//!   process memory: it is generated, wrapped and used inside the token.
//! * Lost: the HPKE private key is *extractable in wrapped form* for the
//!   moment between generation and the `C_SetAttributeValue` call, and the
//!   blob exists outside the token. The blob is safe only as long as the
//!   wrapping key stays in the token. The wrapping key carries a
//!   `CKA_UNWRAP_TEMPLATE` (EC private key, `CKA_SENSITIVE` true,
//!   `CKA_EXTRACTABLE` false; SoftHSM 2.6.1 enforces it, a test checks), is
//!   not modifiable, not copyable and cannot encrypt or decrypt, so a party
//!   holding the user PIN and a blob can *use* the key in the token — as it
//!   could a token-object key — but not unwrap it as extractable. cryptoki
//!   0.12 has no typed attribute for the template, so it is passed as an
//!   encoded `CK_ATTRIBUTE` array (Unix layout; on Windows no template is
//!   set).
//!   `CKA_WRAP_WITH_TRUSTED` would restrict which keys may wrap the HPKE key;
//!   SoftHSM enforces it, but only the security officer may set `CKA_TRUSTED`
//!   on the wrapping key (a user session gets `CKR_ATTRIBUTE_READ_ONLY`), and
//!   since the HPKE key becomes non-extractable right after its one wrap,
//!   hsmls does not use it.
//! * Forward secrecy: [`KeyCustody::destroy`] destroys the live session
//!   object and remembers the key as destroyed for the life of this
//!   [`Pkcs11Custody`]; after a restart the blob could be unwrapped again, so
//!   the application must also delete every stored copy of the key's URI.
//! * Session objects die with their session, so the session pool never
//!   closes a session while the custody lives; a key whose session did die is
//!   unwrapped again on demand from its URI.
//!
//! # Capabilities
//!
//! [`Pkcs11Custody::open`] asks the token about each mechanism hsmls needs
//! (`C_GetMechanismInfo`; it does not list them all, so a token offering
//! mechanisms that cryptoki has no name for causes no log noise):
//! `ecdsa_secp256r1_sha256` signature keys need `CKM_EC_KEY_PAIR_GEN` (for
//! 256-bit keys) and `CKM_ECDSA`; `DHKEM(P-256, HKDF-SHA256)` HPKE keys need
//! `CKM_EC_KEY_PAIR_GEN`, `CKM_ECDH1_DERIVE`, `CKM_AES_KEY_GEN` and
//! `CKM_AES_KEY_WRAP_PAD`. A token without them (e.g. Debian 12's
//! tpm2-pkcs11, which has no `C_DeriveKey`) still holds signature keys;
//! `generate(KeySpec::DHKEM_P256_HKDF_SHA256)` then returns
//! [`CustodyError::Unsupported`].
//!
//! # Known limitation
//!
//! `cryptoki::Session::get_attributes` copies an attribute's value out of an
//! internal buffer that it frees without zeroizing. The ECDH secret that
//! hsmls reads is zeroized in hsmls's own buffers, but that freed copy is
//! not; fixing it needs a change in cryptoki (this crate forbids `unsafe`).

mod config;
mod configured;
mod module;
mod pool;
mod seal;
pub mod uri;

pub use config::{
    CONFIG_ENV, DEFAULT_POOL_SIZE, DEFAULT_STATE_SEAL_KEY_LABEL, PinSource, Pkcs11Config,
};
pub use configured::{ConfiguredCustody, SealHome};
pub use seal::Pkcs11Sealer;
pub use uri::Pkcs11Uri;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::KeyObjectFault;
use crate::keys::validate_public_key;
use crate::{
    Capabilities, CustodyError, KemAlgorithm, KeyAttributes, KeyCustody, KeyPurpose, KeyRef,
    KeySpec, PublicKey, SharedSecret, SignatureScheme, check_prehash,
};
use module::Module;
use pool::{PooledSession, SessionPool};

/// DER of the named curve P-256 (OID 1.2.840.10045.3.1.7), for `CKA_EC_PARAMS`.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the named curve P-384 (secp384r1, OID 1.3.132.0.34).
const P384_PARAMS: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER of the named curve P-521 (secp521r1, OID 1.3.132.0.35).
const P521_PARAMS: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
/// DER of the OID id-Ed25519 (1.3.101.112, RFC 8410 §3), the
/// `CKA_EC_PARAMS` hsmls gives Ed25519 keys (PKCS#11 v3.0 §2.3.10 allows
/// it, and SoftHSM 2.6.1 accepts it).
const ED25519_OID_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
/// The other `CKA_EC_PARAMS` PKCS#11 v3.0 names for Ed25519: the curve
/// name as a DER PrintableString "edwards25519". Recognised on keys made by
/// other tools.
const ED25519_NAME_PARAMS: [u8; 14] = [
    0x13, 0x0c, b'e', b'd', b'w', b'a', b'r', b'd', b's', b'2', b'5', b'5', b'1', b'9',
];

/// The elliptic curve a key of `spec` lives on, as the token knows it.
struct Curve {
    /// `CKA_KEY_TYPE`: `CKK_EC` (Weierstrass) or `CKK_EC_EDWARDS`.
    key_type: KeyType,
    /// `CKA_EC_PARAMS`: the DER of the named curve's OID.
    params: &'static [u8],
    /// The key-pair generation mechanism.
    key_gen: MechanismType,
    /// The key size the key-pair generation must offer, in bits.
    bits: usize,
    /// The signature mechanism (for signature keys).
    sign: MechanismType,
}

impl Curve {
    /// The key-pair generation mechanism, with its (empty) parameters.
    fn key_gen_mechanism(&self) -> Mechanism<'static> {
        if self.key_gen == MechanismType::ECC_EDWARDS_KEY_PAIR_GEN {
            Mechanism::EccEdwardsKeyPairGen
        } else {
            Mechanism::EccKeyPairGen
        }
    }
}

const fn weierstrass(params: &'static [u8], bits: usize) -> Curve {
    Curve {
        key_type: KeyType::EC,
        params,
        key_gen: MechanismType::ECC_KEY_PAIR_GEN,
        bits,
        sign: MechanismType::ECDSA,
    }
}

const P256: Curve = weierstrass(&P256_PARAMS, 256);
const P384: Curve = weierstrass(&P384_PARAMS, 384);
const P521: Curve = weierstrass(&P521_PARAMS, 521);
const ED25519: Curve = Curve {
    key_type: KeyType::EC_EDWARDS,
    params: &ED25519_OID_PARAMS,
    key_gen: MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
    bits: 256,
    sign: MechanismType::EDDSA,
};

/// The token curve of `spec`, or [`CustodyError::Unsupported`] for
/// `DHKEM(X25519, HKDF-SHA256)`, which this backend does not hold.
fn curve(spec: KeySpec) -> Result<&'static Curve, CustodyError> {
    match spec {
        KeySpec::Signature(SignatureScheme::EcdsaSecp256r1Sha256)
        | KeySpec::Kem(KemAlgorithm::DhKemP256HkdfSha256) => Ok(&P256),
        KeySpec::Signature(SignatureScheme::EcdsaSecp384r1Sha384)
        | KeySpec::Kem(KemAlgorithm::DhKemP384HkdfSha384) => Ok(&P384),
        KeySpec::Signature(SignatureScheme::EcdsaSecp521r1Sha512)
        | KeySpec::Kem(KemAlgorithm::DhKemP521HkdfSha512) => Ok(&P521),
        KeySpec::Signature(SignatureScheme::Ed25519) => Ok(&ED25519),
        _ => Err(not_in_token(spec)),
    }
}

/// Why this backend does not hold X25519 HPKE keys.
pub const X25519_REASON: &str = "the PKCS#11 backend holds no X25519 keys: X25519 key agreement \
     in a token needs CKM_EC_MONTGOMERY_KEY_PAIR_GEN and CKM_ECDH1_DERIVE on Montgomery keys, \
     which SoftHSM 2.6.1 lacks (and hsmls does not implement)";

/// [`CustodyError::Unsupported`] for a key spec the PKCS#11 backend does
/// not hold: `DHKEM(X25519, HKDF-SHA256)` (suites 0x0001 and 0x0003).
fn not_in_token(spec: KeySpec) -> CustodyError {
    CustodyError::Unsupported {
        spec,
        reason: X25519_REASON.into(),
    }
}

/// The key of `purpose` on the curve with `CKA_EC_PARAMS` `params`, if
/// hsmls has such a key.
fn spec_for(purpose: KeyPurpose, params: &[u8]) -> Option<KeySpec> {
    let sig = purpose == KeyPurpose::Signature;
    if params == P256_PARAMS {
        Some(if sig {
            KeySpec::ECDSA_SECP256R1_SHA256
        } else {
            KeySpec::DHKEM_P256_HKDF_SHA256
        })
    } else if params == P384_PARAMS {
        Some(if sig {
            KeySpec::ECDSA_SECP384R1_SHA384
        } else {
            KeySpec::DHKEM_P384_HKDF_SHA384
        })
    } else if params == P521_PARAMS {
        Some(if sig {
            KeySpec::ECDSA_SECP521R1_SHA512
        } else {
            KeySpec::DHKEM_P521_HKDF_SHA512
        })
    } else if sig && (params == ED25519_OID_PARAMS || params == ED25519_NAME_PARAMS) {
        Some(KeySpec::ED25519)
    } else {
        None
    }
}

/// The KEM of a wrapped HPKE key, from the length of its public key (the
/// NIST curves' uncompressed points differ in length: 65, 97, 133 bytes).
fn kem_for_public_len(len: usize) -> Option<KeySpec> {
    [
        KeySpec::DHKEM_P256_HKDF_SHA256,
        KeySpec::DHKEM_P384_HKDF_SHA384,
        KeySpec::DHKEM_P521_HKDF_SHA512,
    ]
    .into_iter()
    .find(|s| s.public_key_len() == len)
}

/// The uncompressed base point of a NIST KEM's curve: the ECDH of a private
/// key with it gives the x-coordinate of the key's own public point.
fn generator(spec: KeySpec) -> Option<Vec<u8>> {
    match spec {
        KeySpec::Kem(KemAlgorithm::DhKemP256HkdfSha256) => Some(
            p256::AffinePoint::GENERATOR
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        ),
        KeySpec::Kem(KemAlgorithm::DhKemP384HkdfSha384) => Some(
            p384::AffinePoint::GENERATOR
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        ),
        KeySpec::Kem(KemAlgorithm::DhKemP521HkdfSha512) => Some(
            p521::AffinePoint::GENERATOR
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        ),
        _ => None,
    }
}

/// The public key of the private key `private_key` of `spec` (for import),
/// or [`CustodyError::InvalidPrivateKey`].
fn public_of(spec: KeySpec, private_key: &[u8]) -> Result<PublicKey, CustodyError> {
    let invalid = || CustodyError::InvalidPrivateKey(spec);
    // Exactly the key length: the NIST scalar crates would also accept (and
    // pad) shorter slices.
    if private_key.len() != spec.private_key_len() {
        return Err(invalid());
    }
    let bytes = match spec {
        KeySpec::Signature(SignatureScheme::EcdsaSecp256r1Sha256)
        | KeySpec::Kem(KemAlgorithm::DhKemP256HkdfSha256) => {
            p256::SecretKey::from_slice(private_key)
                .map_err(|_| invalid())?
                .public_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec()
        }
        KeySpec::Signature(SignatureScheme::EcdsaSecp384r1Sha384)
        | KeySpec::Kem(KemAlgorithm::DhKemP384HkdfSha384) => {
            p384::SecretKey::from_slice(private_key)
                .map_err(|_| invalid())?
                .public_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec()
        }
        KeySpec::Signature(SignatureScheme::EcdsaSecp521r1Sha512)
        | KeySpec::Kem(KemAlgorithm::DhKemP521HkdfSha512) => {
            p521::SecretKey::from_slice(private_key)
                .map_err(|_| invalid())?
                .public_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec()
        }
        KeySpec::Signature(SignatureScheme::Ed25519) => {
            let mut seed = Zeroizing::new([0u8; 32]);
            seed.copy_from_slice(private_key);
            ed25519_dalek::SigningKey::from_bytes(&seed)
                .verifying_key()
                .to_bytes()
                .to_vec()
        }
        _ => return Err(not_in_token(spec)),
    };
    PublicKey::new(spec, &bytes)
}

/// The DER encoding, with a low S (RFC 9420 §5.1.2), of the raw `r‖s` that
/// `CKM_ECDSA` returns (PKCS#11 v2.40 §2.3.1); for Ed25519 the 64-byte
/// signature as it is (RFC 8032 §5.1.6).
fn signature_encoding(scheme: SignatureScheme, raw: &[u8]) -> Result<Vec<u8>, CustodyError> {
    let bad = || CustodyError::Token {
        operation: "C_Sign",
        reason: format!(
            "{scheme}: the token returned a signature of {} bytes",
            raw.len()
        ),
    };
    Ok(match scheme {
        SignatureScheme::EcdsaSecp256r1Sha256 => {
            der_low_s!(p256::ecdsa::Signature::from_slice(raw).map_err(|_| bad())?)
        }
        SignatureScheme::EcdsaSecp384r1Sha384 => {
            der_low_s!(p384::ecdsa::Signature::from_slice(raw).map_err(|_| bad())?)
        }
        SignatureScheme::EcdsaSecp521r1Sha512 => {
            der_low_s!(p521::ecdsa::Signature::from_slice(raw).map_err(|_| bad())?)
        }
        SignatureScheme::Ed25519 if raw.len() == 64 => raw.to_vec(),
        _ => return Err(bad()),
    })
}

/// Length of the random `CKA_ID` given to every key.
const ID_LEN: usize = 16;

pub(crate) fn token_err(operation: &'static str, e: Error) -> CustodyError {
    CustodyError::Token {
        operation,
        reason: e.to_string(),
    }
}

fn is_session_broken(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::DeviceError,
            _
        )
    )
}

/// Serialises writes of token objects (persistent key generation and
/// destruction) within this process. SoftHSM 2.6 keeps token objects in
/// files and, under concurrent creation from several threads, sometimes
/// fails `C_GenerateKeyPair` with `CKR_GENERAL_ERROR`; token-object
/// generation costs tens of milliseconds anyway, so serialising it costs
/// little. Session objects (wrapped HPKE keys) do not take this lock.
static TOKEN_OBJECT_WRITES: Mutex<()> = Mutex::new(());

/// How many times a token object's creation is tried again after
/// `CKR_GENERAL_ERROR`. SoftHSM 2.6 returns it now and then when its
/// object store is touched by several sessions or processes at once (seen
/// about once per full test run, sometimes twice in a row); the error is
/// transient, so a few attempts with a growing pause make it vanish.
const GENERAL_ERROR_RETRIES: u32 = 4;

/// The errors SoftHSM 2.6 returns now and then, for a valid template, when
/// object creations race in several sessions: `CKR_GENERAL_ERROR`, and
/// `CKR_TEMPLATE_INCONSISTENT` (seen in the custody and AS tests).
fn is_transient_creation_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(RvError::GeneralError | RvError::TemplateInconsistent, _)
    )
}

/// Removes whatever a failed creation left with this id, then pauses
/// (10, 20, 40, 80 ms) before the next attempt.
fn remove_partial(s: &Session, id: &[u8], attempt: u32) {
    if let Ok(partial) = s.find_objects(&[Attribute::Id(id.to_vec())]) {
        for h in partial {
            let _ = s.destroy_object(h);
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(10 << attempt.min(4)));
}

fn token_object_write_lock() -> std::sync::MutexGuard<'static, ()> {
    TOKEN_OBJECT_WRITES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn is_stale_handle(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid, _)
    )
}

/// Unwraps `CKA_EC_POINT`: a DER OCTET STRING holding the uncompressed point
/// (some tokens return the bare point), then validates it as a key of
/// `spec`.
fn decode_ec_point(spec: KeySpec, value: &[u8]) -> Result<PublicKey, CustodyError> {
    let len = spec.public_key_len();
    let point = match value {
        [0x04, l, rest @ ..] if usize::from(*l) == len && rest.len() == len && len < 0x80 => rest,
        [0x04, 0x81, l, rest @ ..] if usize::from(*l) == len && rest.len() == len => rest,
        raw if raw.len() == len => raw,
        _ => {
            return Err(CustodyError::InvalidPublicKey(
                crate::PointFault::EcPointEncoding,
            ));
        }
    };
    PublicKey::new(spec, point)
}

fn encode_ec_point(public: &PublicKey) -> Vec<u8> {
    // A DER OCTET STRING; the points of the NIST curves up to P-521 (133
    // bytes) need at most the one-byte long form of the length.
    let point = public.as_bytes();
    let mut der = Vec::with_capacity(point.len() + 3);
    der.push(0x04);
    let len = u8::try_from(point.len()).unwrap_or(u8::MAX);
    if len >= 0x80 {
        der.push(0x81);
    }
    der.push(len);
    der.extend_from_slice(point);
    der
}

fn new_id() -> Vec<u8> {
    let mut id = vec![0u8; ID_LEN];
    OsRng.fill_bytes(&mut id);
    id
}

fn label_for(purpose: KeyPurpose, id: &[u8]) -> String {
    let kind = match purpose {
        KeyPurpose::Signature => "sig",
        KeyPurpose::Hpke => "hpke",
    };
    format!("hsmls-{kind}-{}", hex::encode(id.get(..8).unwrap_or(id)))
}

/// The mechanisms hsmls uses, with their PKCS#11 names. The probe asks the
/// token about each one (`C_GetMechanismInfo`) instead of listing them all.
const NEEDED_MECHANISMS: [(MechanismType, &str); 7] = [
    (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"),
    (MechanismType::ECDSA, "CKM_ECDSA"),
    (MechanismType::ECDH1_DERIVE, "CKM_ECDH1_DERIVE"),
    (
        MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
        "CKM_EC_EDWARDS_KEY_PAIR_GEN",
    ),
    (MechanismType::EDDSA, "CKM_EDDSA"),
    (MechanismType::AES_KEY_GEN, "CKM_AES_KEY_GEN"),
    (MechanismType::AES_KEY_WRAP_PAD, "CKM_AES_KEY_WRAP_PAD"),
];

/// What the token said about one mechanism: absent, or offered for keys of
/// `min..=max` bits (the unit is the mechanism's own; bits for EC key
/// generation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Offer {
    Absent,
    Present { min: usize, max: usize },
}

/// The mechanisms keys of `purpose` on `curve` need: the curve's key-pair
/// generation, then its signature mechanism, or ECDH and the AES key
/// generation and key wrap of wrapped HPKE keys.
fn needed_mechanisms(curve: &Curve, purpose: KeyPurpose) -> Vec<MechanismType> {
    let mut needed = vec![curve.key_gen];
    match purpose {
        KeyPurpose::Signature => needed.push(curve.sign),
        KeyPurpose::Hpke => needed.extend([
            MechanismType::ECDH1_DERIVE,
            MechanismType::AES_KEY_GEN,
            MechanismType::AES_KEY_WRAP_PAD,
        ]),
    }
    needed
}

/// The mechanisms a token lacks for keys of `spec`, by PKCS#11 name, given
/// what it said about each needed mechanism.
fn missing_mechanisms(spec: KeySpec, offer: &dyn Fn(MechanismType) -> Offer) -> Vec<String> {
    let Ok(curve) = curve(spec) else {
        return vec![format!("{spec} in this backend")];
    };
    let bits = curve.bits;
    let needed = needed_mechanisms(curve, spec.purpose());
    let name = |m: MechanismType| {
        NEEDED_MECHANISMS
            .iter()
            .find(|(t, _)| *t == m)
            .map_or("?", |(_, n)| n)
    };
    let mut missing = Vec::new();
    for m in needed {
        match offer(m) {
            Offer::Absent => missing.push(name(m).to_owned()),
            Offer::Present { min, max } if m == curve.key_gen && !(min <= bits && bits <= max) => {
                missing.push(format!("{} ({bits}-bit keys)", name(m)));
            }
            Offer::Present { .. } => {}
        }
    }
    missing
}

/// `CKA_UNWRAP_TEMPLATE` (`CKF_ARRAY_ATTRIBUTE | 0x212`), which cryptoki 0.12
/// has no typed attribute for.
const CKA_UNWRAP_TEMPLATE: CkUlong = 0x4000_0212;
const CKA_CLASS: CkUlong = 0x000;
const CKA_KEY_TYPE: CkUlong = 0x100;
const CKA_SENSITIVE: CkUlong = 0x103;
const CKA_EXTRACTABLE: CkUlong = 0x162;
const CKO_PRIVATE_KEY: CkUlong = 3;
const CKK_EC: CkUlong = 3;

/// PKCS#11's `CK_ULONG`, C's `unsigned long`.
type CkUlong = std::os::raw::c_ulong;

/// The unwrap template is encoded as an array of `CK_ATTRIBUTE` structs
/// (`{ CkUlong type; void *pValue; CkUlong ulValueLen; }`); on Unix
/// `unsigned long` is pointer-sized, so the struct has no padding. Windows
/// packs PKCS#11 structs differently; there hsmls sets no unwrap template.
const UNWRAP_TEMPLATE_SUPPORTED: bool = cfg!(unix);

/// The `CKA_UNWRAP_TEMPLATE` of the wrapping key: every key unwrapped with
/// it must be an EC private key with `CKA_SENSITIVE` true and
/// `CKA_EXTRACTABLE` false (PKCS#11 v2.40 §4.8). So a holder of the PIN and
/// a blob can use the key in the token, but cannot unwrap it as extractable.
///
/// The array holds pointers (as integers) into the value buffers of this
/// struct, which must therefore outlive the `C_GenerateKey` call.
struct UnwrapTemplate {
    class: Box<[u8]>,
    key_type: Box<[u8]>,
    yes: Box<[u8]>,
    no: Box<[u8]>,
}

impl UnwrapTemplate {
    const ENTRIES: usize = 4;
    const ENTRY_LEN: usize = 2 * std::mem::size_of::<CkUlong>() + std::mem::size_of::<usize>();
    const LEN: usize = Self::ENTRIES * Self::ENTRY_LEN;

    fn new() -> Self {
        UnwrapTemplate {
            class: Box::new(CKO_PRIVATE_KEY.to_ne_bytes()),
            key_type: Box::new(CKK_EC.to_ne_bytes()),
            yes: Box::new([1u8]),
            no: Box::new([0u8]),
        }
    }

    /// The attribute to put in the wrapping key's template (None where
    /// the encoding is not supported).
    fn attribute(&self) -> Option<Attribute> {
        if !UNWRAP_TEMPLATE_SUPPORTED {
            return None;
        }
        let mut bytes = Vec::with_capacity(Self::LEN);
        for (kind, value) in [
            (CKA_CLASS, &self.class),
            (CKA_KEY_TYPE, &self.key_type),
            (CKA_SENSITIVE, &self.yes),
            (CKA_EXTRACTABLE, &self.no),
        ] {
            bytes.extend_from_slice(&kind.to_ne_bytes());
            bytes.extend_from_slice(&(value.as_ptr() as usize).to_ne_bytes());
            bytes.extend_from_slice(&(value.len() as CkUlong).to_ne_bytes());
        }
        Some(Attribute::VendorDefined((
            AttributeType::VendorDefined(CKA_UNWRAP_TEMPLATE),
            bytes,
        )))
    }
}

/// A private key object this custody has a handle for.
#[derive(Clone, Copy)]
struct LiveKey {
    spec: KeySpec,
    handle: ObjectHandle,
}

#[derive(Clone)]
struct WrappingKey {
    id: Vec<u8>,
    handle: ObjectHandle,
}

/// Key custody in a PKCS#11 token. See the [module documentation](self) for
/// what is stored where.
pub struct Pkcs11Custody {
    module: Arc<Module>,
    slot: Slot,
    token_label: String,
    pool: SessionPool,
    capabilities: Capabilities,
    /// The wrapping key new HPKE keys are wrapped under (None: no HPKE keys).
    wrapping: Option<WrappingKey>,
    /// Wrapping keys by `CKA_ID` (older blobs may name another one).
    wrapping_keys: RwLock<HashMap<Vec<u8>, ObjectHandle>>,
    /// Live private-key handles by `CKA_ID`.
    keys: RwLock<HashMap<Vec<u8>, LiveKey>>,
    /// `CKA_ID`s of wrapped keys destroyed through this instance.
    destroyed: Mutex<HashSet<Vec<u8>>>,
    /// Why the token cannot hold the key specs it does not support.
    refusals: HashMap<KeySpec, String>,
    /// Label of the AES key that seals state at rest.
    state_seal_key_label: String,
}

impl fmt::Debug for Pkcs11Custody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Custody")
            .field("token_label", &self.token_label)
            .field("slot", &self.slot.id())
            .field("capabilities", &self.capabilities.summary)
            .finish_non_exhaustive()
    }
}

impl Drop for Pkcs11Custody {
    fn drop(&mut self) {
        // Closing the sessions destroys the session objects (HPKE keys).
        self.module.release(self.slot, self.pool.drain());
    }
}

impl Pkcs11Custody {
    /// Opens the custody described by the file that `HSMLS_PKCS11_CONFIG`
    /// names.
    pub fn open_from_env() -> Result<Self, CustodyError> {
        Self::open(&Pkcs11Config::from_env()?)
    }

    /// Loads the module, finds the token by label, logs in with the PIN from
    /// the configured source, probes the mechanisms, and (if the token can
    /// hold HPKE keys) finds or creates the wrapping key.
    pub fn open(config: &Pkcs11Config) -> Result<Self, CustodyError> {
        let module = Module::load(&config.module)?;
        let slot = Self::find_slot(&module, &config.token_label)?;
        let pin = config.pin.read()?;
        let session = module
            .pkcs11
            .open_rw_session(slot)
            .map_err(|e| token_err("C_OpenSession", e))?;
        module.login(slot, &session, &pin)?;
        drop(pin);
        let pool = SessionPool::new(Arc::clone(&module), slot, config.pool_size, session);
        let mut custody = Pkcs11Custody {
            module,
            slot,
            token_label: config.token_label.clone(),
            pool,
            capabilities: Capabilities::new(Vec::new(), String::new()),
            wrapping: None,
            wrapping_keys: RwLock::new(HashMap::new()),
            keys: RwLock::new(HashMap::new()),
            destroyed: Mutex::new(HashSet::new()),
            refusals: HashMap::new(),
            state_seal_key_label: config.state_seal_key_label.clone(),
        };
        custody.probe(&config.wrapping_key_label)?;
        tracing::info!(
            token = %custody.token_label,
            slot = slot.id(),
            signature_keys = custody
                .capabilities
                .supports(KeySpec::ECDSA_SECP256R1_SHA256),
            hpke_keys = custody
                .capabilities
                .supports(KeySpec::DHKEM_P256_HKDF_SHA256),
            "{}",
            custody.capabilities.summary
        );
        Ok(custody)
    }

    fn find_slot(module: &Module, label: &str) -> Result<Slot, CustodyError> {
        // SoftHSM's file store can fail a read with CKR_GENERAL_ERROR while
        // another process rewrites the token's files: retry a few times.
        let mut attempt = 0;
        loop {
            match Self::find_slot_once(module, label) {
                Ok(Some(slot)) => return Ok(slot),
                Ok(None) => return Err(CustodyError::TokenNotFound(label.to_owned())),
                Err(Error::Pkcs11(RvError::GeneralError, _)) if attempt < 8 => {
                    attempt += 1;
                    tracing::debug!(attempt, "token busy (CKR_GENERAL_ERROR); retrying");
                    std::thread::sleep(std::time::Duration::from_millis(25 * attempt));
                }
                Err(e) => return Err(token_err("C_GetSlotList/C_GetTokenInfo", e)),
            }
        }
    }

    fn find_slot_once(module: &Module, label: &str) -> Result<Option<Slot>, Error> {
        for slot in module.pkcs11.get_slots_with_initialized_token()? {
            if module.pkcs11.get_token_info(slot)?.label().trim_end() == label {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// What the token says about `mechanism` (`C_GetMechanismInfo`).
    fn offer(&self, mechanism: MechanismType) -> Result<Offer, CustodyError> {
        match self.module.pkcs11.get_mechanism_info(self.slot, mechanism) {
            Ok(info) => Ok(Offer::Present {
                min: info.min_key_size(),
                max: info.max_key_size(),
            }),
            Err(Error::Pkcs11(RvError::MechanismInvalid, _)) => Ok(Offer::Absent),
            Err(e) => Err(token_err("C_GetMechanismInfo", e)),
        }
    }

    fn probe(&mut self, wrapping_key_label: &str) -> Result<(), CustodyError> {
        // One C_GetMechanismInfo per needed mechanism, never
        // C_GetMechanismList: cryptoki logs an ERROR (through the `log`
        // crate) for every listed mechanism it has no name for, and tokens
        // list many (vendor mechanisms, newer PKCS#11 versions).
        let mut offers = Vec::with_capacity(NEEDED_MECHANISMS.len());
        for (m, _) in NEEDED_MECHANISMS {
            offers.push((m, self.offer(m)?));
        }
        let offer = |m: MechanismType| {
            offers
                .iter()
                .find(|(t, _)| *t == m)
                .map_or(Offer::Absent, |(_, o)| *o)
        };
        let info = self
            .module
            .pkcs11
            .get_token_info(self.slot)
            .map_err(|e| token_err("C_GetTokenInfo", e))?;
        let mut key_specs = Vec::new();
        let mut notes = Vec::new();
        let mut refusals = HashMap::new();
        for spec in KeySpec::ALL {
            if curve(spec).is_err() {
                notes.push(format!("{spec} keys: no ({X25519_REASON})"));
                refusals.insert(spec, X25519_REASON.to_owned());
                continue;
            }
            let missing = missing_mechanisms(spec, &offer);
            if !missing.is_empty() {
                let why = format!("the token lacks {}", missing.join(", "));
                notes.push(format!("{spec} keys: no ({why})"));
                refusals.insert(spec, why);
                continue;
            }
            match spec.purpose() {
                KeyPurpose::Signature => {
                    key_specs.push(spec);
                    notes.push(format!("{spec} keys: yes (token objects)"));
                }
                KeyPurpose::Hpke => {
                    if self.wrapping.is_none() {
                        match self.wrapping_key(wrapping_key_label) {
                            Ok(w) => self.wrapping = Some(w),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot provision the HPKE wrapping key");
                                let why = format!("wrapping key unavailable: {e}");
                                notes.push(format!("{spec} keys: no ({why})"));
                                refusals.insert(spec, why);
                                continue;
                            }
                        }
                    }
                    if let Some(w) = &self.wrapping {
                        notes.push(format!(
                            "{spec} keys: yes (session objects wrapped under AES key \
                             {wrapping_key_label:?} id {})",
                            hex::encode(&w.id)
                        ));
                        key_specs.push(spec);
                    }
                }
            }
        }
        self.refusals = refusals;
        self.capabilities = Capabilities::new(
            key_specs,
            format!(
                "PKCS#11 token {:?} ({} {}): {}",
                self.token_label,
                info.manufacturer_id().trim_end(),
                info.model().trim_end(),
                notes.join("; ")
            ),
        );
        Ok(())
    }

    /// Finds the wrapping key by label (the one with the smallest `CKA_ID` if
    /// concurrent first runs created several), or creates it.
    fn wrapping_key(&self, label: &str) -> Result<WrappingKey, CustodyError> {
        let s = self.pool.get()?;
        if let Some(w) = Self::find_wrapping_key(&s, label)? {
            self.remember_wrapping_key(&w);
            return Ok(w);
        }
        let _guard = self
            .module
            .provisioning
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(w) = Self::find_wrapping_key(&s, label)? {
            self.remember_wrapping_key(&w);
            return Ok(w);
        }
        let id = new_id();
        let unwrap_template = UnwrapTemplate::new();
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Modifiable(false),
            Attribute::Copyable(false),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::Id(id),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        template.extend(unwrap_template.attribute());
        s.generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| token_err("C_GenerateKey (wrapping key)", e))?;
        drop(template);
        drop(unwrap_template);
        tracing::info!(label, "created the token-resident HPKE wrapping key");
        let w = Self::find_wrapping_key(&s, label)?.ok_or_else(|| CustodyError::Token {
            operation: "C_FindObjects (wrapping key)",
            reason: "the new wrapping key is not found".into(),
        })?;
        self.remember_wrapping_key(&w);
        Ok(w)
    }

    fn find_wrapping_key(s: &Session, label: &str) -> Result<Option<WrappingKey>, CustodyError> {
        let handles = s
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| token_err("C_FindObjects (wrapping key)", e))?;
        let mut best: Option<WrappingKey> = None;
        for handle in handles {
            if !Self::is_hardened_wrapping_key(s, handle)? {
                tracing::warn!(
                    label,
                    "ignoring a wrapping key without the hsmls unwrap policy"
                );
                continue;
            }
            let id = Self::read_id(s, handle)?;
            if best.as_ref().is_none_or(|b| id < b.id) {
                best = Some(WrappingKey { id, handle });
            }
        }
        Ok(best)
    }

    /// Whether a wrapping key carries the policy hsmls gives it: sensitive,
    /// not extractable, not modifiable, no encrypt/decrypt, and an unwrap
    /// template.
    fn is_hardened_wrapping_key(s: &Session, handle: ObjectHandle) -> Result<bool, CustodyError> {
        let attrs = s
            .get_attributes(
                handle,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Modifiable,
                    AttributeType::Decrypt,
                    AttributeType::Encrypt,
                ],
            )
            .map_err(|e| token_err("C_GetAttributeValue (wrapping key)", e))?;
        let mut ok = 0;
        for a in attrs {
            match a {
                Attribute::Sensitive(true)
                | Attribute::Extractable(false)
                | Attribute::Modifiable(false)
                | Attribute::Decrypt(false)
                | Attribute::Encrypt(false) => ok += 1,
                _ => {}
            }
        }
        if ok != 5 {
            return Ok(false);
        }
        if !UNWRAP_TEMPLATE_SUPPORTED {
            return Ok(true);
        }
        let info = s
            .get_attribute_info(handle, &[AttributeType::VendorDefined(CKA_UNWRAP_TEMPLATE)])
            .map_err(|e| token_err("C_GetAttributeValue (CKA_UNWRAP_TEMPLATE)", e))?;
        Ok(matches!(info.as_slice(), [AttributeInfo::Available(n)] if *n == UnwrapTemplate::LEN))
    }

    fn remember_wrapping_key(&self, w: &WrappingKey) {
        self.wrapping_keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(w.id.clone(), w.handle);
    }

    fn wrapping_handle(&self, s: &Session, id: &[u8]) -> Result<ObjectHandle, CustodyError> {
        if let Some(h) = self
            .wrapping_keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return Ok(*h);
        }
        let handles = s
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Id(id.to_vec()),
            ])
            .map_err(|e| token_err("C_FindObjects (wrapping key)", e))?;
        match handles.as_slice() {
            [h] => {
                self.remember_wrapping_key(&WrappingKey {
                    id: id.to_vec(),
                    handle: *h,
                });
                Ok(*h)
            }
            [] => Err(CustodyError::KeyNotFound(format!(
                "wrapping key with id {} is not in token {:?}",
                hex::encode(id),
                self.token_label
            ))),
            _ => Err(CustodyError::InvalidUri(format!(
                "several wrapping keys have id {}",
                hex::encode(id)
            ))),
        }
    }

    fn read_id(s: &Session, handle: ObjectHandle) -> Result<Vec<u8>, CustodyError> {
        let attrs = s
            .get_attributes(handle, &[AttributeType::Id])
            .map_err(|e| token_err("C_GetAttributeValue (CKA_ID)", e))?;
        attrs
            .into_iter()
            .find_map(|a| match a {
                Attribute::Id(id) => Some(id),
                _ => None,
            })
            .ok_or_else(|| CustodyError::Token {
                operation: "C_GetAttributeValue (CKA_ID)",
                reason: "CKA_ID not readable".into(),
            })
    }

    fn read_point(
        s: &Session,
        spec: KeySpec,
        public: ObjectHandle,
    ) -> Result<PublicKey, CustodyError> {
        let attrs = s
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(|e| token_err("C_GetAttributeValue (CKA_EC_POINT)", e))?;
        // get_attributes silently drops unreadable attributes: check.
        let value = attrs
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            })
            .ok_or_else(|| CustodyError::Token {
                operation: "C_GetAttributeValue (CKA_EC_POINT)",
                reason: "CKA_EC_POINT not readable".into(),
            })?;
        decode_ec_point(spec, &value)
    }

    /// The kind of a private key object: its purpose from `CKA_SIGN` /
    /// `CKA_DERIVE`, its curve from `CKA_EC_PARAMS`.
    fn read_spec(s: &Session, handle: ObjectHandle, uri: &str) -> Result<KeySpec, CustodyError> {
        let attrs = s
            .get_attributes(
                handle,
                &[
                    AttributeType::Sign,
                    AttributeType::Derive,
                    AttributeType::EcParams,
                ],
            )
            .map_err(|e| {
                token_err(
                    "C_GetAttributeValue (CKA_SIGN, CKA_DERIVE, CKA_EC_PARAMS)",
                    e,
                )
            })?;
        let (mut sign, mut derive, mut params) = (None, None, None);
        for a in attrs {
            match a {
                Attribute::Sign(b) => sign = Some(b),
                Attribute::Derive(b) => derive = Some(b),
                Attribute::EcParams(p) => params = Some(p),
                _ => {}
            }
        }
        let unsupported = |reason| CustodyError::UnsupportedKeyObject {
            uri: uri.to_owned(),
            reason,
        };
        let purpose = match (sign, derive) {
            (Some(true), _) => KeyPurpose::Signature,
            (_, Some(true)) => KeyPurpose::Hpke,
            _ => return Err(unsupported(KeyObjectFault::NeitherSignNorDerive)),
        };
        let params = params.ok_or_else(|| unsupported(KeyObjectFault::EcParamsUnreadable))?;
        spec_for(purpose, &params).ok_or_else(|| unsupported(KeyObjectFault::UnsupportedCurve))
    }

    fn token_uri(&self, label: &str, id: &[u8]) -> Pkcs11Uri {
        Pkcs11Uri {
            token: Some(self.token_label.clone()),
            object: Some(label.to_owned()),
            id: Some(id.to_vec()),
            object_type: Some("private".into()),
            ..Pkcs11Uri::default()
        }
    }

    /// Checks that a URI names this custody's token.
    fn check_token(&self, u: &Pkcs11Uri, uri: &str) -> Result<(), CustodyError> {
        match &u.token {
            Some(t) if *t != self.token_label => Err(CustodyError::KeyNotFound(format!(
                "{uri} (names token {t:?}, this custody uses {:?})",
                self.token_label
            ))),
            _ => Ok(()),
        }
    }

    fn cache(&self, id: &[u8], key: LiveKey) {
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_vec(), key);
    }

    fn cached(&self, id: &[u8]) -> Option<LiveKey> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }

    fn forget(&self, id: &[u8]) -> Option<LiveKey> {
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    fn is_destroyed(&self, id: &[u8]) -> bool {
        self.destroyed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    fn require(&self, spec: KeySpec) -> Result<(), CustodyError> {
        if self.capabilities.supports(spec) {
            Ok(())
        } else {
            Err(CustodyError::Unsupported {
                spec,
                reason: self.refusal(spec),
            })
        }
    }

    /// Why the token cannot hold keys of `spec` (as the probe found).
    fn refusal(&self, spec: KeySpec) -> String {
        self.refusals
            .get(&spec)
            .cloned()
            .unwrap_or_else(|| self.capabilities.summary.clone())
    }

    /// The PKCS#11 mechanisms keys of `spec` use in this backend (for
    /// operators: `hsmls probe`); empty for a spec it never holds.
    pub fn mechanisms(spec: KeySpec) -> Vec<&'static str> {
        let Ok(curve) = curve(spec) else {
            return Vec::new();
        };
        needed_mechanisms(curve, spec.purpose())
            .into_iter()
            .filter_map(|m| NEEDED_MECHANISMS.iter().find(|(t, _)| *t == m))
            .map(|(_, n)| *n)
            .collect()
    }

    /// Reports an error of an operation on a pooled session, closing the
    /// session if it is broken.
    fn fail(s: PooledSession<'_>, operation: &'static str, e: Error) -> CustodyError {
        if is_session_broken(&e) {
            s.discard();
        }
        token_err(operation, e)
    }

    // ---- key generation -------------------------------------------------

    fn generate_signature(&self, spec: KeySpec) -> Result<KeyRef, CustodyError> {
        let curve = curve(spec)?;
        let mechanism = curve.key_gen_mechanism();
        let id = new_id();
        let label = label_for(KeyPurpose::Signature, &id);
        let public_template = [
            Attribute::KeyType(curve.key_type),
            Attribute::EcParams(curve.params.to_vec()),
            Attribute::Token(true),
            Attribute::Private(false),
            // No CKA_VERIFY: hsmls verifies in software, and tpm2-pkcs11
            // refuses a template whose CKA_VERIFY differs from what it
            // derives from the TPM key ("User specified and TPM specified
            // attr mismatch: 0x10a", C_GenerateKeyPair CKR_GENERAL_ERROR).
            Attribute::Id(id.clone()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Derive(false),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Id(id.clone()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let s = self.pool.get()?;
        let generated = {
            let _write = token_object_write_lock();
            let mut result = s.generate_key_pair(&mechanism, &public_template, &private_template);
            for attempt in 1..=GENERAL_ERROR_RETRIES {
                if !matches!(&result, Err(e) if is_transient_creation_error(e)) {
                    break;
                }
                // The token may have created part of the pair: remove
                // whatever carries this id, wait, then try again.
                tracing::warn!(object = %label, attempt, "C_GenerateKeyPair failed transiently; retrying");
                remove_partial(&s, &id, attempt);
                result = s.generate_key_pair(&mechanism, &public_template, &private_template);
            }
            result
        };
        let (public, private) = match generated {
            Ok(pair) => pair,
            Err(e) => return Err(Self::fail(s, "C_GenerateKeyPair", e)),
        };
        let point = match Self::read_point(&s, spec, public) {
            Ok(p) => p,
            Err(e) => {
                let _ = s.destroy_object(private);
                let _ = s.destroy_object(public);
                return Err(e);
            }
        };
        self.cache(
            &id,
            LiveKey {
                spec,
                handle: private,
            },
        );
        tracing::debug!(object = %label, "generated a token signature key");
        Ok(KeyRef::new(point, self.token_uri(&label, &id).format()))
    }

    fn generate_hpke(&self, spec: KeySpec) -> Result<KeyRef, CustodyError> {
        let id = new_id();
        let label = label_for(KeyPurpose::Hpke, &id);
        let curve = curve(spec)?;
        let public_template = [
            Attribute::KeyType(curve.key_type),
            Attribute::EcParams(curve.params.to_vec()),
            Attribute::Token(false),
            Attribute::Private(false),
        ];
        let private_template = [
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            // Only so that it can be wrapped once; cleared right after.
            Attribute::Extractable(true),
            Attribute::Derive(true),
            Attribute::Sign(false),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Id(id.clone()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let s = self.pool.get()?;
        let (public, private) = match s.generate_key_pair(
            &curve.key_gen_mechanism(),
            &public_template,
            &private_template,
        ) {
            Ok(pair) => pair,
            Err(e) => return Err(Self::fail(s, "C_GenerateKeyPair", e)),
        };
        let point = Self::read_point(&s, spec, public);
        let _ = s.destroy_object(public);
        let point = match point {
            Ok(p) => p,
            Err(e) => {
                let _ = s.destroy_object(private);
                return Err(e);
            }
        };
        self.seal_hpke(s, private, id, label, point)
    }

    /// Wraps a fresh extractable HPKE session key under the wrapping key,
    /// then makes it non-extractable, and builds its URI.
    fn seal_hpke(
        &self,
        s: PooledSession<'_>,
        private: ObjectHandle,
        id: Vec<u8>,
        label: String,
        point: PublicKey,
    ) -> Result<KeyRef, CustodyError> {
        let Some(wrapping) = self.wrapping.as_ref() else {
            let _ = s.destroy_object(private);
            return Err(CustodyError::Unsupported {
                spec: point.spec(),
                reason: self.capabilities.summary.clone(),
            });
        };
        let wrapped = match s.wrap_key(&Mechanism::AesKeyWrapPad, wrapping.handle, private) {
            Ok(w) => w,
            Err(e) => {
                let _ = s.destroy_object(private);
                return Err(Self::fail(s, "C_WrapKey", e));
            }
        };
        if let Err(e) = s.update_attributes(private, &[Attribute::Extractable(false)]) {
            let _ = s.destroy_object(private);
            return Err(Self::fail(s, "C_SetAttributeValue (CKA_EXTRACTABLE)", e));
        }
        drop(s);
        self.cache(
            &id,
            LiveKey {
                spec: point.spec(),
                handle: private,
            },
        );
        let uri = Pkcs11Uri {
            wrapped: Some(wrapped),
            wrapping_key_id: Some(wrapping.id.clone()),
            public: Some(point.as_bytes().to_vec()),
            ..self.token_uri(&label, &id)
        };
        Ok(KeyRef::new(point, uri.format()))
    }

    // ---- using keys -----------------------------------------------------

    /// ECDH inside the token into an `n_dh`-byte secret (the x-coordinate
    /// of the shared point); the derived object is read and destroyed.
    fn ecdh(
        s: &Session,
        key: ObjectHandle,
        peer: &[u8],
        n_dh: usize,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let params = Ecdh1DeriveParams::new(EcKdf::null(), peer);
        // The whole x-coordinate: SoftHSM returns its rightmost bytes for a
        // shorter CKA_VALUE_LEN.
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen(cryptoki::types::Ulong::try_from(n_dh)?),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ];
        let derived = s.derive_key(&Mechanism::Ecdh1Derive(params), key, &template)?;
        let value = s.get_attributes(derived, &[AttributeType::Value]);
        let destroyed = s.destroy_object(derived);
        let mut attrs = value?;
        destroyed?;
        let mut out = Zeroizing::new(vec![0u8; n_dh]);
        let mut found = false;
        for a in attrs.iter_mut() {
            if let Attribute::Value(v) = a {
                if v.len() == n_dh {
                    out.copy_from_slice(v);
                    found = true;
                }
                v.zeroize();
            }
        }
        if found {
            Ok(out)
        } else {
            // get_attributes drops unreadable attributes: report it.
            Err(Error::Pkcs11(
                RvError::AttributeSensitive,
                cryptoki::context::Function::GetAttributeValue,
            ))
        }
    }

    /// Unwraps a wrapped HPKE key from its URI into a session object and
    /// checks it against the public key the URI states.
    fn unwrap_hpke(
        &self,
        u: &Pkcs11Uri,
        id: &[u8],
        uri: &str,
    ) -> Result<(ObjectHandle, PublicKey), CustodyError> {
        let (Some(wrapped), Some(wrapping_id), Some(public)) =
            (&u.wrapped, &u.wrapping_key_id, &u.public)
        else {
            return Err(CustodyError::InvalidUri(format!(
                "a wrapped key needs x-hsmls-wrapped, x-hsmls-wrapping-key and x-hsmls-public: {uri}"
            )));
        };
        // Wrapped keys are HPKE keys of a NIST curve, whose KEM the length
        // of the stated public key names.
        let spec = kem_for_public_len(public.len())
            .ok_or(CustodyError::InvalidPublicKey(crate::PointFault::Encoding))?;
        let public = PublicKey::new(spec, public)?;
        let label = u
            .object
            .clone()
            .unwrap_or_else(|| label_for(KeyPurpose::Hpke, id));
        let s = self.pool.get()?;
        let wrapping = self.wrapping_handle(&s, wrapping_id)?;
        let template = [
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Derive(true),
            Attribute::Sign(false),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Id(id.to_vec()),
            Attribute::Label(label.into_bytes()),
        ];
        let handle = match s.unwrap_key(&Mechanism::AesKeyWrapPad, wrapping, wrapped, &template) {
            Ok(h) => h,
            Err(e) if is_session_broken(&e) => return Err(Self::fail(s, "C_UnwrapKey", e)),
            Err(e) => {
                return Err(CustodyError::InvalidUri(format!(
                    "the token rejected the wrapped key ({e}): {}",
                    uri.chars().take(120).collect::<String>()
                )));
            }
        };
        // The public key in the URI must belong to the unwrapped private key:
        // ECDH with the base point gives the x-coordinate of d·G.
        let (Some(generator), KeySpec::Kem(kem)) = (generator(spec), spec) else {
            let _ = s.destroy_object(handle);
            return Err(not_in_token(spec));
        };
        let n = kem.n_dh();
        let x = match Self::ecdh(&s, handle, &generator, n) {
            Ok(x) => x,
            Err(e) => {
                let _ = s.destroy_object(handle);
                return Err(Self::fail(s, "C_DeriveKey (public key check)", e));
            }
        };
        let matches = public
            .as_bytes()
            .get(1..1 + n)
            .is_some_and(|px| bool::from(px.ct_eq(&x[..])));
        if !matches {
            let _ = s.destroy_object(handle);
            return Err(CustodyError::InvalidUri(
                "x-hsmls-public does not match the wrapped private key".into(),
            ));
        }
        // Another thread may have unwrapped the same key meanwhile.
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = keys.get(id) {
            let _ = s.destroy_object(handle);
            return Ok((existing.handle, public));
        }
        keys.insert(id.to_vec(), LiveKey { spec, handle });
        tracing::debug!(id = %hex::encode(id), "unwrapped an HPKE key into a session object");
        Ok((handle, public))
    }

    /// Finds a token-resident private key and its public key.
    fn find_token_key(
        &self,
        u: &Pkcs11Uri,
        uri: &str,
    ) -> Result<(Vec<u8>, String, LiveKey, PublicKey), CustodyError> {
        // Any key type: Weierstrass (CKK_EC) and Edwards (CKK_EC_EDWARDS)
        // keys alike; read_spec tells them apart by CKA_EC_PARAMS.
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        if let Some(id) = &u.id {
            template.push(Attribute::Id(id.clone()));
        }
        if let Some(label) = &u.object {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        let s = self.pool.get()?;
        let handles = match s.find_objects(&template) {
            Ok(h) => h,
            Err(e) => return Err(Self::fail(s, "C_FindObjects", e)),
        };
        let handle = match handles.as_slice() {
            [h] => *h,
            [] => return Err(CustodyError::KeyNotFound(uri.to_owned())),
            _ => {
                return Err(CustodyError::InvalidUri(format!(
                    "{uri} names {} keys; add id=",
                    handles.len()
                )));
            }
        };
        let id = Self::read_id(&s, handle)?;
        let attrs = s
            .get_attributes(handle, &[AttributeType::Label])
            .map_err(|e| token_err("C_GetAttributeValue (CKA_LABEL)", e))?;
        let label = attrs
            .into_iter()
            .find_map(|a| match a {
                Attribute::Label(l) => Some(String::from_utf8_lossy(&l).into_owned()),
                _ => None,
            })
            .unwrap_or_default();
        let spec = Self::read_spec(&s, handle, uri)?;
        let publics = s
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Id(id.clone()),
            ])
            .map_err(|e| token_err("C_FindObjects (public key)", e))?;
        let Some(public_handle) = publics.first() else {
            return Err(CustodyError::KeyNotFound(format!(
                "{uri} (the private key has no public key object with the same CKA_ID)"
            )));
        };
        let public = Self::read_point(&s, spec, *public_handle)?;
        Ok((id, label, LiveKey { spec, handle }, public))
    }

    /// The private-key handle for `key`, checked against the object's kind
    /// (a `KeyRef` may lie about its key).
    fn resolve(
        &self,
        key: &KeyRef,
        operation: &'static str,
    ) -> Result<(Vec<u8>, ObjectHandle), CustodyError> {
        let uri = key.uri();
        let u = Pkcs11Uri::parse(uri)?;
        self.check_token(&u, uri)?;
        let Some(id) = u.id.clone() else {
            return Err(CustodyError::InvalidUri(format!("{uri} has no id")));
        };
        let live = match self.cached(&id) {
            Some(live) => live,
            None if u.wrapped.is_some() => {
                if self.is_destroyed(&id) {
                    return Err(CustodyError::KeyNotFound(uri.to_owned()));
                }
                let (handle, public) = self.unwrap_hpke(&u, &id, uri)?;
                LiveKey {
                    spec: public.spec(),
                    handle,
                }
            }
            None => {
                let (id, _, live, _) = self.find_token_key(&u, uri)?;
                self.cache(&id, live);
                live
            }
        };
        if live.spec.purpose() != key.purpose() {
            return Err(CustodyError::WrongPurpose {
                operation,
                expected: key.purpose(),
                actual: live.spec.purpose(),
            });
        }
        Ok((id, live.handle))
    }

    /// Runs a raw cryptoki operation on a pooled, logged-in session of this
    /// custody's token. For tests (e.g. trying to export a key); it bypasses
    /// the custody's policies. Only with the `test-utils` feature.
    #[cfg(feature = "test-utils")]
    pub fn with_session<T>(&self, f: impl FnOnce(&Session) -> T) -> Result<T, CustodyError> {
        let s = self.pool.get()?;
        Ok(f(&s))
    }

    /// The private-key object handle of `key` (resolving it as
    /// [`KeyCustody::find`] would), for use with [`Self::with_session`].
    /// Only with the `test-utils` feature.
    #[cfg(feature = "test-utils")]
    pub fn private_key_handle(&self, key: &KeyRef) -> Result<ObjectHandle, CustodyError> {
        self.resolve(key, "look up").map(|(_, h)| h)
    }

    /// The handle of the wrapping key new HPKE keys are wrapped under (None
    /// if the token cannot hold HPKE keys). Only with the `test-utils`
    /// feature.
    #[cfg(feature = "test-utils")]
    pub fn wrapping_key_handle(&self) -> Option<ObjectHandle> {
        self.wrapping.as_ref().map(|w| w.handle)
    }

    /// Signs `data` in the token with the key's mechanism (`CKM_ECDSA` on a
    /// digest, `CKM_EDDSA` on a message) and encodes the result for MLS.
    fn sign_in_token(
        &self,
        key: &KeyRef,
        scheme: SignatureScheme,
        data: &[u8],
    ) -> Result<Vec<u8>, CustodyError> {
        let mechanism = match curve(key.spec())?.sign {
            m if m == MechanismType::EDDSA => {
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure))
            }
            _ => Mechanism::Ecdsa,
        };
        for attempt in 0..2 {
            let (id, handle) = self.resolve(key, "sign")?;
            let s = self.pool.get()?;
            match s.sign(&mechanism, handle, data) {
                Ok(raw) => return signature_encoding(scheme, &raw),
                Err(e) if is_stale_handle(&e) && attempt == 0 => {
                    self.forget(&id);
                }
                Err(e) => return Err(Self::fail(s, "C_Sign", e)),
            }
        }
        Err(CustodyError::KeyNotFound(key.uri().to_owned()))
    }

    /// Reads the protection attributes of a private key object.
    fn read_key_attributes(s: &Session, handle: ObjectHandle) -> Result<KeyAttributes, Error> {
        let wanted = [
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::AlwaysSensitive,
            AttributeType::NeverExtractable,
            AttributeType::Token,
        ];
        let mut found = [None; 5];
        for a in s.get_attributes(handle, &wanted)? {
            let (i, v) = match a {
                Attribute::Sensitive(v) => (0, v),
                Attribute::Extractable(v) => (1, v),
                Attribute::AlwaysSensitive(v) => (2, v),
                Attribute::NeverExtractable(v) => (3, v),
                Attribute::Token(v) => (4, v),
                _ => continue,
            };
            found[i] = Some(v);
        }
        // get_attributes silently drops what the token does not report.
        let [
            Some(sensitive),
            Some(extractable),
            Some(always),
            Some(never),
            Some(token),
        ] = found
        else {
            return Err(Error::Pkcs11(
                RvError::AttributeTypeInvalid,
                cryptoki::context::Function::GetAttributeValue,
            ));
        };
        // The value's size is reported only if the value can be read.
        let value = s.get_attribute_info(handle, &[AttributeType::Value])?;
        let value_readable = matches!(value.as_slice(), [AttributeInfo::Available(_)]);
        Ok(KeyAttributes {
            sensitive,
            extractable,
            always_sensitive: always,
            never_extractable: never,
            value_readable,
            token_object: token,
        })
    }

    /// The label of the token this custody uses.
    pub fn token_label(&self) -> &str {
        &self.token_label
    }

    /// Number of PKCS#11 sessions currently open by this custody.
    pub fn open_sessions(&self) -> usize {
        self.pool.open_sessions()
    }
}

impl KeyCustody for Pkcs11Custody {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// What the probe found missing for `spec` (mechanisms, the wrapping
    /// key), or why this backend never holds it (X25519).
    fn unsupported_reason(&self, spec: KeySpec) -> Option<String> {
        if self.capabilities.supports(spec) {
            None
        } else {
            Some(self.refusal(spec))
        }
    }

    fn generate(&self, spec: KeySpec) -> Result<KeyRef, CustodyError> {
        self.require(spec)?;
        match spec.purpose() {
            KeyPurpose::Signature => self.generate_signature(spec),
            KeyPurpose::Hpke => self.generate_hpke(spec),
        }
    }

    fn import(&self, spec: KeySpec, private_key: &[u8]) -> Result<KeyRef, CustodyError> {
        self.require(spec)?;
        let point = public_of(spec, private_key)?;
        let curve = curve(spec)?;
        let purpose = spec.purpose();
        let id = new_id();
        let label = label_for(purpose, &id);
        let token = purpose == KeyPurpose::Signature;
        let mut template = vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(curve.key_type),
            Attribute::EcParams(curve.params.to_vec()),
            Attribute::Value(private_key.to_vec()),
            Attribute::Token(token),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            // HPKE keys: extractable only for their one wrap (see seal_hpke).
            Attribute::Extractable(!token),
            Attribute::Sign(purpose == KeyPurpose::Signature),
            Attribute::Derive(purpose == KeyPurpose::Hpke),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Id(id.clone()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let s = self.pool.get()?;
        // Written under the process-wide lock, until both halves exist:
        // token objects (imported signature keys) and session objects
        // (imported HPKE keys) alike, since SoftHSM refused a creation
        // racing another thread's with CKR_TEMPLATE_INCONSISTENT.
        let _write = token_object_write_lock();
        let mut created = s.create_object(&template);
        for attempt in 1..=GENERAL_ERROR_RETRIES {
            if !matches!(&created, Err(e) if is_transient_creation_error(e)) {
                break;
            }
            // As for C_GenerateKeyPair (seen in full test runs).
            tracing::warn!(object = %label, attempt, "C_CreateObject failed transiently; retrying");
            remove_partial(&s, &id, attempt);
            created = s.create_object(&template);
        }
        for a in template.iter_mut() {
            if let Attribute::Value(v) = a {
                v.zeroize();
            }
        }
        let private = match created {
            Ok(h) => h,
            // tpm2-pkcs11 creates no private key objects ("Can only create
            // RSA Public key objects or data objects"): keys are made in
            // the TPM or not at all.
            Err(Error::Pkcs11(RvError::AttributeValueInvalid, _)) => {
                return Err(CustodyError::ImportRefused {
                    spec,
                    token: self.token_label.clone(),
                });
            }
            Err(e) => return Err(Self::fail(s, "C_CreateObject", e)),
        };
        match purpose {
            KeyPurpose::Hpke => self.seal_hpke(s, private, id, label, point),
            KeyPurpose::Signature => {
                let public_template = [
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::KeyType(curve.key_type),
                    Attribute::EcParams(curve.params.to_vec()),
                    Attribute::EcPoint(encode_ec_point(&point)),
                    Attribute::Token(true),
                    Attribute::Private(false),
                    Attribute::Verify(true),
                    Attribute::Id(id.clone()),
                    Attribute::Label(label.as_bytes().to_vec()),
                ];
                if let Err(e) = s.create_object(&public_template) {
                    let _ = s.destroy_object(private);
                    return Err(Self::fail(s, "C_CreateObject (public key)", e));
                }
                self.cache(
                    &id,
                    LiveKey {
                        spec,
                        handle: private,
                    },
                );
                Ok(KeyRef::new(point, self.token_uri(&label, &id).format()))
            }
        }
    }

    fn sign_prehash(&self, key: &KeyRef, prehash: &[u8]) -> Result<Vec<u8>, CustodyError> {
        let scheme = key.signature_scheme("sign")?;
        check_prehash(scheme, prehash)?;
        self.sign_in_token(key, scheme, prehash)
    }

    /// ECDSA: hashes in software with the scheme's hash (SoftHSM offers no
    /// `CKM_ECDSA_SHA256`/`SHA384`/`SHA512`) and signs the digest in the
    /// token. Ed25519: `CKM_EDDSA` over the whole message (PureEdDSA,
    /// RFC 8032 §5.1.6).
    fn sign(&self, key: &KeyRef, message: &[u8]) -> Result<Vec<u8>, CustodyError> {
        let scheme = key.signature_scheme("sign")?;
        match scheme.prehash(message) {
            Some(prehash) => self.sign_in_token(key, scheme, &prehash),
            None => self.sign_in_token(key, scheme, message),
        }
    }

    fn dh(&self, key: &KeyRef, peer_public_key: &[u8]) -> Result<SharedSecret, CustodyError> {
        let kem = key.kem("ECDH")?;
        curve(key.spec())?;
        // The peer key is validated in software before it reaches the token.
        validate_public_key(key.spec(), peer_public_key)?;
        for attempt in 0..2 {
            let (id, handle) = self.resolve(key, "ECDH")?;
            let s = self.pool.get()?;
            match Self::ecdh(&s, handle, peer_public_key, kem.n_dh()) {
                Ok(secret) => return Ok(SharedSecret::new(secret)),
                Err(e) if is_stale_handle(&e) && attempt == 0 => {
                    self.forget(&id);
                }
                Err(e) => return Err(Self::fail(s, "C_DeriveKey (ECDH)", e)),
            }
        }
        Err(CustodyError::KeyNotFound(key.uri().to_owned()))
    }

    fn key_attributes(&self, key: &KeyRef) -> Result<KeyAttributes, CustodyError> {
        for attempt in 0..2 {
            let (id, handle) = self.resolve(key, "read the attributes of")?;
            let s = self.pool.get()?;
            match Self::read_key_attributes(&s, handle) {
                Ok(attributes) => return Ok(attributes),
                Err(e) if is_stale_handle(&e) && attempt == 0 => {
                    self.forget(&id);
                }
                Err(e) => return Err(Self::fail(s, "C_GetAttributeValue (key attributes)", e)),
            }
        }
        Err(CustodyError::KeyNotFound(key.uri().to_owned()))
    }

    fn destroy(&self, key: &KeyRef) -> Result<(), CustodyError> {
        let uri = key.uri();
        let u = Pkcs11Uri::parse(uri)?;
        self.check_token(&u, uri)?;
        let Some(id) = u.id.clone() else {
            return Err(CustodyError::InvalidUri(format!("{uri} has no id")));
        };
        let s = self.pool.get()?;
        if u.wrapped.is_some() {
            let mut destroyed = self.destroyed.lock().unwrap_or_else(|e| e.into_inner());
            if destroyed.contains(&id) {
                return Err(CustodyError::KeyNotFound(uri.to_owned()));
            }
            if let Some(live) = self.forget(&id) {
                match s.destroy_object(live.handle) {
                    Ok(()) => {}
                    Err(e) if is_stale_handle(&e) => {}
                    Err(e) => return Err(Self::fail(s, "C_DestroyObject", e)),
                }
            }
            destroyed.insert(id);
            tracing::debug!(object = ?u.object, "destroyed a wrapped HPKE key");
            return Ok(());
        }
        let mut handles = Vec::new();
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            match s.find_objects(&[Attribute::Class(class), Attribute::Id(id.clone())]) {
                Ok(h) => handles.extend(h),
                Err(e) => return Err(Self::fail(s, "C_FindObjects", e)),
            }
        }
        self.forget(&id);
        if handles.is_empty() {
            return Err(CustodyError::KeyNotFound(uri.to_owned()));
        }
        let _write = token_object_write_lock();
        for h in handles {
            if let Err(e) = s.destroy_object(h) {
                return Err(Self::fail(s, "C_DestroyObject", e));
            }
        }
        tracing::debug!(object = ?u.object, "destroyed a token key");
        Ok(())
    }

    fn find(&self, uri: &str) -> Result<KeyRef, CustodyError> {
        let u = Pkcs11Uri::parse(uri)?;
        self.check_token(&u, uri)?;
        if u.id.is_none() && u.object.is_none() {
            return Err(CustodyError::InvalidUri(format!(
                "{uri} names no key (give id= or object=)"
            )));
        }
        if let Some(t) = &u.object_type
            && t != "private"
        {
            return Err(CustodyError::InvalidUri(format!(
                "{uri}: hsmls keys are found by their private key (type=private)"
            )));
        }
        if u.wrapped.is_some() {
            let Some(id) = u.id.clone() else {
                return Err(CustodyError::InvalidUri(format!("{uri} has no id")));
            };
            if self.is_destroyed(&id) {
                return Err(CustodyError::KeyNotFound(uri.to_owned()));
            }
            let public = match (self.cached(&id), &u.public) {
                (Some(live), Some(p)) => PublicKey::new(live.spec, p)?,
                _ => self.unwrap_hpke(&u, &id, uri)?.1,
            };
            let label = u
                .object
                .clone()
                .unwrap_or_else(|| label_for(KeyPurpose::Hpke, &id));
            let canonical = Pkcs11Uri {
                wrapped: u.wrapped.clone(),
                wrapping_key_id: u.wrapping_key_id.clone(),
                public: Some(public.as_bytes().to_vec()),
                ..self.token_uri(&label, &id)
            };
            return Ok(KeyRef::new(public, canonical.format()));
        }
        let (id, label, live, public) = self.find_token_key(&u, uri)?;
        self.cache(&id, live);
        Ok(KeyRef::new(public, self.token_uri(&label, &id).format()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What SoftHSM 2.6.1 offers: everything, EC keys of 112 to 521 bits.
    fn softhsm(_: MechanismType) -> Offer {
        Offer::Present { min: 112, max: 521 }
    }

    #[test]
    fn a_token_with_every_mechanism_holds_both_key_kinds() {
        for spec in [
            KeySpec::ECDSA_SECP256R1_SHA256,
            KeySpec::DHKEM_P256_HKDF_SHA256,
        ] {
            assert!(missing_mechanisms(spec, &softhsm).is_empty(), "{spec}");
        }
    }

    #[test]
    fn a_token_without_ecdh_holds_signature_keys_only() {
        // The mechanisms of Debian 12's tpm2-pkcs11: no C_DeriveKey.
        let tpm = [
            MechanismType::ECC_KEY_PAIR_GEN,
            MechanismType::ECDSA,
            MechanismType::AES_KEY_GEN,
        ];
        let offer = |m| {
            if tpm.contains(&m) {
                Offer::Present { min: 256, max: 384 }
            } else {
                Offer::Absent
            }
        };
        assert!(missing_mechanisms(KeySpec::ECDSA_SECP256R1_SHA256, &offer).is_empty());
        assert_eq!(
            missing_mechanisms(KeySpec::DHKEM_P256_HKDF_SHA256, &offer),
            ["CKM_ECDH1_DERIVE", "CKM_AES_KEY_WRAP_PAD"]
        );
    }

    #[test]
    fn ec_key_generation_must_cover_the_curve_size() {
        // A token whose EC key generation starts at 384 bits has no P-256.
        let offer = |_| Offer::Present { min: 384, max: 521 };
        let expected = ["CKM_EC_KEY_PAIR_GEN (256-bit keys)"];
        assert_eq!(
            missing_mechanisms(KeySpec::ECDSA_SECP256R1_SHA256, &offer),
            expected
        );
        assert_eq!(
            missing_mechanisms(KeySpec::DHKEM_P256_HKDF_SHA256, &offer),
            expected
        );
    }

    #[test]
    fn key_objects_map_to_specs_by_purpose_and_curve() {
        assert_eq!(
            spec_for(KeyPurpose::Signature, &P256_PARAMS),
            Some(KeySpec::ECDSA_SECP256R1_SHA256)
        );
        assert_eq!(
            spec_for(KeyPurpose::Hpke, &P256_PARAMS),
            Some(KeySpec::DHKEM_P256_HKDF_SHA256)
        );
        for (params, sig, hpke) in [
            (
                &P384_PARAMS[..],
                Some(KeySpec::ECDSA_SECP384R1_SHA384),
                Some(KeySpec::DHKEM_P384_HKDF_SHA384),
            ),
            (
                &P521_PARAMS[..],
                Some(KeySpec::ECDSA_SECP521R1_SHA512),
                Some(KeySpec::DHKEM_P521_HKDF_SHA512),
            ),
            // Ed25519 by OID or by name: a signature key only.
            (&ED25519_OID_PARAMS[..], Some(KeySpec::ED25519), None),
            (&ED25519_NAME_PARAMS[..], Some(KeySpec::ED25519), None),
            // secp256k1 (1.3.132.0.10): not a curve hsmls uses.
            (&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a][..], None, None),
        ] {
            assert_eq!(spec_for(KeyPurpose::Signature, params), sig);
            assert_eq!(spec_for(KeyPurpose::Hpke, params), hpke);
        }
    }

    #[test]
    fn every_spec_but_x25519_has_its_curve_and_mechanisms() {
        for spec in KeySpec::ALL {
            if spec == KeySpec::DHKEM_X25519_HKDF_SHA256 {
                assert!(matches!(
                    curve(spec),
                    Err(CustodyError::Unsupported { spec: s, .. }) if s == spec
                ));
                assert!(Pkcs11Custody::mechanisms(spec).is_empty());
                continue;
            }
            assert!(missing_mechanisms(spec, &softhsm).is_empty(), "{spec}");
            let m = Pkcs11Custody::mechanisms(spec);
            let expected: &[&str] = match spec {
                KeySpec::ED25519 => &["CKM_EC_EDWARDS_KEY_PAIR_GEN", "CKM_EDDSA"],
                s if s.purpose() == KeyPurpose::Signature => &["CKM_EC_KEY_PAIR_GEN", "CKM_ECDSA"],
                _ => &[
                    "CKM_EC_KEY_PAIR_GEN",
                    "CKM_ECDH1_DERIVE",
                    "CKM_AES_KEY_GEN",
                    "CKM_AES_KEY_WRAP_PAD",
                ],
            };
            assert_eq!(m, expected, "{spec}");
        }
        // A token without EdDSA holds the ECDSA keys but not Ed25519.
        let no_eddsa = |m| {
            if m == MechanismType::EDDSA {
                Offer::Absent
            } else {
                Offer::Present { min: 112, max: 521 }
            }
        };
        assert_eq!(
            missing_mechanisms(KeySpec::ED25519, &no_eddsa),
            ["CKM_EDDSA"]
        );
        assert!(missing_mechanisms(KeySpec::ECDSA_SECP521R1_SHA512, &no_eddsa).is_empty());
    }

    #[test]
    fn wrapped_keys_kem_follows_the_public_key_length() {
        assert_eq!(
            kem_for_public_len(65),
            Some(KeySpec::DHKEM_P256_HKDF_SHA256)
        );
        assert_eq!(
            kem_for_public_len(97),
            Some(KeySpec::DHKEM_P384_HKDF_SHA384)
        );
        assert_eq!(
            kem_for_public_len(133),
            Some(KeySpec::DHKEM_P521_HKDF_SHA512)
        );
        assert_eq!(kem_for_public_len(32), None);
    }

    #[test]
    fn token_signatures_become_low_s_der_or_stay_raw_for_ed25519() {
        // A P-384 r‖s with a high S becomes DER with the low S.
        let sk = p384::ecdsa::SigningKey::from_slice(&[5u8; 48]).unwrap();
        let digest = [9u8; 48];
        let sig: p384::ecdsa::Signature =
            p256::ecdsa::signature::hazmat::PrehashSigner::sign_prehash(&sk, &digest).unwrap();
        let low = sig.normalize_s().unwrap_or(sig);
        let (r, s) = low.split_scalars();
        let high = p384::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        for raw in [low.to_bytes(), high.to_bytes()] {
            let der = signature_encoding(SignatureScheme::EcdsaSecp384r1Sha384, &raw).unwrap();
            assert_eq!(der, low.to_der().as_bytes());
        }
        assert_eq!(
            signature_encoding(SignatureScheme::Ed25519, &[3u8; 64]).unwrap(),
            [3u8; 64]
        );
        for (scheme, len) in [
            (SignatureScheme::EcdsaSecp521r1Sha512, 130),
            (SignatureScheme::Ed25519, 63),
        ] {
            assert!(matches!(
                signature_encoding(scheme, &vec![1u8; len]),
                Err(CustodyError::Token {
                    operation: "C_Sign",
                    ..
                })
            ));
        }
    }

    #[test]
    fn ec_point_encodings() {
        let point = p256::SecretKey::from_slice(&[7u8; 32])
            .unwrap()
            .public_key()
            .to_encoded_point(false);
        let spec = KeySpec::ECDSA_SECP256R1_SHA256;
        let public = PublicKey::new(spec, point.as_bytes()).unwrap();
        let der = encode_ec_point(&public);
        assert_eq!(&der[..2], [0x04, 0x41]);
        assert_eq!(decode_ec_point(spec, &der).unwrap(), public);
        assert_eq!(decode_ec_point(spec, point.as_bytes()).unwrap(), public);
        let mut long_form = vec![0x04, 0x81, 0x41];
        long_form.extend_from_slice(point.as_bytes());
        assert_eq!(decode_ec_point(spec, &long_form).unwrap(), public);
        for bad in [&der[..60], &[][..], &long_form[..66]] {
            assert!(matches!(
                decode_ec_point(spec, bad),
                Err(CustodyError::InvalidPublicKey(
                    crate::PointFault::EcPointEncoding
                ))
            ));
        }
    }
}

use crate::{KeyPurpose, KeySpec, SignatureScheme};

/// Errors of the custody layer. No variant ever carries private key bytes or
/// a PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CustodyError {
    /// A peer or stored public key is not valid for its algorithm (for
    /// P-256: not an uncompressed SEC1 point on the curve).
    #[error("invalid public key: {0}")]
    InvalidPublicKey(PointFault),
    /// An imported private key is not a valid key of its algorithm (for
    /// the NIST curves: not an Nsk-byte scalar in [1, n-1]; for X25519 and
    /// Ed25519: not 32 bytes).
    #[error("invalid private key: not a valid {0} private key")]
    InvalidPrivateKey(KeySpec),
    /// A digest given to `sign_prehash` is not as long as the scheme's hash
    /// output.
    #[error("{scheme} signs a {expected}-byte digest, got {actual} bytes")]
    PrehashLength {
        /// The key's signature scheme.
        scheme: SignatureScheme,
        /// The scheme's digest length.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// `sign_prehash` was asked of a scheme that signs the whole message,
    /// not a digest (Ed25519 is PureEdDSA, RFC 8032 §5.1.6): use `sign`.
    #[error("{scheme} signs the whole message, not a digest")]
    PrehashNotApplicable {
        /// The key's signature scheme.
        scheme: SignatureScheme,
    },
    /// The key exists but was generated for another purpose.
    #[error("{operation} needs a {expected} key, but this is a {actual} key")]
    WrongPurpose {
        /// The refused operation.
        operation: &'static str,
        /// The purpose the operation needs.
        expected: KeyPurpose,
        /// The key's purpose.
        actual: KeyPurpose,
    },
    /// No key matches the reference (never existed, destroyed, or belongs to
    /// another backend or token).
    #[error("no key found for {0}")]
    KeyNotFound(String),
    /// A locator string that this backend cannot parse.
    #[error("invalid key URI: {0}")]
    InvalidUri(String),
    /// The backend cannot hold keys of this kind (e.g. a TPM token without
    /// `C_DeriveKey` cannot hold HPKE keys).
    #[error("this backend cannot hold {spec} keys: {reason}")]
    Unsupported {
        /// The kind of key asked for.
        spec: KeySpec,
        /// What the backend lacks.
        reason: String,
    },
    /// The token holds keys of this kind but refuses to import one
    /// (`C_CreateObject` of a private key answered
    /// `CKR_ATTRIBUTE_VALUE_INVALID`: tpm2-pkcs11 creates keys only inside
    /// the TPM).
    #[error("token {token:?} does not import {spec} private keys (it only generates them)")]
    ImportRefused {
        /// The kind of key given.
        spec: KeySpec,
        /// The token's label.
        token: String,
    },
    /// Custody routing found no backend for keys of this kind: the token
    /// chosen for them cannot hold them, and the configuration does not let
    /// software custody hold them (signature keys live only in the
    /// signature token; HPKE keys in software only with `hpke_keys =
    /// "token-else-software"` or `"software"`).
    #[error(
        "no custody for {purpose} keys of cipher suite(s) {suites} ({spec}): \
         the token cannot hold them ({reason}) and {rule}",
        suites = crate::router::suite_list(.spec),
        rule = crate::router::refusal_rule(.purpose)
    )]
    KeyHomeRefused {
        /// The kind of key asked for.
        spec: KeySpec,
        /// Signature or HPKE key.
        purpose: KeyPurpose,
        /// Why the token cannot hold it.
        reason: String,
    },
    /// A configuration splitting custody between a signature token and an
    /// HPKE token breaks one of the split's rules.
    #[error("custody split: {0}")]
    SplitConfig(crate::router::SplitFault),
    /// No token of the configuration can hold the state-sealing key: the
    /// signature token cannot seal, and no HPKE token is configured or it
    /// cannot seal either (process memory is never the sealing key's home:
    /// a key that dies with the process would leave saved state unreadable).
    #[error("no token of the configuration can hold the state-sealing key: {0}")]
    NoSealingHome(String),
    /// A token object found by a URI is not a key hsmls can use (another
    /// curve, or neither a signing nor a deriving key).
    #[error("{uri} is not a key hsmls can use: {reason}")]
    UnsupportedKeyObject {
        /// The URI that named the object.
        uri: String,
        /// What is wrong with it.
        reason: KeyObjectFault,
    },
    /// The PKCS#11 configuration (file, PIN source) is missing or malformed.
    #[error("PKCS#11 configuration: {0}")]
    Config(String),
    /// The PKCS#11 module (shared library) cannot be loaded or initialised.
    #[error("cannot load PKCS#11 module {path}: {reason}")]
    ModuleLoad {
        /// The module's path.
        path: String,
        /// Why it failed.
        reason: String,
    },
    /// No slot holds a token with this label.
    #[error("no PKCS#11 token with label {0:?}")]
    TokenNotFound(String),
    /// The token rejected the user PIN (the PIN itself is never reported).
    #[error("the token rejected the user PIN")]
    PinIncorrect,
    /// The token failed an operation.
    #[error("PKCS#11 {operation} failed: {reason}")]
    Token {
        /// The PKCS#11 function (and what it was for).
        operation: &'static str,
        /// The token's error.
        reason: String,
    },
    /// A sealed blob is shorter than an AES-GCM nonce and tag.
    #[error("sealed data of {len} bytes is truncated (at least {min} bytes)")]
    SealedDataTruncated {
        /// The blob's length.
        len: usize,
        /// The shortest sealed blob (nonce and tag).
        min: usize,
    },
    /// Data to seal or open is longer than the sealer accepts.
    #[error("data of {len} bytes is too long to seal or open (at most {max} bytes)")]
    SealedDataTooLong {
        /// The data's length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A sealed blob does not open under this key with this aad: it was
    /// altered, its aad differs, or another key sealed it.
    #[error("the sealed data does not open (altered, other aad, or another key)")]
    SealedDataRejected,
    /// The backend cannot hold a state-sealing key (e.g. a token without
    /// `CKM_AES_GCM`).
    #[error("this backend cannot seal state: {0}")]
    SealingUnsupported(String),
}

/// Why a public key was refused (the reason of
/// [`CustodyError::InvalidPublicKey`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PointFault {
    /// Not the algorithm's encoding (for the NIST curves: an uncompressed
    /// SEC1 point starting 0x04, 65/97/133 bytes; for X25519 and Ed25519:
    /// 32 bytes).
    #[error("not the key encoding of the algorithm (its length or SEC1 form)")]
    Encoding,
    /// Well encoded, but not a point of the curve (or the identity).
    #[error("point is not on the curve")]
    NotOnCurve,
    /// An X25519 key whose Diffie-Hellman value is all zero: a low-order
    /// point (RFC 7748 §6.1, RFC 9180 §7.1.4).
    #[error("low-order point: the Diffie-Hellman value is all zero")]
    LowOrder,
    /// A token's `CKA_EC_POINT` holds no point of the key's curve (neither
    /// a DER OCTET STRING of one nor a bare one).
    #[error("CKA_EC_POINT does not hold a point of the key's curve")]
    EcPointEncoding,
}

/// Why a token object named by a URI is not a key hsmls can use (the
/// reason of [`CustodyError::UnsupportedKeyObject`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyObjectFault {
    /// The key has neither `CKA_SIGN` nor `CKA_DERIVE`.
    #[error("the key can neither sign nor derive")]
    NeitherSignNorDerive,
    /// `CKA_EC_PARAMS` cannot be read.
    #[error("CKA_EC_PARAMS is not readable")]
    EcParamsUnreadable,
    /// The key's curve is not one of hsmls's key specs.
    #[error("its curve is not one hsmls uses")]
    UnsupportedCurve,
}

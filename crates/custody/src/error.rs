use crate::KeyPurpose;

/// Errors of the custody layer. No variant ever carries private key bytes or
/// a PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CustodyError {
    /// A peer or stored public key is not a valid P-256 point.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(PointFault),
    /// An imported private key is not a valid P-256 scalar.
    #[error("invalid private key: not a P-256 scalar in [1, n-1]")]
    InvalidPrivateKey,
    /// The key exists but was generated for another purpose.
    #[error("{operation} needs a {expected} key, but this is a {actual} key")]
    WrongPurpose {
        operation: &'static str,
        expected: KeyPurpose,
        actual: KeyPurpose,
    },
    /// No key matches the reference (never existed, destroyed, or belongs to
    /// another backend or token).
    #[error("no key found for {0}")]
    KeyNotFound(String),
    /// A locator string that this backend cannot parse.
    #[error("invalid key URI: {0}")]
    InvalidUri(String),
    /// The backend cannot hold keys for this purpose (e.g. a TPM token
    /// without `C_DeriveKey` cannot hold HPKE keys).
    #[error("this backend cannot hold {purpose} keys: {reason}")]
    Unsupported { purpose: KeyPurpose, reason: String },
    /// The PKCS#11 configuration (file, PIN source) is missing or malformed.
    #[error("PKCS#11 configuration: {0}")]
    Config(String),
    /// The PKCS#11 module (shared library) cannot be loaded or initialised.
    #[error("cannot load PKCS#11 module {path}: {reason}")]
    ModuleLoad { path: String, reason: String },
    /// No slot holds a token with this label.
    #[error("no PKCS#11 token with label {0:?}")]
    TokenNotFound(String),
    /// The token rejected the user PIN (the PIN itself is never reported).
    #[error("the token rejected the user PIN")]
    PinIncorrect,
    /// The token failed an operation.
    #[error("PKCS#11 {operation} failed: {reason}")]
    Token {
        operation: &'static str,
        reason: String,
    },
}

/// Why a public key was refused (the reason of
/// [`CustodyError::InvalidPublicKey`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PointFault {
    /// Not an uncompressed SEC1 P-256 point (65 bytes starting 0x04).
    #[error("not an uncompressed SEC1 P-256 point (65 bytes starting 0x04)")]
    Encoding,
    /// Well encoded, but not a point of the P-256 curve.
    #[error("point is not on the P-256 curve")]
    NotOnCurve,
    /// A token's `CKA_EC_POINT` holds no P-256 point (neither a DER OCTET
    /// STRING of one nor a bare one).
    #[error("CKA_EC_POINT is not a P-256 point")]
    EcPointEncoding,
}

use crate::KeyPurpose;

/// Errors of the custody layer. No variant ever carries private key bytes or
/// a PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CustodyError {
    /// A peer or stored public key is not a valid P-256 point.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(&'static str),
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

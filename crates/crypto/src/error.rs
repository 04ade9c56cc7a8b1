use hsmls_custody::{CustodyError, KeySpec};

/// Errors of the cipher-suite layer. No variant carries secret bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The cipher suite value is not one this build implements (RFC 9420 §17.1).
    #[error("unsupported cipher suite 0x{0:04x}")]
    UnsupportedCipherSuite(u16),
    /// KDF.Expand was asked for more than 255 · Nh bytes (RFC 5869 §2.3).
    #[error("KDF output of {0} bytes is too long")]
    KdfOutputTooLong(usize),
    /// A secret used as a KDF pseudorandom key, AEAD key or nonce has the
    /// wrong length for the cipher suite.
    #[error("{what} has {actual} bytes, the cipher suite needs {expected}")]
    InvalidLength {
        /// What had the wrong length.
        what: &'static str,
        /// The length the cipher suite needs (a minimum for KDF keys).
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// A value is too long to be encoded as an MLS variable-length vector
    /// (RFC 9420 §2.1.2: at most 2^30 - 1 bytes) or a uint16 length field.
    #[error("a {0}-byte value is too long to encode")]
    EncodingTooLong(usize),
    /// AEAD encryption failed (plaintext too long for the AEAD).
    #[error("AEAD encryption failed")]
    AeadSeal,
    /// AEAD decryption failed: wrong key, nonce or associated data, or a
    /// tampered ciphertext.
    #[error("AEAD decryption failed")]
    AeadOpen,
    /// A public key (HPKE or signature) is malformed or not on the curve.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(&'static str),
    /// A private key is not a valid scalar for the curve.
    #[error("invalid private key")]
    InvalidPrivateKey,
    /// A signature is not a well-formed (DER, for ECDSA) encoding.
    #[error("malformed signature")]
    MalformedSignature,
    /// A well-formed signature does not verify.
    #[error("signature verification failed")]
    InvalidSignature,
    /// A MAC tag does not match.
    #[error("MAC verification failed")]
    InvalidMac,
    /// DeriveKeyPair found no valid scalar in 256 candidates (RFC 9180
    /// §7.1.3); happens with negligible probability.
    #[error("DeriveKeyPair found no valid private key")]
    DeriveKeyPair,
    /// A custody key given for an operation of the cipher suite is of
    /// another algorithm than the suite's (RFC 9420 §5.1: the suite fixes
    /// the signature scheme and the KEM).
    #[error("the cipher suite needs a {expected} key, this is a {actual} key")]
    WrongKeySpec {
        /// The suite's key kind.
        expected: KeySpec,
        /// The key's kind.
        actual: KeySpec,
    },
    /// A key-custody operation failed.
    #[error("key custody: {0}")]
    Custody(#[from] CustodyError),
}

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
        what: SizedValue,
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
    InvalidPublicKey(PublicKeyFault),
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

/// A value whose length the cipher suite fixes (the `what` of
/// [`CryptoError::InvalidLength`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SizedValue {
    /// An AEAD key (`AEAD.Nk` bytes).
    #[error("the AEAD key")]
    AeadKey,
    /// An AEAD nonce (`AEAD.Nn` bytes).
    #[error("the AEAD nonce")]
    AeadNonce,
    /// A KDF pseudorandom key (at least `KDF.Nh` bytes).
    #[error("the KDF pseudorandom key")]
    KdfPseudorandomKey,
    /// An MLS `joiner_secret` (`KDF.Nh` bytes, RFC 9420 §8).
    #[error("the joiner_secret")]
    JoinerSecret,
}

/// Why a public key was refused (the reason of
/// [`CryptoError::InvalidPublicKey`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublicKeyFault {
    /// Not the suite's encoding (for the NIST curves: an uncompressed SEC1
    /// point starting 0x04, 65/97/133 bytes; for X25519 and Ed25519: 32
    /// bytes).
    #[error("not the suite's key encoding (its length or SEC1 form)")]
    Encoding,
    /// Well encoded, but not a point of the curve (or the identity).
    #[error("not a point on the curve")]
    NotOnCurve,
    /// An X25519 key whose Diffie-Hellman value is all zero: a low-order
    /// point (RFC 9180 §7.1.4, RFC 7748 §6.1).
    #[error("low-order point: the Diffie-Hellman value is all zero")]
    LowOrder,
}

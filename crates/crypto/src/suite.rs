//! The cipher suite value and the provider trait (RFC 9420 §5.1).

use std::fmt;

use hsmls_custody::{KemAlgorithm, KeyCustody, KeyRef, KeySpec, SignatureScheme};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::encoding::{VarintPrefix, u16_be};
use crate::{CryptoError, Digest, MLS_LABEL_PREFIX, Secret, hpke};

/// An MLS cipher suite identifier (RFC 9420 §17.1, `uint16 CipherSuite`).
///
/// Any `u16` can be held (it arrives from the wire); [`CipherSuite::provider`]
/// says whether this build implements it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CipherSuite(pub u16);

impl CipherSuite {
    /// 0x0001, mandatory to implement (RFC 9420 §17.1).
    pub const MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519: Self = Self(0x0001);
    /// 0x0002.
    pub const MLS_128_DHKEMP256_AES128GCM_SHA256_P256: Self = Self(0x0002);
    /// 0x0003.
    pub const MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_ED25519: Self = Self(0x0003);
    /// 0x0004.
    pub const MLS_256_DHKEMX448_AES256GCM_SHA512_ED448: Self = Self(0x0004);
    /// 0x0005.
    pub const MLS_256_DHKEMP521_AES256GCM_SHA512_P521: Self = Self(0x0005);
    /// 0x0006.
    pub const MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_ED448: Self = Self(0x0006);
    /// 0x0007.
    pub const MLS_256_DHKEMP384_AES256GCM_SHA384_P384: Self = Self(0x0007);

    /// Every suite this build implements, in code-point order.
    pub const IMPLEMENTED: [CipherSuite; 5] = [
        Self::MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519,
        Self::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
        Self::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_ED25519,
        Self::MLS_256_DHKEMP521_AES256GCM_SHA512_P521,
        Self::MLS_256_DHKEMP384_AES256GCM_SHA384_P384,
    ];

    /// The implementation of this suite, or
    /// [`CryptoError::UnsupportedCipherSuite`].
    pub fn provider(self) -> Result<&'static dyn CipherSuiteProvider, CryptoError> {
        match self {
            Self::MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519 => {
                Ok(&crate::x25519_ed25519::X25519_AES128GCM_SUITE)
            }
            Self::MLS_128_DHKEMP256_AES128GCM_SHA256_P256 => {
                Ok(&crate::p256_sha256_aes128gcm::SUITE)
            }
            Self::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_ED25519 => {
                Ok(&crate::x25519_ed25519::X25519_CHACHA20POLY1305_SUITE)
            }
            Self::MLS_256_DHKEMP521_AES256GCM_SHA512_P521 => Ok(&crate::nist::P521_SUITE),
            Self::MLS_256_DHKEMP384_AES256GCM_SHA384_P384 => Ok(&crate::nist::P384_SUITE),
            CipherSuite(other) => Err(CryptoError::UnsupportedCipherSuite(other)),
        }
    }

    /// The RFC 9420 §17.1 name, for the registered suites.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0001 => "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
            0x0002 => "MLS_128_DHKEMP256_AES128GCM_SHA256_P256",
            0x0003 => "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519",
            0x0004 => "MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448",
            0x0005 => "MLS_256_DHKEMP521_AES256GCM_SHA512_P521",
            0x0006 => "MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448",
            0x0007 => "MLS_256_DHKEMP384_AES256GCM_SHA384_P384",
            _ => return None,
        })
    }
}

impl fmt::Debug for CipherSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}(0x{:04x})", self.0),
            None => write!(f, "CipherSuite(0x{:04x})", self.0),
        }
    }
}

impl fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<u16> for CipherSuite {
    fn from(v: u16) -> Self {
        CipherSuite(v)
    }
}

impl From<CipherSuite> for u16 {
    fn from(v: CipherSuite) -> u16 {
        v.0
    }
}

/// The HPKE algorithm identifiers of a suite (RFC 9180 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HpkeSuite {
    /// KEM identifier (0x0010 for DHKEM(P-256, HKDF-SHA256)).
    pub kem_id: u16,
    /// KDF identifier (0x0001 for HKDF-SHA256).
    pub kdf_id: u16,
    /// AEAD identifier (0x0001 for AES-128-GCM).
    pub aead_id: u16,
}

/// An HPKE public key (`HPKEPublicKey`, RFC 9420 §5.1.1), in the KEM's
/// `SerializePublicKey` form (uncompressed SEC1 for the NIST curves).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HpkePublicKey(Vec<u8>);

impl HpkePublicKey {
    /// Wraps serialized public key bytes (validated where used).
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        HpkePublicKey(bytes)
    }

    /// The serialized key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The serialized key, owned.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl AsRef<[u8]> for HpkePublicKey {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for HpkePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HpkePublicKey(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// An HPKE key pair held in software: TreeKEM parent-node keys and the
/// external key pair, derived with DeriveKeyPair (RFC 9420 §7.4, §8), which
/// a token cannot do. The private key zeroizes on drop and is never printed.
#[derive(Clone)]
pub struct HpkePrivateKey {
    private: Secret,
    public: HpkePublicKey,
}

impl HpkePrivateKey {
    /// Pairs a serialized private key with its public key; for
    /// cipher-suite modules (they guarantee the two match).
    pub fn from_parts(private: Secret, public: HpkePublicKey) -> Self {
        HpkePrivateKey { private, public }
    }

    /// The serialized private key (for import into a [`KeyCustody`]).
    pub fn private_bytes(&self) -> &Secret {
        &self.private
    }

    /// The public key.
    pub fn public_key(&self) -> &HpkePublicKey {
        &self.public
    }
}

impl fmt::Debug for HpkePrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HpkePrivateKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Whose private key opens an HPKE ciphertext: a key in a [`KeyCustody`]
/// (leaf and KeyPackage init keys) or a software key (parent-node and
/// external keys).
#[derive(Clone, Copy, Debug)]
pub enum HpkeRecipient<'a> {
    /// A private key held by a custody backend; the Diffie-Hellman step runs
    /// there.
    Custody {
        /// The backend.
        custody: &'a dyn KeyCustody,
        /// The HPKE key (purpose `Hpke`).
        key: &'a KeyRef,
    },
    /// A private key held in software.
    Software(&'a HpkePrivateKey),
}

impl HpkeRecipient<'_> {
    /// The recipient's serialized public key (`pkRm` of RFC 9180 §4.1).
    pub fn public_key(&self) -> &[u8] {
        match self {
            HpkeRecipient::Custody { key, .. } => key.public_key().as_bytes(),
            HpkeRecipient::Software(k) => k.public_key().as_bytes(),
        }
    }
}

/// The primitives of one MLS cipher suite, and the RFC 9420 labeled
/// constructions on top of them (provided methods).
///
/// Inputs given as `&[&[u8]]` are concatenated, so callers can hash or
/// derive over encoded structures without building them in a buffer.
pub trait CipherSuiteProvider: Send + Sync + fmt::Debug {
    /// The suite identifier.
    fn cipher_suite(&self) -> CipherSuite;
    /// `KDF.Nh`, also the hash output size.
    fn hash_len(&self) -> usize;
    /// `AEAD.Nk`.
    fn aead_key_len(&self) -> usize;
    /// `AEAD.Nn`.
    fn aead_nonce_len(&self) -> usize;
    /// The HPKE algorithm identifiers.
    fn hpke_suite(&self) -> HpkeSuite;
    /// The signature scheme of the suite's signature keys (RFC 9420 §17.1).
    fn signature_scheme(&self) -> SignatureScheme;
    /// The KEM of the suite's HPKE keys (RFC 9420 §17.1, RFC 9180 §7.1).
    fn kem(&self) -> KemAlgorithm;

    /// The kind of signature key to generate in a [`KeyCustody`] for this
    /// suite.
    fn signature_key_spec(&self) -> KeySpec {
        KeySpec::Signature(self.signature_scheme())
    }

    /// The kind of HPKE key (leaf `encryption_key`, KeyPackage `init_key`)
    /// to generate in a [`KeyCustody`] for this suite.
    fn hpke_key_spec(&self) -> KeySpec {
        KeySpec::Kem(self.kem())
    }

    /// [`CryptoError::WrongKeySpec`] unless `key` is of `expected`.
    fn check_key_spec(&self, key: &KeyRef, expected: KeySpec) -> Result<(), CryptoError> {
        if key.spec() == expected {
            Ok(())
        } else {
            Err(CryptoError::WrongKeySpec {
                expected,
                actual: key.spec(),
            })
        }
    }

    /// `Hash(parts[0] ‖ parts[1] ‖ …)`.
    fn hash(&self, parts: &[&[u8]]) -> Digest;
    /// `MAC(key, parts[0] ‖ …)` (HMAC with the suite's hash, RFC 9420 §5.1).
    fn mac(&self, key: &[u8], parts: &[&[u8]]) -> Digest;
    /// `KDF.Extract(salt, ikm[0] ‖ …)`.
    fn kdf_extract(&self, salt: &[u8], ikm: &[&[u8]]) -> Secret;
    /// `KDF.Expand(prk, info[0] ‖ …, out.len())` into `out`.
    fn kdf_expand(&self, prk: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError>;
    /// AEAD encryption in place: `buffer` holds the plaintext and receives
    /// the ciphertext with its tag.
    fn aead_seal_in_place(
        &self,
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        buffer: &mut Vec<u8>,
    ) -> Result<(), CryptoError>;
    /// AEAD decryption in place: `buffer` holds ciphertext and tag and
    /// receives the plaintext.
    fn aead_open_in_place(
        &self,
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        buffer: &mut Vec<u8>,
    ) -> Result<(), CryptoError>;

    /// A fresh random HPKE key pair in software.
    fn kem_generate(&self) -> Result<HpkePrivateKey, CryptoError>;
    /// The KEM's `DeriveKeyPair(ikm)` (RFC 9180 §7.1.3).
    fn kem_derive_key_pair(&self, ikm: &[u8]) -> Result<HpkePrivateKey, CryptoError>;
    /// The KEM's `Encap(pkR)` (RFC 9180 §4.1): returns `(shared_secret,
    /// enc)`. The ephemeral key is random, or `DeriveKeyPair(ikm_e)` when
    /// `ikm_e` is given (deterministic, for tests).
    fn kem_encap(
        &self,
        pk_r: &[u8],
        ikm_e: Option<&[u8]>,
    ) -> Result<(Secret, Vec<u8>), CryptoError>;
    /// The KEM's `Decap(enc, skR)`, with the Diffie-Hellman step done by
    /// whoever holds the recipient's private key.
    fn kem_decap(&self, enc: &[u8], recipient: &HpkeRecipient<'_>) -> Result<Secret, CryptoError>;
    /// Checks that `public_key` is a valid HPKE public key for the KEM.
    fn validate_hpke_public_key(&self, public_key: &[u8]) -> Result<(), CryptoError>;

    /// `Signature.Sign` over `message[0] ‖ …` with a key in `custody` (the
    /// whole-message [`KeyCustody::sign`]); the key must be of the suite's
    /// signature scheme.
    fn sign(
        &self,
        custody: &dyn KeyCustody,
        key: &KeyRef,
        message: &[&[u8]],
    ) -> Result<Vec<u8>, CryptoError>;
    /// `Signature.Verify` over `message[0] ‖ …`; a malformed signature is
    /// [`CryptoError::MalformedSignature`], a wrong one
    /// [`CryptoError::InvalidSignature`].
    fn verify(
        &self,
        public_key: &[u8],
        message: &[&[u8]],
        signature: &[u8],
    ) -> Result<(), CryptoError>;
    /// Checks that `public_key` is a valid signature public key.
    fn validate_signature_public_key(&self, public_key: &[u8]) -> Result<(), CryptoError>;

    // ----- RFC 9420 constructions -----

    /// `ExpandWithLabel(Secret, Label, Context, out.len())` into `out`
    /// (RFC 9420 §8); `label` without the "MLS 1.0 " prefix.
    fn expand_with_label_into(
        &self,
        secret: &[u8],
        label: &[u8],
        context: &[u8],
        out: &mut [u8],
    ) -> Result<(), CryptoError> {
        // struct { uint16 length; opaque label<V>; opaque context<V>; } KDFLabel;
        let length = u16_be(out.len())?;
        let label_len = VarintPrefix::new(MLS_LABEL_PREFIX.len() + label.len())?;
        let context_len = VarintPrefix::new(context.len())?;
        self.kdf_expand(
            secret,
            &[
                &length,
                label_len.as_bytes(),
                MLS_LABEL_PREFIX,
                label,
                context_len.as_bytes(),
                context,
            ],
            out,
        )
    }

    /// `ExpandWithLabel(Secret, Label, Context, Length)` (RFC 9420 §8).
    fn expand_with_label(
        &self,
        secret: &[u8],
        label: &[u8],
        context: &[u8],
        length: usize,
    ) -> Result<Secret, CryptoError> {
        let mut out = Secret::zero(length);
        self.expand_with_label_into(secret, label, context, out.as_mut_bytes())?;
        Ok(out)
    }

    /// `DeriveSecret(Secret, Label) = ExpandWithLabel(Secret, Label, "",
    /// KDF.Nh)` (RFC 9420 §8).
    fn derive_secret(&self, secret: &[u8], label: &[u8]) -> Result<Secret, CryptoError> {
        self.expand_with_label(secret, label, &[], self.hash_len())
    }

    /// `DeriveTreeSecret(Secret, Label, Generation, Length)` (RFC 9420 §9):
    /// ExpandWithLabel with the generation as a big-endian uint32 context.
    fn derive_tree_secret(
        &self,
        secret: &[u8],
        label: &[u8],
        generation: u32,
        length: usize,
    ) -> Result<Secret, CryptoError> {
        self.expand_with_label(secret, label, &generation.to_be_bytes(), length)
    }

    /// `RefHash(label, value)` (RFC 9420 §5.2); `label` is used as given.
    fn ref_hash(&self, label: &[u8], value: &[u8]) -> Result<Digest, CryptoError> {
        // struct { opaque label<V>; opaque value<V>; } RefHashInput;
        let label_len = VarintPrefix::new(label.len())?;
        let value_len = VarintPrefix::new(value.len())?;
        Ok(self.hash(&[label_len.as_bytes(), label, value_len.as_bytes(), value]))
    }

    /// `MakeKeyPackageRef(value)` over an encoded KeyPackage (RFC 9420 §5.2).
    fn make_key_package_ref(&self, key_package: &[u8]) -> Result<Digest, CryptoError> {
        self.ref_hash(b"MLS 1.0 KeyPackage Reference", key_package)
    }

    /// `MakeProposalRef(value)` over an encoded AuthenticatedContent
    /// (RFC 9420 §5.2).
    fn make_proposal_ref(&self, authenticated_content: &[u8]) -> Result<Digest, CryptoError> {
        self.ref_hash(b"MLS 1.0 Proposal Reference", authenticated_content)
    }

    /// `SignWithLabel(SignatureKey, Label, Content)` (RFC 9420 §5.1.2), the
    /// private key in `custody`.
    fn sign_with_label(
        &self,
        custody: &dyn KeyCustody,
        key: &KeyRef,
        label: &[u8],
        content: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        // struct { opaque label<V>; opaque content<V>; } SignContent;
        let label_len = VarintPrefix::new(MLS_LABEL_PREFIX.len() + label.len())?;
        let content_len = VarintPrefix::new(content.len())?;
        self.sign(
            custody,
            key,
            &[
                label_len.as_bytes(),
                MLS_LABEL_PREFIX,
                label,
                content_len.as_bytes(),
                content,
            ],
        )
    }

    /// `VerifyWithLabel(VerificationKey, Label, Content, SignatureValue)`
    /// (RFC 9420 §5.1.2).
    fn verify_with_label(
        &self,
        public_key: &[u8],
        label: &[u8],
        content: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        let label_len = VarintPrefix::new(MLS_LABEL_PREFIX.len() + label.len())?;
        let content_len = VarintPrefix::new(content.len())?;
        self.verify(
            public_key,
            &[
                label_len.as_bytes(),
                MLS_LABEL_PREFIX,
                label,
                content_len.as_bytes(),
                content,
            ],
            signature,
        )
    }

    /// `EncryptWithLabel(PublicKey, Label, Context, Plaintext)` (RFC 9420
    /// §5.1.3): HPKE `SealBase(PublicKey, EncryptContext, "", Plaintext)`.
    /// Returns `(kem_output, ciphertext)`. `ikm_e` fixes the ephemeral key
    /// (tests only); `None` draws it at random.
    fn encrypt_with_label(
        &self,
        public_key: &[u8],
        label: &[u8],
        context: &[u8],
        plaintext: &[u8],
        ikm_e: Option<&[u8]>,
    ) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        let prepared = self.prepare_encrypt_context(label, context)?;
        self.encrypt_with_prepared_context(public_key, &prepared, plaintext, ikm_e)
    }

    /// The `EncryptContext` of `EncryptWithLabel(_, Label, Context, _)`
    /// (RFC 9420 §5.1.3) hashed into HPKE's key schedule once, for sealing
    /// to many recipients with
    /// [`CipherSuiteProvider::encrypt_with_prepared_context`]: a Welcome's
    /// context is its `encrypted_group_info`, which carries the ratchet
    /// tree, so hashing it per new member would cost O(N²).
    fn prepare_encrypt_context(
        &self,
        label: &[u8],
        context: &[u8],
    ) -> Result<PreparedEncryptContext, CryptoError> {
        let label_len = VarintPrefix::new(MLS_LABEL_PREFIX.len() + label.len())?;
        let context_len = VarintPrefix::new(context.len())?;
        Ok(PreparedEncryptContext(hpke::InfoHash::from_parts(
            self,
            &[
                label_len.as_bytes(),
                MLS_LABEL_PREFIX,
                label,
                context_len.as_bytes(),
                context,
            ],
        )))
    }

    /// `EncryptWithLabel` with the label and context of `prepared`
    /// ([`CipherSuiteProvider::prepare_encrypt_context`]); the same output
    /// as [`CipherSuiteProvider::encrypt_with_label`].
    fn encrypt_with_prepared_context(
        &self,
        public_key: &[u8],
        prepared: &PreparedEncryptContext,
        plaintext: &[u8],
        ikm_e: Option<&[u8]>,
    ) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        hpke::seal_base_hashed(self, public_key, &prepared.0, &[], plaintext, ikm_e)
    }

    /// `DecryptWithLabel(PrivateKey, Label, Context, KEMOutput, Ciphertext)`
    /// (RFC 9420 §5.1.3): HPKE `OpenBase(KEMOutput, PrivateKey,
    /// EncryptContext, "", Ciphertext)`. The plaintext is zeroized on drop.
    fn decrypt_with_label(
        &self,
        recipient: &HpkeRecipient<'_>,
        label: &[u8],
        context: &[u8],
        kem_output: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let prepared = self.prepare_encrypt_context(label, context)?;
        hpke::open_base_hashed(self, recipient, kem_output, &prepared.0, &[], ciphertext)
    }

    /// Checks `tag == MAC(key, parts…)` in constant time.
    fn verify_mac(&self, key: &[u8], parts: &[&[u8]], tag: &[u8]) -> Result<(), CryptoError> {
        let expected = self.mac(key, parts);
        if bool::from(expected.as_bytes().ct_eq(tag)) {
            Ok(())
        } else {
            Err(CryptoError::InvalidMac)
        }
    }
}

/// An `EncryptContext` (label and context of `EncryptWithLabel`, RFC 9420
/// §5.1.3) already hashed into HPKE's key schedule
/// ([`CipherSuiteProvider::prepare_encrypt_context`]). Public data only.
#[derive(Clone, Debug)]
pub struct PreparedEncryptContext(hpke::InfoHash);

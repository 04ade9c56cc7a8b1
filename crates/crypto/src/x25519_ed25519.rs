//! The X25519/Ed25519 suites, one implementation with the AEAD as
//! parameter (RFC 9420 §17.1):
//!
//! * 0x0001 MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 (mandatory to
//!   implement, RFC 9420 §17.1);
//! * 0x0003 MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519.
//!
//! Both use SHA-256, HKDF-SHA256, DHKEM(X25519, HKDF-SHA256) (RFC 9180
//! §7.1: Nsecret = Nenc = Npk = Nsk = 32) and PureEdDSA Ed25519 (RFC 8032
//! §5.1: the message itself is signed, no prehash).

use std::fmt;
use std::marker::PhantomData;

use aes_gcm::Aes128Gcm;
use chacha20poly1305::ChaCha20Poly1305;
use ed25519_dalek::Verifier;
use hsmls_custody::{KemAlgorithm, KeyCustody, KeyRef, SignatureScheme};
use rand_core::OsRng;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::hpke::{extract_and_expand, kem_suite_id, labeled_expand, labeled_extract};
use crate::primitives::{self, SuiteAead};
use crate::{
    CipherSuite, CipherSuiteProvider, CryptoError, Digest, HpkePrivateKey, HpkePublicKey,
    HpkeRecipient, HpkeSuite, PublicKeyFault, Secret,
};

/// `Nsk`, `Npk`, `Nenc`, `Ndh` of X25519; also the Ed25519 key length.
const N: usize = 32;
/// An Ed25519 signature (RFC 8032 §5.1.6).
const SIGNATURE_LEN: usize = 64;

/// An X25519/Ed25519 MLS cipher suite with AEAD `A`.
pub struct X25519Suite<A> {
    suite: CipherSuite,
    aead_id: u16,
    _aead: PhantomData<fn() -> A>,
}

impl<A> fmt::Debug for X25519Suite<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("X25519Suite").field(&self.suite).finish()
    }
}

/// Cipher suite 0x0001.
pub type X25519Aes128GcmSha256Ed25519 = X25519Suite<Aes128Gcm>;
/// Cipher suite 0x0003.
pub type X25519ChaCha20Poly1305Sha256Ed25519 = X25519Suite<ChaCha20Poly1305>;

/// Suite 0x0001's single instance, handed out by [`CipherSuite::provider`].
pub(crate) static X25519_AES128GCM_SUITE: X25519Aes128GcmSha256Ed25519 = X25519Suite {
    suite: CipherSuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519,
    aead_id: 0x0001, // AES-128-GCM
    _aead: PhantomData,
};

/// Suite 0x0003's single instance.
pub(crate) static X25519_CHACHA20POLY1305_SUITE: X25519ChaCha20Poly1305Sha256Ed25519 =
    X25519Suite {
        suite: CipherSuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_ED25519,
        aead_id: 0x0003, // ChaCha20Poly1305
        _aead: PhantomData,
    };

fn parse_public(bytes: &[u8]) -> Result<PublicKey, CryptoError> {
    let bytes: [u8; N] = bytes
        .try_into()
        .map_err(|_| CryptoError::InvalidPublicKey(PublicKeyFault::Encoding))?;
    Ok(PublicKey::from(bytes))
}

fn secret_key(bytes: &[u8]) -> Result<StaticSecret, CryptoError> {
    let bytes: Zeroizing<[u8; N]> = Zeroizing::new(
        bytes
            .try_into()
            .map_err(|_| CryptoError::InvalidPrivateKey)?,
    );
    Ok(StaticSecret::from(*bytes))
}

fn key_pair(sk: &StaticSecret) -> HpkePrivateKey {
    let public = PublicKey::from(sk);
    HpkePrivateKey::from_parts(
        Secret::from_slice(sk.as_bytes()),
        HpkePublicKey::from_vec(public.as_bytes().to_vec()),
    )
}

/// `DH(sk, pk)`, refusing the all-zero value of a low-order point
/// (RFC 9180 §7.1.4, RFC 7748 §6.1).
fn dh(sk: &StaticSecret, pk: &PublicKey) -> Result<Zeroizing<[u8; N]>, CryptoError> {
    let shared = sk.diffie_hellman(pk);
    if !shared.was_contributory() {
        return Err(CryptoError::InvalidPublicKey(PublicKeyFault::LowOrder));
    }
    Ok(Zeroizing::new(*shared.as_bytes()))
}

fn verifying_key(bytes: &[u8]) -> Result<ed25519_dalek::VerifyingKey, CryptoError> {
    let bytes: [u8; N] = bytes
        .try_into()
        .map_err(|_| CryptoError::InvalidPublicKey(PublicKeyFault::Encoding))?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| CryptoError::InvalidPublicKey(PublicKeyFault::NotOnCurve))
}

impl<A: SuiteAead> CipherSuiteProvider for X25519Suite<A> {
    fn cipher_suite(&self) -> CipherSuite {
        self.suite
    }

    fn hash_len(&self) -> usize {
        primitives::hash_len::<Sha256>()
    }

    fn aead_key_len(&self) -> usize {
        primitives::aead_key_len::<A>()
    }

    fn aead_nonce_len(&self) -> usize {
        primitives::aead_nonce_len::<A>()
    }

    fn hpke_suite(&self) -> HpkeSuite {
        HpkeSuite {
            kem_id: KemAlgorithm::DhKemX25519HkdfSha256.kem_id(),
            kdf_id: 0x0001, // HKDF-SHA256
            aead_id: self.aead_id,
        }
    }

    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::Ed25519
    }

    fn kem(&self) -> KemAlgorithm {
        KemAlgorithm::DhKemX25519HkdfSha256
    }

    fn hash(&self, parts: &[&[u8]]) -> Digest {
        primitives::hash::<Sha256>(parts)
    }

    fn mac(&self, key: &[u8], parts: &[&[u8]]) -> Digest {
        primitives::mac::<Sha256>(key, parts)
    }

    fn kdf_extract(&self, salt: &[u8], ikm: &[&[u8]]) -> Secret {
        primitives::kdf_extract::<Sha256>(salt, ikm)
    }

    fn kdf_expand(&self, prk: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
        primitives::kdf_expand::<Sha256>(prk, info, out)
    }

    fn aead_seal_in_place(
        &self,
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        buffer: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        primitives::aead_seal::<A>(key, nonce, aad, buffer)
    }

    fn aead_open_in_place(
        &self,
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        buffer: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        primitives::aead_open::<A>(key, nonce, aad, buffer)
    }

    fn kem_generate(&self) -> Result<HpkePrivateKey, CryptoError> {
        Ok(key_pair(&StaticSecret::random_from_rng(OsRng)))
    }

    fn kem_derive_key_pair(&self, ikm: &[u8]) -> Result<HpkePrivateKey, CryptoError> {
        // RFC 9180 §7.1.3 for X25519: sk = LabeledExpand(dkp_prk, "sk", "",
        // Nsk), no rejection sampling (every 32-byte string is a key).
        let suite_id = kem_suite_id(self);
        let dkp_prk = labeled_extract(self, &suite_id, &[], b"dkp_prk", ikm);
        let mut sk = Zeroizing::new([0u8; N]);
        labeled_expand(self, &suite_id, dkp_prk.as_bytes(), b"sk", &[], sk.as_mut())?;
        Ok(key_pair(&StaticSecret::from(*sk)))
    }

    fn kem_encap(
        &self,
        pk_r: &[u8],
        ikm_e: Option<&[u8]>,
    ) -> Result<(Secret, Vec<u8>), CryptoError> {
        let peer = parse_public(pk_r)?;
        let sk_e = match ikm_e {
            Some(ikm) => secret_key(self.kem_derive_key_pair(ikm)?.private_bytes().as_bytes())?,
            None => StaticSecret::random_from_rng(OsRng),
        };
        let enc = PublicKey::from(&sk_e).as_bytes().to_vec();
        let dh = dh(&sk_e, &peer)?;
        let shared_secret = extract_and_expand(self, dh.as_slice(), &enc, pk_r)?;
        Ok((shared_secret, enc))
    }

    fn kem_decap(&self, enc: &[u8], recipient: &HpkeRecipient<'_>) -> Result<Secret, CryptoError> {
        let pk_e = parse_public(enc)?;
        let (in_custody, in_software);
        let dh: &[u8] = match recipient {
            HpkeRecipient::Custody { custody, key } => {
                self.check_key_spec(key, self.hpke_key_spec())?;
                in_custody = custody.dh(key, enc)?;
                in_custody.as_bytes()
            }
            HpkeRecipient::Software(k) => {
                in_software = dh(&secret_key(k.private_bytes().as_bytes())?, &pk_e)?;
                in_software.as_slice()
            }
        };
        extract_and_expand(self, dh, enc, recipient.public_key())
    }

    fn validate_hpke_public_key(&self, public_key: &[u8]) -> Result<(), CryptoError> {
        parse_public(public_key).map(drop)
    }

    fn sign(
        &self,
        custody: &dyn KeyCustody,
        key: &KeyRef,
        message: &[&[u8]],
    ) -> Result<Vec<u8>, CryptoError> {
        self.check_key_spec(key, self.signature_key_spec())?;
        primitives::custody_sign(custody, key, message)
    }

    fn verify(
        &self,
        public_key: &[u8],
        message: &[&[u8]],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        let vk = verifying_key(public_key)?;
        let signature: [u8; SIGNATURE_LEN] = signature
            .try_into()
            .map_err(|_| CryptoError::MalformedSignature)?;
        let signature = ed25519_dalek::Signature::from_bytes(&signature);
        vk.verify(&primitives::joined(message), &signature)
            .map_err(|_| CryptoError::InvalidSignature)
    }

    fn validate_signature_public_key(&self, public_key: &[u8]) -> Result<(), CryptoError> {
        verifying_key(public_key).map(drop)
    }
}

//! The primitives every suite builds the same way from its hash and AEAD:
//! Hash, HMAC, HKDF (RFC 5869) and in-place AEAD, generic over the
//! RustCrypto `Digest` and `AeadInPlace` traits, and `Signature.Sign`
//! through a custody backend.

#[allow(deprecated)]
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadCore, AeadInPlace, KeyInit, KeySizeUser};
use hkdf::{Hkdf, HkdfExtract};
use hmac::SimpleHmac;
use hmac::digest::core_api::BlockSizeUser;
use hmac::digest::typenum::Unsigned;
use hmac::{Mac, digest::Digest as HashDigest};
use hsmls_custody::{KeyCustody, KeyRef};
use zeroize::Zeroizing;

use crate::{CryptoError, Digest, Secret, SizedValue};

/// What a suite's hash must offer: a digest that HMAC and HKDF can use.
pub trait SuiteHash: HashDigest + BlockSizeUser + Clone + Send + Sync {}
impl<H: HashDigest + BlockSizeUser + Clone + Send + Sync> SuiteHash for H {}

/// What a suite's AEAD must offer.
pub trait SuiteAead: AeadInPlace + KeyInit + Send + Sync {}
impl<A: AeadInPlace + KeyInit + Send + Sync> SuiteAead for A {}

/// `Nh` of `H`.
pub(crate) fn hash_len<H: SuiteHash>() -> usize {
    <H as HashDigest>::output_size()
}

/// `Nk` of `A`.
pub(crate) fn aead_key_len<A: SuiteAead>() -> usize {
    <A as KeySizeUser>::KeySize::USIZE
}

/// `Nn` of `A`.
pub(crate) fn aead_nonce_len<A: SuiteAead>() -> usize {
    <A as AeadCore>::NonceSize::USIZE
}

/// `Hash(parts[0] ‖ …)`.
pub(crate) fn hash<H: SuiteHash>(parts: &[&[u8]]) -> Digest {
    let mut h = H::new();
    for p in parts {
        HashDigest::update(&mut h, p);
    }
    Digest::from_slice(&h.finalize())
}

/// `MAC(key, parts[0] ‖ …)`, HMAC with `H` (RFC 2104).
pub(crate) fn mac<H: SuiteHash>(key: &[u8], parts: &[&[u8]]) -> Digest {
    let mut m = <SimpleHmac<H> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for p in parts {
        m.update(p);
    }
    Digest::from_slice(&m.finalize().into_bytes())
}

/// `KDF.Extract(salt, ikm[0] ‖ …)` (HKDF-Extract, RFC 5869 §2.2).
pub(crate) fn kdf_extract<H: SuiteHash>(salt: &[u8], ikm: &[&[u8]]) -> Secret {
    let mut ext = HkdfExtract::<H, SimpleHmac<H>>::new(Some(salt));
    for p in ikm {
        ext.input_ikm(p);
    }
    let (prk, _) = ext.finalize();
    let prk = Zeroizing::new(prk);
    Secret::from_slice(&prk[..])
}

/// `KDF.Expand(prk, info[0] ‖ …, out.len())` (HKDF-Expand, RFC 5869 §2.3).
pub(crate) fn kdf_expand<H: SuiteHash>(
    prk: &[u8],
    info: &[&[u8]],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    let hk = Hkdf::<H, SimpleHmac<H>>::from_prk(prk).map_err(|_| CryptoError::InvalidLength {
        what: SizedValue::KdfPseudorandomKey,
        expected: hash_len::<H>(),
        actual: prk.len(),
    })?;
    hk.expand_multi_info(info, out)
        .map_err(|_| CryptoError::KdfOutputTooLong(out.len()))
}

// generic-array 0.14 (deprecated upstream) is what aead 0.5 takes its
// nonces in.
#[allow(deprecated)]
fn aead<A: SuiteAead>(
    key: &[u8],
    nonce: &[u8],
) -> Result<(A, GenericArray<u8, A::NonceSize>), CryptoError> {
    let cipher = A::new_from_slice(key).map_err(|_| CryptoError::InvalidLength {
        what: SizedValue::AeadKey,
        expected: aead_key_len::<A>(),
        actual: key.len(),
    })?;
    if nonce.len() != aead_nonce_len::<A>() {
        return Err(CryptoError::InvalidLength {
            what: SizedValue::AeadNonce,
            expected: aead_nonce_len::<A>(),
            actual: nonce.len(),
        });
    }
    Ok((cipher, GenericArray::clone_from_slice(nonce)))
}

/// AEAD encryption in place (`buffer`: plaintext in, ciphertext ‖ tag out).
pub(crate) fn aead_seal<A: SuiteAead>(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    buffer: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    let (cipher, nonce) = aead::<A>(key, nonce)?;
    cipher
        .encrypt_in_place(&nonce, aad, buffer)
        .map_err(|_| CryptoError::AeadSeal)
}

/// AEAD decryption in place (`buffer`: ciphertext ‖ tag in, plaintext out).
pub(crate) fn aead_open<A: SuiteAead>(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    buffer: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    let (cipher, nonce) = aead::<A>(key, nonce)?;
    cipher
        .decrypt_in_place(&nonce, aad, buffer)
        .map_err(|_| CryptoError::AeadOpen)
}

/// `message[0] ‖ …` in one buffer, zeroized on drop (a PrivateMessage's
/// signed content holds the plaintext).
pub(crate) fn joined(message: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(message.iter().map(|p| p.len()).sum()));
    for p in message {
        out.extend_from_slice(p);
    }
    out
}

/// `Signature.Sign` of the joined message by the whole-message signer of
/// `custody` (it hashes for ECDSA; Ed25519 signs the message itself).
pub(crate) fn custody_sign(
    custody: &dyn KeyCustody,
    key: &KeyRef,
    message: &[&[u8]],
) -> Result<Vec<u8>, CryptoError> {
    Ok(custody.sign(key, &joined(message))?)
}

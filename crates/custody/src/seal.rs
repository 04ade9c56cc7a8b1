//! Sealing state at rest: a symmetric AEAD key held by the custody backend.
//!
//! MLS group state holds secrets that cannot live in a token (epoch
//! secrets, the secret tree, parent-node keys; RFC 9420 §9.2). When it is
//! saved, it is sealed with AES-256-GCM under a key that does live in the
//! backend, so a copy of the state file is useless without the token.
//! [`StateSealer`] is that key; the PKCS#11 backend keeps it as a
//! non-extractable token object
//! ([`Pkcs11Custody::state_sealer`](crate::Pkcs11Custody::state_sealer)), the
//! software backend in zeroizing memory ([`SoftwareSealer`]).
//!
//! The sealed form is `nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)`, with
//! a random 96-bit nonce per call (NIST SP 800-38D §8.2.2: at most 2^32
//! messages per key with random nonces; one save per epoch change stays far
//! below).

use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::CustodyError;

/// Length of the random AES-GCM nonce at the front of a sealed blob.
pub const SEAL_NONCE_LEN: usize = 12;
/// Length of the AES-GCM tag at the end of a sealed blob.
pub const SEAL_TAG_LEN: usize = 16;
/// Length of a sealing key: AES-256.
pub const SEAL_KEY_LEN: usize = 32;
/// Length of the key identifiers this crate gives sealing keys.
pub const SEAL_KEY_ID_LEN: usize = 16;
/// The largest plaintext sealed or opened (PKCS#11 lengths are `CK_ULONG`,
/// and GCM allows less than 2^36 bytes; 1 GiB bounds what one call
/// allocates).
pub const MAX_SEALED_LEN: usize = 1 << 30;

/// A symmetric AEAD key held by the custody backend that seals state at
/// rest.
pub trait StateSealer: Send + Sync + fmt::Debug {
    /// Public, stable identifier of the key (16 random bytes set at
    /// generation, `CKA_ID` in a token); written in clear into sealed blobs
    /// so a blob sealed by another token is recognised as such.
    fn key_id(&self) -> &[u8];

    /// AES-256-GCM (random 96-bit nonce) over `plaintext` with `aad`:
    /// returns `nonce ‖ ciphertext ‖ tag`.
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CustodyError>;

    /// Opens `seal`'s output. Any alteration of `sealed` or `aad`, or a blob
    /// of another key, gives [`CustodyError::SealedDataRejected`]; a blob
    /// shorter than nonce and tag gives [`CustodyError::SealedDataTruncated`].
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CustodyError>;
}

impl<T: StateSealer + ?Sized> StateSealer for std::sync::Arc<T> {
    fn key_id(&self) -> &[u8] {
        (**self).key_id()
    }
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CustodyError> {
        (**self).seal(aad, plaintext)
    }
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CustodyError> {
        (**self).open(aad, sealed)
    }
}

/// A fresh random nonce.
pub(crate) fn random_nonce() -> [u8; SEAL_NONCE_LEN] {
    let mut nonce = [0u8; SEAL_NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    nonce
}

/// Checks the length of a sealed blob before it is opened.
pub(crate) fn check_sealed_len(sealed: &[u8]) -> Result<(), CustodyError> {
    let min = SEAL_NONCE_LEN + SEAL_TAG_LEN;
    if sealed.len() < min {
        return Err(CustodyError::SealedDataTruncated {
            len: sealed.len(),
            min,
        });
    }
    if sealed.len() > MAX_SEALED_LEN + min {
        return Err(CustodyError::SealedDataTooLong {
            len: sealed.len(),
            max: MAX_SEALED_LEN + min,
        });
    }
    Ok(())
}

/// Checks the length of a plaintext before it is sealed.
pub(crate) fn check_plaintext_len(plaintext: &[u8]) -> Result<(), CustodyError> {
    if plaintext.len() > MAX_SEALED_LEN {
        return Err(CustodyError::SealedDataTooLong {
            len: plaintext.len(),
            max: MAX_SEALED_LEN,
        });
    }
    Ok(())
}

/// An AES-256-GCM sealing key in process memory (the key schedule is
/// zeroized on drop), for [`SoftwareCustody`](crate::SoftwareCustody) and
/// tests. It lives as long as the value: state sealed with it cannot be
/// opened after the process ends.
pub struct SoftwareSealer {
    id: [u8; SEAL_KEY_ID_LEN],
    cipher: Aes256Gcm,
}

impl fmt::Debug for SoftwareSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftwareSealer")
            .field("key_id", &hex::encode(self.id))
            .finish_non_exhaustive()
    }
}

impl Default for SoftwareSealer {
    fn default() -> Self {
        Self::generate()
    }
}

impl SoftwareSealer {
    /// A fresh random key with a fresh random id.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; SEAL_KEY_LEN]);
        OsRng.fill_bytes(&mut key[..]);
        let mut id = [0u8; SEAL_KEY_ID_LEN];
        OsRng.fill_bytes(&mut id);
        Self::from_key(id, &key)
    }

    /// A sealer from a key and id the application keeps elsewhere (e.g. an
    /// operating-system key store). The caller should zeroize `key`.
    pub fn from_key(id: [u8; SEAL_KEY_ID_LEN], key: &[u8; SEAL_KEY_LEN]) -> Self {
        SoftwareSealer {
            id,
            cipher: Aes256Gcm::new(key.into()),
        }
    }
}

impl StateSealer for SoftwareSealer {
    fn key_id(&self) -> &[u8] {
        &self.id
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CustodyError> {
        check_plaintext_len(plaintext)?;
        let nonce = random_nonce();
        let mut out = Vec::with_capacity(SEAL_NONCE_LEN + plaintext.len() + SEAL_TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_in_place_detached(&Nonce::from(nonce), aad, &mut out[SEAL_NONCE_LEN..])
            .map_err(|_| CustodyError::SealedDataTooLong {
                len: plaintext.len(),
                max: MAX_SEALED_LEN,
            })?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CustodyError> {
        check_sealed_len(sealed)?;
        let (nonce, rest) = sealed.split_at(SEAL_NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - SEAL_TAG_LEN);
        let nonce: [u8; SEAL_NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| CustodyError::SealedDataRejected)?;
        let tag: [u8; SEAL_TAG_LEN] = tag
            .try_into()
            .map_err(|_| CustodyError::SealedDataRejected)?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        self.cipher
            .decrypt_in_place_detached(&Nonce::from(nonce), aad, &mut buffer[..], &tag.into())
            .map_err(|_| CustodyError::SealedDataRejected)?;
        Ok(buffer)
    }
}

//! Secret and digest value types.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A secret byte string (KDF outputs, epoch secrets, AEAD keys, HPKE
/// private keys): zeroized on drop, compared in constant time, and never
/// printed by `Debug`.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Takes ownership of `bytes`.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    /// Copies `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Secret(bytes.to_vec())
    }

    /// `len` zero bytes: the `0` of RFC 9420 §8 (with `len = KDF.Nh`).
    pub fn zero(len: usize) -> Self {
        Secret(vec![0; len])
    }

    /// The secret bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Mutable access to the secret bytes (for filling KDF output).
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty secret.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl AsRef<[u8]> for Secret {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl ConstantTimeEq for Secret {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        // `[u8]::ct_eq` returns false for different lengths; lengths of
        // secrets are public.
        self.0.as_slice().ct_eq(other.0.as_slice())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// The largest hash output of any MLS cipher suite (SHA-512).
pub const MAX_DIGEST_LEN: usize = 64;

/// A hash or MAC output (public values: references, tree hashes, transcript
/// hashes, tags). Held inline, without allocation.
#[derive(Clone, Copy)]
pub struct Digest {
    bytes: [u8; MAX_DIGEST_LEN],
    len: u8,
}

impl Digest {
    /// Copies a digest of at most [`MAX_DIGEST_LEN`] bytes; longer input is
    /// a programming error of a cipher-suite module and is truncated.
    pub(crate) fn from_slice(bytes: &[u8]) -> Self {
        let len = bytes.len().min(MAX_DIGEST_LEN);
        let mut out = [0u8; MAX_DIGEST_LEN];
        out[..len].copy_from_slice(&bytes[..len]);
        Digest {
            bytes: out,
            len: len as u8,
        }
    }

    /// A digest read back from storage (e.g. saved group state): `None`
    /// if longer than [`MAX_DIGEST_LEN`].
    pub fn from_stored(bytes: &[u8]) -> Option<Self> {
        (bytes.len() <= MAX_DIGEST_LEN).then(|| Self::from_slice(bytes))
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The digest as an owned vector (e.g. for a `HashReference<V>` field).
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

impl AsRef<[u8]> for Digest {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::ops::Deref for Digest {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for Digest {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes().ct_eq(other.as_bytes()).into()
    }
}

impl Eq for Digest {}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_prints_no_value() {
        let s = Secret::from_slice(&[0xab; 4]);
        let d = format!("{s:?}");
        assert!(!d.contains("ab"), "{d}");
        assert!(d.contains("4 bytes"));
    }

    #[test]
    fn secret_equality() {
        assert_eq!(Secret::from_slice(b"abc"), Secret::from_slice(b"abc"));
        assert_ne!(Secret::from_slice(b"abc"), Secret::from_slice(b"abd"));
        assert_ne!(Secret::from_slice(b"abc"), Secret::from_slice(b"ab"));
    }
}

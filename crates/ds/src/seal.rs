//! The DS's data at rest: keyed tags and sealed cells, so that a copy of
//! the database (a backup, a PostgreSQL replica, a stolen disk) does not
//! tell which clients are in which group, names no group, routes no
//! KeyPackageRef and holds no message, without the DS key (RFC 9750
//! §8.4.1.2: metadata persisted on servers "should be stored encrypted at
//! rest and only decrypted upon need during the execution").
//!
//! [`AtRest`] holds two keys derived from the [`DsKey`] with their own
//! purpose labels (`HMAC-SHA256(DS key, label)`, as every other DS key):
//!
//! - a *tag key*: `HMAC-SHA256(tag key, label, value)` stands in for a
//!   value the store must find rows by but not hold: a group id
//!   ([`AtRest::group_tag`]), a member's queue id in the membership rows
//!   ([`AtRest::member_tag`]), a Welcome recipient's queue id
//!   ([`AtRest::inbox_tag`]), a KeyPackageRef ([`AtRest::reference_tag`]),
//!   a message digest ([`AtRest::digest_tag`]). Each label gives unrelated
//!   tags, so a member tag cannot be joined to an inbox tag or a queue id.
//! - a *sealing key* for XAES-256-GCM (C2SP `XAES-256-GCM`: AES-256-GCM
//!   under a key derived per random 192-bit nonce). A cell the DS must
//!   read back (a group id, a message or Welcome body, the public state
//!   and GroupInfo of an assisted group, a route's owner) is sealed as
//!   `0x01 ‖ nonce (24) ‖ ciphertext ‖ tag (16)`, with associated data
//!   naming what it is and the row it belongs to ([`Sealed`]), so a cell
//!   moved to another row does not open. Plain AES-GCM with random 96-bit
//!   nonces is good for 2^32 seals per key (NIST SP 800-38D §8.3), which
//!   a DS taking 20,000 messages a second passes in under three days;
//!   XAES's random 192-bit nonces lift that bound out of reach for the
//!   price of two AES blocks and a key schedule per seal.
//!
//! A cell that does not open (another DS key, an altered cell or row)
//! gives [`SealError::Rejected`]: never a panic, never wrong data.

use std::fmt;

use aes::cipher::BlockEncrypt;
use aes::{Aes256, Block};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::auth::DsKey;
use crate::store::{QueueId, Tag};

/// The format byte at the front of a sealed cell.
pub const SEALED_VERSION: u8 = 1;
/// XAES-256-GCM's nonce length.
pub const NONCE_LEN: usize = 24;
/// AES-GCM's tag length.
pub const TAG_LEN: usize = 16;
/// What sealing adds to a value: the format byte, the nonce and the tag.
pub const SEALED_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// What a sealed cell holds; its label and the row it is bound to go into
/// the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sealed {
    /// A group's id (bound to the group's tag).
    GroupId,
    /// An assisted group's public state (bound to the group's tag and
    /// epoch).
    GroupState,
    /// An assisted group's GroupInfo (bound to the group's tag and epoch).
    GroupInfo,
    /// A group message (bound to the group's tag and the message's digest
    /// tag, the row's unique key).
    Message,
    /// A Welcome body.
    Welcome,
    /// The owner of a handed-out KeyPackageRef (bound to the reference's
    /// tag).
    RouteOwner,
    /// A queue id in a wake-up hint between DS processes (PostgreSQL
    /// NOTIFY).
    Hint,
}

impl Sealed {
    /// The label (in the associated data, and in errors).
    pub fn label(self) -> &'static str {
        match self {
            Sealed::GroupId => "group id",
            Sealed::GroupState => "group state",
            Sealed::GroupInfo => "group info",
            Sealed::Message => "message",
            Sealed::Welcome => "welcome",
            Sealed::RouteOwner => "route owner",
            Sealed::Hint => "hint",
        }
    }
}

/// Why a sealed cell does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Shorter than the format byte, nonce and tag.
    #[error("sealed {what}: truncated")]
    Truncated {
        /// What the cell holds.
        what: &'static str,
    },
    /// A format byte this DS does not know.
    #[error("sealed {what}: unknown format {version}")]
    UnknownFormat {
        /// What the cell holds.
        what: &'static str,
        /// The format byte found.
        version: u8,
    },
    /// The authentication tag does not verify: the cell was sealed under
    /// another DS key, or it or its row was altered.
    #[error("sealed {what} rejected: another DS key, or the cell or its row was altered")]
    Rejected {
        /// What the cell holds.
        what: &'static str,
    },
    /// It opened, but is not a value of the expected shape (a queue id of
    /// the wrong length).
    #[error("sealed {what}: not the expected value")]
    BadValue {
        /// What the cell holds.
        what: &'static str,
    },
}

/// AES-GCM's nonce: the last 12 bytes of XAES's.
fn gcm_nonce(nonce: &[u8; NONCE_LEN]) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n.copy_from_slice(&nonce[12..]);
    Nonce::from(n)
}

/// XAES-256-GCM (C2SP): AES-256-GCM under `Kx`, derived from the key and
/// the first 12 bytes of a 24-byte nonce with AES-256 in the counter-mode
/// KDF of NIST SP 800-108r1 (CMAC as the PRF, one block per half of `Kx`).
struct Xaes {
    cipher: Aes256,
    k1: Zeroizing<[u8; 16]>,
}

impl Xaes {
    fn new(key: &[u8; 32]) -> Self {
        let cipher = Aes256::new_from_slice(key).expect("a 32-byte key");
        // L = AES-256_K(0^128); K1 = L << 1, reduced by x^128 + x^7 + x^2
        // + x + 1 when its top bit was set (the CMAC subkey).
        let mut l = Block::from([0u8; 16]);
        cipher.encrypt_block(&mut l);
        let mut k1 = Zeroizing::new([0u8; 16]);
        for i in 0..15 {
            k1[i] = (l[i] << 1) | (l[i + 1] >> 7);
        }
        k1[15] = (l[15] << 1) ^ ((l[0] >> 7) * 0x87);
        let l: &mut [u8] = &mut l;
        l.zeroize();
        Xaes { cipher, k1 }
    }

    /// The AES-256-GCM instance of a nonce (`Kx`; its nonce is the last
    /// 12 bytes of `nonce`).
    fn gcm(&self, nonce: &[u8; NONCE_LEN]) -> Aes256Gcm {
        let mut kx = Zeroizing::new([0u8; 32]);
        for (i, half) in kx.chunks_exact_mut(16).enumerate() {
            // M_i = [i]_16 ‖ "X" ‖ 0x00 ‖ N[:12], xored with K1.
            let mut m = Block::from([0u8; 16]);
            m[1] = i as u8 + 1;
            m[2] = b'X';
            m[4..].copy_from_slice(&nonce[..12]);
            for (b, k) in m.iter_mut().zip(self.k1.iter()) {
                *b ^= k;
            }
            self.cipher.encrypt_block(&mut m);
            half.copy_from_slice(&m);
            let m: &mut [u8] = &mut m;
            m.zeroize();
        }
        Aes256Gcm::new_from_slice(&kx[..]).expect("a 32-byte key")
    }

    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buffer: &mut Vec<u8>) {
        let gcm = self.gcm(nonce);
        let tag = gcm
            .encrypt_in_place_detached(&gcm_nonce(nonce), aad, buffer)
            .expect("AES-GCM seals any buffer below 2^36 bytes");
        buffer.extend_from_slice(&tag);
    }

    fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buffer: &mut [u8]) -> Result<usize, ()> {
        let n = buffer.len().checked_sub(TAG_LEN).ok_or(())?;
        let (data, tag) = buffer.split_at_mut(n);
        let tag: [u8; TAG_LEN] = (&*tag).try_into().map_err(|_| ())?;
        self.gcm(nonce)
            .decrypt_in_place_detached(&gcm_nonce(nonce), aad, data, &tag.into())
            .map_err(|_| ())?;
        Ok(n)
    }
}

/// The keys of the DS's data at rest, derived from the DS key (see the
/// module documentation). Every DS process serving one database derives
/// the same ones from the shared key file.
pub struct AtRest {
    tag_key: Zeroizing<[u8; 32]>,
    seal: Xaes,
}

impl fmt::Debug for AtRest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AtRest(..)")
    }
}

/// `len(x) ‖ x` for each part (u64 big-endian lengths: no two lists of
/// parts encode alike).
fn put_parts(out: &mut Vec<u8>, parts: &[&[u8]]) {
    for p in parts {
        out.extend_from_slice(&(p.len() as u64).to_be_bytes());
        out.extend_from_slice(p);
    }
}

impl AtRest {
    /// The keys derived from `key`.
    pub fn new(key: &DsKey) -> Self {
        let seal_key = key.subkey(b"hsmls ds at rest: sealing");
        AtRest {
            tag_key: key.subkey(b"hsmls ds at rest: tags"),
            seal: Xaes::new(&seal_key),
        }
    }

    fn tag(&self, label: &str, parts: &[&[u8]]) -> Tag {
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.tag_key[..]).expect("any key length");
        let mut input = Vec::with_capacity(64);
        put_parts(&mut input, &[label.as_bytes()]);
        put_parts(&mut input, parts);
        m.update(&input);
        m.finalize().into_bytes().into()
    }

    /// The stored name of a group.
    pub fn group_tag(&self, group_id: &[u8]) -> Tag {
        self.tag("group", &[group_id])
    }

    /// The stored name of a client in the membership rows (unrelated to
    /// its queue id and to its inbox tag).
    pub fn member_tag(&self, queue: &QueueId) -> Tag {
        self.tag("member", &[queue])
    }

    /// The stored name of a client's Welcome inbox.
    pub fn inbox_tag(&self, queue: &QueueId) -> Tag {
        self.tag("inbox", &[queue])
    }

    /// The stored name of a KeyPackageRef.
    pub fn reference_tag(&self, reference: &[u8]) -> Tag {
        self.tag("key package ref", &[reference])
    }

    /// The stored form of a message's SHA-256 digest (a plain digest would
    /// let a copy confirm a message seen elsewhere).
    pub fn digest_tag(&self, digest: &[u8; 32]) -> Tag {
        self.tag("digest", &[digest])
    }

    /// The value a database written under this key holds, to recognise
    /// another key at start ([`crate::store::DsStore::key_check`]).
    pub fn key_check(&self) -> Tag {
        self.tag("key check", &[])
    }

    fn aad(what: Sealed, binding: &[&[u8]]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(16 + 80);
        aad.extend_from_slice(b"hsmls ds at rest\0");
        put_parts(&mut aad, &[what.label().as_bytes()]);
        put_parts(&mut aad, binding);
        aad
    }

    /// Seals `plaintext` as `what`, bound to `binding` (the row's key
    /// values): `0x01 ‖ nonce ‖ ciphertext ‖ tag`.
    pub fn seal(&self, what: Sealed, binding: &[&[u8]], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        self.seal_with_nonce(&nonce, what, binding, plaintext)
    }

    fn seal_with_nonce(
        &self,
        nonce: &[u8; NONCE_LEN],
        what: Sealed,
        binding: &[&[u8]],
        plaintext: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEALED_OVERHEAD);
        out.push(SEALED_VERSION);
        out.extend_from_slice(nonce);
        let mut body = Vec::with_capacity(plaintext.len() + TAG_LEN);
        body.extend_from_slice(plaintext);
        self.seal.seal(nonce, &Self::aad(what, binding), &mut body);
        out.extend_from_slice(&body);
        out
    }

    /// Opens a cell [`AtRest::seal`] made with the same `what` and
    /// `binding`.
    pub fn open(
        &self,
        what: Sealed,
        binding: &[&[u8]],
        sealed: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let label = what.label();
        if sealed.len() < SEALED_OVERHEAD {
            return Err(SealError::Truncated { what: label });
        }
        if sealed[0] != SEALED_VERSION {
            return Err(SealError::UnknownFormat {
                what: label,
                version: sealed[0],
            });
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN]
            .try_into()
            .map_err(|_| SealError::Truncated { what: label })?;
        let mut body = sealed[1 + NONCE_LEN..].to_vec();
        let n = self
            .seal
            .open(&nonce, &Self::aad(what, binding), &mut body)
            .map_err(|()| SealError::Rejected { what: label })?;
        body.truncate(n);
        Ok(body)
    }

    /// Opens a sealed queue id.
    pub fn open_queue(
        &self,
        what: Sealed,
        binding: &[&[u8]],
        sealed: &[u8],
    ) -> Result<QueueId, SealError> {
        self.open(what, binding, sealed)?
            .as_slice()
            .try_into()
            .map_err(|_| SealError::BadValue { what: what.label() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// C2SP XAES-256-GCM test vectors (c2sp.org/XAES-256-GCM).
    #[test]
    fn xaes_256_gcm_vectors() {
        let nonce = *b"ABCDEFGHIJKLMNOPQRSTUVWX";
        for (key, aad, expected) in [
            (
                [1u8; 32],
                &b""[..],
                "ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271",
            ),
            (
                [3u8; 32],
                &b"c2sp.org/XAES-256-GCM"[..],
                "986ec1832593df5443a179437fd083bf3fdb41abd740a21f71eb769d",
            ),
        ] {
            let x = Xaes::new(&key);
            let mut buf = b"XAES-256-GCM".to_vec();
            x.seal(&nonce, aad, &mut buf);
            assert_eq!(hex::encode(&buf), expected);
            let n = x.open(&nonce, aad, &mut buf).unwrap();
            assert_eq!(&buf[..n], b"XAES-256-GCM");
            buf[0] ^= 1;
            assert!(x.open(&nonce, aad, &mut buf).is_err());
        }
    }

    /// The intermediate values of the vectors: both branches of the
    /// doubling (the top bit of L clear, then set).
    #[test]
    fn xaes_subkeys() {
        let nonce = *b"ABCDEFGHIJKLMNOPQRSTUVWX";
        for (key, k1, kx) in [
            (
                [1u8; 32],
                "e531954aca063d5b8d9c47a47d4cc6f0",
                "c8612c9ed53fe43e8e005b828a1631a0bbcb6ab2f46514ec4f439fcfd0fa969b",
            ),
            (
                [3u8; 32],
                "23810ec50edb99f374409466ed1f4b7b",
                "e9c621d4cdd9b11b00a6427ad7e559aeedd66b3857646677748f8ca796cb3fd8",
            ),
        ] {
            let x = Xaes::new(&key);
            assert_eq!(hex::encode(&x.k1[..]), k1);
            let gcm = Aes256Gcm::new_from_slice(&hex::decode(kx).unwrap()).unwrap();
            let mut a = b"same".to_vec();
            let mut b = a.clone();
            let ta = gcm
                .encrypt_in_place_detached(&gcm_nonce(&nonce), b"", &mut a)
                .unwrap();
            let tb = x
                .gcm(&nonce)
                .encrypt_in_place_detached(&gcm_nonce(&nonce), b"", &mut b)
                .unwrap();
            assert_eq!((a, ta), (b, tb));
        }
    }

    fn keys(n: u8) -> AtRest {
        AtRest::new(&DsKey::from_bytes([n; 32]))
    }

    #[test]
    fn sealed_cells_open_only_with_their_key_kind_and_row() {
        let k = keys(1);
        let g = k.group_tag(b"group");
        let s = k.seal(Sealed::GroupId, &[&g], b"group");
        assert_eq!(s.len(), b"group".len() + SEALED_OVERHEAD);
        assert_eq!(k.open(Sealed::GroupId, &[&g], &s).unwrap(), b"group");
        // Random nonces: sealing twice gives two cells.
        assert_ne!(s, k.seal(Sealed::GroupId, &[&g], b"group"));
        // Another key, another kind, another row, an altered byte.
        assert_eq!(
            keys(2).open(Sealed::GroupId, &[&g], &s),
            Err(SealError::Rejected { what: "group id" })
        );
        assert_eq!(
            k.open(Sealed::Welcome, &[&g], &s),
            Err(SealError::Rejected { what: "welcome" })
        );
        let other = k.group_tag(b"other");
        assert_eq!(
            k.open(Sealed::GroupId, &[&other], &s),
            Err(SealError::Rejected { what: "group id" })
        );
        for i in [0, 1, 30, s.len() - 1] {
            let mut t = s.clone();
            t[i] ^= 0x40;
            let e = k.open(Sealed::GroupId, &[&g], &t).unwrap_err();
            if i == 0 {
                assert_eq!(
                    e,
                    SealError::UnknownFormat {
                        what: "group id",
                        version: 0x41
                    }
                );
            } else {
                assert_eq!(e, SealError::Rejected { what: "group id" });
            }
        }
        assert_eq!(
            k.open(Sealed::GroupId, &[&g], &s[..SEALED_OVERHEAD - 1]),
            Err(SealError::Truncated { what: "group id" })
        );
        // A sealed value of the wrong length is not a queue id.
        assert_eq!(
            k.open_queue(Sealed::Hint, &[], &k.seal(Sealed::Hint, &[], &[1; 15])),
            Err(SealError::BadValue { what: "hint" })
        );
        assert_eq!(
            k.open_queue(Sealed::Hint, &[], &k.seal(Sealed::Hint, &[], &[1; 16])),
            Ok([1; 16])
        );
    }

    #[test]
    fn tags_depend_on_key_and_label() {
        let (a, b) = (keys(1), keys(2));
        let q = [7u8; 16];
        assert_eq!(a.member_tag(&q), a.member_tag(&q));
        assert_ne!(a.member_tag(&q), b.member_tag(&q));
        assert_ne!(a.member_tag(&q), a.inbox_tag(&q));
        assert_ne!(a.group_tag(&q), a.reference_tag(&q));
        assert_ne!(a.key_check(), b.key_check());
        // Not the identity tag of the same bytes under the DS key.
        assert_ne!(a.group_tag(&q), DsKey::from_bytes([1; 32]).identity_tag(&q));
        assert_eq!(format!("{a:?}"), "AtRest(..)");
    }
}

//! Transparency-log verification: RFC 9162 Merkle trees, C2SP checkpoints
//! and signed notes, and a [`LogMonitor`] that detects a split view.
//!
//! Written here (about 300 lines with the checkpoint code) rather than taken
//! from `tlog_tiles` 0.2 or `ct-merkle` 0.3: both would bring their own
//! hashing and signature stacks (`tlog_tiles` a signature-crate tree,
//! `ct-merkle` a generic `digest` tree and its own proof types) for what is
//! four short recursive definitions of RFC 9162 §2.1 and one line format; the
//! server also needs to compute proofs from hashes kept in its database, which
//! both crates would force through their own storage trait. The functions
//! below are tested against RFC 9162's definitions computed naively.
//!
//! The tree: `MTH({}) = SHA-256()`, `MTH({d0}) = SHA-256(0x00 || d0)`,
//! `MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))` with `k` the
//! largest power of two smaller than `n` (RFC 9162 §2.1.1).
//!
//! Nodes are named by [`NodeId`] `(level, index)`: the root of the complete
//! subtree of `2^level` leaves starting at leaf `index * 2^level`. Every
//! subtree RFC 9162's recursion visits on its left side is such a complete,
//! aligned subtree, so a server that stores the hash of each complete subtree
//! when it closes (`O(log n)` writes per append) answers a root, an
//! inclusion proof or a consistency proof with `O(log n)` reads.

use std::fmt;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::EncodePublicKey;
use sha2::{Digest, Sha256};

/// A SHA-256 node hash.
pub type Hash = [u8; 32];

/// The longest proof accepted: a tree of at most 2^63 leaves has proofs of
/// at most 2 * 63 hashes (consistency), 63 (inclusion).
pub const MAX_PROOF_LEN: usize = 128;

/// The largest signed note accepted (bytes).
pub const MAX_NOTE_LEN: usize = 4096;

/// Why a proof, a checkpoint or a log update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// An inclusion proof does not lead to the checkpoint's root
    /// (RFC 9162 §2.1.3.2).
    #[error("the inclusion proof does not verify")]
    InclusionProof,
    /// A consistency proof does not lead from the old root to the new one
    /// (RFC 9162 §2.1.4.2).
    #[error("the consistency proof does not verify")]
    ConsistencyProof,
    /// A leaf index at or beyond the tree size.
    #[error("leaf index {index} outside a tree of size {size}")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A proof longer than [`MAX_PROOF_LEN`] or than the tree allows.
    #[error("proof too long")]
    ProofTooLong,
    /// The checkpoint text is not `<origin>\n<size>\n<base64 root>\n`.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    /// The signed note is malformed (C2SP signed-note format).
    #[error("malformed signed note: {0}")]
    MalformedNote(&'static str),
    /// No signature line of the trusted key is on the note.
    #[error("the note carries no signature of the log key")]
    NoLogSignature,
    /// A signature line of the trusted key does not verify.
    #[error("the log key's signature on the note does not verify")]
    BadSignature,
    /// The checkpoint names another log.
    #[error("checkpoint of origin {found:?}, expected {expected:?}")]
    WrongOrigin {
        /// The log the monitor follows.
        expected: String,
        /// The origin line of the checkpoint.
        found: String,
    },
    /// The new checkpoint is smaller than the one already seen: the log
    /// went back (a fork or a rollback).
    #[error("checkpoint of size {new} is older than the one seen, of size {seen}")]
    Rollback {
        /// The size already seen.
        seen: u64,
        /// The size offered.
        new: u64,
    },
    /// Two checkpoints of the same size with different roots, or a larger
    /// one that does not extend the one seen: the log shows different
    /// members different histories (a split view, RFC 9750 §8.4.3).
    #[error("split view: the log's checkpoint of size {size} is not consistent with the one seen")]
    SplitView {
        /// The size of the newer checkpoint.
        size: u64,
    },
}

/// A node of the tree: the complete subtree of `2^level` leaves starting at
/// leaf `index << level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Height above the leaves (0 for a leaf).
    pub level: u32,
    /// Position among the nodes of this level.
    pub index: u64,
}

/// `SHA-256(0x00 || entry)`: the hash of a leaf (RFC 9162 §2.1.1).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node
/// (RFC 9162 §2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The hash of the empty tree, `SHA-256()`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two smaller than `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// `MTH(D[start : start+n])`, computed from complete aligned subtrees read
/// through `node`. `start` must be a multiple of the largest power of two
/// not above `n`, which holds for every range RFC 9162's recursion visits.
fn subtree_root<E>(
    start: u64,
    n: u64,
    node: &mut impl FnMut(NodeId) -> Result<Hash, E>,
) -> Result<Hash, E> {
    if n.is_power_of_two() {
        let level = n.trailing_zeros();
        return node(NodeId {
            level,
            index: start >> level,
        });
    }
    let k = split(n);
    let left = subtree_root(start, k, node)?;
    let right = subtree_root(start + k, n - k, node)?;
    Ok(node_hash(&left, &right))
}

/// The root of a tree of `size` leaves (RFC 9162 §2.1.1), from stored
/// complete subtrees.
pub fn root<E>(size: u64, node: &mut impl FnMut(NodeId) -> Result<Hash, E>) -> Result<Hash, E> {
    if size == 0 {
        return Ok(empty_root());
    }
    subtree_root(0, size, node)
}

/// `PATH(m, D[n])`: the inclusion proof of leaf `index` in a tree of `size`
/// leaves (RFC 9162 §2.1.3.1).
pub fn inclusion_proof<E>(
    index: u64,
    size: u64,
    node: &mut impl FnMut(NodeId) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    let mut proof = Vec::new();
    path(index, 0, size, node, &mut proof)?;
    Ok(proof)
}

fn path<E>(
    m: u64,
    start: u64,
    n: u64,
    node: &mut impl FnMut(NodeId) -> Result<Hash, E>,
    out: &mut Vec<Hash>,
) -> Result<(), E> {
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path(m, start, k, node, out)?;
        out.push(subtree_root(start + k, n - k, node)?);
    } else {
        path(m - k, start + k, n - k, node, out)?;
        out.push(subtree_root(start, k, node)?);
    }
    Ok(())
}

/// `PROOF(m, D[n])`: the consistency proof between the trees of `old` and
/// `new` leaves (RFC 9162 §2.1.4.1); empty when `old` is 0 or equals `new`.
pub fn consistency_proof<E>(
    old: u64,
    new: u64,
    node: &mut impl FnMut(NodeId) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    let mut proof = Vec::new();
    if old > 0 && old < new {
        subproof(old, 0, new, true, node, &mut proof)?;
    }
    Ok(proof)
}

fn subproof<E>(
    m: u64,
    start: u64,
    n: u64,
    b: bool,
    node: &mut impl FnMut(NodeId) -> Result<Hash, E>,
    out: &mut Vec<Hash>,
) -> Result<(), E> {
    if m == n {
        if !b {
            out.push(subtree_root(start, n, node)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(m, start, k, b, node, out)?;
        out.push(subtree_root(start + k, n - k, node)?);
    } else {
        subproof(m - k, start + k, n - k, false, node, out)?;
        out.push(subtree_root(start, k, node)?);
    }
    Ok(())
}

/// The nodes an operation reads, found by running it with a recorder: the
/// recursion's shape depends only on the sizes, never on the hashes, so a
/// store can fetch exactly these nodes in one query and then run the
/// operation on them.
pub fn nodes_read(op: impl FnOnce(&mut dyn FnMut(NodeId) -> Result<Hash, ()>)) -> Vec<NodeId> {
    let mut ids = Vec::new();
    op(&mut |id| {
        ids.push(id);
        Ok([0u8; 32])
    });
    ids.sort();
    ids.dedup();
    ids
}

/// Verifies that `leaf` (a leaf hash) is at `index` in the tree of `size`
/// leaves whose root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), LogError> {
    if index >= size {
        return Err(LogError::IndexOutOfRange { index, size });
    }
    if proof.len() > MAX_PROOF_LEN {
        return Err(LogError::ProofTooLong);
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(LogError::InclusionProof);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode == 0 && r == *root {
        Ok(())
    } else {
        Err(LogError::InclusionProof)
    }
}

/// Verifies that the tree of `new_size` leaves with root `new_root` extends
/// the tree of `old_size` leaves with root `old_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), LogError> {
    if old_size > new_size {
        return Err(LogError::Rollback {
            seen: old_size,
            new: new_size,
        });
    }
    if proof.len() > MAX_PROOF_LEN {
        return Err(LogError::ProofTooLong);
    }
    if old_size == new_size {
        return if proof.is_empty() && old_root == new_root {
            Ok(())
        } else {
            Err(LogError::ConsistencyProof)
        };
    }
    if old_size == 0 {
        // Every tree extends the empty one.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(LogError::ConsistencyProof)
        };
    }
    if proof.is_empty() {
        return Err(LogError::ConsistencyProof);
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if old_size.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let Some((first, rest)) = path.split_first() else {
        return Err(LogError::ConsistencyProof);
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return Err(LogError::ConsistencyProof);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if fr == *old_root && sr == *new_root && snode == 0 {
        Ok(())
    } else {
        Err(LogError::ConsistencyProof)
    }
}

/// A log checkpoint (C2SP tlog-checkpoint): the log's origin, its size and
/// its root hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The origin line: the log's unique name.
    pub origin: String,
    /// The number of leaves.
    pub size: u64,
    /// `MTH` of those leaves.
    pub root: Hash,
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("origin", &self.origin)
            .field("size", &self.size)
            .field("root", &B64.encode(self.root))
            .finish()
    }
}

impl Checkpoint {
    /// The note text: `<origin>\n<size>\n<base64 root>\n`.
    pub fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses the note text of a checkpoint. Extension lines after the
    /// root are allowed (C2SP tlog-checkpoint) and ignored.
    pub fn parse(text: &str) -> Result<Self, LogError> {
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(LogError::MalformedCheckpoint("no origin"))?;
        let size = lines
            .next()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .filter(|s| s.len() == 1 || !s.starts_with('0'))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(LogError::MalformedCheckpoint("bad tree size"))?;
        let root: Hash = lines
            .next()
            .and_then(|r| B64.decode(r).ok())
            .and_then(|r| r.try_into().ok())
            .ok_or(LogError::MalformedCheckpoint("bad root hash"))?;
        if !text.ends_with('\n') {
            return Err(LogError::MalformedCheckpoint("no final newline"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// The C2SP signed-note signature type of ECDSA (P-256 here).
pub const SIGNATURE_TYPE_ECDSA: u8 = 0x02;

/// A log's public key as a note verifier: key name (the log's origin) and
/// ECDSA P-256 key. Its key ID is the first four bytes of SHA-256 of the
/// key's DER SubjectPublicKeyInfo, as C2SP signed-note says for type 0x02.
#[derive(Clone, PartialEq, Eq)]
pub struct LogKey {
    name: String,
    key: p256::ecdsa::VerifyingKey,
    id: [u8; 4],
}

impl fmt::Debug for LogKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogKey")
            .field("name", &self.name)
            .field("id", &hex_id(self.id))
            .finish()
    }
}

fn hex_id(id: [u8; 4]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

impl LogKey {
    /// A verifier named `name` for the SEC1 uncompressed P-256 point
    /// `public_key`.
    pub fn new(name: &str, public_key: &[u8]) -> Result<Self, LogError> {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
            return Err(LogError::MalformedNote("bad key name"));
        }
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key)
            .map_err(|_| LogError::MalformedNote("bad log public key"))?;
        let spki = key
            .to_public_key_der()
            .map_err(|_| LogError::MalformedNote("bad log public key"))?;
        let digest = Sha256::digest(spki.as_bytes());
        Ok(LogKey {
            name: name.to_owned(),
            key,
            id: [digest[0], digest[1], digest[2], digest[3]],
        })
    }

    /// The key name (the log's origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key ID.
    pub fn id(&self) -> [u8; 4] {
        self.id
    }

    /// The signature line for a DER ECDSA signature over the note text:
    /// `— <name> base64(key ID || signature)\n`.
    pub fn signature_line(&self, der_signature: &[u8]) -> String {
        let mut blob = self.id.to_vec();
        blob.extend_from_slice(der_signature);
        format!("\u{2014} {} {}\n", self.name, B64.encode(blob))
    }

    /// Verifies a signed checkpoint note and returns its checkpoint: the
    /// text must carry a valid signature of this key and name this log as
    /// its origin. Signatures of other keys are ignored (C2SP signed-note).
    pub fn verify_note(&self, note: &str) -> Result<Checkpoint, LogError> {
        if note.len() > MAX_NOTE_LEN {
            return Err(LogError::MalformedNote("note too large"));
        }
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(LogError::MalformedNote("control character"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or(LogError::MalformedNote("no signature block"))?;
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(LogError::MalformedNote("no signature lines"));
        }
        let mut verified = false;
        for line in sigs[..sigs.len() - 1].split('\n') {
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or(LogError::MalformedNote("bad signature line"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or(LogError::MalformedNote("bad signature line"))?;
            let blob = B64
                .decode(b64)
                .map_err(|_| LogError::MalformedNote("bad signature encoding"))?;
            if blob.len() < 4 {
                return Err(LogError::MalformedNote("short signature"));
            }
            if name != self.name || blob[..4] != self.id {
                continue;
            }
            let sig =
                p256::ecdsa::Signature::from_der(&blob[4..]).map_err(|_| LogError::BadSignature)?;
            self.key
                .verify(text.as_bytes(), &sig)
                .map_err(|_| LogError::BadSignature)?;
            verified = true;
        }
        if !verified {
            return Err(LogError::NoLogSignature);
        }
        let checkpoint = Checkpoint::parse(text)?;
        if checkpoint.origin != self.name {
            return Err(LogError::WrongOrigin {
                expected: self.name.clone(),
                found: checkpoint.origin,
            });
        }
        Ok(checkpoint)
    }
}

/// Keeps the last checkpoint a client has seen of one log and accepts a
/// new one only if it is signed by the log key and consistent with it
/// (same tree or an extension of it, RFC 9162 §2.1.4). Two members whose
/// monitors both hold verified checkpoints can also compare them
/// ([`LogMonitor::check_peer`]): the AS cannot show them different
/// histories without one of them noticing. Shared between threads.
#[derive(Debug)]
pub struct LogMonitor {
    key: LogKey,
    last: Mutex<Option<Checkpoint>>,
}

impl LogMonitor {
    /// A monitor of the log with `key`, which has seen nothing yet.
    pub fn new(key: LogKey) -> Self {
        LogMonitor {
            key,
            last: Mutex::new(None),
        }
    }

    /// The log key.
    pub fn key(&self) -> &LogKey {
        &self.key
    }

    /// The last checkpoint accepted.
    pub fn latest(&self) -> Option<Checkpoint> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Accepts the signed checkpoint `note` if it is consistent with the
    /// last one, `proof` being the consistency proof from the last size to
    /// the new one (empty for the first checkpoint or an equal size). A
    /// refused checkpoint leaves the monitor unchanged.
    pub fn update(&self, note: &str, proof: &[Hash]) -> Result<Checkpoint, LogError> {
        let new = self.key.verify_note(note)?;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = last.as_ref() {
            check_consistent(old, &new, proof)?;
        }
        *last = Some(new.clone());
        Ok(new)
    }

    /// Compares a checkpoint another member has seen (a signed note it
    /// forwarded) with this monitor's: if both have the same size they must
    /// have the same root; otherwise the smaller must be a prefix of the
    /// larger, shown by `proof` between them. A failure means the log has
    /// shown the two members different histories.
    pub fn check_peer(&self, peer_note: &str, proof: &[Hash]) -> Result<(), LogError> {
        let peer = self.key.verify_note(peer_note)?;
        let last = self.latest().ok_or(LogError::NoLogSignature)?;
        let (a, b) = if peer.size >= last.size {
            (&last, &peer)
        } else {
            (&peer, &last)
        };
        check_consistent(a, b, proof)
    }
}

fn check_consistent(old: &Checkpoint, new: &Checkpoint, proof: &[Hash]) -> Result<(), LogError> {
    if new.size < old.size {
        return Err(LogError::Rollback {
            seen: old.size,
            new: new.size,
        });
    }
    verify_consistency(old.size, new.size, &old.root, &new.root, proof)
        .map_err(|_| LogError::SplitView { size: new.size })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9162 §2.1.1's MTH, straight from the definition.
    fn mth(d: &[Vec<u8>]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => leaf_hash(&d[0]),
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    /// RFC 9162 §2.1.3.1's PATH, from the definition.
    fn path_naive(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        let n = d.len();
        if n <= 1 {
            return vec![];
        }
        let k = split(n as u64) as usize;
        if m < k {
            let mut p = path_naive(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = path_naive(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }

    /// RFC 9162 §2.1.4.1's SUBPROOF, from the definition.
    fn subproof_naive(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![mth(d)] };
        }
        let k = split(n as u64) as usize;
        if m <= k {
            let mut p = subproof_naive(m, &d[..k], b);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = subproof_naive(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("leaf {i}").into_bytes()).collect()
    }

    /// The stored complete subtrees of `d`, as a server keeps them.
    fn store(d: &[Vec<u8>]) -> impl FnMut(NodeId) -> Result<Hash, ()> + '_ {
        move |id: NodeId| {
            let start = (id.index << id.level) as usize;
            let end = start + (1usize << id.level);
            if end > d.len() {
                return Err(());
            }
            Ok(mth(&d[start..end]))
        }
    }

    #[test]
    fn roots_and_proofs_match_the_rfc_definitions() {
        for n in 0..=33usize {
            let d = leaves(n);
            assert_eq!(root(n as u64, &mut store(&d)).unwrap(), mth(&d), "n={n}");
            for m in 0..n {
                let p = inclusion_proof(m as u64, n as u64, &mut store(&d)).unwrap();
                assert_eq!(p, path_naive(m, &d), "PATH({m}, {n})");
                verify_inclusion(&leaf_hash(&d[m]), m as u64, n as u64, &p, &mth(&d)).unwrap();
            }
            for m in 1..n {
                let p = consistency_proof(m as u64, n as u64, &mut store(&d)).unwrap();
                assert_eq!(p, subproof_naive(m, &d, true), "PROOF({m}, {n})");
                verify_consistency(m as u64, n as u64, &mth(&d[..m]), &mth(&d), &p).unwrap();
            }
        }
    }

    #[test]
    fn tampered_proofs_fail() {
        let d = leaves(13);
        let r = mth(&d);
        let mut p = inclusion_proof(5, 13, &mut store(&d)).unwrap();
        assert_eq!(
            verify_inclusion(&leaf_hash(&d[6]), 5, 13, &p, &r),
            Err(LogError::InclusionProof)
        );
        assert_eq!(
            verify_inclusion(&leaf_hash(&d[5]), 6, 13, &p, &r),
            Err(LogError::InclusionProof)
        );
        assert_eq!(
            verify_inclusion(&leaf_hash(&d[5]), 13, 13, &p, &r),
            Err(LogError::IndexOutOfRange {
                index: 13,
                size: 13
            })
        );
        p[1][0] ^= 1;
        assert_eq!(
            verify_inclusion(&leaf_hash(&d[5]), 5, 13, &p, &r),
            Err(LogError::InclusionProof)
        );
        let c = consistency_proof(6, 13, &mut store(&d)).unwrap();
        let mut other = leaves(6);
        other[2] = b"another leaf".to_vec();
        assert_eq!(
            verify_consistency(6, 13, &mth(&other), &r, &c),
            Err(LogError::ConsistencyProof)
        );
        assert_eq!(
            verify_consistency(6, 13, &mth(&d[..6]), &r, &c[..c.len() - 1]),
            Err(LogError::ConsistencyProof)
        );
    }

    #[test]
    fn nodes_read_are_logarithmic() {
        let ids = nodes_read(|f| {
            inclusion_proof(1_000_000, 3_000_001, &mut |id| f(id)).unwrap();
        });
        assert!(ids.len() <= 2 * 22, "{} nodes", ids.len());
        assert!(ids.iter().all(|id| (id.index + 1) << id.level <= 3_000_001));
    }

    #[test]
    fn checkpoints_parse_strictly() {
        let c = Checkpoint {
            origin: "example.com/log".into(),
            size: 12,
            root: [7; 32],
        };
        assert_eq!(Checkpoint::parse(&c.to_text()).unwrap(), c);
        for bad in [
            "",
            "\n12\nAAAA\n",
            "o\n012\n",
            "o\n-1\n",
            "o\n1\nnot base64\n",
            "o\n1\nAAAA\n",
        ] {
            assert!(
                matches!(
                    Checkpoint::parse(bad),
                    Err(LogError::MalformedCheckpoint(_))
                ),
                "{bad:?}"
            );
        }
    }

    fn signed(key: &p256::ecdsa::SigningKey, lk: &LogKey, c: &Checkpoint) -> String {
        use p256::ecdsa::signature::Signer;
        let text = c.to_text();
        let sig: p256::ecdsa::Signature = key.sign(text.as_bytes());
        format!("{text}\n{}", lk.signature_line(sig.to_der().as_bytes()))
    }

    fn log_key() -> (p256::ecdsa::SigningKey, LogKey) {
        let sk = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
        let pk = sk.verifying_key().to_encoded_point(false);
        let lk = LogKey::new("example.com/log", pk.as_bytes()).unwrap();
        (sk, lk)
    }

    #[test]
    fn signed_notes_verify_and_foreign_ones_do_not() {
        let (sk, lk) = log_key();
        let c = Checkpoint {
            origin: "example.com/log".into(),
            size: 3,
            root: [1; 32],
        };
        let note = signed(&sk, &lk, &c);
        assert_eq!(lk.verify_note(&note).unwrap(), c);
        let tampered = note.replacen("\n3\n", "\n4\n", 1);
        assert_eq!(lk.verify_note(&tampered), Err(LogError::BadSignature));
        let other = p256::ecdsa::SigningKey::from_slice(&[8u8; 32]).unwrap();
        let opk = other.verifying_key().to_encoded_point(false);
        let olk = LogKey::new("example.com/log", opk.as_bytes()).unwrap();
        assert_eq!(
            lk.verify_note(&signed(&other, &olk, &c)),
            Err(LogError::NoLogSignature)
        );
        let wrong = Checkpoint {
            origin: "evil.example/log".into(),
            ..c
        };
        assert!(matches!(
            lk.verify_note(&signed(&sk, &lk, &wrong)),
            Err(LogError::WrongOrigin { .. })
        ));
    }

    #[test]
    fn the_monitor_refuses_a_split_view_and_a_rollback() {
        let (sk, lk) = log_key();
        let a = leaves(10);
        let mut b = leaves(9);
        b.push(b"another tenth leaf".to_vec());
        let cp = |d: &[Vec<u8>]| Checkpoint {
            origin: "example.com/log".into(),
            size: d.len() as u64,
            root: mth(d),
        };
        let monitor = LogMonitor::new(lk.clone());
        monitor
            .update(&signed(&sk, &lk, &cp(&a[..4])), &[])
            .unwrap();
        let p = consistency_proof(4, 10, &mut store(&a)).unwrap();
        monitor.update(&signed(&sk, &lk, &cp(&a)), &p).unwrap();
        // Same size, another root.
        assert_eq!(
            monitor.update(&signed(&sk, &lk, &cp(&b)), &[]),
            Err(LogError::SplitView { size: 10 })
        );
        // A larger tree that does not extend the one seen.
        let mut b2 = b.clone();
        b2.push(b"11".to_vec());
        let p = consistency_proof(10, 11, &mut store(&b2)).unwrap();
        assert_eq!(
            monitor.update(&signed(&sk, &lk, &cp(&b2)), &p),
            Err(LogError::SplitView { size: 11 })
        );
        assert_eq!(
            monitor.update(&signed(&sk, &lk, &cp(&a[..5])), &[]),
            Err(LogError::Rollback { seen: 10, new: 5 })
        );
        assert_eq!(monitor.latest().unwrap(), cp(&a));
    }
}

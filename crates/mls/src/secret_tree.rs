//! The secret tree and its per-sender hash ratchets (RFC 9420 §9), and the
//! sender-data key and nonce (RFC 9420 §6.3.2).
//!
//! Node secrets are derived lazily, on the first message of a sender, and
//! deleted once consumed (RFC 9420 §9.2): deriving a node's children
//! deletes the node; deriving a leaf's two ratchets deletes the leaf
//! secret; each ratchet step replaces the ratchet secret. Receivers keep the
//! keys of a bounded window of skipped generations for out-of-order
//! delivery and refuse generations too far ahead, so a message cannot make
//! a member run its ratchet an unbounded number of steps.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use hsmls_crypto::{CipherSuiteProvider, CryptoError, Secret};

use crate::tree_math::{self, LeafIndex, TreeMathError};

mod saved;

/// Errors of the secret tree.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretTreeError {
    /// The sender's leaf index is not in the tree.
    #[error("leaf {leaf} is outside a secret tree of {n_leaves} leaves")]
    LeafOutOfRange {
        /// The leaf index asked for.
        leaf: LeafIndex,
        /// The tree's number of leaves.
        n_leaves: u32,
    },
    /// The requested generation is more than `max_forward_distance` ahead
    /// of the ratchet.
    #[error(
        "generation {generation} is too far ahead of the ratchet (at {current}, at most {max_forward_distance} ahead)"
    )]
    GenerationTooFarAhead {
        /// The requested generation.
        generation: u32,
        /// The ratchet's next generation.
        current: u32,
        /// The configured bound.
        max_forward_distance: u32,
    },
    /// The key of this generation was already used (and deleted).
    #[error("the key of generation {0} was already used")]
    GenerationAlreadyUsed(u32),
    /// The generation is older than the window of kept keys.
    #[error("generation {0} is older than the kept out-of-order window")]
    GenerationExpired(u32),
    /// The ratchet has produced all 2^32 generations.
    #[error("the sender ratchet is exhausted")]
    RatchetExhausted,
    /// A node secret needed for a derivation was already consumed.
    #[error("the secret of node {0} was already consumed")]
    NodeSecretConsumed(u32),
    /// The tree math rejected an index.
    #[error(transparent)]
    TreeMath(#[from] TreeMathError),
    /// A cryptographic step failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Bounds for out-of-order and skipped messages (RFC 9420 §9.1, §9.2).
/// Build it with [`SecretTreeConfig::new`] or from the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SecretTreeConfig {
    /// How far ahead of a ratchet's next generation a received generation
    /// may be (each step costs three KDF calls).
    pub max_forward_distance: u32,
    /// How many keys of skipped (not yet received) generations a receiver
    /// keeps per ratchet, for out-of-order delivery.
    pub out_of_order_tolerance: u32,
}

impl SecretTreeConfig {
    /// Receivers accept generations at most `max_forward_distance` ahead
    /// of a ratchet and keep the keys of at most `out_of_order_tolerance`
    /// skipped generations per ratchet.
    pub fn new(max_forward_distance: u32, out_of_order_tolerance: u32) -> Self {
        SecretTreeConfig {
            max_forward_distance,
            out_of_order_tolerance,
        }
    }
}

impl Default for SecretTreeConfig {
    fn default() -> Self {
        SecretTreeConfig {
            max_forward_distance: 1000,
            out_of_order_tolerance: 5,
        }
    }
}

/// Which of a sender's two ratchets (RFC 9420 §9): handshake messages
/// (proposals and commits) or application messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RatchetType {
    /// `handshake_ratchet_secret_[N]_[j]`.
    Handshake,
    /// `application_ratchet_secret_[N]_[j]`.
    Application,
}

/// `ratchet_key_[N]_[j]` and `ratchet_nonce_[N]_[j]` of one generation
/// (RFC 9420 §9.1). Single use: drop it after encrypting or decrypting one
/// message.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyNonce {
    /// The generation `j`.
    pub generation: u32,
    /// `DeriveTreeSecret(ratchet_secret, "key", j, AEAD.Nk)`.
    pub key: Secret,
    /// `DeriveTreeSecret(ratchet_secret, "nonce", j, AEAD.Nn)`.
    pub nonce: Secret,
}

impl fmt::Debug for KeyNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyNonce")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// One sender ratchet (RFC 9420 §9.1).
#[derive(Clone, PartialEq, Eq)]
struct HashRatchet {
    /// `ratchet_secret_[N]_[next]`; `None` once all generations are used.
    secret: Option<Secret>,
    /// The generation whose key the secret yields next.
    next: u32,
    /// Kept keys of skipped generations, oldest first.
    skipped: VecDeque<KeyNonce>,
}

/// How a receiver's ratchet yields the key of one generation, worked out
/// without changing the ratchet; [`HashRatchet::apply`] makes it so.
enum RatchetPlan {
    /// The key is kept at this position of `skipped`.
    Kept(usize),
    /// The ratchet moves forward past the requested generation.
    Forward {
        /// The new ratchet secret (`None`: all generations used).
        secret: Option<Secret>,
        /// The new next generation.
        next: u32,
        /// Keys of skipped generations to keep, oldest first.
        newly_kept: Vec<KeyNonce>,
        /// The requested key.
        key: KeyNonce,
    },
}

/// `ratchet_key`, `ratchet_nonce` (if `with_key`) and the next ratchet
/// secret (`None` after generation 2^32 - 1) of generation `j`.
fn ratchet_step(
    cs: &dyn CipherSuiteProvider,
    secret: &[u8],
    j: u32,
    with_key: bool,
) -> Result<(Option<KeyNonce>, Option<Secret>), SecretTreeError> {
    let key = if with_key {
        Some(KeyNonce {
            generation: j,
            key: cs.derive_tree_secret(secret, b"key", j, cs.aead_key_len())?,
            nonce: cs.derive_tree_secret(secret, b"nonce", j, cs.aead_nonce_len())?,
        })
    } else {
        None
    };
    let next = match j.checked_add(1) {
        Some(_) => Some(cs.derive_tree_secret(secret, b"secret", j, cs.hash_len())?),
        None => None,
    };
    Ok((key, next))
}

impl HashRatchet {
    fn new(secret: Secret) -> Self {
        HashRatchet {
            secret: Some(secret),
            next: 0,
            skipped: VecDeque::new(),
        }
    }

    /// Derives the key and nonce of generation `self.next` and advances
    /// the ratchet (deleting the old ratchet secret). For senders.
    fn step(&mut self, cs: &dyn CipherSuiteProvider) -> Result<KeyNonce, SecretTreeError> {
        let secret = self
            .secret
            .as_ref()
            .ok_or(SecretTreeError::RatchetExhausted)?;
        let j = self.next;
        let (key, next_secret) = ratchet_step(cs, secret.as_bytes(), j, true)?;
        let key = key.ok_or(SecretTreeError::RatchetExhausted)?;
        self.secret = next_secret;
        if let Some(next) = j.checked_add(1) {
            self.next = next;
        }
        Ok(key)
    }

    /// Works out the key for decrypting a message of `generation` without
    /// changing the ratchet.
    fn plan(
        &self,
        cs: &dyn CipherSuiteProvider,
        generation: u32,
        config: &SecretTreeConfig,
    ) -> Result<RatchetPlan, SecretTreeError> {
        let current = match &self.secret {
            Some(secret) if generation >= self.next => secret,
            _ => {
                if let Some(pos) = self.skipped.iter().position(|k| k.generation == generation) {
                    return Ok(RatchetPlan::Kept(pos));
                }
                let window_start = self.next.saturating_sub(config.out_of_order_tolerance);
                return Err(if generation >= window_start || self.secret.is_none() {
                    SecretTreeError::GenerationAlreadyUsed(generation)
                } else {
                    SecretTreeError::GenerationExpired(generation)
                });
            }
        };
        let distance = generation - self.next;
        if distance > config.max_forward_distance {
            return Err(SecretTreeError::GenerationTooFarAhead {
                generation,
                current: self.next,
                max_forward_distance: config.max_forward_distance,
            });
        }
        // Keep keys only for the last `out_of_order_tolerance` skipped
        // generations; older ones are skipped without deriving keys.
        let tolerance = config.out_of_order_tolerance;
        let mut newly_kept = Vec::new();
        let mut owned: Option<Secret> = None;
        let mut j = self.next;
        while j < generation {
            let s = owned.as_ref().unwrap_or(current);
            let (key, next_secret) =
                ratchet_step(cs, s.as_bytes(), j, generation - j <= tolerance)?;
            newly_kept.extend(key);
            // j < generation <= u32::MAX, so j + 1 exists and so does the
            // next secret.
            owned = Some(next_secret.ok_or(SecretTreeError::RatchetExhausted)?);
            j += 1;
        }
        let s = owned.as_ref().unwrap_or(current);
        let (key, secret) = ratchet_step(cs, s.as_bytes(), generation, true)?;
        let key = key.ok_or(SecretTreeError::RatchetExhausted)?;
        Ok(RatchetPlan::Forward {
            next: generation.checked_add(1).unwrap_or(generation),
            secret,
            newly_kept,
            key,
        })
    }

    /// The key a plan of this ratchet yields.
    fn planned_key<'a>(&'a self, plan: &'a RatchetPlan) -> Result<&'a KeyNonce, SecretTreeError> {
        match plan {
            RatchetPlan::Kept(pos) => self
                .skipped
                .get(*pos)
                .ok_or(SecretTreeError::RatchetExhausted),
            RatchetPlan::Forward { key, .. } => Ok(key),
        }
    }

    /// Carries out a plan of this ratchet: deletes the used key and
    /// advances the ratchet.
    fn apply(&mut self, plan: RatchetPlan, tolerance: u32) {
        match plan {
            RatchetPlan::Kept(pos) => {
                self.skipped.remove(pos);
            }
            RatchetPlan::Forward {
                secret,
                next,
                newly_kept,
                key: _,
            } => {
                self.secret = secret;
                self.next = next;
                self.skipped.extend(newly_kept);
                while self.skipped.len() > tolerance as usize {
                    self.skipped.pop_front();
                }
            }
        }
    }
}

/// A sender's two ratchets.
#[derive(Clone, PartialEq, Eq)]
struct SenderRatchets {
    handshake: HashRatchet,
    application: HashRatchet,
}

impl SenderRatchets {
    fn get_mut(&mut self, ratchet: RatchetType) -> &mut HashRatchet {
        match ratchet {
            RatchetType::Handshake => &mut self.handshake,
            RatchetType::Application => &mut self.application,
        }
    }
}

/// The first use of a sender's leaf, worked out without changing the tree:
/// the node secret consumed, the sibling secrets derived on the way down,
/// and the leaf's fresh ratchets.
struct PendingSender {
    consumed: u32,
    derived: Vec<(u32, Secret)>,
    ratchets: SenderRatchets,
}

/// The secret tree of one epoch (RFC 9420 §9), rooted at the epoch's
/// `encryption_secret`.
///
/// Receiving is transactional: [`SecretTree::with_decryption_key`] derives
/// the key of a generation without changing the tree and deletes it (and
/// advances the ratchet) only if the caller's decryption succeeds, so a
/// forged message can neither burn a key nor move a ratchet.
///
/// `PartialEq` compares the whole state (secrets in constant time), so
/// tests can check that a rejected message left the tree unchanged.
#[derive(Clone)]
pub struct SecretTree {
    cs: &'static dyn CipherSuiteProvider,
    n_leaves: u32,
    config: SecretTreeConfig,
    /// Derived, not yet consumed node secrets, by node index.
    nodes: HashMap<u32, Secret>,
    /// The ratchets of senders whose leaf secret was consumed.
    senders: HashMap<u32, SenderRatchets>,
}

impl PartialEq for SecretTree {
    fn eq(&self, other: &Self) -> bool {
        self.cs.cipher_suite() == other.cs.cipher_suite()
            && self.n_leaves == other.n_leaves
            && self.config == other.config
            && self.nodes == other.nodes
            && self.senders == other.senders
    }
}

impl Eq for SecretTree {}

impl fmt::Debug for SecretTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretTree")
            .field("cipher_suite", &self.cs.cipher_suite())
            .field("n_leaves", &self.n_leaves)
            .field("node_secrets", &self.nodes.len())
            .field("senders", &self.senders.len())
            .finish_non_exhaustive()
    }
}

impl SecretTree {
    /// A secret tree over `n_leaves` leaves whose root secret is
    /// `encryption_secret` (consumed).
    pub fn new(
        cs: &'static dyn CipherSuiteProvider,
        encryption_secret: Secret,
        n_leaves: u32,
        config: SecretTreeConfig,
    ) -> Result<Self, SecretTreeError> {
        let root = tree_math::root(n_leaves)?;
        let mut nodes = HashMap::new();
        nodes.insert(root.0, encryption_secret);
        Ok(SecretTree {
            cs,
            n_leaves,
            config,
            nodes,
            senders: HashMap::new(),
        })
    }

    /// The cipher suite.
    pub fn cipher_suite(&self) -> &'static dyn CipherSuiteProvider {
        self.cs
    }

    /// The number of leaves.
    pub fn n_leaves(&self) -> u32 {
        self.n_leaves
    }

    /// The out-of-order bounds.
    pub fn config(&self) -> &SecretTreeConfig {
        &self.config
    }

    /// The key and nonce for the sender at `leaf` to encrypt its next
    /// message of the given type (RFC 9420 §6.3.1). The ratchet advances
    /// at once: a key handed out is never handed out again.
    pub fn next_encryption_key(
        &mut self,
        leaf: LeafIndex,
        ratchet: RatchetType,
    ) -> Result<KeyNonce, SecretTreeError> {
        self.check_leaf(leaf)?;
        if !self.senders.contains_key(&leaf.0) {
            let pending = self.plan_sender(leaf)?;
            self.apply_sender(leaf, pending);
        }
        let cs = self.cs;
        self.senders
            .get_mut(&leaf.0)
            .ok_or(SecretTreeError::NodeSecretConsumed(
                leaf.0.saturating_mul(2),
            ))?
            .get_mut(ratchet)
            .step(cs)
    }

    /// Decrypts with the key and nonce of `generation` from the sender at
    /// `leaf` (RFC 9420 §6.3.2), transactionally: the key is derived
    /// without changing the tree and passed to `open`; only if `open`
    /// succeeds is the key deleted and the ratchet advanced (RFC 9420
    /// §9.2). If `open` fails, or the generation is refused, the tree is
    /// unchanged.
    pub fn with_decryption_key<T, E>(
        &mut self,
        leaf: LeafIndex,
        ratchet: RatchetType,
        generation: u32,
        open: impl FnOnce(&KeyNonce) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<SecretTreeError>,
    {
        self.check_leaf(leaf)?;
        let (cs, config) = (self.cs, self.config);
        let tolerance = config.out_of_order_tolerance;
        if let Some(sender) = self.senders.get_mut(&leaf.0) {
            let r = sender.get_mut(ratchet);
            let plan = r.plan(cs, generation, &config)?;
            let out = open(r.planned_key(&plan)?)?;
            r.apply(plan, tolerance);
            Ok(out)
        } else {
            let mut pending = self.plan_sender(leaf)?;
            let r = pending.ratchets.get_mut(ratchet);
            let plan = r.plan(cs, generation, &config)?;
            let out = open(r.planned_key(&plan)?)?;
            r.apply(plan, tolerance);
            self.apply_sender(leaf, pending);
            Ok(out)
        }
    }

    /// The key and nonce to decrypt a message of `generation` from the
    /// sender at `leaf`, deleted from the tree at once. Prefer
    /// [`SecretTree::with_decryption_key`], which deletes it only after a
    /// successful decryption.
    pub fn decryption_key(
        &mut self,
        leaf: LeafIndex,
        ratchet: RatchetType,
        generation: u32,
    ) -> Result<KeyNonce, SecretTreeError> {
        self.with_decryption_key(leaf, ratchet, generation, |kn| Ok(kn.clone()))
    }

    fn check_leaf(&self, leaf: LeafIndex) -> Result<(), SecretTreeError> {
        if leaf.0 >= self.n_leaves {
            return Err(SecretTreeError::LeafOutOfRange {
                leaf,
                n_leaves: self.n_leaves,
            });
        }
        Ok(())
    }

    /// Derives the ratchets of `leaf` from the nearest derived ancestor
    /// without changing the tree.
    fn plan_sender(&self, leaf: LeafIndex) -> Result<PendingSender, SecretTreeError> {
        let cs = self.cs;
        let target = leaf.node_index()?;
        let mut node = tree_math::root(self.n_leaves)?;
        // Walk down from the root. The first node whose secret is present
        // is consumed; below it, the path's secrets are derived here and
        // the siblings' secrets are kept.
        let mut consumed = None;
        let mut current: Option<Secret> = None;
        let mut derived = Vec::new();
        while node != target {
            let left = tree_math::left(node)?;
            let right = tree_math::right(node)?;
            let go_left = target.0 < node.0;
            let secret = match &current {
                Some(s) => Some(s),
                None => {
                    let s = self.nodes.get(&node.0);
                    if s.is_some() {
                        consumed = Some(node.0);
                    }
                    s
                }
            };
            if let Some(secret) = secret {
                let s = secret.as_bytes();
                let l = cs.expand_with_label(s, b"tree", b"left", cs.hash_len())?;
                let r = cs.expand_with_label(s, b"tree", b"right", cs.hash_len())?;
                let (on_path, sibling) = if go_left {
                    (l, (right.0, r))
                } else {
                    (r, (left.0, l))
                };
                derived.push(sibling);
                current = Some(on_path);
            }
            node = if go_left { left } else { right };
        }
        let leaf_secret = match &current {
            Some(s) => s,
            None => {
                consumed = Some(target.0);
                self.nodes
                    .get(&target.0)
                    .ok_or(SecretTreeError::NodeSecretConsumed(target.0))?
            }
        };
        let s = leaf_secret.as_bytes();
        Ok(PendingSender {
            consumed: consumed.ok_or(SecretTreeError::NodeSecretConsumed(target.0))?,
            derived,
            ratchets: SenderRatchets {
                handshake: HashRatchet::new(cs.expand_with_label(
                    s,
                    b"handshake",
                    &[],
                    cs.hash_len(),
                )?),
                application: HashRatchet::new(cs.expand_with_label(
                    s,
                    b"application",
                    &[],
                    cs.hash_len(),
                )?),
            },
        })
    }

    /// Records a sender's first use: deletes the consumed node secret and
    /// keeps the derived siblings and the leaf's ratchets.
    fn apply_sender(&mut self, leaf: LeafIndex, pending: PendingSender) {
        self.nodes.remove(&pending.consumed);
        self.nodes.extend(pending.derived);
        self.senders.insert(leaf.0, pending.ratchets);
    }
}

/// `sender_data_key` and `sender_data_nonce` (RFC 9420 §6.3.2): derived
/// from `sender_data_secret` and the first `KDF.Nh` bytes of the content
/// ciphertext (all of it if shorter). Returns `(key, nonce)`.
pub fn sender_data_key_nonce(
    cs: &dyn CipherSuiteProvider,
    sender_data_secret: &Secret,
    ciphertext: &[u8],
) -> Result<(Secret, Secret), CryptoError> {
    let sample = ciphertext.get(..cs.hash_len()).unwrap_or(ciphertext);
    let s = sender_data_secret.as_bytes();
    let key = cs.expand_with_label(s, b"key", sample, cs.aead_key_len())?;
    let nonce = cs.expand_with_label(s, b"nonce", sample, cs.aead_nonce_len())?;
    Ok((key, nonce))
}

#[cfg(test)]
mod tests {
    use hsmls_crypto::CipherSuite;

    use super::*;

    #[derive(Debug, PartialEq)]
    enum OpenError {
        Rejected,
        Tree,
    }

    impl From<SecretTreeError> for OpenError {
        fn from(_: SecretTreeError) -> Self {
            OpenError::Tree
        }
    }

    fn tree() -> SecretTree {
        let cs = CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256
            .provider()
            .unwrap();
        let config = SecretTreeConfig {
            max_forward_distance: 20,
            out_of_order_tolerance: 3,
        };
        SecretTree::new(cs, Secret::from_slice(&[3; 32]), 5, config).unwrap()
    }

    /// A failed `open` leaves the tree unchanged: on a sender's first use,
    /// when jumping ahead, and for a kept out-of-order key.
    #[test]
    fn rejected_open_changes_nothing() {
        let app = RatchetType::Application;
        let mut sender = tree();
        let keys: Vec<KeyNonce> = (0..8)
            .map(|_| sender.next_encryption_key(LeafIndex(4), app).unwrap())
            .collect();

        let mut t = tree();
        for generation in [0, 5] {
            let before = t.clone();
            let r = t.with_decryption_key(LeafIndex(4), app, generation, |_| {
                Err::<(), _>(OpenError::Rejected)
            });
            assert_eq!(r, Err(OpenError::Rejected));
            assert!(
                t == before,
                "tree changed by a rejected generation {generation}"
            );
        }
        // Genuine generation 5 (keeps 2, 3, 4).
        let got = t
            .with_decryption_key(LeafIndex(4), app, 5, |kn| Ok::<_, OpenError>(kn.clone()))
            .unwrap();
        assert!(got == keys[5]);
        let after_5 = t.clone();
        assert!(after_5 != tree());
        // Rejected kept key 3, then genuine.
        let r = t.with_decryption_key(LeafIndex(4), app, 3, |_| Err::<(), _>(OpenError::Rejected));
        assert_eq!(r, Err(OpenError::Rejected));
        assert!(t == after_5);
        let got = t
            .with_decryption_key(LeafIndex(4), app, 3, |kn| Ok::<_, OpenError>(kn.clone()))
            .unwrap();
        assert!(got == keys[3]);
        // Used now.
        let r = t.with_decryption_key(LeafIndex(4), app, 3, |kn| Ok::<_, OpenError>(kn.clone()));
        assert!(matches!(r, Err(OpenError::Tree)));
        // Refused generations change nothing either.
        let before = t.clone();
        let r = t.with_decryption_key(LeafIndex(4), app, 100, |kn| Ok::<_, OpenError>(kn.clone()));
        assert!(matches!(r, Err(OpenError::Tree)));
        assert!(t == before);
        // Other leaves still derive after leaf 4 consumed its path.
        let mut s2 = tree();
        let k = s2.next_encryption_key(LeafIndex(1), app).unwrap();
        let got = t.decryption_key(LeafIndex(1), app, 0).unwrap();
        assert!(got == k);
    }
}

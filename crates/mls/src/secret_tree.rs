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

/// Errors of the secret tree.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretTreeError {
    /// The sender's leaf index is not in the tree.
    #[error("leaf {leaf} is outside a secret tree of {n_leaves} leaves")]
    LeafOutOfRange {
        /// The leaf index asked for.
        leaf: u32,
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

/// Bounds for out-of-order and skipped messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecretTreeConfig {
    /// How far ahead of a ratchet's next generation a received generation
    /// may be (each step costs three KDF calls).
    pub max_forward_distance: u32,
    /// How many keys of skipped (not yet received) generations a receiver
    /// keeps per ratchet, for out-of-order delivery.
    pub out_of_order_tolerance: u32,
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
#[derive(Clone)]
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
struct HashRatchet {
    /// `ratchet_secret_[N]_[next]`; `None` once all generations are used.
    secret: Option<Secret>,
    /// The generation whose key the secret yields next.
    next: u32,
    /// Kept keys of skipped generations, oldest first.
    skipped: VecDeque<KeyNonce>,
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
    /// the ratchet (deleting the old ratchet secret).
    fn step(&mut self, cs: &dyn CipherSuiteProvider) -> Result<KeyNonce, SecretTreeError> {
        let secret = self
            .secret
            .take()
            .ok_or(SecretTreeError::RatchetExhausted)?;
        let j = self.next;
        let s = secret.as_bytes();
        let key = cs.derive_tree_secret(s, b"key", j, cs.aead_key_len())?;
        let nonce = cs.derive_tree_secret(s, b"nonce", j, cs.aead_nonce_len())?;
        if let Some(next) = j.checked_add(1) {
            self.secret = Some(cs.derive_tree_secret(s, b"secret", j, cs.hash_len())?);
            self.next = next;
        }
        Ok(KeyNonce {
            generation: j,
            key,
            nonce,
        })
    }

    /// Advances the ratchet secret past generation `self.next` without
    /// deriving its key and nonce.
    fn skip(&mut self, cs: &dyn CipherSuiteProvider) -> Result<(), SecretTreeError> {
        let secret = self
            .secret
            .take()
            .ok_or(SecretTreeError::RatchetExhausted)?;
        let j = self.next;
        if let Some(next) = j.checked_add(1) {
            self.secret =
                Some(cs.derive_tree_secret(secret.as_bytes(), b"secret", j, cs.hash_len())?);
            self.next = next;
        }
        Ok(())
    }

    /// The key and nonce for decrypting a message of `generation`.
    fn get(
        &mut self,
        cs: &dyn CipherSuiteProvider,
        generation: u32,
        config: &SecretTreeConfig,
    ) -> Result<KeyNonce, SecretTreeError> {
        if generation < self.next || self.secret.is_none() {
            if let Some(pos) = self.skipped.iter().position(|k| k.generation == generation) {
                return self
                    .skipped
                    .remove(pos)
                    .ok_or(SecretTreeError::GenerationAlreadyUsed(generation));
            }
            let window_start = self.next.saturating_sub(config.out_of_order_tolerance);
            return Err(if generation >= window_start || self.secret.is_none() {
                SecretTreeError::GenerationAlreadyUsed(generation)
            } else {
                SecretTreeError::GenerationExpired(generation)
            });
        }
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
        while self.next < generation {
            if generation - self.next <= tolerance {
                let kn = self.step(cs)?;
                self.skipped.push_back(kn);
            } else {
                self.skip(cs)?;
            }
        }
        while self.skipped.len() > tolerance as usize {
            self.skipped.pop_front();
        }
        self.step(cs)
    }
}

/// A sender's two ratchets.
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

/// The secret tree of one epoch (RFC 9420 §9), rooted at the epoch's
/// `encryption_secret`.
pub struct SecretTree {
    cs: &'static dyn CipherSuiteProvider,
    n_leaves: u32,
    config: SecretTreeConfig,
    /// Derived, not yet consumed node secrets, by node index.
    nodes: HashMap<u32, Secret>,
    /// The ratchets of senders whose leaf secret was consumed.
    senders: HashMap<u32, SenderRatchets>,
}

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

    /// The number of leaves.
    pub fn n_leaves(&self) -> u32 {
        self.n_leaves
    }

    /// The out-of-order bounds.
    pub fn config(&self) -> &SecretTreeConfig {
        &self.config
    }

    /// The key and nonce for the sender at `leaf` to encrypt its next
    /// message of the given type (RFC 9420 §6.3.1).
    pub fn next_encryption_key(
        &mut self,
        leaf: LeafIndex,
        ratchet: RatchetType,
    ) -> Result<KeyNonce, SecretTreeError> {
        let cs = self.cs;
        self.sender(leaf)?.get_mut(ratchet).step(cs)
    }

    /// The key and nonce to decrypt a message of `generation` from the
    /// sender at `leaf` (RFC 9420 §6.3.2). The key is deleted from the tree
    /// when returned.
    pub fn decryption_key(
        &mut self,
        leaf: LeafIndex,
        ratchet: RatchetType,
        generation: u32,
    ) -> Result<KeyNonce, SecretTreeError> {
        let (cs, config) = (self.cs, self.config);
        self.sender(leaf)?
            .get_mut(ratchet)
            .get(cs, generation, &config)
    }

    /// The ratchets of `leaf`, deriving the path from the nearest derived
    /// ancestor down to the leaf on first use.
    fn sender(&mut self, leaf: LeafIndex) -> Result<&mut SenderRatchets, SecretTreeError> {
        if leaf.0 >= self.n_leaves {
            return Err(SecretTreeError::LeafOutOfRange {
                leaf: leaf.0,
                n_leaves: self.n_leaves,
            });
        }
        if !self.senders.contains_key(&leaf.0) {
            let ratchets = self.derive_sender(leaf)?;
            self.senders.insert(leaf.0, ratchets);
        }
        self.senders
            .get_mut(&leaf.0)
            .ok_or(SecretTreeError::LeafOutOfRange {
                leaf: leaf.0,
                n_leaves: self.n_leaves,
            })
    }

    fn derive_sender(&mut self, leaf: LeafIndex) -> Result<SenderRatchets, SecretTreeError> {
        let cs = self.cs;
        let target = leaf.node_index()?;
        let mut node = tree_math::root(self.n_leaves)?;
        // Walk down from the root. A node whose secret is present is
        // consumed: its children's secrets are derived and it is deleted.
        while node != target {
            if let Some(secret) = self.nodes.remove(&node.0) {
                let s = secret.as_bytes();
                let left = tree_math::left(node)?;
                let right = tree_math::right(node)?;
                self.nodes.insert(
                    left.0,
                    cs.expand_with_label(s, b"tree", b"left", cs.hash_len())?,
                );
                self.nodes.insert(
                    right.0,
                    cs.expand_with_label(s, b"tree", b"right", cs.hash_len())?,
                );
            }
            node = if target.0 < node.0 {
                tree_math::left(node)?
            } else {
                tree_math::right(node)?
            };
        }
        let leaf_secret = self
            .nodes
            .remove(&target.0)
            .ok_or(SecretTreeError::NodeSecretConsumed(target.0))?;
        let s = leaf_secret.as_bytes();
        Ok(SenderRatchets {
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
        })
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

//! The secret tree in a saved group state (see [`crate::state`]):
//!
//! ```text
//! struct {
//!     uint32 generation;
//!     opaque key<V>;
//!     opaque nonce<V>;
//! } KeptKey;
//!
//! struct {
//!     optional<opaque secret<V>>;    // absent once every generation is used
//!     uint32 next;                   // the generation the secret yields next
//!     KeptKey skipped<V>;            // keys of skipped generations, oldest first
//! } HashRatchetState;
//!
//! struct {
//!     uint32 n_leaves;
//!     uint32 max_forward_distance;
//!     uint32 out_of_order_tolerance;
//!     struct { uint32 node; opaque secret<V>; } nodes<V>;   // not yet consumed
//!     struct {
//!         uint32 leaf;
//!         HashRatchetState handshake;
//!         HashRatchetState application;
//!     } senders<V>;
//! } SecretTreeState;
//! ```
//!
//! Consumed node secrets, used keys and ratchet secrets already stepped
//! past are not in the state (RFC 9420 §9.2), so a loaded tree refuses the
//! same generations the saved one did. Lists are sorted by index.

use std::collections::{HashMap, VecDeque};

use hsmls_crypto::{CipherSuiteProvider, Secret};

use super::{HashRatchet, KeyNonce, SecretTree, SecretTreeConfig, SenderRatchets};
use crate::state::{Reader, StateError, Writer};
use crate::tree_math;

fn malformed(field: &'static str) -> StateError {
    StateError::MalformedPlaintext { field }
}

fn write_ratchet(w: &mut Writer, r: &HashRatchet) -> Result<(), StateError> {
    w.optional(r.secret.as_ref(), |w, s| w.bytes(s.as_bytes()))?;
    w.u32(r.next);
    w.list(&r.skipped, |w, k| {
        w.u32(k.generation);
        w.bytes(k.key.as_bytes())?;
        w.bytes(k.nonce.as_bytes())
    })
}

fn secret_of_len(
    r: &mut Reader<'_>,
    len: usize,
    field: &'static str,
) -> Result<Secret, StateError> {
    let bytes = r.bytes(field)?;
    if bytes.len() != len {
        return Err(malformed(field));
    }
    Ok(Secret::from_slice(bytes))
}

fn read_ratchet(
    r: &mut Reader<'_>,
    cs: &dyn CipherSuiteProvider,
) -> Result<HashRatchet, StateError> {
    let secret = r.optional("ratchet secret", |r| {
        secret_of_len(r, cs.hash_len(), "ratchet secret")
    })?;
    let next = r.u32("ratchet next generation")?;
    let skipped = r.list("skipped keys", |r| {
        Ok(KeyNonce {
            generation: r.u32("skipped generation")?,
            key: secret_of_len(r, cs.aead_key_len(), "skipped key")?,
            nonce: secret_of_len(r, cs.aead_nonce_len(), "skipped nonce")?,
        })
    })?;
    // Kept keys are of generations below `next`, oldest first.
    let ascending = skipped
        .windows(2)
        .all(|p| p[0].generation < p[1].generation);
    if !ascending || skipped.last().is_some_and(|k| k.generation >= next) {
        return Err(malformed("skipped keys"));
    }
    Ok(HashRatchet {
        secret,
        next,
        skipped: VecDeque::from(skipped),
    })
}

impl SecretTree {
    /// Writes the tree's state (see the module documentation).
    pub(crate) fn write_state(&self, w: &mut Writer) -> Result<(), StateError> {
        let SecretTree {
            cs: _,
            n_leaves,
            config:
                SecretTreeConfig {
                    max_forward_distance,
                    out_of_order_tolerance,
                },
            nodes,
            senders,
        } = self;
        w.u32(*n_leaves);
        w.u32(*max_forward_distance);
        w.u32(*out_of_order_tolerance);
        let mut node_ids: Vec<&u32> = nodes.keys().collect();
        node_ids.sort_unstable();
        w.list(node_ids, |w, x| {
            w.u32(*x);
            w.bytes(nodes.get(x).map(Secret::as_bytes).unwrap_or_default())
        })?;
        let mut leaves: Vec<&u32> = senders.keys().collect();
        leaves.sort_unstable();
        w.list(leaves, |w, leaf| {
            w.u32(*leaf);
            let Some(s) = senders.get(leaf) else {
                return Err(malformed("sender"));
            };
            write_ratchet(w, &s.handshake)?;
            write_ratchet(w, &s.application)
        })
    }

    /// Reads a tree's state written by [`SecretTree::write_state`].
    pub(crate) fn read_state(
        r: &mut Reader<'_>,
        cs: &'static dyn CipherSuiteProvider,
    ) -> Result<SecretTree, StateError> {
        let n_leaves = r.u32("secret tree leaves")?;
        if n_leaves == 0 || !n_leaves.is_power_of_two() {
            return Err(malformed("secret tree leaves"));
        }
        let width = tree_math::node_width(n_leaves);
        let config = SecretTreeConfig {
            max_forward_distance: r.u32("max_forward_distance")?,
            out_of_order_tolerance: r.u32("out_of_order_tolerance")?,
        };
        let mut nodes = HashMap::new();
        for (x, secret) in r.list("secret tree nodes", |r| {
            let x = r.u32("secret tree node")?;
            Ok((x, secret_of_len(r, cs.hash_len(), "node secret")?))
        })? {
            if u64::from(x) >= width || nodes.insert(x, secret).is_some() {
                return Err(malformed("secret tree node"));
            }
        }
        let mut senders = HashMap::new();
        for (leaf, ratchets) in r.list("senders", |r| {
            let leaf = r.u32("sender leaf")?;
            let handshake = read_ratchet(r, cs)?;
            let application = read_ratchet(r, cs)?;
            Ok((
                leaf,
                SenderRatchets {
                    handshake,
                    application,
                },
            ))
        })? {
            if leaf >= n_leaves || senders.insert(leaf, ratchets).is_some() {
                return Err(malformed("sender leaf"));
            }
        }
        Ok(SecretTree {
            cs,
            n_leaves,
            config,
            nodes,
            senders,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret_tree::RatchetType;
    use crate::tree_math::LeafIndex;

    fn cs() -> &'static dyn CipherSuiteProvider {
        hsmls_crypto::CipherSuite(2).provider().unwrap()
    }

    fn round_trip(t: &SecretTree) -> SecretTree {
        let mut w = Writer::with_capacity(0);
        t.write_state(&mut w).unwrap();
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        let back = SecretTree::read_state(&mut r, cs()).unwrap();
        r.finish("end").unwrap();
        back
    }

    #[test]
    fn a_used_tree_round_trips_and_refuses_the_same_generations() {
        let config = SecretTreeConfig::default();
        let mut sender = SecretTree::new(cs(), Secret::from_slice(&[9; 32]), 8, config).unwrap();
        let mut receiver = sender.clone();
        let keys: Vec<KeyNonce> = (0..6)
            .map(|_| {
                sender
                    .next_encryption_key(LeafIndex(3), RatchetType::Application)
                    .unwrap()
            })
            .collect();
        // The receiver gets generation 4 first (keeps 0..=3), then 1.
        for g in [4u32, 1] {
            receiver
                .decryption_key(LeafIndex(3), RatchetType::Application, g)
                .unwrap();
        }
        sender
            .next_encryption_key(LeafIndex(5), RatchetType::Handshake)
            .unwrap();
        for t in [&sender, &receiver] {
            assert!(round_trip(t) == *t);
        }
        let mut loaded = round_trip(&receiver);
        for used in [4u32, 1] {
            assert!(matches!(
                loaded.decryption_key(LeafIndex(3), RatchetType::Application, used),
                Err(crate::secret_tree::SecretTreeError::GenerationAlreadyUsed(g)) if g == used
            ));
        }
        let k = loaded
            .decryption_key(LeafIndex(3), RatchetType::Application, 5)
            .unwrap();
        assert!(k == keys[5]);
        let k = loaded
            .decryption_key(LeafIndex(3), RatchetType::Application, 2)
            .unwrap();
        assert!(k == keys[2]);
    }

    #[test]
    fn out_of_range_indices_and_lengths_are_malformed() {
        let t = SecretTree::new(
            cs(),
            Secret::from_slice(&[9; 32]),
            4,
            SecretTreeConfig::default(),
        )
        .unwrap();
        let mut w = Writer::with_capacity(0);
        t.write_state(&mut w).unwrap();
        let good = w.finish().to_vec();
        // n_leaves 3 (not a power of two).
        let mut bad = good.clone();
        bad[3] = 3;
        assert!(matches!(
            SecretTree::read_state(&mut Reader::new(&bad), cs()),
            Err(StateError::MalformedPlaintext {
                field: "secret tree leaves"
            })
        ));
        // The root node index (3) replaced by 7, outside a 4-leaf tree.
        let mut bad = good.clone();
        let pos = 12 + 1 + 3;
        assert_eq!(bad[pos], 3);
        bad[pos] = 7;
        assert!(matches!(
            SecretTree::read_state(&mut Reader::new(&bad), cs()),
            Err(StateError::MalformedPlaintext {
                field: "secret tree node"
            })
        ));
        // Every truncation is an error, never a panic.
        for len in 0..good.len() {
            assert!(matches!(
                SecretTree::read_state(&mut Reader::new(&good[..len]), cs()),
                Err(StateError::MalformedPlaintext { .. })
            ));
        }
    }
}

//! The ratchet tree and a member's private TreeKEM keys in a saved group
//! state (see [`crate::state`]):
//!
//! ```text
//! struct {
//!     uint32 n_leaves;
//!     optional<Node> nodes<V>;   // the ratchet_tree extension's form (§12.4.3.3)
//! } RatchetTreeState;
//!
//! // A tree of another epoch, as the nodes where it differs from the
//! // current tree (most of a 10,000-member tree is the same in every
//! // retained epoch).
//! struct {
//!     uint32 n_leaves;
//!     struct { uint32 node; optional<Node> value; } changed<V>;  // ascending
//! } TreeDiff;
//!
//! struct {
//!     opaque uri<V>;             // the key's custody URI (KeyRef::uri)
//!     opaque public_key<V>;
//! } CustodyKey;
//!
//! struct {
//!     uint32 own_leaf;
//!     CustodyKey leaf_key;
//!     uint8 leaf_key_shared;
//!     struct {
//!         uint32 node;
//!         opaque private_key<V>; // parent-node keys live in software (§7.4)
//!         opaque public_key<V>;
//!     } path_keys<V>;
//! } TreeKemPrivateState;
//! ```
//!
//! A loaded tree is trusted without validation (it is this client's own,
//! authenticated by the seal), but its tree hash is recomputed and must
//! equal the GroupContext's (the caller checks).

use std::sync::Arc;

use hsmls_crypto::{CipherSuiteProvider, HpkePrivateKey, Secret};
use hsmls_custody::{KeyCustody, KeyPurpose, KeyRef, PublicKey};

use super::private::TreeKemPrivate;
use super::ratchet_tree::RatchetTree;
use crate::codec::Node;
use crate::state::{Reader, StateError, Writer, lookup_error};
use crate::tree_math::{self, LeafIndex, NodeIndex};

fn malformed(field: &'static str) -> StateError {
    StateError::MalformedPlaintext { field }
}

/// The largest private key accepted (a P-521 scalar).
const MAX_PRIVATE_KEY_LEN: usize = 66;

fn check_n_leaves(n_leaves: u32) -> Result<usize, StateError> {
    if n_leaves == 0 || !n_leaves.is_power_of_two() || n_leaves > super::ratchet_tree::MAX_LEAVES {
        return Err(malformed("tree leaves"));
    }
    usize::try_from(tree_math::node_width(n_leaves)).map_err(|_| malformed("tree leaves"))
}

fn node_fits(x: usize, node: Option<&Node>) -> bool {
    match node {
        None => true,
        Some(Node::Leaf(_)) => x % 2 == 0,
        Some(Node::Parent(_)) => x % 2 == 1,
    }
}

impl RatchetTree {
    /// Writes the whole tree (see the module documentation).
    pub(crate) fn write_state(&self, w: &mut Writer) -> Result<(), StateError> {
        w.u32(self.n_leaves);
        let end = (0..self.nodes.len())
            .rev()
            .find(|&i| self.nodes.is_present(i))
            .map_or(0, |i| i + 1);
        w.list(self.nodes.iter().take(end), |w, node| {
            w.optional(node, |w, n| w.item(n))
        })
    }

    /// Reads a tree written by [`RatchetTree::write_state`].
    pub(crate) fn read_state(
        r: &mut Reader<'_>,
        provider: &'static dyn CipherSuiteProvider,
    ) -> Result<RatchetTree, StateError> {
        let n_leaves = r.u32("tree leaves")?;
        let width = check_n_leaves(n_leaves)?;
        let nodes = r.list("tree nodes", |r| r.item::<Option<Node>>("tree node"))?;
        if nodes.len() > width {
            return Err(malformed("tree nodes"));
        }
        let tree = RatchetTree::from_nodes(provider, nodes).map_err(|_| malformed("tree nodes"))?;
        if tree.n_leaves != n_leaves {
            return Err(malformed("tree leaves"));
        }
        Ok(tree)
    }

    /// Writes this tree as its differences from `base` (see the module
    /// documentation).
    pub(crate) fn write_diff(&self, base: &RatchetTree, w: &mut Writer) -> Result<(), StateError> {
        w.u32(self.n_leaves);
        let changed = (0..self.nodes.len()).filter_map(|i| {
            let mine = self.nodes.get(i);
            let same = match (mine, base.nodes.get(i)) {
                (None, None) => true,
                (Some(a), Some(b)) => std::ptr::eq(a, b) || a == b,
                _ => false,
            };
            (!same).then_some((i, mine))
        });
        w.list(changed, |w, (i, node)| {
            w.u32(u32::try_from(i).map_err(|_| malformed("changed node"))?);
            w.optional(node, |w, n| w.item(n))
        })
    }

    /// Reads a tree written by [`RatchetTree::write_diff`] against the same
    /// `base`. The result shares `base`'s unchanged nodes.
    pub(crate) fn read_diff(
        r: &mut Reader<'_>,
        base: &RatchetTree,
    ) -> Result<RatchetTree, StateError> {
        let n_leaves = r.u32("tree leaves")?;
        let width = check_n_leaves(n_leaves)?;
        let mut tree = base.clone();
        tree.n_leaves = n_leaves;
        tree.nodes.resize(width);
        let mut last: Option<u32> = None;
        for (x, node) in r.list("changed nodes", |r| {
            let x = r.u32("changed node")?;
            let node = r.optional("changed node", |r| r.item::<Node>("changed node"))?;
            Ok((x, node))
        })? {
            let i = x as usize;
            if i >= width || last.is_some_and(|l| l >= x) || !node_fits(i, node.as_ref()) {
                return Err(malformed("changed node"));
            }
            last = Some(x);
            tree.set_node(NodeIndex(x), node);
        }
        if tree.member_count() == 0 {
            return Err(malformed("changed nodes"));
        }
        Ok(tree)
    }
}

/// Writes a custody key reference.
pub(crate) fn write_key(w: &mut Writer, key: &KeyRef) -> Result<(), StateError> {
    w.bytes(key.uri().as_bytes())?;
    w.bytes(key.public_key().as_bytes())
}

/// Reads a custody key reference and, if `custody` is given, finds the key
/// there and checks its purpose and public key.
pub(crate) fn read_key(
    r: &mut Reader<'_>,
    purpose: KeyPurpose,
    custody: Option<&dyn KeyCustody>,
) -> Result<KeyRef, StateError> {
    let uri = std::str::from_utf8(r.bytes("key uri")?).map_err(|_| malformed("key uri"))?;
    let public =
        PublicKey::from_sec1(r.bytes("public key")?).map_err(|_| malformed("public key"))?;
    let Some(custody) = custody else {
        return Ok(KeyRef::new(purpose, public, uri.to_owned()));
    };
    let found = custody.find(uri).map_err(|e| lookup_error(uri, e))?;
    if found.purpose() != purpose || found.public_key() != &public {
        return Err(StateError::KeyMismatch {
            uri: uri.to_owned(),
        });
    }
    Ok(found)
}

impl TreeKemPrivate {
    /// Writes the private state (see the module documentation).
    pub(crate) fn write_state(&self, w: &mut Writer) -> Result<(), StateError> {
        w.u32(self.own_leaf().0);
        write_key(w, self.leaf_key())?;
        w.bool(self.leaf_key_is_shared());
        w.list(self.path_keys(), |w, (x, key)| {
            w.u32(x.0);
            w.bytes(key.private_bytes().as_bytes())?;
            w.bytes(key.public_key().as_bytes())
        })
    }

    /// Reads a private state written by [`TreeKemPrivate::write_state`]
    /// for `tree`: the leaf key must be the one of the member's leaf (when
    /// the leaf is in the tree), each parent key on the member's direct
    /// path and the key of that node. With `custody`, the leaf key is
    /// found there; without (a removed member, whose key is destroyed),
    /// the reference is rebuilt from the state.
    pub(crate) fn read_state(
        r: &mut Reader<'_>,
        tree: &RatchetTree,
        custody: Option<&Arc<dyn KeyCustody>>,
    ) -> Result<TreeKemPrivate, StateError> {
        let own_leaf = LeafIndex(r.u32("own leaf")?);
        let leaf_key = read_key(r, KeyPurpose::Hpke, custody.map(|c| c.as_ref()))?;
        let shared = r.bool("leaf key shared")?;
        let path_keys = r.list("path keys", |r| {
            let x = NodeIndex(r.u32("path key node")?);
            let private = r.bytes("path private key")?;
            if private.is_empty() || private.len() > MAX_PRIVATE_KEY_LEN {
                return Err(malformed("path private key"));
            }
            let private = Secret::from_slice(private);
            let public = r.bytes("path public key")?.to_vec();
            Ok((
                x,
                HpkePrivateKey::from_parts(private, hsmls_crypto::HpkePublicKey::from_vec(public)),
            ))
        })?;
        let own = own_leaf.node_index().map_err(|_| malformed("own leaf"))?;
        if own_leaf.0 >= tree.leaf_count() {
            return Err(malformed("own leaf"));
        }
        if let Some(leaf) = tree.leaf(own_leaf)
            && leaf.encryption_key.as_slice() != leaf_key.public_key().as_bytes()
        {
            return Err(StateError::KeyMismatch {
                uri: leaf_key.uri().to_owned(),
            });
        }
        let direct_path =
            tree_math::direct_path(own, tree.leaf_count()).map_err(|_| malformed("own leaf"))?;
        for (i, (x, key)) in path_keys.iter().enumerate() {
            let on_path = direct_path.contains(x);
            let matches = tree
                .parent_node(*x)
                .is_some_and(|p| p.encryption_key.as_slice() == key.public_key().as_bytes());
            let unique = !path_keys[..i].iter().any(|(y, _)| y == x);
            if !on_path || !matches || !unique {
                return Err(malformed("path key node"));
            }
        }
        let mut private = TreeKemPrivate::with_path_keys(own_leaf, leaf_key, path_keys);
        if shared {
            private.mark_leaf_key_shared();
        }
        Ok(private)
    }
}

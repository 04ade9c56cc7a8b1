//! A member's private TreeKEM state (RFC 9420 §7.4, §9.2, §12.4.3.1).

use std::fmt;

use hsmls_crypto::{CipherSuiteProvider, HpkePrivateKey};
use hsmls_custody::{KeyCustody, KeyRef};

use super::TreeError;
use super::ratchet_tree::RatchetTree;
use crate::tree_math::{self, LeafIndex, NodeIndex};

/// The private keys a member holds for the ratchet tree: its leaf HPKE key
/// (a [`KeyRef`] in a [`KeyCustody`], possibly inside a token) and the
/// private keys of the parent nodes on its direct path (derived from path
/// secrets in software, zeroized on drop, never printed).
///
/// Processing or creating a commit never changes a `TreeKemPrivate`; it
/// produces a new one. When the group engine merges the commit it calls
/// [`TreeKemPrivate::retire`] on the old state to destroy the leaf key that
/// was replaced (§9.2); when it discards a staged commit it calls `retire`
/// on the staged state to destroy the fresh key.
///
/// A leaf key marked shared ([`TreeKemPrivate::mark_leaf_key_shared`], the
/// key of a last-resort KeyPackage joined into several groups) is never
/// destroyed by the group: its owner destroys it with the KeyPackageBundle.
#[derive(Clone)]
pub struct TreeKemPrivate {
    own_leaf: LeafIndex,
    leaf_key: KeyRef,
    /// `leaf_key` is shared with other groups (a last-resort KeyPackage's
    /// leaf key): the group must not destroy it.
    leaf_key_shared: bool,
    /// Parent-node keys, at most one per node of the direct path.
    path_keys: Vec<(NodeIndex, HpkePrivateKey)>,
}

impl fmt::Debug for TreeKemPrivate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TreeKemPrivate")
            .field("own_leaf", &self.own_leaf)
            .field("leaf_key", &self.leaf_key)
            .field("leaf_key_shared", &self.leaf_key_shared)
            .field(
                "path_key_nodes",
                &self.path_keys.iter().map(|(x, _)| x.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl TreeKemPrivate {
    /// The state of the member at `own_leaf` whose leaf HPKE private key is
    /// `leaf_key`: the key of its LeafNode's `encryption_key` (for a group
    /// creator or a joiner, the one of its KeyPackage's LeafNode).
    pub fn new(own_leaf: LeafIndex, leaf_key: KeyRef) -> Self {
        TreeKemPrivate {
            own_leaf,
            leaf_key,
            leaf_key_shared: false,
            path_keys: Vec::new(),
        }
    }

    /// Marks the current leaf key as shared with other groups (the leaf
    /// key of a last-resort KeyPackage, RFC 9420 §16.8): [`Self::retire`]
    /// and [`Self::destroy_leaf_key`] leave it in custody. The mark goes
    /// with the key: a state with a new leaf key is unmarked.
    pub fn mark_leaf_key_shared(&mut self) {
        self.leaf_key_shared = true;
    }

    /// Whether the current leaf key is shared with other groups.
    pub fn leaf_key_is_shared(&self) -> bool {
        self.leaf_key_shared
    }

    /// The same leaf key (and its shared mark) with parent keys `path_keys`.
    pub(super) fn with_parent_keys(&self, path_keys: Vec<(NodeIndex, HpkePrivateKey)>) -> Self {
        TreeKemPrivate {
            own_leaf: self.own_leaf,
            leaf_key: self.leaf_key.clone(),
            leaf_key_shared: self.leaf_key_shared,
            path_keys,
        }
    }

    pub(super) fn with_path_keys(
        own_leaf: LeafIndex,
        leaf_key: KeyRef,
        path_keys: Vec<(NodeIndex, HpkePrivateKey)>,
    ) -> Self {
        TreeKemPrivate {
            own_leaf,
            leaf_key,
            leaf_key_shared: false,
            path_keys,
        }
    }

    /// This member's leaf index.
    pub fn own_leaf(&self) -> LeafIndex {
        self.own_leaf
    }

    /// This member's leaf HPKE key.
    pub fn leaf_key(&self) -> &KeyRef {
        &self.leaf_key
    }

    /// The private key of parent node `x`, if held.
    pub fn parent_key(&self, x: NodeIndex) -> Option<&HpkePrivateKey> {
        self.path_keys.iter().find(|(n, _)| *n == x).map(|(_, k)| k)
    }

    /// The parent nodes whose private keys are held.
    pub fn parent_key_nodes(&self) -> impl Iterator<Item = NodeIndex> + '_ {
        self.path_keys.iter().map(|(x, _)| *x)
    }

    pub(super) fn path_keys(&self) -> &[(NodeIndex, HpkePrivateKey)] {
        &self.path_keys
    }

    /// Derives the key pair of node `x` from its path secret
    /// (`node_secret = DeriveSecret(path_secret, "node")`, §7.4), checks
    /// that its public key is the one in the tree, and stores it.
    pub fn set_path_secret(
        &mut self,
        tree: &RatchetTree,
        x: NodeIndex,
        path_secret: &[u8],
    ) -> Result<(), TreeError> {
        let own = self.own_leaf.node_index()?;
        if !tree_math::direct_path(own, tree.leaf_count())?.contains(&x) {
            return Err(TreeError::NotOnDirectPath(x));
        }
        let key = derive_node_key(tree.provider(), path_secret)?;
        let public = tree.parent_node(x).ok_or(TreeError::NotOnDirectPath(x))?;
        if public.encryption_key.as_slice() != key.public_key().as_bytes() {
            return Err(TreeError::PublicKeyMismatch(x));
        }
        self.path_keys.retain(|(n, _)| *n != x);
        self.path_keys.push((x, key));
        Ok(())
    }

    /// Joining from a Welcome (§12.4.3.1): `path_secret` is the one for
    /// node `x`, the lowest common ancestor of this member and the
    /// committer. Derives the keys of `x` and of every non-blank node above
    /// it (the rest of the committer's filtered direct path,
    /// `path_secret[n+1] = DeriveSecret(path_secret[n], "path")`), checking
    /// each against the tree.
    pub fn join_at(
        &mut self,
        tree: &RatchetTree,
        x: NodeIndex,
        path_secret: &[u8],
    ) -> Result<(), TreeError> {
        let own = self.own_leaf.node_index()?;
        let dp = tree_math::direct_path(own, tree.leaf_count())?;
        let start = dp
            .iter()
            .position(|n| *n == x)
            .ok_or(TreeError::NotOnDirectPath(x))?;
        let provider = tree.provider();
        let mut staged = self.clone();
        let mut secret = hsmls_crypto::Secret::from_slice(path_secret);
        let mut first = true;
        for &n in &dp[start..] {
            if tree.parent_node(n).is_none() {
                if first {
                    return Err(TreeError::NotOnDirectPath(n));
                }
                continue;
            }
            if !first {
                secret = provider.derive_secret(secret.as_bytes(), b"path")?;
            }
            first = false;
            staged.set_path_secret(tree, n, secret.as_bytes())?;
        }
        *self = staged;
        Ok(())
    }

    /// Drops the keys of parent nodes that are now blank or hold another
    /// public key (e.g. after Update or Remove proposals blanked them).
    pub fn prune(&mut self, tree: &RatchetTree) {
        self.path_keys.retain(|(x, k)| {
            tree.parent_node(*x)
                .is_some_and(|p| p.encryption_key.as_slice() == k.public_key().as_bytes())
        });
    }

    /// Replaces the leaf key (this member's own Update proposal was
    /// committed) and drops the parent keys of its direct path, which the
    /// Update blanked. Returns the old leaf key, to destroy at merge time.
    pub fn replace_leaf_key(&mut self, leaf_key: KeyRef) -> KeyRef {
        self.path_keys.clear();
        self.leaf_key_shared = false;
        std::mem::replace(&mut self.leaf_key, leaf_key)
    }

    /// Destroys, in `custody`, this state's leaf key unless `kept` still
    /// uses it (§9.2): call `old.retire(&new, ..)` when merging a commit,
    /// `staged.retire(&current, ..)` when discarding one. Parent keys are
    /// software keys and are zeroized when `self` drops. A shared leaf key
    /// is left in custody.
    pub fn retire(self, kept: &TreeKemPrivate, custody: &dyn KeyCustody) -> Result<(), TreeError> {
        if self.leaf_key != kept.leaf_key && !self.leaf_key_shared {
            custody.destroy(&self.leaf_key)?;
        }
        Ok(())
    }

    /// Destroys the leaf key in `custody` (the member left the group or
    /// the group is dropped), unless it is shared with other groups.
    pub fn destroy_leaf_key(&self, custody: &dyn KeyCustody) -> Result<(), TreeError> {
        if !self.leaf_key_shared {
            custody.destroy(&self.leaf_key)?;
        }
        Ok(())
    }
}

/// `DeriveKeyPair(DeriveSecret(path_secret, "node"))` (§7.4).
pub(super) fn derive_node_key(
    provider: &dyn CipherSuiteProvider,
    path_secret: &[u8],
) -> Result<HpkePrivateKey, TreeError> {
    let node_secret = provider.derive_secret(path_secret, b"node")?;
    Ok(provider.kem_derive_key_pair(node_secret.as_bytes())?)
}

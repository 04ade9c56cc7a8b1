//! TreeKEM: creating and processing UpdatePaths (RFC 9420 §7.4–§7.6, §7.9).

use std::fmt;

use hsmls_crypto::{CipherSuiteProvider, HpkePrivateKey, HpkeRecipient, Secret};
use hsmls_custody::{KeyCustody, KeyRef};
use rand_core::{OsRng, RngCore};

use super::private::{TreeKemPrivate, derive_node_key};
use super::ratchet_tree::{RatchetTree, in_subtree};
use super::validation::{GroupParams, LeafNodeUsage, validate_leaf_node};
use super::{KeyKind, MergeMismatch, TreeError, hashes};
use crate::codec::{
    Capabilities, Credential, Extension, HpkeCiphertext, HpkeCiphertexts, HpkePublicKey, LeafNode,
    LeafNodeSource, Node, ParentNode, SignaturePublicKey, UpdatePath, UpdatePathNode,
};
use crate::tree_math::{self, LeafIndex, NodeIndex};

/// The HPKE label of path secret encryption (§7.6).
const UPDATE_PATH_NODE: &[u8] = b"UpdatePathNode";

/// From this many HPKE seals on, UpdatePath encryption uses several
/// threads.
const PARALLEL_SEALS: usize = 64;

/// The fields of a member's new LeafNode that the member chooses (§7.2);
/// the keys, source and signature are filled in when it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafNodeParams {
    /// `credential`
    pub credential: Credential,
    /// `capabilities`
    pub capabilities: Capabilities,
    /// `extensions`
    pub extensions: Vec<Extension>,
}

impl LeafNodeParams {
    /// The chosen fields of an existing LeafNode (to keep them unchanged).
    pub fn from_leaf(leaf: &LeafNode) -> Self {
        LeafNodeParams {
            credential: leaf.credential.clone(),
            capabilities: leaf.capabilities.clone(),
            extensions: leaf.extensions.clone(),
        }
    }
}

/// Builds and signs a LeafNode (§7.2): `SignWithLabel(signature_key,
/// "LeafNodeTBS", LeafNodeTBS)` through `custody`. `group` is the group id
/// and leaf index, required for `update` and `commit` sources and absent
/// for `key_package`.
pub fn sign_leaf_node(
    provider: &dyn CipherSuiteProvider,
    custody: &dyn KeyCustody,
    signature_key: &KeyRef,
    encryption_key: HpkePublicKey,
    params: &LeafNodeParams,
    source: LeafNodeSource,
    group: Option<(&[u8], LeafIndex)>,
) -> Result<LeafNode, TreeError> {
    let mut leaf = LeafNode {
        encryption_key,
        signature_key: SignaturePublicKey(signature_key.public_key().as_bytes().to_vec()),
        credential: params.credential.clone(),
        capabilities: params.capabilities.clone(),
        leaf_node_source: source,
        extensions: params.extensions.clone(),
        signature: Vec::new(),
    };
    let tbs = leaf.to_be_signed(group)?;
    leaf.signature = provider.sign_with_label(custody, signature_key, b"LeafNodeTBS", &tbs)?;
    Ok(leaf)
}

/// One node of the filtered direct path with its new key material.
struct PathNodeSecret {
    node: NodeIndex,
    copath_child: NodeIndex,
    path_secret: Secret,
    key: HpkePrivateKey,
}

/// Phase 1 of UpdatePath creation, already applied to the tree: the new
/// leaf key (in custody), path secrets and parent-node keys, parent hashes
/// and the signed LeafNode. Finish with [`PreparedUpdatePath::encrypt`]
/// once the provisional GroupContext (with the new tree hash) is known, or
/// [`PreparedUpdatePath::discard`] it.
pub struct PreparedUpdatePath {
    sender: LeafIndex,
    leaf_node: LeafNode,
    leaf_key: KeyRef,
    path: Vec<PathNodeSecret>,
    commit_secret: Secret,
}

impl fmt::Debug for PreparedUpdatePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedUpdatePath")
            .field("sender", &self.sender)
            .field("leaf_key", &self.leaf_key)
            .field(
                "filtered_direct_path",
                &self.path.iter().map(|p| p.node.0).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A created UpdatePath (§7.5, §7.6) with what the committer needs next.
pub struct CreatedUpdatePath {
    /// The UpdatePath for the Commit's `path` field.
    pub update_path: UpdatePath,
    /// `commit_secret = path_secret[n+1]` (§12.4.1).
    pub commit_secret: Secret,
    /// The committer's private state after the commit; merge it with
    /// [`TreeKemPrivate::retire`] on the old state.
    pub private: TreeKemPrivate,
    path_secrets: Vec<(NodeIndex, Secret)>,
}

impl fmt::Debug for CreatedUpdatePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedUpdatePath")
            .field("update_path_nodes", &self.update_path.nodes.len())
            .field("private", &self.private)
            .finish_non_exhaustive()
    }
}

impl CreatedUpdatePath {
    /// The path secret of each node of the committer's filtered direct
    /// path, bottom up.
    pub fn path_secrets(&self) -> &[(NodeIndex, Secret)] {
        &self.path_secrets
    }

    /// The path secret for the GroupSecrets of the new member at `joiner`:
    /// that of the lowest common ancestor of the committer and the joiner
    /// (§12.4.3.1). `None` if `joiner` is the committer or outside the path.
    pub fn path_secret_for(&self, joiner: LeafIndex) -> Option<&Secret> {
        let sender = self.private.own_leaf().node_index().ok()?;
        let j = joiner.node_index().ok()?;
        if j == sender {
            return None;
        }
        let lca = tree_math::common_ancestor(sender, j);
        self.path_secrets
            .iter()
            .find(|(x, _)| *x == lca)
            .map(|(_, s)| s)
    }
}

fn random_secret(len: usize) -> Secret {
    let mut s = Secret::zero(len);
    OsRng.fill_bytes(s.as_mut_bytes());
    s
}

/// Parent hashes along a filtered direct path, top down (§7.9): given the
/// new public keys `keys[i]` of the nodes `path[i] = (node, copath_child)`
/// (bottom up), returns for each node its `parent_hash` field, and the
/// parent hash the leaf must carry.
fn path_parent_hashes(
    tree: &mut RatchetTree,
    path: &[(NodeIndex, NodeIndex)],
    keys: &[&HpkePublicKey],
) -> Result<(Vec<Vec<u8>>, Vec<u8>), TreeError> {
    let provider = tree.provider();
    let mut fields = vec![Vec::new(); path.len()];
    let mut above: Vec<u8> = Vec::new();
    for i in (0..path.len()).rev() {
        let (_, s) = path[i];
        let key = keys
            .get(i)
            .ok_or(TreeError::StaleMerge(MergeMismatch::KeyCount))?;
        fields[i] = above.clone();
        let sibling_hash = tree.node_tree_hash(s)?;
        above = hashes::parent_hash(provider, key, &fields[i], &sibling_hash)?.to_vec();
    }
    Ok((fields, above))
}

/// Phase 1 of UpdatePath creation (§7.4, §7.5, §7.9), applied to `tree`
/// (use a staged copy): blanks the sender's direct path, generates the new
/// leaf HPKE key through `custody` (`KeyCustody::generate`, so it can live
/// in a token), draws `path_secret[0]`, derives the path secrets and
/// parent-node key pairs (in software) along the filtered direct path,
/// computes the parent hashes, signs the new LeafNode (source `commit`) with
/// `signature_key` through `custody`, and sets the new nodes in the tree.
///
/// Then compute the tree hash and the provisional GroupContext and call
/// [`PreparedUpdatePath::encrypt`].
pub fn prepare_update_path(
    tree: &mut RatchetTree,
    sender: LeafIndex,
    group_id: &[u8],
    params: &LeafNodeParams,
    custody: &dyn KeyCustody,
    signature_key: &KeyRef,
) -> Result<PreparedUpdatePath, TreeError> {
    let provider = tree.provider();
    let leaf_x = tree.check_member(sender)?;
    let fdp = tree.filtered_direct_path_with_copath(sender)?;
    let direct_path = tree_math::direct_path(leaf_x, tree.leaf_count())?;

    // Path secrets and node keys (software).
    let mut path = Vec::with_capacity(fdp.len());
    let mut secret = random_secret(provider.hash_len());
    for &(node, copath_child) in &fdp {
        let key = derive_node_key(provider, secret.as_bytes())?;
        let next = provider.derive_secret(secret.as_bytes(), b"path")?;
        path.push(PathNodeSecret {
            node,
            copath_child,
            path_secret: std::mem::replace(&mut secret, next),
            key,
        });
    }
    let commit_secret = secret;

    let public_keys: Vec<HpkePublicKey> = path
        .iter()
        .map(|p| HpkePublicKey(p.key.public_key().as_bytes().to_vec()))
        .collect();
    let key_refs: Vec<&HpkePublicKey> = public_keys.iter().collect();
    let (fields, leaf_parent_hash) = path_parent_hashes(tree, &fdp, &key_refs)?;

    // The leaf key in custody; destroyed again if anything below fails.
    let leaf_key = custody.generate(provider.hpke_key_spec())?;
    let leaf_node = match sign_leaf_node(
        provider,
        custody,
        signature_key,
        HpkePublicKey(leaf_key.public_key().as_bytes().to_vec()),
        params,
        LeafNodeSource::Commit(leaf_parent_hash),
        Some((group_id, sender)),
    ) {
        Ok(l) => l,
        Err(e) => {
            let _ = custody.destroy(&leaf_key);
            return Err(e);
        }
    };

    // Apply (infallible from here on).
    for p in direct_path {
        tree.set_node(p, None);
    }
    for ((p, key), field) in path.iter().zip(public_keys).zip(fields) {
        tree.set_node(
            p.node,
            Some(Node::Parent(ParentNode {
                encryption_key: key,
                parent_hash: field,
                unmerged_leaves: Vec::new(),
            })),
        );
    }
    tree.set_node(leaf_x, Some(Node::Leaf(leaf_node.clone())));

    Ok(PreparedUpdatePath {
        sender,
        leaf_node,
        leaf_key,
        path,
        commit_secret,
    })
}

impl PreparedUpdatePath {
    /// The committer's new LeafNode (already in the tree).
    pub fn leaf_node(&self) -> &LeafNode {
        &self.leaf_node
    }

    /// The new leaf HPKE key in custody.
    pub fn leaf_key(&self) -> &KeyRef {
        &self.leaf_key
    }

    /// Destroys the fresh leaf key: the commit is abandoned.
    pub fn discard(self, custody: &dyn KeyCustody) -> Result<(), TreeError> {
        custody.destroy(&self.leaf_key)?;
        Ok(())
    }

    /// Phase 2 of UpdatePath creation (§7.6): encrypts each path secret,
    /// `EncryptWithLabel(pk, "UpdatePathNode", group_context, path_secret)`,
    /// to every node of the resolution of the node's copath child, leaving
    /// out the leaves in `added` (added by this Commit). `group_context` is
    /// the encoded provisional GroupContext; `tree` is the tree phase 1 was
    /// applied to (with the Commit's proposals).
    pub fn encrypt(
        self,
        tree: &RatchetTree,
        group_context: &[u8],
        added: &[LeafIndex],
    ) -> Result<CreatedUpdatePath, TreeError> {
        let provider = tree.provider();
        // Every (path node, recipient key) pair; the seals are independent,
        // so large batches (a first commit in a fresh group encrypts to
        // about N leaves) are spread over the available cores.
        let mut jobs: Vec<(usize, &[u8])> = Vec::new();
        for (k, p) in self.path.iter().enumerate() {
            for r in tree.resolution_excluding(p.copath_child, added)? {
                let pk = tree
                    .encryption_key(r)
                    .ok_or(TreeError::StaleMerge(MergeMismatch::BlankInResolution))?;
                jobs.push((k, pk.as_slice()));
            }
        }
        let seal = |&(k, pk): &(usize, &[u8])| -> Result<HpkeCiphertext, TreeError> {
            let secret = self
                .path
                .get(k)
                .map(|p| p.path_secret.as_bytes())
                .ok_or(TreeError::StaleMerge(MergeMismatch::PathIndex))?;
            let (kem_output, ciphertext) =
                provider.encrypt_with_label(pk, UPDATE_PATH_NODE, group_context, secret, None)?;
            Ok(HpkeCiphertext {
                kem_output,
                ciphertext,
            })
        };
        let sealed = crate::parallel::map(&jobs, PARALLEL_SEALS, seal)?;
        let mut nodes: Vec<UpdatePathNode> = self
            .path
            .iter()
            .map(|p| UpdatePathNode {
                encryption_key: HpkePublicKey(p.key.public_key().as_bytes().to_vec()),
                encrypted_path_secret: HpkeCiphertexts::new(),
            })
            .collect();
        for ((k, _), ct) in jobs.iter().zip(sealed) {
            if let Some(n) = nodes.get_mut(*k) {
                n.encrypted_path_secret.push(&ct?)?;
            }
        }
        let mut path_secrets = Vec::with_capacity(self.path.len());
        let mut path_keys = Vec::with_capacity(self.path.len());
        for p in self.path {
            path_secrets.push((p.node, p.path_secret));
            path_keys.push((p.node, p.key));
        }
        Ok(CreatedUpdatePath {
            update_path: UpdatePath {
                leaf_node: self.leaf_node,
                nodes,
            },
            commit_secret: self.commit_secret,
            private: TreeKemPrivate::with_path_keys(self.sender, self.leaf_key, path_keys),
            path_secrets,
        })
    }
}

/// The result of [`merge_update_path`]: what [`decrypt_update_path`] needs.
#[derive(Debug, Clone)]
pub struct MergedUpdatePath {
    sender: LeafIndex,
    /// The sender's filtered direct path, bottom up, with copath children.
    path: Vec<(NodeIndex, NodeIndex)>,
    added: Vec<LeafIndex>,
}

impl MergedUpdatePath {
    /// The committer.
    pub fn sender(&self) -> LeafIndex {
        self.sender
    }

    /// The committer's filtered direct path (bottom up).
    pub fn filtered_direct_path(&self) -> impl Iterator<Item = NodeIndex> + '_ {
        self.path.iter().map(|(p, _)| *p)
    }
}

/// Phase 1 of UpdatePath processing (§7.5 "merges UpdatePath into the
/// tree", §7.9.2): validates the UpdatePath's LeafNode (§7.3 with source
/// `commit`, its signature with the group id and `sender`, unique keys
/// against the tree), checks that there is one UpdatePathNode per node of
/// the sender's filtered direct path and one ciphertext per node of each
/// copath child's resolution without the leaves in `added` (§7.6), computes
/// the parent hashes and checks the leaf's `parent_hash`; only then blanks
/// the sender's direct path and sets the new nodes. On error `tree` is
/// unchanged.
///
/// `tree` is the tree with the Commit's proposals applied. Next compute the
/// tree hash and provisional GroupContext and call [`decrypt_update_path`].
pub fn merge_update_path(
    tree: &mut RatchetTree,
    sender: LeafIndex,
    update_path: &UpdatePath,
    params: &GroupParams<'_>,
    added: &[LeafIndex],
) -> Result<MergedUpdatePath, TreeError> {
    merge(tree, sender, update_path, params, added).inspect_err(|e| {
        tracing::debug!(sender = sender.0, error = %e, "UpdatePath rejected");
    })
}

fn merge(
    tree: &mut RatchetTree,
    sender: LeafIndex,
    update_path: &UpdatePath,
    params: &GroupParams<'_>,
    added: &[LeafIndex],
) -> Result<MergedUpdatePath, TreeError> {
    let provider = tree.provider();
    let leaf_x = tree.check_member(sender)?;
    let leaf = &update_path.leaf_node;
    validate_leaf_node(provider, leaf, LeafNodeUsage::Commit(sender), params)?;
    tree.check_leaves_fit(&[(Some(sender), leaf)])?;

    let fdp = tree.filtered_direct_path_with_copath(sender)?;
    if fdp.len() != update_path.nodes.len() {
        return Err(TreeError::UpdatePathLength {
            expected: fdp.len(),
            actual: update_path.nodes.len(),
        });
    }
    for (&(node, s), upn) in fdp.iter().zip(&update_path.nodes) {
        provider
            .validate_hpke_public_key(upn.encryption_key.as_slice())
            .map_err(|_| TreeError::InvalidPathKey(node))?;
        let expected = tree.resolution_len(s, added);
        if upn.encrypted_path_secret.len() != expected {
            return Err(TreeError::UpdatePathCiphertextCount {
                node,
                expected,
                actual: upn.encrypted_path_secret.len(),
            });
        }
    }
    check_path_keys_unique(tree, leaf_x, update_path)?;
    let keys: Vec<&HpkePublicKey> = update_path
        .nodes
        .iter()
        .map(|n| &n.encryption_key)
        .collect();
    let (fields, leaf_parent_hash) = path_parent_hashes(tree, &fdp, &keys)?;
    match &leaf.leaf_node_source {
        LeafNodeSource::Commit(ph) if *ph == leaf_parent_hash => {}
        _ => return Err(TreeError::UpdatePathParentHashMismatch),
    }
    let direct_path = tree_math::direct_path(leaf_x, tree.leaf_count())?;

    // Apply (infallible from here on).
    for p in direct_path {
        tree.set_node(p, None);
    }
    for ((&(node, _), upn), field) in fdp.iter().zip(&update_path.nodes).zip(fields) {
        tree.set_node(
            node,
            Some(Node::Parent(ParentNode {
                encryption_key: upn.encryption_key.clone(),
                parent_hash: field,
                unmerged_leaves: Vec::new(),
            })),
        );
    }
    tree.set_node(leaf_x, Some(Node::Leaf(leaf.clone())));
    Ok(MergedUpdatePath {
        sender,
        path: fdp,
        added: added.to_vec(),
    })
}

/// The UpdatePath's parent-node keys are distinct from each other, from the
/// new leaf key and from every node that stays in the tree (§12.4.3.1
/// requires it of every tree a joiner receives; checking on merge keeps a
/// committer from planting duplicates). One pass over the key index.
fn check_path_keys_unique(
    tree: &RatchetTree,
    leaf_x: NodeIndex,
    update_path: &UpdatePath,
) -> Result<(), TreeError> {
    let nodes = &update_path.nodes;
    for (k, n) in nodes.iter().enumerate() {
        let dup = nodes[..k]
            .iter()
            .any(|m| m.encryption_key == n.encryption_key)
            || n.encryption_key == update_path.leaf_node.encryption_key;
        if dup {
            return Err(TreeError::DuplicateKey {
                kind: KeyKind::EncryptionKey,
                node: leaf_x,
            });
        }
    }
    let keys: Vec<&[u8]> = nodes.iter().map(|n| n.encryption_key.as_slice()).collect();
    let replaced = tree_math::direct_path(leaf_x, tree.leaf_count())?;
    for x in tree.nodes_with_any_encryption_key(&keys) {
        if x != leaf_x && !replaced.contains(&x) {
            return Err(TreeError::DuplicateKey {
                kind: KeyKind::EncryptionKey,
                node: x,
            });
        }
    }
    Ok(())
}

/// The result of [`decrypt_update_path`].
pub struct ProcessedUpdatePath {
    /// `commit_secret = path_secret[n+1]` (§12.4.2).
    pub commit_secret: Secret,
    /// This member's private state after the commit; merge it with
    /// [`TreeKemPrivate::retire`] on the old state.
    pub private: TreeKemPrivate,
    /// The node whose path secret was decrypted: the lowest common ancestor
    /// of this member and the committer.
    pub decrypted_node: NodeIndex,
    /// The path secret decrypted for `decrypted_node`.
    pub path_secret: Secret,
}

impl fmt::Debug for ProcessedUpdatePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessedUpdatePath")
            .field("private", &self.private)
            .field("decrypted_node", &self.decrypted_node)
            .finish_non_exhaustive()
    }
}

/// Phase 2 of UpdatePath processing (§7.5 "decrypts the path secrets"):
/// finds the copath child's resolution node this member holds a key for (its
/// leaf key, used through `custody`, or a parent-node key in software),
/// `DecryptWithLabel(key, "UpdatePathNode", group_context, ..)`, derives the
/// path secrets and key pairs of the rest of the sender's filtered direct
/// path, checks each public key against the UpdatePath, and returns the
/// commit secret and the new private state. Changes nothing.
///
/// `tree` is the tree after [`merge_update_path`]; `group_context` is the
/// encoded provisional GroupContext.
pub fn decrypt_update_path(
    tree: &RatchetTree,
    merged: &MergedUpdatePath,
    update_path: &UpdatePath,
    private: &TreeKemPrivate,
    custody: &dyn KeyCustody,
    group_context: &[u8],
) -> Result<ProcessedUpdatePath, TreeError> {
    decrypt(tree, merged, update_path, private, custody, group_context).inspect_err(|e| {
        tracing::debug!(sender = merged.sender.0, error = %e, "UpdatePath decryption failed");
    })
}

fn decrypt(
    tree: &RatchetTree,
    merged: &MergedUpdatePath,
    update_path: &UpdatePath,
    private: &TreeKemPrivate,
    custody: &dyn KeyCustody,
    group_context: &[u8],
) -> Result<ProcessedUpdatePath, TreeError> {
    let provider = tree.provider();
    if private.own_leaf() == merged.sender {
        return Err(TreeError::OwnUpdatePath);
    }
    if merged.path.len() != update_path.nodes.len() {
        return Err(TreeError::StaleMerge(MergeMismatch::PathLength));
    }
    let own = private.own_leaf().node_index()?;
    // The lowest node of the filtered direct path whose copath child holds
    // this member.
    let start = merged
        .path
        .iter()
        .position(|&(_, s)| in_subtree(s, own))
        .ok_or(TreeError::NoDecryptionKey)?;
    let (node, s) = merged.path[start];
    // This member's keys in the copath subtree: its leaf and the parent
    // nodes it holds keys for; exactly one of them is in the resolution.
    let mut found = None;
    let leaf_matches = tree
        .encryption_key(own)
        .is_some_and(|pk| pk.as_slice() == private.leaf_key().public_key().as_bytes());
    if leaf_matches && let Some(k) = tree.resolution_position(s, &merged.added, own) {
        found = Some((
            k,
            HpkeRecipient::Custody {
                custody,
                key: private.leaf_key(),
            },
        ));
    }
    if found.is_none() {
        for (x, key) in private.path_keys() {
            let matches = tree
                .encryption_key(*x)
                .is_some_and(|pk| pk.as_slice() == key.public_key().as_bytes());
            if matches && let Some(k) = tree.resolution_position(s, &merged.added, *x) {
                found = Some((k, HpkeRecipient::Software(key)));
                break;
            }
        }
    }
    let (k, recipient) = found.ok_or(TreeError::NoDecryptionKey)?;
    let ct = update_path
        .nodes
        .get(start)
        .and_then(|n| n.encrypted_path_secret.get(k))
        .ok_or_else(|| TreeError::UpdatePathCiphertextCount {
            node,
            expected: tree.resolution_len(s, &merged.added),
            actual: update_path
                .nodes
                .get(start)
                .map_or(0, |n| n.encrypted_path_secret.len()),
        })?;
    let plaintext = provider.decrypt_with_label(
        &recipient,
        UPDATE_PATH_NODE,
        group_context,
        &ct.kem_output,
        &ct.ciphertext,
    )?;
    let decrypted = Secret::from_slice(&plaintext);
    drop(plaintext);

    // Derive and check the keys of the rest of the path.
    let mut new_keys = Vec::with_capacity(merged.path.len() - start);
    let mut secret = decrypted.clone();
    for (&(x, _), upn) in merged.path[start..].iter().zip(&update_path.nodes[start..]) {
        let key = derive_node_key(provider, secret.as_bytes())?;
        if key.public_key().as_bytes() != upn.encryption_key.as_slice() {
            return Err(TreeError::PublicKeyMismatch(x));
        }
        new_keys.push((x, key));
        secret = provider.derive_secret(secret.as_bytes(), b"path")?;
    }
    let commit_secret = secret;

    // Keep the keys of nodes the commit did not touch.
    let sender_dp = tree_math::direct_path(merged.sender.node_index()?, tree.leaf_count())?;
    let mut keys: Vec<(NodeIndex, HpkePrivateKey)> = private
        .path_keys()
        .iter()
        .filter(|(x, _)| !sender_dp.contains(x))
        .cloned()
        .collect();
    keys.extend(new_keys);
    let mut next = private.with_parent_keys(keys);
    next.prune(tree);
    Ok(ProcessedUpdatePath {
        commit_secret,
        private: next,
        decrypted_node: node,
        path_secret: decrypted,
    })
}

//! Validation of LeafNodes (RFC 9420 §7.3) and of received trees (§7.9.2,
//! §12.4.3.1).

use std::collections::HashMap;
use std::fmt;

use hsmls_crypto::CipherSuiteProvider;

use super::ratchet_tree::{RatchetTree, in_subtree};
use super::{
    CapabilityKind, KeyKind, LeafNodeError, LeafNodeSourceType, TreeError, TreeShape, hashes,
};
use crate::codec::{
    self, CipherSuite, ExtensionType, LeafNode, LeafNodeSource, Node, ProposalType,
    ProtocolVersion, RequiredCapabilities,
};
use crate::tree_math::{self, LeafIndex, NodeIndex};

/// The group parameters a LeafNode is checked against (§7.3).
#[derive(Debug, Clone, Copy)]
pub struct GroupParams<'a> {
    /// The group's `group_id` (signature context of update and commit
    /// LeafNodes).
    pub group_id: &'a [u8],
    /// The group's cipher suite: every leaf must list it.
    pub cipher_suite: CipherSuite,
    /// The group's protocol version: every leaf must list it.
    pub version: ProtocolVersion,
    /// The group's `required_capabilities` extension, if any (§11.1).
    pub required_capabilities: Option<&'a RequiredCapabilities>,
    /// The current time (seconds since the Unix epoch) for the `lifetime`
    /// check of key_package LeafNodes; `None` skips it. The engine is
    /// sans-IO: the caller reads the clock.
    pub now: Option<u64>,
    /// The longest acceptable lifetime (`not_after - not_before`, seconds)
    /// of a key_package LeafNode (§7.2: applications MUST define one);
    /// `None` accepts any.
    pub max_lifetime: Option<u64>,
}

/// Where a LeafNode appears, which fixes its required `leaf_node_source`
/// and its signature context (§7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafNodeUsage {
    /// In a KeyPackage: source `key_package`, no group context.
    KeyPackage,
    /// In an Update proposal from the member at this leaf: source `update`.
    Update(LeafIndex),
    /// In the UpdatePath of a Commit from the member at this leaf: source
    /// `commit`.
    Commit(LeafIndex),
    /// In a ratchet tree at this leaf: any source, checked accordingly.
    InTree(LeafIndex),
}

/// Extension types that need not (MUST NOT) be listed in capabilities
/// (§7.2).
fn is_default_extension(t: ExtensionType) -> bool {
    (1..=5).contains(&t.0)
}

/// Proposal types that need not be listed in capabilities (§7.2).
fn is_default_proposal(t: ProposalType) -> bool {
    (1..=7).contains(&t.0)
}

/// Validates a LeafNode on its own (§7.3): its source for `usage`, its
/// signature (LeafNodeTBS with the group id and leaf index for update and
/// commit sources), its keys, that its capabilities cover the group's cipher
/// suite (for a KeyPackage's leaf), version and required capabilities, its own credential type and
/// extensions, and the lifetime of key_package leaves when `params.now` is
/// given.
///
/// Credential validation (§5.3.1) is the application's (Authentication
/// Service's) job, and the checks against the other members (unique keys,
/// shared credential types) are [`RatchetTree::check_leaves_fit`].
pub fn validate_leaf_node(
    provider: &dyn CipherSuiteProvider,
    leaf: &LeafNode,
    usage: LeafNodeUsage,
    params: &GroupParams<'_>,
) -> Result<(), TreeError> {
    let at = match usage {
        LeafNodeUsage::KeyPackage => None,
        LeafNodeUsage::Update(i) | LeafNodeUsage::Commit(i) | LeafNodeUsage::InTree(i) => Some(i),
    };
    let err = |reason| TreeError::leaf(at, reason);
    let source = &leaf.leaf_node_source;
    let expected = match usage {
        LeafNodeUsage::KeyPackage => Some(LeafNodeSourceType::KeyPackage),
        LeafNodeUsage::Update(_) => Some(LeafNodeSourceType::Update),
        LeafNodeUsage::Commit(_) => Some(LeafNodeSourceType::Commit),
        LeafNodeUsage::InTree(_) => None,
    };
    let actual = LeafNodeSourceType::of(source);
    if let Some(expected) = expected
        && expected != actual
    {
        return Err(err(LeafNodeError::WrongSource { expected, actual }));
    }

    // Keys and signature.
    provider
        .validate_signature_public_key(leaf.signature_key.as_slice())
        .map_err(|_| err(LeafNodeError::InvalidSignatureKey))?;
    provider
        .validate_hpke_public_key(leaf.encryption_key.as_slice())
        .map_err(|_| err(LeafNodeError::InvalidEncryptionKey))?;
    let group = match source {
        LeafNodeSource::KeyPackage(_) => None,
        LeafNodeSource::Update | LeafNodeSource::Commit(_) => match at {
            Some(i) => Some((params.group_id, i)),
            None => {
                return Err(err(LeafNodeError::WrongSource {
                    expected: LeafNodeSourceType::KeyPackage,
                    actual,
                }));
            }
        },
    };
    let tbs = leaf.to_be_signed(group)?;
    provider
        .verify_with_label(
            leaf.signature_key.as_slice(),
            b"LeafNodeTBS",
            &tbs,
            &leaf.signature,
        )
        .map_err(|_| err(LeafNodeError::InvalidSignature))?;

    // Capabilities. The group's cipher suite must be listed by a
    // KeyPackage's leaf (what a joiner offers, §10.1, §12.1.1); a leaf
    // already in the group (in the tree, an Update or an UpdatePath) proves
    // the suite by its signature in it, and §7.3 does not require it listed:
    // treekem.json's suite-0x0007 leaves list suites 1–6 only.
    let caps = &leaf.capabilities;
    if usage == LeafNodeUsage::KeyPackage && !caps.cipher_suites.contains(&params.cipher_suite) {
        return Err(err(LeafNodeError::CipherSuiteNotSupported(
            params.cipher_suite.0,
        )));
    }
    if !caps.versions.contains(&params.version) {
        return Err(err(LeafNodeError::VersionNotSupported(params.version.0)));
    }
    if let Some(req) = params.required_capabilities {
        if let Some(t) = req
            .extension_types
            .iter()
            .find(|t| !is_default_extension(**t) && !caps.extensions.contains(t))
        {
            return Err(err(LeafNodeError::MissingRequiredCapability {
                kind: CapabilityKind::Extension,
                value: t.0,
            }));
        }
        if let Some(t) = req
            .proposal_types
            .iter()
            .find(|t| !is_default_proposal(**t) && !caps.proposals.contains(t))
        {
            return Err(err(LeafNodeError::MissingRequiredCapability {
                kind: CapabilityKind::Proposal,
                value: t.0,
            }));
        }
        if let Some(t) = req
            .credential_types
            .iter()
            .find(|t| !caps.credentials.contains(t))
        {
            return Err(err(LeafNodeError::MissingRequiredCapability {
                kind: CapabilityKind::Credential,
                value: t.0,
            }));
        }
    }
    let ct = leaf.credential.credential_type();
    if !caps.credentials.contains(&ct) {
        return Err(err(LeafNodeError::CredentialTypeNotInCapabilities(ct.0)));
    }
    if let Some(e) = leaf.extensions.iter().find(|e| {
        !is_default_extension(e.extension_type) && !caps.extensions.contains(&e.extension_type)
    }) {
        return Err(err(LeafNodeError::ExtensionNotInCapabilities(
            e.extension_type.0,
        )));
    }

    // Lifetime.
    if let LeafNodeSource::KeyPackage(lifetime) = source {
        if let Some(now) = params.now
            && (now < lifetime.not_before || now > lifetime.not_after)
        {
            return Err(err(LeafNodeError::OutsideLifetime {
                now,
                not_before: lifetime.not_before,
                not_after: lifetime.not_after,
            }));
        }
        if let Some(max) = params.max_lifetime
            && lifetime.not_after.saturating_sub(lifetime.not_before) > max
        {
            return Err(err(LeafNodeError::LifetimeTooLong {
                not_before: lifetime.not_before,
                not_after: lifetime.not_after,
                max,
            }));
        }
    }
    Ok(())
}

/// A ratchet tree received from the network (a `ratchet_tree` extension or
/// out of band), structurally sound but not yet validated. Only
/// [`UnverifiedTree::verify`] turns it into a [`RatchetTree`].
pub struct UnverifiedTree {
    tree: RatchetTree,
}

impl fmt::Debug for UnverifiedTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnverifiedTree")
            .field("tree", &self.tree)
            .finish()
    }
}

impl UnverifiedTree {
    /// Parses the `ratchet_tree` form (§12.4.3.3): the last node must be
    /// non-blank, leaves at even and parent nodes at odd positions; the tree
    /// is extended with blanks to a full tree.
    pub fn new(
        provider: &'static dyn CipherSuiteProvider,
        ratchet_tree: codec::RatchetTree,
    ) -> Result<Self, TreeError> {
        Ok(UnverifiedTree {
            tree: RatchetTree::from_nodes(provider, ratchet_tree.0)?,
        })
    }

    /// The unverified tree, for inspection (e.g. resolutions in tests).
    pub fn tree(&self) -> &RatchetTree {
        &self.tree
    }

    /// The tree hash of the unverified tree (§7.8).
    pub fn tree_hash(&mut self) -> Result<hsmls_crypto::Digest, TreeError> {
        self.tree.tree_hash()
    }

    /// Accepts the tree without validation. Only for trees that did not
    /// come from the network, e.g. this client's own stored state, or test
    /// vectors of tree operations whose signatures use another suite.
    pub fn trusted_without_validation(self) -> RatchetTree {
        self.tree
    }

    /// Validates the tree for joining a group (§12.4.3.1):
    ///
    /// - its tree hash equals `expected_tree_hash` (the GroupInfo's);
    /// - every non-blank parent node is parent-hash valid (§7.9.2);
    /// - every leaf is a valid LeafNode at its position (§7.3, with
    ///   [`LeafNodeUsage::InTree`]);
    /// - encryption keys are unique among all nodes, signature keys among
    ///   leaves, and every leaf supports every credential type in use;
    /// - `unmerged_leaves` are sorted, name non-blank leaves below the node,
    ///   and each appears in every non-blank node between leaf and node.
    pub fn verify(
        self,
        expected_tree_hash: &[u8],
        params: &GroupParams<'_>,
    ) -> Result<RatchetTree, TreeError> {
        self.verify_inner(expected_tree_hash, params)
            .inspect_err(|e| tracing::debug!(error = %e, "ratchet tree rejected"))
    }

    fn verify_inner(
        mut self,
        expected_tree_hash: &[u8],
        params: &GroupParams<'_>,
    ) -> Result<RatchetTree, TreeError> {
        let tree = &mut self.tree;
        if tree.tree_hash()?.as_bytes() != expected_tree_hash {
            return Err(TreeError::TreeHashMismatch);
        }
        if tree.member_count() == 0 {
            return Err(TreeError::MalformedTree(TreeShape::NoMembers));
        }
        check_unmerged_leaves(tree)?;
        check_unique_keys(tree)?;
        validate_leaves(tree, params)?;
        check_credential_types(tree)?;
        verify_parent_hashes(tree)?;
        Ok(self.tree)
    }
}

/// From this many leaves on, tree validation checks leaf signatures on
/// several threads.
const PARALLEL_LEAVES: usize = 64;

/// Validates every leaf (§7.3); the signature checks are independent and
/// spread over the available cores for large trees.
fn validate_leaves(tree: &RatchetTree, params: &GroupParams<'_>) -> Result<(), TreeError> {
    let leaves: Vec<(LeafIndex, &LeafNode)> = tree.leaves().collect();
    crate::parallel::map(&leaves, PARALLEL_LEAVES, |(i, leaf)| {
        validate_leaf_node(tree.provider, leaf, LeafNodeUsage::InTree(*i), params)
    })?
    .into_iter()
    .collect()
}

/// §12.4.3.1: `unmerged_leaves` sorted, non-blank descendants, present in
/// every non-blank node between the leaf and the parent.
fn check_unmerged_leaves(tree: &RatchetTree) -> Result<(), TreeError> {
    for (i, node) in tree.nodes.iter().enumerate() {
        let Some(Node::Parent(p)) = node else {
            continue;
        };
        let x = NodeIndex(i as u32);
        let bad = || TreeError::InvalidUnmergedLeaves(x);
        if p.unmerged_leaves.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad());
        }
        for &l in &p.unmerged_leaves {
            let ln = l.node_index().map_err(|_| bad())?;
            if tree.leaf(l).is_none() {
                return Err(bad());
            }
            let mut cur = ln;
            loop {
                cur = tree_math::parent(cur, tree.n_leaves).map_err(|_| bad())?;
                if cur == x {
                    break;
                }
                if let Some(q) = tree.parent_node(cur)
                    && q.unmerged_leaves.binary_search(&l).is_err()
                {
                    return Err(bad());
                }
            }
        }
    }
    Ok(())
}

/// §7.3, §12.4.3.1: encryption keys unique among all nodes, signature keys
/// among leaves.
fn check_unique_keys(tree: &RatchetTree) -> Result<(), TreeError> {
    let mut enc: HashMap<&[u8], ()> = HashMap::with_capacity(tree.nodes.len());
    let mut sig: HashMap<&[u8], ()> = HashMap::with_capacity(tree.nodes.len() / 2 + 1);
    for (i, node) in tree.nodes.iter().enumerate() {
        let x = NodeIndex(i as u32);
        let (e, s) = match node {
            None => continue,
            Some(Node::Leaf(l)) => (&l.encryption_key, Some(&l.signature_key)),
            Some(Node::Parent(p)) => (&p.encryption_key, None),
        };
        if enc.insert(e.as_slice(), ()).is_some() {
            return Err(TreeError::DuplicateKey {
                kind: KeyKind::EncryptionKey,
                node: x,
            });
        }
        if let Some(s) = s
            && sig.insert(s.as_slice(), ()).is_some()
        {
            return Err(TreeError::DuplicateKey {
                kind: KeyKind::SignatureKey,
                node: x,
            });
        }
    }
    Ok(())
}

/// §7.3: every member supports every credential type in use.
fn check_credential_types(tree: &RatchetTree) -> Result<(), TreeError> {
    let mut in_use = Vec::new();
    for (_, leaf) in tree.leaves() {
        let t = leaf.credential.credential_type();
        if !in_use.contains(&t) {
            in_use.push(t);
        }
    }
    for (_, leaf) in tree.leaves() {
        if let Some(t) = in_use
            .iter()
            .find(|t| !leaf.capabilities.credentials.contains(t))
        {
            return Err(TreeError::CredentialTypeNotShared(t.0));
        }
    }
    Ok(())
}

/// §7.9.2, bottom up: each non-blank node D that carries a parent hash (a
/// commit leaf or a parent node) may authenticate its lowest non-blank
/// ancestor P; every non-blank parent node must be authenticated by
/// exactly one descendant. By induction on the height, every non-blank
/// parent node is then chained back to a leaf.
fn verify_parent_hashes(tree: &RatchetTree) -> Result<(), TreeError> {
    let n = tree.n_leaves;
    let mut covered = vec![0u8; tree.nodes.len()];
    for (i, node) in tree.nodes.iter().enumerate() {
        let d = NodeIndex(i as u32);
        let ph = match node {
            Some(Node::Leaf(l)) => match &l.leaf_node_source {
                LeafNodeSource::Commit(ph) => ph,
                _ => continue,
            },
            Some(Node::Parent(p)) => &p.parent_hash,
            None => continue,
        };
        // The lowest non-blank ancestor P of D, with C its child towards D.
        let mut c = d;
        let found = loop {
            let Ok(p) = tree_math::parent(c, n) else {
                break None;
            };
            if let Some(pn) = tree.parent_node(p) {
                break Some((p, c, pn));
            }
            c = p;
        };
        let Some((p, c, pn)) = found else {
            continue;
        };
        let s = tree_math::sibling(c, n)?;
        let sibling_hash = tree.tree_hash_excluding(s, &pn.unmerged_leaves)?;
        let expected = hashes::parent_hash(
            tree.provider,
            &pn.encryption_key,
            &pn.parent_hash,
            &sibling_hash,
        )?;
        if expected.as_bytes() != ph.as_slice() {
            continue;
        }
        // D is in the resolution of C (all nodes between are blank), and
        // P.unmerged_leaves ∩ subtree(C) must equal resolution(C) \ {D}.
        let mut res = tree.resolution(c)?;
        res.retain(|r| *r != d);
        let unmerged_in_c: Vec<NodeIndex> = pn
            .unmerged_leaves
            .iter()
            .filter_map(|l| l.node_index().ok())
            .filter(|x| in_subtree(c, *x))
            .collect();
        let mut res_sorted = res;
        res_sorted.sort();
        if res_sorted != unmerged_in_c {
            continue;
        }
        if let Some(cnt) = covered.get_mut(p.0 as usize) {
            *cnt = cnt.saturating_add(1);
        }
    }
    for (i, node) in tree.nodes.iter().enumerate() {
        if matches!(node, Some(Node::Parent(_))) && covered.get(i) != Some(&1) {
            return Err(TreeError::ParentHashInvalid(NodeIndex(i as u32)));
        }
    }
    Ok(())
}

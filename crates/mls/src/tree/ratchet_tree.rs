//! The public ratchet tree (RFC 9420 §4, §7.7, §7.8, Appendix C).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use hsmls_crypto::{CipherSuiteProvider, Digest};

use super::TreeError;
use super::hashes;
use crate::codec::{self, CredentialType, LeafNode, Node, ParentNode};
use crate::tree_math::{self, LeafIndex, NodeIndex};

/// The largest number of leaves a tree may have: node indices are `u32`.
pub const MAX_LEAVES: u32 = 1 << 31;

/// The public state of a ratchet tree (RFC 9420 §4, §7), in the array
/// representation of Appendix C.
///
/// The tree is always full: it has `2^d` leaves and `2^(d+1) - 1` nodes,
/// blank nodes being `None`. Tree hashes (§7.8) are cached per node; every
/// change invalidates only the changed node and its direct path, and
/// [`RatchetTree::tree_hash`] recomputes only invalidated nodes.
///
/// `Clone` copies one pointer per node (the nodes themselves are shared and
/// copied on write), so the group engine can stage a commit on a copy and
/// drop it if the commit is rejected.
#[derive(Clone)]
pub struct RatchetTree {
    pub(super) provider: &'static dyn CipherSuiteProvider,
    pub(super) n_leaves: u32,
    pub(super) nodes: Vec<Option<Arc<Node>>>,
    /// The tree hash of each node; `None` when invalidated. Invariant: if a
    /// node's entry is `None`, so are those of all its ancestors.
    pub(super) hashes: Vec<Option<Digest>>,
}

impl fmt::Debug for RatchetTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RatchetTree")
            .field("cipher_suite", &self.provider.cipher_suite())
            .field("leaf_count", &self.n_leaves)
            .field("members", &self.member_count())
            .finish_non_exhaustive()
    }
}

impl PartialEq for RatchetTree {
    /// Trees are equal when their nodes are (the cache is not compared).
    fn eq(&self, other: &Self) -> bool {
        self.n_leaves == other.n_leaves
            && self
                .nodes
                .iter()
                .zip(&other.nodes)
                .all(|(a, b)| a.as_deref() == b.as_deref())
    }
}

impl Eq for RatchetTree {}

/// The number of nodes of the subtree rooted at `x` on each side of `x`:
/// the subtree spans the node indices `x - s ..= x + s`.
fn half_span(x: NodeIndex) -> u32 {
    (1u32 << x.level()) - 1
}

impl RatchetTree {
    /// A one-member tree holding `leaf` at leaf 0 (group creation, §11).
    pub fn new(provider: &'static dyn CipherSuiteProvider, leaf: LeafNode) -> Self {
        RatchetTree {
            provider,
            n_leaves: 1,
            nodes: vec![Some(Arc::new(Node::Leaf(leaf)))],
            hashes: vec![None],
        }
    }

    /// Builds a tree from array-ordered nodes without any validation beyond
    /// the structure: at least one node, the last node non-blank, leaves at
    /// even and parents at odd indices. The array is extended with blanks to
    /// a full tree (§12.4.3.3).
    pub(super) fn from_nodes(
        provider: &'static dyn CipherSuiteProvider,
        nodes: Vec<Option<Node>>,
    ) -> Result<Self, TreeError> {
        match nodes.last() {
            None => return Err(TreeError::MalformedTree("the tree has no nodes")),
            Some(None) => return Err(TreeError::MalformedTree("the last node is blank")),
            Some(Some(_)) => {}
        }
        // Smallest 2^d with 2 * 2^d - 1 >= len.
        let len = nodes.len() as u64;
        let mut n_leaves: u64 = 1;
        while 2 * n_leaves - 1 < len {
            n_leaves *= 2;
        }
        if n_leaves > u64::from(MAX_LEAVES) {
            return Err(TreeError::TooManyLeaves(MAX_LEAVES));
        }
        let n_leaves = n_leaves as u32;
        let width = tree_math::node_width(n_leaves) as usize;
        let mut out = Vec::with_capacity(width);
        for (i, node) in nodes.into_iter().enumerate() {
            let x = NodeIndex(i as u32);
            match (&node, x.is_leaf()) {
                (Some(Node::Leaf(_)), true) | (Some(Node::Parent(_)), false) | (None, _) => {}
                _ => return Err(TreeError::WrongNodeType(x)),
            }
            out.push(node.map(Arc::new));
        }
        out.resize(width, None);
        Ok(RatchetTree {
            provider,
            n_leaves,
            hashes: vec![None; width],
            nodes: out,
        })
    }

    /// The cipher suite provider the tree hashes with.
    pub fn provider(&self) -> &'static dyn CipherSuiteProvider {
        self.provider
    }

    /// The tree in the form of the `ratchet_tree` extension (§12.4.3.3):
    /// array order, blank nodes `None`, trailing blank nodes removed.
    pub fn to_ratchet_tree(&self) -> codec::RatchetTree {
        let end = self
            .nodes
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i + 1);
        codec::RatchetTree(
            self.nodes[..end]
                .iter()
                .map(|n| n.as_deref().cloned())
                .collect(),
        )
    }

    /// The number of leaves, blank or not (a power of two).
    pub fn leaf_count(&self) -> u32 {
        self.n_leaves
    }

    /// The number of nodes (`2 * leaf_count - 1`).
    pub fn node_count(&self) -> u32 {
        self.nodes.len() as u32
    }

    /// The number of non-blank leaves (members).
    pub fn member_count(&self) -> usize {
        self.nodes.iter().step_by(2).filter(|n| n.is_some()).count()
    }

    /// The root node index.
    pub fn root(&self) -> NodeIndex {
        // n_leaves >= 1, so root() cannot fail.
        tree_math::root(self.n_leaves).unwrap_or(NodeIndex(0))
    }

    /// The node at `x`, `None` if blank or outside the tree.
    pub fn node(&self, x: NodeIndex) -> Option<&Node> {
        self.nodes.get(x.0 as usize).and_then(|n| n.as_deref())
    }

    /// The LeafNode at leaf `i`, `None` if blank or outside the tree.
    pub fn leaf(&self, i: LeafIndex) -> Option<&LeafNode> {
        match self.node(i.node_index().ok()?) {
            Some(Node::Leaf(l)) => Some(l),
            _ => None,
        }
    }

    /// The ParentNode at `x`, `None` if blank, a leaf, or outside the tree.
    pub fn parent_node(&self, x: NodeIndex) -> Option<&ParentNode> {
        match self.node(x) {
            Some(Node::Parent(p)) => Some(p),
            _ => None,
        }
    }

    /// The HPKE public key (`encryption_key`) of a non-blank node.
    pub fn encryption_key(&self, x: NodeIndex) -> Option<&codec::HpkePublicKey> {
        match self.node(x)? {
            Node::Leaf(l) => Some(&l.encryption_key),
            Node::Parent(p) => Some(&p.encryption_key),
        }
    }

    /// The non-blank leaves (members) in leaf order.
    pub fn leaves(&self) -> impl Iterator<Item = (LeafIndex, &LeafNode)> + '_ {
        self.nodes
            .iter()
            .step_by(2)
            .enumerate()
            .filter_map(|(i, n)| match n.as_deref() {
                Some(Node::Leaf(l)) => Some((LeafIndex(i as u32), l)),
                _ => None,
            })
    }

    /// The leaf holding exactly `leaf` (e.g. a joiner's own LeafNode from its
    /// KeyPackage, §12.4.3.1).
    pub fn find_leaf(&self, leaf: &LeafNode) -> Option<LeafIndex> {
        self.leaves().find(|(_, l)| *l == leaf).map(|(i, _)| i)
    }

    /// The leftmost blank leaf, or the first leaf of the extension if there
    /// is none: where [`RatchetTree::add_leaf`] will place the next member.
    pub fn free_leaf(&self) -> LeafIndex {
        self.nodes
            .iter()
            .step_by(2)
            .position(Option::is_none)
            .map_or(LeafIndex(self.n_leaves), |i| LeafIndex(i as u32))
    }

    fn check_leaf(&self, i: LeafIndex) -> Result<NodeIndex, TreeError> {
        if i.0 >= self.n_leaves {
            return Err(TreeError::LeafOutOfRange(i));
        }
        Ok(i.node_index()?)
    }

    pub(super) fn check_member(&self, i: LeafIndex) -> Result<NodeIndex, TreeError> {
        let x = self.check_leaf(i)?;
        if self.node(x).is_none() {
            return Err(TreeError::BlankLeaf(i));
        }
        Ok(x)
    }

    /// The direct path of leaf `i`, from its parent to the root (§4.1).
    pub fn direct_path(&self, i: LeafIndex) -> Result<Vec<NodeIndex>, TreeError> {
        let x = self.check_leaf(i)?;
        Ok(tree_math::direct_path(x, self.n_leaves)?)
    }

    /// The copath of leaf `i`, from its sibling to the root's child (§4.1).
    pub fn copath(&self, i: LeafIndex) -> Result<Vec<NodeIndex>, TreeError> {
        let x = self.check_leaf(i)?;
        Ok(tree_math::copath(x, self.n_leaves)?)
    }

    /// Whether the resolution of `x` is empty, i.e. the subtree under `x`
    /// is entirely blank.
    pub fn resolution_is_empty(&self, x: NodeIndex) -> bool {
        let s = half_span(x);
        let lo = (x.0 - s) as usize;
        let hi = ((x.0 + s) as usize).min(self.nodes.len().saturating_sub(1));
        self.nodes
            .get(lo..=hi)
            .is_none_or(|r| r.iter().all(Option::is_none))
    }

    /// The resolution of node `x` (§4.1.1): the node itself and its
    /// unmerged leaves if non-blank, nothing for a blank leaf, and the
    /// resolutions of the children for a blank parent.
    pub fn resolution(&self, x: NodeIndex) -> Result<Vec<NodeIndex>, TreeError> {
        self.resolution_excluding(x, &[])
    }

    /// The resolution of `x` with the leaves in `excluded` left out (the
    /// leaves added by the current Commit, §7.6).
    pub fn resolution_excluding(
        &self,
        x: NodeIndex,
        excluded: &[LeafIndex],
    ) -> Result<Vec<NodeIndex>, TreeError> {
        if x.0 as usize >= self.nodes.len() {
            return Err(tree_math::TreeMathError::OutOfTree {
                node: x.0,
                n_leaves: self.n_leaves,
            }
            .into());
        }
        let mut out = Vec::new();
        self.resolution_into(x, excluded, &mut out)?;
        Ok(out)
    }

    fn resolution_into(
        &self,
        x: NodeIndex,
        excluded: &[LeafIndex],
        out: &mut Vec<NodeIndex>,
    ) -> Result<(), TreeError> {
        match self.node(x) {
            Some(Node::Leaf(_)) => {
                if !x.leaf_index().is_some_and(|l| excluded.contains(&l)) {
                    out.push(x);
                }
            }
            Some(Node::Parent(p)) => {
                out.push(x);
                for l in &p.unmerged_leaves {
                    if !excluded.contains(l) {
                        out.push(l.node_index()?);
                    }
                }
            }
            None if x.is_leaf() => {}
            None => {
                if self.resolution_is_empty(x) {
                    return Ok(());
                }
                self.resolution_into(tree_math::left(x)?, excluded, out)?;
                self.resolution_into(tree_math::right(x)?, excluded, out)?;
            }
        }
        Ok(())
    }

    /// The filtered direct path of leaf `i` (§4.1.2), from the bottom up,
    /// each node paired with its child on the copath of `i`: the direct path
    /// without the nodes whose copath child has an empty resolution.
    pub fn filtered_direct_path_with_copath(
        &self,
        i: LeafIndex,
    ) -> Result<Vec<(NodeIndex, NodeIndex)>, TreeError> {
        let x = self.check_leaf(i)?;
        let mut out = Vec::new();
        let mut cur = x;
        let root = self.root();
        while cur != root {
            let p = tree_math::parent(cur, self.n_leaves)?;
            let s = tree_math::sibling(cur, self.n_leaves)?;
            if !self.resolution_is_empty(s) {
                out.push((p, s));
            }
            cur = p;
        }
        Ok(out)
    }

    /// The filtered direct path of leaf `i` (§4.1.2), from the bottom up.
    pub fn filtered_direct_path(&self, i: LeafIndex) -> Result<Vec<NodeIndex>, TreeError> {
        Ok(self
            .filtered_direct_path_with_copath(i)?
            .into_iter()
            .map(|(p, _)| p)
            .collect())
    }

    // ----- changes -----

    /// Marks the tree hash of `x` and of its ancestors as stale.
    pub(super) fn invalidate(&mut self, x: NodeIndex) {
        let mut cur = x;
        loop {
            match self.hashes.get_mut(cur.0 as usize) {
                Some(h) => *h = None,
                None => return,
            }
            match tree_math::parent(cur, self.n_leaves) {
                Ok(p) => cur = p,
                Err(_) => return,
            }
        }
    }

    /// Sets node `x` (which must be inside the tree) and invalidates its
    /// hashes.
    pub(super) fn set_node(&mut self, x: NodeIndex, node: Option<Node>) {
        if let Some(slot) = self.nodes.get_mut(x.0 as usize) {
            *slot = node.map(Arc::new);
            self.invalidate(x);
        }
    }

    /// Blanks the parent nodes on the direct path of leaf node `x`.
    pub(super) fn blank_direct_path(&mut self, x: NodeIndex) -> Result<(), TreeError> {
        for p in tree_math::direct_path(x, self.n_leaves)? {
            if self.node(p).is_some() {
                self.set_node(p, None);
            }
        }
        Ok(())
    }

    /// Doubles the number of leaves: a new blank root whose left subtree is
    /// the current tree (§7.7).
    fn extend(&mut self) -> Result<(), TreeError> {
        if self.n_leaves >= MAX_LEAVES {
            return Err(TreeError::TooManyLeaves(MAX_LEAVES));
        }
        self.n_leaves *= 2;
        let width = tree_math::node_width(self.n_leaves) as usize;
        self.nodes.resize(width, None);
        self.hashes.resize(width, None);
        Ok(())
    }

    /// Halves the tree while its right subtree holds no member (§7.7,
    /// §12.1.3).
    fn truncate(&mut self) {
        while self.n_leaves > 1 {
            let half = self.n_leaves as usize / 2;
            if self.nodes[2 * half..].iter().any(Option::is_some) {
                break;
            }
            self.n_leaves /= 2;
            let width = tree_math::node_width(self.n_leaves) as usize;
            self.nodes.truncate(width);
            self.hashes.truncate(width);
        }
    }

    /// Adds a member (§12.1.1): places `leaf` at the leftmost blank leaf,
    /// extending the tree if there is none, and adds its index to the
    /// `unmerged_leaves` of each non-blank parent on its direct path.
    /// Returns the new member's leaf index. The LeafNode must have been
    /// validated (see [`super::validate_leaf_node`] and
    /// [`RatchetTree::check_leaves_fit`]).
    pub fn add_leaf(&mut self, leaf: LeafNode) -> Result<LeafIndex, TreeError> {
        let i = self.free_leaf();
        if i.0 >= self.n_leaves {
            self.extend()?;
        }
        let x = self.check_leaf(i)?;
        for p in tree_math::direct_path(x, self.n_leaves)? {
            let Some(slot) = self.nodes.get_mut(p.0 as usize) else {
                continue;
            };
            if let Some(node) = slot {
                if let Node::Parent(parent) = Arc::make_mut(node) {
                    let pos = parent.unmerged_leaves.partition_point(|l| *l < i);
                    if parent.unmerged_leaves.get(pos) != Some(&i) {
                        parent.unmerged_leaves.insert(pos, i);
                    }
                }
            }
        }
        // Invalidates the leaf and its whole direct path.
        self.set_node(x, Some(Node::Leaf(leaf)));
        Ok(i)
    }

    /// Replaces the LeafNode of member `i` and blanks its direct path
    /// (Update proposal, §12.1.2).
    pub fn update_leaf(&mut self, i: LeafIndex, leaf: LeafNode) -> Result<(), TreeError> {
        let x = self.check_member(i)?;
        self.blank_direct_path(x)?;
        self.set_node(x, Some(Node::Leaf(leaf)));
        Ok(())
    }

    /// Removes member `i` (§12.1.3): blanks its leaf and direct path, then
    /// truncates the tree while its right half is blank.
    pub fn remove_leaf(&mut self, i: LeafIndex) -> Result<(), TreeError> {
        let x = self.check_member(i)?;
        self.blank_direct_path(x)?;
        self.set_node(x, None);
        self.truncate();
        Ok(())
    }

    // ----- hashes -----

    /// The tree hash of the root (§7.8), the `tree_hash` of the GroupContext.
    /// Recomputes only the nodes changed since the last call.
    pub fn tree_hash(&mut self) -> Result<Digest, TreeError> {
        let root = self.root();
        self.node_tree_hash(root)
    }

    /// The tree hash of node `x` (§7.8).
    pub fn node_tree_hash(&mut self, x: NodeIndex) -> Result<Digest, TreeError> {
        if let Some(Some(h)) = self.hashes.get(x.0 as usize) {
            return Ok(*h);
        }
        if x.0 as usize >= self.nodes.len() {
            return Err(tree_math::TreeMathError::OutOfTree {
                node: x.0,
                n_leaves: self.n_leaves,
            }
            .into());
        }
        let h = if x.is_leaf() {
            hashes::leaf_tree_hash(self.provider, x, self.leaf_at(x))?
        } else {
            let l = self.node_tree_hash(tree_math::left(x)?)?;
            let r = self.node_tree_hash(tree_math::right(x)?)?;
            hashes::parent_tree_hash(self.provider, self.parent_node(x), &l, &r)?
        };
        self.hashes[x.0 as usize] = Some(h);
        Ok(h)
    }

    /// Computes every stale tree hash.
    pub fn refresh_hashes(&mut self) -> Result<(), TreeError> {
        self.tree_hash().map(drop)
    }

    /// The cached tree hash of `x`, if fresh.
    pub(super) fn cached_hash(&self, x: NodeIndex) -> Option<Digest> {
        self.hashes.get(x.0 as usize).copied().flatten()
    }

    pub(super) fn leaf_at(&self, x: NodeIndex) -> Option<&LeafNode> {
        match self.node(x) {
            Some(Node::Leaf(l)) => Some(l),
            _ => None,
        }
    }

    /// The tree hash of `x` in the tree where the leaves in `excluded` are
    /// blank and removed from every `unmerged_leaves` (the
    /// `original_sibling_tree_hash` of §7.9). Uses the cache for subtrees
    /// that contain no excluded leaf.
    pub(super) fn tree_hash_excluding(
        &self,
        x: NodeIndex,
        excluded: &[LeafIndex],
    ) -> Result<Digest, TreeError> {
        let s = half_span(x);
        let (lo, hi) = (x.0 - s, x.0.saturating_add(s));
        let touched = excluded
            .iter()
            .any(|l| l.node_index().is_ok_and(|n| n.0 >= lo && n.0 <= hi));
        if !touched && let Some(h) = self.cached_hash(x) {
            return Ok(h);
        }
        if x.is_leaf() {
            let leaf = if touched { None } else { self.leaf_at(x) };
            return hashes::leaf_tree_hash(self.provider, x, leaf);
        }
        let l = self.tree_hash_excluding(tree_math::left(x)?, excluded)?;
        let r = self.tree_hash_excluding(tree_math::right(x)?, excluded)?;
        match self.parent_node(x) {
            Some(p) if touched => {
                let mut p = p.clone();
                p.unmerged_leaves.retain(|u| !excluded.contains(u));
                hashes::parent_tree_hash(self.provider, Some(&p), &l, &r)
            }
            p => hashes::parent_tree_hash(self.provider, p, &l, &r),
        }
    }

    // ----- membership checks -----

    /// Checks LeafNodes about to enter the tree against its members (§7.3):
    /// each `(replacing, leaf)` pair is a LeafNode that will replace member
    /// `replacing` (Update, Commit) or be added (`None`).
    ///
    /// - every `encryption_key` differs from those of all nodes of the tree
    ///   (including the leaf it replaces) and of the other new leaves;
    /// - every `signature_key` differs from those of all other members and
    ///   new leaves (a leaf may keep its own signature key);
    /// - each new leaf's credential type is supported by every member that
    ///   stays, and each new leaf supports every credential type in use.
    ///
    /// Costs one pass over the tree for the whole batch.
    pub fn check_leaves_fit(
        &self,
        leaves: &[(Option<LeafIndex>, &LeafNode)],
    ) -> Result<(), TreeError> {
        let mut enc: HashMap<&[u8], usize> = HashMap::with_capacity(leaves.len());
        let mut sig: HashMap<&[u8], usize> = HashMap::with_capacity(leaves.len());
        let mut replaced: HashMap<LeafIndex, usize> = HashMap::new();
        let mut new_types: HashSet<CredentialType> = HashSet::new();
        for (k, (rep, leaf)) in leaves.iter().enumerate() {
            let node = rep
                .and_then(|r| r.node_index().ok())
                .unwrap_or(NodeIndex(u32::MAX));
            if enc.insert(leaf.encryption_key.as_slice(), k).is_some() {
                return Err(TreeError::DuplicateKey {
                    kind: "encryption_key",
                    node,
                });
            }
            if sig.insert(leaf.signature_key.as_slice(), k).is_some() {
                return Err(TreeError::DuplicateKey {
                    kind: "signature_key",
                    node,
                });
            }
            if let Some(r) = rep {
                replaced.insert(*r, k);
            }
            new_types.insert(leaf.credential.credential_type());
        }
        let mut types_in_use: HashSet<CredentialType> = new_types.clone();
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(node) = node.as_deref() else {
                continue;
            };
            let x = NodeIndex(i as u32);
            let key = match node {
                Node::Leaf(l) => &l.encryption_key,
                Node::Parent(p) => &p.encryption_key,
            };
            if enc.contains_key(key.as_slice()) {
                return Err(TreeError::DuplicateKey {
                    kind: "encryption_key",
                    node: x,
                });
            }
            let Node::Leaf(member) = node else {
                continue;
            };
            let li = LeafIndex(x.0 / 2);
            let replaced_by = replaced.get(&li).copied();
            if let Some(&k) = sig.get(member.signature_key.as_slice())
                && replaced_by != Some(k)
            {
                return Err(TreeError::DuplicateKey {
                    kind: "signature_key",
                    node: x,
                });
            }
            if replaced_by.is_some() {
                continue;
            }
            types_in_use.insert(member.credential.credential_type());
            if let Some(t) = new_types
                .iter()
                .find(|t| !member.capabilities.credentials.contains(t))
            {
                return Err(TreeError::CredentialTypeNotShared(t.0));
            }
        }
        for (_, leaf) in leaves {
            if let Some(t) = types_in_use
                .iter()
                .find(|t| !leaf.capabilities.credentials.contains(t))
            {
                return Err(TreeError::CredentialTypeNotShared(t.0));
            }
        }
        Ok(())
    }
}

//! The public ratchet tree (RFC 9420 §4, §7.7, §7.8, Appendix C).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use hsmls_crypto::{CipherSuiteProvider, Digest};

use super::hashes;
use super::store::{NodeStore, fingerprint};
use super::{KeyKind, TreeError, TreeShape};
use crate::codec::{self, CredentialType, LeafNode, Node, ParentNode};
use crate::tree_math::{self, LeafIndex, NodeIndex};

/// From this many leaves on, a tree hashed from scratch is hashed on two
/// threads (one per half under the root).
const PARALLEL_TREE_HASH_LEAVES: u32 = 1024;

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
/// `Clone` is cheap (one pointer per 256 nodes; storage is copied on
/// write, see `store.rs`), so the group engine can stage a commit on a copy
/// and drop it if the commit is rejected.
#[derive(Clone)]
pub struct RatchetTree {
    pub(super) provider: &'static dyn CipherSuiteProvider,
    pub(super) n_leaves: u32,
    /// The nodes and, per node, the cached tree hash (`None` when
    /// invalidated). Invariant: if a node's hash is `None`, so are those of
    /// all its ancestors.
    pub(super) nodes: NodeStore,
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
                .zip(other.nodes.iter())
                .all(|(a, b)| a == b)
    }
}

impl Eq for RatchetTree {}

/// The number of nodes of the subtree rooted at `x` on each side of `x`:
/// the subtree spans the node indices `x - s ..= x + s`.
pub(super) fn half_span(x: NodeIndex) -> u32 {
    1u32.checked_shl(x.level()).map_or(u32::MAX, |v| v - 1)
}

/// Whether node `y` is in the subtree rooted at `x` (or is `x`).
pub(super) fn in_subtree(x: NodeIndex, y: NodeIndex) -> bool {
    let s = half_span(x);
    y.0 >= x.0.saturating_sub(s) && y.0 <= x.0.saturating_add(s)
}

impl RatchetTree {
    /// A one-member tree holding `leaf` at leaf 0 (group creation, §11).
    pub fn new(provider: &'static dyn CipherSuiteProvider, leaf: LeafNode) -> Self {
        let mut nodes = NodeStore::blank(1);
        nodes.set(0, Some(Arc::new(Node::Leaf(leaf))));
        RatchetTree {
            provider,
            n_leaves: 1,
            nodes,
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
            None => return Err(TreeError::MalformedTree(TreeShape::NoNodes)),
            Some(None) => return Err(TreeError::MalformedTree(TreeShape::LastNodeBlank)),
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
        let mut out = NodeStore::blank(width);
        for (i, node) in nodes.into_iter().enumerate() {
            let x = NodeIndex(i as u32);
            match (&node, x.is_leaf()) {
                (Some(Node::Leaf(_)), true) | (Some(Node::Parent(_)), false) | (None, _) => {}
                _ => return Err(TreeError::WrongNodeType(x)),
            }
            if node.is_some() {
                out.set(i, node.map(Arc::new));
            }
        }
        Ok(RatchetTree {
            provider,
            n_leaves,
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
        let end = (0..self.nodes.len())
            .rev()
            .find(|&i| self.nodes.get(i).is_some())
            .map_or(0, |i| i + 1);
        codec::RatchetTree(self.nodes.iter().take(end).map(|n| n.cloned()).collect())
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
        self.nodes.iter().step_by(2).filter(Option::is_some).count()
    }

    /// The root node index.
    pub fn root(&self) -> NodeIndex {
        // n_leaves >= 1, so root() cannot fail.
        tree_math::root(self.n_leaves).unwrap_or(NodeIndex(0))
    }

    /// The node at `x`, `None` if blank or outside the tree.
    pub fn node(&self, x: NodeIndex) -> Option<&Node> {
        self.nodes.get(x.0 as usize)
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
            .filter_map(|(i, n)| match n {
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
        self.free_leaf_from(LeafIndex(0))
    }

    /// The leftmost blank leaf at or right of `from`, or `n_leaves`.
    fn free_leaf_from(&self, from: LeafIndex) -> LeafIndex {
        (from.0..self.n_leaves)
            .find(|i| !self.nodes.is_present(*i as usize * 2))
            .map_or(LeafIndex(self.n_leaves), LeafIndex)
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
    /// is entirely blank (true for a node outside the tree).
    pub fn resolution_is_empty(&self, x: NodeIndex) -> bool {
        if x.0 as usize >= self.nodes.len() {
            return true;
        }
        let s = half_span(x);
        let lo = x.0.saturating_sub(s) as usize;
        let hi = x.0 as usize + s as usize;
        !self.nodes.any_non_blank(lo, hi)
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
        let excluded = Excluded::new(excluded);
        let mut out = Vec::new();
        self.resolution_into(x, &excluded, &mut out)?;
        Ok(out)
    }

    fn resolution_into(
        &self,
        x: NodeIndex,
        excluded: &Excluded<'_>,
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

    /// The size of the resolution of `x` without the leaves in `excluded`,
    /// computed without building it.
    pub fn resolution_len(&self, x: NodeIndex, excluded: &[LeafIndex]) -> usize {
        self.resolution_len_in(x, &Excluded::new(excluded))
    }

    fn resolution_len_in(&self, x: NodeIndex, excluded: &Excluded<'_>) -> usize {
        let i = x.0 as usize;
        if x.is_leaf() {
            let present = self.nodes.is_present(i);
            return usize::from(present && !x.leaf_index().is_some_and(|l| excluded.contains(&l)));
        }
        if let Some(p) = self.parent_node(x) {
            return 1 + p
                .unmerged_leaves
                .iter()
                .filter(|l| !excluded.contains(l))
                .count();
        }
        // A blank parent whose subtree holds no non-blank parent (every
        // parent of a fresh group): its resolution is the subtree's
        // non-blank leaves, counted in one scan of the node metadata
        // instead of a walk over every node.
        if i >= self.nodes.len() {
            return 0;
        }
        let s = half_span(x);
        let (lo, hi) = (x.0.saturating_sub(s), x.0.saturating_add(s));
        if let Some(leaves) = self.nodes.leaf_count_if_no_parent(lo as usize, hi as usize) {
            let excluded_present = excluded.count_in(LeafIndex(lo / 2), LeafIndex(hi / 2), |l| {
                self.nodes.is_present(l.0 as usize * 2)
            });
            return leaves - excluded_present;
        }
        match (tree_math::left(x), tree_math::right(x)) {
            (Ok(l), Ok(r)) => {
                self.resolution_len_in(l, excluded) + self.resolution_len_in(r, excluded)
            }
            _ => 0,
        }
    }

    /// The position of node `target` in the resolution of `x` without the
    /// leaves in `excluded`, if it is in it; computed without building the
    /// resolution.
    pub fn resolution_position(
        &self,
        x: NodeIndex,
        excluded: &[LeafIndex],
        target: NodeIndex,
    ) -> Option<usize> {
        self.resolution_position_in(x, &Excluded::new(excluded), target)
    }

    fn resolution_position_in(
        &self,
        x: NodeIndex,
        excluded: &Excluded<'_>,
        target: NodeIndex,
    ) -> Option<usize> {
        if x.0 as usize >= self.nodes.len() || !in_subtree(x, target) {
            return None;
        }
        let is_excluded = |n: NodeIndex| n.leaf_index().is_some_and(|l| excluded.contains(&l));
        if x.is_leaf() {
            return (x == target && self.nodes.is_present(x.0 as usize) && !is_excluded(x))
                .then_some(0);
        }
        if let Some(p) = self.parent_node(x) {
            if x == target {
                return Some(0);
            }
            let t = target.leaf_index()?;
            if excluded.contains(&t) {
                return None;
            }
            return p
                .unmerged_leaves
                .iter()
                .filter(|l| !excluded.contains(l))
                .position(|l| *l == t)
                .map(|k| k + 1);
        }
        if x == target {
            return None;
        }
        let (l, r) = (tree_math::left(x).ok()?, tree_math::right(x).ok()?);
        if target < x {
            self.resolution_position_in(l, excluded, target)
        } else {
            self.resolution_position_in(r, excluded, target)
                .map(|k| k + self.resolution_len_in(l, excluded))
        }
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
            // Ancestors of a node with no cached hash have none either.
            if !self.nodes.set_hash(cur.0 as usize, None) {
                return;
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
        if (x.0 as usize) < self.nodes.len() {
            self.nodes.set(x.0 as usize, node.map(Arc::new));
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
        self.nodes.resize(width);
        Ok(())
    }

    /// Halves the tree while its right subtree holds no member (§7.7,
    /// §12.1.3).
    fn truncate(&mut self) {
        while self.n_leaves > 1 {
            let half = self.n_leaves as usize / 2;
            if self.nodes.any_non_blank(2 * half, usize::MAX) {
                break;
            }
            self.n_leaves /= 2;
            let width = tree_math::node_width(self.n_leaves) as usize;
            self.nodes.resize(width);
        }
    }

    /// Adds a member (§12.1.1): places `leaf` at the leftmost blank leaf,
    /// extending the tree if there is none, and adds its index to the
    /// `unmerged_leaves` of each non-blank parent on its direct path.
    /// Returns the new member's leaf index. The LeafNode must have been
    /// validated (see [`super::validate_leaf_node`] and
    /// [`RatchetTree::check_leaves_fit`]).
    pub fn add_leaf(&mut self, leaf: LeafNode) -> Result<LeafIndex, TreeError> {
        self.add_leaf_from(leaf, LeafIndex(0))
    }

    /// Adds members in order (§12.1.1, §12.3), each as
    /// [`RatchetTree::add_leaf`] would: the search for the leftmost blank
    /// leaf resumes where the previous one stopped (every leaf left of a
    /// placed leaf is taken), so adding k members costs O(k + N), not
    /// O(k·N).
    pub fn add_leaves(
        &mut self,
        leaves: impl IntoIterator<Item = LeafNode>,
    ) -> Result<Vec<LeafIndex>, TreeError> {
        let mut from = LeafIndex(0);
        let mut out = Vec::new();
        for leaf in leaves {
            let i = self.add_leaf_from(leaf, from)?;
            from = LeafIndex(i.0.saturating_add(1));
            out.push(i);
        }
        Ok(out)
    }

    /// [`RatchetTree::add_leaf`] with no blank leaf left of `from`.
    fn add_leaf_from(&mut self, leaf: LeafNode, from: LeafIndex) -> Result<LeafIndex, TreeError> {
        let i = self.free_leaf_from(from);
        if i.0 >= self.n_leaves {
            self.extend()?;
        }
        let x = self.check_leaf(i)?;
        for p in tree_math::direct_path(x, self.n_leaves)? {
            if let Some(Node::Parent(parent)) = self.nodes.get_mut(p.0 as usize) {
                let pos = parent.unmerged_leaves.partition_point(|l| *l < i);
                if parent.unmerged_leaves.get(pos) != Some(&i) {
                    parent.unmerged_leaves.insert(pos, i);
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
    /// Recomputes only the nodes changed since the last call. In a tree of
    /// at least 1,024 leaves, the two halves under
    /// the root are hashed on two threads when both are stale (a tree
    /// received in a Welcome, whose hashes are all stale).
    pub fn tree_hash(&mut self) -> Result<Digest, TreeError> {
        let root = self.root();
        if self.n_leaves >= PARALLEL_TREE_HASH_LEAVES && self.nodes.hash(root.0 as usize).is_none()
        {
            let (left, right) = (tree_math::left(root)?, tree_math::right(root)?);
            let stale = |x: NodeIndex| {
                (x.0 as usize) < self.nodes.len() && self.nodes.hash(x.0 as usize).is_none()
            };
            if stale(left) && stale(right) {
                let this = &*self;
                let (l, r) = std::thread::scope(|scope| {
                    let r = std::thread::Builder::new()
                        .spawn_scoped(scope, move || this.stale_subtree_hashes(right))
                        .map_err(|_| TreeError::WorkerPanicked);
                    let l = this.stale_subtree_hashes(left);
                    let r = r.and_then(|h| h.join().map_err(|_| TreeError::WorkerPanicked));
                    (l, r)
                });
                for (x, h) in l?.into_iter().chain(r??) {
                    self.nodes.set_hash(x, Some(h));
                }
            }
        }
        self.node_tree_hash(root)
    }

    /// The tree hashes of `x` and of its stale descendants (§7.8), computed
    /// without writing the cache: (node, hash) pairs, children first.
    fn stale_subtree_hashes(&self, x: NodeIndex) -> Result<Vec<(usize, Digest)>, TreeError> {
        let mut out = Vec::new();
        self.stale_subtree_hashes_in(x, &mut out)?;
        Ok(out)
    }

    fn stale_subtree_hashes_in(
        &self,
        x: NodeIndex,
        out: &mut Vec<(usize, Digest)>,
    ) -> Result<Digest, TreeError> {
        if let Some(h) = self.nodes.hash(x.0 as usize) {
            return Ok(h);
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
            let l = self.stale_subtree_hashes_in(tree_math::left(x)?, out)?;
            let r = self.stale_subtree_hashes_in(tree_math::right(x)?, out)?;
            hashes::parent_tree_hash(self.provider, self.parent_node(x), &l, &r)?
        };
        out.push((x.0 as usize, h));
        Ok(h)
    }

    /// The tree hash of node `x` (§7.8), caching it and every stale
    /// descendant's.
    pub fn node_tree_hash(&mut self, x: NodeIndex) -> Result<Digest, TreeError> {
        if let Some(h) = self.nodes.hash(x.0 as usize) {
            return Ok(h);
        }
        let mut stale = Vec::new();
        let h = self.stale_subtree_hashes_in(x, &mut stale)?;
        for (i, h) in stale {
            self.nodes.set_hash(i, Some(h));
        }
        Ok(h)
    }

    /// Computes every stale tree hash.
    pub fn refresh_hashes(&mut self) -> Result<(), TreeError> {
        self.tree_hash().map(drop)
    }

    /// The cached tree hash of `x`, if fresh.
    pub(super) fn cached_hash(&self, x: NodeIndex) -> Option<Digest> {
        self.nodes.hash(x.0 as usize)
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
        self.tree_hash_excluding_in(x, &Excluded::new(excluded))
    }

    fn tree_hash_excluding_in(
        &self,
        x: NodeIndex,
        excluded: &Excluded<'_>,
    ) -> Result<Digest, TreeError> {
        let s = half_span(x);
        let (lo, hi) = (x.0.saturating_sub(s), x.0.saturating_add(s));
        // Leaf i is node 2i: the leaves of the subtree are lo/2 ..= hi/2.
        let touched = excluded.any_in(LeafIndex(lo / 2), LeafIndex(hi / 2));
        if !touched && let Some(h) = self.cached_hash(x) {
            return Ok(h);
        }
        if x.is_leaf() {
            let leaf = if touched { None } else { self.leaf_at(x) };
            return hashes::leaf_tree_hash(self.provider, x, leaf);
        }
        let l = self.tree_hash_excluding_in(tree_math::left(x)?, excluded)?;
        let r = self.tree_hash_excluding_in(tree_math::right(x)?, excluded)?;
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

    /// The non-blank nodes whose `encryption_key` is one of `keys`, found
    /// with one pass over the key fingerprints.
    pub(super) fn nodes_with_any_encryption_key(&self, keys: &[&[u8]]) -> Vec<NodeIndex> {
        let mut fps: Vec<u64> = keys.iter().map(|k| fingerprint(k)).collect();
        fps.sort_unstable();
        self.nodes
            .with_any_encryption_fp(&fps)
            .map(|i| NodeIndex(i as u32))
            .filter(|x| {
                self.encryption_key(*x)
                    .is_some_and(|e| keys.contains(&e.as_slice()))
            })
            .collect()
    }

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
        let dup = |kind, node| TreeError::DuplicateKey { kind, node };
        // Node index of a replaced leaf -> position of its replacement.
        let replacing: HashMap<usize, usize> = leaves
            .iter()
            .enumerate()
            .filter_map(|(k, (r, _))| r.map(|r| (r.0 as usize * 2, k)))
            .collect();
        let replaced_by = |x: usize| replacing.get(&x).copied();
        // Against the tree, in one pass over the fingerprints: for each new
        // leaf, the first node holding its encryption key and the first
        // other member holding its signature key.
        let mut by_enc_fp: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut by_sig_fp: HashMap<u64, Vec<usize>> = HashMap::new();
        for (k, (_, leaf)) in leaves.iter().enumerate() {
            by_enc_fp
                .entry(fingerprint(leaf.encryption_key.as_slice()))
                .or_default()
                .push(k);
            by_sig_fp
                .entry(fingerprint(leaf.signature_key.as_slice()))
                .or_default()
                .push(k);
        }
        let mut enc_fps: Vec<u64> = by_enc_fp.keys().copied().collect();
        enc_fps.sort_unstable();
        let mut sig_fps: Vec<u64> = by_sig_fp.keys().copied().collect();
        sig_fps.sort_unstable();
        let mut tree_enc: HashMap<usize, NodeIndex> = HashMap::new();
        for x in self.nodes.with_any_encryption_fp(&enc_fps) {
            let Some(key) = self.encryption_key(NodeIndex(x as u32)) else {
                continue;
            };
            for &k in by_enc_fp
                .get(&fingerprint(key.as_slice()))
                .into_iter()
                .flatten()
            {
                if leaves[k].1.encryption_key == *key {
                    tree_enc.entry(k).or_insert(NodeIndex(x as u32));
                }
            }
        }
        let mut tree_sig: HashMap<usize, NodeIndex> = HashMap::new();
        for x in self.nodes.with_any_signature_fp(&sig_fps) {
            let Some(Node::Leaf(member)) = self.nodes.get(x) else {
                continue;
            };
            let key = &member.signature_key;
            for &k in by_sig_fp
                .get(&fingerprint(key.as_slice()))
                .into_iter()
                .flatten()
            {
                if leaves[k].1.signature_key == *key && replaced_by(x) != Some(k) {
                    tree_sig.entry(k).or_insert(NodeIndex(x as u32));
                }
            }
        }
        // Among the new leaves, then against the tree, leaf by leaf.
        let mut new_enc: HashSet<&[u8]> = HashSet::with_capacity(leaves.len());
        let mut new_sig: HashSet<&[u8]> = HashSet::with_capacity(leaves.len());
        for (k, (rep, leaf)) in leaves.iter().enumerate() {
            let at = rep
                .and_then(|r| r.node_index().ok())
                .unwrap_or(NodeIndex(u32::MAX));
            let enc = leaf.encryption_key.as_slice();
            let sig = leaf.signature_key.as_slice();
            if new_enc.contains(enc) {
                return Err(dup(KeyKind::EncryptionKey, at));
            }
            if new_sig.contains(sig) {
                return Err(dup(KeyKind::SignatureKey, at));
            }
            new_enc.insert(enc);
            new_sig.insert(sig);
            if let Some(x) = tree_enc.get(&k) {
                return Err(dup(KeyKind::EncryptionKey, *x));
            }
            if let Some(x) = tree_sig.get(&k) {
                return Err(dup(KeyKind::SignatureKey, *x));
            }
        }

        // Credential types in use once the replaced leaves are gone.
        let mut in_use = self.nodes.credential_type_counts();
        for (rep, _) in leaves {
            if let Some(t) = rep.and_then(|r| self.nodes.credential_type(r.0 as usize * 2))
                && let Some((_, n)) = in_use.iter_mut().find(|(u, _)| *u == t)
            {
                *n = n.saturating_sub(1);
            }
        }
        in_use.retain(|(_, n)| *n > 0);
        let mut all_types: Vec<CredentialType> =
            in_use.iter().map(|(t, _)| CredentialType(*t)).collect();
        // Types no staying member uses yet: every staying member must
        // support them (a type in use is supported by all, §7.3).
        let mut new_types: Vec<CredentialType> = Vec::new();
        for (_, leaf) in leaves {
            let t = leaf.credential.credential_type();
            if !all_types.contains(&t) {
                all_types.push(t);
                new_types.push(t);
            }
        }
        for (_, leaf) in leaves {
            if let Some(t) = all_types
                .iter()
                .find(|t| !leaf.capabilities.credentials.contains(t))
            {
                return Err(TreeError::CredentialTypeNotShared(t.0));
            }
        }
        if !new_types.is_empty() {
            for (i, member) in self.leaves() {
                if replaced_by(i.0 as usize * 2).is_some() {
                    continue;
                }
                if let Some(t) = new_types
                    .iter()
                    .find(|t| !member.capabilities.credentials.contains(t))
                {
                    return Err(TreeError::CredentialTypeNotShared(t.0));
                }
            }
        }
        Ok(())
    }
}

/// A set of leaves left out of a resolution or tree hash (the leaves a
/// Commit adds, a parent's unmerged leaves): sorted once, so that each
/// membership test costs O(log k), not O(k) (a commit adding N members to
/// a fresh group tests each of the N leaves of a resolution).
struct Excluded<'a>(std::borrow::Cow<'a, [LeafIndex]>);

impl<'a> Excluded<'a> {
    fn new(leaves: &'a [LeafIndex]) -> Self {
        if leaves.windows(2).all(|w| w[0] < w[1]) {
            Excluded(std::borrow::Cow::Borrowed(leaves))
        } else {
            let mut v = leaves.to_vec();
            v.sort_unstable();
            v.dedup();
            Excluded(std::borrow::Cow::Owned(v))
        }
    }

    fn contains(&self, l: &LeafIndex) -> bool {
        self.0.binary_search(l).is_ok()
    }

    /// How many leaves in `lo ..= hi` are excluded and satisfy `present`.
    fn count_in(&self, lo: LeafIndex, hi: LeafIndex, present: impl Fn(LeafIndex) -> bool) -> usize {
        let from = self.0.partition_point(|l| *l < lo);
        self.0[from..]
            .iter()
            .take_while(|l| **l <= hi)
            .filter(|l| present(**l))
            .count()
    }

    /// Whether a leaf in `lo ..= hi` is excluded.
    fn any_in(&self, lo: LeafIndex, hi: LeafIndex) -> bool {
        let from = self.0.partition_point(|l| *l < lo);
        self.0.get(from).is_some_and(|l| *l <= hi)
    }
}

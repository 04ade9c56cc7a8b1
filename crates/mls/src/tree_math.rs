//! Array-based tree math (RFC 9420 §4.1 and Appendix C).
//!
//! A ratchet tree with `n` leaves is stored in an array of
//! `node_width(n) = 2n - 1` nodes; leaf `i` sits at node `2i`, parent nodes at
//! odd indices. MLS trees are always full (`n` a power of two; RFC 9420
//! §4.1: "every tree used in this protocol is a perfect binary tree"), but
//! these functions follow Appendix C for any `n`.
//!
//! All functions are total: an index outside the tree, asking a leaf for its
//! children or the root for its parent gives a [`TreeMathError`], never a
//! panic or an overflow, because indices may come from the wire.

use thiserror::Error;

/// Errors of the tree math functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TreeMathError {
    /// A leaf node has no children.
    #[error("leaf node {0} has no children")]
    LeafHasNoChildren(u32),
    /// The root node has no parent (and no sibling).
    #[error("root node {0} has no parent")]
    RootHasNoParent(u32),
    /// The node index is not inside a tree of the given number of leaves.
    #[error("node {node} is outside a tree with {n_leaves} leaves")]
    OutOfTree {
        /// The node index.
        node: u32,
        /// The number of leaves of the tree.
        n_leaves: u32,
    },
    /// A tree with zero leaves has no nodes.
    #[error("the tree is empty")]
    EmptyTree,
    /// A leaf index whose node index does not fit in 32 bits.
    #[error("leaf index {0} has no 32-bit node index")]
    LeafIndexTooLarge(LeafIndex),
    /// The right child of the node does not fit in 32 bits.
    #[error("the right child of node {0} has no 32-bit node index")]
    ChildIndexTooLarge(u32),
}

/// The index of a leaf among the leaves of the tree (RFC 9420 §4.2:
/// "leaf index"), as carried on the wire in `uint32` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeafIndex(pub u32);

impl std::fmt::Display for LeafIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The index of a node in the array representation of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeIndex(pub u32);

impl LeafIndex {
    /// The node index of this leaf (`2 * leaf_index`).
    pub fn node_index(self) -> Result<NodeIndex, TreeMathError> {
        self.0
            .checked_mul(2)
            .map(NodeIndex)
            .ok_or(TreeMathError::LeafIndexTooLarge(self))
    }
}

impl From<LeafIndex> for u32 {
    fn from(l: LeafIndex) -> u32 {
        l.0
    }
}

impl From<NodeIndex> for u32 {
    fn from(n: NodeIndex) -> u32 {
        n.0
    }
}

impl NodeIndex {
    /// Whether this node is a leaf (even index).
    pub fn is_leaf(self) -> bool {
        self.0 & 1 == 0
    }

    /// The leaf index of this node, if it is a leaf.
    pub fn leaf_index(self) -> Option<LeafIndex> {
        self.is_leaf().then_some(LeafIndex(self.0 / 2))
    }

    /// The level of this node: leaves are level 0, their parents level 1, ...
    pub fn level(self) -> u32 {
        level(self)
    }
}

/// The exponent of the largest power of 2 not greater than `x` (0 for 0).
pub fn log2(x: u64) -> u32 {
    if x == 0 { 0 } else { 63 - x.leading_zeros() }
}

/// The level of a node: the number of trailing one bits of its index.
pub fn level(x: NodeIndex) -> u32 {
    x.0.trailing_ones()
}

/// The number of nodes needed to represent a tree with `n_leaves` leaves.
pub fn node_width(n_leaves: u32) -> u64 {
    if n_leaves == 0 {
        0
    } else {
        2 * (u64::from(n_leaves) - 1) + 1
    }
}

fn to_node(x: u64, n_leaves: u32) -> Result<NodeIndex, TreeMathError> {
    u32::try_from(x)
        .map(NodeIndex)
        .map_err(|_| TreeMathError::OutOfTree {
            node: u32::MAX,
            n_leaves,
        })
}

fn check_in_tree(x: NodeIndex, n_leaves: u32) -> Result<(), TreeMathError> {
    if u64::from(x.0) < node_width(n_leaves) {
        Ok(())
    } else {
        Err(TreeMathError::OutOfTree {
            node: x.0,
            n_leaves,
        })
    }
}

/// The index of the root node of a tree with `n_leaves` leaves.
pub fn root(n_leaves: u32) -> Result<NodeIndex, TreeMathError> {
    if n_leaves == 0 {
        return Err(TreeMathError::EmptyTree);
    }
    let w = node_width(n_leaves);
    to_node((1u64 << log2(w)) - 1, n_leaves)
}

/// The left child of a parent node.
pub fn left(x: NodeIndex) -> Result<NodeIndex, TreeMathError> {
    let k = level(x);
    if k == 0 {
        return Err(TreeMathError::LeafHasNoChildren(x.0));
    }
    // k >= 1 and k <= 32; for k = 32 (x = u32::MAX) the shift is by 31.
    Ok(NodeIndex(x.0 ^ (1u32 << (k - 1))))
}

/// The right child of a parent node.
pub fn right(x: NodeIndex) -> Result<NodeIndex, TreeMathError> {
    let k = level(x);
    if k == 0 {
        return Err(TreeMathError::LeafHasNoChildren(x.0));
    }
    let r = u64::from(x.0) ^ (3u64 << (k - 1));
    // The right child of a node at level k is x + 2^(k-1): no overflow below
    // u32::MAX, whose right child would be outside 32 bits.
    u32::try_from(r)
        .map(NodeIndex)
        .map_err(|_| TreeMathError::ChildIndexTooLarge(x.0))
}

/// The parent of node `x` in a tree with `n_leaves` leaves.
pub fn parent(x: NodeIndex, n_leaves: u32) -> Result<NodeIndex, TreeMathError> {
    check_in_tree(x, n_leaves)?;
    if x == root(n_leaves)? {
        return Err(TreeMathError::RootHasNoParent(x.0));
    }
    let k = level(x);
    let xv = u64::from(x.0);
    let b = (xv >> (k + 1)) & 1;
    to_node((xv | (1u64 << k)) ^ (b << (k + 1)), n_leaves)
}

/// The other child of the node's parent.
pub fn sibling(x: NodeIndex, n_leaves: u32) -> Result<NodeIndex, TreeMathError> {
    let p = parent(x, n_leaves)?;
    if x < p { right(p) } else { left(p) }
}

/// The direct path of a node, ordered from the node's parent to the root
/// (RFC 9420 §4.1); empty for the root.
pub fn direct_path(x: NodeIndex, n_leaves: u32) -> Result<Vec<NodeIndex>, TreeMathError> {
    check_in_tree(x, n_leaves)?;
    let r = root(n_leaves)?;
    let mut d = Vec::with_capacity(level(r).saturating_sub(level(x)) as usize);
    let mut cur = x;
    while cur != r {
        cur = parent(cur, n_leaves)?;
        d.push(cur);
    }
    Ok(d)
}

/// The copath of a node: the siblings of the node and of each node of its
/// direct path except the root, ordered from leaf to root (RFC 9420 §4.1).
pub fn copath(x: NodeIndex, n_leaves: u32) -> Result<Vec<NodeIndex>, TreeMathError> {
    let d = direct_path(x, n_leaves)?;
    let mut path = Vec::with_capacity(d.len());
    path.push(x);
    path.extend_from_slice(&d);
    path.pop();
    path.into_iter().map(|y| sibling(y, n_leaves)).collect()
}

/// The lowest common ancestor of two nodes: the lowest node that is in the
/// direct paths (or equal to) both (RFC 9420 Appendix C,
/// `common_ancestor_direct`).
pub fn common_ancestor(x: NodeIndex, y: NodeIndex) -> NodeIndex {
    let (xv, yv) = (u64::from(x.0), u64::from(y.0));
    let lx = level(x) + 1;
    let ly = level(y) + 1;
    if lx <= ly && xv >> ly == yv >> ly {
        return y;
    }
    if ly <= lx && xv >> lx == yv >> lx {
        return x;
    }
    let (mut xn, mut yn, mut k) = (xv, yv, 0u32);
    while xn != yn {
        xn >>= 1;
        yn >>= 1;
        k += 1;
    }
    // k >= 1 here since x != y; the result is at most max(x, y) < 2^32.
    let v = (xn << k) + (1u64 << (k - 1)) - 1;
    NodeIndex(u32::try_from(v).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_indices_do_not_overflow() {
        assert_eq!(root(u32::MAX), Ok(NodeIndex(u32::MAX)));
        assert_eq!(level(NodeIndex(u32::MAX)), 32);
        assert!(left(NodeIndex(u32::MAX)).is_ok());
        assert_eq!(
            right(NodeIndex(u32::MAX)),
            Err(TreeMathError::ChildIndexTooLarge(u32::MAX))
        );
        assert_eq!(
            right(NodeIndex(6)),
            Err(TreeMathError::LeafHasNoChildren(6))
        );
        assert_eq!(
            parent(NodeIndex(u32::MAX), u32::MAX),
            Err(TreeMathError::RootHasNoParent(u32::MAX))
        );
        assert_eq!(
            parent(NodeIndex(8), 4),
            Err(TreeMathError::OutOfTree {
                node: 8,
                n_leaves: 4
            })
        );
        assert_eq!(root(0), Err(TreeMathError::EmptyTree));
        assert_eq!(
            LeafIndex(u32::MAX).node_index(),
            Err(TreeMathError::LeafIndexTooLarge(LeafIndex(u32::MAX)))
        );
        let dp = direct_path(NodeIndex(0), 1 << 31).expect("in tree");
        assert_eq!(dp.len(), 31);
        assert_eq!(dp.last(), Some(&NodeIndex((1 << 31) - 1)));
    }

    #[test]
    fn common_ancestor_matches_direct_paths() {
        // The semantic definition of Appendix C: the lowest node in both
        // direct paths (including the nodes themselves).
        let n = 16u32;
        for x in 0..node_width(n) as u32 {
            for y in 0..node_width(n) as u32 {
                let (x, y) = (NodeIndex(x), NodeIndex(y));
                let mut dx = vec![x];
                dx.extend(direct_path(x, n).expect("in tree"));
                let mut dy = vec![y];
                dy.extend(direct_path(y, n).expect("in tree"));
                let lowest = dx
                    .iter()
                    .filter(|a| dy.contains(a))
                    .min_by_key(|a| level(**a))
                    .copied()
                    .expect("root is common");
                assert_eq!(common_ancestor(x, y), lowest, "x={x:?} y={y:?}");
            }
        }
    }
}

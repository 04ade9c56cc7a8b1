//! The ratchet tree and TreeKEM (RFC 9420 §4, §7, Appendix C).
//!
//! - [`RatchetTree`]: the public state of the tree in the array
//!   representation, with resolution (§4.1.1), filtered direct path
//!   (§4.1.2), the tree operations of Add / Update / Remove (§7.7, §12.1),
//!   and tree hashes (§7.8) cached per node and recomputed only along
//!   changed paths. `Clone` is cheap (nodes are shared behind `Arc`), so the
//!   group engine can stage a commit on a copy.
//! - [`UnverifiedTree`]: a tree received from the network (`ratchet_tree`
//!   extension or out of band); it becomes a [`RatchetTree`] only through
//!   [`UnverifiedTree::verify`] (§7.9.2, §12.4.3.1).
//! - [`validate_leaf_node`]: LeafNode validation (§7.3) for KeyPackages,
//!   Update proposals and Commits.
//! - TreeKEM (§7.4–§7.6): [`prepare_update_path`] / [`PreparedUpdatePath::encrypt`]
//!   to create an UpdatePath, [`merge_update_path`] / [`decrypt_update_path`]
//!   to process one, and [`TreeKemPrivate`], a member's private keys.
//!
//! # Use by the group engine
//!
//! Creating a commit with a path (§12.4.1), on a staged copy `t` of the
//! tree with the proposals applied (Update/Remove/Add through
//! [`RatchetTree::update_leaf`], [`RatchetTree::remove_leaf`],
//! [`RatchetTree::add_leaf`]):
//! 1. `let prep = prepare_update_path(&mut t, me, group_id, &params, custody, sig_key)?`;
//! 2. `provisional.tree_hash = t.tree_hash()?`, encode the provisional
//!    GroupContext;
//! 3. `let created = prep.encrypt(&t, &gc_bytes, &added_leaves)?` gives the
//!    UpdatePath, `commit_secret`, the new [`TreeKemPrivate`], and
//!    [`CreatedUpdatePath::path_secret_for`] each new member's Welcome.
//!
//! Processing one (§12.4.2), on a staged copy `t`:
//! 1. `let merged = merge_update_path(&mut t, sender, &path, &group_params, &added)?`;
//! 2. `provisional.tree_hash = t.tree_hash()?`, encode the GroupContext;
//! 3. `let out = decrypt_update_path(&t, &merged, &path, &private, custody, &gc_bytes)?`.
//!
//! When the staged commit is merged: `old_private.retire(&new_private,
//! custody)` destroys the replaced leaf key (§9.2); when it is discarded:
//! `new_private.retire(&old_private, custody)`. Joining (§12.4.3.1):
//! [`UnverifiedTree::new`] + [`UnverifiedTree::verify`], then
//! [`TreeKemPrivate::new`] and [`TreeKemPrivate::join_at`] with the Welcome's
//! path secret at the lowest common ancestor of the joiner and the signer.

mod error;
mod hashes;
mod private;
mod ratchet_tree;
pub(crate) mod saved;
mod store;
pub(crate) use store::ChunkRef;
#[cfg(test)]
mod tests;
mod treekem;
mod validation;

pub use error::{
    CapabilityKind, KeyKind, LeafNodeError, LeafNodeSourceType, MergeMismatch, TreeError, TreeShape,
};
pub use private::TreeKemPrivate;
pub use ratchet_tree::RatchetTree;
pub use treekem::{
    CreatedUpdatePath, LeafNodeParams, MergedUpdatePath, PreparedUpdatePath, ProcessedUpdatePath,
    decrypt_update_path, merge_update_path, prepare_update_path, sign_leaf_node,
};
pub use validation::{GroupParams, LeafNodeUsage, UnverifiedTree, validate_leaf_node};

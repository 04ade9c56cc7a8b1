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

mod error;
mod hashes;
mod private;
mod ratchet_tree;
mod store;
#[cfg(test)]
mod tests;
mod treekem;
mod validation;

pub use error::{LeafNodeError, TreeError};
pub use private::TreeKemPrivate;
pub use ratchet_tree::RatchetTree;
pub use treekem::{
    CreatedUpdatePath, LeafNodeParams, MergedUpdatePath, PreparedUpdatePath, ProcessedUpdatePath,
    decrypt_update_path, merge_update_path, prepare_update_path, sign_leaf_node,
};
pub use validation::{GroupParams, LeafNodeUsage, UnverifiedTree, validate_leaf_node};

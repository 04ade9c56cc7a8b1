//! Tree hashes (RFC 9420 §7.8) and parent hashes (§7.9).

use hsmls_crypto::{CipherSuiteProvider, Digest};
use tls_codec::Serialize;

use super::TreeError;
use crate::codec::vl::vl_bytes;
use crate::codec::{CodecError, HpkePublicKey, LeafNode, ParentNode};
use crate::tree_math::NodeIndex;

/// `NodeType` values of TreeHashInput.
const LEAF: u8 = 1;
const PARENT: u8 = 2;

fn codec(e: tls_codec::Error) -> TreeError {
    TreeError::Codec(CodecError::from(e))
}

/// The tree hash of leaf node `x`: `Hash(TreeHashInput)` with a
/// `LeafNodeHashInput { leaf_index, optional<LeafNode> }`.
pub(super) fn leaf_tree_hash(
    provider: &dyn CipherSuiteProvider,
    x: NodeIndex,
    leaf: Option<&LeafNode>,
) -> Result<Digest, TreeError> {
    let leaf_index = x.0 / 2;
    let mut buf = Vec::with_capacity(6 + leaf.map_or(0, tls_codec::Size::tls_serialized_len));
    buf.push(LEAF);
    buf.extend_from_slice(&leaf_index.to_be_bytes());
    match leaf {
        None => buf.push(0),
        Some(l) => {
            buf.push(1);
            l.tls_serialize(&mut buf).map_err(codec)?;
        }
    }
    Ok(provider.hash(&[&buf]))
}

/// The tree hash of a parent node: `Hash(TreeHashInput)` with a
/// `ParentNodeHashInput { optional<ParentNode>, left_hash<V>, right_hash<V> }`.
pub(super) fn parent_tree_hash(
    provider: &dyn CipherSuiteProvider,
    parent: Option<&ParentNode>,
    left_hash: &[u8],
    right_hash: &[u8],
) -> Result<Digest, TreeError> {
    let mut buf = Vec::with_capacity(
        160 + parent.map_or(0, tls_codec::Size::tls_serialized_len)
            + left_hash.len()
            + right_hash.len(),
    );
    buf.push(PARENT);
    match parent {
        None => buf.push(0),
        Some(p) => {
            buf.push(1);
            p.tls_serialize(&mut buf).map_err(codec)?;
        }
    }
    vl_bytes::tls_serialize(left_hash, &mut buf).map_err(codec)?;
    vl_bytes::tls_serialize(right_hash, &mut buf).map_err(codec)?;
    Ok(provider.hash(&[&buf]))
}

/// The parent hash of a node P (§7.9): `Hash(ParentHashInput {
/// encryption_key, parent_hash<V>, original_sibling_tree_hash<V> })`.
pub(super) fn parent_hash(
    provider: &dyn CipherSuiteProvider,
    encryption_key: &HpkePublicKey,
    parent_hash: &[u8],
    original_sibling_tree_hash: &[u8],
) -> Result<Digest, TreeError> {
    let mut buf = Vec::with_capacity(
        12 + encryption_key.as_slice().len() + parent_hash.len() + original_sibling_tree_hash.len(),
    );
    encryption_key.tls_serialize(&mut buf).map_err(codec)?;
    vl_bytes::tls_serialize(parent_hash, &mut buf).map_err(codec)?;
    vl_bytes::tls_serialize(original_sibling_tree_hash, &mut buf).map_err(codec)?;
    Ok(provider.hash(&[&buf]))
}

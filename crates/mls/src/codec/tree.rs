//! Ratchet tree wire types (RFC 9420 §7): LeafNode, ParentNode, Node,
//! UpdatePath.

use tls_codec::{Serialize, Size, TlsDeserializeBytes, TlsSerialize, TlsSize};

use super::CodecError;
use super::types::{
    Capabilities, Credential, Extension, HpkePublicKey, Lifetime, SignaturePublicKey,
};
use super::vl::{vl_bytes, vl_vec};
use crate::tree_math::LeafIndex;

/// `LeafNodeSource` with its `select` body (RFC 9420 §7.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
#[repr(u8)]
pub enum LeafNodeSource {
    /// `key_package(1)`: the LeafNode of a KeyPackage, with its lifetime.
    #[tls_codec(discriminant = 1)]
    KeyPackage(Lifetime),
    /// `update(2)`: the LeafNode of an Update proposal.
    #[tls_codec(discriminant = 2)]
    Update,
    /// `commit(3)`: the LeafNode of an UpdatePath, with `opaque parent_hash<V>`.
    #[tls_codec(discriminant = 3)]
    Commit(#[tls_codec(with = "vl_bytes")] Vec<u8>),
}

/// `LeafNode` (RFC 9420 §7.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct LeafNode {
    /// `HPKEPublicKey encryption_key`
    pub encryption_key: HpkePublicKey,
    /// `SignaturePublicKey signature_key`
    pub signature_key: SignaturePublicKey,
    /// `Credential credential`
    pub credential: Credential,
    /// `Capabilities capabilities`
    pub capabilities: Capabilities,
    /// `LeafNodeSource leaf_node_source` and its `select` body.
    pub leaf_node_source: LeafNodeSource,
    /// `Extension extensions<V>`
    #[tls_codec(with = "vl_vec")]
    pub extensions: Vec<Extension>,
    /// `opaque signature<V>`: SignWithLabel(., "LeafNodeTBS", LeafNodeTBS)
    #[tls_codec(with = "vl_bytes")]
    pub signature: Vec<u8>,
}

impl LeafNode {
    /// The encoding of `LeafNodeTBS` (RFC 9420 §7.2): every field but the
    /// signature, followed for `update` and `commit` sources by the group id
    /// and the leaf index (`group` must then be given; for `key_package` it
    /// must be `None`).
    pub fn to_be_signed(&self, group: Option<(&[u8], LeafIndex)>) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(self.tls_serialized_len());
        self.encryption_key.tls_serialize(&mut out)?;
        self.signature_key.tls_serialize(&mut out)?;
        self.credential.tls_serialize(&mut out)?;
        self.capabilities.tls_serialize(&mut out)?;
        self.leaf_node_source.tls_serialize(&mut out)?;
        vl_vec::tls_serialize(&self.extensions, &mut out)?;
        match (&self.leaf_node_source, group) {
            (LeafNodeSource::KeyPackage(_), None) => {}
            (LeafNodeSource::Update | LeafNodeSource::Commit(_), Some((group_id, leaf_index))) => {
                vl_bytes::tls_serialize(group_id, &mut out)?;
                leaf_index.tls_serialize(&mut out)?;
            }
            (LeafNodeSource::KeyPackage(_), Some(_)) => {
                return Err(CodecError::Encoding(
                    "LeafNodeTBS of a key_package leaf has no group id and leaf index".into(),
                ));
            }
            (_, None) => {
                return Err(CodecError::Encoding(
                    "LeafNodeTBS of an update or commit leaf needs group id and leaf index".into(),
                ));
            }
        }
        Ok(out)
    }
}

/// `ParentNode` (RFC 9420 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct ParentNode {
    /// `HPKEPublicKey encryption_key`
    pub encryption_key: HpkePublicKey,
    /// `opaque parent_hash<V>`
    #[tls_codec(with = "vl_bytes")]
    pub parent_hash: Vec<u8>,
    /// `uint32 unmerged_leaves<V>`
    #[tls_codec(with = "vl_vec")]
    pub unmerged_leaves: Vec<LeafIndex>,
}

/// `NodeType` (RFC 9420 §7.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
#[repr(u8)]
pub enum NodeType {
    /// `leaf(1)`
    Leaf = 1,
    /// `parent(2)`
    Parent = 2,
}

/// `Node` (RFC 9420 §12.4.3.3): a leaf or a parent node.
#[allow(
    clippy::large_enum_variant,
    reason = "wire type mirroring the RFC; most values are of the large variant"
)]
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
#[repr(u8)]
pub enum Node {
    /// `leaf(1)`
    #[tls_codec(discriminant = 1)]
    Leaf(LeafNode),
    /// `parent(2)`
    #[tls_codec(discriminant = 2)]
    Parent(ParentNode),
}

impl Node {
    /// The `node_type` of this node.
    pub fn node_type(&self) -> NodeType {
        match self {
            Node::Leaf(_) => NodeType::Leaf,
            Node::Parent(_) => NodeType::Parent,
        }
    }
}

/// `optional<Node> ratchet_tree<V>` (RFC 9420 §12.4.3.3): the nodes of the
/// tree in array order, `None` for blank nodes. This is also the data of
/// the `ratchet_tree` extension.
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct RatchetTree(#[tls_codec(with = "vl_vec")] pub Vec<Option<Node>>);

/// `HPKECiphertext` (RFC 9420 §7.6).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct HpkeCiphertext {
    /// `opaque kem_output<V>`
    #[tls_codec(with = "vl_bytes")]
    pub kem_output: Vec<u8>,
    /// `opaque ciphertext<V>`
    #[tls_codec(with = "vl_bytes")]
    pub ciphertext: Vec<u8>,
}

/// `UpdatePathNode` (RFC 9420 §7.6).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct UpdatePathNode {
    /// `HPKEPublicKey encryption_key`
    pub encryption_key: HpkePublicKey,
    /// `HPKECiphertext encrypted_path_secret<V>`
    #[tls_codec(with = "vl_vec")]
    pub encrypted_path_secret: Vec<HpkeCiphertext>,
}

/// `UpdatePath` (RFC 9420 §7.6).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct UpdatePath {
    /// `LeafNode leaf_node`
    pub leaf_node: LeafNode,
    /// `UpdatePathNode nodes<V>`
    #[tls_codec(with = "vl_vec")]
    pub nodes: Vec<UpdatePathNode>,
}

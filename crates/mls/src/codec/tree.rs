//! Ratchet tree wire types (RFC 9420 §7): LeafNode, ParentNode, Node,
//! UpdatePath.

use tls_codec::{DeserializeBytes, Serialize, Size, TlsDeserializeBytes, TlsSerialize, TlsSize};

use super::CodecError;
use super::types::{
    Capabilities, Credential, Extension, HpkePublicKey, Lifetime, SignaturePublicKey,
};
use super::vl::{split_vl, vl_bytes, vl_header_len, vl_vec, write_vl_header};
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
    pub encrypted_path_secret: HpkeCiphertexts,
}

/// `HPKECiphertext encrypted_path_secret<V>` (RFC 9420 §7.6), kept as its
/// encoding. A commit's UpdatePath in a group with blank parents carries
/// a ciphertext for almost every member, and a member decrypts one of
/// them: decoding checks the framing of every element (two vectors, each
/// inside the element, the elements inside the list, as the `vl_vec`
/// decoder does) and copies the list once, instead of allocating two
/// vectors per ciphertext; [`HpkeCiphertexts::get`] decodes one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct HpkeCiphertexts {
    /// The encoded elements (the vector's content, without its header).
    encoded: Vec<u8>,
    /// The number of elements.
    len: usize,
}

impl HpkeCiphertexts {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of ciphertexts.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a ciphertext.
    pub fn push(&mut self, ciphertext: &HpkeCiphertext) -> Result<(), CodecError> {
        ciphertext.tls_serialize(&mut self.encoded)?;
        self.len += 1;
        Ok(())
    }

    /// The `index`-th ciphertext, decoded.
    pub fn get(&self, index: usize) -> Option<HpkeCiphertext> {
        self.iter().nth(index)
    }

    /// The ciphertexts in order, decoded one by one.
    pub fn iter(&self) -> impl Iterator<Item = HpkeCiphertext> + '_ {
        let mut rest = self.encoded.as_slice();
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            // The framing was checked when the list was decoded or built.
            let (ct, next) = HpkeCiphertext::tls_deserialize_bytes(rest).ok()?;
            rest = next;
            Some(ct)
        })
    }

    /// The ciphertexts, decoded.
    pub fn to_vec(&self) -> Vec<HpkeCiphertext> {
        self.iter().collect()
    }
}

impl TryFrom<Vec<HpkeCiphertext>> for HpkeCiphertexts {
    type Error = CodecError;

    fn try_from(v: Vec<HpkeCiphertext>) -> Result<Self, CodecError> {
        let mut out = HpkeCiphertexts::new();
        for ct in &v {
            out.push(ct)?;
        }
        Ok(out)
    }
}

impl Size for HpkeCiphertexts {
    fn tls_serialized_len(&self) -> usize {
        vl_header_len(self.encoded.len()) + self.encoded.len()
    }
}

impl Serialize for HpkeCiphertexts {
    fn tls_serialize<W: std::io::Write>(&self, writer: &mut W) -> Result<usize, tls_codec::Error> {
        let header = write_vl_header(self.encoded.len(), writer)?;
        writer.write_all(&self.encoded)?;
        Ok(header + self.encoded.len())
    }
}

impl DeserializeBytes for HpkeCiphertexts {
    fn tls_deserialize_bytes(bytes: &[u8]) -> Result<(Self, &[u8]), tls_codec::Error> {
        let (content, rest) = split_vl(bytes)?;
        let mut walk = content;
        let mut len = 0;
        while !walk.is_empty() {
            // kem_output<V>, ciphertext<V>: at least two bytes.
            let (_, after_kem_output) = split_vl(walk)?;
            let (_, after_ciphertext) = split_vl(after_kem_output)?;
            walk = after_ciphertext;
            len += 1;
        }
        Ok((
            HpkeCiphertexts {
                encoded: content.to_vec(),
                len,
            },
            rest,
        ))
    }
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

//! Errors of the ratchet tree and TreeKEM. No variant carries secret bytes.

use hsmls_crypto::CryptoError;
use hsmls_custody::CustodyError;

use crate::codec::{CodecError, LeafNodeSource};
use crate::tree_math::{LeafIndex, NodeIndex, TreeMathError};

/// Why a LeafNode is invalid (RFC 9420 §7.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeafNodeError {
    /// The signature over LeafNodeTBS does not verify with `signature_key`.
    #[error("the LeafNode signature does not verify")]
    InvalidSignature,
    /// `signature_key` is not a valid signature public key for the suite.
    #[error("invalid signature_key")]
    InvalidSignatureKey,
    /// `encryption_key` is not a valid HPKE public key for the suite.
    #[error("invalid encryption_key")]
    InvalidEncryptionKey,
    /// `leaf_node_source` is not the one its use requires (§7.3).
    #[error("leaf_node_source is {actual}, expected {expected}")]
    WrongSource {
        /// The source required here.
        expected: LeafNodeSourceType,
        /// The source found.
        actual: LeafNodeSourceType,
    },
    /// `capabilities.cipher_suites` lacks the group's cipher suite.
    #[error("capabilities do not list the group's cipher suite 0x{0:04x}")]
    CipherSuiteNotSupported(u16),
    /// `capabilities.versions` lacks the group's protocol version.
    #[error("capabilities do not list the group's protocol version {0}")]
    VersionNotSupported(u16),
    /// A type required by the group's `required_capabilities` (§11.1) is
    /// missing from `capabilities`.
    #[error("capabilities lack the required {kind} type {value}")]
    MissingRequiredCapability {
        /// Which list of `required_capabilities` names the type.
        kind: CapabilityKind,
        /// The missing type.
        value: u16,
    },
    /// The credential's type is not in the leaf's own `capabilities.credentials`.
    #[error("credential type {0} is not listed in the leaf's capabilities")]
    CredentialTypeNotInCapabilities(u16),
    /// An extension of the LeafNode is not listed in its
    /// `capabilities.extensions` (§7.3).
    #[error("extension type {0} is not listed in the leaf's capabilities")]
    ExtensionNotInCapabilities(u16),
    /// The current time is outside the `lifetime` of a key_package leaf.
    #[error("the current time {now} is outside the lifetime [{not_before}, {not_after}]")]
    OutsideLifetime {
        /// The time checked.
        now: u64,
        /// `lifetime.not_before`.
        not_before: u64,
        /// `lifetime.not_after`.
        not_after: u64,
    },
    /// The `lifetime` of a key_package leaf is longer than the
    /// application's maximum (§7.2: applications define one).
    #[error("the lifetime [{not_before}, {not_after}] is longer than {max} seconds")]
    LifetimeTooLong {
        /// `lifetime.not_before`.
        not_before: u64,
        /// `lifetime.not_after`.
        not_after: u64,
        /// The longest lifetime allowed.
        max: u64,
    },
}

/// Errors of the ratchet tree and TreeKEM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// Encoding a structure failed.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// A cipher-suite operation failed (HPKE open, key derivation, ...).
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
    /// A key-custody operation failed.
    #[error("key custody: {0}")]
    Custody(#[from] CustodyError),
    /// A node or leaf index does not fit the tree.
    #[error("tree math: {0}")]
    TreeMath(#[from] TreeMathError),
    /// A received tree has no nodes, its last node is blank (§12.4.3.3),
    /// or it has no member.
    #[error("malformed ratchet tree: {0}")]
    MalformedTree(TreeShape),
    /// A node of the wrong type (a parent at an even index or a leaf at an
    /// odd one).
    #[error("node {0:?} has the wrong node type for its position")]
    WrongNodeType(NodeIndex),
    /// The tree would exceed the supported number of leaves.
    #[error("the tree would exceed {0} leaves")]
    TooManyLeaves(u32),
    /// The leaf index is outside the tree.
    #[error("leaf {0:?} is outside the tree")]
    LeafOutOfRange(LeafIndex),
    /// The leaf is blank where a member was expected.
    #[error("leaf {0:?} is blank")]
    BlankLeaf(LeafIndex),
    /// A LeafNode is invalid (§7.3).
    #[error("invalid LeafNode{}: {reason}", leaf.map(|l| format!(" at leaf {}", l.0)).unwrap_or_default())]
    InvalidLeafNode {
        /// The leaf, when in a tree.
        leaf: Option<LeafIndex>,
        /// Why.
        reason: LeafNodeError,
    },
    /// Two leaves share a signature key, or two nodes an encryption key
    /// (§7.3, §12.4.3.1).
    #[error("duplicate {kind} at {node:?}")]
    DuplicateKey {
        /// Which key is duplicated.
        kind: KeyKind,
        /// A node holding the duplicate.
        node: NodeIndex,
    },
    /// A leaf's credential type is not supported by every member, or the
    /// leaf does not support a credential type in use (§7.3).
    #[error("credential type {0} is not supported by every member")]
    CredentialTypeNotShared(u16),
    /// The tree hash differs from the expected one (§12.4.3.1).
    #[error("tree hash mismatch")]
    TreeHashMismatch,
    /// A non-blank parent node is not parent-hash valid (§7.9.2).
    #[error("parent node {0:?} is not parent-hash valid")]
    ParentHashInvalid(NodeIndex),
    /// A parent node's `unmerged_leaves` is inconsistent (§7.1, §12.4.3.1).
    #[error("invalid unmerged_leaves at parent node {0:?}")]
    InvalidUnmergedLeaves(NodeIndex),
    /// The `parent_hash` of an UpdatePath's LeafNode does not match the
    /// parent hash of the path (§7.9.2).
    #[error("the UpdatePath leaf's parent_hash does not match the path")]
    UpdatePathParentHashMismatch,
    /// The UpdatePath does not have one node per filtered direct path node.
    #[error("UpdatePath has {actual} nodes, the filtered direct path has {expected}")]
    UpdatePathLength {
        /// Length of the filtered direct path.
        expected: usize,
        /// Nodes in the UpdatePath.
        actual: usize,
    },
    /// An UpdatePathNode does not have one ciphertext per node of the copath
    /// child's resolution (§7.6).
    #[error("UpdatePathNode for {node:?} has {actual} ciphertexts, expected {expected}")]
    UpdatePathCiphertextCount {
        /// The filtered direct path node.
        node: NodeIndex,
        /// Size of the resolution (excluding new leaves).
        expected: usize,
        /// Ciphertexts present.
        actual: usize,
    },
    /// An UpdatePathNode's `encryption_key` is not a valid HPKE public
    /// key of the suite (§7.6).
    #[error("the UpdatePath's encryption_key for {0:?} is not a valid public key")]
    InvalidPathKey(NodeIndex),
    /// A public key derived from a decrypted path secret differs from the
    /// one in the UpdatePath or tree (§7.5).
    #[error("derived public key differs from the one at node {0:?}")]
    PublicKeyMismatch(NodeIndex),
    /// This member has no private key for any node that the UpdatePath
    /// encrypts to (its state is out of sync with the group).
    #[error("no private key to decrypt the UpdatePath")]
    NoDecryptionKey,
    /// The UpdatePath was sent by this member itself (apply the result of
    /// the creation instead).
    #[error("cannot process an UpdatePath sent by this member")]
    OwnUpdatePath,
    /// The path secret given for a node cannot be placed: the node is blank
    /// or not an ancestor of this member's leaf.
    #[error("node {0:?} is blank or not on this member's direct path")]
    NotOnDirectPath(NodeIndex),
    /// The merge result does not belong to this UpdatePath or tree.
    #[error("the merged UpdatePath does not match: {0}")]
    StaleMerge(MergeMismatch),
    /// A worker thread of a parallel step (leaf validation, path
    /// encryption) panicked: a bug, reported instead of propagated.
    #[error("a worker thread panicked")]
    WorkerPanicked,
}

/// The type of a LeafNode's `leaf_node_source` (RFC 9420 §7.2:
/// `enum { key_package(1), update(2), commit(3) } LeafNodeSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeafNodeSourceType {
    /// `key_package`: the leaf of a KeyPackage.
    #[error("key_package")]
    KeyPackage,
    /// `update`: the leaf of an Update proposal.
    #[error("update")]
    Update,
    /// `commit`: the leaf of a commit's UpdatePath.
    #[error("commit")]
    Commit,
}

impl LeafNodeSourceType {
    /// The type of `source`.
    pub fn of(source: &LeafNodeSource) -> Self {
        match source {
            LeafNodeSource::KeyPackage(_) => LeafNodeSourceType::KeyPackage,
            LeafNodeSource::Update => LeafNodeSourceType::Update,
            LeafNodeSource::Commit(_) => LeafNodeSourceType::Commit,
        }
    }
}

/// The list of `required_capabilities` (RFC 9420 §11.1) that names a
/// missing type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapabilityKind {
    /// `extension_types`.
    #[error("extension")]
    Extension,
    /// `proposal_types`.
    #[error("proposal")]
    Proposal,
    /// `credential_types`.
    #[error("credential")]
    Credential,
}

/// Which public key of a node is duplicated (RFC 9420 §7.3, §12.4.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyKind {
    /// An HPKE `encryption_key` (unique among all nodes).
    #[error("encryption_key")]
    EncryptionKey,
    /// A `signature_key` (unique among leaves).
    #[error("signature_key")]
    SignatureKey,
}

/// What is wrong with the shape of a received ratchet tree (RFC 9420
/// §12.4.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeShape {
    /// §12.4.3.3: the tree has no nodes.
    #[error("the tree has no nodes")]
    NoNodes,
    /// §12.4.3.3: the last node of the array is blank (the sender must
    /// truncate trailing blanks).
    #[error("the last node is blank")]
    LastNodeBlank,
    /// The tree holds no member (every leaf is blank).
    #[error("the tree has no members")]
    NoMembers,
}

/// How a merged UpdatePath or a prepared path does not match the tree or
/// the UpdatePath it is used with (a caller mixing results of different
/// trees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MergeMismatch {
    /// Fewer new public keys than nodes of the filtered direct path.
    #[error("fewer public keys than path nodes")]
    KeyCount,
    /// A resolution holds a node without an encryption key.
    #[error("a blank node in a resolution")]
    BlankInResolution,
    /// An encryption job names a path node that does not exist.
    #[error("a path index beyond the path")]
    PathIndex,
    /// The merged path and the UpdatePath differ in length.
    #[error("the merged path and the UpdatePath differ in length")]
    PathLength,
}

impl TreeError {
    pub(crate) fn leaf(leaf: Option<LeafIndex>, reason: LeafNodeError) -> Self {
        TreeError::InvalidLeafNode { leaf, reason }
    }
}

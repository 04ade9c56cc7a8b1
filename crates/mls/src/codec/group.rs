//! KeyPackage, GroupContext, GroupInfo and Welcome (RFC 9420 §8.1, §10,
//! §12.4.3).

use tls_codec::{Serialize, Size, TlsDeserializeBytes, TlsSerialize, TlsSize};

use super::CodecError;
use super::proposals::PreSharedKeyId;
use super::tree::{HpkeCiphertext, LeafNode};
use super::types::{CipherSuite, Extension, HpkePublicKey, KeyPackageRef, Mac, ProtocolVersion};
use super::vl::{SecretBytes, vl_bytes, vl_vec};
use crate::tree_math::LeafIndex;

/// `KeyPackage` (RFC 9420 §10).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct KeyPackage {
    /// `ProtocolVersion version`
    pub version: ProtocolVersion,
    /// `CipherSuite cipher_suite`
    pub cipher_suite: CipherSuite,
    /// `HPKEPublicKey init_key`
    pub init_key: HpkePublicKey,
    /// `LeafNode leaf_node`
    pub leaf_node: LeafNode,
    /// `Extension extensions<V>`
    #[tls_codec(with = "vl_vec")]
    pub extensions: Vec<Extension>,
    /// `opaque signature<V>`: SignWithLabel(., "KeyPackageTBS", KeyPackageTBS)
    #[tls_codec(with = "vl_bytes")]
    pub signature: Vec<u8>,
}

impl KeyPackage {
    /// The encoding of `KeyPackageTBS`: every field but the signature.
    pub fn to_be_signed(&self) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(self.tls_serialized_len());
        self.version.tls_serialize(&mut out)?;
        self.cipher_suite.tls_serialize(&mut out)?;
        self.init_key.tls_serialize(&mut out)?;
        self.leaf_node.tls_serialize(&mut out)?;
        vl_vec::tls_serialize(&self.extensions, &mut out)?;
        Ok(out)
    }
}

/// `GroupContext` (RFC 9420 §8.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct GroupContext {
    /// `ProtocolVersion version = mls10`
    pub version: ProtocolVersion,
    /// `CipherSuite cipher_suite`
    pub cipher_suite: CipherSuite,
    /// `opaque group_id<V>`
    #[tls_codec(with = "vl_bytes")]
    pub group_id: Vec<u8>,
    /// `uint64 epoch`
    pub epoch: u64,
    /// `opaque tree_hash<V>`
    #[tls_codec(with = "vl_bytes")]
    pub tree_hash: Vec<u8>,
    /// `opaque confirmed_transcript_hash<V>`
    #[tls_codec(with = "vl_bytes")]
    pub confirmed_transcript_hash: Vec<u8>,
    /// `Extension extensions<V>`
    #[tls_codec(with = "vl_vec")]
    pub extensions: Vec<Extension>,
}

/// `GroupInfo` (RFC 9420 §12.4.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct GroupInfo {
    /// `GroupContext group_context`
    pub group_context: GroupContext,
    /// `Extension extensions<V>`
    #[tls_codec(with = "vl_vec")]
    pub extensions: Vec<Extension>,
    /// `MAC confirmation_tag`
    pub confirmation_tag: Mac,
    /// `uint32 signer`
    pub signer: LeafIndex,
    /// `opaque signature<V>`: SignWithLabel(., "GroupInfoTBS", GroupInfoTBS)
    #[tls_codec(with = "vl_bytes")]
    pub signature: Vec<u8>,
}

impl GroupInfo {
    /// The encoding of `GroupInfoTBS`: every field but the signature.
    pub fn to_be_signed(&self) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(self.tls_serialized_len());
        self.group_context.tls_serialize(&mut out)?;
        vl_vec::tls_serialize(&self.extensions, &mut out)?;
        self.confirmation_tag.tls_serialize(&mut out)?;
        self.signer.tls_serialize(&mut out)?;
        Ok(out)
    }
}

/// `PathSecret` (RFC 9420 §12.4.3.1). Secret: zeroized on drop.
#[derive(Debug, Clone, PartialEq, Eq, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct PathSecret {
    /// `opaque path_secret<V>`
    pub path_secret: SecretBytes,
}

/// `GroupSecrets` (RFC 9420 §12.4.3.1). Holds secrets: they are zeroized on
/// drop and not shown by Debug.
#[derive(Debug, Clone, PartialEq, Eq, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct GroupSecrets {
    /// `opaque joiner_secret<V>`
    pub joiner_secret: SecretBytes,
    /// `optional<PathSecret> path_secret`
    pub path_secret: Option<PathSecret>,
    /// `PreSharedKeyID psks<V>`
    #[tls_codec(with = "vl_vec")]
    pub psks: Vec<PreSharedKeyId>,
}

/// `EncryptedGroupSecrets` (RFC 9420 §12.4.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct EncryptedGroupSecrets {
    /// `KeyPackageRef new_member`
    pub new_member: KeyPackageRef,
    /// `HPKECiphertext encrypted_group_secrets`
    pub encrypted_group_secrets: HpkeCiphertext,
}

/// `Welcome` (RFC 9420 §12.4.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct Welcome {
    /// `CipherSuite cipher_suite`
    pub cipher_suite: CipherSuite,
    /// `EncryptedGroupSecrets secrets<V>`
    #[tls_codec(with = "vl_vec")]
    pub secrets: Vec<EncryptedGroupSecrets>,
    /// `opaque encrypted_group_info<V>`
    #[tls_codec(with = "vl_bytes")]
    pub encrypted_group_info: Vec<u8>,
}

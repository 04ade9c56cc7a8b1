//! Payloads of the extensions defined by RFC 9420 (§12.4.3.3, §11.1, §12.4.3.2,
//! §12.1.8.1, §5.3.3). Each is the `extension_data` of an [`Extension`].

use tls_codec::{TlsDeserializeBytes, TlsSerialize, TlsSize};

use super::tree::RatchetTree;
use super::types::{
    Credential, CredentialType, Extension, ExtensionType, HpkePublicKey, ProposalType,
    SignaturePublicKey,
};
use super::vl::{vl_bytes, vl_vec};
use super::{CodecError, Decode, Encode};

/// `application_id` extension data: `opaque application_id<V>` (RFC 9420 §5.3.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct ApplicationId(#[tls_codec(with = "vl_bytes")] pub Vec<u8>);

/// `required_capabilities` extension data (RFC 9420 §11.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct RequiredCapabilities {
    /// `ExtensionType extension_types<V>`
    #[tls_codec(with = "vl_vec")]
    pub extension_types: Vec<ExtensionType>,
    /// `ProposalType proposal_types<V>`
    #[tls_codec(with = "vl_vec")]
    pub proposal_types: Vec<ProposalType>,
    /// `CredentialType credential_types<V>`
    #[tls_codec(with = "vl_vec")]
    pub credential_types: Vec<CredentialType>,
}

/// `external_pub` extension data (RFC 9420 §12.4.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct ExternalPub {
    /// `HPKEPublicKey external_pub`
    pub external_pub: HpkePublicKey,
}

/// `ExternalSender` (RFC 9420 §12.1.8.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct ExternalSender {
    /// `SignaturePublicKey signature_key`
    pub signature_key: SignaturePublicKey,
    /// `Credential credential`
    pub credential: Credential,
}

/// `external_senders` extension data: `ExternalSender external_senders<V>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct ExternalSenders(#[tls_codec(with = "vl_vec")] pub Vec<ExternalSender>);

/// The ratchet tree carried in a `ratchet_tree` extension (RFC 9420 §12.4.3.3).
pub type RatchetTreeExtension = RatchetTree;

/// An extension payload type with its extension type.
pub trait ExtensionData: Decode + Encode {
    /// The extension type whose data this is.
    const EXTENSION_TYPE: ExtensionType;
}

impl ExtensionData for ApplicationId {
    const EXTENSION_TYPE: ExtensionType = ExtensionType::APPLICATION_ID;
}
impl ExtensionData for RatchetTree {
    const EXTENSION_TYPE: ExtensionType = ExtensionType::RATCHET_TREE;
}
impl ExtensionData for RequiredCapabilities {
    const EXTENSION_TYPE: ExtensionType = ExtensionType::REQUIRED_CAPABILITIES;
}
impl ExtensionData for ExternalPub {
    const EXTENSION_TYPE: ExtensionType = ExtensionType::EXTERNAL_PUB;
}
impl ExtensionData for ExternalSenders {
    const EXTENSION_TYPE: ExtensionType = ExtensionType::EXTERNAL_SENDERS;
}

impl Extension {
    /// Wraps an extension payload into an [`Extension`].
    pub fn from_data<T: ExtensionData>(data: &T) -> Result<Self, CodecError> {
        Ok(Extension {
            extension_type: T::EXTENSION_TYPE,
            extension_data: data.encode()?,
        })
    }

    /// Decodes this extension's data as `T`, or `None` if the extension is of
    /// another type. The data must be exactly one `T`.
    pub fn data_as<T: ExtensionData>(&self) -> Option<Result<T, CodecError>> {
        (self.extension_type == T::EXTENSION_TYPE).then(|| T::decode(&self.extension_data))
    }
}

/// Finds the extension of type `T` in a list and decodes its data.
pub fn find_extension<T: ExtensionData>(extensions: &[Extension]) -> Option<Result<T, CodecError>> {
    extensions.iter().find_map(Extension::data_as::<T>)
}

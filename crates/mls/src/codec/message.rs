//! `MLSMessage` (RFC 9420 §6), the top-level wire structure.

use std::io::Write;

use tls_codec::{
    DeserializeBytes, Error, Serialize, Size, TlsDeserializeBytes, TlsSerialize, TlsSize,
};

use super::framing::{PrivateMessage, PublicMessage};
use super::group::{GroupInfo, KeyPackage, Welcome};
use super::types::{ProtocolVersion, WireFormat};

/// The `select (MLSMessage.wire_format)` body. Unknown wire formats are a
/// decoding error ([`super::CodecError::UnknownValue`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
#[repr(u16)]
pub enum MlsMessageBody {
    /// `mls_public_message(1)`
    #[tls_codec(discriminant = 1)]
    PublicMessage(PublicMessage),
    /// `mls_private_message(2)`
    #[tls_codec(discriminant = 2)]
    PrivateMessage(PrivateMessage),
    /// `mls_welcome(3)`
    #[tls_codec(discriminant = 3)]
    Welcome(Welcome),
    /// `mls_group_info(4)`
    #[tls_codec(discriminant = 4)]
    GroupInfo(GroupInfo),
    /// `mls_key_package(5)`
    #[tls_codec(discriminant = 5)]
    KeyPackage(KeyPackage),
}

impl MlsMessageBody {
    /// The wire format of this body.
    pub fn wire_format(&self) -> WireFormat {
        match self {
            MlsMessageBody::PublicMessage(_) => WireFormat::PUBLIC_MESSAGE,
            MlsMessageBody::PrivateMessage(_) => WireFormat::PRIVATE_MESSAGE,
            MlsMessageBody::Welcome(_) => WireFormat::WELCOME,
            MlsMessageBody::GroupInfo(_) => WireFormat::GROUP_INFO,
            MlsMessageBody::KeyPackage(_) => WireFormat::KEY_PACKAGE,
        }
    }
}

/// `MLSMessage` (RFC 9420 §6). The version is always `mls10`: decoding
/// rejects any other, since another version's body cannot be parsed.
/// Decode with [`super::Decode::decode`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MlsMessage {
    /// `WireFormat wire_format` and its body.
    pub body: MlsMessageBody,
}

impl MlsMessage {
    /// `ProtocolVersion version = mls10`
    pub fn version(&self) -> ProtocolVersion {
        ProtocolVersion::MLS10
    }

    /// The wire format.
    pub fn wire_format(&self) -> WireFormat {
        self.body.wire_format()
    }
}

impl Size for MlsMessage {
    fn tls_serialized_len(&self) -> usize {
        ProtocolVersion::MLS10.tls_serialized_len() + self.body.tls_serialized_len()
    }
}

impl Serialize for MlsMessage {
    fn tls_serialize<W: Write>(&self, writer: &mut W) -> Result<usize, Error> {
        Ok(ProtocolVersion::MLS10.tls_serialize(writer)? + self.body.tls_serialize(writer)?)
    }
}

impl DeserializeBytes for MlsMessage {
    fn tls_deserialize_bytes(bytes: &[u8]) -> Result<(Self, &[u8]), Error> {
        let (version, rest) = ProtocolVersion::tls_deserialize_bytes(bytes)?;
        if version != ProtocolVersion::MLS10 {
            return Err(Error::UnknownValue(version.0.into()));
        }
        let (body, rest) = MlsMessageBody::tls_deserialize_bytes(rest)?;
        Ok((MlsMessage { body }, rest))
    }
}

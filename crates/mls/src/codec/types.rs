//! Basic wire types: registry values, keys, references, extensions,
//! credentials and capabilities (RFC 9420 §5, §7.2, §13).

use std::io::Write;

use tls_codec::{
    DeserializeBytes, Error, Serialize, Size, TlsDeserializeBytes, TlsSerialize, TlsSize,
};

use super::vl::{vl_bytes, vl_vec};
use crate::tree_math::LeafIndex;

macro_rules! open_u16 {
    ($(#[$m:meta])* $name:ident { $($(#[$cm:meta])* $c:ident = $v:expr,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
                 TlsSize, TlsSerialize, TlsDeserializeBytes)]
        pub struct $name(pub u16);
        impl $name {
            $($(#[$cm])* pub const $c: $name = $name($v);)*
        }
        impl From<u16> for $name {
            fn from(v: u16) -> Self { $name(v) }
        }
        impl From<$name> for u16 {
            fn from(v: $name) -> u16 { v.0 }
        }
    };
}

open_u16!(
    /// `ProtocolVersion` (RFC 9420 §6): an open value, since capability lists
    /// may carry versions this implementation does not know.
    ProtocolVersion {
        /// `mls10(1)`.
        MLS10 = 1,
    }
);

open_u16!(
    /// `CipherSuite` (RFC 9420 §5.1, §17.1): the wire value only; the
    /// algorithms live in hsmls-crypto.
    CipherSuite {
        /// MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519
        MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519 = 1,
        /// MLS_128_DHKEMP256_AES128GCM_SHA256_P256
        MLS_128_DHKEMP256_AES128GCM_SHA256_P256 = 2,
        /// MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519
        MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_ED25519 = 3,
        /// MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448
        MLS_256_DHKEMX448_AES256GCM_SHA512_ED448 = 4,
        /// MLS_256_DHKEMP521_AES256GCM_SHA512_P521
        MLS_256_DHKEMP521_AES256GCM_SHA512_P521 = 5,
        /// MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448
        MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_ED448 = 6,
        /// MLS_256_DHKEMP384_AES256GCM_SHA384_P384
        MLS_256_DHKEMP384_AES256GCM_SHA384_P384 = 7,
    }
);

open_u16!(
    /// `ExtensionType` (RFC 9420 §13.4, §17.3): unknown types are kept.
    ExtensionType {
        /// `application_id(1)`
        APPLICATION_ID = 1,
        /// `ratchet_tree(2)`
        RATCHET_TREE = 2,
        /// `required_capabilities(3)`
        REQUIRED_CAPABILITIES = 3,
        /// `external_pub(4)`
        EXTERNAL_PUB = 4,
        /// `external_senders(5)`
        EXTERNAL_SENDERS = 5,
    }
);

open_u16!(
    /// `ProposalType` (RFC 9420 §12.1, §17.4) as listed in capabilities;
    /// a [`super::Proposal`] itself only decodes the known types.
    ProposalType {
        /// `add(1)`
        ADD = 1,
        /// `update(2)`
        UPDATE = 2,
        /// `remove(3)`
        REMOVE = 3,
        /// `psk(4)`
        PSK = 4,
        /// `reinit(5)`
        REINIT = 5,
        /// `external_init(6)`
        EXTERNAL_INIT = 6,
        /// `group_context_extensions(7)`
        GROUP_CONTEXT_EXTENSIONS = 7,
    }
);

open_u16!(
    /// `CredentialType` (RFC 9420 §5.3, §17.5) as listed in capabilities; a
    /// [`Credential`] itself only decodes the known types.
    CredentialType {
        /// `basic(1)`
        BASIC = 1,
        /// `x509(2)`
        X509 = 2,
    }
);

open_u16!(
    /// `WireFormat` (RFC 9420 §6, §17.2).
    WireFormat {
        /// `mls_public_message(1)`
        PUBLIC_MESSAGE = 1,
        /// `mls_private_message(2)`
        PRIVATE_MESSAGE = 2,
        /// `mls_welcome(3)`
        WELCOME = 3,
        /// `mls_group_info(4)`
        GROUP_INFO = 4,
        /// `mls_key_package(5)`
        KEY_PACKAGE = 5,
    }
);

macro_rules! vl_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash,
                 TlsSize, TlsSerialize, TlsDeserializeBytes)]
        pub struct $name(#[tls_codec(with = "vl_bytes")] pub Vec<u8>);
        impl $name {
            /// The bytes.
            pub fn as_slice(&self) -> &[u8] { &self.0 }
        }
        impl From<Vec<u8>> for $name {
            fn from(v: Vec<u8>) -> Self { $name(v) }
        }
        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] { &self.0 }
        }
    };
}

vl_newtype!(
    /// `opaque HPKEPublicKey<V>` (RFC 9420 §5.1.1).
    HpkePublicKey
);
vl_newtype!(
    /// `opaque SignaturePublicKey<V>` (RFC 9420 §5.1.1).
    SignaturePublicKey
);
vl_newtype!(
    /// `HashReference KeyPackageRef` (RFC 9420 §5.2).
    KeyPackageRef
);
vl_newtype!(
    /// `HashReference ProposalRef` (RFC 9420 §5.2).
    ProposalRef
);
vl_newtype!(
    /// `opaque MAC<V>` (RFC 9420 §6.1): a confirmation or membership tag.
    Mac
);

/// `uint32` leaf indices on the wire.
impl Size for LeafIndex {
    fn tls_serialized_len(&self) -> usize {
        4
    }
}

impl Serialize for LeafIndex {
    fn tls_serialize<W: Write>(&self, writer: &mut W) -> Result<usize, Error> {
        self.0.tls_serialize(writer)
    }
}

impl DeserializeBytes for LeafIndex {
    fn tls_deserialize_bytes(bytes: &[u8]) -> Result<(Self, &[u8]), Error> {
        let (v, rest) = u32::tls_deserialize_bytes(bytes)?;
        Ok((LeafIndex(v), rest))
    }
}

/// `Extension` (RFC 9420 §7.2, §13.4). The data of known types can be read
/// with their payload types ([`Extension::data_as`], e.g. a
/// [`super::RatchetTree`] or [`super::RequiredCapabilities`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct Extension {
    /// The extension type (open registry: unknown types are kept).
    pub extension_type: ExtensionType,
    /// `opaque extension_data<V>`
    #[tls_codec(with = "vl_bytes")]
    pub extension_data: Vec<u8>,
}

/// `Lifetime` (RFC 9420 §7.2): seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct Lifetime {
    /// `uint64 not_before`
    pub not_before: u64,
    /// `uint64 not_after`
    pub not_after: u64,
}

/// `Capabilities` (RFC 9420 §7.2). All lists keep unknown (e.g. GREASE)
/// values, which receivers MUST ignore (§13.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct Capabilities {
    /// `ProtocolVersion versions<V>`
    #[tls_codec(with = "vl_vec")]
    pub versions: Vec<ProtocolVersion>,
    /// `CipherSuite cipher_suites<V>`
    #[tls_codec(with = "vl_vec")]
    pub cipher_suites: Vec<CipherSuite>,
    /// `ExtensionType extensions<V>`
    #[tls_codec(with = "vl_vec")]
    pub extensions: Vec<ExtensionType>,
    /// `ProposalType proposals<V>`
    #[tls_codec(with = "vl_vec")]
    pub proposals: Vec<ProposalType>,
    /// `CredentialType credentials<V>`
    #[tls_codec(with = "vl_vec")]
    pub credentials: Vec<CredentialType>,
}

/// `Certificate` (RFC 9420 §5.3): one DER-encoded X.509 certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
pub struct Certificate {
    /// `opaque cert_data<V>`
    #[tls_codec(with = "vl_bytes")]
    pub cert_data: Vec<u8>,
}

/// `Credential` (RFC 9420 §5.3). Only `basic` and `x509` decode: the body of
/// another type has no length prefix to skip it by, and §13.5 says an
/// unsupported credential type rejects the enclosing message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSize, TlsSerialize, TlsDeserializeBytes)]
#[repr(u16)]
pub enum Credential {
    /// `basic(1)`: `opaque identity<V>`
    #[tls_codec(discriminant = 1)]
    Basic(#[tls_codec(with = "vl_bytes")] Vec<u8>),
    /// `x509(2)`: `Certificate certificates<V>`, end-entity first.
    #[tls_codec(discriminant = 2)]
    X509(#[tls_codec(with = "vl_vec")] Vec<Certificate>),
}

impl Credential {
    /// The `credential_type` of this credential.
    pub fn credential_type(&self) -> CredentialType {
        match self {
            Credential::Basic(_) => CredentialType::BASIC,
            Credential::X509(_) => CredentialType::X509,
        }
    }
}

//! KeyPackages (RFC 9420 §10): generation with every private key in
//! custody, and validation of received KeyPackages.
//!
//! Received KeyPackages are [`KeyPackageIn`] (decoded, unchecked) and become
//! [`KeyPackage`] only through [`KeyPackageIn::validate`] (RFC 9420 §10.1),
//! so the type shows what has been checked.

use std::fmt;

use hsmls_crypto::{CipherSuite as SuiteId, CipherSuiteProvider, CryptoError};
use hsmls_custody::{CustodyError, KeyRef};

use crate::codec::{
    self, Capabilities, CipherSuite, CodecError, CredentialType, Decode, Encode, Extension,
    ExtensionType, HpkePublicKey, KeyPackageRef, LeafNode, LeafNodeSource, Lifetime, MlsMessage,
    MlsMessageBody, ProtocolVersion,
};
use crate::credential::{CredentialError, CredentialValidator, Signer};
use crate::tree::{GroupParams, LeafNodeUsage, validate_leaf_node};
use crate::tree_math::LeafIndex;

mod saved;

/// `SignWithLabel` label of a KeyPackage (RFC 9420 §10).
pub const KEY_PACKAGE_TBS: &[u8] = b"KeyPackageTBS";
/// `SignWithLabel` label of a LeafNode (RFC 9420 §7.2).
pub const LEAF_NODE_TBS: &[u8] = b"LeafNodeTBS";

/// Why a KeyPackage was refused or could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyPackageError {
    /// The protocol version is not MLS 1.0.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// The cipher suite is not the expected one (or not implemented).
    #[error("cipher suite 0x{actual:04x} where 0x{expected:04x} was expected")]
    WrongCipherSuite {
        /// The suite required.
        expected: u16,
        /// The suite of the KeyPackage.
        actual: u16,
    },
    /// The KeyPackage signature does not verify.
    #[error("invalid KeyPackage signature")]
    InvalidSignature,
    /// The LeafNode is invalid (RFC 9420 §10.1: its `leaf_node_source`
    /// is not `key_package`).
    #[error("invalid leaf node: {0}")]
    InvalidLeafNode(crate::tree::LeafNodeError),
    /// The LeafNode failed the tree module's validation (RFC 9420 §7.3).
    #[error("invalid leaf node: {0}")]
    LeafNode(#[source] crate::tree::TreeError),
    /// `init_key` equals the leaf's `encryption_key` (RFC 9420 §10.1).
    #[error("init_key equals the leaf encryption_key")]
    InitKeyEqualsEncryptionKey,
    /// `now` is outside the leaf's lifetime.
    #[error("KeyPackage lifetime [{not_before}, {not_after}] does not contain {now}")]
    Expired {
        /// Start of the lifetime (seconds since the Unix epoch).
        not_before: u64,
        /// End of the lifetime.
        not_after: u64,
        /// The time checked.
        now: u64,
    },
    /// An HPKE or signature public key is malformed.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(#[source] CryptoError),
    /// The credential was refused.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// The bytes are not a KeyPackage.
    #[error("not a KeyPackage: {0}")]
    Codec(#[from] CodecError),
    /// A cryptographic operation failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The custody backend failed.
    #[error(transparent)]
    Custody(#[from] CustodyError),
}

/// Signs `leaf` in place (RFC 9420 §7.2) with the signer's key.
pub fn sign_leaf_node(
    cs: &dyn CipherSuiteProvider,
    signer: &Signer,
    leaf: &mut LeafNode,
    group: Option<(&[u8], LeafIndex)>,
) -> Result<(), KeyPackageError> {
    let tbs = leaf.to_be_signed(group)?;
    leaf.signature = cs.sign_with_label(
        signer.custody.as_ref(),
        &signer.signature_key,
        LEAF_NODE_TBS,
        &tbs,
    )?;
    Ok(())
}

/// The capabilities hsmls advertises for `suite` and a credential type:
/// MLS 1.0, the suite, and every non-default extension and proposal type
/// the engine implements (RFC 9420 §7.2: default types are not listed).
pub fn default_capabilities(suite: CipherSuite, credential: CredentialType) -> Capabilities {
    Capabilities {
        versions: vec![ProtocolVersion::MLS10],
        cipher_suites: vec![suite],
        extensions: Vec::new(),
        proposals: Vec::new(),
        credentials: vec![credential],
    }
}

/// How to build a KeyPackage. Build it with [`KeyPackageConfig::new`] and
/// set the fields to change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyPackageConfig {
    /// The cipher suite (0x0002 is implemented).
    pub cipher_suite: CipherSuite,
    /// The validity period (seconds since the Unix epoch).
    pub lifetime: Lifetime,
    /// The leaf's capabilities; `None` for the defaults: MLS 1.0, the
    /// suite, the signer's credential type, and the non-default extension
    /// types the KeyPackage and its leaf carry (RFC 9420 §7.2).
    pub capabilities: Option<Capabilities>,
    /// Extensions of the LeafNode.
    pub leaf_extensions: Vec<Extension>,
    /// Extensions of the KeyPackage itself.
    pub extensions: Vec<Extension>,
}

/// The `last_resort` KeyPackage extension type (draft-ietf-mls-extensions,
/// `struct {} LastResort`, registered as 0x000A; openmls and mls-rs use
/// it). A last-resort KeyPackage may be used by several Welcomes: its init
/// key is not destroyed on join (RFC 9420 §16.8).
pub const LAST_RESORT: ExtensionType = ExtensionType(0x000A);

impl KeyPackageConfig {
    /// Marks the KeyPackage as last resort (adds the empty `last_resort`
    /// extension). Its init key survives joins; its leaf key is shared by
    /// every group joined with it until each group's first update of it,
    /// so rotate it soon (RFC 9750 §8.3.2 recommendations).
    ///
    /// No group destroys these shared keys (not on join, not when its own
    /// commit replaces the leaf key, not when it is left): the application
    /// destroys them with [`KeyPackageBundle::destroy`] when it rotates its
    /// last-resort KeyPackage.
    pub fn last_resort(mut self) -> Self {
        if !self
            .extensions
            .iter()
            .any(|e| e.extension_type == LAST_RESORT)
        {
            self.extensions.push(Extension {
                extension_type: LAST_RESORT,
                extension_data: Vec::new(),
            });
        }
        self
    }

    /// Sets the LeafNode's `application_id` extension (RFC 9420 §5.3.3).
    pub fn application_id(mut self, id: Vec<u8>) -> Result<Self, CodecError> {
        let data = codec::ApplicationId(id).encode()?;
        self.leaf_extensions
            .retain(|e| e.extension_type != ExtensionType::APPLICATION_ID);
        self.leaf_extensions.push(Extension {
            extension_type: ExtensionType::APPLICATION_ID,
            extension_data: data,
        });
        Ok(self)
    }

    /// Suite 0x0002, valid from `now` for `validity_seconds`.
    pub fn new(now: u64, validity_seconds: u64) -> Self {
        KeyPackageConfig {
            cipher_suite: CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
            lifetime: Lifetime {
                not_before: now,
                not_after: now.saturating_add(validity_seconds),
            },
            capabilities: None,
            leaf_extensions: Vec::new(),
            extensions: Vec::new(),
        }
    }
}

/// A KeyPackage this client generated
/// ([`Client::generate_key_package`](crate::Client::generate_key_package)),
/// with the references to its private keys in custody. The application
/// publishes [`KeyPackageBundle::to_bytes`] and keeps the bundle (or saves
/// it, [`Client::save_key_package`](crate::Client::save_key_package)) to
/// join from the Welcome that uses it.
///
/// A last-resort bundle ([`KeyPackageConfig::last_resort`]) may join several
/// groups, which then share its leaf key; the groups never destroy its keys.
/// The application calls [`KeyPackageBundle::destroy`] when it rotates it.
#[must_use = "its private keys are in custody: keep the bundle to join, or destroy it"]
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyPackageBundle {
    /// The signed KeyPackage.
    pub key_package: KeyPackage,
    /// The HPKE private key of `init_key`, in custody (destroyed on join,
    /// RFC 9420 §9.2).
    pub init_key: KeyRef,
    /// The HPKE private key of the leaf's `encryption_key`, in custody.
    pub encryption_key: KeyRef,
}

impl fmt::Debug for KeyPackageBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPackageBundle")
            .field("reference", &self.key_package.reference())
            .field("init_key", &self.init_key)
            .field("encryption_key", &self.encryption_key)
            .finish()
    }
}

impl KeyPackageBundle {
    /// Generates a KeyPackage (RFC 9420 §10): the init key and the leaf
    /// encryption key are fresh HPKE keys generated in the signer's
    /// custody; the LeafNode and the KeyPackage are signed with the
    /// signer's signature key.
    pub(crate) fn generate(
        config: &KeyPackageConfig,
        signer: &Signer,
    ) -> Result<Self, KeyPackageError> {
        let suite = SuiteId(config.cipher_suite.0);
        let cs = suite.provider()?;
        let custody = signer.custody.as_ref();
        let init_key = custody.generate(cs.hpke_key_spec())?;
        let encryption_key = match custody.generate(cs.hpke_key_spec()) {
            Ok(k) => k,
            Err(e) => {
                let _ = custody.destroy(&init_key);
                return Err(e.into());
            }
        };
        let result = Self::assemble(cs, config, signer, &init_key, &encryption_key);
        match result {
            Ok(key_package) => Ok(KeyPackageBundle {
                key_package,
                init_key,
                encryption_key,
            }),
            Err(e) => {
                let _ = custody.destroy(&init_key);
                let _ = custody.destroy(&encryption_key);
                Err(e)
            }
        }
    }

    fn assemble(
        cs: &'static dyn CipherSuiteProvider,
        config: &KeyPackageConfig,
        signer: &Signer,
        init_key: &KeyRef,
        encryption_key: &KeyRef,
    ) -> Result<KeyPackage, KeyPackageError> {
        let mut capabilities = config.capabilities.clone().unwrap_or_else(|| {
            default_capabilities(config.cipher_suite, signer.credential.credential_type())
        });
        // The leaf lists the non-default extension types it carries
        // (RFC 9420 §7.2), and those of its KeyPackage (last_resort).
        for e in config.leaf_extensions.iter().chain(&config.extensions) {
            if !is_default_extension(e.extension_type)
                && !capabilities.extensions.contains(&e.extension_type)
            {
                capabilities.extensions.push(e.extension_type);
            }
        }
        let mut leaf_node = LeafNode {
            encryption_key: HpkePublicKey(encryption_key.public_key().as_bytes().to_vec()),
            signature_key: signer.signature_public_key(),
            credential: signer.credential.clone(),
            capabilities,
            leaf_node_source: LeafNodeSource::KeyPackage(config.lifetime),
            extensions: config.leaf_extensions.clone(),
            signature: Vec::new(),
        };
        sign_leaf_node(cs, signer, &mut leaf_node, None)?;
        let mut kp = codec::KeyPackage {
            version: ProtocolVersion::MLS10,
            cipher_suite: config.cipher_suite,
            init_key: HpkePublicKey(init_key.public_key().as_bytes().to_vec()),
            leaf_node,
            extensions: config.extensions.clone(),
            signature: Vec::new(),
        };
        let tbs = kp.to_be_signed()?;
        kp.signature = cs.sign_with_label(
            signer.custody.as_ref(),
            &signer.signature_key,
            KEY_PACKAGE_TBS,
            &tbs,
        )?;
        KeyPackage::from_trusted(cs, kp)
    }

    /// A bundle of a KeyPackage whose private keys were put into custody
    /// by other means (the official test vectors give them).
    #[cfg(feature = "test-utils")]
    #[doc(hidden)]
    pub fn from_keys(key_package: KeyPackage, init_key: KeyRef, encryption_key: KeyRef) -> Self {
        KeyPackageBundle {
            key_package,
            init_key,
            encryption_key,
        }
    }

    /// Whether the KeyPackage carries the `last_resort` extension.
    pub fn is_last_resort(&self) -> bool {
        self.key_package
            .as_wire()
            .extensions
            .iter()
            .any(|e| e.extension_type == LAST_RESORT)
    }

    /// The KeyPackage as an `MLSMessage` (wire format `mls_key_package`),
    /// the form published to the Delivery Service.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        self.key_package.to_message_bytes()
    }

    /// Destroys both private keys in custody: a KeyPackage withdrawn
    /// before use, or a last-resort KeyPackage being rotated (its keys stay
    /// in custody after joins, shared by the groups joined with it; after
    /// this, those groups that have not yet replaced their leaf key can no
    /// longer decrypt to it).
    pub fn destroy(&self, signer: &Signer) -> Result<(), CustodyError> {
        signer.custody.destroy(&self.init_key)?;
        signer.custody.destroy(&self.encryption_key)
    }
}

/// A decoded, not yet validated KeyPackage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPackageIn(pub codec::KeyPackage);

impl KeyPackageIn {
    /// Decodes an `MLSMessage` carrying a KeyPackage, or a bare KeyPackage.
    /// Bytes that start as an `MLSMessage` of wire format
    /// `mls_key_package` and do not decode get the `MLSMessage`'s error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyPackageError> {
        /// `ProtocolVersion mls10`, `WireFormat mls_key_package`.
        const KEY_PACKAGE_MESSAGE: [u8; 4] = [0, 1, 0, 5];
        match MlsMessage::decode(bytes) {
            Ok(MlsMessage {
                body: MlsMessageBody::KeyPackage(kp),
            }) => Ok(KeyPackageIn(kp)),
            Ok(_) => Err(KeyPackageError::Codec(CodecError::Malformed(
                "MLSMessage does not carry a KeyPackage".into(),
            ))),
            Err(e) if bytes.starts_with(&KEY_PACKAGE_MESSAGE) => Err(e.into()),
            Err(_) => Ok(KeyPackageIn(codec::KeyPackage::decode(bytes)?)),
        }
    }

    /// Validates the KeyPackage (RFC 9420 §10.1) for a group of suite
    /// `cipher_suite` at time `now` (seconds since the Unix epoch):
    /// version, suite, KeyPackage and LeafNode signatures, leaf source and
    /// lifetime, capabilities, `init_key != encryption_key`, and the
    /// credential through `validator`.
    pub fn validate(
        self,
        cipher_suite: CipherSuite,
        validator: &dyn CredentialValidator,
        now: u64,
    ) -> Result<KeyPackage, KeyPackageError> {
        let kp = self.0;
        if kp.version != ProtocolVersion::MLS10 {
            return Err(KeyPackageError::UnsupportedVersion(kp.version.0));
        }
        if kp.cipher_suite != cipher_suite {
            return Err(KeyPackageError::WrongCipherSuite {
                expected: cipher_suite.0,
                actual: kp.cipher_suite.0,
            });
        }
        let cs = SuiteId(kp.cipher_suite.0).provider()?;
        let leaf = &kp.leaf_node;
        cs.validate_signature_public_key(leaf.signature_key.as_slice())
            .map_err(KeyPackageError::InvalidPublicKey)?;
        cs.validate_hpke_public_key(kp.init_key.as_slice())
            .map_err(KeyPackageError::InvalidPublicKey)?;
        cs.validate_hpke_public_key(leaf.encryption_key.as_slice())
            .map_err(KeyPackageError::InvalidPublicKey)?;
        let tbs = kp.to_be_signed()?;
        cs.verify_with_label(
            leaf.signature_key.as_slice(),
            KEY_PACKAGE_TBS,
            &tbs,
            &kp.signature,
        )
        .map_err(|_| KeyPackageError::InvalidSignature)?;
        let LeafNodeSource::KeyPackage(lifetime) = leaf.leaf_node_source else {
            return Err(KeyPackageError::InvalidLeafNode(
                crate::tree::LeafNodeError::WrongSource {
                    expected: crate::tree::LeafNodeSourceType::KeyPackage,
                    actual: crate::tree::LeafNodeSourceType::of(&leaf.leaf_node_source),
                },
            ));
        };
        if now < lifetime.not_before || now > lifetime.not_after {
            return Err(KeyPackageError::Expired {
                not_before: lifetime.not_before,
                not_after: lifetime.not_after,
                now,
            });
        }
        // §7.3 through the tree module: source, keys, signature,
        // capabilities (suite, version, own credential type, extensions).
        validate_leaf_node(
            cs,
            leaf,
            LeafNodeUsage::KeyPackage,
            &GroupParams {
                group_id: &[],
                cipher_suite,
                version: ProtocolVersion::MLS10,
                required_capabilities: None,
                now: None,
                max_lifetime: None,
            },
        )
        .map_err(KeyPackageError::LeafNode)?;
        if kp.init_key == leaf.encryption_key {
            return Err(KeyPackageError::InitKeyEqualsEncryptionKey);
        }
        validator.validate_in_suite(cipher_suite, &leaf.credential, &leaf.signature_key)?;
        KeyPackage::from_trusted(cs, kp)
    }
}

/// Extension types every implementation supports (RFC 9420 §7.2, "default"
/// values of the registry).
pub fn is_default_extension(t: ExtensionType) -> bool {
    (1..=5).contains(&t.0)
}

/// The `application_id` of a LeafNode (RFC 9420 §5.3.3), if it has one.
pub fn application_id(leaf: &LeafNode) -> Option<Result<Vec<u8>, CodecError>> {
    codec::find_extension::<codec::ApplicationId>(&leaf.extensions).map(|r| r.map(|a| a.0))
}

/// A validated KeyPackage (RFC 9420 §10.1), with its `KeyPackageRef`
/// (§5.2): what a group adds ([`Group::add_members`](crate::Group::add_members),
/// [`Group::propose_add`](crate::Group::propose_add)). It is obtained only
/// from [`KeyPackageIn::validate`] (or
/// [`Client::validate_key_package`](crate::Client::validate_key_package))
/// and from a [`KeyPackageBundle`], so holding one means it was checked.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPackage {
    inner: codec::KeyPackage,
    reference: KeyPackageRef,
}

impl fmt::Debug for KeyPackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPackage")
            .field("reference", &self.reference)
            .field("credential", &self.inner.leaf_node.credential)
            .finish_non_exhaustive()
    }
}

impl KeyPackage {
    /// A KeyPackage known to be valid: one this client signed, or one
    /// validated before (a lost commit's, a saved bundle's).
    pub(crate) fn from_trusted(
        cs: &dyn CipherSuiteProvider,
        inner: codec::KeyPackage,
    ) -> Result<Self, KeyPackageError> {
        let encoded = inner.encode()?;
        let reference = KeyPackageRef(cs.make_key_package_ref(&encoded)?.to_vec());
        Ok(KeyPackage { inner, reference })
    }

    /// The wire KeyPackage.
    pub fn as_wire(&self) -> &codec::KeyPackage {
        &self.inner
    }

    /// Takes the wire KeyPackage.
    pub fn into_wire(self) -> codec::KeyPackage {
        self.inner
    }

    /// `KeyPackageRef = RefHash("MLS 1.0 KeyPackage Reference", KeyPackage)`.
    pub fn reference(&self) -> &KeyPackageRef {
        &self.reference
    }

    /// The KeyPackage's LeafNode.
    pub fn leaf_node(&self) -> &LeafNode {
        &self.inner.leaf_node
    }

    /// The cipher suite.
    pub fn cipher_suite(&self) -> CipherSuite {
        self.inner.cipher_suite
    }

    /// The KeyPackage as an `MLSMessage`.
    pub fn to_message_bytes(&self) -> Result<Vec<u8>, CodecError> {
        MlsMessage {
            body: MlsMessageBody::KeyPackage(self.inner.clone()),
        }
        .encode()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hsmls_custody::SoftwareCustody;

    use super::*;
    use crate::codec::Credential;
    use crate::credential::BasicCredentialValidator;

    fn signer() -> Signer {
        Signer::generate(
            Arc::new(SoftwareCustody::new()),
            Credential::Basic(b"alice".to_vec()),
        )
        .unwrap()
    }

    #[test]
    fn generate_and_validate() {
        let s = signer();
        let bundle = KeyPackageBundle::generate(&KeyPackageConfig::new(1000, 100), &s).unwrap();
        let bytes = bundle.to_bytes().unwrap();
        let suite = CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256;
        let v = BasicCredentialValidator::default();
        let kp = KeyPackageIn::from_bytes(&bytes)
            .unwrap()
            .validate(suite, &v, 1050)
            .unwrap();
        assert_eq!(kp, bundle.key_package);
        assert_eq!(kp.reference().as_slice().len(), 32);
        // Outside the lifetime.
        assert!(matches!(
            KeyPackageIn::from_bytes(&bytes)
                .unwrap()
                .validate(suite, &v, 1101),
            Err(KeyPackageError::Expired { .. })
        ));
        // Wrong suite.
        assert!(matches!(
            KeyPackageIn::from_bytes(&bytes)
                .unwrap()
                .validate(CipherSuite(1), &v, 1050),
            Err(KeyPackageError::WrongCipherSuite { .. })
        ));
        // Tampered extension list breaks the KeyPackage signature.
        let mut wire = bundle.key_package.as_wire().clone();
        wire.extensions.push(Extension {
            extension_type: ExtensionType(0xff00),
            extension_data: vec![1],
        });
        assert!(matches!(
            KeyPackageIn(wire).validate(suite, &v, 1050),
            Err(KeyPackageError::InvalidSignature)
        ));
        // init_key == encryption_key, re-signed: refused.
        let mut wire = bundle.key_package.as_wire().clone();
        wire.init_key = wire.leaf_node.encryption_key.clone();
        let cs = SuiteId(2).provider().unwrap();
        wire.signature = cs
            .sign_with_label(
                s.custody.as_ref(),
                &s.signature_key,
                KEY_PACKAGE_TBS,
                &wire.to_be_signed().unwrap(),
            )
            .unwrap();
        assert!(matches!(
            KeyPackageIn(wire).validate(suite, &v, 1050),
            Err(KeyPackageError::InitKeyEqualsEncryptionKey)
        ));
    }
}

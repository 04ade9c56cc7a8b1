//! hsmls: the MLS protocol engine (RFC 9420), sans-IO, with every private
//! key of a member in a [`KeyCustody`](hsmls_custody::KeyCustody) backend
//! (a PKCS#11 token, or software).
//!
//! The engine does no I/O: bytes come in ([`Group::process_incoming`]),
//! bytes and typed events go out ([`CommitOutput`], [`ProcessedMessage`]).
//! The application moves the bytes through its Delivery Service, asks its
//! Authentication Service about credentials (through a
//! [`CredentialValidator`]) and stores saved state ([`Group::save`]).
//!
//! # Getting started
//!
//! A [`Client`] (RFC 9420 §1: "an agent that uses this protocol") holds
//! what every operation of one identity needs: its [`Signer`] (credential
//! and signature key in custody), its [`CredentialValidator`] and the
//! [`GroupConfig`] of its groups. It generates KeyPackages, creates and
//! joins groups, and loads saved groups and KeyPackage bundles:
//!
//! ```
//! use std::sync::Arc;
//! use hsmls::{
//!     BasicCredentialValidator, Client, Credential, KeyPackageConfig, ProcessedMessage, Signer,
//! };
//! use hsmls_custody::SoftwareCustody;
//!
//! let now = 1_750_000_000;
//! let validator = Arc::new(BasicCredentialValidator::default());
//! let custody = Arc::new(SoftwareCustody::new());
//! let alice = Client::new(
//!     Signer::generate(custody.clone(), Credential::Basic(b"alice".to_vec()))?,
//!     validator.clone(),
//! );
//! let bob = Client::new(
//!     Signer::generate(custody, Credential::Basic(b"bob".to_vec()))?,
//!     validator,
//! );
//!
//! // Bob publishes a KeyPackage; Alice validates it and adds him.
//! let bundle = bob.generate_key_package(&KeyPackageConfig::new(now, 86_400))?;
//! let published: Vec<u8> = bundle.to_bytes()?;
//! let key_package = alice.validate_key_package(&published, now)?;
//! let mut a = alice.create_group(b"chat".to_vec(), vec![], now)?;
//! let out = a.add_members(&[key_package], now)?;
//! a.merge_pending_commit()?; // once the Delivery Service accepted out.commit
//! let welcome = out.welcome.expect("a Welcome for Bob");
//! let mut b = bob.join_from_welcome(&bundle, &welcome, Default::default())?;
//! assert_eq!(a.epoch_authenticator(), b.epoch_authenticator());
//!
//! // Application messages.
//! let msg = a.encrypt_application(b"hi bob")?;
//! match b.process_incoming(&msg, now)? {
//!     ProcessedMessage::ApplicationMessage { data, .. } => assert_eq!(data, b"hi bob"),
//!     other => panic!("{other:?}"),
//! }
//!
//! // Bob updates his keys; Alice sees the staged commit, then merges it.
//! let out = b.self_update(now)?;
//! b.merge_pending_commit()?;
//! if let ProcessedMessage::StagedCommit(staged) = a.process_incoming(&out.commit, now)? {
//!     assert!(staged.has_path);
//!     a.merge_staged_commit(staged)?;
//! }
//! assert_eq!(a.export_secret(b"label", b"", 32)?, b.export_secret(b"label", b"", 32)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is public, and why
//!
//! The public API is what an application needs to run groups, and nothing
//! of the engine's insides, so that the insides can change without
//! breaking applications (the model is rustls):
//!
//! - At the root: [`Client`] and [`Group`], their options
//!   ([`GroupConfig`], [`CommitOptions`], [`JoinOptions`],
//!   [`KeyPackageConfig`]) and outputs ([`CommitOutput`],
//!   [`StagedCommit`], [`ProcessedMessage`], [`ProposalMessage`],
//!   [`Member`], ...), KeyPackages ([`KeyPackageIn`] as received,
//!   [`KeyPackage`] once validated, [`KeyPackageBundle`] with its private
//!   keys in custody), the credential seam ([`Credential`],
//!   [`CredentialValidator`], [`Signer`]), saved state ([`SavedGroup`],
//!   [`EpochRecord`], [`SavedKeyPackage`]), and the errors an application
//!   matches ([`GroupError`] with the rule enums naming the RFC rule a
//!   rejected input broke, [`KeyPackageError`], [`StateError`],
//!   [`CredentialError`]); [`PublicGroup`], an observer of a group's
//!   public state without its secrets (what a Delivery Service checks of
//!   PublicMessage handshakes, RFC 9750 §5.2).
//! - [`wire`]: the RFC 9420 wire structures the public API hands out or
//!   takes (proposals, extensions, capabilities, the GroupContext, the
//!   ratchet tree for sending out of band, [`wire::LeafIndex`],
//!   [`wire::Sender`], ...) with their [`wire::Encode`] / [`wire::Decode`],
//!   and [`wire::RoutingInfo`], what a Delivery Service or a client reads
//!   of an `MLSMessage` to route it (wire format, group id, epoch, content
//!   type) without being a member.
//! - [`error`]: the lower-level errors carried inside [`GroupError`] and
//!   [`KeyPackageError`] (wire decoding, message protection, the ratchet
//!   tree, ...), for applications that look deeper than the top variant.
//! - [`state`]: the format of saved state blobs (for stores that read
//!   their clear header).
//!
//! Options, configurations, outputs and errors are `#[non_exhaustive]`:
//! build options from their `Default`/`new` and set fields, and match
//! errors and events with a wildcard arm, so new fields and variants are
//! not breaking changes. Results that are a bug to ignore (a commit to
//! send, a staged commit to merge, a proposal to send, saved state to
//! store) are `#[must_use]`. A [`KeyPackage`] is obtained only by
//! validating a [`KeyPackageIn`] or from a [`KeyPackageBundle`], so a
//! group is only given checked KeyPackages; leaves are named by
//! [`wire::LeafIndex`] everywhere.
//!
//! What is not public: the key schedule, the secret tree, transcript
//! hashes, tree math, message protection, TreeKEM, proposal validation,
//! the Welcome's encryption, and the full framing structures. hsmls's own
//! tests, benches, fuzz targets and the interop and peers crates reach
//! them through the `test-utils` cargo feature, as `hsmls::internal::…`
//! (hidden from the documentation, and not a stable API). An application
//! never needs that feature.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
// The engine's insides: crate-private, and public as `internal::…` with the
// `test-utils` feature. Without it, the helpers only tests, vectors and
// benches use are dead code here.
#[cfg_attr(not(feature = "test-utils"), allow(dead_code, unused_imports))]
mod codec;
mod credential;
pub mod error;
mod group;
mod key_package;
#[cfg_attr(not(feature = "test-utils"), allow(dead_code, unused_imports))]
mod key_schedule;
#[cfg_attr(not(feature = "test-utils"), allow(dead_code, unused_imports))]
mod message_protection;
mod parallel;
#[cfg_attr(not(feature = "test-utils"), allow(dead_code, unused_imports))]
mod psk;
#[cfg_attr(not(feature = "test-utils"), allow(dead_code, unused_imports))]
mod secret_tree;
pub mod state;
#[cfg_attr(not(feature = "test-utils"), allow(dead_code, unused_imports))]
mod transcript;
#[cfg_attr(not(feature = "test-utils"), allow(dead_code, unused_imports))]
mod tree;
#[cfg_attr(not(feature = "test-utils"), allow(dead_code, unused_imports))]
mod tree_math;
pub mod wire;

pub use client::Client;
pub use codec::{Certificate, Credential, SignaturePublicKey};
pub use credential::{
    BasicCredentialValidator, CredentialError, CredentialValidator, Signer, ValidatorError,
};
pub use group::{
    AddedMember, CachedProposal, CommitOptions, CommitOutput, CommitRule, Group, GroupConfig,
    GroupError, HandshakeFraming, JoinOptions, LostCommit, MAX_OBSERVED_PROPOSALS, Member,
    MessageRule, ObservedCommit, ObservedMessage, OwnCommit, ProcessedMessage, ProposalMessage,
    ProposalRule, PskStore, PublicGroup, ReInitRule, SENT_MESSAGES_KEPT, SaveTicket, StagedCommit,
    UnixTime, WelcomePart, WelcomeRule, random_group_id,
};
pub use hsmls_crypto::Secret;
pub use key_package::{
    KeyPackage, KeyPackageBundle, KeyPackageConfig, KeyPackageError, KeyPackageIn,
};
pub use message_protection::PaddingPolicy;
pub use secret_tree::SecretTreeConfig;
pub use state::{EpochRecord, SavedGroup, SavedKeyPackage, StateError, TreeRecord};

/// The engine's insides, public only with the `test-utils` feature, for
/// hsmls's own tests, benches and fuzz targets and for the interop and
/// peers crates (which build messages no application builds: forged,
/// re-signed, or by the rules of the official test vectors). Not a stable
/// API; an application never needs it.
#[cfg(feature = "test-utils")]
#[doc(hidden)]
pub mod internal {
    /// The RFC 9420 wire format: every structure of an `MLSMessage`.
    pub mod codec {
        pub use crate::codec::*;
    }
    /// The credential seam (also at the crate root).
    pub mod credential {
        pub use crate::credential::*;
    }
    /// The group state machine's helpers: Welcome and GroupInfo
    /// encryption, proposal validation, external proposals.
    pub mod group {
        pub use crate::group::*;
    }
    /// KeyPackage signing helpers and labels.
    pub mod key_package {
        pub use crate::key_package::*;
    }
    /// The key schedule (RFC 9420 §8).
    pub mod key_schedule {
        pub use crate::key_schedule::*;
    }
    /// Message framing and protection (RFC 9420 §6).
    pub mod message_protection {
        pub use crate::message_protection::*;
    }
    /// PSK secrets (RFC 9420 §8.4).
    pub mod psk {
        pub use crate::psk::*;
    }
    /// The secret tree (RFC 9420 §9).
    pub mod secret_tree {
        pub use crate::secret_tree::*;
    }
    /// Saved state internals.
    pub mod state {
        pub use crate::state::*;
    }
    /// Transcript hashes (RFC 9420 §8.2).
    pub mod transcript {
        pub use crate::transcript::*;
    }
    /// The ratchet tree and TreeKEM (RFC 9420 §4, §7).
    pub mod tree {
        pub use crate::tree::*;
    }
    /// Array-based tree math (RFC 9420 §4.1, Appendix C).
    pub mod tree_math {
        pub use crate::tree_math::*;
    }
}

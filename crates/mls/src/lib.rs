//! hsmls: the MLS protocol engine (RFC 9420), sans-IO.
#![forbid(unsafe_code)]

pub mod codec;
pub mod credential;
pub mod group;
pub mod key_package;
pub mod key_schedule;
pub mod message_protection;
pub mod psk;
pub mod secret_tree;
pub mod state;
pub mod transcript;
pub mod tree;
pub mod tree_math;

pub use credential::{BasicCredentialValidator, CredentialValidator, Signer};
pub use group::{
    CommitOptions, CommitOutput, CommitRule, Group, GroupConfig, GroupError, HandshakeFraming,
    JoinOptions, LostCommit, Member, MessageRule, ObservedCommit, ObservedMessage, OwnCommit,
    ProcessedMessage, ProposalRule, PublicGroup, ReInitRule, SENT_MESSAGES_KEPT, StagedCommit,
    WelcomePart, WelcomeRule,
};
pub use key_package::{KeyPackage, KeyPackageBundle, KeyPackageConfig, KeyPackageIn};
pub use state::{EpochRecord, SavedGroup, SavedKeyPackage, StateError};

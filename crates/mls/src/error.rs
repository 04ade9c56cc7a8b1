//! The lower-level errors carried inside the root errors
//! ([`GroupError`](crate::GroupError),
//! [`KeyPackageError`](crate::KeyPackageError),
//! [`StateError`](crate::StateError)), for an application that looks
//! deeper than the top variant: wire decoding, message protection (RFC
//! 9420 §6), the secret tree (§9), transcript hashes (§8.2), PSKs (§8.4),
//! the ratchet tree and TreeKEM (§4, §7), and the errors of the crypto and
//! custody crates.
//!
//! Every enum is `#[non_exhaustive]`: match with a wildcard arm.

pub use crate::codec::CodecError;
pub use crate::message_protection::ProtectionError;
pub use crate::psk::PskError;
pub use crate::secret_tree::SecretTreeError;
pub use crate::transcript::TranscriptError;
pub use crate::tree::{
    CapabilityKind, KeyKind, LeafNodeError, LeafNodeSourceType, MergeMismatch, TreeError, TreeShape,
};
pub use crate::tree_math::{NodeIndex, TreeMathError};
pub use hsmls_crypto::CryptoError;
pub use hsmls_custody::CustodyError;

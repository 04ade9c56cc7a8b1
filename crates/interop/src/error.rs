//! Errors of the interop client and their gRPC status codes.

use hsmls::GroupError;
use hsmls::KeyPackageError;
use hsmls::error::CodecError;
use hsmls::error::ProtectionError;
use hsmls_custody::CustodyError;
use tonic::{Code, Status};

/// Why an RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    /// No group state, transaction or signer has this id.
    #[error("unknown state, transaction or signer id {0}")]
    UnknownId(u32),
    /// The id names an object of another kind.
    #[error("id {id} is not a {expected}")]
    WrongKind {
        /// The id.
        id: u32,
        /// What the RPC needed.
        expected: &'static str,
    },
    /// The suite is not one of [`crate::SUPPORTED_SUITES`].
    #[error(
        "cipher suite {0:#06x} is not supported (hsmls supports 0x0001, 0x0002, 0x0003, 0x0005 and 0x0007)"
    )]
    UnsupportedCipherSuite(u32),
    /// Only basic credentials are used by this client.
    #[error("credential type {0:#06x} is not supported (hsmls interop uses basic(1) credentials)")]
    UnsupportedCredentialType(u16),
    /// A request field is malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No member of the group has this identity.
    #[error("no member with identity {0:?}")]
    NoSuchMember(String),
    /// The message was not of the expected kind.
    #[error("unexpected message: {0}")]
    UnexpectedMessage(&'static str),
    /// The group engine refused.
    #[error("group: {0}")]
    Group(#[from] GroupError),
    /// A KeyPackage could not be made or was refused.
    #[error("key package: {0}")]
    KeyPackage(#[from] KeyPackageError),
    /// Bytes did not decode.
    #[error("malformed input: {0}")]
    Codec(#[from] CodecError),
    /// Message protection failed.
    #[error("message protection: {0}")]
    Protection(#[from] ProtectionError),
    /// The key custody backend failed.
    #[error("key custody: {0}")]
    Custody(#[from] CustodyError),
    /// The crypto provider failed.
    #[error("crypto: {0}")]
    Crypto(#[from] hsmls_crypto::CryptoError),
    /// The state lock was poisoned by a panic in another request.
    #[error("internal state lock poisoned")]
    Poisoned,
}

impl InteropError {
    /// The gRPC status code of this error.
    ///
    /// A key of a suite this client's custody is configured not to hold
    /// ([`CustodyError::KeyHomeRefused`]: X25519 HPKE keys with the token
    /// and `hpke_keys = "token"`) answers `FAILED_PRECONDITION`: the
    /// request is valid, the configuration refuses it.
    pub fn code(&self) -> Code {
        match self {
            InteropError::Custody(CustodyError::KeyHomeRefused { .. })
            | InteropError::KeyPackage(KeyPackageError::Custody(CustodyError::KeyHomeRefused {
                ..
            }))
            | InteropError::Group(GroupError::Custody(CustodyError::KeyHomeRefused { .. })) => {
                Code::FailedPrecondition
            }
            InteropError::UnknownId(_) => Code::NotFound,
            InteropError::WrongKind { .. }
            | InteropError::UnsupportedCipherSuite(_)
            | InteropError::UnsupportedCredentialType(_)
            | InteropError::InvalidArgument(_)
            | InteropError::NoSuchMember(_)
            | InteropError::UnexpectedMessage(_)
            | InteropError::Codec(_)
            | InteropError::Protection(_)
            | InteropError::KeyPackage(_) => Code::InvalidArgument,
            InteropError::Group(e) => match e {
                GroupError::UnsupportedCipherSuite(_) => Code::InvalidArgument,
                GroupError::PendingCommit
                | GroupError::NoPendingCommit
                | GroupError::Removed
                | GroupError::StaleStagedCommit => Code::FailedPrecondition,
                GroupError::Custody(_) => Code::Internal,
                _ => Code::InvalidArgument,
            },
            InteropError::Custody(_) | InteropError::Crypto(_) | InteropError::Poisoned => {
                Code::Internal
            }
        }
    }
}

impl From<InteropError> for Status {
    fn from(e: InteropError) -> Self {
        let code = e.code();
        tracing::debug!(error = %e, ?code, "request failed");
        Status::new(code, e.to_string())
    }
}

//! The DS's refusals: one variant per rule, each with its HTTP status and
//! RFC 9457 problem type (see [`crate::api::Problem`]).

use crate::api::{PROBLEM_BASE, Problem};

/// Why the DS refused a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DsError {
    /// The body is not what the endpoint takes (JSON, base64, media type).
    #[error("malformed request: {0}")]
    MalformedRequest(&'static str),
    /// The MLS message does not decode, or is not of a kind this endpoint
    /// takes.
    #[error("malformed MLS message: {0}")]
    MalformedMessage(&'static str),
    /// No valid bearer session.
    #[error("authentication required")]
    Unauthenticated,
    /// The signed challenge or the credential was refused.
    #[error("authentication failed: {0}")]
    AuthenticationFailed(&'static str),
    /// The session belongs to another client than the queue named.
    #[error("not this client's queue")]
    NotOwnQueue,
    /// A KeyPackage whose credential names another client than the
    /// publisher.
    #[error("the KeyPackage belongs to another client")]
    IdentityMismatch,
    /// A KeyPackage that does not validate (signature, lifetime, cipher
    /// suite, credential).
    #[error("invalid KeyPackage: {0}")]
    InvalidKeyPackage(String),
    /// The client has no KeyPackage left (or is unknown).
    #[error("no KeyPackage available")]
    NoKeyPackage,
    /// The group is not known.
    #[error("unknown group")]
    UnknownGroup,
    /// A group with this id exists.
    #[error("the group exists")]
    GroupExists,
    /// The sender is not a current member of the group.
    #[error("not a member of the group")]
    NotMember,
    /// A commit for an epoch that is not the group's current one, or a
    /// second commit for the current epoch.
    #[error("commit for epoch {message_epoch} refused: the group is in epoch {current_epoch}")]
    StaleCommit {
        /// The commit's epoch.
        message_epoch: u64,
        /// The group's epoch.
        current_epoch: u64,
    },
    /// A message of an epoch outside the accepted window.
    #[error("message of epoch {message_epoch} refused: the group is in epoch {current_epoch}")]
    WrongEpoch {
        /// The message's epoch.
        message_epoch: u64,
        /// The group's epoch.
        current_epoch: u64,
    },
    /// The same message was already accepted (at `seq`).
    #[error("the message was already accepted at {seq}")]
    Duplicate {
        /// Where it is.
        seq: u64,
    },
    /// A Welcome names a KeyPackageRef the DS did not hand out.
    #[error("the Welcome names an unknown KeyPackage")]
    UnknownKeyPackageRef,
    /// Assisted mode: the commit or proposal would not verify against the
    /// public group state.
    #[error("invalid handshake: {0}")]
    InvalidHandshake(String),
    /// Assisted mode: the GroupInfo does not match the state the commit
    /// leads to, or is missing.
    #[error("invalid GroupInfo: {0}")]
    InvalidGroupInfo(String),
    /// The group's mode does not allow this (e.g. a PrivateMessage commit
    /// in assisted mode, a GroupInfo request in blind mode).
    #[error("not allowed in this group's mode: {0}")]
    ModeMismatch(&'static str),
    /// The body is larger than the limit.
    #[error("body too large")]
    PayloadTooLarge,
    /// The client sent too many requests.
    #[error("rate limit exceeded")]
    RateLimited,
    /// The store failed.
    #[error("storage failure")]
    Storage(#[from] crate::store::StoreError),
}

impl DsError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            DsError::MalformedRequest(_) | DsError::MalformedMessage(_) => 400,
            DsError::Unauthenticated | DsError::AuthenticationFailed(_) => 401,
            DsError::NotOwnQueue | DsError::IdentityMismatch | DsError::NotMember => 403,
            DsError::NoKeyPackage | DsError::UnknownGroup => 404,
            DsError::GroupExists
            | DsError::StaleCommit { .. }
            | DsError::WrongEpoch { .. }
            | DsError::Duplicate { .. } => 409,
            DsError::PayloadTooLarge => 413,
            DsError::InvalidKeyPackage(_)
            | DsError::UnknownKeyPackageRef
            | DsError::InvalidHandshake(_)
            | DsError::InvalidGroupInfo(_)
            | DsError::ModeMismatch(_) => 422,
            DsError::RateLimited => 429,
            DsError::Storage(_) => 500,
        }
    }

    /// The problem kind (the suffix of the problem type).
    pub fn kind(&self) -> &'static str {
        match self {
            DsError::MalformedRequest(_) => "malformed-request",
            DsError::MalformedMessage(_) => "malformed-message",
            DsError::Unauthenticated => "unauthenticated",
            DsError::AuthenticationFailed(_) => "authentication-failed",
            DsError::NotOwnQueue => "not-own-queue",
            DsError::IdentityMismatch => "identity-mismatch",
            DsError::InvalidKeyPackage(_) => "invalid-key-package",
            DsError::NoKeyPackage => "no-key-package",
            DsError::UnknownGroup => "unknown-group",
            DsError::GroupExists => "group-exists",
            DsError::NotMember => "not-member",
            DsError::StaleCommit { .. } => "stale-commit",
            DsError::WrongEpoch { .. } => "wrong-epoch",
            DsError::Duplicate { .. } => "duplicate",
            DsError::UnknownKeyPackageRef => "unknown-key-package-ref",
            DsError::InvalidHandshake(_) => "invalid-handshake",
            DsError::InvalidGroupInfo(_) => "invalid-group-info",
            DsError::ModeMismatch(_) => "mode-mismatch",
            DsError::PayloadTooLarge => "payload-too-large",
            DsError::RateLimited => "rate-limited",
            DsError::Storage(_) => "internal",
        }
    }

    /// The problem details of this refusal. A storage failure says no more
    /// than "internal" (the cause is logged, without payloads).
    pub fn problem(&self) -> Problem {
        let (current_epoch, seq) = match self {
            DsError::StaleCommit { current_epoch, .. }
            | DsError::WrongEpoch { current_epoch, .. } => (Some(*current_epoch), None),
            DsError::Duplicate { seq } => (None, Some(*seq)),
            _ => (None, None),
        };
        let title = match self {
            DsError::Storage(_) => "internal error".to_string(),
            other => other.to_string(),
        };
        Problem {
            problem_type: format!("{PROBLEM_BASE}{}", self.kind()),
            title,
            status: self.status(),
            current_epoch,
            seq,
        }
    }
}

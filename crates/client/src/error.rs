//! Why a client operation failed. One variant per rule broken; none carries
//! a key, a secret or a PIN.

use hsmls_ds::api::Problem;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration is unusable (the message says what to fix).
    #[error("configuration: {0}")]
    Config(String),
    /// The client has no credential yet: enrol first
    /// ([`crate::ClientRuntime::enrol`]).
    #[error("not enrolled: run enrol with a one-time token from the AS operator")]
    NotEnrolled,
    /// The client is already enrolled (its credential is in the state
    /// file).
    #[error("already enrolled as {0}")]
    AlreadyEnrolled(String),
    /// A Welcome in a cipher suite that is neither the client's
    /// `cipher_suite` nor one of its `join_cipher_suites`.
    #[error(
        "a Welcome in cipher suite 0x{suite:04x}, which this client does not join (cipher_suite 0x{own:04x}; list it in join_cipher_suites to accept it)"
    )]
    WelcomeSuiteRefused {
        /// The Welcome's suite.
        suite: u16,
        /// The client's suite.
        own: u16,
    },
    /// The custody configuration cannot hold a key the client's cipher
    /// suite needs (checked when the client opens, not at first use).
    #[error(
        "cipher suite 0x{suite:04x} needs {kind} keys ({spec}) that the custody configuration cannot hold: {reason}"
    )]
    SuiteKeyRefused {
        /// The client's suite.
        suite: u16,
        /// "signature" or "HPKE".
        kind: &'static str,
        /// The key's algorithm.
        spec: String,
        /// Why (the custody's refusal, naming the setting to change).
        reason: String,
    },
    /// The custody backend (the token) failed.
    #[error("key custody: {0}")]
    Custody(#[from] hsmls_custody::CustodyError),
    /// The state file failed.
    #[error("state storage: {0}")]
    Storage(#[from] hsmls_storage::StorageError),
    /// The client's own tables in the state file failed.
    #[error("state storage: {0}")]
    Database(#[from] sqlx::Error),
    /// Saved state could not be sealed or opened.
    #[error("saved state: {0}")]
    State(#[from] hsmls::StateError),
    /// The MLS engine refused an operation or a message.
    #[error("MLS: {0}")]
    Group(#[from] hsmls::GroupError),
    /// A KeyPackage could not be generated.
    #[error("KeyPackage: {0}")]
    KeyPackage(#[from] hsmls::KeyPackageError),
    /// The Authentication Service could not be reached or refused.
    #[error("authentication service: {0}")]
    As(#[from] hsmls_credentials::client::ClientError),
    /// A certificate signing request could not be built.
    #[error("certificate request: {0}")]
    Csr(#[from] hsmls_credentials::csr::CsrError),
    /// A credential, CRL or log checkpoint failed its check.
    #[error("credential check: {0}")]
    Validation(#[from] hsmls_credentials::ValidationError),
    /// The transparency log's checkpoint or proof failed its check (a
    /// rollback or a split view: the AS showed an inconsistent log).
    #[error("transparency log: {0}")]
    Log(#[from] hsmls_credentials::tlog::LogError),
    /// The Delivery Service could not be reached.
    #[error("delivery service unreachable: {0}")]
    DsTransport(String),
    /// The Delivery Service refused the request (RFC 9457 problem).
    #[error("delivery service refused ({}): {}", .0.status, .0.kind())]
    DsRefused(Problem),
    /// The Delivery Service's answer did not decode.
    #[error("delivery service answer: {0}")]
    DsAnswer(String),
    /// No group with this id.
    #[error("unknown group {0}")]
    UnknownGroup(String),
    /// The group exists already.
    #[error("group {0} exists already")]
    GroupExists(String),
    /// No member of the group has this identity.
    #[error("{identity} is not a member of group {group}")]
    NotAMember {
        /// The group.
        group: String,
        /// The identity asked for.
        identity: String,
    },
    /// This client is no longer a member of the group.
    #[error("this client was removed from group {0}")]
    Removed(String),
    /// The operation had nothing to commit (e.g. no identities to add).
    #[error("nothing to commit")]
    NothingToCommit,
    /// A commit lost its epoch more times than the policy allows.
    #[error("the commit lost its epoch {attempts} times in a row")]
    CommitRetriesExhausted {
        /// Attempts made.
        attempts: u32,
    },
    /// The group cannot be recovered (a blind group's DS keeps no
    /// GroupInfo to rejoin from).
    #[error("group {0} cannot be recovered: {1}")]
    Unrecoverable(String, &'static str),
    /// A Welcome names none of this client's KeyPackages.
    #[error("the Welcome names none of this client's KeyPackages")]
    UnknownKeyPackage,
    /// The AS's answer is not what was asked for.
    #[error("unexpected answer from the AS: {0}")]
    AsAnswer(&'static str),
    /// A blocking task (a token call) panicked or was cancelled.
    #[error("a token task failed: {0}")]
    Task(String),
}

impl From<hsmls_ds::ClientError> for ClientError {
    fn from(e: hsmls_ds::ClientError) -> Self {
        match e {
            hsmls_ds::ClientError::Refused(p) => ClientError::DsRefused(p),
            hsmls_ds::ClientError::Transport(t) => ClientError::DsTransport(t),
            hsmls_ds::ClientError::UnexpectedAnswer(a) => ClientError::DsAnswer(a),
            hsmls_ds::ClientError::Signing(s) => ClientError::DsTransport(format!("signing: {s}")),
            hsmls_ds::ClientError::NotAuthenticated => {
                ClientError::DsTransport("not authenticated".into())
            }
            other => ClientError::DsAnswer(other.to_string()),
        }
    }
}

impl ClientError {
    /// The DS problem kind (`stale-commit`, `wrong-epoch`, …) if the DS
    /// refused.
    pub fn ds_problem_kind(&self) -> Option<&str> {
        match self {
            ClientError::DsRefused(p) => Some(p.kind()),
            _ => None,
        }
    }
}

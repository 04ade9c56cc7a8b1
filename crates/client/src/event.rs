//! What the client tells the application ([`ClientEvent`], received from
//! [`crate::ClientRuntime::events`]). Every event is sent after its effect
//! is saved; each names the identity of the member it is about, and of the
//! sender where there is one.

use std::fmt;

/// A group id, shown in hex.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub Vec<u8>);

impl GroupId {
    /// The raw MLS group id.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Parses the hex form.
    pub fn from_hex(text: &str) -> Option<Self> {
        hex::decode(text)
            .ok()
            .filter(|b| !b.is_empty())
            .map(GroupId)
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupId({self})")
    }
}

/// How the Delivery Service takes part in a group (see
/// `docs/delivery-service.md`).
pub use hsmls_ds::api::GroupMode;

/// Why a group had to be rejoined (RFC 9750 §"Recovery After State Loss",
/// §"Invalid Commits").
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForkReason {
    /// A commit the DS accepted could not be processed (the message is the
    /// engine's reason).
    UnprocessableCommit(String),
    /// A message of a later epoch arrived: commits were missed (more than
    /// the DS keeps, or the saved state is behind).
    MissedCommits {
        /// The group's epoch here.
        local_epoch: u64,
        /// The message's epoch.
        message_epoch: u64,
    },
    /// The saved state of the group could not be read or opened.
    StateLost(String),
    /// The DS ordered a commit that this member refuses because its
    /// sender's credential no longer validates (a path-less commit of a
    /// revoked member, RFC 9750 "Invalid Commits"): the group cannot
    /// follow the DS past it.
    InvalidCommit {
        /// The committer's identity.
        member: String,
        /// What is wrong with its credential.
        problem: CredentialProblem,
    },
}

/// A problem with a member's credential.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialProblem {
    /// The AS revoked it (the CRL lists it).
    Revoked,
    /// It expired.
    Expired,
    /// Another reason the credential check gives.
    Refused(String),
}

/// This client's own certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OwnCredentialEvent {
    /// Enrolled: a certificate was issued.
    Enrolled {
        /// Its serial number (hex).
        serial: String,
        /// notAfter (Unix seconds).
        not_after: u64,
    },
    /// Renewed before expiry.
    Renewed {
        /// The new serial number (hex).
        serial: String,
        /// The new notAfter.
        not_after: u64,
    },
    /// Renewal is due but failed; the certificate expires at `not_after`.
    NearExpiry {
        /// notAfter (Unix seconds).
        not_after: u64,
        /// Why the renewal failed.
        reason: String,
    },
    /// The AS revoked this client's certificate (it is on the CRL).
    Revoked {
        /// The revoked serial (hex).
        serial: String,
    },
}

/// What happened, for the application. `#[non_exhaustive]`: match with a
/// wildcard arm.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// An application message.
    Message {
        /// The group.
        group: GroupId,
        /// The sender's identity (from its credential).
        sender: String,
        /// The epoch it was sent in.
        epoch: u64,
        /// The data.
        data: Vec<u8>,
    },
    /// This client joined a group (by Welcome).
    Joined {
        /// The group.
        group: GroupId,
        /// The epoch joined.
        epoch: u64,
        /// The members' identities.
        members: Vec<String>,
    },
    /// A member was added.
    MemberAdded {
        /// The group.
        group: GroupId,
        /// The new member.
        member: String,
        /// Who committed it (none for an external join).
        by: Option<String>,
    },
    /// A member was removed (or left).
    MemberRemoved {
        /// The group.
        group: GroupId,
        /// The removed member.
        member: String,
        /// Who committed it.
        by: Option<String>,
    },
    /// A member's leaf was updated (fresh keys; a self-update).
    MemberUpdated {
        /// The group.
        group: GroupId,
        /// The member.
        member: String,
    },
    /// This client was removed from the group (its state is deleted).
    Removed {
        /// The group.
        group: GroupId,
        /// Who committed it.
        by: Option<String>,
    },
    /// The group moved to a new epoch.
    EpochChanged {
        /// The group.
        group: GroupId,
        /// The new epoch.
        epoch: u64,
        /// The new epoch's `epoch_authenticator` (RFC 9420 §8.7): compare
        /// it out of band ([`crate::safety_number`]).
        epoch_authenticator: Vec<u8>,
    },
    /// A commit of this client lost its epoch to another member's and was
    /// rebuilt on the new epoch (RFC 9420 §14) and sent again.
    CommitRebuilt {
        /// The group.
        group: GroupId,
        /// The epoch the rebuilt commit is for.
        epoch: u64,
    },
    /// A member's credential fails the check.
    CredentialProblem {
        /// The group.
        group: GroupId,
        /// The member.
        member: String,
        /// What is wrong.
        problem: CredentialProblem,
    },
    /// About this client's own certificate.
    OwnCredential(OwnCredentialEvent),
    /// The client rejoined a group by external commit after a fork.
    Rejoined {
        /// The group.
        group: GroupId,
        /// The epoch of the rejoin.
        epoch: u64,
        /// Why.
        reason: ForkReason,
    },
    /// A group cannot be processed any more and could not be recovered
    /// (e.g. a blind group, whose DS keeps no GroupInfo).
    GroupBroken {
        /// The group.
        group: GroupId,
        /// Why.
        reason: ForkReason,
    },
    /// KeyPackages were published.
    KeyPackagesPublished {
        /// How many (including a new last-resort one).
        published: usize,
        /// Whether the last-resort KeyPackage was replaced (its keys are
        /// destroyed in the token).
        last_resort_rotated: bool,
        /// The DS's count of available (non last-resort) KeyPackages now.
        available: u64,
    },
}

impl fmt::Debug for ClientEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Application data is the application's secret: its length only.
            ClientEvent::Message {
                group,
                sender,
                epoch,
                data,
            } => f
                .debug_struct("Message")
                .field("group", group)
                .field("sender", sender)
                .field("epoch", epoch)
                .field("data_len", &data.len())
                .finish(),
            ClientEvent::Joined {
                group,
                epoch,
                members,
            } => f
                .debug_struct("Joined")
                .field("group", group)
                .field("epoch", epoch)
                .field("members", members)
                .finish(),
            ClientEvent::MemberAdded { group, member, by } => f
                .debug_struct("MemberAdded")
                .field("group", group)
                .field("member", member)
                .field("by", by)
                .finish(),
            ClientEvent::MemberRemoved { group, member, by } => f
                .debug_struct("MemberRemoved")
                .field("group", group)
                .field("member", member)
                .field("by", by)
                .finish(),
            ClientEvent::MemberUpdated { group, member } => f
                .debug_struct("MemberUpdated")
                .field("group", group)
                .field("member", member)
                .finish(),
            ClientEvent::Removed { group, by } => f
                .debug_struct("Removed")
                .field("group", group)
                .field("by", by)
                .finish(),
            ClientEvent::EpochChanged { group, epoch, .. } => f
                .debug_struct("EpochChanged")
                .field("group", group)
                .field("epoch", epoch)
                .finish_non_exhaustive(),
            ClientEvent::CommitRebuilt { group, epoch } => f
                .debug_struct("CommitRebuilt")
                .field("group", group)
                .field("epoch", epoch)
                .finish(),
            ClientEvent::CredentialProblem {
                group,
                member,
                problem,
            } => f
                .debug_struct("CredentialProblem")
                .field("group", group)
                .field("member", member)
                .field("problem", problem)
                .finish(),
            ClientEvent::OwnCredential(e) => f.debug_tuple("OwnCredential").field(e).finish(),
            ClientEvent::Rejoined {
                group,
                epoch,
                reason,
            } => f
                .debug_struct("Rejoined")
                .field("group", group)
                .field("epoch", epoch)
                .field("reason", reason)
                .finish(),
            ClientEvent::GroupBroken { group, reason } => f
                .debug_struct("GroupBroken")
                .field("group", group)
                .field("reason", reason)
                .finish(),
            ClientEvent::KeyPackagesPublished {
                published,
                last_resort_rotated,
                available,
            } => f
                .debug_struct("KeyPackagesPublished")
                .field("published", published)
                .field("last_resort_rotated", last_resort_rotated)
                .field("available", available)
                .finish(),
        }
    }
}

/// A member as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberInfo {
    /// Its leaf index.
    pub leaf: u32,
    /// Its identity (the certificate's URI; a basic credential's bytes).
    pub identity: String,
    /// Its signature public key.
    pub signature_key: Vec<u8>,
    /// Its leaf HPKE public key (changes with each of its updates).
    pub encryption_key: Vec<u8>,
    /// The serial number (hex) of its leaf certificate (`None` for a
    /// credential that is not X.509): changes when the member renews and
    /// its next commit carries the renewed certificate.
    pub serial: Option<String>,
}

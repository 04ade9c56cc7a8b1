//! Group configuration and the options of a commit.

use crate::codec::{CipherSuite, Extension, PreSharedKeyId};
use crate::credential::Signer;
use crate::key_package::KeyPackage;
use crate::message_protection::PaddingPolicy;
use crate::secret_tree::SecretTreeConfig;
use crate::tree_math::LeafIndex;

/// How a group frames its handshake messages (RFC 9420 §6; RFC 9750
/// recommends encrypting them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HandshakeFraming {
    /// Proposals and commits as PrivateMessage (the default).
    #[default]
    Private,
    /// Proposals and commits as PublicMessage (readable by the Delivery
    /// Service, authenticated by the membership tag).
    Public,
}

/// Group policy: framing, out-of-order bounds, epoch retention. Build it
/// from `GroupConfig::default()` and set the fields to change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupConfig {
    /// The cipher suite of the groups this client creates and joins by
    /// external commit (0x0001, 0x0002, 0x0003, 0x0005 and 0x0007 are
    /// implemented; the default is 0x0002). A Welcome is joined in the
    /// suite of the KeyPackage it is addressed to.
    pub cipher_suite: CipherSuite,
    /// How this member sends handshake messages.
    pub handshake_framing: HandshakeFraming,
    /// Whether handshakes received as PublicMessage are accepted.
    pub accept_public_handshakes: bool,
    /// Whether handshakes received as PrivateMessage are accepted.
    pub accept_private_handshakes: bool,
    /// Per-sender out-of-order window and forward-ratchet bound (RFC 9420
    /// §9.1, §9.2).
    pub secret_tree: SecretTreeConfig,
    /// How many past epochs keep their secret trees for late application
    /// messages (0: none; RFC 9420 §9.2 deletion schedule otherwise).
    pub max_past_epochs: usize,
    /// Padding of PrivateMessage content (RFC 9420 §6.3).
    pub padding: PaddingPolicy,
    /// Whether Welcomes carry the `ratchet_tree` extension in their
    /// GroupInfo (RFC 9420 §12.4.3.3). Without it the tree goes out of band.
    pub ratchet_tree_in_welcome: bool,
    /// Whether GroupInfos published for external joiners carry the tree.
    pub ratchet_tree_in_group_info: bool,
    /// Most proposals cached per epoch before new ones are
    /// refused (bounds memory on hostile input).
    pub max_pending_proposals: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            cipher_suite: CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
            handshake_framing: HandshakeFraming::Private,
            accept_public_handshakes: true,
            accept_private_handshakes: true,
            secret_tree: SecretTreeConfig::default(),
            max_past_epochs: 2,
            padding: PaddingPolicy::NONE,
            ratchet_tree_in_welcome: true,
            ratchet_tree_in_group_info: true,
            max_pending_proposals: 10_000,
        }
    }
}

/// What to put into a commit beyond the pending proposals. Build it from
/// [`CommitOptions::new`] and set the fields needed.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CommitOptions {
    /// Validated KeyPackages to add, by value (the group checks what
    /// depends on it; see [`crate::Group::add_members`]).
    pub add_key_packages: Vec<KeyPackage>,
    /// Members to remove, by leaf index, by value.
    pub remove_leaves: Vec<LeafIndex>,
    /// PSKs to inject by value (their values must be known to every
    /// member: external PSKs in each member's store, resumption PSKs of
    /// retained epochs).
    pub psks: Vec<PreSharedKeyId>,
    /// New GroupContext extensions, by value.
    pub group_context_extensions: Option<Vec<Extension>>,
    /// Whether to include the pending proposals received or sent in this
    /// epoch, by reference (default true through [`CommitOptions::new`]).
    pub include_pending: bool,
    /// Always include an UpdatePath, even when not required.
    pub force_path: bool,
    /// A ReInit by value (RFC 9420 §12.1.5): it must be the commit's only
    /// proposal; merging the commit closes the group.
    pub reinit: Option<crate::codec::ReInit>,
    /// Application-chosen `authenticated_data` of the commit message.
    pub authenticated_data: Vec<u8>,
    /// Whether to produce the new epoch's signed GroupInfo (for external
    /// joiners; costs a signature and, with the tree, an O(N) encoding).
    pub group_info: bool,
    /// Replaces this member's credential (and signature key, if it is
    /// another) in the commit's UpdatePath (RFC 9420 §5.3.1: "a Commit
    /// with an UpdatePath whose LeafNode has a new credential for the
    /// committer"), e.g. a renewed certificate before the old one
    /// expires. The commit gets a path; the path's LeafNode carries the
    /// new credential and signature key and is signed by the new key; the
    /// commit itself is signed by the current key (the one the other
    /// members know for this leaf). The new credential must validate with
    /// the group's validator and be a valid successor of the current one
    /// ([`CredentialValidator::valid_successor`](crate::CredentialValidator::valid_successor));
    /// its key must be in the group's custody backend. Once the commit is
    /// merged the group signs with the new signer, and [`crate::Group::save`]
    /// keeps it.
    pub new_signer: Option<Signer>,
}

impl CommitOptions {
    /// Commit the pending proposals, with a path when the RFC requires one.
    pub fn new() -> Self {
        CommitOptions {
            include_pending: true,
            group_info: true,
            ..Default::default()
        }
    }
}

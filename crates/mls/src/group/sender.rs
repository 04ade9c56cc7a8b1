//! What a handshake's sender must be, checked the same way by a member
//! ([`super::Group`]) and by the passive observer ([`super::PublicGroup`]).

use super::{CommitRule, GroupError, MessageRule};
use crate::codec::{
    self, Credential, Extension, FramedContent, FramedContentBody, LeafNode, Proposal, Sender,
    SignaturePublicKey,
};
use crate::credential::CredentialValidator;
use crate::tree::RatchetTree;
use crate::tree_math::LeafIndex;

/// The key a PublicMessage's sender signs with (RFC 9420 §6.1): a member's
/// leaf, an external joiner's new leaf (§12.4.3.2), a new member's
/// KeyPackage, or a listed external sender (§12.1.8.1).
pub(crate) fn sender_signature_key(
    tree: &RatchetTree,
    extensions: &[Extension],
    content: &FramedContent,
) -> Result<SignaturePublicKey, GroupError> {
    match (&content.sender, &content.body) {
        (Sender::Member(i), _) => tree
            .leaf(*i)
            .map(|l| l.signature_key.clone())
            .ok_or(GroupError::NotAMember(*i)),
        (Sender::NewMemberCommit, FramedContentBody::Commit(c)) => c
            .path
            .as_ref()
            .map(|p| p.leaf_node.signature_key.clone())
            .ok_or(GroupError::InvalidCommit(
                CommitRule::ExternalCommitWithoutPath,
            )),
        (Sender::NewMemberProposal, FramedContentBody::Proposal(Proposal::Add(a))) => {
            Ok(a.key_package.leaf_node.signature_key.clone())
        }
        (Sender::External(i), FramedContentBody::Proposal(_)) => {
            let senders = codec::find_extension::<codec::ExternalSenders>(extensions)
                .ok_or(GroupError::UnexpectedMessage(
                    MessageRule::NoExternalSenders,
                ))?
                .map_err(GroupError::Malformed)?;
            senders
                .0
                .get(*i as usize)
                .map(|s| s.signature_key.clone())
                .ok_or(GroupError::UnexpectedMessage(
                    MessageRule::UnknownExternalSender,
                ))
        }
        _ => Err(GroupError::UnexpectedMessage(
            MessageRule::SenderCannotSendContent,
        )),
    }
}

/// A member's handshake is refused when the credential of its current
/// leaf no longer validates (revoked, expired: RFC 9750 §"Handling
/// Authentication Failures"), unless the handshake itself brings the
/// sender's new leaf (an Update proposal, a commit with a path), whose
/// credential is validated instead: that is how a member renews an
/// expiring certificate. Application messages are not checked (one chain
/// validation per message would cost more than the message); nor are
/// non-member senders, whose keys are checked where they are met.
pub(crate) fn check_sender_credential(
    tree: &RatchetTree,
    validator: &dyn CredentialValidator,
    content: &FramedContent,
) -> Result<(), GroupError> {
    let Sender::Member(sender) = content.sender else {
        return Ok(());
    };
    let brings_new_leaf = match &content.body {
        FramedContentBody::Application(_) => return Ok(()),
        FramedContentBody::Proposal(p) => matches!(p, Proposal::Update(_)),
        FramedContentBody::Commit(c) => c.path.is_some(),
    };
    if brings_new_leaf {
        return Ok(());
    }
    let leaf = tree.leaf(sender).ok_or(GroupError::NotAMember(sender))?;
    validator
        .validate_in_suite(tree_suite(tree), &leaf.credential, &leaf.signature_key)
        .map_err(|error| GroupError::SenderCredential { sender, error })
}

/// The credential a commit's UpdatePath brings (RFC 9420 §12.4.2): valid,
/// and for a member a valid successor of its current one; an external
/// commit (§12.4.3.2) may remove only the joiner's own old leaf
/// ([`check_resync_removal`]).
pub(crate) fn check_path_credential(
    tree: &RatchetTree,
    validator: &dyn CredentialValidator,
    committer: Sender,
    path_leaf: &LeafNode,
    removes: &[(LeafIndex, LeafNode)],
) -> Result<(), GroupError> {
    let old = match committer {
        Sender::Member(i) => Some(tree.leaf(i).ok_or(GroupError::NotAMember(i))?),
        _ => None,
    };
    validator.validate_in_suite(
        tree_suite(tree),
        &path_leaf.credential,
        &path_leaf.signature_key,
    )?;
    match old {
        Some(old) if !validator.valid_successor(&old.credential, &path_leaf.credential) => Err(
            GroupError::InvalidCommit(CommitRule::PathCredentialNotSuccessor),
        ),
        Some(_) => Ok(()),
        None => removes.iter().try_for_each(|(_, removed)| {
            check_resync_removal(validator, &removed.credential, &path_leaf.credential)
        }),
    }
}

/// §12.4.3.2: a Remove in an external commit removes the joiner's own old
/// leaf (resync): its credential, or one the joiner's is a valid successor
/// of (a member that renewed its certificate).
pub(crate) fn check_resync_removal(
    validator: &dyn CredentialValidator,
    removed: &Credential,
    joiner: &Credential,
) -> Result<(), GroupError> {
    if removed == joiner || validator.valid_successor(removed, joiner) {
        Ok(())
    } else {
        Err(GroupError::InvalidCommit(
            CommitRule::ExternalCommitRemovesOther,
        ))
    }
}

/// The (wire) cipher suite of the group whose tree this is.
fn tree_suite(tree: &RatchetTree) -> crate::codec::CipherSuite {
    crate::codec::CipherSuite(tree.provider().cipher_suite().0)
}

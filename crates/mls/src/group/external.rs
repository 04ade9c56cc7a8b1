//! Proposals from outside the group (RFC 9420 §12.1.8): by an external
//! sender listed in the group's `external_senders` extension, and a
//! would-be member's own Add (`new_member_proposal`). Both are
//! PublicMessages without a membership tag.

use super::proposals::{CachedProposal, suite_provider};
use super::{GroupError, ProposalMessage, ProposalRule};
use crate::codec::{
    Add, CipherSuite, Encode, FramedContent, FramedContentBody, MlsMessage, MlsMessageBody,
    Proposal, Sender, WireFormat,
};
use crate::credential::Signer;
use crate::key_package::KeyPackage;
use crate::message_protection::{protect_public, sign_content};

fn send_public(
    signer: &Signer,
    cipher_suite: CipherSuite,
    content: FramedContent,
) -> Result<ProposalMessage, GroupError> {
    let cs = suite_provider(cipher_suite)?;
    let signed = sign_content(
        cs,
        signer.custody.as_ref(),
        &signer.signature_key,
        WireFormat::PUBLIC_MESSAGE,
        content,
        None,
    )?;
    let reference = CachedProposal::from_content(cs, &signed)?.reference;
    let message = protect_public(cs, signed, None)?;
    Ok(ProposalMessage {
        message: MlsMessage {
            body: MlsMessageBody::PublicMessage(message),
        }
        .encode()?,
        reference,
    })
}

/// A proposal by the external sender at `sender_index` of the group's
/// `external_senders` extension (e.g. a Delivery Service removing a
/// member), for `epoch` of the group `group_id`. Allowed proposals: Add,
/// Remove, PreSharedKey, ReInit, GroupContextExtensions.
pub fn external_proposal(
    signer: &Signer,
    cipher_suite: CipherSuite,
    group_id: &[u8],
    epoch: u64,
    sender_index: u32,
    proposal: Proposal,
) -> Result<ProposalMessage, GroupError> {
    if matches!(proposal, Proposal::Update(_) | Proposal::ExternalInit(_)) {
        return Err(GroupError::InvalidProposal(
            ProposalRule::NotAllowedFromExternalSender,
        ));
    }
    send_public(
        signer,
        cipher_suite,
        FramedContent {
            group_id: group_id.to_vec(),
            epoch,
            sender: Sender::External(sender_index),
            authenticated_data: Vec::new(),
            body: FramedContentBody::Proposal(proposal),
        },
    )
}

/// A non-member's proposal to add itself with its KeyPackage
/// (`new_member_proposal`, RFC 9420 §12.1.8), signed with the KeyPackage's
/// signature key, for `epoch` of the group `group_id`.
pub fn new_member_add_proposal(
    signer: &Signer,
    key_package: &KeyPackage,
    group_id: &[u8],
    epoch: u64,
) -> Result<ProposalMessage, GroupError> {
    send_public(
        signer,
        key_package.cipher_suite(),
        FramedContent {
            group_id: group_id.to_vec(),
            epoch,
            sender: Sender::NewMemberProposal,
            authenticated_data: Vec::new(),
            body: FramedContentBody::Proposal(Proposal::Add(Add {
                key_package: key_package.as_wire().clone(),
            })),
        },
    )
}

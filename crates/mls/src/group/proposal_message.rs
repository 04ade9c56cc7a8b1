//! A proposal this member sent, as the application gets it.

use std::fmt;

use crate::codec::ProposalRef;

/// A proposal this member made (RFC 9420 §12.1): the message to send to
/// the group, and its reference. The proposal is cached for this epoch's
/// commit as soon as it is made, so dropping the message without sending
/// it leaves the other members unable to process a commit that includes
/// it by reference: send it, or [`Group::discard_proposal`](crate::Group::discard_proposal).
#[must_use = "a proposal is cached as sent: send its message to the group (or discard it)"]
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProposalMessage {
    /// The proposal as an `MLSMessage` (PrivateMessage or PublicMessage
    /// per the group's handshake framing, or a PublicMessage from outside
    /// the group): send it to the group.
    pub message: Vec<u8>,
    /// `ProposalRef` of the proposal (RFC 9420 §5.2), as commits name it.
    pub reference: ProposalRef,
}

impl ProposalMessage {
    /// The message bytes (an `MLSMessage`).
    pub fn into_message(self) -> Vec<u8> {
        self.message
    }
}

impl AsRef<[u8]> for ProposalMessage {
    fn as_ref(&self) -> &[u8] {
        &self.message
    }
}

impl fmt::Debug for ProposalMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProposalMessage")
            .field("message_len", &self.message.len())
            .field("reference", &self.reference)
            .finish()
    }
}

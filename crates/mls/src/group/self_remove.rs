//! SelfRemove (draft-ietf-mls-extensions): a member proposes its own
//! removal with a proposal that has no body; the next commit by another
//! member removes the sender (like a Remove of the sender's leaf, with an
//! UpdatePath). The proposal type is
//! [`crate::wire::SELF_REMOVE_PROPOSAL_TYPE`]: 0x000A as in openmls and
//! the extensions draft's IANA request, not mls-rs's private-use 0xF003.
//!
//! hsmls does not require the type in the members' capabilities or the
//! group's `required_capabilities`; an application that mixes
//! implementations should list it there.

use super::{Group, GroupError, ProposalMessage};
use crate::codec::{Proposal, SelfRemove};

impl Group {
    /// Proposes removing this member (SelfRemove). Another member must
    /// commit it; this member cannot.
    pub fn propose_self_remove(&mut self) -> Result<ProposalMessage, GroupError> {
        self.send_proposal(Proposal::SelfRemove(SelfRemove {}))
    }
}

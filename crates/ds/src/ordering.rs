//! Ordering: what the DS reads of a message, and the rules it orders by.
//!
//! Of a PrivateMessage the DS reads only the public framing (RFC 9420
//! §6.3): group id, epoch, content type. Of a PublicMessage it reads the
//! same from the FramedContent, and the sender. Everything else stays
//! opaque in blind mode.
//!
//! The rules (RFC 9750 §5.2, §6):
//! - one total order per group: a gapless sequence number from the group
//!   row's counter, the same for every recipient;
//! - the first commit for epoch E wins; any other commit for E, or a commit
//!   for a stale or future epoch, is refused with the current epoch; a
//!   retry of the winner (same bytes) succeeds again;
//! - a Welcome is delivered only if its commit won (same transaction);
//! - proposals are accepted in the current epoch only, application
//!   messages in the current epoch and the `window` epochs before it.

use hsmls::wire::{ContentType, RoutingInfo, Sender, WireFormat};
use sha2::{Digest as _, Sha256};

use crate::error::DsError;

/// What the DS reads of a group message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framing {
    /// The group id.
    pub group_id: Vec<u8>,
    /// The epoch.
    pub epoch: u64,
    /// The content type.
    pub content_type: ContentType,
    /// The sender, if the message is a PublicMessage.
    pub public_sender: Option<Sender>,
}

impl Framing {
    /// Whether the message is a PublicMessage.
    pub fn is_public(&self) -> bool {
        self.public_sender.is_some()
    }
}

/// Reads the public framing of a group message (`MLSMessage` carrying a
/// PublicMessage or PrivateMessage), with the engine's bounded decoder.
pub fn framing(bytes: &[u8]) -> Result<Framing, DsError> {
    let info =
        RoutingInfo::parse(bytes).map_err(|_| DsError::MalformedMessage("not an MLSMessage"))?;
    let public = match info.wire_format {
        WireFormat::PUBLIC_MESSAGE => true,
        WireFormat::PRIVATE_MESSAGE => false,
        _ => return Err(DsError::MalformedMessage("not a group message")),
    };
    match (info.group_id, info.epoch, info.content_type) {
        (Some(group_id), Some(epoch), Some(content_type)) => Ok(Framing {
            group_id,
            epoch,
            content_type,
            public_sender: if public { info.sender } else { None },
        }),
        _ => Err(DsError::MalformedMessage("not a group message")),
    }
}

/// Reads a Welcome (`MLSMessage`) and returns its KeyPackageRefs (the
/// `secrets[].new_member` the DS routes by).
pub fn welcome_refs(bytes: &[u8]) -> Result<Vec<Vec<u8>>, DsError> {
    match RoutingInfo::parse(bytes) {
        Ok(info) if info.wire_format == WireFormat::WELCOME => {
            Ok(info.new_members.into_iter().map(|r| r.0).collect())
        }
        _ => Err(DsError::MalformedMessage("not a Welcome")),
    }
}

/// SHA-256 of a message's bytes (commit retries and duplicates are
/// recognised by it).
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Whether a message of `epoch` is accepted when the group is in
/// `current`, `window` epochs back at most.
pub fn in_window(epoch: u64, current: u64, window: u64) -> bool {
    epoch <= current && epoch.saturating_add(window) >= current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window() {
        assert!(in_window(5, 5, 0));
        assert!(!in_window(4, 5, 0));
        assert!(in_window(3, 5, 2));
        assert!(!in_window(2, 5, 2));
        assert!(!in_window(6, 5, 2));
        assert!(in_window(u64::MAX, u64::MAX, u64::MAX));
    }

    #[test]
    fn garbage_is_malformed() {
        for bytes in [&b""[..], &[0, 1, 0, 5][..], &[0xff; 40][..]] {
            assert!(matches!(framing(bytes), Err(DsError::MalformedMessage(_))));
            assert!(matches!(
                welcome_refs(bytes),
                Err(DsError::MalformedMessage(_))
            ));
        }
    }
}

//! The Delivery Service's wire API: request and response bodies (JSON,
//! binary fields in base64url without padding), the problem details of
//! refusals (RFC 9457), the paths, and the `message/mls` media type
//! (RFC 9420 §17.10).
//!
//! Every MLS structure travels as the bytes of an `MLSMessage`
//! (`message/mls`): posted as the raw body of `POST /v1/messages`, and as
//! base64 fields inside JSON where several travel together (a commit
//! bundle, a batch of queued messages).
//!
//! | method and path | what |
//! | --- | --- |
//! | `POST /v1/auth/challenge` | a fresh challenge (nonce, DS identity, time) |
//! | `POST /v1/auth/session` | the signed challenge and the credential: a bearer session |
//! | `POST /v1/key-packages` | publish a batch of own KeyPackages |
//! | `GET /v1/key-packages` | own counts |
//! | `POST /v1/key-packages/claim` | claim one KeyPackage of a client |
//! | `POST /v1/groups` | create a group (mode chosen here) |
//! | `POST /v1/commit-bundles` | a commit, its Welcome and GroupInfo |
//! | `POST /v1/messages` | an application message or a proposal (`message/mls`) |
//! | `GET /v1/groups/{group}/group-info` | assisted mode: the current GroupInfo (`message/mls`) |
//! | `GET /v1/groups/{group}/ratchet-tree` | assisted mode: the current ratchet tree |
//! | `GET /v1/queues/{queue}/messages` | fetch from the cursor |
//! | `POST /v1/queues/{queue}/ack` | acknowledge |
//! | `GET /v1/queues/{queue}/ws` | WebSocket: live push, resuming from a sequence number; messages sent on it too |
//!
//! On the WebSocket, control frames are JSON text ([`ClientFrame`],
//! [`ServerFrame`]); group messages travel in binary frames, without JSON
//! or base64 (see [`QueuedMessage::encode_frame`] and [`SendFrame`]), since they are the
//! bulk of the traffic: a client sends an application message or proposal
//! as a binary frame and gets [`ServerFrame::Accepted`] or
//! [`ServerFrame::Refused`] with the same request id, as it would from
//! `POST /v1/messages`.

use serde::{Deserialize, Serialize};

/// The media type of MLS messages (RFC 9420 §17.10).
pub const MESSAGE_MLS: &str = "message/mls";

/// The media type of problem details (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The prefix of this service's problem types.
pub const PROBLEM_BASE: &str = "urn:hsmls:ds:problem:";

/// The label of the authentication signature (`SignWithLabel`, RFC 9420
/// §5.1.2): a DS challenge is never a valid MLS signature of anything
/// else.
pub const AUTH_LABEL: &[u8] = b"hsmls DS authentication";

/// Base64url without padding, for binary fields.
pub mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Encodes bytes.
    pub fn encode(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes a string; `None` if it is not base64url.
    pub fn decode(s: &str) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(s).ok()
    }

    /// serde: serialize.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(v))
    }

    /// serde: deserialize.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        decode(&s).ok_or_else(|| serde::de::Error::custom("invalid base64url"))
    }

    /// serde for `Option<Vec<u8>>`.
    pub mod option {
        use super::*;

        /// serde: serialize.
        pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(b) => s.serialize_some(&encode(b)),
                None => s.serialize_none(),
            }
        }

        /// serde: deserialize.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
            let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
            s.map(|s| decode(&s).ok_or_else(|| serde::de::Error::custom("invalid base64url")))
                .transpose()
        }
    }

    /// serde for `Vec<Vec<u8>>`.
    pub mod list {
        use super::*;
        use serde::ser::SerializeSeq;

        /// serde: serialize.
        pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for b in v {
                seq.serialize_element(&encode(b))?;
            }
            seq.end()
        }

        /// serde: deserialize.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
            let v = <Vec<std::borrow::Cow<'de, str>>>::deserialize(d)?;
            v.iter()
                .map(|s| decode(s).ok_or_else(|| serde::de::Error::custom("invalid base64url")))
                .collect()
        }
    }
}

/// A challenge of the DS (`POST /v1/auth/challenge`): the client signs
/// [`Challenge::to_be_signed`] with its MLS signature key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// 32 random bytes.
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// The DS's identity (its configured name, e.g. its host name): a
    /// signature for one DS is refused by another.
    pub ds_identity: String,
    /// When the challenge was issued (seconds since the Unix epoch).
    pub issued_at: u64,
    /// The DS's MAC over the three fields above (the DS keeps no state
    /// per challenge; any DS process sharing its key checks it).
    #[serde(with = "b64")]
    pub mac: Vec<u8>,
}

impl Challenge {
    /// The bytes the client signs: `nonce<V> || ds_identity<V> ||
    /// issued_at(u64)`, with 4-byte big-endian lengths.
    pub fn to_be_signed(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.nonce.len() + self.ds_identity.len() + 16);
        out.extend_from_slice(&(self.nonce.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&(self.ds_identity.len() as u32).to_be_bytes());
        out.extend_from_slice(self.ds_identity.as_bytes());
        out.extend_from_slice(&self.issued_at.to_be_bytes());
        out
    }
}

/// `POST /v1/auth/session`: the proof that the client holds the key of its
/// credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRequest {
    /// The challenge, as received.
    pub challenge: Challenge,
    /// The client's MLS `Credential` (TLS encoding).
    #[serde(with = "b64")]
    pub credential: Vec<u8>,
    /// The signature public key the credential binds.
    #[serde(with = "b64")]
    pub signature_key: Vec<u8>,
    /// `SignWithLabel(key, AUTH_LABEL, challenge.to_be_signed())`.
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
    /// The MLS cipher suite whose signature scheme made `signature` and
    /// whose scheme the credential's key must have (RFC 9420 §5.1.2);
    /// 0x0002 when absent (clients before suites other than 0x0002).
    #[serde(default = "default_auth_suite")]
    pub cipher_suite: u16,
}

fn default_auth_suite() -> u16 {
    0x0002
}

/// The cipher suite a client names in its [`SessionRequest`] for a
/// signature key of `scheme`: the lowest suite of that scheme (0x0001
/// for Ed25519, 0x0002 for P-256, 0x0005 for P-521, 0x0007 for P-384).
pub fn auth_suite(scheme: hsmls_custody::SignatureScheme) -> Option<u16> {
    [0x0001u16, 0x0002, 0x0005, 0x0007].into_iter().find(|s| {
        hsmls_crypto::CipherSuite(*s)
            .provider()
            .is_ok_and(|p| p.signature_scheme() == scheme)
    })
}

/// A bearer session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The bearer token (`Authorization: Bearer …`).
    pub token: String,
    /// The client's queue id (random, 16 bytes): the only name of the
    /// client in queue paths.
    #[serde(with = "b64")]
    pub queue_id: Vec<u8>,
    /// When the session ends (seconds since the Unix epoch).
    pub expires_at: u64,
}

/// `POST /v1/key-packages`: a batch of the client's own KeyPackages
/// (`MLSMessage`s).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishKeyPackages {
    /// The KeyPackages.
    #[serde(with = "b64::list")]
    pub key_packages: Vec<Vec<u8>>,
}

/// A client's KeyPackage counts, to replenish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyPackageCounts {
    /// Unexpired KeyPackages that are not last resort.
    pub available: u64,
    /// Unexpired last-resort KeyPackages.
    pub last_resort: u64,
    /// How many claims were served with a last-resort KeyPackage (since
    /// the client last published): replace it.
    pub last_resort_claims: u64,
}

/// `POST /v1/key-packages/claim`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimRequest {
    /// The identity of the client whose KeyPackage is wanted (as its
    /// credential names it).
    #[serde(with = "b64")]
    pub identity: Vec<u8>,
}

/// A claimed KeyPackage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedKeyPackage {
    /// The KeyPackage (`MLSMessage`).
    #[serde(with = "b64")]
    pub key_package: Vec<u8>,
    /// Whether it is the owner's last-resort KeyPackage.
    pub last_resort: bool,
}

/// How the DS takes part in a group, chosen at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GroupMode {
    /// The DS reads only the public framing (group id, epoch, content
    /// type) and orders; handshakes are PrivateMessages and the committer
    /// declares the routing changes.
    Blind,
    /// Commits are PublicMessages: the DS follows the public group state,
    /// refuses commits that would not verify, and serves the GroupInfo
    /// and ratchet tree for external joins.
    Assisted,
}

impl GroupMode {
    /// The stored code.
    pub fn code(self) -> i64 {
        match self {
            GroupMode::Blind => 0,
            GroupMode::Assisted => 1,
        }
    }

    /// From the stored code.
    pub fn from_code(c: i64) -> Option<Self> {
        match c {
            0 => Some(GroupMode::Blind),
            1 => Some(GroupMode::Assisted),
            _ => None,
        }
    }
}

/// `POST /v1/groups`: the creator becomes the group's only member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateGroup {
    /// The MLS group id.
    #[serde(with = "b64")]
    pub group_id: Vec<u8>,
    /// The mode.
    pub mode: GroupMode,
    /// The group's current epoch (0 for a new group).
    pub epoch: u64,
    /// Assisted mode: the GroupInfo of `epoch` (`MLSMessage`), signed by
    /// the creator.
    #[serde(default, with = "b64::option", skip_serializing_if = "Option::is_none")]
    pub group_info: Option<Vec<u8>>,
    /// Assisted mode: the ratchet tree (`RatchetTree` encoding) if the
    /// GroupInfo does not carry it.
    #[serde(default, with = "b64::option", skip_serializing_if = "Option::is_none")]
    pub ratchet_tree: Option<Vec<u8>>,
}

/// `POST /v1/commit-bundles`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommitBundle {
    /// The commit (`MLSMessage`: a PrivateMessage in blind mode, a
    /// PublicMessage in assisted mode).
    #[serde(with = "b64")]
    pub commit: Vec<u8>,
    /// The Welcome for the added members, if any (`MLSMessage`).
    #[serde(default, with = "b64::option", skip_serializing_if = "Option::is_none")]
    pub welcome: Option<Vec<u8>>,
    /// The GroupInfo of the new epoch (`MLSMessage`); required in
    /// assisted mode.
    #[serde(default, with = "b64::option", skip_serializing_if = "Option::is_none")]
    pub group_info: Option<Vec<u8>>,
    /// Blind mode: the identities of the clients the commit removes (the
    /// committer declares them; the DS cannot read the commit).
    #[serde(default, with = "b64::list", skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<Vec<u8>>,
}

/// A message accepted into a group's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// Its sequence number in the group (gapless, from 1).
    pub seq: u64,
    /// The group's epoch after it (a commit moves it by one).
    pub epoch: u64,
}

/// One message of a group, as queued for a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// The group.
    #[serde(with = "b64")]
    pub group_id: Vec<u8>,
    /// Its sequence number in the group.
    pub seq: u64,
    /// The `MLSMessage` (`message/mls`).
    #[serde(with = "b64")]
    pub message: Vec<u8>,
}

/// A Welcome waiting in a client's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedWelcome {
    /// Its id in the inbox (to acknowledge it).
    pub id: u64,
    /// The `MLSMessage` carrying the Welcome.
    #[serde(with = "b64")]
    pub welcome: Vec<u8>,
}

/// `GET /v1/queues/{queue}/messages`: what is after the client's cursors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueBatch {
    /// Welcomes first (a client joins before it reads the new group).
    pub welcomes: Vec<QueuedWelcome>,
    /// Group messages, in each group's order.
    pub messages: Vec<QueuedMessage>,
}

/// A position in one group's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPosition {
    /// The group.
    #[serde(with = "b64")]
    pub group_id: Vec<u8>,
    /// The last sequence number handled.
    pub seq: u64,
}

/// `POST /v1/queues/{queue}/ack`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ack {
    /// Messages up to and including `seq` in each group are handled.
    #[serde(default)]
    pub messages: Vec<GroupPosition>,
    /// Welcomes handled.
    #[serde(default)]
    pub welcomes: Vec<u64>,
}

/// What a client sends on the WebSocket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientFrame {
    /// Resume after these positions (groups not named resume from the
    /// stored cursor). Sent first; may be repeated.
    Resume {
        /// Positions.
        positions: Vec<GroupPosition>,
    },
    /// Acknowledge, as `POST …/ack`.
    Ack(Ack),
}

/// What the DS pushes on the WebSocket. Group messages come as binary
/// frames ([`QueuedMessage::encode_frame`]); [`crate::client::PushStream`] returns them
/// as [`ServerFrame::Message`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerFrame {
    /// A group message.
    Message(QueuedMessage),
    /// A Welcome.
    Welcome(QueuedWelcome),
    /// A message sent on the connection ([`SendFrame`]) was accepted.
    Accepted {
        /// The request id of the [`SendFrame`].
        id: u64,
        /// Where it was ordered.
        #[serde(flatten)]
        accepted: Accepted,
    },
    /// A message sent on the connection was refused.
    Refused {
        /// The request id of the [`SendFrame`].
        id: u64,
        /// Why (the problem `POST /v1/messages` would have answered).
        problem: Problem,
    },
}

/// A binary frame from the client: an application message or a proposal
/// to order, as `POST /v1/messages` would (RFC 9420 §6 `MLSMessage`).
///
/// Layout: `request_id` (8 bytes, big endian) then the `MLSMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFrame<'a> {
    /// Chosen by the client; the answer carries it.
    pub request_id: u64,
    /// The `MLSMessage`.
    pub message: &'a [u8],
}

/// Why a binary frame could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than its fixed header.
    #[error("frame shorter than its header")]
    Truncated,
    /// The group id's length runs past the frame.
    #[error("group id length past the end of the frame")]
    GroupIdLength,
}

impl<'a> SendFrame<'a> {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.message.len());
        out.extend_from_slice(&self.request_id.to_be_bytes());
        out.extend_from_slice(self.message);
        out
    }

    /// Reads a frame (untrusted bytes; the message is checked by the DS
    /// as any posted message).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, FrameError> {
        let (id, message) = bytes
            .split_first_chunk::<8>()
            .ok_or(FrameError::Truncated)?;
        Ok(SendFrame {
            request_id: u64::from_be_bytes(*id),
            message,
        })
    }
}

/// The binary frame in which the DS pushes a group message.
///
/// Layout: `seq` (8 bytes, big endian), the group id's length (2 bytes,
/// big endian), the group id, then the `MLSMessage`.
impl QueuedMessage {
    /// The frame of message `seq` of `group_id` (group ids are at most
    /// 65,535 bytes: the DS refuses longer ones when a group is created).
    pub fn encode_frame(group_id: &[u8], seq: u64, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + group_id.len() + message.len());
        out.extend_from_slice(&seq.to_be_bytes());
        let len = u16::try_from(group_id.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&group_id[..usize::from(len)]);
        out.extend_from_slice(message);
        out
    }

    /// Reads a frame (untrusted bytes from the network).
    pub fn decode_frame(bytes: &[u8]) -> Result<QueuedMessage, FrameError> {
        let (seq, rest) = bytes
            .split_first_chunk::<8>()
            .ok_or(FrameError::Truncated)?;
        let (len, rest) = rest.split_first_chunk::<2>().ok_or(FrameError::Truncated)?;
        let len = usize::from(u16::from_be_bytes(*len));
        if rest.len() < len {
            return Err(FrameError::GroupIdLength);
        }
        let (group_id, message) = rest.split_at(len);
        Ok(QueuedMessage {
            group_id: group_id.to_vec(),
            seq: u64::from_be_bytes(*seq),
            message: message.to_vec(),
        })
    }
}

/// A refusal (RFC 9457 problem details).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `urn:hsmls:ds:problem:<kind>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// The group's current epoch (wrong-epoch and conflict refusals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_epoch: Option<u64>,
    /// Where the message was already stored (duplicates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

impl Problem {
    /// The kind: the problem type without its prefix.
    pub fn kind(&self) -> &str {
        self.problem_type
            .strip_prefix(PROBLEM_BASE)
            .unwrap_or(&self.problem_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_frames_round_trip_and_refuse_short_input() {
        let f = SendFrame {
            request_id: 0x0102_0304_0506_0708,
            message: b"mls bytes",
        };
        let bytes = f.encode();
        assert_eq!(SendFrame::decode(&bytes), Ok(f));
        for n in 0..8 {
            assert_eq!(SendFrame::decode(&bytes[..n]), Err(FrameError::Truncated));
        }
        // An empty message decodes (the DS then refuses it as malformed).
        assert_eq!(SendFrame::decode(&bytes[..8]).unwrap().message, b"");

        let pushed = QueuedMessage::encode_frame(b"group", 42, b"message");
        let m = QueuedMessage::decode_frame(&pushed).unwrap();
        assert_eq!(
            (m.group_id.as_slice(), m.seq, m.message.as_slice()),
            (&b"group"[..], 42, &b"message"[..])
        );
        for n in 0..10 {
            assert_eq!(
                QueuedMessage::decode_frame(&pushed[..n]),
                Err(FrameError::Truncated)
            );
        }
        for n in 10..15 {
            assert_eq!(
                QueuedMessage::decode_frame(&pushed[..n]),
                Err(FrameError::GroupIdLength)
            );
        }
        // A length naming more than the frame holds.
        let mut long = pushed.clone();
        long[8..10].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            QueuedMessage::decode_frame(&long),
            Err(FrameError::GroupIdLength)
        );
    }
}

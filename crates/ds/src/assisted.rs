//! Assisted mode: the DS follows the group's public state with the
//! engine's [`PublicGroup`] and refuses a commit or proposal that would
//! not verify, so the group cannot be stuck on an invalid winning commit
//! (RFC 9750 §5.2, "Invalid Commits"). Handshakes are PublicMessages; the
//! routing changes are read from the commit itself (added members by the
//! KeyPackageRefs of their Add proposals, an external joiner by its
//! credential, removed members by their leaves), not declared by the
//! committer.
//!
//! The DS keeps its own routing record of the group, leaf index → the
//! client's queue, next to the public state: written when a leaf is filled
//! (the creator's, an Add through its Welcome's KeyPackageRef, an external
//! joiner's) and read to find a removed member's queue. A removal never
//! depends on the removed member's credential being valid now (it may be
//! revoked or expired: that is often why it is removed); only the
//! sender's credential (as the members judge it) and those of added or
//! updated leaves are validated. The DS keeps the current GroupInfo (checked against the
//! state the commit leads to) and serves it with the ratchet tree for
//! external joins.
//!
//! What the observer cannot check (confirmation and membership tag
//! values, UpdatePath ciphertexts, PSK values) is listed in
//! [`hsmls::PublicGroup`]'s documentation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use hsmls::wire::{Decode, Encode, LeafIndex, RoutingInfo, Sender};
use hsmls::{CredentialValidator, ObservedMessage, PublicGroup};

use crate::api::{CommitBundle, CreateGroup};
use crate::auth::AuthenticatorValidator;
use crate::error::DsError;
use crate::ordering::Framing;
use crate::server::{Ds, now};
use crate::store::{DsStore, GroupRecord, QueueId};

/// A Welcome with its KeyPackageRefs and the queues they route to.
pub(crate) type RoutedWelcome = (Vec<u8>, Vec<Vec<u8>>, Vec<QueueId>);

/// What an assisted commit changes.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) external: bool,
    pub(crate) added: Vec<QueueId>,
    pub(crate) removed: Vec<QueueId>,
    pub(crate) welcome: Option<(Vec<u8>, Vec<QueueId>)>,
    pub(crate) public_state: Vec<u8>,
    pub(crate) group_info: Vec<u8>,
}

fn validator<S: DsStore>(ds: &Ds<S>) -> Arc<dyn CredentialValidator> {
    Arc::new(AuthenticatorValidator(
        ds.authenticator().client_authenticator().clone(),
    ))
}

fn invalid(e: hsmls::GroupError) -> DsError {
    DsError::InvalidHandshake(e.to_string())
}

/// The stored state of an assisted group: the observer's public state
/// and the DS's routing record (leaf index → queue).
struct Assisted {
    public: PublicGroup,
    routes: BTreeMap<u32, QueueId>,
}

/// The stored format: `MAGIC`, the number of routes (u32), each route as
/// a leaf index (u32) and a queue id (16 bytes), then the PublicGroup's
/// bytes.
const MAGIC: &[u8; 8] = b"HDSASST1";
const ROUTE_LEN: usize = 4 + 16;

impl Assisted {
    fn to_bytes(&self) -> Result<Vec<u8>, DsError> {
        let public = self.public.to_bytes().map_err(invalid)?;
        let mut out =
            Vec::with_capacity(MAGIC.len() + 4 + self.routes.len() * ROUTE_LEN + public.len());
        out.extend_from_slice(MAGIC);
        let n = u32::try_from(self.routes.len())
            .map_err(|_| DsError::InvalidHandshake("too many routes".into()))?;
        out.extend_from_slice(&n.to_be_bytes());
        for (leaf, queue) in &self.routes {
            out.extend_from_slice(&leaf.to_be_bytes());
            out.extend_from_slice(queue);
        }
        out.extend_from_slice(&public);
        Ok(out)
    }

    fn from_bytes(bytes: &[u8], validator: Arc<dyn CredentialValidator>) -> Option<Self> {
        let rest = bytes.strip_prefix(&MAGIC[..])?;
        let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let rest = &rest[4..];
        let table = rest.get(..n.checked_mul(ROUTE_LEN)?)?;
        let routes = table
            .chunks_exact(ROUTE_LEN)
            .map(|c| {
                let leaf = u32::from_be_bytes(c[..4].try_into().ok()?);
                let queue: QueueId = c[4..].try_into().ok()?;
                Some((leaf, queue))
            })
            .collect::<Option<BTreeMap<_, _>>>()?;
        let public = PublicGroup::from_bytes(&rest[table.len()..], validator).ok()?;
        Some(Assisted { public, routes })
    }
}

fn load<S: DsStore>(ds: &Ds<S>, record: &GroupRecord) -> Result<Assisted, DsError> {
    let state = record
        .public_state
        .as_ref()
        .ok_or(DsError::ModeMismatch("the group is blind"))?;
    Assisted::from_bytes(state, validator(ds)).ok_or_else(|| {
        tracing::error!("stored assisted group state does not load");
        DsError::InvalidHandshake("stored state unreadable".into())
    })
}

/// A new assisted group: its public state from the creator's GroupInfo
/// and tree; the creator must be the GroupInfo's signer.
pub(crate) async fn create<S: DsStore>(
    ds: &Ds<S>,
    queue: QueueId,
    req: &CreateGroup,
) -> Result<(Vec<u8>, Vec<u8>), DsError> {
    let gi = req.group_info.as_ref().ok_or(DsError::InvalidGroupInfo(
        "assisted mode needs the GroupInfo".into(),
    ))?;
    let tree = req
        .ratchet_tree
        .as_ref()
        .map(|t| hsmls::wire::RatchetTree::decode(t))
        .transpose()
        .map_err(|_| DsError::MalformedRequest("ratchet tree does not decode"))?;
    let pg = PublicGroup::from_group_info(gi, tree, validator(ds))
        .map_err(|e| DsError::InvalidGroupInfo(e.to_string()))?;
    if pg.group_id() != req.group_id.as_slice() || pg.epoch() != req.epoch {
        return Err(DsError::InvalidGroupInfo(
            "the GroupInfo is of another group or epoch".into(),
        ));
    }
    // The GroupInfo's signer (PublicGroup::from_group_info verified the
    // signature with its key).
    let signer_leaf: LeafIndex = match RoutingInfo::parse(gi).map(|i| i.sender) {
        Ok(Some(Sender::Member(leaf))) => leaf,
        _ => return Err(DsError::InvalidGroupInfo("not a GroupInfo".into())),
    };
    let signer = pg
        .member(signer_leaf)
        .ok_or(DsError::InvalidGroupInfo("no signer".into()))?;
    if ds
        .queue_of_credential(&signer.credential, &signer.signature_key)
        .await?
        != Some(queue)
    {
        return Err(DsError::InvalidGroupInfo(
            "the GroupInfo is not signed by the creator".into(),
        ));
    }
    let state = Assisted {
        public: pg,
        routes: BTreeMap::from([(signer_leaf.0, queue)]),
    }
    .to_bytes()?;
    Ok((state, gi.clone()))
}

/// Validates an assisted commit against the public state; `None` if the
/// commit is not for the current epoch (the store then answers: a retry
/// of the winner, or a conflict).
pub(crate) async fn commit<S: DsStore>(
    ds: &Ds<S>,
    queue: QueueId,
    record: &GroupRecord,
    f: &Framing,
    bundle: &CommitBundle,
    welcome: Option<RoutedWelcome>,
) -> Result<Option<Outcome>, DsError> {
    if f.epoch != record.epoch {
        return Ok(None);
    }
    let mut state = load(ds, record)?;
    let sender = f.public_sender.ok_or(DsError::ModeMismatch(
        "assisted mode takes PublicMessage commits",
    ))?;
    // The committer's leaf is the session's client's (by the routing
    // record). Its credential is judged by the observer as the members
    // judge it: the current one for a path-less commit, the one its
    // UpdatePath brings otherwise (so an expiring certificate can be
    // renewed by a commit).
    if let Sender::Member(i) = sender
        && state.routes.get(&i.0) != Some(&queue)
    {
        return Err(DsError::NotMember);
    }
    let pg = &mut state.public;
    let observed = pg.process(&bundle.commit, now()).map_err(invalid)?;
    let ObservedMessage::Commit(oc) = observed else {
        return Err(DsError::MalformedMessage("not a commit"));
    };
    let group_info = bundle.group_info.clone().ok_or(DsError::InvalidGroupInfo(
        "assisted mode needs the new GroupInfo".into(),
    ))?;
    pg.check_group_info(&group_info)
        .map_err(|e| DsError::InvalidGroupInfo(e.to_string()))?;
    // Routing from the commit itself. Removed leaves first: an Add may
    // fill a leaf a Remove of the same commit freed (RFC 9420 §12.3).
    let mut removed = Vec::new();
    for m in &oc.removed {
        match state.routes.remove(&m.index.0) {
            Some(q) => removed.push(q),
            // A leaf with no route (it cannot be: every filled leaf got
            // one) has no queue to stop.
            None => tracing::warn!("a removed leaf had no route"),
        }
    }
    let mut added = Vec::new();
    let mut refs = Vec::new();
    let mut by_ref: Vec<(Vec<u8>, u32)> = Vec::new();
    for a in &oc.added {
        match &a.key_package_ref {
            Some(r) => {
                refs.push(r.0.clone());
                by_ref.push((r.0.clone(), a.member.index.0));
            }
            None => {
                // The external joiner: it is the session's client.
                let q = ds
                    .queue_of_credential(&a.member.credential, &a.member.signature_key)
                    .await?;
                if q != Some(queue) {
                    return Err(DsError::InvalidHandshake(
                        "the external joiner is not the session's client".into(),
                    ));
                }
                // Only a current member joins by external commit: a resync
                // after a lost state (RFC 9420 §12.4.3.2). Anyone else
                // enters through a member's Add, and a removed member
                // cannot bring itself back.
                if !ds.store().is_member(f.group_id.clone(), queue).await? {
                    return Err(DsError::NotMember);
                }
                added.push(queue);
                state.routes.insert(a.member.index.0, queue);
            }
        }
    }
    let welcome = match (refs.is_empty(), welcome) {
        (true, None) => None,
        (true, Some(_)) => {
            return Err(DsError::InvalidHandshake(
                "a Welcome but no member added".into(),
            ));
        }
        (false, None) => {
            return Err(DsError::InvalidHandshake(
                "members added without a Welcome".into(),
            ));
        }
        (false, Some((w, wrefs, owners))) => {
            let a: HashSet<&Vec<u8>> = refs.iter().collect();
            let b: HashSet<&Vec<u8>> = wrefs.iter().collect();
            if a != b {
                return Err(DsError::InvalidHandshake(
                    "the Welcome is not for the members the commit adds".into(),
                ));
            }
            added.extend(owners.iter().copied());
            let owner_of: HashMap<&Vec<u8>, QueueId> =
                wrefs.iter().zip(owners.iter().copied()).collect();
            for (r, leaf) in &by_ref {
                let q = owner_of.get(r).copied().ok_or_else(|| {
                    DsError::InvalidHandshake(
                        "the Welcome is not for the members the commit adds".into(),
                    )
                })?;
                state.routes.insert(*leaf, q);
            }
            Some((w, owners))
        }
    };
    Ok(Some(Outcome {
        external: oc.external,
        added,
        removed,
        welcome,
        public_state: state.to_bytes()?,
        group_info,
    }))
}

/// Validates an assisted proposal: the new public state and the sequence
/// number it was computed at.
pub(crate) fn proposal<S: DsStore>(
    ds: &Ds<S>,
    record: &GroupRecord,
    f: &Framing,
    bytes: &[u8],
) -> Result<(Vec<u8>, u64), DsError> {
    if f.epoch != record.epoch {
        return Err(DsError::WrongEpoch {
            message_epoch: f.epoch,
            current_epoch: record.epoch,
        });
    }
    if f.public_sender.is_none() {
        return Err(DsError::ModeMismatch(
            "assisted mode takes PublicMessage proposals",
        ));
    }
    let mut state = load(ds, record)?;
    state.public.process(bytes, now()).map_err(invalid)?;
    Ok((state.to_bytes()?, record.seq))
}

/// The current ratchet tree of an assisted group (`RatchetTree` encoding).
pub(crate) fn ratchet_tree<S: DsStore>(
    ds: &Ds<S>,
    record: &GroupRecord,
) -> Result<Vec<u8>, DsError> {
    let state = load(ds, record)?;
    state
        .public
        .ratchet_tree()
        .encode()
        .map_err(|_| DsError::InvalidHandshake("tree does not encode".into()))
}

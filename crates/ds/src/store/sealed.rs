//! [`SealedStore`]: the one place where the DS's values become tags and
//! sealed cells on their way into a [`DsStore`] (SQLite or PostgreSQL),
//! and back on their way out. What each cell is bound to is in
//! [`crate::seal::Sealed`].

use std::sync::Arc;

use tokio::sync::OnceCell;

use super::{
    Claimed, CommitOutcome, CommitRow, DsStore, GroupRecord, KeyPackageRow, Membership,
    MessageOutcome, MessageRow, NewCommit, NewGroup, NewGroupRow, NewKeyPackage, NewMessage,
    Purged, QueueId, StoreError, StoredMessage, Tag, WelcomeRow,
};
use crate::api::KeyPackageCounts;
use crate::auth::DsKey;
use crate::seal::{AtRest, Sealed};

/// A [`DsStore`] under the DS key: group ids, members' queue ids in the
/// membership rows, Welcome recipients and KeyPackageRefs become keyed
/// tags; group ids, messages, Welcomes, assisted groups' public state and
/// GroupInfo and the owners of KeyPackageRef routes are sealed
/// ([`crate::seal`]). Its methods take and give the values, as the
/// [`DsStore`] methods of the same names take and give rows.
///
/// The first call checks the database's key check value
/// ([`DsStore::key_check`]): a database written under another DS key gives
/// [`StoreError::WrongDsKey`] to every call, and serves nothing.
#[derive(Debug)]
pub struct SealedStore<S> {
    inner: S,
    keys: Arc<AtRest>,
    key_checked: OnceCell<()>,
}

fn epoch_bytes(epoch: u64) -> [u8; 8] {
    epoch.to_be_bytes()
}

impl<S: DsStore> SealedStore<S> {
    /// `inner` under the keys derived from `key`.
    pub fn new(inner: S, key: &DsKey) -> Self {
        SealedStore {
            inner,
            keys: Arc::new(AtRest::new(key)),
            key_checked: OnceCell::new(),
        }
    }

    /// The store underneath (rows of tags and sealed cells).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The keys (for the PostgreSQL listener's hints).
    pub fn at_rest(&self) -> &Arc<AtRest> {
        &self.keys
    }

    /// Checks that the database was written under this DS key (recording
    /// its check value in a new database); [`StoreError::WrongDsKey`]
    /// otherwise. Every other method runs it first, once.
    pub async fn check_key(&self) -> Result<(), StoreError> {
        self.key_checked
            .get_or_try_init(|| async {
                if self.inner.key_check(self.keys.key_check()).await? {
                    Ok(())
                } else {
                    Err(StoreError::WrongDsKey)
                }
            })
            .await
            .map(drop)
    }

    fn group_state(&self, what: Sealed, group: &Tag, epoch: u64, value: &[u8]) -> Vec<u8> {
        self.keys.seal(what, &[group, &epoch_bytes(epoch)], value)
    }

    /// [`DsStore::client_queue`].
    pub async fn client_queue(&self, identity_tag: [u8; 32]) -> Result<QueueId, StoreError> {
        self.check_key().await?;
        self.inner.client_queue(identity_tag).await
    }

    /// [`DsStore::find_client`].
    pub async fn find_client(&self, identity_tag: [u8; 32]) -> Result<Option<QueueId>, StoreError> {
        self.check_key().await?;
        self.inner.find_client(identity_tag).await
    }

    /// [`DsStore::publish_key_packages`]: each KeyPackageRef as its tag,
    /// with `owner` sealed for the route its claim will make.
    pub async fn publish_key_packages(
        &self,
        owner: QueueId,
        key_packages: Vec<NewKeyPackage>,
    ) -> Result<(), StoreError> {
        self.check_key().await?;
        let rows = key_packages
            .into_iter()
            .map(|kp| {
                let reference = self.keys.reference_tag(&kp.reference);
                KeyPackageRow {
                    route: self.keys.seal(Sealed::RouteOwner, &[&reference], &owner),
                    reference,
                    key_package: kp.key_package,
                    not_after: kp.not_after,
                    last_resort: kp.last_resort,
                }
            })
            .collect();
        self.inner.publish_key_packages(owner, rows).await
    }

    /// [`DsStore::claim_key_package`].
    pub async fn claim_key_package(
        &self,
        owner: QueueId,
        now: u64,
        route_until: u64,
    ) -> Result<Option<Claimed>, StoreError> {
        self.check_key().await?;
        Ok(self
            .inner
            .claim_key_package(owner, now, route_until)
            .await?
            .map(|c| Claimed {
                key_package: c.key_package,
                last_resort: c.last_resort,
            }))
    }

    /// [`DsStore::key_package_counts`].
    pub async fn key_package_counts(
        &self,
        owner: QueueId,
        now: u64,
    ) -> Result<KeyPackageCounts, StoreError> {
        self.check_key().await?;
        self.inner.key_package_counts(owner, now).await
    }

    /// [`DsStore::route_key_package_refs`]: the owners of handed-out
    /// KeyPackageRefs, in order.
    pub async fn route_key_package_refs(
        &self,
        references: Vec<Vec<u8>>,
    ) -> Result<Vec<Option<QueueId>>, StoreError> {
        self.check_key().await?;
        let tags: Vec<Tag> = references
            .iter()
            .map(|r| self.keys.reference_tag(r))
            .collect();
        let routes = self.inner.route_key_package_refs(tags.clone()).await?;
        tags.iter()
            .zip(routes)
            .map(|(tag, route)| {
                route
                    .map(|r| self.keys.open_queue(Sealed::RouteOwner, &[tag], &r))
                    .transpose()
                    .map_err(StoreError::from)
            })
            .collect()
    }

    /// [`DsStore::create_group`].
    pub async fn create_group(&self, g: NewGroup) -> Result<bool, StoreError> {
        self.check_key().await?;
        let group = self.keys.group_tag(&g.group_id);
        let row = NewGroupRow {
            group,
            sealed_id: self.keys.seal(Sealed::GroupId, &[&group], &g.group_id),
            mode: g.mode,
            epoch: g.epoch,
            creator: self.keys.member_tag(&g.creator),
            public_state: g
                .public_state
                .map(|s| self.group_state(Sealed::GroupState, &group, g.epoch, &s)),
            group_info: g
                .group_info
                .map(|s| self.group_state(Sealed::GroupInfo, &group, g.epoch, &s)),
        };
        self.inner.create_group(row).await
    }

    /// [`DsStore::group`], its public state and GroupInfo opened.
    pub async fn group(&self, group_id: Vec<u8>) -> Result<Option<GroupRecord>, StoreError> {
        self.check_key().await?;
        let group = self.keys.group_tag(&group_id);
        let Some(row) = self.inner.group(group).await? else {
            return Ok(None);
        };
        let epoch = epoch_bytes(row.epoch);
        let open = |what: Sealed, cell: Option<Vec<u8>>| {
            cell.map(|c| self.keys.open(what, &[&group, &epoch], &c))
                .transpose()
        };
        Ok(Some(GroupRecord {
            mode: row.mode,
            epoch: row.epoch,
            seq: row.seq,
            public_state: open(Sealed::GroupState, row.public_state)?,
            group_info: open(Sealed::GroupInfo, row.group_info)?,
        }))
    }

    /// [`DsStore::is_member`].
    pub async fn is_member(&self, group_id: Vec<u8>, queue: QueueId) -> Result<bool, StoreError> {
        self.check_key().await?;
        self.inner
            .is_member(self.keys.group_tag(&group_id), self.keys.member_tag(&queue))
            .await
    }

    /// [`DsStore::append_commit`].
    pub async fn append_commit(&self, c: NewCommit) -> Result<CommitOutcome, StoreError> {
        self.check_key().await?;
        let group = self.keys.group_tag(&c.group_id);
        let digest = self.keys.digest_tag(&c.digest);
        let new_epoch = c.epoch.saturating_add(1);
        let row = CommitRow {
            group,
            epoch: c.epoch,
            digest,
            sender: self.keys.member_tag(&c.sender),
            external: c.external,
            message: self
                .keys
                .seal(Sealed::Message, &[&group, &digest], &c.message),
            welcome: c.welcome.map(|(body, queues)| WelcomeRow {
                body: self.keys.seal(Sealed::Welcome, &[], &body),
                recipients: queues.iter().map(|q| self.keys.inbox_tag(q)).collect(),
                hints: queues
                    .iter()
                    .map(|q| self.keys.seal(Sealed::Hint, &[], q))
                    .collect(),
            }),
            added: c.added.iter().map(|q| self.keys.member_tag(q)).collect(),
            removed: c.removed.iter().map(|q| self.keys.member_tag(q)).collect(),
            public_state: c
                .public_state
                .map(|s| self.group_state(Sealed::GroupState, &group, new_epoch, &s)),
            group_info: c
                .group_info
                .map(|s| self.group_state(Sealed::GroupInfo, &group, new_epoch, &s)),
            now: c.now,
        };
        self.inner.append_commit(row).await
    }

    fn message_row(&self, m: NewMessage) -> MessageRow {
        let group = self.keys.group_tag(&m.group_id);
        let digest = self.keys.digest_tag(&m.digest);
        MessageRow {
            group,
            epoch: m.epoch,
            window: m.window,
            digest,
            sender: self.keys.member_tag(&m.sender),
            message: self
                .keys
                .seal(Sealed::Message, &[&group, &digest], &m.message),
            // A proposal's state: the group is in the proposal's epoch
            // when it is written (window 0).
            public_state: m.public_state.map(|(s, seq)| {
                (
                    self.group_state(Sealed::GroupState, &group, m.epoch, &s),
                    seq,
                )
            }),
            now: m.now,
        }
    }

    /// [`DsStore::append_message`].
    pub async fn append_message(&self, m: NewMessage) -> Result<MessageOutcome, StoreError> {
        self.check_key().await?;
        let row = self.message_row(m);
        self.inner.append_message(row).await
    }

    /// [`DsStore::append_messages`]: several, in their order.
    pub async fn append_messages(
        &self,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<MessageOutcome>, StoreError> {
        self.check_key().await?;
        let rows = messages.into_iter().map(|m| self.message_row(m)).collect();
        self.inner.append_messages(rows).await
    }

    /// [`DsStore::memberships`], with the group ids opened.
    pub async fn memberships(&self, queue: QueueId) -> Result<Vec<Membership>, StoreError> {
        self.check_key().await?;
        let rows = self.inner.memberships(self.keys.member_tag(&queue)).await?;
        rows.into_iter()
            .map(|r| {
                Ok(Membership {
                    group_id: self.keys.open(Sealed::GroupId, &[&r.group], &r.sealed_id)?,
                    cursor: r.cursor,
                    until: r.until,
                })
            })
            .collect()
    }

    /// [`DsStore::read_messages`], opened.
    pub async fn read_messages(
        &self,
        group_id: Vec<u8>,
        after: u64,
        until: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.check_key().await?;
        let group = self.keys.group_tag(&group_id);
        let rows = self.inner.read_messages(group, after, until, limit).await?;
        rows.into_iter()
            .map(|r| {
                Ok(StoredMessage {
                    seq: r.seq,
                    message: self
                        .keys
                        .open(Sealed::Message, &[&group, &r.digest], &r.message)?,
                })
            })
            .collect()
    }

    /// [`DsStore::read_welcomes`] of the client's inbox, opened.
    pub async fn read_welcomes(
        &self,
        queue: QueueId,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.check_key().await?;
        let rows = self
            .inner
            .read_welcomes(self.keys.inbox_tag(&queue), limit)
            .await?;
        rows.into_iter()
            .map(|(id, body)| Ok((id, self.keys.open(Sealed::Welcome, &[], &body)?)))
            .collect()
    }

    /// [`DsStore::acknowledge`].
    pub async fn acknowledge(
        &self,
        queue: QueueId,
        positions: Vec<(Vec<u8>, u64)>,
        welcomes: Vec<u64>,
    ) -> Result<(), StoreError> {
        self.check_key().await?;
        let positions = positions
            .iter()
            .map(|(g, seq)| (self.keys.group_tag(g), *seq))
            .collect();
        self.inner
            .acknowledge(
                self.keys.member_tag(&queue),
                self.keys.inbox_tag(&queue),
                positions,
                welcomes,
            )
            .await
    }

    /// [`DsStore::purge`].
    pub async fn purge(&self, now: u64, stored_before: u64) -> Result<Purged, StoreError> {
        self.check_key().await?;
        self.inner.purge(now, stored_before).await
    }

    /// [`DsStore::stored_message_count`].
    pub async fn stored_message_count(&self, group_id: Vec<u8>) -> Result<u64, StoreError> {
        self.check_key().await?;
        self.inner
            .stored_message_count(self.keys.group_tag(&group_id))
            .await
    }
}

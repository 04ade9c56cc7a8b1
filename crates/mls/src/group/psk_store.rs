//! Pre-shared keys known to a member (RFC 9420 §8.4): external PSKs the
//! application provisions, and the resumption PSKs of this group's past
//! epochs.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use hsmls_crypto::Secret;

use crate::codec::{PreSharedKeyId, Psk, ResumptionPskUsage};

mod saved;

/// External PSKs by `psk_id`, and resumption PSKs by (group id, epoch).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PskStore {
    external: HashMap<Vec<u8>, Secret>,
    resumption: BTreeMap<(Vec<u8>, u64), Secret>,
    /// Resumption PSKs of usage reinit or branch, put here only by the
    /// reinit and branch flows (§11.2, §11.3).
    linked: BTreeMap<(u8, Vec<u8>, u64), Secret>,
}

impl fmt::Debug for PskStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PskStore")
            .field("external", &self.external.len())
            .field("resumption", &self.resumption.len())
            .finish()
    }
}

impl PskStore {
    /// Adds (or replaces) an external PSK.
    pub fn insert_external(&mut self, psk_id: Vec<u8>, psk: Secret) {
        self.external.insert(psk_id, psk);
    }

    /// Removes an external PSK.
    pub fn remove_external(&mut self, psk_id: &[u8]) {
        self.external.remove(psk_id);
    }

    /// Records the `resumption_psk` of an epoch, keeping at most `keep`
    /// epochs per group.
    pub(crate) fn insert_resumption(
        &mut self,
        group_id: &[u8],
        epoch: u64,
        psk: Secret,
        keep: usize,
    ) {
        self.resumption.insert((group_id.to_vec(), epoch), psk);
        let mut of_group: Vec<u64> = self
            .resumption
            .keys()
            .filter(|(g, _)| g.as_slice() == group_id)
            .map(|(_, e)| *e)
            .collect();
        of_group.sort_unstable();
        while of_group.len() > keep {
            let oldest = of_group.remove(0);
            self.resumption.remove(&(group_id.to_vec(), oldest));
        }
    }

    /// The value of the PSK `id` names, if known. Resumption PSKs of usage
    /// `application` only (reinit and branch belong to those flows).
    pub fn get(&self, id: &PreSharedKeyId) -> Option<&Secret> {
        match &id.psk {
            Psk::External(psk_id) => self.external.get(psk_id),
            Psk::Resumption(r) if r.usage == ResumptionPskUsage::Application => {
                self.resumption.get(&(r.psk_group_id.clone(), r.psk_epoch))
            }
            Psk::Resumption(r) => {
                self.linked
                    .get(&(r.usage as u8, r.psk_group_id.clone(), r.psk_epoch))
            }
        }
    }

    /// Records a resumption PSK of usage reinit or branch (the reinit and
    /// branch flows only; §11.2, §11.3).
    pub(crate) fn insert_linked(
        &mut self,
        usage: ResumptionPskUsage,
        group_id: &[u8],
        epoch: u64,
        psk: Secret,
    ) {
        self.linked
            .insert((usage as u8, group_id.to_vec(), epoch), psk);
    }

    /// The recorded `resumption_psk` of `epoch` of group `group_id`.
    pub(crate) fn resumption(&self, group_id: &[u8], epoch: u64) -> Option<&Secret> {
        self.resumption.get(&(group_id.to_vec(), epoch))
    }

    /// The epochs of `group_id` whose resumption PSK is recorded.
    pub(crate) fn resumption_epochs(&self, group_id: &[u8]) -> Vec<u64> {
        self.resumption
            .keys()
            .filter(|(g, _)| g.as_slice() == group_id)
            .map(|(_, e)| *e)
            .collect()
    }
}

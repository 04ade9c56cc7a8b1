//! The PSK store in a saved group state (see [`crate::state`]):
//!
//! ```text
//! struct {
//!     struct { opaque psk_id<V>; opaque psk<V>; } external<V>;              // by psk_id
//!     struct { opaque group_id<V>; uint64 epoch; opaque psk<V>; } resumption<V>;
//!     struct {
//!         uint8 usage;                     // ResumptionPSKUsage: reinit(2) or branch(3)
//!         opaque group_id<V>;
//!         uint64 epoch;
//!         opaque psk<V>;
//!     } linked<V>;
//! } PskStoreState;
//! ```

use std::collections::{BTreeMap, HashMap};

use hsmls_crypto::Secret;

use super::PskStore;
use crate::state::{Reader, StateError, Writer};

fn malformed(field: &'static str) -> StateError {
    StateError::MalformedPlaintext { field }
}

impl PskStore {
    pub(crate) fn write_state(&self, w: &mut Writer) -> Result<(), StateError> {
        let PskStore {
            external,
            resumption,
            linked,
        } = self;
        let mut ids: Vec<&Vec<u8>> = external.keys().collect();
        ids.sort();
        w.list(ids, |w, id| {
            w.bytes(id)?;
            w.bytes(external.get(id).map(Secret::as_bytes).unwrap_or_default())
        })?;
        w.list(resumption, |w, ((group, epoch), psk)| {
            w.bytes(group)?;
            w.u64(*epoch);
            w.bytes(psk.as_bytes())
        })?;
        w.list(linked, |w, ((usage, group, epoch), psk)| {
            w.u8(*usage);
            w.bytes(group)?;
            w.u64(*epoch);
            w.bytes(psk.as_bytes())
        })
    }

    pub(crate) fn read_state(r: &mut Reader<'_>) -> Result<PskStore, StateError> {
        let mut external = HashMap::new();
        for (id, psk) in r.list("external psks", |r| {
            let id = r.bytes("external psk id")?.to_vec();
            Ok((id, Secret::from_slice(r.bytes("external psk")?)))
        })? {
            if external.insert(id, psk).is_some() {
                return Err(malformed("external psk id"));
            }
        }
        let mut resumption = BTreeMap::new();
        for (key, psk) in r.list("resumption psks", |r| {
            let group = r.bytes("resumption psk group")?.to_vec();
            let epoch = r.u64("resumption psk epoch")?;
            Ok((
                (group, epoch),
                Secret::from_slice(r.bytes("resumption psk")?),
            ))
        })? {
            if resumption.insert(key, psk).is_some() {
                return Err(malformed("resumption psk group"));
            }
        }
        let mut linked = BTreeMap::new();
        for (key, psk) in r.list("linked psks", |r| {
            let usage = r.u8("linked psk usage")?;
            if !matches!(usage, 2 | 3) {
                return Err(malformed("linked psk usage"));
            }
            let group = r.bytes("linked psk group")?.to_vec();
            let epoch = r.u64("linked psk epoch")?;
            Ok((
                (usage, group, epoch),
                Secret::from_slice(r.bytes("linked psk")?),
            ))
        })? {
            if linked.insert(key, psk).is_some() {
                return Err(malformed("linked psk group"));
            }
        }
        Ok(PskStore {
            external,
            resumption,
            linked,
        })
    }
}

//! Incremental saves (`Group::save_changes`, `Group::confirm_saved`): a
//! group of 200 members (a tree of 256 leaves: two 256-slot tree records)
//! writes a few changed slots in the state and seals again only the tree
//! records of chunks with many changes, a save that is not confirmed is
//! covered again by the next one, the tree's records shrink
//! with the tree, and a store's records (the first full save plus every
//! later change) load back to the same group. Every tree record that is
//! not the one the state lists (missing, extra, twice, of another save,
//! another chunk, another group, altered, another kind) gives its own
//! typed error and changes nothing.

use std::sync::Arc;

use hsmls::state::RecordKind;
use hsmls::wire::{Credential, LeafIndex};
use hsmls::{
    BasicCredentialValidator, Client, CredentialValidator, Group, KeyPackageConfig, SavedGroup,
    Signer, StateError, TreeRecord,
};
use hsmls_custody::{KeyCustody, SoftwareCustody, StateSealer};

const NOW: u64 = 1_750_000_000;
const MEMBERS: u32 = 200;

fn validator() -> Arc<dyn CredentialValidator> {
    Arc::new(BasicCredentialValidator::default())
}

fn client(custody: &Arc<SoftwareCustody>, name: &str) -> Client {
    let signer = Signer::generate(
        custody.clone() as Arc<dyn KeyCustody>,
        Credential::Basic(name.as_bytes().to_vec()),
    )
    .unwrap();
    Client::new(signer, validator())
}

/// Alice's group of [`MEMBERS`] members (the others only as KeyPackages),
/// her client and custody.
fn big_group(group_id: &[u8]) -> (Group, Client, Arc<SoftwareCustody>) {
    let custody = Arc::new(SoftwareCustody::new());
    let others = Arc::new(SoftwareCustody::new());
    let alice = client(&custody, "alice");
    let mut group = alice
        .create_group(group_id.to_vec(), Vec::new(), NOW)
        .unwrap();
    let config = KeyPackageConfig::new(NOW - 10, 3600);
    let kps: Vec<_> = (1..MEMBERS)
        .map(|i| {
            client(&others, &format!("member-{i}"))
                .generate_key_package(&config)
                .unwrap()
                .key_package
        })
        .collect();
    let _ = group.add_members(&kps, NOW).unwrap();
    group.merge_pending_commit().unwrap();
    (group, alice, custody)
}

/// What a store keeps, by the SQLite store's rules
/// ([`SavedGroup::apply`]): the state and epoch records replaced, tree
/// records inserted or replaced and cut at the count.
#[derive(Default)]
struct Store {
    saved: Option<SavedGroup>,
}

impl Store {
    fn write(&mut self, saved: &SavedGroup) {
        match &mut self.saved {
            Some(kept) => kept.apply(saved.clone()),
            None => self.saved = Some(saved.clone()),
        }
    }

    fn read(&self) -> SavedGroup {
        self.saved.clone().unwrap()
    }
}

fn indices(saved: &SavedGroup) -> Vec<u32> {
    saved.tree_records.iter().map(|r| r.index).collect()
}

fn self_update(g: &mut Group) {
    let _ = g.self_update(NOW).unwrap();
    g.merge_pending_commit().unwrap();
}

fn remove(g: &mut Group, leaves: impl IntoIterator<Item = u32>) {
    let leaves: Vec<LeafIndex> = leaves.into_iter().map(LeafIndex).collect();
    let _ = g.remove_members(&leaves, NOW).unwrap();
    g.merge_pending_commit().unwrap();
}

/// The store's records load back to `g` (the same state, and the same
/// plaintexts when saved again).
fn loads_back(client: &Client, sealer: &dyn StateSealer, store: &Store, g: &Group) -> Group {
    let loaded = client.load_saved_group(sealer, &store.read()).unwrap();
    assert!(loaded.state_snapshot() == g.state_snapshot());
    assert_eq!(loaded.tree_hash(), g.tree_hash());
    loaded
}

#[test]
fn saves_write_the_changed_tree_records_until_confirmed_and_load_back() {
    let (mut a, client, custody) = big_group(b"incremental");
    let sealer = custody.state_sealer();
    let mut store = Store::default();

    // The first save writes every chunk.
    let (first, ticket) = a.save_changes(sealer).unwrap();
    assert_eq!(first.tree_chunks, 2);
    assert_eq!(indices(&first), [0, 1]);
    store.write(&first);
    assert!(a.confirm_saved(ticket));
    loads_back(&client, sealer, &store, &a);

    // Nothing changed: no tree record, and the state alone still loads
    // with the stored records.
    let (same, stale_ticket) = a.save_changes(sealer).unwrap();
    assert!(same.tree_records.is_empty());
    assert!(same.written_bytes() < first.written_bytes() / 10);
    store.write(&same);
    loads_back(&client, sealer, &store, &a);

    // Alice (leaf 0) updates: her path is 9 slots of chunk 0 (the root of
    // a 256-leaf tree is node 255), written in the state: no tree record.
    self_update(&mut a);
    let (saved, ticket) = a.save_changes(sealer).unwrap();
    assert!(saved.tree_records.is_empty());
    assert!(saved.state.len() < first.state.len() + 9 * 400);
    store.write(&saved);
    assert!(a.confirm_saved(ticket));
    loads_back(&client, sealer, &store, &a);

    // Removing ten members of the right half changes more than 16 slots
    // of chunk 1: its record is sealed again. That save's write fails (it
    // is not confirmed): the next save, after another update, seals
    // chunk 1 again.
    remove(&mut a, 130..140);
    let (lost, _not_confirmed) = a.save_changes(sealer).unwrap();
    assert_eq!(indices(&lost), [1]);
    self_update(&mut a);
    let (saved, ticket) = a.save_changes(sealer).unwrap();
    assert_eq!(indices(&saved), [1]);
    store.write(&saved);
    assert!(a.confirm_saved(ticket));
    loads_back(&client, sealer, &store, &a);
    // An older ticket than the confirmed one is refused.
    assert!(!a.confirm_saved(stale_ticket));

    // Removing every other member of the right half truncates the tree to
    // one chunk: the store drops chunk 1.
    remove(&mut a, (128..MEMBERS).filter(|i| !(130..140).contains(i)));
    let (saved, ticket) = a.save_changes(sealer).unwrap();
    assert_eq!(saved.tree_chunks, 1);
    store.write(&saved);
    assert!(a.confirm_saved(ticket));
    assert_eq!(store.read().tree_records.len(), 1);
    let mut loaded = loads_back(&client, sealer, &store, &a);

    // The loaded group takes the store's records as its confirmed save.
    let (nothing, _) = loaded.save_changes(sealer).unwrap();
    assert!(nothing.tree_records.is_empty());
    self_update(&mut loaded);
    let (saved, ticket) = loaded.save_changes(sealer).unwrap();
    store.write(&saved);
    assert!(loaded.confirm_saved(ticket));
    loads_back(&client, sealer, &store, &loaded);

    // A full save writes every chunk whatever was confirmed, and
    // forget_saved makes the next incremental save full.
    assert_eq!(indices(&loaded.save(sealer).unwrap()), [0]);
    self_update(&mut a);
    let (small, _) = a.save_changes(sealer).unwrap();
    assert!(small.tree_records.is_empty());
    a.forget_saved();
    let (full, _) = a.save_changes(sealer).unwrap();
    assert_eq!(indices(&full), [0]);
    assert_eq!(full.tree_chunks, 1);
}

#[test]
fn a_ticket_of_another_group_is_refused() {
    let custody = Arc::new(SoftwareCustody::new());
    let alice = client(&custody, "alice");
    let mut g1 = alice
        .create_group(b"one".to_vec(), Vec::new(), NOW)
        .unwrap();
    let g2 = alice
        .create_group(b"two".to_vec(), Vec::new(), NOW)
        .unwrap();
    let (_, ticket) = g2.save_changes(custody.state_sealer()).unwrap();
    assert!(!g1.confirm_saved(ticket));
    // g1 confirmed nothing: its next save is still full.
    let (saved, _) = g1.save_changes(custody.state_sealer()).unwrap();
    assert_eq!(indices(&saved), [0]);
}

#[test]
fn tree_records_that_are_not_the_states_are_refused() {
    let (mut a, client, custody) = big_group(b"records");
    let sealer = custody.state_sealer();
    let old = a.save(sealer).unwrap();
    self_update(&mut a);
    let good = a.save(sealer).unwrap();
    assert_eq!(indices(&good), [0, 1]);
    let load = |saved: &SavedGroup| client.load_saved_group(sealer, saved);
    let with = |records: Vec<TreeRecord>| SavedGroup {
        tree_records: records,
        ..good.clone()
    };
    let r = |saved: &SavedGroup, i: usize| saved.tree_records[i].clone();

    assert!(matches!(
        load(&with(vec![r(&good, 0)])),
        Err(StateError::MissingTreeRecord(1))
    ));
    let extra = TreeRecord {
        index: 2,
        ..r(&good, 1)
    };
    assert!(matches!(
        load(&with(vec![r(&good, 0), r(&good, 1), extra])),
        Err(StateError::ExtraTreeRecord(2))
    ));
    assert!(matches!(
        load(&with(vec![r(&good, 0), r(&good, 0), r(&good, 1)])),
        Err(StateError::DuplicateTreeRecord(0))
    ));
    // Chunk 0 of the save before the update (another content).
    assert!(matches!(
        load(&with(vec![r(&old, 0), r(&good, 1)])),
        Err(StateError::TreeRecordMismatch(0))
    ));
    // Chunk 1's record given as chunk 0's.
    let relabelled = TreeRecord {
        index: 0,
        ..r(&good, 1)
    };
    assert!(matches!(
        load(&with(vec![relabelled, r(&good, 1)])),
        Err(StateError::TreeRecordMismatch(0))
    ));
    // A tree record of another group sealed by the same key.
    let (other, _, _) = big_group(b"another group");
    let foreign = other.save(sealer).unwrap();
    assert!(matches!(
        load(&with(vec![r(&good, 0), r(&foreign, 1)])),
        Err(StateError::WrongGroup { .. })
    ));
    // An altered record, and the state given as a tree record.
    let mut altered = r(&good, 1);
    let last = altered.data.len() - 1;
    altered.data[last] ^= 0x01;
    assert!(matches!(
        load(&with(vec![r(&good, 0), altered])),
        Err(StateError::Altered)
    ));
    let state = TreeRecord {
        index: 1,
        data: good.state.clone(),
    };
    assert!(matches!(
        load(&with(vec![r(&good, 0), state])),
        Err(StateError::WrongRecordKind {
            expected: RecordKind::TreeChunk,
            found: RecordKind::GroupState
        })
    ));
    // Nothing changed: the good records load, in any order.
    let loaded = load(&with(vec![r(&good, 1), r(&good, 0)])).unwrap();
    assert!(loaded.state_snapshot() == a.state_snapshot());
}

//! The ratchet tree and a member's private TreeKEM keys in a saved group
//! state (see [`crate::state`]):
//!
//! ```text
//! struct {
//!     uint32 n_leaves;
//!     optional<Node> nodes<V>;   // the ratchet_tree extension's form (§12.4.3.3)
//! } RatchetTreeState;           // (tests; a saved group uses TreeChunk records)
//!
//! // One tree record (RecordKind 4): the 256 node slots of the array of
//! // Appendix C from chunk * 256 to chunk * 256 + 255, trailing slots that
//! // are blank with no cached hash left out.
//! struct {
//!     uint32 chunk;
//!     opaque save_id[16];        // the save that wrote this record
//!     struct {
//!         optional<Node> node;
//!         optional<opaque tree_hash<V>>;  // the node's cached tree hash (§7.8)
//!     } slots<V>;                // at most 256
//! } TreeChunk;
//!
//! // A tree of another epoch, as the nodes where it differs from the
//! // current tree (most of a 10,000-member tree is the same in every
//! // retained epoch).
//! struct {
//!     uint32 n_leaves;
//!     // nodes below both trees' widths that differ, ascending
//!     struct { uint32 node; optional<Node> value; } changed<V>;
//!     // every node from the current tree's width to this tree's width
//!     // (empty unless this tree is the wider one)
//!     optional<Node> extension<V>;
//! } TreeDiff;
//!
//! struct {
//!     opaque uri<V>;             // the key's custody URI (KeyRef::uri)
//!     opaque public_key<V>;
//! } CustodyKey;
//!
//! struct {
//!     uint32 own_leaf;
//!     CustodyKey leaf_key;
//!     uint8 leaf_key_shared;
//!     struct {
//!         uint32 node;
//!         opaque private_key<V>; // parent-node keys live in software (§7.4)
//!         opaque public_key<V>;
//!     } path_keys<V>;
//! } TreeKemPrivateState;
//! ```
//!
//! A loaded tree is trusted without validation (it is this client's own,
//! authenticated by the seal), and its tree hash must equal the
//! GroupContext's (the caller checks). A tree loaded from TreeChunk records
//! keeps the cached tree hashes the records carry instead of recomputing
//! them: each record was sealed by this client's key (the AEAD
//! authenticates it) and is bound to its state by the `save_id` and chunk
//! index listed there, and the hashes in it were computed by this
//! engine from the very nodes beside them, so recomputing them would only
//! check this engine's own arithmetic (about a third of a load's time).
//! What is not stored (a hash stale when saved, or one whose children's
//! hashes are not all there, as chunks come from different saves) is
//! recomputed.

use std::sync::Arc;

use hsmls_crypto::{CipherSuiteProvider, Digest, HpkePrivateKey, Secret};
use hsmls_custody::{KeyCustody, KeyRef, KeySpec, PublicKey};

use super::private::TreeKemPrivate;
use super::ratchet_tree::RatchetTree;
use super::store::{CHUNK, ChunkRef, NodeStore};
use crate::codec::Node;
use crate::state::{Reader, StateError, Writer, lookup_error};
use crate::tree_math::{self, LeafIndex, NodeIndex};

fn malformed(field: &'static str) -> StateError {
    StateError::MalformedPlaintext { field }
}

/// The largest private key accepted (a P-521 scalar).
const MAX_PRIVATE_KEY_LEN: usize = 66;

fn check_n_leaves(n_leaves: u32) -> Result<usize, StateError> {
    if n_leaves == 0 || !n_leaves.is_power_of_two() || n_leaves > super::ratchet_tree::MAX_LEAVES {
        return Err(malformed("tree leaves"));
    }
    usize::try_from(tree_math::node_width(n_leaves)).map_err(|_| malformed("tree leaves"))
}

fn node_fits(x: usize, node: Option<&Node>) -> bool {
    match node {
        None => true,
        Some(Node::Leaf(_)) => x.is_multiple_of(2),
        Some(Node::Parent(_)) => x % 2 == 1,
    }
}

#[cfg(test)]
impl RatchetTree {
    /// Writes the whole tree (see the module documentation).
    pub(crate) fn write_state(&self, w: &mut Writer) -> Result<(), StateError> {
        w.u32(self.n_leaves);
        let end = (0..self.nodes.len())
            .rev()
            .find(|&i| self.nodes.is_present(i))
            .map_or(0, |i| i + 1);
        w.list(self.nodes.iter().take(end), |w, node| {
            w.optional(node, |w, n| w.item(n))
        })
    }

    /// Reads a tree written by [`RatchetTree::write_state`].
    pub(crate) fn read_state(
        r: &mut Reader<'_>,
        provider: &'static dyn CipherSuiteProvider,
    ) -> Result<RatchetTree, StateError> {
        let n_leaves = r.u32("tree leaves")?;
        let width = check_n_leaves(n_leaves)?;
        let nodes = r.list("tree nodes", |r| r.item::<Option<Node>>("tree node"))?;
        if nodes.len() > width {
            return Err(malformed("tree nodes"));
        }
        let tree = RatchetTree::from_nodes(provider, nodes).map_err(|_| malformed("tree nodes"))?;
        if tree.n_leaves != n_leaves {
            return Err(malformed("tree leaves"));
        }
        Ok(tree)
    }
}

impl RatchetTree {
    /// Writes this tree as its differences from `base` (see the module
    /// documentation).
    pub(crate) fn write_diff(&self, base: &RatchetTree, w: &mut Writer) -> Result<(), StateError> {
        w.u32(self.n_leaves);
        let shared = self.nodes.len().min(base.nodes.len());
        // Chunks both trees share (most of them) hold the same nodes; the
        // others are compared slot by slot (same node: same pointer, or
        // equal).
        let mut changed: Vec<(usize, Option<&Node>)> = Vec::new();
        for c in 0..shared.div_ceil(CHUNK) {
            let (Some(mine), Some(theirs)) = (self.nodes.chunk_ref(c), base.nodes.chunk_ref(c))
            else {
                continue;
            };
            if mine.same(&theirs) {
                continue;
            }
            let end = ((c + 1) * CHUNK).min(shared) - c * CHUNK;
            for (j, ((a, _), (b, _))) in mine.slots().zip(theirs.slots()).take(end).enumerate() {
                let same = match (a, b) {
                    (None, None) => true,
                    (Some(a), Some(b)) => std::ptr::eq(a, b) || a == b,
                    _ => false,
                };
                if !same {
                    // The node as `self` holds it (the chunk's `Arc` is
                    // dropped at the end of this iteration).
                    changed.push((c * CHUNK + j, self.nodes.get(c * CHUNK + j)));
                }
            }
        }
        w.list(changed, |w, (i, node)| {
            w.u32(u32::try_from(i).map_err(|_| malformed("changed node"))?);
            w.optional(node, |w, n| w.item(n))
        })?;
        w.list(
            (shared..self.nodes.len()).map(|i| self.nodes.get(i)),
            |w, node| w.optional(node, |w, n| w.item(n)),
        )
    }

    /// Reads a tree written by [`RatchetTree::write_diff`] against the same
    /// `base`. The result shares `base`'s unchanged nodes. A tree wider
    /// than `base` lists every node past `base`'s width, so what is
    /// allocated is bounded by `base` and the input.
    pub(crate) fn read_diff(
        r: &mut Reader<'_>,
        base: &RatchetTree,
    ) -> Result<RatchetTree, StateError> {
        let n_leaves = r.u32("tree leaves")?;
        let width = check_n_leaves(n_leaves)?;
        let shared = width.min(base.nodes.len());
        let changed = r.list("changed nodes", |r| {
            let x = r.u32("changed node")?;
            let node = r.optional("changed node", |r| r.item::<Node>("changed node"))?;
            Ok((x, node))
        })?;
        let extension = r.list("extension nodes", |r| {
            r.optional("extension node", |r| r.item::<Node>("extension node"))
        })?;
        if shared + extension.len() != width {
            return Err(malformed("extension nodes"));
        }
        let mut tree = base.clone();
        tree.n_leaves = n_leaves;
        tree.nodes.resize(width);
        let mut last: Option<u32> = None;
        for (x, node) in changed {
            let i = x as usize;
            if i >= shared || last.is_some_and(|l| l >= x) || !node_fits(i, node.as_ref()) {
                return Err(malformed("changed node"));
            }
            last = Some(x);
            tree.set_node(NodeIndex(x), node);
        }
        for (i, node) in (shared..).zip(extension) {
            if !node_fits(i, node.as_ref()) {
                return Err(malformed("extension node"));
            }
            if node.is_some() {
                let x = u32::try_from(i).map_err(|_| malformed("extension node"))?;
                tree.set_node(NodeIndex(x), node);
            }
        }
        if tree.member_count() == 0 {
            return Err(malformed("changed nodes"));
        }
        Ok(tree)
    }
}

impl RatchetTree {
    /// How many TreeChunk records hold the tree.
    pub(crate) fn chunk_count(&self) -> usize {
        self.nodes.chunk_count()
    }

    /// Chunk `c` of the tree's nodes.
    pub(crate) fn chunk_ref(&self, c: usize) -> Option<ChunkRef> {
        self.nodes.chunk_ref(c)
    }

    /// The tree of `n_leaves` leaves made of its chunks, read by
    /// [`read_chunk`] (one per chunk, in order). Checks that the chunks
    /// cover exactly the tree's width (slots past it blank, with no hash)
    /// and that the tree has a member; drops every cached hash whose
    /// children's hashes are not both cached (the invariant of
    /// [`RatchetTree::invalidate`]), so those are recomputed.
    pub(crate) fn from_chunks(
        provider: &'static dyn CipherSuiteProvider,
        n_leaves: u32,
        chunks: Vec<ChunkRef>,
    ) -> Result<RatchetTree, StateError> {
        let width = check_n_leaves(n_leaves)?;
        if chunks.len() != width.div_ceil(CHUNK) {
            return Err(malformed("tree chunks"));
        }
        if let Some(last) = chunks.last()
            && last
                .slots()
                .skip(width - (chunks.len() - 1) * CHUNK)
                .any(|(node, hash)| node.is_some() || hash.is_some())
        {
            return Err(malformed("tree chunks"));
        }
        let mut tree = RatchetTree {
            provider,
            n_leaves,
            nodes: NodeStore::from_chunk_refs(chunks, width),
        };
        if tree.member_count() == 0 {
            return Err(malformed("tree chunks"));
        }
        // Bottom-up: a parent keeps its cached hash only if both children
        // have theirs.
        let root_level = tree.root().level();
        for level in 1..=root_level {
            let (half, step) = (1usize << (level - 1), 1usize << (level + 1));
            let mut x = (1usize << level) - 1;
            while x < width {
                if tree.nodes.hash(x).is_some()
                    && (tree.nodes.hash(x - half).is_none() || tree.nodes.hash(x + half).is_none())
                {
                    tree.nodes.set_hash(x, None);
                }
                x += step;
            }
        }
        Ok(tree)
    }
}

/// Writes chunk `index` of a tree as a TreeChunk (see the module
/// documentation).
pub(crate) fn write_chunk(
    chunk: &ChunkRef,
    index: u32,
    save_id: &[u8; 16],
    w: &mut Writer,
) -> Result<(), StateError> {
    w.u32(index);
    w.raw(save_id);
    let slots: Vec<(Option<&Node>, Option<Digest>)> = chunk.slots().collect();
    let end = slots
        .iter()
        .rposition(|(node, hash)| node.is_some() || hash.is_some())
        .map_or(0, |i| i + 1);
    w.list(&slots[..end], |w, (node, hash)| {
        w.optional(*node, |w, n| w.item(n))?;
        w.optional(hash.as_ref(), |w, h| w.bytes(h.as_bytes()))
    })
}

/// Reads a TreeChunk written by [`write_chunk`] for chunk `index` of a tree
/// whose hashes are `hash_len` bytes long; checks that each node is of
/// the kind its position holds. Returns the chunk and the `save_id` of
/// the save that wrote it.
pub(crate) fn read_chunk(
    r: &mut Reader<'_>,
    index: u32,
    hash_len: usize,
) -> Result<(ChunkRef, [u8; 16]), StateError> {
    if r.u32("tree chunk")? != index {
        return Err(malformed("tree chunk"));
    }
    let save_id: [u8; 16] = r.fixed("tree chunk save")?;
    let base = usize::try_from(index).map_err(|_| malformed("tree chunk"))? * CHUNK;
    // Each node goes behind its `Arc` as it is decoded, into slots sized
    // once: a node is a few hundred bytes, not worth moving again.
    let mut slots: Vec<(Option<Arc<Node>>, Option<Digest>)> = Vec::with_capacity(CHUNK);
    let mut rest = Reader::new(r.bytes("tree chunk slots")?);
    while !rest.is_empty() {
        if slots.len() >= CHUNK {
            return Err(malformed("tree chunk node"));
        }
        let node = rest.optional("tree chunk node", |r| r.item::<Node>("tree chunk node"))?;
        let hash = rest.optional("tree chunk hash", |r| {
            let h = r.bytes("tree chunk hash")?;
            if h.len() != hash_len {
                return Err(malformed("tree chunk hash"));
            }
            Digest::from_stored(h).ok_or(malformed("tree chunk hash"))
        })?;
        if !node_fits(base + slots.len(), node.as_ref()) {
            return Err(malformed("tree chunk node"));
        }
        slots.push((node.map(Arc::new), hash));
    }
    Ok((ChunkRef::from_shared_slots(slots), save_id))
}

/// A node slot written in the state beside an older TreeChunk record:
/// (node index, node, cached tree hash).
pub(crate) type ChangedSlot = (usize, Option<Node>, Option<Digest>);

/// Writes the slots `changed` (ascending `(chunk, slot)` pairs) of
/// `chunks` as the state's `changed` list (see `group/saved.rs`).
pub(crate) fn write_changed_slots(
    chunks: &[ChunkRef],
    changed: &[(usize, usize)],
    w: &mut Writer,
) -> Result<(), StateError> {
    w.list(changed, |w, &(c, i)| {
        let (node, hash) = chunks.get(c).map_or((None, None), |chunk| chunk.slot(i));
        w.u32(u32::try_from(c * CHUNK + i).map_err(|_| malformed("changed slot"))?);
        w.optional(node, |w, n| w.item(n))?;
        w.optional(hash.as_ref(), |w, h| w.bytes(h.as_bytes()))
    })
}

/// Reads the list written by [`write_changed_slots`]: ascending node
/// indices, each node of the kind its position holds, hashes of
/// `hash_len` bytes.
pub(crate) fn read_changed_slots(
    r: &mut Reader<'_>,
    hash_len: usize,
) -> Result<Vec<ChangedSlot>, StateError> {
    let mut last: Option<usize> = None;
    r.list("changed slots", |r| {
        let x = usize::try_from(r.u32("changed slot")?).map_err(|_| malformed("changed slot"))?;
        let node = r.optional("changed slot", |r| r.item::<Node>("changed slot"))?;
        let hash = r.optional("changed slot hash", |r| {
            let h = r.bytes("changed slot hash")?;
            if h.len() != hash_len {
                return Err(malformed("changed slot hash"));
            }
            Digest::from_stored(h).ok_or(malformed("changed slot hash"))
        })?;
        if last.is_some_and(|l| l >= x) || !node_fits(x, node.as_ref()) {
            return Err(malformed("changed slot"));
        }
        last = Some(x);
        Ok((x, node, hash))
    })
}

/// Applies changed slots (from [`read_changed_slots`]) to the chunks read
/// from their records; a slot outside the chunks is malformed.
pub(crate) fn apply_changed_slots(
    chunks: &mut [ChunkRef],
    changed: Vec<ChangedSlot>,
) -> Result<(), StateError> {
    let mut changed = changed.into_iter().peekable();
    while let Some(&(x, _, _)) = changed.peek() {
        let c = x / CHUNK;
        let chunk = chunks.get_mut(c).ok_or(malformed("changed slot"))?;
        let mut here = Vec::new();
        while let Some((x, node, hash)) = changed.next_if(|(x, _, _)| x / CHUNK == c) {
            here.push((x % CHUNK, node, hash));
        }
        *chunk = chunk.with_changes(here);
    }
    Ok(())
}

/// Writes a custody key reference.
pub(crate) fn write_key(w: &mut Writer, key: &KeyRef) -> Result<(), StateError> {
    w.bytes(key.uri().as_bytes())?;
    w.bytes(key.public_key().as_bytes())
}

/// Reads a custody key reference of a key of `spec` (the cipher suite's
/// signature scheme or KEM) and, if `custody` is given, finds the key there
/// and checks its spec and public key.
pub(crate) fn read_key(
    r: &mut Reader<'_>,
    spec: KeySpec,
    custody: Option<&dyn KeyCustody>,
) -> Result<KeyRef, StateError> {
    let uri = std::str::from_utf8(r.bytes("key uri")?).map_err(|_| malformed("key uri"))?;
    let public =
        PublicKey::new(spec, r.bytes("public key")?).map_err(|_| malformed("public key"))?;
    let Some(custody) = custody else {
        return Ok(KeyRef::new(public, uri.to_owned()));
    };
    let found = custody.find(uri).map_err(|e| lookup_error(uri, e))?;
    if found.spec() != spec || found.public_key() != &public {
        return Err(StateError::KeyMismatch {
            uri: uri.to_owned(),
        });
    }
    Ok(found)
}

impl TreeKemPrivate {
    /// Writes the private state (see the module documentation).
    pub(crate) fn write_state(&self, w: &mut Writer) -> Result<(), StateError> {
        w.u32(self.own_leaf().0);
        write_key(w, self.leaf_key())?;
        w.bool(self.leaf_key_is_shared());
        w.list(self.path_keys(), |w, (x, key)| {
            w.u32(x.0);
            w.bytes(key.private_bytes().as_bytes())?;
            w.bytes(key.public_key().as_bytes())
        })
    }

    /// Reads a private state written by [`TreeKemPrivate::write_state`]
    /// for `tree`: the leaf key must be the one of the member's leaf (when
    /// the leaf is in the tree), each parent key on the member's direct
    /// path and the key of that node. With `custody`, the leaf key is
    /// found there; without (a removed member, whose key is destroyed),
    /// the reference is rebuilt from the state.
    pub(crate) fn read_state(
        r: &mut Reader<'_>,
        tree: &RatchetTree,
        custody: Option<&Arc<dyn KeyCustody>>,
    ) -> Result<TreeKemPrivate, StateError> {
        let own_leaf = LeafIndex(r.u32("own leaf")?);
        let kem = KeySpec::Kem(tree.provider().kem());
        let leaf_key = read_key(r, kem, custody.map(|c| c.as_ref()))?;
        let shared = r.bool("leaf key shared")?;
        let path_keys = r.list("path keys", |r| {
            let x = NodeIndex(r.u32("path key node")?);
            let private = r.bytes("path private key")?;
            if private.is_empty() || private.len() > MAX_PRIVATE_KEY_LEN {
                return Err(malformed("path private key"));
            }
            let private = Secret::from_slice(private);
            let public = r.bytes("path public key")?.to_vec();
            Ok((
                x,
                HpkePrivateKey::from_parts(private, hsmls_crypto::HpkePublicKey::from_vec(public)),
            ))
        })?;
        let own = own_leaf.node_index().map_err(|_| malformed("own leaf"))?;
        if own_leaf.0 >= tree.leaf_count() {
            return Err(malformed("own leaf"));
        }
        if let Some(leaf) = tree.leaf(own_leaf)
            && leaf.encryption_key.as_slice() != leaf_key.public_key().as_bytes()
        {
            return Err(StateError::KeyMismatch {
                uri: leaf_key.uri().to_owned(),
            });
        }
        let direct_path =
            tree_math::direct_path(own, tree.leaf_count()).map_err(|_| malformed("own leaf"))?;
        for (i, (x, key)) in path_keys.iter().enumerate() {
            let on_path = direct_path.contains(x);
            let matches = tree
                .parent_node(*x)
                .is_some_and(|p| p.encryption_key.as_slice() == key.public_key().as_bytes());
            let unique = !path_keys[..i].iter().any(|(y, _)| y == x);
            if !on_path || !matches || !unique {
                return Err(malformed("path key node"));
            }
        }
        let mut private = TreeKemPrivate::with_path_keys(own_leaf, leaf_key, path_keys);
        if shared {
            private.mark_leaf_key_shared();
        }
        Ok(private)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{
        Capabilities, CipherSuite as WireSuite, Credential, CredentialType, HpkePublicKey,
        LeafNode, LeafNodeSource, Lifetime, ParentNode, ProtocolVersion, SignaturePublicKey,
    };

    fn provider() -> &'static dyn CipherSuiteProvider {
        hsmls_crypto::CipherSuite(2).provider().unwrap()
    }

    fn leaf(i: u32) -> LeafNode {
        LeafNode {
            encryption_key: HpkePublicKey([b"enc".as_slice(), &i.to_be_bytes()].concat()),
            signature_key: SignaturePublicKey([b"sig".as_slice(), &i.to_be_bytes()].concat()),
            credential: Credential::Basic(i.to_be_bytes().to_vec()),
            capabilities: Capabilities {
                versions: vec![ProtocolVersion::MLS10],
                cipher_suites: vec![WireSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256],
                extensions: vec![],
                proposals: vec![],
                credentials: vec![CredentialType::BASIC],
            },
            leaf_node_source: LeafNodeSource::KeyPackage(Lifetime {
                not_before: 0,
                not_after: u64::MAX,
            }),
            extensions: vec![],
            signature: vec![],
        }
    }

    fn tree(n: u32) -> RatchetTree {
        let mut t = RatchetTree::new(provider(), leaf(0));
        for i in 1..n {
            t.add_leaf(leaf(i)).unwrap();
        }
        t
    }

    fn diff_round_trip(t: &RatchetTree, base: &RatchetTree) -> (RatchetTree, usize) {
        let mut w = Writer::with_capacity(0);
        t.write_diff(base, &mut w).unwrap();
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        let back = RatchetTree::read_diff(&mut r, base).unwrap();
        r.finish("end").unwrap();
        (back, bytes.len())
    }

    #[test]
    fn diffs_against_smaller_larger_and_equal_trees_round_trip_with_their_hashes() {
        let mut big = tree(40);
        big.tree_hash().unwrap();
        let mut changed = big.clone();
        changed.set_node(
            NodeIndex(3),
            Some(Node::Parent(ParentNode {
                encryption_key: HpkePublicKey(vec![7; 65]),
                parent_hash: vec![1; 32],
                unmerged_leaves: vec![],
            })),
        );
        changed.update_leaf(LeafIndex(5), leaf(500)).unwrap();
        let mut shrunk = big.clone();
        for i in 2..40 {
            shrunk.remove_leaf(LeafIndex(i)).unwrap();
        }
        shrunk.tree_hash().unwrap();
        assert!(shrunk.leaf_count() < big.leaf_count());
        for (t, base) in [
            (&changed, &big),
            (&big, &big),
            (&big, &shrunk),
            (&shrunk, &big),
            (&changed, &shrunk),
        ] {
            let (mut back, _) = diff_round_trip(t, base);
            assert!(back == *t);
            assert_eq!(back.leaf_count(), t.leaf_count());
            // The base's cached hashes were invalidated where they must:
            // the hash equals that of the same nodes without any cache.
            let mut fresh = RatchetTree::from_nodes(provider(), t.to_ratchet_tree().0).unwrap();
            assert_eq!(back.tree_hash().unwrap(), fresh.tree_hash().unwrap());
        }
        // An unchanged tree costs a few bytes.
        assert!(diff_round_trip(&big, &big).1 < 8);
    }

    #[test]
    fn a_wider_tree_must_list_every_node_past_the_base() {
        let small = tree(2);
        let mut w = Writer::with_capacity(0);
        // 2^20 leaves claimed, with no extension nodes: refused before any
        // allocation of that size.
        w.u32(1 << 20);
        w.list(std::iter::empty::<()>(), |_, _| Ok(())).unwrap();
        w.list(std::iter::empty::<()>(), |_, _| Ok(())).unwrap();
        let bytes = w.finish();
        assert!(matches!(
            RatchetTree::read_diff(&mut Reader::new(&bytes), &small),
            Err(StateError::MalformedPlaintext {
                field: "extension nodes"
            })
        ));
        // A changed index outside the shared part, and a leaf at a parent
        // position, are refused.
        let big = tree(8);
        for (x, node) in [(40u32, None), (1, Some(Node::Leaf(leaf(9))))] {
            let mut w = Writer::with_capacity(0);
            w.u32(8);
            w.list([(x, node)], |w, (x, node)| {
                w.u32(x);
                w.optional(node.as_ref(), |w, n| w.item(n))
            })
            .unwrap();
            w.list(std::iter::empty::<()>(), |_, _| Ok(())).unwrap();
            let bytes = w.finish();
            assert!(matches!(
                RatchetTree::read_diff(&mut Reader::new(&bytes), &big),
                Err(StateError::MalformedPlaintext {
                    field: "changed node"
                })
            ));
        }
    }

    /// Encodes and decodes every chunk of `t`, dropping the cached hashes
    /// of the chunks in `without_hashes`.
    fn chunk_round_trip(t: &RatchetTree, without_hashes: &[usize]) -> RatchetTree {
        let chunks = (0..t.chunk_count())
            .map(|c| {
                let mut chunk = t.chunk_ref(c).unwrap();
                if without_hashes.contains(&c) {
                    chunk = ChunkRef::from_slots(
                        chunk.slots().map(|(n, _)| (n.cloned(), None)).collect(),
                    );
                }
                let mut w = Writer::with_capacity(0);
                write_chunk(&chunk, c as u32, &[c as u8; 16], &mut w).unwrap();
                let bytes = w.finish();
                let mut r = Reader::new(&bytes);
                let (back, save_id) = read_chunk(&mut r, c as u32, 32).unwrap();
                r.finish("end").unwrap();
                assert_eq!(save_id, [c as u8; 16]);
                back
            })
            .collect();
        RatchetTree::from_chunks(provider(), t.leaf_count(), chunks).unwrap()
    }

    #[test]
    fn chunks_round_trip_and_hashes_missing_below_a_cached_one_are_recomputed() {
        let mut t = tree(300);
        let fresh = t.tree_hash().unwrap();
        assert_eq!(t.chunk_count(), 4);
        // Every hash kept: the root's comes from the records.
        let mut back = chunk_round_trip(&t, &[]);
        assert!(back == t);
        assert_eq!(back.cached_hash(back.root()), Some(fresh));
        // Chunk 0's hashes lost (a record of a save made while they were
        // stale) while its ancestors' in chunks 1 and 3 are cached: those
        // are dropped too, so that a change in chunk 0 reaches the root.
        let mut mixed = chunk_round_trip(&t, &[0]);
        assert_eq!(mixed.cached_hash(mixed.root()), None);
        assert_eq!(mixed.tree_hash().unwrap(), fresh);
        for tree in [&mut back, &mut mixed, &mut t] {
            tree.update_leaf(LeafIndex(3), leaf(1000)).unwrap();
        }
        let changed = t.tree_hash().unwrap();
        assert_ne!(changed, fresh);
        assert_eq!(back.tree_hash().unwrap(), changed);
        assert_eq!(mixed.tree_hash().unwrap(), changed);
        // The chunks' key filters were built: membership checks find keys.
        let key = |i: u32| [b"enc".as_slice(), &i.to_be_bytes()].concat();
        for tree in [&back, &mixed] {
            assert_eq!(
                tree.nodes_with_any_encryption_key(&[&key(5), &key(1000), &key(290)]),
                [NodeIndex(6), NodeIndex(10), NodeIndex(580)]
            );
        }
    }

    #[test]
    fn malformed_chunks_are_refused() {
        let mut t = tree(300);
        t.tree_hash().unwrap();
        let encode = |index: u32, slots: Vec<(Option<Node>, Option<Digest>)>| {
            let mut w = Writer::with_capacity(0);
            write_chunk(&ChunkRef::from_slots(slots), index, &[0; 16], &mut w).unwrap();
            w.finish()
        };
        let read = |bytes: &[u8], index: u32| read_chunk(&mut Reader::new(bytes), index, 32);
        // Another chunk's index, a leaf at a parent's slot, a short hash.
        let chunk0: Vec<_> = t
            .chunk_ref(0)
            .unwrap()
            .slots()
            .map(|(n, h)| (n.cloned(), h))
            .collect();
        let bytes = encode(0, chunk0.clone());
        assert!(read(&bytes, 0).is_ok());
        assert!(matches!(
            read(&bytes, 1),
            Err(StateError::MalformedPlaintext {
                field: "tree chunk"
            })
        ));
        let mut misplaced = chunk0.clone();
        misplaced[1] = (Some(Node::Leaf(leaf(9))), None);
        assert!(matches!(
            read(&encode(0, misplaced), 0),
            Err(StateError::MalformedPlaintext {
                field: "tree chunk node"
            })
        ));
        assert!(matches!(
            read(&bytes, 0).and_then(|_| read_chunk(&mut Reader::new(&bytes), 0, 48)),
            Err(StateError::MalformedPlaintext {
                field: "tree chunk hash"
            })
        ));
        // Chunks that do not make the tree: too few, a node past the
        // width, no member.
        let chunks = |n: usize| (0..n).map(|c| t.chunk_ref(c).unwrap()).collect::<Vec<_>>();
        assert!(matches!(
            RatchetTree::from_chunks(provider(), t.leaf_count(), chunks(3)),
            Err(StateError::MalformedPlaintext {
                field: "tree chunks"
            })
        ));
        let small = tree(2);
        let mut past_width: Vec<_> = small
            .chunk_ref(0)
            .unwrap()
            .slots()
            .map(|(n, h)| (n.cloned(), h))
            .collect();
        past_width[4] = (Some(Node::Leaf(leaf(7))), None);
        assert!(matches!(
            RatchetTree::from_chunks(provider(), 2, vec![ChunkRef::from_slots(past_width)]),
            Err(StateError::MalformedPlaintext {
                field: "tree chunks"
            })
        ));
        assert!(matches!(
            RatchetTree::from_chunks(provider(), 2, vec![ChunkRef::from_slots(Vec::new())]),
            Err(StateError::MalformedPlaintext {
                field: "tree chunks"
            })
        ));
    }

    #[test]
    fn changed_slots_apply_over_older_chunks_and_malformed_lists_are_refused() {
        let mut base = tree(300);
        base.tree_hash().unwrap();
        let mut t = base.clone();
        t.update_leaf(LeafIndex(3), leaf(1000)).unwrap();
        t.remove_leaf(LeafIndex(299)).unwrap();
        t.tree_hash().unwrap();
        let chunks: Vec<ChunkRef> = (0..t.chunk_count())
            .map(|c| t.chunk_ref(c).unwrap())
            .collect();
        let changed: Vec<(usize, usize)> = (0..t.chunk_count())
            .flat_map(|c| {
                chunks[c]
                    .changed_slots(&base.chunk_ref(c).unwrap())
                    .into_iter()
                    .map(move |i| (c, i))
            })
            .collect();
        assert!(
            !changed.is_empty() && changed.len() < 40,
            "{}",
            changed.len()
        );
        let mut w = Writer::with_capacity(0);
        write_changed_slots(&chunks, &changed, &mut w).unwrap();
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        let slots = read_changed_slots(&mut r, 32).unwrap();
        r.finish("end").unwrap();
        let mut rebuilt: Vec<ChunkRef> = (0..base.chunk_count())
            .map(|c| base.chunk_ref(c).unwrap())
            .collect();
        apply_changed_slots(&mut rebuilt, slots).unwrap();
        let mut back = RatchetTree::from_chunks(provider(), t.leaf_count(), rebuilt).unwrap();
        assert!(back == t);
        // The changed chunk's key filter knows the new key, and no longer
        // finds the replaced one on a node.
        let key = |i: u32| [b"enc".as_slice(), &i.to_be_bytes()].concat();
        assert_eq!(
            back.nodes_with_any_encryption_key(&[&key(1000), &key(3)]),
            [NodeIndex(6)]
        );
        assert_eq!(back.cached_hash(back.root()), t.cached_hash(t.root()));
        assert_eq!(back.tree_hash().unwrap(), t.tree_hash().unwrap());

        let list = |entries: &[(u32, Option<Node>)]| {
            let mut w = Writer::with_capacity(0);
            w.list(entries, |w, (x, node)| {
                w.u32(*x);
                w.optional(node.as_ref(), |w, n| w.item(n))?;
                w.optional(None::<()>, |_, _| Ok(()))
            })
            .unwrap();
            w.finish()
        };
        let read = |bytes: &[u8]| read_changed_slots(&mut Reader::new(bytes), 32);
        // Not ascending, a leaf at a parent's position.
        for bad in [
            list(&[(4, None), (2, None)]),
            list(&[(4, None), (4, None)]),
            list(&[(5, Some(Node::Leaf(leaf(1))))]),
        ] {
            assert!(matches!(
                read(&bad),
                Err(StateError::MalformedPlaintext {
                    field: "changed slot"
                })
            ));
        }
        // A slot past the chunks.
        let outside = read(&list(&[(4 * CHUNK as u32, None)])).unwrap();
        let mut chunks = chunks;
        assert!(matches!(
            apply_changed_slots(&mut chunks, outside),
            Err(StateError::MalformedPlaintext {
                field: "changed slot"
            })
        ));
    }

    #[test]
    fn whole_trees_round_trip() {
        for n in [1, 2, 5, 40] {
            let t = tree(n);
            let mut w = Writer::with_capacity(0);
            t.write_state(&mut w).unwrap();
            let bytes = w.finish();
            let mut r = Reader::new(&bytes);
            let back = RatchetTree::read_state(&mut r, provider()).unwrap();
            r.finish("end").unwrap();
            assert!(back == t);
            assert_eq!(back.leaf_count(), t.leaf_count());
        }
    }
}

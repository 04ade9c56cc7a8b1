//! Copy-on-write storage of the tree's nodes and cached tree hashes.
//!
//! The array of Appendix C is cut into chunks of [`CHUNK`] slots, each
//! behind an `Arc`, and each node behind its own `Arc`: cloning a tree
//! copies one pointer per chunk, and changing a node copies only its chunk
//! (pointers, not nodes). A commit touches O(log N) chunks, so staging a
//! commit on a copy of a 10,000-member tree costs microseconds, not a walk
//! over every node.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use hsmls_crypto::Digest;

use crate::codec::Node;

/// A 64-bit fingerprint of a public key, to find equal keys without
/// visiting every node (equal fingerprints are confirmed on the keys).
/// `DefaultHasher::new()` is deterministic.
pub(super) fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// What the membership checks need of a node, stored contiguously per
/// chunk so that scanning a 10,000-member tree reads no node.
#[derive(Clone, Copy, Default)]
struct Meta {
    /// 0 blank, 1 leaf, 2 parent.
    kind: u8,
    /// The leaf's credential type.
    credential_type: u16,
    /// Fingerprint of `encryption_key`.
    enc_fp: u64,
    /// Fingerprint of a leaf's `signature_key`.
    sig_fp: u64,
}

impl Meta {
    fn of(node: Option<&Node>) -> Meta {
        match node {
            None => Meta::default(),
            Some(Node::Leaf(l)) => Meta {
                kind: 1,
                credential_type: l.credential.credential_type().0,
                enc_fp: fingerprint(l.encryption_key.as_slice()),
                sig_fp: fingerprint(l.signature_key.as_slice()),
            },
            Some(Node::Parent(p)) => Meta {
                kind: 2,
                credential_type: 0,
                enc_fp: fingerprint(p.encryption_key.as_slice()),
                sig_fp: 0,
            },
        }
    }
}

/// Slots per chunk (a saved tree record holds one chunk, `tree/saved.rs`).
pub(crate) const CHUNK: usize = 256;

/// Bits of a chunk's encryption-key filter (up to [`CHUNK`] keys) and of
/// its signature-key filter (up to `CHUNK / 2` leaves): 8 bits per key.
const ENC_FILTER_WORDS: usize = CHUNK * 8 / 64;
const SIG_FILTER_WORDS: usize = CHUNK / 2 * 8 / 64;

/// Lookups of more fingerprints than this scan every chunk's metadata
/// instead of asking the filters (the filters cost one probe per
/// fingerprint per chunk; a batch of thousands of new leaves meets most
/// chunks anyway).
const FILTERED_LOOKUP_MAX: usize = 64;

/// A Bloom filter of key fingerprints (two probes per key, taken from
/// the low and high halves of the fingerprint): a chunk whose filter says
/// "absent" for every fingerprint sought is skipped, so that checking the
/// few keys of a commit against a 100,000-member tree reads about one
/// word per chunk instead of every node's metadata (issue 13). A false
/// "present" (about 5 % per key and chunk at 8 bits per key) only costs
/// the scan of that chunk; keys are confirmed on the nodes in any case.
#[derive(Clone, Copy)]
struct KeyFilter<const W: usize>([u64; W]);

impl<const W: usize> KeyFilter<W> {
    const EMPTY: Self = KeyFilter([0; W]);

    fn probes(fp: u64) -> [usize; 2] {
        let bits = W * 64;
        [(fp as usize) % bits, ((fp >> 32) as usize) % bits]
    }

    fn insert(&mut self, fp: u64) {
        for b in Self::probes(fp) {
            self.0[b / 64] |= 1 << (b % 64);
        }
    }

    fn may_contain(&self, fp: u64) -> bool {
        Self::probes(fp)
            .iter()
            .all(|&b| self.0[b / 64] & (1 << (b % 64)) != 0)
    }
}

#[derive(Clone, Default)]
struct Slot {
    node: Option<Arc<Node>>,
    hash: Option<Digest>,
}

#[derive(Clone)]
struct Chunk {
    slots: Vec<Slot>,
    meta: Vec<Meta>,
    /// Non-blank nodes in this chunk.
    non_blank: usize,
    /// The `enc_fp` of this chunk's non-blank nodes.
    enc_filter: KeyFilter<ENC_FILTER_WORDS>,
    /// The `sig_fp` of this chunk's leaves.
    sig_filter: KeyFilter<SIG_FILTER_WORDS>,
    /// How many of this chunk's leaves use each credential type.
    credential_types: Vec<(u16, u32)>,
    /// Nodes that left the chunk since the filters were last rebuilt: their
    /// keys still answer "maybe" until then.
    left_since_reindex: usize,
}

/// A chunk's filters are rebuilt when this many nodes left it (a commit
/// replaces O(log N) nodes; rebuilding on each would cost a walk of the
/// chunk per replaced node).
const REINDEX_AFTER: usize = CHUNK / 8;

impl Chunk {
    fn blank() -> Self {
        Chunk {
            slots: vec![Slot::default(); CHUNK],
            meta: vec![Meta::default(); CHUNK],
            non_blank: 0,
            enc_filter: KeyFilter::EMPTY,
            sig_filter: KeyFilter::EMPTY,
            credential_types: Vec::new(),
            left_since_reindex: 0,
        }
    }

    /// Enters a node's metadata into the filters and counts.
    fn index(&mut self, m: &Meta) {
        if m.kind != 0 {
            self.enc_filter.insert(m.enc_fp);
        }
        if m.kind == 1 {
            self.sig_filter.insert(m.sig_fp);
            match self
                .credential_types
                .iter_mut()
                .find(|(t, _)| *t == m.credential_type)
            {
                Some((_, n)) => *n += 1,
                None => self.credential_types.push((m.credential_type, 1)),
            }
        }
    }

    /// Takes a node that left the chunk out of the counts; its keys stay
    /// in the filters (a Bloom filter cannot forget one key) until
    /// [`REINDEX_AFTER`] nodes have left. Returns whether the filters and
    /// counts were rebuilt (from the metadata as it is now).
    fn unindex(&mut self, m: &Meta) -> bool {
        if m.kind == 1
            && let Some((_, n)) = self
                .credential_types
                .iter_mut()
                .find(|(t, _)| *t == m.credential_type)
        {
            *n = n.saturating_sub(1);
        }
        self.credential_types.retain(|(_, n)| *n > 0);
        self.left_since_reindex += 1;
        if self.left_since_reindex >= REINDEX_AFTER {
            self.reindex();
            return true;
        }
        false
    }

    /// Rebuilds the filters and counts from the metadata.
    fn reindex(&mut self) {
        self.enc_filter = KeyFilter::EMPTY;
        self.sig_filter = KeyFilter::EMPTY;
        self.credential_types.clear();
        self.left_since_reindex = 0;
        let metas = std::mem::take(&mut self.meta);
        for m in &metas {
            self.index(m);
        }
        self.meta = metas;
    }
}

/// The nodes of a ratchet tree in array order, blank = `None`, with a tree
/// hash cache entry per node.
#[derive(Clone, Default)]
pub(super) struct NodeStore {
    chunks: Vec<Arc<Chunk>>,
    len: usize,
}

impl NodeStore {
    /// `len` blank nodes.
    pub(super) fn blank(len: usize) -> Self {
        let mut s = NodeStore::default();
        s.resize(len);
        s
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn slot(&self, i: usize) -> Option<&Slot> {
        if i >= self.len {
            return None;
        }
        self.chunks.get(i / CHUNK)?.slots.get(i % CHUNK)
    }

    fn slot_mut(&mut self, i: usize) -> Option<&mut Slot> {
        if i >= self.len {
            return None;
        }
        Arc::make_mut(self.chunks.get_mut(i / CHUNK)?)
            .slots
            .get_mut(i % CHUNK)
    }

    /// The node at `i`; `None` if blank or outside.
    pub(super) fn get(&self, i: usize) -> Option<&Node> {
        self.slot(i)?.node.as_deref()
    }

    /// Whether node `i` is non-blank (without reading the node).
    pub(super) fn is_present(&self, i: usize) -> bool {
        self.slot(i).is_some_and(|s| s.node.is_some())
    }

    /// Mutable access to the (non-blank) node at `i`, copied if shared.
    /// Does not touch the hash cache. The caller must not change the
    /// node's keys or credential (they are indexed).
    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut Node> {
        self.slot_mut(i)?.node.as_mut().map(Arc::make_mut)
    }

    /// Sets the node at `i` (inside the store). Does not touch the hash
    /// cache.
    pub(super) fn set(&mut self, i: usize, node: Option<Arc<Node>>) {
        if i >= self.len {
            return;
        }
        let Some(chunk) = self.chunks.get_mut(i / CHUNK) else {
            return;
        };
        let chunk = Arc::make_mut(chunk);
        let Some(slot) = chunk.slots.get_mut(i % CHUNK) else {
            return;
        };
        match (slot.node.is_some(), node.is_some()) {
            (false, true) => chunk.non_blank += 1,
            (true, false) => chunk.non_blank -= 1,
            _ => {}
        }
        let meta = Meta::of(node.as_deref());
        slot.node = node;
        let old = chunk
            .meta
            .get_mut(i % CHUNK)
            .map(|m| std::mem::replace(m, meta))
            .unwrap_or_default();
        // A rebuild reads the new metadata already.
        if old.kind == 0 || !chunk.unindex(&old) {
            chunk.index(&meta);
        }
    }

    /// The cached hash of node `i`.
    pub(super) fn hash(&self, i: usize) -> Option<Digest> {
        self.slot(i)?.hash
    }

    /// Sets the cached hash of node `i`. Returns whether there was a cached
    /// value before.
    pub(super) fn set_hash(&mut self, i: usize, hash: Option<Digest>) -> bool {
        // Avoid copying a shared chunk just to clear an empty entry.
        match self.slot(i) {
            None => return false,
            Some(s) if s.hash.is_none() && hash.is_none() => return false,
            Some(_) => {}
        }
        match self.slot_mut(i) {
            Some(s) => std::mem::replace(&mut s.hash, hash).is_some(),
            None => false,
        }
    }

    /// The nodes in array order.
    pub(super) fn iter(&self) -> impl Iterator<Item = Option<&Node>> + '_ {
        self.chunks
            .iter()
            .flat_map(|c| c.slots.iter())
            .take(self.len)
            .map(|s| s.node.as_deref())
    }

    /// Whether any node in `lo..=hi` (clamped to the store) is non-blank.
    pub(super) fn any_non_blank(&self, lo: usize, hi: usize) -> bool {
        if self.len == 0 {
            return false;
        }
        let hi = hi.min(self.len - 1);
        let mut i = lo;
        while i <= hi {
            let Some(chunk) = self.chunks.get(i / CHUNK) else {
                return false;
            };
            let start = i % CHUNK;
            let end = (hi - (i - start)).min(CHUNK - 1);
            if start == 0 && end == CHUNK - 1 {
                if chunk.non_blank > 0 {
                    return true;
                }
            } else if chunk
                .slots
                .get(start..=end)
                .is_some_and(|s| s.iter().any(|s| s.node.is_some()))
            {
                return true;
            }
            i += end - start + 1;
        }
        false
    }

    /// Over the nodes `lo ..= hi`: how many are non-blank leaves, or `None`
    /// as soon as one is a non-blank parent. Reads the compact node
    /// metadata, not the nodes.
    pub(super) fn leaf_count_if_no_parent(&self, lo: usize, hi: usize) -> Option<usize> {
        if self.len == 0 {
            return Some(0);
        }
        let hi = hi.min(self.len - 1);
        let mut count = 0;
        let mut i = lo;
        while i <= hi {
            let Some(chunk) = self.chunks.get(i / CHUNK) else {
                break;
            };
            let start = i % CHUNK;
            let end = (hi - (i - start)).min(CHUNK - 1);
            if chunk.non_blank > 0 {
                for m in chunk.meta.get(start..=end).unwrap_or_default() {
                    match m.kind {
                        1 => count += 1,
                        2 => return None,
                        _ => {}
                    }
                }
            }
            i += end - start + 1;
        }
        Some(count)
    }

    /// Grows (with blank nodes) or shrinks to `len` nodes.
    pub(super) fn resize(&mut self, len: usize) {
        if len < self.len {
            for i in len..self.len {
                self.set(i, None);
            }
        }
        let n_chunks = len.div_ceil(CHUNK);
        self.chunks.truncate(n_chunks);
        while self.chunks.len() < n_chunks {
            self.chunks.push(Arc::new(Chunk::blank()));
        }
        // Slots past `len` in the last chunk are blank with no hash.
        if len < self.len
            && let Some(last) = self.chunks.last_mut()
        {
            let from = len % CHUNK;
            if from != 0 {
                let c = Arc::make_mut(last);
                for s in &mut c.slots[from..] {
                    s.hash = None;
                }
            }
        }
        self.len = len;
    }

    fn metas(&self) -> impl Iterator<Item = (usize, &Meta)> + '_ {
        self.chunks
            .iter()
            .flat_map(|c| c.meta.iter())
            .take(self.len)
            .enumerate()
    }

    /// The metadata of the chunks for which `keep` holds, with node
    /// indices.
    fn metas_of_chunks<'a>(
        &'a self,
        keep: impl Fn(&Chunk) -> bool + 'a,
    ) -> impl Iterator<Item = (usize, &'a Meta)> + 'a {
        self.chunks
            .iter()
            .enumerate()
            .filter(move |(_, c)| keep(c))
            .flat_map(|(k, c)| {
                c.meta
                    .iter()
                    .enumerate()
                    .map(move |(j, m)| (k * CHUNK + j, m))
            })
            .filter(|(i, _)| *i < self.len)
    }

    /// The non-blank nodes whose `encryption_key` fingerprint is in
    /// `sorted_fps`, in array order.
    pub(super) fn with_any_encryption_fp<'a>(
        &'a self,
        sorted_fps: &'a [u64],
    ) -> Box<dyn Iterator<Item = usize> + 'a> {
        self.with_any_fp(
            sorted_fps,
            |m| (m.kind != 0).then_some(m.enc_fp),
            |c, fp| c.enc_filter.may_contain(fp),
        )
    }

    /// The leaves whose `signature_key` fingerprint is in `sorted_fps`, in
    /// array order.
    pub(super) fn with_any_signature_fp<'a>(
        &'a self,
        sorted_fps: &'a [u64],
    ) -> Box<dyn Iterator<Item = usize> + 'a> {
        self.with_any_fp(
            sorted_fps,
            |m| (m.kind == 1).then_some(m.sig_fp),
            |c, fp| c.sig_filter.may_contain(fp),
        )
    }

    /// The nodes whose fingerprint (`fp_of`, `None` for nodes that have
    /// none) is in `sorted_fps`: only the chunks whose filter may hold one
    /// of them are read, unless there are more than
    /// [`FILTERED_LOOKUP_MAX`] to find.
    fn with_any_fp<'a>(
        &'a self,
        sorted_fps: &'a [u64],
        fp_of: impl Fn(&Meta) -> Option<u64> + Copy + 'a,
        may_hold: impl Fn(&Chunk, u64) -> bool + 'a,
    ) -> Box<dyn Iterator<Item = usize> + 'a> {
        let found =
            move |m: &Meta| fp_of(m).is_some_and(|fp| sorted_fps.binary_search(&fp).is_ok());
        if sorted_fps.len() > FILTERED_LOOKUP_MAX {
            return Box::new(self.metas().filter(move |(_, m)| found(m)).map(|(i, _)| i));
        }
        Box::new(
            self.metas_of_chunks(move |c| {
                c.non_blank > 0 && sorted_fps.iter().any(|&fp| may_hold(c, fp))
            })
            .filter(move |(_, m)| found(m))
            .map(|(i, _)| i),
        )
    }

    /// The credential type of the leaf at `i`, if non-blank.
    pub(super) fn credential_type(&self, i: usize) -> Option<u16> {
        if i >= self.len {
            return None;
        }
        let m = self.chunks.get(i / CHUNK)?.meta.get(i % CHUNK)?;
        (m.kind == 1).then_some(m.credential_type)
    }

    /// How many leaves use each credential type (summed over the chunks'
    /// counts: no node is read).
    pub(super) fn credential_type_counts(&self) -> Vec<(u16, usize)> {
        let mut out: Vec<(u16, usize)> = Vec::new();
        for c in &self.chunks {
            for &(t, n) in &c.credential_types {
                match out.iter_mut().find(|(u, _)| *u == t) {
                    Some((_, total)) => *total += n as usize,
                    None => out.push((t, n as usize)),
                }
            }
        }
        out
    }
}

/// A shared reference to one chunk of a [`NodeStore`], kept by a saved
/// group to tell later whether the chunk changed: a chunk is copied before
/// any change while another reference to it exists (`Arc::make_mut`), so
/// the same pointer means the same nodes and hashes.
#[derive(Clone)]
pub(crate) struct ChunkRef(Arc<Chunk>);

impl ChunkRef {
    /// Whether both refer to the same (so unchanged) chunk.
    pub(crate) fn same(&self, other: &ChunkRef) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Builds a chunk from its [`CHUNK`] slots (node, cached tree hash);
    /// missing trailing slots are blank.
    #[cfg(test)]
    pub(super) fn from_slots(slots: Vec<(Option<Node>, Option<Digest>)>) -> ChunkRef {
        Self::from_shared_slots(
            slots
                .into_iter()
                .map(|(node, hash)| (node.map(Arc::new), hash))
                .collect(),
        )
    }

    /// [`ChunkRef::from_slots`] of nodes already behind their `Arc`.
    pub(super) fn from_shared_slots(slots: Vec<(Option<Arc<Node>>, Option<Digest>)>) -> ChunkRef {
        let mut chunk = Chunk::blank();
        for (i, (node, hash)) in slots.into_iter().take(CHUNK).enumerate() {
            chunk.meta[i] = Meta::of(node.as_deref());
            chunk.non_blank += usize::from(node.is_some());
            chunk.slots[i] = Slot { node, hash };
        }
        chunk.reindex();
        ChunkRef(Arc::new(chunk))
    }

    /// The chunk's slots in order: (node, cached tree hash).
    pub(super) fn slots(&self) -> impl Iterator<Item = (Option<&Node>, Option<Digest>)> + '_ {
        self.0.slots.iter().map(|s| (s.node.as_deref(), s.hash))
    }

    /// Slot `i`: (node, cached tree hash); blank for a slot outside.
    pub(super) fn slot(&self, i: usize) -> (Option<&Node>, Option<Digest>) {
        self.0
            .slots
            .get(i)
            .map_or((None, None), |s| (s.node.as_deref(), s.hash))
    }

    /// The slots whose node (another `Arc`: `base` keeps its nodes alive,
    /// so the same pointer is the same node) or cached hash differ from
    /// those of `base`.
    pub(crate) fn changed_slots(&self, base: &ChunkRef) -> Vec<usize> {
        let same_node = |a: &Option<Arc<Node>>, b: &Option<Arc<Node>>| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        self.0
            .slots
            .iter()
            .zip(&base.0.slots)
            .enumerate()
            // Tree hashes are public: compared as bytes, not in constant
            // time (`Digest`'s `==`), which costs ten times more.
            .filter(|(_, (a, b))| {
                !same_node(&a.node, &b.node)
                    || a.hash.as_ref().map(Digest::as_bytes)
                        != b.hash.as_ref().map(Digest::as_bytes)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// This chunk with `changes` (slot, node, cached hash) applied, as a
    /// new chunk.
    pub(super) fn with_changes(
        &self,
        changes: impl IntoIterator<Item = (usize, Option<Node>, Option<Digest>)>,
    ) -> ChunkRef {
        let mut chunk = (*self.0).clone();
        for (i, node, hash) in changes {
            let (Some(slot), Some(meta)) = (chunk.slots.get_mut(i), chunk.meta.get_mut(i)) else {
                continue;
            };
            match (slot.node.is_some(), node.is_some()) {
                (false, true) => chunk.non_blank += 1,
                (true, false) => chunk.non_blank -= 1,
                _ => {}
            }
            *meta = Meta::of(node.as_ref());
            *slot = Slot {
                node: node.map(Arc::new),
                hash,
            };
        }
        // The key filters and credential counts, from the metadata as it
        // is now.
        chunk.reindex();
        ChunkRef(Arc::new(chunk))
    }
}

impl NodeStore {
    /// How many chunks hold the nodes.
    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// A reference to chunk `c`.
    pub(crate) fn chunk_ref(&self, c: usize) -> Option<ChunkRef> {
        self.chunks.get(c).cloned().map(ChunkRef)
    }

    /// A store of `len` nodes made of `chunks` (`len.div_ceil(CHUNK)` of
    /// them, whose slots at `len` and beyond are blank with no hash: the
    /// caller checks).
    pub(super) fn from_chunk_refs(chunks: Vec<ChunkRef>, len: usize) -> NodeStore {
        NodeStore {
            chunks: chunks.into_iter().map(|c| c.0).collect(),
            len,
        }
    }
}

//! The byte-level writer and reader of the state plaintexts: integers,
//! `opaque x<V>` and `T x<V>` (RFC 9420 §2.1.2) with the bounded header
//! functions of [`crate::codec::vl`], and RFC 9420 wire structures as
//! `opaque x<V>` of their encoding.
//!
//! The writer's buffer holds secrets: it lives in a `Zeroizing` vector and
//! grows by copying into a new zeroizing vector (the old one is wiped), so
//! no unzeroized copy is left behind by a reallocation.

use tls_codec::{DeserializeBytes, Serialize, Size};
use zeroize::Zeroizing;

use super::StateError;
use crate::codec::vl::{MAX_VL_LENGTH, split_vl, vl_header_len};
use crate::codec::{CodecError, Decode};

/// Space kept for a vector header before its content is known (the
/// longest header, four bytes).
const HEADER_RESERVE: usize = 4;

/// Writes a plaintext into a zeroizing buffer.
pub(crate) struct Writer {
    buf: Zeroizing<Vec<u8>>,
}

impl Writer {
    /// An empty writer with room for `capacity` bytes.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Writer {
            buf: Zeroizing::new(Vec::with_capacity(capacity)),
        }
    }

    /// Makes room for `extra` more bytes without an unzeroized copy.
    fn reserve(&mut self, extra: usize) {
        let needed = self.buf.len().saturating_add(extra);
        if needed <= self.buf.capacity() {
            return;
        }
        let capacity = needed.max(self.buf.capacity().saturating_mul(2)).max(256);
        let mut grown = Zeroizing::new(Vec::with_capacity(capacity));
        grown.extend_from_slice(&self.buf);
        // The old buffer is zeroized when dropped here.
        self.buf = grown;
    }

    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.raw(&[v]);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.raw(&v.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.raw(&v.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.raw(&v.to_be_bytes());
    }

    /// A `usize` as `uint64`.
    pub(crate) fn len64(&mut self, v: usize) {
        self.u64(v as u64);
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    /// `opaque x<V>`.
    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        self.header(bytes.len())?;
        self.raw(bytes);
        Ok(())
    }

    fn header(&mut self, len: usize) -> Result<(), StateError> {
        if len > MAX_VL_LENGTH {
            return Err(StateError::Encoding(CodecError::Encoding(format!(
                "a vector of {len} bytes is longer than 2^30 - 1"
            ))));
        }
        let l = len as u32;
        match vl_header_len(len) {
            1 => self.u8(l as u8),
            2 => self.u16(0x4000 | l as u16),
            _ => self.u32(0x8000_0000 | l),
        }
        Ok(())
    }

    /// A vector (`opaque x<V>` or `T x<V>`) whose content `f` writes.
    pub(crate) fn vector(
        &mut self,
        f: impl FnOnce(&mut Writer) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let start = self.buf.len();
        self.raw(&[0; HEADER_RESERVE]);
        f(self)?;
        let len = self.buf.len() - start - HEADER_RESERVE;
        let header = vl_header_len(len);
        // Write the header in place, then move the content down to it.
        let mut h = Writer::with_capacity(HEADER_RESERVE);
        h.header(len)?;
        self.buf[start..start + header].copy_from_slice(&h.buf);
        self.buf
            .copy_within(start + HEADER_RESERVE.., start + header);
        let end = self.buf.len() - (HEADER_RESERVE - header);
        self.buf.truncate(end);
        Ok(())
    }

    /// `T x<V>` of `items`, each written by `f`.
    pub(crate) fn list<T>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        mut f: impl FnMut(&mut Writer, T) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        self.vector(|w| {
            for item in items {
                f(w, item)?;
            }
            Ok(())
        })
    }

    /// An RFC 9420 wire structure as `opaque x<V>` of its encoding, written
    /// straight into the buffer.
    pub(crate) fn wire<T: Serialize + Size>(&mut self, value: &T) -> Result<(), StateError> {
        self.header(value.tls_serialized_len())?;
        self.item(value)
    }

    /// An RFC 9420 wire structure in its own encoding (no length prefix),
    /// as an element of a `T x<V>` vector.
    pub(crate) fn item<T: Serialize + Size>(&mut self, value: &T) -> Result<(), StateError> {
        let len = value.tls_serialized_len();
        self.reserve(len);
        let written = value
            .tls_serialize(&mut *self.buf)
            .map_err(|e| StateError::Encoding(e.into()))?;
        if written != len {
            return Err(StateError::Encoding(CodecError::Encoding(
                "serialized length differs from the announced one".into(),
            )));
        }
        Ok(())
    }

    /// `optional<T>`: a presence byte, then the value written by `f`.
    pub(crate) fn optional<T>(
        &mut self,
        value: Option<T>,
        f: impl FnOnce(&mut Writer, T) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        match value {
            None => {
                self.u8(0);
                Ok(())
            }
            Some(v) => {
                self.u8(1);
                f(self, v)
            }
        }
    }

    /// The written plaintext.
    pub(crate) fn finish(self) -> Zeroizing<Vec<u8>> {
        self.buf
    }
}

/// Reads a plaintext. Every error names the field being read.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

fn malformed(field: &'static str) -> StateError {
    StateError::MalformedPlaintext { field }
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// Whether everything was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], StateError> {
        if self.rest.len() < n {
            return Err(malformed(field));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], StateError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, StateError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, StateError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, StateError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, StateError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A `uint64` that must fit a `usize`.
    pub(crate) fn len64(&mut self, field: &'static str) -> Result<usize, StateError> {
        usize::try_from(self.u64(field)?).map_err(|_| malformed(field))
    }

    /// A `uint8` that must be 0 or 1.
    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, StateError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(malformed(field)),
        }
    }

    /// A fixed-length array of bytes.
    pub(crate) fn fixed<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], StateError> {
        self.array(field)
    }

    /// `opaque x<V>`, borrowed from the input.
    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], StateError> {
        let (content, rest) = split_vl(self.rest).map_err(|_| malformed(field))?;
        self.rest = rest;
        Ok(content)
    }

    /// `T x<V>`: items read by `f` until the vector's content is used up.
    /// Every item must consume at least one byte, so the list never holds
    /// more items than the input has bytes.
    pub(crate) fn list<T>(
        &mut self,
        field: &'static str,
        mut f: impl FnMut(&mut Reader<'a>) -> Result<T, StateError>,
    ) -> Result<Vec<T>, StateError> {
        let mut inner = Reader::new(self.bytes(field)?);
        let mut out = Vec::new();
        while !inner.rest.is_empty() {
            let before = inner.rest.len();
            out.push(f(&mut inner)?);
            if inner.rest.len() >= before {
                return Err(malformed(field));
            }
        }
        Ok(out)
    }

    /// An RFC 9420 wire structure from `opaque x<V>`, decoded with the
    /// bounded decoders of the codec module.
    pub(crate) fn wire<T: Decode>(&mut self, field: &'static str) -> Result<T, StateError> {
        T::decode(self.bytes(field)?).map_err(|_| malformed(field))
    }

    /// An RFC 9420 wire structure in its own encoding (an element of a
    /// `T x<V>` vector), decoded in place with the bounded decoders.
    pub(crate) fn item<T: DeserializeBytes>(
        &mut self,
        field: &'static str,
    ) -> Result<T, StateError> {
        let (v, rest) = T::tls_deserialize_bytes(self.rest).map_err(|_| malformed(field))?;
        self.rest = rest;
        Ok(v)
    }

    /// `optional<T>`.
    pub(crate) fn optional<T>(
        &mut self,
        field: &'static str,
        f: impl FnOnce(&mut Reader<'a>) -> Result<T, StateError>,
    ) -> Result<Option<T>, StateError> {
        if self.bool(field)? {
            f(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Checks that everything was read.
    pub(crate) fn finish(&self, field: &'static str) -> Result<(), StateError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(malformed(field))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_get_minimal_headers_and_read_back() {
        for len in [0usize, 1, 63, 64, 16383, 16384, 70_000] {
            let content: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut w = Writer::with_capacity(0);
            w.u8(0xaa);
            w.vector(|w| {
                w.raw(&content);
                Ok(())
            })
            .unwrap();
            w.u8(0xbb);
            let mut direct = Writer::with_capacity(0);
            direct.u8(0xaa);
            direct.bytes(&content).unwrap();
            direct.u8(0xbb);
            let (a, b) = (w.finish(), direct.finish());
            assert_eq!(&a[..], &b[..], "len {len}");
            assert_eq!(a.len(), 2 + vl_header_len(len) + len);
            let mut r = Reader::new(&a);
            assert_eq!(r.u8("a").unwrap(), 0xaa);
            assert_eq!(r.bytes("v").unwrap(), &content[..]);
            assert_eq!(r.u8("b").unwrap(), 0xbb);
            r.finish("end").unwrap();
        }
    }

    #[test]
    fn lists_stay_inside_their_vector_and_bools_are_strict() {
        let mut w = Writer::with_capacity(0);
        w.list([1u32, 2, 3], |w, v| {
            w.u32(v);
            Ok(())
        })
        .unwrap();
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.list("l", |r| r.u32("x")).unwrap(), vec![1, 2, 3]);
        // A list whose last item runs past the vector.
        let bad = [5u8, 0, 0, 0, 1, 0, 0, 0, 2];
        assert!(matches!(
            Reader::new(&bad).list("l", |r| r.u32("x")),
            Err(StateError::MalformedPlaintext { field: "x" })
        ));
        assert!(matches!(
            Reader::new(&[2]).bool("flag"),
            Err(StateError::MalformedPlaintext { field: "flag" })
        ));
        // A length beyond the input.
        assert!(matches!(
            Reader::new(&[0x80, 0, 1, 0]).bytes("big"),
            Err(StateError::MalformedPlaintext { field: "big" })
        ));
    }
}

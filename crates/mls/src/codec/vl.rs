//! Variable-length vectors (RFC 9420 §2.1.2).
//!
//! The length header uses the two top bits of its first byte for the header
//! size: `00` one byte (6-bit length), `01` two bytes (14-bit), `10` four
//! bytes (30-bit). The prefix `11` (eight bytes) is invalid in MLS, and the
//! header MUST be the shortest one that can hold the length.
//!
//! These functions are used through `#[tls_codec(with = ...)]` on every
//! vector field of the wire structures instead of tls_codec's own `Vec<T>` and
//! `VLBytes` implementations, because tls_codec 0.4.2 (a) `debug_assert!`s on
//! an eight-byte header and on a truncated `VLBytes` body, i.e. panics on
//! untrusted input in debug builds, and (b) decodes `Vec<T>` elements from the
//! whole remaining input, accepting a last element that runs past the end of
//! the vector. Here the declared length is checked against the remaining input
//! before anything is allocated, and the elements are decoded from exactly the
//! declared sub-slice.

use std::io::Write;

use tls_codec::{DeserializeBytes, Error, Serialize, Size};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The largest length a variable-length header can carry: 2^30 - 1.
pub const MAX_VL_LENGTH: usize = (1 << 30) - 1;

/// Decodes a variable-length header, returning the length it announces and
/// the input after the header. Does not look at the content.
///
/// Errors: [`Error::EndOfStream`] if the header is cut short,
/// [`Error::InvalidVectorLength`] for the `11` prefix or a non-minimal header.
pub fn read_vl_header(bytes: &[u8]) -> Result<(usize, &[u8]), Error> {
    let (&first, rest) = bytes.split_first().ok_or(Error::EndOfStream)?;
    let header_len = match first >> 6 {
        0 => 1,
        1 => 2,
        2 => 4,
        _ => return Err(Error::InvalidVectorLength),
    };
    let tail = rest.get(..header_len - 1).ok_or(Error::EndOfStream)?;
    let mut length = usize::from(first & 0x3f);
    for &b in tail {
        length = (length << 8) | usize::from(b);
    }
    if vl_header_len(length) != header_len {
        return Err(Error::InvalidVectorLength);
    }
    Ok((length, &rest[header_len - 1..]))
}

/// The size of the minimal header for `length` (1, 2 or 4; 4 also for
/// lengths that are too long, which [`write_vl_header`] rejects).
pub fn vl_header_len(length: usize) -> usize {
    if length <= 0x3f {
        1
    } else if length <= 0x3fff {
        2
    } else {
        4
    }
}

/// Writes the minimal header for `length`.
pub fn write_vl_header<W: Write>(length: usize, writer: &mut W) -> Result<usize, Error> {
    if length > MAX_VL_LENGTH {
        return Err(Error::InvalidVectorLength);
    }
    // length <= 2^30 - 1, so it fits in u32.
    let l = length as u32;
    let n = vl_header_len(length);
    match n {
        1 => writer.write_all(&[l as u8])?,
        2 => writer.write_all(&(0x4000u16 | l as u16).to_be_bytes())?,
        _ => writer.write_all(&(0x8000_0000u32 | l).to_be_bytes())?,
    }
    Ok(n)
}

/// Splits a vector off the input: its content (exactly as long as its header
/// says) and the input after it. Allocates nothing.
pub fn split_vl(bytes: &[u8]) -> Result<(&[u8], &[u8]), Error> {
    let (length, rest) = read_vl_header(bytes)?;
    if length > rest.len() {
        return Err(Error::EndOfStream);
    }
    Ok(rest.split_at(length))
}

/// `opaque x<V>` as `Vec<u8>`: use with `#[tls_codec(with = "vl_bytes")]`.
pub mod vl_bytes {
    use super::*;

    /// Encoded size: header plus content.
    pub fn tls_serialized_len(v: &[u8]) -> usize {
        vl_header_len(v.len()) + v.len()
    }

    /// Writes header and content.
    pub fn tls_serialize<W: Write>(v: &[u8], writer: &mut W) -> Result<usize, Error> {
        let h = write_vl_header(v.len(), writer)?;
        writer.write_all(v)?;
        Ok(h + v.len())
    }

    /// Reads header and content; the content is copied only after the
    /// length was checked against the remaining input.
    pub fn tls_deserialize_bytes(bytes: &[u8]) -> Result<(Vec<u8>, &[u8]), Error> {
        let (content, rest) = split_vl(bytes)?;
        Ok((content.to_vec(), rest))
    }
}

/// `T x<V>` as `Vec<T>`: use with `#[tls_codec(with = "vl_vec")]`.
pub mod vl_vec {
    use super::*;

    fn content_len<T: Size>(v: &[T]) -> usize {
        v.iter().map(Size::tls_serialized_len).sum()
    }

    /// Encoded size: header plus encoded elements.
    pub fn tls_serialized_len<T: Size>(v: &[T]) -> usize {
        let c = content_len(v);
        vl_header_len(c) + c
    }

    /// Writes header and elements.
    pub fn tls_serialize<T: Serialize, W: Write>(v: &[T], writer: &mut W) -> Result<usize, Error> {
        let c = content_len(v);
        let mut written = write_vl_header(c, writer)?;
        for e in v {
            written += e.tls_serialize(writer)?;
        }
        Ok(written)
    }

    /// Reads header and elements. The elements are decoded from exactly the
    /// declared content, which must be consumed completely; every element
    /// consumes at least one byte, so the vector never holds more elements
    /// than the input has bytes.
    pub fn tls_deserialize_bytes<T: DeserializeBytes>(
        bytes: &[u8],
    ) -> Result<(Vec<T>, &[u8]), Error> {
        let (mut content, rest) = split_vl(bytes)?;
        let mut out = Vec::new();
        while !content.is_empty() {
            let (e, next) = T::tls_deserialize_bytes(content)?;
            if next.len() >= content.len() {
                return Err(Error::DecodingError("vector element of zero length".into()));
            }
            content = next;
            out.push(e);
        }
        Ok((out, rest))
    }
}

/// A secret `opaque x<V>` (e.g. `joiner_secret`, `path_secret`): zeroized on
/// drop, compared in constant time, and its Debug output shows no value.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SecretBytes {}

impl SecretBytes {
    /// Wraps secret bytes.
    pub fn new(v: Vec<u8>) -> Self {
        SecretBytes(v)
    }

    /// The secret bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(v: Vec<u8>) -> Self {
        SecretBytes(v)
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

impl Size for SecretBytes {
    fn tls_serialized_len(&self) -> usize {
        vl_bytes::tls_serialized_len(&self.0)
    }
}

impl Serialize for SecretBytes {
    fn tls_serialize<W: Write>(&self, writer: &mut W) -> Result<usize, Error> {
        vl_bytes::tls_serialize(&self.0, writer)
    }
}

impl DeserializeBytes for SecretBytes {
    fn tls_deserialize_bytes(bytes: &[u8]) -> Result<(Self, &[u8]), Error> {
        let (content, rest) = split_vl(bytes)?;
        Ok((SecretBytes(content.to_vec()), rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_at_boundaries() {
        for len in [0usize, 1, 63, 64, 16383, 16384, MAX_VL_LENGTH] {
            let mut h = Vec::new();
            write_vl_header(len, &mut h).expect("encodable");
            assert_eq!(h.len(), vl_header_len(len));
            assert_eq!(read_vl_header(&h), Ok((len, &[][..])));
        }
        let mut h = Vec::new();
        assert_eq!(
            write_vl_header(MAX_VL_LENGTH + 1, &mut h),
            Err(Error::InvalidVectorLength)
        );
    }

    #[test]
    fn header_rejections() {
        // 8-byte header (prefix 11), even for a small value.
        assert_eq!(
            read_vl_header(&[0xc0, 0, 0, 0, 0, 0, 0, 1]),
            Err(Error::InvalidVectorLength)
        );
        // Non-minimal: 1 in two bytes, 63 in four bytes, 16383 in four bytes.
        assert_eq!(
            read_vl_header(&[0x40, 0x01]),
            Err(Error::InvalidVectorLength)
        );
        assert_eq!(
            read_vl_header(&[0x80, 0, 0, 0x3f]),
            Err(Error::InvalidVectorLength)
        );
        assert_eq!(
            read_vl_header(&[0x80, 0, 0x3f, 0xff]),
            Err(Error::InvalidVectorLength)
        );
        // Truncated headers.
        assert_eq!(read_vl_header(&[]), Err(Error::EndOfStream));
        assert_eq!(read_vl_header(&[0x40]), Err(Error::EndOfStream));
        assert_eq!(read_vl_header(&[0x80, 0, 0x40]), Err(Error::EndOfStream));
    }

    #[test]
    fn vector_elements_stay_inside_the_vector() {
        // A vector of u16 declaring 3 bytes: the second element would run
        // past the vector's end into the following byte.
        let bytes = [0x03, 0x00, 0x01, 0x00, 0x02];
        assert_eq!(
            vl_vec::tls_deserialize_bytes::<u16>(&bytes).map(|(v, _)| v),
            Err(Error::EndOfStream)
        );
        let ok = [0x04, 0x00, 0x01, 0x00, 0x02, 0xff];
        let (v, rest) = vl_vec::tls_deserialize_bytes::<u16>(&ok).expect("valid");
        assert_eq!(v, vec![1, 2]);
        assert_eq!(rest, &[0xff]);
    }

    #[test]
    fn secret_bytes_debug_shows_no_value() {
        let s = SecretBytes::new(vec![0xab; 4]);
        let d = format!("{s:?}");
        assert!(!d.contains("ab") && !d.contains("171"), "{d}");
    }
}

//! The few TLS-presentation encodings the labeled constructions need
//! (RFC 9420 §2.1.2 variable-length vectors), written by hand so that hot
//! paths feed the parts straight into the hash or KDF without allocating.

use crate::CryptoError;

/// The length prefix of an `opaque x<V>` vector (RFC 9420 §2.1.2): a 1-,
/// 2- or 4-byte variable-length integer, always in its shortest form.
#[derive(Clone, Copy)]
pub(crate) struct VarintPrefix {
    buf: [u8; 4],
    len: u8,
}

impl VarintPrefix {
    /// The prefix for a vector of `n` bytes; fails for `n >= 2^30`.
    pub(crate) fn new(n: usize) -> Result<Self, CryptoError> {
        let (buf, len) = if n < 1 << 6 {
            ([n as u8, 0, 0, 0], 1)
        } else if n < 1 << 14 {
            let v = (n as u16) | 0x4000;
            let b = v.to_be_bytes();
            ([b[0], b[1], 0, 0], 2)
        } else if n < 1 << 30 {
            ((n as u32 | 0x8000_0000).to_be_bytes(), 4)
        } else {
            return Err(CryptoError::EncodingTooLong(n));
        };
        Ok(VarintPrefix { buf, len })
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// A `uint16` length field (e.g. `KDFLabel.length`, HPKE's `I2OSP(L, 2)`).
pub(crate) fn u16_be(n: usize) -> Result<[u8; 2], CryptoError> {
    u16::try_from(n)
        .map(u16::to_be_bytes)
        .map_err(|_| CryptoError::EncodingTooLong(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_prefixes_are_minimal() {
        assert_eq!(VarintPrefix::new(0).unwrap().as_bytes(), [0x00]);
        assert_eq!(VarintPrefix::new(63).unwrap().as_bytes(), [0x3f]);
        assert_eq!(VarintPrefix::new(64).unwrap().as_bytes(), [0x40, 0x40]);
        assert_eq!(VarintPrefix::new(16383).unwrap().as_bytes(), [0x7f, 0xff]);
        assert_eq!(
            VarintPrefix::new(16384).unwrap().as_bytes(),
            [0x80, 0x00, 0x40, 0x00]
        );
        assert_eq!(
            VarintPrefix::new((1 << 30) - 1).unwrap().as_bytes(),
            [0xbf, 0xff, 0xff, 0xff]
        );
        assert!(matches!(
            VarintPrefix::new(1 << 30),
            Err(CryptoError::EncodingTooLong(n)) if n == 1 << 30
        ));
    }
}

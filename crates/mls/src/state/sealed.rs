//! The clear header of a sealed blob and the seal/open steps around it.

use hsmls_custody::{CustodyError, StateSealer};
use zeroize::Zeroizing;

use super::{StateError, hex};
use crate::codec::vl::{read_vl_header, write_vl_header};

/// The first eight bytes of every sealed hsmls state blob.
pub const MAGIC: [u8; 8] = *b"HSMLS\0ST";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 2;

/// What a sealed blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordKind {
    /// A group's state: the current epoch and pending operations.
    GroupState,
    /// The record of one retained past epoch of a group.
    EpochRecord,
    /// A KeyPackage and the custody URIs of its keys.
    KeyPackageBundle,
    /// One chunk of a group's ratchet tree: 256 node slots and their
    /// cached tree hashes.
    TreeChunk,
}

impl RecordKind {
    fn code(self) -> u8 {
        match self {
            RecordKind::GroupState => 1,
            RecordKind::EpochRecord => 2,
            RecordKind::KeyPackageBundle => 3,
            RecordKind::TreeChunk => 4,
        }
    }

    fn from_code(code: u8) -> Result<Self, StateError> {
        match code {
            1 => Ok(RecordKind::GroupState),
            2 => Ok(RecordKind::EpochRecord),
            3 => Ok(RecordKind::KeyPackageBundle),
            4 => Ok(RecordKind::TreeChunk),
            other => Err(StateError::UnknownRecordKind(other)),
        }
    }
}

/// The clear header of a sealed blob (see the [module
/// documentation](super)). It is public data: reading it needs no key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SealedHeader {
    /// The format version.
    pub version: u16,
    /// What the blob holds.
    pub kind: RecordKind,
    /// The id of the key that sealed the blob ([`StateSealer::key_id`]).
    pub sealing_key_id: Vec<u8>,
    /// The group id (a KeyPackageRef for a KeyPackage bundle).
    pub group_id: Vec<u8>,
    /// The epoch (0 for a KeyPackage bundle, the chunk index for a tree
    /// chunk).
    pub epoch: u64,
}

/// A blob split into its header (also the AEAD's additional data) and its
/// sealed body.
pub(crate) struct ParsedBlob<'a> {
    pub(crate) header: SealedHeader,
    pub(crate) aad: &'a [u8],
    pub(crate) body: &'a [u8],
}

impl SealedHeader {
    /// Reads the header of a sealed blob, checking the magic, the version
    /// and that the blob is exactly as long as the header says. Returns
    /// the header and the sealed body.
    pub fn parse(blob: &[u8]) -> Result<(SealedHeader, &[u8]), StateError> {
        let parsed = parse(blob)?;
        Ok((parsed.header, parsed.body))
    }

    /// The header bytes the AEAD authenticates (for a sealer's
    /// [`StateSealer::open`] of the body).
    pub fn aad(blob: &[u8]) -> Result<&[u8], StateError> {
        Ok(parse(blob)?.aad)
    }

    fn encode(&self, body_len: usize) -> Result<Vec<u8>, StateError> {
        let body_len = u32::try_from(body_len).map_err(|_| {
            StateError::Encoding(crate::codec::CodecError::Encoding(
                "sealed body longer than 2^32 - 1 bytes".into(),
            ))
        })?;
        let mut out = Vec::with_capacity(
            MAGIC.len() + 3 + 8 + self.sealing_key_id.len() + self.group_id.len() + 12,
        );
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.push(self.kind.code());
        for v in [&self.sealing_key_id, &self.group_id] {
            write_vl_header(v.len(), &mut out)
                .map_err(|e| StateError::Encoding(crate::codec::CodecError::from(e)))?;
            out.extend_from_slice(v);
        }
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&body_len.to_be_bytes());
        Ok(out)
    }
}

/// Takes `n` bytes, or reports a truncated blob.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], StateError> {
    if rest.len() < n {
        return Err(StateError::Truncated);
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn take_vl<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], StateError> {
    let (len, after) = read_vl_header(rest).map_err(|e| match e {
        tls_codec::Error::EndOfStream => StateError::Truncated,
        _ => StateError::MalformedHeader,
    })?;
    *rest = after;
    take(rest, len)
}

pub(crate) fn parse(blob: &[u8]) -> Result<ParsedBlob<'_>, StateError> {
    let mut rest = blob;
    // A prefix of the magic is a truncated blob; anything else is not ours.
    let n = MAGIC.len().min(rest.len());
    if rest[..n] != MAGIC[..n] {
        return Err(StateError::BadMagic);
    }
    take(&mut rest, MAGIC.len())?;
    let mut version = [0u8; 2];
    version.copy_from_slice(take(&mut rest, 2)?);
    let version = u16::from_be_bytes(version);
    if version != FORMAT_VERSION {
        return Err(StateError::UnknownVersion(version));
    }
    let kind = RecordKind::from_code(take(&mut rest, 1)?[0])?;
    let sealing_key_id = take_vl(&mut rest)?.to_vec();
    let group_id = take_vl(&mut rest)?.to_vec();
    let mut epoch = [0u8; 8];
    epoch.copy_from_slice(take(&mut rest, 8)?);
    let mut body_len = [0u8; 4];
    body_len.copy_from_slice(take(&mut rest, 4)?);
    let body_len = u32::from_be_bytes(body_len) as usize;
    let aad = &blob[..blob.len() - rest.len()];
    if rest.len() < body_len {
        return Err(StateError::Truncated);
    }
    if rest.len() > body_len {
        return Err(StateError::TrailingData(rest.len() - body_len));
    }
    Ok(ParsedBlob {
        header: SealedHeader {
            version,
            kind,
            sealing_key_id,
            group_id,
            epoch: u64::from_be_bytes(epoch),
        },
        aad,
        body: rest,
    })
}

/// Seals `plaintext` under `sealer` with a header of `kind` for `group_id`
/// and `epoch`.
pub(crate) fn seal(
    sealer: &dyn StateSealer,
    kind: RecordKind,
    group_id: &[u8],
    epoch: u64,
    plaintext: &[u8],
) -> Result<Vec<u8>, StateError> {
    let header = SealedHeader {
        version: FORMAT_VERSION,
        kind,
        sealing_key_id: sealer.key_id().to_vec(),
        group_id: group_id.to_vec(),
        epoch,
    };
    let body_len =
        hsmls_custody::seal::SEAL_NONCE_LEN + plaintext.len() + hsmls_custody::seal::SEAL_TAG_LEN;
    let mut blob = header.encode(body_len)?;
    let body = sealer.seal(&blob, plaintext).map_err(StateError::Custody)?;
    if body.len() != body_len {
        return Err(StateError::Custody(CustodyError::SealedDataTooLong {
            len: body.len(),
            max: body_len,
        }));
    }
    blob.extend_from_slice(&body);
    Ok(blob)
}

/// Checks a blob's header against what the caller expects (kind, sealing
/// key, `id`: the group id or KeyPackageRef) and opens its body. Returns
/// the header and the plaintext.
pub(crate) fn open(
    sealer: &dyn StateSealer,
    blob: &[u8],
    kind: RecordKind,
    id: &[u8],
) -> Result<(SealedHeader, Zeroizing<Vec<u8>>), StateError> {
    let parsed = parse(blob)?;
    let header = parsed.header;
    if header.kind != kind {
        return Err(StateError::WrongRecordKind {
            expected: kind,
            found: header.kind,
        });
    }
    if header.sealing_key_id != sealer.key_id() {
        return Err(StateError::SealedByAnotherKey {
            expected: hex(sealer.key_id()),
            found: hex(&header.sealing_key_id),
        });
    }
    if header.group_id != id {
        let (expected, found) = (hex(id), hex(&header.group_id));
        return Err(match kind {
            RecordKind::KeyPackageBundle => StateError::WrongKeyPackage { expected, found },
            _ => StateError::WrongGroup { expected, found },
        });
    }
    let plaintext = sealer.open(parsed.aad, parsed.body).map_err(|e| match e {
        CustodyError::SealedDataRejected => StateError::Altered,
        CustodyError::SealedDataTruncated { .. } => StateError::Truncated,
        other => StateError::Custody(other),
    })?;
    Ok((header, plaintext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsmls_custody::SoftwareSealer;

    #[test]
    fn header_round_trip_and_checks() {
        let sealer = SoftwareSealer::generate();
        let blob = seal(&sealer, RecordKind::EpochRecord, b"group", 7, b"secret").unwrap();
        let (header, body) = SealedHeader::parse(&blob).unwrap();
        assert_eq!(header.kind, RecordKind::EpochRecord);
        assert_eq!(header.group_id, b"group");
        assert_eq!(header.epoch, 7);
        assert_eq!(header.sealing_key_id, sealer.key_id());
        assert_eq!(body.len(), 12 + 6 + 16);
        let (_, plaintext) = open(&sealer, &blob, RecordKind::EpochRecord, b"group").unwrap();
        assert_eq!(&plaintext[..], b"secret");
        assert!(matches!(
            open(&sealer, &blob, RecordKind::GroupState, b"group"),
            Err(StateError::WrongRecordKind {
                expected: RecordKind::GroupState,
                found: RecordKind::EpochRecord
            })
        ));
        assert!(matches!(
            open(&sealer, &blob, RecordKind::EpochRecord, b"other"),
            Err(StateError::WrongGroup { .. })
        ));
        assert!(matches!(
            open(
                &SoftwareSealer::generate(),
                &blob,
                RecordKind::EpochRecord,
                b"group"
            ),
            Err(StateError::SealedByAnotherKey { .. })
        ));
        assert!(matches!(parse(b""), Err(StateError::Truncated)));
        assert!(matches!(parse(b"HSMLS"), Err(StateError::Truncated)));
        assert!(matches!(parse(b"NOTHSMLS"), Err(StateError::BadMagic)));
        let mut v2 = blob.clone();
        v2[9] = 1;
        assert!(matches!(parse(&v2), Err(StateError::UnknownVersion(1))));
        let mut longer = blob.clone();
        longer.extend_from_slice(&[0, 0]);
        assert!(matches!(parse(&longer), Err(StateError::TrailingData(2))));
    }
}

//! HPKE (RFC 9180), base mode, single-shot, built on a suite's primitives.
//!
//! The recipient side runs its Diffie-Hellman step through
//! [`HpkeRecipient`], so the private key may sit in a token. Only what MLS
//! uses is here: `SealBase`/`OpenBase` with sequence number 0 (RFC 9420
//! §5.1.3) and the secret export of the base-mode context (RFC 9420 §12.4.3.2,
//! external init).

use zeroize::Zeroizing;

use crate::encoding::u16_be;
use crate::{CipherSuiteProvider, CryptoError, HpkeRecipient, Secret};

const HPKE_V1: &[u8] = b"HPKE-v1";
const MODE_BASE: u8 = 0x00;

/// `suite_id = "KEM" ‖ I2OSP(kem_id, 2)` (RFC 9180 §4.1).
pub fn kem_suite_id<S: CipherSuiteProvider + ?Sized>(cs: &S) -> [u8; 5] {
    let k = cs.hpke_suite().kem_id.to_be_bytes();
    [b'K', b'E', b'M', k[0], k[1]]
}

/// `suite_id = "HPKE" ‖ I2OSP(kem_id, 2) ‖ I2OSP(kdf_id, 2) ‖
/// I2OSP(aead_id, 2)` (RFC 9180 §5.1).
pub fn hpke_suite_id<S: CipherSuiteProvider + ?Sized>(cs: &S) -> [u8; 10] {
    let ids = cs.hpke_suite();
    let (k, d, a) = (
        ids.kem_id.to_be_bytes(),
        ids.kdf_id.to_be_bytes(),
        ids.aead_id.to_be_bytes(),
    );
    [b'H', b'P', b'K', b'E', k[0], k[1], d[0], d[1], a[0], a[1]]
}

/// `LabeledExtract(salt, label, ikm)` (RFC 9180 §4).
pub fn labeled_extract<S: CipherSuiteProvider + ?Sized>(
    cs: &S,
    suite_id: &[u8],
    salt: &[u8],
    label: &[u8],
    ikm: &[u8],
) -> Secret {
    cs.kdf_extract(salt, &[HPKE_V1, suite_id, label, ikm])
}

/// `LabeledExpand(prk, label, info, L)` into `out` (`L = out.len()`),
/// with `info` given in parts (RFC 9180 §4).
pub fn labeled_expand<S: CipherSuiteProvider + ?Sized>(
    cs: &S,
    suite_id: &[u8],
    prk: &[u8],
    label: &[u8],
    info: &[&[u8]],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    let l = u16_be(out.len())?;
    let mut parts: [&[u8]; 8] = [&l, HPKE_V1, suite_id, label, &[], &[], &[], &[]];
    if info.len() > parts.len() - 4 {
        return Err(CryptoError::EncodingTooLong(info.len()));
    }
    for (slot, part) in parts[4..].iter_mut().zip(info) {
        *slot = part;
    }
    cs.kdf_expand(prk, &parts[..4 + info.len()], out)
}

/// DHKEM's `ExtractAndExpand(dh, kem_context)` (RFC 9180 §4.1), with
/// `kem_context = enc ‖ pkRm`.
pub fn extract_and_expand<S: CipherSuiteProvider + ?Sized>(
    cs: &S,
    dh: &[u8],
    enc: &[u8],
    pk_rm: &[u8],
) -> Result<Secret, CryptoError> {
    let suite_id = kem_suite_id(cs);
    let eae_prk = labeled_extract(cs, &suite_id, &[], b"eae_prk", dh);
    // Nsecret equals the KDF's Nh for every DHKEM MLS uses.
    let mut shared_secret = Secret::zero(cs.hash_len());
    labeled_expand(
        cs,
        &suite_id,
        eae_prk.as_bytes(),
        b"shared_secret",
        &[enc, pk_rm],
        shared_secret.as_mut_bytes(),
    )?;
    Ok(shared_secret)
}

/// The base-mode encryption context after `KeySchedule` (RFC 9180 §5.1).
struct Context {
    key: Secret,
    base_nonce: Secret,
    exporter_secret: Secret,
}

/// The `info`-dependent half of `KeySchedule` in base mode (RFC 9180
/// §5.1): `psk_id_hash` (of the empty `psk_id`) and `info_hash`. It does
/// not depend on the recipient, so a sender that seals one `info` to many
/// recipients (the GroupSecrets of a Welcome, whose `info` carries the
/// whole `encrypted_group_info`, RFC 9420 §12.4.3.1) hashes `info` once.
#[derive(Clone)]
pub struct InfoHash {
    psk_id_hash: Secret,
    info_hash: Secret,
}

impl std::fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfoHash").finish_non_exhaustive()
    }
}

impl InfoHash {
    /// Hashes `info` (with the empty `psk_id` of base mode).
    pub fn new<S: CipherSuiteProvider + ?Sized>(cs: &S, info: &[u8]) -> Self {
        Self::from_parts(cs, &[info])
    }

    /// Hashes `info = info_parts[0] ‖ info_parts[1] ‖ …` without building it.
    pub fn from_parts<S: CipherSuiteProvider + ?Sized>(cs: &S, info_parts: &[&[u8]]) -> Self {
        let suite_id = hpke_suite_id(cs);
        let psk_id_hash = labeled_extract(cs, &suite_id, &[], b"psk_id_hash", &[]);
        let mut ikm: Vec<&[u8]> = Vec::with_capacity(3 + info_parts.len());
        ikm.extend_from_slice(&[HPKE_V1, &suite_id[..], b"info_hash"]);
        ikm.extend_from_slice(info_parts);
        let info_hash = cs.kdf_extract(&[], &ikm);
        InfoHash {
            psk_id_hash,
            info_hash,
        }
    }
}

/// `KeySchedule(mode_base, shared_secret, info, "", "")` (RFC 9180 §5.1).
fn key_schedule<S: CipherSuiteProvider + ?Sized>(
    cs: &S,
    shared_secret: &[u8],
    info: &[u8],
) -> Result<Context, CryptoError> {
    key_schedule_hashed(cs, shared_secret, &InfoHash::new(cs, info))
}

/// `KeySchedule` with `info` already hashed.
fn key_schedule_hashed<S: CipherSuiteProvider + ?Sized>(
    cs: &S,
    shared_secret: &[u8],
    hashed: &InfoHash,
) -> Result<Context, CryptoError> {
    let suite_id = hpke_suite_id(cs);
    let ksc: [&[u8]; 3] = [
        &[MODE_BASE],
        hashed.psk_id_hash.as_bytes(),
        hashed.info_hash.as_bytes(),
    ];
    let secret = labeled_extract(cs, &suite_id, shared_secret, b"secret", &[]);
    let mut key = Secret::zero(cs.aead_key_len());
    labeled_expand(
        cs,
        &suite_id,
        secret.as_bytes(),
        b"key",
        &ksc,
        key.as_mut_bytes(),
    )?;
    let mut base_nonce = Secret::zero(cs.aead_nonce_len());
    labeled_expand(
        cs,
        &suite_id,
        secret.as_bytes(),
        b"base_nonce",
        &ksc,
        base_nonce.as_mut_bytes(),
    )?;
    let mut exporter_secret = Secret::zero(cs.hash_len());
    labeled_expand(
        cs,
        &suite_id,
        secret.as_bytes(),
        b"exp",
        &ksc,
        exporter_secret.as_mut_bytes(),
    )?;
    Ok(Context {
        key,
        base_nonce,
        exporter_secret,
    })
}

impl Context {
    /// `Context.Export(exporter_context, L)` (RFC 9180 §5.3).
    fn export<S: CipherSuiteProvider + ?Sized>(
        &self,
        cs: &S,
        exporter_context: &[u8],
        length: usize,
    ) -> Result<Secret, CryptoError> {
        let suite_id = hpke_suite_id(cs);
        let mut out = Secret::zero(length);
        labeled_expand(
            cs,
            &suite_id,
            self.exporter_secret.as_bytes(),
            b"sec",
            &[exporter_context],
            out.as_mut_bytes(),
        )?;
        Ok(out)
    }
}

/// Single-shot `SealBase(pkR, info, aad, pt)` (RFC 9180 §6.1): returns
/// `(enc, ct)`. `ikm_e` fixes the ephemeral key (tests); `None` draws it.
pub fn seal_base<S: CipherSuiteProvider + ?Sized>(
    cs: &S,
    pk_r: &[u8],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    ikm_e: Option<&[u8]>,
) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
    seal_base_hashed(cs, pk_r, &InfoHash::new(cs, info), aad, plaintext, ikm_e)
}

/// [`seal_base`] with `info` hashed beforehand ([`InfoHash`]): the same
/// output as `seal_base` with that `info`.
pub fn seal_base_hashed<S: CipherSuiteProvider + ?Sized>(
    cs: &S,
    pk_r: &[u8],
    info: &InfoHash,
    aad: &[u8],
    plaintext: &[u8],
    ikm_e: Option<&[u8]>,
) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
    let (shared_secret, enc) = cs.kem_encap(pk_r, ikm_e)?;
    let ctx = key_schedule_hashed(cs, shared_secret.as_bytes(), info)?;
    let mut buffer = Vec::with_capacity(plaintext.len() + 16);
    buffer.extend_from_slice(plaintext);
    // Sequence number 0: the nonce is base_nonce itself.
    cs.aead_seal_in_place(
        ctx.key.as_bytes(),
        ctx.base_nonce.as_bytes(),
        aad,
        &mut buffer,
    )?;
    Ok((enc, buffer))
}

/// Single-shot `OpenBase(enc, skR, info, aad, ct)` (RFC 9180 §6.1). The
/// plaintext is zeroized on drop: in MLS it is always secret (path secrets,
/// GroupSecrets).
pub fn open_base<S: CipherSuiteProvider + ?Sized>(
    cs: &S,
    recipient: &HpkeRecipient<'_>,
    enc: &[u8],
    info: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    open_base_hashed(
        cs,
        recipient,
        enc,
        &InfoHash::new(cs, info),
        aad,
        ciphertext,
    )
}

/// [`open_base`] with `info` hashed beforehand ([`InfoHash`]).
pub fn open_base_hashed<S: CipherSuiteProvider + ?Sized>(
    cs: &S,
    recipient: &HpkeRecipient<'_>,
    enc: &[u8],
    info: &InfoHash,
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let shared_secret = cs.kem_decap(enc, recipient)?;
    let ctx = key_schedule_hashed(cs, shared_secret.as_bytes(), info)?;
    let mut buffer = Zeroizing::new(ciphertext.to_vec());
    cs.aead_open_in_place(
        ctx.key.as_bytes(),
        ctx.base_nonce.as_bytes(),
        aad,
        &mut buffer,
    )?;
    Ok(buffer)
}

/// `SetupBaseS(pkR, info)` followed by `Export(exporter_context, L)`
/// (RFC 9180 §5.1.1, §5.3): returns `(enc, exported secret)`. MLS uses it
/// for the external init secret (RFC 9420 §8.3, §12.1.4).
pub fn export_base_sender<S: CipherSuiteProvider + ?Sized>(
    cs: &S,
    pk_r: &[u8],
    info: &[u8],
    exporter_context: &[u8],
    length: usize,
    ikm_e: Option<&[u8]>,
) -> Result<(Vec<u8>, Secret), CryptoError> {
    let (shared_secret, enc) = cs.kem_encap(pk_r, ikm_e)?;
    let ctx = key_schedule(cs, shared_secret.as_bytes(), info)?;
    Ok((enc, ctx.export(cs, exporter_context, length)?))
}

/// `SetupBaseR(enc, skR, info)` followed by `Export(exporter_context, L)`
/// (RFC 9180 §5.1.1, §5.3).
pub fn export_base_receiver<S: CipherSuiteProvider + ?Sized>(
    cs: &S,
    recipient: &HpkeRecipient<'_>,
    enc: &[u8],
    info: &[u8],
    exporter_context: &[u8],
    length: usize,
) -> Result<Secret, CryptoError> {
    let shared_secret = cs.kem_decap(enc, recipient)?;
    let ctx = key_schedule(cs, shared_secret.as_bytes(), info)?;
    ctx.export(cs, exporter_context, length)
}

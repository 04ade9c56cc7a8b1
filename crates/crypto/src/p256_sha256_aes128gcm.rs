//! Cipher suite 0x0002, MLS_128_DHKEMP256_AES128GCM_SHA256_P256 (RFC 9420
//! §17.1): SHA-256, HKDF-SHA256, HMAC-SHA256, AES-128-GCM,
//! DHKEM(P-256, HKDF-SHA256) and ECDSA P-256 with SHA-256 (DER signatures).

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use hkdf::{Hkdf, HkdfExtract};
use hmac::{Hmac, Mac};
use hsmls_custody::{KemAlgorithm, KeyCustody, KeyRef, SignatureScheme};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::elliptic_curve::subtle::{ConditionallySelectable, ConstantTimeEq};
use p256::{NonZeroScalar, ProjectivePoint, SecretKey};
use rand_core::OsRng;
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::hpke::{extract_and_expand, kem_suite_id, labeled_expand, labeled_extract};
use crate::{
    CipherSuite, CipherSuiteProvider, CryptoError, Digest, HpkePrivateKey, HpkePublicKey,
    HpkeRecipient, HpkeSuite, PublicKeyFault, Secret, SizedValue,
};

/// Nh for SHA-256.
const NH: usize = 32;
/// AES-128-GCM key length.
const NK: usize = 16;
/// AES-GCM nonce length.
const NN: usize = 12;
/// Uncompressed SEC1 P-256 point length (`Npk`, `Nenc`).
const NPK: usize = 65;
/// P-256 scalar length (`Nsk`).
const NSK: usize = 32;
/// From this total length on, a signed message given in several pieces is
/// verified from its SHA-256 (p256's prehash verification, about 0.2 ms
/// more than ring's) rather than joined for ring: joining copies it, about
/// 0.1 ms per MB, and a commit to 100,000 members is 11 MB.
const PREHASH_VERIFY_FROM: usize = 2 * 1024 * 1024;

/// The suite's single instance, handed out by [`CipherSuite::provider`].
pub(crate) static SUITE: P256Sha256Aes128Gcm = P256Sha256Aes128Gcm;

/// Cipher suite 0x0002.
#[derive(Clone, Copy, Debug, Default)]
pub struct P256Sha256Aes128Gcm;

/// Parses an uncompressed SEC1 P-256 point, rejecting anything else
/// (compressed points, the identity, points off the curve).
fn parse_point(bytes: &[u8]) -> Result<p256::PublicKey, CryptoError> {
    if bytes.len() != NPK || bytes[0] != 0x04 {
        return Err(CryptoError::InvalidPublicKey(PublicKeyFault::Encoding));
    }
    p256::PublicKey::from_sec1_bytes(bytes)
        .map_err(|_| CryptoError::InvalidPublicKey(PublicKeyFault::NotOnCurve))
}

/// Fixed-base table for the generator `G`: row `i`, entry `j` holds
/// `j · 16^i · G` (entry 0 is the identity), one row per 4-bit
/// window of a scalar.
struct GeneratorTable(Vec<[ProjectivePoint; 16]>);

/// Built once per process with 1,024 point additions (about 1 ms).
fn generator_table() -> &'static GeneratorTable {
    static TABLE: std::sync::OnceLock<GeneratorTable> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut rows = Vec::with_capacity(64);
        let mut base = ProjectivePoint::GENERATOR;
        for _ in 0..64 {
            let mut row = [ProjectivePoint::IDENTITY; 16];
            let mut multiple = ProjectivePoint::IDENTITY;
            for entry in row.iter_mut() {
                *entry = multiple;
                multiple += base;
            }
            // `multiple` is now 16 · base.
            base = multiple;
            rows.push(row);
        }
        GeneratorTable(rows)
    })
}

/// `k · G` in constant time: one table entry per 4-bit window of `k`,
/// selected by scanning the whole row, and 64 complete additions
/// (no doublings). p256 0.13 multiplies by the generator with the generic
/// variable-base ladder (256 doublings), which is several times slower.
fn mul_by_generator(k: &NonZeroScalar) -> ProjectivePoint {
    let bytes = Zeroizing::new(k.to_bytes());
    let table = generator_table();
    let mut acc = ProjectivePoint::IDENTITY;
    for (i, row) in table.0.iter().enumerate() {
        // Window i (little-endian nibbles) of the big-endian encoding.
        let byte = bytes[31 - i / 2];
        let nibble = if i % 2 == 0 { byte & 0x0f } else { byte >> 4 };
        let mut entry = ProjectivePoint::IDENTITY;
        for (j, candidate) in (0u8..).zip(row.iter()) {
            entry.conditional_assign(candidate, j.ct_eq(&nibble));
        }
        acc += entry;
    }
    acc
}

/// `pk(sk)` encoded as an uncompressed SEC1 point (`SerializePublicKey`).
fn public_key_bytes(sk: &SecretKey) -> Vec<u8> {
    mul_by_generator(&sk.to_nonzero_scalar())
        .to_affine()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec()
}

fn key_pair_from_secret(sk: &SecretKey) -> HpkePrivateKey {
    let private = Secret::from_slice(&sk.to_bytes());
    let public = HpkePublicKey::from_vec(public_key_bytes(sk));
    HpkePrivateKey::from_parts(private, public)
}

fn secret_key(bytes: &[u8]) -> Result<SecretKey, CryptoError> {
    if bytes.len() != NSK {
        return Err(CryptoError::InvalidPrivateKey);
    }
    SecretKey::from_slice(bytes).map_err(|_| CryptoError::InvalidPrivateKey)
}

/// `DH(sk, pk)`: the x-coordinate of the shared point (RFC 9180 §4.1 for
/// the NIST curves).
fn dh(sk: &SecretKey, pk: &p256::PublicKey) -> Zeroizing<[u8; 32]> {
    let shared = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(shared.raw_secret_bytes());
    out
}

fn aead(
    key: &[u8],
    nonce: &[u8],
) -> Result<(Aes128Gcm, Nonce<aes_gcm::aead::consts::U12>), CryptoError> {
    if key.len() != NK {
        return Err(CryptoError::InvalidLength {
            what: SizedValue::AeadKey,
            expected: NK,
            actual: key.len(),
        });
    }
    let cipher = Aes128Gcm::new_from_slice(key).map_err(|_| CryptoError::InvalidLength {
        what: SizedValue::AeadKey,
        expected: NK,
        actual: key.len(),
    })?;
    let nonce: [u8; NN] = nonce.try_into().map_err(|_| CryptoError::InvalidLength {
        what: SizedValue::AeadNonce,
        expected: NN,
        actual: nonce.len(),
    })?;
    Ok((cipher, Nonce::from(nonce)))
}

impl CipherSuiteProvider for P256Sha256Aes128Gcm {
    fn cipher_suite(&self) -> CipherSuite {
        CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256
    }

    fn hash_len(&self) -> usize {
        NH
    }

    fn aead_key_len(&self) -> usize {
        NK
    }

    fn aead_nonce_len(&self) -> usize {
        NN
    }

    fn hpke_suite(&self) -> HpkeSuite {
        HpkeSuite {
            kem_id: KemAlgorithm::DhKemP256HkdfSha256.kem_id(),
            kdf_id: 0x0001,
            aead_id: 0x0001,
        }
    }

    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::EcdsaSecp256r1Sha256
    }

    fn kem(&self) -> KemAlgorithm {
        KemAlgorithm::DhKemP256HkdfSha256
    }

    fn hash(&self, parts: &[&[u8]]) -> Digest {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Digest::from_slice(&h.finalize())
    }

    fn mac(&self, key: &[u8], parts: &[&[u8]]) -> Digest {
        // HMAC accepts keys of any length.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        for p in parts {
            m.update(p);
        }
        Digest::from_slice(&m.finalize().into_bytes())
    }

    fn kdf_extract(&self, salt: &[u8], ikm: &[&[u8]]) -> Secret {
        let mut ext = HkdfExtract::<Sha256>::new(Some(salt));
        for p in ikm {
            ext.input_ikm(p);
        }
        let (prk, _) = ext.finalize();
        let mut prk: [u8; NH] = prk.into();
        let out = Secret::from_slice(&prk);
        prk.zeroize();
        out
    }

    fn kdf_expand(&self, prk: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
        let hk = Hkdf::<Sha256>::from_prk(prk).map_err(|_| CryptoError::InvalidLength {
            what: SizedValue::KdfPseudorandomKey,
            expected: NH,
            actual: prk.len(),
        })?;
        hk.expand_multi_info(info, out)
            .map_err(|_| CryptoError::KdfOutputTooLong(out.len()))
    }

    fn aead_seal_in_place(
        &self,
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        buffer: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let (cipher, nonce) = aead(key, nonce)?;
        cipher
            .encrypt_in_place(&nonce, aad, buffer)
            .map_err(|_| CryptoError::AeadSeal)
    }

    fn aead_open_in_place(
        &self,
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        buffer: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let (cipher, nonce) = aead(key, nonce)?;
        cipher
            .decrypt_in_place(&nonce, aad, buffer)
            .map_err(|_| CryptoError::AeadOpen)
    }

    fn kem_generate(&self) -> Result<HpkePrivateKey, CryptoError> {
        Ok(key_pair_from_secret(&SecretKey::random(&mut OsRng)))
    }

    fn kem_derive_key_pair(&self, ikm: &[u8]) -> Result<HpkePrivateKey, CryptoError> {
        // RFC 9180 §7.1.3, P-256: rejection sampling with bitmask 0xff.
        let suite_id = kem_suite_id(self);
        let dkp_prk = labeled_extract(self, &suite_id, &[], b"dkp_prk", ikm);
        let mut bytes = Zeroizing::new([0u8; NSK]);
        for counter in 0..=255u8 {
            labeled_expand(
                self,
                &suite_id,
                dkp_prk.as_bytes(),
                b"candidate",
                &[&[counter]],
                bytes.as_mut(),
            )?;
            bytes[0] &= 0xff;
            // Rejects zero and values >= the group order.
            if let Ok(sk) = SecretKey::from_slice(bytes.as_ref()) {
                return Ok(key_pair_from_secret(&sk));
            }
        }
        Err(CryptoError::DeriveKeyPair)
    }

    fn kem_encap(
        &self,
        pk_r: &[u8],
        ikm_e: Option<&[u8]>,
    ) -> Result<(Secret, Vec<u8>), CryptoError> {
        let peer = parse_point(pk_r)?;
        let (sk_e, enc) = match ikm_e {
            Some(ikm) => {
                let pair = self.kem_derive_key_pair(ikm)?;
                let sk_e = secret_key(pair.private_bytes().as_bytes())?;
                (sk_e, pair.public_key().as_bytes().to_vec())
            }
            None => {
                let sk_e = SecretKey::random(&mut OsRng);
                let enc = public_key_bytes(&sk_e);
                (sk_e, enc)
            }
        };
        let dh = dh(&sk_e, &peer);
        let shared_secret = extract_and_expand(self, dh.as_slice(), &enc, pk_r)?;
        Ok((shared_secret, enc))
    }

    fn kem_decap(&self, enc: &[u8], recipient: &HpkeRecipient<'_>) -> Result<Secret, CryptoError> {
        let pk_e = parse_point(enc)?;
        let (in_custody, in_software);
        let dh: &[u8] = match recipient {
            HpkeRecipient::Custody { custody, key } => {
                self.check_key_spec(key, self.hpke_key_spec())?;
                in_custody = custody.dh(key, enc)?;
                in_custody.as_bytes()
            }
            HpkeRecipient::Software(k) => {
                in_software = dh(&secret_key(k.private_bytes().as_bytes())?, &pk_e);
                in_software.as_slice()
            }
        };
        extract_and_expand(self, dh, enc, recipient.public_key())
    }

    fn validate_hpke_public_key(&self, public_key: &[u8]) -> Result<(), CryptoError> {
        parse_point(public_key).map(drop)
    }

    fn sign(
        &self,
        custody: &dyn KeyCustody,
        key: &KeyRef,
        message: &[&[u8]],
    ) -> Result<Vec<u8>, CryptoError> {
        self.check_key_spec(key, self.signature_key_spec())?;
        // The whole-message signer takes one buffer: the parts are joined
        // (zeroized afterwards: a PrivateMessage's signed content holds the
        // plaintext).
        let mut joined = Zeroizing::new(Vec::with_capacity(message.iter().map(|p| p.len()).sum()));
        for p in message {
            joined.extend_from_slice(p);
        }
        Ok(custody.sign(key, &joined)?)
    }

    fn verify(
        &self,
        public_key: &[u8],
        message: &[&[u8]],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        if public_key.len() != NPK {
            return Err(CryptoError::InvalidPublicKey(PublicKeyFault::Encoding));
        }
        // Parsed here for the typed errors (a point off the curve, a
        // signature that is not DER with scalars in range); the check
        // itself is ring's (assembly, about 5x faster than p256 0.13's
        // generic ladder: a group of N verifies 2N signatures to be
        // created and N to be joined). ring gets the canonical r ‖ s.
        // A large message in pieces is checked by p256 from its digest.
        let key = VerifyingKey::from_sec1_bytes(public_key)
            .map_err(|_| CryptoError::InvalidPublicKey(PublicKeyFault::NotOnCurve))?;
        let sig = Signature::from_der(signature).map_err(|_| CryptoError::MalformedSignature)?;
        let joined;
        let message: &[u8] = match message {
            [one] => one,
            parts if parts.iter().map(|p| p.len()).sum::<usize>() >= PREHASH_VERIFY_FROM => {
                // A message in pieces (a received commit's
                // FramedContentTBS is the received bytes and the encoded
                // GroupContext) that ring would need in one buffer:
                // hashed where it lies instead of copied.
                let mut h = Sha256::new();
                for p in parts {
                    h.update(p);
                }
                return key
                    .verify_prehash(&h.finalize(), &sig)
                    .map_err(|_| CryptoError::InvalidSignature);
            }
            parts => {
                joined = parts.concat();
                &joined
            }
        };
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            public_key,
        )
        .verify(message, &sig.to_bytes())
        .map_err(|_| CryptoError::InvalidSignature)
    }

    fn validate_signature_public_key(&self, public_key: &[u8]) -> Result<(), CryptoError> {
        parse_point(public_key).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use p256::elliptic_curve::Field;
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::{NonZeroScalar, ProjectivePoint, Scalar};
    use rand_core::OsRng;

    use super::mul_by_generator;

    fn check(k: Scalar) {
        let Some(nz) = Option::<NonZeroScalar>::from(NonZeroScalar::new(k)) else {
            panic!("test scalar must be non-zero");
        };
        let expected = (ProjectivePoint::GENERATOR * k).to_affine();
        let got = mul_by_generator(&nz).to_affine();
        assert_eq!(
            got.to_encoded_point(false),
            expected.to_encoded_point(false),
            "k = {:?}",
            k.to_bytes()
        );
    }

    /// The fixed-base table agrees with p256's generic multiplication on
    /// edge scalars (single windows, all-ones nibbles, n − 1) and random ones.
    #[test]
    fn mul_by_generator_matches_generic_multiplication() {
        for small in [1u64, 2, 15, 16, 17, 255, 256, 0xffff_ffff_ffff_ffff] {
            check(Scalar::from(small));
        }
        check(-Scalar::ONE);
        check(-Scalar::from(16u64));
        // 16^i for every window i: exercises each row's entry 1.
        let mut k = Scalar::ONE;
        for _ in 0..64 {
            check(k);
            check(k * Scalar::from(15u64));
            k *= Scalar::from(16u64);
        }
        for _ in 0..200 {
            check(Scalar::random(&mut OsRng));
        }
    }
}

//! Cipher suite 0x0002, MLS_128_DHKEMP256_AES128GCM_SHA256_P256 (RFC 9420
//! §17.1): SHA-256, HKDF-SHA256, HMAC-SHA256, AES-128-GCM,
//! DHKEM(P-256, HKDF-SHA256) and ECDSA P-256 with SHA-256 (DER signatures).

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use hkdf::{Hkdf, HkdfExtract};
use hmac::{Hmac, Mac};
use hsmls_custody::{KeyCustody, KeyRef, validate_p256_point};
use p256::SecretKey;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::OsRng;
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::hpke::{extract_and_expand, kem_suite_id, labeled_expand, labeled_extract};
use crate::{
    CipherSuite, CipherSuiteProvider, CryptoError, Digest, HpkePrivateKey, HpkePublicKey,
    HpkeRecipient, HpkeSuite, Secret,
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

/// The suite's single instance, handed out by [`CipherSuite::provider`].
pub(crate) static SUITE: P256Sha256Aes128Gcm = P256Sha256Aes128Gcm;

/// Cipher suite 0x0002.
#[derive(Clone, Copy, Debug, Default)]
pub struct P256Sha256Aes128Gcm;

/// Parses an uncompressed SEC1 P-256 point, rejecting anything else.
fn parse_point(bytes: &[u8]) -> Result<p256::PublicKey, CryptoError> {
    validate_p256_point(bytes).map_err(|_| {
        CryptoError::InvalidPublicKey("not an uncompressed SEC1 P-256 point on the curve")
    })
}

fn serialize_point(pk: &p256::PublicKey) -> Vec<u8> {
    pk.to_encoded_point(false).as_bytes().to_vec()
}

fn key_pair_from_secret(sk: &SecretKey) -> HpkePrivateKey {
    let private = Secret::from_slice(&sk.to_bytes());
    let public = HpkePublicKey::from_vec(serialize_point(&sk.public_key()));
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
            what: "AEAD key",
            expected: NK,
            actual: key.len(),
        });
    }
    let cipher = Aes128Gcm::new_from_slice(key).map_err(|_| CryptoError::InvalidLength {
        what: "AEAD key",
        expected: NK,
        actual: key.len(),
    })?;
    let nonce: [u8; NN] = nonce.try_into().map_err(|_| CryptoError::InvalidLength {
        what: "AEAD nonce",
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
            kem_id: 0x0010,
            kdf_id: 0x0001,
            aead_id: 0x0001,
        }
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
            what: "KDF pseudorandom key",
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
        let sk_e = match ikm_e {
            Some(ikm) => secret_key(self.kem_derive_key_pair(ikm)?.private_bytes().as_bytes())?,
            None => SecretKey::random(&mut OsRng),
        };
        let enc = serialize_point(&sk_e.public_key());
        let dh = dh(&sk_e, &peer);
        let shared_secret = extract_and_expand(self, dh.as_slice(), &enc, pk_r)?;
        Ok((shared_secret, enc))
    }

    fn kem_decap(&self, enc: &[u8], recipient: &HpkeRecipient<'_>) -> Result<Secret, CryptoError> {
        let pk_e = parse_point(enc)?;
        let dh = match recipient {
            HpkeRecipient::Custody { custody, key } => custody.dh(key, enc)?,
            HpkeRecipient::Software(k) => dh(&secret_key(k.private_bytes().as_bytes())?, &pk_e),
        };
        extract_and_expand(self, dh.as_slice(), enc, recipient.public_key())
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
        let mut h = Sha256::new();
        for p in message {
            h.update(p);
        }
        let digest: [u8; 32] = h.finalize().into();
        Ok(custody.sign_digest(key, &digest)?)
    }

    fn verify(
        &self,
        public_key: &[u8],
        message: &[&[u8]],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        if public_key.len() != NPK {
            return Err(CryptoError::InvalidPublicKey(
                "not an uncompressed SEC1 P-256 point (65 bytes)",
            ));
        }
        let vk = VerifyingKey::from_sec1_bytes(public_key)
            .map_err(|_| CryptoError::InvalidPublicKey("not a P-256 point on the curve"))?;
        let sig = Signature::from_der(signature).map_err(|_| CryptoError::MalformedSignature)?;
        let mut h = Sha256::new();
        for p in message {
            h.update(p);
        }
        vk.verify_prehash(&h.finalize(), &sig)
            .map_err(|_| CryptoError::InvalidSignature)
    }

    fn validate_signature_public_key(&self, public_key: &[u8]) -> Result<(), CryptoError> {
        parse_point(public_key).map(drop)
    }
}

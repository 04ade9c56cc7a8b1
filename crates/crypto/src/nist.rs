//! The NIST-curve suites with one generic implementation over the
//! RustCrypto elliptic-curve traits, the curve, hash and AEAD as
//! parameters (RFC 9420 §17.1):
//!
//! * 0x0007 MLS_256_DHKEMP384_AES256GCM_SHA384_P384: DHKEM(P-384,
//!   HKDF-SHA384), AES-256-GCM, SHA-384, ECDSA P-384 with SHA-384;
//! * 0x0005 MLS_256_DHKEMP521_AES256GCM_SHA512_P521: DHKEM(P-521,
//!   HKDF-SHA512), AES-256-GCM, SHA-512, ECDSA P-521 with SHA-512.
//!
//! Public keys are uncompressed SEC1 points, signatures ASN.1 DER
//! (RFC 9420 §5.1.1, §5.1.2). Suite 0x0002 (P-256) keeps its own module for
//! its fixed-base multiplication table.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Add;

use aes_gcm::Aes256Gcm;
use ecdsa::der::{MaxOverhead, MaxSize};
use ecdsa::hazmat::VerifyPrimitive;
use ecdsa::signature::hazmat::PrehashVerifier;
use ecdsa::{SignatureSize, VerifyingKey};
use hsmls_custody::{KemAlgorithm, KeyCustody, KeyRef, SignatureScheme};
use p256::elliptic_curve::generic_array::typenum::Unsigned;
use p256::elliptic_curve::sec1::{FromEncodedPoint, ModulusSize, ToEncodedPoint};
use p256::elliptic_curve::{
    AffinePoint, CurveArithmetic, FieldBytesSize, PrimeCurve, PublicKey, SecretKey,
};
use rand_core::OsRng;
use sha2::{Sha384, Sha512};
use zeroize::Zeroizing;

use crate::hpke::{extract_and_expand, kem_suite_id, labeled_expand, labeled_extract};
use crate::primitives::{self, SuiteAead, SuiteHash};
use crate::{
    CipherSuite, CipherSuiteProvider, CryptoError, Digest, HpkePrivateKey, HpkePublicKey,
    HpkeRecipient, HpkeSuite, PublicKeyFault, Secret,
};

/// A NIST-curve MLS cipher suite: curve `C`, hash `H` (also the KDF's and
/// the ECDSA prehash), AEAD `A`.
pub struct NistSuite<C, H, A> {
    suite: CipherSuite,
    scheme: SignatureScheme,
    kem: KemAlgorithm,
    kdf_id: u16,
    aead_id: u16,
    /// The `bitmask` of DeriveKeyPair's rejection sampling (RFC 9180
    /// §7.1.3: 0xff for P-256 and P-384, 0x01 for P-521).
    bitmask: u8,
    _algorithms: Algorithms<C, H, A>,
}

/// The type parameters, held without owning a value of them (the suite
/// stays `Send + Sync` whatever they are).
type Algorithms<C, H, A> = PhantomData<fn() -> (C, H, A)>;

impl<C, H, A> fmt::Debug for NistSuite<C, H, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NistSuite").field(&self.suite).finish()
    }
}

/// Cipher suite 0x0007.
pub type P384Sha384Aes256Gcm = NistSuite<p384::NistP384, Sha384, Aes256Gcm>;
/// Cipher suite 0x0005.
pub type P521Sha512Aes256Gcm = NistSuite<p521::NistP521, Sha512, Aes256Gcm>;

/// Suite 0x0007's single instance, handed out by [`CipherSuite::provider`].
pub(crate) static P384_SUITE: P384Sha384Aes256Gcm = NistSuite {
    suite: CipherSuite::MLS_256_DHKEMP384_AES256GCM_SHA384_P384,
    scheme: SignatureScheme::EcdsaSecp384r1Sha384,
    kem: KemAlgorithm::DhKemP384HkdfSha384,
    kdf_id: 0x0002,  // HKDF-SHA384
    aead_id: 0x0002, // AES-256-GCM
    bitmask: 0xff,
    _algorithms: PhantomData,
};

/// Suite 0x0005's single instance.
pub(crate) static P521_SUITE: P521Sha512Aes256Gcm = NistSuite {
    suite: CipherSuite::MLS_256_DHKEMP521_AES256GCM_SHA512_P521,
    scheme: SignatureScheme::EcdsaSecp521r1Sha512,
    kem: KemAlgorithm::DhKemP521HkdfSha512,
    kdf_id: 0x0003,  // HKDF-SHA512
    aead_id: 0x0002, // AES-256-GCM
    bitmask: 0x01,
    _algorithms: PhantomData,
};

/// The bounds a curve needs: SEC1 encoding, ECDH, ECDSA verification and
/// DER signatures.
macro_rules! nist_bounds {
    ($($item:item)*) => {
        $(
            #[allow(deprecated)] // generic-array 0.14's ArrayLength, as ecdsa 0.16 names it
            $item
        )*
    };
}

nist_bounds! {
impl<C, H, A> NistSuite<C, H, A>
where
    C: PrimeCurve + CurveArithmetic,
    FieldBytesSize<C>: ModulusSize,
    AffinePoint<C>: FromEncodedPoint<C> + ToEncodedPoint<C> + VerifyPrimitive<C>,
    SignatureSize<C>: p256::elliptic_curve::generic_array::ArrayLength<u8>,
    MaxSize<C>: p256::elliptic_curve::generic_array::ArrayLength<u8>,
    <FieldBytesSize<C> as Add>::Output:
        Add<MaxOverhead> + p256::elliptic_curve::generic_array::ArrayLength<u8>,
    H: SuiteHash,
    A: SuiteAead,
{
    /// `Nsk`, also `Ndh`: the field element length.
    fn nsk() -> usize {
        FieldBytesSize::<C>::USIZE
    }

    /// `Npk`, `Nenc`: an uncompressed SEC1 point.
    fn npk() -> usize {
        1 + 2 * Self::nsk()
    }

    /// Parses an uncompressed SEC1 point, rejecting anything else
    /// (compressed points, the identity, points off the curve).
    fn parse_point(bytes: &[u8]) -> Result<PublicKey<C>, CryptoError> {
        if bytes.len() != Self::npk() || bytes[0] != 0x04 {
            return Err(CryptoError::InvalidPublicKey(PublicKeyFault::Encoding));
        }
        PublicKey::<C>::from_sec1_bytes(bytes)
            .map_err(|_| CryptoError::InvalidPublicKey(PublicKeyFault::NotOnCurve))
    }

    fn secret_key(bytes: &[u8]) -> Result<SecretKey<C>, CryptoError> {
        if bytes.len() != Self::nsk() {
            return Err(CryptoError::InvalidPrivateKey);
        }
        SecretKey::<C>::from_slice(bytes).map_err(|_| CryptoError::InvalidPrivateKey)
    }

    fn public_key_bytes(sk: &SecretKey<C>) -> Vec<u8> {
        sk.public_key().to_encoded_point(false).as_bytes().to_vec()
    }

    fn key_pair(sk: &SecretKey<C>) -> HpkePrivateKey {
        let private = Secret::from_slice(&Zeroizing::new(sk.to_bytes()));
        HpkePrivateKey::from_parts(private, HpkePublicKey::from_vec(Self::public_key_bytes(sk)))
    }

    /// `DH(sk, pk)`: the x-coordinate of the shared point (RFC 9180 §4.1).
    fn dh(sk: &SecretKey<C>, pk: &PublicKey<C>) -> Zeroizing<Vec<u8>> {
        let shared = p256::elliptic_curve::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
        Zeroizing::new(shared.raw_secret_bytes().to_vec())
    }
}
}

nist_bounds! {
impl<C, H, A> CipherSuiteProvider for NistSuite<C, H, A>
where
    C: PrimeCurve + CurveArithmetic,
    FieldBytesSize<C>: ModulusSize,
    AffinePoint<C>: FromEncodedPoint<C> + ToEncodedPoint<C> + VerifyPrimitive<C>,
    SignatureSize<C>: p256::elliptic_curve::generic_array::ArrayLength<u8>,
    MaxSize<C>: p256::elliptic_curve::generic_array::ArrayLength<u8>,
    <FieldBytesSize<C> as Add>::Output:
        Add<MaxOverhead> + p256::elliptic_curve::generic_array::ArrayLength<u8>,
    H: SuiteHash,
    A: SuiteAead,
{
    fn cipher_suite(&self) -> CipherSuite {
        self.suite
    }

    fn hash_len(&self) -> usize {
        primitives::hash_len::<H>()
    }

    fn aead_key_len(&self) -> usize {
        primitives::aead_key_len::<A>()
    }

    fn aead_nonce_len(&self) -> usize {
        primitives::aead_nonce_len::<A>()
    }

    fn hpke_suite(&self) -> HpkeSuite {
        HpkeSuite {
            kem_id: self.kem.kem_id(),
            kdf_id: self.kdf_id,
            aead_id: self.aead_id,
        }
    }

    fn signature_scheme(&self) -> SignatureScheme {
        self.scheme
    }

    fn kem(&self) -> KemAlgorithm {
        self.kem
    }

    fn hash(&self, parts: &[&[u8]]) -> Digest {
        primitives::hash::<H>(parts)
    }

    fn mac(&self, key: &[u8], parts: &[&[u8]]) -> Digest {
        primitives::mac::<H>(key, parts)
    }

    fn kdf_extract(&self, salt: &[u8], ikm: &[&[u8]]) -> Secret {
        primitives::kdf_extract::<H>(salt, ikm)
    }

    fn kdf_expand(&self, prk: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
        primitives::kdf_expand::<H>(prk, info, out)
    }

    fn aead_seal_in_place(
        &self,
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        buffer: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        primitives::aead_seal::<A>(key, nonce, aad, buffer)
    }

    fn aead_open_in_place(
        &self,
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        buffer: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        primitives::aead_open::<A>(key, nonce, aad, buffer)
    }

    fn kem_generate(&self) -> Result<HpkePrivateKey, CryptoError> {
        Ok(Self::key_pair(&SecretKey::<C>::random(&mut OsRng)))
    }

    fn kem_derive_key_pair(&self, ikm: &[u8]) -> Result<HpkePrivateKey, CryptoError> {
        // RFC 9180 §7.1.3: rejection sampling, the first byte masked.
        let suite_id = kem_suite_id(self);
        let dkp_prk = labeled_extract(self, &suite_id, &[], b"dkp_prk", ikm);
        let mut bytes = Zeroizing::new(vec![0u8; Self::nsk()]);
        for counter in 0..=255u8 {
            labeled_expand(
                self,
                &suite_id,
                dkp_prk.as_bytes(),
                b"candidate",
                &[&[counter]],
                bytes.as_mut_slice(),
            )?;
            bytes[0] &= self.bitmask;
            // Rejects zero and values >= the group order.
            if let Ok(sk) = SecretKey::<C>::from_slice(bytes.as_slice()) {
                return Ok(Self::key_pair(&sk));
            }
        }
        Err(CryptoError::DeriveKeyPair)
    }

    fn kem_encap(
        &self,
        pk_r: &[u8],
        ikm_e: Option<&[u8]>,
    ) -> Result<(Secret, Vec<u8>), CryptoError> {
        let peer = Self::parse_point(pk_r)?;
        let sk_e = match ikm_e {
            Some(ikm) => {
                let pair = self.kem_derive_key_pair(ikm)?;
                Self::secret_key(pair.private_bytes().as_bytes())?
            }
            None => SecretKey::<C>::random(&mut OsRng),
        };
        let enc = Self::public_key_bytes(&sk_e);
        let dh = Self::dh(&sk_e, &peer);
        let shared_secret = extract_and_expand(self, &dh, &enc, pk_r)?;
        Ok((shared_secret, enc))
    }

    fn kem_decap(&self, enc: &[u8], recipient: &HpkeRecipient<'_>) -> Result<Secret, CryptoError> {
        let pk_e = Self::parse_point(enc)?;
        let (in_custody, in_software);
        let dh: &[u8] = match recipient {
            HpkeRecipient::Custody { custody, key } => {
                self.check_key_spec(key, self.hpke_key_spec())?;
                in_custody = custody.dh(key, enc)?;
                in_custody.as_bytes()
            }
            HpkeRecipient::Software(k) => {
                in_software = Self::dh(&Self::secret_key(k.private_bytes().as_bytes())?, &pk_e);
                in_software.as_slice()
            }
        };
        extract_and_expand(self, dh, enc, recipient.public_key())
    }

    fn validate_hpke_public_key(&self, public_key: &[u8]) -> Result<(), CryptoError> {
        Self::parse_point(public_key).map(drop)
    }

    fn sign(
        &self,
        custody: &dyn KeyCustody,
        key: &KeyRef,
        message: &[&[u8]],
    ) -> Result<Vec<u8>, CryptoError> {
        self.check_key_spec(key, self.signature_key_spec())?;
        primitives::custody_sign(custody, key, message)
    }

    fn verify(
        &self,
        public_key: &[u8],
        message: &[&[u8]],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        let point = Self::parse_point(public_key)?;
        let vk = VerifyingKey::<C>::from_affine(*point.as_affine())
            .map_err(|_| CryptoError::InvalidPublicKey(PublicKeyFault::NotOnCurve))?;
        let sig = ecdsa::Signature::<C>::from_der(signature)
            .map_err(|_| CryptoError::MalformedSignature)?;
        let digest = primitives::hash::<H>(message);
        vk.verify_prehash(digest.as_bytes(), &sig)
            .map_err(|_| CryptoError::InvalidSignature)
    }

    fn validate_signature_public_key(&self, public_key: &[u8]) -> Result<(), CryptoError> {
        Self::parse_point(public_key).map(drop)
    }
}
}

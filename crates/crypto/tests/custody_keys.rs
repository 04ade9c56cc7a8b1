//! The cipher suite uses custody keys of its own algorithms only (RFC 9420
//! §5.1: a suite fixes the signature scheme and the KEM), and signs through
//! the whole-message form of the custody trait.

use std::sync::Mutex;

use hsmls_crypto::{CipherSuite, CryptoError, HpkeRecipient};
use hsmls_custody::{
    Capabilities, CustodyError, KemAlgorithm, KeyAttributes, KeyCustody, KeyRef, KeySpec,
    SharedSecret, SignatureScheme, SoftwareCustody,
};

fn suite() -> &'static dyn hsmls_crypto::CipherSuiteProvider {
    CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256
        .provider()
        .unwrap()
}

#[test]
fn suite_0x0002_names_its_key_algorithms() {
    let cs = suite();
    assert_eq!(cs.signature_scheme(), SignatureScheme::EcdsaSecp256r1Sha256);
    assert_eq!(cs.kem(), KemAlgorithm::DhKemP256HkdfSha256);
    assert_eq!(cs.signature_key_spec(), KeySpec::ECDSA_SECP256R1_SHA256);
    assert_eq!(cs.hpke_key_spec(), KeySpec::DHKEM_P256_HKDF_SHA256);
    assert_eq!(cs.hpke_suite().kem_id, 0x0010);
    assert_eq!(cs.signature_scheme().value(), 0x0403);
}

#[test]
fn signing_with_an_hpke_key_is_refused_before_the_custody_is_asked() {
    let cs = suite();
    let custody = SoftwareCustody::new();
    let hpke = custody.generate(KeySpec::DHKEM_P256_HKDF_SHA256).unwrap();
    let err = cs
        .sign_with_label(&custody, &hpke, b"LeafNodeTBS", b"content")
        .unwrap_err();
    assert!(
        matches!(
            err,
            CryptoError::WrongKeySpec {
                expected: KeySpec::ECDSA_SECP256R1_SHA256,
                actual: KeySpec::DHKEM_P256_HKDF_SHA256,
            }
        ),
        "{err}"
    );
}

#[test]
fn decrypting_with_a_signature_key_is_refused() {
    let cs = suite();
    let custody = SoftwareCustody::new();
    let recipient = custody.generate(KeySpec::DHKEM_P256_HKDF_SHA256).unwrap();
    let (kem_output, ct) = cs
        .encrypt_with_label(
            recipient.public_key().as_bytes(),
            b"Welcome",
            b"",
            b"secret",
            None,
        )
        .unwrap();
    let sig = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
    let wrong = HpkeRecipient::Custody {
        custody: &custody,
        key: &sig,
    };
    let err = cs
        .decrypt_with_label(&wrong, b"Welcome", b"", &kem_output, &ct)
        .unwrap_err();
    assert!(
        matches!(
            err,
            CryptoError::WrongKeySpec {
                expected: KeySpec::DHKEM_P256_HKDF_SHA256,
                actual: KeySpec::ECDSA_SECP256R1_SHA256,
            }
        ),
        "{err}"
    );
    // The right key opens it.
    let right = HpkeRecipient::Custody {
        custody: &custody,
        key: &recipient,
    };
    let pt = cs
        .decrypt_with_label(&right, b"Welcome", b"", &kem_output, &ct)
        .unwrap();
    assert_eq!(&pt[..], b"secret");
}

/// Records which signing form the suite calls.
#[derive(Debug, Default)]
struct Forms {
    inner: SoftwareCustody,
    calls: Mutex<Vec<&'static str>>,
}

impl KeyCustody for Forms {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }
    fn generate(&self, spec: KeySpec) -> Result<KeyRef, CustodyError> {
        self.inner.generate(spec)
    }
    fn import(&self, spec: KeySpec, private_key: &[u8]) -> Result<KeyRef, CustodyError> {
        self.inner.import(spec, private_key)
    }
    fn sign_prehash(&self, key: &KeyRef, prehash: &[u8]) -> Result<Vec<u8>, CustodyError> {
        self.calls.lock().unwrap().push("sign_prehash");
        self.inner.sign_prehash(key, prehash)
    }
    fn sign(&self, key: &KeyRef, message: &[u8]) -> Result<Vec<u8>, CustodyError> {
        self.calls.lock().unwrap().push("sign");
        self.inner.sign(key, message)
    }
    fn dh(&self, key: &KeyRef, peer_public_key: &[u8]) -> Result<SharedSecret, CustodyError> {
        self.inner.dh(key, peer_public_key)
    }
    fn destroy(&self, key: &KeyRef) -> Result<(), CustodyError> {
        self.inner.destroy(key)
    }
    fn find(&self, uri: &str) -> Result<KeyRef, CustodyError> {
        self.inner.find(uri)
    }
    fn key_attributes(&self, key: &KeyRef) -> Result<KeyAttributes, CustodyError> {
        self.inner.key_attributes(key)
    }
}

#[test]
fn sign_with_label_calls_the_whole_message_signer_once() {
    let cs = suite();
    let custody = Forms::default();
    let key = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
    let content = vec![0x5a; 3000];
    let sig = cs
        .sign_with_label(&custody, &key, b"FramedContentTBS", &content)
        .unwrap();
    assert_eq!(*custody.calls.lock().unwrap(), ["sign"]);
    cs.verify_with_label(
        key.public_key().as_bytes(),
        b"FramedContentTBS",
        &content,
        &sig,
    )
    .unwrap();
    assert!(matches!(
        cs.verify_with_label(
            key.public_key().as_bytes(),
            b"FramedContentTBS",
            b"other",
            &sig
        ),
        Err(CryptoError::InvalidSignature)
    ));
}

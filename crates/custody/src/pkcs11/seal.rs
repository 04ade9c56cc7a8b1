//! The state-sealing key in the token: an AES-256 token object used with
//! `CKM_AES_GCM` (see [`crate::seal`]).
//!
//! The key is `CKO_SECRET_KEY`/`CKK_AES`, 32 bytes, `CKA_TOKEN`,
//! `CKA_PRIVATE`, `CKA_SENSITIVE`, not extractable, not modifiable, not
//! copyable, and usable for `CKA_ENCRYPT`/`CKA_DECRYPT` only (no wrap,
//! unwrap, sign, verify or derive). Its `CKA_LABEL` is
//! [`Pkcs11Config::state_seal_key_label`](super::Pkcs11Config::state_seal_key_label);
//! its random 16-byte `CKA_ID` is the [`StateSealer::key_id`] written into
//! sealed blobs. It is created on the first
//! [`Pkcs11Custody::state_sealer`] call, under this process's token-write
//! lock; two processes creating it at the same moment may each create one,
//! and then both use the one with the smallest `CKA_ID` from then on (a
//! blob one of them sealed before would name the other key; provision the
//! key once, e.g. at installation, to rule that out).

use std::fmt;
use std::sync::{Arc, RwLock};

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use zeroize::Zeroizing;

use super::{Offer, Pkcs11Custody, is_stale_handle, new_id, token_err, token_object_write_lock};
use crate::CustodyError;
use crate::seal::{
    SEAL_KEY_LEN, SEAL_NONCE_LEN, SEAL_TAG_LEN, StateSealer, check_plaintext_len, check_sealed_len,
    random_nonce,
};

/// The AES-256 state-sealing key of a token, from
/// [`Pkcs11Custody::state_sealer`]: a token object (`CKA_SENSITIVE`, not
/// extractable, not modifiable, not copyable, `CKA_ENCRYPT`/`CKA_DECRYPT`
/// only) used with `CKM_AES_GCM` in the token. Its `CKA_ID` (16 random
/// bytes) is the [`StateSealer::key_id`]. Cheap to clone; uses its
/// custody's sessions.
#[derive(Clone)]
pub struct Pkcs11Sealer {
    custody: Arc<Pkcs11Custody>,
    id: Vec<u8>,
    label: String,
    handle: Arc<RwLock<ObjectHandle>>,
}

impl fmt::Debug for Pkcs11Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Sealer")
            .field("token", &self.custody.token_label)
            .field("label", &self.label)
            .field("key_id", &hex::encode(&self.id))
            .finish_non_exhaustive()
    }
}

/// The mechanisms the state-sealing key needs.
pub(crate) const SEAL_MECHANISMS: [(MechanismType, &str); 2] = [
    (MechanismType::AES_KEY_GEN, "CKM_AES_KEY_GEN"),
    (MechanismType::AES_GCM, "CKM_AES_GCM"),
];

/// The attributes a sealing key must have; keys with the label but
/// another policy are ignored.
fn is_sealing_key(s: &Session, handle: ObjectHandle) -> Result<bool, CustodyError> {
    let wanted = [
        Attribute::Token(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
    ];
    let attrs = s
        .get_attributes(
            handle,
            &[
                AttributeType::Token,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Encrypt,
                AttributeType::Decrypt,
                AttributeType::Wrap,
                AttributeType::Unwrap,
                AttributeType::ValueLen,
            ],
        )
        .map_err(|e| token_err("C_GetAttributeValue (state-sealing key)", e))?;
    let policy = wanted.iter().all(|w| attrs.contains(w));
    let len_ok = attrs
        .iter()
        .any(|a| matches!(a, Attribute::ValueLen(n) if u64::from(*n) == SEAL_KEY_LEN as u64));
    Ok(policy && len_ok)
}

/// The sealing key with `label` that has the smallest `CKA_ID`, if any.
fn find_sealing_key(
    s: &Session,
    label: &str,
) -> Result<Option<(Vec<u8>, ObjectHandle)>, CustodyError> {
    let handles = s
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| token_err("C_FindObjects (state-sealing key)", e))?;
    let mut best: Option<(Vec<u8>, ObjectHandle)> = None;
    for handle in handles {
        if !is_sealing_key(s, handle)? {
            tracing::warn!(
                label,
                "ignoring a key with the state-sealing label but another policy"
            );
            continue;
        }
        let id = Pkcs11Custody::read_id(s, handle)?;
        if best.as_ref().is_none_or(|(b, _)| id < *b) {
            best = Some((id, handle));
        }
    }
    Ok(best)
}

impl Pkcs11Custody {
    /// Whether the token can hold the state-sealing key: `Ok` if it offers
    /// `CKM_AES_KEY_GEN` and `CKM_AES_GCM`, else
    /// [`CustodyError::SealingUnsupported`] naming the first one missing.
    /// Creates nothing (for `hsmls probe`).
    pub fn can_seal(&self) -> Result<(), CustodyError> {
        // C_GetMechanismInfo per mechanism, not C_GetMechanismList (see
        // `probe`: cryptoki logs an error for every mechanism it cannot name).
        for (m, name) in SEAL_MECHANISMS {
            if matches!(self.offer(m)?, Offer::Absent) {
                return Err(CustodyError::SealingUnsupported(format!(
                    "token {:?} does not offer {name}",
                    self.token_label
                )));
            }
        }
        Ok(())
    }

    /// The token's state-sealing key (label
    /// [`Pkcs11Config::state_seal_key_label`](super::Pkcs11Config::state_seal_key_label)),
    /// found, or created on first use. Fails with
    /// [`CustodyError::SealingUnsupported`] if the token lacks
    /// `CKM_AES_KEY_GEN` or `CKM_AES_GCM`.
    pub fn state_sealer(self: &Arc<Self>) -> Result<Pkcs11Sealer, CustodyError> {
        self.can_seal()?;
        let label = self.state_seal_key_label.clone();
        let s = self.pool.get()?;
        let found = match find_sealing_key(&s, &label)? {
            Some(found) => found,
            None => {
                let _provisioning = self
                    .module
                    .provisioning
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                match find_sealing_key(&s, &label)? {
                    Some(found) => found,
                    None => {
                        Self::generate_sealing_key(&s, &label)?;
                        tracing::info!(label, "created the token-resident state-sealing key");
                        // Another process may have created one meanwhile:
                        // the smallest CKA_ID wins.
                        find_sealing_key(&s, &label)?.ok_or_else(|| CustodyError::Token {
                            operation: "C_FindObjects (state-sealing key)",
                            reason: "the new state-sealing key is not found".into(),
                        })?
                    }
                }
            }
        };
        drop(s);
        let (id, handle) = found;
        Ok(Pkcs11Sealer {
            custody: Arc::clone(self),
            id,
            label,
            handle: Arc::new(RwLock::new(handle)),
        })
    }

    fn generate_sealing_key(s: &Session, label: &str) -> Result<(), CustodyError> {
        let id = new_id();
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen((SEAL_KEY_LEN as u64).into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Modifiable(false),
            Attribute::Copyable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::Id(id.clone()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let _write = token_object_write_lock();
        // SoftHSM sometimes fails a token-object write with
        // CKR_GENERAL_ERROR while other sessions read its files: remove
        // whatever carries the new id and try again, a few times.
        let mut attempt = 0;
        loop {
            match s.generate_key(&Mechanism::AesKeyGen, &template) {
                Ok(_) => return Ok(()),
                Err(Error::Pkcs11(RvError::GeneralError, _)) if attempt < 3 => {
                    attempt += 1;
                    tracing::warn!(
                        attempt,
                        "C_GenerateKey (state-sealing key) failed with CKR_GENERAL_ERROR; retrying"
                    );
                    if let Ok(partial) = s.find_objects(&[Attribute::Id(id.clone())]) {
                        for h in partial {
                            let _ = s.destroy_object(h);
                        }
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20 * attempt));
                }
                Err(e) => return Err(token_err("C_GenerateKey (state-sealing key)", e)),
            }
        }
    }
}

impl Pkcs11Sealer {
    /// The key's `CKA_LABEL`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The key's object handle, for tests (e.g. reading its attributes
    /// through [`Pkcs11Custody::with_session`]).
    #[cfg(feature = "test-utils")]
    pub fn key_handle(&self) -> ObjectHandle {
        self.handle()
    }

    fn handle(&self) -> ObjectHandle {
        *self.handle.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Destroys the key in the token. Every blob sealed with it can no
    /// longer be opened: re-seal what must be kept under another key first.
    pub fn destroy(self) -> Result<(), CustodyError> {
        let s = self.custody.pool.get()?;
        let _write = token_object_write_lock();
        s.destroy_object(self.handle())
            .map_err(|e| token_err("C_DestroyObject (state-sealing key)", e))
    }

    /// Finds the key again by its `CKA_ID` (after its handle went stale).
    fn refresh(&self, s: &Session) -> Result<ObjectHandle, CustodyError> {
        let handles = s
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Id(self.id.clone()),
            ])
            .map_err(|e| token_err("C_FindObjects (state-sealing key)", e))?;
        let [handle] = handles.as_slice() else {
            return Err(CustodyError::KeyNotFound(format!(
                "state-sealing key {:?} id {} in token {:?}",
                self.label,
                hex::encode(&self.id),
                self.custody.token_label
            )));
        };
        *self.handle.write().unwrap_or_else(|e| e.into_inner()) = *handle;
        Ok(*handle)
    }

    /// Runs `op` with the key's handle, finding the key again once if the
    /// handle went stale.
    fn with_key<T>(
        &self,
        operation: &'static str,
        op: impl Fn(&Session, ObjectHandle) -> Result<T, Error>,
        on_error: impl Fn(Error) -> CustodyError,
    ) -> Result<T, CustodyError> {
        let s = self.custody.pool.get()?;
        match op(&s, self.handle()) {
            Ok(v) => Ok(v),
            Err(e) if is_stale_handle(&e) => {
                let handle = self.refresh(&s)?;
                op(&s, handle).map_err(|e| {
                    if is_stale_handle(&e) {
                        token_err(operation, e)
                    } else {
                        on_error(e)
                    }
                })
            }
            Err(e) => Err(on_error(e)),
        }
    }
}

/// Whether a `C_Decrypt` error says the ciphertext or tag is wrong.
/// PKCS#11 v3.0 names `CKR_ENCRYPTED_DATA_INVALID` for a GCM tag that does
/// not verify; SoftHSM 2.6.1 returns `CKR_GENERAL_ERROR` (measured), other
/// tokens `CKR_FUNCTION_FAILED`.
fn is_authentication_failure(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(
            RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::FunctionFailed
                | RvError::GeneralError,
            _
        )
    )
}

impl StateSealer for Pkcs11Sealer {
    fn key_id(&self) -> &[u8] {
        &self.id
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CustodyError> {
        check_plaintext_len(plaintext)?;
        let nonce = random_nonce();
        let ciphertext = self.with_key(
            "C_Encrypt (AES-GCM)",
            |s, key| {
                let mut iv = nonce;
                let params = GcmParams::new(&mut iv, aad, ((SEAL_TAG_LEN * 8) as u64).into())?;
                s.encrypt(&Mechanism::AesGcm(params), key, plaintext)
            },
            |e| token_err("C_Encrypt (AES-GCM)", e),
        )?;
        if ciphertext.len() != plaintext.len() + SEAL_TAG_LEN {
            return Err(CustodyError::Token {
                operation: "C_Encrypt (AES-GCM)",
                reason: format!(
                    "expected {} bytes of ciphertext and tag, got {}",
                    plaintext.len() + SEAL_TAG_LEN,
                    ciphertext.len()
                ),
            });
        }
        let mut out = Vec::with_capacity(SEAL_NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CustodyError> {
        check_sealed_len(sealed)?;
        let (nonce, ciphertext) = sealed.split_at(SEAL_NONCE_LEN);
        let plaintext = self.with_key(
            "C_Decrypt (AES-GCM)",
            |s, key| {
                let mut iv = [0u8; SEAL_NONCE_LEN];
                iv.copy_from_slice(nonce);
                let params = GcmParams::new(&mut iv, aad, ((SEAL_TAG_LEN * 8) as u64).into())?;
                s.decrypt(&Mechanism::AesGcm(params), key, ciphertext)
                    .map(Zeroizing::new)
            },
            |e| {
                if is_authentication_failure(&e) {
                    CustodyError::SealedDataRejected
                } else {
                    token_err("C_Decrypt (AES-GCM)", e)
                }
            },
        )?;
        if plaintext.len() != ciphertext.len() - SEAL_TAG_LEN {
            return Err(CustodyError::Token {
                operation: "C_Decrypt (AES-GCM)",
                reason: format!(
                    "expected {} bytes of plaintext, got {}",
                    ciphertext.len() - SEAL_TAG_LEN,
                    plaintext.len()
                ),
            });
        }
        Ok(plaintext)
    }
}

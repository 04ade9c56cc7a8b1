//! The MLS key schedule (RFC 9420 §8): from the previous epoch's
//! `init_secret`, the `commit_secret`, the `psk_secret` and the serialized
//! GroupContext to the joiner, welcome and epoch secrets and everything
//! derived from the epoch secret.
//!
//! The GroupContext is taken as its TLS encoding, so this module does not
//! depend on how the GroupContext struct is built. Secrets are
//! [`Secret`]s: zeroized on drop and never printed. Callers drop consumed
//! secrets as RFC 9420 §9.2 requires; the functions here take by reference
//! what may still be needed and by value what is consumed.

use std::fmt;

use hsmls_crypto::{
    CipherSuiteProvider, CryptoError, HpkePrivateKey, HpkeRecipient, Secret, SizedValue, hpke,
};

/// The HPKE export label of the external init secret (RFC 9420 §8.3).
const EXTERNAL_INIT_LABEL: &[u8] = b"MLS 1.0 external init secret";

/// `joiner_secret` (RFC 9420 §8): what a Welcome gives new members.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinerSecret(Secret);

impl JoinerSecret {
    /// `ExpandWithLabel(KDF.Extract(init_secret, commit_secret), "joiner",
    /// GroupContext_[n], KDF.Nh)`. A missing `commit_secret` (a Commit
    /// without a path) is the all-zero vector of length `KDF.Nh`.
    pub fn derive(
        cs: &dyn CipherSuiteProvider,
        init_secret: &Secret,
        commit_secret: Option<&Secret>,
        group_context: &[u8],
    ) -> Result<Self, CryptoError> {
        let zero;
        let commit_secret = match commit_secret {
            Some(s) => s,
            None => {
                zero = Secret::zero(cs.hash_len());
                &zero
            }
        };
        let prk = cs.kdf_extract(init_secret.as_bytes(), &[commit_secret.as_bytes()]);
        let joiner =
            cs.expand_with_label(prk.as_bytes(), b"joiner", group_context, cs.hash_len())?;
        Ok(JoinerSecret(joiner))
    }

    /// A joiner secret received in GroupSecrets (RFC 9420 §12.4.3.1).
    pub fn from_secret(cs: &dyn CipherSuiteProvider, secret: Secret) -> Result<Self, CryptoError> {
        check_len(cs, SizedValue::JoinerSecret, &secret)?;
        Ok(JoinerSecret(secret))
    }

    /// The secret (to send it in GroupSecrets).
    pub fn as_secret(&self) -> &Secret {
        &self.0
    }

    /// `KDF.Extract(joiner_secret, psk_secret)`; a missing `psk_secret` (no
    /// PSKs) is the all-zero vector.
    pub fn member_secret(
        &self,
        cs: &dyn CipherSuiteProvider,
        psk_secret: Option<&Secret>,
    ) -> MemberSecret {
        let zero;
        let psk_secret = match psk_secret {
            Some(s) => s,
            None => {
                zero = Secret::zero(cs.hash_len());
                &zero
            }
        };
        MemberSecret(cs.kdf_extract(self.0.as_bytes(), &[psk_secret.as_bytes()]))
    }
}

impl fmt::Debug for JoinerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinerSecret(<redacted>)")
    }
}

/// The unnamed secret between `joiner_secret` and `epoch_secret` in the
/// key schedule diagram (RFC 9420 §8): `KDF.Extract(joiner_secret,
/// psk_secret)`.
pub struct MemberSecret(Secret);

impl MemberSecret {
    /// `welcome_secret = DeriveSecret(., "welcome")`.
    pub fn welcome_secret(&self, cs: &dyn CipherSuiteProvider) -> Result<Secret, CryptoError> {
        cs.derive_secret(self.0.as_bytes(), b"welcome")
    }

    /// `epoch_secret = ExpandWithLabel(., "epoch", GroupContext_[n],
    /// KDF.Nh)`; consumes this secret.
    pub fn epoch_secret(
        self,
        cs: &dyn CipherSuiteProvider,
        group_context: &[u8],
    ) -> Result<Secret, CryptoError> {
        cs.expand_with_label(self.0.as_bytes(), b"epoch", group_context, cs.hash_len())
    }
}

impl fmt::Debug for MemberSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemberSecret(<redacted>)")
    }
}

/// The key and nonce that encrypt a Welcome's GroupInfo (RFC 9420
/// §12.4.3.1): `ExpandWithLabel(welcome_secret, "key" | "nonce", "",
/// AEAD.Nk | AEAD.Nn)`.
pub fn welcome_key_nonce(
    cs: &dyn CipherSuiteProvider,
    welcome_secret: &Secret,
) -> Result<(Secret, Secret), CryptoError> {
    let key = cs.expand_with_label(welcome_secret.as_bytes(), b"key", &[], cs.aead_key_len())?;
    let nonce = cs.expand_with_label(
        welcome_secret.as_bytes(),
        b"nonce",
        &[],
        cs.aead_nonce_len(),
    )?;
    Ok((key, nonce))
}

/// The secrets derived from `epoch_secret` (RFC 9420 §8, table
/// "Epoch-Derived Secrets"), plus the next epoch's `init_secret`.
#[derive(Clone)]
pub struct EpochSecrets {
    /// `sender_data_secret` ("sender data").
    pub sender_data_secret: Secret,
    /// `encryption_secret` ("encryption"): the root of the secret tree.
    pub encryption_secret: Secret,
    /// `exporter_secret` ("exporter").
    pub exporter_secret: Secret,
    /// `external_secret` ("external").
    pub external_secret: Secret,
    /// `confirmation_key` ("confirm").
    pub confirmation_key: Secret,
    /// `membership_key` ("membership").
    pub membership_key: Secret,
    /// `resumption_psk` ("resumption").
    pub resumption_psk: Secret,
    /// `epoch_authenticator` ("authentication").
    pub epoch_authenticator: Secret,
    /// `init_secret_[n]` ("init"), the next epoch's init secret.
    pub init_secret: Secret,
}

impl EpochSecrets {
    /// Derives every epoch secret from `epoch_secret`, which is consumed.
    pub fn derive(cs: &dyn CipherSuiteProvider, epoch_secret: Secret) -> Result<Self, CryptoError> {
        let e = epoch_secret.as_bytes();
        Ok(EpochSecrets {
            sender_data_secret: cs.derive_secret(e, b"sender data")?,
            encryption_secret: cs.derive_secret(e, b"encryption")?,
            exporter_secret: cs.derive_secret(e, b"exporter")?,
            external_secret: cs.derive_secret(e, b"external")?,
            confirmation_key: cs.derive_secret(e, b"confirm")?,
            membership_key: cs.derive_secret(e, b"membership")?,
            resumption_psk: cs.derive_secret(e, b"resumption")?,
            epoch_authenticator: cs.derive_secret(e, b"authentication")?,
            init_secret: cs.derive_secret(e, b"init")?,
        })
    }

    /// `external_priv, external_pub = KEM.DeriveKeyPair(external_secret)`
    /// (RFC 9420 §8); `external_pub` goes into GroupInfo's `external_pub`
    /// extension.
    pub fn external_key_pair(
        &self,
        cs: &dyn CipherSuiteProvider,
    ) -> Result<HpkePrivateKey, CryptoError> {
        cs.kem_derive_key_pair(self.external_secret.as_bytes())
    }

    /// `MLS-Exporter(Label, Context, Length)` (RFC 9420 §8.5):
    /// `ExpandWithLabel(DeriveSecret(exporter_secret, Label), "exported",
    /// Hash(Context), Length)`.
    pub fn mls_exporter(
        &self,
        cs: &dyn CipherSuiteProvider,
        label: &[u8],
        context: &[u8],
        length: usize,
    ) -> Result<Secret, CryptoError> {
        mls_exporter(cs, &self.exporter_secret, label, context, length)
    }

    /// The `init_secret` of a group member processing an external Commit
    /// (RFC 9420 §8.3): HPKE `SetupBaseR(kem_output, external_priv, "")`
    /// then `Export("MLS 1.0 external init secret", KDF.Nh)`.
    pub fn external_init_secret(
        &self,
        cs: &dyn CipherSuiteProvider,
        kem_output: &[u8],
    ) -> Result<Secret, CryptoError> {
        let external = self.external_key_pair(cs)?;
        hpke::export_base_receiver(
            cs,
            &HpkeRecipient::Software(&external),
            kem_output,
            &[],
            EXTERNAL_INIT_LABEL,
            cs.hash_len(),
        )
    }
}

impl fmt::Debug for EpochSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EpochSecrets(<redacted>)")
    }
}

/// `MLS-Exporter(Label, Context, Length)` over a given `exporter_secret`
/// (RFC 9420 §8.5).
pub fn mls_exporter(
    cs: &dyn CipherSuiteProvider,
    exporter_secret: &Secret,
    label: &[u8],
    context: &[u8],
    length: usize,
) -> Result<Secret, CryptoError> {
    let derived = cs.derive_secret(exporter_secret.as_bytes(), label)?;
    let context_hash = cs.hash(&[context]);
    cs.expand_with_label(derived.as_bytes(), b"exported", &context_hash, length)
}

/// The joiner's side of external init (RFC 9420 §8.3): `kem_output,
/// context = SetupBaseS(external_pub, "")`, `init_secret =
/// context.export("MLS 1.0 external init secret", KDF.Nh)`. Returns
/// `(kem_output, init_secret)`.
pub fn external_init(
    cs: &dyn CipherSuiteProvider,
    external_pub: &[u8],
) -> Result<(Vec<u8>, Secret), CryptoError> {
    hpke::export_base_sender(
        cs,
        external_pub,
        &[],
        EXTERNAL_INIT_LABEL,
        cs.hash_len(),
        None,
    )
}

/// Everything one run of the key schedule produces for a member that
/// processes (or creates) a Commit.
pub struct KeySchedule {
    /// `joiner_secret` (for GroupSecrets of new members).
    pub joiner_secret: JoinerSecret,
    /// `welcome_secret` (to encrypt the GroupInfo of a Welcome).
    pub welcome_secret: Secret,
    /// The epoch-derived secrets.
    pub epoch: EpochSecrets,
}

impl KeySchedule {
    /// Runs the key schedule of RFC 9420 §8 for a new epoch. `commit_secret`
    /// and `psk_secret` default to the all-zero vector when `None`.
    pub fn run(
        cs: &dyn CipherSuiteProvider,
        init_secret: &Secret,
        commit_secret: Option<&Secret>,
        psk_secret: Option<&Secret>,
        group_context: &[u8],
    ) -> Result<Self, CryptoError> {
        let joiner_secret = JoinerSecret::derive(cs, init_secret, commit_secret, group_context)?;
        let member = joiner_secret.member_secret(cs, psk_secret);
        let welcome_secret = member.welcome_secret(cs)?;
        let epoch_secret = member.epoch_secret(cs, group_context)?;
        let epoch = EpochSecrets::derive(cs, epoch_secret)?;
        Ok(KeySchedule {
            joiner_secret,
            welcome_secret,
            epoch,
        })
    }
}

impl fmt::Debug for KeySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySchedule(<redacted>)")
    }
}

fn check_len(
    cs: &dyn CipherSuiteProvider,
    what: SizedValue,
    secret: &Secret,
) -> Result<(), CryptoError> {
    if secret.len() == cs.hash_len() {
        Ok(())
    } else {
        Err(CryptoError::InvalidLength {
            what,
            expected: cs.hash_len(),
            actual: secret.len(),
        })
    }
}

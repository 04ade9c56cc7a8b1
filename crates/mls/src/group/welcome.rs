//! Welcome and GroupInfo (RFC 9420 §12.4.3): encrypting GroupSecrets to new
//! members' init keys, encrypting and signing the GroupInfo, and the
//! joiner's side of both.

use hsmls_crypto::{CipherSuiteProvider, HpkeRecipient, PreparedEncryptContext, Secret};
use zeroize::Zeroizing;

use super::{GroupError, WelcomePart, WelcomeRule};
use crate::codec::{
    Decode, Encode, EncryptedGroupSecrets, GroupInfo, GroupSecrets, HpkeCiphertext, KeyPackageRef,
    Welcome,
};
use crate::credential::Signer;
use crate::key_schedule::{JoinerSecret, welcome_key_nonce};

/// `SignWithLabel` label of a GroupInfo (RFC 9420 §12.4.3).
pub const GROUP_INFO_TBS: &[u8] = b"GroupInfoTBS";
/// `EncryptWithLabel` label of GroupSecrets (RFC 9420 §12.4.3.1).
pub const WELCOME_LABEL: &[u8] = b"Welcome";

/// Signs a GroupInfo in place with the signer's key.
pub fn sign_group_info(
    cs: &dyn CipherSuiteProvider,
    signer: &Signer,
    group_info: &mut GroupInfo,
) -> Result<(), GroupError> {
    let tbs = group_info.to_be_signed()?;
    group_info.signature = cs.sign_with_label(
        signer.custody.as_ref(),
        &signer.signature_key,
        GROUP_INFO_TBS,
        &tbs,
    )?;
    Ok(())
}

/// Verifies a GroupInfo signature with the signer's public key.
pub fn verify_group_info(
    cs: &dyn CipherSuiteProvider,
    group_info: &GroupInfo,
    signer_public_key: &[u8],
) -> Result<(), GroupError> {
    let tbs = group_info.to_be_signed()?;
    cs.verify_with_label(
        signer_public_key,
        GROUP_INFO_TBS,
        &tbs,
        &group_info.signature,
    )
    .map_err(|_| GroupError::InvalidGroupInfoSignature)
}

/// The AEAD encryption of a GroupInfo under the welcome key and nonce
/// derived from `welcome_secret` (RFC 9420 §12.4.3.1).
pub fn encrypt_group_info(
    cs: &dyn CipherSuiteProvider,
    welcome_secret: &Secret,
    group_info: &GroupInfo,
) -> Result<Vec<u8>, GroupError> {
    let (key, nonce) = welcome_key_nonce(cs, welcome_secret)?;
    let mut buffer = group_info.encode()?;
    cs.aead_seal_in_place(key.as_bytes(), nonce.as_bytes(), &[], &mut buffer)?;
    Ok(buffer)
}

/// Decrypts a Welcome's `encrypted_group_info` with `welcome_secret`.
pub fn decrypt_group_info(
    cs: &dyn CipherSuiteProvider,
    welcome_secret: &Secret,
    encrypted_group_info: &[u8],
) -> Result<GroupInfo, GroupError> {
    let (key, nonce) = welcome_key_nonce(cs, welcome_secret)?;
    let mut buffer = encrypted_group_info.to_vec();
    cs.aead_open_in_place(key.as_bytes(), nonce.as_bytes(), &[], &mut buffer)
        .map_err(|_| GroupError::WelcomeDecryption(WelcomePart::GroupInfo))?;
    GroupInfo::decode(&buffer).map_err(GroupError::Malformed)
}

/// `EncryptWithLabel(init_key, "Welcome", encrypted_group_info,
/// group_secrets)` for one new member; `context` is
/// `cs.prepare_encrypt_context(WELCOME_LABEL, encrypted_group_info)`,
/// prepared once for all the new members of a Welcome.
pub fn encrypt_group_secrets(
    cs: &dyn CipherSuiteProvider,
    new_member: KeyPackageRef,
    init_key: &[u8],
    context: &PreparedEncryptContext,
    group_secrets: &GroupSecrets,
) -> Result<EncryptedGroupSecrets, GroupError> {
    let plaintext = Zeroizing::new(group_secrets.encode()?);
    let (kem_output, ciphertext) =
        cs.encrypt_with_prepared_context(init_key, context, &plaintext, None)?;
    Ok(EncryptedGroupSecrets {
        new_member,
        encrypted_group_secrets: HpkeCiphertext {
            kem_output,
            ciphertext,
        },
    })
}

/// Finds the entry of `welcome` for the KeyPackage `reference` and
/// decrypts its GroupSecrets with the init key (through custody when
/// `recipient` is a custody key).
pub fn decrypt_group_secrets(
    cs: &dyn CipherSuiteProvider,
    welcome: &Welcome,
    reference: &KeyPackageRef,
    recipient: &HpkeRecipient<'_>,
) -> Result<GroupSecrets, GroupError> {
    let entry = welcome
        .secrets
        .iter()
        .find(|s| &s.new_member == reference)
        .ok_or(GroupError::NotInWelcome)?;
    let plaintext = cs
        .decrypt_with_label(
            recipient,
            WELCOME_LABEL,
            &welcome.encrypted_group_info,
            &entry.encrypted_group_secrets.kem_output,
            &entry.encrypted_group_secrets.ciphertext,
        )
        .map_err(|e| match e {
            // The init key is not in custody (used and destroyed, or the
            // token failed): not a property of the Welcome.
            hsmls_crypto::CryptoError::Custody(c) => GroupError::Custody(c),
            _ => GroupError::WelcomeDecryption(WelcomePart::GroupSecrets),
        })?;
    let secrets = GroupSecrets::decode(&plaintext).map_err(GroupError::Malformed)?;
    if secrets.joiner_secret.as_slice().len() != cs.hash_len() {
        return Err(GroupError::InvalidWelcome(WelcomeRule::JoinerSecretLength));
    }
    Ok(secrets)
}

/// The `welcome_secret` for a joiner: from the joiner secret and the PSK
/// secret (RFC 9420 §8).
pub fn joiner_welcome_secret(
    cs: &dyn CipherSuiteProvider,
    joiner_secret: &JoinerSecret,
    psk_secret: Option<&Secret>,
) -> Result<Secret, GroupError> {
    Ok(joiner_secret
        .member_secret(cs, psk_secret)
        .welcome_secret(cs)?)
}

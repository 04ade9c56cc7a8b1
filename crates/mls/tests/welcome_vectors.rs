//! welcome.json (mlswg/mls-implementations test vectors): every case of
//! each implemented cipher suite (0x0001, 0x0002, 0x0003, 0x0005, 0x0007; X448 cases skipped and counted). The vector's init private key is imported into
//! SoftwareCustody and the GroupSecrets are decrypted through custody; the
//! GroupInfo is decrypted with the welcome key and nonce, its signature is
//! verified with `signer_pub`, and the key schedule run from the joiner
//! secret must reproduce the GroupInfo's confirmation tag.

use hsmls::internal::codec::{MlsMessage, MlsMessageBody};
use hsmls::internal::group::welcome::{
    decrypt_group_info, decrypt_group_secrets, joiner_welcome_secret, verify_group_info,
};
use hsmls::internal::key_schedule::{EpochSecrets, JoinerSecret};
use hsmls::internal::transcript::verify_confirmation_tag;
use hsmls::wire::{Decode, Encode};
use hsmls::{GroupError, WelcomePart};
use hsmls_crypto::{CipherSuite, HpkeRecipient, Secret};
use hsmls_custody::{KeyCustody, SoftwareCustody};
use hsmls_test_vectors::{CaseCounter, hex_bytes, load, per_suite};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    cipher_suite: u16,
    #[serde(deserialize_with = "hex_bytes")]
    init_priv: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    signer_pub: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    key_package: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    welcome: Vec<u8>,
}

#[test]
fn welcome_vectors() {
    let cases: Vec<Case> = load("welcome.json");
    let mut counter = CaseCounter::new("welcome.json");
    for case in cases {
        let Ok(cs) = CipherSuite(case.cipher_suite).provider() else {
            counter.skipped_suite(case.cipher_suite);
            continue;
        };
        let MlsMessageBody::KeyPackage(kp) = MlsMessage::decode(&case.key_package).unwrap().body
        else {
            panic!("key_package is not an MLSMessage(KeyPackage)");
        };
        let MlsMessageBody::Welcome(welcome) = MlsMessage::decode(&case.welcome).unwrap().body
        else {
            panic!("welcome is not an MLSMessage(Welcome)");
        };
        assert_eq!(welcome.cipher_suite.0, case.cipher_suite);
        let kp_ref = hsmls::wire::KeyPackageRef(
            cs.make_key_package_ref(&kp.encode().unwrap())
                .unwrap()
                .to_vec(),
        );

        let custody = SoftwareCustody::new();
        let init_key = custody.import(cs.hpke_key_spec(), &case.init_priv).unwrap();
        assert_eq!(init_key.public_key().as_bytes(), kp.init_key.as_slice());
        let recipient = HpkeRecipient::Custody {
            custody: &custody,
            key: &init_key,
        };

        let secrets = decrypt_group_secrets(cs, &welcome, &kp_ref, &recipient).unwrap();
        assert!(secrets.psks.is_empty());
        // A reference that is not in the Welcome is refused.
        let other = hsmls::wire::KeyPackageRef(vec![0; 32]);
        assert!(matches!(
            decrypt_group_secrets(cs, &welcome, &other, &recipient),
            Err(GroupError::NotInWelcome)
        ));

        let joiner =
            JoinerSecret::from_secret(cs, Secret::from_slice(secrets.joiner_secret.as_slice()))
                .unwrap();
        let welcome_secret = joiner_welcome_secret(cs, &joiner, None).unwrap();
        let group_info =
            decrypt_group_info(cs, &welcome_secret, &welcome.encrypted_group_info).unwrap();
        verify_group_info(cs, &group_info, &case.signer_pub).unwrap();
        // A wrong signer key is refused.
        assert!(matches!(
            verify_group_info(cs, &group_info, kp.leaf_node.signature_key.as_slice()),
            Err(GroupError::InvalidGroupInfoSignature)
        ));

        // Key schedule consistency: the epoch secrets derived from the
        // joiner secret and the GroupContext confirm the GroupInfo's tag.
        let context = group_info.group_context.encode().unwrap();
        let epoch_secret = joiner
            .member_secret(cs, None)
            .epoch_secret(cs, &context)
            .unwrap();
        let epoch = EpochSecrets::derive(cs, epoch_secret).unwrap();
        verify_confirmation_tag(
            cs,
            &epoch.confirmation_key,
            &group_info.group_context.confirmed_transcript_hash,
            &group_info.confirmation_tag,
        )
        .unwrap();
        // A tampered GroupInfo ciphertext does not decrypt.
        let mut tampered = welcome.encrypted_group_info.clone();
        if let Some(b) = tampered.last_mut() {
            *b ^= 1;
        }
        assert!(matches!(
            decrypt_group_info(cs, &welcome_secret, &tampered),
            Err(GroupError::WelcomeDecryption(WelcomePart::GroupInfo))
        ));
        counter.ran_suite(case.cipher_suite);
    }
    counter.finish_per_suite(&per_suite(1));
}

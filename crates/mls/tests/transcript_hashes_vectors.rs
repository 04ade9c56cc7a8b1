//! transcript-hashes.json (mlswg/mls-implementations test vectors): every
//! case of each implemented cipher suite (0x0001, 0x0002, 0x0003, 0x0005, 0x0007; X448 cases skipped and counted). The serialized AuthenticatedContent is
//! decoded, both transcript hashes are computed and compared, and its
//! confirmation tag is checked with the vector's confirmation key.

use hsmls::error::TranscriptError;
use hsmls::internal::codec::{AuthenticatedContent, FramedContentBody, Mac};
use hsmls::internal::transcript::{
    ConfirmedTranscriptHashInput, InterimTranscriptHashInput, TranscriptHashes, confirmation_tag,
    confirmed_transcript_hash, interim_transcript_hash, verify_confirmation_tag,
};
use hsmls::wire::{Decode, Encode, WireFormat};
use hsmls_crypto::{CipherSuite, Secret};
use hsmls_test_vectors::{CaseCounter, hex_bytes, load, per_suite};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    cipher_suite: u16,
    #[serde(deserialize_with = "hex_bytes")]
    confirmation_key: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    authenticated_content: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    interim_transcript_hash_before: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    confirmed_transcript_hash_after: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    interim_transcript_hash_after: Vec<u8>,
}

#[test]
fn transcript_hashes_vectors() {
    let cases: Vec<Case> = load("transcript-hashes.json");
    let mut counter = CaseCounter::new("transcript-hashes.json");
    for case in cases {
        let Ok(cs) = CipherSuite(case.cipher_suite).provider() else {
            counter.skipped_suite(case.cipher_suite);
            continue;
        };
        let ac = AuthenticatedContent::decode(&case.authenticated_content).unwrap();
        assert_eq!(ac.encode().unwrap(), case.authenticated_content);
        assert!(matches!(ac.content.body, FramedContentBody::Commit(_)));

        // Step by step.
        let confirmed = confirmed_transcript_hash(
            cs,
            &case.interim_transcript_hash_before,
            &ConfirmedTranscriptHashInput::new(&ac).unwrap(),
        )
        .unwrap();
        assert_eq!(confirmed.as_bytes(), case.confirmed_transcript_hash_after);
        let interim = interim_transcript_hash(
            cs,
            &confirmed,
            &InterimTranscriptHashInput::new(&ac).unwrap(),
        )
        .unwrap();
        assert_eq!(interim.as_bytes(), case.interim_transcript_hash_after);

        // Through TranscriptHashes.
        let before = TranscriptHashes {
            confirmed: Vec::new(),
            interim: case.interim_transcript_hash_before.clone(),
        };
        let after = before.next(cs, &ac).unwrap();
        assert_eq!(after.confirmed, case.confirmed_transcript_hash_after);
        assert_eq!(after.interim, case.interim_transcript_hash_after);
        // A joiner's view from the GroupInfo gives the same interim hash.
        let tag = ac.auth.confirmation_tag.clone().unwrap();
        let joiner =
            TranscriptHashes::from_group_info(cs, &case.confirmed_transcript_hash_after, &tag)
                .unwrap();
        assert_eq!(joiner, after);

        // The confirmation tag inside the content.
        let key = Secret::from_slice(&case.confirmation_key);
        verify_confirmation_tag(cs, &key, &case.confirmed_transcript_hash_after, &tag).unwrap();
        assert_eq!(
            confirmation_tag(cs, &key, &case.confirmed_transcript_hash_after),
            tag
        );
        // ... and it fails with another key or another hash.
        let mut wrong_key = case.confirmation_key.clone();
        wrong_key[0] ^= 1;
        assert!(matches!(
            verify_confirmation_tag(
                cs,
                &Secret::from_vec(wrong_key),
                &case.confirmed_transcript_hash_after,
                &tag
            ),
            Err(TranscriptError::InvalidConfirmationTag)
        ));
        assert!(matches!(
            verify_confirmation_tag(cs, &key, &case.interim_transcript_hash_after, &tag),
            Err(TranscriptError::InvalidConfirmationTag)
        ));
        assert!(matches!(
            verify_confirmation_tag(
                cs,
                &key,
                &case.confirmed_transcript_hash_after,
                &Mac(vec![])
            ),
            Err(TranscriptError::InvalidConfirmationTag)
        ));

        // Another wire format changes the confirmed hash.
        let mut other = ac.clone();
        other.wire_format = if ac.wire_format == WireFormat::PUBLIC_MESSAGE {
            WireFormat::PRIVATE_MESSAGE
        } else {
            WireFormat::PUBLIC_MESSAGE
        };
        assert_ne!(before.next(cs, &other).unwrap().confirmed, after.confirmed);
        // Without a confirmation tag there is no interim hash.
        let mut untagged = ac.clone();
        untagged.auth.confirmation_tag = None;
        assert!(matches!(
            before.next(cs, &untagged),
            Err(TranscriptError::MissingConfirmationTag)
        ));
        // The confirmed hash needs only the signature.
        assert_eq!(
            confirmed_transcript_hash(
                cs,
                &case.interim_transcript_hash_before,
                &ConfirmedTranscriptHashInput::new(&untagged).unwrap()
            )
            .unwrap(),
            confirmed
        );
        // Non-commits are refused.
        let mut app = ac.clone();
        app.content.body = FramedContentBody::Application(b"hi".to_vec());
        assert!(matches!(
            ConfirmedTranscriptHashInput::new(&app),
            Err(TranscriptError::NotACommit(_))
        ));
        counter.ran_suite(case.cipher_suite);
    }
    counter.finish_per_suite(&per_suite(1));
}

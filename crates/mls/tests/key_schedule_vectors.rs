//! key-schedule.json (mlswg/mls-implementations test vectors): every case of
//! each implemented cipher suite (0x0001, 0x0002, 0x0003, 0x0005, 0x0007; X448 cases skipped and counted), every epoch, every output.

use hsmls::internal::key_schedule::{JoinerSecret, KeySchedule};
use hsmls_crypto::{CipherSuite, Secret};
use hsmls_test_vectors::{CaseCounter, hex_bytes, load, per_suite};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    cipher_suite: u16,
    #[serde(deserialize_with = "hex_bytes")]
    initial_init_secret: Vec<u8>,
    epochs: Vec<Epoch>,
}

#[derive(Deserialize)]
struct Epoch {
    #[serde(deserialize_with = "hex_bytes")]
    group_context: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    commit_secret: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    psk_secret: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    joiner_secret: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    welcome_secret: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    init_secret: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    sender_data_secret: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    encryption_secret: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    exporter_secret: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    epoch_authenticator: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    external_secret: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    confirmation_key: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    membership_key: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    resumption_psk: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    external_pub: Vec<u8>,
    exporter: Exporter,
}

#[derive(Deserialize)]
struct Exporter {
    /// A text label: the vectors use a random hex string, taken as its
    /// ASCII bytes (not hex-decoded).
    label: String,
    #[serde(deserialize_with = "hex_bytes")]
    context: Vec<u8>,
    length: usize,
    #[serde(deserialize_with = "hex_bytes")]
    secret: Vec<u8>,
}

#[test]
fn key_schedule_vectors() {
    let cases: Vec<Case> = load("key-schedule.json");
    let mut counter = CaseCounter::new("key-schedule.json");
    let mut epochs_run = 0;
    for case in cases {
        let Ok(cs) = CipherSuite(case.cipher_suite).provider() else {
            counter.skipped_suite(case.cipher_suite);
            continue;
        };
        let mut init_secret = Secret::from_vec(case.initial_init_secret);
        for (n, e) in case.epochs.iter().enumerate() {
            let commit_secret = Secret::from_slice(&e.commit_secret);
            let psk_secret = Secret::from_slice(&e.psk_secret);
            let ks = KeySchedule::run(
                cs,
                &init_secret,
                Some(&commit_secret),
                Some(&psk_secret),
                &e.group_context,
            )
            .unwrap();
            let check = |name: &str, got: &Secret, want: &[u8]| {
                assert_eq!(got.as_bytes(), want, "epoch {n}: {name}");
            };
            check(
                "joiner_secret",
                ks.joiner_secret.as_secret(),
                &e.joiner_secret,
            );
            check("welcome_secret", &ks.welcome_secret, &e.welcome_secret);
            let s = &ks.epoch;
            check("init_secret", &s.init_secret, &e.init_secret);
            check(
                "sender_data_secret",
                &s.sender_data_secret,
                &e.sender_data_secret,
            );
            check(
                "encryption_secret",
                &s.encryption_secret,
                &e.encryption_secret,
            );
            check("exporter_secret", &s.exporter_secret, &e.exporter_secret);
            check(
                "epoch_authenticator",
                &s.epoch_authenticator,
                &e.epoch_authenticator,
            );
            check("external_secret", &s.external_secret, &e.external_secret);
            check("confirmation_key", &s.confirmation_key, &e.confirmation_key);
            check("membership_key", &s.membership_key, &e.membership_key);
            check("resumption_psk", &s.resumption_psk, &e.resumption_psk);
            let external = s.external_key_pair(cs).unwrap();
            assert_eq!(
                external.public_key().as_bytes(),
                e.external_pub.as_slice(),
                "epoch {n}: external_pub"
            );
            let exported = s
                .mls_exporter(
                    cs,
                    e.exporter.label.as_bytes(),
                    &e.exporter.context,
                    e.exporter.length,
                )
                .unwrap();
            check("exporter.secret", &exported, &e.exporter.secret);

            // A new member that gets only joiner_secret (GroupSecrets) reaches
            // the same welcome secret and epoch secrets.
            let joiner =
                JoinerSecret::from_secret(cs, Secret::from_slice(&e.joiner_secret)).unwrap();
            let member = joiner.member_secret(cs, Some(&psk_secret));
            check(
                "welcome_secret (joiner)",
                &member.welcome_secret(cs).unwrap(),
                &e.welcome_secret,
            );
            let epoch_secret = member.epoch_secret(cs, &e.group_context).unwrap();
            let joined =
                hsmls::internal::key_schedule::EpochSecrets::derive(cs, epoch_secret).unwrap();
            check(
                "encryption_secret (joiner)",
                &joined.encryption_secret,
                &e.encryption_secret,
            );

            init_secret = ks.epoch.init_secret.clone();
            epochs_run += 1;
        }
        counter.ran_suite(case.cipher_suite);
    }
    counter.finish_per_suite(&per_suite(1));
    assert_eq!(epochs_run, 5 * 5, "5 epochs in each of the 5 suites' cases");
}

#[test]
fn external_init_round_trip() {
    let cs = CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256
        .provider()
        .unwrap();
    let ks = KeySchedule::run(cs, &Secret::zero(32), None, None, b"group context").unwrap();
    let external_pub = ks.epoch.external_key_pair(cs).unwrap();
    let (kem_output, joiner_init) =
        hsmls::internal::key_schedule::external_init(cs, external_pub.public_key().as_bytes())
            .unwrap();
    let member_init = ks.epoch.external_init_secret(cs, &kem_output).unwrap();
    assert_eq!(joiner_init, member_init);
    assert_eq!(joiner_init.len(), 32);
    assert!(format!("{:?}", ks.epoch).contains("redacted"));
}

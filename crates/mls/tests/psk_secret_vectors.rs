//! psk_secret.json (mlswg/mls-implementations test vectors): every case of
//! each implemented cipher suite (0x0001, 0x0002, 0x0003, 0x0005, 0x0007; X448 cases skipped and counted).

use hsmls::internal::psk::{PskInput, psk_secret};
use hsmls::wire::{PreSharedKeyId, Psk};
use hsmls_crypto::{CipherSuite, Secret};
use hsmls_test_vectors::{CaseCounter, hex_bytes, load, per_suite};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    cipher_suite: u16,
    psks: Vec<PskCase>,
    #[serde(deserialize_with = "hex_bytes")]
    psk_secret: Vec<u8>,
}

#[derive(Deserialize)]
struct PskCase {
    #[serde(deserialize_with = "hex_bytes")]
    psk_id: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    psk: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    psk_nonce: Vec<u8>,
}

#[test]
fn psk_secret_vectors() {
    let cases: Vec<Case> = load("psk_secret.json");
    let mut counter = CaseCounter::new("psk_secret.json");
    for case in cases {
        let Ok(cs) = CipherSuite(case.cipher_suite).provider() else {
            counter.skipped_suite(case.cipher_suite);
            continue;
        };
        // The vectors' PSKs are external PSKs (test-vectors.md).
        let ids: Vec<PreSharedKeyId> = case
            .psks
            .iter()
            .map(|p| PreSharedKeyId {
                psk: Psk::External(p.psk_id.clone()),
                psk_nonce: p.psk_nonce.clone(),
            })
            .collect();
        let values: Vec<Secret> = case
            .psks
            .iter()
            .map(|p| Secret::from_slice(&p.psk))
            .collect();
        let inputs: Vec<PskInput<'_>> = ids
            .iter()
            .zip(&values)
            .map(|(id, psk)| PskInput { id, psk })
            .collect();
        let out = psk_secret(cs, &inputs).unwrap();
        assert_eq!(
            out.as_bytes(),
            case.psk_secret.as_slice(),
            "{} PSKs",
            case.psks.len()
        );
        counter.ran_suite(case.cipher_suite);
    }
    counter.finish_per_suite(&per_suite(11));
}

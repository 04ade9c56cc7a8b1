//! passive-client-welcome.json, passive-client-handling-commit.json and
//! passive-client-random.json (mlswg/mls-implementations test vectors):
//! every case of the five implemented cipher suites (0x0001, 0x0002,
//! 0x0003, 0x0005, 0x0007; the X448 cases are skipped and counted), driven
//! through the public [`Group`] API.
//!
//! For each case the vector's private keys (`init_priv`, `encryption_priv`,
//! `signature_priv`) are imported into a [`SoftwareCustody`], the
//! KeyPackage is validated and bundled with the imported key references,
//! and the passive client joins from the Welcome (with the out-of-band
//! `ratchet_tree` when the vector gives one, and the vector's external
//! PSKs). The `initial_epoch_authenticator` must match; then for each
//! epoch the client processes the proposals and the commit as a passive
//! member (RFC 9420 §12.4.2) and the `epoch_authenticator` must match; a
//! tampered copy of each commit is refused first and leaves the state as it
//! was.
//!
//! passive-client-random.json holds one suite-0x0001 case (a long random
//! run of epochs).

use std::sync::Arc;

use hsmls::KeyPackageIn;
use hsmls::PskStore;
use hsmls::error::ProtectionError;
use hsmls::internal::codec::{MlsMessage, MlsMessageBody};
use hsmls::wire::{Decode, Encode, RatchetTree};
use hsmls::{
    BasicCredentialValidator, Client, CredentialValidator, GroupError, JoinOptions,
    KeyPackageBundle, ProcessedMessage, Signer, WelcomePart,
};
use hsmls_crypto::{CipherSuite, Secret};
use hsmls_custody::{CustodyError, KeyCustody, KeySpec, SoftwareCustody};
use hsmls_test_vectors::{CaseCounter, hex_bytes, left_pad, load, per_suite};
use serde::Deserialize;

/// The suite of the harness's sanity checks.
const SUITE: u16 = 2;

/// Imports a vector's private key of `spec` (P-521 keys may come a byte
/// short: left-padded to Nsk).
fn import(
    custody: &SoftwareCustody,
    spec: KeySpec,
    private: &[u8],
) -> Result<hsmls_custody::KeyRef, CustodyError> {
    custody.import(spec, &left_pad(private, spec.private_key_len()))
}

#[derive(Deserialize)]
struct ExternalPsk {
    #[serde(deserialize_with = "hex_bytes")]
    psk_id: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    psk: Vec<u8>,
}

#[derive(Deserialize)]
struct Epoch {
    proposals: Vec<HexBytes>,
    #[serde(deserialize_with = "hex_bytes")]
    commit: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    epoch_authenticator: Vec<u8>,
}

#[derive(Deserialize)]
struct HexBytes(#[serde(deserialize_with = "hex_bytes")] Vec<u8>);

#[derive(Deserialize)]
struct Case {
    cipher_suite: u16,
    external_psks: Vec<ExternalPsk>,
    #[serde(deserialize_with = "hex_bytes")]
    key_package: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    signature_priv: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    encryption_priv: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    init_priv: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    welcome: Vec<u8>,
    #[serde(default, deserialize_with = "opt_hex_bytes")]
    ratchet_tree: Option<Vec<u8>>,
    #[serde(deserialize_with = "hex_bytes")]
    initial_epoch_authenticator: Vec<u8>,
    epochs: Vec<Epoch>,
}

fn opt_hex_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    let s: Option<String> = Deserialize::deserialize(d)?;
    s.map(|s| hex::decode(s).map_err(serde::de::Error::custom))
        .transpose()
}

fn psk_store(psks: &[ExternalPsk]) -> PskStore {
    let mut store = PskStore::default();
    for p in psks {
        store.insert_external(p.psk_id.clone(), Secret::from_slice(&p.psk));
    }
    store
}

/// Runs one case; returns a description of the first divergence.
fn run_case(case: &Case) -> Result<(), String> {
    let validator: Arc<dyn CredentialValidator> = Arc::new(BasicCredentialValidator::default());
    let custody = Arc::new(SoftwareCustody::new());
    let kp_in =
        KeyPackageIn::from_bytes(&case.key_package).map_err(|e| format!("key_package: {e}"))?;
    let lifetime = match &kp_in.0.leaf_node.leaf_node_source {
        hsmls::wire::LeafNodeSource::KeyPackage(l) => *l,
        _ => return Err("key_package leaf is not of source key_package".into()),
    };
    // A time inside the vector's KeyPackage lifetime.
    let now = lifetime.not_before + (lifetime.not_after - lifetime.not_before) / 2;
    let key_package = kp_in
        .validate(
            hsmls::wire::CipherSuite(case.cipher_suite),
            validator.as_ref(),
            now,
        )
        .map_err(|e| format!("key_package validation: {e}"))?;

    let cs = CipherSuite(case.cipher_suite)
        .provider()
        .map_err(|e| format!("cipher suite: {e}"))?;
    let init_key = import(&custody, cs.hpke_key_spec(), &case.init_priv)
        .map_err(|e| format!("import init_priv: {e}"))?;
    let encryption_key = import(&custody, cs.hpke_key_spec(), &case.encryption_priv)
        .map_err(|e| format!("import encryption_priv: {e}"))?;
    let signature_key = import(&custody, cs.signature_key_spec(), &case.signature_priv)
        .map_err(|e| format!("import signature_priv: {e}"))?;
    // The imported keys are the KeyPackage's.
    let wire = key_package.as_wire();
    if init_key.public_key().as_bytes() != wire.init_key.as_slice()
        || encryption_key.public_key().as_bytes() != wire.leaf_node.encryption_key.as_slice()
        || signature_key.public_key().as_bytes() != wire.leaf_node.signature_key.as_slice()
    {
        return Err("imported private keys do not match the KeyPackage".into());
    }
    let signer = Signer::new(
        custody.clone(),
        signature_key,
        wire.leaf_node.credential.clone(),
    );
    let bundle = KeyPackageBundle::from_keys(key_package, init_key.clone(), encryption_key);

    let ratchet_tree = match &case.ratchet_tree {
        Some(bytes) => Some(RatchetTree::decode(bytes).map_err(|e| format!("ratchet_tree: {e}"))?),
        None => None,
    };
    let mut group = Client::new(signer, validator)
        .join_from_welcome(&bundle, &case.welcome, {
            let mut join = JoinOptions::default();
            join.ratchet_tree = ratchet_tree;
            join.psks = psk_store(&case.external_psks);
            join
        })
        .map_err(|e| format!("join_from_welcome: {e}"))?;
    if group.epoch_authenticator() != case.initial_epoch_authenticator.as_slice() {
        return Err("initial_epoch_authenticator differs".into());
    }
    // §9.2: the used init key is gone from custody.
    match custody.dh(&init_key, wire_init_key(&bundle).as_slice()) {
        Err(CustodyError::KeyNotFound(_)) => {}
        other => return Err(format!("init key not destroyed after the join: {other:?}")),
    }

    for (n, epoch) in case.epochs.iter().enumerate() {
        let start = group.epoch();
        for (p, proposal) in epoch.proposals.iter().enumerate() {
            match group.process_incoming(&proposal.0, now) {
                Ok(ProcessedMessage::Proposal { .. }) => {}
                Ok(other) => {
                    return Err(format!("epoch {n} proposal {p}: unexpected {other:?}"));
                }
                Err(e) => return Err(format!("epoch {n} proposal {p}: {e}")),
            }
        }
        // A copy of the commit with its last byte altered (inside the
        // signature, membership tag or AEAD tag) is refused and changes
        // nothing.
        let mut tampered = epoch.commit.clone();
        if let Some(b) = tampered.last_mut() {
            *b ^= 0x01;
        }
        let before = group.state_snapshot();
        let public = matches!(
            MlsMessage::decode(&epoch.commit).map(|m| m.body),
            Ok(MlsMessageBody::PublicMessage(_))
        );
        match (public, group.process_incoming(&tampered, now)) {
            (true, Err(GroupError::Protection(ProtectionError::InvalidMembershipTag)))
            | (false, Err(GroupError::Protection(ProtectionError::ContentDecryption))) => {}
            (_, other) => {
                return Err(format!(
                    "epoch {n}: tampered commit (public: {public}): {other:?}"
                ));
            }
        }
        if group.state_snapshot() != before {
            return Err(format!("epoch {n}: a rejected commit changed the state"));
        }
        let staged = match group.process_incoming(&epoch.commit, now) {
            Ok(ProcessedMessage::StagedCommit(s)) => s,
            Ok(other) => return Err(format!("epoch {n} commit: unexpected {other:?}")),
            Err(e) => return Err(format!("epoch {n} commit: {e}")),
        };
        group
            .merge_staged_commit(staged)
            .map_err(|e| format!("epoch {n} merge: {e}"))?;
        if group.epoch() != start + 1 {
            return Err(format!("epoch {n}: epoch did not advance by one"));
        }
        if group.epoch_authenticator() != epoch.epoch_authenticator.as_slice() {
            return Err(format!("epoch {n}: epoch_authenticator differs"));
        }
    }
    Ok(())
}

fn wire_init_key(bundle: &KeyPackageBundle) -> Vec<u8> {
    bundle.key_package.as_wire().init_key.as_slice().to_vec()
}

fn run_file(file: &'static str, expected: &[(u16, usize)]) {
    let cases: Vec<Case> = load(file);
    let mut counter = CaseCounter::new(file);
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        if CipherSuite(case.cipher_suite).provider().is_err() {
            counter.skipped_suite(case.cipher_suite);
            continue;
        }
        match run_case(case) {
            Ok(()) => counter.ran_suite(case.cipher_suite),
            Err(e) => failures.push(format!("case {i}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{file}: {} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    counter.finish_per_suite(expected);
}

#[test]
fn passive_client_welcome() {
    run_file("passive-client-welcome.json", &per_suite(8));
}

#[test]
fn passive_client_handling_commit() {
    run_file("passive-client-handling-commit.json", &per_suite(13));
}

#[test]
fn passive_client_random() {
    run_file("passive-client-random.json", &[(0x0001, 1)]);
}

/// A sanity check of the harness itself: a Welcome whose ciphertext was
/// altered is refused, so the vector test can fail.
#[test]
fn tampered_welcome_is_refused() {
    let cases: Vec<Case> = load("passive-client-welcome.json");
    let mut case = cases
        .into_iter()
        .find(|c| c.cipher_suite == SUITE)
        .expect("a suite-2 case");
    let MlsMessageBody::Welcome(mut welcome) = MlsMessage::decode(&case.welcome).unwrap().body
    else {
        panic!("welcome is not an MLSMessage(Welcome)");
    };
    let last = welcome.encrypted_group_info.len() - 1;
    welcome.encrypted_group_info[last] ^= 1;
    case.welcome = MlsMessage {
        body: MlsMessageBody::Welcome(welcome),
    }
    .encode()
    .unwrap();
    // The encrypted GroupInfo is the HPKE context of the GroupSecrets
    // (RFC 9420 §12.4.3.1): the GroupSecrets no longer decrypt.
    assert_eq!(
        run_case(&case).unwrap_err(),
        format!(
            "join_from_welcome: {}",
            GroupError::WelcomeDecryption(WelcomePart::GroupSecrets)
        )
    );
}

//! Saved group state sealed by the SoftHSM token's state-sealing key
//! (`Pkcs11Custody::state_sealer`, AES-256-GCM in the token): a group with
//! its keys in the token saves and loads; a blob of another token key, of
//! the software custody, altered in its body or truncated is refused with
//! its variant. (Restarts across processes: `crates/storage/tests`.)

#[allow(dead_code)]
mod common;

use std::sync::Arc;

use hsmls::{Client, KeyPackageConfig, StateError};
use hsmls_custody::{KeyCustody, Pkcs11Custody, SoftwareCustody, StateSealer};

use common::{NOW, member, pkcs11_config, validator};

#[test]
fn a_token_sealed_state_loads_and_other_keys_or_alterations_are_refused() {
    let custody = Arc::new(Pkcs11Custody::open(&pkcs11_config()).unwrap());
    let sealer = custody.state_sealer().unwrap();
    let mut alice = member(custody.clone(), "alice");
    let client = Client::new(alice.signer.clone(), validator());
    let group = client
        .create_group(b"sealed in the token".to_vec(), Vec::new(), NOW)
        .unwrap();
    let bundle = client
        .generate_key_package(&KeyPackageConfig::new(NOW, 60))
        .unwrap();
    let saved = group.save(&sealer).unwrap();
    let load = |sealer: &dyn StateSealer, state: &[u8]| {
        client.load_group(
            sealer,
            b"sealed in the token",
            state,
            &saved.tree_records,
            &[],
        )
    };
    let loaded = load(&sealer, &saved.state).unwrap();
    assert!(loaded.state_snapshot() == group.state_snapshot());

    // Another key of the same token (another label), and the software
    // custody's key: "another token".
    let mut other_config = pkcs11_config();
    other_config.state_seal_key_label = "hsmls-test-other-seal".into();
    let other = Arc::new(Pkcs11Custody::open(&other_config).unwrap())
        .state_sealer()
        .unwrap();
    assert!(matches!(
        load(&other, &saved.state),
        Err(StateError::SealedByAnotherKey { .. })
    ));
    let software = SoftwareCustody::new();
    assert!(matches!(
        load(software.state_sealer(), &saved.state),
        Err(StateError::SealedByAnotherKey { .. })
    ));
    // A blob of another key, relabelled with this key's id, does not open.
    let foreign = group.save(software.state_sealer()).unwrap();
    let mut relabelled = foreign.state.clone();
    relabelled[12..28].copy_from_slice(sealer.key_id());
    assert!(matches!(
        load(&sealer, &relabelled),
        Err(StateError::Altered)
    ));
    // Altered body bytes (nonce, ciphertext, tag) and truncation.
    let body = saved.state.len() - 100;
    for i in [73, 80, body, saved.state.len() - 1] {
        let mut bad = saved.state.clone();
        bad[i] ^= 0x40;
        assert!(
            matches!(load(&sealer, &bad), Err(StateError::Altered)),
            "{i}"
        );
    }
    assert!(matches!(
        load(&sealer, &saved.state[..saved.state.len() - 1]),
        Err(StateError::Truncated)
    ));

    // The KeyPackage bundle too.
    let saved_kp = client.save_key_package(&bundle, &sealer).unwrap();
    let loaded_kp = client
        .load_key_package(&sealer, &saved_kp.reference, &saved_kp.data)
        .unwrap();
    assert!(loaded_kp == bundle);
    assert!(matches!(
        client.load_key_package(&other, &saved_kp.reference, &saved_kp.data),
        Err(StateError::SealedByAnotherKey { .. })
    ));

    // Clean up: the test's seal key and the signature key (the token's own
    // sealing key stays; HPKE keys are session objects).
    other.destroy().unwrap();
    bundle.destroy(&alice.signer).unwrap();
    custody.destroy(&alice.signer.signature_key).unwrap();
    alice.group = None;
}

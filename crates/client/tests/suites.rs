//! A client's cipher suite (`cipher_suite` in its configuration): a
//! 0x0001 client on SoftHSM, whose token has no X25519, is refused at
//! open unless its PKCS#11 configuration keeps such HPKE keys in software
//! (`hpke_keys = "token-else-software"`); then its signature key is an
//! Ed25519 key in the token, its HPKE keys are sealed under the token's
//! key, and two such clients make a group and talk, also after one of
//! them restarts from its state file.

mod common;

use common::{Env, identity, pkcs11_config_path, wait_for};
use hsmls_client::{ClientError, ClientEvent, ClientRuntime, CustodyConfig, GroupMode};

/// The test token's PKCS#11 configuration with `hpke_keys` set.
fn token_else_software(env: &Env) -> std::path::PathBuf {
    let text = std::fs::read_to_string(pkcs11_config_path()).unwrap();
    let path = env.dir.path().join("pkcs11-token-else-software.toml");
    std::fs::write(
        &path,
        format!("{text}\nhpke_keys = \"token-else-software\"\n"),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0x0001_client_needs_software_hpke_keys_and_then_talks() {
    let mut env = Env::start().await;
    // The default (hpke_keys = "token") refuses at open, naming the suite
    // and the key kind.
    let mut refused = env.config("alice");
    refused.cipher_suite = 0x0001;
    let e = ClientRuntime::open(refused).await.unwrap_err();
    assert!(
        matches!(
            &e,
            ClientError::SuiteKeyRefused { suite: 1, kind: "HPKE", reason, .. }
                if reason.contains("hpke_keys")
        ),
        "{e:?}"
    );

    let pkcs11 = token_else_software(&env);
    let mut clients = Vec::new();
    for name in ["alice", "bob"] {
        let mut c = env.config(name);
        c.cipher_suite = 0x0001;
        c.custody = CustodyConfig::Pkcs11 {
            config: pkcs11.clone(),
        };
        clients.push(env.enrol(c).await);
    }
    let (alice, bob) = (clients[0].clone(), clients[1].clone());
    // The certificate's key is an Ed25519 key in the token.
    let (chain, _, _) = alice.certificate().unwrap();
    let info = hsmls_credentials::leaf_info(&chain[0]).unwrap();
    assert_eq!(info.scheme, hsmls_custody::SignatureScheme::Ed25519);
    assert!(alice.signature_key_uri().unwrap().starts_with("pkcs11:"));

    let mut eb = bob.events();
    for c in [&alice, &bob] {
        c.start();
    }
    let g = alice.create_group(GroupMode::Assisted).await.unwrap();
    alice.add_members(&g, &[&identity("bob")]).await.unwrap();
    wait_for(&mut eb, "bob", |e| matches!(e, ClientEvent::Joined { .. })).await;
    alice.send(&g, b"suite one").await.unwrap();
    let (e, _) = wait_for(&mut eb, "bob", |e| matches!(e, ClientEvent::Message { .. })).await;
    let ClientEvent::Message { data, .. } = e else {
        unreachable!()
    };
    assert_eq!(data, b"suite one");

    // Bob restarts: his leaf's X25519 key is found again from its sealed
    // URI, and he reads what comes next.
    bob.shutdown().await;
    let mut c = env.config("bob");
    c.cipher_suite = 0x0001;
    c.custody = CustodyConfig::Pkcs11 { config: pkcs11 };
    let bob = ClientRuntime::open(c).await.unwrap();
    env.track(&bob);
    let mut eb = bob.events();
    bob.start();
    alice.send(&g, b"after the restart").await.unwrap();
    let (e, _) = wait_for(&mut eb, "bob", |e| matches!(e, ClientEvent::Message { .. })).await;
    let ClientEvent::Message { data, .. } = e else {
        unreachable!()
    };
    assert_eq!(data, b"after the restart");
    env.stop().await;
}

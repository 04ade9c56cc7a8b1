//! Runs the `hsmls-interop-client` binary itself on a loopback port, with
//! software custody and with the SoftHSM token (`HSMLS_PKCS11_CONFIG`, set
//! by `scripts/test.sh`), and drives a two-member group through it on
//! each suite: with the token, the NIST suites keep every key there, and
//! the X25519 suites are refused unless the configuration file says
//! `hpke_keys = "token-else-software"`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hsmls_interop::proto::mls_client_client::MlsClientClient;
use hsmls_interop::proto::*;
use tonic::transport::Channel;

/// Kills the child process on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where the spawned client keeps its keys.
#[derive(Clone, Copy)]
enum Keys<'a> {
    Software,
    /// The token of `HSMLS_PKCS11_CONFIG`.
    Token,
    /// The token, with the configuration file at this path.
    TokenWith(&'a std::path::Path),
}

async fn spawn(keys: Keys<'_>) -> (Running, MlsClientClient<Channel>) {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hsmls-interop-client"));
    cmd.arg("--port").arg(port.to_string());
    match keys {
        Keys::Software => {}
        Keys::Token => {
            cmd.arg("--pkcs11");
        }
        Keys::TokenWith(config) => {
            cmd.arg("--pkcs11").env("HSMLS_PKCS11_CONFIG", config);
        }
    }
    let child = Running(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if let Ok(c) = MlsClientClient::connect(url.clone()).await {
            return (child, c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the interop client did not listen on {url}");
}

/// alice creates a group of `suite`, bob joins by Welcome, they exchange
/// a message and agree on the epoch authenticator and an exported secret.
async fn two_members(
    a: &mut MlsClientClient<Channel>,
    b: &mut MlsClientClient<Channel>,
    suite: u32,
) {
    assert_eq!(
        a.supported_ciphersuites(SupportedCiphersuitesRequest {})
            .await
            .unwrap()
            .into_inner()
            .ciphersuites,
        vec![1, 2, 3, 5, 7]
    );
    let alice = a
        .create_group(CreateGroupRequest {
            group_id: b"binary".to_vec(),
            cipher_suite: suite,
            encrypt_handshake: true,
            identity: b"alice".to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .state_id;
    let kp = b
        .create_key_package(CreateKeyPackageRequest {
            cipher_suite: suite,
            identity: b"bob".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let out = a
        .commit(CommitRequest {
            state_id: alice,
            by_reference: vec![],
            by_value: vec![ProposalDescription {
                proposal_type: b"add".to_vec(),
                key_package: kp.key_package,
                ..Default::default()
            }],
            force_path: false,
            external_tree: false,
        })
        .await
        .unwrap()
        .into_inner();
    let auth = a
        .handle_pending_commit(HandlePendingCommitRequest { state_id: alice })
        .await
        .unwrap()
        .into_inner()
        .epoch_authenticator;
    let bob = b
        .join_group(JoinGroupRequest {
            transaction_id: kp.transaction_id,
            welcome: out.welcome,
            encrypt_handshake: true,
            identity: b"bob".to_vec(),
            ratchet_tree: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bob.epoch_authenticator, auth);
    let ct = a
        .protect(ProtectRequest {
            state_id: alice,
            authenticated_data: vec![],
            plaintext: b"over the binary".to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let pt = b
        .unprotect(UnprotectRequest {
            state_id: bob.state_id,
            ciphertext: ct,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pt.plaintext, b"over the binary");
    let export = |state_id| ExportRequest {
        state_id,
        label: "l".into(),
        context: vec![],
        key_length: 16,
    };
    let ea = a.export(export(alice)).await.unwrap().into_inner();
    let eb = b.export(export(bob.state_id)).await.unwrap().into_inner();
    assert_eq!(ea.exported_secret.len(), 16);
    assert_eq!(ea.exported_secret, eb.exported_secret);
    for (c, id) in [(a, alice), (b, bob.state_id)] {
        c.free(FreeRequest { state_id: id }).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_with_software_custody() {
    let (_a, mut a) = spawn(Keys::Software).await;
    let (_b, mut b) = spawn(Keys::Software).await;
    for suite in [1, 2, 3, 5, 7] {
        two_members(&mut a, &mut b, suite).await;
    }
}

/// The SoftHSM token's configuration file. Fails (never skips) without it.
fn token_config() -> std::path::PathBuf {
    std::env::var_os("HSMLS_PKCS11_CONFIG")
        .expect(
            "HSMLS_PKCS11_CONFIG is not set: run `bash scripts/test.sh` (it sets up the SoftHSM token)",
        )
        .into()
}

/// One test process at a time opens the SoftHSM token: SoftHSM keeps it
/// in files that several processes writing at once can make unreadable to
/// a process opening it meanwhile ("no token with label").
static TOKEN_USERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Suites 0x0002, 0x0005 and 0x0007: every key in the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_with_pkcs11_custody() {
    token_config();
    let _token = TOKEN_USERS.lock().await;
    let (_a, mut a) = spawn(Keys::Token).await;
    let (_b, mut b) = spawn(Keys::Software).await;
    for suite in [2, 5, 7] {
        two_members(&mut a, &mut b, suite).await;
        two_members(&mut b, &mut a, suite).await;
    }
}

/// Suites 0x0001 and 0x0003 with the token: refused (FAILED_PRECONDITION,
/// naming the rule) with the default configuration, which keeps HPKE keys
/// in the token only; run with `hpke_keys = "token-else-software"` (a copy
/// of the test token's configuration file with that line), signature keys
/// in the token and X25519 HPKE keys in process memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_with_pkcs11_custody_x25519() {
    let original = token_config();
    let _token = TOKEN_USERS.lock().await;
    let (_a, mut a) = spawn(Keys::Token).await;
    for suite in [1, 3] {
        let e = a
            .create_key_package(CreateKeyPackageRequest {
                cipher_suite: suite,
                identity: b"bob".to_vec(),
            })
            .await
            .expect_err("X25519 HPKE keys are refused by default");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert!(
            e.message().contains("no custody for HPKE keys") && e.message().contains("hpke_keys"),
            "{e:?}"
        );
    }
    drop(_a);

    let text = std::fs::read_to_string(&original).unwrap();
    assert!(!text.contains("hpke_keys"), "{text}");
    let dir = original.parent().unwrap();
    let config = dir.join(format!("interop-x25519-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!("{text}\nhpke_keys = \"token-else-software\"\n"),
    )
    .unwrap();
    /// Removes the configuration copy on drop.
    struct Remove<'a>(&'a std::path::Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _remove = Remove(&config);
    let (_a, mut a) = spawn(Keys::TokenWith(&config)).await;
    let (_b, mut b) = spawn(Keys::Software).await;
    for suite in [1, 3] {
        two_members(&mut a, &mut b, suite).await;
        two_members(&mut b, &mut a, suite).await;
    }
}

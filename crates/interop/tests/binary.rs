//! Runs the `hsmls-interop-client` binary itself on a loopback port, with
//! software custody and with the SoftHSM token (`HSMLS_PKCS11_CONFIG`, set
//! by `scripts/test.sh`), and drives a two-member group through it.

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

async fn spawn(pkcs11: bool) -> (Running, MlsClientClient<Channel>) {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hsmls-interop-client"));
    cmd.arg("--port").arg(port.to_string());
    if pkcs11 {
        cmd.arg("--pkcs11");
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

/// alice creates a group, bob joins by Welcome, they exchange a message
/// and agree on the epoch authenticator and an exported secret.
async fn two_members(a: &mut MlsClientClient<Channel>, b: &mut MlsClientClient<Channel>) {
    assert_eq!(
        a.supported_ciphersuites(SupportedCiphersuitesRequest {})
            .await
            .unwrap()
            .into_inner()
            .ciphersuites,
        vec![2]
    );
    let alice = a
        .create_group(CreateGroupRequest {
            group_id: b"binary".to_vec(),
            cipher_suite: 2,
            encrypt_handshake: true,
            identity: b"alice".to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .state_id;
    let kp = b
        .create_key_package(CreateKeyPackageRequest {
            cipher_suite: 2,
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
    let (_a, mut a) = spawn(false).await;
    let (_b, mut b) = spawn(false).await;
    two_members(&mut a, &mut b).await;
}

/// Fails (never skips) without the SoftHSM token's configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_with_pkcs11_custody() {
    assert!(
        std::env::var_os("HSMLS_PKCS11_CONFIG").is_some(),
        "HSMLS_PKCS11_CONFIG is not set: run `bash scripts/test.sh` (it sets up the SoftHSM token)"
    );
    let (_a, mut a) = spawn(true).await;
    let (_b, mut b) = spawn(false).await;
    two_members(&mut a, &mut b).await;
    two_members(&mut b, &mut a).await;
}

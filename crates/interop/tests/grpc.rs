//! Drives three hsmls interop clients (three in-process gRPC servers on
//! 127.0.0.1) through real gRPC connections the way the public test runner
//! does, and checks that every method of `mls_client.MLSClient` was called.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hsmls::internal::codec::{AuthenticatedContent, MlsMessage, MlsMessageBody};
use hsmls::internal::message_protection::verify_content_signature;
use hsmls::wire::{Certificate, Credential, Decode, ExternalSender, Proposal, Sender, WireFormat};
use hsmls::{BasicCredentialValidator, KeyPackageConfig, Signer};
use hsmls_custody::SoftwareCustody;
use hsmls_interop::InteropClient;
use hsmls_interop::proto::mls_client_client::MlsClientClient;
use hsmls_interop::proto::*;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Status};

type Client = MlsClientClient<Channel>;
type Seen = Arc<Mutex<BTreeSet<String>>>;

/// One running interop client (its own server and custody).
struct Server {
    client: Client,
    _stop: oneshot::Sender<()>,
}

/// Starts a server on 127.0.0.1:0 whose transport records every request
/// path into `seen`, and connects a tonic client to it.
async fn start(seen: &Seen) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let seen = seen.clone();
    let record =
        tower::ServiceBuilder::new().map_request(move |req: http::Request<tonic::body::Body>| {
            seen.lock().unwrap().insert(req.uri().path().to_owned());
            req
        });
    let service = InteropClient::new(Arc::new(SoftwareCustody::new())).into_service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(record)
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
    });
    let client = MlsClientClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    Server {
        client,
        _stop: stop,
    }
}

/// A member as the runner tracks it: its client and state id.
#[derive(Clone)]
struct Member {
    client: Client,
    state: u32,
}

async fn state_auth(m: &mut Member) -> Vec<u8> {
    m.client
        .state_auth(StateAuthRequest { state_id: m.state })
        .await
        .unwrap()
        .into_inner()
        .state_auth_secret
}

async fn export(m: &mut Member, label: &str) -> Vec<u8> {
    m.client
        .export(ExportRequest {
            state_id: m.state,
            label: label.into(),
            context: b"ctx".to_vec(),
            key_length: 32,
        })
        .await
        .unwrap()
        .into_inner()
        .exported_secret
}

/// Every member has the same state authenticator and exported secret.
async fn assert_agree(members: &mut [&mut Member], expected_auth: &[u8]) {
    let mut exports = BTreeSet::new();
    for m in members.iter_mut() {
        assert_eq!(state_auth(m).await, expected_auth, "state auth differs");
        let e = export(m, "interop").await;
        assert_eq!(e.len(), 32);
        exports.insert(e);
    }
    assert_eq!(exports.len(), 1, "exported secrets differ");
}

/// `m` sends application data that every other member opens.
async fn message_round(m: &mut Member, others: &mut [&mut Member], text: &[u8]) {
    let ct = m
        .client
        .protect(ProtectRequest {
            state_id: m.state,
            authenticated_data: b"aad".to_vec(),
            plaintext: text.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    assert!(!ct.windows(text.len()).any(|w| w == text));
    for o in others.iter_mut() {
        let pt = o
            .client
            .unprotect(UnprotectRequest {
                state_id: o.state,
                ciphertext: ct.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(pt.plaintext, text);
        assert_eq!(pt.authenticated_data, b"aad");
    }
}

async fn key_package(client: &mut Client, identity: &str) -> (u32, Vec<u8>) {
    let r = client
        .create_key_package(CreateKeyPackageRequest {
            cipher_suite: 2,
            identity: identity.into(),
        })
        .await
        .unwrap()
        .into_inner();
    // The private keys stay in custody.
    assert!(r.init_priv.is_empty() && r.encryption_priv.is_empty() && r.signature_priv.is_empty());
    (r.transaction_id, r.key_package)
}

/// The committer applies its commit; every other member handles it (with
/// the proposals by reference) and must reach the same authenticator.
async fn finish_commit(
    committer: &mut Member,
    others: &mut [&mut Member],
    proposals: &[Vec<u8>],
    commit: &[u8],
) -> Vec<u8> {
    let r = committer
        .client
        .handle_pending_commit(HandlePendingCommitRequest {
            state_id: committer.state,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state_id, committer.state);
    let auth = r.epoch_authenticator;
    for o in others.iter_mut() {
        let r = o
            .client
            .handle_commit(HandleCommitRequest {
                state_id: o.state,
                proposal: proposals.to_vec(),
                commit: commit.to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.epoch_authenticator, auth, "member disagrees after commit");
        o.state = r.state_id;
    }
    auth
}

/// `m` commits the proposals `by_reference` and `by_value`.
async fn commit(
    m: &mut Member,
    by_reference: Vec<Vec<u8>>,
    by_value: Vec<ProposalDescription>,
    force_path: bool,
    external_tree: bool,
) -> CommitResponse {
    m.client
        .commit(CommitRequest {
            state_id: m.state,
            by_reference,
            by_value,
            force_path,
            external_tree,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn join(client: &mut Client, req: JoinGroupRequest) -> JoinGroupResponse {
    client.join_group(req).await.unwrap().into_inner()
}

async fn group_info(m: &mut Member, external_tree: bool) -> GroupInfoResponse {
    m.client
        .group_info(GroupInfoRequest {
            state_id: m.state,
            external_tree,
        })
        .await
        .unwrap()
        .into_inner()
}

/// `m` handles a commit that needs no proposals by reference.
async fn handle_commit(m: &mut Member, commit: Vec<u8>) -> HandleCommitResponse {
    m.client
        .handle_commit(HandleCommitRequest {
            state_id: m.state,
            proposal: vec![],
            commit,
        })
        .await
        .unwrap()
        .into_inner()
}

/// A member joined by `req` through `client`, checked to agree on `auth`.
async fn join_member(client: &Client, req: JoinGroupRequest, auth: &[u8]) -> Member {
    let mut client = client.clone();
    let joined = join(&mut client, req).await;
    assert_eq!(joined.epoch_authenticator, auth);
    Member {
        client,
        state: joined.state_id,
    }
}

fn commit_req(state_id: u32, by_reference: Vec<Vec<u8>>) -> CommitRequest {
    CommitRequest {
        state_id,
        by_reference,
        by_value: vec![],
        force_path: false,
        external_tree: false,
    }
}

fn by_value(kind: &str) -> ProposalDescription {
    ProposalDescription {
        proposal_type: kind.into(),
        ..Default::default()
    }
}

fn expect_status(r: Result<impl std::fmt::Debug, Status>, code: Code, needle: &str) {
    let e = r.expect_err("the call must fail");
    assert_eq!(e.code(), code, "{e:?}");
    assert!(
        e.message().contains(needle),
        "message {:?} lacks {needle:?}",
        e.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_through_grpc() {
    let seen: Seen = Arc::default();
    let mut a = start(&seen).await;
    let mut b = start(&seen).await;
    let mut c = start(&seen).await;

    // Name and suites, as the runner asks at connection time.
    for s in [&mut a, &mut b, &mut c] {
        let name = s
            .client
            .name(NameRequest {})
            .await
            .unwrap()
            .into_inner()
            .name;
        assert!(name.starts_with("hsmls"));
        let suites = s
            .client
            .supported_ciphersuites(SupportedCiphersuitesRequest {})
            .await
            .unwrap()
            .into_inner()
            .ciphersuites;
        assert_eq!(suites, vec![1, 2, 3, 5, 7]);
    }

    // alice creates the group (encrypted handshakes).
    let mut alice = new_group(&a.client, b"c3a1b1e8-interop-group".to_vec(), true, "alice").await;

    // bob: KeyPackage, added by an Add proposal committed by reference.
    let (bob_tx, bob_kp) = key_package(&mut b.client, "bob").await;
    let add = alice
        .client
        .add_proposal(AddProposalRequest {
            state_id: alice.state,
            key_package: bob_kp,
        })
        .await
        .unwrap()
        .into_inner()
        .proposal;
    let out = commit(&mut alice, vec![add], vec![], false, false).await;
    assert!(!out.welcome.is_empty());
    assert!(
        out.ratchet_tree.is_empty(),
        "no external tree was asked for"
    );
    let auth = finish_commit(&mut alice, &mut [], &[], &out.commit).await;
    let mut bob = join_member(
        &b.client,
        JoinGroupRequest {
            transaction_id: bob_tx,
            welcome: out.welcome,
            encrypt_handshake: true,
            identity: b"bob".to_vec(),
            ratchet_tree: vec![],
        },
        &auth,
    )
    .await;
    assert_agree(&mut [&mut alice, &mut bob], &auth).await;
    message_round(&mut alice, &mut [&mut bob], b"hello bob").await;
    message_round(&mut bob, &mut [&mut alice], b"hello alice").await;

    // charlie: added by value by bob, with the tree out of band and a path.
    let (charlie_tx, charlie_kp) = key_package(&mut c.client, "charlie").await;
    let mut add_charlie = by_value("add");
    add_charlie.key_package = charlie_kp;
    let out = commit(&mut bob, vec![], vec![add_charlie], true, true).await;
    assert!(!out.ratchet_tree.is_empty());
    let auth = finish_commit(&mut bob, &mut [&mut alice], &[], &out.commit).await;
    let mut charlie = join_member(
        &c.client,
        JoinGroupRequest {
            transaction_id: charlie_tx,
            welcome: out.welcome,
            encrypt_handshake: true,
            identity: b"charlie".to_vec(),
            ratchet_tree: out.ratchet_tree,
        },
        &auth,
    )
    .await;
    assert_agree(&mut [&mut alice, &mut bob, &mut charlie], &auth).await;
    message_round(&mut charlie, &mut [&mut alice, &mut bob], b"hi all").await;

    // bob proposes an update; alice commits it by reference.
    let upd = bob
        .client
        .update_proposal(UpdateProposalRequest {
            state_id: bob.state,
        })
        .await
        .unwrap()
        .into_inner()
        .proposal;
    let out = commit(&mut alice, vec![upd.clone()], vec![], false, false).await;
    let auth = finish_commit(
        &mut alice,
        &mut [&mut bob, &mut charlie],
        &[upd],
        &out.commit,
    )
    .await;
    assert_agree(&mut [&mut alice, &mut bob, &mut charlie], &auth).await;
    let epoch_with_update = 3u64; // epochs: 0 create, 1 bob, 2 charlie, 3 update

    // External PSK stored at all three; charlie proposes it, bob commits it
    // together with a resumption PSK by value.
    let (psk_id, psk_secret) = (b"psk-1".to_vec(), vec![0x42; 32]);
    for m in [&mut alice, &mut bob, &mut charlie] {
        m.client
            .store_psk(StorePskRequest {
                state_or_transaction_id: m.state,
                psk_id: psk_id.clone(),
                psk_secret: psk_secret.clone(),
            })
            .await
            .unwrap();
    }
    let psk_p = charlie
        .client
        .external_psk_proposal(ExternalPskProposalRequest {
            state_id: charlie.state,
            psk_id: psk_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .proposal;
    let mut res = by_value("resumptionPSK");
    res.epoch_id = epoch_with_update - 1;
    let out = commit(&mut bob, vec![psk_p.clone()], vec![res], false, false).await;
    let auth = finish_commit(
        &mut bob,
        &mut [&mut alice, &mut charlie],
        &[psk_p],
        &out.commit,
    )
    .await;
    assert_agree(&mut [&mut alice, &mut bob, &mut charlie], &auth).await;

    // alice proposes a resumption PSK and new GroupContext extensions
    // (required_capabilities with empty lists); charlie commits both.
    let res_p = alice
        .client
        .resumption_psk_proposal(ResumptionPskProposalRequest {
            state_id: alice.state,
            epoch_id: epoch_with_update,
        })
        .await
        .unwrap()
        .into_inner()
        .proposal;
    let gce_p = alice
        .client
        .group_context_extensions_proposal(GroupContextExtensionsProposalRequest {
            state_id: alice.state,
            extensions: vec![Extension {
                extension_type: 3,
                extension_data: vec![0, 0, 0],
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .proposal;
    let refs = vec![res_p, gce_p];
    let out = commit(&mut charlie, refs.clone(), vec![], false, false).await;
    let auth = finish_commit(
        &mut charlie,
        &mut [&mut alice, &mut bob],
        &refs,
        &out.commit,
    )
    .await;
    assert_agree(&mut [&mut alice, &mut bob, &mut charlie], &auth).await;

    // dave joins by external commit from alice's GroupInfo (tree inside).
    let gi = group_info(&mut alice, false).await;
    assert!(gi.ratchet_tree.is_empty());
    let ej = b
        .client
        .external_join(ExternalJoinRequest {
            group_info: gi.group_info.clone(),
            ratchet_tree: vec![],
            encrypt_handshake: true,
            identity: b"dave".to_vec(),
            remove_prior: false,
            psks: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let mut dave = Member {
        client: b.client.clone(),
        state: ej.state_id,
    };
    for m in [&mut alice, &mut bob, &mut charlie] {
        let r = handle_commit(m, ej.commit.clone()).await;
        assert_eq!(r.epoch_authenticator, ej.epoch_authenticator);
    }
    assert_agree(
        &mut [&mut alice, &mut bob, &mut charlie, &mut dave],
        &ej.epoch_authenticator,
    )
    .await;
    message_round(&mut dave, &mut [&mut alice, &mut charlie], b"dave here").await;

    // dave re-joins (resync) with the tree out of band, removing his old leaf.
    let gi = group_info(&mut charlie, true).await;
    assert!(!gi.ratchet_tree.is_empty());
    let ej = c
        .client
        .external_join(ExternalJoinRequest {
            group_info: gi.group_info.clone(),
            ratchet_tree: gi.ratchet_tree.clone(),
            encrypt_handshake: true,
            identity: b"dave".to_vec(),
            remove_prior: true,
            psks: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    for m in [&mut alice, &mut bob, &mut charlie] {
        let r = handle_commit(m, ej.commit.clone()).await;
        assert_eq!(r.epoch_authenticator, ej.epoch_authenticator);
    }
    // The old dave state is gone from the group: free it.
    dave.client
        .free(FreeRequest {
            state_id: dave.state,
        })
        .await
        .unwrap();
    expect_status(
        dave.client
            .state_auth(StateAuthRequest {
                state_id: dave.state,
            })
            .await,
        Code::NotFound,
        "unknown",
    );
    let mut dave = Member {
        client: c.client.clone(),
        state: ej.state_id,
    };
    assert_agree(
        &mut [&mut alice, &mut bob, &mut charlie, &mut dave],
        &ej.epoch_authenticator,
    )
    .await;

    // erin asks to join with a new-member Add proposal; alice commits it.
    let gi = group_info(&mut alice, false).await;
    let nm = a
        .client
        .new_member_add_proposal(NewMemberAddProposalRequest {
            group_info: gi.group_info,
            identity: b"erin".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    match MlsMessage::decode(&nm.proposal).unwrap().body {
        MlsMessageBody::PublicMessage(m) => {
            assert_eq!(m.content.sender, Sender::NewMemberProposal)
        }
        other => panic!("not a PublicMessage: {other:?}"),
    }
    let refs = vec![nm.proposal.clone()];
    let out = commit(&mut bob, refs.clone(), vec![], false, false).await;
    let auth = finish_commit(
        &mut bob,
        &mut [&mut alice, &mut charlie, &mut dave],
        &refs,
        &out.commit,
    )
    .await;
    let mut erin = join_member(
        &a.client,
        JoinGroupRequest {
            transaction_id: nm.transaction_id,
            welcome: out.welcome,
            encrypt_handshake: true,
            identity: b"erin".to_vec(),
            ratchet_tree: vec![],
        },
        &auth,
    )
    .await;
    assert_agree(
        &mut [&mut alice, &mut bob, &mut charlie, &mut dave, &mut erin],
        &auth,
    )
    .await;

    // An external signer "ds" is added to the group's external_senders.
    let signer = c
        .client
        .create_external_signer(CreateExternalSignerRequest {
            cipher_suite: 2,
            identity: b"ds".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let ext_sender = ExternalSender::decode(&signer.external_sender).unwrap();
    assert_eq!(ext_sender.credential, Credential::Basic(b"ds".to_vec()));
    let aes = alice
        .client
        .add_external_signer(AddExternalSignerRequest {
            state_id: alice.state,
            external_sender: signer.external_sender.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .proposal;
    let refs = vec![aes];
    let out = commit(&mut alice, refs.clone(), vec![], false, false).await;
    let auth = finish_commit(
        &mut alice,
        &mut [&mut bob, &mut charlie, &mut dave, &mut erin],
        &refs,
        &out.commit,
    )
    .await;
    assert_agree(
        &mut [&mut alice, &mut bob, &mut charlie, &mut dave, &mut erin],
        &auth,
    )
    .await;

    // The external signer proposes removing dave; the proposal is signed
    // by the signer's key over the group's current context.
    let gi = group_info(&mut alice, true).await;
    let mut remove_dave = by_value("remove");
    remove_dave.removed_id = b"dave".to_vec();
    let ext_p = c
        .client
        .external_signer_proposal(ExternalSignerProposalRequest {
            signer_id: signer.signer_id,
            // Not what the runner sends (nothing): the listed position wins.
            signer_index: 7,
            group_info: gi.group_info.clone(),
            ratchet_tree: gi.ratchet_tree.clone(),
            description: Some(remove_dave),
        })
        .await
        .unwrap()
        .into_inner()
        .proposal;
    let gi_msg = match MlsMessage::decode(&gi.group_info).unwrap().body {
        MlsMessageBody::GroupInfo(g) => g,
        other => panic!("not a GroupInfo: {other:?}"),
    };
    match MlsMessage::decode(&ext_p).unwrap().body {
        MlsMessageBody::PublicMessage(m) => {
            assert_eq!(m.content.sender, Sender::External(0));
            assert!(matches!(
                m.content.body,
                hsmls::internal::codec::FramedContentBody::Proposal(Proposal::Remove(_))
            ));
            let content = AuthenticatedContent {
                wire_format: WireFormat::PUBLIC_MESSAGE,
                content: m.content,
                auth: m.auth,
            };
            let cs = hsmls_crypto::CipherSuite(2).provider().unwrap();
            verify_content_signature(
                cs,
                &content,
                &gi_msg.group_context,
                ext_sender.signature_key.as_slice(),
            )
            .expect("signed by the external signer");
        }
        other => panic!("not a PublicMessage: {other:?}"),
    }

    // Removes: bob proposes removing erin; charlie commits it by
    // reference and removes dave by value.
    let rm = bob
        .client
        .remove_proposal(RemoveProposalRequest {
            state_id: bob.state,
            removed_id: b"erin".to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .proposal;
    let mut rm_dave = by_value("remove");
    rm_dave.removed_id = b"dave".to_vec();
    let out = commit(&mut charlie, vec![rm.clone()], vec![rm_dave], false, false).await;
    let auth = finish_commit(
        &mut charlie,
        &mut [&mut alice, &mut bob],
        std::slice::from_ref(&rm),
        &out.commit,
    )
    .await;
    // The removed members process the commit and learn they left.
    for m in [&mut dave, &mut erin] {
        m.client
            .handle_commit(HandleCommitRequest {
                state_id: m.state,
                proposal: vec![rm.clone()],
                commit: out.commit.clone(),
            })
            .await
            .unwrap();
        expect_status(
            m.client
                .protect(ProtectRequest {
                    state_id: m.state,
                    authenticated_data: vec![],
                    plaintext: b"x".to_vec(),
                })
                .await,
            Code::FailedPrecondition,
            "group",
        );
    }
    assert_agree(&mut [&mut alice, &mut bob, &mut charlie], &auth).await;
    message_round(&mut bob, &mut [&mut alice, &mut charlie], b"three again").await;

    // Branch: alice branches a subgroup with bob (tree out of band).
    let (bob_branch_tx, bob_branch_kp) = key_package(&mut b.client, "bob").await;
    let br = alice
        .client
        .create_branch(CreateBranchRequest {
            state_id: alice.state,
            group_id: b"branch".to_vec(),
            extensions: vec![],
            key_packages: vec![bob_branch_kp],
            force_path: false,
            external_tree: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!br.ratchet_tree.is_empty());
    let hb = bob
        .client
        .handle_branch(HandleBranchRequest {
            state_id: bob.state,
            transaction_id: bob_branch_tx,
            welcome: br.welcome,
            ratchet_tree: br.ratchet_tree,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.epoch_authenticator, br.epoch_authenticator);
    let mut alice_branch = Member {
        client: a.client.clone(),
        state: br.state_id,
    };
    let mut bob_branch = Member {
        client: b.client.clone(),
        state: hb.state_id,
    };
    assert_agree(
        &mut [&mut alice_branch, &mut bob_branch],
        &br.epoch_authenticator,
    )
    .await;
    message_round(&mut bob_branch, &mut [&mut alice_branch], b"in the branch").await;
    // The original group goes on.
    assert_agree(&mut [&mut alice, &mut bob, &mut charlie], &auth).await;
    message_round(&mut alice, &mut [&mut bob, &mut charlie], b"main group").await;

    // ReInit: bob proposes, alice commits by reference, everyone moves to
    // the new group through bob's Welcome (tree out of band).
    let reinit_p = bob
        .client
        .re_init_proposal(ReInitProposalRequest {
            state_id: bob.state,
            cipher_suite: 2,
            group_id: b"c3a1b1e8-interop-group++".to_vec(),
            extensions: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .proposal;
    let out = alice
        .client
        .re_init_commit(commit_req(alice.state, vec![reinit_p.clone()]))
        .await
        .unwrap()
        .into_inner();
    let ra = alice
        .client
        .handle_pending_re_init_commit(HandlePendingCommitRequest {
            state_id: alice.state,
        })
        .await
        .unwrap()
        .into_inner();
    let mut reinit_ids = vec![(a.client.clone(), ra.reinit_id)];
    let mut key_packages = vec![ra.key_package];
    let mut bob_reinit = 0;
    for (is_bob, m) in [(true, &mut bob), (false, &mut charlie)] {
        let r = m
            .client
            .handle_re_init_commit(HandleCommitRequest {
                state_id: m.state,
                proposal: vec![reinit_p.clone()],
                commit: out.commit.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.epoch_authenticator, ra.epoch_authenticator);
        if is_bob {
            bob_reinit = r.reinit_id;
        } else {
            reinit_ids.push((m.client.clone(), r.reinit_id));
            key_packages.push(r.key_package);
        }
    }
    // The old state ids are closed.
    expect_status(
        alice
            .client
            .state_auth(StateAuthRequest {
                state_id: alice.state,
            })
            .await,
        Code::NotFound,
        "unknown",
    );
    let welcome = b
        .client
        .re_init_welcome(ReInitWelcomeRequest {
            reinit_id: bob_reinit,
            key_package: key_packages,
            force_path: false,
            external_tree: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut new_members = vec![Member {
        client: b.client.clone(),
        state: welcome.state_id,
    }];
    for (mut client, reinit_id) in reinit_ids {
        let r = client
            .handle_re_init_welcome(HandleReInitWelcomeRequest {
                reinit_id,
                welcome: welcome.welcome.clone(),
                ratchet_tree: welcome.ratchet_tree.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.epoch_authenticator, welcome.epoch_authenticator);
        new_members.push(Member {
            client,
            state: r.state_id,
        });
    }
    let [mut bob, mut alice, mut charlie]: [Member; 3] = new_members.try_into().ok().unwrap();
    assert_agree(
        &mut [&mut alice, &mut bob, &mut charlie],
        &welcome.epoch_authenticator,
    )
    .await;
    message_round(&mut charlie, &mut [&mut alice, &mut bob], b"after reinit").await;

    // Error cases: unsupported suite, unknown ids, unsupported credential
    // type, external commit with PSKs.
    expect_status(
        a.client
            .create_group(CreateGroupRequest {
                group_id: b"g".to_vec(),
                cipher_suite: 4,
                encrypt_handshake: false,
                identity: b"x".to_vec(),
            })
            .await,
        Code::InvalidArgument,
        "cipher suite 0x0004 is not supported",
    );
    expect_status(
        a.client
            .create_key_package(CreateKeyPackageRequest {
                cipher_suite: 6,
                identity: b"x".to_vec(),
            })
            .await,
        Code::InvalidArgument,
        "cipher suite 0x0006",
    );
    expect_status(
        a.client
            .create_external_signer(CreateExternalSignerRequest {
                cipher_suite: 0x10000,
                identity: b"x".to_vec(),
            })
            .await,
        Code::InvalidArgument,
        "cipher suite",
    );
    expect_status(
        a.client
            .state_auth(StateAuthRequest { state_id: 999_999 })
            .await,
        Code::NotFound,
        "999999",
    );
    expect_status(
        a.client
            .store_psk(StorePskRequest {
                state_or_transaction_id: 999_999,
                psk_id: b"p".to_vec(),
                psk_secret: vec![1; 32],
            })
            .await,
        Code::NotFound,
        "999999",
    );
    let x509 = Signer::generate(
        Arc::new(SoftwareCustody::new()),
        Credential::X509(vec![Certificate {
            cert_data: vec![0x30, 0x00],
        }]),
    )
    .unwrap();
    // Generating a KeyPackage does not validate the client's own
    // credential: the interop client's validator refuses it.
    let x509_kp = hsmls::Client::new(x509, Arc::new(BasicCredentialValidator::default()))
        .generate_key_package(&KeyPackageConfig::new(1_750_000_000, 1 << 40))
        .unwrap()
        .to_bytes()
        .unwrap();
    expect_status(
        alice
            .client
            .add_proposal(AddProposalRequest {
                state_id: alice.state,
                key_package: x509_kp,
            })
            .await,
        Code::InvalidArgument,
        "credential type 0x0002 is not supported",
    );
    expect_status(
        c.client
            .external_join(ExternalJoinRequest {
                group_info: gi.group_info,
                ratchet_tree: gi.ratchet_tree,
                encrypt_handshake: false,
                identity: b"frank".to_vec(),
                remove_prior: false,
                psks: vec![PreSharedKey {
                    psk_id: Vec::new(),
                    psk_secret,
                }],
            })
            .await,
        Code::InvalidArgument,
        "empty psk_id",
    );

    // Cleanup.
    for m in [
        &mut alice,
        &mut bob,
        &mut charlie,
        &mut dave,
        &mut erin,
        &mut alice_branch,
        &mut bob_branch,
    ] {
        m.client
            .free(FreeRequest { state_id: m.state })
            .await
            .unwrap();
    }
    expect_status(
        alice
            .client
            .free(FreeRequest {
                state_id: alice.state,
            })
            .await,
        Code::NotFound,
        "unknown",
    );

    // Every method of the service went over the wire at least once.
    let expected: BTreeSet<String> = hsmls_interop::proto::METHODS
        .iter()
        .map(|m| format!("/mls_client.MLSClient/{m}"))
        .collect();
    assert_eq!(expected.len(), 34, "the proto's method count");
    let seen = seen.lock().unwrap().clone();
    let missing: Vec<_> = expected.difference(&seen).collect();
    assert!(missing.is_empty(), "RPCs never called: {missing:?}");
    assert!(seen.is_subset(&expected), "unexpected paths: {seen:?}");
}

/// The binary's handshake mode: public handshakes (encrypt_handshake =
/// false) between two clients, with a plain commit and messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_handshakes() {
    let seen: Seen = Arc::default();
    let mut a = start(&seen).await;
    let mut b = start(&seen).await;
    let mut alice = new_group(&a.client, b"public".to_vec(), false, "alice").await;
    let (tx, kp) = key_package(&mut b.client, "bob").await;
    let mut add = by_value("add");
    add.key_package = kp;
    let out = commit(&mut alice, vec![], vec![add], false, false).await;
    let auth = finish_commit(&mut alice, &mut [], &[], &out.commit).await;
    // A truncated Welcome, and a group state id in place of a transaction
    // id, are refused; the transaction stays usable.
    expect_status(
        b.client
            .join_group(JoinGroupRequest {
                transaction_id: tx,
                welcome: out.welcome[..out.welcome.len() / 2].to_vec(),
                encrypt_handshake: false,
                identity: b"bob".to_vec(),
                ratchet_tree: vec![],
            })
            .await,
        Code::InvalidArgument,
        "",
    );
    expect_status(
        a.client
            .join_group(JoinGroupRequest {
                transaction_id: alice.state,
                welcome: out.welcome.clone(),
                encrypt_handshake: false,
                identity: b"bob".to_vec(),
                ratchet_tree: vec![],
            })
            .await,
        Code::InvalidArgument,
        "is not a transaction",
    );
    // A commit is not application data.
    expect_status(
        a.client
            .unprotect(UnprotectRequest {
                state_id: alice.state,
                ciphertext: out.commit.clone(),
            })
            .await,
        Code::InvalidArgument,
        "",
    );
    let joined = join(
        &mut b.client,
        JoinGroupRequest {
            transaction_id: tx,
            welcome: out.welcome,
            encrypt_handshake: false,
            identity: b"bob".to_vec(),
            ratchet_tree: vec![],
        },
    )
    .await;
    let mut bob = Member {
        client: b.client.clone(),
        state: joined.state_id,
    };
    // A self-update with a path from bob, as a PublicMessage.
    let out = commit(&mut bob, vec![], vec![], true, false).await;
    assert!(matches!(
        MlsMessage::decode(&out.commit).unwrap().body,
        MlsMessageBody::PublicMessage(_)
    ));
    let auth2 = finish_commit(&mut bob, &mut [&mut alice], &[], &out.commit).await;
    assert_ne!(auth, auth2);
    assert_agree(&mut [&mut alice, &mut bob], &auth2).await;
    message_round(&mut alice, &mut [&mut bob], b"public framing").await;
    // A tampered commit is refused and changes nothing.
    let out = commit(&mut alice, vec![], vec![], true, false).await;
    let mut bad = out.commit.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let r = bob
        .client
        .handle_commit(HandleCommitRequest {
            state_id: bob.state,
            proposal: vec![],
            commit: bad,
        })
        .await;
    expect_status(r, Code::InvalidArgument, "invalid membership tag");
    // The committer applies its own commit with HandleCommit (as the
    // runner's older "stateProperties" step does); bob handles it too.
    let mut auths = Vec::new();
    for m in [&mut alice, &mut bob] {
        auths.push(
            m.client
                .handle_commit(HandleCommitRequest {
                    state_id: m.state,
                    proposal: vec![],
                    commit: out.commit.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .epoch_authenticator,
        );
    }
    assert_eq!(auths[0], auths[1]);
    assert_ne!(auths[0], auth2);
    assert_agree(&mut [&mut alice, &mut bob], &auths[0]).await;

    // ReInit by value (public framing) into suite 0x0001 (RFC 9420 §11.2:
    // a ReInit may change the suite), alice welcomes bob into the new
    // group with the tree inside the Welcome.
    let mut reinit = by_value("reinit");
    reinit.group_id = b"public++".to_vec();
    reinit.cipher_suite = 1;
    let out = alice
        .client
        .re_init_commit(CommitRequest {
            state_id: alice.state,
            by_reference: vec![],
            by_value: vec![reinit],
            force_path: false,
            external_tree: false,
        })
        .await
        .unwrap()
        .into_inner();
    let ra = alice
        .client
        .handle_pending_re_init_commit(HandlePendingCommitRequest {
            state_id: alice.state,
        })
        .await
        .unwrap()
        .into_inner();
    let rb = bob
        .client
        .handle_re_init_commit(HandleCommitRequest {
            state_id: bob.state,
            proposal: vec![],
            commit: out.commit,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ra.epoch_authenticator, rb.epoch_authenticator);
    // The KeyPackages for the new group are of its suite, and so are
    // their signature keys (Ed25519: 32 bytes).
    for kp in [&ra.key_package, &rb.key_package] {
        let kp = hsmls::KeyPackageIn::from_bytes(kp).unwrap();
        assert_eq!(kp.0.cipher_suite.0, 1);
        assert_eq!(kp.0.leaf_node.signature_key.0.len(), 32);
    }
    let w = alice
        .client
        .re_init_welcome(ReInitWelcomeRequest {
            reinit_id: ra.reinit_id,
            key_package: vec![rb.key_package],
            force_path: true,
            external_tree: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(w.ratchet_tree.is_empty());
    let jb = bob
        .client
        .handle_re_init_welcome(HandleReInitWelcomeRequest {
            reinit_id: rb.reinit_id,
            welcome: w.welcome,
            ratchet_tree: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jb.epoch_authenticator, w.epoch_authenticator);
    let mut alice = Member {
        client: a.client.clone(),
        state: w.state_id,
    };
    let mut bob = Member {
        client: b.client.clone(),
        state: jb.state_id,
    };
    assert_agree(&mut [&mut alice, &mut bob], &w.epoch_authenticator).await;
    message_round(&mut bob, &mut [&mut alice], b"reinitialized").await;
}

// ----- scripts of the public runner's interop/configs/commit.json -----

async fn create_group(client: &Client, identity: &str) -> Member {
    let group_id = format!("group-of-{identity}").into_bytes();
    new_group(client, group_id, true, identity).await
}

/// A new group of `identity` with suite 2 (RFC 9420 §17.1).
async fn new_group(
    client: &Client,
    group_id: Vec<u8>,
    encrypt_handshake: bool,
    identity: &str,
) -> Member {
    let mut client = client.clone();
    let state = client
        .create_group(CreateGroupRequest {
            group_id,
            cipher_suite: 2,
            encrypt_handshake,
            identity: identity.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .state_id;
    Member { client, state }
}

/// The runner's `externalJoin`: GroupInfo from `actor`, external commit
/// by `joiner`, handled by `actor` and `members`.
async fn external_join(
    actor: &mut Member,
    members: &mut [&mut Member],
    joiner: &Client,
    identity: &str,
) -> Member {
    let gi = group_info(actor, false).await;
    let mut client = joiner.clone();
    let ej = client
        .external_join(ExternalJoinRequest {
            group_info: gi.group_info,
            ratchet_tree: gi.ratchet_tree,
            encrypt_handshake: true,
            identity: identity.into(),
            remove_prior: false,
            psks: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    for m in members.iter_mut().map(|m| &mut **m).chain([actor]) {
        let r = handle_commit(m, ej.commit.clone()).await;
        assert_eq!(r.epoch_authenticator, ej.epoch_authenticator);
    }
    Member {
        client,
        state: ej.state_id,
    }
}

/// The runner's `fullCommit`; returns the joiners' states.
async fn full_commit(
    committer: &mut Member,
    members: &mut [&mut Member],
    by_reference: Vec<Vec<u8>>,
    by_value: Vec<ProposalDescription>,
    joiners: Vec<(Client, u32)>,
) -> Vec<Member> {
    let out = commit(committer, by_reference.clone(), by_value, false, false).await;
    let auth = finish_commit(committer, members, &by_reference, &out.commit).await;
    let mut joined = Vec::new();
    for (client, tx) in joiners {
        let req = JoinGroupRequest {
            transaction_id: tx,
            welcome: out.welcome.clone(),
            encrypt_handshake: true,
            identity: vec![],
            ratchet_tree: vec![],
        };
        joined.push(join_member(&client, req, &auth).await);
    }
    let mut all: Vec<&mut Member> = members.iter_mut().map(|m| &mut **m).collect();
    all.push(committer);
    assert_agree(&mut all, &auth).await;
    joined
}

async fn install_psk(members: &mut [&mut Member], n: u8) -> Vec<u8> {
    let id = vec![b'p', n];
    for m in members.iter_mut() {
        m.client
            .store_psk(StorePskRequest {
                state_or_transaction_id: m.state,
                psk_id: id.clone(),
                psk_secret: vec![n; 32],
            })
            .await
            .unwrap();
    }
    id
}

/// An external join whose commit injects an external PSK (RFC 9420
/// §12.4.3.2): the members holding the PSK (`StorePSK`) agree with the
/// joiner; a member without it refuses the commit and, once given the PSK,
/// handles the same commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_join_with_a_psk() {
    let seen: Seen = Arc::default();
    let a = start(&seen).await;
    let b = start(&seen).await;
    let c = start(&seen).await;
    let mut alice = create_group(&a.client, "alice").await;
    let mut bob = external_join(&mut alice, &mut [], &b.client, "bob").await;
    let mut dave = external_join(&mut alice, &mut [&mut bob], &c.client, "dave").await;
    let psk_id = install_psk(&mut [&mut alice, &mut bob], 9).await;
    let gi = group_info(&mut alice, true).await;
    let mut client = c.client.clone();
    let ej = client
        .external_join(ExternalJoinRequest {
            group_info: gi.group_info,
            ratchet_tree: gi.ratchet_tree,
            encrypt_handshake: true,
            identity: b"carol".to_vec(),
            remove_prior: false,
            psks: vec![PreSharedKey {
                psk_id: psk_id.clone(),
                psk_secret: vec![9; 32],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let mut carol = Member {
        client,
        state: ej.state_id,
    };
    let handle = |m: &Member| {
        let mut client = m.client.clone();
        let req = HandleCommitRequest {
            state_id: m.state,
            proposal: vec![],
            commit: ej.commit.clone(),
        };
        async move { client.handle_commit(req).await }
    };
    // Dave lacks the PSK.
    let before = state_auth(&mut dave).await;
    expect_status(handle(&dave).await, Code::InvalidArgument, "unknown PSK");
    assert_eq!(state_auth(&mut dave).await, before);
    install_psk(&mut [&mut dave], 9).await;
    for m in [&alice, &bob, &dave] {
        let r = handle(m).await.unwrap().into_inner();
        assert_eq!(r.epoch_authenticator, ej.epoch_authenticator);
    }
    assert_agree(
        &mut [&mut alice, &mut bob, &mut dave, &mut carol],
        &ej.epoch_authenticator,
    )
    .await;
    message_round(
        &mut carol,
        &mut [&mut alice, &mut bob, &mut dave],
        b"psk joined",
    )
    .await;
}

/// `resumption_psk` and `group_context_extensions` of commit.json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_resumption_psk_and_extensions() {
    let seen: Seen = Arc::default();
    let a = start(&seen).await;
    let b = start(&seen).await;
    let mut alice = create_group(&a.client, "alice").await;
    let mut bob = external_join(&mut alice, &mut [], &b.client, "bob").await;
    full_commit(&mut alice, &mut [&mut bob], vec![], vec![], vec![]).await;
    full_commit(&mut alice, &mut [&mut bob], vec![], vec![], vec![]).await;
    for (e1, e2, e3) in [(1, 2, 3), (2, 3, 4)] {
        let p1 = alice
            .client
            .resumption_psk_proposal(ResumptionPskProposalRequest {
                state_id: alice.state,
                epoch_id: e1,
            })
            .await
            .unwrap()
            .into_inner()
            .proposal;
        let p2 = bob
            .client
            .resumption_psk_proposal(ResumptionPskProposalRequest {
                state_id: bob.state,
                epoch_id: e2,
            })
            .await
            .unwrap()
            .into_inner()
            .proposal;
        let mut v = by_value("resumptionPSK");
        v.epoch_id = e3;
        full_commit(&mut alice, &mut [&mut bob], vec![p1, p2], vec![v], vec![]).await;
    }

    // GroupContextExtensions: required_capabilities and an empty
    // external_senders list, then none, then by value.
    let gce = |m: &Member, extensions: Vec<Extension>| {
        let mut client = m.client.clone();
        let state_id = m.state;
        async move {
            client
                .group_context_extensions_proposal(GroupContextExtensionsProposalRequest {
                    state_id,
                    extensions,
                })
                .await
                .unwrap()
                .into_inner()
                .proposal
        }
    };
    let two = vec![
        Extension {
            extension_type: 3,
            extension_data: vec![0, 0, 0],
        },
        Extension {
            extension_type: 5,
            extension_data: vec![0],
        },
    ];
    let p = gce(&alice, two).await;
    full_commit(&mut alice, &mut [&mut bob], vec![p], vec![], vec![]).await;
    let p = gce(&bob, vec![]).await;
    full_commit(&mut alice, &mut [&mut bob], vec![p], vec![], vec![]).await;
    let mut v = by_value("groupContextExtensions");
    v.extensions = vec![Extension {
        extension_type: 3,
        extension_data: vec![0, 0, 0],
    }];
    full_commit(&mut alice, &mut [&mut bob], vec![], vec![v], vec![]).await;
}

/// `all_together_bob_proposes` of commit.json: one commit with proposals
/// of every kind by reference (from the other member) and by value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_all_together_bob_proposes() {
    let seen: Seen = Arc::default();
    let mut a = start(&seen).await;
    let mut b = start(&seen).await;
    let mut alice = create_group(&a.client, "alice").await;
    let mut bob = external_join(&mut alice, &mut [], &b.client, "bob").await;
    let (t1, k1) = key_package(&mut a.client, "charlie1").await;
    let (t2, k2) = key_package(&mut b.client, "charlie2").await;
    let mut refs = Vec::new();
    for kp in [k1, k2] {
        refs.push(
            alice
                .client
                .add_proposal(AddProposalRequest {
                    state_id: alice.state,
                    key_package: kp,
                })
                .await
                .unwrap()
                .into_inner()
                .proposal,
        );
    }
    let charlies = full_commit(
        &mut alice,
        &mut [&mut bob],
        refs,
        vec![],
        vec![(a.client.clone(), t1), (b.client.clone(), t2)],
    )
    .await;
    let psk7 = install_psk(&mut [&mut alice, &mut bob], 7).await;
    let psk8 = install_psk(&mut [&mut alice, &mut bob], 8).await;
    let (_, k3) = key_package(&mut a.client, "charlie3").await;
    let mut refs = vec![
        bob.client
            .add_proposal(AddProposalRequest {
                state_id: bob.state,
                key_package: k3,
            })
            .await
            .unwrap()
            .into_inner()
            .proposal,
    ];
    refs.push(
        bob.client
            .remove_proposal(RemoveProposalRequest {
                state_id: bob.state,
                removed_id: b"charlie1".to_vec(),
            })
            .await
            .unwrap()
            .into_inner()
            .proposal,
    );
    refs.push(
        bob.client
            .group_context_extensions_proposal(GroupContextExtensionsProposalRequest {
                state_id: bob.state,
                extensions: vec![
                    Extension {
                        extension_type: 3,
                        extension_data: vec![0, 0, 0],
                    },
                    Extension {
                        extension_type: 5,
                        extension_data: vec![0],
                    },
                ],
            })
            .await
            .unwrap()
            .into_inner()
            .proposal,
    );
    refs.push(
        bob.client
            .external_psk_proposal(ExternalPskProposalRequest {
                state_id: bob.state,
                psk_id: psk7,
            })
            .await
            .unwrap()
            .into_inner()
            .proposal,
    );
    refs.push(
        bob.client
            .resumption_psk_proposal(ResumptionPskProposalRequest {
                state_id: bob.state,
                epoch_id: 1,
            })
            .await
            .unwrap()
            .into_inner()
            .proposal,
    );
    refs.push(
        bob.client
            .update_proposal(UpdateProposalRequest {
                state_id: bob.state,
            })
            .await
            .unwrap()
            .into_inner()
            .proposal,
    );
    let (_, k4) = key_package(&mut b.client, "charlie4").await;
    let mut add4 = by_value("add");
    add4.key_package = k4;
    let mut rm2 = by_value("remove");
    rm2.removed_id = b"charlie2".to_vec();
    let mut ext8 = by_value("externalPSK");
    ext8.psk_id = psk8;
    let mut res2 = by_value("resumptionPSK");
    res2.epoch_id = 2;
    // As in the runner, only bob handles it: the charlies it removes are
    // left behind, and those it adds do not join (the Welcome names PSKs
    // they do not hold).
    let joined = full_commit(
        &mut alice,
        &mut [&mut bob],
        refs,
        vec![add4, rm2, ext8, res2],
        vec![],
    )
    .await;
    assert!(joined.is_empty());
    assert_eq!(charlies.len(), 2);
}

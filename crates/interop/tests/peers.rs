//! The gRPC interop service with openmls and mls-rs members in one group,
//! on suites 0x0001, 0x0003 (both peers) and 0x0007 (mls-rs; openmls's
//! RustCrypto provider lacks it), both ways: the peers crate's
//! [`scenario::cross`] (create, add by Welcome, messages, self-updates, an
//! add by the other implementation with the tree out of band, a remove, an
//! external join; members agree on the epoch authenticator and an exported
//! secret after every commit) with hsmls driven only through
//! `mls_client.MLSClient` RPCs, as the public interop runner drives it.
//!
//! [`GrpcPeer`] is one member of one gRPC interop client serving many
//! members, like the runner's client process. Two such clients run per
//! test binary: one over [`SoftwareCustody`], one over the SoftHSM token
//! (`HSMLS_PKCS11_CONFIG`, set by `scripts/test.sh`) through a
//! [`CustodyRouter`] configured with `hpke_keys = "token-else-software"`:
//! signature keys in the token for every suite, HPKE keys in the token for
//! the NIST suites and in software for X25519. A member frees its state
//! when dropped, which destroys its keys (token objects included).

use std::cell::RefCell;
use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};

use hsmls::internal::codec::{
    ContentType, FramedContentBody, GroupInfo, MlsMessage, MlsMessageBody, Node, RatchetTree,
};
use hsmls::wire::{Credential, Decode};
use hsmls_custody::{
    Capabilities, CustodyError, CustodyRouter, HpkeKeyHome, KeyAttributes, KeyCustody, KeyPurpose,
    KeyRef, KeySpec, Pkcs11Config, Pkcs11Custody, SharedSecret, SoftwareCustody,
};
use hsmls_interop::InteropClient;
use hsmls_interop::proto::mls_client_client::MlsClientClient;
use hsmls_interop::proto::*;
use hsmls_peers::scenario::{self, cross, lifecycle};
use hsmls_peers::{
    CommitMessages, Event, MlsRsPeer, OpenMlsPeer, Peer, PeerError, PeerOptions, SavedState,
};
use tokio::runtime::Runtime;
use tonic::transport::Channel;

type Client = MlsClientClient<Channel>;

/// One running gRPC interop client: the runtime its server runs on and a
/// connected tonic client.
struct Service {
    runtime: Runtime,
    client: Client,
}

impl Service {
    fn start(custody: Arc<dyn KeyCustody>) -> Service {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(hsmls_interop::serve(
                InteropClient::new(custody),
                listener,
                std::future::pending(),
            ));
            MlsClientClient::connect(format!("http://{addr}"))
                .await
                .unwrap()
        });
        Service { runtime, client }
    }
}

/// Where the gRPC client of a [`GrpcPeer`] keeps its members' keys.
trait Backend {
    /// The name in reports.
    const NAME: &'static str;
    /// The running client of this backend for the calling test.
    fn service() -> Arc<Service>;
}

/// [`SoftwareCustody`], one client shared by the tests of this binary.
struct Software;

impl Backend for Software {
    const NAME: &'static str = "hsmls over gRPC (software custody)";
    fn service() -> Arc<Service> {
        static SERVICE: OnceLock<Arc<Service>> = OnceLock::new();
        SERVICE
            .get_or_init(|| Arc::new(Service::start(Arc::new(SoftwareCustody::new()))))
            .clone()
    }
}

/// The SoftHSM token through a [`CustodyRouter`] that keeps X25519 HPKE
/// keys in software (explicitly configured here), one client per test
/// ([`with_token`]) so that each test sees only its own keys.
struct Token;

thread_local! {
    static TOKEN_SERVICE: RefCell<Option<Arc<Service>>> = const { RefCell::new(None) };
}

impl Backend for Token {
    const NAME: &'static str = "hsmls over gRPC (SoftHSM custody)";
    fn service() -> Arc<Service> {
        TOKEN_SERVICE
            .with(|s| s.borrow().clone())
            .expect("a GrpcPeer<Token> is used inside with_token")
    }
}

/// The router under the token client, recording every key generated and
/// destroyed (by URI).
#[derive(Debug)]
struct Recording {
    router: CustodyRouter,
    generated: Mutex<Vec<(KeySpec, String)>>,
    destroyed: Mutex<HashSet<String>>,
}

impl KeyCustody for Recording {
    fn capabilities(&self) -> &Capabilities {
        self.router.capabilities()
    }
    fn generate(&self, spec: KeySpec) -> Result<KeyRef, CustodyError> {
        let key = self.router.generate(spec)?;
        self.generated
            .lock()
            .unwrap()
            .push((spec, key.uri().to_owned()));
        Ok(key)
    }
    fn import(&self, spec: KeySpec, private_key: &[u8]) -> Result<KeyRef, CustodyError> {
        let key = self.router.import(spec, private_key)?;
        self.generated
            .lock()
            .unwrap()
            .push((spec, key.uri().to_owned()));
        Ok(key)
    }
    fn sign_prehash(&self, key: &KeyRef, prehash: &[u8]) -> Result<Vec<u8>, CustodyError> {
        self.router.sign_prehash(key, prehash)
    }
    fn sign(&self, key: &KeyRef, message: &[u8]) -> Result<Vec<u8>, CustodyError> {
        self.router.sign(key, message)
    }
    fn dh(&self, key: &KeyRef, peer_public_key: &[u8]) -> Result<SharedSecret, CustodyError> {
        self.router.dh(key, peer_public_key)
    }
    fn destroy(&self, key: &KeyRef) -> Result<(), CustodyError> {
        self.router.destroy(key)?;
        self.destroyed.lock().unwrap().insert(key.uri().to_owned());
        Ok(())
    }
    fn find(&self, uri: &str) -> Result<KeyRef, CustodyError> {
        self.router.find(uri)
    }
    fn key_attributes(&self, key: &KeyRef) -> Result<KeyAttributes, CustodyError> {
        self.router.key_attributes(key)
    }
}

/// Runs `scenario` with a fresh gRPC client whose keys are in the SoftHSM
/// token (X25519 HPKE keys in software, by configuration), then checks
/// where each key lived: every signature key in the token, HPKE keys in
/// the token when `hpke_in_token` and in software otherwise; and that
/// every key was destroyed by the time the members were freed.
fn with_token(
    hpke_in_token: bool,
    scenario: impl FnOnce() -> Result<(), PeerError>,
) -> Result<(), PeerError> {
    assert!(
        std::env::var_os("HSMLS_PKCS11_CONFIG").is_some(),
        "HSMLS_PKCS11_CONFIG is not set: run `bash scripts/test.sh` (it sets up the SoftHSM token)"
    );
    let mut config = Pkcs11Config::from_env().unwrap();
    config.hpke_keys = HpkeKeyHome::TokenElseSoftware;
    let token = Pkcs11Custody::open(&config).unwrap();
    let recording = Arc::new(Recording {
        router: CustodyRouter::new(Arc::new(token), HpkeKeyHome::TokenElseSoftware),
        generated: Mutex::default(),
        destroyed: Mutex::default(),
    });
    let service = Arc::new(Service::start(recording.clone()));
    TOKEN_SERVICE.with(|s| *s.borrow_mut() = Some(service));
    let result = scenario();
    TOKEN_SERVICE.with(|s| s.borrow_mut().take());
    result?;

    let generated = recording.generated.lock().unwrap().clone();
    let destroyed = recording.destroyed.lock().unwrap().clone();
    let (signature, hpke): (Vec<_>, Vec<_>) = generated
        .iter()
        .partition(|(spec, _)| spec.purpose() == KeyPurpose::Signature);
    assert!(signature.len() >= 2 && hpke.len() >= 4, "{generated:?}");
    for (spec, uri) in &signature {
        assert!(uri.starts_with("pkcs11:"), "{spec} signature key {uri}");
    }
    for (spec, uri) in &hpke {
        let home = if hpke_in_token {
            "pkcs11:"
        } else {
            "software:"
        };
        assert!(uri.starts_with(home), "{spec} HPKE key {uri}");
    }
    let left: Vec<_> = generated
        .iter()
        .filter(|(_, uri)| !destroyed.contains(uri))
        .collect();
    assert!(left.is_empty(), "keys never destroyed: {left:?}");
    Ok(())
}

/// One hsmls member driven only through the interop RPCs.
struct GrpcPeer<B: Backend> {
    suite: u16,
    /// Handshakes as PublicMessage (the RPCs' `encrypt_handshake` false).
    public_handshakes: bool,
    /// A path on every commit (the RPCs' `force_path`).
    always_path: bool,
    identity: Vec<u8>,
    client: Client,
    /// Transactions (KeyPackages awaiting a Welcome), oldest first.
    transactions: Vec<u32>,
    state: Option<u32>,
    /// Proposals received since the last commit, passed by reference with
    /// the next commit made or handled (the RPCs take them there).
    proposals: Vec<Vec<u8>>,
    backend: PhantomData<B>,
}

fn rpc_err(operation: &'static str) -> impl FnOnce(tonic::Status) -> PeerError {
    move |s| PeerError::Library {
        implementation: "hsmls (gRPC)",
        operation,
        detail: format!("{:?}: {}", s.code(), s.message()),
    }
}

fn decode_err(operation: &'static str) -> impl FnOnce(hsmls::error::CodecError) -> PeerError {
    move |e| PeerError::Library {
        implementation: "hsmls (gRPC)",
        operation,
        detail: e.to_string(),
    }
}

impl<B: Backend> GrpcPeer<B> {
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        B::service().runtime.block_on(f)
    }

    fn state(&self) -> Result<u32, PeerError> {
        self.state.ok_or(PeerError::NoGroup("hsmls (gRPC)"))
    }

    /// The member's current GroupInfo (decoded) and ratchet tree.
    fn group_info_and_tree(&self) -> Result<(GroupInfo, RatchetTree), PeerError> {
        let state_id = self.state()?;
        let mut c = self.client.clone();
        let r = Self::block_on(c.group_info(GroupInfoRequest {
            state_id,
            external_tree: true,
        }))
        .map_err(rpc_err("group_info"))?
        .into_inner();
        let gi = match MlsMessage::decode(&r.group_info).map_err(decode_err("group_info"))? {
            MlsMessage {
                body: MlsMessageBody::GroupInfo(gi),
            } => gi,
            _ => {
                return Err(PeerError::UnexpectedMessage {
                    implementation: "hsmls (gRPC)",
                    expected: "a GroupInfo",
                });
            }
        };
        let tree = RatchetTree::decode(&r.ratchet_tree).map_err(decode_err("ratchet_tree"))?;
        Ok((gi, tree))
    }

    /// Commits `by_value` (with the proposals received by reference); the
    /// commit stays pending until [`Peer::merge_pending`].
    fn commit(
        &mut self,
        by_value: Vec<ProposalDescription>,
        force_path: bool,
    ) -> Result<CommitMessages, PeerError> {
        let state_id = self.state()?;
        let mut c = self.client.clone();
        let r = Self::block_on(c.commit(CommitRequest {
            state_id,
            by_reference: std::mem::take(&mut self.proposals),
            by_value,
            force_path,
            external_tree: false,
        }))
        .map_err(rpc_err("commit"))?
        .into_inner();
        Ok(CommitMessages {
            commit: r.commit,
            welcome: (!r.welcome.is_empty()).then_some(r.welcome),
        })
    }
}

/// The content type of a PublicMessage or PrivateMessage.
fn content_type(message: &[u8]) -> Result<ContentType, PeerError> {
    match MlsMessage::decode(message)
        .map_err(decode_err("process"))?
        .body
    {
        MlsMessageBody::PrivateMessage(m) => Ok(m.content_type),
        MlsMessageBody::PublicMessage(m) => Ok(match m.content.body {
            FramedContentBody::Application(_) => ContentType::Application,
            FramedContentBody::Proposal(_) => ContentType::Proposal,
            FramedContentBody::Commit(_) => ContentType::Commit,
        }),
        _ => Err(PeerError::UnexpectedMessage {
            implementation: "hsmls (gRPC)",
            expected: "a PublicMessage or a PrivateMessage",
        }),
    }
}

impl<B: Backend> Peer for GrpcPeer<B> {
    const NAME: &'static str = B::NAME;

    fn with_options(identity: &[u8], options: PeerOptions) -> Result<Self, PeerError> {
        Ok(GrpcPeer {
            suite: options.suite,
            public_handshakes: options.public_handshakes,
            always_path: options.always_path,
            identity: identity.to_vec(),
            client: B::service().client.clone(),
            transactions: Vec::new(),
            state: None,
            proposals: Vec::new(),
            backend: PhantomData,
        })
    }

    fn key_package(&mut self) -> Result<Vec<u8>, PeerError> {
        let mut c = self.client.clone();
        let r = Self::block_on(c.create_key_package(CreateKeyPackageRequest {
            cipher_suite: u32::from(self.suite),
            identity: self.identity.clone(),
        }))
        .map_err(rpc_err("create_key_package"))?
        .into_inner();
        self.transactions.push(r.transaction_id);
        Ok(r.key_package)
    }

    fn create_group(&mut self, group_id: &[u8]) -> Result<(), PeerError> {
        let mut c = self.client.clone();
        let r = Self::block_on(c.create_group(CreateGroupRequest {
            group_id: group_id.to_vec(),
            cipher_suite: u32::from(self.suite),
            encrypt_handshake: !self.public_handshakes,
            identity: self.identity.clone(),
        }))
        .map_err(rpc_err("create_group"))?
        .into_inner();
        self.state = Some(r.state_id);
        Ok(())
    }

    fn add_members(&mut self, key_packages: &[Vec<u8>]) -> Result<CommitMessages, PeerError> {
        let adds = key_packages
            .iter()
            .map(|kp| ProposalDescription {
                proposal_type: b"add".to_vec(),
                key_package: kp.clone(),
                ..Default::default()
            })
            .collect();
        self.commit(adds, self.always_path)
    }

    fn remove_member(&mut self, leaf_index: u32) -> Result<CommitMessages, PeerError> {
        // The RPCs name members by identity: read it from the tree.
        let (_, tree) = self.group_info_and_tree()?;
        let node = usize::try_from(leaf_index).map_or(usize::MAX, |i| i.saturating_mul(2));
        let Some(Some(Node::Leaf(leaf))) = tree.0.get(node) else {
            return Err(PeerError::Library {
                implementation: "hsmls (gRPC)",
                operation: "remove_member",
                detail: format!("no member at leaf {leaf_index}"),
            });
        };
        let Credential::Basic(identity) = &leaf.credential else {
            return Err(PeerError::Library {
                implementation: "hsmls (gRPC)",
                operation: "remove_member",
                detail: "not a basic credential".into(),
            });
        };
        let remove = ProposalDescription {
            proposal_type: b"remove".to_vec(),
            removed_id: identity.clone(),
            ..Default::default()
        };
        self.commit(vec![remove], self.always_path)
    }

    fn self_update(&mut self) -> Result<CommitMessages, PeerError> {
        self.commit(Vec::new(), true)
    }

    fn merge_pending(&mut self) -> Result<(), PeerError> {
        let state_id = self.state()?;
        let mut c = self.client.clone();
        let r = Self::block_on(c.handle_pending_commit(HandlePendingCommitRequest { state_id }))
            .map_err(rpc_err("handle_pending_commit"))?
            .into_inner();
        self.state = Some(r.state_id);
        Ok(())
    }

    fn discard_pending(&mut self) -> Result<(), PeerError> {
        Err(PeerError::Library {
            implementation: "hsmls (gRPC)",
            operation: "discard_pending",
            detail: "mls_client.MLSClient has no RPC to drop a pending commit".into(),
        })
    }

    fn join(&mut self, welcome: &[u8], ratchet_tree: Option<&[u8]>) -> Result<(), PeerError> {
        // The Welcome is for one of this member's KeyPackages: try each
        // (a refused join keeps the transaction).
        let mut last = PeerError::UnexpectedMessage {
            implementation: "hsmls (gRPC)",
            expected: "a KeyPackage before the Welcome",
        };
        for i in 0..self.transactions.len() {
            let mut c = self.client.clone();
            let r = Self::block_on(c.join_group(JoinGroupRequest {
                transaction_id: self.transactions[i],
                welcome: welcome.to_vec(),
                encrypt_handshake: !self.public_handshakes,
                identity: self.identity.clone(),
                ratchet_tree: ratchet_tree.unwrap_or_default().to_vec(),
            }));
            match r {
                Ok(r) => {
                    self.transactions.remove(i);
                    self.state = Some(r.into_inner().state_id);
                    return Ok(());
                }
                Err(s) => last = rpc_err("join_group")(s),
            }
        }
        Err(last)
    }

    fn process(&mut self, message: &[u8]) -> Result<Event, PeerError> {
        let state_id = self.state()?;
        let mut c = self.client.clone();
        match content_type(message)? {
            ContentType::Application => {
                let r = Self::block_on(c.unprotect(UnprotectRequest {
                    state_id,
                    ciphertext: message.to_vec(),
                }))
                .map_err(rpc_err("unprotect"))?
                .into_inner();
                Ok(Event::Application(r.plaintext))
            }
            ContentType::Proposal => {
                self.proposals.push(message.to_vec());
                Ok(Event::Proposal)
            }
            ContentType::Commit => {
                let r = Self::block_on(c.handle_commit(HandleCommitRequest {
                    state_id,
                    proposal: std::mem::take(&mut self.proposals),
                    commit: message.to_vec(),
                }))
                .map_err(rpc_err("handle_commit"))?
                .into_inner();
                self.state = Some(r.state_id);
                Ok(Event::Commit {
                    epoch: self.epoch()?,
                })
            }
        }
    }

    fn encrypt(&mut self, application_data: &[u8]) -> Result<Vec<u8>, PeerError> {
        let state_id = self.state()?;
        let mut c = self.client.clone();
        Ok(Self::block_on(c.protect(ProtectRequest {
            state_id,
            authenticated_data: Vec::new(),
            plaintext: application_data.to_vec(),
        }))
        .map_err(rpc_err("protect"))?
        .into_inner()
        .ciphertext)
    }

    fn epoch(&self) -> Result<u64, PeerError> {
        Ok(self.group_info_and_tree()?.0.group_context.epoch)
    }

    fn epoch_authenticator(&self) -> Result<Vec<u8>, PeerError> {
        let state_id = self.state()?;
        let mut c = self.client.clone();
        Ok(Self::block_on(c.state_auth(StateAuthRequest { state_id }))
            .map_err(rpc_err("state_auth"))?
            .into_inner()
            .state_auth_secret)
    }

    fn export_secret(
        &self,
        label: &str,
        context: &[u8],
        length: usize,
    ) -> Result<Vec<u8>, PeerError> {
        let state_id = self.state()?;
        let mut c = self.client.clone();
        Ok(Self::block_on(c.export(ExportRequest {
            state_id,
            label: label.to_owned(),
            context: context.to_vec(),
            key_length: u32::try_from(length).unwrap_or(u32::MAX),
        }))
        .map_err(rpc_err("export"))?
        .into_inner()
        .exported_secret)
    }

    fn own_leaf_index(&self) -> Result<u32, PeerError> {
        // The member signs its own GroupInfo.
        Ok(self.group_info_and_tree()?.0.signer.0)
    }

    fn member_count(&self) -> Result<usize, PeerError> {
        let (_, tree) = self.group_info_and_tree()?;
        Ok(tree
            .0
            .iter()
            .step_by(2)
            .filter(|n| matches!(n, Some(Node::Leaf(_))))
            .count())
    }

    fn ratchet_tree(&self) -> Result<Vec<u8>, PeerError> {
        let state_id = self.state()?;
        let mut c = self.client.clone();
        Ok(Self::block_on(c.group_info(GroupInfoRequest {
            state_id,
            external_tree: true,
        }))
        .map_err(rpc_err("group_info"))?
        .into_inner()
        .ratchet_tree)
    }

    /// The interop harness's RPCs have no save or load of a group's
    /// state: refused, by name.
    fn save_state(&mut self) -> Result<SavedState, PeerError> {
        Err(PeerError::Library {
            implementation: B::NAME,
            operation: "save_state",
            detail: "the MLS interop harness has no RPC that saves a group's state".into(),
        })
    }

    /// See [`Peer::save_state`]: refused, by name.
    fn load_state(&mut self, _saved: &SavedState) -> Result<(), PeerError> {
        Err(PeerError::Library {
            implementation: B::NAME,
            operation: "load_state",
            detail: "the MLS interop harness has no RPC that loads a group's state".into(),
        })
    }

    fn group_info(&mut self, with_ratchet_tree: bool) -> Result<Vec<u8>, PeerError> {
        let state_id = self.state()?;
        let mut c = self.client.clone();
        Ok(Self::block_on(c.group_info(GroupInfoRequest {
            state_id,
            external_tree: !with_ratchet_tree,
        }))
        .map_err(rpc_err("group_info"))?
        .into_inner()
        .group_info)
    }

    fn join_external(
        &mut self,
        group_info: &[u8],
        ratchet_tree: Option<&[u8]>,
    ) -> Result<Vec<u8>, PeerError> {
        let mut c = self.client.clone();
        let r = Self::block_on(c.external_join(ExternalJoinRequest {
            group_info: group_info.to_vec(),
            ratchet_tree: ratchet_tree.unwrap_or_default().to_vec(),
            encrypt_handshake: !self.public_handshakes,
            identity: self.identity.clone(),
            remove_prior: false,
            psks: Vec::new(),
        }))
        .map_err(rpc_err("external_join"))?
        .into_inner();
        self.state = Some(r.state_id);
        Ok(r.commit)
    }
}

impl<B: Backend> Drop for GrpcPeer<B> {
    /// Frees the member's state and unused KeyPackages: the service
    /// destroys their keys (token objects included).
    fn drop(&mut self) {
        let ids: Vec<u32> = self
            .state
            .iter()
            .chain(&self.transactions)
            .copied()
            .collect();
        for state_id in ids {
            let mut c = self.client.clone();
            if let Err(e) = Self::block_on(c.free(FreeRequest { state_id })) {
                eprintln!("could not free {state_id}: {e}");
            }
        }
    }
}

/// MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 (mandatory, RFC 9420 §17.1).
const SUITE_0X0001: u16 = 0x0001;
/// MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519.
const SUITE_0X0003: u16 = 0x0003;
/// MLS_256_DHKEMP384_AES256GCM_SHA384_P384.
const SUITE_0X0007: u16 = 0x0007;

type Grpc = GrpcPeer<Software>;
type GrpcToken = GrpcPeer<Token>;

// ----- suite 0x0001 -----

#[test]
fn grpc_lifecycle_0x0001() -> Result<(), PeerError> {
    lifecycle::<Grpc>(SUITE_0X0001)
}

#[test]
fn grpc_creates_openmls_joins_0x0001() -> Result<(), PeerError> {
    cross::<Grpc, OpenMlsPeer>(SUITE_0X0001)
}

#[test]
fn openmls_creates_grpc_joins_0x0001() -> Result<(), PeerError> {
    cross::<OpenMlsPeer, Grpc>(SUITE_0X0001)
}

#[test]
fn grpc_creates_mls_rs_joins_0x0001() -> Result<(), PeerError> {
    cross::<Grpc, MlsRsPeer>(SUITE_0X0001)
}

#[test]
fn mls_rs_creates_grpc_joins_0x0001() -> Result<(), PeerError> {
    cross::<MlsRsPeer, Grpc>(SUITE_0X0001)
}

// ----- suite 0x0003 -----

#[test]
fn grpc_creates_openmls_joins_0x0003() -> Result<(), PeerError> {
    cross::<Grpc, OpenMlsPeer>(SUITE_0X0003)
}

#[test]
fn openmls_creates_grpc_joins_0x0003() -> Result<(), PeerError> {
    cross::<OpenMlsPeer, Grpc>(SUITE_0X0003)
}

#[test]
fn grpc_creates_mls_rs_joins_0x0003() -> Result<(), PeerError> {
    cross::<Grpc, MlsRsPeer>(SUITE_0X0003)
}

#[test]
fn mls_rs_creates_grpc_joins_0x0003() -> Result<(), PeerError> {
    cross::<MlsRsPeer, Grpc>(SUITE_0X0003)
}

// ----- suite 0x0007 (mls-rs only) -----

#[test]
fn grpc_creates_mls_rs_joins_0x0007() -> Result<(), PeerError> {
    cross::<Grpc, MlsRsPeer>(SUITE_0X0007)
}

#[test]
fn mls_rs_creates_grpc_joins_0x0007() -> Result<(), PeerError> {
    cross::<MlsRsPeer, Grpc>(SUITE_0X0007)
}

// ----- keys in SoftHSM -----

/// Signature keys (Ed25519) in the token, X25519 HPKE keys in software.
#[test]
fn grpc_token_creates_openmls_joins_0x0001() -> Result<(), PeerError> {
    with_token(false, || cross::<GrpcToken, OpenMlsPeer>(SUITE_0X0001))
}

#[test]
fn mls_rs_creates_grpc_token_joins_0x0001() -> Result<(), PeerError> {
    with_token(false, || cross::<MlsRsPeer, GrpcToken>(SUITE_0X0001))
}

/// Every key (P-384 ECDSA and ECDH) in the token.
#[test]
fn grpc_token_creates_mls_rs_joins_0x0007() -> Result<(), PeerError> {
    with_token(true, || cross::<GrpcToken, MlsRsPeer>(SUITE_0X0007))
}

// ----- the adapter itself -----

/// A message of the wrong suite is refused with the RPC's status, and the
/// member stays where it was: the adapter does not hide failures.
#[test]
fn grpc_refuses_a_key_package_of_another_suite() -> Result<(), PeerError> {
    let mut a = Grpc::with_suite(b"a", SUITE_0X0001)?;
    let mut b = MlsRsPeer::with_suite(b"b", SUITE_0X0003)?;
    a.create_group(b"suite mismatch")?;
    let before = scenario::agreement(&a)?;
    let e = a.add_members(&[b.key_package()?]).unwrap_err();
    assert!(
        matches!(
            &e,
            PeerError::Library {
                operation: "commit",
                detail,
                ..
            } if detail.starts_with("InvalidArgument")
        ),
        "{e:?}"
    );
    assert_eq!(scenario::agreement(&a)?, before);
    Ok(())
}

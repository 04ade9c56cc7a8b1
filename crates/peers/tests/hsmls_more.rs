//! More cross-implementation tests: hsmls's [`Group`] driven directly
//! (for features the byte-oriented [`Peer`] trait does not carry: PSKs and a
//! custody other than software), openmls and mls-rs through [`Peer`].
//!
//! - `resumption_psk_*`: resumption PSKs (RFC 9420 §8.6, §12.1.4) in a
//!   mixed group: hsmls commits one by value, and proposes one and commits
//!   it by reference; with openmls, openmls also commits hsmls's PSK
//!   proposal. Both sides agree on epoch, epoch authenticator and an
//!   exported secret after every step. openmls is driven directly here
//!   (as `Om`): [`OpenMlsPeer`] keeps no resumption PSKs (openmls's
//!   `number_of_resumption_psks` defaults to 0). mls-rs does not commit the
//!   PSK proposal: [`MlsRsPeer::self_update`] insists on an UpdatePath,
//!   which mls-rs leaves out of a PSK-only commit.
//! - `softhsm_*`: hsmls's signature, leaf and init keys in the SoftHSM
//!   token ([`Pkcs11Custody`], `HSMLS_PKCS11_CONFIG` from
//!   `scripts/test.sh`) in groups with openmls and mls-rs, in both
//!   directions (hsmls creates, the peer creates).
//! - `self_remove_with_openmls`: SelfRemove (draft-ietf-mls-extensions)
//!   at codepoint 0x000A, shared by hsmls and openmls, both ways. (mls-rs
//!   uses 0xF003 behind a feature the peer does not enable.)
//! - `last_resort_key_package_with_openmls_and_mls_rs`: one last-resort
//!   KeyPackage of hsmls joins an openmls group and an mls-rs group.

use std::sync::Arc;

use hsmls::wire::Credential;
use hsmls::wire::LeafIndex;
use hsmls::{
    BasicCredentialValidator, Client, CommitOptions, CommitOutput, CredentialValidator, Group,
    JoinOptions, KeyPackage, KeyPackageBundle, KeyPackageConfig, ProcessedMessage, Signer,
};
use hsmls_custody::pkcs11::{CONFIG_ENV, Pkcs11Config};
use hsmls_custody::{CustodyError, KeyCustody, Pkcs11Custody, SoftwareCustody};
use hsmls_peers::{Event, MlsRsPeer, OpenMlsPeer, Peer};

const LABEL: &str = "hsmls interop";
const CONTEXT: &[u8] = b"exporter context";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn validator() -> Arc<dyn CredentialValidator> {
    Arc::new(BasicCredentialValidator::default())
}

/// An hsmls member driven directly.
struct Hs {
    client: Client,
    group: Option<Group>,
    bundles: Vec<KeyPackageBundle>,
}

/// The member's keys leave the token with it: its signature key, its
/// leaf key and the init keys of bundles never used (keys already
/// destroyed by the engine are not found, which is as good).
impl Drop for Hs {
    fn drop(&mut self) {
        let custody = self.client.signer().custody.clone();
        let mut keys = vec![self.client.signer().signature_key.clone()];
        if let Some(g) = &self.group {
            keys.push(g.own_leaf_key().clone());
        }
        keys.extend(self.bundles.iter().map(|b| b.init_key.clone()));
        for k in &keys {
            match custody.destroy(k) {
                Ok(()) | Err(CustodyError::KeyNotFound(_)) => {}
                Err(e) if std::thread::panicking() => eprintln!("destroying a test key: {e}"),
                Err(e) => panic!("destroying a test key: {e}"),
            }
        }
    }
}

impl Hs {
    fn new(custody: Arc<dyn KeyCustody>, name: &str) -> Self {
        let signer =
            Signer::generate(custody, Credential::Basic(name.as_bytes().to_vec())).unwrap();
        Hs {
            client: Client::new(signer, validator()),
            group: None,
            bundles: Vec::new(),
        }
    }

    /// A peer's KeyPackage, validated by this member.
    fn validate(&self, key_package: &[u8]) -> KeyPackage {
        self.client
            .validate_key_package(key_package, now())
            .unwrap()
    }

    fn g(&mut self) -> &mut Group {
        self.group.as_mut().expect("in a group")
    }

    fn create(&mut self, group_id: &[u8]) {
        self.group = Some(
            self.client
                .create_group(group_id.to_vec(), vec![], now())
                .unwrap(),
        );
    }

    fn key_package(&mut self) -> Vec<u8> {
        let b = self
            .client
            .generate_key_package(&KeyPackageConfig::new(now() - 60, 86_400))
            .unwrap();
        let bytes = b.to_bytes().unwrap();
        self.bundles.push(b);
        bytes
    }

    fn join(&mut self, welcome: &[u8]) {
        let bundle = self.bundles.pop().expect("a KeyPackage");
        self.group = Some(
            self.client
                .join_from_welcome(&bundle, welcome, JoinOptions::default())
                .unwrap(),
        );
    }

    /// Processes a message; a commit is merged. Returns the application
    /// data, if any.
    fn process(&mut self, message: &[u8]) -> Option<Vec<u8>> {
        let g = self.g();
        match g.process_incoming(message, now()).unwrap() {
            ProcessedMessage::ApplicationMessage { data, .. } => Some(data),
            ProcessedMessage::Proposal { .. } => None,
            ProcessedMessage::StagedCommit(s) => {
                g.merge_staged_commit(s).unwrap();
                None
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn commit(&mut self, options: CommitOptions) -> CommitOutput {
        let out = self.g().commit(options, now()).unwrap();
        self.g().merge_pending_commit().unwrap();
        out
    }

    fn agreement(&mut self) -> (u64, Vec<u8>, Vec<u8>) {
        let g = self.g();
        (
            g.epoch(),
            g.epoch_authenticator().to_vec(),
            g.export_secret(LABEL.as_bytes(), CONTEXT, 32)
                .unwrap()
                .as_bytes()
                .to_vec(),
        )
    }
}

fn peer_agreement<P: Peer>(p: &P) -> (u64, Vec<u8>, Vec<u8>) {
    (
        p.epoch().unwrap(),
        p.epoch_authenticator().unwrap(),
        p.export_secret(LABEL, CONTEXT, 32).unwrap(),
    )
}

fn assert_agree<P: Peer>(hs: &mut Hs, p: &P, step: &str) {
    assert_eq!(hs.agreement(), peer_agreement(p), "{}: {step}", P::NAME);
}

/// hsmls creates a group and adds the peer member `b` (its KeyPackage
/// `kp`, its join `join`); one self-update so that earlier epochs exist.
/// Then hsmls commits the resumption PSK of epoch 1 by value, and proposes
/// the one of epoch 2 and commits it by reference; the peer processes
/// both. Returns hsmls's member for further steps.
fn hsmls_resumption_psks(
    kp: Vec<u8>,
    join: &mut dyn FnMut(&[u8]),
    process: &mut dyn FnMut(&[u8]) -> Event,
    agreement: &dyn Fn() -> (u64, Vec<u8>, Vec<u8>),
    name: &str,
) -> Hs {
    let mut a = Hs::new(Arc::new(SoftwareCustody::new()), "alice");
    a.create(b"psk group");
    let out = a.commit({
        let mut opts = CommitOptions::new();
        opts.add_key_packages = vec![a.validate(&kp)];
        opts
    });
    join(out.welcome.as_deref().unwrap());
    assert_eq!(a.agreement(), agreement(), "{name}: join");

    let out = a.g().self_update(now()).unwrap();
    a.g().merge_pending_commit().unwrap();
    assert_eq!(process(&out.commit), Event::Commit { epoch: 2 });
    assert_eq!(a.agreement(), agreement(), "{name}: self-update");

    // By value.
    let id = a.g().resumption_psk_id(1);
    let out = a.commit({
        let mut opts = CommitOptions::new();
        opts.psks = vec![id];
        opts
    });
    assert_eq!(process(&out.commit), Event::Commit { epoch: 3 });
    assert_eq!(a.agreement(), agreement(), "{name}: PSK by value");

    // By reference.
    let id = a.g().resumption_psk_id(2);
    let proposal = a.g().propose_psk(id).unwrap();
    assert_eq!(process(&proposal.message), Event::Proposal);
    let out = a.commit(CommitOptions::new());
    assert_eq!(process(&out.commit), Event::Commit { epoch: 4 });
    assert_eq!(a.agreement(), agreement(), "{name}: PSK by reference");
    a
}

#[test]
fn resumption_psk_with_mls_rs() {
    let b = std::cell::RefCell::new(MlsRsPeer::new(b"bob").unwrap());
    let kp = b.borrow_mut().key_package().unwrap();
    let mut a = hsmls_resumption_psks(
        kp,
        &mut |w| b.borrow_mut().join(w, None).unwrap(),
        &mut |m| b.borrow_mut().process(m).unwrap(),
        &|| peer_agreement(&*b.borrow()),
        "mls-rs",
    );
    let mut b = b.into_inner();
    let m = b.encrypt(b"after the PSKs").unwrap();
    assert_eq!(a.process(&m), Some(b"after the PSKs".to_vec()));
}

/// An openmls member driven directly: the [`OpenMlsPeer`] keeps no
/// resumption PSKs (openmls's `number_of_resumption_psks` defaults to 0),
/// so this one is configured to keep 8.
struct Om {
    provider: openmls_rust_crypto::OpenMlsRustCrypto,
    signer: openmls_basic_credential::SignatureKeyPair,
    credential: openmls::prelude::CredentialWithKey,
    group: Option<openmls::prelude::MlsGroup>,
    /// Send handshakes as PublicMessage (openmls sends SelfRemove only so).
    plaintext_handshakes: bool,
}

/// openmls leaf capabilities: suite 0x0002, basic credentials, SelfRemove.
fn self_remove_capabilities() -> openmls::prelude::Capabilities {
    use openmls::prelude::*;
    Capabilities::new(
        None,
        Some(&[Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256]),
        None,
        Some(&[ProposalType::SelfRemove]),
        Some(&[CredentialType::Basic]),
    )
}

impl Om {
    fn new(identity: &[u8]) -> Self {
        use openmls::prelude::*;
        let signer = openmls_basic_credential::SignatureKeyPair::new(
            Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256.signature_algorithm(),
        )
        .unwrap();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(identity.to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Om {
            provider: openmls_rust_crypto::OpenMlsRustCrypto::default(),
            signer,
            credential,
            group: None,
            plaintext_handshakes: false,
        }
    }

    /// Creates a group whose founder supports SelfRemove.
    fn create(&mut self, group_id: &[u8]) {
        use openmls::prelude::*;
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256)
            .use_ratchet_tree_extension(true)
            .capabilities(self_remove_capabilities())
            .wire_format_policy(MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .build();
        self.group = Some(
            MlsGroup::new_with_group_id(
                &self.provider,
                &self.signer,
                &config,
                GroupId::from_slice(group_id),
                self.credential.clone(),
            )
            .unwrap(),
        );
    }

    /// Adds KeyPackages (MLSMessages) and merges; returns the Welcome.
    fn add(&mut self, key_packages: &[Vec<u8>]) -> Vec<u8> {
        use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
        use openmls::prelude::*;
        let kps: Vec<KeyPackage> = key_packages
            .iter()
            .map(
                |b| match MlsMessageIn::tls_deserialize_exact(b).unwrap().extract() {
                    MlsMessageBodyIn::KeyPackage(kp) => kp
                        .validate(self.provider.crypto(), ProtocolVersion::Mls10)
                        .unwrap(),
                    _ => panic!("not a KeyPackage"),
                },
            )
            .collect();
        let group = self.group.as_mut().unwrap();
        let (_, welcome, _) = group
            .add_members(&self.provider, &self.signer, &kps)
            .unwrap();
        group.merge_pending_commit(&self.provider).unwrap();
        welcome.tls_serialize_detached().unwrap()
    }

    /// openmls's SelfRemove proposal.
    fn propose_self_remove(&mut self) -> Vec<u8> {
        use openmls::prelude::tls_codec::Serialize as _;
        let group = self.group.as_mut().unwrap();
        group
            .leave_group_via_self_remove(&self.provider, &self.signer)
            .unwrap()
            .tls_serialize_detached()
            .unwrap()
    }

    fn key_package(&self) -> Vec<u8> {
        use openmls::prelude::tls_codec::Serialize as _;
        use openmls::prelude::*;
        let bundle = KeyPackage::builder()
            .leaf_node_capabilities(self_remove_capabilities())
            .build(
                Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .unwrap();
        MlsMessageOut::from(bundle.key_package().clone())
            .tls_serialize_detached()
            .unwrap()
    }

    fn join(&mut self, welcome: &[u8]) {
        use openmls::prelude::tls_codec::Deserialize as _;
        use openmls::prelude::*;
        let config = MlsGroupJoinConfig::builder()
            .use_ratchet_tree_extension(true)
            .wire_format_policy(if self.plaintext_handshakes {
                MIXED_PLAINTEXT_WIRE_FORMAT_POLICY
            } else {
                MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY
            })
            .number_of_resumption_psks(8)
            .build();
        let MlsMessageBodyIn::Welcome(welcome) = MlsMessageIn::tls_deserialize_exact(welcome)
            .unwrap()
            .extract()
        else {
            panic!("not a Welcome");
        };
        let group = StagedWelcome::new_from_welcome(&self.provider, &config, welcome, None)
            .unwrap()
            .into_group(&self.provider)
            .unwrap();
        self.group = Some(group);
    }

    fn process(&mut self, message: &[u8]) -> Event {
        use openmls::prelude::tls_codec::Deserialize as _;
        use openmls::prelude::*;
        let message = MlsMessageIn::tls_deserialize_exact(message)
            .unwrap()
            .try_into_protocol_message()
            .unwrap();
        let group = self.group.as_mut().unwrap();
        let processed = group.process_message(&self.provider, message).unwrap();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(m) => Event::Application(m.into_bytes()),
            ProcessedMessageContent::ProposalMessage(p) => {
                group
                    .store_pending_proposal(self.provider.storage(), *p)
                    .unwrap();
                Event::Proposal
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                group.merge_staged_commit(&self.provider, *staged).unwrap();
                Event::Commit {
                    epoch: group.epoch().as_u64(),
                }
            }
            _ => panic!("unexpected message"),
        }
    }

    /// Commits the pending proposals (with their PSKs); returns the commit.
    fn commit_pending(&mut self) -> Vec<u8> {
        use openmls::prelude::tls_codec::Serialize as _;
        let group = self.group.as_mut().unwrap();
        let (commit, _, _) = group
            .commit_to_pending_proposals(&self.provider, &self.signer)
            .unwrap();
        group.merge_pending_commit(&self.provider).unwrap();
        commit.tls_serialize_detached().unwrap()
    }

    fn agreement(&self) -> (u64, Vec<u8>, Vec<u8>) {
        use openmls::prelude::*;
        let g = self.group.as_ref().unwrap();
        (
            g.epoch().as_u64(),
            g.epoch_authenticator().as_slice().to_vec(),
            g.export_secret(self.provider.crypto(), LABEL, CONTEXT, 32)
                .unwrap(),
        )
    }
}

#[test]
fn resumption_psk_with_openmls() {
    let b = std::cell::RefCell::new(Om::new(b"bob"));
    let kp = b.borrow().key_package();
    let mut a = hsmls_resumption_psks(
        kp,
        &mut |w| b.borrow_mut().join(w),
        &mut |m| b.borrow_mut().process(m),
        &|| b.borrow().agreement(),
        "openmls",
    );
    let mut b = b.into_inner();
    // openmls commits a resumption PSK proposal of hsmls by reference.
    let id = a.g().resumption_psk_id(3);
    let proposal = a.g().propose_psk(id).unwrap();
    assert_eq!(b.process(&proposal.message), Event::Proposal);
    let commit = b.commit_pending();
    let ProcessedMessage::StagedCommit(staged) = a.g().process_incoming(&commit, now()).unwrap()
    else {
        panic!("expected a commit");
    };
    assert_eq!(staged.psks.len(), 1, "openmls's commit carries the PSK");
    a.g().merge_staged_commit(staged).unwrap();
    assert_eq!(
        a.agreement(),
        b.agreement(),
        "openmls commits hsmls's PSK proposal"
    );
}

/// The SoftHSM test token; fails (never skips) without it.
fn token() -> Arc<dyn KeyCustody> {
    if std::env::var_os(CONFIG_ENV).is_none() {
        panic!(
            "{CONFIG_ENV} is not set: this test needs the SoftHSM test token. \
             Run `bash scripts/test.sh` (it runs scripts/setup-hsm.sh and exports \
             SOFTHSM2_CONF and {CONFIG_ENV})."
        );
    }
    let config = Pkcs11Config::from_env().unwrap_or_else(|e| panic!("bad {CONFIG_ENV}: {e}"));
    let custody = Pkcs11Custody::open(&config).unwrap_or_else(|e| {
        panic!("cannot open the SoftHSM test token: {e} (run `bash scripts/test.sh`)")
    });
    Arc::new(custody)
}

/// The signature and leaf keys of hsmls's member are the token's.
fn assert_keys_in_token(hs: &mut Hs) {
    let sig_uri = hs.client.signer().signature_key.uri().to_owned();
    let leaf_uri = hs.g().own_leaf_key().uri().to_owned();
    assert!(sig_uri.starts_with("pkcs11:"), "{sig_uri}");
    assert!(leaf_uri.starts_with("pkcs11:"), "{leaf_uri}");
}

/// hsmls (keys in SoftHSM) creates a group with openmls and mls-rs
/// members; everyone commits; then each peer creates a group and adds
/// hsmls.
#[test]
fn softhsm_hsmls_with_openmls_and_mls_rs() {
    let custody = token();
    let mut a = Hs::new(custody.clone(), "alice (SoftHSM)");
    let mut o = OpenMlsPeer::new(b"olivia (openmls)").unwrap();
    let mut r = MlsRsPeer::new(b"rhea (mls-rs)").unwrap();

    // hsmls creates and adds both peers in one commit.
    a.create(b"three implementations");
    let out = a.commit({
        let mut opts = CommitOptions::new();
        opts.add_key_packages = vec![
            a.validate(&o.key_package().unwrap()),
            a.validate(&r.key_package().unwrap()),
        ];
        opts
    });
    let welcome = out.welcome.unwrap();
    o.join(&welcome, None).unwrap();
    r.join(&welcome, None).unwrap();
    assert_agree(&mut a, &o, "join");
    assert_agree(&mut a, &r, "join");
    assert_keys_in_token(&mut a);

    // Messages from each.
    let m = a.g().encrypt_application(b"from the token").unwrap();
    assert_eq!(
        o.process(&m).unwrap(),
        Event::Application(b"from the token".to_vec())
    );
    assert_eq!(
        r.process(&m).unwrap(),
        Event::Application(b"from the token".to_vec())
    );
    let m = o.encrypt(b"from openmls").unwrap();
    assert_eq!(a.process(&m), Some(b"from openmls".to_vec()));
    assert_eq!(
        r.process(&m).unwrap(),
        Event::Application(b"from openmls".to_vec())
    );
    let m = r.encrypt(b"from mls-rs").unwrap();
    assert_eq!(a.process(&m), Some(b"from mls-rs".to_vec()));
    assert_eq!(
        o.process(&m).unwrap(),
        Event::Application(b"from mls-rs".to_vec())
    );

    // openmls self-updates (hsmls decrypts its path secret in the token).
    let out = o.self_update().unwrap();
    o.merge_pending().unwrap();
    a.process(&out.commit);
    r.process(&out.commit).unwrap();
    assert_agree(&mut a, &o, "openmls self-update");
    assert_agree(&mut a, &r, "openmls self-update");

    // mls-rs self-updates.
    let out = r.self_update().unwrap();
    r.merge_pending().unwrap();
    a.process(&out.commit);
    o.process(&out.commit).unwrap();
    assert_agree(&mut a, &r, "mls-rs self-update");
    assert_agree(&mut a, &o, "mls-rs self-update");

    // hsmls self-updates with a fresh leaf key from the token.
    let old_leaf = a.g().own_leaf_key().clone();
    let out = a.g().self_update(now()).unwrap();
    a.g().merge_pending_commit().unwrap();
    o.process(&out.commit).unwrap();
    r.process(&out.commit).unwrap();
    assert_agree(&mut a, &o, "hsmls self-update");
    assert_agree(&mut a, &r, "hsmls self-update");
    assert_ne!(a.g().own_leaf_key(), &old_leaf);
    assert!(matches!(
        custody.dh(&old_leaf, old_leaf.public_key().as_bytes()),
        Err(CustodyError::KeyNotFound(_))
    ));
    assert_keys_in_token(&mut a);

    // hsmls removes the mls-rs member.
    let rhea = LeafIndex(r.own_leaf_index().unwrap());
    let out = a.g().remove_members(&[rhea], now()).unwrap();
    a.g().merge_pending_commit().unwrap();
    o.process(&out.commit).unwrap();
    assert_agree(&mut a, &o, "remove");
    assert_eq!(a.g().members().len(), 2);

    // The mls-rs member joins again by an external commit.
    let mut r2 = MlsRsPeer::new(b"rhea again (mls-rs)").unwrap();
    let gi = a.g().group_info().unwrap();
    let commit = r2.join_external(&gi, None).unwrap();
    a.process(&commit);
    o.process(&commit).unwrap();
    assert_agree(&mut a, &r2, "external join");
    assert_agree(&mut a, &o, "external join");

    // Each peer creates a group and adds hsmls (init key in the token).
    for peer in ["openmls", "mls-rs"] {
        let mut h = Hs::new(custody.clone(), "henry (SoftHSM)");
        let kp = h.key_package();
        let init_key = h.bundles[0].init_key.clone();
        match peer {
            "openmls" => {
                let mut p = OpenMlsPeer::new(b"creator").unwrap();
                p.create_group(b"peer-made group").unwrap();
                let out = p.add_members(&[kp]).unwrap();
                p.merge_pending().unwrap();
                h.join(out.welcome.as_deref().unwrap());
                assert_agree(&mut h, &p, "hsmls joins");
                let out = h.g().self_update(now()).unwrap();
                h.g().merge_pending_commit().unwrap();
                p.process(&out.commit).unwrap();
                assert_agree(&mut h, &p, "hsmls self-update");
                let m = p.encrypt(b"hi henry").unwrap();
                assert_eq!(h.process(&m), Some(b"hi henry".to_vec()));
            }
            _ => {
                let mut p = MlsRsPeer::new(b"creator").unwrap();
                p.create_group(b"peer-made group").unwrap();
                let out = p.add_members(&[kp]).unwrap();
                p.merge_pending().unwrap();
                h.join(out.welcome.as_deref().unwrap());
                assert_agree(&mut h, &p, "hsmls joins");
                let out = h.g().self_update(now()).unwrap();
                h.g().merge_pending_commit().unwrap();
                p.process(&out.commit).unwrap();
                assert_agree(&mut h, &p, "hsmls self-update");
                let m = p.encrypt(b"hi henry").unwrap();
                assert_eq!(h.process(&m), Some(b"hi henry".to_vec()));
            }
        }
        // The init key was used in the token and then destroyed (§9.2).
        assert!(matches!(
            custody.dh(&init_key, init_key.public_key().as_bytes()),
            Err(CustodyError::KeyNotFound(_))
        ));
        assert_keys_in_token(&mut h);
    }
}

/// SelfRemove (draft-ietf-mls-extensions) with openmls, which uses the same
/// codepoint as hsmls (0x000A): hsmls self-removes and openmls commits;
/// an openmls member self-removes and hsmls commits.
#[test]
fn self_remove_with_openmls() {
    use hsmls::wire::ProposalType;
    let mut o = Om::new(b"olivia");
    let mut o2 = Om::new(b"oscar");
    o2.plaintext_handshakes = true;
    let mut h = Hs::new(Arc::new(SoftwareCustody::new()), "henry");
    // hsmls's KeyPackage lists SelfRemove in its capabilities (openmls
    // requires every member to support a proposal type it processes).
    let mut config = KeyPackageConfig::new(now() - 60, 86_400);
    let mut caps = hsmls::internal::key_package::default_capabilities(
        config.cipher_suite,
        h.client.signer().credential.credential_type(),
    );
    caps.proposals.push(ProposalType::SELF_REMOVE);
    config.capabilities = Some(caps);
    let bundle = h.client.generate_key_package(&config).unwrap();
    let kp = bundle.to_bytes().unwrap();
    h.bundles.push(bundle);

    o.create(b"self remove group");
    let welcome = o.add(&[kp, o2.key_package()]);
    h.join(&welcome);
    o2.join(&welcome);
    assert_eq!(h.agreement(), o.agreement());
    assert_eq!(o2.agreement(), o.agreement());

    // oscar (openmls) self-removes; hsmls commits; olivia processes.
    let oscar = LeafIndex(o2.group.as_ref().unwrap().own_leaf_index().u32());
    let proposal = o2.propose_self_remove();
    assert_eq!(proposal.get(..2), Some(&[0u8, 1][..]), "an MLSMessage");
    assert_eq!(h.process(&proposal), None);
    assert!(matches!(
        h.g().pending_proposals().last().map(|p| &p.proposal),
        Some(hsmls::wire::Proposal::SelfRemove(_))
    ));
    assert_eq!(o.process(&proposal), Event::Proposal);
    let out = h.commit(CommitOptions::new());
    assert_eq!(out.removes.len(), 1);
    assert_eq!(out.removes[0].index, oscar);
    assert!(matches!(o.process(&out.commit), Event::Commit { .. }));
    assert!(matches!(o2.process(&out.commit), Event::Commit { .. }));
    assert_eq!(h.agreement(), o.agreement());
    assert_eq!(h.g().members().len(), 2);

    // henry (hsmls) self-removes; olivia (openmls) commits it.
    let proposal = h.g().propose_self_remove().unwrap();
    assert_eq!(o.process(&proposal.message), Event::Proposal);
    let commit = o.commit_pending();
    let ProcessedMessage::StagedCommit(staged) = h.g().process_incoming(&commit, now()).unwrap()
    else {
        panic!("expected a commit");
    };
    assert!(staged.self_removed);
    h.g().merge_staged_commit(staged).unwrap();
    assert!(!h.g().is_active());
    assert_eq!(o.group.as_ref().unwrap().members().count(), 1);
}

/// A last-resort KeyPackage of hsmls (the `last_resort` extension,
/// 0x000A) used by an openmls group and then by an mls-rs group: hsmls
/// joins both from the same KeyPackage, its init key surviving the first
/// join (RFC 9420 §16.8).
#[test]
fn last_resort_key_package_with_openmls_and_mls_rs() {
    let custody = Arc::new(SoftwareCustody::new());
    let signer = Signer::generate(custody.clone(), Credential::Basic(b"lena".to_vec())).unwrap();
    let lena = Client::new(signer, validator());
    let bundle = lena
        .generate_key_package(&KeyPackageConfig::new(now() - 60, 86_400).last_resort())
        .unwrap();
    let kp = bundle.to_bytes().unwrap();
    let join = |welcome: &[u8]| {
        lena.join_from_welcome(&bundle, welcome, JoinOptions::default())
            .unwrap()
    };

    let mut o = OpenMlsPeer::new(b"olivia").unwrap();
    o.create_group(b"first").unwrap();
    let out = o.add_members(std::slice::from_ref(&kp)).unwrap();
    o.merge_pending().unwrap();
    let mut g1 = join(out.welcome.as_deref().unwrap());
    assert_eq!(g1.epoch_authenticator(), o.epoch_authenticator().unwrap());
    assert!(
        custody
            .dh(&bundle.init_key, bundle.init_key.public_key().as_bytes())
            .is_ok(),
        "the last-resort init key survives the join"
    );

    let mut r = MlsRsPeer::new(b"rhea").unwrap();
    r.create_group(b"second").unwrap();
    let out = r.add_members(&[kp]).unwrap();
    r.merge_pending().unwrap();
    let g2 = join(out.welcome.as_deref().unwrap());
    assert_eq!(g2.epoch_authenticator(), r.epoch_authenticator().unwrap());

    // Both groups work.
    let m = o.encrypt(b"to lena, group 1").unwrap();
    match g1.process_incoming(&m, now()).unwrap() {
        ProcessedMessage::ApplicationMessage { data, .. } => assert_eq!(data, b"to lena, group 1"),
        other => panic!("{other:?}"),
    }
    let m = r.encrypt(b"to lena, group 2").unwrap();
    let mut g2 = g2;
    match g2.process_incoming(&m, now()).unwrap() {
        ProcessedMessage::ApplicationMessage { data, .. } => assert_eq!(data, b"to lena, group 2"),
        other => panic!("{other:?}"),
    }
}

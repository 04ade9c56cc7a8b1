//! A three-member group whose founder, alice, signs with a key in a TPM 2.0
//! (the swtpm test token of `scripts/setup-tpm.sh`, reached through
//! tpm2-pkcs11), while her HPKE keys live in the SoftHSM test token (the
//! split configuration `HSMLS_TPM_SPLIT_PKCS11_CONFIG`: a TPM has no
//! `C_DeriveKey`); bob and carol keep every key in SoftHSM.
//!
//! The group goes through adds (by Welcome), application messages, a
//! self-update commit by each of alice and bob, an Update proposal by carol
//! committed by alice, and alice's removal of carol. Alice's custody is
//! audited the way `custody_audit.rs` audits SoftHSM members: every call
//! is recorded, and the test asserts that
//!
//! - her signature key was generated in the TPM token (its URI names
//!   `hsmls-tpm`) and is the signature key of her leaf after every step;
//! - every signature she made (every commit, proposal, message and her
//!   KeyPackage-less founding leaf) was made by that key, through `sign`,
//!   in the TPM: no `import`, no `sign_prehash`, no other signature key;
//! - the key's object in the TPM is `CKA_SENSITIVE`, not
//!   `CKA_EXTRACTABLE`, always sensitive, never extractable, a token
//!   object, with an unreadable `CKA_VALUE`, right after generation and
//!   at the end: the key never left the TPM;
//! - her HPKE keys were generated in the SoftHSM token (`KeyHome::HpkeToken`).
// `common` is shared: not every helper is used here.
#![allow(dead_code)]

mod common;

use std::sync::{Arc, Mutex};

use hsmls::{Client, CommitOptions, GroupConfig, JoinOptions, KeyPackageConfig, ProcessedMessage};
use hsmls_custody::{
    Capabilities, ConfiguredCustody, CustodyError, CustodyRouter, KeyAttributes, KeyCustody,
    KeyHome, KeyPurpose, KeyRef, KeySpec, Pkcs11Custody, SharedSecret,
};

use common::{
    Member, NOW, all_send, deliver_commit, member, pkcs11_config, split_config, validator,
};

/// One recorded custody call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Generate(KeyRef),
    Import(KeySpec),
    Sign(KeyRef),
    SignPrehash(KeyRef),
    Dh(KeyRef),
    Destroy(KeyRef),
}

/// Alice's custody: the split router, every call recorded.
#[derive(Debug)]
struct Audited {
    router: Arc<CustodyRouter>,
    tpm: Arc<Pkcs11Custody>,
    calls: Mutex<Vec<Call>>,
}

impl Audited {
    fn record(&self, c: Call) {
        self.calls.lock().unwrap().push(c);
    }
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

/// The key's object as the TPM token reports it: sensitive, never
/// extractable, a token object, its value unreadable.
fn assert_in_tpm(tpm: &Pkcs11Custody, key: &KeyRef, when: &str) {
    let a: KeyAttributes = tpm.key_attributes(key).expect("key object in the TPM");
    assert!(a.sensitive, "{when}: not CKA_SENSITIVE");
    assert!(!a.extractable, "{when}: CKA_EXTRACTABLE");
    assert!(a.always_sensitive, "{when}: not CKA_ALWAYS_SENSITIVE");
    assert!(a.never_extractable, "{when}: not CKA_NEVER_EXTRACTABLE");
    assert!(a.token_object, "{when}: not a token object");
    assert!(!a.value_readable, "{when}: CKA_VALUE readable");
}

impl KeyCustody for Audited {
    fn capabilities(&self) -> &Capabilities {
        self.router.capabilities()
    }
    fn generate(&self, spec: KeySpec) -> Result<KeyRef, CustodyError> {
        let key = self.router.generate(spec)?;
        if spec.purpose() == KeyPurpose::Signature {
            assert_eq!(self.router.home_of(key.uri()).unwrap(), KeyHome::Token);
            assert_in_tpm(&self.tpm, &key, "just generated");
        }
        self.record(Call::Generate(key.clone()));
        Ok(key)
    }
    fn import(&self, spec: KeySpec, private_key: &[u8]) -> Result<KeyRef, CustodyError> {
        self.record(Call::Import(spec));
        self.router.import(spec, private_key)
    }
    fn sign_prehash(&self, key: &KeyRef, prehash: &[u8]) -> Result<Vec<u8>, CustodyError> {
        self.record(Call::SignPrehash(key.clone()));
        self.router.sign_prehash(key, prehash)
    }
    fn sign(&self, key: &KeyRef, message: &[u8]) -> Result<Vec<u8>, CustodyError> {
        self.record(Call::Sign(key.clone()));
        self.router.sign(key, message)
    }
    fn dh(&self, key: &KeyRef, peer_public_key: &[u8]) -> Result<SharedSecret, CustodyError> {
        self.record(Call::Dh(key.clone()));
        self.router.dh(key, peer_public_key)
    }
    fn destroy(&self, key: &KeyRef) -> Result<(), CustodyError> {
        self.record(Call::Destroy(key.clone()));
        self.router.destroy(key)
    }
    fn find(&self, uri: &str) -> Result<KeyRef, CustodyError> {
        self.router.find(uri)
    }
    fn key_attributes(&self, key: &KeyRef) -> Result<KeyAttributes, CustodyError> {
        self.router.key_attributes(key)
    }
}

/// Every member sees the same group, and alice's leaf carries her TPM key.
fn agree<C>(members: &mut [Member<C>], alice_key: &KeyRef, step: &str) {
    let active: Vec<_> = members.iter().filter_map(|m| m.group.as_ref()).collect();
    for g in &active {
        assert_eq!(
            g.epoch_authenticator(),
            active[0].epoch_authenticator(),
            "{step}"
        );
        assert_eq!(g.tree_hash(), active[0].tree_hash(), "{step}");
        let alice_leaf = g
            .members()
            .into_iter()
            .find(|l| l.signature_key.as_slice() == alice_key.public_key().as_bytes());
        assert!(alice_leaf.is_some(), "{step}: no leaf with alice's TPM key");
    }
}

#[test]
fn three_member_lifecycle_with_one_member_signing_in_the_tpm() {
    let split = ConfiguredCustody::open(&split_config())
        .unwrap_or_else(|e| panic!("cannot open the split custody: {e} (run scripts/test.sh)"));
    let audited = Arc::new(Audited {
        router: split.router().clone(),
        tpm: split.token().clone(),
        calls: Mutex::new(Vec::new()),
    });
    let hsm = pkcs11_config();
    let open_hsm = || Arc::new(Pkcs11Custody::open(&hsm).expect("the SoftHSM test token"));

    // Alice's custody is `Audited`, bob's and carol's `Pkcs11Custody`: the
    // members hold them as `Arc<dyn KeyCustody>` (itself a custody).
    type Dyn = Arc<dyn KeyCustody>;
    let alice = member(Arc::new(audited.clone() as Dyn), "alice");
    let alice_key = alice.signer.signature_key.clone();
    assert!(
        alice_key.uri().contains("token=hsmls-tpm;"),
        "{}",
        alice_key.uri()
    );
    let mut members: Vec<Member<Dyn>> = vec![
        alice,
        member(Arc::new(open_hsm() as Dyn), "bob"),
        member(Arc::new(open_hsm() as Dyn), "carol"),
    ];
    let gconfig = GroupConfig::default();
    members[0].group = Some(
        Client::new(members[0].signer.clone(), validator())
            .with_group_config(gconfig.clone())
            .create_group(b"tpm group".to_vec(), Vec::new(), NOW)
            .unwrap(),
    );

    // Adds: bob and carol by one Welcome (alice signs the commit and the
    // GroupInfo in the TPM).
    let bundles: Vec<_> = members[1..]
        .iter()
        .map(|m| {
            Client::new(m.signer.clone(), validator())
                .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
                .unwrap()
        })
        .collect();
    let kps: Vec<hsmls::KeyPackage> = bundles.iter().map(|b| b.key_package.clone()).collect();
    let out = members[0].group().add_members(&kps, NOW).unwrap();
    members[0].group().merge_pending_commit().unwrap();
    let welcome = out.welcome.expect("a Welcome");
    for (m, bundle) in members[1..].iter_mut().zip(&bundles) {
        m.group = Some(
            Client::new(m.signer.clone(), validator())
                .with_group_config(gconfig.clone())
                .join_from_welcome(bundle, &welcome, JoinOptions::default())
                .unwrap(),
        );
    }
    agree(&mut members, &alice_key, "adds");
    all_send(&mut members);

    // Updates: alice and bob commit a fresh leaf key each.
    for committer in [0, 1] {
        let out = members[committer].group().self_update(NOW).unwrap();
        deliver_commit(&mut members, committer, &out);
        agree(&mut members, &alice_key, "self-update");
        all_send(&mut members);
    }
    // Carol proposes an Update; alice commits it.
    let proposal = members[2].group().propose_update().unwrap();
    for r in [0, 1] {
        assert!(matches!(
            members[r].group().process_incoming(&proposal, NOW).unwrap(),
            ProcessedMessage::Proposal { .. }
        ));
    }
    let out = members[0]
        .group()
        .commit(CommitOptions::new(), NOW)
        .unwrap();
    deliver_commit(&mut members, 0, &out);
    agree(&mut members, &alice_key, "update proposal");
    all_send(&mut members);

    // Removal: alice removes carol.
    let carol = members[2].group().own_leaf_index();
    let out = members[0].group().remove_members(&[carol], NOW).unwrap();
    deliver_commit(&mut members, 0, &out);
    assert!(members[2].group.is_none(), "carol was not removed");
    assert_eq!(members[0].group().members().len(), 2);
    agree(&mut members, &alice_key, "removal");
    all_send(&mut members);

    // The audit of alice's custody.
    let calls = audited.calls();
    let mut signatures = 0;
    for c in &calls {
        match c {
            Call::Import(spec) => panic!("import({spec}) was called"),
            Call::SignPrehash(_) => panic!("the engine called sign_prehash"),
            Call::Sign(k) => {
                assert_eq!(k, &alice_key, "signed with another key");
                signatures += 1;
            }
            Call::Dh(k) | Call::Destroy(k) => {
                assert!(
                    calls.contains(&Call::Generate(k.clone())),
                    "{c:?}: not generated here"
                );
            }
            Call::Generate(k) if k.purpose() == KeyPurpose::Hpke => {
                assert_eq!(audited.router.home_of(k.uri()).unwrap(), KeyHome::HpkeToken);
            }
            Call::Generate(k) => assert_eq!(k, &alice_key, "a second signature key"),
        }
    }
    // Commits (add, update, proposal commit, removal) and the messages.
    assert!(signatures >= 8, "only {signatures} signatures in the TPM");
    assert!(
        calls.iter().any(|c| matches!(c, Call::Dh(_))),
        "alice never decrypted an UpdatePath with an HPKE key in SoftHSM"
    );
    assert_in_tpm(split.token(), &alice_key, "at the end");

    // The test's keys leave the tokens: alice's TPM key and every key the
    // members still hold (HPKE session objects die with their sessions).
    split.router().destroy(&alice_key).unwrap();
    assert!(matches!(
        split.token().find(alice_key.uri()),
        Err(CustodyError::KeyNotFound(_))
    ));
    for m in &members[1..] {
        m.custody.destroy(&m.signer.signature_key).unwrap();
    }
}

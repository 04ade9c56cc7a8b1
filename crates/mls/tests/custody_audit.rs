//! Secret-handling audit (issue: no private signature or leaf/init HPKE key
//! of hsmls ever exists outside the token).
//!
//! A group scenario (create, three joins by Welcome, a self-update commit,
//! an Update proposal, a remove, application messages, an external join)
//! runs with every member's keys in the SoftHSM test token
//! (`HSMLS_PKCS11_CONFIG`, set by `scripts/test.sh`) through a
//! [`CustodyRouter`] over [`Pkcs11Custody`], each wrapped in an [`Audit`]
//! custody that records every call. It runs once per suite, with the
//! custody split the suite allows on SoftHSM:
//!
//! - 0x0002 (P-256) and 0x0007 (P-384): every key in the token
//!   (`hpke_keys = "token"`, so no key could go elsewhere);
//! - 0x0001 (Ed25519 / X25519): signature keys in the token, HPKE keys in
//!   software custody, by explicit configuration
//!   (`hpke_keys = "token-else-software"`): SoftHSM has no X25519.
//!
//! The test asserts:
//!
//! - `import` is never called: no private key enters custody from
//!   software;
//! - every `KeyRef` given to `sign`, `sign_prehash`, `dh` or `destroy` was
//!   produced by `generate` of that same custody;
//! - every key lives where the split says ([`CustodyRouter::home`] and the
//!   key's URI): signature keys in the token, HPKE keys in the token or,
//!   for 0x0001, in software;
//! - every key object generated in the token has `CKA_SENSITIVE` true,
//!   `CKA_EXTRACTABLE` false and an unreadable `CKA_VALUE`
//!   (`KeyCustody::key_attributes`, read from the token), checked right
//!   after generation and again at the end for keys still alive, and
//!   signature keys are token objects (`CKA_TOKEN`); a software HPKE key
//!   reports itself as process memory (not a token object);
//! - every signature key, every KeyPackage init and leaf key, and the leaf
//!   key of every member after every commit (including the committer's
//!   fresh UpdatePath leaf key and the external joiner's) is the public
//!   key of a `KeyRef` its member's custody generated: no leaf or init
//!   private key was derived in software.
//!
//! By design (RFC 9420 §7.4, and issue "The group engine": "parent-node
//! keys are derived in software and zeroized") the HPKE keys of *parent*
//! nodes are derived from path secrets in software and never touch the
//! custody; this test does not cover them.

mod common;

use std::sync::{Arc, Mutex};

use hsmls::{
    Client, CommitOptions, Group, GroupConfig, JoinOptions, KeyPackageBundle, KeyPackageConfig,
    ProcessedMessage,
};
use hsmls_crypto::CipherSuite;
use hsmls_custody::pkcs11::Pkcs11Config;
use hsmls_custody::{
    Capabilities, CustodyError, CustodyRouter, HpkeKeyHome, KeyAttributes, KeyCustody, KeyHome,
    KeyPurpose, KeyRef, KeySpec, Pkcs11Custody, SharedSecret,
};

use common::{
    Member, NOW, all_send, deliver_commit, external_join, member_of_suite, pkcs11_config, validator,
};

/// One recorded custody call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Generate(KeySpec, KeyRef),
    Import(KeySpec),
    Sign(KeyRef),
    SignPrehash(KeyRef),
    Dh(KeyRef),
    Destroy(KeyRef),
    Find(String),
}

/// A suite and the custody split the audit expects for it on SoftHSM.
#[derive(Clone, Copy, Debug)]
struct Split {
    suite: CipherSuite,
    /// The `hpke_keys` configuration of the router.
    hpke_keys: HpkeKeyHome,
    /// Where the suite's HPKE keys must live.
    hpke_home: KeyHome,
}

/// A custody on the token (through a [`CustodyRouter`]) that records every
/// call and checks each generated key's home and, for token keys, its
/// attributes in the token as soon as it exists.
#[derive(Debug)]
struct Audit {
    inner: CustodyRouter,
    split: Split,
    calls: Mutex<Vec<Call>>,
}

/// Where `key` must live, by its purpose and the split.
fn expected_home(split: Split, key: &KeyRef) -> KeyHome {
    match key.purpose() {
        KeyPurpose::Signature => KeyHome::Token,
        KeyPurpose::Hpke => split.hpke_home,
    }
}

/// The key lives where the split says; a token key's private object is
/// sensitive, not extractable, its value unreadable (and a signature key
/// is a token object); a software key says it is in process memory.
fn assert_protected(c: &CustodyRouter, split: Split, key: &KeyRef, when: &str) {
    let spec = key.spec();
    let home = expected_home(split, key);
    assert_eq!(c.home(spec).unwrap(), home, "{when}: {spec} key's home");
    let a: KeyAttributes = c.key_attributes(key).expect("a live key");
    match home {
        KeyHome::Token => {
            assert!(
                key.uri().starts_with("pkcs11:"),
                "{when}: {spec} key {} is not a token key",
                key.uri()
            );
            assert!(a.sensitive, "{when}: {spec} key is not CKA_SENSITIVE");
            assert!(!a.extractable, "{when}: {spec} key is CKA_EXTRACTABLE");
            assert!(
                !a.value_readable,
                "{when}: {spec} key's CKA_VALUE is readable"
            );
            if key.purpose() == KeyPurpose::Signature {
                assert!(a.token_object, "{when}: {spec} key is not CKA_TOKEN");
            }
        }
        _ => {
            assert!(
                key.uri().starts_with("software:"),
                "{when}: {spec} key {} is not in software custody",
                key.uri()
            );
            assert!(!a.token_object, "{when}: {spec} software key");
        }
    }
}

impl Audit {
    fn open(config: &Pkcs11Config, split: Split) -> Arc<Self> {
        let token = Pkcs11Custody::open(config).unwrap_or_else(|e| {
            panic!("cannot open the SoftHSM test token: {e} (run `bash scripts/test.sh`)")
        });
        Arc::new(Audit {
            inner: CustodyRouter::new(Arc::new(token), split.hpke_keys),
            split,
            calls: Mutex::new(Vec::new()),
        })
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn generated(&self) -> Vec<KeyRef> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Generate(_, k) => Some(k),
                _ => None,
            })
            .collect()
    }

    fn destroyed(&self) -> Vec<KeyRef> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Destroy(k) => Some(k),
                _ => None,
            })
            .collect()
    }

    /// Whether `public` (SEC1) is the public key of a key this custody
    /// generated for `purpose`.
    fn generated_public(&self, purpose: KeyPurpose, public: &[u8]) -> bool {
        self.generated()
            .iter()
            .any(|k| k.purpose() == purpose && k.public_key().as_bytes() == public)
    }
}

impl KeyCustody for Audit {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }
    fn generate(&self, spec: KeySpec) -> Result<KeyRef, CustodyError> {
        let key = self.inner.generate(spec)?;
        assert_protected(&self.inner, self.split, &key, "just generated");
        self.record(Call::Generate(spec, key.clone()));
        Ok(key)
    }
    fn import(&self, spec: KeySpec, private_key: &[u8]) -> Result<KeyRef, CustodyError> {
        self.record(Call::Import(spec));
        self.inner.import(spec, private_key)
    }
    fn sign_prehash(&self, key: &KeyRef, prehash: &[u8]) -> Result<Vec<u8>, CustodyError> {
        self.record(Call::SignPrehash(key.clone()));
        self.inner.sign_prehash(key, prehash)
    }
    fn sign(&self, key: &KeyRef, message: &[u8]) -> Result<Vec<u8>, CustodyError> {
        self.record(Call::Sign(key.clone()));
        self.inner.sign(key, message)
    }
    fn dh(&self, key: &KeyRef, peer_public_key: &[u8]) -> Result<SharedSecret, CustodyError> {
        self.record(Call::Dh(key.clone()));
        self.inner.dh(key, peer_public_key)
    }
    fn destroy(&self, key: &KeyRef) -> Result<(), CustodyError> {
        self.record(Call::Destroy(key.clone()));
        self.inner.destroy(key)
    }
    fn find(&self, uri: &str) -> Result<KeyRef, CustodyError> {
        self.record(Call::Find(uri.to_owned()));
        self.inner.find(uri)
    }
    fn key_attributes(&self, key: &KeyRef) -> Result<KeyAttributes, CustodyError> {
        self.inner.key_attributes(key)
    }
}

/// All members agree, and every leaf of the tree (signature and HPKE key)
/// is a key its own member's custody generated; every member's own leaf
/// KeyRef is one its custody generated.
fn check(members: &[Member<Audit>], step: &str) {
    let groups: Vec<&Group> = members.iter().filter_map(|m| m.group.as_ref()).collect();
    let first = groups[0];
    for g in &groups {
        assert_eq!(
            g.epoch_authenticator(),
            first.epoch_authenticator(),
            "{step}"
        );
        assert_eq!(g.tree_hash(), first.tree_hash(), "{step}");
    }
    for leaf in first.members() {
        let m = members
            .iter()
            .find(|m| {
                m.group
                    .as_ref()
                    .is_some_and(|g| g.own_leaf_index() == leaf.index)
            })
            .unwrap_or_else(|| panic!("{step}: no member at leaf {:?}", leaf.index));
        assert!(
            m.custody
                .generated_public(KeyPurpose::Signature, leaf.signature_key.as_slice()),
            "{step}: {}'s signature key was not generated in its custody",
            m.name
        );
        assert!(
            m.custody
                .generated_public(KeyPurpose::Hpke, leaf.encryption_key.as_slice()),
            "{step}: {}'s leaf HPKE key was not generated in its custody",
            m.name
        );
        let own = m.group.as_ref().map(|g| g.own_leaf_key().clone());
        let own = own.expect("group");
        assert!(
            m.custody.generated().contains(&own),
            "{step}: {}'s own leaf KeyRef was not generated by its custody",
            m.name
        );
        assert_eq!(own.public_key().as_bytes(), leaf.encryption_key.as_slice());
    }
}

/// Suite 0x0002: every key in the token.
#[test]
fn no_private_key_of_hsmls_exists_outside_the_token() {
    audit(Split {
        suite: CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
        hpke_keys: HpkeKeyHome::Token,
        hpke_home: KeyHome::Token,
    });
}

/// Suite 0x0007 (P-384 ECDSA and ECDH): every key in the token.
#[test]
fn no_private_key_of_hsmls_exists_outside_the_token_0x0007() {
    audit(Split {
        suite: CipherSuite::MLS_256_DHKEMP384_AES256GCM_SHA384_P384,
        hpke_keys: HpkeKeyHome::Token,
        hpke_home: KeyHome::Token,
    });
}

/// Suite 0x0001: Ed25519 signature keys in the token; the X25519 HPKE keys
/// in software custody, because the configuration says so explicitly.
#[test]
fn signature_keys_in_the_token_x25519_hpke_keys_in_software_0x0001() {
    audit(Split {
        suite: CipherSuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519,
        hpke_keys: HpkeKeyHome::TokenElseSoftware,
        hpke_home: KeyHome::Software,
    });
}

/// The audited scenario in `split.suite`.
fn audit(split: Split) {
    let config = pkcs11_config();
    let mut gconfig = GroupConfig::default();
    gconfig.cipher_suite = hsmls::wire::CipherSuite(split.suite.0);
    let mut kp_config = KeyPackageConfig::new(NOW - 10, 3600);
    kp_config.cipher_suite = gconfig.cipher_suite;
    let mut members: Vec<Member<Audit>> = ["alice", "bob", "carol", "dave"]
        .into_iter()
        .map(|n| member_of_suite(Audit::open(&config, split), n, split.suite))
        .collect();

    members[0].group = Some(
        Client::new(members[0].signer.clone(), validator())
            .with_group_config(gconfig.clone())
            .create_group(b"audited group".to_vec(), Vec::new(), NOW)
            .unwrap(),
    );
    check(&members, "create");

    // Three joins by Welcome.
    let bundles: Vec<KeyPackageBundle> = members[1..]
        .iter()
        .map(|m| Client::new(m.signer.clone(), validator()).generate_key_package(&kp_config))
        .collect::<Result<_, _>>()
        .unwrap();
    for (m, b) in members[1..].iter().zip(&bundles) {
        let kp = b.key_package.leaf_node();
        assert!(
            m.custody.generated().contains(&b.init_key),
            "{}: init key",
            m.name
        );
        assert!(
            m.custody.generated().contains(&b.encryption_key),
            "{}: leaf key",
            m.name
        );
        assert_eq!(
            b.encryption_key.public_key().as_bytes(),
            kp.encryption_key.as_slice()
        );
        assert!(
            m.custody.generated_public(
                KeyPurpose::Hpke,
                b.key_package.as_wire().init_key.as_slice()
            ),
            "{}: KeyPackage init_key not generated in custody",
            m.name
        );
    }
    let kps: Vec<hsmls::KeyPackage> = bundles.iter().map(|b| b.key_package.clone()).collect();
    let out = members[0].group().add_members(&kps, NOW).unwrap();
    members[0].group().merge_pending_commit().unwrap();
    let welcome = out.welcome.clone().expect("a Welcome");
    for (m, bundle) in members[1..].iter_mut().zip(&bundles) {
        m.group = Some(
            Client::new(m.signer.clone(), validator())
                .with_group_config(gconfig.clone())
                .join_from_welcome(bundle, &welcome, JoinOptions::default())
                .unwrap(),
        );
        // The Welcome was opened with the init key inside the token.
        assert!(
            m.custody
                .calls()
                .contains(&Call::Dh(bundle.init_key.clone())),
            "{}: Welcome not decrypted with the init key in custody",
            m.name
        );
    }
    check(&members, "joins");
    all_send(&mut members);

    // Bob self-updates by commit (a fresh leaf key from the token).
    let out = members[1].group().self_update(NOW).unwrap();
    deliver_commit(&mut members, 1, &out);
    check(&members, "self-update");

    // Carol proposes an Update, Alice commits it.
    let proposal = members[2].group().propose_update().unwrap();
    for r in [0, 1, 3] {
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
    check(&members, "update proposal");
    all_send(&mut members);

    // Alice removes Dave.
    let dave = members[3].group().own_leaf_index();
    let out = members[0].group().remove_members(&[dave], NOW).unwrap();
    deliver_commit(&mut members, 0, &out);
    assert!(members[3].group.is_none());
    check(&members, "remove");

    // Erin joins by external commit.
    let mut erin = member_of_suite(Audit::open(&config, split), "erin", split.suite);
    external_join(&mut members, &mut erin, 1, &gconfig);
    members.push(erin);
    check(&members, "external join");
    all_send(&mut members);

    // The audit over every member's whole history.
    for m in &members {
        let calls = m.custody.calls();
        let generated = m.custody.generated();
        assert!(!generated.is_empty(), "{}: nothing generated", m.name);
        let mut signs = 0;
        let mut dhs = 0;
        for c in &calls {
            match c {
                Call::Import(p) => panic!("{}: import({p}) was called", m.name),
                // The engine signs whole messages (so that a scheme signing
                // the message itself, EdDSA, fits the same call).
                Call::SignPrehash(_) => panic!("{}: the engine called sign_prehash", m.name),
                Call::Sign(k) | Call::Dh(k) | Call::Destroy(k) => {
                    assert!(
                        generated.contains(k),
                        "{}: {c:?} uses a key its custody did not generate",
                        m.name
                    );
                    if matches!(c, Call::Sign(_)) {
                        signs += 1;
                        assert_eq!(k.purpose(), KeyPurpose::Signature);
                    }
                    if matches!(c, Call::Dh(_)) {
                        dhs += 1;
                        assert_eq!(k.purpose(), KeyPurpose::Hpke);
                    }
                }
                Call::Generate(..) | Call::Find(_) => {}
            }
        }
        assert!(signs > 0, "{}: never signed in the token", m.name);
        // The Welcome joiners decrypted their Welcome with the init key in
        // the token (the founder and the external joiner need no HPKE
        // decryption with a leaf or init key in this scenario).
        if ["bob", "carol", "dave"].contains(&m.name.as_str()) {
            assert!(dhs > 0, "{}: never used an HPKE key in the token", m.name);
        }
        // Keys still alive keep their protection to the end.
        let destroyed = m.custody.destroyed();
        for k in generated.iter().filter(|k| !destroyed.contains(k)) {
            assert_protected(&m.custody.inner, split, k, &m.name);
        }
        // The split, over every key: the signature key in the token, the
        // HPKE keys all in the home of the split.
        for k in &generated {
            assert_eq!(
                m.custody.inner.home(k.spec()).unwrap(),
                expected_home(split, k),
                "{}: {k:?}",
                m.name
            );
            assert!(
                k.spec().cipher_suites().contains(&split.suite.0),
                "{}: a key of another suite: {k:?}",
                m.name
            );
        }
        assert!(
            generated
                .iter()
                .any(|k| k.purpose() == KeyPurpose::Signature),
            "{}: no signature key",
            m.name
        );
    }

    // The test's keys leave the token with it (a wrapped HPKE key whose
    // session object is already gone is not found, which is as good).
    for m in &members {
        let destroyed = m.custody.destroyed();
        for k in m
            .custody
            .generated()
            .iter()
            .filter(|k| !destroyed.contains(k))
        {
            match m.custody.inner.destroy(k) {
                Ok(()) | Err(CustodyError::KeyNotFound(_)) => {}
                Err(e) => panic!("{}: destroying a test key: {e}", m.name),
            }
        }
    }
}

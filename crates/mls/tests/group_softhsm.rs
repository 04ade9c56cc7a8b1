//! One full group scenario with every member's private keys in the real
//! SoftHSM token (`HSMLS_PKCS11_CONFIG`, set by `scripts/test.sh`) through
//! [`Pkcs11Custody`]: create, add three members by Welcome, application
//! messages, a self-update by commit, an Update proposal, a remove, and an
//! external join (RFC 9420 §12.4.3.2).
//!
//! Each member has its own custody on the token, wrapped in a recorder that
//! delegates every call and notes the keys generated and destroyed. At the
//! end the test checks that every signature and leaf key in the group's
//! tree was generated in the token (its `KeyRef` is a `pkcs11:` URI of the
//! test token, found again by that URI), that no key was imported, and that
//! the used init keys and the replaced leaf keys were destroyed in the
//! token (RFC 9420 §9.2): neither usable for ECDH nor found by URI.

mod common;

use std::sync::{Arc, Mutex};

use hsmls::wire::LeafIndex;
use hsmls::{
    Client, CommitOptions, Group, GroupConfig, JoinOptions, KeyPackageBundle, KeyPackageConfig,
    ProcessedMessage,
};
use hsmls_custody::pkcs11::{Pkcs11Config, Pkcs11Uri};
use hsmls_custody::{
    Capabilities, CustodyError, KeyAttributes, KeyCustody, KeyPurpose, KeyRef, KeySpec,
    Pkcs11Custody, SharedSecret,
};

use common::{
    Member, NOW, all_send, deliver_commit, external_join, member, pkcs11_config, validator,
};

/// A member's custody on the token: delegates every call to a
/// [`Pkcs11Custody`] and records the keys generated, imported and
/// destroyed through it.
#[derive(Debug)]
struct Recorded {
    inner: Pkcs11Custody,
    generated: Mutex<Vec<KeyRef>>,
    imported: Mutex<usize>,
    destroyed: Mutex<Vec<KeyRef>>,
}

impl Recorded {
    fn open(config: &Pkcs11Config) -> Arc<Self> {
        let inner = Pkcs11Custody::open(config).unwrap_or_else(|e| {
            panic!("cannot open the SoftHSM test token: {e} (run `bash scripts/test.sh`)")
        });
        assert!(
            inner
                .capabilities()
                .supports(KeySpec::ECDSA_SECP256R1_SHA256)
                && inner
                    .capabilities()
                    .supports(KeySpec::DHKEM_P256_HKDF_SHA256),
            "the test token must hold signature and HPKE keys: {}",
            inner.capabilities().summary
        );
        Arc::new(Recorded {
            inner,
            generated: Mutex::new(Vec::new()),
            imported: Mutex::new(0),
            destroyed: Mutex::new(Vec::new()),
        })
    }

    fn generated(&self) -> Vec<KeyRef> {
        self.generated.lock().unwrap().clone()
    }

    fn was_destroyed(&self, key: &KeyRef) -> bool {
        self.destroyed.lock().unwrap().contains(key)
    }
}

impl KeyCustody for Recorded {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }
    fn generate(&self, spec: KeySpec) -> Result<KeyRef, CustodyError> {
        let key = self.inner.generate(spec)?;
        self.generated.lock().unwrap().push(key.clone());
        Ok(key)
    }
    fn import(&self, spec: KeySpec, private_key: &[u8]) -> Result<KeyRef, CustodyError> {
        *self.imported.lock().unwrap() += 1;
        self.inner.import(spec, private_key)
    }
    fn sign_prehash(&self, key: &KeyRef, prehash: &[u8]) -> Result<Vec<u8>, CustodyError> {
        self.inner.sign_prehash(key, prehash)
    }
    fn sign(&self, key: &KeyRef, message: &[u8]) -> Result<Vec<u8>, CustodyError> {
        self.inner.sign(key, message)
    }
    fn dh(&self, key: &KeyRef, peer_public_key: &[u8]) -> Result<SharedSecret, CustodyError> {
        self.inner.dh(key, peer_public_key)
    }
    fn destroy(&self, key: &KeyRef) -> Result<(), CustodyError> {
        self.inner.destroy(key)?;
        self.destroyed.lock().unwrap().push(key.clone());
        Ok(())
    }
    fn find(&self, uri: &str) -> Result<KeyRef, CustodyError> {
        self.inner.find(uri)
    }
    fn key_attributes(&self, key: &KeyRef) -> Result<KeyAttributes, CustodyError> {
        self.inner.key_attributes(key)
    }
}

fn check_agreement(members: &[Member<Recorded>]) {
    let groups: Vec<&Group> = members.iter().filter_map(|m| m.group.as_ref()).collect();
    let first = groups[0];
    let exported = first.export_secret(b"softhsm", b"", 32).unwrap();
    for g in &groups {
        assert_eq!(g.epoch(), first.epoch());
        assert_eq!(g.tree_hash(), first.tree_hash());
        assert_eq!(g.epoch_authenticator(), first.epoch_authenticator());
        assert_eq!(g.group_context(), first.group_context());
        assert_eq!(g.export_secret(b"softhsm", b"", 32).unwrap(), exported);
        assert_eq!(g.members(), first.members());
    }
    assert_eq!(first.members().len(), groups.len());
}

/// The key is gone from the token: no ECDH with it, not found by its URI.
fn assert_destroyed(m: &Member<Recorded>, key: &KeyRef, what: &str) {
    assert!(
        m.custody.was_destroyed(key),
        "{}: {what} not destroyed",
        m.name
    );
    let peer = key.public_key().as_bytes().to_vec();
    let r = m.custody.inner.dh(key, &peer);
    assert!(
        matches!(r, Err(CustodyError::KeyNotFound(_))),
        "{}: {what} still usable in the token: {:?}",
        m.name,
        r.err()
    );
    let r = m.custody.inner.find(key.uri());
    assert!(
        matches!(r, Err(CustodyError::KeyNotFound(_))),
        "{}: {what} still found by its URI: {:?}",
        m.name,
        r.err()
    );
}

/// The key lives in the test token: a `pkcs11:` URI naming the token, and
/// found again by that URI with the same public key.
fn assert_in_token(m: &Member<Recorded>, key: &KeyRef, token: &str) {
    let uri = key.uri();
    assert!(
        uri.starts_with("pkcs11:"),
        "{}: {uri} is not a PKCS#11 URI",
        m.name
    );
    let parsed = Pkcs11Uri::parse(uri).unwrap();
    assert_eq!(
        parsed.token.as_deref(),
        Some(token),
        "{}: {uri} does not name the test token",
        m.name
    );
    assert!(parsed.id.is_some(), "{}: {uri} has no id", m.name);
    let found = m.custody.inner.find(uri).unwrap();
    assert_eq!(found.public_key(), key.public_key());
    assert_eq!(found.purpose(), key.purpose());
}

#[test]
fn full_scenario_with_keys_in_softhsm() {
    let config = pkcs11_config();
    let gconfig = GroupConfig::default();
    let mut members: Vec<Member<Recorded>> = ["alice", "bob", "carol", "dave"]
        .iter()
        .map(|n| member(Recorded::open(&config), n))
        .collect();

    // Alice creates the group and adds Bob, Carol and Dave by Welcome.
    members[0].group = Some(
        Client::new(members[0].signer.clone(), validator())
            .with_group_config(gconfig.clone())
            .create_group(b"softhsm group".to_vec(), Vec::new(), NOW)
            .unwrap(),
    );
    let bundles: Vec<KeyPackageBundle> = members[1..]
        .iter()
        .map(|m| {
            Client::new(m.signer.clone(), validator())
                .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
        })
        .collect::<Result<_, _>>()
        .unwrap();
    let kps: Vec<hsmls::KeyPackage> = bundles.iter().map(|b| b.key_package.clone()).collect();
    let out = members[0].group().add_members(&kps, NOW).unwrap();
    assert_eq!(out.adds.len(), 3);
    members[0].group().merge_pending_commit().unwrap();
    let welcome = out.welcome.clone().expect("a Welcome");
    for (m, bundle) in members[1..].iter_mut().zip(&bundles) {
        m.group = Some(
            Client::new(m.signer.clone(), validator())
                .with_group_config(gconfig.clone())
                .join_from_welcome(bundle, &welcome, JoinOptions::default())
                .unwrap(),
        );
    }
    check_agreement(&members);
    all_send(&mut members);
    // The used init keys are gone from the token (§9.2).
    for (m, bundle) in members[1..].iter().zip(&bundles) {
        assert_destroyed(m, &bundle.init_key, "used init key");
    }

    // Bob self-updates by commit: his KeyPackage leaf key is replaced and
    // destroyed.
    let out = members[1].group().self_update(NOW).unwrap();
    deliver_commit(&mut members, 1, &out);
    check_agreement(&members);
    assert_destroyed(&members[1], &bundles[0].encryption_key, "replaced leaf key");

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
    check_agreement(&members);
    assert_destroyed(&members[2], &bundles[1].encryption_key, "replaced leaf key");
    all_send(&mut members);

    // Alice removes Dave.
    let dave = members[3].group().own_leaf_index();
    let out = members[0].group().remove_members(&[dave], NOW).unwrap();
    assert_eq!(out.removes.len(), 1);
    deliver_commit(&mut members, 0, &out);
    assert!(members[3].group.is_none(), "Dave is out");
    // A removed member keeps no usable leaf key (§9.2).
    assert_destroyed(
        &members[3],
        &bundles[2].encryption_key,
        "leaf key of a removed member",
    );
    check_agreement(&members);

    // Erin joins by an external commit from Bob's GroupInfo.
    let mut erin = member(Recorded::open(&config), "erin");
    external_join(&mut members, &mut erin, 1, &gconfig);
    members.push(erin);
    check_agreement(&members);
    all_send(&mut members);
    // And Erin commits a self-update the others process.
    let out = members[4].group().self_update(NOW).unwrap();
    deliver_commit(&mut members, 4, &out);
    check_agreement(&members);
    all_send(&mut members);

    // Every key of the final tree was generated in the token by its member.
    let tree = members[0].group().members();
    assert_eq!(tree.len(), 4);
    let token = config.token_label.clone();
    for leaf in &tree {
        let m = members
            .iter()
            .find(|m| {
                m.group
                    .as_ref()
                    .is_some_and(|g| g.own_leaf_index() == leaf.index)
            })
            .expect("a member at every leaf");
        let generated = m.custody.generated();
        let sig = generated
            .iter()
            .find(|k| {
                k.purpose() == KeyPurpose::Signature
                    && k.public_key().as_bytes() == leaf.signature_key.as_slice()
            })
            .unwrap_or_else(|| panic!("{}: signature key not generated in custody", m.name));
        assert_in_token(m, sig, &token);
        let enc = generated
            .iter()
            .find(|k| {
                k.purpose() == KeyPurpose::Hpke
                    && k.public_key().as_bytes() == leaf.encryption_key.as_slice()
            })
            .unwrap_or_else(|| panic!("{}: leaf key not generated in custody", m.name));
        assert_in_token(m, enc, &token);
        assert!(
            !m.custody.was_destroyed(enc),
            "{}: live leaf key destroyed",
            m.name
        );
        assert_eq!(
            *m.custody.imported.lock().unwrap(),
            0,
            "{}: a key was imported instead of generated in the token",
            m.name
        );
    }
    // The founder's first leaf key was replaced by Alice's commit path and
    // destroyed; so were all keys a member generated and no longer uses.
    for m in &members {
        let Some(g) = &m.group else { continue };
        let live = g
            .member(LeafIndex(g.own_leaf_index().0))
            .expect("own leaf")
            .encryption_key;
        for k in m.custody.generated() {
            if k.purpose() == KeyPurpose::Hpke && k.public_key().as_bytes() != live.as_slice() {
                assert_destroyed(m, &k, "an unused HPKE key");
            }
        }
    }

    // Clean up the token: signature keys are token objects.
    for m in &members {
        m.custody.destroy(&m.signer.signature_key).unwrap();
        assert!(matches!(
            m.custody.inner.find(m.signer.signature_key.uri()),
            Err(CustodyError::KeyNotFound(_))
        ));
    }
}

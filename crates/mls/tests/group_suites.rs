//! The engine on every implemented cipher suite (RFC 9420 §17.1: 0x0001,
//! 0x0002, 0x0003, 0x0005, 0x0007), keys in SoftwareCustody: a KeyPackage,
//! a Welcome, a 3-member group with an update, application messages, a
//! remove, an external join, and a save/load of every member. After every
//! commit all members agree on epoch, tree hash, epoch authenticator and an
//! exported secret of the suite's hash length.

use std::sync::Arc;

use hsmls::wire::{CipherSuite as WireSuite, Credential};
use hsmls::{
    BasicCredentialValidator, Client, CommitOutput, CredentialValidator, Group, GroupConfig,
    GroupError, JoinOptions, KeyPackageBundle, KeyPackageConfig, KeyPackageError, ProcessedMessage,
    Signer,
};
use hsmls_crypto::{CipherSuite, CryptoError};
use hsmls_custody::{KeyCustody, KeySpec, SignatureScheme, SoftwareCustody};

const NOW: u64 = 1_750_000_000;

fn validator() -> Arc<dyn CredentialValidator> {
    Arc::new(BasicCredentialValidator::default())
}

struct Member {
    name: String,
    custody: Arc<SoftwareCustody>,
    client: Client,
    group: Option<Group>,
}

impl Member {
    fn new(suite: CipherSuite, name: &str) -> Self {
        let custody = Arc::new(SoftwareCustody::new());
        let scheme = suite.provider().unwrap().signature_scheme();
        let signer = Signer::generate_for(
            custody.clone() as Arc<dyn KeyCustody>,
            Credential::Basic(name.as_bytes().to_vec()),
            scheme,
        )
        .unwrap();
        let mut config = GroupConfig::default();
        config.cipher_suite = WireSuite(suite.0);
        Member {
            name: name.to_owned(),
            custody,
            client: Client::new(signer, validator()).with_group_config(config),
            group: None,
        }
    }

    fn g(&mut self) -> &mut Group {
        self.group.as_mut().unwrap()
    }

    fn key_package(&self, suite: CipherSuite) -> KeyPackageBundle {
        let mut config = KeyPackageConfig::new(NOW - 10, 3600);
        config.cipher_suite = WireSuite(suite.0);
        self.client.generate_key_package(&config).unwrap()
    }

    /// Saves the group, drops it and loads it back from the sealed state.
    fn restart(&mut self) {
        let saved = self
            .group
            .as_ref()
            .unwrap()
            .save(self.custody.state_sealer())
            .unwrap();
        self.group = None;
        self.group = Some(
            self.client
                .load_saved_group(self.custody.state_sealer(), &saved)
                .unwrap(),
        );
    }
}

/// Every member but `committer` processes and merges `out`; the committer
/// merges its pending commit.
fn deliver(members: &mut [Member], committer: usize, out: &CommitOutput) {
    for (i, m) in members.iter_mut().enumerate() {
        if i == committer || m.group.is_none() {
            continue;
        }
        let name = m.name.clone();
        let g = m.g();
        let staged = match g.process_incoming(&out.commit, NOW) {
            Ok(ProcessedMessage::StagedCommit(s)) => s,
            other => panic!("{name}: expected a staged commit, got {other:?}"),
        };
        let removed = staged.self_removed;
        g.merge_staged_commit(staged).unwrap();
        if removed {
            m.group = None;
        }
    }
    members[committer].g().merge_pending_commit().unwrap();
}

/// All members in the group agree on the epoch's values.
fn assert_agree(members: &mut [Member], hash_len: usize) {
    let mut seen = None;
    for m in members.iter_mut().filter(|m| m.group.is_some()) {
        let g = m.g();
        let exported = g.export_secret(b"suites", b"", hash_len).unwrap();
        let values = (
            g.epoch(),
            g.tree_hash().to_vec(),
            g.epoch_authenticator().to_vec(),
            exported.as_bytes().to_vec(),
        );
        assert_eq!(values.1.len(), hash_len, "tree hash is Nh bytes");
        assert_eq!(values.2.len(), hash_len, "epoch authenticator is Nh bytes");
        match &seen {
            None => seen = Some(values),
            Some(first) => assert_eq!(first, &values, "{} disagrees", m.name),
        }
    }
}

/// Every member in the group sends; every other member reads it.
fn all_send(members: &mut [Member]) {
    for s in 0..members.len() {
        if members[s].group.is_none() {
            continue;
        }
        let text = format!("hello from {}", members[s].name).into_bytes();
        let from = members[s].g().own_leaf_index();
        let msg = members[s].g().encrypt_application(&text).unwrap();
        for (r, m) in members.iter_mut().enumerate() {
            if r == s || m.group.is_none() {
                continue;
            }
            match m.g().process_incoming(&msg, NOW).unwrap() {
                ProcessedMessage::ApplicationMessage { sender, data, .. } => {
                    assert_eq!((sender, &data), (from, &text));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

fn lifecycle(suite: CipherSuite) {
    let cs = suite.provider().unwrap();
    let nh = cs.hash_len();
    let mut m = vec![
        Member::new(suite, "alice"),
        Member::new(suite, "bob"),
        Member::new(suite, "carol"),
    ];
    m[0].group = Some(
        m[0].client
            .create_group(hsmls::random_group_id(), Vec::new(), NOW)
            .unwrap(),
    );

    // Bob and Carol join by one Welcome.
    let bundles = [m[1].key_package(suite), m[2].key_package(suite)];
    for b in &bundles {
        assert_eq!(
            b.init_key.public_key().as_bytes().len(),
            cs.kem().n_pk(),
            "{suite}: the init key is the KEM's Npk bytes"
        );
    }
    let kps: Vec<_> = bundles.iter().map(|b| b.key_package.clone()).collect();
    let out = m[0].g().add_members(&kps, NOW).unwrap();
    m[0].g().merge_pending_commit().unwrap();
    let welcome = out.welcome.clone().expect("a Welcome");
    for (i, b) in bundles.iter().enumerate() {
        let g = m[i + 1]
            .client
            .join_from_welcome(b, &welcome, JoinOptions::default())
            .unwrap();
        m[i + 1].group = Some(g);
    }
    assert_agree(&mut m, nh);
    all_send(&mut m);

    // Bob updates his path.
    let out = m[1].g().self_update(NOW).unwrap();
    deliver(&mut m, 1, &out);
    assert_agree(&mut m, nh);
    all_send(&mut m);

    // Everyone saves and loads.
    for member in &mut m {
        member.restart();
    }
    assert_agree(&mut m, nh);
    all_send(&mut m);

    // Carol removes Bob.
    let bob = m[1].g().own_leaf_index();
    let out = m[2].g().remove_members(&[bob], NOW).unwrap();
    deliver(&mut m, 2, &out);
    assert!(m[1].group.is_none(), "{suite}: Bob was removed");
    assert_agree(&mut m, nh);
    all_send(&mut m);

    // Dave joins by an external commit.
    let mut dave = Member::new(suite, "dave");
    let group_info = m[0].g().group_info().unwrap();
    let (g, commit) = dave
        .client
        .join_by_external_commit(&group_info, JoinOptions::default())
        .unwrap();
    dave.group = Some(g);
    for member in m.iter_mut().filter(|x| x.group.is_some()) {
        let ProcessedMessage::StagedCommit(staged) =
            member.g().process_incoming(&commit, NOW).unwrap()
        else {
            panic!("expected the external commit");
        };
        member.g().merge_staged_commit(staged).unwrap();
    }
    m.push(dave);
    assert_agree(&mut m, nh);
    all_send(&mut m);
    assert_eq!(m[0].g().members().len(), 3);
}

#[test]
fn suite_0x0001_x25519_aes128gcm_ed25519() {
    lifecycle(CipherSuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519);
}

#[test]
fn suite_0x0002_p256_aes128gcm() {
    lifecycle(CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256);
}

#[test]
fn suite_0x0003_x25519_chacha20poly1305_ed25519() {
    lifecycle(CipherSuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_ED25519);
}

#[test]
fn suite_0x0005_p521_aes256gcm_sha512() {
    lifecycle(CipherSuite::MLS_256_DHKEMP521_AES256GCM_SHA512_P521);
}

#[test]
fn suite_0x0007_p384_aes256gcm_sha384() {
    lifecycle(CipherSuite::MLS_256_DHKEMP384_AES256GCM_SHA384_P384);
}

/// A member whose signature key is of another suite's scheme cannot make a
/// KeyPackage for this suite (RFC 9420 §5.1.2: the suite fixes the scheme).
#[test]
fn a_signature_key_of_another_scheme_is_refused() {
    let p256_member = Member::new(CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256, "eve");
    let mut config = KeyPackageConfig::new(NOW - 10, 3600);
    config.cipher_suite = WireSuite(0x0001);
    let r = p256_member.client.generate_key_package(&config);
    assert!(
        matches!(
            &r,
            Err(KeyPackageError::Crypto(CryptoError::WrongKeySpec {
                expected: KeySpec::ED25519,
                actual: KeySpec::ECDSA_SECP256R1_SHA256,
            }))
        ),
        "{:?}",
        r.err()
    );
}

/// A Welcome is joined in the suite of the KeyPackage it is addressed to,
/// whatever suite the joiner's client is configured with for the groups it
/// creates (the default, 0x0002, here); a Welcome of another suite than the
/// KeyPackage's is refused.
#[test]
fn a_welcome_is_joined_in_the_suite_of_its_key_package() {
    let suite = CipherSuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519;
    let mut alice = Member::new(suite, "alice");
    alice.group = Some(
        alice
            .client
            .create_group(hsmls::random_group_id(), Vec::new(), NOW)
            .unwrap(),
    );
    let custody = Arc::new(SoftwareCustody::new());
    let signer = Signer::generate_for(
        custody as Arc<dyn KeyCustody>,
        Credential::Basic(b"bob".to_vec()),
        SignatureScheme::Ed25519,
    )
    .unwrap();
    let bob = Client::new(signer, validator());
    assert_eq!(
        bob.group_config().cipher_suite,
        WireSuite(0x0002),
        "the default configuration"
    );
    let mut config = KeyPackageConfig::new(NOW - 10, 3600);
    config.cipher_suite = WireSuite(suite.0);
    let bundle = bob.generate_key_package(&config).unwrap();
    let out = alice
        .g()
        .add_members(std::slice::from_ref(&bundle.key_package), NOW)
        .unwrap();
    alice.g().merge_pending_commit().unwrap();
    let welcome = out.welcome.unwrap();
    let g = bob
        .join_from_welcome(&bundle, &welcome, JoinOptions::default())
        .unwrap();
    assert_eq!(g.config().cipher_suite, WireSuite(suite.0));
    assert_eq!(g.epoch_authenticator(), alice.g().epoch_authenticator());

    // A Welcome of suite 0x0001 for a 0x0002 KeyPackage is refused.
    let p256 = Member::new(
        CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
        "carol",
    );
    let other = p256.key_package(CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256);
    let r = p256
        .client
        .join_from_welcome(&other, &welcome, JoinOptions::default());
    assert!(
        matches!(r, Err(GroupError::UnsupportedCipherSuite(0x0001))),
        "{:?}",
        r.err()
    );
}

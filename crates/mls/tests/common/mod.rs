//! Shared by the SoftHSM group scenarios (`custody_audit.rs`,
//! `group_softhsm.rs`): the test token's configuration, a member whose keys
//! live in a (wrapped) custody on the token, and commit and message delivery
//! between the members.

use std::sync::Arc;

use hsmls::wire::Credential;
use hsmls::{
    BasicCredentialValidator, Client, CommitOutput, CredentialValidator, Group, GroupConfig,
    JoinOptions, ProcessedMessage, Signer,
};
use hsmls_crypto::CipherSuite;
use hsmls_custody::KeyCustody;
use hsmls_custody::pkcs11::{CONFIG_ENV, Pkcs11Config};

pub const NOW: u64 = 1_750_000_000;

/// The SoftHSM test token's configuration. Fails (never skips) when the
/// environment does not name one.
pub fn pkcs11_config() -> Pkcs11Config {
    if std::env::var_os(CONFIG_ENV).is_none() {
        panic!(
            "{CONFIG_ENV} is not set: this test needs the SoftHSM test token. \
             Run `bash scripts/test.sh` (it runs scripts/setup-hsm.sh and exports \
             SOFTHSM2_CONF and {CONFIG_ENV})."
        );
    }
    Pkcs11Config::from_env().unwrap_or_else(|e| panic!("bad {CONFIG_ENV}: {e}"))
}

/// A member: its group (once joined) and its custody `C`.
pub struct Member<C> {
    pub name: String,
    pub custody: Arc<C>,
    pub signer: Signer,
    pub group: Option<Group>,
}

pub fn validator() -> Arc<dyn CredentialValidator> {
    Arc::new(BasicCredentialValidator::default())
}

/// A member named `name` with a signature key of suite 0x0002 generated
/// in `custody`.
#[allow(dead_code)] // custody_audit.rs names the suite (member_of_suite)
pub fn member<C: KeyCustody + 'static>(custody: Arc<C>, name: &str) -> Member<C> {
    member_of_suite(
        custody,
        name,
        CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
    )
}

/// A member named `name` with a signature key of `suite`'s scheme
/// generated in `custody`.
pub fn member_of_suite<C: KeyCustody + 'static>(
    custody: Arc<C>,
    name: &str,
    suite: CipherSuite,
) -> Member<C> {
    let scheme = suite
        .provider()
        .expect("an implemented suite")
        .signature_scheme();
    let signer = Signer::generate_for(
        custody.clone() as Arc<dyn KeyCustody>,
        Credential::Basic(name.as_bytes().to_vec()),
        scheme,
    )
    .unwrap_or_else(|e| panic!("signature key for {name} in the token: {e}"));
    Member {
        name: name.to_owned(),
        custody,
        signer,
        group: None,
    }
}

impl<C> Member<C> {
    pub fn group(&mut self) -> &mut Group {
        self.group.as_mut().expect("member of the group")
    }
}

/// Delivers a commit of `committer` to every other member in the group,
/// which merge it; the committer merges its pending commit.
pub fn deliver_commit<C>(members: &mut [Member<C>], committer: usize, out: &CommitOutput) {
    for (i, m) in members.iter_mut().enumerate() {
        if i == committer || m.group.is_none() {
            continue;
        }
        let g = m.group();
        let staged = match g.process_incoming(&out.commit, NOW) {
            Ok(ProcessedMessage::StagedCommit(s)) => s,
            other => panic!("{}: expected a staged commit, got {other:?}", m.name),
        };
        let removed = staged.self_removed;
        g.merge_staged_commit(staged).unwrap();
        if removed {
            assert!(!g.is_active());
            m.group = None;
        }
    }
    members[committer].group().merge_pending_commit().unwrap();
}

/// Every member in the group sends a message; every other member reads it.
pub fn all_send<C>(members: &mut [Member<C>]) {
    for s in 0..members.len() {
        if members[s].group.is_none() {
            continue;
        }
        let text = format!("hello from {}", members[s].name).into_bytes();
        let from = members[s].group().own_leaf_index();
        let msg = members[s].group().encrypt_application(&text).unwrap();
        for (r, m) in members.iter_mut().enumerate() {
            if r == s || m.group.is_none() {
                continue;
            }
            match m.group().process_incoming(&msg, NOW).unwrap() {
                ProcessedMessage::ApplicationMessage { sender, data, .. } => {
                    assert_eq!(sender, from);
                    assert_eq!(data, text);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

/// `joiner` joins by an external commit (RFC 9420 §12.4.3.2) from the
/// GroupInfo of `members[from]`; every member in the group merges it.
pub fn external_join<C>(
    members: &mut [Member<C>],
    joiner: &mut Member<C>,
    from: usize,
    gconfig: &GroupConfig,
) {
    let group_info = members[from].group().group_info().unwrap();
    let (g, commit) = Client::new(joiner.signer.clone(), validator())
        .with_group_config(gconfig.clone())
        .join_by_external_commit(&group_info, JoinOptions::default())
        .unwrap();
    joiner.group = Some(g);
    for m in members.iter_mut().filter(|m| m.group.is_some()) {
        let g = m.group();
        let ProcessedMessage::StagedCommit(staged) = g.process_incoming(&commit, NOW).unwrap()
        else {
            panic!("expected the external commit");
        };
        assert_eq!(staged.sender, hsmls::wire::Sender::NewMemberCommit);
        g.merge_staged_commit(staged).unwrap();
    }
}

/// The environment variable naming the split configuration of
/// `scripts/setup-tpm.sh`: signature keys in the TPM 2.0 test token (swtpm
/// through tpm2-pkcs11), HPKE keys and the state-sealing key in the SoftHSM
/// test token.
#[allow(dead_code)] // used by group_tpm.rs only
pub const SPLIT_CONFIG_ENV: &str = "HSMLS_TPM_SPLIT_PKCS11_CONFIG";

/// The split configuration. Fails (never skips) when the TPM was not
/// started.
#[allow(dead_code)] // used by group_tpm.rs only
pub fn split_config() -> Pkcs11Config {
    let path = std::env::var_os(SPLIT_CONFIG_ENV).unwrap_or_else(|| {
        panic!(
            "{SPLIT_CONFIG_ENV} is not set: this test needs the TPM 2.0 test token. \
             Run `bash scripts/test.sh` (it runs scripts/setup-tpm.sh)."
        )
    });
    Pkcs11Config::from_file(std::path::Path::new(&path))
        .unwrap_or_else(|e| panic!("bad {SPLIT_CONFIG_ENV}: {e}"))
}

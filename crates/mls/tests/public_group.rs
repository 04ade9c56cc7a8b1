//! `PublicGroup`, the observer of a group's public state: it agrees with
//! the members on the epoch, tree hash and GroupContext after every kind
//! of commit (adds, by-reference proposals, updates, removes, an external
//! join, a GroupContextExtensions change), survives a round trip through
//! its bytes, and refuses forged or invalid handshakes — validly signed
//! ones included — with the exact rule and an unchanged state.

#[allow(dead_code)]
mod common;

use std::sync::Arc;

use common::{NOW, deliver_commit, member, validator};
use hsmls::internal::codec::{
    Decode, Encode, FramedContentBody, HpkePublicKey, Mac, MlsMessage, MlsMessageBody, Proposal,
    ProposalOrRef, PublicMessage, Remove, Sender, WireFormat,
};
use hsmls::internal::message_protection::{ProtectionError, sign_content};
use hsmls::internal::tree::TreeError;
use hsmls::{
    Client, CommitOptions, GroupConfig, GroupError, HandshakeFraming, JoinOptions, KeyPackage,
    KeyPackageBundle, KeyPackageConfig, MessageRule, ObservedMessage, ProcessedMessage,
    ProposalRule, PublicGroup, WelcomeRule,
};
use hsmls_custody::{KeyCustody, SoftwareCustody};

type M = common::Member<SoftwareCustody>;

fn config() -> GroupConfig {
    let mut c = GroupConfig::default();
    c.handshake_framing = HandshakeFraming::Public;
    c
}

/// `m` as a client with PublicMessage handshakes.
fn client(m: &M) -> Client {
    Client::new(m.signer.clone(), validator()).with_group_config(config())
}

fn soft(name: &str) -> M {
    member(Arc::new(SoftwareCustody::new()), name)
}

/// A KeyPackage bundle of `m`, and its KeyPackage as another member
/// validates it.
fn kp(m: &M) -> (KeyPackageBundle, KeyPackage) {
    let c = client(m);
    let b = c
        .generate_key_package(&KeyPackageConfig::new(NOW - 10, 86_400))
        .unwrap();
    let kp = c.validate_key_package(&b.to_bytes().unwrap(), NOW).unwrap();
    (b, kp)
}

/// The observer and every member agree.
fn agree(obs: &PublicGroup, members: &mut [M]) {
    for m in members.iter_mut().filter(|m| m.group.is_some()) {
        let name = m.name.clone();
        let g = m.group();
        assert_eq!(obs.epoch(), g.epoch(), "{} epoch", name);
        assert_eq!(obs.tree_hash(), g.tree_hash(), "{} tree hash", name);
        assert_eq!(obs.group_context(), g.group_context(), "{} context", name);
        assert_eq!(obs.members(), g.members(), "{} members", name);
    }
}

/// A group of alice, bob and carol with an observer started from alice's
/// GroupInfo at epoch 0 that followed the commit adding bob and carol.
fn setup() -> (Vec<M>, PublicGroup) {
    let mut ms = vec![soft("alice"), soft("bob"), soft("carol")];
    ms[0].group = Some(
        client(&ms[0])
            .create_group(b"g".to_vec(), vec![], NOW)
            .unwrap(),
    );
    let mut obs =
        PublicGroup::from_group_info(&ms[0].group().group_info().unwrap(), None, validator())
            .unwrap();
    agree(&obs, &mut ms[..1]);
    let (bb, kb) = kp(&ms[1]);
    let (bc, kc) = kp(&ms[2]);
    let out = ms[0].group().add_members(&[kb, kc], NOW).unwrap();
    match obs.process(&out.commit, NOW).unwrap() {
        ObservedMessage::Commit(c) => {
            assert_eq!(c.added.len(), 2);
            assert_eq!(
                c.added[0].key_package_ref.as_ref(),
                Some(bb.key_package.reference())
            );
            assert_eq!(c.epoch, 1);
        }
        other => panic!("{other:?}"),
    }
    ms[0].group().merge_pending_commit().unwrap();
    let w = out.welcome.unwrap();
    for (i, b) in [(1, bb), (2, bc)] {
        ms[i].group = Some(
            client(&ms[i])
                .join_from_welcome(&b, &w, JoinOptions::default())
                .unwrap(),
        );
    }
    agree(&obs, &mut ms);
    (ms, obs)
}

#[test]
fn follows_every_kind_of_commit() {
    let (mut ms, mut obs) = setup();
    // Self-updates by each member.
    for i in 0..3 {
        let out = ms[i].group().self_update(NOW).unwrap();
        assert!(matches!(
            obs.process(&out.commit, NOW).unwrap(),
            ObservedMessage::Commit(_)
        ));
        deliver_commit(&mut ms, i, &out);
        agree(&obs, &mut ms);
    }
    // Proposals by reference: bob proposes an update, carol proposes to
    // remove nobody but adds dave by proposal; alice commits them.
    let dave = soft("dave");
    let (_bd, kd) = kp(&dave);
    let upd = ms[1].group().propose_update().unwrap();
    let add = ms[2].group().propose_add(&kd, NOW).unwrap();
    for p in [&upd, &add] {
        match obs.process(&p.message, NOW).unwrap() {
            ObservedMessage::Proposal { reference, .. } => assert_eq!(reference, p.reference),
            other => panic!("{other:?}"),
        }
        for m in ms.iter_mut() {
            let _ = m.group().process_incoming(&p.message, NOW).unwrap();
        }
    }
    assert_eq!(obs.pending_proposals().len(), 2);
    let out = ms[0].group().commit(CommitOptions::new(), NOW).unwrap();
    let ObservedMessage::Commit(c) = obs.process(&out.commit, NOW).unwrap() else {
        panic!()
    };
    assert_eq!(c.added.len(), 1);
    assert!(obs.pending_proposals().is_empty());
    deliver_commit(&mut ms, 0, &out);
    agree(&obs, &mut ms);
    // A removal.
    let carol_leaf = ms[2].group().own_leaf_index();
    let out = ms[1].group().remove_members(&[carol_leaf], NOW).unwrap();
    let ObservedMessage::Commit(c) = obs.process(&out.commit, NOW).unwrap() else {
        panic!()
    };
    assert_eq!(c.removed.len(), 1);
    assert_eq!(c.removed[0].index, carol_leaf);
    deliver_commit(&mut ms, 1, &out);
    agree(&obs, &mut ms[..2]);
    // An external join from the observer's own GroupInfo? The observer
    // has no external_pub secret; the joiner uses a member's GroupInfo,
    // checked by the observer against its state first.
    let gi = ms[0].group().group_info().unwrap();
    obs.check_group_info(&gi).unwrap();
    let mut erin = soft("erin");
    let (g, commit) = client(&erin)
        .join_by_external_commit(&gi, JoinOptions::default())
        .unwrap();
    erin.group = Some(g);
    let ObservedMessage::Commit(c) = obs.process(&commit, NOW).unwrap() else {
        panic!()
    };
    assert!(c.external);
    assert_eq!(c.sender, Sender::NewMemberCommit);
    assert_eq!(c.added[0].key_package_ref, None);
    for m in ms[..2].iter_mut() {
        let ProcessedMessage::StagedCommit(s) = m.group().process_incoming(&commit, NOW).unwrap()
        else {
            panic!()
        };
        m.group().merge_staged_commit(s).unwrap();
    }
    ms.truncate(2);
    ms.push(erin);
    agree(&obs, &mut ms);
    // The state survives its bytes.
    let bytes = obs.to_bytes().unwrap();
    let back = PublicGroup::from_bytes(&bytes, validator()).unwrap();
    assert_eq!(back.to_bytes().unwrap(), bytes);
    assert_eq!(back.group_context(), obs.group_context());
    // And goes on from them.
    let mut back = back;
    let out = ms[2].group().self_update(NOW).unwrap();
    back.process(&out.commit, NOW).unwrap();
    deliver_commit(&mut ms, 2, &out);
    agree(&back, &mut ms);
}

/// The commit of `out`, decoded.
fn public(bytes: &[u8]) -> PublicMessage {
    match MlsMessage::decode(bytes).unwrap().body {
        MlsMessageBody::PublicMessage(m) => m,
        _ => panic!("not a PublicMessage"),
    }
}

/// Re-signs `m`'s content (after `edit`) with `signer`'s key, as a
/// malicious member holding its own key can.
fn resign(
    m: &M,
    mut msg: PublicMessage,
    edit: impl FnOnce(&mut FramedContentBody),
    ctx: &hsmls::wire::GroupContext,
) -> Vec<u8> {
    edit(&mut msg.content.body);
    let cs = hsmls_crypto::CipherSuite(0x0002).provider().unwrap();
    let mut signed = sign_content(
        cs,
        m.signer.custody.as_ref(),
        &m.signer.signature_key,
        WireFormat::PUBLIC_MESSAGE,
        msg.content,
        Some(ctx),
    )
    .unwrap();
    signed.auth.confirmation_tag = msg.auth.confirmation_tag;
    MlsMessage {
        body: MlsMessageBody::PublicMessage(PublicMessage {
            content: signed.content,
            auth: signed.auth,
            membership_tag: msg.membership_tag,
        }),
    }
    .encode()
    .unwrap()
}

#[test]
fn refuses_forged_commits_and_changes_nothing() {
    let (mut ms, mut obs) = setup();
    let before = obs.to_bytes().unwrap();
    let ctx = ms[0].group().group_context().clone();
    let out = ms[1].group().self_update(NOW).unwrap();
    let msg = public(&out.commit);

    let check = |obs: &mut PublicGroup, bytes: &[u8], want: &dyn Fn(&GroupError) -> bool| {
        let e = obs.process(bytes, NOW).unwrap_err();
        assert!(want(&e), "unexpected {e:?}");
        assert_eq!(
            obs.to_bytes().unwrap(),
            before,
            "state changed by a refused message"
        );
    };

    // A flipped signature byte.
    let mut bad = msg.clone();
    *bad.auth.signature.last_mut().unwrap() ^= 1;
    let bytes = MlsMessage {
        body: MlsMessageBody::PublicMessage(bad),
    }
    .encode()
    .unwrap();
    check(&mut obs, &bytes, &|e| {
        matches!(
            e,
            GroupError::Protection(ProtectionError::InvalidSignature(_))
        )
    });

    // Signed by bob's key, but claiming to be carol.
    let mut as_carol = msg.clone();
    as_carol.content.sender = Sender::Member(ms[2].group().own_leaf_index());
    let bytes = MlsMessage {
        body: MlsMessageBody::PublicMessage(as_carol),
    }
    .encode()
    .unwrap();
    check(&mut obs, &bytes, &|e| {
        matches!(
            e,
            GroupError::Protection(ProtectionError::InvalidSignature(_))
        )
    });

    // Validly signed by bob, but removing bob himself.
    let bob_leaf = ms[1].group().own_leaf_index();
    let bytes = resign(
        &ms[1],
        msg.clone(),
        |b| {
            if let FramedContentBody::Commit(c) = b {
                c.proposals
                    .push(ProposalOrRef::Proposal(Proposal::Remove(Remove {
                        removed: bob_leaf,
                    })));
            }
        },
        &ctx,
    );
    check(&mut obs, &bytes, &|e| {
        matches!(
            e,
            GroupError::InvalidProposal(ProposalRule::RemovesCommitter)
        )
    });

    // Validly signed, an UpdatePath key changed: the parent hash breaks.
    let other_key = SoftwareCustody::new()
        .generate(hsmls_custody::KeySpec::Kem(
            hsmls_custody::KemAlgorithm::DhKemP256HkdfSha256,
        ))
        .unwrap();
    let bytes = resign(
        &ms[1],
        msg.clone(),
        |b| {
            if let FramedContentBody::Commit(c) = b {
                let path = c.path.as_mut().unwrap();
                path.nodes[0].encryption_key =
                    HpkePublicKey(other_key.public_key().as_bytes().to_vec());
            }
        },
        &ctx,
    );
    check(&mut obs, &bytes, &|e| {
        matches!(e, GroupError::Tree(TreeError::UpdatePathParentHashMismatch))
    });

    // Content changed after signing.
    let mut edited = msg.clone();
    edited.content.authenticated_data = b"edited".to_vec();
    let bytes = MlsMessage {
        body: MlsMessageBody::PublicMessage(edited),
    }
    .encode()
    .unwrap();
    check(&mut obs, &bytes, &|e| {
        matches!(
            e,
            GroupError::Protection(ProtectionError::InvalidSignature(_))
        )
    });

    // Another epoch, another group.
    let mut stale = msg.clone();
    stale.content.epoch = 0;
    let bytes = MlsMessage {
        body: MlsMessageBody::PublicMessage(stale),
    }
    .encode()
    .unwrap();
    check(&mut obs, &bytes, &|e| {
        matches!(
            e,
            GroupError::WrongEpoch {
                message: 0,
                current: 1
            }
        )
    });
    let mut foreign = msg.clone();
    foreign.content.group_id = b"other".to_vec();
    let bytes = MlsMessage {
        body: MlsMessageBody::PublicMessage(foreign),
    }
    .encode()
    .unwrap();
    check(&mut obs, &bytes, &|e| matches!(e, GroupError::WrongGroupId));

    // A PrivateMessage cannot be observed.
    let app = ms[0].group().encrypt_application(b"secret").unwrap();
    check(&mut obs, &app, &|e| {
        matches!(
            e,
            GroupError::UnexpectedMessage(MessageRule::NotPublicMessage)
        )
    });

    // The genuine commit is still accepted, and the members agree.
    obs.process(&out.commit, NOW).unwrap();
    deliver_commit(&mut ms, 1, &out);
    agree(&obs, &mut ms);

    // A membership tag of any value passes the observer (it cannot check
    // it) — the members refuse it: the limit the documentation names.
    let out = ms[0].group().self_update(NOW).unwrap();
    let mut m = public(&out.commit);
    m.membership_tag = Some(Mac(vec![0; 32]));
    let bytes = MlsMessage {
        body: MlsMessageBody::PublicMessage(m),
    }
    .encode()
    .unwrap();
    let mut probe = obs.clone();
    assert!(matches!(
        probe.process(&bytes, NOW).unwrap(),
        ObservedMessage::Commit(_)
    ));
    let e = ms[1].group().process_incoming(&bytes, NOW).unwrap_err();
    assert!(
        matches!(
            e,
            GroupError::Protection(ProtectionError::InvalidMembershipTag)
        ),
        "{e:?}"
    );
}

#[test]
fn group_info_checks_and_bad_bytes() {
    let (mut ms, obs) = setup();
    let gi = ms[1].group().group_info().unwrap();
    obs.check_group_info(&gi).unwrap();
    // A GroupInfo of the next epoch does not match.
    let out = ms[0].group().self_update(NOW).unwrap();
    deliver_commit(&mut ms, 0, &out);
    let next = ms[0].group().group_info().unwrap();
    assert!(matches!(
        obs.check_group_info(&next),
        Err(GroupError::InvalidWelcome(WelcomeRule::GroupInfoMismatch))
    ));
    // Starting from a GroupInfo whose signature was altered.
    let mut gi_msg = MlsMessage::decode(&gi).unwrap();
    if let MlsMessageBody::GroupInfo(g) = &mut gi_msg.body {
        *g.signature.last_mut().unwrap() ^= 1;
    }
    let bad = gi_msg.encode().unwrap();
    assert!(matches!(
        PublicGroup::from_group_info(&bad, None, validator()),
        Err(GroupError::InvalidGroupInfoSignature)
    ));
    // Stored bytes, truncated or altered.
    let bytes = obs.to_bytes().unwrap();
    for cut in [0, 3, 10, bytes.len() - 1] {
        assert!(matches!(
            PublicGroup::from_bytes(&bytes[..cut], validator()),
            Err(GroupError::Malformed(_))
        ));
    }
    let mut altered = bytes.clone();
    let i = altered.len() / 2;
    altered[i] ^= 0x40;
    assert!(PublicGroup::from_bytes(&altered, validator()).is_err());
}

/// Basic credentials minus the identities revoked so far.
#[derive(Debug, Default)]
struct RevocableValidator {
    revoked: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl hsmls::CredentialValidator for RevocableValidator {
    fn validate(
        &self,
        credential: &hsmls::Credential,
        key: &hsmls::SignaturePublicKey,
    ) -> Result<(), hsmls::CredentialError> {
        hsmls::BasicCredentialValidator::default().validate(credential, key)?;
        match credential {
            hsmls::Credential::Basic(id) if self.revoked.lock().unwrap().contains(id) => {
                Err(hsmls::CredentialError::Rejected(
                    hsmls::ValidatorError::new(std::io::Error::other("revoked")),
                ))
            }
            _ => Ok(()),
        }
    }
}

#[test]
fn a_revoked_senders_proposals_and_pathless_commits_are_refused_as_members_refuse_them() {
    let (mut ms, obs) = setup();
    // The observer restarts from its bytes with a validator that learns
    // of a revocation, as a DS's validator does from the AS's CRL.
    let v = Arc::new(RevocableValidator::default());
    let mut obs = PublicGroup::from_bytes(&obs.to_bytes().unwrap(), v.clone()).unwrap();
    v.revoked.lock().unwrap().push(b"carol".to_vec());
    let carol = ms[2].group().own_leaf_index();
    let before = obs.to_bytes().unwrap();
    // Carol's path-less commit (one that only adds: a removal needs a
    // path): SenderCredential.
    let (_bd, kd) = kp(&soft("dave"));
    let mut opts = CommitOptions::new();
    opts.force_path = false;
    opts.add_key_packages = vec![kd];
    let out = ms[2].group().commit(opts, NOW).unwrap();
    ms[2].group().discard_pending_commit().unwrap();
    let e = obs.process(&out.commit, NOW).unwrap_err();
    assert!(
        matches!(e, GroupError::SenderCredential { sender, .. } if sender == carol),
        "{e:?}"
    );
    // Her commit with a path brings her (revoked) credential again:
    // refused on the path's leaf.
    let out = ms[2].group().self_update(NOW).unwrap();
    ms[2].group().discard_pending_commit().unwrap();
    let e = obs.process(&out.commit, NOW).unwrap_err();
    assert!(matches!(e, GroupError::Credential(_)), "{e:?}");
    // Her proposal (last: her own commits would include it).
    let bob = ms[1].group().own_leaf_index();
    let p = ms[2].group().propose_remove(bob).unwrap();
    let e = obs.process(&p.message, NOW).unwrap_err();
    assert!(
        matches!(e, GroupError::SenderCredential { sender, .. } if sender == carol),
        "{e:?}"
    );
    assert_eq!(obs.to_bytes().unwrap(), before);
    // Alice removes her: accepted (the removed member's credential is not
    // judged), and the members agree.
    let out = ms[0].group().remove_members(&[carol], NOW).unwrap();
    let ObservedMessage::Commit(c) = obs.process(&out.commit, NOW).unwrap() else {
        panic!()
    };
    assert_eq!(c.removed[0].index, carol);
    deliver_commit(&mut ms, 0, &out);
    agree(&obs, &mut ms[..2]);
}

/// A commit of more than 256 KiB (its authenticated data; in a large group
/// its UpdatePath) is checked from the received bytes with its signature
/// and transcript hash on their own threads: the observer refuses it
/// signed with another member's key (for the signature, state unchanged)
/// and follows the genuine one, agreeing with every member.
#[test]
fn follows_a_large_commit_and_refuses_it_forged() {
    let (mut ms, mut obs) = setup();
    let before = obs.to_bytes().unwrap();
    let ctx = ms[0].group().group_context().clone();
    let mut options = CommitOptions::new();
    options.force_path = true;
    options.authenticated_data = vec![0xa5; 300 * 1024];
    let out = ms[0].group().commit(options, NOW).unwrap();
    assert!(out.commit.len() > 300 * 1024);
    let forged = resign(&ms[2], public(&out.commit), |_| {}, &ctx);
    let e = obs.process(&forged, NOW).unwrap_err();
    assert!(
        matches!(
            e,
            GroupError::Protection(ProtectionError::InvalidSignature(_))
        ),
        "{e:?}"
    );
    assert_eq!(obs.to_bytes().unwrap(), before);
    match obs.process(&out.commit, NOW).unwrap() {
        ObservedMessage::Commit(c) => assert_eq!(c.epoch, ctx.epoch + 1),
        other => panic!("{other:?}"),
    }
    deliver_commit(&mut ms, 0, &out);
    agree(&obs, &mut ms);
}

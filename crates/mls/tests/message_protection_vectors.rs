//! message-protection.json (mlswg/mls-implementations test vectors): every
//! case of each implemented suite (X448 skipped and counted). The sender is leaf 1 of a two-leaf secret
//! tree. For the proposal, commit and application: the vector's
//! PublicMessage (where present) and PrivateMessage unprotect to the given
//! content; then the content protected here (public and private, signed
//! with `signature_priv`) unprotects to the same content. Application data
//! cannot be protected as a PublicMessage.
//!
//! Then rejection: every forged or malformed message gives its typed error
//! and leaves the secret tree unchanged, after which the genuine message
//! still decrypts.

use hsmls::PaddingPolicy;
use hsmls::SecretTreeConfig;
use hsmls::error::ProtectionError;
use hsmls::error::SecretTreeError;
use hsmls::internal::codec::{
    AuthenticatedContent, Commit, FramedContent, FramedContentBody, Mac, MlsMessage,
    MlsMessageBody, PrivateContentAad, PrivateMessage, PrivateMessageContent, PublicMessage,
    SenderData, SenderDataAad,
};
use hsmls::internal::message_protection::{
    Membership, protect_private, protect_public, sign_content, unprotect_private, unprotect_public,
};
use hsmls::internal::secret_tree::{RatchetType, SecretTree, sender_data_key_nonce};
use hsmls::wire::LeafIndex;
use hsmls::wire::{
    CipherSuite as WireCipherSuite, Decode, Encode, GroupContext, Proposal, ProtocolVersion,
    Sender, SignaturePublicKey, WireFormat,
};
use hsmls_crypto::{CipherSuite, CipherSuiteProvider, Secret};
use hsmls_custody::{KeyCustody, KeyRef, SoftwareCustody};
use hsmls_test_vectors::{CaseCounter, hex_bytes, left_pad, load, per_suite};
use rand_core::OsRng;
use serde::Deserialize;
use tls_codec::{Serialize, Size};

#[derive(Deserialize, Clone)]
struct Case {
    cipher_suite: u16,
    #[serde(deserialize_with = "hex_bytes")]
    group_id: Vec<u8>,
    epoch: u64,
    #[serde(deserialize_with = "hex_bytes")]
    tree_hash: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    confirmed_transcript_hash: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    signature_priv: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    signature_pub: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    encryption_secret: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    sender_data_secret: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    membership_key: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    proposal: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    proposal_pub: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    proposal_priv: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    commit: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    commit_pub: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    commit_priv: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    application: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    application_priv: Vec<u8>,
}

/// The sender of every message of the vectors.
const SENDER: LeafIndex = LeafIndex(1);

/// The group state of a case, as a receiver (and sender) sees it.
struct Fixture {
    cs: &'static dyn CipherSuiteProvider,
    context: GroupContext,
    membership_key: Secret,
    sender_data_secret: Secret,
    encryption_secret: Vec<u8>,
    signature_pub: Vec<u8>,
    members: Vec<Option<SignaturePublicKey>>,
    custody: SoftwareCustody,
    signer: KeyRef,
}

impl Fixture {
    fn new(case: &Case, cs: &'static dyn CipherSuiteProvider) -> Self {
        let context = GroupContext {
            version: ProtocolVersion::MLS10,
            cipher_suite: WireCipherSuite::from(cs.cipher_suite()),
            group_id: case.group_id.clone(),
            epoch: case.epoch,
            tree_hash: case.tree_hash.clone(),
            confirmed_transcript_hash: case.confirmed_transcript_hash.clone(),
            extensions: vec![],
        };
        let custody = SoftwareCustody::new();
        let signer = custody
            .import(
                cs.signature_key_spec(),
                &left_pad(
                    &case.signature_priv,
                    cs.signature_key_spec().private_key_len(),
                ),
            )
            .unwrap();
        assert_eq!(
            signer.public_key().as_bytes(),
            case.signature_pub.as_slice()
        );
        // Leaf 0 (the receiver) has another key.
        let other = custody.generate(cs.signature_key_spec()).unwrap();
        Fixture {
            cs,
            context,
            membership_key: Secret::from_slice(&case.membership_key),
            sender_data_secret: Secret::from_slice(&case.sender_data_secret),
            encryption_secret: case.encryption_secret.clone(),
            signature_pub: case.signature_pub.clone(),
            members: vec![
                Some(SignaturePublicKey(other.public_key().as_bytes().to_vec())),
                Some(SignaturePublicKey(case.signature_pub.clone())),
            ],
            custody,
            signer,
        }
    }

    fn tree(&self) -> SecretTree {
        SecretTree::new(
            self.cs,
            Secret::from_slice(&self.encryption_secret),
            2,
            SecretTreeConfig::default(),
        )
        .unwrap()
    }

    fn membership(&self) -> Membership<'_> {
        Membership {
            group_context: &self.context,
            membership_key: &self.membership_key,
        }
    }

    fn framed(&self, body: FramedContentBody) -> FramedContent {
        FramedContent {
            group_id: self.context.group_id.clone(),
            epoch: self.context.epoch,
            sender: Sender::Member(SENDER),
            authenticated_data: vec![],
            body,
        }
    }

    fn sign(
        &self,
        wire_format: WireFormat,
        body: FramedContentBody,
        confirmation_tag: Option<Mac>,
    ) -> AuthenticatedContent {
        let mut ac = sign_content(
            self.cs,
            &self.custody,
            &self.signer,
            wire_format,
            self.framed(body),
            Some(&self.context),
        )
        .unwrap();
        ac.auth.confirmation_tag = confirmation_tag;
        ac
    }

    fn unprotect_public_bytes(
        &self,
        bytes: &[u8],
    ) -> Result<AuthenticatedContent, ProtectionError> {
        let MlsMessageBody::PublicMessage(m) = MlsMessage::decode(bytes).unwrap().body else {
            panic!("not a PublicMessage");
        };
        unprotect_public(
            self.cs,
            m,
            &self.context,
            &self.membership_key,
            &self.signature_pub,
        )
    }

    fn unprotect_private_bytes(
        &self,
        tree: &mut SecretTree,
        bytes: &[u8],
    ) -> Result<AuthenticatedContent, ProtectionError> {
        let MlsMessageBody::PrivateMessage(m) = MlsMessage::decode(bytes).unwrap().body else {
            panic!("not a PrivateMessage");
        };
        let out = unprotect_private(
            self.cs,
            &m,
            tree,
            &self.sender_data_secret,
            &self.context,
            &self.members,
        )?;
        assert_eq!(out.leaf_index, SENDER);
        assert_eq!(out.content.content.sender, Sender::Member(SENDER));
        Ok(out.content)
    }

    /// Protects `body` both ways, sends the bytes through MLSMessage
    /// encoding and unprotects them; returns the number of round trips.
    fn round_trip(&self, body: &FramedContentBody, confirmation_tag: Option<Mac>) -> usize {
        let mut n = 0;
        if !matches!(body, FramedContentBody::Application(_)) {
            let ac = self.sign(
                WireFormat::PUBLIC_MESSAGE,
                body.clone(),
                confirmation_tag.clone(),
            );
            let msg = protect_public(self.cs, ac.clone(), Some(self.membership())).unwrap();
            let bytes = MlsMessage {
                body: MlsMessageBody::PublicMessage(msg),
            }
            .encode()
            .unwrap();
            assert_eq!(self.unprotect_public_bytes(&bytes).unwrap(), ac);
            n += 1;
        }
        for padding in [PaddingPolicy::NONE, PaddingPolicy::multiple_of(64)] {
            let ac = self.sign(
                WireFormat::PRIVATE_MESSAGE,
                body.clone(),
                confirmation_tag.clone(),
            );
            let mut sender_tree = self.tree();
            let msg = protect_private(
                self.cs,
                &ac,
                &mut sender_tree,
                &self.sender_data_secret,
                padding,
                &mut OsRng,
            )
            .unwrap();
            if padding.block() == 64 {
                // PrivateMessageContent padded to 64 bytes, plus the tag.
                assert_eq!((msg.ciphertext.len() - 16) % 64, 0);
            }
            let bytes = MlsMessage {
                body: MlsMessageBody::PrivateMessage(msg),
            }
            .encode()
            .unwrap();
            let mut receiver_tree = self.tree();
            assert_eq!(
                self.unprotect_private_bytes(&mut receiver_tree, &bytes)
                    .unwrap(),
                ac
            );
            n += 1;
        }
        n
    }
}

fn suite2() -> &'static dyn CipherSuiteProvider {
    CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256
        .provider()
        .unwrap()
}

fn suite2_case() -> Case {
    let cases: Vec<Case> = load("message-protection.json");
    cases.into_iter().find(|c| c.cipher_suite == 2).unwrap()
}

#[test]
fn message_protection_vectors() {
    let cases: Vec<Case> = load("message-protection.json");
    let mut counter = CaseCounter::new("message-protection.json");
    let (mut vector_messages, mut round_trips) = (0usize, 0usize);
    for case in cases {
        let Ok(cs) = CipherSuite(case.cipher_suite).provider() else {
            counter.skipped_suite(case.cipher_suite);
            continue;
        };
        let f = Fixture::new(&case, cs);

        // Proposal.
        let proposal = FramedContentBody::Proposal(Proposal::decode(&case.proposal).unwrap());
        let got = f.unprotect_public_bytes(&case.proposal_pub).unwrap();
        assert_eq!(got.content.body, proposal);
        assert_eq!(got.content.sender, Sender::Member(SENDER));
        let got = f
            .unprotect_private_bytes(&mut f.tree(), &case.proposal_priv)
            .unwrap();
        assert_eq!(got.content.body, proposal);
        vector_messages += 2;
        round_trips += f.round_trip(&proposal, None);

        // Commit, protected here with the vector's confirmation tag.
        let commit = FramedContentBody::Commit(Commit::decode(&case.commit).unwrap());
        let got = f.unprotect_public_bytes(&case.commit_pub).unwrap();
        assert_eq!(got.content.body, commit);
        let tag = got.auth.confirmation_tag.clone().unwrap();
        let got = f
            .unprotect_private_bytes(&mut f.tree(), &case.commit_priv)
            .unwrap();
        assert_eq!(got.content.body, commit);
        assert_eq!(got.auth.confirmation_tag.as_ref(), Some(&tag));
        vector_messages += 2;
        round_trips += f.round_trip(&commit, Some(tag));

        // Application: private only.
        let application = FramedContentBody::Application(case.application.clone());
        let got = f
            .unprotect_private_bytes(&mut f.tree(), &case.application_priv)
            .unwrap();
        assert_eq!(got.content.body, application);
        vector_messages += 1;
        round_trips += f.round_trip(&application, None);
        assert!(matches!(
            sign_content(
                cs,
                &f.custody,
                &f.signer,
                WireFormat::PUBLIC_MESSAGE,
                f.framed(application.clone()),
                Some(&f.context)
            ),
            Err(ProtectionError::ApplicationInPublicMessage)
        ));
        let mut as_public = f.sign(WireFormat::PRIVATE_MESSAGE, application, None);
        as_public.wire_format = WireFormat::PUBLIC_MESSAGE;
        assert!(matches!(
            protect_public(cs, as_public, Some(f.membership())),
            Err(ProtectionError::ApplicationInPublicMessage)
        ));
        counter.ran_suite(case.cipher_suite);
    }
    counter.finish_per_suite(&per_suite(1));
    // Per case: proposal pub+priv, commit pub+priv, application priv; and
    // 3 round trips for proposal and commit, 2 for application.
    assert_eq!(vector_messages, 5 * 5);
    assert_eq!(round_trips, 8 * 5);
}

// ----- rejection -----

fn fixture() -> Fixture {
    Fixture::new(&suite2_case(), suite2())
}

fn application(f: &Fixture, data: &[u8]) -> AuthenticatedContent {
    f.sign(
        WireFormat::PRIVATE_MESSAGE,
        FramedContentBody::Application(data.to_vec()),
        None,
    )
}

fn public_proposal(f: &Fixture) -> PublicMessage {
    let MlsMessageBody::PublicMessage(m) = MlsMessage::decode(&suite2_case().proposal_pub)
        .unwrap()
        .body
    else {
        panic!("not a PublicMessage");
    };
    // It verifies as given.
    unprotect_public(
        f.cs,
        m.clone(),
        &f.context,
        &f.membership_key,
        &f.signature_pub,
    )
    .unwrap();
    m
}

fn unprotect_pub(f: &Fixture, m: PublicMessage) -> Result<AuthenticatedContent, ProtectionError> {
    unprotect_public(f.cs, m, &f.context, &f.membership_key, &f.signature_pub)
}

#[test]
fn public_message_rejections() {
    let f = fixture();
    let genuine = public_proposal(&f);

    // Wrong membership tag.
    let mut m = genuine.clone();
    m.membership_tag.as_mut().unwrap().0[0] ^= 1;
    assert!(matches!(
        unprotect_pub(&f, m),
        Err(ProtectionError::InvalidMembershipTag)
    ));
    let mut m = genuine.clone();
    m.membership_tag.as_mut().unwrap().0.pop();
    assert!(matches!(
        unprotect_pub(&f, m),
        Err(ProtectionError::InvalidMembershipTag)
    ));
    let mut m = genuine.clone();
    m.membership_tag = None;
    assert!(matches!(
        unprotect_pub(&f, m),
        Err(ProtectionError::MissingMembershipTag)
    ));
    // Wrong membership key.
    assert!(matches!(
        unprotect_public(
            f.cs,
            genuine.clone(),
            &f.context,
            &Secret::from_slice(&[0; 32]),
            &f.signature_pub
        ),
        Err(ProtectionError::InvalidMembershipTag)
    ));
    // Tampered content (the membership tag catches it first).
    let mut m = genuine.clone();
    m.content.authenticated_data = b"x".to_vec();
    assert!(matches!(
        unprotect_pub(&f, m),
        Err(ProtectionError::InvalidMembershipTag)
    ));

    // Bad signature: a member (who knows the membership key) signs with a
    // key that is not the sender's.
    let other = f.custody.generate(f.cs.signature_key_spec()).unwrap();
    let body = genuine.content.body.clone();
    let forged = sign_content(
        f.cs,
        &f.custody,
        &other,
        WireFormat::PUBLIC_MESSAGE,
        f.framed(body.clone()),
        Some(&f.context),
    )
    .unwrap();
    let m = protect_public(f.cs, forged, Some(f.membership())).unwrap();
    assert!(matches!(
        unprotect_pub(&f, m),
        Err(ProtectionError::InvalidSignature(_))
    ));
    // A corrupted signature with a recomputed membership tag.
    let mut ac = f.sign(WireFormat::PUBLIC_MESSAGE, body.clone(), None);
    let last = ac.auth.signature.len() - 2;
    ac.auth.signature[last] ^= 1;
    let m = protect_public(f.cs, ac, Some(f.membership())).unwrap();
    assert!(matches!(
        unprotect_pub(&f, m),
        Err(ProtectionError::InvalidSignature(_))
    ));
    // Signed for another epoch's GroupContext.
    let mut other_ctx = f.context.clone();
    other_ctx.tree_hash[0] ^= 1;
    let ac = sign_content(
        f.cs,
        &f.custody,
        &f.signer,
        WireFormat::PUBLIC_MESSAGE,
        f.framed(body.clone()),
        Some(&other_ctx),
    )
    .unwrap();
    let m = protect_public(f.cs, ac, Some(f.membership())).unwrap();
    assert!(matches!(
        unprotect_pub(&f, m),
        Err(ProtectionError::InvalidSignature(_))
    ));

    // Wrong epoch and group id.
    let mut ctx = f.context.clone();
    ctx.epoch += 1;
    assert!(matches!(
        unprotect_public(
            f.cs,
            genuine.clone(),
            &ctx,
            &f.membership_key,
            &f.signature_pub
        ),
        Err(ProtectionError::WrongEpoch { .. })
    ));
    let mut ctx = f.context.clone();
    ctx.group_id.push(0);
    assert!(matches!(
        unprotect_public(
            f.cs,
            genuine.clone(),
            &ctx,
            &f.membership_key,
            &f.signature_pub
        ),
        Err(ProtectionError::WrongGroupId)
    ));

    // Sender rules: an external sender cannot commit; a new member
    // proposal must be an Add; a non-member carries no membership tag.
    let mut m = genuine.clone();
    m.content.sender = Sender::NewMemberProposal;
    assert!(matches!(
        unprotect_pub(&f, m),
        Err(ProtectionError::InvalidSenderForContent { .. })
    ));
    let mut m = genuine.clone();
    m.content.sender = Sender::External(0);
    assert!(matches!(
        unprotect_pub(&f, m),
        Err(ProtectionError::UnexpectedMembershipTag)
    ));
    // A proposal with a confirmation tag.
    let mut m = genuine.clone();
    m.auth.confirmation_tag = Some(Mac(vec![0; 32]));
    assert!(matches!(
        unprotect_pub(&f, m),
        Err(ProtectionError::ConfirmationTagMismatch)
    ));
    // A member's PublicMessage needs the membership key to be protected.
    let ac = f.sign(WireFormat::PUBLIC_MESSAGE, body, None);
    assert!(matches!(
        protect_public(f.cs, ac, None),
        Err(ProtectionError::MissingMembershipKey)
    ));

    // The genuine message still verifies.
    unprotect_pub(&f, genuine).unwrap();
}

/// Unprotects `m` and expects `check` of the error, with `tree` unchanged.
fn rejected(
    f: &Fixture,
    tree: &mut SecretTree,
    m: &PrivateMessage,
    members: &Vec<Option<SignaturePublicKey>>,
    context: &GroupContext,
    check: impl Fn(&ProtectionError) -> bool,
) {
    let before = tree.clone();
    let err = unprotect_private(f.cs, m, tree, &f.sender_data_secret, context, members)
        .expect_err("a forged message was accepted");
    assert!(check(&err), "unexpected error {err:?}");
    assert!(
        *tree == before,
        "a rejected message changed the secret tree"
    );
}

#[test]
fn private_message_rejections_leave_state_unchanged() {
    let f = fixture();
    let mut sender_tree = f.tree();
    let ac = application(&f, &[0x42; 100]);
    let genuine = protect_private(
        f.cs,
        &ac,
        &mut sender_tree,
        &f.sender_data_secret,
        PaddingPolicy::NONE,
        &mut OsRng,
    )
    .unwrap();
    let mut tree = f.tree();
    let ctx = &f.context;
    let members = &f.members;

    // Tampered ciphertext: past the sample (content AEAD fails) and inside
    // the sample (the sender data key changes).
    let mut m = genuine.clone();
    *m.ciphertext.last_mut().unwrap() ^= 1;
    rejected(&f, &mut tree, &m, members, ctx, |e| {
        matches!(e, ProtectionError::ContentDecryption)
    });
    let mut m = genuine.clone();
    m.ciphertext[0] ^= 1;
    rejected(&f, &mut tree, &m, members, ctx, |e| {
        matches!(e, ProtectionError::SenderDataDecryption)
    });
    // Tampered sender data.
    let mut m = genuine.clone();
    m.encrypted_sender_data[2] ^= 1;
    rejected(&f, &mut tree, &m, members, ctx, |e| {
        matches!(e, ProtectionError::SenderDataDecryption)
    });
    // Tampered authenticated data (in PrivateContentAAD only) and content
    // type (in both AADs).
    let mut m = genuine.clone();
    m.authenticated_data = b"forged".to_vec();
    rejected(&f, &mut tree, &m, members, ctx, |e| {
        matches!(e, ProtectionError::ContentDecryption)
    });
    let mut m = genuine.clone();
    m.content_type = hsmls::wire::ContentType::Proposal;
    rejected(&f, &mut tree, &m, members, ctx, |e| {
        matches!(e, ProtectionError::SenderDataDecryption)
    });
    // Wrong epoch and group id, in the message or in the state.
    let mut m = genuine.clone();
    m.epoch += 1;
    rejected(&f, &mut tree, &m, members, ctx, |e| {
        matches!(e, ProtectionError::WrongEpoch { .. })
    });
    let mut m = genuine.clone();
    m.group_id[0] ^= 1;
    rejected(&f, &mut tree, &m, members, ctx, |e| {
        matches!(e, ProtectionError::WrongGroupId)
    });
    let mut other_ctx = f.context.clone();
    other_ctx.epoch -= 1;
    rejected(&f, &mut tree, &genuine, members, &other_ctx, |e| {
        matches!(e, ProtectionError::WrongEpoch { .. })
    });
    // Wrong sender data secret.
    let before = tree.clone();
    assert!(matches!(
        unprotect_private(
            f.cs,
            &genuine,
            &mut tree,
            &Secret::from_slice(&[1; 32]),
            ctx,
            members
        ),
        Err(ProtectionError::SenderDataDecryption)
    ));
    assert!(tree == before);
    // The sender's leaf is blank.
    let blank = vec![members[0].clone(), None];
    rejected(&f, &mut tree, &genuine, &blank, ctx, |e| {
        matches!(e, ProtectionError::UnknownSender(LeafIndex(1)))
    });
    // Another member's key for leaf 1: the signature fails after a
    // successful decryption, and the key is still not consumed.
    let swapped = vec![members[1].clone(), members[0].clone()];
    rejected(&f, &mut tree, &genuine, &swapped, ctx, |e| {
        matches!(e, ProtectionError::InvalidSignature(_))
    });
    // Signed for another GroupContext.
    let mut ctx2 = f.context.clone();
    ctx2.confirmed_transcript_hash[0] ^= 1;
    rejected(&f, &mut tree, &genuine, members, &ctx2, |e| {
        matches!(e, ProtectionError::WrongEpoch { .. })
            || matches!(e, ProtectionError::InvalidSignature(_))
    });

    // The genuine message decrypts after all these; a replay does not.
    let out = unprotect_private(
        f.cs,
        &genuine,
        &mut tree,
        &f.sender_data_secret,
        ctx,
        members,
    )
    .unwrap();
    assert_eq!(out.content, ac);
    assert_eq!(out.generation, 0);
    rejected(&f, &mut tree, &genuine, members, ctx, |e| {
        matches!(
            e,
            ProtectionError::SecretTree(SecretTreeError::GenerationAlreadyUsed(0))
        )
    });
}

/// A PrivateMessage sealed with the right keys around an arbitrary
/// plaintext (what a malicious member could send).
fn seal_raw(
    f: &Fixture,
    sender_tree: &mut SecretTree,
    leaf: LeafIndex,
    content_type: hsmls::wire::ContentType,
    plaintext: &[u8],
) -> PrivateMessage {
    let cs = f.cs;
    let ratchet = if content_type == hsmls::wire::ContentType::Application {
        RatchetType::Application
    } else {
        RatchetType::Handshake
    };
    let key = sender_tree.next_encryption_key(leaf, ratchet).unwrap();
    let aad = PrivateContentAad {
        group_id: f.context.group_id.clone(),
        epoch: f.context.epoch,
        content_type,
        authenticated_data: vec![],
    }
    .encode()
    .unwrap();
    let mut ciphertext = plaintext.to_vec();
    cs.aead_seal_in_place(
        key.key.as_bytes(),
        key.nonce.as_bytes(),
        &aad,
        &mut ciphertext,
    )
    .unwrap();
    let mut sd = SenderData {
        leaf_index: leaf,
        generation: key.generation,
        reuse_guard: [0; 4],
    }
    .encode()
    .unwrap();
    let (k, n) = sender_data_key_nonce(cs, &f.sender_data_secret, &ciphertext).unwrap();
    let sd_aad = SenderDataAad {
        group_id: f.context.group_id.clone(),
        epoch: f.context.epoch,
        content_type,
    }
    .encode()
    .unwrap();
    cs.aead_seal_in_place(k.as_bytes(), n.as_bytes(), &sd_aad, &mut sd)
        .unwrap();
    PrivateMessage {
        group_id: f.context.group_id.clone(),
        epoch: f.context.epoch,
        content_type,
        authenticated_data: vec![],
        encrypted_sender_data: sd,
        ciphertext,
    }
}

#[test]
fn padding_must_be_zero() {
    let f = fixture();
    let ac = application(&f, b"padded");
    let pmc = PrivateMessageContent {
        body: ac.content.body.clone(),
        auth: ac.auth.clone(),
        padding_len: 8,
    };
    let mut plaintext = Vec::with_capacity(pmc.tls_serialized_len());
    pmc.tls_serialize(&mut plaintext).unwrap();
    let app = hsmls::wire::ContentType::Application;

    // Zero padding decrypts (and the reuse guard of zero is handled).
    let mut sender_tree = f.tree();
    let good = seal_raw(&f, &mut sender_tree, SENDER, app, &plaintext);
    // Non-zero padding byte, last or first.
    let mut bad_last = plaintext.clone();
    *bad_last.last_mut().unwrap() = 1;
    let bad_last = seal_raw(&f, &mut sender_tree, SENDER, app, &bad_last);
    let mut bad_first = plaintext.clone();
    let first_pad = plaintext.len() - 8;
    bad_first[first_pad] = 0x80;
    let bad_first = seal_raw(&f, &mut sender_tree, SENDER, app, &bad_first);
    // Truncated content (garbage after a valid AEAD).
    let truncated = seal_raw(&f, &mut sender_tree, SENDER, app, &plaintext[..3]);

    let mut tree = f.tree();
    for m in [&bad_last, &bad_first] {
        rejected(&f, &mut tree, m, &f.members, &f.context, |e| {
            matches!(e, ProtectionError::NonZeroPadding)
        });
    }
    rejected(&f, &mut tree, &truncated, &f.members, &f.context, |e| {
        matches!(e, ProtectionError::MalformedContent(_))
    });
    let out = unprotect_private(
        f.cs,
        &good,
        &mut tree,
        &f.sender_data_secret,
        &f.context,
        &f.members,
    )
    .unwrap();
    assert_eq!(out.content, ac);
}

#[test]
fn sender_data_rejections() {
    let f = fixture();
    let ac = application(&f, b"x");
    let pmc = PrivateMessageContent {
        body: ac.content.body.clone(),
        auth: ac.auth.clone(),
        padding_len: 0,
    };
    let mut plaintext = Vec::new();
    pmc.tls_serialize(&mut plaintext).unwrap();
    let app = hsmls::wire::ContentType::Application;

    // A sender data naming a leaf outside the tree: sealed by hand with a
    // three-leaf sender tree whose leaf 2 the two-leaf receiver lacks.
    let mut big = SecretTree::new(
        f.cs,
        Secret::from_slice(&f.encryption_secret),
        3,
        SecretTreeConfig::default(),
    )
    .unwrap();
    let m = seal_raw(&f, &mut big, LeafIndex(2), app, &plaintext);
    let mut tree = f.tree();
    rejected(&f, &mut tree, &m, &f.members, &f.context, |e| {
        matches!(e, ProtectionError::UnknownSender(LeafIndex(2)))
    });
    let mut three = f.members.clone();
    three.push(f.members[1].clone());
    rejected(&f, &mut tree, &m, &three, &f.context, |e| {
        matches!(
            e,
            ProtectionError::SecretTree(SecretTreeError::LeafOutOfRange { .. })
        )
    });

    // A generation too far ahead of the receiver's ratchet.
    let mut sender_tree = f.tree();
    for _ in 0..=SecretTreeConfig::default().max_forward_distance {
        sender_tree
            .next_encryption_key(SENDER, RatchetType::Application)
            .unwrap();
    }
    let m = seal_raw(&f, &mut sender_tree, SENDER, app, &plaintext);
    rejected(&f, &mut tree, &m, &f.members, &f.context, |e| {
        matches!(
            e,
            ProtectionError::SecretTree(SecretTreeError::GenerationTooFarAhead { .. })
        )
    });

    // Malformed sender data inside a valid AEAD.
    let mut sender_tree = f.tree();
    let mut m = seal_raw(&f, &mut sender_tree, SENDER, app, &plaintext);
    let (k, n) = sender_data_key_nonce(f.cs, &f.sender_data_secret, &m.ciphertext).unwrap();
    let sd_aad = SenderDataAad {
        group_id: f.context.group_id.clone(),
        epoch: f.context.epoch,
        content_type: app,
    }
    .encode()
    .unwrap();
    let mut short = vec![0u8; 7];
    f.cs.aead_seal_in_place(k.as_bytes(), n.as_bytes(), &sd_aad, &mut short)
        .unwrap();
    m.encrypted_sender_data = short;
    rejected(&f, &mut tree, &m, &f.members, &f.context, |e| {
        matches!(e, ProtectionError::MalformedSenderData(_))
    });
}

#[test]
fn out_of_order_and_handshake_ratchet() {
    let f = fixture();
    let mut sender_tree = f.tree();
    let msgs: Vec<(AuthenticatedContent, PrivateMessage)> = (0u8..4)
        .map(|i| {
            let ac = application(&f, &[i; 10]);
            let m = protect_private(
                f.cs,
                &ac,
                &mut sender_tree,
                &f.sender_data_secret,
                PaddingPolicy::multiple_of(32),
                &mut OsRng,
            )
            .unwrap();
            (ac, m)
        })
        .collect();
    // A proposal uses the handshake ratchet: generation 0 there.
    let proposal = FramedContentBody::Proposal(Proposal::decode(&suite2_case().proposal).unwrap());
    let hs = f.sign(WireFormat::PRIVATE_MESSAGE, proposal, None);
    let hs_msg = protect_private(
        f.cs,
        &hs,
        &mut sender_tree,
        &f.sender_data_secret,
        PaddingPolicy::NONE,
        &mut OsRng,
    )
    .unwrap();

    let mut tree = f.tree();
    for i in [3usize, 1, 0, 2] {
        let out = unprotect_private(
            f.cs,
            &msgs[i].1,
            &mut tree,
            &f.sender_data_secret,
            &f.context,
            &f.members,
        )
        .unwrap();
        assert_eq!(out.content, msgs[i].0);
        assert_eq!(out.generation as usize, i);
    }
    let out = unprotect_private(
        f.cs,
        &hs_msg,
        &mut tree,
        &f.sender_data_secret,
        &f.context,
        &f.members,
    )
    .unwrap();
    assert_eq!((out.generation, out.content), (0, hs));
}

mod bit_flips {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any application data and padding round-trips, and no single bit
        /// flip anywhere in the encoded MLSMessage is accepted; a rejected
        /// message leaves the secret tree unchanged.
        #[test]
        fn no_bit_flip_is_accepted(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            block in 0u32..100,
            flips in proptest::collection::vec(any::<prop::sample::Index>(), 8),
        ) {
            let f = fixture();
            let ac = application(&f, &data);
            let mut sender_tree = f.tree();
            let m = protect_private(
                f.cs,
                &ac,
                &mut sender_tree,
                &f.sender_data_secret,
                PaddingPolicy::multiple_of(block),
                &mut OsRng,
            )
            .unwrap();
            let bytes = MlsMessage { body: MlsMessageBody::PrivateMessage(m) }
                .encode()
                .unwrap();
            let mut tree = f.tree();
            for flip in &flips {
                let bit = flip.index(bytes.len() * 8);
                let mut forged = bytes.clone();
                forged[bit / 8] ^= 1 << (bit % 8);
                let Ok(msg) = MlsMessage::decode(&forged) else { continue };
                let MlsMessageBody::PrivateMessage(pm) = msg.body else { continue };
                let before = tree.clone();
                let r = unprotect_private(
                    f.cs, &pm, &mut tree, &f.sender_data_secret, &f.context, &f.members,
                );
                // Which check fires depends on the bit: exactly these.
                prop_assert!(
                    matches!(
                        r,
                        Err(ProtectionError::WrongGroupId
                            | ProtectionError::WrongEpoch { .. }
                            | ProtectionError::SenderDataDecryption
                            | ProtectionError::MalformedSenderData(_)
                            | ProtectionError::UnknownSender(_)
                            | ProtectionError::ContentDecryption
                            | ProtectionError::SecretTree(_))
                    ),
                    "bit {} flipped: {:?}",
                    bit,
                    r.err()
                );
                prop_assert!(tree == before);
            }
            let out = f.unprotect_private_bytes(&mut tree, &bytes).unwrap();
            prop_assert_eq!(out, ac);
        }
    }
}

/// A PublicMessage whose FramedContentTBS is above 256 KiB has its
/// membership tag and signature checked on separate threads
/// (`message_protection::PARALLEL_CHECKS_FROM`): the same outcomes as for
/// a small message, and the membership tag still reported first.
#[test]
fn large_public_message_checks() {
    let f = fixture();
    let body = public_proposal(&f).content.body;
    let large = |signer: &KeyRef| {
        let mut framed = f.framed(body.clone());
        framed.authenticated_data = vec![0x5a; 300 * 1024];
        let ac = sign_content(
            f.cs,
            &f.custody,
            signer,
            WireFormat::PUBLIC_MESSAGE,
            framed,
            Some(&f.context),
        )
        .unwrap();
        protect_public(f.cs, ac, Some(f.membership())).unwrap()
    };
    let genuine = large(&f.signer);
    // The buffer of FramedContentTBS is sized once, exactly (a commit at
    // 100,000 members is 11 MB: growing it copies all of it).
    let tbs = genuine
        .content
        .to_be_signed(WireFormat::PUBLIC_MESSAGE, Some(&f.context))
        .unwrap();
    assert_eq!(
        tbs.len(),
        genuine.content.to_be_signed_len(Some(&f.context))
    );
    assert_eq!(tbs.capacity(), tbs.len());
    let content = unprotect_pub(&f, genuine.clone()).unwrap();
    assert_eq!(content.content, genuine.content);

    // Content changed after tagging: the membership tag fails.
    let mut m = genuine.clone();
    m.content.authenticated_data[200 * 1024] ^= 1;
    assert!(matches!(
        unprotect_pub(&f, m),
        Err(ProtectionError::InvalidMembershipTag)
    ));
    // Signed by a key that is not the sender's, tagged correctly.
    let other = f.custody.generate(f.cs.signature_key_spec()).unwrap();
    let forged = large(&other);
    assert!(matches!(
        unprotect_pub(&f, forged.clone()),
        Err(ProtectionError::InvalidSignature(_))
    ));
    // Both wrong: the membership tag is reported.
    let mut m = forged;
    m.membership_tag.as_mut().unwrap().0[0] ^= 1;
    assert!(matches!(
        unprotect_pub(&f, m),
        Err(ProtectionError::InvalidMembershipTag)
    ));
    f.custody.destroy(&other).unwrap();
}

//! A live group member processes fuzzed messages (RFC 9420 §6, §12.4.2):
//! `Group::process_incoming` must never panic, and every input it refuses
//! must leave the member's whole state (`Group::state_snapshot`) unchanged.
//!
//! The group (three members; the receiver is at epoch 2 with epoch 1
//! retained) is built once per process. Genuine messages of that group are
//! kept as templates: commits as PublicMessage and PrivateMessage, an
//! external commit, Update / Add / Remove proposals, and application
//! messages of the current and of a past epoch. The first input byte picks
//! raw mode (the rest of the input is the message) or a template; the rest
//! of the input is then a list of 4-byte edits (`op, pos_hi, pos_lo, value`:
//! xor, set, truncate, insert) applied to the template, so that the fuzzer
//! explores mutations of real, decryptable messages. The group's keys are
//! random per process, so a crash input reproduces the edit list against a
//! fresh group of the same shape.
//!
//! One more mode edits the FramedContent of the external commit and signs
//! it again with the joiner's own key (a `new_member_commit` needs no
//! membership tag), so that malformed but signed commits reach the commit
//! validation (proposal list, UpdatePath, leaf node) — a malicious joiner.
//!
//! Unedited templates are skipped (they are genuine and would be
//! accepted). An edited template that is accepted is a finding: every byte
//! of a PublicMessage is covered by the signature and membership tag, every
//! byte of a PrivateMessage by the AEAD, and the encoding is canonical. A
//! raw input that is accepted (not expected) makes the group be rebuilt so
//! every input meets the same state.
#![no_main]

use std::sync::{Arc, LazyLock, Mutex};

use hsmls::internal::codec::{FramedContent, Mac, MlsMessage, MlsMessageBody};
use hsmls::internal::message_protection::{protect_public, sign_content};
use hsmls::wire::LeafIndex;
use hsmls::wire::{ContentType, Credential, Decode, Encode, GroupContext, WireFormat};
use hsmls::{
    BasicCredentialValidator, Client, CommitOptions, CredentialValidator, Group, GroupConfig,
    HandshakeFraming, JoinOptions, KeyPackageBundle, KeyPackageConfig, ProcessedMessage, Signer,
};
use hsmls_custody::SoftwareCustody;
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_750_000_000;
/// At most this many edits per input.
const MAX_EDITS: usize = 32;

struct World {
    receiver: Group,
    templates: Vec<Vec<u8>>,
    insider: Insider,
}

/// A would-be joiner holding its own signature key: it can sign any
/// content as a `new_member_commit` PublicMessage (no membership tag), so
/// edited external commits reach commit validation, not just the
/// signature check. They still fail at the confirmation tag at the latest.
struct Insider {
    signer: Signer,
    encoded: Vec<u8>,
    confirmation_tag: Option<Mac>,
    context: GroupContext,
}

fn validator() -> Arc<dyn CredentialValidator> {
    Arc::new(BasicCredentialValidator::default())
}

fn signer(name: &str) -> Signer {
    Signer::generate(
        Arc::new(SoftwareCustody::new()),
        Credential::Basic(name.as_bytes().to_vec()),
    )
    .expect("software key generation")
}

fn merge(g: &mut Group, commit: &[u8]) {
    match g.process_incoming(commit, NOW).expect("genuine commit") {
        ProcessedMessage::StagedCommit(s) => g.merge_staged_commit(s).expect("merge"),
        other => panic!("expected a commit, got {other:?}"),
    }
}

fn build() -> World {
    let mut public = GroupConfig::default();
    public.handshake_framing = HandshakeFraming::Public;
    let private = GroupConfig::default();
    let client = |name: &str, config: &GroupConfig| {
        Client::new(signer(name), validator()).with_group_config(config.clone())
    };
    let mut alice = client("alice", &public)
        .create_group(b"fuzzed group".to_vec(), Vec::new(), NOW)
        .expect("create");
    let (bob_c, carol_c) = (client("bob", &private), client("carol", &private));
    let config = KeyPackageConfig::new(NOW - 10, 3600);
    let bob_kp = bob_c.generate_key_package(&config).expect("kp");
    let carol_kp = carol_c.generate_key_package(&config).expect("kp");
    let out = alice
        .add_members(
            &[bob_kp.key_package.clone(), carol_kp.key_package.clone()],
            NOW,
        )
        .expect("add");
    alice.merge_pending_commit().expect("merge");
    let welcome = out.welcome.expect("welcome");
    let join = |c: &Client, kp: &KeyPackageBundle| {
        c.join_from_welcome(kp, &welcome, JoinOptions::default())
            .expect("join")
    };
    let mut bob = join(&bob_c, &bob_kp);
    let mut carol = join(&carol_c, &carol_kp);

    let mut templates = Vec::new();
    // An application message of epoch 1, read after the epoch moved on.
    templates.push(
        carol
            .encrypt_application(b"from a past epoch")
            .expect("app"),
    );
    let update = alice.self_update(NOW).expect("commit");
    alice.merge_pending_commit().expect("merge");
    merge(&mut bob, &update.commit);
    merge(&mut carol, &update.commit);

    // Epoch 2. Commits, discarded after being recorded.
    let mut options = CommitOptions::new();
    options.force_path = true;
    templates.push(alice.commit(options.clone(), NOW).expect("commit").commit);
    alice.discard_pending_commit().expect("discard");
    templates.push(
        alice
            .remove_members(&[LeafIndex(2)], NOW)
            .expect("commit")
            .commit,
    );
    alice.discard_pending_commit().expect("discard");
    alice.set_config(private.clone());
    templates.push(alice.commit(options, NOW).expect("commit").commit);
    alice.discard_pending_commit().expect("discard");
    templates.push(carol.self_update(NOW).expect("commit").commit);
    carol.discard_pending_commit().expect("discard");
    // An external commit.
    let group_info = alice.group_info().expect("group info");
    let dave = client("dave", &private);
    let (_dave, external) = dave
        .join_by_external_commit(&group_info, JoinOptions::default())
        .expect("external join");
    let MlsMessageBody::PublicMessage(pm) = MlsMessage::decode(&external).expect("decode").body
    else {
        panic!("an external commit is a PublicMessage");
    };
    let insider = Insider {
        signer: dave.signer().clone(),
        encoded: pm.content.encode().expect("encode"),
        confirmation_tag: pm.auth.confirmation_tag,
        context: bob.group_context().clone(),
    };
    templates.push(external);
    // Application messages of epoch 2.
    templates.push(alice.encrypt_application(b"hello bob").expect("app"));
    templates.push(
        carol
            .encrypt_application_with_aad(&[7; 100], b"aad".to_vec())
            .expect("app"),
    );
    // Proposals: private Remove, public Update and Add.
    templates.push(
        carol
            .propose_remove(LeafIndex(0))
            .expect("proposal")
            .into_message(),
    );
    alice.set_config(public);
    templates.push(alice.propose_update().expect("proposal").into_message());
    let eve_kp = client("eve", &private)
        .generate_key_package(&config)
        .expect("kp");
    templates.push(
        alice
            .propose_add(&eve_kp.key_package, NOW)
            .expect("proposal")
            .into_message(),
    );
    // A Welcome and a GroupInfo (not for process_incoming).
    templates.push(welcome);
    templates.push(group_info);
    World {
        receiver: bob,
        templates,
        insider,
    }
}

static WORLD: LazyLock<Mutex<World>> = LazyLock::new(|| Mutex::new(build()));

impl Insider {
    /// Edits the encoded FramedContent of the external commit, then signs
    /// and frames the result as the joiner would. None when the edited
    /// bytes are no FramedContent or cannot be framed.
    fn resign(&self, edits: &[u8]) -> Option<Vec<u8>> {
        let edited = mutate(&self.encoded, edits);
        if edited == self.encoded {
            return None;
        }
        let content = FramedContent::decode(&edited).ok()?;
        let is_commit = content.content_type() == ContentType::Commit;
        let cs = hsmls_crypto::CipherSuite(self.context.cipher_suite.0)
            .provider()
            .ok()?;
        let mut signed = sign_content(
            cs,
            self.signer.custody.as_ref(),
            &self.signer.signature_key,
            WireFormat::PUBLIC_MESSAGE,
            content,
            Some(&self.context),
        )
        .ok()?;
        signed.auth.confirmation_tag = if is_commit {
            self.confirmation_tag.clone()
        } else {
            None
        };
        let message = protect_public(cs, signed, None).ok()?;
        MlsMessage {
            body: MlsMessageBody::PublicMessage(message),
        }
        .encode()
        .ok()
    }
}

/// Applies the edit list to a template.
fn mutate(template: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut m = template.to_vec();
    for e in edits.chunks_exact(4).take(MAX_EDITS) {
        let pos = usize::from(u16::from_be_bytes([e[1], e[2]]));
        let value = e[3];
        if m.is_empty() {
            m.push(value);
            continue;
        }
        let at = pos % m.len();
        match e[0] % 4 {
            0 => m[at] ^= value,
            1 => m[at] = value,
            2 => m.truncate(at),
            _ => m.insert(at, value),
        }
    }
    m
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut world = WORLD.lock().unwrap_or_else(|p| p.into_inner());
    let count = world.templates.len();
    let (message, template) = match usize::from(mode) % (count + 2) {
        0 => (rest.to_vec(), None),
        n if n == count + 1 => match world.insider.resign(rest) {
            Some(m) => (m, None),
            None => return,
        },
        n => {
            let template = &world.templates[n - 1];
            let m = mutate(template, rest);
            if &m == template {
                // The genuine message: accepted by design (and it would
                // consume its key), nothing to learn.
                return;
            }
            (m, Some(n - 1))
        }
    };
    let before = world.receiver.state_snapshot();
    match world.receiver.process_incoming(&message, NOW) {
        Err(e) => {
            assert_eq!(
                world.receiver.state_snapshot(),
                before,
                "state changed after a rejected input ({e})"
            );
        }
        Ok(event) => {
            // Every byte of a PublicMessage is signed and MACed, every byte
            // of a PrivateMessage authenticated by the AEAD, and the
            // encoding is canonical: an edited message must never pass.
            assert!(
                template.is_none(),
                "an edited copy of template {template:?} was accepted: {event:?}"
            );
            if let ProcessedMessage::StagedCommit(staged) = event {
                // Merging a commit that validated must not panic.
                let _ = world.receiver.merge_staged_commit(staged);
            }
            *world = build();
        }
    }
});

//! Rejections and bounds of the wire decoder (RFC 9420 §2.1.2, §6, §13):
//! trailing bytes, bad length headers, unknown enum values, truncation at
//! every prefix, huge length claims, padding, selector-dependent fields.

use std::process::Command;
use std::time::{Duration, Instant};

use hsmls::error::CodecError;
use hsmls::internal::codec::vl::{read_vl_header, split_vl};
use hsmls::internal::codec::{
    Commit, FramedContentAuthData, GroupSecrets, HpkeCiphertexts, Mac, MlsMessage, MlsMessageBody,
    PrivateMessageContent, ProposalOrRef, PublicMessage, UpdatePathNode, Welcome,
};
use hsmls::wire::LeafIndex;
use hsmls::wire::{
    Capabilities, CipherSuite, ContentType, Credential, Decode, Encode, Extension, ExtensionType,
    KeyPackage, Proposal, ProtocolVersion, RatchetTree, Remove, Sender,
};
use hsmls_test_vectors::{load, unhex};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    mls_welcome: String,
    mls_group_info: String,
    mls_key_package: String,
    ratchet_tree: String,
    group_secrets: String,
    commit: String,
    public_message_application: String,
    public_message_proposal: String,
    public_message_commit: String,
    private_message: String,
}

fn cases() -> Vec<Case> {
    load("messages.json")
}

/// A case's seven `MLSMessage`s, decoded from hex.
fn mls_messages(c: &Case) -> Vec<Vec<u8>> {
    [
        &c.mls_welcome,
        &c.mls_group_info,
        &c.mls_key_package,
        &c.public_message_application,
        &c.public_message_proposal,
        &c.public_message_commit,
        &c.private_message,
    ]
    .into_iter()
    .map(|hex| unhex(hex))
    .collect()
}

fn key_package_message() -> Vec<u8> {
    unhex(&cases()[0].mls_key_package)
}

#[test]
fn trailing_bytes_are_rejected() {
    for c in cases().iter().take(20) {
        for hex in [
            &c.mls_welcome,
            &c.mls_group_info,
            &c.mls_key_package,
            &c.public_message_commit,
            &c.private_message,
        ] {
            let mut b = unhex(hex);
            assert!(MlsMessage::decode(&b).is_ok());
            b.push(0);
            assert_eq!(MlsMessage::decode(&b), Err(CodecError::TrailingData));
        }
    }
}

/// Rewrites the length header at `at` (which must hold a 1- or 2-byte
/// header) as a header of `size` bytes.
fn rewrite_header(msg: &[u8], at: usize, size: usize) -> Vec<u8> {
    let (len, rest) = read_vl_header(&msg[at..]).expect("header");
    let old = msg.len() - at - rest.len();
    let mut hdr = match size {
        4 => (0x8000_0000u32 | len as u32).to_be_bytes().to_vec(),
        8 => (0xc000_0000_0000_0000u64 | len as u64)
            .to_be_bytes()
            .to_vec(),
        2 => (0x4000u16 | len as u16).to_be_bytes().to_vec(),
        _ => unreachable!("test helper"),
    };
    let mut out = msg[..at].to_vec();
    out.append(&mut hdr);
    out.extend_from_slice(&msg[at + old..]);
    out
}

#[test]
fn non_minimal_and_over_long_headers_are_rejected() {
    // KeyPackage MLSMessage: version(2) wire_format(2) version(2) suite(2),
    // then the init_key header at offset 8.
    let msg = key_package_message();
    assert!(MlsMessage::decode(&msg).is_ok());
    let (len, _) = read_vl_header(&msg[8..]).expect("init_key header");
    assert!(len < 64, "test assumes a one-byte header");
    for size in [2, 4, 8] {
        let bad = rewrite_header(&msg, 8, size);
        assert_eq!(
            MlsMessage::decode(&bad),
            Err(CodecError::InvalidLengthHeader),
            "{size}-byte header"
        );
    }
    // The same for a vector of structures (Welcome.secrets at offset 6).
    let welcome = unhex(&cases()[0].mls_welcome);
    assert!(MlsMessage::decode(&welcome).is_ok());
    for size in [4, 8] {
        let bad = rewrite_header(&welcome, 6, size);
        assert_eq!(
            MlsMessage::decode(&bad),
            Err(CodecError::InvalidLengthHeader)
        );
    }
}

#[test]
fn tls_codec_mls_feature_checks_minimality() {
    // What the `mls` feature of tls_codec 0.4 does on its own: it rejects a
    // non-minimal header. (Its eight-byte-header and truncation paths
    // debug_assert, and its Vec<T> lets the last element run past the
    // vector; hsmls therefore decodes every vector with codec::vl.)
    use tls_codec::DeserializeBytes;
    let r = tls_codec::VLBytes::tls_deserialize_exact_bytes(&[0x40, 0x01, 0xaa]);
    assert_eq!(r, Err(tls_codec::Error::InvalidVectorLength));
    let r = tls_codec::VLBytes::tls_deserialize_exact_bytes(&[0x01, 0xaa]);
    assert_eq!(r.map(|v| v.as_slice().to_vec()), Ok(vec![0xaa]));
    // tls_codec's Vec<u16> accepts a 3-byte vector holding two u16 (4
    // bytes); ours rejects it.
    let overrun = [0x03, 0x00, 0x01, 0x00, 0x02];
    assert!(Vec::<u16>::tls_deserialize_exact_bytes(&overrun).is_ok());
    assert_eq!(
        hsmls::internal::codec::vl::vl_vec::tls_deserialize_bytes::<u16>(&overrun).map(|(v, _)| v),
        Err(tls_codec::Error::EndOfStream)
    );
}

/// Why hsmls does not use tls_codec's own vector decoders: in debug builds
/// tls_codec 0.4 panics (a `debug_assert!`) on an eight-byte header and on a
/// truncated `VLBytes`, where `codec::vl` returns an error.
#[cfg(debug_assertions)]
#[test]
fn tls_codec_debug_asserts_where_codec_vl_returns_errors() {
    use tls_codec::DeserializeBytes;
    let eight = [0xc0u8, 0, 0, 0, 0, 0, 0, 1, 0xaa];
    let r = std::panic::catch_unwind(|| tls_codec::VLBytes::tls_deserialize_bytes(&eight).is_err());
    assert!(r.is_err(), "tls_codec no longer panics on an 8-byte header");
    assert_eq!(
        read_vl_header(&eight),
        Err(tls_codec::Error::InvalidVectorLength)
    );
    let truncated = [0x05u8, 1, 2];
    let r =
        std::panic::catch_unwind(|| tls_codec::VLBytes::tls_deserialize_bytes(&truncated).is_err());
    assert!(
        r.is_err(),
        "tls_codec no longer panics on a truncated VLBytes"
    );
    assert_eq!(split_vl(&truncated), Err(tls_codec::Error::EndOfStream));
}

#[test]
fn unknown_version_and_wire_format_are_rejected() {
    let msg = key_package_message();
    for wf in [0u16, 6, 0x0a0a, 0xffff] {
        let mut bad = msg.clone();
        bad[2..4].copy_from_slice(&wf.to_be_bytes());
        assert_eq!(
            MlsMessage::decode(&bad),
            Err(CodecError::UnknownValue(wf.into()))
        );
    }
    for v in [0u16, 2] {
        let mut bad = msg.clone();
        bad[0..2].copy_from_slice(&v.to_be_bytes());
        assert_eq!(
            MlsMessage::decode(&bad),
            Err(CodecError::UnknownValue(v.into()))
        );
    }
}

#[test]
fn unknown_proposal_type_in_commit_is_rejected() {
    let commit = Commit {
        proposals: vec![ProposalOrRef::Proposal(Proposal::Remove(Remove {
            removed: LeafIndex(1),
        }))],
        path: None,
    };
    let good = commit.encode().expect("encode");
    // header(1) ProposalOrRefType(1) ProposalType(2) removed(4) optional(1)
    assert_eq!(good, [0x07, 0x01, 0x00, 0x03, 0, 0, 0, 1, 0x00]);
    assert_eq!(Commit::decode(&good), Ok(commit));
    for t in [0u16, 8, 0x0a0a, 0xffff] {
        let mut bad = good.clone();
        bad[2..4].copy_from_slice(&t.to_be_bytes());
        assert_eq!(
            Commit::decode(&bad),
            Err(CodecError::UnknownValue(t.into()))
        );
    }
    // ProposalOrRefType reserved(0) and unknown(3).
    for t in [0u8, 3] {
        let mut bad = good.clone();
        bad[1] = t;
        assert_eq!(
            Commit::decode(&bad),
            Err(CodecError::UnknownValue(t.into()))
        );
    }
    // optional<UpdatePath> flag other than 0 or 1.
    let mut bad = good.clone();
    bad[8] = 2;
    assert!(matches!(
        Commit::decode(&bad),
        Err(CodecError::Malformed(_))
    ));
}

#[test]
fn unknown_values_in_closed_enums_are_rejected() {
    let c = &cases()[0];
    // public_message_commit: version(2) wire_format(2) group_id<V> epoch(8)
    // sender_type(1) ...
    let msg = unhex(&c.public_message_commit);
    let rest = split_vl(&msg[4..]).expect("group_id").1;
    let sender_at = msg.len() - rest.len() + 8;
    for st in [0u8, 5, 0xff] {
        let mut bad = msg.clone();
        bad[sender_at] = st;
        assert_eq!(
            MlsMessage::decode(&bad),
            Err(CodecError::UnknownValue(st.into())),
            "sender type {st}"
        );
    }
    // private_message: version wire_format group_id<V> epoch(8) content_type(1)
    let msg = unhex(&c.private_message);
    let rest = split_vl(&msg[4..]).expect("group_id").1;
    let ct_at = msg.len() - rest.len() + 8;
    assert!((1..=3).contains(&msg[ct_at]), "content type at {ct_at}");
    for ct in [0u8, 4] {
        let mut bad = msg.clone();
        bad[ct_at] = ct;
        assert_eq!(
            MlsMessage::decode(&bad),
            Err(CodecError::UnknownValue(ct.into()))
        );
    }
}

#[test]
fn credentials_and_registries() {
    // Unknown credential type: its body cannot be delimited and RFC 9420
    // §13.5 rejects it.
    let basic = Credential::Basic(b"alice".to_vec());
    let mut b = basic.encode().expect("encode");
    assert_eq!(Credential::decode(&b), Ok(basic));
    b[0..2].copy_from_slice(&0x0a0au16.to_be_bytes());
    assert_eq!(
        Credential::decode(&b),
        Err(CodecError::UnknownValue(0x0a0a))
    );

    // Open registries keep unknown and GREASE values.
    let caps = Capabilities {
        versions: vec![ProtocolVersion::MLS10, ProtocolVersion(0x0a0a)],
        cipher_suites: vec![CipherSuite(2), CipherSuite(0x1a1a)],
        extensions: vec![ExtensionType(0x2a2a)],
        proposals: vec![hsmls::wire::ProposalType(0x3a3a)],
        credentials: vec![hsmls::wire::CredentialType(0x4a4a)],
    };
    let enc = caps.encode().expect("encode");
    assert_eq!(Capabilities::decode(&enc), Ok(caps));
    let ext = Extension {
        extension_type: ExtensionType(0xfafa),
        extension_data: vec![1, 2, 3],
    };
    let enc = ext.encode().expect("encode");
    assert_eq!(Extension::decode(&enc), Ok(ext));
}

#[test]
fn every_truncation_is_an_error() {
    // Every proper prefix of real messages must fail to decode (and never
    // panic); the full message decodes.
    for c in cases().iter().take(10) {
        for b in mls_messages(c) {
            assert!(MlsMessage::decode(&b).is_ok());
            for n in 0..b.len() {
                let r = MlsMessage::decode(&b[..n]);
                assert!(
                    matches!(r, Err(CodecError::Truncated)),
                    "prefix of {n}/{} bytes: {:?}",
                    b.len(),
                    r.err()
                );
            }
        }
        for (hex, f) in [
            (
                &c.ratchet_tree,
                (|b| matches!(RatchetTree::decode(b), Err(CodecError::Truncated)))
                    as fn(&[u8]) -> bool,
            ),
            (&c.group_secrets, |b| {
                matches!(GroupSecrets::decode(b), Err(CodecError::Truncated))
            }),
            (&c.commit, |b| {
                matches!(Commit::decode(b), Err(CodecError::Truncated))
            }),
        ] {
            let b = unhex(hex);
            for n in 0..b.len() {
                assert!(f(&b[..n]), "prefix of {n}/{} bytes decoded", b.len());
            }
        }
    }
}

/// Messages whose first vector header claims 2^30 - 1 bytes, followed by a
/// few bytes.
fn huge_claims() -> Vec<Vec<u8>> {
    let huge = [0xbf, 0xff, 0xff, 0xff];
    let mut out = Vec::new();
    // KeyPackage: init_key claims 1 GiB.
    let mut kp = vec![0, 1, 0, 5, 0, 1, 0, 2];
    kp.extend_from_slice(&huge);
    kp.extend_from_slice(&[0xaa; 16]);
    out.push(kp);
    // Welcome: the secrets vector (of structures) claims 1 GiB.
    let mut w = vec![0, 1, 0, 3, 0, 2];
    w.extend_from_slice(&huge);
    w.extend_from_slice(&[0x01; 16]);
    out.push(w);
    // PrivateMessage: group_id claims 1 GiB.
    let mut p = vec![0, 1, 0, 2];
    p.extend_from_slice(&huge);
    p.extend_from_slice(&[0; 16]);
    out.push(p);
    out
}

#[test]
fn huge_length_claims_fail_fast() {
    let start = Instant::now();
    for m in huge_claims() {
        assert_eq!(MlsMessage::decode(&m), Err(CodecError::Truncated));
    }
    let mut t = vec![0xbf, 0xff, 0xff, 0xff];
    t.extend_from_slice(&[1; 8]);
    assert_eq!(RatchetTree::decode(&t), Err(CodecError::Truncated));
    assert!(start.elapsed() < Duration::from_secs(1));
    if std::env::var_os("HSMLS_ALLOC_CONTROL").is_some() {
        // Control for the memory-capped run below: a 1 GiB allocation must
        // fail under the cap.
        let v: Vec<u8> = Vec::with_capacity(1 << 30);
        assert!(v.capacity() >= 1 << 30);
    }
}

/// Runs `huge_length_claims_fail_fast` in a child process whose address
/// space is capped at 512 MiB: a decoder that allocated the claimed 1 GiB
/// would abort there. The control run shows the cap is in force.
#[test]
fn huge_length_claims_under_memory_cap() {
    let exe = std::env::current_exe().expect("test binary");
    let run = |control: bool| {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("ulimit -v 524288 && exec \"$0\" --exact huge_length_claims_fail_fast --test-threads=1 -q")
            .arg(&exe);
        if control {
            cmd.env("HSMLS_ALLOC_CONTROL", "1");
        } else {
            cmd.env_remove("HSMLS_ALLOC_CONTROL");
        }
        cmd.output().expect("run child")
    };
    let ok = run(false);
    assert!(
        ok.status.success(),
        "decoding under a 512 MiB cap failed: {}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("1 passed"));
    let control = run(true);
    assert!(!control.status.success(), "the memory cap is not in force");
}

#[test]
fn private_message_content_padding() {
    let c = &cases()[0];
    let m = MlsMessage::decode(&unhex(&c.public_message_commit)).expect("decode");
    let MlsMessageBody::PublicMessage(pm) = m.body else {
        panic!("not a public message");
    };
    let pmc = PrivateMessageContent {
        body: pm.content.body.clone(),
        auth: pm.auth.clone(),
        padding_len: 300,
    };
    let enc = pmc.encode().expect("encode");
    let unpadded = PrivateMessageContent {
        padding_len: 0,
        ..pmc.clone()
    };
    assert_eq!(enc.len(), unpadded.encode().expect("encode").len() + 300);
    assert!(enc[enc.len() - 300..].iter().all(|&b| b == 0));
    assert_eq!(
        PrivateMessageContent::decode(ContentType::Commit, &enc),
        Ok(pmc.clone())
    );
    // Non-zero padding is rejected.
    let mut bad = enc.clone();
    let last = bad.len() - 1;
    bad[last] = 1;
    assert!(matches!(
        PrivateMessageContent::decode(ContentType::Commit, &bad),
        Err(CodecError::Malformed(_))
    ));
    // Without padding.
    let enc = unpadded.encode().expect("encode");
    assert_eq!(
        PrivateMessageContent::decode(ContentType::Commit, &enc),
        Ok(unpadded)
    );
}

#[test]
fn selector_dependent_fields_are_checked_on_encode() {
    let c = &cases()[0];
    let m = MlsMessage::decode(&unhex(&c.public_message_commit)).expect("decode");
    let MlsMessageBody::PublicMessage(pm) = m.body else {
        panic!("not a public message");
    };
    assert!(pm.auth.confirmation_tag.is_some());
    let member = matches!(pm.content.sender, Sender::Member(_));
    assert_eq!(pm.membership_tag.is_some(), member);
    // A commit without confirmation tag cannot be encoded.
    let bad = PublicMessage {
        auth: FramedContentAuthData {
            signature: pm.auth.signature.clone(),
            confirmation_tag: None,
        },
        ..pm.clone()
    };
    assert!(matches!(bad.encode(), Err(CodecError::Encoding(_))));
    // A membership tag on a non-member sender cannot be encoded.
    let mut bad = pm.clone();
    bad.content.sender = Sender::NewMemberCommit;
    bad.membership_tag = Some(Mac(vec![0; 32]));
    assert!(matches!(bad.encode(), Err(CodecError::Encoding(_))));
    // FramedContentTBS needs a GroupContext exactly for member senders.
    let r = pm
        .content
        .to_be_signed(hsmls::wire::WireFormat::PUBLIC_MESSAGE, None);
    if member {
        assert!(matches!(r, Err(CodecError::Encoding(_))), "{r:?}");
    } else {
        assert!(r.is_ok(), "{r:?}");
    }
}

#[test]
fn decoded_types_match_their_fields() {
    let c = &cases()[0];
    let kp = MlsMessage::decode(&unhex(&c.mls_key_package)).expect("decode");
    let MlsMessageBody::KeyPackage(kp) = kp.body else {
        panic!("not a key package");
    };
    // A KeyPackage alone (without MLSMessage framing) is the tail.
    let full = unhex(&c.mls_key_package);
    assert_eq!(KeyPackage::decode(&full[4..]), Ok(kp));
    let w = MlsMessage::decode(&unhex(&c.mls_welcome)).expect("decode");
    let MlsMessageBody::Welcome(w) = w.body else {
        panic!("not a welcome");
    };
    assert_eq!(Welcome::decode(&unhex(&c.mls_welcome)[4..]), Ok(w));
}

/// Every vector field of the wire structures must be decoded by codec::vl
/// (bounded, exact sub-slice), never by tls_codec's own `Vec<T>` impl: each
/// `Vec<` field in src/codec must be annotated `#[tls_codec(with = ...)]`.
#[test]
fn every_vector_field_uses_the_bounded_decoder() {
    // Resolved at run time (cargo runs tests in the package directory), so a
    // test binary reused from a shared target directory reads this clone.
    let dir = std::path::Path::new("src/codec");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).expect("codec dir") {
        let path = entry.expect("entry").path();
        if path.file_name().and_then(|n| n.to_str()) == Some("vl.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            let is_field = (t.starts_with("pub ") && t.contains(": Vec<") && t.ends_with(','))
                || t.contains("(pub Vec<")
                || (t.contains("(#[tls_codec(") && t.contains("Vec<"));
            if !is_field {
                continue;
            }
            let attributed = t.contains("#[tls_codec(with")
                || lines[..i]
                    .iter()
                    .rev()
                    .take_while(|l| l.trim().starts_with("#[") || l.trim().starts_with("///"))
                    .any(|l| l.contains("#[tls_codec(with"));
            // Fields of hand-written (non-derived) types are encoded by hand
            // with vl_bytes/vl_vec and are listed here.
            let hand_written = ["pub signature: Vec<u8>,"];
            assert!(
                attributed || hand_written.contains(&t),
                "{}:{}: vector field without a bounded decoder: {t}",
                path.display(),
                i + 1
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "found only {checked} vector fields");
}

/// `UpdatePathNode.encrypted_path_secret` is kept encoded
/// (`HpkeCiphertexts`): decoding still checks every element's framing
/// inside the list, and `get` returns the same ciphertexts.
#[test]
fn encrypted_path_secrets_are_framed_like_a_vector() {
    // encryption_key<V> = aa bb; encrypted_path_secret<V> holding
    // {kem_output = 11, ciphertext = 22 33} and {kem_output = "", ciphertext = ""}.
    let good = [
        0x02, 0xaa, 0xbb, 0x07, 0x01, 0x11, 0x02, 0x22, 0x33, 0x00, 0x00,
    ];
    let node = UpdatePathNode::decode(&good).unwrap();
    let list = &node.encrypted_path_secret;
    assert_eq!(list.len(), 2);
    let first = list.get(0).unwrap();
    assert_eq!(
        (first.kem_output.as_slice(), first.ciphertext.as_slice()),
        (&[0x11][..], &[0x22, 0x33][..])
    );
    let second = list.get(1).unwrap();
    assert!(second.kem_output.is_empty() && second.ciphertext.is_empty());
    assert!(list.get(2).is_none());
    assert_eq!(node.encode().unwrap(), good);
    let rebuilt: HpkeCiphertexts = vec![first, second].try_into().unwrap();
    assert_eq!(&rebuilt, list);

    // The second element's ciphertext runs past the list's end (the list
    // declares 6 bytes; the byte after it would complete the element).
    let past_end = [
        0x02, 0xaa, 0xbb, 0x06, 0x01, 0x11, 0x02, 0x22, 0x33, 0x00, 0x00,
    ];
    assert_eq!(
        UpdatePathNode::decode(&past_end),
        Err(CodecError::Truncated)
    );
    // An element with a kem_output only.
    let half = [0x02, 0xaa, 0xbb, 0x02, 0x01, 0x11];
    assert_eq!(UpdatePathNode::decode(&half), Err(CodecError::Truncated));
    // A non-minimal header inside an element.
    let non_minimal = [0x02, 0xaa, 0xbb, 0x04, 0x40, 0x01, 0x11, 0x00];
    assert_eq!(
        UpdatePathNode::decode(&non_minimal),
        Err(CodecError::InvalidLengthHeader)
    );
    // A list longer than the input.
    let truncated = [0x02, 0xaa, 0xbb, 0x3f, 0x00, 0x00];
    assert_eq!(
        UpdatePathNode::decode(&truncated),
        Err(CodecError::Truncated)
    );
}

/// A member hashes a received PublicMessage as it came (the membership
/// tag, the signature and the confirmed transcript hash are computed over
/// the received `version ‖ wire_format ‖ FramedContent`, not over an
/// encoding of what was decoded: `message_protection`), which is the
/// encoding everyone else hashes only if the decoder accepts nothing but
/// canonical encodings. Every byte of real messages changed (five ways),
/// removed, doubled, or preceded by 0x40 (a one-byte vector header made a
/// non-minimal two-byte one): whatever still decodes encodes back to
/// exactly the bytes it was decoded from.
#[test]
fn whatever_decodes_encodes_back_to_the_same_bytes() {
    let mut accepted = 0usize;
    let mut tried = 0usize;
    for c in cases().iter().take(6) {
        for b in mls_messages(c) {
            let mut check = |m: Vec<u8>| {
                tried += 1;
                if let Ok(decoded) = MlsMessage::decode(&m) {
                    accepted += 1;
                    assert_eq!(
                        decoded.encode().unwrap(),
                        m,
                        "a non-canonical encoding was accepted"
                    );
                }
            };
            for at in 0..b.len() {
                for flip in [0x01u8, 0x02, 0x40, 0x80, 0xff] {
                    let mut m = b.clone();
                    m[at] ^= flip;
                    check(m);
                }
                let mut m = b.clone();
                m.remove(at);
                check(m);
                let mut m = b.clone();
                m.insert(at, b[at]);
                check(m);
                let mut m = b.clone();
                m.insert(at, 0x40);
                check(m);
            }
        }
    }
    // Most changes to content bytes keep the message decodable: the check
    // above ran on them.
    assert!(accepted > tried / 10, "{accepted} of {tried} decoded");
}

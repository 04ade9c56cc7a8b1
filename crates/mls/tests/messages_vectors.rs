//! messages.json: all 300 cases, every field decoded with its type and
//! re-encoded to identical bytes (RFC 9420 wire format).

use std::fmt::Debug;

use hsmls::internal::codec::{Commit, GroupSecrets, MlsMessage, MlsMessageBody, vl};
use hsmls::wire::{
    Add, ContentType, Decode, Encode, ExternalInit, GroupContextExtensions, LeafNodeSource, Node,
    PreSharedKey, RatchetTree, ReInit, Remove, Update, WireFormat,
};
use hsmls_test_vectors::{CaseCounter, load, unhex};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    mls_welcome: String,
    mls_group_info: String,
    mls_key_package: String,
    ratchet_tree: String,
    group_secrets: String,
    add_proposal: String,
    update_proposal: String,
    remove_proposal: String,
    pre_shared_key_proposal: String,
    re_init_proposal: String,
    external_init_proposal: String,
    group_context_extensions_proposal: String,
    commit: String,
    public_message_application: String,
    public_message_proposal: String,
    public_message_commit: String,
    private_message: String,
}

/// Decodes `hex` as `T`, checks it re-encodes to the same bytes, and counts
/// the field.
fn round_trip<T: Decode + Encode + Debug>(fields: &mut usize, name: &str, hex: &str) -> T {
    let bytes = unhex(hex);
    let value = T::decode(&bytes).unwrap_or_else(|e| panic!("{name}: decode failed: {e}"));
    let again = value
        .encode()
        .unwrap_or_else(|e| panic!("{name}: encode failed: {e}"));
    assert_eq!(again, bytes, "{name}: re-encoding differs");
    *fields += 1;
    value
}

fn vl(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    vl::vl_bytes::tls_serialize(bytes, &mut out).expect("encodable");
    out
}

#[test]
fn messages_vectors() {
    let cases: Vec<Case> = load("messages.json");
    let mut counter = CaseCounter::new("messages.json");
    let mut fields = 0usize;
    for (i, c) in cases.iter().enumerate() {
        let f = &mut fields;
        let welcome: MlsMessage = round_trip(f, "mls_welcome", &c.mls_welcome);
        assert_eq!(welcome.wire_format(), WireFormat::WELCOME, "case {i}");

        let gi: MlsMessage = round_trip(f, "mls_group_info", &c.mls_group_info);
        let MlsMessageBody::GroupInfo(group_info) = &gi.body else {
            panic!("case {i}: mls_group_info is not a GroupInfo");
        };
        // GroupInfoTBS followed by the signature is the GroupInfo.
        let mut tbs = group_info.to_be_signed().expect("tbs");
        tbs.extend(vl(&group_info.signature));
        assert_eq!(
            tbs,
            group_info.encode().expect("encode"),
            "case {i}: GroupInfoTBS"
        );

        let kp: MlsMessage = round_trip(f, "mls_key_package", &c.mls_key_package);
        let MlsMessageBody::KeyPackage(key_package) = &kp.body else {
            panic!("case {i}: mls_key_package is not a KeyPackage");
        };
        let mut tbs = key_package.to_be_signed().expect("tbs");
        tbs.extend(vl(&key_package.signature));
        assert_eq!(
            tbs,
            key_package.encode().expect("encode"),
            "case {i}: KeyPackageTBS"
        );
        let leaf = &key_package.leaf_node;
        assert!(matches!(
            leaf.leaf_node_source,
            LeafNodeSource::KeyPackage(_)
        ));
        let mut tbs = leaf.to_be_signed(None).expect("tbs");
        tbs.extend(vl(&leaf.signature));
        assert_eq!(tbs, leaf.encode().expect("encode"), "case {i}: LeafNodeTBS");

        let tree: RatchetTree = round_trip(f, "ratchet_tree", &c.ratchet_tree);
        // A ratchet tree's first node, when present, is a leaf.
        if let Some(Some(first)) = tree.0.first() {
            assert!(
                matches!(first, Node::Leaf(_)),
                "case {i}: node 0 is not a leaf"
            );
        }

        let _: GroupSecrets = round_trip(f, "group_secrets", &c.group_secrets);
        let _: Add = round_trip(f, "add_proposal", &c.add_proposal);
        let _: Update = round_trip(f, "update_proposal", &c.update_proposal);
        let _: Remove = round_trip(f, "remove_proposal", &c.remove_proposal);
        let _: PreSharedKey = round_trip(f, "pre_shared_key_proposal", &c.pre_shared_key_proposal);
        let _: ReInit = round_trip(f, "re_init_proposal", &c.re_init_proposal);
        let _: ExternalInit = round_trip(f, "external_init_proposal", &c.external_init_proposal);
        let _: GroupContextExtensions = round_trip(
            f,
            "group_context_extensions_proposal",
            &c.group_context_extensions_proposal,
        );
        let _: Commit = round_trip(f, "commit", &c.commit);

        for (name, hex, want) in [
            (
                "public_message_application",
                &c.public_message_application,
                ContentType::Application,
            ),
            (
                "public_message_proposal",
                &c.public_message_proposal,
                ContentType::Proposal,
            ),
            (
                "public_message_commit",
                &c.public_message_commit,
                ContentType::Commit,
            ),
        ] {
            let m: MlsMessage = round_trip(f, name, hex);
            let MlsMessageBody::PublicMessage(pm) = &m.body else {
                panic!("case {i}: {name} is not a PublicMessage");
            };
            assert_eq!(pm.content.content_type(), want, "case {i}: {name}");
        }

        let m: MlsMessage = round_trip(f, "private_message", &c.private_message);
        assert_eq!(m.wire_format(), WireFormat::PRIVATE_MESSAGE, "case {i}");
        counter.ran();
    }
    let ran = counter.finish(Some(300));
    println!("messages.json: {fields} fields decoded and re-encoded");
    assert_eq!(fields, ran * 17, "every field of every case");
}

/// Decodes `e`'s data as `T`, re-encodes it and checks the extension is
/// unchanged.
fn payload_round_trip<T: hsmls::wire::ExtensionData + Debug>(e: &hsmls::wire::Extension) {
    let data = e
        .data_as::<T>()
        .expect("type matches")
        .unwrap_or_else(|err| panic!("{:?} data: {err}", e.extension_type));
    assert_eq!(
        &hsmls::wire::Extension::from_data(&data).expect("encode"),
        e
    );
}

/// The extensions of the GroupInfos and KeyPackages in messages.json: each
/// of a type defined by RFC 9420 decodes as its payload type and re-encodes
/// identically. The vectors carry ratchet_tree, required_capabilities and
/// external_pub in every GroupInfo.
#[test]
fn extension_payloads_in_vectors() {
    use hsmls::wire::{
        ApplicationId, Extension, ExtensionType, ExternalPub, ExternalSenders, RequiredCapabilities,
    };
    let cases: Vec<Case> = load("messages.json");
    let mut counter = CaseCounter::new("messages.json (extensions)");
    let mut known = std::collections::BTreeMap::<u16, usize>::new();
    let mut check = |exts: &[Extension]| {
        for e in exts {
            match e.extension_type {
                ExtensionType::APPLICATION_ID => payload_round_trip::<ApplicationId>(e),
                ExtensionType::RATCHET_TREE => payload_round_trip::<RatchetTree>(e),
                ExtensionType::REQUIRED_CAPABILITIES => {
                    payload_round_trip::<RequiredCapabilities>(e)
                }
                ExtensionType::EXTERNAL_PUB => payload_round_trip::<ExternalPub>(e),
                ExtensionType::EXTERNAL_SENDERS => payload_round_trip::<ExternalSenders>(e),
                _ => continue,
            }
            *known.entry(e.extension_type.0).or_default() += 1;
        }
    };
    for c in &cases {
        let gi = MlsMessage::decode(&unhex(&c.mls_group_info)).expect("decode");
        let MlsMessageBody::GroupInfo(gi) = &gi.body else {
            panic!("not a GroupInfo");
        };
        check(&gi.extensions);
        check(&gi.group_context.extensions);
        let kp = MlsMessage::decode(&unhex(&c.mls_key_package)).expect("decode");
        let MlsMessageBody::KeyPackage(kp) = &kp.body else {
            panic!("not a KeyPackage");
        };
        check(&kp.extensions);
        check(&kp.leaf_node.extensions);
        counter.ran();
    }
    counter.finish(Some(300));
    println!("known extension payloads decoded: {known:?}");
    for t in [2u16, 3, 4] {
        assert_eq!(known.get(&t), Some(&300), "extension type {t}");
    }
}

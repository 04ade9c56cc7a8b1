//! deserialization.json: variable-length vector headers (RFC 9420 §2.1.2),
//! and key-schedule.json's GroupContext encodings.

use hsmls::internal::codec::vl::{read_vl_header, write_vl_header};
use hsmls::wire::{CipherSuite, Decode, Encode, GroupContext};
use hsmls_test_vectors::{CaseCounter, hex_bytes, load};
use serde::Deserialize;

#[derive(Deserialize)]
struct HeaderCase {
    #[serde(deserialize_with = "hex_bytes")]
    vlbytes_header: Vec<u8>,
    length: usize,
}

#[test]
fn deserialization_vectors() {
    let cases: Vec<HeaderCase> = load("deserialization.json");
    let mut counter = CaseCounter::new("deserialization.json");
    for c in &cases {
        let (len, rest) = read_vl_header(&c.vlbytes_header)
            .unwrap_or_else(|e| panic!("{:02x?}: {e}", c.vlbytes_header));
        assert_eq!(len, c.length);
        assert!(rest.is_empty(), "header fully consumed");
        // The vector's header is the minimal one: encoding the length gives
        // the same bytes.
        let mut enc = Vec::new();
        write_vl_header(c.length, &mut enc).expect("encodable");
        assert_eq!(enc, c.vlbytes_header, "minimal header for {}", c.length);
        counter.ran();
    }
    counter.finish(Some(14));
}

#[derive(Deserialize)]
struct KeyScheduleCase {
    cipher_suite: u16,
    #[serde(deserialize_with = "hex_bytes")]
    group_id: Vec<u8>,
    epochs: Vec<Epoch>,
}

#[derive(Deserialize)]
struct Epoch {
    #[serde(deserialize_with = "hex_bytes")]
    group_context: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    tree_hash: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    confirmed_transcript_hash: Vec<u8>,
}

#[test]
fn key_schedule_group_contexts() {
    let cases: Vec<KeyScheduleCase> = load("key-schedule.json");
    let mut counter = CaseCounter::new("key-schedule.json");
    let mut contexts = 0;
    let mut suite2 = 0;
    for c in &cases {
        for (n, e) in c.epochs.iter().enumerate() {
            let ctx = GroupContext::decode(&e.group_context).expect("GroupContext decodes");
            assert_eq!(ctx.encode().expect("encode"), e.group_context);
            assert_eq!(ctx.cipher_suite, CipherSuite(c.cipher_suite));
            assert_eq!(ctx.group_id, c.group_id);
            assert_eq!(ctx.epoch, n as u64);
            assert_eq!(ctx.tree_hash, e.tree_hash);
            assert_eq!(ctx.confirmed_transcript_hash, e.confirmed_transcript_hash);
            contexts += 1;
        }
        if c.cipher_suite == 2 {
            suite2 += 1;
        }
        counter.ran();
    }
    println!("key-schedule.json: {contexts} GroupContexts decoded and re-encoded");
    assert_eq!(suite2, 1, "one suite-2 case");
    counter.finish(Some(7));
}

//! Untrusted input to the member-side code (credentials from other
//! members, notes and proofs from the AS) gets a typed error, never a
//! panic; Merkle proofs verify for random tree sizes and fail when moved.

use hsmls::wire::{Certificate, Credential, SignaturePublicKey};
use hsmls_credentials::tlog::{self, Checkpoint, Hash, LogError, LogKey, NodeId};
use hsmls_credentials::{LogEntry, ValidationError, X509CredentialValidator};
use proptest::prelude::*;

fn log_key() -> LogKey {
    let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    LogKey::new(
        "hsmls.test/log",
        sk.verifying_key().to_encoded_point(false).as_bytes(),
    )
    .unwrap()
}

/// The hash of the complete subtree `id` of a tree whose leaf i is
/// `leaf_hash(i as 8 bytes)`.
fn node(id: NodeId) -> Hash {
    if id.level == 0 {
        return tlog::leaf_hash(&id.index.to_be_bytes());
    }
    let l = node(NodeId {
        level: id.level - 1,
        index: id.index * 2,
    });
    let r = node(NodeId {
        level: id.level - 1,
        index: id.index * 2 + 1,
    });
    tlog::node_hash(&l, &r)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_certificates_are_refused_with_a_reason(
        certs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..4),
        key in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let v = X509CredentialValidator::new(&[]).unwrap();
        let cred = Credential::X509(certs.into_iter().map(|c| Certificate { cert_data: c }).collect());
        let e = v.check(&cred, &SignaturePublicKey(key), None).unwrap_err();
        prop_assert!(matches!(
            e,
            ValidationError::Malformed(_) | ValidationError::NoIdentity | ValidationError::KeyMismatch
        ), "{e:?}");
    }

    #[test]
    fn random_notes_and_entries_do_not_panic(text in ".{0,300}", bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let k = log_key();
        prop_assert!(k.verify_note(&text).is_err());
        let _ = Checkpoint::parse(&text);
        let _ = LogEntry::decode(&bytes);
        prop_assert!(X509CredentialValidator::new(&[]).unwrap().set_crl(&bytes).is_err());
    }

    #[test]
    fn proofs_verify_at_random_sizes(size in 1u64..1500, index_seed in any::<u64>(), old_seed in any::<u64>()) {
        let index = index_seed % size;
        let root = tlog::root(size, &mut |id| Ok::<_, ()>(node(id))).unwrap();
        let proof = tlog::inclusion_proof(index, size, &mut |id| Ok::<_, ()>(node(id))).unwrap();
        let leaf = tlog::leaf_hash(&index.to_be_bytes());
        prop_assert_eq!(tlog::verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
        if size > 1 {
            let other = (index + 1) % size;
            prop_assert_eq!(
                tlog::verify_inclusion(&leaf, other, size, &proof, &root),
                Err(LogError::InclusionProof)
            );
        }
        let old = 1 + old_seed % size;
        let old_root = tlog::root(old, &mut |id| Ok::<_, ()>(node(id))).unwrap();
        let c = tlog::consistency_proof(old, size, &mut |id| Ok::<_, ()>(node(id))).unwrap();
        prop_assert_eq!(tlog::verify_consistency(old, size, &old_root, &root, &c), Ok(()));
        if old < size {
            // Another old root: the old root with one bit flipped (a leaf hash
            // could be the old root itself, when the old tree is that leaf).
            let mut wrong_old_root = old_root;
            wrong_old_root[0] ^= 1;
            prop_assert_eq!(
                tlog::verify_consistency(old, size, &wrong_old_root, &root, &c),
                Err(LogError::ConsistencyProof)
            );
        }
    }
}

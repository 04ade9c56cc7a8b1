//! The storage conformance suite: the same checks of the `Store` contract
//! on SQLite and on PostgreSQL (a fresh file or schema per test).

mod common;

use std::sync::Arc;

use hsmls_as::store::{IssueOutcome, NewCert, OrderRow, RevokeOutcome};
use hsmls_as::{Store, StoreError};
use hsmls_credentials::tlog::{self, Hash, NodeId};

fn h(i: u8) -> Hash {
    [i; 32]
}

fn cert<'a>(serial: &'a str, der: &'a [u8], entry: &'a [u8]) -> NewCert<'a> {
    NewCert {
        serial,
        identity: "im:x@hsmls.test",
        der,
        cert_hash: tlog::leaf_hash(der),
        not_after: 2_000_000_000,
        entry,
    }
}

/// The log root computed from the store's nodes.
async fn root<S: Store>(store: &S, size: u64) -> Hash {
    let ids = tlog::nodes_read(|f| {
        let mut f = f;
        let _ = tlog::root(size, &mut f);
    });
    let hashes = store.log_nodes(&ids).await.unwrap();
    let map: std::collections::HashMap<NodeId, Hash> = ids.into_iter().zip(hashes).collect();
    tlog::root(size, &mut |id| map.get(&id).copied().ok_or(())).unwrap()
}

async fn tokens_orders_and_certificates<S: Store>(store: S) {
    store
        .insert_token(&h(1), "im:a@hsmls.test", 1000)
        .await
        .unwrap();
    let t = store.token(&h(1)).await.unwrap().unwrap();
    assert_eq!(
        (t.identity.as_str(), t.expires, t.used),
        ("im:a@hsmls.test", 1000, false)
    );
    assert_eq!(store.token(&h(2)).await.unwrap(), None);
    // A second token with the same hash is refused by the database.
    assert!(matches!(
        store.insert_token(&h(1), "im:b@hsmls.test", 1).await,
        Err(StoreError::Database(_))
    ));

    let order = OrderRow {
        id: "o1".into(),
        identity: "im:a@hsmls.test".into(),
        token_hash: h(1),
        expires: 1000,
        serial: None,
    };
    store.insert_order(&order).await.unwrap();
    assert_eq!(store.order("o1").await.unwrap(), Some(order.clone()));
    assert_eq!(store.order("o2").await.unwrap(), None);

    // An expired token: nothing recorded.
    let c1 = cert("01aa", b"der one", b"entry one");
    assert_eq!(
        store.issue_for_order("o1", &h(1), 1000, &c1).await.unwrap(),
        IssueOutcome::TokenExpired
    );
    assert_eq!(store.log_size().await.unwrap(), 0);
    assert_eq!(store.certificate("01aa").await.unwrap(), None);
    // In time: recorded, logged at index 0, the order names the serial.
    assert_eq!(
        store.issue_for_order("o1", &h(1), 999, &c1).await.unwrap(),
        IssueOutcome::Issued(0)
    );
    assert_eq!(
        store.order("o1").await.unwrap().unwrap().serial.as_deref(),
        Some("01aa")
    );
    assert!(store.token(&h(1)).await.unwrap().unwrap().used);
    // Used: nothing more recorded.
    let c2 = cert("02bb", b"der two", b"entry two");
    assert_eq!(
        store.issue_for_order("o1", &h(1), 10, &c2).await.unwrap(),
        IssueOutcome::TokenUsed
    );
    assert_eq!(store.log_size().await.unwrap(), 1);
    assert_eq!(store.certificate("02bb").await.unwrap(), None);
    // An unknown token counts as used (nothing to claim).
    assert_eq!(
        store.issue_for_order("o1", &h(9), 10, &c2).await.unwrap(),
        IssueOutcome::TokenUsed
    );

    let row = store.certificate("01aa").await.unwrap().unwrap();
    assert_eq!(
        (row.der.as_slice(), row.log_index, row.revoked_at),
        (&b"der one"[..], 0, None)
    );
    assert_eq!(
        store
            .certificate_by_hash(&tlog::leaf_hash(b"der one"))
            .await
            .unwrap(),
        Some(row)
    );
    assert_eq!(
        store
            .log_index_of(&tlog::leaf_hash(b"der one"))
            .await
            .unwrap(),
        Some(0)
    );
    assert_eq!(
        store.log_entry(0).await.unwrap().as_deref(),
        Some(&b"entry one"[..])
    );
    assert_eq!(store.log_entry(1).await.unwrap(), None);

    // Revocation: once, logged; unknown serials are reported.
    assert_eq!(
        store.revoke("01aa", 77, b"revoked one").await.unwrap(),
        RevokeOutcome::Revoked(1)
    );
    assert_eq!(
        store.revoke("01aa", 78, b"again").await.unwrap(),
        RevokeOutcome::AlreadyRevoked
    );
    assert_eq!(
        store.revoke("ffff", 78, b"none").await.unwrap(),
        RevokeOutcome::Unknown
    );
    assert_eq!(store.log_size().await.unwrap(), 2);
    assert_eq!(
        store.revoked().await.unwrap(),
        vec![("01aa".to_owned(), 77)]
    );
    assert_eq!(
        store.certificate("01aa").await.unwrap().unwrap().revoked_at,
        Some(77)
    );

    // CRLs are numbered from 1, the latest is served.
    assert_eq!(store.next_crl_number().await.unwrap(), 1);
    assert_eq!(store.latest_crl().await.unwrap(), None);
    store.store_crl(1, b"crl 1").await.unwrap();
    store.store_crl(2, b"crl 2").await.unwrap();
    assert!(matches!(
        store.store_crl(2, b"crl 2 again").await,
        Err(StoreError::Database(_))
    ));
    assert_eq!(store.next_crl_number().await.unwrap(), 3);
    assert_eq!(
        store.latest_crl().await.unwrap().as_deref(),
        Some(&b"crl 2"[..])
    );
}
on_both_stores!(tokens_orders_and_certificates);

/// The stored tree equals RFC 9162's, at every size, and answers proofs.
async fn the_log_is_an_rfc9162_tree<S: Store>(store: S) {
    let entries: Vec<Vec<u8>> = (0..21u32)
        .map(|i| format!("entry {i}").into_bytes())
        .collect();
    for (i, e) in entries.iter().enumerate() {
        let serial = format!("{i:04x}");
        let der = format!("der {i}").into_bytes();
        assert_eq!(
            store.issue(&cert(&serial, &der, e)).await.unwrap(),
            i as u64
        );
        let size = i as u64 + 1;
        let expected = tlog::root(size, &mut |id: NodeId| -> Result<Hash, ()> {
            // The definition, from the entries.
            fn mth(d: &[Vec<u8>]) -> Hash {
                match d.len() {
                    1 => tlog::leaf_hash(&d[0]),
                    n => {
                        let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                        tlog::node_hash(&mth(&d[..k]), &mth(&d[k..]))
                    }
                }
            }
            let start = (id.index << id.level) as usize;
            Ok(mth(&entries[start..start + (1 << id.level)]))
        })
        .unwrap();
        assert_eq!(root(&store, size).await, expected, "size {size}");
    }
    let size = entries.len() as u64;
    let r = root(&store, size).await;
    for m in 0..size {
        let ids = tlog::nodes_read(|f| {
            let mut f = f;
            let _ = tlog::inclusion_proof(m, size, &mut f);
        });
        let hashes = store.log_nodes(&ids).await.unwrap();
        let map: std::collections::HashMap<NodeId, Hash> = ids.into_iter().zip(hashes).collect();
        let proof =
            tlog::inclusion_proof(m, size, &mut |id| map.get(&id).copied().ok_or(())).unwrap();
        tlog::verify_inclusion(&tlog::leaf_hash(&entries[m as usize]), m, size, &proof, &r)
            .unwrap();
    }
}
on_both_stores!(the_log_is_an_rfc9162_tree);

/// Concurrent appends get gapless, distinct indexes.
async fn concurrent_appends_are_gapless<S: Store>(store: S) {
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..16u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let serial = format!("{i:04x}");
                let der = format!("der {i}").into_bytes();
                let entry = format!("entry {i}").into_bytes();
                store.issue(&cert(&serial, &der, &entry)).await.unwrap()
            })
        })
        .collect();
    let mut indexes = Vec::new();
    for t in tasks {
        indexes.push(t.await.unwrap());
    }
    indexes.sort();
    assert_eq!(indexes, (0..16).collect::<Vec<u64>>());
    assert_eq!(store.log_size().await.unwrap(), 16);
}
on_both_stores!(concurrent_appends_are_gapless);

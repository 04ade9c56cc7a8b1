//! Enrolment, renewal and revocation over real TLS on loopback against an
//! AS whose keys are in the SoftHSM token, on SQLite and PostgreSQL: the
//! happy paths, one-time tokens under concurrency, and every kind of bad
//! input (each answered with its RFC 9457 problem type, nothing stored,
//! the server still serving).

mod common;

use std::sync::Arc;

use hsmls_as::Store;
use hsmls_credentials::api::{self, Problem, Renew, RevokeCert, b64, problem};
use hsmls_credentials::client::ClientError;
use hsmls_custody::KeyCustody;
use hyper::{Method, StatusCode};

use common::{TestAs, custody, enrol, identity, key_and_csr};

/// Sends `body` to `path` and returns the status and the problem.
async fn problem_of<S: Store>(as_: &TestAs<S>, path: &str, body: Vec<u8>) -> (StatusCode, Problem) {
    let (status, ctype, bytes) = as_
        .client
        .raw(Method::POST, path, Some((body, "application/json")))
        .await
        .unwrap();
    assert_eq!(ctype, "application/problem+json", "{status}");
    let p: Problem = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(p.status, status.as_u16());
    (status, p)
}

/// What the store holds: (log size, latest CRL).
async fn snapshot<S: Store>(as_: &TestAs<S>) -> (u64, Option<Vec<u8>>) {
    let store = as_.service.store();
    (
        store.log_size().await.unwrap(),
        store.latest_crl().await.unwrap(),
    )
}

/// The server still answers.
async fn still_serving<S: Store>(as_: &TestAs<S>) {
    assert!(!as_.client.crl().await.unwrap().is_empty());
}

fn sign(
    custody: &Arc<hsmls_custody::Pkcs11Custody>,
    key: &hsmls_custody::KeyRef,
    label: &[u8],
    msg: &[u8],
) -> Vec<u8> {
    let mut m = label.to_vec();
    m.extend_from_slice(msg);
    custody.sign(key, &m).unwrap()
}

async fn enrol_renew_and_revoke<S: Store>(store: S) {
    let as_ = TestAs::start(store).await;
    let alice = enrol(&as_, "alice").await;
    let v = as_.validator().await;
    let info = v
        .check(
            &alice.signer.credential,
            &alice.signer.signature_public_key(),
            Some(&identity("alice")),
        )
        .unwrap();
    assert_eq!(hex::encode(&info.serial), alice.serial);
    // The certificate names the AS's CRL as its distribution point, where
    // the client fetched the CRL it validated with.
    use der::Decode;
    let leaf = x509_cert::Certificate::from_der(&alice.chain[0]).unwrap();
    let dp_ext = leaf
        .tbs_certificate
        .extensions
        .unwrap()
        .into_iter()
        .find(|e| e.extn_id.to_string() == "2.5.29.31")
        .expect("a CRL distribution point");
    let dps = x509_cert::ext::pkix::CrlDistributionPoints::from_der(dp_ext.extn_value.as_bytes())
        .unwrap();
    let Some(x509_cert::ext::pkix::name::DistributionPointName::FullName(names)) =
        &dps.0[0].distribution_point
    else {
        panic!("no full name");
    };
    assert_eq!(
        names,
        &vec![
            x509_cert::ext::pkix::name::GeneralName::UniformResourceIdentifier(
                der::asn1::Ia5String::new(&format!("{}/crl", as_.url)).unwrap()
            )
        ]
    );
    // The order shows the certificate.
    let size = as_.service.store().log_size().await.unwrap();
    assert_eq!(size, 1);

    // Renewal: a new key, the same identity, proof of possession of the
    // current key.
    let (new_key, csr) = key_and_csr(&alice.custody, &alice.identity);
    let renew = Renew {
        certificate: b64(&alice.chain[0]),
        csr: b64(&csr),
        signature: b64(&sign(&alice.custody, &alice.key, api::RENEW_LABEL, &csr)),
    };
    let renewed = as_.client.renew(&renew).await.unwrap();
    let ders = renewed.ders().unwrap();
    let new_pk = hsmls::wire::SignaturePublicKey(new_key.public_key().as_bytes().to_vec());
    let info2 = v
        .check(
            &hsmls_credentials::x509_credential(&ders),
            &new_pk,
            Some(&alice.identity),
        )
        .unwrap();
    assert_ne!(info2.serial, info.serial);
    assert_eq!(renewed.log_index, 1);

    // A signature by another key is no proof of possession.
    let bad = Renew {
        signature: b64(&sign(&alice.custody, &new_key, api::RENEW_LABEL, &csr)),
        ..renew.clone()
    };
    let before = snapshot(&as_).await;
    let (status, p) = problem_of(&as_, "renew", serde_json::to_vec(&bad).unwrap()).await;
    assert_eq!(
        (status, p.kind.as_str()),
        (StatusCode::FORBIDDEN, problem::BAD_SIGNATURE)
    );
    assert_eq!(snapshot(&as_).await, before);

    // The holder revokes its first certificate; the CRL lists it.
    let revoke = RevokeCert {
        certificate: b64(&alice.chain[0]),
        signature: b64(&sign(
            &alice.custody,
            &alice.key,
            api::REVOKE_LABEL,
            &alice.chain[0],
        )),
    };
    as_.client.revoke(&revoke).await.unwrap();
    v.set_crl(&as_.client.crl().await.unwrap()).unwrap();
    assert_eq!(
        v.check(
            &alice.signer.credential,
            &alice.signer.signature_public_key(),
            None
        ),
        Err(hsmls_credentials::ValidationError::Revoked)
    );
    assert_eq!(as_.service.store().log_size().await.unwrap(), 3);

    // Renewal with the revoked certificate is refused, nothing stored.
    let before = snapshot(&as_).await;
    let (status, p) = problem_of(&as_, "renew", serde_json::to_vec(&renew).unwrap()).await;
    assert_eq!(
        (status, p.kind.as_str()),
        (StatusCode::FORBIDDEN, problem::ALREADY_REVOKED)
    );
    assert_eq!(snapshot(&as_).await, before);
    still_serving(&as_).await;

    // Revoking twice.
    let err = as_.client.revoke(&revoke).await.unwrap_err();
    assert_eq!(err.problem_type(), Some(problem::ALREADY_REVOKED));
    assert!(matches!(
        as_.service.revoke(&alice.serial).await,
        Err(hsmls_as::AsError::AlreadyRevoked)
    ));

    // Renewal after expiry is refused.
    let current = renewed.ders().unwrap();
    let (k3, csr3) = key_and_csr(&alice.custody, &alice.identity);
    let late = Renew {
        certificate: b64(&current[0]),
        csr: b64(&csr3),
        signature: b64(&sign(&alice.custody, &new_key, api::RENEW_LABEL, &csr3)),
    };
    as_.clock.set(common::now() + 8 * 86_400);
    let before = snapshot(&as_).await;
    let (status, p) = problem_of(&as_, "renew", serde_json::to_vec(&late).unwrap()).await;
    assert_eq!(
        (status, p.kind.as_str()),
        (StatusCode::FORBIDDEN, problem::CERTIFICATE_EXPIRED)
    );
    assert_eq!(snapshot(&as_).await, before);

    for k in [&alice.key, &new_key, &k3] {
        alice.custody.destroy(k).unwrap();
    }
    as_.stop().await;
}
on_both_stores!(enrol_renew_and_revoke);

/// One token, twenty finalizations at once (twenty orders opened with it,
/// then all finalized concurrently): exactly one certificate.
async fn a_token_is_single_use_under_concurrency<S: Store>(store: S) {
    let as_ = Arc::new(TestAs::start(store).await);
    let id = identity("dave");
    let custody = custody();
    let (key, csr) = key_and_csr(&custody, &id);
    let token = as_.service.issue_token(&id).await.unwrap();
    let mut orders = Vec::new();
    for _ in 0..20 {
        orders.push(as_.client.new_order(&id, &token).await.unwrap());
    }
    let tasks: Vec<_> = orders
        .into_iter()
        .map(|order| {
            let (as_, csr) = (as_.clone(), csr.clone());
            tokio::spawn(async move { as_.client.finalize(&order, &csr).await })
        })
        .collect();
    let mut issued = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(order) => {
                assert!(order.certificate.is_some());
                issued += 1;
            }
            Err(e) => assert_eq!(e.problem_type(), Some(problem::TOKEN_USED), "{e}"),
        }
    }
    assert_eq!(issued, 1);
    assert_eq!(as_.service.store().log_size().await.unwrap(), 1);
    // The used token opens no new order.
    let err = as_.client.new_order(&id, &token).await.unwrap_err();
    assert_eq!(err.problem_type(), Some(problem::TOKEN_USED));
    custody.destroy(&key).unwrap();
    Arc::into_inner(as_).unwrap().stop().await;
}
on_both_stores!(a_token_is_single_use_under_concurrency);

async fn bad_input_is_refused_and_changes_nothing<S: Store>(store: S) {
    let as_ = TestAs::start(store).await;
    let id = identity("erin");
    let custody = custody();
    let (key, csr) = key_and_csr(&custody, &id);
    let token = as_.service.issue_token(&id).await.unwrap();
    let order = as_.client.new_order(&id, &token).await.unwrap();
    let finalize = |csr: &[u8]| serde_json::to_vec(&api::Finalize { csr: b64(csr) }).unwrap();
    let before = snapshot(&as_).await;

    // Malformed CSR.
    let (s, p) = problem_of(&as_, &order.finalize, finalize(b"\x30\x03junk")).await;
    assert_eq!(
        (s, p.kind.as_str()),
        (StatusCode::BAD_REQUEST, problem::BAD_CSR)
    );
    // A CSR whose signature does not match its key.
    let mut forged = csr.clone();
    let n = forged.len();
    forged[n - 3] ^= 1;
    let (s, p) = problem_of(&as_, &order.finalize, finalize(&forged)).await;
    assert_eq!(
        (s, p.kind.as_str()),
        (StatusCode::BAD_REQUEST, problem::BAD_CSR)
    );
    // A CSR for another identity.
    let (k2, other_csr) = key_and_csr(&custody, &identity("mallory"));
    let (s, p) = problem_of(&as_, &order.finalize, finalize(&other_csr)).await;
    assert_eq!(
        (s, p.kind.as_str()),
        (StatusCode::BAD_REQUEST, problem::BAD_CSR)
    );
    // Not JSON, or JSON of another shape.
    let (s, p) = problem_of(&as_, &order.finalize, b"{not json".to_vec()).await;
    assert_eq!(
        (s, p.kind.as_str()),
        (StatusCode::BAD_REQUEST, problem::MALFORMED)
    );
    let (s, p) = problem_of(
        &as_,
        "new-order",
        br#"{"identity":"x","token":"y","extra":1}"#.to_vec(),
    )
    .await;
    assert_eq!(
        (s, p.kind.as_str()),
        (StatusCode::BAD_REQUEST, problem::MALFORMED)
    );
    // Unknown order.
    let (s, p) = problem_of(&as_, "order/00/finalize", finalize(&csr)).await;
    assert_eq!(
        (s, p.kind.as_str()),
        (StatusCode::NOT_FOUND, problem::UNKNOWN_ORDER)
    );
    // Unknown identity: the token is bound to erin; an unknown token.
    let body = |identity: &str, token: &str| {
        serde_json::to_vec(&api::NewOrder {
            identity: identity.into(),
            token: token.into(),
        })
        .unwrap()
    };
    let (s, p) = problem_of(&as_, "new-order", body(&identity("mallory"), &token)).await;
    assert_eq!(
        (s, p.kind.as_str()),
        (StatusCode::FORBIDDEN, problem::UNAUTHORIZED)
    );
    let (s, p) = problem_of(&as_, "new-order", body(&id, "made-up-token")).await;
    assert_eq!(
        (s, p.kind.as_str()),
        (StatusCode::FORBIDDEN, problem::UNAUTHORIZED)
    );
    // A body over the limit.
    let huge = finalize(&vec![0x30; 100 * 1024]);
    let (s, p) = problem_of(&as_, &order.finalize, huge).await;
    assert_eq!(
        (s, p.kind.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, problem::TOO_LARGE)
    );
    // Renewal with a foreign certificate (another CA in the token).
    let other_ca = hsmls_as::Ca::create(
        custody.clone(),
        hsmls_as::CaProfile::default(),
        common::now() - 60,
    )
    .unwrap();
    let foreign = other_ca
        .issue_leaf(&hsmls_as::ca::LeafRequest {
            identity: &id,
            scheme: hsmls_custody::SignatureScheme::EcdsaSecp256r1Sha256,
            public_key: key.public_key().as_bytes(),
            serial: &hsmls_as::ca::random_serial(),
            not_before: common::now() - 60,
            not_after: common::now() + 3600,
            crl_url: "https://elsewhere.test/crl",
        })
        .unwrap();
    let renew = Renew {
        certificate: b64(&foreign),
        csr: b64(&csr),
        signature: b64(&sign(&custody, &key, api::RENEW_LABEL, &csr)),
    };
    let (s, p) = problem_of(&as_, "renew", serde_json::to_vec(&renew).unwrap()).await;
    assert_eq!(
        (s, p.kind.as_str()),
        (StatusCode::NOT_FOUND, problem::UNKNOWN_CERTIFICATE)
    );
    // A resource that does not exist.
    let (s, p) = problem_of(&as_, "no-such-thing", b"{}".to_vec()).await;
    assert_eq!(
        (s, p.kind.as_str()),
        (StatusCode::NOT_FOUND, problem::NOT_FOUND)
    );
    // Nothing was stored, the server still serves, and the order can
    // still be finalized with the right CSR.
    assert_eq!(snapshot(&as_).await, before);
    still_serving(&as_).await;
    let done = as_.client.finalize(&order, &csr).await.unwrap();
    assert_eq!(done.status, api::OrderStatus::Valid);
    // Finalizing again: the order is done.
    let (s, p) = problem_of(&as_, &order.finalize, finalize(&csr)).await;
    assert_eq!(
        (s, p.kind.as_str()),
        (StatusCode::FORBIDDEN, problem::ORDER_NOT_READY)
    );
    // The reused token.
    let err = as_.client.new_order(&id, &token).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Problem(p) if p.kind == problem::TOKEN_USED && p.status == 403)
    );
    // An expired token (the clock moves past its lifetime).
    let token2 = as_.service.issue_token(&id).await.unwrap();
    let order2 = as_.client.new_order(&id, &token2).await.unwrap();
    as_.clock.set(common::now() + 2 * 86_400);
    let before = snapshot(&as_).await;
    let err = as_.client.new_order(&id, &token2).await.unwrap_err();
    assert_eq!(err.problem_type(), Some(problem::TOKEN_EXPIRED));
    let (s, p) = problem_of(&as_, &order2.finalize, finalize(&csr)).await;
    assert_eq!(
        (s, p.kind.as_str()),
        (StatusCode::FORBIDDEN, problem::TOKEN_EXPIRED)
    );
    assert_eq!(snapshot(&as_).await.0, before.0);
    still_serving(&as_).await;

    for k in [&key, &k2, other_ca.root_key(), other_ca.issuing_key()] {
        custody.destroy(k).unwrap();
    }
    as_.stop().await;
}
on_both_stores!(bad_input_is_refused_and_changes_nothing);

/// Two AS processes (two services, two connection pools) on one PostgreSQL
/// database: twenty finalizations with one token, split between them, give
/// exactly one certificate; the log stays gapless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_on_one_postgres_database_share_the_token_claim() {
    let _one = common::one_at_a_time().await;
    let db = common::postgres().await;
    let other_pool = db.second_store().await;
    let as_ = TestAs::start(db.store.clone()).await;
    let other = Arc::new(
        hsmls_as::AuthService::new(
            other_pool,
            as_.service.ca().clone(),
            as_.keys[2].clone(),
            hsmls_as::ServiceConfig::new(&as_.url),
            as_.clock.clone(),
        )
        .unwrap(),
    );
    let id = identity("frank");
    let custody = custody();
    let (key, csr) = key_and_csr(&custody, &id);
    let token = as_.service.issue_token(&id).await.unwrap();
    // All orders first (new-order does not claim the token), then the
    // finalizations at once, alternating between the two services.
    let mut orders = Vec::new();
    for _ in 0..20 {
        orders.push(other.new_order(&id, &token).await.unwrap());
    }
    let mut tasks = Vec::new();
    for (i, order) in orders.into_iter().enumerate() {
        let csr = csr.clone();
        let svc = if i % 2 == 0 {
            as_.service.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(
            async move { svc.finalize(&order.id, &csr).await },
        ));
    }
    let mut issued = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => issued += 1,
            Err(e) => assert!(matches!(e, hsmls_as::AsError::TokenUsed), "{e:?}"),
        }
    }
    assert_eq!(issued, 1);
    // Both see one log entry, and appends from both stay gapless.
    assert_eq!(other.store().log_size().await.unwrap(), 1);
    let a = enrol(&as_, "grace").await;
    let t2 = other.issue_token(&identity("heidi")).await.unwrap();
    let (k2, csr2) = key_and_csr(&custody, &identity("heidi"));
    let o2 = other.new_order(&identity("heidi"), &t2).await.unwrap();
    other.finalize(&o2.id, &csr2).await.unwrap();
    assert_eq!(as_.service.store().log_size().await.unwrap(), 3);
    assert_eq!(
        as_.service.checkpoint().await.unwrap().lines().nth(2),
        other.checkpoint().await.unwrap().lines().nth(2)
    );
    a.destroy();
    custody.destroy(&key).unwrap();
    custody.destroy(&k2).unwrap();
    drop(other);
    as_.stop().await;
    db.drop_schema().await;
}

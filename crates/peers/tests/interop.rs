//! Lifecycle tests for each peer and cross tests between peers, all through
//! the byte-oriented [`Peer`] trait, so hsmls slots in with one line per test.

use hsmls_peers::{CIPHER_SUITE, Event, HsmlsPeer, MlsRsPeer, OpenMlsPeer, Peer, PeerError};

/// MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519, mandatory to implement
/// (RFC 9420 §17.1) and the default of openmls and mls-rs.
const SUITE_0X0001: u16 = 0x0001;

const EXPORTER_LABEL: &str = "hsmls interop";
const EXPORTER_CONTEXT: &[u8] = b"exporter context";

/// What members must agree on after every commit (RFC 9420 §8.5, §8.7).
#[derive(Debug, PartialEq, Eq)]
struct Agreement {
    epoch: u64,
    epoch_authenticator: Vec<u8>,
    exported: Vec<u8>,
}

fn agreement<P: Peer>(p: &P) -> Result<Agreement, PeerError> {
    Ok(Agreement {
        epoch: p.epoch()?,
        epoch_authenticator: p.epoch_authenticator()?,
        exported: p.export_secret(EXPORTER_LABEL, EXPORTER_CONTEXT, 32)?,
    })
}

fn expect_commit(event: Event, epoch: u64) {
    assert_eq!(event, Event::Commit { epoch });
}

/// Sends `text` from `from` and checks that `to` decrypts it.
fn message<A: Peer, B: Peer>(from: &mut A, to: &mut B, text: &[u8]) -> Result<(), PeerError> {
    let ciphertext = from.encrypt(text)?;
    assert!(
        !ciphertext.windows(text.len()).any(|w| w == text),
        "plaintext visible in the PrivateMessage"
    );
    assert_eq!(to.process(&ciphertext)?, Event::Application(text.to_vec()));
    Ok(())
}

/// Three members of one implementation: create, add two by one Welcome,
/// two self-updates, a remove, application messages and an external join;
/// all members agree after every commit. (Tampering: `genuine_after_tampered`.)
fn lifecycle<P: Peer>(suite: u16) -> Result<(), PeerError> {
    let mut a = P::with_suite(b"alice", suite)?;
    let mut b = P::with_suite(b"bob", suite)?;
    let mut c = P::with_suite(b"carol", suite)?;
    a.create_group(b"lifecycle group")?;
    assert_eq!(a.epoch()?, 0);

    let kps = vec![b.key_package()?, c.key_package()?];
    let add = a.add_members(&kps)?;
    a.merge_pending()?;
    let welcome = add.welcome.as_deref().expect("an Add commit has a Welcome");
    b.join(welcome, None)?;
    c.join(welcome, None)?;
    assert_eq!(a.member_count()?, 3);
    let at_1 = agreement(&a)?;
    assert_eq!(at_1.epoch, 1);
    assert_eq!(agreement(&b)?, at_1);
    assert_eq!(agreement(&c)?, at_1);

    let update = b.self_update()?;
    b.merge_pending()?;
    expect_commit(a.process(&update.commit)?, 2);
    expect_commit(c.process(&update.commit)?, 2);
    let at_2 = agreement(&a)?;
    assert_ne!(at_2.epoch_authenticator, at_1.epoch_authenticator);
    assert_eq!(agreement(&b)?, at_2);
    assert_eq!(agreement(&c)?, at_2);

    let update = c.self_update()?;
    c.merge_pending()?;
    expect_commit(a.process(&update.commit)?, 3);
    expect_commit(b.process(&update.commit)?, 3);
    let at_3 = agreement(&a)?;
    assert_eq!(agreement(&b)?, at_3);
    assert_eq!(agreement(&c)?, at_3);

    let remove = a.remove_member(c.own_leaf_index()?)?;
    a.merge_pending()?;
    expect_commit(b.process(&remove.commit)?, 4);
    assert_eq!(a.member_count()?, 2);
    assert_eq!(b.member_count()?, 2);
    assert_eq!(agreement(&a)?, agreement(&b)?);

    message(&mut a, &mut b, b"hello bob")?;
    message(&mut b, &mut a, b"hello alice")?;

    // External join (RFC 9420 §12.4.3.2) against a GroupInfo with the tree.
    let mut d = P::with_suite(b"dave", suite)?;
    let group_info = a.group_info(true)?;
    let commit = d.join_external(&group_info, None)?;
    expect_commit(a.process(&commit)?, 5);
    expect_commit(b.process(&commit)?, 5);
    assert_eq!(a.member_count()?, 3);
    let at_5 = agreement(&a)?;
    assert_eq!(agreement(&b)?, at_5);
    assert_eq!(agreement(&d)?, at_5);
    message(&mut d, &mut b, b"hello from dave")?;
    Ok(())
}

/// `A` creates the group and adds a `B` member and an `A` member by one
/// Welcome; both implementations commit (self-updates, a remove, an add by
/// the `B` member, an external join), exchange messages, and agree on the
/// epoch authenticator and an exported secret after every step.
fn cross<A: Peer, B: Peer>(suite: u16) -> Result<(), PeerError> {
    let mut a1 = A::with_suite(b"a1", suite)?;
    let mut a2 = A::with_suite(b"a2", suite)?;
    let mut b1 = B::with_suite(b"b1", suite)?;
    a1.create_group(b"cross group")?;

    let add = a1.add_members(&[b1.key_package()?, a2.key_package()?])?;
    a1.merge_pending()?;
    let welcome = add.welcome.as_deref().expect("an Add commit has a Welcome");
    b1.join(welcome, None)?;
    a2.join(welcome, None)?;
    let check = |a1: &A, a2: &A, b1: &B| -> Result<Agreement, PeerError> {
        let reference = agreement(a1)?;
        assert_eq!(agreement(a2)?, reference, "{} members disagree", A::NAME);
        assert_eq!(
            agreement(b1)?,
            reference,
            "{} and {} disagree",
            A::NAME,
            B::NAME
        );
        Ok(reference)
    };
    assert_eq!(check(&a1, &a2, &b1)?.epoch, 1);

    message(&mut a1, &mut b1, b"A to B")?;
    message(&mut b1, &mut a2, b"B to A")?;

    // B commits a self-update.
    let update = b1.self_update()?;
    b1.merge_pending()?;
    expect_commit(a1.process(&update.commit)?, 2);
    expect_commit(a2.process(&update.commit)?, 2);
    check(&a1, &a2, &b1)?;

    // A commits a self-update.
    let update = a2.self_update()?;
    a2.merge_pending()?;
    expect_commit(a1.process(&update.commit)?, 3);
    expect_commit(b1.process(&update.commit)?, 3);
    check(&a1, &a2, &b1)?;
    message(&mut a2, &mut b1, b"after updates")?;

    // B adds a B member; the joiner uses a ratchet tree given out of band.
    let mut b2 = B::with_suite(b"b2", suite)?;
    let add = b1.add_members(&[b2.key_package()?])?;
    b1.merge_pending()?;
    expect_commit(a1.process(&add.commit)?, 4);
    expect_commit(a2.process(&add.commit)?, 4);
    let tree = a1.ratchet_tree()?;
    b2.join(
        add.welcome.as_deref().expect("an Add commit has a Welcome"),
        Some(&tree),
    )?;
    let at_4 = check(&a1, &a2, &b1)?;
    assert_eq!(agreement(&b2)?, at_4);
    message(&mut b2, &mut a1, b"new B member")?;

    // A removes the first B member.
    let remove = a1.remove_member(b1.own_leaf_index()?)?;
    a1.merge_pending()?;
    expect_commit(a2.process(&remove.commit)?, 5);
    expect_commit(b2.process(&remove.commit)?, 5);
    let at_5 = agreement(&a1)?;
    assert_eq!(agreement(&a2)?, at_5);
    assert_eq!(agreement(&b2)?, at_5);
    assert_eq!(b2.member_count()?, 3);

    // A fresh B client joins by an external commit against A's GroupInfo.
    let mut b3 = B::with_suite(b"b3", suite)?;
    let group_info = a2.group_info(false)?;
    let tree = a2.ratchet_tree()?;
    let commit = b3.join_external(&group_info, Some(&tree))?;
    expect_commit(a1.process(&commit)?, 6);
    expect_commit(a2.process(&commit)?, 6);
    expect_commit(b2.process(&commit)?, 6);
    let at_6 = agreement(&a1)?;
    assert_eq!(agreement(&a2)?, at_6);
    assert_eq!(agreement(&b2)?, at_6);
    assert_eq!(agreement(&b3)?, at_6);
    message(&mut b3, &mut a1, b"external joiner")?;
    message(&mut a1, &mut b3, b"welcome b3")?;
    Ok(())
}

#[test]
fn openmls_lifecycle() -> Result<(), PeerError> {
    lifecycle::<OpenMlsPeer>(CIPHER_SUITE)
}

#[test]
fn mls_rs_lifecycle() -> Result<(), PeerError> {
    lifecycle::<MlsRsPeer>(CIPHER_SUITE)
}

#[test]
fn hsmls_lifecycle() -> Result<(), PeerError> {
    lifecycle::<HsmlsPeer>(CIPHER_SUITE)
}

#[test]
fn hsmls_creates_openmls_joins() -> Result<(), PeerError> {
    cross::<HsmlsPeer, OpenMlsPeer>(CIPHER_SUITE)
}

#[test]
fn openmls_creates_hsmls_joins() -> Result<(), PeerError> {
    cross::<OpenMlsPeer, HsmlsPeer>(CIPHER_SUITE)
}

#[test]
fn hsmls_creates_mls_rs_joins() -> Result<(), PeerError> {
    cross::<HsmlsPeer, MlsRsPeer>(CIPHER_SUITE)
}

#[test]
fn mls_rs_creates_hsmls_joins() -> Result<(), PeerError> {
    cross::<MlsRsPeer, HsmlsPeer>(CIPHER_SUITE)
}

#[test]
fn openmls_creates_mls_rs_joins() -> Result<(), PeerError> {
    cross::<OpenMlsPeer, MlsRsPeer>(CIPHER_SUITE)
}

#[test]
fn mls_rs_creates_openmls_joins() -> Result<(), PeerError> {
    cross::<MlsRsPeer, OpenMlsPeer>(CIPHER_SUITE)
}

/// Delivers a commit whose PrivateMessage AEAD tag is flipped, then the
/// genuine commit; returns whether the genuine one was still accepted.
fn genuine_after_tampered<P: Peer>() -> Result<bool, PeerError> {
    let mut a = P::new(b"a")?;
    let mut b = P::new(b"b")?;
    a.create_group(b"tamper group")?;
    let add = a.add_members(&[b.key_package()?])?;
    a.merge_pending()?;
    b.join(add.welcome.as_deref().expect("Welcome"), None)?;
    let before = agreement(&b)?;
    let update = a.self_update()?;
    let mut tampered = update.commit.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let r = b.process(&tampered);
    assert!(
        matches!(
            r,
            Err(PeerError::Library {
                operation: "process",
                ..
            })
        ),
        "tampered commit: {r:?}"
    );
    assert_eq!(agreement(&b)?, before);
    a.merge_pending()?;
    match b.process(&update.commit) {
        Ok(event) => {
            expect_commit(event, 2);
            assert_eq!(agreement(&b)?, agreement(&a)?);
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

/// openmls keeps the message key when a PrivateMessage fails to decrypt, so
/// the genuine message still gets through.
#[test]
fn openmls_rejected_private_message_keeps_key() -> Result<(), PeerError> {
    assert!(genuine_after_tampered::<OpenMlsPeer>()?);
    Ok(())
}

/// hsmls's PrivateMessage decryption is transactional (the key is consumed
/// only when the message opens and verifies).
#[test]
fn hsmls_rejected_private_message_keeps_key() -> Result<(), PeerError> {
    assert!(genuine_after_tampered::<HsmlsPeer>()?);
    Ok(())
}

/// Observed peer behaviour, recorded so interop tests account for it:
/// mls-rs 0.57 deletes the message key of a PrivateMessage whose content
/// fails to decrypt, so the genuine message with the same generation is
/// then refused ("key not available, invalid generation 0").
#[test]
fn mls_rs_rejected_private_message_burns_key() -> Result<(), PeerError> {
    assert!(!genuine_after_tampered::<MlsRsPeer>()?);
    Ok(())
}

// ----- suite 0x0001 (X25519, AES-128-GCM, Ed25519) -----

#[test]
fn hsmls_lifecycle_0x0001() -> Result<(), PeerError> {
    lifecycle::<HsmlsPeer>(SUITE_0X0001)
}

#[test]
fn openmls_lifecycle_0x0001() -> Result<(), PeerError> {
    lifecycle::<OpenMlsPeer>(SUITE_0X0001)
}

#[test]
fn mls_rs_lifecycle_0x0001() -> Result<(), PeerError> {
    lifecycle::<MlsRsPeer>(SUITE_0X0001)
}

#[test]
fn hsmls_creates_openmls_joins_0x0001() -> Result<(), PeerError> {
    cross::<HsmlsPeer, OpenMlsPeer>(SUITE_0X0001)
}

#[test]
fn openmls_creates_hsmls_joins_0x0001() -> Result<(), PeerError> {
    cross::<OpenMlsPeer, HsmlsPeer>(SUITE_0X0001)
}

#[test]
fn hsmls_creates_mls_rs_joins_0x0001() -> Result<(), PeerError> {
    cross::<HsmlsPeer, MlsRsPeer>(SUITE_0X0001)
}

#[test]
fn mls_rs_creates_hsmls_joins_0x0001() -> Result<(), PeerError> {
    cross::<MlsRsPeer, HsmlsPeer>(SUITE_0X0001)
}

// ----- suite 0x0003 (X25519, ChaCha20Poly1305, Ed25519) -----

/// MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519.
const SUITE_0X0003: u16 = 0x0003;

#[test]
fn hsmls_creates_openmls_joins_0x0003() -> Result<(), PeerError> {
    cross::<HsmlsPeer, OpenMlsPeer>(SUITE_0X0003)
}

#[test]
fn openmls_creates_hsmls_joins_0x0003() -> Result<(), PeerError> {
    cross::<OpenMlsPeer, HsmlsPeer>(SUITE_0X0003)
}

#[test]
fn hsmls_creates_mls_rs_joins_0x0003() -> Result<(), PeerError> {
    cross::<HsmlsPeer, MlsRsPeer>(SUITE_0X0003)
}

#[test]
fn mls_rs_creates_hsmls_joins_0x0003() -> Result<(), PeerError> {
    cross::<MlsRsPeer, HsmlsPeer>(SUITE_0X0003)
}

// ----- suite 0x0007 (P-384, AES-256-GCM, SHA-384) -----
// With mls-rs only: openmls_rust_crypto 0.6 does not offer the suite.

/// MLS_256_DHKEMP384_AES256GCM_SHA384_P384.
const SUITE_0X0007: u16 = 0x0007;

#[test]
fn hsmls_creates_mls_rs_joins_0x0007() -> Result<(), PeerError> {
    cross::<HsmlsPeer, MlsRsPeer>(SUITE_0X0007)
}

#[test]
fn mls_rs_creates_hsmls_joins_0x0007() -> Result<(), PeerError> {
    cross::<MlsRsPeer, HsmlsPeer>(SUITE_0X0007)
}

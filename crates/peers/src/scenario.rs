//! The interop scenarios every pairing of implementations runs, through
//! the byte-oriented [`Peer`] trait: [`lifecycle`] (one implementation)
//! and [`cross`] (two implementations in one group, both ways by swapping
//! the type parameters). They are test code shared by this crate's
//! interop tests and the gRPC interop client's tests (`crates/interop`),
//! which drives hsmls through its gRPC service as one more `Peer`.
//!
//! # Panics
//!
//! The scenarios assert with `assert_eq!`: they panic when members
//! disagree (epoch, epoch_authenticator, exported secret, decrypted
//! plaintext), and return the [`PeerError`] of the first refused
//! operation.

use crate::{Event, Peer, PeerError};

/// The exporter label of [`Agreement::exported`].
pub const EXPORTER_LABEL: &str = "hsmls interop";
/// The exporter context of [`Agreement::exported`].
pub const EXPORTER_CONTEXT: &[u8] = b"exporter context";

/// What members must agree on after every commit (RFC 9420 §8.5, §8.7).
#[derive(Debug, PartialEq, Eq)]
pub struct Agreement {
    /// The epoch.
    pub epoch: u64,
    /// The epoch_authenticator (RFC 9420 §8.7).
    pub epoch_authenticator: Vec<u8>,
    /// MLS-Exporter([`EXPORTER_LABEL`], [`EXPORTER_CONTEXT`], 32) (§8.5).
    pub exported: Vec<u8>,
}

/// What `p` holds now.
pub fn agreement<P: Peer>(p: &P) -> Result<Agreement, PeerError> {
    Ok(Agreement {
        epoch: p.epoch()?,
        epoch_authenticator: p.epoch_authenticator()?,
        exported: p.export_secret(EXPORTER_LABEL, EXPORTER_CONTEXT, 32)?,
    })
}

/// Asserts that `event` is a commit that took the member to `epoch`.
pub fn expect_commit(event: Event, epoch: u64) {
    assert_eq!(event, Event::Commit { epoch });
}

/// Sends `text` from `from` and checks that `to` decrypts it.
pub fn message<A: Peer, B: Peer>(from: &mut A, to: &mut B, text: &[u8]) -> Result<(), PeerError> {
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
/// all members agree after every commit. (Tampering: `genuine_after_tampered`
/// in this crate's `tests/interop.rs`.)
pub fn lifecycle<P: Peer>(suite: u16) -> Result<(), PeerError> {
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
pub fn cross<A: Peer, B: Peer>(suite: u16) -> Result<(), PeerError> {
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

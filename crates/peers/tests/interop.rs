//! Lifecycle tests for each peer and cross tests between peers, all through
//! the byte-oriented [`Peer`] trait, so hsmls slots in with one line per test.

use hsmls_peers::scenario::{agreement, cross, expect_commit, lifecycle};
use hsmls_peers::{CIPHER_SUITE, HsmlsPeer, MlsRsPeer, OpenMlsPeer, Peer, PeerError};

/// MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519, mandatory to implement
/// (RFC 9420 §17.1) and the default of openmls and mls-rs.
const SUITE_0X0001: u16 = 0x0001;

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

//! The KeyPackage directory (RFC 9750 §5.2): clients publish batches of
//! their own KeyPackages, others claim one at a time.
//!
//! Each published KeyPackage is parsed and validated with the engine
//! ([`hsmls::KeyPackageIn::validate`]: version, cipher suite, both
//! signatures, lifetime, capabilities, the credential through the
//! Authentication Service's validator), and its credential must name the
//! publishing client. A claim hands out a package once (the store deletes
//! it as it hands it out) unless it is the owner's last-resort package,
//! served only when no other is left; the owner's counts say how many
//! claims a last-resort package served, so it can rotate it. The DS
//! remembers which client a claimed KeyPackageRef belongs to, to route the
//! Welcome that names it.

use hsmls::KeyPackageIn;
use hsmls::wire::CipherSuite;
use hsmls::wire::LAST_RESORT;

use crate::auth::{AuthenticatorValidator, ClientAuthenticator};
use crate::error::DsError;
use crate::store::NewKeyPackage;

/// The most KeyPackages in one publish request.
pub const MAX_BATCH: usize = 100;

/// Validates a published KeyPackage in its own cipher suite, which must be
/// one of `suites`; returns it as stored and the identity its credential
/// names (which must be the publisher's).
pub fn validate_key_package(
    bytes: &[u8],
    suites: &[CipherSuite],
    authenticator: &std::sync::Arc<dyn ClientAuthenticator>,
    now: u64,
) -> Result<(NewKeyPackage, Vec<u8>), DsError> {
    let kp_in =
        KeyPackageIn::from_bytes(bytes).map_err(|e| DsError::InvalidKeyPackage(e.to_string()))?;
    let suite = kp_in.0.cipher_suite;
    if !suites.contains(&suite) {
        return Err(DsError::InvalidKeyPackage(format!(
            "cipher suite 0x{:04x} is not served here",
            suite.0
        )));
    }
    let validator = AuthenticatorValidator(authenticator.clone());
    let kp = kp_in
        .validate(suite, &validator, now)
        .map_err(|e| DsError::InvalidKeyPackage(e.to_string()))?;
    let leaf = kp.leaf_node();
    let identity = authenticator
        .identity(&leaf.credential, &leaf.signature_key)
        .map_err(|e| DsError::InvalidKeyPackage(e.to_string()))?;
    let not_after = match leaf.leaf_node_source {
        hsmls::wire::LeafNodeSource::KeyPackage(l) => l.not_after,
        _ => return Err(DsError::InvalidKeyPackage("not a KeyPackage leaf".into())),
    };
    let last_resort = kp
        .as_wire()
        .extensions
        .iter()
        .any(|e| e.extension_type == LAST_RESORT);
    let kp_out = NewKeyPackage {
        reference: kp.reference().0.clone(),
        key_package: kp
            .to_message_bytes()
            .map_err(|e| DsError::InvalidKeyPackage(e.to_string()))?,
        not_after,
        last_resort,
    };
    Ok((kp_out, identity))
}

//! Saving a [`KeyPackageBundle`] and loading it back (see
//! [`crate::state`]). The plaintext (format version 1; `CustodyKey` is in
//! `tree/saved.rs`):
//!
//! ```text
//! struct {
//!     opaque key_package<V>;     // KeyPackage (§10)
//!     CustodyKey init_key;
//!     CustodyKey encryption_key; // the leaf's HPKE key
//!     CustodyKey signature_key;  // the signer's key
//! } KeyPackageBundleState;
//! ```
//!
//! The KeyPackageRef names the blob in its header; the last-resort flag
//! (RFC 9420 §16.8) comes from the KeyPackage's extensions.

use std::sync::Arc;

use hsmls_crypto::CipherSuite as SuiteId;
use hsmls_custody::{KeyCustody, KeySpec, StateSealer};

use super::{KeyPackage, KeyPackageBundle};
use crate::codec::{self, LeafNodeSource};
use crate::credential::Signer;
use crate::state::{Reader, RecordKind, SavedKeyPackage, StateError, Writer, open, seal};
use crate::tree::saved::{read_key, write_key};

fn malformed(field: &'static str) -> StateError {
    StateError::MalformedPlaintext { field }
}

impl KeyPackageBundle {
    /// Saves the bundle with the signer whose key signed it: the
    /// KeyPackage and the custody URIs of its init, leaf and signature
    /// keys, sealed with `sealer` (see [`crate::state`]).
    pub(crate) fn save(
        &self,
        signer: &Signer,
        sealer: &dyn StateSealer,
    ) -> Result<SavedKeyPackage, StateError> {
        let KeyPackageBundle {
            key_package,
            init_key,
            encryption_key,
        } = self;
        let leaf = key_package.leaf_node();
        if leaf.signature_key.as_slice() != signer.signature_key.public_key().as_bytes() {
            return Err(StateError::KeyMismatch {
                uri: signer.signature_key.uri().to_owned(),
            });
        }
        let mut w = Writer::with_capacity(1024);
        w.wire(key_package.as_wire())?;
        write_key(&mut w, init_key)?;
        write_key(&mut w, encryption_key)?;
        write_key(&mut w, &signer.signature_key)?;
        let plaintext = w.finish();
        let reference = key_package.reference().as_slice().to_vec();
        let data = seal(
            sealer,
            RecordKind::KeyPackageBundle,
            &reference,
            0,
            &plaintext,
        )?;
        let not_after = match leaf.leaf_node_source {
            LeafNodeSource::KeyPackage(lifetime) => lifetime.not_after,
            _ => 0,
        };
        Ok(SavedKeyPackage {
            reference,
            last_resort: self.is_last_resort(),
            not_after,
            data,
        })
    }

    /// Loads a bundle saved by [`KeyPackageBundle::save`]: the blob must
    /// be the bundle of the KeyPackage `reference`, sealed by `sealer`'s
    /// key; its keys are found in `custody` by their URIs. Returns the
    /// bundle and the signer (its credential is the KeyPackage's), ready
    /// for a join ([`crate::Client::load_key_package`] checks the signer
    /// is the client's).
    pub(crate) fn load(
        sealer: &dyn StateSealer,
        custody: Arc<dyn KeyCustody>,
        reference: &[u8],
        data: &[u8],
    ) -> Result<(KeyPackageBundle, Signer), StateError> {
        let (_, plaintext) = open(sealer, data, RecordKind::KeyPackageBundle, reference)?;
        let mut r = Reader::new(&plaintext);
        let wire: codec::KeyPackage = r.wire("key_package")?;
        let cs = SuiteId(wire.cipher_suite.0)
            .provider()
            .map_err(|_| StateError::UnsupportedCipherSuite(wire.cipher_suite.0))?;
        let c = custody.as_ref();
        let (kem, sig) = (
            KeySpec::Kem(cs.kem()),
            KeySpec::Signature(cs.signature_scheme()),
        );
        let init_key = read_key(&mut r, kem, Some(c))?;
        let encryption_key = read_key(&mut r, kem, Some(c))?;
        let signature_key = read_key(&mut r, sig, Some(c))?;
        r.finish("key package bundle")?;
        let key_package =
            KeyPackage::from_trusted(cs, wire).map_err(|_| malformed("key_package"))?;
        if key_package.reference().as_slice() != reference {
            return Err(malformed("key_package"));
        }
        let leaf = key_package.leaf_node();
        for (key, public) in [
            (&init_key, key_package.as_wire().init_key.as_slice()),
            (&encryption_key, leaf.encryption_key.as_slice()),
            (&signature_key, leaf.signature_key.as_slice()),
        ] {
            if key.public_key().as_bytes() != public {
                return Err(StateError::KeyMismatch {
                    uri: key.uri().to_owned(),
                });
            }
        }
        let signer = Signer::new(custody, signature_key, leaf.credential.clone());
        Ok((
            KeyPackageBundle {
                key_package,
                init_key,
                encryption_key,
            },
            signer,
        ))
    }
}

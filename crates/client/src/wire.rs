//! What the runtime reads of MLS structures without being the engine: the
//! public framing of a group message (to tell a duplicate from a fork),
//! a Welcome's KeyPackageRefs, a member's identity, and a leaf in a
//! ratchet tree. Every decode goes through the engine's bounded decoder.

use hsmls::wire::{ContentType, Credential, Decode, LeafIndex, Node, RatchetTree, RoutingInfo};

/// The public framing of a group message: group id, epoch, content type.
pub(crate) fn framing(bytes: &[u8]) -> Option<(Vec<u8>, u64, ContentType)> {
    let info = RoutingInfo::parse(bytes).ok()?;
    Some((info.group_id?, info.epoch?, info.content_type?))
}

/// The KeyPackageRefs a Welcome is addressed to.
pub(crate) fn welcome_refs(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let info = RoutingInfo::parse(bytes).ok()?;
    (info.wire_format == hsmls::wire::WireFormat::WELCOME)
        .then(|| info.new_members.into_iter().map(|r| r.0).collect())
}

/// The identity a credential names: an X.509 credential's SAN URI (of
/// the leaf certificate), a basic credential's identity as text. Empty if
/// the credential names none.
pub fn identity_of(credential: &Credential) -> String {
    match credential {
        Credential::X509(chain) => chain
            .first()
            .and_then(|leaf| hsmls_credentials::leaf_info(&leaf.cert_data).ok())
            .map(|l| l.identity)
            .unwrap_or_default(),
        Credential::Basic(id) => String::from_utf8_lossy(id).into_owned(),
    }
}

/// The identity of an X.509 credential as the Delivery Service names
/// clients (the `identity_of` of `hsmls_ds::auth::ValidatorAuthenticator`):
/// the leaf certificate's SAN URI. `None` for other credential types.
pub fn x509_identity(credential: &Credential) -> Option<Vec<u8>> {
    match credential {
        Credential::X509(chain) => chain
            .first()
            .and_then(|leaf| hsmls_credentials::leaf_info(&leaf.cert_data).ok())
            .map(|l| l.identity.into_bytes()),
        Credential::Basic(_) => None,
    }
}

/// The serial number (hex) of an X.509 credential's leaf certificate.
pub(crate) fn serial_of(credential: &Credential) -> Option<String> {
    match credential {
        Credential::X509(chain) => chain
            .first()
            .and_then(|leaf| hsmls_credentials::leaf_info(&leaf.cert_data).ok())
            .map(|l| hex::encode(l.serial)),
        Credential::Basic(_) => None,
    }
}

/// Decodes a ratchet tree (`RatchetTree` encoding, as the DS serves it).
pub(crate) fn decode_tree(bytes: &[u8]) -> Option<RatchetTree> {
    RatchetTree::decode(bytes).ok()
}

/// The leaf index of the leaf with this signature key.
pub(crate) fn find_leaf(tree: &RatchetTree, signature_key: &[u8]) -> Option<LeafIndex> {
    tree.0.iter().enumerate().find_map(|(i, n)| match n {
        Some(Node::Leaf(l)) if i % 2 == 0 && l.signature_key.as_slice() == signature_key => {
            u32::try_from(i / 2).ok().map(LeafIndex)
        }
        _ => None,
    })
}

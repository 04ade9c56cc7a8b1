//! Reading members' LeafNode extensions: `application_id` (RFC 9420
//! §5.3.3).

use super::{Group, GroupError};
use crate::tree_math::LeafIndex;

impl Group {
    /// The `application_id` of the member at `index` (RFC 9420 §5.3.3):
    /// `Ok(None)` if the leaf has none, an error if the leaf is blank or
    /// the extension does not decode.
    pub fn application_id(&self, index: LeafIndex) -> Result<Option<Vec<u8>>, GroupError> {
        let leaf = self
            .state
            .tree
            .leaf(index)
            .ok_or(GroupError::NotAMember(index))?;
        crate::key_package::application_id(leaf)
            .transpose()
            .map_err(GroupError::Malformed)
    }
}

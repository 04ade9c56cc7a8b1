//! The group state machine (RFC 9420 §8-§12), sans-IO: bytes in, events
//! and bytes out.

mod error;
pub mod welcome;

pub use error::GroupError;

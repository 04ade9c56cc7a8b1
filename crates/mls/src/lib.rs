//! hsmls: the MLS protocol engine (RFC 9420), sans-IO.
#![forbid(unsafe_code)]

pub mod codec;
pub mod tree_math;

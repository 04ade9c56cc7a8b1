//! MLS cipher suites (RFC 9420 §5.1).
#![forbid(unsafe_code)]

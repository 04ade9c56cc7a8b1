//! The hsmls Delivery Service (RFC 9750 §5): a KeyPackage directory, one
//! commit per epoch, and durable fan-out stored once per group.
//!
//! One job per module:
//! - [`api`]: the wire API (always built: the client links it);
//! - [`client`]: an async DS client over HTTPS and WebSocket over TLS
//!   (always built);
//! - with the `server` feature (default): [`server`] (the service and its
//!   axum routes), [`store`] (the storage trait, SQLite and PostgreSQL),
//!   [`ordering`] (what the DS reads of a message and the order rules),
//!   [`directory`] (KeyPackages), [`fanout`] (cursors and push),
//!   [`auth`] (signed challenges and sessions), [`assisted`] (the public
//!   group state of assisted groups), [`seal`] (the keyed tags and sealed
//!   cells of the data at rest), [`loadgen`] (the open-loop load
//!   generator), [`config`] (the configuration file of `hsmls ds serve`).
//!
//! What each group mode shows the DS, and what is stored, is in
//! `docs/delivery-service.md`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod client;

#[cfg(feature = "server")]
pub mod assisted;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod directory;
#[cfg(feature = "server")]
pub mod error;
#[cfg(feature = "server")]
pub mod fanout;
#[cfg(feature = "server")]
pub mod loadgen;
#[cfg(feature = "server")]
pub mod ordering;
#[cfg(feature = "server")]
pub mod seal;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod store;

pub use client::{ClientError, DsClient};
#[cfg(feature = "server")]
pub use error::DsError;
#[cfg(feature = "server")]
pub use server::{Ds, DsConfig};

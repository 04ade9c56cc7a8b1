//! The hsmls client runtime: an MLS client (RFC 9420) whose private keys
//! live in a PKCS#11 token, running the client side of the MLS
//! architecture (RFC 9750) against the hsmls Authentication Service and
//! Delivery Service.
//!
//! A [`ClientRuntime`] owns
//!
//! - its key custody (a PKCS#11 token, or software for tests) and the
//!   token key that seals its saved state;
//! - its credential: it enrols with the AS (a one-time token and a
//!   certificate request signed in the token), checks the certificate's
//!   inclusion in the AS's transparency log, renews it before it expires,
//!   and refreshes the CRL and the log checkpoint on a schedule;
//! - its KeyPackages on the DS: a batch topped up when the count runs low,
//!   and one last-resort KeyPackage, replaced (and its keys destroyed in
//!   the token) once the DS reports it used;
//! - its groups, saved after every change (sealed) in one SQLite state
//!   file, so a restart resumes them;
//! - the DS connection: live push resuming from its saved cursors, fetch
//!   when push is down; acknowledgements only after the effect is saved
//!   (at-least-once delivery: duplicates are recognised);
//! - commit races: a commit that lost its epoch is rebuilt on the new
//!   epoch ([`hsmls::LostCommit::commit_options`]) and sent again, without
//!   the application;
//! - fork recovery: a member that cannot process a commit the DS accepted,
//!   or that missed commits, or lost its state, rejoins an assisted group
//!   by external commit and says so ([`ClientEvent::Rejoined`]);
//! - scheduled self-updates (post-compromise security) and the removal of
//!   members whose credentials the AS revoked;
//! - events for the application ([`ClientEvent`]).
//!
//! ```no_run
//! # async fn f() -> Result<(), hsmls_client::ClientError> {
//! use hsmls_client::{ClientConfig, ClientEvent, ClientRuntime, GroupMode};
//! let config = ClientConfig::from_file("alice.toml".as_ref())?;
//! let alice = ClientRuntime::open(config).await?;
//! if !alice.is_enrolled() {
//!     alice.enrol("one-time-token-from-the-operator").await?;
//! }
//! let mut events = alice.events();
//! alice.start();
//! let group = alice.create_group(GroupMode::Assisted).await?;
//! alice.add_members(&group, &["im:bob@example.org"]).await?;
//! alice.send(&group, b"hello bob").await?;
//! while let Some(e) = events.recv().await {
//!     if let ClientEvent::Message { sender, data, .. } = e {
//!         println!("{sender}: {}", String::from_utf8_lossy(&data));
//!     }
//! }
//! alice.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! `docs/client.md` describes the design: the order of saving and
//! acknowledging, what is stored, how races and forks are resolved.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
mod error;
mod event;
mod meta;
mod runtime;
mod safety;
mod wire;

pub use config::{
    AsConfig, ClientConfig, CustodyConfig, DsConfig, GroupPolicy, KeyPackagePolicy, Schedule,
};
pub use error::ClientError;
pub use event::{
    ClientEvent, CredentialProblem, ForkReason, GroupId, GroupMode, MemberInfo, OwnCredentialEvent,
};
pub use runtime::ClientRuntime;
pub use safety::{SAFETY_NUMBER_GROUP_DIGITS, SAFETY_NUMBER_GROUPS, safety_number};
pub use wire::{identity_of, x509_identity};

//! The hsmls Authentication Service (RFC 9750 §5): an X.509 CA whose
//! signing keys live in a PKCS#11 token, enrolment with one-time tokens and
//! PKCS#10 requests over HTTPS, renewal, revocation with a CRL signed in the
//! token, and a transparency log of every issuance and revocation whose
//! checkpoints are signed in the token. Members check credentials with
//! `hsmls_credentials::X509CredentialValidator`.
//!
//! * [`ca`]: the CA (rcgen over custody);
//! * [`csr`]: PKCS#10 checking (x509-cert + p256);
//! * [`store`]: storage behind one trait, SQLite and PostgreSQL;
//! * [`service`]: the operations, independent of HTTP;
//! * [`http`]: the HTTPS front (axum + rustls);
//! * [`config`]: the configuration file, `init`, the state directory.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ca;
pub mod config;
pub mod csr;
pub mod http;
pub mod service;
pub mod store;

pub use ca::{Ca, CaError, CaProfile};
pub use config::{AsConfig, ConfigError};
pub use service::{AsError, AuthService, ServiceConfig};
pub use store::{PgStore, SqliteStore, Store, StoreError};

//! The hsmls client of the public MLS interop harness
//! (github.com/mlswg/mls-implementations, `interop/`): the gRPC service
//! `mls_client.MLSClient` of `proto/mls_client.proto` over the hsmls
//! engine, for cipher suites 0x0001, 0x0002, 0x0003, 0x0005 and 0x0007
//! ([`SUPPORTED_SUITES`]) with basic credentials, with the members' private
//! keys in a [`hsmls_custody::KeyCustody`] backend (software, or a PKCS#11
//! token through a [`hsmls_custody::CustodyRouter`], which keeps the HPKE
//! keys the token cannot hold in software only when configured to).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod error;
pub mod service;

pub use error::InteropError;
pub use service::{InteropClient, SUPPORTED_SUITES};

/// The generated protobuf types, server and client of `mls_client.proto`.
#[allow(
    missing_debug_implementations,
    missing_docs,
    clippy::all,
    clippy::pedantic
)]
pub mod proto {
    tonic::include_proto!("mls_client");
    include!(concat!(env!("OUT_DIR"), "/mls_client_methods.rs"));
}

/// Serves `client` on `listener` until `shutdown` completes.
pub async fn serve(
    client: InteropClient,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(client.into_service())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
}

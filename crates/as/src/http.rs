//! The HTTPS front of the AS: axum 0.8 on rustls 0.23 (ring provider,
//! through axum-server's `tls-rustls-no-provider`), JSON bodies, RFC 9457
//! problem details for every refusal, a request body limit.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hsmls_credentials::api::{self, Finalize, NewOrder, Problem, Renew, RevokeCert};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::service::{AsError, AuthService};
use crate::store::Store;

/// The default request body limit (bytes): a CSR is well under 2 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

impl IntoResponse for AsError {
    fn into_response(self) -> Response {
        if matches!(self, AsError::Store(_) | AsError::Ca(_)) {
            tracing::error!("request failed: {self}");
        }
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let problem = Problem {
            kind: self.problem_type().to_owned(),
            title: self.title().to_owned(),
            status: self.status(),
            detail: match &self {
                // Internal failures are logged, not shown.
                AsError::Store(_) | AsError::Ca(_) => None,
                other => Some(other.to_string()),
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, AsError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AsError::TooLarge
        } else {
            AsError::Malformed(r.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| AsError::Malformed(e.to_string()))
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(value).unwrap_or_default(),
    )
        .into_response()
}

type Svc<S> = State<Arc<AuthService<S>>>;

async fn new_order<S: Store>(
    State(svc): Svc<S>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AsError> {
    let req: NewOrder = json_body(body)?;
    let order = svc.new_order(&req.identity, &req.token).await?;
    Ok(json(StatusCode::CREATED, &order))
}

async fn order<S: Store>(State(svc): Svc<S>, Path(id): Path<String>) -> Result<Response, AsError> {
    Ok(json(StatusCode::OK, &svc.order(&id).await?))
}

async fn finalize<S: Store>(
    State(svc): Svc<S>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AsError> {
    let req: Finalize = json_body(body)?;
    let csr =
        api::unb64(&req.csr).ok_or_else(|| AsError::Malformed("csr is not base64url".into()))?;
    Ok(json(StatusCode::OK, &svc.finalize(&id, &csr).await?))
}

async fn cert<S: Store>(State(svc): Svc<S>, Path(id): Path<String>) -> Result<Response, AsError> {
    Ok(json(StatusCode::OK, &svc.certificate(&id).await?))
}

async fn renew<S: Store>(
    State(svc): Svc<S>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AsError> {
    let req: Renew = json_body(body)?;
    Ok(json(StatusCode::CREATED, &svc.renew(&req).await?))
}

async fn revoke_cert<S: Store>(
    State(svc): Svc<S>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AsError> {
    let req: RevokeCert = json_body(body)?;
    svc.revoke_cert(&req).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({})))
}

async fn crl<S: Store>(State(svc): Svc<S>) -> Result<Response, AsError> {
    let der = svc.crl().await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/pkix-crl")],
        der,
    )
        .into_response())
}

async fn checkpoint<S: Store>(State(svc): Svc<S>) -> Result<Response, AsError> {
    let note = svc.checkpoint().await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        note,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct InclusionQuery {
    cert_hash: String,
    tree_size: u64,
}

async fn inclusion<S: Store>(
    State(svc): Svc<S>,
    query: Result<Query<InclusionQuery>, QueryRejection>,
) -> Result<Response, AsError> {
    let Query(q) = query.map_err(|e| AsError::Malformed(e.body_text()))?;
    let hash: [u8; 32] = api::unb64(&q.cert_hash)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| AsError::Malformed("cert_hash is not a base64url SHA-256".into()))?;
    Ok(json(
        StatusCode::OK,
        &svc.inclusion_proof(&hash, q.tree_size).await?,
    ))
}

#[derive(Debug, Deserialize)]
struct ConsistencyQuery {
    first: u64,
    second: u64,
}

async fn consistency<S: Store>(
    State(svc): Svc<S>,
    query: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Response, AsError> {
    let Query(q) = query.map_err(|e| AsError::Malformed(e.body_text()))?;
    Ok(json(
        StatusCode::OK,
        &svc.consistency_proof(q.first, q.second).await?,
    ))
}

async fn not_found() -> AsError {
    AsError::NotFound
}

/// The AS's routes (resource names as in [`hsmls_credentials::api`]).
pub fn router<S: Store>(service: Arc<AuthService<S>>, body_limit: usize) -> Router {
    Router::new()
        .route("/new-order", post(new_order::<S>))
        .route("/order/{id}", get(order::<S>))
        .route("/order/{id}/finalize", post(finalize::<S>))
        .route("/cert/{id}", get(cert::<S>))
        .route("/renew", post(renew::<S>))
        .route("/revoke-cert", post(revoke_cert::<S>))
        .route("/crl", get(crl::<S>))
        .route("/log/checkpoint", get(checkpoint::<S>))
        .route("/log/proof/inclusion", get(inclusion::<S>))
        .route("/log/proof/consistency", get(consistency::<S>))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(service)
}

/// The rustls server configuration for the AS's TLS certificate chain
/// (leaf first) and its PKCS#8 key.
pub fn tls_config(
    chain: Vec<Vec<u8>>,
    pkcs8_key: Vec<u8>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(hsmls_credentials::client::crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                chain.into_iter().map(CertificateDer::from).collect(),
                PrivateKeyDer::Pkcs8(pkcs8_key.into()),
            )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A running AS server.
#[derive(Debug)]
pub struct Server {
    /// The address it listens on.
    pub addr: SocketAddr,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Serves `service` over TLS on `listener`.
    pub async fn start<S: Store>(
        service: Arc<AuthService<S>>,
        listener: std::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
        body_limit: usize,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let handle = axum_server::Handle::new();
        let app = router(service, body_limit);
        let server = axum_server::from_tcp_rustls(
            listener,
            axum_server::tls_rustls::RustlsConfig::from_config(tls),
        )?
        .handle(handle.clone());
        let task = tokio::spawn(async move { server.serve(app.into_make_service()).await });
        Ok(Server { addr, handle, task })
    }

    /// Stops accepting, lets open requests finish, and waits.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.handle
            .graceful_shutdown(Some(std::time::Duration::from_secs(5)));
        self.task
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
    }

    /// Waits until the server stops.
    pub async fn wait(self) -> std::io::Result<()> {
        self.task
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
    }
}

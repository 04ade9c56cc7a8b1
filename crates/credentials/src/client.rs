//! An async HTTPS client of the Authentication Service (hyper over
//! tokio-rustls, the ring provider; the AS's root certificate is the only
//! trust anchor for the TLS connection).

use std::fmt;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::api::{
    self, CertificateChain, ConsistencyProof, Finalize, InclusionProof, NewOrder, Order, Problem,
    Renew, RevokeCert, b64,
};
use crate::tlog::Hash;

/// The largest response body read (bytes).
pub const MAX_RESPONSE_LEN: usize = 4 * 1024 * 1024;

/// Why a request to the AS failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL is not `https://host:port`.
    #[error("bad AS URL: {0}")]
    BadUrl(String),
    /// TCP or TLS failed.
    #[error("connection to the AS failed: {0}")]
    Connect(String),
    /// HTTP failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// The AS answered with a problem (RFC 9457).
    #[error("the AS refused: {} ({}) {}", .0.kind, .0.status, .0.detail.as_deref().unwrap_or(""))]
    Problem(Problem),
    /// The answer did not decode.
    #[error("bad answer from the AS: {0}")]
    Decode(String),
}

impl ClientError {
    /// The problem type, when the AS answered with a problem.
    pub fn problem_type(&self) -> Option<&str> {
        match self {
            ClientError::Problem(p) => Some(&p.kind),
            _ => None,
        }
    }
}

/// A client of one AS.
#[derive(Clone)]
pub struct AsClient {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    connector: tokio_rustls::TlsConnector,
}

impl fmt::Debug for AsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsClient")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// The rustls crypto provider of hsmls' TLS (ring; no aws-lc C build).
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl AsClient {
    /// A client of the AS at `base` (`https://host:port`), trusting
    /// `root_der` (the AS root certificate) for TLS.
    pub fn new(base: &str, root_der: &[u8]) -> Result<Self, ClientError> {
        let rest = base
            .strip_prefix("https://")
            .ok_or_else(|| ClientError::BadUrl(base.into()))?
            .trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| ClientError::BadUrl(base.into()))?;
        let port: u16 = port.parse().map_err(|_| ClientError::BadUrl(base.into()))?;
        let server_name =
            ServerName::try_from(host.to_owned()).map_err(|_| ClientError::BadUrl(base.into()))?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(root_der.to_vec()))
            .map_err(|e| ClientError::Connect(format!("bad root certificate: {e}")))?;
        let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Connect(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(AsClient {
            host: host.to_owned(),
            port,
            server_name,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// Sends one request on a fresh connection; returns status, content
    /// type and body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<(StatusCode, String, Bytes), ClientError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/{}", path.trim_start_matches('/')))
            .header(header::HOST, format!("{}:{}", self.host, self.port));
        let body = match body {
            Some((bytes, content_type)) => {
                req = req.header(header::CONTENT_TYPE, content_type);
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req
            .body(body)
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_LEN)
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        drop(sender);
        driver.abort();
        Ok((status, content_type, bytes))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(b) => Some((
                serde_json::to_vec(b).map_err(|e| ClientError::Decode(e.to_string()))?,
                "application/json",
            )),
            None => None,
        };
        let bytes = self.checked(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn checked(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<Bytes, ClientError> {
        let (status, content_type, bytes) = self.raw(method, path, body).await?;
        if status.is_success() {
            return Ok(bytes);
        }
        if content_type.starts_with("application/problem+json")
            && let Ok(p) = serde_json::from_slice::<Problem>(&bytes)
        {
            return Err(ClientError::Problem(p));
        }
        Err(ClientError::Http(format!("status {status}")))
    }

    /// `new-order`.
    pub async fn new_order(&self, identity: &str, token: &str) -> Result<Order, ClientError> {
        let body = NewOrder {
            identity: identity.into(),
            token: token.into(),
        };
        self.call(Method::POST, "new-order", Some(&body)).await
    }

    /// `order/{id}/finalize` with a DER CSR.
    pub async fn finalize(&self, order: &Order, csr_der: &[u8]) -> Result<Order, ClientError> {
        let body = Finalize { csr: b64(csr_der) };
        self.call(Method::POST, &order.finalize, Some(&body)).await
    }

    /// `cert/{id}`.
    pub async fn certificate(&self, path: &str) -> Result<CertificateChain, ClientError> {
        self.call::<CertificateChain>(Method::GET, path, None::<&()>)
            .await
    }

    /// The whole enrolment: new order, finalize with the CSR, fetch the
    /// chain.
    pub async fn enrol(
        &self,
        identity: &str,
        token: &str,
        csr_der: &[u8],
    ) -> Result<CertificateChain, ClientError> {
        let order = self.new_order(identity, token).await?;
        let order = self.finalize(&order, csr_der).await?;
        let cert = order
            .certificate
            .ok_or_else(|| ClientError::Decode("finalized order without a certificate".into()))?;
        self.certificate(&cert).await
    }

    /// `renew`.
    pub async fn renew(&self, request: &Renew) -> Result<CertificateChain, ClientError> {
        self.call(Method::POST, "renew", Some(request)).await
    }

    /// `revoke-cert`.
    pub async fn revoke(&self, request: &RevokeCert) -> Result<(), ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.checked(
            Method::POST,
            "revoke-cert",
            Some((body, "application/json")),
        )
        .await
        .map(|_| ())
    }

    /// `crl`: the current DER CRL.
    pub async fn crl(&self) -> Result<Vec<u8>, ClientError> {
        Ok(self.checked(Method::GET, "crl", None).await?.to_vec())
    }

    /// `log/checkpoint`: the signed note of the latest checkpoint.
    pub async fn checkpoint(&self) -> Result<String, ClientError> {
        let bytes = self.checked(Method::GET, "log/checkpoint", None).await?;
        String::from_utf8(bytes.to_vec()).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `log/proof/inclusion` of the certificate with SHA-256 `cert_hash`
    /// in the tree of `tree_size` leaves.
    pub async fn inclusion_proof(
        &self,
        cert_hash: &Hash,
        tree_size: u64,
    ) -> Result<InclusionProof, ClientError> {
        self.call(
            Method::GET,
            &format!(
                "log/proof/inclusion?cert_hash={}&tree_size={tree_size}",
                api::b64(cert_hash)
            ),
            None::<&()>,
        )
        .await
    }

    /// `log/proof/consistency` between two tree sizes.
    pub async fn consistency_proof(
        &self,
        first: u64,
        second: u64,
    ) -> Result<ConsistencyProof, ClientError> {
        self.call(
            Method::GET,
            &format!("log/proof/consistency?first={first}&second={second}"),
            None::<&()>,
        )
        .await
    }
}

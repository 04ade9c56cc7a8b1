//! An async client of the Delivery Service (HTTPS and WebSocket over TLS,
//! HTTP/1.1), for the client runtime and the tests. It needs none of the
//! server's dependencies (`default-features = false`).
//!
//! The connection is always TLS (rustls 0.23, the ring provider): the
//! client trusts the roots it is given (PEM), never the system's, and a
//! base URL other than `https://` is refused
//! ([`ClientError::BadUrl`]). HTTP connections are kept and reused
//! (HTTP/1.1 keep-alive, one TLS handshake per connection).
//!
//! ```no_run
//! # async fn f(signer: hsmls::Signer) -> Result<(), hsmls_ds::ClientError> {
//! let root_pem = std::fs::read("ds-root.pem").unwrap();
//! let ds = hsmls_ds::DsClient::new("https://127.0.0.1:8443", &root_pem)?;
//! ds.authenticate(&signer).await?;
//! let batch = ds.fetch(100).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::api::{
    AUTH_LABEL, Accepted, Ack, Challenge, ClaimRequest, ClaimedKeyPackage, ClientFrame,
    CommitBundle, CreateGroup, GroupPosition, KeyPackageCounts, MESSAGE_MLS, Problem,
    PublishKeyPackages, QueueBatch, QueuedMessage, SendFrame, ServerFrame, Session, SessionRequest,
    b64,
};

/// Why a DS request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL is not `https://host:port` (plain HTTP is refused).
    #[error("bad DS URL: {0}")]
    BadUrl(String),
    /// The trusted roots are not PEM certificates, or none was given.
    #[error("bad TLS roots: {0}")]
    BadRoots(String),
    /// The connection (TCP or TLS) or the HTTP exchange failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The DS refused the request (RFC 9457 problem details).
    #[error("refused ({}): {}", .0.status, .0.problem_type)]
    Refused(Problem),
    /// The DS's answer does not decode.
    #[error("unexpected answer: {0}")]
    UnexpectedAnswer(String),
    /// Signing the challenge failed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// No session: call [`DsClient::authenticate`] first.
    #[error("not authenticated")]
    NotAuthenticated,
}

impl ClientError {
    /// The problem, if the DS refused.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ClientError::Refused(p) => Some(p),
            _ => None,
        }
    }
}

/// The rustls crypto provider of the DS's TLS (ring, as the AS's).
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration trusting exactly the certificates in
/// `roots_pem` (one or more PEM `CERTIFICATE` blocks), HTTP/1.1 by ALPN.
pub fn tls_client_config(roots_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem) {
        let cert = cert.map_err(|e| ClientError::BadRoots(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| ClientError::BadRoots(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ClientError::BadRoots("no certificate".into()));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::BadRoots(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Where a DS is: `https://host:port`.
#[derive(Debug, Clone)]
struct Endpoint {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
}

impl Endpoint {
    fn parse(base: &str) -> Result<Self, ClientError> {
        let uri: Uri = base
            .parse()
            .map_err(|e| ClientError::BadUrl(format!("{base}: {e}")))?;
        if uri.scheme_str() != Some("https") {
            return Err(ClientError::BadUrl(format!(
                "{base}: only https:// (the DS speaks TLS only)"
            )));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(ClientError::BadUrl(format!(
                "{base}: a path is not expected"
            )));
        }
        let host = uri
            .host()
            .ok_or_else(|| ClientError::BadUrl(format!("{base}: no host")))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let server_name = ServerName::try_from(host.clone())
            .map_err(|e| ClientError::BadUrl(format!("{base}: {e}")))?;
        Ok(Endpoint {
            port: uri.port_u16().unwrap_or(443),
            host,
            server_name,
        })
    }

    /// A TCP connection (no Nagle: small requests and frames) with TLS on
    /// top.
    async fn connect(
        &self,
        tls: &tokio_rustls::TlsConnector,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        tls.connect(self.server_name.clone(), tcp).await
    }
}

/// The connector of the HTTP client: TCP, then TLS.
#[derive(Clone)]
struct TlsConnect {
    endpoint: Arc<Endpoint>,
    tls: tokio_rustls::TlsConnector,
}

impl tower_service::Service<Uri> for TlsConnect {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TlsIo>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        // Every request of this client goes to its one endpoint.
        let (endpoint, tls) = (self.endpoint.clone(), self.tls.clone());
        Box::pin(async move { Ok(TlsIo(TokioIo::new(endpoint.connect(&tls).await?))) })
    }
}

/// A TLS connection as hyper reads and writes it.
struct TlsIo(TokioIo<TlsStream<TcpStream>>);

impl hyper::rt::Read for TlsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
}

impl Connection for TlsIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// A client of one DS.
pub struct DsClient {
    base: String,
    endpoint: Arc<Endpoint>,
    tls: tokio_rustls::TlsConnector,
    http: Client<TlsConnect, Full<Bytes>>,
    session: Mutex<Option<Session>>,
}

impl std::fmt::Debug for DsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DsClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl DsClient {
    /// A client of the DS at `base` (`https://host:port`) trusting the
    /// certificates of `roots_pem` (PEM) for its TLS certificate.
    pub fn new(base: &str, roots_pem: &[u8]) -> Result<Self, ClientError> {
        Self::with_tls_config(base, tls_client_config(roots_pem)?)
    }

    /// A client of the DS at `base` (`https://host:port`) with its own
    /// rustls configuration (e.g. shared by many clients, or with a
    /// client certificate).
    pub fn with_tls_config(
        base: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/');
        let endpoint = Arc::new(Endpoint::parse(base)?);
        let tls = tokio_rustls::TlsConnector::from(config);
        let connect = TlsConnect {
            endpoint: endpoint.clone(),
            tls: tls.clone(),
        };
        Ok(DsClient {
            base: base.to_string(),
            endpoint,
            tls,
            http: Client::builder(TokioExecutor::new()).build(connect),
            session: Mutex::new(None),
        })
    }

    /// The current session.
    pub fn session(&self) -> Option<Session> {
        self.session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Uses an existing session.
    pub fn set_session(&self, session: Session) {
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(session);
    }

    fn token(&self) -> Result<String, ClientError> {
        self.session()
            .map(|s| s.token)
            .ok_or(ClientError::NotAuthenticated)
    }

    fn queue(&self) -> Result<String, ClientError> {
        self.session()
            .map(|s| b64::encode(&s.queue_id))
            .ok_or(ClientError::NotAuthenticated)
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        auth: bool,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        if auth {
            req = req.header(header::AUTHORIZATION, format!("Bearer {}", self.token()?));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let p: Problem = serde_json::from_slice(&body).map_err(|_| {
                ClientError::UnexpectedAnswer(format!("status {status} without a problem"))
            })?;
            return Err(ClientError::Refused(p));
        }
        Ok((status, body))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        auth: bool,
    ) -> Result<T, ClientError> {
        let ct = body.as_ref().map(|_| "application/json");
        let (_, b) = self
            .request(method, path, ct, body.unwrap_or_default(), auth)
            .await?;
        serde_json::from_slice(&b).map_err(|e| ClientError::UnexpectedAnswer(e.to_string()))
    }

    fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, ClientError> {
        serde_json::to_vec(v).map_err(|e| ClientError::UnexpectedAnswer(e.to_string()))
    }

    /// Proves that this client holds the key of its credential: asks for a
    /// challenge, signs it with `signer`'s key in its custody (on a
    /// blocking thread: a token call blocks), and opens a session.
    pub async fn authenticate(&self, signer: &hsmls::Signer) -> Result<Session, ClientError> {
        let challenge: Challenge = self
            .json(Method::POST, "/v1/auth/challenge", None, false)
            .await?;
        let signer = signer.clone();
        let tbs = challenge.to_be_signed();
        let suite = match signer.signature_key.spec() {
            hsmls_custody::KeySpec::Signature(scheme) => crate::api::auth_suite(scheme),
            _ => None,
        }
        .ok_or_else(|| ClientError::Signing("not a signature key of an MLS suite".into()))?;
        let (signature, key, credential) = tokio::task::spawn_blocking(move || {
            use hsmls::wire::Encode;
            let cs = hsmls_crypto::CipherSuite(suite)
                .provider()
                .map_err(|e| ClientError::Signing(e.to_string()))?;
            let sig = cs
                .sign_with_label(
                    signer.custody.as_ref(),
                    &signer.signature_key,
                    AUTH_LABEL,
                    &tbs,
                )
                .map_err(|e| ClientError::Signing(e.to_string()))?;
            let cred = signer
                .credential
                .encode()
                .map_err(|e| ClientError::Signing(e.to_string()))?;
            Ok::<_, ClientError>((sig, signer.signature_public_key().0, cred))
        })
        .await
        .map_err(|e| ClientError::Signing(e.to_string()))??;
        let req = SessionRequest {
            challenge,
            credential,
            signature_key: key,
            signature,
            cipher_suite: suite,
        };
        let session: Session = self
            .json(
                Method::POST,
                "/v1/auth/session",
                Some(Self::to_json(&req)?),
                false,
            )
            .await?;
        self.set_session(session.clone());
        Ok(session)
    }

    /// Publishes own KeyPackages (`MLSMessage`s); returns the counts.
    pub async fn publish_key_packages(
        &self,
        key_packages: Vec<Vec<u8>>,
    ) -> Result<KeyPackageCounts, ClientError> {
        let body = Self::to_json(&PublishKeyPackages { key_packages })?;
        self.json(Method::POST, "/v1/key-packages", Some(body), true)
            .await
    }

    /// Own KeyPackage counts.
    pub async fn key_package_counts(&self) -> Result<KeyPackageCounts, ClientError> {
        self.json(Method::GET, "/v1/key-packages", None, true).await
    }

    /// Claims a KeyPackage of the client named `identity`.
    pub async fn claim_key_package(
        &self,
        identity: &[u8],
    ) -> Result<ClaimedKeyPackage, ClientError> {
        let body = Self::to_json(&ClaimRequest {
            identity: identity.to_vec(),
        })?;
        self.json(Method::POST, "/v1/key-packages/claim", Some(body), true)
            .await
    }

    /// Creates a group.
    pub async fn create_group(&self, req: &CreateGroup) -> Result<(), ClientError> {
        self.request(
            Method::POST,
            "/v1/groups",
            Some("application/json"),
            Self::to_json(req)?,
            true,
        )
        .await
        .map(drop)
    }

    /// Sends a commit bundle. A lost epoch is `Refused` with problem kind
    /// `stale-commit` and the current epoch.
    pub async fn send_commit(&self, bundle: &CommitBundle) -> Result<Accepted, ClientError> {
        self.json(
            Method::POST,
            "/v1/commit-bundles",
            Some(Self::to_json(bundle)?),
            true,
        )
        .await
    }

    /// Sends an application message or proposal (`message/mls`).
    pub async fn send_message(&self, message: &[u8]) -> Result<Accepted, ClientError> {
        let (_, b) = self
            .request(
                Method::POST,
                "/v1/messages",
                Some(MESSAGE_MLS),
                message.to_vec(),
                true,
            )
            .await?;
        serde_json::from_slice(&b).map_err(|e| ClientError::UnexpectedAnswer(e.to_string()))
    }

    /// Sends raw bytes to a path (for tests of malformed requests).
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        let m = Method::from_bytes(method.as_bytes())
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let auth = self.session().is_some();
        self.request(m, path, Some(content_type), body, auth)
            .await
            .map(|(_, b)| b.to_vec())
    }

    /// What is after this client's cursors.
    pub async fn fetch(&self, limit: u32) -> Result<QueueBatch, ClientError> {
        let path = format!("/v1/queues/{}/messages?limit={limit}", self.queue()?);
        self.json(Method::GET, &path, None, true).await
    }

    /// Acknowledges.
    pub async fn ack(&self, ack: &Ack) -> Result<(), ClientError> {
        let path = format!("/v1/queues/{}/ack", self.queue()?);
        self.request(
            Method::POST,
            &path,
            Some("application/json"),
            Self::to_json(ack)?,
            true,
        )
        .await
        .map(drop)
    }

    /// Assisted mode: the group's current GroupInfo (`MLSMessage`).
    pub async fn group_info(&self, group_id: &[u8]) -> Result<Vec<u8>, ClientError> {
        let path = format!("/v1/groups/{}/group-info", b64::encode(group_id));
        Ok(self
            .request(Method::GET, &path, None, vec![], true)
            .await?
            .1
            .to_vec())
    }

    /// Assisted mode: the group's ratchet tree (`RatchetTree` encoding).
    pub async fn ratchet_tree(&self, group_id: &[u8]) -> Result<Vec<u8>, ClientError> {
        let path = format!("/v1/groups/{}/ratchet-tree", b64::encode(group_id));
        Ok(self
            .request(Method::GET, &path, None, vec![], true)
            .await?
            .1
            .to_vec())
    }

    /// Opens the push connection, resuming after `positions` (groups not
    /// named resume from the stored cursors).
    pub async fn push(&self, positions: Vec<GroupPosition>) -> Result<PushStream, ClientError> {
        let url = format!(
            "{}/v1/queues/{}/ws",
            self.base.replacen("https", "wss", 1),
            self.queue()?
        );
        let mut req = url
            .into_client_request()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let auth = format!("Bearer {}", self.token()?)
            .parse()
            .map_err(|_| ClientError::NotAuthenticated)?;
        req.headers_mut().insert(header::AUTHORIZATION, auth);
        let tls = self
            .endpoint
            .connect(&self.tls)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let (ws, _) = tokio_tungstenite::client_async(req, tls)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let stream = PushStream::start(ws);
        stream.send(&ClientFrame::Resume { positions }).await?;
        Ok(stream)
    }
}

/// Frames read ahead of [`PushStream::next`] at most; past this the
/// reader stops reading (the DS's writes wait in the socket).
const PUSH_BUFFER: usize = 1024;

/// The answers awaited by the [`MessageSender`]s of a connection.
type Pending = Arc<Mutex<PendingSends>>;

#[derive(Default)]
struct PendingSends {
    next_id: u64,
    waiting:
        std::collections::HashMap<u64, tokio::sync::oneshot::Sender<Result<Accepted, ClientError>>>,
    /// Set when the connection ended: later sends fail at once.
    closed: bool,
}

/// A live push connection: what the DS pushes ([`PushStream::next`]),
/// acknowledgements, and messages sent on it ([`PushStream::sender`]).
///
/// A reader task reads the socket (answers to sends go to their senders,
/// the rest to [`PushStream::next`]); a writer task writes what is
/// queued, several frames per flush. Dropping the stream stops both.
pub struct PushStream {
    frames: tokio::sync::mpsc::Receiver<Result<ServerFrame, ClientError>>,
    out: tokio::sync::mpsc::UnboundedSender<WsMessage>,
    pending: Pending,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for PushStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushStream").finish_non_exhaustive()
    }
}

impl Drop for PushStream {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        fail_pending(&self.pending);
    }
}

/// Fails every awaited send: the connection is gone.
fn fail_pending(pending: &Pending) {
    let waiting = {
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        p.closed = true;
        std::mem::take(&mut p.waiting)
    };
    for (_, w) in waiting {
        let _ = w.send(Err(ClientError::Transport("push connection closed".into())));
    }
}

impl PushStream {
    fn start(ws: tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>) -> Self {
        let (mut sink, mut source) = ws.split();
        let (frames_tx, frames) = tokio::sync::mpsc::channel(PUSH_BUFFER);
        let (out, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<WsMessage>();
        let pending: Pending = Arc::default();
        let writer = tokio::spawn(async move {
            while let Some(first) = out_rx.recv().await {
                let close = matches!(first, WsMessage::Close(_));
                if sink.feed(first).await.is_err() {
                    return;
                }
                // What else is queued goes out in the same write.
                while let Ok(m) = out_rx.try_recv() {
                    if sink.feed(m).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() || close {
                    return;
                }
            }
        });
        let reader_pending = pending.clone();
        let reader = tokio::spawn(async move {
            loop {
                let frame = match source.next().await {
                    Some(Ok(WsMessage::Text(t))) => {
                        match serde_json::from_str::<ServerFrame>(t.as_str()) {
                            Ok(ServerFrame::Accepted { id, accepted }) => {
                                answer(&reader_pending, id, Ok(accepted));
                                continue;
                            }
                            Ok(ServerFrame::Refused { id, problem }) => {
                                answer(&reader_pending, id, Err(ClientError::Refused(problem)));
                                continue;
                            }
                            Ok(f) => Ok(f),
                            Err(e) => Err(ClientError::UnexpectedAnswer(e.to_string())),
                        }
                    }
                    Some(Ok(WsMessage::Binary(b))) => QueuedMessage::decode_frame(&b)
                        .map(ServerFrame::Message)
                        .map_err(|e| ClientError::UnexpectedAnswer(e.to_string())),
                    Some(Ok(WsMessage::Close(_))) | None => break,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => Err(ClientError::Transport(e.to_string())),
                };
                let failed = frame.is_err();
                if frames_tx.send(frame).await.is_err() || failed {
                    break;
                }
            }
            fail_pending(&reader_pending);
        });
        PushStream {
            frames,
            out,
            pending,
            reader,
            writer,
        }
    }

    async fn send(&self, frame: &ClientFrame) -> Result<(), ClientError> {
        let text =
            serde_json::to_string(frame).map_err(|e| ClientError::Transport(e.to_string()))?;
        self.out
            .send(WsMessage::Text(text.into()))
            .map_err(|_| ClientError::Transport("push connection closed".into()))
    }

    /// The next pushed message or Welcome; `None` when the DS closed.
    /// (Cancel-safe: a frame is never lost to a dropped call.)
    pub async fn next(&mut self) -> Option<Result<ServerFrame, ClientError>> {
        self.frames.recv().await
    }

    /// Acknowledges on the connection.
    pub async fn ack(&mut self, ack: Ack) -> Result<(), ClientError> {
        self.send(&ClientFrame::Ack(ack)).await
    }

    /// A handle that sends messages on this connection (cheaper than
    /// [`DsClient::send_message`]: no HTTP request per message). Its sends
    /// fail with [`ClientError::Transport`] once the connection ends.
    pub fn sender(&self) -> MessageSender {
        MessageSender {
            out: self.out.clone(),
            pending: self.pending.clone(),
        }
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = self.out.send(WsMessage::Close(None));
        // The writer ends after sending the close frame.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), &mut self.writer).await;
    }
}

/// Routes an answer to its waiting send.
fn answer(pending: &Pending, id: u64, result: Result<Accepted, ClientError>) {
    let waiting = pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .waiting
        .remove(&id);
    if let Some(w) = waiting {
        let _ = w.send(result);
    }
}

/// Sends application messages and proposals on a push connection
/// ([`PushStream::sender`]); clones share the connection.
#[derive(Clone)]
pub struct MessageSender {
    out: tokio::sync::mpsc::UnboundedSender<WsMessage>,
    pending: Pending,
}

impl std::fmt::Debug for MessageSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageSender").finish_non_exhaustive()
    }
}

impl MessageSender {
    /// Sends an application message or proposal (`MLSMessage`) and waits
    /// for the DS's answer: as [`DsClient::send_message`].
    pub async fn send(&self, message: &[u8]) -> Result<Accepted, ClientError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let id = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.closed {
                return Err(ClientError::Transport("push connection closed".into()));
            }
            p.next_id += 1;
            let id = p.next_id;
            p.waiting.insert(id, tx);
            id
        };
        let frame = SendFrame {
            request_id: id,
            message,
        }
        .encode();
        if self.out.send(WsMessage::Binary(frame.into())).is_err() {
            answer(
                &self.pending,
                id,
                Err(ClientError::Transport("push connection closed".into())),
            );
        }
        rx.await
            .unwrap_or_else(|_| Err(ClientError::Transport("push connection closed".into())))
    }
}

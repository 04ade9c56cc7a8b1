//! An open-loop load generator for the DS, on loopback.
//!
//! Message `i` has an intended send time `start + i / rate`; it is sent
//! then whether or not earlier messages were answered (open loop: a slow
//! server does not slow the generator down, so queueing shows in the
//! latencies), and every latency is measured from the intended time, not
//! from the actual send (no coordinated omission). Runs are bounded in
//! count and time.
//!
//! The group is a blind-mode group whose members are real clients of the
//! DS (signed challenges, real KeyPackages published and claimed); the
//! messages are well-framed PrivateMessages of the group (the DS reads
//! only the framing) carrying the message index in their first 8 bytes,
//! so that receivers measure the delivery latency and check order and
//! completeness. Every member but none of the senders' own sockets is
//! pushed to over its WebSocket and acknowledges as it goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hsmls::wire::{CipherSuite, ContentType, Credential, WireFormat};
use hsmls::{BasicCredentialValidator, Client, KeyPackageConfig, KeyPackageIn, Signer};
use tokio::sync::Mutex;

use crate::api::{Ack, CommitBundle, CreateGroup, GroupMode, GroupPosition, ServerFrame};
use crate::client::DsClient;

/// A load run's parameters.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Messages per second (the intended rate).
    pub rate: f64,
    /// The longest the sending lasts.
    pub duration: Duration,
    /// The most messages sent.
    pub max_messages: u64,
    /// The size of each message's ciphertext (bytes).
    pub payload: usize,
    /// How many members send (round robin).
    pub senders: usize,
    /// How long to wait for the last deliveries after the last send.
    pub drain: Duration,
    /// Requests in flight per sender at most (with HTTP, its HTTP/1.1
    /// connections): a message whose turn comes while all are busy waits
    /// for one, and the wait counts in its latency.
    pub in_flight: usize,
    /// How the senders send.
    pub transport: SendTransport,
}

/// How the load generator's senders send their messages.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SendTransport {
    /// On the sender's push connection (binary frames, answered on it).
    #[default]
    WebSocket,
    /// `POST /v1/messages`, one HTTPS request each.
    Http,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            rate: 1000.0,
            duration: Duration::from_secs(5),
            max_messages: 100_000,
            payload: 256,
            senders: 8,
            drain: Duration::from_secs(20),
            in_flight: 32,
            transport: SendTransport::default(),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Messages sent.
    pub sent: u64,
    /// Messages the DS accepted.
    pub accepted: u64,
    /// Messages refused or failed.
    pub failed: u64,
    /// Accepted messages per second (from the start to the last answer).
    pub accepted_per_sec: f64,
    /// Deliveries (messages pushed to members, summed over members).
    pub deliveries: u64,
    /// Deliveries expected (accepted times members).
    pub expected_deliveries: u64,
    /// Deliveries per second (from the start to the last delivery).
    pub deliveries_per_sec: f64,
    /// Accept latency from the intended send time (ms): p50.
    pub accept_p50_ms: f64,
    /// p99.
    pub accept_p99_ms: f64,
    /// Delivery latency from the intended send time (ms): p50.
    pub deliver_p50_ms: f64,
    /// p99.
    pub deliver_p99_ms: f64,
    /// Deliveries out of order or twice (must be 0).
    pub order_violations: u64,
    /// The first failure's error, if any failed.
    pub first_error: Option<String>,
}

/// A blind-mode group of DS clients, set up for a run.
#[derive(Debug)]
pub struct LoadGroup {
    /// The group id.
    pub group_id: Vec<u8>,
    /// Its members (the first created it), each with a session.
    pub members: Vec<Arc<DsClient>>,
    /// The group's epoch.
    pub epoch: u64,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Appends `bytes` with its variable-size length prefix (RFC 9420 §2.1.2).
fn put_vl(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len();
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.extend_from_slice(&(0x4000 | n as u16).to_be_bytes());
    } else {
        // Synthetic messages stay far below 2^30 bytes.
        out.extend_from_slice(&(0x8000_0000 | n as u32).to_be_bytes());
    }
    out.extend_from_slice(bytes);
}

/// Splits a variable-size length-prefixed field off `bytes`.
fn take_vl(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let first = *bytes.first()?;
    let (len, head) = match first >> 6 {
        0 => (usize::from(first), 1),
        1 => (
            usize::from(u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?) & 0x3fff),
            2,
        ),
        2 => (
            (u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) & 0x3fff_ffff) as usize,
            4,
        ),
        _ => return None,
    };
    let rest = bytes.get(head..)?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// The `MLSMessage` header: version mls10 and `wire_format`.
fn mls_message_header(wire_format: WireFormat) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&wire_format.0.to_be_bytes());
    out
}

/// A well-framed PrivateMessage of the group (the DS reads only the
/// framing; RFC 9420 §6.3), carrying `index` in the first 8 bytes of its
/// ciphertext.
pub fn synthetic_message(
    group_id: &[u8],
    epoch: u64,
    content_type: ContentType,
    index: u64,
    payload: usize,
) -> Vec<u8> {
    let mut ciphertext = vec![0x5a; payload.max(8)];
    ciphertext[..8].copy_from_slice(&index.to_be_bytes());
    let mut out = mls_message_header(WireFormat::PRIVATE_MESSAGE);
    put_vl(&mut out, group_id);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.push(content_type as u8);
    put_vl(&mut out, &[]);
    put_vl(&mut out, &[0x11; 16]);
    put_vl(&mut out, &ciphertext);
    out
}

/// The index a synthetic message carries.
pub fn message_index(bytes: &[u8]) -> Option<u64> {
    let rest = bytes.strip_prefix(&mls_message_header(WireFormat::PRIVATE_MESSAGE)[..])?;
    let (_group_id, rest) = take_vl(rest)?;
    let rest = rest.get(9..)?; // epoch, content type
    let (_aad, rest) = take_vl(rest)?;
    let (_sender_data, rest) = take_vl(rest)?;
    let (ciphertext, rest) = take_vl(rest)?;
    if !rest.is_empty() || ciphertext.len() < 8 {
        return None;
    }
    Some(u64::from_be_bytes(ciphertext[..8].try_into().ok()?))
}

/// A Welcome (RFC 9420 §12.4.3.1) whose `secrets[].new_member` are
/// `refs`; its encrypted parts are filler (the DS routes by the refs
/// only).
pub fn synthetic_welcome(refs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = mls_message_header(WireFormat::WELCOME);
    out.extend_from_slice(
        &CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256
            .0
            .to_be_bytes(),
    );
    let mut secrets = Vec::new();
    for r in refs {
        put_vl(&mut secrets, r);
        put_vl(&mut secrets, &[4; 65]); // kem_output
        put_vl(&mut secrets, &[0; 48]); // ciphertext
    }
    put_vl(&mut out, &secrets);
    put_vl(&mut out, &[0; 64]);
    out
}

/// Creates `members` clients (software keys, basic credentials named
/// `load-<n>-<i>`) spread over `bases`, each publishing a KeyPackage; the
/// first creates a blind group and adds the others with one commit and a
/// Welcome naming their KeyPackageRefs. The clients connect with `tls`
/// (see [`crate::client::tls_client_config`]).
pub async fn setup_group(
    bases: &[String],
    tls: Arc<rustls::ClientConfig>,
    members: usize,
    tag: &str,
) -> Result<LoadGroup, String> {
    let members = members.max(1);
    let mut clients = Vec::with_capacity(members);
    let mut names = Vec::with_capacity(members);
    for i in 0..members {
        let custody = Arc::new(hsmls_custody::SoftwareCustody::new());
        let name = format!("load-{tag}-{i}").into_bytes();
        let signer = Signer::generate(custody, Credential::Basic(name.clone()))
            .map_err(|e| e.to_string())?;
        let ds = DsClient::with_tls_config(&bases[i % bases.len()], tls.clone())
            .map_err(|e| e.to_string())?;
        ds.authenticate(&signer).await.map_err(|e| e.to_string())?;
        if i > 0 {
            let client = Client::new(
                signer.clone(),
                Arc::new(BasicCredentialValidator::default()),
            );
            let kp = client
                .generate_key_package(&KeyPackageConfig::new(now_secs() - 60, 86_400))
                .map_err(|e| e.to_string())?;
            ds.publish_key_packages(vec![kp.to_bytes().map_err(|e| e.to_string())?])
                .await
                .map_err(|e| e.to_string())?;
        }
        clients.push(Arc::new(ds));
        names.push(name);
    }
    let creator = &clients[0];
    let mut group_id = vec![0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut group_id);
    creator
        .create_group(&CreateGroup {
            group_id: group_id.clone(),
            mode: GroupMode::Blind,
            epoch: 0,
            group_info: None,
            ratchet_tree: None,
        })
        .await
        .map_err(|e| e.to_string())?;
    if members > 1 {
        let validator = BasicCredentialValidator::default();
        let mut refs = Vec::with_capacity(members - 1);
        for name in &names[1..] {
            let claimed = creator
                .claim_key_package(name)
                .await
                .map_err(|e| e.to_string())?;
            let kp = KeyPackageIn::from_bytes(&claimed.key_package)
                .and_then(|kp| {
                    kp.validate(
                        CipherSuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
                        &validator,
                        now_secs(),
                    )
                })
                .map_err(|e| e.to_string())?;
            refs.push(kp.reference().0.clone());
        }
        let welcome = synthetic_welcome(&refs);
        creator
            .send_commit(&CommitBundle {
                commit: synthetic_message(&group_id, 0, ContentType::Commit, u64::MAX, 64),
                welcome: Some(welcome),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(LoadGroup {
        group_id,
        members: clients,
        epoch: u64::from(members > 1),
    })
}

struct Receiver {
    hist: Histogram<u64>,
    count: u64,
    violations: u64,
    last_at: Option<Instant>,
}

/// Runs the load on `group`: every member is pushed to over its
/// WebSocket; `config.senders` members send at `config.rate`.
pub async fn run(group: &LoadGroup, config: &LoadConfig) -> Result<LoadReport, String> {
    let n = config
        .max_messages
        .min((config.rate * config.duration.as_secs_f64()).ceil() as u64)
        .max(1);
    let interval = Duration::from_secs_f64(1.0 / config.rate);
    // Receivers first.
    let mut streams = Vec::with_capacity(group.members.len());
    for m in &group.members {
        let mut s = m.push(vec![]).await.map_err(|e| e.to_string())?;
        // Skip what is already queued (the Welcome, the commit).
        s.ack(Ack::default()).await.map_err(|e| e.to_string())?;
        streams.push(s);
    }
    let ws_senders: Vec<crate::client::MessageSender> =
        streams.iter().map(|s| s.sender()).collect();
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let start = Instant::now() + Duration::from_millis(200);
    let deadline = start + config.duration + config.drain;
    let mut receivers = Vec::with_capacity(streams.len());
    for mut s in streams {
        let expected = expected.clone();
        let gid = group.group_id.clone();
        receivers.push(tokio::spawn(async move {
            let mut r = Receiver {
                hist: Histogram::<u64>::new(3).expect("histogram"),
                count: 0,
                violations: 0,
                last_at: None,
            };
            let mut last_seq = 0u64;
            // One bit per message index (a hash set of 100,000 indices
            // took an eighth of the generator's CPU time, measured).
            let mut seen = vec![0u64; (n as usize).div_ceil(64)];
            loop {
                if r.count >= expected.load(Ordering::Acquire) {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                let frame = match tokio::time::timeout(
                    left.min(Duration::from_millis(200)),
                    s.next(),
                )
                .await
                {
                    Ok(Some(Ok(f))) => f,
                    Ok(Some(Err(e))) => {
                        tracing::warn!(error = %e, "a receiver's push connection failed");
                        break;
                    }
                    Ok(None) => {
                        tracing::warn!("a receiver's push connection was closed by the DS");
                        break;
                    }
                    Err(_) => {
                        if Instant::now() >= deadline {
                            break;
                        }
                        continue;
                    }
                };
                let ServerFrame::Message(m) = frame else {
                    continue;
                };
                let Some(idx) = message_index(&m.message) else {
                    continue;
                };
                if idx == u64::MAX {
                    continue;
                }
                let at = Instant::now();
                let fresh = match seen.get_mut((idx / 64) as usize) {
                    Some(word) => {
                        let bit = 1u64 << (idx % 64);
                        let fresh = *word & bit == 0;
                        *word |= bit;
                        fresh
                    }
                    None => false,
                };
                if m.seq <= last_seq || !fresh {
                    r.violations += 1;
                }
                last_seq = m.seq;
                let intended = start + interval.mul_f64(idx as f64);
                let us = at.saturating_duration_since(intended).as_micros() as u64;
                let _ = r.hist.record(us.max(1));
                r.count += 1;
                r.last_at = Some(at);
                if r.count.is_multiple_of(256) {
                    let _ = s
                        .ack(Ack {
                            messages: vec![GroupPosition {
                                group_id: gid.clone(),
                                seq: m.seq,
                            }],
                            welcomes: vec![],
                        })
                        .await;
                }
            }
            let _ = s
                .ack(Ack {
                    messages: vec![GroupPosition {
                        group_id: gid.clone(),
                        seq: last_seq,
                    }],
                    welcomes: vec![],
                })
                .await;
            s.close().await;
            r
        }));
    }
    // Senders: open loop.
    let accept = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let last_accept = Arc::new(Mutex::new(start));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let senders = config.senders.clamp(1, group.members.len());
    let permits: Vec<Arc<tokio::sync::Semaphore>> = (0..senders)
        .map(|_| Arc::new(tokio::sync::Semaphore::new(config.in_flight.max(1))))
        .collect();
    let mut tasks = Vec::with_capacity(n as usize);
    let stop_at = start + config.duration;
    let mut sent = 0u64;
    for i in 0..n {
        let intended = start + interval.mul_f64(i as f64);
        if intended > stop_at {
            break;
        }
        tokio::time::sleep_until(intended.into()).await;
        let client = group.members[(i as usize) % senders].clone();
        let ws_sender = ws_senders[(i as usize) % senders].clone();
        let transport = config.transport;
        let permit = permits[(i as usize) % senders].clone();
        let msg = synthetic_message(
            &group.group_id,
            group.epoch,
            ContentType::Application,
            i,
            config.payload,
        );
        let (accept, accepted, failed, last_accept, first_error) = (
            accept.clone(),
            accepted.clone(),
            failed.clone(),
            last_accept.clone(),
            first_error.clone(),
        );
        sent += 1;
        tasks.push(tokio::spawn(async move {
            let _permit = permit.acquire_owned().await;
            let result = match transport {
                SendTransport::WebSocket => ws_sender.send(&msg).await,
                SendTransport::Http => client.send_message(&msg).await,
            };
            match result {
                Ok(_) => {
                    let done = Instant::now();
                    let us = done.saturating_duration_since(intended).as_micros() as u64;
                    let _ = accept.lock().await.record(us.max(1));
                    accepted.fetch_add(1, Ordering::AcqRel);
                    let mut l = last_accept.lock().await;
                    if done > *l {
                        *l = done;
                    }
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::AcqRel);
                    tracing::debug!(error = %e, "load message failed");
                    first_error
                        .lock()
                        .await
                        .get_or_insert_with(|| e.to_string());
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let accepted_n = accepted.load(Ordering::Acquire);
    expected.store(accepted_n, Ordering::Release);
    let mut deliveries = 0u64;
    let mut violations = 0u64;
    let mut dh = Histogram::<u64>::new(3).expect("histogram");
    let mut last_delivery = start;
    for r in receivers {
        let r = r.await.map_err(|e| e.to_string())?;
        deliveries += r.count;
        violations += r.violations;
        dh.add(&r.hist).map_err(|e| e.to_string())?;
        if let Some(t) = r.last_at
            && t > last_delivery
        {
            last_delivery = t;
        }
    }
    let ah = accept.lock().await.clone();
    let accept_secs = last_accept
        .lock()
        .await
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(1e-3);
    let deliver_secs = last_delivery
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(1e-3);
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(LoadReport {
        sent,
        accepted: accepted_n,
        failed: failed.load(Ordering::Acquire),
        accepted_per_sec: accepted_n as f64 / accept_secs,
        deliveries,
        expected_deliveries: accepted_n * group.members.len() as u64,
        deliveries_per_sec: deliveries as f64 / deliver_secs,
        accept_p50_ms: ms(&ah, 0.5),
        accept_p99_ms: ms(&ah, 0.99),
        deliver_p50_ms: ms(&dh, 0.5),
        deliver_p99_ms: ms(&dh, 0.99),
        order_violations: violations,
        first_error: first_error.lock().await.clone(),
    })
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {} accepted {} failed {} | {:.0} accepted/s, accept p50 {:.2} ms p99 {:.2} ms | deliveries {}/{} {:.0}/s, deliver p50 {:.2} ms p99 {:.2} ms | order violations {}",
            self.sent,
            self.accepted,
            self.failed,
            self.accepted_per_sec,
            self.accept_p50_ms,
            self.accept_p99_ms,
            self.deliveries,
            self.expected_deliveries,
            self.deliveries_per_sec,
            self.deliver_p50_ms,
            self.deliver_p99_ms,
            self.order_violations
        )?;
        if let Some(e) = &self.first_error {
            write!(f, " | first failure: {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsmls::wire::RoutingInfo;

    #[test]
    fn synthetic_messages_parse_as_mls() {
        for payload in [0, 8, 100, 20_000] {
            let m = synthetic_message(b"group", 7, ContentType::Proposal, 42, payload);
            let info = RoutingInfo::parse(&m).unwrap();
            assert_eq!(info.wire_format, WireFormat::PRIVATE_MESSAGE);
            assert_eq!(info.group_id.as_deref(), Some(&b"group"[..]));
            assert_eq!(info.epoch, Some(7));
            assert_eq!(info.content_type, Some(ContentType::Proposal));
            assert_eq!(message_index(&m), Some(42));
            assert_eq!(message_index(&m[..m.len() - 1]), None);
        }
        let refs = vec![vec![1u8; 32], vec![2u8; 32]];
        let info = RoutingInfo::parse(&synthetic_welcome(&refs)).unwrap();
        assert_eq!(info.wire_format, WireFormat::WELCOME);
        let got: Vec<Vec<u8>> = info.new_members.into_iter().map(|r| r.0).collect();
        assert_eq!(got, refs);
    }
}

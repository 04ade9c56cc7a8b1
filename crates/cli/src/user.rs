//! The user commands: `hsmls enrol | group … | send | receive |
//! safety-number | status | completions`.
//!
//! Each is a one-shot process: it opens the client of its configuration
//! (`--config FILE`, default `$HSMLS_CLIENT_CONFIG`) with
//! [`ClientRuntime::open`], does its work through the runtime (which saves
//! every change before it returns), and exits. `receive --follow` keeps the
//! live push open until SIGINT, SIGTERM or `--for SECONDS`.
//!
//! Only one process at a time may use a client (its state file and its
//! groups in memory): a lock file beside the state file (`STATE.lock`)
//! is held for the process's life, and a second process exits with code 10.
//!
//! Events that a command other than `receive` brings in (a commit race
//! makes the runtime fetch what the DS holds, and with it messages that are
//! then acknowledged) are kept in an inbox beside the state file
//! (`STATE.inbox`, mode 0600: one line per event, its JSON sealed with
//! AES-256-GCM under the token's state-sealing key, as the group state
//! is) and shown by the next `receive`, so no message delivered to this
//! client goes unseen and none lies on disk in clear.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use hsmls_client::{ClientConfig, ClientError, ClientRuntime, CustodyConfig, GroupId, GroupMode};
use hsmls_custody::{KeyCustody, StateSealer};
use serde_json::{Value, json};

use crate::exit::{CLIENT_CONFIG_ENV, UserError};
use crate::output::{self, Output, event_json, is_progress, progress, short};

/// The largest message `send` reads from stdin.
pub const MAX_MESSAGE_LEN: usize = 1 << 20;

/// The user commands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Enrol this client with the Authentication Service: a signature key
    /// is generated in the token, the AS issues a certificate for it, and
    /// KeyPackages are published on the Delivery Service.
    Enrol(EnrolArgs),
    /// Groups: create, add, remove, leave, update, members, list.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Send a message to a group (TEXT, or stdin when TEXT is missing or -).
    Send {
        /// The group (its id in hex, or the first digits of it).
        group: String,
        /// The message (it may begin with `-`).
        #[arg(allow_hyphen_values = true)]
        text: Option<String>,
    },
    /// Print the messages and group events waiting on the Delivery
    /// Service (and any kept by earlier commands), check credentials
    /// (members the AS revoked are removed) and top up KeyPackages.
    Receive(ReceiveArgs),
    /// The group's safety number: its epoch authenticator (RFC 9420
    /// §8.7) as 12 groups of 5 digits, to read aloud and compare out of
    /// band. Equal numbers mean the same group state.
    SafetyNumber {
        /// The group.
        group: String,
    },
    /// This client: identity, certificate, signature key, groups.
    Status,
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `hsmls enrol`.
#[derive(Debug, Args)]
pub struct EnrolArgs {
    /// The one-time enrolment token the AS operator issued for this
    /// client's identity (`hsmls as token issue IDENTITY`). Tokens are
    /// base64url and may begin with `-`.
    #[arg(
        long,
        env = "HSMLS_ENROL_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub token: String,
}

/// `hsmls receive`.
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Keep the live push open and print what comes until SIGINT or
    /// SIGTERM (or --for); the background work (credential checks,
    /// KeyPackage top-up, scheduled self-updates) runs meanwhile.
    #[arg(long)]
    pub follow: bool,
    /// With --follow: stop after this many seconds.
    #[arg(long = "for", value_name = "SECONDS", requires = "follow")]
    pub duration: Option<u64>,
}

/// `hsmls group …`.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group with this client as its only member; prints its id.
    Create {
        /// The DS follows the group's handshakes (PublicMessage commits),
        /// refuses invalid commits and keeps the GroupInfo for rejoins
        /// (the default).
        #[arg(long, conflicts_with = "blind")]
        assisted: bool,
        /// The DS only orders and forwards; handshakes are encrypted
        /// (PrivateMessage). A member that loses its state cannot rejoin.
        #[arg(long)]
        blind: bool,
    },
    /// Add clients by identity (one KeyPackage of each is claimed from
    /// the DS; one commit, with a Welcome).
    Add {
        /// The group.
        group: String,
        /// Their identities (e.g. im:bob@example.org).
        #[arg(required = true)]
        identities: Vec<String>,
    },
    /// Remove members by identity (one commit).
    Remove {
        /// The group.
        group: String,
        /// Their identities.
        #[arg(required = true)]
        identities: Vec<String>,
    },
    /// Ask to leave: a proposal that another member commits.
    Leave {
        /// The group.
        group: String,
    },
    /// Commit a self-update: fresh leaf and path keys (post-compromise
    /// security).
    Update {
        /// The group.
        group: String,
    },
    /// The group's members.
    Members {
        /// The group.
        group: String,
    },
    /// This client's groups.
    List,
}

/// `PATH` with `suffix` appended to its file name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UserError {
    let what = what.into();
    move |source| UserError::Io { what, source }
}

/// The configuration file of a user command.
pub fn config_path(config: Option<PathBuf>) -> Result<PathBuf, UserError> {
    config
        .or_else(|| std::env::var_os(CLIENT_CONFIG_ENV).map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or(UserError::NoConfig)
}

/// Holds the client's lock file for as long as it lives.
#[derive(Debug)]
struct ClientLock(#[allow(dead_code)] std::fs::File);

fn lock(state_path: &Path) -> Result<ClientLock, UserError> {
    let path = beside(state_path, ".lock");
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(ClientLock(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(UserError::Busy(path)),
        Err(std::fs::TryLockError::Error(e)) => Err(io(format!("locking {}", path.display()))(e)),
    }
}

/// The associated data of an inbox entry's seal.
const INBOX_AAD: &[u8] = b"hsmls-cli inbox v1";

/// The inbox: events brought in by commands other than `receive`, each
/// sealed under the client's state-sealing key.
struct Inbox {
    path: PathBuf,
    sealer: Arc<dyn StateSealer>,
}

impl Inbox {
    fn append(&self, events: &[Value]) -> Result<(), UserError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for e in events {
            let sealed = self
                .sealer
                .seal(INBOX_AAD, e.to_string().as_bytes())
                .map_err(ClientError::Custody)?;
            text.push_str(&hex::encode(sealed));
            text.push('\n');
        }
        let mut open = std::fs::OpenOptions::new();
        open.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            open.mode(0o600);
        }
        let mut f = open
            .open(&self.path)
            .map_err(io(format!("opening {}", self.path.display())))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io(format!("writing {}", self.path.display())))
    }

    /// The kept events; the inbox is emptied once they are printed
    /// ([`Inbox::clear`]). An entry that does not open (altered, or
    /// sealed by another token) is reported on stderr and skipped.
    fn read(&self) -> Result<Vec<Value>, UserError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(format!("reading {}", self.path.display()))(e)),
        };
        let mut events = Vec::new();
        for (i, l) in text.lines().enumerate() {
            let opened = hex::decode(l.trim())
                .ok()
                .and_then(|b| self.sealer.open(INBOX_AAD, &b).ok())
                .and_then(|plain| serde_json::from_slice(&plain).ok());
            match opened {
                Some(v) => events.push(v),
                None => progress(&format!(
                    "warning: entry {} of {} does not open (altered, or sealed by another token); skipped",
                    i + 1,
                    self.path.display()
                )),
            }
        }
        Ok(events)
    }

    fn clear(&self) -> Result<(), UserError> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(format!("removing {}", self.path.display()))(e))
            }
            _ => Ok(()),
        }
    }
}

/// The client's custody and state sealer, opened as
/// [`ClientRuntime::open`] would (the CLI keeps the sealer for its inbox).
async fn custody_of(
    config: &ClientConfig,
) -> Result<(Arc<dyn KeyCustody>, Arc<dyn StateSealer>), UserError> {
    type Pair = (Arc<dyn KeyCustody>, Arc<dyn StateSealer>);
    match &config.custody {
        CustodyConfig::Pkcs11 { config: path } => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || -> Result<Pair, ClientError> {
                let c = hsmls_custody::Pkcs11Config::from_file(&path)?;
                // As the runtime does (ConfiguredCustody::open_sealed).
                let (custody, sealer) = hsmls_custody::ConfiguredCustody::open_sealed(&c)?;
                let sealer: Arc<dyn StateSealer> = Arc::new(sealer);
                Ok((custody.custody(), sealer))
            })
            .await
            .map_err(|e| UserError::Client(ClientError::Task(e.to_string())))?
            .map_err(UserError::Client)
        }
        CustodyConfig::Software => Ok((
            Arc::new(hsmls_custody::SoftwareCustody::new()),
            Arc::new(hsmls_custody::SoftwareSealer::generate()),
        )),
        other => Err(UserError::Client(ClientError::Config(format!(
            "custody {other:?} is not supported by this hsmls"
        )))),
    }
}

/// What happens to the client's events while a command runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EventSink {
    /// Printed as they come (`receive`).
    Print,
    /// Kept in the inbox for the next `receive`.
    Keep,
}

/// Runs a user command. `cli` builds the whole command line (for
/// completions).
pub fn run(
    command: UserCommand,
    config: Option<PathBuf>,
    out: Output,
    cli: impl FnOnce() -> clap::Command,
) -> Result<(), Box<Failure>> {
    let fail = |error: UserError, urls: Option<(String, String)>| Box::new(Failure { error, urls });
    if let UserCommand::Completions { shell } = command {
        let mut cmd = cli();
        clap_complete::generate(shell, &mut cmd, "hsmls", &mut std::io::stdout());
        return Ok(());
    }
    let path = config_path(config).map_err(|e| fail(e, None))?;
    let config = ClientConfig::from_file(&path).map_err(|e| fail(e.into(), None))?;
    let urls = Some((
        config.authentication_service.url.clone(),
        config.delivery_service.url.clone(),
    ));
    let _lock = lock(&config.state_path).map_err(|e| fail(e, urls.clone()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(io("starting the async runtime")(e), None))?;
    runtime
        .block_on(run_async(command, config, out))
        .map_err(|e| fail(e, urls))
}

/// A user command's failure, with the AS and DS URLs of its client (named
/// in hints).
#[derive(Debug)]
pub struct Failure {
    /// What failed.
    pub error: UserError,
    /// The AS and DS URLs, once the configuration was read.
    pub urls: Option<(String, String)>,
}

async fn run_async(
    command: UserCommand,
    config: ClientConfig,
    out: Output,
) -> Result<(), UserError> {
    let (custody, sealer) = custody_of(&config).await?;
    let inbox = Inbox {
        path: beside(&config.state_path, ".inbox"),
        sealer: sealer.clone(),
    };
    let client = ClientRuntime::open_with(config, custody, sealer).await?;
    let sink = match command {
        UserCommand::Receive(_) => EventSink::Print,
        _ => EventSink::Keep,
    };
    let mut events = client.events();
    let collector = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Some(e) = events.recv().await {
            let v = event_json(&e);
            if is_progress(&e) {
                progress(&output::event_text(&v));
            } else if sink == EventSink::Print {
                out.event(&v);
            } else {
                kept.push(v);
            }
        }
        kept
    });
    let result = command_on(&client, command, out, &inbox).await;
    // Stop the background work (what is in progress finishes and tells
    // its events), close the event channel (a new one replaces it), and
    // keep what the command brought in.
    client.shutdown().await;
    drop(client.events());
    let kept = match tokio::time::timeout(Duration::from_secs(10), collector).await {
        Ok(Ok(kept)) => kept,
        _ => Vec::new(),
    };
    let saved = inbox.append(&kept);
    result.and(saved)
}

async fn command_on(
    client: &ClientRuntime,
    command: UserCommand,
    out: Output,
    inbox: &Inbox,
) -> Result<(), UserError> {
    match command {
        UserCommand::Enrol(args) => enrol(client, &args.token, out).await,
        UserCommand::Group(g) => group(client, g, out).await,
        UserCommand::Send { group, text } => {
            let g = resolve(client, &group).await?;
            let data = match text.as_deref() {
                Some(t) if t != "-" => t.as_bytes().to_vec(),
                _ => read_stdin()?,
            };
            let seq = client.send(&g, &data).await?;
            out.result(
                json!({"type": "sent", "group": g.to_string(), "seq": seq, "bytes": data.len()}),
                || {
                    format!(
                        "sent to [{}] (message {seq} of the group)",
                        short(&g.to_string())
                    )
                },
            );
            Ok(())
        }
        UserCommand::Receive(args) => receive(client, args, out, inbox).await,
        UserCommand::SafetyNumber { group } => {
            let g = resolve(client, &group).await?;
            let epoch = client.epoch(&g).await?;
            let auth = client.epoch_authenticator(&g).await?;
            let number = hsmls_client::safety_number(&auth);
            out.result(
                json!({"type": "safety_number", "group": g.to_string(), "epoch": epoch,
                    "safety_number": number, "epoch_authenticator": hex::encode(&auth)}),
                || format!("epoch {epoch}: {number}"),
            );
            Ok(())
        }
        UserCommand::Status => status(client, out).await,
        UserCommand::Completions { .. } => Ok(()),
    }
}

fn read_stdin() -> Result<Vec<u8>, UserError> {
    let mut data = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_MESSAGE_LEN as u64 + 1)
        .read_to_end(&mut data)
        .map_err(io("reading the message from stdin"))?;
    if data.len() > MAX_MESSAGE_LEN {
        return Err(UserError::Usage(format!(
            "the message is longer than {MAX_MESSAGE_LEN} bytes"
        )));
    }
    // A line typed or piped in: without its newline.
    if data.last() == Some(&b'\n') {
        data.pop();
    }
    Ok(data)
}

/// The group named by `arg`: its id in hex, or a prefix of one of this
/// client's groups (at least 4 digits, naming one group).
async fn resolve(client: &ClientRuntime, arg: &str) -> Result<GroupId, UserError> {
    let arg = arg.to_ascii_lowercase();
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(UserError::Usage(format!(
            "{arg:?} is not a group id: give it in hex, as `hsmls group create` printed it \
             (or its first digits)"
        )));
    }
    let groups = client.groups().await;
    if let Some(g) = groups.iter().find(|g| g.to_string() == arg) {
        return Ok(g.clone());
    }
    let matching: Vec<&GroupId> = if arg.len() >= 4 {
        groups
            .iter()
            .filter(|g| g.to_string().starts_with(&arg))
            .collect()
    } else {
        Vec::new()
    };
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ClientError::UnknownGroup(arg).into()),
        _ => Err(UserError::Usage(format!(
            "{arg} names {} groups: give more digits",
            matching.len()
        ))),
    }
}

fn mode_name(m: GroupMode) -> &'static str {
    match m {
        GroupMode::Assisted => "assisted",
        GroupMode::Blind => "blind",
        _ => "other",
    }
}

async fn enrol(client: &ClientRuntime, token: &str, out: Output) -> Result<(), UserError> {
    let c = client.config();
    progress(&format!(
        "enrolling {}: signature key generated in the token, certificate requested from {}, \
         then KeyPackages published on {}",
        c.identity, c.authentication_service.url, c.delivery_service.url
    ));
    client.enrol(token.trim()).await?;
    let (_, serial, not_after) = client
        .certificate()
        .ok_or(UserError::Client(ClientError::NotEnrolled))?;
    let key = client.signature_key_uri().unwrap_or_default();
    out.result(
        json!({"type": "enrolled", "identity": client.identity(), "serial": serial,
            "not_after": not_after, "signature_key": key}),
        || {
            format!(
                "enrolled {}: certificate {serial}, signature key {key}",
                client.identity()
            )
        },
    );
    Ok(())
}

/// Prints a commit's outcome.
async fn committed(
    client: &ClientRuntime,
    g: &GroupId,
    action: &str,
    who: &[String],
    epoch: u64,
    out: Output,
) -> Result<(), UserError> {
    let auth = client.epoch_authenticator(g).await?;
    let number = hsmls_client::safety_number(&auth);
    let gid = g.to_string();
    out.result(
        json!({"type": "commit", "action": action, "group": gid, "members": who,
            "epoch": epoch, "epoch_authenticator": hex::encode(&auth), "safety_number": number}),
        || {
            let what = match action {
                "add" => format!("added {}", who.join(", ")),
                "remove" => format!("removed {}", who.join(", ")),
                _ => "updated this member's keys".into(),
            };
            format!(
                "[{}] {what}: epoch {epoch}, safety number {number}",
                short(&gid)
            )
        },
    );
    Ok(())
}

async fn group(
    client: &ClientRuntime,
    command: GroupCommand,
    out: Output,
) -> Result<(), UserError> {
    match command {
        GroupCommand::Create { blind, .. } => {
            let mode = if blind {
                GroupMode::Blind
            } else {
                GroupMode::Assisted
            };
            let g = client.create_group(mode).await?;
            let epoch = client.epoch(&g).await?;
            out.result(
                json!({"type": "group_created", "group": g.to_string(),
                    "mode": mode_name(mode), "epoch": epoch}),
                || g.to_string(),
            );
            Ok(())
        }
        GroupCommand::Add { group, identities } => {
            let g = resolve(client, &group).await?;
            let ids: Vec<&str> = identities.iter().map(String::as_str).collect();
            let epoch = client.add_members(&g, &ids).await?;
            committed(client, &g, "add", &identities, epoch, out).await
        }
        GroupCommand::Remove { group, identities } => {
            let g = resolve(client, &group).await?;
            let ids: Vec<&str> = identities.iter().map(String::as_str).collect();
            let epoch = client.remove_members(&g, &ids).await?;
            committed(client, &g, "remove", &identities, epoch, out).await
        }
        GroupCommand::Update { group } => {
            let g = resolve(client, &group).await?;
            let epoch = client.self_update(&g).await?;
            committed(client, &g, "update", &[], epoch, out).await
        }
        GroupCommand::Leave { group } => {
            let g = resolve(client, &group).await?;
            client.leave(&g).await?;
            out.result(
                json!({"type": "leave_requested", "group": g.to_string()}),
                || {
                    format!(
                        "[{}] asked to leave: another member commits it (`hsmls receive` tells you)",
                        short(&g.to_string())
                    )
                },
            );
            Ok(())
        }
        GroupCommand::Members { group } => {
            let g = resolve(client, &group).await?;
            let me = client.identity().to_owned();
            for m in client.members(&g).await? {
                let own = m.identity == me;
                out.result(
                    json!({"type": "member", "group": g.to_string(), "leaf": m.leaf,
                        "identity": m.identity, "self": own,
                        "signature_key": hex::encode(&m.signature_key)}),
                    || {
                        format!(
                            "{}\t{}{}",
                            m.leaf,
                            m.identity,
                            if own { " (you)" } else { "" }
                        )
                    },
                );
            }
            Ok(())
        }
        GroupCommand::List => {
            for g in client.groups().await {
                let epoch = client.epoch(&g).await?;
                let members = client.members(&g).await?.len();
                let mode = mode_name(client.mode(&g).await?);
                out.result(
                    json!({"type": "group", "group": g.to_string(), "epoch": epoch,
                        "mode": mode, "members": members}),
                    || format!("{g}  epoch {epoch}  {mode}  {members} members"),
                );
            }
            Ok(())
        }
    }
}

async fn receive(
    client: &ClientRuntime,
    args: ReceiveArgs,
    out: Output,
    inbox: &Inbox,
) -> Result<(), UserError> {
    // What earlier commands brought in, first.
    for v in inbox.read()? {
        out.event(&v);
    }
    inbox.clear()?;
    if args.follow {
        client.start();
        progress(&format!(
            "following {} (live push); {}",
            client.config().delivery_service.url,
            match args.duration {
                Some(s) => format!("stopping after {s} s"),
                None => "Ctrl-C stops".into(),
            }
        ));
        wait_for_stop(args.duration).await;
        return Ok(());
    }
    client.sync().await?;
    // The background work, once: the CRL (members the AS revoked are
    // removed), renewal, KeyPackages. The messages are in; an AS that
    // cannot be reached is a warning here.
    if let Err(e) = client.refresh_crl().await {
        progress(&format!("warning: credential check skipped: {e}"));
    }
    if let Err(e) = client.renew_if_due().await {
        progress(&format!("warning: certificate renewal failed: {e}"));
    }
    if let Err(e) = client.replenish_key_packages().await {
        progress(&format!("warning: KeyPackage top-up failed: {e}"));
    }
    Ok(())
}

async fn wait_for_stop(duration: Option<u64>) {
    let timer = async {
        match duration {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = timer => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

async fn status(client: &ClientRuntime, out: Output) -> Result<(), UserError> {
    let groups = client.groups().await;
    let ids: Vec<String> = groups.iter().map(ToString::to_string).collect();
    match client.certificate() {
        Some((_, serial, not_after)) => {
            let key = client.signature_key_uri().unwrap_or_default();
            out.result(
                json!({"type": "status", "identity": client.identity(), "enrolled": true,
                    "serial": serial, "not_after": not_after, "signature_key": key,
                    "groups": ids}),
                || {
                    format!(
                        "identity: {}\nenrolled: yes\nserial: {serial}\nnot_after: {not_after}\n\
                         signature_key: {key}\ngroups: {}",
                        client.identity(),
                        ids.join(" ")
                    )
                },
            );
        }
        None => out.result(
            json!({"type": "status", "identity": client.identity(), "enrolled": false,
                "groups": ids}),
            || format!("identity: {}\nenrolled: no", client.identity()),
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_parses() {
        // The manifest directory cargo gives the running test (the one
        // compiled in may be another checkout's sharing the target dir).
        let manifest = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
        let path = Path::new(&manifest).join("../../hsm-config/client.example.toml");
        let c = ClientConfig::from_file(&path).unwrap();
        assert_eq!(c.identity, "im:alice@example.org");
        assert!(c.delivery_service.url.starts_with("https://"));
        assert!(c.state_path.ends_with("alice/state.sqlite"));
    }

    #[test]
    fn lock_and_sealed_inbox_beside_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.sqlite");
        assert_eq!(beside(&state, ".lock"), dir.path().join("s.sqlite.lock"));
        let first = lock(&state).unwrap();
        assert!(matches!(lock(&state), Err(UserError::Busy(p)) if p.ends_with("s.sqlite.lock")));
        drop(first);
        let _again = lock(&state).unwrap();
        let inbox = Inbox {
            path: beside(&state, ".inbox"),
            sealer: Arc::new(hsmls_custody::SoftwareSealer::generate()),
        };
        assert!(inbox.read().unwrap().is_empty());
        inbox
            .append(&[
                json!({"type": "message", "text": "a"}),
                json!({"type": "epoch"}),
            ])
            .unwrap();
        inbox
            .append(&[json!({"type": "message", "text": "b"})])
            .unwrap();
        let kept = inbox.read().unwrap();
        assert_eq!(kept.len(), 3);
        assert_eq!(kept[2]["text"], "b");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&inbox.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the inbox is owner only");
        // Sealed: no plaintext in the file; another key opens nothing.
        let raw = std::fs::read_to_string(&inbox.path).unwrap();
        assert!(!raw.contains("message"), "{raw}");
        let other = Inbox {
            path: inbox.path.clone(),
            sealer: Arc::new(hsmls_custody::SoftwareSealer::generate()),
        };
        assert!(other.read().unwrap().is_empty());
        // An altered entry is skipped; the others still open.
        let mut lines: Vec<String> = raw.lines().map(str::to_owned).collect();
        let flipped = if lines[0].ends_with('0') { '1' } else { '0' };
        lines[0].pop();
        lines[0].push(flipped);
        std::fs::write(&inbox.path, lines.join("\n") + "\n").unwrap();
        let kept = inbox.read().unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0]["type"], "epoch");
        inbox.clear().unwrap();
        assert!(inbox.read().unwrap().is_empty());
    }
}

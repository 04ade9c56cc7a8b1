//! The harness of the whole-system tests: an Authentication Service and a
//! Delivery Service as separate `hsmls` processes on loopback (TLS, SQLite
//! or PostgreSQL), and users, each with a SoftHSM token of its own (made by
//! `scripts/setup-hsm.sh --dir … --token …` in the test's temporary
//! folder), driven through the `hsmls` user commands.
//!
//! Everything a test makes goes when its [`System`] is dropped: the server
//! processes are killed, the PostgreSQL databases dropped, and the
//! temporary folder, with every token in it, deleted.
//!
//! The `hsmls` binary is found beside this test binary's profile folder
//! (`target/<profile>/hsmls`) and built first with the `cargo` that runs
//! the tests (a no-op when it is fresh), so `cargo test -p
//! hsmls-system-tests` works alone; `HSMLS_BIN` overrides it.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any one `hsmls` command may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a server may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The repository's root.
pub fn repo_root() -> PathBuf {
    // Cargo sets CARGO_MANIFEST_DIR when it runs a test: prefer it to the
    // value compiled in, which names wherever the binary was built (a
    // target directory shared by two checkouts keeps the other's path).
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// The `hsmls` binary (built once per test process).
pub fn hsmls_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("HSMLS_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        // target/<profile>/deps/<test binary>
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .expect("a test binary lives in target/<profile>/deps")
            .to_path_buf();
        let bin = profile.join("hsmls");
        // Built by this cargo run when missing or older than a source file
        // (a `cargo test --workspace` has built it already: building it
        // again here, with fewer features unified, would rebuild crates).
        let stale = match std::fs::metadata(&bin).and_then(|m| m.modified()) {
            Ok(built) => std::fs::read_dir(repo_root().join("crates"))
                .into_iter()
                .flatten()
                .flatten()
                .flat_map(|c| {
                    [
                        newest_source(&c.path().join("src")),
                        modified(&c.path().join("Cargo.toml")),
                    ]
                })
                .any(|t| t > built),
            Err(_) => true,
        };
        if stale && let Some(cargo) = std::env::var_os("CARGO") {
            let mut c = Command::new(cargo);
            c.args(["build", "-q", "-p", "hsmls-cli", "--bin", "hsmls"])
                .current_dir(repo_root());
            if let Some(target) = profile.parent() {
                c.env("CARGO_TARGET_DIR", target);
            }
            if profile.file_name().is_some_and(|n| n == "release") {
                c.arg("--release");
            }
            let status = c.status().expect("cannot run cargo build");
            assert!(status.success(), "cargo build -p hsmls-cli failed");
        }
        assert!(
            bin.exists(),
            "no hsmls binary at {}: run `cargo build -p hsmls-cli` (or set HSMLS_BIN)",
            bin.display()
        );
        bin
    })
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::SystemTime::UNIX_EPOCH)
}

/// The newest modification time of the files under `dir`.
fn newest_source(dir: &Path) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else if let Ok(m) = meta.modified() {
                newest = newest.max(m);
            }
        }
    }
    newest
}

/// Runs a command, failing the test if it takes longer than
/// [`COMMAND_TIMEOUT`].
pub fn run(mut command: Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the command");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{command:?} took more than {COMMAND_TIMEOUT:?}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A free loopback port (nothing listens on it once this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a loopback port")
        .port()
}

/// Makes a SoftHSM token labelled `label` in a store of its own at `dir`;
/// returns its `softhsm2.conf`.
pub fn token(dir: &Path, label: &str) -> PathBuf {
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/setup-hsm.sh"))
        .args(["--quiet", "--dir"])
        .arg(dir)
        .args(["--token", label])
        .stdout(Stdio::null())
        .status()
        .expect("cannot run scripts/setup-hsm.sh");
    assert!(status.success(), "setup-hsm.sh failed for {label}");
    dir.join("softhsm2.conf")
}

/// Waits until `file` contains `text`.
fn wait_for(file: &Path, text: &str, child: &mut Child) {
    let start = Instant::now();
    loop {
        if std::fs::read_to_string(file).is_ok_and(|t| t.contains(text)) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the server exited ({status}) before listening:\n{}",
                std::fs::read_to_string(file).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < START_TIMEOUT,
            "no {text:?} in {} after {START_TIMEOUT:?}:\n{}",
            file.display(),
            std::fs::read_to_string(file).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where the AS and the DS keep their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Storage {
    /// SQLite files in the test folder.
    Sqlite,
    /// A PostgreSQL database each, on the server of
    /// `HSMLS_TEST_PG_URL` (scripts/setup-postgres.sh): the test fails,
    /// never skips, without it.
    Postgres,
}

/// PostgreSQL databases made for one test, dropped with it.
struct PgDatabases {
    admin: String,
    names: Vec<String>,
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

impl PgDatabases {
    fn new() -> (PgDatabases, String) {
        let base = std::env::var("HSMLS_TEST_PG_URL").unwrap_or_else(|_| {
            panic!(
                "HSMLS_TEST_PG_URL is not set: the PostgreSQL system test needs it. Run \
                 `eval \"$(bash scripts/setup-postgres.sh --env)\"; export HSMLS_TEST_PG_URL` \
                 (scripts/test.sh does)."
            )
        });
        // The server's admin role (scripts/setup-postgres.sh sets its
        // throwaway test password) creates databases for the test role.
        let (_, rest) = base.split_once('@').expect("a postgres URL with a user");
        let host = rest.split('/').next().expect("host:port");
        let admin = format!("postgres://postgres:postgres@{host}/postgres");
        (
            PgDatabases {
                admin,
                names: Vec::new(),
            },
            base,
        )
    }

    fn create(&mut self, base: &str, what: &str) -> String {
        use sqlx::Connection;
        let mut rnd = [0u8; 5];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut rnd);
        let name = format!("hsmls_system_{what}_{}", hex::encode(rnd));
        block_on(async {
            let mut c = sqlx::PgConnection::connect(&self.admin)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {} is unreachable: {e}", self.admin));
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE {name} OWNER hsmls"
            )))
            .execute(&mut c)
            .await
            .expect("CREATE DATABASE");
            let _ = c.close().await;
        });
        self.names.push(name.clone());
        let (b, _) = base.rsplit_once('/').expect("a database in the URL");
        format!("{b}/{name}")
    }
}

impl Drop for PgDatabases {
    fn drop(&mut self) {
        use sqlx::Connection;
        let names = std::mem::take(&mut self.names);
        let admin = self.admin.clone();
        // A thread of its own: this may run while a runtime is unwinding.
        let _ = std::thread::spawn(move || {
            block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    for n in names {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {n} WITH (FORCE)"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                    let _ = c.close().await;
                }
            })
        })
        .join();
    }
}

/// An AS and a DS running as processes, and the folder of the test.
pub struct System {
    /// The test's folder (tokens, configurations, state, logs).
    pub dir: tempfile::TempDir,
    as_server: Child,
    ds_server: Option<Child>,
    /// The AS's port on 127.0.0.1.
    pub as_port: u16,
    /// The DS's port on 127.0.0.1.
    pub ds_port: u16,
    as_softhsm: PathBuf,
    ds_starts: u32,
    _pg: Option<PgDatabases>,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("dir", &self.dir.path())
            .field("as_port", &self.as_port)
            .field("ds_port", &self.ds_port)
            .finish()
    }
}

impl System {
    /// Starts the AS (its keys in a token of its own, `hsmls as init`,
    /// `hsmls as serve`) and the DS (a TLS certificate from the AS's CA,
    /// `hsmls ds serve` checking X.509 credentials against the AS root and
    /// CRL), on `storage`.
    pub fn start(storage: Storage) -> System {
        let bin = hsmls_bin();
        let dir = tempfile::Builder::new()
            .prefix("hsmls-system-")
            .tempdir()
            .expect("a temporary folder");
        let root = dir.path();
        let (pg, as_db, ds_db) = match storage {
            Storage::Sqlite => (
                None,
                "sqlite".to_owned(),
                format!("sqlite:{}", root.join("ds/ds.db").display()),
            ),
            Storage::Postgres => {
                let (mut pg, base) = PgDatabases::new();
                let a = pg.create(&base, "as");
                let d = pg.create(&base, "ds");
                (Some(pg), a, d)
            }
        };
        let as_softhsm = token(&root.join("as/hsm"), "system-as");
        let as_port = free_port();
        std::fs::write(
            root.join("as/as.toml"),
            format!(
                "pkcs11_config = \"hsm/pkcs11.toml\"\nlisten = \"127.0.0.1:{as_port}\"\n\
                 public_url = \"https://127.0.0.1:{as_port}\"\ntls_names = [\"127.0.0.1\"]\n\
                 state_dir = \"state\"\ndatabase = \"{as_db}\"\n"
            ),
        )
        .expect("as.toml");
        let operator = |args: &[&str]| {
            let mut c = Command::new(bin);
            c.env("SOFTHSM2_CONF", &as_softhsm)
                .arg("as")
                .arg("--as-config")
                .arg(root.join("as/as.toml"))
                .args(args);
            c
        };
        ok(&run(operator(&["init"])));
        std::fs::create_dir_all(root.join("ds")).expect("ds folder");
        let prefix = root.join("ds/tls");
        ok(&run(operator(&[
            "tls",
            "issue",
            "127.0.0.1",
            "--out",
            prefix.to_str().expect("UTF-8 path"),
        ])));
        let log = std::fs::File::create(root.join("as/serve.log")).expect("log");
        let mut as_server = operator(&["serve"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start the AS");
        wait_for(&root.join("as/serve.log"), "listening", &mut as_server);

        let ds_port = free_port();
        std::fs::write(
            root.join("ds/ds.toml"),
            format!(
                "listen = \"127.0.0.1:{ds_port}\"\ntls_cert = \"tls.pem\"\ntls_key = \"tls.key\"\n\
                 key_file = \"ds.key\"\ndatabase = \"{ds_db}\"\nds_identity = \"127.0.0.1\"\n\
                 rate_per_second = 10000\n\n\
                 [credentials]\nas_root = \"../as/state/root.pem\"\n\
                 as_url = \"https://127.0.0.1:{as_port}\"\n"
            ),
        )
        .expect("ds.toml");
        let mut system = System {
            dir,
            as_server,
            ds_server: None,
            as_port,
            ds_port,
            as_softhsm,
            ds_starts: 0,
            _pg: pg,
        };
        system.start_ds();
        system
    }

    /// Starts the DS (again).
    pub fn start_ds(&mut self) {
        assert!(self.ds_server.is_none(), "the DS is running");
        let root = self.dir.path();
        self.ds_starts += 1;
        let log_path = root.join(format!("ds/serve-{}.log", self.ds_starts));
        let log = std::fs::File::create(&log_path).expect("log");
        let mut child = Command::new(hsmls_bin())
            .arg("ds")
            .arg("--ds-config")
            .arg(root.join("ds/ds.toml"))
            .arg("serve")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("cannot start the DS");
        wait_for(&log_path, "listening on", &mut child);
        self.ds_server = Some(child);
    }

    /// Kills the DS with SIGKILL (`kill -9`): no shutdown, no flush.
    pub fn kill_ds(&mut self) {
        let mut child = self.ds_server.take().expect("the DS is running");
        child.kill().expect("kill -9 the DS");
        let _ = child.wait();
    }

    /// Runs an operator command of the AS (`hsmls as …`).
    pub fn operator(&self, args: &[&str]) -> Output {
        let mut c = Command::new(hsmls_bin());
        c.env("SOFTHSM2_CONF", &self.as_softhsm)
            .arg("as")
            .arg("--as-config")
            .arg(self.dir.path().join("as/as.toml"))
            .args(args);
        run(c)
    }

    /// A user named `name` (identity `im:NAME@hsmls.test`) with a token of
    /// its own, enrolled with a one-time token from the operator, on suite
    /// 0x0002.
    pub fn user(&self, name: &str) -> User {
        self.user_in_suite(name, 0x0002)
    }

    /// [`user`](Self::user) on MLS cipher suite `suite` (`cipher_suite` in
    /// its configuration). For the X25519 suites (0x0001, 0x0003), which
    /// SoftHSM cannot hold, its PKCS#11 configuration keeps the HPKE keys
    /// in software (`hpke_keys = "token-else-software"`).
    pub fn user_in_suite(&self, name: &str, suite: u16) -> User {
        let dir = self.dir.path().join(name);
        let softhsm = token(&dir.join("hsm"), &format!("system-{name}"));
        if matches!(suite, 0x0001 | 0x0003) {
            let p11 = dir.join("hsm/pkcs11.toml");
            let text = std::fs::read_to_string(&p11).expect("pkcs11.toml");
            std::fs::write(
                &p11,
                format!("{text}\nhpke_keys = \"token-else-software\"\n"),
            )
            .expect("pkcs11.toml");
        }
        let identity = format!("im:{name}@hsmls.test");
        let config = dir.join("client.toml");
        std::fs::write(
            &config,
            format!(
                "identity = \"{identity}\"\nstate_path = \"state.sqlite\"\ncipher_suite = {suite}\n\n\
                 [custody]\nkind = \"pkcs11\"\nconfig = \"hsm/pkcs11.toml\"\n\n\
                 [authentication_service]\nurl = \"https://127.0.0.1:{}\"\n\
                 root_certificate = \"../as/state/root.pem\"\n\
                 log_public_key = \"../as/state/log.pub\"\n\n\
                 [delivery_service]\nurl = \"https://127.0.0.1:{}\"\n\
                 root_certificate = \"../as/state/root.pem\"\n\n\
                 [key_packages]\nbatch_size = 3\nlow_water_mark = 1\n\n\
                 [schedule]\nself_update_interval_secs = 0\n",
                self.as_port, self.ds_port
            ),
        )
        .expect("client.toml");
        let user = User {
            name: name.to_owned(),
            identity,
            config,
            softhsm,
        };
        let token = ok(&self.operator(&["token", "issue", &user.identity]));
        user.ok(&["enrol", "--token", token.trim()]);
        user
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if let Some(mut c) = self.ds_server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.as_server.kill();
        let _ = self.as_server.wait();
    }
}

/// The stdout of a command that must have succeeded.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

/// One client: its configuration and its own token.
#[derive(Debug)]
pub struct User {
    /// Its name.
    pub name: String,
    /// Its identity.
    pub identity: String,
    config: PathBuf,
    softhsm: PathBuf,
}

impl User {
    /// The `hsmls` command of this user, with `--json`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(hsmls_bin());
        c.env("SOFTHSM2_CONF", &self.softhsm)
            .env_remove("HSMLS_CLIENT_CONFIG")
            .arg("--config")
            .arg(&self.config)
            .arg("--json")
            .args(args);
        c
    }

    /// Runs a command.
    pub fn run(&self, args: &[&str]) -> Output {
        run(self.command(args))
    }

    /// Runs a command that must succeed; its JSON lines.
    pub fn ok(&self, args: &[&str]) -> Vec<Value> {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed ({}):\n{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        json_lines(&out.stdout)
    }

    /// The group's epoch and epoch authenticator here.
    pub fn epoch(&self, group: &str) -> (u64, String) {
        let v = self.ok(&["safety-number", group]);
        let v = v.first().expect("a safety_number line");
        (
            v["epoch"].as_u64().expect("epoch"),
            v["epoch_authenticator"]
                .as_str()
                .expect("epoch_authenticator")
                .to_owned(),
        )
    }
}

/// The JSON objects of a `--json` output, one a line.
pub fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The application messages each user was sent and received, to check
/// that no acknowledged message was lost (nor shown twice).
#[derive(Debug, Default)]
pub struct Ledger {
    /// (sender, text) → the users it was for.
    sent: Vec<(String, String, Vec<String>)>,
    /// user → (sender, text) received.
    received: BTreeMap<String, Vec<(String, String)>>,
}

impl Ledger {
    /// `from` sends `text` to `group`, whose other members now are `to`:
    /// the send must succeed (the DS acknowledged the message).
    pub fn send(&mut self, from: &User, group: &str, text: &str, to: &[&User]) {
        let v = from.ok(&["send", group, text]);
        assert_eq!(v.first().map(|v| v["type"].clone()), Some("sent".into()));
        self.sent.push((
            from.identity.clone(),
            text.to_owned(),
            to.iter().map(|u| u.name.clone()).collect(),
        ));
    }

    /// `who`'s `receive`: its events, with the messages recorded.
    pub fn receive(&mut self, who: &User) -> Vec<Value> {
        let events = who.ok(&["receive"]);
        self.record(who, &events);
        events
    }

    /// `who` follows the live push (`receive --follow --for SECONDS`)
    /// while `during` runs; its events, with the messages recorded.
    pub fn follow(
        &mut self,
        who: &User,
        seconds: u64,
        during: impl FnOnce(&mut Ledger),
    ) -> Vec<Value> {
        use std::io::{BufRead, BufReader, Read};
        let mut child = who
            .command(&["receive", "--follow", "--for", &seconds.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start receive --follow");
        let mut stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            out
        });
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        loop {
            line.clear();
            let n = stderr.read_line(&mut line).expect("stderr");
            assert!(n > 0, "{} exited before following", who.name);
            if line.contains("following") {
                break;
            }
        }
        let drain = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            rest
        });
        during(self);
        let status = child.wait().expect("wait");
        let errors = drain.join().unwrap_or_default();
        assert!(
            status.success(),
            "{} receive --follow: {status}\n{errors}",
            who.name
        );
        let events = json_lines(&reader.join().expect("stdout"));
        self.record(who, &events);
        events
    }

    fn record(&mut self, who: &User, events: &[Value]) {
        let mine = self.received.entry(who.name.clone()).or_default();
        for e in events {
            if e["type"] == "message" {
                mine.push((
                    e["sender"].as_str().unwrap_or_default().to_owned(),
                    e["text"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }

    /// Every message the DS acknowledged reached each of its recipients
    /// exactly once, and nobody received a message not sent to them.
    pub fn assert_delivered(&self) {
        for (from, text, to) in &self.sent {
            for who in to {
                let n = self
                    .received
                    .get(who)
                    .map(|r| r.iter().filter(|(f, t)| f == from && t == text).count())
                    .unwrap_or(0);
                assert_eq!(n, 1, "{who} received {from}'s {text:?} {n} times");
            }
        }
        for (who, got) in &self.received {
            for (from, text) in got {
                assert!(
                    self.sent
                        .iter()
                        .any(|(f, t, to)| f == from && t == text && to.contains(who)),
                    "{who} received {from}'s {text:?}, which was not for them"
                );
            }
        }
    }
}

/// The events of `events` of a type.
pub fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

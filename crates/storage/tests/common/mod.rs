//! Shared by the process-level tests (`restart.rs`, `kill.rs`): the SoftHSM
//! test token, child processes (the test binary re-executed with a role in
//! an environment variable) and files as the message channel between them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsmls::wire::Credential;
use hsmls::{BasicCredentialValidator, Client, CredentialValidator, Signer};
use hsmls_custody::pkcs11::{CONFIG_ENV, Pkcs11Config};
use hsmls_custody::{KeyCustody, Pkcs11Custody};

pub const NOW: u64 = 1_750_000_000;
/// Names the role of a child process.
pub const ROLE_ENV: &str = "HSMLS_STORAGE_TEST_ROLE";
/// Names the directory the processes share.
pub const DIR_ENV: &str = "HSMLS_STORAGE_TEST_DIR";

/// The SoftHSM test token's configuration. Fails (never skips) when the
/// environment does not name one.
pub fn pkcs11_config() -> Pkcs11Config {
    if std::env::var_os(CONFIG_ENV).is_none() {
        panic!(
            "{CONFIG_ENV} is not set: this test needs the SoftHSM test token. \
             Run `bash scripts/test.sh` (it runs scripts/setup-hsm.sh and exports \
             SOFTHSM2_CONF and {CONFIG_ENV})."
        );
    }
    Pkcs11Config::from_env().unwrap_or_else(|e| panic!("bad {CONFIG_ENV}: {e}"))
}

/// A custody on the SoftHSM test token.
pub fn pkcs11_custody() -> Arc<Pkcs11Custody> {
    Arc::new(
        Pkcs11Custody::open(&pkcs11_config())
            .unwrap_or_else(|e| panic!("cannot open the SoftHSM test token: {e}")),
    )
}

pub fn validator() -> Arc<dyn CredentialValidator> {
    Arc::new(BasicCredentialValidator::default())
}

pub fn signer(custody: Arc<dyn KeyCustody>, name: &str) -> Signer {
    Signer::generate(custody, Credential::Basic(name.as_bytes().to_vec()))
        .unwrap_or_else(|e| panic!("signature key for {name}: {e}"))
}

/// The client `name` of processes sharing `dir`: the first process to ask
/// generates its signature key in `custody` and writes the key's custody
/// URI to `dir/<name>.key`; later processes (after a restart) find the key
/// in the token by that URI, as an application keeps its identity.
pub fn client_in(custody: Arc<dyn KeyCustody>, dir: &Path, name: &str) -> Client {
    let file = format!("{name}.key");
    let credential = Credential::Basic(name.as_bytes().to_vec());
    let signer = if dir.join(&file).exists() {
        let uri = String::from_utf8(get(dir, &file)).unwrap();
        let key = custody
            .find(&uri)
            .unwrap_or_else(|e| panic!("{name}'s signature key in the token: {e}"));
        Signer::new(custody, key, credential)
    } else {
        let s = signer(custody, name);
        put(dir, &file, s.signature_key.uri().as_bytes());
        s
    };
    Client::new(signer, validator())
}

/// The role of this process, if it is a child.
pub fn child_role() -> Option<(String, PathBuf)> {
    let role = std::env::var(ROLE_ENV).ok()?;
    let dir = std::env::var_os(DIR_ENV).expect("a child needs its directory");
    Some((role, PathBuf::from(dir)))
}

fn child_command(test: &str, role: &str, dir: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(ROLE_ENV, role)
        .env(DIR_ENV, dir)
        .stdin(Stdio::null());
    c
}

/// Starts this test binary again, running only `test` as `role`.
pub fn spawn_child(test: &str, role: &str, dir: &Path) -> Child {
    child_command(test, role, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child process")
}

/// Starts `role` with its output going to the file `log` (for children
/// that are killed rather than waited for).
pub fn spawn_child_logged(test: &str, role: &str, dir: &Path, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    child_command(test, role, dir)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("start the child process")
}

/// Runs `role` in a child process to its end; panics with its output if
/// it failed.
pub fn run_child(test: &str, role: &str, dir: &Path) {
    let out = spawn_child(test, role, dir).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "child {role} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a file atomically (a reader never sees half of it).
pub fn put(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

pub fn get(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// Waits until `name` exists in `dir`.
pub fn wait_for(dir: &Path, name: &str, timeout: Duration) {
    let start = Instant::now();
    while !dir.join(name).exists() {
        assert!(start.elapsed() < timeout, "{name} did not appear in time");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The number of private-key token objects in the test token (to check
/// that a test leaves none behind).
pub fn token_private_keys(custody: &Pkcs11Custody) -> usize {
    use cryptoki::object::{Attribute, ObjectClass};
    custody
        .with_session(|s| {
            s.find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Token(true),
            ])
        })
        .unwrap()
        .unwrap()
        .len()
}

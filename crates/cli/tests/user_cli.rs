//! The user commands' argument parsing, `--json` shapes, exit codes and
//! error messages, through the binary, with no server running (the whole
//! scenario against a real AS and DS is in the workspace's `tests/`
//! package). Clients here keep their keys in software custody unless the
//! test is about the token, so they leave no token objects behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn hsmls(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hsmls"));
    c.args(args)
        .env_remove("HSMLS_CLIENT_CONFIG")
        .env_remove("HSMLS_ENROL_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("cannot run hsmls")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The JSON error object a `--json` command prints on stderr.
fn json_error(o: &Output) -> Value {
    let text = stderr(o);
    let line = text
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON error line in {text:?}"));
    serde_json::from_str(line).unwrap()
}

/// A folder with what a client configuration needs: an AS root
/// certificate (a CA) and a log public key, and a config of `custody`
/// pointing at an AS on `as_port` and a DS on `ds_port` of loopback.
struct Client {
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn client(custody: &str, as_port: u16) -> Client {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let root = params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.path().join("root.pem"), root.pem()).unwrap();
    let log_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(dir.path().join("log.pub"), log_key.public_key_pem()).unwrap();
    let config = dir.path().join("client.toml");
    std::fs::write(
        &config,
        format!(
            "identity = \"im:alice@hsmls.test\"\nstate_path = \"state.sqlite\"\n\n\
             [custody]\n{custody}\n\n\
             [authentication_service]\nurl = \"https://127.0.0.1:{as_port}\"\n\
             root_certificate = \"root.pem\"\nlog_public_key = \"log.pub\"\n\n\
             [delivery_service]\nurl = \"https://127.0.0.1:{as_port}\"\n\
             root_certificate = \"root.pem\"\n"
        ),
    )
    .unwrap();
    Client { dir, config }
}

fn software() -> Client {
    client("kind = \"software\"", closed_port())
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn cfg(c: &Client) -> &str {
    c.config.to_str().unwrap()
}

#[test]
fn bad_command_lines_exit_2() {
    for args in [
        &["group", "create", "--assisted", "--blind"][..],
        &["receive", "--for", "3"],
        &["group", "add", "abcd"],
        &["group", "remove", "abcd"],
        &["send"],
        &["enrol"],
        &["completions", "tcsh"],
        &["safety-number"],
    ] {
        let o = hsmls(args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn help_lists_the_user_commands_and_exit_codes() {
    let o = hsmls(&["--help"], &[]);
    let text = stdout(&o);
    for c in [
        "enrol",
        "group",
        "send",
        "receive",
        "safety-number",
        "status",
        "completions",
        "Exit codes:",
        "10 another hsmls process",
    ] {
        assert!(text.contains(c), "{c} missing from\n{text}");
    }
    let o = hsmls(&["group", "--help"], &[]);
    for c in [
        "create", "add", "remove", "leave", "update", "members", "list",
    ] {
        assert!(stdout(&o).contains(c), "{c}");
    }
}

#[test]
fn completions_are_generated() {
    let o = hsmls(&["completions", "bash"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert!(text.contains("_hsmls()"), "{text}");
    assert!(text.contains("safety-number"));
    let o = hsmls(&["completions", "zsh"], &[]);
    assert!(stdout(&o).starts_with("#compdef hsmls"));
}

#[test]
fn a_missing_configuration_says_how_to_give_one() {
    let o = hsmls(&["status"], &[]);
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(
        e.contains("no client configuration: pass --config FILE or set HSMLS_CLIENT_CONFIG"),
        "{e}"
    );
    assert!(e.contains("hint: hsm-config/client.example.toml"), "{e}");

    let o = hsmls(&["--json", "group", "list"], &[]);
    assert_eq!(o.status.code(), Some(3));
    let v = json_error(&o);
    assert_eq!(v["type"], "error");
    assert_eq!(v["kind"], "config");
    assert_eq!(v["exit_code"], 3);
    assert!(v["hint"].as_str().unwrap().contains("client.example.toml"));

    let o = hsmls(
        &["status"],
        &[("HSMLS_CLIENT_CONFIG", "/nonexistent/hsmls/client.toml")],
    );
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("configuration: cannot open /nonexistent/hsmls/client.toml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_invalid_configuration_names_the_field() {
    let c = software();
    let text = std::fs::read_to_string(&c.config)
        .unwrap()
        .replace("https://127.0.0.1", "http://127.0.0.1");
    std::fs::write(&c.config, text).unwrap();
    let o = hsmls(&["--config", cfg(&c), "status"], &[]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("authentication_service.url must be https://host:port"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn status_of_a_new_client_and_its_json() {
    let c = software();
    let o = hsmls(&["--config", cfg(&c), "status"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "identity: im:alice@hsmls.test\nenrolled: no\n");
    // The config from the environment, JSON out.
    let o = hsmls(&["--json", "status"], &[("HSMLS_CLIENT_CONFIG", cfg(&c))]);
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"type": "status", "identity": "im:alice@hsmls.test",
            "enrolled": false, "groups": []})
    );
    // The state file was created beside the config.
    assert!(c.dir.path().join("state.sqlite").exists());
    // No groups: nothing listed.
    let o = hsmls(&["--config", cfg(&c), "--json", "group", "list"], &[]);
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), ""));
}

#[test]
fn operations_before_enrolment_say_to_enrol() {
    let c = software();
    for args in [&["receive"][..], &["group", "create"]] {
        let mut all = vec!["--config", cfg(&c)];
        all.extend_from_slice(args);
        let o = hsmls(&all, &[]);
        assert_eq!(o.status.code(), Some(5), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("hsmls: not enrolled"), "{e}");
        assert!(
            e.contains("hint: run `hsmls enrol --token TOKEN` with a one-time token"),
            "{e}"
        );
    }
}

#[test]
fn unknown_and_malformed_groups() {
    let c = software();
    let o = hsmls(&["--config", cfg(&c), "group", "members", "abcdef01"], &[]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unknown group abcdef01"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("hint: `hsmls group list`"));
    let o = hsmls(&["--config", cfg(&c), "--json", "send", "abcd", "hi"], &[]);
    assert_eq!(json_error(&o)["kind"], "unknown_group");
    let o = hsmls(&["--config", cfg(&c), "safety-number", "not-hex"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("\"not-hex\" is not a group id: give it in hex"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_authentication_service_unreachable() {
    let c = software();
    let o = hsmls(&["--config", cfg(&c), "enrol", "--token", "t0ken"], &[]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("connection to the AS failed"), "{e}");
    assert!(
        e.contains("hint: is the Authentication Service running at https://127.0.0.1:"),
        "{e}"
    );
    // Progress came first, on stderr.
    assert!(e.starts_with("hsmls: enrolling im:alice@hsmls.test"), "{e}");
    // Nothing on stdout; the token from the environment works the same.
    assert_eq!(stdout(&o), "");
    let o = hsmls(
        &["--config", cfg(&c), "--json", "enrol"],
        &[("HSMLS_ENROL_TOKEN", "t0ken")],
    );
    assert_eq!(json_error(&o)["kind"], "as_unreachable");
    // A token is base64url: one beginning with '-' is a token, not a flag.
    let o = hsmls(
        &[
            "--config",
            cfg(&c),
            "enrol",
            "--token",
            "-QQTd6EdILIY_8hDFYr",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
}

#[test]
fn a_second_process_on_one_client_is_refused() {
    let c = software();
    // The first hsmls process creates the state folder and file.
    let o = hsmls(&["--config", cfg(&c), "status"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let lock = c.dir.path().join("state.sqlite.lock");
    let held = std::fs::OpenOptions::new().write(true).open(&lock).unwrap();
    held.lock().unwrap();
    let o = hsmls(&["--config", cfg(&c), "status"], &[]);
    assert_eq!(o.status.code(), Some(10), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("another hsmls process is using this client"),
        "{}",
        stderr(&o)
    );
    held.unlock().unwrap();
    let o = hsmls(&["--config", cfg(&c), "status"], &[]);
    assert_eq!(o.status.code(), Some(0));
}

/// The client's token is not there: the message names the label and the
/// hint says how to make one.
#[test]
fn a_token_that_is_not_set_up() {
    let Some(conf) = std::env::var_os("SOFTHSM2_CONF") else {
        panic!("SOFTHSM2_CONF is not set: run `bash scripts/test.sh`");
    };
    let c = software();
    let p11 = c.dir.path().join("pkcs11.toml");
    let pin = c.dir.path().join("user.pin");
    std::fs::write(&pin, "1234\n").unwrap();
    let module = module_of(Path::new(
        &std::env::var("HSMLS_PKCS11_CONFIG").expect("HSMLS_PKCS11_CONFIG"),
    ));
    std::fs::write(
        &p11,
        format!(
            "module = {module:?}\ntoken_label = \"no-such-token\"\npin_file = {:?}\n",
            pin.display().to_string()
        ),
    )
    .unwrap();
    let text = std::fs::read_to_string(&c.config).unwrap().replace(
        "kind = \"software\"",
        "kind = \"pkcs11\"\nconfig = \"pkcs11.toml\"",
    );
    std::fs::write(&c.config, text).unwrap();
    let o = hsmls(
        &["--config", cfg(&c), "status"],
        &[("SOFTHSM2_CONF", conf.to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("no PKCS#11 token with label \"no-such-token\""),
        "{e}"
    );
    assert!(
        e.contains("hint: is the token set up? `bash scripts/setup-hsm.sh"),
        "{e}"
    );
}

fn module_of(p11: &Path) -> String {
    std::fs::read_to_string(p11)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("module = "))
        .unwrap()
        .trim_matches('"')
        .to_owned()
}

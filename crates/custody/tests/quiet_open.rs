//! Opening the token prints no false alarms.
//!
//! cryptoki reports, through the `log` crate, an ERROR for every mechanism a
//! token lists that it has no name for (`Mechanism type N is not
//! supported`), and SoftHSM lists about a dozen. An application that
//! forwards `log` records to its tracing subscriber (as `hsmls` does) then
//! printed a dozen ERROR lines on every start. This test installs such a
//! subscriber, writing into a buffer, with the `log` bridge, opens the
//! SoftHSM test token and uses it, and asserts that nothing at WARN or ERROR
//! was written.
//!
//! It is its own test binary because the subscriber and the `log` bridge
//! are process-wide.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use hsmls_custody::{KeyCustody, KeySpec};
use tracing_subscriber::fmt::MakeWriter;

/// A `MakeWriter` appending every line to a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn opening_and_using_the_token_logs_no_warning_or_error() {
    let buffer = Buffer::default();
    // `try_init` also installs the log -> tracing bridge (tracing-log), so
    // cryptoki's `log` records reach the buffer.
    tracing_subscriber::fmt()
        .with_writer(buffer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .try_init()
        .expect("the only subscriber of this test binary");
    // The bridge works: a `log` record shows up in the buffer.
    log_probe();
    assert!(
        buffer.text().contains("log bridge probe"),
        "log records do not reach the subscriber: {}",
        buffer.text()
    );

    let custody = common::pkcs11_custody();
    let summary = custody.capabilities().summary.clone();
    let sig = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256).unwrap();
    custody.sign(&sig, b"quiet").unwrap();
    let hpke = custody.generate(KeySpec::DHKEM_P256_HKDF_SHA256).unwrap();
    custody.dh(&hpke, hpke.public_key().as_bytes()).unwrap();
    custody.destroy(&sig).unwrap();
    custody.destroy(&hpke).unwrap();
    // The state-sealing key: found (or created), used for AES-GCM.
    let custody = Arc::new(custody);
    let sealer = custody.state_sealer().unwrap();
    let sealed = hsmls_custody::StateSealer::seal(&sealer, b"aad", b"quiet").unwrap();
    hsmls_custody::StateSealer::open(&sealer, b"aad", &sealed).unwrap();
    drop(sealer);
    drop(custody);

    let text = buffer.text();
    // The subscriber saw the custody's own INFO line (so it was listening).
    assert!(text.contains(&summary), "no open line logged: {text}");
    let alarms: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        alarms.is_empty(),
        "alarms while opening the token:\n{}",
        alarms.join("\n")
    );
}

/// Emits one record through the `log` facade, as cryptoki does.
fn log_probe() {
    log::info!("log bridge probe");
}

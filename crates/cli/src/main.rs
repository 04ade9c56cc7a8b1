//! `hsmls`: the hsmls command line.
//!
//! ```text
//! hsmls [--config FILE] demo
//! hsmls [--config FILE] custody-demo
//! hsmls [--config FILE] group-demo
//! hsmls [--config FILE] probe
//! hsmls [--config FILE] key generate (signature|hpke)
//! hsmls [--config FILE] key sign URI MESSAGE
//! hsmls [--config FILE] key destroy URI
//! ```
//!
//! The PKCS#11 configuration comes from `--config FILE` or the file named by
//! `HSMLS_PKCS11_CONFIG`; the PIN comes from the file or environment variable
//! that configuration names, never from the command line.
#![forbid(unsafe_code)]

mod group_demo;

use std::path::PathBuf;
use std::process::ExitCode;

use hsmls_custody::pkcs11::Pkcs11Config;
use hsmls_custody::{CustodyError, KeyCustody, KeySpec, Pkcs11Custody};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::OsRng;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Custody(#[from] CustodyError),
    #[error("MLS: {0}")]
    Mls(String),
    #[error("check failed: {0}")]
    Check(String),
}

const USAGE: &str = "usage: hsmls [--config FILE] <command>

commands:
  demo                          custody-demo, then group-demo
  custody-demo                  generate keys in the token, sign, verify, ECDH
  group-demo                    an MLS group of alice, bob and carol, keys in the token
  probe                         show what the token can hold
  key generate signature|hpke   generate a key; prints its URI and public key
  key sign URI MESSAGE          sign SHA-256(MESSAGE); prints the DER signature (hex)
  key destroy URI               destroy a key

The PKCS#11 config file comes from --config or HSMLS_PKCS11_CONFIG
(scripts/setup-hsm.sh writes one for SoftHSM). PINs are never taken as arguments.";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(msg)) => {
            eprintln!("{msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("hsmls: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(config: Option<PathBuf>) -> Result<Pkcs11Config, CliError> {
    Ok(match config {
        Some(path) => Pkcs11Config::from_file(&path)?,
        None => Pkcs11Config::from_env()?,
    })
}

fn open(config: Option<PathBuf>) -> Result<Pkcs11Custody, CliError> {
    Ok(Pkcs11Custody::open(&load(config)?)?)
}

fn run(args: Vec<String>) -> Result<(), CliError> {
    let mut config = None;
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--config" => {
                let path = it
                    .next()
                    .ok_or_else(|| CliError::Usage("--config needs a file".into()))?;
                config = Some(PathBuf::from(path));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => rest.push(arg),
        }
    }
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match rest.as_slice() {
        ["demo"] => {
            let config = load(config)?;
            demo(&Pkcs11Custody::open(&config)?)?;
            println!("\n");
            group_demo::group_demo(&config)
        }
        ["custody-demo"] => demo(&open(config)?),
        ["group-demo"] => group_demo::group_demo(&load(config)?),
        ["probe"] => {
            let custody = open(config)?;
            println!("{}", custody.capabilities().summary);
            Ok(())
        }
        ["key", "generate", kind] => {
            // The keys of cipher suite 0x0002.
            let spec = match *kind {
                "signature" => KeySpec::ECDSA_SECP256R1_SHA256,
                "hpke" => KeySpec::DHKEM_P256_HKDF_SHA256,
                other => return Err(CliError::Usage(format!("unknown key purpose {other:?}"))),
            };
            let key = open(config)?.generate(spec)?;
            println!("uri={}", key.uri());
            println!("public={}", hex::encode(key.public_key().as_bytes()));
            Ok(())
        }
        ["key", "sign", uri, message] => {
            let custody = open(config)?;
            let key = custody.find(uri)?;
            println!("{}", hex::encode(custody.sign(&key, message.as_bytes())?));
            Ok(())
        }
        ["key", "destroy", uri] => {
            let custody = open(config)?;
            let key = custody.find(uri)?;
            custody.destroy(&key)?;
            println!("destroyed {}", key.uri());
            Ok(())
        }
        [] => Err(CliError::Usage("no command given".into())),
        other => Err(CliError::Usage(format!(
            "unknown command {:?}",
            other.join(" ")
        ))),
    }
}

/// The custody demo: a P-256 signature key and an HPKE key generated in the
/// token; the signature is verified and the ECDH result checked in software.
fn demo(custody: &Pkcs11Custody) -> Result<(), CliError> {
    println!("hsmls custody demo");
    println!("token: {}", custody.capabilities().summary);

    let key = custody.generate(KeySpec::ECDSA_SECP256R1_SHA256)?;
    println!("\n1. P-256 signature key generated inside the token");
    println!("   PKCS#11 URI: {}", key.uri());
    println!(
        "   public key:  {}",
        hex::encode(key.public_key().as_bytes())
    );
    let message = b"hsmls: private keys stay in the token";
    let digest: [u8; 32] = Sha256::digest(message).into();
    let der = custody.sign(&key, message)?;
    println!("   message:     {:?}", String::from_utf8_lossy(message));
    println!(
        "   signature:   {} (ECDSA P-256, DER, low S)",
        hex::encode(&der)
    );
    let sig = p256::ecdsa::Signature::from_der(&der)
        .map_err(|e| CliError::Check(format!("signature is not DER: {e}")))?;
    let verifying = p256::ecdsa::VerifyingKey::from_sec1_bytes(key.public_key().as_bytes())
        .map_err(|e| CliError::Check(format!("bad public key: {e}")))?;
    verifying
        .verify_prehash(&digest, &sig)
        .map_err(|e| CliError::Check(format!("signature does not verify: {e}")))?;
    if sig.normalize_s().is_some() {
        return Err(CliError::Check("signature has a high S".into()));
    }
    println!("   verified in software with the p256 crate: OK");

    if custody
        .capabilities()
        .supports(KeySpec::DHKEM_P256_HKDF_SHA256)
    {
        let hpke = custody.generate(KeySpec::DHKEM_P256_HKDF_SHA256)?;
        println!(
            "\n2. HPKE (DHKEM P-256) key: a session object, wrapped once under the token's AES key"
        );
        println!("   PKCS#11 URI: {}", hpke.uri());
        let peer = p256::SecretKey::random(&mut OsRng);
        let peer_public = peer.public_key().to_encoded_point(false);
        let in_token = custody.dh(&hpke, peer_public.as_bytes())?;
        let key_public = p256::PublicKey::from_sec1_bytes(hpke.public_key().as_bytes())
            .map_err(|e| CliError::Check(format!("bad public key: {e}")))?;
        let software = p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), key_public.as_affine());
        if in_token.as_bytes() != &software.raw_secret_bytes()[..] {
            return Err(CliError::Check(
                "token ECDH differs from software DH".into(),
            ));
        }
        println!("   ECDH in the token equals the software DH from the peer side: OK");
        custody.destroy(&hpke)?;
    } else {
        println!("\n2. this token cannot hold HPKE keys; skipped the ECDH step");
    }

    custody.destroy(&key)?;
    println!("\n3. demo keys destroyed");
    Ok(())
}

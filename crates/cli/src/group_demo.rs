//! The MLS group demo: three members, each with its own [`Pkcs11Custody`]
//! session on the same token, run a group through the RFC 9420 engine
//! (`hsmls`): KeyPackages, Welcome, application messages, a self-update
//! and a remove. After every step each member's epoch and
//! `epoch_authenticator` (RFC 9420 §8) are printed and compared; a
//! disagreement ends the demo with an error.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hsmls::wire::{Credential, RoutingInfo, WireFormat};
use hsmls::{
    BasicCredentialValidator, Client, CredentialValidator, Group, GroupConfig, JoinOptions,
    KeyPackageBundle, KeyPackageConfig, ProcessedMessage, Signer,
};
use hsmls_custody::pkcs11::Pkcs11Config;
use hsmls_custody::{CustodyError, KeyCustody, KeyRef, Pkcs11Custody};

use crate::CliError;

/// One member: its name, its client (signature key in its own custody)
/// and its group state once it is in the group.
struct Member {
    name: &'static str,
    client: Client,
    group: Option<Group>,
}

impl Member {
    fn group(&mut self) -> Result<&mut Group, CliError> {
        let name = self.name;
        self.group
            .as_mut()
            .ok_or_else(|| CliError::Check(format!("{name} is not in the group")))
    }
}

fn mls(e: impl std::fmt::Display) -> CliError {
    CliError::Mls(e.to_string())
}

/// A PKCS#11 URI shortened for the terminal to its token and object
/// label (HPKE key URIs also carry the wrapped key and are long).
fn short_uri(uri: &str) -> String {
    match uri.find(";id=") {
        Some(cut) => format!("{};… ({} chars)", &uri[..cut], uri.len()),
        None => uri.to_owned(),
    }
}

/// The first 8 bytes in hex, for the terminal.
fn short_hex(bytes: &[u8]) -> String {
    let head = bytes.get(..8).unwrap_or(bytes);
    format!("{}…", hex::encode(head))
}

/// The wire format of an encoded `MLSMessage`, as a Delivery Service
/// reads it.
fn wire_format(message: &[u8]) -> &'static str {
    match RoutingInfo::parse(message).map(|info| info.wire_format) {
        Ok(WireFormat::PUBLIC_MESSAGE) => "PublicMessage",
        Ok(WireFormat::PRIVATE_MESSAGE) => "PrivateMessage",
        Ok(WireFormat::WELCOME) => "Welcome",
        Ok(WireFormat::GROUP_INFO) => "GroupInfo",
        Ok(WireFormat::KEY_PACKAGE) => "KeyPackage",
        Ok(_) => "unknown wire format",
        Err(_) => "undecodable",
    }
}

/// Prints each member's epoch and epoch_authenticator and fails unless
/// all members in the group agree on the epoch, the epoch_authenticator,
/// the tree hash and the membership.
fn check_agreement(members: &[Member]) -> Result<(), CliError> {
    let groups: Vec<(&str, &Group)> = members
        .iter()
        .filter_map(|m| m.group.as_ref().map(|g| (m.name, g)))
        .collect();
    let Some((_, first)) = groups.first() else {
        return Err(CliError::Check("nobody is in the group".into()));
    };
    for (name, g) in &groups {
        println!(
            "   {name:<6} epoch {}  epoch_authenticator {}",
            g.epoch(),
            short_hex(g.epoch_authenticator())
        );
    }
    for (name, g) in &groups {
        if g.epoch() != first.epoch()
            || g.epoch_authenticator() != first.epoch_authenticator()
            || g.tree_hash() != first.tree_hash()
            || g.members() != first.members()
        {
            return Err(CliError::Check(format!(
                "{name} disagrees with {} about epoch {}",
                groups[0].0,
                first.epoch()
            )));
        }
    }
    if first.members().len() != groups.len() {
        return Err(CliError::Check(format!(
            "the tree has {} members, {} members hold the group",
            first.members().len(),
            groups.len()
        )));
    }
    let names: Vec<&str> = groups.iter().map(|(n, _)| *n).collect();
    let verdict = match names.as_slice() {
        [one] => format!("{one} is the only member"),
        all => format!("{} agree", all.join(", ")),
    };
    println!(
        "   => {verdict}: epoch {}, epoch_authenticator {}",
        first.epoch(),
        short_hex(first.epoch_authenticator())
    );
    Ok(())
}

/// Delivers a commit of `members[committer]` to every other member in the
/// group (which validate and merge it); the committer then merges its
/// pending commit, as it would once the Delivery Service accepted it.
fn deliver_commit(
    members: &mut [Member],
    committer: usize,
    commit: &[u8],
    now: u64,
) -> Result<(), CliError> {
    for (i, m) in members.iter_mut().enumerate() {
        if i == committer || m.group.is_none() {
            continue;
        }
        let name = m.name;
        let g = m.group()?;
        let staged = match g.process_incoming(commit, now).map_err(mls)? {
            ProcessedMessage::StagedCommit(s) => s,
            other => {
                return Err(CliError::Check(format!(
                    "{name}: expected a commit, got {other:?}"
                )));
            }
        };
        let removed = staged.self_removed;
        g.merge_staged_commit(staged).map_err(mls)?;
        if removed {
            println!("   {name} processed the commit: removed from the group");
            m.group = None;
        } else {
            println!("   {name} processed the commit");
        }
    }
    members
        .get_mut(committer)
        .ok_or_else(|| CliError::Check("no such committer".into()))?
        .group()?
        .merge_pending_commit()
        .map_err(mls)
}

/// `members[sender]` sends `text`; every other member in the group
/// decrypts it and prints what it received.
fn send(members: &mut [Member], sender: usize, text: &str, now: u64) -> Result<(), CliError> {
    let from = members
        .get_mut(sender)
        .ok_or_else(|| CliError::Check("no such sender".into()))?;
    let from_name = from.name;
    let from_leaf = from.group()?.own_leaf_index();
    let message = from
        .group()?
        .encrypt_application(text.as_bytes())
        .map_err(mls)?;
    println!(
        "   {from_name} sends {:?} ({}, {} bytes)",
        text,
        wire_format(&message),
        message.len()
    );
    for (i, m) in members.iter_mut().enumerate() {
        if i == sender || m.group.is_none() {
            continue;
        }
        let name = m.name;
        match m.group()?.process_incoming(&message, now).map_err(mls)? {
            ProcessedMessage::ApplicationMessage { sender, data, .. } if sender == from_leaf => {
                let received = String::from_utf8_lossy(&data);
                if received != text {
                    return Err(CliError::Check(format!(
                        "{name} decrypted {received:?}, {from_name} sent {text:?}"
                    )));
                }
                println!("   {name} received from {from_name}: {received:?}");
            }
            other => {
                return Err(CliError::Check(format!(
                    "{name}: expected {from_name}'s message, got {other:?}"
                )));
            }
        }
    }
    Ok(())
}

/// Fails unless `key` is gone from the token: not found by its URI.
fn check_destroyed(custody: &dyn KeyCustody, key: &KeyRef, what: &str) -> Result<(), CliError> {
    match custody.find(key.uri()) {
        Ok(_) => Err(CliError::Check(format!("{what} is still in the token"))),
        Err(CustodyError::KeyNotFound(_)) => {
            println!("   {what}: find by URI fails: no key found");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The group demo. Each member opens its own session on the token named
/// by `config`; their signature keys are destroyed at the end whether the
/// scenario succeeded or not.
pub(crate) fn group_demo(config: &Pkcs11Config) -> Result<(), CliError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| CliError::Check(format!("clock before 1970: {e}")))?
        .as_secs();
    let suite = GroupConfig::default().cipher_suite;
    println!("hsmls MLS group demo (RFC 9420)");
    println!(
        "cipher suite 0x{:04x} (MLS_128_DHKEMP256_AES128GCM_SHA256_P256); handshakes as PrivateMessage",
        suite.0
    );
    println!(
        "token {:?}: alice, bob and carol each open their own PKCS#11 session",
        config.token_label
    );

    println!("\n1. each member's signature key is generated in the token");
    let validator: Arc<dyn CredentialValidator> = Arc::new(BasicCredentialValidator::default());
    let mut members = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let custody: Arc<dyn KeyCustody> = Arc::new(Pkcs11Custody::open(config)?);
        match Signer::generate(custody, Credential::Basic(name.as_bytes().to_vec())) {
            Ok(signer) => {
                println!("   {name:<6} {}", short_uri(signer.signature_key.uri()));
                members.push(Member {
                    name,
                    client: Client::new(signer, validator.clone()),
                    group: None,
                });
            }
            Err(e) => {
                let _ = cleanup(&members);
                return Err(e.into());
            }
        }
    }

    let result = scenario(&mut members, now);
    let cleaned = cleanup(&members);
    result.and(cleaned)
}

/// Destroys the members' signature keys (token objects), so that running
/// the demo again does not accumulate objects. HPKE keys are session
/// objects and go with the sessions.
fn cleanup(members: &[Member]) -> Result<(), CliError> {
    let mut first_error = Ok(());
    if !members.is_empty() {
        println!("\n9. clean-up: the demo's signature keys are destroyed in the token");
    }
    for m in members {
        let custody = m.client.custody().as_ref();
        let key = &m.client.signer().signature_key;
        let outcome = custody
            .destroy(key)
            .map_err(CliError::from)
            .and_then(|()| check_destroyed(custody, key, &format!("{} signature key", m.name)));
        if let Err(e) = outcome {
            eprintln!("hsmls: clean-up of {}'s signature key: {e}", m.name);
            if first_error.is_ok() {
                first_error = Err(e);
            }
        }
    }
    first_error
}

fn scenario(members: &mut [Member], now: u64) -> Result<(), CliError> {
    const ALICE: usize = 0;
    const BOB: usize = 1;
    const CAROL: usize = 2;

    println!(
        "\n2. bob and carol publish KeyPackages (init and leaf HPKE keys generated in the token)"
    );
    let mut bundles = Vec::new();
    for m in members.iter().skip(1) {
        let bundle = m
            .client
            .generate_key_package(&KeyPackageConfig::new(now, 86_400))
            .map_err(mls)?;
        println!(
            "   {:<6} init key {}",
            m.name,
            short_uri(bundle.init_key.uri())
        );
        println!(
            "   {:<6} leaf key {}",
            "",
            short_uri(bundle.encryption_key.uri())
        );
        bundles.push(bundle);
    }
    let key_packages = bundles
        .iter()
        .map(KeyPackageBundle::to_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(mls)?;

    println!("\n3. alice creates the group");
    members[ALICE].group = Some(
        members[ALICE]
            .client
            .create_group(b"hsmls demo group".to_vec(), Vec::new(), now)
            .map_err(mls)?,
    );
    check_agreement(members)?;

    println!(
        "\n4. alice validates their KeyPackages, adds bob and carol; they join from the Welcome"
    );
    let validated = key_packages
        .iter()
        .map(|kp| members[ALICE].client.validate_key_package(kp, now))
        .collect::<Result<Vec<_>, _>>()
        .map_err(mls)?;
    let out = members[ALICE]
        .group()?
        .add_members(&validated, now)
        .map_err(mls)?;
    members[ALICE]
        .group()?
        .merge_pending_commit()
        .map_err(mls)?;
    let welcome = out
        .welcome
        .ok_or_else(|| CliError::Check("the add commit has no Welcome".into()))?;
    println!(
        "   alice: Commit ({}, {} bytes), Welcome ({} bytes)",
        wire_format(&out.commit),
        out.commit.len(),
        welcome.len()
    );
    for (m, bundle) in members.iter_mut().skip(1).zip(&bundles) {
        m.group = Some(
            m.client
                .join_from_welcome(bundle, &welcome, JoinOptions::default())
                .map_err(mls)?,
        );
        println!("   {} joined from the Welcome", m.name);
    }
    check_agreement(members)?;

    println!("\n5. application messages (PrivateMessage)");
    send(members, ALICE, "hello bob and carol", now)?;
    send(members, BOB, "hi alice, bob here", now)?;
    send(members, CAROL, "carol says hi", now)?;

    println!("\n6. bob updates his leaf key (a commit with an UpdatePath)");
    let old_leaf = members[BOB].group()?.own_leaf_key().clone();
    let out = members[BOB].group()?.self_update(now).map_err(mls)?;
    println!(
        "   bob: Commit ({}, {} bytes)",
        wire_format(&out.commit),
        out.commit.len()
    );
    deliver_commit(members, BOB, &out.commit, now)?;
    println!(
        "   bob's new leaf key {}",
        short_uri(members[BOB].group()?.own_leaf_key().uri())
    );
    check_agreement(members)?;
    check_destroyed(
        members[BOB].client.custody().as_ref(),
        &old_leaf,
        "bob's replaced leaf key",
    )?;
    send(members, BOB, "bob, with fresh keys", now)?;

    println!("\n7. alice removes carol");
    let carol_leaf = members[CAROL].group()?.own_leaf_index();
    let carol_key = members[CAROL].group()?.own_leaf_key().clone();
    let out = members[ALICE]
        .group()?
        .remove_members(&[carol_leaf], now)
        .map_err(mls)?;
    println!(
        "   alice: Commit ({}, {} bytes)",
        wire_format(&out.commit),
        out.commit.len()
    );
    deliver_commit(members, ALICE, &out.commit, now)?;
    if members[CAROL].group.is_some() {
        return Err(CliError::Check("carol is still in the group".into()));
    }
    check_agreement(members)?;
    send(members, ALICE, "just the two of us", now)?;
    check_destroyed(
        members[CAROL].client.custody().as_ref(),
        &carol_key,
        "carol's leaf key",
    )?;

    println!("\n8. the init keys of the used KeyPackages were destroyed on join (RFC 9420 §9.2)");
    for (m, bundle) in members.iter().skip(1).zip(&bundles) {
        check_destroyed(
            m.client.custody().as_ref(),
            &bundle.init_key,
            &format!("{} init key {}", m.name, short_uri(bundle.init_key.uri())),
        )?;
    }
    Ok(())
}

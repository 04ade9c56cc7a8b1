//! What the user commands print: one JSON object per line with `--json`
//! (every object has a `"type"`), short lines of text otherwise; progress
//! and warnings on stderr. Client events ([`ClientEvent`]) are rendered
//! once as JSON and the text is made from that, so both forms say the same.

use std::io::Write;

use hsmls_client::{ClientEvent, CredentialProblem, ForkReason, OwnCredentialEvent};
use serde_json::{Value, json};

/// How results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// One JSON object per line instead of text.
    pub json: bool,
}

impl Output {
    /// Prints a result: its JSON object, or `text`.
    pub fn result(&self, value: Value, text: impl FnOnce() -> String) {
        if self.json {
            line(&value.to_string());
        } else {
            line(&text());
        }
    }

    /// Prints an event (as `receive` shows it).
    pub fn event(&self, value: &Value) {
        if self.json {
            line(&value.to_string());
        } else {
            line(&event_text(value));
        }
    }
}

/// Writes a line to stdout; a closed stdout (a pipe whose reader left) is
/// not an error worth a panic.
fn line(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
    let _ = out.flush();
}

/// A progress line on stderr (long steps: enrolment, KeyPackages).
pub fn progress(s: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "hsmls: {s}");
}

/// The short form of a group id shown in text (its first 8 hex digits;
/// commands accept it as a prefix).
pub fn short(group: &str) -> &str {
    group.get(..8).unwrap_or(group)
}

fn fork_reason(r: &ForkReason) -> String {
    match r {
        ForkReason::UnprocessableCommit(e) => format!("a commit could not be processed: {e}"),
        ForkReason::MissedCommits {
            local_epoch,
            message_epoch,
        } => format!("commits were missed (epoch {local_epoch} here, {message_epoch} on the DS)"),
        ForkReason::StateLost(e) => format!("the saved state was lost: {e}"),
        other => format!("{other:?}"),
    }
}

fn problem(p: &CredentialProblem) -> String {
    match p {
        CredentialProblem::Revoked => "revoked".into(),
        CredentialProblem::Expired => "expired".into(),
        CredentialProblem::Refused(r) => format!("refused: {r}"),
        other => format!("{other:?}"),
    }
}

/// The JSON form of an event. Application data is `text` when it is
/// UTF-8, else `data_hex`.
pub fn event_json(e: &ClientEvent) -> Value {
    match e {
        ClientEvent::Message {
            group,
            sender,
            epoch,
            data,
        } => {
            let mut v = json!({"type": "message", "group": group.to_string(),
                "sender": sender, "epoch": epoch});
            match std::str::from_utf8(data) {
                Ok(t) => v["text"] = json!(t),
                Err(_) => v["data_hex"] = json!(hex::encode(data)),
            }
            v
        }
        ClientEvent::Joined {
            group,
            epoch,
            members,
        } => json!({"type": "joined", "group": group.to_string(), "epoch": epoch,
            "members": members}),
        ClientEvent::MemberAdded { group, member, by } => json!({"type": "member_added",
            "group": group.to_string(), "member": member, "by": by}),
        ClientEvent::MemberRemoved { group, member, by } => json!({"type": "member_removed",
            "group": group.to_string(), "member": member, "by": by}),
        ClientEvent::MemberUpdated { group, member } => json!({"type": "member_updated",
            "group": group.to_string(), "member": member}),
        ClientEvent::Removed { group, by } => json!({"type": "removed",
            "group": group.to_string(), "by": by}),
        ClientEvent::EpochChanged {
            group,
            epoch,
            epoch_authenticator,
        } => json!({"type": "epoch", "group": group.to_string(), "epoch": epoch,
            "epoch_authenticator": hex::encode(epoch_authenticator),
            "safety_number": hsmls_client::safety_number(epoch_authenticator)}),
        ClientEvent::CommitRebuilt { group, epoch } => json!({"type": "commit_rebuilt",
            "group": group.to_string(), "epoch": epoch}),
        ClientEvent::CredentialProblem {
            group,
            member,
            problem: p,
        } => json!({"type": "credential_problem", "group": group.to_string(),
            "member": member, "problem": problem(p)}),
        ClientEvent::OwnCredential(c) => match c {
            OwnCredentialEvent::Enrolled { serial, not_after } => json!({"type": "own_credential",
                "event": "enrolled", "serial": serial, "not_after": not_after}),
            OwnCredentialEvent::Renewed { serial, not_after } => json!({"type": "own_credential",
                "event": "renewed", "serial": serial, "not_after": not_after}),
            OwnCredentialEvent::NearExpiry { not_after, reason } => {
                json!({"type": "own_credential",
                "event": "near_expiry", "not_after": not_after, "reason": reason})
            }
            OwnCredentialEvent::Revoked { serial } => json!({"type": "own_credential",
                "event": "revoked", "serial": serial}),
            other => json!({"type": "own_credential", "event": format!("{other:?}")}),
        },
        ClientEvent::Rejoined {
            group,
            epoch,
            reason,
        } => json!({"type": "rejoined", "group": group.to_string(), "epoch": epoch,
            "reason": fork_reason(reason)}),
        ClientEvent::GroupBroken { group, reason } => json!({"type": "group_broken",
            "group": group.to_string(), "reason": fork_reason(reason)}),
        ClientEvent::KeyPackagesPublished {
            published,
            last_resort_rotated,
            available,
        } => json!({"type": "key_packages_published", "published": published,
            "last_resort_rotated": last_resort_rotated, "available": available}),
        // A kind of event this CLI does not know yet: its Debug form, which
        // never shows application data.
        other => json!({"type": "other", "debug": format!("{other:?}")}),
    }
}

/// Whether an event is a status report of this client (shown as progress)
/// rather than news of a group (kept for `receive`).
pub fn is_progress(e: &ClientEvent) -> bool {
    matches!(
        e,
        ClientEvent::KeyPackagesPublished { .. }
            | ClientEvent::OwnCredential(
                OwnCredentialEvent::Enrolled { .. } | OwnCredentialEvent::Renewed { .. }
            )
    )
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("?")
}

fn by(v: &Value) -> String {
    match v["by"].as_str() {
        Some(b) => format!(" by {b}"),
        None => String::new(),
    }
}

/// The text form of an event's JSON.
pub fn event_text(v: &Value) -> String {
    let g = short(s(v, "group"));
    match s(v, "type") {
        "message" => match v["text"].as_str() {
            Some(t) => format!("[{g}] {}: {t}", s(v, "sender")),
            None => format!("[{g}] {}: (binary) {}", s(v, "sender"), s(v, "data_hex")),
        },
        "joined" => format!(
            "[{g}] joined at epoch {}; members: {}",
            v["epoch"],
            v["members"]
                .as_array()
                .map(|m| m
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
        "member_added" => format!("[{g}] {} was added{}", s(v, "member"), by(v)),
        "member_removed" => format!("[{g}] {} was removed{}", s(v, "member"), by(v)),
        "member_updated" => format!("[{g}] {} updated its keys", s(v, "member")),
        "removed" => format!(
            "[{g}] you were removed from the group{}: you can no longer read it",
            by(v)
        ),
        "epoch" => format!(
            "[{g}] epoch {}, safety number {}",
            v["epoch"],
            s(v, "safety_number")
        ),
        "commit_rebuilt" => format!(
            "[{g}] a commit lost its epoch to another and was sent again for epoch {}",
            v["epoch"]
        ),
        "credential_problem" => format!(
            "[{g}] the credential of {} is {}",
            s(v, "member"),
            s(v, "problem")
        ),
        "own_credential" => match s(v, "event") {
            "enrolled" => format!("enrolled: certificate {}", s(v, "serial")),
            "renewed" => format!("certificate renewed: {}", s(v, "serial")),
            "near_expiry" => format!(
                "your certificate expires at {} and renewal failed: {}",
                v["not_after"],
                s(v, "reason")
            ),
            "revoked" => format!(
                "your certificate {} was revoked by the AS operator",
                s(v, "serial")
            ),
            other => format!("credential: {other}"),
        },
        "rejoined" => format!(
            "[{g}] rejoined at epoch {} ({})",
            v["epoch"],
            s(v, "reason")
        ),
        "group_broken" => format!("[{g}] the group cannot go on here: {}", s(v, "reason")),
        "key_packages_published" => format!(
            "{} KeyPackages published ({} available on the DS{})",
            v["published"],
            v["available"],
            if v["last_resort_rotated"].as_bool() == Some(true) {
                ", last-resort KeyPackage replaced"
            } else {
                ""
            }
        ),
        _ => format!("event: {}", s(v, "debug")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsmls_client::GroupId;

    #[test]
    fn messages_keep_text_or_hex() {
        let g = GroupId(vec![0xab; 16]);
        let v = event_json(&ClientEvent::Message {
            group: g.clone(),
            sender: "im:alice@x".into(),
            epoch: 3,
            data: b"hi".to_vec(),
        });
        assert_eq!(v["type"], "message");
        assert_eq!(v["text"], "hi");
        assert_eq!(v["group"], "ab".repeat(16));
        assert_eq!(event_text(&v), "[abababab] im:alice@x: hi");
        let v = event_json(&ClientEvent::Message {
            group: g,
            sender: "im:alice@x".into(),
            epoch: 3,
            data: vec![0xff, 0xfe],
        });
        assert_eq!(v["data_hex"], "fffe");
        assert!(v.get("text").is_none());
    }

    #[test]
    fn removal_and_epoch_read_well() {
        let g = GroupId(vec![1; 16]);
        let v = event_json(&ClientEvent::Removed {
            group: g.clone(),
            by: Some("im:alice@x".into()),
        });
        assert_eq!(
            event_text(&v),
            "[01010101] you were removed from the group by im:alice@x: you can no longer read it"
        );
        let v = event_json(&ClientEvent::EpochChanged {
            group: g,
            epoch: 4,
            epoch_authenticator: vec![0; 32],
        });
        assert_eq!(v["epoch"], 4);
        assert_eq!(v["safety_number"], hsmls_client::safety_number(&[0; 32]));
    }
}

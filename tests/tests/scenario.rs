//! RFC 9750's scenario through the `hsmls` binary, every party a separate
//! process on loopback (an AS and a DS over TLS, alice, bob and charlie
//! each with a SoftHSM token of their own), on SQLite and on PostgreSQL:
//! enrolment, a group of three, messages, a self-update, the DS killed
//! with SIGKILL in the middle and restarted, a commit race between two
//! members, a member offline for two commits, a removal, and a revoked
//! credential removed by a member; one member follows the live push
//! (`receive --follow --for`). After every commit every member is in
//! the same epoch with the same epoch authenticator, and every message the
//! DS acknowledged reached each of its recipients exactly once.

use std::process::Stdio;

use hsmls_system_tests::{Ledger, Storage, System, User, of_type};

/// Every member of `members` is in the same epoch with the same epoch
/// authenticator; returns the epoch.
fn agree(members: &[&User], group: &str) -> u64 {
    let first = members[0].epoch(group);
    for m in &members[1..] {
        assert_eq!(
            m.epoch(group),
            first,
            "{} and {} disagree",
            members[0].name,
            m.name
        );
    }
    first.0
}

fn scenario(storage: Storage, suite: u16) {
    let mut sys = System::start(storage);
    let alice = sys.user_in_suite("alice", suite);
    let bob = sys.user_in_suite("bob", suite);
    let charlie = sys.user_in_suite("charlie", suite);
    let mut ledger = Ledger::default();

    // alice creates a group and adds bob and charlie.
    let created = alice.ok(&["group", "create"]);
    assert_eq!(created[0]["type"], "group_created");
    assert_eq!(created[0]["mode"], "assisted");
    let g = created[0]["group"].as_str().unwrap().to_owned();
    let added = alice.ok(&["group", "add", &g, &bob.identity, &charlie.identity]);
    assert_eq!(added[0]["type"], "commit");
    assert_eq!(added[0]["epoch"], 1);
    for u in [&bob, &charlie] {
        let events = ledger.receive(u);
        let joined = of_type(&events, "joined");
        assert_eq!(joined.len(), 1, "{}: {events:?}", u.name);
        assert_eq!(joined[0]["epoch"], 1);
    }
    assert_eq!(agree(&[&alice, &bob, &charlie], &g), 1);

    // Messages, then bob's self-update.
    ledger.send(&alice, &g, "hello bob and charlie", &[&bob, &charlie]);
    ledger.send(&bob, &g, "hi from bob", &[&alice, &charlie]);
    let updated = bob.ok(&["group", "update", &g]);
    assert_eq!(updated[0]["epoch"], 2);
    for u in [&alice, &bob, &charlie] {
        ledger.receive(u);
    }
    assert_eq!(agree(&[&alice, &bob, &charlie], &g), 2);

    // The DS is killed with SIGKILL after acknowledging a message; while
    // it is down a send fails (exit code 8, nothing acknowledged); it
    // restarts on the same database and nothing acknowledged is lost.
    ledger.send(&alice, &g, "just before the crash", &[&bob, &charlie]);
    sys.kill_ds();
    let down = bob.run(&["send", &g, "while the DS is down"]);
    assert_eq!(down.status.code(), Some(8), "{down:?}");
    let err: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&down.stderr)
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(err["kind"], "ds_unreachable");
    sys.start_ds();
    ledger.send(&charlie, &g, "after the restart", &[&alice, &bob]);
    for u in [&alice, &charlie] {
        ledger.receive(u);
    }
    // bob follows the live push: he gets what waited for him, then what
    // alice sends while he follows; --for ends the process cleanly.
    let events = ledger.follow(&bob, 3, |l| {
        l.send(&alice, &g, "pushed to bob", &[&bob, &charlie]);
    });
    assert!(
        events.iter().any(|e| e["text"] == "pushed to bob"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e["text"] == "after the restart"),
        "{events:?}"
    );
    ledger.receive(&charlie);
    assert_eq!(agree(&[&alice, &bob, &charlie], &g), 2);

    // A commit race: alice and bob both commit a self-update for epoch 2
    // at the same moment. The DS takes one; the other's runtime rebuilds
    // its commit on epoch 3 and sends it again: both succeed, and the
    // group is at epoch 4.
    let spawn = |u: &User| {
        u.command(&["group", "update", &g])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (pa, pb) = (spawn(&alice), spawn(&bob));
    let (oa, ob) = (
        pa.wait_with_output().unwrap(),
        pb.wait_with_output().unwrap(),
    );
    assert!(
        oa.status.success(),
        "{}",
        String::from_utf8_lossy(&oa.stderr)
    );
    assert!(
        ob.status.success(),
        "{}",
        String::from_utf8_lossy(&ob.stderr)
    );
    let mut rebuilt = 0;
    for u in [&alice, &bob, &charlie] {
        rebuilt += of_type(&ledger.receive(u), "commit_rebuilt").len();
    }
    assert_eq!(rebuilt, 1, "exactly one of the two commits lost its epoch");
    assert_eq!(agree(&[&alice, &bob, &charlie], &g), 4);

    // charlie is offline for two commits and a message, then catches up.
    alice.ok(&["group", "update", &g]);
    ledger.receive(&bob);
    bob.ok(&["group", "update", &g]);
    ledger.receive(&alice);
    ledger.send(&alice, &g, "while charlie was away", &[&bob, &charlie]);
    let events = ledger.receive(&charlie);
    assert_eq!(of_type(&events, "member_updated").len(), 2, "{events:?}");
    ledger.receive(&bob);
    assert_eq!(agree(&[&alice, &bob, &charlie], &g), 6);

    // alice removes charlie, who is told and reads nothing after.
    alice.ok(&["group", "remove", &g, &charlie.identity]);
    let events = ledger.receive(&charlie);
    assert_eq!(of_type(&events, "removed").len(), 1, "{events:?}");
    ledger.send(&alice, &g, "charlie cannot read this", &[&bob]);
    let events = ledger.receive(&charlie);
    assert!(events.is_empty(), "{events:?}");
    let gone = charlie.run(&["send", &g, "still here?"]);
    assert_eq!(gone.status.code(), Some(6));
    ledger.receive(&bob);
    assert_eq!(agree(&[&alice, &bob], &g), 7);

    // The operator revokes bob's certificate; alice's client removes him.
    let status = bob.ok(&["status"]);
    let serial = status[0]["serial"].as_str().unwrap().to_owned();
    let revoked = hsmls_system_tests::json_lines(
        hsmls_system_tests::ok(&sys.operator(&["--json", "revoke", &serial])).as_bytes(),
    );
    assert_eq!(revoked[0]["type"], "revoked");
    assert_eq!(revoked[0]["serial"], serial.as_str());
    let events = ledger.receive(&alice);
    let problems = of_type(&events, "credential_problem");
    assert!(
        problems
            .iter()
            .any(|p| p["member"] == bob.identity.as_str() && p["problem"] == "revoked"),
        "{events:?}"
    );
    let removed = of_type(&events, "member_removed");
    assert!(
        removed.iter().any(|r| r["member"] == bob.identity.as_str()),
        "{events:?}"
    );
    let members = alice.ok(&["group", "members", &g]);
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["identity"], alice.identity.as_str());
    let events = ledger.receive(&bob);
    assert_eq!(of_type(&events, "removed").len(), 1, "{events:?}");

    ledger.assert_delivered();
}

#[test]
fn scenario_on_sqlite() {
    scenario(Storage::Sqlite, 0x0002);
}

/// Suite 0x0001: Ed25519 signature keys in each token, X25519 HPKE keys
/// in software sealed under it (`hpke_keys = "token-else-software"`).
#[test]
fn scenario_on_sqlite_suite_0x0001() {
    scenario(Storage::Sqlite, 0x0001);
}

/// Suite 0x0007: P-384 signature and HPKE keys, all in each token.
#[test]
fn scenario_on_sqlite_suite_0x0007() {
    scenario(Storage::Sqlite, 0x0007);
}

#[test]
fn scenario_on_postgres() {
    scenario(Storage::Postgres, 0x0002);
}

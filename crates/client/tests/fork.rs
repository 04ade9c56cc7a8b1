//! Fork recovery (RFC 9750 "Recovery After State Loss"): a member whose
//! saved state went back an epoch (a restored backup) receives a commit of
//! an epoch it never reached, and a member whose state is gone entirely;
//! each rejoins the assisted group by external commit from the GroupInfo
//! and ratchet tree the DS serves, replacing its old leaf, and tells the
//! application. The others process the rejoin, and everyone agrees again.

mod common;

use common::{Env, assert_agree, drain, identity, member_ids};
use hsmls_client::{ClientEvent, ClientRuntime, ForkReason, GroupMode};
use hsmls_storage::{GroupStateStorage, SqliteStorage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_or_without_state_rejoins() {
    let mut env = Env::start().await;
    let alice = env.client("alice").await;
    let bob = env.client("bob").await;
    let carol = env.client("carol").await;
    let g = alice.create_group(GroupMode::Assisted).await.unwrap();
    alice
        .add_members(&g, &[&identity("bob"), &identity("carol")])
        .await
        .unwrap();
    bob.sync().await.unwrap();
    carol.sync().await.unwrap();
    assert_agree(&[&alice, &bob, &carol], &g, 1).await;

    // Carol's state of epoch 1, as a backup would hold it.
    let carol_cfg = env.config("carol");
    let storage = SqliteStorage::open(&carol_cfg.state_path).await.unwrap();
    let backup = storage.read_group(g.as_bytes()).await.unwrap().unwrap();
    assert_eq!(backup.epoch, 1);
    storage.close().await;

    // Epoch 2 comes and Carol follows; then her state is rolled back.
    assert_eq!(alice.self_update(&g).await.unwrap(), 2);
    carol.sync().await.unwrap();
    assert_eq!(carol.epoch(&g).await.unwrap(), 2);
    let cursor = carol.cursor(&g).await.unwrap();
    carol.shutdown().await;
    drop(carol);
    let storage = SqliteStorage::open(&carol_cfg.state_path).await.unwrap();
    assert!(storage.delete_group(g.as_bytes()).await.unwrap());
    storage.write_group(&backup).await.unwrap();
    storage.close().await;
    let carol = ClientRuntime::open(carol_cfg.clone()).await.unwrap();
    env.track(&carol);
    assert_eq!(carol.epoch(&g).await.unwrap(), 1);
    assert_eq!(carol.cursor(&g).await.unwrap(), cursor);
    let mut ec = carol.events();

    // Bob commits epoch 2 -> 3. Carol, at epoch 1, cannot process it: she
    // rejoins (epoch 4) and says why.
    bob.sync().await.unwrap();
    assert_eq!(bob.self_update(&g).await.unwrap(), 3);
    carol.sync().await.unwrap();
    let events = drain(&mut ec);
    assert!(
        events.contains(&ClientEvent::Rejoined {
            group: g.clone(),
            epoch: 4,
            reason: ForkReason::MissedCommits {
                local_epoch: 1,
                message_epoch: 2,
            },
        }),
        "{events:#?}"
    );
    let mut ea = alice.events();
    alice.sync().await.unwrap();
    bob.sync().await.unwrap();
    assert_agree(&[&alice, &bob, &carol], &g, 4).await;
    let all = vec![identity("alice"), identity("bob"), identity("carol")];
    for c in [&alice, &bob, &carol] {
        assert_eq!(member_ids(c, &g).await, all);
    }
    // The others see Carol's leaf replaced (same signature key, same
    // leaf, fresh keys) by an external commit, which no member committed.
    let events = drain(&mut ea);
    assert!(
        events.contains(&ClientEvent::MemberUpdated {
            group: g.clone(),
            member: identity("carol"),
        }),
        "{events:#?}"
    );
    assert!(
        !events.iter().any(|e| matches!(
            e,
            ClientEvent::MemberAdded { .. } | ClientEvent::MemberRemoved { .. }
        )),
        "{events:#?}"
    );
    carol.send(&g, b"back in sync").await.unwrap();
    alice.sync().await.unwrap();
    assert_eq!(
        drain(&mut ea),
        vec![ClientEvent::Message {
            group: g.clone(),
            sender: identity("carol"),
            epoch: 4,
            data: b"back in sync".to_vec(),
        }]
    );

    // Carol's group state is lost entirely (the state file keeps only her
    // bookkeeping): at the next sync she rejoins again.
    carol.shutdown().await;
    drop(carol);
    let storage = SqliteStorage::open(&carol_cfg.state_path).await.unwrap();
    assert!(storage.delete_group(g.as_bytes()).await.unwrap());
    storage.close().await;
    let carol = ClientRuntime::open(carol_cfg.clone()).await.unwrap();
    env.track(&carol);
    let mut ec = carol.events();
    carol.sync().await.unwrap();
    let events = drain(&mut ec);
    assert!(
        matches!(
            events.as_slice(),
            [ClientEvent::Rejoined {
                group,
                epoch: 5,
                reason: ForkReason::StateLost(_),
            }] if group == &g
        ),
        "{events:#?}"
    );
    alice.sync().await.unwrap();
    bob.sync().await.unwrap();
    assert_agree(&[&alice, &bob, &carol], &g, 5).await;

    // Her state is lost once more, and while she is away Alice removes
    // her: the DS serves the group's public state to members only, so she
    // cannot bring herself back; she is told she was removed.
    carol.shutdown().await;
    drop(carol);
    let storage = SqliteStorage::open(&carol_cfg.state_path).await.unwrap();
    assert!(storage.delete_group(g.as_bytes()).await.unwrap());
    storage.close().await;
    alice
        .remove_members(&g, &[&identity("carol")])
        .await
        .unwrap();
    bob.sync().await.unwrap();
    let carol = ClientRuntime::open(carol_cfg).await.unwrap();
    env.track(&carol);
    let mut ec = carol.events();
    carol.sync().await.unwrap();
    let events = drain(&mut ec);
    assert!(
        events.contains(&ClientEvent::Removed {
            group: g.clone(),
            by: None,
        }),
        "{events:#?}"
    );
    assert!(carol.groups().await.is_empty());
    assert_agree(&[&alice, &bob], &g, 6).await;
    env.stop().await;
}

/// A blind group cannot be rejoined (its DS keeps no GroupInfo): the
/// member is told the group is broken, and nothing else changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blind_group_that_forks_is_reported_broken() {
    let mut env = Env::start().await;
    let alice = env.client("alice").await;
    let bob = env.client("bob").await;
    let g = alice.create_group(GroupMode::Blind).await.unwrap();
    alice.add_members(&g, &[&identity("bob")]).await.unwrap();
    bob.sync().await.unwrap();
    let bob_cfg = env.config("bob");
    let storage = SqliteStorage::open(&bob_cfg.state_path).await.unwrap();
    let backup = storage.read_group(g.as_bytes()).await.unwrap().unwrap();
    storage.close().await;
    alice.self_update(&g).await.unwrap();
    bob.sync().await.unwrap();
    bob.shutdown().await;
    drop(bob);
    let storage = SqliteStorage::open(&bob_cfg.state_path).await.unwrap();
    storage.delete_group(g.as_bytes()).await.unwrap();
    storage.write_group(&backup).await.unwrap();
    storage.close().await;
    let bob = ClientRuntime::open(bob_cfg).await.unwrap();
    env.track(&bob);
    let mut eb = bob.events();
    assert_eq!(alice.self_update(&g).await.unwrap(), 3);
    bob.sync().await.unwrap();
    assert_eq!(
        drain(&mut eb),
        vec![ClientEvent::GroupBroken {
            group: g.clone(),
            reason: ForkReason::MissedCommits {
                local_epoch: 1,
                message_epoch: 2,
            },
        }]
    );
    assert_eq!(bob.epoch(&g).await.unwrap(), 1);
    env.stop().await;
}

//! Property test of the group state machine (RFC 9420 §12): random
//! sequences of adds (by Welcome), removes (by value and by proposal),
//! updates (by commit path and by Update proposal) and application
//! messages over groups of up to 8 members. After every commit all members
//! agree on the epoch, the GroupContext (tree hash, confirmed transcript
//! hash), the epoch authenticator, an exported secret and the member list;
//! every application message decrypts at every other member to what was
//! sent, from the right sender, also when delivered after the next commit
//! (from the retained past epoch). Each member frames its handshakes as
//! PublicMessage or PrivateMessage independently, changing per step.

use std::sync::Arc;

use hsmls::wire::Credential;
use hsmls::wire::LeafIndex;
use hsmls::{
    BasicCredentialValidator, Client, CommitOptions, CommitOutput, CredentialValidator, Group,
    GroupConfig, HandshakeFraming, JoinOptions, KeyPackageBundle, KeyPackageConfig,
    ProcessedMessage, Signer,
};
use hsmls_custody::SoftwareCustody;
use proptest::prelude::*;

const NOW: u64 = 1_750_000_000;
const MAX_MEMBERS: usize = 8;

fn validator() -> Arc<dyn CredentialValidator> {
    Arc::new(BasicCredentialValidator::default())
}

/// One step of a scenario. Member selectors are reduced modulo the number
/// of active members, so every generated sequence is applicable.
#[derive(Debug, Clone)]
enum Op {
    /// `committer` adds `count` new members in one commit.
    Add { committer: u8, count: u8 },
    /// `committer` removes `victim` by value.
    Remove { committer: u8, victim: u8 },
    /// `proposer` proposes removing `victim`, `committer` commits it.
    ProposeRemove {
        proposer: u8,
        victim: u8,
        committer: u8,
    },
    /// `committer` commits a fresh UpdatePath (self-update).
    SelfUpdate { committer: u8 },
    /// `proposer` sends an Update proposal, `committer` commits it.
    ProposeUpdate { proposer: u8, committer: u8 },
    /// `sender` sends `data` as an application message.
    Message { sender: u8, data: Vec<u8> },
    /// `sender` sends `data`, then `committer` self-updates, then the
    /// message is delivered: read from the retained past epoch (§9.2).
    LateMessage {
        sender: u8,
        committer: u8,
        data: Vec<u8>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<u8>(), 1u8..=2).prop_map(|(committer, count)| Op::Add { committer, count }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(committer, victim)| Op::Remove { committer, victim }),
        1 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(proposer, victim, committer)| {
            Op::ProposeRemove { proposer, victim, committer }
        }),
        2 => any::<u8>().prop_map(|committer| Op::SelfUpdate { committer }),
        2 => (any::<u8>(), any::<u8>())
            .prop_map(|(proposer, committer)| Op::ProposeUpdate { proposer, committer }),
        3 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(sender, data)| Op::Message { sender, data }),
        1 => (any::<u8>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(sender, committer, data)| Op::LateMessage { sender, committer, data }),
    ]
}

/// The members of one group, by leaf index (None for blank leaves).
struct World {
    members: Vec<Option<Group>>,
    config: GroupConfig,
    next_id: usize,
}

impl World {
    fn new(config: GroupConfig) -> Result<Self, TestCaseError> {
        let g = Client::new(new_signer(0), validator())
            .with_group_config(config.clone())
            .create_group(b"proptest group".to_vec(), Vec::new(), NOW)
            .map_err(fail("create"))?;
        Ok(World {
            members: vec![Some(g)],
            config,
            next_id: 1,
        })
    }

    fn active(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| self.members[*i].is_some())
            .collect()
    }

    /// The active member a selector names.
    fn pick(&self, selector: u8) -> usize {
        let active = self.active();
        active[selector as usize % active.len()]
    }

    /// The active member a selector names, other than `not`.
    fn pick_other(&self, selector: u8, not: usize) -> Option<usize> {
        let others: Vec<usize> = self.active().into_iter().filter(|i| *i != not).collect();
        if others.is_empty() {
            None
        } else {
            Some(others[selector as usize % others.len()])
        }
    }

    fn group(&mut self, i: usize) -> &mut Group {
        self.members[i].as_mut().expect("active member")
    }

    /// Delivers a proposal from `from` to every other active member.
    fn broadcast_proposal(&mut self, from: usize, bytes: &[u8]) -> Result<(), TestCaseError> {
        for r in self.active() {
            if r == from {
                continue;
            }
            match self.group(r).process_incoming(bytes, NOW) {
                Ok(ProcessedMessage::Proposal { sender, .. }) => {
                    prop_assert_eq!(sender, hsmls::wire::Sender::Member(LeafIndex(from as u32)));
                }
                Ok(other) => return Err(TestCaseError::fail(format!("proposal gave {other:?}"))),
                Err(e) => return Err(TestCaseError::fail(format!("proposal at {r}: {e}"))),
            }
        }
        Ok(())
    }

    /// `committer` commits; every other member processes and merges; the
    /// joiners join from the Welcome; then agreement is checked.
    fn commit(
        &mut self,
        committer: usize,
        options: CommitOptions,
        joiners: Vec<(Signer, KeyPackageBundle)>,
    ) -> Result<(), TestCaseError> {
        let out: CommitOutput = self
            .group(committer)
            .commit(options, NOW)
            .map_err(fail("commit"))?;
        for i in self.active() {
            if i == committer {
                continue;
            }
            let g = self.group(i);
            let staged = match g.process_incoming(&out.commit, NOW) {
                Ok(ProcessedMessage::StagedCommit(s)) => s,
                Ok(other) => return Err(TestCaseError::fail(format!("commit gave {other:?}"))),
                Err(e) => return Err(TestCaseError::fail(format!("commit at {i}: {e}"))),
            };
            let removed = staged.self_removed;
            g.merge_staged_commit(staged).map_err(fail("merge"))?;
            if removed {
                prop_assert!(!g.is_active());
                self.members[i] = None;
            } else {
                prop_assert!(g.is_active());
            }
        }
        self.group(committer)
            .merge_pending_commit()
            .map_err(fail("merge own"))?;
        prop_assert_eq!(out.adds.len(), joiners.len());
        for (s, bundle) in joiners {
            let welcome = out
                .welcome
                .as_ref()
                .ok_or_else(|| TestCaseError::fail("no Welcome"))?;
            let g = Client::new(s, validator())
                .with_group_config(self.config.clone())
                .join_from_welcome(&bundle, welcome, {
                    let mut join = JoinOptions::default();
                    join.ratchet_tree = out.ratchet_tree.clone();
                    join
                })
                .map_err(fail("join"))?;
            let idx = g.own_leaf_index().0 as usize;
            if self.members.len() <= idx {
                self.members.resize_with(idx + 1, || None);
            }
            prop_assert!(self.members[idx].is_none(), "joiner took an occupied leaf");
            self.members[idx] = Some(g);
        }
        self.check_agreement()
    }

    fn check_agreement(&self) -> Result<(), TestCaseError> {
        let groups: Vec<(usize, &Group)> = self
            .members
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.as_ref().map(|g| (i, g)))
            .collect();
        let (_, first) = groups[0];
        let exported = first
            .export_secret(b"proptest", b"ctx", 32)
            .map_err(fail("export"))?;
        let members = first.members();
        prop_assert_eq!(members.len(), groups.len());
        for (i, g) in &groups {
            prop_assert_eq!(g.own_leaf_index(), LeafIndex(*i as u32));
            prop_assert_eq!(g.epoch(), first.epoch());
            prop_assert_eq!(g.tree_hash(), first.tree_hash());
            prop_assert_eq!(g.epoch_authenticator(), first.epoch_authenticator());
            prop_assert_eq!(g.group_context(), first.group_context());
            prop_assert_eq!(
                g.export_secret(b"proptest", b"ctx", 32)
                    .map_err(fail("export"))?,
                exported.clone()
            );
            prop_assert_eq!(g.members(), members.clone());
            prop_assert!(!g.has_pending_commit());
        }
        Ok(())
    }

    fn new_joiner(&mut self) -> Result<(Signer, KeyPackageBundle), TestCaseError> {
        let s = new_signer(self.next_id);
        self.next_id += 1;
        let kp = Client::new(s.clone(), validator())
            .generate_key_package(&KeyPackageConfig::new(NOW - 10, 3600))
            .map_err(fail("KeyPackage"))?;
        Ok((s, kp))
    }

    /// Gives each member its own handshake framing (bit `leaf % 8` of
    /// `mask`: 1 = PublicMessage), so one epoch mixes both wire formats.
    fn set_framings(&mut self, mask: u8) {
        for i in self.active() {
            let framing = if mask >> (i % 8) & 1 == 1 {
                HandshakeFraming::Public
            } else {
                HandshakeFraming::Private
            };
            let mut config = self.config.clone();
            config.handshake_framing = framing;
            self.group(i).set_config(config);
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Add { committer, count } => {
                let room = MAX_MEMBERS.saturating_sub(self.active().len());
                let count = (*count as usize).min(room);
                if count == 0 {
                    return Ok(());
                }
                let committer = self.pick(*committer);
                let joiners = (0..count)
                    .map(|_| self.new_joiner())
                    .collect::<Result<Vec<_>, _>>()?;
                let mut options = CommitOptions::new();
                for (_, kp) in &joiners {
                    options.add_key_packages.push(kp.key_package.clone());
                }
                self.commit(committer, options, joiners)
            }
            Op::Remove { committer, victim } => {
                let committer = self.pick(*committer);
                let Some(victim) = self.pick_other(*victim, committer) else {
                    return Ok(());
                };
                let mut options = CommitOptions::new();
                options.remove_leaves = vec![LeafIndex(victim as u32)];
                self.commit(committer, options, Vec::new())?;
                prop_assert!(
                    self.members[victim].is_none(),
                    "removed member still active"
                );
                Ok(())
            }
            Op::ProposeRemove {
                proposer,
                victim,
                committer,
            } => {
                let proposer = self.pick(*proposer);
                let committer = self.pick(*committer);
                let Some(victim) = self.pick_other(*victim, committer) else {
                    return Ok(());
                };
                let bytes = self
                    .group(proposer)
                    .propose_remove(LeafIndex(victim as u32))
                    .map_err(fail("propose_remove"))?;
                self.broadcast_proposal(proposer, &bytes.message)?;
                self.commit(committer, CommitOptions::new(), Vec::new())?;
                prop_assert!(
                    self.members[victim].is_none(),
                    "removed member still active"
                );
                Ok(())
            }
            Op::SelfUpdate { committer } => {
                let committer = self.pick(*committer);
                let before = self.group(committer).members()[..].to_vec();
                let own = self.group(committer).own_leaf_index();
                let mut options = CommitOptions::new();
                options.force_path = true;
                self.commit(committer, options, Vec::new())?;
                let after = self.group(committer).member(own);
                let old = before.iter().find(|m| m.index == own);
                prop_assert!(
                    old.map(|m| &m.encryption_key) != after.as_ref().map(|m| &m.encryption_key),
                    "the committer's leaf key did not change"
                );
                Ok(())
            }
            Op::ProposeUpdate {
                proposer,
                committer,
            } => {
                let proposer = self.pick(*proposer);
                let committer = self.pick(*committer);
                let old = self
                    .group(proposer)
                    .member(LeafIndex(proposer as u32))
                    .map(|m| m.encryption_key);
                let bytes = self
                    .group(proposer)
                    .propose_update()
                    .map_err(fail("propose_update"))?;
                self.broadcast_proposal(proposer, &bytes.message)?;
                self.commit(committer, CommitOptions::new(), Vec::new())?;
                let new = self
                    .group(committer)
                    .member(LeafIndex(proposer as u32))
                    .map(|m| m.encryption_key);
                prop_assert!(old != new, "the proposer's leaf key did not change");
                Ok(())
            }
            Op::Message { sender, data } => {
                let sender = self.pick(*sender);
                let bytes = self
                    .group(sender)
                    .encrypt_application(data)
                    .map_err(fail("encrypt"))?;
                let epoch = self.group(sender).epoch();
                self.deliver_message(sender, epoch, &bytes, data)
            }
            Op::LateMessage {
                sender,
                committer,
                data,
            } => {
                let sender = self.pick(*sender);
                let committer = self.pick(*committer);
                let bytes = self
                    .group(sender)
                    .encrypt_application(data)
                    .map_err(fail("encrypt"))?;
                let epoch = self.group(sender).epoch();
                let mut options = CommitOptions::new();
                options.force_path = true;
                self.commit(committer, options, Vec::new())?;
                self.deliver_message(sender, epoch, &bytes, data)
            }
        }
    }

    /// Every active member but `sender` reads `bytes`: `data` from `sender`
    /// in `epoch`.
    fn deliver_message(
        &mut self,
        sender: usize,
        epoch: u64,
        bytes: &[u8],
        data: &[u8],
    ) -> Result<(), TestCaseError> {
        for r in self.active() {
            if r == sender {
                continue;
            }
            match self.group(r).process_incoming(bytes, NOW) {
                Ok(ProcessedMessage::ApplicationMessage {
                    sender: from,
                    epoch: e,
                    data: d,
                    ..
                }) => {
                    prop_assert_eq!(from, LeafIndex(sender as u32));
                    prop_assert_eq!(e, epoch);
                    prop_assert_eq!(&d[..], data);
                }
                Ok(other) => {
                    return Err(TestCaseError::fail(format!("message gave {other:?}")));
                }
                Err(e) => return Err(TestCaseError::fail(format!("message at {r}: {e}"))),
            }
        }
        Ok(())
    }
}

fn new_signer(id: usize) -> Signer {
    Signer::generate(
        Arc::new(SoftwareCustody::new()),
        Credential::Basic(format!("member-{id}").into_bytes()),
    )
    .expect("software custody generates keys")
}

fn fail<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> TestCaseError {
    move |e| TestCaseError::fail(format!("{what}: {e}"))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn members_agree_after_every_commit(
        public in any::<bool>(),
        ops in proptest::collection::vec((op(), any::<u8>()), 1..=12),
    ) {
        let mut config = GroupConfig::default();
        config.handshake_framing = if public {
            HandshakeFraming::Public
        } else {
            HandshakeFraming::Private
        };
        let mut world = World::new(config)?;
        for (op, framings) in &ops {
            world.set_framings(*framings);
            world.apply(op)?;
            prop_assert!(world.active().len() <= MAX_MEMBERS);
        }
        world.check_agreement()?;
    }
}

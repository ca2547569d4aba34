//! The executor: the one part of the engine that acts. Each decision goes
//! through tidald's resize path (source `policy`, the decision's reason), so
//! it is a revision an operator can see and roll back; in dry-run it is only
//! recorded. Self-healing: a change whose write failed holds its rule for
//! that container; a change whose signal did not improve (or, for a give-back,
//! made an online container suffer again) within `judge_after` trigger
//! windows is rolled back through the revision log and its rule rests.

use std::time::Duration;

use super::decide::{self, Action, Decision, Resource, Rule, Signal, State, Trigger};
use super::rules::{Mode, Policy};
use super::SOURCE;
use super::{Key, Signals, View};
use crate::agent::error::Error;
use crate::agent::inventory::Name;
use crate::agent::resizer::Resizer;
use crate::resize::{Change, Notes};

/// How the executor changes a container: tidald's `Resizer`, or a fake in
/// tests. Both answer the revision the change made, and write only while
/// the container's last revision is still `basis`, the one the change was
/// decided at (ABORTED otherwise).
#[async_trait::async_trait]
pub trait Apply: Send + Sync {
    async fn resize(
        &self,
        key: &Key,
        change: &Change,
        reclaim: bool,
        reason: String,
        basis: u64,
    ) -> Result<u64, Error>;
    /// Restores the container's limits as they were right after revision
    /// `to`, as a new revision.
    async fn rollback(&self, key: &Key, to: u64, reason: String, basis: u64) -> Result<u64, Error>;
}

fn name(key: &Key) -> Name {
    Name {
        namespace: Some(key.namespace.clone()),
        id: key.id.clone(),
    }
}

#[async_trait::async_trait]
impl Apply for Resizer {
    async fn resize(
        &self,
        key: &Key,
        change: &Change,
        reclaim: bool,
        reason: String,
        basis: u64,
    ) -> Result<u64, Error> {
        let notes = Notes {
            source: SOURCE.into(),
            reason,
            reclaim,
            expect_revision: Some(basis),
            ..Default::default()
        };
        Ok(Resizer::resize(self, &name(key), change, notes)
            .await?
            .revision)
    }

    async fn rollback(&self, key: &Key, to: u64, reason: String, basis: u64) -> Result<u64, Error> {
        Ok(
            Resizer::rollback(self, &name(key), to, SOURCE, reason, Some(basis))
                .await?
                .revision,
        )
    }
}

#[async_trait::async_trait]
impl<A: Apply + ?Sized> Apply for std::sync::Arc<A> {
    async fn resize(
        &self,
        key: &Key,
        change: &Change,
        reclaim: bool,
        reason: String,
        basis: u64,
    ) -> Result<u64, Error> {
        (**self).resize(key, change, reclaim, reason, basis).await
    }
    async fn rollback(&self, key: &Key, to: u64, reason: String, basis: u64) -> Result<u64, Error> {
        (**self).rollback(key, to, reason, basis).await
    }
}

/// What became of a decision or a judged change.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied, as this revision.
    Applied { revision: u64 },
    /// Recorded only (dry-run).
    DryRun,
    /// The write failed (the resize path undid what it had written); the
    /// rule rests for this container.
    Failed { error: String },
    /// The change at `revision` did not help: the container was restored as
    /// it was after revision `to`, as revision `revision_now`, and the rule
    /// rests.
    RolledBack {
        revision: u64,
        to: u64,
        revision_now: u64,
        why: String,
    },
    /// The change did not help, but could not be rolled back.
    RollbackFailed { revision: u64, why: String },
    /// The change is judged and stays.
    Kept { revision: u64 },
}

impl Outcome {
    /// A one-word name, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::DryRun => "dry-run",
            Outcome::Failed { .. } => "failed",
            Outcome::RolledBack { .. } => "rolled-back",
            Outcome::RollbackFailed { .. } => "rollback-failed",
            Outcome::Kept { .. } => "kept",
        }
    }
}

/// One entry of the decision log.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The engine's clock.
    pub at: Duration,
    pub key: Key,
    pub rule: Rule,
    pub reason: String,
    pub outcome: Outcome,
}

/// A change applied and not judged yet.
#[derive(Debug, Clone)]
struct Pending {
    key: Key,
    rule: Rule,
    trigger: Trigger,
    revision: u64,
    /// When it was made.
    at: Duration,
    due: Duration,
}

impl Pending {
    /// For a give-back: whether what it waited for (calm: every online
    /// container well under its objective) has broken since.
    fn broken(&self, memory: &State) -> bool {
        match self.trigger.signal {
            Signal::Calm(Resource::Cpu) => memory.last_strained > self.at,
            Signal::Calm(Resource::Memory) => memory.last_memory_pressure > self.at,
            _ => false,
        }
    }
}

pub struct Executor<A> {
    apply: A,
    pending: Vec<Pending>,
}

impl<A: Apply> Executor<A> {
    pub fn new(apply: A) -> Self {
        Executor {
            apply,
            pending: Vec::new(),
        }
    }

    /// Changes applied and waiting for their verdict.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Applies (or in dry-run, records) `decisions`, remembering in `memory`
    /// when each container changed and which overlays are the engine's.
    pub async fn execute(
        &mut self,
        p: &Policy,
        mode: Mode,
        now: Duration,
        decisions: Vec<Decision>,
        memory: &mut State,
    ) -> Vec<Record> {
        let mut out = Vec::with_capacity(decisions.len());
        for d in decisions {
            memory.changed.insert(d.key.clone(), now);
            let reason = d.reason();
            let outcome = if mode == Mode::DryRun {
                Outcome::DryRun
            } else {
                let result = match &d.action {
                    Action::Set { change, reclaim } => {
                        self.apply
                            .resize(&d.key, change, *reclaim, reason.clone(), d.basis)
                            .await
                    }
                    Action::Lift { to } => {
                        self.apply
                            .rollback(&d.key, *to, reason.clone(), d.basis)
                            .await
                    }
                };
                match result {
                    Ok(revision) => {
                        self.applied(p, now, &d, revision, memory);
                        Outcome::Applied { revision }
                    }
                    Err(e) => {
                        // Lost to another writer's change since the decision
                        // (ABORTED): nothing was written and the rule is not
                        // at fault; the next window decides from the new
                        // values.
                        if e.code() != tonic::Code::Aborted {
                            memory.held.insert(
                                (d.rule, Some(d.key.clone())),
                                now + p.rules.self_heal.hold.0,
                            );
                        }
                        Outcome::Failed {
                            error: e.to_string(),
                        }
                    }
                }
            };
            out.push(Record {
                at: now,
                key: d.key,
                rule: d.rule,
                reason,
                outcome,
            });
        }
        out
    }

    /// Remembers an applied decision: the overlay it made (or lifted) and
    /// the change to judge later.
    fn applied(
        &mut self,
        p: &Policy,
        now: Duration,
        d: &Decision,
        revision: u64,
        memory: &mut State,
    ) {
        if let Action::Lift { .. } = d.action {
            memory.owned.remove(&d.key);
            self.pending.retain(|x| x.key != d.key);
            return;
        }
        let owned = memory.owned.entry(d.key.clone()).or_default();
        // Revision 0 would be a change the history did not record: nothing
        // to roll back to, so not judged (the resize path answers 0 only for
        // a dry run, which the executor never asks for).
        let recorded = revision > 0;
        if recorded {
            owned.revisions.push(revision);
        }
        let giving_back = matches!(d.rule, Rule::GiveBackCpu | Rule::GiveBackMemory);
        let flag = match d.rule.resource() {
            Resource::Cpu => &mut owned.cpu,
            Resource::Memory => &mut owned.memory,
        };
        // A give-back that reached the declared limit ends the overlay.
        *flag = !(giving_back && d.ends_overlay);
        if !owned.cpu && !owned.memory {
            memory.owned.remove(&d.key);
        }
        if !recorded {
            return;
        }
        let windows = p.windows.trigger.0 * p.rules.self_heal.judge_after;
        self.pending.push(Pending {
            key: d.key.clone(),
            rule: d.rule,
            trigger: d.trigger.clone(),
            revision,
            at: now,
            due: now + windows,
        });
    }

    /// Judges the changes that are due: one whose signal did not improve is
    /// rolled back to the revision before it, when every revision since is
    /// the engine's, and its rule rests for `hold`. A give-back is judged at
    /// once when what it waited for breaks (an online container suffers, or
    /// the node's memory is under pressure, again): it is undone before the
    /// rule that would throttle acts, so the two do not take turns.
    pub async fn judge<S: Signals + ?Sized>(
        &mut self,
        p: &Policy,
        view: &View,
        signals: &S,
        memory: &mut State,
    ) -> Vec<Record> {
        let now = view.now;
        let mut out = Vec::new();
        let (due, wait): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|x| x.due <= now || x.broken(memory));
        self.pending = wait;
        // The first revision undone per container: later changes of it went
        // with it.
        let mut undone: std::collections::BTreeMap<Key, u64> = Default::default();
        // Oldest first, so a rollback of a container's first change covers
        // its later ones.
        for x in due {
            let Some(c) = view.containers.get(&x.key) else {
                continue; // gone: nothing to judge
            };
            if undone.get(&x.key).is_some_and(|&r| x.revision >= r) {
                continue;
            }
            let Some(value) = decide::measure(p, view, signals, &x.trigger.signal) else {
                continue; // no verdict without data
            };
            let harmful = match x.trigger.signal {
                Signal::Calm(_) => x.broken(memory),
                _ => value >= x.trigger.value,
            };
            let what = match x.trigger.signal {
                // What broke is the calm it waited for, not a value.
                Signal::Calm(resource) => {
                    let (broke, since) = match resource {
                        Resource::Cpu => ("an online container was not calm", memory.last_strained),
                        Resource::Memory => (
                            "the node's memory was under pressure",
                            memory.last_memory_pressure,
                        ),
                    };
                    if harmful {
                        format!(
                            "{} at revision {}: {broke} {:.2}s after it",
                            x.rule.name(),
                            x.revision,
                            since.saturating_sub(x.at).as_secs_f64()
                        )
                    } else {
                        format!(
                            "{} at revision {}: {} stayed calm",
                            x.rule.name(),
                            x.revision,
                            signal_name(&x.trigger.signal)
                        )
                    }
                }
                _ => format!(
                    "{} at revision {}: {} was {:.3}, now {:.3}",
                    x.rule.name(),
                    x.revision,
                    signal_name(&x.trigger.signal),
                    x.trigger.value,
                    value
                ),
            };
            if !harmful {
                out.push(Record {
                    at: now,
                    key: x.key,
                    rule: x.rule,
                    reason: format!("helped: {what}"),
                    outcome: Outcome::Kept {
                        revision: x.revision,
                    },
                });
                continue;
            }
            memory
                .held
                .insert((x.rule, None), now + p.rules.self_heal.hold.0);
            let owned = memory.owned.get(&x.key).cloned().unwrap_or_default();
            let all_mine = (x.revision..=c.last_revision).all(|n| owned.revisions.contains(&n));
            let why = if matches!(x.trigger.signal, Signal::Calm(_)) {
                format!("self-heal: made things worse: {what}")
            } else {
                format!("self-heal: did not help: {what}")
            };
            let outcome = if !all_mine {
                Outcome::RollbackFailed {
                    revision: x.revision,
                    why: format!(
                        "{why}; not rolled back: revision {} is not the engine's",
                        c.last_revision
                    ),
                }
            } else {
                let to = x.revision.saturating_sub(1);
                match self
                    .apply
                    .rollback(&x.key, to, why.clone(), c.last_revision)
                    .await
                {
                    Ok(revision_now) => {
                        undone.insert(x.key.clone(), x.revision);
                        self.rolled_back(&x, revision_now, memory);
                        memory.changed.insert(x.key.clone(), now);
                        Outcome::RolledBack {
                            revision: x.revision,
                            to,
                            revision_now,
                            why: why.clone(),
                        }
                    }
                    Err(e) => Outcome::RollbackFailed {
                        revision: x.revision,
                        why: format!("{why}; rollback failed: {e}"),
                    },
                }
            };
            out.push(Record {
                at: now,
                key: x.key,
                rule: x.rule,
                reason: why,
                outcome,
            });
        }
        out
    }

    /// After the change at `x.revision` was undone: the engine's later
    /// changes of the container are undone with it.
    fn rolled_back(&mut self, x: &Pending, revision_now: u64, memory: &mut State) {
        self.pending
            .retain(|p| !(p.key == x.key && p.revision >= x.revision));
        if let Some(owned) = memory.owned.get_mut(&x.key) {
            owned.revisions.retain(|&n| n < x.revision);
            if owned.revisions.is_empty() && !owned.adopted {
                // Back to before the engine's first change: no overlay left.
                memory.owned.remove(&x.key);
            } else {
                owned.revisions.push(revision_now);
            }
        }
    }
}

fn signal_name(s: &Signal) -> String {
    match s {
        Signal::Container { key, metric } => format!("{}/{} {metric:?}", key.namespace, key.id),
        Signal::NodeMemoryPressure => "node memory pressure".into(),
        Signal::Calm(Resource::Cpu) => "online containers".into(),
        Signal::Calm(Resource::Memory) => "node memory".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::policy::engine::Engine;
    use crate::agent::policy::testing::*;
    use crate::agent::policy::Qos;

    fn setup(mode: Option<Mode>, policy: Policy) -> (Engine<FakeWorld>, FakeSource, FakeWorld) {
        let world = FakeWorld::new(vec![
            online("web", Some(1000)),
            container("batch", Qos::Offline, Some(2000)),
        ]);
        let engine = Engine::new(policy, "/etc/tidal/policy.yaml".into(), mode, world.clone());
        let source = FakeSource {
            world: world.clone(),
            series: Series::default(),
        };
        (engine, source, world)
    }

    /// The online probe is slow from 10 s on, whatever is done.
    fn stuck(src: &mut FakeSource, now: Duration) {
        probe(src, "web", now, if now >= ms(10_000) { 0.4 } else { 0.05 });
    }

    #[tokio::test]
    async fn dry_run_records_decisions_and_applies_nothing() {
        let (mut engine, mut src, world) = setup(Some(Mode::DryRun), Policy::default());
        let records = drive(&mut engine, &mut src, 0, 30, stuck).await;
        assert!(world.world().calls.is_empty());
        assert_eq!(cpu_of(&world, "batch"), Some(2000));
        // Decided once per trigger window while the breach lasts.
        let at: Vec<u64> = records.iter().map(|r| r.at.as_secs()).collect();
        assert_eq!(at, vec![14, 19, 24, 29]);
        assert!(records.iter().all(|r| r.outcome == Outcome::DryRun));
        assert!(records[0]
            .reason
            .starts_with("throttle-offline: cpu 2000m -> 1500m"));
        assert!(engine.memory().owned.is_empty());
    }

    #[tokio::test]
    async fn a_change_that_does_not_help_is_rolled_back_and_its_rule_rests() {
        let (mut engine, mut src, world) = setup(None, Policy::default());
        let records = drive(&mut engine, &mut src, 0, 29, stuck).await;
        let calls = world.world().calls.clone();
        // 14 s: 2000 -> 1500 (revision 1); 19 s: -> 1125; 24 s: -> 844;
        // judged 3 windows after the first: latency no better, so back to
        // revision 0 (undoing all three) as revision 4.
        assert_eq!(calls.len(), 4, "{calls:?}");
        assert!(matches!(&calls[3], Call::Rollback { to: 0, reason, .. }
            if reason.starts_with("self-heal: did not help: throttle-offline at revision 1")));
        assert_eq!(cpu_of(&world, "batch"), Some(2000));
        let last = records.last().unwrap();
        assert_eq!(
            last.outcome,
            Outcome::RolledBack {
                revision: 1,
                to: 0,
                revision_now: 4,
                why: last.reason.clone()
            }
        );
        assert!(world.world().view.containers[&key("batch")]
            .overlays
            .is_empty());
        assert!(engine.memory().owned.is_empty());
        assert_eq!(
            engine.executor_pending(),
            0,
            "the later change went with it"
        );
        // The rule rests for its hold (60 s): no more throttling meanwhile.
        drive(&mut engine, &mut src, 30, 88, stuck).await;
        assert_eq!(world.world().calls.len(), 4);
        drive(&mut engine, &mut src, 89, 89, stuck).await;
        assert_eq!(world.world().calls.len(), 5);
    }

    #[tokio::test]
    async fn dry_run_rolls_nothing_back_either() {
        let (mut engine, mut src, world) = setup(None, Policy::default());
        drive(&mut engine, &mut src, 0, 14, stuck).await;
        engine.handle().set_mode(Mode::DryRun);
        drive(&mut engine, &mut src, 15, 40, stuck).await;
        assert_eq!(world.world().calls.len(), 1, "{:?}", world.world().calls);
        assert_eq!(cpu_of(&world, "batch"), Some(1500));
        // Enforcing again, the change is judged and undone.
        engine.handle().set_mode(Mode::Enforce);
        drive(&mut engine, &mut src, 41, 41, stuck).await;
        assert!(matches!(
            world.world().calls[1],
            Call::Rollback { to: 0, .. }
        ));
        assert_eq!(cpu_of(&world, "batch"), Some(2000));
    }

    #[tokio::test]
    async fn a_change_that_helps_is_kept() {
        let (mut engine, mut src, world) = setup(None, Policy::default());
        let w = world.clone();
        let records = drive(&mut engine, &mut src, 0, 30, move |src, now| {
            let slow = now >= ms(10_000) && cpu_of(&w, "batch").unwrap() > 1200;
            probe(src, "web", now, if slow { 0.4 } else { 0.05 });
        })
        .await;
        let outcomes: Vec<(u64, &str)> = records
            .iter()
            .map(|r| (r.at.as_secs(), r.outcome.name()))
            .collect();
        assert_eq!(
            outcomes,
            vec![(14, "applied"), (19, "applied"), (29, "kept")]
        );
        assert_eq!(cpu_of(&world, "batch"), Some(1125));
    }

    #[tokio::test]
    async fn a_failed_write_holds_the_rule_for_that_container() {
        let (mut engine, mut src, world) = setup(None, Policy::default());
        world.world().fail = true;
        let records = drive(&mut engine, &mut src, 0, 14, stuck).await;
        assert!(
            matches!(&records[..], [Record { outcome: Outcome::Failed { error }, .. }] if error.contains("not running"))
        );
        world.world().fail = false;
        drive(&mut engine, &mut src, 15, 73, stuck).await;
        assert_eq!(world.world().calls.len(), 1, "held for 60 s");
        drive(&mut engine, &mut src, 74, 74, stuck).await;
        assert_eq!(world.world().calls.len(), 2);
    }

    #[tokio::test]
    async fn a_decision_overtaken_by_another_writer_is_not_written_and_decided_again() {
        let (mut engine, mut src, world) = setup(None, Policy::default());
        // An operator sets 1800m between the engine's decision (from
        // 2000m) and its write.
        world.world().race = Some((
            key("batch"),
            limits(Some(1800), Some(1 << 30)),
            "operator".into(),
        ));
        let records = drive(&mut engine, &mut src, 0, 14, stuck).await;
        assert!(
            matches!(&records[..], [Record { outcome: Outcome::Failed { error }, .. }]
                if error.contains("changed since revision 0")),
            "{records:?}"
        );
        assert_eq!(
            cpu_of(&world, "batch"),
            Some(1800),
            "the operator's value stays"
        );
        // Not the rule's fault: it is not held, and the next trigger window
        // decides again from the operator's value.
        let records = drive(&mut engine, &mut src, 15, 19, stuck).await;
        assert!(
            matches!(&records[..], [Record { outcome: Outcome::Applied { revision: 2 }, reason, .. }]
                if reason.starts_with("throttle-offline: cpu 1800m -> 1350m")),
            "{records:?}"
        );
        assert_eq!(cpu_of(&world, "batch"), Some(1350));
    }

    #[tokio::test]
    async fn a_change_someone_else_revised_since_is_not_rolled_back() {
        let (mut engine, mut src, world) = setup(None, Policy::default());
        drive(&mut engine, &mut src, 0, 16, stuck).await;
        world
            .world()
            .revise(&key("batch"), limits(Some(1700), Some(1 << 30)), "operator");
        let records = drive(&mut engine, &mut src, 17, 29, stuck).await;
        assert!(world
            .world()
            .calls
            .iter()
            .all(|c| matches!(c, Call::Resize { .. })));
        assert!(records.iter().any(|r| matches!(&r.outcome,
            Outcome::RollbackFailed { revision: 1, why } if why.contains("not the engine's"))));
        // 1700 -> 1275 -> 957 after the operator's change; kept.
        assert_eq!(cpu_of(&world, "batch"), Some(957));
    }

    #[tokio::test]
    async fn a_give_back_after_which_online_suffers_again_is_rolled_back() {
        let mut policy = Policy::default();
        policy.rules.throttle_offline.enabled = false;
        let world = FakeWorld::new(vec![
            online("web", Some(1000)),
            container("batch", Qos::Offline, Some(2000)),
        ]);
        // Before the restart the engine had lowered batch to 1000.
        let rev = world
            .world()
            .revise(&key("batch"), limits(Some(1000), Some(1 << 30)), "policy");
        let mut engine = Engine::new(policy, "p.yaml".into(), None, world.clone());
        let mut src = FakeSource {
            world: world.clone(),
            series: Series::default(),
        };
        let w = world.clone();
        let records = drive(&mut engine, &mut src, 0, 46, move |src, now| {
            let slow = cpu_of(&w, "batch").unwrap() > 1200;
            probe(src, "web", now, if slow { 0.4 } else { 0.05 });
        })
        .await;
        let calls = world.world().calls.clone();
        assert!(
            matches!(&calls[0], Call::Resize { reason, .. } if reason.starts_with("give-back-cpu: cpu 1000m -> 1250m")),
            "{calls:?}"
        );
        assert!(
            matches!(&calls[1], Call::Rollback { to, reason, .. }
            if *to == rev && reason.starts_with("self-heal: made things worse: give-back-cpu at revision")
                && reason.contains("an online container was not calm")),
            "{calls:?}"
        );
        assert_eq!(cpu_of(&world, "batch"), Some(1000));
        assert!(records.iter().any(|r| r.outcome.name() == "rolled-back"));
        // Still the engine's overlay, to give back when it is safe.
        assert!(engine.memory().owned[&key("batch")].cpu);
    }
}

//! `give-back-cpu` and `give-back-memory`: the engine's overlays a step
//! back toward what was declared once online containers (the node's
//! memory) have been calm long enough, until they are gone. An offline
//! container's CPU weight follows its CPU limit back, and its cpuset is
//! restored with the last step; on cgroup v2 `memory.high` steps back up to
//! the memory limit and is then lifted.

use super::{scale_down, scale_up, Action, Deciding, Owned, Resource, Rule, Signal, Trigger};
use crate::agent::declared::same_weight;
use crate::agent::node::Limits;
use crate::agent::policy::{Container, Qos};
use crate::cgroups::Limit;
use crate::resize::Change;

/// What one give-back step sets: an action, the limit after it (None:
/// unlimited), and whether that is what was declared.
struct Step {
    action: Action,
    to: Option<u64>,
    ends: bool,
}

impl Deciding<'_> {
    /// The engine's overlays on `resource` a step back toward what was
    /// declared; lifted at once (a rollback) where the declared limit is
    /// unlimited.
    pub(super) fn give_back(&mut self, resource: Resource) {
        let r = &self.p.rules.give_back;
        if !r.enabled {
            return;
        }
        let (rule, since) = match resource {
            Resource::Cpu => (Rule::GiveBackCpu, self.memory.last_strained),
            Resource::Memory => (Rule::GiveBackMemory, self.memory.last_memory_pressure),
        };
        let trigger = Trigger {
            signal: Signal::Calm(resource),
            value: 0.0,
            threshold: self.now.saturating_sub(since).as_secs_f64(),
        };
        let (memory, view) = (self.memory, self.view);
        for (key, owned) in &memory.owned {
            let mine = match resource {
                Resource::Cpu => owned.cpu,
                Resource::Memory => owned.memory,
            };
            let Some(c) = view.containers.get(key) else {
                continue;
            };
            let Some(declared) = &c.declared else {
                continue;
            };
            if !mine || !self.may(rule, c) {
                continue;
            }
            // A value another writer set since is theirs (agent::owner).
            let holds = |value: &str| {
                crate::agent::owner::holds(&c.writers, crate::agent::policy::SOURCE, value)
            };
            match resource {
                Resource::Cpu if holds(crate::agent::owner::CPU) => {
                    self.give_back_cpu(c, declared, owned, trigger.clone())
                }
                Resource::Cpu => {}
                Resource::Memory => {
                    let high = (
                        c.live.memory_high.and_then(Limit::value),
                        declared_high(declared),
                    );
                    let step = match high {
                        (Some(h), d) if Some(h) != d => holds(crate::agent::owner::MEMORY_HIGH)
                            .then(|| self.memory_high_step(c, h, d))
                            .flatten(),
                        _ if !holds(crate::agent::owner::MEMORY) => None,
                        _ => self.limit_step(
                            owned,
                            c,
                            Resource::Memory,
                            c.live.memory_bytes,
                            declared.memory_bytes,
                        ),
                    };
                    if let Some(s) = step {
                        let from = match s.action {
                            Action::Set { ref change, .. } if change.memory_high.is_some() => {
                                high.0
                            }
                            _ => c.live.memory_bytes,
                        };
                        self.push(c, rule, s.action, from, s.to, trigger.clone());
                        self.out.last_mut().expect("pushed").ends_overlay = s.ends;
                    }
                }
            }
        }
    }

    /// A CPU give-back step for `c`: an offline container's weight and
    /// cpuset go back with its limit (the cpuset with the last step); one
    /// whose limit is back but whose weight or cpuset is not gets them back.
    fn give_back_cpu(&mut self, c: &Container, declared: &Limits, owned: &Owned, trigger: Trigger) {
        let (live, want) = (c.live.cpu_millis(), declared.cpu_millis());
        let step = self.limit_step(owned, c, Resource::Cpu, live, want);
        if c.qos != Qos::Offline {
            if let Some(s) = step {
                self.push(c, Rule::GiveBackCpu, s.action, live, s.to, trigger);
                self.out.last_mut().expect("pushed").ends_overlay = s.ends;
            }
            return;
        }
        let cpuset_back = (!declared.cpuset.is_empty() && c.live.cpuset != declared.cpuset)
            .then(|| declared.cpuset.clone());
        let shares_back = declared
            .cpu_shares
            .filter(|_| self.p.rules.throttle_offline.weight)
            .filter(|d| c.live.cpu_shares.is_some_and(|l| !same_weight(l, *d)));
        let to = match step {
            Some(Step {
                action: Action::Set { ref change, .. },
                ..
            }) => change.cpu_millis,
            // A lift (rollback) restores every value as it was.
            Some(s) => {
                self.push(c, Rule::GiveBackCpu, s.action, live, s.to, trigger);
                self.out.last_mut().expect("pushed").ends_overlay = s.ends;
                return;
            }
            // The limit is back already: the weight or cpuset left behind.
            None if cpuset_back.is_some() || shares_back.is_some() => live,
            None => return,
        };
        let Some(to) = to else {
            return;
        };
        let ends = Some(to) == want || (want.is_none() && to >= self.capacity());
        let cpuset = cpuset_back.filter(|_| ends);
        self.push_offline_cpu(c, Rule::GiveBackCpu, to, cpuset, trigger);
        let d = self.out.last_mut().expect("pushed");
        d.from = live;
        d.ends_overlay = ends;
    }

    /// A step of limit `live` back toward `declared` (None: unlimited).
    fn limit_step(
        &self,
        owned: &Owned,
        c: &Container,
        resource: Resource,
        live: Option<u64>,
        declared: Option<u64>,
    ) -> Option<Step> {
        let r = &self.p.rules.give_back;
        let set = |v: u64| {
            let action = match resource {
                Resource::Cpu => Self::cpu(v),
                Resource::Memory => Action::Set {
                    change: Change {
                        memory_bytes: Some(v),
                        ..Default::default()
                    },
                    reclaim: true,
                },
            };
            Step {
                action,
                to: Some(v),
                ends: Some(v) == declared,
            }
        };
        match (live, declared) {
            (Some(l), Some(d)) if l < d => Some(set(scale_up(l, r.step).min(d))),
            (Some(l), Some(d)) if l > d => Some(set(scale_down(l, r.step).max(d))),
            (Some(l), None) => {
                // Declared unlimited: step up while a step stays under the
                // node's CPUs, then lift the overlay by rolling back to
                // before the engine's first change, when every revision
                // since is the engine's.
                let first = owned.revisions.first().copied();
                let all_mine = !owned.adopted
                    && first.is_some_and(|f| {
                        (f..=c.last_revision).all(|n| owned.revisions.contains(&n))
                    });
                let up = scale_up(l, r.step);
                if resource == Resource::Cpu && up < self.capacity() {
                    Some(set(up))
                } else if let (true, Some(f)) = (all_mine, first) {
                    Some(Step {
                        action: Action::Lift {
                            to: f.saturating_sub(1),
                        },
                        to: None,
                        ends: true,
                    })
                } else if resource == Resource::Cpu && l < self.capacity() {
                    Some(set(self.capacity()))
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// A step of cgroup v2 `memory.high` (now `high`) back toward what was
    /// declared (None: none, "max"): up a step, and lifted once a step
    /// would reach the memory limit (at once without one: above usage it
    /// only throttles, so lifting it risks nothing).
    fn memory_high_step(&self, c: &Container, high: u64, declared: Option<u64>) -> Option<Step> {
        let up = scale_up(high, self.p.rules.give_back.step);
        let (to, ends) = match declared {
            Some(d) if up >= d => (Limit::Value(d), true),
            Some(_) => (Limit::Value(up), false),
            None if c.live.memory_bytes.is_some_and(|max| up < max) => (Limit::Value(up), false),
            None => (Limit::Max, true),
        };
        Some(Step {
            action: Action::Set {
                change: Change {
                    memory_high: Some(to),
                    ..Default::default()
                },
                reclaim: false,
            },
            to: to.value(),
            ends,
        })
    }
}

/// The `memory.high` that was declared (None: none, i.e. "max").
fn declared_high(declared: &Limits) -> Option<u64> {
    declared.memory_high.and_then(Limit::value)
}

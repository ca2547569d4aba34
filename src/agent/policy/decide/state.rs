//! What the engine did and when (`State`), kept between ticks, and the
//! overlays it owns, picked up again after a restart (`State::adopt`).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Assessment, Rule, PAGE};
use crate::agent::declared::same_weight;
use crate::agent::policy::{Key, View};
use crate::cgroups::Limit;

/// The overlays the engine made on a container and still owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    pub cpu: bool,
    pub memory: bool,
    /// The revisions the engine made on it (since tidald started), oldest
    /// first.
    pub revisions: Vec<u64>,
    /// Picked up after a restart: the engine's overlay predates its
    /// recorded revisions.
    pub adopted: bool,
}

/// What the engine did and when: the command center's memory, kept by the
/// engine between ticks.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// When each container last had a resource changed (or, in dry-run, a
    /// change decided).
    pub changed: BTreeMap<Key, Duration>,
    /// The last tick an online container was not calm (0: the engine's
    /// start).
    pub last_strained: Duration,
    /// The last tick the node's memory pressure was at `memory-squeeze`'s.
    pub last_memory_pressure: Duration,
    /// Rules resting until a time: for one container, or for all (None).
    pub held: BTreeMap<(Rule, Option<Key>), Duration>,
    pub owned: BTreeMap<Key, Owned>,
}

impl State {
    /// Remembers what this tick's assessment saw.
    pub fn note(&mut self, a: &Assessment, now: Duration) {
        if a.strained {
            self.last_strained = now;
        }
        if a.memory_pressure.is_some() {
            self.last_memory_pressure = now;
        }
        self.held.retain(|_, until| *until > now);
    }

    /// Forgets what it knew of containers that are gone, so that its size
    /// follows the node's containers.
    pub fn retain(&mut self, view: &View) {
        let here = |k: &Key| view.containers.contains_key(k);
        self.changed.retain(|k, _| here(k));
        self.owned.retain(|k, _| here(k));
        self.held.retain(|(_, k), _| k.as_ref().is_none_or(here));
    }

    pub fn is_held(&self, rule: Rule, key: &Key, now: Duration) -> bool {
        [None, Some(key.clone())]
            .into_iter()
            .any(|k| self.held.get(&(rule, k)).is_some_and(|until| *until > now))
    }

    /// Picks up the overlays the engine made before tidald restarted: a
    /// container whose only overlay source is `policy` is the engine's on
    /// every resource that differs from what was declared. One with other
    /// sources too is left to them (which resource is whose is unknown).
    pub fn adopt(&mut self, view: &View) {
        for c in view.containers.values() {
            let policy = crate::agent::policy::SOURCE;
            if self.owned.contains_key(&c.key) || c.overlays.iter().any(|s| s != policy) {
                continue;
            }
            let Some(declared) = &c.declared else {
                continue;
            };
            if !c.overlays.iter().any(|s| s == policy) {
                continue;
            }
            let cpu = c.live.cpu_millis() != declared.cpu_millis()
                || c.live
                    .cpu_shares
                    .zip(declared.cpu_shares)
                    .is_some_and(|(l, d)| !same_weight(l, d));
            let high = |l: &crate::agent::node::Limits| l.memory_high.and_then(Limit::value);
            let memory = match (c.live.memory_bytes, declared.memory_bytes) {
                (Some(a), Some(b)) => a.abs_diff(b) >= PAGE,
                (a, b) => a != b,
            } || (c.live.memory_high.is_some() && high(&c.live) != high(declared));
            if cpu || memory {
                self.owned.insert(
                    c.key.clone(),
                    Owned {
                        cpu,
                        memory,
                        revisions: Vec::new(),
                        adopted: true,
                    },
                );
            }
        }
    }
}

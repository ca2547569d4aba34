//! The command center: pure decisions over one tick's view, the signals
//! the aggregator keeps, the policy's rules and what the engine did before
//! (`State`). Nothing here reads a file or writes a cgroup: the executor
//! acts on what `decide` returns.
//!
//! The rules (each steers one resource; a container has at most one
//! resource changed per trigger window):
//! - a node in trouble is left alone (`health`);
//! - an online container suffers when a low percentile of its probe latency
//!   (or, without a probe, of its CPU throttling or CPU pressure) over the
//!   trigger window is above its limit, so a spike alone never acts;
//! - `throttle-offline`: offline CPU limits down a step, to their floor;
//! - `boost-online`: then, with idle CPU, the suffering online container's
//!   CPU limit up a step, never above what was declared (plus a share the
//!   policy allows);
//! - `give-back-cpu` / `give-back-memory`: when online containers (the
//!   node's memory) have been calm long enough, the engine's overlays step
//!   back to the declared limits until they are gone;
//! - `memory-squeeze`: under node memory pressure, offline memory limits
//!   down a step, never below their usage plus headroom (reclaimed first).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::rules::Policy;
use super::{Container, Key, Metric, Node, Qos, Signals, View};
use crate::resize::Change;

/// A page: memory limits are set in whole pages.
const PAGE: u64 = 4096;

/// The engine's controllers, one resource each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    ThrottleOffline,
    BoostOnline,
    GiveBackCpu,
    GiveBackMemory,
    MemorySqueeze,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Cpu,
    Memory,
}

impl Rule {
    pub const ALL: [Rule; 5] = [
        Rule::ThrottleOffline,
        Rule::BoostOnline,
        Rule::GiveBackCpu,
        Rule::GiveBackMemory,
        Rule::MemorySqueeze,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::ThrottleOffline => "throttle-offline",
            Rule::BoostOnline => "boost-online",
            Rule::GiveBackCpu => "give-back-cpu",
            Rule::GiveBackMemory => "give-back-memory",
            Rule::MemorySqueeze => "memory-squeeze",
        }
    }

    /// The one resource the rule steers.
    pub fn resource(self) -> Resource {
        match self {
            Rule::ThrottleOffline | Rule::BoostOnline | Rule::GiveBackCpu => Resource::Cpu,
            Rule::GiveBackMemory | Rule::MemorySqueeze => Resource::Memory,
        }
    }
}

/// What a rule watched.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// A container's metric, at the policy's percentile over the trigger
    /// window.
    Container { key: Key, metric: Metric },
    /// The node's `/proc/pressure/memory` `full avg10`.
    NodeMemoryPressure,
    /// Calm on a resource: for CPU, how many online containers suffer; for
    /// memory, 1 while the node's memory pressure is at `memory-squeeze`'s.
    /// The give-back rules act when it has been 0 long enough.
    Calm(Resource),
}

/// The signal a decision acted on, its value then and the limit it crossed.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub signal: Signal,
    pub value: f64,
    pub threshold: f64,
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.signal {
            Signal::Container { key, metric } => write!(
                f,
                "{}/{} {} {:.3} > {:.3}",
                key.namespace,
                key.id,
                metric_name(*metric),
                self.value,
                self.threshold
            ),
            Signal::NodeMemoryPressure => write!(
                f,
                "node memory pressure {:.1} >= {:.1}",
                self.value, self.threshold
            ),
            Signal::Calm(Resource::Cpu) => {
                write!(f, "online containers calm for {:.0}s", self.threshold)
            }
            Signal::Calm(Resource::Memory) => {
                write!(f, "no node memory pressure for {:.0}s", self.threshold)
            }
        }
    }
}

fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::CpuUsage => "cpu usage",
        Metric::CpuThrottled => "cpu throttled share",
        Metric::MemoryWorkingSet => "memory working set",
        Metric::MemoryUsage => "memory usage",
        Metric::CpuPressure => "cpu pressure",
        Metric::MemoryPressure => "memory pressure",
        Metric::ProbeLatency => "probe latency (s)",
    }
}

/// How a decision changes a container.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A new limit through the resize path; `reclaim` asks the kernel to
    /// reclaim memory before a memory limit is lowered.
    Set { change: Change, reclaim: bool },
    /// The engine's overlay lifted at once: the container's limits restored
    /// as they were right after revision `to` (the one before the engine's
    /// first change still in effect), for a declared limit that is
    /// unlimited, which a `Change` cannot express.
    Lift { to: u64 },
}

/// One change the command center asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub key: Key,
    pub rule: Rule,
    pub action: Action,
    /// The resource's limit before and after (millicores or bytes; None:
    /// unlimited).
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub trigger: Trigger,
    /// A give-back that reaches the declared limit: the engine's overlay on
    /// the resource is gone after it.
    pub ends_overlay: bool,
}

impl Decision {
    /// The revision's reason: the rule, the change and what triggered it.
    pub fn reason(&self) -> String {
        let show = |v: Option<u64>| match (v, self.rule.resource()) {
            (None, _) => "unlimited".to_string(),
            (Some(m), Resource::Cpu) => format!("{m}m"),
            (Some(b), Resource::Memory) => format!("{}Mi", b >> 20),
        };
        let what = match self.rule.resource() {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        };
        format!(
            "{}: {what} {} -> {}: {}",
            self.rule.name(),
            show(self.from),
            show(self.to),
            self.trigger
        )
    }
}

/// Whether the node may be touched.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    Healthy,
    /// Why the engine leaves the node alone.
    Trouble(String),
}

/// The node's health as the policy judges it: "protect the scene".
pub fn health(p: &Policy, node: &Node) -> Health {
    let r = &p.rules.protect;
    if !node.collected {
        return Health::Trouble("the collector could not read everything at its last tick".into());
    }
    if node.age > r.max_age.0 {
        return Health::Trouble(format!(
            "data is stale: the last complete tick was {:?} ago (max_age {:?})",
            node.age, r.max_age.0
        ));
    }
    if node.state_dir_free < r.min_state_dir_free {
        return Health::Trouble(format!(
            "the state directory's filesystem is {:.1}% free (min {:.1}%)",
            node.state_dir_free * 100.0,
            r.min_state_dir_free * 100.0
        ));
    }
    if let Some(full) = node.memory_pressure_full {
        if full >= r.max_memory_pressure {
            return Health::Trouble(format!(
                "severe memory pressure: full avg10 {full:.1} (max {:.1})",
                r.max_memory_pressure
            ));
        }
    }
    Health::Healthy
}

/// One tick's verdict on the node and its online containers.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub health: Health,
    /// The online containers suffering now, worst first.
    pub suffering: Vec<Trigger>,
    /// Some online container is not calm (see `give-back`'s `calm_below`),
    /// suffering or close to it.
    pub strained: bool,
    /// The node's memory pressure when it is at or above `memory-squeeze`'s.
    pub memory_pressure: Option<Trigger>,
}

/// The low percentile of `metric` over the trigger window, when the window
/// holds enough samples for a verdict.
fn low<S: Signals + ?Sized>(p: &Policy, signals: &S, key: &Key, metric: Metric) -> Option<f64> {
    let w = p.windows.trigger.0;
    if signals.samples(key, metric, w) < p.rules.online.min_samples {
        return None;
    }
    signals
        .quantile(key, metric, w, p.rules.online.quantile)
        .filter(|v| v.is_finite())
}

/// The current value of a decision's signal, as the rule measured it.
pub fn measure<S: Signals + ?Sized>(
    p: &Policy,
    view: &View,
    signals: &S,
    signal: &Signal,
) -> Option<f64> {
    match signal {
        Signal::Container { key, metric } => low(p, signals, key, *metric),
        Signal::NodeMemoryPressure => view.node.memory_pressure_full,
        Signal::Calm(Resource::Cpu) => Some(suffering(p, view, signals).len() as f64),
        Signal::Calm(Resource::Memory) => Some(
            view.node
                .memory_pressure_full
                .is_some_and(|v| v >= p.rules.memory_squeeze.pressure) as u8 as f64,
        ),
    }
}

/// Whether online container `c` suffers, and on which signal.
fn suffers<S: Signals + ?Sized>(p: &Policy, signals: &S, c: &Container) -> Option<Trigger> {
    let on = |metric, threshold: f64| {
        let value = low(p, signals, &c.key, metric)?;
        (value > threshold).then(|| Trigger {
            signal: Signal::Container {
                key: c.key.clone(),
                metric,
            },
            value,
            threshold,
        })
    };
    match &c.objective {
        Some(o) => on(Metric::ProbeLatency, o.latency.as_secs_f64()),
        None => on(Metric::CpuThrottled, p.rules.online.cpu_throttled)
            .or_else(|| on(Metric::CpuPressure, p.rules.online.cpu_pressure)),
    }
}

/// Whether online container `c` is not calm: the p90 of its signal over
/// the trigger window at or above `give-back.calm_below` of its threshold.
fn strained<S: Signals + ?Sized>(p: &Policy, signals: &S, c: &Container) -> bool {
    let w = p.windows.trigger.0;
    let share = p.rules.give_back.calm_below;
    let over = |metric, threshold: f64| {
        signals.samples(&c.key, metric, w) >= p.rules.online.min_samples
            && signals
                .quantile(&c.key, metric, w, 0.9)
                .is_some_and(|v| v >= share * threshold)
    };
    match &c.objective {
        Some(o) => over(Metric::ProbeLatency, o.latency.as_secs_f64()),
        None => {
            over(Metric::CpuThrottled, p.rules.online.cpu_throttled)
                || over(Metric::CpuPressure, p.rules.online.cpu_pressure)
        }
    }
}

/// The online containers suffering now, worst (furthest over) first.
pub fn suffering<S: Signals + ?Sized>(p: &Policy, view: &View, signals: &S) -> Vec<Trigger> {
    let mut out: Vec<Trigger> = view
        .containers
        .values()
        .filter(|c| c.qos == Qos::Online)
        .filter_map(|c| suffers(p, signals, c))
        .collect();
    let over = |t: &Trigger| t.value / t.threshold.max(f64::MIN_POSITIVE);
    out.sort_by(|a, b| over(b).total_cmp(&over(a)));
    out
}

pub fn assess<S: Signals + ?Sized>(p: &Policy, view: &View, signals: &S) -> Assessment {
    let health = health(p, &view.node);
    let m = &p.rules.memory_squeeze;
    let memory_pressure = view
        .node
        .memory_pressure_full
        .filter(|v| *v >= m.pressure)
        .map(|value| Trigger {
            signal: Signal::NodeMemoryPressure,
            value,
            threshold: m.pressure,
        });
    let healthy = health == Health::Healthy;
    let suffering = match healthy {
        true => suffering(p, view, signals),
        false => Vec::new(),
    };
    let strained = !suffering.is_empty()
        || (healthy
            && view
                .containers
                .values()
                .any(|c| c.qos == Qos::Online && strained(p, signals, c)));
    Assessment {
        suffering,
        strained,
        health,
        memory_pressure,
    }
}

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
            let policy = super::SOURCE;
            if self.owned.contains_key(&c.key) || c.overlays.iter().any(|s| s != policy) {
                continue;
            }
            let Some(declared) = &c.declared else {
                continue;
            };
            if !c.overlays.iter().any(|s| s == policy) {
                continue;
            }
            let cpu = c.live.cpu_millis() != declared.cpu_millis();
            let memory = match (c.live.memory_bytes, declared.memory_bytes) {
                (Some(a), Some(b)) => a.abs_diff(b) >= PAGE,
                (a, b) => a != b,
            };
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

/// The decisions for this tick.
pub fn decide<S: Signals + ?Sized>(
    p: &Policy,
    view: &View,
    signals: &S,
    memory: &State,
) -> Vec<Decision> {
    decide_assessed(p, view, signals, memory, &assess(p, view, signals))
}

/// `decide`, with the tick's assessment already made (the engine notes it
/// in its memory first).
pub fn decide_assessed<S: Signals + ?Sized>(
    p: &Policy,
    view: &View,
    signals: &S,
    memory: &State,
    a: &Assessment,
) -> Vec<Decision> {
    if a.health != Health::Healthy {
        return Vec::new();
    }
    let mut d = Deciding {
        p,
        view,
        memory,
        now: view.now,
        touched: BTreeSet::new(),
        out: Vec::new(),
    };
    if let Some(worst) = a.suffering.first() {
        let left = d.throttle_offline(worst);
        if !left {
            d.boost_online(&a.suffering);
        }
    } else if view.now.saturating_sub(memory.last_strained) >= p.rules.give_back.healthy_for.0 {
        d.give_back(Resource::Cpu);
    }
    if let Some(pressure) = &a.memory_pressure {
        d.memory_squeeze(signals, pressure);
    } else if view.now.saturating_sub(memory.last_memory_pressure)
        >= p.rules.give_back.healthy_for.0
    {
        d.give_back(Resource::Memory);
    }
    d.out
}

struct Deciding<'a> {
    p: &'a Policy,
    view: &'a View,
    memory: &'a State,
    now: Duration,
    /// Containers with a decision this tick.
    touched: BTreeSet<Key>,
    out: Vec<Decision>,
}

fn scale_down(v: u64, step: f64) -> u64 {
    (v as f64 * (1.0 - step)).ceil() as u64
}

fn scale_up(v: u64, step: f64) -> u64 {
    ((v as f64 * (1.0 + step)).floor() as u64).max(v + 1)
}

fn page_up(b: u64) -> u64 {
    b.div_ceil(PAGE) * PAGE
}

impl Deciding<'_> {
    /// Whether `rule` may change container `c` now: not held, and no
    /// resource of it changed in this trigger window.
    fn may(&self, rule: Rule, c: &Container) -> bool {
        !self.touched.contains(&c.key)
            && !self.memory.is_held(rule, &c.key, self.now)
            && self
                .memory
                .changed
                .get(&c.key)
                .is_none_or(|t| self.now.saturating_sub(*t) >= self.p.windows.trigger.0)
    }

    fn push(
        &mut self,
        c: &Container,
        rule: Rule,
        action: Action,
        from: Option<u64>,
        to: Option<u64>,
        trigger: Trigger,
    ) {
        self.touched.insert(c.key.clone());
        self.out.push(Decision {
            key: c.key.clone(),
            rule,
            action,
            from,
            to,
            trigger,
            ends_overlay: false,
        });
    }

    fn cpu(millis: u64) -> Action {
        Action::Set {
            change: Change {
                cpu_millis: Some(millis),
                ..Default::default()
            },
            reclaim: false,
        }
    }

    fn capacity(&self) -> u64 {
        u64::from(self.view.node.cpus.max(1)) * 1000
    }

    /// Offline CPU limits down a step. Returns whether any offline container
    /// had CPU left to take (above its floor), decided now or not.
    fn throttle_offline(&mut self, worst: &Trigger) -> bool {
        let r = &self.p.rules.throttle_offline;
        if !r.enabled {
            return false;
        }
        let mut left = false;
        let capacity = self.capacity();
        let view = self.view;
        for c in view.containers.values().filter(|c| c.qos == Qos::Offline) {
            // A limit above the node's CPUs (or none) counts as the node's CPUs.
            let live = c.live.cpu_millis();
            let base = live.unwrap_or(capacity).min(capacity);
            let floor = r.min_cpu_millis.max(c.min_cpu_millis.unwrap_or(0));
            let to = scale_down(base, r.step).max(floor);
            if to >= base {
                continue;
            }
            if self.memory.is_held(Rule::ThrottleOffline, &c.key, self.now) {
                continue;
            }
            left = true;
            if self.may(Rule::ThrottleOffline, c) {
                self.push(
                    c,
                    Rule::ThrottleOffline,
                    Self::cpu(to),
                    live,
                    Some(to),
                    worst.clone(),
                );
            }
        }
        left
    }

    /// The suffering online containers' CPU limits up a step, with idle CPU
    /// on the node, never above what was declared plus `above_declared`.
    fn boost_online(&mut self, suffering: &[Trigger]) {
        let r = &self.p.rules.boost_online;
        let view = self.view;
        if !r.enabled || view.node.cpu_idle < r.min_node_idle {
            return;
        }
        for t in suffering {
            let Signal::Container { key, .. } = &t.signal else {
                continue;
            };
            let Some(c) = view.containers.get(key) else {
                continue;
            };
            let (Some(live), Some(Some(declared))) = (
                c.live.cpu_millis(),
                c.declared.as_ref().map(|d| d.cpu_millis()),
            ) else {
                continue; // unlimited now, or nothing declared to bound it
            };
            let ceiling = (declared as f64 * (1.0 + r.above_declared)).floor() as u64;
            let to = scale_up(live, r.step).min(ceiling);
            if to > live && self.may(Rule::BoostOnline, c) {
                self.push(
                    c,
                    Rule::BoostOnline,
                    Self::cpu(to),
                    Some(live),
                    Some(to),
                    t.clone(),
                );
            }
        }
    }

    /// The engine's overlays on `resource` a step back toward what was
    /// declared; lifted at once (a rollback) where the declared limit is
    /// unlimited.
    fn give_back(&mut self, resource: Resource) {
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
            let (live, declared) = match resource {
                Resource::Cpu => (c.live.cpu_millis(), declared.cpu_millis()),
                Resource::Memory => (c.live.memory_bytes, declared.memory_bytes),
            };
            let set = |v: u64| match resource {
                Resource::Cpu => Self::cpu(v),
                Resource::Memory => Action::Set {
                    change: Change {
                        memory_bytes: Some(v),
                        ..Default::default()
                    },
                    reclaim: true,
                },
            };
            let action = match (live, declared) {
                (Some(l), Some(d)) if l < d => {
                    let to = scale_up(l, r.step).min(d);
                    Some((set(to), Some(to)))
                }
                (Some(l), Some(d)) if l > d => {
                    let to = scale_down(l, r.step).max(d);
                    Some((set(to), Some(to)))
                }
                (Some(l), None) => {
                    // Declared unlimited: step up while a step stays under
                    // the node's CPUs, then lift the overlay by rolling back
                    // to before the engine's first change, when every
                    // revision since is the engine's.
                    let first = owned.revisions.first().copied();
                    let all_mine = !owned.adopted
                        && first.is_some_and(|f| {
                            (f..=c.last_revision).all(|n| owned.revisions.contains(&n))
                        });
                    let up = scale_up(l, r.step);
                    if resource == Resource::Cpu && up < self.capacity() {
                        Some((set(up), Some(up)))
                    } else if let (true, Some(f)) = (all_mine, first) {
                        Some((
                            Action::Lift {
                                to: f.saturating_sub(1),
                            },
                            None,
                        ))
                    } else if resource == Resource::Cpu && l < self.capacity() {
                        let to = self.capacity();
                        Some((set(to), Some(to)))
                    } else {
                        None
                    }
                }
                _ => None,
            };
            if let Some((action, to)) = action {
                self.push(c, rule, action, live, to, trigger.clone());
                if let Some(last) = self.out.last_mut() {
                    last.ends_overlay = to == declared;
                }
            }
        }
    }

    /// Offline memory limits down a step under node memory pressure, never
    /// below their usage (its maximum over the usage window, or where its
    /// linear prediction heads, if higher) plus headroom, nor the trait's
    /// floor.
    fn memory_squeeze<S: Signals + ?Sized>(&mut self, signals: &S, pressure: &Trigger) {
        let r = &self.p.rules.memory_squeeze;
        if !r.enabled {
            return;
        }
        let view = self.view;
        for c in view.containers.values().filter(|c| c.qos == Qos::Offline) {
            let Some(usage) = signals
                .quantile(&c.key, Metric::MemoryUsage, self.p.windows.usage.0, 1.0)
                .filter(|u| u.is_finite() && *u >= 0.0)
            else {
                continue; // never lowered without knowing what it uses
            };
            // Growing usage: the limit stays above where it is heading
            // within the judging period, too.
            let horizon = self.p.windows.trigger.0 * self.p.rules.self_heal.judge_after;
            let heading = signals
                .predict(&c.key, Metric::MemoryUsage, self.p.windows.usage.0, horizon)
                .filter(|u| u.is_finite())
                .unwrap_or(0.0);
            let usage = usage.max(heading);
            let floor = page_up(
                ((usage * (1.0 + r.headroom)).ceil() as u64).max(c.min_memory_bytes.unwrap_or(0)),
            );
            let live = c.live.memory_bytes;
            let to = match live {
                Some(l) => page_up(scale_down(l, r.step)).max(floor),
                None => floor,
            };
            if live.is_some_and(|l| to + PAGE > l) || !self.may(Rule::MemorySqueeze, c) {
                continue;
            }
            let action = Action::Set {
                change: Change {
                    memory_bytes: Some(to),
                    ..Default::default()
                },
                reclaim: true,
            };
            self.push(
                c,
                Rule::MemorySqueeze,
                action,
                live,
                Some(to),
                pressure.clone(),
            );
        }
    }
}

#[cfg(test)]
mod tests;

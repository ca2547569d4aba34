//! The command center: pure decisions over one tick's view, the signals
//! the aggregator keeps, the policy's rules and what the engine did before
//! (`State`). Nothing here reads a file or writes a cgroup: the executor
//! acts on what `decide` returns.
//!
//! The rules (each steers one resource; a container has at most one
//! resource changed per trigger window):
//! - a node in trouble is left alone (`health`);
//! - an online container suffers when a low percentile of its probe latency
//!   (or, without a probe or its samples, of its CPU throttling or CPU
//!   pressure) over the trigger window is above its limit, so a spike alone
//!   never acts;
//! - `throttle-offline`: offline CPU limits down a step, to their floor;
//! - `boost-online`: then, with idle CPU, the suffering online container's
//!   CPU limit up a step, never above what was declared (plus a share the
//!   policy allows);
//! - `give-back-cpu` / `give-back-memory`: when online containers (the
//!   node's memory) have been calm long enough, the engine's overlays step
//!   back to the declared limits until they are gone;
//! - `memory-squeeze`: under node memory pressure, offline memory limits
//!   down a step, never below their usage plus headroom (reclaimed first).

use std::collections::BTreeSet;
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
    /// An offline container's CPU weight (`cpu.shares`) changed along with
    /// its CPU limit: (before, after).
    pub shares: Option<(u64, u64)>,
    /// Its cpuset changed along with it: (before, after).
    pub cpuset: Option<(String, String)>,
    /// The container's last revision when this was decided: the change is
    /// written only if it still is (`agent::owner`: a writer's change that
    /// lands meanwhile is never overwritten by a decision that did not see
    /// it).
    pub basis: u64,
}

impl Decision {
    /// The revision's reason: the rule, the change and what triggered it.
    pub fn reason(&self) -> String {
        let high = matches!(
            &self.action,
            Action::Set { change, .. } if change.memory_high.is_some()
        );
        let show = |v: Option<u64>| match (v, self.rule.resource()) {
            (None, _) => "unlimited".to_string(),
            (Some(m), Resource::Cpu) => format!("{m}m"),
            (Some(b), Resource::Memory) => format!("{}Mi", b >> 20),
        };
        let what = match self.rule.resource() {
            Resource::Cpu => "cpu",
            Resource::Memory if high => "memory.high",
            Resource::Memory => "memory",
        };
        let mut also = Vec::new();
        if let Some((from, to)) = self.shares {
            also.push(format!("cpu.shares {from} -> {to}"));
        }
        if let Some((from, to)) = &self.cpuset {
            also.push(format!("cpuset {from} -> {to}"));
        }
        let also = if also.is_empty() {
            String::new()
        } else {
            format!(" ({})", also.join(", "))
        };
        format!(
            "{}: {what} {} -> {}{also}: {}",
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
    match probed(p, signals, c) {
        Some(objective) => on(Metric::ProbeLatency, objective),
        None => on(Metric::CpuThrottled, p.rules.online.cpu_throttled)
            .or_else(|| on(Metric::CpuPressure, p.rules.online.cpu_pressure)),
    }
}

/// The latency objective (seconds) online container `c` is judged on: its
/// `qos` trait's, while its probe has answered often enough over the
/// trigger window to judge. A probe that gives no samples (tidald cannot
/// enter the pod's network namespace, or the pod has just started) leaves
/// the container judged on its cgroup signals, as one without a probe is,
/// never unprotected. A probe that times out gives samples: its timeout.
fn probed<S: Signals + ?Sized>(p: &Policy, signals: &S, c: &Container) -> Option<f64> {
    let o = c.objective.as_ref()?;
    (signals.samples(&c.key, Metric::ProbeLatency, p.windows.trigger.0)
        >= p.rules.online.min_samples)
        .then_some(o.latency.as_secs_f64())
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
    match probed(p, signals, c) {
        Some(objective) => over(Metric::ProbeLatency, objective),
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
        let left = d.throttle_offline(worst, &a.suffering);
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
            shares: None,
            cpuset: None,
            basis: c.last_revision,
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
}

mod cpu;
mod give_back;
mod memory;
mod state;

pub use state::{Owned, State};

#[cfg(test)]
mod resource_tests;
#[cfg(test)]
mod tests;

//! The node resource policy engine (issue 12, seed
//! `policy-engine-dynamic-resources`): a data collector and aggregator
//! (`observe`) -> a command center (`decide`, pure rules over the signals and
//! a clock passed in) -> an executor (`execute`, through tidald's one resize
//! path, every change a `policy` revision). This file is the contract
//! between the data side and the control side.

// The contract's types are used by the engine's parts as they land.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cgroups::Limits;

/// The source the engine's changes are recorded under (revisions, overlays).
pub const SOURCE: &str = "policy";

/// A container, as containerd names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub id: String,
}

/// What the collector measures of a container, after the aggregator turned
/// counters into rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// CPU used, in cores (CPU time per second of the interval).
    CpuUsage,
    /// Share of the interval's CFS periods in which the container was
    /// throttled, 0 to 1.
    CpuThrottled,
    /// Memory in use less inactive file cache, in bytes.
    MemoryWorkingSet,
    /// Memory in use, in bytes.
    MemoryUsage,
    /// Share of time some of the container's tasks waited for CPU (PSI
    /// `some avg10`, 0 to 100), where the kernel keeps it per cgroup.
    CpuPressure,
    /// As `CpuPressure`, for memory.
    MemoryPressure,
    /// Latency of the pod's declared probe, in seconds (a failed or timed
    /// out probe counts as its timeout).
    ProbeLatency,
}

/// What the aggregator answers about the containers it profiles: the
/// command center's only view of the data. `now` is the engine's clock
/// (time since it started); windows end at the last tick.
pub trait Signals {
    /// The `q`-quantile (0 to 1) of `metric` over the last `window`; None
    /// when the window holds no sample.
    fn quantile(&self, key: &Key, metric: Metric, window: Duration, q: f64) -> Option<f64>;
    /// `metric` predicted `horizon` ahead by a linear fit over the last
    /// `window`; None with fewer than two samples.
    fn predict(
        &self,
        key: &Key,
        metric: Metric,
        window: Duration,
        horizon: Duration,
    ) -> Option<f64>;
    /// How many samples of `metric` the last `window` holds.
    fn samples(&self, key: &Key, metric: Metric, window: Duration) -> usize;
}

/// QoS class, from `tidal.dev/qos` or the `qos` trait; containers with
/// neither are never touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Qos {
    Online,
    Offline,
    #[default]
    None,
}

/// A pod's latency objective and how to measure it (the `qos` trait's
/// `slo` and `probe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Objective {
    /// The latency the probe must stay under.
    pub latency: Duration,
    pub probe: Probe,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// HTTP GET of `path` on `port` inside the pod's network namespace.
    Http {
        port: u16,
        path: String,
        timeout: Duration,
    },
    /// A TCP connect to `port` inside the pod's network namespace.
    Tcp { port: u16, timeout: Duration },
}

/// What the command center knows of a container besides its signals.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub key: Key,
    pub qos: Qos,
    /// The pod as NAMESPACE/NAME (empty outside CRI).
    pub pod: String,
    /// Limits as the cgroup has them now.
    pub live: Limits,
    /// What Kubernetes declared (kubelet's resizes applied); None when the
    /// spec is unreadable.
    pub declared: Option<Limits>,
    /// The `qos` trait's floors: the engine never sets less.
    pub min_cpu_millis: Option<u64>,
    pub min_memory_bytes: Option<u64>,
    pub objective: Option<Objective>,
    /// The sources of the overlays on the declared limits now (`policy`
    /// among them when the engine's change is in effect).
    pub overlays: Vec<String>,
    /// Who set each resource last (`Declared::writers`): the engine gives
    /// back only what it still holds (`agent::owner`).
    pub writers: std::collections::BTreeMap<String, String>,
    /// The number of the container's last revision.
    pub last_revision: u64,
}

/// The node as the collector found it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    /// Whether the last tick read everything it should have.
    pub collected: bool,
    /// Time since the last complete tick.
    pub age: Duration,
    /// Share of the state directory's filesystem that is free, 0 to 1.
    pub state_dir_free: f64,
    /// `/proc/pressure/memory` `full avg10` (0 to 100), where the kernel has it.
    pub memory_pressure_full: Option<f64>,
    /// Share of the node's CPU time that was idle over the last interval.
    pub cpu_idle: f64,
    /// The node's CPUs.
    pub cpus: u32,
}

/// One tick's view: the node, and every container tidal runs now.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The engine's clock at this tick.
    pub now: Duration,
    pub node: Node,
    pub containers: BTreeMap<Key, Container>,
}

pub mod decide;
pub mod engine;
pub mod execute;
pub mod rules;
#[cfg(test)]
pub(crate) mod testing;
// The data side: the collector (`collect`), the pods' probes (`probe`),
// the aggregator (`profile`, which answers `Signals`), the containers' facts
// (`facts`), and `observe::Observer`, which ties them into one tick.
pub mod collect;
pub mod facts;
pub mod observe;
pub mod probe;
pub mod profile;
// What the API and the metrics show of the profiles, and the engine's
// Prometheus series.
pub mod metrics;
pub mod summary;

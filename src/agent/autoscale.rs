//! The `vertical-autoscaler` trait's controller: a node-local VPA, in
//! place. From the policy engine's profiles (so it runs when the engine
//! does), once per usage window, it recommends each carrying container's
//! CPU and memory limits: a high percentile of use over that window divided
//! by the trait's target utilization, within the trait's bounds, memory
//! never below what the container uses. In `recommend` mode the
//! recommendation is only shown (`tidalctl top`, the policy API); in `auto`
//! mode it is applied through the resize path as a
//! `trait:vertical-autoscaler` revision, one step at a time (no step moves a
//! limit by more than the engine's `max_step`), and only when the limit is
//! off the recommendation by more than a band (hysteresis), so that it does
//! not flap. A value another writer set since is left alone (agent::owner).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::inventory::{Inventory, Name, View};
use super::owner;
use super::policy::{Key, Metric, Signals};
use super::resizer::Resizer;
use crate::resize::{Change, Notes};
use crate::traits::Catalogue;

/// The trait this controller runs.
pub const TRAIT: &str = "vertical-autoscaler";
/// The source of the revisions it makes.
pub const SOURCE: &str = "trait:vertical-autoscaler";
/// A limit within this share of its recommendation is left as it is.
pub const BAND: f64 = 0.15;
/// The percentile of use a recommendation is made from.
pub const QUANTILE: f64 = 0.95;
/// Fewest samples of a window a recommendation needs.
pub const MIN_SAMPLES: usize = 5;
/// Memory kept above what the container uses, at least.
pub const MEMORY_HEADROOM: u64 = 16 << 20;

/// The trait's properties, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    pub min_cpu_millis: Option<u64>,
    pub max_cpu_millis: Option<u64>,
    pub min_memory_bytes: Option<u64>,
    pub max_memory_bytes: Option<u64>,
    /// Share of the limit the percentile of use is aimed at (0.1 to 0.95).
    pub target: f64,
    /// Whether recommendations are applied (`auto`) or only shown.
    pub auto: bool,
}

/// What the controller recommends for a container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recommendation {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// Why, in a revision's words.
    pub why: String,
}

/// The recommendation for `key` from `signals` over `window`: use's
/// `QUANTILE` divided by the target, within the bounds; memory also at
/// least `usage` plus headroom. None for a resource without enough samples.
pub fn recommend(
    signals: &dyn Signals,
    key: &Key,
    window: Duration,
    b: &Bounds,
    memory_usage: u64,
) -> Recommendation {
    let enough = |m: Metric| signals.samples(key, m, window) >= MIN_SAMPLES;
    let clamp = |v: u64, lo: Option<u64>, hi: Option<u64>| {
        v.max(lo.unwrap_or(0)).min(hi.unwrap_or(u64::MAX))
    };
    let mut why = Vec::new();
    let cpu = enough(Metric::CpuUsage)
        .then(|| signals.quantile(key, Metric::CpuUsage, window, QUANTILE))
        .flatten()
        .map(|cores| {
            why.push(format!("cpu p95 {cores:.2} cores"));
            let millis = (cores * 1000.0 / b.target).ceil() as u64;
            clamp(millis.max(1), b.min_cpu_millis, b.max_cpu_millis)
        });
    let memory = enough(Metric::MemoryWorkingSet)
        .then(|| signals.quantile(key, Metric::MemoryWorkingSet, window, QUANTILE))
        .flatten()
        .and_then(|bytes| {
            why.push(format!(
                "working set p95 {}",
                crate::quantity::format_memory(bytes as u64)
            ));
            let want = (bytes / b.target).ceil() as u64;
            let floor = memory_usage.saturating_add(MEMORY_HEADROOM);
            let within = clamp(want, b.min_memory_bytes, b.max_memory_bytes);
            // Never below use; where use is above maxMemory, no value
            // keeps both, and none is recommended.
            match (within >= floor, b.max_memory_bytes) {
                (true, _) => Some(within),
                (false, Some(max)) if floor > max => None,
                (false, _) => Some(floor),
            }
        });
    Recommendation {
        cpu_millis: cpu,
        memory_bytes: memory,
        why: format!(
            "{} over {}s at {:.0}% target",
            why.join(", "),
            window.as_secs(),
            b.target * 100.0
        ),
    }
}

/// The next value of a limit now at `live` (None: unlimited, taken as
/// `unlimited_as`) toward `want`: None within the band; else a step of at
/// most `max_step` of the limit.
pub fn step(live: Option<u64>, unlimited_as: u64, want: u64, max_step: f64) -> Option<u64> {
    let from = live.unwrap_or(unlimited_as).max(1);
    let off = (want as f64 - from as f64).abs() / from as f64;
    if off <= BAND {
        return None;
    }
    let most = ((from as f64) * max_step).max(1.0) as u64;
    let to = if want > from {
        want.min(from.saturating_add(most))
    } else {
        want.max(from.saturating_sub(most))
    };
    (to != from).then_some(to)
}

/// The node's memory (`MemTotal`), in bytes; 0 where unreadable.
fn node_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kib = m.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
            kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// The trait's bounds from a spec's annotations: None without the trait.
fn bounds_in(
    spec: Option<&serde_json::Value>,
    catalogue: &Catalogue,
) -> Option<Result<Bounds, String>> {
    let annotation = format!("{}{TRAIT}", crate::annotations::TRAIT_PREFIX);
    let text = spec?
        .pointer("/annotations")?
        .get(&annotation)?
        .as_str()?
        .to_string();
    let at = |e: String| format!("annotation {annotation}: {e}");
    Some((|| {
        let def = catalogue
            .get(TRAIT)
            .ok_or_else(|| at(format!("this node's trait catalogue has no {TRAIT} trait")))?;
        let t = crate::traits::parse_properties(def, &text).map_err(at)?;
        let cpu = |k: &str| t.str(k).and_then(|v| crate::quantity::parse_cpu(v).ok());
        let memory = |k: &str| t.str(k).and_then(|v| crate::quantity::parse_memory(v).ok());
        let target = t
            .properties
            .get("targetUtilization")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(70);
        Ok(Bounds {
            min_cpu_millis: cpu("minCPU"),
            max_cpu_millis: cpu("maxCPU"),
            min_memory_bytes: memory("minMemory"),
            max_memory_bytes: memory("maxMemory"),
            target: target as f64 / 100.0,
            auto: t.str("mode") != Some("recommend"),
        })
    })())
}

/// A container carrying the trait, as the controller knows it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub bounds: Result<Bounds, String>,
    pub recommendation: Option<Recommendation>,
    /// The last change it made or tried: (Unix time, what, failed).
    pub last: Option<(i64, String, bool)>,
}

/// The controller, its state shared with the policy API.
pub struct Autoscaler<S> {
    inventory: Arc<Inventory>,
    resizer: Arc<Resizer>,
    signals: S,
    catalogue: Catalogue,
    window: Duration,
    max_step: f64,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl<S: Signals + Clone + Send + Sync + 'static> Autoscaler<S> {
    pub fn new(
        inventory: Arc<Inventory>,
        resizer: Arc<Resizer>,
        signals: S,
        catalogue: Catalogue,
        window: Duration,
        max_step: f64,
    ) -> Self {
        Autoscaler {
            inventory,
            resizer,
            signals,
            catalogue,
            window,
            max_step,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// A pass every usage window, for ever: one step per container per
    /// window at most.
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.window).await;
            self.pass().await;
        }
    }

    /// Recommends for every running container carrying the trait, and in
    /// `auto` mode applies a step toward it.
    pub async fn pass(self: &Arc<Self>) {
        let me = self.clone();
        let steps = tokio::task::spawn_blocking(move || me.plan())
            .await
            .unwrap_or_default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for (key, change, why, basis) in steps {
            let name = Name {
                namespace: Some(key.namespace.clone()),
                id: key.id.clone(),
            };
            // It yields to every other writer, even one whose change lands
            // between this plan and its write.
            let notes = Notes {
                source: SOURCE.to_string(),
                reason: why.clone(),
                expect_revision: Some(basis),
                ..Default::default()
            };
            let last = match self.resizer.resize(&name, &change, notes).await {
                Err(e) if e.code() == tonic::Code::Aborted => continue,
                Ok(r) => (now, format!("{why}: revision {}", r.revision), false),
                Err(e) => {
                    tracing::warn!(
                        "vertical-autoscaler: {}/{}: {why}: {e}",
                        key.namespace,
                        key.id
                    );
                    (now, format!("{why}: {e}"), true)
                }
            };
            if let Some(e) = self
                .entries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&key)
            {
                e.last = Some(last);
            }
        }
    }

    /// Each step: the container, the change, why, and the revision it was
    /// decided at.
    fn plan(&self) -> Vec<(Key, Change, String, u64)> {
        let views = match self.inventory.list() {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("vertical-autoscaler: {e}");
                return Vec::new();
            }
        };
        // An unlimited limit counts as the node's whole.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let node_memory = node_memory();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let running: Vec<&View> = views
            .iter()
            .filter(|v| v.info.status == "running" && !v.declared.sandbox)
            .collect();
        entries.retain(|k, _| running.iter().any(|v| super::policy::facts::key(v) == *k));
        let mut steps = Vec::new();
        for v in running {
            let key = super::policy::facts::key(v);
            if !entries.contains_key(&key) {
                let spec = std::fs::read(v.info.bundle.join("config.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                let Some(bounds) = bounds_in(spec.as_ref(), &self.catalogue) else {
                    continue;
                };
                entries.insert(
                    key.clone(),
                    Entry {
                        bounds,
                        recommendation: None,
                        last: None,
                    },
                );
            }
            let e = entries.get_mut(&key).expect("inserted above");
            let Ok(b) = &e.bounds else { continue };
            let rec = recommend(
                &self.signals,
                &key,
                self.window,
                b,
                v.info.usage.memory_bytes,
            );
            let live = &v.info.limits;
            // Another writer's value is theirs: the autoscaler moves a
            // limit only while it is the declared one or its own.
            let declared = v.declared.limits.as_ref();
            let at_declared = |r: &str| match r {
                owner::CPU => declared.is_some_and(|d| d.cpu_millis() == live.cpu_millis()),
                _ => declared.is_some_and(|d| d.memory_bytes == live.memory_bytes),
            };
            let mine =
                |r: &str| owner::unclaimed_or_own(&v.declared.writers, SOURCE, r, at_declared(r));
            let mut change = Change::default();
            if let Some(want) = rec.cpu_millis.filter(|_| mine(owner::CPU)) {
                change.cpu_millis = step(live.cpu_millis(), cpus * 1000, want, self.max_step);
            }
            if change.is_empty() {
                if let Some(want) = rec.memory_bytes.filter(|_| mine(owner::MEMORY)) {
                    // Never below use: a step down stops at the floor.
                    let floor = v.info.usage.memory_bytes.saturating_add(MEMORY_HEADROOM);
                    change.memory_bytes = step(live.memory_bytes, node_memory, want, self.max_step)
                        .map(|m| m.max(floor))
                        .filter(|&m| Some(m) != live.memory_bytes);
                }
            }
            let auto = b.auto;
            let why = rec.why.clone();
            e.recommendation = Some(rec);
            // One resource per container per window, as the engine.
            if auto && !change.is_empty() {
                steps.push((key, change, why, v.last_revision));
            }
        }
        steps
    }

    /// The recommendation and last change of container `key`, if it
    /// carries the trait.
    pub fn entry(&self, key: &Key) -> Option<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }
}

#[cfg(test)]
mod tests;

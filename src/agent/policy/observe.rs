//! The data side of the engine in one piece, for its loop: `Observer::tick`
//! collects (`collect`), runs the pods' probes (`probe`), feeds the
//! profiles (`profile`) and returns the tick's `View` (`facts`); the
//! observer answers `Signals` between ticks.
//!
//! `tick` does blocking file I/O (a few reads per container): the engine's
//! loop runs it on a blocking thread, as it runs `Inventory::list`. The
//! probes run on threads of their own; a probe's latency is recorded at
//! the first tick after it finished (so it lags the cgroup values by up to
//! one interval).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::collect::{Collector, NodePaths, NodeSample, Options as CollectOptions};
use super::facts::{self, QosFacts};
use super::probe::{ProbeError, Prober};
use super::profile::{Profiles, Reading, DEFAULT_WINDOWS};
use super::summary::{self, Summary};
use super::{Key, Metric, Node, Qos, Signals, View};
use crate::agent::inventory::{Inventory, View as Found};
use crate::traits::Catalogue;

/// The collector's interval by default, and its bounds.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// The data side's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time between ticks (sizes the profiles' rings; the loop keeps it).
    pub interval: Duration,
    /// The windows the profiles are kept for (the longest counts).
    pub windows: Vec<Duration>,
    pub node: NodePaths,
    /// Most files the collector keeps open.
    pub keep_open_files: usize,
    /// Whether pods' declared probes run.
    pub probes: bool,
}

impl Options {
    /// The defaults for a node whose tidal state is in `state_dir`.
    pub fn new(state_dir: &std::path::Path) -> Options {
        Options {
            interval: DEFAULT_INTERVAL,
            windows: DEFAULT_WINDOWS.to_vec(),
            node: NodePaths::host(state_dir),
            keep_open_files: super::collect::DEFAULT_KEEP_OPEN_FILES,
            probes: true,
        }
    }
}

/// The probe target of a container: its pod (one probe for all its
/// containers), or the container itself outside CRI.
fn target(c: &super::Container) -> String {
    if c.pod.is_empty() {
        format!("{}/{}", c.key.namespace, c.key.id)
    } else {
        c.pod.clone()
    }
}

/// The pod annotations of a container, read once per process.
struct Known {
    pid: i32,
    bundle: PathBuf,
    facts: QosFacts,
}

/// The data side: collector, probes, profiles, and the facts of each
/// container, kept between ticks.
pub struct Observer {
    collector: Collector,
    profiles: Profiles,
    catalogue: Catalogue,
    known: HashMap<Key, Known>,
    prober: Prober<String>,
    /// Pods whose namespace tidald was refused (warned of once each).
    cannot_enter: HashSet<String>,
    /// Probes that failed in the last tick, by `ProbeError::reason`.
    probe_failures: BTreeMap<&'static str, u64>,
    probes: bool,
    last_complete: Option<Duration>,
    node: NodeSample,
    errors: Vec<String>,
    cost: Duration,
}

impl Observer {
    /// An observer of this host, checking `qos` traits against `catalogue`
    /// (the node's).
    pub fn new(opts: Options, catalogue: Catalogue) -> Observer {
        let collector = Collector::new(CollectOptions {
            node: opts.node.clone(),
            keep_open_files: opts.keep_open_files,
        });
        Observer::with_collector(opts, collector, catalogue)
    }

    /// An observer reading through `collector` (tests: fake cgroups).
    pub fn with_collector(opts: Options, collector: Collector, catalogue: Catalogue) -> Observer {
        Observer {
            collector,
            profiles: Profiles::new(opts.interval, &opts.windows),
            catalogue,
            known: HashMap::new(),
            prober: Prober::default(),
            cannot_enter: HashSet::new(),
            probe_failures: BTreeMap::new(),
            probes: opts.probes,
            last_complete: None,
            node: NodeSample::default(),
            errors: Vec::new(),
            cost: Duration::ZERO,
        }
    }

    /// `tick` over what `inventory` lists now (blocking: see the module).
    pub fn tick_inventory(
        &mut self,
        now: Duration,
        inventory: &Inventory,
    ) -> Result<View, crate::agent::error::Error> {
        // The collector reads the live limits with the statistics.
        let found = inventory.list_declared()?;
        Ok(self.tick(now, &found))
    }

    /// One tick at `now` (the engine's clock, later than the last tick's)
    /// over the containers tidal runs, as the inventory found them: reads
    /// the running ones and the node (a container's live limits are the
    /// collector's, read with its statistics, over the listing's), records
    /// probe results, feeds the profiles, forgets containers that are gone,
    /// and returns the view.
    pub fn tick(&mut self, now: Duration, found: &[Found]) -> View {
        let started = Instant::now();
        let running: Vec<&Found> = found
            .iter()
            .filter(|f| f.info.pid > 0 && matches!(f.info.status.as_str(), "running" | "paused"))
            .collect();
        let pids: Vec<(Key, i32, u64)> = running
            .iter()
            .map(|f| (facts::key(f), f.info.pid, f.last_revision))
            .collect();
        let collected = self.collector.collect(&pids);

        // The facts of each container, read when it (or its process) is new.
        let mut containers = BTreeMap::new();
        for f in &running {
            let key = facts::key(f);
            let stale = self
                .known
                .get(&key)
                .is_none_or(|k| k.pid != f.info.pid || k.bundle != f.info.bundle);
            if stale {
                let facts = QosFacts::read(&f.info.bundle, &self.catalogue);
                if let Some(p) = &facts.problem {
                    log::warn!(
                        "policy: {}/{}: {p}; the engine leaves it alone",
                        key.namespace,
                        key.id
                    );
                }
                self.known.insert(
                    key.clone(),
                    Known {
                        pid: f.info.pid,
                        bundle: f.info.bundle.clone(),
                        facts,
                    },
                );
            }
            let mut c = facts::container(f, &self.known[&key].facts);
            if let Some(live) = collected.limits.get(&key) {
                c.live = live.clone();
            }
            containers.insert(key.clone(), c);
        }
        self.known.retain(|k, _| containers.contains_key(k));

        // Probes: the results in since the last tick, then the next round.
        let mut latency: HashMap<String, Result<Duration, ProbeError>> =
            self.prober.take().into_iter().collect();
        // Every running container has a row: one whose cgroup could not be
        // read this time keeps its profile (a row without values).
        let mut readings: BTreeMap<Key, Reading> = BTreeMap::new();
        for (key, c) in &containers {
            let mut r = collected
                .containers
                .get(key)
                .map(Reading::from_stats)
                .unwrap_or_default();
            if let Some(o) = &c.objective {
                r.probe = match latency.get(&target(c)) {
                    Some(Ok(d)) => Some(*d),
                    // A probe that could not enter the pod's network
                    // namespace says nothing of the pod (tidald lacks a
                    // capability, or the process just exited): no sample.
                    // Counted as a timeout, it would make an online pod
                    // look as if it always missed its objective.
                    Some(Err(ProbeError::Netns { .. })) => None,
                    Some(Err(_)) => Some(o.probe.timeout()),
                    // A probe still running past the objective is a breach
                    // already: the time it has taken so far (a lower bound
                    // on its latency) is this tick's sample. Without it a
                    // service slower than the interval would leave windows
                    // with too few samples for a verdict just when it
                    // misses its objective.
                    None => self
                        .prober
                        .elapsed(&target(c))
                        .filter(|d| *d > o.latency)
                        .map(|d| d.min(o.probe.timeout())),
                };
            }
            readings.insert(key.clone(), r);
        }
        self.probe_failures.clear();
        for (t, result) in latency.drain() {
            if let Err(e) = &result {
                *self.probe_failures.entry(e.reason()).or_default() += 1;
            }
            match result {
                Err(ProbeError::Netns { path, source })
                    if matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES)) =>
                {
                    if self.cannot_enter.insert(t.clone()) {
                        log::warn!(
                            "policy: cannot probe {t}: entering its network namespace {}: {source}: \
                             tidald needs CAP_SYS_ADMIN (and CAP_SYS_PTRACE for a pod of another \
                             user); the pod's latency is unknown until it can",
                            path.display()
                        );
                    }
                }
                Err(e) => log::debug!("policy: probe of {t}: {e}"),
                Ok(_) => {
                    self.cannot_enter.remove(&t);
                }
            }
        }
        if self.probes {
            let mut probed = std::collections::HashSet::new();
            for c in containers.values() {
                if let (Qos::Online, Some(o)) = (c.qos, &c.objective) {
                    let pid = self.known[&c.key].pid;
                    let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
                    self.prober.start(target(c), netns, o.probe.clone());
                    probed.insert(target(c));
                }
            }
            // The threads of pods no longer probed leave their namespaces.
            self.prober.retain(|t| probed.contains(t));
            self.cannot_enter.retain(|t| probed.contains(t));
        }
        self.profiles.tick(now, &readings);

        let complete = collected.complete();
        if complete {
            self.last_complete = Some(now);
        }
        let node = &collected.node;
        let view = View {
            now,
            node: Node {
                collected: complete,
                age: self.last_complete.map_or(now, |t| now.saturating_sub(t)),
                state_dir_free: node.state_dir_free.unwrap_or(0.0),
                memory_pressure_full: node.memory_pressure.and_then(|p| p.full).map(|f| f.avg10),
                cpu_idle: node.cpu_idle.unwrap_or(0.0),
                cpus: node.cpus,
            },
            containers,
        };
        self.node = collected.node;
        self.errors = collected.errors;
        self.cost = started.elapsed();
        view
    }

    /// The profiles (also answered by the observer itself).
    pub fn signals(&self) -> &Profiles {
        &self.profiles
    }

    /// The node as the last tick read it, in full.
    pub fn node(&self) -> &NodeSample {
        &self.node
    }

    /// What the last tick could not read.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// The probes that failed in the last tick, by why
    /// (`ProbeError::reason`).
    pub fn probe_failures(&self) -> &BTreeMap<&'static str, u64> {
        &self.probe_failures
    }

    /// The wall time the last tick took.
    pub fn cost(&self) -> Duration {
        self.cost
    }

    /// Files the collector keeps open.
    pub fn open_files(&self) -> usize {
        self.collector.open_files()
    }
}

impl Signals for Observer {
    fn quantile(&self, key: &Key, metric: Metric, window: Duration, q: f64) -> Option<f64> {
        self.profiles.quantile(key, metric, window, q)
    }

    fn predict(
        &self,
        key: &Key,
        metric: Metric,
        window: Duration,
        horizon: Duration,
    ) -> Option<f64> {
        self.profiles.predict(key, metric, window, horizon)
    }

    fn samples(&self, key: &Key, metric: Metric, window: Duration) -> usize {
        self.profiles.samples(key, metric, window)
    }
}

/// The observer, shared between the engine's ticks and the API's readers
/// of profiles. Each use locks it for a synchronous moment (a tick on a
/// blocking thread, one query, one profile), never across an `.await`.
#[derive(Clone)]
pub struct Shared(Arc<Mutex<Observer>>);

impl Shared {
    pub fn new(observer: Observer) -> Shared {
        Shared(Arc::new(Mutex::new(observer)))
    }

    /// `f` on the observer. A tick that panicked leaves it as it was then:
    /// the next tick goes on from there.
    pub fn with<T>(&self, f: impl FnOnce(&mut Observer) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Signals for Shared {
    fn quantile(&self, key: &Key, metric: Metric, window: Duration, q: f64) -> Option<f64> {
        self.with(|o| o.quantile(key, metric, window, q))
    }

    fn predict(
        &self,
        key: &Key,
        metric: Metric,
        window: Duration,
        horizon: Duration,
    ) -> Option<f64> {
        self.with(|o| o.predict(key, metric, window, horizon))
    }

    fn samples(&self, key: &Key, metric: Metric, window: Duration) -> usize {
        self.with(|o| o.samples(key, metric, window))
    }
}

/// What a tick leaves for the API and the metrics: each running
/// container's summary over `window`, and the tick's cost.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub window: Duration,
    pub interval: Duration,
    pub containers: Vec<Summary>,
    /// Wall time the data side's tick took (listing and reading).
    pub cost: Duration,
    /// Probes that failed in the tick, by why (`ProbeError::reason`).
    pub probe_failures: BTreeMap<&'static str, u64>,
}

/// Where the data source reports each tick (tidald's metrics).
pub trait Report: Send + Sync {
    fn tick(&self, snapshot: &Snapshot);
}

/// The engine's data source on a node: the observer over tidald's
/// inventory, each tick on a blocking thread (it reads every container's
/// files), so the API and the metrics never wait for it. After each tick
/// it summarises every container (a few quantiles over the shortest
/// window) for `Top` and /metrics.
pub struct Live {
    observer: Shared,
    inventory: Arc<Inventory>,
    window: Duration,
    interval: Duration,
    snapshot: Arc<Mutex<Arc<Snapshot>>>,
    report: Option<Arc<dyn Report>>,
}

impl Live {
    /// A source over `observer`, summarising over `window` at ticks
    /// `interval` apart.
    pub fn new(
        observer: Observer,
        inventory: Arc<Inventory>,
        window: Duration,
        interval: Duration,
    ) -> Live {
        Live {
            observer: Shared::new(observer),
            inventory,
            window,
            interval,
            snapshot: Arc::new(Mutex::new(Arc::new(Snapshot {
                window,
                interval,
                ..Snapshot::default()
            }))),
            report: None,
        }
    }

    /// The source reporting each tick to `report`.
    pub fn with_report(mut self, report: Arc<dyn Report>) -> Live {
        self.report = Some(report);
        self
    }

    /// The observer, for the API's profiles.
    pub fn shared(&self) -> Shared {
        self.observer.clone()
    }

    /// The last tick's snapshot, for the API.
    pub fn snapshots(&self) -> Snapshots {
        Snapshots(self.snapshot.clone())
    }
}

/// The API's hold on the last tick's snapshot.
#[derive(Clone)]
pub struct Snapshots(Arc<Mutex<Arc<Snapshot>>>);

impl Snapshots {
    pub fn last(&self) -> Arc<Snapshot> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait::async_trait]
impl super::engine::Source for Live {
    async fn tick(&mut self, now: Duration) -> View {
        let (shared, inventory) = (self.observer.clone(), self.inventory.clone());
        let (window, interval) = (self.window, self.interval);
        let done = tokio::task::spawn_blocking(move || {
            shared.with(|o| {
                let view = o.tick_inventory(now, &inventory);
                // An online container's objective, from the view's facts.
                let objective = |k: &Key| {
                    let c = view.as_ref().ok()?.containers.get(k)?;
                    Some(c.objective.as_ref()?.latency.as_secs_f64())
                };
                let snapshot = Snapshot {
                    window,
                    interval,
                    containers: o
                        .signals()
                        .keys()
                        .map(|k| Summary {
                            objective: objective(k),
                            ..summary::summarize(o.signals(), k, window, interval)
                        })
                        .collect(),
                    cost: o.cost(),
                    probe_failures: o.probe_failures().clone(),
                };
                (view, snapshot)
            })
        })
        .await;
        match done {
            Ok((view, mut snapshot)) => {
                snapshot.containers.sort_by(|a, b| a.key.cmp(&b.key));
                if let Some(r) = &self.report {
                    r.tick(&snapshot);
                }
                *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
                view.unwrap_or_else(|e| {
                    tracing::warn!("policy engine: listing containers: {e}");
                    View {
                        now,
                        node: Node::default(),
                        ..View::default()
                    }
                })
            }
            // The tick panicked: nothing collected this time.
            Err(e) => {
                tracing::error!("policy engine: a tick failed: {e}");
                View {
                    now,
                    ..View::default()
                }
            }
        }
    }

    fn signals(&self) -> &(dyn Signals + Send + Sync) {
        &self.observer
    }
}

#[cfg(test)]
mod tests;

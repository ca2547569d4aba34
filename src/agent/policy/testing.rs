//! Test doubles for the control side: synthetic series (`Series`, a
//! `Signals` over samples the test writes), a node and containers made by
//! hand, and a fake world whose limits the fake resize path changes and
//! whose revisions it numbers, so the engine runs whole without tidald.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::engine::Source;
use super::execute::Apply;
use super::{Container, Key, Metric, Node, Objective, Probe, Qos, Signals, View};
use crate::agent::error::Error;
use crate::cgroups::Limits;
use crate::resize::Change;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn key(id: &str) -> Key {
    Key {
        namespace: "k8s.io".into(),
        id: id.into(),
    }
}

pub fn limits(cpu_millis: Option<u64>, memory: Option<u64>) -> Limits {
    Limits {
        cpu_quota_us: cpu_millis.map(|m| m * 100),
        cpu_period_us: 100_000,
        cpuset: "0-1".into(),
        memory_bytes: memory,
        cpu_shares: Some(1024),
        memory_high: None,
    }
}

/// A container with `cpu_millis` declared and live.
pub fn container(id: &str, qos: Qos, cpu_millis: Option<u64>) -> Container {
    Container {
        key: key(id),
        qos,
        pod: format!("default/{id}"),
        live: limits(cpu_millis, Some(1 << 30)),
        declared: Some(limits(cpu_millis, Some(1 << 30))),
        min_cpu_millis: None,
        min_memory_bytes: None,
        objective: None,
        overlays: Vec::new(),
        writers: Default::default(),
        last_revision: 0,
    }
}

/// Records `source` as the writer of each limit that differs between
/// `before` and `after` (as `Declared::writers` would).
fn wrote(c: &mut Container, before: &Limits, after: &Limits, source: &str) {
    use crate::agent::owner::{CPU, CPU_WEIGHT, MEMORY, MEMORY_HIGH};
    for (value, changed) in [
        (CPU, before.cpu_quota_us != after.cpu_quota_us),
        (CPU_WEIGHT, before.cpu_shares != after.cpu_shares),
        (MEMORY, before.memory_bytes != after.memory_bytes),
        (MEMORY_HIGH, before.memory_high != after.memory_high),
    ] {
        if changed {
            c.writers.insert(value.into(), source.into());
        }
    }
}

/// Makes the engine the latest writer of the CPU limit and weight and/or
/// of the memory limit and `memory.high` of `c`, as its history would after
/// the engine's overlay.
pub fn engine_wrote(c: &mut Container, cpu: bool, memory: bool) {
    use crate::agent::owner::{CPU, CPU_WEIGHT, MEMORY, MEMORY_HIGH};
    for (values, wrote) in [([CPU, CPU_WEIGHT], cpu), ([MEMORY, MEMORY_HIGH], memory)] {
        for value in values.into_iter().filter(|_| wrote) {
            c.writers
                .insert(value.into(), crate::agent::policy::SOURCE.into());
        }
    }
}

/// An online container whose probe must answer within 250 ms.
pub fn online(id: &str, cpu_millis: Option<u64>) -> Container {
    Container {
        objective: Some(Objective {
            latency: ms(250),
            probe: Probe::Tcp {
                port: 80,
                timeout: ms(1000),
            },
        }),
        ..container(id, Qos::Online, cpu_millis)
    }
}

pub fn healthy_node() -> Node {
    Node {
        collected: true,
        age: ms(100),
        state_dir_free: 0.5,
        memory_pressure_full: Some(0.0),
        cpu_idle: 0.5,
        cpus: 2,
    }
}

pub fn view(now: Duration, containers: Vec<Container>) -> View {
    View {
        now,
        node: healthy_node(),
        containers: containers.into_iter().map(|c| (c.key.clone(), c)).collect(),
    }
}

/// Samples by container and metric; windows end at `now`.
#[derive(Debug, Default, Clone)]
pub struct Series {
    pub now: Duration,
    data: BTreeMap<(Key, Metric), Vec<(Duration, f64)>>,
}

impl Series {
    pub fn push(&mut self, key: &Key, metric: Metric, at: Duration, v: f64) {
        self.data
            .entry((key.clone(), metric))
            .or_default()
            .push((at, v));
    }

    /// A sample every `every` from `from` up to `to` (inclusive), valued
    /// `f(t)`.
    pub fn fill(
        &mut self,
        key: &Key,
        metric: Metric,
        from: Duration,
        to: Duration,
        every: Duration,
        f: impl Fn(Duration) -> f64,
    ) {
        let mut t = from;
        while t <= to {
            self.push(key, metric, t, f(t));
            t += every;
        }
    }

    fn window(&self, key: &Key, metric: Metric, window: Duration) -> Vec<f64> {
        let start = self.now.saturating_sub(window);
        self.data
            .get(&(key.clone(), metric))
            .map(|s| {
                s.iter()
                    .filter(|(t, _)| *t > start && *t <= self.now)
                    .map(|(_, v)| *v)
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Signals for Series {
    /// Nearest rank.
    fn quantile(&self, key: &Key, metric: Metric, window: Duration, q: f64) -> Option<f64> {
        let mut v = self.window(key, metric, window);
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        Some(v[rank - 1])
    }

    /// Least squares over the window, `horizon` past `now`.
    fn predict(
        &self,
        key: &Key,
        metric: Metric,
        window: Duration,
        horizon: Duration,
    ) -> Option<f64> {
        let start = self.now.saturating_sub(window);
        let pts: Vec<(f64, f64)> = self
            .data
            .get(&(key.clone(), metric))?
            .iter()
            .filter(|(t, _)| *t > start && *t <= self.now)
            .map(|(t, v)| (t.as_secs_f64(), *v))
            .collect();
        if pts.len() < 2 {
            return None;
        }
        let n = pts.len() as f64;
        let (mx, my) = (
            pts.iter().map(|p| p.0).sum::<f64>() / n,
            pts.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let slope = if sxx == 0.0 { 0.0 } else { sxy / sxx };
        Some(my + slope * ((self.now + horizon).as_secs_f64() - mx))
    }

    fn samples(&self, key: &Key, metric: Metric, window: Duration) -> usize {
        self.window(key, metric, window).len()
    }
}

/// What the fake resize path was asked, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Resize {
        id: String,
        change: Change,
        reclaim: bool,
        reason: String,
    },
    Rollback {
        id: String,
        to: u64,
        reason: String,
    },
}

/// A node whose containers' limits the fake resize path changes: each
/// change a revision, each revision's limits kept for rollbacks.
#[derive(Default)]
pub struct World {
    pub view: View,
    /// Each container's limits right after each revision (index: revision).
    pub history: BTreeMap<Key, Vec<Limits>>,
    pub calls: Vec<Call>,
    /// Writes fail while set.
    pub fail: bool,
    /// Another writer's change that lands just before the engine's next
    /// write, after the engine decided it: (container, limits, source).
    pub race: Option<(Key, Limits, String)>,
}

impl World {
    pub fn new(containers: Vec<Container>) -> World {
        let view = view(Duration::ZERO, containers);
        let history = view
            .containers
            .values()
            .map(|c| {
                (
                    c.key.clone(),
                    vec![c.live.clone(); c.last_revision as usize + 1],
                )
            })
            .collect();
        World {
            view,
            history,
            ..Default::default()
        }
    }

    /// A change by someone else (e.g. an operator): a revision too.
    pub fn revise(&mut self, key: &Key, live: Limits, source: &str) -> u64 {
        let c = self.view.containers.get_mut(key).unwrap();
        let before = std::mem::replace(&mut c.live, live.clone());
        wrote(c, &before, &live, source);
        c.last_revision += 1;
        if !c.overlays.iter().any(|s| s == source) {
            c.overlays.push(source.into());
        }
        self.history.get_mut(key).unwrap().push(live);
        c.last_revision
    }

    /// What the shim does with `tidal.dev/expect-revision`: ABORTED when the
    /// container changed since the change was decided.
    fn check_basis(&self, key: &Key, basis: u64) -> Result<(), Error> {
        let last = self.view.containers[key].last_revision;
        if basis == last {
            return Ok(());
        }
        Err(Error::Shim(crate::agent::shimclient::Refusal {
            code: crate::agent::shimclient::ABORTED,
            message: format!(
                "{} changed since revision {basis} (its last revision is {last})",
                key.id
            ),
        }))
    }

    fn set(&mut self, key: &Key, live: Limits) -> u64 {
        let c = self.view.containers.get_mut(key).unwrap();
        let before = std::mem::replace(&mut c.live, live.clone());
        wrote(c, &before, &live, "policy");
        c.last_revision += 1;
        let differs = c.declared.as_ref() != Some(&c.live);
        c.overlays.retain(|s| s != "policy");
        if differs {
            c.overlays.push("policy".into());
        }
        self.history.get_mut(key).unwrap().push(live);
        c.last_revision
    }
}

#[derive(Clone, Default)]
pub struct FakeWorld(pub Arc<Mutex<World>>);

impl FakeWorld {
    pub fn new(containers: Vec<Container>) -> FakeWorld {
        FakeWorld(Arc::new(Mutex::new(World::new(containers))))
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }

    pub fn live(&self, id: &str) -> Limits {
        self.world().view.containers[&key(id)].live.clone()
    }
}

#[async_trait::async_trait]
impl Apply for FakeWorld {
    async fn resize(
        &self,
        key: &Key,
        change: &Change,
        reclaim: bool,
        reason: String,
        basis: u64,
    ) -> Result<u64, Error> {
        let mut w = self.world();
        w.calls.push(Call::Resize {
            id: key.id.clone(),
            change: change.clone(),
            reclaim,
            reason,
        });
        if w.fail {
            return Err(Error::NotRunning { id: key.id.clone() });
        }
        if let Some((k, live, source)) = w.race.take() {
            w.revise(&k, live, &source);
        }
        w.check_basis(key, basis)?;
        let mut live = w.view.containers[key].live.clone();
        if let Some(m) = change.cpu_millis {
            live.cpu_quota_us = Some(m * 100);
            live.cpu_period_us = 100_000;
        }
        if let Some(b) = change.memory_bytes {
            live.memory_bytes = Some(b);
        }
        if let Some(w) = change.cpu_shares {
            live.cpu_shares = Some(w);
        }
        if let Some(set) = &change.cpuset {
            live.cpuset = set.clone();
        }
        if let Some(h) = change.memory_high {
            live.memory_high = Some(h);
        }
        Ok(w.set(key, live))
    }

    async fn rollback(&self, key: &Key, to: u64, reason: String, basis: u64) -> Result<u64, Error> {
        let mut w = self.world();
        w.calls.push(Call::Rollback {
            id: key.id.clone(),
            to,
            reason,
        });
        if w.fail {
            return Err(Error::NotRunning { id: key.id.clone() });
        }
        if let Some((k, live, source)) = w.race.take() {
            w.revise(&k, live, &source);
        }
        w.check_basis(key, basis)?;
        let live = w.history[key][to as usize].clone();
        Ok(w.set(key, live))
    }
}

/// The fake world as the engine's data source, with the test's series.
pub struct FakeSource {
    pub world: FakeWorld,
    pub series: Series,
}

#[async_trait::async_trait]
impl Source for FakeSource {
    async fn tick(&mut self, now: Duration) -> View {
        self.series.now = now;
        let mut w = self.world.world();
        w.view.now = now;
        w.view.clone()
    }

    fn signals(&self) -> &(dyn Signals + Send + Sync) {
        &self.series
    }
}

/// Runs `engine` one tick a second from `from` to `to` seconds; before each
/// tick `model` writes that second's samples (it sees the world as the
/// engine left it). Answers every record, in order.
pub async fn drive<A: Apply>(
    engine: &mut super::engine::Engine<A>,
    source: &mut FakeSource,
    from: u64,
    to: u64,
    model: impl FnMut(&mut FakeSource, Duration),
) -> Vec<super::execute::Record> {
    let s = Duration::from_secs;
    drive_every(engine, source, s(from), s(to), s(1), model).await
}

/// `drive`, a tick every `every` from `from` to `to`.
pub async fn drive_every<A: Apply>(
    engine: &mut super::engine::Engine<A>,
    source: &mut FakeSource,
    from: Duration,
    to: Duration,
    every: Duration,
    mut model: impl FnMut(&mut FakeSource, Duration),
) -> Vec<super::execute::Record> {
    let mut out = Vec::new();
    let mut now = from;
    while now <= to {
        model(source, now);
        out.extend(engine.tick(now, source).await);
        now += every;
    }
    out
}

/// The probe latency of container `id` at `now`.
pub fn probe(source: &mut FakeSource, id: &str, now: Duration, seconds: f64) {
    source
        .series
        .push(&key(id), Metric::ProbeLatency, now, seconds);
}

/// The CPU limit of container `id`, in millicores.
pub fn cpu_of(world: &FakeWorld, id: &str) -> Option<u64> {
    world.live(id).cpu_millis()
}

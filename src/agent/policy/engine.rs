//! The engine's loop: at each tick its data source collects a `View`, the
//! command center decides, the executor judges earlier changes and applies
//! the new ones; a bounded decision log and a status are kept for the API.
//! The clock is passed in: tests call `tick` by hand, `run` drives it with
//! `tokio::time::interval`. The policy file is reloaded when it changes or
//! on SIGHUP; a bad new file keeps the running rules and says why.

use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::decide::{self, Health, Owned, State};
use super::execute::{Apply, Executor, Outcome, Record};
use super::rules::{Mode, Policy, PolicyError};
use super::{Key, Signals, View};

/// Decision log entries kept for the API.
pub const LOG_SIZE: usize = 1024;
/// Last decisions shown in the status.
const STATUS_LAST: usize = 16;

/// Where the engine's data comes from: the collector and aggregator (the
/// data side's `Observer`), or synthetic series in tests.
#[async_trait::async_trait]
pub trait Source: Send {
    /// Collects one tick at the engine's clock `now` (time since the engine
    /// started) and answers the node and its containers, with `View::now`
    /// set to `now`. File I/O belongs on a blocking thread
    /// (`spawn_blocking`): the engine shares tidald's runtime with the API.
    async fn tick(&mut self, now: Duration) -> View;
    /// The profiles kept so far, windows ending at the last tick.
    fn signals(&self) -> &(dyn Signals + Send + Sync);
}

/// What the engine is doing, for `tidalctl policy status`.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub mode: Mode,
    pub paused: bool,
    /// The running rules, and the file they came from.
    pub rules: Policy,
    pub rules_from: PathBuf,
    pub interval: Duration,
    /// Why the last reload was refused (the running rules stayed), if it was.
    pub reload_error: Option<String>,
    /// The node's health at the last tick (None before the first).
    pub health: Option<Health>,
    /// Online containers suffering at the last tick, as their triggers say.
    pub suffering: Vec<String>,
    /// Containers with an overlay the engine owns.
    pub owned: usize,
    /// Those overlays: which resources, and the revisions that made them.
    pub overlays: Vec<(Key, Owned)>,
    /// Changes waiting for their verdict.
    pub pending: usize,
    pub ticks: u64,
    /// The last decisions, newest last.
    pub last: Vec<Record>,
}

/// Where the engine reports what it does, for tidald's metrics: each
/// record as it is made, and how long each tick took (collect, decide,
/// apply). Called on the engine's task; it must not block.
pub trait Meter: Send + Sync {
    fn record(&self, record: &Record);
    fn tick(&self, took: Duration);
    /// The engine's mode and whether it is paused, told when the meter is
    /// attached, whenever either changes (pause, resume, mode, a reload)
    /// and at each tick.
    fn state(&self, _mode: Mode, _paused: bool) {}
}

/// What the engine and its handles share.
struct Shared {
    status: Mutex<Status>,
    log: Mutex<VecDeque<Record>>,
    paused: AtomicBool,
    /// A mode set at run time, over the flag's and the file's.
    mode: Mutex<Option<Mode>>,
    /// Requests to read the policy file again, each with where to answer
    /// (None: nobody waits).
    reload: tokio::sync::mpsc::UnboundedSender<Option<Answer>>,
    records: tokio::sync::broadcast::Sender<Record>,
    /// Where the mode and pause are told as they change (`Meter::state`).
    meter: Mutex<Option<Arc<dyn Meter>>>,
}

impl Shared {
    /// Tells the meter, if any, the mode and pause as the status has them.
    /// The status stays locked while the meter hears it, so that of two
    /// changes racing the meter keeps the later.
    fn report_state(&self) {
        let s = self.status.lock().unwrap();
        if let Some(m) = self.meter.lock().unwrap().as_ref() {
            m.state(s.mode, s.paused);
        }
    }
}

/// Where a reload's outcome goes: Ok, or why the running rules stayed.
type Answer = tokio::sync::oneshot::Sender<Result<(), String>>;

/// The API's hold on a running engine.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    pub fn status(&self) -> Status {
        self.shared.status.lock().unwrap().clone()
    }

    /// The decision log, oldest first.
    pub fn decisions(&self) -> Vec<Record> {
        self.shared.log.lock().unwrap().iter().cloned().collect()
    }

    /// Each record as the engine makes it.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Record> {
        self.shared.records.subscribe()
    }

    /// No decision until `resume` (data is still collected).
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
        self.shared.status.lock().unwrap().paused = true;
        self.shared.report_state();
    }

    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
        self.shared.status.lock().unwrap().paused = false;
        self.shared.report_state();
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = Some(mode);
        self.shared.status.lock().unwrap().mode = mode;
        self.shared.report_state();
    }

    /// Reads the policy file again now (as SIGHUP does).
    pub fn reload(&self) {
        let _ = self.shared.reload.send(None);
    }

    /// Reads the policy file again now and answers how that went: Ok (the
    /// new rules run), or why the file was refused (the running rules
    /// stay), or that the engine is not running.
    pub async fn reload_now(&self) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stopped = || "the policy engine is not running".to_string();
        self.shared.reload.send(Some(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// A file's identity and version, to see it change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp(u64, u64, u64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp(m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

pub struct Engine<A> {
    policy: Policy,
    from: PathBuf,
    stamp: Option<Stamp>,
    /// `--policy-mode`, over the file's mode.
    mode_flag: Option<Mode>,
    memory: State,
    executor: Executor<A>,
    adopted: bool,
    shared: Arc<Shared>,
    /// The other end of `Shared::reload` (taken by `run`).
    reloads: Option<tokio::sync::mpsc::UnboundedReceiver<Option<Answer>>>,
    meter: Option<Arc<dyn Meter>>,
}

impl<A: Apply> Engine<A> {
    /// An engine with `policy` (read from `from`), applying through `apply`.
    pub fn new(policy: Policy, from: PathBuf, mode_flag: Option<Mode>, apply: A) -> Self {
        let mode = mode_flag.unwrap_or(policy.mode);
        let status = Status {
            mode,
            paused: false,
            rules: policy.clone(),
            rules_from: from.clone(),
            interval: policy.interval.0,
            reload_error: None,
            health: None,
            suffering: Vec::new(),
            owned: 0,
            overlays: Vec::new(),
            pending: 0,
            ticks: 0,
            last: Vec::new(),
        };
        let (reload, reloads) = tokio::sync::mpsc::unbounded_channel();
        Engine {
            reloads: Some(reloads),
            stamp: stamp(&from),
            policy,
            from,
            mode_flag,
            memory: State::default(),
            executor: Executor::new(apply),
            adopted: false,
            meter: None,
            shared: Arc::new(Shared {
                status: Mutex::new(status),
                log: Mutex::new(VecDeque::new()),
                paused: AtomicBool::new(false),
                mode: Mutex::new(None),
                reload,
                records: tokio::sync::broadcast::channel(256).0,
                meter: Mutex::new(None),
            }),
        }
    }

    /// The engine reporting to `meter` (tidald's metrics).
    pub fn with_meter(mut self, meter: Arc<dyn Meter>) -> Self {
        *self.shared.meter.lock().unwrap() = Some(meter.clone());
        self.meter = Some(meter);
        self.shared.report_state();
        self
    }

    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The mode in effect: set at run time, else `--policy-mode`, else the
    /// file's.
    pub fn mode(&self) -> Mode {
        self.shared
            .mode
            .lock()
            .unwrap()
            .or(self.mode_flag)
            .unwrap_or(self.policy.mode)
    }

    /// Changes applied and not judged yet.
    pub fn executor_pending(&self) -> usize {
        self.executor.pending()
    }

    /// What the engine remembers of its own doing.
    pub fn memory(&self) -> &State {
        &self.memory
    }

    /// Reads the policy file again: the new rules run from the next tick,
    /// or, when the file is bad, the running ones stay and the status says
    /// why. Answers the error too.
    pub fn reload(&mut self) -> Result<(), PolicyError> {
        self.stamp = stamp(&self.from);
        let result = Policy::load(&self.from);
        let mut status = self.shared.status.lock().unwrap();
        match result {
            Ok(p) => {
                tracing::info!("policy: rules reloaded from {}", self.from.display());
                self.policy = p;
                status.rules = self.policy.clone();
                status.reload_error = None;
                status.interval = self.policy.interval.0;
                drop(status);
                let mode = self.mode();
                self.shared.status.lock().unwrap().mode = mode;
                self.shared.report_state();
                Ok(())
            }
            Err(e) => {
                tracing::warn!("policy: {e}; the running rules stay");
                status.reload_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Reloads the policy file if it changed since it was last read.
    pub fn reload_if_changed(&mut self) {
        if stamp(&self.from) != self.stamp {
            let _ = self.reload();
        }
    }

    /// One tick at the engine's clock `now`: collect, judge earlier
    /// changes, decide, apply. Answers this tick's records.
    pub async fn tick<S: Source + ?Sized>(&mut self, now: Duration, source: &mut S) -> Vec<Record> {
        let started = std::time::Instant::now();
        let view = source.tick(now).await;
        let signals = source.signals();
        if !self.adopted {
            // After a restart: the overlays the engine had made are its own.
            self.memory.adopt(&view);
            self.adopted = true;
        }
        let p = &self.policy;
        let a = decide::assess(p, &view, signals);
        self.memory.note(&a, view.now);
        self.memory.retain(&view);
        let paused = self.shared.paused.load(Ordering::SeqCst);
        let mode = self.mode();
        let mut records = Vec::new();
        // A node in trouble is left alone: no change, no rollback.
        if !paused && a.health == Health::Healthy {
            // Dry-run applies nothing, rollbacks included: earlier changes
            // are judged once the engine enforces again.
            if mode == Mode::Enforce {
                records = self
                    .executor
                    .judge(p, &view, signals, &mut self.memory)
                    .await;
            }
            let decisions = decide::decide_assessed(p, &view, signals, &self.memory, &a);
            records.extend(
                self.executor
                    .execute(p, mode, view.now, decisions, &mut self.memory)
                    .await,
            );
        }
        for r in &records {
            match &r.outcome {
                Outcome::Failed { .. } | Outcome::RollbackFailed { .. } => {
                    tracing::warn!(
                        "policy: {}/{}: {} ({:?})",
                        r.key.namespace,
                        r.key.id,
                        r.reason,
                        r.outcome
                    )
                }
                Outcome::Kept { .. } => {}
                _ => tracing::info!(
                    "policy: {}/{}: {} ({})",
                    r.key.namespace,
                    r.key.id,
                    r.reason,
                    r.outcome.name()
                ),
            }
        }
        {
            let mut log = self.shared.log.lock().unwrap();
            for r in &records {
                if log.len() == LOG_SIZE {
                    log.pop_front();
                }
                log.push_back(r.clone());
                let _ = self.shared.records.send(r.clone());
            }
            let mut s = self.shared.status.lock().unwrap();
            // As they are now (a pause or a mode set during the tick is
            // not undone by this tick's status).
            s.mode = self.mode();
            s.paused = self.shared.paused.load(Ordering::SeqCst);
            s.health = Some(a.health.clone());
            s.suffering = a.suffering.iter().map(|t| t.to_string()).collect();
            s.owned = self.memory.owned.len();
            s.overlays = self
                .memory
                .owned
                .iter()
                .map(|(k, o)| (k.clone(), o.clone()))
                .collect();
            s.pending = self.executor.pending();
            s.ticks += 1;
            s.last = log.iter().rev().take(STATUS_LAST).rev().cloned().collect();
        }
        if let Some(m) = &self.meter {
            for r in &records {
                m.record(r);
            }
            m.tick(started.elapsed());
        }
        self.shared.report_state();
        records
    }

    /// Runs the engine on `source` until the task is dropped: a tick every
    /// interval, the policy reloaded when its file changes, on SIGHUP and
    /// on `Handle::reload`.
    pub async fn run<S: Source>(mut self, mut source: S) {
        let start = tokio::time::Instant::now();
        let every = |p: &Policy| {
            let mut i = tokio::time::interval(p.interval.0);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        };
        let mut interval = every(&self.policy);
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut reloads = self
            .reloads
            .take()
            .expect("an engine runs once: its reload requests are its own");
        loop {
            let before = self.policy.interval;
            tokio::select! {
                _ = interval.tick() => {
                    self.reload_if_changed();
                    self.tick(start.elapsed(), &mut source).await;
                }
                Some(()) = async { match &mut hup { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    let _ = self.reload();
                }
                Some(answer) = reloads.recv() => {
                    let result = self.reload().map_err(|e| e.to_string());
                    if let Some(answer) = answer {
                        let _ = answer.send(result);
                    }
                }
            }
            if self.policy.interval != before {
                interval = every(&self.policy);
            }
        }
    }
}

impl<A: Apply + 'static> Engine<A> {
    /// Starts the engine's task on `source`.
    pub fn spawn<S: Source + 'static>(self, source: S) -> (Handle, tokio::task::JoinHandle<()>) {
        let handle = self.handle();
        (handle, tokio::spawn(self.run(source)))
    }
}

#[cfg(test)]
mod tests;

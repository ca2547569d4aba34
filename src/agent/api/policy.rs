//! The policy engine's API (`tidal.policy.v1.Policy`): its status, a
//! container's profile, `top`'s rows, the decision log and its stream, and
//! pause, resume and mode. Reads come from the engine's `Handle` (its
//! status and log), the last tick's snapshot and the shared observer (a
//! profile, on a blocking thread); nothing here waits for a tick. Without a
//! policy file every call answers FailedPrecondition, through the one
//! error mapping (`agent::error`).

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::agent::error::Error;
use crate::agent::inventory::Inventory;
use crate::agent::policy::decide::{Health, Owned};
use crate::agent::policy::engine::{self, Handle};
use crate::agent::policy::execute::{Outcome, Record};
use crate::agent::policy::observe::{Shared, Snapshots};
use crate::agent::policy::rules::{Mode, Policy};
use crate::agent::policy::summary::{self, Summary};
use crate::agent::policy::Key;
use crate::proto::policy_pb as pb;

/// What tidald says when the engine is not running.
pub const OFF: &str = "the policy engine is off (tidald --policy FILE)";

/// A running engine, as the API reaches it.
#[derive(Clone)]
pub struct Engine {
    pub handle: Handle,
    pub observer: Shared,
    pub snapshots: Snapshots,
    /// The windows the profiles are kept for.
    pub windows: Vec<Duration>,
    /// The vertical-autoscaler's recommendations.
    pub autoscaler: Arc<crate::agent::autoscale::Autoscaler<Shared>>,
}

pub struct PolicyService {
    /// None: tidald runs without a policy file.
    pub engine: Option<Engine>,
    pub inventory: Arc<Inventory>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn key_pb(k: &Key) -> pb::ContainerKey {
    pb::ContainerKey {
        namespace: k.namespace.clone(),
        id: k.id.clone(),
    }
}

fn mode_pb(m: Mode) -> pb::Mode {
    match m {
        Mode::Enforce => pb::Mode::Enforce,
        Mode::DryRun => pb::Mode::DryRun,
    }
}

/// A log entry as the API gives it.
pub fn decision(r: &Record) -> pb::Decision {
    let (revision, detail) = match &r.outcome {
        Outcome::Applied { revision } | Outcome::Kept { revision } => (*revision, String::new()),
        Outcome::DryRun => (0, String::new()),
        Outcome::Failed { error } => (0, error.clone()),
        Outcome::RolledBack {
            revision,
            to,
            revision_now,
            why,
        } => (
            *revision,
            format!("{why}; restored as after revision {to}, as revision {revision_now}"),
        ),
        Outcome::RollbackFailed { revision, why } => (*revision, why.clone()),
    };
    pb::Decision {
        at_ms: millis(r.at),
        container: Some(key_pb(&r.key)),
        rule: r.rule.name().to_string(),
        reason: r.reason.clone(),
        outcome: r.outcome.name().to_string(),
        revision,
        detail,
    }
}

/// The rules a policy has enabled.
fn enabled(p: &Policy) -> Vec<String> {
    let r = &p.rules;
    [
        (r.throttle_offline.enabled, "throttle-offline"),
        (r.boost_online.enabled, "boost-online"),
        (r.give_back.enabled, "give-back"),
        (r.memory_squeeze.enabled, "memory-squeeze"),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| name.to_string())
    .collect()
}

fn overlay(k: &Key, o: &Owned) -> pb::Overlay {
    pb::Overlay {
        container: Some(key_pb(k)),
        cpu: o.cpu,
        memory: o.memory,
        revisions: o.revisions.clone(),
        adopted: o.adopted,
    }
}

/// The engine's status as the API gives it.
pub fn status(s: &engine::Status, windows: &[Duration]) -> pb::StatusResponse {
    let (healthy, trouble) = match &s.health {
        Some(Health::Healthy) => (true, String::new()),
        Some(Health::Trouble(why)) => (false, why.clone()),
        None => (false, "no tick yet".to_string()),
    };
    pb::StatusResponse {
        mode: mode_pb(s.mode).into(),
        paused: s.paused,
        rules_from: s.rules_from.display().to_string(),
        rules: enabled(&s.rules),
        interval_ms: millis(s.interval),
        reload_error: s.reload_error.clone().unwrap_or_default(),
        healthy,
        trouble,
        suffering: s.suffering.clone(),
        overlays: s.overlays.iter().map(|(k, o)| overlay(k, o)).collect(),
        pending: s.pending as u64,
        ticks: s.ticks,
        last: s.last.iter().map(decision).collect(),
        trigger_window_ms: millis(s.rules.windows.trigger.0),
        quantile: s.rules.rules.online.quantile,
        windows_ms: windows.iter().map(|w| millis(*w)).collect(),
    }
}

/// A container's profile as the API gives it.
pub fn profile(
    key: &Key,
    metrics: &[summary::MetricProfile],
    horizon: Duration,
) -> pb::ProfileResponse {
    let metrics = metrics
        .iter()
        .map(|m| pb::MetricProfile {
            metric: summary::metric_name(m.metric).to_string(),
            windows: m
                .windows
                .iter()
                .map(|w| {
                    let q = |i: usize| w.quantiles[i].unwrap_or(0.0);
                    pb::Window {
                        window_ms: millis(w.window),
                        percentiles: Some(pb::Percentiles {
                            p10: q(0),
                            p50: q(1),
                            p90: q(2),
                            p95: q(3),
                            p99: q(4),
                            samples: w.samples as u64,
                        }),
                        predicted: w.predicted,
                    }
                })
                .collect(),
        })
        .collect();
    pb::ProfileResponse {
        container: Some(key_pb(key)),
        horizon_ms: millis(horizon),
        metrics,
    }
}

/// `top`'s row of a container as the inventory lists it, with its summary
/// from the last tick (if the engine profiles it).
fn top_row(
    v: &crate::agent::inventory::View,
    s: Option<&Summary>,
    rec: Option<crate::agent::autoscale::Entry>,
) -> pb::TopRow {
    let (info, d) = (&v.info, &v.declared);
    let s = s.cloned().unwrap_or_default();
    let rec = rec.and_then(|e| e.recommendation).unwrap_or_default();
    pb::TopRow {
        container: Some(pb::ContainerKey {
            namespace: info.namespace.clone(),
            id: info.id.clone(),
        }),
        pod: d.pod.clone(),
        name: d.name.clone(),
        qos: d.qos.clone(),
        cpu_limit_millis: info.limits.cpu_millis(),
        memory_limit_bytes: info.limits.memory_bytes,
        cpu_p50_cores: s.cpu_p50,
        cpu_p95_cores: s.cpu_p95,
        throttled_share: s.throttled,
        working_set_bytes: s.working_set,
        probe_p95_seconds: s.probe_p95,
        overlays: d.overlays.clone(),
        recommended_cpu_millis: rec.cpu_millis,
        recommended_memory_bytes: rec.memory_bytes,
    }
}

impl PolicyService {
    fn engine(&self) -> Result<&Engine, Error> {
        self.engine
            .as_ref()
            .ok_or_else(|| Error::Unavailable(OFF.into()))
    }

    fn status_now(&self) -> Result<pb::StatusResponse, Error> {
        let e = self.engine()?;
        Ok(status(&e.handle.status(), &e.windows))
    }
}

type DecisionStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Decision, Status>> + Send>>;

#[tonic::async_trait]
impl pb::policy_server::Policy for PolicyService {
    type WatchDecisionsStream = DecisionStream;

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(self.status_now()?))
    }

    async fn profile(
        &self,
        req: Request<pb::ProfileRequest>,
    ) -> Result<Response<pb::ProfileResponse>, Status> {
        let e = self.engine()?.clone();
        let r = req
            .into_inner()
            .container
            .ok_or_else(|| Error::Invalid("no container named".into()))?;
        crate::ids::validate("container id", &r.id).map_err(Error::from)?;
        let policy = e.handle.status().rules;
        let horizon = policy.windows.trigger.0 * policy.rules.self_heal.judge_after;
        let inventory = self.inventory.clone();
        let answer = tokio::task::spawn_blocking(move || {
            // The container as tidald names it (namespace optional).
            let name = crate::agent::inventory::Name {
                namespace: Some(r.namespace).filter(|n| !n.is_empty()),
                id: r.id,
            };
            let found = inventory.get(&name)?;
            let key = Key {
                namespace: found.info.namespace,
                id: found.info.id,
            };
            let metrics = summary::profile(&e.observer, &key, &e.windows, horizon);
            if metrics.is_empty() {
                return Err(Error::Unavailable(format!(
                    "the policy engine has no profile of {}/{} yet (it is profiled from the next tick while it runs)",
                    key.namespace, key.id
                )));
            }
            Ok(profile(&key, &metrics, horizon))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(answer))
    }

    async fn top(&self, _: Request<pb::TopRequest>) -> Result<Response<pb::TopResponse>, Status> {
        let engine = self.engine()?;
        let snapshot = engine.snapshots.last();
        let inventory = self.inventory.clone();
        let found = tokio::task::spawn_blocking(move || inventory.list())
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        let containers = found
            .iter()
            .filter(|v| v.info.pid > 0 && matches!(v.info.status.as_str(), "running" | "paused"))
            .map(|v| {
                let s = snapshot
                    .containers
                    .iter()
                    .find(|s| s.key.namespace == v.info.namespace && s.key.id == v.info.id);
                let key = crate::agent::policy::facts::key(v);
                top_row(v, s, engine.autoscaler.entry(&key))
            })
            .collect();
        Ok(Response::new(pb::TopResponse {
            window_ms: millis(snapshot.window),
            interval_ms: millis(snapshot.interval),
            containers,
        }))
    }

    async fn decisions(
        &self,
        _: Request<pb::DecisionsRequest>,
    ) -> Result<Response<pb::DecisionsResponse>, Status> {
        let log = self.engine()?.handle.decisions();
        Ok(Response::new(pb::DecisionsResponse {
            decisions: log.iter().map(decision).collect(),
        }))
    }

    async fn watch_decisions(
        &self,
        _: Request<pb::WatchDecisionsRequest>,
    ) -> Result<Response<Self::WatchDecisionsStream>, Status> {
        use tokio_stream::StreamExt;
        let rx = self.engine()?.handle.subscribe();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx).map(|r| match r {
            Ok(r) => Ok(decision(&r)),
            Err(_lagged) => Err(Status::data_loss(
                "watcher fell behind; decisions were skipped (see `tidalctl policy decisions`)",
            )),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn pause(
        &self,
        _: Request<pb::PauseRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.engine()?.handle.pause();
        Ok(Response::new(self.status_now()?))
    }

    async fn resume(
        &self,
        _: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.engine()?.handle.resume();
        Ok(Response::new(self.status_now()?))
    }

    async fn set_mode(
        &self,
        req: Request<pb::SetModeRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let e = self.engine()?;
        let mode = match pb::Mode::try_from(req.into_inner().mode) {
            Ok(pb::Mode::Enforce) => Mode::Enforce,
            Ok(pb::Mode::DryRun) => Mode::DryRun,
            _ => return Err(Error::Invalid("mode must be enforce or dry-run".into()).into()),
        };
        e.handle.set_mode(mode);
        Ok(Response::new(self.status_now()?))
    }

    async fn reload(
        &self,
        _: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.engine()?
            .handle
            .reload_now()
            .await
            .map_err(|e| Error::Unavailable(format!("{e}; the running rules stay")))?;
        Ok(Response::new(self.status_now()?))
    }
}

#[cfg(test)]
mod tests;

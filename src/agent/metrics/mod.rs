//! tidald's Prometheus metrics (names and meanings in docs/metrics.md): the
//! resizes it routed (outcome counts, a latency histogram), the live
//! limits and usage of tidal's containers, and the policy engine's
//! decisions, rollbacks, tick costs and per-container signals, served as
//! OpenMetrics text over HTTP/1.1 on a loopback address. A scrape reads
//! every container on a blocking thread, so it never holds up a resize on
//! the runtime's thread. The engine reports into `PolicyMetrics` (its
//! counters, and the last tick's signals) as it goes: a scrape never asks
//! the engine anything.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub mod resizes;

pub use resizes::Resizes;

use super::inventory::{Inventory, View};
use super::policy::decide::Rule;
use super::policy::engine::Meter;
use super::policy::execute::{Outcome as Done, Record};
use super::policy::observe::{Report, Snapshot};
use super::policy::probe::ProbeError;
use super::policy::rules::Mode;

/// Upper bounds (seconds) of the policy engine's tick histograms.
pub const TICK_BUCKETS: [f64; 9] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Decided {
    rule: String,
    /// applied, dry-run, failed, rolled-back, rollback-failed, kept.
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    /// `ProbeError::reason`: netns, connect, timeout, http, thread.
    reason: &'static str,
}

/// The policy engine's series: counters and histograms it records into as
/// it ticks, the per-container signals of its last tick, and its mode and
/// pause as they change.
#[derive(Debug, Clone)]
pub struct PolicyMetrics {
    decisions: Family<Decided, Counter>,
    rollbacks: Family<RuleLabel, Counter>,
    collect: Histogram,
    loop_seconds: Histogram,
    probe_failures: Family<ReasonLabel, Counter>,
    signals: Arc<PolicySignals>,
    state: Arc<EngineState>,
}

impl Meter for PolicyMetrics {
    fn record(&self, r: &Record) {
        let rule = r.rule.name().to_string();
        self.decisions
            .get_or_create(&Decided {
                rule: rule.clone(),
                outcome: r.outcome.name().to_string(),
            })
            .inc();
        if matches!(r.outcome, Done::RolledBack { .. }) {
            self.rollbacks.get_or_create(&RuleLabel { rule }).inc();
        }
    }

    fn tick(&self, took: std::time::Duration) {
        self.loop_seconds.observe(took.as_secs_f64());
    }

    fn state(&self, mode: Mode, paused: bool) {
        let mut now = self.state.now.lock().unwrap();
        if now.is_none() {
            // The engine runs: each rule's rollbacks start at 0, so that a
            // rate or an increase over them sees the first one.
            for rule in Rule::ALL {
                let rule = rule.name().to_string();
                let _ = self.rollbacks.get_or_create(&RuleLabel { rule });
            }
        }
        *now = Some((mode, paused));
    }
}

/// The engine's mode and pause as it last told them; None while no engine
/// runs (then neither series is exported).
#[derive(Debug, Default)]
struct EngineState {
    now: Mutex<Option<(Mode, bool)>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    mode: &'static str,
}

impl Collector for EngineState {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((mode, paused)) = *self.now.lock().unwrap() else {
            return Ok(());
        };
        let gauge = ConstGauge::new(i64::from(paused));
        gauge.encode(encoder.encode_descriptor(
            "tidal_policy_paused",
            "1 while the policy engine is paused (tidalctl policy pause): it collects but decides nothing",
            None,
            gauge.metric_type(),
        )?)?;
        let kind = ConstGauge::new(0i64).metric_type();
        let mut family = encoder.encode_descriptor(
            "tidal_policy_mode",
            "The policy engine's mode: 1 for the one in effect (enforce, or dry-run: decisions recorded, nothing applied)",
            None,
            kind,
        )?;
        for m in [Mode::Enforce, Mode::DryRun] {
            let labels = ModeLabel { mode: m.as_str() };
            ConstGauge::new(i64::from(m == mode)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl Report for PolicyMetrics {
    fn tick(&self, snapshot: &Snapshot) {
        self.collect.observe(snapshot.cost.as_secs_f64());
        // Every reason is exported from the first tick, at 0 until a probe
        // fails for it, so that an increase over it sees the first failure.
        for reason in ProbeError::REASONS {
            let failed = snapshot.probe_failures.get(reason).copied().unwrap_or(0);
            self.probe_failures
                .get_or_create(&ReasonLabel { reason })
                .inc_by(failed);
        }
        let rows = snapshot
            .containers
            .iter()
            .map(|c| {
                let labels = ContainerLabels {
                    namespace: c.key.namespace.clone(),
                    container: c.key.id.clone(),
                };
                (labels, c.probe_p95, c.throttled, c.objective)
            })
            .collect();
        *self.signals.rows.lock().unwrap() = rows;
    }
}

/// A container's signals at the engine's last tick: (labels, probe latency
/// p95, throttled share, latency objective).
type SignalRow = (ContainerLabels, Option<f64>, Option<f64>, Option<f64>);

/// A per-container series of the engine: name, help, its value in a row.
type SignalSeries = (&'static str, &'static str, fn(&SignalRow) -> Option<f64>);

/// The per-container signals of the engine's last tick.
#[derive(Debug, Default)]
struct PolicySignals {
    rows: Mutex<Vec<SignalRow>>,
}

impl Collector for PolicySignals {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.rows.lock().unwrap();
        let series: [SignalSeries; 3] = [
            (
                "tidal_policy_probe_latency_seconds",
                "p95 of the pod's probe latency over the engine's shortest window.",
                |r| r.1,
            ),
            (
                "tidal_policy_cpu_throttled_ratio",
                "Median share of CFS periods throttled over the engine's shortest window.",
                |r| r.2,
            ),
            (
                "tidal_policy_latency_objective_seconds",
                "The online container's latency objective (its qos trait's latencyObjective).",
                |r| r.3,
            ),
        ];
        for (name, help, value) in series {
            let kind = ConstGauge::new(0.0f64).metric_type();
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for r in rows.iter() {
                if let Some(v) = value(r) {
                    ConstGauge::new(v).encode(family.encode_family(&r.0)?)?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    namespace: String,
    container: String,
}

/// The containers as the scrape being served found them.
#[derive(Debug, Default)]
struct Containers {
    found: Mutex<Vec<View>>,
}

/// One exported series of a container: name, help, whether a counter, and
/// its value (None: no sample, e.g. an unlimited limit).
type Series = (&'static str, &'static str, bool, fn(&View) -> Option<f64>);

const SERIES: [Series; 4] = [
    (
        "tidal_container_cpu_usage_seconds",
        "CPU time used by the container.",
        true,
        |c| Some(c.info.usage.cpu_ns as f64 / 1e9),
    ),
    (
        "tidal_container_memory_usage_bytes",
        "Memory used by the container.",
        false,
        |c| Some(c.info.usage.memory_bytes as f64),
    ),
    (
        "tidal_container_cpu_limit_cores",
        "CPU limit (CFS quota / period); absent when unlimited.",
        false,
        |c| c.info.limits.cpu_millis().map(|m| m as f64 / 1000.0),
    ),
    (
        "tidal_container_memory_limit_bytes",
        "Memory limit; absent when unlimited.",
        false,
        |c| c.info.limits.memory_bytes.map(|b| b as f64),
    ),
];

impl Collector for Containers {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let found = self.found.lock().unwrap();
        let running: Vec<&View> = found
            .iter()
            .filter(|c| c.info.status != "stopped")
            .collect();
        for (name, help, counter, value) in SERIES {
            let samples: Vec<(ContainerLabels, f64)> = running
                .iter()
                .filter_map(|c| {
                    let labels = ContainerLabels {
                        namespace: c.info.namespace.clone(),
                        container: c.info.id.clone(),
                    };
                    Some((labels, value(c)?))
                })
                .collect();
            if counter {
                let kind = ConstCounter::new(0.0f64).metric_type();
                let mut family = encoder.encode_descriptor(name, help, None, kind)?;
                for (labels, v) in &samples {
                    ConstCounter::new(*v).encode(family.encode_family(labels)?)?;
                }
            } else {
                let kind = ConstGauge::new(0.0f64).metric_type();
                let mut family = encoder.encode_descriptor(name, help, None, kind)?;
                for (labels, v) in &samples {
                    ConstGauge::new(*v).encode(family.encode_family(labels)?)?;
                }
            }
        }
        let count = ConstGauge::new(running.len() as i64);
        count.encode(encoder.encode_descriptor(
            "tidal_containers",
            "Containers tidal runs on this node.",
            None,
            count.metric_type(),
        )?)
    }
}

/// tidald's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    resizes: Resizes,
    containers: Arc<Containers>,
    policy: PolicyMetrics,
    /// One scrape at a time (they share `containers`).
    scraping: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let resizes = Resizes::registered(&mut registry);
        let containers = Arc::new(Containers::default());
        registry.register_collector(Box::new(containers.clone()));
        let policy = PolicyMetrics {
            decisions: Family::default(),
            rollbacks: Family::default(),
            collect: Histogram::new(TICK_BUCKETS),
            loop_seconds: Histogram::new(TICK_BUCKETS),
            probe_failures: Family::default(),
            signals: Arc::new(PolicySignals::default()),
            state: Arc::new(EngineState::default()),
        };
        registry.register(
            "tidal_policy_decisions",
            "The policy engine's decisions and verdicts, by rule and outcome",
            policy.decisions.clone(),
        );
        registry.register(
            "tidal_policy_rollbacks",
            "Changes of the policy engine it rolled back (they did not help), by rule",
            policy.rollbacks.clone(),
        );
        registry.register(
            "tidal_policy_collect_seconds",
            "Time the policy engine's data side took per tick (listing, reading, profiling)",
            policy.collect.clone(),
        );
        registry.register(
            "tidal_policy_tick_seconds",
            "Time one tick of the policy engine's loop took (collect, decide, apply)",
            policy.loop_seconds.clone(),
        );
        registry.register(
            "tidal_policy_probe_failures",
            "Probes of online pods that gave no latency, by reason (netns: tidald could not enter the pod's network namespace; connect, timeout, http: the service's answer; thread)",
            policy.probe_failures.clone(),
        );
        registry.register_collector(Box::new(policy.signals.clone()));
        registry.register_collector(Box::new(policy.state.clone()));
        Metrics {
            registry,
            resizes,
            containers,
            policy,
            scraping: tokio::sync::Mutex::new(()),
        }
    }

    /// The policy engine's series, for the engine and its data source to
    /// record into.
    pub fn policy(&self) -> PolicyMetrics {
        self.policy.clone()
    }

    /// The resizes' series, for the resizer to count into.
    pub fn resizes(&self) -> Resizes {
        self.resizes.clone()
    }

    /// The exposition of everything, with the containers as `found`.
    pub fn render(&self, found: Vec<View>) -> String {
        *self.containers.found.lock().unwrap() = found;
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        self.containers.found.lock().unwrap().clear();
        out
    }

    /// A scrape: the containers read on a blocking thread, then rendered.
    pub async fn scrape(&self, inventory: Arc<Inventory>) -> Result<String, String> {
        let _one = self.scraping.lock().await;
        let found = tokio::task::spawn_blocking(move || inventory.list())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(self.render(found))
    }
}

/// What a request to the metrics address gets: `/metrics`, and the probes
/// a DaemonSet or a supervisor asks, `/healthz` (tidald answers) and
/// `/readyz` (its API socket takes connections and its state directory
/// reads).
async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    metrics: Arc<Metrics>,
    inventory: Arc<Inventory>,
    api: Arc<std::path::PathBuf>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let reply = |status: u16, kind: &str, body: String| {
        hyper::Response::builder()
            .status(status)
            .header("Content-Type", kind)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    let path = req.uri().path();
    if !["/metrics", "/healthz", "/readyz"].contains(&path) {
        return Ok(reply(
            404,
            "text/plain",
            "tidald serves /metrics, /healthz and /readyz\n".into(),
        ));
    }
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return Ok(reply(405, "text/plain", format!("GET {path}\n")));
    }
    Ok(match path {
        "/healthz" => reply(200, "text/plain", "ok\n".into()),
        "/readyz" => match ready(&api, inventory).await {
            Ok(()) => reply(200, "text/plain", "ready\n".into()),
            Err(problems) => reply(503, "text/plain", format!("not ready: {problems}\n")),
        },
        _ => match metrics.scrape(inventory).await {
            Ok(text) => reply(
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            ),
            Err(e) => reply(500, "text/plain", format!("reading containers: {e}\n")),
        },
    })
}

/// Whether tidald can serve its API: a connection to its socket (by path,
/// as a client makes it) and a read of its state directory.
async fn ready(api: &std::path::Path, inventory: Arc<Inventory>) -> Result<(), String> {
    let mut problems = Vec::new();
    let limit = std::time::Duration::from_secs(2);
    match tokio::time::timeout(limit, tokio::net::UnixStream::connect(api)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => problems.push(format!("API socket {}: {e}", api.display())),
        Err(_) => problems.push(format!(
            "API socket {}: no answer in {limit:?}",
            api.display()
        )),
    }
    match tokio::task::spawn_blocking(move || inventory.list_declared()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => problems.push(format!("state directory: {e}")),
        Err(e) => problems.push(format!("state directory: {e}")),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task
/// is dropped: one HTTP/1.1 exchange per connection, each on a task of its
/// own. `api` is the API socket that `/readyz` tries.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    inventory: Arc<Inventory>,
    api: std::path::PathBuf,
) {
    let api = Arc::new(api);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, inventory, api) = (metrics.clone(), inventory.clone(), api.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                answer(req, metrics.clone(), inventory.clone(), api.clone())
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .header_read_timeout(std::time::Duration::from_secs(5))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::declared::Declared;
    use crate::agent::node::{ContainerInfo, Limits, Usage};

    fn view(id: &str, status: &str) -> View {
        View {
            info: ContainerInfo {
                id: id.into(),
                namespace: "k8s.io".into(),
                pid: 1,
                status: status.into(),
                bundle: "/b".into(),
                limits: Limits {
                    cpu_quota_us: Some(50_000),
                    cpu_period_us: 100_000,
                    cpuset: String::new(),
                    memory_bytes: None,
                    ..Default::default()
                },
                usage: Usage {
                    cpu_ns: 1_500_000_000,
                    memory_bytes: 4096,
                    ..Default::default()
                },
            },
            declared: Declared::default(),
            last_revision: 0,
        }
    }

    #[test]
    fn containers_and_resizes_are_exposed() {
        let m = Metrics::new();
        let r = m.resizes();
        r.record("ok", "operator", 0.0002);
        r.record("ok", "policy", 0.003);
        r.record("FailedPrecondition", "trait:vertical-autoscaler", 0.0004);
        // A trait name only the caller knows is not a label of its own.
        r.record("ok", "trait:made-up", 0.0002);
        r.record("ok", "trait:made-up-too", 0.0002);
        let text = m.render(vec![view("web", "running"), view("old", "stopped")]);
        for line in [
            "tidal_container_cpu_usage_seconds_total{namespace=\"k8s.io\",container=\"web\"} 1.5",
            "tidal_container_cpu_limit_cores{namespace=\"k8s.io\",container=\"web\"} 0.5",
            "tidal_container_memory_usage_bytes{namespace=\"k8s.io\",container=\"web\"} 4096.0",
            "tidal_containers 1",
            "tidal_resizes_total{outcome=\"ok\",source=\"operator\"} 1",
            "tidal_resizes_total{outcome=\"ok\",source=\"policy\"} 1",
            "tidal_resizes_total{outcome=\"ok\",source=\"trait:other\"} 2",
            "tidal_resizes_total{outcome=\"FailedPrecondition\",source=\"trait:vertical-autoscaler\"} 1",
            "tidal_resize_seconds_bucket{le=\"0.0005\"} 4",
            "tidal_resize_seconds_bucket{le=\"0.005\"} 5",
            "tidal_resize_seconds_bucket{le=\"+Inf\"} 5",
            "tidal_resize_seconds_count 5",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(
            !text.contains("memory_limit_bytes{"),
            "unlimited memory has no sample:\n{text}"
        );
        assert!(!text.contains("container=\"old\""), "{text}");
        // The next scrape shows what it finds, not what the last one did.
        let text = m.render(vec![]);
        assert!(text.lines().any(|l| l == "tidal_containers 0"), "{text}");
    }

    #[test]
    fn the_policy_engine_s_decisions_costs_and_signals_are_exposed() {
        use crate::agent::policy::decide::Rule;
        use crate::agent::policy::summary::Summary;
        use crate::agent::policy::Key;
        use std::time::Duration;
        let m = Metrics::new();
        let p = m.policy();
        let key = |id: &str| Key {
            namespace: "k8s.io".into(),
            id: id.into(),
        };
        let record = |rule, outcome| Record {
            at: Duration::from_secs(1),
            key: key("batch"),
            rule,
            reason: String::new(),
            outcome,
        };
        Meter::record(
            &p,
            &record(Rule::ThrottleOffline, Done::Applied { revision: 1 }),
        );
        Meter::record(
            &p,
            &record(Rule::ThrottleOffline, Done::Applied { revision: 2 }),
        );
        Meter::record(&p, &record(Rule::GiveBackCpu, Done::DryRun));
        Meter::record(
            &p,
            &record(
                Rule::GiveBackCpu,
                Done::RolledBack {
                    revision: 3,
                    to: 2,
                    revision_now: 4,
                    why: String::new(),
                },
            ),
        );
        Meter::tick(&p, Duration::from_micros(300));
        Report::tick(
            &p,
            &Snapshot {
                window: Duration::from_secs(10),
                interval: Duration::from_secs(1),
                containers: vec![
                    Summary {
                        key: key("web"),
                        probe_p95: Some(0.25),
                        throttled: Some(0.0),
                        objective: Some(0.1),
                        ..Default::default()
                    },
                    Summary {
                        key: key("batch"),
                        throttled: Some(0.5),
                        ..Default::default()
                    },
                ],
                cost: Duration::from_micros(800),
                probe_failures: [("netns", 2), ("timeout", 1)].into_iter().collect(),
            },
        );
        let text = m.render(vec![]);
        for line in [
            "tidal_policy_decisions_total{rule=\"throttle-offline\",outcome=\"applied\"} 2",
            "tidal_policy_decisions_total{rule=\"give-back-cpu\",outcome=\"dry-run\"} 1",
            "tidal_policy_decisions_total{rule=\"give-back-cpu\",outcome=\"rolled-back\"} 1",
            "tidal_policy_rollbacks_total{rule=\"give-back-cpu\"} 1",
            "tidal_policy_tick_seconds_bucket{le=\"0.00025\"} 0",
            "tidal_policy_tick_seconds_bucket{le=\"0.0005\"} 1",
            "tidal_policy_tick_seconds_count 1",
            "tidal_policy_collect_seconds_bucket{le=\"0.0005\"} 0",
            "tidal_policy_collect_seconds_bucket{le=\"0.001\"} 1",
            "tidal_policy_probe_latency_seconds{namespace=\"k8s.io\",container=\"web\"} 0.25",
            "tidal_policy_cpu_throttled_ratio{namespace=\"k8s.io\",container=\"web\"} 0.0",
            "tidal_policy_cpu_throttled_ratio{namespace=\"k8s.io\",container=\"batch\"} 0.5",
            "tidal_policy_latency_objective_seconds{namespace=\"k8s.io\",container=\"web\"} 0.1",
            "tidal_policy_probe_failures_total{reason=\"netns\"} 2",
            "tidal_policy_probe_failures_total{reason=\"timeout\"} 1",
            "tidal_policy_probe_failures_total{reason=\"connect\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(
            !text.contains("probe_latency_seconds{namespace=\"k8s.io\",container=\"batch\"}"),
            "no probe, no sample:\n{text}"
        );
        assert!(
            !text.contains("objective_seconds{namespace=\"k8s.io\",container=\"batch\"}"),
            "no objective, no sample:\n{text}"
        );
        // A container gone at the next tick is gone from the series.
        Report::tick(&p, &Snapshot::default());
        let text = m.render(vec![]);
        assert!(!text.contains("container=\"web\""), "{text}");
        assert!(
            text.contains("tidal_policy_collect_seconds_count 2"),
            "{text}"
        );
        // Counted over ticks, never reset.
        Report::tick(
            &p,
            &Snapshot {
                probe_failures: [("netns", 1)].into_iter().collect(),
                ..Snapshot::default()
            },
        );
        let text = m.render(vec![]);
        assert!(
            text.lines()
                .any(|l| l == "tidal_policy_probe_failures_total{reason=\"netns\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn the_engine_s_mode_and_pause_are_exposed_once_it_tells_them() {
        let m = Metrics::new();
        let text = m.render(vec![]);
        assert!(
            !text.contains("tidal_policy_paused")
                && !text.contains("tidal_policy_mode")
                && !text.contains("tidal_policy_rollbacks_total{"),
            "no engine, no series:\n{text}"
        );
        let p = m.policy();
        let has = |text: &str, line: &str| text.lines().any(|l| l == line);
        Meter::state(&p, Mode::Enforce, false);
        let text = m.render(vec![]);
        for line in [
            "# TYPE tidal_policy_paused gauge",
            "tidal_policy_paused 0",
            "tidal_policy_mode{mode=\"enforce\"} 1",
            "tidal_policy_mode{mode=\"dry-run\"} 0",
            "tidal_policy_rollbacks_total{rule=\"throttle-offline\"} 0",
            "tidal_policy_rollbacks_total{rule=\"memory-squeeze\"} 0",
        ] {
            assert!(has(&text, line), "no {line:?} in:\n{text}");
        }
        Meter::state(&p, Mode::DryRun, true);
        let text = m.render(vec![]);
        for line in [
            "tidal_policy_paused 1",
            "tidal_policy_mode{mode=\"enforce\"} 0",
            "tidal_policy_mode{mode=\"dry-run\"} 1",
        ] {
            assert!(has(&text, line), "no {line:?} in:\n{text}");
        }
    }
}

//! The policy engine's Prometheus series (names and meanings in
//! docs/metrics.md): its decisions and rollbacks by rule, the cost of its
//! ticks, its probes' failures, the per-container signals of its last tick,
//! and its mode and pause. The engine records into them as it goes
//! (`Meter`, `Report`); tidald's `/metrics` registers them with the rest, and
//! a scrape never asks the engine anything.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::decide::Rule;
use super::engine::Meter;
use super::execute::{Outcome as Done, Record};
use super::observe::{Report, Snapshot};
use super::probe::ProbeError;
use super::rules::Mode;

/// Upper bounds (seconds) of the policy engine's tick histograms.
const TICK_BUCKETS: [f64; 9] = [
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

impl PolicyMetrics {
    /// The series, registered in `registry`.
    pub fn registered(registry: &mut Registry) -> PolicyMetrics {
        let m = PolicyMetrics {
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
            m.decisions.clone(),
        );
        registry.register(
            "tidal_policy_rollbacks",
            "Changes of the policy engine it rolled back (they did not help), by rule",
            m.rollbacks.clone(),
        );
        registry.register(
            "tidal_policy_collect_seconds",
            "Time the policy engine's data side took per tick (listing, reading, profiling)",
            m.collect.clone(),
        );
        registry.register(
            "tidal_policy_tick_seconds",
            "Time one tick of the policy engine's loop took (collect, decide, apply)",
            m.loop_seconds.clone(),
        );
        registry.register(
            "tidal_policy_probe_failures",
            "Probes of online pods that gave no latency, by reason (netns: tidald could not enter the pod's network namespace; connect, timeout, http: the service's answer; thread)",
            m.probe_failures.clone(),
        );
        registry.register_collector(Box::new(m.signals.clone()));
        registry.register_collector(Box::new(m.state.clone()));
        m
    }
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

/// The labels of a container's series: the engine's signals here, and the
/// containers' limits and usage a scrape reads (`agent::metrics`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContainerLabels {
    pub namespace: String,
    pub container: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition of the series registered alone.
    fn render(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn the_policy_engine_s_decisions_costs_and_signals_are_exposed() {
        use crate::agent::policy::decide::Rule;
        use crate::agent::policy::summary::Summary;
        use crate::agent::policy::Key;
        use std::time::Duration;
        let mut registry = Registry::default();
        let p = PolicyMetrics::registered(&mut registry);
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
        let text = render(&registry);
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
        let text = render(&registry);
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
        let text = render(&registry);
        assert!(
            text.lines()
                .any(|l| l == "tidal_policy_probe_failures_total{reason=\"netns\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn the_engine_s_mode_and_pause_are_exposed_once_it_tells_them() {
        let mut registry = Registry::default();
        let p = PolicyMetrics::registered(&mut registry);
        let text = render(&registry);
        assert!(
            !text.contains("tidal_policy_paused")
                && !text.contains("tidal_policy_mode")
                && !text.contains("tidal_policy_rollbacks_total{"),
            "no engine, no series:\n{text}"
        );
        let has = |text: &str, line: &str| text.lines().any(|l| l == line);
        Meter::state(&p, Mode::Enforce, false);
        let text = render(&registry);
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
        let text = render(&registry);
        for line in [
            "tidal_policy_paused 1",
            "tidal_policy_mode{mode=\"enforce\"} 0",
            "tidal_policy_mode{mode=\"dry-run\"} 1",
        ] {
            assert!(has(&text, line), "no {line:?} in:\n{text}");
        }
    }
}

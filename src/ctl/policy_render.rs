//! What `tidalctl policy ...` and `tidalctl top` print: the engine's
//! status, the decision log, a profile and the top table, as text and json.

use super::render::columns;
use crate::proto::policy_pb as pb;
use crate::quantity::format_memory;

/// Milliseconds as operators read a duration: 250ms, 1s, 1.5s, 5m.
pub fn span(ms: u64) -> String {
    match ms {
        m if m < 1000 => format!("{m}ms"),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        m => format!(
            "{}s",
            format!("{:.3}", m as f64 / 1000.0).trim_end_matches('0')
        ),
    }
}

fn mode_name(m: i32) -> &'static str {
    match pb::Mode::try_from(m) {
        Ok(pb::Mode::Enforce) => "enforce",
        Ok(pb::Mode::DryRun) => "dry-run",
        _ => "unknown",
    }
}

fn key(k: &Option<pb::ContainerKey>) -> String {
    k.as_ref()
        .map(|k| format!("{}/{}", k.namespace, k.id))
        .unwrap_or_default()
}

/// What `pause`, `resume` and `mode` print: the engine's state after them.
pub fn state_line(s: &pb::StatusResponse) -> String {
    format!(
        "policy engine: {} mode, {}",
        mode_name(s.mode),
        if s.paused { "paused" } else { "deciding" }
    )
}

/// What `reload` prints: where the rules now running came from, which
/// they are, and the engine's state.
pub fn reloaded_line(s: &pb::StatusResponse) -> String {
    let rules = if s.rules.is_empty() {
        "no rules enabled".to_string()
    } else {
        s.rules.join(", ")
    };
    format!(
        "policy engine: rules reloaded from {} ({rules}; every {}); {} mode, {}",
        s.rules_from,
        span(s.interval_ms),
        mode_name(s.mode),
        if s.paused { "paused" } else { "deciding" }
    )
}

/// `policy status` as text.
pub fn status_text(s: &pb::StatusResponse) -> String {
    let none = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join("; ")
        }
    };
    let overlays: Vec<String> = s
        .overlays
        .iter()
        .map(|o| {
            let what: Vec<&str> = [(o.cpu, "cpu"), (o.memory, "memory")]
                .into_iter()
                .filter_map(|(on, n)| on.then_some(n))
                .collect();
            let revs: Vec<String> = o.revisions.iter().map(u64::to_string).collect();
            format!(
                "{} {}{}{}",
                key(&o.container),
                what.join("+"),
                if revs.is_empty() {
                    String::new()
                } else {
                    format!(" (revisions {})", revs.join(","))
                },
                if o.adopted { " (adopted)" } else { "" }
            )
        })
        .collect();
    let windows: Vec<String> = s.windows_ms.iter().map(|w| span(*w)).collect();
    let mut out = format!(
        "mode:       {}{}\n",
        mode_name(s.mode),
        if s.paused { " (paused)" } else { "" }
    );
    out += &format!("rules:      {} ({})\n", s.rules_from, s.rules.join(", "));
    out += &format!(
        "every:      {}; triggers on p{:.0} over {}; profiles over {}\n",
        span(s.interval_ms),
        s.quantile * 100.0,
        span(s.trigger_window_ms),
        windows.join(", ")
    );
    if !s.reload_error.is_empty() {
        out += &format!(
            "reload:     refused, the rules above still run: {}\n",
            s.reload_error
        );
    }
    out += &format!(
        "node:       {}\n",
        if s.healthy {
            "healthy".to_string()
        } else {
            format!("left alone: {}", s.trouble)
        }
    );
    out += &format!("suffering:  {}\n", none(&s.suffering));
    out += &format!("overlays:   {}\n", none(&overlays));
    out += &format!(
        "pending:    {} change(s) awaiting their verdict\n",
        s.pending
    );
    out += &format!("ticks:      {}\n", s.ticks);
    if s.last.is_empty() {
        out += "decisions:  none yet\n";
    } else {
        out += "last decisions:\n";
        out += &decisions_table(&s.last);
    }
    out
}

pub fn status_json(s: &pb::StatusResponse) -> serde_json::Value {
    serde_json::json!({
        "mode": mode_name(s.mode), "paused": s.paused, "rules_from": s.rules_from,
        "rules": s.rules, "interval_ms": s.interval_ms, "reload_error": s.reload_error,
        "healthy": s.healthy, "trouble": s.trouble, "suffering": s.suffering,
        "overlays": s.overlays.iter().map(|o| serde_json::json!({
            "container": key(&o.container), "cpu": o.cpu, "memory": o.memory,
            "revisions": o.revisions, "adopted": o.adopted,
        })).collect::<Vec<_>>(),
        "pending": s.pending, "ticks": s.ticks,
        "trigger_window_ms": s.trigger_window_ms, "quantile": s.quantile,
        "windows_ms": s.windows_ms,
        "last": s.last.iter().map(decision_json).collect::<Vec<_>>(),
    })
}

/// The engine's clock, as seconds since it started.
fn at(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

fn outcome(d: &pb::Decision) -> String {
    if d.detail.is_empty() {
        d.outcome.clone()
    } else {
        format!("{} ({})", d.outcome, d.detail)
    }
}

pub fn decisions_table(log: &[pb::Decision]) -> String {
    let rows: Vec<Vec<String>> = log
        .iter()
        .map(|d| {
            vec![
                at(d.at_ms),
                key(&d.container),
                d.rule.clone(),
                outcome(d),
                if d.revision == 0 {
                    "-".into()
                } else {
                    d.revision.to_string()
                },
                d.reason.clone(),
            ]
        })
        .collect();
    columns(
        &["AT", "CONTAINER", "RULE", "OUTCOME", "REV", "REASON"],
        &[true, false, false, false, true, false],
        &rows,
    )
}

/// A decision as `decisions -f` prints it, one a line.
pub fn decision_line(d: &pb::Decision) -> String {
    let rev = if d.revision == 0 {
        String::new()
    } else {
        format!(" revision {}", d.revision)
    };
    format!(
        "{} {} {}: {}{rev}: {}",
        at(d.at_ms),
        key(&d.container),
        d.rule,
        outcome(d),
        d.reason
    )
}

pub fn decision_json(d: &pb::Decision) -> serde_json::Value {
    serde_json::json!({
        "at_ms": d.at_ms, "container": key(&d.container), "rule": d.rule,
        "outcome": d.outcome, "revision": d.revision, "detail": d.detail, "reason": d.reason,
    })
}

/// A value in a metric's unit.
fn value(metric: &str, v: f64) -> String {
    match metric {
        "cpu_usage" => format!("{v:.3}"),
        "cpu_throttled" => format!("{:.1}%", v * 100.0),
        "memory_working_set" | "memory_usage" => format_memory(v.max(0.0) as u64),
        "probe_latency" => format!("{:.1}ms", v * 1000.0),
        _ => format!("{v:.1}"),
    }
}

pub fn profile_table(p: &pb::ProfileResponse) -> String {
    let mut rows = Vec::new();
    for m in &p.metrics {
        for w in &m.windows {
            let q = w.percentiles.unwrap_or_default();
            let cell = |v: f64| {
                if q.samples == 0 {
                    "-".to_string()
                } else {
                    value(&m.metric, v)
                }
            };
            rows.push(vec![
                m.metric.clone(),
                span(w.window_ms),
                q.samples.to_string(),
                cell(q.p10),
                cell(q.p50),
                cell(q.p90),
                cell(q.p95),
                cell(q.p99),
                w.predicted
                    .map(|v| value(&m.metric, v))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    let title = format!(
        "{}: predictions {} ahead\n",
        key(&p.container),
        span(p.horizon_ms)
    );
    title
        + &columns(
            &[
                "METRIC",
                "WINDOW",
                "SAMPLES",
                "P10",
                "P50",
                "P90",
                "P95",
                "P99",
                "PREDICTED",
            ],
            &[false, true, true, true, true, true, true, true, true],
            &rows,
        )
}

pub fn profile_json(p: &pb::ProfileResponse) -> serde_json::Value {
    serde_json::json!({
        "container": key(&p.container), "horizon_ms": p.horizon_ms,
        "metrics": p.metrics.iter().map(|m| serde_json::json!({
            "metric": m.metric,
            "windows": m.windows.iter().map(|w| {
                let q = w.percentiles.unwrap_or_default();
                serde_json::json!({
                    "window_ms": w.window_ms, "samples": q.samples,
                    "p10": q.p10, "p50": q.p50, "p90": q.p90, "p95": q.p95, "p99": q.p99,
                    "predicted": w.predicted,
                })
            }).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(id: &str) -> Option<pb::ContainerKey> {
        Some(pb::ContainerKey {
            namespace: "k8s.io".into(),
            id: id.into(),
        })
    }

    fn applied() -> pb::Decision {
        pb::Decision {
            at_ms: 10_750,
            container: k("batch"),
            rule: "throttle-offline".into(),
            reason:
                "throttle-offline: cpu 2000m -> 1500m: k8s.io/web probe latency (s) 2.000 > 0.250"
                    .into(),
            outcome: "applied".into(),
            revision: 1,
            detail: String::new(),
        }
    }

    fn status() -> pb::StatusResponse {
        pb::StatusResponse {
            mode: pb::Mode::DryRun.into(),
            paused: true,
            rules_from: "/etc/tidal/policy.yaml".into(),
            rules: vec!["throttle-offline".into(), "give-back".into()],
            interval_ms: 250,
            healthy: true,
            suffering: vec!["k8s.io/web probe latency (s) 2.000 > 0.250".into()],
            overlays: vec![pb::Overlay {
                container: k("batch"),
                cpu: true,
                memory: false,
                revisions: vec![1, 2],
                adopted: false,
            }],
            pending: 1,
            ticks: 42,
            last: vec![applied()],
            trigger_window_ms: 1000,
            quantile: 0.1,
            windows_ms: vec![1000, 10_000, 30_000, 300_000],
            ..Default::default()
        }
    }

    #[test]
    fn spans_read_as_the_policy_file_writes_them() {
        assert_eq!(span(250), "250ms");
        assert_eq!(span(1000), "1s");
        assert_eq!(span(1500), "1.5s");
        assert_eq!(span(300_000), "5m");
    }

    #[test]
    fn the_status_says_what_the_engine_is_doing() {
        let text = status_text(&status());
        for want in [
            "mode:       dry-run (paused)\n",
            "rules:      /etc/tidal/policy.yaml (throttle-offline, give-back)\n",
            "every:      250ms; triggers on p10 over 1s; profiles over 1s, 10s, 30s, 5m\n",
            "node:       healthy\n",
            "suffering:  k8s.io/web probe latency (s) 2.000 > 0.250\n",
            "overlays:   k8s.io/batch cpu (revisions 1,2)\n",
            "pending:    1 change(s) awaiting their verdict\n",
            "last decisions:\n",
        ] {
            assert!(text.contains(want), "{want:?} missing:\n{text}");
        }
        assert!(!text.contains("reload:"), "{text}");
        let row = text.lines().last().unwrap();
        let cells: Vec<&str> = row.split_whitespace().take(5).collect();
        assert_eq!(
            cells,
            [
                "10.750s",
                "k8s.io/batch",
                "throttle-offline",
                "applied",
                "1"
            ]
        );
        let mut s = status();
        s.healthy = false;
        s.trouble = "the state directory has 1% free".into();
        s.reload_error = "/etc/tidal/policy.yaml:3: windows.trigger 1ms is below 100ms".into();
        s.suffering.clear();
        s.overlays.clear();
        s.last.clear();
        let text = status_text(&s);
        for want in [
            "node:       left alone: the state directory has 1% free\n",
            "reload:     refused, the rules above still run: /etc/tidal/policy.yaml:3:",
            "suffering:  none\n",
            "overlays:   none\n",
            "decisions:  none yet\n",
        ] {
            assert!(text.contains(want), "{want:?} missing:\n{text}");
        }
        let j = status_json(&status());
        assert_eq!(j["mode"], "dry-run");
        assert_eq!(j["overlays"][0]["container"], "k8s.io/batch");
        assert_eq!(j["last"][0]["revision"], 1);
        assert_eq!(state_line(&status()), "policy engine: dry-run mode, paused");
        assert_eq!(
            reloaded_line(&status()),
            "policy engine: rules reloaded from /etc/tidal/policy.yaml \
             (throttle-offline, give-back; every 250ms); dry-run mode, paused"
        );
    }

    #[test]
    fn decisions_show_outcome_details_and_revisions() {
        let mut rolled = applied();
        rolled.outcome = "rolled-back".into();
        rolled.detail =
            "k8s.io/web suffers again; restored as after revision 3, as revision 5".into();
        rolled.revision = 4;
        let mut dry = applied();
        dry.outcome = "dry-run".into();
        dry.revision = 0;
        let table = decisions_table(&[applied(), rolled.clone(), dry.clone()]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("     AT  CONTAINER"), "{table}");
        assert!(
            lines[2].contains("rolled-back (k8s.io/web suffers again;"),
            "{table}"
        );
        assert!(lines[3].contains(" dry-run "), "{table}");
        assert_eq!(
            decision_line(&rolled),
            "10.750s k8s.io/batch throttle-offline: rolled-back (k8s.io/web suffers again; restored as after revision 3, as revision 5) revision 4: throttle-offline: cpu 2000m -> 1500m: k8s.io/web probe latency (s) 2.000 > 0.250"
        );
        assert_eq!(
            decision_line(&dry),
            "10.750s k8s.io/batch throttle-offline: dry-run: throttle-offline: cpu 2000m -> 1500m: k8s.io/web probe latency (s) 2.000 > 0.250"
        );
        assert_eq!(decision_json(&rolled)["outcome"], "rolled-back");
    }

    #[test]
    fn a_profile_shows_percentiles_in_the_metric_s_unit() {
        let p = pb::ProfileResponse {
            container: k("web"),
            horizon_ms: 5000,
            metrics: vec![
                pb::MetricProfile {
                    metric: "probe_latency".into(),
                    windows: vec![pb::Window {
                        window_ms: 10_000,
                        percentiles: Some(pb::Percentiles {
                            p10: 0.01,
                            p50: 0.02,
                            p90: 0.03,
                            p95: 0.04,
                            p99: 0.05,
                            samples: 10,
                        }),
                        predicted: Some(0.06),
                    }],
                },
                pb::MetricProfile {
                    metric: "cpu_pressure".into(),
                    windows: vec![pb::Window {
                        window_ms: 10_000,
                        percentiles: Some(pb::Percentiles::default()),
                        predicted: None,
                    }],
                },
            ],
        };
        let text = profile_table(&p);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "k8s.io/web: predictions 5s ahead");
        let cells = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            cells(lines[2]),
            [
                "probe_latency",
                "10s",
                "10",
                "10.0ms",
                "20.0ms",
                "30.0ms",
                "40.0ms",
                "50.0ms",
                "60.0ms"
            ]
        );
        assert_eq!(
            cells(lines[3]),
            ["cpu_pressure", "10s", "0", "-", "-", "-", "-", "-", "-"]
        );
        assert_eq!(profile_json(&p)["metrics"][0]["windows"][0]["p95"], 0.04);
    }
}

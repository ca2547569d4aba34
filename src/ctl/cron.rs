//! `tidalctl cron`: the cron-vertical-scaler's jobs on each running
//! container that carries the trait, from tidald's trait API.

use std::path::Path;

use super::cli::Output;
use super::render::columns;
use super::CtlError;
use crate::proto::traits_pb::{CronContainer, CronJob, CronStatusRequest};

/// `tidalctl cron [-o json] [--no-trunc]`.
pub(super) async fn cron(socket: &Path, output: Output, no_trunc: bool) -> Result<(), CtlError> {
    let mut api = crate::proto::connect_traits(socket)
        .await
        .map_err(|e| CtlError::connect(socket, &e))?;
    let all = api
        .cron_status(CronStatusRequest {})
        .await
        .map_err(|s| CtlError::Api(s.message().to_string()))?
        .into_inner()
        .containers;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&all.iter().map(container_json).collect::<Vec<_>>())
                .unwrap_or_default()
        ),
        Output::Table => print!("{}", cron_table(&all, now, no_trunc)),
    }
    Ok(())
}

fn container_json(c: &CronContainer) -> serde_json::Value {
    serde_json::json!({
        "namespace": c.namespace,
        "id": c.id,
        "pod": c.pod,
        "name": c.name,
        "problem": c.problem,
        "jobs": c.jobs.iter().map(|j| serde_json::json!({
            "name": j.name,
            "schedule": j.schedule,
            "timeZone": j.time_zone,
            "cpuMillis": j.cpu_millis,
            "memoryBytes": j.memory_bytes,
            "durationSeconds": j.duration_seconds,
            "lastFiringUnix": j.last_firing_unix,
            "nextFiringUnix": j.next_firing_unix,
            "inEffect": j.in_effect,
            "actedUnix": j.acted_unix,
            "outcome": j.outcome,
            "failed": j.failed,
        })).collect::<Vec<_>>(),
    })
}

/// One row per job: the container, the job, what it sets, its last and
/// next firing (relative to `now`), and how the last action went.
pub fn cron_table(all: &[CronContainer], now: i64, no_trunc: bool) -> String {
    let mut rows = Vec::new();
    for c in all {
        let id = if no_trunc {
            c.id.clone()
        } else {
            c.id.chars().take(12).collect()
        };
        let who = if c.pod.is_empty() {
            "-".to_string()
        } else {
            format!("{}/{}", c.pod, c.name)
        };
        if !c.problem.is_empty() {
            let dash = || "-".to_string();
            rows.push(vec![
                id,
                who,
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
                format!("not run: {}", c.problem),
            ]);
            continue;
        }
        for j in &c.jobs {
            rows.push(vec![
                id.clone(),
                who.clone(),
                j.name.clone(),
                schedule(j),
                sets(j),
                when(j.last_firing_unix, now),
                when(j.next_firing_unix, now),
                outcome(j),
            ]);
        }
    }
    columns(
        &[
            "CONTAINER",
            "POD/NAME",
            "JOB",
            "SCHEDULE",
            "SETS",
            "LAST",
            "NEXT",
            "OUTCOME",
        ],
        &[false; 8],
        &rows,
    )
}

fn schedule(j: &CronJob) -> String {
    if j.time_zone.is_empty() {
        j.schedule.clone()
    } else {
        format!("{} ({})", j.schedule, j.time_zone)
    }
}

/// "cpu 500m, memory 1Gi for 2h".
fn sets(j: &CronJob) -> String {
    let mut parts = Vec::new();
    if let Some(m) = j.cpu_millis {
        parts.push(format!("cpu {m}m"));
    }
    if let Some(b) = j.memory_bytes {
        parts.push(format!("memory {}", crate::quantity::format_memory(b)));
    }
    let mut s = parts.join(", ");
    if j.duration_seconds > 0 {
        s.push_str(&format!(" for {}", span(j.duration_seconds as i64)));
    }
    s
}

fn outcome(j: &CronJob) -> String {
    let mut s = if j.outcome.is_empty() {
        "-".to_string()
    } else if j.failed {
        format!("failed: {}", j.outcome)
    } else {
        j.outcome.clone()
    };
    if !j.in_effect.is_empty() {
        s.push_str(&format!(" [holds {}]", j.in_effect.join(", ")));
    }
    s
}

/// A Unix time relative to `now`: "12s ago", "in 3h5m"; "-" for none.
fn when(t: i64, now: i64) -> String {
    if t == 0 {
        "-".to_string()
    } else if t <= now {
        format!("{} ago", span(now - t))
    } else {
        format!("in {}", span(t - now))
    }
}

/// Seconds as the span format writes them, to their two largest units:
/// "0s", "1m30s", "3h5m", "1d2h".
fn span(secs: i64) -> String {
    let mut rest = secs.max(0);
    let mut parts = Vec::new();
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        let v = rest / n;
        rest %= n;
        if v > 0 && parts.len() < 2 {
            parts.push(format!("{v}{unit}"));
        }
    }
    if parts.is_empty() {
        "0s".to_string()
    } else {
        parts.concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_show_their_two_largest_units() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(59), "59s");
        assert_eq!(span(90), "1m30s");
        assert_eq!(span(3600), "1h");
        assert_eq!(span(3 * 3600 + 5 * 60 + 7), "3h5m");
        assert_eq!(span(86_400 + 2 * 3600), "1d2h");
        assert_eq!(when(0, 100), "-");
        assert_eq!(when(88, 100), "12s ago");
        assert_eq!(when(100, 100), "0s ago");
        assert_eq!(when(190, 100), "in 1m30s");
    }

    #[test]
    fn a_row_per_job_and_a_row_for_an_unusable_trait() {
        let c = CronContainer {
            namespace: "k8s.io".into(),
            id: "0123456789abcdef".into(),
            pod: "default/web".into(),
            name: "app".into(),
            jobs: vec![CronJob {
                name: "morning".into(),
                schedule: "0 8 * * 1-5".into(),
                time_zone: "Asia/Shanghai".into(),
                cpu_millis: Some(2000),
                memory_bytes: Some(1 << 30),
                duration_seconds: 7200,
                last_firing_unix: 1000,
                next_firing_unix: 1000 + 86_400,
                in_effect: vec!["cpu".into(), "memory".into()],
                acted_unix: 1000,
                outcome: "cpu 2000m: revision 4".into(),
                failed: false,
            }],
            problem: String::new(),
        };
        let bad = CronContainer {
            id: "fedcba9876543210".into(),
            jobs: vec![],
            problem:
                "annotation trait.tidal.dev/cron-vertical-scaler: jobs must name at least one job"
                    .into(),
            ..c.clone()
        };
        let t = cron_table(&[c, bad], 1010, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("CONTAINER"), "{t}");
        for want in [
            "0123456789ab ",
            "default/web/app",
            "0 8 * * 1-5 (Asia/Shanghai)",
            "cpu 2000m, memory 1Gi for 2h",
            "10s ago",
            "in 23h59m",
            "cpu 2000m: revision 4 [holds cpu, memory]",
        ] {
            assert!(lines[1].contains(want), "{want:?} in {t}");
        }
        assert!(
            lines[2].contains("not run: annotation trait.tidal.dev/cron-vertical-scaler"),
            "{t}"
        );
    }
}

//! `tidalctl top`: each container's live limits and the policy engine's
//! profile of it (CPU p50/p95, throttling, working set, probe latency
//! p95), refreshed in place every engine interval; once as json or with
//! `--once`.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use super::cli::Output;
use super::policy::{connect, status_err};
use super::policy_render::span;
use super::render::{columns, SHORT_ID};
use super::CtlError;
use crate::proto::policy_pb as pb;
use crate::quantity::format_memory;

/// `tidalctl top`: the table every engine interval, in place (the screen
/// cleared and the cursor home, as top does); once with `once` or json.
pub(super) async fn top(
    socket: &Path,
    output: Output,
    once: bool,
    full_ids: bool,
) -> Result<(), CtlError> {
    let mut api = connect(socket).await?;
    loop {
        let t = api
            .top(pb::TopRequest {})
            .await
            .map_err(status_err)?
            .into_inner();
        match output {
            Output::Json => {
                let rows: Vec<serde_json::Value> = t.containers.iter().map(top_json).collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                );
                return Ok(());
            }
            Output::Table if once => {
                print!("{}", top_table(&t, full_ids));
                return Ok(());
            }
            Output::Table => {
                print!("\x1b[H\x1b[2J{}", top_table(&t, full_ids));
                let _ = std::io::stdout().flush();
            }
        }
        let every = Duration::from_millis(t.interval_ms).max(Duration::from_millis(250));
        tokio::time::sleep(every).await;
    }
}

fn or_dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}

/// `tidalctl top`'s table.
pub fn top_table(t: &pb::TopResponse, full_ids: bool) -> String {
    let rows: Vec<Vec<String>> = t
        .containers
        .iter()
        .map(|c| {
            let k = c.container.clone().unwrap_or_default();
            let id = if full_ids {
                k.id.as_str()
            } else {
                k.id.get(..SHORT_ID).unwrap_or(&k.id)
            };
            let name = match (c.pod.is_empty(), c.name.is_empty()) {
                (_, true) => "-".to_string(),
                (true, false) => c.name.clone(),
                (false, false) => format!("{}/{}", c.pod, c.name),
            };
            vec![
                id.to_string(),
                name,
                if c.qos.is_empty() {
                    "-".into()
                } else {
                    c.qos.clone()
                },
                c.cpu_limit_millis
                    .map_or_else(|| "-".into(), |m| format!("{m}m")),
                c.memory_limit_bytes
                    .map_or_else(|| "-".into(), format_memory),
                recommended(c),
                or_dash(c.cpu_p50_cores.map(|v| format!("{v:.3}"))),
                or_dash(c.cpu_p95_cores.map(|v| format!("{v:.3}"))),
                or_dash(c.throttled_share.map(|v| format!("{:.0}%", v * 100.0))),
                or_dash(
                    c.working_set_bytes
                        .map(|v| format_memory(v.max(0.0) as u64)),
                ),
                or_dash(c.probe_p95_seconds.map(|v| format!("{:.1}ms", v * 1000.0))),
                if c.overlays.is_empty() {
                    "-".into()
                } else {
                    c.overlays.join(",")
                },
            ]
        })
        .collect();
    let title = format!(
        "tidal top: {} container(s); CPU in cores, percentiles over the last {}, every {}\n",
        t.containers.len(),
        span(t.window_ms),
        span(t.interval_ms)
    );
    title
        + &columns(
            &[
                "ID",
                "NAME",
                "QOS",
                "CPU-LIM",
                "MEM-LIM",
                "REC",
                "CPU-P50",
                "CPU-P95",
                "THROTTLED",
                "WORKSET",
                "PROBE-P95",
                "OVERLAY",
            ],
            &[
                false, false, false, true, true, true, true, true, true, true, true, false,
            ],
            &rows,
        )
}

/// The row's recommendation as `ps` shows it.
fn recommended(c: &pb::TopRow) -> String {
    super::render::recommendation(c.recommended_cpu_millis, c.recommended_memory_bytes)
}

pub fn top_json(c: &pb::TopRow) -> serde_json::Value {
    let k = c.container.clone().unwrap_or_default();
    serde_json::json!({
        "id": k.id, "namespace": k.namespace, "pod": c.pod, "name": c.name, "qos": c.qos,
        "cpu_limit_millis": c.cpu_limit_millis, "memory_limit_bytes": c.memory_limit_bytes,
        "cpu_p50_cores": c.cpu_p50_cores, "cpu_p95_cores": c.cpu_p95_cores,
        "throttled_share": c.throttled_share, "working_set_bytes": c.working_set_bytes,
        "probe_p95_seconds": c.probe_p95_seconds, "overlays": c.overlays,
        "recommended_cpu_millis": c.recommended_cpu_millis,
        "recommended_memory_bytes": c.recommended_memory_bytes,
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

    #[test]
    fn top_shows_each_container_s_limits_and_profile() {
        let t = pb::TopResponse {
            window_ms: 10_000,
            interval_ms: 1000,
            containers: vec![
                pb::TopRow {
                    container: k("0123456789abcdef0123"),
                    pod: "shop/web-7d4b".into(),
                    name: "svc".into(),
                    qos: "online".into(),
                    cpu_limit_millis: Some(1000),
                    memory_limit_bytes: Some(256 << 20),
                    cpu_p50_cores: Some(0.5123),
                    cpu_p95_cores: Some(0.9),
                    throttled_share: Some(0.125),
                    working_set_bytes: Some((100 << 20) as f64),
                    probe_p95_seconds: Some(0.0123),
                    recommended_cpu_millis: Some(600),
                    recommended_memory_bytes: Some(200 << 20),
                    overlays: vec![],
                },
                pb::TopRow {
                    container: k("batch"),
                    qos: "offline".into(),
                    cpu_limit_millis: Some(1500),
                    overlays: vec!["policy".into()],
                    ..Default::default()
                },
            ],
        };
        let text = top_table(&t, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "tidal top: 2 container(s); CPU in cores, percentiles over the last 10s, every 1s"
        );
        let cells = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            cells(lines[1]),
            [
                "ID",
                "NAME",
                "QOS",
                "CPU-LIM",
                "MEM-LIM",
                "REC",
                "CPU-P50",
                "CPU-P95",
                "THROTTLED",
                "WORKSET",
                "PROBE-P95",
                "OVERLAY"
            ]
        );
        assert_eq!(
            cells(lines[2]),
            [
                "0123456789ab",
                "shop/web-7d4b/svc",
                "online",
                "1000m",
                "256Mi",
                "600m/200Mi",
                "0.512",
                "0.900",
                "12%",
                "100Mi",
                "12.3ms",
                "-"
            ]
        );
        assert_eq!(
            cells(lines[3]),
            ["batch", "-", "offline", "1500m", "-", "-", "-", "-", "-", "-", "-", "policy"]
        );
        assert!(top_table(&t, true).contains("0123456789abcdef0123"));
        let j = top_json(&t.containers[0]);
        assert_eq!(j["id"], "0123456789abcdef0123");
        assert_eq!(j["cpu_p95_cores"], 0.9);
        assert_eq!(j["recommended_cpu_millis"], 600);
        assert_eq!(
            top_json(&t.containers[1])["probe_p95_seconds"],
            serde_json::Value::Null
        );
    }
}

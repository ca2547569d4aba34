//! Container stats: CPU and memory of a busy container, and their listing.

use std::time::Duration;

use tidal_integration::cri::v1;
use tidal_integration::suite::{Case, Ctx};

pub(crate) const CASES: &[Case] = cases![stats,];

async fn stats(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            c.command = vec![
                "sh".into(),
                "-c".into(),
                "x=$(head -c 4000000 /dev/zero | tr '\\0' a); while true; do :; done".into(),
            ]
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = ctx
        .rt
        .clone()
        .container_stats(v1::ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("ContainerStats: {e}"))
        .into_inner()
        .stats
        .expect("no stats");
    let cpu = s
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(
        cpu > 300_000_000,
        "a busy container used {cpu} ns of CPU in 1.5 s"
    );
    let ws = s
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(ws > 1_000_000, "working set {ws} bytes");
    let all = ctx
        .rt
        .clone()
        .list_container_stats(v1::ListContainerStatsRequest {
            filter: Some(v1::ContainerStatsFilter {
                id: id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("ListContainerStats: {e}"))
        .into_inner()
        .stats;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].attributes.as_ref().unwrap().id, id);
}

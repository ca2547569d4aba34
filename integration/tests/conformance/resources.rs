//! UpdateContainerResources: the new limits reach the container's cgroups.

use tidal_integration::cri::v1;
use tidal_integration::suite::{Case, Ctx};

use crate::RUNNING;

pub(crate) const CASES: &[Case] = cases![update_container_resources,];

/// The host path of the container's cgroup in v1 hierarchy `controller`.
async fn cgroup_file(ctx: &Ctx, id: &str, controller: &str, file: &str) -> String {
    let cg = ctx.sh(id, "cat /proc/self/cgroup").await;
    let rel = cg
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2).map(|p| (l, p)))
        .find(|(l, _)| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|x| x == controller))
        })
        .map(|(_, p)| p.to_string())
        .unwrap_or_else(|| panic!("no {controller} cgroup in {cg}"));
    let dir = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .split(',')
                .any(|x| x == controller)
        })
        .unwrap();
    std::fs::read_to_string(dir.join(rel.trim_start_matches('/')).join(file))
        .unwrap_or_else(|e| panic!("{controller}/{rel}/{file}: {e}"))
        .trim()
        .to_string()
}

async fn update_container_resources(ctx: Ctx) {
    let (_, id) = ctx.pod_with(|_, _| ()).await;
    let mib = 1024 * 1024;
    ctx.rt
        .clone()
        .update_container_resources(v1::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(v1::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                memory_limit_in_bytes: 96 * mib,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("UpdateContainerResources: {e}"));
    assert_eq!(
        cgroup_file(&ctx, &id, "cpu", "cpu.cfs_quota_us").await,
        "50000"
    );
    assert_eq!(cgroup_file(&ctx, &id, "cpu", "cpu.shares").await, "512");
    assert_eq!(
        cgroup_file(&ctx, &id, "memory", "memory.limit_in_bytes").await,
        (96 * mib).to_string()
    );
    assert_eq!(ctx.status(&id).await.state, RUNNING);
    if ctx.handler == "tidal" {
        // tidal keeps the change as a revision whose source is kubelet.
        let history = ctx
            .shared
            .tidal_state
            .join("k8s.io")
            .join(&id)
            .join("tidal-revisions.jsonl");
        let text = std::fs::read_to_string(&history)
            .unwrap_or_else(|e| panic!("{}: {e}", history.display()));
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["source"], "kubelet", "revision: {last}");
    }
}

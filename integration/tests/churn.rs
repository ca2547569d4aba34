//! Pods churned through CRI, as kubelet drives them (issue 15; figures in
//! docs/reliability.md), for handlers `tidal` and `runc` one after the
//! other so that containerd's counts belong to one handler at a time.
//!
//! Each cycle runs a pod with a container, execs in it, resizes it
//! (UpdateContainerResources, kubelet's path), and stops and removes the
//! pod; and in a long-lived pod beside them it creates, starts, execs into,
//! resizes, stops and removes a container. Before, during and after, it
//! samples containerd's and the long-lived pod shim's descriptors, threads
//! and resident memory, the handler's shim processes, the environment's
//! mounts (rootfs and network namespaces), the pods' cgroup directories,
//! and the files under containerd's and tidal's state directories.
//!
//! For tidal every count must be back where it started, the long-lived
//! shim may not grow by more than 1 MiB over the second half, and
//! containerd may keep at most a few descriptors more. runc's shim runs the
//! same cycles and its figures are printed beside tidal's, not asserted.
//!
//! TIDAL_SOAK_CRI_CYCLES sets the count (default 5, `hack/soak churn` runs
//! 1000); TIDAL_CASE_SECONDS lifts the suite's 120 s limit per case.

use std::time::{Duration, Instant};

#[path = "../../tests/common/held.rs"]
mod held;
use held::{entries, held, Held};

use tidal_integration::cri::v1;
use tidal_integration::suite::{self, Case, CaseFuture, Ctx};

fn main() {
    let ok = suite::run(
        "churn",
        &[Case {
            name: "pods_churned_through_cri_leave_every_count_flat",
            run: |ctx| -> CaseFuture { Box::pin(churn(ctx)) },
        }],
        false,
        None,
    );
    std::process::exit(if ok { 0 } else { 1 });
}

/// Pids of `handler`'s shims serving this environment's containerd.
fn shims(ctx: &Ctx) -> Vec<i32> {
    let address = ctx.env.var("CONTAINERD_ADDRESS").to_string();
    let exe = format!("containerd-shim-{}-v2", ctx.handler);
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains(&exe) && cmdline.contains(&address)
        })
        .collect()
}

/// The one shim whose command line names pod `pod`.
fn shim_of(ctx: &Ctx, pod: &str) -> i32 {
    let found: Vec<i32> = shims(ctx)
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(pod)
        })
        .collect();
    assert_eq!(found.len(), 1, "one shim for pod {pod}: {found:?}");
    found[0]
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    cycle: usize,
    containerd: Held,
    shim: Held,
    shims: usize,
    mounts: usize,
    cgroups: usize,
    state: usize,
}

fn sample(ctx: &Ctx, cycle: usize, containerd: i32, shim: i32) -> Sample {
    let dir = ctx.shared.dir.to_string_lossy().into_owned();
    Sample {
        cycle,
        containerd: held(containerd),
        shim: held(shim),
        shims: shims(ctx).len(),
        mounts: std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&dir))
            .count(),
        cgroups: suite::cgroups_below(&ctx.shared.cgroup_root).len(),
        state: entries(&ctx.shared.dir.join("state")) + entries(&ctx.shared.tidal_state),
    }
}

async fn resize(ctx: &Ctx, id: &str, quota: i64) {
    ctx.rt
        .clone()
        .update_container_resources(v1::UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux: Some(v1::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: quota,
                memory_limit_in_bytes: 96 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("UpdateContainerResources({}): {e}", ctx.handler));
}

async fn exec_exits_3(ctx: &Ctx, id: &str) {
    let (code, _, err) = ctx.exec(id, &["sh", "-c", "exit 3"]).await;
    assert_eq!(code, 3, "exec in {id} ({}): {err}", ctx.handler);
}

/// One cycle: a pod of its own, and a container in the long-lived pod.
async fn cycle(ctx: &Ctx, i: usize, anchor: &str, anchor_config: &v1::PodSandboxConfig) {
    let config = ctx.pod_config(&format!("p{i}"));
    let pod = ctx.run_pod(&config).await;
    let app = ctx
        .run(&pod, &config, ctx.container("app", &["sleep", "3600"]))
        .await;
    exec_exits_3(ctx, &app).await;
    resize(ctx, &app, 30_000).await;
    ctx.stop_pod(&pod).await.expect("StopPodSandbox");
    ctx.remove_pod(&pod).await.expect("RemovePodSandbox");
    // What kubelet removes with a pod, not the runtime: its log directory,
    // and its cgroup parent (runtimes create the parent when they put the
    // first container in it, and remove only their own). rmdir leaves a
    // parent that still holds a container's cgroup, for the count to see.
    let _ = std::fs::remove_dir_all(&config.log_directory);
    let parent = &config.linux.as_ref().unwrap().cgroup_parent;
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(h.path().join(parent.trim_start_matches('/')));
    }

    let c = ctx
        .run(
            anchor,
            anchor_config,
            ctx.container(&format!("c{i}"), &["sleep", "3600"]),
        )
        .await;
    exec_exits_3(ctx, &c).await;
    resize(ctx, &c, 20_000).await;
    ctx.stop(&c, 0).await.expect("StopContainer");
    ctx.remove(&c).await.expect("RemoveContainer");
}

async fn churn(ctx: Ctx) {
    let cycles = std::env::var("TIDAL_SOAK_CRI_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5usize);
    let anchor_config = ctx.pod_config("anchor");
    let anchor = ctx.run_pod(&anchor_config).await;
    let keep = ctx
        .run(
            &anchor,
            &anchor_config,
            ctx.container("keep", &["sleep", "3600"]),
        )
        .await;
    let shim = shim_of(&ctx, &anchor);
    let containerd: i32 = std::fs::read_to_string(ctx.shared.dir.join("containerd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Warm up: the first cycles start what stays (pools, connections, the
    // CNI plugin's first state).
    for i in 0..3 {
        cycle(&ctx, i, &anchor, &anchor_config).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    let before = sample(&ctx, 0, containerd, shim);
    let mut samples = vec![before];
    let every = (cycles / 10).max(1);
    for i in 1..=cycles {
        cycle(&ctx, i + 3, &anchor, &anchor_config).await;
        if i % every == 0 {
            samples.push(sample(&ctx, i, containerd, shim));
        }
    }
    let took = start.elapsed();
    // Blocking threads (tidal's shim, containerd's Go runtime) idle out.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let after = sample(&ctx, cycles, containerd, shim);
    samples.push(after);
    for s in &samples {
        println!(
            "churn [{}] {:>5}: containerd fds {} threads {} rss {} KiB | pod shim fds {} threads {} rss {} KiB | shims {} mounts {} cgroups {} state {}",
            ctx.handler,
            s.cycle,
            s.containerd.fds,
            s.containerd.threads,
            s.containerd.rss_kib,
            s.shim.fds,
            s.shim.threads,
            s.shim.rss_kib,
            s.shims,
            s.mounts,
            s.cgroups,
            s.state
        );
    }
    let mid = samples[samples.len() / 2];
    println!(
        "churn [{}]: {cycles} cycles in {:.0} s; the long-lived pod's shim {:+} KiB over the second half, containerd {:+} KiB",
        ctx.handler,
        took.as_secs_f64(),
        after.shim.rss_kib as i64 - mid.shim.rss_kib as i64,
        after.containerd.rss_kib as i64 - mid.containerd.rss_kib as i64
    );
    // The long-lived pod still serves.
    assert_eq!(ctx.sh(&keep, "echo alive").await.trim(), "alive");
    if ctx.handler != "tidal" {
        return;
    }
    assert_eq!(after.shims, before.shims, "shim processes");
    assert_eq!(after.mounts, before.mounts, "mounts");
    assert_eq!(after.cgroups, before.cgroups, "cgroup directories");
    assert_eq!(
        after.state, before.state,
        "files under the state directories"
    );
    assert_eq!(
        after.shim.fds, before.shim.fds,
        "the pod shim's descriptors"
    );
    assert!(
        after.shim.threads <= before.shim.threads,
        "the pod shim's threads: {before:?} -> {after:?}"
    );
    assert!(
        after.containerd.fds <= before.containerd.fds + 4,
        "containerd's descriptors: {before:?} -> {after:?}"
    );
    assert!(
        after.shim.rss_kib <= mid.shim.rss_kib + 1024,
        "the pod shim grew from {} to {} KiB in the second half",
        mid.shim.rss_kib,
        after.shim.rss_kib
    );
}

//! Pods through CRI on a node whose kubelet runs `cgroupDriver: systemd`:
//! containerd's CRI plugin with both runtimes' `SystemdCgroup = true`, each
//! pod's cgroup parent a slice, as kubelet gives it. For handlers `tidal`
//! and `runc` side by side: every container (the pause container included)
//! is a transient scope in its pod's slice; UpdateContainerResources changes
//! the cgroup files and the unit, and a `systemctl daemon-reload` keeps them;
//! removing the pod leaves no unit. Needs systemd as init on cgroup v2
//! (hack/vm systemd runs it); elsewhere it reports itself ignored.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tidal_integration::cri::v1;
use tidal_integration::env::CriEnv;
use tidal_integration::suite::{self, Case, CaseFuture, Ctx};

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        &[$(Case { name: stringify!($name), run: |ctx| -> CaseFuture { Box::pin($name(ctx)) } }),*]
    };
}

fn main() {
    let unified = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
    if !(Path::new("/run/systemd/system").is_dir() && unified) {
        println!("\nrunning 1 test");
        println!(
            "test systemd_cri ... ignored, needs systemd as init on cgroup v2: hack/vm systemd runs it"
        );
        println!(
            "\ntest result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s\n"
        );
        return;
    }
    // hack/containerd-env reads it: both runtimes get SystemdCgroup = true.
    std::env::set_var("TIDAL_CGROUP_DRIVER", "systemd");
    let ok = suite::run_for(
        &["tidal", "runc"],
        "systemd",
        cases![containers_are_scopes_in_the_pod_slice_and_keep_their_resize],
        true,
        Some(no_unit_left),
    );
    std::process::exit(if ok { 0 } else { 1 });
}

/// The pod slice of a handler's pod, as kubelet names them
/// (`kubepods-burstable-pod<uid>.slice`).
fn slice(handler: &str) -> String {
    format!("tidalsd-{handler}pod.slice")
}

fn systemctl(args: &[&str]) -> (bool, String) {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .expect("systemctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
        .trim()
        .to_string()
}

/// The scope systemd made for container `id` in `slice`, which must hold
/// a process.
fn scope_dir(slice: &str, id: &str) -> PathBuf {
    let stem = slice.trim_end_matches(".slice");
    let mut dir = PathBuf::from("/sys/fs/cgroup");
    let mut prefix = String::new();
    for part in stem.split('-') {
        dir.push(format!("{prefix}{part}.slice"));
        prefix.push_str(part);
        prefix.push('-');
    }
    dir.join(format!("cri-containerd-{id}.scope"))
}

async fn containers_are_scopes_in_the_pod_slice_and_keep_their_resize(ctx: Ctx) {
    let slice = slice(ctx.handler);
    let mut pod_config = ctx.pod_config("pod");
    pod_config.linux.as_mut().unwrap().cgroup_parent = slice.clone();
    let pod = ctx.run_pod(&pod_config).await;
    let id = ctx
        .run(&pod, &pod_config, ctx.container("app", &["sleep", "3600"]))
        .await;
    for (what, id) in [("pause", &pod), ("app", &id)] {
        let dir = scope_dir(&slice, id);
        let unit = format!("cri-containerd-{id}.scope");
        assert!(
            !read(&dir, "cgroup.procs").is_empty(),
            "{} [{}]: no process in {}",
            what,
            ctx.handler,
            dir.display()
        );
        assert_eq!(
            systemctl(&["is-active", &unit]).1,
            "active",
            "{what} [{}]",
            ctx.handler
        );
    }

    let dir = scope_dir(&slice, &id);
    let unit = format!("cri-containerd-{id}.scope");
    ctx.rt
        .clone()
        .update_container_resources(v1::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(v1::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 20_000,
                cpu_shares: 512,
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("UpdateContainerResources [{}]: {e}", ctx.handler));
    assert_eq!(read(&dir, "cpu.max"), "20000 100000", "[{}]", ctx.handler);
    assert_eq!(
        read(&dir, "memory.max"),
        (64u64 << 20).to_string(),
        "[{}]",
        ctx.handler
    );
    let show = |p: &str| systemctl(&["show", "--value", "-p", p, &unit]).1;
    assert_eq!(show("CPUQuotaPerSecUSec"), "200ms", "[{}]", ctx.handler);
    assert_eq!(
        show("MemoryMax"),
        (64u64 << 20).to_string(),
        "[{}]",
        ctx.handler
    );
    assert!(systemctl(&["daemon-reload"]).0);
    assert_eq!(
        read(&dir, "cpu.max"),
        "20000 100000",
        "[{}]: a reload undid the resize",
        ctx.handler
    );
    assert_eq!(
        read(&dir, "memory.max"),
        (64u64 << 20).to_string(),
        "[{}]",
        ctx.handler
    );

    ctx.stop_pod(&pod).await.unwrap();
    ctx.remove_pod(&pod).await.unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while systemctl(&["is-active", &unit]).0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !systemctl(&["is-active", &unit]).0,
        "[{}]: {unit} is left",
        ctx.handler
    );
    assert!(
        !dir.exists(),
        "[{}]: {} is left",
        ctx.handler,
        dir.display()
    );
    // kubelet removes a pod's slice once the pod is gone.
    let _ = systemctl(&["stop", &slice]);
}

/// No scope of this run's pods is left, nor any shim of its containerd.
fn no_unit_left(env: &CriEnv) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(10);
    let dir = env.dir.to_string_lossy().into_owned();
    loop {
        let (_, units) = systemctl(&[
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "cri-containerd-*",
        ]);
        let shims = Command::new("pgrep")
            .args(["-f", &format!("containerd-shim-.* -address {dir}/")])
            .output()
            .unwrap();
        let slices: Vec<String> = ["tidal", "runc"]
            .iter()
            .map(|h| slice(h))
            .filter(|s| systemctl(&["is-active", s]).0)
            .collect();
        if units.is_empty() && shims.stdout.is_empty() && slices.is_empty() {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(format!(
                "units: {units} shims: {} slices: {slices:?}",
                String::from_utf8_lossy(&shims.stdout).trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

//! tidal's main job, end to end, the way a Kubernetes node runs it: a private
//! containerd with its CRI plugin (kubelet's side of the node) and tidal as
//! runtime handler `tidal` (what `runtimeClassName: tidal` selects), tidald
//! beside it; a pod through CRI; its container resized live through tidalctl
//! and through kubelet's path; history and rollback; a cron-vertical-scaler
//! job resizing a second pod on its schedule. Leaves nothing behind.
//!
//!   cargo run --release -p tidal-integration --example demo
//!
//! (`hack/demo` builds tidal and runs this.)

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tidal_integration::cri::v1;
use tidal_integration::env::{shim_dir, CriEnv};
use tidal_integration::suite::{cgroups_below, Ctx, Shared};

/// tidald on the environment's state directory, stopped when dropped, and
/// its metrics address.
struct Tidald(Child, String);

impl Tidald {
    fn start(state: &Path) -> Tidald {
        let mut child = Command::new(shim_dir().join("tidald"))
            .arg("--state-dir")
            .arg(state)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tidald");
        // Its first line says where it listens, once the socket is bound.
        let mut line = String::new();
        std::io::BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("API on"), "tidald did not start: {line}");
        // "... metrics on http://127.0.0.1:PORT/metrics, ..."
        let metrics = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_default()
            .to_string();
        Tidald(child, metrics)
    }

    /// The mean of tidald's `tidal_resize_seconds` so far, in ms: from a
    /// resize request reaching tidald to its answer, the shim's cgroup
    /// writes and revision included.
    fn resize_ms(&self) -> Option<f64> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(&self.1).ok()?;
        write!(
            conn,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.1
        )
        .ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).ok()?;
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        };
        let (sum, count) = (
            value("tidal_resize_seconds_sum ")?,
            value("tidal_resize_seconds_count ")?,
        );
        (count > 0.0).then(|| sum / count * 1e3)
    }
}

impl Drop for Tidald {
    fn drop(&mut self) {
        let _ = nix_kill(self.0.id());
        let _ = self.0.wait();
    }
}

fn nix_kill(pid: u32) -> std::io::Result<()> {
    // SAFETY: a plain kill(2) of our own child.
    match unsafe { libc::kill(pid as i32, libc::SIGTERM) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

struct Demo {
    agent: Tidald,
    ctx: Ctx,
    state: PathBuf,
}

impl Demo {
    /// `tidalctl --state-dir STATE ARGS`, its output printed; whether it succeeded.
    fn tidalctl(&self, args: &[&str]) -> bool {
        println!("$ tidalctl {}", args.join(" "));
        let out = Command::new(shim_dir().join("tidalctl"))
            .arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .output()
            .expect("run tidalctl");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        print!("{}", String::from_utf8_lossy(&out.stderr));
        out.status.success()
    }

    /// What tidalctl ps -o json says of container `id`.
    fn listed(&self, id: &str) -> serde_json::Value {
        let out = Command::new(shim_dir().join("tidalctl"))
            .arg("--state-dir")
            .arg(&self.state)
            .args(["ps", "-o", "json"])
            .output()
            .expect("run tidalctl");
        let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("tidalctl ps json");
        all.as_array()
            .and_then(|a| a.iter().find(|c| c["id"] == id).cloned())
            .unwrap_or_else(|| panic!("{id} is not in tidalctl ps"))
    }

    /// The share of one CPU the container used over 2 seconds, in percent.
    fn cpu_share(&self, id: &str) -> u64 {
        let used = |d: &Demo| d.listed(id)["usage"]["cpu_ns"].as_u64().unwrap_or(0);
        let a = used(self);
        std::thread::sleep(Duration::from_secs(2));
        let b = used(self);
        (b - a) / 20_000_000
    }
}

fn step(title: &str) {
    println!("\n== {title}");
}

fn main() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the demo starts containerd and a real pod: run it as root (hack/demo)"
    );
    step("a private containerd with its CRI plugin: runtime handlers tidal and runc, a CNI bridge, tidald");
    let env = Arc::new(CriEnv::start("demo"));
    let state = env.tidal_state();
    let agent = Tidald::start(&state);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(tidal_integration::cri::connect(&env.socket()))
        .expect("connect to CRI")
        .0;
    let cgroup_root = format!("tidal-demo-{}", std::process::id());
    let demo = Demo {
        agent,
        ctx: Ctx {
            handler: "tidal",
            case: "demo",
            rt: client,
            shared: Arc::new(Shared::new(&env, &cgroup_root)),
            env: env.clone(),
        },
        state,
    };
    let result = rt.block_on(run(&demo));
    let cleaned = rt.block_on(demo.ctx.cleanup());
    drop(demo);
    drop(rt);
    drop(
        Arc::try_unwrap(env)
            .ok()
            .expect("the environment is ours alone"),
    );
    for d in cgroups_below(&cgroup_root) {
        let _ = std::fs::remove_dir(d);
    }
    if let Err(e) = result.and(cleaned) {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
    step("done: pod removed, tidald and containerd stopped, nothing left behind");
}

async fn run(d: &Demo) -> Result<(), String> {
    let ctx = &d.ctx;
    step("a pod through CRI with runtime handler tidal (runtimeClassName: tidal), one shim for the whole pod");
    let mut pod = ctx.pod_config("shop");
    // The OAM application and component it belongs to, and a trait: the shim
    // locks the pod down as the trait says (docs/traits.md).
    pod.annotations = [
        ("app.oam.dev/name", "shop"),
        ("app.oam.dev/component", "cart"),
        (
            "trait.tidal.dev/security-policy",
            r#"{"allowPrivilegeEscalation":false,"seccompProfile":"runtime-default","dropCapabilities":["NET_RAW"]}"#,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let pod_id = ctx.try_run_pod(&pod).await?;
    println!("RunPodSandbox -> pod {}", &pod_id[..12]);
    let mut config = ctx.container("cart", &["sh", "-c", "while :; do :; done"]);
    // What kubelet sends for resources.limits cpu: 1, memory: 128Mi.
    config.linux.as_mut().unwrap().resources = Some(v1::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 100_000,
        cpu_shares: 1024,
        memory_limit_in_bytes: 128 << 20,
        ..Default::default()
    });
    let id = ctx.create(&pod_id, &pod, config).await?;
    ctx.start(&id).await?;
    println!(
        "CreateContainer + StartContainer -> container {} (a CPU-bound loop, limits cpu 1, memory 128Mi)",
        &id[..12]
    );
    let status = ctx
        .sh(&id, "grep -E 'NoNewPrivs|Seccomp:' /proc/self/status")
        .await;
    println!(
        "inside, the security-policy trait holds: {}",
        status.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    std::thread::sleep(Duration::from_millis(500));
    d.tidalctl(&["ps"]);
    let pid = d.listed(&id)["pid"].clone();
    println!("the container uses {}% of a CPU", d.cpu_share(&id));

    step("live resize through tidalctl -> tidald -> the pod's shim: --cpu 250m --memory 96Mi");
    // The container by its Kubernetes name, NAMESPACE/POD/CONTAINER (an id or
    // a unique prefix of one works too).
    let name = format!("tidal-test/{}/cart", ctx.name("shop"));
    if !d.tidalctl(&[
        "resize", &name, "--cpu", "250m", "--memory", "96Mi", "--reason", "demo",
    ]) {
        return Err("tidalctl resize failed".into());
    }
    if let Some(ms) = d.agent.resize_ms() {
        println!(
            "tidald took {ms:.2} ms for it, from the request to the answer: the shim's cgroup writes and revision included (tidal_resize_seconds)"
        );
    }
    println!("the container now uses {}% of a CPU", d.cpu_share(&id));
    println!(
        "same process, not restarted: pid {pid} -> {}",
        d.listed(&id)["pid"]
    );

    step("kubelet's path: CRI UpdateContainerResources cpu 500m, memory 128Mi (kubelet sends every limit, so memory goes back to the declared 128Mi)");
    let started = std::time::Instant::now();
    ctx.rt
        .clone()
        .update_container_resources(v1::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(v1::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                memory_limit_in_bytes: 128 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("UpdateContainerResources: {}", e.message()))?;
    println!(
        "UpdateContainerResources answered in {:.2} ms, containerd's CRI plugin included (the shim's own share, the cgroup writes and the revision, is well under a millisecond: docs/benchmarks.md)",
        started.elapsed().as_secs_f64() * 1e3
    );
    println!("the container now uses {}% of a CPU", d.cpu_share(&id));
    d.tidalctl(&["ps"]);

    step("a bad request is refused, with the current values");
    d.tidalctl(&["resize", &id[..12], "--memory", "4096"]);

    step("every change is a revision (source kubelet or operator); roll back to before the first");
    d.tidalctl(&["history", &name]);
    if !d.tidalctl(&["rollback", &name, "0"]) {
        return Err("tidalctl rollback failed".into());
    }
    println!("the container uses {}% of a CPU again", d.cpu_share(&id));
    cron(d).await
}

/// A batch pod whose `cron-vertical-scaler` trait gives it 800m for 2 s
/// every 5 s, fired by tidald in place.
async fn cron(d: &Demo) -> Result<(), String> {
    step("an OAM trait at work: cron-vertical-scaler gives a batch pod cpu 800m for 2 s every 5 s (six-field cron), in place, each firing a revision");
    let ctx = &d.ctx;
    let mut pod = ctx.pod_config("nightly");
    pod.annotations = [
        ("tidal.dev/workload-type", "worker"),
        (
            "trait.tidal.dev/cron-vertical-scaler",
            r#"{"jobs":[{"name":"burst","schedule":"*/5 * * * * *","cpu":"800m","duration":"2s"}]}"#,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let pod_id = ctx.try_run_pod(&pod).await?;
    let mut config = ctx.container("crunch", &["sh", "-c", "while :; do :; done"]);
    config.linux.as_mut().unwrap().resources = Some(v1::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 20_000,
        cpu_shares: 204,
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    });
    let id = ctx.create(&pod_id, &pod, config).await?;
    ctx.start(&id).await?;
    println!(
        "pod nightly, container {} (a CPU-bound loop, limits cpu 200m)",
        &id[..12]
    );
    // Until the job has fired and run out at least once.
    let history = || {
        let out = Command::new(shim_dir().join("tidalctl"))
            .arg("--state-dir")
            .arg(&d.state)
            .args(["history", &id, "-o", "json"])
            .output()
            .expect("run tidalctl");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    let fired = |reason: &str| {
        history()
            .as_array()
            .is_some_and(|h| h.iter().any(|r| r["reason"] == reason))
    };
    let start = std::time::Instant::now();
    while !(fired("burst") && fired("burst ended")) {
        if start.elapsed() > Duration::from_secs(15) {
            return Err("the cron job did not fire within 15 s".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    d.tidalctl(&["cron"]);
    d.tidalctl(&["history", &id[..12]]);
    Ok(())
}

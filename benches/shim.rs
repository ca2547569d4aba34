//! tidal's shim against containerd's runc shim, side by side on one private
//! containerd (started by hack/bench):
//!
//! - lifecycle: Tasks.Create -> Start -> (exit) -> Delete through containerd's
//!   API, runtimes interleaved, p50/p99;
//! - memory: RSS and PSS of the shims (and anything they keep running besides
//!   the containers) with 1, 10 and 50 containers, one shim per container and
//!   one shim per pod.
//!
//! Usage: cargo bench --bench shim -- ADDRESS NAMESPACE ITERATIONS

use std::process::Command;
use std::time::{Duration, Instant};

use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::MountsRequest;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CreateTaskRequest, DeleteTaskRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::Request;
use containerd_client::with_namespace;
use containerd_shim::protos::protobuf::well_known_types::any as containerd_shim_protos_any;

const IMAGE: &str = "docker.io/library/tidal-busybox:latest";
const RUNTIMES: [(&str, &str); 2] = [
    ("tidal", "io.containerd.tidal.v2"),
    ("runc", "io.containerd.runc.v2"),
];

struct Ctx {
    address: String,
    ns: String,
    channel: containerd_client::tonic::transport::Channel,
}

impl Ctx {
    fn ctr(&self, args: &[&str]) -> String {
        let out = Command::new("ctr")
            .args(["--address", &self.address, "-n", &self.ns])
            .args(args)
            .output()
            .expect("ctr");
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// ctr, ignoring failure (for cleanup of what may already be gone).
    fn ctr_quiet(&self, args: &[&str]) {
        let _ = Command::new("ctr")
            .args(["--address", &self.address, "-n", &self.ns])
            .args(args)
            .output();
    }

    /// One task lifecycle of container `id`: Create, Start, its exit, Delete.
    async fn cycle(&self, id: &str) -> Duration {
        let ns = self.ns.as_str();
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let mut tasks = TasksClient::new(self.channel.clone());
        let mounts = snapshots
            .mounts(with_namespace!(
                MountsRequest {
                    snapshotter: "overlayfs".into(),
                    key: id.into(),
                },
                ns
            ))
            .await
            .expect("snapshot mounts")
            .into_inner()
            .mounts;
        let start = Instant::now();
        tasks
            .create(with_namespace!(
                CreateTaskRequest {
                    container_id: id.into(),
                    rootfs: mounts,
                    ..Default::default()
                },
                ns
            ))
            .await
            .expect("create");
        let mut waiter = tasks.clone();
        let wait_req = with_namespace!(
            WaitRequest {
                container_id: id.into(),
                ..Default::default()
            },
            ns
        );
        let wait = tokio::spawn(async move { waiter.wait(wait_req).await });
        tasks
            .start(with_namespace!(
                StartRequest {
                    container_id: id.into(),
                    ..Default::default()
                },
                ns
            ))
            .await
            .expect("start");
        let exit = wait.await.unwrap().expect("wait").into_inner();
        assert_eq!(exit.exit_status, 0, "{id} exited with {}", exit.exit_status);
        tasks
            .delete(with_namespace!(
                DeleteTaskRequest {
                    container_id: id.into(),
                },
                ns
            ))
            .await
            .expect("delete");
        start.elapsed()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// Shim processes of this containerd for `runtime` and their (RSS, PSS) in kB.
fn shim_memory(address: &str, binary: &str) -> (usize, u64, u64) {
    let (mut n, mut rss, mut pss) = (0, 0, 0);
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !cmd.contains(binary) || !cmd.contains(&format!("-address {address}")) {
            continue;
        }
        let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        let field = |name: &str| -> u64 {
            rollup
                .lines()
                .find_map(|l| {
                    l.strip_prefix(name)?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or(0)
        };
        n += 1;
        rss += field("Rss:");
        pss += field("Pss:");
    }
    (n, rss, pss)
}

fn memory(ctx: &Ctx, grouped: bool) -> Vec<String> {
    let mut rows = Vec::new();
    for count in [1usize, 10, 50] {
        for (name, runtime) in RUNTIMES {
            let ids: Vec<String> = (0..count).map(|i| format!("mem-{name}-{i}")).collect();
            for id in &ids {
                let mut args = vec!["run", "-d", "--null-io", "--runtime", runtime];
                if grouped {
                    args.extend(["--annotation", "io.kubernetes.cri.sandbox-id=mem-pod"]);
                }
                args.extend([IMAGE, id.as_str(), "sleep", "100000"]);
                ctx.ctr(&args);
            }
            std::thread::sleep(Duration::from_millis(500));
            let binary = format!(
                "containerd-shim-{}-v2",
                if name == "tidal" { "tidal" } else { "runc" }
            );
            let (shims, rss, pss) = shim_memory(&ctx.address, &binary);
            rows.push(format!(
                "| {} | {name} | {count} | {shims} | {:.2} | {:.2} | {:.2} |",
                if grouped {
                    "one shim per pod"
                } else {
                    "one shim per container"
                },
                rss as f64 / 1024.0,
                rss as f64 / 1024.0 / count as f64,
                pss as f64 / 1024.0 / count as f64,
            ));
            for id in &ids {
                ctx.ctr_quiet(&["task", "kill", "-s", "SIGKILL", id]);
            }
            std::thread::sleep(Duration::from_millis(500));
            for id in &ids {
                ctx.ctr_quiet(&["task", "delete", id]);
                ctx.ctr_quiet(&["container", "rm", id]);
            }
        }
    }
    rows
}

fn pct_table(name: &str, clients: usize, mut s: Vec<Duration>) -> String {
    s.sort();
    format!(
        "| {name} | {clients} | {} | {:.3} | {:.3} |",
        s.len(),
        percentile(&s, 0.5).as_secs_f64() * 1e3,
        percentile(&s, 0.99).as_secs_f64() * 1e3
    )
}

fn quota_file(pid: i32) -> std::path::PathBuf {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cg
        .lines()
        .find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, ctrl, path) = (p.next()?, p.next()?, p.next()?);
            ctrl.split(',')
                .any(|c| c == "cpu")
                .then(|| path.to_string())
        })
        .expect("cpu cgroup");
    std::path::PathBuf::from(format!("/sys/fs/cgroup/cpu{path}/cpu.cfs_quota_us"))
}

fn task_pid(ctx: &Ctx, id: &str) -> i32 {
    ctx.ctr(&["task", "ls"])
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f[1].parse().unwrap())
        })
        .expect("task pid")
}

fn resources(quota: i64) -> containerd_shim_protos_any::Any {
    let mut any = containerd_shim_protos_any::Any::new();
    any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    any.value = format!(r#"{{"cpu":{{"quota":{quota},"period":100000}}}}"#).into_bytes();
    any
}

/// tidal: Task.Update straight to the shim that owns the container, until the
/// new quota reads back from the cgroup file.
async fn tidal_resize(ctx: &Ctx, clients: usize, calls: usize) -> Vec<Duration> {
    use containerd_shim::api::UpdateTaskRequest;
    use containerd_shim::protos::shim_async::{Client, TaskClient};
    let dir = std::path::Path::new(&ctx.address)
        .parent()
        .unwrap()
        .to_path_buf();
    let mut handles = Vec::new();
    for c in 0..clients {
        let id = format!("rs-tidal-{c}");
        ctx.ctr(&[
            "run",
            "-d",
            "--null-io",
            "--runtime",
            "io.containerd.tidal.v2",
            "--annotation",
            "io.kubernetes.cri.sandbox-id=rs-pod",
            IMAGE,
            &id,
            "sleep",
            "100000",
        ]);
        let file = quota_file(task_pid(ctx, &id));
        let address = std::fs::read_to_string(
            dir.join("state/io.containerd.runtime.v2.task")
                .join(&ctx.ns)
                .join(&id)
                .join("address"),
        )
        .unwrap();
        let client = TaskClient::new(Client::connect(address.trim()).await.unwrap());
        let per_client = calls / clients;
        handles.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let quota = 50_000 + (i % 2) as i64 * 10_000;
                let req = UpdateTaskRequest {
                    id: id.clone(),
                    resources: Some(resources(quota)).into(),
                    ..Default::default()
                };
                let start = Instant::now();
                client
                    .update(
                        containerd_shim::protos::ttrpc::context::with_timeout(5_000_000_000),
                        &req,
                    )
                    .await
                    .expect("update");
                let now = std::fs::read_to_string(&file).unwrap();
                assert_eq!(now.trim(), quota.to_string());
                samples.push(start.elapsed());
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    for c in 0..clients {
        remove(ctx, &format!("rs-tidal-{c}"));
    }
    all
}

fn remove(ctx: &Ctx, id: &str) {
    for args in [
        vec!["task", "kill", "-s", "SIGKILL", id],
        vec!["task", "delete", "-f", id],
        vec!["container", "rm", id],
    ] {
        ctx.ctr_quiet(&args);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// containerd's Tasks.Update through the runc shim, and `runc update`.
async fn runc_resize(ctx: &Ctx, calls: usize, cli_calls: usize) -> (Vec<Duration>, Vec<Duration>) {
    use containerd_client::services::v1::UpdateTaskRequest;
    let id = "rs-runc";
    ctx.ctr(&[
        "run",
        "-d",
        "--null-io",
        "--runtime",
        "io.containerd.runc.v2",
        IMAGE,
        id,
        "sleep",
        "100000",
    ]);
    let file = quota_file(task_pid(ctx, id));
    let mut tasks = TasksClient::new(ctx.channel.clone());
    let mut via_containerd = Vec::new();
    for i in 0..calls {
        let quota = 50_000 + (i % 2) as i64 * 10_000;
        let req = UpdateTaskRequest {
            container_id: id.into(),
            resources: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
                value: format!(r#"{{"cpu":{{"quota":{quota},"period":100000}}}}"#).into_bytes(),
            }),
            ..Default::default()
        };
        let ns = ctx.ns.as_str();
        let start = Instant::now();
        tasks
            .update(with_namespace!(req, ns))
            .await
            .expect("containerd update");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap().trim(),
            quota.to_string()
        );
        via_containerd.push(start.elapsed());
    }
    let root = format!("/run/containerd/runc/{}", ctx.ns);
    let mut cli = Vec::new();
    for i in 0..cli_calls {
        let quota = 50_000 + (i % 2) as i64 * 10_000;
        let start = Instant::now();
        let st = Command::new("runc")
            .args([
                "--root",
                &root,
                "update",
                "--cpu-quota",
                &quota.to_string(),
                id,
            ])
            .status()
            .unwrap();
        assert!(st.success(), "runc update failed");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap().trim(),
            quota.to_string()
        );
        cli.push(start.elapsed());
    }
    remove(ctx, id);
    (via_containerd, cli)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let address = args
        .get(1)
        .cloned()
        .expect("usage: shim ADDRESS NAMESPACE ITERATIONS");
    let ns = args.get(2).cloned().unwrap_or_else(|| "tidal".into());
    let iterations: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    let channel = containerd_client::connect(&address)
        .await
        .expect("connect to containerd");
    let ctx = Ctx {
        address,
        ns,
        channel,
    };

    for (name, runtime) in RUNTIMES {
        ctx.ctr(&[
            "container",
            "create",
            "--runtime",
            runtime,
            IMAGE,
            &format!("cycle-{name}"),
            "true",
        ]);
    }
    // Warm up both paths (page cache, first shim spawn).
    for (name, _) in RUNTIMES {
        for _ in 0..3 {
            ctx.cycle(&format!("cycle-{name}")).await;
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(), Vec::new()];
    for _ in 0..iterations {
        for (i, (name, _)) in RUNTIMES.iter().enumerate() {
            samples[i].push(ctx.cycle(&format!("cycle-{name}")).await);
        }
    }
    println!("## Lifecycle: Create -> Start -> exit -> Delete, {iterations} interleaved iterations each\n");
    println!("| runtime | p50 ms | p99 ms | mean ms |");
    println!("|---|---|---|---|");
    let mut p50 = Vec::new();
    for (i, (name, _)) in RUNTIMES.iter().enumerate() {
        let mut s = samples[i].clone();
        s.sort();
        let mean = s.iter().sum::<Duration>() / s.len() as u32;
        println!(
            "| {name} | {} | {} | {} |",
            ms(percentile(&s, 0.5)),
            ms(percentile(&s, 0.99)),
            ms(mean)
        );
        p50.push(percentile(&s, 0.5));
    }
    println!(
        "\nratio tidal/runc at p50: {:.2}\n",
        p50[0].as_secs_f64() / p50[1].as_secs_f64()
    );
    for (name, _) in RUNTIMES {
        ctx.ctr(&["container", "rm", &format!("cycle-{name}")]);
    }

    let resize_calls: usize = std::env::var("RESIZE_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    println!("## Live resize: call -> new CPU quota readable in the cgroup file\n");
    println!("| path | concurrent clients | calls | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    let one = tidal_resize(&ctx, 1, resize_calls).await;
    let eight = tidal_resize(&ctx, 8, resize_calls).await;
    let (via_containerd, cli) = runc_resize(&ctx, resize_calls / 10, resize_calls / 30).await;
    let p50 = |mut v: Vec<Duration>| {
        v.sort();
        percentile(&v, 0.5)
    };
    let (t1, rc) = (p50(one.clone()), p50(cli.clone()));
    println!(
        "{}",
        pct_table("tidal: Task.Update to the owning shim", 1, one)
    );
    println!(
        "{}",
        pct_table(
            "tidal: Task.Update to the owning shim (8 containers, one pod shim)",
            8,
            eight
        )
    );
    println!(
        "{}",
        pct_table("runc shim: containerd Tasks.Update", 1, via_containerd)
    );
    println!("{}", pct_table("runc update (CLI)", 1, cli));
    println!(
        "\n`runc update` / tidal at p50: {:.1}x\n",
        rc.as_secs_f64() / t1.as_secs_f64()
    );

    println!("## Shim memory (RSS and PSS of every shim process, from /proc/PID/smaps_rollup)\n");
    println!("| grouping | runtime | containers | shim processes | RSS total MiB | RSS per container MiB | PSS per container MiB |");
    println!("|---|---|---|---|---|---|---|");
    for grouped in [false, true] {
        for row in memory(&ctx, grouped) {
            println!("{row}");
        }
    }
}

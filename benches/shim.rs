//! tidal's shim against containerd's runc shim, side by side on one private
//! containerd (started by hack/bench):
//!
//! - lifecycle: Tasks.Create -> Start -> (exit) -> Delete through containerd's
//!   API, runtimes interleaved, p50/p99;
//! - resize: latency from a resize call to the new CPU quota being readable
//!   in the container's cgroup file: Task.Update straight to tidal's shim,
//!   tidald's resizer in this process as the policy engine writes, and
//!   UpdateResources through tidald (started here on the environment's state
//!   dir, the build's own or $TIDALD), 1 and 8 concurrent clients;
//!   containerd's Tasks.Update through the runc shim, and `runc update`;
//! - memory: RSS and PSS of the shims (and anything they keep running besides
//!   the containers) with 1, 10 and 50 containers, one shim per container and
//!   one shim per pod.
//!
//! Usage: cargo bench --bench shim -- ADDRESS NAMESPACE ITERATIONS
//!
//! Environment: BENCH_ONLY=lifecycle,resize,memory (any of them; default
//! all), RESIZE_CALLS (per tidal row, default 10000), RUNC_RESIZE_CALLS (per
//! runc row, default RESIZE_CALLS), WATCH_CALLS (revisions timed to a Watch
//! stream, default 200), RESIZE_ROWS=direct,engine,api,watch,runc (default all; api8:
//! only the 8-client row through tidald; clients: that row with 2, 4 and 6
//! clients, not in the default), TIDALD_ARGS (more flags for the
//! tidald the API rows use), RESIZE_TIMELINE=DIR (each row's calls as CSV:
//! client, start and latency in microseconds).

mod common;

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

use common::{remove, Ctx, Tidald, IMAGE};

const RUNTIMES: [(&str, &str); 2] = [
    ("tidal", "io.containerd.tidal.v2"),
    ("runc", "io.containerd.runc.v2"),
];

/// One task lifecycle of container `id`: Create, Start, its exit, Delete.
async fn cycle(ctx: &Ctx, id: &str) -> Duration {
    let ns = ctx.ns.as_str();
    let mut snapshots = SnapshotsClient::new(ctx.channel.clone());
    let mut tasks = TasksClient::new(ctx.channel.clone());
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

fn pct_table(name: &str, clients: usize, mut s: Vec<Duration>, runc_cli_p50: Duration) -> String {
    s.sort();
    let p50 = percentile(&s, 0.5);
    format!(
        "| {name} | {clients} | {} | {:.3} | {:.3} | {:.3} | {} |",
        s.len(),
        p50.as_secs_f64() * 1e3,
        percentile(&s, 0.99).as_secs_f64() * 1e3,
        percentile(&s, 0.999).as_secs_f64() * 1e3,
        if runc_cli_p50.is_zero() {
            "-".to_string()
        } else {
            format!("{:.1}x", runc_cli_p50.as_secs_f64() / p50.as_secs_f64())
        },
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

/// The quota the `i`th call of a client sets: two values in turn, so every
/// call changes something.
fn quota_for(i: usize) -> i64 {
    50_000 + (i % 2) as i64 * 10_000
}

/// `n` tidal containers running `sleep` in one pod (one shim), named
/// PREFIX-0.., each with its CPU quota file.
fn tidal_pod(ctx: &Ctx, prefix: &str, n: usize) -> Vec<(String, std::path::PathBuf)> {
    (0..n)
        .map(|c| {
            let id = format!("{prefix}-{c}");
            ctx.run_in_pod(&format!("{prefix}-pod"), &id, &[], &["sleep", "100000"]);
            let file = quota_file(task_pid(ctx, &id));
            (id, file)
        })
        .collect()
}

/// Runs `clients` concurrent clients, `calls` calls in all: `call(client, i)`
/// is timed until the quota it set reads back from the container's cgroup
/// file.
async fn timed_clients<C, F>(
    pod: &[(String, std::path::PathBuf)],
    calls: usize,
    mut client: impl FnMut(&str) -> C,
) -> Vec<Duration>
where
    C: FnMut(usize) -> F + 'static,
    F: std::future::Future<Output = ()> + 'static,
{
    let per_client = calls.div_ceil(pod.len());
    let machine = steal_and_all();
    let began = Instant::now();
    let local = tokio::task::LocalSet::new();
    let mut handles = Vec::new();
    for (id, file) in pod {
        let mut call = client(id);
        // Kept open and read with one pread per call: the clients share the
        // machine with what they measure, so they spend as little as they can.
        let file = std::fs::File::open(file).unwrap();
        handles.push(local.spawn_local(async move {
            use std::os::unix::fs::FileExt;
            let mut samples = Vec::with_capacity(per_client);
            let mut buf = [0u8; 64];
            for i in 0..per_client {
                let start = Instant::now();
                call(i).await;
                let n = file.read_at(&mut buf, 0).unwrap();
                let now = std::str::from_utf8(&buf[..n]).unwrap();
                assert_eq!(now.trim(), quota_for(i).to_string());
                samples.push((start - began, start.elapsed()));
            }
            samples
        }));
    }
    let timed = local
        .run_until(async move {
            let mut all = Vec::new();
            for h in handles {
                all.push(h.await.unwrap());
            }
            all
        })
        .await;
    // RESIZE_TIMELINE=DIR: every call as `client,start_us,latency_us` in
    // DIR/<first container>.csv, to see whether slow calls come alone or
    // together.
    if let Ok(dir) = std::env::var("RESIZE_TIMELINE") {
        let mut csv = String::from("client,start_us,latency_us\n");
        for (client, calls) in timed.iter().enumerate() {
            for (start, took) in calls {
                csv += &format!("{client},{},{}\n", start.as_micros(), took.as_micros());
            }
        }
        let file = std::path::Path::new(&dir).join(format!("{}.csv", pod[0].0));
        std::fs::write(&file, csv).unwrap();
    }
    let samples: Vec<Duration> = timed.into_iter().flatten().map(|(_, took)| took).collect();
    let now = steal_and_all();
    let (steal, all) = (now.0 - machine.0, now.1 - machine.1);
    println!(
        "Steal while {} clients made {} calls: {:.1}% of the machine's CPU time (other guests on its cores)",
        pod.len(),
        samples.len(),
        100.0 * steal as f64 / all.max(1) as f64
    );
    samples
}

/// The machine's steal time and all its CPU time so far, in ticks (the
/// first line of /proc/stat: user nice system idle iowait irq softirq
/// steal).
fn steal_and_all() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap())
        .collect();
    (ticks[7], ticks.iter().sum())
}

/// tidal: Task.Update straight to the shim that owns the container, until the
/// new quota reads back from the cgroup file.
async fn tidal_resize(ctx: &Ctx, clients: usize, calls: usize) -> Vec<Duration> {
    use containerd_shim::api::UpdateTaskRequest;
    let pod = tidal_pod(ctx, &format!("rs-shim{clients}"), clients);
    let mut tasks = Vec::new();
    for (id, _) in &pod {
        tasks.push(shim_task(ctx, id).await);
    }
    let mut tasks = tasks.into_iter();
    let samples = timed_clients(&pod, calls, |id| {
        let client = std::rc::Rc::new(tasks.next().unwrap());
        let id = id.to_string();
        move |i| {
            let (client, id) = (client.clone(), id.clone());
            async move {
                let req = UpdateTaskRequest {
                    id,
                    resources: Some(resources(quota_for(i))).into(),
                    ..Default::default()
                };
                client
                    .update(
                        containerd_shim::protos::ttrpc::context::with_timeout(5_000_000_000),
                        &req,
                    )
                    .await
                    .expect("update");
            }
        }
    })
    .await;
    for (id, _) in &pod {
        remove(ctx, id);
    }
    samples
}

/// tidal through tidald's API: UpdateResources (what tidalctl and the policy
/// engine send), one API connection per client, until the new quota reads
/// back from the cgroup file.
async fn tidald_resize(ctx: &Ctx, agent: &Tidald, clients: usize, calls: usize) -> Vec<Duration> {
    use tidal::proto::pb;
    let pod = tidal_pod(ctx, &format!("rs-api{clients}"), clients);
    let mut apis = Vec::new();
    for _ in &pod {
        apis.push(tidal::proto::connect(&agent.socket).await.expect("tidald"));
    }
    let mut apis = apis.into_iter();
    let ns = ctx.ns.clone();
    let shim = shim_pid(ctx, &pod[0].0).await;
    let before = [
        cpu_of(agent.pid()),
        cpu_of(shim),
        cpu_of(std::process::id() as i32),
    ];
    let samples = timed_clients(&pod, calls, |id| {
        let api = apis.next().unwrap();
        let target = pb::ContainerRef {
            namespace: ns.clone(),
            id: id.to_string(),
        };
        move |i| {
            let mut api = api.clone();
            let target = target.clone();
            async move {
                assert!(api_resize(&mut api, &target, i).await > 0);
            }
        }
    })
    .await;
    let after = [
        cpu_of(agent.pid()),
        cpu_of(shim),
        cpu_of(std::process::id() as i32),
    ];

    let per_call = |i: usize| (after[i] - before[i]).as_secs_f64() * 1e6 / samples.len() as f64;
    println!(
        "CPU per call, {clients} client(s), {} calls: tidald {:.0} us, the pod's shim {:.0} us, the clients {:.0} us",
        samples.len(),
        per_call(0),
        per_call(1),
        per_call(2)
    );
    for (id, _) in &pod {
        remove(ctx, id);
    }
    samples
}

/// tidal through tidald's resizer in this process, as the policy engine
/// writes: its `Apply`, each change conditional on the revision it was
/// decided at (the one the last change answered). tidald's path for the
/// engine's changes, without the API's HTTP/2 and gRPC in front.
async fn engine_resize(ctx: &Ctx, clients: usize, calls: usize) -> Vec<Duration> {
    use std::{cell::Cell, rc::Rc};
    use tidal::agent::policy::Key;
    let pod = tidal_pod(ctx, &format!("rs-eng{clients}"), clients);
    let dir = std::path::Path::new(&ctx.address).parent().unwrap();
    let apply = tidal::agent::engine_path(dir.join("tidal"));
    let shim = shim_pid(ctx, &pod[0].0).await;
    let me = std::process::id() as i32;
    let before = [cpu_of(shim), cpu_of(me)];
    let samples = timed_clients(&pod, calls, |id| {
        let key = Key {
            namespace: ctx.ns.clone(),
            id: id.to_string(),
        };
        let apply = apply.clone();
        // A new container has no revision yet.
        let basis = Rc::new(Cell::new(0));
        move |i| {
            let (apply, key, basis) = (apply.clone(), key.clone(), basis.clone());
            async move {
                let change = tidal::resize::Change {
                    cpu_millis: Some(quota_for(i) as u64 / 100),
                    ..Default::default()
                };
                let revision = apply
                    .resize(&key, &change, false, "bench".into(), basis.get())
                    .await
                    .expect("resize");
                assert_eq!(revision, basis.get() + 1);
                basis.set(revision);
            }
        }
    })
    .await;
    let after = [cpu_of(shim), cpu_of(me)];
    let per_call = |i: usize| (after[i] - before[i]).as_secs_f64() * 1e6 / samples.len() as f64;
    println!(
        "CPU per call, {clients} writer(s) in this process, {} calls: the pod's shim {:.0} us, this process (the resizer and its writers) {:.0} us",
        samples.len(),
        per_call(0),
        per_call(1)
    );
    for (id, _) in &pod {
        remove(ctx, id);
    }
    samples
}

/// User and system CPU time process `pid` has used so far.
fn cpu_of(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    Duration::from_nanos((f[0] + f[1]) * 1_000_000_000 / hz)
}

/// A ttrpc connection to the shim that serves container `id`.
async fn shim_task(ctx: &Ctx, id: &str) -> containerd_shim::protos::shim_async::TaskClient {
    use containerd_shim::protos::shim_async::{Client, TaskClient};
    let dir = std::path::Path::new(&ctx.address).parent().unwrap();
    let address = std::fs::read_to_string(
        dir.join("state/io.containerd.runtime.v2.task")
            .join(&ctx.ns)
            .join(id)
            .join("address"),
    )
    .unwrap();
    TaskClient::new(Client::connect(address.trim()).await.unwrap())
}

/// The pid of the shim that serves container `id` (Task.Connect).
async fn shim_pid(ctx: &Ctx, id: &str) -> i32 {
    let task = shim_task(ctx, id).await;
    let req = containerd_shim::api::ConnectRequest {
        id: id.to_string(),
        ..Default::default()
    };
    task.connect(
        containerd_shim::protos::ttrpc::context::with_timeout(5_000_000_000),
        &req,
    )
    .await
    .unwrap()
    .shim_pid as i32
}

/// tidald's UpdateResources of container `target` to `quota_for(i)`; the
/// revision it answers.
async fn api_resize(
    api: &mut tidal::proto::pb::resize_client::ResizeClient<tonic::transport::Channel>,
    target: &tidal::proto::pb::ContainerRef,
    i: usize,
) -> u64 {
    api.update_resources(tidal::proto::pb::UpdateResourcesRequest {
        container: Some(target.clone()),
        cpu_millis: Some(quota_for(i) as u64 / 100),
        ..Default::default()
    })
    .await
    .expect("UpdateResources")
    .into_inner()
    .revision
}

/// `tidald_resize` with each client on a thread of its own, as 8 client
/// processes (tidalctl, controllers) would be: no client waits for another
/// client's encoding and decoding on a shared thread.
async fn tidald_resize_threads(
    ctx: &Ctx,
    agent: &Tidald,
    clients: usize,
    calls: usize,
) -> Vec<Duration> {
    use tidal::proto::pb;
    let pod = tidal_pod(ctx, &format!("rs-apit{clients}"), clients);
    let per_client = calls.div_ceil(pod.len());
    let start = std::sync::Arc::new(std::sync::Barrier::new(pod.len()));
    let threads: Vec<_> = pod
        .iter()
        .map(|(id, file)| {
            let (socket, ns, id, file) = (
                agent.socket.clone(),
                ctx.ns.clone(),
                id.clone(),
                file.clone(),
            );
            let start = start.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut api = tidal::proto::connect(&socket).await.expect("tidald");
                    let target = pb::ContainerRef { namespace: ns, id };
                    start.wait();
                    let mut samples = Vec::with_capacity(per_client);
                    for i in 0..per_client {
                        let t = Instant::now();
                        assert!(api_resize(&mut api, &target, i).await > 0);
                        let now = std::fs::read_to_string(&file).unwrap();
                        assert_eq!(now.trim(), quota_for(i).to_string());
                        samples.push(t.elapsed());
                    }
                    samples
                })
            })
        })
        .collect();
    let samples = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    for (id, _) in &pod {
        remove(ctx, id);
    }
    samples
}

/// How soon a revision made through tidald reaches a Watch stream: from the
/// UpdateResources call to the event, and from its answer to the event.
async fn watch_delay(ctx: &Ctx, agent: &Tidald, calls: usize) -> (Vec<Duration>, Vec<Duration>) {
    use tidal::proto::pb;
    let pod = tidal_pod(ctx, "rs-watch", 1);
    let target = pb::ContainerRef {
        namespace: ctx.ns.clone(),
        id: pod[0].0.clone(),
    };
    let mut api = tidal::proto::connect(&agent.socket).await.expect("tidald");
    let mut events = api
        .watch(pb::WatchRequest {
            container: Some(target.clone()),
        })
        .await
        .expect("Watch")
        .into_inner();
    // Let tidald take in the new container before the first change.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut from_call, mut from_answer) = (Vec::new(), Vec::new());
    for i in 0..calls {
        let start = Instant::now();
        let revision = api_resize(&mut api, &target, i).await;
        let answered = Instant::now();
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(5), events.message())
                .await
                .expect("no revision on the Watch stream within 5 s")
                .expect("Watch")
                .expect("Watch ended");
            if ev.revision.is_some_and(|r| r.revision >= revision) {
                break;
            }
        }
        from_call.push(start.elapsed());
        from_answer.push(answered.elapsed());
    }
    remove(ctx, &pod[0].0);
    (from_call, from_answer)
}

/// containerd's Tasks.Update through the runc shim, and `runc update`.
async fn runc_resize(ctx: &Ctx, calls: usize, cli_calls: usize) -> (Vec<Duration>, Vec<Duration>) {
    use containerd_client::services::v1::UpdateTaskRequest;
    // runc's state root is shared by every private containerd on the machine:
    // a name of this run's own.
    let id = &format!("rs-runc-{}", std::process::id());
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
        let quota = quota_for(i);
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
        let quota = quota_for(i);
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

/// A count from the environment, or `default`.
fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn resize(ctx: &Ctx) {
    let calls = env_count("RESIZE_CALLS", 10_000);
    let runc_calls = env_count("RUNC_RESIZE_CALLS", calls);
    let watch_calls = env_count("WATCH_CALLS", 200);
    // RESIZE_ROWS=direct,engine,api,watch,runc (any of them; default all), api8
    // for the 8-client row through tidald alone, clients for it with 2, 4
    // and 6 clients (how the time grows with the clients sharing the
    // machine; asked for by name only).
    let only = std::env::var("RESIZE_ROWS").unwrap_or_default();
    let named = |name: &str| only.split(',').any(|p| p.trim() == name);
    let row = |name: &str| only.is_empty() || named(name);
    println!("## Live resize: call -> new CPU quota readable in the cgroup file\n");
    let mut rows = Vec::new();
    if row("direct") {
        rows.push((
            "tidal: Task.Update to the owning shim",
            1,
            tidal_resize(ctx, 1, calls).await,
        ));
        rows.push((
            "tidal: Task.Update to the owning shim (8 containers, one pod shim)",
            8,
            tidal_resize(ctx, 8, calls).await,
        ));
    }
    if row("engine") {
        rows.push((
            "tidal: tidald's resizer, as the policy engine writes (no API)",
            1,
            engine_resize(ctx, 1, calls).await,
        ));
        rows.push((
            "tidal: tidald's resizer, as the policy engine writes (no API; 8 containers, one pod shim)",
            8,
            engine_resize(ctx, 8, calls).await,
        ));
    }
    let mut watched = None;
    if row("api") || row("api8") || row("watch") || named("clients") {
        // TIDALD_ARGS: more flags for tidald (e.g. "--threads 2").
        let args = std::env::var("TIDALD_ARGS").unwrap_or_default();
        let args: Vec<&str> = args.split_whitespace().collect();
        let agent = Tidald::start(ctx, &args);
        if row("api") {
            rows.push((
                "tidal: tidald UpdateResources",
                1,
                tidald_resize(ctx, &agent, 1, calls).await,
            ));
        }
        if row("api") || row("api8") {
            rows.push((
                "tidal: tidald UpdateResources (8 containers, one pod shim)",
                8,
                tidald_resize(ctx, &agent, 8, calls).await,
            ));
        }
        if named("clients") {
            for n in [2, 4, 6] {
                let name = format!("tidal: tidald UpdateResources ({n} containers, one pod shim)");
                rows.push((name.leak(), n, tidald_resize(ctx, &agent, n, calls).await));
            }
        }
        if row("api") {
            rows.push((
                "tidal: tidald UpdateResources (8 containers, one pod shim; a thread per client)",
                8,
                tidald_resize_threads(ctx, &agent, 8, calls).await,
            ));
        }
        if row("watch") {
            watched = Some(watch_delay(ctx, &agent, watch_calls).await);
        }
        agent.stop().await;
    }
    // The ratio column is against `runc update`'s p50 (1 when not measured).
    let mut runc_p50 = Duration::ZERO;
    if row("runc") {
        let (via_containerd, cli) = runc_resize(ctx, runc_calls, runc_calls).await;
        let mut sorted = cli.clone();
        sorted.sort();
        runc_p50 = percentile(&sorted, 0.5);
        rows.push(("runc shim: containerd Tasks.Update", 1, via_containerd));
        rows.push(("runc update (CLI)", 1, cli));
    }
    println!("| path | concurrent clients | calls | p50 ms | p99 ms | p99.9 ms | runc update p50 / p50 |");
    println!("|---|---|---|---|---|---|---|");
    for (name, clients, samples) in rows {
        println!("{}", pct_table(name, clients, samples, runc_p50));
    }
    if let Some((watch_call, watch_answer)) = watched {
        println!(
            "\n### A revision made through tidald, seen on a Watch stream ({watch_calls} calls)\n"
        );
        println!("| from | p50 ms | p99 ms | max ms |");
        println!("|---|---|---|---|");
        for (from, mut s) in [
            ("the UpdateResources call", watch_call),
            ("its answer", watch_answer),
        ] {
            s.sort();
            println!(
                "| {from} | {:.3} | {:.3} | {:.3} |",
                percentile(&s, 0.5).as_secs_f64() * 1e3,
                percentile(&s, 0.99).as_secs_f64() * 1e3,
                s.last().unwrap().as_secs_f64() * 1e3
            );
        }
    }
    println!();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let iterations: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    // BENCH_ONLY=resize (or a comma-separated list of lifecycle, resize,
    // memory) runs only those parts.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let part = |name: &str| only.is_empty() || only.split(',').any(|p| p.trim() == name);
    let ctx = Ctx::from_args(&args).await;

    if part("lifecycle") {
        lifecycle(&ctx, iterations).await;
    }
    if part("resize") {
        resize(&ctx).await;
    }
    if part("memory") {
        println!(
            "## Shim memory (RSS and PSS of every shim process, from /proc/PID/smaps_rollup)\n"
        );
        println!("| grouping | runtime | containers | shim processes | RSS total MiB | RSS per container MiB | PSS per container MiB |");
        println!("|---|---|---|---|---|---|---|");
        for grouped in [false, true] {
            for row in memory(&ctx, grouped) {
                println!("{row}");
            }
        }
    }
}

async fn lifecycle(ctx: &Ctx, iterations: usize) {
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
            cycle(ctx, &format!("cycle-{name}")).await;
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(), Vec::new()];
    for _ in 0..iterations {
        for (i, (name, _)) in RUNTIMES.iter().enumerate() {
            samples[i].push(cycle(ctx, &format!("cycle-{name}")).await);
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
}

//! One shim serves every container of a pod (grouped by
//! `io.kubernetes.cri.sandbox-id`): one container's slow work must not hold
//! up the others. A shrink with reclaim of a container full of page cache
//! (cgroup v1 reclaims inside the limit write), under a flood of Stats calls
//! for it, runs while its neighbour's Task.Update is timed.

mod common;

use std::time::{Duration, Instant};

use common::{Env, TIDAL};
use containerd_shim::api;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::shim_async::{Client, TaskClient};

const POD: &str = "io.kubernetes.cri.sandbox-id=pod-slow";

fn update(id: &str, resources: &str, notes: &[(&str, &str)]) -> api::UpdateTaskRequest {
    let mut any = Any::new();
    any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    any.value = resources.as_bytes().to_vec();
    api::UpdateTaskRequest {
        id: id.to_string(),
        resources: Some(any).into(),
        annotations: notes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn ctx() -> containerd_shim::protos::ttrpc::context::Context {
    containerd_shim::protos::ttrpc::context::with_timeout(60_000_000_000)
}

/// Times one Update of `id` that changes its CPU quota (to `quota`).
async fn timed_update(client: &TaskClient, id: &str, quota: u64) -> Duration {
    let req = update(
        id,
        &format!(r#"{{"cpu":{{"quota":{quota},"period":100000}}}}"#),
        &[],
    );
    let start = Instant::now();
    client
        .update(ctx(), &req)
        .await
        .unwrap_or_else(|e| panic!("update of {id}: {e:?}"));
    start.elapsed()
}

#[test]
fn a_neighbours_slow_reclaim_and_stats_flood_do_not_delay_an_update() {
    let env = Env::start("podslow");
    // The hog fills its memory cgroup with ~3 GiB of clean page cache
    // (written, synced, read back) and holds it.
    env.run_detached(
        TIDAL,
        "hog",
        &["--annotation", POD],
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/cache bs=1M count=3072 2>/dev/null; sync; \
             cat /cache >/dev/null; touch /ready; exec sleep 1000",
        ],
    );
    env.run_detached(TIDAL, "calm", &["--annotation", POD], &["sleep", "1000"]);
    assert_eq!(env.shims().len(), 1, "one shim for the pod");
    let ready = env.bundle("hog").join("rootfs/ready");
    let since = Instant::now();
    while !ready.exists() {
        assert!(since.elapsed() < Duration::from_secs(120), "hog not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let address = std::fs::read_to_string(env.bundle("calm").join("address")).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (baseline, during, slow) = rt.block_on(async {
        let client = TaskClient::new(Client::connect(&address).await.expect("connect"));
        let mut baseline = Vec::new();
        for i in 0..20 {
            baseline.push(timed_update(&client, "calm", 50_000 + i * 1000).await);
        }

        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A flood of Stats for the hog, from four clients at once.
        let floods: Vec<_> = (0..4)
            .map(|_| {
                let (client, done) = (client.clone(), done.clone());
                tokio::spawn(async move {
                    let mut n = 0u32;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        let req = api::StatsRequest {
                            id: "hog".into(),
                            ..Default::default()
                        };
                        client.stats(ctx(), &req).await.expect("stats of hog");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        // The hog shrunk to 32 MiB: the kernel reclaims its page cache in
        // the limit write.
        let shrink = {
            let (client, done) = (client.clone(), done.clone());
            tokio::spawn(async move {
                let req = update(
                    "hog",
                    r#"{"memory":{"limit":33554432}}"#,
                    &[(tidal::annotations::RESIZE_RECLAIM, "true")],
                );
                let start = Instant::now();
                let result = client.update(ctx(), &req).await;
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                (result, start.elapsed())
            })
        };
        let mut during = Vec::new();
        let mut quota = 90_000;
        while !shrink.is_finished() {
            during.push(timed_update(&client, "calm", quota).await);
            quota = if quota == 90_000 { 91_000 } else { 90_000 };
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (result, slow) = shrink.await.unwrap();
        result.expect("shrink of hog with reclaim");
        for f in floods {
            assert!(f.await.unwrap() > 0, "the flood ran");
        }
        (baseline, during, slow)
    });
    eprintln!(
        "hog's shrink took {slow:?}; calm's Update: before {:?} (max), during {:?} (max of {})",
        baseline.iter().max().unwrap(),
        during.iter().max(),
        during.len()
    );
    // Without a long shrink there is nothing to measure.
    assert!(
        slow > Duration::from_millis(200),
        "shrink took only {slow:?}"
    );
    assert!(during.len() >= 3, "calm was updated {} times", during.len());
    let worst = *during.iter().max().unwrap();
    let mut sorted = baseline.clone();
    sorted.sort();
    let usual = sorted[sorted.len() / 2];
    assert!(
        worst < Duration::from_millis(50).max(usual * 5),
        "calm's Update took {worst:?} while the hog shrank ({usual:?} before): {during:?}"
    );
    env.remove("hog");
    env.remove("calm");
}

/// The freezer state of the cgroup of `pid` (cgroup v1): FROZEN or THAWED.
fn freezer_state(pid: i32) -> String {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cgroups
        .lines()
        .find_map(|l| l.split_once(":freezer:").map(|(_, p)| p.to_string()))
        .expect("a freezer cgroup");
    std::fs::read_to_string(format!("/sys/fs/cgroup/freezer{path}/freezer.state"))
        .unwrap()
        .trim()
        .to_string()
}

/// Pause, Resume and Kill raced from many clients, then Delete raced: each
/// request either happens whole or is refused with FailedPrecondition, the
/// status the shim reports is the container's real one (PAUSED exactly when
/// its cgroup is frozen), the kill ends it and exactly one Delete deletes it.
#[test]
fn racing_lifecycle_requests_leave_the_container_consistent() {
    use containerd_shim::protos::ttrpc::{Code, Error as TtrpcError};
    let env = Env::start("podrace");
    let pid = env.run_detached(TIDAL, "racer", &["--annotation", POD], &["sleep", "1000"]);
    let address = std::fs::read_to_string(env.bundle("racer").join("address")).unwrap();
    let refused_or_ok = |r: Result<(), TtrpcError>, what: &str| match r {
        Ok(()) => true,
        Err(TtrpcError::RpcStatus(s)) if s.code() == Code::FAILED_PRECONDITION => false,
        Err(e) => panic!("{what}: {e:?}"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = TaskClient::new(Client::connect(&address).await.expect("connect"));
        let state = |client: TaskClient| async move {
            let req = api::StateRequest {
                id: "racer".into(),
                ..Default::default()
            };
            client.state(ctx(), &req).await.expect("state").status
        };
        for round in 0..5 {
            let racers: Vec<_> = (0..8)
                .map(|i| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        if i % 2 == 0 {
                            let req = api::PauseRequest {
                                id: "racer".into(),
                                ..Default::default()
                            };
                            ("pause", client.pause(ctx(), &req).await.map(drop))
                        } else {
                            let req = api::ResumeRequest {
                                id: "racer".into(),
                                ..Default::default()
                            };
                            ("resume", client.resume(ctx(), &req).await.map(drop))
                        }
                    })
                })
                .collect();
            let mut done = 0;
            for r in racers {
                let (what, result) = r.await.unwrap();
                done += usize::from(refused_or_ok(result, what));
            }
            assert!(done >= 1, "round {round}: something happened");
            let status = state(client.clone()).await;
            let frozen = freezer_state(pid);
            assert_eq!(
                status == api::Status::PAUSED.into(),
                frozen == "FROZEN",
                "round {round}: the shim says {status:?}, the freezer {frozen}"
            );
        }
        // Kill and Resume raced against a possibly paused container: the
        // kill must still end it.
        let kill = {
            let client = client.clone();
            tokio::spawn(async move {
                let req = api::KillRequest {
                    id: "racer".into(),
                    signal: 9,
                    ..Default::default()
                };
                client.kill(ctx(), &req).await.map(drop)
            })
        };
        let resume = api::ResumeRequest {
            id: "racer".into(),
            ..Default::default()
        };
        let _ = client.resume(ctx(), &resume).await;
        kill.await.unwrap().expect("kill");
        let wait = api::WaitRequest {
            id: "racer".into(),
            ..Default::default()
        };
        tokio::time::timeout(Duration::from_secs(10), client.wait(ctx(), &wait))
            .await
            .expect("the killed container exits")
            .expect("wait");
    });
    // Deletes raced through containerd: exactly one deletes the task.
    let deletes: Vec<_> = (0..4)
        .map(|_| {
            env.ctr_cmd()
                .args(["task", "delete", "racer"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("ctr task delete")
        })
        .collect();
    let deleted = deletes
        .into_iter()
        .filter_map(|mut d| d.wait().ok())
        .filter(|s| s.success())
        .count();
    assert_eq!(deleted, 1, "exactly one Delete deletes it");
    assert!(env.task("racer").is_none(), "the task is gone");
    let _ = env.ctr(&["container", "rm", "racer"]);
    env.assert_no_leftovers("racer");
}

/// Start and Delete of the same exec sent together: never both succeed (an
/// exec deleted while it was being started would run on, unknown to the
/// shim: no Kill, no Wait, no exit event for it). When the Start wins, the
/// exec can be killed and then deleted.
#[test]
fn an_exec_is_either_started_or_deleted_never_both() {
    use containerd_shim::protos::ttrpc::{Code, Error as TtrpcError};
    let env = Env::start("podexec");
    env.run_detached(TIDAL, "host", &["--annotation", POD], &["sleep", "1000"]);
    let address = std::fs::read_to_string(env.bundle("host").join("address")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut started, mut deleted) = (0, 0);
    rt.block_on(async {
        let client = TaskClient::new(Client::connect(&address).await.expect("connect"));
        for n in 0..10 {
            let exec_id = format!("e{n}");
            let mut spec = Any::new();
            spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
            spec.value = br#"{"args":["sleep","1000"],"cwd":"/","env":["PATH=/bin"],"user":{"uid":0,"gid":0}}"#.to_vec();
            let exec = api::ExecProcessRequest {
                id: "host".into(),
                exec_id: exec_id.clone(),
                spec: Some(spec).into(),
                ..Default::default()
            };
            client.exec(ctx(), &exec).await.expect("exec");
            let start = {
                let (client, exec_id) = (client.clone(), exec_id.clone());
                tokio::spawn(async move {
                    let req = api::StartRequest {
                        id: "host".into(),
                        exec_id,
                        ..Default::default()
                    };
                    client.start(ctx(), &req).await
                })
            };
            let delete = {
                let (client, exec_id) = (client.clone(), exec_id.clone());
                tokio::spawn(async move {
                    let req = api::DeleteRequest {
                        id: "host".into(),
                        exec_id,
                        ..Default::default()
                    };
                    client.delete(ctx(), &req).await
                })
            };
            let refused = |e: &TtrpcError| {
                matches!(e, TtrpcError::RpcStatus(s)
                    if s.code() == Code::FAILED_PRECONDITION || s.code() == Code::NOT_FOUND)
            };
            let (start, delete) = (start.await.unwrap(), delete.await.unwrap());
            match (&start, &delete) {
                (Ok(_), Err(e)) if refused(e) => {
                    started += 1;
                    let kill = api::KillRequest {
                        id: "host".into(),
                        exec_id: exec_id.clone(),
                        signal: 9,
                        ..Default::default()
                    };
                    client.kill(ctx(), &kill).await.expect("kill the started exec");
                    let wait = api::WaitRequest {
                        id: "host".into(),
                        exec_id: exec_id.clone(),
                        ..Default::default()
                    };
                    client.wait(ctx(), &wait).await.expect("wait");
                    let del = api::DeleteRequest {
                        id: "host".into(),
                        exec_id,
                        ..Default::default()
                    };
                    client.delete(ctx(), &del).await.expect("delete it");
                }
                (Err(e), Ok(_)) if refused(e) => deleted += 1,
                other => panic!("exec {n}: start and delete gave {other:?}"),
            }
        }
        // No exec process is left running in the container.
        let pids = client
            .pids(
                ctx(),
                &api::PidsRequest {
                    id: "host".into(),
                    ..Default::default()
                },
            )
            .await
            .expect("pids");
        assert_eq!(pids.processes.len(), 1, "only the init: {pids:?}");
    });
    eprintln!("of 10 raced execs {started} started, {deleted} were deleted");
    env.remove("host");
}

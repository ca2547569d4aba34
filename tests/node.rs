//! tidalctl and tidald against real containers under a private containerd.

mod common;

use std::process::Command;

use containerd_shim::protos::protobuf::Message;
use std::time::Duration;

use common::*;

fn tidalctl(env: &Env, args: &[&str]) -> std::process::Output {
    env.tidalctl(args)
}

fn cpu_ns(env: &Env, id: &str) -> u64 {
    let out = tidalctl(env, &["ps", "-o", "json"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .and_then(|c| c["usage"]["cpu_ns"].as_u64())
        .unwrap_or_else(|| panic!("{id} not listed: {all}"))
}

#[test]
fn tidalctl_resizes_a_running_container_and_its_cpu_use_follows() {
    let env = Env::start("ctl");
    let _agent = env.start_agent();
    let pid = env.run_detached(TIDAL, "burner", &[], &["sh", "-c", "while :; do :; done"]);

    let out = tidalctl(&env, &["ps"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("burner") && table.contains(&pid.to_string()),
        "{table}"
    );

    let out = tidalctl(
        &env,
        &["resize", "burner", "--cpu", "200m", "--memory", "64Mi"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cg = tidal::cgroups::Cgroup::of_pid(pid).unwrap();
    let limits = tidal::cgroups::read_limits(&cg);
    assert_eq!(limits.cpu_millis(), Some(200));
    assert_eq!(limits.memory_bytes, Some(64 << 20));
    // Task.Stats reads the same cgroup through the same reader.
    let usage = tidal::cgroups::read_usage(&cg);
    assert!(usage.cpu_ns > 0 && usage.memory_bytes > 0, "{usage:?}");
    let stats = tidal::cgroups::stats::metrics(&cg).unwrap();
    let (limit, cpu) = match stats.type_url.as_str() {
        "io.containerd.cgroups.v1.Metrics" => {
            use containerd_shim::protos::cgroups::metrics::Metrics;
            let m = Metrics::parse_from_bytes(&stats.value).unwrap();
            (m.memory.usage.limit, m.cpu.usage.total)
        }
        _ => {
            use containerd_shim::protos::cgroups_v2::metrics::Metrics;
            let m = Metrics::parse_from_bytes(&stats.value).unwrap();
            (m.memory.usage_limit, m.cpu.usage_usec * 1000)
        }
    };
    assert_eq!(limit, 64 << 20, "Task.Stats shows the new memory limit");
    assert!(cpu >= usage.cpu_ns, "CPU time went back: {cpu} < {usage:?}");
    assert_eq!(
        env.task_pid("burner"),
        Some(pid),
        "the container was not restarted"
    );

    // Within a second the measured CPU use follows the new quota: CPU time
    // over the wall time between the two readings (each a `tidalctl ps`,
    // whose own time counts: it is long in hack/vm's emulated guest).
    std::thread::sleep(Duration::from_millis(300));
    let start = std::time::Instant::now();
    let a = cpu_ns(&env, "burner");
    std::thread::sleep(Duration::from_secs(1));
    let used = (cpu_ns(&env, "burner") - a) as f64 / 1e9;
    let rate = used / start.elapsed().as_secs_f64();
    assert!(
        rate < 0.35,
        "used {rate:.2} CPU-seconds a second with a 200m limit"
    );
    assert!(
        rate > 0.05,
        "used {rate:.2} CPU-seconds a second: the burner is not running"
    );

    // Nonsense is refused, naming the value and showing the current limits.
    let out = tidalctl(&env, &["resize", "burner", "--cpu", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"lots\""));
    let out = tidalctl(&env, &["resize", "burner", "--memory", "4096"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("current limits: cpu=200m memory=64Mi"),
        "{err}"
    );
    let out = tidalctl(&env, &["resize", "nosuch", "--cpu", "1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tidal container \"nosuch\""));
    env.remove("burner");
}

#[test]
fn tidald_exports_metrics_of_running_containers() {
    let env = Env::start("agent");
    env.run_detached(
        TIDAL,
        "web",
        &["--memory-limit", "33554432"],
        &["sleep", "1000"],
    );
    let agent = env.start_agent();
    let body = agent.scrape();
    assert!(agent.stop(), "tidald did not stop cleanly on SIGTERM");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains(
            "tidal_container_memory_limit_bytes{namespace=\"tidal\",container=\"web\"} 33554432"
        ),
        "{body}"
    );
    assert!(body.contains("tidal_containers 1"), "{body}");
    env.remove("web");
}

/// The probes a DaemonSet gives tidald: alive, and ready while its API
/// socket takes connections (here it is removed from under it: not ready,
/// naming the socket).
#[test]
fn tidald_answers_health_and_readiness_probes() {
    let env = Env::start("probes");
    let agent = env.start_agent();
    let healthz = agent.get("/healthz");
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    let readyz = agent.get("/readyz");
    assert!(readyz.starts_with("HTTP/1.1 200"), "{readyz}");
    assert!(readyz.ends_with("ready\n"), "{readyz}");
    let other = agent.get("/nosuch");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    assert!(other.contains("/healthz and /readyz"), "{other}");

    std::fs::remove_file(&agent.socket).unwrap();
    let readyz = agent.get("/readyz");
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    assert!(
        readyz.contains(&format!("not ready: API socket {}", agent.socket.display())),
        "{readyz}"
    );
    let healthz = agent.get("/healthz");
    assert!(
        healthz.starts_with("HTTP/1.1 200"),
        "alive all the same: {healthz}"
    );
    assert!(agent.stop(), "tidald did not stop cleanly on SIGTERM");
}

/// `tidalctl doctor` on a node set up right (a private containerd with its
/// CRI plugin and tidal registered, tidald running): every check passes.
/// Then against a copy of that config with the annotations cut and the
/// shim given by runtime_path only: each problem, with its fix.
#[test]
fn doctor_passes_a_node_set_up_right_and_names_each_problem_with_its_fix() {
    let env = Env::start_cri("doctor");
    let agent = env.start_agent();
    let config = env.dir.join("config.toml");
    let doctor = |config: &std::path::Path| {
        let out = tidalctl(
            &env,
            &["doctor", "--containerd-config", &config.to_string_lossy()],
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = doctor(&config);
    assert_eq!(code, Some(0), "{text}");
    for line in [
        "ok       runtime      handler tidal is io.containerd.tidal.v2",
        "ok       annotations  handler tidal passes tidal's pod annotations",
        "ok       shim         ",
        "ok       tidald       answers on ",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
    assert!(!text.contains("PROBLEM"), "{text}");

    let original = std::fs::read_to_string(&config).unwrap();
    let broken = original
        .replace(
            r#"pod_annotations = ["tidal.dev/*", "trait.tidal.dev/*", "app.oam.dev/*"]"#,
            r#"pod_annotations = ["tidal.dev/*"]"#,
        )
        .replace(
            r#"runtime_type = "io.containerd.tidal.v2""#,
            "runtime_type = \"io.containerd.tidal.v2\"\n      runtime_path = \"/opt/tidal/containerd-shim-tidal-v2\"",
        );
    assert_ne!(broken, original);
    let copy = env.dir.join("broken.toml");
    std::fs::write(&copy, broken).unwrap();
    let (code, text) = doctor(&copy);
    assert_eq!(code, Some(1), "{text}");
    for words in [
        "PROBLEM  containerd   no running containerd reads",
        "do not let trait.tidal.dev/security-policy, app.oam.dev/component through",
        "fix: set pod_annotations = [\"tidal.dev/*\", \"trait.tidal.dev/*\", \"app.oam.dev/*\"]",
    ] {
        assert!(text.contains(words), "{words:?} in\n{text}");
    }
    // Debian 12's containerd (1.6.20) ignores runtime_path.
    let version = std::process::Command::new("containerd")
        .arg("--version")
        .output()
        .unwrap();
    if String::from_utf8_lossy(&version.stdout).contains(" 1.6.20") {
        assert!(
            text.contains("which containerd 1.6.20 ignores (fixed in 1.6.21 and 1.7.1)"),
            "{text}"
        );
    }
    drop(agent);
}

#[test]
fn memory_below_usage_is_refused_and_the_container_keeps_running() {
    let env = Env::start("shrink");
    let _agent = env.start_agent();
    // Hold 20 MB on the container's /dev/shm: tmpfs pages are charged to its
    // memory cgroup and cannot be reclaimed without swap.
    let pid = env.run_detached(
        TIDAL,
        "holder",
        &[],
        &[
            "sh",
            "-c",
            "head -c 20000000 /dev/zero > /dev/shm/fill; sleep 1000",
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    let out = tidalctl(&env, &["resize", "holder", "--memory", "8Mi"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("below current usage"), "{err}");
    // What the operator reads: one "refused", sizes not byte counts, and
    // the way to shrink it anyway.
    assert_eq!(err.matches("refused").count(), 1, "{err}");
    assert!(err.contains("memory limit 8Mi"), "{err}");
    assert!(!err.contains("8388608"), "{err}");
    assert!(err.contains("tidalctl resize --reclaim"), "{err}");
    // Asked to reclaim, the kernel cannot free tmpfs pages: refused again,
    // saying reclaiming was tried rather than suggesting it.
    let out = tidalctl(&env, &["resize", "holder", "--memory", "8Mi", "--reclaim"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("even after reclaiming"), "{err}");
    assert!(!err.contains("--reclaim"), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        env.task("holder"),
        Some((pid, "RUNNING".to_string())),
        "the container was hurt"
    );
    let cg = tidal::cgroups::Cgroup::of_pid(pid).unwrap();
    assert_eq!(
        tidal::cgroups::read_limits(&cg).memory_bytes,
        None,
        "the limit changed anyway"
    );
    env.remove("holder");
}

#[test]
fn every_resize_is_a_revision_and_rollback_restores_it() {
    let env = Env::start("history");
    let _agent = env.start_agent();
    let pid = env.run_detached(TIDAL, "web", &[], &["sleep", "1000"]);
    let ok = |args: &[&str]| {
        let out = tidalctl(&env, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&[
        "resize", "web", "--cpu", "500m", "--memory", "128Mi", "--reason", "first",
    ]);
    ok(&["resize", "web", "--cpu", "250m", "--reason", "second"]);
    ok(&["resize", "web", "--memory", "64Mi"]);
    let revs: serde_json::Value =
        serde_json::from_str(&ok(&["history", "web", "-o", "json"])).unwrap();
    let revs = revs.as_array().unwrap();
    assert_eq!(revs.len(), 3);
    assert_eq!(revs[0]["source"], "operator");
    assert_eq!(revs[1]["reason"], "second");
    assert_eq!(revs[1]["before"]["cpu_quota"]["value"], 50_000);
    assert_eq!(revs[1]["after"]["cpu_quota"]["value"], 25_000);
    let table = ok(&["history", "web"]);
    assert!(table.contains("cpu 500m->250m"), "{table}");

    // Back to right after revision 1: 500m and 128Mi.
    ok(&["rollback", "web", "1"]);
    let limits = tidal::cgroups::read_limits(&tidal::cgroups::Cgroup::of_pid(pid).unwrap());
    assert_eq!(
        (limits.cpu_millis(), limits.memory_bytes),
        (Some(500), Some(128 << 20))
    );
    let revs: serde_json::Value =
        serde_json::from_str(&ok(&["history", "web", "-o", "json"])).unwrap();
    assert_eq!(
        revs.as_array().unwrap().len(),
        4,
        "the rollback is a revision too"
    );
    assert_eq!(revs[3]["reason"], "rollback to revision 1");
    // Back to the start: no limits.
    ok(&["rollback", "web", "0"]);
    let limits = tidal::cgroups::read_limits(&tidal::cgroups::Cgroup::of_pid(pid).unwrap());
    assert_eq!((limits.cpu_quota_us, limits.memory_bytes), (None, None));
    let out = tidalctl(&env, &["rollback", "web", "99"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such revision"));
    env.remove("web");
}

#[test]
fn a_paused_container_stays_paused_through_a_resize() {
    let env = Env::start("paused");
    let _agent = env.start_agent();
    env.run_detached(TIDAL, "frozen", &[], &["sleep", "1000"]);
    env.ctr_ok(&["task", "pause", "frozen"]);
    let out = tidalctl(&env, &["resize", "frozen", "--cpu", "300m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.task("frozen").unwrap().1, "PAUSED");
    env.ctr_ok(&["task", "resume", "frozen"]);
    env.remove("frozen");
}

#[test]
fn resize_racing_delete_never_breaks_the_shim_or_leaves_a_cgroup() {
    let env = Env::start("race");
    let _agent = env.start_agent();
    let pod = "io.kubernetes.cri.sandbox-id=racepod";
    env.run_detached(TIDAL, "anchor", &["--annotation", pod], &["sleep", "1000"]);
    let shim = env.shims()[0];
    for i in 0..15 {
        let id = format!("r{i}");
        env.run_detached(TIDAL, &id, &["--annotation", pod], &["sleep", "1000"]);
        let resizer = {
            let dir = env.dir.join("tidal");
            let id = id.clone();
            std::thread::spawn(move || {
                for n in 0..20 {
                    let cpu = format!("{}m", 100 + n * 10);
                    let _ = Command::new(env!("CARGO_BIN_EXE_tidalctl"))
                        .arg("--state-dir")
                        .arg(&dir)
                        .args(["resize", &id, "--cpu", &cpu])
                        .output();
                }
            })
        };
        env.remove(&id);
        resizer.join().unwrap();
        assert!(
            cgroup_dirs(&id).is_empty(),
            "{id}: cgroup left or re-created: {:?}",
            cgroup_dirs(&id)
        );
    }
    assert_eq!(env.shims(), vec![shim], "the pod's shim died");
    assert_eq!(env.task("anchor").unwrap().1, "RUNNING");
    env.remove("anchor");
}

/// containerd's Tasks.Update is the path kubelet's CRI UpdateContainerResources
/// takes to the shim: it lands in the cgroup and in the history as kubelet's.
#[test]
fn containerd_update_is_recorded_as_kubelet() {
    use containerd_client::services::v1::tasks_client::TasksClient;
    use containerd_client::services::v1::UpdateTaskRequest;
    use containerd_client::tonic::Request;
    use containerd_client::with_namespace;

    let env = Env::start("kubelet");
    let _agent = env.start_agent();
    let pid = env.run_detached(TIDAL, "pod-app", &[], &["sleep", "1000"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = containerd_client::connect(env.socket()).await.unwrap();
        let mut tasks = TasksClient::new(channel);
        let req = UpdateTaskRequest {
            container_id: "pod-app".into(),
            resources: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
                value: br#"{"cpu":{"quota":30000,"period":100000},"memory":{"limit":100663296}}"#
                    .to_vec(),
            }),
            ..Default::default()
        };
        tasks
            .update(with_namespace!(req, NS))
            .await
            .expect("update through containerd");
        // Nonsense is refused through containerd too, with the reason.
        let bad = UpdateTaskRequest {
            container_id: "pod-app".into(),
            resources: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
                value: br#"{"cpu":{"quota":0}}"#.to_vec(),
            }),
            ..Default::default()
        };
        let err = tasks.update(with_namespace!(bad, NS)).await.unwrap_err();
        assert!(err.message().contains("zero or negative quota"), "{err:?}");
    });
    let limits = tidal::cgroups::read_limits(&tidal::cgroups::Cgroup::of_pid(pid).unwrap());
    assert_eq!(
        (limits.cpu_millis(), limits.memory_bytes),
        (Some(300), Some(96 << 20))
    );
    let out = tidalctl(&env, &["history", "pod-app", "-o", "json"]);
    let revs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(revs.as_array().unwrap().len(), 1, "{revs}");
    assert_eq!(revs[0]["source"], "kubelet");
    // kubelet's change is what Kubernetes declares now: no overlay.
    let out = tidalctl(&env, &["ps", "-o", "json"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = all
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "pod-app")
        .unwrap_or_else(|| panic!("{all}"));
    for limits in ["live", "declared"] {
        assert_eq!(c[limits]["cpu_millis"], 300, "{c}");
        assert_eq!(c[limits]["memory_bytes"], 96 << 20, "{c}");
    }
    assert_eq!(c["overlays"], serde_json::json!([]), "{c}");
    env.remove("pod-app");
}

/// kubelet sets memory and swap (CRI gives a container no swap: memsw equal
/// to the limit), an operator then shrinks memory alone, so memsw follows;
/// kubelet raises both again. Rolling back to kubelet's first revision
/// restores a limit and a memsw that v1 accepts together: the operator's
/// revision records the memsw it moved (it once did not, and this rollback
/// failed with EINVAL).
#[test]
fn rollback_across_kubelet_and_operator_memory_changes_restores_memsw() {
    use containerd_client::services::v1::tasks_client::TasksClient;
    use containerd_client::services::v1::UpdateTaskRequest;
    use containerd_client::tonic::Request;
    use containerd_client::with_namespace;

    let env = Env::start("memsw");
    let _agent = env.start_agent();
    let pid = env.run_detached(TIDAL, "memsw-app", &[], &["sleep", "1000"]);
    let memsw = || {
        let cg = tidal::cgroups::Cgroup::of_pid(pid).unwrap();
        let dir = cg.dir("memory").expect("a v1 memory cgroup").to_path_buf();
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .unwrap()
                .trim()
                .to_string()
        };
        (
            read("memory.limit_in_bytes"),
            read("memory.memsw.limit_in_bytes"),
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let kubelet = |mib: u64| {
        rt.block_on(async {
            let channel = containerd_client::connect(env.socket()).await.unwrap();
            let bytes = mib << 20;
            let req = UpdateTaskRequest {
                container_id: "memsw-app".into(),
                resources: Some(prost_types::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
                        .into(),
                    value: format!(r#"{{"memory":{{"limit":{bytes},"swap":{bytes}}}}}"#)
                        .into_bytes(),
                }),
                ..Default::default()
            };
            TasksClient::new(channel)
                .update(with_namespace!(req, NS))
                .await
                .expect("update through containerd");
        })
    };
    let mib = |n: u64| (n << 20).to_string();
    kubelet(128);
    assert_eq!(memsw(), (mib(128), mib(128)));
    let out = tidalctl(&env, &["resize", "memsw-app", "--memory", "96Mi"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        memsw(),
        (mib(96), mib(96)),
        "memsw follows a container without swap"
    );
    kubelet(160);
    assert_eq!(memsw(), (mib(160), mib(160)));

    let out = tidalctl(&env, &["rollback", "memsw-app", "1"]);
    assert!(out.status.success(), "rollback refused: {out:?}");
    assert_eq!(memsw(), (mib(128), mib(128)), "as right after revision 1");
    env.remove("memsw-app");
}

/// tidalctl takes a unique prefix of a container id; an ambiguous one is
/// refused naming the candidates, and nothing is changed.
#[test]
fn tidalctl_names_a_container_by_a_unique_id_prefix() {
    let env = Env::start("prefix");
    let _agent = env.start_agent();
    let one = env.run_detached(TIDAL, "named-web-1abc", &[], &["sleep", "1000"]);
    env.run_detached(TIDAL, "named-web-2xyz", &[], &["sleep", "1000"]);
    let quota = |pid: i32| {
        tidal::cgroups::read_limits(&tidal::cgroups::Cgroup::of_pid(pid).unwrap()).cpu_millis()
    };
    let before = quota(one);

    let out = tidalctl(&env, &["resize", "named-web", "--cpu", "300m"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("names 2 containers")
            && err.contains("named-web-1")
            && err.contains("named-web-2"),
        "{err}"
    );
    assert_eq!(quota(one), before, "an ambiguous name changed something");

    let out = tidalctl(&env, &["resize", "named-web-1", "--cpu", "300m"]);
    assert!(out.status.success(), "{out:?}");
    let out = tidalctl(&env, &["history", "named-web-1", "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(quota(one), Some(300));
    env.remove("named-web-1abc");
    env.remove("named-web-2xyz");
}

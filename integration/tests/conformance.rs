//! CRI conformance: what Kubernetes' CRI validation checks, spoken as CRI v1
//! gRPC to a private containerd, each case run against handler `tidal` and
//! handler `runc` side by side and expected to behave the same.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tidal_integration::cri::v1;
use tidal_integration::env::CriEnv;
use tidal_integration::stream;
use tidal_integration::suite::{self, Case, CaseFuture, Ctx, CASE_LABEL};

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        &[$(Case { name: stringify!($name), run: |ctx| -> CaseFuture { Box::pin($name(ctx)) } }),*]
    };
}

fn main() {
    let ok = suite::run(
        "conformance",
        cases![
            pod_lifecycle,
            pod_list_filters,
            pod_hostname,
            pod_dns_config,
            pod_port_mapping,
            pod_sysctls,
            host_network,
            host_pid,
            host_ipc,
            shared_pid_namespace,
            container_lifecycle,
            container_list_filters,
            stop_grace_period,
            exit_codes,
            logs_cri_format,
            reopen_container_log,
            exec_sync,
            exec_sync_timeout,
            streaming_exec,
            streaming_exec_tty,
            attach,
            port_forward,
            stats,
            update_container_resources,
            run_as_user_and_group,
            run_as_username,
            supplemental_groups,
            privileged,
            capabilities_add_drop,
            capabilities_drop_all,
            readonly_rootfs,
            no_new_privs,
            seccomp_runtime_default,
            seccomp_unconfined,
            seccomp_localhost,
            masked_and_readonly_paths,
            oom_killed,
            mount_private,
            mount_host_to_container,
            mount_bidirectional,
            idempotent_stop_remove,
            shim_executable_cannot_be_overwritten,
            no_process_opens_a_runtime_executable_for_writing,
            no_host_fd_leaks_into_a_container,
        ],
        true,
        Some(nothing_left),
    );
    std::process::exit(if ok { 0 } else { 1 });
}

const RUNNING: i32 = v1::ContainerState::ContainerRunning as i32;
const EXITED: i32 = v1::ContainerState::ContainerExited as i32;
const CREATED: i32 = v1::ContainerState::ContainerCreated as i32;
const READY: i32 = v1::PodSandboxState::SandboxReady as i32;
const NOT_READY: i32 = v1::PodSandboxState::SandboxNotready as i32;

fn sec(c: &mut v1::ContainerConfig) -> &mut v1::LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

fn pod_sec(p: &mut v1::PodSandboxConfig) -> &mut v1::LinuxSandboxSecurityContext {
    p.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

fn set_namespaces(
    p: &mut v1::PodSandboxConfig,
    c: &mut v1::ContainerConfig,
    f: impl Fn(&mut v1::NamespaceOption),
) {
    f(pod_sec(p)
        .namespace_options
        .get_or_insert_with(Default::default));
    f(sec(c)
        .namespace_options
        .get_or_insert_with(Default::default));
}

fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

// ---- pod sandbox ----

async fn pod_lifecycle(ctx: Ctx) {
    let config = ctx.pod_config("pod");
    let pod = ctx.run_pod(&config).await;
    let s = ctx.pod_status(&pod).await;
    assert_eq!(s.state, READY, "a new pod is Ready");
    let ip = s.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
    assert!(
        ip.starts_with(&ctx.shared.subnet_prefix),
        "pod ip {ip:?} is not in the test network {}0/24",
        ctx.shared.subnet_prefix
    );
    assert_eq!(s.metadata.as_ref().unwrap().name, ctx.name("pod"));
    let app = ctx
        .run(&pod, &config, ctx.container("app", &["sleep", "3600"]))
        .await;
    ctx.stop_pod(&pod).await.unwrap();
    assert_eq!(
        ctx.pod_status(&pod).await.state,
        NOT_READY,
        "a stopped pod is NotReady"
    );
    assert_eq!(
        ctx.status(&app).await.state,
        EXITED,
        "stopping a pod stops its containers"
    );
    ctx.remove_pod(&pod).await.unwrap();
    let left = ctx
        .list_pods(v1::PodSandboxFilter {
            id: pod.clone(),
            ..Default::default()
        })
        .await;
    assert!(left.is_empty(), "removed pod still listed: {left:?}");
    let gone = ctx
        .rt
        .clone()
        .pod_sandbox_status(v1::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await;
    assert_eq!(gone.err().map(|e| e.code()), Some(tonic::Code::NotFound));
}

async fn pod_list_filters(ctx: Ctx) {
    let mut a = ctx.pod_config("a");
    a.labels.insert("which".into(), "a".into());
    let mut b = ctx.pod_config("b");
    b.labels.insert("which".into(), "b".into());
    let pa = ctx.run_pod(&a).await;
    let pb = ctx.run_pod(&b).await;
    let by_id = ctx
        .list_pods(v1::PodSandboxFilter {
            id: pa.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(by_id.iter().map(|p| &p.id).collect::<Vec<_>>(), vec![&pa]);
    let mine = [(CASE_LABEL.to_string(), ctx.label())];
    let by_label = ctx
        .list_pods(v1::PodSandboxFilter {
            label_selector: mine
                .iter()
                .cloned()
                .chain([("which".into(), "b".into())])
                .collect(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        by_label.iter().map(|p| &p.id).collect::<Vec<_>>(),
        vec![&pb]
    );
    ctx.stop_pod(&pa).await.unwrap();
    let ready = ctx
        .list_pods(v1::PodSandboxFilter {
            state: Some(v1::PodSandboxStateValue { state: READY }),
            label_selector: mine.iter().cloned().collect(),
            ..Default::default()
        })
        .await;
    assert_eq!(ready.iter().map(|p| &p.id).collect::<Vec<_>>(), vec![&pb]);
    let not_ready = ctx
        .list_pods(v1::PodSandboxFilter {
            state: Some(v1::PodSandboxStateValue { state: NOT_READY }),
            label_selector: mine.iter().cloned().collect(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        not_ready.iter().map(|p| &p.id).collect::<Vec<_>>(),
        vec![&pa]
    );
    assert!(
        by_label[0].runtime_handler == ctx.handler,
        "runtime handler {:?}",
        by_label[0].runtime_handler
    );
}

async fn pod_hostname(ctx: Ctx) {
    let (_, id) = ctx.pod_with(|p, _| p.hostname = "tidal-host".into()).await;
    assert_eq!(ctx.sh(&id, "hostname").await.trim(), "tidal-host");
    assert!(ctx
        .sh(&id, "cat /etc/hostname")
        .await
        .contains("tidal-host"));
}

async fn pod_dns_config(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|p, _| {
            p.dns_config = Some(v1::DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["tidal.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            })
        })
        .await;
    let conf = ctx.sh(&id, "cat /etc/resolv.conf").await;
    for want in [
        "nameserver 10.96.0.10",
        "search tidal.svc.cluster.local",
        "options ndots:5",
    ] {
        assert!(conf.contains(want), "resolv.conf lacks {want:?}: {conf}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads what a TCP server at `addr` says, retrying until it answers.
async fn read_from(addr: &str) -> String {
    use tokio::io::AsyncReadExt;
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
        {
            let mut buf = Vec::new();
            if tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf))
                .await
                .is_ok()
                && !buf.is_empty()
            {
                return String::from_utf8_lossy(&buf).into_owned();
            }
        }
        assert!(Instant::now() < end, "nothing answered at {addr}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn pod_port_mapping(ctx: Ctx) {
    let port = free_port();
    let (_, _id) = ctx
        .pod_with(|p, c| {
            p.port_mappings = vec![v1::PortMapping {
                protocol: v1::Protocol::Tcp as i32,
                container_port: 8080,
                host_port: port as i32,
                host_ip: String::new(),
            }];
            c.command = vec![
                "nc".into(),
                "-ll".into(),
                "-p".into(),
                "8080".into(),
                "-e".into(),
                "echo".into(),
                "mapped".into(),
            ];
        })
        .await;
    let got = read_from(&format!("{}:{port}", ctx.shared.host_ip)).await;
    assert_eq!(got.trim(), "mapped");
}

async fn pod_sysctls(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|p, _| {
            let l = p.linux.get_or_insert_with(Default::default);
            l.sysctls
                .insert("kernel.shm_rmid_forced".into(), "1".into());
            l.sysctls
                .insert("net.ipv4.ip_local_port_range".into(), "40000 50000".into());
        })
        .await;
    assert_eq!(
        ctx.sh(&id, "cat /proc/sys/kernel/shm_rmid_forced")
            .await
            .trim(),
        "1"
    );
    let range = ctx
        .sh(&id, "cat /proc/sys/net/ipv4/ip_local_port_range")
        .await;
    assert_eq!(
        range.split_whitespace().collect::<Vec<_>>(),
        ["40000", "50000"]
    );
}

async fn host_network(ctx: Ctx) {
    let (pod, id) = ctx
        .pod_with(|p, c| {
            // The node's own UTS namespace comes with its network: no hostname.
            p.hostname.clear();
            set_namespaces(p, c, |n| n.network = v1::NamespaceMode::Node as i32)
        })
        .await;
    assert_eq!(
        ctx.sh(&id, "readlink /proc/self/ns/net").await.trim(),
        host_ns("net")
    );
    assert!(ctx
        .pod_status(&pod)
        .await
        .network
        .is_none_or(|n| n.ip.is_empty() || !n.ip.starts_with(&ctx.shared.subnet_prefix)));
    let (_, other) = ctx.pod_with(|_, _| ()).await;
    assert_ne!(
        ctx.sh(&other, "readlink /proc/self/ns/net").await.trim(),
        host_ns("net")
    );
}

async fn host_pid(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|p, c| set_namespaces(p, c, |n| n.pid = v1::NamespaceMode::Node as i32))
        .await;
    assert_eq!(
        ctx.sh(&id, "readlink /proc/self/ns/pid").await.trim(),
        host_ns("pid")
    );
}

async fn host_ipc(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|p, c| set_namespaces(p, c, |n| n.ipc = v1::NamespaceMode::Node as i32))
        .await;
    assert_eq!(
        ctx.sh(&id, "readlink /proc/self/ns/ipc").await.trim(),
        host_ns("ipc")
    );
    let (_, other) = ctx.pod_with(|_, _| ()).await;
    assert_ne!(
        ctx.sh(&other, "readlink /proc/self/ns/ipc").await.trim(),
        host_ns("ipc")
    );
}

async fn shared_pid_namespace(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|p, c| set_namespaces(p, c, |n| n.pid = v1::NamespaceMode::Pod as i32))
        .await;
    assert_eq!(
        ctx.sh(&id, "cat /proc/1/cmdline")
            .await
            .trim_end_matches('\0'),
        "/pause"
    );
    // Without sharing, the container's own process is PID 1.
    let (_, alone) = ctx.pod_with(|_, _| ()).await;
    assert!(ctx
        .sh(&alone, "cat /proc/1/cmdline")
        .await
        .starts_with("sleep"));
}

// ---- containers ----

async fn container_lifecycle(ctx: Ctx) {
    let config = ctx.pod_config("pod");
    let pod = ctx.run_pod(&config).await;
    let id = ctx
        .create(&pod, &config, ctx.container("app", &["sleep", "3600"]))
        .await
        .unwrap();
    let s = ctx.status(&id).await;
    assert_eq!(s.state, CREATED);
    assert_eq!(s.image.as_ref().unwrap().image, suite::IMAGE);
    ctx.start(&id).await.unwrap();
    let s = ctx.status(&id).await;
    assert_eq!(s.state, RUNNING);
    assert!(s.started_at > 0, "started_at unset");
    let t = Instant::now();
    ctx.stop(&id, 2).await.unwrap();
    let s = ctx.status(&id).await;
    assert_eq!(s.state, EXITED);
    assert!(s.finished_at >= s.started_at);
    // sleep (PID 1) ignores SIGTERM, so the grace period ran out: SIGKILL.
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "stopped before the grace period"
    );
    assert_eq!(s.exit_code, 137);
    ctx.remove(&id).await.unwrap();
    let left = ctx
        .list_containers(v1::ContainerFilter {
            id: id.clone(),
            ..Default::default()
        })
        .await;
    assert!(left.is_empty(), "removed container still listed");
}

async fn container_list_filters(ctx: Ctx) {
    let config = ctx.pod_config("pod");
    let pod = ctx.run_pod(&config).await;
    let mut long = ctx.container("long", &["sleep", "3600"]);
    long.labels.insert("which".into(), "long".into());
    let long = ctx.run(&pod, &config, long).await;
    let short = ctx
        .run(&pod, &config, ctx.container("short", &["true"]))
        .await;
    ctx.wait_exited(&short, Duration::from_secs(10)).await;
    let ids = |v: Vec<v1::Container>| {
        let mut v: Vec<String> = v.into_iter().map(|c| c.id).collect();
        v.sort();
        v
    };
    let mut both = vec![long.clone(), short.clone()];
    both.sort();
    let in_pod = ctx
        .list_containers(v1::ContainerFilter {
            pod_sandbox_id: pod.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(ids(in_pod), both);
    let by_id = ctx
        .list_containers(v1::ContainerFilter {
            id: short.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(ids(by_id), vec![short.clone()]);
    let running = ctx
        .list_containers(v1::ContainerFilter {
            pod_sandbox_id: pod.clone(),
            state: Some(v1::ContainerStateValue { state: RUNNING }),
            ..Default::default()
        })
        .await;
    assert_eq!(ids(running), vec![long.clone()]);
    let labelled = ctx
        .list_containers(v1::ContainerFilter {
            label_selector: [
                ("which".to_string(), "long".to_string()),
                (CASE_LABEL.into(), ctx.label()),
            ]
            .into(),
            ..Default::default()
        })
        .await;
    assert_eq!(ids(labelled), vec![long]);
}

async fn stop_grace_period(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            c.command = vec![
                "sh".into(),
                "-c".into(),
                "trap 'exit 0' TERM; while true; do sleep 0.1; done".into(),
            ];
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    ctx.stop(&id, 30).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "a TERM-handling container took {:?}",
        t.elapsed()
    );
    let s = ctx.status(&id).await;
    assert_eq!(
        (s.state, s.exit_code),
        (EXITED, 0),
        "SIGTERM handled: clean exit"
    );
}

async fn exit_codes(ctx: Ctx) {
    let config = ctx.pod_config("pod");
    let pod = ctx.run_pod(&config).await;
    for (code, reason) in [(0, "Completed"), (3, "Error"), (42, "Error")] {
        let id = ctx
            .run(
                &pod,
                &config,
                ctx.container(
                    &format!("exit{code}"),
                    &["sh", "-c", &format!("exit {code}")],
                ),
            )
            .await;
        let s = ctx.wait_exited(&id, Duration::from_secs(10)).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (code, reason));
    }
}

fn read_log(ctx: &Ctx, pod_config: &v1::PodSandboxConfig, name: &str) -> String {
    let path = Path::new(&pod_config.log_directory).join(format!("{name}.log"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} ({}): {e}", path.display(), ctx.handler))
}

/// CRI log lines: `<RFC3339Nano> <stream> <P|F> <text>`.
fn log_lines(log: &str) -> Vec<(String, String)> {
    log.lines()
        .map(|l| {
            let parts: Vec<&str> = l.splitn(4, ' ').collect();
            assert_eq!(parts.len(), 4, "not a CRI log line: {l:?}");
            assert!(
                parts[0].contains('T') && parts[0].ends_with('Z'),
                "bad timestamp in {l:?}"
            );
            assert_eq!(parts[2], "F", "a short line is a full line: {l:?}");
            (parts[1].to_string(), parts[3].to_string())
        })
        .collect()
}

async fn logs_cri_format(ctx: Ctx) {
    let config = ctx.pod_config("pod");
    let pod = ctx.run_pod(&config).await;
    let id = ctx
        .run(
            &pod,
            &config,
            ctx.container(
                "talk",
                &["sh", "-c", "echo to-out; echo to-err >&2; echo again"],
            ),
        )
        .await;
    ctx.wait_exited(&id, Duration::from_secs(10)).await;
    let lines = log_lines(&read_log(&ctx, &config, "talk"));
    let mut got: Vec<(&str, &str)> = lines
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("stderr", "to-err"),
            ("stdout", "again"),
            ("stdout", "to-out")
        ]
    );
    assert_eq!(
        Path::new(&ctx.status(&id).await.log_path),
        Path::new(&config.log_directory).join("talk.log")
    );
}

async fn reopen_container_log(ctx: Ctx) {
    let config = ctx.pod_config("pod");
    let pod = ctx.run_pod(&config).await;
    let id = ctx
        .run(
            &pod,
            &config,
            ctx.container(
                "ticker",
                &[
                    "sh",
                    "-c",
                    "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.1; done",
                ],
            ),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = Path::new(&config.log_directory).join("ticker.log");
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    ctx.rt
        .clone()
        .reopen_container_log(v1::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("ReopenContainerLog: {e}"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let fresh =
        log_lines(&std::fs::read_to_string(&log).expect("ReopenContainerLog made no new log file"));
    assert!(
        fresh.len() >= 2,
        "the new log file gets new lines: {fresh:?}"
    );
    let old = log_lines(&std::fs::read_to_string(&rotated).unwrap());
    assert!(
        old.iter().all(|l| !fresh.contains(l)),
        "lines written twice"
    );
}

async fn exec_sync(ctx: Ctx) {
    let (_, id) = ctx.pod_with(|_, _| ()).await;
    let (code, out, err) = ctx
        .exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 7"])
        .await;
    assert_eq!((code, out.as_str(), err.as_str()), (7, "out\n", "err\n"));
    let (code, _, _) = ctx.exec(&id, &["true"]).await;
    assert_eq!(code, 0);
    let missing = ctx.try_exec(&id, &["/no/such/binary"], 10).await;
    assert!(
        missing.is_err() || missing.as_ref().unwrap().0 != 0,
        "exec of a missing binary succeeded"
    );
}

async fn exec_sync_timeout(ctx: Ctx) {
    let (_, id) = ctx.pod_with(|_, _| ()).await;
    let t = Instant::now();
    let r = ctx.try_exec(&id, &["sleep", "30"], 1).await;
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "ExecSync ignored its 1 s timeout: {:?}",
        t.elapsed()
    );
    let e = r.expect_err("ExecSync past its timeout must fail");
    assert!(
        e.to_lowercase().contains("timeout") || e.contains("deadline"),
        "error does not say timeout: {e}"
    );
    // The container is unharmed.
    assert_eq!(ctx.status(&id).await.state, RUNNING);
}

/// The streaming URL for `sh -c script` in container `id`, with stdin.
async fn exec_url(ctx: &Ctx, id: &str, script: &str, tty: bool, stderr: bool) -> String {
    ctx.rt
        .clone()
        .exec(v1::ExecRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            tty,
            stdin: true,
            stdout: true,
            stderr,
        })
        .await
        .unwrap_or_else(|e| panic!("Exec: {e}"))
        .into_inner()
        .url
}

async fn streaming_exec(ctx: Ctx) {
    let (_, id) = ctx.pod_with(|_, _| ()).await;
    let url = exec_url(
        &ctx,
        &id,
        "read x; echo got:$x; echo oops >&2; exit 5",
        false,
        true,
    )
    .await;
    let out = stream::exec(&url, Some(b"hello\n".to_vec()), false)
        .await
        .unwrap_or_else(|e| panic!("streaming exec at {url}: {e}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got:hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert_eq!(out.exit_code, 5);
}

async fn streaming_exec_tty(ctx: Ctx) {
    let (_, id) = ctx.pod_with(|_, _| ()).await;
    let url = exec_url(
        &ctx,
        &id,
        "test -t 0 && test -t 1 && echo on-a-tty; stty size",
        true,
        false,
    )
    .await;
    let out = stream::exec(&url, Some(Vec::new()), true)
        .await
        .unwrap_or_else(|e| panic!("tty exec at {url}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("on-a-tty"), "no terminal: {text:?}");
    assert_eq!(out.exit_code, 0, "{text:?}");
}

async fn attach(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            c.command = vec!["sh".into(), "-c".into(), "read x; echo attached:$x".into()];
            c.stdin = true;
            c.stdin_once = true;
        })
        .await;
    let url = ctx
        .rt
        .clone()
        .attach(v1::AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .unwrap_or_else(|e| panic!("Attach: {e}"))
        .into_inner()
        .url;
    let out = stream::attach(&url, Some(b"there\n".to_vec()), false)
        .await
        .unwrap_or_else(|e| panic!("attach at {url}: {e}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "attached:there\n");
    let s = ctx.wait_exited(&id, Duration::from_secs(10)).await;
    assert_eq!(s.exit_code, 0);
}

async fn port_forward(ctx: Ctx) {
    let (pod, _) = ctx
        .pod_with(|_, c| {
            c.command = vec![
                "nc".into(),
                "-ll".into(),
                "-p".into(),
                "7070".into(),
                "-e".into(),
                "echo".into(),
                "forwarded".into(),
            ];
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = ctx
        .rt
        .clone()
        .port_forward(v1::PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![7070],
        })
        .await
        .unwrap_or_else(|e| panic!("PortForward: {e}"))
        .into_inner()
        .url;
    let got = stream::port_forward(&url, 7070, b"")
        .await
        .unwrap_or_else(|e| panic!("port-forward at {url}: {e}"));
    assert_eq!(String::from_utf8_lossy(&got).trim(), "forwarded");
}

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

// ---- security context ----

async fn run_as_user_and_group(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            sec(c).run_as_user = Some(v1::Int64Value { value: 1000 });
            sec(c).run_as_group = Some(v1::Int64Value { value: 2000 });
        })
        .await;
    assert_eq!(ctx.sh(&id, "id -u").await.trim(), "1000");
    assert_eq!(ctx.sh(&id, "id -g").await.trim(), "2000");
}

async fn run_as_username(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| sec(c).run_as_username = "tidal".into())
        .await;
    assert_eq!(ctx.sh(&id, "id -u").await.trim(), "1000");
}

async fn supplemental_groups(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            sec(c).run_as_user = Some(v1::Int64Value { value: 1000 });
            sec(c).supplemental_groups = vec![3000, 3001];
        })
        .await;
    let groups = ctx.sh(&id, "id -G").await;
    let groups: Vec<&str> = groups.split_whitespace().collect();
    for g in ["3000", "3001"] {
        assert!(groups.contains(&g), "groups {groups:?} lack {g}");
    }
}

fn host_cap_bound() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string()
}

async fn privileged(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|p, c| {
            pod_sec(p).privileged = true;
            sec(c).privileged = true;
        })
        .await;
    assert_eq!(ctx.proc_status(&id, "CapEff").await, host_cap_bound());
    // The host's devices are there.
    ctx.sh(&id, "test -c /dev/kmsg").await;
    let (_, plain) = ctx.pod_with(|_, _| ()).await;
    assert_ne!(ctx.proc_status(&plain, "CapEff").await, host_cap_bound());
}

fn cap_bit(mask: &str, bit: u32) -> bool {
    u64::from_str_radix(mask, 16).unwrap() & (1 << bit) != 0
}

async fn capabilities_add_drop(ctx: Ctx) {
    const CHOWN: u32 = 0;
    const NET_ADMIN: u32 = 12;
    let (_, plain) = ctx.pod_with(|_, _| ()).await;
    let eff = ctx.proc_status(&plain, "CapEff").await;
    assert!(
        cap_bit(&eff, CHOWN) && !cap_bit(&eff, NET_ADMIN),
        "default set {eff}"
    );
    let (_, id) = ctx
        .pod_with(|_, c| {
            let caps = sec(c).capabilities.get_or_insert_with(Default::default);
            caps.add_capabilities = vec!["NET_ADMIN".into()];
            caps.drop_capabilities = vec!["CHOWN".into()];
        })
        .await;
    let eff = ctx.proc_status(&id, "CapEff").await;
    assert!(
        !cap_bit(&eff, CHOWN) && cap_bit(&eff, NET_ADMIN),
        "CapEff {eff}"
    );
    let (code, _, err) = ctx
        .exec(&id, &["sh", "-c", "touch /tmp/f && chown 1000 /tmp/f"])
        .await;
    assert_ne!(code, 0, "chown worked without CAP_CHOWN");
    assert!(err.contains("not permitted"), "{err}");
    ctx.sh(
        &id,
        "ip link set lo mtu 65000 && ip link show lo | grep -q 'mtu 65000'",
    )
    .await;
    assert_eq!(ctx.proc_status(&id, "CapAmb").await, "0000000000000000");
    assert_eq!(ctx.proc_status(&id, "CapInh").await, "0000000000000000");
}

async fn capabilities_drop_all(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            sec(c)
                .capabilities
                .get_or_insert_with(Default::default)
                .drop_capabilities = vec!["ALL".into()];
        })
        .await;
    for k in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(ctx.proc_status(&id, k).await, "0000000000000000", "{k}");
    }
}

async fn readonly_rootfs(ctx: Ctx) {
    let (_, id) = ctx.pod_with(|_, c| sec(c).readonly_rootfs = true).await;
    let (code, _, err) = ctx.exec(&id, &["touch", "/new-file"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
}

async fn no_new_privs(ctx: Ctx) {
    let (_, id) = ctx.pod_with(|_, c| sec(c).no_new_privs = true).await;
    assert_eq!(ctx.proc_status(&id, "NoNewPrivs").await, "1");
    let (_, plain) = ctx.pod_with(|_, _| ()).await;
    assert_eq!(ctx.proc_status(&plain, "NoNewPrivs").await, "0");
}

fn seccomp(
    kind: v1::security_profile::ProfileType,
    localhost: &str,
) -> Option<v1::SecurityProfile> {
    Some(v1::SecurityProfile {
        profile_type: kind as i32,
        localhost_ref: localhost.into(),
    })
}

async fn seccomp_runtime_default(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            sec(c).seccomp = seccomp(v1::security_profile::ProfileType::RuntimeDefault, "")
        })
        .await;
    assert_eq!(ctx.proc_status(&id, "Seccomp").await, "2");
    // RuntimeDefault blocks what containers must not do, e.g. unshare(2).
    let (code, _, _) = ctx.exec(&id, &["unshare", "-m", "true"]).await;
    assert_ne!(code, 0, "unshare worked under RuntimeDefault");
    // An exec'd process is filtered with the capabilities it asked for, no more.
    let (_, plain) = ctx.pod_with(|_, _| ()).await;
    for k in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        assert_eq!(
            ctx.proc_status(&id, k).await,
            ctx.proc_status(&plain, k).await,
            "{k}"
        );
    }
}

async fn seccomp_unconfined(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            sec(c).seccomp = seccomp(v1::security_profile::ProfileType::Unconfined, "")
        })
        .await;
    assert_eq!(ctx.proc_status(&id, "Seccomp").await, "0");
}

async fn seccomp_localhost(ctx: Ctx) {
    let profile = ctx.shared.dir.join(format!("seccomp-{}.json", ctx.handler));
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .unwrap();
    let path = profile.to_string_lossy().into_owned();
    let (_, id) = ctx
        .pod_with(|_, c| {
            sec(c).seccomp = seccomp(v1::security_profile::ProfileType::Localhost, &path)
        })
        .await;
    assert_eq!(ctx.proc_status(&id, "Seccomp").await, "2");
    let (code, _, err) = ctx.exec(&id, &["mkdir", "/tmp/blocked"]).await;
    assert_ne!(code, 0, "mkdir worked under a profile that blocks it");
    assert!(
        err.contains("Operation not permitted"),
        "mkdir failed, but not with EPERM: {err}"
    );
    ctx.sh(&id, "touch /tmp/allowed").await;
}

async fn masked_and_readonly_paths(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            sec(c).masked_paths = vec!["/proc/kcore".into(), "/proc/timer_list".into()];
            sec(c).readonly_paths = vec!["/proc/sys".into()];
        })
        .await;
    assert_eq!(
        ctx.sh(&id, "wc -c < /proc/timer_list").await.trim(),
        "0",
        "masked file reads empty"
    );
    let mounts = ctx.sh(&id, "cat /proc/mounts").await;
    let sys = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("/proc/sys"))
        .expect("/proc/sys is not a mount");
    assert!(
        sys.split(' ').nth(3).unwrap().split(',').any(|o| o == "ro"),
        "{sys}"
    );
    let (code, _, _) = ctx
        .exec(
            &id,
            &["sh", "-c", "echo 1 > /proc/sys/kernel/shm_rmid_forced"],
        )
        .await;
    assert_ne!(code, 0, "wrote to a read-only /proc/sys");
}

async fn oom_killed(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            c.command = vec!["sh".into(), "-c".into(), "sleep 0.5; tail /dev/zero".into()];
            c.linux.get_or_insert_with(Default::default).resources =
                Some(v1::LinuxContainerResources {
                    memory_limit_in_bytes: 32 * 1024 * 1024,
                    ..Default::default()
                });
        })
        .await;
    let s = ctx.wait_exited(&id, Duration::from_secs(30)).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "OOMKilled"));
}

// ---- mounts ----

fn run(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd} failed");
}

/// A host directory on a mount of its own with `propagation` (shared/slave/private).
fn volume(ctx: &Ctx, what: &str) -> String {
    let d = ctx.shared.dir.join(format!("vol-{}-{what}", ctx.handler));
    std::fs::create_dir_all(&d).unwrap();
    let d = d.to_string_lossy().into_owned();
    run(&format!("mount --bind {d} {d} && mount --make-shared {d}"));
    d
}

fn unmount_all(dir: &str) {
    let _ = Command::new("umount").args(["-R", "-l", dir]).status();
}

fn mount(host: &str, propagation: v1::MountPropagation) -> v1::Mount {
    v1::Mount {
        container_path: "/vol".into(),
        host_path: host.into(),
        readonly: false,
        propagation: propagation as i32,
        ..Default::default()
    }
}

async fn propagation_case(ctx: Ctx, what: &str, prop: v1::MountPropagation) -> (String, String) {
    let d = volume(&ctx, what);
    std::fs::write(format!("{d}/hello"), "from-host").unwrap();
    let m = mount(&d, prop);
    let privileged = prop == v1::MountPropagation::PropagationBidirectional;
    let (_, id) = ctx
        .pod_with(|p, c| {
            c.mounts = vec![m];
            if privileged {
                pod_sec(p).privileged = true;
                sec(c).privileged = true;
            }
        })
        .await;
    assert_eq!(ctx.sh(&id, "cat /vol/hello").await, "from-host");
    (d, id)
}

async fn mount_private(ctx: Ctx) {
    let (d, id) = propagation_case(
        ctx.clone(),
        "private",
        v1::MountPropagation::PropagationPrivate,
    )
    .await;
    std::fs::create_dir_all(format!("{d}/late")).unwrap();
    run(&format!("mount -t tmpfs tidal-late {d}/late"));
    let mounts = ctx.sh(&id, "cat /proc/mounts").await;
    unmount_all(&d);
    assert!(
        !mounts.contains(" /vol/late "),
        "a private volume saw a later host mount"
    );
}

async fn mount_host_to_container(ctx: Ctx) {
    let (d, id) = propagation_case(
        ctx.clone(),
        "rslave",
        v1::MountPropagation::PropagationHostToContainer,
    )
    .await;
    std::fs::create_dir_all(format!("{d}/late")).unwrap();
    run(&format!("mount -t tmpfs tidal-late {d}/late"));
    let mounts = ctx.sh(&id, "cat /proc/mounts").await;
    unmount_all(&d);
    assert!(
        mounts.contains(" /vol/late "),
        "an rslave volume did not see the host's later mount"
    );
}

async fn mount_bidirectional(ctx: Ctx) {
    let (d, id) = propagation_case(
        ctx.clone(),
        "rshared",
        v1::MountPropagation::PropagationBidirectional,
    )
    .await;
    ctx.sh(
        &id,
        "mkdir -p /vol/inner && mount -t tmpfs tidal-inner /vol/inner",
    )
    .await;
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let seen = host
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&format!("{d}/inner")));
    ctx.sh(&id, "umount /vol/inner").await;
    unmount_all(&d);
    assert!(
        seen,
        "the host did not see a mount made in an rshared volume"
    );
}

// ---- idempotence ----

async fn idempotent_stop_remove(ctx: Ctx) {
    let (pod, id) = ctx.pod_with(|_, _| ()).await;
    ctx.stop(&id, 0).await.unwrap();
    ctx.stop(&id, 0).await.expect("second StopContainer");
    ctx.remove(&id).await.unwrap();
    ctx.remove(&id).await.expect("second RemoveContainer");
    ctx.stop_pod(&pod).await.unwrap();
    ctx.stop_pod(&pod).await.expect("second StopPodSandbox");
    ctx.remove_pod(&pod).await.unwrap();
    ctx.remove_pod(&pod).await.expect("second RemovePodSandbox");
}

// ---- the runtime's executable ----

/// The pid of the shim that serves `pod` under `handler`.
fn shim_pid(handler: &str, pod: &str) -> i32 {
    let out = Command::new("pgrep")
        .args(["-f", &format!("containerd-shim-{handler}-v2 .*-id {pod}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<i32> = text
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(pids.len(), 1, "one shim for pod {pod}: {pids:?}");
    pids[0]
}

/// runc's CVE-2019-5736 from a container in the host's pid namespace: open
/// the shim's executable through /proc/PID/exe for writing (`: >>` appends
/// nothing and never truncates). tidal's shim runs its binary from a
/// read-only mount: EROFS. runc's Go shim is not sealed; while it runs the
/// open fails with ETXTBSY. Neither may open.
async fn shim_executable_cannot_be_overwritten(ctx: Ctx) {
    let (pod, id) = ctx
        .pod_with(|p, c| {
            set_namespaces(p, c, |n| n.pid = v1::NamespaceMode::Node as i32);
            // To reach /proc/PID/exe of a process with more capabilities.
            sec(c)
                .capabilities
                .get_or_insert_with(Default::default)
                .add_capabilities = vec!["SYS_PTRACE".into()];
        })
        .await;
    let shim = shim_pid(ctx.handler, &pod);
    let script = format!("readlink /proc/{shim}/exe; : >> /proc/{shim}/exe && echo OPENED");
    let (code, out, err) = ctx.exec(&id, &["sh", "-c", &script]).await;
    assert!(
        code != 0 && !out.contains("OPENED"),
        "the shim's executable was opened for writing from a container: {out}{err}"
    );
    if ctx.handler == "tidal" {
        assert!(err.contains("Read-only file system"), "{out}{err}");
    } else {
        assert!(
            err.contains("Read-only file system") || err.contains("Text file busy"),
            "{out}{err}"
        );
    }
}

/// Inside an ordinary container, a loop opens every process's executable for
/// writing while execs start and end in the container: processes that
/// enter the container run the runtime's binary until they exec. No open
/// may succeed.
async fn no_process_opens_a_runtime_executable_for_writing(ctx: Ctx) {
    let config = ctx.pod_config("pod");
    let pod = ctx.run_pod(&config).await;
    let script = "while :; do for f in /proc/[0-9]*/exe; do \
                  (: >> $f) 2>/dev/null && echo OPENED $(readlink $f); done; done";
    let id = ctx
        .run(&pod, &config, ctx.container("race", &["sh", "-c", script]))
        .await;
    for _ in 0..40 {
        let (code, out, _) = ctx.exec(&id, &["echo", "exec"]).await;
        assert_eq!((code, out.as_str()), (0, "exec\n"));
    }
    let log = read_log(&ctx, &config, "race");
    assert!(!log.contains("OPENED"), "opened for writing: {log}");
    assert_eq!(ctx.status(&id).await.state, RUNNING);
}

/// A container's init and an exec see only their stdio: nothing of the shim,
/// a helper or containerd is left open in them.
async fn no_host_fd_leaks_into_a_container(ctx: Ctx) {
    let config = ctx.pod_config("pod");
    let pod = ctx.run_pod(&config).await;
    // `ls` is the container's init itself; 3 is the directory it reads.
    let init = ctx
        .run(
            &pod,
            &config,
            ctx.container("init", &["ls", "/proc/self/fd"]),
        )
        .await;
    let s = ctx.wait_exited(&init, Duration::from_secs(10)).await;
    assert_eq!(s.exit_code, 0);
    let listed: Vec<String> = log_lines(&read_log(&ctx, &config, "init"))
        .into_iter()
        .map(|(_, fd)| fd)
        .collect();
    assert_eq!(listed, ["0", "1", "2", "3"], "the init's descriptors");
    let app = ctx
        .run(&pod, &config, ctx.container("app", &["sleep", "3600"]))
        .await;
    let (code, out, err) = ctx.exec(&app, &["ls", "/proc/self/fd"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"],
        "an exec's descriptors"
    );
}

// ---- after every case ----

/// With every pod removed: no shim, container process, cgroup, mount,
/// socket, veth or port-mapping rule of this environment is left.
fn nothing_left(env: &CriEnv) -> Result<(), String> {
    let dir = env.dir.to_string_lossy().into_owned();
    let mut problems = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        problems.clear();
        let shims = Command::new("pgrep")
            .args(["-f", &format!("containerd-shim-.* -address {dir}/")])
            .output()
            .unwrap();
        if !shims.stdout.is_empty() {
            problems.push(format!(
                "shims still running: {}",
                String::from_utf8_lossy(&shims.stdout).trim()
            ));
        }
        let root = format!("tidal-conformance-{}", std::process::id());
        for cg in suite::cgroups_below(&root) {
            let depth = cg.components().count();
            let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
            if !procs.trim().is_empty() {
                problems.push(format!("processes in {}: {}", cg.display(), procs.trim()));
            }
            // /sys/fs/cgroup/<ctl>/<root>/<pod>/<container>: pods' own
            // parents are kubelet's to remove, containers' are the runtime's.
            if depth > 7 {
                problems.push(format!("cgroup left: {}", cg.display()));
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for m in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
            if m.starts_with(&format!("{dir}/")) && !m.contains("/vol-") {
                problems.push(format!("mount left: {m}"));
            }
        }
        let socks = env.tidal_state().join("s");
        if let Ok(rd) = std::fs::read_dir(&socks) {
            for e in rd.flatten() {
                problems.push(format!("socket left: {}", e.path().display()));
            }
        }
        let br = env.var("TIDAL_BRIDGE");
        let veths = Command::new("ip")
            .args(["-o", "link", "show", "master", br])
            .output()
            .unwrap();
        if !veths.stdout.is_empty() {
            problems.push(format!(
                "veths left on {br}: {}",
                String::from_utf8_lossy(&veths.stdout).trim()
            ));
        }
        let nat = Command::new("iptables")
            .args(["-t", "nat", "-S"])
            .output()
            .unwrap();
        for rule in String::from_utf8_lossy(&nat.stdout)
            .lines()
            .filter(|l| l.contains("tidal-test"))
        {
            problems.push(format!("port-mapping rule left: {rule}"));
        }
        if problems.is_empty() || Instant::now() > end {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n    "))
    }
}

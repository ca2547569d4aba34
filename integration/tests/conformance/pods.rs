//! Pod sandboxes: lifecycle, listing, hostname, DNS, port mappings, sysctls
//! and the node's or the pod's namespaces.

use std::time::{Duration, Instant};

use tidal_integration::cri::v1;
use tidal_integration::suite::{Case, Ctx, CASE_LABEL};

use crate::{host_ns, set_namespaces, EXITED, NOT_READY, READY};

pub(crate) const CASES: &[Case] = cases![
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
];

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

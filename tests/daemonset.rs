//! tidald from its image (`hack/image --tidal`), run as
//! `config/kubernetes/tidald.yaml` runs it, with a private containerd and
//! runc (the runtime a DaemonSet's pod gets): two capabilities, a read-only
//! root, seccomp, the node's network, and the node's tidal state and
//! cgroups mounted in. From the node, it must be ready and serve the node's
//! containers.
//!
//! The DaemonSet's hostPID puts tidald in the node's PID namespace, where it
//! watches each container's process (a pidfd). Joining it fails on this
//! machine, which runs in a sandbox that masks parts of its own /proc (the
//! kernel then refuses a new proc mount for that namespace). The test binds
//! the node's /proc over the container's instead: tidald reads the node's
//! containers, but their processes' numbers mean nothing in its own
//! namespace, so it lists them as stopped. What the test asserts is what
//! holds all the same: ready, the API socket in the node's state
//! directory, the node's containers listed, metrics.

mod common;

use std::time::Duration;

use common::*;

/// The pod spec's settings, as ctr's flags (ctr has no `ALL`: every
/// capability containerd gives by default is dropped by name, and the test
/// checks that none is left).
const DAEMONSET: &[&str] = &[
    "--net-host",
    "--read-only",
    "--seccomp",
    "--mount",
    "type=bind,src=/proc,dst=/proc,options=rbind:ro",
];
const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

#[test]
fn tidald_runs_from_its_image_as_its_daemonset_runs_it() {
    let env = Env::start("daemonset");
    env.run_detached(
        TIDAL,
        "app",
        &[
            "--memory-limit",
            "67108864",
            "--annotation",
            "tidal.dev/qos=online",
        ],
        &["sleep", "1000"],
    );
    let name = "localhost/tidal/tidald:test";
    env.import_image("tidal", name);

    // A free loopback port for its metrics and probes.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let state = format!(
        "type=bind,src={},dst=/run/tidal,options=rbind:rw",
        env.dir.join("tidal").display()
    );
    // containerd's task bundles, read-only where tidald looks for them
    // (the DaemonSet mounts the node's /run/containerd/io.containerd.runtime.v2.task).
    let tasks = env.dir.join("state/io.containerd.runtime.v2.task");
    let bundles = format!(
        "type=bind,src={0},dst={0},options=rbind:ro",
        tasks.display()
    );
    let mut args = vec!["run", "-d"];
    args.extend_from_slice(DAEMONSET);
    for cap in DEFAULT_CAPABILITIES {
        args.extend_from_slice(&["--cap-drop", cap]);
    }
    // The two the DaemonSet adds, for the qos trait's probes (setns into a
    // pod's network namespace).
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/kubernetes/tidald.yaml"
    ))
    .unwrap();
    assert!(
        manifest.contains(r#"add: ["SYS_ADMIN", "SYS_PTRACE"]"#),
        "the DaemonSet's capabilities changed: change this test's too"
    );
    args.extend_from_slice(&["--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SYS_PTRACE"]);
    let metrics = format!("--metrics-addr=127.0.0.1:{port}");
    args.extend_from_slice(&[
        "--mount",
        &state,
        "--mount",
        "type=bind,src=/sys/fs/cgroup,dst=/sys/fs/cgroup,options=rbind:ro",
        "--mount",
        &bundles,
        name,
        "tidald-ds",
        "/usr/local/bin/tidald",
        "--state-dir=/run/tidal",
        &metrics,
    ]);
    env.ctr_ok(&args);

    let get = |path: &str| -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return String::new();
        };
        let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body
    };
    let ready = eventually(Duration::from_secs(20), || {
        get("/readyz").starts_with("HTTP/1.1 200")
    });
    assert!(
        ready,
        "not ready: {:?}; task {:?}",
        get("/readyz"),
        env.task("tidald-ds")
    );
    // With CAP_SYS_PTRACE (19) and CAP_SYS_ADMIN (21) and no other.
    let pid = env.task_pid("tidald-ds").unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let line = status.lines().find(|l| l.starts_with(set)).unwrap();
        assert!(line.ends_with("0000000000280000"), "{line}");
    }
    // The node's operator, from the node: tidalctl over the API socket the
    // container made in the node's state directory.
    let out = env.tidalctl(&["ps", "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    let ps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let app = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "app")
        .unwrap_or_else(|| panic!("no app in {ps}"));
    // Read from the container's bundle, through the bundles' mount.
    assert_eq!(app["qos"], "online", "{app}");
    let metrics = get("/metrics");
    assert!(
        metrics.starts_with("HTTP/1.1 200") && metrics.contains("\ntidal_containers "),
        "{metrics}"
    );

    // SIGTERM, as kubelet stops it: tidald exits cleanly and takes its API
    // socket with it.
    env.ctr_ok(&["task", "kill", "tidald-ds"]);
    assert!(env.wait_status("tidald-ds", "STOPPED", Duration::from_secs(10)));
    assert!(
        !env.dir.join("tidal/.api/tidald.sock").exists(),
        "tidald left its API socket"
    );
    env.ctr_ok(&["task", "delete", "tidald-ds"]);
    env.ctr_ok(&["container", "rm", "tidald-ds"]);
    env.remove("app");
}

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
//!
//! Its seccomp profile is the DaemonSet's Localhost one
//! (`config/seccomp/tidald.json`), installed as the DaemonSet's init
//! container installs it (`tidalctl seccomp-profile --install`, from the
//! same image) and given to runc as kubelet would. A busybox under the same
//! profile, capabilities and /proc then shows what the profile refuses
//! (setns into a pod's UTS or IPC namespace, unshare, mount: EPERM) and
//! what it lets through (setns into a pod's network namespace, as tidald's
//! probes do).

mod common;

use std::time::Duration;

use common::*;

/// The pod spec's settings, as ctr's flags (ctr has no `ALL`: every
/// capability containerd gives by default is dropped by name, and the test
/// checks that none is left).
/// Its seccomp profile is given apart (`--seccomp-profile FILE`).
const DAEMONSET: &[&str] = &[
    "--net-host",
    "--read-only",
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
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/kubernetes/tidald.yaml"
    ))
    .unwrap();

    // The init container: the profile out of the image into the node's
    // kubelet seccomp directory (here the test's own), with no capability
    // and the runtime's default profile (the Localhost one is not there yet).
    assert!(
        manifest.contains(
            r#"command: ["/usr/local/bin/tidalctl", "seccomp-profile", "--install", "/var/lib/kubelet/seccomp/tidal"]"#
        ) && manifest.contains("localhostProfile: tidal/tidald.json"),
        "the DaemonSet's seccomp profile changed: change this test's too"
    );
    let kubelet_seccomp = env.dir.join("kubelet/seccomp/tidal");
    std::fs::create_dir_all(&kubelet_seccomp).unwrap();
    let seccomp_mount = format!(
        "type=bind,src={},dst=/var/lib/kubelet/seccomp/tidal,options=rbind:rw",
        kubelet_seccomp.display()
    );
    let mut init = vec!["run", "--rm", "--read-only", "--seccomp"];
    for cap in DEFAULT_CAPABILITIES {
        init.extend_from_slice(&["--cap-drop", cap]);
    }
    init.extend_from_slice(&[
        "--mount",
        &seccomp_mount,
        name,
        "tidald-seccomp-init",
        "/usr/local/bin/tidalctl",
        "seccomp-profile",
        "--install",
        "/var/lib/kubelet/seccomp/tidal",
    ]);
    env.ctr_ok(&init);
    let profile = kubelet_seccomp.join("tidald.json");
    assert_eq!(
        std::fs::read_to_string(&profile).unwrap(),
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/seccomp/tidald.json"
        ))
        .unwrap(),
        "the init container installed another profile"
    );
    let profile = profile.to_str().unwrap().to_string();

    // The pod's settings for tidald's container, under that profile.
    let mut pod = DAEMONSET.to_vec();
    // (ctr's --seccomp-profile needs --seccomp, which alone would be the
    // default profile.)
    pod.extend_from_slice(&["--seccomp", "--seccomp-profile", &profile]);
    for cap in DEFAULT_CAPABILITIES {
        pod.extend_from_slice(&["--cap-drop", cap]);
    }
    // The two the DaemonSet adds, for the qos trait's probes (setns into a
    // pod's network namespace).
    assert!(
        manifest.contains(r#"add: ["SYS_ADMIN", "SYS_PTRACE"]"#),
        "the DaemonSet's capabilities changed: change this test's too"
    );
    pod.extend_from_slice(&["--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SYS_PTRACE"]);
    let mut args = vec!["run", "-d"];
    args.extend_from_slice(&pod);
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
    // With CAP_SYS_PTRACE (19) and CAP_SYS_ADMIN (21) and no other, and
    // one seccomp filter (mode 2).
    let pid = env.task_pid("tidald-ds").unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let line = status.lines().find(|l| l.starts_with(set)).unwrap();
        assert!(line.ends_with("0000000000280000"), "{line}");
    }
    assert!(status.contains("\nSeccomp:\t2\n"), "{status}");

    // What the profile refuses and lets through, with the same capabilities
    // and the node's /proc: a busybox under it, into the app's namespaces.
    let app_pid = env.task_pid("app").unwrap();
    let under_profile = |id: &str, cmd: &[&str]| -> (bool, String) {
        let mut args = vec!["run", "--rm", "--runtime", RUNC];
        args.extend_from_slice(&pod);
        args.extend_from_slice(&[IMAGE, id]);
        args.extend_from_slice(cmd);
        let out = env.ctr(&args);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    };
    // setns into the app's UTS and IPC namespaces, which CAP_SYS_ADMIN alone
    // opens (under the runtime's default profile both work). Its mount
    // namespace the kernel refuses anyway (that takes CAP_SYS_CHROOT too,
    // which the DaemonSet drops), so it would tell nothing of the profile.
    let uts = format!("--uts=/proc/{app_pid}/ns/uts");
    let ipc = format!("--ipc=/proc/{app_pid}/ns/ipc");
    let net = format!("--net=/proc/{app_pid}/ns/net");
    // Each with what busybox says of EPERM (strerror, or mount's own words
    // for EPERM alone).
    for (id, cmd, eperm) in [
        (
            "seccomp-setns-uts",
            vec!["nsenter", &uts, "true"],
            "Operation not permitted",
        ),
        (
            "seccomp-setns-ipc",
            vec!["nsenter", &ipc, "true"],
            "Operation not permitted",
        ),
        (
            "seccomp-unshare",
            vec!["unshare", "-m", "true"],
            "Operation not permitted",
        ),
        (
            "seccomp-mount",
            vec!["mount", "-t", "tmpfs", "tmpfs", "/tmp"],
            "permission denied (are you root?)",
        ),
    ] {
        let (ok, said) = under_profile(id, &cmd);
        assert!(
            !ok && said.contains(eperm),
            "{cmd:?} under tidald's profile: not refused with EPERM: {said}"
        );
    }
    // The probes' own call: setns(fd, CLONE_NEWNET), into the app's network
    // namespace.
    let app_net = std::fs::read_link(format!("/proc/{app_pid}/ns/net")).unwrap();
    let (ok, said) = under_profile(
        "seccomp-setns-net",
        &["nsenter", &net, "readlink", "/proc/self/ns/net"],
    );
    assert!(
        ok && said.trim() == app_net.to_str().unwrap(),
        "setns into the app's network namespace ({app_net:?}) under tidald's profile: {said}"
    );
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

//! The runtime's executable: it cannot be opened for writing from a
//! container, and no host descriptor leaks into one.

use std::process::Command;
use std::time::Duration;

use tidal_integration::cri::v1;
use tidal_integration::suite::{Case, Ctx};

use crate::containers::{log_lines, read_log};
use crate::{sec, set_namespaces, RUNNING};

pub(crate) const CASES: &[Case] = cases![
    shim_executable_cannot_be_overwritten,
    no_process_opens_a_runtime_executable_for_writing,
    no_host_fd_leaks_into_a_container,
];

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

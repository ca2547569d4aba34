//! Recovery through CRI, for handlers `tidal` and `runc`, one at a time
//! (restarting containerd affects every pod): containerd restarted under
//! running pods, and a pod's shim killed with SIGKILL.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tidal_integration::cri::v1;
use tidal_integration::suite::{self, Case, CaseFuture, Ctx};

fn main() {
    let ok = suite::run(
        "recovery",
        &[
            Case {
                name: "containerd_restart",
                run: |ctx| -> CaseFuture { Box::pin(containerd_restart(ctx)) },
            },
            Case {
                name: "shim_killed",
                run: |ctx| -> CaseFuture { Box::pin(shim_killed(ctx)) },
            },
        ],
        false,
        None,
    );
    std::process::exit(if ok { 0 } else { 1 });
}

const RUNNING: i32 = v1::ContainerState::ContainerRunning as i32;
const READY: i32 = v1::PodSandboxState::SandboxReady as i32;

/// Reconnecting after a restart: containerd needs a moment to load its
/// shims, and the client's channel reconnects on its own.
async fn until_answers(ctx: &Ctx, pod: &str) -> v1::PodSandboxStatus {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let r = ctx
            .rt
            .clone()
            .pod_sandbox_status(v1::PodSandboxStatusRequest {
                pod_sandbox_id: pod.into(),
                verbose: false,
            })
            .await;
        match r {
            Ok(r) => return r.into_inner().status.unwrap(),
            Err(e) if Instant::now() < end => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("containerd did not answer after its restart: {e}"),
        }
    }
}

async fn containerd_restart(ctx: Ctx) {
    let config = ctx.pod_config("pod");
    let pod = ctx.run_pod(&config).await;
    let long = ctx
        .run(&pod, &config, ctx.container("long", &["sleep", "3600"]))
        .await;
    let short = ctx
        .run(
            &pod,
            &config,
            ctx.container("short", &["sh", "-c", "sleep 2; exit 7"]),
        )
        .await;
    let env = ctx.env.clone();
    tokio::task::spawn_blocking(move || env.stop_daemon())
        .await
        .unwrap();
    // `short` exits while nobody is listening.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let env = ctx.env.clone();
    tokio::task::spawn_blocking(move || env.start_daemon())
        .await
        .unwrap();
    assert_eq!(
        until_answers(&ctx, &pod).await.state,
        READY,
        "pod after restart"
    );
    assert_eq!(
        ctx.status(&long).await.state,
        RUNNING,
        "container after restart"
    );
    assert_eq!(ctx.sh(&long, "echo alive").await.trim(), "alive");
    let s = ctx.wait_exited(&short, Duration::from_secs(10)).await;
    assert_eq!(
        s.exit_code, 7,
        "the exit while containerd was down, reported after"
    );
}

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

/// Where containerd 1.6 has runc's shim for `pod` bind its socket: in
/// /run/containerd/s/ whatever containerd's own state directory, named by
/// the SHA-256 of `<containerd address>/<namespace>/<pod>`. (tidal's shim
/// binds under its own state directory, which the environment removes.)
fn runc_shim_socket(ctx: &Ctx, pod: &str) -> PathBuf {
    let key = format!("{}/k8s.io/{pod}", ctx.env.var("CONTAINERD_ADDRESS"));
    let out = Command::new("sh")
        .args(["-c", "printf %s \"$1\" | sha256sum", "sh", &key])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text
        .split_whitespace()
        .next()
        .expect("sha256sum printed nothing");
    PathBuf::from("/run/containerd/s").join(hex)
}

/// A path outside the test's directory, removed when this is dropped (also
/// when the case fails before its end).
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn shim_killed(ctx: Ctx) {
    let config = ctx.pod_config("pod");
    let pod = ctx.run_pod(&config).await;
    let app = ctx
        .run(&pod, &config, ctx.container("app", &["sleep", "3600"]))
        .await;
    let shim = shim_pid(ctx.handler, &pod);
    let runc_socket = (ctx.handler == "runc").then(|| Removed(runc_shim_socket(&ctx, &pod)));
    if let Some(Removed(socket)) = &runc_socket {
        assert!(
            socket.exists(),
            "runc's shim socket is not {}",
            socket.display()
        );
    }
    assert!(Command::new("kill")
        .args(["-KILL", &shim.to_string()])
        .status()
        .unwrap()
        .success());
    let s = ctx.wait_exited(&app, Duration::from_secs(20)).await;
    assert_ne!(
        s.exit_code, 0,
        "a container whose shim died did not exit cleanly"
    );
    ctx.stop_pod(&pod)
        .await
        .expect("StopPodSandbox after the shim died");
    ctx.remove_pod(&pod)
        .await
        .expect("RemovePodSandbox after the shim died");
    // A killed shim cannot remove its socket, and containerd does not: the
    // one place outside the test's directory where something stays. The
    // guard removes it however the case ends.
    if let Some(socket) = runc_socket {
        let path = socket.0.clone();
        drop(socket);
        assert!(!path.exists(), "{} is left", path.display());
    }
    // Nothing of the pod is left.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = suite::cgroups_below(&format!("tidal-recovery-{}", std::process::id()))
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(&pod) || p.to_string_lossy().contains(&app))
            .collect();
        let procs = Command::new("pgrep")
            .args(["-f", &format!("-id {pod}")])
            .output()
            .unwrap();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounted = mounts.contains(&pod) || mounts.contains(&app);
        if left.is_empty() && procs.stdout.is_empty() && !mounted {
            break;
        }
        assert!(
            Instant::now() < end,
            "left after the shim was killed: cgroups {left:?}, processes {:?}, mounted {mounted}",
            String::from_utf8_lossy(&procs.stdout)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

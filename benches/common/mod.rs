//! What the benchmarks share: a private containerd's address and namespace
//! with `ctr` over them, and a tidald of the build under test.
//! Each benchmark uses part of it.
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

pub const IMAGE: &str = "docker.io/library/tidal-busybox:latest";

pub struct Ctx {
    pub address: String,
    pub ns: String,
    pub channel: containerd_client::tonic::transport::Channel,
}

impl Ctx {
    /// The benchmark's context from its arguments: ADDRESS [NAMESPACE].
    pub async fn from_args(args: &[String]) -> Ctx {
        let address = args
            .get(1)
            .cloned()
            .expect("usage: BENCH ADDRESS NAMESPACE [ARGS]");
        let ns = args.get(2).cloned().unwrap_or_else(|| "tidal".into());
        let channel = containerd_client::connect(&address)
            .await
            .expect("connect to containerd");
        Ctx {
            address,
            ns,
            channel,
        }
    }

    pub fn ctr(&self, args: &[&str]) -> String {
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

    /// Runs tidal container `id` (no stdio) in pod `sandbox` (one shim per
    /// pod, as under CRI), with ctr `flags`, running `command`.
    pub fn run_in_pod(&self, sandbox: &str, id: &str, flags: &[&str], command: &[&str]) {
        let pod = format!("io.kubernetes.cri.sandbox-id={sandbox}");
        let mut args = vec![
            "run",
            "-d",
            "--null-io",
            "--runtime",
            "io.containerd.tidal.v2",
            "--annotation",
            &pod,
        ];
        args.extend(flags);
        args.extend([IMAGE, id]);
        args.extend(command);
        self.ctr(&args);
    }

    /// ctr, ignoring failure (for cleanup of what may already be gone).
    pub fn ctr_quiet(&self, args: &[&str]) {
        let _ = Command::new("ctr")
            .args(["--address", &self.address, "-n", &self.ns])
            .args(args)
            .output();
    }
}

/// Kills and removes container `id`, whatever is left of it.
pub fn remove(ctx: &Ctx, id: &str) {
    for args in [
        vec!["task", "kill", "-s", "SIGKILL", id],
        vec!["task", "delete", "-f", id],
        vec!["container", "rm", id],
    ] {
        ctx.ctr_quiet(&args);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// tidald, started on this containerd's tidal state dir for the API rows;
/// killed when dropped.
pub struct Tidald {
    child: std::process::Child,
    pub socket: std::path::PathBuf,
}

impl Tidald {
    /// Starts tidald with `args` besides its state dir, socket and metrics
    /// address.
    pub fn start(ctx: &Ctx, args: &[&str]) -> Tidald {
        use std::io::BufRead;
        let dir = std::path::Path::new(&ctx.address).parent().unwrap();
        let socket = dir.join("tidald-bench.sock");
        let binary = std::env::var_os("TIDALD").map_or_else(
            || std::path::PathBuf::from(env!("CARGO_BIN_EXE_tidald")),
            std::path::PathBuf::from,
        );
        let mut child = Command::new(&binary)
            .arg("--state-dir")
            .arg(dir.join("tidal"))
            .arg("--socket")
            .arg(&socket)
            .args(if args.contains(&"--metrics-addr") {
                &[][..]
            } else {
                &["--metrics-addr", "127.0.0.1:0"][..]
            })
            .args(args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        // tidald prints its ready line once the socket is bound.
        let mut line = String::new();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        stderr.read_line(&mut line).unwrap();
        assert!(line.contains("API on"), "tidald did not start: {line:?}");
        // Its later log lines are drained: a closed pipe would fail them.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Tidald { child, socket }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Stops tidald (SIGTERM). Its clients' connections close while this
    /// waits (their tasks run on this runtime); SIGKILL after 10 s.
    pub async fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Tidald {
    /// A bench that fails leaves no tidald behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

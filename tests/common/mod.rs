//! A private containerd per test, with tidal registered, driven through `ctr`.
//! Root only: these tests create real containers.
#![allow(dead_code)]

pub mod held;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const TIDAL: &str = "io.containerd.tidal.v2";
pub const RUNC: &str = "io.containerd.runc.v2";
pub const IMAGE: &str = "docker.io/library/tidal-busybox:latest";
pub const NS: &str = "tidal";

/// Fails loudly rather than passing vacuously when not root.
pub fn require_root() {
    if !nix::unistd::Uid::effective().is_root() {
        panic!("integration tests need root (they start containerd and real containers); run hack/test as root");
    }
}

pub struct Env {
    pub dir: PathBuf,
}

/// The checkout: hack/ and config/ are read from it.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl Env {
    /// Starts a private containerd under a fresh temporary directory.
    pub fn start(name: &str) -> Env {
        Env::start_with(name, &[])
    }

    /// As [`Env::start`], with these variables for `hack/containerd-env`
    /// (TIDAL_CONTAINERD_LOG_LEVEL, for one).
    pub fn start_with(name: &str, vars: &[(&str, &str)]) -> Env {
        Env::up(name, vars, &[])
    }

    /// As [`Env::start`], with containerd's CRI plugin on and tidal
    /// registered as its runtime handler `tidal`, as on a node.
    pub fn start_cri(name: &str) -> Env {
        Env::up(name, &[], &["--cri"])
    }

    /// As [`Env::start`], with tidal's shim found in `shim_dir` (an
    /// installed one) instead of this build's.
    pub fn start_at(name: &str, shim_dir: &Path) -> Env {
        Env::up_at(name, &[], &[], shim_dir)
    }

    fn up(name: &str, vars: &[(&str, &str)], args: &[&str]) -> Env {
        let shim = PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-tidal-v2"));
        Env::up_at(name, vars, args, shim.parent().unwrap())
    }

    fn up_at(name: &str, vars: &[(&str, &str)], args: &[&str], shim_dir: &Path) -> Env {
        require_root();
        let dir = PathBuf::from(format!("/tmp/tidal-it-{name}-{}", std::process::id()));
        let _ = Command::new(repo().join("hack/containerd-env"))
            .args(["down"])
            .arg(&dir)
            .status();
        let out = Command::new(repo().join("hack/containerd-env"))
            .arg("up")
            .arg(&dir)
            .arg(shim_dir)
            .args(args)
            .envs(vars.iter().copied())
            .output()
            .expect("run hack/containerd-env");
        assert!(
            out.status.success(),
            "containerd-env up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Env { dir }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    pub fn ctr_cmd(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(self.socket()).args(["-n", NS]);
        c
    }

    /// Where ctr puts the fifos of the tasks it starts: under the test's
    /// own directory, never the system's `/run/containerd/fifo`.
    pub fn fifo_dir(&self) -> PathBuf {
        self.dir.join("fifo")
    }

    /// ctr with `args`, told to keep its fifos in `fifo_dir` when `args`
    /// start a task or a process (`run`, `task exec|start`; ctr's `task
    /// attach` has no such flag).
    pub fn ctr_with(&self, args: &[&str]) -> Command {
        let mut c = self.ctr_cmd();
        let at = match args {
            ["run", ..] => 1,
            ["task" | "tasks" | "t", "exec" | "start", ..] => 2,
            _ => 0,
        };
        c.args(&args[..at]);
        if at > 0 {
            c.arg("--fifo-dir").arg(self.fifo_dir());
        }
        c.args(&args[at..]);
        c
    }

    /// Runs ctr with `args`, returning its output whatever the exit code.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_with(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// Runs ctr and insists it succeeds; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr run --rm` of `cmd` under `runtime`: (exit code, stdout).
    pub fn run(&self, runtime: &str, id: &str, cmd: &[&str]) -> (i32, String) {
        let mut args = vec!["run", "--rm", "--runtime", runtime, IMAGE, id];
        args.extend_from_slice(cmd);
        let out = self.ctr(&args);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// `ctr run --rm` of `cmd` under tidal, attached, without waiting: the
    /// caller gets the ctr process with piped stdin and stdout.
    pub fn spawn_run(&self, id: &str, extra: &[&str], cmd: &[&str]) -> std::process::Child {
        self.ctr_with(&["run", "--rm", "--runtime", TIDAL])
            .args(extra)
            .arg(IMAGE)
            .arg(id)
            .args(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ctr run")
    }

    /// `ctr events`, running; its stdout is piped.
    pub fn spawn_events(&self) -> std::process::Child {
        let child = self
            .ctr_cmd()
            .arg("events")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ctr events");
        std::thread::sleep(Duration::from_millis(200));
        child
    }

    /// Starts a detached container; returns its init pid.
    pub fn run_detached(&self, runtime: &str, id: &str, extra: &[&str], cmd: &[&str]) -> i32 {
        let mut args = vec!["run", "-d", "--runtime", runtime];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        args.push(id);
        args.extend_from_slice(cmd);
        self.ctr_ok(&args);
        self.task_pid(id).expect("task has a pid")
    }

    /// (pid, status) of task `id` from `ctr task ls`.
    pub fn task(&self, id: &str) -> Option<(i32, String)> {
        let out = self.ctr_ok(&["task", "ls"]);
        out.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| (f[1].parse().unwrap_or(0), f[2].to_string()))
        })
    }

    pub fn task_pid(&self, id: &str) -> Option<i32> {
        self.task(id).map(|t| t.0)
    }

    pub fn wait_status(&self, id: &str, status: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.task(id).map(|t| t.1) == Some(status.to_string()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills (SIGKILL), deletes the task and removes the container.
    pub fn remove(&self, id: &str) {
        let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        self.wait_status(id, "STOPPED", Duration::from_secs(10));
        let _ = self.ctr(&["task", "delete", id]);
        let _ = self.ctr(&["container", "rm", id]);
    }

    /// The bundle containerd made for container `id`.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.dir
            .join("state/io.containerd.runtime.v2.task")
            .join(NS)
            .join(id)
    }

    /// Running tidal shim processes of this environment.
    pub fn shims(&self) -> Vec<i32> {
        processes_with(&format!("containerd-shim-tidal-v2 -namespace {NS} -id"))
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| {
                        String::from_utf8_lossy(&c).contains(&*self.socket().to_string_lossy())
                    })
                    .unwrap_or(false)
            })
            .collect()
    }

    /// Asserts that container `id` left nothing behind: no cgroup, no mount of
    /// its bundle, no libcontainer state, no shim socket or shim process.
    ///
    /// Waits up to 5 s first: after a shim dies, containerd cleans up (runs
    /// the shim's `delete`) in the background, also after its clients were
    /// answered.
    pub fn assert_no_leftovers(&self, id: &str) {
        let state = self.dir.join("tidal").join(NS).join(id);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5)
            && !(self.shim_sockets().is_empty()
                && self.shims().is_empty()
                && cgroup_dirs(id).is_empty()
                && !state.exists())
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            cgroup_dirs(id).is_empty(),
            "cgroups left: {:?}",
            cgroup_dirs(id)
                .iter()
                .map(|d| {
                    let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                    let who: Vec<String> = procs
                        .split_whitespace()
                        .map(|p| {
                            let cmd =
                                std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                            format!("{p} {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
                        })
                        .collect();
                    format!("{} holding {who:?}", d.display())
                })
                .collect::<Vec<_>>()
        );
        let bundle = self.bundle(id);
        assert!(
            mounts_with(&bundle.to_string_lossy()).is_empty(),
            "mounts left"
        );
        assert!(
            self.shim_sockets().is_empty(),
            "sockets left: {:?}",
            self.shim_sockets()
        );
        assert!(
            self.shims().is_empty(),
            "shim processes left: {:?}",
            self.shims()
        );
        assert!(
            !state.exists(),
            "state left: {:?} ({}); containerd's log of it:\n{}",
            std::fs::read_dir(&state)
                .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
                .unwrap_or_default(),
            std::fs::read_to_string(state.join("state.json")).unwrap_or_default(),
            self.log_of(id)
        );
        assert!(
            system_fifos(id).is_empty(),
            "fifos left in the system containerd's directory: {:?}",
            system_fifos(id)
        );
    }

    /// The lines of containerd's log that name `id`.
    pub fn log_of(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(id))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// tidal's shim sockets.
    pub fn shim_sockets(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.join("tidal/s"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

/// A running tidald of an environment; stopped with SIGTERM when dropped.
pub struct Agent {
    child: std::process::Child,
    /// HOST:PORT of its metrics endpoint.
    pub metrics: String,
    pub socket: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Agent {
    /// tidald's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Kills tidald with SIGKILL, as a crash or the OOM killer would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops tidald with SIGTERM; true when it exited cleanly.
    pub fn stop(mut self) -> bool {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::SIGTERM,
        );
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// GET /metrics.
    pub fn scrape(&self) -> String {
        self.get("/metrics")
    }

    /// GET `path` on the metrics address: the whole answer, status line
    /// and headers included.
    pub fn get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.metrics).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    }
}

impl Env {
    /// Starts tidald on this environment's state, with its API socket in the
    /// default place (where `tidalctl --state-dir` looks) and metrics on an
    /// ephemeral loopback port.
    pub fn start_agent(&self) -> Agent {
        self.start_agent_with(&[])
    }

    /// `start_agent`, with more of tidald's flags (e.g. `--policy FILE`).
    /// Its log after the ready line is drained (a full pipe would stop it).
    pub fn start_agent_with(&self, extra: &[&str]) -> Agent {
        use std::io::BufRead;
        let state = self.dir.join("tidal");
        let socket = tidal::paths::default_socket(&state);
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidald"))
            .arg("--state-dir")
            .arg(&state)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tidald");
        // "tidald: API on ..., metrics on http://127.0.0.1:PORT/metrics, ..."
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap_or(0) > 0 && !line.contains("http://") {
            line.clear();
        }
        std::thread::spawn(move || {
            let mut rest = String::new();
            while stderr.read_line(&mut rest).unwrap_or(0) > 0 {
                rest.clear();
            }
        });
        let metrics = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("no metrics address in {line:?}"))
            .to_string();
        let start = Instant::now();
        while !socket.exists() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent {
            child,
            metrics,
            socket,
        }
    }

    /// Builds one of tidal's own images (`hack/image --KIND`, from this
    /// build's static binaries) as `name` and imports it here.
    pub fn import_image(&self, kind: &str, name: &str) {
        let bin = Path::new(env!("CARGO_BIN_EXE_tidald")).parent().unwrap();
        let image = self.dir.join(format!("{kind}.tar"));
        let built = Command::new(repo().join("hack/image"))
            .arg(format!("--{kind}"))
            .arg(&image)
            .arg(bin)
            .arg(name)
            .output()
            .unwrap();
        assert!(built.status.success(), "{built:?}");
        self.ctr_ok(&["images", "import", &image.to_string_lossy()]);
        std::fs::remove_file(&image).unwrap();
    }

    /// Runs tidalctl against this environment's tidald.
    pub fn tidalctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tidalctl"))
            .arg("--state-dir")
            .arg(self.dir.join("tidal"))
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("hack/containerd-env"))
            .arg("down")
            .arg(&self.dir)
            .status();
    }
}

/// Fifos of task `id` in the system containerd's fifo directory
/// (`/run/containerd/fifo/<set>/<id>-std*`), where ctr puts them unless
/// told otherwise: tests must leave none there.
pub fn system_fifos(id: &str) -> Vec<PathBuf> {
    let prefix = format!("{id}-std");
    let Ok(sets) = std::fs::read_dir("/run/containerd/fifo") else {
        return Vec::new();
    };
    sets.flatten()
        .filter_map(|set| std::fs::read_dir(set.path()).ok())
        .flat_map(|files| files.flatten().map(|f| f.path()))
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect()
}

/// Cgroup directories of container `id` (ctr puts it at /NS/id) that exist.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let Ok(entries) = std::fs::read_dir(base) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path().join(NS).join(id);
            if p.exists() {
                found.push(p);
            }
        }
        let p = Path::new(base).join(NS).join(id);
        if p.exists() {
            found.push(p);
        }
    }
    found
}

/// Mount points that mention `needle`.
pub fn mounts_with(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

/// Pids whose command line mentions `needle`.
pub fn processes_with(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            // Arguments are NUL-separated.
            let cmd: Vec<u8> = cmd.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
            if String::from_utf8_lossy(&cmd).contains(needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// `tidalctl ARGS` against `env`'s tidald, which must succeed, its output
/// parsed as JSON.
/// tidalctl's stdout, insisting it succeeded.
pub fn tidalctl_ok(env: &Env, args: &[&str]) -> String {
    let out = env.tidalctl(args);
    assert!(
        out.status.success(),
        "tidalctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn tidalctl_json(env: &Env, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&tidalctl_ok(env, args)).unwrap()
}

/// containerd's Tasks.Update with OCI LinuxResources as JSON: what kubelet's
/// UpdateContainerResources becomes.
pub fn containerd_update(env: &Env, id: &str, resources: &str) {
    use containerd_client::services::v1::tasks_client::TasksClient;
    use containerd_client::services::v1::UpdateTaskRequest;
    use containerd_client::tonic::Request;
    use containerd_client::with_namespace;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = containerd_client::connect(env.socket()).await.unwrap();
        let req = UpdateTaskRequest {
            container_id: id.into(),
            resources: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
                value: resources.as_bytes().to_vec(),
            }),
            ..Default::default()
        };
        TasksClient::new(channel)
            .update(with_namespace!(req, NS))
            .await
            .expect("update through containerd");
    });
}

/// How long `cond` took to hold, polling every 100 ms; None if it did not
/// within `limit`.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Whether `cond` holds within `limit` (`wait_for`).
pub fn eventually(limit: Duration, cond: impl FnMut() -> bool) -> bool {
    wait_for(limit, cond).is_some()
}

/// Whether this host runs cgroup v2 with its controllers (a unified
/// hierarchy, as in hack/vm's guest), not v1 or a hybrid.
pub fn unified() -> bool {
    std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
}

/// Container `id` of this environment's namespace, as tidald's API names it.
pub fn target(id: &str) -> Option<tidal::proto::pb::ContainerRef> {
    Some(tidal::proto::pb::ContainerRef {
        namespace: NS.into(),
        id: id.into(),
    })
}

/// (cpu millis, memory bytes) of some limits.
pub fn cpu_mem(l: &Option<tidal::proto::pb::Limits>) -> (Option<u64>, Option<u64>) {
    let l = l.clone().expect("limits");
    (l.cpu_millis, l.memory_bytes)
}

//! The conformance runner: every case runs once per runtime handler
//! (`tidal`, `runc`) against one private containerd, and reports in libtest's
//! words so that `hack/test` counts it with the rest.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::cri::v1;
use crate::cri::v1::runtime_service_client::RuntimeServiceClient;
use crate::env::CriEnv;

pub const HANDLERS: [&str; 2] = ["tidal", "runc"];
pub const IMAGE: &str = "docker.io/library/tidal-busybox:latest";
/// The label that ties every pod to the case that made it, for cleanup.
pub const CASE_LABEL: &str = "tidal.test/case";

pub type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
pub type CaseFn = fn(Ctx) -> CaseFuture;
/// A check run once all cases are done, e.g. that nothing was left behind.
pub type EndCheck = fn(&CriEnv) -> Result<(), String>;

/// One case: a name and the body, run once per handler.
#[derive(Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub run: CaseFn,
}

/// What every case gets: the handler under test and a CRI client.
#[derive(Clone)]
pub struct Ctx {
    pub handler: &'static str,
    pub case: &'static str,
    pub rt: RuntimeServiceClient<Channel>,
    pub shared: Arc<Shared>,
    pub env: Arc<CriEnv>,
}

/// Facts about the environment, shared by all cases.
pub struct Shared {
    pub dir: PathBuf,
    pub host_ip: String,
    pub subnet_prefix: String,
    pub tidal_state: PathBuf,
    /// Every pod's cgroup parent: `/<this>/...` in each hierarchy.
    pub cgroup_root: String,
}

impl Shared {
    pub fn new(env: &CriEnv, cgroup_root: &str) -> Shared {
        Shared {
            dir: env.dir.clone(),
            host_ip: env.host_ip(),
            subnet_prefix: env.host_ip().trim_end_matches('1').to_string(),
            tidal_state: env.tidal_state(),
            cgroup_root: cgroup_root.to_string(),
        }
    }
}

fn msg(e: tonic::Status) -> String {
    format!("{:?}: {}", e.code(), e.message())
}

impl Ctx {
    /// A unique name for a pod or container of this case and handler.
    pub fn name(&self, what: &str) -> String {
        format!("{}-{}-{what}", self.case.replace('_', "-"), self.handler)
    }

    /// A pod config with this case's label, its own log directory and
    /// cgroup parent, network in a pod namespace and PID per container.
    pub fn pod_config(&self, what: &str) -> v1::PodSandboxConfig {
        let name = self.name(what);
        let logs = self.shared.dir.join("logs").join(&name);
        std::fs::create_dir_all(&logs).expect("pod log directory");
        v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata {
                name: name.clone(),
                uid: format!("uid-{name}"),
                namespace: "tidal-test".into(),
                attempt: 0,
            }),
            hostname: name.chars().take(63).collect(),
            log_directory: logs.to_string_lossy().into_owned(),
            labels: [(CASE_LABEL.to_string(), self.label())].into(),
            linux: Some(v1::LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}/{name}", self.shared.cgroup_root),
                security_context: Some(v1::LinuxSandboxSecurityContext {
                    namespace_options: Some(v1::NamespaceOption {
                        network: v1::NamespaceMode::Pod as i32,
                        pid: v1::NamespaceMode::Container as i32,
                        ipc: v1::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn label(&self) -> String {
        format!("{}.{}", self.case, self.handler)
    }

    pub async fn run_pod(&self, config: &v1::PodSandboxConfig) -> String {
        self.try_run_pod(config)
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox({}): {e}", self.handler))
    }

    pub async fn try_run_pod(&self, config: &v1::PodSandboxConfig) -> Result<String, String> {
        // CNI portmap creates its top-level chains (CNI-HOSTPORT-*) by
        // check-then-create with no lock of its own: two sandboxes with host
        // ports set up at once on a node without those chains make one fail
        // with "CHAIN_USER_ADD failed (File exists)" (kubelet would retry).
        // The test networks' teardown (hack/containerd-env) deletes unused
        // chains under this lock, so sandboxes with host ports take it too.
        let _portmap = match config.port_mappings.is_empty() {
            true => None,
            false => Some(
                tokio::task::spawn_blocking(portmap_lock)
                    .await
                    .map_err(|e| e.to_string())??,
            ),
        };
        self.rt
            .clone()
            .run_pod_sandbox(v1::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: self.handler.into(),
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
            .map_err(msg)
    }

    pub async fn pod_status(&self, pod: &str) -> v1::PodSandboxStatus {
        self.rt
            .clone()
            .pod_sandbox_status(v1::PodSandboxStatusRequest {
                pod_sandbox_id: pod.into(),
                verbose: false,
            })
            .await
            .unwrap_or_else(|e| panic!("PodSandboxStatus: {}", msg(e)))
            .into_inner()
            .status
            .expect("PodSandboxStatus without a status")
    }

    pub async fn stop_pod(&self, pod: &str) -> Result<(), String> {
        self.rt
            .clone()
            .stop_pod_sandbox(v1::StopPodSandboxRequest {
                pod_sandbox_id: pod.into(),
            })
            .await
            .map(|_| ())
            .map_err(msg)
    }

    pub async fn remove_pod(&self, pod: &str) -> Result<(), String> {
        self.rt
            .clone()
            .remove_pod_sandbox(v1::RemovePodSandboxRequest {
                pod_sandbox_id: pod.into(),
            })
            .await
            .map(|_| ())
            .map_err(msg)
    }

    /// A busybox container running `cmd`, logging to `<name>.log`.
    pub fn container(&self, what: &str, cmd: &[&str]) -> v1::ContainerConfig {
        v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata {
                name: what.into(),
                attempt: 0,
            }),
            image: Some(v1::ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{what}.log"),
            labels: [(CASE_LABEL.to_string(), self.label())].into(),
            linux: Some(v1::LinuxContainerConfig {
                security_context: Some(v1::LinuxContainerSecurityContext {
                    namespace_options: Some(v1::NamespaceOption {
                        network: v1::NamespaceMode::Pod as i32,
                        pid: v1::NamespaceMode::Container as i32,
                        ipc: v1::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub async fn create(
        &self,
        pod: &str,
        pod_config: &v1::PodSandboxConfig,
        config: v1::ContainerConfig,
    ) -> Result<String, String> {
        self.rt
            .clone()
            .create_container(v1::CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
            .map_err(msg)
    }

    pub async fn start(&self, id: &str) -> Result<(), String> {
        self.rt
            .clone()
            .start_container(v1::StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(|_| ())
            .map_err(msg)
    }

    /// Creates and starts, insisting both succeed.
    pub async fn run(
        &self,
        pod: &str,
        pod_config: &v1::PodSandboxConfig,
        config: v1::ContainerConfig,
    ) -> String {
        let id = self
            .create(pod, pod_config, config)
            .await
            .unwrap_or_else(|e| panic!("CreateContainer({}): {e}", self.handler));
        self.start(&id)
            .await
            .unwrap_or_else(|e| panic!("StartContainer({}): {e}", self.handler));
        id
    }

    /// A pod with one long-running busybox container configured by `edit`.
    pub async fn pod_with(
        &self,
        edit: impl FnOnce(&mut v1::PodSandboxConfig, &mut v1::ContainerConfig),
    ) -> (String, String) {
        static PODS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = PODS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut pod_config = self.pod_config(&format!("pod{n}"));
        let mut c = self.container("app", &["sleep", "3600"]);
        edit(&mut pod_config, &mut c);
        let pod = self.run_pod(&pod_config).await;
        let id = self.run(&pod, &pod_config, c).await;
        (pod, id)
    }

    pub async fn status(&self, id: &str) -> v1::ContainerStatus {
        self.rt
            .clone()
            .container_status(v1::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .unwrap_or_else(|e| panic!("ContainerStatus: {}", msg(e)))
            .into_inner()
            .status
            .expect("ContainerStatus without a status")
    }

    pub async fn stop(&self, id: &str, timeout: i64) -> Result<(), String> {
        self.rt
            .clone()
            .stop_container(v1::StopContainerRequest {
                container_id: id.into(),
                timeout,
            })
            .await
            .map(|_| ())
            .map_err(msg)
    }

    pub async fn remove(&self, id: &str) -> Result<(), String> {
        self.rt
            .clone()
            .remove_container(v1::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(|_| ())
            .map_err(msg)
    }

    /// Waits until the container has exited; its final status.
    pub async fn wait_exited(&self, id: &str, within: Duration) -> v1::ContainerStatus {
        let end = Instant::now() + within;
        loop {
            let s = self.status(id).await;
            if s.state == v1::ContainerState::ContainerExited as i32 {
                return s;
            }
            assert!(
                Instant::now() < end,
                "container {id} ({}) still {:?} after {within:?}",
                self.handler,
                s.state
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// ExecSync: (exit code, stdout, stderr).
    pub async fn try_exec(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<(i32, String, String), String> {
        self.rt
            .clone()
            .exec_sync(v1::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
            .map(|r| {
                let r = r.into_inner();
                (
                    r.exit_code,
                    String::from_utf8_lossy(&r.stdout).into_owned(),
                    String::from_utf8_lossy(&r.stderr).into_owned(),
                )
            })
            .map_err(msg)
    }

    pub async fn exec(&self, id: &str, cmd: &[&str]) -> (i32, String, String) {
        self.try_exec(id, cmd, 20)
            .await
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?} ({}): {e}", self.handler))
    }

    /// Runs `sh -c script` and insists it exits 0; its stdout.
    pub async fn sh(&self, id: &str, script: &str) -> String {
        let (code, out, err) = self.exec(id, &["sh", "-c", script]).await;
        assert_eq!(
            code, 0,
            "`{script}` in {} exited {code}: {out}{err}",
            self.handler
        );
        out
    }

    /// A line of /proc/self/status inside the container, e.g. "CapEff".
    pub async fn proc_status(&self, id: &str, key: &str) -> String {
        let out = self.sh(id, "cat /proc/self/status").await;
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in /proc/self/status"))
            .trim()
            .to_string()
    }

    pub async fn list_pods(&self, filter: v1::PodSandboxFilter) -> Vec<v1::PodSandbox> {
        self.rt
            .clone()
            .list_pod_sandbox(v1::ListPodSandboxRequest {
                filter: Some(filter),
            })
            .await
            .unwrap_or_else(|e| panic!("ListPodSandbox: {}", msg(e)))
            .into_inner()
            .items
    }

    pub async fn list_containers(&self, filter: v1::ContainerFilter) -> Vec<v1::Container> {
        self.rt
            .clone()
            .list_containers(v1::ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .unwrap_or_else(|e| panic!("ListContainers: {}", msg(e)))
            .into_inner()
            .containers
    }

    /// Stops and removes every pod this case made (after success or panic).
    pub async fn cleanup(&self) -> Result<(), String> {
        let pods = self
            .list_pods(v1::PodSandboxFilter {
                label_selector: [(CASE_LABEL.to_string(), self.label())].into(),
                ..Default::default()
            })
            .await;
        for p in pods {
            self.stop_pod(&p.id).await?;
            self.remove_pod(&p.id).await?;
        }
        Ok(())
    }
}

/// Runs `cases` for each handler, both handlers at once when `parallel`
/// (else one after the other), then the suite's own end check `after`.
/// Returns whether everything passed.
pub fn run(suite: &str, cases: &[Case], parallel: bool, after: Option<EndCheck>) -> bool {
    run_for(&HANDLERS, suite, cases, parallel, after)
}

/// [`run`] for the given handlers only, e.g. tidal's own features.
pub fn run_for(
    handlers: &[&'static str],
    suite: &str,
    cases: &[Case],
    parallel: bool,
    after: Option<EndCheck>,
) -> bool {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected = select(cases, &filter);
    let mut report = Report::start(
        std::io::stdout(),
        selected.len() * handlers.len() + usize::from(after.is_some()),
        (cases.len() - selected.len()) * handlers.len(),
    );
    let env = Arc::new(CriEnv::start(suite));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let client = rt
        .block_on(crate::cri::connect(&env.socket()))
        .expect("connect to containerd's CRI")
        .0;
    // Each case's time limit: 120 s, or TIDAL_CASE_SECONDS (long soaks).
    let limit = Duration::from_secs(
        std::env::var("TIDAL_CASE_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120),
    );
    let cgroup_root = format!("tidal-{suite}-{}", std::process::id());
    let shared = Arc::new(Shared::new(&env, &cgroup_root));
    // Failures are reported per case below, with their message (set once
    // the environment is up, whose own failure must be seen).
    std::panic::set_hook(Box::new(|_| {}));
    for case in selected {
        let (body_fn, name) = (case.run, case.name);
        let results: Vec<_> = rt.block_on(async {
            let runs = handlers.iter().map(|&handler| {
                let ctx = Ctx {
                    handler,
                    case: name,
                    rt: client.clone(),
                    shared: shared.clone(),
                    env: env.clone(),
                };
                let run = async move {
                    let body =
                        tokio::spawn(tokio::time::timeout(limit, body_fn(ctx.clone()))).await;
                    let cleaned = ctx.cleanup().await;
                    let outcome = match body {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(_)) => Err(format!("timed out after {} s", limit.as_secs())),
                        Err(e) => Err(panic_text(e)),
                    };
                    outcome.and(cleaned.map_err(|e| format!("cleanup: {e}")))
                };
                run
            });
            let mut out = Vec::new();
            if parallel {
                let handles: Vec<_> = runs.map(tokio::spawn).collect();
                for h in handles {
                    out.push(h.await.map_err(panic_text).and_then(|r| r));
                }
            } else {
                for r in runs {
                    out.push(tokio::spawn(r).await.map_err(panic_text).and_then(|r| r));
                }
            }
            out
        });
        for (handler, r) in handlers.iter().zip(results) {
            report.record(&format!("{} [{handler}]", case.name), r);
        }
    }
    drop(client);
    if let Some(check) = after {
        report.record(&format!("{suite}: nothing left behind"), check(&env));
    }
    drop(rt);
    if report.failed > 0 {
        println!("\n--- containerd log (tail) ---\n{}", env.log_tail(40));
    }
    drop(
        Arc::try_unwrap(env)
            .ok()
            .expect("cases hold no environment"),
    );
    remove_cgroup_root(&cgroup_root);
    report.finish()
}

/// The cases whose name contains one of `filter`'s words (all without one).
fn select<'a>(cases: &'a [Case], filter: &[String]) -> Vec<&'a Case> {
    cases
        .iter()
        .filter(|c| filter.is_empty() || filter.iter().any(|f| c.name.contains(f.as_str())))
        .collect()
}

/// A run's lines in libtest's words: `running N tests` first, a line per
/// test, then `test result:` whose counts add up to N (`hack/test` sums
/// those lines).
struct Report<W: std::io::Write> {
    out: W,
    announced: usize,
    filtered: usize,
    passed: usize,
    failed: usize,
    started: Instant,
}

impl<W: std::io::Write> Report<W> {
    /// Announces `tests` tests, `filtered` more left out by the filter.
    fn start(mut out: W, tests: usize, filtered: usize) -> Self {
        let _ = writeln!(out, "\nrunning {tests} tests");
        Report {
            out,
            announced: tests,
            filtered,
            passed: 0,
            failed: 0,
            started: Instant::now(),
        }
    }

    fn record(&mut self, test: &str, result: Result<(), String>) {
        let _ = match result {
            Ok(()) => {
                self.passed += 1;
                writeln!(self.out, "test {test} ... ok")
            }
            Err(e) => {
                self.failed += 1;
                writeln!(self.out, "test {test} ... FAILED\n    {e}")
            }
        };
        let _ = self.out.flush();
    }

    /// The `test result:` line; whether everything passed. A test announced
    /// but never recorded counts as failed.
    fn finish(mut self) -> bool {
        let missing = self.announced.saturating_sub(self.passed + self.failed);
        if missing > 0 {
            let _ = writeln!(self.out, "{missing} announced tests did not run");
        }
        let failed = self.failed + missing;
        let _ = writeln!(
            self.out,
            "\ntest result: {}. {} passed; {failed} failed; 0 ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
            if failed == 0 { "ok" } else { "FAILED" },
            self.passed,
            self.filtered,
            self.started.elapsed().as_secs_f64()
        );
        failed == 0
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into()),
        Err(e) => e.to_string(),
    }
}

/// Cgroup directories below `/<root>` in every hierarchy, deepest first.
pub fn cgroups_below(root: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return found;
    };
    for h in hierarchies.flatten() {
        let top = h.path().join(root);
        walk(&top, &mut found);
    }
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(&e.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

fn remove_cgroup_root(root: &str) {
    for d in cgroups_below(root) {
        let _ = std::fs::remove_dir(d);
    }
}

/// The host-wide lock that orders changes to CNI portmap's chains (see
/// `try_run_pod`), held until the file is dropped.
fn portmap_lock() -> Result<std::fs::File, String> {
    let path = "/run/tidal-cni.lock";
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("open {path}: {e}"))?;
    file.lock().map_err(|e| format!("lock {path}: {e}"))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &'static str) -> Case {
        Case {
            name,
            run: |_| Box::pin(async {}),
        }
    }

    /// `running N tests` and the `test result:` line's passed + failed.
    fn counts(text: &str) -> (usize, usize, usize) {
        let running = text
            .lines()
            .find_map(|l| l.strip_prefix("running "))
            .and_then(|l| l.split(' ').next())
            .unwrap()
            .parse()
            .unwrap();
        let result: Vec<usize> = text
            .lines()
            .find_map(|l| l.strip_prefix("test result: "))
            .unwrap()
            .split(' ')
            .filter_map(|w| w.parse().ok())
            .collect();
        (running, result[0] + result[1], result[4])
    }

    /// What the suites do: every selected case once per handler, then the
    /// end check; the announced count is what the result line adds up to.
    #[test]
    fn announced_and_reported_counts_agree() {
        let cases = [case("pod_lifecycle"), case("pod_hostname"), case("stats")];
        for (filter, end_check, want) in [
            (vec![], true, 7),
            (vec![], false, 6),
            (vec!["pod_".to_string()], true, 5),
        ] {
            let selected = select(&cases, &filter);
            let mut out = Vec::new();
            let mut report = Report::start(
                &mut out,
                selected.len() * HANDLERS.len() + usize::from(end_check),
                (cases.len() - selected.len()) * HANDLERS.len(),
            );
            for c in &selected {
                report.record(&format!("{} [tidal]", c.name), Ok(()));
                report.record(&format!("{} [runc]", c.name), Err("boom".into()));
            }
            if end_check {
                report.record("suite: nothing left behind", Ok(()));
            }
            assert!(!report.finish());
            let text = String::from_utf8(out).unwrap();
            let (running, reported, filtered) = counts(&text);
            assert_eq!((running, reported), (want, want), "{text}");
            assert_eq!(filtered, 6 - selected.len() * 2, "{text}");
            assert_eq!(text.matches(" ... ").count(), want, "{text}");
        }
    }

    /// A run that stops short of what it announced does not pass.
    #[test]
    fn unrecorded_tests_fail_the_run() {
        let mut out = Vec::new();
        let mut report = Report::start(&mut out, 3, 0);
        report.record("a [tidal]", Ok(()));
        assert!(!report.finish());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("1 passed; 2 failed"), "{text}");
    }
}

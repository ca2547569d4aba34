//! The Task API's logic: containers and their processes, driven through
//! helpers, with events published in containerd's order. Methods take the
//! plain request types and return `Result`, so they can be tested without
//! ttrpc; `service.rs` adapts them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use containerd_shim::api::{self, Status as ApiStatus};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::ExitSignal;
use tokio::sync::oneshot;

use super::error::{Error, Result};
use super::process::{Process, Status};
use super::stdio::{self, StdioPaths};
use crate::helper::{Helpers, Request, RootfsMount};
use crate::reaper::{Exit, Reaper};

/// Who asked for a Task.Update: kubelet (the default), operator, policy, trait:NAME.
pub const ANNOTATION_SOURCE: &str = "tidal.dev/source";
/// Why, in words, recorded in the revision.
pub const ANNOTATION_REASON: &str = "tidal.dev/reason";
/// "true": reclaim memory first when shrinking below current usage.
pub const ANNOTATION_RECLAIM: &str = "tidal.dev/reclaim";
/// A revision number: restore the limits as they were right after it.
pub const ANNOTATION_ROLLBACK: &str = "tidal.dev/rollback-to";
/// "true": validate and plan only; write nothing, record nothing.
pub const ANNOTATION_DRY_RUN: &str = "tidal.dev/dry-run";

/// How long the shim waits for a terminal's last output before reporting an exit.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// How long a created container may take to send its pty.
const CONSOLE_LIMIT: Duration = Duration::from_secs(10);

/// The node's trait catalogue, read once per shim.
pub(crate) fn catalogue() -> &'static std::result::Result<crate::traits::Catalogue, String> {
    static CATALOGUE: std::sync::OnceLock<std::result::Result<crate::traits::Catalogue, String>> =
        std::sync::OnceLock::new();
    CATALOGUE.get_or_init(crate::traits::Catalogue::node)
}

/// An exec's process spec held to its container's traits (see
/// `traits::enforce::tighten_exec`); unchanged for containers without them.
fn held_to_traits(bundle: &Path, process: &str) -> std::result::Result<String, String> {
    let config = std::fs::read(bundle.join("config.json"))
        .map_err(|e| format!("read the container's spec: {e}"))?;
    let container: serde_json::Value =
        serde_json::from_slice(&config).map_err(|e| format!("the container's spec: {e}"))?;
    let has_traits = container
        .get("annotations")
        .and_then(|a| a.as_object())
        .is_some_and(|a| a.keys().any(|k| k.starts_with(crate::traits::TRAIT_PREFIX)));
    if !has_traits {
        return Ok(process.to_string());
    }
    let catalogue = catalogue()
        .as_ref()
        .map_err(|e| format!("the node's trait catalogue: {e}"))?;
    let mut value: serde_json::Value =
        serde_json::from_str(process).map_err(|e| format!("process spec: {e}"))?;
    if crate::traits::enforce::tighten_exec(&container, &mut value, catalogue)
        .map_err(|e| e.to_string())?
    {
        return serde_json::to_string(&value).map_err(|e| e.to_string());
    }
    Ok(process.to_string())
}

/// Publishes events to containerd, in the order they are sent.
pub use super::events::Events;

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub init: Arc<Process>,
    /// The container's cgroup, resolved once at create: resizes never look it
    /// up again from a pid that may be gone or reused.
    cgroup: Option<crate::cgroups::Cgroup>,
    /// One resize at a time per container (held across the write, never
    /// map-wide); guards what its resizes keep (its cgroup files, open, and
    /// its revision history), made on first use.
    resize_lock: tokio::sync::Mutex<Option<crate::resize::Kept>>,
    /// Exec processes by exec id. Lock never held across an `.await`.
    execs: Mutex<HashMap<String, Arc<Process>>>,
}

impl Container {
    fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs
            .lock()
            .unwrap()
            .get(exec_id)
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "exec {exec_id} in container {} does not exist",
                    self.id
                ))
            })
    }

    fn exec_by_pid(&self, pid: i32) -> Option<String> {
        self.execs
            .lock()
            .unwrap()
            .iter()
            .find(|(_, p)| p.pid() == pid)
            .map(|(id, _)| id.clone())
    }
}

pub struct Tasks {
    /// libcontainer's state directory for this namespace.
    root: PathBuf,
    helpers: Helpers,
    reaper: Arc<Reaper>,
    events: Arc<Events>,
    /// Containers by id. Lock never held across an `.await`: clone the Arc out.
    containers: Mutex<HashMap<String, Arc<Container>>>,
    exit: Arc<ExitSignal>,
    seq: AtomicU64,
}

pub fn timestamp(t: SystemTime) -> MessageField<Timestamp> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    MessageField::some(ts)
}

fn api_status(s: Status) -> ApiStatus {
    match s {
        Status::Created => ApiStatus::CREATED,
        Status::Running => ApiStatus::RUNNING,
        Status::Paused => ApiStatus::PAUSED,
        Status::Stopped => ApiStatus::STOPPED,
    }
}

impl Tasks {
    pub fn new(
        root: PathBuf,
        helpers: Helpers,
        reaper: Arc<Reaper>,
        events: Arc<Events>,
        exit: Arc<ExitSignal>,
    ) -> Self {
        Self {
            root,
            helpers,
            reaper,
            events,
            containers: Mutex::new(HashMap::new()),
            exit,
            seq: AtomicU64::new(0),
        }
    }

    fn container(&self, id: &str) -> Result<Arc<Container>> {
        crate::ids::validate("container id", id)?;
        self.containers
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id} does not exist")))
    }

    /// A short path for a per-process socket or file under the state root.
    fn scratch_path(&self, kind: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.root
            .join(format!(".{kind}-{}-{n}", std::process::id()))
    }

    pub async fn create(&self, req: &api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        crate::ids::validate("container id", &req.id)?;
        if self.containers.lock().unwrap().contains_key(&req.id) {
            return Err(Error::AlreadyExists(format!(
                "container {} already exists",
                req.id
            )));
        }
        if !req.checkpoint.is_empty() {
            return Err(Error::Unimplemented(
                "restoring from a checkpoint is not supported".into(),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        if !bundle.join("config.json").is_file() {
            return Err(Error::InvalidArgument(format!(
                "bundle {} has no config.json",
                bundle.display()
            )));
        }
        // Traits first: a refused container leaves nothing behind.
        let tightened =
            crate::traits::enforce::apply_to_bundle(&bundle.join("config.json"), catalogue())
                .map_err(Error::InvalidArgument)?;
        if !tightened.is_empty() {
            log::info!("{}: traits applied: {}", req.id, tightened.join(", "));
        }
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let mut prepared = stdio::prepare(&paths, &self.scratch_path("console"))
            .map_err(|e| Error::InvalidArgument(format!("open stdio of {}: {e}", req.id)))?;
        let request = Request::Create {
            id: req.id.clone(),
            root: self.root.clone(),
            bundle: bundle.clone(),
            rootfs: req
                .rootfs
                .iter()
                .map(|m| RootfsMount {
                    kind: m.type_.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                })
                .collect(),
            console_socket: prepared.console.as_ref().map(|c| c.path().to_path_buf()),
        };
        let helper_stdio = std::mem::take(&mut prepared.helper);
        let since = Instant::now();
        let (created, console) = tokio::join!(
            self.helpers.run(&request, helper_stdio),
            prepared.connect_console(CONSOLE_LIMIT)
        );
        let pid = created?.ok_or_else(|| Error::Internal("helper returned no pid".into()))?;
        let exited = self.reaper.subscribe(pid, since);
        let init = Arc::new(Process::new(String::new(), paths, None, pid));
        *init.handles.lock().unwrap() = Some(Arc::new(prepared.handles));
        let container = Arc::new(Container {
            id: req.id.clone(),
            bundle,
            init: init.clone(),
            cgroup: crate::cgroups::Cgroup::of_pid(pid).ok(),
            resize_lock: tokio::sync::Mutex::new(None),
            execs: Mutex::new(HashMap::new()),
        });
        if let Err(e) = console {
            // The container exists but its terminal does not: undo it.
            let _ = self.remove_container_state(&container).await;
            return Err(Error::Internal(format!("terminal of {}: {e}", req.id)));
        }
        self.containers
            .lock()
            .unwrap()
            .insert(req.id.clone(), container.clone());
        self.spawn_monitor(container.clone(), init, exited);
        self.spawn_oom_monitor(&container);

        let mut io = TaskIO::new();
        io.stdin = req.stdin.clone();
        io.stdout = req.stdout.clone();
        io.stderr = req.stderr.clone();
        io.terminal = req.terminal;
        self.events
            .send(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(io),
                pid: pid as u32,
                ..Default::default()
            })
            .await;
        Ok(api::CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn remove_container_state(&self, c: &Container) -> Result<()> {
        self.helpers.delete(&c.id, &self.root, &c.bundle).await?;
        Ok(())
    }

    /// Waits for `proc` to end, records the exit and publishes TaskExit once
    /// the process's start (or kill) has been published.
    fn spawn_monitor(
        &self,
        c: Arc<Container>,
        proc: Arc<Process>,
        exited: oneshot::Receiver<Exit>,
    ) {
        let events = self.events.clone();
        tokio::spawn(async move {
            let exit = match exited.await {
                Ok(exit) => exit,
                Err(_) => return,
            };
            if let Some(h) = proc.stdio_handles() {
                h.drain_output(DRAIN_LIMIT).await;
            }
            proc.set_exited(exit);
            proc.gate_opened().await;
            let id = if proc.exec_id.is_empty() {
                c.id.clone()
            } else {
                proc.exec_id.clone()
            };
            events
                .send(TaskExit {
                    container_id: c.id.clone(),
                    id,
                    pid: exit.pid as u32,
                    exit_status: exit.status,
                    exited_at: timestamp(exit.at),
                    ..Default::default()
                })
                .await;
        });
    }

    fn spawn_oom_monitor(&self, c: &Container) {
        let events = self.events.clone();
        let id = c.id.clone();
        let watched = c
            .cgroup
            .as_ref()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no cgroup"))
            .and_then(crate::oom::watch);
        match watched {
            Ok(mut rx) => {
                tokio::spawn(async move {
                    while rx.recv().await.is_some() {
                        events
                            .send(TaskOOM {
                                container_id: id.clone(),
                                ..Default::default()
                            })
                            .await;
                    }
                });
            }
            Err(e) => log::warn!("no OOM events for {id}: {e}"),
        }
    }

    pub async fn start(&self, req: &api::StartRequest) -> Result<api::StartResponse> {
        let c = self.container(&req.id)?;
        if req.exec_id.is_empty() {
            return self.start_init(&c).await;
        }
        self.start_exec(&c, &req.exec_id).await
    }

    async fn start_init(&self, c: &Container) -> Result<api::StartResponse> {
        let init = &c.init;
        if init.status() != Status::Created {
            init.open_gate();
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}, not created",
                c.id,
                init.status()
            )));
        }
        if let Err(e) = self.helpers.start(&c.id, &self.root).await {
            init.open_gate();
            return Err(e.into());
        }
        init.set_status(Status::Running);
        let pid = init.pid();
        self.events
            .send(TaskStart {
                container_id: c.id.clone(),
                pid: pid as u32,
                ..Default::default()
            })
            .await;
        init.open_gate();
        Ok(api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn start_exec(&self, c: &Arc<Container>, exec_id: &str) -> Result<api::StartResponse> {
        let proc = c.process(exec_id)?;
        if proc.status() != Status::Created || proc.pid() != 0 {
            return Err(Error::FailedPrecondition(format!(
                "exec {exec_id} in {} was already started",
                c.id
            )));
        }
        let spec_path = self.scratch_path("exec");
        std::fs::write(&spec_path, proc.spec.as_deref().unwrap_or("{}"))
            .map_err(|e| Error::Internal(format!("write exec spec: {e}")))?;
        let prepared = stdio::prepare(&proc.stdio, &self.scratch_path("console"));
        let mut prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_file(&spec_path);
                return Err(Error::InvalidArgument(format!(
                    "open stdio of exec {exec_id}: {e}"
                )));
            }
        };
        let request = Request::Exec {
            id: c.id.clone(),
            root: self.root.clone(),
            process: spec_path.clone(),
            console_socket: prepared.console.as_ref().map(|s| s.path().to_path_buf()),
        };
        let helper_stdio = std::mem::take(&mut prepared.helper);
        let since = Instant::now();
        let (started, console) = tokio::join!(
            self.helpers.run(&request, helper_stdio),
            prepared.connect_console(CONSOLE_LIMIT)
        );
        let _ = std::fs::remove_file(&spec_path);
        let pid = started?.ok_or_else(|| Error::Internal("helper returned no pid".into()))?;
        let exited = self.reaper.subscribe(pid, since);
        if let Err(e) = console {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            log::warn!("terminal of exec {exec_id}: {e}");
        }
        *proc.handles.lock().unwrap() = Some(Arc::new(prepared.handles));
        proc.set_running(pid);
        self.spawn_monitor(c.clone(), proc.clone(), exited);
        self.events
            .send(TaskExecStarted {
                container_id: c.id.clone(),
                exec_id: exec_id.to_string(),
                pid: pid as u32,
                ..Default::default()
            })
            .await;
        proc.open_gate();
        Ok(api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    pub async fn delete(&self, req: &api::DeleteRequest) -> Result<api::DeleteResponse> {
        let c = self.container(&req.id)?;
        if !req.exec_id.is_empty() {
            let proc = c.process(&req.exec_id)?;
            if matches!(proc.status(), Status::Running | Status::Paused) {
                return Err(Error::FailedPrecondition(format!(
                    "exec {} in {} is still running",
                    req.exec_id, req.id
                )));
            }
            c.execs.lock().unwrap().remove(&req.exec_id);
            let st = proc.state();
            return Ok(delete_response(st.pid, st.exit));
        }
        let init = c.init.clone();
        if matches!(init.status(), Status::Running | Status::Paused) {
            return Err(Error::FailedPrecondition(format!(
                "container {} is still running: kill it first",
                req.id
            )));
        }
        init.open_gate();
        self.remove_container_state(&c).await?;
        // A container deleted before it started is killed by the delete: let
        // its TaskExit go out first.
        let exit = match tokio::time::timeout(Duration::from_secs(5), init.wait()).await {
            Ok(exit) => Some(exit),
            Err(_) => init.state().exit,
        };
        self.containers.lock().unwrap().remove(&req.id);
        let pid = init.pid();
        let resp = delete_response(pid, exit);
        self.events
            .send(TaskDelete {
                container_id: req.id.clone(),
                pid: pid as u32,
                exit_status: resp.exit_status,
                exited_at: resp.exited_at.clone(),
                id: req.id.clone(),
                ..Default::default()
            })
            .await;
        Ok(resp)
    }

    pub async fn kill(&self, req: &api::KillRequest) -> Result<()> {
        let c = self.container(&req.id)?;
        let proc = c.process(&req.exec_id)?;
        let signal = i32::try_from(req.signal)
            .ok()
            .and_then(|s| nix::sys::signal::Signal::try_from(s).ok())
            .ok_or_else(|| Error::InvalidArgument(format!("invalid signal {}", req.signal)))?;
        if proc.status() == Status::Stopped {
            return Err(Error::NotFound(format!(
                "process of {} already finished",
                req.id
            )));
        }
        if !req.exec_id.is_empty() {
            let pid = proc.pid();
            if pid == 0 {
                return Err(Error::FailedPrecondition(format!(
                    "exec {} in {} was not started",
                    req.exec_id, req.id
                )));
            }
            return nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(|e| {
                match e {
                    nix::errno::Errno::ESRCH => {
                        Error::NotFound(format!("exec {} already finished", req.exec_id))
                    }
                    e => Error::Internal(format!("kill exec {}: {e}", req.exec_id)),
                }
            });
        }
        proc.open_gate();
        // A running init, one signal: the shim is its parent (and
        // subreaper), so its pid cannot be reused before the shim reaps it;
        // signal it directly instead of paying for a helper. A paused
        // container (SIGKILL must thaw it on cgroup v1) and `all` (every
        // process in the cgroup) go through libcontainer.
        let pid = proc.pid();
        if !req.all && proc.status() == Status::Running && pid > 0 {
            return match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
                Ok(()) => Ok(()),
                Err(nix::errno::Errno::ESRCH) => Err(Error::NotFound(format!(
                    "process of {} already finished",
                    req.id
                ))),
                Err(e) => Err(Error::Internal(format!("kill {}: {e}", req.id))),
            };
        }
        let result = self
            .helpers
            .run(
                &Request::Kill {
                    id: req.id.clone(),
                    root: self.root.clone(),
                    signal: signal as i32,
                    all: req.all,
                },
                Default::default(),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            // libcontainer found the process gone before the shim saw its exit.
            Err(crate::helper::HelperError::WrongState(m)) => {
                Err(Error::NotFound(format!("process already finished: {m}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn exec(&self, req: &api::ExecProcessRequest) -> Result<()> {
        let c = self.container(&req.id)?;
        crate::ids::validate("exec id", &req.exec_id)?;
        if matches!(c.init.status(), Status::Stopped) {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                req.id
            )));
        }
        let spec = req
            .spec
            .as_ref()
            .map(|any| String::from_utf8_lossy(&any.value).into_owned())
            .ok_or_else(|| Error::InvalidArgument("exec without a process spec".into()))?;
        let spec = held_to_traits(&c.bundle, &spec).map_err(|e| {
            Error::InvalidArgument(format!(
                "tidal refused exec {} in {}: {e}",
                req.exec_id, req.id
            ))
        })?;
        let parsed: oci_spec::runtime::Process = serde_json::from_str(&spec).map_err(|e| {
            Error::InvalidArgument(format!("exec {} process spec: {e}", req.exec_id))
        })?;
        if parsed.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(Error::InvalidArgument(format!(
                "exec {} has no args",
                req.exec_id
            )));
        }
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        {
            let mut execs = c.execs.lock().unwrap();
            if execs.contains_key(&req.exec_id) {
                return Err(Error::AlreadyExists(format!(
                    "exec {} already exists in {}",
                    req.exec_id, req.id
                )));
            }
            execs.insert(
                req.exec_id.clone(),
                Arc::new(Process::new(req.exec_id.clone(), stdio, Some(spec), 0)),
            );
        }
        self.events
            .send(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            })
            .await;
        Ok(())
    }

    pub async fn state(&self, req: &api::StateRequest) -> Result<api::StateResponse> {
        let c = self.container(&req.id)?;
        let proc = c.process(&req.exec_id)?;
        let st = proc.state();
        Ok(api::StateResponse {
            id: if req.exec_id.is_empty() {
                req.id.clone()
            } else {
                req.exec_id.clone()
            },
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: st.pid as u32,
            status: api_status(st.status).into(),
            stdin: proc.stdio.stdin.clone(),
            stdout: proc.stdio.stdout.clone(),
            stderr: proc.stdio.stderr.clone(),
            terminal: proc.stdio.terminal,
            exit_status: st.exit.map(|e| e.status).unwrap_or_default(),
            exited_at: st.exit.map(|e| timestamp(e.at)).unwrap_or_default(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    pub async fn wait(&self, req: &api::WaitRequest) -> Result<api::WaitResponse> {
        let c = self.container(&req.id)?;
        let proc = c.process(&req.exec_id)?;
        let exit = proc.wait().await;
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: timestamp(exit.at),
            ..Default::default()
        })
    }

    pub async fn pids(&self, req: &api::PidsRequest) -> Result<api::PidsResponse> {
        let c = self.container(&req.id)?;
        let mut resp = api::PidsResponse::default();
        if c.init.status() == Status::Stopped {
            return Ok(resp);
        }
        for pid in crate::cgroups::pids_of(c.init.pid())
            .map_err(|e| Error::Internal(format!("pids of {}: {e}", req.id)))?
        {
            let mut info = containerd_shim::protos::types::task::ProcessInfo::new();
            info.pid = pid as u32;
            if let Some(exec_id) = c.exec_by_pid(pid) {
                let details = containerd_shim::protos::shim::oci::ProcessDetails {
                    exec_id,
                    ..Default::default()
                };
                if let Ok(value) = details.write_to_bytes() {
                    let mut any = Any::new();
                    any.type_url = "containerd.runc.v1.ProcessDetails".into();
                    any.value = value;
                    info.info = MessageField::some(any);
                }
            }
            resp.processes.push(info);
        }
        Ok(resp)
    }

    pub async fn pause(&self, req: &api::PauseRequest) -> Result<()> {
        self.freeze(&req.id, true).await
    }

    pub async fn resume(&self, req: &api::ResumeRequest) -> Result<()> {
        self.freeze(&req.id, false).await
    }

    /// Pause (freeze) or resume (thaw) a container, and publish it.
    async fn freeze(&self, id: &str, pause: bool) -> Result<()> {
        let c = self.container(id)?;
        let (from, to) = if pause {
            (Status::Running, Status::Paused)
        } else {
            (Status::Paused, Status::Running)
        };
        if c.init.status() != from {
            let state = if pause { "running" } else { "paused" };
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not {state}"
            )));
        }
        let (id, root) = (id.to_string(), self.root.clone());
        let req = if pause {
            Request::Pause {
                id: id.clone(),
                root,
            }
        } else {
            Request::Resume {
                id: id.clone(),
                root,
            }
        };
        self.helpers.run(&req, Default::default()).await?;
        c.init.set_status(to);
        if pause {
            self.events
                .send(TaskPaused {
                    container_id: id,
                    ..Default::default()
                })
                .await;
        } else {
            self.events
                .send(TaskResumed {
                    container_id: id,
                    ..Default::default()
                })
                .await;
        }
        Ok(())
    }

    pub async fn close_io(&self, req: &api::CloseIORequest) -> Result<()> {
        let c = self.container(&req.id)?;
        let proc = c.process(&req.exec_id)?;
        if req.stdin {
            if let Some(h) = proc.stdio_handles() {
                h.close_stdin();
            }
        }
        Ok(())
    }

    pub async fn resize_pty(&self, req: &api::ResizePtyRequest) -> Result<()> {
        let c = self.container(&req.id)?;
        let proc = c.process(&req.exec_id)?;
        let (w, h) = (
            u16::try_from(req.width)
                .map_err(|_| Error::InvalidArgument(format!("width {} too large", req.width)))?,
            u16::try_from(req.height)
                .map_err(|_| Error::InvalidArgument(format!("height {} too large", req.height)))?,
        );
        let handles = proc
            .stdio_handles()
            .ok_or_else(|| Error::FailedPrecondition("process has no terminal".into()))?;
        handles
            .resize(w, h)
            .map_err(|e| Error::FailedPrecondition(format!("resize terminal of {}: {e}", req.id)))
    }

    /// Task.Update: the one write path for a running container's resources,
    /// whoever asks (kubelet through CRI, or tidal's tools). Annotations on the
    /// request say who and why (`tidal.dev/source`, `tidal.dev/reason`), ask
    /// to reclaim memory before shrinking (`tidal.dev/reclaim`), or ask for a
    /// rollback (`tidal.dev/rollback-to`). Every change becomes a revision.
    pub async fn update(&self, req: &api::UpdateTaskRequest) -> Result<()> {
        use crate::resize::{self, history};
        let c = self.container(&req.id)?;
        let note = |k: &str| req.annotations.get(k).map(String::as_str);
        let source = note(ANNOTATION_SOURCE).unwrap_or("kubelet").to_string();
        history::validate_source(&source)?;
        let reason = note(ANNOTATION_REASON).unwrap_or_default();
        if reason.len() > 1024 {
            return Err(Error::InvalidArgument(format!(
                "{ANNOTATION_REASON} is longer than 1024 bytes"
            )));
        }
        let reclaim = match note(ANNOTATION_RECLAIM) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(Error::InvalidArgument(format!(
                    "{ANNOTATION_RECLAIM} must be true or false, not {other:?}"
                )))
            }
        };
        let mut kept = c.resize_lock.lock().await;
        if c.init.status() == Status::Stopped {
            return Err(Error::NotFound(format!("container {} has exited", req.id)));
        }
        let cg = c.cgroup.clone().ok_or_else(|| {
            Error::FailedPrecondition(format!("container {} has no cgroup", req.id))
        })?;
        let history_file = history::path(&self.root.join(&c.id));
        let (update, reason) = match note(ANNOTATION_ROLLBACK) {
            Some(to) => {
                let to: u64 = to.parse().map_err(|_| {
                    Error::InvalidArgument(format!(
                        "{ANNOTATION_ROLLBACK} {to:?} is not a revision number"
                    ))
                })?;
                let all = history::read(&history_file)
                    .map_err(|e| Error::Internal(format!("history of {}: {e}", req.id)))?;
                let why = if reason.is_empty() {
                    format!("rollback to revision {to}")
                } else {
                    reason.to_string()
                };
                (history::rollback_target(&all, to)?, why)
            }
            None => {
                let any = req
                    .resources
                    .as_ref()
                    .ok_or_else(|| Error::InvalidArgument("update without resources".into()))?;
                let oci: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
                    .map_err(|e| Error::InvalidArgument(format!("resources of {}: {e}", req.id)))?;
                (resize::Update::from_oci_here(&oci)?, reason.to_string())
            }
        };
        if update.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "update of {} changes nothing",
                req.id
            )));
        }
        let kept = kept.get_or_insert_with(Default::default);
        let files = &mut kept.files;
        if note(ANNOTATION_DRY_RUN) == Some("true") {
            resize::apply::check_with(&cg, &update, false, files)?;
            return Ok(());
        }
        let (before, after) = resize::apply::recorded(&cg, &update, reclaim, files)?;
        let time = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let rev = history::Revision {
            revision: 0,
            time,
            source,
            reason,
            before,
            after,
        };
        if kept.history.is_none() {
            kept.history = history::Log::open(&history_file)
                .map_err(|e| log::error!("history of {}: {e}", req.id))
                .ok();
        }
        if let Some(Err(e)) = kept.history.as_mut().map(|l| l.append(rev)) {
            // The change is in place; losing its record must not undo it.
            // The history is opened afresh for the next one.
            log::error!("record revision of {}: {e}", req.id);
            kept.history = None;
        }
        Ok(())
    }

    pub async fn stats(&self, req: &api::StatsRequest) -> Result<api::StatsResponse> {
        let c = self.container(&req.id)?;
        if c.init.status() == Status::Stopped {
            return Err(Error::NotFound(format!("container {} has exited", req.id)));
        }
        let any = crate::cgroups::Cgroup::of_pid(c.init.pid())
            .and_then(|cg| crate::cgroups::stats::metrics(&cg))
            .map_err(|e| Error::Internal(format!("stats of {}: {e}", req.id)))?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    pub async fn connect(&self, req: &api::ConnectRequest) -> Result<api::ConnectResponse> {
        let task_pid = self
            .containers
            .lock()
            .unwrap()
            .get(&req.id)
            .map(|c| c.init.pid())
            .unwrap_or_default();
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: task_pid as u32,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    pub async fn shutdown(&self, req: &api::ShutdownRequest) -> Result<()> {
        if req.now || self.containers.lock().unwrap().is_empty() {
            self.exit.signal();
        }
        Ok(())
    }

    /// The libcontainer state root, for tests and diagnostics.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn delete_response(pid: i32, exit: Option<Exit>) -> api::DeleteResponse {
    api::DeleteResponse {
        pid: pid as u32,
        exit_status: exit.map(|e| e.status).unwrap_or(137),
        exited_at: timestamp(exit.map(|e| e.at).unwrap_or_else(SystemTime::now)),
        ..Default::default()
    }
}

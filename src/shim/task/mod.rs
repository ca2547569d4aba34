//! The Task API's logic: containers and their processes, driven through
//! helpers, with events published in containerd's order. Methods take the
//! plain request types and return `Result`, so they can be tested without
//! ttrpc; `service.rs` adapts them. One file per concern: [`create`]
//! (Create, Start, Exec), [`lifecycle`] (Delete, Kill, Pause, Resume),
//! [`update`] (resize), [`observe`] (Stats, Pids), [`monitor`] (exits and
//! OOM events), [`traits`] (trait enforcement); the queries and the
//! container map are here.

mod create;
mod lifecycle;
mod monitor;
mod observe;
mod traits;
mod update;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use containerd_shim::api::{self, Status as ApiStatus};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::ExitSignal;

use super::error::{Error, Result};
use super::helpers::Helpers;
use super::process::{Process, State, Status};
use super::reaper::Reaper;

/// How long the shim waits for a terminal's last output before reporting an exit.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// How long a created container may take to send its pty.
const CONSOLE_LIMIT: Duration = Duration::from_secs(10);

/// Runs `f` on the runtime's blocking pool: file and cgroup work that can
/// take time never stalls the one runtime thread every container of the pod
/// shares. The pool's threads exit after idling.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task: {e}")))
}

pub(crate) use traits::catalogue;

/// Publishes events to containerd, in the order they are sent.
pub use super::events::Events;

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub init: Arc<Process>,
    /// The container's cgroup, resolved once at create: resizes never look it
    /// up again from a pid that may be gone or reused.
    cgroup: Option<crate::cgroups::Cgroup>,
    /// The systemd unit holding the cgroup, under the systemd driver.
    unit: Option<String>,
    /// One resize at a time per container (held across the write, never
    /// map-wide); guards what its resizes keep (its cgroup files, open, and
    /// its revision history), made on first use.
    resize_lock: tokio::sync::Mutex<Option<crate::resize::Kept>>,
    /// Guards libcontainer's `state.json` of this container, which it
    /// rewrites in place (truncate, then write): a helper that loads it
    /// while another saves it reads a torn file, and two saving at once can
    /// leave one. Held across every helper of this container: shared by an
    /// exec (which only reads it), exclusive for the rest.
    state_lock: tokio::sync::RwLock<()>,
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

/// The status containerd sees: a step under way shows the state it started
/// from (a Pause as PAUSING, as runc's shim shows it).
fn api_status(st: &State) -> ApiStatus {
    match st.status {
        Status::Created | Status::Starting => ApiStatus::CREATED,
        Status::Running => ApiStatus::RUNNING,
        Status::Pausing => ApiStatus::PAUSING,
        Status::Paused | Status::Resuming => ApiStatus::PAUSED,
        Status::Deleting if st.exit.is_none() => ApiStatus::CREATED,
        Status::Deleting | Status::Stopped => ApiStatus::STOPPED,
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
            status: api_status(&st).into(),
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
}

//! Create, Start (of an init or an exec) and Exec: making processes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use containerd_shim::api;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskExecAdded, TaskExecStarted, TaskIO, TaskStart,
};
use containerd_shim::protos::protobuf::MessageField;

use super::super::error::{Error, Result};
use super::super::process::{Process, Status};
use super::super::stdio::{self, StdioPaths};
use super::{traits, Container, Tasks, CONSOLE_LIMIT};
use crate::cgroups::driver::{self, Driver};
use crate::helper::{Request, RootfsMount};

/// The cgroup driver for container `id` of `bundle`, from its spec's
/// cgroupsPath and the runtime options' `SystemdCgroup`, if this node can
/// give it: a spec that contradicts the options is InvalidArgument, a node
/// without what the driver needs FailedPrecondition.
fn cgroup_driver(
    bundle: &std::path::Path,
    systemd_cgroup: Option<bool>,
    id: &str,
) -> Result<Driver> {
    #[derive(serde::Deserialize)]
    struct Spec {
        linux: Option<Linux>,
    }
    #[derive(serde::Deserialize)]
    struct Linux {
        #[serde(rename = "cgroupsPath")]
        cgroups_path: Option<String>,
    }
    let path = bundle.join("config.json");
    let text = std::fs::read(&path)
        .map_err(|e| Error::InvalidArgument(format!("read {}: {e}", path.display())))?;
    let spec: Spec = serde_json::from_slice(&text)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
    let cgroups_path = spec.linux.and_then(|l| l.cgroups_path);
    let chosen = driver::choose(systemd_cgroup, cgroups_path.as_deref())
        .map_err(|e| Error::InvalidArgument(format!("create {id}: {e}")))?;
    if chosen.is_systemd() {
        let asked = format!(
            "container {id}'s cgroupsPath {:?}",
            cgroups_path.unwrap_or_default()
        );
        driver::check(&chosen, driver::Node::here(), &asked)
            .map_err(|e| Error::FailedPrecondition(format!("create {id}: {e}")))?;
    }
    Ok(chosen)
}

impl Tasks {
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
        let systemd_cgroup = super::super::options::systemd_cgroup(req.options.as_ref())
            .map_err(|e| Error::InvalidArgument(format!("create {}: {e}", req.id)))?;
        // Traits first: a refused container leaves nothing behind. Reading
        // and rewriting config.json runs off the runtime thread; so does
        // choosing the cgroup driver, from the spec's cgroupsPath.
        let (tightened, driver) = {
            let bundle = bundle.clone();
            let id = req.id.clone();
            super::blocking(move || {
                let tightened = traits::apply_to_bundle(&bundle)?;
                Ok::<_, Error>((tightened, cgroup_driver(&bundle, systemd_cgroup, &id)?))
            })
            .await??
        };
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
            systemd: driver.is_systemd(),
        };
        let helper_stdio = std::mem::take(&mut prepared.helper);
        let since = Instant::now();
        let (created, console) = tokio::join!(
            self.helpers.run(&request, helper_stdio),
            prepared.connect_console(CONSOLE_LIMIT)
        );
        let pid = created?.ok_or_else(|| Error::Internal("helper returned no pid".into()))?;
        let exited = self.reaper.subscribe(pid, since);
        // Resolved once, here (mountinfo can be long): every later Update,
        // Stats and Pids uses it, never a pid that may be gone.
        let cgroup = super::blocking(move || crate::cgroups::Cgroup::of_pid(pid).ok()).await?;
        let init = Arc::new(Process::new(String::new(), paths, None, pid));
        *init.handles.lock().unwrap() = Some(Arc::new(prepared.handles));
        let container = Arc::new(Container {
            id: req.id.clone(),
            bundle,
            init: init.clone(),
            cgroup,
            unit: match driver {
                Driver::Systemd(scope) => Some(scope.unit),
                Driver::Cgroupfs => None,
            },
            resize_lock: tokio::sync::Mutex::new(None),
            state_lock: tokio::sync::RwLock::new(()),
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

    pub(super) async fn remove_container_state(&self, c: &Container) -> Result<()> {
        let _state = c.state_lock.write().await;
        self.helpers
            .delete(&c.id, &self.root, &c.bundle, false)
            .await?;
        // On v1 the helper started the container's scope, not libcontainer
        // (which stops it on v2): stop it here. An empty scope stops by
        // itself; this makes it so before Delete returns.
        if let Some(unit) = c.unit.clone() {
            let stopped = super::blocking(move || {
                if driver::Node::here().unified {
                    return Ok(());
                }
                crate::cgroups::systemd::stop_unit(&unit).map_err(|e| format!("{unit}: {e}"))
            })
            .await?;
            if let Err(e) = stopped {
                log::warn!("stop the systemd scope of {}: {e}", c.id);
            }
        }
        Ok(())
    }

    pub async fn start(&self, req: &api::StartRequest) -> Result<api::StartResponse> {
        let c = self.container(&req.id)?;
        if req.exec_id.is_empty() {
            return self.start_init(&c).await;
        }
        self.start_exec(&c, &req.exec_id).await
    }

    pub(super) async fn start_init(&self, c: &Container) -> Result<api::StartResponse> {
        let init = &c.init;
        if let Err(now) = init.transition(Status::Created, Status::Starting) {
            init.open_gate();
            return Err(Error::FailedPrecondition(format!(
                "container {} is {now:?}, not created",
                c.id,
            )));
        }
        let started = {
            let _state = c.state_lock.write().await;
            self.helpers.start(&c.id, &self.root).await
        };
        if let Err(e) = started {
            init.abandon(Status::Starting, Status::Created);
            init.open_gate();
            return Err(e.into());
        }
        // It may have exited meanwhile: then it stays Stopped.
        let _ = init.transition(Status::Starting, Status::Running);
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

    pub(super) async fn start_exec(
        &self,
        c: &Arc<Container>,
        exec_id: &str,
    ) -> Result<api::StartResponse> {
        let proc = c.process(exec_id)?;
        if proc.pid() != 0 || proc.transition(Status::Created, Status::Starting).is_err() {
            return Err(Error::FailedPrecondition(format!(
                "exec {exec_id} in {} was already started",
                c.id
            )));
        }
        let started = self.start_claimed_exec(c, &proc, exec_id).await;
        if started.is_err() {
            proc.abandon(Status::Starting, Status::Created);
        }
        started
    }

    /// Starts an exec whose Start was claimed (it is Starting).
    async fn start_claimed_exec(
        &self,
        c: &Arc<Container>,
        proc: &Arc<Process>,
        exec_id: &str,
    ) -> Result<api::StartResponse> {
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
        let state = c.state_lock.read().await;
        let since = Instant::now();
        let (started, console) = tokio::join!(
            self.helpers.run(&request, helper_stdio),
            prepared.connect_console(CONSOLE_LIMIT)
        );
        drop(state);
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

    pub async fn exec(&self, req: &api::ExecProcessRequest) -> Result<()> {
        let c = self.container(&req.id)?;
        crate::ids::validate("exec id", &req.exec_id)?;
        if c.init.ended() {
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
        let what = format!("exec {} in {}", req.exec_id, req.id);
        let bundle = c.bundle.clone();
        let spec = super::blocking(move || traits::held_to_traits(&bundle, &spec, &what)).await??;
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
}

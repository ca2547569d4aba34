//! Delete, Kill, Pause and Resume: changing a process's life.

use std::time::{Duration, SystemTime};

use containerd_shim::api;
use containerd_shim::protos::events::task::{TaskDelete, TaskPaused, TaskResumed};

use super::super::error::{Error, Result};
use super::super::process::Status;
use super::super::reaper::Exit;
use super::{timestamp, Tasks};
use crate::helper::Request;

impl Tasks {
    pub async fn delete(&self, req: &api::DeleteRequest) -> Result<api::DeleteResponse> {
        let c = self.container(&req.id)?;
        if !req.exec_id.is_empty() {
            let proc = c.process(&req.exec_id)?;
            let claimed =
                proc.transition_from(&[Status::Created, Status::Stopped], Status::Deleting);
            if let Err(now) = claimed {
                return Err(Error::FailedPrecondition(format!(
                    "exec {} in {} is {now:?}",
                    req.exec_id, req.id
                )));
            }
            c.execs.lock().unwrap().remove(&req.exec_id);
            let st = proc.state();
            return Ok(delete_response(st.pid, st.exit));
        }
        let init = c.init.clone();
        let was = match init.transition_from(&[Status::Created, Status::Stopped], Status::Deleting)
        {
            Ok(was) => was,
            Err(Status::Deleting) => {
                return Err(Error::FailedPrecondition(format!(
                    "container {} is being deleted",
                    req.id
                )))
            }
            Err(now) => {
                return Err(Error::FailedPrecondition(format!(
                    "container {} is {now:?}: kill it first",
                    req.id
                )))
            }
        };
        init.open_gate();
        if let Err(e) = self.remove_container_state(&c).await {
            init.abandon(Status::Deleting, was);
            return Err(e);
        }
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
        if proc.state().exit.is_some() {
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
        let _state = c.state_lock.write().await;
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

    pub async fn pause(&self, req: &api::PauseRequest) -> Result<()> {
        self.freeze(&req.id, true).await
    }

    pub async fn resume(&self, req: &api::ResumeRequest) -> Result<()> {
        self.freeze(&req.id, false).await
    }

    /// Pause (freeze) or resume (thaw) a container, and publish it.
    pub(super) async fn freeze(&self, id: &str, pause: bool) -> Result<()> {
        let c = self.container(id)?;
        let (from, claim, to) = if pause {
            (Status::Running, Status::Pausing, Status::Paused)
        } else {
            (Status::Paused, Status::Resuming, Status::Running)
        };
        if let Err(now) = c.init.transition(from, claim) {
            let state = if pause { "running" } else { "paused" };
            return Err(Error::FailedPrecondition(format!(
                "container {id} is {now:?}, not {state}"
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
        let frozen = {
            let _state = c.state_lock.write().await;
            self.helpers.run(&req, Default::default()).await
        };
        if let Err(e) = frozen {
            c.init.abandon(claim, from);
            return Err(e.into());
        }
        // It may have exited meanwhile: then it stays Stopped.
        let _ = c.init.transition(claim, to);
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
}

fn delete_response(pid: i32, exit: Option<Exit>) -> api::DeleteResponse {
    api::DeleteResponse {
        pid: pid as u32,
        exit_status: exit.map(|e| e.status).unwrap_or(137),
        exited_at: timestamp(exit.map(|e| e.at).unwrap_or_else(SystemTime::now)),
        ..Default::default()
    }
}

//! One process of a container (its init or an exec) and its lifecycle state.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;

use super::stdio::{StdioHandles, StdioPaths};
use crate::reaper::Exit;

/// Where a process is in its life. Transitions: Created -> Running <-> Paused,
/// and any of them -> Stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

/// Fields that change over the process's life; guarded by `Process::state`.
#[derive(Debug, Clone)]
pub struct State {
    pub status: Status,
    /// 0 until the process exists (an exec before Start).
    pub pid: i32,
    /// Set once the exit has been handled.
    pub exit: Option<Exit>,
}

pub struct Process {
    /// The exec id; empty for a container's init.
    pub exec_id: String,
    pub stdio: StdioPaths,
    /// The OCI process spec of an exec, as JSON.
    pub spec: Option<String>,
    /// Lock never held across an `.await`.
    state: Mutex<State>,
    /// Stdio kept while the process runs (set at create/start).
    pub handles: Mutex<Option<Arc<StdioHandles>>>,
    /// Becomes `Some` once the exit has been recorded; Wait listens here.
    exited: watch::Sender<Option<Exit>>,
    /// Opens when the exit may be published: after TaskStart (or when the
    /// process is killed or deleted without ever starting), so TaskExit can
    /// never overtake it.
    gate: watch::Sender<bool>,
}

impl Process {
    pub fn new(exec_id: String, stdio: StdioPaths, spec: Option<String>, pid: i32) -> Self {
        Self {
            exec_id,
            stdio,
            spec,
            state: Mutex::new(State {
                status: Status::Created,
                pid,
                exit: None,
            }),
            handles: Mutex::new(None),
            exited: watch::channel(None).0,
            gate: watch::channel(false).0,
        }
    }

    pub fn state(&self) -> State {
        self.state.lock().unwrap().clone()
    }

    pub fn status(&self) -> Status {
        self.state.lock().unwrap().status
    }

    pub fn pid(&self) -> i32 {
        self.state.lock().unwrap().pid
    }

    /// Moves to `to` unless the process has already stopped.
    pub fn set_status(&self, to: Status) {
        let mut s = self.state.lock().unwrap();
        if s.status != Status::Stopped {
            s.status = to;
        }
    }

    pub fn set_running(&self, pid: i32) {
        let mut s = self.state.lock().unwrap();
        s.pid = pid;
        if s.status != Status::Stopped {
            s.status = Status::Running;
        }
    }

    pub fn set_exited(&self, exit: Exit) {
        {
            let mut s = self.state.lock().unwrap();
            s.status = Status::Stopped;
            s.exit = Some(exit);
        }
        self.exited.send_replace(Some(exit));
    }

    pub fn stdio_handles(&self) -> Option<Arc<StdioHandles>> {
        self.handles.lock().unwrap().clone()
    }

    /// Waits for the exit; returns at once if it already happened.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exited.subscribe();
        loop {
            if let Some(exit) = *rx.borrow_and_update() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`; unreachable in practice.
                return Exit {
                    pid: 0,
                    status: 255,
                    at: SystemTime::now(),
                };
            }
        }
    }

    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    pub async fn gate_opened(&self) {
        let mut rx = self.gate.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

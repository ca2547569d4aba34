//! The shim is a child subreaper: every process that ends below it is reaped
//! here, and its exit status handed to whoever waits for that pid.
//!
//! Nothing else in the shim may call `wait*`: helpers are spawned with
//! `std::process::Command` and never waited on directly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    /// The exit code, or 128 + the signal that killed it.
    pub status: u32,
    pub at: SystemTime,
}

/// Exits nobody was waiting for are kept this long, so a waiter that learns a
/// pid just after the process ended still gets its status.
const UNCLAIMED_TTL: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Default)]
struct Table {
    waiters: HashMap<i32, oneshot::Sender<Exit>>,
    unclaimed: HashMap<i32, (Exit, Instant)>,
}

/// Reaps children on SIGCHLD and dispatches their exits by pid.
#[derive(Default)]
pub struct Reaper {
    // Guarded by its own mutex; never held across an `.await`.
    table: Mutex<Table>,
}

impl Reaper {
    /// Installs the SIGCHLD handler and starts reaping. Must run inside a tokio
    /// runtime, before any child is spawned.
    pub fn start() -> std::io::Result<Arc<Self>> {
        let reaper = Arc::new(Self::default());
        let mut sigchld = signal(SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Returns a receiver for the exit of `pid`. `since` is a moment before the
    /// process was created: an exit of the same pid reaped before it belongs to
    /// an earlier process that had the number, and is ignored.
    pub fn subscribe(&self, pid: i32, since: Instant) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        let mut t = self.table.lock().unwrap();
        match t.unclaimed.remove(&pid) {
            Some((exit, reaped)) if reaped >= since => {
                let _ = tx.send(exit);
            }
            _ => {
                t.waiters.insert(pid, tx);
            }
        }
        rx
    }

    /// Reaps every child that has ended, without blocking.
    pub fn reap_all(&self) {
        loop {
            let exit = match waitpid(Some(Pid::from_raw(-1)), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code as u32),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, 128 + sig as u32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("waitpid: {e}");
                    return;
                }
            };
            self.deliver(Exit {
                pid: exit.0.as_raw(),
                status: exit.1,
                at: SystemTime::now(),
            });
        }
    }

    fn deliver(&self, exit: Exit) {
        let mut t = self.table.lock().unwrap();
        if let Some(tx) = t.waiters.remove(&exit.pid) {
            if tx.send(exit).is_ok() {
                return;
            }
        }
        let now = Instant::now();
        t.unclaimed
            .retain(|_, (_, at)| now.duration_since(*at) < UNCLAIMED_TTL);
        t.unclaimed.insert(exit.pid, (exit, now));
    }
}

//! Exit and OOM monitoring: TaskExit once a process ends (after its start
//! was published), TaskOOM for each OOM kill in a container's cgroup.

use std::sync::Arc;

use containerd_shim::protos::events::task::{TaskExit, TaskOOM};
use tokio::sync::oneshot;

use super::super::process::Process;
use super::super::reaper::Exit;
use super::{timestamp, Container, Tasks, DRAIN_LIMIT};

impl Tasks {
    /// Waits for `proc` to end, records the exit and publishes TaskExit once
    /// the process's start (or kill) has been published.
    pub(super) fn spawn_monitor(
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

    pub(super) fn spawn_oom_monitor(&self, c: &Container) {
        let events = self.events.clone();
        let id = c.id.clone();
        let watched = c
            .cgroup
            .as_ref()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no cgroup"))
            .and_then(super::super::oom::watch);
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
}

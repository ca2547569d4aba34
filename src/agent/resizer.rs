//! The one way anything in tidald changes a container: the API, the policy
//! engine and the trait controllers. A change is routed to the shim that
//! owns the container (kubelet's path, Task.Update, so each container has
//! one writer and every change is a revision), its reason naming the
//! writers it displaces (`owner`), counted in the metrics, and answered with
//! the container as it is afterwards.

use std::sync::Arc;

use super::error::{Error, Result};
use super::inventory::{Inventory, Name, Route, View};
use super::metrics::resizes::Resizes;
use super::owner;
use super::shimclient::{self, Refusal, Shims};
use crate::resize::{history, Change, Notes};

/// The container after a change, and the revision that recorded it (0 for
/// a dry run).
#[derive(Debug, Clone)]
pub struct Resized {
    pub container: View,
    pub revision: u64,
}

pub struct Resizer {
    inventory: Arc<Inventory>,
    shims: Shims,
    metrics: Resizes,
    /// One turn at a time per container, by (namespace, id): tidald's own
    /// writers of a container never race each other between reading its
    /// writers and writing, so a conditional write is refused only for a
    /// writer outside tidald (kubelet).
    turns: Turns,
}

type Turns =
    std::sync::Mutex<std::collections::HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>>;

impl Resizer {
    pub fn new(inventory: Arc<Inventory>, metrics: Resizes) -> Resizer {
        Resizer {
            inventory,
            shims: Shims::default(),
            metrics,
            turns: Turns::default(),
        }
    }

    /// Changes container `name`'s limits by `change`; `notes` say who asks
    /// (never kubelet: its changes come through CRI), why and how, and, for
    /// a writer that decided from the container as it was at some revision,
    /// which (`expect_revision`: ABORTED if another writer changed it since).
    pub async fn resize(&self, name: &Name, change: &Change, notes: Notes) -> Result<Resized> {
        check_source(&notes.source)?;
        if change.is_empty() {
            return Err(Error::Invalid(
                "nothing to change: give cpu_millis, memory_bytes or cpuset".into(),
            ));
        }
        let notes = Notes {
            rollback_to: None,
            ..notes
        };
        self.send(name, Some(change), notes).await
    }

    /// Restores container `name`'s limits as they were right after
    /// `revision` (0: before the first), as a new revision by `source`; if
    /// `expect_revision` is given, only while that is still the last one.
    pub async fn rollback(
        &self,
        name: &Name,
        revision: u64,
        source: &str,
        reason: String,
        expect_revision: Option<u64>,
    ) -> Result<Resized> {
        check_source(source)?;
        let notes = Notes {
            source: source.to_string(),
            reason,
            rollback_to: Some(revision),
            expect_revision,
            ..Default::default()
        };
        self.send(name, None, notes).await
    }

    /// Forgets the connection to the shim at `address`.
    pub fn close(&self, address: &str) {
        self.shims.close(address)
    }

    /// Sends `change` (None: a rollback, which `notes` names) to the
    /// container's shim, its reason noting the writers it displaces
    /// (`owner::displaced`), on the condition that the container's last
    /// revision is still the one the change was decided from. A writer that
    /// names that revision (`notes.expect_revision`) learns of a change
    /// since as ABORTED and decides again; for one that does not, the
    /// revision is the one the note was read at, and a race only makes the
    /// resizer read the writers again (`RACES` times, then it sends without
    /// the condition), so that the note names exactly whom the change
    /// displaced. tidald's writers of one container take turns (`turns`),
    /// so such a race is with kubelet alone, and the answer names the
    /// change's own revision (the expected one plus one).
    async fn send(&self, name: &Name, change: Option<&Change>, notes: Notes) -> Result<Resized> {
        let reason = match (change, notes.rollback_to) {
            (None, Some(to)) if notes.reason.is_empty() => format!("rollback to revision {to}"),
            _ => notes.reason.clone(),
        };
        // Every writer inside tidald names the namespace: the turn's key is
        // then known without a lookup on the write path.
        let key = match &name.namespace {
            Some(ns) => (ns.clone(), name.id.clone()),
            None => {
                let t = self.inventory.route(name)?;
                (t.namespace, t.id)
            }
        };
        let turn = {
            let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
            turns.entry(key.clone()).or_default().clone()
        };
        let done = {
            let _turn = turn.lock().await;
            self.send_in_turn(name, change, &notes, &reason).await
        };
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        // Forgotten when no one else waits for it.
        if Arc::strong_count(&turn) == 2 {
            turns.remove(&key);
        }
        done
    }

    /// `send`, in the container's turn.
    async fn send_in_turn(
        &self,
        name: &Name,
        change: Option<&Change>,
        notes: &Notes,
        reason: &str,
    ) -> Result<Resized> {
        let mut races = 0;
        loop {
            let t = self.inventory.route(name)?;
            let sets = match (change, notes.rollback_to) {
                (Some(c), _) => owner::set_by(c),
                (None, Some(to)) => self.restored(name, to)?,
                (None, None) => Vec::new(),
            };
            let attempt = Notes {
                reason: owner::noted(reason, &owner::displaced(&t.writers, &notes.source, &sets)),
                // The last try sends unconditionally: a change that names
                // no revision is never refused for a race, only its note
                // may then miss a writer.
                expect_revision: notes
                    .expect_revision
                    .or((races < RACES).then_some(t.last_revision)),
                ..notes.clone()
            };
            match self.write(&t, change, &attempt).await {
                Err(Error::Shim(r))
                    if r.code == shimclient::ABORTED
                        && notes.expect_revision.is_none()
                        && races < RACES =>
                {
                    races += 1;
                }
                done => return done,
            }
        }
    }

    /// The limits a rollback of container `name` to revision `to` restores.
    fn restored(&self, name: &Name, to: u64) -> Result<Vec<&'static str>> {
        let all = self.inventory.history(name)?;
        Ok(owner::set_by_update(&history::rollback_target(&all, to)?))
    }

    /// One Task.Update of the container `t` routes to.
    async fn write(&self, t: &Route, change: Option<&Change>, notes: &Notes) -> Result<Resized> {
        let resources = change.map_or_else(|| serde_json::json!({}), Change::resources);
        if t.stopped {
            return Err(Error::NotRunning { id: t.id.clone() });
        }
        let address = t.address.clone().map_err(|e| {
            Error::Shim(Refusal {
                code: shimclient::UNAVAILABLE,
                message: format!("no shim address for {}: {e}", t.id),
            })
        })?;
        let req = shimclient::request(&t.id, &resources, &notes.annotations());
        let start = std::time::Instant::now();
        let result = self.shims.update(&address, &req).await.map_err(Error::Shim);
        if !notes.dry_run {
            let outcome = match &result {
                Ok(()) => "ok".to_string(),
                Err(e) => e.outcome(),
            };
            self.metrics
                .record(&outcome, &notes.source, start.elapsed().as_secs_f64());
        }
        result?;
        let container = self.inventory.after(t)?;
        // Written on the condition that `expect` was the last revision, the
        // change is the next one, whoever wrote after it; unconditionally
        // (an operator's after repeated races), the last one read back.
        let revision = match notes.expect_revision {
            _ if notes.dry_run => 0,
            Some(expect) => expect + 1,
            None => container.last_revision,
        };
        Ok(Resized {
            revision,
            container,
        })
    }
}

/// How many times a change that names no revision of its own is sent again,
/// with the writers read again, after another writer's change landed between
/// reading them and writing; the last time without the condition.
const RACES: u32 = 3;

/// Who may ask through tidald: anyone but kubelet, whose changes are
/// CRI's UpdateContainerResources.
fn check_source(source: &str) -> Result<()> {
    if source == "kubelet" {
        return Err(Error::Invalid(
            "source kubelet is reserved for CRI's UpdateContainerResources".into(),
        ));
    }
    history::validate_source(source)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_and_unknown_sources_are_refused_before_anything_is_sent() {
        assert!(check_source("operator").is_ok());
        assert!(check_source("policy").is_ok());
        assert!(check_source("trait:cron-vertical-scaler").is_ok());
        for bad in ["kubelet", "", "root", "trait:", "trait:a b"] {
            let e = check_source(bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}: {e}");
        }
    }
}

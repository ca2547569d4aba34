//! The one way anything in tidald changes a container: the API, the policy
//! engine and the trait controllers. A change is routed to the shim that
//! owns the container (kubelet's path, Task.Update, so each container has
//! one writer and every change is a revision), its reason naming the
//! writers it displaces (`owner`), counted in the metrics, and answered with
//! the container as it is afterwards.

use std::sync::Arc;

use super::error::{Error, Result};
use super::inventory::{Inventory, Name, View};
use super::metrics::Metrics;
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
    metrics: Arc<Metrics>,
}

impl Resizer {
    pub fn new(inventory: Arc<Inventory>, metrics: Arc<Metrics>) -> Resizer {
        Resizer {
            inventory,
            shims: Shims::default(),
            metrics,
        }
    }

    /// Changes container `name`'s limits by `change`; `notes` say who asks
    /// (never kubelet: its changes come through CRI), why and how.
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
    /// `revision` (0: before the first), as a new revision by `source`.
    pub async fn rollback(
        &self,
        name: &Name,
        revision: u64,
        source: &str,
        reason: String,
    ) -> Result<Resized> {
        check_source(source)?;
        let notes = Notes {
            source: source.to_string(),
            reason,
            rollback_to: Some(revision),
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
    /// (`owner::displaced`).
    async fn send(&self, name: &Name, change: Option<&Change>, notes: Notes) -> Result<Resized> {
        let t = self.inventory.route(name)?;
        let notes = match change {
            Some(c) => Notes {
                reason: owner::noted(
                    &notes.reason,
                    &owner::displaced(&t.writers, &notes.source, c),
                ),
                ..notes
            },
            None => notes,
        };
        let resources = change.map_or_else(|| serde_json::json!({}), Change::resources);
        if t.stopped {
            return Err(Error::NotRunning { id: t.id });
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
            self.metrics.record(&outcome, start.elapsed().as_secs_f64());
        }
        result?;
        let container = self.inventory.after(&t)?;
        Ok(Resized {
            revision: if notes.dry_run {
                0
            } else {
                container.last_revision
            },
            container,
        })
    }
}

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

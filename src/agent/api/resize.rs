//! The resize API (`tidal.resize.v1.Resize`): list and get containers, update
//! (with dry run), history, rollback, watch. Reads go through the inventory
//! (listings and histories on a blocking thread), changes through the
//! resizer; errors become statuses in one place (`agent::error`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::agent::autoscale::Autoscaler;
use crate::agent::error::Error;
use crate::agent::inventory::{Inventory, Name, View};
use crate::agent::policy::observe::Shared;
use crate::agent::policy::Key;
use crate::agent::resizer::{Resized, Resizer};
use crate::proto::pb;
use crate::resize::{history, Change, Notes};

pub struct ResizeService {
    pub inventory: Arc<Inventory>,
    pub resizer: Arc<Resizer>,
    /// New revisions of every container, as `follow` finds them.
    pub revisions: tokio::sync::broadcast::Sender<pb::WatchEvent>,
    /// The vertical-autoscaler, whose recommendations listings carry (None
    /// when the policy engine is off).
    pub autoscaler: Option<Arc<Autoscaler<Shared>>>,
}

impl From<history::Revision> for pb::Revision {
    fn from(r: history::Revision) -> Self {
        pb::Revision {
            revision: r.revision,
            time_unix: r.time,
            source: r.source,
            reason: r.reason,
            before_json: serde_json::to_string(&r.before).unwrap_or_default(),
            after_json: serde_json::to_string(&r.after).unwrap_or_default(),
        }
    }
}

impl From<pb::Revision> for history::Revision {
    fn from(r: pb::Revision) -> Self {
        history::Revision {
            revision: r.revision,
            time: r.time_unix,
            source: r.source,
            reason: r.reason,
            before: serde_json::from_str(&r.before_json).unwrap_or_default(),
            after: serde_json::from_str(&r.after_json).unwrap_or_default(),
        }
    }
}

fn limits_pb(l: &crate::agent::node::Limits) -> pb::Limits {
    pb::Limits {
        cpu_millis: l.cpu_millis(),
        memory_bytes: l.memory_bytes,
        cpuset: l.cpuset.clone(),
    }
}

impl From<View> for pb::Container {
    fn from(v: View) -> pb::Container {
        let (c, d) = (v.info, v.declared);
        pb::Container {
            live: Some(limits_pb(&c.limits)),
            usage: Some(pb::Usage {
                cpu_ns: c.usage.cpu_ns,
                memory_bytes: c.usage.memory_bytes,
            }),
            namespace: c.namespace,
            id: c.id,
            pid: c.pid,
            status: c.status,
            qos: d.qos,
            pod: d.pod,
            name: d.name,
            sandbox: d.sandbox,
            declared: d.limits.as_ref().map(limits_pb),
            overlays: d.overlays,
            recommended: None,
        }
    }
}

impl From<Resized> for pb::UpdateResourcesResponse {
    fn from(r: Resized) -> Self {
        pb::UpdateResourcesResponse {
            container: Some(r.container.into()),
            revision: r.revision,
        }
    }
}

/// The container a request names.
fn name(r: Option<pb::ContainerRef>) -> Result<Name, Error> {
    let r = r.ok_or_else(|| Error::Invalid("no container named".into()))?;
    Ok(Name {
        namespace: Some(r.namespace).filter(|n| !n.is_empty()),
        id: r.id,
    })
}

impl ResizeService {
    /// The container as the API shows it: its view, with the
    /// vertical-autoscaler's recommendation when there is one.
    fn shown(&self, v: View) -> pb::Container {
        let key = Key {
            namespace: v.info.namespace.clone(),
            id: v.info.id.clone(),
        };
        let recommended = self
            .autoscaler
            .as_ref()
            .and_then(|a| a.entry(&key))
            .and_then(|e| e.recommendation)
            .map(|r| pb::Recommendation {
                cpu_millis: r.cpu_millis,
                memory_bytes: r.memory_bytes,
                why: r.why,
            });
        pb::Container {
            recommended,
            ..v.into()
        }
    }

    /// Runs `f` on the inventory on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inventory) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Status> {
        let inventory = self.inventory.clone();
        tokio::task::spawn_blocking(move || f(&inventory))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::from)
    }
}

type WatchStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::resize_server::Resize for ResizeService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        use tokio_stream::StreamExt;
        let filter = req.into_inner().container;
        if let Some(f) = &filter {
            crate::ids::validate("container id", &f.id).map_err(Error::from)?;
        }
        let stream = tokio_stream::wrappers::BroadcastStream::new(self.revisions.subscribe())
            .filter_map(move |ev| {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(_lagged) => {
                        return Some(Err(Status::data_loss(
                            "watcher fell behind; revisions were skipped",
                        )))
                    }
                };
                let wanted = filter.as_ref().is_none_or(|f| {
                    let c = ev.container.clone().unwrap_or_default();
                    c.id == f.id && (f.namespace.is_empty() || c.namespace == f.namespace)
                });
                wanted.then_some(Ok(ev))
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_containers(
        &self,
        _: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let all = self.blocking(|i| i.list()).await?;
        Ok(Response::new(pb::ListContainersResponse {
            containers: all.into_iter().map(|v| self.shown(v)).collect(),
        }))
    }

    async fn get_resources(
        &self,
        req: Request<pb::GetResourcesRequest>,
    ) -> Result<Response<pb::Container>, Status> {
        let name = name(req.into_inner().container)?;
        let c = self.blocking(move |i| i.get(&name)).await?;
        Ok(Response::new(self.shown(c)))
    }

    async fn update_resources(
        &self,
        req: Request<pb::UpdateResourcesRequest>,
    ) -> Result<Response<pb::UpdateResourcesResponse>, Status> {
        let r = req.into_inner();
        let name = name(r.container)?;
        let change = Change {
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            cpuset: r.cpuset,
            ..Default::default()
        };
        let notes = Notes {
            source: if r.source.is_empty() {
                "operator".to_string()
            } else {
                r.source
            },
            reason: r.reason,
            reclaim: r.reclaim,
            dry_run: r.dry_run,
            rollback_to: None,
            expect_revision: r.expect_revision,
        };
        let done = self.resizer.resize(&name, &change, notes).await?;
        Ok(Response::new(done.into()))
    }

    async fn history(
        &self,
        req: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let name = name(req.into_inner().container)?;
        let revs = self.blocking(move |i| i.history(&name)).await?;
        Ok(Response::new(pb::HistoryResponse {
            revisions: revs.into_iter().map(Into::into).collect(),
        }))
    }

    async fn rollback(
        &self,
        req: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::UpdateResourcesResponse>, Status> {
        let r = req.into_inner();
        let name = name(r.container)?;
        let done = self
            .resizer
            .rollback(&name, r.revision, "operator", r.reason, r.expect_revision)
            .await?;
        Ok(Response::new(done.into()))
    }
}

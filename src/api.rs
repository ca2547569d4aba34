//! tidald's gRPC API (`proto/tidal/resize/v1/resize.proto`) on a root-only
//! unix socket. Every call's peer credentials are checked; changes are routed
//! to the shim that owns the container, so each container has one writer.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use crate::node::{self, ContainerInfo};
use crate::resize::history;
use crate::shim::task::{
    ANNOTATION_DRY_RUN, ANNOTATION_REASON, ANNOTATION_RECLAIM, ANNOTATION_ROLLBACK,
    ANNOTATION_SOURCE,
};

mod follow;
mod route;

pub use follow::follow;

pub mod pb {
    tonic::include_proto!("tidal.resize.v1");
}

/// The trait catalogue API (`tidal.traits.v1`).
pub mod traits_pb {
    tonic::include_proto!("tidal.traits.v1");
}

use pb::resize_client::ResizeClient;
use pb::resize_server::{Resize, ResizeServer};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_metrics_are_a_prometheus_histogram() {
        let m = ResizeMetrics::default();
        m.record("ok", 0.0002);
        m.record("ok", 0.003);
        m.record("FailedPrecondition", 0.0004);
        let text = m.render();
        assert!(
            text.contains("tidal_resizes_total{outcome=\"ok\"} 2"),
            "{text}"
        );
        assert!(text.contains("tidal_resizes_total{outcome=\"FailedPrecondition\"} 1"));
        assert!(text.contains("tidal_resize_seconds_bucket{le=\"0.0005\"} 2"));
        assert!(text.contains("tidal_resize_seconds_bucket{le=\"0.005\"} 3"));
        assert!(text.contains("tidal_resize_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("tidal_resize_seconds_count 3"));
    }
}

/// Who may call: root, and the uids configured with `--allow-uid`.
pub fn authorize(allowed: &[u32], req: &Request<()>) -> Result<(), Status> {
    let cred = req
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|i| i.peer_cred);
    match cred {
        Some(c) if c.uid() == 0 || allowed.contains(&c.uid()) => Ok(()),
        Some(c) => Err(Status::permission_denied(format!(
            "uid {} may not use tidald (allowed: root{})",
            c.uid(),
            allowed.iter().map(|u| format!(", {u}")).collect::<String>()
        ))),
        None => Err(Status::permission_denied(
            "caller's credentials are unknown",
        )),
    }
}

/// Upper bounds (seconds) of the resize latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 8] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0];

/// Counters of the resizes (updates and rollbacks) tidald routed.
#[derive(Debug, Default)]
pub struct ResizeMetrics {
    inner: std::sync::Mutex<MetricsInner>,
}

#[derive(Debug, Default, Clone)]
struct MetricsInner {
    /// By outcome: "ok" or the gRPC code's name.
    outcomes: std::collections::BTreeMap<String, u64>,
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl ResizeMetrics {
    fn record(&self, outcome: &str, seconds: f64) {
        let mut m = self.inner.lock().unwrap();
        *m.outcomes.entry(outcome.to_string()).or_default() += 1;
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *le {
                m.buckets[i] += 1;
            }
        }
        m.count += 1;
        m.sum += seconds;
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let m = self.inner.lock().unwrap().clone();
        let mut out = String::new();
        let _ = writeln!(out, "# HELP tidal_resizes_total Resizes routed by tidald, by outcome.\n# TYPE tidal_resizes_total counter");
        for (outcome, n) in &m.outcomes {
            let _ = writeln!(out, "tidal_resizes_total{{outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP tidal_resize_seconds Time from a resize request to its answer.\n# TYPE tidal_resize_seconds histogram");
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "tidal_resize_seconds_bucket{{le=\"{le}\"}} {}",
                m.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "tidal_resize_seconds_bucket{{le=\"+Inf\"}} {}",
            m.count
        );
        let _ = writeln!(
            out,
            "tidal_resize_seconds_sum {}\ntidal_resize_seconds_count {}",
            m.sum, m.count
        );
        out
    }
}

pub struct Service {
    pub state_dir: PathBuf,
    pub metrics: std::sync::Arc<ResizeMetrics>,
    /// New revisions of every container, as `follow` finds them.
    pub revisions: tokio::sync::broadcast::Sender<pb::WatchEvent>,
    /// Containers and shim connections, kept between changes.
    routes: std::sync::Arc<route::Routes>,
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

fn io_status(e: std::io::Error) -> Status {
    match e.kind() {
        std::io::ErrorKind::NotFound => Status::not_found(e.to_string()),
        std::io::ErrorKind::InvalidInput => Status::invalid_argument(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

fn limits_pb(l: &node::Limits) -> pb::Limits {
    pb::Limits {
        cpu_millis: l.cpu_millis(),
        memory_bytes: l.memory_bytes,
        cpuset: l.cpuset.clone(),
    }
}

fn to_pb(c: &ContainerInfo, d: node::Declared) -> pb::Container {
    pb::Container {
        namespace: c.namespace.clone(),
        id: c.id.clone(),
        pid: c.pid,
        status: c.status.clone(),
        qos: d.qos,
        live: Some(limits_pb(&c.limits)),
        usage: Some(pb::Usage {
            cpu_ns: c.usage.cpu_ns,
            memory_bytes: c.usage.memory_bytes,
        }),
        pod: d.pod,
        name: d.name,
        sandbox: d.sandbox,
        declared: d.limits.as_ref().map(limits_pb),
        overlays: d.overlays,
    }
}

impl Service {
    /// `c` as the API shows it: with what was declared for it.
    fn container(&self, c: &ContainerInfo) -> pb::Container {
        to_pb(c, node::declared(&self.state_dir, c))
    }

    fn find(&self, r: Option<pb::ContainerRef>) -> Result<ContainerInfo, Status> {
        let r = r.ok_or_else(|| Status::invalid_argument("no container named"))?;
        let ns = Some(r.namespace.as_str()).filter(|n| !n.is_empty());
        node::find(&self.state_dir, ns, &r.id).map_err(io_status)
    }

    /// Where a change to the named container goes.
    fn target(&self, r: Option<pb::ContainerRef>) -> Result<route::Target, Status> {
        let r = r.ok_or_else(|| Status::invalid_argument("no container named"))?;
        let ns = Some(r.namespace.as_str()).filter(|n| !n.is_empty());
        self.routes
            .target(&self.state_dir, ns, &r.id)
            .map_err(io_status)
    }

    /// Sends Task.Update to the owning shim; maps its refusal to a status.
    async fn update(
        &self,
        t: route::Target,
        resources: serde_json::Value,
        notes: &[(&str, String)],
    ) -> Result<Response<pb::UpdateResourcesResponse>, Status> {
        if t.stopped {
            return Err(Status::not_found(format!(
                "container {} is not running",
                t.id
            )));
        }
        let dry = notes
            .iter()
            .any(|(k, v)| *k == ANNOTATION_DRY_RUN && v == "true");
        let start = std::time::Instant::now();
        let result = self.routes.update(&t, &resources, notes).await;
        if !dry {
            let outcome = match &result {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("{:?}", tonic::Code::from_i32(e.code)),
            };
            self.metrics.record(&outcome, start.elapsed().as_secs_f64());
        }
        result.map_err(|e| Status::new(tonic::Code::from_i32(e.code), e.message))?;
        let now = self.routes.after(&self.state_dir, &t).map_err(io_status)?;
        Ok(Response::new(pb::UpdateResourcesResponse {
            container: Some(to_pb(&now.info, now.declared)),
            revision: if dry { 0 } else { now.last_revision },
        }))
    }
}

type WatchStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Resize for Service {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        use tokio_stream::StreamExt;
        let filter = req.into_inner().container;
        if let Some(f) = &filter {
            crate::ids::validate("container id", &f.id)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
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
        let all = node::list(&self.state_dir).map_err(io_status)?;
        Ok(Response::new(pb::ListContainersResponse {
            containers: all.iter().map(|c| self.container(c)).collect(),
        }))
    }

    async fn get_resources(
        &self,
        req: Request<pb::GetResourcesRequest>,
    ) -> Result<Response<pb::Container>, Status> {
        let c = self.find(req.into_inner().container)?;
        Ok(Response::new(self.container(&c)))
    }

    async fn update_resources(
        &self,
        req: Request<pb::UpdateResourcesRequest>,
    ) -> Result<Response<pb::UpdateResourcesResponse>, Status> {
        let r = req.into_inner();
        let t = self.target(r.container)?;
        let source = if r.source.is_empty() {
            "operator".to_string()
        } else {
            r.source
        };
        if source == "kubelet" {
            return Err(Status::invalid_argument(
                "source kubelet is reserved for CRI's UpdateContainerResources",
            ));
        }
        history::validate_source(&source).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let resize = crate::ctl::Resize {
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            cpuset: r.cpuset,
            ..Default::default()
        };
        if resize.cpu_millis.is_none() && resize.memory_bytes.is_none() && resize.cpuset.is_none() {
            return Err(Status::invalid_argument(
                "nothing to change: give cpu_millis, memory_bytes or cpuset",
            ));
        }
        let mut notes = vec![(ANNOTATION_SOURCE, source)];
        if !r.reason.is_empty() {
            notes.push((ANNOTATION_REASON, r.reason));
        }
        if r.reclaim {
            notes.push((ANNOTATION_RECLAIM, "true".into()));
        }
        if r.dry_run {
            notes.push((ANNOTATION_DRY_RUN, "true".into()));
        }
        self.update(t, crate::ctl::resources_json(&resize), &notes)
            .await
    }

    async fn history(
        &self,
        req: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let c = self.find(req.into_inner().container)?;
        let revs = history::read(&history::path(
            &self.state_dir.join(&c.namespace).join(&c.id),
        ))
        .map_err(io_status)?;
        Ok(Response::new(pb::HistoryResponse {
            revisions: revs.into_iter().map(Into::into).collect(),
        }))
    }

    async fn rollback(
        &self,
        req: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::UpdateResourcesResponse>, Status> {
        let r = req.into_inner();
        let t = self.target(r.container)?;
        let mut notes = vec![
            (ANNOTATION_SOURCE, "operator".to_string()),
            (ANNOTATION_ROLLBACK, r.revision.to_string()),
        ];
        if !r.reason.is_empty() {
            notes.push((ANNOTATION_REASON, r.reason));
        }
        self.update(t, serde_json::json!({}), &notes).await
    }
}

/// A client of tidald's resize API on the unix socket at `path`.
pub async fn connect(
    path: &Path,
) -> Result<ResizeClient<tonic::transport::Channel>, tonic::transport::Error> {
    Ok(ResizeClient::new(channel(path).await?))
}

/// A client of tidald's trait catalogue API on the unix socket at `path`.
pub async fn connect_traits(
    path: &Path,
) -> Result<
    traits_pb::traits_client::TraitsClient<tonic::transport::Channel>,
    tonic::transport::Error,
> {
    Ok(traits_pb::traits_client::TraitsClient::new(
        channel(path).await?,
    ))
}

/// A channel to tidald on the unix socket at `path`.
async fn channel(path: &Path) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    // The URI is required by the endpoint but unused: the connector dials the socket.
    let channel = tonic::transport::Endpoint::from_static("http://tidald.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(channel)
}

/// Serves the node's trait catalogue (or the reason it could not be read).
struct TraitsService {
    catalogue: std::result::Result<crate::traits::Catalogue, String>,
}

#[tonic::async_trait]
impl traits_pb::traits_server::Traits for TraitsService {
    async fn list_traits(
        &self,
        _req: Request<traits_pb::ListTraitsRequest>,
    ) -> Result<Response<traits_pb::ListTraitsResponse>, Status> {
        let c = self
            .catalogue
            .as_ref()
            .map_err(|e| Status::failed_precondition(format!("the node's trait catalogue: {e}")))?;
        let traits = c
            .definitions()
            .map(|d| traits_pb::TraitDefinition {
                name: d.name().to_string(),
                description: d.description().to_string(),
                applies_to: d.applies_to().to_vec(),
                conflicts_with: d.conflicts_with().to_vec(),
                conflict_reason: d.conflict_reason().unwrap_or_default().to_string(),
                schema_json: serde_json::to_string(d.schema()).unwrap_or_default(),
                source: d.source.clone(),
            })
            .collect();
        Ok(Response::new(traits_pb::ListTraitsResponse {
            traits,
            origin: c.origin.clone(),
        }))
    }
}

/// Binds `socket` with mode 0600 in a 0700 directory. Once this returns,
/// clients can connect: callers announce readiness only after it.
pub fn bind(socket: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the API on a listener from [`bind`] until `stop`.
pub async fn serve(
    listener: tokio::net::UnixListener,
    state_dir: PathBuf,
    allowed: Vec<u32>,
    metrics: std::sync::Arc<ResizeMetrics>,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let socket = listener.local_addr()?.as_pathname().map(Path::to_path_buf);
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let (revisions, _) = tokio::sync::broadcast::channel(256);
    let routes = std::sync::Arc::new(route::Routes::default());
    let follower = tokio::spawn(follow(state_dir.clone(), revisions.clone(), {
        let routes = routes.clone();
        move |ns: &str, id: &str| routes.forget(ns, id)
    }));
    let service = ResizeServer::with_interceptor(
        Service {
            state_dir,
            metrics,
            revisions,
            routes,
        },
        {
            let allowed = allowed.clone();
            move |req: Request<()>| authorize(&allowed, &req).map(|_| req)
        },
    );
    let catalogue = crate::traits::Catalogue::node();
    if let Err(e) = &catalogue {
        eprintln!("tidald: trait catalogue: {e}");
    }
    let traits = traits_pb::traits_server::TraitsServer::with_interceptor(
        TraitsService { catalogue },
        move |req: Request<()>| authorize(&allowed, &req).map(|_| req),
    );
    let result = tonic::transport::Server::builder()
        .add_service(service)
        .add_service(traits)
        .serve_with_incoming_shutdown(incoming, stop)
        .await
        .map_err(std::io::Error::other);
    follower.abort();
    if let Some(socket) = socket {
        let _ = std::fs::remove_file(socket);
    }
    result
}

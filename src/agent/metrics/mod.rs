//! tidald's Prometheus metrics (names and meanings in docs/metrics.md): the
//! resizes it routed (`resizes`), the live limits and usage of tidal's
//! containers, and the policy engine's series (`policy::metrics`), served
//! as OpenMetrics text over HTTP/1.1 on a loopback address, with the
//! `/healthz` and `/readyz` probes. A scrape reads every container on a
//! blocking thread, so it never holds up a resize on the runtime's thread.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

pub mod resizes;

pub use resizes::Resizes;

use super::inventory::{Inventory, View};
use super::policy::metrics::{ContainerLabels, PolicyMetrics};

/// The containers as the scrape being served found them.
#[derive(Debug, Default)]
struct Containers {
    found: Mutex<Vec<View>>,
}

/// One exported series of a container: name, help, whether a counter, and
/// its value (None: no sample, e.g. an unlimited limit).
type Series = (&'static str, &'static str, bool, fn(&View) -> Option<f64>);

const SERIES: [Series; 4] = [
    (
        "tidal_container_cpu_usage_seconds",
        "CPU time used by the container.",
        true,
        |c| Some(c.info.usage.cpu_ns as f64 / 1e9),
    ),
    (
        "tidal_container_memory_usage_bytes",
        "Memory used by the container.",
        false,
        |c| Some(c.info.usage.memory_bytes as f64),
    ),
    (
        "tidal_container_cpu_limit_cores",
        "CPU limit (CFS quota / period); absent when unlimited.",
        false,
        |c| c.info.limits.cpu_millis().map(|m| m as f64 / 1000.0),
    ),
    (
        "tidal_container_memory_limit_bytes",
        "Memory limit; absent when unlimited.",
        false,
        |c| c.info.limits.memory_bytes.map(|b| b as f64),
    ),
];

impl Collector for Containers {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let found = self.found.lock().unwrap();
        let running: Vec<&View> = found
            .iter()
            .filter(|c| c.info.status != "stopped")
            .collect();
        for (name, help, counter, value) in SERIES {
            let samples: Vec<(ContainerLabels, f64)> = running
                .iter()
                .filter_map(|c| {
                    let labels = ContainerLabels {
                        namespace: c.info.namespace.clone(),
                        container: c.info.id.clone(),
                    };
                    Some((labels, value(c)?))
                })
                .collect();
            if counter {
                let kind = ConstCounter::new(0.0f64).metric_type();
                let mut family = encoder.encode_descriptor(name, help, None, kind)?;
                for (labels, v) in &samples {
                    ConstCounter::new(*v).encode(family.encode_family(labels)?)?;
                }
            } else {
                let kind = ConstGauge::new(0.0f64).metric_type();
                let mut family = encoder.encode_descriptor(name, help, None, kind)?;
                for (labels, v) in &samples {
                    ConstGauge::new(*v).encode(family.encode_family(labels)?)?;
                }
            }
        }
        let count = ConstGauge::new(running.len() as i64);
        count.encode(encoder.encode_descriptor(
            "tidal_containers",
            "Containers tidal runs on this node.",
            None,
            count.metric_type(),
        )?)
    }
}

/// tidald's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    resizes: Resizes,
    containers: Arc<Containers>,
    policy: PolicyMetrics,
    /// One scrape at a time (they share `containers`).
    scraping: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let resizes = Resizes::registered(&mut registry);
        let containers = Arc::new(Containers::default());
        registry.register_collector(Box::new(containers.clone()));
        let policy = PolicyMetrics::registered(&mut registry);
        Metrics {
            registry,
            resizes,
            containers,
            policy,
            scraping: tokio::sync::Mutex::new(()),
        }
    }

    /// The policy engine's series, for the engine and its data source to
    /// record into.
    pub fn policy(&self) -> PolicyMetrics {
        self.policy.clone()
    }

    /// The resizes' series, for the resizer to count into.
    pub fn resizes(&self) -> Resizes {
        self.resizes.clone()
    }

    /// The exposition of everything, with the containers as `found`.
    pub fn render(&self, found: Vec<View>) -> String {
        *self.containers.found.lock().unwrap() = found;
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        self.containers.found.lock().unwrap().clear();
        out
    }

    /// A scrape: the containers read on a blocking thread, then rendered.
    pub async fn scrape(&self, inventory: Arc<Inventory>) -> Result<String, String> {
        let _one = self.scraping.lock().await;
        let found = tokio::task::spawn_blocking(move || inventory.list())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(self.render(found))
    }
}

/// What a request to the metrics address gets: `/metrics`, and the probes
/// a DaemonSet or a supervisor asks, `/healthz` (tidald answers) and
/// `/readyz` (its API socket takes connections and its state directory
/// reads).
async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    metrics: Arc<Metrics>,
    inventory: Arc<Inventory>,
    api: Arc<std::path::PathBuf>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let reply = |status: u16, kind: &str, body: String| {
        hyper::Response::builder()
            .status(status)
            .header("Content-Type", kind)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    let path = req.uri().path();
    if !["/metrics", "/healthz", "/readyz"].contains(&path) {
        return Ok(reply(
            404,
            "text/plain",
            "tidald serves /metrics, /healthz and /readyz\n".into(),
        ));
    }
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return Ok(reply(405, "text/plain", format!("GET {path}\n")));
    }
    Ok(match path {
        "/healthz" => reply(200, "text/plain", "ok\n".into()),
        "/readyz" => match ready(&api, inventory).await {
            Ok(()) => reply(200, "text/plain", "ready\n".into()),
            Err(problems) => reply(503, "text/plain", format!("not ready: {problems}\n")),
        },
        _ => match metrics.scrape(inventory).await {
            Ok(text) => reply(
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            ),
            Err(e) => reply(500, "text/plain", format!("reading containers: {e}\n")),
        },
    })
}

/// Whether tidald can serve its API: a connection to its socket (by path,
/// as a client makes it) and a read of its state directory.
async fn ready(api: &std::path::Path, inventory: Arc<Inventory>) -> Result<(), String> {
    let mut problems = Vec::new();
    let limit = std::time::Duration::from_secs(2);
    match tokio::time::timeout(limit, tokio::net::UnixStream::connect(api)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => problems.push(format!("API socket {}: {e}", api.display())),
        Err(_) => problems.push(format!(
            "API socket {}: no answer in {limit:?}",
            api.display()
        )),
    }
    match tokio::task::spawn_blocking(move || inventory.list_declared()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => problems.push(format!("state directory: {e}")),
        Err(e) => problems.push(format!("state directory: {e}")),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task
/// is dropped: one HTTP/1.1 exchange per connection, each on a task of its
/// own. `api` is the API socket that `/readyz` tries.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    inventory: Arc<Inventory>,
    api: std::path::PathBuf,
) {
    let api = Arc::new(api);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, inventory, api) = (metrics.clone(), inventory.clone(), api.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                answer(req, metrics.clone(), inventory.clone(), api.clone())
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .header_read_timeout(std::time::Duration::from_secs(5))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::declared::Declared;
    use crate::agent::node::{ContainerInfo, Limits, Usage};

    fn view(id: &str, status: &str) -> View {
        View {
            info: ContainerInfo {
                id: id.into(),
                namespace: "k8s.io".into(),
                pid: 1,
                status: status.into(),
                bundle: "/b".into(),
                limits: Limits {
                    cpu_quota_us: Some(50_000),
                    cpu_period_us: 100_000,
                    cpuset: String::new(),
                    memory_bytes: None,
                    ..Default::default()
                },
                usage: Usage {
                    cpu_ns: 1_500_000_000,
                    memory_bytes: 4096,
                },
            },
            declared: Declared::default(),
            last_revision: 0,
        }
    }

    #[test]
    fn containers_and_resizes_are_exposed() {
        let m = Metrics::new();
        let r = m.resizes();
        r.record("ok", "operator", 0.0002);
        r.record("ok", "policy", 0.003);
        r.record("FailedPrecondition", "trait:vertical-autoscaler", 0.0004);
        // A trait name only the caller knows is not a label of its own.
        r.record("ok", "trait:made-up", 0.0002);
        r.record("ok", "trait:made-up-too", 0.0002);
        let text = m.render(vec![view("web", "running"), view("old", "stopped")]);
        for line in [
            "tidal_container_cpu_usage_seconds_total{namespace=\"k8s.io\",container=\"web\"} 1.5",
            "tidal_container_cpu_limit_cores{namespace=\"k8s.io\",container=\"web\"} 0.5",
            "tidal_container_memory_usage_bytes{namespace=\"k8s.io\",container=\"web\"} 4096.0",
            "tidal_containers 1",
            "tidal_resizes_total{outcome=\"ok\",source=\"operator\"} 1",
            "tidal_resizes_total{outcome=\"ok\",source=\"policy\"} 1",
            "tidal_resizes_total{outcome=\"ok\",source=\"trait:other\"} 2",
            "tidal_resizes_total{outcome=\"FailedPrecondition\",source=\"trait:vertical-autoscaler\"} 1",
            "tidal_resize_seconds_bucket{le=\"0.0005\"} 4",
            "tidal_resize_seconds_bucket{le=\"0.005\"} 5",
            "tidal_resize_seconds_bucket{le=\"+Inf\"} 5",
            "tidal_resize_seconds_count 5",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(
            !text.contains("memory_limit_bytes{"),
            "unlimited memory has no sample:\n{text}"
        );
        assert!(!text.contains("container=\"old\""), "{text}");
        // The next scrape shows what it finds, not what the last one did.
        let text = m.render(vec![]);
        assert!(text.lines().any(|l| l == "tidal_containers 0"), "{text}");
    }
}

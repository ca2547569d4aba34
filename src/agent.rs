//! `tidald`, the node agent: the resize API (`api.rs`) on a root-only unix
//! socket, and Prometheus metrics of tidal's containers (live limits and
//! usage) on a loopback address. The policy engine and trait controllers
//! will build on it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::node::{self, ContainerInfo};

pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub state_dir: PathBuf,
    pub metrics_addr: SocketAddr,
    /// The API socket.
    pub socket: PathBuf,
    /// Uids besides root that may call the API.
    pub allowed_uids: Vec<u32>,
    /// Threads serving the API (1: a single-threaded runtime).
    pub threads: usize,
}

/// Threads serving the API by default: one. On a 2-CPU node a second one
/// only adds hand-offs between threads (8 concurrent resizes measured a
/// higher p99 with two); `--threads` gives more where CPUs are plenty.
pub fn default_threads() -> usize {
    1
}

/// The runtime `run` needs for `cfg`.
pub fn runtime(cfg: &Config) -> std::io::Result<tokio::runtime::Runtime> {
    if cfg.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.threads)
            .enable_all()
            .build()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}\nusage: tidald [--state-dir DIR] [--metrics-addr 127.0.0.1:9464] [--socket PATH] [--allow-uid UID]... [--threads N]")]
    Usage(String),
    #[error("metrics address {0} is not a loopback address: tidald does not expose metrics beyond this node")]
    NotLoopback(SocketAddr),
    #[error("API on {socket}: {source}")]
    Api {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The API socket's default place: a private directory in the state dir.
pub fn default_socket(state_dir: &Path) -> PathBuf {
    state_dir.join(".api").join("tidald.sock")
}

pub fn parse(args: &[String]) -> Result<Config, AgentError> {
    let mut cfg = Config {
        state_dir: crate::shim::state_dir(),
        metrics_addr: DEFAULT_METRICS_ADDR.parse().unwrap(),
        socket: PathBuf::new(),
        allowed_uids: Vec::new(),
        threads: default_threads(),
    };
    let mut socket = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| AgentError::Usage(format!("{a} needs a value")))
        };
        match a.as_str() {
            "--state-dir" => cfg.state_dir = PathBuf::from(value()?),
            "--metrics-addr" => {
                let v = value()?;
                cfg.metrics_addr = v.parse().map_err(|_| {
                    AgentError::Usage(format!("--metrics-addr {v:?} is not HOST:PORT"))
                })?;
            }
            "--socket" => socket = Some(PathBuf::from(value()?)),
            "--allow-uid" => {
                let v = value()?;
                cfg.allowed_uids.push(
                    v.parse().map_err(|_| {
                        AgentError::Usage(format!("--allow-uid {v:?} is not a uid"))
                    })?,
                );
            }
            "--threads" => {
                let v = value()?;
                cfg.threads = v.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    AgentError::Usage(format!("--threads {v:?} is not a positive number"))
                })?;
            }
            other => return Err(AgentError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    cfg.socket = socket.unwrap_or_else(|| default_socket(&cfg.state_dir));
    if !cfg.metrics_addr.ip().is_loopback() {
        return Err(AgentError::NotLoopback(cfg.metrics_addr));
    }
    Ok(cfg)
}

/// One exported series: name, type, help, and its value for a container.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ContainerInfo) -> Option<f64>,
);

/// Prometheus text exposition of `containers`.
pub fn render(containers: &[ContainerInfo]) -> String {
    let mut out = String::new();
    let series: [Series; 4] = [
        (
            "tidal_container_cpu_usage_seconds_total",
            "counter",
            "CPU time used by the container.",
            |c| Some(c.usage.cpu_ns as f64 / 1e9),
        ),
        (
            "tidal_container_memory_usage_bytes",
            "gauge",
            "Memory used by the container.",
            |c| Some(c.usage.memory_bytes as f64),
        ),
        (
            "tidal_container_cpu_limit_cores",
            "gauge",
            "CPU limit (CFS quota / period); absent when unlimited.",
            |c| c.limits.cpu_millis().map(|m| m as f64 / 1000.0),
        ),
        (
            "tidal_container_memory_limit_bytes",
            "gauge",
            "Memory limit; absent when unlimited.",
            |c| c.limits.memory_bytes.map(|b| b as f64),
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for c in containers.iter().filter(|c| c.status != "stopped") {
            if let Some(v) = value(c) {
                let _ = writeln!(
                    out,
                    "{name}{{namespace=\"{}\",container=\"{}\"}} {v}",
                    c.namespace, c.id
                );
            }
        }
    }
    let running = containers.iter().filter(|c| c.status != "stopped").count();
    let _ = writeln!(
        out,
        "# HELP tidal_containers Containers tidal runs on this node.\n# TYPE tidal_containers gauge\ntidal_containers {running}"
    );
    out
}

async fn respond(
    mut stream: tokio::net::TcpStream,
    state_dir: &Path,
    resizes: &crate::api::ResizeMetrics,
) -> std::io::Result<()> {
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))??;
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = if path == "/metrics" {
        match node::list(state_dir) {
            Ok(all) => ("200 OK", render(&all) + &resizes.render()),
            Err(e) => (
                "500 Internal Server Error",
                format!("reading {}: {e}\n", state_dir.display()),
            ),
        }
    } else {
        ("404 Not Found", "tidald serves /metrics\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await
}

/// Serves the API and the metrics until SIGTERM or SIGINT.
pub async fn run(cfg: Config) -> Result<(), AgentError> {
    let listener = TcpListener::bind(cfg.metrics_addr)
        .await
        .map_err(|source| AgentError::Listen {
            addr: cfg.metrics_addr,
            source,
        })?;
    // Bound (and its mode set) before the ready line, so that whoever waits
    // for the line finds the socket as it will stay.
    let api_listener = crate::api::bind(&cfg.socket).map_err(|source| AgentError::Api {
        socket: cfg.socket.clone(),
        source,
    })?;
    eprintln!(
        "tidald: API on {}, metrics on http://{}/metrics, state in {}",
        cfg.socket.display(),
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        cfg.state_dir.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| AgentError::Usage(e.to_string()))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let resizes = std::sync::Arc::new(crate::api::ResizeMetrics::default());
    let api = tokio::spawn(crate::api::serve(
        api_listener,
        cfg.state_dir.clone(),
        cfg.allowed_uids.clone(),
        resizes.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    loop {
        tokio::select! {
            conn = listener.accept() => {
                if let Ok((stream, _)) = conn {
                    let dir = cfg.state_dir.clone();
                    let resizes = resizes.clone();
                    tokio::spawn(async move { let _ = respond(stream, &dir, &resizes).await; });
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let _ = stop_tx.send(());
    match api.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(AgentError::Api {
            socket: cfg.socket.clone(),
            source,
        }),
        Err(e) => Err(AgentError::Usage(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Limits, Usage};

    #[test]
    fn metrics_address_must_be_loopback() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert!(matches!(
            parse(&args("--metrics-addr 0.0.0.0:9464")),
            Err(AgentError::NotLoopback(_))
        ));
        assert!(matches!(
            parse(&args("--metrics-addr nope")),
            Err(AgentError::Usage(_))
        ));
        let cfg = parse(&args(
            "--state-dir /x --metrics-addr 127.0.0.1:1 --allow-uid 1000",
        ))
        .unwrap();
        assert_eq!(cfg.state_dir, PathBuf::from("/x"));
        assert_eq!(cfg.socket, PathBuf::from("/x/.api/tidald.sock"));
        assert_eq!(cfg.allowed_uids, vec![1000]);
        assert_eq!(cfg.threads, default_threads());
        assert_eq!(parse(&args("--threads 1")).unwrap().threads, 1);
        assert!(matches!(
            parse(&args("--threads 0")),
            Err(AgentError::Usage(_))
        ));
        assert!(matches!(
            parse(&args("--allow-uid bob")),
            Err(AgentError::Usage(_))
        ));
    }

    #[test]
    fn metrics_show_running_containers_only() {
        let c = |id: &str, status: &str| ContainerInfo {
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
            },
            usage: Usage {
                cpu_ns: 1_500_000_000,
                memory_bytes: 4096,
            },
        };
        let text = render(&[c("web", "running"), c("old", "stopped")]);
        assert!(text.contains(
            "tidal_container_cpu_usage_seconds_total{namespace=\"k8s.io\",container=\"web\"} 1.5"
        ));
        assert!(text.contains(
            "tidal_container_cpu_limit_cores{namespace=\"k8s.io\",container=\"web\"} 0.5"
        ));
        assert!(
            !text.contains("memory_limit_bytes{"),
            "unlimited memory has no sample"
        );
        assert!(!text.contains("container=\"old\""));
        assert!(text.contains("tidal_containers 1"));
    }
}

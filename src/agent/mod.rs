//! `tidald`, the node agent: its command line, and `run`, where its parts
//! are put together: the inventory of tidal's containers, the resizer that
//! every change goes through, the metrics, the revision follower, and the
//! API on a root-only unix socket. The policy engine (`--policy`) is made
//! here as a caller of the resizer; the trait controllers will be too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

pub(crate) mod api;
pub(crate) mod autoscale;
mod cli;
pub(crate) mod cron;
mod declared;
pub(crate) mod error;
mod follow;
pub(crate) mod inventory;
pub(crate) mod metrics;
pub(crate) mod node;
pub(crate) mod owner;
pub mod policy;
pub(crate) mod resizer;
mod shimclient;

use inventory::Inventory;
use metrics::Metrics;
use resizer::Resizer;

pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";
/// The node's policy file: the engine runs when it exists (or `--policy`
/// names one).
pub const DEFAULT_POLICY: &str = "/etc/tidal/policy.yaml";

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
    pub log_format: LogFormat,
    /// The policy engine's rules; None: the engine is off.
    pub policy: Option<PathBuf>,
    /// `--policy-mode`, over the policy file's mode.
    pub policy_mode: Option<policy::rules::Mode>,
}

/// How tidald writes its logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
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
    #[error("{0}")]
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
    /// The policy file given (or found at the default path) is unusable.
    #[error("policy engine: {0}")]
    Policy(#[from] policy::rules::PolicyError),
}

/// tidald's configuration from its command line (`cli`).
pub fn parse(args: &[String]) -> Result<Config, AgentError> {
    cli::parse(args)
}

/// The policy file the engine runs with: `--policy FILE`; `--policy off`
/// for none; else the default path when it exists.
fn policy_file(flag: Option<&str>, default_exists: bool) -> Option<PathBuf> {
    match flag {
        Some("off") => None,
        Some(f) => Some(PathBuf::from(f)),
        None => default_exists.then(|| PathBuf::from(DEFAULT_POLICY)),
    }
}

/// Sends tidald's logs (tracing events) to standard error, as text lines or
/// as JSON objects (`--log-format json`, for a log collector).
pub fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Serves the API and the metrics until SIGTERM or SIGINT. The composition
/// root: the inventory, the metrics and the resizer are made here, once, and
/// handed to each part that needs them.
/// tidald's resizer over the containers in `state_dir`, made as `run` makes
/// it, behind the policy engine's `Apply`: the path the engine's changes
/// take, for `benches/shim.rs` to time without tidald's API in front.
pub fn engine_path(state_dir: PathBuf) -> Arc<dyn policy::execute::Apply> {
    let inventory = Arc::new(Inventory::new(state_dir));
    Arc::new(Resizer::new(inventory, Metrics::new().resizes()))
}

pub async fn run(cfg: Config) -> Result<(), AgentError> {
    // The policy engine's rules, checked first: a bad file stops tidald
    // with the file, line and problem, before anything is bound.
    let rules = match &cfg.policy {
        Some(path) => Some((path.clone(), policy::rules::Policy::load(path)?)),
        None => None,
    };
    let listener = TcpListener::bind(cfg.metrics_addr)
        .await
        .map_err(|source| AgentError::Listen {
            addr: cfg.metrics_addr,
            source,
        })?;
    // Bound (and its mode set) before the ready line, so that whoever waits
    // for the line finds the socket as it will stay.
    let api_listener = api::bind(&cfg.socket).map_err(|source| AgentError::Api {
        socket: cfg.socket.clone(),
        source,
    })?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| AgentError::Usage(e.to_string()))?;

    let open_files = crate::sys::raise_open_files().unwrap_or(1024);
    let inventory = Arc::new(Inventory::new(cfg.state_dir.clone()));
    let metrics = Arc::new(Metrics::new());
    let resizer = Arc::new(Resizer::new(inventory.clone(), metrics.resizes()));
    // The policy engine, when it has rules, applying through the resizer;
    // its data source (the collector over the inventory) starts it with
    // `engine.spawn(source)`.
    let engine = rules.map(|(path, rules)| {
        policy::engine::Engine::new(rules, path, cfg.policy_mode, resizer.clone())
            .with_meter(Arc::new(metrics.policy()))
    });
    let policy_metrics = metrics.policy();
    let (revisions, _) = tokio::sync::broadcast::channel(256);
    let follower = tokio::spawn(follow::follow(cfg.state_dir.clone(), revisions.clone(), {
        let (inventory, resizer) = (inventory.clone(), resizer.clone());
        move |ns: &str, id: &str| {
            if let Some(address) = inventory.forget(ns, id) {
                resizer.close(&address);
            }
        }
    }));
    let catalogue = crate::traits::Catalogue::node();
    let metrics_addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let scraper = tokio::spawn(metrics::serve(
        listener,
        metrics.clone(),
        inventory.clone(),
        cfg.socket.clone(),
    ));
    tracing::info!(
        "tidald: API on {}, metrics on http://{metrics_addr}/metrics, state in {}",
        cfg.socket.display(),
        cfg.state_dir.display()
    );
    // After the ready line, which whoever started tidald reads first.
    if let Err(e) = &catalogue {
        tracing::warn!("trait catalogue: {e}");
    }
    // The policy engine over the node's observer, when it has rules.
    let policy = engine.map(|engine| {
        let p = engine.policy();
        tracing::info!(
            "policy engine: rules from {}, {} mode, every {:?}",
            cfg.policy
                .as_deref()
                .unwrap_or_else(|| std::path::Path::new(""))
                .display(),
            engine.mode().as_str(),
            p.interval.0
        );
        let mut opts = policy::observe::Options::new(&cfg.state_dir);
        opts.interval = p.interval.0;
        // At most half of tidald's descriptors kept open by the collector.
        opts.keep_open_files = opts.keep_open_files.min(open_files as usize / 2);
        opts.windows
            .extend([p.windows.trigger.0, p.windows.usage.0]);
        opts.windows.sort();
        opts.windows.dedup();
        let windows = opts.windows.clone();
        let observer = policy::observe::Observer::new(
            opts,
            catalogue
                .clone()
                .unwrap_or_else(|_| crate::traits::Catalogue::builtin()),
        );
        // `top` and the metrics summarise over the shortest window.
        let live =
            policy::observe::Live::new(observer, inventory.clone(), windows[0], p.interval.0)
                .with_report(Arc::new(policy_metrics));
        // The vertical-autoscaler's controller, from the same profiles:
        // a step per container per usage window at most.
        let autoscaler = Arc::new(autoscale::Autoscaler::new(
            inventory.clone(),
            resizer.clone(),
            live.shared(),
            catalogue
                .clone()
                .unwrap_or_else(|_| crate::traits::Catalogue::builtin()),
            p.windows.usage.0,
            p.max_step,
        ));
        let autoscaling = tokio::spawn(autoscaler.clone().run());
        let api = api::policy::Engine {
            handle: engine.handle(),
            observer: live.shared(),
            snapshots: live.snapshots(),
            windows,
            autoscaler,
        };
        (api, (engine.spawn(live), autoscaling))
    });
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    // The cron-vertical-scaler's jobs, run on every container that carries
    // the trait.
    let cron = Arc::new(cron::Controller::new(
        inventory.clone(),
        resizer.clone(),
        catalogue
            .clone()
            .unwrap_or_else(|_| crate::traits::Catalogue::builtin()),
    ));
    let cron_task = tokio::spawn(cron.clone().run());
    let policy_inventory = inventory.clone();
    let result = api::serve(
        api_listener,
        cfg.allowed_uids.clone(),
        api::ResizeService {
            inventory,
            resizer,
            revisions,
            autoscaler: policy.as_ref().map(|(api, _)| api.autoscaler.clone()),
        },
        api::TraitsService { catalogue, cron },
        api::PolicyService {
            engine: policy.as_ref().map(|(api, _)| api.clone()),
            inventory: policy_inventory,
        },
        stop,
    )
    .await;
    follower.abort();
    scraper.abort();
    cron_task.abort();
    if let Some((_, ((_, task), autoscaling))) = policy {
        task.abort();
        autoscaling.abort();
    }
    result.map_err(|source| AgentError::Api {
        socket: cfg.socket.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn a_bad_policy_file_stops_tidald_before_it_binds_anything() {
        let dir = crate::testfs::FakeDir::new("agent-policy", &[]);
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "interval: 1s\nrules:\n  give-back:\n    step: 2\n").unwrap();
        let state = dir.path().join("state");
        let cfg = Config {
            state_dir: state.clone(),
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            socket: state.join("tidald.sock"),
            allowed_uids: Vec::new(),
            threads: 1,
            log_format: LogFormat::Text,
            policy: Some(path.clone()),
            policy_mode: None,
        };
        let e = run(cfg).await.unwrap_err();
        assert!(matches!(e, AgentError::Policy(_)));
        assert_eq!(
            e.to_string(),
            format!(
                "policy engine: {}:4: rules.give-back.step 2 must be above 0 and at most max_step 0.25",
                path.display()
            )
        );
        assert!(!state.exists());
    }

    #[test]
    fn the_policy_file_is_the_flag_s_or_the_node_s_if_it_exists() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(policy_file(None, false), None);
        assert_eq!(policy_file(None, true), Some(PathBuf::from(DEFAULT_POLICY)));
        assert_eq!(policy_file(Some("off"), true), None);
        assert_eq!(
            policy_file(Some("/p.yaml"), false),
            Some(PathBuf::from("/p.yaml"))
        );
        let cfg = parse(&args("--policy /p.yaml --policy-mode dry-run")).unwrap();
        assert_eq!(cfg.policy, Some(PathBuf::from("/p.yaml")));
        assert_eq!(cfg.policy_mode, Some(policy::rules::Mode::DryRun));
        assert!(matches!(
            parse(&args("--policy /p.yaml --policy-mode fast")),
            Err(AgentError::Usage(m)) if m.contains("fast")
        ));
        assert!(matches!(
            parse(&args("--policy off --policy-mode enforce")),
            Err(AgentError::Usage(m)) if m.contains("needs a policy file")
        ));
    }
}

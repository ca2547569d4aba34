//! `containerd-shim-tidal-v2`: the shim v2 entry points (start, delete,
//! serve) on top of the `containerd-shim` crate.

pub mod error;
pub mod process;
pub mod service;
pub mod stdio;
pub mod task;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, ExitSignal, Flags, StartOpts};

use crate::helper::{Helpers, Request};
use crate::reaper::Reaper;

/// The runtime name containerd knows tidal by.
pub const RUNTIME_ID: &str = "io.containerd.tidal.v2";
/// Annotation by which containerd's CRI groups a pod's containers.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// Overrides the state directory (default `/run/tidal`).
pub const STATE_DIR_ENV: &str = "TIDAL_STATE_DIR";

/// The shim's configuration for the `containerd-shim` crate: tidal reaps its
/// own children (see `reaper.rs`).
pub fn crate_config() -> Config {
    Config {
        no_reaper: true,
        ..Default::default()
    }
}

/// tidal's state directory: libcontainer state per namespace, shim sockets.
pub fn state_dir() -> PathBuf {
    std::env::var_os(STATE_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/tidal"))
}

/// Creates `dir` (and parents) and makes it 0700.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

pub struct TidalShim {
    id: String,
    namespace: String,
    exit: Arc<ExitSignal>,
}

impl TidalShim {
    fn root(&self) -> PathBuf {
        state_dir().join(&self.namespace)
    }
}

/// The shim a container belongs to: its pod's sandbox id, or its own id.
fn grouping(bundle: &Path, id: &str) -> String {
    let spec = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    spec.as_ref()
        .and_then(|s| s.get("annotations")?.get(SANDBOX_ID_ANNOTATION)?.as_str())
        .filter(|g| crate::ids::validate("sandbox id", g).is_ok())
        .unwrap_or(id)
        .to_string()
}

#[async_trait]
impl containerd_shim::Shim for TidalShim {
    type T = service::Service;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        TidalShim {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, mut opts: StartOpts) -> containerd_shim::Result<String> {
        crate::ids::validate("container id", &opts.id)
            .map_err(|e| containerd_shim::Error::InvalidArgument(e.to_string()))?;
        crate::ids::validate("namespace", &opts.namespace)
            .map_err(|e| containerd_shim::Error::InvalidArgument(e.to_string()))?;
        let bundle = std::env::current_dir().map_err(|e| containerd_shim::Error::Other(e.to_string()))?;
        let group = grouping(&bundle, &opts.id);
        // Sockets live in a root-only directory, never in the abstract namespace.
        let socket_dir = state_dir().join("s");
        private_dir(&socket_dir).map_err(|e| {
            containerd_shim::Error::Other(format!("socket dir {}: {e}", socket_dir.display()))
        })?;
        opts.socket_dir = Some(socket_dir.to_string_lossy().into_owned());
        let state = state_dir();
        let address = containerd_shim::spawn(
            opts,
            &group,
            vec![(STATE_DIR_ENV, state.to_str().unwrap_or("/run/tidal"))],
        )
        .await?;
        std::fs::write(bundle.join("address"), &address)
            .map_err(|e| containerd_shim::Error::Other(format!("write address: {e}")))?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<api::DeleteResponse> {
        // The shim that served this container is gone: kill what is left of it
        // and remove its state, cgroups and rootfs mounts.
        let bundle = std::env::current_dir().map_err(|e| containerd_shim::Error::Other(e.to_string()))?;
        let reaper = Reaper::start().map_err(|e| containerd_shim::Error::Other(e.to_string()))?;
        let helpers = Helpers::new(self_exe(), reaper);
        let req = Request::Delete {
            id: self.id.clone(),
            root: self.root(),
            bundle: bundle.clone(),
        };
        if let Err(e) = helpers.run(&req, Default::default()).await {
            log::warn!("cleanup of {}: {e}", self.id);
        }
        remove_dead_socket(&bundle).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let mut ts = containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp::new();
        ts.seconds = now.as_secs() as i64;
        ts.nanos = now.subsec_nanos() as i32;
        Ok(api::DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: Some(ts).into(),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        // The socket is bound by now; keep it root-only even if umask was loose.
        if let Ok(address) = std::fs::read_to_string("address") {
            let path = address.trim().trim_start_matches("unix://");
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        let reaper = Reaper::start().expect("install SIGCHLD handler");
        let root = self.root();
        if let Err(e) = private_dir(&root) {
            log::error!("state dir {}: {e}", root.display());
        }
        let tasks = task::Tasks::new(
            root,
            Helpers::new(self_exe(), reaper.clone()),
            reaper,
            task::Events::new(Some(publisher), self.namespace.clone()),
            self.exit.clone(),
        );
        service::Service(Arc::new(tasks))
    }
}

/// Removes the socket of a shim that no longer answers.
async fn remove_dead_socket(bundle: &Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = PathBuf::from(address.trim().trim_start_matches("unix://"));
    if tokio::net::UnixStream::connect(&path).await.is_err() {
        let _ = std::fs::remove_file(&path);
    }
}

/// The shim's own binary, which helpers re-execute.
pub fn self_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
}

//! `containerd-shim-tidal-v2`: the shim v2 entry points, `start`, `delete`
//! and serving the Task API.
//!
//! tidal speaks the shim protocol of containerd 1.6, 1.7 and 2.x: `start`
//! prints a plain socket address and the Task service is served under both
//! `containerd.task.v2.Task` and `containerd.task.v3.Task`.

pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod exe;
pub(crate) mod helpers;
pub(crate) mod oom;
pub(crate) mod options;
pub(crate) mod process;
pub mod reaper;
pub(crate) mod service;
pub(crate) mod stdio;
pub(crate) mod task;
#[cfg(test)]
mod tests;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;

use containerd_shim::api;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::{ExitSignal, Flags};

use crate::helper::HELPER_BIN;
use crate::paths::{private_dir, state_dir, STATE_DIR_ENV};
use exe::{HelperExe, ProtectedExe};
use helpers::Helpers;
use reaper::Reaper;

/// The runtime name containerd knows tidal by.
pub const RUNTIME_ID: &str = "io.containerd.tidal.v2";

/// The shim a container belongs to: its pod's sandbox id, or its own id.
fn grouping(bundle: &Path, id: &str) -> String {
    /// Only the annotations of config.json (the rest is skipped unparsed).
    #[derive(serde::Deserialize)]
    struct Annotated {
        #[serde(default)]
        annotations: std::collections::HashMap<String, String>,
    }
    let spec = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Annotated>(&b).ok());
    spec.as_ref()
        .and_then(|s| s.annotations.get(crate::annotations::CRI_SANDBOX_ID))
        .map(String::as_str)
        .filter(|g| crate::ids::validate("sandbox id", g).is_ok())
        .unwrap_or(id)
        .to_string()
}

/// The listening socket travels from `start` to the serving shim as this fd.
const LISTENER_FD: i32 = 3;
/// The unattached mount the serving shim's executable lives on travels from
/// `start` as this fd, announced by [`EXE_MOUNT_ENV`]: the serving shim keeps
/// it, so that `start`'s exit does not dissolve the mount (an RCU grace
/// period, a few ms, on containerd's path).
const EXE_MOUNT_FD: i32 = 4;
const EXE_MOUNT_ENV: &str = "TIDAL_EXE_MOUNT_FD";
/// The protected helper executable travels from `start` as this fd,
/// announced by [`HELPER_EXE_ENV`].
const HELPER_EXE_FD: i32 = 5;
const HELPER_EXE_ENV: &str = "TIDAL_HELPER_EXE_FD";
/// containerd names its ttrpc address in this variable.
const TTRPC_ADDRESS: &str = "TTRPC_ADDRESS";

/// Runs the shim for the command line containerd gave it; returns the exit code.
pub async fn run(args: &[String]) -> i32 {
    // The serving shim is started as /proc/self/fd/N: see ProtectedExe.
    crate::helper::restore_process_name();
    let flags = match containerd_shim::parse(args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{RUNTIME_ID}: {e}");
            return 2;
        }
    };
    if flags.version {
        println!("containerd-shim-tidal-v2 {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let result = match flags.action.as_str() {
        "start" => start(&flags).map(|addr| print!("{addr}")),
        "delete" => delete(&flags).await.and_then(|resp| {
            use std::io::Write;
            let bytes = resp.write_to_bytes().map_err(|e| e.to_string())?;
            std::io::stdout()
                .write_all(&bytes)
                .map_err(|e| e.to_string())
        }),
        "" if flags.info => {
            let info = containerd_shim::protos::types::introspection::RuntimeInfo {
                name: RUNTIME_ID.to_string(),
                ..Default::default()
            };
            info.write_to_writer(&mut std::io::stdout())
                .map_err(|e| e.to_string())
        }
        "" => serve(&flags).await,
        other => Err(format!("unknown action {other:?}")),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{RUNTIME_ID}: {e}");
            1
        }
    }
}

/// `start`: binds the shim socket (or finds the pod's running shim) and
/// returns its address for containerd.
fn start(flags: &Flags) -> Result<String, String> {
    crate::ids::validate("container id", &flags.id).map_err(|e| e.to_string())?;
    crate::ids::validate("namespace", &flags.namespace).map_err(|e| e.to_string())?;
    let bundle = std::env::current_dir().map_err(|e| format!("bundle dir: {e}"))?;
    let group = grouping(&bundle, &flags.id);
    let socket_dir = state_dir().join("s");
    private_dir(&socket_dir).map_err(|e| format!("socket dir {}: {e}", socket_dir.display()))?;
    let socket = socket_path(&socket_dir, &flags.address, &flags.namespace, &group);
    let address = format!("unix://{}", socket.display());
    let write_address = || {
        std::fs::write(bundle.join("address"), &address).map_err(|e| format!("write address: {e}"))
    };

    let listener = match bind_private(&socket) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(&socket).is_ok() {
                // The pod's shim already runs: its containers share it.
                write_address()?;
                return Ok(address);
            }
            std::fs::remove_file(&socket).map_err(|e| format!("stale socket: {e}"))?;
            bind_private(&socket).map_err(|e| format!("bind {}: {e}", socket.display()))?
        }
        Err(e) => return Err(format!("bind {}: {e}", socket.display())),
    };
    let fd: OwnedFd = listener.into();
    // The serving shim runs from a protected executable too (a container
    // with the host's pid namespace sees it), and gets the helper's.
    let (exe, helper) = match ProtectedExe::this_and_helper(&state_dir()) {
        Ok(exes) => exes,
        Err(e) => {
            let _ = std::fs::remove_file(&socket);
            return Err(e.to_string());
        }
    };
    let mut cmd = exe.command();
    cmd.args([
        "-namespace",
        &flags.namespace,
        "-id",
        &flags.id,
        "-address",
        &flags.address,
    ])
    .args(["-socket", &address])
    .args(if flags.debug {
        &["-debug"][..]
    } else {
        &[][..]
    })
    .env(STATE_DIR_ENV, state_dir())
    // One malloc arena: the blocking pool's threads (shim::task::blocking)
    // would each make their own, which stays resident after they exit
    // (~300 KiB a shim, a tenth of its memory). Helpers start with a clean
    // environment, so this reaches no container.
    .env("MALLOC_ARENA_MAX", "1")
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .process_group(0);
    crate::sys::pass_fd(&mut cmd, fd.as_raw_fd(), LISTENER_FD);
    if let Some(mount) = exe.mount() {
        crate::sys::pass_fd(&mut cmd, mount.as_raw_fd(), EXE_MOUNT_FD);
        cmd.env(EXE_MOUNT_ENV, EXE_MOUNT_FD.to_string());
    }
    crate::sys::pass_fd(&mut cmd, helper.file().as_raw_fd(), HELPER_EXE_FD);
    cmd.env(HELPER_EXE_ENV, HELPER_EXE_FD.to_string());
    let child = cmd.spawn();
    if let Err(e) = child {
        let _ = std::fs::remove_file(&socket);
        return Err(format!("spawn shim: {e}"));
    }
    write_address()?;
    Ok(address)
}

/// Where the socket of shim `group` lives: containerd's naming, in our directory.
fn socket_path(dir: &Path, containerd: &str, namespace: &str, group: &str) -> PathBuf {
    let conventional = containerd_shim::socket_address(containerd, namespace, group);
    let hash = conventional.rsplit('/').next().unwrap_or(group).to_string();
    dir.join(hash)
}

/// Binds a unix socket that only root can reach (mode 0600 in a 0700 dir).
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// `delete`: containerd's cleanup after a shim that died. Kills what is left
/// of the container and removes its state, cgroups and rootfs mounts.
async fn delete(flags: &Flags) -> Result<api::DeleteResponse, String> {
    crate::ids::validate("container id", &flags.id).map_err(|e| e.to_string())?;
    crate::ids::validate("namespace", &flags.namespace).map_err(|e| e.to_string())?;
    let bundle = std::env::current_dir().map_err(|e| e.to_string())?;
    let reaper = Reaper::start().map_err(|e| e.to_string())?;
    let helpers = Helpers::new(HelperExe::lazy(state_dir()), reaper);
    let root = state_dir().join(&flags.namespace);
    if let Err(e) = helpers.delete(&flags.id, &root, &bundle, true).await {
        log::warn!("cleanup of {}: {e}", flags.id);
    }
    remove_dead_socket(&bundle).await;
    Ok(api::DeleteResponse {
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: task::timestamp(std::time::SystemTime::now()),
        ..Default::default()
    })
}

/// Serving: the long-running shim process.
async fn serve(flags: &Flags) -> Result<(), String> {
    use containerd_shim::protos::shim_async::create_task;
    use containerd_shim::protos::ttrpc::r#async::transport::Listener;
    use containerd_shim::protos::ttrpc::r#async::Server;

    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("subreaper: {e}"))?;
    if let Err(e) = containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
    {
        eprintln!("{RUNTIME_ID}: no log fifo: {e}");
    }
    // SAFETY: the serving shim is only ever spawned by `start`, which puts
    // the bound listener at LISTENER_FD (`sys::pass_fd`) and nothing else
    // there; no code before this line opens, closes or owns that number, and
    // it is taken once: the listener becomes its only owner.
    let listener = UnixListener::from(unsafe { crate::sys::inherited(LISTENER_FD) });
    crate::sys::set_cloexec(&listener, true).map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    if std::env::var(EXE_MOUNT_ENV).as_deref() == Ok(&EXE_MOUNT_FD.to_string()) {
        crate::sys::keep_inherited(EXE_MOUNT_FD)
            .map_err(|e| format!("the executable's mount at fd {EXE_MOUNT_FD}: {e}"))?;
    }
    let socket = flags.socket.trim_start_matches("unix://").to_string();

    let reaper = Reaper::start().map_err(|e| format!("SIGCHLD handler: {e}"))?;
    let ttrpc_address =
        std::env::var(TTRPC_ADDRESS).map_err(|_| format!("{TTRPC_ADDRESS} is not set"))?;
    let events = Arc::new(
        task::Events::connect(&ttrpc_address, flags.namespace.clone())
            .map_err(|e| format!("connect to containerd at {ttrpc_address}: {e}"))?,
    );
    let root = state_dir().join(&flags.namespace);
    private_dir(&root).map_err(|e| format!("state dir {}: {e}", root.display()))?;
    // Normally inherited from `start`; a shim that cannot have it serves,
    // but every helper fails with the reason (see HelperExe).
    let exe = if std::env::var(HELPER_EXE_ENV).as_deref() == Ok(&HELPER_EXE_FD.to_string()) {
        // SAFETY: HELPER_EXE_ENV names HELPER_EXE_FD only when `start` put the
        // protected helper there (`sys::pass_fd`); nothing else in this
        // process opened, owns or closes that number, and it is taken once.
        let fd = unsafe { crate::sys::inherited(HELPER_EXE_FD) };
        ProtectedExe::inherited(fd, HELPER_BIN)
    } else {
        ProtectedExe::helper(&state_dir())
    };
    match &exe {
        Ok(exe) => log::info!("helpers run from {}", exe.describe()),
        Err(e) => log::error!("{e}: no container can be created or changed by this shim"),
    }
    let exit = Arc::new(ExitSignal::default());
    let tasks = Arc::new(task::Tasks::new(
        root,
        Helpers::new(HelperExe::ready(exe), reaper.clone()),
        reaper,
        events.clone(),
        exit.clone(),
    ));
    let service: Arc<dyn containerd_shim::protos::shim_async::Task + Send + Sync> =
        Arc::new(service::Service(tasks));
    // One service, registered under containerd 1.x's and 2.x's names.
    let mut services = create_task(service.clone());
    if let Some(v3) = create_task(service).remove("containerd.task.v3.Task") {
        services.insert("containerd.task.v2.Task".to_string(), v3);
    }
    let listener = Listener::try_from(listener).map_err(|e| format!("listener: {e}"))?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(services);
    server.start().await.map_err(|e| format!("serve: {e}"))?;
    log::info!("tidal shim serving on {socket}");
    // The trait catalogue is read and checked while containerd prepares the
    // first Create, not during it.
    tokio::task::spawn_blocking(|| {
        if let Err(e) = task::catalogue() {
            log::error!("trait catalogue: {e}");
        }
    });
    exit.wait().await;
    // TaskDelete and the last exits reach containerd before the shim goes.
    events.flush(std::time::Duration::from_secs(2)).await;
    let _ = server.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
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

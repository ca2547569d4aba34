//! The shim's side of the helper protocol (`crate::helper`): starts a
//! helper process for each libcontainer operation and reads its reply, and
//! starts a hook-less container itself (a write on libcontainer's notify
//! socket and its state file), which needs no process-wide state.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use super::exe::HelperExe;
use super::reaper::Reaper;
use crate::helper::{HelperError, Reply, Request, REPLY_FD};

/// The stdio a helper passes on to the process it creates.
#[derive(Default)]
pub struct HelperStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Starts helpers and collects their replies.
pub struct Helpers {
    exe: HelperExe,
    reaper: Arc<Reaper>,
}

impl Helpers {
    pub fn new(exe: HelperExe, reaper: Arc<Reaper>) -> Self {
        Self { exe, reaper }
    }

    /// Runs `req` in a helper process and returns the pid it created, if any.
    pub async fn run(&self, req: &Request, stdio: HelperStdio) -> Reply {
        let json = serde_json::to_string(req).map_err(|e| HelperError::Invalid(e.to_string()))?;
        let (reply_r, reply_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| HelperError::Failed(format!("pipe for helper reply: {e}")))?;
        let io = |fd: Option<OwnedFd>| fd.map(Stdio::from).unwrap_or_else(Stdio::null);
        let exe = self
            .exe
            .get()
            .map_err(|e| HelperError::Failed(format!("refusing to start a helper: {e}")))?;
        let mut cmd = exe.command();
        cmd.arg(json)
            .stdin(io(stdio.stdin))
            .stdout(io(stdio.stdout))
            .stderr(io(stdio.stderr))
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
        crate::sys::pass_fd(&mut cmd, reply_w.as_raw_fd(), REPLY_FD);
        crate::sys::die_with_parent(&mut cmd);
        let since = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| HelperError::Failed(format!("spawn helper: {e}")))?;
        drop(reply_w);
        // Its child joins the container's cgroup: see prime_attach_lock.
        let primed = matches!(req, Request::Create { .. } | Request::Exec { .. }).then(|| {
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (pid, until) = (child.id() as i32, done.clone());
            tokio::task::spawn_blocking(move || {
                let limit = std::time::Duration::from_millis(200);
                if let Err(e) = crate::cgroups::prime_attach_lock(pid, &until, limit) {
                    log::debug!("priming the cgroup attach lock with helper {pid}: {e}");
                }
            });
            done
        });
        let exited = self.reaper.subscribe(child.id() as i32, since);
        drop(child); // never waited on here: the reaper owns wait().

        let reply = read_reply(reply_r).await;
        if let Some(done) = primed {
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        log::debug!("helper {} replied after {:?}", req.op(), since.elapsed());
        let exit = exited.await.ok();
        match reply {
            Some(reply) => reply,
            None => Err(HelperError::Failed(format!(
                "helper for {} ended without a reply (exit status {})",
                req.op(),
                exit.map(|e| e.status.to_string())
                    .unwrap_or_else(|| "unknown".into())
            ))),
        }
    }
}

impl Helpers {
    /// Starts a created container. Without OCI hooks this needs no process-wide
    /// state, so it runs in the shim: a connect and a write on libcontainer's
    /// notify socket, reached through `/proc/self/fd` instead of `chdir`.
    pub async fn start(&self, id: &str, root: &Path) -> Reply {
        if has_hooks(root, id) {
            let req = Request::Start {
                id: id.to_string(),
                root: root.to_path_buf(),
            };
            return self.run(&req, HelperStdio::default()).await;
        }
        start_in_process(root, id).map(|_| None)
    }

    /// Deletes a container's state, cgroups and rootfs mounts; when its
    /// shim is dead (`shim_dead`), and what that shim's helpers left
    /// running, first.
    pub async fn delete(&self, id: &str, root: &Path, bundle: &Path, shim_dead: bool) -> Reply {
        let req = Request::Delete {
            id: id.to_string(),
            root: root.to_path_buf(),
            bundle: bundle.to_path_buf(),
            shim_dead,
        };
        self.run(&req, HelperStdio::default()).await
    }
}

/// Whether the container's spec has OCI hooks, which must run in a helper.
fn has_hooks(root: &Path, id: &str) -> bool {
    let Ok(config) = std::fs::read(root.join(id).join("youki_config.json")) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&config)
        .map(|v| !v.get("hooks").is_none_or(|h| h.is_null()))
        .unwrap_or(true)
}

/// Starts a created container without hooks: as libcontainer's start does,
/// but on its state file directly, so the shim needs none of libcontainer's
/// code. The state must say `created` and its init process must still be
/// there; it then says `running`, written the way libcontainer writes it.
fn start_in_process(root: &Path, id: &str) -> Result<(), HelperError> {
    let dir = std::fs::File::open(root.join(id))
        .map_err(|_| HelperError::NotFound(format!("container {id} does not exist")))?;
    let state_file = root.join(id).join("state.json");
    let bytes = std::fs::read(&state_file)
        .map_err(|e| HelperError::Failed(format!("state of container {id}: {e}")))?;
    let mut state: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes)
        .map_err(|e| HelperError::Failed(format!("state of container {id}: {e}")))?;
    let status = state.get("status").and_then(|s| s.as_str()).unwrap_or("");
    let pid = state.get("pid").and_then(|p| p.as_i64()).unwrap_or(0);
    if status != "created" || !crate::sys::alive(pid as i32) {
        let is = if status == "created" {
            "stopped"
        } else {
            status
        };
        return Err(HelperError::WrongState(format!(
            "start container {id}: it is {is}"
        )));
    }
    let notify = format!("/proc/self/fd/{}/notify.sock", dir.as_raw_fd());
    let mut sock = std::os::unix::net::UnixStream::connect(&notify)
        .map_err(|e| HelperError::Failed(format!("start container {id}: notify socket: {e}")))?;
    sock.write_all(b"start container")
        .map_err(|e| HelperError::Failed(format!("start container {id}: {e}")))?;
    drop(sock);
    state.insert("status".into(), "running".into());
    let json = serde_json::to_vec(&state)
        .map_err(|e| HelperError::Failed(format!("state of container {id}: {e}")))?;
    // Whole or not at all, for readers outside the shim (tidald's inventory).
    let fresh = state_file.with_extension("json.tidal");
    std::fs::write(&fresh, json)
        .and_then(|_| std::fs::rename(&fresh, &state_file))
        .map_err(|e| {
            let _ = std::fs::remove_file(&fresh);
            HelperError::Failed(format!("save state of container {id}: {e}"))
        })
}

/// Reads the helper's one-line reply. The line ends the reply: the pipe itself
/// may stay open in a container process that inherited it until it execs.
async fn read_reply(fd: OwnedFd) -> Option<Reply> {
    use tokio::io::AsyncBufReadExt;
    let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok()?;
    let mut line = String::new();
    tokio::io::BufReader::new(rx)
        .read_line(&mut line)
        .await
        .ok()?;
    serde_json::from_str(&line).ok()
}

//! Every libcontainer call runs in a short-lived helper process.
//!
//! libcontainer forks, clones, `chdir`s and `unshare`s: process-wide changes
//! that are unsound in the multi-threaded shim. So the shim runs the helper
//! executable beside it as `tidal-shim-helper <request>`: a fresh,
//! single-threaded process that performs one operation and exits
//! ([`worker`]). The helper creates container processes as *siblings*
//! (CLONE_PARENT), so they are children of the shim, which reaps them. The
//! reply travels back as JSON on fd 3; the helper's fds 0-2 are the
//! container's stdio. The shim's own binary holds no libcontainer code, which
//! keeps every shim's resident memory small.
//!
//! Start has an in-process fast path when the container has no OCI hooks
//! (hooks are run by libcontainer with `pre_exec`): a write on libcontainer's
//! notify socket and its state file.
//!
//! Helpers (and the serving shim) are started from a [`ProtectedExe`], never
//! from the binary's path: a container's processes are cloned from a helper,
//! and until they exec the container's program their /proc/PID/exe is the
//! helper's binary, which must not be writable through it.

pub mod worker;

use std::ffi::{CString, OsString};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::reaper::Reaper;

/// The helper writes its reply on this descriptor.
const REPLY_FD: i32 = 3;

/// One filesystem mount of the container's rootfs, as containerd sends it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RootfsMount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// What a helper is asked to do. `root` is libcontainer's state directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Create {
        id: String,
        root: PathBuf,
        bundle: PathBuf,
        rootfs: Vec<RootfsMount>,
        console_socket: Option<PathBuf>,
    },
    Start {
        id: String,
        root: PathBuf,
    },
    Exec {
        id: String,
        root: PathBuf,
        process: PathBuf,
        console_socket: Option<PathBuf>,
    },
    Kill {
        id: String,
        root: PathBuf,
        signal: i32,
        all: bool,
    },
    Pause {
        id: String,
        root: PathBuf,
    },
    Resume {
        id: String,
        root: PathBuf,
    },
    Delete {
        id: String,
        root: PathBuf,
        bundle: PathBuf,
    },
}

/// Why a helper operation failed, in terms the shim maps to RPC codes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
pub enum HelperError {
    /// The container or its process does not exist (any more).
    #[error("{0}")]
    NotFound(String),
    /// The container is in a state that does not allow the operation.
    #[error("{0}")]
    WrongState(String),
    /// The request or the bundle is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Anything else: a failed system call, a broken bundle.
    #[error("{0}")]
    Failed(String),
}

type Reply = Result<Option<i32>, HelperError>;

/// The stdio a helper passes on to the process it creates.
#[derive(Default)]
pub struct HelperStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// The file name of the helper executable, which is installed beside the
/// shim's (`containerd-shim-tidal-v2`). The shim itself holds no libcontainer
/// code: it stays small, and only helpers carry the container-creating code.
pub const HELPER_BIN: &str = "tidal-shim-helper";

/// An executable of tidal's, opened so that no process can write to it.
///
/// libcontainer clones a container's init (and an exec's process) from a
/// helper, so until it execs the container's program its /proc/PID/exe is
/// the helper's binary on the host: a process in the container could open it
/// (O_PATH) and reopen it for writing once nothing executes it any more
/// (runc's CVE-2019-5736). The serving shim is visible the same way to a
/// container in the host's pid namespace. So helpers and the serving shim
/// are started as `/proc/self/fd/N` (with argv\[0\] kept), where N is either
/// - the binary opened through a read-only overlayfs that is attached
///   nowhere: every open for writing fails with EROFS (checked before
///   ETXTBSY), it costs no memory and the text pages stay shared. The mount
///   is made with fsmount and never attached (Linux 5.2), or on older
///   kernels mounted in a temporary directory and detached at once; or, where
///   overlayfs cannot be mounted,
/// - a sealed memfd copy of it (one copy of the binary in memory per shim).
///
/// Without either, no helper runs (see [`SelfExe`]).
pub struct ProtectedExe {
    fd: OwnedFd,
    guard: crate::sys::WriteGuard,
    /// The fsmount mount, kept open: closing it would dissolve the mount,
    /// which waits for an RCU grace period.
    mount: Option<OwnedFd>,
    how: &'static str,
    arg0: OsString,
}

/// The lowest descriptor number a [`ProtectedExe`] is kept at: a child's
/// `dup2` onto fd 3 ([`crate::sys::pass_fd`]) must not replace it.
const EXE_FD_MIN: i32 = 10;

impl ProtectedExe {
    /// The executable this process runs and the helper beside it, protected
    /// together (one overlayfs over their directory): what `start` hands to
    /// the serving shim. The first carries the mount, if one was made.
    pub fn this_and_helper(scratch: &Path) -> Result<(Self, Self), String> {
        let running = std::fs::File::open("/proc/self/exe")
            .map_err(|e| format!("open /proc/self/exe: {e}"))?;
        let (dir, name) = this_executable()?;
        let (dir, name) = (dir.as_path(), name.as_os_str());
        let helper = dir.join(HELPER_BIN);
        let helper_file = std::fs::File::open(&helper).map_err(|e| {
            format!(
                "the helper {}: {e} (install {HELPER_BIN} beside the shim)",
                helper.display()
            )
        })?;
        let names = [name, std::ffi::OsStr::new(HELPER_BIN)];
        let (mut fds, mount, guard, how) =
            protect(dir, &names, vec![running, helper_file], scratch)?;
        let helper_fd = fds.pop().expect("two files");
        let shim_fd = fds.pop().expect("two files");
        Ok((
            Self::new(shim_fd, guard, mount, how, arg0_or(name))?,
            Self::new(helper_fd, guard, None, how, HELPER_BIN.into())?,
        ))
    }

    /// The helper beside this process's executable, protected now: for a
    /// shim that did not inherit it (`delete`, tests).
    pub fn helper(scratch: &Path) -> Result<Self, String> {
        let (dir, _) = this_executable()?;
        Self::beside(&dir, std::ffi::OsStr::new(HELPER_BIN), scratch)
    }

    /// The executable `name` in `dir`, protected now.
    pub fn beside(dir: &Path, name: &std::ffi::OsStr, scratch: &Path) -> Result<Self, String> {
        let path = dir.join(name);
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (mut fds, mount, guard, how) = protect(dir, &[name], vec![file], scratch)?;
        let fd = fds.pop().expect("one file");
        Self::new(fd, guard, mount, how, name.to_owned())
    }

    /// An executable `start` opened protected and passed on as `fd`: refused
    /// unless the kernel confirms that it cannot be written.
    pub fn inherited(fd: OwnedFd, arg0: &str) -> Result<Self, String> {
        use crate::sys::WriteGuard;
        match crate::sys::write_guard(fd.as_fd()) {
            Ok(WriteGuard::None) => Err(format!(
                "the inherited {arg0} (fd {}) is not protected from writes",
                fd.as_raw_fd()
            )),
            Ok(guard) => Self::new(fd, guard, None, "inherited", arg0.into()),
            Err(e) => Err(format!("inspect the inherited {arg0}: {e}")),
        }
    }

    fn new(
        fd: OwnedFd,
        guard: crate::sys::WriteGuard,
        mount: Option<OwnedFd>,
        how: &'static str,
        arg0: OsString,
    ) -> Result<Self, String> {
        let high = |fd| crate::sys::fd_at_least(fd, EXE_FD_MIN).map_err(|e| format!("dup: {e}"));
        Ok(Self {
            fd: high(fd)?,
            guard,
            mount: mount.map(high).transpose()?,
            how,
            arg0,
        })
    }

    /// The unattached mount the executable lives on, if this process made
    /// one: to hand to a process that outlives this one (the serving shim).
    pub fn mount(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.mount.as_ref().map(|m| m.as_fd())
    }

    /// The protected file itself: to hand to the serving shim.
    pub fn file(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A command that runs this executable with its own name as argv\[0\].
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        cmd.arg0(&self.arg0);
        cmd
    }

    /// How it is protected, in words for the log.
    pub fn describe(&self) -> String {
        let what = match self.guard {
            crate::sys::WriteGuard::ReadOnlyOverlay => "a read-only overlayfs attached nowhere",
            crate::sys::WriteGuard::SealedMemfd => "a sealed memfd copy",
            crate::sys::WriteGuard::None => "nothing",
        };
        format!("{} from {what} ({})", self.arg0.to_string_lossy(), self.how)
    }
}

/// The directory and file name this process's executable was started from.
fn this_executable() -> Result<(PathBuf, OsString), String> {
    let path = std::fs::read_link("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Ok((dir.to_path_buf(), name.to_owned())),
        _ => Err(format!("no directory in {}", path.display())),
    }
}

/// This process's argv\[0\], or `name` without one.
fn arg0_or(name: &std::ffi::OsStr) -> OsString {
    std::env::args_os()
        .next()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| name.to_owned())
}

type Protected = (
    Vec<OwnedFd>,
    Option<OwnedFd>,
    crate::sys::WriteGuard,
    &'static str,
);

/// Opens the executables `names` in `dir`, which `files` are (opened on the
/// host, in the same order), so that they cannot be written: through one
/// read-only overlayfs over `dir`, else as sealed memfd copies. Files that
/// are protected already (a shim started from a protected executable) are
/// kept as they are.
fn protect(
    dir: &Path,
    names: &[&std::ffi::OsStr],
    mut files: Vec<std::fs::File>,
    scratch: &Path,
) -> Result<Protected, String> {
    use crate::sys::WriteGuard;
    let guards = files
        .iter()
        .map(|f| crate::sys::write_guard(f.as_fd()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("inspect {}: {e}", dir.display()))?;
    if let Some(&guard) = guards.first().filter(|g| **g != WriteGuard::None) {
        if guards.iter().all(|g| *g == guard) {
            let fds = files.into_iter().map(OwnedFd::from).collect();
            return Ok((fds, None, guard, "inherited"));
        }
    }
    let overlay = match overlay_open(dir, names, &files, scratch) {
        Ok((fds, mount, how)) => return Ok((fds, mount, WriteGuard::ReadOnlyOverlay, how)),
        Err(e) => e,
    };
    let mut copies = Vec::new();
    for (file, name) in files.iter_mut().zip(names) {
        let cname =
            CString::new(name.as_encoded_bytes().to_vec()).unwrap_or_else(|_| c"tidal".to_owned());
        match crate::sys::sealed_memfd_copy(file, &cname) {
            Ok(fd) => copies.push(fd),
            Err(memfd) => {
                return Err(format!(
                    "cannot protect {} from containers: read-only overlayfs: {overlay}; \
                     sealed memfd: {memfd}",
                    dir.join(name).display()
                ))
            }
        }
    }
    Ok((copies, None, WriteGuard::SealedMemfd, "made now"))
}

/// Opens `names` through a read-only overlayfs whose lower layer is `dir`:
/// with fsmount (the mount is returned, to keep), else with mount(2) and an
/// immediate detach. Checks that each is the same file as `files` opened on
/// the host (a path may have been replaced since). Leaves no mount and no
/// directory behind. Also says which way it was made.
fn overlay_open(
    dir: &Path,
    names: &[&std::ffi::OsStr],
    files: &[std::fs::File],
    scratch: &Path,
) -> Result<(Vec<OwnedFd>, Option<OwnedFd>, &'static str), String> {
    use std::os::unix::fs::MetadataExt;
    crate::shim::private_dir(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    // Empty: the second lower layer (removed as soon as the overlay exists).
    let tmp = nix::unistd::mkdtemp(&scratch.join(".exe-XXXXXX"))
        .map_err(|e| format!("temporary directory in {}: {e}", scratch.display()))?;
    let (empty, mnt) = (tmp.join("empty"), tmp.join("mnt"));
    let opened = match crate::sys::open_on_unattached_overlay(dir, names, &tmp) {
        Ok((fds, mount)) => Ok((fds, Some(mount), "fsmount, never attached")),
        Err(fsmount) => std::fs::create_dir(&empty)
            .and_then(|_| std::fs::create_dir(&mnt))
            .and_then(|_| crate::sys::open_on_readonly_overlay(dir, names, &empty, &mnt))
            .map(|fds| (fds, None, "mount(2), detached at once"))
            .map_err(|e| format!("fsmount: {fsmount}; mount: {e}")),
    };
    // No mount is attached here (the fallback's is detached): plain rmdir
    // is enough, and fails rather than removing anything a mount would show.
    let removed = [&mnt, &empty, &tmp]
        .into_iter()
        .filter(|d| d.exists())
        .try_for_each(std::fs::remove_dir)
        .map_err(|e| format!("remove {}: {e}", tmp.display()));
    let (fds, mount, how) = opened?;
    removed?;
    // Each path still names the file opened on the host (overlayfs may
    // number inodes its own way, so the identity is checked on the host's
    // path, after the lookup through the overlay), and the overlay shows the
    // same content.
    let content = |m: &std::fs::Metadata| (m.size(), m.mtime(), m.mtime_nsec());
    for ((fd, name), file) in fds.iter().zip(names).zip(files) {
        let path = dir.join(name);
        let seen = std::fs::File::from(crate::sys::dup(fd).map_err(|e| e.to_string())?)
            .metadata()
            .map_err(|e| format!("stat {} on overlayfs: {e}", path.display()))?;
        let host = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let ran = file
            .metadata()
            .map_err(|e| format!("stat {}: {e}", path.display()))?;
        if (host.dev(), host.ino()) != (ran.dev(), ran.ino()) || content(&seen) != content(&ran) {
            return Err(format!(
                "{} was replaced while it was opened",
                path.display()
            ));
        }
    }
    Ok((fds, mount, how))
}

/// The protected helper executable, made once on first use (a `delete`
/// usually starts no helper at all) or given ready. If it could not be
/// made, every helper fails with that reason: tidal does not run containers
/// from an executable they could write.
pub struct SelfExe {
    cell: OnceLock<Result<ProtectedExe, String>>,
    scratch: PathBuf,
}

impl SelfExe {
    /// Protects the helper beside this process's executable when first
    /// needed, with temporary directories under `scratch`.
    pub fn lazy(scratch: PathBuf) -> Self {
        Self {
            cell: OnceLock::new(),
            scratch,
        }
    }

    /// A helper executable protected already (or the reason it could not be).
    pub fn ready(exe: Result<ProtectedExe, String>) -> Self {
        Self {
            cell: OnceLock::from(exe),
            scratch: PathBuf::new(),
        }
    }

    pub fn get(&self) -> Result<&ProtectedExe, &str> {
        self.cell
            .get_or_init(|| ProtectedExe::helper(&self.scratch))
            .as_ref()
            .map_err(String::as_str)
    }
}

/// A process started as `/proc/self/fd/N` is named `N` by the kernel: names
/// it after its argv\[0\] again (ps, top and `pgrep` without `-f` show it).
pub fn restore_process_name() {
    let Ok(name) = nix::sys::prctl::get_name() else {
        return;
    };
    let bytes = name.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return;
    }
    let wanted = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.as_encoded_bytes().to_vec()))
        .unwrap_or_else(|| b"containerd-shim-tidal-v2".to_vec());
    let short: Vec<u8> = wanted.into_iter().take(15).collect();
    if let Ok(short) = CString::new(short) {
        let _ = crate::sys::set_process_name(&short);
    }
}

/// Starts helpers and collects their replies.
pub struct Helpers {
    exe: SelfExe,
    reaper: Arc<Reaper>,
}

impl Helpers {
    pub fn new(exe: SelfExe, reaper: Arc<Reaper>) -> Self {
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
        log::debug!(
            "helper {} replied after {:?}",
            op_name(req),
            since.elapsed()
        );
        let exit = exited.await.ok();
        match reply {
            Some(reply) => reply,
            None => Err(HelperError::Failed(format!(
                "helper for {} ended without a reply (exit status {})",
                op_name(req),
                exit.map(|e| e.status.to_string())
                    .unwrap_or_else(|| "unknown".into())
            ))),
        }
    }
}

/// Reads the helper's one-line reply. The line ends the reply: the pipe itself
/// may stay open in a container process that inherited it until it execs.
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

    /// Deletes a container's state, cgroups and rootfs mounts.
    pub async fn delete(&self, id: &str, root: &Path, bundle: &Path) -> Reply {
        let req = Request::Delete {
            id: id.to_string(),
            root: root.to_path_buf(),
            bundle: bundle.to_path_buf(),
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
    std::fs::write(&state_file, json)
        .map_err(|e| HelperError::Failed(format!("save state of container {id}: {e}")))
}

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

fn op_name(req: &Request) -> &'static str {
    match req {
        Request::Create { .. } => "create",
        Request::Start { .. } => "start",
        Request::Exec { .. } => "exec",
        Request::Kill { .. } => "kill",
        Request::Pause { .. } => "pause",
        Request::Resume { .. } => "resume",
        Request::Delete { .. } => "delete",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::WriteGuard;

    /// Opens `path` O_WRONLY|O_APPEND (never truncating) and closes it.
    fn open_for_append(path: &str) -> Result<(), i32> {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| e.raw_os_error().unwrap_or(0))
    }

    /// What `delete` does for the helper: protect an executable that is not
    /// protected yet (this test binary), then run it. As root through
    /// overlayfs, leaving nothing in the scratch directory; without root as a
    /// sealed memfd.
    #[test]
    fn an_executable_is_protected_on_first_use() {
        let scratch = std::env::temp_dir().join(format!("tidal-exe-{}", std::process::id()));
        let me = std::env::current_exe().unwrap();
        let exe = SelfExe::ready(ProtectedExe::beside(
            me.parent().unwrap(),
            me.file_name().unwrap(),
            &scratch,
        ));
        let got = exe.get().expect("protect the test binary");
        let path = format!("/proc/self/fd/{}", got.fd.as_raw_fd());
        if nix::unistd::Uid::effective().is_root() {
            assert_eq!(got.guard, WriteGuard::ReadOnlyOverlay);
            assert!(got.mount.is_some(), "{}", got.describe());
            assert_eq!(open_for_append(&path), Err(libc::EROFS));
            let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
            assert!(left.is_empty(), "left in the scratch dir: {left:?}");
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            assert!(!mounts.contains(&*scratch.to_string_lossy()), "{mounts}");
        } else {
            assert_eq!(got.guard, WriteGuard::SealedMemfd);
        }
        let same = std::fs::File::open(&path).unwrap();
        assert_eq!(
            crate::sys::write_guard(same.as_fd()).unwrap(),
            got.guard,
            "the guard is recognised again (the serving shim's check)"
        );
        let listed = got
            .command()
            .args(["--list", "--format=terse"])
            .output()
            .unwrap();
        assert!(listed.status.success());
        assert!(String::from_utf8_lossy(&listed.stdout).contains("protected_on_first_use"));
        let _ = std::fs::remove_dir(&scratch);
    }

    /// What `start` does: the shim and the helper beside it protected by one
    /// overlay (as root), each runnable, neither writable; a missing helper
    /// is named.
    #[test]
    fn two_executables_are_protected_together() {
        let dir = std::env::temp_dir().join(format!("tidal-exes-{}", std::process::id()));
        let scratch = dir.join("scratch");
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["shim", "helper"] {
            std::fs::copy("/proc/self/exe", bin.join(name)).unwrap();
        }
        let names = [std::ffi::OsStr::new("shim"), std::ffi::OsStr::new("helper")];
        let files = names
            .iter()
            .map(|n| std::fs::File::open(bin.join(n)).unwrap())
            .collect();
        let (fds, mount, guard, how) = protect(&bin, &names, files, &scratch).unwrap();
        assert_eq!(fds.len(), 2);
        if nix::unistd::Uid::effective().is_root() {
            assert_eq!(guard, WriteGuard::ReadOnlyOverlay, "{how}");
            assert_eq!(mount.is_some(), how.starts_with("fsmount"));
        } else {
            assert_eq!(guard, WriteGuard::SealedMemfd);
        }
        for fd in fds {
            let exe = ProtectedExe::new(fd, guard, None, how, "t".into()).unwrap();
            let path = format!("/proc/self/fd/{}", exe.fd.as_raw_fd());
            assert!(open_for_append(&path).is_err(), "{}", exe.describe());
            let listed = exe.command().args(["--list"]).output().unwrap();
            assert!(listed.status.success(), "{}", exe.describe());
        }
        drop(mount);
        std::fs::remove_file(bin.join("helper")).unwrap();
        let missing = ProtectedExe::beside(&bin, std::ffi::OsStr::new("helper"), &scratch)
            .err()
            .expect("no helper");
        assert!(missing.contains("helper"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_sealed_memfd_copy_cannot_change() {
        let mut exe = std::fs::File::open("/proc/self/exe").unwrap();
        let fd = crate::sys::sealed_memfd_copy(&mut exe, c"copy").unwrap();
        assert_eq!(
            crate::sys::write_guard(fd.as_fd()).unwrap(),
            WriteGuard::SealedMemfd
        );
        // A copy: writing to it could not harm the binary, and must fail.
        let copy = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let target = std::fs::read_link(&copy).unwrap();
        assert!(
            target.to_string_lossy().starts_with("/memfd:copy"),
            "{}",
            target.display()
        );
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&copy)
            .unwrap();
        let err = w.write_all(b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        drop(w);
        assert_eq!(
            std::fs::File::from(crate::sys::dup(&fd).unwrap())
                .metadata()
                .unwrap()
                .len(),
            exe.metadata().unwrap().len()
        );
        // The fallback runs: started from the copy.
        let copy =
            ProtectedExe::new(fd, WriteGuard::SealedMemfd, None, "test", "copy".into()).unwrap();
        let listed = copy
            .command()
            .args(["--list", "--format=terse"])
            .output()
            .unwrap();
        assert!(listed.status.success(), "{listed:?}");
    }
}

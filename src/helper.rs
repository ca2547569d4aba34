//! Every libcontainer call runs in a short-lived helper process.
//!
//! libcontainer forks, clones, `chdir`s and `unshare`s: process-wide changes
//! that are unsound in the multi-threaded shim. So the shim re-executes its own
//! binary as `containerd-shim-tidal-v2 __helper <request>`: a fresh,
//! single-threaded process that performs one operation and exits. The helper
//! creates container processes as *siblings* (CLONE_PARENT), so they are
//! children of the shim, which reaps them. The reply travels back as JSON on
//! fd 3; the helper's fds 0-2 are the container's stdio.
//!
//! Two operations have in-process fast paths when the container has no OCI
//! hooks (hooks are run by libcontainer with `pre_exec`): Start is a write on
//! libcontainer's notify socket, Delete removes cgroups, state and mounts.
//! Neither forks or changes process-wide state.
//!
//! Helpers (and the serving shim) are started from a [`ProtectedExe`], never
//! from the binary's path: a container's processes are cloned from a helper,
//! and until they exec the container's program their /proc/PID/exe is the
//! shim's binary, which must not be writable through it.

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

/// First argument that switches the shim binary into helper mode.
pub const HELPER_ARG: &str = "__helper";
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

/// The shim's own executable, opened so that no process can write to it.
///
/// libcontainer clones a container's init (and an exec's process) from the
/// helper, so until it execs the container's program its /proc/PID/exe is the
/// shim's binary on the host: a process in the container could open it
/// (O_PATH) and reopen it for writing once nothing executes it any more
/// (runc's CVE-2019-5736). So helpers and the serving shim are started as
/// `/proc/self/fd/N` (with argv\[0\] kept), where N is either
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
    /// The executable this process runs, protected: as it is when this process
    /// was itself started from a protected one (the serving shim, from
    /// `start`), else through a read-only overlayfs mounted for a moment in a
    /// temporary directory under `scratch`, else as a sealed memfd.
    pub fn for_this_process(scratch: &Path) -> Result<Self, String> {
        use crate::sys::WriteGuard;
        let arg0 = std::env::args_os()
            .next()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| OsString::from("containerd-shim-tidal-v2"));
        // The very file this process runs, even if its path was replaced since.
        let mut running = std::fs::File::open("/proc/self/exe")
            .map_err(|e| format!("open /proc/self/exe: {e}"))?;
        let guard = crate::sys::write_guard(running.as_fd())
            .map_err(|e| format!("inspect /proc/self/exe: {e}"))?;
        if guard != WriteGuard::None {
            return Self::new(running.into(), guard, None, "inherited", arg0);
        }
        let overlay = match overlay_open(&running, scratch) {
            Ok((fd, mount, how)) => {
                return Self::new(fd, WriteGuard::ReadOnlyOverlay, mount, how, arg0)
            }
            Err(e) => e,
        };
        let name = std::fs::read_link("/proc/self/exe")
            .ok()
            .and_then(|p| p.file_name().map(|n| n.as_encoded_bytes().to_vec()))
            .and_then(|n| CString::new(n).ok())
            .unwrap_or_else(|| c"containerd-shim-tidal-v2".to_owned());
        match crate::sys::sealed_memfd_copy(&mut running, &name) {
            Ok(fd) => Self::new(fd, WriteGuard::SealedMemfd, None, "made now", arg0),
            Err(memfd) => Err(format!(
                "cannot protect the shim's executable from containers: \
                 read-only overlayfs: {overlay}; sealed memfd: {memfd}"
            )),
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

    /// A command that runs this executable with the process's own argv\[0\].
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
        format!("{what} ({})", self.how)
    }
}

/// Opens the file `running` through a read-only overlayfs whose lower layer
/// is its directory: with fsmount (the mount is returned, to keep), else
/// with mount(2) and an immediate detach. Checks that it is the same file
/// (its path may have been replaced since this process started). Leaves no
/// mount and no directory behind. Also says which way it was made.
fn overlay_open(
    running: &std::fs::File,
    scratch: &Path,
) -> Result<(OwnedFd, Option<OwnedFd>, &'static str), String> {
    use std::os::unix::fs::MetadataExt;
    let path = std::fs::read_link("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("no directory in {}", path.display()));
    };
    crate::shim::private_dir(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    // Empty: the second lower layer (removed as soon as the overlay exists).
    let tmp = nix::unistd::mkdtemp(&scratch.join(".exe-XXXXXX"))
        .map_err(|e| format!("temporary directory in {}: {e}", scratch.display()))?;
    let (empty, mnt) = (tmp.join("empty"), tmp.join("mnt"));
    let opened = match crate::sys::open_on_unattached_overlay(dir, name, &tmp) {
        Ok((fd, mount)) => Ok((fd, Some(mount), "fsmount, never attached")),
        Err(fsmount) => std::fs::create_dir(&empty)
            .and_then(|_| std::fs::create_dir(&mnt))
            .and_then(|_| crate::sys::open_on_readonly_overlay(dir, name, &empty, &mnt))
            .map(|fd| (fd, None, "mount(2), detached at once"))
            .map_err(|e| format!("fsmount: {fsmount}; mount: {e}")),
    };
    // No mount is attached here (the fallback's is detached): plain rmdir
    // is enough, and fails rather than removing anything a mount would show.
    let removed = [&mnt, &empty, &tmp]
        .into_iter()
        .filter(|d| d.exists())
        .try_for_each(std::fs::remove_dir)
        .map_err(|e| format!("remove {}: {e}", tmp.display()));
    let (fd, mount, how) = opened?;
    removed?;
    // The path still names the running file (overlayfs may number inodes
    // its own way, so the identity is checked on the host's path, after the
    // lookup through the overlay), and the overlay shows the same content.
    let seen = std::fs::File::from(crate::sys::dup(&fd).map_err(|e| e.to_string())?)
        .metadata()
        .map_err(|e| format!("stat on overlayfs: {e}"))?;
    let host = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let ran = running
        .metadata()
        .map_err(|e| format!("stat /proc/self/exe: {e}"))?;
    let content = |m: &std::fs::Metadata| (m.size(), m.mtime(), m.mtime_nsec());
    if (host.dev(), host.ino()) != (ran.dev(), ran.ino()) || content(&seen) != content(&ran) {
        return Err(format!(
            "{} is no longer the binary this process runs",
            path.display()
        ));
    }
    Ok((fd, mount, how))
}

/// The protected executable helpers are started from, made once on first
/// use (a `delete` usually starts no helper at all) or given ready. If it
/// could not be made, every helper fails with that reason: tidal does not
/// run containers from an executable they could write.
pub struct SelfExe {
    cell: OnceLock<Result<ProtectedExe, String>>,
    scratch: PathBuf,
}

impl SelfExe {
    /// Protects this process's executable when first needed, with temporary
    /// directories under `scratch`.
    pub fn lazy(scratch: PathBuf) -> Self {
        Self {
            cell: OnceLock::new(),
            scratch,
        }
    }

    /// An executable protected already (or the reason it could not be).
    pub fn ready(exe: Result<ProtectedExe, String>) -> Self {
        Self {
            cell: OnceLock::from(exe),
            scratch: PathBuf::new(),
        }
    }

    pub fn get(&self) -> Result<&ProtectedExe, &str> {
        self.cell
            .get_or_init(|| ProtectedExe::for_this_process(&self.scratch))
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
        cmd.arg(HELPER_ARG)
            .arg(json)
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

    /// Deletes a container's state, cgroups and rootfs mounts. Without OCI
    /// hooks libcontainer's delete forks nothing and changes no process-wide
    /// state, so it runs in the shim, on a blocking thread.
    pub async fn delete(&self, id: &str, root: &Path, bundle: &Path) -> Reply {
        if has_hooks(root, id) {
            let req = Request::Delete {
                id: id.to_string(),
                root: root.to_path_buf(),
                bundle: bundle.to_path_buf(),
            };
            return self.run(&req, HelperStdio::default()).await;
        }
        let (id, root, bundle) = (id.to_string(), root.to_path_buf(), bundle.to_path_buf());
        tokio::task::spawn_blocking(move || delete(&id, &root, &bundle))
            .await
            .map_err(|e| HelperError::Failed(format!("delete task: {e}")))?
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

fn start_in_process(root: &Path, id: &str) -> Result<(), HelperError> {
    use libcontainer::container::ContainerStatus;
    let dir = std::fs::File::open(root.join(id))
        .map_err(|_| HelperError::NotFound(format!("container {id} does not exist")))?;
    let notify = format!("/proc/self/fd/{}/notify.sock", dir.as_raw_fd());
    let mut c = load(root, id)?;
    if !c.can_start() {
        return Err(HelperError::WrongState(format!(
            "start container {id}: it is {:?}",
            c.status()
        )));
    }
    let mut sock = std::os::unix::net::UnixStream::connect(&notify)
        .map_err(|e| HelperError::Failed(format!("start container {id}: notify socket: {e}")))?;
    sock.write_all(b"start container")
        .map_err(|e| HelperError::Failed(format!("start container {id}: {e}")))?;
    drop(sock);
    c.set_status(ContainerStatus::Running)
        .save()
        .map_err(|e| lc_error("save state of", id, e))?;
    Ok(())
}

fn delete(id: &str, root: &Path, bundle: &Path) -> Reply {
    let result = match load(root, id) {
        Ok(mut c) => c.delete(true).map_err(|e| lc_error("delete", id, e)),
        Err(HelperError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    };
    unmount_rootfs(&bundle.join("rootfs"));
    result.map(|_| None)
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

/// Entry point of helper mode; never returns. Runs before any thread exists.
pub fn main(arg: &str) -> ! {
    restore_process_name();
    // SAFETY: `Helpers::run` put the reply pipe at REPLY_FD for us alone.
    let mut reply_fd = std::fs::File::from(unsafe { crate::sys::inherited(REPLY_FD) });
    let _ = crate::sys::set_cloexec(&reply_fd, true);
    let reply = match serde_json::from_str::<Request>(arg) {
        Ok(req) => execute(req),
        Err(e) => Err(HelperError::Invalid(format!("bad helper request: {e}"))),
    };
    let code = i32::from(reply.is_err());
    let mut line = serde_json::to_vec(&reply).unwrap_or_default();
    line.push(b'\n');
    let _ = reply_fd.write_all(&line);
    drop(reply_fd);
    std::process::exit(code)
}

/// Runs the container's process as runc does: an argv[0] with a slash is a
/// path and needs no `PATH` (the pause image sets none); a bare name is
/// looked up in the process's `PATH`. libcontainer's own executor insists on
/// `PATH` even for absolute paths.
///
/// For an exec process it also applies the container's seccomp filter:
/// libcontainer 0.7 builds an exec's spec without `linux.seccomp`, so an
/// exec'd process would otherwise run unfiltered (runc filters it).
#[derive(Clone, Default)]
struct Workload {
    exec_seccomp: Option<ExecSeccomp>,
}

/// The filter to load just before execve, and the capabilities to drop to
/// after it: the process was started with CAP_SYS_ADMIN and CAP_SETPCAP
/// kept, which loading a filter without no_new_privs and then dropping the
/// bounding set need.
#[derive(Clone)]
struct ExecSeccomp {
    filter: oci_spec::runtime::LinuxSeccomp,
    capabilities: Option<oci_spec::runtime::LinuxCapabilities>,
}

impl libcontainer::workload::Executor for Workload {
    fn exec(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorError> {
        use libcontainer::workload::ExecutorError as E;
        if let Some(s) = &self.exec_seccomp {
            match libcontainer::seccomp::initialize_seccomp(&s.filter) {
                Ok(None) => {}
                Ok(Some(_)) => {
                    return Err(E::Other(
                        "seccomp notify (SCMP_ACT_NOTIFY) is not supported for exec processes"
                            .into(),
                    ))
                }
                Err(e) => {
                    return Err(E::Other(format!(
                        "load the container's seccomp filter: {e}"
                    )))
                }
            }
            if let Some(caps) = &s.capabilities {
                let syscall = libcontainer::syscall::syscall::create_syscall();
                libcontainer::capabilities::drop_privileges(caps, syscall.as_ref())
                    .map_err(|e| E::Other(format!("drop capabilities after seccomp: {e}")))?;
            }
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        use libcontainer::workload::ExecutorValidationError as E;
        let process = spec
            .process()
            .as_ref()
            .ok_or(E::ArgValidationError("the spec has no process".into()))?;
        let Some(name) = process.args().as_ref().and_then(|a| a.first()) else {
            return Err(E::ArgValidationError("the process has no args".into()));
        };
        let path_var = process
            .env()
            .iter()
            .flatten()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("");
        let found = if name.contains('/') {
            Some(std::path::PathBuf::from(name))
        } else {
            path_var
                .split(':')
                .filter(|d| !d.is_empty())
                .map(|d| std::path::Path::new(d).join(name))
                .find(|p| p.is_file())
        };
        let Some(path) = found else {
            return Err(E::ArgValidationError(format!(
                "executable {name:?} not found in $PATH ({path_var:?})"
            )));
        };
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
            Ok(_) => Err(E::ArgValidationError(format!(
                "{} is not an executable file",
                path.display()
            ))),
            Err(e) => Err(E::ArgValidationError(format!(
                "executable {}: {e}",
                path.display()
            ))),
        }
    }
}

/// An exec's process file and executor. When the container has a seccomp
/// filter and the process names all of its capability sets, the process
/// file handed to libcontainer is a copy that keeps CAP_SYS_ADMIN and
/// CAP_SETPCAP until [`Workload::exec`] has loaded the filter and dropped to
/// the sets asked for. The copy is removed when the returned value drops.
fn exec_workload(
    root: &Path,
    id: &str,
    process: &Path,
) -> Result<(ExecProcessFile, Workload), HelperError> {
    use oci_spec::runtime::{Capability, LinuxCapabilities, Process, Spec};
    let bundle = load(root, id)?.bundle().to_path_buf();
    let spec = Spec::load(bundle.join("config.json"))
        .map_err(|e| HelperError::Failed(format!("read the spec of container {id}: {e}")))?;
    let Some(filter) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) else {
        return Ok((
            ExecProcessFile::Given(process.to_path_buf()),
            Workload::default(),
        ));
    };
    let text = std::fs::read(process)
        .map_err(|e| HelperError::Invalid(format!("exec process {}: {e}", process.display())))?;
    let mut p: Process = serde_json::from_slice(&text)
        .map_err(|e| HelperError::Invalid(format!("exec process {}: {e}", process.display())))?;
    let wanted = p.capabilities().clone();
    let complete = wanted.as_ref().is_some_and(|c| {
        c.bounding().is_some() && c.effective().is_some() && c.permitted().is_some()
    });
    if !complete || p.no_new_privileges() == Some(true) {
        // Nothing to keep: either no capabilities are dropped at all, or
        // no_new_privs lets an unprivileged process load the filter.
        let workload = Workload {
            exec_seccomp: Some(ExecSeccomp {
                filter,
                capabilities: None,
            }),
        };
        return Ok((ExecProcessFile::Given(process.to_path_buf()), workload));
    }
    let wanted = wanted.unwrap_or_default();
    let keep = |set: &Option<std::collections::HashSet<Capability>>| {
        let mut set = set.clone().unwrap_or_default();
        set.extend([Capability::SysAdmin, Capability::Setpcap]);
        Some(set)
    };
    let mut widened = LinuxCapabilities::default();
    widened
        .set_bounding(keep(wanted.bounding()))
        .set_effective(keep(wanted.effective()))
        .set_permitted(keep(wanted.permitted()))
        .set_inheritable(wanted.inheritable().clone())
        .set_ambient(wanted.ambient().clone());
    p.set_capabilities(Some(widened));
    let copy = process.with_extension("seccomp.json");
    let json =
        serde_json::to_vec(&p).map_err(|e| HelperError::Failed(format!("exec process: {e}")))?;
    std::fs::write(&copy, json)
        .map_err(|e| HelperError::Failed(format!("write {}: {e}", copy.display())))?;
    let workload = Workload {
        exec_seccomp: Some(ExecSeccomp {
            filter,
            capabilities: Some(wanted),
        }),
    };
    Ok((ExecProcessFile::Copy(copy), workload))
}

/// The process file an exec runs from: the caller's, or our copy (removed on drop).
enum ExecProcessFile {
    Given(PathBuf),
    Copy(PathBuf),
}

impl ExecProcessFile {
    fn path(&self) -> &Path {
        match self {
            ExecProcessFile::Given(p) | ExecProcessFile::Copy(p) => p,
        }
    }
}

impl Drop for ExecProcessFile {
    fn drop(&mut self) {
        if let ExecProcessFile::Copy(p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn execute(req: Request) -> Reply {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;

    match req {
        Request::Create {
            id,
            root,
            bundle,
            rootfs,
            console_socket,
        } => {
            let target = bundle.join("rootfs");
            // libcontainer 0.7 rejects runc's rootfsPropagation names and
            // ignores per-mount propagation: see crate::propagation.
            let propagation = crate::propagation::prepare(&bundle)
                .map_err(|e| HelperError::Invalid(format!("create container {id}: {e}")))?;
            for m in &rootfs {
                let kind = Some(m.kind.as_str()).filter(|s| !s.is_empty());
                let source = Some(m.source.as_str()).filter(|s| !s.is_empty());
                containerd_shim::mount::mount_rootfs(kind, source, &m.options, &target)
                    .map_err(|e| HelperError::Failed(format!("mount rootfs: {e}")))?;
            }
            let built = ContainerBuilder::new(id.clone(), SyscallType::default())
                .with_root_path(&root)
                .and_then(|b| b.validate_id())
                .map(|b| b.with_executor(Workload::default()))
                .map(|b| b.with_console_socket(console_socket.as_ref()))
                .and_then(|b| {
                    b.as_init(&bundle)
                        .with_systemd(false)
                        .with_detach(true)
                        .as_sibling(true)
                        .build()
                });
            // Before the container's process runs, as runc does while mounting.
            let built = built
                .map_err(|e| format!("{e}{}", source_chain(&e)))
                .and_then(|c| match c.pid() {
                    Some(pid) => crate::propagation::apply(pid.as_raw(), &propagation).map(|_| c),
                    None => Ok(c),
                });
            match built {
                Ok(c) => Ok(c.pid().map(|p| p.as_raw())),
                Err(e) => {
                    let msg = format!("create container {id}: {e}");
                    // Leave nothing behind: state, cgroup and rootfs mounts.
                    if let Ok(mut c) = load(&root, &id) {
                        let _ = c.delete(true);
                    }
                    unmount_rootfs(&target);
                    Err(HelperError::Failed(msg))
                }
            }
        }
        Request::Start { id, root } => {
            let mut c = load(&root, &id)?;
            c.start().map_err(|e| lc_error("start", &id, e))?;
            Ok(None)
        }
        Request::Exec {
            id,
            root,
            process,
            console_socket,
        } => {
            let (process, workload) = exec_workload(&root, &id, &process)?;
            let built = ContainerBuilder::new(id.clone(), SyscallType::default())
                .with_root_path(&root)
                .map(|b| b.with_executor(workload))
                .map(|b| b.with_console_socket(console_socket.as_ref()))
                .and_then(|b| {
                    b.as_tenant()
                        .with_process(Some(process.path()))
                        .with_detach(true)
                        .as_sibling(true)
                        .build()
                });
            drop(process);
            let pid = built.map_err(|e| lc_error("exec in", &id, e))?;
            Ok(Some(pid.as_raw()))
        }
        Request::Kill {
            id,
            root,
            signal,
            all,
        } => {
            let sig = libcontainer::signal::Signal::try_from(signal)
                .map_err(|e| HelperError::Invalid(format!("signal {signal}: {e}")))?;
            let mut c = load(&root, &id)?;
            c.kill(sig, all).map_err(|e| lc_error("kill", &id, e))?;
            Ok(None)
        }
        Request::Pause { id, root } => {
            load(&root, &id)?
                .pause()
                .map_err(|e| lc_error("pause", &id, e))?;
            Ok(None)
        }
        Request::Resume { id, root } => {
            load(&root, &id)?
                .resume()
                .map_err(|e| lc_error("resume", &id, e))?;
            Ok(None)
        }
        Request::Delete { id, root, bundle } => delete(&id, &root, &bundle),
    }
}

fn load(root: &Path, id: &str) -> Result<libcontainer::container::Container, HelperError> {
    let dir = root.join(id);
    if !dir.exists() {
        return Err(HelperError::NotFound(format!(
            "container {id} does not exist"
        )));
    }
    libcontainer::container::Container::load(dir)
        .map_err(|e| HelperError::Failed(format!("load state of container {id}: {e}")))
}

fn lc_error(op: &str, id: &str, e: libcontainer::error::LibcontainerError) -> HelperError {
    use libcontainer::error::LibcontainerError as E;
    let msg = format!("{op} container {id}: {e}{}", source_chain(&e));
    match e {
        E::IncorrectStatus(_) => HelperError::WrongState(msg),
        E::NoDirectory => HelperError::NotFound(msg),
        E::InvalidID(_) | E::InvalidInput(_) | E::InvalidSpec(_) | E::MissingSpec(_) => {
            HelperError::Invalid(msg)
        }
        _ => HelperError::Failed(msg),
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn unmount_rootfs(target: &Path) {
    if let Some(t) = target.to_str() {
        let _ = containerd_shim::mount::umount_recursive(Some(t), libc::MNT_DETACH);
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

    /// What `delete` does: protect an executable that is not protected yet
    /// (this test binary), then run it. As root through overlayfs, leaving
    /// nothing in the scratch directory; without root as a sealed memfd.
    #[test]
    fn this_processs_executable_is_protected_on_first_use() {
        let scratch = std::env::temp_dir().join(format!("tidal-exe-{}", std::process::id()));
        let exe = SelfExe::lazy(scratch.clone());
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

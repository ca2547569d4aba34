//! The helper process: performs one [`Request`] with libcontainer and
//! replies on fd 3. Runs as its own executable (`tidal-shim-helper`), fresh
//! and single-threaded, so libcontainer's forks, clones and `unshare`s never
//! meet the shim's threads, and the shim itself carries none of this code.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{restore_process_name, HelperError, Reply, Request, REPLY_FD};

/// The helper executable's entry point; never returns. Runs before any
/// thread exists.
pub fn main(arg: &str) -> ! {
    restore_process_name();
    let version = env!("CARGO_PKG_VERSION");
    match arg {
        // What an operator (or `tidalctl doctor`) asks: the version, to
        // match it against the shim's.
        "-v" | "-V" | "--version" => {
            println!("{} {version}", super::HELPER_BIN);
            std::process::exit(0)
        }
        a if !a.starts_with('{') || !crate::sys::is_pipe(REPLY_FD) => {
            eprintln!(
                "{} {version}: runs one container operation for containerd-shim-tidal-v2, which starts it with a JSON request and a reply pipe at descriptor {REPLY_FD}; it is not run by hand (--version prints its version)",
                super::HELPER_BIN
            );
            std::process::exit(2)
        }
        _ => {}
    }
    // SAFETY: the shim (`shim::helpers::Helpers::run`) put the reply pipe at
    // REPLY_FD for this process alone (checked to be a pipe above); nothing
    // else here owns or closes it.
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
            systemd,
        } => {
            let target = bundle.join("rootfs");
            // libcontainer 0.7 rejects runc's rootfsPropagation names and
            // ignores per-mount propagation: see crate::propagation.
            let config = bundle.join("config.json");
            let mut spec = read_spec(&id, &config)?;
            let legacy_scope = match systemd && !crate::cgroups::driver::Node::here().unified {
                true => Some(legacy_scope(&id, &mut spec)?),
                false => None,
            };
            let rewritten = legacy_scope.is_some();
            let propagation =
                super::propagation::prepare(&config, &mut spec, rewritten).map_err(|e| {
                    let msg = format!("create container {id}: {e}");
                    if e.is_invalid_spec() {
                        HelperError::Invalid(msg)
                    } else {
                        HelperError::Failed(msg)
                    }
                })?;
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
                        .with_systemd(systemd && legacy_scope.is_none())
                        .with_detach(true)
                        .as_sibling(true)
                        .build()
                });
            // Before the container's process runs, as runc does while mounting.
            let built = built
                .map_err(|e| format!("{e}{}", source_chain(&e)))
                .and_then(|c| match c.pid() {
                    Some(pid) => super::propagation::apply(pid.as_raw(), &propagation)
                        .map_err(|e| e.to_string())
                        .and_then(|_| match creates_netns(&spec) {
                            true => loopback_up(pid.as_raw()),
                            false => Ok(()),
                        })
                        .and_then(|_| match &legacy_scope {
                            Some(scope) => start_legacy_scope(&id, &bundle, scope, pid.as_raw()),
                            None => Ok(()),
                        })
                        .map(|_| c),
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
                    if let Some(scope) = &legacy_scope {
                        let _ = crate::cgroups::systemd::stop_unit(&scope.unit);
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
            join_init(&root, &id, pid.as_raw())?;
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
            let mut c = load(&root, &id)?;
            if let Err(e) = c.pause() {
                // A freeze that did not complete (cgroup v2 waits for every
                // task to stop, and gives up after 10 s) leaves the cgroup
                // half frozen while the container is still called running:
                // thaw it, as runc does, so a failed pause changes nothing.
                // Not when the pause was refused for the container's state
                // (already paused, or stopped): nothing was frozen then.
                if !matches!(
                    e,
                    libcontainer::error::LibcontainerError::IncorrectStatus(_)
                ) {
                    thaw(&c);
                }
                return Err(lc_error("pause", &id, e));
            }
            Ok(None)
        }
        Request::Resume { id, root } => {
            load(&root, &id)?
                .resume()
                .map_err(|e| lc_error("resume", &id, e))?;
            Ok(None)
        }
        Request::Delete {
            id,
            root,
            bundle,
            shim_dead,
        } => delete(&id, &root, &bundle, shim_dead),
    }
}

/// Thaws `c`'s cgroup, whatever libcontainer's state says of it.
fn thaw(c: &libcontainer::container::Container) {
    use libcgroups::common::{CgroupConfig, CgroupManager, FreezerState};
    let Ok(spec) = c.spec() else { return };
    let manager = libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: spec.cgroup_path,
        systemd_cgroup: c.systemd(),
        container_name: c.id().to_string(),
    });
    let thawed = match manager {
        Ok(m) => m.freeze(FreezerState::Thawed).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = thawed {
        tracing::warn!(id = c.id(), "thaw after a failed pause: {e}");
    }
}

/// The bundle's `config.json`, read once for what the helper does beside
/// libcontainer.
fn read_spec(id: &str, config: &Path) -> Result<serde_json::Value, HelperError> {
    let what =
        |e: &dyn std::fmt::Display| format!("create container {id}: {}: {e}", config.display());
    let text = std::fs::read(config).map_err(|e| HelperError::Failed(what(&e)))?;
    serde_json::from_slice(&text).map_err(|e| HelperError::Invalid(what(&e)))
}

/// The systemd driver on the legacy (v1) hierarchy, where libcontainer
/// ignores systemd: the scope that `spec`'s `slice:prefix:name` cgroupsPath
/// names, with the path rewritten to the scope's cgroup (where systemd will
/// find the container's cgroup in each controller's hierarchy).
fn legacy_scope(
    id: &str,
    spec: &mut serde_json::Value,
) -> Result<crate::cgroups::driver::Scope, HelperError> {
    let path = spec
        .pointer("/linux/cgroupsPath")
        .and_then(|p| p.as_str())
        .unwrap_or("");
    let scope = match crate::cgroups::driver::Scope::parse(path) {
        Some(Ok(scope)) => scope,
        Some(Err(e)) => return Err(HelperError::Invalid(format!("create container {id}: {e}"))),
        None => {
            return Err(HelperError::Invalid(format!(
                "create container {id}: the systemd cgroup driver needs cgroupsPath as slice:prefix:name, not {path:?}"
            )))
        }
    };
    spec["linux"]["cgroupsPath"] = serde_json::Value::String(scope.cgroup());
    Ok(scope)
}

/// Hands the created container `pid` (its cgroup made by libcontainer at
/// the scope's path) to systemd as a transient scope, with the values
/// libcontainer wrote, so that systemd writes the same ones.
fn start_legacy_scope(
    id: &str,
    bundle: &Path,
    scope: &crate::cgroups::driver::Scope,
    pid: i32,
) -> Result<(), String> {
    use crate::cgroups::{systemd, Cgroup};
    let cg = Cgroup::of_pid(pid).map_err(|e| format!("cgroup of {pid}: {e}"))?;
    let mut props = systemd::properties_of(&cg);
    // systemd manages the scope's devices and blkio cgroups too: with any
    // controller it supports left out, it would move the container out of
    // that cgroup and remove it whenever it applies the unit. So it gets
    // the device rules libcontainer wrote, as the kernel lists them.
    let devices = cg
        .dir("devices")
        .ok_or("no devices cgroup")?
        .join("devices.list");
    let list =
        std::fs::read_to_string(&devices).map_err(|e| format!("{}: {e}", devices.display()))?;
    let proc_devices =
        std::fs::read_to_string("/proc/devices").map_err(|e| format!("/proc/devices: {e}"))?;
    props.extend(systemd::device_properties(&list, &proc_devices)?);
    props.push(("BlockIOAccounting".into(), crate::dbus::Value::Bool(true)));
    systemd::start_scope(
        &scope.unit,
        &scope.slice,
        pid,
        &format!("tidal container {id}"),
        props,
    )
    .map_err(|e| format!("start systemd scope {scope}: {e}"))?;
    rejoin(bundle, &scope.cgroup(), pid)
        .map_err(|e| format!("return {pid} to its cgroups after systemd took {scope}: {e}"))
}

/// Puts `pid` back into the cgroup at `path`, as libcontainer made it, in
/// every v1 hierarchy, with the spec's values written again. Taking a scope
/// over on the legacy hierarchy, systemd moves its processes up to the
/// slice in the hierarchies it does not manage for the unit (devices,
/// blkio) and removes the scope's cgroup there: the container would lose
/// its device rules, and libcontainer (which lists a container's processes
/// from its devices cgroup) its processes. runc joins them again after
/// starting the unit, too.
fn rejoin(bundle: &Path, path: &str, pid: i32) -> Result<(), String> {
    use libcgroups::common::{CgroupManager, ControllerOpt};
    let spec = oci_spec::runtime::Spec::load(bundle.join("config.json"))
        .map_err(|e| format!("read the spec: {e}"))?;
    let resources = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let manager =
        libcgroups::v1::manager::Manager::new(Path::new(path)).map_err(|e| e.to_string())?;
    manager
        .add_task(nix::unistd::Pid::from_raw(pid))
        .map_err(|e| e.to_string())?;
    manager
        .apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| e.to_string())
}

/// Puts exec `pid` where its container's init is in the hierarchies
/// libcontainer leaves alone (on the legacy hierarchy under the systemd
/// driver: systemd's own, where the container's scope is). A process that
/// has ended already is no error; one that could not be moved is ended.
fn join_init(root: &Path, id: &str, pid: i32) -> Result<(), HelperError> {
    if crate::cgroups::driver::Node::here().unified {
        return Ok(());
    }
    let Some(init) = load(root, id)?.pid() else {
        return Ok(());
    };
    match crate::cgroups::systemd::follow(pid, init.as_raw()) {
        Err(e)
            if e.raw_os_error() != Some(libc::ESRCH)
                && e.kind() != std::io::ErrorKind::NotFound =>
        {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            Err(HelperError::Failed(format!(
                "exec in container {id}: join the container's cgroups: {e}"
            )))
        }
        _ => Ok(()),
    }
}

/// Whether the container gets a network namespace of its own (one with no
/// path to join), where runc brings the loopback interface up.
fn creates_netns(spec: &serde_json::Value) -> bool {
    let namespaces = spec.pointer("/linux/namespaces").and_then(|n| n.as_array());
    namespaces.into_iter().flatten().any(|ns| {
        ns.get("type").and_then(|t| t.as_str()) == Some("network")
            && ns
                .get("path")
                .and_then(|p| p.as_str())
                .is_none_or(str::is_empty)
    })
}

/// Brings `lo` up in the network namespace of the created container `pid`.
fn loopback_up(pid: i32) -> Result<(), String> {
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| format!("open network namespace of {pid}: {e}"))?;
    crate::sys::loopback_up(std::os::fd::AsFd::as_fd(&netns))
        .map_err(|e| format!("bring loopback up in the network namespace of {pid}: {e}"))
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

fn delete(id: &str, root: &Path, bundle: &Path, shim_dead: bool) -> Reply {
    let dir = root.join(id);
    // First what a dead shim's helpers left running, or it may make the
    // container's cgroups again once they are removed.
    let orphans = if shim_dead {
        super::cleanup::orphans(id, root)
    } else {
        0
    };
    if orphans > 0 {
        log::warn!("{id}: killed {orphans} processes left by the helpers of a dead shim");
    }
    // Whether libcontainer read the container's state (then, under the
    // systemd driver, its scope may hold processes only it can stop).
    let mut loaded = false;
    let result = if dir.is_dir() && !dir.join("state.json").exists() {
        Err(HelperError::Failed(format!("container {id} has no state")))
    } else {
        match load(root, id) {
            Ok(mut c) => {
                loaded = true;
                c.delete(true).map_err(|e| lc_error("delete", id, e))
            }
            Err(HelperError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    };
    // What libcontainer could not delete is removed without it: a create
    // or an exec cut short by its shim's death can leave no state, a state
    // file torn mid-write (libcontainer truncates, then writes), or a
    // process that was still joining the container's cgroups when the ones
    // there were killed. Only what cannot be removed is an error.
    let result = result.or_else(|e| {
        super::cleanup::cut_short(id, &dir, bundle, loaded)
            .map(|()| log::warn!("{e}: cleaned up without libcontainer"))
            .map_err(|left| HelperError::Failed(format!("{e}; then {left}")))
    });
    unmount_rootfs(&bundle.join("rootfs"));
    result.map(|_| None)
}

//! What a helper's delete does when libcontainer cannot: the cleanup after
//! a create or an exec that was cut short (its helper killed with its
//! shim), without libcontainer's state.

use std::path::{Path, PathBuf};

/// Cleans up after a create or exec that was cut short (its helper killed
/// with its shim), where libcontainer's delete could not: the container's
/// state directory `dir`, and its cgroups (named by the bundle's
/// cgroupsPath, under the cgroupfs driver) with any process in them. What
/// could not be removed is the error. Under the systemd driver a container
/// whose state was read (`created`) may have a scope with processes in it:
/// its state is then kept for a delete that can stop them.
pub fn cut_short(id: &str, dir: &Path, bundle: &Path, created: bool) -> Result<(), String> {
    let mut left = Vec::new();
    let path = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|spec| {
            spec.pointer("/linux/cgroupsPath")?
                .as_str()
                .map(str::to_string)
        });
    // A systemd slice:prefix:name has no scope before the container exists:
    // the helper starts it then.
    if created && path.as_ref().is_some_and(|p| !p.starts_with('/')) {
        return Err(format!("{id}: its systemd scope may still run: state kept"));
    }
    if let Some(path) = path.filter(|p| p.starts_with('/')) {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for cg in cgroup_dirs(&mountinfo, &path) {
            if let Err(e) = empty_and_remove(&cg) {
                left.push(format!("{}: {e}", cg.display()));
            }
        }
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            left.push(format!("{}: {e}", dir.display()))
        }
        _ => {}
    }
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("{id}: left {}", left.join(", ")))
    }
}

/// `path` in every cgroup hierarchy of `mountinfo` (v1 controllers and the
/// unified one), where it exists.
fn cgroup_dirs(mountinfo: &str, path: &str) -> Vec<PathBuf> {
    let rel = path.trim_start_matches('/');
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            let mount = pre.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| Path::new(mount).join(rel))
        })
        .filter(|d| !rel.is_empty() && d.is_dir())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Kills every process in cgroup `dir` and removes it, for up to 3 s: a
/// killed process keeps a cgroup busy until it is gone, and one orphaned by
/// its shim's death is reaped by whoever adopted it (seen: a v1 `pids`
/// cgroup still busy after libcontainer's 400 ms of tries, empty and
/// removable later).
fn empty_and_remove(dir: &Path) -> std::io::Result<()> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        for pid in crate::cgroups::read_procs(dir).unwrap_or_default() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        match std::fs::remove_dir(dir) {
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY) && std::time::Instant::now() < until =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            done => return done,
        }
    }
}

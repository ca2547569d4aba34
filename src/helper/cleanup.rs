//! What a helper's delete does when libcontainer cannot: the cleanup after
//! a create that was cut short (its helper killed with its shim) before
//! libcontainer wrote the container's state.

use std::path::{Path, PathBuf};

/// Cleans up after a create that was cut short (its helper killed with its
/// shim) before libcontainer wrote the container's state: its state
/// directory `dir`, and the cgroups it may have made (named by the bundle's
/// cgroupsPath, under the cgroupfs driver) with any process in them, which
/// libcontainer cannot delete without that state.
pub fn cut_short(id: &str, dir: &Path, bundle: &Path) {
    let path = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|spec| {
            spec.pointer("/linux/cgroupsPath")?
                .as_str()
                .map(str::to_string)
        });
    // A systemd slice:prefix:name has no scope yet: the helper starts it
    // once the container exists.
    if let Some(path) = path.filter(|p| p.starts_with('/')) {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for cg in cgroup_dirs(&mountinfo, &path) {
            if let Err(e) = empty_and_remove(&cg) {
                log::warn!("{id}: {}: {e}", cg.display());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        log::warn!("{id}: {}: {e}", dir.display());
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

/// Kills every process in cgroup `dir` and removes it (waiting up to a
/// second for the processes to go).
fn empty_and_remove(dir: &Path) -> std::io::Result<()> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let pids = crate::cgroups::read_procs(dir).unwrap_or_default();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        if std::time::Instant::now() > until {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::remove_dir(dir)
}

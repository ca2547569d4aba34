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

/// Kills what is left of the helpers a dead shim started for container
/// `id` in state directory `root` (any operation but a delete), and waits
/// up to a second for them to end: the helper dies with its shim, but the
/// processes libcontainer forked from it do not, and one of them, the
/// intermediate process of a create or an exec, joins the container's
/// cgroups itself, making their directories again if they are gone (seen
/// in the kill soak as an empty v1 cgroup left after the delete). They are
/// known by their command line, the helper's request, which a fork keeps.
/// Their number.
pub fn orphans(id: &str, root: &Path) -> usize {
    let me = std::process::id();
    let found: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid as u32 != me)
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            // [exe, request]: the request is JSON from the shim.
            cmdline.split(|b| *b == 0).skip(1).any(|arg| {
                arg.first() == Some(&b'{')
                    && serde_json::from_slice::<super::Request>(arg).is_ok_and(|r| {
                        !matches!(r, super::Request::Delete { .. }) && r.container() == (id, root)
                    })
            })
        })
        .collect();
    for pid in &found {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::SIGKILL);
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    // Gone, or a zombie (its adopter reaps it): either way it acts no more.
    while found.iter().any(|pid| crate::sys::alive(*pid)) && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    found.len()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A process whose command line holds a helper's request for the
    /// container is killed; one for another container, or a delete, is not.
    #[test]
    fn orphans_are_the_helpers_of_this_container_alone() {
        let root = std::env::temp_dir().join(format!("tidal-orphans-{}", std::process::id()));
        let request = |op: &str, id: &str| {
            serde_json::json!({"op": op, "id": id, "root": root, "process": "/p", "console_socket": null, "bundle": "/b"})
                .to_string()
        };
        // A shell waiting on its stdin, with no child of its own.
        let spawn = |req: String| {
            std::process::Command::new("sh")
                .args(["-c", "read x", "helper"])
                .arg(req)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        let id = format!("orph{}", std::process::id());
        let mut mine = spawn(request("exec", &id));
        let mut other = spawn(request("exec", &format!("{id}x")));
        let mut deleting = spawn(request("delete", &id));
        // Until each has exec'd sh with its request.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let ready = |c: &std::process::Child| {
            std::fs::read(format!("/proc/{}/cmdline", c.id()))
                .is_ok_and(|l| l.windows(4).any(|w| w == b"\"op\""))
        };
        while ![&mine, &other, &deleting].iter().all(|c| ready(c)) {
            assert!(
                std::time::Instant::now() < until,
                "the children did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(orphans(&id, &root), 1);
        let status = mine.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        for c in [&mut other, &mut deleting] {
            assert!(
                c.try_wait().unwrap().is_none(),
                "killed one not of the container"
            );
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!(orphans(&id, &root), 0);
    }
}

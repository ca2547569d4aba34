//! Finding a container's cgroups (v1 and v2) and reading them: the pids in
//! it, containerd's Metrics (`stats.rs`), OOM notifications (`oom.rs`).

pub mod stats;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Where one process's cgroups are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// cgroup v1: one directory per controller (`cpu`, `cpuacct`, `memory`,
    /// `pids`, ...).
    V1(BTreeMap<String, PathBuf>),
    /// cgroup v2: one directory.
    V2(PathBuf),
}

impl Cgroup {
    /// Resolves the cgroup of `pid` on this host.
    pub fn of_pid(pid: i32) -> io::Result<Self> {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        resolve(&cgroup, &mountinfo)
    }

    /// The directory of controller `name` (v1), or the one directory (v2).
    pub fn dir(&self, name: &str) -> Option<&Path> {
        match self {
            Cgroup::V1(dirs) => dirs.get(name).map(PathBuf::as_path),
            Cgroup::V2(dir) => Some(dir),
        }
    }

    /// The directory whose `cgroup.procs` lists every process of the group.
    fn procs_dir(&self) -> Option<&Path> {
        self.dir("pids").or_else(|| self.dir("memory"))
    }
}

/// Resolves a `/proc/PID/cgroup` text against `/proc/self/mountinfo`. A v1
/// controller mounted anywhere wins over the unified hierarchy, as on hybrid
/// hosts the unified mount carries no controllers.
pub fn resolve(proc_cgroup: &str, mountinfo: &str) -> io::Result<Cgroup> {
    let mounts: Vec<(String, String, String)> = mountinfo
        .lines()
        .filter_map(|l| {
            // ... mount-point ... - fstype source super-options
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            Some((
                pre.get(4)?.to_string(),
                post.first()?.to_string(),
                post.get(2).unwrap_or(&"").to_string(),
            ))
        })
        .collect();
    let mut v1 = BTreeMap::new();
    let mut unified = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if ctrls.is_empty() {
            if let Some((mp, _, _)) = mounts.iter().find(|(_, t, _)| t == "cgroup2") {
                unified = Some(Path::new(mp).join(rel));
            }
            continue;
        }
        for ctrl in ctrls.split(',') {
            let mount = mounts
                .iter()
                .find(|(_, t, opts)| t == "cgroup" && opts.split(',').any(|o| o == ctrl));
            if let Some((mp, _, _)) = mount {
                v1.insert(ctrl.to_string(), Path::new(mp).join(rel));
            }
        }
    }
    if v1.contains_key("memory") || v1.contains_key("pids") {
        return Ok(Cgroup::V1(v1));
    }
    unified
        .map(Cgroup::V2)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup found for process"))
}

/// Every pid in the cgroup of `pid`.
pub fn pids_of(pid: i32) -> io::Result<Vec<i32>> {
    let cg = Cgroup::of_pid(pid)?;
    let dir = cg
        .procs_dir()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no pids or memory cgroup"))?;
    read_procs(dir)
}

/// Writes `pid` into the cgroup it is already in, over and over until
/// `done` (at most `limit`): moves that change nothing, made for their side
/// effect. The kernel guards every move between cgroups with one global lock
/// (`cgroup_threadgroup_rwsem`) whose first writer after a quiet spell waits
/// out an RCU grace period (8-20 ms measured here); writers that follow while
/// it is still warm (within about a grace period of the last one) get it at
/// once. A helper's child moves itself into the container's cgroup some
/// milliseconds after the helper starts: priming the lock as the helper
/// starts overlaps that wait with the helper's own start, and keeping it warm
/// until the helper answers spares the child the wait however slow the start.
/// `pid` is a helper tidal started and nothing else moves, so the cgroup read
/// is the one written. Each repeat costs the node a few microseconds in
/// which no process forks or exits.
pub fn prime_attach_lock(
    pid: i32,
    done: &std::sync::atomic::AtomicBool,
    limit: std::time::Duration,
) -> io::Result<()> {
    use std::io::Write;
    let cg = Cgroup::of_pid(pid)?;
    let dir = cg
        .procs_dir()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no pids or memory cgroup"))?;
    let mut procs = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))?;
    let pid = pid.to_string();
    let until = std::time::Instant::now() + limit;
    while !done.load(std::sync::atomic::Ordering::Relaxed) && std::time::Instant::now() < until {
        procs.write_all(pid.as_bytes())?;
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Ok(())
}

pub fn read_procs(dir: &Path) -> io::Result<Vec<i32>> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
25 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 30 0:33 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 30 0:36 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    #[test]
    fn hybrid_host_resolves_to_v1_controllers() {
        let proc_cgroup = "9:pids:/ns/c1\n4:memory:/ns/c1\n2:cpu:/ns/c1\n0::/ns/c1\n";
        let cg = resolve(proc_cgroup, HYBRID_MOUNTINFO).unwrap();
        assert!(matches!(cg, Cgroup::V1(_)), "{cg:?}");
        assert_eq!(
            cg.dir("memory").unwrap(),
            Path::new("/sys/fs/cgroup/memory/ns/c1")
        );
        assert_eq!(
            cg.dir("pids").unwrap(),
            Path::new("/sys/fs/cgroup/pids/ns/c1")
        );
        assert_eq!(
            cg.dir("cpu").unwrap(),
            Path::new("/sys/fs/cgroup/cpu/ns/c1")
        );
        assert_eq!(cg.dir("blkio"), None);
    }

    #[test]
    fn unified_host_resolves_to_v2() {
        let mountinfo = "25 1 254:0 / / rw - ext4 /dev/vda rw\n\
                         30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(
            resolve("0::/kubepods/pod1/c1\n", mountinfo).unwrap(),
            Cgroup::V2("/sys/fs/cgroup/kubepods/pod1/c1".into())
        );
    }

    #[test]
    fn no_cgroup_is_a_clear_error() {
        let err = resolve("", HYBRID_MOUNTINFO).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn procs_are_read_from_a_fake_cgroupfs() {
        let dir = crate::testfs::FakeDir::new("procs", &[]);
        std::fs::write(dir.join("cgroup.procs"), "12\n34\n").unwrap();
        assert_eq!(read_procs(&dir).unwrap(), vec![12, 34]);
    }
}

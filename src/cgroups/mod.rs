//! A container's cgroup behind one interface, whichever hierarchy the node
//! has: `Hierarchy`, implemented for cgroup v1 (`v1.rs`, a directory per
//! controller) and v2 (`v2.rs`, one directory), chosen at run time from a
//! process's `/proc/PID/cgroup` and the mount table (`Cgroup::of_pid`).
//! Everything that differs between the two (file names, units, "max" and
//! -1, memsw and swap.max, reclaim, how OOM kills are announced) lives in
//! those two files; callers hold a `Cgroup` and never ask which it is.
//!
//! Also here: the one reader of a container's live values (`live.rs`:
//! limits, usage, pressure; `stats.rs`: containerd's Metrics), its
//! resources in OCI's terms (`resources.rs`), its files kept open
//! (`files.rs`), the pids in it, and priming the kernel's attach lock.

pub mod driver;
pub(crate) mod files;
pub(crate) mod live;
pub(crate) mod resources;
pub mod stats;
pub(crate) mod systemd;
pub(crate) mod v1;
pub(crate) mod v2;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use files::{FileError, Files};
pub use live::{read_limits, read_limits_with, read_stats_with, read_usage, read_usage_with};
pub use live::{Limits, Pressure, Psi, PsiLine, Stats, Throttling, Usage};
pub use resources::{Limit, Unsupported, Update, Write};

use containerd_shim::protos::protobuf::well_known_types::any::Any;

/// Which cgroup hierarchy a cgroup is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// How the kernel tells of a cgroup's OOM kills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OomSource {
    /// An eventfd registered through `event_control` (`cgroup.event_control`)
    /// on `control` (`memory.oom_control`), signalled on each OOM; also when
    /// the cgroup `dir` is removed.
    EventFd {
        dir: PathBuf,
        control: PathBuf,
        event_control: PathBuf,
    },
    /// The `oom_kill` count in `events` (`memory.events`), which the kernel
    /// modifies (inotify IN_MODIFY) when it changes.
    Events { events: PathBuf },
}

/// What one kind of cgroup hierarchy does with a container's cgroup. The
/// values it reads and writes are in OCI's terms (`Update`, `Limits`,
/// `Usage`); their files and units are its own.
pub trait Hierarchy: fmt::Debug + Send + Sync {
    fn version(&self) -> Version;

    /// The directory of controller `name` (v1), or the one directory (v2).
    fn dir(&self, name: &str) -> Option<&Path>;

    /// The directory whose `cgroup.procs` lists every process of the group.
    fn procs_dir(&self) -> Option<&Path>;

    /// CPU and memory limits as the cgroup has them now.
    fn limits(&self, files: &mut Files) -> Limits;

    /// CPU time and memory in use.
    fn usage(&self, files: &mut Files) -> Usage;

    /// Memory in use, in bytes; None if it cannot be read.
    fn memory_usage(&self, files: &mut Files) -> Option<u64>;

    /// The counters and gauges the policy engine's collector reads at each
    /// tick, each file read and parsed once; all but the inactive file
    /// cache (`inactive_file`: left None), which is in the costliest file
    /// to read (`read_stats_with` reads both).
    fn stats(&self, files: &mut Files) -> Stats;

    /// The inactive file cache in bytes, from `memory.stat` (v1
    /// `total_inactive_file`, v2 `inactive_file`): the kernel formats all
    /// of that file's few dozen values for each read, about ten times the
    /// cost of reading a one-value file.
    fn inactive_file(&self, files: &mut Files) -> Option<u64>;

    /// containerd's cgroup Metrics, packed as Task.Stats returns them.
    fn metrics(&self, files: &mut Files) -> io::Result<Any>;

    /// The values of the fields set in `mask` (at least; callers restrict).
    fn read(&self, mask: &Update, files: &mut Files) -> Update;

    /// The fields an update `u` may write, `u`'s own and any that follow
    /// them (on v1 memsw follows a new memory limit in a container without
    /// swap), to read before and after it for its revision.
    fn written(&self, u: &Update) -> Update;

    /// The writes that carry out `u`, in an order the kernel accepts
    /// whether limits grow or shrink, reading current values where the order
    /// depends on them.
    fn plan(&self, u: &Update, files: &mut Files) -> Result<Vec<Write>, Unsupported>;

    /// Asks the kernel to reclaim `bytes` of the cgroup's memory now; false
    /// when it cannot be asked (v1 reclaims when a lower limit is written,
    /// or refuses it).
    fn reclaim(&self, bytes: u64, files: &mut Files) -> bool;

    /// Whether the failed write `w` was the kernel refusing a memory limit
    /// below what the cgroup uses.
    fn refused_below_usage(&self, w: &Write, e: &FileError) -> bool;

    /// How OOM kills in the cgroup are announced.
    fn oom_source(&self) -> io::Result<OomSource>;
}

/// One process's cgroup, of whichever hierarchy; cheap to clone.
#[derive(Clone)]
pub struct Cgroup(Arc<dyn Hierarchy>);

impl Cgroup {
    /// Resolves the cgroup of `pid` on this host.
    pub fn of_pid(pid: i32) -> io::Result<Self> {
        let cgroup = files::read_small(Path::new(&format!("/proc/{pid}/cgroup")))?;
        let mountinfo = files::read_small(Path::new("/proc/self/mountinfo"))?;
        resolve(&cgroup, &mountinfo)
    }

    /// A cgroup v1 cgroup: controller name -> its directory.
    pub fn v1(dirs: BTreeMap<String, PathBuf>) -> Self {
        Cgroup(Arc::new(v1::V1::new(dirs)))
    }

    /// A cgroup v1 cgroup on a hybrid host that also has its own cgroup
    /// `unified` in the unified hierarchy (read for pressure only).
    pub fn hybrid(dirs: BTreeMap<String, PathBuf>, unified: PathBuf) -> Self {
        Cgroup(Arc::new(v1::V1::hybrid(dirs, unified)))
    }

    /// A cgroup v2 cgroup in `dir`.
    pub fn v2(dir: impl Into<PathBuf>) -> Self {
        Cgroup(Arc::new(v2::V2::new(dir.into())))
    }
}

impl std::ops::Deref for Cgroup {
    type Target = dyn Hierarchy;
    fn deref(&self) -> &(dyn Hierarchy + 'static) {
        &*self.0
    }
}

impl fmt::Debug for Cgroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn no_procs_dir() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "no pids or memory cgroup")
}

/// Resolves a `/proc/PID/cgroup` text against `/proc/self/mountinfo`. A v1
/// controller mounted anywhere wins over the unified hierarchy, as on hybrid
/// hosts the unified mount carries no controllers; there the process's
/// unified cgroup is kept too (for its pressure) when it is the process's own:
/// not the root (where processes the runtime did not place stay, and whose
/// pressure is the whole node's) and at the same path as its memory or cpu
/// controller's cgroup (not one it inherited from, say, containerd's).
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
    let mut v1_paths = Vec::new();
    let mut unified = None;
    let mut unified_rel = "";
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if ctrls.is_empty() {
            if let Some((mp, _, _)) = mounts.iter().find(|(_, t, _)| t == "cgroup2") {
                unified = Some(Path::new(mp).join(rel));
                unified_rel = rel;
            }
            continue;
        }
        if ctrls.split(',').any(|c| c == "memory" || c == "cpu") {
            v1_paths.push(rel);
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
        return Ok(match unified {
            Some(dir) if !unified_rel.is_empty() && v1_paths.contains(&unified_rel) => {
                Cgroup::hybrid(v1, dir)
            }
            _ => Cgroup::v1(v1),
        });
    }
    unified
        .map(Cgroup::v2)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup found for process"))
}

/// Every pid in the cgroup of `pid`.
pub fn pids_of(pid: i32) -> io::Result<Vec<i32>> {
    pids(&Cgroup::of_pid(pid)?)
}

/// Every pid in `cg`.
pub fn pids(cg: &Cgroup) -> io::Result<Vec<i32>> {
    read_procs(cg.procs_dir().ok_or_else(no_procs_dir)?)
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
    let path = cg
        .procs_dir()
        .ok_or_else(no_procs_dir)?
        .join("cgroup.procs");
    let pid = pid.to_string();
    let failed = |source| FileError::Write {
        path: path.clone(),
        value: pid.clone(),
        source,
    };
    let mut procs = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(failed)?;
    let until = std::time::Instant::now() + limit;
    while !done.load(std::sync::atomic::Ordering::Relaxed) && std::time::Instant::now() < until {
        procs.write_all(pid.as_bytes()).map_err(failed)?;
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Ok(())
}

/// The pids in `dir`'s `cgroup.procs`.
pub fn read_procs(dir: &Path) -> io::Result<Vec<i32>> {
    let text = files::read_small(&dir.join("cgroup.procs"))?;
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
        assert_eq!(cg.version(), Version::V1, "{cg:?}");
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
    fn hybrid_host_keeps_the_containers_own_unified_cgroup_for_pressure() {
        let pressure = |proc_cgroup: &str| {
            let cg = resolve(proc_cgroup, HYBRID_MOUNTINFO).unwrap();
            assert_eq!(cg.version(), Version::V1);
            format!("{cg:?}")
        };
        let own = pressure("4:memory:/ns/c1\n2:cpu:/ns/c1\n0::/ns/c1\n");
        assert!(
            own.contains("unified: Some(\"/sys/fs/cgroup/unified/ns/c1\")"),
            "{own}"
        );
        // The unified root is the whole node's; another path is not the
        // container's own (inherited from whoever started it).
        for not_own in [
            "4:memory:/ns/c1\n2:cpu:/ns/c1\n0::/\n",
            "4:memory:/ns/c1\n2:cpu:/ns/c1\n0::/system.slice/containerd.service\n",
        ] {
            let cg = pressure(not_own);
            assert!(cg.contains("unified: None"), "{not_own}: {cg}");
        }
    }

    #[test]
    fn unified_host_resolves_to_v2() {
        let mountinfo = "25 1 254:0 / / rw - ext4 /dev/vda rw\n\
                         30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate";
        let cg = resolve("0::/kubepods/pod1/c1\n", mountinfo).unwrap();
        assert_eq!(cg.version(), Version::V2);
        let dir = Path::new("/sys/fs/cgroup/kubepods/pod1/c1");
        assert_eq!((cg.dir("memory"), cg.procs_dir()), (Some(dir), Some(dir)));
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
        assert_eq!(pids(&Cgroup::v2(dir.path())).unwrap(), vec![12, 34]);
        // v1: from the pids controller, else the memory one.
        let v1 = |ctrl: &str| Cgroup::v1([(ctrl.to_string(), dir.path())].into());
        assert_eq!(pids(&v1("memory")).unwrap(), vec![12, 34]);
        let err = pids(&v1("cpu")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}

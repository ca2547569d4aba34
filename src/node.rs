//! The containers tidal runs on this node, found through its state directory,
//! with their live cgroup limits and usage.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cgroups::Cgroup;

/// Live CPU and memory limits of a container, as its cgroup has them now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// CFS quota in microseconds per period; None means unlimited.
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: u64,
    pub cpuset: String,
    /// None means unlimited.
    pub memory_bytes: Option<u64>,
}

impl Limits {
    /// The quota as millicores ("how many CPUs"), if limited.
    pub fn cpu_millis(&self) -> Option<u64> {
        let q = self.cpu_quota_us?;
        (self.cpu_period_us > 0).then(|| q * 1000 / self.cpu_period_us)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub cpu_ns: u64,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerInfo {
    pub id: String,
    pub namespace: String,
    pub pid: i32,
    pub status: String,
    pub bundle: PathBuf,
    pub limits: Limits,
    pub usage: Usage,
}

impl ContainerInfo {
    /// The ttrpc address of the shim that owns this container.
    pub fn shim_address(&self) -> io::Result<String> {
        std::fs::read_to_string(self.bundle.join("address")).map(|s| s.trim().to_string())
    }
}

#[derive(serde::Deserialize)]
struct State {
    id: String,
    status: String,
    pid: Option<i32>,
    bundle: PathBuf,
}

/// Where each container's state lives: (namespace, id, directory), without
/// reading anything else.
pub fn dirs(state_dir: &Path) -> io::Result<Vec<(String, String, PathBuf)>> {
    let mut out = Vec::new();
    let namespaces = match std::fs::read_dir(state_dir) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for ns in namespaces.flatten() {
        let name = ns.file_name().to_string_lossy().into_owned();
        if name == "s" || name.starts_with('.') || !ns.path().is_dir() {
            continue;
        }
        for c in std::fs::read_dir(ns.path())?.flatten() {
            let id = c.file_name().to_string_lossy().into_owned();
            if !id.starts_with('.') && c.path().is_dir() {
                out.push((name.clone(), id, c.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every container under `state_dir` (`<state_dir>/<namespace>/<id>/state.json`).
pub fn list(state_dir: &Path) -> io::Result<Vec<ContainerInfo>> {
    Ok(dirs(state_dir)?
        .into_iter()
        .filter_map(|(ns, _, dir)| read_one(&ns, &dir))
        .collect())
}

/// Finds container `id`, in `namespace` if given; reads only its own cgroups.
pub fn find(state_dir: &Path, namespace: Option<&str>, id: &str) -> io::Result<ContainerInfo> {
    crate::ids::validate("container id", id)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let matches: Vec<ContainerInfo> = dirs(state_dir)?
        .into_iter()
        .filter(|(ns, cid, _)| cid == id && namespace.is_none_or(|n| n == ns))
        .filter_map(|(ns, _, dir)| read_one(&ns, &dir))
        .collect();
    match matches.len() {
        1 => Ok(matches.into_iter().next().unwrap()),
        0 => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no tidal container {id:?} on this node"),
        )),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("container {id:?} exists in several namespaces: name one with -n"),
        )),
    }
}

fn read_one(namespace: &str, dir: &Path) -> Option<ContainerInfo> {
    let state: State = serde_json::from_slice(&std::fs::read(dir.join("state.json")).ok()?).ok()?;
    let pid = state.pid.unwrap_or(0);
    let alive = pid > 0 && Path::new(&format!("/proc/{pid}")).exists();
    let status = if alive {
        state.status
    } else {
        "stopped".into()
    };
    let (limits, usage) = match alive.then(|| Cgroup::of_pid(pid).ok()).flatten() {
        Some(cg) => (read_limits(&cg), read_usage(&cg)),
        None => Default::default(),
    };
    Some(ContainerInfo {
        id: state.id,
        namespace: namespace.to_string(),
        pid,
        status,
        bundle: state.bundle,
        limits,
        usage,
    })
}

fn read(dir: Option<&Path>, file: &str) -> Option<String> {
    std::fs::read_to_string(dir?.join(file))
        .ok()
        .map(|s| s.trim().to_string())
}

/// A v1 memory limit this large means "no limit".
const V1_UNLIMITED: u64 = 1 << 62;

pub fn read_limits(cg: &Cgroup) -> Limits {
    match cg {
        Cgroup::V1(_) => {
            let cpu = cg.dir("cpu");
            let quota: i64 = read(cpu, "cpu.cfs_quota_us")
                .and_then(|s| s.parse().ok())
                .unwrap_or(-1);
            Limits {
                cpu_quota_us: u64::try_from(quota).ok(),
                cpu_period_us: read(cpu, "cpu.cfs_period_us")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                cpuset: read(cg.dir("cpuset"), "cpuset.cpus").unwrap_or_default(),
                memory_bytes: read(cg.dir("memory"), "memory.limit_in_bytes")
                    .and_then(|s| s.parse().ok())
                    .filter(|&b| b < V1_UNLIMITED),
            }
        }
        Cgroup::V2(dir) => {
            let d = Some(dir.as_path());
            let max = read(d, "cpu.max").unwrap_or_default();
            let mut parts = max.split_whitespace();
            let quota = parts.next().and_then(|q| q.parse().ok());
            Limits {
                cpu_quota_us: quota,
                cpu_period_us: parts.next().and_then(|p| p.parse().ok()).unwrap_or(100_000),
                cpuset: read(d, "cpuset.cpus.effective").unwrap_or_default(),
                memory_bytes: read(d, "memory.max").and_then(|s| s.parse().ok()),
            }
        }
    }
}

pub fn read_usage(cg: &Cgroup) -> Usage {
    match cg {
        Cgroup::V1(_) => Usage {
            cpu_ns: read(cg.dir("cpuacct"), "cpuacct.usage")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            memory_bytes: read(cg.dir("memory"), "memory.usage_in_bytes")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        },
        Cgroup::V2(dir) => {
            let d = Some(dir.as_path());
            let usec = read(d, "cpu.stat")
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("usage_usec ")?.parse::<u64>().ok())
                })
                .unwrap_or(0);
            Usage {
                cpu_ns: usec * 1000,
                memory_bytes: read(d, "memory.current")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn v2_limits_and_usage() {
        let dir = crate::testfs::FakeDir::new(
            "v2",
            &[
                ("cpu.max", "50000 100000\n"),
                ("memory.max", "268435456\n"),
                ("cpuset.cpus.effective", "0-1\n"),
                ("cpu.stat", "usage_usec 2000\nuser_usec 1500\n"),
                ("memory.current", "1234\n"),
            ],
        );
        let cg = Cgroup::V2(dir.path());
        let l = read_limits(&cg);
        assert_eq!(l.cpu_millis(), Some(500));
        assert_eq!(l.memory_bytes, Some(256 << 20));
        assert_eq!(l.cpuset, "0-1");
        assert_eq!(
            read_usage(&cg),
            Usage {
                cpu_ns: 2_000_000,
                memory_bytes: 1234
            }
        );
        std::fs::write(dir.join("cpu.max"), "max 100000\n").unwrap();
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        let l = read_limits(&cg);
        assert_eq!(
            (l.cpu_quota_us, l.memory_bytes),
            (None, None),
            "max is unlimited"
        );
    }

    #[test]
    fn v1_limits_with_unlimited_values() {
        let cpu = crate::testfs::FakeDir::new(
            "v1cpu",
            &[
                ("cpu.cfs_quota_us", "-1\n"),
                ("cpu.cfs_period_us", "100000\n"),
            ],
        );
        let mem = crate::testfs::FakeDir::new(
            "v1mem",
            &[("memory.limit_in_bytes", "9223372036854771712\n")],
        );
        let cg = Cgroup::V1(BTreeMap::from([
            ("cpu".to_string(), cpu.path()),
            ("memory".to_string(), mem.path()),
        ]));
        let l = read_limits(&cg);
        assert_eq!(l.cpu_quota_us, None);
        assert_eq!(l.cpu_period_us, 100_000);
        assert_eq!(l.memory_bytes, None);
    }

    #[test]
    fn containers_are_listed_from_the_state_dir() {
        let root = crate::testfs::FakeDir::new("list", &[]);
        let c = root.join("default").join("web");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(
            c.join("state.json"),
            r#"{"ociVersion":"1.1.0","id":"web","status":"running","pid":999999999,"bundle":"/b/web"}"#,
        )
        .unwrap();
        std::fs::create_dir_all(root.join("s")).unwrap(); // shim sockets are skipped
        let all = list(&root).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].id, "web");
        assert_eq!(all[0].status, "stopped", "pid is not alive");
        assert_eq!(
            find(&root, Some("default"), "web").unwrap().bundle,
            PathBuf::from("/b/web")
        );
        let err = find(&root, None, "nope").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(find(&root, None, "../etc").is_err());
    }
}

//! `tidalctl node`: this node's cgroups as tidal sees them, offline: the
//! hierarchy and its controllers, systemd and its bus, and which cgroup
//! drivers tidal can give a container here (with the reason when not), so
//! an operator can check a node against kubelet's `cgroupDriver` and
//! containerd's `SystemdCgroup` before scheduling pods on it.

use std::path::Path;

use serde::Serialize;

use super::cli::Output;
use crate::cgroups::driver::{self, Driver, Node, Scope};

#[derive(Debug, Serialize)]
pub struct Report {
    /// "v2" or "v1".
    pub cgroup: &'static str,
    /// "unified", "hybrid" (v1 controllers beside an empty v2 mount) or
    /// "legacy".
    pub hierarchy: &'static str,
    pub controllers: Vec<String>,
    /// systemd runs as init.
    pub systemd: bool,
    /// The system bus (or systemd's private socket) answered; the error
    /// otherwise, when systemd runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dbus: Option<String>,
    pub drivers: Vec<DriverReport>,
}

#[derive(Debug, Serialize)]
pub struct DriverReport {
    pub name: &'static str,
    pub usable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not: Option<String>,
}

impl Report {
    pub fn here() -> Report {
        let node = Node::here();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        Report::of(node, &mounts, Path::new("/sys/fs/cgroup"), || {
            crate::dbus::Connection::system()
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn of(
        node: Node,
        mounts: &str,
        root: &Path,
        bus: impl FnOnce() -> Result<(), String>,
    ) -> Report {
        let mut v1 = Vec::new();
        let mut v2_mount = false;
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.get(2) {
                Some(&"cgroup") => {
                    let opts = f.get(3).unwrap_or(&"");
                    v1.extend(
                        opts.split(',')
                            .filter(|o| is_controller(o))
                            .map(String::from),
                    );
                }
                Some(&"cgroup2") => v2_mount = true,
                _ => {}
            }
        }
        let (hierarchy, controllers) = if node.unified {
            let c = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            ("unified", c.split_whitespace().map(String::from).collect())
        } else {
            v1.sort();
            v1.dedup();
            (if v2_mount { "hybrid" } else { "legacy" }, v1)
        };
        let dbus = node.systemd.then(|| match bus() {
            Ok(()) => "reachable".to_string(),
            Err(e) => e,
        });
        let systemd = Driver::Systemd(Scope {
            slice: "kubepods.slice".into(),
            unit: "cri-containerd-ID.scope".into(),
        });
        let why_not = driver::check(&systemd, node, "kubelet's cgroupDriver: systemd")
            .err()
            .map(|e| e.to_string());
        Report {
            cgroup: node.version(),
            hierarchy,
            controllers,
            systemd: node.systemd,
            dbus,
            drivers: vec![
                DriverReport {
                    name: "cgroupfs",
                    usable: true,
                    why_not: None,
                },
                DriverReport {
                    name: "systemd",
                    usable: why_not.is_none(),
                    why_not,
                },
            ],
        }
    }
}

fn is_controller(opt: &str) -> bool {
    matches!(
        opt,
        "cpu"
            | "cpuacct"
            | "cpuset"
            | "memory"
            | "pids"
            | "blkio"
            | "freezer"
            | "devices"
            | "hugetlb"
            | "net_cls"
            | "net_prio"
            | "perf_event"
            | "rdma"
            | "misc"
    )
}

pub fn render(r: &Report, output: Output) -> String {
    if output == Output::Json {
        return serde_json::to_string_pretty(r).unwrap() + "\n";
    }
    let mut s = format!(
        "cgroup       {} ({}), controllers: {}\n",
        r.cgroup,
        r.hierarchy,
        if r.controllers.is_empty() {
            "none".to_string()
        } else {
            r.controllers.join(" ")
        }
    );
    s += &format!(
        "systemd      {}\n",
        match (&r.systemd, &r.dbus) {
            (false, _) => "not running".to_string(),
            (true, Some(d)) => format!("running, D-Bus {d}"),
            (true, None) => "running".to_string(),
        }
    );
    for d in &r.drivers {
        let state = match &d.why_not {
            None => "usable".to_string(),
            Some(why) => format!("not usable: {why}"),
        };
        s += &format!("driver       {:<9} {state}\n", d.name);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hybrid_node_without_systemd_offers_cgroupfs_only() {
        let mounts = "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
                      cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,memory 0 0\n\
                      cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n";
        let node = Node {
            systemd: false,
            unified: false,
        };
        let r = Report::of(node, mounts, Path::new("/nonexistent"), || {
            panic!("no bus asked")
        });
        assert_eq!((r.cgroup, r.hierarchy), ("v1", "hybrid"));
        assert_eq!(r.controllers, ["cpu", "cpuacct", "memory"]);
        let text = render(&r, Output::Table);
        assert!(text.contains("cgroupfs  usable"), "{text}");
        assert!(
            text.contains("systemd   not usable") && text.contains("systemd is not running"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&r, Output::Json)).unwrap();
        assert_eq!(json["drivers"][1]["usable"], false);
    }

    #[test]
    fn a_unified_node_with_systemd_offers_both_and_says_whether_its_bus_answers() {
        let root = std::env::temp_dir().join(format!("tidal-node-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("cgroup.controllers"), "cpuset cpu memory pids\n").unwrap();
        let node = Node {
            systemd: true,
            unified: true,
        };
        let r = Report::of(node, "", &root, || Err("no bus here".into()));
        assert_eq!((r.cgroup, r.hierarchy), ("v2", "unified"));
        assert_eq!(r.controllers, ["cpuset", "cpu", "memory", "pids"]);
        assert!(r.drivers.iter().all(|d| d.usable));
        let text = render(&r, Output::Table);
        assert!(text.contains("running, D-Bus no bus here"), "{text}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}

//! cgroup v1: a directory per controller (`cpu`, `cpuacct`, `cpuset`,
//! `memory`, `pids`, `blkio`, `hugetlb`). Limits are lifted with -1 and read
//! back as a huge number; swap is limited as memory plus swap (`memsw`),
//! which the kernel keeps at or above the memory limit at every step; memory
//! is reclaimed when a lower limit is written (or the write refused with
//! EBUSY); OOM kills are signalled on an eventfd registered on
//! `memory.oom_control`. The kernel keeps no pressure stall information per
//! v1 cgroup; on a hybrid host a container that also has its own cgroup in
//! the unified hierarchy (`unified`) has it there.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use containerd_shim::protos::protobuf::well_known_types::any::Any;

use super::files::keyed_values;
use super::live::{Pressure, Psi, Stats, Throttling};
use super::{
    FileError, Files, Hierarchy, Limit, Limits, OomSource, Unsupported, Update, Usage, Version,
    Write,
};

/// A process's cgroup v1 directories, by controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1 {
    dirs: BTreeMap<String, PathBuf>,
    /// Its own cgroup in the unified hierarchy of a hybrid host, if it has
    /// one: where its pressure is kept.
    unified: Option<PathBuf>,
}

/// Byte limits at or above this are "unlimited" (the kernel shows the
/// largest page-aligned i64).
const UNLIMITED: u64 = 1 << 62;

impl V1 {
    pub fn new(dirs: BTreeMap<String, PathBuf>) -> V1 {
        V1 {
            dirs,
            unified: None,
        }
    }

    /// `new`, with the process's own cgroup `unified` in the unified
    /// hierarchy of a hybrid host (for pressure only: it has no controllers).
    pub fn hybrid(dirs: BTreeMap<String, PathBuf>, unified: PathBuf) -> V1 {
        V1 {
            dirs,
            unified: Some(unified),
        }
    }

    /// Pressure from the unified cgroup, through `files`; None without one.
    fn pressure(&self, files: &mut Files) -> Option<Pressure> {
        let dir = self.unified.as_ref()?;
        let mut psi = |name: &str| Psi::parse(&files.read(&dir.join(name)).ok()?);
        Some(Pressure {
            cpu: psi("cpu.pressure"),
            memory: psi("memory.pressure"),
        })
    }

    /// The file `name` of controller `ctrl`, if the cgroup has the controller.
    fn file(&self, ctrl: &str, name: &str) -> Option<PathBuf> {
        self.dirs.get(ctrl).map(|d| d.join(name))
    }

    fn text(&self, files: &mut Files, ctrl: &str, name: &str) -> Option<String> {
        files.text(&self.file(ctrl, name)?)
    }

    fn num(&self, files: &mut Files, ctrl: &str, name: &str) -> Option<u64> {
        files.num(&self.file(ctrl, name)?)
    }

    /// A byte limit: -1 or a huge number is unlimited.
    fn limit(&self, files: &mut Files, ctrl: &str, name: &str) -> Option<Limit> {
        let t = self.text(files, ctrl, name)?;
        if t == "-1" {
            return Some(Limit::Max);
        }
        let v: u64 = t.parse().ok()?;
        Some(if v >= UNLIMITED {
            Limit::Max
        } else {
            Limit::Value(v)
        })
    }

    fn controller(&self, name: &str) -> Result<&Path, Unsupported> {
        self.dir(name).ok_or_else(|| Unsupported {
            field: "controller",
            value: name.to_string(),
            why: "this node's cgroup hierarchy has no such controller for the container".into(),
        })
    }

    /// The memory, memsw and soft-limit writes of `u`, in an order that
    /// keeps limit <= memsw at every step.
    fn plan_memory(&self, u: &Update, files: &mut Files) -> Result<Vec<Write>, Unsupported> {
        let mem = self.controller("memory")?;
        let limit_file = mem.join("memory.limit_in_bytes");
        let memsw = mem.join("memory.memsw.limit_in_bytes");
        let bytes = |files: &mut Files, path: &Path| {
            files
                .num(path)
                .filter(|&v| v < UNLIMITED)
                .unwrap_or(u64::MAX)
        };
        let has_swap_file = files.exists(&memsw);
        let cur_limit = bytes(files, &limit_file);
        let cur_swap = if has_swap_file {
            bytes(files, &memsw)
        } else {
            u64::MAX
        };
        let mut swap = u.memory_swap;
        if let (Some(s), false) = (swap, has_swap_file) {
            return Err(Unsupported {
                field: "memory swap",
                value: value(s),
                why: "swap accounting is off on this node (no memory.memsw.limit_in_bytes)".into(),
            });
        }
        // A container without swap (memsw == limit) keeps none when its limit moves.
        if swap.is_none() && has_swap_file && cur_swap == cur_limit && cur_limit != u64::MAX {
            swap = u.memory_limit;
        }
        let limit_w = u.memory_limit.map(|l| Write {
            path: limit_file,
            value: value(l),
        });
        let swap_w = swap.map(|s| Write {
            path: memsw,
            value: value(s),
        });
        // Raise memsw first when the new limit goes above the current memsw,
        // lower the limit first otherwise.
        let new_limit = u
            .memory_limit
            .map_or(cur_limit, |l| l.value().unwrap_or(u64::MAX));
        let ordered = if new_limit > cur_swap {
            [swap_w, limit_w]
        } else {
            [limit_w, swap_w]
        };
        let mut w: Vec<Write> = ordered.into_iter().flatten().collect();
        if let Some(r) = u.memory_reservation {
            w.push(write(mem, "memory.soft_limit_in_bytes", value(r)));
        }
        Ok(w)
    }
}

/// Writes `value` to `file` in `dir`.
fn write(dir: &Path, file: &str, value: String) -> Write {
    Write {
        path: dir.join(file),
        value,
    }
}

/// A limit as v1 spells it: -1 lifts it.
fn value(l: Limit) -> String {
    l.value()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "-1".into())
}

impl Hierarchy for V1 {
    fn version(&self) -> Version {
        Version::V1
    }

    fn dir(&self, name: &str) -> Option<&Path> {
        self.dirs.get(name).map(PathBuf::as_path)
    }

    fn procs_dir(&self) -> Option<&Path> {
        self.dir("pids").or_else(|| self.dir("memory"))
    }

    fn limits(&self, files: &mut Files) -> Limits {
        let quota: i64 = self
            .text(files, "cpu", "cpu.cfs_quota_us")
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1);
        Limits {
            cpu_quota_us: u64::try_from(quota).ok(),
            cpu_period_us: self.num(files, "cpu", "cpu.cfs_period_us").unwrap_or(0),
            cpuset: self
                .text(files, "cpuset", "cpuset.cpus")
                .unwrap_or_default(),
            memory_bytes: self
                .num(files, "memory", "memory.limit_in_bytes")
                .filter(|&b| b < UNLIMITED),
            cpu_shares: self.num(files, "cpu", "cpu.shares"),
            memory_high: None,
        }
    }

    fn usage(&self, files: &mut Files) -> Usage {
        Usage {
            cpu_ns: self.num(files, "cpuacct", "cpuacct.usage").unwrap_or(0),
            memory_bytes: self.memory_usage(files).unwrap_or(0),
        }
    }

    fn stats(&self, files: &mut Files) -> Stats {
        let throttling = self
            .file("cpu", "cpu.stat")
            .and_then(|p| files.read(&p).ok())
            .map(|text| {
                let [periods, throttled, time] =
                    keyed_values(&text, ["nr_periods", "nr_throttled", "throttled_time"]);
                Throttling {
                    periods: periods.unwrap_or(0),
                    throttled_periods: throttled.unwrap_or(0),
                    throttled_ns: time.unwrap_or(0),
                }
            });
        let keyed = |files: &mut Files, name: &str, key: &str| {
            let text = files.read(&self.file("memory", name)?).ok()?;
            keyed_values(&text, [key])[0]
        };
        Stats {
            cpu_ns: self.num(files, "cpuacct", "cpuacct.usage"),
            throttling,
            memory_bytes: self.memory_usage(files),
            inactive_file_bytes: None,
            oom_kills: keyed(files, "memory.oom_control", "oom_kill"),
            pressure: self.pressure(files),
        }
    }

    fn inactive_file(&self, files: &mut Files) -> Option<u64> {
        let text = files.read(&self.file("memory", "memory.stat")?).ok()?;
        keyed_values(&text, ["total_inactive_file"])[0]
    }

    fn memory_usage(&self, files: &mut Files) -> Option<u64> {
        self.num(files, "memory", "memory.usage_in_bytes")
    }

    fn metrics(&self, files: &mut Files) -> io::Result<Any> {
        super::stats::pack(
            "io.containerd.cgroups.v1.Metrics",
            &super::stats::v1_metrics(self, files),
        )
    }

    fn read(&self, mask: &Update, files: &mut Files) -> Update {
        let f = files;
        let mut u = Update::default();
        if mask.cpu_shares.is_some() {
            u.cpu_shares = self.num(f, "cpu", "cpu.shares");
        }
        if mask.cpu_period.is_some() {
            u.cpu_period = self.num(f, "cpu", "cpu.cfs_period_us");
        }
        if mask.cpu_quota.is_some() {
            u.cpu_quota = self.limit(f, "cpu", "cpu.cfs_quota_us");
        }
        if mask.cpuset_cpus.is_some() {
            u.cpuset_cpus = self.text(f, "cpuset", "cpuset.cpus");
        }
        if mask.cpuset_mems.is_some() {
            u.cpuset_mems = self.text(f, "cpuset", "cpuset.mems");
        }
        if mask.memory_limit.is_some() {
            u.memory_limit = self.limit(f, "memory", "memory.limit_in_bytes");
        }
        if mask.memory_swap.is_some() {
            u.memory_swap = self.limit(f, "memory", "memory.memsw.limit_in_bytes");
        }
        if mask.memory_reservation.is_some() {
            u.memory_reservation = self.limit(f, "memory", "memory.soft_limit_in_bytes");
        }
        if mask.pids_limit.is_some() {
            u.pids_limit = self
                .text(f, "pids", "pids.max")
                .and_then(|t| match t.as_str() {
                    "max" => Some(Limit::Max),
                    t => t.parse().ok().map(Limit::Value),
                });
        }
        u
    }

    fn written(&self, u: &Update) -> Update {
        let mut mask = u.clone();
        if mask.memory_limit.is_some() && mask.memory_swap.is_none() {
            mask.memory_swap = mask.memory_limit;
        }
        mask
    }

    fn plan(&self, u: &Update, files: &mut Files) -> Result<Vec<Write>, Unsupported> {
        let mut w = Vec::new();
        if u.cpu_shares.is_some() || u.cpu_quota.is_some() || u.cpu_period.is_some() {
            let cpu = self.controller("cpu")?;
            if let Some(s) = u.cpu_shares {
                w.push(write(cpu, "cpu.shares", s.to_string()));
            }
            // The period before the quota it is a share of.
            if let Some(p) = u.cpu_period {
                w.push(write(cpu, "cpu.cfs_period_us", p.to_string()));
            }
            if let Some(q) = u.cpu_quota {
                w.push(write(cpu, "cpu.cfs_quota_us", value(q)));
            }
        }
        if u.cpuset_cpus.is_some() || u.cpuset_mems.is_some() {
            let cs = self.controller("cpuset")?;
            if let Some(c) = &u.cpuset_cpus {
                w.push(write(cs, "cpuset.cpus", c.clone()));
            }
            if let Some(m) = &u.cpuset_mems {
                w.push(write(cs, "cpuset.mems", m.clone()));
            }
        }
        if u.memory_limit.is_some() || u.memory_swap.is_some() || u.memory_reservation.is_some() {
            w.extend(self.plan_memory(u, files)?);
        }
        if let Some(p) = u.pids_limit {
            // The pids controller spells "unlimited" as v2 does.
            let max = p.value().map_or("max".into(), |v| v.to_string());
            w.push(write(self.controller("pids")?, "pids.max", max));
        }
        if let Some(b) = u.blkio_weight {
            let blkio = self.controller("blkio")?;
            let file = if files.exists(&blkio.join("blkio.weight")) {
                "blkio.weight"
            } else {
                "blkio.bfq.weight"
            };
            w.push(write(blkio, file, b.to_string()));
        }
        if !u.hugetlb.is_empty() {
            let h = self.controller("hugetlb")?;
            for (size, limit) in &u.hugetlb {
                let file = format!("hugetlb.{size}.limit_in_bytes");
                w.push(write(h, &file, limit.to_string()));
            }
        }
        if let Some(k) = u.unified.keys().next() {
            return Err(Unsupported {
                field: "unified key",
                value: k.clone(),
                why: "cgroup v2 keys cannot be set on a cgroup v1 node".into(),
            });
        }
        Ok(w)
    }

    fn reclaim(&self, _bytes: u64, _files: &mut Files) -> bool {
        false
    }

    fn refused_below_usage(&self, w: &Write, e: &FileError) -> bool {
        e.raw_os_error() == Some(libc::EBUSY) && w.path.ends_with("memory.limit_in_bytes")
    }

    fn oom_source(&self) -> io::Result<OomSource> {
        let dir = self
            .dir("memory")
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no memory cgroup"))?;
        Ok(OomSource::EventFd {
            dir: dir.to_path_buf(),
            control: dir.join("memory.oom_control"),
            event_control: dir.join("cgroup.event_control"),
        })
    }
}

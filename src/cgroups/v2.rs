//! cgroup v2: one directory. Limits are lifted with "max"; the CPU quota and
//! period share one file (`cpu.max`); shares are a weight (`cpu.weight`,
//! 1..=10000); swap is limited alone (`memory.swap.max`), where OCI counts
//! memory plus swap; memory is reclaimed on request (`memory.reclaim`); OOM
//! kills are counted in `memory.events`; pressure stall information is kept
//! per cgroup (`*.pressure`).

use std::io;
use std::path::{Path, PathBuf};

use containerd_shim::protos::protobuf::well_known_types::any::Any;

use super::files::keyed_values;
use super::live::{Pressure, Psi, Stats, Throttling};
use super::{
    FileError, Files, Hierarchy, Limit, Limits, OomSource, Unsupported, Update, Usage, Version,
    Write,
};

/// A process's cgroup v2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2 {
    dir: PathBuf,
}

/// cgroup v1 cpu.shares to v2 cpu.weight, the kernel's and runc's mapping.
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// cpu.weight back to shares, rounded up so that shares -> weight -> shares
/// -> weight lands on the same weight.
pub fn weight_to_shares(weight: u64) -> u64 {
    2 + (weight.saturating_sub(1) * 262_142).div_ceil(9_999)
}

/// blkio weight (10..=1000) to v2 io.weight (1..=10000).
pub fn blkio_to_io_weight(w: u16) -> u64 {
    1 + (u64::from(w).saturating_sub(10) * 9999) / 990
}

/// A limit as v2 spells it: "max" lifts it.
fn value(l: Limit) -> String {
    l.value()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "max".into())
}

impl V2 {
    pub fn new(dir: PathBuf) -> V2 {
        V2 { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn text(&self, files: &mut Files, name: &str) -> Option<String> {
        files.text(&self.path(name))
    }

    fn num(&self, files: &mut Files, name: &str) -> Option<u64> {
        files.num(&self.path(name))
    }

    /// A limit that may be "max".
    fn limit(&self, files: &mut Files, name: &str) -> Option<Limit> {
        match self.text(files, name)?.as_str() {
            "max" => Some(Limit::Max),
            t => t.parse().ok().map(Limit::Value),
        }
    }

    /// `cpu.max` as (quota, period); None if unreadable.
    fn cpu_max(&self, files: &mut Files) -> Option<(String, Option<u64>)> {
        let max = self.text(files, "cpu.max")?;
        let mut p = max.split_whitespace();
        let quota = p.next()?.to_string();
        Some((quota, p.next().and_then(|p| p.parse().ok())))
    }
}

impl Hierarchy for V2 {
    fn version(&self) -> Version {
        Version::V2
    }

    fn dir(&self, _name: &str) -> Option<&Path> {
        Some(&self.dir)
    }

    fn procs_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn limits(&self, files: &mut Files) -> Limits {
        let (quota, period) = self.cpu_max(files).unwrap_or_default();
        Limits {
            cpu_quota_us: quota.parse().ok(),
            cpu_period_us: period.unwrap_or(100_000),
            cpuset: self
                .text(files, "cpuset.cpus.effective")
                .unwrap_or_default(),
            memory_bytes: self.num(files, "memory.max"),
            cpu_shares: self.num(files, "cpu.weight").map(weight_to_shares),
            memory_high: self.limit(files, "memory.high"),
        }
    }

    fn usage(&self, files: &mut Files) -> Usage {
        let usec = self
            .text(files, "cpu.stat")
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("usage_usec ")?.parse::<u64>().ok())
            })
            .unwrap_or(0);
        Usage {
            cpu_ns: usec * 1000,
            memory_bytes: self.memory_usage(files).unwrap_or(0),
        }
    }

    fn memory_usage(&self, files: &mut Files) -> Option<u64> {
        self.num(files, "memory.current")
    }

    fn stats(&self, files: &mut Files) -> Stats {
        // usage and throttling share cpu.stat (no throttling keys without
        // the cpu controller enabled for the cgroup).
        let cpu = self.text(files, "cpu.stat").map(|text| {
            keyed_values(
                &text,
                ["usage_usec", "nr_periods", "nr_throttled", "throttled_usec"],
            )
        });
        let [usage, periods, throttled, time] = cpu.unwrap_or_default();
        let throttling = periods.map(|periods| Throttling {
            periods,
            throttled_periods: throttled.unwrap_or(0),
            throttled_ns: time.unwrap_or(0).saturating_mul(1000),
        });
        let keyed = |files: &mut Files, name: &str, key: &str| {
            keyed_values(&self.text(files, name)?, [key])[0]
        };
        let mut psi = |name: &str| Psi::parse(&files.read(&self.path(name)).ok()?);
        let pressure = Pressure {
            cpu: psi("cpu.pressure"),
            memory: psi("memory.pressure"),
        };
        Stats {
            cpu_ns: usage.map(|u| u.saturating_mul(1000)),
            throttling,
            memory_bytes: self.memory_usage(files),
            inactive_file_bytes: None,
            oom_kills: keyed(files, "memory.events", "oom_kill"),
            pressure: (pressure.cpu.is_some() || pressure.memory.is_some()).then_some(pressure),
        }
    }

    fn inactive_file(&self, files: &mut Files) -> Option<u64> {
        keyed_values(&self.text(files, "memory.stat")?, ["inactive_file"])[0]
    }

    fn metrics(&self, files: &mut Files) -> io::Result<Any> {
        super::stats::pack(
            "io.containerd.cgroups.v2.Metrics",
            &super::stats::v2_metrics(&self.dir, files),
        )
    }

    fn read(&self, mask: &Update, files: &mut Files) -> Update {
        let f = files;
        let mut u = Update::default();
        if mask.cpu_shares.is_some() {
            u.cpu_shares = self.num(f, "cpu.weight").map(weight_to_shares);
        }
        if mask.cpu_quota.is_some() || mask.cpu_period.is_some() {
            if let Some((quota, period)) = self.cpu_max(f) {
                u.cpu_quota = Some(quota.parse().map(Limit::Value).unwrap_or(Limit::Max));
                u.cpu_period = period;
            }
        }
        if mask.cpuset_cpus.is_some() {
            u.cpuset_cpus = self.text(f, "cpuset.cpus").filter(|s| !s.is_empty());
        }
        if mask.cpuset_mems.is_some() {
            u.cpuset_mems = self.text(f, "cpuset.mems").filter(|s| !s.is_empty());
        }
        if mask.memory_limit.is_some() || mask.memory_swap.is_some() {
            u.memory_limit = self.limit(f, "memory.max");
        }
        if mask.memory_swap.is_some() {
            // OCI counts memory plus swap.
            u.memory_swap = match (u.memory_limit, self.limit(f, "memory.swap.max")) {
                (Some(Limit::Value(m)), Some(Limit::Value(s))) => Some(Limit::Value(m + s)),
                (_, Some(_)) => Some(Limit::Max),
                _ => None,
            };
        }
        if mask.memory_reservation.is_some() {
            u.memory_reservation = self.limit(f, "memory.low");
        }
        if mask.pids_limit.is_some() {
            u.pids_limit = self.limit(f, "pids.max");
        }
        u
    }

    fn written(&self, u: &Update) -> Update {
        u.clone()
    }

    fn plan(&self, u: &Update, files: &mut Files) -> Result<Vec<Write>, Unsupported> {
        let mut w = Vec::new();
        let mut push = |f: &str, value: String| {
            w.push(Write {
                path: self.path(f),
                value,
            })
        };
        if let Some(s) = u.cpu_shares {
            push("cpu.weight", shares_to_weight(s).to_string());
        }
        if u.cpu_quota.is_some() || u.cpu_period.is_some() {
            // One file for both: keep the part not asked for.
            let cur = self.text(files, "cpu.max");
            let mut parts = cur.as_deref().unwrap_or("max 100000").split_whitespace();
            let cur_quota = parts.next().unwrap_or("max").to_string();
            let cur_period = parts.next().unwrap_or("100000").to_string();
            let quota = u.cpu_quota.map(value).unwrap_or(cur_quota);
            let period = u.cpu_period.map(|p| p.to_string()).unwrap_or(cur_period);
            push("cpu.max", format!("{quota} {period}"));
        }
        if let Some(c) = &u.cpuset_cpus {
            push("cpuset.cpus", c.clone());
        }
        if let Some(m) = &u.cpuset_mems {
            push("cpuset.mems", m.clone());
        }
        if let Some(l) = u.memory_limit {
            push("memory.max", value(l));
        }
        if let Some(s) = u.memory_swap {
            // OCI counts memory plus swap; memory.swap.max is swap alone.
            let limit = u
                .memory_limit
                .map(|l| l.value().unwrap_or(u64::MAX))
                .unwrap_or_else(|| self.num(files, "memory.max").unwrap_or(u64::MAX));
            let swap_only = match (s, limit) {
                (Limit::Max, _) | (_, u64::MAX) => "max".to_string(),
                (Limit::Value(s), l) => s.saturating_sub(l).to_string(),
            };
            push("memory.swap.max", swap_only);
        }
        if let Some(r) = u.memory_reservation {
            push("memory.low", value(r));
        }
        if let Some(p) = u.pids_limit {
            push("pids.max", value(p));
        }
        if let Some(b) = u.blkio_weight {
            push("io.weight", format!("default {}", blkio_to_io_weight(b)));
        }
        for (size, limit) in &u.hugetlb {
            push(&format!("hugetlb.{size}.max"), limit.to_string());
        }
        for (k, v) in &u.unified {
            if !files.exists(&self.path(k)) {
                return Err(Unsupported {
                    field: "unified key",
                    value: k.clone(),
                    why: "no such file in the container's cgroup".into(),
                });
            }
            push(k, v.clone());
        }
        Ok(w)
    }

    fn reclaim(&self, bytes: u64, files: &mut Files) -> bool {
        if let Err(e) = files.write(&self.path("memory.reclaim"), &bytes.to_string()) {
            // The kernel could not reclaim it all (EAGAIN), or is too old
            // to be asked: the usage read next tells.
            log::debug!("{e}");
        }
        true
    }

    fn refused_below_usage(&self, _w: &Write, _e: &FileError) -> bool {
        // v2 takes a memory.max below usage (and reclaims, or OOM-kills).
        false
    }

    fn oom_source(&self) -> io::Result<OomSource> {
        Ok(OomSource::Events {
            events: self.path("memory.events"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_conversions_match_the_kernel_mapping() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
    }

    #[test]
    fn shares_read_back_land_on_the_same_weight() {
        for w in [1, 2, 39, 100, 5000, 9999, 10_000] {
            assert_eq!(shares_to_weight(weight_to_shares(w)), w, "weight {w}");
        }
    }
}

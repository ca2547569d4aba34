//! From an `Update` to the cgroup file writes that carry it out, in an order
//! the kernel accepts whether limits grow or shrink.

use std::path::{Path, PathBuf};

use super::files::Files;
use super::update::{Limit, Update};
use super::ResizeError;
use crate::cgroups::Cgroup;

/// One cgroup file write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub path: PathBuf,
    pub value: String,
}

fn read(files: &mut Files, path: &Path) -> Option<String> {
    files.read(path).ok().map(|s| s.trim().to_string())
}

/// A v1 byte limit as a number; "unlimited" is u64::MAX.
fn v1_bytes(files: &mut Files, path: &Path) -> u64 {
    read(files, path)
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&v| v < (1 << 62))
        .unwrap_or(u64::MAX)
}

fn as_num(l: Limit) -> u64 {
    l.value().unwrap_or(u64::MAX)
}

fn v1_value(l: Limit) -> String {
    l.value()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "-1".into())
}

fn v2_value(l: Limit) -> String {
    l.value()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "max".into())
}

/// cgroup v1 cpu.shares to v2 cpu.weight, the kernel's and runc's mapping.
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// blkio weight (10..=1000) to v2 io.weight (1..=10000).
pub fn blkio_to_io_weight(w: u16) -> u64 {
    1 + (u64::from(w).saturating_sub(10) * 9999) / 990
}

fn missing(controller: &str) -> ResizeError {
    ResizeError::Invalid {
        field: "controller",
        value: controller.to_string(),
        why: "this node's cgroup hierarchy has no such controller for the container".into(),
    }
}

/// Plans the writes for `u` on `cg`, reading current values where the order
/// depends on them.
pub fn plan(cg: &Cgroup, u: &Update) -> Result<Vec<Write>, ResizeError> {
    plan_with(cg, u, &mut Files::default())
}

/// `plan`, reading through `files`.
pub fn plan_with(cg: &Cgroup, u: &Update, files: &mut Files) -> Result<Vec<Write>, ResizeError> {
    match cg {
        Cgroup::V1(_) => plan_v1(cg, u, files),
        Cgroup::V2(dir) => plan_v2(dir, u, files),
    }
}

fn plan_v1(cg: &Cgroup, u: &Update, files: &mut Files) -> Result<Vec<Write>, ResizeError> {
    let mut w = Vec::new();
    let dir = |c: &str| cg.dir(c).map(Path::to_path_buf).ok_or_else(|| missing(c));
    let mut push = |d: &Path, f: &str, v: String| {
        w.push(Write {
            path: d.join(f),
            value: v,
        })
    };
    if u.cpu_shares.is_some() || u.cpu_quota.is_some() || u.cpu_period.is_some() {
        let cpu = dir("cpu")?;
        if let Some(s) = u.cpu_shares {
            push(&cpu, "cpu.shares", s.to_string());
        }
        if let Some(p) = u.cpu_period {
            push(&cpu, "cpu.cfs_period_us", p.to_string());
        }
        if let Some(q) = u.cpu_quota {
            push(&cpu, "cpu.cfs_quota_us", v1_value(q));
        }
    }
    if u.cpuset_cpus.is_some() || u.cpuset_mems.is_some() {
        let cs = dir("cpuset")?;
        if let Some(c) = &u.cpuset_cpus {
            push(&cs, "cpuset.cpus", c.clone());
        }
        if let Some(m) = &u.cpuset_mems {
            push(&cs, "cpuset.mems", m.clone());
        }
    }
    if u.memory_limit.is_some() || u.memory_swap.is_some() || u.memory_reservation.is_some() {
        let mem = dir("memory")?;
        let memsw = mem.join("memory.memsw.limit_in_bytes");
        let has_swap_file = files.exists(&memsw);
        let cur_limit = v1_bytes(files, &mem.join("memory.limit_in_bytes"));
        let cur_swap = if has_swap_file {
            v1_bytes(files, &memsw)
        } else {
            u64::MAX
        };
        let mut swap = u.memory_swap;
        if let (Some(s), false) = (swap, has_swap_file) {
            return Err(ResizeError::Invalid {
                field: "memory swap",
                value: v1_value(s),
                why: "swap accounting is off on this node (no memory.memsw.limit_in_bytes)".into(),
            });
        }
        // A container without swap (memsw == limit) keeps none when its limit moves.
        if swap.is_none() && has_swap_file && cur_swap == cur_limit && cur_limit != u64::MAX {
            swap = u.memory_limit;
        }
        let limit_w = u
            .memory_limit
            .map(|l| (mem.join("memory.limit_in_bytes"), v1_value(l)));
        let swap_w = swap.map(|s| (memsw.clone(), v1_value(s)));
        // The kernel keeps limit <= memsw at every step: raise memsw first when
        // the new limit goes above the current memsw, lower the limit first otherwise.
        let swap_first = u.memory_limit.map(as_num).unwrap_or(cur_limit) > cur_swap;
        let ordered = if swap_first {
            [swap_w, limit_w]
        } else {
            [limit_w, swap_w]
        };
        for (path, value) in ordered.into_iter().flatten() {
            push(
                path.parent().unwrap(),
                path.file_name().unwrap().to_str().unwrap(),
                value,
            );
        }
        if let Some(r) = u.memory_reservation {
            push(&mem, "memory.soft_limit_in_bytes", v1_value(r));
        }
    }
    if let Some(p) = u.pids_limit {
        let pids = dir("pids")?;
        push(&pids, "pids.max", v2_value(p));
    }
    if let Some(b) = u.blkio_weight {
        let blkio = dir("blkio")?;
        let file = if files.exists(&blkio.join("blkio.weight")) {
            "blkio.weight"
        } else {
            "blkio.bfq.weight"
        };
        push(&blkio, file, b.to_string());
    }
    if !u.hugetlb.is_empty() {
        let h = dir("hugetlb")?;
        for (size, limit) in &u.hugetlb {
            push(
                &h,
                &format!("hugetlb.{size}.limit_in_bytes"),
                limit.to_string(),
            );
        }
    }
    if let Some(k) = u.unified.keys().next() {
        return Err(ResizeError::Invalid {
            field: "unified key",
            value: k.clone(),
            why: "cgroup v2 keys cannot be set on a cgroup v1 node".into(),
        });
    }
    Ok(w)
}

fn plan_v2(dir: &Path, u: &Update, files: &mut Files) -> Result<Vec<Write>, ResizeError> {
    let mut w = Vec::new();
    let mut push = |f: &str, v: String| {
        w.push(Write {
            path: dir.join(f),
            value: v,
        })
    };
    if let Some(s) = u.cpu_shares {
        push("cpu.weight", shares_to_weight(s).to_string());
    }
    if u.cpu_quota.is_some() || u.cpu_period.is_some() {
        let cur = read(files, &dir.join("cpu.max")).unwrap_or_else(|| "max 100000".into());
        let mut parts = cur.split_whitespace();
        let cur_quota = parts.next().unwrap_or("max").to_string();
        let cur_period = parts.next().unwrap_or("100000").to_string();
        let quota = u.cpu_quota.map(v2_value).unwrap_or(cur_quota);
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
        push("memory.max", v2_value(l));
    }
    if let Some(s) = u.memory_swap {
        // OCI counts memory plus swap; v2's memory.swap.max is swap alone.
        let limit = u.memory_limit.map(as_num).unwrap_or_else(|| {
            read(files, &dir.join("memory.max"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX)
        });
        let swap_only = match (s, limit) {
            (Limit::Max, _) | (_, u64::MAX) => "max".to_string(),
            (Limit::Value(s), l) => s.saturating_sub(l).to_string(),
        };
        push("memory.swap.max", swap_only);
    }
    if let Some(r) = u.memory_reservation {
        push("memory.low", v2_value(r));
    }
    if let Some(p) = u.pids_limit {
        push("pids.max", v2_value(p));
    }
    if let Some(b) = u.blkio_weight {
        push("io.weight", format!("default {}", blkio_to_io_weight(b)));
    }
    for (size, limit) in &u.hugetlb {
        push(&format!("hugetlb.{size}.max"), limit.to_string());
    }
    for (k, v) in &u.unified {
        if !files.exists(&dir.join(k)) {
            return Err(ResizeError::Invalid {
                field: "unified key",
                value: k.clone(),
                why: "no such file in the container's cgroup".into(),
            });
        }
        push(k, v.clone());
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn files(w: &[Write]) -> Vec<(String, String)> {
        w.iter()
            .map(|w| {
                (
                    w.path.file_name().unwrap().to_string_lossy().into_owned(),
                    w.value.clone(),
                )
            })
            .collect()
    }

    fn v1_memory(name: &str, limit: &str, memsw: &str) -> (Cgroup, crate::testfs::FakeDir) {
        let mem = crate::testfs::FakeDir::new(
            name,
            &[
                ("memory.limit_in_bytes", limit),
                ("memory.memsw.limit_in_bytes", memsw),
            ],
        );
        (
            Cgroup::V1(BTreeMap::from([("memory".to_string(), mem.path())])),
            mem,
        )
    }

    #[test]
    fn v1_growing_memory_raises_swap_first() {
        let (cg, _dir) = v1_memory("grow", "104857600", "104857600");
        let u = Update {
            memory_limit: Some(Limit::Value(200 << 20)),
            ..Default::default()
        };
        assert_eq!(
            files(&plan(&cg, &u).unwrap()),
            vec![
                (
                    "memory.memsw.limit_in_bytes".into(),
                    (200u64 << 20).to_string()
                ),
                ("memory.limit_in_bytes".into(), (200u64 << 20).to_string()),
            ]
        );
    }

    #[test]
    fn v1_shrinking_memory_lowers_the_limit_first() {
        let (cg, _dir) = v1_memory("shrink", "209715200", "209715200");
        let u = Update {
            memory_limit: Some(Limit::Value(100 << 20)),
            ..Default::default()
        };
        assert_eq!(
            files(&plan(&cg, &u).unwrap()),
            vec![
                ("memory.limit_in_bytes".into(), (100u64 << 20).to_string()),
                (
                    "memory.memsw.limit_in_bytes".into(),
                    (100u64 << 20).to_string()
                ),
            ]
        );
    }

    #[test]
    fn v1_unlimited_swap_is_left_alone() {
        let (cg, _dir) = v1_memory("noswap", "209715200", "9223372036854771712");
        let u = Update {
            memory_limit: Some(Limit::Value(100 << 20)),
            ..Default::default()
        };
        assert_eq!(
            files(&plan(&cg, &u).unwrap()),
            vec![("memory.limit_in_bytes".into(), (100u64 << 20).to_string())]
        );
    }

    #[test]
    fn v1_cpu_writes_period_before_quota_and_max_as_minus_one() {
        let cpu = crate::testfs::FakeDir::new("cpu", &[]);
        let cg = Cgroup::V1(BTreeMap::from([("cpu".to_string(), cpu.path())]));
        let u = Update {
            cpu_quota: Some(Limit::Max),
            cpu_period: Some(50_000),
            cpu_shares: Some(1024),
            ..Default::default()
        };
        assert_eq!(
            files(&plan(&cg, &u).unwrap()),
            vec![
                ("cpu.shares".into(), "1024".into()),
                ("cpu.cfs_period_us".into(), "50000".into()),
                ("cpu.cfs_quota_us".into(), "-1".into()),
            ]
        );
        let e = plan(
            &cg,
            &Update {
                pids_limit: Some(Limit::Value(10)),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("no such controller"), "{e}");
    }

    #[test]
    fn v2_cpu_max_keeps_the_part_not_asked_for() {
        let dir = crate::testfs::FakeDir::new(
            "v2cpu",
            &[("cpu.max", "max 100000\n"), ("memory.max", "max\n")],
        );
        let cg = Cgroup::V2(dir.path());
        let u = Update {
            cpu_quota: Some(Limit::Value(25_000)),
            cpu_shares: Some(1024),
            ..Default::default()
        };
        assert_eq!(
            files(&plan(&cg, &u).unwrap()),
            vec![
                ("cpu.weight".into(), "39".into()),
                ("cpu.max".into(), "25000 100000".into())
            ]
        );
        std::fs::write(dir.join("cpu.max"), "25000 100000\n").unwrap();
        let u = Update {
            cpu_period: Some(50_000),
            ..Default::default()
        };
        assert_eq!(
            files(&plan(&cg, &u).unwrap()),
            vec![("cpu.max".into(), "25000 50000".into())]
        );
    }

    #[test]
    fn v2_memory_swap_is_swap_alone_and_unified_keys_must_exist() {
        let dir = crate::testfs::FakeDir::new(
            "v2mem",
            &[("memory.max", "max\n"), ("memory.high", "max\n")],
        );
        let cg = Cgroup::V2(dir.path());
        let u = Update {
            memory_limit: Some(Limit::Value(100)),
            memory_swap: Some(Limit::Value(150)),
            unified: BTreeMap::from([("memory.high".to_string(), "90".to_string())]),
            ..Default::default()
        };
        assert_eq!(
            files(&plan(&cg, &u).unwrap()),
            vec![
                ("memory.max".into(), "100".into()),
                ("memory.swap.max".into(), "50".into()),
                ("memory.high".into(), "90".into()),
            ]
        );
        let u = Update {
            unified: BTreeMap::from([("memory.nonexistent".to_string(), "1".to_string())]),
            ..Default::default()
        };
        assert!(plan(&cg, &u)
            .unwrap_err()
            .to_string()
            .contains("no such file"));
    }

    #[test]
    fn weight_conversions_match_the_kernel_mapping() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
    }
}

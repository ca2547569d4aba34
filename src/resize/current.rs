//! The live values of a container's resources, read back in `Update` terms
//! (for a revision's before and after).

use std::path::Path;

use super::files::Files;
use super::update::{Limit, Update};
use crate::cgroups::Cgroup;

fn text(files: &mut Files, path: &Path) -> Option<String> {
    files.read(path).ok().map(|s| s.trim().to_string())
}

fn num(files: &mut Files, path: &Path) -> Option<u64> {
    text(files, path)?.parse().ok()
}

/// v1 byte limits at or above this are "unlimited".
const V1_UNLIMITED: u64 = 1 << 62;

fn v1_limit(files: &mut Files, path: &Path) -> Option<Limit> {
    let t = text(files, path)?;
    if t == "-1" {
        return Some(Limit::Max);
    }
    let v: u64 = t.parse().ok()?;
    Some(if v >= V1_UNLIMITED {
        Limit::Max
    } else {
        Limit::Value(v)
    })
}

fn max_or(files: &mut Files, path: &Path) -> Option<Limit> {
    let t = text(files, path)?;
    if t == "max" {
        Some(Limit::Max)
    } else {
        t.parse().ok().map(Limit::Value)
    }
}

/// The fields an update `u` may write on `cg`, to read before and after it
/// for its revision: its own, and on v1 the swap limit (memsw) that follows a
/// new memory limit in a container without swap (see `plan`). A revision
/// that left out a value it changed would make a later rollback restore an
/// inconsistent set (a memory limit above memsw, which v1 refuses).
pub fn written(cg: &Cgroup, u: &Update) -> Update {
    let mut mask = u.clone();
    if matches!(cg, Cgroup::V1(_)) && mask.memory_limit.is_some() && mask.memory_swap.is_none() {
        mask.memory_swap = mask.memory_limit;
    }
    mask
}

/// Every value tidal manages that can be read from `cg`.
pub fn read(cg: &Cgroup) -> Update {
    read_only(cg, &Update::everything())
}

/// The values of the fields set in `mask`; only their files are read (a
/// resize reads back only what it changes).
pub fn read_only(cg: &Cgroup, mask: &Update) -> Update {
    read_with(cg, mask, &mut Files::default())
}

/// `read_only`, through `files`.
pub fn read_with(cg: &Cgroup, mask: &Update, files: &mut Files) -> Update {
    let f = files;
    let mut u = Update::default();
    match cg {
        Cgroup::V1(_) => {
            if let Some(d) = cg.dir("cpu") {
                if mask.cpu_shares.is_some() {
                    u.cpu_shares = num(f, &d.join("cpu.shares"));
                }
                if mask.cpu_period.is_some() {
                    u.cpu_period = num(f, &d.join("cpu.cfs_period_us"));
                }
                if mask.cpu_quota.is_some() {
                    u.cpu_quota = v1_limit(f, &d.join("cpu.cfs_quota_us"));
                }
            }
            if let Some(d) = cg.dir("cpuset") {
                if mask.cpuset_cpus.is_some() {
                    u.cpuset_cpus = text(f, &d.join("cpuset.cpus"));
                }
                if mask.cpuset_mems.is_some() {
                    u.cpuset_mems = text(f, &d.join("cpuset.mems"));
                }
            }
            if let Some(d) = cg.dir("memory") {
                if mask.memory_limit.is_some() {
                    u.memory_limit = v1_limit(f, &d.join("memory.limit_in_bytes"));
                }
                if mask.memory_swap.is_some() {
                    u.memory_swap = v1_limit(f, &d.join("memory.memsw.limit_in_bytes"));
                }
                if mask.memory_reservation.is_some() {
                    u.memory_reservation = v1_limit(f, &d.join("memory.soft_limit_in_bytes"));
                }
            }
            if let Some(d) = cg.dir("pids").filter(|_| mask.pids_limit.is_some()) {
                u.pids_limit = max_or(f, &d.join("pids.max"));
            }
        }
        Cgroup::V2(d) => {
            if mask.cpu_shares.is_some() {
                // Inverse of the shares -> weight mapping, rounded up so it round-trips.
                u.cpu_shares = num(f, &d.join("cpu.weight"))
                    .map(|w| 2 + (w.saturating_sub(1) * 262_142).div_ceil(9_999));
            }
            if mask.cpu_quota.is_some() || mask.cpu_period.is_some() {
                if let Some(max) = text(f, &d.join("cpu.max")) {
                    let mut p = max.split_whitespace();
                    u.cpu_quota = p
                        .next()
                        .map(|q| q.parse().map(Limit::Value).unwrap_or(Limit::Max));
                    u.cpu_period = p.next().and_then(|p| p.parse().ok());
                }
            }
            if mask.cpuset_cpus.is_some() {
                u.cpuset_cpus = text(f, &d.join("cpuset.cpus")).filter(|s| !s.is_empty());
            }
            if mask.cpuset_mems.is_some() {
                u.cpuset_mems = text(f, &d.join("cpuset.mems")).filter(|s| !s.is_empty());
            }
            if mask.memory_limit.is_some() || mask.memory_swap.is_some() {
                u.memory_limit = max_or(f, &d.join("memory.max"));
            }
            if mask.memory_swap.is_some() {
                u.memory_swap = match (u.memory_limit, max_or(f, &d.join("memory.swap.max"))) {
                    (Some(Limit::Value(m)), Some(Limit::Value(s))) => Some(Limit::Value(m + s)),
                    (_, Some(_)) => Some(Limit::Max),
                    _ => None,
                };
            }
            if mask.memory_reservation.is_some() {
                u.memory_reservation = max_or(f, &d.join("memory.low"));
            }
            if mask.pids_limit.is_some() {
                u.pids_limit = max_or(f, &d.join("pids.max"));
            }
        }
    }
    u.restricted_to(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_values_read_back_in_oci_terms() {
        let dir = crate::testfs::FakeDir::new("current", &[]);
        for (f, v) in [
            ("cpu.weight", "39"),
            ("cpu.max", "50000 100000"),
            ("memory.max", "1000"),
            ("memory.swap.max", "500"),
            ("pids.max", "max"),
        ] {
            std::fs::write(dir.join(f), v).unwrap();
        }
        let u = read(&Cgroup::V2(dir.path()));
        assert_eq!(u.cpu_quota, Some(Limit::Value(50_000)));
        assert_eq!(u.cpu_period, Some(100_000));
        assert_eq!(u.memory_limit, Some(Limit::Value(1000)));
        assert_eq!(
            u.memory_swap,
            Some(Limit::Value(1500)),
            "OCI swap is memory plus swap"
        );
        assert_eq!(u.pids_limit, Some(Limit::Max));
        // shares -> weight -> shares lands on the same weight again.
        let w = crate::resize::plan::shares_to_weight(u.cpu_shares.unwrap());
        assert_eq!(w, 39);
    }

    /// An operator shrinks memory alone (memsw follows it), kubelet then
    /// sets memory and swap: rolling back to before both restores a limit
    /// and a memsw that v1 accepts together, and the values from before.
    #[test]
    fn v1_rollback_past_a_swap_that_followed_memory_restores_both() {
        use crate::resize::apply::{apply_with, recorded};
        use crate::resize::history::{rollback_target, Revision};
        let mem = crate::testfs::FakeDir::new(
            "rollback-swap",
            &[
                ("memory.limit_in_bytes", "134217728"),
                ("memory.memsw.limit_in_bytes", "134217728"),
                ("memory.usage_in_bytes", "4096"),
            ],
        );
        let cg = Cgroup::V1([("memory".to_string(), mem.path())].into());
        let mut files = Files::default();
        let mut history = Vec::new();
        let mut change = |source: &str, u: Update, files: &mut Files| {
            let (before, after) = recorded(&cg, &u, false, files).unwrap();
            history.push(Revision {
                revision: history.len() as u64 + 1,
                time: 0,
                source: source.into(),
                reason: String::new(),
                before,
                after,
            });
        };
        let mib = |n: u64| Some(Limit::Value(n << 20));
        change(
            "operator",
            Update {
                memory_limit: mib(96),
                ..Default::default()
            },
            &mut files,
        );
        let memsw = || std::fs::read_to_string(mem.join("memory.memsw.limit_in_bytes")).unwrap();
        assert_eq!(
            memsw(),
            (96u64 << 20).to_string(),
            "memsw followed the limit"
        );
        change(
            "kubelet",
            Update {
                memory_limit: mib(128),
                memory_swap: mib(128),
                ..Default::default()
            },
            &mut files,
        );
        let target = rollback_target(&history, 0).unwrap();
        assert_eq!(target.memory_limit, mib(128));
        assert_eq!(
            target.memory_swap,
            mib(128),
            "the swap limit from before the first change, not from between them"
        );
        apply_with(&cg, &target, false, &mut files).unwrap();
        assert_eq!(memsw(), (128u64 << 20).to_string());
    }
}

//! Carrying out a planned resize: refuse what would hurt the container,
//! write in order, and put back what was written if a later write fails.

use std::path::Path;

use super::plan::{plan_with, Write};
use super::update::{Limit, Update};
use super::ResizeError;
use crate::cgroups::{Cgroup, Files};

/// What an applied resize wrote, with each file's value before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub writes: Vec<(Write, String)>,
}

#[cfg(test)]
/// Applies `u` to `cg`. With `reclaim`, memory above a new, lower limit is
/// reclaimed first; without it, such a shrink is refused.
pub fn apply(cg: &Cgroup, u: &Update, reclaim: bool) -> Result<Applied, ResizeError> {
    apply_with(cg, u, reclaim, &mut Files::default())
}

/// `apply`, through `files`.
pub fn apply_with(
    cg: &Cgroup,
    u: &Update,
    reclaim: bool,
    files: &mut Files,
) -> Result<Applied, ResizeError> {
    let writes = check_with(cg, u, reclaim, files)?;
    write_all(cg, writes, reclaim, files)
}

/// `apply_with`, returning what it changed as (before, after) for the
/// change's revision: the values of the fields `u` sets and, on v1, of the
/// swap limit when it followed a new memory limit (see `current::written`).
pub fn recorded(
    cg: &Cgroup,
    u: &Update,
    reclaim: bool,
    files: &mut Files,
) -> Result<(Update, Update), ResizeError> {
    let written = super::current::written(cg, u);
    let mut before = super::current::read_with(cg, &written, files);
    apply_with(cg, u, reclaim, files)?;
    let mut after = super::current::read_with(cg, &written, files);
    if u.memory_swap.is_none() && before.memory_swap == after.memory_swap {
        // memsw did not follow the limit (the container has swap, or no
        // limit on it): not part of this change.
        before.memory_swap = None;
        after.memory_swap = None;
    }
    Ok((before, after))
}

/// Everything `apply` checks before writing, and the writes it would make,
/// through `files`. With `reclaim`, where the kernel can be asked to reclaim
/// memory (cgroup v2), this asks it.
pub fn check_with(
    cg: &Cgroup,
    u: &Update,
    reclaim: bool,
    files: &mut Files,
) -> Result<Vec<Write>, ResizeError> {
    let writes = plan_with(cg, u, files)?;
    // One lookup per file; its directory only when the file is missing.
    if let Some(w) = writes.iter().find(|w| !files.exists(&w.path)) {
        let dir = w.path.parent().unwrap_or(Path::new("/"));
        if !dir.is_dir() {
            return Err(ResizeError::Gone(dir.display().to_string()));
        }
        return Err(ResizeError::Invalid {
            field: "cgroup file",
            value: w.path.display().to_string(),
            why: "this kernel does not have it".into(),
        });
    }
    if let Some(Limit::Value(limit)) = u.memory_limit {
        if let Some(usage) = cg.memory_usage(files).filter(|&usage| usage > limit) {
            if !reclaim {
                return Err(ResizeError::BelowUsage {
                    requested: limit,
                    usage,
                });
            }
            // Where the kernel cannot be asked (v1), it reclaims when the
            // lower limit is written, or refuses it (`refused_below_usage`).
            if cg.reclaim(usage - limit, files) {
                if let Some(usage) = cg.memory_usage(files).filter(|&usage| usage > limit) {
                    return Err(ResizeError::NotReclaimed {
                        requested: limit,
                        usage,
                    });
                }
            }
        }
    }
    Ok(writes)
}

/// Writes `writes` in order, undoing them all if one fails. A memory limit
/// the kernel refuses for the memory in use is `NotReclaimed` when the
/// caller asked to reclaim (v1 reclaims as the limit is written, and
/// refuses with EBUSY when it cannot), else `BelowUsage`.
fn write_all(
    cg: &Cgroup,
    writes: Vec<Write>,
    reclaim: bool,
    files: &mut Files,
) -> Result<Applied, ResizeError> {
    let mut done: Vec<(Write, String)> = Vec::with_capacity(writes.len());
    for w in writes {
        let old = files
            .read(&w.path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if let Err(e) = files.write(&w.path, &w.value) {
            undo(&done, files);
            if cg.refused_below_usage(&w, &e) {
                let requested = w.value.parse().unwrap_or(0);
                let usage = cg.memory_usage(files).unwrap_or(0);
                return Err(if reclaim {
                    ResizeError::NotReclaimed { requested, usage }
                } else {
                    ResizeError::BelowUsage { requested, usage }
                });
            }
            let file = w.path.display().to_string();
            // ENODEV: a file kept open whose cgroup has been removed since.
            if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) {
                return Err(ResizeError::Gone(file));
            }
            return Err(ResizeError::Write {
                file,
                value: w.value,
                error: e.io().to_string(),
            });
        }
        done.push((w, old));
    }
    Ok(Applied { writes: done })
}

/// Restores earlier writes, last first.
fn undo(done: &[(Write, String)], files: &mut Files) {
    for (w, old) in done.iter().rev() {
        if let Err(e) = files.write(&w.path, old) {
            log::error!("restore: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn get(dir: &Path, f: &str) -> String {
        std::fs::read_to_string(dir.join(f))
            .unwrap()
            .trim()
            .to_string()
    }

    #[test]
    fn v2_resize_writes_and_reports_old_values() {
        let dir = crate::testfs::FakeDir::new(
            "v2",
            &[
                ("cpu.max", "max 100000"),
                ("memory.max", "max"),
                ("memory.current", "1000"),
            ],
        );
        let cg = Cgroup::v2(dir.path());
        let u = Update {
            cpu_quota: Some(Limit::Value(50_000)),
            memory_limit: Some(Limit::Value(4096)),
            ..Default::default()
        };
        let applied = apply(&cg, &u, false).unwrap();
        assert_eq!(get(&dir, "cpu.max"), "50000 100000");
        assert_eq!(get(&dir, "memory.max"), "4096");
        let olds: Vec<&str> = applied.writes.iter().map(|(_, o)| o.as_str()).collect();
        assert_eq!(olds, vec!["max 100000", "max"]);
    }

    #[test]
    fn shrinking_memory_below_usage_is_refused_and_nothing_changes() {
        let dir = crate::testfs::FakeDir::new(
            "below",
            &[
                ("cpu.max", "max 100000"),
                ("memory.max", "max"),
                ("memory.current", "8192"),
            ],
        );
        let cg = Cgroup::v2(dir.path());
        let u = Update {
            cpu_quota: Some(Limit::Value(50_000)),
            memory_limit: Some(Limit::Value(4096)),
            ..Default::default()
        };
        assert_eq!(
            apply(&cg, &u, false).unwrap_err(),
            ResizeError::BelowUsage {
                requested: 4096,
                usage: 8192
            }
        );
        assert_eq!(
            get(&dir, "cpu.max"),
            "max 100000",
            "a refused resize must write nothing"
        );
        // Asked to reclaim, v2 tries memory.reclaim and refuses if usage stays above.
        std::fs::write(dir.join("memory.reclaim"), "").unwrap();
        assert!(matches!(
            apply(&cg, &u, true),
            Err(ResizeError::NotReclaimed { .. })
        ));
        assert_eq!(
            get(&dir, "memory.reclaim"),
            "4096",
            "reclaim asked for the excess"
        );
    }

    #[test]
    fn a_failed_write_puts_back_what_was_written() {
        let dir = crate::testfs::FakeDir::new(
            "undo",
            &[("cpu.max", "max 100000"), ("memory.max", "max")],
        );
        // memory.max is a directory: writing it fails after cpu.max was written.
        std::fs::remove_file(dir.join("memory.max")).unwrap();
        std::fs::create_dir(dir.join("memory.max")).unwrap();
        let cg = Cgroup::v2(dir.path());
        let u = Update {
            cpu_quota: Some(Limit::Value(50_000)),
            memory_limit: Some(Limit::Value(1 << 30)),
            ..Default::default()
        };
        let err = apply(&cg, &u, false).unwrap_err();
        assert!(matches!(err, ResizeError::Write { .. }), "{err:?}");
        assert!(err.to_string().contains("undone"));
        assert_eq!(
            get(&dir, "cpu.max"),
            "max 100000",
            "cpu.max was not restored"
        );
    }

    #[test]
    fn a_cgroup_that_is_gone_is_reported_and_not_recreated() {
        let dir = std::env::temp_dir().join(format!("tidal-apply-gone-{}", std::process::id()));
        let cg = Cgroup::v1(BTreeMap::from([("cpu".to_string(), dir.clone())]));
        let u = Update {
            cpu_shares: Some(512),
            ..Default::default()
        };
        assert!(matches!(apply(&cg, &u, false), Err(ResizeError::Gone(_))));
        assert!(!dir.exists(), "the cgroup directory was re-created");
    }

    fn fakes() -> [crate::testfs::FakeCgroup; 2] {
        use crate::testfs::FakeCgroup;
        [
            FakeCgroup::v1(
                "either-v1",
                &[
                    ("cpu/cpu.shares", "1024"),
                    ("cpu/cpu.cfs_quota_us", "-1"),
                    ("cpu/cpu.cfs_period_us", "100000"),
                    ("cpuacct/cpuacct.usage", "0"),
                    ("memory/memory.limit_in_bytes", "9223372036854771712"),
                    ("memory/memory.memsw.limit_in_bytes", "9223372036854771712"),
                    ("memory/memory.usage_in_bytes", "8192"),
                    ("pids/pids.max", "max"),
                ],
            ),
            FakeCgroup::v2(
                "either-v2",
                &[
                    ("cpu.weight", "100"),
                    ("cpu.max", "max 100000"),
                    ("cpu.stat", "usage_usec 0"),
                    ("memory.max", "max"),
                    ("memory.swap.max", "max"),
                    ("memory.current", "8192"),
                    ("pids.max", "max"),
                ],
            ),
        ]
    }

    /// The same resize on either hierarchy: each spells it its own way, and
    /// both read it back, as revision values and as live limits, alike.
    #[test]
    fn either_hierarchy_takes_a_resize_and_reads_it_back_alike() {
        let [v1, v2] = fakes();
        let u = Update {
            cpu_quota: Some(Limit::Value(50_000)),
            cpu_period: Some(100_000),
            memory_limit: Some(Limit::Value(64 << 20)),
            pids_limit: Some(Limit::Value(100)),
            ..Default::default()
        };
        let lift = Update {
            cpu_quota: Some(Limit::Max),
            memory_limit: Some(Limit::Max),
            pids_limit: Some(Limit::Max),
            ..Default::default()
        };
        for fake in [&v1, &v2] {
            let cg = fake.cgroup();
            // Files opened per use: a kept one is written in place without
            // truncation, as cgroupfs takes it and a fake's file does not.
            let mut files = Files::default();
            let (before, after) = recorded(cg, &u, false, &mut files).unwrap();
            assert_eq!(after, u, "{cg:?}");
            assert_eq!(before.memory_limit, Some(Limit::Max), "{cg:?}");
            assert_eq!(before.cpu_quota, Some(Limit::Max), "{cg:?}");
            let live = crate::cgroups::read_limits(cg);
            assert_eq!(
                (live.cpu_millis(), live.memory_bytes),
                (Some(500), Some(64 << 20)),
                "{cg:?}"
            );
            let (_, lifted) = recorded(cg, &lift, false, &mut files).unwrap();
            assert_eq!(lifted, lift, "{cg:?}");
            let live = crate::cgroups::read_limits(cg);
            assert_eq!((live.cpu_quota_us, live.memory_bytes), (None, None));
        }
        // Each in its own spelling: -1 and a huge number on v1, max on v2.
        assert_eq!(v1.get("cpu/cpu.cfs_quota_us"), "-1");
        assert_eq!(v1.get("memory/memory.limit_in_bytes"), "-1");
        assert_eq!(
            v1.get("memory/memory.memsw.limit_in_bytes"),
            "9223372036854771712",
            "unlimited swap is left alone"
        );
        assert_eq!(v2.get("cpu.max"), "max 100000");
        assert_eq!(v2.get("memory.max"), "max");
        assert_eq!(v2.get("pids.max"), "max");
    }

    /// Asked to reclaim, v2 asks the kernel first (memory.reclaim) and
    /// refuses if usage stays above; v1 has nothing to ask and writes the
    /// lower limit, which its kernel reclaims for (or refuses with EBUSY).
    /// Not asked, both refuse and write nothing.
    #[test]
    fn a_shrink_below_usage_is_refused_or_reclaimed_as_each_hierarchy_can() {
        let [v1, v2] = fakes();
        v2.set("memory.reclaim", "");
        let u = Update {
            memory_limit: Some(Limit::Value(4096)),
            ..Default::default()
        };
        for fake in [&v1, &v2] {
            let err = apply(fake.cgroup(), &u, false).unwrap_err();
            assert_eq!(
                err,
                ResizeError::BelowUsage {
                    requested: 4096,
                    usage: 8192
                }
            );
        }
        assert_eq!(
            v1.get("memory/memory.limit_in_bytes"),
            "9223372036854771712"
        );
        assert_eq!(v2.get("memory.max"), "max");

        apply(v1.cgroup(), &u, true).unwrap();
        assert_eq!(v1.get("memory/memory.limit_in_bytes"), "4096");
        assert!(
            !v1.cgroup()
                .dir("memory")
                .unwrap()
                .join("memory.reclaim")
                .exists(),
            "v1 has no memory.reclaim to write"
        );

        assert!(matches!(
            apply(v2.cgroup(), &u, true),
            Err(ResizeError::NotReclaimed { .. })
        ));
        assert_eq!(
            v2.get("memory.reclaim"),
            "4096",
            "reclaim asked for the excess"
        );
        assert_eq!(v2.get("memory.max"), "max");
        // The kernel reclaimed it: now the limit is written.
        v2.set("memory.current", "4000");
        apply(v2.cgroup(), &u, true).unwrap();
        assert_eq!(v2.get("memory.max"), "4096");
    }
}

//! Carrying out a planned resize: refuse what would hurt the container,
//! write in order, and put back what was written if a later write fails.

use std::path::Path;

use super::files::Files;
use super::plan::{plan_with, Write};
use super::update::{Limit, Update};
use super::ResizeError;
use crate::cgroups::Cgroup;

/// What an applied resize wrote, with each file's value before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub writes: Vec<(Write, String)>,
}

fn read(files: &mut Files, path: &Path) -> Option<u64> {
    files.read(path).ok()?.trim().parse().ok()
}

/// Current memory use of the cgroup.
pub fn memory_usage(cg: &Cgroup) -> Option<u64> {
    usage(cg, &mut Files::default())
}

fn usage(cg: &Cgroup, files: &mut Files) -> Option<u64> {
    match cg {
        Cgroup::V1(_) => read(files, &cg.dir("memory")?.join("memory.usage_in_bytes")),
        Cgroup::V2(dir) => read(files, &dir.join("memory.current")),
    }
}

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
    write_all(cg, writes, files)
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

/// Everything `apply` checks before writing, and the writes it would make.
/// With `reclaim` on cgroup v2 this asks the kernel to reclaim memory.
pub fn check(cg: &Cgroup, u: &Update, reclaim: bool) -> Result<Vec<Write>, ResizeError> {
    check_with(cg, u, reclaim, &mut Files::default())
}

/// `check`, through `files`.
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
        if let Some(usage) = usage(cg, files).filter(|&usage| usage > limit) {
            if !reclaim {
                return Err(ResizeError::BelowUsage {
                    requested: limit,
                    usage,
                });
            }
            if let Cgroup::V2(dir) = cg {
                let _ = files.write(&dir.join("memory.reclaim"), &(usage - limit).to_string());
                if let Some(usage) = self::usage(cg, files).filter(|&usage| usage > limit) {
                    return Err(ResizeError::BelowUsage {
                        requested: limit,
                        usage,
                    });
                }
            }
            // cgroup v1 reclaims when the lower limit is written, or refuses with EBUSY.
        }
    }
    Ok(writes)
}

fn write_all(cg: &Cgroup, writes: Vec<Write>, files: &mut Files) -> Result<Applied, ResizeError> {
    let mut done: Vec<(Write, String)> = Vec::with_capacity(writes.len());
    for w in writes {
        let old = files
            .read(&w.path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if let Err(e) = files.write(&w.path, &w.value) {
            undo(&done, files);
            let file = w.path.display().to_string();
            if e.raw_os_error() == Some(libc::EBUSY) && file.ends_with("memory.limit_in_bytes") {
                let requested = w.value.parse().unwrap_or(0);
                let usage = usage(cg, files).unwrap_or(0);
                return Err(ResizeError::BelowUsage { requested, usage });
            }
            // ENODEV: a file kept open whose cgroup has been removed since.
            if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) {
                return Err(ResizeError::Gone(file));
            }
            return Err(ResizeError::Write {
                file,
                value: w.value,
                error: e.to_string(),
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
            log::error!("restore {} to {old:?}: {e}", w.path.display());
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
        let cg = Cgroup::V2(dir.path());
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
        let cg = Cgroup::V2(dir.path());
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
            Err(ResizeError::BelowUsage { .. })
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
        let cg = Cgroup::V2(dir.path());
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
        let cg = Cgroup::V1(BTreeMap::from([("cpu".to_string(), dir.clone())]));
        let u = Update {
            cpu_shares: Some(512),
            ..Default::default()
        };
        assert!(matches!(apply(&cg, &u, false), Err(ResizeError::Gone(_))));
        assert!(!dir.exists(), "the cgroup directory was re-created");
    }
}

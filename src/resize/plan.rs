//! From an `Update` to the cgroup file writes that carry it out, in an order
//! the kernel accepts whether limits grow or shrink. The writes are the
//! cgroup's to choose (`cgroups::v1`, `cgroups::v2`); the tests here hold
//! both to the rules.

use super::update::Update;
use super::ResizeError;
pub use crate::cgroups::Write;
use crate::cgroups::{Cgroup, Files};

#[cfg(test)]
/// Plans the writes for `u` on `cg`, reading current values where the order
/// depends on them (see `Hierarchy::plan`).
pub fn plan(cg: &Cgroup, u: &Update) -> Result<Vec<Write>, ResizeError> {
    plan_with(cg, u, &mut Files::default())
}

/// `plan`, reading through `files`.
pub fn plan_with(cg: &Cgroup, u: &Update, files: &mut Files) -> Result<Vec<Write>, ResizeError> {
    Ok(cg.plan(u, files)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resize::Limit;
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
            Cgroup::v1(BTreeMap::from([("memory".to_string(), mem.path())])),
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
        let cg = Cgroup::v1(BTreeMap::from([("cpu".to_string(), cpu.path())]));
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
        let cg = Cgroup::v2(dir.path());
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
        let cg = Cgroup::v2(dir.path());
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
}

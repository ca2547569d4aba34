//! The live values of a container's resources, read back in `Update` terms
//! (for a revision's before and after).

use super::update::Update;
use crate::cgroups::{Cgroup, Files};

/// The fields an update `u` may write on `cg`, to read before and after it
/// for its revision: its own, and on v1 the swap limit (memsw) that follows a
/// new memory limit in a container without swap (see `plan`). A revision
/// that left out a value it changed would make a later rollback restore an
/// inconsistent set (a memory limit above memsw, which v1 refuses).
pub fn written(cg: &Cgroup, u: &Update) -> Update {
    cg.written(u)
}

#[cfg(test)]
/// Every value tidal manages that can be read from `cg`.
pub fn read(cg: &Cgroup) -> Update {
    read_only(cg, &Update::everything())
}

#[cfg(test)]
/// The values of the fields set in `mask`; only their files are read (a
/// resize reads back only what it changes).
pub fn read_only(cg: &Cgroup, mask: &Update) -> Update {
    read_with(cg, mask, &mut Files::default())
}

/// `read_only`, through `files`.
pub fn read_with(cg: &Cgroup, mask: &Update, files: &mut Files) -> Update {
    cg.read(mask, files).restricted_to(mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resize::Limit;

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
        let u = read(&Cgroup::v2(dir.path()));
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
        let w = crate::cgroups::v2::shares_to_weight(u.cpu_shares.unwrap());
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
        let cg = Cgroup::v1([("memory".to_string(), mem.path())].into());
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

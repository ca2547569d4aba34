#![no_main]
//! The resize path: arbitrary bytes as the `resources` of a Task.Update, the
//! JSON containerd sends (kubelet's UpdateContainerResources, tidald's
//! resizes), through `tidal::resize::check_request`: parsed, validated
//! against a 4-CPU node, then planned and checked against a fake cgroup of
//! each version (a directory of the files a container's cgroup has, made once
//! per process under /tmp: the only files this target touches, and never
//! written). A refusal has a message; an accepted update's writes stay in
//! the cgroup's own directories, each one value on one line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tidal::cgroups::Cgroup;

const NODE: (&str, &str) = ("0-3", "0");

struct Fake {
    /// Every cgroup directory: a write goes to a file directly in one.
    dirs: Vec<PathBuf>,
    v1: Cgroup,
    v2: Cgroup,
}

fn make(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (f, v) in files {
        std::fs::write(dir.join(f), format!("{v}\n")).unwrap();
    }
}

fn fake() -> &'static Fake {
    static FAKE: OnceLock<Fake> = OnceLock::new();
    FAKE.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("tidal-fuzz-cgroupfs-{}", std::process::id()));
        let v1 = root.join("v1");
        let controllers: [(&str, &[(&str, &str)]); 6] = [
            (
                "cpu",
                &[
                    ("cpu.shares", "1024"),
                    ("cpu.cfs_quota_us", "-1"),
                    ("cpu.cfs_period_us", "100000"),
                    ("cpu.stat", "nr_periods 0\nnr_throttled 0\nthrottled_time 0"),
                ],
            ),
            (
                "memory",
                &[
                    ("memory.limit_in_bytes", "268435456"),
                    ("memory.memsw.limit_in_bytes", "268435456"),
                    ("memory.soft_limit_in_bytes", "9223372036854771712"),
                    ("memory.usage_in_bytes", "33554432"),
                    ("memory.stat", "total_inactive_file 1048576"),
                ],
            ),
            ("pids", &[("pids.max", "max")]),
            ("cpuset", &[("cpuset.cpus", "0-3"), ("cpuset.mems", "0")]),
            ("blkio", &[("blkio.weight", "500")]),
            (
                "hugetlb",
                &[("hugetlb.2MB.limit_in_bytes", "9223372036854771712")],
            ),
        ];
        let mut dirs = BTreeMap::new();
        for (name, files) in controllers {
            let dir = v1.join(name).join("c");
            make(&dir, files);
            dirs.insert(name.to_string(), dir);
        }
        let v2 = root.join("v2").join("c");
        make(
            &v2,
            &[
                ("cpu.max", "max 100000"),
                ("cpu.weight", "100"),
                (
                    "cpu.stat",
                    "usage_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0",
                ),
                ("memory.max", "268435456"),
                ("memory.high", "max"),
                ("memory.low", "0"),
                ("memory.min", "0"),
                ("memory.swap.max", "max"),
                ("memory.current", "33554432"),
                ("memory.stat", "inactive_file 1048576"),
                ("pids.max", "max"),
                ("cpuset.cpus", ""),
                ("cpuset.cpus.effective", "0-3"),
                ("cpuset.mems", ""),
                ("io.weight", "default 100"),
                ("hugetlb.2MB.max", "max"),
                ("cgroup.procs", ""),
            ],
        );
        let mut all: Vec<PathBuf> = dirs.values().cloned().collect();
        all.push(v2.clone());
        Fake {
            dirs: all,
            v1: Cgroup::v1(dirs),
            v2: Cgroup::v2(&v2),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fake = fake();
    for cg in [&fake.v1, &fake.v2] {
        match tidal::resize::check_request(data, NODE, cg) {
            Err(e) => assert!(!e.trim().is_empty(), "refused without a reason"),
            Ok(writes) => {
                for w in writes {
                    assert!(
                        w.path
                            .parent()
                            .is_some_and(|d| fake.dirs.iter().any(|c| c == d)),
                        "a write outside the cgroup: {}",
                        w.path.display()
                    );
                    assert!(
                        !w.value.is_empty() && !w.value.contains('\n'),
                        "{}: not one value on one line: {:?}",
                        w.path.display(),
                        w.value
                    );
                }
            }
        }
    }
});

//! A container's live values as tidald shows them and its policy engine
//! watches them: CPU and memory limits (`Limits`), use (`Usage`: CPU time
//! and memory, what tidald's API answers with), and the collector's
//! counters and gauges (`Stats`, with pressure stall information where the
//! kernel keeps it). Read through `Hierarchy::limits`, `Hierarchy::usage`
//! and `Hierarchy::stats`; `read_*_with` read through files kept open
//! between calls (tidald does for the containers it last changed).

use serde::Serialize;

use super::{Cgroup, Files};

/// CPU and memory limits of a container: live (as its cgroup has them now)
/// or declared (as Kubernetes set them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// CFS quota in microseconds per period; None means unlimited.
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: u64,
    pub cpuset: String,
    /// None means unlimited.
    pub memory_bytes: Option<u64>,
    /// The CPU weight in cgroup v1 terms (`cpu.shares`, 2..=262144; v2's
    /// `cpu.weight` converted back); None where unreadable or not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// cgroup v2's `memory.high`, the throttling limit under `memory.max`;
    /// None on cgroup v1, which has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_high: Option<super::Limit>,
}

impl Limits {
    /// The quota as millicores ("how many CPUs"), if limited.
    pub fn cpu_millis(&self) -> Option<u64> {
        let q = self.cpu_quota_us?;
        (self.cpu_period_us > 0).then(|| q * 1000 / self.cpu_period_us)
    }
}

/// What a container uses now.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// CPU time used since it started, in nanoseconds.
    pub cpu_ns: u64,
    pub memory_bytes: u64,
}

/// A container's counters and gauges as the policy engine's collector reads
/// them at each tick (`Hierarchy::stats`), in the same units on both
/// hierarchies. Counters are cumulative since the cgroup was made; a value
/// whose file is missing or unreadable is None.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// CPU time used, in nanoseconds.
    pub cpu_ns: Option<u64>,
    /// CFS bandwidth control: periods and throttling.
    pub throttling: Option<Throttling>,
    /// Memory in use, in bytes.
    pub memory_bytes: Option<u64>,
    /// Inactive file cache, in bytes: the part of `memory_bytes` the kernel
    /// reclaims first (v1 `total_inactive_file`, v2 `inactive_file`).
    pub inactive_file_bytes: Option<u64>,
    /// Processes the kernel's OOM killer killed in the cgroup.
    pub oom_kills: Option<u64>,
    /// CPU and memory pressure (no I/O), where the kernel keeps it for the
    /// cgroup: v2, and on a v1 hybrid host the container's own cgroup in the
    /// unified hierarchy if it has one.
    pub pressure: Option<Pressure>,
}

impl Stats {
    /// Memory in use less inactive file cache, in bytes (what kubelet
    /// calls the working set).
    pub fn working_set(&self) -> Option<u64> {
        let used = self.memory_bytes?;
        Some(used.saturating_sub(self.inactive_file_bytes.unwrap_or(0)))
    }
}

/// CFS bandwidth control counters (`cpu.stat`), cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Throttling {
    /// Enforcement periods that have elapsed with the cgroup runnable.
    pub periods: u64,
    /// Of those, the periods in which it was throttled.
    pub throttled_periods: u64,
    /// Time it spent throttled, in nanoseconds.
    pub throttled_ns: u64,
}

/// A cgroup's pressure stall information (`cpu.pressure`,
/// `memory.pressure`); a resource whose file is missing or unreadable is
/// None.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pressure {
    pub cpu: Option<Psi>,
    pub memory: Option<Psi>,
}

/// One resource's pressure: the time some of the cgroup's tasks stalled on
/// it, and the time all of them did (`full`; not kept for CPU before Linux
/// 5.13).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Psi {
    pub some: PsiLine,
    pub full: Option<PsiLine>,
}

/// One line of a pressure file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PsiLine {
    /// Share of wall time stalled, in percent, averaged over 10, 60 and 300
    /// seconds.
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Total stall time, in microseconds: the difference of two readings is
    /// exact where the averages are smoothed.
    pub total_us: u64,
}

impl Psi {
    /// Parses a pressure file:
    /// `some avg10=0.12 avg60=0.05 avg300=0.00 total=12345` and a `full`
    /// line of the same shape. None without a well-formed `some` line.
    pub fn parse(text: &str) -> Option<Psi> {
        let mut some = None;
        let mut full = None;
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let slot = match fields.next() {
                Some("some") => &mut some,
                Some("full") => &mut full,
                _ => continue,
            };
            let mut l = PsiLine::default();
            let mut seen = 0;
            for f in fields {
                let Some((k, v)) = f.split_once('=') else {
                    continue;
                };
                let ok = match k {
                    "avg10" => v.parse().map(|v| l.avg10 = v).is_ok(),
                    "avg60" => v.parse().map(|v| l.avg60 = v).is_ok(),
                    "avg300" => v.parse().map(|v| l.avg300 = v).is_ok(),
                    "total" => v.parse().map(|v| l.total_us = v).is_ok(),
                    _ => false,
                };
                seen += usize::from(ok);
            }
            if seen == 4 {
                *slot = Some(l);
            }
        }
        Some(Psi { some: some?, full })
    }
}

/// The limits `cg` has now.
pub fn read_limits(cg: &Cgroup) -> Limits {
    cg.limits(&mut Files::default())
}

/// `read_limits` through `files`.
pub fn read_limits_with(cg: &Cgroup, files: &mut Files) -> Limits {
    cg.limits(files)
}

/// What `cg` uses now.
pub fn read_usage(cg: &Cgroup) -> Usage {
    cg.usage(&mut Files::default())
}

/// `read_usage` through `files`.
pub fn read_usage_with(cg: &Cgroup, files: &mut Files) -> Usage {
    cg.usage(files)
}

/// The counters and gauges of `cg` through `files`, the inactive file
/// cache included.
pub fn read_stats_with(cg: &Cgroup, files: &mut Files) -> Stats {
    Stats {
        inactive_file_bytes: cg.inactive_file(files),
        ..cg.stats(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn v2_limits_and_usage() {
        let dir = crate::testfs::FakeDir::new(
            "v2",
            &[
                ("cpu.max", "50000 100000\n"),
                ("memory.max", "268435456\n"),
                ("cpuset.cpus.effective", "0-1\n"),
                ("cpu.stat", "usage_usec 2000\nuser_usec 1500\n"),
                ("memory.current", "1234\n"),
            ],
        );
        let cg = Cgroup::v2(dir.path());
        let l = read_limits(&cg);
        assert_eq!(l.cpu_millis(), Some(500));
        assert_eq!(l.memory_bytes, Some(256 << 20));
        assert_eq!(l.cpuset, "0-1");
        let u = read_usage(&cg);
        assert_eq!((u.cpu_ns, u.memory_bytes), (2_000_000, 1234));

        std::fs::write(dir.join("cpu.max"), "max 100000\n").unwrap();
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        let l = read_limits(&cg);
        assert_eq!(
            (l.cpu_quota_us, l.memory_bytes),
            (None, None),
            "max is unlimited"
        );
        // Through kept files, the same values.
        let mut files = Files::kept();
        assert_eq!(read_limits_with(&cg, &mut files), l);
        assert_eq!(read_usage_with(&cg, &mut files), read_usage(&cg));
        assert!(!files.is_empty());
    }

    #[test]
    fn v1_limits_with_unlimited_values_and_usage() {
        let cpu = crate::testfs::FakeDir::new(
            "v1cpu",
            &[
                ("cpu.cfs_quota_us", "-1\n"),
                ("cpu.cfs_period_us", "100000\n"),
            ],
        );
        let acct = crate::testfs::FakeDir::new("v1acct", &[("cpuacct.usage", "777\n")]);
        let mem = crate::testfs::FakeDir::new(
            "v1mem",
            &[
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory.usage_in_bytes", "4096\n"),
            ],
        );
        let cg = Cgroup::v1(BTreeMap::from([
            ("cpu".to_string(), cpu.path()),
            ("cpuacct".to_string(), acct.path()),
            ("memory".to_string(), mem.path()),
        ]));
        let l = read_limits(&cg);
        assert_eq!(l.cpu_quota_us, None);
        assert_eq!(l.cpu_period_us, 100_000);
        assert_eq!(l.memory_bytes, None);
        std::fs::write(cpu.join("cpu.cfs_quota_us"), "20000\n").unwrap();
        std::fs::write(mem.join("memory.limit_in_bytes"), "67108864\n").unwrap();
        let l = read_limits(&cg);
        assert_eq!(
            (l.cpu_millis(), l.memory_bytes),
            (Some(200), Some(64 << 20))
        );
        assert_eq!(
            read_usage(&cg),
            Usage {
                cpu_ns: 777,
                memory_bytes: 4096,
            }
        );
    }

    const PSI: &str = "some avg10=2.50 avg60=1.00 avg300=0.50 total=900\n\
                       full avg10=1.25 avg60=0.00 avg300=0.00 total=400\n";

    #[test]
    fn v2_stats_from_one_read_of_each_file_kept_open() {
        let fake = crate::testfs::FakeCgroup::v2(
            "v2stats",
            &[
                (
                    "cpu.stat",
                    "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\n\
                     nr_periods 40\nnr_throttled 10\nthrottled_usec 5000\n",
                ),
                ("memory.current", "10485760\n"),
                (
                    "memory.stat",
                    "anon 4096\nfile 8192\nactive_file 1024\ninactive_file 2097152\n",
                ),
                ("memory.events", "low 0\nhigh 0\nmax 2\noom 1\noom_kill 3\n"),
                ("cpu.pressure", PSI),
                ("memory.pressure", PSI),
            ],
        );
        let mut files = Files::watched();
        let s = read_stats_with(fake.cgroup(), &mut files);
        assert_eq!(s.cpu_ns, Some(3_000_000));
        assert_eq!(
            s.throttling,
            Some(Throttling {
                periods: 40,
                throttled_periods: 10,
                throttled_ns: 5_000_000
            })
        );
        assert_eq!(s.memory_bytes, Some(10 << 20));
        assert_eq!(s.inactive_file_bytes, Some(2 << 20));
        assert_eq!(s.working_set(), Some(8 << 20));
        assert_eq!(s.oom_kills, Some(3));
        let p = s.pressure.clone().unwrap();
        assert_eq!(p.cpu.unwrap().some.avg10, 2.5);
        assert_eq!(p.memory.unwrap().full.unwrap().avg10, 1.25);
        assert_eq!(files.len(), 6, "each file opened once and kept");

        // The kernel changes the values: the kept files read the new ones.
        fake.set(
            "cpu.stat",
            "usage_usec 9000\nnr_periods 50\nnr_throttled 10\nthrottled_usec 5000\n",
        );
        fake.set("memory.events", "oom_kill 4\n");
        let s2 = read_stats_with(fake.cgroup(), &mut files);
        assert_eq!((s2.cpu_ns, s2.oom_kills), (Some(9_000_000), Some(4)));
        assert_eq!(files.len(), 6);

        // Without the cpu controller cpu.stat has no throttling; without
        // pressure files no pressure; a cgroup gone reads as nothing.
        fake.set("cpu.stat", "usage_usec 1\n");
        std::fs::remove_file(fake.cgroup().dir("").unwrap().join("cpu.pressure")).unwrap();
        std::fs::remove_file(fake.cgroup().dir("").unwrap().join("memory.pressure")).unwrap();
        let s3 = read_stats_with(fake.cgroup(), &mut Files::watched());
        assert_eq!((s3.cpu_ns, s3.throttling), (Some(1000), None));
        assert_eq!(s3.pressure, None);
        let gone = Cgroup::v2("/nonexistent/tidal-test-cgroup");
        assert_eq!(read_stats_with(&gone, &mut files), Stats::default());
    }

    #[test]
    fn v1_stats_from_each_controller_and_pressure_from_the_unified_cgroup() {
        let files = [
            ("cpuacct/cpuacct.usage", "123456789\n"),
            (
                "cpu/cpu.stat",
                "nr_periods 100\nnr_throttled 25\nthrottled_time 777000\nnr_bursts 0\n",
            ),
            ("memory/memory.usage_in_bytes", "20971520\n"),
            (
                "memory/memory.stat",
                "cache 100\ninactive_file 1\ntotal_cache 100\ntotal_inactive_file 4194304\n",
            ),
            (
                "memory/memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            ),
            ("unified/cpu.pressure", PSI),
            ("unified/memory.pressure", PSI),
        ];
        let fake = crate::testfs::FakeCgroup::v1("v1stats", &files);
        let mut watched = Files::watched();
        let s = read_stats_with(fake.cgroup(), &mut watched);
        assert_eq!(s.cpu_ns, Some(123456789));
        assert_eq!(
            s.throttling,
            Some(Throttling {
                periods: 100,
                throttled_periods: 25,
                throttled_ns: 777000
            })
        );
        // total_inactive_file (the hierarchy's), not the cgroup's own.
        assert_eq!(s.working_set(), Some(16 << 20));
        assert_eq!(s.oom_kills, Some(2));
        // FakeCgroup::v1 makes "unified" a controller, not the hybrid dir.
        assert_eq!(s.pressure, None);
        assert_eq!(watched.len(), 5);

        let dir = |c: &str| fake.cgroup().dir(c).unwrap().to_path_buf();
        let dirs: BTreeMap<String, _> = ["cpu", "cpuacct", "memory"]
            .iter()
            .map(|c| (c.to_string(), dir(c)))
            .collect();
        let hybrid = Cgroup::hybrid(dirs.clone(), dir("unified"));
        let s = read_stats_with(&hybrid, &mut Files::watched());
        let p = s.pressure.unwrap();
        assert_eq!(p.cpu.unwrap().some.total_us, 900);
        assert_eq!(p.memory.unwrap().full.unwrap().total_us, 400);
        // No cpu controller: no throttling, the rest still read.
        let mut no_cpu = dirs;
        no_cpu.remove("cpu");
        let s = read_stats_with(&Cgroup::v1(no_cpu), &mut Files::watched());
        assert_eq!((s.throttling, s.oom_kills), (None, Some(2)));
    }

    #[test]
    fn pressure_lines_parse_and_malformed_ones_do_not() {
        let p = Psi::parse("some avg10=0.12 avg60=3.40 avg300=99.99 total=18446744073709551615\n")
            .unwrap();
        assert_eq!(
            p.some,
            PsiLine {
                avg10: 0.12,
                avg60: 3.4,
                avg300: 99.99,
                total_us: u64::MAX
            }
        );
        assert_eq!(p.full, None, "cpu.pressure before 5.13 has no full line");
        assert_eq!(Psi::parse(""), None);
        assert_eq!(Psi::parse("full avg10=0 avg60=0 avg300=0 total=1\n"), None);
        assert_eq!(Psi::parse("some avg10=x avg60=0 avg300=0 total=1\n"), None);
        assert_eq!(Psi::parse("some avg10=0 avg60=0 avg300=0\n"), None);
        // Unknown fields a later kernel may add are skipped.
        let p = Psi::parse("some avg10=1 avg60=2 avg300=3 total=4 avg900=5\n").unwrap();
        assert_eq!(p.some.total_us, 4);
    }
}

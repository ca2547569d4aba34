//! The data collector: at each tick, every running container's counters and
//! gauges (`cgroups::Stats`, through `Hierarchy::stats`) and its live limits
//! (`cgroups::Limits`: what the engine steers from), and the node's
//! (`NodeSample`: CPU from `/proc/stat`, memory from `/proc/meminfo`,
//! `/proc/pressure/*`, the state directory's free space, the CPU count).
//!
//! A container's cgroup is resolved once (from its init pid) and kept with
//! its files, open between ticks (`Files::watched`: one pread per file per
//! tick), up to `Options::keep_open_files` files in all (above that the rest
//! are opened per read: tidald's descriptors are shared with its inventory
//! and API). So are the node's files. Each file is read and parsed once per
//! tick. A container that comes or goes between ticks is no error: one
//! whose reads fail and whose process is gone is left out; one whose reads
//! fail while its process runs is an error of the tick.

use crate::cgroups::{Cgroup, Files, Limits, Psi, Stats};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use super::Key;

/// Where the node's values are read (parameters, so that tests read fakes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePaths {
    /// `/proc/stat`.
    pub stat: PathBuf,
    /// `/proc/meminfo`.
    pub meminfo: PathBuf,
    /// `/proc/pressure` (files `cpu`, `memory`, `io`), where the kernel has it.
    pub pressure: PathBuf,
    /// tidal's state directory, whose filesystem's free space is watched.
    pub state_dir: PathBuf,
}

impl NodePaths {
    /// The host's, with tidal's state directory `state_dir`.
    pub fn host(state_dir: &Path) -> NodePaths {
        NodePaths {
            stat: "/proc/stat".into(),
            meminfo: "/proc/meminfo".into(),
            pressure: "/proc/pressure".into(),
            state_dir: state_dir.to_path_buf(),
        }
    }
}

/// The node as one tick read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSample {
    /// CPUs online (the `cpuN` lines of `/proc/stat`).
    pub cpus: u32,
    /// Share of the node's CPU time since the last tick that was idle
    /// (idle and iowait), 0 to 1; None at the first tick.
    pub cpu_idle: Option<f64>,
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    /// `/proc/pressure/{cpu,memory,io}`, where present.
    pub cpu_pressure: Option<Psi>,
    pub memory_pressure: Option<Psi>,
    pub io_pressure: Option<Psi>,
    /// Share of the state directory's filesystem free to tidal (blocks
    /// available to unprivileged users over all blocks), 0 to 1.
    pub state_dir_free: Option<f64>,
    /// What could not be read (none of it optional).
    pub errors: Vec<String>,
}

/// `/proc/stat`'s CPU line: (idle + iowait, all) in USER_HZ ticks, and the
/// number of CPUs.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64, u32)> {
    let mut totals = None;
    let mut cpus = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            // The cpu lines come first.
            if totals.is_some() {
                break;
            }
            continue;
        };
        if rest.starts_with(' ') {
            // user nice system idle iowait irq softirq steal (guest and
            // guest_nice are already in user and nice).
            let v: Vec<u64> = rest
                .split_whitespace()
                .take(8)
                .map(|f| f.parse().ok())
                .collect::<Option<_>>()?;
            if v.len() < 5 {
                return None;
            }
            totals = Some((v[3] + v[4], v.iter().sum()));
        } else if rest.starts_with(|c: char| c.is_ascii_digit()) {
            cpus += 1;
        }
    }
    let (idle, all) = totals?;
    Some((idle, all, cpus))
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in bytes.
pub fn parse_meminfo(text: &str) -> (Option<u64>, Option<u64>) {
    let mut total = None;
    let mut available = None;
    for line in text.lines() {
        let slot = if line.starts_with("MemTotal:") {
            &mut total
        } else if line.starts_with("MemAvailable:") {
            &mut available
        } else {
            continue;
        };
        *slot = line
            .split_whitespace()
            .nth(1)
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024);
        if total.is_some() && available.is_some() {
            break;
        }
    }
    (total, available)
}

/// The node's files, kept open, and the last CPU totals.
#[derive(Debug)]
struct NodeReader {
    paths: NodePaths,
    files: Files,
    /// (idle, all) of the last read.
    cpu: Option<(u64, u64)>,
}

impl NodeReader {
    fn read(&mut self) -> NodeSample {
        let mut s = NodeSample::default();
        let p = &self.paths;
        match self
            .files
            .read(&p.stat)
            .ok()
            .and_then(|t| parse_proc_stat(&t))
        {
            Some((idle, all, cpus)) => {
                s.cpus = cpus;
                if let Some((idle0, all0)) = self.cpu.filter(|&(i0, a0)| i0 <= idle && a0 < all) {
                    s.cpu_idle = Some(((idle - idle0) as f64 / (all - all0) as f64).min(1.0));
                }
                self.cpu = Some((idle, all));
            }
            None => s.errors.push(format!("{}: unreadable", p.stat.display())),
        }
        match self.files.read(&p.meminfo) {
            Ok(t) => (s.memory_total_bytes, s.memory_available_bytes) = parse_meminfo(&t),
            Err(e) => s.errors.push(e.to_string()),
        }
        if s.memory_total_bytes.is_none() && s.errors.is_empty() {
            s.errors
                .push(format!("{}: no MemTotal", p.meminfo.display()));
        }
        let psi =
            |files: &mut Files, name: &str| Psi::parse(&files.read(&p.pressure.join(name)).ok()?);
        s.cpu_pressure = psi(&mut self.files, "cpu");
        s.memory_pressure = psi(&mut self.files, "memory");
        s.io_pressure = psi(&mut self.files, "io");
        match nix::sys::statvfs::statvfs(&p.state_dir) {
            Ok(v) if v.blocks() > 0 => {
                s.state_dir_free = Some(v.blocks_available() as f64 / v.blocks() as f64);
            }
            Ok(_) => s.errors.push(format!(
                "{}: a filesystem of no blocks",
                p.state_dir.display()
            )),
            Err(e) => s.errors.push(format!("{}: {e}", p.state_dir.display())),
        }
        s
    }
}

/// How a container's cgroup is found from its init pid.
pub type Resolver = Box<dyn Fn(i32) -> io::Result<Cgroup> + Send>;

/// A container the collector reads.
struct Watched {
    pid: i32,
    cgroup: Cgroup,
    files: Files,
    /// Its live limits as last read, at which revision of its history,
    /// and how many ticks ago.
    limits: Option<(Limits, u64, u32)>,
    /// Its inactive file cache as last read (`memory.stat`), the memory
    /// usage then, and how many ticks ago.
    inactive: Option<(Option<u64>, u64, u32)>,
}

/// Whether a container's inactive file cache (in the costliest of its files
/// to read) is read again at this tick: when its memory usage moved by more
/// than 1/32 of itself (or 1 MiB) since the last read, or on the
/// `LIMITS_REREAD_TICKS`th tick after it. Most of a node's containers hold
/// their memory steady most of the time; the working set of one that does
/// not is then read fresh, and any other's is at most that much off.
fn inactive_is_stale(then: u64, age: u32, usage: Option<u64>) -> bool {
    let Some(now) = usage else {
        return true;
    };
    age + 1 >= LIMITS_REREAD_TICKS || now.abs_diff(then) > (then / 32).max(1 << 20)
}

/// Ticks after which a container's limits are read again though its
/// history did not grow (someone wrote its cgroup directly).
pub const LIMITS_REREAD_TICKS: u32 = 10;

/// What the collector found at one tick.
#[derive(Debug, Default)]
pub struct Collected {
    /// Each running container's values.
    pub containers: BTreeMap<Key, Stats>,
    /// And its live limits (read with them, for the same containers).
    pub limits: BTreeMap<Key, Limits>,
    pub node: NodeSample,
    /// Containers whose process runs but whose cgroup could not be read.
    pub errors: Vec<String>,
}

impl Collected {
    /// Whether everything that should have been read was.
    pub fn complete(&self) -> bool {
        self.errors.is_empty() && self.node.errors.is_empty()
    }
}

/// The collector's settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub node: NodePaths,
    /// Most files the collector keeps open (about ten to twelve per
    /// container: statistics and limits); the rest are opened per read.
    pub keep_open_files: usize,
}

/// Most files kept open by default: 200 containers' worth (tidald keeps
/// it under half of its descriptors).
pub const DEFAULT_KEEP_OPEN_FILES: usize = 2400;

/// The collector: the containers' cgroups and files and the node's, kept
/// between ticks.
pub struct Collector {
    node: NodeReader,
    watched: HashMap<Key, Watched>,
    resolve: Resolver,
    /// Whether a process runs (the host's, unless a test says otherwise).
    alive: Box<dyn Fn(i32) -> bool + Send>,
    keep_open_files: usize,
}

impl Collector {
    /// A collector of this host's cgroups (`Cgroup::of_pid`).
    pub fn new(opts: Options) -> Collector {
        Collector::with_resolver(opts, Box::new(Cgroup::of_pid))
    }

    /// A collector that finds cgroups with `resolve`.
    pub fn with_resolver(opts: Options, resolve: Resolver) -> Collector {
        Collector {
            node: NodeReader {
                paths: opts.node,
                files: Files::watched(),
                cpu: None,
            },
            watched: HashMap::new(),
            resolve,
            alive: Box::new(crate::sys::alive),
            keep_open_files: opts.keep_open_files,
        }
    }

    /// Says whether a process runs with `alive` (tests).
    pub fn with_alive(mut self, alive: impl Fn(i32) -> bool + Send + 'static) -> Collector {
        self.alive = Box::new(alive);
        self
    }

    /// Files the collector has open.
    pub fn open_files(&self) -> usize {
        self.node.files.len() + self.watched.values().map(|w| w.files.len()).sum::<usize>()
    }

    /// Reads the node and `running` containers (key, init pid, last
    /// revision of its history); forgets the containers not among them.
    /// Statistics are read at every tick; a container's limits only change
    /// through revisions (the resize path records every change it makes),
    /// so they are read again when its last revision is another, and every
    /// `LIMITS_REREAD_TICKS` ticks in case its cgroup was written directly.
    pub fn collect(&mut self, running: &[(Key, i32, u64)]) -> Collected {
        let mut out = Collected {
            node: self.node.read(),
            ..Default::default()
        };
        let keep: std::collections::HashSet<&Key> = running.iter().map(|(k, ..)| k).collect();
        self.watched.retain(|k, _| keep.contains(k));
        let mut open = self.open_files();
        for (key, pid, revision) in running {
            // A new process under the same name: resolved again.
            if self.watched.get(key).is_some_and(|w| w.pid != *pid) {
                self.watched.remove(key);
            }
            if !self.watched.contains_key(key) {
                match (self.resolve)(*pid) {
                    Ok(cgroup) => {
                        self.watched.insert(
                            key.clone(),
                            Watched {
                                pid: *pid,
                                cgroup,
                                files: Files::watched(),
                                limits: None,
                                inactive: None,
                            },
                        );
                    }
                    Err(e) => {
                        if (self.alive)(*pid) {
                            out.errors.push(format!(
                                "{}/{}: cgroup of pid {pid}: {e}",
                                key.namespace, key.id
                            ));
                        }
                        continue;
                    }
                }
            }
            let w = self.watched.get_mut(key).expect("inserted above");
            let before = w.files.len();
            let mut once = Files::default();
            let files = if before > 0 || open < self.keep_open_files {
                &mut w.files
            } else {
                &mut once
            };
            let mut stats = w.cgroup.stats(files);
            stats.inactive_file_bytes = match &mut w.inactive {
                Some((bytes, then, age)) if !inactive_is_stale(*then, *age, stats.memory_bytes) => {
                    *age += 1;
                    *bytes
                }
                cached => {
                    let bytes = w.cgroup.inactive_file(files);
                    *cached = Some((bytes, stats.memory_bytes.unwrap_or(0), 0));
                    bytes
                }
            };
            let limits = match &mut w.limits {
                Some((limits, at, age)) if at == revision && *age + 1 < LIMITS_REREAD_TICKS => {
                    *age += 1;
                    limits.clone()
                }
                cached => {
                    let limits = crate::cgroups::read_limits_with(&w.cgroup, files);
                    *cached = Some((limits.clone(), *revision, 0));
                    limits
                }
            };
            open = open + w.files.len() - before;
            if stats.cpu_ns.is_none() && stats.memory_bytes.is_none() {
                // Gone since it was listed, or broken.
                let pid = w.pid;
                self.watched.remove(key);
                if (self.alive)(pid) {
                    out.errors.push(format!(
                        "{}/{}: its cgroup reads nothing (pid {pid} runs)",
                        key.namespace, key.id
                    ));
                }
                continue;
            }
            out.limits.insert(key.clone(), limits);
            out.containers.insert(key.clone(), stats);
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testfs::{FakeCgroup, FakeDir};
    use std::time::Duration;

    const STAT: &str = "cpu  100 0 100 700 100 0 0 0 0 0\n\
                        cpu0 50 0 50 350 50 0 0 0 0 0\n\
                        cpu1 50 0 50 350 50 0 0 0 0 0\n\
                        intr 12345 0 0\nctxt 999\n";
    const MEMINFO: &str = "MemTotal:        8000000 kB\nMemFree:          100000 kB\n\
                           MemAvailable:     2000000 kB\nBuffers: 1 kB\n";
    const PSI: &str = "some avg10=5.00 avg60=1.00 avg300=0.00 total=100\n\
                       full avg10=2.50 avg60=0.50 avg300=0.00 total=50\n";

    pub(crate) fn fake_node(dir: &FakeDir) -> NodePaths {
        std::fs::write(dir.join("stat"), STAT).unwrap();
        std::fs::write(dir.join("meminfo"), MEMINFO).unwrap();
        std::fs::create_dir_all(dir.join("pressure")).unwrap();
        for f in ["cpu", "memory", "io"] {
            std::fs::write(dir.join("pressure").join(f), PSI).unwrap();
        }
        NodePaths {
            stat: dir.join("stat"),
            meminfo: dir.join("meminfo"),
            pressure: dir.join("pressure"),
            state_dir: dir.path(),
        }
    }

    fn key(id: &str) -> Key {
        Key {
            namespace: "k8s.io".into(),
            id: id.into(),
        }
    }

    #[test]
    fn node_values_from_proc_files_kept_open() {
        assert_eq!(parse_proc_stat(STAT), Some((800, 1000, 2)));
        assert_eq!(parse_proc_stat("intr 1\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 2\n"), None);
        assert_eq!(
            parse_meminfo(MEMINFO),
            (Some(8_192_000_000), Some(2_048_000_000))
        );
        let dir = FakeDir::new("node", &[]);
        let paths = fake_node(&dir);
        let mut c = Collector::with_resolver(
            Options {
                node: paths.clone(),
                keep_open_files: 10,
            },
            Box::new(|_| Err(io::ErrorKind::NotFound.into())),
        );
        let first = c.collect(&[]);
        assert!(first.complete(), "{:?}", first.node.errors);
        let n = &first.node;
        assert_eq!((n.cpus, n.cpu_idle), (2, None), "no interval yet");
        assert_eq!(n.memory_available_bytes, Some(2_048_000_000));
        assert_eq!(n.memory_pressure.unwrap().full.unwrap().avg10, 2.5);
        assert_eq!(n.io_pressure.unwrap().some.avg10, 5.0);
        let free = n.state_dir_free.unwrap();
        assert!(free > 0.0 && free <= 1.0, "{free}");
        assert_eq!(c.open_files(), 5, "stat, meminfo, three pressure files");
        // 100 more ticks, 30 of them idle.
        std::fs::write(
            &paths.stat,
            STAT.replace("cpu  100 0 100 700 100", "cpu  150 0 120 725 105"),
        )
        .unwrap();
        let second = c.collect(&[]);
        assert!((second.node.cpu_idle.unwrap() - 0.3).abs() < 1e-9);
        assert_eq!(c.open_files(), 5);
        // No pressure files (an older kernel): fine. No meminfo: an error.
        std::fs::remove_dir_all(&paths.pressure).unwrap();
        std::fs::remove_file(&paths.meminfo).unwrap();
        let third = Collector::with_resolver(
            Options {
                node: paths,
                keep_open_files: 10,
            },
            Box::new(|_| Err(io::ErrorKind::NotFound.into())),
        )
        .collect(&[]);
        assert_eq!(third.node.cpu_pressure, None);
        assert!(!third.complete());
        assert!(
            third.node.errors[0].contains("meminfo"),
            "{:?}",
            third.node.errors
        );
    }

    /// A v1 container's cgroup on a fake cgroupfs.
    pub(crate) fn fake_v1(name: &str, cpu_ns: u64) -> FakeCgroup {
        FakeCgroup::v1(
            name,
            &[
                ("cpuacct/cpuacct.usage", &format!("{cpu_ns}\n")),
                (
                    "cpu/cpu.stat",
                    "nr_periods 10\nnr_throttled 1\nthrottled_time 5\n",
                ),
                ("memory/memory.usage_in_bytes", "1000\n"),
                ("memory/memory.stat", "total_inactive_file 400\n"),
                ("memory/memory.oom_control", "oom_kill 0\n"),
            ],
        )
    }

    #[test]
    fn containers_come_and_go_without_errors() {
        let dir = FakeDir::new("node", &[]);
        let a = fake_v1("a", 1000);
        let b = FakeCgroup::v2(
            "b",
            &[
                ("cpu.stat", "usage_usec 5\n"),
                ("memory.current", "77\n"),
                ("memory.stat", "inactive_file 7\n"),
                ("memory.events", "oom_kill 1\n"),
            ],
        );
        let cgroups: HashMap<i32, Cgroup> =
            [(1, a.cgroup().clone()), (2, b.cgroup().clone())].into();
        let resolved = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = resolved.clone();
        let mut c = Collector::with_resolver(
            Options {
                node: fake_node(&dir),
                keep_open_files: 100,
            },
            Box::new(move |pid| {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                cgroups
                    .get(&pid)
                    .cloned()
                    .ok_or_else(|| io::ErrorKind::NotFound.into())
            }),
        )
        .with_alive(|pid| pid != 3);
        let got = c.collect(&[(key("a"), 1, 0), (key("b"), 2, 0)]);
        assert!(got.complete(), "{:?}", got.errors);
        assert_eq!(got.containers[&key("a")].working_set(), Some(600));
        assert_eq!(got.containers[&key("b")].cpu_ns, Some(5000));
        assert_eq!(got.containers[&key("b")].oom_kills, Some(1));
        // Kept: a's 5 files, b's 4 (no pressure files), the node's 5.
        assert_eq!(c.open_files(), 14);
        a.set("cpuacct/cpuacct.usage", "2000\n");
        let got = c.collect(&[(key("a"), 1, 0), (key("b"), 2, 0)]);
        assert_eq!(got.containers[&key("a")].cpu_ns, Some(2000));
        assert_eq!(
            resolved.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "resolved once each"
        );
        // b went away: forgotten, its files closed.
        let got = c.collect(&[(key("a"), 1, 0)]);
        assert!(got.complete());
        assert_eq!(got.containers.len(), 1);
        assert_eq!(c.open_files(), 10);
        // c's process exited before its cgroup was found; a's cgroup was
        // removed after the listing (its process gone too): no errors.
        let a_dir = a
            .cgroup()
            .dir("memory")
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        drop(a);
        assert!(!a_dir.exists());
        let got = c.collect(&[(key("a"), 3, 0), (key("c"), 3, 0)]);
        assert!(got.complete(), "{:?}", got.errors);
        assert!(got.containers.is_empty());
        // A running process whose cgroup cannot be found is an error.
        let got = c.collect(&[(key("d"), 4, 0)]);
        assert!(!got.complete());
        assert!(
            got.errors[0].starts_with("k8s.io/d: cgroup of pid 4: "),
            "{:?}",
            got.errors
        );
    }

    #[test]
    fn files_kept_open_stay_within_the_budget() {
        let dir = FakeDir::new("node", &[]);
        let fakes: Vec<FakeCgroup> = (0..10).map(|i| fake_v1(&format!("c{i}"), 1)).collect();
        let cgroups: Vec<Cgroup> = fakes.iter().map(|f| f.cgroup().clone()).collect();
        let mut c = Collector::with_resolver(
            Options {
                node: fake_node(&dir),
                keep_open_files: 20,
            },
            Box::new(move |pid| Ok(cgroups[pid as usize].clone())),
        );
        let running: Vec<(Key, i32, u64)> =
            (0..10).map(|i| (key(&format!("c{i}")), i, 0)).collect();
        for _ in 0..3 {
            let got = c.collect(&running);
            assert_eq!(got.containers.len(), 10);
            assert!(c.open_files() <= 20 + 5, "{}", c.open_files());
        }
    }

    /// A collector on the fake node in `dir` whose every pid is in `cg`.
    fn one_cgroup(dir: &FakeDir, cg: &FakeCgroup) -> Collector {
        let cg = cg.cgroup().clone();
        Collector::with_resolver(
            Options {
                node: fake_node(dir),
                keep_open_files: 100,
            },
            Box::new(move |_| Ok(cg.clone())),
        )
    }

    #[test]
    fn limits_are_read_again_when_a_revision_is_added_or_ten_ticks_passed() {
        let dir = FakeDir::new("node", &[]);
        let a = FakeCgroup::v1(
            "limits",
            &[
                ("cpuacct/cpuacct.usage", "1\n"),
                ("memory/memory.usage_in_bytes", "1000\n"),
                ("cpu/cpu.cfs_quota_us", "50000\n"),
                ("cpu/cpu.cfs_period_us", "100000\n"),
            ],
        );
        let mut c = one_cgroup(&dir, &a);
        let mut quota =
            |revision: u64| c.collect(&[(key("a"), 1, revision)]).limits[&key("a")].cpu_quota_us;
        assert_eq!(quota(3), Some(50_000));
        a.set("cpu/cpu.cfs_quota_us", "20000\n");
        assert_eq!(quota(3), Some(50_000), "no new revision: as read");
        assert_eq!(quota(4), Some(20_000), "a new revision: read again");
        // Written behind tidal's back: seen within LIMITS_REREAD_TICKS.
        a.set("cpu/cpu.cfs_quota_us", "30000\n");
        let seen = (1..=LIMITS_REREAD_TICKS)
            .find(|_| quota(4) == Some(30_000))
            .expect("read again");
        assert_eq!(
            seen, LIMITS_REREAD_TICKS,
            "the tenth tick after the last read"
        );
    }

    #[test]
    fn inactive_file_is_read_again_when_usage_moves_or_ten_ticks_passed() {
        let dir = FakeDir::new("node", &[]);
        let mib = 1u64 << 20;
        let a = FakeCgroup::v1(
            "inactive",
            &[
                ("cpuacct/cpuacct.usage", "1\n"),
                ("memory/memory.usage_in_bytes", &format!("{}\n", 100 * mib)),
                (
                    "memory/memory.stat",
                    &format!("total_inactive_file {}\n", 40 * mib),
                ),
            ],
        );
        let mut c = one_cgroup(&dir, &a);
        let mut working_set = || {
            c.collect(&[(key("a"), 1, 0)]).containers[&key("a")]
                .working_set()
                .unwrap()
        };
        assert_eq!(working_set(), 60 * mib);
        a.set(
            "memory/memory.stat",
            &format!("total_inactive_file {}\n", 10 * mib),
        );
        assert_eq!(working_set(), 60 * mib, "usage steady: as read");
        // Usage moves by 2 MiB of 100 (under 1/32): still as read.
        a.set("memory/memory.usage_in_bytes", &format!("{}\n", 102 * mib));
        assert_eq!(working_set(), 62 * mib);
        // By 8 MiB: read again.
        a.set("memory/memory.usage_in_bytes", &format!("{}\n", 110 * mib));
        assert_eq!(working_set(), 100 * mib, "usage moved: read again");
        // Changed with usage steady: seen on the tenth tick after that read.
        a.set(
            "memory/memory.stat",
            &format!("total_inactive_file {}\n", 30 * mib),
        );
        let seen = (1..=LIMITS_REREAD_TICKS)
            .find(|_| working_set() == 80 * mib)
            .expect("read again");
        assert_eq!(seen, LIMITS_REREAD_TICKS);
    }

    /// On this host (cgroup v1, run as root): the test's own cgroup, read
    /// twice through kept files, gives growing CPU time and a working set.
    #[test]
    fn this_hosts_cgroup_reads_through_kept_files() {
        let Ok(cg) = Cgroup::of_pid(std::process::id() as i32) else {
            eprintln!("skipped: no cgroup for this process");
            return;
        };
        let mut files = Files::watched();
        let s1 = crate::cgroups::read_stats_with(&cg, &mut files);
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        let s2 = crate::cgroups::read_stats_with(&cg, &mut files);
        if let (Some(a), Some(b)) = (s1.cpu_ns, s2.cpu_ns) {
            assert!(b > a, "{a} then {b}");
        }
        if s2.memory_bytes.is_some() {
            assert!(s2.working_set().unwrap() > 0);
            assert!(s2.inactive_file_bytes.is_some(), "{s2:?}");
        }
        assert!(!files.is_empty());
        let node = NodeReader {
            paths: NodePaths::host(Path::new("/")),
            files: Files::watched(),
            cpu: None,
        }
        .read();
        assert!(node.errors.is_empty(), "{:?}", node.errors);
        assert!(node.cpus >= 1 && node.memory_total_bytes.unwrap() > 0);
    }
}

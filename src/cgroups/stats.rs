//! containerd's cgroup Metrics (v1 `io.containerd.cgroups.v1.Metrics`, v2
//! `io.containerd.cgroups.v2.Metrics`), read straight from cgroupfs.

//!
//! One number per file; "max" (no limit) and a missing file read as 0,
//! containerd's "unset".

use std::collections::HashMap;
use std::io;
use std::path::Path;

use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};

use super::{Cgroup, Files, Hierarchy};

/// Metrics of `cg` packed as the Any that Task.Stats returns.
pub fn metrics(cg: &Cgroup) -> io::Result<Any> {
    cg.metrics(&mut Files::default())
}

/// `m` packed as an Any of type `type_url`.
pub fn pack(type_url: &str, m: &impl Message) -> io::Result<Any> {
    let mut any = Any::new();
    any.type_url = type_url.to_string();
    any.value = m.write_to_bytes().map_err(io::Error::other)?;
    Ok(any)
}

/// USER_HZ: the unit of cpuacct.stat.
const CLOCK_TICKS: u64 = 100;

/// The v1 Metrics of `cg`, from each of its controllers.
pub fn v1_metrics(cg: &dyn Hierarchy, files: &mut Files) -> v1::Metrics {
    let f = files;
    let num = |f: &mut Files, dir: &Path, file: &str| f.num(&dir.join(file)).unwrap_or(0);
    let keyed = |f: &mut Files, dir: &Path, file: &str| f.keyed(&dir.join(file));
    let mut m = v1::Metrics::new();
    let mut cpu = v1::CPUStat::new();
    if let Some(dir) = cg.dir("cpuacct") {
        let mut usage = v1::CPUUsage::new();
        usage.total = num(f, dir, "cpuacct.usage");
        usage.per_cpu = f
            .read(&dir.join("cpuacct.usage_percpu"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let stat = keyed(f, dir, "cpuacct.stat");
        let ns = |ticks: u64| ticks * 1_000_000_000 / CLOCK_TICKS;
        usage.user = ns(stat.get("user").copied().unwrap_or(0));
        usage.kernel = ns(stat.get("system").copied().unwrap_or(0));
        cpu.usage = MessageField::some(usage);
    }
    if let Some(dir) = cg.dir("cpu") {
        let stat = keyed(f, dir, "cpu.stat");
        let mut t = v1::Throttle::new();
        t.periods = stat.get("nr_periods").copied().unwrap_or(0);
        t.throttled_periods = stat.get("nr_throttled").copied().unwrap_or(0);
        t.throttled_time = stat.get("throttled_time").copied().unwrap_or(0);
        cpu.throttling = MessageField::some(t);
    }
    m.cpu = MessageField::some(cpu);

    if let Some(dir) = cg.dir("memory") {
        let entry = |f: &mut Files, prefix: &str| {
            let mut e = v1::MemoryEntry::new();
            e.usage = num(f, dir, &format!("{prefix}.usage_in_bytes"));
            e.limit = num(f, dir, &format!("{prefix}.limit_in_bytes"));
            e.max = num(f, dir, &format!("{prefix}.max_usage_in_bytes"));
            e.failcnt = num(f, dir, &format!("{prefix}.failcnt"));
            MessageField::some(e)
        };
        let s = keyed(f, dir, "memory.stat");
        let g = |k: &str| s.get(k).copied().unwrap_or(0);
        let mut mem = v1::MemoryStat::new();
        mem.cache = g("cache");
        mem.rss = g("rss");
        mem.rss_huge = g("rss_huge");
        mem.mapped_file = g("mapped_file");
        mem.dirty = g("dirty");
        mem.writeback = g("writeback");
        mem.pg_pg_in = g("pgpgin");
        mem.pg_pg_out = g("pgpgout");
        mem.pg_fault = g("pgfault");
        mem.pg_maj_fault = g("pgmajfault");
        mem.inactive_anon = g("inactive_anon");
        mem.active_anon = g("active_anon");
        mem.inactive_file = g("inactive_file");
        mem.active_file = g("active_file");
        mem.unevictable = g("unevictable");
        mem.hierarchical_memory_limit = g("hierarchical_memory_limit");
        mem.hierarchical_swap_limit = g("hierarchical_memsw_limit");
        mem.total_cache = g("total_cache");
        mem.total_rss = g("total_rss");
        mem.total_rss_huge = g("total_rss_huge");
        mem.total_mapped_file = g("total_mapped_file");
        mem.total_dirty = g("total_dirty");
        mem.total_writeback = g("total_writeback");
        mem.total_pg_pg_in = g("total_pgpgin");
        mem.total_pg_pg_out = g("total_pgpgout");
        mem.total_pg_fault = g("total_pgfault");
        mem.total_pg_maj_fault = g("total_pgmajfault");
        mem.total_inactive_anon = g("total_inactive_anon");
        mem.total_active_anon = g("total_active_anon");
        mem.total_inactive_file = g("total_inactive_file");
        mem.total_active_file = g("total_active_file");
        mem.total_unevictable = g("total_unevictable");
        mem.usage = entry(f, "memory");
        mem.swap = entry(f, "memory.memsw");
        mem.kernel = entry(f, "memory.kmem");
        mem.kernel_tcp = entry(f, "memory.kmem.tcp");
        m.memory = MessageField::some(mem);
        let oc = keyed(f, dir, "memory.oom_control");
        let mut o = v1::MemoryOomControl::new();
        o.oom_kill_disable = oc.get("oom_kill_disable").copied().unwrap_or(0);
        o.under_oom = oc.get("under_oom").copied().unwrap_or(0);
        o.oom_kill = oc.get("oom_kill").copied().unwrap_or(0);
        m.memory_oom_control = MessageField::some(o);
    }
    if let Some(dir) = cg.dir("pids") {
        let mut p = v1::PidsStat::new();
        p.current = num(f, dir, "pids.current");
        p.limit = num(f, dir, "pids.max");
        m.pids = MessageField::some(p);
    }
    m
}

/// The v2 Metrics of the cgroup in `dir`.
pub fn v2_metrics(dir: &Path, files: &mut Files) -> v2::Metrics {
    let f = files;
    let num = |f: &mut Files, file: &str| f.num(&dir.join(file)).unwrap_or(0);
    let mut m = v2::Metrics::new();
    let c = f.keyed(&dir.join("cpu.stat"));
    let g = |map: &HashMap<String, u64>, k: &str| map.get(k).copied().unwrap_or(0);
    let mut cpu = v2::CPUStat::new();
    cpu.usage_usec = g(&c, "usage_usec");
    cpu.user_usec = g(&c, "user_usec");
    cpu.system_usec = g(&c, "system_usec");
    cpu.nr_periods = g(&c, "nr_periods");
    cpu.nr_throttled = g(&c, "nr_throttled");
    cpu.throttled_usec = g(&c, "throttled_usec");
    cpu.nr_bursts = g(&c, "nr_bursts");
    cpu.burst_usec = g(&c, "burst_usec");
    m.cpu = MessageField::some(cpu);

    let s = f.keyed(&dir.join("memory.stat"));
    let mut mem = v2::MemoryStat::new();
    mem.anon = g(&s, "anon");
    mem.file = g(&s, "file");
    mem.kernel_stack = g(&s, "kernel_stack");
    mem.slab = g(&s, "slab");
    mem.sock = g(&s, "sock");
    mem.shmem = g(&s, "shmem");
    mem.file_mapped = g(&s, "file_mapped");
    mem.file_dirty = g(&s, "file_dirty");
    mem.file_writeback = g(&s, "file_writeback");
    mem.anon_thp = g(&s, "anon_thp");
    mem.inactive_anon = g(&s, "inactive_anon");
    mem.active_anon = g(&s, "active_anon");
    mem.inactive_file = g(&s, "inactive_file");
    mem.active_file = g(&s, "active_file");
    mem.unevictable = g(&s, "unevictable");
    mem.slab_reclaimable = g(&s, "slab_reclaimable");
    mem.slab_unreclaimable = g(&s, "slab_unreclaimable");
    mem.pgfault = g(&s, "pgfault");
    mem.pgmajfault = g(&s, "pgmajfault");
    mem.usage = num(f, "memory.current");
    mem.usage_limit = num(f, "memory.max");
    mem.swap_usage = num(f, "memory.swap.current");
    mem.swap_limit = num(f, "memory.swap.max");
    mem.max_usage = num(f, "memory.peak");
    m.memory = MessageField::some(mem);

    let e = f.keyed(&dir.join("memory.events"));
    let mut ev = v2::MemoryEvents::new();
    ev.low = g(&e, "low");
    ev.high = g(&e, "high");
    ev.max = g(&e, "max");
    ev.oom = g(&e, "oom");
    ev.oom_kill = g(&e, "oom_kill");
    m.memory_events = MessageField::some(ev);

    let mut p = v2::PidsStat::new();
    p.current = num(f, "pids.current");
    p.limit = num(f, "pids.max");
    m.pids = MessageField::some(p);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn v2_metrics_come_from_the_unified_files() {
        let dir = crate::testfs::FakeDir::new(
            "v2",
            &[
                ("cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\nnr_throttled 2\nthrottled_usec 77\n"),
                ("memory.current", "4096\n"),
                ("memory.max", "max\n"),
                ("memory.stat", "anon 1024\nfile 2048\npgfault 9\n"),
                ("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
                ("pids.current", "2\n"),
                ("pids.max", "100\n"),
            ],
        );
        let m = v2_metrics(&dir, &mut Files::default());
        assert_eq!(m.cpu.usage_usec, 1500);
        assert_eq!(m.cpu.nr_throttled, 2);
        assert_eq!(m.cpu.throttled_usec, 77);
        assert_eq!(m.memory.usage, 4096);
        assert_eq!(m.memory.usage_limit, 0, "max means unlimited");
        assert_eq!(m.memory.anon, 1024);
        assert_eq!(m.memory_events.oom_kill, 1);
        assert_eq!((m.pids.current, m.pids.limit), (2, 100));
        let any = metrics(&Cgroup::v2(dir.path())).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        assert_eq!(v2::Metrics::parse_from_bytes(&any.value).unwrap(), m);
    }

    #[test]
    fn v1_metrics_come_from_each_controller() {
        let cpuacct = crate::testfs::FakeDir::new(
            "v1acct",
            &[
                ("cpuacct.usage", "123456789\n"),
                ("cpuacct.usage_percpu", "100 200 \n"),
                ("cpuacct.stat", "user 5\nsystem 2\n"),
            ],
        );
        let cpu = crate::testfs::FakeDir::new(
            "v1cpu",
            &[(
                "cpu.stat",
                "nr_periods 4\nnr_throttled 1\nthrottled_time 999\n",
            )],
        );
        let memory = crate::testfs::FakeDir::new(
            "v1mem",
            &[
                ("memory.usage_in_bytes", "8192\n"),
                ("memory.limit_in_bytes", "33554432\n"),
                ("memory.max_usage_in_bytes", "9000\n"),
                ("memory.failcnt", "3\n"),
                ("memory.stat", "cache 10\nrss 20\ntotal_rss 20\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
            ],
        );
        let cg = Cgroup::v1(BTreeMap::from([
            ("cpuacct".to_string(), cpuacct.path()),
            ("cpu".to_string(), cpu.path()),
            ("memory".to_string(), memory.path()),
        ]));
        let m = v1_metrics(&*cg, &mut Files::kept());
        assert_eq!(m.cpu.usage.total, 123456789);
        assert_eq!(m.cpu.usage.per_cpu, vec![100, 200]);
        assert_eq!(m.cpu.usage.user, 50_000_000, "5 ticks of 10ms");
        assert_eq!(m.cpu.throttling.throttled_time, 999);
        assert_eq!(m.memory.usage.usage, 8192);
        assert_eq!(m.memory.usage.limit, 33554432);
        assert_eq!(m.memory.usage.failcnt, 3);
        assert_eq!(m.memory.rss, 20);
        assert_eq!(m.memory_oom_control.oom_kill, 2);
        assert!(m.pids.is_none(), "no pids controller, no pids stats");
        let any = metrics(&cg).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        assert_eq!(v1::Metrics::parse_from_bytes(&any.value).unwrap(), m);
    }
}

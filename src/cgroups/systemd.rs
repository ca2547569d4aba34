//! A systemd-driver container's unit kept in step with its cgroup. tidal
//! resizes by writing the cgroup's files (the fast path, with its checks);
//! systemd writes a unit's own properties back into those files whenever it
//! applies the unit again (`systemctl daemon-reload`, any property change),
//! which would undo a resize. So after each resize the unit is told the
//! cgroup's values as they now are (SetUnitProperties, runtime only), read
//! from its files: what systemd then writes is what is there. On the legacy
//! (v1) hierarchy, where libcontainer leaves systemd out, tidal also starts
//! and stops the scope itself.

use std::path::Path;

use super::{Cgroup, Version};
use crate::dbus::{self, Arg, Connection, Value};

/// The unit properties for the values in the v2 cgroup `dir`, each from its
/// file (a missing file, e.g. a controller not enabled, gives none).
pub fn properties(dir: &Path) -> Vec<(String, Value)> {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let limit = |s: &str| match s {
        "max" => Some(u64::MAX),
        n => n.parse().ok(),
    };
    let mut props = Vec::new();
    let mut put = |name: &str, v: Value| props.push((name.to_string(), v));
    if let Some(max) = read("cpu.max") {
        let mut parts = max.split_whitespace();
        let quota = parts.next().and_then(limit);
        let period: Option<u64> = parts.next().and_then(|p| p.parse().ok());
        if let (Some(quota), Some(period)) = (quota, period.filter(|p| *p > 0)) {
            let per_sec = quota_per_sec((quota != u64::MAX).then_some(quota), period);
            put("CPUQuotaPerSecUSec", Value::U64(per_sec));
            put("CPUQuotaPeriodUSec", Value::U64(period));
        }
    }
    if let Some(w) = read("cpu.weight").and_then(|w| w.parse().ok()) {
        put("CPUWeight", Value::U64(w));
    }
    for (file, prop) in [
        ("memory.max", "MemoryMax"),
        ("memory.high", "MemoryHigh"),
        ("memory.low", "MemoryLow"),
        ("memory.min", "MemoryMin"),
        ("memory.swap.max", "MemorySwapMax"),
        ("pids.max", "TasksMax"),
    ] {
        if let Some(v) = read(file).as_deref().and_then(limit) {
            put(prop, Value::U64(v));
        }
    }
    for (file, prop) in [
        ("cpuset.cpus", "AllowedCPUs"),
        ("cpuset.mems", "AllowedMemoryNodes"),
    ] {
        if let Some(list) = read(file) {
            if let Some(mask) = bitmask(&list) {
                put(prop, Value::Bytes(mask));
            }
        }
    }
    props
}

/// A CFS quota per `period` (None: no quota) as systemd's
/// `CPUQuotaPerSecUSec`. systemd keeps a quota per second and writes quota *
/// period / 1s back: rounded up, it gives the same quota again.
fn quota_per_sec(quota: Option<u64>, period: u64) -> u64 {
    match quota {
        Some(q) => (q * 1_000_000).div_ceil(period),
        None => u64::MAX,
    }
}

/// Calls `member` of systemd's Manager over a new system bus connection.
fn manager(member: &str, args: &[Arg]) -> Result<(), dbus::DbusError> {
    Connection::system()?.call(
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        member,
        args,
    )?;
    Ok(())
}

/// A cpu list (`0-2,5`) as systemd's bitmask: bit `n % 8` of byte `n / 8`
/// for each `n`; empty for an empty list (the parent's).
fn bitmask(list: &str) -> Option<Vec<u8>> {
    let mut mask = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let n = part.parse::<usize>().ok()?;
                (n, n)
            }
        };
        if hi < lo || hi >= 8192 {
            return None;
        }
        for n in lo..=hi {
            if mask.len() <= n / 8 {
                mask.resize(n / 8 + 1, 0);
            }
            mask[n / 8] |= 1 << (n % 8);
        }
    }
    Some(mask)
}

/// The unit properties for the values of the v1 cgroup whose controllers'
/// directories `dir` gives, as systemd names them on the legacy hierarchy
/// (`CPUShares`, `MemoryLimit`; cpusets are not systemd's there).
pub fn properties_v1<'a>(dir: impl Fn(&str) -> Option<&'a Path>) -> Vec<(String, Value)> {
    let read = |ctrl: &str, f: &str| {
        std::fs::read_to_string(dir(ctrl)?.join(f))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let mut props = Vec::new();
    let mut put = |name: &str, v: u64| props.push((name.to_string(), Value::U64(v)));
    if let Some(shares) = read("cpu", "cpu.shares").and_then(|v| v.parse().ok()) {
        put("CPUShares", shares);
    }
    let quota = read("cpu", "cpu.cfs_quota_us").and_then(|v| v.parse::<i64>().ok());
    let period = read("cpu", "cpu.cfs_period_us").and_then(|v| v.parse::<u64>().ok());
    if let (Some(quota), Some(period)) = (quota, period.filter(|p| *p > 0)) {
        // -1: no quota.
        put(
            "CPUQuotaPerSecUSec",
            quota_per_sec(u64::try_from(quota).ok(), period),
        );
        put("CPUQuotaPeriodUSec", period);
    }
    // The kernel's "no limit" is the largest page multiple below 2^63.
    if let Some(limit) = read("memory", "memory.limit_in_bytes").and_then(|v| v.parse::<u64>().ok())
    {
        put(
            "MemoryLimit",
            if limit >= 1 << 62 { u64::MAX } else { limit },
        );
    }
    match read("pids", "pids.max").as_deref() {
        Some("max") => put("TasksMax", u64::MAX),
        Some(n) => {
            if let Ok(n) = n.parse() {
                put("TasksMax", n)
            }
        }
        None => {}
    }
    if let Some(w) = read("blkio", "blkio.weight").and_then(|v| v.parse().ok()) {
        if w > 0 {
            put("BlockIOWeight", w);
        }
    }
    props
}

/// The device rules of a v1 devices cgroup, `list` as its `devices.list`
/// gives them (the kernel's result of every allow and deny written), as
/// systemd's `DevicePolicy` and `DeviceAllow`: a scope whose devices
/// controller systemd manages gets exactly these rules back whenever
/// systemd applies the unit. `proc_devices` is `/proc/devices`, for the
/// driver names that stand for a whole major (`char-pts`). A rule systemd
/// cannot say (`c *:5`) is an error: leaving it out would change what the
/// container may open.
pub fn device_properties(list: &str, proc_devices: &str) -> Result<Vec<(String, Value)>, String> {
    let mut allow = Vec::new();
    for line in list.lines().filter(|l| !l.trim().is_empty()) {
        let bad = || format!("device rule {line:?}");
        let mut f = line.split_whitespace();
        let (kind, numbers, access) = (
            f.next().ok_or_else(bad)?,
            f.next().ok_or_else(bad)?,
            f.next().ok_or_else(bad)?,
        );
        let (major, minor) = numbers.split_once(':').ok_or_else(bad)?;
        let group = match kind {
            "a" => {
                // Every device: systemd's "auto" policy with no list.
                return Ok(vec![("DevicePolicy".into(), Value::Str("auto".into()))]);
            }
            "c" => "char",
            "b" => "block",
            _ => return Err(bad()),
        };
        let device = match (major, minor) {
            ("*", "*") => format!("{group}-*"),
            ("*", _) => return Err(format!("{} (systemd has no *:N rules)", bad())),
            (major, "*") => format!(
                "{group}-{}",
                driver_name(proc_devices, group, major).ok_or_else(|| format!(
                    "{}: no {group} driver {major} in /proc/devices",
                    bad()
                ))?
            ),
            (major, minor) => format!("/dev/{group}/{major}:{minor}"),
        };
        allow.push((device, access.to_string()));
    }
    Ok(vec![
        ("DevicePolicy".into(), Value::Str("strict".into())),
        ("DeviceAllow".into(), Value::Pairs(allow)),
    ])
}

/// The driver name `/proc/devices` gives major `major` of `group` (`char`
/// or `block`).
fn driver_name(proc_devices: &str, group: &str, major: &str) -> Option<String> {
    let header = match group {
        "char" => "Character devices:",
        _ => "Block devices:",
    };
    proc_devices
        .lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| {
            let (m, name) = l.trim().split_once(' ')?;
            (m == major).then(|| name.trim().to_string())
        })
}

/// The unit properties for the values of cgroup `cg`, of either version.
pub fn properties_of(cg: &Cgroup) -> Vec<(String, Value)> {
    match cg.version() {
        Version::V2 => cg.procs_dir().map(properties).unwrap_or_default(),
        Version::V1 => properties_v1(|ctrl| cg.dir(ctrl)),
    }
}

/// Asks systemd for the transient scope `unit` in `slice` holding `pid`,
/// with the cgroup values `props`, and waits until `pid` is in it. On the
/// legacy hierarchy libcontainer does not speak to systemd: its container is
/// made in the scope's cgroup path, and then moved under systemd's
/// management here, as runc does. Delegated: systemd leaves the
/// container's own sub-cgroups alone.
pub fn start_scope(
    unit: &str,
    slice: &str,
    pid: i32,
    description: &str,
    props: Vec<(String, Value)>,
) -> Result<(), dbus::DbusError> {
    let mut all = vec![
        (
            "Description".to_string(),
            Value::Str(description.to_string()),
        ),
        ("Slice".to_string(), Value::Str(slice.to_string())),
        ("PIDs".to_string(), Value::U32s(vec![pid as u32])),
        ("Delegate".to_string(), Value::Bool(true)),
        ("DefaultDependencies".to_string(), Value::Bool(false)),
        ("CPUAccounting".to_string(), Value::Bool(true)),
        ("MemoryAccounting".to_string(), Value::Bool(true)),
        ("TasksAccounting".to_string(), Value::Bool(true)),
    ];
    all.extend(props);
    manager(
        "StartTransientUnit",
        &[
            Arg::Str(unit.to_string()),
            Arg::Str("replace".to_string()),
            Arg::Props(all),
            Arg::NoAuxUnits,
        ],
    )?;
    // The call queues a job; the process is in the scope once it has run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let suffix = format!("/{unit}");
    loop {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let placed = cgroup.lines().any(|l| {
            (l.contains(":name=systemd:") || l.starts_with("0::")) && l.ends_with(&suffix)
        });
        if placed {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(dbus::DbusError::Protocol(format!(
                "systemd did not move process {pid} into {unit} within 10s"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The hierarchies of `pid` as `/proc/PID/cgroup` lists them: each line's
/// controller list (`cpu,cpuacct`, `name=systemd`; empty for the unified
/// hierarchy) and the process's path in it.
fn hierarchies(pid: i32) -> std::io::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            Some((ctrls.to_string(), path.to_string()))
        })
        .collect())
}

/// Where hierarchy `ctrls` (as in [`hierarchies`]) is mounted, from
/// `/proc/self/mountinfo`: its mount point and the cgroup at its root.
fn mount_of(ctrls: &str, mountinfo: &str) -> Option<(std::path::PathBuf, String)> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let (root, point) = (pre.get(3)?, pre.get(4)?);
        let (fstype, opts) = (post.first()?, post.get(2).unwrap_or(&""));
        let matches = match ctrls {
            "" => *fstype == "cgroup2",
            c => *fstype == "cgroup" && c.split(',').all(|want| opts.split(',').any(|o| o == want)),
        };
        matches.then(|| (std::path::PathBuf::from(point), root.to_string()))
    })
}

/// Moves `pid` into cgroup `path` of hierarchy `ctrls`.
fn join(pid: i32, ctrls: &str, path: &str, mountinfo: &str) -> std::io::Result<()> {
    let (point, root) = mount_of(ctrls, mountinfo).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("hierarchy {ctrls:?} is not mounted here"),
        )
    })?;
    let below = path.strip_prefix(root.as_str()).unwrap_or(path);
    let dir = point.join(below.trim_start_matches('/'));
    // The error as it came, so that a caller can tell ESRCH (the process
    // ended) apart.
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
}

/// Moves `pid` into `leader`'s cgroup in the hierarchies without
/// controllers (`name=systemd`, the unified one on a hybrid host) where
/// they differ: an exec into a legacy-hierarchy systemd container, which
/// libcontainer puts in the container's controller cgroups but not in
/// systemd's own hierarchies, where its scope is.
pub fn follow(pid: i32, leader: i32) -> std::io::Result<()> {
    let now: std::collections::HashMap<String, String> = hierarchies(pid)?.into_iter().collect();
    let differ: Vec<(String, String)> = hierarchies(leader)?
        .into_iter()
        .filter(|(ctrls, _)| ctrls.is_empty() || ctrls.starts_with("name="))
        .filter(|(ctrls, path)| now.get(ctrls) != Some(path))
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    for (ctrls, path) in differ {
        if mount_of(&ctrls, &mountinfo).is_some() {
            join(pid, &ctrls, &path, &mountinfo)?;
        }
    }
    Ok(())
}

/// Stops `unit`; one that is gone already is no error.
pub fn stop_unit(unit: &str) -> Result<(), dbus::DbusError> {
    let stopped = manager(
        "StopUnit",
        &[Arg::Str(unit.to_string()), Arg::Str("replace".to_string())],
    );
    match stopped {
        Err(dbus::DbusError::Remote { name, .. })
            if name == "org.freedesktop.systemd1.NoSuchUnit" =>
        {
            Ok(())
        }
        r => r,
    }
}

/// Tells systemd's `unit` the values of its cgroup `cg` now.
pub fn sync(unit: &str, cg: &Cgroup) -> Result<(), dbus::DbusError> {
    let props = properties_of(cg);
    if props.is_empty() {
        return Ok(());
    }
    manager(
        "SetUnitProperties",
        &[
            Arg::Str(unit.to_string()),
            Arg::Bool(true),
            Arg::Props(props),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_become_systemds_bitmasks() {
        assert_eq!(bitmask(""), Some(vec![]));
        assert_eq!(bitmask("0"), Some(vec![1]));
        assert_eq!(bitmask("0-2,9"), Some(vec![0b111, 0b10]));
        assert_eq!(bitmask("3-1"), None);
        assert_eq!(bitmask("x"), None);
    }

    #[test]
    fn device_rules_become_systemds_allow_list() {
        let proc_devices =
            "Character devices:\n  1 mem\n  5 /dev/tty\n136 pts\n\nBlock devices:\n  8 sd\n";
        let props = device_properties(
            "c 1:3 rwm\nc 136:* rwm\nb 8:* r\nc *:* m\nb *:* m\n",
            proc_devices,
        )
        .unwrap();
        assert_eq!(
            props,
            vec![
                ("DevicePolicy".into(), Value::Str("strict".into())),
                (
                    "DeviceAllow".into(),
                    Value::Pairs(vec![
                        ("/dev/char/1:3".into(), "rwm".into()),
                        ("char-pts".into(), "rwm".into()),
                        ("block-sd".into(), "r".into()),
                        ("char-*".into(), "m".into()),
                        ("block-*".into(), "m".into()),
                    ])
                ),
            ]
        );
        // A privileged container may open every device.
        assert_eq!(
            device_properties("a *:* rwm\n", proc_devices).unwrap(),
            vec![("DevicePolicy".into(), Value::Str("auto".into()))]
        );
        // No rule at all: nothing may be opened.
        assert_eq!(
            device_properties("", proc_devices).unwrap()[1],
            ("DeviceAllow".into(), Value::Pairs(vec![]))
        );
        for bad in ["c *:5 rwm", "c 99:* rwm", "x 1:3 rwm", "c 1:3"] {
            assert!(device_properties(bad, proc_devices).is_err(), "{bad}");
        }
    }

    #[test]
    fn hierarchies_are_found_by_their_controllers_or_name() {
        let mountinfo = "\
30 24 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
31 24 0:27 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
35 24 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
36 24 0:32 /kubepods /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
";
        let at = |c: &str| mount_of(c, mountinfo).map(|(p, r)| (p.display().to_string(), r));
        assert_eq!(at(""), Some(("/sys/fs/cgroup/unified".into(), "/".into())));
        assert_eq!(
            at("name=systemd"),
            Some(("/sys/fs/cgroup/systemd".into(), "/".into()))
        );
        assert_eq!(
            at("cpu,cpuacct"),
            Some(("/sys/fs/cgroup/cpu,cpuacct".into(), "/".into()))
        );
        assert_eq!(
            at("memory"),
            Some(("/sys/fs/cgroup/memory".into(), "/kubepods".into()))
        );
        assert_eq!(
            at("cpu").map(|m| m.0),
            Some("/sys/fs/cgroup/cpu,cpuacct".into())
        );
        assert_eq!(at("pids"), None);
    }

    #[test]
    fn each_v1_file_gives_its_legacy_property() {
        let dir = std::env::temp_dir().join(format!("tidal-systemd-v1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (f, v) in [
            ("cpu.shares", "512\n"),
            ("cpu.cfs_quota_us", "20000\n"),
            ("cpu.cfs_period_us", "100000\n"),
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("pids.max", "64\n"),
        ] {
            std::fs::write(dir.join(f), v).unwrap();
        }
        let props = properties_v1(|_| Some(dir.as_path()));
        let get = |n: &str| props.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("CPUShares"), Some(Value::U64(512)));
        assert_eq!(get("CPUQuotaPerSecUSec"), Some(Value::U64(200_000)));
        assert_eq!(get("CPUQuotaPeriodUSec"), Some(Value::U64(100_000)));
        assert_eq!(get("MemoryLimit"), Some(Value::U64(u64::MAX)), "no limit");
        assert_eq!(get("TasksMax"), Some(Value::U64(64)));
        assert_eq!(get("BlockIOWeight"), None, "no file, no property");
        std::fs::write(dir.join("cpu.cfs_quota_us"), "-1\n").unwrap();
        std::fs::write(dir.join("memory.limit_in_bytes"), "67108864\n").unwrap();
        std::fs::write(dir.join("pids.max"), "max\n").unwrap();
        let props = properties_v1(|_| Some(dir.as_path()));
        let get = |n: &str| props.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("CPUQuotaPerSecUSec"), Some(Value::U64(u64::MAX)));
        assert_eq!(get("MemoryLimit"), Some(Value::U64(67_108_864)));
        assert_eq!(get("TasksMax"), Some(Value::U64(u64::MAX)));
        // A controller that is not mounted gives none of its properties.
        let props = properties_v1(|c| (c == "memory").then_some(dir.as_path()));
        assert_eq!(props.len(), 1, "{props:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn each_v2_file_gives_its_property() {
        let dir = std::env::temp_dir().join(format!("tidal-systemd-props-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (f, v) in [
            ("cpu.max", "30000 100000\n"),
            ("cpu.weight", "79\n"),
            ("memory.max", "268435456\n"),
            ("memory.high", "max\n"),
            ("pids.max", "max\n"),
            ("cpuset.cpus", "1\n"),
        ] {
            std::fs::write(dir.join(f), v).unwrap();
        }
        let props = properties(&dir);
        let get = |n: &str| props.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("CPUQuotaPerSecUSec"), Some(Value::U64(300_000)));
        assert_eq!(get("CPUQuotaPeriodUSec"), Some(Value::U64(100_000)));
        assert_eq!(get("CPUWeight"), Some(Value::U64(79)));
        assert_eq!(get("MemoryMax"), Some(Value::U64(268_435_456)));
        assert_eq!(get("MemoryHigh"), Some(Value::U64(u64::MAX)));
        assert_eq!(get("TasksMax"), Some(Value::U64(u64::MAX)));
        assert_eq!(get("AllowedCPUs"), Some(Value::Bytes(vec![0b10])));
        assert_eq!(get("MemoryLow"), None, "no file, no property");
        std::fs::write(dir.join("cpu.max"), "max 100000\n").unwrap();
        let props = properties(&dir);
        assert!(props.contains(&("CPUQuotaPerSecUSec".into(), Value::U64(u64::MAX))));
        // A quota that is no whole number of microseconds per second comes
        // back from systemd as itself.
        std::fs::write(dir.join("cpu.max"), "100000 300000\n").unwrap();
        let props = properties(&dir);
        let Some((_, Value::U64(per_sec))) = props.iter().find(|(k, _)| k == "CPUQuotaPerSecUSec")
        else {
            panic!("{props:?}");
        };
        assert_eq!(per_sec * 300_000 / 1_000_000, 100_000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

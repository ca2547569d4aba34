//! A systemd-driver container's unit kept in step with its cgroup. tidal
//! resizes by writing the cgroup's files (the fast path, with its checks);
//! systemd writes a unit's own properties back into those files whenever it
//! applies the unit again (`systemctl daemon-reload`, any property change),
//! which would undo a resize. So after each resize the unit is told the
//! cgroup's values as they now are (SetUnitProperties, runtime only), read
//! from the v2 files: what systemd then writes is what is there.

use std::path::Path;

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
            // systemd keeps a quota per second and writes quota * period /
            // 1s back: rounded up, it gives the same quota again.
            let per_sec = match quota {
                u64::MAX => u64::MAX,
                q => (q * 1_000_000).div_ceil(period),
            };
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

/// Tells systemd's `unit` the values of its cgroup `dir` now.
pub fn sync(unit: &str, dir: &Path) -> Result<(), dbus::DbusError> {
    let props = properties(dir);
    if props.is_empty() {
        return Ok(());
    }
    let mut bus = Connection::system()?;
    bus.call(
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        "SetUnitProperties",
        &[
            Arg::Str(unit.to_string()),
            Arg::Bool(true),
            Arg::Props(props),
        ],
    )?;
    Ok(())
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

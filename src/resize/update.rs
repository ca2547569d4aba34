//! A resize request as a partial update: every field optional, validated when
//! built from OCI LinuxResources, never a value that means something else.

use oci_spec::runtime::LinuxResources;

use super::ResizeError;
pub use crate::cgroups::{Limit, Update};

/// Kernel bounds for the CFS period, in microseconds.
pub const PERIOD_RANGE: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;
/// Smallest CFS quota the kernel takes, in microseconds.
pub const MIN_QUOTA: u64 = 1_000;
/// cgroup v1 cpu.shares bounds.
pub const SHARES_RANGE: std::ops::RangeInclusive<u64> = 2..=262_144;
/// blkio weight bounds.
pub const BLKIO_RANGE: std::ops::RangeInclusive<u16> = 10..=1_000;
/// Largest byte value a cgroup file takes (an i64).
const MAX_BYTES: u64 = i64::MAX as u64;

fn invalid(field: &'static str, value: impl ToString, why: impl Into<String>) -> ResizeError {
    ResizeError::Invalid {
        field,
        value: value.to_string(),
        why: why.into(),
    }
}

/// A byte limit from OCI: -1 lifts it, 0 means "not set", anything else
/// negative or beyond i64 is refused.
fn bytes(field: &'static str, v: Option<i64>) -> Result<Option<Limit>, ResizeError> {
    match v {
        None | Some(0) => Ok(None),
        Some(-1) => Ok(Some(Limit::Max)),
        Some(n) if n < 0 => Err(invalid(field, n, "negative; use -1 for unlimited")),
        Some(n) => Ok(Some(Limit::Value(n as u64))),
    }
}

/// Checks a cpu or memory-node list ("0-3,6") against the node's list.
pub fn check_set(field: &'static str, list: &str, node: &str) -> Result<(), ResizeError> {
    let wanted = parse_set(list).map_err(|why| invalid(field, format!("{list:?}"), why))?;
    let have = parse_set(node).unwrap_or_default();
    if let Some(bad) = wanted.iter().find(|c| !have.contains(c)) {
        return Err(invalid(
            field,
            format!("{list:?}"),
            format!("{bad} is not among this node's {node:?}"),
        ));
    }
    Ok(())
}

/// Parses "0-3,6" into [0,1,2,3,6].
pub fn parse_set(list: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    if list.trim().is_empty() {
        return Err("empty list".into());
    }
    for part in list.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u32 = a
            .parse()
            .map_err(|_| format!("{part:?} is not a number or range"))?;
        let b: u32 = b
            .parse()
            .map_err(|_| format!("{part:?} is not a number or range"))?;
        if a > b || b - a > 4096 {
            return Err(format!("{part:?} is not a valid range"));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

/// What a node offers, for validating a request against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub cpus: String,
    pub mems: String,
}

/// The node's facts as this process last read them.
static FACTS: std::sync::Mutex<Option<Node>> = std::sync::Mutex::new(None);

impl Node {
    /// The node's facts as last read by this process (read on first use).
    pub fn cached() -> Self {
        FACTS.lock().unwrap().get_or_insert_with(Node::read).clone()
    }

    /// Reads the node's facts again, and keeps them.
    pub fn refreshed() -> Self {
        let now = Node::read();
        *FACTS.lock().unwrap() = Some(now.clone());
        now
    }

    pub fn read() -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "0".into())
        };
        Node {
            cpus: read("/sys/devices/system/cpu/online"),
            mems: read("/sys/devices/system/node/online"),
        }
    }
}

impl Update {
    /// Builds and validates an update from OCI resources. `node` is asked
    /// for the node's CPUs and memory nodes only when a cpuset is requested.
    pub fn from_oci(r: &LinuxResources, node: impl Fn() -> Node) -> Result<Self, ResizeError> {
        let facts = std::cell::OnceCell::new();
        let node = || facts.get_or_init(&node);
        let mut u = Update::default();
        if let Some(cpu) = r.cpu() {
            if let Some(s) = cpu.shares() {
                if s != 0 {
                    if !SHARES_RANGE.contains(&s) {
                        return Err(invalid("cpu shares", s, "must be within 2..=262144"));
                    }
                    u.cpu_shares = Some(s);
                }
            }
            if let Some(p) = cpu.period() {
                if p != 0 {
                    if !PERIOD_RANGE.contains(&p) {
                        return Err(invalid(
                            "cpu period",
                            p,
                            "must be within 1000..=1000000 microseconds",
                        ));
                    }
                    u.cpu_period = Some(p);
                }
            }
            if let Some(q) = cpu.quota() {
                u.cpu_quota = Some(match q {
                    -1 => Limit::Max,
                    q if q <= 0 => {
                        return Err(invalid(
                            "cpu quota",
                            q,
                            "zero or negative quota is refused; use -1 for unlimited",
                        ))
                    }
                    q if (q as u64) < MIN_QUOTA => {
                        return Err(invalid(
                            "cpu quota",
                            q,
                            "below the kernel's minimum of 1000 microseconds",
                        ))
                    }
                    q => Limit::Value(q as u64),
                });
            }
            if let Some(c) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
                check_set("cpuset cpus", c, &node().cpus)?;
                u.cpuset_cpus = Some(c.to_string());
            }
            if let Some(m) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
                check_set("cpuset mems", m, &node().mems)?;
                u.cpuset_mems = Some(m.to_string());
            }
        }
        if let Some(mem) = r.memory() {
            u.memory_limit = bytes("memory limit", mem.limit())?;
            u.memory_swap = bytes("memory swap", mem.swap())?;
            u.memory_reservation = bytes("memory reservation", mem.reservation())?;
            if let (Some(Limit::Value(l)), Some(Limit::Value(s))) = (u.memory_limit, u.memory_swap)
            {
                if s < l {
                    return Err(invalid(
                        "memory swap",
                        s,
                        format!("below the memory limit {l}: swap counts memory plus swap"),
                    ));
                }
            }
            for (f, v) in [
                ("memory limit", u.memory_limit),
                ("memory swap", u.memory_swap),
            ] {
                if let Some(Limit::Value(b)) = v {
                    if b > MAX_BYTES {
                        return Err(invalid(f, b, "too large"));
                    }
                }
            }
        }
        if let Some(p) = r.pids() {
            u.pids_limit = Some(match p.limit() {
                -1 => Limit::Max,
                n if n <= 0 => {
                    return Err(invalid(
                        "pids limit",
                        n,
                        "must be positive, or -1 for unlimited",
                    ))
                }
                n => Limit::Value(n as u64),
            });
        }
        if let Some(b) = r.block_io() {
            if let Some(w) = b.weight() {
                if !BLKIO_RANGE.contains(&w) {
                    return Err(invalid("blkio weight", w, "must be within 10..=1000"));
                }
                u.blkio_weight = Some(w);
            }
        }
        for h in r.hugepage_limits().iter().flatten() {
            let size = h.page_size();
            if size.is_empty() || !size.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(invalid(
                    "hugepage size",
                    format!("{size:?}"),
                    "must look like 2MB or 1GB",
                ));
            }
            u.hugetlb.insert(size.clone(), h.limit() as u64);
        }
        for (k, v) in r.unified().iter().flatten() {
            let well_formed = k.contains('.')
                && !k.starts_with('.')
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
            if !well_formed || k.starts_with("cgroup.") {
                return Err(invalid(
                    "unified key",
                    format!("{k:?}"),
                    "must name a controller file such as memory.high",
                ));
            }
            // The kernel takes a write of nothing, or of a second line, as
            // an error or as something else than asked: refused here, with
            // the key named, before anything is written.
            if v.len() > 4096 || v.trim().is_empty() || v.chars().any(|c| c.is_control()) {
                return Err(invalid("unified value", k, "must be one line with a value"));
            }
            u.unified.insert(k.clone(), v.clone());
        }
        Ok(u)
    }

    /// `from_oci` on this node: against its facts as last read, and once
    /// more against fresh ones if they refuse a cpuset (CPUs or memory
    /// nodes may have come online since). One that went offline since is
    /// refused by the kernel when written.
    pub fn from_oci_here(r: &LinuxResources) -> Result<Self, ResizeError> {
        match Self::from_oci(r, Node::cached) {
            Err(ResizeError::Invalid {
                field: "cpuset cpus" | "cpuset mems",
                ..
            }) => Self::from_oci(r, Node::refreshed),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        Node {
            cpus: "0-3".into(),
            mems: "0".into(),
        }
    }

    fn res(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    fn err(json: &str) -> String {
        Update::from_oci(&res(json), node).unwrap_err().to_string()
    }

    #[test]
    fn a_kubelet_resize_becomes_an_update() {
        let u = Update::from_oci(
            &res(r#"{"cpu":{"shares":512,"quota":50000,"period":100000},"memory":{"limit":268435456}}"#),
            node,
        )
        .unwrap();
        assert_eq!(u.cpu_shares, Some(512));
        assert_eq!(u.cpu_quota, Some(Limit::Value(50_000)));
        assert_eq!(u.cpu_period, Some(100_000));
        assert_eq!(u.memory_limit, Some(Limit::Value(256 << 20)));
        assert_eq!(u.memory_swap, None);
    }

    #[test]
    fn values_that_would_mean_something_else_are_refused() {
        assert!(err(r#"{"cpu":{"quota":0}}"#).contains("zero or negative quota"));
        assert!(err(r#"{"cpu":{"quota":-5}}"#).contains("use -1 for unlimited"));
        assert!(err(r#"{"cpu":{"quota":500}}"#).contains("minimum"));
        assert!(err(r#"{"cpu":{"period":100}}"#).contains("1000..=1000000"));
        assert!(err(r#"{"cpu":{"period":2000000}}"#).contains("1000..=1000000"));
        assert!(err(r#"{"cpu":{"shares":1}}"#).contains("2..=262144"));
        assert!(err(r#"{"memory":{"limit":-2}}"#).contains("negative"));
        assert!(err(r#"{"memory":{"limit":1000,"swap":500}}"#).contains("below the memory limit"));
        assert!(err(r#"{"pids":{"limit":0}}"#).contains("must be positive"));
        assert!(err(r#"{"blockIO":{"weight":5}}"#).contains("10..=1000"));
        assert!(err(r#"{"unified":{"../../etc/passwd":"x"}}"#).contains("controller file"));
        assert!(err(r#"{"unified":{"cgroup.procs":"1"}}"#).contains("controller file"));
        // Found by the fuzz target resize_request: a write of nothing.
        for v in [r#""""#, r#"" ""#, r#""1\n2""#, r#""1\r""#, r#""\u0000""#] {
            let e = err(&format!(r#"{{"unified":{{"memory.high":{v}}}}}"#));
            assert!(
                e.contains("memory.high") && e.contains("one line"),
                "{v}: {e}"
            );
        }
    }

    #[test]
    fn unlimited_is_spelled_minus_one() {
        let u = Update::from_oci(
            &res(r#"{"cpu":{"quota":-1},"memory":{"limit":-1},"pids":{"limit":-1}}"#),
            node,
        )
        .unwrap();
        assert_eq!(u.cpu_quota, Some(Limit::Max));
        assert_eq!(u.memory_limit, Some(Limit::Max));
        assert_eq!(u.pids_limit, Some(Limit::Max));
    }

    #[test]
    fn unset_fields_are_left_out_and_read_back_unset() {
        let u = Update {
            cpu_quota: Some(Limit::Value(50_000)),
            memory_limit: Some(Limit::Max),
            ..Default::default()
        };
        let text = serde_json::to_string(&u).unwrap();
        assert_eq!(
            text,
            r#"{"cpu_quota":{"value":50000},"memory_limit":"max","hugetlb":{},"unified":{}}"#
        );
        assert_eq!(serde_json::from_str::<Update>(&text).unwrap(), u);
        // As revisions were written before: every field, unset ones null.
        let mut old = serde_json::to_value(Update::default()).unwrap();
        for f in ["cpu_shares", "cpu_period", "pids_limit", "blkio_weight"] {
            old[f] = serde_json::Value::Null;
        }
        old["cpu_quota"] = serde_json::json!({"value": 50000});
        old["memory_limit"] = serde_json::json!("max");
        assert_eq!(serde_json::from_value::<Update>(old).unwrap(), u);
    }

    #[test]
    fn cpusets_must_exist_on_the_node() {
        assert!(Update::from_oci(&res(r#"{"cpu":{"cpus":"0-1,3"}}"#), node).is_ok());
        let e = err(r#"{"cpu":{"cpus":"2-5"}}"#);
        assert!(e.contains("4 is not among this node's \"0-3\""), "{e}");
        assert!(err(r#"{"cpu":{"cpus":"a-b"}}"#).contains("not a number"));
        assert!(err(r#"{"cpu":{"cpus":"3-1"}}"#).contains("not a valid range"));
        assert!(err(r#"{"cpu":{"mems":"1"}}"#).contains("not among"));
    }
}

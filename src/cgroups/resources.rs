//! A container's cgroup resources in OCI's terms, whichever hierarchy holds
//! them: the values a resize sets and the values read back from a cgroup
//! (each field optional, so one type serves both), and the file writes that
//! carry them out.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A limit that may be lifted entirely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Max,
    Value(u64),
}

impl Limit {
    pub fn value(self) -> Option<u64> {
        match self {
            Limit::Max => None,
            Limit::Value(v) => Some(v),
        }
    }
}

/// Calls macro `$m` with every optional (non-map) field of `Update`.
macro_rules! scalar_fields {
    ($m:ident) => {
        $m!(
            cpu_shares,
            cpu_quota,
            cpu_period,
            cpuset_cpus,
            cpuset_mems,
            memory_limit,
            memory_swap,
            memory_reservation,
            pids_limit,
            blkio_weight
        )
    };
}

/// Serialized without its unset fields (a revision names only what it
/// changed); a missing field reads back as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<Limit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_period: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuset_mems: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<Limit>,
    /// Memory plus swap, as OCI counts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<Limit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<Limit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<Limit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blkio_weight: Option<u16>,
    /// Page size ("2MB") -> limit in bytes.
    pub hugetlb: BTreeMap<String, u64>,
    /// cgroup v2 file -> value.
    pub unified: BTreeMap<String, String>,
}

impl Update {
    pub fn is_empty(&self) -> bool {
        *self == Update::default()
    }

    /// Whether this changes CPU bandwidth and weight alone (shares, quota,
    /// period): writes the kernel applies without reclaiming or moving
    /// anything, so they take microseconds.
    pub fn cpu_only(&self) -> bool {
        let cpu = Update {
            cpu_shares: self.cpu_shares,
            cpu_quota: self.cpu_quota,
            cpu_period: self.cpu_period,
            ..Default::default()
        };
        !self.is_empty() && *self == cpu
    }

    /// A mask with every field tidal reads back set.
    pub fn everything() -> Update {
        Update {
            cpu_shares: Some(0),
            cpu_quota: Some(Limit::Max),
            cpu_period: Some(0),
            cpuset_cpus: Some(String::new()),
            cpuset_mems: Some(String::new()),
            memory_limit: Some(Limit::Max),
            memory_swap: Some(Limit::Max),
            memory_reservation: Some(Limit::Max),
            pids_limit: Some(Limit::Max),
            blkio_weight: Some(0),
            ..Default::default()
        }
    }

    /// Sets every field that is unset here and set in `other`.
    pub fn fill_missing(&mut self, other: &Update) {
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = other.$f.clone(); } )* };
        }
        scalar_fields!(fill);
        for (k, v) in &other.hugetlb {
            self.hugetlb.entry(k.clone()).or_insert(*v);
        }
        for (k, v) in &other.unified {
            self.unified.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }

    /// Keeps only the fields that are set in `mask`.
    pub fn restricted_to(&self, mask: &Update) -> Update {
        let mut out = Update::default();
        macro_rules! keep {
            ($($f:ident),*) => { $( if mask.$f.is_some() { out.$f = self.$f.clone(); } )* };
        }
        scalar_fields!(keep);
        out
    }
}

/// One cgroup file write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub path: PathBuf,
    pub value: String,
}

/// A value this cgroup cannot take (no such controller, key or file here).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value}: {why}")]
pub struct Unsupported {
    pub field: &'static str,
    pub value: String,
    pub why: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_only_is_bandwidth_and_weight_and_nothing_else() {
        let quota = Update {
            cpu_quota: Some(Limit::Value(50_000)),
            ..Default::default()
        };
        assert!(quota.cpu_only());
        let all_cpu = Update {
            cpu_shares: Some(512),
            cpu_period: Some(100_000),
            ..quota.clone()
        };
        assert!(all_cpu.cpu_only());
        assert!(!Update::default().cpu_only(), "nothing to change");
        for other in [
            Update {
                memory_limit: Some(Limit::Value(64 << 20)),
                ..quota.clone()
            },
            Update {
                cpuset_cpus: Some("0".into()),
                ..quota.clone()
            },
            Update {
                unified: [("cpu.weight".to_string(), "100".to_string())].into(),
                ..quota.clone()
            },
        ] {
            assert!(!other.cpu_only(), "{other:?}");
        }
    }
}

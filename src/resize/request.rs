//! A resize as a caller asks for it (tidalctl, tidald's API, the policy
//! engine, trait controllers), and how it travels to the shim that owns the
//! container: OCI LinuxResources JSON in a Task.Update, with tidal's notes as
//! annotations (`crate::annotations::RESIZE_*`).

use crate::annotations;
use crate::cgroups::Limit;

/// CFS period tidal uses when it sets a CPU quota.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The limits a caller wants changed; what is None stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// CPU limit in millicores (a CFS quota over [`CPU_PERIOD_US`]).
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// cpuset.cpus, as the kernel spells it ("0-1,3").
    pub cpuset: Option<String>,
    /// The CPU weight as cgroup v1 `cpu.shares` (2..=262144; v2's
    /// `cpu.weight` is derived from it).
    pub cpu_shares: Option<u64>,
    /// cgroup v2's `memory.high` (OCI `unified`); refused on v1.
    pub memory_high: Option<Limit>,
    /// Lifts the CPU limit (no quota), over `cpu_millis`: how a declared
    /// "no limit" is given back.
    pub lift_cpu: bool,
    /// Lifts the memory limit, over `memory_bytes`.
    pub lift_memory: bool,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.cpu_millis.is_none()
            && self.memory_bytes.is_none()
            && self.cpuset.is_none()
            && self.cpu_shares.is_none()
            && self.memory_high.is_none()
            && !self.lift_cpu
            && !self.lift_memory
    }

    /// The OCI LinuxResources that express this change, as JSON.
    pub fn resources(&self) -> serde_json::Value {
        let mut res = serde_json::Map::new();
        let mut cpu = serde_json::Map::new();
        if self.lift_cpu {
            cpu.insert("quota".into(), (-1).into());
        } else if let Some(m) = self.cpu_millis {
            cpu.insert("quota".into(), (m * CPU_PERIOD_US / 1000).into());
            cpu.insert("period".into(), CPU_PERIOD_US.into());
        }
        if let Some(set) = &self.cpuset {
            cpu.insert("cpus".into(), set.clone().into());
        }
        if let Some(w) = self.cpu_shares {
            cpu.insert("shares".into(), w.into());
        }
        if !cpu.is_empty() {
            res.insert("cpu".into(), cpu.into());
        }
        if self.lift_memory {
            res.insert("memory".into(), serde_json::json!({ "limit": -1 }));
        } else if let Some(b) = self.memory_bytes {
            res.insert("memory".into(), serde_json::json!({ "limit": b }));
        }
        if let Some(h) = self.memory_high {
            let v = h
                .value()
                .map_or_else(|| "max".to_string(), |v| v.to_string());
            res.insert("unified".into(), serde_json::json!({ "memory.high": v }));
        }
        res.into()
    }
}

/// What a Task.Update from tidald carries besides the resources: who asked,
/// why, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notes {
    /// operator, policy, trait:NAME (kubelet's updates carry no notes).
    pub source: String,
    pub reason: String,
    /// Reclaim memory before shrinking below usage.
    pub reclaim: bool,
    /// Validate only.
    pub dry_run: bool,
    /// Restore the limits as they were right after this revision.
    pub rollback_to: Option<u64>,
    /// The container's last revision when the change was decided: the
    /// shim applies it only if that is still the last one (ABORTED if not).
    pub expect_revision: Option<u64>,
}

impl Notes {
    /// The notes as Task.Update annotations.
    pub fn annotations(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![(annotations::RESIZE_SOURCE, self.source.clone())];
        if !self.reason.is_empty() {
            out.push((annotations::RESIZE_REASON, self.reason.clone()));
        }
        if self.reclaim {
            out.push((annotations::RESIZE_RECLAIM, "true".into()));
        }
        if self.dry_run {
            out.push((annotations::RESIZE_DRY_RUN, "true".into()));
        }
        if let Some(n) = self.rollback_to {
            out.push((annotations::RESIZE_ROLLBACK, n.to_string()));
        }
        if let Some(n) = self.expect_revision {
            out.push((annotations::RESIZE_EXPECT, n.to_string()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_oci_resources_and_notes_are_annotations() {
        let c = Change {
            cpu_millis: Some(250),
            memory_bytes: Some(64 << 20),
            cpuset: Some("0".into()),
            cpu_shares: Some(512),
            memory_high: Some(Limit::Value(32 << 20)),
            ..Default::default()
        };
        assert_eq!(
            c.resources(),
            serde_json::json!({"cpu": {"quota": 25000, "period": 100000, "cpus": "0", "shares": 512},
                               "memory": {"limit": 67108864},
                               "unified": {"memory.high": "33554432"}})
        );
        let lift = Change {
            memory_high: Some(Limit::Max),
            ..Default::default()
        };
        assert_eq!(
            lift.resources(),
            serde_json::json!({"unified": {"memory.high": "max"}})
        );
        let unlimited = Change {
            cpu_millis: Some(500),
            lift_cpu: true,
            lift_memory: true,
            ..Default::default()
        };
        assert!(!unlimited.is_empty());
        assert_eq!(
            unlimited.resources(),
            serde_json::json!({"cpu": {"quota": -1}, "memory": {"limit": -1}}),
            "a lift wins over a value"
        );
        assert!(Change::default().is_empty());
        assert_eq!(Change::default().resources(), serde_json::json!({}));
        let n = Notes {
            source: "policy".into(),
            dry_run: true,
            rollback_to: Some(3),
            expect_revision: Some(7),
            ..Default::default()
        };
        assert_eq!(
            n.annotations(),
            vec![
                ("tidal.dev/source", "policy".to_string()),
                ("tidal.dev/dry-run", "true".to_string()),
                ("tidal.dev/rollback-to", "3".to_string()),
                ("tidal.dev/expect-revision", "7".to_string()),
            ]
        );
    }
}

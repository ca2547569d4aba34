//! Who owns a limit: the one model of how the writers of a container's
//! resources take turns over time (docs/ownership.md), decided here.
//!
//! The writers: kubelet (the declared limits, and CRI's
//! UpdateContainerResources, Kubernetes' in-place resize among them), the
//! trait controllers (`trait:NAME`), the policy engine (`policy`) and
//! operators (`operator`, tidalctl). Every change is a revision, so the
//! history says who set each value last (`Declared::writers`).
//!
//! 1. What kubelet declares is the base. kubelet sends every limit, so its
//!    revision sets each value back to the new declaration: every overlay on
//!    it ends there, and its writer acts again from the new base by its own
//!    rule (a cron job at its next firing, the engine at its next window).
//!    No overlay is kept at a value the new declaration did not see.
//! 2. Any other writer may set a value over whoever set it before; its
//!    revision names the writer it displaced (`displaced`, added to the
//!    reason by the resizer).
//! 3. A writer gives a value back (a cron job's end, the engine's give-back
//!    and self-heal) only while it is still the latest writer of that value
//!    (`holds`): a value someone set since is theirs, and stays. Giving back
//!    is the only way a writer undoes anything, so two writers never undo
//!    each other and no limit flaps between them: each sets values only on
//!    its own events (a firing, a window, a command).
//! 4. The policy engine may squeeze a container below a trait's value, never
//!    below its `qos` floor; a trait's next firing sets the trait's value
//!    again (rule 2), and the engine squeezes again only if the service
//!    still suffers, at most once per window.
//! 5. A change is written only over what its writer saw: it names the
//!    container's last revision when it was decided
//!    (`Notes::expect_revision`), and the shim refuses it (ABORTED) if
//!    another landed since; the writer decides again (the resizer does it
//!    for a change that names none, so that `displaced` is exact).

use std::collections::BTreeMap;

use crate::resize::{Change, Update};

/// kubelet: the declared base, displaced by no one's revision note.
const KUBELET: &str = "kubelet";

/// The limits whose writers the model follows, as `Declared::writers`
/// names them: the CPU limit (CFS quota), the CPU weight, the memory limit,
/// and cgroup v2's `memory.high`.
pub const CPU: &str = "cpu";
pub const CPU_WEIGHT: &str = "cpu.weight";
pub const MEMORY: &str = "memory";
pub const MEMORY_HIGH: &str = "memory.high";

/// Whether `source` is the latest writer of `resource` (rule 3): it may
/// give the value back.
pub fn holds(writers: &BTreeMap<String, String>, source: &str, resource: &str) -> bool {
    writers.get(resource).is_some_and(|w| w == source)
}

/// Whether a writer that yields (the vertical-autoscaler, which runs all
/// the time) may move `value`: only while it is at its declared value
/// (`at_declared`, whoever wrote it last), was never written or last by
/// kubelet, or is `source`'s own.
pub fn unclaimed_or_own(
    writers: &BTreeMap<String, String>,
    source: &str,
    value: &str,
    at_declared: bool,
) -> bool {
    at_declared
        || writers
            .get(value)
            .is_none_or(|w| w == KUBELET || w == source)
}

/// The limits `change` sets (a lift sets its value too).
pub fn set_by(change: &Change) -> Vec<&'static str> {
    [
        (CPU, change.cpu_millis.is_some() || change.lift_cpu),
        (CPU_WEIGHT, change.cpu_shares.is_some()),
        (MEMORY, change.memory_bytes.is_some() || change.lift_memory),
        (MEMORY_HIGH, change.memory_high.is_some()),
    ]
    .into_iter()
    .filter_map(|(resource, set)| set.then_some(resource))
    .collect()
}

/// The limits a write of `update` sets: a rollback's target.
pub fn set_by_update(update: &Update) -> Vec<&'static str> {
    [
        (CPU, update.cpu_quota.is_some()),
        (CPU_WEIGHT, update.cpu_shares.is_some()),
        (MEMORY, update.memory_limit.is_some()),
        (MEMORY_HIGH, update.unified.contains_key("memory.high")),
    ]
    .into_iter()
    .filter_map(|(resource, set)| set.then_some(resource))
    .collect()
}

/// The writers a change by `source` that sets `sets` displaces (rule 2):
/// the latest writer of each of them, unless that is kubelet (the base) or
/// `source` itself; each once.
pub fn displaced(writers: &BTreeMap<String, String>, source: &str, sets: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for resource in sets {
        let Some(w) = writers.get(*resource) else {
            continue;
        };
        if w != KUBELET && w != source && !out.contains(w) {
            out.push(w.clone());
        }
    }
    out
}

/// `reason` with the writers it displaced: "demo (displaces
/// trait:cron-vertical-scaler)".
pub fn noted(reason: &str, displaced: &[String]) -> String {
    if displaced.is_empty() {
        return reason.to_string();
    }
    let note = format!("displaces {}", displaced.join(", "));
    if reason.is_empty() {
        note
    } else {
        format!("{reason} ({note})")
    }
}

/// A reason as its writer gave it, without what `noted` added.
pub fn unnoted(reason: &str) -> &str {
    match reason.rfind(" (displaces ") {
        Some(i) if reason.ends_with(')') => &reason[..i],
        _ => reason.strip_prefix("displaces ").map_or(reason, |_| ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(r, w)| (r.to_string(), w.to_string()))
            .collect()
    }

    #[test]
    fn only_the_latest_writer_of_a_value_may_give_it_back() {
        let w = writers(&[(CPU, "trait:cron-vertical-scaler"), (MEMORY, "policy")]);
        assert!(holds(&w, "trait:cron-vertical-scaler", CPU));
        assert!(!holds(&w, "trait:cron-vertical-scaler", MEMORY));
        assert!(holds(&w, "policy", MEMORY));
        assert!(!holds(&w, "policy", CPU), "the cron job set CPU since");
        // Never written: nobody's to give back.
        assert!(!holds(&writers(&[]), "policy", CPU));
        // After kubelet's new declaration, no overlay writer holds it.
        let w = writers(&[(CPU, "kubelet")]);
        assert!(!holds(&w, "trait:cron-vertical-scaler", CPU));
    }

    #[test]
    fn a_yielding_writer_moves_only_declared_values_or_its_own() {
        let me = "trait:vertical-autoscaler";
        assert!(unclaimed_or_own(&writers(&[]), me, CPU, false));
        assert!(unclaimed_or_own(
            &writers(&[(CPU, "kubelet")]),
            me,
            CPU,
            false
        ));
        assert!(unclaimed_or_own(&writers(&[(CPU, me)]), me, CPU, false));
        for other in ["operator", "policy", "trait:cron-vertical-scaler"] {
            let w = writers(&[(CPU, other)]);
            assert!(!unclaimed_or_own(&w, me, CPU, false), "{other}");
            // Given back to the declared value: nobody's overlay.
            assert!(unclaimed_or_own(&w, me, CPU, true), "{other}");
        }
    }

    #[test]
    fn a_change_names_the_overlay_writers_it_displaces() {
        let w = writers(&[(CPU, "trait:cron-vertical-scaler"), (MEMORY, "policy")]);
        let cpu = Change {
            cpu_millis: Some(500),
            ..Default::default()
        };
        let both = Change {
            memory_bytes: Some(1 << 30),
            ..cpu.clone()
        };
        assert_eq!(
            displaced(&w, "operator", &set_by(&cpu)),
            ["trait:cron-vertical-scaler"]
        );
        assert_eq!(
            displaced(&w, "operator", &set_by(&both)),
            ["trait:cron-vertical-scaler", "policy"]
        );
        // Its own value, kubelet's base, or a value it does not set: none.
        assert!(displaced(&w, "trait:cron-vertical-scaler", &set_by(&cpu)).is_empty());
        assert!(displaced(&writers(&[(CPU, "kubelet")]), "policy", &set_by(&cpu)).is_empty());
        let memory_only = Change {
            memory_bytes: Some(1 << 30),
            ..Default::default()
        };
        assert_eq!(displaced(&w, "operator", &set_by(&memory_only)), ["policy"]);
        // A lift sets the value too.
        let lift = Change {
            lift_cpu: true,
            ..Default::default()
        };
        assert_eq!(
            displaced(&w, "policy", &set_by(&lift)),
            ["trait:cron-vertical-scaler"]
        );
        // memory.high and the weight are values of their own.
        let w = writers(&[
            (MEMORY, "trait:cron-vertical-scaler"),
            (MEMORY_HIGH, "operator"),
        ]);
        let high = Change {
            memory_high: Some(crate::cgroups::Limit::Value(1 << 30)),
            ..Default::default()
        };
        assert_eq!(displaced(&w, "policy", &set_by(&high)), ["operator"]);
        // Each writer once.
        let same = writers(&[(CPU, "operator"), (MEMORY, "operator")]);
        assert_eq!(displaced(&same, "policy", &set_by(&both)), ["operator"]);
    }

    #[test]
    fn a_rollback_displaces_the_writers_of_what_it_restores() {
        use crate::resize::Limit;
        let w = writers(&[
            (CPU, "trait:cron-vertical-scaler"),
            (CPU_WEIGHT, "policy"),
            (MEMORY, "operator"),
        ]);
        // Back to a revision after which only the CFS quota changed.
        let target = Update {
            cpu_quota: Some(Limit::Value(50_000)),
            cpu_period: Some(100_000),
            ..Default::default()
        };
        assert_eq!(set_by_update(&target), [CPU]);
        assert_eq!(
            displaced(&w, "operator", &set_by_update(&target)),
            ["trait:cron-vertical-scaler"]
        );
        let all = Update {
            cpu_shares: Some(1024),
            memory_limit: Some(Limit::Max),
            unified: [("memory.high".to_string(), "max".to_string())].into(),
            ..target
        };
        assert_eq!(set_by_update(&all), [CPU, CPU_WEIGHT, MEMORY, MEMORY_HIGH]);
        assert_eq!(
            displaced(&w, "policy", &set_by_update(&all)),
            ["trait:cron-vertical-scaler", "operator"]
        );
    }

    #[test]
    fn the_reason_says_whom_a_change_displaced() {
        assert_eq!(noted("demo", &[]), "demo");
        assert_eq!(
            noted("demo", &["trait:cron-vertical-scaler".into()]),
            "demo (displaces trait:cron-vertical-scaler)"
        );
        assert_eq!(
            noted("", &["policy".into(), "operator".into()]),
            "displaces policy, operator"
        );
        for reason in ["demo", "", "morning ended"] {
            for d in [vec![], vec!["policy".to_string()]] {
                assert_eq!(unnoted(&noted(reason, &d)), reason, "{reason:?} {d:?}");
            }
        }
    }
}

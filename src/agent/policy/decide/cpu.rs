//! The CPU rules: `throttle-offline` takes offline containers' CPU a step
//! at a time (their quota, with their CPU weight in proportion, and where
//! configured their cpuset kept off the suffering online containers'
//! CPUs), `boost-online` then raises a suffering online container's limit
//! where the node has idle CPU.

use std::collections::BTreeSet;

use super::{scale_down, scale_up, Action, Deciding, Rule, Signal, Trigger};
use crate::agent::declared::same_weight;
use crate::agent::policy::{Container, Qos};
use crate::resize::Change;

/// The kernel's least CPU weight, as cgroup v1 `cpu.shares`.
const MIN_SHARES: u64 = 2;

/// A cpuset as the kernel spells it ("0-1,3") as CPU numbers; None when it
/// is not one.
pub(super) fn cpu_list(s: &str) -> Option<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse::<u32>().ok()?, hi.parse::<u32>().ok()?),
            None => {
                let c = part.parse::<u32>().ok()?;
                (c, c)
            }
        };
        if lo > hi || hi - lo > 4096 {
            return None;
        }
        out.extend(lo..=hi);
    }
    Some(out)
}

/// CPU numbers as the kernel spells a cpuset, ranges joined ("0-2,5").
pub(super) fn cpu_list_text(cpus: &BTreeSet<u32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(u32, u32)> = None;
    for &c in cpus {
        run = match run {
            Some((lo, hi)) if c == hi + 1 => Some((lo, c)),
            Some((lo, hi)) => {
                parts.push(range_text(lo, hi));
                Some((c, c))
            }
            None => Some((c, c)),
        };
    }
    if let Some((lo, hi)) = run {
        parts.push(range_text(lo, hi));
    }
    parts.join(",")
}

fn range_text(lo: u32, hi: u32) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

impl Deciding<'_> {
    /// Offline CPU limits down a step. Returns whether any offline container
    /// had CPU left to take (above its floor), decided now or not.
    pub(super) fn throttle_offline(&mut self, worst: &Trigger, suffering: &[Trigger]) -> bool {
        let r = &self.p.rules.throttle_offline;
        if !r.enabled {
            return false;
        }
        let mut left = false;
        let capacity = self.capacity();
        let view = self.view;
        for c in view.containers.values().filter(|c| c.qos == Qos::Offline) {
            // A limit above the node's CPUs (or none) counts as the node's CPUs.
            let live = c.live.cpu_millis();
            let base = live.unwrap_or(capacity).min(capacity);
            let floor = r.min_cpu_millis.max(c.min_cpu_millis.unwrap_or(0));
            let to = scale_down(base, r.step).max(floor);
            if to >= base {
                continue;
            }
            if self.memory.is_held(Rule::ThrottleOffline, &c.key, self.now) {
                continue;
            }
            left = true;
            if self.may(Rule::ThrottleOffline, c) {
                let cpuset = self.kept_off(c, suffering);
                self.push_offline_cpu(c, Rule::ThrottleOffline, to, cpuset, worst.clone());
            }
        }
        left
    }

    /// The CPU weight offline container `c` gets with CPU limit `cpu`
    /// (millicores): its declared weight scaled as its limit is from the
    /// declared one (the node's CPUs where that is unlimited), never under
    /// the kernel's least nor over what was declared. None when the policy
    /// leaves weights alone, or no weight was declared or can be read.
    pub(super) fn offline_shares(&self, c: &Container, cpu: u64) -> Option<u64> {
        if !self.p.rules.throttle_offline.weight {
            return None;
        }
        let declared = c.declared.as_ref()?;
        let shares = declared.cpu_shares?;
        c.live.cpu_shares?;
        let capacity = self.capacity();
        let base = declared
            .cpu_millis()
            .unwrap_or(capacity)
            .min(capacity)
            .max(1);
        let scaled = (shares as f64 * cpu.min(base) as f64 / base as f64).round() as u64;
        Some(scaled.clamp(MIN_SHARES.min(shares), shares))
    }

    /// The cpuset offline container `c` gets while online containers
    /// suffer, where `throttle-offline.keep_off_online_cpus` asks for it:
    /// its own CPUs without those of the suffering online containers that
    /// are pinned to some of the node's CPUs, if any are left and that is a
    /// change.
    fn kept_off(&self, c: &Container, suffering: &[Trigger]) -> Option<String> {
        if !self.p.rules.throttle_offline.keep_off_online_cpus {
            return None;
        }
        let own = cpu_list(&c.live.cpuset).filter(|s| !s.is_empty())?;
        let mut left = own.clone();
        for t in suffering {
            let Signal::Container { key, .. } = &t.signal else {
                continue;
            };
            let Some(online) = self.view.containers.get(key) else {
                continue;
            };
            let Some(pinned) = cpu_list(&online.live.cpuset).filter(|s| !s.is_empty()) else {
                continue;
            };
            if pinned.len() < self.view.node.cpus as usize {
                left.retain(|cpu| !pinned.contains(cpu));
            }
        }
        (!left.is_empty() && left != own).then(|| cpu_list_text(&left))
    }

    /// A decision setting offline container `c`'s CPU limit to `to`
    /// millicores, its weight with it, and `cpuset` if any.
    pub(super) fn push_offline_cpu(
        &mut self,
        c: &Container,
        rule: Rule,
        to: u64,
        cpuset: Option<String>,
        trigger: Trigger,
    ) {
        let shares = self
            .offline_shares(c, to)
            .filter(|s| c.live.cpu_shares.is_none_or(|l| !same_weight(l, *s)));
        let action = Action::Set {
            change: Change {
                cpu_millis: Some(to),
                cpu_shares: shares,
                cpuset: cpuset.clone(),
                ..Default::default()
            },
            reclaim: false,
        };
        self.push(c, rule, action, c.live.cpu_millis(), Some(to), trigger);
        if let Some(d) = self.out.last_mut() {
            d.shares = shares.map(|s| (c.live.cpu_shares.unwrap_or_default(), s));
            d.cpuset = cpuset.map(|s| (c.live.cpuset.clone(), s));
        }
    }

    /// The suffering online containers' CPU limits up a step, with idle CPU
    /// on the node, never above what was declared plus `above_declared`.
    pub(super) fn boost_online(&mut self, suffering: &[Trigger]) {
        let r = &self.p.rules.boost_online;
        let view = self.view;
        if !r.enabled || view.node.cpu_idle < r.min_node_idle {
            return;
        }
        for t in suffering {
            let Signal::Container { key, .. } = &t.signal else {
                continue;
            };
            let Some(c) = view.containers.get(key) else {
                continue;
            };
            let (Some(live), Some(Some(declared))) = (
                c.live.cpu_millis(),
                c.declared.as_ref().map(|d| d.cpu_millis()),
            ) else {
                continue; // unlimited now, or nothing declared to bound it
            };
            let ceiling = (declared as f64 * (1.0 + r.above_declared)).floor() as u64;
            let to = scale_up(live, r.step).min(ceiling);
            if to > live && self.may(Rule::BoostOnline, c) {
                self.push(
                    c,
                    Rule::BoostOnline,
                    Self::cpu(to),
                    Some(live),
                    Some(to),
                    t.clone(),
                );
            }
        }
    }
}

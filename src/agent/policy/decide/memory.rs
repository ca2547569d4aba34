//! `memory-squeeze`: under node memory pressure, offline containers' memory
//! limits down a step, never below their usage plus headroom: on cgroup v2
//! their `memory.high` (the kernel throttles and reclaims above it, and
//! never kills for it), on v1 their limit, reclaimed first.

use super::{page_up, scale_down, Action, Deciding, Rule, Trigger, PAGE};
use crate::agent::policy::{Metric, Qos, Signals};
use crate::cgroups::Limit;
use crate::resize::Change;

impl Deciding<'_> {
    /// Offline memory limits down a step under node memory pressure, never
    /// below their usage (its maximum over the usage window, or where its
    /// linear prediction heads, if higher) plus headroom, nor the trait's
    /// floor.
    pub(super) fn memory_squeeze<S: Signals + ?Sized>(&mut self, signals: &S, pressure: &Trigger) {
        let r = &self.p.rules.memory_squeeze;
        if !r.enabled {
            return;
        }
        let view = self.view;
        for c in view.containers.values().filter(|c| c.qos == Qos::Offline) {
            let Some(usage) = signals
                .quantile(&c.key, Metric::MemoryUsage, self.p.windows.usage.0, 1.0)
                .filter(|u| u.is_finite() && *u >= 0.0)
            else {
                continue; // never lowered without knowing what it uses
            };
            // Growing usage: the limit stays above where it is heading
            // within the judging period, too.
            let horizon = self.p.windows.trigger.0 * self.p.rules.self_heal.judge_after;
            let heading = signals
                .predict(&c.key, Metric::MemoryUsage, self.p.windows.usage.0, horizon)
                .filter(|u| u.is_finite())
                .unwrap_or(0.0);
            let usage = usage.max(heading);
            let floor = page_up(
                ((usage * (1.0 + r.headroom)).ceil() as u64).max(c.min_memory_bytes.unwrap_or(0)),
            );
            // cgroup v2: `memory.high` (throttling and reclaim above it,
            // never an OOM kill), below `memory.max`; v1 has only the limit.
            let high = c.live.memory_high.is_some();
            let live = match c.live.memory_high {
                Some(Limit::Value(h)) => Some(c.live.memory_bytes.map_or(h, |m| m.min(h))),
                _ => c.live.memory_bytes,
            };
            let to = match live {
                Some(l) => page_up(scale_down(l, r.step)).max(floor),
                None => floor,
            };
            if live.is_some_and(|l| to + PAGE > l) || !self.may(Rule::MemorySqueeze, c) {
                continue;
            }
            let action = if high {
                Action::Set {
                    change: Change {
                        memory_high: Some(Limit::Value(to)),
                        ..Default::default()
                    },
                    reclaim: false,
                }
            } else {
                Action::Set {
                    change: Change {
                        memory_bytes: Some(to),
                        ..Default::default()
                    },
                    reclaim: true,
                }
            };
            self.push(
                c,
                Rule::MemorySqueeze,
                action,
                live,
                Some(to),
                pressure.clone(),
            );
        }
    }
}

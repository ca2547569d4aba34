//! What the engine's API and metrics show of the profiles, computed from
//! `Signals` alone: each container's summary (`tidalctl top`, the
//! per-container series of /metrics), made once per tick by the data source,
//! and one container's full profile (percentiles of every metric over every
//! window, and the predictions), made when the API is asked for it.

use std::time::Duration;

use super::profile::METRICS;
use super::{Key, Metric, Signals};

/// The percentiles a profile shows.
pub const QUANTILES: [f64; 5] = [0.1, 0.5, 0.9, 0.95, 0.99];

/// A container as `tidalctl top` and /metrics show it: its profile over
/// one window (the shortest the engine keeps); None where the window holds
/// no sample.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    pub key: Key,
    /// CPU used, in cores: median and p95.
    pub cpu_p50: Option<f64>,
    pub cpu_p95: Option<f64>,
    /// Median share of CFS periods throttled, 0 to 1.
    pub throttled: Option<f64>,
    /// Memory working set at the last tick, in bytes.
    pub working_set: Option<f64>,
    /// p95 of the pod's probe latency, in seconds.
    pub probe_p95: Option<f64>,
    /// An online container's latency objective (its `qos` trait's
    /// `latencyObjective`), in seconds: not a signal, the data source sets
    /// it from the tick's view (None from `summarize`).
    pub objective: Option<f64>,
}

/// The summary of `key` over `window`; `interval` is the engine's (the
/// working set is the last tick's).
pub fn summarize(
    signals: &dyn Signals,
    key: &Key,
    window: Duration,
    interval: Duration,
) -> Summary {
    let q = |m, q| signals.quantile(key, m, window, q);
    Summary {
        key: key.clone(),
        cpu_p50: q(Metric::CpuUsage, 0.5),
        cpu_p95: q(Metric::CpuUsage, 0.95),
        throttled: q(Metric::CpuThrottled, 0.5),
        working_set: signals
            .quantile(key, Metric::MemoryWorkingSet, interval, 1.0)
            .or_else(|| q(Metric::MemoryWorkingSet, 1.0)),
        probe_p95: q(Metric::ProbeLatency, 0.95),
        objective: None,
    }
}

/// A metric over one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowProfile {
    pub window: Duration,
    /// At `QUANTILES`; None without samples.
    pub quantiles: [Option<f64>; 5],
    pub samples: usize,
    /// The linear prediction `horizon` ahead; None with fewer than two
    /// samples.
    pub predicted: Option<f64>,
}

/// A metric over every window.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricProfile {
    pub metric: Metric,
    pub windows: Vec<WindowProfile>,
}

/// `key`'s profile over `windows` (each once, shortest first), predictions
/// `horizon` ahead. Empty when nothing of `key` is profiled.
pub fn profile(
    signals: &dyn Signals,
    key: &Key,
    windows: &[Duration],
    horizon: Duration,
) -> Vec<MetricProfile> {
    let mut windows = windows.to_vec();
    windows.sort();
    windows.dedup();
    let out: Vec<MetricProfile> = METRICS
        .iter()
        .map(|&metric| MetricProfile {
            metric,
            windows: windows
                .iter()
                .map(|&window| WindowProfile {
                    window,
                    quantiles: QUANTILES.map(|q| signals.quantile(key, metric, window, q)),
                    samples: signals.samples(key, metric, window),
                    predicted: signals.predict(key, metric, window, horizon),
                })
                .collect(),
        })
        .collect();
    let any = out.iter().flat_map(|m| &m.windows).any(|w| w.samples > 0);
    if any {
        out
    } else {
        Vec::new()
    }
}

/// A metric's name in the API and the metrics: snake case, units in the
/// docs (cores, share, bytes, PSI, seconds).
pub fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::CpuUsage => "cpu_usage",
        Metric::CpuThrottled => "cpu_throttled",
        Metric::MemoryWorkingSet => "memory_working_set",
        Metric::MemoryUsage => "memory_usage",
        Metric::CpuPressure => "cpu_pressure",
        Metric::MemoryPressure => "memory_pressure",
        Metric::ProbeLatency => "probe_latency",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::policy::profile::{Profiles, Reading};

    fn key(id: &str) -> Key {
        Key {
            namespace: "k8s.io".into(),
            id: id.into(),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// 20 ticks a second apart: `web` uses i/10 cores at tick i (a ramp),
    /// its working set i MiB, a probe of i ms; `idle` is listed, unread.
    fn profiles() -> Profiles {
        let mut p = Profiles::new(secs(1), &[secs(10), secs(60)]);
        let (web, idle) = (key("web"), key("idle"));
        let mut cpu = 0u64;
        for i in 1..=20u64 {
            cpu += i * 100_000_000;
            let r = Reading {
                cpu_ns: Some(cpu),
                working_set_bytes: Some(i << 20),
                probe: Some(Duration::from_millis(i)),
                ..Default::default()
            };
            p.tick(secs(i), [(&web, &r), (&idle, &Reading::default())]);
        }
        p
    }

    #[test]
    fn a_summary_is_the_window_s_percentiles_and_the_last_working_set() {
        let p = profiles();
        let s = summarize(&p, &key("web"), secs(10), secs(1));
        // The last 10 s: cores 1.1..=2.0, probes 11..=20 ms.
        assert!((s.cpu_p50.unwrap() - 1.55).abs() < 1e-6, "{s:?}");
        assert!((s.cpu_p95.unwrap() - 1.955).abs() < 1e-6, "{s:?}");
        assert_eq!(s.working_set, Some(20.0 * 1048576.0));
        assert!((s.probe_p95.unwrap() - 0.01955).abs() < 1e-6, "{s:?}");
        assert_eq!(s.throttled, None, "no throttling counters read");
        let idle = summarize(&p, &key("idle"), secs(10), secs(1));
        assert_eq!(
            idle,
            Summary {
                key: key("idle"),
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_profile_has_every_metric_over_every_window_shortest_first() {
        let p = profiles();
        let prof = profile(&p, &key("web"), &[secs(60), secs(10), secs(60)], secs(5));
        assert_eq!(prof.len(), METRICS.len());
        let cpu = &prof[0];
        assert_eq!(cpu.metric, Metric::CpuUsage);
        let windows: Vec<Duration> = cpu.windows.iter().map(|w| w.window).collect();
        assert_eq!(windows, vec![secs(10), secs(60)]);
        let (w10, w60) = (&cpu.windows[0], &cpu.windows[1]);
        assert_eq!((w10.samples, w60.samples), (10, 19));
        // p10 and p99 of 1.1..=2.0 cores.
        assert!((w10.quantiles[0].unwrap() - 1.19).abs() < 1e-6);
        assert!((w10.quantiles[4].unwrap() - 1.991).abs() < 1e-6);
        // The ramp goes on: 0.1 core a second, 5 s ahead of 2.0.
        assert!((w10.predicted.unwrap() - 2.5).abs() < 1e-3, "{w10:?}");
        let pressure = prof
            .iter()
            .find(|m| m.metric == Metric::CpuPressure)
            .unwrap();
        assert_eq!(pressure.windows[0].quantiles, [None; 5]);
        assert_eq!(pressure.windows[0].samples, 0);
        assert!(profile(&p, &key("idle"), &[secs(10)], secs(5)).is_empty());
        assert!(profile(&p, &key("gone"), &[secs(10)], secs(5)).is_empty());
    }
}

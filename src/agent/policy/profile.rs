//! The aggregator: a profile per container, made of the collector's
//! readings. Counters become rates (CPU time -> cores, throttled periods ->
//! the share of the interval's periods), and each tick's values go into a
//! bounded ring kept for the longest window; `Signals` answers quantiles,
//! linear predictions and sample counts over any window up to that. Pure: the
//! clock is the `Duration` each tick passes in.
//!
//! Memory: one row per tick per container, `ROW_BYTES` (40) bytes: the
//! tick's time and one `f32` per metric (NaN where there is no value). A
//! ring holds `longest window / interval + 1` rows, at most `MAX_ROWS`:
//! 301 rows (12 KiB) per container at the defaults (1 s, 300 s), 3001 rows
//! (117 KiB) at a 100 ms interval. A quantile sorts a copy of the window's
//! values.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::{Key, Metric, Signals};
use crate::cgroups::{Stats, Throttling};

/// The windows profiles are kept for by default.
pub const DEFAULT_WINDOWS: [Duration; 3] = [
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(300),
];

/// Most rows one container's ring holds, whatever the windows and interval.
pub const MAX_ROWS: usize = 4096;

/// Every metric, in the order of a row's columns.
pub const METRICS: [Metric; 7] = [
    Metric::CpuUsage,
    Metric::CpuThrottled,
    Metric::MemoryWorkingSet,
    Metric::MemoryUsage,
    Metric::CpuPressure,
    Metric::MemoryPressure,
    Metric::ProbeLatency,
];

/// A row's columns: the metrics, then the OOM kills of the interval.
const COLUMNS: usize = METRICS.len() + 1;
const OOM_COLUMN: usize = METRICS.len();

fn column(m: Metric) -> usize {
    match m {
        Metric::CpuUsage => 0,
        Metric::CpuThrottled => 1,
        Metric::MemoryWorkingSet => 2,
        Metric::MemoryUsage => 3,
        Metric::CpuPressure => 4,
        Metric::MemoryPressure => 5,
        Metric::ProbeLatency => 6,
    }
}

/// One container as the collector read it at one tick: counters as the
/// kernel keeps them (cumulative), gauges as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// CPU time used, in nanoseconds (cumulative).
    pub cpu_ns: Option<u64>,
    /// CFS periods and throttling (cumulative).
    pub throttling: Option<Throttling>,
    pub memory_bytes: Option<u64>,
    pub working_set_bytes: Option<u64>,
    /// PSI `some avg10`, 0 to 100.
    pub cpu_pressure: Option<f64>,
    pub memory_pressure: Option<f64>,
    /// OOM kills (cumulative).
    pub oom_kills: Option<u64>,
    /// The latency of the probe that finished since the last tick (a failed
    /// one as its timeout).
    pub probe: Option<Duration>,
}

impl Reading {
    /// What the collector read of a cgroup (no probe).
    pub fn from_stats(s: &Stats) -> Reading {
        let avg10 = |p: Option<crate::cgroups::Psi>| p.map(|p| p.some.avg10);
        let pressure = s.pressure.clone().unwrap_or_default();
        Reading {
            cpu_ns: s.cpu_ns,
            throttling: s.throttling,
            memory_bytes: s.memory_bytes,
            working_set_bytes: s.working_set(),
            cpu_pressure: avg10(pressure.cpu),
            memory_pressure: avg10(pressure.memory),
            oom_kills: s.oom_kills,
            probe: None,
        }
    }
}

/// One tick of one container: its time (ns of the engine's clock) and a
/// value per column.
#[derive(Debug, Clone, Copy)]
struct Row {
    at: u64,
    values: [f32; COLUMNS],
}

/// Bytes of one row.
pub const ROW_BYTES: usize = std::mem::size_of::<Row>();

/// A container's ring, and the counters of its last reading.
#[derive(Debug, Default)]
struct Series {
    rows: VecDeque<Row>,
    /// (time, CPU ns) of the last reading that had them.
    cpu: Option<(u64, u64)>,
    throttling: Option<Throttling>,
    oom_kills: Option<u64>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn value(v: Option<f64>) -> f32 {
    v.map_or(f32::NAN, |v| v as f32)
}

impl Series {
    /// The row for `r` at `at`: counters turned into rates over the time
    /// since the last reading (none at the first, or when a counter went
    /// back, as when a container of the same name was made again).
    fn row(&mut self, at: u64, r: &Reading) -> Row {
        let mut values = [f32::NAN; COLUMNS];
        if let Some(cpu) = r.cpu_ns {
            if let Some((t0, c0)) = self.cpu.filter(|&(t0, c0)| t0 < at && c0 <= cpu) {
                values[column(Metric::CpuUsage)] = ((cpu - c0) as f64 / (at - t0) as f64) as f32;
            }
            self.cpu = Some((at, cpu));
        }
        if let Some(t) = r.throttling {
            if let Some(t0) = self
                .throttling
                .filter(|t0| t0.periods <= t.periods && t0.throttled_periods <= t.throttled_periods)
            {
                let periods = t.periods - t0.periods;
                let throttled = t.throttled_periods - t0.throttled_periods;
                values[column(Metric::CpuThrottled)] = if periods == 0 {
                    0.0
                } else {
                    (throttled as f64 / periods as f64).min(1.0) as f32
                };
            }
            self.throttling = Some(t);
        }
        if let Some(k) = r.oom_kills {
            if let Some(k0) = self.oom_kills.filter(|&k0| k0 <= k) {
                values[OOM_COLUMN] = (k - k0) as f32;
            }
            self.oom_kills = Some(k);
        }
        values[column(Metric::MemoryWorkingSet)] = value(r.working_set_bytes.map(|b| b as f64));
        values[column(Metric::MemoryUsage)] = value(r.memory_bytes.map(|b| b as f64));
        values[column(Metric::CpuPressure)] = value(r.cpu_pressure);
        values[column(Metric::MemoryPressure)] = value(r.memory_pressure);
        values[column(Metric::ProbeLatency)] = value(r.probe.map(|d| d.as_secs_f64()));
        Row { at, values }
    }

    /// The (time, value) pairs of `col` in the window `(from, to]`.
    fn window(&self, col: usize, from: u64, to: u64) -> impl Iterator<Item = (u64, f64)> + '_ {
        // Rows are in time order: skip the older ones from the back.
        let start = self.rows.partition_point(|r| r.at <= from);
        self.rows
            .range(start..)
            .take_while(move |r| r.at <= to)
            .filter(move |r| !r.values[col].is_nan())
            .map(move |r| (r.at, f64::from(r.values[col])))
    }
}

/// The profiles of every container the collector reads.
#[derive(Debug)]
pub struct Profiles {
    longest: u64,
    capacity: usize,
    /// The time of the last tick: windows end there.
    last: Option<u64>,
    series: HashMap<Key, Series>,
}

impl Profiles {
    /// Profiles kept for the longest of `windows`, at ticks `interval` apart.
    pub fn new(interval: Duration, windows: &[Duration]) -> Profiles {
        let longest = windows.iter().copied().max().unwrap_or(DEFAULT_WINDOWS[2]);
        let per_tick = interval.max(Duration::from_millis(1));
        let rows = longest.as_nanos().div_ceil(per_tick.as_nanos()) + 1;
        Profiles {
            longest: nanos(longest),
            capacity: usize::try_from(rows).unwrap_or(MAX_ROWS).clamp(2, MAX_ROWS),
            last: None,
            series: HashMap::new(),
        }
    }

    /// Rows a container's ring holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes a container's profile takes at most (its ring, full).
    pub fn bytes_per_container(&self) -> usize {
        self.capacity * ROW_BYTES + std::mem::size_of::<Series>()
    }

    /// Records the tick at `now` (later than the last one): each container's
    /// reading; containers without one are forgotten (they are gone).
    pub fn tick<'a>(
        &mut self,
        now: Duration,
        readings: impl IntoIterator<Item = (&'a Key, &'a Reading)>,
    ) {
        let at = nanos(now);
        if self.last.is_some_and(|last| at <= last) {
            return;
        }
        let mut seen = std::collections::HashSet::new();
        for (key, r) in readings {
            let s = self.series.entry(key.clone()).or_default();
            let row = s.row(at, r);
            while s.rows.len() >= self.capacity
                || s.rows.front().is_some_and(|f| f.at + self.longest < at)
            {
                s.rows.pop_front();
            }
            s.rows.push_back(row);
            seen.insert(key);
        }
        self.series.retain(|k, _| seen.contains(k));
        self.last = Some(at);
    }

    /// The containers profiled.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.series.keys()
    }

    /// OOM kills in container `key` over the last `window`.
    pub fn oom_kills(&self, key: &Key, window: Duration) -> u64 {
        self.points(key, OOM_COLUMN, window, |it| {
            it.map(|(_, v)| v as u64).sum()
        })
        .unwrap_or(0)
    }

    /// `f` over the points of `col` in the last `window` of `key`.
    fn points<T>(
        &self,
        key: &Key,
        col: usize,
        window: Duration,
        f: impl FnOnce(&mut dyn Iterator<Item = (u64, f64)>) -> T,
    ) -> Option<T> {
        let last = self.last?;
        let s = self.series.get(key)?;
        let from = last.saturating_sub(nanos(window));
        Some(f(&mut s.window(col, from, last)))
    }
}

/// The `q`-quantile of sorted `v` by linear interpolation between the
/// closest ranks (the "type 7" estimator, numpy's and R's default): at
/// rank `h = (n - 1) q`, `v[⌊h⌋] + (h - ⌊h⌋) (v[⌊h⌋ + 1] - v[⌊h⌋])`.
pub fn quantile_sorted(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let h = (v.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    Some(v[lo] + (h - lo as f64) * (v[hi] - v[lo]))
}

/// The value a least-squares line through `points` (time in ns, value)
/// takes `ahead` ns after `end`; None with fewer than two distinct times.
pub fn predict_linear(
    points: impl Iterator<Item = (u64, f64)>,
    end: u64,
    ahead: f64,
) -> Option<f64> {
    // Times as seconds before `end`, so that sums stay small.
    let pts: Vec<(f64, f64)> = points
        .map(|(t, v)| (-((end - t.min(end)) as f64) / 1e9, v))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let (mt, mv) = pts
        .iter()
        .fold((0.0, 0.0), |(a, b), (t, v)| (a + t / n, b + v / n));
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (t, v) in &pts {
        sxy += (t - mt) * (v - mv);
        sxx += (t - mt) * (t - mt);
    }
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some(mv + slope * (ahead / 1e9 - mt))
}

impl Signals for Profiles {
    fn quantile(&self, key: &Key, metric: Metric, window: Duration, q: f64) -> Option<f64> {
        let mut values: Vec<f64> = self.points(key, column(metric), window, |it| {
            it.map(|(_, v)| v).collect()
        })?;
        values.sort_unstable_by(f64::total_cmp);
        quantile_sorted(&values, q)
    }

    fn predict(
        &self,
        key: &Key,
        metric: Metric,
        window: Duration,
        horizon: Duration,
    ) -> Option<f64> {
        let last = self.last?;
        self.points(key, column(metric), window, |it| {
            predict_linear(it, last, horizon.as_nanos() as f64)
        })?
    }

    fn samples(&self, key: &Key, metric: Metric, window: Duration) -> usize {
        self.points(key, column(metric), window, |it| it.count())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> Key {
        Key {
            namespace: "k8s.io".into(),
            id: id.into(),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Feeds `n` ticks one second apart (from t = 1 s) to one container,
    /// `reading(i)` at tick i.
    fn feed(p: &mut Profiles, k: &Key, n: u64, reading: impl Fn(u64) -> Reading) {
        for i in 1..=n {
            let r = reading(i);
            p.tick(secs(i), [(k, &r)]);
        }
    }

    #[test]
    fn quantiles_interpolate_between_closest_ranks() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile_sorted(&v, 0.0), Some(1.0));
        assert_eq!(quantile_sorted(&v, 1.0), Some(10.0));
        assert_eq!(quantile_sorted(&v, 0.5), Some(5.5));
        // h = 9 * 0.95 = 8.55: 9 + 0.55 * (10 - 9).
        assert!((quantile_sorted(&v, 0.95).unwrap() - 9.55).abs() < 1e-9);
        assert!((quantile_sorted(&v, 0.1).unwrap() - 1.9).abs() < 1e-9);
        assert_eq!(quantile_sorted(&[7.0], 0.99), Some(7.0));
        assert_eq!(quantile_sorted(&[], 0.5), None);
        assert_eq!(quantile_sorted(&v, 1.5), None);
        assert_eq!(quantile_sorted(&v, f64::NAN), None);
    }

    #[test]
    fn cpu_counters_become_cores_and_throttled_share() {
        let mut p = Profiles::new(secs(1), &DEFAULT_WINDOWS);
        let k = key("a");
        // 1.5 cores: 1.5e9 ns per second; a quarter of 10 periods a second
        // throttled.
        feed(&mut p, &k, 5, |i| Reading {
            cpu_ns: Some(i * 1_500_000_000),
            throttling: Some(Throttling {
                periods: i * 10,
                throttled_periods: i * 10 / 4,
                throttled_ns: 0,
            }),
            ..Default::default()
        });
        // The first reading only starts the counters.
        assert_eq!(p.samples(&k, Metric::CpuUsage, secs(60)), 4);
        let cores = p.quantile(&k, Metric::CpuUsage, secs(60), 0.5).unwrap();
        assert!((cores - 1.5).abs() < 1e-6, "{cores}");
        let share = p.quantile(&k, Metric::CpuThrottled, secs(60), 0.5).unwrap();
        assert!((0.2..=0.3).contains(&share), "{share}");
        // A counter going back (a container made again under the name)
        // gives no rate, then rates from the new start.
        let r = Reading {
            cpu_ns: Some(1_000_000_000),
            ..Default::default()
        };
        p.tick(secs(6), [(&k, &r)]);
        assert_eq!(p.samples(&k, Metric::CpuUsage, secs(60)), 4);
        let r = Reading {
            cpu_ns: Some(1_500_000_000),
            ..Default::default()
        };
        p.tick(secs(7), [(&k, &r)]);
        assert_eq!(p.quantile(&k, Metric::CpuUsage, secs(1), 0.5), Some(0.5));
        // No periods elapsed: not throttled.
        let mut p = Profiles::new(secs(1), &DEFAULT_WINDOWS);
        feed(&mut p, &k, 3, |_| Reading {
            throttling: Some(Throttling::default()),
            ..Default::default()
        });
        assert_eq!(
            p.quantile(&k, Metric::CpuThrottled, secs(10), 1.0),
            Some(0.0)
        );
    }

    #[test]
    fn windows_end_at_the_last_tick_and_hold_what_they_should() {
        let mut p = Profiles::new(secs(1), &DEFAULT_WINDOWS);
        let k = key("a");
        // Probe latency i ms at tick i, for 400 ticks.
        feed(&mut p, &k, 400, |i| Reading {
            probe: Some(Duration::from_millis(i)),
            ..Default::default()
        });
        let m = Metric::ProbeLatency;
        assert_eq!(p.samples(&k, m, secs(10)), 10);
        assert_eq!(p.samples(&k, m, secs(60)), 60);
        // Kept for the longest window only.
        assert_eq!(p.samples(&k, m, secs(300)), 300);
        assert_eq!(p.samples(&k, m, secs(3600)), 301);
        // Over the last 10 s: 391..=400 ms.
        let q = |w, q| p.quantile(&k, m, secs(w), q).unwrap();
        assert!((q(10, 0.0) - 0.391).abs() < 1e-6);
        assert!((q(10, 1.0) - 0.400).abs() < 1e-6);
        assert!((q(10, 0.5) - 0.3955).abs() < 1e-6);
        assert!((q(60, 0.1) - 0.3469).abs() < 1e-6, "{}", q(60, 0.1));
        assert_eq!(p.capacity(), 301);
        assert_eq!(ROW_BYTES, 40);
        assert!(
            p.bytes_per_container() < 13 * 1024,
            "{}",
            p.bytes_per_container()
        );
        // At 100 ms the ring holds 3001 rows, bounded whatever the windows.
        assert_eq!(
            Profiles::new(Duration::from_millis(100), &DEFAULT_WINDOWS).capacity(),
            3001
        );
        assert_eq!(
            Profiles::new(Duration::from_millis(100), &[secs(86400)]).capacity(),
            MAX_ROWS
        );
        // Unknown container, metric without values: nothing.
        assert_eq!(p.quantile(&key("b"), m, secs(10), 0.5), None);
        assert_eq!(p.quantile(&k, Metric::MemoryUsage, secs(10), 0.5), None);
        assert_eq!(p.samples(&k, Metric::CpuUsage, secs(10)), 0);
    }

    #[test]
    fn a_container_not_read_any_more_ages_out_of_windows_and_is_forgotten() {
        let mut p = Profiles::new(secs(1), &DEFAULT_WINDOWS);
        let (a, b) = (key("a"), key("b"));
        let r = Reading {
            memory_bytes: Some(100),
            working_set_bytes: Some(60),
            ..Default::default()
        };
        for i in 1..=5 {
            p.tick(secs(i), [(&a, &r), (&b, &r)]);
        }
        assert_eq!(
            p.quantile(&b, Metric::MemoryWorkingSet, secs(10), 0.9),
            Some(60.0)
        );
        // b gone: forgotten at once.
        p.tick(secs(6), [(&a, &r)]);
        assert_eq!(p.keys().collect::<Vec<_>>(), vec![&a]);
        assert_eq!(p.samples(&b, Metric::MemoryUsage, secs(60)), 0);
        // A tick that is not later than the last is ignored.
        p.tick(secs(6), [(&b, &r)]);
        p.tick(secs(2), [(&b, &r)]);
        assert_eq!(p.keys().count(), 1);
        // a's reads fail (no values): its window empties as time goes on.
        for i in 7..=16 {
            p.tick(secs(i), [(&a, &Reading::default())]);
        }
        assert_eq!(p.samples(&a, Metric::MemoryUsage, secs(10)), 0);
        assert_eq!(p.samples(&a, Metric::MemoryUsage, secs(60)), 6);
    }

    #[test]
    fn linear_prediction_fits_the_window() {
        let mut p = Profiles::new(secs(1), &DEFAULT_WINDOWS);
        let k = key("a");
        // Working set grows 1 MB a second, from 100 MB, with noise that
        // cancels out; before that, 300 s flat (outside a 60 s window).
        feed(&mut p, &k, 300, |_| Reading {
            working_set_bytes: Some(50_000_000),
            ..Default::default()
        });
        for i in 301..=360u64 {
            let noise = if i % 2 == 0 { 10_000 } else { -10_000 };
            let v = 100_000_000 + (i - 301) as i64 * 1_000_000 + noise;
            let r = Reading {
                working_set_bytes: Some(v as u64),
                ..Default::default()
            };
            p.tick(secs(i), [(&k, &r)]);
        }
        let m = Metric::MemoryWorkingSet;
        let ahead = p.predict(&k, m, secs(60), secs(30)).unwrap();
        // At 360 s: 159 MB; 30 s later: 189 MB.
        assert!((ahead - 189e6).abs() < 0.1e6, "{ahead}");
        let now = p.predict(&k, m, secs(60), Duration::ZERO).unwrap();
        assert!((now - 159e6).abs() < 0.1e6, "{now}");
        // Flat series: flat prediction.
        let mut flat = Profiles::new(secs(1), &DEFAULT_WINDOWS);
        feed(&mut flat, &k, 10, |_| Reading {
            memory_bytes: Some(7),
            ..Default::default()
        });
        let still = flat
            .predict(&k, Metric::MemoryUsage, secs(10), secs(100))
            .unwrap();
        assert!((still - 7.0).abs() < 1e-9, "{still}");
        // One sample: no line.
        assert_eq!(
            flat.predict(&k, Metric::MemoryUsage, Duration::from_millis(500), secs(1)),
            None
        );
        assert_eq!(
            predict_linear([(5, 1.0), (5, 2.0)].into_iter(), 5, 0.0),
            None
        );
    }

    #[test]
    fn oom_kills_are_counted_per_window() {
        let mut p = Profiles::new(secs(1), &DEFAULT_WINDOWS);
        let k = key("a");
        feed(&mut p, &k, 20, |i| Reading {
            oom_kills: Some(if i < 15 { 2 } else { 5 }),
            ..Default::default()
        });
        assert_eq!(p.oom_kills(&k, secs(10)), 3);
        assert_eq!(p.oom_kills(&k, secs(3)), 0);
    }
}

//! What a soak samples of a process and a directory, and the trend of a
//! series: shared by `tests/soak.rs` and the CRI churn in
//! `integration/tests/churn.rs` (which includes this file by path).
#![allow(dead_code)]

use std::path::Path;

/// What a process holds: open descriptors, threads, resident KiB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Held {
    pub fds: usize,
    pub threads: usize,
    pub rss_kib: u64,
}

/// [`Held`] of process `pid`, from /proc (zeros once it is gone).
pub fn held(pid: i32) -> Held {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Held {
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()),
        threads: field("Threads:") as usize,
        rss_kib: field("VmRSS:"),
    }
}

/// Files and directories under `dir`, recursively.
pub fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .map(|e| {
                1 + if e.file_type().is_ok_and(|t| t.is_dir()) {
                    entries(&e.path())
                } else {
                    0
                }
            })
            .sum()
    })
}

/// The least-squares slope of `points` (0 for fewer than two).
pub fn slope(points: impl Iterator<Item = (f64, f64)> + Clone) -> f64 {
    let n = points.clone().count() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = points
        .clone()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

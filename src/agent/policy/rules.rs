//! The policy file: how often the engine looks, over which windows, in which
//! mode, and each rule's thresholds and steps. YAML (`config/policy/default.yaml`
//! ships the defaults; a node's is `/etc/tidal/policy.yaml`), untrusted:
//! parsed into typed values with every field known, then every value checked
//! against its range, and an error names the file, the line and the problem.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The largest policy file read.
pub const MAX_FILE: usize = 64 << 10;

/// A policy file that cannot be used, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {problem}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PolicyError {
    pub file: PathBuf,
    /// 1-based; None when the problem has no place (an unreadable file).
    pub line: Option<usize>,
    pub problem: String,
}

/// Whether decisions are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Enforce,
    /// Decisions are computed and recorded; nothing is applied.
    DryRun,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::DryRun => "dry-run",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "dry-run" => Ok(Mode::DryRun),
            _ => Err(format!("{s:?} is not enforce or dry-run")),
        }
    }
}

/// A duration as the file spells it: "250ms", "1s", "1.5s", "5m".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Span)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses "250ms", "1s", "1.5s", "5m", "1h".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration {s:?} has no unit (ms, s, m or h)"))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("duration {s:?} does not start with a number"))?;
    let unit = unit.trim();
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "duration {s:?}: unit {unit:?} is not ms, s, m or h"
            ))
        }
    };
    if !secs.is_finite() || secs > 86_400.0 {
        return Err(format!("duration {s:?} is longer than a day"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// How often the engine collects and decides (100ms..60s).
    pub interval: Span,
    pub mode: Mode,
    pub windows: Windows,
    /// No step moves a limit by more than this share of it (0..1).
    pub max_step: f64,
    pub rules: Rules,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Windows {
    /// The window a rule's low percentile is taken over; also the pace of
    /// change: at most one resource of a container per trigger window.
    pub trigger: Span,
    /// The window memory usage is taken over (its maximum) before a memory
    /// limit is lowered.
    pub usage: Span,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct Rules {
    pub protect: Protect,
    pub online: Online,
    pub throttle_offline: ThrottleOffline,
    pub boost_online: BoostOnline,
    pub give_back: GiveBack,
    pub memory_squeeze: MemorySqueeze,
    pub self_heal: SelfHeal,
}

/// "Protect the scene": a node in trouble is left alone.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Protect {
    /// Data older than this is stale.
    pub max_age: Span,
    /// Less free space than this share of the state directory's filesystem.
    pub min_state_dir_free: f64,
    /// `/proc/pressure/memory` `full avg10` at or above this (0..100).
    pub max_memory_pressure: f64,
}

/// When an online container suffers: its probe's latency, or without a
/// probe its CPU throttling or CPU pressure, at a low percentile over the
/// trigger window above the limit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Online {
    /// The percentile, as a quantile (0.1: p10).
    pub quantile: f64,
    /// Fewer samples in the window than this: no verdict.
    pub min_samples: usize,
    /// Share of CFS periods throttled (0..1), without a probe.
    pub cpu_throttled: f64,
    /// PSI `some avg10` of the container's CPU (0..100), without a probe.
    pub cpu_pressure: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleOffline {
    pub enabled: bool,
    /// Share of the CPU limit taken per step.
    pub step: f64,
    /// Never below this, whatever the trait says.
    pub min_cpu_millis: u64,
    /// The CPU weight (cgroup v1 `cpu.shares`, v2 `cpu.weight`) follows the
    /// limit down in proportion, so that on contended CPUs the online
    /// containers' threads run first; and back up on give-back.
    pub weight: bool,
    /// Offline containers are kept off the CPUs of suffering online
    /// containers pinned to some of the node's CPUs (their cpuset), while
    /// throttled; restored on the last give-back step.
    pub keep_off_online_cpus: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoostOnline {
    pub enabled: bool,
    pub step: f64,
    /// Only when the node's idle CPU share is at least this.
    pub min_node_idle: f64,
    /// How far above the declared CPU limit, as a share of it (0: never).
    pub above_declared: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GiveBack {
    pub enabled: bool,
    /// Online containers calm (or the node's memory calm) this long.
    pub healthy_for: Span,
    pub step: f64,
    /// An online container is calm while a high percentile (p90) of its
    /// signal over the trigger window stays under this share of its
    /// objective (or of `online`'s thresholds): far enough under that
    /// giving CPU back does not push it straight over again. A give-back
    /// after which one is no longer calm is undone at once.
    pub calm_below: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySqueeze {
    pub enabled: bool,
    /// Node `/proc/pressure/memory` `full avg10` at or above this (0..100).
    pub pressure: f64,
    /// The limit stays this share above the container's usage.
    pub headroom: f64,
    pub step: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfHeal {
    /// A change is judged this many trigger windows after it was made.
    pub judge_after: u32,
    /// A rule whose change failed or did not help rests this long.
    pub hold: Span,
}

/// The built-in rules, for an empty file and for fields a file leaves out:
/// slower than the shipped `config/policy/default.yaml` (1 s interval, 5 s
/// trigger window), which is tuned to act within about a second.
impl Default for Policy {
    fn default() -> Self {
        Policy {
            interval: Span(Duration::from_secs(1)),
            mode: Mode::Enforce,
            windows: Windows::default(),
            max_step: 0.25,
            rules: Rules::default(),
        }
    }
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            trigger: Span(Duration::from_secs(5)),
            usage: Span(Duration::from_secs(30)),
        }
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            protect: Protect {
                max_age: Span(Duration::from_secs(5)),
                min_state_dir_free: 0.05,
                max_memory_pressure: 40.0,
            },
            online: Online {
                quantile: 0.1,
                min_samples: 3,
                cpu_throttled: 0.25,
                cpu_pressure: 20.0,
            },
            throttle_offline: ThrottleOffline {
                enabled: true,
                step: 0.25,
                min_cpu_millis: 100,
                weight: true,
                keep_off_online_cpus: false,
            },
            boost_online: BoostOnline {
                enabled: true,
                step: 0.2,
                min_node_idle: 0.2,
                above_declared: 0.0,
            },
            give_back: GiveBack {
                enabled: true,
                healthy_for: Span(Duration::from_secs(30)),
                step: 0.25,
                calm_below: 0.5,
            },
            memory_squeeze: MemorySqueeze {
                enabled: true,
                pressure: 10.0,
                headroom: 0.1,
                step: 0.2,
            },
            self_heal: SelfHeal {
                judge_after: 3,
                hold: Span(Duration::from_secs(60)),
            },
        }
    }
}

macro_rules! defaults_from_rules {
    ($($t:ident . $f:ident),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                Rules::default().$f
            }
        }
    )*};
}
defaults_from_rules!(
    Protect.protect,
    Online.online,
    ThrottleOffline.throttle_offline,
    BoostOnline.boost_online,
    GiveBack.give_back,
    MemorySqueeze.memory_squeeze,
    SelfHeal.self_heal
);

impl Policy {
    /// Reads and checks the policy file at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read(path).map_err(|e| PolicyError {
            file: path.to_path_buf(),
            line: None,
            problem: e.to_string(),
        })?;
        if text.len() > MAX_FILE {
            return Err(PolicyError {
                file: path.to_path_buf(),
                line: None,
                problem: format!("{} bytes, more than the {MAX_FILE} read", text.len()),
            });
        }
        let text = String::from_utf8(text).map_err(|_| PolicyError {
            file: path.to_path_buf(),
            line: None,
            problem: "not UTF-8 text".into(),
        })?;
        Policy::parse(&text, path)
    }

    /// Parses and checks `text`, read from `file`.
    pub fn parse(text: &str, file: &Path) -> Result<Policy, PolicyError> {
        let fail = |line, problem| PolicyError {
            file: file.to_path_buf(),
            line,
            problem,
        };
        if text.trim().is_empty() {
            return Ok(Policy::default());
        }
        if let Some((line, name)) = hidden_line_break(text) {
            return Err(fail(
                Some(line),
                format!("{name} breaks a line in YAML but not in most editors, so the lines named in errors would not be the ones you see: use a plain line break"),
            ));
        }
        let policy: Policy = serde_norway::from_str(text).map_err(|e| {
            let mut problem = e.to_string();
            // The line goes in front, as compilers put it.
            if let Some(at) = problem.rfind(" at line ") {
                problem.truncate(at);
            }
            fail(e.location().map(|l| l.line()), problem)
        })?;
        policy
            .check()
            .map_err(|(path, problem)| fail(line_of(text, &path), problem))?;
        Ok(policy)
    }

    /// Every value in its range; else the field's path and the problem.
    fn check(&self) -> Result<(), (Vec<&'static str>, String)> {
        fn within(
            path: &[&'static str],
            v: f64,
            lo: f64,
            hi: f64,
        ) -> Result<(), (Vec<&'static str>, String)> {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err((
                    path.to_vec(),
                    format!("{} {v} is outside {lo}..{hi}", path.join(".")),
                ))
            }
        }
        let interval = self.interval.0;
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&interval) {
            return Err((
                vec!["interval"],
                format!("interval {interval:?} is outside 100ms..60s"),
            ));
        }
        for (name, w) in [
            ("trigger", self.windows.trigger),
            ("usage", self.windows.usage),
        ] {
            if w.0 < interval {
                return Err((
                    vec!["windows", name],
                    format!(
                        "windows.{name} {:?} is shorter than the interval {interval:?}: it would hold no sample",
                        w.0
                    ),
                ));
            }
        }
        within(&["max_step"], self.max_step, 0.01, 0.9)?;
        let r = &self.rules;
        within(
            &["rules", "give-back", "calm_below"],
            r.give_back.calm_below,
            0.05,
            1.0,
        )?;
        within(
            &["rules", "protect", "min_state_dir_free"],
            r.protect.min_state_dir_free,
            0.0,
            1.0,
        )?;
        within(
            &["rules", "protect", "max_memory_pressure"],
            r.protect.max_memory_pressure,
            0.0,
            100.0,
        )?;
        within(
            &["rules", "online", "quantile"],
            r.online.quantile,
            0.0,
            1.0,
        )?;
        within(
            &["rules", "online", "cpu_throttled"],
            r.online.cpu_throttled,
            0.0,
            1.0,
        )?;
        within(
            &["rules", "online", "cpu_pressure"],
            r.online.cpu_pressure,
            0.0,
            100.0,
        )?;
        if r.online.min_samples == 0 {
            return Err((
                vec!["rules", "online", "min_samples"],
                "rules.online.min_samples must be at least 1".into(),
            ));
        }
        // No rule steps further than max_step allows.
        for (rule, step) in [
            ("throttle-offline", r.throttle_offline.step),
            ("boost-online", r.boost_online.step),
            ("give-back", r.give_back.step),
            ("memory-squeeze", r.memory_squeeze.step),
        ] {
            if !(step.is_finite() && step > 0.0 && step <= self.max_step) {
                return Err((
                    vec!["rules", rule, "step"],
                    format!(
                        "rules.{rule}.step {step} must be above 0 and at most max_step {}",
                        self.max_step
                    ),
                ));
            }
        }
        within(
            &["rules", "boost-online", "min_node_idle"],
            r.boost_online.min_node_idle,
            0.0,
            1.0,
        )?;
        within(
            &["rules", "boost-online", "above_declared"],
            r.boost_online.above_declared,
            0.0,
            10.0,
        )?;
        within(
            &["rules", "memory-squeeze", "pressure"],
            r.memory_squeeze.pressure,
            0.0,
            100.0,
        )?;
        within(
            &["rules", "memory-squeeze", "headroom"],
            r.memory_squeeze.headroom,
            0.0,
            10.0,
        )?;
        if r.memory_squeeze.enabled && r.memory_squeeze.pressure >= r.protect.max_memory_pressure {
            return Err((
                vec!["rules", "memory-squeeze", "pressure"],
                format!(
                    "rules.memory-squeeze.pressure {} must be below rules.protect.max_memory_pressure {}: the node is left alone from there",
                    r.memory_squeeze.pressure, r.protect.max_memory_pressure
                ),
            ));
        }
        if r.self_heal.judge_after == 0 {
            return Err((
                vec!["rules", "self-heal", "judge_after"],
                "rules.self-heal.judge_after must be at least 1 window".into(),
            ));
        }
        Ok(())
    }
}

/// The first character of `text` that YAML reads as a line break and an
/// editor does not (NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR): the line it
/// is on, as an editor counts lines (a newline, a CRLF or a lone CR), and
/// its name.
fn hidden_line_break(text: &str) -> Option<(usize, &'static str)> {
    let (at, c) = text
        .char_indices()
        .find(|(_, c)| matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}'))?;
    let before = &text[..at];
    let breaks = before.matches('\n').count() + before.matches('\r').count()
        - before.matches("\r\n").count();
    let name = match c {
        '\u{85}' => "U+0085 (NEXT LINE)",
        '\u{2028}' => "U+2028 (LINE SEPARATOR)",
        _ => "U+2029 (PARAGRAPH SEPARATOR)",
    };
    Some((breaks + 1, name))
}

/// The 1-based line of the key at `path` in the YAML `text` (each key
/// looked for below its parent, more indented), or of the deepest key
/// found; None when not even the first is there (a default was used).
pub fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut parent_indent: Option<usize> = None;
    let mut found = None;
    for key in path {
        let mut hit = None;
        for (i, l) in lines.iter().enumerate().skip(from) {
            let body = l.trim_start();
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            let indent = l.len() - body.len();
            if parent_indent.is_some_and(|p| indent <= p) {
                break;
            }
            if body
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
            {
                hit = Some((i, indent));
                break;
            }
        }
        match hit {
            Some((i, indent)) => {
                found = Some(i + 1);
                from = i + 1;
                parent_indent = Some(indent);
            }
            None => break,
        }
    }
    found
}

#[cfg(test)]
mod tests;

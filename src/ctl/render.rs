//! What tidalctl prints: the container table and its json, the history
//! table, limits and changes in Kubernetes quantities, and byte counts in
//! tidald's and the shims' messages shown as quantities.

use crate::proto::pb;
use crate::quantity::format_memory;
use crate::resize::{history, Limit, Update};

/// (cpu, memory, cpuset) as shown to operators; `none` stands for unlimited.
fn limit_columns(l: &pb::Limits, none: &str) -> (String, String, String) {
    let cpu = l.cpu_millis.map(|m| format!("{m}m"));
    let mem = l.memory_bytes.map(format_memory);
    let set = if l.cpuset.is_empty() {
        "-".to_string()
    } else {
        l.cpuset.clone()
    };
    (
        cpu.unwrap_or_else(|| none.into()),
        mem.unwrap_or_else(|| none.into()),
        set,
    )
}

/// The live limits, as a resize reports them.
pub fn describe_limits(c: &pb::Container) -> String {
    let (cpu, mem, set) = limit_columns(&c.live.clone().unwrap_or_default(), "unlimited");
    format!("cpu={cpu} memory={mem} cpuset={set}")
}

/// Lays out `rows` under `header` in columns as wide as their widest cell;
/// the columns flagged in `right` are aligned right.
pub(super) fn columns(header: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .zip(right)
            .map(|((cell, &w), &right)| {
                if right {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// How many characters of an id `ps` shows unless asked for all (as docker
/// and crictl do).
pub const SHORT_ID: usize = 12;

/// `tidalctl ps`: each container with its pod, QoS, live limits beside the
/// declared ones (`?` when its spec is unreadable), usage, and the sources of
/// the changes layered on the declared limits; a REC column with the
/// vertical-autoscaler's recommendations when any container has one. Ids
/// are cut to `SHORT_ID` characters unless `full_ids`.
pub fn table(containers: &[pb::Container], full_ids: bool) -> String {
    const HEADER: [&str; 13] = [
        "ID",
        "NAMESPACE",
        "POD",
        "NAME",
        "QOS",
        "PID",
        "STATUS",
        "CPU(LIVE/DECL)",
        "MEM(LIVE/DECL)",
        "CPUSET(LIVE/DECL)",
        "CPU-TIME",
        "MEM-USED",
        "OVERLAY",
    ];
    const RIGHT: [bool; 13] = [
        false, false, false, false, false, true, false, true, true, true, true, true, false,
    ];
    let with_rec = containers.iter().any(|c| c.recommended.is_some());
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let rows: Vec<Vec<String>> = containers
        .iter()
        .map(|c| {
            let usage = c.usage.unwrap_or_default();
            let live = limit_columns(&c.live.clone().unwrap_or_default(), "-");
            let declared = match &c.declared {
                Some(d) => limit_columns(d, "-"),
                None => ("?".into(), "?".into(), "?".into()),
            };
            let name = if c.sandbox && c.name.is_empty() {
                "(sandbox)".to_string()
            } else {
                dash(&c.name)
            };
            let id = if full_ids {
                c.id.as_str()
            } else {
                c.id.get(..SHORT_ID).unwrap_or(&c.id)
            };
            let mut row = vec![
                id.to_string(),
                c.namespace.clone(),
                dash(&c.pod),
                name,
                dash(&c.qos),
                c.pid.to_string(),
                c.status.clone(),
                format!("{}/{}", live.0, declared.0),
                format!("{}/{}", live.1, declared.1),
                format!("{}/{}", live.2, declared.2),
                format!("{:.2}s", usage.cpu_ns as f64 / 1e9),
                format_memory(usage.memory_bytes),
                dash(&c.overlays.join(",")),
            ];
            if with_rec {
                let r = c.recommended.clone().unwrap_or_default();
                row.push(recommendation(r.cpu_millis, r.memory_bytes));
            }
            row
        })
        .collect();
    if with_rec {
        let header: Vec<&str> = HEADER.iter().copied().chain(["REC(CPU/MEM)"]).collect();
        let right: Vec<bool> = RIGHT.iter().copied().chain([true]).collect();
        columns(&header, &right, &rows)
    } else {
        columns(&HEADER, &RIGHT, &rows)
    }
}

/// The vertical-autoscaler's recommendation, "600m/200Mi" ("-" for a
/// resource without one, "-" alone for none at all).
pub(super) fn recommendation(cpu_millis: Option<u64>, memory_bytes: Option<u64>) -> String {
    match (cpu_millis, memory_bytes) {
        (None, None) => "-".into(),
        (cpu, mem) => format!(
            "{}/{}",
            cpu.map_or_else(|| "-".into(), |m| format!("{m}m")),
            mem.map_or_else(|| "-".into(), format_memory)
        ),
    }
}

fn limits_json(l: &pb::Limits) -> serde_json::Value {
    serde_json::json!({"cpu_millis": l.cpu_millis, "memory_bytes": l.memory_bytes, "cpuset": l.cpuset})
}

/// `ps -o json`: everything tidald reports, for scripts. `declared` is null
/// when the container's spec is unreadable.
pub(super) fn json(c: &pb::Container) -> serde_json::Value {
    let u = c.usage.unwrap_or_default();
    serde_json::json!({
        "id": c.id, "namespace": c.namespace, "pod": c.pod, "name": c.name,
        "sandbox": c.sandbox, "qos": c.qos, "pid": c.pid, "status": c.status,
        "live": limits_json(&c.live.clone().unwrap_or_default()),
        "declared": c.declared.as_ref().map(limits_json),
        "overlays": c.overlays,
        "usage": {"cpu_ns": u.cpu_ns, "memory_bytes": u.memory_bytes},
        "recommended": c.recommended.as_ref().map(|r| serde_json::json!({
            "cpu_millis": r.cpu_millis, "memory_bytes": r.memory_bytes, "why": r.why,
        })),
    })
}

/// Words after which tidald's and the shims' messages give a byte count.
const BYTE_WORDS: [&str; 4] = [
    "memory limit ",
    "usage ",
    "memory swap ",
    "memory reservation ",
];

/// `message` with each byte count it gives (a number right after "memory
/// limit", "usage", "memory swap" or "memory reservation") shown as a
/// Kubernetes quantity (`format_memory`): "memory limit 67108864 is below
/// current usage 80000123" reads "memory limit 64Mi is below current usage
/// 76.3Mi".
/// Anything else, quoted values included, is left as it is.
pub fn quantities(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        let (before, from) = rest.split_at(start);
        let len = from
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(from.len());
        let (digits, after) = from.split_at(len);
        out.push_str(before);
        let whole_word = !after.starts_with(|c: char| c.is_alphanumeric() || c == '.');
        let follows_word = BYTE_WORDS.iter().any(|w| out.ends_with(w));
        match digits.parse::<u64>() {
            Ok(n) if whole_word && follows_word => out.push_str(&format_memory(n)),
            _ => out.push_str(digits),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Seconds since the epoch as `2026-11-22T11:50:01Z` (`-json` keeps the
/// number).
pub fn utc(secs: u64) -> String {
    let c = crate::traits::cron::Civil::from_unix(secs as i64);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// One line per revision: what changed, from what to what.
pub fn history_table(revs: &[history::Revision]) -> String {
    let rows: Vec<Vec<String>> = revs
        .iter()
        .map(|r| {
            vec![
                r.revision.to_string(),
                utc(r.time),
                r.source.clone(),
                describe_change(&r.before, &r.after),
                r.reason.clone(),
            ]
        })
        .collect();
    // Each column as wide as its widest cell, so every one lines up.
    columns(
        &["REV", "TIME (UTC)", "SOURCE", "CHANGE", "REASON"],
        &[true, false, false, false, false],
        &rows,
    )
}

pub(super) fn describe_change(before: &Update, after: &Update) -> String {
    let show = |l: Option<Limit>, mem: bool| match l {
        None => "-".to_string(),
        Some(Limit::Max) => "max".to_string(),
        Some(Limit::Value(v)) if mem => format_memory(v),
        Some(Limit::Value(v)) => v.to_string(),
    };
    let mut parts = Vec::new();
    if before.cpu_quota.is_some() || after.cpu_quota.is_some() {
        // In millicores, as everywhere else: quota per period.
        let period = after
            .cpu_period
            .or(before.cpu_period)
            .unwrap_or(100_000)
            .max(1);
        let cpu = |l: Option<Limit>| match l {
            Some(Limit::Value(q)) => format!("{}m", q * 1000 / period),
            other => show(other, false),
        };
        parts.push(format!(
            "cpu {}->{}",
            cpu(before.cpu_quota),
            cpu(after.cpu_quota)
        ));
    }
    if before.memory_limit.is_some() || after.memory_limit.is_some() {
        parts.push(format!(
            "memory {}->{}",
            show(before.memory_limit, true),
            show(after.memory_limit, true)
        ));
    }
    if before.memory_swap != after.memory_swap {
        parts.push(format!(
            "memory+swap {}->{}",
            show(before.memory_swap, true),
            show(after.memory_swap, true)
        ));
    }
    if before.cpuset_cpus.is_some() || after.cpuset_cpus.is_some() {
        parts.push(format!(
            "cpuset {}->{}",
            before.cpuset_cpus.as_deref().unwrap_or("-"),
            after.cpuset_cpus.as_deref().unwrap_or("-")
        ));
    }
    if parts.is_empty() {
        parts.push("other limits".into());
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_shows_cpu_in_millicores_and_reasons_line_up() {
        let rev = |n: u64, before: Update, after: Update, reason: &str| history::Revision {
            revision: n,
            time: 0,
            source: "policy".into(),
            reason: reason.into(),
            before,
            after,
        };
        let cpu = |q: u64| Update {
            cpu_quota: Some(Limit::Value(q)),
            cpu_period: Some(100_000),
            ..Default::default()
        };
        let wide = Update {
            memory_limit: Some(Limit::Value(256 << 20)),
            memory_swap: Some(Limit::Value(256 << 20)),
            cpu_quota: Some(Limit::Max),
            ..Default::default()
        };
        let mut cron = rev(2, cpu(50_000), wide, "second");
        cron.source = "trait:cron-vertical-scaler".into();
        let table = history_table(&[rev(1, cpu(100_000), cpu(50_000), "first"), cron]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].contains("cpu 1000m->500m"), "{table}");
        assert!(lines[2].contains("cpu 500m->max"), "{table}");
        let column = |l: &str, word: &str| l.find(word).unwrap();
        assert_eq!(
            column(lines[1], "cpu 1000m"),
            column(lines[2], "cpu 500m"),
            "a long source keeps CHANGE in line: {table}"
        );
        assert_eq!(
            column(lines[0], "REASON"),
            column(lines[1], "first"),
            "{table}"
        );
        assert_eq!(
            column(lines[1], "first"),
            column(lines[2], "second"),
            "{table}"
        );
    }

    #[test]
    fn revision_times_print_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_348_445), "2026-11-22T11:54:05Z");
        assert_eq!(utc(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn byte_counts_in_messages_read_as_quantities() {
        assert_eq!(
            quantities(
                "memory limit 67108864 is below current usage 80000123: refused (ask to reclaim first to try shrinking)"
            ),
            "memory limit 64Mi is below current usage 76.3Mi: refused (ask to reclaim first to try shrinking)"
        );
        // Exact multiples keep an exact quantity.
        assert_eq!(
            quantities("memory limit 4096 is below current usage 80000000: refused"),
            "memory limit 4Ki is below current usage 78125Ki: refused"
        );
        assert_eq!(
            quantities(
                "memory swap 1048576: below the memory limit 2097152: swap counts memory plus swap"
            ),
            "memory swap 1Mi: below the memory limit 2Mi: swap counts memory plus swap"
        );
        // Not byte counts: left as they are.
        for same in [
            "cpu quota 500: below the kernel's minimum of 1000 microseconds",
            "write \"67108864\" to memory.limit_in_bytes: Device or resource busy",
            "memory limit -5: negative; use -1 for unlimited",
            "usage 12ab is odd",
            "memory limit 1.5 is odd",
            "",
        ] {
            assert_eq!(quantities(same), same);
        }
    }

    #[test]
    fn ps_cuts_ids_to_12_characters_unless_asked() {
        let long = "4f1c0a9e2b7d8c6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f";
        let c = pb::Container {
            id: long.into(),
            ..listed((None, None), &[])
        };
        let first_cell = |t: String| {
            t.lines()
                .nth(1)
                .and_then(|l| l.split_whitespace().next())
                .map(String::from)
        };
        assert_eq!(
            first_cell(table(std::slice::from_ref(&c), false)).as_deref(),
            Some(&long[..12])
        );
        assert_eq!(
            first_cell(table(std::slice::from_ref(&c), true)).as_deref(),
            Some(long)
        );
        assert_eq!(json(&c)["id"], long, "json keeps the full id");
    }

    fn listed(live: (Option<u64>, Option<u64>), overlays: &[&str]) -> pb::Container {
        pb::Container {
            namespace: "k8s.io".into(),
            id: "4f1c".into(),
            pid: 4242,
            status: "running".into(),
            qos: "online".into(),
            live: Some(pb::Limits {
                cpu_millis: live.0,
                memory_bytes: live.1,
                cpuset: "0-3".into(),
            }),
            usage: Some(pb::Usage {
                cpu_ns: 1_500_000_000,
                memory_bytes: 8 << 20,
            }),
            pod: "shop/web-7d4b".into(),
            name: "app".into(),
            sandbox: false,
            declared: Some(pb::Limits {
                cpu_millis: Some(500),
                memory_bytes: Some(256 << 20),
                cpuset: String::new(),
            }),
            overlays: overlays.iter().map(|s| s.to_string()).collect(),
            recommended: None,
        }
    }

    #[test]
    fn ps_shows_live_limits_beside_declared_ones_and_who_overlaid_them() {
        let resized = listed((Some(200), Some(64 << 20)), &["operator", "trait:scaler"]);
        let declared = pb::Container {
            id: "9a2e".into(),
            ..listed((Some(500), Some(256 << 20)), &[])
        };
        let sandbox = pb::Container {
            id: "77aa".into(),
            name: String::new(),
            sandbox: true,
            declared: None,
            ..listed((None, None), &[])
        };
        let text = table(&[resized, declared, sandbox], false);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines,
            vec![
                vec![
                    "ID",
                    "NAMESPACE",
                    "POD",
                    "NAME",
                    "QOS",
                    "PID",
                    "STATUS",
                    "CPU(LIVE/DECL)",
                    "MEM(LIVE/DECL)",
                    "CPUSET(LIVE/DECL)",
                    "CPU-TIME",
                    "MEM-USED",
                    "OVERLAY"
                ],
                vec![
                    "4f1c",
                    "k8s.io",
                    "shop/web-7d4b",
                    "app",
                    "online",
                    "4242",
                    "running",
                    "200m/500m",
                    "64Mi/256Mi",
                    "0-3/-",
                    "1.50s",
                    "8Mi",
                    "operator,trait:scaler"
                ],
                vec![
                    "9a2e",
                    "k8s.io",
                    "shop/web-7d4b",
                    "app",
                    "online",
                    "4242",
                    "running",
                    "500m/500m",
                    "256Mi/256Mi",
                    "0-3/-",
                    "1.50s",
                    "8Mi",
                    "-"
                ],
                vec![
                    "77aa",
                    "k8s.io",
                    "shop/web-7d4b",
                    "(sandbox)",
                    "online",
                    "4242",
                    "running",
                    "-/?",
                    "-/?",
                    "0-3/?",
                    "1.50s",
                    "8Mi",
                    "-"
                ],
            ],
            "{text}"
        );
        // Columns line up: every row's OVERLAY starts where its header does.
        let at = text.lines().next().unwrap().find("OVERLAY").unwrap();
        for l in text.lines().skip(1) {
            assert!(
                !l[at..].starts_with(' ') && l[..at].ends_with("  "),
                "{text}"
            );
        }

        let j = json(&listed((Some(200), Some(64 << 20)), &["operator"]));
        assert_eq!(j["pod"], "shop/web-7d4b");
        assert_eq!(j["qos"], "online");
        assert_eq!(j["live"]["cpu_millis"], 200);
        assert_eq!(j["declared"]["cpu_millis"], 500);
        assert_eq!(j["declared"]["memory_bytes"], 256 << 20);
        assert_eq!(j["overlays"], serde_json::json!(["operator"]));
        assert_eq!(j["usage"]["cpu_ns"], 1_500_000_000u64);
        assert!(j["recommended"].is_null());
        // Without any recommendation there is no REC column.
        assert!(!text.contains("REC"), "{text}");
    }

    #[test]
    fn ps_shows_the_autoscalers_recommendation_when_any_container_has_one() {
        let advised = pb::Container {
            recommended: Some(pb::Recommendation {
                cpu_millis: Some(600),
                memory_bytes: None,
                why: "cpu p95 0.45 / 75%".into(),
            }),
            ..listed((Some(500), Some(256 << 20)), &[])
        };
        let plain = pb::Container {
            id: "9a2e".into(),
            ..listed((Some(500), Some(256 << 20)), &[])
        };
        let text = table(&[advised.clone(), plain], false);
        let cells: Vec<&str> = text
            .lines()
            .map(|l| l.split_whitespace().last().unwrap())
            .collect();
        assert_eq!(cells, ["REC(CPU/MEM)", "600m/-", "-"], "{text}");
        let j = json(&advised);
        assert_eq!(j["recommended"]["cpu_millis"], 600);
        assert!(j["recommended"]["memory_bytes"].is_null());
        assert_eq!(j["recommended"]["why"], "cpu p95 0.45 / 75%");
    }
}

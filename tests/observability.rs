//! The monitoring files against a live tidald: every metric that the
//! Grafana dashboard (`config/grafana/tidal.json`) and the alert rules
//! (`config/prometheus/tidal-alerts.yaml`) query is one tidald exports,
//! scraped after a resize and the policy engine's ticks; and the series the
//! alerts stand on behave as an operator sees them: the engine's pause and
//! mode flip with `tidalctl policy`, an online container's probe latency
//! is exported beside its objective. (hack/observability checks the rules
//! and the dashboard with promtool.)

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::*;

fn repo_file(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The tidal_* metric names a PromQL expression reads (label values, in
/// quotes, left out).
fn tidal_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut quoted = false;
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if !quoted && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("tidal_") {
            names.push(word.clone());
        }
        word.clear();
        if c == '"' {
            quoted = !quoted;
        }
    }
    names
}

/// Every query of the dashboard (panels, rows' panels, variables), each
/// with where it is.
fn dashboard_queries() -> Vec<(String, String)> {
    let d: serde_json::Value = serde_json::from_str(&repo_file("config/grafana/tidal.json"))
        .expect("config/grafana/tidal.json is JSON");
    fn panels(ps: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in ps.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((format!("panel {}", p["title"]), e.to_string()));
                }
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&d["panels"], &mut out);
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }
    out
}

/// Every alert's expression.
fn rule_queries() -> Vec<(String, String)> {
    let rules: serde_norway::Value =
        serde_norway::from_str(&repo_file("config/prometheus/tidal-alerts.yaml"))
            .expect("config/prometheus/tidal-alerts.yaml is YAML");
    let mut out = Vec::new();
    for g in rules["groups"].as_sequence().into_iter().flatten() {
        for r in g["rules"].as_sequence().into_iter().flatten() {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?");
            let expr = r["expr"].as_str().expect("every rule has an expr");
            out.push((format!("rule {name}"), expr.to_string()));
        }
    }
    out
}

/// The series names a scrape declares: from each `# TYPE` line, a
/// counter's `_total`, a histogram's `_bucket`, `_count` and `_sum`, a
/// gauge's own name.
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for l in scrape.lines() {
        let mut w = l.split_whitespace();
        if (w.next(), w.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(name), Some(kind)) = (w.next(), w.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_count", "_sum"] {
                    names.insert(format!("{name}{s}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// The value of the sample `series` (name and labels as exported).
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

#[test]
fn the_dashboard_and_alerts_query_what_tidald_exports() {
    require_root();
    let env = Env::start("observability");
    let policy = env.dir.join("policy.yaml");
    std::fs::write(
        &policy,
        "interval: 250ms\nmode: dry-run\nwindows:\n  trigger: 1s\n",
    )
    .unwrap();
    // An online container whose probe (a TCP connect to a port nothing
    // listens on, in its own network namespace) fails every time: each
    // failure counts as the probe's timeout, 1 s, over its 100 ms
    // objective.
    env.run_detached(
        TIDAL,
        "web",
        &[
            "--cpu-quota",
            "50000",
            "--cpu-period",
            "100000",
            "--annotation",
            "tidal.dev/qos=online",
            "--annotation",
            r#"trait.tidal.dev/qos={"class":"online","latencyObjective":"100ms","probe":{"tcpSocket":{"port":1},"timeoutSeconds":1}}"#,
        ],
        &["sleep", "3600"],
    );
    // An offline hog held to a fifth of a core: while web suffers, the
    // engine decides to throttle it (recorded only: dry-run).
    env.run_detached(
        TIDAL,
        "batch",
        &[
            "--cpu-quota",
            "20000",
            "--cpu-period",
            "100000",
            "--annotation",
            "tidal.dev/qos=offline",
        ],
        &["sh", "-c", "while :; do :; done"],
    );
    let agent = env.start_agent_with(&["--policy", policy.to_str().unwrap()]);
    let web = "{namespace=\"tidal\",container=\"web\"}";
    let probe = format!("tidal_policy_probe_latency_seconds{web}");
    let objective = format!("tidal_policy_latency_objective_seconds{web}");
    let mut text = String::new();
    let decided = "tidal_policy_decisions_total{rule=\"throttle-offline\",outcome=\"dry-run\"}";
    let ticked = wait_for(Duration::from_secs(30), || {
        text = agent.scrape();
        sample(&text, &probe).is_some() && sample(&text, decided).is_some()
    });
    assert!(
        ticked.is_some(),
        "no probe latency for web or no decision:\n{text}"
    );
    // What TidalSloBreached compares: the latency over the objective.
    assert_eq!(sample(&text, &objective), Some(0.1), "{text}");
    let latency = sample(&text, &probe).unwrap();
    assert!(
        latency > 0.1,
        "a failing probe counts as its timeout: {latency}"
    );
    // The engine runs in dry-run, deciding.
    assert_eq!(sample(&text, "tidal_policy_paused"), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, "tidal_policy_mode{mode=\"dry-run\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "tidal_policy_mode{mode=\"enforce\"}"),
        Some(0.0)
    );

    // A resize and a refusal, counted by outcome and source.
    tidalctl_ok(&env, &["resize", "web", "--cpu", "300m"]);
    let refused = env.tidalctl(&["resize", "web", "--memory", "4096"]);
    assert!(!refused.status.success(), "{refused:?}");

    // The pause the alert TidalPolicyEnginePaused watches, as an operator
    // makes it, seen at the next scrape; and the mode.
    tidalctl_ok(&env, &["policy", "pause"]);
    let text = agent.scrape();
    assert_eq!(sample(&text, "tidal_policy_paused"), Some(1.0), "{text}");
    tidalctl_ok(&env, &["policy", "resume"]);
    let text = agent.scrape();
    assert_eq!(sample(&text, "tidal_policy_paused"), Some(0.0), "{text}");
    tidalctl_ok(&env, &["policy", "mode", "enforce"]);
    let text = agent.scrape();
    assert_eq!(
        sample(&text, "tidal_policy_mode{mode=\"enforce\"}"),
        Some(1.0),
        "{text}"
    );
    tidalctl_ok(&env, &["policy", "mode", "dry-run"]);
    let text = agent.scrape();
    assert_eq!(
        sample(&text, "tidal_policy_mode{mode=\"dry-run\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "tidal_resizes_total{outcome=\"ok\",source=\"operator\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "tidal_resizes_total{outcome=\"FailedPrecondition\",source=\"operator\"}"
        ),
        Some(1.0),
        "{text}"
    );

    // Every metric the dashboard and the rules read is declared by tidald.
    let have = exported(&text);
    let mut used = BTreeSet::new();
    let mut missing = Vec::new();
    for (place, expr) in dashboard_queries().into_iter().chain(rule_queries()) {
        for name in tidal_names(&expr) {
            if !have.contains(&name) {
                missing.push(format!("{place}: {name}"));
            }
            used.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "not exported by tidald: {missing:#?}\nexported: {have:#?}"
    );
    // The extraction found the queries (a broken one would pass vacuously).
    for name in [
        "tidal_resizes_total",
        "tidal_resize_seconds_bucket",
        "tidal_policy_decisions_total",
        "tidal_policy_rollbacks_total",
        "tidal_policy_probe_latency_seconds",
        "tidal_policy_latency_objective_seconds",
        "tidal_policy_collect_seconds_bucket",
        "tidal_policy_paused",
        "tidal_containers",
    ] {
        assert!(used.contains(name), "{name} not queried: {used:?}");
    }
    let unused: Vec<&String> = have.iter().filter(|n| !used.contains(*n)).collect();
    eprintln!("exported and not on the dashboard or in a rule: {unused:?}");
    drop(agent);
    env.remove("web");
    env.remove("batch");
}

#[test]
fn metric_names_are_read_from_queries() {
    assert_eq!(
        tidal_names(
            "sum by (le) (rate(tidal_resize_seconds_bucket{instance=~\"tidal_x\"}[5m])) / on (instance) tidal_containers"
        ),
        ["tidal_resize_seconds_bucket", "tidal_containers"]
    );
    let have = exported(
        "# TYPE tidal_resizes counter\n# TYPE tidal_resize_seconds histogram\n# TYPE tidal_containers gauge\n# EOF\n",
    );
    assert_eq!(
        have.into_iter().collect::<Vec<_>>(),
        [
            "tidal_containers",
            "tidal_resize_seconds_bucket",
            "tidal_resize_seconds_count",
            "tidal_resize_seconds_sum",
            "tidal_resizes_total"
        ]
    );
}

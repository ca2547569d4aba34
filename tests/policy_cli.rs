//! The policy engine's API and CLI (`tidalctl policy ...`, `tidalctl top`)
//! and its metrics, against tidald with a policy file and real containers
//! under a private containerd; and tidald without one answering clearly.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// `top -o json`'s row of container `id`.
fn row<'a>(top: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    top.as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in top: {top}"))
}

#[test]
fn policy_commands_and_top_show_the_engine_and_its_containers() {
    let env = Env::start("policy-cli");
    let policy = env.dir.join("policy.yaml");
    std::fs::write(
        &policy,
        "interval: 250ms\nmode: dry-run\nwindows:\n  trigger: 1s\n",
    )
    .unwrap();
    // An online service starved of CPU (a tenth of a core for a busy loop:
    // throttled in nearly every period, so it suffers) and an offline hog
    // held to a fifth of a core: the engine decides to throttle the hog,
    // and records it only (dry-run).
    env.run_detached(
        TIDAL,
        "web",
        &[
            "--cpu-quota",
            "10000",
            "--cpu-period",
            "100000",
            "--annotation",
            "tidal.dev/qos=online",
        ],
        &["sh", "-c", "while :; do :; done"],
    );
    env.run_detached(
        TIDAL,
        "batch",
        &[
            "--cpu-quota",
            "20000",
            "--cpu-period",
            "100000",
            "--memory-limit",
            "134217728",
            "--annotation",
            "tidal.dev/qos=offline",
        ],
        &["sh", "-c", "while :; do :; done"],
    );
    let agent = env.start_agent_with(&["--policy", policy.to_str().unwrap()]);

    // Ticks every 250 ms: a few seconds fill the 1 s window.
    let start = Instant::now();
    let mut status = tidalctl_json(&env, &["policy", "status", "-o", "json"]);
    while status["ticks"].as_u64().unwrap() < 12 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(250));
        status = tidalctl_json(&env, &["policy", "status", "-o", "json"]);
    }
    assert_eq!(status["mode"], "dry-run", "{status}");
    assert_eq!(status["paused"], false);
    assert_eq!(status["rules_from"], policy.to_str().unwrap());
    assert_eq!(status["interval_ms"], 250);

    let text = tidalctl_ok(&env, &["policy", "status"]);
    eprintln!("tidalctl policy status:\n{text}");
    assert!(text.starts_with("mode:       dry-run\n"), "{text}");
    assert!(
        text.contains(&format!("rules:      {} (", policy.display())),
        "{text}"
    );
    assert!(
        text.contains("every:      250ms; triggers on p10 over 1s"),
        "{text}"
    );

    let table = tidalctl_ok(&env, &["top", "--once"]);
    eprintln!("tidalctl top --once:\n{table}");
    let line = |id: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("{id} not in:\n{table}"))
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(&line("web")[1..4], ["-", "online", "100m"], "{table}");
    assert_eq!(
        &line("batch")[1..5],
        ["-", "offline", "200m", "128Mi"],
        "{table}"
    );
    assert!(!table.contains("\x1b["), "--once prints no escape codes");

    let top = tidalctl_json(&env, &["top", "-o", "json"]);
    let batch = row(&top, "batch");
    assert_eq!(batch["qos"], "offline");
    assert_eq!(batch["cpu_limit_millis"], 200);
    let cores = batch["cpu_p50_cores"]
        .as_f64()
        .expect("batch's CPU profiled");
    assert!((0.1..=0.3).contains(&cores), "a fifth of a core: {cores}");
    let throttled = batch["throttled_share"].as_f64().unwrap();
    assert!(throttled > 0.5, "throttled in {throttled} of its periods");
    assert!(batch["working_set_bytes"].as_f64().is_some(), "{batch}");
    let web = row(&top, "web");
    assert_eq!(web["qos"], "online");
    assert!(web["throttled_share"].as_f64().unwrap() > 0.5, "{web}");
    assert_eq!(
        web["probe_p95_seconds"],
        serde_json::Value::Null,
        "no probe"
    );

    // web suffers; the engine decided to throttle batch, in dry-run: a
    // recorded decision, batch's limit untouched.
    assert!(
        status["suffering"][0]
            .as_str()
            .unwrap_or_default()
            .starts_with("tidal/web cpu throttled share"),
        "{status}"
    );
    let log = tidalctl_json(&env, &["policy", "decisions", "-o", "json"]);
    let first = &log[0];
    assert_eq!(
        (&first["container"], &first["rule"], &first["outcome"]),
        (
            &serde_json::json!("tidal/batch"),
            &serde_json::json!("throttle-offline"),
            &serde_json::json!("dry-run")
        ),
        "{log}"
    );
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .starts_with(
                "throttle-offline: cpu 200m -> 150m (cpu.shares 1024 -> 768): tidal/web cpu throttled share"
            ),
        "{first}"
    );
    let decisions = tidalctl_ok(&env, &["policy", "decisions"]);
    eprintln!("tidalctl policy decisions:\n{decisions}");
    assert!(
        decisions.lines().nth(1).unwrap().contains(" dry-run "),
        "{decisions}"
    );
    // Followed: the engine decides again each trigger window while web
    // suffers; a new decision arrives as a json line.
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_tidalctl"))
        .arg("--state-dir")
        .arg(env.dir.join("tidal"))
        .args(["policy", "decisions", "-f", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(follow.stdout.take().unwrap()));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let logged = log.as_array().unwrap().len();
    let mut seen = 0;
    while seen <= logged {
        let l = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a decision followed within 10 s");
        let d: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(d["container"], "tidal/batch", "{d}");
        seen += 1;
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(
        row(&tidalctl_json(&env, &["top", "-o", "json"]), "batch")["cpu_limit_millis"],
        200,
        "dry-run changes nothing"
    );

    let profile = tidalctl_json(&env, &["policy", "profile", "batch", "-o", "json"]);
    let cpu = &profile["metrics"][0];
    assert_eq!(cpu["metric"], "cpu_usage");
    assert!(
        cpu["windows"][0]["samples"].as_u64().unwrap() >= 2,
        "{profile}"
    );

    // Pause and resume, and the mode, at run time.
    assert_eq!(
        tidalctl_ok(&env, &["policy", "pause"]),
        "policy engine: dry-run mode, paused\n"
    );
    assert_eq!(
        tidalctl_json(&env, &["policy", "status", "-o", "json"])["paused"],
        true
    );
    assert!(tidalctl_ok(&env, &["policy", "status"]).starts_with("mode:       dry-run (paused)\n"));
    assert_eq!(
        tidalctl_ok(&env, &["policy", "resume"]),
        "policy engine: dry-run mode, deciding\n"
    );
    assert_eq!(
        tidalctl_ok(&env, &["policy", "mode", "enforce"]),
        "policy engine: enforce mode, deciding\n"
    );
    assert_eq!(
        tidalctl_ok(&env, &["policy", "mode", "dry-run"]),
        "policy engine: dry-run mode, deciding\n"
    );
    assert!(tidalctl_ok(&env, &["policy", "decisions"])
        .trim_start()
        .starts_with("AT"));

    // Reload on request: a bad file is refused with its line and the
    // running rules stay; a good one runs at once.
    std::fs::write(
        &policy,
        "interval: 250ms\nmode: dry-run\nwindows:\n  trigger: soon\n",
    )
    .unwrap();
    let out = env.tidalctl(&["policy", "reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("policy.yaml:4:") && err.ends_with("; the running rules stay\n"),
        "{err}"
    );
    let status = tidalctl_json(&env, &["policy", "status", "-o", "json"]);
    assert_eq!(status["interval_ms"], 250, "{status}");
    assert!(status["reload_error"]
        .as_str()
        .unwrap()
        .contains("policy.yaml:4:"));
    std::fs::write(
        &policy,
        "interval: 500ms\nmode: dry-run\nwindows:\n  trigger: 1s\n",
    )
    .unwrap();
    let reloaded = tidalctl_ok(&env, &["policy", "reload"]);
    assert!(
        reloaded.starts_with(&format!(
            "policy engine: rules reloaded from {} (",
            policy.display()
        )) && reloaded.ends_with("every 500ms); dry-run mode, deciding\n"),
        "{reloaded}"
    );
    let status = tidalctl_json(&env, &["policy", "status", "-o", "json"]);
    assert_eq!(status["interval_ms"], 500, "{status}");
    assert_eq!(status["reload_error"], "", "{status}");

    let metrics = agent.scrape();
    for want in [
        "tidal_policy_tick_seconds_count ",
        "tidal_policy_collect_seconds_count ",
        "tidal_policy_cpu_throttled_ratio{namespace=\"tidal\",container=\"batch\"} ",
    ] {
        assert!(metrics.contains(want), "{want} missing:\n{metrics}");
    }
    drop(agent);

    // Without a policy file the policy commands say so.
    let _agent = env.start_agent_with(&["--policy", "off"]);
    for args in [
        &["policy", "status"][..],
        &["policy", "pause"],
        &["policy", "reload"],
        &["policy", "decisions"],
        &["top", "--once"],
    ] {
        let out = env.tidalctl(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "tidalctl: the policy engine is off (tidald --policy FILE)\n",
            "{args:?}"
        );
    }
    env.remove("web");
    env.remove("batch");
}

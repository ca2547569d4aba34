//! The policy engine acting on real containers under a private containerd:
//! an online service whose probe goes over its latency objective makes the
//! engine throttle an offline hog, recorded as `policy` revisions; tidald
//! restarts without forgetting that overlay; when the service is healthy
//! again the engine gives the hog its limit back. A bad new policy file is
//! refused and the running rules stay.
//!
//! The service's latency is steered by the test (its probe handler sleeps
//! while a file exists), so what is asserted is the engine's behaviour, not
//! this machine's CPU contention: hack/experiment measures the real thing.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const POLICY: &str = "\
interval: 250ms
mode: enforce
windows:
  trigger: 1s
max_step: 0.5
rules:
  online:
    min_samples: 2
  throttle-offline:
    step: 0.5
    min_cpu_millis: 100
  boost-online:
    enabled: false
  give-back:
    healthy_for: 2s
    step: 0.5
  self-heal:
    judge_after: 200
";

/// The hog's live CPU limit in millicores, as `tidalctl top` shows it.
fn cpu_limit(env: &Env, id: &str) -> Option<u64> {
    let top = tidalctl_json(env, &["top", "-o", "json"]);
    top.as_array()?
        .iter()
        .find(|c| c["id"] == id)?
        .get("cpu_limit_millis")?
        .as_u64()
}

/// Polls `cond` every 100 ms for up to `limit`; the time it took.
/// A web root whose `/cgi-bin/probe` answers at once, or after half a
/// second while `slow` exists beside it.
fn web_root(dir: &Path) {
    std::fs::create_dir_all(dir.join("cgi-bin")).unwrap();
    std::fs::write(dir.join("index.html"), "up\n").unwrap();
    let probe = dir.join("cgi-bin/probe");
    std::fs::write(
        &probe,
        "#!/bin/sh\n[ -e /www/slow ] && usleep 500000\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_slow_online_service_gets_an_offline_hog_throttled_and_back_after_recovery() {
    let env = Env::start("policy");
    let www = env.dir.join("www");
    web_root(&www);
    let policy = env.dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();

    let mount = format!("type=bind,src={},dst=/www,options=rbind:ro", www.display());
    env.run_detached(
        TIDAL,
        "web",
        &[
            "--mount",
            &mount,
            "--annotation",
            "tidal.dev/qos=online",
            "--annotation",
            r#"trait.tidal.dev/qos={"class":"online","latencyObjective":"250ms","probe":{"httpGet":{"port":8080,"path":"/cgi-bin/probe"},"timeoutSeconds":2}}"#,
        ],
        &["httpd", "-f", "-p", "8080", "-h", "/www"],
    );
    env.run_detached(
        TIDAL,
        "hog",
        &[
            "--cpu-quota",
            "100000",
            "--cpu-period",
            "100000",
            "--annotation",
            "tidal.dev/qos=offline",
        ],
        &["sh", "-c", "while :; do :; done"],
    );
    let mut agent = env.start_agent_with(&["--policy", policy.to_str().unwrap()]);

    // Healthy: the probe answers well under its objective and the engine
    // leaves the hog alone.
    let probed = wait_for(Duration::from_secs(15), || {
        let top = tidalctl_json(&env, &["top", "-o", "json"]);
        let web = top.as_array().unwrap().iter().find(|c| c["id"] == "web");
        web.and_then(|w| w["probe_p95_seconds"].as_f64())
            .is_some_and(|p95| p95 < 0.25)
    });
    assert!(
        probed.is_some(),
        "web's probe never answered under 250 ms: {}",
        tidalctl_json(&env, &["top", "-o", "json"])
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cpu_limit(&env, "hog"), Some(1000));
    let log = tidalctl_json(&env, &["policy", "decisions", "-o", "json"]);
    assert_eq!(log, serde_json::json!([]), "decisions while healthy");

    // The service slows down: the engine throttles the hog within a few
    // ticks, through the resize path.
    std::fs::write(www.join("slow"), "").unwrap();
    let acted = wait_for(Duration::from_secs(15), || {
        cpu_limit(&env, "hog").is_some_and(|m| m < 1000)
    })
    .unwrap_or_else(|| {
        panic!(
            "hog not throttled within 15 s: {}",
            tidalctl_json(&env, &["policy", "status", "-o", "json"])
        )
    });
    eprintln!("hog throttled {acted:?} after web slowed down");
    let log = tidalctl_json(&env, &["policy", "decisions", "-o", "json"]);
    let first = &log[0];
    assert_eq!(first["container"], "tidal/hog", "{log}");
    assert_eq!(first["rule"], "throttle-offline", "{log}");
    assert_eq!(first["outcome"], "applied", "{log}");
    let reason = first["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "throttle-offline: cpu 1000m -> 500m (cpu.shares 1024 -> 512): tidal/web probe latency"
        ),
        "{reason}"
    );
    let history = tidalctl_json(&env, &["history", "hog", "-o", "json"]);
    let last = history.as_array().unwrap().last().unwrap();
    assert_eq!(last["source"], "policy", "{history}");
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .starts_with("throttle-offline"),
        "{history}"
    );
    // Stepped down to its floor (500m, 250m, 125m, then min_cpu_millis)
    // while the service stays slow, and never below it.
    let floor = wait_for(Duration::from_secs(15), || {
        cpu_limit(&env, "hog") == Some(100)
    });
    assert!(
        floor.is_some(),
        "hog at {:?}, not stepped down to 100m",
        cpu_limit(&env, "hog")
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cpu_limit(&env, "hog"), Some(100), "below its floor");

    // tidald restarts: the engine takes the overlay back from the history.
    drop(agent);
    agent = env.start_agent_with(&["--policy", policy.to_str().unwrap()]);
    // (at its first tick, which reads the containers' histories).
    let adopted = wait_for(Duration::from_secs(10), || {
        let status = tidalctl_json(&env, &["policy", "status", "-o", "json"]);
        status["overlays"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["container"] == "tidal/hog" && o["adopted"] == true && o["cpu"] == true)
    });
    assert!(
        adopted.is_some(),
        "the hog's overlay was forgotten: {}",
        tidalctl_json(&env, &["policy", "status", "-o", "json"])
    );

    // Healthy again: after healthy_for the engine gives the hog's limit
    // back a step at a time, until its overlay is gone.
    std::fs::remove_file(www.join("slow")).unwrap();
    let restored = wait_for(Duration::from_secs(30), || {
        cpu_limit(&env, "hog") == Some(1000)
    });
    assert!(
        restored.is_some(),
        "hog at {:?}, not given back: {}",
        cpu_limit(&env, "hog"),
        tidalctl_json(&env, &["policy", "status", "-o", "json"])
    );
    let status = tidalctl_json(&env, &["policy", "status", "-o", "json"]);
    assert_eq!(status["overlays"], serde_json::json!([]), "{status}");
    let log = tidalctl_json(&env, &["policy", "decisions", "-o", "json"]);
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|d| d["rule"] == "give-back-cpu" && d["outcome"] == "applied"),
        "{log}"
    );

    // A bad new policy file: refused with its line, the running rules stay.
    std::fs::write(&policy, "interval: 250ms\nmode: sometimes\n").unwrap();
    let refused = wait_for(Duration::from_secs(10), || {
        let s = tidalctl_json(&env, &["policy", "status", "-o", "json"]);
        !s["reload_error"].as_str().unwrap_or_default().is_empty()
    });
    assert!(refused.is_some(), "the bad file was not noticed");
    let status = tidalctl_json(&env, &["policy", "status", "-o", "json"]);
    let why = status["reload_error"].as_str().unwrap();
    assert!(
        why.starts_with(&format!("{}:2:", policy.display())) && why.contains("sometimes"),
        "{why}"
    );
    assert_eq!(status["interval_ms"], 250, "{status}");
    // This tidald (since the restart) gave the hog its CPU back.
    let metrics = agent.scrape();
    assert!(
        metrics
            .contains("tidal_policy_decisions_total{rule=\"give-back-cpu\",outcome=\"applied\"}"),
        "{metrics}"
    );
    drop(agent);
    env.remove("web");
    env.remove("hog");
}

//! The vertical-autoscaler trait on real containers under a private
//! containerd, from the policy engine's profiles: in `auto` mode it raises
//! a CPU-starved container's limit and lowers an idle one's, a step at a
//! time within the trait's bounds, each step a `trait:vertical-autoscaler`
//! revision; in `recommend` mode it changes nothing and `tidalctl top` and
//! `ps` show the recommendation.

mod common;

use std::time::Duration;

use common::*;

const POLICY: &str = "\
interval: 250ms
mode: enforce
windows:
  trigger: 1s
  usage: 3s
max_step: 0.5
";

/// Container `id`'s CPU limits set by the autoscaler, in millicores, oldest
/// first.
fn steps(env: &Env, id: &str) -> Vec<u64> {
    tidalctl_json(env, &["history", id, "-o", "json"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] == "trait:vertical-autoscaler")
        .filter_map(|r| r["after"]["cpu_quota"]["value"].as_u64())
        .map(|q| q / 100)
        .collect()
}

fn top_row(env: &Env, id: &str) -> serde_json::Value {
    let top = tidalctl_json(env, &["top", "-o", "json"]);
    top.as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_default()
}

fn run(env: &Env, id: &str, millis: u64, properties: &str, cmd: &[&str]) {
    let quota = (millis * 100).to_string();
    let annotation = format!("trait.tidal.dev/vertical-autoscaler={properties}");
    env.run_detached(
        TIDAL,
        id,
        &[
            "--cpu-quota",
            &quota,
            "--cpu-period",
            "100000",
            "--annotation",
            "tidal.dev/workload-type=server",
            "--annotation",
            &annotation,
        ],
        cmd,
    );
}

#[test]
fn vertical_autoscaler_raises_starved_lowers_idle_and_only_recommends_when_asked() {
    let env = Env::start("autoscale");
    let bounds = r#"{"minCPU":"100m","maxCPU":"1500m","targetUtilization":50"#;
    run(
        &env,
        "starved",
        200,
        &format!("{bounds}}}"),
        &["sh", "-c", "while :; do :; done"],
    );
    run(
        &env,
        "idle",
        1000,
        &format!("{bounds}}}"),
        &["sleep", "1000"],
    );
    run(
        &env,
        "advice",
        1000,
        &format!(r#"{bounds},"mode":"recommend"}}"#),
        &["sleep", "1000"],
    );
    let policy = env.dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let _agent = env.start_agent_with(&["--policy", policy.to_str().unwrap()]);

    // Starved at 200m (it would use a whole CPU): raised, a step of at most
    // half the limit at a time, never past maxCPU.
    assert!(
        eventually(Duration::from_secs(30), || steps(&env, "starved").len()
            >= 2),
        "starved: {:?}",
        steps(&env, "starved")
    );
    let up = steps(&env, "starved");
    assert_eq!(up[0], 300, "200m + half: {up:?}");
    assert!(
        up.windows(2).all(|w| w[1] > w[0] && w[1] <= w[0] * 3 / 2),
        "{up:?}"
    );
    assert!(up.iter().all(|&m| m <= 1500), "{up:?}");
    // Idle at 1000m: lowered toward minCPU, half at most per step.
    assert!(
        eventually(Duration::from_secs(20), || !steps(&env, "idle").is_empty()),
        "idle: {:?}",
        steps(&env, "idle")
    );
    let down = steps(&env, "idle");
    assert_eq!(down[0], 500, "{down:?}");
    assert!(down.iter().all(|&m| m >= 100), "{down:?}");
    // recommend: the recommendation shows in top, nothing is changed.
    assert!(
        eventually(Duration::from_secs(10), || top_row(&env, "advice")
            ["recommended_cpu_millis"]
            == 100),
        "{}",
        top_row(&env, "advice")
    );
    assert!(steps(&env, "advice").is_empty());
    // ... and in ps, beside the live and declared limits.
    let ps = tidalctl_json(&env, &["ps", "-o", "json"]);
    let advice = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "advice")
        .cloned()
        .unwrap_or_default();
    assert_eq!(advice["recommended"]["cpu_millis"], 100, "{ps}");
    let table = env.tidalctl(&["ps"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.lines().next().unwrap_or("").ends_with("REC(CPU/MEM)")
            && table
                .lines()
                .any(|l| l.starts_with("advice ") && l.contains(" 100m/")),
        "{table}"
    );
    let history = tidalctl_json(&env, &["history", "advice", "-o", "json"]);
    assert!(
        !history
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["source"] == "trait:vertical-autoscaler"),
        "{history}"
    );
    // The reason says what it was made from.
    let h = tidalctl_json(&env, &["history", "starved", "-o", "json"]);
    let reason = h.as_array().unwrap()[0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.starts_with("cpu p95 ") && reason.contains("at 50% target"),
        "{reason}"
    );
}

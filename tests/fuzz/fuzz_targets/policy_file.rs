#![no_main]
//! The policy engine's file (`/etc/tidal/policy.yaml`, `tidald --policy
//! FILE`): arbitrary bytes as text, invalid UTF-8 replaced, through
//! `Policy::parse` as tidald loads and reloads it. A refusal names the file
//! and a line inside it; an accepted file has every value in its range.

use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tidal::agent::policy::rules::Policy;

const FILE: &str = "/etc/tidal/policy.yaml";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Policy::parse(&text, Path::new(FILE)) {
        Ok(p) => check(&p),
        Err(e) => {
            assert_eq!(e.file, Path::new(FILE), "the error names the file");
            assert!(!e.problem.trim().is_empty(), "refused without a reason");
            if let Some(line) = e.line {
                // serde's end-of-input errors point one past the last line;
                // YAML breaks lines at \n, \r\n and a lone \r alike.
                let breaks = text.matches('\n').count()
                    + text.matches('\r').count()
                    - text.matches("\r\n").count();
                let lines = breaks + 2;
                assert!(
                    (1..=lines).contains(&line),
                    "line {line} of a {lines}-line file: {e}"
                );
            }
            let shown = e.to_string();
            assert!(shown.starts_with(FILE), "{shown}");
        }
    }
});

fn within(what: &str, v: f64, lo: f64, hi: f64) {
    assert!(
        v.is_finite() && (lo..=hi).contains(&v),
        "{what} {v} accepted outside {lo}..{hi}"
    );
}

/// What the engine relies on in an accepted file.
fn check(p: &Policy) {
    let day = Duration::from_secs(86_400);
    let interval = p.interval.0;
    assert!(
        (Duration::from_millis(100)..=Duration::from_secs(60)).contains(&interval),
        "interval {interval:?} accepted"
    );
    // A window holds at least one sample.
    assert!(p.windows.trigger.0 >= interval, "{p:?}");
    assert!(p.windows.usage.0 >= interval, "{p:?}");
    let r = &p.rules;
    for (what, d) in [
        ("windows.trigger", p.windows.trigger.0),
        ("windows.usage", p.windows.usage.0),
        ("rules.protect.max_age", r.protect.max_age.0),
        ("rules.give-back.healthy_for", r.give_back.healthy_for.0),
        ("rules.self-heal.hold", r.self_heal.hold.0),
    ] {
        assert!(d <= day, "{what} {d:?} accepted, longer than a day");
    }
    within("max_step", p.max_step, 0.01, 0.9);
    for (what, step) in [
        ("throttle-offline", r.throttle_offline.step),
        ("boost-online", r.boost_online.step),
        ("give-back", r.give_back.step),
        ("memory-squeeze", r.memory_squeeze.step),
    ] {
        // No step moves a limit by more than max_step, nor to zero.
        assert!(
            step.is_finite() && step > 0.0 && step <= p.max_step,
            "rules.{what}.step {step} accepted with max_step {}",
            p.max_step
        );
    }
    within("protect.min_state_dir_free", r.protect.min_state_dir_free, 0.0, 1.0);
    within("protect.max_memory_pressure", r.protect.max_memory_pressure, 0.0, 100.0);
    within("online.quantile", r.online.quantile, 0.0, 1.0);
    within("online.cpu_throttled", r.online.cpu_throttled, 0.0, 1.0);
    within("online.cpu_pressure", r.online.cpu_pressure, 0.0, 100.0);
    assert!(r.online.min_samples >= 1, "{p:?}");
    within("boost-online.min_node_idle", r.boost_online.min_node_idle, 0.0, 1.0);
    within("boost-online.above_declared", r.boost_online.above_declared, 0.0, 10.0);
    within("memory-squeeze.pressure", r.memory_squeeze.pressure, 0.0, 100.0);
    within("memory-squeeze.headroom", r.memory_squeeze.headroom, 0.0, 10.0);
    if r.memory_squeeze.enabled {
        assert!(
            r.memory_squeeze.pressure < r.protect.max_memory_pressure,
            "{p:?}"
        );
    }
    assert!(r.self_heal.judge_after >= 1, "{p:?}");
}

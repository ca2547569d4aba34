use super::*;
use crate::agent::policy::testing::{key, Series};

fn bounds() -> Bounds {
    Bounds {
        min_cpu_millis: Some(100),
        max_cpu_millis: Some(1500),
        min_memory_bytes: Some(64 << 20),
        max_memory_bytes: Some(1 << 30),
        target: 0.5,
        auto: true,
    }
}

fn series(cores: f64, working_set: f64) -> Series {
    let k = key("app");
    let mut s = Series::default();
    s.now = Duration::from_secs(30);
    let every = Duration::from_secs(1);
    s.fill(&k, Metric::CpuUsage, every, s.now, every, |_| cores);
    s.fill(&k, Metric::MemoryWorkingSet, every, s.now, every, |_| {
        working_set
    });
    s
}

#[test]
fn a_recommendation_is_use_over_the_target_within_the_bounds() {
    let w = Duration::from_secs(30);
    let r = recommend(
        &series(0.3, 100.0 * 1048576.0),
        &key("app"),
        w,
        &bounds(),
        0,
    );
    assert_eq!(r.cpu_millis, Some(600), "0.3 cores at 50%");
    assert_eq!(r.memory_bytes, Some(200 << 20));
    assert_eq!(
        r.why,
        "cpu p95 0.30 cores, working set p95 100Mi over 30s at 50% target"
    );
    // Within the bounds: a starved container asks for more than max, an
    // idle one for less than min.
    let r = recommend(&series(1.0, 0.0), &key("app"), w, &bounds(), 0);
    assert_eq!((r.cpu_millis, r.memory_bytes), (Some(1500), Some(64 << 20)));
    let r = recommend(&series(0.0, 0.0), &key("app"), w, &bounds(), 0);
    assert_eq!(r.cpu_millis, Some(100));
    // Memory never below use: above minMemory when use is...
    let r = recommend(&series(0.0, 0.0), &key("app"), w, &bounds(), 512 << 20);
    assert_eq!(r.memory_bytes, Some((512 << 20) + MEMORY_HEADROOM));
    // ...and nothing at all when use is above maxMemory (no value keeps
    // both): it does not step past its bound.
    let r = recommend(&series(0.0, 0.0), &key("app"), w, &bounds(), 2 << 30);
    assert_eq!(r.memory_bytes, None);
    let unbounded = Bounds {
        max_memory_bytes: None,
        ..bounds()
    };
    let r = recommend(&series(0.0, 0.0), &key("app"), w, &unbounded, 2 << 30);
    assert_eq!(r.memory_bytes, Some((2 << 30) + MEMORY_HEADROOM));
    // Too few samples: nothing recommended.
    let mut few = Series::default();
    few.now = Duration::from_secs(3);
    few.fill(
        &key("app"),
        Metric::CpuUsage,
        Duration::from_secs(1),
        few.now,
        Duration::from_secs(1),
        |_| 1.0,
    );
    let r = recommend(&few, &key("app"), w, &bounds(), 0);
    assert_eq!((r.cpu_millis, r.memory_bytes), (None, None));
}

#[test]
fn steps_are_bounded_and_a_limit_near_its_recommendation_stays() {
    // Within the 15% band: no change (no flapping around the target).
    assert_eq!(step(Some(1000), 2000, 1100, 0.5), None);
    assert_eq!(step(Some(1000), 2000, 870, 0.5), None);
    // Out of the band: toward it, at most max_step of the limit.
    assert_eq!(step(Some(1000), 2000, 1200, 0.5), Some(1200));
    assert_eq!(step(Some(1000), 2000, 4000, 0.5), Some(1500));
    assert_eq!(step(Some(1000), 2000, 100, 0.5), Some(500));
    // Unlimited counts as the node's whole.
    assert_eq!(step(None, 2000, 600, 0.5), Some(1000));
    // Repeated, a step reaches the recommendation and stops there.
    let mut live = Some(200);
    let mut seen = vec![];
    while let Some(to) = step(live, 2000, 1000, 0.5) {
        seen.push(to);
        live = Some(to);
    }
    assert_eq!(seen, [300, 450, 675, 1000]);
}

#[test]
fn bounds_come_from_the_pods_annotation() {
    let c = Catalogue::builtin();
    let spec =
        |v: &str| serde_json::json!({"annotations": {"trait.tidal.dev/vertical-autoscaler": v}});
    assert!(bounds_in(Some(&serde_json::json!({})), &c).is_none());
    let b = bounds_in(
        Some(&spec(
            r#"{"minCPU":"100m","maxCPU":"2","targetUtilization":60,"mode":"recommend"}"#,
        )),
        &c,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (b.min_cpu_millis, b.max_cpu_millis, b.target, b.auto),
        (Some(100), Some(2000), 0.6, false)
    );
    let e = bounds_in(Some(&spec(r#"{"mode":"often"}"#)), &c)
        .unwrap()
        .unwrap_err();
    assert!(e.contains("trait.tidal.dev/vertical-autoscaler"), "{e}");
}

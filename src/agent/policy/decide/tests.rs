use super::*;
use crate::agent::policy::testing::*;

fn policy() -> Policy {
    Policy::default()
}

/// A sample every second over the 5 s before `now`.
fn latency(s: &mut Series, id: &str, now: Duration, f: impl Fn(Duration) -> f64) {
    s.fill(
        &key(id),
        Metric::ProbeLatency,
        now.saturating_sub(ms(4000)),
        now,
        ms(1000),
        f,
    );
    s.now = now;
}

/// Online "web" (1 CPU, a 250 ms objective) and offline "batch" (2 CPUs)
/// at `now`.
fn web_and_batch(now: Duration) -> View {
    view(
        now,
        vec![
            online("web", Some(1000)),
            container("batch", Qos::Offline, Some(2000)),
        ],
    )
}

/// `id` throttled in `share` of its periods every second over the 5 s
/// before `now`.
fn throttled(id: &str, now: Duration, share: f64) -> Series {
    let mut s = Series::default();
    s.fill(
        &key(id),
        Metric::CpuThrottled,
        now.saturating_sub(ms(4000)),
        now,
        ms(1000),
        |_| share,
    );
    s.now = now;
    s
}

fn throttles(ds: &[Decision]) -> Vec<(String, Option<u64>, Option<u64>)> {
    ds.iter()
        .map(|d| (d.key.id.clone(), d.from, d.to))
        .collect()
}

#[test]
fn a_spike_alone_never_acts() {
    let p = policy();
    let now = ms(10_000);
    let v = web_and_batch(now);
    let mut s = Series::default();
    // One probe of five takes 3 s: p95 is over, p10 is not.
    latency(
        &mut s,
        "web",
        now,
        |t| if t == ms(8000) { 3.0 } else { 0.05 },
    );
    assert!(
        s.quantile(&key("web"), Metric::ProbeLatency, ms(5000), 0.95)
            .unwrap()
            > 0.25
    );
    assert!(suffering(&p, &v, &s).is_empty());
    assert!(decide(&p, &v, &s, &State::default()).is_empty());

    // Four of five over: p10 still under, no action.
    let mut s = Series::default();
    latency(
        &mut s,
        "web",
        now,
        |t| if t == ms(6000) { 0.05 } else { 0.4 },
    );
    assert!(decide(&p, &v, &s, &State::default()).is_empty());

    // Too few samples is no verdict, however high.
    let mut s = Series::default();
    s.push(&key("web"), Metric::ProbeLatency, now, 9.0);
    s.push(&key("web"), Metric::ProbeLatency, now - ms(1000), 9.0);
    s.now = now;
    assert!(decide(&p, &v, &s, &State::default()).is_empty());
}

#[test]
fn a_sustained_breach_throttles_offline_work_and_names_what_triggered_it() {
    let p = policy();
    let now = ms(10_000);
    let v = view(
        now,
        vec![
            online("web", Some(1000)),
            container("batch", Qos::Offline, Some(2000)),
            container("other", Qos::None, Some(2000)),
        ],
    );
    let mut s = Series::default();
    latency(&mut s, "web", now, |_| 0.4);
    let ds = decide(&p, &v, &s, &State::default());
    // Only the offline container; one with no QoS is never touched.
    assert_eq!(
        throttles(&ds),
        vec![("batch".into(), Some(2000), Some(1500))]
    );
    let d = &ds[0];
    assert_eq!(d.rule, Rule::ThrottleOffline);
    assert_eq!(
        d.action,
        Action::Set {
            change: Change {
                cpu_millis: Some(1500),
                // Its CPU weight goes down with its limit, in proportion.
                cpu_shares: Some(768),
                ..Default::default()
            },
            reclaim: false
        }
    );
    assert_eq!(
        d.reason(),
        "throttle-offline: cpu 2000m -> 1500m (cpu.shares 1024 -> 768): k8s.io/web probe latency (s) 0.400 > 0.250"
    );

    // Within the same window it changed, the container is left alone.
    let mut m = State::default();
    m.changed.insert(key("batch"), now - ms(4000));
    assert!(decide(&p, &v, &s, &m).is_empty());
    m.changed.insert(key("batch"), now - ms(5000));
    assert_eq!(decide(&p, &v, &s, &m).len(), 1);
}

#[test]
fn without_a_probe_throttling_or_cpu_pressure_is_the_signal() {
    let p = policy();
    let now = ms(10_000);
    let v = view(
        now,
        vec![
            container("web", Qos::Online, Some(1000)),
            container("batch", Qos::Offline, None),
        ],
    );
    let mut s = Series::default();
    s.fill(
        &key("web"),
        Metric::CpuThrottled,
        ms(6000),
        now,
        ms(1000),
        |_| 0.1,
    );
    s.now = now;
    assert!(decide(&p, &v, &s, &State::default()).is_empty());
    s.fill(
        &key("web"),
        Metric::CpuPressure,
        ms(6000),
        now,
        ms(1000),
        |_| 35.0,
    );
    let ds = decide(&p, &v, &s, &State::default());
    // An unlimited offline container counts as the node's 2 CPUs.
    assert_eq!(throttles(&ds), vec![("batch".into(), None, Some(1500))]);
    assert!(
        ds[0].reason().contains("cpu pressure 35.000 > 20.000"),
        "{}",
        ds[0].reason()
    );
    let s = throttled("web", now, 0.5);
    assert_eq!(decide(&p, &v, &s, &State::default()).len(), 1);
}

/// A probe tidald cannot run (the pod's network namespace refused it) gives
/// no samples: the container is then judged as one without a probe, on its
/// throttling, and still protected; once the probe answers, its latency is
/// what counts.
#[test]
fn an_objective_whose_probe_gives_no_samples_is_judged_on_cgroup_signals() {
    let p = policy();
    let now = ms(10_000);
    let v = web_and_batch(now);
    let mut s = throttled("web", now, 0.5);
    let ds = decide(&p, &v, &s, &State::default());
    assert_eq!(
        throttles(&ds),
        vec![("batch".into(), Some(2000), Some(1500))]
    );
    assert!(
        ds[0].reason().contains("cpu throttled"),
        "{}",
        ds[0].reason()
    );
    // The probe answers well under its objective: throttling alone no
    // longer acts.
    latency(&mut s, "web", now, |_| 0.05);
    assert!(suffering(&p, &v, &s).is_empty());
    assert!(decide(&p, &v, &s, &State::default()).is_empty());
}

#[test]
fn steps_are_small_and_stop_at_the_floors() {
    let p = policy();
    let now = ms(10_000);
    let mut s = Series::default();
    latency(&mut s, "web", now, |_| 0.4);
    let mut batch = container("batch", Qos::Offline, Some(150));
    let mut traited = container("traited", Qos::Offline, Some(600));
    traited.min_cpu_millis = Some(500);
    let mut low = container("low", Qos::Offline, Some(100));
    low.min_cpu_millis = Some(50);
    let mut v = view(
        now,
        vec![
            online("web", Some(1000)),
            batch.clone(),
            traited.clone(),
            low,
        ],
    );
    let ds = decide(&p, &v, &s, &State::default());
    // 150 * 0.75 = 112.5 -> 113; 600 * 0.75 = 450 -> the trait's 500;
    // 100 is the policy's own floor.
    assert_eq!(
        throttles(&ds),
        vec![
            ("batch".into(), Some(150), Some(113)),
            ("traited".into(), Some(600), Some(500)),
        ]
    );
    for d in &ds {
        let (from, to) = (d.from.unwrap() as f64, d.to.unwrap() as f64);
        assert!((from - to) / from <= p.max_step + 1e-9);
    }
    batch.live = limits(Some(113), Some(1 << 30));
    traited.live = limits(Some(500), Some(1 << 30));
    v.containers.insert(batch.key.clone(), batch);
    v.containers.insert(traited.key.clone(), traited);
    let ds = decide(&p, &v, &s, &State::default());
    assert_eq!(throttles(&ds), vec![("batch".into(), Some(113), Some(100))]);
}

#[test]
fn the_online_container_is_raised_only_when_offline_work_is_at_its_floor_and_cpu_is_idle() {
    let p = Policy {
        rules: super::super::rules::Rules {
            boost_online: super::super::rules::BoostOnline {
                above_declared: 0.5,
                ..Default::default()
            },
            ..Default::default()
        },
        ..policy()
    };
    let now = ms(10_000);
    let mut s = Series::default();
    latency(&mut s, "web", now, |_| 0.4);
    let mut web = online("web", Some(1000));
    let mut v = view(
        now,
        vec![web.clone(), container("batch", Qos::Offline, Some(400))],
    );
    let ds = decide(&p, &v, &s, &State::default());
    assert_eq!(
        ds.iter().map(|d| d.rule).collect::<Vec<_>>(),
        vec![Rule::ThrottleOffline]
    );

    // Offline work at its floor: the online limit goes up a step...
    v.containers.get_mut(&key("batch")).unwrap().live = limits(Some(100), Some(1 << 30));
    let ds = decide(&p, &v, &s, &State::default());
    assert_eq!(throttles(&ds), vec![("web".into(), Some(1000), Some(1200))]);
    assert_eq!(ds[0].rule, Rule::BoostOnline);
    // ...never above the declared 1000 plus the 50% the policy allows...
    web.live = limits(Some(1400), Some(1 << 30));
    v.containers.insert(web.key.clone(), web.clone());
    assert_eq!(
        throttles(&decide(&p, &v, &s, &State::default())),
        vec![("web".into(), Some(1400), Some(1500))]
    );
    web.live = limits(Some(1500), Some(1 << 30));
    v.containers.insert(web.key.clone(), web.clone());
    assert!(decide(&p, &v, &s, &State::default()).is_empty());
    // ...and not at all without idle CPU.
    web.live = limits(Some(1000), Some(1 << 30));
    v.containers.insert(web.key.clone(), web);
    v.node.cpu_idle = 0.1;
    assert!(decide(&p, &v, &s, &State::default()).is_empty());
    // With the default policy, never above what was declared.
    v.node.cpu_idle = 0.5;
    assert!(decide(&policy(), &v, &s, &State::default()).is_empty());
}

#[test]
fn an_unhealthy_node_is_left_alone() {
    let p = policy();
    let now = ms(10_000);
    let mut s = Series::default();
    latency(&mut s, "web", now, |_| 0.4);
    let v = web_and_batch(now);
    assert_eq!(decide(&p, &v, &s, &State::default()).len(), 1);
    type Spoil = fn(&mut Node);
    let troubles: [(Spoil, &str); 4] = [
        (|n| n.collected = false, "could not read"),
        (|n| n.age = ms(6000), "stale"),
        (|n| n.state_dir_free = 0.01, "state directory"),
        (
            |n| n.memory_pressure_full = Some(55.0),
            "severe memory pressure",
        ),
    ];
    for (spoil, why) in troubles {
        let mut v = v.clone();
        spoil(&mut v.node);
        let a = assess(&p, &v, &s);
        assert!(
            matches!(&a.health, Health::Trouble(m) if m.contains(why)),
            "{:?}",
            a.health
        );
        assert!(decide(&p, &v, &s, &State::default()).is_empty(), "{why}");
    }
}

#[test]
fn offline_limits_are_given_back_step_by_step_once_online_is_calm() {
    let p = policy();
    let s = Series::default();
    let mut batch = container("batch", Qos::Offline, Some(1000));
    batch.live = limits(Some(600), Some(1 << 30));
    batch.overlays = vec!["policy".into()];
    engine_wrote(&mut batch, true, false);
    let mut m = State::default();
    m.owned.insert(
        key("batch"),
        Owned {
            cpu: true,
            memory: false,
            revisions: vec![1, 2],
            adopted: false,
        },
    );
    m.last_strained = ms(5000);
    // Calm for 20 s of the 30 s: nothing yet.
    let mut v = view(ms(25_000), vec![online("web", Some(1000)), batch.clone()]);
    assert!(decide(&p, &v, &s, &m).is_empty());
    v.now = ms(35_000);
    let mut steps = Vec::new();
    loop {
        let ds = decide(&p, &v, &s, &m);
        let Some(d) = ds.first() else { break };
        assert_eq!(d.rule, Rule::GiveBackCpu);
        steps.push((d.to, d.ends_overlay));
        let c = v.containers.get_mut(&key("batch")).unwrap();
        c.live = limits(d.to, Some(1 << 30));
        m.changed.insert(key("batch"), v.now);
        if d.ends_overlay {
            m.owned.remove(&key("batch"));
        }
        v.now += p.windows.trigger.0;
    }
    assert_eq!(
        steps,
        vec![(Some(750), false), (Some(937), false), (Some(1000), true)]
    );
}

#[test]
fn nothing_is_given_back_that_another_writer_set_since() {
    let p = policy();
    let s = Series::default();
    let mut batch = container("batch", Qos::Offline, Some(1000));
    batch.live = limits(Some(600), Some(1 << 30));
    engine_wrote(&mut batch, true, false);
    let mut m = State::default();
    m.owned.insert(
        key("batch"),
        Owned {
            cpu: true,
            memory: false,
            revisions: vec![1],
            adopted: false,
        },
    );
    let v = view(ms(60_000), vec![online("web", Some(1000)), batch.clone()]);
    let ds = decide(&p, &v, &s, &m);
    assert_eq!(ds.first().map(|d| d.rule), Some(Rule::GiveBackCpu));
    // A cron job (or an operator, or kubelet) set the CPU limit since: the
    // value is theirs, and the engine leaves it (agent::owner).
    for other in ["trait:cron-vertical-scaler", "operator", "kubelet"] {
        let mut theirs = batch.clone();
        theirs
            .writers
            .insert(crate::agent::owner::CPU.into(), other.into());
        let v = view(ms(60_000), vec![online("web", Some(1000)), theirs]);
        assert!(decide(&p, &v, &s, &m).is_empty(), "{other}");
    }
}

#[test]
fn nothing_is_given_back_while_an_online_container_is_close_to_its_objective() {
    let p = policy();
    let mut batch = container("batch", Qos::Offline, Some(1000));
    batch.live = limits(Some(250), Some(1 << 30));
    engine_wrote(&mut batch, true, false);
    let owned = Owned {
        cpu: true,
        memory: false,
        revisions: vec![1],
        adopted: false,
    };
    let mut m = State::default();
    m.owned.insert(key("batch"), owned);
    let mut v = view(ms(0), vec![online("web", Some(1000)), batch]);
    // Under its 250 ms objective (not suffering) but above half of it: not
    // calm, however long it lasts.
    for (probe, calm) in [(0.15, false), (0.2, false), (0.05, true), (0.1, true)] {
        let mut m = m.clone();
        let mut s = Series::default();
        for tick in 5..=40u64 {
            v.now = ms(tick * 1000);
            latency(&mut s, "web", v.now, |_| probe);
            let a = assess(&p, &v, &s);
            assert!(a.suffering.is_empty(), "{probe}: {a:?}");
            assert_eq!(a.strained, !calm, "{probe}");
            m.note(&a, v.now);
        }
        let ds = decide(&p, &v, &s, &m);
        match calm {
            true => assert_eq!(ds.first().map(|d| d.rule), Some(Rule::GiveBackCpu)),
            false => assert!(ds.is_empty(), "{probe}: {ds:?}"),
        }
    }
}

#[test]
fn an_overlay_on_an_unlimited_declared_limit_is_lifted_by_a_rollback() {
    let p = policy();
    let s = Series::default();
    let mut batch = container("batch", Qos::Offline, None);
    batch.live = limits(Some(1800), Some(1 << 30));
    batch.last_revision = 7;
    engine_wrote(&mut batch, true, false);
    let mut m = State::default();
    m.owned.insert(
        key("batch"),
        Owned {
            cpu: true,
            memory: false,
            revisions: vec![5, 6, 7],
            adopted: false,
        },
    );
    let v = view(ms(60_000), vec![batch.clone()]);
    let ds = decide(&p, &v, &s, &m);
    assert_eq!(ds[0].action, Action::Lift { to: 4 });
    // Someone else's revision since: the limit goes up to the node's CPUs
    // instead, a rollback would undo their change.
    m.owned.get_mut(&key("batch")).unwrap().revisions = vec![5, 7];
    let ds = decide(&p, &v, &s, &m);
    assert_eq!(
        (ds[0].to, &ds[0].action),
        (Some(2000), &Deciding::cpu(2000))
    );
}

#[test]
fn under_memory_pressure_offline_memory_goes_down_but_never_below_usage() {
    let p = policy();
    let now = ms(10_000);
    let mut batch = container("batch", Qos::Offline, Some(1000));
    batch.live = limits(Some(1000), Some(1000 << 20));
    let mut v = view(now, vec![batch, container("web", Qos::Online, Some(1000))]);
    let mut s = Series::default();
    s.fill(
        &key("batch"),
        Metric::MemoryUsage,
        ms(0),
        now,
        ms(1000),
        |t| {
            if t == ms(3000) {
                700.0 * 1048576.0
            } else {
                500.0 * 1048576.0
            }
        },
    );
    s.now = now;
    assert!(
        decide(&p, &v, &s, &State::default()).is_empty(),
        "no pressure"
    );
    v.node.memory_pressure_full = Some(12.0);
    let ds = decide(&p, &v, &s, &State::default());
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].rule, Rule::MemorySqueeze);
    // A step of 20%: 800 MiB, above the usage peak plus 10%.
    assert_eq!(ds[0].to, Some(800 << 20));
    assert!(matches!(ds[0].action, Action::Set { reclaim: true, .. }));
    // Next step would be 640 MiB: held at 700 MiB * 1.1, page-aligned.
    v.containers
        .get_mut(&key("batch"))
        .unwrap()
        .live
        .memory_bytes = Some(800 << 20);
    let ds = decide(&p, &v, &s, &State::default());
    let to = ds[0].to.unwrap();
    assert_eq!(to % PAGE, 0);
    assert!(to as f64 >= 770.0 * 1048576.0 && to < 771 << 20, "{to}");
    // At that floor: nothing more.
    v.containers
        .get_mut(&key("batch"))
        .unwrap()
        .live
        .memory_bytes = Some(to);
    assert!(decide(&p, &v, &s, &State::default()).is_empty());
    // Usage heading up: the limit stays above where it is heading.
    let mut rising = Series::default();
    rising.fill(
        &key("batch"),
        Metric::MemoryUsage,
        ms(0),
        now,
        ms(1000),
        |t| (400 + 10 * t.as_secs()) as f64 * 1048576.0,
    );
    rising.now = now;
    v.containers
        .get_mut(&key("batch"))
        .unwrap()
        .live
        .memory_bytes = Some(1000 << 20);
    let ds = decide(&p, &v, &rising, &State::default());
    // 500 MiB now, 650 MiB in 15 s (3 windows of 5 s): 715 MiB with
    // headroom, below the 800 MiB step.
    assert_eq!(ds[0].to, Some(800 << 20));
    v.containers
        .get_mut(&key("batch"))
        .unwrap()
        .live
        .memory_bytes = Some(800 << 20);
    let ds = decide(&p, &v, &rising, &State::default());
    let to = ds[0].to.unwrap();
    assert!((715 << 20..=(715 << 20) + PAGE).contains(&to), "{to}");
    // Without usage data, never.
    let s = Series::default();
    v.containers
        .get_mut(&key("batch"))
        .unwrap()
        .live
        .memory_bytes = Some(1000 << 20);
    assert!(decide(&p, &v, &s, &State::default()).is_empty());
}

#[test]
fn a_held_rule_rests() {
    let p = policy();
    let now = ms(10_000);
    let v = web_and_batch(now);
    let mut s = Series::default();
    latency(&mut s, "web", now, |_| 0.4);
    let mut m = State::default();
    m.held.insert((Rule::ThrottleOffline, None), now + ms(1));
    assert!(decide(&p, &v, &s, &m)
        .iter()
        .all(|d| d.rule != Rule::ThrottleOffline));
    m.held.clear();
    m.held
        .insert((Rule::ThrottleOffline, Some(key("batch"))), now + ms(1));
    assert!(decide(&p, &v, &s, &m)
        .iter()
        .all(|d| d.rule != Rule::ThrottleOffline));
    m.note(&assess(&p, &v, &s), now + ms(1));
    assert!(m.held.is_empty());
}

#[test]
fn overlays_made_before_a_restart_are_picked_up() {
    let mut mine = container("mine", Qos::Offline, Some(1000));
    mine.live = limits(Some(500), Some(1 << 30));
    mine.overlays = vec!["policy".into()];
    let mut shared = mine.clone();
    shared.key = key("shared");
    shared.overlays = vec!["operator".into(), "policy".into()];
    let mut theirs = mine.clone();
    theirs.key = key("theirs");
    theirs.overlays = vec!["operator".into()];
    let mut m = State::default();
    m.adopt(&view(
        ms(0),
        vec![
            mine,
            shared,
            theirs,
            container("plain", Qos::Offline, Some(1)),
        ],
    ));
    assert_eq!(m.owned.keys().collect::<Vec<_>>(), vec![&key("mine")]);
    assert_eq!(
        m.owned[&key("mine")],
        Owned {
            cpu: true,
            memory: false,
            revisions: vec![],
            adopted: true
        }
    );
    // What is known of a container goes with it.
    m.changed.insert(key("mine"), ms(1));
    m.held
        .insert((Rule::MemorySqueeze, Some(key("mine"))), ms(9));
    m.held.insert((Rule::MemorySqueeze, None), ms(9));
    m.retain(&view(
        ms(2),
        vec![container("plain", Qos::Offline, Some(1))],
    ));
    assert!(m.owned.is_empty() && m.changed.is_empty());
    assert_eq!(m.held.len(), 1);
}

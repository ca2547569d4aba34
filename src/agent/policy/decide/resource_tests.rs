//! What the rules change besides a CPU or memory limit: an offline
//! container's CPU weight and cpuset along with its CPU limit, and cgroup
//! v2's `memory.high` in place of the memory limit.

use super::cpu::{cpu_list, cpu_list_text};
use super::*;
use crate::agent::policy::testing::*;
use crate::cgroups::Limit;

/// The online container "web" over its objective for the 5 s before `now`.
fn web_suffers(now: Duration) -> Series {
    let mut s = Series::default();
    s.fill(
        &key("web"),
        Metric::ProbeLatency,
        now.saturating_sub(ms(4000)),
        now,
        ms(1000),
        |_| 0.4,
    );
    s.now = now;
    s
}

fn change(d: &Decision) -> &Change {
    match &d.action {
        Action::Set { change, .. } => change,
        a => panic!("not a change: {a:?}"),
    }
}

fn owning(id: &str, cpu: bool, memory: bool) -> State {
    let mut m = State::default();
    m.owned.insert(
        key(id),
        Owned {
            cpu,
            memory,
            revisions: vec![1],
            adopted: false,
        },
    );
    m
}

#[test]
fn cpu_lists_read_and_written_as_the_kernel_spells_them() {
    let set = cpu_list("0-2,5,7-8").unwrap();
    assert_eq!(set.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 5, 7, 8]);
    assert_eq!(cpu_list_text(&set), "0-2,5,7-8");
    assert_eq!(cpu_list_text(&cpu_list("3").unwrap()), "3");
    assert_eq!(cpu_list("").unwrap().len(), 0);
    for bad in ["a", "2-1", "0-", "1,x", "0-100000"] {
        assert!(cpu_list(bad).is_none(), "{bad}");
    }
}

#[test]
fn an_offline_weight_and_cpuset_follow_its_limit_down_and_all_the_way_back() {
    let mut p = Policy::default();
    p.rules.throttle_offline.keep_off_online_cpus = true;
    let now = ms(10_000);
    let mut web = online("web", Some(1000));
    web.live.cpuset = "0".into();
    let batch = container("batch", Qos::Offline, Some(2000));
    let v = view(now, vec![web.clone(), batch.clone()]);
    let s = web_suffers(now);
    let ds = decide(&p, &v, &s, &State::default());
    assert_eq!(ds.len(), 1, "{ds:?}");
    let c = change(&ds[0]);
    assert_eq!(c.cpu_millis, Some(1500));
    assert_eq!(c.cpu_shares, Some(768), "the weight in proportion");
    assert_eq!(
        c.cpuset.as_deref(),
        Some("1"),
        "kept off the CPU the suffering web is pinned to"
    );
    assert_eq!(
        ds[0].reason(),
        "throttle-offline: cpu 2000m -> 1500m (cpu.shares 1024 -> 768, cpuset 0-1 -> 1): \
         k8s.io/web probe latency (s) 0.400 > 0.250"
    );

    // An online container on every CPU leaves the cpuset alone; so does the
    // default policy; and `weight: false` leaves the weight alone.
    let mut unpinned = v.clone();
    unpinned
        .containers
        .get_mut(&key("web"))
        .unwrap()
        .live
        .cpuset = "0-1".into();
    assert_eq!(
        change(&decide(&p, &unpinned, &s, &State::default())[0]).cpuset,
        None
    );
    let mut q = Policy::default();
    assert_eq!(
        change(&decide(&q, &v, &s, &State::default())[0]).cpuset,
        None
    );
    q.rules.throttle_offline.weight = false;
    assert_eq!(
        change(&decide(&q, &v, &s, &State::default())[0]).cpu_shares,
        None
    );

    // The weight never goes under the kernel's least, however far the limit.
    let mut far = v.clone();
    let b = far.containers.get_mut(&key("batch")).unwrap();
    b.live.cpu_quota_us = Some(300);
    b.min_cpu_millis = Some(1);
    p.rules.throttle_offline.min_cpu_millis = 1;
    p.rules.throttle_offline.step = 0.5;
    let d = decide(&p, &far, &s, &State::default());
    assert_eq!(change(&d[0]).cpu_shares, Some(2));

    // Calm again: the limit and weight step back up, and the last step
    // brings the cpuset back too and ends the overlay.
    let mut m = owning("batch", true, false);
    m.last_strained = ms(1000);
    let mut v = view(ms(60_000), vec![web, batch]);
    let b = v.containers.get_mut(&key("batch")).unwrap();
    b.live.cpu_quota_us = Some(150_000);
    b.live.cpu_shares = Some(768);
    b.live.cpuset = "1".into();
    engine_wrote(b, true, false);
    let s = Series::default();
    let mut steps = Vec::new();
    for _ in 0..5 {
        let ds = decide(&p, &v, &s, &m);
        let Some(d) = ds.first() else { break };
        assert_eq!(d.rule, Rule::GiveBackCpu);
        let c = change(d).clone();
        steps.push((c.cpu_millis, c.cpu_shares, c.cpuset.clone(), d.ends_overlay));
        let b = v.containers.get_mut(&key("batch")).unwrap();
        b.live.cpu_quota_us = c.cpu_millis.map(|m| m * 100);
        b.live.cpu_shares = c.cpu_shares.or(b.live.cpu_shares);
        b.live.cpuset = c.cpuset.unwrap_or(b.live.cpuset.clone());
        if d.ends_overlay {
            m.owned.clear();
        }
        v.now += p.windows.trigger.0;
    }
    assert_eq!(
        steps,
        [
            (Some(1875), Some(960), None, false),
            (Some(2000), Some(1024), Some("0-1".to_string()), true),
        ]
    );

    // A limit given back while its weight was left low: the weight follows.
    let mut m = owning("batch", true, false);
    m.last_strained = ms(1000);
    let b = v.containers.get_mut(&key("batch")).unwrap();
    b.live.cpu_shares = Some(256);
    let ds = decide(&p, &v, &s, &m);
    assert_eq!(change(&ds[0]).cpu_shares, Some(1024));
    assert!(ds[0].ends_overlay);
}

#[test]
fn on_cgroup_v2_memory_pressure_lowers_memory_high_and_it_is_lifted_after() {
    let p = Policy::default();
    let now = ms(10_000);
    let mut batch = container("batch", Qos::Offline, Some(1000));
    batch.live.memory_bytes = Some(1000 << 20);
    batch.live.memory_high = Some(Limit::Max);
    let mut v = view(now, vec![batch, container("web", Qos::Online, Some(1000))]);
    v.node.memory_pressure_full = Some(12.0);
    let mut s = Series::default();
    s.fill(
        &key("batch"),
        Metric::MemoryUsage,
        ms(0),
        now,
        ms(1000),
        |_| 500.0 * 1048576.0,
    );
    s.now = now;
    let ds = decide(&p, &v, &s, &State::default());
    assert_eq!(ds[0].rule, Rule::MemorySqueeze);
    assert_eq!(
        ds[0].action,
        Action::Set {
            change: Change {
                memory_high: Some(Limit::Value(800 << 20)),
                ..Default::default()
            },
            // The kernel reclaims above memory.high by itself.
            reclaim: false,
        },
        "memory.high, not the limit"
    );
    assert_eq!(
        ds[0].reason(),
        "memory-squeeze: memory.high 1000Mi -> 800Mi: node memory pressure 12.0 >= 10.0"
    );
    // Lower again from where memory.high is, never below usage + headroom.
    let b = v.containers.get_mut(&key("batch")).unwrap();
    b.live.memory_high = Some(Limit::Value(800 << 20));
    let ds = decide(&p, &v, &s, &State::default());
    assert_eq!(ds[0].from, Some(800 << 20));
    assert_eq!(change(&ds[0]).memory_high, Some(Limit::Value(640 << 20)));
    assert_eq!(change(&ds[0]).memory_bytes, None);

    // Calm: memory.high steps back up to the limit, then is lifted.
    let mut m = owning("batch", false, true);
    m.last_memory_pressure = ms(1000);
    v.now = ms(60_000);
    v.node.memory_pressure_full = Some(0.0);
    let b = v.containers.get_mut(&key("batch")).unwrap();
    b.live.memory_high = Some(Limit::Value(640 << 20));
    engine_wrote(b, false, true);
    let ds = decide(&p, &v, &s, &m);
    assert_eq!(ds[0].rule, Rule::GiveBackMemory);
    assert_eq!(change(&ds[0]).memory_high, Some(Limit::Value(800 << 20)));
    assert!(!ds[0].ends_overlay);
    let b = v.containers.get_mut(&key("batch")).unwrap();
    b.live.memory_high = Some(Limit::Value(800 << 20));
    v.now += p.windows.trigger.0;
    let ds = decide(&p, &v, &s, &m);
    assert_eq!(change(&ds[0]).memory_high, Some(Limit::Max));
    assert!(ds[0].ends_overlay);
    assert_eq!(ds[0].to, None);
    // Without a memory limit it is lifted at once.
    let b = v.containers.get_mut(&key("batch")).unwrap();
    b.live.memory_bytes = None;
    let ds = decide(&p, &v, &s, &m);
    assert_eq!(change(&ds[0]).memory_high, Some(Limit::Max));
}

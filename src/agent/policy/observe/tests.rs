use super::*;
use crate::agent::declared::Declared;
use crate::agent::node::ContainerInfo;
use crate::cgroups::{Cgroup, Limits};
use crate::testfs::{FakeCgroup, FakeDir};

/// A container as the inventory lists it, with a bundle whose spec
/// carries `annotations`.
fn found(root: &FakeDir, id: &str, pid: i32, qos: &str, annotations: serde_json::Value) -> Found {
    let bundle = root.join(id);
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(
        bundle.join("config.json"),
        serde_json::json!({"annotations": annotations}).to_string(),
    )
    .unwrap();
    Found {
        info: ContainerInfo {
            id: id.into(),
            namespace: "k8s.io".into(),
            pid,
            status: "running".into(),
            bundle,
            limits: Limits {
                cpu_quota_us: Some(100_000),
                cpu_period_us: 100_000,
                ..Default::default()
            },
            usage: Default::default(),
        },
        declared: Declared {
            pod: format!("shop/{id}"),
            qos: qos.into(),
            ..Default::default()
        },
        last_revision: 0,
    }
}

fn key(id: &str) -> Key {
    Key {
        namespace: "k8s.io".into(),
        id: id.into(),
    }
}

fn v2(name: &str) -> FakeCgroup {
    FakeCgroup::v2(
        name,
        &[
            ("cpu.stat", "usage_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n"),
            ("memory.current", "1000000\n"),
            ("memory.stat", "inactive_file 250000\n"),
            ("memory.events", "oom_kill 0\n"),
            ("cpu.pressure", "some avg10=12.00 avg60=0 avg300=0 total=1\n"),
            ("memory.pressure", "some avg10=0.00 avg60=0 avg300=0 total=1\nfull avg10=0.00 avg60=0 avg300=0 total=0\n"),
        ],
    )
}

fn observer(dir: &FakeDir, cgroups: HashMap<i32, Cgroup>, probes: bool) -> Observer {
    let mut opts = Options::new(dir);
    opts.node = super::super::collect::tests::fake_node(dir);
    opts.probes = probes;
    let collector = Collector::with_resolver(
        CollectOptions {
            node: opts.node.clone(),
            keep_open_files: 1000,
        },
        Box::new(move |pid| {
            cgroups
                .get(&pid)
                .cloned()
                .ok_or_else(|| std::io::ErrorKind::NotFound.into())
        }),
    )
    .with_alive(|_| false);
    Observer::with_collector(opts, collector, Catalogue::builtin())
}

#[test]
fn ticks_profile_containers_probe_online_pods_and_forget_the_gone() {
    let dir = FakeDir::new("observe", &[]);
    // The online pod's probe: a listener in this process's network
    // namespace (its "pod" is this process).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let me = std::process::id() as i32;
    let (web, batch) = (v2("web"), v2("batch"));
    let cgroups: HashMap<i32, Cgroup> =
        [(me, web.cgroup().clone()), (2, batch.cgroup().clone())].into();
    let mut obs = observer(&dir, cgroups, nix::unistd::geteuid().is_root());
    let qos_trait = format!(
        r#"{{"class": "online", "minCPU": "200m", "latencyObjective": "250ms", "probe": {{"tcpSocket": {{"port": {port}}}}}}}"#
    );
    let mut all = vec![
        found(
            &dir,
            "web",
            me,
            "online",
            serde_json::json!({"trait.tidal.dev/qos": qos_trait}),
        ),
        found(&dir, "batch", 2, "offline", serde_json::json!({})),
        found(&dir, "other", 3, "", serde_json::json!({})),
    ];
    all[2].info.status = "stopped".into();
    let mut view = View::default();
    for i in 1..=12u64 {
        // web uses half a core, batch 1.5 cores, a third of its periods
        // throttled.
        web.set("cpu.stat", &format!("usage_usec {}\n", i * 500_000));
        batch.set(
            "cpu.stat",
            &format!(
                "usage_usec {}\nnr_periods {}\nnr_throttled {}\nthrottled_usec 0\n",
                i * 1_500_000,
                i * 30,
                i * 10
            ),
        );
        view = obs.tick(Duration::from_secs(i), &all);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(view.node.collected, "{:?}", obs.errors());
    assert_eq!(view.node.cpus, 2);
    assert_eq!(view.node.memory_pressure_full, Some(2.5));
    assert_eq!(
        view.containers.len(),
        2,
        "the stopped one is not in the view"
    );
    let w = &view.containers[&key("web")];
    assert_eq!((w.qos, w.min_cpu_millis), (Qos::Online, Some(200)));
    assert_eq!(
        w.objective.as_ref().unwrap().latency,
        Duration::from_millis(250)
    );
    assert_eq!(view.containers[&key("batch")].qos, Qos::Offline);
    let window = Duration::from_secs(10);
    let q = |k: &str, m| obs.quantile(&key(k), m, window, 0.5).unwrap();
    assert!((q("web", Metric::CpuUsage) - 0.5).abs() < 1e-6);
    assert!((q("batch", Metric::CpuUsage) - 1.5).abs() < 1e-6);
    assert!((q("batch", Metric::CpuThrottled) - 1.0 / 3.0).abs() < 1e-6);
    assert_eq!(q("web", Metric::MemoryWorkingSet), 750_000.0);
    assert_eq!(q("web", Metric::CpuPressure), 12.0);
    assert_eq!(obs.samples(&key("batch"), Metric::ProbeLatency, window), 0);
    if nix::unistd::geteuid().is_root() {
        let probed = obs.samples(&key("web"), Metric::ProbeLatency, window);
        assert!(probed >= 5, "{probed} probe samples");
        let p95 = obs
            .quantile(&key("web"), Metric::ProbeLatency, window, 0.95)
            .unwrap();
        assert!(p95 < 0.25, "a local connect: {p95}");
    }
    // batch is gone: out of the view and the profiles at the next tick.
    all.remove(1);
    let view = obs.tick(Duration::from_secs(13), &all);
    assert_eq!(
        view.containers.keys().collect::<Vec<_>>(),
        vec![&key("web")]
    );
    assert_eq!(obs.samples(&key("batch"), Metric::CpuUsage, window), 0);
    assert!(view.node.collected, "a container going is no error");
    // web's process became another (same name, new pid) whose cgroup
    // cannot be found and which does not run (it exited as it was
    // listed): no error, web's profile kept until it is listed stopped.
    all[0].info.pid = 99;
    let view = obs.tick(Duration::from_secs(14), &all);
    assert!(view.node.collected);
    assert_eq!(view.node.age, Duration::ZERO);
    assert!(view.containers.contains_key(&key("web")));
    assert_eq!(obs.samples(&key("web"), Metric::CpuUsage, window), 9);
    drop(listener);
}

#[test]
fn a_probe_that_cannot_enter_the_pods_namespace_gives_no_sample() {
    // An online pod whose network namespace tidald cannot enter (here its
    // process is gone; on a node, tidald without CAP_SYS_ADMIN): its
    // latency is unknown, not the probe's timeout, or the engine would see
    // the pod miss its objective on every tick and squeeze offline work
    // for nothing.
    let dir = FakeDir::new("observe-netns", &[]);
    let web = v2("web");
    let gone = 999_999;
    let mut obs = observer(&dir, [(gone, web.cgroup().clone())].into(), true);
    let all = vec![found(
        &dir,
        "web",
        gone,
        "online",
        serde_json::json!({"trait.tidal.dev/qos": r#"{"class": "online", "latencyObjective": "250ms", "probe": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 1}}"#}),
    )];
    // Each failure is counted by its reason, for tidal_policy_probe_failures.
    let mut failed = 0;
    for i in 1..=6u64 {
        web.set("cpu.stat", &format!("usage_usec {}\n", i * 100_000));
        obs.tick(Duration::from_secs(i), &all);
        failed += obs.probe_failures().get("netns").copied().unwrap_or(0);
        assert_eq!(obs.probe_failures().keys().find(|r| **r != "netns"), None);
        std::thread::sleep(Duration::from_millis(30));
    }
    let window = Duration::from_secs(10);
    assert!(obs.samples(&key("web"), Metric::CpuUsage, window) >= 5);
    assert_eq!(obs.samples(&key("web"), Metric::ProbeLatency, window), 0);
    assert!(failed >= 4, "{failed} netns failures counted in 6 ticks");
}

#[test]
fn the_observer_can_move_to_the_engines_thread_and_be_shared() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send + 'static>() {}
    send::<Observer>();
    send_sync::<Profiles>();
}

#[test]
fn a_node_that_cannot_be_read_is_reported_with_the_age_of_its_data() {
    let dir = FakeDir::new("observe-node", &[]);
    let mut obs = observer(&dir, HashMap::new(), false);
    assert!(obs.tick(Duration::from_secs(1), &[]).node.collected);
    // (A kept file reads on after an unlink, as /proc's never are.)
    std::fs::write(dir.join("meminfo"), "garbage\n").unwrap();
    let view = obs.tick(Duration::from_secs(4), &[]);
    assert!(!view.node.collected);
    assert_eq!(view.node.age, Duration::from_secs(3));
    assert!(obs.errors().is_empty() && !obs.node().errors.is_empty());
}

/// The cost of one tick with 100 containers (half v1, half v2, each
/// with a pod spec) on a fake cgroupfs, printed; and through this
/// host's real cgroupfs (every container reading this process's cgroup
/// through files of its own), when it has one.
#[test]
fn tick_cost_with_100_containers() {
    let dir = FakeDir::new("observe-bench", &[]);
    let fakes: Vec<FakeCgroup> = (0..100)
        .map(|i| {
            if i % 2 == 0 {
                super::super::collect::tests::fake_v1(&format!("c{i}"), 1)
            } else {
                v2(&format!("c{i}"))
            }
        })
        .collect();
    let all: Vec<Found> = (0..100)
        .map(|i| {
            let qos = if i % 2 == 0 { "offline" } else { "online" };
            found(
                &dir,
                &format!("c{i}"),
                1000 + i,
                qos,
                serde_json::json!({
                    "trait.tidal.dev/qos": format!(r#"{{"class": "{qos}", "minCPU": "100m"}}"#)
                }),
            )
        })
        .collect();
    let measure = |cgroups: HashMap<i32, Cgroup>, what: &str| {
        let mut obs = observer(&dir, cgroups, false);
        obs.tick(Duration::from_secs(1), &all);
        let ticks = 20u32;
        let t0 = Instant::now();
        for i in 0..ticks {
            let view = obs.tick(Duration::from_secs(2 + u64::from(i)), &all);
            assert_eq!(view.containers.len(), 100);
            assert!(view.node.collected, "{:?}", obs.errors());
        }
        let per_tick = t0.elapsed() / ticks;
        eprintln!(
            "tick with 100 containers ({what}): {per_tick:?}, {} files kept open, profiles {} KiB at most",
            obs.open_files(),
            100 * obs.signals().bytes_per_container() / 1024
        );
        per_tick
    };
    let fake: HashMap<i32, Cgroup> = fakes
        .iter()
        .enumerate()
        .map(|(i, f)| (1000 + i as i32, f.cgroup().clone()))
        .collect();
    let cost = measure(fake, "fake cgroupfs");
    // Generous for an unoptimised build on a shared machine; the
    // report gives the measured figure.
    assert!(cost < Duration::from_millis(200), "{cost:?}");
    if let Ok(mine) = Cgroup::of_pid(std::process::id() as i32) {
        let real: HashMap<i32, Cgroup> = (0..100).map(|i| (1000 + i, mine.clone())).collect();
        measure(real, "this host's cgroupfs");
    }
}

/// A cgroup v1 group made by a test on this host (cpu, cpuacct and
/// memory), its processes killed and its directories removed on drop.
struct RealCgroup {
    dirs: Vec<PathBuf>,
    child: Option<std::process::Child>,
}

impl Drop for RealCgroup {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// On this host's cgroup v1, as root (serialise with the other root
/// tests: `flock /tmp/tidal-root-tests.lock`): a process spinning
/// under a quota of a fifth of a core is seen using 0.2 cores,
/// throttled in nearly every period, its memory read at every tick.
#[test]
fn a_throttled_process_on_this_hosts_cgroups() {
    let root = std::path::Path::new("/sys/fs/cgroup");
    if !nix::unistd::geteuid().is_root() || !root.join("cpu/cpu.cfs_quota_us").exists() {
        eprintln!("skipped: needs root and cgroup v1 cpu");
        return;
    }
    let name = format!("tidal-policy-test-{}", std::process::id());
    let mut cg = RealCgroup {
        dirs: Vec::new(),
        child: None,
    };
    for ctrl in ["cpu", "cpuacct", "memory"] {
        let d = root.join(ctrl).join(&name);
        std::fs::create_dir_all(&d).unwrap();
        cg.dirs.push(d);
    }
    std::fs::write(cg.dirs[0].join("cpu.cfs_period_us"), "100000").unwrap();
    std::fs::write(cg.dirs[0].join("cpu.cfs_quota_us"), "20000").unwrap();
    let child = std::process::Command::new("busybox")
        .args(["sh", "-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    cg.child = Some(child);
    for d in &cg.dirs {
        std::fs::write(d.join("cgroup.procs"), pid.to_string()).unwrap();
    }
    let dir = FakeDir::new("observe-real", &[]);
    let mut opts = Options::new(&dir);
    opts.probes = false;
    let mut obs = Observer::new(opts, Catalogue::builtin());
    let all = vec![found(&dir, "spin", pid, "offline", serde_json::json!({}))];
    let clock = Instant::now();
    for _ in 0..4 {
        let view = obs.tick(clock.elapsed(), &all);
        assert!(
            view.node.collected,
            "{:?} {:?}",
            obs.errors(),
            obs.node().errors
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let k = key("spin");
    let w = Duration::from_secs(10);
    assert_eq!(obs.samples(&k, Metric::CpuUsage, w), 3);
    let cores = obs.quantile(&k, Metric::CpuUsage, w, 0.5).unwrap();
    assert!((0.15..=0.25).contains(&cores), "{cores} cores");
    let throttled = obs.quantile(&k, Metric::CpuThrottled, w, 0.5).unwrap();
    assert!(throttled > 0.8, "throttled in {throttled} of the periods");
    // (v1 charges memory where it was allocated: a process moved in
    // brings none, so the values may be 0; they are read each tick.)
    assert_eq!(obs.samples(&k, Metric::MemoryWorkingSet, w), 4);
    assert_eq!(obs.samples(&k, Metric::MemoryUsage, w), 4);
    assert!(
        obs.open_files() >= 5 + 5,
        "the container's and the node's files kept open"
    );
    drop(cg);
    // The process and its cgroup gone, the inventory not aware yet: no
    // error, the profile kept; then listed as stopped: forgotten.
    let view = obs.tick(clock.elapsed(), &all);
    assert!(view.node.collected, "{:?}", obs.errors());
    assert_eq!(obs.samples(&k, Metric::CpuUsage, w), 3);
    let mut all = all;
    all[0].info.status = "stopped".into();
    let view = obs.tick(clock.elapsed() + Duration::from_millis(1), &all);
    assert!(view.containers.is_empty());
    assert_eq!(obs.samples(&k, Metric::CpuUsage, w), 0);
}

/// Live over tidald's inventory: each tick summarises every running
/// container for the API and reports it (with the tick's cost); the
/// shared observer answers the API's queries between ticks.
#[tokio::test]
async fn live_ticks_leave_a_snapshot_and_report_it() {
    use crate::agent::policy::engine::Source;
    let me = std::process::id() as i32;
    if Cgroup::of_pid(me).is_err() {
        eprintln!("skipped: no cgroup for this process");
        return;
    }
    let state = FakeDir::new("observe-live", &[]);
    for id in ["a", "b"] {
        let dir = state.join("k8s.io").join(id);
        let bundle = state.join("bundles").join(id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(
            bundle.join("config.json"),
            serde_json::json!({"annotations": {"tidal.dev/qos": "offline"}}).to_string(),
        )
        .unwrap();
        std::fs::write(
            dir.join("state.json"),
            serde_json::json!({"id": id, "status": "running", "pid": me, "bundle": bundle})
                .to_string(),
        )
        .unwrap();
    }
    #[derive(Default)]
    struct Reports(Mutex<Vec<usize>>);
    impl Report for Reports {
        fn tick(&self, s: &Snapshot) {
            assert!(s.cost > Duration::ZERO);
            self.0.lock().unwrap().push(s.containers.len());
        }
    }
    let reports = Arc::new(Reports::default());
    let mut opts = Options::new(&state);
    opts.probes = false;
    let window = Duration::from_secs(10);
    let mut live = Live::new(
        Observer::new(opts, Catalogue::builtin()),
        Arc::new(Inventory::new(state.path())),
        window,
        Duration::from_secs(1),
    )
    .with_report(reports.clone());
    let (shared, snapshots) = (live.shared(), live.snapshots());
    assert!(snapshots.last().containers.is_empty(), "before a tick");
    for i in 1..=3 {
        let view = live.tick(Duration::from_secs(i)).await;
        assert_eq!(view.containers.len(), 2);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(*reports.0.lock().unwrap(), vec![2, 2, 2]);
    let last = snapshots.last();
    assert_eq!(
        last.containers
            .iter()
            .map(|c| c.key.id.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert_eq!(last.window, window);
    assert!(last.containers[0].working_set.is_some(), "{last:?}");
    assert_eq!(shared.samples(&key("a"), Metric::CpuUsage, window), 2);
    assert_eq!(
        live.signals().samples(&key("b"), Metric::CpuUsage, window),
        2
    );
}

/// The engine's whole data tick as the control side runs it: the
/// inventory's list of 100 containers (state files, spec, history) and
/// `tick` (statistics and live limits), on this host's cgroupfs (each container is this
/// process, in its own cgroup). Printed.
#[test]
fn inventory_and_tick_cost_with_100_containers() {
    let me = std::process::id() as i32;
    if Cgroup::of_pid(me).is_err() {
        eprintln!("skipped: no cgroup for this process");
        return;
    }
    let state = FakeDir::new("observe-inventory", &[]);
    for i in 0..100 {
        let id = format!("c{i:03}");
        let dir = state.join("k8s.io").join(&id);
        let bundle = state.join("bundles").join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&bundle).unwrap();
        let qos = if i % 2 == 0 { "online" } else { "offline" };
        std::fs::write(
            bundle.join("config.json"),
            serde_json::json!({"annotations": {"tidal.dev/qos": qos}}).to_string(),
        )
        .unwrap();
        std::fs::write(
            dir.join("state.json"),
            serde_json::json!({"id": id, "status": "running", "pid": me, "bundle": bundle})
                .to_string(),
        )
        .unwrap();
    }
    let inventory = Inventory::new(state.path());
    let mut opts = Options::new(&state);
    opts.probes = false;
    let mut obs = Observer::new(opts, Catalogue::builtin());
    let view = obs
        .tick_inventory(Duration::from_secs(1), &inventory)
        .unwrap();
    assert_eq!(view.containers.len(), 100);
    assert_eq!(view.containers[&key("c000")].qos, Qos::Online);
    let ticks = 10u32;
    let (mut listing, mut ticking) = (Duration::ZERO, Duration::ZERO);
    for i in 0..ticks {
        let t0 = Instant::now();
        let found = inventory.list_declared().unwrap();
        listing += t0.elapsed();
        let view = obs.tick(Duration::from_secs(2 + u64::from(i)), &found);
        ticking += obs.cost();
        assert_eq!(view.containers.len(), 100);
        // The listing leaves the live limits to the collector, which read
        // them (every cgroup has a CPU period).
        assert_eq!(found[0].info.limits.cpu_period_us, 0);
        assert!(
            view.containers.values().all(|c| c.live.cpu_period_us > 0),
            "{:?}",
            view.containers[&key("c000")].live
        );
        assert!(view.node.collected, "{:?}", obs.errors());
    }
    eprintln!(
        "100 containers: Inventory::list {:?}, Observer::tick {:?} per tick",
        listing / ticks,
        ticking / ticks
    );
    assert_eq!(
        obs.samples(&key("c099"), Metric::CpuUsage, Duration::from_secs(60)),
        10
    );
}

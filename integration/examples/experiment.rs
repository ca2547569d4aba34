//! The policy engine's experiment (issue 12; the seed's experiment on one
//! node): an online HTTP service whose every request costs CPU, with a
//! latency objective and a probe in its `qos` trait, shares a CPU with an
//! offline pod that burns CPU and counts its work. An open-loop load
//! generator here, outside the pods, sends a low rate, then steps up to a
//! rate the service cannot serve beside the offline pod. The timeline runs
//! twice in one invocation: tidald without its policy engine, then with it
//! enforcing a policy file. Per second: the p95 of the load generator's
//! latencies, the offline container's CPU limit (its cgroup), its work done
//! and the engine's decisions (tidald's log); CSV under docs/policy/.
//!
//!   cargo run --release -p tidal-integration --example experiment
//!
//! (`hack/experiment` builds tidal, runs this and plots the CSV.)
//! Knobs (environment): EXPERIMENT_LOW_SECS, EXPERIMENT_HIGH_SECS,
//! EXPERIMENT_LOW_RPS, EXPERIMENT_HIGH_RPS, EXPERIMENT_CGI_LOOPS,
//! EXPERIMENT_SLO_MS, EXPERIMENT_CPU (the CPU both pods are pinned to),
//! EXPERIMENT_POLICY (the policy file), EXPERIMENT_OUT (the CSV directory).

use std::fmt::Write as _;
use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tidal_integration::cri::v1;
use tidal_integration::env::{repo, shim_dir, CriEnv};
use tidal_integration::suite::{cgroups_below, Ctx, Shared};

/// The experiment's shape; defaults fit a 2-core machine.
#[derive(Debug, Clone)]
struct Plan {
    low: Duration,
    high: Duration,
    low_rps: f64,
    /// The step's request rate: EXPERIMENT_HIGH_RPS, or worked out by the
    /// first run from `load` and the service time it measures.
    high_rps: f64,
    /// Without EXPERIMENT_HIGH_RPS: the share of one CPU the step's
    /// requests need (EXPERIMENT_LOAD, default 0.5; EXPERIMENT_LOW_LOAD,
    /// default 0.1, before the step). The probe's requests come on top, in
    /// both runs (`probe`). The pods' cgroups get
    /// kubelet's CPU weights (`pod_weight`), so the online pod has a third
    /// of the CPU while the offline pod runs unthrottled and at most half
    /// while it is at 500m, three quarters at 250m: between those, the step
    /// overloads the service unless the offline pod is throttled, whatever
    /// this machine's speed. Set to None once measured.
    load: Option<(f64, f64)>,
    /// How often the online pod is probed: tidald probes it at its policy's
    /// interval (250 ms in the shipped one) with the same CGI request, so
    /// in the engine-off run the experiment sends the same requests itself
    /// (not counted in the latencies): both runs serve the same load.
    probe: Duration,
    /// The service time measured (one request alone on the idle CPU).
    service: Option<Duration>,
    /// Shell loop iterations per request (the service time is measured).
    cgi_loops: u64,
    slo: Duration,
    cpu: String,
    policy: PathBuf,
    out: PathBuf,
}

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} does not parse")),
        Err(_) => default,
    }
}

impl Plan {
    fn from_env() -> Plan {
        Plan {
            low: Duration::from_secs(knob("EXPERIMENT_LOW_SECS", 20)),
            high: Duration::from_secs(knob("EXPERIMENT_HIGH_SECS", 40)),
            low_rps: knob("EXPERIMENT_LOW_RPS", 5.0),
            high_rps: knob("EXPERIMENT_HIGH_RPS", 0.0),
            load: std::env::var_os("EXPERIMENT_HIGH_RPS").is_none().then(|| {
                (
                    knob("EXPERIMENT_LOW_LOAD", 0.1),
                    knob("EXPERIMENT_LOAD", 0.5),
                )
            }),
            service: None,
            probe: Duration::from_millis(knob("EXPERIMENT_PROBE_MS", 250)),
            cgi_loops: knob("EXPERIMENT_CGI_LOOPS", 5_000),
            slo: Duration::from_millis(knob("EXPERIMENT_SLO_MS", 250)),
            cpu: knob("EXPERIMENT_CPU", "1".to_string()),
            policy: PathBuf::from(knob(
                "EXPERIMENT_POLICY",
                repo()
                    .join("config/policy/default.yaml")
                    .display()
                    .to_string(),
            )),
            out: PathBuf::from(knob(
                "EXPERIMENT_OUT",
                repo().join("docs/policy").display().to_string(),
            )),
        }
    }

    fn total(&self) -> Duration {
        self.low + self.high
    }
}

/// tidald on the environment's state directory, its log lines about the
/// policy engine kept with the time they arrived; stopped when dropped.
struct Tidald {
    child: Child,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Tidald {
    fn start(state: &Path, policy: Option<&Path>) -> Tidald {
        let mut cmd = Command::new(shim_dir().join("tidald"));
        cmd.arg("--state-dir")
            .arg(state)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("TIDAL_TRAITS_DIR", repo().join("config/traits"))
            .stderr(Stdio::piped());
        match policy {
            Some(p) => cmd
                .arg("--policy")
                .arg(p)
                .args(["--policy-mode", "enforce"]),
            None => cmd.args(["--policy", "off"]),
        };
        let mut child = cmd.spawn().expect("start tidald");
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        // Its first line says where it listens, once the socket is bound.
        let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        assert!(first.contains("API on"), "tidald did not start: {first}");
        let log = Arc::new(Mutex::new(Vec::new()));
        let keep = log.clone();
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("policy") {
                    keep.lock().unwrap().push((Instant::now(), line));
                }
            }
        });
        Tidald {
            child,
            log,
            reader: Some(reader),
        }
    }
}

impl Drop for Tidald {
    fn drop(&mut self) {
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// One request of the load generator: when it was due (seconds from the
/// start of the timeline) and how long it took from then (a failure counts
/// as the generator's timeout).
#[derive(Debug, Clone, Copy)]
struct Request {
    due: f64,
    latency: f64,
    ok: bool,
}

/// One sample of the offline container, `at` seconds from the start.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: f64,
    /// Its CPU limit in millicores (None: unlimited or unreadable).
    cpu_millis: Option<u64>,
    /// Work units done so far.
    work: u64,
}

/// One run of the timeline.
struct Run {
    name: &'static str,
    requests: Vec<Request>,
    samples: Vec<Sample>,
    /// The engine's decisions: seconds from the start, the log line.
    decisions: Vec<(f64, String)>,
    history: String,
}

const TIMEOUT: Duration = Duration::from_secs(10);
const PORT: u16 = 8080;

fn main() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the experiment starts containerd and real pods: run it as root (hack/experiment)"
    );
    let mut plan = Plan::from_env();
    println!("== plan: {plan:?}");
    println!("== a private containerd with its CRI plugin, tidal as runtime handler `tidal`");
    let env = Arc::new(CriEnv::start("experiment"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(tidal_integration::cri::connect(&env.socket()))
        .expect("connect to CRI")
        .0;
    let cgroup_root = format!("tidal-experiment-{}", std::process::id());
    isolate(&cgroup_root);
    let shared = Arc::new(Shared::new(&env, &cgroup_root));
    let mut runs = Vec::new();
    let mut failure = None;
    let policy_file = plan.policy.clone();
    for (name, policy) in [("off", None), ("on", Some(policy_file.as_path()))] {
        let ctx = Ctx {
            handler: "tidal",
            case: if policy.is_some() { "on" } else { "off" },
            rt: client.clone(),
            shared: shared.clone(),
            env: env.clone(),
        };
        println!(
            "\n== run: engine {name}{}",
            policy
                .map(|p| format!(" (enforce, {})", p.display()))
                .unwrap_or_default()
        );
        let agent = Tidald::start(&env.tidal_state(), policy);
        let result = rt.block_on(run(&ctx, &mut plan, name, &agent));
        let cleaned = rt.block_on(ctx.cleanup());
        drop(agent);
        match result.and_then(|r| cleaned.map(|_| r)) {
            Ok(r) => runs.push(r),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(rt);
    drop(shared);
    drop(
        Arc::try_unwrap(env)
            .ok()
            .expect("the environment is ours alone"),
    );
    for d in cgroups_below(&cgroup_root) {
        let _ = std::fs::remove_dir(d);
    }
    if let Some(e) = failure {
        eprintln!("experiment failed: {e}");
        std::process::exit(1);
    }
    if let Err(e) = report(&plan, &runs) {
        eprintln!("experiment: writing the results: {e}");
        std::process::exit(1);
    }
    println!("\n== done: pods removed, tidald and containerd stopped, nothing left behind");
}

/// The pods' common cgroup parent in the cpu hierarchy, made before the
/// pods with the highest CPU weight: on a machine shared with other work
/// (compilers on every core), CPU time goes to the experiment's two pods
/// first, and the contention it measures is theirs. Removed at the end with
/// the pods' cgroups.
fn isolate(root: &str) {
    let dir = Path::new("/sys/fs/cgroup/cpu").join(root);
    let made = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(dir.join("cpu.shares"), "262144"));
    if let Err(e) = made {
        println!(
            "(not isolated from the machine's other work: {}: {e})",
            dir.display()
        );
    }
}

/// The online service: busybox httpd, one CGI script that burns
/// `loops` shell iterations per request.
fn online(ctx: &Ctx, plan: &Plan) -> v1::ContainerConfig {
    let cgi = format!(
        "#!/bin/sh\nn=0\nwhile [ $n -lt {} ]; do n=$((n+1)); done\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n",
        plan.cgi_loops
    );
    let mut c = ctx.container(
        "web",
        &[
            "sh",
            "-c",
            "mkdir -p /www/cgi-bin && printf '%s' \"$CGI\" >/www/cgi-bin/work && chmod 755 /www/cgi-bin/work && exec httpd -f -p 8080 -h /www",
        ],
    );
    c.envs = vec![v1::KeyValue {
        key: "CGI".into(),
        value: cgi,
    }];
    // Burstable, as most services: requests cpu 500m, limits cpu 1.
    c.linux.as_mut().unwrap().resources = Some(limits(plan, 500, 1000));
    c
}

/// The offline batch job: CPU-bound, printing how many work units (20000
/// shell iterations each) it has done.
fn offline(ctx: &Ctx, plan: &Plan) -> v1::ContainerConfig {
    let mut c = ctx.container(
        "batch",
        &[
            "sh",
            "-c",
            "i=0; while :; do n=0; while [ $n -lt 20000 ]; do n=$((n+1)); done; i=$((i+1)); echo $i; done",
        ],
    );
    // Requests = limits = cpu 1.
    c.linux.as_mut().unwrap().resources = Some(limits(plan, 1000, 1000));
    c
}

/// What kubelet sends for requests cpu REQUEST, limits cpu LIMIT (in
/// millicores), memory 128Mi, on the plan's CPU.
fn limits(plan: &Plan, request: i64, limit: i64) -> v1::LinuxContainerResources {
    v1::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: limit * 100,
        cpu_shares: request * 1024 / 1000,
        memory_limit_in_bytes: 128 << 20,
        cpuset_cpus: plan.cpu.clone(),
        ..Default::default()
    }
}

fn annotate(pod: &mut v1::PodSandboxConfig, class: &str, qos_trait: String) {
    pod.annotations = [
        ("tidal.dev/qos".to_string(), class.to_string()),
        ("trait.tidal.dev/qos".to_string(), qos_trait),
    ]
    .into();
}

/// The offline container's CPU quota directory in the cpu hierarchy.
fn cpu_cgroup(root: &str, id: &str) -> Option<PathBuf> {
    cgroups_below(root).into_iter().find(|d| {
        d.join("cpu.cfs_quota_us").is_file()
            && d.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(id))
    })
}

fn read_millis(dir: &Path) -> Option<u64> {
    let quota: i64 = std::fs::read_to_string(dir.join("cpu.cfs_quota_us"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let period: i64 = std::fs::read_to_string(dir.join("cpu.cfs_period_us"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (quota > 0 && period > 0).then(|| (quota * 1000 / period) as u64)
}

/// The last count the offline container printed (CRI log lines end with
/// the message).
fn read_work(log: &Path) -> u64 {
    let Ok(mut f) = std::fs::File::open(log) else {
        return 0;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(512)));
    let mut tail = String::new();
    let _ = f.read_to_string(&mut tail);
    tail.lines()
        .rev()
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .next()
        .unwrap_or(0)
}

/// One GET of the CGI: whether it answered 200.
async fn get(addr: &str) -> std::io::Result<bool> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /cgi-bin/work HTTP/1.0\r\nHost: web\r\n\r\n")
        .await?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).await?;
    Ok(body.starts_with(b"HTTP/1.0 200") || body.starts_with(b"HTTP/1.1 200"))
}

/// Makes `pod`'s cgroup (its cgroup parent) in the cpu hierarchy before
/// the pod, with the CPU weight kubelet gives a pod that requests
/// `millicores` (cpu.shares = millicores * 1024 / 1000): without it the two
/// pods would weigh the same, as no pod does under kubelet.
fn pod_weight(pod: &v1::PodSandboxConfig, millicores: u64) -> Result<(), String> {
    let parent = &pod.linux.as_ref().expect("linux pod").cgroup_parent;
    let dir = Path::new("/sys/fs/cgroup/cpu").join(parent.trim_start_matches('/'));
    std::fs::create_dir_all(&dir)
        .and_then(|_| {
            std::fs::write(
                dir.join("cpu.shares"),
                (millicores * 1024 / 1000).to_string(),
            )
        })
        .map_err(|e| format!("pod cgroup {}: {e}", dir.display()))
}

/// The CGI's service time: the shortest of 15 requests one after another
/// (after 3 to warm up), with nothing else on the CPU. The shortest, as
/// the CPU the request needs: on a shared machine the others include waits
/// for other work.
async fn service_time(addr: &str) -> Result<Duration, String> {
    let mut times = Vec::new();
    for i in 0..18 {
        let t = Instant::now();
        if !get(addr).await.unwrap_or(false) {
            return Err(format!("the online service at {addr} failed a request"));
        }
        if i >= 3 {
            times.push(t.elapsed());
        }
    }
    Ok(times.into_iter().min().expect("15 requests"))
}

async fn run(
    ctx: &Ctx,
    plan: &mut Plan,
    name: &'static str,
    agent: &Tidald,
) -> Result<Run, String> {
    let slo_ms = plan.slo.as_millis();
    let mut web_pod = ctx.pod_config("web");
    annotate(
        &mut web_pod,
        "online",
        format!(
            r#"{{"class":"online","latencyObjective":"{slo_ms}ms","probe":{{"httpGet":{{"port":{PORT},"path":"/cgi-bin/work"}},"timeoutSeconds":1}}}}"#
        ),
    );
    pod_weight(&web_pod, 500)?;
    let web_pod_id = ctx.try_run_pod(&web_pod).await?;
    let web = ctx.create(&web_pod_id, &web_pod, online(ctx, plan)).await?;
    ctx.start(&web).await?;
    let ip = ctx
        .pod_status(&web_pod_id)
        .await
        .network
        .map(|n| n.ip)
        .unwrap_or_default();
    let addr = format!("{ip}:{PORT}");
    // Ready: the service answers.
    let ready = Instant::now();
    while !get(&addr).await.unwrap_or(false) {
        if ready.elapsed() > Duration::from_secs(20) {
            return Err(format!("the online service at {addr} never answered"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some((low, high)) = plan.load.take() {
        let service = service_time(&addr).await?;
        let s = service.as_secs_f64();
        plan.service = Some(service);
        plan.low_rps = (low / s).round().max(1.0);
        plan.high_rps = (high / s).round().max(plan.low_rps + 1.0);
        println!(
            "service time {:.1} ms alone on CPU {}: {} then {} requests/s ({:.0}% then {:.0}% of that CPU), and the probe's {:.0}%",
            s * 1000.0,
            plan.cpu,
            plan.low_rps,
            plan.high_rps,
            plan.low_rps * s * 100.0,
            plan.high_rps * s * 100.0,
            s / plan.probe.as_secs_f64() * 100.0
        );
    }
    let mut batch_pod = ctx.pod_config("batch");
    annotate(
        &mut batch_pod,
        "offline",
        r#"{"class":"offline","minCPU":"100m"}"#.to_string(),
    );
    pod_weight(&batch_pod, 1000)?;
    let batch_pod_id = ctx.try_run_pod(&batch_pod).await?;
    let batch = ctx
        .create(&batch_pod_id, &batch_pod, offline(ctx, plan))
        .await?;
    ctx.start(&batch).await?;
    let batch_log = PathBuf::from(&batch_pod.log_directory).join("batch.log");
    let quota_dir = cpu_cgroup(&ctx.shared.cgroup_root, &batch)
        .ok_or_else(|| format!("no cpu cgroup for the offline container {batch}"))?;
    println!(
        "online service {addr} (pod {}), offline job {} (cgroup {}), both on CPU {}",
        &web_pod_id[..12],
        &batch[..12],
        quota_dir.display(),
        plan.cpu
    );
    // Settle: the engine's windows fill, the offline job runs.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let start = Instant::now();
    let since = |t: Instant| t.saturating_duration_since(start).as_secs_f64();
    let decisions_before = agent.log.lock().unwrap().len();
    // The sampler: the offline container's limit and work, every 250 ms.
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let samples = samples.clone();
        let end = start + plan.total();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let now = Instant::now();
                samples.lock().unwrap().push(Sample {
                    at: now.saturating_duration_since(start).as_secs_f64(),
                    cpu_millis: read_millis(&quota_dir),
                    work: read_work(&batch_log),
                });
                if now >= end {
                    break;
                }
            }
        })
    };
    // Without the engine, nobody probes: the same requests, sent here.
    let probes = (name == "off").then(|| {
        let addr = addr.clone();
        let every = plan.probe;
        let end = start + plan.total();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while Instant::now() < end {
                tick.tick().await;
                // One at a time, as tidald's prober.
                let _ = tokio::time::timeout(Duration::from_secs(1), get(&addr)).await;
            }
        })
    });
    // The open-loop load generator: requests at fixed times, each timed
    // from when it was due, none waiting for another.
    let requests = Arc::new(Mutex::new(Vec::new()));
    let mut inflight = Vec::new();
    let mut due = Duration::ZERO;
    let mut stepped = false;
    while due < plan.total() {
        let high = due >= plan.low;
        if high && !stepped {
            stepped = true;
            println!(
                "load step at {:.0}s: {} -> {} requests/s",
                plan.low.as_secs_f64(),
                plan.low_rps,
                plan.high_rps
            );
        }
        let at = start + due;
        tokio::time::sleep_until(at.into()).await;
        let addr = addr.clone();
        let requests = requests.clone();
        inflight.push(tokio::spawn(async move {
            let ok = tokio::time::timeout(TIMEOUT, get(&addr))
                .await
                .is_ok_and(|r| r.unwrap_or(false));
            let latency = if ok {
                at.elapsed().as_secs_f64()
            } else {
                TIMEOUT.as_secs_f64()
            };
            requests.lock().unwrap().push(Request {
                due: due.as_secs_f64(),
                latency,
                ok,
            });
        }));
        let rps = if high { plan.high_rps } else { plan.low_rps };
        due += Duration::from_secs_f64(1.0 / rps);
    }
    for t in inflight {
        let _ = t.await;
    }
    let _ = sampler.await;
    if let Some(p) = probes {
        p.abort();
    }
    let decisions = agent.log.lock().unwrap()[decisions_before..]
        .iter()
        .map(|(t, l)| (since(*t), l.clone()))
        .collect();
    let history = Command::new(shim_dir().join("tidalctl"))
        .arg("--state-dir")
        .arg(&ctx.shared.tidal_state)
        .args(["history", &batch])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut requests = std::mem::take(&mut *requests.lock().unwrap());
    requests.sort_by(|a, b| a.due.total_cmp(&b.due));
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    Ok(Run {
        name,
        requests,
        samples,
        decisions,
        history,
    })
}

/// The `q` quantile of `v` (nearest rank); None when empty.
fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// One second of a run.
struct Second {
    t: u64,
    p95: Option<f64>,
    requests: usize,
    failed: usize,
    cpu_millis: Option<u64>,
    /// Work units done in this second.
    work: u64,
    decisions: Vec<String>,
}

fn seconds(plan: &Plan, r: &Run) -> Vec<Second> {
    let n = plan.total().as_secs();
    let sample_at = |t: f64| r.samples.iter().rev().find(|s| s.at <= t + 0.01).copied();
    (0..n)
        .map(|t| {
            let (a, b) = (t as f64, t as f64 + 1.0);
            let mut lat: Vec<f64> = r
                .requests
                .iter()
                .filter(|q| q.due >= a && q.due < b)
                .map(|q| q.latency)
                .collect();
            let requests = lat.len();
            let failed = r
                .requests
                .iter()
                .filter(|q| q.due >= a && q.due < b && !q.ok)
                .count();
            let end = sample_at(b);
            let work = match (sample_at(a), end) {
                (Some(x), Some(y)) => y.work.saturating_sub(x.work),
                _ => 0,
            };
            Second {
                t,
                p95: quantile(&mut lat, 0.95),
                requests,
                failed,
                cpu_millis: end.and_then(|s| s.cpu_millis),
                work,
                decisions: r
                    .decisions
                    .iter()
                    .filter(|(at, _)| *at >= a && *at < b)
                    .map(|(_, l)| decision_text(l))
                    .collect(),
            }
        })
        .collect()
}

/// A decision's log line from `policy: ` on.
/// Container ids shortened to 12 characters, as tidalctl shows them.
fn decision_text(line: &str) -> String {
    let d = line.split_once("policy: ").map_or(line, |(_, d)| d);
    let mut out = String::new();
    let mut rest = d;
    while let Some(i) = rest.find("k8s.io/") {
        let (head, tail) = rest.split_at(i + "k8s.io/".len());
        out.push_str(head);
        let id_len = tail
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(tail.len());
        out.push_str(&tail[..id_len.min(12)]);
        rest = &tail[id_len..];
    }
    out.push_str(rest);
    out
}

/// Whether a log line is an applied change (not a verdict that kept one).
fn is_action(line: &str) -> bool {
    line.contains("policy: ") && !line.contains("rules")
}

fn report(plan: &Plan, runs: &[Run]) -> std::io::Result<()> {
    std::fs::create_dir_all(&plan.out)?;
    let slo = plan.slo.as_secs_f64();
    let step = plan.low.as_secs_f64();
    let mut figures = format!(
        "load: {} requests/s, then {} requests/s from {:.0}s, and a probe every {:?}{}\n",
        plan.low_rps,
        plan.high_rps,
        step,
        plan.probe,
        plan.service
            .map(|s| {
                let s = s.as_secs_f64();
                format!(
                    " (service time {:.1} ms alone on CPU {}: {:.0}% then {:.0}% of it, the probe {:.0}%)",
                    s * 1000.0,
                    plan.cpu,
                    plan.low_rps * s * 100.0,
                    plan.high_rps * s * 100.0,
                    s / plan.probe.as_secs_f64() * 100.0
                )
            })
            .unwrap_or_default()
    );
    let mut work_during_step = Vec::new();
    for r in runs {
        let secs = seconds(plan, r);
        let mut csv = String::from(
            "run,second,p95_ms,requests,failed,offline_cpu_millis,offline_work,decisions\n",
        );
        for s in &secs {
            let _ = writeln!(
                csv,
                "{},{},{},{},{},{},{},\"{}\"",
                r.name,
                s.t,
                s.p95
                    .map(|v| format!("{:.1}", v * 1000.0))
                    .unwrap_or_default(),
                s.requests,
                s.failed,
                s.cpu_millis.map(|m| m.to_string()).unwrap_or_default(),
                s.work,
                s.decisions.join(" | ").replace('"', "'")
            );
        }
        std::fs::write(plan.out.join(format!("experiment-{}.csv", r.name)), csv)?;
        let mut log = String::new();
        for (t, l) in &r.decisions {
            let _ = writeln!(log, "{t:7.2}s {}", decision_text(l));
        }
        let _ = writeln!(
            log,
            "\n$ tidalctl history <offline container>\n{}",
            r.history
        );
        std::fs::write(
            plan.out
                .join(format!("experiment-{}-decisions.txt", r.name)),
            log,
        )?;

        let during: Vec<&Second> = secs.iter().filter(|s| s.t as f64 >= step).collect();
        let over = during
            .iter()
            .filter(|s| s.p95.is_some_and(|v| v > slo))
            .count();
        let work: u64 = during.iter().map(|s| s.work).sum();
        work_during_step.push(work);
        let low_p95 = quantile(
            &mut r
                .requests
                .iter()
                .filter(|q| q.due < step)
                .map(|q| q.latency)
                .collect::<Vec<_>>(),
            0.95,
        );
        let step_p95 = quantile(
            &mut r
                .requests
                .iter()
                .filter(|q| q.due >= step)
                .map(|q| q.latency)
                .collect::<Vec<_>>(),
            0.95,
        );
        let _ = writeln!(
            figures,
            "engine {}: p95 before the step {:.0} ms, during the step {:.0} ms; {over} of {} seconds of the step over the {:.0} ms objective; offline work during the step {work} units",
            r.name,
            low_p95.unwrap_or(0.0) * 1000.0,
            step_p95.unwrap_or(0.0) * 1000.0,
            during.len(),
            slo * 1000.0
        );
        let first_over = during.iter().find(|s| s.p95.is_some_and(|v| v > slo));
        if let Some(f) = first_over {
            let _ = writeln!(
                figures,
                "  first second over the objective: {}s after the step",
                f.t as f64 - step
            );
        }
        let before = r
            .decisions
            .iter()
            .filter(|(t, l)| *t < step && is_action(l))
            .count();
        if before > 0 {
            let _ = writeln!(figures, "  {before} actions before the step");
        }
        let first_action = r.decisions.iter().find(|(t, l)| *t >= step && is_action(l));
        match first_action {
            Some((t, l)) => {
                let _ = writeln!(
                    figures,
                    "  first action {:.2}s after the step: {}",
                    t - step,
                    decision_text(l)
                );
            }
            None => {
                let _ = writeln!(figures, "  no action during the step");
            }
        }
        // Back under the objective and staying there: the first second
        // from which every later second's p95 is under it.
        let last_over = during.iter().rev().find(|s| s.p95.is_some_and(|v| v > slo));
        match last_over {
            None => {
                let _ = writeln!(figures, "  p95 never over the objective during the step");
            }
            Some(s) if s.t + 1 >= plan.total().as_secs() => {
                let _ = writeln!(figures, "  p95 still over the objective at the end");
            }
            Some(s) => {
                let _ = writeln!(
                    figures,
                    "  p95 under the objective for good from {}s after the step",
                    s.t as f64 + 1.0 - step
                );
            }
        }
    }
    if let [off, on] = work_during_step[..] {
        if off > 0 {
            let _ = writeln!(
                figures,
                "offline work during the step, engine on as a share of engine off: {:.0}%",
                on as f64 * 100.0 / off as f64
            );
        }
    }
    print!("\n== figures\n{figures}");
    std::fs::write(plan.out.join("experiment-figures.txt"), figures)
}

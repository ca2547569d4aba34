//! CRI latency and shim memory, tidal against runc on one containerd, side by
//! side in one run (the machine is shared and noisy: compare ratios, not
//! absolute times).
//!
//!   cargo bench -p tidal-integration --bench cri [-- PODS [host-network]]
//!
//! With `host-network`, pods use the node's network: no CNI runs, so the
//! figures are the runtimes' own share of each call.
//!
//! Latencies: PODS pods per handler (default 40), interleaved handler by
//! handler, each through RunPodSandbox, CreateContainer, StartContainer,
//! StopContainer, StopPodSandbox, RemovePodSandbox. Memory: the shims' summed
//! RSS and PSS per pod with 1, 10 and 50 pods of one container each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidal_integration::cri::RuntimeServiceClient;
use tidal_integration::env::CriEnv;
use tidal_integration::suite::{Ctx, Shared, HANDLERS};
use tonic::transport::Channel;

const STEPS: [&str; 6] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];

fn main() {
    let pods: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(40);
    let host_network = std::env::args().any(|a| a == "host-network");
    let env = Arc::new(CriEnv::start("bench"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(tidal_integration::cri::connect(&env.socket()))
        .expect("connect to CRI")
        .0;
    let cgroup_root = format!("tidal-bench-{}", std::process::id());
    let shared = Arc::new(Shared::new(&env, &cgroup_root));
    let ctx = |handler: &'static str| Ctx {
        handler,
        case: "bench",
        rt: client.clone(),
        shared: shared.clone(),
        env: env.clone(),
    };
    let mut samples: Vec<Vec<Vec<Duration>>> = vec![vec![Vec::new(); STEPS.len()]; 2];
    rt.block_on(async {
        // One warm-up pod each: image unpack caches, first shim exec.
        for h in HANDLERS {
            lifecycle(&ctx(h), "warm", host_network).await;
        }
        for i in 0..pods {
            let order: Vec<usize> = if i % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
            for k in order {
                let times = lifecycle(&ctx(HANDLERS[k]), &format!("p{i}"), host_network).await;
                for (s, t) in times.into_iter().enumerate() {
                    samples[k][s].push(t);
                }
            }
        }
    });
    println!(
        "\nCRI latency, {pods} pods per handler, interleaved, {} (ms)",
        if host_network {
            "host network (no CNI)"
        } else {
            "pod network (CNI bridge)"
        }
    );
    println!(
        "{:<18} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "call", "tidal p50", "tidal p95", "runc p50", "runc p95", "p50 ratio", "p95 ratio"
    );
    for (s, name) in STEPS.iter().enumerate() {
        let [t50, t95] = percentiles(&mut samples[0][s]);
        let [r50, r95] = percentiles(&mut samples[1][s]);
        println!(
            "{name:<18} {t50:>10.2} {t95:>10.2} {r50:>10.2} {r95:>10.2} {:>11.2}x {:>11.2}x",
            t50 / r50,
            t95 / r95
        );
    }
    if host_network {
        return finish(client, rt, env, &cgroup_root);
    }
    println!("\nshim memory per pod (one container each), MiB");
    println!(
        "{:<6} {:>12} {:>12} {:>12} {:>12}",
        "pods", "tidal RSS", "tidal PSS", "runc RSS", "runc PSS"
    );
    for n in [1usize, 10, 50] {
        let mut row = Vec::new();
        for h in HANDLERS {
            let c = ctx(h);
            let (rss, pss) = rt.block_on(memory(&c, n, &env.dir.to_string_lossy()));
            row.push((rss, pss));
        }
        println!(
            "{n:<6} {:>12.2} {:>12.2} {:>12.2} {:>12.2}",
            row[0].0, row[0].1, row[1].0, row[1].1
        );
    }
    finish(client, rt, env, &cgroup_root);
}

fn finish(
    client: RuntimeServiceClient<Channel>,
    rt: tokio::runtime::Runtime,
    env: Arc<CriEnv>,
    cgroup_root: &str,
) {
    drop(client);
    drop(rt);
    drop(
        Arc::try_unwrap(env)
            .ok()
            .expect("no one else holds the environment"),
    );
    for d in tidal_integration::suite::cgroups_below(cgroup_root) {
        let _ = std::fs::remove_dir(d);
    }
}

async fn lifecycle(ctx: &Ctx, what: &str, host_network: bool) -> Vec<Duration> {
    let mut times = Vec::with_capacity(STEPS.len());
    let mut config = ctx.pod_config(what);
    let mut container = ctx.container("app", &["sleep", "3600"]);
    if host_network {
        config.hostname.clear();
        for ns in [
            config
                .linux
                .as_mut()
                .and_then(|l| l.security_context.as_mut())
                .and_then(|s| s.namespace_options.as_mut()),
            container
                .linux
                .as_mut()
                .and_then(|l| l.security_context.as_mut())
                .and_then(|s| s.namespace_options.as_mut()),
        ]
        .into_iter()
        .flatten()
        {
            ns.network = tidal_integration::cri::v1::NamespaceMode::Node as i32;
        }
    }
    let t = Instant::now();
    let pod = ctx.run_pod(&config).await;
    times.push(t.elapsed());
    let t = Instant::now();
    let id = ctx.create(&pod, &config, container).await.unwrap();
    times.push(t.elapsed());
    let t = Instant::now();
    ctx.start(&id).await.unwrap();
    times.push(t.elapsed());
    let t = Instant::now();
    ctx.stop(&id, 0).await.unwrap();
    times.push(t.elapsed());
    let t = Instant::now();
    ctx.stop_pod(&pod).await.unwrap();
    times.push(t.elapsed());
    let t = Instant::now();
    ctx.remove_pod(&pod).await.unwrap();
    times.push(t.elapsed());
    times
}

fn percentiles(v: &mut [Duration]) -> [f64; 2] {
    v.sort();
    let at = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i].as_secs_f64() * 1000.0
    };
    [at(0.5), at(0.95)]
}

/// Runs `n` pods of one `sleep` container under `ctx.handler`, sums their
/// shims' RSS and PSS, removes the pods; MiB per pod.
async fn memory(ctx: &Ctx, n: usize, dir: &str) -> (f64, f64) {
    let mut pods = Vec::new();
    for i in 0..n {
        let config = ctx.pod_config(&format!("mem{n}-{i}"));
        let pod = ctx.run_pod(&config).await;
        ctx.run(&pod, &config, ctx.container("app", &["sleep", "3600"]))
            .await;
        pods.push(pod);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = std::process::Command::new("pgrep")
        .args([
            "-f",
            &format!("containerd-shim-{}-v2 .*-address {dir}/", ctx.handler),
        ])
        .output()
        .unwrap();
    let (mut rss, mut pss) = (0u64, 0u64);
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        for line in rollup.lines() {
            let kib = |l: &str| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("Rss:") {
                rss += kib(line);
            } else if line.starts_with("Pss:") {
                pss += kib(line);
            }
        }
    }
    for pod in pods {
        ctx.stop_pod(&pod).await.unwrap();
        ctx.remove_pod(&pod).await.unwrap();
    }
    let per = |kib: u64| kib as f64 / 1024.0 / n as f64;
    (per(rss), per(pss))
}

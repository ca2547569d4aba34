//! The policy engine's overhead (issue 12): tidald's CPU time and memory
//! while it watches many running tidal containers, with the engine off and
//! at the intervals given, on one private containerd (started by hack/bench).
//!
//! The containers: POLICY_PODS pods (one shim each, through
//! `io.kubernetes.cri.sandbox-id`) of POLICY_CONTAINERS in all. In each pod
//! two are online services (busybox httpd in a network namespace of their
//! own) whose `qos` trait declares a TCP probe, so the engine probes them
//! every tick; the rest are offline (`sleep`, with a CPU limit the engine may
//! take from). Nothing suffers, so the engine's cost is watching: listing
//! the containers, reading their cgroups and the node, probing, profiling and
//! deciding that nothing is to be done.
//!
//! Per row: tidald's user+system CPU time over POLICY_SECONDS (after a
//! warm-up of two ticks or 5 s) as a share of one core, its RSS at the end
//! and its peak RSS, and from its /metrics the mean duration of the
//! engine's collect step and of a whole tick.
//!
//! Usage: cargo bench --bench policy -- ADDRESS NAMESPACE
//! Environment: POLICY_CONTAINERS (default 100), POLICY_PODS (default 10),
//! POLICY_SECONDS (default 60), POLICY_INTERVALS (default `off,1s,250ms`).

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{remove, Ctx, Tidald};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn env_count(name: &str, default: usize) -> usize {
    env_or(name, &default.to_string())
        .parse()
        .unwrap_or_else(|_| panic!("{name} must be a number"))
}

/// Creates the containers; their ids.
fn containers(ctx: &Ctx, pods: usize, total: usize) -> Vec<String> {
    const PROBE: &str = r#"trait.tidal.dev/qos={"class":"online","latencyObjective":"250ms","probe":{"tcpSocket":{"port":8080},"timeoutSeconds":1}}"#;
    let mut ids = Vec::new();
    for n in 0..total {
        let pod = n % pods;
        let online = n / pods < 2;
        let id = format!("pe-{pod}-{}", n / pods);
        let sandbox = format!("pe-{pod}");
        if online {
            ctx.run_in_pod(
                &sandbox,
                &id,
                &[
                    "--annotation",
                    "tidal.dev/qos=online",
                    "--annotation",
                    PROBE,
                ],
                &["httpd", "-f", "-p", "8080", "-h", "/"],
            );
        } else {
            ctx.run_in_pod(
                &sandbox,
                &id,
                &[
                    "--annotation",
                    "tidal.dev/qos=offline",
                    "--cpu-quota",
                    "50000",
                    "--cpu-period",
                    "100000",
                ],
                &["sleep", "100000"],
            );
        }
        ids.push(id);
    }
    ids
}

/// user + system CPU time of process `pid` so far.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("tidald's stat");
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th fields of the line.
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
fn status_kib(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("tidald's status")
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no {field} in tidald's status"))
}

/// A port nobody listens on now, for tidald's /metrics.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The mean of a histogram in tidald's /metrics, in milliseconds.
fn histogram_mean_ms(port: u16, name: &str) -> Option<f64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let value = |suffix: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_{suffix} ")))
            .and_then(|v| v.trim().parse().ok())
    };
    let (sum, count) = (value("sum")?, value("count")?);
    (count > 0.0).then(|| sum / count * 1e3)
}

struct Row {
    engine: String,
    cpu_share: f64,
    rss_kib: u64,
    peak_kib: u64,
    collect_ms: Option<f64>,
    tick_ms: Option<f64>,
}

async fn measure(ctx: &Ctx, interval: &str, seconds: u64) -> Row {
    let policy_file = std::path::Path::new(&ctx.address)
        .parent()
        .unwrap()
        .join("bench-policy.yaml");
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let mut args = vec!["--metrics-addr", &metrics, "--policy"];
    let file = policy_file.to_string_lossy().into_owned();
    if interval == "off" {
        args.push("off");
    } else {
        std::fs::write(
            &policy_file,
            format!("interval: {interval}\nmode: enforce\n"),
        )
        .unwrap();
        args.push(&file);
    }
    let agent = Tidald::start(ctx, &args);
    let pid = agent.pid();
    let warm_up = humantime_secs(interval).map_or(5.0, |t| (2.0 * t).max(5.0));
    tokio::time::sleep(Duration::from_secs_f64(warm_up)).await;
    let before = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let used = cpu_time(pid) - before;
    let row = Row {
        engine: if interval == "off" {
            "off".into()
        } else {
            format!("on, every {interval}")
        },
        cpu_share: used.as_secs_f64() / seconds as f64,
        rss_kib: status_kib(pid, "VmRSS"),
        peak_kib: status_kib(pid, "VmHWM"),
        collect_ms: histogram_mean_ms(port, "tidal_policy_collect_seconds"),
        tick_ms: histogram_mean_ms(port, "tidal_policy_tick_seconds"),
    };
    agent.stop().await;
    row
}

/// "250ms" or "1s" in seconds.
fn humantime_secs(s: &str) -> Option<f64> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse::<f64>().ok().map(|v| v / 1e3);
    }
    s.strip_suffix('s')?.parse().ok()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let ctx = Ctx::from_args(&args).await;
    let total = env_count("POLICY_CONTAINERS", 100);
    let pods = env_count("POLICY_PODS", 10).clamp(1, total.max(1));
    let seconds = env_count("POLICY_SECONDS", 60) as u64;
    let intervals = env_or("POLICY_INTERVALS", "off,1s,250ms");

    let ids = containers(&ctx, pods, total);
    let online = (0..total).filter(|n| n / pods < 2).count();
    println!(
        "## Policy engine overhead: tidald with {total} running containers in {pods} pods \
         ({online} online with a TCP probe, {} offline), {seconds} s per row\n",
        total - online
    );
    println!("| engine | tidald CPU, share of one core | RSS MiB | peak RSS MiB | collect ms / tick | tick ms |");
    println!("|---|---|---|---|---|---|");
    for interval in intervals.split(',').map(str::trim) {
        let r = measure(&ctx, interval, seconds).await;
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        println!(
            "| {} | {:.2}% | {:.1} | {:.1} | {} | {} |",
            r.engine,
            r.cpu_share * 100.0,
            r.rss_kib as f64 / 1024.0,
            r.peak_kib as f64 / 1024.0,
            ms(r.collect_ms),
            ms(r.tick_ms)
        );
    }
    println!();
    for id in &ids {
        remove(&ctx, id);
    }
}

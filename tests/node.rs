//! tidalctl and tidald against real containers under a private containerd.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn tidalctl(env: &Env, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tidalctl"))
        .arg("--state-dir")
        .arg(env.dir.join("tidal"))
        .args(args)
        .output()
        .unwrap()
}

fn cpu_ns(env: &Env, id: &str) -> u64 {
    let out = tidalctl(env, &["ps", "-o", "json"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .and_then(|c| c["usage"]["cpu_ns"].as_u64())
        .unwrap_or_else(|| panic!("{id} not listed: {all}"))
}

#[test]
fn tidalctl_resizes_a_running_container_and_its_cpu_use_follows() {
    let env = Env::start("ctl");
    let pid = env.run_detached(TIDAL, "burner", &[], &["sh", "-c", "while :; do :; done"]);

    let out = tidalctl(&env, &["ps"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("burner") && table.contains(&pid.to_string()),
        "{table}"
    );

    let out = tidalctl(
        &env,
        &["resize", "burner", "--cpu", "200m", "--memory", "64Mi"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cg = tidal::cgroups::Cgroup::of_pid(pid).unwrap();
    let limits = tidal::node::read_limits(&cg);
    assert_eq!(limits.cpu_millis(), Some(200));
    assert_eq!(limits.memory_bytes, Some(64 << 20));
    assert_eq!(
        env.task_pid("burner"),
        Some(pid),
        "the container was not restarted"
    );

    // Within a second the measured CPU use follows the new quota.
    std::thread::sleep(Duration::from_millis(300));
    let a = cpu_ns(&env, "burner");
    std::thread::sleep(Duration::from_secs(1));
    let used = (cpu_ns(&env, "burner") - a) as f64 / 1e9;
    assert!(
        used < 0.35,
        "used {used:.2} CPU-seconds in 1s with a 200m limit"
    );
    assert!(
        used > 0.05,
        "used {used:.2} CPU-seconds: the burner is not running"
    );

    // Nonsense is refused, naming the value and showing the current limits.
    let out = tidalctl(&env, &["resize", "burner", "--cpu", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"lots\""));
    let out = tidalctl(&env, &["resize", "burner", "--memory", "4096"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("current limits: cpu=200m memory=64Mi"),
        "{err}"
    );
    let out = tidalctl(&env, &["resize", "nosuch", "--cpu", "1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tidal container \"nosuch\""));
    env.remove("burner");
}

#[test]
fn tidald_exports_metrics_of_running_containers() {
    let env = Env::start("agent");
    env.run_detached(
        TIDAL,
        "web",
        &["--memory-limit", "33554432"],
        &["sleep", "1000"],
    );
    let port = 20000 + (std::process::id() % 20000) as u16;
    let addr = format!("127.0.0.1:{port}");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_tidald"))
        .arg("--state-dir")
        .arg(env.dir.join("tidal"))
        .args(["--metrics-addr", &addr])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut body = String::new();
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            use std::io::{Read, Write};
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s.read_to_string(&mut body).unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    assert!(
        agent.wait().unwrap().success(),
        "tidald did not stop cleanly on SIGTERM"
    );
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains(
            "tidal_container_memory_limit_bytes{namespace=\"tidal\",container=\"web\"} 33554432"
        ),
        "{body}"
    );
    assert!(body.contains("tidal_containers 1"), "{body}");
    env.remove("web");
}

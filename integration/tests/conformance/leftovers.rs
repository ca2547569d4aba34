//! After every case: nothing of this environment is left behind.

use std::process::Command;
use std::time::{Duration, Instant};

use tidal_integration::env::CriEnv;
use tidal_integration::suite;

/// With every pod removed: no shim, container process, cgroup, mount,
/// socket, veth or port-mapping rule of this environment is left.
pub(crate) fn nothing_left(env: &CriEnv) -> Result<(), String> {
    let dir = env.dir.to_string_lossy().into_owned();
    let mut problems = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        problems.clear();
        let shims = Command::new("pgrep")
            .args(["-f", &format!("containerd-shim-.* -address {dir}/")])
            .output()
            .unwrap();
        if !shims.stdout.is_empty() {
            problems.push(format!(
                "shims still running: {}",
                String::from_utf8_lossy(&shims.stdout).trim()
            ));
        }
        let root = format!("tidal-conformance-{}", std::process::id());
        for cg in suite::cgroups_below(&root) {
            let depth = cg.components().count();
            let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
            if !procs.trim().is_empty() {
                problems.push(format!("processes in {}: {}", cg.display(), procs.trim()));
            }
            // /sys/fs/cgroup/<ctl>/<root>/<pod>/<container>: pods' own
            // parents are kubelet's to remove, containers' are the runtime's.
            if depth > 7 {
                problems.push(format!("cgroup left: {}", cg.display()));
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for m in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
            if m.starts_with(&format!("{dir}/")) && !m.contains("/vol-") {
                problems.push(format!("mount left: {m}"));
            }
        }
        let socks = env.tidal_state().join("s");
        if let Ok(rd) = std::fs::read_dir(&socks) {
            for e in rd.flatten() {
                problems.push(format!("socket left: {}", e.path().display()));
            }
        }
        let br = env.var("TIDAL_BRIDGE");
        let veths = Command::new("ip")
            .args(["-o", "link", "show", "master", br])
            .output()
            .unwrap();
        if !veths.stdout.is_empty() {
            problems.push(format!(
                "veths left on {br}: {}",
                String::from_utf8_lossy(&veths.stdout).trim()
            ));
        }
        let nat = Command::new("iptables")
            .args(["-t", "nat", "-S"])
            .output()
            .unwrap();
        for rule in String::from_utf8_lossy(&nat.stdout)
            .lines()
            .filter(|l| l.contains("tidal-test"))
        {
            problems.push(format!("port-mapping rule left: {rule}"));
        }
        if problems.is_empty() || Instant::now() > end {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n    "))
    }
}

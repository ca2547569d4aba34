//! The systemd cgroup driver (kubelet's `cgroupDriver: systemd`, containerd's
//! `SystemdCgroup = true`): containerd's CRI plugin then writes cgroupsPath
//! as `slice:prefix:name`, and the container's cgroup is a transient scope
//! systemd makes in the pod's slice. Where systemd does not run (this
//! project's machines) such a container is refused with an error that says
//! so, and nothing is made. Where it runs (hack/vm's systemd guest, cgroup
//! v2), a tidal container lands in its scope beside a runc one, resizes
//! through kubelet's path and tidald's and keeps them across `systemctl
//! daemon-reload`, reports its stats, pauses, and leaves neither unit nor
//! cgroup behind. On cgroup v1 (`hack/vm systemd-v1`), where tidal starts
//! the scope itself, the same in every v1 hierarchy, and the values the
//! container was created with survive systemd taking the scope over.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

#[test]
fn the_systemd_driver_is_refused_clearly_where_systemd_does_not_run() {
    require_root();
    if systemd_runs() {
        eprintln!("systemd runs on this node: tests/systemd.rs's other tests cover it");
        return;
    }
    let env = Env::start("nosystemd");
    let id = "sd-refused";
    let path = format!("tidaltest-pod1.slice:cri-containerd:{id}");
    let out = env.ctr(&[
        "run",
        "-d",
        "--runtime",
        TIDAL,
        "--cgroup",
        &path,
        IMAGE,
        id,
        "sleep",
        "100",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "created without systemd: {err}");
    assert!(
        err.contains("systemd is not running")
            && err.contains(&path)
            && err.contains("cgroupDriver"),
        "the refusal names what is missing and what to change: {err}"
    );
    let _ = env.ctr(&["container", "rm", id]);
    env.assert_no_leftovers(id);
    // Nothing was made under a name taken from the path, in any hierarchy.
    for base in controller_roots() {
        for name in ["tidaltest.slice", "tidaltest-pod1.slice", path.as_str()] {
            assert!(
                !base.join(name).exists(),
                "{} left",
                base.join(name).display()
            );
        }
    }
}

fn controller_roots() -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(d) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(d.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    roots
}

const SYSTEMD_ONLY: &str = "needs systemd as init on cgroup v2: hack/vm systemd runs it";

fn systemctl(args: &[&str]) -> (bool, String) {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .expect("systemctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

fn property(unit: &str, name: &str) -> String {
    systemctl(&["show", "--value", "-p", name, unit]).1
}

fn cgroup_of(pid: i32) -> PathBuf {
    let line = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = line.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    PathBuf::from("/sys/fs/cgroup").join(path.trim_start_matches('/'))
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs systemd as init on cgroup v2: hack/vm systemd runs it"]
fn a_container_gets_a_scope_in_its_pod_slice_and_keeps_its_resize_through_a_reload() {
    require_root();
    assert!(systemd_runs() && unified(), "{SYSTEMD_ONLY}");
    let env = Env::start("systemd");
    let slice = "tidaltest-pod1.slice";
    let (id, unit) = ("sd1", "cri-containerd-sd1.scope");
    let pid = env.run_detached(
        TIDAL,
        id,
        &["--cgroup", &format!("{slice}:cri-containerd:{id}")],
        &["sleep", "1000"],
    );
    let dir = cgroup_of(pid);
    assert_eq!(
        dir,
        Path::new("/sys/fs/cgroup/tidaltest.slice/tidaltest-pod1.slice/cri-containerd-sd1.scope"),
        "the container's cgroup is its scope in the pod's slice"
    );
    assert_eq!(systemctl(&["is-active", unit]).1, "active");
    // runc, through the same driver, puts its container beside it.
    let runc_pid = env.run_detached(
        RUNC,
        "sd1-runc",
        &[
            "--runc-systemd-cgroup",
            "--cgroup",
            &format!("{slice}:cri-containerd:sd1-runc"),
        ],
        &["sleep", "1000"],
    );
    assert_eq!(
        cgroup_of(runc_pid).parent(),
        dir.parent(),
        "tidal and runc agree"
    );

    // kubelet's UpdateContainerResources: the files change, and the unit
    // learns the values too.
    containerd_update(
        &env,
        id,
        r#"{"cpu":{"quota":20000,"period":100000,"shares":512},"memory":{"limit":67108864}}"#,
    );
    assert_eq!(read(&dir, "cpu.max"), "20000 100000");
    assert_eq!(read(&dir, "memory.max"), "67108864");
    assert_eq!(property(unit, "CPUQuotaPerSecUSec"), "200ms");
    assert_eq!(property(unit, "MemoryMax"), "67108864");
    let weight = read(&dir, "cpu.weight");
    assert_eq!(property(unit, "CPUWeight"), weight);

    // systemd writes its unit's values again on a reload: the resize stays.
    assert!(systemctl(&["daemon-reload"]).0);
    assert_eq!(
        read(&dir, "cpu.max"),
        "20000 100000",
        "a reload undid the resize"
    );
    assert_eq!(
        read(&dir, "memory.max"),
        "67108864",
        "a reload undid the resize"
    );
    assert_eq!(read(&dir, "cpu.weight"), weight);

    // What this guards against: a write systemd was not told of is undone
    // by the next reload.
    std::fs::write(dir.join("cpu.max"), "30000 100000").unwrap();
    assert!(systemctl(&["daemon-reload"]).0);
    assert!(
        eventually(Duration::from_secs(5), || read(&dir, "cpu.max")
            == "20000 100000"),
        "a reload kept a value systemd was not told of: this test proves nothing here ({})",
        read(&dir, "cpu.max")
    );

    // containerd's Stats read the scope's cgroup.
    let metrics = env.ctr_ok(&["task", "metrics", id]);
    let value = |key: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {metrics}"))
    };
    assert_eq!(value("memory.usage_limit "), 67108864, "{metrics}");
    assert_eq!(value("pids.current"), 1, "{metrics}");

    // tidald lists it with its live limits, and its resizes take the same
    // path: files first, then the unit.
    let _agent = env.start_agent();
    let ps = tidalctl_json(&env, &["ps", "-o", "json"]);
    let listed = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in tidalctl ps: {ps}"));
    assert_eq!(listed["live"]["cpu_millis"], 200, "{listed}");
    tidalctl_ok(&env, &["resize", id, "--cpu", "300m"]);
    assert_eq!(read(&dir, "cpu.max"), "30000 100000");
    assert_eq!(property(unit, "CPUQuotaPerSecUSec"), "300ms");

    // An exec joins the container's scope: it sees the cgroup its
    // container's init (pid 1 in the container) is in.
    let out = env.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "in-scope",
        id,
        "sh",
        "-c",
        "cat /proc/1/cgroup /proc/self/cgroup",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.len() == 2 && lines[0] == lines[1],
        "the exec is in another cgroup than the container: {out}"
    );

    // Pause and resume through the v2 freezer of the scope.
    env.ctr_ok(&["task", "pause", id]);
    assert_eq!(read(&dir, "cgroup.freeze"), "1");
    env.ctr_ok(&["task", "resume", id]);
    assert_eq!(read(&dir, "cgroup.freeze"), "0");

    // Removed, it leaves neither its unit nor its cgroup.
    env.remove(id);
    assert!(
        eventually(Duration::from_secs(10), || !systemctl(&["is-active", unit])
            .0
            && !dir.exists()),
        "{unit} is {} and its cgroup {}",
        systemctl(&["is-active", unit]).1,
        if dir.exists() { "is left" } else { "is gone" }
    );
    env.remove("sd1-runc");
    env.assert_no_leftovers(id);
}

/// The directory of `pid`'s cgroup in v1 hierarchy `controller` (Debian
/// links `cpu` to `cpu,cpuacct`), and its path below the hierarchy's root.
fn v1_cgroup(pid: i32, controller: &str) -> (PathBuf, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = text
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("no {controller} line in {text}"));
    let dir = Path::new("/sys/fs/cgroup")
        .join(controller.trim_start_matches("name="))
        .join(path.trim_start_matches('/'));
    (dir, path)
}

#[test]
#[ignore = "needs systemd as init on cgroup v1: hack/vm systemd-v1 runs it"]
fn on_cgroup_v1_tidal_starts_the_scope_itself_and_its_values_survive_systemd() {
    require_root();
    assert!(
        systemd_runs() && !unified(),
        "needs systemd as init on cgroup v1: hack/vm systemd-v1 runs it"
    );
    let env = Env::start("systemdv1");
    let slice = "tidaltest-pod1.slice";
    let (id, unit) = ("sdv1", "cri-containerd-sdv1.scope");
    let want = "/tidaltest.slice/tidaltest-pod1.slice/cri-containerd-sdv1.scope";
    let pid = env.run_detached(
        TIDAL,
        id,
        &[
            "--cgroup",
            &format!("{slice}:cri-containerd:{id}"),
            "--cpu-quota",
            "50000",
            "--cpu-period",
            "100000",
            "--memory-limit",
            "100663296",
        ],
        &["sleep", "1000"],
    );
    // In every hierarchy, systemd's own included, the container is in its
    // scope in the pod's slice; systemd knows it as an active unit. (Taking
    // the scope over, systemd moves it to the slice in the hierarchies it
    // does not manage, such as devices, which holds the container's device
    // rules: tidal moves it back.)
    let everywhere = |pid: i32, when: &str| {
        for controller in [
            "cpu",
            "memory",
            "pids",
            "devices",
            "blkio",
            "freezer",
            "name=systemd",
        ] {
            assert_eq!(v1_cgroup(pid, controller).1, want, "{controller}, {when}");
        }
    };
    everywhere(pid, "once created");
    let (devices, _) = v1_cgroup(pid, "devices");
    let rules = read(&devices, "devices.list");
    assert!(
        !rules.contains("a *:*"),
        "the container may open every device: {rules}"
    );
    assert_eq!(systemctl(&["is-active", unit]).1, "active");
    let (cpu, _) = v1_cgroup(pid, "cpu");
    let (memory, _) = v1_cgroup(pid, "memory");
    // Starting the unit made systemd write its values: the spec's stay.
    assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
    assert_eq!(read(&memory, "memory.limit_in_bytes"), "100663296");
    assert_eq!(property(unit, "MemoryLimit"), "100663296");
    // runc, through the same driver, puts its container beside it.
    let runc_pid = env.run_detached(
        RUNC,
        "sdv1-runc",
        &[
            "--runc-systemd-cgroup",
            "--cgroup",
            &format!("{slice}:cri-containerd:sdv1-runc"),
        ],
        &["sleep", "1000"],
    );
    assert_eq!(
        v1_cgroup(runc_pid, "memory").0.parent(),
        memory.parent(),
        "tidal and runc agree"
    );

    // kubelet's UpdateContainerResources: the files change, the unit
    // learns the values, and a reload keeps them.
    containerd_update(
        &env,
        id,
        r#"{"cpu":{"quota":20000,"period":100000,"shares":512},"memory":{"limit":67108864}}"#,
    );
    assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "20000");
    assert_eq!(read(&cpu, "cpu.shares"), "512");
    assert_eq!(read(&memory, "memory.limit_in_bytes"), "67108864");
    assert_eq!(property(unit, "CPUQuotaPerSecUSec"), "200ms");
    assert_eq!(property(unit, "CPUShares"), "512");
    assert_eq!(property(unit, "MemoryLimit"), "67108864");
    assert!(systemctl(&["daemon-reload"]).0);
    assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "20000", "a reload undid it");
    assert_eq!(read(&cpu, "cpu.shares"), "512", "a reload undid it");
    assert_eq!(
        read(&memory, "memory.limit_in_bytes"),
        "67108864",
        "a reload undid it"
    );
    everywhere(pid, "after a reload");
    assert_eq!(
        read(&devices, "devices.list"),
        rules,
        "systemd changed the device rules"
    );
    // What this guards against: a write systemd was not told of is undone.
    std::fs::write(cpu.join("cpu.cfs_quota_us"), "30000").unwrap();
    assert!(systemctl(&["daemon-reload"]).0);
    assert!(
        eventually(Duration::from_secs(5), || read(&cpu, "cpu.cfs_quota_us")
            == "20000"),
        "a reload kept a value systemd was not told of: this test proves nothing here ({})",
        read(&cpu, "cpu.cfs_quota_us")
    );

    // An exec joins the container's scope, in every hierarchy.
    let out = env.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "in-scope",
        id,
        "sh",
        "-c",
        "cat /proc/1/cgroup; echo --; cat /proc/self/cgroup",
    ]);
    let (init, exec) = out.split_once("--\n").expect(&out);
    assert_eq!(init.trim(), exec.trim(), "the exec is elsewhere");

    // Pause and resume through the v1 freezer of the scope.
    let (freezer, _) = v1_cgroup(pid, "freezer");
    env.ctr_ok(&["task", "pause", id]);
    assert_eq!(read(&freezer, "freezer.state"), "FROZEN");
    env.ctr_ok(&["task", "resume", id]);
    assert_eq!(read(&freezer, "freezer.state"), "THAWED");

    // Removed, it leaves neither its unit nor a cgroup in any hierarchy.
    let (systemd_dir, _) = v1_cgroup(pid, "name=systemd");
    env.remove(id);
    let gone = || {
        !systemctl(&["is-active", unit]).0
            && [&cpu, &memory, &freezer, &systemd_dir]
                .iter()
                .all(|d| !d.exists())
    };
    assert!(
        eventually(Duration::from_secs(10), gone),
        "{unit} is {}; cgroups left: {:?}",
        systemctl(&["is-active", unit]).1,
        [&cpu, &memory, &freezer, &systemd_dir]
            .iter()
            .filter(|d| d.exists())
            .collect::<Vec<_>>()
    );
    env.remove("sdv1-runc");
    env.assert_no_leftovers(id);
}

//! tidal under a real, private containerd: what a user of `ctr` sees.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn output_arrives_and_exit_codes_are_reported() {
    let env = Env::start("exit");
    let (code, out) = env.run(TIDAL, "hello", &["echo", "hello from tidal"]);
    assert_eq!((code, out.as_str()), (0, "hello from tidal\n"));
    let (code, _) = env.run(TIDAL, "three", &["sh", "-c", "exit 3"]);
    assert_eq!(code, 3);
}

#[test]
fn a_container_with_its_own_network_namespace_reaches_itself_over_loopback() {
    let env = Env::start("loopback");
    let (code, out) = env.run(
        TIDAL,
        "lo",
        &[
            "sh",
            "-c",
            "ip -o link show lo; nc -l -p 9000 -e echo served & \
             for i in 1 2 3 4 5 6 7 8 9 10; do nc 127.0.0.1 9000 && exit 0; sleep 0.2; done; exit 1",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(",UP"), "lo is not up:\n{out}");
    assert!(
        out.ends_with("served\n"),
        "no answer over 127.0.0.1:\n{out}"
    );
}

#[test]
fn signals_reach_the_container_and_sigkill_reports_137() {
    let env = Env::start("signal");
    // SIGTERM is delivered to a process that traps it.
    let mut child = env.spawn_run(
        "trap",
        &[],
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    );
    assert!(env.wait_status("trap", "RUNNING", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(300));
    env.ctr_ok(&["task", "kill", "-s", "SIGTERM", "trap"]);
    let status = child.wait().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(status.code(), Some(42), "output: {out}");
    assert!(out.contains("got-term"), "output: {out}");

    // SIGKILL: 128 + 9.
    let mut child = env.spawn_run("victim", &[], &["sleep", "1000"]);
    assert!(env.wait_status("victim", "RUNNING", Duration::from_secs(10)));
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "victim"]);
    assert_eq!(child.wait().unwrap().code(), Some(137));
}

#[test]
fn exec_has_its_own_output_and_exit_code() {
    let env = Env::start("exec");
    env.run_detached(TIDAL, "box", &[], &["sleep", "1000"]);
    let out = env.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "box",
        "sh",
        "-c",
        "echo in-exec; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in-exec\n");
    // The same exec id can be used again once the first one is gone.
    let out = env.ctr(&["task", "exec", "--exec-id", "e1", "box", "true"]);
    assert_eq!(out.status.code(), Some(0));
    env.remove("box");
}

#[test]
fn tty_exec_gets_a_terminal_of_the_clients_size() {
    let env = Env::start("tty");
    env.run_detached(TIDAL, "term", &[], &["sleep", "1000"]);
    // `script` gives ctr a terminal; ctr sends its size with ResizePty just
    // after Start, so the process waits until the size has arrived.
    let ctr = format!(
        "stty rows 41 cols 103; ctr --address {} -n {NS} task exec -t --exec-id t1 term sh -c \
         'tty; for i in $(seq 50); do s=$(stty size 2>/dev/null); [ -n \"$s\" ] && [ \"$s\" != \"0 0\" ] && break; sleep 0.1; done; echo size=$s'",
        env.socket().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &ctr, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("/dev/pts/"), "no terminal: {text}");
    assert!(
        text.contains("41 103"),
        "terminal size not passed on: {text}"
    );
    env.remove("term");
}

fn read_counter(env: &Env, id: &str) -> u64 {
    std::fs::read_to_string(env.bundle(id).join("rootfs/tmp/count"))
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn pause_really_freezes_and_resume_thaws() {
    let env = Env::start("pause");
    env.run_detached(
        TIDAL,
        "ticker",
        &[],
        &[
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done",
        ],
    );
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while read_counter(&env, "ticker") == 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(read_counter(&env, "ticker") > 0, "ticker does not tick");
    env.ctr_ok(&["task", "pause", "ticker"]);
    assert_eq!(env.task("ticker").unwrap().1, "PAUSED");
    let frozen = read_counter(&env, "ticker");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        read_counter(&env, "ticker"),
        frozen,
        "paused container kept running"
    );
    env.ctr_ok(&["task", "resume", "ticker"]);
    assert_eq!(env.task("ticker").unwrap().1, "RUNNING");
    // Resumed, it ticks again (within seconds even on a loaded machine; the
    // QEMU guest of hack/vm emulates every instruction, so allow it 30 s).
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while read_counter(&env, "ticker") <= frozen && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        read_counter(&env, "ticker") > frozen,
        "resumed container does not run: counter {} (frozen at {frozen}); {}",
        read_counter(&env, "ticker"),
        freezer_report(&env, "ticker")
    );
    env.remove("ticker");
}

/// What a failed resume looks like from the host: the task's status, its
/// cgroup's freezer state and the state of each of its processes.
fn freezer_report(env: &Env, id: &str) -> String {
    let Some((pid, status)) = env.task(id) else {
        return "no such task".into();
    };
    let mut report = format!("task {status}, pid {pid}");
    let dirs = cgroup_dirs(id);
    for dir in &dirs {
        for file in ["cgroup.freeze", "cgroup.events", "freezer.state"] {
            if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                report += &format!("; {}/{file}: {text}", dir.display());
            }
        }
    }
    let procs = dirs
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .unwrap_or_default();
    for p in procs.split_whitespace() {
        let state = std::fs::read_to_string(format!("/proc/{p}/status"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("Name:") || l.starts_with("State:"))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(" ");
        report += &format!("; process {p}: {state}");
    }
    report
}

#[test]
fn pids_lists_the_init_and_exec_processes() {
    let env = Env::start("pids");
    let init = env.run_detached(TIDAL, "procs", &[], &["sleep", "1000"]);
    let mut exec = env
        .ctr_with(&[
            "task",
            "exec",
            "--exec-id",
            "sleeper",
            "procs",
            "sleep",
            "1000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut pids = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        pids = env
            .ctr_ok(&["task", "ps", "procs"])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse::<i32>().ok())
            .collect::<Vec<_>>();
        if pids.len() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pids.contains(&init), "init {init} not in {pids:?}");
    assert_eq!(pids.len(), 2, "{pids:?}");
    env.remove("procs");
    let _ = exec.wait();
}

#[test]
fn stats_report_real_cgroup_values() {
    let env = Env::start("stats");
    env.run_detached(
        TIDAL,
        "busy",
        &["--memory-limit", "67108864"],
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; sleep 1000",
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let out = env.ctr_ok(&["task", "metrics", "busy"]);
    let value = |key: &str| -> u64 {
        out.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {out}"))
    };
    // ctr prints v1's and v2's Metrics under their own names.
    if unified() {
        assert!(value("cpu.usage_usec ") > 10_000, "{out}");
        assert!(value("memory.usage ") > 0, "{out}");
        assert_eq!(value("memory.usage_limit "), 67108864, "{out}");
    } else {
        assert!(value("cpuacct.usage ") > 10_000_000, "{out}");
        assert!(value("memory.usage_in_bytes") > 0, "{out}");
        assert_eq!(value("memory.limit_in_bytes"), 67108864, "{out}");
    }
    assert_eq!(value("pids.current"), 1, "{out}");
    env.remove("busy");
}

#[test]
fn a_container_over_its_memory_limit_gets_an_oom_event() {
    let env = Env::start("oom");
    let mut events = env.spawn_events();
    let out = env.ctr(&[
        "run",
        "--rm",
        "--runtime",
        TIDAL,
        "--memory-limit",
        "16777216",
        IMAGE,
        "hog",
        "sh",
        "-c",
        "a=xxxxxxxxxxxxxxxx; while :; do a=$a$a; done",
    ]);
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    std::thread::sleep(Duration::from_millis(300));
    let _ = events.kill();
    let mut text = String::new();
    events
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let _ = events.wait();
    assert!(
        text.lines()
            .any(|l| l.contains("/tasks/oom") && l.contains("hog")),
        "no OOM event: {text}"
    );
}

#[test]
fn nothing_is_left_after_delete() {
    let env = Env::start("leak");
    let (code, _) = env.run(TIDAL, "tidy", &["sh", "-c", "sleep 0.1"]);
    assert_eq!(code, 0);
    env.assert_no_leftovers("tidy");
}

#[test]
fn a_flooding_container_does_not_slow_its_neighbour_in_the_same_shim() {
    let env = Env::start("flood");
    let pod = "io.kubernetes.cri.sandbox-id=pod1";
    let timed = |id: &str| {
        let start = Instant::now();
        let out = env.ctr(&[
            "run",
            "--rm",
            "--runtime",
            TIDAL,
            "--annotation",
            pod,
            IMAGE,
            id,
            "echo",
            "fine",
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "fine\n");
        start.elapsed()
    };
    // Keep the pod's shim alive across the measurements.
    env.run_detached(TIDAL, "anchor", &["--annotation", pod], &["sleep", "1000"]);
    let baseline = timed("before");
    // A floods its stdout; nobody reads it, so it blocks on a full fifo.
    let mut flood = env.spawn_run(
        "flood",
        &["--annotation", pod],
        &[
            "sh",
            "-c",
            "while :; do echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done",
        ],
    );
    assert!(env.wait_status("flood", "RUNNING", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(500));
    let during = timed("during");
    let shims = env.shims();
    assert_eq!(
        shims.len(),
        1,
        "containers of one pod must share one shim: {shims:?}"
    );
    assert!(
        during < baseline * 5 + Duration::from_secs(1),
        "neighbour took {during:?} during the flood, {baseline:?} before"
    );
    env.remove("flood");
    let _ = flood.kill();
    let _ = flood.wait();
    env.remove("anchor");
}

#[test]
fn no_host_descriptor_leaks_into_a_container() {
    let env = Env::start("fds");
    let (code, out) = env.run(TIDAL, "fds", &["ls", "/proc/self/fd"]);
    assert_eq!(code, 0);
    let fds: Vec<&str> = out.split_whitespace().collect();
    // 0-2 are stdio, 3 is the directory `ls` itself is reading.
    assert_eq!(fds, vec!["0", "1", "2", "3"], "unexpected fds: {out}");
}

#[test]
fn events_come_once_each_in_containerd_order() {
    let env = Env::start("events");
    let mut events = env.spawn_events();
    for i in 0..5 {
        let (code, _) = env.run(TIDAL, &format!("ev{i}"), &["sh", "-c", "exit 7"]);
        assert_eq!(code, 7);
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = events.kill();
    let mut text = String::new();
    events
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let _ = events.wait();
    for i in 0..5 {
        let id = format!("\"container_id\":\"ev{i}\"");
        let topics: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(&id) && l.contains("/tasks/"))
            .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("/tasks/")))
            .collect();
        assert_eq!(
            topics,
            vec![
                "/tasks/create",
                "/tasks/start",
                "/tasks/exit",
                "/tasks/delete"
            ],
            "ev{i}: {text}"
        );
        let exit = text
            .lines()
            .find(|l| l.contains(&id) && l.contains("/tasks/exit"))
            .unwrap();
        assert!(exit.contains("\"exit_status\":7"), "{exit}");
    }
}

#[test]
fn stdin_reaches_the_container_and_its_end_closes_it() {
    let env = Env::start("stdin");
    let mut child = env.spawn_run("cat", &[], &["sh", "-c", "cat; echo eof-seen"]);
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"line one\nline two\n").unwrap();
    } // closing our end must end the container's stdin
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "line one\nline two\neof-seen\n"
    );
}

#[test]
fn isolation_follows_the_oci_spec() {
    let env = Env::start("isolation");
    let out = env.ctr(&[
        "run", "--rm", "--runtime", TIDAL, "--seccomp", IMAGE, "iso", "sh", "-c",
        "grep -E '^(CapInh|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; \
         echo nofile=$(ulimit -n); echo pid=$$; for n in uts ipc mnt pid net; do echo ns-$n=$(readlink /proc/self/ns/$n); done; \
         touch /proc/sys/kernel/tidal-test 2>/dev/null && echo sys-writable || echo sys-readonly; \
         [ -s /proc/kcore ] && echo kcore-visible || echo kcore-masked; ls /sys/firmware 2>/dev/null | wc -l",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for want in [
        "CapInh:\t0000000000000000",
        "CapAmb:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "nofile=1024",
        "pid=1",
        "sys-readonly",
        "kcore-masked",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    for ns in ["uts", "ipc", "mnt", "pid", "net"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let line = format!("ns-{ns}={}", host.display());
        assert!(
            !text.contains(&line),
            "container shares the host's {ns} namespace:\n{text}"
        );
        assert!(
            text.contains(&format!("ns-{ns}={ns}:[")),
            "no {ns} namespace in:\n{text}"
        );
    }
}

#[test]
fn a_shim_killed_with_sigkill_is_cleaned_up() {
    let env = Env::start("sigkill");
    let pid = env.run_detached(TIDAL, "orphan", &[], &["sleep", "1000"]);
    let shims = env.shims();
    assert_eq!(shims.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0]),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    // containerd notices, runs `containerd-shim-tidal-v2 delete`, reports the task gone.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10)
        && std::path::Path::new(&format!("/proc/{pid}")).exists()
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "container process {pid} survived its shim"
    );
    let _ = env.ctr(&["task", "delete", "orphan"]);
    env.ctr_ok(&["container", "rm", "orphan"]);
    env.assert_no_leftovers("orphan");
}

#[test]
fn the_shim_keeps_no_descriptor_from_finished_processes() {
    let env = Env::start("fdleak");
    env.run_detached(TIDAL, "host", &[], &["sleep", "1000"]);
    let shim = env.shims()[0];
    let fds = || {
        std::fs::read_dir(format!("/proc/{shim}/fd"))
            .unwrap()
            .count()
    };
    // Warm up: the first exec may set up lasting state (e.g. the runtime's pools).
    env.ctr_ok(&["task", "exec", "--exec-id", "warm", "host", "true"]);
    let before = fds();
    for i in 0..30 {
        let out = env.ctr(&[
            "task",
            "exec",
            "--exec-id",
            &format!("e{i}"),
            "host",
            "sh",
            "-c",
            "echo x; exit 1",
        ]);
        assert_eq!(out.status.code(), Some(1));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fds(), before, "the shim's descriptors grew over 30 execs");
    env.remove("host");
}

/// Opens `path` for appending (O_WRONLY|O_APPEND: never O_TRUNC or
/// O_CREAT) and closes it at once without writing a byte; the errno.
fn open_for_append(path: &str) -> Result<(), i32> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map(drop)
        .map_err(|e| e.raw_os_error().unwrap_or(0))
}

#[test]
fn the_shim_executable_cannot_be_opened_for_writing_through_proc() {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = Env::start("exe");
    env.run_detached(TIDAL, "guard", &[], &["sleep", "1000"]);
    let shims = env.shims();
    assert_eq!(shims.len(), 1, "shims: {shims:?}");
    let shim = shims[0];
    let real = std::fs::metadata(env!("CARGO_BIN_EXE_containerd-shim-tidal-v2")).unwrap();
    let same_binary = |m: &std::fs::Metadata| {
        (m.size(), m.mtime(), m.mtime_nsec()) == (real.size(), real.mtime(), real.mtime_nsec())
    };

    // The serving shim runs the binary from a read-only mount, under its own name.
    let exe = format!("/proc/{shim}/exe");
    assert!(same_binary(&std::fs::metadata(&exe).unwrap()));
    assert_eq!(
        open_for_append(&exe),
        Err(libc::EROFS),
        "the serving shim's executable"
    );
    let comm = std::fs::read_to_string(format!("/proc/{shim}/comm")).unwrap();
    assert_eq!(comm.trim(), "containerd-shim");

    // A helper, caught as an attacker would: its executable held with O_PATH
    // while it runs, reopened for writing once it has exited.
    let stop = AtomicBool::new(false);
    let held = std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) || i == 200 {
                    break;
                }
                env.ctr(&[
                    "task",
                    "exec",
                    "--exec-id",
                    &format!("e{i}"),
                    "guard",
                    "true",
                ]);
            }
        });
        let marker = format!("{}/", env.dir.display());
        let start = Instant::now();
        let mut held = None;
        while held.is_none() && start.elapsed() < Duration::from_secs(60) {
            for pid in processes_with("tidal-shim-helper ") {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if !String::from_utf8_lossy(&cmdline).contains(&marker) {
                    continue;
                }
                if let Ok(f) = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH)
                    .open(format!("/proc/{pid}/exe"))
                {
                    held = Some((pid, f));
                    break;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        held
    });
    let (pid, file) = held.expect("no helper process seen in 60 s of execs");
    let helper = std::fs::metadata(env!("CARGO_BIN_EXE_tidal-shim-helper")).unwrap();
    let seen = file.metadata().unwrap();
    assert_eq!(
        (seen.size(), seen.mtime(), seen.mtime_nsec()),
        (helper.size(), helper.mtime(), helper.mtime_nsec()),
        "helper {pid} runs another binary"
    );
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    use std::os::fd::AsRawFd;
    let reopen = format!("/proc/self/fd/{}", file.as_raw_fd());
    assert_eq!(
        open_for_append(&reopen),
        Err(libc::EROFS),
        "helper {pid}'s executable, reopened after it exited"
    );
    drop(file);
    env.remove("guard");
    env.assert_no_leftovers("guard");
}

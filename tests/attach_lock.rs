//! `cgroups::prime_attach_lock` against the host's real cgroups (root): the
//! moves it makes change nothing, it stops when told, and a process that is
//! gone is an error, not a hang.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidal::cgroups::prime_attach_lock;

fn cgroups_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap()
}

#[test]
fn priming_moves_nothing_and_stops_when_the_helper_answers() {
    assert_eq!(
        nix::unistd::Uid::effective().as_raw(),
        0,
        "writes cgroup.procs: run as root (hack/test does)"
    );
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = child.id();
    let before = cgroups_of(pid);

    // Runs until `done`: here set after 100 ms, well before the 10 s limit.
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        flag.store(true, Ordering::Relaxed);
    });
    let start = Instant::now();
    prime_attach_lock(pid as i32, &done, Duration::from_secs(10)).unwrap();
    let took = start.elapsed();
    setter.join().unwrap();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(3),
        "priming ran {took:?}, not until it was told to stop (100 ms)"
    );
    // The repeated moves left the process where it was, in every hierarchy.
    assert_eq!(cgroups_of(pid), before);

    // And with no `done`, the limit ends it.
    let start = Instant::now();
    prime_attach_lock(
        pid as i32,
        &AtomicBool::new(false),
        Duration::from_millis(200),
    )
    .unwrap();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(cgroups_of(pid), before);

    child.kill().unwrap();
    child.wait().unwrap();
    // A process that is gone: an error naming why, at once.
    let start = Instant::now();
    let err = prime_attach_lock(pid as i32, &AtomicBool::new(false), Duration::from_secs(10))
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    assert!(start.elapsed() < Duration::from_secs(1));
}

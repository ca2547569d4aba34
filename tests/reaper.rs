//! The reaper calls waitpid(-1), so its test owns a whole test process.

use std::time::{Duration, Instant};

use tidal::shim::reaper::Reaper;

fn spawn(script: &str) -> i32 {
    std::process::Command::new("/bin/sh")
        .args(["-c", script])
        .spawn()
        .unwrap()
        .id() as i32
}

#[tokio::test(flavor = "current_thread")]
async fn reaper_hands_each_exit_to_its_waiter_once() {
    let reaper = Reaper::start().unwrap();

    // Exit codes and signals.
    let since = Instant::now();
    let pid = spawn("exit 3");
    assert_eq!(reaper.subscribe(pid, since).await.unwrap().status, 3);
    let since = Instant::now();
    let pid = spawn("kill -9 $$");
    assert_eq!(reaper.subscribe(pid, since).await.unwrap().status, 137);

    // A process reaped before anyone asked for it is still reported.
    let since = Instant::now();
    let pid = spawn("exit 7");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let exit = reaper.subscribe(pid, since).await.unwrap();
    assert_eq!((exit.pid, exit.status), (pid, 7));

    // ...but only to a waiter whose process could be the one that ended: a
    // stale exit of a pid that is later reused is not handed out.
    let pid = spawn("exit 9");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut rx = reaper.subscribe(pid, Instant::now());
    assert!(rx.try_recv().is_err(), "a stale exit was delivered");
}

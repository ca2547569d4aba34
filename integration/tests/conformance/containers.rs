//! Containers: lifecycle, listing, stop grace period, exit codes, and their
//! CRI-format logs and log reopening.

use std::path::Path;
use std::time::{Duration, Instant};

use tidal_integration::cri::v1;
use tidal_integration::suite::{self, Case, Ctx, CASE_LABEL};

use crate::{CREATED, EXITED, RUNNING};

pub(crate) const CASES: &[Case] = cases![
    container_lifecycle,
    container_list_filters,
    stop_grace_period,
    exit_codes,
    logs_cri_format,
    last_output_reaches_the_log,
    reopen_container_log,
];

async fn container_lifecycle(ctx: Ctx) {
    let config = ctx.pod_config("pod");
    let pod = ctx.run_pod(&config).await;
    let id = ctx
        .create(&pod, &config, ctx.container("app", &["sleep", "3600"]))
        .await
        .unwrap();
    let s = ctx.status(&id).await;
    assert_eq!(s.state, CREATED);
    assert_eq!(s.image.as_ref().unwrap().image, suite::IMAGE);
    ctx.start(&id).await.unwrap();
    let s = ctx.status(&id).await;
    assert_eq!(s.state, RUNNING);
    assert!(s.started_at > 0, "started_at unset");
    let t = Instant::now();
    ctx.stop(&id, 2).await.unwrap();
    let s = ctx.status(&id).await;
    assert_eq!(s.state, EXITED);
    assert!(s.finished_at >= s.started_at);
    // sleep (PID 1) ignores SIGTERM, so the grace period ran out: SIGKILL.
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "stopped before the grace period"
    );
    assert_eq!(s.exit_code, 137);
    ctx.remove(&id).await.unwrap();
    let left = ctx
        .list_containers(v1::ContainerFilter {
            id: id.clone(),
            ..Default::default()
        })
        .await;
    assert!(left.is_empty(), "removed container still listed");
}

async fn container_list_filters(ctx: Ctx) {
    let config = ctx.pod_config("pod");
    let pod = ctx.run_pod(&config).await;
    let mut long = ctx.container("long", &["sleep", "3600"]);
    long.labels.insert("which".into(), "long".into());
    let long = ctx.run(&pod, &config, long).await;
    let short = ctx
        .run(&pod, &config, ctx.container("short", &["true"]))
        .await;
    ctx.wait_exited(&short, Duration::from_secs(10)).await;
    let ids = |v: Vec<v1::Container>| {
        let mut v: Vec<String> = v.into_iter().map(|c| c.id).collect();
        v.sort();
        v
    };
    let mut both = vec![long.clone(), short.clone()];
    both.sort();
    let in_pod = ctx
        .list_containers(v1::ContainerFilter {
            pod_sandbox_id: pod.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(ids(in_pod), both);
    let by_id = ctx
        .list_containers(v1::ContainerFilter {
            id: short.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(ids(by_id), vec![short.clone()]);
    let running = ctx
        .list_containers(v1::ContainerFilter {
            pod_sandbox_id: pod.clone(),
            state: Some(v1::ContainerStateValue { state: RUNNING }),
            ..Default::default()
        })
        .await;
    assert_eq!(ids(running), vec![long.clone()]);
    let labelled = ctx
        .list_containers(v1::ContainerFilter {
            label_selector: [
                ("which".to_string(), "long".to_string()),
                (CASE_LABEL.into(), ctx.label()),
            ]
            .into(),
            ..Default::default()
        })
        .await;
    assert_eq!(ids(labelled), vec![long]);
}

async fn stop_grace_period(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            c.command = vec![
                "sh".into(),
                "-c".into(),
                "trap 'exit 0' TERM; while true; do sleep 0.1; done".into(),
            ];
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    ctx.stop(&id, 30).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "a TERM-handling container took {:?}",
        t.elapsed()
    );
    let s = ctx.status(&id).await;
    assert_eq!(
        (s.state, s.exit_code),
        (EXITED, 0),
        "SIGTERM handled: clean exit"
    );
}

async fn exit_codes(ctx: Ctx) {
    let config = ctx.pod_config("pod");
    let pod = ctx.run_pod(&config).await;
    for (code, reason) in [(0, "Completed"), (3, "Error"), (42, "Error")] {
        let id = ctx
            .run(
                &pod,
                &config,
                ctx.container(
                    &format!("exit{code}"),
                    &["sh", "-c", &format!("exit {code}")],
                ),
            )
            .await;
        let s = ctx.wait_exited(&id, Duration::from_secs(10)).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (code, reason));
    }
}

pub(crate) fn read_log(ctx: &Ctx, pod_config: &v1::PodSandboxConfig, name: &str) -> String {
    let path = Path::new(&pod_config.log_directory).join(format!("{name}.log"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} ({}): {e}", path.display(), ctx.handler))
}

/// CRI log lines: `<RFC3339Nano> <stream> <P|F> <text>`.
pub(crate) fn log_lines(log: &str) -> Vec<(String, String)> {
    log.lines()
        .map(|l| {
            let parts: Vec<&str> = l.splitn(4, ' ').collect();
            assert_eq!(parts.len(), 4, "not a CRI log line: {l:?}");
            assert!(
                parts[0].contains('T') && parts[0].ends_with('Z'),
                "bad timestamp in {l:?}"
            );
            assert_eq!(parts[2], "F", "a short line is a full line: {l:?}");
            (parts[1].to_string(), parts[3].to_string())
        })
        .collect()
}

async fn logs_cri_format(ctx: Ctx) {
    let config = ctx.pod_config("pod");
    let pod = ctx.run_pod(&config).await;
    let id = ctx
        .run(
            &pod,
            &config,
            ctx.container(
                "talk",
                &["sh", "-c", "echo to-out; echo to-err >&2; echo again"],
            ),
        )
        .await;
    ctx.wait_exited(&id, Duration::from_secs(10)).await;
    let lines = log_lines(&read_log(&ctx, &config, "talk"));
    let mut got: Vec<(&str, &str)> = lines
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("stderr", "to-err"),
            ("stdout", "again"),
            ("stdout", "to-out")
        ]
    );
    assert_eq!(
        Path::new(&ctx.status(&id).await.log_path),
        Path::new(&config.log_directory).join("talk.log")
    );
}

/// What a container writes just before it ends is in its log: containerd
/// takes TaskExit as the end of the output and closes its fifos, and
/// containerd 1.6 before 1.6.22 closes them before reading them out, so the
/// runtime must not report the exit while output is still unread. Each
/// container writes more than a fifo holds, then exits; with and without a
/// terminal. tidal must lose nothing; runc's shim, which does not wait, is
/// only reported (on containerd 1.6.20 it loses some tails too).
async fn last_output_reaches_the_log(ctx: Ctx) {
    const LINES: usize = 20_000;
    // hack/soak raises it: `hack/soak logs N`.
    let runs: usize = std::env::var("TIDAL_LOG_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12);
    let config = ctx.pod_config("pod");
    let pod = ctx.run_pod(&config).await;
    let mut lost = Vec::new();
    for i in 0..runs {
        let name = format!("burst{i}");
        let last = format!("LAST-{i}");
        let script = format!("seq 1 {LINES}; echo {last}");
        let mut c = ctx.container(&name, &["sh", "-c", &script]);
        c.tty = i % 2 == 1;
        let id = ctx.run(&pod, &config, c).await;
        ctx.wait_exited(&id, Duration::from_secs(20)).await;
        // Not `log_lines`: a log cut short can end in a partial (P) line.
        let log = read_log(&ctx, &config, &name);
        let text: Vec<&str> = log
            .lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").trim_end_matches('\r'))
            .collect();
        if text.last() != Some(&last.as_str()) || text.len() != LINES + 1 {
            lost.push(format!(
                "{name} (tty {}) logged {} of {} lines, ending {:?}",
                i % 2 == 1,
                text.len(),
                LINES + 1,
                text.last()
            ));
        }
        ctx.remove(&id).await.unwrap();
    }
    eprintln!(
        "{}: {} of {runs} logs lost their end",
        ctx.handler,
        lost.len()
    );
    if ctx.handler == "tidal" {
        assert!(lost.is_empty(), "output lost: {lost:#?}");
    }
}

async fn reopen_container_log(ctx: Ctx) {
    let config = ctx.pod_config("pod");
    let pod = ctx.run_pod(&config).await;
    let id = ctx
        .run(
            &pod,
            &config,
            ctx.container(
                "ticker",
                &[
                    "sh",
                    "-c",
                    "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.1; done",
                ],
            ),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = Path::new(&config.log_directory).join("ticker.log");
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    ctx.rt
        .clone()
        .reopen_container_log(v1::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("ReopenContainerLog: {e}"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let fresh =
        log_lines(&std::fs::read_to_string(&log).expect("ReopenContainerLog made no new log file"));
    assert!(
        fresh.len() >= 2,
        "the new log file gets new lines: {fresh:?}"
    );
    let old = log_lines(&std::fs::read_to_string(&rotated).unwrap());
    assert!(
        old.iter().all(|l| !fresh.contains(l)),
        "lines written twice"
    );
}

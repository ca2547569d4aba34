//! Running commands in a container: ExecSync, and the streaming server's
//! exec (with and without a tty), attach and port-forward.

use std::time::{Duration, Instant};

use tidal_integration::cri::v1;
use tidal_integration::stream;
use tidal_integration::suite::{Case, Ctx};

use crate::RUNNING;

pub(crate) const CASES: &[Case] = cases![
    exec_sync,
    exec_sync_timeout,
    streaming_exec,
    streaming_exec_tty,
    attach,
    port_forward,
];

async fn exec_sync(ctx: Ctx) {
    let (_, id) = ctx.pod_with(|_, _| ()).await;
    let (code, out, err) = ctx
        .exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 7"])
        .await;
    assert_eq!((code, out.as_str(), err.as_str()), (7, "out\n", "err\n"));
    let (code, _, _) = ctx.exec(&id, &["true"]).await;
    assert_eq!(code, 0);
    let missing = ctx.try_exec(&id, &["/no/such/binary"], 10).await;
    assert!(
        missing.is_err() || missing.as_ref().unwrap().0 != 0,
        "exec of a missing binary succeeded"
    );
}

async fn exec_sync_timeout(ctx: Ctx) {
    let (_, id) = ctx.pod_with(|_, _| ()).await;
    let t = Instant::now();
    let r = ctx.try_exec(&id, &["sleep", "30"], 1).await;
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "ExecSync ignored its 1 s timeout: {:?}",
        t.elapsed()
    );
    let e = r.expect_err("ExecSync past its timeout must fail");
    assert!(
        e.to_lowercase().contains("timeout") || e.contains("deadline"),
        "error does not say timeout: {e}"
    );
    // The container is unharmed.
    assert_eq!(ctx.status(&id).await.state, RUNNING);
}

/// The streaming URL for `sh -c script` in container `id`, with stdin.
async fn exec_url(ctx: &Ctx, id: &str, script: &str, tty: bool, stderr: bool) -> String {
    ctx.rt
        .clone()
        .exec(v1::ExecRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            tty,
            stdin: true,
            stdout: true,
            stderr,
        })
        .await
        .unwrap_or_else(|e| panic!("Exec: {e}"))
        .into_inner()
        .url
}

async fn streaming_exec(ctx: Ctx) {
    let (_, id) = ctx.pod_with(|_, _| ()).await;
    let url = exec_url(
        &ctx,
        &id,
        "read x; echo got:$x; echo oops >&2; exit 5",
        false,
        true,
    )
    .await;
    let out = stream::exec(&url, Some(b"hello\n".to_vec()), false)
        .await
        .unwrap_or_else(|e| panic!("streaming exec at {url}: {e}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got:hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert_eq!(out.exit_code, 5);
}

async fn streaming_exec_tty(ctx: Ctx) {
    let (_, id) = ctx.pod_with(|_, _| ()).await;
    let url = exec_url(
        &ctx,
        &id,
        "test -t 0 && test -t 1 && echo on-a-tty; stty size",
        true,
        false,
    )
    .await;
    let out = stream::exec(&url, Some(Vec::new()), true)
        .await
        .unwrap_or_else(|e| panic!("tty exec at {url}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("on-a-tty"), "no terminal: {text:?}");
    assert_eq!(out.exit_code, 0, "{text:?}");
}

async fn attach(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            c.command = vec!["sh".into(), "-c".into(), "read x; echo attached:$x".into()];
            c.stdin = true;
            c.stdin_once = true;
        })
        .await;
    let url = ctx
        .rt
        .clone()
        .attach(v1::AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .unwrap_or_else(|e| panic!("Attach: {e}"))
        .into_inner()
        .url;
    let out = stream::attach(&url, Some(b"there\n".to_vec()), false)
        .await
        .unwrap_or_else(|e| panic!("attach at {url}: {e}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "attached:there\n");
    let s = ctx.wait_exited(&id, Duration::from_secs(10)).await;
    assert_eq!(s.exit_code, 0);
}

async fn port_forward(ctx: Ctx) {
    let (pod, _) = ctx
        .pod_with(|_, c| {
            c.command = vec![
                "nc".into(),
                "-ll".into(),
                "-p".into(),
                "7070".into(),
                "-e".into(),
                "echo".into(),
                "forwarded".into(),
            ];
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = ctx
        .rt
        .clone()
        .port_forward(v1::PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![7070],
        })
        .await
        .unwrap_or_else(|e| panic!("PortForward: {e}"))
        .into_inner()
        .url;
    let got = stream::port_forward(&url, 7070, b"")
        .await
        .unwrap_or_else(|e| panic!("port-forward at {url}: {e}"));
    assert_eq!(String::from_utf8_lossy(&got).trim(), "forwarded");
}

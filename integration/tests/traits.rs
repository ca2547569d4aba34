//! OAM traits through CRI, handler `tidal` only (runc knows no traits): pod
//! annotations `trait.tidal.dev/<type>` harden containers, and bad or
//! conflicting traits fail RunPodSandbox/CreateContainer with a message that
//! names them, leaving nothing behind.

use std::process::Command;
use std::time::{Duration, Instant};

use tidal_integration::cri::v1;
use tidal_integration::env::CriEnv;
use tidal_integration::suite::{self, Case, CaseFuture, Ctx};

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        &[$(Case { name: stringify!($name), run: |ctx| -> CaseFuture { Box::pin($name(ctx)) } }),*]
    };
}

fn main() {
    let ok = suite::run_for(
        &["tidal"],
        "traits",
        cases![
            security_policy_hardens_an_unconfined_container,
            security_policy_tightens_the_pods_own_seccomp_profile,
            conflicting_traits_fail_run_pod_sandbox,
            trait_not_for_this_workload_type_is_refused,
            bad_trait_annotations_are_refused,
            privileged_container_under_security_policy_is_refused,
            run_as_non_root,
        ],
        false,
        Some(nothing_left),
    );
    std::process::exit(if ok { 0 } else { 1 });
}

const POLICY: &str = "trait.tidal.dev/security-policy";

fn sec(c: &mut v1::ContainerConfig) -> &mut v1::LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

fn unconfined(c: &mut v1::ContainerConfig) {
    let s = sec(c);
    s.seccomp = Some(v1::SecurityProfile {
        profile_type: v1::security_profile::ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    });
    s.no_new_privs = false;
}

fn annotate(p: &mut v1::PodSandboxConfig, pairs: &[(&str, &str)]) {
    for (k, v) in pairs {
        p.annotations.insert(k.to_string(), v.to_string());
    }
}

/// The container's log, once it holds `want` (CRI format: one line per write).
async fn log_with(ctx: &Ctx, pod: &v1::PodSandboxConfig, file: &str, want: &str) -> String {
    let path = std::path::Path::new(&pod.log_directory).join(file);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains(want) || Instant::now() > end {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = ctx;
    }
}

/// What the init process and an exec see, with and without the trait.
async fn security_policy_hardens_an_unconfined_container(ctx: Ctx) {
    let script = "grep -E '^(NoNewPrivs|Seccomp|CapBnd):' /proc/self/status; \
                  unshare -U true 2>&1 && echo UNSHARE=ok || echo UNSHARE=refused; \
                  touch /rootfs-write 2>&1 && echo WRITE=ok || echo WRITE=refused; echo DONE; exec sleep 3600";
    let run = |traits: bool| {
        let ctx = ctx.clone();
        async move {
            let mut p = ctx.pod_config(if traits { "hardened" } else { "plain" });
            if traits {
                annotate(
                    &mut p,
                    &[(
                        POLICY,
                        r#"{"allowPrivilegeEscalation": false, "seccompProfile": "runtime-default", "readOnlyRootFilesystem": true, "dropCapabilities": ["NET_RAW"]}"#,
                    )],
                );
            }
            let pod = ctx.run_pod(&p).await;
            let mut c = ctx.container("app", &["sh", "-c", script]);
            unconfined(&mut c);
            let id = ctx.run(&pod, &p, c).await;
            (log_with(&ctx, &p, "app.log", "DONE").await, id)
        }
    };
    let (plain, plain_id) = run(false).await;
    assert!(
        plain.contains("NoNewPrivs:\t0") && plain.contains("Seccomp:\t0"),
        "{plain}"
    );
    assert!(
        plain.contains("UNSHARE=ok"),
        "without the trait, unshare works: {plain}"
    );
    assert!(plain.contains("WRITE=ok"), "{plain}");

    let (hard, id) = run(true).await;
    assert!(hard.contains("NoNewPrivs:\t1"), "{hard}");
    assert!(hard.contains("Seccomp:\t2"), "{hard}");
    assert!(
        hard.contains("Operation not permitted") && hard.contains("UNSHARE=refused"),
        "unshare must fail with EPERM under runtime-default: {hard}"
    );
    assert!(
        hard.contains("Read-only file system") && hard.contains("WRITE=refused"),
        "{hard}"
    );
    let bnd = |log: &str| {
        let hex = log
            .lines()
            .find_map(|l| l.split("CapBnd:\t").nth(1))
            .unwrap_or_else(|| panic!("no CapBnd in {log}"));
        u64::from_str_radix(hex.trim(), 16).unwrap()
    };
    const NET_RAW: u64 = 1 << 13;
    assert_ne!(bnd(&plain) & NET_RAW, 0);
    assert_eq!(bnd(&hard) & NET_RAW, 0, "NET_RAW is dropped");
    // An exec runs under the same rules.
    assert_eq!(ctx.proc_status(&id, "NoNewPrivs").await, "1", "in an exec");
    assert_eq!(ctx.proc_status(&id, "Seccomp").await, "2", "in an exec");
    let (code, out, err) = ctx.exec(&id, &["unshare", "-U", "true"]).await;
    assert_ne!(code, 0, "unshare in an exec: {out}{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    let (code, out, err) = ctx.exec(&plain_id, &["unshare", "-U", "true"]).await;
    assert_eq!(code, 0, "unshare in an exec without the trait: {out}{err}");
}

/// A pod's own (Localhost) profile keeps its refusals, and the trait's are
/// added: stricter than both, never looser.
async fn security_policy_tightens_the_pods_own_seccomp_profile(ctx: Ctx) {
    let profile = ctx.shared.dir.join("seccomp-no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .unwrap();
    let path = profile.to_string_lossy().into_owned();
    let (_, id) = ctx
        .pod_with(|p, c| {
            annotate(p, &[(POLICY, "{}")]);
            sec(c).seccomp = Some(v1::SecurityProfile {
                profile_type: v1::security_profile::ProfileType::Localhost as i32,
                localhost_ref: path.clone(),
            });
        })
        .await;
    let (code, _, err) = ctx.exec(&id, &["mkdir", "/tmp/x"]).await;
    assert!(
        code != 0 && err.contains("Operation not permitted"),
        "the pod's refusal stays: {err}"
    );
    let (code, _, err) = ctx.exec(&id, &["unshare", "-U", "true"]).await;
    assert!(
        code != 0 && err.contains("Operation not permitted"),
        "the trait's refusal is added: {err}"
    );
    ctx.sh(
        &id,
        "touch /tmp/allowed && cat /proc/self/status >/dev/null",
    )
    .await;
}

/// Shims of this environment still running, by pid.
fn shims(ctx: &Ctx) -> Vec<String> {
    let out = Command::new("pgrep")
        .args([
            "-f",
            &format!("containerd-shim-.* -address {}/", ctx.shared.dir.display()),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// After a refused pod: no pod record, no shim, no mount, nothing in its cgroup.
async fn nothing_of_the_refused_pod(ctx: &Ctx, p: &v1::PodSandboxConfig) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let pods = ctx
            .list_pods(v1::PodSandboxFilter {
                label_selector: p.labels.clone(),
                ..Default::default()
            })
            .await;
        let shims = shims(ctx);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = ctx.shared.dir.display().to_string();
        let mounted: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&dir) && m.contains("rootfs"))
            .collect();
        if pods.is_empty() && shims.is_empty() && mounted.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "left behind by a refused pod: pods {pods:?}, shims {shims:?}, mounts {mounted:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn conflicting_traits_fail_run_pod_sandbox(ctx: Ctx) {
    let mut p = ctx.pod_config("conflict");
    annotate(
        &mut p,
        &[
            ("tidal.dev/workload-type", "server"),
            ("trait.tidal.dev/vertical-autoscaler", r#"{"maxCPU": "2"}"#),
            (
                "trait.tidal.dev/cron-vertical-scaler",
                r#"{"jobs": [{"name": "morning", "schedule": "0 8 * * 1-5", "cpu": "2"}]}"#,
            ),
        ],
    );
    let e = ctx
        .try_run_pod(&p)
        .await
        .expect_err("conflicting traits must fail RunPodSandbox");
    assert!(
        e.contains(r#"traits "cron-vertical-scaler" and "vertical-autoscaler" conflict"#),
        "the error names both traits: {e}"
    );
    assert!(e.contains("conflictsWith"), "and the rule: {e}");
    assert!(
        e.contains(&format!(
            "tidal refused pod tidal-test/{}",
            ctx.name("conflict")
        )),
        "{e}"
    );
    nothing_of_the_refused_pod(&ctx, &p).await;
}

async fn trait_not_for_this_workload_type_is_refused(ctx: Ctx) {
    let mut p = ctx.pod_config("task");
    annotate(
        &mut p,
        &[
            ("tidal.dev/workload-type", "task"),
            (
                "trait.tidal.dev/vertical-autoscaler",
                r#"{"maxMemory": "1Gi"}"#,
            ),
        ],
    );
    let e = ctx.try_run_pod(&p).await.expect_err("must be refused");
    assert!(
        e.contains(r#"trait "vertical-autoscaler" does not apply to workload type "task""#),
        "{e}"
    );
    nothing_of_the_refused_pod(&ctx, &p).await;
}

async fn bad_trait_annotations_are_refused(ctx: Ctx) {
    let huge = format!(
        r#"{{"dropCapabilities": [{}]}}"#,
        vec!["\"NET_RAW\""; 1000].join(",")
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "trait.tidal.dev/turbo",
            "{}".into(),
            "annotation trait.tidal.dev/turbo: unknown trait type \"turbo\"",
        ),
        (
            POLICY,
            r#"{"seccompProfile": "none"}"#.into(),
            "seccompProfile must be one of",
        ),
        (
            POLICY,
            r#"{"allowPrivilegeEscalation": true, "hostPath": "/"}"#.into(),
            "unknown property \"hostPath\"",
        ),
        (
            POLICY,
            "{not json".into(),
            "annotation trait.tidal.dev/security-policy: not valid JSON",
        ),
        (POLICY, huge, "at most 4096 are allowed"),
        (
            "tidal.dev/qos",
            "platinum".into(),
            "annotation tidal.dev/qos: must be online or offline",
        ),
    ];
    for (i, (key, value, want)) in cases.iter().enumerate() {
        let mut p = ctx.pod_config(&format!("bad{i}"));
        annotate(&mut p, &[(key, value)]);
        let e = ctx.try_run_pod(&p).await.expect_err(key);
        assert!(
            e.contains(want),
            "{key}={}: {e}",
            &value[..value.len().min(60)]
        );
        nothing_of_the_refused_pod(&ctx, &p).await;
    }
}

/// containerd creates a CRI container's task (where the shim sees its spec)
/// at StartContainer: a refused container fails there and never runs.
async fn refused_at_start(
    ctx: &Ctx,
    pod: &str,
    p: &v1::PodSandboxConfig,
    c: v1::ContainerConfig,
) -> String {
    let id = ctx
        .create(pod, p, c)
        .await
        .expect("CreateContainer records the container");
    let e = ctx
        .start(&id)
        .await
        .expect_err("StartContainer must be refused");
    assert_ne!(
        ctx.status(&id).await.state,
        v1::ContainerState::ContainerRunning as i32,
        "{e}"
    );
    e
}

async fn privileged_container_under_security_policy_is_refused(ctx: Ctx) {
    let mut p = ctx.pod_config("priv");
    annotate(&mut p, &[(POLICY, "{}")]);
    p.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .privileged = true;
    let pod = ctx.run_pod(&p).await;
    let mut c = ctx.container("root", &["sleep", "3600"]);
    sec(&mut c).privileged = true;
    let e = refused_at_start(&ctx, &pod, &p, c).await;
    assert!(
        e.contains("a privileged container cannot run under trait security-policy"),
        "{e}"
    );
    assert!(
        e.contains("tidal refused container root of pod tidal-test/"),
        "{e}"
    );
    // The same pod's unprivileged container runs, hardened.
    let ok = ctx
        .run(&pod, &p, ctx.container("app", &["sleep", "3600"]))
        .await;
    assert_eq!(ctx.proc_status(&ok, "NoNewPrivs").await, "1");
}

async fn run_as_non_root(ctx: Ctx) {
    let mut p = ctx.pod_config("nonroot");
    annotate(&mut p, &[(POLICY, r#"{"runAsNonRoot": true}"#)]);
    // The sandbox (pause) runs as root: that is the runtime's, not the user's.
    let pod = ctx.run_pod(&p).await;
    let e = refused_at_start(&ctx, &pod, &p, ctx.container("root", &["sleep", "3600"])).await;
    assert!(
        e.contains("runAsNonRoot is true but the container would run as uid 0"),
        "{e}"
    );
    let mut c = ctx.container("user", &["sleep", "3600"]);
    sec(&mut c).run_as_user = Some(v1::Int64Value { value: 1000 });
    let id = ctx.run(&pod, &p, c).await;
    assert_eq!(
        ctx.proc_status(&id, "Uid").await.split_whitespace().next(),
        Some("1000")
    );
}

fn nothing_left(env: &CriEnv) -> Result<(), String> {
    let dir = env.dir.to_string_lossy().into_owned();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let shims = Command::new("pgrep")
            .args(["-f", &format!("containerd-shim-.* -address {dir}/")])
            .output()
            .unwrap();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let left: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&format!("{dir}/")))
            .collect();
        if shims.stdout.is_empty() && left.is_empty() {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(format!(
                "shims: {} mounts: {left:?}",
                String::from_utf8_lossy(&shims.stdout).trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

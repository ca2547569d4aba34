//! The security context: users and groups, privileged, capabilities,
//! read-only rootfs, no_new_privs, seccomp, masked and read-only paths,
//! and the OOM killer's reason.

use std::time::Duration;

use tidal_integration::cri::v1;
use tidal_integration::suite::{Case, Ctx};

use crate::{pod_sec, sec};

pub(crate) const CASES: &[Case] = cases![
    run_as_user_and_group,
    run_as_username,
    supplemental_groups,
    privileged,
    capabilities_add_drop,
    capabilities_drop_all,
    readonly_rootfs,
    no_new_privs,
    seccomp_runtime_default,
    seccomp_unconfined,
    seccomp_localhost,
    masked_and_readonly_paths,
    oom_killed,
];

async fn run_as_user_and_group(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            sec(c).run_as_user = Some(v1::Int64Value { value: 1000 });
            sec(c).run_as_group = Some(v1::Int64Value { value: 2000 });
        })
        .await;
    assert_eq!(ctx.sh(&id, "id -u").await.trim(), "1000");
    assert_eq!(ctx.sh(&id, "id -g").await.trim(), "2000");
}

async fn run_as_username(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| sec(c).run_as_username = "tidal".into())
        .await;
    assert_eq!(ctx.sh(&id, "id -u").await.trim(), "1000");
}

async fn supplemental_groups(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            sec(c).run_as_user = Some(v1::Int64Value { value: 1000 });
            sec(c).supplemental_groups = vec![3000, 3001];
        })
        .await;
    let groups = ctx.sh(&id, "id -G").await;
    let groups: Vec<&str> = groups.split_whitespace().collect();
    for g in ["3000", "3001"] {
        assert!(groups.contains(&g), "groups {groups:?} lack {g}");
    }
}

fn host_cap_bound() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string()
}

async fn privileged(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|p, c| {
            pod_sec(p).privileged = true;
            sec(c).privileged = true;
        })
        .await;
    assert_eq!(ctx.proc_status(&id, "CapEff").await, host_cap_bound());
    // The host's devices are there.
    ctx.sh(&id, "test -c /dev/kmsg").await;
    let (_, plain) = ctx.pod_with(|_, _| ()).await;
    assert_ne!(ctx.proc_status(&plain, "CapEff").await, host_cap_bound());
}

fn cap_bit(mask: &str, bit: u32) -> bool {
    u64::from_str_radix(mask, 16).unwrap() & (1 << bit) != 0
}

async fn capabilities_add_drop(ctx: Ctx) {
    const CHOWN: u32 = 0;
    const NET_ADMIN: u32 = 12;
    let (_, plain) = ctx.pod_with(|_, _| ()).await;
    let eff = ctx.proc_status(&plain, "CapEff").await;
    assert!(
        cap_bit(&eff, CHOWN) && !cap_bit(&eff, NET_ADMIN),
        "default set {eff}"
    );
    let (_, id) = ctx
        .pod_with(|_, c| {
            let caps = sec(c).capabilities.get_or_insert_with(Default::default);
            caps.add_capabilities = vec!["NET_ADMIN".into()];
            caps.drop_capabilities = vec!["CHOWN".into()];
        })
        .await;
    let eff = ctx.proc_status(&id, "CapEff").await;
    assert!(
        !cap_bit(&eff, CHOWN) && cap_bit(&eff, NET_ADMIN),
        "CapEff {eff}"
    );
    let (code, _, err) = ctx
        .exec(&id, &["sh", "-c", "touch /tmp/f && chown 1000 /tmp/f"])
        .await;
    assert_ne!(code, 0, "chown worked without CAP_CHOWN");
    assert!(err.contains("not permitted"), "{err}");
    ctx.sh(
        &id,
        "ip link set lo mtu 65000 && ip link show lo | grep -q 'mtu 65000'",
    )
    .await;
    assert_eq!(ctx.proc_status(&id, "CapAmb").await, "0000000000000000");
    assert_eq!(ctx.proc_status(&id, "CapInh").await, "0000000000000000");
}

async fn capabilities_drop_all(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            sec(c)
                .capabilities
                .get_or_insert_with(Default::default)
                .drop_capabilities = vec!["ALL".into()];
        })
        .await;
    for k in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(ctx.proc_status(&id, k).await, "0000000000000000", "{k}");
    }
}

async fn readonly_rootfs(ctx: Ctx) {
    let (_, id) = ctx.pod_with(|_, c| sec(c).readonly_rootfs = true).await;
    let (code, _, err) = ctx.exec(&id, &["touch", "/new-file"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
}

async fn no_new_privs(ctx: Ctx) {
    let (_, id) = ctx.pod_with(|_, c| sec(c).no_new_privs = true).await;
    assert_eq!(ctx.proc_status(&id, "NoNewPrivs").await, "1");
    let (_, plain) = ctx.pod_with(|_, _| ()).await;
    assert_eq!(ctx.proc_status(&plain, "NoNewPrivs").await, "0");
}

fn seccomp(
    kind: v1::security_profile::ProfileType,
    localhost: &str,
) -> Option<v1::SecurityProfile> {
    Some(v1::SecurityProfile {
        profile_type: kind as i32,
        localhost_ref: localhost.into(),
    })
}

async fn seccomp_runtime_default(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            sec(c).seccomp = seccomp(v1::security_profile::ProfileType::RuntimeDefault, "")
        })
        .await;
    assert_eq!(ctx.proc_status(&id, "Seccomp").await, "2");
    // RuntimeDefault blocks what containers must not do, e.g. unshare(2).
    let (code, _, _) = ctx.exec(&id, &["unshare", "-m", "true"]).await;
    assert_ne!(code, 0, "unshare worked under RuntimeDefault");
    // An exec'd process is filtered with the capabilities it asked for, no more.
    let (_, plain) = ctx.pod_with(|_, _| ()).await;
    for k in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        assert_eq!(
            ctx.proc_status(&id, k).await,
            ctx.proc_status(&plain, k).await,
            "{k}"
        );
    }
}

async fn seccomp_unconfined(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            sec(c).seccomp = seccomp(v1::security_profile::ProfileType::Unconfined, "")
        })
        .await;
    assert_eq!(ctx.proc_status(&id, "Seccomp").await, "0");
}

async fn seccomp_localhost(ctx: Ctx) {
    let profile = ctx.shared.dir.join(format!("seccomp-{}.json", ctx.handler));
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .unwrap();
    let path = profile.to_string_lossy().into_owned();
    let (_, id) = ctx
        .pod_with(|_, c| {
            sec(c).seccomp = seccomp(v1::security_profile::ProfileType::Localhost, &path)
        })
        .await;
    assert_eq!(ctx.proc_status(&id, "Seccomp").await, "2");
    let (code, _, err) = ctx.exec(&id, &["mkdir", "/tmp/blocked"]).await;
    assert_ne!(code, 0, "mkdir worked under a profile that blocks it");
    assert!(
        err.contains("Operation not permitted"),
        "mkdir failed, but not with EPERM: {err}"
    );
    ctx.sh(&id, "touch /tmp/allowed").await;
}

async fn masked_and_readonly_paths(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            sec(c).masked_paths = vec!["/proc/kcore".into(), "/proc/timer_list".into()];
            sec(c).readonly_paths = vec!["/proc/sys".into()];
        })
        .await;
    assert_eq!(
        ctx.sh(&id, "wc -c < /proc/timer_list").await.trim(),
        "0",
        "masked file reads empty"
    );
    let mounts = ctx.sh(&id, "cat /proc/mounts").await;
    let sys = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("/proc/sys"))
        .expect("/proc/sys is not a mount");
    assert!(
        sys.split(' ').nth(3).unwrap().split(',').any(|o| o == "ro"),
        "{sys}"
    );
    let (code, _, _) = ctx
        .exec(
            &id,
            &["sh", "-c", "echo 1 > /proc/sys/kernel/shm_rmid_forced"],
        )
        .await;
    assert_ne!(code, 0, "wrote to a read-only /proc/sys");
}

async fn oom_killed(ctx: Ctx) {
    let (_, id) = ctx
        .pod_with(|_, c| {
            c.command = vec!["sh".into(), "-c".into(), "sleep 0.5; tail /dev/zero".into()];
            c.linux.get_or_insert_with(Default::default).resources =
                Some(v1::LinuxContainerResources {
                    memory_limit_in_bytes: 32 * 1024 * 1024,
                    ..Default::default()
                });
        })
        .await;
    let s = ctx.wait_exited(&id, Duration::from_secs(30)).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "OOMKilled"));
}

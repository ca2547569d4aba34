//! Volumes and their mount propagation: private, host-to-container
//! (rslave) and bidirectional (rshared).

use std::process::Command;

use tidal_integration::cri::v1;
use tidal_integration::suite::{Case, Ctx};

use crate::{pod_sec, sec};

pub(crate) const CASES: &[Case] =
    cases![mount_private, mount_host_to_container, mount_bidirectional,];

fn run(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd} failed");
}

/// A host directory on a mount of its own with `propagation` (shared/slave/private).
fn volume(ctx: &Ctx, what: &str) -> String {
    let d = ctx.shared.dir.join(format!("vol-{}-{what}", ctx.handler));
    std::fs::create_dir_all(&d).unwrap();
    let d = d.to_string_lossy().into_owned();
    run(&format!("mount --bind {d} {d} && mount --make-shared {d}"));
    d
}

fn unmount_all(dir: &str) {
    let _ = Command::new("umount").args(["-R", "-l", dir]).status();
}

fn mount(host: &str, propagation: v1::MountPropagation) -> v1::Mount {
    v1::Mount {
        container_path: "/vol".into(),
        host_path: host.into(),
        readonly: false,
        propagation: propagation as i32,
        ..Default::default()
    }
}

async fn propagation_case(ctx: Ctx, what: &str, prop: v1::MountPropagation) -> (String, String) {
    let d = volume(&ctx, what);
    std::fs::write(format!("{d}/hello"), "from-host").unwrap();
    let m = mount(&d, prop);
    let privileged = prop == v1::MountPropagation::PropagationBidirectional;
    let (_, id) = ctx
        .pod_with(|p, c| {
            c.mounts = vec![m];
            if privileged {
                pod_sec(p).privileged = true;
                sec(c).privileged = true;
            }
        })
        .await;
    assert_eq!(ctx.sh(&id, "cat /vol/hello").await, "from-host");
    (d, id)
}

async fn mount_private(ctx: Ctx) {
    let (d, id) = propagation_case(
        ctx.clone(),
        "private",
        v1::MountPropagation::PropagationPrivate,
    )
    .await;
    std::fs::create_dir_all(format!("{d}/late")).unwrap();
    run(&format!("mount -t tmpfs tidal-late {d}/late"));
    let mounts = ctx.sh(&id, "cat /proc/mounts").await;
    unmount_all(&d);
    assert!(
        !mounts.contains(" /vol/late "),
        "a private volume saw a later host mount"
    );
}

async fn mount_host_to_container(ctx: Ctx) {
    let (d, id) = propagation_case(
        ctx.clone(),
        "rslave",
        v1::MountPropagation::PropagationHostToContainer,
    )
    .await;
    std::fs::create_dir_all(format!("{d}/late")).unwrap();
    run(&format!("mount -t tmpfs tidal-late {d}/late"));
    let mounts = ctx.sh(&id, "cat /proc/mounts").await;
    unmount_all(&d);
    assert!(
        mounts.contains(" /vol/late "),
        "an rslave volume did not see the host's later mount"
    );
}

async fn mount_bidirectional(ctx: Ctx) {
    let (d, id) = propagation_case(
        ctx.clone(),
        "rshared",
        v1::MountPropagation::PropagationBidirectional,
    )
    .await;
    ctx.sh(
        &id,
        "mkdir -p /vol/inner && mount -t tmpfs tidal-inner /vol/inner",
    )
    .await;
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let seen = host
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&format!("{d}/inner")));
    ctx.sh(&id, "umount /vol/inner").await;
    unmount_all(&d);
    assert!(
        seen,
        "the host did not see a mount made in an rshared volume"
    );
}

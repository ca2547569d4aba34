//! CRI conformance: what Kubernetes' CRI validation checks, spoken as CRI v1
//! gRPC to a private containerd, each case run against handler `tidal` and
//! handler `runc` side by side and expected to behave the same. One test
//! binary, so that one containerd serves every case; a module per section.

use tidal_integration::cri::v1;
use tidal_integration::suite::{self, Case};

/// The cases of a section, in order: each an `async fn(Ctx)`.
macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        &[$(tidal_integration::suite::Case {
            name: stringify!($name),
            run: |ctx| -> tidal_integration::suite::CaseFuture { Box::pin($name(ctx)) },
        }),*]
    };
}

mod containers;
mod executable;
mod idempotence;
mod leftovers;
mod mounts;
mod pods;
mod resources;
mod security;
mod stats;
mod streaming;

fn main() {
    let cases: Vec<Case> = [
        pods::CASES,
        containers::CASES,
        streaming::CASES,
        stats::CASES,
        resources::CASES,
        security::CASES,
        mounts::CASES,
        idempotence::CASES,
        executable::CASES,
    ]
    .concat();
    let ok = suite::run("conformance", &cases, true, Some(leftovers::nothing_left));
    std::process::exit(if ok { 0 } else { 1 });
}

const RUNNING: i32 = v1::ContainerState::ContainerRunning as i32;
const EXITED: i32 = v1::ContainerState::ContainerExited as i32;
const CREATED: i32 = v1::ContainerState::ContainerCreated as i32;
const READY: i32 = v1::PodSandboxState::SandboxReady as i32;
const NOT_READY: i32 = v1::PodSandboxState::SandboxNotready as i32;

/// The container's security context, made if missing.
fn sec(c: &mut v1::ContainerConfig) -> &mut v1::LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// The pod's security context, made if missing.
fn pod_sec(p: &mut v1::PodSandboxConfig) -> &mut v1::LinuxSandboxSecurityContext {
    p.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// Applies `f` to the namespace options of both the pod and the container.
fn set_namespaces(
    p: &mut v1::PodSandboxConfig,
    c: &mut v1::ContainerConfig,
    f: impl Fn(&mut v1::NamespaceOption),
) {
    f(pod_sec(p)
        .namespace_options
        .get_or_insert_with(Default::default));
    f(sec(c)
        .namespace_options
        .get_or_insert_with(Default::default));
}

/// This process's (the host's) namespace of `kind`, as /proc shows it.
fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

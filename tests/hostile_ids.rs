//! Container and exec ids are checked with containerd's rule
//! (`[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`, at most 76 characters) before any
//! path is built from them: sent straight to a running shim's Task API, and to
//! the shim binary's `start` and `delete`, hostile ids are refused with
//! InvalidArgument and nothing is created, killed or removed.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Env, NS, TIDAL};
use containerd_shim::api;
use containerd_shim::protos::shim_async::{Client, TaskClient};

const HOSTILE: &[&str] = &[
    "../../../../tmp/tidal-hostile-id",
    "a/../../b",
    "/etc",
    ".hidden",
    "ok..no",
    "trailing-",
    "with space",
    "new\nline",
    "",
];

fn invalid(r: Result<impl std::fmt::Debug, containerd_shim::protos::ttrpc::Error>, what: &str) {
    match r {
        Err(containerd_shim::protos::ttrpc::Error::RpcStatus(s)) => {
            assert_eq!(
                s.code(),
                containerd_shim::protos::ttrpc::Code::INVALID_ARGUMENT,
                "{what}: {s:?}"
            );
            assert!(
                s.message().contains("must match")
                    || s.message().contains("must not be empty")
                    || s.message().contains("longer than"),
                "{what}: {}",
                s.message()
            );
        }
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn hostile_ids_are_refused_before_any_path_is_built() {
    let env = Env::start("ids");
    env.run_detached(TIDAL, "victim", &[], &["sleep", "1000"]);
    let pid = env.task_pid("victim").expect("victim runs");
    let bundle = env.bundle("victim");
    let address = std::fs::read_to_string(bundle.join("address")).unwrap();
    let state = env.dir.join("tidal").join(NS);
    let before = entries(&state);
    let long = "x".repeat(77);
    let mut ids: Vec<String> = HOSTILE.iter().map(|s| s.to_string()).collect();
    ids.push(long);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = TaskClient::new(
            Client::connect(&address)
                .await
                .expect("connect to the shim"),
        );
        let ctx = || containerd_shim::protos::ttrpc::context::with_timeout(10_000_000_000);
        for id in &ids {
            let what = format!("id {id:?}");
            invalid(
                client
                    .create(
                        ctx(),
                        &api::CreateTaskRequest {
                            id: id.clone(),
                            bundle: bundle.to_string_lossy().into_owned(),
                            ..Default::default()
                        },
                    )
                    .await,
                &format!("Create {what}"),
            );
            invalid(
                client
                    .state(
                        ctx(),
                        &api::StateRequest {
                            id: id.clone(),
                            ..Default::default()
                        },
                    )
                    .await,
                &format!("State {what}"),
            );
            invalid(
                client
                    .kill(
                        ctx(),
                        &api::KillRequest {
                            id: id.clone(),
                            signal: 9,
                            all: true,
                            ..Default::default()
                        },
                    )
                    .await,
                &format!("Kill {what}"),
            );
            invalid(
                client
                    .delete(
                        ctx(),
                        &api::DeleteRequest {
                            id: id.clone(),
                            ..Default::default()
                        },
                    )
                    .await,
                &format!("Delete {what}"),
            );
            invalid(
                client
                    .update(
                        ctx(),
                        &api::UpdateTaskRequest {
                            id: id.clone(),
                            ..Default::default()
                        },
                    )
                    .await,
                &format!("Update {what}"),
            );
            if !id.is_empty() {
                // A good container id with a hostile exec id.
                invalid(
                    client
                        .exec(
                            ctx(),
                            &api::ExecProcessRequest {
                                id: "victim".into(),
                                exec_id: id.clone(),
                                ..Default::default()
                            },
                        )
                        .await,
                    &format!("Exec {what}"),
                );
            }
        }
    });
    // Nothing was created or removed, and the container still runs.
    assert!(!Path::new("/tmp/tidal-hostile-id").exists());
    assert_eq!(entries(&state), before);
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the victim was killed"
    );
    assert_eq!(env.task("victim").map(|t| t.1), Some("RUNNING".to_string()));

    // The binary's own entry points, as containerd runs them.
    let shim = env!("CARGO_BIN_EXE_containerd-shim-tidal-v2");
    for id in ["../../x", "a/b", ".x"] {
        for action in ["start", "delete"] {
            let out = Command::new(shim)
                .args([
                    "-namespace",
                    NS,
                    "-id",
                    id,
                    "-address",
                    &env.socket().to_string_lossy(),
                    action,
                ])
                .current_dir(&bundle)
                .env("TIDAL_STATE_DIR", env.dir.join("tidal"))
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{action} -id {id:?} succeeded");
            assert!(err.contains("must match"), "{action} -id {id:?}: {err}");
        }
    }
    assert_eq!(entries(&state), before);
    assert_eq!(env.task("victim").map(|t| t.1), Some("RUNNING".to_string()));
    env.remove("victim");
    env.assert_no_leftovers("victim");
}

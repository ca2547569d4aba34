//! The write path's guarantees when several writers meet and when the disk
//! is full: every change one revision, each answer its own revision, no
//! limit changed without its revision. Real containers under a private
//! containerd, through tidald. Kept apart from `tests/api.rs`, whose
//! timing test must not share the machine with these loads.

mod common;

use std::process::Command;

use common::*;
use tidal::proto::pb;

/// Eight operators resizing one container at once: every change lands (a
/// change that names no revision is never refused for a race), each is one
/// revision, numbered without a gap or a repeat, each answer names its own
/// revision, and the last one recorded is the value the cgroup holds.
#[test]
fn concurrent_operators_on_one_container_all_land_as_one_revision_each() {
    let env = Env::start("apirace");
    env.run_detached(TIDAL, "raced", &[], &["sleep", "1000"]);
    let agent = env.start_agent();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        const CLIENTS: u64 = 8;
        const EACH: u64 = 25;
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let mut api = tidal::proto::connect(&agent.socket).await.unwrap();
            tasks.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                for i in 0..EACH {
                    let reason = format!("client {c} call {i}");
                    let r = api
                        .update_resources(pb::UpdateResourcesRequest {
                            container: target("raced"),
                            reason: reason.clone(),
                            cpu_millis: Some(100 + 10 * c + i),
                            ..Default::default()
                        })
                        .await
                        .unwrap_or_else(|e| panic!("{reason}: {e:?}"));
                    answers.push((r.into_inner().revision, reason));
                }
                answers
            }));
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.extend(t.await.unwrap());
        }
        let mut api = tidal::proto::connect(&agent.socket).await.unwrap();
        let revs = api
            .history(pb::HistoryRequest {
                container: target("raced"),
            })
            .await
            .unwrap()
            .into_inner()
            .revisions;
        let numbers: Vec<u64> = revs.iter().map(|r| r.revision).collect();
        assert_eq!(numbers, (1..=CLIENTS * EACH).collect::<Vec<_>>());
        // Each answer names the revision that recorded that call.
        for (revision, reason) in &answers {
            assert_eq!(&revs[*revision as usize - 1].reason, reason);
        }
        let last: serde_json::Value =
            serde_json::from_str(&revs.last().unwrap().after_json).unwrap();
        let live = api
            .get_resources(pb::GetResourcesRequest {
                container: target("raced"),
            })
            .await
            .unwrap()
            .into_inner()
            .live
            .unwrap()
            .cpu_millis
            .unwrap();
        assert_eq!(
            last["cpu_quota"]["value"],
            serde_json::json!(live * 100),
            "{last}"
        );
    });
    env.remove("raced");
}

/// tidal's state directory on a small tmpfs that fills up: a resize whose
/// revision no longer fits is refused with RESOURCE_EXHAUSTED and changes
/// nothing (no limit without its revision), the container keeps running,
/// and once space is freed the same resize is made and recorded.
#[test]
fn a_full_state_disk_refuses_resizes_and_changes_nothing() {
    let env = Env::start("fulldisk");
    let state = env.dir.join("tidal");
    // Unmounted by containerd-env down, after the container is deleted.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m,mode=0700", "tidal-full"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(mounted.success());
    env.run_detached(TIDAL, "full", &[], &["sleep", "1000"]);
    let agent = env.start_agent();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut api = tidal::proto::connect(&agent.socket).await.unwrap();
        let resize = |millis: u64, memory: u64| pb::UpdateResourcesRequest {
            container: target("full"),
            cpu_millis: Some(millis),
            memory_bytes: Some(memory),
            ..Default::default()
        };
        let first = api
            .update_resources(resize(310, 96 << 20))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.revision, 1);
        // Fill the state directory's filesystem.
        let filler = state.join("filler");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&filler).unwrap();
            let chunk = vec![0u8; 4096];
            let full = loop {
                if let Err(e) = f.write_all(&chunk) {
                    break e;
                }
            };
            assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
        }
        // Revisions still fit in the history file's last page for a while;
        // then one does not.
        let mut recorded = 1;
        let refused = loop {
            let millis = 300 + 10 * (recorded % 2);
            match api.update_resources(resize(millis, 96 << 20)).await {
                Ok(r) => {
                    recorded += 1;
                    assert_eq!(r.into_inner().revision, recorded);
                    assert!(recorded < 200, "the history never filled the disk");
                }
                Err(e) => break e,
            }
        };
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
        for words in ["No space left on device", "the limits are as they were"] {
            assert!(refused.message().contains(words), "{refused:?}");
        }
        // The next one opens the history afresh, and is refused too.
        let again = api
            .update_resources(resize(450, 80 << 20))
            .await
            .unwrap_err();
        assert_eq!(again.code(), tonic::Code::ResourceExhausted, "{again:?}");
        assert!(
            again.message().contains("No space left on device"),
            "{again:?}"
        );
        let last = 300 + 10 * ((recorded + 1) % 2);
        let c = api
            .get_resources(pb::GetResourcesRequest {
                container: target("full"),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(cpu_mem(&c.live), (Some(last), Some(96 << 20)), "unchanged");
        assert_eq!(c.status, "running");
        let revs = |api: &mut pb::resize_client::ResizeClient<_>| {
            let mut api = api.clone();
            async move {
                api.history(pb::HistoryRequest {
                    container: target("full"),
                })
                .await
                .unwrap()
                .into_inner()
                .revisions
                .iter()
                .map(|r| r.revision)
                .collect::<Vec<_>>()
            }
        };
        assert_eq!(revs(&mut api).await, (1..=recorded).collect::<Vec<_>>());

        // Space again: a change is made, and recorded.
        std::fs::remove_file(&filler).unwrap();
        let again = api
            .update_resources(resize(200, 64 << 20))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.revision, recorded + 1);
        assert_eq!(
            cpu_mem(&again.container.unwrap().live),
            (Some(200), Some(64 << 20))
        );
        assert_eq!(revs(&mut api).await, (1..=recorded + 1).collect::<Vec<_>>());
    });
    assert_eq!(env.task("full").map(|t| t.1), Some("RUNNING".to_string()));
    env.remove("full");
    let _ = Command::new("umount").arg(&state).status();
}

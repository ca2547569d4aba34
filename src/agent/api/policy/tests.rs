use super::*;
use crate::agent::policy::engine::Engine as PolicyEngine;
use crate::agent::policy::observe::{Live, Observer, Options};
use crate::agent::policy::testing::*;
use crate::agent::policy::Qos;
use pb::policy_server::Policy as _;
use tonic::Code;

fn inventory(dir: &crate::testfs::FakeDir) -> Arc<Inventory> {
    Arc::new(Inventory::new(dir.path()))
}

fn off(dir: &crate::testfs::FakeDir) -> PolicyService {
    PolicyService {
        engine: None,
        inventory: inventory(dir),
    }
}

fn refused<T: std::fmt::Debug>(r: Result<Response<T>, Status>) {
    let s = r.unwrap_err();
    assert_eq!(
        (s.code(), s.message()),
        (Code::FailedPrecondition, OFF),
        "{s:?}"
    );
}

#[tokio::test]
async fn without_a_policy_file_every_call_says_the_engine_is_off() {
    let dir = crate::testfs::FakeDir::new("api-policy-off", &[]);
    let svc = off(&dir);
    refused(svc.status(Request::new(pb::StatusRequest {})).await);
    refused(svc.top(Request::new(pb::TopRequest {})).await);
    refused(svc.decisions(Request::new(pb::DecisionsRequest {})).await);
    refused(svc.pause(Request::new(pb::PauseRequest {})).await);
    refused(svc.resume(Request::new(pb::ResumeRequest {})).await);
    refused(
        svc.set_mode(Request::new(pb::SetModeRequest {
            mode: pb::Mode::DryRun.into(),
        }))
        .await,
    );
    refused(
        svc.profile(Request::new(pb::ProfileRequest {
            container: Some(pb::ContainerKey {
                namespace: String::new(),
                id: "web".into(),
            }),
        }))
        .await,
    );
    let watch = svc
        .watch_decisions(Request::new(pb::WatchDecisionsRequest {}))
        .await;
    assert_eq!(
        watch.err().map(|s| s.code()),
        Some(Code::FailedPrecondition)
    );
}

/// An engine over `web` (online) and `batch` (offline), served; not
/// ticked yet.
fn parts(dir: &crate::testfs::FakeDir) -> (PolicyService, PolicyEngine<FakeWorld>, FakeSource) {
    let world = FakeWorld::new(vec![
        online("web", Some(1000)),
        container("batch", Qos::Offline, Some(2000)),
    ]);
    let engine = PolicyEngine::new(
        Policy::default(),
        "/etc/tidal/policy.yaml".into(),
        None,
        world.clone(),
    );
    let src = FakeSource {
        world: world.clone(),
        series: Default::default(),
    };
    let mut opts = Options::new(&dir.path());
    opts.probes = false;
    let live = Live::new(
        Observer::new(opts, crate::traits::Catalogue::builtin()),
        inventory(dir),
        Duration::from_secs(10),
        Duration::from_secs(1),
    );
    let svc = PolicyService {
        engine: Some(Engine {
            handle: engine.handle(),
            observer: live.shared(),
            snapshots: live.snapshots(),
            windows: vec![Duration::from_secs(10), Duration::from_secs(60)],
            autoscaler: Arc::new(crate::agent::autoscale::Autoscaler::new(
                inventory(dir),
                Arc::new(crate::agent::resizer::Resizer::new(
                    inventory(dir),
                    crate::agent::metrics::Metrics::new().resizes(),
                )),
                live.shared(),
                crate::traits::Catalogue::builtin(),
                Duration::from_secs(30),
                0.25,
            )),
        }),
        inventory: inventory(dir),
    };
    (svc, engine, src)
}

/// The web probe slow from 10 s on.
fn slow_from_10s(src: &mut FakeSource, now: Duration) {
    probe(
        src,
        "web",
        now,
        if now.as_secs() >= 10 { 0.4 } else { 0.05 },
    )
}

/// An engine that throttled `batch` for `web`'s sake, served.
async fn served(dir: &crate::testfs::FakeDir) -> (PolicyService, Handle) {
    let (svc, mut engine, mut src) = parts(dir);
    drive(&mut engine, &mut src, 0, 20, slow_from_10s).await;
    let handle = engine.handle();
    (svc, handle)
}

#[tokio::test]
async fn watch_streams_each_decision_as_the_engine_makes_it() {
    use tokio_stream::StreamExt;
    let dir = crate::testfs::FakeDir::new("api-policy-watch", &[]);
    let (svc, mut engine, mut src) = parts(&dir);
    let mut stream = svc
        .watch_decisions(Request::new(pb::WatchDecisionsRequest {}))
        .await
        .unwrap()
        .into_inner();
    let records = drive(&mut engine, &mut src, 0, 20, slow_from_10s).await;
    assert!(records.len() >= 2, "{records:?}");
    for r in &records {
        let got = stream.next().await.unwrap().unwrap();
        assert_eq!(got, decision(r));
    }
}

#[tokio::test]
async fn the_status_says_mode_rules_health_suffering_overlays_and_decisions() {
    let dir = crate::testfs::FakeDir::new("api-policy-status", &[]);
    let (svc, handle) = served(&dir).await;
    let s = svc
        .status(Request::new(pb::StatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.mode(), pb::Mode::Enforce);
    assert!(!s.paused);
    assert_eq!(s.rules_from, "/etc/tidal/policy.yaml");
    assert_eq!(
        s.rules,
        vec![
            "throttle-offline",
            "boost-online",
            "give-back",
            "memory-squeeze"
        ]
    );
    assert_eq!((s.interval_ms, s.ticks), (1000, 21));
    assert_eq!(s.windows_ms, vec![10_000, 60_000]);
    assert!(s.healthy && s.trouble.is_empty(), "{s:?}");
    assert_eq!(s.suffering.len(), 1, "{s:?}");
    assert!(s.suffering[0].contains("k8s.io/web probe latency"), "{s:?}");
    let batch = pb::ContainerKey {
        namespace: "k8s.io".into(),
        id: "batch".into(),
    };
    assert_eq!(s.overlays.len(), 1, "{s:?}");
    let o = &s.overlays[0];
    assert_eq!(
        (o.container.as_ref(), o.cpu, o.memory, o.adopted),
        (Some(&batch), true, false, false)
    );
    assert!(!o.revisions.is_empty());
    let first = &s.last[0];
    assert_eq!(
        (first.rule.as_str(), first.outcome.as_str()),
        ("throttle-offline", "applied")
    );
    assert_eq!(first.revision, o.revisions[0]);
    assert!(first
        .reason
        .starts_with("throttle-offline: cpu 2000m -> 1500m"));
    let log = svc
        .decisions(Request::new(pb::DecisionsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .decisions;
    assert_eq!(log.len(), handle.decisions().len());
    assert_eq!(log[0], *first);

    // The controls answer the status as it is after them.
    let paused = svc.pause(Request::new(pb::PauseRequest {})).await.unwrap();
    assert!(paused.into_inner().paused && handle.status().paused);
    let resumed = svc
        .resume(Request::new(pb::ResumeRequest {}))
        .await
        .unwrap();
    assert!(!resumed.into_inner().paused);
    let dry = svc
        .set_mode(Request::new(pb::SetModeRequest {
            mode: pb::Mode::DryRun.into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.mode(), pb::Mode::DryRun);
    assert_eq!(handle.status().mode, Mode::DryRun);
    let bad = svc
        .set_mode(Request::new(pb::SetModeRequest { mode: 0 }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    // A container tidal does not run has no profile.
    let none = svc
        .profile(Request::new(pb::ProfileRequest {
            container: Some(pb::ContainerKey {
                namespace: String::new(),
                id: "nope".into(),
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::NotFound, "{none:?}");
    // top before the data source's first tick: no containers.
    let top = svc.top(Request::new(pb::TopRequest {})).await.unwrap();
    assert_eq!(top.into_inner().window_ms, 10_000);
}

#[test]
fn a_rollback_says_what_it_restored() {
    let r = Record {
        at: Duration::from_millis(23_750),
        key: key("batch"),
        rule: crate::agent::policy::decide::Rule::GiveBackCpu,
        reason: "give-back-cpu: cpu 844m -> 1055m".into(),
        outcome: Outcome::RolledBack {
            revision: 4,
            to: 3,
            revision_now: 5,
            why: "k8s.io/web suffers again".into(),
        },
    };
    let d = decision(&r);
    assert_eq!(
        (d.at_ms, d.rule.as_str(), d.outcome.as_str(), d.revision),
        (23_750, "give-back-cpu", "rolled-back", 4)
    );
    assert_eq!(
        d.detail,
        "k8s.io/web suffers again; restored as after revision 3, as revision 5"
    );
}

use super::*;
use crate::resize::{Limit, Update};

fn rev(n: u64, time: u64, source: &str, reason: &str, after: Update) -> history::Revision {
    history::Revision {
        revision: n,
        time,
        source: source.into(),
        reason: reason.into(),
        before: Update::default(),
        after,
    }
}

fn cpu(quota: u64) -> Update {
    Update {
        cpu_quota: Some(Limit::Value(quota)),
        cpu_period: Some(100_000),
        ..Default::default()
    }
}

fn act(back: bool, job: &str, at: i64) -> Act {
    Act {
        back,
        job: job.into(),
        at,
    }
}

#[test]
fn a_firing_is_recorded_once_its_revision_is_there() {
    let h = [
        rev(1, 100, "kubelet", "", cpu(100_000)),
        rev(2, 200, SOURCE, "morning", cpu(200_000)),
    ];
    assert!(recorded(&h, Resource::Cpu, &act(false, "morning", 200)));
    assert!(
        recorded(&h, Resource::Cpu, &act(false, "morning", 150)),
        "applied late"
    );
    // The same job's next firing, or another job: not yet.
    assert!(!recorded(&h, Resource::Cpu, &act(false, "morning", 300)));
    assert!(!recorded(&h, Resource::Cpu, &act(false, "evening", 200)));
    // Another writer's revision with the same reason is not ours.
    let h = [rev(1, 200, "operator", "morning", cpu(1))];
    assert!(!recorded(&h, Resource::Cpu, &act(false, "morning", 200)));
    // Whatever writer it displaced.
    let h = [rev(2, 200, SOURCE, "morning (displaces operator)", cpu(1))];
    assert!(recorded(&h, Resource::Cpu, &act(false, "morning", 200)));
    // Only on the resource the revision set.
    let h = [rev(2, 200, SOURCE, "morning", cpu(200_000))];
    assert!(!recorded(&h, Resource::Memory, &act(false, "morning", 200)));
    // An end is recorded by its own reason.
    let h = [rev(3, 900, SOURCE, "morning ended", cpu(100_000))];
    assert!(recorded(&h, Resource::Cpu, &act(true, "morning", 900)));
    assert!(!recorded(&h, Resource::Cpu, &act(false, "morning", 900)));
}

fn job(name: &str, cpu_millis: Option<u64>, memory_bytes: Option<u64>) -> Job {
    Job {
        name: name.into(),
        schedule: cron::Schedule::parse("0 8 * * *").unwrap(),
        schedule_text: "0 8 * * *".into(),
        zone: cron::Zone::Fixed(0),
        time_zone: String::new(),
        cpu_millis,
        memory_bytes,
        lasts: None,
    }
}

#[test]
fn changes_set_one_resource_and_say_so() {
    let j = job("j", Some(1500), Some(1 << 30));
    let c = set(&j, Resource::Cpu);
    assert_eq!((c.cpu_millis, c.memory_bytes), (Some(1500), None));
    assert_eq!(describe(&c, Resource::Cpu), "cpu 1500m");
    let m = set(&j, Resource::Memory);
    assert_eq!((m.cpu_millis, m.memory_bytes), (None, Some(1 << 30)));
    assert_eq!(describe(&m, Resource::Memory), "memory 1Gi");
    let lift = Change {
        lift_cpu: true,
        ..Default::default()
    };
    assert_eq!(describe(&lift, Resource::Cpu), "cpu unlimited");
}

fn spec(annotations: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "annotations": annotations })
}

#[test]
fn jobs_come_from_the_pods_annotation_checked_as_at_create() {
    let catalogue = Catalogue::builtin();
    let key = "trait.tidal.dev/cron-vertical-scaler";
    assert!(jobs_in(None, &catalogue).unwrap().is_empty());
    assert!(jobs_in(Some(&spec(serde_json::json!({}))), &catalogue)
        .unwrap()
        .is_empty());
    let good = r#"{"jobs":[{"name":"up","schedule":"*/10 * * * * *","cpu":"500m","duration":"5s"},
                            {"name":"down","schedule":"5/10 * * * * *","cpu":"250m","timeZone":"UTC"}]}"#;
    let jobs = jobs_in(Some(&spec(serde_json::json!({ key: good }))), &catalogue).unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        (jobs[0].cpu_millis, jobs[0].lasts, jobs[1].cpu_millis),
        (Some(500), Some(5), Some(250))
    );
    for (bad, why) in [
        (r#"{"jobs":[]}"#, "at least one job"),
        (
            r#"{"jobs":[{"name":"x","schedule":"61 * * * *","cpu":"1"}]}"#,
            "minute",
        ),
        (r#"{"jobs":[{"name":"x","schedule":"@daily"}]}"#, "neither"),
        (
            r#"{"jobs":[{"name":"x","schedule":"@daily","cpu":"1","duration":"8d"}]}"#,
            "at most 7d",
        ),
        ("not json", "annotation"),
    ] {
        let e = jobs_in(Some(&spec(serde_json::json!({ key: bad }))), &catalogue).unwrap_err();
        assert!(e.contains(key) && e.contains(why), "{bad}: {e}");
    }
}

use super::known::{Known, Stamp, Tail};
use super::*;
use crate::agent::declared::Layers;
use crate::cgroups::Files;
use crate::resize::{Limit, Update};

#[test]
fn containers_are_listed_and_found_from_the_state_dir() {
    let root = crate::testfs::FakeDir::new("list", &[]);
    let state = |id: &str| {
        format!(
            r#"{{"ociVersion":"1.1.0","id":"{id}","status":"running","pid":999999999,"bundle":"/b/{id}"}}"#
        )
    };
    for (ns, id) in [("default", "web"), ("default", "db"), ("other", "db")] {
        let c = root.join(ns).join(id);
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("state.json"), state(id)).unwrap();
    }
    std::fs::create_dir_all(root.join("s")).unwrap(); // shim sockets are skipped
    std::fs::create_dir_all(root.join(".api")).unwrap(); // so is tidald's socket
    let inv = Inventory::new(root.path());
    let all = inv.list().unwrap();
    let ids: Vec<_> = all
        .iter()
        .map(|c| format!("{}/{}", c.info.namespace, c.info.id))
        .collect();
    assert_eq!(ids, ["default/db", "default/web", "other/db"]);
    assert!(
        all.iter().all(|c| c.info.status == "stopped"),
        "pid is not alive"
    );
    let name = |ns: Option<&str>, id: &str| Name {
        namespace: ns.map(String::from),
        id: id.into(),
    };
    assert_eq!(
        inv.get(&name(None, "web")).unwrap().info.bundle,
        PathBuf::from("/b/web")
    );
    let e = inv.get(&name(None, "db")).unwrap_err();
    assert!(
        matches!(&e, Error::Ambiguous { namespaces, .. } if namespaces == &["default", "other"]),
        "{e}"
    );
    assert_eq!(
        inv.get(&name(Some("other"), "db")).unwrap().info.namespace,
        "other"
    );
    assert!(matches!(
        inv.get(&name(None, "nope")),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        inv.get(&name(None, "../etc")).unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    assert!(matches!(
        inv.route(&name(Some("default"), "web")),
        Ok(Route { stopped: true, .. })
    ));
    // A container whose state went away is gone from the next listing.
    std::fs::remove_dir_all(root.join("default").join("web")).unwrap();
    assert_eq!(inv.list().unwrap().len(), 2);
    assert!(matches!(
        inv.get(&name(None, "web")),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn a_shim_address_that_could_not_be_read_is_read_again() {
    let root = crate::testfs::FakeDir::new("address", &[]);
    let bundle = root.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let c = root.join("default").join("web");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        c.join("state.json"),
        format!(
            r#"{{"ociVersion":"1.1.0","id":"web","status":"running","pid":999999999,"bundle":"{}"}}"#,
            bundle.display()
        ),
    )
    .unwrap();
    let inv = Inventory::new(root.path());
    let web = Name {
        namespace: None,
        id: "web".into(),
    };
    // Found before its shim's address could be read.
    assert!(inv.route(&web).unwrap().address.is_err());
    // Being written: empty is no address either.
    std::fs::write(bundle.join("address"), "").unwrap();
    assert!(inv.route(&web).unwrap().address.is_err());
    std::fs::write(bundle.join("address"), "unix:///run/s/1\n").unwrap();
    assert_eq!(inv.route(&web).unwrap().address.unwrap(), "unix:///run/s/1");
}

/// A container being changed is looked at through its state file kept
/// open (`after` keeps it): a state rewritten in place (paused), another
/// renamed over it (another container under the same id) and a removed one
/// are each seen on the next call.
#[test]
fn a_changed_containers_state_is_seen_through_its_kept_file() {
    let root = crate::testfs::FakeDir::new("kept-state", &[]);
    let dir = root.join("default").join("web");
    std::fs::create_dir_all(&dir).unwrap();
    // This process stands in for the container's, so that it is running.
    let state = |status: &str, bundle: &str| {
        format!(
            r#"{{"ociVersion":"1.1.0","id":"web","status":"{status}","pid":{},"bundle":"{bundle}"}}"#,
            std::process::id()
        )
    };
    let file = dir.join("state.json");
    std::fs::write(&file, state("running", "/b/1")).unwrap();
    let inv = Inventory::new(root.path());
    let web = Name {
        namespace: Some("default".into()),
        id: "web".into(),
    };
    let changed = || {
        let t = inv.route(&web).unwrap();
        assert!(!t.stopped);
        inv.after(&t).unwrap()
    };
    assert_eq!(changed().info.status, "running");
    std::fs::write(&file, state("paused", "/b/1")).unwrap();
    assert_eq!(inv.get(&web).unwrap().info.status, "paused");
    assert_eq!(changed().info.status, "paused");
    std::fs::write(dir.join("state.new"), state("running", "/b/2")).unwrap();
    std::fs::rename(dir.join("state.new"), &file).unwrap();
    let now = changed();
    assert_eq!(
        (now.info.status.as_str(), now.info.bundle),
        ("running", PathBuf::from("/b/2"))
    );
    std::fs::remove_file(&file).unwrap();
    assert!(matches!(inv.route(&web), Err(Error::NotFound { .. })));
}

/// What tidald layers revision by revision (and after compactions), read
/// either way (`catch_up`, `view_after_change`), is what
/// `declared::declared` reads from the whole history.
#[test]
fn declared_follows_the_history_through_compactions() {
    let root = crate::testfs::FakeDir::new("route", &[]);
    let bundle = root.join("bundle");
    let dir = root.join("default").join("web");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("state.json"), "{}").unwrap();
    std::fs::write(
        bundle.join("config.json"),
        r#"{"linux":{"resources":{"cpu":{"quota":50000,"period":100000},"memory":{"limit":268435456}}}}"#,
    )
    .unwrap();
    let info = ContainerInfo {
        id: "web".into(),
        namespace: "default".into(),
        pid: 0,
        status: "running".into(),
        bundle,
        limits: Default::default(),
        usage: Default::default(),
    };
    let mut k = Known {
        state: Stamp::of(&dir.join("state.json")).unwrap(),
        info: info.clone(),
        cgroup: None,
        address: Err("none".into()),
        spec_read: false,
        layers: Layers::new(None),
        tail: Tail::default(),
        files: Files::kept(),
        used: 0,
        process: crate::sys::Watched::new(info.pid),
    };
    let file = history::path(&dir);
    let mut log = history::Log::open(&file).unwrap();
    // Compactions at revisions 1024 and 2048 (the second drops the early
    // cpusets' setters).
    for i in 0..2100u64 {
        let (source, after) = match i % 5 {
            0 => (
                "kubelet",
                Update {
                    cpu_quota: Some(Limit::Value(10_000 + i)),
                    memory_limit: Some(Limit::Value(1 << 28)),
                    ..Default::default()
                },
            ),
            1 | 2 => (
                "operator",
                Update {
                    cpu_quota: Some(Limit::Value(20_000 + i)),
                    ..Default::default()
                },
            ),
            3 => (
                "trait:scaler",
                Update {
                    memory_limit: Some(Limit::Value(1 << 27)),
                    ..Default::default()
                },
            ),
            // Only early on: a value whose setters a compaction drops.
            _ if i < 100 => (
                "policy",
                Update {
                    cpuset_cpus: Some("0".into()),
                    ..Default::default()
                },
            ),
            _ => (
                "kubelet",
                Update {
                    cpu_period: Some(100_000),
                    ..Default::default()
                },
            ),
        };
        log.append(history::Revision {
            revision: 0,
            time: 0,
            source: source.into(),
            reason: String::new(),
            before: Update::default(),
            after,
        })
        .unwrap();
        if i % 7 == 0 || (1020..1030).contains(&i) || (2044..2054).contains(&i) || i == 2099 {
            // As a read after a change (through the history file read
            // last time, which a compaction may have replaced), or from
            // the file the path names now.
            if i % 2 == 0 {
                assert_eq!(k.view_after_change(&root).last_revision, i + 1);
            } else {
                k.catch_up(&root);
            }
            assert_eq!(k.tail.last, i + 1);
            assert_eq!(
                k.layers.declared(),
                super::super::declared::declared(&root, &info),
                "after revision {}",
                i + 1
            );
        }
    }
    assert!(
        history::read(&file).unwrap()[0].revision > 1000,
        "compacted twice"
    );
}

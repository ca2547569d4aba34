//! What Kubernetes declared for a container (pod, name, QoS, limits, from
//! its bundle's spec) and the changes layered on it now, built up from its
//! revision history one revision at a time. Pure: the caller reads the
//! files.

use std::collections::BTreeMap;

use serde::Serialize;

use super::node::Limits;
use crate::annotations;
use crate::resize::{history, Limit, Update};

/// What Kubernetes declared for a container, from its bundle's spec, and the
/// changes now layered on the declared limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Declared {
    /// The pod as "NAMESPACE/NAME"; empty for containers not made through
    /// CRI (e.g. with ctr).
    pub pod: String,
    /// The container's name in its pod.
    pub name: String,
    /// The pod's sandbox (pause) container.
    pub sandbox: bool,
    /// `online` or `offline`, from the pod's `tidal.dev/qos`; else empty.
    pub qos: String,
    /// The spec's limits with kubelet's resizes applied (its
    /// UpdateContainerResources changes what Kubernetes declared); None when
    /// the spec cannot be read.
    pub limits: Option<Limits>,
    /// Who made the changes that are layered on the declared limits now
    /// (operator, policy, trait:NAME), each once, oldest first: the sources of
    /// the latest changes of values that kubelet has not set again since and
    /// that differ from the declared ones.
    pub overlays: Vec<String>,
    /// Who set each limit last, by the history (kubelet included): "cpu"
    /// (the CFS quota), "cpu.weight", "memory" (the limit) and "memory.high"
    /// -> source. What decides who owns a limit (`agent::owner`).
    pub writers: std::collections::BTreeMap<String, String>,
}

/// Reads what was declared for container `c` (whose state lives under
/// `state_dir`): its bundle's `config.json` and its revision history. A
/// missing or unreadable spec leaves pod, name, QoS and limits empty.
#[cfg(test)]
pub fn declared(state_dir: &std::path::Path, c: &super::node::ContainerInfo) -> Declared {
    let spec = std::fs::read(c.bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let revisions = history::read(&history::path(&state_dir.join(&c.namespace).join(&c.id)))
        .unwrap_or_default();
    declared_from(spec.as_ref(), &revisions)
}

/// `declared` from a parsed spec (None: unreadable) and the history.
#[cfg(test)]
fn declared_from(spec: Option<&serde_json::Value>, revisions: &[history::Revision]) -> Declared {
    let mut layers = Layers::new(spec);
    for r in revisions {
        layers.push(r);
    }
    layers.declared()
}

/// What was declared for a container, built up one revision at a time (so
/// that tidald need not re-read a long history after each change): the
/// spec's part; the latest of kubelet's revisions to set each declared
/// limit; and for each value any revision set, the latest revision that set
/// it. Revisions are known by their numbers, so those a compaction dropped
/// can be forgotten again (`drop_through`).
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// Pod, name, sandbox, QoS and limits as the spec declares them; None
    /// when the spec could not be read.
    spec: Option<Declared>,
    /// Kubelet's latest value of each declared limit: (revision, value).
    kubelet_quota: Option<(u64, Option<u64>)>,
    kubelet_period: Option<(u64, u64)>,
    kubelet_cpuset: Option<(u64, String)>,
    kubelet_memory: Option<(u64, Option<u64>)>,
    kubelet_shares: Option<(u64, u64)>,
    kubelet_memory_high: Option<(u64, Limit)>,
    /// Value (see `values`) -> (revision, its source, what it set).
    latest: BTreeMap<String, (u64, String, serde_json::Value)>,
}

impl Layers {
    /// Nothing layered yet on `spec` (None: unreadable).
    pub fn new(spec: Option<&serde_json::Value>) -> Layers {
        let spec = spec.map(|spec| {
            let note = |k: &str| {
                spec.pointer("/annotations")
                    .and_then(|a| a.get(k))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
            };
            let (pod_ns, pod_name) = (
                note(annotations::CRI_SANDBOX_NAMESPACE),
                note(annotations::CRI_SANDBOX_NAME),
            );
            Declared {
                pod: if pod_ns.is_empty() || pod_name.is_empty() {
                    String::new()
                } else {
                    format!("{pod_ns}/{pod_name}")
                },
                name: note(annotations::CRI_CONTAINER_NAME).to_string(),
                sandbox: note(annotations::CRI_CONTAINER_TYPE) == "sandbox",
                qos: match note(annotations::QOS) {
                    q @ ("online" | "offline") => q.to_string(),
                    // Else the class of the pod's qos trait (checked at create).
                    _ => serde_json::from_str::<serde_json::Value>(note(&format!(
                        "{}qos",
                        annotations::TRAIT_PREFIX
                    )))
                    .ok()
                    .and_then(|t| t.get("class")?.as_str().map(String::from))
                    .filter(|q| q == "online" || q == "offline")
                    .unwrap_or_default(),
                },
                limits: Some(spec_limits(spec)),
                overlays: Vec::new(),
                writers: Default::default(),
            }
        });
        Layers {
            spec,
            ..Default::default()
        }
    }

    /// Layers the history's next revision (numbers only grow) on what is there.
    pub fn push(&mut self, r: &history::Revision) {
        let n = r.revision;
        if r.source == "kubelet" {
            let u = &r.after;
            if let Some(q) = u.cpu_quota {
                self.kubelet_quota = Some((n, q.value()));
            }
            if let Some(p) = u.cpu_period.filter(|&p| p > 0) {
                self.kubelet_period = Some((n, p));
            }
            if let Some(set) = &u.cpuset_cpus {
                self.kubelet_cpuset = Some((n, set.clone()));
            }
            if let Some(m) = u.memory_limit {
                self.kubelet_memory = Some((n, m.value()));
            }
            if let Some(w) = u.cpu_shares {
                self.kubelet_shares = Some((n, w));
            }
            if let Some(h) = u.unified.get(MEMORY_HIGH).and_then(|h| parse_limit(h)) {
                self.kubelet_memory_high = Some((n, h));
            }
        }
        for (field, v) in values(&r.after) {
            self.latest.insert(field, (n, r.source.clone(), v));
        }
        // Memory plus swap equal to the memory limit is no swap, as
        // Kubernetes declares every container (cgroup v1 moves it along with
        // the limit): not a layer of its own.
        if r.after.memory_swap.is_some() && r.after.memory_swap == r.after.memory_limit {
            self.latest.remove("memory_swap");
        }
    }

    /// Forgets revisions numbered up to `n` (dropped from the history), as
    /// if they had never been layered: what only they set is as declared.
    pub fn drop_through(&mut self, n: u64) {
        fn kept<T>(v: &mut Option<(u64, T)>, n: u64) {
            if v.as_ref().is_some_and(|(r, _)| *r <= n) {
                *v = None;
            }
        }
        kept(&mut self.kubelet_quota, n);
        kept(&mut self.kubelet_period, n);
        kept(&mut self.kubelet_cpuset, n);
        kept(&mut self.kubelet_memory, n);
        kept(&mut self.kubelet_shares, n);
        kept(&mut self.kubelet_memory_high, n);
        self.latest.retain(|_, (r, _, _)| *r > n);
    }

    /// The spec's limits with kubelet's revisions applied.
    fn limits(&self) -> Option<Limits> {
        let mut l = self.spec.as_ref()?.limits.clone()?;
        if let Some((_, q)) = self.kubelet_quota {
            l.cpu_quota_us = q;
        }
        if let Some((_, p)) = self.kubelet_period {
            l.cpu_period_us = p;
        }
        if let Some((_, set)) = &self.kubelet_cpuset {
            l.cpuset = set.clone();
        }
        if let Some((_, m)) = self.kubelet_memory {
            l.memory_bytes = m;
        }
        if let Some((_, w)) = self.kubelet_shares {
            l.cpu_shares = Some(w);
        }
        if let Some((_, h)) = self.kubelet_memory_high {
            l.memory_high = Some(h);
        }
        Some(l)
    }

    /// Who set each limit last (`Declared::writers`): the CPU limit (its
    /// quota), its weight, the memory limit and `memory.high`, each on its
    /// own, so that a weight or `memory.high` change takes no limit over.
    pub fn writers(&self) -> std::collections::BTreeMap<String, String> {
        use super::owner::{CPU, CPU_WEIGHT, MEMORY, MEMORY_HIGH};
        [
            (CPU, "cpu_quota"),
            (CPU_WEIGHT, "cpu_shares"),
            (MEMORY, "memory_limit"),
            (MEMORY_HIGH, "unified.memory.high"),
        ]
        .into_iter()
        .filter_map(|(value, field)| {
            let (_, source, _) = self.latest.get(field)?;
            Some((value.to_string(), source.clone()))
        })
        .collect()
    }

    /// What was declared, with the sources of the changes layered on it now:
    /// the latest changes of values that kubelet has not set again since and
    /// that differ from the declared ones, each source once, oldest first.
    pub fn declared(&self) -> Declared {
        let limits = self.limits();
        let declared = limits
            .as_ref()
            .map(|l| values(&as_update(l)))
            .unwrap_or_default();
        let mut layered: Vec<(u64, &str)> = self
            .latest
            .iter()
            .filter(|(field, (_, source, v))| {
                source != "kubelet" && !same(field, declared.get(*field), v)
            })
            .map(|(_, (n, source, _))| (*n, source.as_str()))
            .collect();
        layered.sort_unstable();
        let mut overlays: Vec<String> = Vec::new();
        for (_, source) in layered {
            if !overlays.iter().any(|s| s == source) {
                overlays.push(source.to_string());
            }
        }
        Declared {
            limits,
            overlays,
            writers: self.writers(),
            ..self.spec.clone().unwrap_or_default()
        }
    }
}

/// The CFS period the kernel uses when none is set.
const DEFAULT_PERIOD_US: u64 = 100_000;

/// cgroup v2's throttling memory limit, as OCI's `unified` map names it.
const MEMORY_HIGH: &str = "memory.high";

/// A cgroup v2 limit as text: "max" or a number.
fn parse_limit(t: &str) -> Option<Limit> {
    match t.trim() {
        "max" => Some(Limit::Max),
        t => t.parse().ok().map(Limit::Value),
    }
}

/// The spec's `linux.resources`: cpu quota and period, cpuset, memory limit,
/// CPU shares and `memory.high` (from `unified`). Absent (or zero or
/// negative, as OCI spells "not set" and "unlimited") means unlimited.
fn spec_limits(spec: &serde_json::Value) -> Limits {
    let res = |p: &str| spec.pointer(&format!("/linux/resources/{p}"));
    let positive = |p: &str| res(p).and_then(|v| v.as_i64()).filter(|&v| v > 0);
    Limits {
        cpu_quota_us: positive("cpu/quota").map(|q| q as u64),
        cpu_period_us: positive("cpu/period").map_or(DEFAULT_PERIOD_US, |p| p as u64),
        cpuset: res("cpu/cpus")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string(),
        memory_bytes: positive("memory/limit").map(|m| m as u64),
        cpu_shares: positive("cpu/shares").map(|w| w as u64),
        memory_high: res("unified")
            .and_then(|u| u.get(MEMORY_HIGH)?.as_str())
            .and_then(parse_limit),
    }
}

/// The limits as an update that sets each of them (no cpuset or shares when
/// none; `memory.high` is "max" unless declared).
fn as_update(l: &Limits) -> Update {
    let high = match l.memory_high {
        Some(Limit::Value(v)) => v.to_string(),
        _ => "max".to_string(),
    };
    Update {
        cpu_quota: Some(l.cpu_quota_us.map_or(Limit::Max, Limit::Value)),
        cpu_period: Some(l.cpu_period_us),
        cpuset_cpus: (!l.cpuset.is_empty()).then(|| l.cpuset.clone()),
        memory_limit: Some(l.memory_bytes.map_or(Limit::Max, Limit::Value)),
        cpu_shares: l.cpu_shares,
        unified: BTreeMap::from([(MEMORY_HIGH.to_string(), high)]),
        ..Default::default()
    }
}

/// Each value an update sets, by field name (map fields entry by entry, as
/// `hugetlb.2MB`), in serde's terms so that every field of `Update` counts.
fn values(u: &Update) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(u) else {
        return out;
    };
    for (field, v) in fields {
        match v {
            serde_json::Value::Null => {}
            serde_json::Value::Object(map) if field == "hugetlb" || field == "unified" => {
                out.extend(map.into_iter().map(|(k, v)| (format!("{field}.{k}"), v)))
            }
            v => {
                out.insert(field, v);
            }
        }
    }
    out
}

/// Whether two CPU weights in `cpu.shares` terms are one `cpu.weight`
/// (cgroup v2 keeps the weight; shares read back from it round).
pub fn same_weight(a: u64, b: u64) -> bool {
    use crate::cgroups::v2::shares_to_weight;
    a == b || shares_to_weight(a) == shares_to_weight(b)
}

/// Whether a value read back from the cgroup is the declared one. The
/// kernel rounds a memory limit down to its page size (64 KiB at most).
fn same(field: &str, declared: Option<&serde_json::Value>, live: &serde_json::Value) -> bool {
    let Some(declared) = declared else {
        return false;
    };
    match (field, declared["value"].as_u64(), live["value"].as_u64()) {
        ("memory_limit", Some(d), Some(l)) => l <= d && d - l < 64 << 10,
        // cgroup v2 keeps a weight, which reads back as slightly other shares.
        ("cpu_shares", ..) => match (declared.as_u64(), live.as_u64()) {
            (Some(d), Some(l)) => same_weight(d, l),
            _ => declared == live,
        },
        _ => declared == live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::node::{ContainerInfo, Usage};
    use std::path::Path;

    /// A memory change whose memsw followed it (v1, no swap) is one layer;
    /// rolled back to the declared limit, no layer is left, although the
    /// revisions carry memory+swap values the spec never mentions.
    #[test]
    fn swap_that_follows_the_memory_limit_is_no_layer() {
        use crate::resize::{Limit, Update};
        let spec = serde_json::json!({"linux": {"resources": {"memory": {"limit": 134217728}}}});
        let mut layers = Layers::new(Some(&spec));
        let mem = |mib: u64| Some(Limit::Value(mib << 20));
        let mut rev = |n: u64, mib: u64, swap: Option<Limit>| {
            layers.push(&history::Revision {
                revision: n,
                time: 0,
                source: "operator".into(),
                reason: String::new(),
                before: Update::default(),
                after: Update {
                    memory_limit: mem(mib),
                    memory_swap: swap,
                    ..Default::default()
                },
            });
            layers.declared().overlays
        };
        assert_eq!(rev(1, 96, mem(96)), ["operator"]);
        assert_eq!(rev(2, 128, mem(128)), Vec::<String>::new());
        // Swap given to the container is a layer of its own.
        assert_eq!(rev(3, 128, mem(256)), ["operator"]);
        assert_eq!(rev(4, 128, mem(128)), Vec::<String>::new());
    }

    /// Who set each limit last, each on its own; kubelet included, and
    /// forgotten with a compaction.
    #[test]
    fn writers_are_the_latest_source_of_each_limit() {
        use crate::resize::{Limit, Update};
        let mut layers = Layers::new(Some(&serde_json::json!({})));
        let mut push = |n: u64, source: &str, after: Update| {
            layers.push(&history::Revision {
                revision: n,
                time: 0,
                source: source.into(),
                reason: String::new(),
                before: Update::default(),
                after,
            });
            layers.writers()
        };
        let w = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let quota = Update {
            cpu_quota: Some(Limit::Value(50_000)),
            ..Default::default()
        };
        assert_eq!(push(1, "kubelet", quota.clone()), w(&[("cpu", "kubelet")]));
        let shares = Update {
            cpu_shares: Some(512),
            ..Default::default()
        };
        assert_eq!(
            push(2, "policy", shares),
            w(&[("cpu", "kubelet"), ("cpu.weight", "policy")]),
            "a weight takes no limit over"
        );
        let cron = push(3, "trait:cron-vertical-scaler", quota);
        assert_eq!(cron["cpu"], "trait:cron-vertical-scaler");
        let mut high = Update::default();
        high.unified.insert("memory.high".into(), "1000".into());
        let squeezed = push(4, "policy", high);
        assert_eq!(squeezed["memory.high"], "policy");
        assert!(!squeezed.contains_key("memory"), "nor does memory.high");
        let memory = Update {
            memory_limit: Some(Limit::Value(1 << 30)),
            ..Default::default()
        };
        assert_eq!(push(5, "operator", memory)["memory"], "operator");
        layers.drop_through(5);
        assert!(layers.writers().is_empty());
    }

    /// A container `default/web` under state dir `root` whose bundle holds
    /// `spec` as config.json (none: no config.json).
    fn container(root: &Path, spec: Option<&str>) -> ContainerInfo {
        let bundle = root.join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::create_dir_all(root.join("default").join("web")).unwrap();
        if let Some(spec) = spec {
            std::fs::write(bundle.join("config.json"), spec).unwrap();
        }
        ContainerInfo {
            id: "web".into(),
            namespace: "default".into(),
            pid: 0,
            status: "running".into(),
            bundle,
            limits: Limits::default(),
            usage: Usage::default(),
        }
    }

    /// Appends a revision by `source` that set `after`.
    fn revise(root: &Path, source: &str, after: Update) {
        let f = history::path(&root.join("default").join("web"));
        let rev = history::Revision {
            revision: 0,
            time: 0,
            source: source.into(),
            reason: String::new(),
            before: Update::default(),
            after,
        };
        history::append(&f, history::last(&f).unwrap(), rev).unwrap();
    }

    fn cpu(quota: u64) -> Update {
        Update {
            cpu_quota: Some(Limit::Value(quota)),
            cpu_period: Some(100_000),
            ..Default::default()
        }
    }

    fn mem(bytes: u64) -> Update {
        Update {
            memory_limit: Some(Limit::Value(bytes)),
            ..Default::default()
        }
    }

    fn cpuset(cpus: &str) -> Update {
        Update {
            cpuset_cpus: Some(cpus.into()),
            ..Default::default()
        }
    }

    /// (cpu millis, memory bytes, cpuset) declared, and the overlays.
    fn summary(d: &Declared) -> ((Option<u64>, Option<u64>, String), Vec<String>) {
        let l = d.limits.clone().expect("declared limits");
        (
            (l.cpu_millis(), l.memory_bytes, l.cpuset),
            d.overlays.clone(),
        )
    }

    const POD_SPEC: &str = r#"{
        "ociVersion": "1.1.0",
        "annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": "app",
            "io.kubernetes.cri.sandbox-name": "web-7d4b",
            "io.kubernetes.cri.sandbox-namespace": "shop",
            "tidal.dev/qos": "online"
        },
        "linux": {"resources": {
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1"},
            "memory": {"limit": 268435456}
        }}
    }"#;

    #[test]
    fn the_spec_declares_pod_qos_and_limits() {
        let root = crate::testfs::FakeDir::new("declared-spec", &[]);
        let d = declared(&root, &container(&root, Some(POD_SPEC)));
        assert_eq!(
            (d.pod.as_str(), d.name.as_str(), d.sandbox, d.qos.as_str()),
            ("shop/web-7d4b", "app", false, "online")
        );
        assert_eq!(
            d.limits,
            Some(Limits {
                cpu_quota_us: Some(50_000),
                cpu_period_us: 100_000,
                cpuset: "0-1".into(),
                memory_bytes: Some(256 << 20),
                cpu_shares: Some(512),
                ..Default::default()
            })
        );
        assert!(d.overlays.is_empty());

        // A pod's sandbox; an unknown QoS class is no class.
        let sandbox = POD_SPEC
            .replace(r#""container","#, r#""sandbox","#)
            .replace("online", "gold");
        let d = declared(&root, &container(&root, Some(&sandbox)));
        assert!(d.sandbox);
        assert_eq!(d.qos, "");
        // Without the annotation, the qos trait's class.
        let traited = POD_SPEC.replace(
            r#""tidal.dev/qos": "online""#,
            r#""trait.tidal.dev/qos": "{\"class\": \"offline\"}""#,
        );
        let d = declared(&root, &container(&root, Some(&traited)));
        assert_eq!(d.qos, "offline");

        // ctr's containers have no pod; no resources means unlimited.
        let d = declared(
            &root,
            &container(&root, Some(r#"{"ociVersion":"1.1.0","linux":{}}"#)),
        );
        assert_eq!(
            (d.pod.as_str(), d.name.as_str(), d.qos.as_str()),
            ("", "", "")
        );
        assert_eq!(summary(&d).0, (None, None, String::new()));
        // -1 (and 0) are OCI's "unlimited" and "not set".
        let d = declared(
            &root,
            &container(
                &root,
                Some(r#"{"linux":{"resources":{"cpu":{"quota":-1},"memory":{"limit":-1}}}}"#),
            ),
        );
        assert_eq!(summary(&d).0, (None, None, String::new()));

        // A missing or unreadable spec leaves everything empty.
        std::fs::remove_file(root.join("bundle/config.json")).unwrap();
        assert_eq!(
            declared(&root, &container(&root, None)),
            Declared::default()
        );
        let d = declared(&root, &container(&root, Some("{not json")));
        assert_eq!((d.limits, d.pod), (None, String::new()));
    }

    #[test]
    fn kubelet_changes_the_declared_limits_and_others_overlay_them() {
        let root = crate::testfs::FakeDir::new("declared-history", &[]);
        let c = container(&root, Some(POD_SPEC));
        let now = || summary(&declared(&root, &c));
        let spec = (Some(500), Some(256 << 20), "0-1".to_string());
        assert_eq!(now(), (spec.clone(), vec![]));

        // kubelet's UpdateContainerResources changes what was declared.
        revise(
            &root,
            "kubelet",
            Update {
                memory_limit: Some(Limit::Value(96 << 20)),
                ..cpu(30_000)
            },
        );
        let kube = (Some(300), Some(96 << 20), "0-1".to_string());
        assert_eq!(now(), (kube.clone(), vec![]));

        // An operator's change is an overlay; the declared limits stay.
        revise(&root, "operator", cpu(20_000));
        assert_eq!(now(), (kube.clone(), vec!["operator".to_string()]));
        revise(&root, "trait:scaler", mem(64 << 20));
        revise(&root, "operator", cpu(25_000));
        assert_eq!(
            now(),
            (
                kube,
                vec!["trait:scaler".to_string(), "operator".to_string()]
            ),
            "each source once, in the order of its oldest change still in effect"
        );

        // kubelet setting those values again clears the overlays.
        revise(
            &root,
            "kubelet",
            Update {
                memory_limit: Some(Limit::Value(128 << 20)),
                ..cpu(40_000)
            },
        );
        let kube = (Some(400), Some(128 << 20), "0-1".to_string());
        assert_eq!(now(), (kube.clone(), vec![]));

        // ...but only the values it sets: an operator's cpuset outlives
        // kubelet's memory change.
        revise(&root, "operator", cpuset("0"));
        revise(&root, "kubelet", mem(192 << 20));
        let kube = (Some(400), Some(192 << 20), "0-1".to_string());
        assert_eq!(now(), (kube.clone(), vec!["operator".to_string()]));

        // A change back to the declared values (a rollback) is no overlay.
        revise(&root, "operator", cpuset("0-1"));
        assert_eq!(now(), (kube, vec![]));
    }

    #[test]
    fn a_memory_limit_rounded_to_pages_is_still_the_declared_one() {
        let root = crate::testfs::FakeDir::new("declared-pages", &[]);
        // 100M is no multiple of the page size: the kernel keeps 99999744.
        let c = container(
            &root,
            Some(r#"{"linux":{"resources":{"memory":{"limit":100000000}}}}"#),
        );
        revise(&root, "operator", mem(64 << 20));
        assert_eq!(declared(&root, &c).overlays, vec!["operator".to_string()]);
        revise(&root, "operator", mem(99_999_744));
        assert!(declared(&root, &c).overlays.is_empty());
        assert_eq!(
            declared(&root, &c).limits.unwrap().memory_bytes,
            Some(100_000_000)
        );
    }
}

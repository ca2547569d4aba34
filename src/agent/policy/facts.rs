//! What the command center knows of a container besides its signals
//! (`Container`): its QoS class, what Kubernetes declared and the overlays
//! on it (from tidald's inventory), and what its pod's `qos` trait allows:
//! the floors (`minCPU`, `minMemory`) and the latency objective with its
//! probe. The trait is read from the container's bundle once per container
//! (`QosFacts::read`), and validated as strictly as at create: a pod
//! annotation is untrusted, and a `qos` trait this node cannot read makes
//! the container one the engine never touches (its floors are unknown).

use std::path::Path;

use serde_json::Value;

use super::{Container, Key, Objective, Qos};
use crate::agent::inventory;
use crate::annotations::TRAIT_PREFIX;
use crate::traits::Catalogue;

/// What a container's pod annotations say for the policy engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QosFacts {
    pub min_cpu_millis: Option<u64>,
    pub min_memory_bytes: Option<u64>,
    pub objective: Option<Objective>,
    /// Why the `qos` trait could not be used, if it could not: the engine
    /// leaves such a container alone.
    pub problem: Option<String>,
}

impl QosFacts {
    /// The facts in the spec's annotations (None: unreadable spec).
    pub fn from_spec(spec: Option<&Value>, catalogue: &Catalogue) -> QosFacts {
        let annotation = format!("{TRAIT_PREFIX}qos");
        let Some(text) = spec
            .and_then(|s| s.pointer("/annotations"))
            .and_then(|a| a.get(&annotation))
            .and_then(Value::as_str)
        else {
            return QosFacts::default();
        };
        let refused = |why: String| QosFacts {
            problem: Some(format!("annotation {annotation}: {why}")),
            ..Default::default()
        };
        let Some(def) = catalogue.get("qos") else {
            return refused("this node's trait catalogue has no qos trait".into());
        };
        let t = match crate::traits::parse_properties(def, text) {
            Ok(t) => t,
            Err(e) => return refused(e),
        };
        let objective = match crate::traits::qos_objective(&t) {
            Ok(o) => o,
            Err(e) => return refused(e),
        };
        QosFacts {
            min_cpu_millis: t
                .str("minCPU")
                .and_then(|c| crate::quantity::parse_cpu(c).ok()),
            min_memory_bytes: t
                .str("minMemory")
                .and_then(|m| crate::quantity::parse_memory(m).ok()),
            objective,
            problem: None,
        }
    }

    /// The facts of the container whose bundle is `bundle` (its
    /// `config.json`).
    pub fn read(bundle: &Path, catalogue: &Catalogue) -> QosFacts {
        let spec = std::fs::read(bundle.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        QosFacts::from_spec(spec.as_ref(), catalogue)
    }
}

/// The class in `tidal.dev/qos` or the `qos` trait (the inventory's
/// `Declared::qos`), as the engine uses it: a pod's sandbox (pause)
/// container, or a container whose `qos` trait is unusable, has none.
pub fn qos(declared_qos: &str, sandbox: bool, facts: &QosFacts) -> Qos {
    if sandbox || facts.problem.is_some() {
        return Qos::None;
    }
    match declared_qos {
        "online" => Qos::Online,
        "offline" => Qos::Offline,
        _ => Qos::None,
    }
}

/// The key of an inventory entry.
pub fn key(v: &inventory::View) -> Key {
    Key {
        namespace: v.info.namespace.clone(),
        id: v.info.id.clone(),
    }
}

/// The command center's `Container` for inventory entry `v`, whose pod's
/// annotations say `facts`.
pub fn container(v: &inventory::View, facts: &QosFacts) -> Container {
    let qos = qos(&v.declared.qos, v.declared.sandbox, facts);
    Container {
        key: key(v),
        qos,
        pod: v.declared.pod.clone(),
        live: v.info.limits.clone(),
        declared: v.declared.limits.clone(),
        min_cpu_millis: facts.min_cpu_millis,
        min_memory_bytes: facts.min_memory_bytes,
        // Only an online container's latency is an objective.
        objective: facts.objective.clone().filter(|_| qos == Qos::Online),
        overlays: v.declared.overlays.clone(),
        writers: v.declared.writers.clone(),
        last_revision: v.last_revision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::policy::Probe;
    use crate::annotations::QOS;
    use crate::cgroups::Limits;
    use serde_json::json;
    use std::time::Duration;

    fn spec(annotations: Value) -> Value {
        json!({"ociVersion": "1.0.2", "annotations": annotations})
    }

    #[test]
    fn floors_and_objective_come_from_the_qos_trait() {
        let cat = Catalogue::builtin();
        let f = QosFacts::from_spec(
            Some(&spec(json!({
                QOS: "online",
                "trait.tidal.dev/qos": r#"{"class": "online", "minCPU": "250m", "minMemory": "128Mi", "latencyObjective": "250ms", "probe": {"httpGet": {"port": 8080, "path": "/healthz"}, "timeoutSeconds": 2}}"#,
            }))),
            &cat,
        );
        assert_eq!(
            f,
            QosFacts {
                min_cpu_millis: Some(250),
                min_memory_bytes: Some(128 << 20),
                objective: Some(Objective {
                    latency: Duration::from_millis(250),
                    probe: Probe::Http {
                        port: 8080,
                        path: "/healthz".into(),
                        timeout: Duration::from_secs(2)
                    }
                }),
                problem: None,
            }
        );
        assert_eq!(qos("online", false, &f), Qos::Online);
        assert_eq!(
            qos("online", true, &f),
            Qos::None,
            "a pod's pause container"
        );
        // No trait, no spec: nothing, and the annotation alone decides.
        let none = QosFacts::from_spec(Some(&spec(json!({QOS: "offline"}))), &cat);
        assert_eq!(none, QosFacts::default());
        assert_eq!(qos("offline", false, &none), Qos::Offline);
        assert_eq!(qos("", false, &none), Qos::None);
        assert_eq!(QosFacts::from_spec(None, &cat), QosFacts::default());
    }

    #[test]
    fn an_unusable_qos_trait_leaves_the_container_alone() {
        let cat = Catalogue::builtin();
        for (props, why) in [
            (
                r#"{"class": "offline", "minCPU": "lots"}"#,
                "not a CPU quantity",
            ),
            (
                r#"{"class": "online", "latencyObjective": "5s", "probe": {"tcpSocket": {"port": 1}}}"#,
                "must be above latencyObjective",
            ),
            (
                r#"{"class": "online", "probe": {"httpGet": {"port": 1, "path": "/\n"}}}"#,
                "needs a latencyObjective",
            ),
            ("{", "not valid JSON"),
        ] {
            let f = QosFacts::from_spec(Some(&spec(json!({"trait.tidal.dev/qos": props}))), &cat);
            let problem = f.problem.clone().unwrap_or_default();
            assert!(
                problem.starts_with("annotation trait.tidal.dev/qos: ") && problem.contains(why),
                "{props}: {problem}"
            );
            assert_eq!(qos("offline", false, &f), Qos::None, "{props}");
        }
    }

    #[test]
    fn a_container_from_the_inventory() {
        let dir = crate::testfs::FakeDir::new("facts-bundle", &[]);
        std::fs::write(
            dir.join("config.json"),
            spec(json!({
                QOS: "online",
                "trait.tidal.dev/qos": r#"{"class": "online", "latencyObjective": "100ms", "probe": {"tcpSocket": {"port": 80}}}"#,
                "io.kubernetes.cri.sandbox-namespace": "shop",
                "io.kubernetes.cri.sandbox-name": "web-0",
            }))
            .to_string(),
        )
        .unwrap();
        let facts = QosFacts::read(&dir, &Catalogue::builtin());
        let live = Limits {
            cpu_quota_us: Some(50_000),
            cpu_period_us: 100_000,
            cpuset: "0-1".into(),
            memory_bytes: Some(1 << 30),
            ..Default::default()
        };
        let v = inventory::View {
            info: crate::agent::node::ContainerInfo {
                id: "c1".into(),
                namespace: "k8s.io".into(),
                pid: 42,
                status: "running".into(),
                bundle: dir.path(),
                limits: live.clone(),
                usage: Default::default(),
            },
            declared: crate::agent::declared::Declared {
                pod: "shop/web-0".into(),
                qos: "online".into(),
                limits: Some(Limits {
                    cpu_quota_us: Some(100_000),
                    ..live.clone()
                }),
                overlays: vec!["policy".into()],
                ..Default::default()
            },
            last_revision: 7,
        };
        let c = container(&v, &facts);
        assert_eq!(
            c.key,
            Key {
                namespace: "k8s.io".into(),
                id: "c1".into()
            }
        );
        assert_eq!(
            (c.qos, c.pod.as_str(), c.last_revision),
            (Qos::Online, "shop/web-0", 7)
        );
        assert_eq!(c.live, live);
        assert_eq!(c.declared.unwrap().cpu_millis(), Some(1000));
        assert_eq!(c.overlays, vec!["policy".to_string()]);
        assert_eq!(c.objective.unwrap().latency, Duration::from_millis(100));
    }
}

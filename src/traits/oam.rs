//! Offline checking of OAM application files (`tidalctl check FILE`): the
//! same rules the shim applies at pod creation, before anything is deployed.
//!
//! Accepted documents, any number per file:
//! * `core.oam.dev/v1beta1` `Application`: `spec.components[]` with `name`,
//!   `type` and `traits[]` of `type` and `properties`;
//! * `core.oam.dev/v1alpha2` `ApplicationConfiguration`:
//!   `spec.components[]` with `componentName` and `traits[].trait`, a trait
//!   object whose `kind` names the trait (`SecurityPolicy` is
//!   `security-policy`) and whose `spec` holds its properties;
//! * `core.oam.dev/v1alpha2` `Component`, for the workload type of the
//!   components an ApplicationConfiguration names.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{schema::shorten, Catalogue, ANNOTATION_WORKLOAD_TYPE, WORKLOAD_TYPES};

/// Largest file `check` reads.
pub const MAX_FILE: usize = 1024 * 1024;

/// One component found in a file, with its traits.
#[derive(Debug)]
struct Found {
    name: String,
    workload: Result<Option<String>, String>,
    traits: Vec<(String, Value)>,
}

/// OAM's component types and workload kinds, as workload types.
fn workload_of(kind: &str) -> Result<Option<String>, String> {
    let k = kebab(kind);
    if WORKLOAD_TYPES.contains(&k.as_str()) {
        return Ok(Some(k));
    }
    Ok(Some(
        match k.as_str() {
            "webservice" | "web-service" | "containerized-workload" | "deployment" => "server",
            "stateful-set" => "singleton-server",
            "job" | "cron-job" => "task",
            "daemon-set" => "worker",
            _ => {
                return Err(format!(
                    "component type {:?} is not a workload type tidal knows (one of: {}, webservice, deployment, job)",
                    shorten(kind),
                    WORKLOAD_TYPES.join(", ")
                ))
            }
        }
        .to_string(),
    ))
}

/// `SecurityPolicy` -> `security-policy`; `cron-vertical-scaler` stays.
fn kebab(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 && !out.ends_with('-') {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// Checks every component of the YAML text against `catalogue`. Returns the
/// number of components and traits checked, or every problem found, each
/// naming the component and the trait.
pub fn check(catalogue: &Catalogue, text: &str) -> Result<(usize, usize), Vec<String>> {
    if text.len() > MAX_FILE {
        return Err(vec![format!(
            "the file is {} bytes, at most {MAX_FILE} are read",
            text.len()
        )]);
    }
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        match serde_norway::Value::deserialize(doc).map(serde_json::to_value) {
            Ok(Ok(Value::Null)) => {}
            Ok(Ok(v)) => docs.push(v),
            Ok(Err(e)) => return Err(vec![format!("not YAML that maps to JSON: {e}")]),
            Err(e) => return Err(vec![format!("not valid YAML: {e}")]),
        }
    }
    // Workload types of v1alpha2 Components, by name.
    let mut component_kinds: BTreeMap<String, Result<Option<String>, String>> = BTreeMap::new();
    for d in &docs {
        if str_at(d, "/kind") == Some("Component") {
            let name = str_at(d, "/metadata/name").unwrap_or_default().to_string();
            let declared = d
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(ANNOTATION_WORKLOAD_TYPE))
                .and_then(Value::as_str);
            let w = match declared {
                Some(w) => workload_of(w),
                None => match str_at(d, "/spec/workload/kind") {
                    Some(k) => workload_of(k),
                    None => Ok(None),
                },
            };
            component_kinds.insert(name, w);
        }
    }
    let mut found: Vec<Found> = Vec::new();
    let mut problems = Vec::new();
    for d in &docs {
        let kind = str_at(d, "/kind").unwrap_or_default();
        let components = d.pointer("/spec/components").and_then(Value::as_array);
        match kind {
            "Application" => {
                for c in components.into_iter().flatten() {
                    let mut f = Found {
                        name: str_at(c, "/name").unwrap_or("(unnamed)").to_string(),
                        workload: str_at(c, "/type").map(workload_of).unwrap_or(Ok(None)),
                        traits: vec![],
                    };
                    for t in c.get("traits").and_then(Value::as_array).into_iter().flatten() {
                        let ty = str_at(t, "/type").unwrap_or_default().to_string();
                        f.traits.push((ty, t.get("properties").cloned().unwrap_or(Value::Null)));
                    }
                    found.push(f);
                }
            }
            "ApplicationConfiguration" => {
                for c in components.into_iter().flatten() {
                    let name = str_at(c, "/componentName").unwrap_or("(unnamed)").to_string();
                    let mut f = Found {
                        workload: component_kinds.get(&name).cloned().unwrap_or(Ok(None)),
                        name,
                        traits: vec![],
                    };
                    for t in c.get("traits").and_then(Value::as_array).into_iter().flatten() {
                        let ty = str_at(t, "/trait/kind").map(kebab).unwrap_or_default();
                        f.traits.push((ty, t.pointer("/trait/spec").cloned().unwrap_or(Value::Null)));
                    }
                    found.push(f);
                }
            }
            "Component" => {}
            other => problems.push(format!(
                "document of kind {:?} is not an OAM Application, ApplicationConfiguration or Component",
                shorten(other)
            )),
        }
    }
    if found.is_empty() && problems.is_empty() {
        problems
            .push("no OAM Application or ApplicationConfiguration with components found".into());
    }
    let mut traits = 0;
    for f in &found {
        let at = format!("component {}", shorten(&f.name));
        let workload = match &f.workload {
            Ok(w) => w.clone(),
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        let mut names = Vec::new();
        let mut ok = true;
        for (ty, props) in &f.traits {
            traits += 1;
            let Some(def) = catalogue.get(ty) else {
                problems.push(format!(
                    "{at}: unknown trait type {:?} (this node supports: {})",
                    shorten(ty),
                    catalogue.names().join(", ")
                ));
                ok = false;
                continue;
            };
            if names.contains(&ty.as_str()) {
                problems.push(format!("{at}: trait {ty:?} is attached twice"));
                ok = false;
            }
            names.push(ty.as_str());
            if let Err(e) = super::properties(def, props.clone()) {
                problems.push(format!("{at}: trait {ty}: {e}"));
                ok = false;
            }
        }
        if ok {
            if let Err(e) = catalogue.check_combination(workload.as_deref(), &names) {
                problems.push(format!("{at}: {e}"));
            }
        }
    }
    if problems.is_empty() {
        Ok((found.len(), traits))
    } else {
        Err(problems)
    }
}

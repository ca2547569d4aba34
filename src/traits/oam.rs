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

use super::{Catalogue, WORKLOAD_TYPES};
use crate::annotations;
use crate::ids::shorten;

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
pub(crate) fn workload_of(kind: &str) -> Result<Option<String>, String> {
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
/// number of components and traits checked, or every problem found in one
/// pass (an unknown workload type, unknown or twice-attached traits, bad
/// properties, traits that do not apply to the workload, conflicting
/// pairs), each naming the component and the trait, or the document.
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
                .and_then(|a| a.get(annotations::WORKLOAD_TYPE))
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
    for (n, d) in docs.iter().enumerate() {
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
                "document {}: kind {:?} is not an OAM Application, ApplicationConfiguration or Component",
                n + 1,
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
        traits += f.traits.len();
        problems.extend(component_problems(catalogue, f));
    }
    if problems.is_empty() {
        Ok((found.len(), traits))
    } else {
        Err(problems)
    }
}

/// Every problem of one component: its workload type, then each trait
/// (known, attached once, its properties, whether it applies to the
/// workload), then each conflicting pair of its traits. A problem found
/// does not hide the next.
fn component_problems(catalogue: &Catalogue, f: &Found) -> Vec<String> {
    let at = format!("component {}", shorten(&f.name));
    let mut problems = Vec::new();
    // None: the workload type is unknown, so whether a trait applies to it
    // cannot be said.
    let workload = match &f.workload {
        Ok(w) => Some(w.as_deref()),
        Err(e) => {
            problems.push(format!("{at}: {e}"));
            None
        }
    };
    let mut names: Vec<&str> = Vec::new();
    for (ty, props) in &f.traits {
        let Some(def) = catalogue.get(ty) else {
            problems.push(format!(
                "{at}: unknown trait type {:?} (this node supports: {})",
                shorten(ty),
                catalogue.names().join(", ")
            ));
            continue;
        };
        if names.contains(&ty.as_str()) {
            problems.push(format!("{at}: trait {ty:?} is attached twice"));
            continue;
        }
        names.push(ty);
        if let Err(found) = super::every_property(def, props.clone()) {
            for e in found {
                problems.push(format!("{at}: trait {ty}: {e}"));
            }
        }
        if let Some(w) = workload {
            if let Err(e) = catalogue.check_combination(w, &[ty]) {
                problems.push(format!("{at}: {e}"));
            }
        }
    }
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            if let Some(e) = conflict(catalogue, workload.flatten(), a, b) {
                problems.push(format!("{at}: {e}"));
            }
        }
    }
    problems
}

/// Why traits `a` and `b` cannot go together, in the words the shim uses
/// (`Catalogue::check_combination`). That check tells whether each trait
/// applies to the workload before it looks at conflicts; those problems
/// are reported trait by trait, so the pair is checked under a workload
/// type both apply to: the component's own when it fits, else any.
fn conflict(catalogue: &Catalogue, workload: Option<&str>, a: &str, b: &str) -> Option<String> {
    catalogue.conflict(a, b)?;
    let fits = |w: Option<&str>| {
        catalogue.check_combination(w, &[a]).is_ok() && catalogue.check_combination(w, &[b]).is_ok()
    };
    let under = std::iter::once(workload)
        .chain(std::iter::once(None))
        .chain(WORKLOAD_TYPES.iter().map(|w| Some(*w)))
        .find(|w| fits(*w))?;
    catalogue.check_combination(under, &[a, b]).err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_in_one_run() {
        let c = Catalogue::builtin();
        // A schema error (a property of the wrong type) beside a conflict
        // in one component, an unknown workload type and a trait twice in
        // another, and a document that is not OAM.
        let file = r#"
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: {name: shop}
spec:
  components:
    - name: web
      type: webservice
      traits:
        - type: vertical-autoscaler
          properties: {maxCPU: [2]}
        - type: cron-vertical-scaler
          properties: {jobs: [{name: a, schedule: '0 8 * * *', cpu: '1'}]}
    - name: batch
      type: lambda
      traits:
        - type: qos
          properties: {class: offline}
        - type: qos
          properties: {class: offline}
        - type: gpu-turbo
---
kind: Pod
"#;
        let problems = check(&c, file).unwrap_err();
        let has = |what: &str| problems.iter().any(|p| p.starts_with(what));
        assert!(
            has("component web: trait vertical-autoscaler: maxCPU"),
            "the schema error: {problems:#?}"
        );
        assert!(
            has("component web: traits \"vertical-autoscaler\" and \"cron-vertical-scaler\" conflict"),
            "the conflict: {problems:#?}"
        );
        assert!(
            has("component batch: component type \"lambda\" is not a workload type"),
            "{problems:#?}"
        );
        assert!(
            has("component batch: trait \"qos\" is attached twice"),
            "{problems:#?}"
        );
        assert!(
            has("component batch: unknown trait type \"gpu-turbo\""),
            "{problems:#?}"
        );
        assert!(has("document 2: kind \"Pod\""), "{problems:#?}");
        assert_eq!(problems.len(), 6, "{problems:#?}");
    }

    #[test]
    fn every_bad_property_of_a_trait_is_reported() {
        let c = Catalogue::builtin();
        // Three bad properties of one trait: an unknown one, one of the
        // wrong type and one that is not a quantity.
        let file = r#"
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: {name: shop}
spec:
  components:
    - name: web
      type: webservice
      traits:
        - type: vertical-autoscaler
          properties: {maxCPU: [2], minMemory: lots, turbo: true}
"#;
        let problems = check(&c, file).unwrap_err();
        for what in ["turbo", "maxCPU", "minMemory"] {
            assert!(
                problems.iter().any(
                    |p| p.starts_with("component web: trait vertical-autoscaler:")
                        && p.contains(what)
                ),
                "{what}: {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 3, "{problems:#?}");
    }

    #[test]
    fn a_conflict_is_reported_beside_traits_that_do_not_apply() {
        let c = Catalogue::builtin();
        // Neither autoscaler applies to a task, and they conflict: three
        // problems, not the first alone.
        let file = r#"
kind: Application
spec:
  components:
    - name: batch
      type: task
      traits:
        - type: vertical-autoscaler
          properties: {maxCPU: "2"}
        - type: cron-vertical-scaler
          properties: {jobs: [{name: a, schedule: '0 8 * * *', cpu: '1'}]}
"#;
        let problems = check(&c, file).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0]
            .contains("\"vertical-autoscaler\" does not apply to workload type \"task\""));
        assert!(problems[1]
            .contains("\"cron-vertical-scaler\" does not apply to workload type \"task\""));
        assert!(problems[2].contains("conflict"), "{problems:#?}");
    }
}

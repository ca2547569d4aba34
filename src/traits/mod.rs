//! OAM traits on the node.
//!
//! App operators attach traits to a component; on the node they arrive as pod
//! annotations (`trait.tidal.dev/<type>`, properties as JSON) that containerd
//! passes through its `pod_annotations` allowlist. This module holds the trait
//! catalogue (OAM TraitDefinitions from `config/traits/`), parses a pod's
//! annotations strictly, and checks a combination of traits against the
//! catalogue's `appliesToWorkloads` and `conflictsWith` rules. The same checks
//! run in the shim when a pod's containers are created and offline in
//! `tidalctl check` ([`oam`]). [`enforce`] tightens an OCI spec by them.

pub(crate) mod catalogue;
pub mod cron;
pub mod enforce;
pub mod kubevela;
pub mod oam;
pub(crate) mod schema;
pub mod seccomp;

pub use catalogue::{Catalogue, TraitDefinition};
use serde_json::Value;

use crate::annotations::{self, TIDAL_PREFIX, TRAIT_PREFIX};

/// Longest trait annotation value (the properties as JSON).
pub const MAX_ANNOTATION_VALUE: usize = 4096;
/// Most trait annotations on one pod.
pub const MAX_TRAITS: usize = 16;
/// Deepest nesting of a trait's JSON properties.
pub const MAX_DEPTH: usize = 8;

/// OAM's workload types, as `tidal.dev/workload-type` and
/// `appliesToWorkloads` name them.
pub const WORKLOAD_TYPES: &[&str] = &[
    "server",
    "singleton-server",
    "worker",
    "singleton-worker",
    "task",
    "singleton-task",
];

/// Why a pod's traits were refused. `annotation` names the annotation at
/// fault, when one is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", annotation.as_ref().map(|a| format!("annotation {a}: ")).unwrap_or_default())]
pub struct TraitError {
    pub annotation: Option<String>,
    pub message: String,
}

impl TraitError {
    fn at(annotation: &str, message: impl Into<String>) -> Self {
        Self {
            annotation: Some(crate::ids::shorten(annotation)),
            message: message.into(),
        }
    }
    fn rule(message: impl Into<String>) -> Self {
        Self {
            annotation: None,
            message: message.into(),
        }
    }
}

/// A trait attached to a component: its type and its validated properties,
/// with the schema's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedTrait {
    pub name: String,
    pub properties: serde_json::Map<String, Value>,
}

impl AppliedTrait {
    pub fn bool(&self, key: &str) -> bool {
        self.properties
            .get(key)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
    pub fn str(&self, key: &str) -> Option<&str> {
        self.properties.get(key).and_then(Value::as_str)
    }
}

/// What a pod's annotations say about it in tidal's contract.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodTraits {
    pub qos: Option<String>,
    pub workload_type: Option<String>,
    pub app: Option<String>,
    pub component: Option<String>,
    /// Sorted by name.
    pub traits: Vec<AppliedTrait>,
}

impl PodTraits {
    pub fn get(&self, name: &str) -> Option<&AppliedTrait> {
        self.traits.iter().find(|t| t.name == name)
    }
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Parses a trait's properties from untrusted JSON text: bounded size and
/// depth, an object, validated against the definition's schema, defaults
/// filled in, and the trait's own cross-property rules.
pub fn parse_properties(def: &TraitDefinition, text: &str) -> Result<AppliedTrait, String> {
    if text.len() > MAX_ANNOTATION_VALUE {
        return Err(format!(
            "value is {} bytes, at most {MAX_ANNOTATION_VALUE} are allowed",
            text.len()
        ));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    properties(def, value)
}

/// [`parse_properties`] for a value already parsed (from an OAM YAML file).
pub fn properties(def: &TraitDefinition, value: Value) -> Result<AppliedTrait, String> {
    every_property(def, value).map_err(|problems| problems.join("; "))
}

/// [`properties`], with each problem on its own (`tidalctl check` lists
/// them all).
pub fn every_property(def: &TraitDefinition, value: Value) -> Result<AppliedTrait, Vec<String>> {
    if depth(&value) > MAX_DEPTH {
        return Err(vec![format!(
            "properties nest deeper than {MAX_DEPTH} levels"
        )]);
    }
    let value = match value {
        Value::Null => Value::Object(Default::default()),
        v => v,
    };
    if !value.is_object() {
        return Err(vec![format!(
            "the properties must be a JSON object, like {{\"key\": value}}, not {}",
            crate::ids::shorten(&value.to_string())
        )]);
    }
    let schema = def.schema();
    let problems = schema::problems(&value, schema, "");
    if !problems.is_empty() {
        return Err(problems);
    }
    let Value::Object(mut properties) = value else {
        unreachable!("checked above")
    };
    for (k, s) in &schema.properties {
        if let (false, Some(d)) = (properties.contains_key(k), &s.default) {
            properties.insert(k.clone(), d.clone());
        }
    }
    let applied = AppliedTrait {
        name: def.name().to_string(),
        properties,
    };
    semantics(&applied).map_err(|e| vec![e])?;
    Ok(applied)
}

/// Rules across properties that a schema cannot say, for tidal's own traits.
fn semantics(t: &AppliedTrait) -> Result<(), String> {
    let pair =
        |lo: &str, hi: &str, parse: fn(&str) -> Result<u64, crate::quantity::QuantityError>| {
            if let (Some(a), Some(b)) = (t.str(lo), t.str(hi)) {
                if let (Ok(x), Ok(y)) = (parse(a), parse(b)) {
                    if x > y {
                        return Err(format!("{lo} {a} is above {hi} {b}"));
                    }
                }
            }
            Ok(())
        };
    match t.name.as_str() {
        "vertical-autoscaler" => {
            pair("minCPU", "maxCPU", crate::quantity::parse_cpu)?;
            pair("minMemory", "maxMemory", crate::quantity::parse_memory)?;
            if !["minCPU", "maxCPU", "minMemory", "maxMemory"]
                .iter()
                .any(|k| t.properties.contains_key(*k))
            {
                return Err(
                    "set at least one bound (minCPU, maxCPU, minMemory, maxMemory): an autoscaler without bounds may take the whole node".into(),
                );
            }
        }
        "cron-vertical-scaler" => {
            cron_jobs(t)?;
        }
        "qos" => {
            qos_objective(t)?;
        }
        _ => {}
    }
    Ok(())
}

/// The jobs of a `cron-vertical-scaler` trait, checked: at least one,
/// names used once, each setting CPU or memory, schedules and time zones
/// that parse.
pub fn cron_jobs(t: &AppliedTrait) -> Result<Vec<cron::Job>, String> {
    let jobs = t
        .properties
        .get("jobs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if jobs.is_empty() {
        return Err("jobs must name at least one job".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let text = |k: &str| job.get(k).and_then(Value::as_str);
        let name = text("name").unwrap_or_default();
        let at = |e: String| format!("jobs[{i}] ({name}): {e}");
        if !seen.insert(name) {
            return Err(format!("jobs[{i}].name {name:?} is used twice"));
        }
        let cpu_millis = text("cpu")
            .map(crate::quantity::parse_cpu)
            .transpose()
            .map_err(|e| at(format!("cpu: {e}")))?;
        let memory_bytes = text("memory")
            .map(crate::quantity::parse_memory)
            .transpose()
            .map_err(|e| at(format!("memory: {e}")))?;
        if cpu_millis.is_none() && memory_bytes.is_none() {
            return Err(format!("jobs[{i}] ({name}) sets neither cpu nor memory"));
        }
        let lasts = text("duration")
            .map(schema::parse_span)
            .transpose()
            .map_err(at)?
            .map(|s| s as i64);
        let schedule = text("schedule").unwrap_or_default();
        let time_zone = text("timeZone").unwrap_or_default();
        out.push(cron::Job {
            name: name.to_string(),
            schedule: cron::Schedule::parse(schedule).map_err(at)?,
            schedule_text: schedule.to_string(),
            zone: cron::Zone::named(Some(time_zone)).map_err(at)?,
            time_zone: time_zone.to_string(),
            cpu_millis,
            memory_bytes,
            lasts,
        });
    }
    Ok(out)
}

/// The `qos` trait's latency objective and probe, checked: both or neither,
/// exactly one kind of probe, a path that cannot smuggle anything into the
/// request, and a timeout above the objective (a failed probe counts as its
/// timeout, which must then be a breach). None when neither is set.
pub fn qos_objective(t: &AppliedTrait) -> Result<Option<crate::agent::policy::Objective>, String> {
    use crate::agent::policy::{Objective, Probe};
    use std::time::Duration;
    let objective = t.str("latencyObjective");
    let probe = t.properties.get("probe");
    let (objective, probe) = match (objective, probe) {
        (None, None) => return Ok(None),
        (Some(o), Some(p)) => (o, p),
        (Some(_), None) => return Err("latencyObjective needs a probe to measure it".into()),
        (None, Some(_)) => return Err("probe needs a latencyObjective to compare it with".into()),
    };
    if t.str("class") != Some("online") {
        return Err("latencyObjective and probe are for class online".into());
    }
    let latency = schema::parse_duration(objective)?;
    let timeout = Duration::from_secs(
        probe
            .get("timeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(1),
    );
    if timeout <= latency {
        return Err(format!(
            "probe.timeoutSeconds ({}s) must be above latencyObjective ({objective}): a failed probe counts as its timeout",
            timeout.as_secs()
        ));
    }
    let port = |v: &Value| {
        v.get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| "probe port must be from 1 to 65535".to_string())
    };
    let probe = match (probe.get("httpGet"), probe.get("tcpSocket")) {
        (Some(http), None) => {
            let path = http.get("path").and_then(Value::as_str).unwrap_or("/");
            if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "probe.httpGet.path {:?} must start with / and hold visible ASCII only",
                    crate::ids::shorten(path)
                ));
            }
            Probe::Http {
                port: port(http)?,
                path: path.to_string(),
                timeout,
            }
        }
        (None, Some(tcp)) => Probe::Tcp {
            port: port(tcp)?,
            timeout,
        },
        _ => return Err("probe must have exactly one of httpGet, tcpSocket".into()),
    };
    Ok(Some(Objective { latency, probe }))
}

impl Catalogue {
    /// Reads tidal's annotations of a pod (`annotations` is the OCI spec's
    /// map, which holds the pod annotations containerd let through). Strict:
    /// an unknown `tidal.dev/` key, an unknown trait type, a property that is
    /// unknown, of the wrong type or out of bounds, or a rule between traits
    /// that does not hold, is an error naming the annotation and the problem.
    pub fn pod_traits<'a>(
        &self,
        annotations: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<PodTraits, TraitError> {
        let mut pod = PodTraits::default();
        let annotations: Vec<(&String, &String)> = annotations.into_iter().collect();
        let count = annotations
            .iter()
            .filter(|(k, _)| k.starts_with(TRAIT_PREFIX))
            .count();
        if count > MAX_TRAITS {
            return Err(TraitError::rule(format!(
                "a pod may carry at most {MAX_TRAITS} {TRAIT_PREFIX}* annotations, this one has {count}"
            )));
        }
        for (key, value) in annotations {
            if let Some(name) = key.strip_prefix(TRAIT_PREFIX) {
                let def = self.get(name).ok_or_else(|| {
                    TraitError::at(
                        key,
                        format!(
                            "unknown trait type {:?} (this node supports: {})",
                            crate::ids::shorten(name),
                            self.names().join(", ")
                        ),
                    )
                })?;
                let t = parse_properties(def, value).map_err(|e| TraitError::at(key, e))?;
                pod.traits.push(t);
                continue;
            }
            let Some(_) = key.strip_prefix(TIDAL_PREFIX) else {
                match key.as_str() {
                    annotations::OAM_APP => pod.app = Some(name_value(key, value)?),
                    annotations::OAM_COMPONENT => pod.component = Some(name_value(key, value)?),
                    _ => {}
                }
                continue;
            };
            match key.as_str() {
                annotations::QOS => {
                    if !["online", "offline"].contains(&value.as_str()) {
                        return Err(TraitError::at(
                            key,
                            format!("must be online or offline, not {:?}", crate::ids::shorten(value)),
                        ));
                    }
                    pod.qos = Some(value.clone());
                }
                annotations::WORKLOAD_TYPE => {
                    if !WORKLOAD_TYPES.contains(&value.as_str()) {
                        return Err(TraitError::at(
                            key,
                            format!(
                                "unknown workload type {:?} (one of: {})",
                                crate::ids::shorten(value),
                                WORKLOAD_TYPES.join(", ")
                            ),
                        ));
                    }
                    pod.workload_type = Some(value.clone());
                }
                annotations::APP => pod.app = Some(name_value(key, value)?),
                annotations::COMPONENT => pod.component = Some(name_value(key, value)?),
                _ => {
                    return Err(TraitError::at(
                        key,
                        format!(
                            "unknown tidal annotation (tidal reads {}, {}, {}, {} and {TRAIT_PREFIX}<type>)",
                            annotations::QOS, annotations::WORKLOAD_TYPE, annotations::APP, annotations::COMPONENT
                        ),
                    ))
                }
            }
        }
        pod.traits.sort_by(|a, b| a.name.cmp(&b.name));
        if let (Some(q), Some(t)) = (&pod.qos, pod.get("qos")) {
            let class = t.str("class").unwrap_or_default();
            if class != q {
                return Err(TraitError::rule(format!(
                    "annotation {} says {q:?} but trait qos (annotation {TRAIT_PREFIX}qos) says class {class:?}",
                    annotations::QOS
                )));
            }
        }
        if pod.qos.is_none() {
            pod.qos = pod
                .get("qos")
                .and_then(|t| t.str("class"))
                .map(String::from);
        }
        let names: Vec<&str> = pod.traits.iter().map(|t| t.name.as_str()).collect();
        self.check_combination(pod.workload_type.as_deref(), &names)
            .map_err(TraitError::rule)?;
        Ok(pod)
    }

    /// Checks the catalogue's rules for traits attached together to one
    /// workload: each applies to the workload type, no two conflict. The
    /// message names both traits and the rule.
    pub fn check_combination(&self, workload: Option<&str>, traits: &[&str]) -> Result<(), String> {
        for name in traits {
            let Some(def) = self.get(name) else {
                return Err(format!(
                    "unknown trait type {:?} (this node supports: {})",
                    crate::ids::shorten(name),
                    self.names().join(", ")
                ));
            };
            let applies = def.applies_to();
            if applies.iter().any(|a| a == "*") {
                continue;
            }
            match workload {
                Some(w) if applies.iter().any(|a| a == w) => {}
                Some(w) => {
                    return Err(format!(
                        "trait {name:?} does not apply to workload type {w:?}: TraitDefinition {name:?} has appliesToWorkloads [{}]",
                        applies.join(", ")
                    ))
                }
                None => {
                    return Err(format!(
                        "trait {name:?} applies only to workload types [{}] and no workload type is given ({})",
                        applies.join(", "),
                        annotations::WORKLOAD_TYPE
                    ))
                }
            }
        }
        for (i, a) in traits.iter().enumerate() {
            for b in &traits[i + 1..] {
                if let Some((def, other)) = self.conflict(a, b) {
                    let because = def
                        .conflict_reason()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default();
                    return Err(format!(
                        "traits {a:?} and {b:?} conflict{because} (TraitDefinition {:?} has conflictsWith [{}], which names {other:?})",
                        def.name(),
                        def.conflicts_with().join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}

/// An app or component name: a Kubernetes object name (RFC 1123 subdomain).
fn name_value(key: &str, value: &str) -> Result<String, TraitError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Err(TraitError::at(
            key,
            format!(
                "{:?} is not a Kubernetes object name (lower-case letters, digits, '-' and '.', at most 253)",
                crate::ids::shorten(value)
            ),
        ));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests;

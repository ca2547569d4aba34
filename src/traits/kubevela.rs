//! KubeVela `TraitDefinition`s generated from tidal's trait catalogue
//! (`tidalctl traits kubevela`), so that KubeVela carries each trait to the
//! pods in exactly the annotation contract the shim reads.
//!
//! Each definition's CUE template has a `parameter` translated from the
//! trait's openAPIV3Schema (types, enums as disjunctions, required and
//! optional properties, defaults, bounds, and the formats as far as a
//! regular expression can say them; unknown properties refused by `close`)
//! and a `patch` that sets, on the pod template of whatever the component
//! renders (`spec.template`, or a CronJob's `spec.jobTemplate.spec.template`):
//! `trait.tidal.dev/<name>` to the properties as JSON, `tidal.dev/workload-type`
//! from the resource's kind ([`POD_TEMPLATE_KINDS`]), and `tidal.dev/app` and
//! `tidal.dev/component` from KubeVela's context. What a schema cannot say
//! (cross-property rules, cron schedules, time zones, ranges of quantities)
//! is left to tidal, on the node and in `tidalctl check`.

use std::fmt::Write as _;

use serde_json::Value;

use super::catalogue::{Catalogue, TraitDefinition};
use super::schema::{Format, Kind, Schema, CAPABILITIES, MAX_ITEMS, MAX_STRING};
use crate::annotations;

/// The Kubernetes kinds with a pod template that KubeVela components
/// render, as KubeVela's `appliesToWorkloads` names their resources, and the
/// workload type tidal gives their pods (the same as `tidalctl check` gives
/// a component of that kind). A trait's template cannot see the component's
/// type, only what it rendered, so KubeVela's `worker` (a Deployment)
/// reaches the node as `server`.
pub const POD_TEMPLATE_KINDS: &[(&str, &str, &str)] = &[
    ("Deployment", "deployments.apps", "server"),
    ("StatefulSet", "statefulsets.apps", "singleton-server"),
    ("DaemonSet", "daemonsets.apps", "worker"),
    ("Job", "jobs.batch", "task"),
    ("CronJob", "cronjobs.batch", "task"),
];

/// Where the generated definitions live in tidal's repository.
pub const DEFINITIONS_DIR: &str = "config/kubevela/definitions";
/// The command that regenerates them there.
pub const REGENERATE: &str =
    "cargo run --bin tidalctl -- traits kubevela --traits config/traits --out config/kubevela/definitions";

/// One generated file: its name (`<trait>.yaml`) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub file: String,
    pub text: String,
}

/// A KubeVela TraitDefinition for every trait of the catalogue, by name.
pub fn definitions(catalogue: &Catalogue) -> Result<Vec<Generated>, String> {
    catalogue
        .definitions()
        .map(|def| {
            Ok(Generated {
                file: format!("{}.yaml", def.name()),
                text: definition(def)?,
            })
        })
        .collect()
}

/// The KubeVela TraitDefinition of one trait, as YAML.
pub fn definition(def: &TraitDefinition) -> Result<String, String> {
    let name = def.name();
    let applies = applies_to(def)?;
    let q = |s: &str| Value::from(s).to_string();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# tidal's trait {name} for KubeVela, generated from tidal's trait catalogue by\n\
         # `tidalctl traits kubevela`; do not edit: in tidal's repository, regenerate with\n\
         #   {REGENERATE}"
    );
    out += "apiVersion: core.oam.dev/v1beta1\nkind: TraitDefinition\nmetadata:\n";
    let _ = writeln!(out, "  name: {name}");
    if !def.description().is_empty() {
        out += "  annotations:\n";
        let _ = writeln!(
            out,
            "    definition.oam.dev/description: {}",
            q(def.description().trim())
        );
    }
    out += "spec:\n";
    let list = |l: &[String]| l.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
    let _ = writeln!(out, "  appliesToWorkloads: [{}]", list(&applies));
    let _ = writeln!(out, "  conflictsWith: [{}]", list(def.conflicts_with()));
    // The patch changes the pod template, so the workload rolls its pods:
    // tidal reads a pod's traits when its containers are created.
    out += "  podDisruptive: true\n  schematic:\n    cue:\n      template: |\n";
    for line in template(def)?.lines() {
        if line.is_empty() {
            out += "\n";
        } else {
            let _ = writeln!(out, "        {line}");
        }
    }
    Ok(out)
}

/// KubeVela's `appliesToWorkloads`: `*`, or the resources whose pods get a
/// workload type the trait applies to.
fn applies_to(def: &TraitDefinition) -> Result<Vec<String>, String> {
    if def.applies_to().iter().any(|w| w == "*") {
        return Ok(vec!["*".into()]);
    }
    let mut out: Vec<String> = Vec::new();
    for (_, resource, workload) in POD_TEMPLATE_KINDS {
        if def.applies_to().iter().any(|w| w == workload) && !out.iter().any(|r| r == resource) {
            out.push(resource.to_string());
        }
    }
    if out.is_empty() {
        return Err(format!(
            "{}: appliesToWorkloads [{}] names no workload type a KubeVela component's pods get ({})",
            def.name(),
            def.applies_to().join(", "),
            POD_TEMPLATE_KINDS
                .iter()
                .map(|(k, _, w)| format!("{k}: {w}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(out)
}

/// Imports a template turned out to need.
#[derive(Default)]
struct Imports {
    list: bool,
    strings: bool,
}

/// The CUE template of one trait.
pub fn template(def: &TraitDefinition) -> Result<String, String> {
    let mut imports = Imports::default();
    let mut parameter = String::new();
    object(def.schema(), 0, true, &mut imports, &mut parameter);
    let mut out = String::from("import (\n\t\"encoding/json\"\n");
    if imports.list {
        out += "\t\"list\"\n";
    }
    if imports.strings {
        out += "\t\"strings\"\n";
    }
    out += ")\n\n";
    out += "// The trait's properties, from the openAPIV3Schema of tidal's TraitDefinition.\n";
    out += "// tidal checks them again on the node (and in `tidalctl check`), with the\n";
    out += "// rules a schema cannot say.\n";
    let _ = writeln!(out, "parameter: {parameter}");
    out += "\n// tidal's annotation contract (docs/traits.md).\n_tidal: {\n";
    let _ = writeln!(
        out,
        "\t{}: json.Marshal(parameter)",
        label(&format!("{}{}", annotations::TRAIT_PREFIX, def.name()))
    );
    let _ = writeln!(out, "\t{}: context.appName", label(annotations::APP));
    let _ = writeln!(out, "\t{}: context.name", label(annotations::COMPONENT));
    for (kind, _, workload) in POD_TEMPLATE_KINDS {
        let _ = writeln!(
            out,
            "\tif context.output.kind == {} {{\n\t\t{}: {}\n\t}}",
            Value::from(*kind),
            label(annotations::WORKLOAD_TYPE),
            Value::from(*workload)
        );
    }
    out += "}\n\n";
    out += "// On the pod template of what the component renders: spec.template, or a\n";
    out += "// CronJob's spec.jobTemplate.spec.template.\n";
    out += "patch: {\n";
    out += "\tif context.output.spec != _|_ && context.output.spec.template != _|_ {\n";
    out += "\t\tspec: template: metadata: annotations: _tidal\n\t}\n";
    out += "\tif context.output.spec != _|_ && context.output.spec.jobTemplate != _|_ {\n";
    out += "\t\tspec: jobTemplate: spec: template: metadata: annotations: _tidal\n\t}\n";
    out += "}\n";
    Ok(out)
}

/// A CUE label: an identifier as it is, anything else quoted.
fn label(name: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "if", "for", "in", "let", "import", "package", "true", "false", "null", "_",
    ];
    let ident = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&name);
    if ident {
        name.to_string()
    } else {
        Value::from(name).to_string()
    }
}

/// Writes an object schema as a closed CUE struct at nesting `depth`.
/// `top`: its defaulted properties are filled in when not given, as tidal
/// fills the top level's in (nested defaults are documentation only).
fn object(s: &Schema, depth: usize, top: bool, imports: &mut Imports, out: &mut String) {
    if s.properties.is_empty() {
        out.push_str("close({})");
        return;
    }
    let indent = "\t".repeat(depth + 1);
    out.push_str("close({\n");
    for (name, p) in &s.properties {
        if let Some(d) = &p.description {
            let d = d.split_whitespace().collect::<Vec<_>>().join(" ");
            let _ = writeln!(out, "{indent}// +usage={d}");
        }
        let required = s.required.contains(name);
        let filled = top && p.default.is_some();
        let mark = if required || filled { "" } else { "?" };
        let _ = write!(out, "{indent}{}{mark}: ", label(name));
        value(p, depth + 1, imports, out);
        out.push('\n');
    }
    out.push_str(&"\t".repeat(depth));
    out.push_str("})");
}

/// Writes the CUE constraint of one value's schema.
/// A default is CUE's marked alternative.
fn value(s: &Schema, depth: usize, imports: &mut Imports, out: &mut String) {
    if let Some(allowed) = &s.one_of {
        let alts: Vec<String> = allowed
            .iter()
            .map(|v| match &s.default {
                Some(d) if d == v => format!("*{v}"),
                _ => v.to_string(),
            })
            .collect();
        out.push_str(&alts.join(" | "));
        return;
    }
    if let Some(d) = &s.default {
        let _ = write!(out, "*{d} | ");
    }
    match s.kind {
        Kind::Object => object(s, depth, false, imports, out),
        Kind::Boolean => out.push_str("bool"),
        Kind::Integer => {
            out.push_str("int");
            if let Some(lo) = s.minimum {
                let _ = write!(out, " & >={lo}");
            }
            if let Some(hi) = s.maximum {
                let _ = write!(out, " & <={hi}");
            }
        }
        Kind::String => {
            out.push_str("string");
            if let Some(re) = s.format.and_then(format_regex) {
                let _ = write!(out, " & =~{}", Value::from(re));
            }
            // tidal counts bytes, CUE's strings.MaxRunes characters: the
            // same for ASCII, looser beyond (tidal still refuses).
            let max = s.max_length.unwrap_or(MAX_STRING).min(MAX_STRING);
            let max = match s.format {
                Some(Format::Name) => max.min(63),
                _ => max,
            };
            imports.strings = true;
            let _ = write!(out, " & strings.MaxRunes({max})");
        }
        Kind::Array => {
            out.push_str("[...");
            match s.items.as_deref() {
                Some(items) => {
                    let mut inner = String::new();
                    value(items, depth, imports, &mut inner);
                    // A disjunction inside a list needs its parentheses.
                    if items.one_of.is_some() || items.default.is_some() {
                        let _ = write!(out, "({inner})");
                    } else {
                        out.push_str(&inner);
                    }
                }
                None => out.push('_'),
            }
            let max = s.max_items.unwrap_or(MAX_ITEMS).min(MAX_ITEMS);
            imports.list = true;
            let _ = write!(out, "] & list.MaxItems({max})");
        }
    }
}

/// A regular expression (RE2, CUE's) that every value of a format matches:
/// the syntax tidal's parser takes. What a syntax cannot say (a zero
/// quantity, a duration over an hour, a zone that does not exist) tidal
/// refuses on its own. None for a format no expression says well.
fn format_regex(f: Format) -> Option<String> {
    Some(match f {
        Format::Cpu => r"^([0-9]+m|[0-9]+(\.[0-9]{0,3})?|\.[0-9]{1,3})$".into(),
        Format::Memory => r"^[0-9]+(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$".into(),
        Format::Name => r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$".into(),
        Format::Duration => r"^[0-9]{1,9}(\.[0-9]{1,3})?(ms|s|m)$".into(),
        Format::Span => {
            // Units largest first, each at most once, at least one.
            let n = "[0-9]{1,6}";
            format!("^({n}d({n}h)?({n}m)?({n}s)?|{n}h({n}m)?({n}s)?|{n}m({n}s)?|{n}s)$")
        }
        Format::Capability => {
            let names: Vec<&str> = CAPABILITIES
                .iter()
                .map(|c| c.strip_prefix("CAP_").unwrap_or(c))
                .collect();
            format!("^(?i)(ALL|(CAP_)?({}))$", names.join("|"))
        }
        Format::Cron | Format::TimeZone => return None,
    })
}

#[cfg(test)]
mod tests;

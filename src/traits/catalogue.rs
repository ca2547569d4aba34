//! The trait catalogue: OAM TraitDefinitions this node supports.
//!
//! Definitions are YAML files in the shape of OAM's `TraitDefinition`
//! (`core.oam.dev`), one or more documents per file. The catalogue comes from
//! `$TIDAL_TRAITS_DIR`, else `/etc/tidal/traits` when it exists, else the copy
//! of the repository's `config/traits/` built into the binaries, so a node
//! without a catalogue of its own still knows tidal's traits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::schema::{Kind, Schema};
use super::WORKLOAD_TYPES;

/// Overrides the catalogue directory.
pub const TRAITS_DIR_ENV: &str = "TIDAL_TRAITS_DIR";
/// The catalogue directory on a node.
pub const DEFAULT_TRAITS_DIR: &str = "/etc/tidal/traits";
/// Largest definition file read.
const MAX_FILE: u64 = 64 * 1024;
/// Most definitions in a catalogue.
const MAX_DEFINITIONS: usize = 64;

const BUILT_IN: &[(&str, &str)] = &[
    (
        "security-policy.yaml",
        include_str!("../../config/traits/security-policy.yaml"),
    ),
    ("qos.yaml", include_str!("../../config/traits/qos.yaml")),
    (
        "vertical-autoscaler.yaml",
        include_str!("../../config/traits/vertical-autoscaler.yaml"),
    ),
    (
        "cron-vertical-scaler.yaml",
        include_str!("../../config/traits/cron-vertical-scaler.yaml"),
    ),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TraitDefinition {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: DefinitionSpec,
    /// Where the definition was read from (not part of the YAML).
    #[serde(skip)]
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DefinitionSpec {
    pub applies_to_workloads: Vec<String>,
    #[serde(default)]
    pub conflicts_with: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition_ref: Option<DefinitionRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruptive: Option<bool>,
    pub schema: PropertiesSchema,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionRef {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PropertiesSchema {
    #[serde(rename = "openAPIV3Schema")]
    pub open_api_v3_schema: Schema,
}

/// OAM's description annotation on a definition.
const DESCRIPTION: &str = "definition.oam.dev/description";
/// tidal's annotation saying why a definition's conflicts exist.
const CONFLICT_REASON: &str = "tidal.dev/conflict-reason";

impl TraitDefinition {
    pub fn name(&self) -> &str {
        &self.metadata.name
    }
    pub fn description(&self) -> &str {
        self.metadata
            .annotations
            .get(DESCRIPTION)
            .map(String::as_str)
            .unwrap_or("")
    }
    pub fn conflict_reason(&self) -> Option<&str> {
        self.metadata
            .annotations
            .get(CONFLICT_REASON)
            .map(String::as_str)
    }
    pub fn applies_to(&self) -> &[String] {
        &self.spec.applies_to_workloads
    }
    pub fn conflicts_with(&self) -> &[String] {
        &self.spec.conflicts_with
    }
    pub fn schema(&self) -> &Schema {
        &self.spec.schema.open_api_v3_schema
    }

    fn check(&self) -> Result<(), String> {
        let name = self.name();
        if !self.api_version.starts_with("core.oam.dev/") || self.kind != "TraitDefinition" {
            return Err(format!(
                "{name}: expected apiVersion core.oam.dev/* and kind TraitDefinition, found {} {}",
                self.api_version, self.kind
            ));
        }
        let label = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !label {
            return Err(format!(
                "{name:?}: a trait name must be a lower-case DNS label"
            ));
        }
        if self.applies_to().is_empty() {
            return Err(format!(
                "{name}: appliesToWorkloads is empty (use [\"*\"] for all)"
            ));
        }
        for w in self.applies_to() {
            if w != "*" && !WORKLOAD_TYPES.contains(&w.as_str()) {
                return Err(format!(
                    "{name}: appliesToWorkloads names unknown workload type {w:?} (one of: *, {})",
                    WORKLOAD_TYPES.join(", ")
                ));
            }
        }
        if self.conflicts_with().iter().any(|c| c == name) {
            return Err(format!("{name}: a trait cannot conflict with itself"));
        }
        if self.schema().kind != Kind::Object {
            return Err(format!("{name}: openAPIV3Schema must be of type object"));
        }
        self.schema().check(name)
    }
}

/// The definitions a node supports, by name.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    defs: BTreeMap<String, TraitDefinition>,
    /// Where it came from: a directory, or "built-in".
    pub origin: String,
}

impl Catalogue {
    /// The catalogue built into the binary (the repository's config/traits).
    pub fn builtin() -> Catalogue {
        let files = BUILT_IN
            .iter()
            .map(|(name, text)| (format!("built-in {name}"), text.to_string()));
        Self::from_texts(files, "built-in".into()).expect("the built-in trait catalogue is valid")
    }

    /// The node's catalogue: `$TIDAL_TRAITS_DIR`, else `/etc/tidal/traits`
    /// if it exists, else the built-in one.
    pub fn node() -> Result<Catalogue, String> {
        if let Some(dir) = std::env::var_os(TRAITS_DIR_ENV) {
            return Self::load(Path::new(&dir));
        }
        let dir = Path::new(DEFAULT_TRAITS_DIR);
        if dir.is_dir() {
            return Self::load(dir);
        }
        Ok(Self::builtin())
    }

    /// Reads every `*.yaml`/`*.yml` file of `dir`.
    pub fn load(dir: &Path) -> Result<Catalogue, String> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("trait catalogue {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        paths.sort();
        let mut files = Vec::new();
        for p in paths {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            if len > MAX_FILE {
                return Err(format!(
                    "{}: {len} bytes, larger than {MAX_FILE}",
                    p.display()
                ));
            }
            let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            files.push((p.display().to_string(), text));
        }
        Self::from_texts(files, dir.display().to_string())
    }

    /// Parses and checks definitions from (source, YAML text) pairs.
    pub fn from_texts(
        files: impl IntoIterator<Item = (String, String)>,
        origin: String,
    ) -> Result<Catalogue, String> {
        let mut defs = BTreeMap::new();
        for (source, text) in files {
            for doc in serde_norway::Deserializer::from_str(&text) {
                let value =
                    serde_norway::Value::deserialize(doc).map_err(|e| format!("{source}: {e}"))?;
                if value.is_null() {
                    continue;
                }
                let mut def: TraitDefinition =
                    serde_norway::from_value(value).map_err(|e| format!("{source}: {e}"))?;
                def.source = source.clone();
                def.check().map_err(|e| format!("{source}: {e}"))?;
                if let Some(prev) = defs.get(def.name()) {
                    let prev: &TraitDefinition = prev;
                    return Err(format!(
                        "{source}: trait {:?} is defined twice (also in {})",
                        def.name(),
                        prev.source
                    ));
                }
                defs.insert(def.name().to_string(), def);
                if defs.len() > MAX_DEFINITIONS {
                    return Err(format!(
                        "{origin}: more than {MAX_DEFINITIONS} trait definitions"
                    ));
                }
            }
        }
        for def in defs.values() {
            for other in def.conflicts_with() {
                if !defs.contains_key(other) {
                    return Err(format!(
                        "{}: {} conflictsWith unknown trait {other:?}",
                        def.source,
                        def.name()
                    ));
                }
            }
        }
        Ok(Catalogue { defs, origin })
    }

    pub fn get(&self, name: &str) -> Option<&TraitDefinition> {
        self.defs.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.defs.keys().map(String::as_str).collect()
    }

    pub fn definitions(&self) -> impl Iterator<Item = &TraitDefinition> {
        self.defs.values()
    }

    /// The definition that declares a conflict between `a` and `b` (either
    /// way round), and the name it declares it against.
    pub fn conflict(&self, a: &str, b: &str) -> Option<(&TraitDefinition, String)> {
        let declares = |x: &str, y: &str| {
            self.get(x)
                .filter(|d| d.conflicts_with().iter().any(|c| c == y))
                .map(|d| (d, y.to_string()))
        };
        declares(a, b).or_else(|| declares(b, a))
    }
}

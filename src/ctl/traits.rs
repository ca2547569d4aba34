//! `tidalctl traits [describe NAME]`, from tidald's catalogue, and
//! `tidalctl check FILE` and `tidalctl traits kubevela`, offline against a
//! catalogue.

use std::path::Path;

use super::cli::Output;
use super::render::columns;
use super::CtlError;
use crate::proto::traits_pb::TraitDefinition;

/// `tidalctl check`: the catalogue's rules applied to an OAM file, offline.
pub(super) fn check(file: &Path, dir: Option<&Path>) -> Result<(), CtlError> {
    use std::io::Read;
    let catalogue = match dir {
        Some(d) => crate::traits::Catalogue::load(d),
        None => crate::traits::Catalogue::node(),
    }
    .map_err(|e| CtlError::Check(vec![e]))?;
    let name = file.display().to_string();
    let mut text = String::new();
    let limit = crate::traits::oam::MAX_FILE as u64 + 1;
    let read = if name == "-" {
        std::io::stdin().take(limit).read_to_string(&mut text)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_string(&mut text))
    };
    read.map_err(|e| CtlError::Check(vec![format!("{name}: {e}")]))?;
    match crate::traits::oam::check(&catalogue, &text) {
        Ok((components, traits)) => {
            println!(
                "{name}: ok: {components} component(s), {traits} trait(s) checked against the {} trait catalogue",
                catalogue.origin
            );
            Ok(())
        }
        Err(problems) => Err(CtlError::Check(
            problems
                .into_iter()
                .map(|p| format!("{name}: {p}"))
                .collect(),
        )),
    }
}

/// `tidalctl traits kubevela`: the catalogue's KubeVela TraitDefinitions,
/// on stdout as one YAML stream, or as `DIR/<trait>.yaml` with `--out`.
pub(super) fn kubevela(dir: Option<&Path>, out: Option<&Path>) -> Result<(), CtlError> {
    let catalogue = match dir {
        Some(d) => crate::traits::Catalogue::load(d),
        None => crate::traits::Catalogue::node(),
    }
    .map_err(|e| CtlError::Check(vec![e]))?;
    let generated =
        crate::traits::kubevela::definitions(&catalogue).map_err(|e| CtlError::Check(vec![e]))?;
    let Some(out) = out else {
        let texts: Vec<&str> = generated.iter().map(|g| g.text.as_str()).collect();
        print!("{}", texts.join("---\n"));
        return Ok(());
    };
    std::fs::create_dir_all(out)
        .map_err(|e| CtlError::Check(vec![format!("{}: {e}", out.display())]))?;
    for g in &generated {
        let path = out.join(&g.file);
        std::fs::write(&path, &g.text)
            .map_err(|e| CtlError::Check(vec![format!("{}: {e}", path.display())]))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// `tidalctl traits [describe NAME]`, from tidald's catalogue API.
pub(super) async fn show(
    socket: &Path,
    describe: Option<&str>,
    output: Output,
) -> Result<(), CtlError> {
    let as_json = output == Output::Json;
    let mut api = crate::proto::connect_traits(socket)
        .await
        .map_err(|e| CtlError::connect(socket, &e))?;
    let list = api
        .list_traits(crate::proto::traits_pb::ListTraitsRequest {})
        .await
        .map_err(|s| CtlError::Api(s.message().to_string()))?
        .into_inner();
    let Some(name) = describe else {
        if as_json {
            let all: Vec<serde_json::Value> = list.traits.iter().map(trait_json).collect();
            println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        } else {
            print!("{}", traits_table(&list.traits));
        }
        return Ok(());
    };
    let t = list.traits.iter().find(|t| t.name == name).ok_or_else(|| {
        let names: Vec<&str> = list.traits.iter().map(|t| t.name.as_str()).collect();
        CtlError::Api(format!(
            "no trait {name:?} on this node (it supports: {})",
            names.join(", ")
        ))
    })?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&trait_json(t)).unwrap_or_default()
        );
    } else {
        print!("{}", describe_trait(t));
    }
    Ok(())
}

fn trait_json(t: &TraitDefinition) -> serde_json::Value {
    serde_json::json!({
        "name": t.name,
        "description": t.description,
        "appliesToWorkloads": t.applies_to,
        "conflictsWith": t.conflicts_with,
        "conflictReason": t.conflict_reason,
        "schema": serde_json::from_str::<serde_json::Value>(&t.schema_json).unwrap_or_default(),
        "source": t.source,
    })
}

/// `tidalctl traits`: one row per definition, like `kubectl get traitdefinition`.
pub fn traits_table(traits: &[TraitDefinition]) -> String {
    let rows: Vec<Vec<String>> = traits
        .iter()
        .map(|t| {
            let list = |l: &[String]| {
                if l.is_empty() {
                    "-".to_string()
                } else {
                    l.join(",")
                }
            };
            let mut desc: String = t.description.chars().take(60).collect();
            if t.description.chars().count() > 60 {
                desc.push_str("...");
            }
            vec![
                t.name.clone(),
                list(&t.applies_to),
                list(&t.conflicts_with),
                desc,
            ]
        })
        .collect();
    columns(
        &["NAME", "APPLIES-TO", "CONFLICTS-WITH", "DESCRIPTION"],
        &[false; 4],
        &rows,
    )
}

/// `tidalctl traits describe NAME`: the rules and every property.
pub fn describe_trait(t: &TraitDefinition) -> String {
    use crate::traits::schema::Schema;
    let mut out = format!("Name:            {}\n", t.name);
    out += &format!("Description:     {}\n", t.description);
    out += &format!("Applies to:      {}\n", t.applies_to.join(", "));
    let conflicts = if t.conflicts_with.is_empty() {
        "-".to_string()
    } else if t.conflict_reason.is_empty() {
        t.conflicts_with.join(", ")
    } else {
        format!("{} ({})", t.conflicts_with.join(", "), t.conflict_reason)
    };
    out += &format!("Conflicts with:  {conflicts}\n");
    out += &format!(
        "Annotation:      {}{}: '<properties as JSON>'\n",
        crate::annotations::TRAIT_PREFIX,
        t.name
    );
    out += &format!("Source:          {}\n", t.source);
    let schema: Schema = match serde_json::from_str(&t.schema_json) {
        Ok(s) => s,
        Err(e) => return out + &format!("Properties:      unreadable schema: {e}\n"),
    };
    fn walk(s: &Schema, path: &str, required: bool, rows: &mut Vec<Vec<String>>) {
        use crate::traits::schema::Kind;
        let mut ty = match s.kind {
            Kind::Array => format!(
                "[]{}",
                s.items
                    .as_ref()
                    .map(|i| format!("{:?}", i.kind).to_lowercase())
                    .unwrap_or_default()
            ),
            k => format!("{k:?}").to_lowercase(),
        };
        let format = s.format.or(s.items.as_ref().and_then(|i| i.format));
        if let Some(f) = format {
            ty += &format!(
                " ({})",
                serde_json::to_value(f)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            );
        }
        if let Some(e) = s
            .one_of
            .as_ref()
            .or(s.items.as_ref().and_then(|i| i.one_of.as_ref()))
        {
            let names: Vec<String> = e
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect();
            ty += &format!(" {}", names.join("|"));
        }
        if let (Some(lo), Some(hi)) = (s.minimum, s.maximum) {
            ty += &format!(" {lo}..{hi}");
        }
        if !path.is_empty() {
            rows.push(vec![
                format!("{path}{}", if required { "*" } else { "" }),
                ty,
                s.default
                    .as_ref()
                    .map(|d| {
                        d.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| d.to_string())
                    })
                    .unwrap_or_else(|| "-".into()),
                s.description.clone().unwrap_or_default(),
            ]);
        }
        let (obj, prefix) = match (&s.items, s.kind) {
            (Some(items), Kind::Array) => (items.as_ref(), format!("{path}[].")),
            _ => (
                s,
                if path.is_empty() {
                    String::new()
                } else {
                    format!("{path}.")
                },
            ),
        };
        for (name, p) in &obj.properties {
            walk(
                p,
                &format!("{prefix}{name}"),
                obj.required.contains(name),
                rows,
            );
        }
    }
    let mut rows = Vec::new();
    walk(&schema, "", false, &mut rows);
    out += "Properties (* required):\n";
    let table = columns(
        &["  PROPERTY", "TYPE", "DEFAULT", "DESCRIPTION"],
        &[false; 4],
        &rows
            .into_iter()
            .map(|mut r| {
                r[0] = format!("  {}", r[0]);
                r
            })
            .collect::<Vec<_>>(),
    );
    out + &table
}

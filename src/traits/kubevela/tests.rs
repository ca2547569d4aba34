use std::path::Path;

use super::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn def(c: &Catalogue, name: &str) -> String {
    template(c.get(name).unwrap()).unwrap()
}

/// The committed definitions are what the catalogue generates, byte for
/// byte, and there is none for a trait the catalogue no longer has.
#[test]
fn committed_definitions_match_the_catalogue() {
    let catalogue = Catalogue::load(&repo().join("config/traits")).unwrap();
    let dir = repo().join(DEFINITIONS_DIR);
    let generated = definitions(&catalogue).unwrap();
    let mut stale = Vec::new();
    for g in &generated {
        let committed = std::fs::read_to_string(dir.join(&g.file)).unwrap_or_default();
        if committed != g.text {
            stale.push(g.file.clone());
        }
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !generated.iter().any(|g| g.file == file) {
            stale.push(format!("{file} (no such trait)"));
        }
    }
    assert!(
        stale.is_empty(),
        "{DEFINITIONS_DIR} is out of date with config/traits/ ({}): regenerate it with\n  {REGENERATE}\n(and remove files of traits that are gone)",
        stale.join(", ")
    );
}

/// A pod gets the workload type `tidalctl check` gives a component of the
/// kind it belongs to.
#[test]
fn pod_template_kinds_agree_with_check() {
    for (kind, _, workload) in POD_TEMPLATE_KINDS {
        assert_eq!(
            super::super::oam::workload_of(kind),
            Ok(Some(workload.to_string())),
            "{kind}"
        );
    }
}

#[test]
fn qos_parameter_translates_the_schema() {
    let c = Catalogue::builtin();
    let t = def(&c, "qos");
    for want in [
        "\tclass: \"online\" | \"offline\"\n",
        "\t// +usage=The node never squeezes the CPU limit below this (e.g. 250m).\n",
        "\tminCPU?: string & =~\"^([0-9]+m|[0-9]+(\\\\.[0-9]{0,3})?|\\\\.[0-9]{1,3})$\" & strings.MaxRunes(256)\n",
        "\tprobe?: close({\n\t\t// +usage=An HTTP/1.1 GET",
        "\t\thttpGet?: close({\n",
        "\t\t\tpath?: string & strings.MaxRunes(256)\n",
        "\t\t\tport: int & >=1 & <=65535\n",
        "\t\ttimeoutSeconds?: int & >=1 & <=60\n",
        "\t\"trait.tidal.dev/qos\": json.Marshal(parameter)\n",
        "\t\"tidal.dev/app\": context.appName\n",
        "\t\"tidal.dev/component\": context.name\n",
        "\tif context.output.kind == \"CronJob\" {\n\t\t\"tidal.dev/workload-type\": \"task\"\n\t}\n",
        "\t\tspec: template: metadata: annotations: _tidal\n",
        "\t\tspec: jobTemplate: spec: template: metadata: annotations: _tidal\n",
    ] {
        assert!(t.contains(want), "{want:?} missing from:\n{t}");
    }
    // No list in qos's schema, so no unused import (CUE refuses those).
    assert!(!t.contains("\"list\""), "{t}");
    assert!(t.starts_with("import (\n\t\"encoding/json\"\n\t\"strings\"\n)\n"));
}

#[test]
fn defaults_are_filled_at_the_top_level_as_tidal_fills_them() {
    let c = Catalogue::builtin();
    let t = def(&c, "security-policy");
    for want in [
        "\tallowPrivilegeEscalation: *false | bool\n",
        "\tseccompProfile: *\"runtime-default\" | \"strict\"\n",
        "\tdropCapabilities?: [...string & =~\"^(?i)(ALL|(CAP_)?(CHOWN|DAC_OVERRIDE|",
        "|CHECKPOINT_RESTORE))$\" & strings.MaxRunes(256)] & list.MaxItems(41)\n",
    ] {
        assert!(t.contains(want), "{want:?} missing from:\n{t}");
    }
    let t = def(&c, "vertical-autoscaler");
    assert!(
        t.contains("\ttargetUtilization: *70 | int & >=10 & <=95\n"),
        "{t}"
    );
    // A default below the top level is documentation: the property stays
    // optional, as tidal fills in only the top level's.
    let yaml = r#"
apiVersion: core.oam.dev/v1beta1
kind: TraitDefinition
metadata: {name: nested}
spec:
  appliesToWorkloads: [task]
  schema:
    openAPIV3Schema:
      type: object
      required: [jobs]
      properties:
        jobs:
          type: array
          items:
            type: object
            required: [job-name]
            properties:
              job-name: {type: string, format: name}
              tries: {type: integer, default: 3}
              kind: {type: string, enum: [a, b]}
              lasts: {type: string, format: span}
        modes: {type: array, items: {type: string, enum: [x, y]}}
"#;
    let c = Catalogue::from_texts([("t".to_string(), yaml.to_string())], "t".into()).unwrap();
    let t = def(&c, "nested");
    for want in [
        "\tjobs: [...close({\n",
        "\t\t\"job-name\": string & =~\"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$\" & strings.MaxRunes(63)\n",
        "\t\ttries?: *3 | int\n",
        "\t\tkind?: \"a\" | \"b\"\n",
        "\t})] & list.MaxItems(64)\n",
        "\tmodes?: [...(\"x\" | \"y\")] & list.MaxItems(64)\n",
    ] {
        assert!(t.contains(want), "{want:?} missing from:\n{t}");
    }
    let yaml = definition(c.get("nested").unwrap()).unwrap();
    assert!(
        yaml.contains("  appliesToWorkloads: [\"jobs.batch\", \"cronjobs.batch\"]\n"),
        "{yaml}"
    );
}

#[test]
fn applies_to_names_kubevelas_resources() {
    let c = Catalogue::builtin();
    let yaml = definition(c.get("vertical-autoscaler").unwrap()).unwrap();
    for want in [
        "  appliesToWorkloads: [\"deployments.apps\", \"statefulsets.apps\", \"daemonsets.apps\"]\n",
        "  conflictsWith: [\"cron-vertical-scaler\"]\n",
        "  podDisruptive: true\n",
        "      template: |\n        import (\n",
    ] {
        assert!(yaml.contains(want), "{want:?} missing from:\n{yaml}");
    }
    let yaml = definition(c.get("qos").unwrap()).unwrap();
    assert!(yaml.contains("  appliesToWorkloads: [\"*\"]\n"), "{yaml}");
    // The YAML reads back: a KubeVela TraitDefinition whose template is the
    // CUE, line for line.
    let v: serde_json::Value = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(v["kind"], "TraitDefinition");
    assert_eq!(v["metadata"]["name"], "qos");
    assert_eq!(
        v["spec"]["schematic"]["cue"]["template"].as_str().unwrap(),
        def(&c, "qos")
    );
    assert!(
        v["metadata"]["annotations"]["definition.oam.dev/description"]
            .as_str()
            .unwrap()
            .starts_with("The component's resource class")
    );

    // A trait only for workloads no KubeVela resource stands for cannot be
    // generated.
    let only = r#"
apiVersion: core.oam.dev/v1beta1
kind: TraitDefinition
metadata: {name: lonely}
spec:
  appliesToWorkloads: [singleton-task]
  schema: {openAPIV3Schema: {type: object}}
"#;
    let c = Catalogue::from_texts([("t".to_string(), only.to_string())], "t".into()).unwrap();
    let e = definition(c.get("lonely").unwrap()).unwrap_err();
    assert!(
        e.contains("lonely: appliesToWorkloads [singleton-task] names no workload type"),
        "{e}"
    );
    assert!(def(&c, "lonely").contains("parameter: close({})\n"));
}

#[test]
fn labels_are_quoted_unless_identifiers() {
    assert_eq!(label("minCPU"), "minCPU");
    assert_eq!(label("job-name"), "\"job-name\"");
    assert_eq!(label("if"), "\"if\"");
    assert_eq!(label("_hidden"), "\"_hidden\"");
    assert_eq!(label("#def"), "\"#def\"");
    assert_eq!(label("trait.tidal.dev/qos"), "\"trait.tidal.dev/qos\"");
}

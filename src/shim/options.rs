//! The runtime options containerd passes with Task.Create, of which tidal
//! reads one: `SystemdCgroup`, the cgroup driver (`cgroups::driver`).
//! containerd sends runc's `containerd.runc.v1.Options` (field 9) when a
//! runtime's type is runc's; for any other type its CRI plugin sends
//! `runtimeoptions.v1.Options`: the runtime's TOML options section as
//! `config_body` (containerd 1.7 and later), or only `config_path`, a TOML
//! file the operator names (containerd 1.6 drops every other key). Absent
//! options say nothing, and the cgroupsPath's form decides.

use std::path::Path;

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use prost::Message;

#[derive(Clone, PartialEq, prost::Message)]
struct RuncOptions {
    #[prost(bool, tag = "9")]
    systemd_cgroup: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RuntimeOptions {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(string, tag = "2")]
    config_path: String,
    #[prost(bytes = "vec", tag = "3")]
    config_body: Vec<u8>,
}

/// `SystemdCgroup` from Create's options: None when they do not say.
pub fn systemd_cgroup(options: Option<&Any>) -> Result<Option<bool>, String> {
    let Some(any) = options else {
        return Ok(None);
    };
    let name = any.type_url.rsplit('/').next().unwrap_or("");
    match name {
        "containerd.runc.v1.Options" => RuncOptions::decode(any.value.as_slice())
            .map(|o| Some(o.systemd_cgroup))
            .map_err(|e| format!("runtime options {name}: {e}")),
        "runtimeoptions.v1.Options" => {
            let o = RuntimeOptions::decode(any.value.as_slice())
                .map_err(|e| format!("runtime options {name}: {e}"))?;
            if !o.config_body.is_empty() {
                let body = String::from_utf8_lossy(&o.config_body);
                return toml_bool(&body, "SystemdCgroup")
                    .map_err(|e| format!("runtime options (containerd's TOML section): {e}"));
            }
            if o.config_path.is_empty() {
                return Ok(None);
            }
            let path = Path::new(&o.config_path);
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("runtime options' ConfigPath {}: {e}", path.display()))?;
            toml_bool(&text, "SystemdCgroup")
                .map_err(|e| format!("runtime options' ConfigPath {}: {e}", path.display()))
        }
        // Options of a type tidal does not know say nothing it reads.
        _ => Ok(None),
    }
}

/// A top-level boolean `key` of a TOML document (before its first table),
/// None when absent. Only what a runtime's options section holds is read:
/// `key = true`, quoted or bare keys, comments.
pub(crate) fn toml_bool(text: &str, key: &str) -> Result<Option<bool>, String> {
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            break;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim().trim_matches('"') != key {
            continue;
        }
        return match v.trim() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            other => Err(format!(
                "line {}: {key} = {other}: expected true or false",
                n + 1
            )),
        };
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> Any {
        let mut a = Any::new();
        a.type_url = type_url.into();
        a.value = value;
        a
    }

    #[test]
    fn runc_options_carry_the_flag_in_field_9() {
        let on = RuncOptions {
            systemd_cgroup: true,
        }
        .encode_to_vec();
        assert_eq!(on, vec![9 << 3, 1]);
        let a = any("containerd.runc.v1.Options", on);
        assert_eq!(systemd_cgroup(Some(&a)), Ok(Some(true)));
        let a = any("containerd.runc.v1.Options", vec![]);
        assert_eq!(systemd_cgroup(Some(&a)), Ok(Some(false)));
        assert_eq!(systemd_cgroup(None), Ok(None));
        let a = any("example.Other", vec![1, 2, 3]);
        assert_eq!(systemd_cgroup(Some(&a)), Ok(None));
    }

    #[test]
    fn containerds_toml_section_is_read() {
        let body = |s: &str| {
            let o = RuntimeOptions {
                config_body: s.as_bytes().to_vec(),
                ..Default::default()
            };
            any("runtimeoptions.v1.Options", o.encode_to_vec())
        };
        let a = body("BinaryName = \"\"\nSystemdCgroup = true\n");
        assert_eq!(systemd_cgroup(Some(&a)), Ok(Some(true)));
        let a = body("\"SystemdCgroup\" = false # kubelet: cgroupfs\n");
        assert_eq!(systemd_cgroup(Some(&a)), Ok(Some(false)));
        let a = body("Other = 1\n[sub]\nSystemdCgroup = true\n");
        assert_eq!(systemd_cgroup(Some(&a)), Ok(None));
        let e = systemd_cgroup(Some(&body("SystemdCgroup = yes"))).unwrap_err();
        assert!(e.contains("line 1") && e.contains("yes"), "{e}");
    }

    #[test]
    fn a_config_path_is_read_and_a_missing_one_named() {
        let file = std::env::temp_dir().join(format!("tidal-options-{}.toml", std::process::id()));
        std::fs::write(&file, "SystemdCgroup = true\n").unwrap();
        let with = |p: &str| {
            let o = RuntimeOptions {
                config_path: p.into(),
                ..Default::default()
            };
            any("runtimeoptions.v1.Options", o.encode_to_vec())
        };
        let a = with(file.to_str().unwrap());
        assert_eq!(systemd_cgroup(Some(&a)), Ok(Some(true)));
        std::fs::remove_file(&file).unwrap();
        let e = systemd_cgroup(Some(&a)).unwrap_err();
        assert!(e.contains(file.to_str().unwrap()), "{e}");
        assert_eq!(systemd_cgroup(Some(&with(""))), Ok(None));
    }
}

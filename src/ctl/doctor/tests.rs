use super::*;

fn table(text: &str) -> toml::Table {
    toml::from_str(text).unwrap()
}

#[test]
fn versions_read_as_containerd_prints_them_and_runtime_path_is_honoured_from_the_fixes() {
    let v = |line: &str| Version::parse(line).unwrap();
    assert_eq!(
        v("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"),
        Version(1, 6, 20)
    );
    assert_eq!(
        v("containerd containerd.io v1.7.13 7c3aca7a"),
        Version(1, 7, 13)
    );
    assert_eq!(
        v("containerd github.com/containerd/containerd/v2 v2.0.1 88c3d9b"),
        Version(2, 0, 1)
    );
    assert_eq!(Version::parse("containerd"), None);
    assert_eq!(v("containerd x 1.6 y"), Version(1, 6, 0));
    for (version, honoured) in [
        (Version(1, 6, 20), false),
        (Version(1, 6, 21), true),
        (Version(1, 7, 0), false),
        (Version(1, 7, 1), true),
        (Version(2, 0, 0), true),
    ] {
        assert_eq!(version.honours_runtime_path(), honoured, "{version}");
    }
}

#[test]
fn tidal_handlers_are_found_in_either_config_version() {
    let v2 = table(
        r#"
version = 2
disabled_plugins = []
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.tidal]
  runtime_type = "io.containerd.tidal.v2"
  runtime_path = "/opt/tidal/containerd-shim-tidal-v2"
  pod_annotations = ["tidal.dev/*", "trait.tidal.dev/*", "app.oam.dev/*"]
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.tidal.options]
  SystemdCgroup = true
  ConfigPath = "/etc/tidal/runtime.toml"
"#,
    );
    assert_eq!(
        Cri::of(&v2),
        Cri {
            disabled: false,
            handlers: vec![Handler {
                name: "tidal".into(),
                runtime_path: Some("/opt/tidal/containerd-shim-tidal-v2".into()),
                pod_annotations: vec![
                    "tidal.dev/*".into(),
                    "trait.tidal.dev/*".into(),
                    "app.oam.dev/*".into()
                ],
                options_systemd: Some(true),
                has_options: true,
                config_path: Some("/etc/tidal/runtime.toml".into()),
            }],
        }
    );
    let v3 = table(
        r#"
version = 3
disabled_plugins = ["io.containerd.cri.v1.runtime"]
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.fast]
  runtime_type = "io.containerd.tidal.v2"
"#,
    );
    let cri = Cri::of(&v3);
    assert!(cri.disabled);
    assert_eq!(cri.handlers.len(), 1);
    assert_eq!(cri.handlers[0].name, "fast");
    assert_eq!(cri.handlers[0].options_systemd, None);
    assert!(!cri.handlers[0].has_options);
    assert!(Cri::of(&table("version = 2")).handlers.is_empty());
}

#[test]
fn globs_match_as_go_path_match_does() {
    assert!(glob("tidal.dev/*", "tidal.dev/qos"));
    assert!(!glob("tidal.dev/*", "trait.tidal.dev/qos"));
    assert!(!glob("*", "tidal.dev/qos"), "* does not cross a slash");
    assert!(glob("*/*", "tidal.dev/qos"));
    assert!(glob("tidal.dev/q?s", "tidal.dev/qos"));
    assert!(glob(r"tidal\.dev/*", "tidal.dev/x"));
    assert!(!glob("tidal.dev/", "tidal.dev/qos"));
}

#[test]
fn a_handler_that_hides_annotations_or_relies_on_an_ignored_runtime_path_is_a_problem() {
    let good = Handler {
        name: "tidal".into(),
        pod_annotations: vec![
            "tidal.dev/*".into(),
            "trait.tidal.dev/*".into(),
            "app.oam.dev/*".into(),
        ],
        ..Default::default()
    };
    let found = check_handler(&good);
    assert!(found.iter().all(|f| f.ok), "{found:?}");

    let hiding = Handler {
        pod_annotations: vec!["tidal.dev/*".into()],
        runtime_path: Some("/opt/tidal/containerd-shim-tidal-v2".into()),
        ..good.clone()
    };
    let found = check_handler(&hiding);
    let annotations = found.iter().find(|f| f.check == "annotations").unwrap();
    assert!(!annotations.ok);
    assert!(
        annotations
            .detail
            .contains("trait.tidal.dev/security-policy")
            && annotations.detail.contains("app.oam.dev/component")
            && !annotations.detail.contains("let tidal.dev/qos"),
        "{annotations:?}"
    );
    // runtime_path on 1.6.20: a problem only when it leaves no shim.
    let old = Some(Version(1, 6, 20));
    let path = runtime_path_finding(&hiding, old, None).unwrap();
    assert!(!path.ok);
    assert!(
        path.detail.contains("containerd 1.6.20 ignores"),
        "{path:?}"
    );
    assert!(path.fix.as_deref().unwrap().contains("PATH"), "{path:?}");
    let on_path = Path::new("/usr/local/bin/containerd-shim-tidal-v2");
    let path = runtime_path_finding(&hiding, old, Some(on_path)).unwrap();
    assert!(path.ok, "{path:?}");
    assert!(
        path.detail.contains("it starts /usr/local/bin/"),
        "{path:?}"
    );
    // Honoured from 1.6.21, and nothing to say without one.
    assert_eq!(
        runtime_path_finding(&hiding, Some(Version(1, 6, 21)), None),
        None
    );
    assert_eq!(runtime_path_finding(&good, old, None), None);
}

#[test]
fn the_driver_is_what_containerd_passes_and_must_agree_with_kubelets() {
    let dir = crate::testfs::FakeDir::new("doctor-driver", &[]);
    let file = dir.join("runtime.toml");
    std::fs::write(&file, "SystemdCgroup = true\n").unwrap();
    let h = Handler {
        name: "tidal".into(),
        options_systemd: Some(false),
        has_options: true,
        config_path: Some(file.to_string_lossy().into_owned()),
        ..Default::default()
    };
    // 1.7 sends the table (false); 1.6 only the ConfigPath file (true).
    assert_eq!(told_systemd(&h, Some(Version(1, 7, 2))), Ok(Some(false)));
    assert_eq!(told_systemd(&h, Some(Version(1, 6, 20))), Ok(Some(true)));
    let bare = Handler {
        name: "tidal".into(),
        ..Default::default()
    };
    assert_eq!(told_systemd(&bare, Some(Version(1, 6, 20))), Ok(None));

    assert_eq!(
        kubelet_driver("kind: KubeletConfiguration\ncgroupDriver: systemd # kubeadm\n"),
        "systemd"
    );
    assert_eq!(kubelet_driver("cgroupDriver: \"cgroupfs\"\n"), "cgroupfs");
    assert_eq!(kubelet_driver("kind: KubeletConfiguration\n"), "cgroupfs");

    let node = |systemd_usable: bool| super::super::node::Report {
        cgroup: "v2",
        hierarchy: "unified",
        controllers: vec!["cpu".into(), "memory".into()],
        systemd: systemd_usable,
        dbus: None,
        drivers: vec![
            super::super::node::DriverReport {
                name: "cgroupfs",
                usable: true,
                why_not: None,
            },
            super::super::node::DriverReport {
                name: "systemd",
                usable: systemd_usable,
                why_not: (!systemd_usable).then(|| "systemd is not running".into()),
            },
        ],
    };
    // Not told: follows kubelet, whatever it is.
    let f = driver(&bare, Ok(None), Some("systemd"), &node(true));
    assert!(
        f.ok && f.detail.contains("follows kubelet's cgroupDriver, systemd"),
        "{f:?}"
    );
    // Told the opposite of kubelet's.
    let f = driver(&bare, Ok(Some(false)), Some("systemd"), &node(true));
    assert!(
        !f.ok && f.detail.contains("kubelet's cgroupDriver is systemd"),
        "{f:?}"
    );
    assert!(f.fix.unwrap().contains("SystemdCgroup = true"));
    // Told systemd where it cannot be had.
    let f = driver(&bare, Ok(Some(true)), None, &node(false));
    assert!(
        !f.ok && f.detail.contains("systemd is not running"),
        "{f:?}"
    );
    // An options file that does not read.
    let f = driver(&bare, Err("ConfigPath /x: gone".into()), None, &node(true));
    assert!(!f.ok && f.detail.contains("ConfigPath /x"), "{f:?}");
}
#[test]
fn the_shim_is_resolved_as_containerd_would() {
    let dir = crate::testfs::FakeDir::new("doctor", &[]);
    let (path_dir, own_dir, opt) = (dir.join("bin"), dir.join("containerd"), dir.join("opt"));
    for d in [&path_dir, &own_dir, &opt] {
        std::fs::create_dir_all(d).unwrap();
    }
    let exe = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    exe(&own_dir.join(SHIM));
    exe(&opt.join(SHIM));
    let h = Handler {
        name: "tidal".into(),
        runtime_path: Some(opt.join(SHIM).to_string_lossy().into_owned()),
        ..Default::default()
    };
    let path = path_dir.to_string_lossy().into_owned();
    // 1.6.20 ignores runtime_path: the one beside containerd is started.
    assert_eq!(
        resolve_shim(&h, Some(Version(1, 6, 20)), &path, Some(&own_dir)),
        Some(own_dir.join(SHIM))
    );
    assert_eq!(
        resolve_shim(&h, Some(Version(1, 6, 21)), &path, Some(&own_dir)),
        Some(opt.join(SHIM))
    );
    // On PATH first, then beside containerd.
    exe(&path_dir.join(SHIM));
    assert_eq!(
        resolve_shim(&h, Some(Version(1, 6, 20)), &path, Some(&own_dir)),
        Some(path_dir.join(SHIM))
    );
    assert_eq!(resolve_shim(&h, Some(Version(1, 6, 20)), "", None), None);
}

#[test]
fn problems_are_rendered_with_their_fix() {
    let found = vec![
        ok("containerd", "1.6.20"),
        problem("runtime", "no runtime", "add one"),
    ];
    let text = render(&found, Output::Table);
    assert_eq!(
        text,
        "ok       containerd   1.6.20\nPROBLEM  runtime      no runtime\n                      fix: add one\n"
    );
    let json: serde_json::Value = serde_json::from_str(&render(&found, Output::Json)).unwrap();
    assert_eq!(json[1]["fix"], "add one");
    assert!(json[0].get("fix").is_none());
}

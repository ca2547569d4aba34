//! `tidalctl traits` against a running tidald, and `tidalctl check` offline,
//! as an operator runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tidalctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidalctl"))
        .args(args)
        .env_remove("TIDAL_TRAITS_DIR")
        .output()
        .expect("run tidalctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tidald on a private state directory; stopped (by pid) when dropped.
struct Agent {
    child: std::process::Child,
    dir: PathBuf,
    /// Kept open: tidald logs to it.
    log: std::io::BufReader<std::process::ChildStderr>,
}

impl Agent {
    fn start(name: &str, traits_dir: Option<&Path>) -> Agent {
        use std::io::BufRead;
        let dir = std::env::temp_dir().join(format!("tidal-traits-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidald"));
        cmd.arg("--state-dir")
            .arg(&dir)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .stderr(Stdio::piped());
        match traits_dir {
            Some(d) => cmd.env("TIDAL_TRAITS_DIR", d),
            None => cmd.env_remove("TIDAL_TRAITS_DIR"),
        };
        let mut child = cmd.spawn().expect("start tidald");
        let log = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut agent = Agent { child, dir, log };
        // Warnings (a broken catalogue) may come before the ready line; the
        // agent is stopped by Drop if it never comes.
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if agent.log.read_line(&mut line).unwrap() == 0 {
                panic!("tidald exited before it was ready: {seen}");
            }
            seen += &line;
            if line.contains("API on") {
                break;
            }
        }
        agent
    }

    fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["--state-dir", self.dir.to_str().unwrap()];
        all.extend_from_slice(args);
        tidalctl(&all)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn traits_lists_and_describes_the_catalogue() {
    if !root() {
        eprintln!("skipped: tidald's API is root-only");
        return;
    }
    let agent = Agent::start("list", None);
    let (code, out, err) = agent.ctl(&["traits"]);
    assert_eq!(code, 0, "{err}");
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        [
            "cron-vertical-scaler",
            "qos",
            "security-policy",
            "vertical-autoscaler"
        ],
        "{out}"
    );
    assert!(out.lines().next().unwrap().starts_with("NAME"), "{out}");
    let va = out
        .lines()
        .find(|l| l.starts_with("vertical-autoscaler"))
        .unwrap();
    assert!(
        va.contains("cron-vertical-scaler") && va.contains("server,singleton-server,worker"),
        "{va}"
    );

    let (code, out, err) = agent.ctl(&["traits", "describe", "security-policy"]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "Applies to:      *",
        "trait.tidal.dev/security-policy",
        "allowPrivilegeEscalation",
        "runtime-default|strict",
        "dropCapabilities",
        "[]string (capability)",
    ] {
        assert!(out.contains(want), "{want} missing from:\n{out}");
    }
    let (code, out, _) = agent.ctl(&["traits", "-o", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[1]["name"], "qos");
    assert_eq!(v[1]["schema"]["required"][0], "class");

    let (code, _, err) = agent.ctl(&["traits", "describe", "gpu-turbo"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no trait \"gpu-turbo\" on this node (it supports: cron-vertical-scaler, qos"),
        "{err}"
    );
}

#[test]
fn tidald_serves_the_nodes_own_catalogue() {
    if !root() {
        eprintln!("skipped: tidald's API is root-only");
        return;
    }
    let dir = std::env::temp_dir().join(format!("tidal-catalogue-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(repo().join("config/traits/qos.yaml"), dir.join("qos.yaml")).unwrap();
    let agent = Agent::start("own", Some(&dir));
    let (code, out, err) = agent.ctl(&["traits"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().count(),
        2,
        "only the node's one definition: {out}"
    );
    let (_, out, _) = agent.ctl(&["traits", "describe", "qos"]);
    assert!(
        out.contains(&format!(
            "Source:          {}",
            dir.join("qos.yaml").display()
        )),
        "{out}"
    );
    drop(agent);
    // A broken catalogue is reported, not papered over.
    std::fs::write(
        dir.join("bad.yaml"),
        "kind: TraitDefinition\napiVersion: core.oam.dev/v1beta1\n",
    )
    .unwrap();
    let agent = Agent::start("broken", Some(&dir));
    let (code, _, err) = agent.ctl(&["traits"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("the node's trait catalogue") && err.contains("bad.yaml"),
        "{err}"
    );
    drop(agent);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_accepts_the_example_application() {
    let file = repo().join("config/oam/shop.yaml");
    let (code, out, err) = tidalctl(&["check", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 2 component(s), 5 trait(s)"), "{out}");
}

/// The KubeVela example (config/kubevela/) passes the same check.
#[test]
fn check_accepts_the_kubevela_application() {
    let file = repo().join("config/kubevela/application.yaml");
    let (code, out, err) = tidalctl(&["check", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 2 component(s), 6 trait(s)"), "{out}");
}

/// `tidalctl traits kubevela` writes the committed definitions, one file a
/// trait, or prints them as one YAML stream.
#[test]
fn traits_kubevela_generates_the_committed_definitions() {
    let committed = repo().join("config/kubevela/definitions");
    let dir = std::env::temp_dir().join(format!("tidal-kubevela-gen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let traits = repo().join("config/traits");
    let (code, out, err) = tidalctl(&[
        "traits",
        "kubevela",
        "--traits",
        traits.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let names = [
        "cron-vertical-scaler",
        "qos",
        "security-policy",
        "vertical-autoscaler",
    ];
    let mut stream = Vec::new();
    for (line, name) in out.lines().zip(names) {
        let file = format!("{name}.yaml");
        assert_eq!(line, dir.join(&file).display().to_string());
        let written = std::fs::read_to_string(dir.join(&file)).unwrap();
        let want = std::fs::read_to_string(committed.join(&file)).unwrap();
        assert_eq!(written, want, "{file}");
        stream.push(want);
    }
    assert_eq!(out.lines().count(), names.len(), "{out}");
    let (code, out, err) = tidalctl(&["traits", "kubevela", "--traits", traits.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, stream.join("---\n"));

    // A catalogue that does not load is reported.
    let bad = dir.join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("broken.yaml"), "kind: TraitDefinition\n").unwrap();
    let (code, out, err) = tidalctl(&["traits", "kubevela", "--traits", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("broken.yaml"), "{err}");
    let (code, out, _) = tidalctl(&["traits", "kubevela", "-h"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Usage: tidalctl traits kubevela") && out.contains("--out <DIR>"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_refuses_conflicts_naming_both_traits() {
    let dir = std::env::temp_dir().join(format!("tidal-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("app.yaml");
    let text = std::fs::read_to_string(repo().join("config/oam/shop.yaml"))
        .unwrap()
        .replace(
            "        - type: vertical-autoscaler\n",
            "        - type: cron-vertical-scaler\n          properties: {jobs: [{name: am, schedule: '0 8 * * 1-5', cpu: '2'}]}\n        - type: vertical-autoscaler\n",
        )
        .replace("seccompProfile: strict", "seccompProfile: off");
    std::fs::write(&file, text).unwrap();
    let (code, out, err) = tidalctl(&["check", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let f = file.display();
    assert!(
        err.contains(&format!("{f}: component web: traits \"cron-vertical-scaler\" and \"vertical-autoscaler\" conflict: both steer the container's CPU and memory limits")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}: component reports: trait security-policy: seccompProfile must be one of \"runtime-default\", \"strict\", not \"off\"")),
        "{err}"
    );
    // The same words the shim gives through CRI for the same pod.
    let (code, _, err) = tidalctl(&["check", "/nonexistent/app.yaml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/app.yaml: No such file"), "{err}");
    let (code, _, err) = tidalctl(&["check"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("the following required arguments were not provided")
            && err.contains("<FILE>"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The helper answers --version like the shim, and run by hand says what
/// it is instead of aborting on the reply pipe it was not given.
#[test]
fn the_helper_reports_its_version_and_is_not_run_by_hand() {
    let helper = env!("CARGO_BIN_EXE_tidal-shim-helper");
    let out = Command::new(helper).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        concat!("tidal-shim-helper ", env!("CARGO_PKG_VERSION"))
    );
    for args in [&[][..], &["--help"], &[r#"{"Kill":{}}"#]] {
        let out = Command::new(helper).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("it is not run by hand"), "{args:?}: {err}");
    }
}

/// `--help` and `-h` are answered, not refused as unknown (issue 17).
#[test]
fn help_is_printed_and_exits_0() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["resize", "--help"],
        &["traits", "describe", "-h"],
        &["check", "-h"],
    ] {
        let (code, out, err) = tidalctl(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.contains("Usage: tidalctl"), "{args:?}: {out}");
    }
    let (_, out, _) = tidalctl(&["--help"]);
    assert!(out.contains("--state-dir <DIR>"), "{out}");
    let (code, out, _) = tidalctl(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(out.contains("complete -F _tidalctl"), "{out}");
    let (code, _, err) = tidalctl(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("'frobnicate'"), "{err}");

    for flag in ["--help", "-h"] {
        let out = Command::new(env!("CARGO_BIN_EXE_tidald"))
            .arg(flag)
            .output()
            .expect("run tidald");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{flag}");
        assert!(
            text.contains("Usage: tidald") && text.contains("--log-format <FORMAT>"),
            "{text}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tidald"))
        .arg("--frob")
        .output()
        .expect("run tidald");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'--frob'"));
}

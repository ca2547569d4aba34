//! tidal's node installer (`config/installer/tidal-installer`, the
//! entrypoint of `config/kubernetes/tidal-installer.yaml`'s image), against
//! a scratch node root (`HOST`): what it writes is what containerd reads
//! (`containerd config dump`), a real containerd runs a container with the
//! shim it installed, it refuses what it must not overwrite without
//! touching anything, and uninstall puts every file back as it was. Then
//! its image, run as the DaemonSet runs it: installs on start, uninstalls
//! on SIGTERM.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

const BEGIN: &str = "# BEGIN tidal runtime";
const BINARIES: [&str; 4] = [
    "containerd-shim-tidal-v2",
    "tidal-shim-helper",
    "tidald",
    "tidalctl",
];

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_tidald"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A scratch node root, removed when dropped.
struct Node(PathBuf);

impl Node {
    fn new(name: &str, config: Option<&str>) -> Node {
        let dir =
            std::env::temp_dir().join(format!("tidal-installer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc/containerd")).unwrap();
        if let Some(c) = config {
            std::fs::write(dir.join("etc/containerd/config.toml"), c).unwrap();
        }
        Node(dir)
    }

    fn path(&self, p: &str) -> PathBuf {
        self.0.join(p.trim_start_matches('/'))
    }

    fn config(&self) -> Option<String> {
        std::fs::read_to_string(self.path("/etc/containerd/config.toml")).ok()
    }

    /// Runs the installer as the image does (busybox sh) with this root.
    fn installer(&self, cmd: &str) -> Output {
        Command::new("busybox")
            .arg("sh")
            .arg(repo().join("config/installer/tidal-installer"))
            .arg(cmd)
            .env("HOST", &self.0)
            .env("TIDAL_BIN", bin_dir())
            .env(
                "RESTART",
                format!("echo restarted >>{}", self.path("/restarts").display()),
            )
            .output()
            .unwrap()
    }

    fn installer_ok(&self, cmd: &str) -> String {
        let out = self.installer(cmd);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "tidal-installer {cmd}: {text}");
        text
    }

    fn restarts(&self) -> usize {
        std::fs::read_to_string(self.path("/restarts"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// The node's files (relative paths), for "nothing changed".
    fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() && !p.is_symlink() {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
        walk(&self.0, &self.0, &mut out);
        out.sort();
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// containerd's own reading of a config file.
fn dump(config: &Path) -> String {
    let out = Command::new("containerd")
        .arg("--config")
        .arg(config)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "containerd cannot read {}: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of one table in `config dump`'s output.
fn table<'a>(dump: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!("[{name}]");
    let mut lines = dump.lines().skip_while(|l| l.trim() != header);
    let mut out: Vec<&str> = lines.next().into_iter().collect();
    out.extend(lines.take_while(|l| !l.trim().starts_with('[')));
    out
}

const CRI: &str = r#"plugins."io.containerd.grpc.v1.cri".containerd.runtimes"#;

#[test]
fn the_installer_registers_tidal_and_undoes_exactly_that() {
    require_root();
    let original = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.example/pause:3.9\"\n";
    let node = Node::new("v2", Some(original));
    let log = node.installer_ok("install");
    assert!(log.contains("registered runtime handler tidal"), "{log}");
    assert_eq!(node.restarts(), 1);

    // What containerd reads: tidal's handler with tidal's annotations,
    // runc's kept, the node's own settings untouched.
    let d = dump(&node.path("/etc/containerd/config.toml"));
    let tidal = table(&d, &format!("{CRI}.tidal")).join("\n");
    assert!(
        tidal.contains(r#"runtime_type = "io.containerd.tidal.v2""#),
        "{tidal}"
    );
    assert!(
        tidal
            .contains(r#"pod_annotations = ["tidal.dev/*", "trait.tidal.dev/*", "app.oam.dev/*"]"#),
        "{tidal}"
    );
    let runc = table(&d, &format!("{CRI}.runc")).join("\n");
    assert!(
        runc.contains(r#"runtime_type = "io.containerd.runc.v2""#),
        "{runc}"
    );
    assert!(d.contains(r#"sandbox_image = "registry.example/pause:3.9""#));
    for b in BINARIES {
        let installed = node.path(&format!("/opt/tidal/bin/{b}"));
        let meta = std::fs::metadata(&installed).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755, "{b}");
        assert_eq!(
            meta.len(),
            std::fs::metadata(bin_dir().join(b)).unwrap().len()
        );
    }
    // The shim on containerd's PATH, a link that holds on the node as here.
    let link = node.path("/usr/local/bin/containerd-shim-tidal-v2");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        PathBuf::from("../../../opt/tidal/bin/containerd-shim-tidal-v2")
    );

    // Again (the pod restarted): nothing doubled, containerd left alone.
    node.installer_ok("install");
    assert_eq!(node.config().unwrap().matches(BEGIN).count(), 1);
    assert_eq!(node.restarts(), 1);

    // A real containerd with that directory on its PATH runs a container
    // with the shim the installer put there.
    let env = Env::start_at("installer", &node.path("/usr/local/bin"));
    let (code, out) = env.run(TIDAL, "inst-echo", &["echo", "from-the-installed-shim"]);
    assert_eq!((code, out.trim()), (0, "from-the-installed-shim"));
    env.run_detached(TIDAL, "inst-live", &[], &["sleep", "100"]);
    let shims = env.shims();
    assert!(!shims.is_empty());
    let argv0 = std::fs::read_to_string(format!("/proc/{}/cmdline", shims[0])).unwrap();
    assert!(
        argv0.starts_with(&link.display().to_string()),
        "the shim containerd started: {argv0:?}"
    );

    // Uninstall while that shim runs: unregistered, containerd restarted,
    // the binaries kept for containerd to clean up after the pod.
    let log = node.installer_ok("uninstall");
    assert_eq!(node.config().unwrap(), original, "the config as it was");
    assert_eq!(node.restarts(), 2);
    assert!(log.contains("tidal shims still run"), "{log}");
    assert!(node
        .path("/opt/tidal/bin/containerd-shim-tidal-v2")
        .exists());
    env.remove("inst-live");
    drop(env);
    // Once none runs, the rest goes.
    let log = node.installer_ok("uninstall");
    assert!(log.contains("removed tidal's binaries"), "{log}");
    assert_eq!(node.restarts(), 2, "nothing left to unregister");
    assert_eq!(node.files(), vec!["etc/containerd/config.toml", "restarts"]);

    // A node with no config: one written, and removed with the handler.
    let bare = Node::new("bare", None);
    bare.installer_ok("install");
    let d = dump(&bare.path("/etc/containerd/config.toml"));
    assert!(!table(&d, &format!("{CRI}.tidal")).is_empty());
    assert!(!table(&d, &format!("{CRI}.runc")).is_empty());
    bare.installer_ok("uninstall");
    assert_eq!(bare.files(), vec!["restarts"]);

    // A config without a final newline, readable by root alone: the
    // marker on a line of its own, and after uninstall the same bytes and
    // the same mode.
    let bare_end = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"x\"";
    let tight = Node::new("tight", Some(bare_end));
    let path = tight.path("/etc/containerd/config.toml");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        tight.installer_ok("install");
        assert!(dump(&path).contains(r#"sandbox_image = "x""#));
        assert!(!table(&dump(&path), &format!("{CRI}.tidal")).is_empty());
        tight.installer_ok("uninstall");
        assert_eq!(tight.config().unwrap(), bare_end);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the config's mode");
    }

    // A restart that fails takes the registration back; the next install
    // registers and restarts again.
    let flaky = Node::new("flaky", Some("version = 2\n"));
    let failed = Command::new("busybox")
        .arg("sh")
        .arg(repo().join("config/installer/tidal-installer"))
        .arg("install")
        .env("HOST", &flaky.0)
        .env("TIDAL_BIN", bin_dir())
        .env("RESTART", "false")
        .output()
        .unwrap();
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("tidal unregistered again"),
        "{failed:?}"
    );
    assert_eq!(flaky.config().unwrap(), "version = 2\n");
    flaky.installer_ok("install");
    assert_eq!(flaky.restarts(), 1, "registered and restarted this time");

    // containerd 2.x: a drop-in, when config.toml imports conf.d.
    let v3 = "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n";
    let two = Node::new("v3", Some(v3));
    two.installer_ok("install");
    let dropin_path = two.path("/etc/containerd/conf.d/tidal.toml");
    let dropin = std::fs::read_to_string(&dropin_path).unwrap();
    assert!(dropin.starts_with("version = 3\n"), "{dropin}");
    assert!(
        dropin.contains(r#"[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.tidal]"#)
    );
    assert_eq!(two.config().unwrap(), v3);
    // An older installer's drop-in (fewer pod annotations) is rewritten.
    std::fs::write(&dropin_path, dropin.replace(r#", "app.oam.dev/*""#, "")).unwrap();
    let log = two.installer_ok("install");
    assert!(log.contains("another version's"), "{log}");
    assert_eq!(std::fs::read_to_string(&dropin_path).unwrap(), dropin);
    assert_eq!(two.restarts(), 2);
    two.installer_ok("uninstall");
    assert!(!dropin_path.exists());
}

/// An upgrade: the registration an older installer wrote (other
/// annotations) is replaced by this one's and containerd restarted once,
/// in a config of the node's, in one written from nothing and in one whose
/// runc table was the installer's; uninstall still gives the config back.
#[test]
fn the_installer_rewrites_an_older_versions_registration() {
    require_root();
    let original =
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"x\"\n";
    for (name, config) in [("old-v2", Some(original)), ("old-bare", None)] {
        let node = Node::new(name, config);
        node.installer_ok("install");
        let current = node.config().unwrap();
        let older = current.replace(r#", "app.oam.dev/*""#, "");
        assert_ne!(older, current);
        std::fs::write(node.path("/etc/containerd/config.toml"), &older).unwrap();
        let log = node.installer_ok("install");
        assert!(log.contains("another version's"), "{name}: {log}");
        assert_eq!(node.config().unwrap(), current, "{name}");
        assert_eq!(node.restarts(), 2, "{name}");
        let d = dump(&node.path("/etc/containerd/config.toml"));
        assert!(!table(&d, &format!("{CRI}.runc")).is_empty(), "{name}: {d}");
        // The same version again changes nothing.
        let log = node.installer_ok("install");
        assert!(log.contains("registered in"), "{name}: {log}");
        assert_eq!(node.restarts(), 2, "{name}");
        node.installer_ok("uninstall");
        assert_eq!(node.config().as_deref(), config, "{name}");
        assert!(
            node.files().iter().all(|f| !f.contains("tidal-installer")),
            "{name}: {:?}",
            node.files()
        );
    }
}

#[test]
fn the_installer_refuses_what_it_must_not_overwrite_and_changes_nothing() {
    let refused = |node: &Node, names: &[&str]| {
        let before = node.files();
        let config = node.config();
        let out = node.installer("install");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "installed: {err}");
        for n in names {
            assert!(err.contains(n), "the refusal names {n:?}: {err}");
        }
        assert!(err.contains("nothing was changed"), "{err}");
        assert_eq!(node.files(), before, "files changed");
        assert_eq!(node.config(), config);
    };
    // containerd 2.x whose config imports no drop-ins.
    refused(
        &Node::new("noimports", Some("version = 3\n")),
        &["does not import", "conf.d/*.toml", "imports = "],
    );
    // A tidal table somebody else wrote.
    refused(
        &Node::new(
            "theirs",
            Some("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.tidal]\n  runtime_type = \"io.containerd.tidal.v2\"\n"),
        ),
        &["names a tidal runtime already"],
    );
    // containerd 2.x with a tidal runtime in a drop-in of somebody else's.
    let theirs3 = Node::new(
        "theirs3",
        Some("version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n"),
    );
    std::fs::create_dir_all(theirs3.path("/etc/containerd/conf.d")).unwrap();
    std::fs::write(
        theirs3.path("/etc/containerd/conf.d/tidal.toml"),
        "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.tidal]\n",
    )
    .unwrap();
    refused(&theirs3, &["names a tidal runtime already"]);
    // A version 1 config.
    refused(
        &Node::new("v1", Some("[plugins.cri]\n")),
        &["no version line", "version = 2"],
    );
    // The Debian package's shim, or a hand install's, on PATH.
    let node = Node::new("foreign", Some("version = 2\n"));
    std::fs::create_dir_all(node.path("/usr/local/bin")).unwrap();
    std::fs::write(
        node.path("/usr/local/bin/containerd-shim-tidal-v2"),
        "theirs",
    )
    .unwrap();
    refused(
        &node,
        &[
            "/usr/local/bin/containerd-shim-tidal-v2",
            "not tidal-installer's",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(node.path("/usr/local/bin/containerd-shim-tidal-v2")).unwrap(),
        "theirs"
    );
}

#[test]
fn the_installer_image_installs_on_start_and_uninstalls_on_sigterm() {
    let env = Env::start("installer-image");
    let node = Node::new("image", Some("version = 2\n"));
    let name = "localhost/tidal/installer:test";
    env.import_image("installer", name);
    // As the DaemonSet runs it (privileged, the node's directories under
    // /host), with a restart it can make here.
    let host = format!(
        "type=bind,src={},dst=/host,options=rbind:rw",
        node.0.display()
    );
    env.ctr_ok(&[
        "run",
        "-d",
        "--privileged",
        "--mount",
        &host,
        "--env",
        "RESTART=echo restarted >>/host/restarts",
        name,
        "inst-ds",
    ]);
    let installed = eventually(Duration::from_secs(30), || {
        node.config().is_some_and(|c| c.contains(BEGIN)) && node.restarts() == 1
    });
    assert!(
        installed,
        "not installed: {:?} {:?}",
        node.files(),
        env.task("inst-ds")
    );
    for b in BINARIES {
        assert!(node.path(&format!("/opt/tidal/bin/{b}")).exists(), "{b}");
    }
    dump(&node.path("/etc/containerd/config.toml"));

    env.ctr_ok(&["task", "kill", "-s", "SIGTERM", "inst-ds"]);
    let ended = env.wait_status("inst-ds", "STOPPED", Duration::from_secs(30));
    assert!(
        ended,
        "the installer did not end on SIGTERM: {:?}",
        env.task("inst-ds")
    );
    assert_eq!(node.config().unwrap(), "version = 2\n");
    assert_eq!(node.restarts(), 2);
    assert!(!node.path("/opt/tidal/bin").exists());
    assert!(!node
        .path("/usr/local/bin/containerd-shim-tidal-v2")
        .exists());
    env.remove("inst-ds");
}

fn containerd_pid() -> String {
    let out = Command::new("systemctl")
        .args(["show", "-p", "MainPID", "--value", "containerd"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
#[ignore = "restarts the machine's containerd: hack/vm systemd runs it in its guest"]
fn the_installer_restarts_a_systemd_nodes_containerd_through_pid_1() {
    require_root();
    assert!(
        Path::new("/run/systemd/system").is_dir(),
        "needs systemd as init"
    );
    // The guest's containerd, with a config of its own.
    let config = Path::new("/etc/containerd/config.toml");
    let before = std::fs::read(config).ok();
    std::fs::create_dir_all("/etc/containerd").unwrap();
    std::fs::write(config, "version = 2\n").unwrap();
    let ok = |args: &[&str]| {
        let out = Command::new("systemctl").args(args).output().unwrap();
        assert!(out.status.success(), "systemctl {args:?}: {out:?}");
    };
    ok(&["restart", "containerd"]);
    let first = containerd_pid();

    // As the DaemonSet runs it, but with the node as its root: the default
    // restart, systemctl in PID 1's namespaces.
    let install = Command::new("busybox")
        .arg("sh")
        .arg(repo().join("config/installer/tidal-installer"))
        .arg("install")
        .env("HOST", "/")
        .env("TIDAL_BIN", bin_dir())
        .output()
        .unwrap();
    assert!(install.status.success(), "{install:?}");
    let second = containerd_pid();
    assert!(
        second != first && second != "0",
        "containerd was not restarted: {first} -> {second}"
    );
    let ctr = |args: &[&str]| {
        let out = Command::new("ctr")
            .args(["-n", "tidal"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ctr {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let up = eventually(Duration::from_secs(30), || {
        Command::new("ctr")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(up, "containerd is not back");
    let scratch = std::env::temp_dir().join(format!("tidal-installer-node-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let tar = scratch.join("busybox.tar");
    let built = Command::new(repo().join("hack/image"))
        .arg(&tar)
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    ctr(&["images", "import", tar.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&scratch);
    // containerd finds the shim on its PATH, through the installer's link.
    let out = ctr(&[
        "run",
        "--rm",
        "--runtime",
        TIDAL,
        IMAGE,
        "inst-node",
        "echo",
        "installed",
    ]);
    assert_eq!(out.trim(), "installed");

    let uninstall = Command::new("busybox")
        .arg("sh")
        .arg(repo().join("config/installer/tidal-installer"))
        .arg("uninstall")
        .env("HOST", "/")
        .output()
        .unwrap();
    assert!(uninstall.status.success(), "{uninstall:?}");
    let third = containerd_pid();
    assert!(
        third != second && third != "0",
        "not restarted on uninstall"
    );
    assert_eq!(std::fs::read_to_string(config).unwrap(), "version = 2\n");
    assert!(!Path::new("/opt/tidal/bin").exists());
    assert!(!Path::new("/usr/local/bin/containerd-shim-tidal-v2").exists());
    assert!(!Path::new("/usr/local/bin/tidalctl").exists());

    ok(&["stop", "containerd"]);
    match before {
        Some(b) => std::fs::write(config, b).unwrap(),
        None => std::fs::remove_file(config).unwrap(),
    }
}

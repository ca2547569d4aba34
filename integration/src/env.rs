//! A private containerd with its CRI plugin on, brought up by
//! `hack/containerd-env up DIR SHIM_DIR --cri` and torn down on drop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root (the parent of this package).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ sits in the repository")
        .to_path_buf()
}

/// Where `containerd-shim-tidal-v2` is: `TIDAL_SHIM_DIR`, else the build
/// this test or benchmark belongs to (`cargo test --workspace` builds the
/// binaries before any test runs): the directory above its own `deps/`.
pub fn shim_dir() -> PathBuf {
    let dir = std::env::var_os("TIDAL_SHIM_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.to_path_buf())
        })
        .unwrap_or_else(|| repo().join("target/debug"));
    let shim = dir.join("containerd-shim-tidal-v2");
    assert!(
        shim.is_file(),
        "{} is missing: build it first (cargo build --bins) or set TIDAL_SHIM_DIR",
        shim.display()
    );
    dir
}

pub struct CriEnv {
    pub dir: PathBuf,
    vars: HashMap<String, String>,
}

fn containerd_env(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(repo().join("hack/containerd-env"))
        .arg(args[0])
        .arg(dir)
        .args(&args[1..])
        .output()
        .expect("run hack/containerd-env")
}

impl CriEnv {
    /// Starts containerd under /tmp/tidal-cri-NAME-PID.
    pub fn start(name: &str) -> CriEnv {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert!(
            euid == 0,
            "the CRI suite needs root (it starts containerd and real pods): run hack/test as root"
        );
        let dir = PathBuf::from(format!("/tmp/tidal-cri-{name}-{}", std::process::id()));
        let _ = containerd_env(&["down"], &dir);
        let shims = shim_dir();
        let out = containerd_env(&["up", shims.to_str().unwrap(), "--cri"], &dir);
        assert!(
            out.status.success(),
            "containerd-env up failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let vars = std::fs::read_to_string(dir.join("env"))
            .expect("containerd-env wrote no env file")
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CriEnv { dir, vars }
    }

    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("containerd-env gave no {key}"))
    }

    pub fn socket(&self) -> PathBuf {
        PathBuf::from(self.var("CRI_ENDPOINT"))
    }

    /// The bridge's own address: the host side of the pod network.
    pub fn host_ip(&self) -> String {
        let subnet = self.var("TIDAL_POD_SUBNET");
        let net = subnet.trim_end_matches("0/24");
        format!("{net}1")
    }

    /// tidal's state directory in this environment (`TIDAL_STATE_DIR`).
    pub fn tidal_state(&self) -> PathBuf {
        self.dir.join("tidal")
    }

    /// Stops containerd alone; shims and containers go on.
    pub fn stop_daemon(&self) {
        let out = containerd_env(&["stop-daemon"], &self.dir);
        assert!(out.status.success(), "stop-daemon: {out:?}");
    }

    pub fn start_daemon(&self) {
        let out = containerd_env(&["start-daemon"], &self.dir);
        assert!(out.status.success(), "start-daemon: {out:?}");
    }

    /// The containerd log so far, for failure reports.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for CriEnv {
    fn drop(&mut self) {
        let out = containerd_env(&["down"], &self.dir);
        if !out.status.success() {
            eprintln!(
                "containerd-env down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

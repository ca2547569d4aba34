//! Who makes a container's cgroup: the cgroupfs driver (libcontainer makes
//! the directory at the spec's `cgroupsPath`) or the systemd driver (systemd
//! makes a transient scope under the pod's slice, asked over D-Bus, as
//! kubelet's `cgroupDriver: systemd` expects). Chosen from the runtime
//! options' `SystemdCgroup`, when containerd passes them, and the form of
//! `cgroupsPath`, which containerd's CRI plugin writes as
//! `slice:prefix:name` exactly when kubelet's pod cgroup is a systemd
//! slice; then checked against what the node has. Pure but for `Node::here`.

use std::fmt;
use std::path::Path;

/// The cgroup driver of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    Cgroupfs,
    Systemd(Scope),
}

impl Driver {
    pub fn is_systemd(&self) -> bool {
        matches!(self, Driver::Systemd(_))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Driver::Cgroupfs => "cgroupfs",
            Driver::Systemd(_) => "systemd",
        }
    }
}

/// A systemd `cgroupsPath` (`slice:prefix:name`) taken apart: the parent
/// slice (`system.slice` when empty, as runc does) and the unit systemd
/// makes for the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub slice: String,
    pub unit: String,
}

impl Scope {
    /// The systemd form of `path`, or None when it is a cgroupfs path. A
    /// cgroupfs path is a directory path; the systemd form has exactly three
    /// `:`-separated parts, no `/`, and a parent that is empty or a slice.
    pub fn parse(path: &str) -> Option<Result<Scope, DriverError>> {
        let parts: Vec<&str> = path.split(':').collect();
        let [slice, prefix, name] = parts[..] else {
            return None;
        };
        if path.contains('/') || !(slice.is_empty() || slice.ends_with(".slice")) {
            return None;
        }
        let bad = |why: &str| {
            Some(Err(DriverError::BadSystemdPath {
                path: path.to_string(),
                why: why.to_string(),
            }))
        };
        if slice == ".slice" || slice.starts_with('-') && slice != "-.slice" {
            return bad("the slice has no name");
        }
        if name.is_empty() {
            return bad("the unit has no name");
        }
        // The name libcontainer gives the unit it asks systemd for (an
        // empty prefix included): the name a resize then updates.
        let unit = if name.ends_with(".slice") {
            name.to_string()
        } else {
            format!("{prefix}-{name}.scope")
        };
        if !unit.bytes().all(unit_char) {
            return bad("a systemd unit name takes only ASCII letters, digits and :-_.\\");
        }
        let slice = match slice {
            "" => "system.slice".to_string(),
            s => s.to_string(),
        };
        Some(Ok(Scope { slice, unit }))
    }

    /// The scope's cgroup below the hierarchy's root, as systemd lays slices
    /// out: `a-b.slice` is `a.slice/a-b.slice`.
    pub fn cgroup(&self) -> String {
        let mut path = String::new();
        let stem = self.slice.trim_end_matches(".slice");
        if stem != "-" {
            let mut prefix = String::new();
            for part in stem.split('-') {
                path.push('/');
                path.push_str(&prefix);
                path.push_str(part);
                path.push_str(".slice");
                prefix.push_str(part);
                prefix.push('-');
            }
        }
        format!("{path}/{}", self.unit)
    }
}

fn unit_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b)
}

/// What the node offers a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// systemd runs as the init system (`/run/systemd/system` exists).
    pub systemd: bool,
    /// `/sys/fs/cgroup` is the unified (v2) hierarchy.
    pub unified: bool,
}

impl Node {
    pub fn here() -> Node {
        Node::at(Path::new("/"))
    }

    /// The node whose root is `root` (tests use a scratch directory).
    pub fn at(root: &Path) -> Node {
        let systemd = std::fs::symlink_metadata(root.join("run/systemd/system"))
            .map(|m| m.is_dir())
            .unwrap_or(false);
        let unified = nix::sys::statfs::statfs(&root.join("sys/fs/cgroup"))
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false);
        Node { systemd, unified }
    }

    pub fn version(&self) -> &'static str {
        if self.unified {
            "v2"
        } else {
            "v1"
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    #[error("cgroupsPath {path:?} is systemd's slice:prefix:name, but {why}")]
    BadSystemdPath { path: String, why: String },
    #[error(
        "the runtime options say SystemdCgroup = true but cgroupsPath {path:?} is not systemd's \
         slice:prefix:name: kubelet's cgroupDriver (cgroupfs) and containerd's SystemdCgroup disagree"
    )]
    NotSystemdPath { path: String },
    #[error(
        "cgroupsPath {path:?} is systemd's slice:prefix:name but the runtime options say \
         SystemdCgroup = false: kubelet's cgroupDriver (systemd) and containerd's SystemdCgroup disagree"
    )]
    NotCgroupfsPath { path: String },
    #[error(
        "{asked} asks for the systemd cgroup driver, but systemd is not running on this node \
         (/run/systemd/system is missing): use kubelet's cgroupDriver: cgroupfs"
    )]
    NoSystemd { asked: String },
}

/// The driver for a container: `systemd_cgroup` is the runtime options'
/// `SystemdCgroup` when containerd passed it, `cgroups_path` the spec's.
pub fn choose(
    systemd_cgroup: Option<bool>,
    cgroups_path: Option<&str>,
) -> Result<Driver, DriverError> {
    let path = cgroups_path.unwrap_or("");
    if path.is_empty() {
        return match systemd_cgroup {
            Some(true) => Err(DriverError::NotSystemdPath { path: path.into() }),
            _ => Ok(Driver::Cgroupfs),
        };
    }
    match (Scope::parse(path), systemd_cgroup) {
        (Some(Err(e)), _) => Err(e),
        (Some(Ok(_)), Some(false)) => Err(DriverError::NotCgroupfsPath { path: path.into() }),
        (Some(Ok(scope)), _) => Ok(Driver::Systemd(scope)),
        (None, Some(true)) => Err(DriverError::NotSystemdPath { path: path.into() }),
        (None, _) => Ok(Driver::Cgroupfs),
    }
}

/// Whether `node` can give a container `driver`; `asked` names what asked
/// for it in the error.
pub fn check(driver: &Driver, node: Node, asked: &str) -> Result<(), DriverError> {
    if !driver.is_systemd() {
        return Ok(());
    }
    if !node.systemd {
        return Err(DriverError::NoSystemd {
            asked: asked.into(),
        });
    }
    Ok(())
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}", self.unit, self.slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(path: &str) -> Scope {
        Scope::parse(path).unwrap().unwrap()
    }

    #[test]
    fn containerd_cri_paths_are_scopes_under_the_pod_slice() {
        let s = scope("kubepods-burstable-pod1234.slice:cri-containerd:abc");
        assert_eq!(s.slice, "kubepods-burstable-pod1234.slice");
        assert_eq!(s.unit, "cri-containerd-abc.scope");
        assert_eq!(
            s.cgroup(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abc.scope"
        );
        assert_eq!(scope(":runc:x").slice, "system.slice");
        assert_eq!(scope("-.slice:p:x").cgroup(), "/p-x.scope");
        assert_eq!(
            scope("a.slice::x").unit,
            "-x.scope",
            "as libcontainer names it"
        );
        assert_eq!(scope("a.slice:p:b.slice").unit, "b.slice");
    }

    #[test]
    fn cgroupfs_paths_are_not_taken_for_systemd_ones() {
        for p in [
            "/kubepods/burstable/pod1/abc",
            "kubepods/abc",
            "a:b",
            "a.slice:b:c:d",
            "/a.slice:b:c",
            "notaslice:b:c",
        ] {
            assert!(Scope::parse(p).is_none(), "{p}");
        }
    }

    #[test]
    fn malformed_systemd_paths_say_what_is_wrong() {
        for (p, why) in [
            ("a.slice:p:", "no name"),
            (".slice:p:x", "slice has no name"),
            ("a.slice:p:x y", "unit name"),
        ] {
            let e = Scope::parse(p).unwrap().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(p), "{p}: {e}");
        }
    }

    #[test]
    fn the_option_and_the_path_must_agree() {
        let systemd = "kubepods.slice:cri-containerd:abc";
        let fs = "/kubepods/abc";
        assert!(choose(None, Some(systemd)).unwrap().is_systemd());
        assert!(choose(Some(true), Some(systemd)).unwrap().is_systemd());
        assert_eq!(choose(None, Some(fs)), Ok(Driver::Cgroupfs));
        assert_eq!(choose(Some(false), Some(fs)), Ok(Driver::Cgroupfs));
        assert_eq!(choose(None, None), Ok(Driver::Cgroupfs));
        assert!(
            choose(Some(true), None).is_err(),
            "systemd's driver needs a path"
        );
        let e = choose(Some(true), Some(fs)).unwrap_err().to_string();
        assert!(e.contains("SystemdCgroup = true") && e.contains(fs), "{e}");
        let e = choose(Some(false), Some(systemd)).unwrap_err().to_string();
        assert!(
            e.contains("SystemdCgroup = false") && e.contains(systemd),
            "{e}"
        );
    }

    #[test]
    fn the_systemd_driver_needs_systemd_on_either_hierarchy() {
        let d = choose(None, Some("kubepods.slice:cri-containerd:abc")).unwrap();
        let asked = "container abc's cgroupsPath";
        let both = Node {
            systemd: true,
            unified: true,
        };
        assert_eq!(check(&d, both, asked), Ok(()));
        let e = check(
            &d,
            Node {
                systemd: false,
                unified: true,
            },
            asked,
        )
        .unwrap_err();
        assert!(e.to_string().contains("systemd is not running"), "{e}");
        let legacy = Node {
            systemd: true,
            unified: false,
        };
        assert_eq!(check(&d, legacy, asked), Ok(()));
        let none = Node {
            systemd: false,
            unified: false,
        };
        assert_eq!(check(&Driver::Cgroupfs, none, asked), Ok(()));
    }

    #[test]
    fn a_node_without_systemd_is_seen_as_such() {
        let dir = std::env::temp_dir().join(format!("tidal-driver-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("run")).unwrap();
        assert!(!Node::at(&dir).systemd);
        std::fs::create_dir_all(dir.join("run/systemd/system")).unwrap();
        assert!(Node::at(&dir).systemd);
        assert!(
            !Node::at(&dir).unified,
            "no cgroup2 mount in a scratch directory"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

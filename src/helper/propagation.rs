//! Mount propagation as runc applies it, where libcontainer 0.7 falls short.
//!
//! libcontainer 0.7 differs from runc in two ways that CRI volumes hit:
//!
//! * `linux.rootfsPropagation` accepts only `shared`, `private`, `slave` and
//!   `unbindable`; the `rshared`/`rslave`/`rprivate`/`runbindable` that
//!   containerd writes fail the init process with
//!   `UnknownRootfsPropagation` ("failed to prepare rootfs"). Its pre-pivot
//!   step always adds `MS_REC`, so the plain names already mean what runc does
//!   with the `r` forms there; only the post-pivot step on `/` is not
//!   recursive.
//! * Per-mount propagation options (`rprivate`, `rslave`, `rshared`, ...) are
//!   parsed and then dropped: bind mounts are cloned with `open_tree` and keep
//!   the propagation of their source in the container's namespace (a slave of
//!   the host by default), where runc makes each one what its options say.
//!
//! So before libcontainer reads the bundle, [`prepare`] rewrites
//! `rootfsPropagation` to the name libcontainer accepts and notes what is
//! left; after it created the container, and before its process runs,
//! [`apply`] enters the container's mount namespace and applies each mount's
//! propagation flags in spec order, then the recursive flag runc gives `/`
//! after `pivot_root` for `rshared`/`runbindable`, in runc's order.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

/// Why mount propagation could not be prepared or applied.
#[derive(Debug, thiserror::Error)]
pub enum PropagationError {
    /// The spec is wrong: the pod's bundle, not the node.
    #[error("a mount with propagation options has no destination")]
    NoDestination,
    /// Rewriting the bundle failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encode spec: {0}")]
    Encode(serde_json::Error),
    #[error("open mount namespace of {pid}: {source}")]
    Namespace { pid: i32, source: std::io::Error },
    /// The forked child that changes the mounts reported this.
    #[error("mount propagation: {0}")]
    Apply(String),
}

impl PropagationError {
    /// Whether the bundle itself is at fault (rather than the node).
    pub fn is_invalid_spec(&self) -> bool {
        matches!(self, Self::NoDestination)
    }
}

/// What [`apply`] does once the container exists.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// Each mount with propagation options: its destination inside the
    /// container and its propagation flags, in spec order.
    mounts: Vec<(PathBuf, Vec<MsFlags>)>,
    /// The recursive flag runc applies to the container's `/` after
    /// `pivot_root` and libcontainer does not.
    root: Option<MsFlags>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty() && self.root.is_none()
    }
}

/// runc's `mountPropagationMapping`.
fn propagation_flag(option: &str) -> Option<MsFlags> {
    Some(match option {
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "private" => MsFlags::MS_PRIVATE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => return None,
    })
}

/// The `rootfsPropagation` libcontainer 0.7 accepts for a runc one, and the
/// recursive flag runc then applies to `/` after `pivot_root`.
fn rootfs_propagation(value: &str) -> (&str, Option<MsFlags>) {
    match value {
        "rshared" => ("shared", Some(MsFlags::MS_SHARED | MsFlags::MS_REC)),
        "rslave" => ("slave", None),
        "rprivate" => ("private", None),
        "runbindable" => ("unbindable", Some(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC)),
        other => (other, None),
    }
}

/// Reads the plan from `spec` and rewrites its `rootfsPropagation` for
/// libcontainer; returns whether `spec` changed.
pub fn plan_spec(spec: &mut serde_json::Value) -> Result<(Plan, bool), PropagationError> {
    let mut plan = Plan::default();
    for m in spec
        .get("mounts")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
    {
        let flags: Vec<MsFlags> = m
            .get("options")
            .and_then(|o| o.as_array())
            .into_iter()
            .flatten()
            .filter_map(|o| o.as_str().and_then(propagation_flag))
            .collect();
        if flags.is_empty() {
            continue;
        }
        let dest = m
            .get("destination")
            .and_then(|d| d.as_str())
            .ok_or(PropagationError::NoDestination)?;
        plan.mounts.push((Path::new("/").join(dest), flags));
    }
    let mut changed = false;
    if let Some(value) = spec.pointer_mut("/linux/rootfsPropagation") {
        if let Some(given) = value.as_str() {
            let (accepted, root) = rootfs_propagation(given);
            plan.root = root;
            if accepted != given {
                *value = serde_json::Value::String(accepted.to_string());
                changed = true;
            }
        }
    }
    Ok((plan, changed))
}

/// Rewrites `spec`, read from the bundle's `config.json` at `path`, where
/// libcontainer would reject it (the file too, also when the caller has
/// `changed` the spec already), and returns what [`apply`] does after the
/// container is created.
pub fn prepare(
    path: &Path,
    spec: &mut serde_json::Value,
    changed: bool,
) -> Result<Plan, PropagationError> {
    let (plan, rewritten) = plan_spec(spec)?;
    if changed || rewritten {
        let tmp = path.with_file_name(".config.json.tidal");
        let out = serde_json::to_vec(&spec).map_err(PropagationError::Encode)?;
        std::fs::write(&tmp, out)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|source| PropagationError::Io {
                what: "rewrite",
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(plan)
}

/// Applies `plan` in the mount namespace of the container whose init process
/// is `pid`, created and not yet started. Runs in a forked child: `setns`
/// into a mount namespace changes the caller's root and cwd, and the helper
/// still needs the host's view afterwards.
pub fn apply(pid: i32, plan: &Plan) -> Result<(), PropagationError> {
    use nix::sched::{setns, CloneFlags};

    if plan.is_empty() {
        return Ok(());
    }
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .map_err(|source| PropagationError::Namespace { pid, source })?;
    // SAFETY: only the helper calls this, from its one thread (see
    // `helper::worker`): the forked child runs nothing another thread could
    // have left half done.
    unsafe {
        crate::sys::in_forked_child(|| {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNS)
                .map_err(|e| format!("enter mount namespace of {pid}: {e}"))
                .and_then(|_| change_all(plan))
        })
    }
    .map_err(PropagationError::Apply)
}

/// In the container's mount namespace, whose root is the container's root,
/// so destinations resolve inside it as they do for the container.
fn change_all(plan: &Plan) -> Result<(), String> {
    let change = |target: &Path, flags: MsFlags| {
        nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
            .map_err(|e| format!("set propagation {flags:?} of {}: {e}", target.display()))
    };
    for (dest, flags) in &plan.mounts {
        for f in flags {
            change(dest, *f)?;
        }
    }
    if let Some(f) = plan.root {
        change(Path::new("/"), f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cri_volumes() {
        let mut spec = json!({
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]},
                {"destination": "/etc/hosts", "type": "bind", "source": "/x/hosts", "options": ["rbind", "rprivate", "rw"]},
                {"destination": "/vol", "type": "bind", "source": "/x/vol", "options": ["rbind", "rshared", "rw"]}
            ],
            "linux": {"rootfsPropagation": "rshared"}
        });
        let (plan, changed) = plan_spec(&mut spec).unwrap();
        assert!(changed);
        assert_eq!(spec["linux"]["rootfsPropagation"], "shared");
        assert_eq!(
            plan.mounts,
            vec![
                (
                    PathBuf::from("/etc/hosts"),
                    vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]
                ),
                (
                    PathBuf::from("/vol"),
                    vec![MsFlags::MS_SHARED | MsFlags::MS_REC]
                ),
            ]
        );
        assert_eq!(plan.root, Some(MsFlags::MS_SHARED | MsFlags::MS_REC));
    }

    #[test]
    fn accepted_values_are_kept() {
        for (given, root) in [("slave", None), ("shared", None), ("private", None)] {
            let mut spec = json!({"linux": {"rootfsPropagation": given}});
            let (plan, changed) = plan_spec(&mut spec).unwrap();
            assert!(!changed);
            assert_eq!(plan.root, root);
            assert!(plan.is_empty());
        }
        let mut spec = json!({"linux": {"rootfsPropagation": "rslave"}});
        let (plan, changed) = plan_spec(&mut spec).unwrap();
        assert!(changed && plan.is_empty());
        assert_eq!(spec["linux"]["rootfsPropagation"], "slave");
    }

    #[test]
    fn no_propagation_no_plan() {
        let mut spec = json!({"mounts": [{"destination": "/data", "type": "bind", "source": "/d", "options": ["rbind", "ro"]}]});
        let (plan, changed) = plan_spec(&mut spec).unwrap();
        assert!(!changed && plan.is_empty());
    }
}

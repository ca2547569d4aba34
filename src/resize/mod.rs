//! The one write path for a running container's resources (issue "live
//! resize"): an OCI LinuxResources request becomes a validated partial update
//! (`Update`), then an ordered plan of cgroup file writes (`plan`), applied
//! with what was already written restored if a later write fails (`apply`).
//! Pure functions up to `apply`, so the rules are tested without a kernel.
//! What differs between cgroup v1 and v2 is the cgroup's own business
//! (`crate::cgroups::Hierarchy`): this module never asks which it is.

pub(crate) mod apply;
pub(crate) mod current;
pub(crate) mod history;
pub(crate) mod plan;
pub(crate) mod request;
pub(crate) mod update;

pub use crate::cgroups::Files;
pub use request::{Change, Notes};
pub use update::{Limit, Update};

/// The shim's resize path for one Task.Update payload, up to the writes:
/// `resources` as containerd sends it (the request's `Any` value, OCI
/// LinuxResources as JSON) parsed, validated against a node whose online
/// CPUs and memory nodes are `node`, then planned and checked against `cg`
/// as a non-reclaiming update is, without writing anything. The writes it
/// would make, or the refusal as the client would read it. The fuzz target
/// `resize_request` drives it.
pub fn check_request(
    resources: &[u8],
    node: (&str, &str),
    cg: &crate::cgroups::Cgroup,
) -> Result<Vec<crate::cgroups::Write>, String> {
    let oci: oci_spec::runtime::LinuxResources =
        serde_json::from_slice(resources).map_err(|e| format!("resources: {e}"))?;
    let facts = || update::Node {
        cpus: node.0.to_string(),
        mems: node.1.to_string(),
    };
    let u = Update::from_oci(&oci, facts).map_err(|e| e.to_string())?;
    if u.is_empty() {
        return Err("the update changes nothing".into());
    }
    apply::check_with(cg, &u, false, &mut Files::default()).map_err(|e| e.to_string())
}

/// Why a resize was refused or failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResizeError {
    /// The request itself makes no sense.
    #[error("{field} {value}: {why}")]
    Invalid {
        field: &'static str,
        value: String,
        why: String,
    },
    /// Memory below what the container uses now.
    #[error("memory limit {requested} is below current usage {usage}; to shrink it anyway, ask to reclaim memory first (tidalctl resize --reclaim)")]
    BelowUsage { requested: u64, usage: u64 },
    /// Memory below what the container still uses after the kernel was
    /// asked to reclaim the rest.
    #[error("memory limit {requested} is below usage {usage} even after reclaiming: the kernel could not free enough (memory a process holds or a tmpfs keeps cannot be reclaimed)")]
    NotReclaimed { requested: u64, usage: u64 },
    /// The container's cgroup is gone: it exited or is being deleted.
    #[error("the container's cgroup is gone: {0}")]
    Gone(String),
    /// A cgroup write failed; everything written before it was restored.
    #[error("write {value:?} to {file}: {error}; earlier writes of this update were undone")]
    Write {
        file: String,
        value: String,
        error: String,
    },
}

/// A value the container's cgroup cannot take, refused as an invalid request.
impl From<crate::cgroups::Unsupported> for ResizeError {
    fn from(e: crate::cgroups::Unsupported) -> Self {
        ResizeError::Invalid {
            field: e.field,
            value: e.value,
            why: e.why,
        }
    }
}

/// What the one writer of a container's resources (the shim that owns it)
/// keeps between resizes.
#[derive(Debug)]
pub struct Kept {
    /// The container's cgroup files, open.
    pub files: Files,
    /// Its revision history; None until opened (or after it failed).
    pub history: Option<history::Log>,
}

impl Default for Kept {
    fn default() -> Self {
        Kept {
            files: Files::kept(),
            history: None,
        }
    }
}

//! Every annotation key tidal reads or writes, in one table: who sets it,
//! where it travels, and what it means. Annotations are untrusted input
//! wherever a pod can set them (see `traits` for how they are checked).

// --- Set by containerd's CRI plugin in every container's OCI spec. ---

/// The pod's sandbox id: the containers of one pod share one shim.
pub const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// The pod's Kubernetes namespace.
pub const CRI_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
/// The pod's name.
pub const CRI_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
/// The container's name in its pod.
pub const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
/// `sandbox` for a pod's pause container, `container` for the others.
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

// --- Pod annotations of tidal's contract (docs/traits.md), passed by
// containerd when its `pod_annotations` allow them. ---

/// Prefix of tidal's own pod annotations.
pub const TIDAL_PREFIX: &str = "tidal.dev/";
/// Prefix of the one annotation per trait: `trait.tidal.dev/<type>`.
pub const TRAIT_PREFIX: &str = "trait.tidal.dev/";
/// The pod's QoS class: `online` or `offline`.
pub const QOS: &str = "tidal.dev/qos";
/// OAM's workload type of the pod's component.
pub const WORKLOAD_TYPE: &str = "tidal.dev/workload-type";
/// The OAM application and component names.
pub const APP: &str = "tidal.dev/app";
pub const COMPONENT: &str = "tidal.dev/component";
/// KubeVela's names for the same two facts, accepted as well.
pub const OAM_APP: &str = "app.oam.dev/name";
pub const OAM_COMPONENT: &str = "app.oam.dev/component";

// --- On a Task.Update request, from tidald to the shim that owns the
// container (kubelet's updates through containerd carry none of them). ---

/// Who asked: operator, policy, trait:NAME (absent: kubelet).
pub const RESIZE_SOURCE: &str = "tidal.dev/source";
/// Why, in the asker's words (at most 1 KiB).
pub const RESIZE_REASON: &str = "tidal.dev/reason";
/// `true`: reclaim memory before shrinking below usage.
pub const RESIZE_RECLAIM: &str = "tidal.dev/reclaim";
/// A revision number: restore the limits as they were right after it.
pub const RESIZE_ROLLBACK: &str = "tidal.dev/rollback-to";
/// `true`: validate only, change nothing.
pub const RESIZE_DRY_RUN: &str = "tidal.dev/dry-run";
/// A revision number: apply only if it is still the container's last one
/// (the change was decided from the container as it was then); otherwise
/// the update is refused with ABORTED and nothing changes.
pub const RESIZE_EXPECT: &str = "tidal.dev/expect-revision";

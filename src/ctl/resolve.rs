//! Container names as operators give them: an id, a unique prefix of one, or
//! a Kubernetes name, resolved against tidald's list.

use crate::proto::pb;

use super::cli::Target;
use super::{Api, CtlError};

/// The API's reference to a container (no namespace: any).
pub(super) fn reference(namespace: Option<String>, id: &str) -> Option<pb::ContainerRef> {
    Some(pb::ContainerRef {
        namespace: namespace.unwrap_or_default(),
        id: id.to_string(),
    })
}

/// The container `name` names among `all` (restricted to `namespace` if
/// given): a unique prefix of an id (4 characters or more), or a Kubernetes
/// name, POD/CONTAINER or NAMESPACE/POD/CONTAINER (never a pod's sandbox).
pub fn resolve<'a>(
    all: &'a [pb::Container],
    namespace: Option<&str>,
    name: &str,
) -> Result<&'a pb::Container, String> {
    let in_ns = |c: &&pb::Container| namespace.is_none_or(|n| c.namespace == n);
    let found: Vec<&pb::Container> = if name.contains('/') {
        let parts: Vec<&str> = name.split('/').collect();
        let (pod_ns, pod, container) = match parts.as_slice() {
            [pod, c] => (None, *pod, *c),
            [ns, pod, c] => (Some(*ns), *pod, *c),
            _ => {
                return Err(format!(
                "{name:?} is not a container: give an id, POD/CONTAINER or NAMESPACE/POD/CONTAINER"
            ))
            }
        };
        all.iter()
            .filter(in_ns)
            .filter(|c| !c.sandbox && c.name == container)
            .filter(|c| {
                c.pod
                    .split_once('/')
                    .is_some_and(|(n, p)| p == pod && pod_ns.is_none_or(|w| w == n))
            })
            .collect()
    } else if name.len() >= 4 {
        all.iter()
            .filter(in_ns)
            .filter(|c| c.id.starts_with(name))
            .collect()
    } else {
        Vec::new()
    };
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "no tidal container {name:?} on this node (give an id, a unique prefix of one \
             of 4 or more characters, or POD/CONTAINER)"
        )),
        many => Err(format!(
            "{name:?} names {} containers: {}; give more of the id, or -n NAMESPACE",
            many.len(),
            many.iter()
                .take(5)
                .map(|c| format!("{}/{}", c.namespace, c.id))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The container `target` names, as tidald knows it: the id as given when
/// tidald knows it (one lookup), else through `resolve` over the node's
/// containers.
pub(super) async fn named(api: &mut Api, target: Target) -> Result<Target, CtlError> {
    let Target {
        namespace,
        id: name,
    } = target;
    if !name.contains('/') {
        let exact = api
            .get_resources(pb::GetResourcesRequest {
                container: reference(namespace.clone(), &name),
            })
            .await;
        match exact {
            Ok(_) => {
                return Ok(Target {
                    namespace,
                    id: name,
                })
            }
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(CtlError::Api(s.message().to_string())),
        }
    }
    let all = api
        .list_containers(pb::ListContainersRequest {})
        .await
        .map_err(|s| CtlError::Api(s.message().to_string()))?
        .into_inner()
        .containers;
    let c = resolve(&all, namespace.as_deref(), &name).map_err(CtlError::Api)?;
    Ok(Target {
        namespace: Some(c.namespace.clone()),
        id: c.id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_named_by_id_prefix_or_kubernetes_name() {
        let c = |ns: &str, id: &str, pod: &str, name: &str, sandbox: bool| pb::Container {
            namespace: ns.into(),
            id: id.into(),
            pod: pod.into(),
            name: name.into(),
            sandbox,
            ..Default::default()
        };
        let all = [
            c("k8s.io", "e314f975aa", "shop/web-1", "cart", false),
            c("k8s.io", "e3ff0000bb", "shop/web-1", "", true),
            c("k8s.io", "77aa0000cc", "dev/web-1", "cart", false),
            c("tidal", "e314f975dd", "", "", false),
        ];
        let id = |r: Result<&pb::Container, String>| r.map(|c| c.id.clone());
        assert_eq!(
            id(resolve(&all, None, "shop/web-1/cart")),
            Ok("e314f975aa".into())
        );
        assert_eq!(
            id(resolve(&all, None, "dev/web-1/cart")),
            Ok("77aa0000cc".into())
        );
        assert_eq!(id(resolve(&all, None, "77aa")), Ok("77aa0000cc".into()));
        assert_eq!(
            id(resolve(&all, Some("tidal"), "e314")),
            Ok("e314f975dd".into())
        );
        // POD/CONTAINER in two Kubernetes namespaces, an id prefix in two
        // containerd namespaces: ambiguous, and the candidates are named.
        let e = resolve(&all, None, "web-1/cart").unwrap_err();
        assert!(
            e.contains("names 2 containers") && e.contains("77aa0000cc"),
            "{e}"
        );
        let e = resolve(&all, None, "e314f975").unwrap_err();
        assert!(
            e.contains("k8s.io/e314f975aa") && e.contains("tidal/e314f975dd"),
            "{e}"
        );
        // Too short to be a prefix, a sandbox is not a container to resize,
        // and nonsense is refused with what would have been accepted.
        assert!(resolve(&all, None, "e3").unwrap_err().contains("4 or more"));
        assert!(resolve(&all, None, "shop/web-1/").is_err());
        let e = resolve(&all, None, "a/b/c/d").unwrap_err();
        assert!(e.contains("POD/CONTAINER"), "{e}");
    }
}

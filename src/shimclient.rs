//! Talking to the shim that owns a container: Task.Update over its ttrpc
//! socket, the one write path for resizes.

use crate::node::ContainerInfo;

/// A refused or failed update: the gRPC status code (ttrpc uses the same
/// numbers) and the shim's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// gRPC's UNAVAILABLE: the shim could not be reached.
const UNAVAILABLE: i32 = 14;
/// gRPC's INTERNAL.
const INTERNAL: i32 = 13;

/// Sends Task.Update to the shim that owns `c`.
pub async fn update(
    c: &ContainerInfo,
    resources: &serde_json::Value,
    notes: &[(&str, String)],
) -> Result<(), Refusal> {
    use containerd_shim::api::UpdateTaskRequest;
    use containerd_shim::protos::protobuf::well_known_types::any::Any;
    use containerd_shim::protos::shim_async::{Client, TaskClient};

    let unavailable = |message: String| Refusal {
        code: UNAVAILABLE,
        message,
    };
    let address = c
        .shim_address()
        .map_err(|e| unavailable(format!("no shim address for {}: {e}", c.id)))?;
    let client = Client::connect(&address)
        .await
        .map_err(|e| unavailable(format!("connect to shim at {address}: {e}")))?;
    let mut any = Any::new();
    any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    any.value = resources.to_string().into_bytes();
    let req = UpdateTaskRequest {
        id: c.id.clone(),
        resources: Some(any).into(),
        annotations: notes
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..Default::default()
    };
    let ctx = containerd_shim::protos::ttrpc::context::with_timeout(10_000_000_000);
    TaskClient::new(client)
        .update(ctx, &req)
        .await
        .map(|_| ())
        .map_err(|e| match e {
            containerd_shim::protos::ttrpc::Error::RpcStatus(s) => Refusal {
                code: containerd_shim::protos::protobuf::Enum::value(&s.code()),
                message: s.message().to_string(),
            },
            other => Refusal {
                code: INTERNAL,
                message: other.to_string(),
            },
        })
}

//! Talking to the shim that owns a container: Task.Update over its ttrpc
//! socket, the one write path for resizes.

use containerd_shim::api::UpdateTaskRequest;
use containerd_shim::protos::shim_async::TaskClient;

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
pub const UNAVAILABLE: i32 = tonic::Code::Unavailable as i32;
/// gRPC's ABORTED: the container changed since the revision the change
/// named (`tidal.dev/expect-revision`).
pub const ABORTED: i32 = tonic::Code::Aborted as i32;
/// gRPC's INTERNAL.
const INTERNAL: i32 = tonic::Code::Internal as i32;

/// How long tidald waits for a shim's answer.
const TIMEOUT_NS: i64 = 10_000_000_000;

/// Why a call to a shim failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The shim answered: a refusal, or an error of its own.
    Answered(Refusal),
    /// The connection failed or was closed: the shim exited, or the
    /// connection was already gone before the call.
    Connection(Refusal),
    /// No answer in time, or none that could be read.
    Other(Refusal),
}

impl From<Failure> for Refusal {
    fn from(f: Failure) -> Refusal {
        match f {
            Failure::Answered(r) | Failure::Connection(r) | Failure::Other(r) => r,
        }
    }
}

/// Task.Update of container `id` with OCI `resources` and tidal's
/// annotations `notes`.
pub fn request(
    id: &str,
    resources: &serde_json::Value,
    notes: &[(&str, String)],
) -> UpdateTaskRequest {
    use containerd_shim::protos::protobuf::well_known_types::any::Any;
    let mut any = Any::new();
    any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    any.value = resources.to_string().into_bytes();
    UpdateTaskRequest {
        id: id.to_string(),
        resources: Some(any).into(),
        annotations: notes
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..Default::default()
    }
}

/// Sends `req` over `client`.
pub async fn send(client: &TaskClient, req: &UpdateTaskRequest) -> Result<(), Failure> {
    use containerd_shim::protos::ttrpc::Error;
    let ctx = containerd_shim::protos::ttrpc::context::with_timeout(TIMEOUT_NS);
    client.update(ctx, req).await.map(|_| ()).map_err(|e| {
        let refusal = |code| Refusal {
            code,
            message: e.to_string(),
        };
        match &e {
            Error::RpcStatus(s) => Failure::Answered(Refusal {
                code: containerd_shim::protos::protobuf::Enum::value(&s.code()),
                message: s.message().to_string(),
            }),
            // A connection whose task has ended takes no more requests.
            Error::Others(m) if m.starts_with("reserve channel capacity failed") => {
                Failure::Connection(refusal(INTERNAL))
            }
            Error::Others(_) => Failure::Other(refusal(INTERNAL)),
            _ => Failure::Connection(refusal(INTERNAL)),
        }
    })
}

/// One ttrpc connection per shim, kept between calls and shared by the
/// shim's containers.
#[derive(Default)]
pub struct Shims {
    /// By address.
    clients: std::sync::Mutex<std::collections::HashMap<String, TaskClient>>,
}

impl Shims {
    /// Sends `req` to the shim at `address`, over the connection kept for
    /// that shim (made on first use). A kept connection that turns out
    /// closed (the shim exited, or another took its socket) is dropped and
    /// the call made once more over a new one; an update is never sent twice
    /// otherwise (a timeout is not retried).
    pub async fn update(&self, address: &str, req: &UpdateTaskRequest) -> Result<(), Refusal> {
        let kept = self.clients.lock().unwrap().get(address).cloned();
        if let Some(client) = kept {
            match send(&client, req).await {
                Err(Failure::Connection(_)) => {
                    self.clients.lock().unwrap().remove(address);
                }
                other => return other.map_err(Into::into),
            }
        }
        let client = TaskClient::new(
            containerd_shim::protos::shim_async::Client::connect(address)
                .await
                .map_err(|e| Refusal {
                    code: UNAVAILABLE,
                    message: format!("connect to shim at {address}: {e}"),
                })?,
        );
        let result = send(&client, req).await;
        if !matches!(result, Err(Failure::Connection(_))) {
            self.clients
                .lock()
                .unwrap()
                .insert(address.to_string(), client);
        }
        result.map_err(Into::into)
    }

    /// Closes the connection to the shim at `address` (it serves nothing
    /// tidald knows of any more).
    pub fn close(&self, address: &str) {
        self.clients.lock().unwrap().remove(address);
    }
}

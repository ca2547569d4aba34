//! tidald's gRPC API as its clients see it (`proto/tidal/*/v1`): the
//! generated messages and clients, and a connection over tidald's unix
//! socket. tidalctl, tests and benchmarks use it; tidald serves it.

use std::path::Path;

/// The resize API (`tidal.resize.v1`).
pub mod pb {
    tonic::include_proto!("tidal.resize.v1");
}

/// The trait catalogue API (`tidal.traits.v1`).
pub mod traits_pb {
    tonic::include_proto!("tidal.traits.v1");
}

/// The policy engine's API (`tidal.policy.v1`).
pub mod policy_pb {
    tonic::include_proto!("tidal.policy.v1");
}

use pb::resize_client::ResizeClient;

/// A client of tidald's resize API on the unix socket at `path`.
pub async fn connect(
    path: &Path,
) -> Result<ResizeClient<tonic::transport::Channel>, tonic::transport::Error> {
    Ok(ResizeClient::new(channel(path).await?))
}

/// A client of tidald's trait catalogue API on the unix socket at `path`.
pub async fn connect_traits(
    path: &Path,
) -> Result<
    traits_pb::traits_client::TraitsClient<tonic::transport::Channel>,
    tonic::transport::Error,
> {
    Ok(traits_pb::traits_client::TraitsClient::new(
        channel(path).await?,
    ))
}

/// A client of tidald's policy engine API on the unix socket at `path`.
pub async fn connect_policy(
    path: &Path,
) -> Result<
    policy_pb::policy_client::PolicyClient<tonic::transport::Channel>,
    tonic::transport::Error,
> {
    Ok(policy_pb::policy_client::PolicyClient::new(
        channel(path).await?,
    ))
}

/// A channel to tidald on the unix socket at `path`.
async fn channel(path: &Path) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    // The URI is required by the endpoint but unused: the connector dials the socket.
    let channel = tonic::transport::Endpoint::from_static("http://tidald.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(channel)
}

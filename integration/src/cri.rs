//! A CRI v1 client (`proto/runtime/v1/api.proto`) on containerd's gRPC socket,
//! which serves the CRI alongside containerd's own API.

use std::path::Path;

use tonic::transport::Channel;

pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

pub use v1::image_service_client::ImageServiceClient;
pub use v1::runtime_service_client::RuntimeServiceClient;

/// Replies up to this size decode (tonic's default is 4 MiB; ExecSync output
/// can be larger).
const MAX_MESSAGE: usize = 64 << 20;

/// The CRI runtime and image clients on the unix socket at `socket`,
/// sharing one connection.
pub async fn connect(
    socket: &Path,
) -> Result<(RuntimeServiceClient<Channel>, ImageServiceClient<Channel>), tonic::transport::Error> {
    let path = socket.to_path_buf();
    // The URI is required by the endpoint but unused: the connector dials the socket.
    let channel = tonic::transport::Endpoint::from_static("http://containerd.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await?;
    Ok((
        RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE),
        ImageServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE),
    ))
}

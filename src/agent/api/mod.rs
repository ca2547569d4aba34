//! tidald's gRPC API (`proto/tidal/*/v1`) on a root-only unix socket: the
//! socket (0600 in a 0700 directory), the peer-credential check on every
//! call, and the services (`resize`, `traits`, `policy`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use crate::proto::{pb, policy_pb, traits_pb};

pub(crate) mod policy;
mod resize;
mod traits;

pub use policy::PolicyService;
pub use resize::ResizeService;
pub use traits::TraitsService;

/// Who may call: root, and the uids configured with `--allow-uid`.
pub fn authorize(allowed: &[u32], req: &Request<()>) -> Result<(), Status> {
    let cred = req
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|i| i.peer_cred);
    match cred {
        Some(c) if c.uid() == 0 || allowed.contains(&c.uid()) => Ok(()),
        Some(c) => Err(Status::permission_denied(format!(
            "uid {} may not use tidald (allowed: root{})",
            c.uid(),
            allowed.iter().map(|u| format!(", {u}")).collect::<String>()
        ))),
        None => Err(Status::permission_denied(
            "caller's credentials are unknown",
        )),
    }
}

/// Binds `socket` with mode 0600 in a 0700 directory. Once this returns,
/// clients can connect: callers announce readiness only after it.
pub fn bind(socket: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    crate::paths::private_dir(dir)?;
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the API on a listener from [`bind`] until `stop`, then removes
/// the socket.
pub async fn serve(
    listener: tokio::net::UnixListener,
    allowed: Vec<u32>,
    resize: ResizeService,
    traits: TraitsService,
    policy: PolicyService,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let socket = listener.local_addr()?.as_pathname().map(Path::to_path_buf);
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let resize = pb::resize_server::ResizeServer::with_interceptor(resize, {
        let allowed = allowed.clone();
        move |req: Request<()>| authorize(&allowed, &req).map(|_| req)
    });
    let traits = traits_pb::traits_server::TraitsServer::with_interceptor(traits, {
        let allowed = allowed.clone();
        move |req: Request<()>| authorize(&allowed, &req).map(|_| req)
    });
    let policy =
        policy_pb::policy_server::PolicyServer::with_interceptor(policy, move |req: Request<()>| {
            authorize(&allowed, &req).map(|_| req)
        });
    let result = tonic::transport::Server::builder()
        .add_service(resize)
        .add_service(traits)
        .add_service(policy)
        .serve_with_incoming_shutdown(incoming, stop)
        .await
        .map_err(std::io::Error::other);
    if let Some(socket) = socket {
        let _ = std::fs::remove_file(socket);
    }
    result
}

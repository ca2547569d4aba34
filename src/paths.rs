//! Where tidal keeps its state on a node, shared by the shim, tidald and
//! tidalctl.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Overrides the state directory (default `/run/tidal`).
pub const STATE_DIR_ENV: &str = "TIDAL_STATE_DIR";

/// tidal's state directory: libcontainer state per namespace, shim sockets,
/// tidald's API socket.
pub fn state_dir() -> PathBuf {
    std::env::var_os(STATE_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/tidal"))
}

/// tidald's API socket's default place: a private directory in the state dir.
pub fn default_socket(state_dir: &Path) -> PathBuf {
    state_dir.join(".api").join("tidald.sock")
}

/// Creates `dir` (and parents) and makes it 0700.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

//! tidal-shim-helper: performs one libcontainer operation for the shim (see
//! src/helper.rs). Installed beside containerd-shim-tidal-v2.

fn main() {
    // Runs before any thread exists: see src/helper/worker.rs.
    let request = std::env::args().nth(1).unwrap_or_default();
    tidal::helper::worker::main(&request);
}

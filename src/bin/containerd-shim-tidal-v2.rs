//! containerd-shim-tidal-v2: containerd's shim v2 for tidal.

fn main() {
    // Helper mode runs before any thread exists: see src/helper.rs.
    let mut args = std::env::args();
    if args.nth(1).as_deref() == Some(tidal::helper::HELPER_ARG) {
        let request = args.next().unwrap_or_default();
        tidal::helper::main(&request);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(containerd_shim::asynchronous::run::<tidal::shim::TidalShim>(
        tidal::shim::RUNTIME_ID,
        Some(tidal::shim::crate_config()),
    ));
}

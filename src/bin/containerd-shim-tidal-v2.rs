//! containerd-shim-tidal-v2: containerd's shim v2 for tidal.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Helper mode runs before any thread exists: see src/helper.rs.
    if args.get(1).map(String::as_str) == Some(tidal::helper::HELPER_ARG) {
        tidal::helper::main(args.get(2).map(String::as_str).unwrap_or_default());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(tidal::shim::run(&args[1..]));
    std::process::exit(code);
}

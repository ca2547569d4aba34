//! containerd-shim-tidal-v2: containerd's shim v2 for tidal. Container
//! processes are made by the helper executable beside it (src/helper.rs).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(tidal::shim::run(&args[1..]));
    std::process::exit(code);
}

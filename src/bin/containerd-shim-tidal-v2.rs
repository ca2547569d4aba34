//! containerd-shim-tidal-v2: containerd's shim v2 for tidal. Container
//! processes are made by the helper executable beside it (src/helper/).

/// At most this many threads do a pod's blocking work (cgroup writes that
/// reclaim, Stats reads, config.json rewrites) at once; each exits after
/// idling, so an idle shim keeps only its runtime thread.
const BLOCKING_THREADS: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // One runtime thread serves every RPC, event and tty copy of the pod;
    // anything that can take time runs on the blocking pool (see
    // shim::task::blocking), so one container's slow work never stalls it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(tidal::shim::run(&args[1..]));
    std::process::exit(code);
}

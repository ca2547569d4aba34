//! tidald: tidal's node agent.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match tidal::agent::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tidald: {e}");
            std::process::exit(2);
        }
    };
    tidal::agent::init_logging(cfg.log_format);
    let rt = tidal::agent::runtime(&cfg).expect("tokio runtime");
    if let Err(e) = rt.block_on(tidal::agent::run(cfg)) {
        eprintln!("tidald: {e}");
        std::process::exit(1);
    }
}

//! tidalctl: the operator's command line for tidal.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match tidal::ctl::parse(&args) {
        Err(e) => {
            eprintln!("tidalctl: {e}");
            2
        }
        Ok((state_dir, cmd)) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(tidal::ctl::run(state_dir, cmd)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("tidalctl: {e}");
                    1
                }
            }
        }
    };
    std::process::exit(code);
}

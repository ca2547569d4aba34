//! tidalctl: the operator's command line for tidal.

fn main() {
    std::process::exit(tidal::ctl::main(std::env::args_os()));
}

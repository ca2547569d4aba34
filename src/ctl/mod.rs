//! `tidalctl`: the operator's command line. Lists tidal's containers with
//! their live limits beside the declared ones, and resizes one through its
//! shim's Task.Update, the same validated path kubelet's resizes take.
//!
//! `cli` declares the command line (clap), `run` runs each command over
//! tidald's API, `resolve` turns the names operators give into containers,
//! `render` prints tables and json, `traits` holds `traits` and `check`,
//! `policy` holds `policy ...` (the policy engine's API),
//! `policy_render` what they print, `top` the table refreshed in place,
//! `seccomp` tidald's seccomp profile (`tidalctl seccomp-profile`).

use std::ffi::OsString;
use std::path::Path;

pub mod cli;
mod cron;
mod doctor;
mod node;
mod policy;
mod policy_render;
mod render;
mod resolve;
mod run;
pub mod seccomp;
mod top;
mod traits;

pub use cli::{parse, Command};
pub use run::run;

/// tidald's resize API, connected.
type Api = crate::proto::pb::resize_client::ResizeClient<tonic::transport::Channel>;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach tidald at {socket}: {error} (is tidald running?)")]
    Connect { socket: String, error: String },
    #[error("{0}")]
    Api(String),
    #[error("{}", .0.join("\n"))]
    Check(Vec<String>),
    #[error("resize of {id} refused: {reason}\ncurrent limits: {current}")]
    Refused {
        id: String,
        reason: String,
        current: String,
    },
}

impl CtlError {
    /// tidald could not be reached at `socket`: the cause, not tonic's
    /// wrapper of it.
    fn connect(socket: &Path, e: &tonic::transport::Error) -> CtlError {
        CtlError::Connect {
            socket: socket.display().to_string(),
            error: std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string()),
        }
    }
}

/// tidalctl as a program: parses `args` (program name first), runs the
/// command, and returns the exit code: 0 done (`--help` included), 1 the
/// command failed, 2 the command line is wrong.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let (socket, cmd) = match parse(args) {
        Ok(parsed) => parsed,
        Err(e) => {
            // Help and version go to stdout with 0, mistakes to stderr with 2.
            let _ = e.print();
            return e.exit_code();
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tidalctl: tokio runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(socket, cmd)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tidalctl: {e}");
            1
        }
    }
}

//! A container as tidal's state directory records it: libcontainer's
//! `state.json` (id, pid, status, bundle), and where those files are.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use crate::cgroups::{Limits, Usage};

#[derive(Debug, Clone, Serialize)]
pub struct ContainerInfo {
    pub id: String,
    pub namespace: String,
    pub pid: i32,
    pub status: String,
    pub bundle: PathBuf,
    pub limits: Limits,
    pub usage: Usage,
}

impl ContainerInfo {
    /// The ttrpc address of the shim that owns this container.
    pub fn shim_address(&self) -> io::Result<String> {
        let address = std::fs::read_to_string(self.bundle.join("address"))?;
        match address.trim() {
            // Being written: no address yet.
            "" => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the shim's address file is empty",
            )),
            a => Ok(a.to_string()),
        }
    }
}

#[derive(serde::Deserialize)]
struct State {
    id: String,
    status: String,
    pid: Option<i32>,
    bundle: PathBuf,
}

/// Where each container's state lives: (namespace, id, directory), without
/// reading anything else.
pub fn dirs(state_dir: &Path) -> io::Result<Vec<(String, String, PathBuf)>> {
    let mut out = Vec::new();
    let namespaces = match std::fs::read_dir(state_dir) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for ns in namespaces.flatten() {
        let name = ns.file_name().to_string_lossy().into_owned();
        // The entry's type from the directory itself (no stat); a link is
        // no namespace or container of tidal's.
        if name == "s" || name.starts_with('.') || !ns.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for c in std::fs::read_dir(ns.path())?.flatten() {
            let id = c.file_name().to_string_lossy().into_owned();
            if !id.starts_with('.') && c.file_type().is_ok_and(|t| t.is_dir()) {
                out.push((name.clone(), id, c.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A container as libcontainer's `state.json` in `dir` records it: id, pid,
/// status (as recorded, even if the process is gone) and bundle; no limits
/// or usage.
///
/// libcontainer rewrites the file in place (truncate, then write): a read
/// that meets a rewrite sees a torn file, so an unparsable one is read again
/// a few times before the container counts as gone.
pub fn read_state(namespace: &str, dir: &Path) -> Option<ContainerInfo> {
    let path = dir.join("state.json");
    let mut tries = 0;
    let state: State = loop {
        let text = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&text) {
            Ok(state) => break state,
            Err(_) if tries < 3 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(_) => return None,
        }
    };
    Some(ContainerInfo {
        id: state.id,
        namespace: namespace.to_string(),
        pid: state.pid.unwrap_or(0),
        status: state.status,
        bundle: state.bundle,
        limits: Limits::default(),
        usage: Usage::default(),
    })
}

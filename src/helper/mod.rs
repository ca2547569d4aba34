//! The helper process (`tidal-shim-helper`) and the wire protocol the shim
//! speaks with it.
//!
//! libcontainer forks, clones, `chdir`s and `unshare`s: process-wide changes
//! that are unsound in the shim, which has threads. So the shim runs the
//! helper executable beside it as `tidal-shim-helper <request>`: a fresh,
//! single-threaded process that performs one [`Request`] and exits
//! ([`worker`]). The helper creates container processes as *siblings*
//! (CLONE_PARENT), so they are children of the shim, which reaps them. The
//! [`Reply`] travels back as one JSON line on fd [`REPLY_FD`]; the helper's
//! fds 0-2 are the container's stdio.
//!
//! The shim's side (starting helpers, the protected executable they run
//! from) lives in `crate::shim`; nothing here imports from it.

mod cleanup;
pub mod propagation;
pub mod worker;

use std::ffi::CString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The helper writes its reply on this descriptor.
pub const REPLY_FD: i32 = 3;

/// One filesystem mount of the container's rootfs, as containerd sends it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RootfsMount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// What a helper is asked to do. `root` is libcontainer's state directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Create {
        id: String,
        root: PathBuf,
        bundle: PathBuf,
        rootfs: Vec<RootfsMount>,
        console_socket: Option<PathBuf>,
        /// The systemd cgroup driver: systemd makes the cgroup, a
        /// transient scope (cgroupsPath is `slice:prefix:name`).
        #[serde(default)]
        systemd: bool,
    },
    Start {
        id: String,
        root: PathBuf,
    },
    Exec {
        id: String,
        root: PathBuf,
        process: PathBuf,
        console_socket: Option<PathBuf>,
    },
    Kill {
        id: String,
        root: PathBuf,
        signal: i32,
        all: bool,
    },
    Pause {
        id: String,
        root: PathBuf,
    },
    Resume {
        id: String,
        root: PathBuf,
    },
    Delete {
        id: String,
        root: PathBuf,
        bundle: PathBuf,
        /// The container's shim is dead (containerd's cleanup, the shim's
        /// `delete` command): what its helpers left running is killed first
        /// (`cleanup::orphans`).
        #[serde(default)]
        shim_dead: bool,
    },
}

/// Why a helper operation failed, in terms the shim maps to RPC codes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
pub enum HelperError {
    /// The container or its process does not exist (any more).
    #[error("{0}")]
    NotFound(String),
    /// The container is in a state that does not allow the operation.
    #[error("{0}")]
    WrongState(String),
    /// The request or the bundle is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Anything else: a failed system call, a broken bundle.
    #[error("{0}")]
    Failed(String),
}

/// A helper's answer: the pid it created, if any.
pub type Reply = Result<Option<i32>, HelperError>;

impl Request {
    /// The container the request is for, and the state directory it is in.
    pub fn container(&self) -> (&str, &std::path::Path) {
        match self {
            Request::Create { id, root, .. }
            | Request::Start { id, root }
            | Request::Exec { id, root, .. }
            | Request::Kill { id, root, .. }
            | Request::Pause { id, root }
            | Request::Resume { id, root }
            | Request::Delete { id, root, .. } => (id, root),
        }
    }

    /// The operation's name, for messages.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Create { .. } => "create",
            Request::Start { .. } => "start",
            Request::Exec { .. } => "exec",
            Request::Kill { .. } => "kill",
            Request::Pause { .. } => "pause",
            Request::Resume { .. } => "resume",
            Request::Delete { .. } => "delete",
        }
    }
}

/// The file name of the helper executable, which is installed beside the
/// shim's (`containerd-shim-tidal-v2`). The shim itself holds no libcontainer
/// code: it stays small, and only helpers carry the container-creating code.
pub const HELPER_BIN: &str = "tidal-shim-helper";

/// A process started as `/proc/self/fd/N` (the serving shim and every
/// helper: see `shim::exe`) is named `N` by the kernel: names it after its
/// argv\[0\] again (ps, top and `pgrep` without `-f` show it).
pub fn restore_process_name() {
    let Ok(name) = nix::sys::prctl::get_name() else {
        return;
    };
    let bytes = name.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return;
    }
    let wanted = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.as_encoded_bytes().to_vec()))
        .unwrap_or_else(|| b"containerd-shim-tidal-v2".to_vec());
    let short: Vec<u8> = wanted.into_iter().take(15).collect();
    if let Ok(short) = CString::new(short) {
        let _ = crate::sys::set_process_name(&short);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shim and the helper are separate binaries: what one writes, the
    /// other reads back the same, tagged by operation.
    #[test]
    fn requests_and_replies_cross_the_wire_unchanged() {
        let create = Request::Create {
            id: "c1".into(),
            root: "/run/tidal/default".into(),
            bundle: "/b".into(),
            rootfs: vec![RootfsMount {
                kind: "overlay".into(),
                source: "overlay".into(),
                options: vec!["lowerdir=/l".into()],
            }],
            console_socket: None,
            systemd: true,
        };
        let json = serde_json::to_string(&create).unwrap();
        assert!(json.contains(r#""op":"create""#), "{json}");
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), create);
        assert_eq!(create.op(), "create");
        let kill = Request::Kill {
            id: "c1".into(),
            root: "/r".into(),
            signal: 9,
            all: true,
        };
        let json = serde_json::to_string(&kill).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), kill);

        for reply in [
            Ok(Some(42)),
            Ok(None),
            Err(HelperError::WrongState("paused".into())),
            Err(HelperError::NotFound("gone".into())),
        ] as [Reply; 4]
        {
            let line = serde_json::to_string(&reply).unwrap();
            assert!(!line.contains('\n'), "one line: {line}");
            assert_eq!(serde_json::from_str::<Reply>(&line).unwrap(), reply);
        }
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_disk"}"#).is_err());
    }
}

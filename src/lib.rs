//! tidal: a containerd shim v2 runtime that runs containers in process through
//! youki's libcontainer, with live in-place resize. See docs/ARCHITECTURE.md.

pub mod agent;
pub mod api;
pub mod cgroups;
pub mod ctl;
pub mod helper;
pub mod ids;
pub mod node;
pub mod oom;
pub mod propagation;
pub mod quantity;
pub mod reaper;
pub mod resize;
pub mod shim;
pub mod shimclient;
pub mod sys;
#[cfg(test)]
pub(crate) mod testfs;
pub mod traits;

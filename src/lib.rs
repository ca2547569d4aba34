//! tidal: a containerd shim v2 runtime that runs containers in process through
//! youki's libcontainer, with live in-place resize. See docs/ARCHITECTURE.md.
//!
//! Two processes and a core: `shim` (containerd-shim-tidal-v2) with `helper`
//! (tidal-shim-helper, the one that runs libcontainer), `agent` (tidald),
//! `ctl` (tidalctl); the core they share is `resize`, `traits`, `cgroups`,
//! `annotations`, `paths`, `proto`, `ids`, `quantity`, `dbus` and `sys`.

pub mod agent;
pub mod annotations;
pub mod cgroups;
pub mod ctl;
pub(crate) mod dbus;
pub mod helper;
pub(crate) mod ids;
pub mod paths;
pub mod proto;
pub(crate) mod quantity;
pub mod resize;
pub mod shim;
pub(crate) mod sys;
#[cfg(test)]
pub(crate) mod testfs;
pub mod traits;

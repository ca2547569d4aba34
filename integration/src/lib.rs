//! tidal's CRI conformance suite: a CRI v1 client ([`cri`]) for a private
//! containerd, and a small client for the CRI streaming server ([`stream`]),
//! which serves exec, attach and port-forward over WebSocket.

pub mod cri;
pub mod env;
pub mod stream;
pub mod suite;

//! Pids and Stats: what a container runs and uses, read from its cgroup.

use containerd_shim::api;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};

use super::super::error::{Error, Result};
use super::Tasks;

impl Tasks {
    pub async fn pids(&self, req: &api::PidsRequest) -> Result<api::PidsResponse> {
        let c = self.container(&req.id)?;
        let mut resp = api::PidsResponse::default();
        if c.init.ended() {
            return Ok(resp);
        }
        // The cgroup captured at create, read off the runtime thread.
        let cg = c.cgroup.clone().ok_or_else(|| {
            Error::FailedPrecondition(format!("container {} has no cgroup", req.id))
        })?;
        let pids = super::blocking(move || crate::cgroups::pids(&cg))
            .await?
            .map_err(|e| Error::Internal(format!("pids of {}: {e}", req.id)))?;
        for pid in pids {
            let mut info = containerd_shim::protos::types::task::ProcessInfo::new();
            info.pid = pid as u32;
            if let Some(exec_id) = c.exec_by_pid(pid) {
                let details = containerd_shim::protos::shim::oci::ProcessDetails {
                    exec_id,
                    ..Default::default()
                };
                if let Ok(value) = details.write_to_bytes() {
                    let mut any = Any::new();
                    any.type_url = "containerd.runc.v1.ProcessDetails".into();
                    any.value = value;
                    info.info = MessageField::some(any);
                }
            }
            resp.processes.push(info);
        }
        Ok(resp)
    }

    pub async fn stats(&self, req: &api::StatsRequest) -> Result<api::StatsResponse> {
        let c = self.container(&req.id)?;
        if c.init.ended() {
            return Err(Error::NotFound(format!("container {} has exited", req.id)));
        }
        // The cgroup captured at create (never re-resolved from a pid that
        // may be gone), read off the runtime thread.
        let cg = c.cgroup.clone().ok_or_else(|| {
            Error::FailedPrecondition(format!("container {} has no cgroup", req.id))
        })?;
        let any = super::blocking(move || crate::cgroups::stats::metrics(&cg))
            .await?
            .map_err(|e| Error::Internal(format!("stats of {}: {e}", req.id)))?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }
}

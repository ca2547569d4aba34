//! The ttrpc adapter: each Task RPC calls the matching `Tasks` method and
//! maps its error in one place (`error.rs`).

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api;
use containerd_shim::protos::protobuf::well_known_types::empty::Empty;
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::ttrpc::{self, r#async::TtrpcContext};

use super::error::Error;
use super::task::Tasks;

pub struct Service(pub Arc<Tasks>);

type R<T> = ttrpc::Result<T>;

fn empty(r: Result<(), Error>) -> R<Empty> {
    r.map(|_| Empty::new()).map_err(Into::into)
}

#[async_trait]
impl Task for Service {
    async fn state(&self, _: &TtrpcContext, req: api::StateRequest) -> R<api::StateResponse> {
        Ok(self.0.state(&req).await?)
    }
    async fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> R<api::CreateTaskResponse> {
        Ok(self.0.create(&req).await?)
    }
    async fn start(&self, _: &TtrpcContext, req: api::StartRequest) -> R<api::StartResponse> {
        Ok(self.0.start(&req).await?)
    }
    async fn delete(&self, _: &TtrpcContext, req: api::DeleteRequest) -> R<api::DeleteResponse> {
        Ok(self.0.delete(&req).await?)
    }
    async fn pids(&self, _: &TtrpcContext, req: api::PidsRequest) -> R<api::PidsResponse> {
        Ok(self.0.pids(&req).await?)
    }
    async fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> R<Empty> {
        empty(self.0.pause(&req).await)
    }
    async fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> R<Empty> {
        empty(self.0.resume(&req).await)
    }
    async fn checkpoint(&self, _: &TtrpcContext, _: api::CheckpointTaskRequest) -> R<Empty> {
        empty(Err(Error::Unimplemented(
            "checkpoint is not supported by tidal".into(),
        )))
    }
    async fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> R<Empty> {
        empty(self.0.kill(&req).await)
    }
    async fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> R<Empty> {
        empty(self.0.exec(&req).await)
    }
    async fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> R<Empty> {
        empty(self.0.resize_pty(&req).await)
    }
    async fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> R<Empty> {
        empty(self.0.close_io(&req).await)
    }
    async fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> R<Empty> {
        empty(self.0.update(&req).await)
    }
    async fn wait(&self, _: &TtrpcContext, req: api::WaitRequest) -> R<api::WaitResponse> {
        Ok(self.0.wait(&req).await?)
    }
    async fn stats(&self, _: &TtrpcContext, req: api::StatsRequest) -> R<api::StatsResponse> {
        Ok(self.0.stats(&req).await?)
    }
    async fn connect(&self, _: &TtrpcContext, req: api::ConnectRequest) -> R<api::ConnectResponse> {
        Ok(self.0.connect(&req).await?)
    }
    async fn shutdown(&self, _: &TtrpcContext, req: api::ShutdownRequest) -> R<Empty> {
        empty(self.0.shutdown(&req).await)
    }
}

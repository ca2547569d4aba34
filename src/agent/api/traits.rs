//! The trait catalogue API (`tidal.traits.v1.Traits`): the node's trait
//! catalogue, as `tidalctl traits` lists it.

use tonic::{Request, Response, Status};

use crate::agent::error::Error;
use crate::proto::traits_pb;

/// Serves the node's trait catalogue (or the reason it could not be read),
/// and the status of the trait controllers.
pub struct TraitsService {
    pub catalogue: Result<crate::traits::Catalogue, String>,
    pub cron: std::sync::Arc<crate::agent::cron::Controller>,
}

#[tonic::async_trait]
impl traits_pb::traits_server::Traits for TraitsService {
    async fn list_traits(
        &self,
        _req: Request<traits_pb::ListTraitsRequest>,
    ) -> Result<Response<traits_pb::ListTraitsResponse>, Status> {
        let c = self
            .catalogue
            .as_ref()
            .map_err(|e| Error::Unavailable(format!("the node's trait catalogue: {e}")))?;
        let traits = c
            .definitions()
            .map(|d| traits_pb::TraitDefinition {
                name: d.name().to_string(),
                description: d.description().to_string(),
                applies_to: d.applies_to().to_vec(),
                conflicts_with: d.conflicts_with().to_vec(),
                conflict_reason: d.conflict_reason().unwrap_or_default().to_string(),
                schema_json: serde_json::to_string(d.schema()).unwrap_or_default(),
                source: d.source.clone(),
            })
            .collect();
        Ok(Response::new(traits_pb::ListTraitsResponse {
            traits,
            origin: c.origin.clone(),
        }))
    }

    async fn cron_status(
        &self,
        _req: Request<traits_pb::CronStatusRequest>,
    ) -> Result<Response<traits_pb::CronStatusResponse>, Status> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Ok(Response::new(traits_pb::CronStatusResponse {
            containers: self.cron.status(now),
        }))
    }
}

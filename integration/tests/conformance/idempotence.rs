//! Stop and remove, twice each: the second call succeeds too.

use tidal_integration::suite::{Case, Ctx};

pub(crate) const CASES: &[Case] = cases![idempotent_stop_remove,];

async fn idempotent_stop_remove(ctx: Ctx) {
    let (pod, id) = ctx.pod_with(|_, _| ()).await;
    ctx.stop(&id, 0).await.unwrap();
    ctx.stop(&id, 0).await.expect("second StopContainer");
    ctx.remove(&id).await.unwrap();
    ctx.remove(&id).await.expect("second RemoveContainer");
    ctx.stop_pod(&pod).await.unwrap();
    ctx.stop_pod(&pod).await.expect("second StopPodSandbox");
    ctx.remove_pod(&pod).await.unwrap();
    ctx.remove_pod(&pod).await.expect("second RemovePodSandbox");
}

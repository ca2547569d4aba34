//! `tidalctl policy ...`, over tidald's policy engine API
//! (`tidal.policy.v1`): the engine's status, its decision log (and its
//! stream), a container's profile, and the controls.

use std::io::Write as _;
use std::path::Path;

use super::cli::{Output, PolicyCommand, PolicyMode, Target};
use super::policy_render::*;
use super::resolve::named;
use super::CtlError;
use crate::proto::policy_pb as pb;

type Client = pb::policy_client::PolicyClient<tonic::transport::Channel>;

pub(super) fn status_err(s: tonic::Status) -> CtlError {
    CtlError::Api(s.message().to_string())
}

pub(super) async fn connect(socket: &Path) -> Result<Client, CtlError> {
    crate::proto::connect_policy(socket)
        .await
        .map_err(|e| CtlError::connect(socket, &e))
}

/// Runs `tidalctl policy COMMAND`.
pub(super) async fn run(socket: &Path, cmd: PolicyCommand) -> Result<(), CtlError> {
    let mut api = connect(socket).await?;
    let show = |s: pb::StatusResponse, output: Output| match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&status_json(&s)).unwrap_or_default()
        ),
        Output::Table => print!("{}", status_text(&s)),
    };
    match cmd {
        PolicyCommand::Status { output } => {
            let s = api.status(pb::StatusRequest {}).await.map_err(status_err)?;
            show(s.into_inner(), output);
        }
        PolicyCommand::Pause => {
            let s = api.pause(pb::PauseRequest {}).await.map_err(status_err)?;
            println!("{}", state_line(&s.into_inner()));
        }
        PolicyCommand::Resume => {
            let s = api.resume(pb::ResumeRequest {}).await.map_err(status_err)?;
            println!("{}", state_line(&s.into_inner()));
        }
        PolicyCommand::Reload => {
            let s = api.reload(pb::ReloadRequest {}).await.map_err(status_err)?;
            println!("{}", reloaded_line(&s.into_inner()));
        }
        PolicyCommand::Mode { mode } => {
            let mode = match mode {
                PolicyMode::Enforce => pb::Mode::Enforce,
                PolicyMode::DryRun => pb::Mode::DryRun,
            };
            let s = api
                .set_mode(pb::SetModeRequest { mode: mode.into() })
                .await
                .map_err(status_err)?;
            println!("{}", state_line(&s.into_inner()));
        }
        PolicyCommand::Decisions { follow, output } => decisions(&mut api, follow, output).await?,
        PolicyCommand::Profile { target, output } => {
            profile(socket, &mut api, target, output).await?
        }
    }
    Ok(())
}

/// `decisions [-f]`: the log, then (with `follow`) each new decision as
/// it is made. The stream is opened first, so none falls between the two.
async fn decisions(api: &mut Client, follow: bool, output: Output) -> Result<(), CtlError> {
    let mut stream = if follow {
        Some(
            api.watch_decisions(pb::WatchDecisionsRequest {})
                .await
                .map_err(status_err)?
                .into_inner(),
        )
    } else {
        None
    };
    let log = api
        .decisions(pb::DecisionsRequest {})
        .await
        .map_err(status_err)?
        .into_inner()
        .decisions;
    match (output, follow) {
        (Output::Json, false) => println!(
            "{}",
            serde_json::to_string_pretty(&log.iter().map(decision_json).collect::<Vec<_>>())
                .unwrap_or_default()
        ),
        (Output::Json, true) => log.iter().for_each(|d| println!("{}", decision_json(d))),
        (Output::Table, _) => print!("{}", decisions_table(&log)),
    }
    let _ = std::io::stdout().flush();
    let Some(stream) = &mut stream else {
        return Ok(());
    };
    while let Some(d) = stream.message().await.map_err(status_err)? {
        if log.contains(&d) {
            continue;
        }
        match output {
            Output::Json => println!("{}", decision_json(&d)),
            Output::Table => println!("{}", decision_line(&d)),
        }
        let _ = std::io::stdout().flush();
    }
    Ok(())
}

async fn profile(
    socket: &Path,
    api: &mut Client,
    target: Target,
    output: Output,
) -> Result<(), CtlError> {
    let mut resize = crate::proto::connect(socket)
        .await
        .map_err(|e| CtlError::connect(socket, &e))?;
    let t = named(&mut resize, target).await?;
    let p = api
        .profile(pb::ProfileRequest {
            container: Some(pb::ContainerKey {
                namespace: t.namespace.unwrap_or_default(),
                id: t.id,
            }),
        })
        .await
        .map_err(status_err)?
        .into_inner();
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&profile_json(&p)).unwrap_or_default()
        ),
        Output::Table => print!("{}", profile_table(&p)),
    }
    Ok(())
}

//! tidalctl's commands run over tidald's API, printing to stdout.

use std::io::Write as _;
use std::path::PathBuf;

use super::cli::{Command, Output, Resize, Target, TraitsCommand};
use super::render::{self, describe_change, describe_limits, history_table};
use super::resolve::{named, reference};
use super::{cron, policy, seccomp, top, traits, Api, CtlError};
use crate::proto::pb;
use crate::resize::history;

/// Runs a parsed command against tidald at `socket`.
pub async fn run(socket: PathBuf, cmd: Command) -> Result<(), CtlError> {
    match cmd {
        Command::Version => {
            println!("tidalctl {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Command::Completions { shell } => {
            super::cli::completions(shell, &mut std::io::stdout());
            return Ok(());
        }
        Command::Check { file, traits } => return traits::check(&file, traits.as_deref()),
        Command::SeccompProfile { install } => {
            return match install {
                None => {
                    print!("{}", seccomp::PROFILE);
                    Ok(())
                }
                Some(dir) => seccomp::install(&dir)
                    .map(|path| println!("{}", path.display()))
                    .map_err(|e| CtlError::Api(format!("{}: {e}", dir.display()))),
            };
        }
        Command::Node { output } => {
            let node = super::node::Report::here();
            print!("{}", super::node::render(&node, output));
            return Ok(());
        }
        Command::Doctor {
            output,
            containerd_config,
            containerd,
            policy,
        } => {
            let found = super::doctor::run(&super::doctor::Options {
                containerd,
                config: containerd_config,
                policy,
                socket,
            })
            .await;
            print!("{}", super::doctor::render(&found, output));
            let problems = found.iter().filter(|f| !f.ok).count();
            return match problems {
                0 => Ok(()),
                n => Err(CtlError::Check(vec![format!(
                    "{n} problem{} found",
                    if n == 1 { "" } else { "s" }
                )])),
            };
        }
        Command::Traits {
            describe: Some(TraitsCommand::Kubevela { traits, out }),
            ..
        } => return traits::kubevela(traits.as_deref(), out.as_deref()),
        Command::Traits { output, describe } => {
            let name = describe.and_then(|d| match d {
                TraitsCommand::Describe { name } => Some(name),
                TraitsCommand::Kubevela { .. } => None,
            });
            return traits::show(&socket, name.as_deref(), output).await;
        }
        Command::Policy { command } => return policy::run(&socket, command).await,
        Command::Cron { output, no_trunc } => return cron::cron(&socket, output, no_trunc).await,
        Command::Top {
            output,
            once,
            no_trunc,
        } => return top::top(&socket, output, once, no_trunc).await,
        _ => {}
    }
    let mut api = crate::proto::connect(&socket)
        .await
        .map_err(|e| CtlError::connect(&socket, &e))?;
    match cmd {
        Command::Ps { output, no_trunc } => ps(&mut api, output, no_trunc).await,
        Command::Resize(r) => {
            let target = Target {
                namespace: r.namespace.clone(),
                id: r.id.clone(),
            };
            let target = named(&mut api, target).await?;
            resize(&mut api, target, &r).await
        }
        Command::History { target, output } => {
            let target = named(&mut api, target).await?;
            let revs = api
                .history(pb::HistoryRequest {
                    container: reference(target.namespace, &target.id),
                })
                .await
                .map_err(status)?
                .into_inner()
                .revisions;
            let revs: Vec<history::Revision> = revs.into_iter().map(Into::into).collect();
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&revs).unwrap_or_default()
                ),
                Output::Table => print!("{}", history_table(&revs)),
            }
            Ok(())
        }
        Command::Rollback {
            target,
            revision,
            if_revision,
        } => {
            let target = named(&mut api, target).await?;
            let resp = api
                .rollback(pb::RollbackRequest {
                    container: reference(target.namespace.clone(), &target.id),
                    revision,
                    reason: String::new(),
                    expect_revision: if_revision,
                })
                .await
                .map_err(|s| CtlError::Refused {
                    id: target.id.clone(),
                    reason: render::quantities(s.message()),
                    current: String::from("unchanged"),
                })?
                .into_inner();
            let c = resp.container.unwrap_or_default();
            println!(
                "{}: rolled back to revision {revision}: {} (revision {})",
                c.id,
                describe_limits(&c),
                resp.revision
            );
            Ok(())
        }
        Command::Watch { namespace, id } => {
            let target = match id {
                Some(id) => Some(named(&mut api, Target { namespace, id }).await?),
                None => None,
            };
            watch(&mut api, target).await
        }
        Command::Version
        | Command::Completions { .. }
        | Command::Check { .. }
        | Command::SeccompProfile { .. }
        | Command::Node { .. }
        | Command::Doctor { .. }
        | Command::Traits { .. }
        | Command::Cron { .. }
        | Command::Policy { .. }
        | Command::Top { .. } => Ok(()),
    }
}

fn status(s: tonic::Status) -> CtlError {
    CtlError::Api(s.message().to_string())
}

/// `tidalctl ps`.
async fn ps(api: &mut Api, output: Output, no_trunc: bool) -> Result<(), CtlError> {
    let all = api
        .list_containers(pb::ListContainersRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .containers;
    match output {
        Output::Json => {
            let list: Vec<_> = all.iter().map(render::json).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&list).unwrap_or_default()
            );
        }
        Output::Table => print!("{}", render::table(&all, no_trunc)),
    }
    Ok(())
}

/// `tidalctl resize`: the new limits, or the refusal with the limits as they
/// are.
async fn resize(api: &mut Api, target: Target, r: &Resize) -> Result<(), CtlError> {
    let container = reference(target.namespace, &target.id);
    let req = pb::UpdateResourcesRequest {
        container: container.clone(),
        source: "operator".into(),
        reason: r.reason.clone().unwrap_or_default(),
        cpu_millis: r.cpu_millis,
        memory_bytes: r.memory_bytes,
        cpuset: r.cpuset.clone(),
        reclaim: r.reclaim,
        dry_run: false,
        expect_revision: r.if_revision,
    };
    match api.update_resources(req).await {
        Ok(resp) => {
            let resp = resp.into_inner();
            let c = resp.container.unwrap_or_default();
            println!(
                "{}: {} (revision {})",
                c.id,
                describe_limits(&c),
                resp.revision
            );
            Ok(())
        }
        Err(s)
            if s.code() == tonic::Code::NotFound
                && s.message().starts_with("no tidal container") =>
        {
            Err(status(s))
        }
        Err(s) => {
            let current = api
                .get_resources(pb::GetResourcesRequest { container })
                .await
                .map(|c| describe_limits(&c.into_inner()))
                .unwrap_or_else(|_| "unknown".into());
            Err(CtlError::Refused {
                id: target.id,
                reason: render::quantities(s.message()),
                current,
            })
        }
    }
}

/// `tidalctl watch`: one line per revision, as they are recorded.
async fn watch(api: &mut Api, target: Option<Target>) -> Result<(), CtlError> {
    let mut stream = api
        .watch(pb::WatchRequest {
            container: target.map(|t| pb::ContainerRef {
                namespace: t.namespace.unwrap_or_default(),
                id: t.id,
            }),
        })
        .await
        .map_err(status)?
        .into_inner();
    while let Some(ev) = stream.message().await.map_err(status)? {
        let c = ev.container.unwrap_or_default();
        let r: history::Revision = ev.revision.unwrap_or_default().into();
        println!(
            "{}/{} revision {} by {}: {} {}",
            c.namespace,
            c.id,
            r.revision,
            r.source,
            describe_change(&r.before, &r.after),
            r.reason
        );
        let _ = std::io::stdout().flush();
    }
    Ok(())
}

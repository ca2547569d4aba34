//! `tidalctl`: the operator's command line. Lists tidal's containers with
//! their live limits beside the declared ones, and resizes one through its
//! shim's Task.Update, the same validated path kubelet's resizes take.

use std::path::PathBuf;

use crate::api::pb;
use crate::quantity::{self, format_memory};
use crate::resize::{history, Limit, Update};

pub const USAGE: &str = "\
usage: tidalctl [--socket PATH] COMMAND

commands:
  ps [-o table|json]                  list tidal's containers: pod, QoS, live and declared
                                      limits, usage, and who changed them (OVERLAY)
  resize [-n NAMESPACE] ID [--cpu Q] [--memory Q] [--cpuset CPUS] [--reason TEXT] [--reclaim]
                                      change a running container's limits in place
                                      (Q: cpu as 500m or 1.5; memory as 256Mi or bytes)
  history [-n NAMESPACE] ID [-o table|json]
                                      the container's resize revisions
  rollback [-n NAMESPACE] ID REVISION restore the limits as they were right after REVISION
                                      (0: before the first)
  watch [-n NAMESPACE] [ID]           print revisions as they are recorded, by anyone
  traits [-o table|json]              the OAM traits this node supports (its trait catalogue)
  traits describe NAME                a trait's rules and the schema of its properties
  check [--traits DIR] FILE           check an OAM Application/ApplicationConfiguration YAML
                                      against the trait catalogue (offline: DIR, else
                                      $TIDAL_TRAITS_DIR, /etc/tidal/traits or the built-in one)
  version                             print the version

ID: a container id, a unique prefix of one (4 or more characters), or its
Kubernetes name, POD/CONTAINER or NAMESPACE/POD/CONTAINER.

tidalctl talks to tidald's API; --socket defaults to $TIDAL_STATE_DIR/.api/tidald.sock
($TIDAL_STATE_DIR: /run/tidal when unset). --state-dir DIR means DIR/.api/tidald.sock.";

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Ps {
        json: bool,
    },
    Resize(Resize),
    History {
        target: Target,
        json: bool,
    },
    Rollback {
        target: Target,
        revision: u64,
    },
    Watch {
        target: Option<Target>,
    },
    Traits {
        describe: Option<String>,
        json: bool,
    },
    Check {
        file: PathBuf,
        traits: Option<PathBuf>,
    },
    Version,
}

/// A container named on the command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub namespace: Option<String>,
    pub id: String,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resize {
    pub namespace: Option<String>,
    pub id: String,
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub cpuset: Option<String>,
    pub reason: Option<String>,
    pub reclaim: bool,
}

/// CFS period tidal uses when it sets a CPU quota.
pub const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}\n\n{USAGE}")]
    Usage(String),
    #[error(transparent)]
    Quantity(#[from] quantity::QuantityError),
    #[error("cannot reach tidald at {socket}: {error} (is tidald running?)")]
    Connect { socket: String, error: String },
    #[error("{0}")]
    Api(String),
    #[error("{}", .0.join("\n"))]
    Check(Vec<String>),
    #[error("resize of {id} refused: {reason}\ncurrent limits: {current}")]
    Refused {
        id: String,
        reason: String,
        current: String,
    },
}

/// Parses everything after the program name; returns tidald's socket too.
pub fn parse(args: &[String]) -> Result<(PathBuf, Command), CtlError> {
    let usage = |m: &str| CtlError::Usage(m.to_string());
    let mut socket = crate::agent::default_socket(&crate::shim::state_dir());
    let mut it = args.iter().peekable();
    while let Some(a) = it.peek() {
        match a.as_str() {
            "--state-dir" => {
                it.next();
                let dir = it
                    .next()
                    .ok_or_else(|| usage("--state-dir needs a value"))?;
                socket = crate::agent::default_socket(std::path::Path::new(dir));
            }
            "--socket" => {
                it.next();
                socket = PathBuf::from(it.next().ok_or_else(|| usage("--socket needs a value"))?);
            }
            _ => break,
        }
    }
    let cmd = it.next().ok_or_else(|| usage("missing command"))?;
    let rest: Vec<&String> = it.collect();
    let value = |i: &mut usize, flag: &str| -> Result<String, CtlError> {
        *i += 1;
        rest.get(*i)
            .map(|s| s.to_string())
            .ok_or_else(|| CtlError::Usage(format!("{flag} needs a value")))
    };
    let command = match cmd.as_str() {
        "ps" => {
            let mut json = false;
            let mut i = 0;
            while i < rest.len() {
                match rest[i].as_str() {
                    "-o" | "--output" => match value(&mut i, "-o")?.as_str() {
                        "json" => json = true,
                        "table" => json = false,
                        other => return Err(usage(&format!("unknown output format {other:?}"))),
                    },
                    other => return Err(usage(&format!("unexpected argument {other:?}"))),
                }
                i += 1;
            }
            Command::Ps { json }
        }
        "resize" => {
            let mut r = Resize::default();
            let mut i = 0;
            while i < rest.len() {
                match rest[i].as_str() {
                    "-n" | "--namespace" => r.namespace = Some(value(&mut i, "-n")?),
                    "--cpu" => r.cpu_millis = Some(quantity::parse_cpu(&value(&mut i, "--cpu")?)?),
                    "--memory" => {
                        r.memory_bytes = Some(quantity::parse_memory(&value(&mut i, "--memory")?)?)
                    }
                    "--cpuset" => r.cpuset = Some(value(&mut i, "--cpuset")?),
                    "--reason" => r.reason = Some(value(&mut i, "--reason")?),
                    "--reclaim" => r.reclaim = true,
                    s if s.starts_with('-') => return Err(usage(&format!("unknown flag {s:?}"))),
                    s if r.id.is_empty() => r.id = s.to_string(),
                    s => return Err(usage(&format!("unexpected argument {s:?}"))),
                }
                i += 1;
            }
            if r.id.is_empty() {
                return Err(usage("resize needs a container ID"));
            }
            if r.cpu_millis.is_none() && r.memory_bytes.is_none() && r.cpuset.is_none() {
                return Err(usage(
                    "resize needs at least one of --cpu, --memory, --cpuset",
                ));
            }
            Command::Resize(r)
        }
        "history" | "rollback" => {
            let mut target = Target::default();
            let mut json = false;
            let mut positional = Vec::new();
            let mut i = 0;
            while i < rest.len() {
                match rest[i].as_str() {
                    "-n" | "--namespace" => target.namespace = Some(value(&mut i, "-n")?),
                    "-o" | "--output" if cmd == "history" => {
                        json = match value(&mut i, "-o")?.as_str() {
                            "json" => true,
                            "table" => false,
                            other => {
                                return Err(usage(&format!("unknown output format {other:?}")))
                            }
                        }
                    }
                    s if s.starts_with('-') => return Err(usage(&format!("unknown flag {s:?}"))),
                    s => positional.push(s.to_string()),
                }
                i += 1;
            }
            let mut positional = positional.into_iter();
            target.id = positional
                .next()
                .ok_or_else(|| usage(&format!("{cmd} needs a container ID")))?;
            if cmd == "history" {
                if let Some(extra) = positional.next() {
                    return Err(usage(&format!("unexpected argument {extra:?}")));
                }
                Command::History { target, json }
            } else {
                let rev = positional
                    .next()
                    .ok_or_else(|| usage("rollback needs a REVISION"))?;
                let revision = rev
                    .parse()
                    .map_err(|_| usage(&format!("revision {rev:?} is not a number")))?;
                Command::Rollback { target, revision }
            }
        }
        "watch" => {
            let mut target = Target::default();
            let mut i = 0;
            while i < rest.len() {
                match rest[i].as_str() {
                    "-n" | "--namespace" => target.namespace = Some(value(&mut i, "-n")?),
                    s if s.starts_with('-') => return Err(usage(&format!("unknown flag {s:?}"))),
                    s if target.id.is_empty() => target.id = s.to_string(),
                    s => return Err(usage(&format!("unexpected argument {s:?}"))),
                }
                i += 1;
            }
            Command::Watch {
                target: (!target.id.is_empty()).then_some(target),
            }
        }
        "traits" => {
            let (mut describe, mut json) = (None, false);
            let mut i = 0;
            while i < rest.len() {
                match rest[i].as_str() {
                    "-o" | "--output" => match value(&mut i, "-o")?.as_str() {
                        "json" => json = true,
                        "table" => json = false,
                        other => return Err(usage(&format!("unknown output format {other:?}"))),
                    },
                    "describe" if describe.is_none() => {
                        i += 1;
                        let name = rest
                            .get(i)
                            .ok_or_else(|| usage("traits describe needs a trait NAME"))?;
                        describe = Some(name.to_string());
                    }
                    other => return Err(usage(&format!("unexpected argument {other:?}"))),
                }
                i += 1;
            }
            Command::Traits { describe, json }
        }
        "check" => {
            let (mut file, mut traits) = (None, None);
            let mut i = 0;
            while i < rest.len() {
                match rest[i].as_str() {
                    "--traits" => traits = Some(PathBuf::from(value(&mut i, "--traits")?)),
                    s if s.starts_with('-') && s != "-" => {
                        return Err(usage(&format!("unknown flag {s:?}")))
                    }
                    s if file.is_none() => file = Some(PathBuf::from(s)),
                    s => return Err(usage(&format!("unexpected argument {s:?}"))),
                }
                i += 1;
            }
            let file = file.ok_or_else(|| usage("check needs a FILE (- for standard input)"))?;
            Command::Check { file, traits }
        }
        "version" | "--version" => Command::Version,
        other => return Err(usage(&format!("unknown command {other:?}"))),
    };
    Ok((socket, command))
}

/// The OCI LinuxResources that express a resize, as JSON.
pub fn resources_json(r: &Resize) -> serde_json::Value {
    let mut res = serde_json::Map::new();
    let mut cpu = serde_json::Map::new();
    if let Some(m) = r.cpu_millis {
        cpu.insert("quota".into(), (m * CPU_PERIOD_US / 1000).into());
        cpu.insert("period".into(), CPU_PERIOD_US.into());
    }
    if let Some(set) = &r.cpuset {
        cpu.insert("cpus".into(), set.clone().into());
    }
    if !cpu.is_empty() {
        res.insert("cpu".into(), cpu.into());
    }
    if let Some(b) = r.memory_bytes {
        res.insert("memory".into(), serde_json::json!({ "limit": b }));
    }
    res.into()
}

/// (cpu, memory, cpuset) as shown to operators; `none` stands for unlimited.
fn limit_columns(l: &pb::Limits, none: &str) -> (String, String, String) {
    let cpu = l.cpu_millis.map(|m| format!("{m}m"));
    let mem = l.memory_bytes.map(format_memory);
    let set = if l.cpuset.is_empty() {
        "-".to_string()
    } else {
        l.cpuset.clone()
    };
    (
        cpu.unwrap_or_else(|| none.into()),
        mem.unwrap_or_else(|| none.into()),
        set,
    )
}

/// The live limits, as a resize reports them.
pub fn describe_limits(c: &pb::Container) -> String {
    let (cpu, mem, set) = limit_columns(&c.live.clone().unwrap_or_default(), "unlimited");
    format!("cpu={cpu} memory={mem} cpuset={set}")
}

/// Lays out `rows` under `header` in columns as wide as their widest cell;
/// the columns flagged in `right` are aligned right.
fn columns(header: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .zip(right)
            .map(|((cell, &w), &right)| {
                if right {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `tidalctl ps`: each container with its pod, QoS, live limits beside the
/// declared ones (`?` when its spec is unreadable), usage, and the sources of
/// the changes layered on the declared limits.
pub fn table(containers: &[pb::Container]) -> String {
    const HEADER: [&str; 13] = [
        "ID",
        "NAMESPACE",
        "POD",
        "NAME",
        "QOS",
        "PID",
        "STATUS",
        "CPU(LIVE/DECL)",
        "MEM(LIVE/DECL)",
        "CPUSET(LIVE/DECL)",
        "CPU-TIME",
        "MEM-USED",
        "OVERLAY",
    ];
    const RIGHT: [bool; 13] = [
        false, false, false, false, false, true, false, true, true, true, true, true, false,
    ];
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let rows: Vec<Vec<String>> = containers
        .iter()
        .map(|c| {
            let usage = c.usage.unwrap_or_default();
            let live = limit_columns(&c.live.clone().unwrap_or_default(), "-");
            let declared = match &c.declared {
                Some(d) => limit_columns(d, "-"),
                None => ("?".into(), "?".into(), "?".into()),
            };
            let name = if c.sandbox && c.name.is_empty() {
                "(sandbox)".to_string()
            } else {
                dash(&c.name)
            };
            vec![
                c.id.clone(),
                c.namespace.clone(),
                dash(&c.pod),
                name,
                dash(&c.qos),
                c.pid.to_string(),
                c.status.clone(),
                format!("{}/{}", live.0, declared.0),
                format!("{}/{}", live.1, declared.1),
                format!("{}/{}", live.2, declared.2),
                format!("{:.2}s", usage.cpu_ns as f64 / 1e9),
                format_memory(usage.memory_bytes),
                dash(&c.overlays.join(",")),
            ]
        })
        .collect();
    columns(&HEADER, &RIGHT, &rows)
}

fn limits_json(l: &pb::Limits) -> serde_json::Value {
    serde_json::json!({"cpu_millis": l.cpu_millis, "memory_bytes": l.memory_bytes, "cpuset": l.cpuset})
}

/// `ps -o json`: everything tidald reports, for scripts. `declared` is null
/// when the container's spec is unreadable.
fn json(c: &pb::Container) -> serde_json::Value {
    let u = c.usage.unwrap_or_default();
    serde_json::json!({
        "id": c.id, "namespace": c.namespace, "pod": c.pod, "name": c.name,
        "sandbox": c.sandbox, "qos": c.qos, "pid": c.pid, "status": c.status,
        "live": limits_json(&c.live.clone().unwrap_or_default()),
        "declared": c.declared.as_ref().map(limits_json),
        "overlays": c.overlays,
        "usage": {"cpu_ns": u.cpu_ns, "memory_bytes": u.memory_bytes},
    })
}

fn reference(namespace: Option<String>, id: &str) -> Option<pb::ContainerRef> {
    Some(pb::ContainerRef {
        namespace: namespace.unwrap_or_default(),
        id: id.to_string(),
    })
}

/// The container `name` names among `all` (restricted to `namespace` if
/// given): a unique prefix of an id (4 characters or more), or a Kubernetes
/// name, POD/CONTAINER or NAMESPACE/POD/CONTAINER (never a pod's sandbox).
pub fn resolve<'a>(
    all: &'a [pb::Container],
    namespace: Option<&str>,
    name: &str,
) -> Result<&'a pb::Container, String> {
    let in_ns = |c: &&pb::Container| namespace.is_none_or(|n| c.namespace == n);
    let found: Vec<&pb::Container> = if name.contains('/') {
        let parts: Vec<&str> = name.split('/').collect();
        let (pod_ns, pod, container) = match parts.as_slice() {
            [pod, c] => (None, *pod, *c),
            [ns, pod, c] => (Some(*ns), *pod, *c),
            _ => {
                return Err(format!(
                "{name:?} is not a container: give an id, POD/CONTAINER or NAMESPACE/POD/CONTAINER"
            ))
            }
        };
        all.iter()
            .filter(in_ns)
            .filter(|c| !c.sandbox && c.name == container)
            .filter(|c| {
                c.pod
                    .split_once('/')
                    .is_some_and(|(n, p)| p == pod && pod_ns.is_none_or(|w| w == n))
            })
            .collect()
    } else if name.len() >= 4 {
        all.iter()
            .filter(in_ns)
            .filter(|c| c.id.starts_with(name))
            .collect()
    } else {
        Vec::new()
    };
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "no tidal container {name:?} on this node (give an id, a unique prefix of one \
             of 4 or more characters, or POD/CONTAINER)"
        )),
        many => Err(format!(
            "{name:?} names {} containers: {}; give more of the id, or -n NAMESPACE",
            many.len(),
            many.iter()
                .take(5)
                .map(|c| format!("{}/{}", c.namespace, c.id))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The (namespace, id) of the container a command names: the id as given
/// when tidald knows it (one lookup), else through `resolve` over the
/// node's containers.
async fn named(
    api: &mut crate::api::pb::resize_client::ResizeClient<tonic::transport::Channel>,
    namespace: Option<String>,
    name: String,
) -> Result<(Option<String>, String), CtlError> {
    if !name.contains('/') {
        let exact = api
            .get_resources(pb::GetResourcesRequest {
                container: reference(namespace.clone(), &name),
            })
            .await;
        match exact {
            Ok(_) => return Ok((namespace, name)),
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(CtlError::Api(s.message().to_string())),
        }
    }
    let all = api
        .list_containers(pb::ListContainersRequest {})
        .await
        .map_err(|s| CtlError::Api(s.message().to_string()))?
        .into_inner()
        .containers;
    let c = resolve(&all, namespace.as_deref(), &name).map_err(CtlError::Api)?;
    Ok((Some(c.namespace.clone()), c.id.clone()))
}

async fn named_target(
    api: &mut crate::api::pb::resize_client::ResizeClient<tonic::transport::Channel>,
    t: Target,
) -> Result<Target, CtlError> {
    let (namespace, id) = named(api, t.namespace, t.id).await?;
    Ok(Target { namespace, id })
}

/// Runs a parsed command against tidald at `socket`, printing to stdout.
pub async fn run(socket: PathBuf, cmd: Command) -> Result<(), CtlError> {
    if cmd == Command::Version {
        println!("tidalctl {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    if let Command::Check { file, traits } = &cmd {
        return check(file, traits.as_deref());
    }
    if let Command::Traits { describe, json } = &cmd {
        return show_traits(&socket, describe.as_deref(), *json).await;
    }
    let mut api = crate::api::connect(&socket)
        .await
        .map_err(|e| CtlError::Connect {
            socket: socket.display().to_string(),
            error: std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string()),
        })?;
    let status = |s: tonic::Status| CtlError::Api(s.message().to_string());
    // Containers may be named by id prefix or by Kubernetes name.
    let cmd = match cmd {
        Command::Resize(mut r) => {
            let (namespace, id) = named(&mut api, r.namespace.take(), r.id.clone()).await?;
            r.namespace = namespace;
            r.id = id;
            Command::Resize(r)
        }
        Command::History { target, json } => Command::History {
            target: named_target(&mut api, target).await?,
            json,
        },
        Command::Rollback { target, revision } => Command::Rollback {
            target: named_target(&mut api, target).await?,
            revision,
        },
        Command::Watch { target: Some(t) } => Command::Watch {
            target: Some(named_target(&mut api, t).await?),
        },
        other => other,
    };
    match cmd {
        Command::Version | Command::Check { .. } | Command::Traits { .. } => {}
        Command::Ps { json: as_json } => {
            let all = api
                .list_containers(pb::ListContainersRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .containers;
            if as_json {
                let list: Vec<_> = all.iter().map(json).collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            } else {
                print!("{}", table(&all));
            }
        }
        Command::Resize(r) => {
            let target = reference(r.namespace.clone(), &r.id);
            let req = pb::UpdateResourcesRequest {
                container: target.clone(),
                source: "operator".into(),
                reason: r.reason.clone().unwrap_or_default(),
                cpu_millis: r.cpu_millis,
                memory_bytes: r.memory_bytes,
                cpuset: r.cpuset.clone(),
                reclaim: r.reclaim,
                dry_run: false,
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
                }
                Err(s)
                    if s.code() == tonic::Code::NotFound
                        && s.message().starts_with("no tidal container") =>
                {
                    return Err(status(s));
                }
                Err(s) => {
                    let current = api
                        .get_resources(pb::GetResourcesRequest { container: target })
                        .await
                        .map(|c| describe_limits(&c.into_inner()))
                        .unwrap_or_else(|_| "unknown".into());
                    return Err(CtlError::Refused {
                        id: r.id.clone(),
                        reason: s.message().to_string(),
                        current,
                    });
                }
            }
        }
        Command::History {
            target,
            json: as_json,
        } => {
            let revs = api
                .history(pb::HistoryRequest {
                    container: reference(target.namespace, &target.id),
                })
                .await
                .map_err(status)?
                .into_inner()
                .revisions;
            let revs: Vec<history::Revision> = revs.into_iter().map(Into::into).collect();
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&revs).unwrap_or_default()
                );
            } else {
                print!("{}", history_table(&revs));
            }
        }
        Command::Watch { target } => {
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
            use std::io::Write as _;
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
        }
        Command::Rollback { target, revision } => {
            let resp = api
                .rollback(pb::RollbackRequest {
                    container: reference(target.namespace.clone(), &target.id),
                    revision,
                    reason: String::new(),
                })
                .await
                .map_err(|s| CtlError::Refused {
                    id: target.id.clone(),
                    reason: s.message().to_string(),
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
        }
    }
    Ok(())
}

/// Seconds since the epoch as `2026-11-22T11:50:01Z` (`-json` keeps the
/// number).
pub fn utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One line per revision: what changed, from what to what.
pub fn history_table(revs: &[history::Revision]) -> String {
    let mut out = format!(
        "{:>4}  {:<20}  {:<12}  {:<44}  {}\n",
        "REV", "TIME (UTC)", "SOURCE", "CHANGE", "REASON"
    );
    for r in revs {
        out.push_str(&format!(
            "{:>4}  {:<20}  {:<12}  {:<44}  {}\n",
            r.revision,
            utc(r.time),
            r.source,
            describe_change(&r.before, &r.after),
            r.reason
        ));
    }
    out
}

fn describe_change(before: &Update, after: &Update) -> String {
    let show = |l: Option<Limit>, mem: bool| match l {
        None => "-".to_string(),
        Some(Limit::Max) => "max".to_string(),
        Some(Limit::Value(v)) if mem => format_memory(v),
        Some(Limit::Value(v)) => v.to_string(),
    };
    let mut parts = Vec::new();
    if before.cpu_quota.is_some() || after.cpu_quota.is_some() {
        parts.push(format!(
            "cpu.quota {}->{}",
            show(before.cpu_quota, false),
            show(after.cpu_quota, false)
        ));
    }
    if before.memory_limit.is_some() || after.memory_limit.is_some() {
        parts.push(format!(
            "memory {}->{}",
            show(before.memory_limit, true),
            show(after.memory_limit, true)
        ));
    }
    if before.memory_swap != after.memory_swap {
        parts.push(format!(
            "memory+swap {}->{}",
            show(before.memory_swap, true),
            show(after.memory_swap, true)
        ));
    }
    if before.cpuset_cpus.is_some() || after.cpuset_cpus.is_some() {
        parts.push(format!(
            "cpuset {}->{}",
            before.cpuset_cpus.as_deref().unwrap_or("-"),
            after.cpuset_cpus.as_deref().unwrap_or("-")
        ));
    }
    if parts.is_empty() {
        parts.push("other limits".into());
    }
    parts.join(", ")
}

/// `tidalctl check`: the catalogue's rules applied to an OAM file, offline.
fn check(file: &std::path::Path, dir: Option<&std::path::Path>) -> Result<(), CtlError> {
    use std::io::Read;
    let catalogue = match dir {
        Some(d) => crate::traits::Catalogue::load(d),
        None => crate::traits::Catalogue::node(),
    }
    .map_err(|e| CtlError::Check(vec![e]))?;
    let name = file.display().to_string();
    let mut text = String::new();
    let limit = crate::traits::oam::MAX_FILE as u64 + 1;
    let read = if name == "-" {
        std::io::stdin().take(limit).read_to_string(&mut text)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_string(&mut text))
    };
    read.map_err(|e| CtlError::Check(vec![format!("{name}: {e}")]))?;
    match crate::traits::oam::check(&catalogue, &text) {
        Ok((components, traits)) => {
            println!(
                "{name}: ok: {components} component(s), {traits} trait(s) checked against the {} trait catalogue",
                catalogue.origin
            );
            Ok(())
        }
        Err(problems) => Err(CtlError::Check(
            problems
                .into_iter()
                .map(|p| format!("{name}: {p}"))
                .collect(),
        )),
    }
}

/// `tidalctl traits [describe NAME]`, from tidald's catalogue API.
async fn show_traits(
    socket: &std::path::Path,
    describe: Option<&str>,
    as_json: bool,
) -> Result<(), CtlError> {
    let mut api = crate::api::connect_traits(socket)
        .await
        .map_err(|e| CtlError::Connect {
            socket: socket.display().to_string(),
            error: std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string()),
        })?;
    let list = api
        .list_traits(crate::api::traits_pb::ListTraitsRequest {})
        .await
        .map_err(|s| CtlError::Api(s.message().to_string()))?
        .into_inner();
    let Some(name) = describe else {
        if as_json {
            let all: Vec<serde_json::Value> = list.traits.iter().map(trait_json).collect();
            println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        } else {
            print!("{}", traits_table(&list.traits));
        }
        return Ok(());
    };
    let t = list.traits.iter().find(|t| t.name == name).ok_or_else(|| {
        let names: Vec<&str> = list.traits.iter().map(|t| t.name.as_str()).collect();
        CtlError::Api(format!(
            "no trait {name:?} on this node (it supports: {})",
            names.join(", ")
        ))
    })?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&trait_json(t)).unwrap_or_default()
        );
    } else {
        print!("{}", describe_trait(t));
    }
    Ok(())
}

fn trait_json(t: &crate::api::traits_pb::TraitDefinition) -> serde_json::Value {
    serde_json::json!({
        "name": t.name,
        "description": t.description,
        "appliesToWorkloads": t.applies_to,
        "conflictsWith": t.conflicts_with,
        "conflictReason": t.conflict_reason,
        "schema": serde_json::from_str::<serde_json::Value>(&t.schema_json).unwrap_or_default(),
        "source": t.source,
    })
}

/// `tidalctl traits`: one row per definition, like `kubectl get traitdefinition`.
pub fn traits_table(traits: &[crate::api::traits_pb::TraitDefinition]) -> String {
    let rows: Vec<Vec<String>> = traits
        .iter()
        .map(|t| {
            let list = |l: &[String]| {
                if l.is_empty() {
                    "-".to_string()
                } else {
                    l.join(",")
                }
            };
            let mut desc: String = t.description.chars().take(60).collect();
            if t.description.chars().count() > 60 {
                desc.push_str("...");
            }
            vec![
                t.name.clone(),
                list(&t.applies_to),
                list(&t.conflicts_with),
                desc,
            ]
        })
        .collect();
    columns(
        &["NAME", "APPLIES-TO", "CONFLICTS-WITH", "DESCRIPTION"],
        &[false; 4],
        &rows,
    )
}

/// `tidalctl traits describe NAME`: the rules and every property.
pub fn describe_trait(t: &crate::api::traits_pb::TraitDefinition) -> String {
    use crate::traits::schema::Schema;
    let mut out = format!("Name:            {}\n", t.name);
    out += &format!("Description:     {}\n", t.description);
    out += &format!("Applies to:      {}\n", t.applies_to.join(", "));
    let conflicts = if t.conflicts_with.is_empty() {
        "-".to_string()
    } else if t.conflict_reason.is_empty() {
        t.conflicts_with.join(", ")
    } else {
        format!("{} ({})", t.conflicts_with.join(", "), t.conflict_reason)
    };
    out += &format!("Conflicts with:  {conflicts}\n");
    out += &format!(
        "Annotation:      {}{}: '<properties as JSON>'\n",
        crate::traits::TRAIT_PREFIX,
        t.name
    );
    out += &format!("Source:          {}\n", t.source);
    let schema: Schema = match serde_json::from_str(&t.schema_json) {
        Ok(s) => s,
        Err(e) => return out + &format!("Properties:      unreadable schema: {e}\n"),
    };
    fn walk(s: &Schema, path: &str, required: bool, rows: &mut Vec<Vec<String>>) {
        use crate::traits::schema::Kind;
        let mut ty = match s.kind {
            Kind::Array => format!(
                "[]{}",
                s.items
                    .as_ref()
                    .map(|i| format!("{:?}", i.kind).to_lowercase())
                    .unwrap_or_default()
            ),
            k => format!("{k:?}").to_lowercase(),
        };
        let format = s.format.or(s.items.as_ref().and_then(|i| i.format));
        if let Some(f) = format {
            ty += &format!(
                " ({})",
                serde_json::to_value(f)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            );
        }
        if let Some(e) = s
            .one_of
            .as_ref()
            .or(s.items.as_ref().and_then(|i| i.one_of.as_ref()))
        {
            let names: Vec<String> = e
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect();
            ty += &format!(" {}", names.join("|"));
        }
        if let (Some(lo), Some(hi)) = (s.minimum, s.maximum) {
            ty += &format!(" {lo}..{hi}");
        }
        if !path.is_empty() {
            rows.push(vec![
                format!("{path}{}", if required { "*" } else { "" }),
                ty,
                s.default
                    .as_ref()
                    .map(|d| {
                        d.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| d.to_string())
                    })
                    .unwrap_or_else(|| "-".into()),
                s.description.clone().unwrap_or_default(),
            ]);
        }
        let (obj, prefix) = match (&s.items, s.kind) {
            (Some(items), Kind::Array) => (items.as_ref(), format!("{path}[].")),
            _ => (
                s,
                if path.is_empty() {
                    String::new()
                } else {
                    format!("{path}.")
                },
            ),
        };
        for (name, p) in &obj.properties {
            walk(
                p,
                &format!("{prefix}{name}"),
                obj.required.contains(name),
                rows,
            );
        }
    }
    let mut rows = Vec::new();
    walk(&schema, "", false, &mut rows);
    out += "Properties (* required):\n";
    let table = columns(
        &["  PROPERTY", "TYPE", "DEFAULT", "DESCRIPTION"],
        &[false; 4],
        &rows
            .into_iter()
            .map(|mut r| {
                r[0] = format!("  {}", r[0]);
                r
            })
            .collect::<Vec<_>>(),
    );
    out + &table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_named_by_id_prefix_or_kubernetes_name() {
        let c = |ns: &str, id: &str, pod: &str, name: &str, sandbox: bool| pb::Container {
            namespace: ns.into(),
            id: id.into(),
            pod: pod.into(),
            name: name.into(),
            sandbox,
            ..Default::default()
        };
        let all = [
            c("k8s.io", "e314f975aa", "shop/web-1", "cart", false),
            c("k8s.io", "e3ff0000bb", "shop/web-1", "", true),
            c("k8s.io", "77aa0000cc", "dev/web-1", "cart", false),
            c("tidal", "e314f975dd", "", "", false),
        ];
        let id = |r: Result<&pb::Container, String>| r.map(|c| c.id.clone());
        assert_eq!(
            id(resolve(&all, None, "shop/web-1/cart")),
            Ok("e314f975aa".into())
        );
        assert_eq!(
            id(resolve(&all, None, "dev/web-1/cart")),
            Ok("77aa0000cc".into())
        );
        assert_eq!(id(resolve(&all, None, "77aa")), Ok("77aa0000cc".into()));
        assert_eq!(
            id(resolve(&all, Some("tidal"), "e314")),
            Ok("e314f975dd".into())
        );
        // POD/CONTAINER in two Kubernetes namespaces, an id prefix in two
        // containerd namespaces: ambiguous, and the candidates are named.
        let e = resolve(&all, None, "web-1/cart").unwrap_err();
        assert!(
            e.contains("names 2 containers") && e.contains("77aa0000cc"),
            "{e}"
        );
        let e = resolve(&all, None, "e314f975").unwrap_err();
        assert!(
            e.contains("k8s.io/e314f975aa") && e.contains("tidal/e314f975dd"),
            "{e}"
        );
        // Too short to be a prefix, a sandbox is not a container to resize,
        // and nonsense is refused with what would have been accepted.
        assert!(resolve(&all, None, "e3").unwrap_err().contains("4 or more"));
        assert!(resolve(&all, None, "shop/web-1/").is_err());
        let e = resolve(&all, None, "a/b/c/d").unwrap_err();
        assert!(e.contains("POD/CONTAINER"), "{e}");
    }

    #[test]
    fn revision_times_print_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_348_445), "2026-11-22T11:54:05Z");
        assert_eq!(utc(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn resize_command_line() {
        let (dir, cmd) = parse(&args(
            "--state-dir /x resize -n k8s.io web --cpu 500m --memory 256Mi",
        ))
        .unwrap();
        assert_eq!(
            dir,
            PathBuf::from("/x/.api/tidald.sock"),
            "--state-dir names tidald's socket"
        );
        let (socket, _) = parse(&args("--socket /y.sock ps")).unwrap();
        assert_eq!(socket, PathBuf::from("/y.sock"));
        assert_eq!(
            cmd,
            Command::Resize(Resize {
                namespace: Some("k8s.io".into()),
                id: "web".into(),
                cpu_millis: Some(500),
                memory_bytes: Some(256 << 20),
                cpuset: None,
                reason: None,
                reclaim: false,
            })
        );
        let (_, cmd) = parse(&args("rollback -n k8s.io web 3")).unwrap();
        assert_eq!(
            cmd,
            Command::Rollback {
                target: Target {
                    namespace: Some("k8s.io".into()),
                    id: "web".into()
                },
                revision: 3
            }
        );
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        let err = |s: &str| parse(&args(s)).unwrap_err().to_string();
        assert!(err("resize web").contains("at least one of --cpu"));
        assert!(err("resize --cpu 1").contains("needs a container ID"));
        assert!(err("resize web --cpu").contains("--cpu needs a value"));
        assert!(err("resize web --cpu lots").contains("\"lots\""));
        assert!(err("resize web --memory 0").contains("greater than zero"));
        assert!(err("frobnicate").contains("unknown command"));
        assert!(err("ps -o yaml").contains("unknown output format"));
        assert!(err("rollback web").contains("needs a REVISION"));
        assert!(err("rollback web x").contains("not a number"));
        assert!(err("history").contains("needs a container ID"));
        assert_eq!(
            parse(&args("watch")).unwrap().1,
            Command::Watch { target: None }
        );
        assert!(err("watch a b").contains("unexpected argument"));
    }

    #[test]
    fn resize_becomes_oci_resources() {
        let r = Resize {
            id: "web".into(),
            cpu_millis: Some(250),
            memory_bytes: Some(64 << 20),
            cpuset: Some("0".into()),
            ..Default::default()
        };
        assert_eq!(
            resources_json(&r),
            serde_json::json!({"cpu": {"quota": 25000, "period": 100000, "cpus": "0"}, "memory": {"limit": 67108864}})
        );
    }

    fn listed(live: (Option<u64>, Option<u64>), overlays: &[&str]) -> pb::Container {
        pb::Container {
            namespace: "k8s.io".into(),
            id: "4f1c".into(),
            pid: 4242,
            status: "running".into(),
            qos: "online".into(),
            live: Some(pb::Limits {
                cpu_millis: live.0,
                memory_bytes: live.1,
                cpuset: "0-3".into(),
            }),
            usage: Some(pb::Usage {
                cpu_ns: 1_500_000_000,
                memory_bytes: 8 << 20,
            }),
            pod: "shop/web-7d4b".into(),
            name: "app".into(),
            sandbox: false,
            declared: Some(pb::Limits {
                cpu_millis: Some(500),
                memory_bytes: Some(256 << 20),
                cpuset: String::new(),
            }),
            overlays: overlays.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn ps_shows_live_limits_beside_declared_ones_and_who_overlaid_them() {
        let resized = listed((Some(200), Some(64 << 20)), &["operator", "trait:scaler"]);
        let declared = pb::Container {
            id: "9a2e".into(),
            ..listed((Some(500), Some(256 << 20)), &[])
        };
        let sandbox = pb::Container {
            id: "77aa".into(),
            name: String::new(),
            sandbox: true,
            declared: None,
            ..listed((None, None), &[])
        };
        let text = table(&[resized, declared, sandbox]);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines,
            vec![
                vec![
                    "ID",
                    "NAMESPACE",
                    "POD",
                    "NAME",
                    "QOS",
                    "PID",
                    "STATUS",
                    "CPU(LIVE/DECL)",
                    "MEM(LIVE/DECL)",
                    "CPUSET(LIVE/DECL)",
                    "CPU-TIME",
                    "MEM-USED",
                    "OVERLAY"
                ],
                vec![
                    "4f1c",
                    "k8s.io",
                    "shop/web-7d4b",
                    "app",
                    "online",
                    "4242",
                    "running",
                    "200m/500m",
                    "64Mi/256Mi",
                    "0-3/-",
                    "1.50s",
                    "8Mi",
                    "operator,trait:scaler"
                ],
                vec![
                    "9a2e",
                    "k8s.io",
                    "shop/web-7d4b",
                    "app",
                    "online",
                    "4242",
                    "running",
                    "500m/500m",
                    "256Mi/256Mi",
                    "0-3/-",
                    "1.50s",
                    "8Mi",
                    "-"
                ],
                vec![
                    "77aa",
                    "k8s.io",
                    "shop/web-7d4b",
                    "(sandbox)",
                    "online",
                    "4242",
                    "running",
                    "-/?",
                    "-/?",
                    "0-3/?",
                    "1.50s",
                    "8Mi",
                    "-"
                ],
            ],
            "{text}"
        );
        // Columns line up: every row's OVERLAY starts where its header does.
        let at = text.lines().next().unwrap().find("OVERLAY").unwrap();
        for l in text.lines().skip(1) {
            assert!(
                !l[at..].starts_with(' ') && l[..at].ends_with("  "),
                "{text}"
            );
        }

        let j = json(&listed((Some(200), Some(64 << 20)), &["operator"]));
        assert_eq!(j["pod"], "shop/web-7d4b");
        assert_eq!(j["qos"], "online");
        assert_eq!(j["live"]["cpu_millis"], 200);
        assert_eq!(j["declared"]["cpu_millis"], 500);
        assert_eq!(j["declared"]["memory_bytes"], 256 << 20);
        assert_eq!(j["overlays"], serde_json::json!(["operator"]));
        assert_eq!(j["usage"]["cpu_ns"], 1_500_000_000u64);
    }
}

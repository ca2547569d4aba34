//! The `cron-vertical-scaler` trait's controller: runs the jobs of every
//! running container whose pod carries the trait, each firing a revision by
//! `trait:cron-vertical-scaler` with the job's name as its reason, through
//! the one resize path.
//!
//! What a container should have is worked out from the schedules at each
//! pass (`traits::cron::wanted`), per resource, never from what this process
//! remembers: after a restart, a firing (or a job's end) still in effect
//! that the history does not show is applied once; one already recorded is
//! not applied again. A firing that fails (memory below usage, container exiting) is
//! recorded as failed with its reason and not retried until the next one.
//!
//! Who wins (docs/traits.md): a firing sets the value whoever set it before
//! (the schedule says so); when a job's duration runs out, the declared
//! limit comes back only if the job's value is still the latest one of that
//! resource: a change another writer made since is theirs, and stays.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::inventory::{Inventory, Name, View};
use super::owner;
use super::resizer::Resizer;
use crate::proto::traits_pb;
use crate::resize::{history, Change, Notes};
use crate::traits::cron::{self, Job, Resource, Wanted};
use crate::traits::Catalogue;

/// The trait this controller runs.
pub const TRAIT: &str = "cron-vertical-scaler";
/// The source of the revisions it makes.
pub const SOURCE: &str = "trait:cron-vertical-scaler";

type Key = (String, String);

/// What the controller acted on for one resource: a job's firing (or its
/// end) at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Act {
    back: bool,
    job: String,
    at: i64,
}

impl Act {
    fn of(w: Wanted<'_>) -> Option<Act> {
        match w {
            Wanted::Declared => None,
            Wanted::Set { job, at } => Some(Act {
                back: false,
                job: job.name.clone(),
                at,
            }),
            Wanted::Back { job, at } => Some(Act {
                back: true,
                job: job.name.clone(),
                at,
            }),
        }
    }

    /// The revision's reason: the job's name, or that its time ran out.
    fn reason(&self) -> String {
        if self.back {
            format!("{} ended", self.job)
        } else {
            self.job.clone()
        }
    }
}

/// How the controller's last action for a job went.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub at: i64,
    pub text: String,
    pub failed: bool,
}

/// A container carrying the trait (or not: then `jobs` is empty).
struct Entry {
    pod: String,
    name: String,
    /// The trait's jobs, read from the bundle once; Err: unusable.
    jobs: Result<Vec<Job>, String>,
    /// Per resource, the firing acted on last (or found already recorded).
    done: BTreeMap<Resource, Act>,
    /// Per job, its last outcome.
    outcomes: HashMap<String, Outcome>,
}

impl Entry {
    fn read(v: &View, catalogue: &Catalogue) -> Entry {
        let spec = std::fs::read(v.info.bundle.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        Entry {
            pod: v.declared.pod.clone(),
            name: v.declared.name.clone(),
            jobs: jobs_in(spec.as_ref(), catalogue),
            done: BTreeMap::new(),
            outcomes: HashMap::new(),
        }
    }
}

/// The trait's jobs in a spec's annotations: none without the trait, Err
/// naming the annotation when it is unusable.
fn jobs_in(spec: Option<&serde_json::Value>, catalogue: &Catalogue) -> Result<Vec<Job>, String> {
    let annotation = format!("{}{TRAIT}", crate::annotations::TRAIT_PREFIX);
    let Some(text) = spec
        .and_then(|s| s.pointer("/annotations"))
        .and_then(|a| a.get(&annotation))
        .and_then(serde_json::Value::as_str)
    else {
        return Ok(Vec::new());
    };
    let at = |e: String| format!("annotation {annotation}: {e}");
    let def = catalogue
        .get(TRAIT)
        .ok_or_else(|| at(format!("this node's trait catalogue has no {TRAIT} trait")))?;
    let t = crate::traits::parse_properties(def, text).map_err(at)?;
    crate::traits::cron_jobs(&t).map_err(at)
}

/// One change a pass decided on.
struct Step {
    key: Key,
    resource: Resource,
    act: Act,
    change: Change,
    /// The container's last revision when this was decided.
    basis: u64,
    /// A job's end (a give-back) is written only if no one else changed the
    /// container since `basis`.
    conditional: bool,
}

/// The controller: its containers' state, shared with the API.
pub struct Controller {
    inventory: Arc<Inventory>,
    resizer: Arc<Resizer>,
    catalogue: Catalogue,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Controller {
    pub fn new(inventory: Arc<Inventory>, resizer: Arc<Resizer>, catalogue: Catalogue) -> Self {
        Controller {
            inventory,
            resizer,
            catalogue,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Runs passes for ever: one at the start of every second (cron's
    /// finest unit), so that a job fires within milliseconds of its time
    /// and a new container is found within a second.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.pass(unix_now()).await;
            let since = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos();
            let to_next = Duration::from_nanos(1_000_000_000 - u64::from(since));
            tokio::time::sleep(to_next + Duration::from_millis(2)).await;
        }
    }

    /// One pass at Unix time `now`: decides on a blocking thread (it reads
    /// the node's containers), then applies what it decided.
    pub async fn pass(self: &Arc<Self>, now: i64) {
        let me = self.clone();
        let steps = match tokio::task::spawn_blocking(move || me.plan(now)).await {
            Ok(steps) => steps,
            Err(e) => {
                tracing::warn!("cron-vertical-scaler: {e}");
                return;
            }
        };
        // A later step on a container that this pass changed is decided
        // from the container as this pass left it, as long as only this
        // pass wrote to it since the plan read it.
        let mut wrote: HashMap<Key, u64> = HashMap::new();
        for s in steps {
            let key = s.key.clone();
            let basis = wrote.get(&key).copied().unwrap_or(s.basis);
            if let Some(revision) = self.apply(s, basis, now).await {
                if revision == basis + 1 {
                    wrote.insert(key, revision);
                }
            }
        }
    }

    /// What to change now, per running container and resource.
    fn plan(&self, now: i64) -> Vec<Step> {
        let views = match self.inventory.list_declared() {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("cron-vertical-scaler: {e}");
                return Vec::new();
            }
        };
        let running: HashMap<Key, &View> = views
            .iter()
            .filter(|v| v.info.status == "running" && !v.declared.sandbox)
            .map(|v| ((v.info.namespace.clone(), v.info.id.clone()), v))
            .collect();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|k, _| running.contains_key(k));
        let mut steps = Vec::new();
        for (key, v) in running {
            let e = entries
                .entry(key.clone())
                .or_insert_with(|| Entry::read(v, &self.catalogue));
            let Ok(jobs) = &e.jobs else { continue };
            for r in Resource::ALL {
                let w = cron::wanted(jobs, r, now);
                let Some(act) = Act::of(w) else { continue };
                if e.done.get(&r) == Some(&act) {
                    continue;
                }
                let fresh = !e.done.contains_key(&r);
                if fresh {
                    let history = self.inventory.history(&name(&key)).unwrap_or_default();
                    if recorded(&history, r, &act) {
                        // Applied before this process started.
                        e.done.insert(r, act);
                        continue;
                    }
                }
                let change = match w {
                    Wanted::Set { job, .. } => set(job, r),
                    _ => {
                        if !owner::holds(&v.declared.writers, SOURCE, resource_name(r)) {
                            // Another writer's value (or none of ours):
                            // theirs to keep.
                            e.done.insert(r, act);
                            continue;
                        }
                        match declared(v, r) {
                            Ok(c) => c,
                            Err(why) => {
                                e.outcomes.insert(act.job.clone(), failed(now, why));
                                e.done.insert(r, act);
                                continue;
                            }
                        }
                    }
                };
                steps.push(Step {
                    key: key.clone(),
                    resource: r,
                    act,
                    conditional: !matches!(w, Wanted::Set { .. }),
                    change,
                    basis: v.last_revision,
                });
            }
        }
        steps
    }

    /// Applies step `s` (a job's end only while the container's last
    /// revision is `basis`); the revision it made.
    async fn apply(&self, s: Step, basis: u64, now: i64) -> Option<u64> {
        let notes = Notes {
            source: SOURCE.to_string(),
            reason: s.act.reason(),
            expect_revision: s.conditional.then_some(basis),
            ..Default::default()
        };
        let what = describe(&s.change, s.resource);
        let mut made = 0;
        let outcome = match self.resizer.resize(&name(&s.key), &s.change, notes).await {
            Err(e) if e.code() == tonic::Code::Aborted => {
                // Another writer changed the container after this job's end
                // was decided: the next pass decides it again, from the
                // writers as they are then.
                tracing::debug!(
                    "cron-vertical-scaler: {}/{} job {}: {e}",
                    s.key.0,
                    s.key.1,
                    s.act.job
                );
                return None;
            }
            Ok(r) => {
                made = r.revision;
                Outcome {
                    at: now,
                    text: format!("{what}: revision {}", r.revision),
                    failed: false,
                }
            }
            Err(e) => {
                tracing::warn!(
                    "cron-vertical-scaler: {}/{} job {}: {what}: {e}",
                    s.key.0,
                    s.key.1,
                    s.act.job
                );
                failed(now, format!("{what}: {e}"))
            }
        };
        let revision = (!outcome.failed).then_some(made);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get_mut(&s.key) {
            e.outcomes.insert(s.act.job.clone(), outcome);
            e.done.insert(s.resource, s.act);
        }
        revision
    }

    /// Each container carrying the trait, its jobs and their outcomes, at
    /// Unix time `now`.
    pub fn status(&self, now: i64) -> Vec<traits_pb::CronContainer> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<traits_pb::CronContainer> = entries
            .iter()
            .filter(|(_, e)| e.jobs.as_ref().map_or(true, |j| !j.is_empty()))
            .map(|((ns, id), e)| {
                let jobs = e.jobs.as_deref().unwrap_or_default();
                traits_pb::CronContainer {
                    namespace: ns.clone(),
                    id: id.clone(),
                    pod: e.pod.clone(),
                    name: e.name.clone(),
                    problem: e.jobs.as_ref().err().cloned().unwrap_or_default(),
                    jobs: jobs
                        .iter()
                        .map(|j| job_status(jobs, j, e.outcomes.get(&j.name), now))
                        .collect(),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.id).cmp(&(&b.namespace, &b.id)));
        out
    }
}

fn job_status(jobs: &[Job], j: &Job, outcome: Option<&Outcome>, now: i64) -> traits_pb::CronJob {
    let in_effect = Resource::ALL
        .into_iter()
        .filter(|&r| matches!(cron::wanted(jobs, r, now), Wanted::Set { job, .. } if job.name == j.name))
        .map(|r| r.as_str().to_string())
        .collect();
    traits_pb::CronJob {
        name: j.name.clone(),
        schedule: j.schedule_text.clone(),
        time_zone: j.time_zone.clone(),
        cpu_millis: j.cpu_millis,
        memory_bytes: j.memory_bytes,
        duration_seconds: j.lasts.unwrap_or(0).max(0) as u64,
        last_firing_unix: j.last_firing(now).unwrap_or(0),
        next_firing_unix: j.next_firing(now).unwrap_or(0),
        in_effect,
        acted_unix: outcome.map_or(0, |o| o.at),
        outcome: outcome.map(|o| o.text.clone()).unwrap_or_default(),
        failed: outcome.is_some_and(|o| o.failed),
    }
}

fn failed(now: i64, text: String) -> Outcome {
    Outcome {
        at: now,
        text,
        failed: true,
    }
}

fn name(key: &Key) -> Name {
    Name {
        namespace: Some(key.0.clone()),
        id: key.1.clone(),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// How `agent::owner` names resource `r`.
fn resource_name(r: Resource) -> &'static str {
    match r {
        Resource::Cpu => owner::CPU,
        Resource::Memory => owner::MEMORY,
    }
}

/// Whether the history holds `act` on resource `res` already: a revision
/// of ours that set `res`, with its reason (whatever writer it displaced),
/// made at or after its time.
fn recorded(revisions: &[history::Revision], res: Resource, act: &Act) -> bool {
    let reason = act.reason();
    revisions.iter().any(|r| {
        let sets = match res {
            Resource::Cpu => r.after.cpu_quota.is_some(),
            Resource::Memory => r.after.memory_limit.is_some(),
        };
        sets && r.source == SOURCE && owner::unnoted(&r.reason) == reason && r.time as i64 >= act.at
    })
}

/// The change that sets `job`'s value of `r`.
fn set(job: &Job, r: Resource) -> Change {
    match r {
        Resource::Cpu => Change {
            cpu_millis: job.cpu_millis,
            ..Default::default()
        },
        Resource::Memory => Change {
            memory_bytes: job.memory_bytes,
            ..Default::default()
        },
    }
}

/// The change that gives `r` back as declared (lifted where Kubernetes
/// declared no limit).
fn declared(v: &View, r: Resource) -> Result<Change, String> {
    let limits = v
        .declared
        .limits
        .as_ref()
        .ok_or("the declared limits are unreadable (the container's spec)")?;
    Ok(match r {
        Resource::Cpu => Change {
            cpu_millis: limits.cpu_millis(),
            lift_cpu: limits.cpu_millis().is_none(),
            ..Default::default()
        },
        Resource::Memory => Change {
            memory_bytes: limits.memory_bytes,
            lift_memory: limits.memory_bytes.is_none(),
            ..Default::default()
        },
    })
}

/// A change of one resource as an operator reads it: "cpu 500m",
/// "memory 1Gi", "cpu unlimited".
fn describe(c: &Change, r: Resource) -> String {
    let value = match r {
        Resource::Cpu if c.lift_cpu => "unlimited".to_string(),
        Resource::Cpu => c.cpu_millis.map(|m| format!("{m}m")).unwrap_or_default(),
        Resource::Memory if c.lift_memory => "unlimited".to_string(),
        Resource::Memory => c
            .memory_bytes
            .map(crate::quantity::format_memory)
            .unwrap_or_default(),
    };
    format!("{} {value}", r.as_str())
}

#[cfg(test)]
mod tests;

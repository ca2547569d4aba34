//! Update: the one write path for a running container's resources.

use std::time::SystemTime;

use containerd_shim::api;

use super::super::error::{Error, Result};
use super::Tasks;
use crate::annotations::{
    RESIZE_DRY_RUN, RESIZE_EXPECT, RESIZE_REASON, RESIZE_RECLAIM, RESIZE_ROLLBACK, RESIZE_SOURCE,
};

impl Tasks {
    /// Task.Update: the one write path for a running container's resources,
    /// whoever asks (kubelet through CRI, or tidal's tools). Annotations on the
    /// request say who and why (`tidal.dev/source`, `tidal.dev/reason`), ask
    /// to reclaim memory before shrinking (`tidal.dev/reclaim`), or ask for a
    /// rollback (`tidal.dev/rollback-to`), or make the change conditional on
    /// the container's last revision (`tidal.dev/expect-revision`: a writer
    /// that decided from the container as it was then). Every change becomes
    /// a revision.
    pub async fn update(&self, req: &api::UpdateTaskRequest) -> Result<()> {
        use crate::resize::{self, history};
        let c = self.container(&req.id)?;
        let note = |k: &str| req.annotations.get(k).map(String::as_str);
        let source = note(RESIZE_SOURCE).unwrap_or("kubelet").to_string();
        history::validate_source(&source)?;
        let reason = note(RESIZE_REASON).unwrap_or_default();
        if reason.len() > 1024 {
            return Err(Error::InvalidArgument(format!(
                "{RESIZE_REASON} is longer than 1024 bytes"
            )));
        }
        let reclaim = match note(RESIZE_RECLAIM) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(Error::InvalidArgument(format!(
                    "{RESIZE_RECLAIM} must be true or false, not {other:?}"
                )))
            }
        };
        let revision = |key: &str| {
            note(key)
                .map(|n| {
                    n.parse::<u64>().map_err(|_| {
                        Error::InvalidArgument(format!("{key} {n:?} is not a revision number"))
                    })
                })
                .transpose()
        };
        let rollback = revision(RESIZE_ROLLBACK)?;
        let expect = revision(RESIZE_EXPECT)?;
        let change = match rollback {
            Some(to) => Change::Rollback(to),
            None => {
                let any = req
                    .resources
                    .as_ref()
                    .ok_or_else(|| Error::InvalidArgument("update without resources".into()))?;
                let oci: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
                    .map_err(|e| Error::InvalidArgument(format!("resources of {}: {e}", req.id)))?;
                Change::To(Box::new(resize::Update::from_oci_here(&oci)?))
            }
        };
        let mut guard = c.resize_lock.lock().await;
        if c.init.ended() {
            return Err(Error::NotFound(format!("container {} has exited", req.id)));
        }
        let cg = c.cgroup.clone().ok_or_else(|| {
            Error::FailedPrecondition(format!("container {} has no cgroup", req.id))
        })?;
        let resize = Resize {
            id: req.id.clone(),
            history: history::path(&self.root.join(&c.id)),
            change,
            source,
            reason: reason.to_string(),
            reclaim,
            dry_run: note(RESIZE_DRY_RUN) == Some("true"),
            expect,
            unit: c.unit.clone(),
        };
        let mut kept = guard.take().unwrap_or_default();
        if resize.quick(&kept) {
            let result = resize.run(&cg, &mut kept);
            *guard = Some(kept);
            return result;
        }
        // Off the runtime thread: a shrink with reclaim (or any cgroup v1
        // memory limit write) reclaims inside the write and may take long,
        // as may a cpuset change, a rollback's read of the history and a
        // call to systemd. This container's resize lock stays held; nothing
        // else waits.
        let (kept, result) = super::blocking(move || {
            let result = resize.run(&cg, &mut kept);
            (kept, result)
        })
        .await?;
        *guard = Some(kept);
        result
    }
}

/// What an Update changes: resources, or back to a revision.
enum Change {
    To(Box<crate::resize::Update>),
    Rollback(u64),
}

/// One validated Update, to run where blocking is fine.
struct Resize {
    id: String,
    history: std::path::PathBuf,
    change: Change,
    source: String,
    reason: String,
    reclaim: bool,
    dry_run: bool,
    /// Apply only if this is still the last revision.
    expect: Option<u64>,
    /// The systemd unit holding the cgroup (systemd driver).
    unit: Option<String>,
}

impl Resize {
    /// Whether this runs in microseconds, on the runtime thread: a change
    /// of CPU bandwidth or weight alone, written to the cgroup files
    /// directly (no systemd unit to tell) and appended to a history already
    /// open (in /run) that this append does not compact. A hop to a
    /// blocking thread and back would cost more than the change, and with
    /// many concurrent updates adds threads that compete for the CPUs with
    /// the callers. Anything longer would hold up every other call to this
    /// shim, so it takes the hop.
    fn quick(&self, kept: &crate::resize::Kept) -> bool {
        matches!(&self.change, Change::To(u) if u.cpu_only())
            && !self.reclaim
            && self.unit.is_none()
            && kept.history.as_ref().is_some_and(|h| !h.compacts_next())
    }

    /// Applies the change to `cg` through what this container keeps, and
    /// records it as a revision.
    fn run(self, cg: &crate::cgroups::Cgroup, kept: &mut crate::resize::Kept) -> Result<()> {
        use crate::resize::{self, history};
        // No limit changes without its revision: a history that cannot be
        // opened refuses the change before anything is written.
        let log = match kept.history.take() {
            Some(log) => log,
            None => history::Log::open(&self.history).map_err(|e| {
                let why = format!(
                    "{} is not resized: its history {} cannot be opened: {e}",
                    self.id,
                    self.history.display()
                );
                log::error!("{why}");
                match e.raw_os_error() {
                    Some(libc::ENOSPC) => Error::ResourceExhausted(why),
                    _ => Error::Internal(why),
                }
            })?,
        };
        let log = kept.history.insert(log);
        if let Some(expect) = self.expect {
            // Under the resize lock: nothing records a revision between
            // this check and the change's own.
            let last = log.last();
            if last != expect {
                return Err(Error::Aborted(format!(
                    "{} changed since revision {expect} (its last revision is {last}): decide again from the container as it is now",
                    self.id
                )));
            }
        }
        let (update, reason) = match self.change {
            Change::Rollback(to) => {
                let all = history::read(&self.history)
                    .map_err(|e| Error::Internal(format!("history of {}: {e}", self.id)))?;
                let why = if self.reason.is_empty() {
                    format!("rollback to revision {to}")
                } else {
                    self.reason
                };
                (history::rollback_target(&all, to)?, why)
            }
            Change::To(update) => (*update, self.reason),
        };
        if update.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "update of {} changes nothing",
                self.id
            )));
        }
        let files = &mut kept.files;
        if self.dry_run {
            resize::apply::check_with(cg, &update, false, files)?;
            return Ok(());
        }
        let (before, after) = resize::apply::recorded(cg, &update, self.reclaim, files)?;
        let time = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let rev = history::Revision {
            revision: 0,
            time,
            source: self.source,
            reason,
            before: before.clone(),
            after,
        };
        let recorded = match kept.history.as_mut() {
            Some(log) => log.append(rev),
            None => Err(std::io::Error::other("it is not open")),
        };
        if let Err(e) = recorded {
            // No limit changes without its revision: the change is undone
            // and refused. The history is opened afresh for the next one.
            kept.history = None;
            return Err(unrecorded(&self.id, &self.history, cg, &before, files, e));
        }
        // The files hold the change; the unit learns it too, or systemd's
        // next reload of the unit would write its old values back.
        match &self.unit {
            Some(unit) => crate::cgroups::systemd::sync(unit, cg).map_err(|e| {
                Error::Internal(format!(
                    "{} is resized, but systemd's {unit} keeps its old values and would restore them on its next reload: {e}",
                    self.id
                ))
            }),
            None => Ok(()),
        }
    }
}

/// The error for a change whose revision could not be written (`e`),
/// once the values it changed are put back as they were (`before`).
/// A full disk is RESOURCE_EXHAUSTED: free space, and ask again.
fn unrecorded(
    id: &str,
    history: &std::path::Path,
    cg: &crate::cgroups::Cgroup,
    before: &crate::resize::Update,
    files: &mut crate::resize::Files,
    e: std::io::Error,
) -> Error {
    let why = format!(
        "{} is not resized: its revision could not be recorded in {}: {e}",
        id,
        history.display()
    );
    // With reclaim: a limit raised and now used above its old value is
    // brought back down if the kernel can.
    if let Err(undo) = crate::resize::apply::apply_with(cg, before, true, files) {
        log::error!("{why}; undoing the change failed: {undo}");
        return Error::Internal(format!(
            "{why}; undoing the change failed, so the new limits stay unrecorded: {undo}"
        ));
    }
    if e.raw_os_error() == Some(libc::ENOSPC) {
        Error::ResourceExhausted(format!("{why}; the limits are as they were"))
    } else {
        Error::Internal(format!("{why}; the limits are as they were"))
    }
}

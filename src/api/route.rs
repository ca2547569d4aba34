//! What tidald remembers about a container between changes, so that a resize
//! costs the shim's work and little more: where its state is, which shim
//! serves it (one ttrpc connection per shim, shared by the shim's
//! containers), its cgroup, and what was declared for it, caught up with its
//! revision history as that grows. Every call checks the remembered facts
//! against the files they came from (a stat each), so a container that was
//! deleted, re-created, paused or resized by anyone else is seen as it is.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use containerd_shim::protos::shim_async::{Client, TaskClient};

use crate::cgroups::Cgroup;
use crate::node::{self, ContainerInfo, Declared, Layers};
use crate::resize::{history, Files};
use crate::shimclient::{self, Refusal};

/// A file's identity and version, as stat(2) gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> io::Result<Stamp> {
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

fn not_found(id: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("no tidal container {id:?} on this node"),
    )
}

/// How far a container's history has been read.
#[derive(Debug, Default)]
struct Tail {
    /// (dev, ino) of the file read; None before the first read.
    file: Option<(u64, u64)>,
    /// Bytes of it consumed (whole lines only).
    offset: u64,
    /// The last revision read.
    last: u64,
}

/// What layering needs of a revision (its other fields are skipped).
#[derive(serde::Deserialize)]
struct Layered {
    revision: u64,
    source: String,
    after: crate::resize::Update,
}

/// One container as tidald last found it.
struct Known {
    /// `state.json` when `info` was read from it.
    state: Stamp,
    /// Its pid, status and bundle (no limits or usage: those are read live).
    info: ContainerInfo,
    cgroup: Option<Cgroup>,
    /// The owning shim's address, from the bundle.
    address: Result<String, String>,
    /// Whether `layers` was started from the spec (`config.json`) yet.
    spec_read: bool,
    layers: Layers,
    tail: Tail,
    /// Its cgroup files read for the answer, kept open (for at most
    /// `KEEP_OPEN` containers, the most recently changed).
    files: Files,
    /// When it was last changed through tidald (a count of changes).
    used: u64,
}

/// How many containers' cgroup files tidald keeps open (six each at most:
/// well below the usual limit of 1024 descriptors).
const KEEP_OPEN: usize = 128;

impl Known {
    fn dir(&self, state_dir: &Path) -> PathBuf {
        state_dir.join(&self.info.namespace).join(&self.info.id)
    }

    /// Brings what was declared up to date: the spec is read once (it
    /// does not change while the container exists), then the revisions
    /// appended since the last call, after forgetting those a compaction
    /// dropped when the history file was replaced.
    fn catch_up(&mut self, state_dir: &Path) {
        if !self.spec_read {
            let parsed = std::fs::read(self.info.bundle.join("config.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            self.spec_read = true;
            self.layers = Layers::new(parsed.as_ref());
            self.tail = Tail::default();
        }
        let file = history::path(&self.dir(state_dir));
        let meta = std::fs::metadata(&file).ok();
        let ident = meta.as_ref().map(|m| (m.dev(), m.ino()));
        let len = meta.as_ref().map_or(0, |m| m.len());
        if self.tail.file != ident || len < self.tail.offset {
            // A new file: the first, or the kept part of a compacted one
            // (plus anything appended since), or none at all.
            self.files.forget(&file);
            let text = if ident.is_some() {
                self.files.read_from(&file, 0).unwrap_or_default()
            } else {
                Vec::new()
            };
            let first = text.split(|&b| b == b'\n').find_map(history::number);
            self.layers
                .drop_through(first.map_or(u64::MAX, |n| n.saturating_sub(1)));
            if first.is_none() {
                self.tail.last = 0;
            }
            self.tail.file = ident;
            self.tail.offset = 0;
            self.consume(&text);
        } else if len > self.tail.offset {
            if let Ok(new) = self.files.read_from(&file, self.tail.offset) {
                self.consume(&new);
            }
        }
    }

    /// Layers the revisions on the complete lines of `text` (read at the
    /// tail's offset) that are newer than the last one layered.
    fn consume(&mut self, text: &[u8]) {
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in text[..complete].split(|&b| b == b'\n') {
            if history::number(line).is_none_or(|n| n <= self.tail.last) {
                continue;
            }
            if let Ok(r) = serde_json::from_slice::<Layered>(line) {
                self.tail.last = r.revision;
                self.layers.push(&history::Revision {
                    revision: r.revision,
                    time: 0,
                    source: r.source,
                    reason: String::new(),
                    before: Default::default(),
                    after: r.after,
                });
            }
        }
        self.tail.offset += complete as u64;
    }
}

/// Where to send a change: the container and the address of its shim.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    pub id: String,
    pub address: Result<String, String>,
    pub stopped: bool,
}

/// The container and the revision count a change leaves behind.
pub struct After {
    pub info: ContainerInfo,
    pub declared: Declared,
    pub last_revision: u64,
}

/// Containers by (namespace, id).
type KnownMap = HashMap<(String, String), Arc<Mutex<Known>>>;

/// tidald's remembered containers and shim connections.
#[derive(Default)]
pub struct Routes {
    /// Each container under a lock of its own (the map's lock is held only
    /// to find or add one, or before taking containers' locks, never after).
    known: Mutex<KnownMap>,
    /// Size of `known` after its last sweep of containers that are gone.
    swept: Mutex<usize>,
    /// Changes answered so far.
    ticks: AtomicU64,
    shims: Mutex<HashMap<String, TaskClient>>,
}

impl Known {
    /// Container `info`, as found now with its state at `state`.
    fn new(state: Stamp, info: ContainerInfo) -> Known {
        Known {
            state,
            cgroup: (info.pid > 0)
                .then(|| Cgroup::of_pid(info.pid).ok())
                .flatten(),
            address: address(&info),
            spec_read: false,
            layers: Layers::new(None),
            tail: Tail::default(),
            files: Files::kept(),
            used: 0,
            info,
        }
    }

    /// Brings `info` up to date after its `state.json` changed (now
    /// `state`); false when that is another container under the same id.
    fn refresh(&mut self, state: Stamp, info: ContainerInfo) -> bool {
        if self.info.pid != info.pid || self.info.bundle != info.bundle {
            return false;
        }
        // Paused, resumed...: the same process and bundle.
        self.state = state;
        self.address = address(&info);
        self.info.status = info.status;
        true
    }
}

impl Routes {
    /// The namespace of container `id`: `namespace` if given, else the one
    /// namespace that has it.
    fn namespace(state_dir: &Path, namespace: Option<&str>, id: &str) -> io::Result<String> {
        crate::ids::validate("container id", id)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let usable = |ns: &str| {
            ns != "s" && !ns.starts_with('.') && crate::ids::validate("namespace", ns).is_ok()
        };
        if let Some(ns) = namespace {
            return if usable(ns) {
                Ok(ns.to_string())
            } else {
                Err(not_found(id))
            };
        }
        let mut found = Vec::new();
        let entries = match std::fs::read_dir(state_dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found(id)),
            Err(e) => return Err(e),
        };
        for ns in entries.flatten() {
            let ns = ns.file_name().to_string_lossy().into_owned();
            if usable(&ns) && state_dir.join(&ns).join(id).join("state.json").is_file() {
                found.push(ns);
            }
        }
        match found.len() {
            1 => Ok(found.pop().unwrap()),
            0 => Err(not_found(id)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("container {id:?} exists in several namespaces: name one with -n"),
            )),
        }
    }

    /// Runs `f` on container `id` as it is now, found afresh if it is new
    /// to tidald or its state changed.
    fn with<T>(
        &self,
        state_dir: &Path,
        namespace: Option<&str>,
        id: &str,
        f: impl FnOnce(&mut Known) -> T,
    ) -> io::Result<T> {
        let ns = Self::namespace(state_dir, namespace, id)?;
        let key = (ns.clone(), id.to_string());
        self.with_state(state_dir, key, f)
    }

    /// `with` on container `key` as `target` just found it: its state is
    /// not looked at again (`after` answers for the change `target` routed).
    fn with_found<T>(
        &self,
        state_dir: &Path,
        key: (String, String),
        f: impl FnOnce(&mut Known) -> T,
    ) -> io::Result<T> {
        let found = self.known.lock().unwrap().get(&key).cloned();
        match found {
            Some(entry) => {
                let k = entry.lock().unwrap();
                Ok(self.visit(&entry, k, f))
            }
            // Forgotten meanwhile (its state went away): look again.
            None => self.with_state(state_dir, key, f),
        }
    }

    fn with_state<T>(
        &self,
        state_dir: &Path,
        key: (String, String),
        f: impl FnOnce(&mut Known) -> T,
    ) -> io::Result<T> {
        let (ns, id) = (key.0.as_str(), key.1.as_str());
        let dir = state_dir.join(ns).join(id);
        let state = match Stamp::of(&dir.join("state.json")) {
            Ok(s) => s,
            Err(e) => {
                self.known.lock().unwrap().remove(&key);
                return Err(if e.kind() == io::ErrorKind::NotFound {
                    not_found(id)
                } else {
                    e
                });
            }
        };
        let found = self.known.lock().unwrap().get(&key).cloned();
        let entry = match found {
            Some(entry) => entry,
            None => {
                let info = node::read_state(ns, &dir).ok_or_else(|| not_found(id))?;
                let entry = Arc::new(Mutex::new(Known::new(state, info)));
                let mut known = self.known.lock().unwrap();
                let entry = known.entry(key.clone()).or_insert(entry).clone();
                self.sweep(state_dir, &mut known);
                entry
            }
        };
        let mut k = entry.lock().unwrap();
        if k.state != state {
            let info = node::read_state(ns, &dir).ok_or_else(|| not_found(id))?;
            if !k.refresh(state, info.clone()) {
                *k = Known::new(state, info);
            }
        }
        Ok(self.visit(&entry, k, f))
    }

    /// Runs `f` on the locked `entry`; if that opened its files, closes
    /// the least recently used container's (see `close_oldest`).
    fn visit<T>(
        &self,
        entry: &Arc<Mutex<Known>>,
        mut k: std::sync::MutexGuard<'_, Known>,
        f: impl FnOnce(&mut Known) -> T,
    ) -> T {
        let closed = k.files.is_empty();
        let out = f(&mut k);
        let opened = closed && !k.files.is_empty();
        drop(k);
        if opened {
            self.close_oldest(entry);
        }
        out
    }

    /// Closes the files of the container changed least recently if more
    /// than `KEEP_OPEN` containers have theirs open (`opened` just opened
    /// its own).
    fn close_oldest(&self, opened: &Arc<Mutex<Known>>) {
        let known = self.known.lock().unwrap();
        let mut open = 0;
        let mut oldest: Option<(u64, &Arc<Mutex<Known>>)> = None;
        for entry in known.values() {
            // A container in use now is no candidate (nor counted).
            let Ok(k) = entry.try_lock() else { continue };
            if k.files.is_empty() {
                continue;
            }
            open += 1;
            if !Arc::ptr_eq(entry, opened) && oldest.is_none_or(|(used, _)| k.used < used) {
                oldest = Some((k.used, entry));
            }
        }
        if let Some((_, entry)) = oldest.filter(|_| open > KEEP_OPEN) {
            if let Ok(mut k) = entry.try_lock() {
                k.files.close();
            }
        }
    }

    /// Forgets containers whose state is gone, whenever the map has doubled
    /// since the last sweep.
    fn sweep(&self, state_dir: &Path, known: &mut KnownMap) {
        let mut swept = self.swept.lock().unwrap();
        if known.len() < 2 * (*swept).max(64) {
            return;
        }
        known.retain(|(ns, id), _| state_dir.join(ns).join(id).join("state.json").exists());
        *swept = known.len();
    }

    /// Forgets container `ns/id`, whose state is gone: closes its files,
    /// and the connection to its shim if no other container kept uses it.
    pub fn forget(&self, namespace: &str, id: &str) {
        let key = (namespace.to_string(), id.to_string());
        let Some(entry) = self.known.lock().unwrap().remove(&key) else {
            return;
        };
        let Ok(address) = entry.lock().unwrap().address.clone() else {
            return;
        };
        let shared = self.known.lock().unwrap().values().any(|o| {
            o.try_lock()
                .map_or(true, |o| o.address.as_ref() == Ok(&address))
        });
        if !shared {
            self.shims.lock().unwrap().remove(&address);
        }
    }

    /// Where a change to container `id` goes.
    pub fn target(
        &self,
        state_dir: &Path,
        namespace: Option<&str>,
        id: &str,
    ) -> io::Result<Target> {
        self.with(state_dir, namespace, id, |k| Target {
            namespace: k.info.namespace.clone(),
            id: k.info.id.clone(),
            address: k.address.clone(),
            stopped: k.info.status == "stopped" || !alive(k.info.pid),
        })
    }

    /// The container after a change: live limits and usage, what was
    /// declared, and the number of its last revision.
    pub fn after(&self, state_dir: &Path, t: &Target) -> io::Result<After> {
        let tick = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        let key = (t.namespace.clone(), t.id.clone());
        self.with_found(state_dir, key, |k| {
            k.catch_up(state_dir);
            k.used = tick;
            let mut info = k.info.clone();
            if !alive(info.pid) {
                info.status = "stopped".into();
            } else if let Some(cg) = &k.cgroup {
                info.limits = node::read_limits_with(cg, &mut k.files);
                info.usage = node::read_usage_with(cg, &mut k.files);
            }
            After {
                info,
                declared: k.layers.declared(),
                last_revision: k.tail.last,
            }
        })
    }

    /// Sends Task.Update to the shim at `t.address`, over the connection
    /// kept for that shim (made on first use). A kept connection that turns
    /// out closed (the shim exited, or another took its socket) is dropped
    /// and the call made once more over a new one; an update is never sent
    /// twice otherwise (a timeout is not retried).
    pub async fn update(
        &self,
        t: &Target,
        resources: &serde_json::Value,
        notes: &[(&str, String)],
    ) -> Result<(), Refusal> {
        let address = t.address.clone().map_err(|e| Refusal {
            code: shimclient::UNAVAILABLE,
            message: format!("no shim address for {}: {e}", t.id),
        })?;
        let req = shimclient::request(&t.id, resources, notes);
        let kept = self.shims.lock().unwrap().get(&address).cloned();
        if let Some(client) = kept {
            match shimclient::send(&client, &req).await {
                Err(shimclient::Failure::Connection(_)) => {
                    self.shims.lock().unwrap().remove(&address);
                }
                other => return other.map_err(Into::into),
            }
        }
        let client = TaskClient::new(Client::connect(&address).await.map_err(|e| Refusal {
            code: shimclient::UNAVAILABLE,
            message: format!("connect to shim at {address}: {e}"),
        })?);
        let result = shimclient::send(&client, &req).await;
        if !matches!(result, Err(shimclient::Failure::Connection(_))) {
            self.shims.lock().unwrap().insert(address, client);
        }
        result.map_err(Into::into)
    }
}

/// Whether process `pid` exists (signal 0: checked, nothing sent).
fn alive(pid: i32) -> bool {
    use nix::errno::Errno;
    pid > 0
        && !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(Errno::ESRCH)
        )
}

fn address(info: &ContainerInfo) -> Result<String, String> {
    info.shim_address().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resize::{Limit, Update};

    /// What tidald layers revision by revision (and after compactions) is
    /// what `node::declared` reads from the whole history.
    #[test]
    fn declared_follows_the_history_through_compactions() {
        let root = crate::testfs::FakeDir::new("route", &[]);
        let bundle = root.join("bundle");
        let dir = root.join("default").join("web");
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("state.json"), "{}").unwrap();
        std::fs::write(
            bundle.join("config.json"),
            r#"{"linux":{"resources":{"cpu":{"quota":50000,"period":100000},"memory":{"limit":268435456}}}}"#,
        )
        .unwrap();
        let info = ContainerInfo {
            id: "web".into(),
            namespace: "default".into(),
            pid: 0,
            status: "running".into(),
            bundle,
            limits: Default::default(),
            usage: Default::default(),
        };
        let mut k = Known {
            state: Stamp::of(&dir.join("state.json")).unwrap(),
            info: info.clone(),
            cgroup: None,
            address: Err("none".into()),
            spec_read: false,
            layers: Layers::new(None),
            tail: Tail::default(),
            files: Files::default(),
            used: 0,
        };
        let file = history::path(&dir);
        let mut log = history::Log::open(&file).unwrap();
        for i in 0..1400u64 {
            let (source, after) = match i % 5 {
                0 => (
                    "kubelet",
                    Update {
                        cpu_quota: Some(Limit::Value(10_000 + i)),
                        memory_limit: Some(Limit::Value(1 << 28)),
                        ..Default::default()
                    },
                ),
                1 | 2 => (
                    "operator",
                    Update {
                        cpu_quota: Some(Limit::Value(20_000 + i)),
                        ..Default::default()
                    },
                ),
                3 => (
                    "trait:scaler",
                    Update {
                        memory_limit: Some(Limit::Value(1 << 27)),
                        ..Default::default()
                    },
                ),
                // Only early on: a value whose setters a compaction drops.
                _ if i < 100 => (
                    "policy",
                    Update {
                        cpuset_cpus: Some("0".into()),
                        ..Default::default()
                    },
                ),
                _ => (
                    "kubelet",
                    Update {
                        cpu_period: Some(100_000),
                        ..Default::default()
                    },
                ),
            };
            log.append(history::Revision {
                revision: 0,
                time: 0,
                source: source.into(),
                reason: String::new(),
                before: Update::default(),
                after,
            })
            .unwrap();
            if i % 7 == 0 || (1020..1030).contains(&i) || i == 1399 {
                k.catch_up(&root);
                assert_eq!(k.tail.last, i + 1);
                assert_eq!(
                    k.layers.declared(),
                    node::declared(&root, &info),
                    "after revision {}",
                    i + 1
                );
            }
        }
        assert!(history::read(&file).unwrap()[0].revision > 100, "compacted");
    }
}

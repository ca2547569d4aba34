//! tidald's inventory of the containers tidal runs on this node: what it
//! remembers about each between calls, so that a resize costs the shim's
//! work and little more, and a listing does not re-read every spec and
//! history: where its state is, which shim serves it (one ttrpc connection
//! per shim, shared by the shim's containers), its cgroup (resolved once),
//! and what was declared for it, caught up with its revision history as that
//! grows. Every call checks the remembered facts against the files they came
//! from (a stat each), so a container that was deleted, re-created, paused
//! or resized by anyone else is seen as it is.
//!
//! Its calls do file I/O: `list` reads every container, so callers on an
//! async runtime run it on a blocking thread (`spawn_blocking`); the calls
//! for one container cost a few stats and reads.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

mod known;
#[cfg(test)]
mod tests;

use known::{Known, Live, Stamp, KEEP_OPEN};

use super::declared::Declared;
use super::error::{Error, Result};
use super::node::{self, ContainerInfo};
use crate::resize::history;

fn not_found(id: &str) -> Error {
    Error::NotFound { id: id.to_string() }
}

/// A container as a caller names it: its id, and its namespace if given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Name {
    pub namespace: Option<String>,
    pub id: String,
}

/// Where to send a change: the container and the address of its shim.
#[derive(Debug, Clone)]
pub struct Route {
    pub namespace: String,
    pub id: String,
    pub address: Result<String, String>,
    pub stopped: bool,
    /// Who set each resource last, its history caught up
    /// (`Declared::writers`).
    pub writers: std::collections::BTreeMap<String, String>,
    /// The number of the last revision those writers were read from.
    pub last_revision: u64,
}

/// A container as tidald shows it: as found now (live limits and usage),
/// what was declared for it, and the number of its last revision.
#[derive(Debug, Clone)]
pub struct View {
    pub info: ContainerInfo,
    pub declared: Declared,
    pub last_revision: u64,
}

/// Containers by (namespace, id).
type KnownMap = HashMap<(String, String), Arc<Mutex<Known>>>;

/// tidald's remembered containers and shim connections.
pub struct Inventory {
    state_dir: PathBuf,
    /// Each container under a lock of its own (the map's lock is held only
    /// to find or add one, or before taking containers' locks, never after).
    known: Mutex<KnownMap>,
    /// Size of `known` after its last sweep of containers that are gone.
    swept: Mutex<usize>,
    /// Changes answered so far.
    ticks: AtomicU64,
}
impl Inventory {
    /// Nothing known yet of the containers under `state_dir`.
    pub fn new(state_dir: PathBuf) -> Inventory {
        Inventory {
            state_dir,
            known: Mutex::default(),
            swept: Mutex::default(),
            ticks: AtomicU64::default(),
        }
    }

    /// The namespace of container `id`: `namespace` if given, else the one
    /// namespace that has it.
    fn namespace(&self, namespace: Option<&str>, id: &str) -> Result<String> {
        crate::ids::validate("container id", id)?;
        if let Some(ns) = namespace {
            return if usable(ns) {
                Ok(ns.to_string())
            } else {
                Err(not_found(id))
            };
        }
        let mut found = Vec::new();
        let entries = match std::fs::read_dir(&self.state_dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found(id)),
            Err(source) => return Err(self.unreadable(source)),
        };
        for ns in entries.flatten() {
            let ns = ns.file_name().to_string_lossy().into_owned();
            if usable(&ns)
                && self
                    .state_dir
                    .join(&ns)
                    .join(id)
                    .join("state.json")
                    .is_file()
            {
                found.push(ns);
            }
        }
        found.sort();
        match found.len() {
            1 => Ok(found.pop().unwrap()),
            0 => Err(not_found(id)),
            _ => Err(Error::Ambiguous {
                id: id.to_string(),
                namespaces: found,
            }),
        }
    }

    fn unreadable(&self, source: io::Error) -> Error {
        Error::Io {
            what: format!("reading tidal's state in {}", self.state_dir.display()),
            source,
        }
    }

    /// Runs `f` on container `name` as it is now, found afresh if it is new
    /// to tidald or its state changed.
    fn with<T>(&self, name: &Name, f: impl FnOnce(&mut Known) -> T) -> Result<T> {
        let ns = self.namespace(name.namespace.as_deref(), &name.id)?;
        self.with_state((ns, name.id.clone()), f)
    }

    /// `with` on container `key` as `route` just found it: its state is
    /// not looked at again (`after` answers for the change `route` routed).
    fn with_found<T>(&self, key: (String, String), f: impl FnOnce(&mut Known) -> T) -> Result<T> {
        let found = self.known.lock().unwrap().get(&key).cloned();
        match found {
            Some(entry) => {
                let k = entry.lock().unwrap();
                Ok(self.visit(&entry, k, f))
            }
            // Forgotten meanwhile (its state went away): look again.
            None => self.with_state(key, f),
        }
    }

    fn with_state<T>(&self, key: (String, String), f: impl FnOnce(&mut Known) -> T) -> Result<T> {
        let (ns, id) = (key.0.as_str(), key.1.as_str());
        let dir = self.state_dir.join(ns).join(id);
        let file = dir.join("state.json");
        let found = self.known.lock().unwrap().get(&key).cloned();
        // A container being changed keeps its state file open (see
        // `after`): unchanged there, it is as it was.
        if let Some(entry) = &found {
            let k = entry.lock().unwrap();
            if k.files.stat_open(&file).map(|m| Stamp::from(&m)) == Some(k.state) {
                return Ok(self.visit(entry, k, f));
            }
        }
        let state = match Stamp::of(&file) {
            Ok(s) => s,
            Err(e) => {
                self.known.lock().unwrap().remove(&key);
                return Err(if e.kind() == io::ErrorKind::NotFound {
                    not_found(id)
                } else {
                    self.unreadable(e)
                });
            }
        };
        let entry = match found {
            Some(entry) => entry,
            None => {
                let info = node::read_state(ns, &dir).ok_or_else(|| not_found(id))?;
                let entry = Arc::new(Mutex::new(Known::new(state, info)));
                let entry = self
                    .known
                    .lock()
                    .unwrap()
                    .entry(key.clone())
                    .or_insert(entry)
                    .clone();
                self.sweep();
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
        let entries: Vec<Arc<Mutex<Known>>> =
            self.known.lock().unwrap().values().cloned().collect();
        let mut open = 0;
        let mut oldest: Option<(u64, &Arc<Mutex<Known>>)> = None;
        for entry in &entries {
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
    /// since the last sweep. The map's lock is not held while their state
    /// files are looked at.
    fn sweep(&self) {
        let mut swept = self.swept.lock().unwrap();
        let keys: Vec<(String, String)> = {
            let known = self.known.lock().unwrap();
            if known.len() < 2 * (*swept).max(64) {
                return;
            }
            known.keys().cloned().collect()
        };
        let gone: Vec<_> = keys
            .into_iter()
            .filter(|(ns, id)| !self.state_dir.join(ns).join(id).join("state.json").exists())
            .collect();
        let mut known = self.known.lock().unwrap();
        for key in gone {
            known.remove(&key);
        }
        *swept = known.len();
    }

    /// Forgets container `ns/id`, whose state is gone, and closes its
    /// files. Returns its shim's address when no other container kept uses
    /// that shim (its connection can go too).
    pub fn forget(&self, namespace: &str, id: &str) -> Option<String> {
        let key = (namespace.to_string(), id.to_string());
        let entry = self.known.lock().unwrap().remove(&key)?;
        let address = entry.lock().unwrap().address.clone().ok()?;
        let others: Vec<_> = self.known.lock().unwrap().values().cloned().collect();
        let shared = others.iter().any(|o| {
            o.try_lock()
                .map_or(true, |o| o.address.as_ref() == Ok(&address))
        });
        (!shared).then_some(address)
    }

    /// Where a change to container `name` goes.
    pub fn route(&self, name: &Name) -> Result<Route> {
        let state_dir = self.state_dir.clone();
        self.with(name, |k| {
            k.catch_up(&state_dir);
            // An address that could not be read when the container was
            // found is read again, not kept as an error for its lifetime
            // (seen once under tidald.service: EACCES on the first read,
            // none later).
            if k.address.is_err() {
                k.refresh_address();
            }
            Route {
                namespace: k.info.namespace.clone(),
                id: k.info.id.clone(),
                address: k.address.clone(),
                stopped: k.info.status == "stopped" || !k.process.alive(),
                writers: k.layers.writers(),
                last_revision: k.tail.last,
            }
        })
    }

    /// The container after a change `route` routed: live limits and usage
    /// (read through its kept-open files), what was declared, and the
    /// number of its last revision.
    pub fn after(&self, t: &Route) -> Result<View> {
        let tick = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        let key = (t.namespace.clone(), t.id.clone());
        let state_dir = self.state_dir.clone();
        self.with_found(key, |k| {
            k.used = tick;
            k.view_after_change(&state_dir)
        })
    }

    /// Container `name` as it is now.
    pub fn get(&self, name: &Name) -> Result<View> {
        let state_dir = self.state_dir.clone();
        self.with(name, |k| k.view(&state_dir, Live::Once))
    }

    /// Every container under the state directory, as it is now. Reads each
    /// container's state, cgroup and history additions: run it off the
    /// request path (a blocking thread).
    pub fn list(&self) -> Result<Vec<View>> {
        self.list_with(Live::Once)
    }

    /// `list` without the live limits and usage (left at their defaults),
    /// for a caller that reads every cgroup itself (the policy engine's
    /// collector, through files it keeps open): per container, a stat of
    /// its state and of its history and a read of its process's state.
    pub fn list_declared(&self) -> Result<Vec<View>> {
        self.list_with(Live::Skip)
    }

    fn list_with(&self, live: Live) -> Result<Vec<View>> {
        let dirs = node::dirs(&self.state_dir).map_err(|e| self.unreadable(e))?;
        let state_dir = self.state_dir.clone();
        Ok(dirs
            .into_iter()
            .filter(|(ns, id, _)| usable(ns) && crate::ids::validate("container id", id).is_ok())
            .filter_map(|(ns, id, _)| self.with_state((ns, id), |k| k.view(&state_dir, live)).ok())
            .collect())
    }

    /// The revision history of container `name` (reads the whole file: run
    /// it off the request path).
    pub fn history(&self, name: &Name) -> Result<Vec<history::Revision>> {
        let dir = self.with(name, |k| k.dir(&self.state_dir))?;
        history::read(&history::path(&dir)).map_err(|source| Error::Io {
            what: format!("reading the history of {}", name.id),
            source,
        })
    }
}

/// Whether `ns` can be a namespace directory of the state dir (not shim
/// sockets, not tidald's own).
fn usable(ns: &str) -> bool {
    ns != "s" && !ns.starts_with('.') && crate::ids::validate("namespace", ns).is_ok()
}

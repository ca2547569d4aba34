//! Following every container's revision history for Watch, whoever writes
//! it (the shims do; kubelet's changes never pass through tidald). inotify
//! tells which histories grew: the state directory is watched for new
//! namespaces, each namespace for new and removed containers, and each
//! container's directory for its history being written or replaced (a
//! compaction renames a new file over it). Only what was appended since the
//! last read is read. Without inotify (or before the state directory
//! exists) the directories are scanned on a timer instead.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::sync::broadcast;

use crate::proto::pb;
use crate::resize::history;

/// How often directories are scanned when inotify cannot tell (no inotify,
/// or no state directory yet).
const SCAN_EVERY: Duration = Duration::from_millis(250);

/// Where a container's history is, and how far it has been read.
#[derive(Debug)]
struct Followed {
    dir: PathBuf,
    /// The container directory's inode: a container re-created under the
    /// same id has a new one.
    dir_ino: u64,
    /// (dev, ino) of the history file read so far.
    file: Option<(u64, u64)>,
    /// Bytes of it consumed (whole lines only).
    offset: u64,
    /// The last revision seen.
    last: u64,
}

/// What an inotify watch is on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Watched {
    Root,
    Namespace(String),
    Container(String, String),
}

struct Follower<G> {
    state_dir: PathBuf,
    tx: broadcast::Sender<pb::WatchEvent>,
    /// Told of each container whose state directory is removed.
    gone: G,
    inotify: Option<Inotify>,
    watches: HashMap<WatchDescriptor, Watched>,
    /// (namespace, id) -> its history.
    followed: HashMap<(String, String), Followed>,
    root_watched: bool,
    /// Histories written while nobody watched, read within `LATER` of the
    /// first of them.
    pending: HashSet<(String, String)>,
    pending_since: Option<tokio::time::Instant>,
}

/// How long a history written while nobody watches may go unread (as long
/// as tidald's polling took before inotify): revisions made just before a
/// Watch starts may be sent on it, as then.
const LATER: Duration = Duration::from_millis(200);

/// A directory entry that can be a namespace or a container.
fn usable(name: &str) -> bool {
    !name.starts_with('.')
}

fn subdirs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| usable(n))
                .collect()
        })
        .unwrap_or_default()
}

impl<G: FnMut(&str, &str)> Follower<G> {
    fn watch(&mut self, path: &Path, what: Watched) {
        let Some(inotify) = &self.inotify else { return };
        let mask = match what {
            Watched::Container(..) => {
                AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO
            }
            _ => {
                AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_MOVED_FROM
            }
        } | AddWatchFlags::IN_ONLYDIR;
        match inotify.add_watch(path, mask) {
            Ok(wd) => {
                self.watches.insert(wd, what);
            }
            Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => tracing::warn!("watch {}: {e}", path.display()),
        }
    }

    /// Watches the state directory if it exists (now or at a later scan).
    fn watch_root(&mut self) {
        if self.root_watched || self.inotify.is_none() || !self.state_dir.is_dir() {
            return;
        }
        let root = self.state_dir.clone();
        self.watch(&root, Watched::Root);
        self.root_watched = self.watches.values().any(|w| *w == Watched::Root);
    }

    /// Watches namespace `ns` and takes in its containers.
    fn add_namespace(&mut self, ns: &str, announce: bool) {
        if ns == "s" {
            return;
        }
        let dir = self.state_dir.join(ns);
        self.watch(&dir, Watched::Namespace(ns.to_string()));
        for id in subdirs(&dir) {
            self.add_container(ns, &id, announce);
        }
    }

    /// Watches container `ns/id` (if new) and reads its history.
    fn add_container(&mut self, ns: &str, id: &str, announce: bool) {
        let dir = self.state_dir.join(ns).join(id);
        let Ok(ino) = std::fs::metadata(&dir).map(|m| m.ino()) else {
            return;
        };
        let key = (ns.to_string(), id.to_string());
        if self.followed.get(&key).is_some_and(|f| f.dir_ino != ino) {
            self.followed.remove(&key);
        }
        if !self.followed.contains_key(&key) {
            // Watch first, then read: nothing written in between is missed.
            self.watch(&dir, Watched::Container(key.0.clone(), key.1.clone()));
            self.followed.insert(
                key.clone(),
                Followed {
                    dir,
                    dir_ino: ino,
                    file: None,
                    offset: 0,
                    last: 0,
                },
            );
        }
        self.catch_up(&key, announce);
    }

    /// Everything from scratch: every namespace and container as it is now.
    fn scan(&mut self, announce: bool) {
        self.watch_root();
        let mut present = HashSet::new();
        for ns in subdirs(&self.state_dir) {
            if ns == "s" {
                continue;
            }
            for id in subdirs(&self.state_dir.join(&ns)) {
                present.insert((ns.clone(), id));
            }
            if !self
                .watches
                .values()
                .any(|w| *w == Watched::Namespace(ns.clone()))
            {
                let dir = self.state_dir.join(&ns);
                self.watch(&dir, Watched::Namespace(ns.clone()));
            }
        }
        let gone: Vec<(String, String)> = self
            .followed
            .keys()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for (ns, id) in gone {
            self.forget(&ns, &id);
        }
        for (ns, id) in present {
            self.add_container(&ns, &id, announce);
        }
    }

    fn forget(&mut self, ns: &str, id: &str) {
        let key = (ns.to_string(), id.to_string());
        self.pending.remove(&key);
        if self.pending.is_empty() {
            self.pending_since = None;
        }
        self.followed.remove(&key);
        (self.gone)(ns, id);
    }

    /// Reads what was appended to a container's history and sends each new
    /// revision (when `announce` and anyone listens).
    fn catch_up(&mut self, key: &(String, String), announce: bool) {
        let Some(f) = self.followed.get_mut(key) else {
            return;
        };
        let file = history::path(&f.dir);
        let Ok(meta) = std::fs::metadata(&file) else {
            return;
        };
        let ident = (meta.dev(), meta.ino());
        if f.file != Some(ident) || meta.len() < f.offset {
            // New, or replaced by a compaction: read it whole; what is new
            // is numbered above the last revision seen.
            f.file = Some(ident);
            f.offset = 0;
        }
        if meta.len() == f.offset {
            return;
        }
        let Ok(text) = crate::resize::Files::default().read_from(&file, f.offset) else {
            return;
        };
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        f.offset += complete as u64;
        let listening = announce && self.tx.receiver_count() > 0;
        for line in text[..complete].split(|&b| b == b'\n') {
            let Some(n) = history::number(line).filter(|&n| n > f.last) else {
                continue;
            };
            if listening {
                let Ok(r) = serde_json::from_slice::<history::Revision>(line) else {
                    continue;
                };
                let _ = self.tx.send(pb::WatchEvent {
                    container: Some(pb::ContainerRef {
                        namespace: key.0.clone(),
                        id: key.1.clone(),
                    }),
                    revision: Some(r.into()),
                });
            }
            f.last = n;
        }
    }

    /// Acts on a batch of inotify events; histories are read once per batch.
    fn handle(&mut self, events: Vec<nix::sys::inotify::InotifyEvent>) {
        let mut grown = HashSet::new();
        for ev in events {
            if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                // Events were lost: look at everything again.
                self.scan(true);
                continue;
            }
            if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                // The directory is gone (its watch with it).
                if let Some(Watched::Root) = self.watches.remove(&ev.wd) {
                    self.root_watched = false;
                }
                continue;
            }
            let Some(what) = self.watches.get(&ev.wd).cloned() else {
                continue;
            };
            let name = ev
                .name
                .as_ref()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !usable(&name) {
                continue;
            }
            let gone = ev
                .mask
                .intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM);
            let is_dir = ev.mask.contains(AddWatchFlags::IN_ISDIR);
            match what {
                Watched::Root if is_dir && !gone => self.add_namespace(&name, true),
                Watched::Root if is_dir => {
                    let ids: Vec<String> = self
                        .followed
                        .keys()
                        .filter(|(ns, _)| *ns == name)
                        .map(|(_, id)| id.clone())
                        .collect();
                    for id in ids {
                        self.forget(&name, &id);
                    }
                }
                Watched::Namespace(ns) if is_dir && !gone => self.add_container(&ns, &name, true),
                Watched::Namespace(ns) if is_dir => self.forget(&ns, &name),
                Watched::Container(ns, id) if name == history::FILE_NAME => {
                    grown.insert((ns, id));
                }
                _ => {}
            }
        }
        if self.tx.receiver_count() == 0 {
            // Nobody to tell: read later, in one go.
            if !grown.is_empty() && self.pending_since.is_none() {
                self.pending_since = Some(tokio::time::Instant::now());
            }
            self.pending.extend(grown);
            return;
        }
        self.catch_up_pending();
        for key in grown {
            self.catch_up(&key, true);
        }
    }

    /// Reads the histories written while nobody watched.
    fn catch_up_pending(&mut self) {
        self.pending_since = None;
        for key in std::mem::take(&mut self.pending) {
            self.catch_up(&key, true);
        }
    }
}

/// Follows every container's revision history under `state_dir` and sends
/// each new revision on `tx`; calls `gone(namespace, id)` for each container
/// whose state is removed.
pub async fn follow(
    state_dir: PathBuf,
    tx: broadcast::Sender<pb::WatchEvent>,
    gone: impl FnMut(&str, &str) + Send,
) {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(|e| tracing::warn!("inotify: {e}; scanning for revisions every {SCAN_EVERY:?}"))
        .ok();
    let readable = inotify.as_ref().and_then(|i| {
        crate::sys::dup(i.as_fd())
            .and_then(|fd| crate::sys::async_fd(fd, tokio::io::Interest::READABLE))
            .map_err(|e| {
                tracing::warn!("inotify: {e}; scanning for revisions every {SCAN_EVERY:?}")
            })
            .ok()
    });
    let mut f = Follower {
        state_dir,
        tx,
        gone,
        inotify: readable.is_some().then_some(inotify).flatten(),
        watches: HashMap::new(),
        followed: HashMap::new(),
        root_watched: false,
        pending: HashSet::new(),
        pending_since: None,
    };
    // What is there already was made before anyone could watch.
    f.scan(false);
    let mut readable = readable;
    loop {
        // Scan on a timer only while inotify cannot see everything.
        let blind = readable.is_none() || !f.root_watched;
        let mut failed = false;
        tokio::select! {
            guard = async { readable.as_ref().unwrap().readable().await }, if readable.is_some() => {
                let mut events = Vec::new();
                match (guard, f.inotify.as_ref()) {
                    (Ok(mut guard), Some(inotify)) => loop {
                        match inotify.read_events() {
                            Ok(batch) => events.extend(batch),
                            Err(nix::errno::Errno::EAGAIN) => {
                                guard.clear_ready();
                                break;
                            }
                            Err(e) => {
                                tracing::warn!("inotify: {e}; scanning for revisions every {SCAN_EVERY:?}");
                                failed = true;
                                break;
                            }
                        }
                    },
                    _ => failed = true,
                }
                f.handle(events);
            }
            _ = tokio::time::sleep(SCAN_EVERY), if blind => f.scan(true),
            _ = tokio::time::sleep_until(f.pending_since.unwrap_or_else(tokio::time::Instant::now) + LATER),
                if f.pending_since.is_some() => f.catch_up_pending(),
        }
        if failed {
            readable = None;
            f.inotify = None;
            f.watches.clear();
            f.root_watched = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resize::{Limit, Update};

    fn rev(i: u64) -> history::Revision {
        history::Revision {
            revision: 0,
            time: 0,
            source: "operator".into(),
            reason: String::new(),
            before: Update::default(),
            after: Update {
                cpu_quota: Some(Limit::Value(1000 + i)),
                ..Default::default()
            },
        }
    }

    /// Every revision once, in order, whoever appends it and across a
    /// compaction; a container (and a namespace) made after the start too;
    /// a removed container is reported gone.
    #[tokio::test(flavor = "current_thread")]
    async fn every_revision_is_sent_once_as_it_is_written() {
        let root = crate::testfs::FakeDir::new("follow", &[]);
        let before = root.join("default").join("old");
        std::fs::create_dir_all(&before).unwrap();
        // Made before tidald started: not sent.
        history::append(&history::path(&before), 0, rev(0)).unwrap();
        let (tx, mut rx) = broadcast::channel(4096);
        let gone = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let follower = tokio::spawn(follow(root.path(), tx, {
            let gone = gone.clone();
            move |ns: &str, id: &str| gone.lock().unwrap().push(format!("{ns}/{id}"))
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let dir = root.join("k8s.io").join("web");
        std::fs::create_dir_all(&dir).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut log = history::Log::open(&history::path(&dir)).unwrap();
        let mut seen = Vec::new();
        for i in 0..1100 {
            log.append(rev(i)).unwrap();
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let mut old = history::Log::open(&history::path(&before)).unwrap();
        old.append(rev(1)).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while seen.len() < 1101 {
            let ev = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("{} of 1101 revisions seen", seen.len()))
                .unwrap();
            let c = ev.container.unwrap();
            seen.push((c.namespace, c.id, ev.revision.unwrap().revision));
        }
        let web: Vec<u64> = seen
            .iter()
            .filter(|(_, id, _)| id == "web")
            .map(|(_, _, n)| *n)
            .collect();
        assert_eq!(web, (1..=1100).collect::<Vec<_>>());
        assert!(seen.contains(&("default".into(), "old".into(), 2)));
        std::fs::remove_dir_all(&before).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*gone.lock().unwrap(), vec!["default/old".to_string()]);
        follower.abort();
    }
}

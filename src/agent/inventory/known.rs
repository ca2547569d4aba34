//! One container as tidald last found it, and how it is kept up to date:
//! its `state.json` stamp, its cgroup (resolved once), the shim's address,
//! and what was declared for it, caught up with its history's new lines.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::View;
use crate::agent::declared::Layers;
use crate::agent::node::ContainerInfo;
use crate::cgroups::{Cgroup, Files};
use crate::resize::history;

/// A file's identity and version, as stat(2) gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    pub(super) fn of(path: &Path) -> io::Result<Stamp> {
        Ok(Stamp::from(&std::fs::metadata(path)?))
    }

    pub(super) fn from(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// How far a container's history has been read.
#[derive(Debug, Default)]
pub(super) struct Tail {
    /// (dev, ino) of the file read; None before the first read.
    pub(super) file: Option<(u64, u64)>,
    /// Bytes of it consumed (whole lines only).
    pub(super) offset: u64,
    /// The last revision read.
    pub(super) last: u64,
}

/// What layering needs of a revision (its other fields are skipped).
#[derive(serde::Deserialize)]
struct Layered {
    revision: u64,
    source: String,
    after: crate::resize::Update,
}

/// One container as tidald last found it.
pub(super) struct Known {
    /// `state.json` when `info` was read from it.
    pub(super) state: Stamp,
    /// Its pid, status and bundle (no limits or usage: those are read live).
    pub(super) info: ContainerInfo,
    pub(super) cgroup: Option<Cgroup>,
    /// The owning shim's address, from the bundle.
    pub(super) address: Result<String, String>,
    /// Whether `layers` was started from the spec (`config.json`) yet.
    pub(super) spec_read: bool,
    pub(super) layers: Layers,
    pub(super) tail: Tail,
    /// Its cgroup files read for the answer, its history and its state,
    /// kept open (for at most `KEEP_OPEN` containers, the most recently
    /// changed).
    pub(super) files: Files,
    /// When it was last changed through tidald (a count of changes).
    pub(super) used: u64,
    /// Its init process, watched through a file kept open.
    pub(super) process: crate::sys::Watched,
}

/// Which of its cgroup's live values a view reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Live {
    /// None (the caller reads the cgroup itself: the engine's collector).
    Skip,
    /// Limits and usage, through files opened for this read only.
    Once,
    /// Limits and usage, through its kept-open files (a container being
    /// changed).
    Kept,
}

/// How many containers' files tidald keeps open: eight each at most (six
/// of its cgroup's, its history, its state), 1,024 in all, under the limit
/// tidald raises at start to the hard one (`sys::raise_open_files`; 1,024
/// is the usual soft limit, 524,288 systemd's hard one).
pub(super) const KEEP_OPEN: usize = 128;

impl Known {
    pub(super) fn dir(&self, state_dir: &Path) -> PathBuf {
        state_dir.join(&self.info.namespace).join(&self.info.id)
    }

    /// The container as it is now, its history caught up, with the live
    /// values `live` says.
    pub(super) fn view(&mut self, state_dir: &Path, live: Live) -> View {
        self.catch_up(state_dir);
        self.as_caught_up(live)
    }

    /// `view` through kept-open files right after a change it routed,
    /// which the shim appended to the history: that revision is read with
    /// one pread of the history file read last time, without looking the
    /// file up again; only when nothing new is there (the change was a dry
    /// run, or a compaction replaced the file) does it `catch_up`.
    pub(super) fn view_after_change(&mut self, state_dir: &Path) -> View {
        let dir = self.dir(state_dir);
        // Kept open too: routing its next change looks at its state
        // through that file, without looking the path up (`stat_open`).
        let _ = self.files.keep_open(&dir.join("state.json"));
        let appended = self
            .files
            .read_open_from(&history::path(&dir), self.tail.offset)
            .and_then(Result::ok)
            .filter(|new| new.contains(&b'\n'));
        match appended {
            Some(new) => self.consume(&new),
            None => self.catch_up(state_dir),
        }
        self.as_caught_up(Live::Kept)
    }

    /// The view once the history is caught up.
    fn as_caught_up(&mut self, live: Live) -> View {
        let mut info = self.info.clone();
        if !self.process.alive() {
            info.status = "stopped".into();
        } else if let (Some(cg), false) = (&self.cgroup, live == Live::Skip) {
            let mut once = Files::default();
            let files = if live == Live::Kept {
                &mut self.files
            } else {
                &mut once
            };
            info.limits = crate::cgroups::read_limits_with(cg, files);
            info.usage = crate::cgroups::read_usage_with(cg, files);
        }
        View {
            info,
            declared: self.layers.declared(),
            last_revision: self.tail.last,
        }
    }

    /// Brings what was declared up to date: the spec is read once (it
    /// does not change while the container exists), then the revisions
    /// appended since the last call, after forgetting those a compaction
    /// dropped when the history file was replaced.
    pub(super) fn catch_up(&mut self, state_dir: &Path) {
        if !self.spec_read {
            let parsed = std::fs::read(self.info.bundle.join("config.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            self.spec_read = true;
            self.layers = Layers::new(parsed.as_ref());
            self.tail = Tail::default();
        }
        let file = history::path(&self.dir(state_dir));
        // Through the history file kept open when it is still the one the
        // path names (a compaction renames another over it).
        let meta = self
            .files
            .stat_open(&file)
            .or_else(|| std::fs::metadata(&file).ok());
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

impl Known {
    /// Container `info`, as found now with its state at `state`.
    pub(super) fn new(state: Stamp, info: ContainerInfo) -> Known {
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
            process: crate::sys::Watched::new(info.pid),
            info,
        }
    }

    /// Reads the shim's address again.
    pub(super) fn refresh_address(&mut self) {
        self.address = address(&self.info);
    }

    /// Brings `info` up to date after its `state.json` changed (now
    /// `state`); false when that is another container under the same id.
    pub(super) fn refresh(&mut self, state: Stamp, info: ContainerInfo) -> bool {
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

fn address(info: &ContainerInfo) -> Result<String, String> {
    info.shim_address().map_err(|e| e.to_string())
}

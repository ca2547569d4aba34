//! Revisions: every applied resize, persisted beside the container's state
//! (one JSON line each) so history survives a shim restart, and the target
//! of a rollback computed from it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::update::Update;
use super::ResizeError;

/// Who asked for a change.
pub const SOURCES: [&str; 3] = ["kubelet", "operator", "policy"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    pub revision: u64,
    /// Seconds since the epoch.
    pub time: u64,
    /// kubelet, operator, policy or trait:NAME.
    pub source: String,
    pub reason: String,
    /// The changed values as they were before...
    pub before: Update,
    /// ...and after the change.
    pub after: Update,
}

/// Checks a source name: one of `SOURCES` or `trait:NAME`.
pub fn validate_source(s: &str) -> Result<(), ResizeError> {
    let ok = SOURCES.contains(&s)
        || s.strip_prefix("trait:").is_some_and(|t| {
            !t.is_empty()
                && t.len() <= 63
                && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(ResizeError::Invalid {
            field: "source",
            value: format!("{s:?}"),
            why: "must be kubelet, operator, policy or trait:NAME".into(),
        })
    }
}

/// The name of a container's history file, beside its libcontainer state.
pub const FILE_NAME: &str = "tidal-revisions.jsonl";

/// The history file of a container whose libcontainer state is in `dir`.
pub fn path(container_dir: &Path) -> PathBuf {
    container_dir.join(FILE_NAME)
}

pub fn read(file: &Path) -> std::io::Result<Vec<Revision>> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The number of the last revision in `file` (0 when there is none).
/// Reads the file but parses only its last well-formed line.
pub fn last(file: &Path) -> std::io::Result<u64> {
    let text = match std::fs::read(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    Ok(last_in(&text).unwrap_or(0))
}

/// The number of the last revision among the lines of `text`.
pub fn last_in(text: &[u8]) -> Option<u64> {
    text.split(|&b| b == b'\n').rev().find_map(number)
}

/// The number of the revision on `line`, without parsing the rest of it
/// (revisions are written with their number first); None for a line that
/// is no revision.
pub fn number(line: &[u8]) -> Option<u64> {
    let fast = line.strip_prefix(b"{\"revision\":").and_then(|rest| {
        let end = rest.iter().position(|b| !b.is_ascii_digit())?;
        (end > 0 && rest[end] == b',' && line.last() == Some(&b'}'))
            .then(|| std::str::from_utf8(&rest[..end]).ok()?.parse().ok())
            .flatten()
    });
    fast.or_else(|| {
        #[derive(Deserialize)]
        struct Numbered {
            revision: u64,
        }
        serde_json::from_slice::<Numbered>(line)
            .ok()
            .map(|n| n.revision)
    })
}

/// How many revisions a container's history keeps at least; older ones are
/// dropped at each compaction, so the file holds at most KEPT + COMPACT_EVERY.
pub const KEPT: u64 = 1000;
/// The history is compacted every this many revisions past `KEPT`: the
/// file is rewritten with the last KEPT revisions, and the change that
/// triggers it waits for the rewrite (as does tidald, which reads a
/// replaced file again). As large as KEPT, that is one change in 1,024,
/// and about one line copied per revision.
const COMPACT_EVERY: u64 = 1024;

#[cfg(test)]
/// Appends `rev` as number `last + 1`; returns that number.
pub fn append(file: &Path, last: u64, rev: Revision) -> std::io::Result<u64> {
    let mut log = Log {
        file: file.to_path_buf(),
        last,
        out: None,
    };
    log.append(rev)
}

/// A container's history as its one writer (the shim that owns the
/// container) holds it: the last revision's number, and the file kept open
/// for appending between revisions.
#[derive(Debug)]
pub struct Log {
    file: PathBuf,
    last: u64,
    out: Option<std::fs::File>,
}

impl Log {
    /// The history in `file` (which need not exist yet). A last line cut
    /// short (a shim killed in the middle of its write, on a filesystem
    /// that tore it) is dropped, so that the next revision starts a line of
    /// its own instead of being glued to the fragment.
    pub fn open(file: &Path) -> std::io::Result<Log> {
        repair(file)?;
        Ok(Log {
            file: file.to_path_buf(),
            last: last(file)?,
            out: None,
        })
    }

    /// The number of the last revision recorded.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Whether the next append compacts the file first (rewrites it: a
    /// read and a write of the revisions kept).
    pub fn compacts_next(&self) -> bool {
        let next = self.last + 1;
        next > KEPT && next.is_multiple_of(COMPACT_EVERY)
    }

    /// Appends `rev` as the next revision; returns its number.
    pub fn append(&mut self, mut rev: Revision) -> std::io::Result<u64> {
        let compact_first = self.compacts_next();
        rev.revision = self.last + 1;
        if compact_first {
            // The file is replaced: appends go to the new one.
            self.out = None;
            compact(&self.file, rev.revision - KEPT)?;
        }
        let mut line = serde_json::to_vec(&rev).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.out.is_none() {
            self.out = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.file)?,
            );
        }
        let out = self.out.as_mut().expect("opened above");
        // One write of one line: a shim that crashes after it keeps the record.
        // No fsync: like the rest of the runtime state it lives in /run.
        let len = out.metadata()?.len();
        if let Err(e) = out.write_all(&line) {
            // A full disk may take part of the line: take it back, so that
            // the file ends with a whole revision.
            let _ = out.set_len(len);
            self.out = None;
            return Err(e);
        }
        self.last = rev.revision;
        Ok(rev.revision)
    }
}

/// Keeps only revisions numbered above `drop_through`, replacing the file
/// atomically. Lines are kept as they are (only their numbers are read), so
/// compacting costs little more than copying the kept part.
fn compact(file: &Path, drop_through: u64) -> std::io::Result<()> {
    let text = std::fs::read(file)?;
    let mut kept = Vec::with_capacity(text.len());
    for line in text.split(|&b| b == b'\n') {
        if number(line).is_some_and(|n| n > drop_through) {
            kept.extend_from_slice(line);
            kept.push(b'\n');
        }
    }
    let tmp = file.with_extension("jsonl.tmp");
    let written = std::fs::write(&tmp, kept).and_then(|()| std::fs::rename(&tmp, file));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Drops a last line without its newline from `file`: a write that was cut
/// short. A missing file is fine.
fn repair(file: &Path) -> std::io::Result<()> {
    let text = match std::fs::read(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if text.is_empty() || text.ends_with(b"\n") {
        return Ok(());
    }
    let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    log::warn!(
        "{}: dropping a last line cut short ({} bytes)",
        file.display(),
        text.len() - whole
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)?
        .set_len(whole as u64)
}

/// The values that bring the container back to how it was right after
/// revision `to` (0: before any revision): for every field changed later,
/// its value before the first later change.
pub fn rollback_target(history: &[Revision], to: u64) -> Result<Update, ResizeError> {
    let last = history.last().map(|r| r.revision).unwrap_or(0);
    if to > last {
        return Err(ResizeError::Invalid {
            field: "revision",
            value: to.to_string(),
            why: format!("no such revision; the latest is {last}"),
        });
    }
    let first = history.first().map(|r| r.revision).unwrap_or(1);
    if to + 1 < first {
        return Err(ResizeError::Invalid {
            field: "revision",
            value: to.to_string(),
            why: format!("no longer kept; the oldest kept revision is {first}"),
        });
    }
    let mut target = Update::default();
    for r in history.iter().filter(|r| r.revision > to) {
        target.fill_missing(&r.before);
    }
    if target.is_empty() {
        return Err(ResizeError::Invalid {
            field: "revision",
            value: to.to_string(),
            why: "nothing changed after it".into(),
        });
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resize::Limit;

    fn rev(n: u64, before: Update, after: Update) -> Revision {
        Revision {
            revision: n,
            time: 0,
            source: "operator".into(),
            reason: String::new(),
            before,
            after,
        }
    }

    fn mem(v: u64) -> Update {
        Update {
            memory_limit: Some(Limit::Value(v)),
            ..Default::default()
        }
    }

    fn quota(v: u64) -> Update {
        Update {
            cpu_quota: Some(Limit::Value(v)),
            ..Default::default()
        }
    }

    #[test]
    fn rollback_restores_every_field_changed_since() {
        let h = vec![
            rev(1, mem(100), mem(200)),
            rev(2, quota(10_000), quota(20_000)),
            rev(3, mem(200), mem(300)),
        ];
        // Back to right after revision 1: memory 200 (before rev 3), quota 10000 (before rev 2).
        let t = rollback_target(&h, 1).unwrap();
        assert_eq!(t.memory_limit, Some(Limit::Value(200)));
        assert_eq!(t.cpu_quota, Some(Limit::Value(10_000)));
        // Back to the start: memory 100.
        assert_eq!(
            rollback_target(&h, 0).unwrap().memory_limit,
            Some(Limit::Value(100))
        );
        assert!(rollback_target(&h, 3)
            .unwrap_err()
            .to_string()
            .contains("nothing changed"));
        assert!(rollback_target(&h, 9)
            .unwrap_err()
            .to_string()
            .contains("latest is 3"));
    }

    #[test]
    fn revisions_persist_and_number_themselves() {
        let dir = crate::testfs::FakeDir::new("hist", &[]);
        let f = path(&dir);
        let _ = std::fs::remove_file(&f);
        assert_eq!(
            append(&f, last(&f).unwrap(), rev(0, mem(1), mem(2))).unwrap(),
            1
        );
        assert_eq!(
            append(&f, last(&f).unwrap(), rev(0, mem(2), mem(3))).unwrap(),
            2
        );
        let all = read(&f).unwrap();
        assert_eq!(
            all.iter().map(|r| r.revision).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(all[1].after, mem(3));
    }

    #[test]
    fn history_is_bounded() {
        let dir = crate::testfs::FakeDir::new("bounded", &[]);
        let f = path(&dir);
        let mut last = 0;
        // Revision 1024 is the first compaction point past KEPT.
        for i in 0..1024 {
            last = append(&f, last, rev(0, mem(i), mem(i + 1))).unwrap();
        }
        assert_eq!(
            read(&f).unwrap().len() as u64,
            KEPT,
            "older revisions are dropped"
        );
        for i in 0..200 {
            last = append(&f, last, rev(0, mem(i), mem(i + 1))).unwrap();
        }
        let all = read(&f).unwrap();
        assert!(all.len() as u64 <= KEPT + COMPACT_EVERY);
        assert_eq!(all.last().unwrap().revision, 1224);
        let first = all[0].revision;
        assert!(rollback_target(&all, first - 1).is_ok());
        let e = rollback_target(&all, 1).unwrap_err().to_string();
        assert!(e.contains("no longer kept"), "{e}");
    }

    #[test]
    fn a_log_keeps_numbering_through_compactions_and_reopening() {
        let dir = crate::testfs::FakeDir::new("log", &[]);
        let f = path(&dir);
        let mut log = Log::open(&f).unwrap();
        assert_eq!(log.last(), 0);
        for i in 0..1100 {
            assert_eq!(log.append(rev(0, mem(i), mem(i + 1))).unwrap(), i + 1);
        }
        // Compacted at 1024 (the file was replaced under the open log).
        let all = read(&f).unwrap();
        assert_eq!(all.first().unwrap().revision, 25);
        assert_eq!(all.last().unwrap().revision, 1100);
        assert!(all.windows(2).all(|w| w[1].revision == w[0].revision + 1));
        assert_eq!(all.last().unwrap().after, mem(1100));
        drop(log);
        let mut log = Log::open(&f).unwrap();
        assert_eq!(log.last(), 1100);
        assert_eq!(log.append(rev(0, mem(1), mem(2))).unwrap(), 1101);
        assert_eq!(last(&f).unwrap(), 1101);
    }

    #[test]
    fn a_last_line_cut_short_is_dropped_and_numbering_goes_on() {
        let dir = crate::testfs::FakeDir::new("torn", &[]);
        let f = path(&dir);
        let mut log = Log::open(&f).unwrap();
        for i in 0..2 {
            log.append(rev(0, mem(i), mem(i + 1))).unwrap();
        }
        drop(log);
        // A shim killed in the middle of writing revision 3.
        let whole = std::fs::read(&f).unwrap();
        let third = serde_json::to_vec(&rev(3, mem(2), mem(3))).unwrap();
        let mut torn = whole.clone();
        torn.extend_from_slice(&third[..third.len() / 2]);
        std::fs::write(&f, &torn).unwrap();
        assert_eq!(read(&f).unwrap().len(), 2, "the fragment is no revision");

        let mut log = Log::open(&f).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), whole, "the fragment is gone");
        assert_eq!(log.last(), 2);
        assert_eq!(log.append(rev(0, mem(2), mem(7))).unwrap(), 3);
        let all = read(&f).unwrap();
        let numbers: Vec<u64> = all.iter().map(|r| r.revision).collect();
        assert_eq!(numbers, [1, 2, 3]);
        assert_eq!(all[2].after, mem(7));
        // A whole file, and an empty one, are left as they are.
        let before = std::fs::read(&f).unwrap();
        Log::open(&f).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), before);
        std::fs::write(&f, b"").unwrap();
        assert_eq!(Log::open(&f).unwrap().last(), 0);
    }

    #[test]
    fn numbers_are_read_from_the_start_of_a_line() {
        let line = serde_json::to_vec(&rev(42, mem(1), mem(2))).unwrap();
        assert!(line.starts_with(b"{\"revision\":42,"));
        assert_eq!(number(&line), Some(42));
        // Another field order still parses; a torn line does not.
        assert_eq!(
            number(br#"{"time":1,"revision":7,"source":"x","reason":"","before":{},"after":{}}"#),
            Some(7)
        );
        assert_eq!(number(&line[..line.len() - 5]), None);
        assert_eq!(number(b""), None);
        let mut text = line.clone();
        text.extend_from_slice(b"\n{\"revision\":43,\"tim");
        assert_eq!(last_in(&text), Some(42), "a torn last line is skipped");
    }

    #[test]
    fn sources_are_an_allowlist() {
        for ok in [
            "kubelet",
            "operator",
            "policy",
            "trait:cron-vertical-scaler",
        ] {
            assert!(validate_source(ok).is_ok(), "{ok}");
        }
        for bad in ["", "root", "trait:", "trait:../x", "kubelet "] {
            assert!(validate_source(bad).is_err(), "{bad:?}");
        }
    }
}

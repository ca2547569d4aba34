//! Reading and writing a container's cgroup files. The shim keeps the files
//! a resize touched open for the container's next resizes: a value is then
//! read with one pread and written with one pwrite, where opening the file
//! again (a path lookup through cgroupfs, then the close) costs several
//! times the read or write itself. Everyone else opens each file per use.
//! (A kept file is written at offset 0 without truncating it: cgroupfs takes
//! each write as the whole new value, as regular files would not.)
//!
//! Every failure names the file and, for a write, the value written
//! (`FileError`). The parsers of cgroup values (`text`, `num`, `keyed`) are
//! here too, so that every reader of a container's cgroup reads alike.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// An I/O error on a cgroup file, with the file and the value written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Opening or reading the file failed.
    #[error("read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// Opening or writing the file failed.
    #[error("write {value:?} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
}

impl FileError {
    fn read(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
        move |source| FileError::Read {
            path: path.to_path_buf(),
            source,
        }
    }

    fn write<'a>(path: &'a Path, value: &'a str) -> impl FnOnce(io::Error) -> FileError + 'a {
        move |source| FileError::Write {
            path: path.to_path_buf(),
            value: value.to_string(),
            source,
        }
    }

    /// The system's error.
    pub fn io(&self) -> &io::Error {
        match self {
            FileError::Read { source, .. } | FileError::Write { source, .. } => source,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        match self {
            FileError::Read { path, .. } | FileError::Write { path, .. } => path,
        }
    }

    pub fn kind(&self) -> io::ErrorKind {
        self.io().kind()
    }

    pub fn raw_os_error(&self) -> Option<i32> {
        self.io().raw_os_error()
    }
}

/// As an `io::Error` of the same kind, its message naming the file.
impl From<FileError> for io::Error {
    fn from(e: FileError) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// A container's cgroup files, kept open (see `kept` and `watched`) or not.
#[derive(Debug, Default)]
pub struct Files {
    keep: bool,
    /// Reads go through files kept open for reading only (see `watched`).
    watch: bool,
    /// Files opened for reading and writing, by path (as bytes: hashing a
    /// `Path` walks its components).
    open: HashMap<OsString, File>,
    /// Files opened for reading only (see `read_from`), by path.
    readonly: HashMap<OsString, File>,
    /// Where watched reads land before their text is taken (kept, so that
    /// a tick's reads do not each allocate and clear a page).
    scratch: Vec<u8>,
}

/// The bytes of `f` (a regular file) from `offset` to its end, by preads
/// (no size lookup, no seek). A read that leaves room in the buffer has met
/// the end: a file growing meanwhile is read on from there the next time
/// (readers of a history take whole lines only), and one pread is all a
/// few new revisions cost.
fn read_at_end(f: &File, offset: u64) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; 4096];
    let mut len = 0;
    loop {
        let n = f.read_at(&mut out[len..], offset + len as u64)?;
        len += n;
        if n == 0 || len < out.len() {
            break;
        }
        out.resize(out.len() * 2, 0);
    }
    out.truncate(len);
    Ok(out)
}

/// `path` opened for reading without updating its access time: a history
/// is read after every change to it, and each read would otherwise mark
/// its inode dirty (on ext4, a journal update) since it was last modified
/// after it was last read. O_NOATIME needs the file's owner or
/// CAP_FOWNER; without either, a plain open.
fn open_for_reading(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
        opened => opened,
    }
}

/// A small file's text (a cgroup value): open, read, close, without the
/// size lookup `fs::read_to_string` makes first.
pub fn read_small(path: &Path) -> Result<String, FileError> {
    let mut s = String::with_capacity(64);
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .map_err(FileError::read(path))?;
    Ok(s)
}

/// Writes `value` to `path` in one write; never creates the file (a
/// missing file means its cgroup went away).
fn write_once(f: &File, value: &str) -> io::Result<()> {
    let n = f.write_at(value.as_bytes(), 0)?;
    if n != value.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("wrote {n} of {} bytes", value.len()),
        ));
    }
    Ok(())
}

impl Files {
    /// Files that stay open between uses.
    pub fn kept() -> Files {
        Files {
            keep: true,
            ..Default::default()
        }
    }

    /// Files that stay open between reads, opened for reading only: for a
    /// reader that never writes (the policy engine's collector), which reads
    /// the cgroup's read-only statistics files too (`cpu.stat`,
    /// `memory.stat`: the kernel refuses to open those for writing, even to
    /// root, so `kept` opens them again for each read). A file that cannot
    /// be read any more (its cgroup went away) is closed.
    pub fn watched() -> Files {
        Files {
            watch: true,
            ..Default::default()
        }
    }

    /// How many files are open.
    pub fn len(&self) -> usize {
        self.open.len() + self.readonly.len()
    }

    /// Whether no file is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.readonly.is_empty()
    }

    /// Closes every open file (they are opened again when next used).
    pub fn close(&mut self) {
        self.open.clear();
        self.readonly.clear();
    }

    /// Closes the file at `path` if it is open (say, because another file
    /// has been renamed over it).
    pub fn forget(&mut self, path: &Path) {
        self.open.remove(path.as_os_str());
        self.readonly.remove(path.as_os_str());
    }

    /// The bytes of the file at `path` from `offset` to its end (a file
    /// that grows, such as a revision history), opened for reading only.
    pub fn read_from(&mut self, path: &Path, offset: u64) -> Result<Vec<u8>, FileError> {
        if !self.keep {
            return open_for_reading(path)
                .and_then(|f| read_at_end(&f, offset))
                .map_err(FileError::read(path));
        }
        self.keep_open(path)?;
        self.read_open_from(path, offset).expect("opened above")
    }

    /// Opens the file at `path` for reading and keeps it (if this `Files`
    /// keeps its files), for `stat_open` and `read_from`.
    pub fn keep_open(&mut self, path: &Path) -> Result<(), FileError> {
        let key = path.as_os_str();
        if self.keep && !self.readonly.contains_key(key) {
            let f = open_for_reading(path).map_err(FileError::read(path))?;
            self.readonly.insert(key.to_owned(), f);
        }
        Ok(())
    }

    /// The metadata of the file at `path` through the file kept open for
    /// reading it, without looking the path up: None when none is kept,
    /// or when the one kept has no link left (another file was renamed
    /// over it, or it was removed), and the path must be looked up. For
    /// files that are only ever rewritten in place, replaced by a rename
    /// over them or removed (a container's state and history), never moved
    /// away or linked elsewhere.
    pub fn stat_open(&self, path: &Path) -> Option<std::fs::Metadata> {
        use std::os::unix::fs::MetadataExt;
        let m = self.readonly.get(path.as_os_str())?.metadata().ok()?;
        (m.nlink() > 0).then_some(m)
    }

    /// `read_from` through the file at `path` only if it is open already
    /// (None if not): what was appended to the very file read last time,
    /// even if another has been renamed over its path since.
    pub fn read_open_from(&self, path: &Path, offset: u64) -> Option<Result<Vec<u8>, FileError>> {
        let f = self.readonly.get(path.as_os_str())?;
        Some(read_at_end(f, offset).map_err(FileError::read(path)))
    }

    /// The open file at `path`, opened for reading and writing on first
    /// use; None when it is not kept (or cannot be opened both ways, as
    /// read-only cgroup files cannot).
    fn file(&mut self, path: &Path) -> Option<&File> {
        if !self.keep {
            return None;
        }
        let key = path.as_os_str();
        if !self.open.contains_key(key) {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .ok()?;
            self.open.insert(key.to_owned(), f);
        }
        self.open.get(key)
    }

    /// The text of the file at `path`.
    pub fn read(&mut self, path: &Path) -> Result<String, FileError> {
        if self.watch {
            return self.read_watched(path);
        }
        let Some(f) = self.file(path) else {
            return read_small(path);
        };
        read_whole(f).map_err(FileError::read(path))
    }

    /// `read` through a file kept open for reading (see `watched`).
    fn read_watched(&mut self, path: &Path) -> Result<String, FileError> {
        let key = path.as_os_str();
        if !self.readonly.contains_key(key) {
            let f = File::open(path).map_err(FileError::read(path))?;
            self.readonly.insert(key.to_owned(), f);
        }
        // Statistics files are longer than a value (v1 memory.stat: about
        // 1.5 KiB): one read of a page takes them whole.
        if self.scratch.len() < 4096 {
            self.scratch.resize(4096, 0);
        }
        let read = read_whole_into(&self.readonly[key], &mut self.scratch).and_then(|len| {
            std::str::from_utf8(&self.scratch[..len])
                .map(str::to_owned)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        });
        if read.is_err() {
            self.readonly.remove(key);
        }
        read.map_err(FileError::read(path))
    }

    /// The trimmed text of the file at `path`; None if it cannot be read.
    pub fn text(&mut self, path: &Path) -> Option<String> {
        self.read(path).ok().map(|s| s.trim().to_string())
    }

    /// The file at `path` as one number; None if unreadable or no number
    /// (as "max" is not).
    pub fn num(&mut self, path: &Path) -> Option<u64> {
        self.text(path)?.parse().ok()
    }

    /// A flat keyed file (`key value` per line, as memory.stat); empty if
    /// unreadable.
    pub fn keyed(&mut self, path: &Path) -> HashMap<String, u64> {
        self.read(path)
            .map(|text| parse_keyed(&text))
            .unwrap_or_default()
    }

    /// Writes `value` to the file at `path`, which must exist.
    pub fn write(&mut self, path: &Path, value: &str) -> Result<(), FileError> {
        let written = match self.file(path) {
            Some(f) => write_once(f, value),
            None => std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .and_then(|f| write_once(&f, value)),
        };
        written.map_err(FileError::write(path, value))
    }

    /// Whether the file at `path` exists (a kept one did when opened; if
    /// its cgroup has gone since, writing it fails with ENODEV).
    pub fn exists(&mut self, path: &Path) -> bool {
        self.open.contains_key(path.as_os_str()) || path.exists()
    }
}

/// `key value` lines as a map; lines whose value is no number are left out.
pub fn parse_keyed(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// The values of `keys` in `key value` lines, in one pass over `text` and
/// without building a map (a statistics file has dozens of keys, a reader
/// wants a few); a key that is missing or not a number is None.
pub fn keyed_values<const N: usize>(text: &str, keys: [&str; N]) -> [Option<u64>; N] {
    let mut out = [None; N];
    for line in text.lines() {
        let Some((k, v)) = line.split_once(' ') else {
            continue;
        };
        if let Some(i) = keys.iter().position(|&want| want == k) {
            out[i] = v.trim().parse().ok();
        }
    }
    out
}

/// The whole value of a kept cgroup file.
fn read_whole(f: &File) -> io::Result<String> {
    read_whole_from(f, 256)
}

/// `read_whole` starting with a buffer of `size` bytes.
fn read_whole_from(f: &File, size: usize) -> io::Result<String> {
    let mut buf = vec![0u8; size];
    let len = read_whole_into(f, &mut buf)?;
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The whole value of `f` into `buf` (grown as needed, never shrunk); its
/// length.
fn read_whole_into(f: &File, buf: &mut Vec<u8>) -> io::Result<usize> {
    // A cgroup file's value comes whole from one read at offset 0 when the
    // buffer has room for it; read on while it fills the buffer.
    let mut len = 0;
    loop {
        let n = f.read_at(&mut buf[len..], len as u64)?;
        len += n;
        if n == 0 || len < buf.len() {
            return Ok(len);
        }
        buf.resize(buf.len() * 2, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_files_read_and_write_whole_values() {
        let dir = crate::testfs::FakeDir::new("files", &[("cpu.max", "max 100000\n")]);
        let path = dir.join("cpu.max");
        for mut files in [Files::default(), Files::kept()] {
            assert!(files.exists(&path));
            assert_eq!(files.read(&path).unwrap(), "max 100000\n");
            files.write(&path, "50000 100000").unwrap();
            assert_eq!(files.read(&path).unwrap().trim_end(), "50000 100000");
            // Longer than the first read's buffer.
            let long = "1".repeat(1000);
            std::fs::write(&path, &long).unwrap();
            assert_eq!(files.read(&path).unwrap(), long);
            std::fs::write(&path, "max 100000\n").unwrap();
        }
        // A growing file, read from where the last read ended, its access
        // time left as it was (relatime would update it: it is older than
        // the last change).
        let log = dir.join("log");
        std::fs::write(&log, "one\n").unwrap();
        let long_ago = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30);
        File::options()
            .write(true)
            .open(&log)
            .unwrap()
            .set_times(std::fs::FileTimes::new().set_accessed(long_ago))
            .unwrap();
        Files::default().read_from(&log, 0).unwrap();
        Files::kept().read_from(&log, 0).unwrap();
        assert_eq!(
            std::fs::metadata(&log).unwrap().accessed().unwrap(),
            long_ago
        );
        for mut files in [Files::default(), Files::kept()] {
            assert_eq!(files.read_from(&log, 0).unwrap(), b"one\n");
            std::fs::write(&log, "one\ntwo\n".repeat(1000)).unwrap();
            assert_eq!(files.read_from(&log, 8).unwrap().len(), 8 * 999);
            files.forget(&log);
            std::fs::write(&log, "one\n").unwrap();
        }
        let mut files = Files::kept();
        let missing = dir.join("nope");
        assert!(!files.exists(&missing));
        assert!(files.read(&missing).is_err());
        let err = files.write(&missing, "1").unwrap_err();
        assert!(!missing.exists(), "a write created the file");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string()
                .starts_with(&format!("write \"1\" to {}: ", missing.display())),
            "the error names the file and the value: {err}"
        );
        let err = Files::default().read(&missing).unwrap_err();
        assert!(err
            .to_string()
            .starts_with(&format!("read {}: ", missing.display())));
        let io: io::Error = err.into();
        assert_eq!(io.kind(), io::ErrorKind::NotFound, "the kind survives");
    }

    /// `stat_open` answers through the file kept open while that file is
    /// still linked, and not once another was renamed over it or it was
    /// removed; never for files not kept.
    #[test]
    fn kept_files_are_looked_at_while_still_linked() {
        let dir = crate::testfs::FakeDir::new("stat-open", &[("state", "one\n")]);
        let path = dir.join("state");
        let mut files = Files::kept();
        assert!(files.stat_open(&path).is_none(), "not opened yet");
        files.keep_open(&path).unwrap();
        std::fs::write(&path, "one\ntwo\n").unwrap();
        assert_eq!(files.stat_open(&path).map(|m| m.len()), Some(8));
        std::fs::write(dir.join("new"), "three\n").unwrap();
        std::fs::rename(dir.join("new"), &path).unwrap();
        assert!(files.stat_open(&path).is_none(), "renamed over");
        files.forget(&path);
        files.keep_open(&path).unwrap();
        assert_eq!(files.stat_open(&path).map(|m| m.len()), Some(6));
        std::fs::remove_file(&path).unwrap();
        assert!(files.stat_open(&path).is_none(), "removed");
        let mut once = Files::default();
        std::fs::write(&path, "one\n").unwrap();
        once.keep_open(&path).unwrap();
        assert!(once.stat_open(&path).is_none(), "files not kept");
    }
}

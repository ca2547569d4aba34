//! Reading and writing a container's cgroup files. The shim keeps the files
//! a resize touched open for the container's next resizes: a value is then
//! read with one pread and written with one pwrite, where opening the file
//! again (a path lookup through cgroupfs, then the close) costs several
//! times the read or write itself. Everyone else opens each file per use.
//! (A kept file is written at offset 0 without truncating it: cgroupfs takes
//! each write as the whole new value, as regular files would not.)

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A container's cgroup files, kept open (see `kept`) or not.
#[derive(Debug, Default)]
pub struct Files {
    keep: bool,
    /// Files opened for reading and writing, by path (as bytes: hashing a
    /// `Path` walks its components).
    open: HashMap<OsString, File>,
    /// Files opened for reading only (see `read_from`), by path.
    readonly: HashMap<OsString, File>,
}

/// The bytes of `f` from `offset` to its end, by preads (no size lookup,
/// no seek).
fn read_at_end(f: &File, offset: u64) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == out.len() {
            out.resize(out.len() * 2, 0);
        }
        let n = f.read_at(&mut out[len..], offset + len as u64)?;
        if n == 0 {
            break;
        }
        len += n;
    }
    out.truncate(len);
    Ok(out)
}

/// A small file's text (a cgroup value): open, read, close, without the
/// size lookup `fs::read_to_string` makes first.
pub fn read_small(path: &Path) -> io::Result<String> {
    let mut s = String::with_capacity(64);
    File::open(path)?.read_to_string(&mut s)?;
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
    pub fn read_from(&mut self, path: &Path, offset: u64) -> io::Result<Vec<u8>> {
        if !self.keep {
            return read_at_end(&File::open(path)?, offset);
        }
        let key = path.as_os_str();
        if !self.readonly.contains_key(key) {
            self.readonly.insert(key.to_owned(), File::open(path)?);
        }
        read_at_end(&self.readonly[key], offset)
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
    pub fn read(&mut self, path: &Path) -> io::Result<String> {
        let Some(f) = self.file(path) else {
            return read_small(path);
        };
        // A cgroup file's value comes whole from one read at offset 0 when
        // the buffer has room for it; read on while it fills the buffer.
        let mut buf = vec![0u8; 256];
        let mut len = 0;
        loop {
            let n = f.read_at(&mut buf[len..], len as u64)?;
            len += n;
            if n == 0 || len < buf.len() {
                break;
            }
            buf.resize(buf.len() * 2, 0);
        }
        buf.truncate(len);
        String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Writes `value` to the file at `path`, which must exist.
    pub fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        match self.file(path) {
            Some(f) => write_once(f, value),
            None => write_once(
                &std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(path)?,
                value,
            ),
        }
    }

    /// Whether the file at `path` exists (a kept one did when opened; if
    /// its cgroup has gone since, writing it fails with ENODEV).
    pub fn exists(&mut self, path: &Path) -> bool {
        self.open.contains_key(path.as_os_str()) || path.exists()
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
        // A growing file, read from where the last read ended.
        let log = dir.join("log");
        std::fs::write(&log, "one\n").unwrap();
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
        assert!(files.write(&missing, "1").is_err());
        assert!(!missing.exists(), "a write created the file");
    }
}

//! Test helper: a fake cgroupfs (or any scratch tree) in a temporary
//! directory that is removed when the test ends, even when it fails.
//! cgroup v2 controllers do not exist on the hybrid hosts tidal is developed
//! on, so v2 code is tested against these.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct FakeDir(PathBuf);

static SEQ: AtomicU64 = AtomicU64::new(0);

impl FakeDir {
    /// A fresh directory holding `files` (name, content).
    pub fn new(name: &str, files: &[(&str, &str)]) -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tidal-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (f, content) in files {
            std::fs::write(dir.join(f), content).unwrap();
        }
        FakeDir(dir)
    }

    pub fn path(&self) -> PathBuf {
        self.0.clone()
    }
}

impl std::ops::Deref for FakeDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for FakeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fake cgroupfs holding one container's cgroup, of either hierarchy:
/// real files in a temporary directory, read and written by the same code
/// as the kernel's.
pub struct FakeCgroup {
    root: FakeDir,
    cgroup: crate::cgroups::Cgroup,
}

impl FakeCgroup {
    /// A cgroup v1 cgroup: each `("controller/file", content)` is made in
    /// the controller's own directory, and the cgroup has exactly the
    /// controllers named.
    pub fn v1(name: &str, files: &[(&str, &str)]) -> Self {
        let root = FakeDir::new(name, &[]);
        let mut dirs = std::collections::BTreeMap::new();
        for (f, content) in files {
            let (ctrl, file) = f.split_once('/').expect("controller/file");
            let dir = root.join(ctrl);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), content).unwrap();
            dirs.insert(ctrl.to_string(), dir);
        }
        let cgroup = crate::cgroups::Cgroup::v1(dirs);
        FakeCgroup { root, cgroup }
    }

    /// A cgroup v2 cgroup: `files` in its one directory.
    pub fn v2(name: &str, files: &[(&str, &str)]) -> Self {
        let root = FakeDir::new(name, files);
        let cgroup = crate::cgroups::Cgroup::v2(root.path());
        FakeCgroup { root, cgroup }
    }

    pub fn cgroup(&self) -> &crate::cgroups::Cgroup {
        &self.cgroup
    }

    /// The trimmed content of `file` ("controller/file" on v1).
    pub fn get(&self, file: &str) -> String {
        std::fs::read_to_string(self.root.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .trim()
            .to_string()
    }

    /// Sets `file` ("controller/file" on v1), as the kernel would change it.
    pub fn set(&self, file: &str, content: &str) {
        std::fs::write(self.root.join(file), content).unwrap();
    }
}
